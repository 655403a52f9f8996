//! Retail numbering around the GTIN: UPC-E expansion, SSCC, restricted-circulation numbers
//! (store-internal and variable-measure codes) and the GS1 prefix → country table.
//!
//! Written by hand from the GS1 General Specifications (§1.4.x prefix allocation, §2.1.11
//! restricted circulation, §7.9.3 price check digits) and GS1's published list of Member
//! Organisation prefixes. The country table names the country of the GS1 Member Organisation
//! that issued the company prefix: it says who licensed the number, not where the product
//! was made.

use serde::Serialize;

use crate::decode::gtin::{Gtin14, GtinError, check_digit};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpcError {
    #[error("{0} digits: a UPC has 12 (UPC-A) or 6, 7 or 8 (UPC-E) digits")]
    BadLength(usize),
    #[error("character {found:?} at position {position} is not a digit")]
    NonDigit { position: usize, found: char },
    #[error("UPC-E number system is {0} but only 0 or 1 exist")]
    NumberSystem(char),
    #[error("check digit is {found} but the other digits give {expected}: mistyped or misread")]
    CheckDigit { expected: u8, found: u8 },
}

fn non_digit(input: &str) -> Option<(usize, char)> {
    input.chars().enumerate().find(|(_, c)| !c.is_ascii_digit())
}

/// Expand the six UPC-E data digits (without number system and check digit) to the 10 middle
/// digits of the UPC-A they abbreviate; the last digit says where the zeros were suppressed.
fn upc_e_middle(six: &[u8; 6]) -> [u8; 10] {
    let [d1, d2, d3, d4, d5, d6] = *six;
    match d6 {
        b'0'..=b'2' => [d1, d2, d6, b'0', b'0', b'0', b'0', d3, d4, d5],
        b'3' => [d1, d2, d3, b'0', b'0', b'0', b'0', b'0', d4, d5],
        b'4' => [d1, d2, d3, d4, b'0', b'0', b'0', b'0', b'0', d5],
        _ => [d1, d2, d3, d4, d5, b'0', b'0', b'0', b'0', d6],
    }
}

/// Parse a UPC-A (12 digits) or UPC-E (6 digits: number system 0 and check digit implied;
/// 7: check digit implied; 8: complete) and return the GTIN it stands for.
pub fn parse_upc(input: &str) -> Result<Gtin14, UpcError> {
    if let Some((position, found)) = non_digit(input) {
        return Err(UpcError::NonDigit { position, found });
    }
    let b = input.as_bytes();
    let upc_a: Vec<u8> = match b.len() {
        12 => b.to_vec(),
        6..=8 => {
            let (ns, six, check) = match b.len() {
                6 => (b'0', b, None),
                7 => (
                    b.first().copied().unwrap_or(b'0'),
                    b.get(1..).unwrap_or_default(),
                    None,
                ),
                _ => (
                    b.first().copied().unwrap_or(b'0'),
                    b.get(1..7).unwrap_or_default(),
                    b.get(7).copied(),
                ),
            };
            if !matches!(ns, b'0' | b'1') {
                return Err(UpcError::NumberSystem(char::from(ns)));
            }
            let six: [u8; 6] = six.try_into().map_err(|_| UpcError::BadLength(b.len()))?;
            let mut body = vec![ns];
            body.extend_from_slice(&upc_e_middle(&six));
            let expected = check_digit(&body);
            if let Some(found) = check {
                let found = found - b'0';
                if found != expected {
                    return Err(UpcError::CheckDigit { expected, found });
                }
            }
            body.push(expected + b'0');
            body
        }
        n => return Err(UpcError::BadLength(n)),
    };
    let text = String::from_utf8_lossy(&upc_a).into_owned();
    Gtin14::parse(&text).map_err(|e| match e {
        GtinError::CheckDigit { expected, found } => UpcError::CheckDigit { expected, found },
        _ => UpcError::BadLength(upc_a.len()),
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsccError {
    #[error("{0} digits: an SSCC has 18 digits")]
    BadLength(usize),
    #[error("character {found:?} at position {position} is not a digit")]
    NonDigit { position: usize, found: char },
    #[error("check digit is {found} but the other digits give {expected}: mistyped or misread")]
    CheckDigit { expected: u8, found: u8 },
}

/// Validate an 18-digit Serial Shipping Container Code (the pallet/case label number).
pub fn parse_sscc(input: &str) -> Result<String, SsccError> {
    if let Some((position, found)) = non_digit(input) {
        return Err(SsccError::NonDigit { position, found });
    }
    let b = input.as_bytes();
    let Some((&last, body)) = b.split_last().filter(|_| b.len() == 18) else {
        return Err(SsccError::BadLength(b.len()));
    };
    let expected = check_digit(body);
    let found = last - b'0';
    if expected != found {
        return Err(SsccError::CheckDigit { expected, found });
    }
    Ok(input.to_string())
}

/// What a GS1 prefix says about a GTIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "country", rename_all = "snake_case")]
pub enum PrefixUse {
    /// Issued by the GS1 Member Organisation of this ISO 3166 alpha-2 country.
    Country(&'static str),
    /// Store-internal or variable-measure numbers (prefixes 02, 04, 2): valid only inside one
    /// company or country, never a global product identity.
    RestrictedCirculation,
    /// ISBN/ISMN/ISSN (978, 979, 977).
    Bookland,
    /// Coupons and refund receipts (05, 981-984, 99).
    Coupon,
    /// GS1 Global Office and reserved or unassigned ranges.
    Unassigned,
}

impl PrefixUse {
    pub fn country(self) -> Option<&'static str> {
        match self {
            PrefixUse::Country(c) => Some(c),
            _ => None,
        }
    }
}

/// GS1 prefix ranges (3 digits, inclusive) to the Member Organisation's country.
const PREFIX_COUNTRIES: &[(u16, u16, &str)] = &[
    (1, 19, "US"),
    (30, 39, "US"),
    (60, 139, "US"),
    (300, 379, "FR"),
    (380, 380, "BG"),
    (383, 383, "SI"),
    (385, 385, "HR"),
    (387, 387, "BA"),
    (389, 389, "ME"),
    (390, 390, "XK"),
    (400, 440, "DE"),
    (450, 459, "JP"),
    (460, 469, "RU"),
    (470, 470, "KG"),
    (471, 471, "TW"),
    (474, 474, "EE"),
    (475, 475, "LV"),
    (476, 476, "AZ"),
    (477, 477, "LT"),
    (478, 478, "UZ"),
    (479, 479, "LK"),
    (480, 480, "PH"),
    (481, 481, "BY"),
    (482, 482, "UA"),
    (483, 483, "TM"),
    (484, 484, "MD"),
    (485, 485, "AM"),
    (486, 486, "GE"),
    (487, 487, "KZ"),
    (488, 488, "TJ"),
    (489, 489, "HK"),
    (490, 499, "JP"),
    (500, 509, "GB"),
    (520, 521, "GR"),
    (528, 528, "LB"),
    (529, 529, "CY"),
    (530, 530, "AL"),
    (531, 531, "MK"),
    (535, 535, "MT"),
    (539, 539, "IE"),
    (540, 549, "BE"),
    (560, 560, "PT"),
    (569, 569, "IS"),
    (570, 579, "DK"),
    (590, 590, "PL"),
    (594, 594, "RO"),
    (599, 599, "HU"),
    (600, 601, "ZA"),
    (603, 603, "GH"),
    (604, 604, "SN"),
    (605, 605, "UG"),
    (606, 606, "AO"),
    (607, 607, "OM"),
    (608, 608, "BH"),
    (609, 609, "MU"),
    (611, 611, "MA"),
    (613, 613, "DZ"),
    (615, 615, "NG"),
    (616, 616, "KE"),
    (617, 617, "CM"),
    (618, 618, "CI"),
    (619, 619, "TN"),
    (620, 620, "TZ"),
    (621, 621, "SY"),
    (622, 622, "EG"),
    (623, 623, "BN"),
    (624, 624, "LY"),
    (625, 625, "JO"),
    (626, 626, "IR"),
    (627, 627, "KW"),
    (628, 628, "SA"),
    (629, 629, "AE"),
    (630, 630, "QA"),
    (631, 631, "NA"),
    (640, 649, "FI"),
    (690, 699, "CN"),
    (700, 709, "NO"),
    (729, 729, "IL"),
    (730, 739, "SE"),
    (740, 740, "GT"),
    (741, 741, "SV"),
    (742, 742, "HN"),
    (743, 743, "NI"),
    (744, 744, "CR"),
    (745, 745, "PA"),
    (746, 746, "DO"),
    (750, 750, "MX"),
    (754, 755, "CA"),
    (759, 759, "VE"),
    (760, 769, "CH"),
    (770, 771, "CO"),
    (773, 773, "UY"),
    (775, 775, "PE"),
    (777, 777, "BO"),
    (778, 779, "AR"),
    (780, 780, "CL"),
    (784, 784, "PY"),
    (786, 786, "EC"),
    (789, 790, "BR"),
    (800, 839, "IT"),
    (840, 849, "ES"),
    (850, 850, "CU"),
    (858, 858, "SK"),
    (859, 859, "CZ"),
    (860, 860, "RS"),
    (865, 865, "MN"),
    (867, 867, "KP"),
    (868, 869, "TR"),
    (870, 879, "NL"),
    (880, 881, "KR"),
    (883, 883, "MM"),
    (884, 884, "KH"),
    (885, 885, "TH"),
    (888, 888, "SG"),
    (890, 890, "IN"),
    (893, 893, "VN"),
    (896, 896, "PK"),
    (899, 899, "ID"),
    (900, 919, "AT"),
    (930, 939, "AU"),
    (940, 949, "NZ"),
    (955, 955, "MY"),
    (958, 958, "MO"),
];

fn digits_value(s: &str) -> Option<u32> {
    s.parse().ok()
}

/// Prefix use of a 13-digit number (GTIN-13, or a GTIN-12 with a leading zero).
pub fn prefix_use_13(digits: &str) -> PrefixUse {
    let starts = |p: &str| digits.starts_with(p);
    if starts("0000000") {
        return PrefixUse::RestrictedCirculation;
    }
    // 0000001-0000099 would collide with GTIN-8 written as 13 digits, so GS1 never issues them.
    if starts("00000") {
        return PrefixUse::Unassigned;
    }
    let Some(p3) = digits.get(..3).and_then(digits_value) else {
        return PrefixUse::Unassigned;
    };
    match p3 {
        // 0001-0009 and 00001-00009 are US company prefixes (UPC heritage).
        0 => PrefixUse::Country("US"),
        20..=29 | 40..=49 | 200..=299 => PrefixUse::RestrictedCirculation,
        50..=59 | 981..=984 | 990..=999 => PrefixUse::Coupon,
        977..=979 => PrefixUse::Bookland,
        _ => country_of(p3),
    }
}

fn country_of(p3: u32) -> PrefixUse {
    PREFIX_COUNTRIES
        .iter()
        .find(|(lo, hi, _)| (u32::from(*lo)..=u32::from(*hi)).contains(&p3))
        .map_or(PrefixUse::Unassigned, |(_, _, c)| PrefixUse::Country(c))
}

/// Prefix use of an EAN-8 (GTIN-8): 0 and 2 prefixes are restricted circulation, 1xx follows
/// the GTIN-13 table (100-139 US), the rest is the same country table.
pub fn prefix_use_8(digits: &str) -> PrefixUse {
    let Some(p3) = digits.get(..3).and_then(digits_value) else {
        return PrefixUse::Unassigned;
    };
    match p3 {
        0..=99 | 200..=299 => PrefixUse::RestrictedCirculation,
        977..=999 => PrefixUse::Unassigned,
        _ => country_of(p3),
    }
}

/// Prefix use of a normalised GTIN-14. Six leading zeros mark a GTIN-8 (GS1 never issues
/// GTIN-12/13 numbers that would collide); otherwise the indicator digit is dropped.
pub fn prefix_use(gtin: Gtin14) -> PrefixUse {
    let s = gtin.to_string();
    match (s.strip_prefix("000000"), s.get(1..)) {
        (Some(gtin8), _) => prefix_use_8(gtin8),
        (None, Some(gtin13)) => prefix_use_13(gtin13),
        _ => PrefixUse::Unassigned,
    }
}

/// Prefix use read from bare digits (8, 12, 13 or 14 of them) without checking the check
/// digit: the prefix is still meaningful on a mistyped code, and says where to look it up.
pub fn prefix_use_digits(digits: &str) -> Option<PrefixUse> {
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match digits.len() {
        8 => Some(prefix_use_8(digits)),
        12 => Some(prefix_use_13(&format!("0{digits}"))),
        13 => Some(prefix_use_13(digits)),
        14 => digits.get(1..).map(prefix_use_13),
        _ => None,
    }
}

/// National rules for variable-measure restricted-circulation numbers. Only the layouts whose
/// embedded price/weight carries its own check digit need a region to be validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RcnRegion {
    Denmark,
    Estonia,
    Finland,
    Germany,
    GreatBritain,
    Latvia,
    Lithuania,
    Norway,
    Sweden,
}

impl RcnRegion {
    /// Accepts ISO alpha-2 codes (`de`) and spelled-out names (`GERMANY`, `RcnRegion.GERMANY`).
    pub fn parse(name: &str) -> Option<RcnRegion> {
        let key = name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase();
        Some(match key.as_str() {
            "dk" | "denmark" => RcnRegion::Denmark,
            "ee" | "estonia" => RcnRegion::Estonia,
            "fi" | "finland" => RcnRegion::Finland,
            "de" | "germany" => RcnRegion::Germany,
            "gb" | "uk" | "great_britain" => RcnRegion::GreatBritain,
            "lv" | "latvia" => RcnRegion::Latvia,
            "lt" | "lithuania" => RcnRegion::Lithuania,
            "no" | "norway" => RcnRegion::Norway,
            "se" | "sweden" => RcnRegion::Sweden,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the price/weight {value} in store code {gtin} has check digit {found} but should have {expected}: the label is misprinted or misread"
)]
pub struct VariableMeasureError {
    pub gtin: String,
    pub value: String,
    pub expected: u8,
    pub found: u8,
}

/// GS1 General Specifications §7.9.3 weighting functions for price check digits.
fn weight_2minus(d: u8) -> u8 {
    const TABLE: [u8; 10] = [0, 2, 4, 6, 8, 9, 1, 3, 5, 7];
    TABLE.get(usize::from(d)).copied().unwrap_or(0)
}

fn weight_3(d: u8) -> u8 {
    (d * 3) % 10
}

fn weight_5plus(d: u8) -> u8 {
    let p = d * 5;
    p / 10 + p % 10
}

fn weight_5minus(d: u8) -> u8 {
    const TABLE: [u8; 10] = [0, 5, 9, 4, 8, 3, 7, 2, 6, 1];
    TABLE.get(usize::from(d)).copied().unwrap_or(0)
}

pub(crate) fn four_digit_price_check(&[a, b, c, d]: &[u8; 4]) -> u8 {
    let sum = u32::from(weight_2minus(a))
        + u32::from(weight_2minus(b))
        + u32::from(weight_3(c))
        + u32::from(weight_5minus(d));
    ((sum * 3) % 10) as u8
}

pub(crate) fn five_digit_price_check(&[a, b, c, d, e]: &[u8; 5]) -> u8 {
    let sum = u32::from(weight_5plus(a))
        + u32::from(weight_2minus(b))
        + u32::from(weight_5minus(c))
        + u32::from(weight_5plus(d))
        + u32::from(weight_2minus(e));
    let target = ((10 - sum % 10) % 10) as u8;
    (0..10).find(|d| weight_5minus(*d) == target).unwrap_or(0)
}

/// Verify the check digit embedded before a variable measure in a GTIN-13 restricted
/// circulation number, for the national layouts that have one: Great Britain prefix 20
/// (4-digit price, check in position 8) and Germany prefixes 22, 23, 25, 26, 28, 29 (5-digit
/// value, check in position 7). Other layouts carry no inner check digit.
pub fn verify_variable_measure(
    gtin: Gtin14,
    region: RcnRegion,
) -> Result<(), VariableMeasureError> {
    let s = gtin.to_string();
    let Some(d13) = s.get(1..).filter(|_| s.starts_with('0')) else {
        return Ok(());
    };
    let d: Vec<u8> = d13.bytes().map(|b| b.wrapping_sub(b'0')).collect();
    let at = |r: std::ops::Range<usize>| d.get(r).map(<[u8]>::to_vec).unwrap_or_default();
    let (value, found, expected) = match (region, d13.get(..2)) {
        (RcnRegion::GreatBritain, Some("20")) => {
            let v: [u8; 4] = at(8..12).try_into().unwrap_or([0; 4]);
            (
                at(8..12),
                d.get(7).copied().unwrap_or(0),
                four_digit_price_check(&v),
            )
        }
        (RcnRegion::Germany, Some("22" | "23" | "25" | "26" | "28" | "29")) => {
            let v: [u8; 5] = at(7..12).try_into().unwrap_or([0; 5]);
            (
                at(7..12),
                d.get(6).copied().unwrap_or(0),
                five_digit_price_check(&v),
            )
        }
        _ => return Ok(()),
    };
    if found == expected {
        Ok(())
    } else {
        Err(VariableMeasureError {
            gtin: d13.to_string(),
            value: value.iter().map(|v| char::from(v + b'0')).collect(),
            expected,
            found,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gtin(s: &str) -> Gtin14 {
        Gtin14::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn upc_e_expands_by_the_position_of_its_last_digit() {
        assert_eq!(
            parse_upc("654321").map(|g| g.to_string()),
            Ok("00065100004327".into())
        );
        assert_eq!(
            parse_upc("06543217").map(|g| g.to_string()),
            Ok("00065100004327".into())
        );
        assert_eq!(
            parse_upc("01234531").map(|g| g.to_string()),
            Ok("00012300000451".into())
        );
        assert_eq!(
            parse_upc("01234543").map(|g| g.to_string()),
            Ok("00012340000053".into())
        );
        assert_eq!(
            parse_upc("09876505").map(|g| g.to_string()),
            Ok("00098000007655".into())
        );
    }

    #[test]
    fn upc_errors_name_the_problem() {
        assert_eq!(
            parse_upc("06543218"),
            Err(UpcError::CheckDigit {
                expected: 7,
                found: 8
            })
        );
        assert_eq!(parse_upc("2654321"), Err(UpcError::NumberSystem('2')));
        assert_eq!(parse_upc("123"), Err(UpcError::BadLength(3)));
        assert_eq!(
            parse_upc("614141000037"),
            Err(UpcError::CheckDigit {
                expected: 6,
                found: 7
            })
        );
    }

    #[test]
    fn an_sscc_has_eighteen_digits_and_a_check_digit() {
        assert!(parse_sscc("106141412345678908").is_ok());
        assert_eq!(
            parse_sscc("106141412345678909"),
            Err(SsccError::CheckDigit {
                expected: 8,
                found: 9
            })
        );
        assert_eq!(parse_sscc("123"), Err(SsccError::BadLength(3)));
    }

    #[test]
    fn prefixes_map_to_the_issuing_country() {
        assert_eq!(prefix_use(gtin("8401234567895")).country(), Some("ES"));
        assert_eq!(prefix_use(gtin("5401234567898")).country(), Some("BE"));
        assert_eq!(prefix_use(gtin("0012345678905")).country(), Some("US"));
        assert_eq!(prefix_use(gtin("13012345678909")).country(), Some("FR"));
    }

    #[test]
    fn restricted_circulation_and_books_have_no_country() {
        assert_eq!(
            prefix_use(gtin("2001234567893")),
            PrefixUse::RestrictedCirculation
        );
        assert_eq!(
            prefix_use(gtin("0401234567893")),
            PrefixUse::RestrictedCirculation
        );
        assert_eq!(prefix_use(gtin("9781234567897")), PrefixUse::Bookland);
        assert_eq!(
            prefix_use(gtin("20999995")),
            PrefixUse::RestrictedCirculation
        );
        assert_eq!(prefix_use(gtin("1401234567892")), PrefixUse::Unassigned);
        assert_eq!(prefix_use_13("0000001234567"), PrefixUse::Unassigned);
        assert_eq!(prefix_use_13("0000123456784"), PrefixUse::Country("US"));
        assert_eq!(prefix_use_13("0001234567890"), PrefixUse::Country("US"));
        assert_eq!(
            prefix_use_digits("3012345678902"),
            Some(PrefixUse::Country("FR"))
        );
    }

    #[test]
    fn ean8_prefixes_use_their_own_restricted_ranges() {
        assert_eq!(prefix_use_8("00012345"), PrefixUse::RestrictedCirculation);
        assert_eq!(prefix_use_8("10012345"), PrefixUse::Country("US"));
        assert_eq!(prefix_use_8("48500001"), PrefixUse::Country("AM"));
    }

    #[test]
    fn price_check_digit_weights_match_the_general_specifications() {
        let two_minus: Vec<u8> = (0..10).map(weight_2minus).collect();
        assert_eq!(two_minus, vec![0, 2, 4, 6, 8, 9, 1, 3, 5, 7]);
        let five_plus: Vec<u8> = (0..10).map(weight_5plus).collect();
        assert_eq!(five_plus, vec![0, 5, 1, 6, 2, 7, 3, 8, 4, 9]);
    }

    #[test]
    fn a_german_weight_label_with_a_bad_inner_check_digit_is_refused() {
        assert!(verify_variable_measure(gtin("2212341015003"), RcnRegion::Germany).is_ok());
        let err = verify_variable_measure(gtin("2212342015002"), RcnRegion::Germany);
        assert_eq!(
            err.map_err(|e| (e.value, e.expected, e.found)),
            Err(("01500".into(), 1, 2))
        );
        assert!(verify_variable_measure(gtin("2012345678903"), RcnRegion::Germany).is_ok());
    }

    #[test]
    fn a_british_price_label_with_a_bad_inner_check_digit_is_refused() {
        assert!(verify_variable_measure(gtin("2054321904507"), RcnRegion::GreatBritain).is_ok());
        let err = verify_variable_measure(gtin("2054321004504"), RcnRegion::GreatBritain);
        assert_eq!(
            err.map_err(|e| (e.value, e.expected)),
            Err(("0450".into(), 9))
        );
    }

    #[test]
    fn regions_are_named_by_code_or_by_name() {
        assert_eq!(RcnRegion::parse("de"), Some(RcnRegion::Germany));
        assert_eq!(
            RcnRegion::parse("RcnRegion.GREAT_BRITAIN"),
            Some(RcnRegion::GreatBritain)
        );
        assert_eq!(RcnRegion::parse("foo"), None);
    }
}
