//! ISO/IEC 14443 card UIDs (loyalty and staff NFC cards).
//!
//! A PC/SC reader answers the GET DATA command `FF CA 00 00 00` with the UID followed by the
//! status word `90 00`. People also type UIDs in whatever form a phone app showed them
//! (`04:a2:2b:…`, `04 A2 2B …`). Both normalise to the same uppercase hex without separators,
//! which is the form that is keyed-hashed later, so the same card always hashes the same way.

use std::fmt;

/// The GET DATA (UID) APDU sent to a PC/SC reader.
pub const GET_UID_APDU: [u8; 5] = [0xFF, 0xCA, 0x00, 0x00, 0x00];

/// A 4-, 7- or 10-byte ISO 14443 UID (single, double or triple size).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CardUid(Vec<u8>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UidError {
    #[error("no UID: hold the card on the reader again")]
    Empty,
    #[error("reader answer is {0} bytes: too short to hold a UID and the 90 00 status")]
    ResponseTooShort(usize),
    #[error("reader refused GET UID with status {sw1:02X} {sw2:02X}{hint}")]
    Status {
        sw1: u8,
        sw2: u8,
        hint: &'static str,
    },
    #[error("{0} bytes: an ISO 14443 UID has 4, 7 or 10 bytes")]
    BadLength(usize),
    #[error("character {found:?} at position {position} is not a hex digit")]
    NotHex { position: usize, found: char },
    #[error("odd number of hex digits ({0}): a digit is missing")]
    OddDigits(usize),
}

impl CardUid {
    pub fn from_bytes(bytes: &[u8]) -> Result<CardUid, UidError> {
        match bytes.len() {
            0 => Err(UidError::Empty),
            4 | 7 | 10 => Ok(CardUid(bytes.to_vec())),
            n => Err(UidError::BadLength(n)),
        }
    }

    /// Take a raw PC/SC response to `FF CA 00 00 00`: UID bytes then SW1 SW2.
    pub fn from_pcsc_response(response: &[u8]) -> Result<CardUid, UidError> {
        let Some((sw, uid)) = response.split_last_chunk::<2>().map(|(uid, sw)| (*sw, uid)) else {
            return Err(UidError::ResponseTooShort(response.len()));
        };
        match sw {
            [0x90, 0x00] => CardUid::from_bytes(uid),
            [sw1, sw2] => Err(UidError::Status {
                sw1,
                sw2,
                hint: status_hint(sw1, sw2),
            }),
        }
    }

    /// Parse typed or logged hex, with or without `:`, `-` or spaces between bytes. A trailing
    /// `90 00` is not stripped here: a typed 9-byte value is ambiguous, so use
    /// `from_pcsc_response` for reader output.
    pub fn parse(text: &str) -> Result<CardUid, UidError> {
        let bytes = parse_hex_bytes(text)?;
        CardUid::from_bytes(&bytes)
    }

    /// Reader output logged as hex: the UID followed by the status word.
    pub fn parse_pcsc_hex(text: &str) -> Result<CardUid, UidError> {
        CardUid::from_pcsc_response(&parse_hex_bytes(text)?)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Uppercase hex, no separators: the one form used for hashing and storage.
    pub fn normalized(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for CardUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

fn parse_hex_bytes(text: &str) -> Result<Vec<u8>, UidError> {
    let trimmed = text.trim();
    let trimmed = trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
        .unwrap_or(trimmed);
    let mut digits = Vec::new();
    for (position, c) in trimmed.chars().enumerate() {
        match c {
            ':' | '-' | ' ' | '\t' => {}
            _ => digits.push(
                c.to_digit(16)
                    .ok_or(UidError::NotHex { position, found: c })? as u8,
            ),
        }
    }
    if digits.is_empty() {
        return Err(UidError::Empty);
    }
    if digits.len() % 2 != 0 {
        return Err(UidError::OddDigits(digits.len()));
    }
    Ok(digits
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => (hi << 4) | lo,
            _ => 0,
        })
        .collect())
}

fn status_hint(sw1: u8, sw2: u8) -> &'static str {
    match (sw1, sw2) {
        (0x63, 0x00) => ": the card left the field or did not answer",
        (0x6A, 0x81) => ": the reader does not support GET UID",
        (0x6B, 0x00) | (0x6A, 0x86) => ": wrong parameters in the command",
        (0x6E, 0x00) | (0x68, 0x00) => ": the reader does not support this command class",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pcsc_response_has_its_status_word_stripped() {
        let uid =
            CardUid::from_pcsc_response(&[0x04, 0xA2, 0x2B, 0x1C, 0x5D, 0x6E, 0x80, 0x90, 0x00]);
        assert_eq!(uid.map(|u| u.normalized()), Ok("04A22B1C5D6E80".into()));
    }

    #[test]
    fn an_error_status_word_is_reported_not_taken_as_uid_bytes() {
        assert_eq!(
            CardUid::from_pcsc_response(&[0x63, 0x00]),
            Err(UidError::Status {
                sw1: 0x63,
                sw2: 0x00,
                hint: ": the card left the field or did not answer"
            })
        );
        assert_eq!(
            CardUid::from_pcsc_response(&[0x90]),
            Err(UidError::ResponseTooShort(1))
        );
        assert_eq!(
            CardUid::from_pcsc_response(&[0x90, 0x00]),
            Err(UidError::Empty)
        );
    }

    #[test]
    fn typed_uids_in_any_common_spelling_normalise_identically() {
        let forms = [
            "04:a2:2b:1c:5d:6e:80",
            "04 A2 2B 1C 5D 6E 80",
            "04a22b1c5d6e80",
            " 04-A2-2B-1C-5D-6E-80 ",
        ];
        for form in forms {
            assert_eq!(
                CardUid::parse(form).map(|u| u.normalized()),
                Ok("04A22B1C5D6E80".into()),
                "{form}"
            );
        }
    }

    #[test]
    fn only_single_double_and_triple_size_uids_are_accepted() {
        assert!(CardUid::parse("DEADBEEF").is_ok());
        assert!(CardUid::parse("00112233445566778899").is_ok());
        assert_eq!(CardUid::parse("0011223344"), Err(UidError::BadLength(5)));
        assert_eq!(CardUid::parse("04A"), Err(UidError::OddDigits(3)));
        assert!(matches!(
            CardUid::parse("04:G2"),
            Err(UidError::NotHex {
                position: 3,
                found: 'G'
            })
        ));
        assert_eq!(CardUid::parse("  "), Err(UidError::Empty));
    }

    #[test]
    fn logged_reader_output_in_hex_is_accepted() {
        assert_eq!(
            CardUid::parse_pcsc_hex("DE AD BE EF 90 00").map(|u| u.normalized()),
            Ok("DEADBEEF".into())
        );
    }
}
