//! Cutting barcode frames out of a scanner's byte stream, driven by a profile's [`Framing`].
//! Pure and total: any byte sequence, at any timing, yields frames or counted discards, never a
//! panic, and memory stays bounded by `max_frame_bytes` whatever the line sends.
//!
//! The time is given by the caller (`now_ms`, any monotonic millisecond clock) so tests and
//! fuzzers can replay exact timings.

use crate::profiles::Framing;
use serde::Serialize;

/// What the framer did with the bytes it was given. All counters only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FramingCounters {
    /// Bytes pushed in.
    pub bytes: u64,
    /// Frames emitted.
    pub frames: u64,
    /// Frames longer than `max_frame_bytes` (the bytes up to their terminator are dropped).
    pub discarded_oversize: u64,
    /// Stretches of noise between frames (one per stretch, however long), plus frames rejected
    /// for their content: wrong prefix/suffix, control characters, missing AIM identifier.
    pub discarded_garbage: u64,
    /// Frames whose bytes stopped for longer than `inter_byte_timeout_ms`.
    pub discarded_timeout: u64,
    /// Frames that were not valid UTF-8.
    pub discarded_invalid_utf8: u64,
    /// Frames cut by the port going away (see [`Framer::abandon`]).
    pub discarded_cut: u64,
    /// Bytes of noise dropped between frames.
    pub garbage_bytes: u64,
}

#[derive(Debug)]
enum State {
    Idle {
        in_noise: bool,
    },
    InFrame {
        last_ms: u64,
    },
    /// Past `max_frame_bytes`: bytes are dropped until the terminator; `buf` keeps only a tail
    /// long enough to see a multi-byte terminator.
    Oversize {
        last_ms: u64,
    },
}

pub const GS: u8 = 0x1D;

pub struct Framer {
    cfg: Framing,
    state: State,
    buf: Vec<u8>,
    /// Raw frame length (prefix + data + suffix + terminator) above which the data is surely
    /// longer than `max_frame_bytes`.
    raw_limit: usize,
    counters: FramingCounters,
}

impl Framer {
    pub fn new(framing: &Framing) -> Framer {
        let mut cfg = framing.clone();
        // A profile is validated, but `Framing` is a public struct: keep the framer total even
        // for a hand-built one with an empty terminator.
        if cfg.terminator.is_empty() {
            cfg.terminator = b"\r".to_vec();
        }
        let raw_limit = cfg
            .max_frame_bytes
            .saturating_add(cfg.prefix.len())
            .saturating_add(cfg.suffix.len())
            .saturating_add(cfg.terminator.len());
        Framer {
            cfg,
            state: State::Idle { in_noise: false },
            buf: Vec::new(),
            raw_limit,
            counters: FramingCounters::default(),
        }
    }

    pub fn counters(&self) -> FramingCounters {
        self.counters
    }

    /// Bytes of an unfinished frame held right now.
    pub fn pending_len(&self) -> usize {
        match self.state {
            State::Idle { .. } => 0,
            _ => self.buf.len(),
        }
    }

    /// Feed bytes that arrived at `now_ms`; returns the frames they completed, in order.
    pub fn push(&mut self, bytes: &[u8], now_ms: u64) -> Vec<String> {
        self.tick(now_ms);
        let mut out = Vec::new();
        for &b in bytes {
            self.counters.bytes += 1;
            self.byte(b, now_ms, &mut out);
        }
        out
    }

    /// Let time pass without bytes: a frame silent for longer than the inter-byte timeout is
    /// discarded now rather than glued to whatever comes next.
    pub fn tick(&mut self, now_ms: u64) {
        let timeout = self.cfg.inter_byte_timeout_ms;
        if timeout == 0 {
            return;
        }
        let (last_ms, oversize) = match self.state {
            State::Idle { .. } => return,
            State::InFrame { last_ms } => (last_ms, false),
            State::Oversize { last_ms } => (last_ms, true),
        };
        if now_ms.saturating_sub(last_ms) > timeout {
            if oversize {
                self.counters.discarded_oversize += 1;
            } else {
                self.counters.discarded_timeout += 1;
            }
            self.reset();
        }
    }

    /// The driver was not reading until `now_ms` (it waited for the core to take an event):
    /// the bytes of a pending frame were waiting in the port's buffer, not late on the line,
    /// so that time must not count as inter-byte silence.
    pub fn resume(&mut self, now_ms: u64) {
        match &mut self.state {
            State::Idle { .. } => {}
            State::InFrame { last_ms } | State::Oversize { last_ms } => *last_ms = now_ms,
        }
    }

    /// The port went away: an unfinished frame can never complete; drop it and count it.
    pub fn abandon(&mut self) {
        match self.state {
            State::Idle { .. } => {}
            State::InFrame { .. } => self.counters.discarded_cut += 1,
            State::Oversize { .. } => self.counters.discarded_oversize += 1,
        }
        self.reset();
    }

    fn reset(&mut self) {
        self.buf.clear();
        // Keep the allocation of a normal frame, not of a burst of noise.
        self.buf.shrink_to(256);
        self.state = State::Idle { in_noise: false };
    }

    fn byte(&mut self, b: u8, now_ms: u64, out: &mut Vec<String>) {
        match self.state {
            State::Idle { in_noise } => {
                if b == b'\r' || b == b'\n' || self.cfg.terminator.contains(&b) {
                    // Stray line ends between frames are harmless (a scanner sending CR LF to a
                    // CR profile): ignored, not counted as noise.
                } else if self.starts_frame(b) {
                    self.buf.clear();
                    self.buf.push(b);
                    self.state = State::InFrame { last_ms: now_ms };
                    self.after_push(out);
                } else {
                    self.counters.garbage_bytes += 1;
                    if !in_noise {
                        self.counters.discarded_garbage += 1;
                        self.state = State::Idle { in_noise: true };
                    }
                }
            }
            State::InFrame { .. } => {
                self.buf.push(b);
                self.state = State::InFrame { last_ms: now_ms };
                self.after_push(out);
            }
            State::Oversize { .. } => {
                self.state = State::Oversize { last_ms: now_ms };
                self.buf.push(b);
                let keep = self.cfg.terminator.len();
                if self.buf.len() > keep {
                    let cut = self.buf.len() - keep;
                    self.buf.drain(..cut);
                }
                if self.buf.ends_with(&self.cfg.terminator) {
                    self.counters.discarded_oversize += 1;
                    self.reset();
                }
            }
        }
    }

    fn after_push(&mut self, out: &mut Vec<String>) {
        if self.buf.ends_with(&self.cfg.terminator) {
            let end = self.buf.len() - self.cfg.terminator.len();
            let raw = std::mem::take(&mut self.buf);
            let frame = raw.get(..end).unwrap_or_default();
            if let Some(s) = self.complete(frame) {
                out.push(s);
            }
            self.buf = raw;
            self.reset();
        } else if self.buf.len() >= self.raw_limit {
            // Even if the last bytes began a terminator, the data is already too long.
            let last_ms = match self.state {
                State::InFrame { last_ms } | State::Oversize { last_ms } => last_ms,
                State::Idle { .. } => 0,
            };
            self.state = State::Oversize { last_ms };
            let keep = self.cfg.terminator.len().saturating_sub(1);
            let cut = self.buf.len().saturating_sub(keep);
            self.buf.drain(..cut);
        }
    }

    /// Which byte may open a frame. With a prefix, only its first byte; with AIM identifiers,
    /// only `]`; otherwise printable ASCII, GS (some scanners send FNC1 in first position as
    /// GS) and UTF-8 lead bytes. Anything else between frames is line noise.
    fn starts_frame(&self, b: u8) -> bool {
        if let Some(&first) = self.cfg.prefix.first() {
            return b == first;
        }
        if self.cfg.aim_ids {
            return b == b']';
        }
        matches!(b, 0x21..=0x7E | GS | 0xC2..=0xF4)
    }

    fn complete(&mut self, frame: &[u8]) -> Option<String> {
        let Some(inner) = frame
            .strip_prefix(self.cfg.prefix.as_slice())
            .and_then(|f| f.strip_suffix(self.cfg.suffix.as_slice()))
        else {
            self.counters.discarded_garbage += 1;
            return None;
        };
        if inner.len() > self.cfg.max_frame_bytes {
            self.counters.discarded_oversize += 1;
            return None;
        }
        let data = match &self.cfg.gs_substitute {
            Some(sub) if !sub.is_empty() => replace(inner, sub, GS),
            _ => inner.to_vec(),
        };
        // Control characters that legitimately occur inside barcode data: GS/RS/FS/US (GS1
        // separators, ISO/IEC 15434 envelopes) and EOT (15434 trailer). Any other control byte
        // is line noise inside the frame, so the frame cannot be trusted.
        let clean = data
            .iter()
            .all(|&c| c >= 0x20 && c != 0x7F || matches!(c, 0x04 | 0x1C..=0x1F));
        if data.is_empty() || !clean {
            self.counters.discarded_garbage += 1;
            return None;
        }
        let Ok(text) = String::from_utf8(data) else {
            self.counters.discarded_invalid_utf8 += 1;
            return None;
        };
        if self.cfg.aim_ids && crate::decode::aim::split(&text).is_err() {
            self.counters.discarded_garbage += 1;
            return None;
        }
        self.counters.frames += 1;
        Some(text)
    }
}

fn replace(data: &[u8], from: &[u8], to: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data.get(i..).is_some_and(|rest| rest.starts_with(from)) {
            out.push(to);
            i += from.len();
        } else if let Some(&b) = data.get(i) {
            out.push(b);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing() -> Framing {
        Framing::default()
    }

    #[test]
    fn frames_on_the_terminator_and_ignores_stray_line_ends() {
        let mut f = Framer::new(&framing());
        assert_eq!(f.push(b"\n4006381333931\r\n9506", 0), vec!["4006381333931"]);
        assert_eq!(f.push(b"000134352\r", 1), vec!["9506000134352"]);
        assert_eq!(f.counters().frames, 2);
        assert_eq!(f.counters().discarded_garbage, 0);
    }

    #[test]
    fn strips_prefix_and_suffix_and_maps_the_gs_substitute() {
        let cfg = Framing {
            prefix: vec![0x02],
            suffix: b"#".to_vec(),
            terminator: b"\r\n".to_vec(),
            gs_substitute: Some(b"^".to_vec()),
            aim_ids: true,
            ..Framing::default()
        };
        let mut f = Framer::new(&cfg);
        let got = f.push(b"\x02]C1010950600013435210ABC^3103000123#\r\n", 0);
        assert_eq!(got, vec!["]C1010950600013435210ABC\x1d3103000123"]);
        // Wrong suffix: garbage.
        assert!(f.push(b"\x02]E09506000134352\r\n", 1).is_empty());
        assert_eq!(f.counters().discarded_garbage, 1);
    }

    #[test]
    fn noise_between_frames_counts_once_per_stretch() {
        let cfg = Framing {
            aim_ids: true,
            ..Framing::default()
        };
        let mut f = Framer::new(&cfg);
        let got = f.push(b"\x00\xff\x13xyz]E09506000134352\r\x7f\x7f]Q3hello\r", 0);
        assert_eq!(got, vec!["]E09506000134352", "]Q3hello"]);
        let c = f.counters();
        assert_eq!((c.discarded_garbage, c.garbage_bytes), (2, 8));
    }

    #[test]
    fn oversize_frames_are_dropped_up_to_their_terminator() {
        let cfg = Framing {
            max_frame_bytes: 16,
            terminator: b"\r\n".to_vec(),
            ..Framing::default()
        };
        let mut f = Framer::new(&cfg);
        let mut long = vec![b'7'; 5000];
        long.extend_from_slice(b"\r\n12345678\r\n");
        assert_eq!(f.push(&long, 0), vec!["12345678"]);
        assert_eq!(f.counters().discarded_oversize, 1);
        assert!(f.buf.capacity() < 5000 || f.buf.len() < 4);
        // Exactly max_frame_bytes is fine.
        assert_eq!(f.push(b"1234567890123456\r\n", 1).len(), 1);
    }

    #[test]
    fn a_silent_partial_frame_times_out() {
        let mut f = Framer::new(&framing());
        assert!(f.push(b"40063", 0).is_empty());
        f.tick(150);
        assert_eq!(f.pending_len(), 5);
        f.tick(201);
        assert_eq!(f.pending_len(), 0);
        assert_eq!(f.push(b"4006381333931\r", 300), vec!["4006381333931"]);
        assert_eq!(f.counters().discarded_timeout, 1);
    }

    #[test]
    fn invalid_utf8_and_control_bytes_are_discarded() {
        let mut f = Framer::new(&framing());
        assert!(f.push(b"ab\xc3\x28\r", 0).is_empty());
        assert!(f.push(b"ab\x00cd\r", 0).is_empty());
        assert_eq!(f.push("é1\r".as_bytes(), 0), vec!["é1"]);
        let c = f.counters();
        assert_eq!((c.discarded_invalid_utf8, c.discarded_garbage), (1, 1));
    }

    #[test]
    fn never_panics_on_arbitrary_input() {
        // A cheap deterministic fuzz: xorshift bytes through several framings and timings.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let cfgs = [
            framing(),
            Framing {
                prefix: b"\x02".to_vec(),
                suffix: b"\x03".to_vec(),
                terminator: b"\r\n".to_vec(),
                gs_substitute: Some(b"^^".to_vec()),
                aim_ids: true,
                max_frame_bytes: 16,
                inter_byte_timeout_ms: 5,
            },
        ];
        for cfg in &cfgs {
            let mut f = Framer::new(cfg);
            let mut now = 0u64;
            for _ in 0..2000 {
                let len = (next() % 64) as usize;
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        let r = next();
                        // Bias toward the interesting bytes.
                        match r % 6 {
                            0 => b'\r',
                            1 => b'\n',
                            2 => b']',
                            _ => (r >> 8) as u8,
                        }
                    })
                    .collect();
                now = now.wrapping_add(next() % 10);
                for frame in f.push(&bytes, now) {
                    assert!(frame.len() <= cfg.max_frame_bytes);
                }
                assert!(f.pending_len() <= cfg.max_frame_bytes + 8);
            }
        }
    }

    #[test]
    fn time_spent_waiting_for_the_core_is_not_counted_as_line_silence() {
        let mut f = Framer::new(&Framing {
            inter_byte_timeout_ms: 200,
            ..Framing::default()
        });
        assert!(f.push(b"40063", 0).is_empty());
        // The driver was blocked handing an earlier scan to the core until t = 900 ms.
        f.resume(900);
        assert_eq!(f.push(b"81333931\r", 901), vec!["4006381333931".to_owned()]);
        assert_eq!(f.counters().discarded_timeout, 0);
    }
}
