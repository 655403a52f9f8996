//! The scripted broker's wire format: CONNACK, CONNECT and property parsing, from the MQTT 5.0
//! specification (§3.1, §3.2, §2.2.2), bounds-checked (a malformed packet is an error, never a
//! panic).

use super::{ConnectInfo, Script};
use std::time::Instant;

/// A malformed or unexpected packet from the client ends its connection.
#[derive(Debug)]
pub(super) struct Bad(pub(super) String);

pub(super) fn connack(reason: u8, a: &Script) -> Vec<u8> {
    let mut props = Vec::new();
    if let Some(v) = a.maximum_packet_size {
        props.push(0x27);
        props.extend_from_slice(&v.to_be_bytes());
    }
    if let Some(v) = a.receive_maximum {
        props.push(0x21);
        props.extend_from_slice(&v.to_be_bytes());
    }
    if let Some(v) = a.maximum_qos {
        props.extend_from_slice(&[0x24, v]);
    }
    if let Some(v) = a.retain_available {
        props.extend_from_slice(&[0x25, u8::from(v)]);
    }
    if let Some(v) = a.server_keep_alive {
        props.push(0x13);
        props.extend_from_slice(&v.to_be_bytes());
    }
    if let Some(v) = a.topic_alias_maximum {
        props.push(0x22);
        props.extend_from_slice(&v.to_be_bytes());
    }
    if let Some(id) = &a.assigned_client_id {
        props.push(0x12);
        props.extend_from_slice(&(id.len() as u16).to_be_bytes());
        props.extend_from_slice(id.as_bytes());
    }
    let mut body = vec![0x00, reason];
    push_varint(&mut body, props.len());
    body.extend_from_slice(&props);
    let mut packet = vec![0x20];
    push_varint(&mut packet, body.len());
    packet.extend_from_slice(&body);
    packet
}

fn push_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return;
        }
    }
}

pub(super) fn parse_connect(body: &[u8]) -> Result<ConnectInfo, Bad> {
    let mut r = Cursor::new(body);
    if r.string()? != "MQTT" {
        return Err(Bad("protocol name is not MQTT".into()));
    }
    if r.u8()? != 5 {
        return Err(Bad("protocol level is not 5".into()));
    }
    let flags = r.u8()?;
    let keep_alive = r.u16()?;
    r.properties()?;
    let client_id = r.string()?;
    let will_retain = if flags & 0x04 != 0 {
        r.properties()?;
        r.string()?;
        r.binary()?;
        Some(flags & 0x20 != 0)
    } else {
        None
    };
    let username = if flags & 0x80 != 0 {
        Some(r.string()?)
    } else {
        None
    };
    Ok(ConnectInfo {
        at: Instant::now(),
        client_id,
        keep_alive,
        clean_start: flags & 0x02 != 0,
        will_retain,
        username,
    })
}

pub(super) struct Props {
    pub(super) alias: Option<u16>,
}

pub(super) struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf }
    }
    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        if self.buf.len() < n {
            return Err(Bad("packet shorter than its fields".into()));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub(super) fn u8(&mut self) -> Result<u8, Bad> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn u16(&mut self) -> Result<u16, Bad> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub(super) fn varint(&mut self) -> Result<usize, Bad> {
        let mut n = 0usize;
        for i in 0..4 {
            let b = self.u8()?;
            n |= usize::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(Bad("variable byte integer over 4 bytes".into()))
    }
    pub(super) fn binary(&mut self) -> Result<&'a [u8], Bad> {
        let len = usize::from(self.u16()?);
        self.take(len)
    }
    pub(super) fn string(&mut self) -> Result<String, Bad> {
        String::from_utf8(self.binary()?.to_vec()).map_err(|_| Bad("string not UTF-8".into()))
    }
    pub(super) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
    /// §2.2.2: a property length, then identifier/value pairs.
    pub(super) fn properties(&mut self) -> Result<Props, Bad> {
        let len = self.varint()?;
        let mut p = Cursor::new(self.take(len)?);
        let mut props = Props { alias: None };
        while !p.is_empty() {
            match p.u8()? {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => {
                    p.u8()?;
                }
                0x23 => props.alias = Some(p.u16()?),
                0x13 | 0x21 | 0x22 => {
                    p.u16()?;
                }
                0x02 | 0x11 | 0x18 | 0x27 => {
                    p.take(4)?;
                }
                0x0B => {
                    p.varint()?;
                }
                0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => {
                    p.string()?;
                }
                0x09 | 0x16 => {
                    p.binary()?;
                }
                0x26 => {
                    p.string()?;
                    p.string()?;
                }
                other => return Err(Bad(format!("unknown property 0x{other:02X}"))),
            }
        }
        Ok(props)
    }
}
