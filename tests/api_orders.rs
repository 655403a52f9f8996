#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! Web orders at the store, through the real `relais run`: click-and-collect orders handed
//! over in several visits, lines prepared here before central says they are picked, reserved
//! units protected from till sales, and ship-from-store orders picked, packed and shipped.

mod common;

use common::{Agent, Store, gtin14, product, stock};
use serde_json::{Value, json};
use std::time::Duration;

const TOKENS: [&str; 2] = [
    "till-1-token-0123456789abcdefghijklmn",
    "till-2-token-0123456789abcdefghijklmn",
];

/// Products of the store: (GTIN body, SKU, stock).
const ITEMS: [(u64, &str, i64); 4] = [
    (300_100_000_000, "SKU-MILK", 100),
    (300_100_000_008, "SKU-BREAD", 50),
    (300_100_000_016, "SKU-JAM", 30),
    (300_100_000_024, "SKU-TEA", 3),
];
const MILK: usize = 0;
const BREAD: usize = 1;
const JAM: usize = 2;
const TEA: usize = 3;

fn reservation(order: &str, line: i64, item: usize, qty: i64, status: &str) -> Value {
    json!({"order_id": order, "line": line, "sku": ITEMS[item].1, "qty": qty,
           "status": status, "pickup_code": format!("PU-{order}")})
}

/// A store with four products, two tills, and its web orders:
/// - WEB-3L (PU-WEB-3L): 2 milk + 1 bread picked, 1 jam still open;
/// - WEB-OPEN (PU-WEB-OPEN): 1 bread, open (central has not seen it picked);
/// - WEB-TEA (PU-WEB-TEA): 2 of the 3 teas, open;
/// - SHIP-1: 3 milk + 2 jam to ship from the store (no pickup code).
fn store(extra_config: &str) -> (Store, Agent) {
    let store = Store::new();
    let lines: String = TOKENS
        .iter()
        .enumerate()
        .map(|(i, t)| format!("till-{} {t}\n", i + 1))
        .collect();
    store.protect_api(&lines, "127.0.0.1:0", "rate_limit_per_client = 0\n");
    if !extra_config.is_empty() {
        let config = std::fs::read_to_string(&store.config).unwrap();
        std::fs::write(&store.config, format!("{config}\n{extra_config}")).unwrap();
    }
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
            reservation("WEB-3L", 1, MILK, 2, "picked"),
            reservation("WEB-3L", 2, BREAD, 1, "picked"),
            reservation("WEB-3L", 3, JAM, 1, "open"),
            reservation("WEB-OPEN", 1, BREAD, 1, "open"),
            reservation("WEB-TEA", 1, TEA, 2, "open"),
            json!({"order_id": "SHIP-1", "line": 1, "sku": "SKU-MILK", "qty": 3,
                   "status": "open", "fulfilment": "ship"}),
            json!({"order_id": "SHIP-1", "line": 2, "sku": "SKU-JAM", "qty": 2,
                   "status": "open", "fulfilment": "ship"}),
        ],
    );
    let agent = store.start().with_token(TOKENS[0]);
    (store, agent)
}

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

/// (on_hand, available) of an item.
fn stock_of(agent: &Agent, item: usize) -> (i64, i64) {
    let (status, body) = agent.get_json(&format!("/v1/products/{}", gtin14(ITEMS[item].0)));
    assert_eq!(status, 200, "{body}");
    (
        body["stock"]["on_hand"].as_i64().unwrap(),
        body["stock"]["available"].as_i64().unwrap(),
    )
}

fn code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.code in {body}"))
}

fn lines_of(body: &Value) -> Vec<i64> {
    body["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("no lines in {body}"))
        .iter()
        .map(|l| l["line"].as_i64().unwrap())
        .collect()
}

fn events_of(store: &Store, kind: &str) -> Vec<Value> {
    store
        .outbox_events()
        .into_iter()
        .filter(|e| e["type"] == kind)
        .collect()
}

#[test]
fn a_three_line_order_handed_over_in_two_visits_moves_each_lines_stock_once() {
    let (store, agent) = store("");
    assert_eq!(
        stock_of(&agent, MILK),
        (100, 95),
        "2 for WEB-3L, 3 for SHIP-1"
    );
    assert_eq!(stock_of(&agent, JAM), (30, 27));

    // First visit: the customer takes the milk and the bread; the jam is not picked yet.
    let (status, first) = post_as(
        &agent,
        1,
        "/v1/pickups/PU-WEB-3L/collect",
        &json!({"client_key": "pu-3l/1", "lines": [1, 2]}),
    );
    assert_eq!(status, 201, "{first}");
    assert_eq!(lines_of(&first), [1, 2]);
    assert_eq!(first["partial"], true, "{first}");
    assert_eq!(
        stock_of(&agent, MILK),
        (98, 95),
        "on-hand moves, available not"
    );
    assert_eq!(stock_of(&agent, BREAD), (49, 48));
    assert_eq!(stock_of(&agent, JAM), (30, 27), "the jam stays reserved");

    let (_, order) = agent.get_json("/v1/pickups/PU-WEB-3L");
    assert_eq!(order["status"], "not_ready", "{order}");
    assert_eq!(order["lines"][0]["released_here"], first["seq"], "{order}");
    assert_eq!(order["lines"][2]["released_here"], Value::Null, "{order}");

    // The rest, once central says the jam is picked (a delta through the real import).
    store.import_ok(
        "reservations",
        "reservations-2.ndjson",
        &[
            reservation("WEB-3L", 1, MILK, 2, "picked"),
            reservation("WEB-3L", 2, BREAD, 1, "picked"),
            reservation("WEB-3L", 3, JAM, 1, "picked"),
            reservation("WEB-OPEN", 1, BREAD, 1, "open"),
            reservation("WEB-TEA", 1, TEA, 2, "open"),
        ],
    );
    let (status, rest) = post_as(
        &agent,
        2,
        "/v1/pickups/PU-WEB-3L/collect",
        &json!({"client_key": "pu-3l/2"}),
    );
    assert_eq!(status, 201, "{rest}");
    assert_eq!(lines_of(&rest), [3], "only the line still to collect");
    assert_eq!(rest["partial"], false);
    assert_eq!(stock_of(&agent, MILK).0, 98, "the milk moved once");
    assert_eq!(stock_of(&agent, BREAD).0, 49, "the bread moved once");
    assert_eq!(stock_of(&agent, JAM), (29, 29));
    let (_, order) = agent.get_json("/v1/pickups/PU-WEB-3L");
    assert_eq!(order["status"], "collected", "{order}");
    let collected = events_of(&store, "pickup.collected");
    assert_eq!(collected.len(), 2);
    assert_eq!(collected[0]["payload"]["partial"], true, "{collected:?}");
}

#[test]
fn a_line_handed_over_twice_is_refused_naming_it_and_two_tills_cannot_both_hand_it_over() {
    let (store, agent) = store("");
    let (status, body) = post_as(
        &agent,
        1,
        "/v1/pickups/PU-WEB-3L/collect",
        &json!({"client_key": "pu/1", "lines": [1]}),
    );
    assert_eq!(status, 201, "{body}");
    let (status, again) = post_as(
        &agent,
        2,
        "/v1/pickups/PU-WEB-3L/collect",
        &json!({"client_key": "pu/2", "lines": [1, 2]}),
    );
    assert_eq!(status, 409, "{again}");
    assert_eq!(code(&again), "already_collected");
    assert_eq!(again["error"]["details"]["lines"], json!([1]), "{again}");
    assert_eq!(stock_of(&agent, BREAD), (50, 48), "nothing of it moved");

    // Two tills hand over the bread at the same moment: the writer lets one through.
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let tills: Vec<_> = (1..=2)
            .map(|till| {
                let agent = &agent;
                s.spawn(move || {
                    post_as(
                        agent,
                        till,
                        "/v1/pickups/PU-WEB-3L/collect",
                        &json!({"client_key": format!("race/{till}"), "lines": [2]}),
                    )
                })
            })
            .collect();
        tills.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{answers:?}");
    assert_eq!(stock_of(&agent, BREAD), (49, 48), "the bread moved once");
    assert_eq!(events_of(&store, "pickup.collected").len(), 2);

    // A line the order does not have, or named twice: bad input.
    for lines in [json!([9]), json!([3, 3]), json!([])] {
        let (status, body) = post_as(
            &agent,
            1,
            "/v1/pickups/PU-WEB-3L/collect",
            &json!({"client_key": "pu/bad", "lines": lines}),
        );
        assert_eq!(status, 400, "{lines}: {body}");
    }
}

#[test]
fn a_line_prepared_here_is_handed_over_before_central_says_it_is_picked() {
    let (store, agent) = store("");
    let (status, body) = post_as(
        &agent,
        1,
        "/v1/pickups/PU-WEB-OPEN/collect",
        &json!({"client_key": "open/1"}),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(code(&body), "order_not_ready");

    let (status, prepared) = post_as(
        &agent,
        1,
        "/v1/pickups/PU-WEB-OPEN/prepare",
        &json!({"client_key": "open/prep"}),
    );
    assert_eq!(status, 201, "{prepared}");
    assert_eq!(lines_of(&prepared), [1]);
    assert_eq!(
        stock_of(&agent, BREAD),
        (50, 48),
        "preparing moves no stock"
    );
    let events = events_of(&store, "pickup.prepared");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["payload"]["order_id"], "WEB-OPEN");
    assert_eq!(events[0]["payload"]["lines"][0]["sku"], "SKU-BREAD");
    let (_, order) = agent.get_json("/v1/pickups/PU-WEB-OPEN");
    assert_eq!(order["status"], "ready", "{order}");
    assert_eq!(
        order["lines"][0]["status"], "open",
        "central's word is kept"
    );
    assert_eq!(order["lines"][0]["prepared_here"], true);

    let (status, again) = post_as(
        &agent,
        2,
        "/v1/pickups/PU-WEB-OPEN/prepare",
        &json!({"client_key": "open/prep-2", "lines": [1]}),
    );
    assert_eq!(status, 409, "{again}");
    assert_eq!(code(&again), "already_prepared");

    let (status, collected) = post_as(
        &agent,
        1,
        "/v1/pickups/PU-WEB-OPEN/collect",
        &json!({"client_key": "open/2"}),
    );
    assert_eq!(status, 201, "{collected}");
    assert_eq!(stock_of(&agent, BREAD), (49, 48), "WEB-3L still holds one");
    let handed = events_of(&store, "pickup.collected");
    assert_eq!(
        handed[0]["payload"]["was_ready"], false,
        "central never said picked"
    );
}

#[test]
fn with_reserved_units_protected_two_tills_selling_the_last_unreserved_tea_get_one_201_and_one_409()
{
    let (store, agent) = store("[pickups]\nprotect_reserved = true\n");
    assert_eq!(stock_of(&agent, TEA), (3, 1), "2 of 3 teas reserved");
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let tills: Vec<_> = (1..=2)
            .map(|till| {
                let agent = &agent;
                s.spawn(move || {
                    post_as(
                        agent,
                        till,
                        "/v1/sales",
                        &json!({"client_key": format!("t{till}/r1"), "lines": [
                            {"sku": "SKU-MILK", "qty": 1}, {"sku": "SKU-TEA", "qty": 1}]}),
                    )
                })
            })
            .collect();
        tills.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{answers:?}");
    let (_, refused) = answers.iter().find(|(s, _)| *s == 409).unwrap();
    assert_eq!(code(refused), "reserved_stock", "{refused}");
    let details = &refused["error"]["details"];
    assert_eq!(details["sku"], "SKU-TEA", "{refused}");
    assert_eq!(
        (
            &details["on_hand"],
            &details["reserved"],
            &details["may_sell"]
        ),
        (&json!(2), &json!(2), &json!(0)),
        "{refused}"
    );
    assert_eq!(stock_of(&agent, TEA), (2, 0));
    assert_eq!(
        stock_of(&agent, MILK).0,
        99,
        "the refused ticket moved nothing"
    );
    assert_eq!(events_of(&store, "sale.recorded").len(), 1);

    // Once the order is handed over its units are no longer reserved: none left to sell.
    let (status, body) = post_as(
        &agent,
        1,
        "/v1/pickups/PU-WEB-TEA/prepare",
        &json!({"client_key": "tea/prep"}),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = post_as(
        &agent,
        1,
        "/v1/pickups/PU-WEB-TEA/collect",
        &json!({"client_key": "tea/collect"}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(stock_of(&agent, TEA), (0, 0));
}

#[test]
fn without_the_protection_a_till_may_sell_reserved_units() {
    let (_store, agent) = store("");
    let (status, body) = post_as(
        &agent,
        1,
        "/v1/sales",
        &json!({"client_key": "t1/r1", "lines": [{"sku": "SKU-TEA", "qty": 3}]}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(stock_of(&agent, TEA), (0, -2));
}

fn step(agent: &Agent, till: usize, step: &str, body: Value) -> (u16, Value) {
    post_as(agent, till, &format!("/v1/shipments/SHIP-1/{step}"), &body)
}

#[test]
fn a_ship_order_is_picked_packed_and_shipped_in_order_once_each_and_moves_stock_at_shipped_only() {
    let (store, agent) = store("");
    assert_eq!(stock_of(&agent, MILK), (100, 95));
    let (status, body) = step(
        &agent,
        1,
        "packed",
        json!({"client_key": "s1/packed-early"}),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(code(&body), "step_out_of_order");

    let (status, body) = step(&agent, 1, "picked", json!({"client_key": "s1/picked"}));
    assert_eq!(status, 201, "{body}");
    assert_eq!(lines_of(&body), [1, 2]);
    let (status, body) = step(&agent, 2, "packed", json!({"client_key": "s1/packed"}));
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        stock_of(&agent, MILK),
        (100, 95),
        "picked and packed move nothing"
    );
    assert_eq!(stock_of(&agent, JAM), (30, 27));

    let (status, body) = step(&agent, 1, "shipped", json!({"client_key": "s1/shipped"}));
    assert_eq!(status, 400, "no tracking number: {body}");
    let (status, body) = step(
        &agent,
        1,
        "shipped",
        json!({"client_key": "s1/shipped", "carrier": "DHL", "tracking_number": "no spaces"}),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = step(
        &agent,
        1,
        "shipped",
        json!({"client_key": "s1/shipped", "carrier": "DHL Paket",
               "tracking_number": "JJD0001234567"}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(stock_of(&agent, MILK), (97, 95), "on-hand moves at shipped");
    assert_eq!(stock_of(&agent, JAM), (28, 27));

    let (status, body) = step(
        &agent,
        2,
        "shipped",
        json!({"client_key": "s1/shipped-again", "carrier": "DHL Paket",
               "tracking_number": "JJD0001234568"}),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(code(&body), "step_already_recorded");
    assert_eq!(stock_of(&agent, MILK).0, 97, "shipped once");

    let shipped = events_of(&store, "shipment.shipped");
    assert_eq!(shipped.len(), 1);
    assert_eq!(
        shipped[0]["payload"]["tracking"],
        json!({"carrier": "DHL Paket", "tracking_number": "JJD0001234567"})
    );
    assert_eq!(events_of(&store, "shipment.picked").len(), 1);
    assert_eq!(events_of(&store, "shipment.packed").len(), 1);

    // Neither kind of order goes out the other way.
    let (status, _) = step(&agent, 1, "x", json!({"client_key": "s1/x"}));
    assert_eq!(status, 404, "no such step");
    let (status, body) = post_as(
        &agent,
        1,
        "/v1/shipments/WEB-3L/picked",
        &json!({"client_key": "3l/ship"}),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(code(&body), "wrong_fulfilment");
    let (status, _) = post_as(
        &agent,
        1,
        "/v1/shipments/NO-SUCH/picked",
        &json!({"client_key": "none/ship"}),
    );
    assert_eq!(status, 404);
}

#[test]
fn a_ship_order_with_a_pickup_code_is_not_handed_over_at_the_counter() {
    let store = Store::new();
    store.protect_api(
        &format!("till-1 {}\n", TOKENS[0]),
        "127.0.0.1:0",
        "rate_limit_per_client = 0\n",
    );
    store.import_ok(
        "products",
        "products.ndjson",
        &[product(&gtin14(ITEMS[MILK].0), "SKU-MILK", "milk")],
    );
    store.import_ok("stock", "stock.ndjson", &[stock("SKU-MILK", 10)]);
    store.import_ok(
        "reservations",
        "reservations.ndjson",
        &[
            json!({"order_id": "SHIP-9", "line": 1, "sku": "SKU-MILK", "qty": 1,
                 "status": "picked", "pickup_code": "PU-SHIP-9", "fulfilment": "ship"}),
        ],
    );
    let agent = store.start().with_token(TOKENS[0]);
    let (_, order) = agent.get_json("/v1/pickups/PU-SHIP-9");
    assert_eq!(order["fulfilment"], "ship", "{order}");
    for path in [
        "/v1/pickups/PU-SHIP-9/collect",
        "/v1/pickups/PU-SHIP-9/prepare",
    ] {
        let (status, body) = post_as(&agent, 1, path, &json!({"client_key": "k"}));
        assert_eq!(status, 409, "{path}: {body}");
        assert_eq!(code(&body), "wrong_fulfilment");
    }
    assert_eq!(stock_of(&agent, MILK), (10, 9));
}

#[test]
fn a_shipment_step_retried_after_a_client_timeout_is_recorded_once() {
    let (store, agent) = store("");
    let body = json!({"client_key": "s1/picked"});
    let impatient = reqwest::blocking::Client::builder()
        .timeout(Duration::from_micros(200))
        .build()
        .unwrap();
    let _ = impatient
        .post(agent.url("/v1/shipments/SHIP-1/picked"))
        .bearer_auth(TOKENS[0])
        .header("content-type", "application/json")
        .body(body.to_string())
        .send();
    let (status, first) = step(&agent, 1, "picked", body.clone());
    assert!(status == 201 || status == 200, "{status} {first}");
    let (status, again) = step(&agent, 1, "picked", body);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["replayed"], true);
    assert_eq!(again["seq"], first["seq"]);
    assert_eq!(events_of(&store, "shipment.picked").len(), 1);
}
