//! Arbitrary bytes as the serial stream from an M100 UHF module: the first byte picks how the
//! stream is cut into reads (fragmented and batched delivery), the second how many milliseconds
//! pass between reads (so partial frames are also dropped by the silence timeout). Every frame
//! the decoder returns is decoded. Nothing may panic, every returned frame must verify again,
//! and the decoder must never buffer more than one maximal frame plus one read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relais::devices::rfid::m100::{Decoder, MAX_PARAMS, checksum, decode, encode};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let Some((&gap, stream)) = rest.split_first() else {
        return;
    };
    let piece = usize::from(cut).max(1);
    let mut decoder = Decoder::new();
    let mut now = 0u64;
    let mut frames = Vec::new();
    for chunk in stream.chunks(piece) {
        frames.extend(decoder.push(chunk, now));
        assert!(decoder.pending() <= MAX_PARAMS + 7 + piece);
        now += u64::from(gap);
        frames.extend(decoder.tick(now));
    }
    frames.extend(decoder.abandon());
    assert_eq!(decoder.pending(), 0);
    for frame in &frames {
        assert!(frame.params.len() <= MAX_PARAMS);
        // A returned frame re-encodes to bytes whose checksum holds.
        let bytes = encode(frame.frame_type, frame.command, &frame.params);
        let body = &bytes[1..bytes.len() - 2];
        assert_eq!(checksum(body), bytes[bytes.len() - 2]);
        let _ = decode(frame);
    }
});
