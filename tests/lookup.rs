#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! Lookups as a till does them: `relais lookup barcode|card` on snapshots imported with the
//! real binary, plus exact-instant price windows through the library.

mod common;

use common::{Settings, Store, base_price, product, reservation, stock};
use serde_json::{Value, json};

const EAN8: &str = "96385074";
const EAN8_AS_14: &str = "00000096385074";
const UPCA: &str = "036000291452";
const UPCA_AS_14: &str = "00036000291452";
const EAN13: &str = "4006381333931";
const EAN13_AS_14: &str = "04006381333931";
const GTIN14_CASE: &str = "10012345678902";

/// A store where every product-side stream is loaded, so answers are fresh.
fn fresh_store() -> Store {
    let store = Store::new();
    store.import_ok(
        "products",
        "products.ndjson",
        &[
            product(EAN8_AS_14, "SKU-EAN8", "Small pack"),
            product(UPCA_AS_14, "SKU-UPCA", "US import"),
            product(EAN13_AS_14, "SKU-EAN13", "Local item"),
            product(GTIN14_CASE, "SKU-CASE", "Case of 12"),
        ],
    );
    store.import_ok(
        "prices",
        "prices.ndjson",
        &[
            base_price("SKU-EAN8", 199, "2020-01-01T00:00:00Z"),
            base_price("SKU-UPCA", 450, "2020-01-01T00:00:00Z"),
        ],
    );
    store.import_ok(
        "stock",
        "stock.ndjson",
        &[stock("SKU-EAN8", 12), stock("SKU-UPCA", 3)],
    );
    store.import_ok(
        "reservations",
        "reservations.ndjson",
        &[reservation("ORDER-1", "SKU-EAN8", 2)],
    );
    store
}

#[test]
fn the_same_product_is_found_by_its_ean8_and_its_gtin14_form() {
    let store = fresh_store();
    for code in [EAN8, EAN8_AS_14] {
        let (status, answer) = store.lookup_barcode(code);
        assert_eq!(status, 0, "{code}: {answer}");
        assert_eq!(answer["outcome"], "found", "{code}: {answer}");
        assert_eq!(answer["sku"], "SKU-EAN8", "{code}: {answer}");
        assert_eq!(answer["gtin"], EAN8_AS_14, "{code}: {answer}");
        assert_eq!(answer["freshness"]["stale"], false, "{code}: {answer}");
        assert_eq!(answer["price"]["price_minor"], 199, "{code}: {answer}");
        assert_eq!(answer["stock"]["on_hand"], 12, "{code}: {answer}");
        assert_eq!(answer["stock"]["reserved"], 2, "{code}: {answer}");
        assert_eq!(answer["stock"]["available"], 10, "{code}: {answer}");
    }
}

#[test]
fn the_same_product_is_found_by_its_upca_ean13_and_gtin14_forms() {
    let store = fresh_store();
    // UPC-A 036000291452 = EAN-13 0036000291452 = GTIN-14 00036000291452.
    for code in [UPCA, "0036000291452", UPCA_AS_14] {
        let (status, answer) = store.lookup_barcode(code);
        assert_eq!(status, 0, "{code}: {answer}");
        assert_eq!(answer["sku"], "SKU-UPCA", "{code}: {answer}");
    }
    for code in [EAN13, EAN13_AS_14] {
        let (status, answer) = store.lookup_barcode(code);
        assert_eq!(status, 0, "{code}: {answer}");
        assert_eq!(answer["sku"], "SKU-EAN13", "{code}: {answer}");
        assert!(answer["price"].is_null(), "no price was imported: {answer}");
    }
    let (status, answer) = store.lookup_barcode(GTIN14_CASE);
    assert_eq!(status, 0, "{answer}");
    assert_eq!(answer["sku"], "SKU-CASE");
}

#[test]
fn a_barcode_with_a_wrong_check_digit_exits_65_and_names_the_check_digit() {
    let store = fresh_store();
    for (code, expected) in [("96385075", 4), ("036000291453", 2), ("4006381333932", 1)] {
        let (status, answer) = store.lookup_barcode(code);
        assert_eq!(status, 65, "{code}: {answer}");
        assert_eq!(answer["outcome"], "invalid", "{code}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains("check digit"), "{code}: {error}");
        assert!(
            error.contains(&format!("give {expected}")),
            "{code}: {error}"
        );
    }
}

#[test]
fn a_barcode_of_the_wrong_length_or_with_letters_exits_65() {
    let store = fresh_store();
    for code in ["1234567", "96385O74", "123456789012345"] {
        let (status, answer) = store.lookup_barcode(code);
        assert_eq!(status, 65, "{code}: {answer}");
    }
}

#[test]
fn a_valid_barcode_absent_from_the_replica_exits_4() {
    let store = fresh_store();
    let absent = common::gtin14(7_777_777_777);
    let (status, answer) = store.lookup_barcode(&absent);
    assert_eq!(status, 4, "{answer}");
    assert_eq!(answer["outcome"], "not_found", "{answer}");
    assert_eq!(answer["freshness"]["stale"], false, "{answer}");
}

#[test]
fn a_product_found_while_a_stream_was_never_loaded_is_stale_and_exits_3() {
    let store = Store::new();
    store.import_ok(
        "products",
        "products.ndjson",
        &[product(EAN8_AS_14, "SKU-EAN8", "Small pack")],
    );
    let (status, answer) = store.lookup_barcode(EAN8);
    assert_eq!(status, 3, "{answer}");
    assert_eq!(answer["outcome"], "found", "{answer}");
    assert_eq!(answer["freshness"]["stale"], true, "{answer}");
    let streams = answer["freshness"]["streams"].as_array().expect("streams");
    let prices = streams
        .iter()
        .find(|s| s["stream"] == "prices")
        .expect("prices stream");
    assert_eq!(prices["stale"], true, "{answer}");
    assert!(
        prices["age_s"].is_null(),
        "never loaded has no age: {answer}"
    );
    let products = streams
        .iter()
        .find(|s| s["stream"] == "products")
        .expect("products");
    assert_eq!(products["stale"], false, "{answer}");
    assert_eq!(products["version"], 1, "{answer}");
}

#[test]
fn a_product_answer_is_fresh_with_the_shortest_stale_after_right_after_import() {
    let store = Store::with(Settings {
        replica: "stale_after = \"1m\"".into(),
        ..Settings::default()
    });
    for (stream, line) in [
        ("products", product(EAN8_AS_14, "SKU-EAN8", "Small pack")),
        (
            "prices",
            base_price("SKU-EAN8", 199, "2020-01-01T00:00:00Z"),
        ),
        ("stock", stock("SKU-EAN8", 1)),
        ("reservations", reservation("O-1", "SKU-EAN8", 1)),
    ] {
        store.import_ok(stream, &format!("{stream}.ndjson"), &[line]);
    }
    let (status, answer) = store.lookup_barcode(EAN8);
    assert_eq!(status, 0, "{answer}");
    assert_eq!(answer["freshness"]["stale"], false, "{answer}");
}

// ---- price windows at exact instants ----

fn ms(rfc3339: &str) -> i64 {
    humantime::parse_rfc3339(rfc3339)
        .expect("time")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

const BASE_FROM: &str = "2030-01-01T00:00:00Z";
const BASE_CHANGE: &str = "2030-06-01T00:00:00.500Z";
const PROMO_FROM: &str = "2030-03-01T08:00:00.250Z";
const PROMO_TO: &str = "2030-03-08T08:00:00.250Z";

fn price_store() -> (Store, rusqlite::Connection) {
    let store = Store::new();
    store.import_ok(
        "products",
        "products.ndjson",
        &[product(EAN8_AS_14, "SKU-P", "Priced")],
    );
    store.import_ok(
        "prices",
        "prices.ndjson",
        &[
            json!({"sku": "SKU-P", "price_minor": 1000, "currency": "EUR",
                   "valid_from": BASE_FROM, "valid_to": BASE_CHANGE}),
            json!({"sku": "SKU-P", "price_minor": 1100, "currency": "EUR",
                   "valid_from": BASE_CHANGE}),
            json!({"sku": "SKU-P", "kind": "promo", "promo_id": "SPRING", "price_minor": 800,
                   "currency": "EUR", "valid_from": PROMO_FROM, "valid_to": PROMO_TO}),
            json!({"sku": "SKU-P", "kind": "promo", "promo_id": "DEARER", "price_minor": 1200,
                   "currency": "EUR", "valid_from": PROMO_FROM, "valid_to": PROMO_TO}),
        ],
    );
    let conn = relais::storage::reader_pool_connection(&store.replica_db(), &store.outbox_db())
        .expect("lookup connection");
    (store, conn)
}

fn price_at(
    conn: &rusqlite::Connection,
    now_ms: i64,
) -> Option<(i64, String, Option<String>, Option<i64>)> {
    relais::replica::lookup::effective_price(conn, "SKU-P", now_ms)
        .expect("effective_price")
        .map(|p| {
            (
                p.price_minor,
                p.kind.to_string(),
                p.promo_id,
                p.base_price_minor,
            )
        })
}

#[test]
fn no_price_applies_before_the_first_base_price_starts() {
    let (_store, conn) = price_store();
    assert_eq!(price_at(&conn, ms(BASE_FROM) - 1), None);
    assert_eq!(price_at(&conn, ms(BASE_FROM)).map(|p| p.0), Some(1000));
}

#[test]
fn a_promo_applies_from_exactly_valid_from_and_no_longer_at_exactly_valid_to() {
    let (_store, conn) = price_store();
    let from = ms(PROMO_FROM);
    let to = ms(PROMO_TO);
    assert_eq!(
        price_at(&conn, from - 1).map(|p| p.0),
        Some(1000),
        "before the promo"
    );
    let at_start = price_at(&conn, from);
    assert_eq!(
        at_start,
        Some((800, "promo".into(), Some("SPRING".into()), Some(1000))),
        "the cheapest promo, with the base as `was`"
    );
    assert_eq!(
        price_at(&conn, to - 1).map(|p| p.0),
        Some(800),
        "last instant of the promo"
    );
    assert_eq!(
        price_at(&conn, to),
        Some((1000, "base".into(), None, None)),
        "at exactly valid_to the promo no longer applies"
    );
}

#[test]
fn a_new_base_price_replaces_the_old_one_at_exactly_its_valid_from() {
    let (_store, conn) = price_store();
    let change = ms(BASE_CHANGE);
    assert_eq!(price_at(&conn, change - 1).map(|p| p.0), Some(1000));
    assert_eq!(price_at(&conn, change).map(|p| p.0), Some(1100));
    assert_eq!(
        price_at(&conn, change + 86_400_000).map(|p| p.0),
        Some(1100)
    );
}

#[test]
fn a_price_window_whose_end_is_not_after_its_start_is_refused_at_import() {
    let store = Store::new();
    let out = store.import(
        "prices",
        "bad-window.ndjson",
        &[json!({"sku": "S", "price_minor": 1, "currency": "EUR",
                 "valid_from": PROMO_FROM, "valid_to": PROMO_FROM})],
        None,
    );
    assert!(!out.status.success(), "{}", common::describe(&out));
    assert!(
        common::stderr(&out).contains("line 1"),
        "{}",
        common::describe(&out)
    );
}

// ---- cards ----

fn token(id: &str) -> String {
    let hasher = relais::cards::CardHasher::new(&common::CARD_KEY);
    let normalized = relais::cards::normalize_card_id(id).expect("card id");
    hasher.token(&normalized).to_hex()
}

fn card_store() -> Store {
    let store = Store::new();
    store.import_ok(
        "customers",
        "customers.ndjson",
        &[
            json!({"customer_id": "C-1", "display_name": "Ada L.", "tier": "gold",
                   "loyalty_balance": 120,
                   "card_tokens": [token("04A22B917C80"), token("6280001234567890")]}),
            json!({"customer_id": "C-2", "display_name": "Bob M.",
                   "card_tokens": [token("04A22B917C81")]}),
        ],
    );
    store
}

fn assert_customer(store: &Store, id: &str, expected: &str) -> Value {
    let (status, answer) = store.lookup_card(id);
    assert_eq!(status, 0, "{id}: {answer}");
    assert_eq!(answer["outcome"], "found", "{id}: {answer}");
    assert_eq!(answer["customer_id"], expected, "{id}: {answer}");
    answer
}

#[test]
fn a_card_uid_with_separators_and_without_finds_the_same_customer() {
    let store = card_store();
    for id in [
        "04:A2:2B:91:7C:80",
        "04a22b917c80",
        "04-a2-2b-91-7c-80",
        " 04 A2 2B 91 7C 80 ",
    ] {
        let answer = assert_customer(&store, id, "C-1");
        assert_eq!(answer["loyalty"]["balance"], 120, "{answer}");
        assert_eq!(answer["tier"], "gold", "{answer}");
    }
    assert_customer(&store, "04:a2:2b:91:7c:81", "C-2");
}

#[test]
fn a_loyalty_card_number_finds_the_customer_that_owns_it() {
    let store = card_store();
    assert_customer(&store, "6280001234567890", "C-1");
    assert_customer(&store, "6280 0012 3456 7890", "C-1");
}

#[test]
fn an_unknown_card_exits_4_and_an_invalid_card_identifier_exits_65() {
    let store = card_store();
    let (status, answer) = store.lookup_card("04:A2:2B:91:7C:82");
    assert_eq!(status, 4, "{answer}");
    assert_eq!(answer["outcome"], "not_found", "{answer}");
    let (status, answer) = store.lookup_card("04/A2/2B");
    assert_eq!(status, 65, "{answer}");
    assert_eq!(answer["outcome"], "invalid", "{answer}");
}

#[test]
fn a_card_lookup_before_customers_were_ever_loaded_is_not_found_and_stale() {
    let store = Store::new();
    let (status, answer) = store.lookup_card("04A22B917C80");
    assert_eq!(status, 4, "{answer}");
    assert_eq!(answer["freshness"]["stale"], true, "{answer}");
}

#[test]
fn a_card_absent_from_a_new_customers_snapshot_is_no_longer_found() {
    let store = card_store();
    assert_customer(&store, "04A22B917C81", "C-2");
    store.import_ok(
        "customers",
        "customers-v2.ndjson",
        &[json!({"customer_id": "C-1", "display_name": "Ada L.",
                 "card_tokens": [token("04A22B917C80")]})],
    );
    let (status, answer) = store.lookup_card("04A22B917C81");
    assert_eq!(status, 4, "C-2 and its card were removed: {answer}");
    assert_customer(&store, "04A22B917C80", "C-1");
    let (status, answer) = store.lookup_card("6280001234567890");
    assert_eq!(status, 4, "a card removed from C-1 still matches: {answer}");
}
