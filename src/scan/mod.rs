//! What a scan means at a till, beyond the product it names: the decoded AIs with names and
//! typed values, whether the item is past its expiry or best-before date today, the serial and
//! lot, and the price to charge for a variable-measure item (GS1 AI 392n/393n, a scale label's
//! embedded price, or an embedded weight or count × the replica's unit price). Also the store's
//! rules for reading scans: restricted-circulation layouts and loyalty-card patterns
//! ([`ScanRules`], from `[scans]`).
//!
//! Pure functions over a decode, a product's price and a date: the lookup paths (API, CLI, the
//! read consumer) call them after their replica read.

pub mod cards;
pub mod rcn;

use chrono::NaiveDate;
use serde::Serialize;

use crate::decode::gtin::Gtin14;
use crate::decode::typed::{TypedAi, TypedValue, gs1_date, typed_elements};
use crate::decode::{BarcodeDecode, BarcodeKind, iso};
use crate::replica::lookup::EffectivePrice;

pub use cards::{CardMatch, CardPattern, ScannedCard};
pub use rcn::{Measure, RcnLayout, RcnReading};

/// The store's rules for reading scans (`[scans]`, reloadable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRules {
    /// `fr`, `de` or `none`: which built-in restricted-circulation layouts apply.
    pub rcn_region: String,
    /// Built-in layouts of the region, with the configured ones replacing them by prefix.
    pub rcn_layouts: Vec<RcnLayout>,
    /// The store's currency: AI 390n/392n and scale-label prices carry none of their own.
    pub currency: String,
    pub cards: Vec<CardPattern>,
}

impl Default for ScanRules {
    fn default() -> Self {
        ScanRules {
            rcn_region: "fr".into(),
            rcn_layouts: rcn::region_layouts("fr").unwrap_or_default(),
            currency: "EUR".into(),
            cards: Vec::new(),
        }
    }
}

/// An amount to charge, in the currency's minor unit (cents), and how it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Charge {
    pub amount_minor: i64,
    pub currency: String,
    /// `ai_392n`, `ai_393n`, `label_price`, `label_weight_x_unit_price`,
    /// `label_count_x_unit_price`, `net_weight_x_unit_price`.
    pub source: &'static str,
}

/// The `scan` object of a product answer and of a live scan. Fields that do not apply to a
/// scan are left out (a plain EAN-13 has only `kind`, `symbology`, `ais: []` and `today`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanFacts {
    pub kind: BarcodeKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbology: Option<&'static str>,
    pub ais: Vec<TypedAi>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// AI (17), as an ISO date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry_date: Option<String>,
    /// The expiry date is before today (the item must not be sold).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired: Option<bool>,
    /// AI (15), as an ISO date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_before_passed: Option<bool>,
    /// AI (310n) or a scale label's weight, in kg with its decimals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_weight_kg: Option<String>,
    /// A restricted-circulation number read with the store's layouts (a scale label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variable_measure: Option<RcnReading>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_to_charge: Option<Charge>,
    /// The store's date the dates above are judged against.
    pub today: String,
}

/// The GTIN to look the scan up by: a scale label's item number, else the scanned GTIN.
pub fn lookup_gtin(decoded: &BarcodeDecode, reading: Option<&RcnReading>) -> Option<Gtin14> {
    reading.map(|r| r.item_gtin).or(decoded.gtin)
}

fn ten_pow(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

/// `units` of `10^-decimals` as a whole number of minor units with `exponent` decimals, rounded
/// half up; `None` on overflow (a price no till could charge).
fn to_minor(units: i128, decimals: u32, exponent: u32) -> Option<i64> {
    let minor = if exponent >= decimals {
        units.checked_mul(ten_pow(exponent - decimals)?)?
    } else {
        let div = ten_pow(decimals - exponent)?;
        units.checked_add(div / 2)?.checked_div(div)?
    };
    i64::try_from(minor).ok()
}

/// `quantity` (with `decimals` decimals) × a unit price in minor units, rounded half up.
fn times_unit_price(quantity: u64, decimals: u32, unit_minor: i64) -> Option<i64> {
    let product = i128::from(quantity).checked_mul(i128::from(unit_minor))?;
    to_minor(product, decimals, 0)
}

fn amount_ai<'a>(ais: &'a [TypedAi], family: &str) -> Option<(&'a TypedAi, u32)> {
    ais.iter().find_map(|a| {
        let decimals = a.ai.strip_prefix(family)?.parse().ok()?;
        Some((a, decimals))
    })
}

fn charge(
    decoded: &BarcodeDecode,
    ais: &[TypedAi],
    reading: Option<&RcnReading>,
    price: Option<&EffectivePrice>,
    rules: &ScanRules,
) -> Option<Charge> {
    let local = price.map_or(rules.currency.as_str(), |p| p.currency.as_str());
    let unit_minor = price.map(|p| p.price_minor);
    if let Some((ai, decimals)) = amount_ai(ais, "393") {
        let currency = iso::iso4217_alpha(ai.raw.get(..3)?)?;
        let units: i128 = ai.raw.get(3..)?.parse().ok()?;
        return Some(Charge {
            amount_minor: to_minor(units, decimals, iso::currency_exponent(currency))?,
            currency: currency.to_string(),
            source: "ai_393n",
        });
    }
    if let Some((ai, decimals)) = amount_ai(ais, "392") {
        let units: i128 = ai.raw.parse().ok()?;
        return Some(Charge {
            amount_minor: to_minor(units, decimals, iso::currency_exponent(local))?,
            currency: local.to_string(),
            source: "ai_392n",
        });
    }
    if let Some(r) = reading {
        let units = r.units()?;
        let (amount_minor, source) = match r.measure {
            Measure::Price => (
                to_minor(i128::from(units), r.decimals, iso::currency_exponent(local))?,
                "label_price",
            ),
            Measure::Weight => (
                times_unit_price(units, r.decimals, unit_minor?)?,
                "label_weight_x_unit_price",
            ),
            Measure::Count => (
                times_unit_price(units, r.decimals, unit_minor?)?,
                "label_count_x_unit_price",
            ),
        };
        return Some(Charge {
            amount_minor,
            currency: local.to_string(),
            source,
        });
    }
    // A variable-measure trade item (GTIN-14 indicator 9, General Specifications §2.1.4) with
    // its net weight and no price on the label: priced per kg in the replica.
    let variable = decoded.gtin.is_some_and(|g| g.to_string().starts_with('9'));
    if let (true, Some((ai, decimals))) = (variable, amount_ai(ais, "310")) {
        return Some(Charge {
            amount_minor: times_unit_price(ai.raw.parse().ok()?, decimals, unit_minor?)?,
            currency: local.to_string(),
            source: "net_weight_x_unit_price",
        });
    }
    None
}

fn date_of(ais: &[TypedAi], ai: &str, today: NaiveDate) -> Option<(String, bool)> {
    let raw = &ais.iter().find(|a| a.ai == ai)?.raw;
    let date = gs1_date(raw, today)?;
    Some((date.format("%Y-%m-%d").to_string(), date < today))
}

/// The facts a till needs about one scan, the product's effective price (if it was found)
/// and the store's date.
pub fn facts(
    decoded: &BarcodeDecode,
    reading: Option<&RcnReading>,
    price: Option<&EffectivePrice>,
    rules: &ScanRules,
    today: NaiveDate,
) -> ScanFacts {
    let mut ais = typed_elements(&decoded.elements, today);
    // 390n/392n/395n amounts are in the store's currency.
    let local = price.map_or(rules.currency.as_str(), |p| p.currency.as_str());
    let local = iso::ISO4217
        .iter()
        .map(|(_, alpha)| *alpha)
        .find(|alpha| *alpha == local);
    for a in &mut ais {
        if let (Some(local), TypedValue::Amount { currency, .. }) = (local, &mut a.value) {
            currency.get_or_insert(local);
        }
    }
    let text = |ai: &str| ais.iter().find(|a| a.ai == ai).map(|a| a.raw.clone());
    let expiry = date_of(&ais, "17", today);
    let best_before = date_of(&ais, "15", today);
    let net_weight_kg = match (amount_ai(&ais, "310"), reading) {
        (Some((a, _)), _) => match &a.value {
            TypedValue::Measure { value, .. } => Some(value.clone()),
            _ => None,
        },
        (None, Some(r)) if r.measure == Measure::Weight => Some(r.value.clone()),
        _ => None,
    };
    ScanFacts {
        kind: decoded.kind,
        symbology: decoded.symbology.as_ref().map(|s| s.name),
        lot: text("10"),
        serial: text("21"),
        expiry_date: expiry.as_ref().map(|(d, _)| d.clone()),
        expired: expiry.map(|(_, passed)| passed),
        best_before: best_before.as_ref().map(|(d, _)| d.clone()),
        best_before_passed: best_before.map(|(_, passed)| passed),
        net_weight_kg,
        price_to_charge: charge(decoded, &ais, reading, price, rules),
        variable_measure: reading.cloned(),
        ais,
        today: today.format("%Y-%m-%d").to_string(),
    }
}

/// The store's calendar day, in the box's time zone.
pub fn today() -> NaiveDate {
    chrono::Local::now().date_naive()
}

#[cfg(test)]
mod tests;
