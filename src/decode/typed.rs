//! AI values as a till reads them: dates as ISO dates, measures with their unit and decimal
//! point, amounts with their currency, counts as numbers. What is a date comes from the
//! dictionary's linters (`yymmd0`, `yyyymmdd`, `hhmi`, …); what is a measure or an amount from
//! the AI ranges the GS1 General Specifications give them (310n–369n, 390n–395n), with units
//! by hand from the same tables, because the dictionary writes units only inside titles.

use chrono::{Datelike, NaiveDate};
use serde::Serialize;

use crate::decode::gs1::{self, Element};
use crate::decode::iso;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TypedValue {
    Text {
        value: String,
    },
    /// ISO 8601 date; GS1's day `00` ("end of month") is the month's last day.
    Date {
        date: String,
    },
    /// ISO 8601 local date and time (minutes, or hours only when the label says no more).
    DateTime {
        date_time: String,
    },
    DateRange {
        from: String,
        to: String,
    },
    /// A measure with its decimal point applied: `3103 001250` is 1.250 kg.
    Measure {
        value: String,
        unit: &'static str,
    },
    /// An amount with its decimal point applied; the currency when the AI carries one
    /// (391n, 393n), else the store's (390n, 392n, 395n), filled by the scan.
    Amount {
        value: String,
        currency: Option<&'static str>,
    },
    Percent {
        value: String,
    },
    Count {
        value: u64,
    },
}

/// One decoded AI with its name and typed value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypedAi {
    pub ai: String,
    pub title: &'static str,
    pub raw: String,
    #[serde(flatten)]
    pub value: TypedValue,
}

/// The unit of a measure AI family (first three digits), per GS1 General Specifications
/// §3.6: 310-316 metric trade measures, 320-329 and 340-369 imperial, 330-337 logistic.
fn unit(family: u32) -> Option<&'static str> {
    Some(match family {
        310 | 330 => "kg",
        311..=313 | 331..=333 => "m",
        314 | 334 => "m2",
        315 | 335 => "l",
        316 | 336 => "m3",
        337 => "kg/m2",
        320 | 340 => "lb",
        321 | 324 | 327 | 341 | 344 | 347 => "in",
        322 | 325 | 328 | 342 | 345 | 348 => "ft",
        323 | 326 | 329 | 343 | 346 | 349 => "yd",
        350 | 353 => "in2",
        351 | 354 => "ft2",
        352 | 355 => "yd2",
        356 => "oz_t",
        357 => "fl_oz",
        360 | 362 => "qt",
        361 | 363 => "gal",
        364 | 367 => "in3",
        365 | 368 => "ft3",
        366 | 369 => "yd3",
        _ => return None,
    })
}

/// A two-digit year in GS1's sliding window (General Specifications §7.12): within 50 years
/// ahead or 49 behind `today`.
pub fn full_year(yy: i32, today: NaiveDate) -> i32 {
    let current = today.year();
    let century = current - current.rem_euclid(100);
    let diff = yy - current.rem_euclid(100);
    if diff >= 51 {
        century - 100 + yy
    } else if diff <= -50 {
        century + 100 + yy
    } else {
        century + yy
    }
}

fn two(s: &str, at: usize) -> Option<u32> {
    s.get(at..at + 2)?.parse().ok()
}

/// `YYMMDD` (day `00`: last day of the month) as a date.
pub fn gs1_date(yymmdd: &str, today: NaiveDate) -> Option<NaiveDate> {
    let year = full_year(i32::try_from(two(yymmdd, 0)?).ok()?, today);
    let (month, day) = (two(yymmdd, 2)?, two(yymmdd, 4)?);
    if day == 0 {
        let next = if month == 12 {
            NaiveDate::from_ymd_opt(year + 1, 1, 1)
        } else {
            NaiveDate::from_ymd_opt(year, month + 1, 1)
        };
        return next?.pred_opt();
    }
    NaiveDate::from_ymd_opt(year, month, day)
}

fn yyyymmdd(s: &str) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(s.get(..4)?.parse().ok()?, two(s, 4)?, two(s, 6)?)
}

/// The date and time AIs, read through their dictionary components.
fn date_value(ai: &str, value: &str, today: NaiveDate) -> Option<TypedValue> {
    let entry = gs1::lookup(ai)?;
    let mut offset = 0;
    let mut dates = Vec::new();
    let mut time = String::new();
    for comp in &entry.components {
        let part = value.get(offset..(offset + comp.max).min(value.len()))?;
        if part.is_empty() {
            break;
        }
        offset += part.len();
        for linter in &comp.linters {
            match linter.name {
                "yymmdd" | "yymmd0" => dates.push(gs1_date(part, today)?),
                "yyyymmdd" | "yyyymmd0" => dates.push(yyyymmdd(part)?),
                "yymmddhh" => {
                    dates.push(gs1_date(part.get(..6)?, today)?);
                    time.push_str(part.get(6..)?);
                }
                "hhmi" | "hh" | "mi" | "mmoptss" | "ss" => time.push_str(part),
                _ => {}
            }
        }
    }
    let first = dates.first()?.format("%Y-%m-%d").to_string();
    Some(match (dates.get(1), time.len()) {
        (Some(to), _) => TypedValue::DateRange {
            from: first,
            to: to.format("%Y-%m-%d").to_string(),
        },
        (None, 0) => TypedValue::Date { date: first },
        (None, _) => {
            let pairs: Vec<&str> = (0..time.len() / 2)
                .filter_map(|i| time.get(i * 2..i * 2 + 2))
                .collect();
            TypedValue::DateTime {
                date_time: format!("{first}T{}", pairs.join(":")),
            }
        }
    })
}

/// The typed value of one AI. Anything not a date, measure, amount or count is text.
pub fn typed(ai: &str, value: &str, today: NaiveDate) -> TypedValue {
    let text = || TypedValue::Text {
        value: value.to_string(),
    };
    if let Some(date) = date_value(ai, value, today) {
        return date;
    }
    let family: Option<u32> = ai
        .get(..3)
        .and_then(|f| f.parse().ok())
        .filter(|_| ai.len() == 4);
    match family {
        Some(f @ 310..=369) => match (unit(f), gs1::decimal_value(ai, value)) {
            (Some(unit), Some(value)) => TypedValue::Measure { value, unit },
            _ => text(),
        },
        Some(390 | 392 | 395) => {
            gs1::decimal_value(ai, value).map_or_else(text, |value| TypedValue::Amount {
                value,
                currency: None,
            })
        }
        Some(391 | 393) => match (
            value.get(..3).and_then(iso::iso4217_alpha),
            gs1::decimal_value(ai, value),
        ) {
            (Some(currency), Some(value)) => TypedValue::Amount {
                value,
                currency: Some(currency),
            },
            _ => text(),
        },
        Some(394) => {
            gs1::decimal_value(ai, value).map_or_else(text, |value| TypedValue::Percent { value })
        }
        _ => match ai {
            "30" | "37" => value
                .parse()
                .map_or_else(|_| text(), |value| TypedValue::Count { value }),
            _ => text(),
        },
    }
}

/// Every element of a message, typed.
pub fn typed_elements(elements: &[Element], today: NaiveDate) -> Vec<TypedAi> {
    elements
        .iter()
        .map(|e| TypedAi {
            ai: e.ai.clone(),
            title: gs1::title(&e.ai),
            raw: e.value.clone(),
            value: typed(&e.ai, &e.value, today),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, 15).unwrap_or_default()
    }

    fn t(ai: &str, value: &str) -> TypedValue {
        typed(ai, value, today())
    }

    #[test]
    fn dates_are_iso_and_day_zero_is_the_last_day_of_the_month() {
        assert_eq!(
            t("17", "260131"),
            TypedValue::Date {
                date: "2026-01-31".into()
            }
        );
        assert_eq!(
            t("15", "280200"),
            TypedValue::Date {
                date: "2028-02-29".into()
            }
        );
        assert_eq!(
            t("7003", "2601311230"),
            TypedValue::DateTime {
                date_time: "2026-01-31T12:30".into()
            }
        );
        assert_eq!(
            t("7007", "260101260131"),
            TypedValue::DateRange {
                from: "2026-01-01".into(),
                to: "2026-01-31".into()
            }
        );
        assert_eq!(
            t("7250", "19840229"),
            TypedValue::Date {
                date: "1984-02-29".into()
            }
        );
    }

    #[test]
    fn two_digit_years_follow_gs1_s_sliding_window() {
        assert_eq!(full_year(76, today()), 2076);
        assert_eq!(full_year(77, today()), 1977);
        assert_eq!(
            full_year(0, NaiveDate::from_ymd_opt(2090, 1, 1).unwrap_or_default()),
            2100
        );
    }

    #[test]
    fn measures_and_amounts_carry_their_unit_decimals_and_currency() {
        assert_eq!(
            t("3103", "001250"),
            TypedValue::Measure {
                value: "1.250".into(),
                unit: "kg"
            }
        );
        assert_eq!(
            t("3922", "499"),
            TypedValue::Amount {
                value: "4.99".into(),
                currency: None
            }
        );
        assert_eq!(
            t("3932", "978499"),
            TypedValue::Amount {
                value: "4.99".into(),
                currency: Some("EUR")
            }
        );
        assert_eq!(t("37", "12"), TypedValue::Count { value: 12 });
        assert_eq!(
            t("10", "LOT7"),
            TypedValue::Text {
                value: "LOT7".into()
            }
        );
    }
}
