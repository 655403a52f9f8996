//! EPC binary decoding (GS1 EPC Tag Data Standard, TDS 1.13 / 2.x "legacy" schemes): the hex
//! an RFID reader returns for the EPC bank → tag URI, pure identity URI and, for GS1 keys, the
//! GS1 element string.
//!
//! Written by hand from TDS sections 14 (binary encodings, partition tables) and 15 (string
//! encodings). Layout of every scheme here: 8-bit header, then filter, partition, company
//! prefix and reference fields whose widths the partition value selects, then a serial.

use serde::Serialize;

use crate::decode::gs1::{self, Element};
use crate::decode::gtin::{Gtin14, check_digit};

/// Longest EPC bank worth decoding: 512 bits. Anything longer is not an EPC from a reader.
pub const MAX_EPC_HEX: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpcError {
    #[error("no EPC data: read the tag again")]
    Empty,
    #[error("{0} hex digits is longer than any EPC")]
    TooLong(usize),
    #[error("character {found:?} at position {position} is not a hex digit")]
    NotHex { position: usize, found: char },
    #[error(
        "header {0:#04X} is not an EPC scheme this decoder knows (the tag may be blank, user-programmed or use a newer scheme)"
    )]
    UnknownHeader(u8),
    #[error(
        "header {header:#04X} was {scheme}, withdrawn from the Tag Data Standard; re-encode the tag"
    )]
    WithdrawnHeader { header: u8, scheme: &'static str },
    #[error("{scheme} needs {needed} bits but the tag gave {given}: the read was cut short")]
    TooShort {
        scheme: &'static str,
        needed: usize,
        given: usize,
    },
    #[error(
        "{scheme} is {bits} bits but the tag gave {given} hex digits: not the EPC of this scheme"
    )]
    WrongLength {
        scheme: &'static str,
        bits: usize,
        given: usize,
    },
    #[error(
        "{scheme} partition value {partition} is not defined (only 0-6 are): the tag is corrupt"
    )]
    InvalidPartition { scheme: &'static str, partition: u8 },
    #[error("{scheme} {field} {value} does not fit in {digits} digits: the tag is corrupt")]
    FieldOverflow {
        scheme: &'static str,
        field: &'static str,
        value: u64,
        digits: usize,
    },
    #[error("{scheme} {field} contains byte {byte:#04X}, not a character allowed in EPC strings")]
    BadCharacter {
        scheme: &'static str,
        field: &'static str,
        byte: u8,
    },
    #[error("{scheme} {field} is not terminated: the tag is corrupt or truncated")]
    Unterminated {
        scheme: &'static str,
        field: &'static str,
    },
    #[error("{scheme} {field} is invalid: {why}")]
    Invalid {
        scheme: &'static str,
        field: &'static str,
        why: &'static str,
    },
}

impl EpcError {
    /// A stable machine-readable kind for logs and batch output.
    pub fn kind(&self) -> &'static str {
        match self {
            EpcError::Empty => "empty",
            EpcError::TooLong(_) | EpcError::TooShort { .. } | EpcError::WrongLength { .. } => {
                "bad_length"
            }
            EpcError::NotHex { .. } => "not_hex",
            EpcError::UnknownHeader(_) | EpcError::WithdrawnHeader { .. } => {
                "unknown_or_unsupported_header"
            }
            EpcError::InvalidPartition { .. } => "invalid_partition",
            EpcError::FieldOverflow { .. } => "field_overflow",
            EpcError::BadCharacter { .. }
            | EpcError::Unterminated { .. }
            | EpcError::Invalid { .. } => "invalid_field",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EpcDecode {
    /// Binary scheme as written in tag URIs, e.g. `sgtin-96`.
    pub scheme: &'static str,
    /// Header byte as two hex digits.
    pub header: String,
    pub filter: Option<u8>,
    pub partition: Option<u8>,
    pub company_prefix: Option<String>,
    pub tag_uri: String,
    pub pure_identity_uri: String,
    /// Bracketed GS1 element string for schemes built on a GS1 key.
    pub gs1_element_string: Option<String>,
    pub elements: Vec<Element>,
    pub gtin: Option<Gtin14>,
}

/// Big-endian bit cursor over the decoded hex.
struct Bits {
    bytes: Vec<u8>,
    len: usize,
    pos: usize,
}

impl Bits {
    fn remaining(&self) -> usize {
        self.len.saturating_sub(self.pos)
    }

    /// Read up to 64 bits. Callers check lengths first; running past the end reads zeros
    /// rather than panicking, and `Decoder::need` turns a short tag into an error before that.
    fn take(&mut self, n: usize) -> u64 {
        let mut v = 0u64;
        for _ in 0..n.min(64) {
            let byte = self.bytes.get(self.pos / 8).copied().unwrap_or(0);
            let bit = (byte >> (7 - (self.pos % 8))) & 1;
            v = (v << 1) | u64::from(bit);
            self.pos += 1;
        }
        v
    }
}

fn parse_hex(hex: &str) -> Result<Bits, EpcError> {
    let cleaned: String = hex
        .trim()
        .trim_start_matches("0x")
        .trim_start_matches("0X")
        .chars()
        .filter(|c| !matches!(c, ' ' | ':' | '-'))
        .collect();
    if cleaned.is_empty() {
        return Err(EpcError::Empty);
    }
    if cleaned.len() > MAX_EPC_HEX {
        return Err(EpcError::TooLong(cleaned.len()));
    }
    if let Some((position, found)) = cleaned
        .chars()
        .enumerate()
        .find(|(_, c)| !c.is_ascii_hexdigit())
    {
        return Err(EpcError::NotHex { position, found });
    }
    let nibbles: Vec<u8> = cleaned
        .bytes()
        .map(|b| (b as char).to_digit(16).unwrap_or(0) as u8)
        .collect();
    let bytes = nibbles
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => (hi << 4) | lo,
            [hi] => hi << 4,
            _ => 0,
        })
        .collect();
    Ok(Bits {
        bytes,
        len: nibbles.len() * 4,
        pos: 0,
    })
}

/// Partition table row: company prefix bits and digits, then the second field's bits and
/// digits (item reference, serial reference, location reference, …).
type Row = (usize, usize, usize, usize);

/// SGTIN, ITIP (company prefix + indicator/item reference = 44 bits, 13 digits).
const P_SGTIN: [Row; 7] = [
    (40, 12, 4, 1),
    (37, 11, 7, 2),
    (34, 10, 10, 3),
    (30, 9, 14, 4),
    (27, 8, 17, 5),
    (24, 7, 20, 6),
    (20, 6, 24, 7),
];
/// SSCC, GSRN, GSRNP (58 bits, 17 digits).
const P_SSCC: [Row; 7] = [
    (40, 12, 18, 5),
    (37, 11, 21, 6),
    (34, 10, 24, 7),
    (30, 9, 28, 8),
    (27, 8, 31, 9),
    (24, 7, 34, 10),
    (20, 6, 38, 11),
];
/// SGLN, GDTI, SGCN (41 bits, 12 digits).
const P_SGLN: [Row; 7] = [
    (40, 12, 1, 0),
    (37, 11, 4, 1),
    (34, 10, 7, 2),
    (30, 9, 11, 3),
    (27, 8, 14, 4),
    (24, 7, 17, 5),
    (20, 6, 21, 6),
];
/// GRAI (44 bits, 12 digits).
const P_GRAI: [Row; 7] = [
    (40, 12, 4, 0),
    (37, 11, 7, 1),
    (34, 10, 10, 2),
    (30, 9, 14, 3),
    (27, 8, 17, 4),
    (24, 7, 20, 5),
    (20, 6, 24, 6),
];
/// GIAI-96: numeric asset reference.
const P_GIAI96: [Row; 7] = [
    (40, 12, 42, 13),
    (37, 11, 45, 14),
    (34, 10, 48, 15),
    (30, 9, 52, 16),
    (27, 8, 55, 17),
    (24, 7, 58, 18),
    (20, 6, 62, 19),
];
/// GIAI-202: 7-bit string asset reference; "digits" is the maximum character count.
const P_GIAI202: [Row; 7] = [
    (40, 12, 148, 18),
    (37, 11, 151, 19),
    (34, 10, 154, 20),
    (30, 9, 158, 21),
    (27, 8, 161, 22),
    (24, 7, 164, 23),
    (20, 6, 168, 24),
];
/// CPI-96 numeric part reference.
const P_CPI96: [Row; 7] = [
    (40, 12, 11, 3),
    (37, 11, 14, 4),
    (34, 10, 17, 5),
    (30, 9, 21, 6),
    (27, 8, 24, 7),
    (24, 7, 27, 8),
    (20, 6, 31, 9),
];
/// CPI-var: 6-bit string part reference; the second pair is the maximum bits and characters.
const P_CPIVAR: [Row; 7] = [
    (40, 12, 114, 18),
    (37, 11, 120, 19),
    (34, 10, 126, 20),
    (30, 9, 132, 21),
    (27, 8, 138, 22),
    (24, 7, 144, 23),
    (20, 6, 150, 24),
];

/// Characters that TDS requires percent-encoded in URIs (table A-1 escapes).
fn uri_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("%22"),
            '#' => out.push_str("%23"),
            '%' => out.push_str("%25"),
            '&' => out.push_str("%26"),
            '/' => out.push_str("%2F"),
            '<' => out.push_str("%3C"),
            '>' => out.push_str("%3E"),
            '?' => out.push_str("%3F"),
            _ => out.push(c),
        }
    }
    out
}

struct Decoder {
    bits: Bits,
    scheme: &'static str,
}

impl Decoder {
    fn need(&self, n: usize) -> Result<(), EpcError> {
        if self.bits.remaining() < n {
            return Err(EpcError::TooShort {
                scheme: self.scheme,
                needed: self.bits.pos + n,
                given: self.bits.len,
            });
        }
        Ok(())
    }

    fn int(&mut self, n: usize) -> Result<u64, EpcError> {
        self.need(n)?;
        Ok(self.bits.take(n))
    }

    fn digits(
        &mut self,
        field: &'static str,
        bits: usize,
        digits: usize,
    ) -> Result<String, EpcError> {
        let value = self.int(bits)?;
        if digits == 0 {
            return if value == 0 {
                Ok(String::new())
            } else {
                Err(EpcError::FieldOverflow {
                    scheme: self.scheme,
                    field,
                    value,
                    digits,
                })
            };
        }
        if digits < 20 && value >= 10u64.pow(digits as u32) {
            return Err(EpcError::FieldOverflow {
                scheme: self.scheme,
                field,
                value,
                digits,
            });
        }
        Ok(format!("{value:0digits$}"))
    }

    fn partition(&mut self, table: &[Row; 7]) -> Result<(u8, Row), EpcError> {
        let p = self.int(3)? as u8;
        let row = table
            .get(usize::from(p))
            .copied()
            .ok_or(EpcError::InvalidPartition {
                scheme: self.scheme,
                partition: p,
            })?;
        Ok((p, row))
    }

    /// 7-bit ISO 646 string in a fixed-width field, ended early by a zero character.
    fn string7(&mut self, field: &'static str, bits: usize) -> Result<String, EpcError> {
        self.need(bits)?;
        let mut out = String::new();
        let mut ended = false;
        for _ in 0..bits / 7 {
            let c = self.bits.take(7) as u8;
            if c == 0 {
                ended = true;
            } else if ended {
                return Err(EpcError::Invalid {
                    scheme: self.scheme,
                    field,
                    why: "data after the terminating zero",
                });
            } else if allowed_gs1_char(c) {
                out.push(char::from(c));
            } else {
                return Err(EpcError::BadCharacter {
                    scheme: self.scheme,
                    field,
                    byte: c,
                });
            }
        }
        self.bits.take(bits % 7);
        Ok(out)
    }

    /// 6-bit string ended by a zero character (CPI-var, ADI-var): 1-31 map to '@'+n, 32-63 to
    /// the same ASCII code.
    fn string6(&mut self, field: &'static str, max_chars: usize) -> Result<String, EpcError> {
        let mut out = String::new();
        loop {
            if self.bits.remaining() < 6 {
                return Err(EpcError::Unterminated {
                    scheme: self.scheme,
                    field,
                });
            }
            let v = self.bits.take(6) as u8;
            if v == 0 {
                return Ok(out);
            }
            if out.len() >= max_chars {
                return Err(EpcError::Unterminated {
                    scheme: self.scheme,
                    field,
                });
            }
            out.push(char::from(if v < 32 { v + 64 } else { v }));
        }
    }

    /// Numeric string: the digits with a '1' in front, stored as an integer, so leading
    /// zeros survive (SGCN serial).
    fn numeric_string(&mut self, field: &'static str, bits: usize) -> Result<String, EpcError> {
        let value = self.int(bits)?.to_string();
        value
            .strip_prefix('1')
            .map(str::to_string)
            .ok_or(EpcError::Invalid {
                scheme: self.scheme,
                field,
                why: "numeric string lacks its leading 1",
            })
    }
}

/// GS1 AI encodable character set 82, which is what the 7-bit EPC strings may hold.
fn allowed_gs1_char(c: u8) -> bool {
    crate::decode::lint::CSET82.as_bytes().contains(&c)
}

fn gs1_check(body: &str) -> char {
    char::from(check_digit(body.as_bytes()) + b'0')
}

fn bracketed(elements: &[Element]) -> Option<String> {
    (!elements.is_empty()).then(|| gs1::to_bracketed(elements))
}

fn el(ai: &str, value: String) -> Element {
    Element {
        ai: ai.to_string(),
        value,
    }
}

/// Decode an EPC bank read as hex (spaces, colons and a `0x` prefix are tolerated).
pub fn decode_epc_hex(hex: &str) -> Result<EpcDecode, EpcError> {
    let bits = parse_hex(hex)?;
    let hex_digits = bits.len / 4;
    let mut d = Decoder {
        bits,
        scheme: "epc",
    };
    let header = d.int(8)? as u8;
    let (scheme, size): (&'static str, Option<usize>) = match header {
        0x2C => ("gdti-96", Some(96)),
        0x2D => ("gsrn-96", Some(96)),
        0x2E => ("gsrnp-96", Some(96)),
        0x2F => ("usdod-96", Some(96)),
        0x30 => ("sgtin-96", Some(96)),
        0x31 => ("sscc-96", Some(96)),
        0x32 => ("sgln-96", Some(96)),
        0x33 => ("grai-96", Some(96)),
        0x34 => ("giai-96", Some(96)),
        0x35 => ("gid-96", Some(96)),
        0x36 => ("sgtin-198", Some(198)),
        0x37 => ("grai-170", Some(170)),
        0x38 => ("giai-202", Some(202)),
        0x39 => ("sgln-195", Some(195)),
        0x3A => {
            return Err(EpcError::WithdrawnHeader {
                header,
                scheme: "gdti-113",
            });
        }
        0x3B => ("adi-var", None),
        0x3C => ("cpi-96", Some(96)),
        0x3D => ("cpi-var", None),
        0x3E => ("gdti-174", Some(174)),
        0x3F => ("sgcn-96", Some(96)),
        0x40 => ("itip-110", Some(110)),
        0x41 => ("itip-212", Some(212)),
        _ => return Err(EpcError::UnknownHeader(header)),
    };
    d.scheme = scheme;
    if let Some(bits) = size {
        // Readers return whole 16-bit words, so up to one word of padding follows the EPC.
        let min = bits.div_ceil(4);
        let max = bits.div_ceil(16) * 4;
        if hex_digits < min {
            return Err(EpcError::TooShort {
                scheme,
                needed: bits,
                given: hex_digits * 4,
            });
        }
        if hex_digits > max {
            return Err(EpcError::WrongLength {
                scheme,
                bits,
                given: hex_digits,
            });
        }
    }
    let family = scheme.split('-').next().unwrap_or(scheme);
    let mut out = EpcDecode {
        scheme,
        header: format!("{header:02X}"),
        filter: None,
        partition: None,
        company_prefix: None,
        tag_uri: String::new(),
        pure_identity_uri: String::new(),
        gs1_element_string: None,
        elements: Vec::new(),
        gtin: None,
    };
    // `fields` are the pure-identity fields after the scheme name, already URI-escaped.
    let fields: Vec<String>;
    match family {
        "sgtin" | "itip" => {
            let filter = d.int(3)? as u8;
            let (p, (cb, cd, rb, rd)) = d.partition(&P_SGTIN)?;
            let cp = d.digits("company prefix", cb, cd)?;
            let item = d.digits("item reference", rb, rd)?;
            let (indicator, item_rest) = item.split_at(1.min(item.len()));
            let body = format!("{indicator}{cp}{item_rest}");
            let gtin = format!("{body}{}", gs1_check(&body));
            out.gtin = Gtin14::parse(&gtin).ok();
            let (piece_total, serial) = if family == "itip" {
                let piece = d.digits("piece", 7, 2)?;
                let total = d.digits("total", 7, 2)?;
                let serial = if scheme == "itip-110" {
                    d.int(38)?.to_string()
                } else {
                    d.string7("serial", 140)?
                };
                (Some((piece, total)), serial)
            } else if scheme == "sgtin-96" {
                (None, d.int(38)?.to_string())
            } else {
                (None, d.string7("serial", 140)?)
            };
            out.filter = Some(filter);
            out.partition = Some(p);
            out.company_prefix = Some(cp.clone());
            match piece_total {
                Some((piece, total)) => {
                    out.elements = vec![
                        el("8006", format!("{gtin}{piece}{total}")),
                        el("21", serial.clone()),
                    ];
                    fields = vec![cp, item, piece, total, uri_escape(&serial)];
                }
                None => {
                    out.elements = vec![el("01", gtin), el("21", serial.clone())];
                    fields = vec![cp, item, uri_escape(&serial)];
                }
            }
        }
        "sscc" | "gsrn" | "gsrnp" => {
            let filter = d.int(3)? as u8;
            let (p, (cb, cd, rb, rd)) = d.partition(&P_SSCC)?;
            let cp = d.digits("company prefix", cb, cd)?;
            let reference = d.digits(
                if family == "sscc" {
                    "serial reference"
                } else {
                    "service reference"
                },
                rb,
                rd,
            )?;
            d.int(24)?; // reserved
            let key = if family == "sscc" {
                let (ext, rest) = reference.split_at(1.min(reference.len()));
                let body = format!("{ext}{cp}{rest}");
                el("00", format!("{body}{}", gs1_check(&body)))
            } else {
                let body = format!("{cp}{reference}");
                el(
                    if family == "gsrn" { "8018" } else { "8017" },
                    format!("{body}{}", gs1_check(&body)),
                )
            };
            out.filter = Some(filter);
            out.partition = Some(p);
            out.company_prefix = Some(cp.clone());
            out.elements = vec![key];
            fields = vec![cp, reference];
        }
        "sgln" | "gdti" | "sgcn" => {
            let filter = d.int(3)? as u8;
            let (p, (cb, cd, rb, rd)) = d.partition(&P_SGLN)?;
            let cp = d.digits("company prefix", cb, cd)?;
            let reference = d.digits("reference", rb, rd)?;
            let body = format!("{cp}{reference}");
            let key13 = format!("{body}{}", gs1_check(&body));
            let serial = match scheme {
                "sgln-96" | "gdti-96" => d.int(41)?.to_string(),
                "sgln-195" => d.string7("extension", 140)?,
                "gdti-174" => d.string7("serial", 119)?,
                _ => d.numeric_string("serial", 41)?,
            };
            out.elements = match family {
                "sgln" if serial == "0" => vec![el("414", key13)],
                "sgln" => vec![el("414", key13), el("254", serial.clone())],
                "gdti" => vec![el("253", format!("{key13}{serial}"))],
                _ => vec![el("255", format!("{key13}{serial}"))],
            };
            out.filter = Some(filter);
            out.partition = Some(p);
            out.company_prefix = Some(cp.clone());
            fields = vec![cp, reference, uri_escape(&serial)];
        }
        "grai" => {
            let filter = d.int(3)? as u8;
            let (p, (cb, cd, rb, rd)) = d.partition(&P_GRAI)?;
            let cp = d.digits("company prefix", cb, cd)?;
            let asset_type = d.digits("asset type", rb, rd)?;
            let serial = if scheme == "grai-96" {
                d.int(38)?.to_string()
            } else {
                d.string7("serial", 112)?
            };
            let body = format!("{cp}{asset_type}");
            out.elements = vec![el("8003", format!("0{body}{}{serial}", gs1_check(&body)))];
            out.filter = Some(filter);
            out.partition = Some(p);
            out.company_prefix = Some(cp.clone());
            fields = vec![cp, asset_type, uri_escape(&serial)];
        }
        "giai" => {
            let filter = d.int(3)? as u8;
            let numeric = scheme == "giai-96";
            let (p, (cb, cd, rb, rd)) =
                d.partition(if numeric { &P_GIAI96 } else { &P_GIAI202 })?;
            let cp = d.digits("company prefix", cb, cd)?;
            let asset = if numeric {
                let v = d.int(rb)?;
                let s = v.to_string();
                if s.len() > rd {
                    return Err(EpcError::FieldOverflow {
                        scheme,
                        field: "asset reference",
                        value: v,
                        digits: rd,
                    });
                }
                s
            } else {
                d.string7("asset reference", rb)?
            };
            out.elements = vec![el("8004", format!("{cp}{asset}"))];
            out.filter = Some(filter);
            out.partition = Some(p);
            out.company_prefix = Some(cp.clone());
            fields = vec![cp, uri_escape(&asset)];
        }
        "cpi" => {
            let filter = d.int(3)? as u8;
            let (p, cp, part, serial) = if scheme == "cpi-96" {
                let (p, (cb, cd, rb, rd)) = d.partition(&P_CPI96)?;
                let cp = d.digits("company prefix", cb, cd)?;
                let part = d
                    .digits("part reference", rb, rd)?
                    .trim_start_matches('0')
                    .to_string();
                let part = if part.is_empty() {
                    "0".to_string()
                } else {
                    part
                };
                (p, cp, part, d.int(31)?.to_string())
            } else {
                let (p, (cb, cd, _, max_chars)) = d.partition(&P_CPIVAR)?;
                let cp = d.digits("company prefix", cb, cd)?;
                let part = d.string6("part reference", max_chars)?;
                (p, cp, part, d.int(40)?.to_string())
            };
            out.elements = vec![
                el("8010", format!("{cp}{part}")),
                el("8011", serial.clone()),
            ];
            out.filter = Some(filter);
            out.partition = Some(p);
            out.company_prefix = Some(cp.clone());
            fields = vec![cp, uri_escape(&part), serial];
        }
        "gid" => {
            let manager = d.int(28)?;
            let class = d.int(24)?;
            let serial = d.int(36)?;
            fields = vec![manager.to_string(), class.to_string(), serial.to_string()];
        }
        "usdod" => {
            let filter = d.int(4)? as u8;
            let mut cage = String::new();
            for _ in 0..6 {
                let c = d.int(8)? as u8;
                if !(c == b' ' || c.is_ascii_uppercase() || c.is_ascii_digit()) {
                    return Err(EpcError::BadCharacter {
                        scheme,
                        field: "CAGE/DoDAAC",
                        byte: c,
                    });
                }
                cage.push(char::from(c));
            }
            let serial = d.int(36)?;
            out.filter = Some(filter);
            fields = vec![cage.trim_start().to_string(), serial.to_string()];
        }
        _ => {
            // adi-var: 6-bit filter, 36-bit CAGE/DoDAAC, part number and serial as 6-bit strings.
            let filter = d.int(6)? as u8;
            let mut cage = String::new();
            for _ in 0..6 {
                let v = d.int(6)? as u8;
                if v != 0 {
                    cage.push(char::from(if v < 32 { v + 64 } else { v }));
                }
            }
            let part = d.string6("part number", 32)?;
            let serial = d.string6("serial", 30)?;
            out.filter = Some(filter);
            // A five-character CAGE code is stored with a leading space.
            fields = vec![
                cage.trim_start().to_string(),
                uri_escape(&part),
                uri_escape(&serial),
            ];
        }
    }
    let id = fields.join(".");
    out.pure_identity_uri = format!(
        "urn:epc:id:{}:{id}",
        if family == "cpi" { "cpi" } else { family }
    );
    out.tag_uri = match out.filter {
        Some(f) => format!("urn:epc:tag:{scheme}:{f}.{id}"),
        None => format!("urn:epc:tag:{scheme}:{id}"),
    };
    out.gs1_element_string = bracketed(&out.elements);
    Ok(out)
}

// The hex values below are the worked examples of TDS 1.13 Appendix E (and values derived from
// them by changing single fields), not taken from any test-vector file.
#[cfg(test)]
mod tests {
    use super::*;

    fn uris(hex: &str) -> Result<(String, String, Option<String>), EpcError> {
        decode_epc_hex(hex).map(|d| (d.tag_uri, d.pure_identity_uri, d.gs1_element_string))
    }

    fn ok(
        tag: &str,
        pure: &str,
        gs1: Option<&str>,
    ) -> Result<(String, String, Option<String>), EpcError> {
        Ok((tag.to_string(), pure.to_string(), gs1.map(str::to_string)))
    }

    #[test]
    fn an_sgtin_96_decodes_to_both_uris_and_the_gtin_with_serial() {
        assert_eq!(
            uris("3074257BF7194E4000001A85"),
            ok(
                "urn:epc:tag:sgtin-96:3.0614141.812345.6789",
                "urn:epc:id:sgtin:0614141.812345.6789",
                Some("(01)80614141123458(21)6789")
            )
        );
    }

    #[test]
    fn an_sgtin_198_is_accepted_with_or_without_word_padding() {
        let expected = ok(
            "urn:epc:tag:sgtin-198:3.0614141.712345.32a%2Fb",
            "urn:epc:id:sgtin:0614141.712345.32a%2Fb",
            Some("(01)70614141123451(21)32a/b"),
        );
        assert_eq!(
            uris("3674257BF6B7A659B2C2BF100000000000000000000000000000"),
            expected
        );
        assert_eq!(
            uris("3674257BF6B7A659B2C2BF1000000000000000000000000000"),
            expected
        );
    }

    #[test]
    fn an_sscc_96_carries_its_extension_digit_into_the_sscc() {
        assert_eq!(
            uris("3174257BF4499602D2000000"),
            ok(
                "urn:epc:tag:sscc-96:3.0614141.1234567890",
                "urn:epc:id:sscc:0614141.1234567890",
                Some("(00)106141412345678908")
            )
        );
    }

    #[test]
    fn sgln_grai_and_giai_decode_to_their_gs1_keys() {
        assert_eq!(
            uris("3274257BF46072000000162E").map(|u| u.2),
            Ok(Some("(414)0614141123452(254)5678".into()))
        );
        assert_eq!(
            uris("3374257BF40C0E400000162E").map(|u| u.2),
            Ok(Some("(8003)006141411234525678".into()))
        );
        assert_eq!(
            uris("3474257BF40000000000162E").map(|u| u.2),
            Ok(Some("(8004)06141415678".into()))
        );
        assert_eq!(
            uris("3874257BF59B2C2BF10000000000000000000000000000000000").map(|u| u.1),
            Ok("urn:epc:id:giai:0614141.32a%2Fb".into())
        );
    }

    #[test]
    fn a_gid_96_has_no_filter_and_no_gs1_key() {
        assert_eq!(
            uris("350007AB70425D4000000586"),
            ok(
                "urn:epc:tag:gid-96:31415.271828.1414",
                "urn:epc:id:gid:31415.271828.1414",
                None
            )
        );
    }

    #[test]
    fn dod_and_adi_schemes_decode_their_cage_codes() {
        assert_eq!(
            uris("2F320434147455900000162E").map(|u| u.0),
            Ok("urn:epc:tag:usdod-96:3.CAGEY.5678".into())
        );
        assert_eq!(
            uris("3B0E0CF5E76C9047759AD00373DC7602E7200").map(|u| u.0),
            Ok("urn:epc:tag:adi-var:3.35962.PQ7VZ4.M37GXB92".into())
        );
    }

    #[test]
    fn cpi_sgcn_and_itip_decode() {
        assert_eq!(
            uris("3D74257BF75411DEF6B4CC00000003039").map(|u| u.0),
            Ok("urn:epc:tag:cpi-var:3.0614141.5PQ7%2FZ43.12345".into())
        );
        assert_eq!(
            uris("3F74F4E4E612640000019907").map(|u| u.2),
            Ok(Some("(255)401234567890104711".into()))
        );
        assert_eq!(
            uris("4014F4E4E40C0E40820000000F54").map(|u| u.2),
            Ok(Some("(8006)040123451234560102(21)981".into()))
        );
    }

    #[test]
    fn service_document_and_string_serial_schemes_decode() {
        let gs1 = |hex: &str| uris(hex).map(|u| u.2);
        assert_eq!(
            gs1("2D74257BF4499602D2000000"),
            Ok(Some("(8018)061414112345678902".into()))
        );
        assert_eq!(
            gs1("2E74257BF4499602D2000000"),
            Ok(Some("(8017)061414112345678902".into()))
        );
        assert_eq!(
            gs1("2C74257BF46072000000162E"),
            Ok(Some("(253)06141411234525678".into()))
        );
        assert_eq!(
            gs1("3974257BF46072CD9615F8800000000000000000000000000"),
            Ok(Some("(414)0614141123452(254)32a/b".into()))
        );
        assert_eq!(
            gs1("3774257BF40C0E59B2C2BF100000000000000000000"),
            Ok(Some("(8003)0061414112345232a/b".into()))
        );
        assert_eq!(
            uris("3E74F4E4E7039B061438997367D0C18B266D1AB66EE0").map(|u| u.0),
            Ok("urn:epc:tag:gdti-174:3.4012345.98765.ABCDefgh012345678".into())
        );
        assert_eq!(
            uris("3C74257BF400C0E680003039").map(|u| u.2),
            Ok(Some("(8010)061414198765(8011)12345".into()))
        );
    }

    #[test]
    fn the_decode_names_company_prefix_filter_and_gtin() {
        let d = decode_epc_hex("3074257BF7194E4000001A85");
        let Ok(d) = d else { panic!("{d:?}") };
        assert_eq!(d.scheme, "sgtin-96");
        assert_eq!(d.header, "30");
        assert_eq!(d.filter, Some(3));
        assert_eq!(d.partition, Some(5));
        assert_eq!(d.company_prefix.as_deref(), Some("0614141"));
        assert_eq!(d.gtin.map(|g| g.to_string()), Some("80614141123458".into()));
    }

    #[test]
    fn unknown_and_withdrawn_headers_are_named() {
        assert_eq!(
            decode_epc_hex("FF0000000000000000000000"),
            Err(EpcError::UnknownHeader(0xFF))
        );
        assert!(matches!(
            decode_epc_hex("3AFFFFFFFFFFFFFFFFFFFFFF"),
            Err(EpcError::WithdrawnHeader { .. })
        ));
        assert_eq!(
            decode_epc_hex("3AFFFFFFFFFFFFFFFFFFFFFF").map_err(|e| e.kind()),
            Err("unknown_or_unsupported_header")
        );
    }

    #[test]
    fn an_invalid_partition_is_refused() {
        // SGTIN-96 with partition bits 111.
        assert!(matches!(
            decode_epc_hex("307C257BF7194E4000001A85"),
            Err(EpcError::InvalidPartition { partition: 7, .. })
        ));
    }

    #[test]
    fn malformed_hex_is_refused_without_panicking() {
        assert_eq!(decode_epc_hex(""), Err(EpcError::Empty));
        assert!(matches!(
            decode_epc_hex("30zz"),
            Err(EpcError::NotHex { position: 2, .. })
        ));
        assert!(matches!(
            decode_epc_hex("3074257BF7"),
            Err(EpcError::TooShort { .. })
        ));
        assert!(matches!(
            decode_epc_hex(&"30".repeat(100)),
            Err(EpcError::TooLong(_))
        ));
        assert!(matches!(
            decode_epc_hex("3074257BF7194E4000001A8500000000"),
            Err(EpcError::WrongLength { .. })
        ));
        assert!(decode_epc_hex("3").is_err());
        assert!(decode_epc_hex("3B").is_err());
        assert!(decode_epc_hex("3D").is_err());
    }

    #[test]
    fn hex_with_separators_and_a_prefix_is_accepted() {
        assert!(decode_epc_hex("0x30 74 25 7B F7 19 4E 40 00 00 1A 85").is_ok());
        assert!(decode_epc_hex("30:74:25:7b:f7:19:4e:40:00:00:1a:85").is_ok());
    }
}
