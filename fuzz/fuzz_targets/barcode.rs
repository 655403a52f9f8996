//! Arbitrary UTF-8 as scanner output through the barcode decoder: it must answer with a
//! decode or a typed error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = relais::decode::decode_barcode(text);
    }
});
