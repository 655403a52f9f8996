//! GTIN-8/12/13/14 with the GS1 mod-10 check digit (GS1 General Specifications §7.9.1).
//!
//! Every GTIN is normalised to GTIN-14 (left-padded with zeros), which is the replica's product key.
//! Written by hand: the algorithm is a few lines and the crates that offer it do not normalise.

use std::fmt;

/// A GTIN normalised to 14 digits, check digit verified. Stored as an integer because
/// it is the replica's primary key and integer keys are the fastest SQLite lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gtin14(u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GtinError {
    #[error("empty code: scan or type the digits printed under the barcode")]
    Empty,
    #[error("character {found:?} at position {position} is not a digit: a GTIN has digits only")]
    NonDigit { position: usize, found: char },
    #[error("{len} digits: a GTIN has 8 (EAN-8), 12 (UPC-A), 13 (EAN-13) or 14 (GTIN-14) digits")]
    BadLength { len: usize },
    #[error(
        "check digit is {found} but the other digits give {expected}: the code was mistyped or misread"
    )]
    CheckDigit { expected: u8, found: u8 },
}

/// GS1 mod-10 check digit over `body` (ASCII digits, without the check digit).
/// Weights alternate 3,1,3,… starting from the rightmost body digit.
pub fn check_digit(body: &[u8]) -> u8 {
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let v = u32::from(d.wrapping_sub(b'0'));
            if i % 2 == 0 { v * 3 } else { v }
        })
        .sum();
    ((10 - (sum % 10)) % 10) as u8
}

impl Gtin14 {
    /// Parse an EAN-8, UPC-A, EAN-13 or GTIN-14 and verify its check digit.
    pub fn parse(input: &str) -> Result<Gtin14, GtinError> {
        let bytes = input.as_bytes();
        if bytes.is_empty() {
            return Err(GtinError::Empty);
        }
        if let Some((position, found)) = input.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            return Err(GtinError::NonDigit { position, found });
        }
        if !matches!(bytes.len(), 8 | 12 | 13 | 14) {
            return Err(GtinError::BadLength { len: bytes.len() });
        }
        let (body, check) = bytes.split_at(bytes.len() - 1);
        let expected = check_digit(body);
        let found = check[0] - b'0';
        if expected != found {
            return Err(GtinError::CheckDigit { expected, found });
        }
        let value = bytes
            .iter()
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
        Ok(Gtin14(value))
    }

    /// Rebuild from the integer key stored in the replica. Returns `None` when the number
    /// has more than 14 digits or a wrong check digit (a damaged row, never trusted blindly).
    pub fn from_u64(value: u64) -> Option<Gtin14> {
        if value >= 100_000_000_000_000 {
            return None;
        }
        Gtin14::parse(&format!("{value:014}")).ok()
    }

    /// Complete a 13-digit body (indicator + company prefix + item reference) with its check digit.
    pub fn from_body13(body: u64) -> Option<Gtin14> {
        if body >= 10_000_000_000_000 {
            return None;
        }
        let digits = format!("{body:013}");
        let check = check_digit(digits.as_bytes());
        Some(Gtin14(body * 10 + u64::from(check)))
    }

    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// SQLite integers are signed; a GTIN-14 is below 10^14 so this never truncates.
    pub fn as_i64(self) -> i64 {
        self.0 as i64
    }
}

impl fmt::Display for Gtin14 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:014}", self.0)
    }
}

impl serde::Serialize for Gtin14 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Events carry GTINs as 14-digit strings; central reads them back with the check verified.
impl<'de> serde::Deserialize<'de> for Gtin14 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Gtin14, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Gtin14::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Serialised as the 14 digits (leading zeros kept); the schema cannot check the check digit,
/// which [`Gtin14::parse`] does when central reads the event back.
impl schemars::JsonSchema for Gtin14 {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Gtin14".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9]{14}$",
            "description": "A GTIN normalised to 14 digits (GTIN-8, -12 and -13 left-padded with \
                zeros), GS1 check digit verified by the agent.",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_normalises_to_the_same_gtin14() {
        assert_eq!(
            Gtin14::parse("96385074").map(|g| g.to_string()),
            Ok("00000096385074".into())
        );
        assert_eq!(
            Gtin14::parse("036000291452").map(|g| g.to_string()),
            Ok("00036000291452".into())
        );
        assert_eq!(
            Gtin14::parse("4006381333931").map(|g| g.to_string()),
            Ok("04006381333931".into())
        );
        assert_eq!(
            Gtin14::parse("04006381333931").map(|g| g.to_string()),
            Ok("04006381333931".into())
        );
    }

    #[test]
    fn a_wrong_check_digit_names_the_expected_one() {
        assert_eq!(
            Gtin14::parse("4006381333932"),
            Err(GtinError::CheckDigit {
                expected: 1,
                found: 2
            })
        );
    }

    #[test]
    fn non_digits_and_bad_lengths_are_refused() {
        assert_eq!(Gtin14::parse(""), Err(GtinError::Empty));
        assert_eq!(
            Gtin14::parse("40063813339x1"),
            Err(GtinError::NonDigit {
                position: 11,
                found: 'x'
            })
        );
        assert_eq!(
            Gtin14::parse("1234567"),
            Err(GtinError::BadLength { len: 7 })
        );
    }

    #[test]
    fn a_body_completed_with_its_check_digit_round_trips() {
        let g = Gtin14::from_body13(400638133393).map(|g| g.to_string());
        assert_eq!(g, Some("04006381333931".into()));
        assert_eq!(
            Gtin14::from_u64(4006381333931).map(|g| g.as_u64()),
            Some(4006381333931)
        );
        assert_eq!(Gtin14::from_u64(4006381333932), None);
    }
}
