//! Codec for the serial protocol of MagicRF M100 / QM100 based UHF RFID modules (the "UHF RFID
//! module user protocol" spoken by the M100 and QM100 reader chips and by the many cheap UART and
//! USB modules built on them: YRM100, JRD-4035, R200, Electron EL-UHF-RMT01, M5Stack UHF unit).
//!
//! Written by hand from the public protocol description; no maintained Rust crate speaks it.
//! Source: "EL-UHF-RMT01 Protocol", Electron.id, <https://electron.id/protocol/el-uhf-rmt01-protocol>
//! (sections "Frame Definition", "Frame Format", "Frame Type", "Frame Code Index": the M100 frame
//! layout, checksum and command codes), cross-checked against the worked examples that circulate
//! with the MagicRF M100 user protocol (single inventory `BB 00 22 00 00 22 7E`; tag notification
//! `BB 02 22 00 11 C9 34 00 …`; error `BB 01 FF 00 01 15 16 7E`), all of which the unit tests
//! below reproduce byte for byte. Reference: `docs/rfid-serial.md`.
//!
//! A frame is `BB type command PL(2, big-endian) params[PL] checksum 7E`, where the checksum is
//! the low byte of the sum of every byte from `type` to the last parameter. `type` is 0 for a
//! command from the host, 1 for a response, 2 for a notification (tag read). Neither `BB` nor `7E`
//! is escaped inside a frame, so a `BB` in the stream only *may* start a frame: the decoder
//! proves a candidate by its length, end byte and checksum, and on any failure drops that one
//! `BB` and looks for the next, which is what lets it resynchronise after noise or a cut frame.
//!
//! Pure: no I/O and no clock; the caller passes the time (for dropping frames cut by silence).
//! Nothing indexes unchecked and no input panics (unit tests here, the `m100_frame` fuzz target).

use super::llrp::epc_hex;

/// First byte of every frame.
pub const HEADER: u8 = 0xBB;
/// Last byte of every frame.
pub const END: u8 = 0x7E;

/// Frame types (byte 1).
pub mod frame_type {
    /// Host → module.
    pub const COMMAND: u8 = 0x00;
    /// Module → host, one per command.
    pub const RESPONSE: u8 = 0x01;
    /// Module → host, unsolicited: one per tag read during an inventory.
    pub const NOTICE: u8 = 0x02;
}

/// Command codes (byte 2) used by Relais.
pub mod cmd {
    /// Get module information; parameter 0 = hardware version, 1 = software, 2 = manufacturer.
    pub const MODULE_INFO: u8 = 0x03;
    /// One inventory round; also the command code of every tag notification.
    pub const SINGLE_POLL: u8 = 0x22;
    /// `count` inventory rounds, each tag read sent as a notification.
    pub const MULTI_POLL: u8 = 0x27;
    /// Stop a multi-poll before its count is done.
    pub const STOP_POLL: u8 = 0x28;
    /// Command code of an error response.
    pub const ERROR: u8 = 0xFF;
}

/// The fixed first parameter of a multi-poll command ("reserved", always 0x22).
pub const MULTI_POLL_RESERVED: u8 = 0x22;

/// Error codes carried by an error response (`BB 01 FF 00 01 code …`).
pub mod error_code {
    /// The command code or its parameters were not understood.
    pub const COMMAND_ERROR: u8 = 0x17;
    /// The frequency-hopping channel could not be set (region or RF hardware problem).
    pub const FHSS_FAIL: u8 = 0x20;
    /// No tag answered the inventory round (or its reply failed the tag CRC). During a
    /// multi-poll this is the normal answer of an empty field, not a fault.
    pub const INVENTORY_FAIL: u8 = 0x15;
    /// Access password wrong.
    pub const ACCESS_FAIL: u8 = 0x16;
    /// Tag memory read failed.
    pub const READ_FAIL: u8 = 0x09;
    /// Tag memory write failed.
    pub const WRITE_FAIL: u8 = 0x10;
}

/// Longest parameter field accepted. The longest frame of the subset Relais uses is a tag
/// notification with a 496-bit EPC (1 + 2 + 62 + 2 = 67 bytes); module information strings are
/// a few dozen bytes. A larger length is noise that happened to follow a `BB`.
pub const MAX_PARAMS: usize = 256;
/// Header (5) + checksum + end.
const OVERHEAD: usize = 7;
/// A partial frame whose next byte does not come for this long was cut (the module sends a frame
/// in one burst: 74 bytes take 6.4 ms at 115200 baud).
pub const PARTIAL_TIMEOUT_MS: u64 = 100;

/// The checksum over `type … last parameter`.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
}

/// Encode one frame. Parameters beyond [`MAX_PARAMS`] are a programming error on our side; they
/// are cut rather than sent as a frame the module would reject.
pub fn encode(frame_type: u8, command: u8, params: &[u8]) -> Vec<u8> {
    let params = params.get(..MAX_PARAMS).unwrap_or(params);
    let len = params.len() as u16;
    let mut out = Vec::with_capacity(params.len() + OVERHEAD);
    out.push(HEADER);
    out.push(frame_type);
    out.push(command);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(params);
    let sum = checksum(out.get(1..).unwrap_or_default());
    out.push(sum);
    out.push(END);
    out
}

/// `BB 00 22 00 00 22 7E`: one inventory round.
pub fn single_poll() -> Vec<u8> {
    encode(frame_type::COMMAND, cmd::SINGLE_POLL, &[])
}

/// `BB 00 27 00 03 22 CNT_H CNT_L sum 7E`: `count` inventory rounds (the module stops by itself
/// after the last one, so a continuous inventory re-issues it).
pub fn multi_poll(count: u16) -> Vec<u8> {
    let [hi, lo] = count.to_be_bytes();
    encode(
        frame_type::COMMAND,
        cmd::MULTI_POLL,
        &[MULTI_POLL_RESERVED, hi, lo],
    )
}

/// `BB 00 28 00 00 28 7E`: stop a multi-poll.
pub fn stop_poll() -> Vec<u8> {
    encode(frame_type::COMMAND, cmd::STOP_POLL, &[])
}

/// Which string [`module_info`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InfoKind {
    Hardware = 0,
    Software = 1,
    Manufacturer = 2,
}

/// `BB 00 03 00 01 kind sum 7E`.
pub fn module_info(kind: InfoKind) -> Vec<u8> {
    encode(frame_type::COMMAND, cmd::MODULE_INFO, &[kind as u8])
}

/// Module-side encoder of a tag notification (fake readers in tests, fuzz seeds).
pub fn tag_notice(rssi_dbm: i8, pc: u16, epc: &[u8], crc: u16) -> Vec<u8> {
    let mut params = Vec::with_capacity(epc.len() + 5);
    params.push(rssi_dbm.to_be_bytes()[0]);
    params.extend_from_slice(&pc.to_be_bytes());
    params.extend_from_slice(epc);
    params.extend_from_slice(&crc.to_be_bytes());
    encode(frame_type::NOTICE, cmd::SINGLE_POLL, &params)
}

/// Module-side encoder of an error response.
pub fn error_response(code: u8) -> Vec<u8> {
    encode(frame_type::RESPONSE, cmd::ERROR, &[code])
}

/// The Gen2 protocol-control word announcing an EPC of `epc_len` bytes (rounded up to words),
/// as a tag would send it.
pub fn pc_for(epc_len: usize) -> u16 {
    let words = epc_len.div_ceil(2).min(31) as u16;
    words << 11
}

/// One frame whose length, end byte and checksum were verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub frame_type: u8,
    pub command: u8,
    pub params: Vec<u8>,
}

/// One tag read, from a notification.
#[derive(Clone, PartialEq, Eq)]
pub struct TagNotice {
    /// Signed dBm as the module reports it (0xC9 = -55 dBm).
    pub rssi_dbm: i8,
    /// Gen2 protocol-control word (bits 15-11: EPC length in words).
    pub pc: u16,
    pub epc: Vec<u8>,
    /// The tag's CRC-16 as received (the module has already checked it).
    pub crc: u16,
}

impl std::fmt::Debug for TagNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TagNotice(epc {}, rssi {} dBm, pc {:04X})",
            epc_hex(&self.epc),
            self.rssi_dbm,
            self.pc
        )
    }
}

/// What a verified frame means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Tag(TagNotice),
    /// An error response; `code` per [`error_code`].
    Error {
        code: u8,
    },
    /// A response to one of our commands, e.g. the module information string.
    Response {
        command: u8,
        params: Vec<u8>,
    },
    /// Anything else (a command frame echoed back, a notice of another command): ignored.
    Other {
        frame_type: u8,
        command: u8,
    },
}

/// Why a verified frame could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error(
        "tag notification with {0} parameter bytes is too short to hold RSSI, PC, an EPC and \
         CRC; the module is not speaking the M100 protocol (check the profile)"
    )]
    ShortNotice(usize),
    #[error(
        "error response with {0} parameter bytes instead of 1; the module is not speaking the \
         M100 protocol (check the profile)"
    )]
    BadError(usize),
}

/// Read a verified frame.
pub fn decode(frame: &Frame) -> Result<Message, MessageError> {
    match (frame.frame_type, frame.command) {
        (frame_type::NOTICE, cmd::SINGLE_POLL) => {
            let p = frame.params.as_slice();
            // RSSI (1) + PC (2) + at least one EPC byte + CRC (2).
            let epc_end = p.len().saturating_sub(2);
            let (true, Some(&rssi), Some(pc), Some(epc), Some(crc)) = (
                p.len() >= 6,
                p.first(),
                p.get(1..3),
                p.get(3..epc_end),
                p.get(epc_end..),
            ) else {
                return Err(MessageError::ShortNotice(p.len()));
            };
            let word = |b: &[u8]| match b {
                [hi, lo] => u16::from_be_bytes([*hi, *lo]),
                _ => 0,
            };
            // The EPC is whatever lies between PC and CRC: modules differ on whether the PC
            // length field counts an XPC word, so the frame length is the authority.
            Ok(Message::Tag(TagNotice {
                rssi_dbm: i8::from_be_bytes([rssi]),
                pc: word(pc),
                epc: epc.to_vec(),
                crc: word(crc),
            }))
        }
        (frame_type::RESPONSE, cmd::ERROR) => match frame.params.as_slice() {
            [code] => Ok(Message::Error { code: *code }),
            other => Err(MessageError::BadError(other.len())),
        },
        (frame_type::RESPONSE, command) => Ok(Message::Response {
            command,
            params: frame.params.clone(),
        }),
        (frame_type, command) => Ok(Message::Other {
            frame_type,
            command,
        }),
    }
}

/// What an error code means, for logs and status details.
pub fn describe_error(code: u8) -> &'static str {
    match code {
        error_code::INVENTORY_FAIL => "no tag answered the inventory round",
        error_code::COMMAND_ERROR => "the module did not understand a command",
        error_code::FHSS_FAIL => {
            "frequency hopping failed (check the module's region setting and antenna)"
        }
        error_code::ACCESS_FAIL => "tag access refused (wrong access password)",
        error_code::READ_FAIL => "tag memory read failed",
        error_code::WRITE_FAIL => "tag memory write failed",
        _ => "unknown error code (see the module manual's error table)",
    }
}

/// Cumulative decoder counters (shown on the status page through the driver).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DecoderCounters {
    /// Bytes pushed.
    pub bytes: u64,
    /// Verified frames.
    pub frames: u64,
    /// Candidates with the right end byte but a wrong checksum (line noise inside a frame).
    pub bad_checksum: u64,
    /// Candidates whose end byte was not `7E` (a `BB` that did not start a frame, or a cut one).
    pub bad_end: u64,
    /// Candidates announcing more than [`MAX_PARAMS`] parameter bytes.
    pub oversize: u64,
    /// Partial frames dropped because the line went silent or the port was lost.
    pub cut: u64,
    /// Bytes dropped outside any verified frame.
    pub garbage_bytes: u64,
}

/// Outcome of looking at the buffer's head.
enum Head {
    /// A verified frame of this many bytes.
    Frame(Frame, usize),
    /// The head can only be a frame's beginning: wait for more bytes.
    Incomplete,
    /// The head is not a frame: drop one byte.
    Reject,
}

/// Cuts verified frames out of an arbitrary byte stream. Memory is bounded: the buffer never
/// holds more than one maximal frame plus the bytes of one `push`.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    counters: DecoderCounters,
    /// When the bytes now waiting in `buf` last grew.
    last_byte_ms: u64,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    pub fn counters(&self) -> DecoderCounters {
        self.counters
    }

    /// Bytes waiting for the rest of their frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Feed bytes read at `now_ms`; returns the frames they complete, in order.
    pub fn push(&mut self, bytes: &[u8], now_ms: u64) -> Vec<Frame> {
        let mut out = Vec::new();
        if bytes.is_empty() {
            return out;
        }
        // Bytes that sat unfinished through a silence belong to a cut frame, not to these.
        self.expire(now_ms, &mut out);
        self.counters.bytes = self.counters.bytes.saturating_add(bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
        self.last_byte_ms = now_ms;
        self.parse(&mut out, false);
        out
    }

    /// Call when the line has been quiet (a read timed out): a partial frame older than
    /// [`PARTIAL_TIMEOUT_MS`] is dropped, and any frame hidden behind it is returned.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Frame> {
        let mut out = Vec::new();
        self.expire(now_ms, &mut out);
        out
    }

    /// The port was lost: whatever is buffered will never be completed.
    pub fn abandon(&mut self) -> Vec<Frame> {
        let mut out = Vec::new();
        self.parse(&mut out, true);
        out
    }

    fn expire(&mut self, now_ms: u64, out: &mut Vec<Frame>) {
        if !self.buf.is_empty() && now_ms.saturating_sub(self.last_byte_ms) >= PARTIAL_TIMEOUT_MS {
            self.parse(out, true);
        }
    }

    /// Take every frame out of the buffer. With `flush`, no more bytes will complete what is
    /// there, so an incomplete head is dropped like a rejected one and parsing goes on behind it.
    fn parse(&mut self, out: &mut Vec<Frame>, flush: bool) {
        let counters = &mut self.counters;
        let garbage = |c: &mut DecoderCounters, n: usize| {
            c.garbage_bytes = c.garbage_bytes.saturating_add(n as u64);
        };
        let mut pos = 0usize;
        while let Some(rest) = self.buf.get(pos..) {
            if rest.is_empty() {
                break;
            }
            // Skip to the next candidate header in one step.
            let Some(skip) = rest.iter().position(|&b| b == HEADER) else {
                garbage(counters, rest.len());
                pos = self.buf.len();
                break;
            };
            if skip > 0 {
                garbage(counters, skip);
                pos += skip;
                continue;
            }
            match head(counters, rest) {
                Head::Frame(frame, len) => {
                    counters.frames = counters.frames.saturating_add(1);
                    out.push(frame);
                    pos += len;
                }
                Head::Incomplete if !flush => break,
                Head::Incomplete => {
                    counters.cut = counters.cut.saturating_add(1);
                    garbage(counters, 1);
                    pos += 1;
                }
                Head::Reject => {
                    garbage(counters, 1);
                    pos += 1;
                }
            }
        }
        self.buf.drain(..pos.min(self.buf.len()));
    }
}

/// Look at a candidate frame; `rest` starts with [`HEADER`].
fn head(counters: &mut DecoderCounters, rest: &[u8]) -> Head {
    let Some(&[_, frame_type, command, hi, lo]) = rest.get(..5) else {
        return Head::Incomplete;
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len > MAX_PARAMS {
        counters.oversize = counters.oversize.saturating_add(1);
        return Head::Reject;
    }
    // An unknown frame type is as sure a sign of noise after a `BB` as an absurd length,
    // and rejecting it at once saves waiting for bytes that will not make a frame.
    if frame_type > frame_type::NOTICE {
        return Head::Reject;
    }
    let total = len + OVERHEAD;
    let (Some(body), Some(&sum), Some(&end)) =
        (rest.get(1..5 + len), rest.get(5 + len), rest.get(6 + len))
    else {
        return Head::Incomplete;
    };
    if end != END {
        counters.bad_end = counters.bad_end.saturating_add(1);
        return Head::Reject;
    }
    if checksum(body) != sum {
        counters.bad_checksum = counters.bad_checksum.saturating_add(1);
        return Head::Reject;
    }
    Head::Frame(
        Frame {
            frame_type,
            command,
            params: body.get(4..).unwrap_or_default().to_vec(),
        },
        total,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// The notification example of the public protocol description.
    const NOTICE: &str = "BB 02 22 00 11 C9 34 00 30 75 1F EB 70 5C 59 04 E3 D5 0D 70 3A 76 EF 7E";
    const EPC: &str = "30751FEB705C5904E3D50D70";

    fn decode_all(d: &mut Decoder, bytes: &[u8]) -> Vec<Message> {
        d.push(bytes, 0)
            .iter()
            .map(|f| decode(f).unwrap())
            .collect()
    }

    fn epc_of(m: &Message) -> String {
        match m {
            Message::Tag(t) => epc_hex(&t.epc),
            other => panic!("not a tag: {other:?}"),
        }
    }

    #[test]
    fn commands_are_encoded_as_the_protocol_examples_show() {
        assert_eq!(single_poll(), hex("BB 00 22 00 00 22 7E"));
        assert_eq!(stop_poll(), hex("BB 00 28 00 00 28 7E"));
        assert_eq!(multi_poll(10_000), hex("BB 00 27 00 03 22 27 10 83 7E"));
        assert_eq!(multi_poll(65_535), hex("BB 00 27 00 03 22 FF FF 4A 7E"));
        assert_eq!(
            module_info(InfoKind::Hardware),
            hex("BB 00 03 00 01 00 04 7E")
        );
        assert_eq!(error_response(0x15), hex("BB 01 FF 00 01 15 16 7E"));
    }

    #[test]
    fn the_published_tag_notification_decodes_to_its_rssi_pc_epc_and_crc() {
        let mut d = Decoder::new();
        let frames = d.push(&hex(NOTICE), 0);
        assert_eq!(frames.len(), 1);
        let Message::Tag(t) = decode(&frames[0]).unwrap() else {
            panic!()
        };
        assert_eq!(t.rssi_dbm, -55);
        assert_eq!(t.pc, 0x3400);
        assert_eq!(epc_hex(&t.epc), EPC);
        assert_eq!(t.crc, 0x3A76);
        // The encoder for fake readers produces the same bytes.
        assert_eq!(tag_notice(-55, 0x3400, &t.epc, 0x3A76), hex(NOTICE));
        assert_eq!(pc_for(12), 0x3000);
        assert_eq!(
            d.counters(),
            DecoderCounters {
                bytes: 24,
                frames: 1,
                ..DecoderCounters::default()
            }
        );
    }

    #[test]
    fn error_and_other_responses_are_told_apart() {
        let mut d = Decoder::new();
        let mut stream = error_response(0x15);
        stream.extend(encode(frame_type::RESPONSE, cmd::STOP_POLL, &[0]));
        stream.extend(encode(frame_type::COMMAND, cmd::SINGLE_POLL, &[]));
        let msgs = decode_all(&mut d, &stream);
        assert_eq!(
            msgs,
            vec![
                Message::Error { code: 0x15 },
                Message::Response {
                    command: cmd::STOP_POLL,
                    params: vec![0]
                },
                Message::Other {
                    frame_type: 0,
                    command: cmd::SINGLE_POLL
                },
            ]
        );
        assert_eq!(describe_error(0x15), "no tag answered the inventory round");
        assert!(describe_error(0x99).contains("unknown"));
    }

    #[test]
    fn a_frame_split_at_every_point_decodes_once() {
        let whole = hex(NOTICE);
        for cut in 0..=whole.len() {
            let mut d = Decoder::new();
            let mut got = d.push(&whole[..cut], 0);
            got.extend(d.push(&whole[cut..], 1));
            assert_eq!(got.len(), 1, "cut at {cut}");
            assert_eq!(d.pending(), 0);
        }
        // And byte by byte.
        let mut d = Decoder::new();
        let n: usize = whole.iter().map(|b| d.push(&[*b], 0).len()).sum();
        assert_eq!(n, 1);
    }

    #[test]
    fn noise_between_frames_is_skipped_and_counted() {
        let mut d = Decoder::new();
        let mut stream = vec![0x00, 0x13, 0x7E, 0xFF];
        stream.extend(hex(NOTICE));
        // Noise that contains a header byte followed by an absurd length.
        stream.extend([0xBB, 0x02, 0x22, 0xFF, 0xFF, 0x01]);
        stream.extend(tag_notice(-40, pc_for(4), &[1, 2, 3, 4], 0xBEEF));
        let msgs = decode_all(&mut d, &stream);
        assert_eq!(msgs.len(), 2);
        assert_eq!(epc_of(&msgs[0]), EPC);
        assert_eq!(epc_of(&msgs[1]), "01020304");
        let c = d.counters();
        assert_eq!(c.frames, 2);
        assert_eq!(c.oversize, 1);
        assert_eq!(c.garbage_bytes, 4 + 6);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn a_bad_checksum_drops_only_that_frame() {
        let mut bad = hex(NOTICE);
        bad[10] ^= 0x01; // one EPC bit flipped on the line
        let mut stream = bad.clone();
        stream.extend(hex(NOTICE));
        let mut d = Decoder::new();
        let msgs = decode_all(&mut d, &stream);
        assert_eq!(msgs.len(), 1);
        assert_eq!(epc_of(&msgs[0]), EPC);
        let c = d.counters();
        assert_eq!(c.bad_checksum, 1);
        assert_eq!(c.garbage_bytes, bad.len() as u64);
    }

    #[test]
    fn a_header_byte_inside_a_cut_frame_does_not_swallow_the_next_frame() {
        // The first frame is cut after its length; what follows is a whole frame. The cut frame
        // claims 17 parameter bytes, so the decoder reads into the next frame, finds no `7E` where
        // the end should be, and resynchronises on the next `BB`.
        let whole = hex(NOTICE);
        let mut stream = whole[..9].to_vec();
        stream.extend(error_response(0x15));
        stream.extend(&whole);
        let mut d = Decoder::new();
        let msgs = decode_all(&mut d, &stream);
        assert_eq!(msgs.last().map(epc_of).as_deref(), Some(EPC));
        assert!(msgs.contains(&Message::Error { code: 0x15 }), "{msgs:?}");
        assert!(d.counters().bad_end >= 1);
    }

    #[test]
    fn a_partial_frame_left_by_silence_is_dropped_and_the_frames_behind_it_come_out() {
        let whole = hex(NOTICE);
        let mut d = Decoder::new();
        // A cut frame that claims 17 bytes, followed by a short complete frame that fits inside
        // those 17: nothing comes out until the line goes quiet.
        let mut stream = whole[..5].to_vec();
        stream.extend(error_response(0x15));
        assert!(d.push(&stream, 1_000).is_empty());
        assert!(d.tick(1_050).is_empty(), "not quiet long enough yet");
        let frames = d.tick(1_000 + PARTIAL_TIMEOUT_MS);
        assert_eq!(frames.len(), 1);
        assert_eq!(decode(&frames[0]).unwrap(), Message::Error { code: 0x15 });
        assert_eq!(d.counters().cut, 1);
        assert_eq!(d.pending(), 0);
        // The next frame after the silence is intact.
        assert_eq!(d.push(&whole, 5_000).len(), 1);
    }

    #[test]
    fn bytes_after_a_silence_do_not_complete_a_stale_partial_frame() {
        let whole = hex(NOTICE);
        let mut d = Decoder::new();
        assert!(d.push(&whole[..12], 0).is_empty());
        // No tick ran (a busy driver); the rest arrives late, then a whole frame.
        let mut late = whole[12..].to_vec();
        late.extend(&whole);
        let frames = d.push(&late, 500);
        assert_eq!(frames.len(), 1);
        assert_eq!(d.counters().cut, 1);
    }

    #[test]
    fn abandon_counts_the_cut_frame_and_empties_the_buffer() {
        let mut d = Decoder::new();
        d.push(&hex(NOTICE)[..7], 0);
        assert!(d.abandon().is_empty());
        assert_eq!(d.counters().cut, 1);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn malformed_verified_frames_are_errors_not_panics() {
        let short = Frame {
            frame_type: frame_type::NOTICE,
            command: cmd::SINGLE_POLL,
            params: vec![0xC9, 0x34, 0x00, 0x3A, 0x76],
        };
        assert_eq!(decode(&short), Err(MessageError::ShortNotice(5)));
        for n in 0..5 {
            let f = Frame {
                params: vec![0; n],
                ..short.clone()
            };
            assert_eq!(decode(&f), Err(MessageError::ShortNotice(n)));
        }
        let bad_error = Frame {
            frame_type: frame_type::RESPONSE,
            command: cmd::ERROR,
            params: vec![],
        };
        assert_eq!(decode(&bad_error), Err(MessageError::BadError(0)));
    }

    #[test]
    fn every_corruption_of_a_stream_is_survived() {
        let mut stream = hex(NOTICE);
        stream.extend(error_response(0x15));
        stream.extend(tag_notice(-70, pc_for(62), &[0xAB; 62], 1));
        for i in 0..stream.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut s = stream.clone();
                s[i] ^= flip;
                let mut d = Decoder::new();
                let mut frames = d.push(&s, 0);
                frames.extend(d.abandon());
                for f in &frames {
                    let _ = decode(f);
                }
                // One corrupted byte costs at most the frame it is in.
                assert!(frames.len() >= 2, "byte {i} ^ {flip:02X}: {frames:?}");
                assert_eq!(d.pending(), 0);
            }
            let mut d = Decoder::new();
            let _ = d.push(&stream[..i], 0);
            let _ = d.abandon();
        }
    }

    #[test]
    fn the_buffer_stays_bounded_under_endless_header_bytes() {
        let mut d = Decoder::new();
        for t in 0..1_000u64 {
            d.push(&[0xBB, 0x00, 0x22, 0x00, 0xFF, 0xBB, 0xBB, 0x01], t);
            assert!(d.pending() <= MAX_PARAMS + OVERHEAD + 8, "{}", d.pending());
        }
    }
}
