//! MQTT 5.0 packets the agent sends and reads, encoded and decoded from the OASIS MQTT 5.0
//! specification (sections cited as §). Only the client side: CONNECT, PUBLISH (QoS 0/1),
//! PUBACK, SUBSCRIBE, PINGREQ and DISCONNECT out; CONNACK, PUBLISH, PUBACK, SUBACK, UNSUBACK,
//! PINGRESP, DISCONNECT and AUTH in.
//!
//! Everything read here comes from the network: lengths are checked before use, arithmetic is
//! checked, and a malformed packet is an error naming what was wrong, never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// What a peer sent that the specification does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error(
        "the broker sent a packet of {size} bytes, over the {max} bytes this agent accepts (Maximum Packet Size in CONNECT)"
    )]
    TooLarge { size: usize, max: usize },
}

type Result<T> = std::result::Result<T, CodecError>;

/// Packet type nibbles (§2.1.2).
pub mod kind {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
    pub const AUTH: u8 = 15;
}

/// Property identifiers (§2.2.2.2) the agent reads or writes.
pub mod prop {
    pub const PAYLOAD_FORMAT: u8 = 0x01;
    pub const MESSAGE_EXPIRY: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_ID: u8 = 0x0B;
    pub const SESSION_EXPIRY: u8 = 0x11;
    pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTH_METHOD: u8 = 0x15;
    pub const AUTH_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFO: u8 = 0x17;
    pub const WILL_DELAY: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFO: u8 = 0x19;
    pub const RESPONSE_INFO: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUB_AVAILABLE: u8 = 0x28;
    pub const SUB_ID_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUB_AVAILABLE: u8 = 0x2A;
}

/// One decoded property value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropValue {
    Byte(u8),
    U16(u16),
    U32(u32),
    VarInt(u32),
    Str(String),
    Bin(Bytes),
    Pair(String, String),
}

/// Properties in the order received (§2.2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties(pub Vec<(u8, PropValue)>);

impl Properties {
    fn get(&self, id: u8) -> Option<&PropValue> {
        self.0.iter().find(|(i, _)| *i == id).map(|(_, v)| v)
    }
    pub fn byte(&self, id: u8) -> Option<u8> {
        match self.get(id) {
            Some(PropValue::Byte(b)) => Some(*b),
            _ => None,
        }
    }
    pub fn u16(&self, id: u8) -> Option<u16> {
        match self.get(id) {
            Some(PropValue::U16(v)) => Some(*v),
            _ => None,
        }
    }
    pub fn u32(&self, id: u8) -> Option<u32> {
        match self.get(id) {
            Some(PropValue::U32(v)) => Some(*v),
            _ => None,
        }
    }
    pub fn string(&self, id: u8) -> Option<&str> {
        match self.get(id) {
            Some(PropValue::Str(s)) => Some(s),
            _ => None,
        }
    }
}

/// CONNECT (§3.1), as the agent sends it: Clean Start, session expiry 0.
#[derive(Debug, Clone)]
pub struct Connect {
    pub client_id: String,
    pub keep_alive: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub will: Option<Will>,
    /// Receive Maximum for the broker's QoS 1 publishes to us.
    pub receive_maximum: u16,
    /// The largest packet the agent accepts.
    pub maximum_packet_size: u32,
}

#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    pub reason: u8,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    pub topic: String,
    pub pkid: u16,
    pub topic_alias: Option<u16>,
    pub payload: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub pkid: u16,
    pub reason: u8,
    pub reason_string: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub pkid: u16,
    pub reasons: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub reason: u8,
    pub reason_string: Option<String>,
    pub server_reference: Option<String>,
}

/// A packet from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    SubAck(SubAck),
    UnsubAck(u16),
    PingResp,
    Disconnect(Disconnect),
    Auth(u8),
    /// PUBREC, PUBREL or PUBCOMP: QoS 2, which the agent never uses.
    Qos2(u8, u16),
}

// ---- encoding ----

/// Bytes a Variable Byte Integer takes (§1.5.5); None above its maximum.
pub fn varint_len(n: usize) -> Option<usize> {
    match n {
        0..=127 => Some(1),
        128..=16_383 => Some(2),
        16_384..=2_097_151 => Some(3),
        2_097_152..=268_435_455 => Some(4),
        _ => None,
    }
}

fn put_varint(buf: &mut BytesMut, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if n == 0 {
            return;
        }
    }
}

fn put_str(buf: &mut BytesMut, s: &str) {
    // Callers pass topics and ids far below 64 KiB; a longer one is cut rather than
    // wrapping the length prefix.
    let bytes = s.as_bytes();
    let len = bytes.len().min(u16::MAX as usize);
    buf.put_u16(len as u16);
    buf.put_slice(&bytes[..len]);
}

fn put_bin(buf: &mut BytesMut, b: &[u8]) {
    let len = b.len().min(u16::MAX as usize);
    buf.put_u16(len as u16);
    buf.put_slice(&b[..len]);
}

/// Fixed header + body; `None` when the body is larger than MQTT can carry.
fn frame(first: u8, body: &[u8]) -> Option<Bytes> {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(first);
    varint_len(body.len())?;
    put_varint(&mut out, body.len());
    out.put_slice(body);
    Some(out.freeze())
}

fn with_props(body: &mut BytesMut, props: &[u8]) {
    put_varint(body, props.len());
    body.put_slice(props);
}

pub fn encode_connect(c: &Connect) -> Option<Bytes> {
    let mut body = BytesMut::new();
    put_str(&mut body, "MQTT");
    body.put_u8(5);
    let mut flags = 0x02; // Clean Start
    if let Some(will) = &c.will {
        flags |= 0x04 | 0x08; // Will flag, Will QoS 1
        if will.retain {
            flags |= 0x20;
        }
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    body.put_u8(flags);
    body.put_u16(c.keep_alive);
    let mut props = BytesMut::new();
    props.put_u8(prop::RECEIVE_MAXIMUM);
    props.put_u16(c.receive_maximum.max(1));
    props.put_u8(prop::MAXIMUM_PACKET_SIZE);
    props.put_u32(c.maximum_packet_size);
    with_props(&mut body, &props);
    put_str(&mut body, &c.client_id);
    if let Some(will) = &c.will {
        body.put_u8(0); // no will properties
        put_str(&mut body, &will.topic);
        put_bin(&mut body, &will.payload);
    }
    if let Some(user) = &c.username {
        put_str(&mut body, user);
    }
    if let Some(password) = &c.password {
        put_bin(&mut body, password.as_bytes());
    }
    frame(kind::CONNECT << 4, &body)
}

/// The size of a QoS 1 PUBLISH packet with these parts, as the broker counts it against its
/// Maximum Packet Size (the whole packet, §3.2.2.3.6); None past MQTT's own limit.
pub fn publish_size(topic_len: usize, alias: bool, payload_len: usize) -> Option<usize> {
    let props = if alias { 3 } else { 0 };
    let body = 2usize
        .checked_add(topic_len)?
        .checked_add(2)?
        .checked_add(varint_len(props)?)?
        .checked_add(props)?
        .checked_add(payload_len)?;
    body.checked_add(1)?.checked_add(varint_len(body)?)
}

/// A PUBLISH; `topic` may be empty when `alias` names it (§3.3.2.3.4).
pub fn encode_publish(
    topic: &str,
    alias: Option<u16>,
    qos: u8,
    retain: bool,
    pkid: u16,
    payload: &[u8],
) -> Option<Bytes> {
    let mut body = BytesMut::with_capacity(payload.len() + topic.len() + 16);
    put_str(&mut body, topic);
    if qos > 0 {
        body.put_u16(pkid);
    }
    match alias {
        Some(a) => {
            let mut props = BytesMut::new();
            props.put_u8(prop::TOPIC_ALIAS);
            props.put_u16(a);
            with_props(&mut body, &props);
        }
        None => body.put_u8(0),
    }
    body.put_slice(payload);
    let first = (kind::PUBLISH << 4) | ((qos & 0x03) << 1) | u8::from(retain);
    frame(first, &body)
}

pub fn encode_puback(pkid: u16, reason: u8) -> Bytes {
    let mut body = BytesMut::new();
    body.put_u16(pkid);
    if reason != 0 {
        body.put_u8(reason);
    }
    frame(kind::PUBACK << 4, &body).unwrap_or_default()
}

pub fn encode_subscribe(pkid: u16, filters: &[(String, u8)]) -> Option<Bytes> {
    let mut body = BytesMut::new();
    body.put_u16(pkid);
    body.put_u8(0); // no properties
    for (filter, qos) in filters {
        put_str(&mut body, filter);
        body.put_u8(qos & 0x03);
    }
    frame((kind::SUBSCRIBE << 4) | 0x02, &body)
}

pub fn encode_pingreq() -> Bytes {
    Bytes::from_static(&[kind::PINGREQ << 4, 0])
}

/// DISCONNECT with a reason code; the two-byte short form for Normal disconnection.
pub fn encode_disconnect(reason: u8) -> Bytes {
    if reason == 0 {
        Bytes::from_static(&[kind::DISCONNECT << 4, 0])
    } else {
        Bytes::from(vec![kind::DISCONNECT << 4, 2, reason, 0])
    }
}

// ---- decoding ----

/// The fixed header's first byte and the remaining length, when `buf` holds all of it.
/// Ok(None): more bytes needed.
pub fn parse_header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len: usize = 0;
    let mut shift = 0u32;
    for i in 1..=4 {
        let Some(&byte) = buf.get(i) else {
            return Ok(None);
        };
        len |= usize::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return Ok(Some((first, len, i + 1)));
        }
        shift += 7;
    }
    Err(CodecError::Malformed(
        "remaining length longer than 4 bytes",
    ))
}

/// A cursor over one packet's body.
struct Reader {
    buf: Bytes,
}

impl Reader {
    fn need(&self, n: usize) -> Result<()> {
        if self.buf.remaining() < n {
            Err(CodecError::Malformed("packet shorter than its fields"))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> Result<u8> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }
    fn u16(&mut self) -> Result<u16> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }
    fn u32(&mut self) -> Result<u32> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }
    fn varint(&mut self) -> Result<u32> {
        let mut value: u32 = 0;
        for i in 0..4 {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::Malformed("variable byte integer over 4 bytes"))
    }
    fn bin(&mut self) -> Result<Bytes> {
        let len = usize::from(self.u16()?);
        self.need(len)?;
        Ok(self.buf.split_to(len))
    }
    fn string(&mut self) -> Result<String> {
        let raw = self.bin()?;
        String::from_utf8(raw.to_vec()).map_err(|_| CodecError::Malformed("string not UTF-8"))
    }
    fn properties(&mut self) -> Result<Properties> {
        let len = self.varint()? as usize;
        self.need(len)?;
        let mut r = Reader {
            buf: self.buf.split_to(len),
        };
        let mut props = Vec::new();
        while r.buf.has_remaining() {
            let id = r.u8()?;
            let value = match id {
                prop::PAYLOAD_FORMAT
                | prop::REQUEST_PROBLEM_INFO
                | prop::REQUEST_RESPONSE_INFO
                | prop::MAXIMUM_QOS
                | prop::RETAIN_AVAILABLE
                | prop::WILDCARD_SUB_AVAILABLE
                | prop::SUB_ID_AVAILABLE
                | prop::SHARED_SUB_AVAILABLE => PropValue::Byte(r.u8()?),
                prop::SERVER_KEEP_ALIVE
                | prop::RECEIVE_MAXIMUM
                | prop::TOPIC_ALIAS_MAXIMUM
                | prop::TOPIC_ALIAS => PropValue::U16(r.u16()?),
                prop::MESSAGE_EXPIRY
                | prop::SESSION_EXPIRY
                | prop::WILL_DELAY
                | prop::MAXIMUM_PACKET_SIZE => PropValue::U32(r.u32()?),
                prop::SUBSCRIPTION_ID => PropValue::VarInt(r.varint()?),
                prop::CONTENT_TYPE
                | prop::RESPONSE_TOPIC
                | prop::ASSIGNED_CLIENT_ID
                | prop::AUTH_METHOD
                | prop::RESPONSE_INFO
                | prop::SERVER_REFERENCE
                | prop::REASON_STRING => PropValue::Str(r.string()?),
                prop::CORRELATION_DATA | prop::AUTH_DATA => PropValue::Bin(r.bin()?),
                prop::USER_PROPERTY => PropValue::Pair(r.string()?, r.string()?),
                other => {
                    return Err(CodecError::Protocol(format!(
                        "unknown property identifier 0x{other:02X}"
                    )));
                }
            };
            // §2.2.2.2: only User Property and Subscription Identifier may repeat.
            if id != prop::USER_PROPERTY
                && id != prop::SUBSCRIPTION_ID
                && props.iter().any(|(i, _)| *i == id)
            {
                return Err(CodecError::Protocol(format!(
                    "property 0x{id:02X} appears twice"
                )));
            }
            props.push((id, value));
        }
        Ok(Properties(props))
    }
}

/// Decode one packet from the broker: `first` is the fixed header's first byte, `body` the
/// remaining `len` bytes.
pub fn decode(first: u8, body: Bytes) -> Result<Incoming> {
    let flags = first & 0x0F;
    let mut r = Reader { buf: body };
    match first >> 4 {
        kind::CONNACK => {
            let ack_flags = r.u8()?;
            if ack_flags & 0xFE != 0 {
                return Err(CodecError::Malformed("CONNACK flags reserved bits set"));
            }
            let reason = r.u8()?;
            // A CONNACK without properties is malformed in v5, but a refusal from a broker that
            // answers in v3.1.1 style carries none: read it as an empty set.
            let properties = if r.buf.has_remaining() {
                r.properties()?
            } else {
                Properties::default()
            };
            Ok(Incoming::ConnAck(ConnAck {
                session_present: ack_flags & 1 == 1,
                reason,
                properties,
            }))
        }
        kind::PUBLISH => {
            let qos = (flags >> 1) & 0x03;
            if qos == 3 {
                return Err(CodecError::Malformed("PUBLISH with QoS 3"));
            }
            let topic = r.string()?;
            let pkid = if qos > 0 { r.u16()? } else { 0 };
            if qos > 0 && pkid == 0 {
                return Err(CodecError::Malformed("PUBLISH with packet identifier 0"));
            }
            let props = r.properties()?;
            Ok(Incoming::Publish(Publish {
                qos,
                retain: flags & 1 == 1,
                dup: flags & 0x08 != 0,
                topic,
                pkid,
                topic_alias: props.u16(prop::TOPIC_ALIAS),
                payload: r.buf,
            }))
        }
        kind::PUBACK => {
            let pkid = r.u16()?;
            // §3.4.2.1: no reason code means 0x00; no property length means none.
            let reason = if r.buf.has_remaining() { r.u8()? } else { 0 };
            let props = if r.buf.has_remaining() {
                r.properties()?
            } else {
                Properties::default()
            };
            Ok(Incoming::PubAck(Ack {
                pkid,
                reason,
                reason_string: props.string(prop::REASON_STRING).map(str::to_owned),
            }))
        }
        kind::SUBACK => {
            let pkid = r.u16()?;
            r.properties()?;
            let reasons = r.buf.to_vec();
            if reasons.is_empty() {
                return Err(CodecError::Malformed("SUBACK without reason codes"));
            }
            Ok(Incoming::SubAck(SubAck { pkid, reasons }))
        }
        kind::UNSUBACK => Ok(Incoming::UnsubAck(r.u16()?)),
        kind::PINGRESP => Ok(Incoming::PingResp),
        kind::DISCONNECT => {
            // §3.14.2.1: remaining length 0 means Normal disconnection; 1 means a reason code
            // and no properties.
            let reason = if r.buf.has_remaining() { r.u8()? } else { 0 };
            let props = if r.buf.has_remaining() {
                r.properties()?
            } else {
                Properties::default()
            };
            Ok(Incoming::Disconnect(Disconnect {
                reason,
                reason_string: props.string(prop::REASON_STRING).map(str::to_owned),
                server_reference: props.string(prop::SERVER_REFERENCE).map(str::to_owned),
            }))
        }
        kind::AUTH => {
            let reason = if r.buf.has_remaining() { r.u8()? } else { 0 };
            Ok(Incoming::Auth(reason))
        }
        k @ (kind::PUBREC | kind::PUBREL | kind::PUBCOMP) => Ok(Incoming::Qos2(k, r.u16()?)),
        other => Err(CodecError::Protocol(format!(
            "packet type {other} is never sent by a server"
        ))),
    }
}

/// The name of a reason code (§2.4), for log lines an operator can search for.
pub fn reason_name(code: u8) -> &'static str {
    match code {
        0x00 => "Success",
        0x04 => "Disconnect with Will Message",
        0x10 => "No matching subscribers",
        0x80 => "Unspecified error",
        0x81 => "Malformed Packet",
        0x82 => "Protocol Error",
        0x83 => "Implementation specific error",
        0x84 => "Unsupported Protocol Version",
        0x85 => "Client Identifier not valid",
        0x86 => "Bad User Name or Password",
        0x87 => "Not authorized",
        0x88 => "Server unavailable",
        0x89 => "Server busy",
        0x8A => "Banned",
        0x8B => "Server shutting down",
        0x8C => "Bad authentication method",
        0x8D => "Keep Alive timeout",
        0x8E => "Session taken over",
        0x8F => "Topic Filter invalid",
        0x90 => "Topic Name invalid",
        0x91 => "Packet Identifier in use",
        0x93 => "Receive Maximum exceeded",
        0x94 => "Topic Alias invalid",
        0x95 => "Packet too large",
        0x96 => "Message rate too high",
        0x97 => "Quota exceeded",
        0x98 => "Administrative action",
        0x99 => "Payload format invalid",
        0x9A => "Retain not supported",
        0x9B => "QoS not supported",
        0x9C => "Use another server",
        0x9D => "Server moved",
        0x9E => "Shared Subscriptions not supported",
        0x9F => "Connection rate exceeded",
        0xA0 => "Maximum connect time",
        0xA1 => "Subscription Identifiers not supported",
        0xA2 => "Wildcard Subscriptions not supported",
        _ => "unknown reason code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(packet: &[u8]) -> Incoming {
        let (first, len, header) = parse_header(packet).unwrap().unwrap();
        assert_eq!(packet.len(), header + len);
        decode(first, Bytes::copy_from_slice(&packet[header..])).unwrap()
    }

    #[test]
    fn every_server_disconnect_form_decodes_with_its_reason() {
        assert_eq!(
            roundtrip(&[0xE0, 0x00]),
            Incoming::Disconnect(Disconnect {
                reason: 0,
                reason_string: None,
                server_reference: None
            })
        );
        let Incoming::Disconnect(d) = roundtrip(&[0xE0, 0x01, 0x89]) else {
            panic!("not a disconnect")
        };
        assert_eq!(d.reason, 0x89);
        let Incoming::Disconnect(d) = roundtrip(&[0xE0, 0x02, 0x8B, 0x00]) else {
            panic!("not a disconnect")
        };
        assert_eq!(d.reason, 0x8B);
        let mut long = vec![0xE0, 0, 0x9C];
        let props = [&[0x1F, 0, 3][..], b"bye", &[0x1C, 0, 6][..], b"b2:883"].concat();
        long.push(props.len() as u8);
        long.extend_from_slice(&props);
        long[1] = (long.len() - 2) as u8;
        let Incoming::Disconnect(d) = roundtrip(&long) else {
            panic!("not a disconnect")
        };
        assert_eq!(d.reason_string.as_deref(), Some("bye"));
        assert_eq!(d.server_reference.as_deref(), Some("b2:883"));
    }

    #[test]
    fn a_puback_with_any_reason_code_decodes_even_one_the_spec_does_not_list_for_puback() {
        assert_eq!(
            roundtrip(&[0x40, 0x02, 0x00, 0x07]),
            Incoming::PubAck(Ack {
                pkid: 7,
                reason: 0,
                reason_string: None
            })
        );
        let Incoming::PubAck(a) = roundtrip(&[0x40, 0x03, 0x00, 0x07, 0x95]) else {
            panic!("not a puback")
        };
        assert_eq!(a.reason, 0x95);
    }

    #[test]
    fn a_publish_is_exactly_as_large_as_its_predicted_size() {
        for (topic, alias, payload) in [
            ("a/b", None, 10usize),
            ("", Some(1), 200),
            ("x", None, 20_000),
        ] {
            let bytes = encode_publish(topic, alias, 1, false, 9, &vec![b'x'; payload]).unwrap();
            assert_eq!(
                Some(bytes.len()),
                publish_size(topic.len(), alias.is_some(), payload)
            );
            let Incoming::Publish(p) = roundtrip(&bytes) else {
                panic!("not a publish")
            };
            assert_eq!(
                (p.pkid, p.topic_alias, p.payload.len()),
                (9, alias, payload)
            );
        }
    }

    #[test]
    fn connack_properties_are_read_and_a_repeated_one_is_a_protocol_error() {
        let props = [
            0x27, 0, 2, 0, 0, // max packet 131072
            0x21, 0, 10, // receive max 10
            0x24, 0, // max qos 0
            0x25, 0, // retain not available
            0x13, 0, 0, // server keep alive 0
        ];
        let mut p = vec![0x20, 0, 0, 0, props.len() as u8];
        p.extend_from_slice(&props);
        p[1] = (p.len() - 2) as u8;
        let Incoming::ConnAck(c) = roundtrip(&p) else {
            panic!("not a connack")
        };
        assert_eq!(c.properties.u32(prop::MAXIMUM_PACKET_SIZE), Some(131_072));
        assert_eq!(c.properties.u16(prop::RECEIVE_MAXIMUM), Some(10));
        assert_eq!(c.properties.byte(prop::MAXIMUM_QOS), Some(0));
        assert_eq!(c.properties.u16(prop::SERVER_KEEP_ALIVE), Some(0));
        let twice = [0x20, 8, 0, 0, 5, 0x24, 0, 0x24, 1, 0];
        let (first, _, h) = parse_header(&twice).unwrap().unwrap();
        assert!(decode(first, Bytes::copy_from_slice(&twice[h..twice.len() - 1])).is_err());
    }

    #[test]
    fn truncated_and_oversized_headers_are_errors_not_panics() {
        assert_eq!(parse_header(&[0x30]).unwrap(), None);
        assert!(parse_header(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).is_err());
        for cut in 0..6 {
            let _ = decode(
                0x30,
                Bytes::copy_from_slice(&[0, 5, b'a', b'b'][..cut.min(4)]),
            );
            let _ = decode(
                0x20,
                Bytes::copy_from_slice(&[0, 0, 9, 0x27, 1][..cut.min(5)]),
            );
        }
    }
}
