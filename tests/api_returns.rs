#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! Returns with rules and loyalty earned on the ticket, through the real `relais run`: a ticket
//! naming a customer by card earns `loyalty.earn_per_minor_units`'s points in its own
//! transaction; a return naming its original (store receipt or web order) is checked against
//! what was sold minus what came back, by two tills at once too, and reverses exactly the
//! points its lines earned.

mod common;

use common::{Agent, Store, gtin14, product, stock};
use serde_json::{Value, json};
use std::time::Duration;

const TOKENS: [&str; 3] = [
    "till-1-token-0123456789abcdefghijklmn",
    "till-2-token-0123456789abcdefghijklmn",
    "till-3-token-0123456789abcdefghijklmn",
];

/// (GTIN body, SKU, stock)
const ITEMS: [(u64, &str, i64); 4] = [
    (300_100_000_000, "SKU-MILK", 100),
    (300_100_000_008, "SKU-BREAD", 50),
    (300_100_000_016, "SKU-EGGS", 40),
    (300_100_000_024, "SKU-JAM", 30),
];

/// The loyalty card of C-77 (central balance 120), as a scanner reads it.
const CARD: &str = "04A22B917C80";

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
            json!({"order_id": "WEB-7", "line": 1, "sku": "SKU-MILK", "qty": 2,
                   "status": "picked", "pickup_code": "PU-7"}),
            json!({"order_id": "WEB-7", "line": 2, "sku": "SKU-JAM", "qty": 1,
                   "status": "picked", "pickup_code": "PU-7"}),
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

fn on_hand(agent: &Agent, i: usize) -> i64 {
    let (status, body) = agent.get_json(&format!("/v1/products/{}", gtin14(ITEMS[i].0)));
    assert_eq!(status, 200, "{body}");
    body["stock"]["on_hand"].as_i64().unwrap()
}

fn balance(agent: &Agent) -> i64 {
    let (status, body) = agent.get_json(&format!("/v1/customers/by-card/{CARD}"));
    assert_eq!(status, 200, "{body}");
    body["loyalty"]["balance"].as_i64().unwrap()
}

/// R-1 for C-77 by card: 3 milk at 2.50 (7 points), a bread at 19.99 (19), 2 eggs at 10.00
/// (20): 46 points at the default rule of one point per 100 minor units.
fn sell_r1(agent: &Agent) -> Value {
    let (status, body) = post_as(
        agent,
        1,
        "/v1/sales",
        &json!({"client_key": "t1/r-1", "receipt": "R-1", "currency": "EUR",
            "customer": {"card": CARD},
            "lines": [
                {"sku": "SKU-MILK", "qty": 3, "unit_price_minor": 250},
                {"sku": "SKU-BREAD", "qty": 1, "unit_price_minor": 1999},
                {"sku": "SKU-EGGS", "qty": 2, "unit_price_minor": 1000}]}),
    );
    assert_eq!(status, 201, "{body}");
    body
}

fn give_back(key: &str, lines: Value) -> Value {
    json!({"client_key": key, "original": {"receipt": "R-1"}, "lines": lines})
}

fn points_of(body: &Value) -> Vec<i64> {
    body["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["points"].as_i64().unwrap())
        .collect()
}

#[test]
fn a_three_line_ticket_for_a_customer_with_a_card_earns_the_rules_points_and_the_balance_shows_them()
 {
    let (store, agent) = store();
    let body = sell_r1(&agent);
    assert_eq!(points_of(&body), [7, 19, 20], "{body}");
    assert_eq!(body["points_earned"], 46, "{body}");
    assert_eq!(body["balance_after"], 166, "{body}");
    assert_eq!(balance(&agent), 166);
    // A ticket without a customer earns nothing and carries nothing new.
    let (status, plain) = post_as(
        &agent,
        2,
        "/v1/sales",
        &json!({"client_key": "t2/r-2", "receipt": "R-2", "currency": "EUR",
            "lines": [{"sku": "SKU-JAM", "qty": 1, "unit_price_minor": 500}]}),
    );
    assert_eq!(status, 201, "{plain}");
    assert!(plain.get("points_earned").is_none(), "{plain}");
    assert_eq!(balance(&agent), 166);

    drop(agent);
    let events = store.outbox_events();
    let sale = &events[0]["payload"];
    assert_eq!(sale["earn_per_minor_units"], 100, "{sale}");
    assert_eq!(sale["points_earned"], 46, "{sale}");
    assert_eq!(sale["lines"][1]["points"], 19, "{sale}");
    let plain = events[1]["payload"].as_object().unwrap();
    let mut keys: Vec<&str> = plain.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "by",
            "client_key",
            "currency",
            "lines",
            "receipt",
            "total_minor"
        ],
        "a plain ticket's payload is what it was"
    );
    let line: Vec<&str> = plain["lines"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        line,
        ["gtin", "qty", "sku", "stock_applied", "unit_price_minor"]
    );
}

#[test]
fn returning_two_of_its_lines_reverses_exactly_those_lines_points() {
    let (store, agent) = store();
    sell_r1(&agent);
    let (status, body) = post_as(
        &agent,
        2,
        "/v1/returns",
        &give_back(
            "t2/ret-1",
            json!([{"sku": "SKU-MILK", "qty": 3, "original_line": 0},
                   {"code": gtin14(ITEMS[2].0), "qty": 2, "original_line": 2}]),
        ),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["original_checked"], true, "{body}");
    assert_eq!(points_of(&body), [7, 20], "{body}");
    assert_eq!(body["points_reversed"], 27, "{body}");
    assert_eq!(body["reversed_customer_id"], "C-77", "{body}");
    assert_eq!(balance(&agent), 120 + 46 - 27);
    assert_eq!(on_hand(&agent, 0), 100, "the milk is back on the shelf");
    drop(agent);
    let ret = &store.outbox_events()[1]["payload"];
    assert_eq!(ret["original"], json!({"receipt": "R-1"}), "{ret}");
    assert_eq!(ret["points_reversed"], 27, "{ret}");
}

#[test]
fn returning_more_than_sold_is_refused_naming_the_line_and_what_is_left_and_changes_nothing() {
    let (_store, agent) = store();
    sell_r1(&agent);
    let (status, _) = post_as(
        &agent,
        2,
        "/v1/returns",
        &give_back(
            "t2/ret-1",
            json!([{"sku": "SKU-MILK", "qty": 1, "original_line": 0}]),
        ),
    );
    assert_eq!(status, 201);
    let (stock, points) = (on_hand(&agent, 0), balance(&agent));
    let (status, body) = post_as(
        &agent,
        2,
        "/v1/returns",
        &give_back(
            "t2/ret-2",
            json!([{"sku": "SKU-BREAD", "qty": 1, "original_line": 1},
                   {"sku": "SKU-MILK", "qty": 3, "original_line": 0}]),
        ),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "return_exceeds_sale", "{body}");
    let details = &body["error"]["details"];
    assert_eq!(details["line"], 1, "{body}");
    assert_eq!(details["original_line"], 0, "{body}");
    assert_eq!(details["sold"], 3, "{body}");
    assert_eq!(details["already_returned"], 1, "{body}");
    assert_eq!(details["returnable"], 2, "{body}");
    assert_eq!((on_hand(&agent, 0), balance(&agent)), (stock, points));
    assert_eq!(
        on_hand(&agent, 1),
        49,
        "the bread of the refused return stays sold"
    );

    // Another item than the line sold, and a line the ticket does not have: refused too.
    let (status, body) = post_as(
        &agent,
        2,
        "/v1/returns",
        &give_back(
            "t2/ret-3",
            json!([{"sku": "SKU-JAM", "qty": 1, "original_line": 0}]),
        ),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["error"]["code"], "item_differs_from_original",
        "{body}"
    );
    let (status, body) = post_as(
        &agent,
        2,
        "/v1/returns",
        &give_back(
            "t2/ret-4",
            json!([{"sku": "SKU-MILK", "qty": 1, "original_line": 7}]),
        ),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "line_not_in_original", "{body}");
}

#[test]
fn two_tills_returning_the_last_unit_of_the_same_line_at_once_one_is_recorded_and_one_refused() {
    for round in 0..3 {
        let (_store, agent) = store();
        sell_r1(&agent);
        let (status, _) = post_as(
            &agent,
            1,
            "/v1/returns",
            &give_back(
                "t1/ret-0",
                json!([{"sku": "SKU-MILK", "qty": 2, "original_line": 0}]),
            ),
        );
        // One unit of the milk line is left; both tills bring it back at once.
        assert_eq!(status, 201);
        let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
            let tills: Vec<_> = [2, 3]
                .into_iter()
                .map(|till| {
                    let agent = &agent;
                    s.spawn(move || {
                        post_as(
                            agent,
                            till,
                            "/v1/returns",
                            &give_back(
                                &format!("t{till}/ret-last"),
                                json!([{"sku": "SKU-MILK", "qty": 1, "original_line": 0}]),
                            ),
                        )
                    })
                })
                .collect();
            tills.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let mut statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 409], "round {round}: {answers:?}");
        let refused = answers.iter().find(|(s, _)| *s == 409).unwrap();
        assert_eq!(refused.1["error"]["details"]["returnable"], 0);
        assert_eq!(on_hand(&agent, 0), 100, "the milk came back once");
        assert_eq!(
            balance(&agent),
            120 + 46 - 7,
            "the milk's 7 points reversed once"
        );
    }
}

#[test]
fn a_partial_return_then_the_rest_reverses_exactly_the_lines_points() {
    let (_store, agent) = store();
    sell_r1(&agent);
    // The milk line earned 7 points on 3 units: 1 then 2 reverse ⌊7/3⌋ = 2, then 5.
    let (status, first) = post_as(
        &agent,
        2,
        "/v1/returns",
        &give_back(
            "t2/ret-1",
            json!([{"sku": "SKU-MILK", "qty": 1, "original_line": 0}]),
        ),
    );
    assert_eq!(status, 201, "{first}");
    let (status, rest) = post_as(
        &agent,
        3,
        "/v1/returns",
        &give_back(
            "t3/ret-2",
            json!([{"sku": "SKU-MILK", "qty": 2, "original_line": 0}]),
        ),
    );
    assert_eq!(status, 201, "{rest}");
    assert_eq!(
        first["points_reversed"].as_i64().unwrap() + rest["points_reversed"].as_i64().unwrap(),
        7,
        "{first} {rest}"
    );
    assert_eq!(balance(&agent), 120 + 46 - 7);
}

#[test]
fn a_return_of_a_web_order_line_beyond_the_ordered_quantity_is_refused() {
    let (_store, agent) = store();
    let web = |key: &str, qty: i64| {
        json!({"client_key": key, "origin": {"channel": "web", "order_id": "WEB-7"},
               "lines": [{"sku": "SKU-MILK", "qty": qty, "original_line": 1}]})
    };
    let (status, body) = post_as(&agent, 1, "/v1/returns", &web("t1/w-1", 3));
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "return_exceeds_sale", "{body}");
    assert_eq!(body["error"]["details"]["sold"], 2, "{body}");
    assert_eq!(on_hand(&agent, 0), 100, "nothing came back");
    let (status, body) = post_as(&agent, 1, "/v1/returns", &web("t1/w-2", 2));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["original_checked"], true, "{body}");
    assert!(
        body.get("points_reversed").is_none(),
        "central earned for the web: {body}"
    );
    let (status, body) = post_as(&agent, 1, "/v1/returns", &web("t1/w-3", 1));
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["details"]["already_returned"], 2, "{body}");
}

#[test]
fn a_return_naming_an_unknown_receipt_is_recorded_and_flagged_unchecked() {
    let (store, agent) = store();
    let (status, body) = post_as(
        &agent,
        1,
        "/v1/returns",
        &json!({"client_key": "t1/ret-x", "original": {"receipt": "R-ELSEWHERE"},
                "lines": [{"sku": "SKU-JAM", "qty": 4, "original_line": 0}]}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["original_checked"], false, "{body}");
    assert_eq!(on_hand(&agent, 3), 34);
    // The body a till sent before originals existed still records, unchecked.
    let (status, body) = post_as(
        &agent,
        1,
        "/v1/returns",
        &json!({"client_key": "t1/ret-y", "lines": [{"sku": "SKU-JAM", "qty": 1}]}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["original_checked"], false, "{body}");
    drop(agent);
    let events = store.outbox_events();
    assert_eq!(events[0]["payload"]["original_checked"], false);
    assert_eq!(
        events[0]["payload"]["original"],
        json!({"receipt": "R-ELSEWHERE"})
    );
}

#[test]
fn a_return_retried_after_a_timeout_is_recorded_once_and_reverses_its_points_once() {
    let (store, agent) = store();
    sell_r1(&agent);
    let ret = give_back(
        "t2/ret-slow",
        json!([{"sku": "SKU-EGGS", "qty": 2, "original_line": 2}]),
    );
    let impatient = reqwest::blocking::Client::builder()
        .timeout(Duration::from_micros(200))
        .build()
        .unwrap();
    let _ = impatient
        .post(agent.url("/v1/returns"))
        .bearer_auth(TOKENS[1])
        .header("content-type", "application/json")
        .body(ret.to_string())
        .send();
    let (status, first) = post_as(&agent, 2, "/v1/returns", &ret);
    assert!(status == 201 || status == 200, "{status} {first}");
    let (status, again) = post_as(&agent, 2, "/v1/returns", &ret);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["seq"], first["seq"]);
    assert_eq!(again["points_reversed"], 20, "{again}");
    assert_eq!(balance(&agent), 120 + 46 - 20);
    assert_eq!(on_hand(&agent, 2), 40);
    drop(agent);
    let returns = store
        .outbox_events()
        .iter()
        .filter(|e| e["type"] == "return.recorded")
        .count();
    assert_eq!(returns, 1);
}

#[test]
fn a_second_sale_reusing_a_receipt_is_refused_and_a_sale_may_not_name_an_original_line() {
    let (_store, agent) = store();
    sell_r1(&agent);
    let (status, body) = post_as(
        &agent,
        2,
        "/v1/sales",
        &json!({"client_key": "t2/r-1", "receipt": "R-1",
                "lines": [{"sku": "SKU-JAM", "qty": 1}]}),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "receipt_reused", "{body}");
    assert_eq!(on_hand(&agent, 3), 30, "nothing sold");
    let (status, body) = post_as(
        &agent,
        2,
        "/v1/sales",
        &json!({"client_key": "t2/r-9", "receipt": "R-9",
                "lines": [{"sku": "SKU-JAM", "qty": 1, "original_line": 0}]}),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "lines[0].original_line", "{body}");
}

#[test]
fn a_return_after_the_points_were_spent_takes_the_balance_below_zero_and_blocks_burns() {
    let (_store, agent) = store();
    sell_r1(&agent);
    let (status, body) = post_as(
        &agent,
        1,
        "/v1/loyalty/burn",
        &json!({"client_key": "t1/burn-all", "card": CARD, "points": 166}),
    );
    assert_eq!(status, 201, "{body}");
    // The goods come back whatever was spent: the return is never refused for the points.
    let (status, body) = post_as(
        &agent,
        2,
        "/v1/returns",
        &give_back(
            "t2/ret-1",
            json!([{"sku": "SKU-MILK", "qty": 3, "original_line": 0}]),
        ),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["points_reversed"], 7, "{body}");
    assert_eq!(balance(&agent), -7);
    let (status, body) = post_as(
        &agent,
        1,
        "/v1/loyalty/burn",
        &json!({"client_key": "t1/burn-1", "card": CARD, "points": 1}),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_points", "{body}");
}

#[test]
fn the_earn_rule_is_reloaded_and_written_into_each_ticket_and_zero_turns_earning_off() {
    let (store, agent) = store();
    sell_r1(&agent);
    let config = std::fs::read_to_string(&store.config).unwrap();
    let reload = |rule: i64, nth: usize| {
        std::fs::write(
            &store.config,
            format!("{config}\n[loyalty]\nearn_per_minor_units = {rule}\n"),
        )
        .unwrap();
        let pid = rustix::process::Pid::from_raw(agent.pid() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while agent.log_text().matches("configuration reloaded").count() < nth {
            assert!(std::time::Instant::now() < deadline, "{}", agent.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let ticket = |key: &str, receipt: &str| {
        post_as(
            &agent,
            1,
            "/v1/sales",
            &json!({"client_key": key, "receipt": receipt, "customer": {"card": CARD},
                    "lines": [{"sku": "SKU-MILK", "qty": 3, "unit_price_minor": 250}]}),
        )
    };
    reload(50, 1);
    let (status, body) = ticket("t1/r-50", "R-50");
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["points_earned"], 15,
        "750 minor units at one point per 50: {body}"
    );
    assert_eq!(balance(&agent), 166 + 15);
    reload(0, 2);
    let (status, body) = ticket("t1/r-0", "R-0");
    assert_eq!(status, 201, "{body}");
    assert!(
        body.get("points_earned").is_none(),
        "earning is off: {body}"
    );
    assert_eq!(body["balance_after"], 181, "{body}");
    assert_eq!(balance(&agent), 181);
    drop(agent);
    let events = store.outbox_events();
    assert_eq!(events[1]["payload"]["earn_per_minor_units"], 50);
    assert!(events[2]["payload"].get("earn_per_minor_units").is_none());
}
