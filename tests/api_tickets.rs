#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! A till's real ticket, through the real `relais run`: baskets of several items (the same item
//! twice included), returns, hand-overs and counts of several lines, tills at once, retries
//! after a timeout, keys scoped to their till, and numbers out of range refused without
//! harming anything.

mod common;

use common::{Agent, Store, gtin14, product, stock};
use serde_json::{Value, json};
use std::time::Duration;

/// Tokens of the store's tills: till-N's is `TOKENS[N-1]`.
const TOKENS: [&str; 9] = [
    "till-1-token-0123456789abcdefghijklmn",
    "till-2-token-0123456789abcdefghijklmn",
    "till-3-token-0123456789abcdefghijklmn",
    "till-4-token-0123456789abcdefghijklmn",
    "till-5-token-0123456789abcdefghijklmn",
    "till-6-token-0123456789abcdefghijklmn",
    "till-7-token-0123456789abcdefghijklmn",
    "till-8-token-0123456789abcdefghijklmn",
    "till-9-token-0123456789abcdefghijklmn",
];

/// Products of the store: (GTIN body, SKU, stock).
const ITEMS: [(u64, &str, i64); 5] = [
    (300_100_000_000, "SKU-MILK", 100),
    (300_100_000_008, "SKU-BREAD", 50),
    (300_100_000_016, "SKU-EGGS", 40),
    (300_100_000_024, "SKU-JAM", 30),
    (300_100_000_032, "SKU-TEA", 20),
];

fn gtin(i: usize) -> String {
    gtin14(ITEMS[i].0)
}

/// A store with five products, a two-line click-and-collect order (PU-2L: 2 milk + 3 bread,
/// picked) and nine tills with their own tokens.
fn store() -> (Store, Agent) {
    let store = Store::new();
    let lines: String = TOKENS
        .iter()
        .enumerate()
        .map(|(i, t)| format!("till-{} {t}\n", i + 1))
        .collect();
    store.protect_api(&lines, "127.0.0.1:0", "rate_limit_per_client = 0\n");
    let products: Vec<Value> = ITEMS
        .iter()
        .map(|(body, sku, _)| product(&gtin14(*body), sku, sku))
        .collect();
    store.import_ok("products", "products.ndjson", &products);
    let stocks: Vec<Value> = ITEMS.iter().map(|(_, sku, n)| stock(sku, *n)).collect();
    store.import_ok("stock", "stock.ndjson", &stocks);
    store.import_ok(
        "reservations",
        "reservations.ndjson",
        &[
            json!({"order_id": "WEB-2L", "line": 1, "sku": "SKU-MILK", "qty": 2,
                   "status": "picked", "pickup_code": "PU-2L"}),
            json!({"order_id": "WEB-2L", "line": 2, "sku": "SKU-BREAD", "qty": 3,
                   "status": "picked", "pickup_code": "PU-2L"}),
            // Not ready: its jam is not picked yet.
            json!({"order_id": "WEB-NR", "line": 1, "sku": "SKU-EGGS", "qty": 1,
                   "status": "picked", "pickup_code": "PU-NR"}),
            json!({"order_id": "WEB-NR", "line": 2, "sku": "SKU-JAM", "qty": 1,
                   "status": "open", "pickup_code": "PU-NR"}),
            // Its tea was already collected at another store; the eggs wait here.
            json!({"order_id": "WEB-MIX", "line": 1, "sku": "SKU-TEA", "qty": 1,
                   "status": "collected", "pickup_code": "PU-MIX"}),
            json!({"order_id": "WEB-MIX", "line": 2, "sku": "SKU-EGGS", "qty": 2,
                   "status": "picked", "pickup_code": "PU-MIX"}),
        ],
    );
    let card_token = relais::cards::CardHasher::new(&common::CARD_KEY)
        .token(&relais::cards::normalize_card_id(CARD).unwrap())
        .to_hex();
    store.import_ok(
        "customers",
        "customers.ndjson",
        &[
            json!({"customer_id": "C-77", "display_name": "Ada Q.", "loyalty_balance": 120,
                   "card_tokens": [card_token]}),
        ],
    );
    let agent = store.start().with_token(TOKENS[0]);
    (store, agent)
}

/// The loyalty card of the store's one known customer, C-77, as a scanner reads it.
const CARD: &str = "04A22B917C80";

/// POST as till `till` (1-based).
fn post_as(agent: &Agent, till: usize, path: &str, body: &Value) -> (u16, Value) {
    let r = agent
        .http
        .post(agent.url(path))
        .bearer_auth(TOKENS[till - 1])
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .expect("POST");
    let status = r.status().as_u16();
    let text = r.text().expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn stock_of(agent: &Agent, i: usize) -> (i64, i64) {
    let (status, body) = agent.get_json(&format!("/v1/products/{}", gtin(i)));
    assert_eq!(status, 200, "{body}");
    (
        body["stock"]["on_hand"].as_i64().unwrap(),
        body["stock"]["available"].as_i64().unwrap(),
    )
}

#[test]
fn a_basket_of_two_known_items_answers_201_and_both_items_stock_moves() {
    let (_store, agent) = store();
    // The issue's own ticket: one item by EAN-13, one by a GTIN-14 with its leading zero.
    let (status, body) = agent.post_json(
        "/v1/sales",
        &json!({"client_key": "t1/r1", "receipt": "R1", "currency": "EUR", "lines": [
            {"code": gtin(0)[1..].to_string(), "qty": 1, "unit_price_minor": 129},
            {"code": gtin(1), "qty": 2, "unit_price_minor": 250}]}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["lines"][0]["sku"], "SKU-MILK");
    assert_eq!(body["lines"][1]["sku"], "SKU-BREAD");
    assert_eq!(body["lines"][1]["stock_applied"], true);
    assert_eq!(body["total_minor"], 129 + 2 * 250);
    assert_eq!(stock_of(&agent, 0).0, 99);
    assert_eq!(stock_of(&agent, 1).0, 48);
}

#[test]
fn the_same_item_twice_in_one_ticket_is_two_movements_counted_once_each() {
    let (store, agent) = store();
    let (status, body) = agent.post_json(
        "/v1/sales",
        &json!({"client_key": "t1/r2", "lines": [
            {"sku": "SKU-EGGS", "qty": 2}, {"code": gtin(3), "qty": 1},
            {"sku": "SKU-EGGS", "qty": 3}, {"code": gtin14(9_999_999_999), "qty": 1}]}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["lines"][3]["stock_applied"], false, "unknown item");
    assert_eq!(
        body["total_minor"],
        Value::Null,
        "not every line has a price"
    );
    assert_eq!(stock_of(&agent, 2).0, 35);
    assert_eq!(stock_of(&agent, 3).0, 29);
    // After a restart too (the movements are filed by SKU when the writer idles).
    drop(agent);
    let agent = store.start().with_token(TOKENS[0]);
    assert_eq!(stock_of(&agent, 2).0, 35);
    let events = store.outbox_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "sale.recorded");
    assert_eq!(
        events[0]["payload"]["lines"].as_array().map(Vec::len),
        Some(4)
    );
    assert_eq!(events[0]["payload"]["by"], "till-1");
}

#[test]
fn a_multi_line_return_hand_over_and_count_each_move_every_line() {
    let (_store, agent) = store();
    let (status, body) = agent.post_json(
        "/v1/returns",
        &json!({"client_key": "ret-1", "origin": {"channel": "web", "order_id": "WEB-5"},
                "lines": [{"sku": "SKU-JAM", "qty": 1}, {"sku": "SKU-TEA", "qty": 2}]}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!((stock_of(&agent, 3).0, stock_of(&agent, 4).0), (31, 22));

    let before = (stock_of(&agent, 0), stock_of(&agent, 1));
    assert_eq!(before, ((100, 98), (50, 47)), "2 milk and 3 bread reserved");
    let (status, body) =
        agent.post_json("/v1/pickups/PU-2L/collect", &json!({"client_key": "pu-1"}));
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (stock_of(&agent, 0), stock_of(&agent, 1)),
        ((98, 98), (47, 47)),
        "on-hand down by every line; available unchanged"
    );

    let (status, body) = agent.post_json(
        "/v1/cycle-counts",
        &json!({"client_key": "count-1", "counts": [
            {"sku": "SKU-JAM", "counted": 25}, {"code": gtin(4), "counted": 21},
            {"sku": "SKU-EGGS", "counted": 40}]}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["adjustments"], 2, "{body}");
    assert_eq!(body["items"][0]["expected"], 31);
    assert_eq!(body["items"][0]["delta"], -6);
    assert_eq!(body["as_of_seq"], body["seq"].as_u64().unwrap() - 1);
    assert_eq!(
        (
            stock_of(&agent, 3).0,
            stock_of(&agent, 4).0,
            stock_of(&agent, 2).0
        ),
        (25, 21, 40)
    );
}

#[test]
fn one_tills_baskets_never_fail_the_other_tills_sales() {
    let (_store, agent) = store();
    let per_till = 40;
    let statuses: Vec<(usize, u16, Value)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (1..=9)
            .map(|till| {
                let agent = &agent;
                scope.spawn(move || {
                    (0..per_till)
                        .map(|i| {
                            // Till 1 sells three-line baskets, the others one item at a time.
                            let lines = if till == 1 {
                                json!([{"sku": "SKU-MILK", "qty": 1}, {"sku": "SKU-BREAD", "qty": 1},
                                       {"sku": "SKU-MILK", "qty": 1}])
                            } else {
                                json!([{"sku": "SKU-TEA", "qty": 1}])
                            };
                            let (status, body) = post_as(
                                agent,
                                till,
                                "/v1/sales",
                                &json!({"client_key": format!("r-{i}"), "lines": lines}),
                            );
                            (till, status, body)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    let failed: Vec<_> = statuses.iter().filter(|(_, s, _)| *s != 201).collect();
    assert!(
        failed.is_empty(),
        "{} refused, first: {:?}",
        failed.len(),
        failed.first()
    );
    // Every till used the same key strings: each till's keys are its own.
    assert_eq!(stock_of(&agent, 0).0, 100 - 2 * per_till as i64);
    assert_eq!(stock_of(&agent, 1).0, 50 - per_till as i64);
    assert_eq!(stock_of(&agent, 4).0, 20 - 8 * per_till as i64);
}

#[test]
fn a_ticket_retried_after_a_client_timeout_is_recorded_once() {
    let (_store, agent) = store();
    let ticket = json!({"client_key": "t3/r9", "lines": [
        {"sku": "SKU-MILK", "qty": 2}, {"sku": "SKU-JAM", "qty": 1}]});
    let impatient = reqwest::blocking::Client::builder()
        .timeout(Duration::from_micros(200))
        .build()
        .unwrap();
    // The till gives up before the answer (or even before sending); the agent may or may not
    // have recorded the ticket.
    let _ = impatient
        .post(agent.url("/v1/sales"))
        .bearer_auth(TOKENS[2])
        .header("content-type", "application/json")
        .body(ticket.to_string())
        .send();
    let (status, first) = post_as(&agent, 3, "/v1/sales", &ticket);
    assert!(status == 201 || status == 200, "{status} {first}");
    let (status, again) = post_as(&agent, 3, "/v1/sales", &ticket);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["replayed"], true);
    assert_eq!(again["seq"], first["seq"]);
    assert_eq!(again["lines"], first["lines"]);
    assert_eq!(stock_of(&agent, 0).0, 98, "the ticket counted once");
    assert_eq!(stock_of(&agent, 3).0, 29);
}

#[test]
fn a_till_can_neither_replay_nor_suppress_another_tills_ticket_by_using_its_key() {
    let (_store, agent) = store();
    let ticket = json!({"client_key": "till-4/r-100", "lines": [{"sku": "SKU-MILK", "qty": 1}]});
    // Till 5 uses till 4's predictable key first, for a sale of its own.
    let (status, intruder) = post_as(
        &agent,
        5,
        "/v1/sales",
        &json!({
        "client_key": "till-4/r-100", "lines": [{"sku": "SKU-TEA", "qty": 1}]}),
    );
    assert_eq!(status, 201, "{intruder}");
    let (status, own) = post_as(&agent, 4, "/v1/sales", &ticket);
    assert_eq!(
        status, 201,
        "till 4's sale is recorded, not suppressed: {own}"
    );
    assert_eq!(
        own["lines"][0]["sku"], "SKU-MILK",
        "and answered with its own lines"
    );
    assert_ne!(own["seq"], intruder["seq"]);
    // The same key on another route is another fact.
    let (status, ret) = post_as(
        &agent,
        4,
        "/v1/returns",
        &json!({
        "client_key": "till-4/r-100", "lines": [{"sku": "SKU-MILK", "qty": 1}]}),
    );
    assert_eq!(status, 201, "{ret}");
    assert_eq!(stock_of(&agent, 0).0, 100);
    assert_eq!(stock_of(&agent, 4).0, 19);
}

#[test]
fn a_key_reused_for_a_different_ticket_is_refused_with_422_and_records_nothing() {
    let (store, agent) = store();
    let first = json!({"client_key": "t1/r5", "lines": [{"sku": "SKU-MILK", "qty": 1}]});
    let (status, _) = agent.post_json("/v1/sales", &first);
    assert_eq!(status, 201);
    let (status, body) = agent.post_json(
        "/v1/sales",
        &json!({"client_key": "t1/r5", "lines": [{"sku": "SKU-MILK", "qty": 1},
                                                  {"sku": "SKU-BREAD", "qty": 1}]}),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    assert_eq!(body["error"]["field"], "client_key");
    // The key may also come as a header: the same ticket, so a retry.
    let r = agent
        .request(reqwest::Method::POST, "/v1/sales")
        .header("content-type", "application/json")
        .header("idempotency-key", "t1/r5")
        .body(json!({"lines": [{"sku": "SKU-MILK", "qty": 1}]}).to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!((stock_of(&agent, 0).0, stock_of(&agent, 1).0), (99, 50));
    assert_eq!(store.outbox_stats()["store_fact"]["depth"], 1);
}

#[test]
fn numbers_out_of_their_range_are_refused_naming_the_field_and_every_item_stays_readable() {
    let (_store, agent) = store();
    let refused = [
        (
            "/v1/movements",
            json!({"kind": "adjustment", "sku": "SKU-MILK", "qty": i64::MIN, "client_key": "a1"}),
            "qty",
        ),
        (
            "/v1/movements",
            json!({"kind": "adjustment", "sku": "SKU-MILK", "qty": i64::MAX, "client_key": "a2"}),
            "qty",
        ),
        (
            "/v1/sales",
            json!({"client_key": "s1", "lines": [{"sku": "SKU-MILK", "qty": 1_000_001}]}),
            "lines[0].qty",
        ),
        (
            "/v1/sales",
            json!({"client_key": "s2", "lines": [{"sku": "SKU-MILK", "qty": 1},
                   {"sku": "SKU-BREAD", "qty": 2, "unit_price_minor": i64::MAX}]}),
            "lines[1].unit_price_minor",
        ),
        (
            "/v1/sales",
            json!({"client_key": "s3", "lines": [{"sku": "SKU-MILK", "qty": 1, "unit_price_minor": -1}]}),
            "lines[0].unit_price_minor",
        ),
        (
            "/v1/cycle-counts",
            json!({"client_key": "c1", "counts": [{"sku": "SKU-MILK", "counted": -1}]}),
            "counts[0].counted",
        ),
        (
            "/v1/loyalty/earn",
            json!({"client_key": "l1", "customer_id": "C-1", "points": i64::MAX}),
            "points",
        ),
    ];
    for (path, body, field) in refused {
        let (status, answer) = agent.post_json(path, &body);
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    assert_eq!(agent.health()["outbox"]["store_fact"]["depth"], 0);
    // The largest adjustment in range is fine, and the product and a count still answer.
    let (status, body) = agent.post_json(
        "/v1/movements",
        &json!({"kind": "adjustment", "sku": "SKU-MILK", "qty": -1_000_000, "client_key": "a3"}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(stock_of(&agent, 0).0, 100 - 1_000_000);
    let (status, body) = agent.post_json(
        "/v1/cycle-counts",
        &json!({"client_key": "c2", "counts": [{"sku": "SKU-MILK", "counted": 7}]}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(stock_of(&agent, 0).0, 7);
}

#[test]
fn a_count_racing_the_tills_sales_sets_stock_to_the_count_as_of_its_own_seq() {
    let (_store, agent) = store();
    let sales: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let sellers: Vec<_> = (2..=9)
            .map(|till| {
                let agent = &agent;
                scope.spawn(move || {
                    (0..25)
                        .map(|i| {
                            post_as(agent, till, "/v1/sales", &json!({
                                "client_key": format!("race-{i}"),
                                "lines": [{"sku": "SKU-MILK", "qty": 1}, {"sku": "SKU-EGGS", "qty": 1}]}))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(30));
        let (status, count) = post_as(
            &agent,
            1,
            "/v1/cycle-counts",
            &json!({
            "client_key": "race-count", "counts": [{"sku": "SKU-MILK", "counted": 500}]}),
        );
        assert_eq!(status, 201, "{count}");
        let count_seq = count["seq"].as_u64().unwrap();
        let mut all: Vec<(u16, Value)> = sellers
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.push((201, json!({"count_seq": count_seq})));
        all
    });
    let (_, marker) = sales.last().unwrap();
    let count_seq = marker["count_seq"].as_u64().unwrap();
    let tickets = &sales[..sales.len() - 1];
    assert!(
        tickets.iter().all(|(s, _)| *s == 201),
        "every sale recorded"
    );
    let after = tickets
        .iter()
        .filter(|(_, b)| b["seq"].as_u64().unwrap() > count_seq)
        .count() as i64;
    // On-hand is the count plus exactly the sales after it: none lost, none counted twice.
    assert_eq!(stock_of(&agent, 0).0, 500 - after);
    assert_eq!(stock_of(&agent, 2).0, 40 - tickets.len() as i64);
}

#[test]
fn a_basket_naming_the_customer_by_card_carries_their_id_to_central_and_never_the_card() {
    let (store, agent) = store();
    let basket = json!({"client_key": "t1/r-cust", "receipt": "R-C1", "currency": "EUR",
        "customer": {"card": CARD},
        "lines": [{"code": gtin(0), "qty": 2, "unit_price_minor": 129},
                  {"code": gtin(1), "qty": 1, "unit_price_minor": 249}]});
    let (status, body) = agent.post_json("/v1/sales", &basket);
    assert_eq!(status, 201, "{body}");
    assert_eq!(stock_of(&agent, 0).0, 98);
    // A retry after a timeout is the same request: the first answer, nothing twice.
    let (status, again) = agent.post_json("/v1/sales", &basket);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["seq"], body["seq"]);
    // The same key for the same basket with another customer is another request.
    let (status, other) = agent.post_json(
        "/v1/sales",
        &json!({"client_key": "t1/r-cust", "receipt": "R-C1", "currency": "EUR",
            "customer": {"customer_id": "C-77X"},
            "lines": basket["lines"].clone()}),
    );
    assert_eq!(status, 404, "an unknown customer id: {other}");

    // A return by the same customer, named by id this time.
    let (status, body) = agent.post_json(
        "/v1/returns",
        &json!({"client_key": "t1/ret-cust", "customer": {"customer_id": "C-77"},
                "lines": [{"sku": "SKU-MILK", "qty": 1}]}),
    );
    assert_eq!(status, 201, "{body}");

    // An unknown card records nothing and says why.
    let (status, body) = agent.post_json(
        "/v1/sales",
        &json!({"client_key": "t1/r-unknown", "customer": {"card": "04FFFFFFFFFF"},
                "lines": [{"code": gtin(2), "qty": 1}]}),
    );
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("not recorded"),
        "{body}"
    );
    assert_eq!(stock_of(&agent, 2).0, 40, "nothing moved");
    // Both a card and an id is a client error naming the field.
    let (status, body) = agent.post_json(
        "/v1/sales",
        &json!({"client_key": "t1/r-both", "customer": {"card": CARD, "customer_id": "C-77"},
                "lines": [{"code": gtin(2), "qty": 1}]}),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "customer.card", "{body}");

    drop(agent);
    let events = store.outbox_events();
    let kinds: Vec<_> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["sale.recorded", "return.recorded"]);
    for event in &events {
        assert_eq!(event["payload"]["customer_id"], "C-77", "{event}");
    }
    // The card number is nowhere on the box: not in the events, not in the stored answers or
    // keys, not in the database files.
    for name in ["outbox.db", "outbox.db-wal"] {
        let path = store.data_dir.join(name);
        if let Ok(bytes) = std::fs::read(&path) {
            assert!(
                !bytes.windows(CARD.len()).any(|w| w == CARD.as_bytes()),
                "the card number is in {name}"
            );
        }
    }
}

#[test]
fn an_order_not_fully_picked_is_not_handed_over_and_a_line_collected_elsewhere_is_not_handed_over_again()
 {
    let (_store, agent) = store();
    let before = (
        stock_of(&agent, 2),
        stock_of(&agent, 3),
        stock_of(&agent, 4),
    );
    let (status, body) =
        agent.post_json("/v1/pickups/PU-NR/collect", &json!({"client_key": "pu-nr"}));
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "order_not_ready", "{body}");
    assert_eq!(body["error"]["details"]["not_picked"], json!([2]), "{body}");
    assert_eq!(
        (
            stock_of(&agent, 2),
            stock_of(&agent, 3),
            stock_of(&agent, 4)
        ),
        before,
        "nothing moved"
    );

    // Central says the tea was collected elsewhere: the order is ready with its eggs alone.
    let (status, body) = agent.get_json("/v1/pickups/PU-MIX");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready", "{body}");
    let (status, body) = agent.post_json(
        "/v1/pickups/PU-MIX/collect",
        &json!({"client_key": "pu-mix"}),
    );
    assert_eq!(status, 201, "{body}");
    let handed: Vec<i64> = body["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_i64().unwrap())
        .collect();
    assert_eq!(handed, [2], "{body}");
    assert_eq!(
        stock_of(&agent, 2).0,
        before.0.0 - 2,
        "two eggs handed over"
    );
    assert_eq!(
        stock_of(&agent, 4).0,
        before.2.0,
        "the tea is not taken out twice"
    );
}
