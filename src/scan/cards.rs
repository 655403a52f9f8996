//! Loyalty cards read by a barcode scanner: a plastic card's Code 128 or EAN, or a QR code in a
//! phone wallet. Configured patterns (`[[scans.cards]]`) are tried on every scan before any
//! product lookup; a match yields the card number only as a [`SecretUid`], which the read
//! consumer hashes at once (ADR 0004), exactly as an NFC card's UID.
//!
//! A scan that matches no pattern and no product may still be someone's card (a pattern not
//! configured yet, a partner's card): [`looks_like_card_number`] says when its data is withheld
//! from the live stream and telemetry (docs/api.md, "Loyalty cards read by a scanner").

use crate::decode::{self, BarcodeDecode, BarcodeError};
use crate::devices::SecretUid;

/// How a configured card pattern recognises a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardMatch {
    /// The data starts with `prefix` and has one of `lengths` characters (digits or letters).
    Prefix {
        prefix: String,
        lengths: std::ops::RangeInclusive<usize>,
    },
    /// The data is a number between `from` and `to` inclusive, written with their length.
    Range { from: u128, to: u128, len: usize },
    /// A URL with the number in it: the text before and after `{number}` in the template.
    Url { before: String, after: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardPattern {
    pub name: String,
    pub matcher: CardMatch,
}

/// A scanned card: which pattern recognised it, and the number, redacted in `Debug`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedCard {
    pub pattern: String,
    pub number: SecretUid,
}

/// The longest card number accepted, as for NFC identifiers (`cards::normalize_card_id`).
const MAX_NUMBER: usize = 64;

/// The data after an AIM symbology identifier, or all of it.
pub fn payload(data: &str) -> &str {
    match decode::aim::split(data) {
        Ok((_, rest)) => rest,
        Err(_) => data,
    }
}

fn alphanumeric(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NUMBER && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl CardPattern {
    fn number<'a>(&self, payload: &'a str) -> Option<&'a str> {
        match &self.matcher {
            CardMatch::Prefix { prefix, lengths } => (payload.starts_with(prefix.as_str())
                && lengths.contains(&payload.len())
                && alphanumeric(payload))
            .then_some(payload),
            CardMatch::Range { from, to, len } => {
                let n: u128 = payload
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| payload.parse().ok())
                    .flatten()?;
                (payload.len() == *len && (*from..=*to).contains(&n)).then_some(payload)
            }
            CardMatch::Url { before, after } => {
                let middle = payload
                    .strip_prefix(before.as_str())?
                    .strip_suffix(after.as_str())?;
                alphanumeric(middle).then_some(middle)
            }
        }
    }
}

/// The first pattern recognising `data` (AIM identifier removed), with the card number.
pub fn recognise(patterns: &[CardPattern], data: &str) -> Option<ScannedCard> {
    let payload = payload(data.trim());
    patterns.iter().find_map(|p| {
        p.number(payload).map(|number| ScannedCard {
            pattern: p.name.clone(),
            number: SecretUid(number.to_string()),
        })
    })
}

/// Whether a scan that matched no card pattern and no product is withheld as a possible card
/// number. Two shapes are:
/// 1. 8 to 19 digits (ISO/IEC 7812 card number lengths), unless they are GS1 element strings or
///    have a GTIN's length (8, 12, 13, 14) and a prefix GS1 assigned to a country, to books or
///    to coupons — a product the replica does not know, or a misread one, which the technician
///    needs to see. Restricted-circulation and store-internal prefixes (02, 04, 2x, 0000000),
///    unassigned prefixes and other lengths are what loyalty cards use;
/// 2. anything that decoded as no GS1 data at all (text, a URL) holding a run of 8 or more
///    digits, as wallet QR codes do.
///
/// GS1 data (element strings, Digital Link) and GTINs of real products stay recorded: they
/// identify products, not people.
pub fn looks_like_card_number(data: &str, decoded: &Result<BarcodeDecode, BarcodeError>) -> bool {
    use crate::decode::retail::{PrefixUse, prefix_use_digits};
    let payload = payload(data.trim());
    let all_digits = !payload.is_empty() && payload.bytes().all(|b| b.is_ascii_digit());
    if all_digits && (8..=19).contains(&payload.len()) {
        let element_strings = decoded.as_ref().is_ok_and(|d| !d.elements.is_empty());
        let product_prefix = matches!(
            prefix_use_digits(payload),
            Some(PrefixUse::Country(_) | PrefixUse::Bookland | PrefixUse::Coupon)
        );
        return !(element_strings || product_prefix);
    }
    let gs1_data = decoded
        .as_ref()
        .is_ok_and(|d| d.gtin.is_some() || !d.elements.is_empty() || d.sscc.is_some());
    if gs1_data {
        return false;
    }
    let mut run = 0usize;
    payload.bytes().any(|b| {
        run = if b.is_ascii_digit() { run + 1 } else { 0 };
        run >= 8
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode_barcode;

    fn patterns() -> Vec<CardPattern> {
        vec![
            CardPattern {
                name: "house".into(),
                matcher: CardMatch::Prefix {
                    prefix: "9250".into(),
                    lengths: 13..=13,
                },
            },
            CardPattern {
                name: "partner".into(),
                matcher: CardMatch::Range {
                    from: 4_000_000_000,
                    to: 4_000_999_999,
                    len: 10,
                },
            },
            CardPattern {
                name: "wallet".into(),
                matcher: CardMatch::Url {
                    before: "https://loyalty.example.com/c/".into(),
                    after: String::new(),
                },
            },
        ]
    }

    fn name(data: &str) -> Option<String> {
        recognise(&patterns(), data).map(|c| c.pattern)
    }

    #[test]
    fn a_card_is_recognised_by_prefix_range_or_url_with_or_without_an_aim_identifier() {
        assert_eq!(name("9250000000017"), Some("house".into()));
        assert_eq!(name("]C09250000000017\r\n"), Some("house".into()));
        assert_eq!(name("925000000001"), None);
        assert_eq!(name("4000123456"), Some("partner".into()));
        assert_eq!(name("4001123456"), None);
        assert_eq!(
            name("]Q1https://loyalty.example.com/c/AB12CD34"),
            Some("wallet".into())
        );
        assert_eq!(name("https://loyalty.example.com/c/AB12/../x"), None);
        assert_eq!(name("4006381333931"), None);
    }

    #[test]
    fn the_number_never_shows_in_debug_output() {
        let card = recognise(&patterns(), "9250000000017");
        let text = format!("{card:?}");
        assert!(!text.contains("9250000000017"), "{text}");
    }

    #[test]
    fn numbers_that_are_not_products_look_like_card_numbers_and_gs1_data_does_not() {
        let looks = |data: &str| looks_like_card_number(data, &decode_barcode(data));
        // A store card under a restricted-circulation prefix, a bare 16-digit number, a wallet
        // URL with a number: withheld.
        assert!(looks("2990001234566"));
        assert!(looks("6037991234567890"));
        assert!(looks("]Q1https://wallet.example.net/pass/123456789012"));
        assert!(looks("9250000000017"));
        // A GTIN of a real product (not in the replica) or a misread one, a GS1 message, short
        // codes: recorded.
        assert!(!looks("4006381333931"));
        assert!(!looks("4006381333932"));
        assert!(!looks("]C10109506000134352"));
        assert!(!looks("https://id.gs1.org/01/09506000134352"));
        assert!(!looks("1234"));
        assert!(!looks("]C0HELLO-42"));
    }
}
