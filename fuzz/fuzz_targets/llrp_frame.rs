//! Arbitrary bytes as a TCP stream from a reader: the first byte picks how the stream is cut
//! into reads (to exercise fragmented and batched delivery), then every complete frame is
//! decoded. Neither may panic, and the frame reader must never buffer past its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relais::devices::rfid::llrp::{FrameReader, decode_message};

const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(cut).max(1);
    let mut reader = FrameReader::new(MAX);
    for chunk in stream.chunks(piece) {
        reader.push(chunk);
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.body.len() + 10 <= MAX);
                    let _ = decode_message(&frame);
                }
                Ok(None) => break,
                // The stream has lost its framing; the client drops the connection here.
                Err(_) => return,
            }
        }
    }
});
