//! LLRP (EPCglobal Low Level Reader Protocol) codec: the subset Relais needs to run one
//! inventory on a fixed UHF reader and receive its tag reports.
//!
//! Written by hand from the EPCglobal LLRP 1.0.1 standard (messages section 16, parameters
//! section 16.2, binary encoding section 17) with the LLRP 1.1 additions checked where they
//! touch this subset (two more TV parameters, message version 2). No Rust crate speaks LLRP.
//!
//! Everything decoded here comes from the network: every length is checked against what is
//! actually there, nothing indexes unchecked, and no input makes this module panic (the
//! `llrp_frame` fuzz target exercises that).
//!
//! Encoding recap (section 17):
//! * message header: 3 reserved bits, 3-bit version, 10-bit type, 32-bit total length
//!   (header included), 32-bit message id — 10 bytes;
//! * TLV parameter: 6 reserved bits, 10-bit type (128..=1023), 16-bit total length;
//! * TV parameter: one byte with bit 7 set and a 7-bit type (1..=127), then a value whose size
//!   is fixed by the type ([`tv_value_len`]) — a TV parameter carries no length, so an unknown
//!   TV type cannot be skipped and ends the decoding of the enclosing TLV.

use std::io::Read;

/// LLRP protocol version we put in our headers: 1 = LLRP 1.0.1. LLRP 1.1 readers must accept
/// version 1 messages, while a 1.0.1 reader refuses version 2 ones, so 1 works everywhere.
pub const VERSION: u8 = 1;

/// Size of the message header.
pub const HEADER_LEN: usize = 10;

/// Default limit on one message. The biggest legitimate message in this subset is a report
/// buffer flush; a reader sending more than this is misconfigured (or is not an LLRP reader).
pub const DEFAULT_MAX_MESSAGE: usize = 1024 * 1024;

/// Message types (section 16 / 17.1), only those this module encodes or decodes.
pub mod msg {
    pub const GET_READER_CAPABILITIES: u16 = 1;
    pub const SET_READER_CONFIG: u16 = 3;
    pub const CLOSE_CONNECTION_RESPONSE: u16 = 4;
    pub const GET_READER_CAPABILITIES_RESPONSE: u16 = 11;
    pub const SET_READER_CONFIG_RESPONSE: u16 = 13;
    pub const CLOSE_CONNECTION: u16 = 14;
    pub const ADD_ROSPEC: u16 = 20;
    pub const DELETE_ROSPEC: u16 = 21;
    pub const START_ROSPEC: u16 = 22;
    pub const STOP_ROSPEC: u16 = 23;
    pub const ENABLE_ROSPEC: u16 = 24;
    pub const ADD_ROSPEC_RESPONSE: u16 = 30;
    pub const DELETE_ROSPEC_RESPONSE: u16 = 31;
    pub const START_ROSPEC_RESPONSE: u16 = 32;
    pub const STOP_ROSPEC_RESPONSE: u16 = 33;
    pub const ENABLE_ROSPEC_RESPONSE: u16 = 34;
    pub const RO_ACCESS_REPORT: u16 = 61;
    pub const KEEPALIVE: u16 = 62;
    pub const READER_EVENT_NOTIFICATION: u16 = 63;
    pub const KEEPALIVE_ACK: u16 = 72;
    pub const ERROR_MESSAGE: u16 = 100;
    pub const CUSTOM_MESSAGE: u16 = 1023;

    /// Name for logs and error messages.
    pub fn name(msg_type: u16) -> &'static str {
        match msg_type {
            GET_READER_CAPABILITIES => "GET_READER_CAPABILITIES",
            SET_READER_CONFIG => "SET_READER_CONFIG",
            CLOSE_CONNECTION_RESPONSE => "CLOSE_CONNECTION_RESPONSE",
            GET_READER_CAPABILITIES_RESPONSE => "GET_READER_CAPABILITIES_RESPONSE",
            SET_READER_CONFIG_RESPONSE => "SET_READER_CONFIG_RESPONSE",
            CLOSE_CONNECTION => "CLOSE_CONNECTION",
            ADD_ROSPEC => "ADD_ROSPEC",
            DELETE_ROSPEC => "DELETE_ROSPEC",
            START_ROSPEC => "START_ROSPEC",
            STOP_ROSPEC => "STOP_ROSPEC",
            ENABLE_ROSPEC => "ENABLE_ROSPEC",
            ADD_ROSPEC_RESPONSE => "ADD_ROSPEC_RESPONSE",
            DELETE_ROSPEC_RESPONSE => "DELETE_ROSPEC_RESPONSE",
            START_ROSPEC_RESPONSE => "START_ROSPEC_RESPONSE",
            STOP_ROSPEC_RESPONSE => "STOP_ROSPEC_RESPONSE",
            ENABLE_ROSPEC_RESPONSE => "ENABLE_ROSPEC_RESPONSE",
            RO_ACCESS_REPORT => "RO_ACCESS_REPORT",
            KEEPALIVE => "KEEPALIVE",
            READER_EVENT_NOTIFICATION => "READER_EVENT_NOTIFICATION",
            KEEPALIVE_ACK => "KEEPALIVE_ACK",
            ERROR_MESSAGE => "ERROR_MESSAGE",
            CUSTOM_MESSAGE => "CUSTOM_MESSAGE",
            _ => "message",
        }
    }

    /// The response type a request is answered with (section 16: request type + 10, except
    /// CLOSE_CONNECTION, whose numbers were assigned out of order).
    pub fn response_to(request: u16) -> u16 {
        match request {
            CLOSE_CONNECTION => CLOSE_CONNECTION_RESPONSE,
            other => other.saturating_add(10),
        }
    }
}

/// Parameter types (section 17.2), only those this module encodes or decodes.
pub mod param {
    // TV parameters (1..=127).
    pub const ANTENNA_ID: u16 = 1;
    pub const FIRST_SEEN_UTC: u16 = 2;
    pub const PEAK_RSSI: u16 = 6;
    pub const TAG_SEEN_COUNT: u16 = 8;
    pub const EPC_96: u16 = 13;
    // TLV parameters (128..=1023).
    pub const UTC_TIMESTAMP: u16 = 128;
    pub const UPTIME: u16 = 129;
    pub const GENERAL_DEVICE_CAPABILITIES: u16 = 137;
    pub const RO_SPEC: u16 = 177;
    pub const RO_BOUNDARY_SPEC: u16 = 178;
    pub const RO_SPEC_START_TRIGGER: u16 = 179;
    pub const RO_SPEC_STOP_TRIGGER: u16 = 182;
    pub const AI_SPEC: u16 = 183;
    pub const AI_SPEC_STOP_TRIGGER: u16 = 184;
    pub const INVENTORY_PARAMETER_SPEC: u16 = 186;
    pub const KEEPALIVE_SPEC: u16 = 220;
    pub const RO_REPORT_SPEC: u16 = 237;
    pub const TAG_REPORT_CONTENT_SELECTOR: u16 = 238;
    pub const TAG_REPORT_DATA: u16 = 240;
    pub const EPC_DATA: u16 = 241;
    pub const READER_EVENT_NOTIFICATION_DATA: u16 = 246;
    pub const READER_EXCEPTION_EVENT: u16 = 252;
    pub const CONNECTION_ATTEMPT_EVENT: u16 = 256;
    pub const CONNECTION_CLOSE_EVENT: u16 = 257;
    pub const LLRP_STATUS: u16 = 287;
    pub const FIELD_ERROR: u16 = 288;
    pub const PARAMETER_ERROR: u16 = 289;
    pub const CUSTOM: u16 = 1023;
}

/// Size of a TV parameter's value (type byte excluded), by TV type, from the table of section
/// 17.2 (LLRP 1.0.1 types 1-18, LLRP 1.1 adds 19-20). `None`: not a TV type we know, so the
/// rest of the enclosing parameter cannot be walked.
pub fn tv_value_len(tv_type: u8) -> Option<usize> {
    Some(match tv_type {
        1 => 2,   // AntennaID: u16
        2 => 8,   // FirstSeenTimestampUTC: u64 µs
        3 => 8,   // FirstSeenTimestampUptime: u64 µs
        4 => 8,   // LastSeenTimestampUTC: u64 µs
        5 => 8,   // LastSeenTimestampUptime: u64 µs
        6 => 1,   // PeakRSSI: s8 dBm
        7 => 2,   // ChannelIndex: u16
        8 => 2,   // TagSeenCount: u16
        9 => 4,   // ROSpecID: u32
        10 => 2,  // InventoryParameterSpecID: u16
        11 => 2,  // C1G2-CRC: u16
        12 => 2,  // C1G2-PC: u16
        13 => 12, // EPC-96: 96 bits
        14 => 2,  // SpecIndex: u16
        15 => 2,  // ClientRequestOpSpecResult: u16
        16 => 4,  // AccessSpecID: u32
        17 => 2,  // OpSpecID: u16
        18 => 4,  // C1G2SingulationDetails: two u16
        19 => 2,  // C1G2XPCW1 (LLRP 1.1): u16
        20 => 2,  // C1G2XPCW2 (LLRP 1.1): u16
        _ => return None,
    })
}

/// What went wrong decoding bytes from a reader. Each message says what a technician can check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlrpError {
    #[error(
        "the reader announced a {length}-byte message, over the {max}-byte limit: check that the \
         address points at the reader's LLRP port (normally 5084) and not at another service"
    )]
    MessageTooLarge { length: u64, max: usize },
    #[error(
        "message length {length} is shorter than the 10-byte LLRP header: the stream is corrupt \
         or the address is not an LLRP reader"
    )]
    MessageTooShort { length: u32 },
    #[error(
        "{what} needs {needed} bytes but only {available} are left in its message: the reader \
         sent a malformed message (check its firmware version)"
    )]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    #[error(
        "parameter type {param_type} announces length {length}, but {available} bytes are left: \
         the reader sent a malformed message (check its firmware version)"
    )]
    BadParameterLength {
        param_type: u16,
        length: usize,
        available: usize,
    },
    #[error(
        "TV parameter type {0} is not defined by LLRP 1.1, so the rest of its parameter cannot be \
         read: the reader may use a newer LLRP version; check its firmware and LLRP settings"
    )]
    UnknownTvParameter(u8),
    #[error("{what} parameter is missing from {message}: the reader's answer is incomplete")]
    MissingParameter {
        what: &'static str,
        message: &'static str,
    },
}

/// One framed message: header fields and the body (the bytes after the 10-byte header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub version: u8,
    pub msg_type: u16,
    pub id: u32,
    pub body: Vec<u8>,
}

impl Frame {
    /// The frame in wire form (header + body).
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_message(self.version, self.msg_type, self.id, &self.body)
    }
}

/// Build a message from its type, id and body. Bodies come from our own encoders and are tiny;
/// one longer than `u32::MAX` cannot be built by this module, the length saturates.
pub fn encode_message(version: u8, msg_type: u16, id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    let first = (u16::from(version & 0x07) << 10) | (msg_type & 0x03FF);
    out.extend_from_slice(&first.to_be_bytes());
    let len = u32::try_from(HEADER_LEN + body.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

// ---------------------------------------------------------------------------------------------
// Streaming frame reader
// ---------------------------------------------------------------------------------------------

/// Cuts a TCP byte stream into LLRP messages. TCP gives no message boundaries: one `read` may
/// hold half a header, or several messages and the start of the next, so bytes are buffered
/// until a whole message is there. The announced length is checked as soon as the 6 bytes that
/// carry it arrive, before anything is buffered for it, so a hostile or confused peer cannot
/// make us allocate more than `max_message` (plus one read buffer).
///
/// After an error the stream has lost its framing: the caller must drop the connection.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf` (consumed bytes are compacted away lazily so that a
    /// read holding many small messages does not shift the buffer once per message).
    start: usize,
    max_message: usize,
    /// Fixed landing area for socket reads, allocated once per connection.
    scratch: Box<[u8]>,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader::new(DEFAULT_MAX_MESSAGE)
    }
}

impl FrameReader {
    pub fn new(max_message: usize) -> FrameReader {
        FrameReader {
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            max_message: max_message.max(HEADER_LEN),
            scratch: vec![0u8; 64 * 1024].into_boxed_slice(),
        }
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    /// Add received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(data);
    }

    /// Read once from `src` into the buffer. Returns what `read` returned (0 = end of stream).
    pub fn read_from<R: Read>(&mut self, src: &mut R) -> std::io::Result<usize> {
        self.compact();
        let n = src.read(&mut self.scratch)?;
        self.buf
            .extend_from_slice(self.scratch.get(..n).unwrap_or_default());
        Ok(n)
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// The next complete message, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, LlrpError> {
        let pending = self.buf.get(self.start..).unwrap_or_default();
        let Some(&[a, b, l0, l1, l2, l3]) = pending.get(..6) else {
            return Ok(None);
        };
        let length = u32::from_be_bytes([l0, l1, l2, l3]);
        if (length as usize) < HEADER_LEN {
            return Err(LlrpError::MessageTooShort { length });
        }
        if length as usize > self.max_message {
            return Err(LlrpError::MessageTooLarge {
                length: u64::from(length),
                max: self.max_message,
            });
        }
        let Some(whole) = pending.get(..length as usize) else {
            return Ok(None);
        };
        let Some(&[i0, i1, i2, i3]) = whole.get(6..HEADER_LEN) else {
            return Ok(None);
        };
        let first = u16::from_be_bytes([a, b]);
        let frame = Frame {
            version: ((first >> 10) & 0x07) as u8,
            msg_type: first & 0x03FF,
            id: u32::from_be_bytes([i0, i1, i2, i3]),
            body: whole.get(HEADER_LEN..).unwrap_or_default().to_vec(),
        };
        self.start += length as usize;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(frame))
    }
}

// ---------------------------------------------------------------------------------------------
// Encoders (client → reader)
// ---------------------------------------------------------------------------------------------

/// Appends one TLV parameter: reserves the header, lets `fill` write the value (including
/// nested parameters), then patches in the length.
fn tlv(out: &mut Vec<u8>, param_type: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&(param_type & 0x03FF).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    fill(out);
    let len = u16::try_from(out.len() - at)
        .unwrap_or(u16::MAX)
        .to_be_bytes();
    if let Some(slot) = out.get_mut(at + 2..at + 4) {
        slot.copy_from_slice(&len);
    }
}

/// GET_READER_CAPABILITIES with RequestedData = 0 (all): we only use the general device
/// capabilities, but asking for everything is the request every reader supports.
pub fn get_reader_capabilities(id: u32) -> Vec<u8> {
    encode_message(VERSION, msg::GET_READER_CAPABILITIES, id, &[0])
}

/// When the ROSpec starts once enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTrigger {
    /// Only on START_ROSPEC (ROSpecStartTriggerType 0).
    Null,
    /// As soon as it is enabled (type 1).
    Immediate,
}

/// The one ROSpec Relais runs: runs until stopped, one AISpec on all antennas, EPC Class 1
/// Gen 2 inventory, a report every `report_every_n_tags` tag reports (or when the ROSpec ends)
/// carrying the EPC, antenna, peak RSSI, first-seen timestamp and seen count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoSpec {
    pub id: u32,
    pub start: StartTrigger,
    /// N of the ROReportSpec. 0 would mean "only at the end of the ROSpec", which never comes
    /// with a null stop trigger, so encoders send at least 1.
    pub report_every_n_tags: u16,
}

/// Which fields each TagReportData carries (TagReportContentSelector, section 16.2.7.1): the
/// bits in order ROSpecID, SpecIndex, InventoryParameterSpecID, AntennaID, ChannelIndex,
/// PeakRSSI, FirstSeenTimestamp, LastSeenTimestamp, TagSeenCount, AccessSpecID, 6 reserved.
const CONTENT_ANTENNA_ID: u16 = 1 << 12;
const CONTENT_PEAK_RSSI: u16 = 1 << 10;
const CONTENT_FIRST_SEEN: u16 = 1 << 9;
const CONTENT_TAG_SEEN_COUNT: u16 = 1 << 7;

fn ro_report_spec(out: &mut Vec<u8>, every_n_tags: u16) {
    tlv(out, param::RO_REPORT_SPEC, |o| {
        // ROReportTrigger 2: upon N TagReportData parameters or end of ROSpec.
        o.push(2);
        o.extend_from_slice(&every_n_tags.max(1).to_be_bytes());
        tlv(o, param::TAG_REPORT_CONTENT_SELECTOR, |o| {
            let bits = CONTENT_ANTENNA_ID
                | CONTENT_PEAK_RSSI
                | CONTENT_FIRST_SEEN
                | CONTENT_TAG_SEEN_COUNT;
            o.extend_from_slice(&bits.to_be_bytes());
        });
    });
}

/// SET_READER_CONFIG: reset to factory default (so settings left by another client or a
/// previous run cannot change what we receive; this also deletes old ROSpecs), a periodic
/// keepalive (0 = none), and the default RO report spec.
pub fn set_reader_config(id: u32, keepalive_ms: u32, report_every_n_tags: u16) -> Vec<u8> {
    let mut body = vec![0x80]; // ResetToFactoryDefault = 1, 7 reserved bits.
    ro_report_spec(&mut body, report_every_n_tags);
    tlv(&mut body, param::KEEPALIVE_SPEC, |o| {
        // KeepaliveTriggerType: 0 = null, 1 = periodic.
        o.push(u8::from(keepalive_ms > 0));
        o.extend_from_slice(&keepalive_ms.to_be_bytes());
    });
    encode_message(VERSION, msg::SET_READER_CONFIG, id, &body)
}

/// ADD_ROSPEC with [`RoSpec`].
pub fn add_rospec(id: u32, spec: &RoSpec) -> Vec<u8> {
    let mut body = Vec::with_capacity(96);
    tlv(&mut body, param::RO_SPEC, |o| {
        o.extend_from_slice(&spec.id.to_be_bytes());
        o.push(0); // Priority: 0 = highest; we are the only client.
        o.push(0); // CurrentState: must be Disabled in ADD_ROSPEC.
        tlv(o, param::RO_BOUNDARY_SPEC, |o| {
            tlv(o, param::RO_SPEC_START_TRIGGER, |o| {
                o.push(match spec.start {
                    StartTrigger::Null => 0,
                    StartTrigger::Immediate => 1,
                });
            });
            tlv(o, param::RO_SPEC_STOP_TRIGGER, |o| {
                o.push(0); // Null: run until STOP/DISABLE/DELETE_ROSPEC.
                o.extend_from_slice(&0u32.to_be_bytes()); // DurationTriggerValue, unused.
            });
        });
        tlv(o, param::AI_SPEC, |o| {
            o.extend_from_slice(&1u16.to_be_bytes()); // AntennaCount
            o.extend_from_slice(&0u16.to_be_bytes()); // AntennaID 0 = all antennas
            tlv(o, param::AI_SPEC_STOP_TRIGGER, |o| {
                o.push(0); // Null: the AISpec ends only with its ROSpec.
                o.extend_from_slice(&0u32.to_be_bytes());
            });
            tlv(o, param::INVENTORY_PARAMETER_SPEC, |o| {
                o.extend_from_slice(&1u16.to_be_bytes()); // InventoryParameterSpecID
                o.push(1); // ProtocolID 1 = EPCglobal Class 1 Gen 2
            });
        });
        ro_report_spec(o, spec.report_every_n_tags);
    });
    encode_message(VERSION, msg::ADD_ROSPEC, id, &body)
}

fn rospec_id_message(msg_type: u16, id: u32, rospec_id: u32) -> Vec<u8> {
    encode_message(VERSION, msg_type, id, &rospec_id.to_be_bytes())
}

pub fn enable_rospec(id: u32, rospec_id: u32) -> Vec<u8> {
    rospec_id_message(msg::ENABLE_ROSPEC, id, rospec_id)
}

pub fn start_rospec(id: u32, rospec_id: u32) -> Vec<u8> {
    rospec_id_message(msg::START_ROSPEC, id, rospec_id)
}

/// DELETE_ROSPEC; `rospec_id` 0 deletes all ROSpecs.
pub fn delete_rospec(id: u32, rospec_id: u32) -> Vec<u8> {
    rospec_id_message(msg::DELETE_ROSPEC, id, rospec_id)
}

/// KEEPALIVE_ACK: carries the id of the KEEPALIVE it answers.
pub fn keepalive_ack(id: u32) -> Vec<u8> {
    encode_message(VERSION, msg::KEEPALIVE_ACK, id, &[])
}

pub fn close_connection(id: u32) -> Vec<u8> {
    encode_message(VERSION, msg::CLOSE_CONNECTION, id, &[])
}

// ---------------------------------------------------------------------------------------------
// Reader-side encoders: what a reader sends. Used by tests, the benchmark's fake reader and
// the fuzz corpus; kept here so that both sides share one definition of the layout.
// ---------------------------------------------------------------------------------------------

/// READER_EVENT_NOTIFICATION with a UTC timestamp and a ConnectionAttemptEvent.
pub fn reader_event_connection_attempt(id: u32, status: u16, utc_us: u64) -> Vec<u8> {
    let mut body = Vec::new();
    tlv(&mut body, param::READER_EVENT_NOTIFICATION_DATA, |o| {
        tlv(o, param::UTC_TIMESTAMP, |o| {
            o.extend_from_slice(&utc_us.to_be_bytes())
        });
        tlv(o, param::CONNECTION_ATTEMPT_EVENT, |o| {
            o.extend_from_slice(&status.to_be_bytes())
        });
    });
    encode_message(VERSION, msg::READER_EVENT_NOTIFICATION, id, &body)
}

/// A response (`msg_type`) carrying only an LLRPStatus.
pub fn status_response(msg_type: u16, id: u32, code: u16, description: &str) -> Vec<u8> {
    let mut body = Vec::new();
    llrp_status(&mut body, code, description);
    encode_message(VERSION, msg_type, id, &body)
}

/// The LLRPStatus parameter: status code, UTF-8 error description (truncated to what a u16
/// byte count can say).
pub fn llrp_status(out: &mut Vec<u8>, code: u16, description: &str) {
    tlv(out, param::LLRP_STATUS, |o| {
        o.extend_from_slice(&code.to_be_bytes());
        let text = description.as_bytes();
        let text = text.get(..text.len().min(0xFF00)).unwrap_or_default();
        o.extend_from_slice(&(text.len() as u16).to_be_bytes());
        o.extend_from_slice(text);
    });
}

pub fn keepalive(id: u32) -> Vec<u8> {
    encode_message(VERSION, msg::KEEPALIVE, id, &[])
}

/// One tag read, as a reader reports it (and as [`decode_message`] returns it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TagRead {
    /// EPC bytes; for an EPCData parameter whose bit length is not a multiple of 8 the last
    /// byte holds the remaining bits left-aligned.
    pub epc: Vec<u8>,
    pub epc_bits: u16,
    /// 0 when the report does not say (antenna IDs start at 1).
    pub antenna: u16,
    pub peak_rssi_dbm: Option<i8>,
    pub first_seen_utc_us: Option<u64>,
    /// Reads aggregated into this report by the reader; 1 when not reported.
    pub seen_count: u16,
}

/// Append one TagReportData. A 96-bit EPC goes in the compact EPC-96 TV parameter, any other
/// length in an EPCData TLV, as readers do.
pub fn tag_report_data(out: &mut Vec<u8>, tag: &TagRead) {
    tlv(out, param::TAG_REPORT_DATA, |o| {
        if tag.epc_bits == 96 && tag.epc.len() == 12 {
            o.push(0x80 | param::EPC_96 as u8);
            o.extend_from_slice(&tag.epc);
        } else {
            tlv(o, param::EPC_DATA, |o| {
                o.extend_from_slice(&tag.epc_bits.to_be_bytes());
                o.extend_from_slice(&tag.epc);
            });
        }
        if tag.antenna != 0 {
            o.push(0x80 | param::ANTENNA_ID as u8);
            o.extend_from_slice(&tag.antenna.to_be_bytes());
        }
        if let Some(rssi) = tag.peak_rssi_dbm {
            o.push(0x80 | param::PEAK_RSSI as u8);
            o.extend_from_slice(&rssi.to_be_bytes());
        }
        if let Some(us) = tag.first_seen_utc_us {
            o.push(0x80 | param::FIRST_SEEN_UTC as u8);
            o.extend_from_slice(&us.to_be_bytes());
        }
        if tag.seen_count != 1 {
            o.push(0x80 | param::TAG_SEEN_COUNT as u8);
            o.extend_from_slice(&tag.seen_count.to_be_bytes());
        }
    });
}

/// RO_ACCESS_REPORT with the given tags.
pub fn ro_access_report(id: u32, tags: &[TagRead]) -> Vec<u8> {
    let mut body = Vec::with_capacity(tags.len() * 36);
    for tag in tags {
        tag_report_data(&mut body, tag);
    }
    encode_message(VERSION, msg::RO_ACCESS_REPORT, id, &body)
}

// ---------------------------------------------------------------------------------------------
// Decoders (reader → client)
// ---------------------------------------------------------------------------------------------

/// LLRPStatus (section 16.2.8.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlrpStatus {
    pub code: u16,
    pub description: String,
    /// (field number, error code) of a FieldError, directly or inside a ParameterError.
    pub field_error: Option<(u16, u16)>,
    /// (parameter type, error code) of the outermost ParameterError.
    pub parameter_error: Option<(u16, u16)>,
}

impl LlrpStatus {
    pub fn is_success(&self) -> bool {
        self.code == 0
    }

    /// Spec name of the status code (section 16.2.8.1.1).
    pub fn code_name(&self) -> &'static str {
        match self.code {
            0 => "M_Success",
            100 => "M_ParameterError",
            101 => "M_FieldError",
            102 => "M_UnexpectedParameter",
            103 => "M_MissingParameter",
            104 => "M_DuplicateParameter",
            105 => "M_OverflowParameter",
            106 => "M_OverflowField",
            107 => "M_UnknownParameter",
            108 => "M_UnknownField",
            109 => "M_UnsupportedMessage",
            110 => "M_UnsupportedVersion",
            111 => "M_UnsupportedParameter",
            112 => "M_UnexpectedMessage",
            200 => "P_ParameterError",
            201 => "P_FieldError",
            202 => "P_UnexpectedParameter",
            203 => "P_MissingParameter",
            204 => "P_DuplicateParameter",
            205 => "P_OverflowParameter",
            206 => "P_OverflowField",
            207 => "P_UnknownParameter",
            208 => "P_UnknownField",
            209 => "P_UnsupportedParameter",
            300 => "A_Invalid",
            301 => "A_OutOfRange",
            401 => "R_DeviceError",
            _ => "unknown status",
        }
    }
}

impl std::fmt::Display for LlrpStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.code_name(), self.code)?;
        if !self.description.is_empty() {
            write!(f, ": {}", self.description)?;
        }
        if let Some((p, e)) = self.parameter_error {
            write!(f, " [parameter type {p}, error {e}]")?;
        }
        if let Some((n, e)) = self.field_error {
            write!(f, " [field {n}, error {e}]")?;
        }
        Ok(())
    }
}

/// Status of a ConnectionAttemptEvent (section 16.2.7.6.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionAttempt(pub u16);

impl ConnectionAttempt {
    pub fn is_success(self) -> bool {
        self.0 == 0
    }

    pub fn describe(self) -> &'static str {
        match self.0 {
            0 => "connection accepted",
            1 => "refused: the reader already has a reader-initiated connection",
            2 => "refused: another client is already connected to the reader",
            3 => "refused by the reader for a reason other than an existing connection",
            4 => "another client attempted to connect",
            _ => "unknown connection attempt status",
        }
    }
}

/// The parts of a READER_EVENT_NOTIFICATION this agent acts on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReaderEvent {
    pub utc_us: Option<u64>,
    pub connection_attempt: Option<ConnectionAttempt>,
    /// The reader is closing the connection (ConnectionCloseEvent).
    pub connection_close: bool,
    /// Message of a ReaderExceptionEvent.
    pub reader_exception: Option<String>,
}

/// From GeneralDeviceCapabilities (section 16.2.3.2), for the technician's status line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    pub max_antennas: u16,
    /// IANA private enterprise number of the manufacturer (e.g. 25882 = Impinj).
    pub manufacturer: u32,
    pub model: u32,
    pub firmware: String,
}

/// RO_ACCESS_REPORT contents.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoAccessReport {
    pub tags: Vec<TagRead>,
    /// TagReportData parameters that could not be read (malformed, an unknown TV parameter,
    /// or no EPC) and were skipped whole; the other reads of the report are kept.
    pub skipped: u32,
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    ReaderEventNotification(ReaderEvent),
    /// Any *_RESPONSE or ERROR_MESSAGE: its type and LLRPStatus, plus the device capabilities
    /// when it is a GET_READER_CAPABILITIES_RESPONSE that has them.
    Response {
        msg_type: u16,
        status: LlrpStatus,
        capabilities: Option<Capabilities>,
    },
    /// KEEPALIVE; `id` must be echoed in the KEEPALIVE_ACK.
    Keepalive {
        id: u32,
    },
    RoAccessReport(RoAccessReport),
    /// A message type outside this subset (custom messages included): ignored by the client.
    Other {
        msg_type: u16,
    },
}

/// Checked big-endian reads over a byte slice: every read says what it needed, and none can
/// run past the end.
#[derive(Debug, Clone, Copy)]
struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8]) -> Cursor<'a> {
        Cursor { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], LlrpError> {
        match (self.data.get(..n), self.data.get(n..)) {
            (Some(head), Some(rest)) => {
                self.data = rest;
                Ok(head)
            }
            _ => Err(LlrpError::Truncated {
                what,
                needed: n,
                available: self.data.len(),
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], LlrpError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, LlrpError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, LlrpError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, LlrpError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, LlrpError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// An LLRP UTF-8 string: u16 byte count, then the bytes. Invalid UTF-8 is replaced rather
    /// than refused: these strings are only shown to people.
    fn utf8(&mut self, what: &'static str) -> Result<String, LlrpError> {
        let n = self.u16(what)? as usize;
        Ok(String::from_utf8_lossy(self.take(n, what)?).into_owned())
    }

    /// The next parameter, TLV or TV.
    fn param(&mut self) -> Result<Param<'a>, LlrpError> {
        let first = self.data.first().copied().ok_or(LlrpError::Truncated {
            what: "parameter header",
            needed: 1,
            available: 0,
        })?;
        if first & 0x80 != 0 {
            let tv_type = first & 0x7F;
            let len = tv_value_len(tv_type).ok_or(LlrpError::UnknownTvParameter(tv_type))?;
            self.take(1, "TV parameter type")?;
            let value = self.take(len, "TV parameter value")?;
            return Ok(Param {
                param_type: u16::from(tv_type),
                value,
            });
        }
        let header = self.array::<4>("TLV parameter header")?;
        let param_type = u16::from_be_bytes([header[0], header[1]]) & 0x03FF;
        let length = u16::from_be_bytes([header[2], header[3]]) as usize;
        let value_len = length.checked_sub(4).ok_or(LlrpError::BadParameterLength {
            param_type,
            length,
            available: self.data.len() + 4,
        })?;
        let available = self.data.len();
        let value = self.take(value_len, "TLV parameter value").map_err(|_| {
            LlrpError::BadParameterLength {
                param_type,
                length,
                available: available + 4,
            }
        })?;
        Ok(Param { param_type, value })
    }
}

#[derive(Debug, Clone, Copy)]
struct Param<'a> {
    param_type: u16,
    value: &'a [u8],
}

/// Decode one message. Unknown and custom (1023) parameters are skipped by their length; an
/// unknown message type is returned as [`Message::Other`].
pub fn decode_message(frame: &Frame) -> Result<Message, LlrpError> {
    let body = frame.body.as_slice();
    match frame.msg_type {
        msg::KEEPALIVE => Ok(Message::Keepalive { id: frame.id }),
        msg::READER_EVENT_NOTIFICATION => {
            decode_reader_event(body).map(Message::ReaderEventNotification)
        }
        msg::RO_ACCESS_REPORT => decode_ro_access_report(body).map(Message::RoAccessReport),
        msg::GET_READER_CAPABILITIES_RESPONSE
        | msg::SET_READER_CONFIG_RESPONSE
        | msg::CLOSE_CONNECTION_RESPONSE
        | msg::ADD_ROSPEC_RESPONSE
        | msg::DELETE_ROSPEC_RESPONSE
        | msg::START_ROSPEC_RESPONSE
        | msg::STOP_ROSPEC_RESPONSE
        | msg::ENABLE_ROSPEC_RESPONSE
        | msg::ERROR_MESSAGE => decode_response(frame.msg_type, body),
        // Other responses in the 1.0.1 numbering (GET_READER_CONFIG_RESPONSE, access spec
        // responses, ENABLE_EVENTS_AND_REPORTS has none): not requested by us.
        other => Ok(Message::Other { msg_type: other }),
    }
}

fn decode_response(msg_type: u16, body: &[u8]) -> Result<Message, LlrpError> {
    let mut cur = Cursor::new(body);
    let mut status = None;
    let mut capabilities = None;
    while !cur.is_empty() {
        let p = cur.param()?;
        match p.param_type {
            param::LLRP_STATUS => status = Some(decode_status(p.value)?),
            param::GENERAL_DEVICE_CAPABILITIES => {
                capabilities = Some(decode_capabilities(p.value)?)
            }
            _ => {}
        }
    }
    let status = status.ok_or(LlrpError::MissingParameter {
        what: "LLRPStatus",
        message: msg::name(msg_type),
    })?;
    Ok(Message::Response {
        msg_type,
        status,
        capabilities,
    })
}

fn decode_status(value: &[u8]) -> Result<LlrpStatus, LlrpError> {
    let mut cur = Cursor::new(value);
    let code = cur.u16("LLRPStatus code")?;
    let description = cur.utf8("LLRPStatus error description")?;
    let mut status = LlrpStatus {
        code,
        description,
        field_error: None,
        parameter_error: None,
    };
    while !cur.is_empty() {
        let p = cur.param()?;
        match p.param_type {
            param::FIELD_ERROR => status.field_error = Some(decode_field_error(p.value)?),
            param::PARAMETER_ERROR => {
                // ParameterError nests: type, code, then an optional FieldError and an
                // optional inner ParameterError. We keep the outer pair and the first
                // FieldError found, walking at most a bounded depth.
                let (pair, field) = decode_parameter_error(p.value, 0)?;
                status.parameter_error = Some(pair);
                if status.field_error.is_none() {
                    status.field_error = field;
                }
            }
            _ => {}
        }
    }
    Ok(status)
}

fn decode_field_error(value: &[u8]) -> Result<(u16, u16), LlrpError> {
    let mut cur = Cursor::new(value);
    Ok((cur.u16("FieldError field")?, cur.u16("FieldError code")?))
}

/// Nesting deeper than this is not something a reader produces; refusing to follow it bounds
/// the recursion on hostile input.
const MAX_PARAMETER_ERROR_DEPTH: u32 = 8;

type ParameterErrorInfo = ((u16, u16), Option<(u16, u16)>);

fn decode_parameter_error(value: &[u8], depth: u32) -> Result<ParameterErrorInfo, LlrpError> {
    let mut cur = Cursor::new(value);
    let pair = (
        cur.u16("ParameterError type")?,
        cur.u16("ParameterError code")?,
    );
    let mut field = None;
    while !cur.is_empty() {
        let p = cur.param()?;
        match p.param_type {
            param::FIELD_ERROR if field.is_none() => field = Some(decode_field_error(p.value)?),
            param::PARAMETER_ERROR if depth < MAX_PARAMETER_ERROR_DEPTH && field.is_none() => {
                field = decode_parameter_error(p.value, depth + 1)?.1;
            }
            _ => {}
        }
    }
    Ok((pair, field))
}

fn decode_capabilities(value: &[u8]) -> Result<Capabilities, LlrpError> {
    let mut cur = Cursor::new(value);
    let max_antennas = cur.u16("MaxNumberOfAntennaSupported")?;
    cur.u16("capability flags")?;
    let manufacturer = cur.u32("DeviceManufacturerName")?;
    let model = cur.u32("ModelName")?;
    let firmware = cur.utf8("ReaderFirmwareVersion")?;
    Ok(Capabilities {
        max_antennas,
        manufacturer,
        model,
        firmware,
    })
}

fn decode_reader_event(body: &[u8]) -> Result<ReaderEvent, LlrpError> {
    let mut cur = Cursor::new(body);
    let mut event = ReaderEvent::default();
    let mut found = false;
    while !cur.is_empty() {
        let p = cur.param()?;
        if p.param_type != param::READER_EVENT_NOTIFICATION_DATA {
            continue;
        }
        found = true;
        let mut inner = Cursor::new(p.value);
        while !inner.is_empty() {
            let q = inner.param()?;
            match q.param_type {
                param::UTC_TIMESTAMP => {
                    event.utc_us = Some(Cursor::new(q.value).u64("UTCTimestamp")?)
                }
                param::CONNECTION_ATTEMPT_EVENT => {
                    let status = Cursor::new(q.value).u16("ConnectionAttemptEvent status")?;
                    event.connection_attempt = Some(ConnectionAttempt(status));
                }
                param::CONNECTION_CLOSE_EVENT => event.connection_close = true,
                param::READER_EXCEPTION_EVENT => {
                    event.reader_exception =
                        Some(Cursor::new(q.value).utf8("ReaderExceptionEvent message")?)
                }
                // Uptime, hopping, GPI, ROSpec, AISpec, antenna, buffer events and custom
                // parameters: nothing for us to do.
                _ => {}
            }
        }
    }
    if !found {
        return Err(LlrpError::MissingParameter {
            what: "ReaderEventNotificationData",
            message: "READER_EVENT_NOTIFICATION",
        });
    }
    Ok(event)
}

fn decode_ro_access_report(body: &[u8]) -> Result<RoAccessReport, LlrpError> {
    let mut cur = Cursor::new(body);
    let mut report = RoAccessReport::default();
    while !cur.is_empty() {
        // A broken outer TLV length loses the framing of everything after it: that is an error
        // for the whole report. Problems inside one TagReportData only cost that read.
        let p = cur.param()?;
        if p.param_type != param::TAG_REPORT_DATA {
            continue; // RFSurveyReportData, custom parameters, unknown ones.
        }
        match decode_tag_report_data(p.value) {
            Ok(Some(tag)) => report.tags.push(tag),
            Ok(None) | Err(_) => report.skipped = report.skipped.saturating_add(1),
        }
    }
    Ok(report)
}

/// Longest EPC worth keeping: 496 bits, the most the 16-bit PC word's length field can
/// announce (31 words). Longer EPCData is not a Gen 2 EPC.
pub const MAX_EPC_BITS: u16 = 496;

fn decode_tag_report_data(value: &[u8]) -> Result<Option<TagRead>, LlrpError> {
    let mut cur = Cursor::new(value);
    let mut tag = TagRead {
        seen_count: 1,
        ..TagRead::default()
    };
    let mut has_epc = false;
    while !cur.is_empty() {
        let p = cur.param()?;
        let mut v = Cursor::new(p.value);
        match p.param_type {
            param::EPC_96 => {
                tag.epc = p.value.to_vec();
                tag.epc_bits = 96;
                has_epc = true;
            }
            param::EPC_DATA => {
                let bits = v.u16("EPCData bit length")?;
                if bits > MAX_EPC_BITS {
                    return Ok(None);
                }
                let bytes = v.take(usize::from(bits).div_ceil(8), "EPCData EPC")?;
                tag.epc = bytes.to_vec();
                tag.epc_bits = bits;
                has_epc = true;
            }
            param::ANTENNA_ID => tag.antenna = v.u16("AntennaID")?,
            param::PEAK_RSSI => tag.peak_rssi_dbm = Some(v.u8("PeakRSSI")? as i8),
            param::FIRST_SEEN_UTC => tag.first_seen_utc_us = Some(v.u64("FirstSeenTimestamp")?),
            param::TAG_SEEN_COUNT => tag.seen_count = v.u16("TagSeenCount")?,
            _ => {}
        }
    }
    Ok(has_epc.then_some(tag))
}

/// Upper-case hex of EPC bytes, as `decode::decode_epc_hex` and the event stream expect.
pub fn epc_hex(epc: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(epc.len() * 2);
    for b in epc {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0F)]));
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn frames(bytes: &[u8]) -> Vec<Frame> {
        let mut r = FrameReader::default();
        r.push(bytes);
        let mut out = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            out.push(f);
        }
        out
    }

    fn one(bytes: &[u8]) -> Message {
        let f = frames(bytes);
        assert_eq!(f.len(), 1);
        decode_message(&f[0]).unwrap()
    }

    fn sample_tag(i: u8) -> TagRead {
        TagRead {
            epc: vec![
                0x30, 0x74, 0x25, 0x7B, 0xF7, 0x19, 0x4E, 0x40, 0, 0, 0x1A, i,
            ],
            epc_bits: 96,
            antenna: 2,
            peak_rssi_dbm: Some(-61),
            first_seen_utc_us: Some(1_700_000_000_123_456),
            seen_count: 1,
        }
    }

    #[test]
    fn the_header_packs_version_type_length_and_id_big_endian() {
        let m = keepalive_ack(0x01020304);
        // version 1, type 72: 0b000_001_0001001000
        assert_eq!(m, vec![0x04, 0x48, 0, 0, 0, 10, 1, 2, 3, 4]);
        let f = frames(&m);
        assert_eq!(f[0].version, 1);
        assert_eq!(f[0].msg_type, msg::KEEPALIVE_ACK);
        assert_eq!(f[0].id, 0x01020304);
        assert!(f[0].body.is_empty());
    }

    #[test]
    fn responses_are_the_request_type_plus_ten_except_close_connection() {
        assert_eq!(msg::response_to(msg::ADD_ROSPEC), msg::ADD_ROSPEC_RESPONSE);
        assert_eq!(
            msg::response_to(msg::GET_READER_CAPABILITIES),
            msg::GET_READER_CAPABILITIES_RESPONSE
        );
        assert_eq!(
            msg::response_to(msg::CLOSE_CONNECTION),
            msg::CLOSE_CONNECTION_RESPONSE
        );
    }

    #[test]
    fn every_tlv_length_in_add_rospec_matches_its_content() {
        let m = add_rospec(
            7,
            &RoSpec {
                id: 42,
                start: StartTrigger::Immediate,
                report_every_n_tags: 50,
            },
        );
        // Walk the nested TLVs by hand and check they tile their parents exactly.
        fn walk(data: &[u8], depth: usize, seen: &mut Vec<u16>) {
            let mut cur = Cursor::new(data);
            while !cur.is_empty() {
                let p = cur.param().unwrap();
                seen.push(p.param_type);
                let skip = match p.param_type {
                    param::RO_SPEC => 6,
                    param::RO_BOUNDARY_SPEC => 0,
                    param::AI_SPEC => 4,
                    param::RO_REPORT_SPEC => 3,
                    param::INVENTORY_PARAMETER_SPEC => 3,
                    param::TAG_REPORT_CONTENT_SELECTOR => 2,
                    _ => continue,
                };
                if depth < 8 && p.value.len() > skip {
                    walk(&p.value[skip..], depth + 1, seen);
                }
            }
        }
        let f = frames(&m);
        let mut seen = Vec::new();
        walk(&f[0].body, 0, &mut seen);
        assert_eq!(
            seen,
            vec![
                param::RO_SPEC,
                param::RO_BOUNDARY_SPEC,
                param::RO_SPEC_START_TRIGGER,
                param::RO_SPEC_STOP_TRIGGER,
                param::AI_SPEC,
                param::AI_SPEC_STOP_TRIGGER,
                param::INVENTORY_PARAMETER_SPEC,
                param::RO_REPORT_SPEC,
                param::TAG_REPORT_CONTENT_SELECTOR,
            ]
        );
        // ROSpecID 42, then the immediate start trigger value 1.
        assert_eq!(&f[0].body[4..8], &42u32.to_be_bytes());
        assert_eq!(f[0].body[14..19], [0, 179, 0, 5, 1]);
    }

    #[test]
    fn set_reader_config_resets_and_configures_a_periodic_keepalive() {
        let f = frames(&set_reader_config(3, 10_000, 5));
        assert_eq!(f[0].msg_type, msg::SET_READER_CONFIG);
        assert_eq!(f[0].body[0], 0x80);
        let tail = &f[0].body[f[0].body.len() - 9..];
        assert_eq!(tail, &[0, 220, 0, 9, 1, 0, 0, 0x27, 0x10]);
    }

    #[test]
    fn a_report_with_epc96_and_epcdata_decodes_every_field() {
        let mut odd = sample_tag(9);
        odd.epc = vec![0xAB, 0xCD, 0xE0];
        odd.epc_bits = 20;
        odd.antenna = 4;
        odd.peak_rssi_dbm = None;
        odd.first_seen_utc_us = None;
        odd.seen_count = 3;
        let tags = vec![sample_tag(1), odd.clone()];
        let Message::RoAccessReport(r) = one(&ro_access_report(1, &tags)) else {
            panic!()
        };
        assert_eq!(r.tags, tags);
        assert_eq!(r.skipped, 0);
        assert_eq!(epc_hex(&r.tags[0].epc), "3074257BF7194E4000001A01");
    }

    #[test]
    fn unknown_and_custom_parameters_are_skipped_by_their_length() {
        let mut body = Vec::new();
        // A custom parameter at report level: vendor 25882, subtype 1, 3 bytes of data.
        tlv(&mut body, param::CUSTOM, |o| {
            o.extend_from_slice(&25882u32.to_be_bytes());
            o.extend_from_slice(&1u32.to_be_bytes());
            o.extend_from_slice(&[1, 2, 3]);
        });
        tlv(&mut body, param::TAG_REPORT_DATA, |o| {
            o.push(0x80 | 13);
            o.extend_from_slice(&[0x11; 12]);
            // Unknown TLV type 900 and a custom parameter inside the TagReportData.
            tlv(o, 900, |o| o.extend_from_slice(&[9; 7]));
            tlv(o, param::CUSTOM, |o| o.extend_from_slice(&[0; 8]));
            o.push(0x80 | 1);
            o.extend_from_slice(&3u16.to_be_bytes());
            // ChannelIndex (TV 7), a known TV we do not use.
            o.push(0x80 | 7);
            o.extend_from_slice(&5u16.to_be_bytes());
        });
        let Message::RoAccessReport(r) = one(&encode_message(1, msg::RO_ACCESS_REPORT, 5, &body))
        else {
            panic!()
        };
        assert_eq!(r.tags.len(), 1);
        assert_eq!(r.tags[0].antenna, 3);
        assert_eq!(r.tags[0].epc, vec![0x11; 12]);
    }

    #[test]
    fn a_tag_report_with_an_unknown_tv_type_is_skipped_but_its_neighbours_are_kept() {
        let mut body = Vec::new();
        tag_report_data(&mut body, &sample_tag(1));
        tlv(&mut body, param::TAG_REPORT_DATA, |o| {
            o.push(0x80 | 13);
            o.extend_from_slice(&[0x22; 12]);
            o.push(0x80 | 99); // no such TV type: its length is unknowable
            o.extend_from_slice(&[0; 4]);
        });
        tag_report_data(&mut body, &sample_tag(3));
        let Message::RoAccessReport(r) = one(&encode_message(1, msg::RO_ACCESS_REPORT, 5, &body))
        else {
            panic!()
        };
        assert_eq!(r.tags.len(), 2);
        assert_eq!(r.skipped, 1);
    }

    #[test]
    fn the_frame_reader_handles_every_split_point_and_several_messages_per_read() {
        let mut stream = Vec::new();
        stream.extend(keepalive(1));
        stream.extend(ro_access_report(2, &[sample_tag(1), sample_tag(2)]));
        stream.extend(status_response(msg::ADD_ROSPEC_RESPONSE, 3, 0, ""));
        for split in 0..=stream.len() {
            let mut r = FrameReader::default();
            let mut got = Vec::new();
            for part in [&stream[..split], &stream[split..]] {
                r.push(part);
                while let Some(f) = r.next_frame().unwrap() {
                    got.push(f.id);
                }
            }
            assert_eq!(got, vec![1, 2, 3], "split at {split}");
            assert_eq!(r.buffered(), 0);
        }
        // Byte by byte.
        let mut r = FrameReader::default();
        let mut got = Vec::new();
        for b in &stream {
            r.push(std::slice::from_ref(b));
            while let Some(f) = r.next_frame().unwrap() {
                got.push(f.id);
            }
        }
        assert_eq!(got, vec![1, 2, 3]);
    }

    #[test]
    fn an_oversized_or_undersized_length_is_refused_before_buffering() {
        let mut r = FrameReader::new(1024);
        r.push(&[0x04, 0x3D, 0x00, 0x10, 0x00, 0x00]);
        assert!(matches!(
            r.next_frame(),
            Err(LlrpError::MessageTooLarge {
                length: 0x100000,
                max: 1024
            })
        ));
        let mut r = FrameReader::default();
        r.push(&[0x04, 0x3D, 0, 0, 0, 9]);
        assert_eq!(
            r.next_frame(),
            Err(LlrpError::MessageTooShort { length: 9 })
        );
        let err = LlrpError::MessageTooLarge {
            length: 2_000_000,
            max: DEFAULT_MAX_MESSAGE,
        };
        assert!(err.to_string().contains("5084"));
    }

    #[test]
    fn an_error_status_carries_code_description_and_nested_errors() {
        let mut body = Vec::new();
        tlv(&mut body, param::LLRP_STATUS, |o| {
            o.extend_from_slice(&101u16.to_be_bytes());
            let d = b"bad antenna";
            o.extend_from_slice(&(d.len() as u16).to_be_bytes());
            o.extend_from_slice(d);
            tlv(o, param::PARAMETER_ERROR, |o| {
                o.extend_from_slice(&183u16.to_be_bytes());
                o.extend_from_slice(&101u16.to_be_bytes());
                tlv(o, param::FIELD_ERROR, |o| {
                    o.extend_from_slice(&1u16.to_be_bytes());
                    o.extend_from_slice(&301u16.to_be_bytes());
                });
            });
        });
        let Message::Response {
            msg_type, status, ..
        } = one(&encode_message(1, msg::ADD_ROSPEC_RESPONSE, 4, &body))
        else {
            panic!()
        };
        assert_eq!(msg_type, msg::ADD_ROSPEC_RESPONSE);
        assert!(!status.is_success());
        assert_eq!(status.description, "bad antenna");
        assert_eq!(status.parameter_error, Some((183, 101)));
        assert_eq!(status.field_error, Some((1, 301)));
        assert_eq!(
            status.to_string(),
            "M_FieldError (101): bad antenna [parameter type 183, error 101] [field 1, error 301]"
        );
    }

    #[test]
    fn a_capabilities_response_names_manufacturer_model_and_firmware() {
        let mut body = Vec::new();
        llrp_status(&mut body, 0, "");
        tlv(&mut body, param::GENERAL_DEVICE_CAPABILITIES, |o| {
            o.extend_from_slice(&4u16.to_be_bytes());
            o.extend_from_slice(&0xC000u16.to_be_bytes());
            o.extend_from_slice(&25882u32.to_be_bytes());
            o.extend_from_slice(&2001002u32.to_be_bytes());
            o.extend_from_slice(&5u16.to_be_bytes());
            o.extend_from_slice(b"7.1.0");
        });
        let Message::Response {
            capabilities,
            status,
            ..
        } = one(&encode_message(
            1,
            msg::GET_READER_CAPABILITIES_RESPONSE,
            1,
            &body,
        ))
        else {
            panic!()
        };
        assert!(status.is_success());
        assert_eq!(
            capabilities,
            Some(Capabilities {
                max_antennas: 4,
                manufacturer: 25882,
                model: 2001002,
                firmware: "7.1.0".into()
            })
        );
    }

    #[test]
    fn the_connection_attempt_event_is_found_among_other_events() {
        let Message::ReaderEventNotification(e) = one(&reader_event_connection_attempt(0, 2, 77))
        else {
            panic!()
        };
        assert_eq!(e.utc_us, Some(77));
        assert_eq!(e.connection_attempt, Some(ConnectionAttempt(2)));
        assert!(e.connection_attempt.is_some_and(|c| !c.is_success()));
    }

    #[test]
    fn malformed_bodies_are_errors_never_panics() {
        let good = ro_access_report(1, &[sample_tag(1)]);
        let status = status_response(msg::ADD_ROSPEC_RESPONSE, 1, 0, "fine");
        let event = reader_event_connection_attempt(0, 0, 1);
        for m in [good, status, event] {
            let f = &frames(&m)[0];
            for cut in 0..f.body.len() {
                let mut g = f.clone();
                g.body.truncate(cut);
                let _ = decode_message(&g);
                for i in 0..g.body.len() {
                    let mut h = g.clone();
                    h.body[i] ^= 0xFF;
                    let _ = decode_message(&h);
                }
            }
        }
        // A TLV length below its own header is an error, not an endless loop.
        let body = [0x00, 0xF0, 0x00, 0x02];
        assert!(
            decode_message(&Frame {
                version: 1,
                msg_type: msg::RO_ACCESS_REPORT,
                id: 0,
                body: body.to_vec(),
            })
            .is_err()
        );
    }
}
