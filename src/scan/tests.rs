//! The arithmetic of a scan's facts; the scale labels through the real lookup are in
//! `tests/scans.rs`.

use super::*;
use crate::decode::decode_barcode;

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
}

fn price(minor: i64) -> EffectivePrice {
    EffectivePrice {
        price_minor: minor,
        currency: "EUR".into(),
        kind: "base",
        promo_id: None,
        base_price_minor: None,
        valid_from_ms: 0,
        valid_to_ms: None,
    }
}

fn scan(code: &str, unit_price: Option<i64>, today: NaiveDate) -> ScanFacts {
    let decoded = decode_barcode(code).unwrap_or_else(|e| panic!("{code}: {e}"));
    let rules = ScanRules::default();
    let reading = decoded
        .gtin
        .and_then(|g| rcn::read(&rules.rcn_layouts, g))
        .and_then(Result::ok);
    facts(
        &decoded,
        reading.as_ref(),
        unit_price.map(price).as_ref(),
        &rules,
        today,
    )
}

#[test]
fn a_fresh_food_databar_gives_its_price_weight_and_expiry_against_today() {
    let f = scan(
        "(01)09506000134352(3103)001250(3922)1499(17)260310",
        Some(990),
        day(2026, 3, 15),
    );
    assert_eq!(f.net_weight_kg.as_deref(), Some("1.250"));
    assert_eq!(
        f.price_to_charge,
        Some(Charge {
            amount_minor: 1499,
            currency: "EUR".into(),
            source: "ai_392n"
        })
    );
    assert_eq!(f.expiry_date.as_deref(), Some("2026-03-10"));
    assert_eq!(f.expired, Some(true));
    let fresh = scan(
        "(01)09506000134352(3103)001250(3922)1499(17)260310",
        None,
        day(2026, 3, 10),
    );
    assert_eq!(
        fresh.expired,
        Some(false),
        "the expiry day itself is not past"
    );
    assert!(f.ais.iter().any(|a| a.ai == "3922"
        && a.value
            == TypedValue::Amount {
                value: "14.99".into(),
                currency: Some("EUR")
            }));
}

#[test]
fn an_iso_currency_price_keeps_its_own_currency_and_minor_unit() {
    let f = scan(
        "(01)09506000134352(3103)000500(3930)392500",
        None,
        day(2026, 1, 1),
    );
    assert_eq!(
        f.price_to_charge,
        Some(Charge {
            amount_minor: 500,
            currency: "JPY".into(),
            source: "ai_393n"
        })
    );
    // Three decimals in euros round half up to cents.
    let f = scan(
        "(01)09506000134352(3103)000500(3933)978012345",
        None,
        day(2026, 1, 1),
    );
    assert_eq!(f.price_to_charge.map(|c| c.amount_minor), Some(1235));
}

#[test]
fn a_variable_measure_item_without_a_price_is_charged_by_weight() {
    // GTIN-14 indicator 9: a variable-measure trade item; 0.755 kg at 12.90/kg = 9.7395 → 9.74.
    let code = "(01)99506000134355(3103)000755";
    let f = scan(code, Some(1290), day(2026, 1, 1));
    assert_eq!(
        f.price_to_charge.map(|c| (c.amount_minor, c.source)),
        Some((974, "net_weight_x_unit_price"))
    );
    assert_eq!(scan(code, None, day(2026, 1, 1)).price_to_charge, None);
}

#[test]
fn arithmetic_on_label_figures_is_checked() {
    assert_eq!(to_minor(1499, 2, 2), Some(1499));
    assert_eq!(to_minor(12345, 3, 2), Some(1235));
    assert_eq!(to_minor(12344, 3, 2), Some(1234));
    assert_eq!(to_minor(5, 0, 2), Some(500));
    assert_eq!(to_minor(i128::MAX, 0, 2), None);
    assert_eq!(times_unit_price(1235, 3, 2490), Some(3075));
    assert_eq!(times_unit_price(u64::MAX, 0, i64::MAX), None);
}

#[test]
fn the_best_before_date_and_serial_are_reported() {
    let f = scan(
        "(01)09506000134352(15)260300(21)SN-77(10)L42",
        None,
        day(2026, 3, 31),
    );
    assert_eq!(f.best_before.as_deref(), Some("2026-03-31"));
    assert_eq!(f.best_before_passed, Some(false));
    assert_eq!(f.serial.as_deref(), Some("SN-77"));
    assert_eq!(f.lot.as_deref(), Some("L42"));
    assert_eq!(f.today, "2026-03-31");
}
