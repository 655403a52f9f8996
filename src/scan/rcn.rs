//! Restricted-circulation numbers with an embedded price, weight or count: the scale labels of
//! fresh counters. GS1 leaves their layout to each country (General Specifications §2.1.14.2),
//! so a layout is data: a 12-character pattern over the GTIN-13 without its check digit, e.g.
//! `28IIIICVVVVV` — the literal prefix, `I` item reference, `C` the value's own check digit
//! (§7.9.3, for 4- or 5-digit values), `V` the value — with what the value measures and where
//! its decimal point is.
//!
//! Built in: Germany (`de`), after GS1 Germany's published layouts, and France (`fr`), the
//! two-digit-prefix, five-digit item, five-digit value layout French scale labels commonly
//! print. `[[scans.rcn_layouts]]` replaces or adds any prefix (docs/config.md).
//!
//! The product is found in the replica under the same number with the value (and its check
//! digit) zeroed: the PLU's own code, whatever was weighed.

use serde::Serialize;

use crate::decode::gtin::{Gtin14, check_digit};
use crate::decode::retail::{VariableMeasureError, five_digit_price_check, four_digit_price_check};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// The price to charge, in the currency's units with `decimals` decimals.
    Price,
    /// The weight in kilograms with `decimals` decimals; charged × the replica's price per kg.
    Weight,
    /// A number of units; charged × the replica's unit price.
    Count,
}

impl Measure {
    pub fn parse(s: &str) -> Option<Measure> {
        match s {
            "price" => Some(Measure::Price),
            "weight" => Some(Measure::Weight),
            "count" => Some(Measure::Count),
            _ => None,
        }
    }
}

/// Why a layout pattern cannot be read (`[[scans.rcn_layouts]]`, reported with its key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("has {0} characters; a layout covers the 12 digits before the GTIN-13 check digit")]
    Length(usize),
    #[error("must start with the two-digit restricted-circulation prefix, 20 to 29")]
    Prefix,
    #[error(
        "has {0:?} after the prefix; only I (item), V (value) and C (value check digit) are allowed"
    )]
    Character(char),
    #[error("has no V (value) digits")]
    NoValue,
    #[error("must keep its V (value) digits together")]
    SplitValue,
    #[error("has more than one C (value check digit)")]
    TwoChecks,
    #[error("has a C (value check digit), which GS1 defines for 4- or 5-digit values only")]
    CheckLength,
    #[error("has {digits} value digits, fewer than its {decimals} decimals")]
    Decimals { digits: usize, decimals: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcnLayout {
    /// Where the layout comes from: `de`, `fr` or `config`.
    pub source: &'static str,
    pub prefix: String,
    pub pattern: String,
    pub measure: Measure,
    pub decimals: u32,
    value: std::ops::Range<usize>,
    check: Option<usize>,
}

impl RcnLayout {
    /// A layout from its pattern; the error says what is wrong with the pattern.
    pub fn new(
        source: &'static str,
        pattern: &str,
        measure: Measure,
        decimals: u32,
    ) -> Result<RcnLayout, LayoutError> {
        let length = pattern.chars().count();
        if length != 12 {
            return Err(LayoutError::Length(length));
        }
        let prefix: String = pattern.chars().take_while(char::is_ascii_digit).collect();
        if prefix.len() != 2 || !prefix.starts_with('2') {
            return Err(LayoutError::Prefix);
        }
        let rest = pattern.get(2..).unwrap_or_default();
        if let Some(bad) = rest.chars().find(|c| !matches!(c, 'I' | 'V' | 'C')) {
            return Err(LayoutError::Character(bad));
        }
        let first = pattern.find('V').ok_or(LayoutError::NoValue)?;
        let last = pattern.rfind('V').unwrap_or(first);
        let value = first..last + 1;
        if pattern
            .get(value.clone())
            .is_some_and(|v| v.contains(['I', 'C']))
        {
            return Err(LayoutError::SplitValue);
        }
        let check = pattern.find('C');
        if pattern.matches('C').count() > 1 {
            return Err(LayoutError::TwoChecks);
        }
        if check.is_some() && !matches!(value.len(), 4 | 5) {
            return Err(LayoutError::CheckLength);
        }
        if decimals as usize > value.len() {
            return Err(LayoutError::Decimals {
                digits: value.len(),
                decimals,
            });
        }
        Ok(RcnLayout {
            source,
            prefix,
            pattern: pattern.to_string(),
            measure,
            decimals,
            value,
            check,
        })
    }
}

fn builtin(source: &'static str, entries: &[(&str, Measure, u32)]) -> Vec<RcnLayout> {
    entries
        .iter()
        .filter_map(|(pattern, measure, decimals)| {
            RcnLayout::new(source, pattern, *measure, *decimals).ok()
        })
        .collect()
}

/// The layouts a region name stands for, `None` for a name without built-in layouts.
pub fn region_layouts(region: &str) -> Option<Vec<RcnLayout>> {
    use Measure::{Count, Price, Weight};
    match region {
        // GS1 Germany: price 22/23, count 25/26, weight 28/29 (kg, 3 decimals), each with a
        // 5-digit value and its check digit in position 7.
        "de" => Some(builtin(
            "de",
            &[
                ("22IIIICVVVVV", Price, 2),
                ("23IIIICVVVVV", Price, 2),
                ("25IIIICVVVVV", Count, 0),
                ("26IIIICVVVVV", Count, 0),
                ("28IIIICVVVVV", Weight, 3),
                ("29IIIICVVVVV", Weight, 3),
            ],
        )),
        // France: five-digit item, five-digit value, no value check digit; 21-25 the price to
        // pay in euros and cents, 26-29 the weight in kg with 3 decimals.
        "fr" => Some(builtin(
            "fr",
            &[
                ("21IIIIIVVVVV", Price, 2),
                ("22IIIIIVVVVV", Price, 2),
                ("23IIIIIVVVVV", Price, 2),
                ("24IIIIIVVVVV", Price, 2),
                ("25IIIIIVVVVV", Price, 2),
                ("26IIIIIVVVVV", Weight, 3),
                ("27IIIIIVVVVV", Weight, 3),
                ("28IIIIIVVVVV", Weight, 3),
                ("29IIIIIVVVVV", Weight, 3),
            ],
        )),
        "none" => Some(Vec::new()),
        _ => None,
    }
}

/// What a scale label says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RcnReading {
    /// `fr`, `de` or `config`, and the layout's pattern.
    pub layout: String,
    pub measure: Measure,
    /// The value digits as printed.
    pub digits: String,
    pub decimals: u32,
    /// The value with its decimal point, e.g. `1.235` (kg) or `12.40` (price).
    pub value: String,
    /// The number the item is filed under in the replica: value and value check digit zeroed.
    pub item_gtin: Gtin14,
}

impl RcnReading {
    /// The value as an integer count of its last decimal place (`1.235` → 1235).
    pub fn units(&self) -> Option<u64> {
        self.digits.parse().ok()
    }
}

fn value_check(value: &[u8]) -> Option<u8> {
    match value.len() {
        4 => Some(four_digit_price_check(&value.try_into().ok()?)),
        5 => Some(five_digit_price_check(&value.try_into().ok()?)),
        _ => None,
    }
}

/// The reading of `gtin` by the first layout of its prefix; `None` when it is not a GTIN-13
/// restricted-circulation number or no layout covers its prefix. A wrong value check digit is
/// an error: the label was misprinted or misread, and charging it would be a guess.
pub fn read(
    layouts: &[RcnLayout],
    gtin: Gtin14,
) -> Option<Result<RcnReading, VariableMeasureError>> {
    let s = gtin.to_string();
    let d13 = s.strip_prefix('0')?;
    let layout = layouts
        .iter()
        .find(|l| d13.starts_with(l.prefix.as_str()))?;
    let digits: Vec<u8> = d13.bytes().map(|b| b.wrapping_sub(b'0')).collect();
    let value = digits.get(layout.value.clone())?;
    if let Some(at) = layout.check {
        let (expected, found) = (value_check(value)?, *digits.get(at)?);
        if expected != found {
            return Some(Err(VariableMeasureError {
                gtin: d13.to_string(),
                value: value.iter().map(|v| char::from(v + b'0')).collect(),
                expected,
                found,
            }));
        }
    }
    let mut item: Vec<u8> = digits.get(..12)?.to_vec();
    for slot in item.get_mut(layout.value.clone())? {
        *slot = 0;
    }
    if let Some(at) = layout.check {
        *item.get_mut(at)? = value_check(&vec![0; layout.value.len()])?;
    }
    let body: Vec<u8> = item.iter().map(|d| d + b'0').collect();
    let mut text = String::from_utf8(body.clone()).ok()?;
    text.push(char::from(check_digit(&body) + b'0'));
    let digits_text: String = value.iter().map(|v| char::from(v + b'0')).collect();
    Some(Ok(RcnReading {
        layout: format!("{}:{}", layout.source, layout.pattern),
        measure: layout.measure,
        value: crate::decode::gs1::with_decimal_point(&digits_text, layout.decimals as usize),
        digits: digits_text,
        decimals: layout.decimals,
        item_gtin: Gtin14::parse(&text).ok()?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gtin(s: &str) -> Gtin14 {
        Gtin14::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn with_check(body12: &str) -> Gtin14 {
        let cd = check_digit(body12.as_bytes()) + b'0';
        gtin(&format!("{body12}{}", char::from(cd)))
    }

    #[test]
    fn a_german_weight_label_reads_its_kilograms_and_the_item_it_weighs() {
        let de = region_layouts("de").unwrap_or_default();
        // 28 1234, value check digit 1 for 01500, value 01500 = 1.500 kg.
        let label = with_check("281234101500");
        let reading = read(&de, label).and_then(Result::ok);
        let Some(r) = reading else {
            panic!("no reading")
        };
        assert_eq!((r.measure, r.value.as_str()), (Measure::Weight, "1.500"));
        // Zeroed value, its check digit recomputed for 00000 (0), GTIN check digit recomputed.
        assert_eq!(r.item_gtin, with_check("281234000000"));
        let misprinted = with_check("281234201500");
        assert!(matches!(read(&de, misprinted), Some(Err(_))));
    }

    #[test]
    fn a_french_price_label_reads_the_price_to_pay() {
        let fr = region_layouts("fr").unwrap_or_default();
        let r = read(&fr, with_check("210004201249")).and_then(Result::ok);
        assert_eq!(
            r.map(|r| (r.measure, r.value, r.item_gtin)),
            Some((Measure::Price, "12.49".into(), with_check("210004200000")))
        );
        // Not a restricted-circulation prefix the layouts cover.
        assert!(read(&fr, gtin("4006381333931")).is_none());
        assert!(read(&fr, with_check("200004201249")).is_none());
    }

    #[test]
    fn a_pattern_that_cannot_be_read_is_refused_with_the_reason() {
        let bad = |p: &str, d| {
            RcnLayout::new("config", p, Measure::Price, d)
                .err()
                .map(|e| e.to_string())
        };
        assert!(bad("21IIIIIVVVV", 2).is_some_and(|e| e.contains("12 digits")));
        assert!(bad("41IIIIIVVVVV", 2).is_some_and(|e| e.contains("20 to 29")));
        assert!(bad("21IIIIVVVXVV", 2).is_some_and(|e| e.contains("'X'")));
        assert!(bad("21IIIVVIVVVV", 2).is_some_and(|e| e.contains("together")));
        assert!(bad("21IIIICVVVVVV".get(..12).unwrap_or_default(), 2).is_none());
        assert!(bad("21IIICVVVVVV", 2).is_some_and(|e| e.contains("4- or 5-digit")));
        assert!(bad("21IIIIIIIIVV", 3).is_some_and(|e| e.contains("decimals")));
    }
}
