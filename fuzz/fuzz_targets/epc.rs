//! Arbitrary text as the EPC hex a reader returns: decode or typed error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = relais::decode::decode_epc_hex(&text);
});
