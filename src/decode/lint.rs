//! Single-field validators ("linters") of the GS1 Barcode Syntax Dictionary.
//!
//! Each linter checks one component of an AI value (a check digit, a date, a country code, …).
//! The names are the dictionary's own (`csum`, `yymmd0`, `iso3166`, …) so that a dictionary
//! line can be read next to the table in `gs1.rs`. Written by hand from the GS1 General
//! Specifications and the syntax dictionary's descriptions of each linter.

use crate::decode::gtin::check_digit;
use crate::decode::iso;

/// Why a field failed a linter. `position` is a 0-based character offset into the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LintError {
    #[error("character {found:?} at position {position} is not a digit")]
    NonDigit { position: usize, found: char },
    #[error("character {found:?} at position {position} is not allowed here ({allowed})")]
    BadCharacter {
        position: usize,
        found: char,
        allowed: &'static str,
    },
    #[error("too short: {len} characters where {min} are needed")]
    TooShort { len: usize, min: usize },
    #[error("too long: {len} characters where at most {max} are allowed")]
    TooLong { len: usize, max: usize },
    #[error("check digit is {found} but the other digits give {expected}: mistyped or misread")]
    CheckDigit { expected: char, found: char },
    #[error("check characters are {found:?} but the data gives {expected:?}: mistyped or misread")]
    CheckPair { expected: String, found: String },
    #[error("month {0:02} does not exist")]
    IllegalMonth(u32),
    #[error("day {day:02} does not exist in month {month:02}")]
    IllegalDay { month: u32, day: u32 },
    #[error("hour {0:02} does not exist")]
    IllegalHour(u32),
    #[error("minute {0:02} does not exist")]
    IllegalMinute(u32),
    #[error("second {0:02} does not exist")]
    IllegalSecond(u32),
    #[error("{0:?} is not an ISO 3166 country code")]
    NotIso3166(String),
    #[error("{0:?} is not an ISO 4217 currency code")]
    NotIso4217(String),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("linter {0:?} is not implemented by this decoder")]
    Unsupported(String),
}

/// CSET 82 in the order of GS1 General Specifications figure 7.11-1; the index of a character
/// is its value in the GMN/MUDI check-pair computation, so the order matters.
pub const CSET82: &str =
    "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
const CSET39: &str = "#-/0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const CSET64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const CSET32: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// Package type codes for AI 7041: GS1's PackageTypeCode code list (UN/ECE Recommendation 21
/// extended with GS1 codes), as GS1's reference `packagetype` linter carries it
/// (gs1/gs1-syntax-engine, Apache-2.0). Sorted for binary search.
const PACKAGE_TYPES: &[&str] = &[
    "1A", "1B", "1D", "1F", "1G", "1W", "200", "201", "202", "203", "204", "205", "206", "210",
    "211", "212", "2C", "3A", "3H", "43", "44", "4A", "4B", "4C", "4D", "4F", "4G", "4H", "5H",
    "5L", "5M", "6H", "6P", "7A", "7B", "8", "8A", "8B", "8C", "9", "AA", "AB", "AC", "AD", "AF",
    "AG", "AH", "AI", "AJ", "AL", "AM", "AP", "APE", "AT", "AV", "B4", "BB", "BC", "BD", "BE",
    "BF", "BG", "BGE", "BH", "BI", "BJ", "BK", "BL", "BM", "BME", "BN", "BO", "BP", "BQ", "BR",
    "BRI", "BS", "BT", "BU", "BV", "BW", "BX", "BY", "BZ", "CA", "CB", "CBL", "CC", "CCE", "CD",
    "CE", "CF", "CG", "CH", "CI", "CJ", "CK", "CL", "CM", "CN", "CO", "CP", "CQ", "CR", "CS", "CT",
    "CU", "CV", "CW", "CX", "CY", "CZ", "DA", "DB", "DC", "DG", "DH", "DI", "DJ", "DK", "DL", "DM",
    "DN", "DP", "DPE", "DR", "DS", "DT", "DU", "DV", "DW", "DX", "DY", "E1", "E2", "E3", "EC",
    "ED", "EE", "EF", "EG", "EH", "EI", "EN", "FB", "FC", "FD", "FE", "FI", "FL", "FO", "FOB",
    "FP", "FPE", "FR", "FT", "FW", "FX", "GB", "GI", "GL", "GR", "GU", "GY", "GZ", "HA", "HB",
    "HC", "HG", "HN", "HR", "IA", "IB", "IC", "ID", "IE", "IF", "IG", "IH", "IK", "IL", "IN", "IZ",
    "JB", "JC", "JG", "JR", "JT", "JY", "KG", "KI", "LAB", "LE", "LG", "LT", "LU", "LV", "LZ",
    "MA", "MB", "MC", "ME", "MPE", "MR", "MS", "MT", "MW", "MX", "NA", "NE", "NF", "NG", "NS",
    "NT", "NU", "NV", "OA", "OB", "OC", "OD", "OE", "OF", "OK", "OPE", "OT", "OU", "P2", "PA",
    "PAE", "PB", "PC", "PD", "PE", "PF", "PG", "PH", "PI", "PJ", "PK", "PL", "PLP", "PN", "PO",
    "POP", "PP", "PPE", "PR", "PT", "PU", "PUE", "PV", "PX", "PY", "PZ", "QA", "QB", "QC", "QD",
    "QF", "QG", "QH", "QJ", "QK", "QL", "QM", "QN", "QP", "QQ", "QR", "QS", "RB1", "RB2", "RB3",
    "RCB", "RD", "RG", "RJ", "RK", "RL", "RO", "RT", "RZ", "S1", "SA", "SB", "SC", "SD", "SE",
    "SEC", "SH", "SI", "SK", "SL", "SM", "SO", "SP", "SS", "ST", "STL", "SU", "SV", "SW", "SX",
    "SY", "SZ", "T1", "TB", "TC", "TD", "TE", "TEV", "TG", "THE", "TI", "TK", "TL", "TN", "TO",
    "TR", "TRE", "TS", "TT", "TTE", "TU", "TV", "TW", "TWE", "TY", "TZ", "UC", "UN", "UUE", "VA",
    "VG", "VI", "VK", "VL", "VN", "VO", "VP", "VQ", "VR", "VS", "VY", "WA", "WB", "WC", "WD", "WF",
    "WG", "WH", "WJ", "WK", "WL", "WM", "WN", "WP", "WQ", "WR", "WRP", "WS", "WT", "WU", "WV",
    "WW", "WX", "WY", "WZ", "X11", "X12", "X15", "X16", "X17", "X18", "X19", "X20", "X3", "XA",
    "XB", "XC", "XD", "XF", "XG", "XH", "XJ", "XK", "YA", "YB", "YC", "YD", "YF", "YG", "YH", "YJ",
    "YK", "YL", "YM", "YN", "YP", "YQ", "YR", "YS", "YT", "YV", "YW", "YX", "YY", "YZ", "ZA", "ZB",
    "ZC", "ZD", "ZF", "ZG", "ZH", "ZJ", "ZK", "ZL", "ZM", "ZN", "ZP", "ZQ", "ZR", "ZS", "ZT", "ZU",
    "ZV", "ZW", "ZX", "ZY", "ZZ",
];

/// A linter: one check of one component of an AI value.
pub type LintFn = fn(&str) -> Result<(), LintError>;

/// Run the linter called `name` over `value`.
pub fn lint(name: &str, value: &str) -> Result<(), LintError> {
    match linter(name) {
        Some(check) => check(value),
        None => Err(LintError::Unsupported(name.to_string())),
    }
}

/// The linter called `name` in the syntax dictionary, resolved once when the dictionary is
/// loaded so that validating a value never matches linter names again.
pub fn linter(name: &str) -> Option<LintFn> {
    Some(match name {
        "csetnumeric" => digits,
        "cset82" => |v| in_set(v, CSET82, "GS1 character set 82"),
        "cset39" => |v| in_set(v, CSET39, "GS1 character set 39"),
        "cset64" => cset64,
        "csum" => csum,
        "csumalpha" => csumalpha,
        "yymmdd" => |v| yymmdd(v, false),
        "yymmd0" => |v| yymmdd(v, true),
        "yyyymmdd" => |v| yyyymmdd(v, false),
        "yyyymmd0" => |v| yyyymmdd(v, true),
        "yymmddhh" => yymmddhh,
        "hh" => |v| two_digit_unit(v, 23, LintError::IllegalHour),
        "mi" => |v| two_digit_unit(v, 59, LintError::IllegalMinute),
        "ss" => |v| two_digit_unit(v, 59, LintError::IllegalSecond),
        "hhmi" => hhmi,
        "mmoptss" => mmoptss,
        "iso3166" => iso3166,
        "iso3166999" => |v| if v == "999" { Ok(()) } else { iso3166(v) },
        "iso3166alpha2" => |v| {
            if iso::is_iso3166_alpha2(v) {
                Ok(())
            } else {
                Err(LintError::NotIso3166(v.to_string()))
            }
        },
        "iso3166list" => iso3166list,
        "iso4217" => |v| {
            digits(v)?;
            if iso::is_iso4217_numeric(v) {
                Ok(())
            } else {
                Err(LintError::NotIso4217(v.to_string()))
            }
        },
        "iso5218" => |v| {
            one_of(
                v,
                &["0", "1", "2", "9"],
                "biological sex code must be 0, 1, 2 or 9",
            )
        },
        "yesno" => |v| one_of(v, &["0", "1"], "must be 0 (no) or 1 (yes)"),
        "winding" => |v| one_of(v, &["0", "1", "9"], "winding direction must be 0, 1 or 9"),
        "zero" => |v| {
            if !v.is_empty() && v.bytes().all(|b| b == b'0') {
                Ok(())
            } else {
                Err(LintError::Invalid("must be zero"))
            }
        },
        "nonzero" => |v| {
            digits(v)?;
            if v.bytes().any(|b| b != b'0') {
                Ok(())
            } else {
                Err(LintError::Invalid("must not be zero"))
            }
        },
        "nozeroprefix" => |v| {
            digits(v)?;
            if v.starts_with('0') {
                Err(LintError::Invalid("must not start with a zero"))
            } else {
                Ok(())
            }
        },
        "hyphen" => |v| {
            if !v.is_empty() && v.bytes().all(|b| b == b'-') {
                Ok(())
            } else {
                Err(LintError::Invalid("must be a hyphen"))
            }
        },
        "hasnondigit" => |v| {
            if v.bytes().any(|b| !b.is_ascii_digit()) {
                Ok(())
            } else {
                Err(LintError::Invalid(
                    "must contain at least one non-digit character",
                ))
            }
        },
        "pcenc" => pcenc,
        "pieceoftotal" => pieceoftotal,
        "posinseqslash" => posinseqslash,
        "importeridx" => |v| {
            if v.chars().count() != 1 {
                return Err(LintError::Invalid(
                    "importer index must be exactly one character",
                ));
            }
            in_set(v, CSET64, "importer index characters")
        },
        "mediatype" => |v| {
            if v.len() != 2 {
                return Err(LintError::Invalid("AIDC media type must be two digits"));
            }
            digits(v)?;
            match v.parse::<u32>() {
                Ok(1..=10 | 80..=99) => Ok(()),
                _ => Err(LintError::Invalid("not an AIDC media type (01-10, 80-99)")),
            }
        },
        "latitude" => |v| fixed_bounded(v, 10, 1_800_000_000, "latitude beyond 180.0000000"),
        "longitude" => |v| fixed_bounded(v, 10, 3_600_000_000, "longitude beyond 360.0000000"),
        "iban" => iban,
        "packagetype" => |v| {
            if PACKAGE_TYPES.binary_search(&v).is_ok() {
                Ok(())
            } else {
                Err(LintError::Invalid(
                    "not a package type of GS1's PackageTypeCode list (UN/ECE Rec 21 + GS1)",
                ))
            }
        },
        "couponcode" => crate::decode::coupon::coupon_code,
        "couponposoffer" => crate::decode::coupon::coupon_pos_offer,
        "gcppos1" | "gcppos2" => |_| {
            Err(LintError::Invalid(
                "the GS1 Company Prefix cannot be verified offline (needs GS1's GCP length data)",
            ))
        },
        _ => return None,
    })
}

/// Linters that need data this agent does not have (GS1's Company Prefix lengths, a licensed
/// online service): the AI table names them, but validating an AI value skips them, as GS1's
/// reference engine does when no GCP lookup is provided.
pub fn needs_online_data(name: &str) -> bool {
    matches!(name, "gcppos1" | "gcppos2")
}

/// Whether `name` is a linter this module implements (the batch runner reports the others as
/// unsupported rather than as failures).
pub fn is_supported(name: &str) -> bool {
    !matches!(lint(name, ""), Err(LintError::Unsupported(_)))
}

pub fn digits(value: &str) -> Result<(), LintError> {
    match value.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((position, found)) => Err(LintError::NonDigit {
            position: char_pos(value, position),
            found,
        }),
        None => Ok(()),
    }
}

fn char_pos(value: &str, byte_index: usize) -> usize {
    value
        .get(..byte_index)
        .map_or(byte_index, |s| s.chars().count())
}

fn in_set(value: &str, set: &str, allowed: &'static str) -> Result<(), LintError> {
    match value.chars().enumerate().find(|(_, c)| !set.contains(*c)) {
        Some((position, found)) => Err(LintError::BadCharacter {
            position,
            found,
            allowed,
        }),
        None => Ok(()),
    }
}

fn one_of(value: &str, allowed: &[&str], why: &'static str) -> Result<(), LintError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(LintError::Invalid(why))
    }
}

/// Base64url alphabet with `=` padding only at the end and only so far as it completes a
/// 3-character group, which is how the syntax dictionary bounds padding in AI 8030.
fn cset64(value: &str) -> Result<(), LintError> {
    let body = value.trim_end_matches('=');
    let padding = value.len() - body.len();
    in_set(body, CSET64, "base64url characters")?;
    if padding > 0 && (body.is_empty() || padding > 2 || !value.len().is_multiple_of(3)) {
        return Err(LintError::Invalid("misplaced '=' padding"));
    }
    Ok(())
}

/// GS1 mod-10 over the whole field, last digit being the check digit.
pub fn csum(value: &str) -> Result<(), LintError> {
    digits(value)?;
    let bytes = value.as_bytes();
    let Some((&found, body)) = bytes.split_last() else {
        return Err(LintError::TooShort { len: 0, min: 1 });
    };
    let expected = check_digit(body) + b'0';
    if expected == found {
        Ok(())
    } else {
        Err(LintError::CheckDigit {
            expected: char::from(expected),
            found: char::from(found),
        })
    }
}

/// Check-character pair of GMN (AI 8013) and MUDI (8014): body characters valued by their CSET 82
/// index, weighted by primes in descending order, summed mod 1021, split into two CSET 32 digits.
fn csumalpha(value: &str) -> Result<(), LintError> {
    in_set(value, CSET82, "GS1 character set 82")?;
    let chars: Vec<char> = value.chars().collect();
    if chars.len() < 2 {
        return Err(LintError::TooShort {
            len: chars.len(),
            min: 2,
        });
    }
    let (body, pair) = chars.split_at(chars.len() - 2);
    let primes = first_primes(body.len());
    if primes.len() < body.len() || body.len() > 97 {
        return Err(LintError::TooLong {
            len: chars.len(),
            max: 99,
        });
    }
    let sum: usize = body
        .iter()
        .zip(primes.iter().rev())
        .map(|(c, p)| CSET82.find(*c).unwrap_or(0) * p)
        .sum::<usize>()
        % 1021;
    let expected: String = [sum >> 5, sum & 31]
        .iter()
        .filter_map(|i| CSET32.get(*i).map(|b| char::from(*b)))
        .collect();
    let found: String = pair.iter().collect();
    if expected == found {
        Ok(())
    } else {
        Err(LintError::CheckPair { expected, found })
    }
}

fn first_primes(count: usize) -> Vec<usize> {
    let mut primes = Vec::with_capacity(count);
    let mut candidate = 2;
    while primes.len() < count {
        if primes
            .iter()
            .take_while(|p| *p * *p <= candidate)
            .all(|p| candidate % p != 0)
        {
            primes.push(candidate);
        }
        candidate += 1;
    }
    primes
}

fn exact_len(value: &str, len: usize) -> Result<(), LintError> {
    digits(value)?;
    match value.len() {
        l if l < len => Err(LintError::TooShort { len: l, min: len }),
        l if l > len => Err(LintError::TooLong { len: l, max: len }),
        _ => Ok(()),
    }
}

fn number(value: &str, range: std::ops::Range<usize>) -> u32 {
    value.get(range).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn is_leap(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn check_month_day(
    year: u32,
    month: u32,
    day: u32,
    day_zero_allowed: bool,
) -> Result<(), LintError> {
    if !(1..=12).contains(&month) {
        return Err(LintError::IllegalMonth(month));
    }
    if day == 0 && day_zero_allowed {
        return Ok(());
    }
    let last = match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if (1..=last).contains(&day) {
        Ok(())
    } else {
        Err(LintError::IllegalDay { month, day })
    }
}

/// Two-digit years are only needed here for the leap-year rule, and within the GS1 sliding
/// window (−49 … +50 years) the only century year is 2000, which is leap, so `yy % 4` decides.
fn yymmdd(value: &str, day_zero_allowed: bool) -> Result<(), LintError> {
    exact_len(value, 6)?;
    let year = 2000 + number(value, 0..2);
    check_month_day(
        year,
        number(value, 2..4),
        number(value, 4..6),
        day_zero_allowed,
    )
}

fn yyyymmdd(value: &str, day_zero_allowed: bool) -> Result<(), LintError> {
    exact_len(value, 8)?;
    check_month_day(
        number(value, 0..4),
        number(value, 4..6),
        number(value, 6..8),
        day_zero_allowed,
    )
}

fn yymmddhh(value: &str) -> Result<(), LintError> {
    exact_len(value, 8)?;
    yymmdd(value.get(..6).unwrap_or_default(), false)?;
    two_digit_unit(
        value.get(6..).unwrap_or_default(),
        23,
        LintError::IllegalHour,
    )
}

fn two_digit_unit(value: &str, max: u32, error: fn(u32) -> LintError) -> Result<(), LintError> {
    exact_len(value, 2)?;
    let n = number(value, 0..2);
    if n <= max { Ok(()) } else { Err(error(n)) }
}

fn hhmi(value: &str) -> Result<(), LintError> {
    exact_len(value, 4)?;
    two_digit_unit(
        value.get(..2).unwrap_or_default(),
        23,
        LintError::IllegalHour,
    )?;
    two_digit_unit(
        value.get(2..).unwrap_or_default(),
        59,
        LintError::IllegalMinute,
    )
}

/// Minutes, optionally followed by seconds (the tail of AI 8008).
fn mmoptss(value: &str) -> Result<(), LintError> {
    digits(value)?;
    match value.len() {
        2 => two_digit_unit(value, 59, LintError::IllegalMinute),
        4 => {
            two_digit_unit(
                value.get(..2).unwrap_or_default(),
                59,
                LintError::IllegalMinute,
            )?;
            two_digit_unit(
                value.get(2..).unwrap_or_default(),
                59,
                LintError::IllegalSecond,
            )
        }
        _ => Err(LintError::Invalid(
            "minutes must be 2 digits, or 4 with seconds",
        )),
    }
}

fn iso3166(value: &str) -> Result<(), LintError> {
    digits(value)?;
    if iso::is_iso3166_numeric(value) {
        Ok(())
    } else {
        Err(LintError::NotIso3166(value.to_string()))
    }
}

fn iso3166list(value: &str) -> Result<(), LintError> {
    digits(value)?;
    if value.is_empty() || !value.len().is_multiple_of(3) {
        return Err(LintError::Invalid(
            "country list must be whole 3-digit codes",
        ));
    }
    (0..value.len() / 3).try_for_each(|i| iso3166(value.get(i * 3..i * 3 + 3).unwrap_or_default()))
}

fn pcenc(value: &str) -> Result<(), LintError> {
    let bytes = value.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return Err(LintError::Invalid(
                    "'%' must be followed by two hexadecimal digits",
                ));
            }
        }
    }
    Ok(())
}

fn pieceoftotal(value: &str) -> Result<(), LintError> {
    digits(value)?;
    if value.is_empty() || !value.len().is_multiple_of(2) {
        return Err(LintError::Invalid(
            "piece and total must have the same number of digits",
        ));
    }
    let half = value.len() / 2;
    let piece = number(value, 0..half);
    let total = number(value, half..value.len());
    match (piece, total) {
        (0, _) => Err(LintError::Invalid("piece number must not be zero")),
        (_, 0) => Err(LintError::Invalid(
            "total number of pieces must not be zero",
        )),
        (p, t) if p > t => Err(LintError::Invalid("piece number exceeds the total")),
        _ => Ok(()),
    }
}

fn posinseqslash(value: &str) -> Result<(), LintError> {
    let malformed = LintError::Invalid("must be position/total, e.g. 1/3");
    let Some((pos, end)) = value.split_once('/') else {
        return Err(malformed);
    };
    let well_formed = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !well_formed(pos) || !well_formed(end) {
        return Err(malformed);
    }
    if pos.starts_with('0') || end.starts_with('0') {
        return Err(LintError::Invalid(
            "position and total must not start with zero",
        ));
    }
    let (p, e) = (
        pos.parse::<u64>().unwrap_or(u64::MAX),
        end.parse::<u64>().unwrap_or(0),
    );
    if p > e {
        Err(LintError::Invalid("position exceeds the total"))
    } else {
        Ok(())
    }
}

fn fixed_bounded(value: &str, len: usize, max: u64, why: &'static str) -> Result<(), LintError> {
    exact_len(value, len)?;
    if value.parse::<u64>().unwrap_or(u64::MAX) <= max {
        Ok(())
    } else {
        Err(LintError::Invalid(why))
    }
}

/// ISO 13616: two-letter country, two check digits, up to 30 alphanumerics; mod 97 must be 1.
fn iban(value: &str) -> Result<(), LintError> {
    let len = value.len();
    if len < 5 {
        return Err(LintError::TooShort { len, min: 5 });
    }
    if len > 34 {
        return Err(LintError::TooLong { len, max: 34 });
    }
    in_set(
        value,
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "IBAN characters (0-9, A-Z)",
    )?;
    let country = value.get(..2).unwrap_or_default();
    if !iso::is_iso3166_alpha2(country) {
        return Err(LintError::NotIso3166(country.to_string()));
    }
    if !value
        .get(2..4)
        .is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(LintError::Invalid("IBAN check digits must be digits"));
    }
    let rearranged = value.bytes().skip(4).chain(value.bytes().take(4));
    let remainder = rearranged.fold(0u32, |acc, b| {
        if b.is_ascii_digit() {
            (acc * 10 + u32::from(b - b'0')) % 97
        } else {
            (acc * 100 + u32::from(b - b'A') + 10) % 97
        }
    });
    if remainder == 1 {
        Ok(())
    } else {
        Err(LintError::Invalid("IBAN checksum is wrong"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gtin_check_digit_is_verified_by_csum() {
        assert_eq!(lint("csum", "4012345000009"), Ok(()));
        assert_eq!(
            lint("csum", "4012345000008"),
            Err(LintError::CheckDigit {
                expected: '9',
                found: '8'
            })
        );
        assert!(lint("csum", "").is_err());
        assert!(lint("csum", " 9506000134352").is_err());
    }

    #[test]
    fn day_zero_is_only_accepted_by_the_d0_date_linters() {
        assert_eq!(lint("yymmd0", "200200"), Ok(()));
        assert_eq!(
            lint("yymmdd", "200200"),
            Err(LintError::IllegalDay { month: 2, day: 0 })
        );
        assert_eq!(lint("yymmd0", "200000"), Err(LintError::IllegalMonth(0)));
    }

    #[test]
    fn february_29_needs_a_leap_year() {
        assert_eq!(lint("yymmdd", "280229"), Ok(()));
        assert!(lint("yymmdd", "990229").is_err());
        assert_eq!(lint("yyyymmdd", "20400229"), Ok(()));
        assert!(lint("yyyymmdd", "19000229").is_err());
    }

    #[test]
    fn times_reject_impossible_hours_minutes_and_seconds() {
        assert_eq!(lint("hhmi", "2359"), Ok(()));
        assert_eq!(lint("hhmi", "2400"), Err(LintError::IllegalHour(24)));
        assert_eq!(lint("hhmi", "2360"), Err(LintError::IllegalMinute(60)));
        assert_eq!(lint("ss", "60"), Err(LintError::IllegalSecond(60)));
        assert!(lint("mmoptss", "5959").is_ok());
        assert!(lint("mmoptss", "595").is_err());
    }

    #[test]
    fn a_gmn_check_pair_is_verified_by_csumalpha() {
        // The worked GMN example of the GS1 General Specifications.
        assert_eq!(lint("csumalpha", "1987654Ad4X4bL5ttr2310c2K"), Ok(()));
        assert!(lint("csumalpha", "1987654Ad4X4bL5ttr2310cXK").is_err());
        assert_eq!(lint("csumalpha", "22"), Ok(()));
        assert!(lint("csumalpha", "2").is_err());
    }

    #[test]
    fn character_sets_name_the_offending_position() {
        assert_eq!(
            lint("cset82", "AB C"),
            Err(LintError::BadCharacter {
                position: 2,
                found: ' ',
                allowed: "GS1 character set 82"
            })
        );
        assert!(lint("cset39", "ABC-/#09").is_ok());
        assert!(lint("cset39", "abc").is_err());
        assert!(lint("cset64", "12=").is_ok());
        assert!(lint("cset64", "123=").is_err());
        assert!(lint("cset64", "=23").is_err());
    }

    #[test]
    fn an_iban_is_checked_with_mod_97() {
        assert_eq!(lint("iban", "DE89370400440532013000"), Ok(()));
        assert!(lint("iban", "DE89370400440532013001").is_err());
        assert!(lint("iban", "QQ361234567890").is_err());
    }

    #[test]
    fn pieces_positions_and_coordinates_are_bounded() {
        assert!(lint("pieceoftotal", "0203").is_ok());
        assert!(lint("pieceoftotal", "0302").is_err());
        assert!(lint("posinseqslash", "9/10").is_ok());
        assert!(lint("posinseqslash", "01/2").is_err());
        assert!(lint("latitude", "0900000000").is_ok());
        assert!(lint("latitude", "1900000000").is_err());
    }

    #[test]
    fn package_types_come_from_the_un_ece_list() {
        assert!(PACKAGE_TYPES.windows(2).all(|w| w[0] < w[1]));
        assert!(lint("packagetype", "PX").is_ok());
        assert!(lint("packagetype", "BX").is_ok());
        assert!(lint("packagetype", "px").is_err());
        assert!(lint("packagetype", "").is_err());
    }

    #[test]
    fn an_unknown_linter_is_reported_as_unsupported_not_as_invalid_data() {
        assert_eq!(
            lint("nosuchlinter", "x"),
            Err(LintError::Unsupported("nosuchlinter".into()))
        );
        assert!(!is_supported("nosuchlinter"));
        assert!(is_supported("csum"));
    }
}
