//! Arbitrary bytes as a scanner's serial line, under an arbitrary framing profile and timing.
//! The first bytes choose the profile (terminator, prefix/suffix, GS substitute, AIM ids, a
//! small frame limit so the oversize path is reached) and how the stream is cut into reads and
//! spaced in time; the rest is the line. The framer must never panic, every frame it emits
//! must respect the limit, and it must never hold more than a frame's worth of bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relais::devices::serial::framing::Framer;
use relais::profiles::Framing;

fuzz_target!(|data: &[u8]| {
    let Some((head, line)) = data.split_at_checked(4) else {
        return;
    };
    let (flags, cut, gap_ms, limit) = (
        head[0],
        usize::from(head[1]).max(1),
        u64::from(head[2]),
        usize::from(head[3]),
    );
    let framing = Framing {
        prefix: if flags & 1 != 0 {
            b"\x02".to_vec()
        } else {
            Vec::new()
        },
        terminator: match flags >> 1 & 3 {
            0 => b"\r".to_vec(),
            1 => b"\r\n".to_vec(),
            2 => b"\n".to_vec(),
            _ => b"\x03".to_vec(),
        },
        suffix: if flags & 8 != 0 {
            b"#".to_vec()
        } else {
            Vec::new()
        },
        gs_substitute: (flags & 16 != 0).then(|| b"<GS>".to_vec()),
        aim_ids: flags & 32 != 0,
        max_frame_bytes: limit.max(1),
        inter_byte_timeout_ms: if flags & 64 != 0 { 50 } else { 0 },
    };
    let mut framer = Framer::new(&framing);
    let mut now_ms = 0u64;
    for (i, chunk) in line.chunks(cut).enumerate() {
        now_ms += gap_ms;
        if flags & 128 != 0 && i % 7 == 6 {
            // The driver blocked on the core for a while, then read again.
            now_ms += 500;
            framer.resume(now_ms);
        }
        for frame in framer.push(chunk, now_ms) {
            assert!(
                frame.len() <= framing.max_frame_bytes,
                "frame past the limit"
            );
        }
        assert!(
            framer.pending_len() <= framing.max_frame_bytes + 16,
            "framer buffered past its limit"
        );
        framer.tick(now_ms);
    }
    framer.abandon();
    assert_eq!(framer.pending_len(), 0);
});
