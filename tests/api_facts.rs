#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! The POS API of the real `relais run`: bearer auth on every endpoint, bad and oversized
//! bodies, idempotent retries that get the first answer, sales, returns (cross-channel too),
//! RFID cycle counts, loyalty with the offline burn cap, click-and-collect, rate limits.

mod common;

use common::{Agent, Settings, Store, gtin14, product, stock};
use reqwest::Method;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;

const TOKEN: &str = "till-1-token-0123456789abcdefXYZ";
const SKU: &str = "SKU-POS-1";
const CARD: &str = "04A22B917C80";

fn token_file(store: &Store, mode: u32) -> String {
    let path = store.path("api-tokens");
    std::fs::write(&path, format!("# tills\ntill-1 {TOKEN}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.display().to_string()
}

/// A store with one product (stock 10), a customer with 1000 points, and a click-and-collect
/// order of 2 units (pickup code PU-77), behind a token; the burn cap is 500 points.
fn pos_store(extra_api: &str) -> (Store, String) {
    let store = Store::new();
    let tokens = token_file(&store, 0o600);
    let config = std::fs::read_to_string(&store.config).unwrap().replace(
        "listen = \"127.0.0.1:0\"\n",
        &format!(
            "listen = \"127.0.0.1:0\"\ntoken_file = \"{tokens}\"\nmax_body_bytes = 2048\n{extra_api}"
        ),
    );
    std::fs::write(
        &store.config,
        // Debug logging: the most the agent ever logs, for the no-card-in-logs check.
        format!("{config}\n[loyalty]\noffline_burn_cap = 500\n\n[log]\nlevel = \"debug\"\n"),
    )
    .unwrap();
    let gtin = gtin14(400_638_133_393);
    store.import_ok(
        "products",
        "products.ndjson",
        &[product(&gtin, SKU, "Till item")],
    );
    store.import_ok("stock", "stock.ndjson", &[stock(SKU, 10)]);
    let hasher = relais::cards::CardHasher::new(&common::CARD_KEY);
    let card_token = hasher
        .token(&relais::cards::normalize_card_id(CARD).unwrap())
        .to_hex();
    store.import_ok(
        "customers",
        "customers.ndjson",
        &[
            json!({"customer_id": "C-1", "display_name": "Zelda Quux", "loyalty_balance": 1000,
                 "card_tokens": [card_token]}),
        ],
    );
    store.import_ok(
        "reservations",
        "reservations.ndjson",
        &[
            json!({"order_id": "WEB-77", "line": 1, "sku": SKU, "qty": 2, "status": "picked",
                 "pickup_code": "PU-77"}),
        ],
    );
    (store, gtin)
}

fn started(extra_api: &str) -> (Store, String, Agent) {
    let (store, gtin) = pos_store(extra_api);
    let agent = store.start().with_token(TOKEN);
    (store, gtin, agent)
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.code in {body}"))
}

fn on_hand_and_available(agent: &Agent, gtin: &str) -> (i64, i64) {
    let (status, body) = agent.get_json(&format!("/v1/products/{gtin}"));
    assert_eq!(status, 200, "{body}");
    (
        body["stock"]["on_hand"].as_i64().unwrap(),
        body["stock"]["available"].as_i64().unwrap(),
    )
}

/// Every protected route with a method and a concrete path.
fn protected_requests(gtin: &str) -> Vec<(Method, String)> {
    let concrete = |route: &str| {
        route
            .replace(
                "{code}",
                if route.contains("pickups") {
                    "PU-77"
                } else {
                    gtin
                },
            )
            .replace("{id}", CARD)
            .replace("{order_id}", "WEB-77")
    };
    relais::api::PROTECTED_ROUTES
        .iter()
        .map(|route| {
            let method = match *route {
                "/v1/alarms/{code}" => Method::DELETE,
                "/v1/movements"
                | "/v1/sales"
                | "/v1/returns"
                | "/v1/cycle-counts"
                | "/v1/loyalty/earn"
                | "/v1/loyalty/burn"
                | "/v1/pickups/{code}/collect"
                | "/v1/pickups/{code}/prepare"
                | "/v1/shipments/{order_id}/picked"
                | "/v1/shipments/{order_id}/packed"
                | "/v1/shipments/{order_id}/shipped"
                | "/v1/outbox/requeue" => Method::POST,
                _ => Method::GET,
            };
            let path = match *route {
                "/v1/products" => format!("/v1/products?code={gtin}"),
                "/v1/alarms/{code}" => "/v1/alarms/none".to_owned(),
                other => concrete(other),
            };
            (method, path)
        })
        .collect()
}

fn status_of(
    agent: &Agent,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> (u16, Value, Option<String>) {
    let mut request = agent
        .http
        .request(method, agent.url(path))
        .header("content-type", "application/json")
        .body("{}");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().expect("request");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    // Live streams never end: read the body only when it is not one.
    let streaming = path.starts_with("/v1/events") || path.starts_with("/v1/devices/live");
    let body = if streaming && status == 200 {
        Value::Null
    } else {
        serde_json::from_str(&response.text().unwrap_or_default()).unwrap_or(Value::Null)
    };
    (status, body, challenge)
}

#[test]
fn every_protected_endpoint_refuses_a_missing_or_wrong_token_and_accepts_the_right_one() {
    let (_store, gtin, agent) = started("");
    for (method, path) in protected_requests(&gtin) {
        let (status, body, challenge) = status_of(&agent, method.clone(), &path, None);
        assert_eq!(status, 401, "{method} {path} without a token: {body}");
        assert_eq!(error_code(&body), "unauthorized", "{method} {path}");
        assert_eq!(
            challenge.as_deref(),
            Some("Bearer realm=\"relais\""),
            "{method} {path}"
        );
        let (status, body, _) = status_of(
            &agent,
            method.clone(),
            &path,
            Some("till-1-token-0123456789abcdefXYz"),
        );
        assert_eq!(status, 401, "{method} {path} with a wrong token: {body}");
        let (status, body, _) = status_of(&agent, method.clone(), &path, Some(TOKEN));
        assert_ne!(status, 401, "{method} {path} with the right token: {body}");
    }
    for probe in relais::api::PUBLIC_ROUTES {
        let (status, body, _) = status_of(&agent, Method::GET, probe, None);
        // The doctor's route needs no token but the doctor's key (tests/doctor.rs).
        let expected = if probe == "/v1/health/doctor" {
            401
        } else {
            200
        };
        assert_eq!(status, expected, "{probe} without a token: {body}");
    }
}

#[test]
fn every_write_endpoint_answers_a_malformed_body_with_400_and_an_oversized_one_with_413() {
    let (_store, gtin, agent) = started("");
    let writes = protected_requests(&gtin)
        .into_iter()
        .filter(|(m, p)| *m == Method::POST && p != "/v1/outbox/requeue");
    for (_, path) in writes {
        let (status, body) = agent.post_raw(&path, "{\"lines\": [");
        assert_eq!(status, 400, "{path} with broken JSON: {body}");
        assert_eq!(error_code(&body), "invalid_json", "{path}");
        let (status, body) = agent.post_raw(&path, "{\"unknown_field\": 1}");
        assert_eq!(status, 400, "{path} with an unknown field: {body}");
        let big = format!("{{\"note\": \"{}\"}}", "x".repeat(4096));
        let (status, body) = agent.post_raw(&path, big);
        assert_eq!(
            status, 413,
            "{path} with a body over max_body_bytes: {body}"
        );
        assert_eq!(error_code(&body), "body_too_large", "{path}");
    }
}

#[test]
fn every_store_fact_retried_with_its_key_gets_the_first_answer_and_is_recorded_once() {
    let (store, gtin, agent) = started("");
    let facts = [
        (
            "/v1/movements",
            json!({"kind": "receipt", "sku": SKU, "qty": 3}),
        ),
        (
            "/v1/sales",
            json!({"lines": [{"code": gtin, "qty": 1, "unit_price_minor": 250}]}),
        ),
        ("/v1/returns", json!({"lines": [{"sku": SKU, "qty": 1}]})),
        (
            "/v1/cycle-counts",
            json!({"counts": [{"sku": SKU, "counted": 9}], "apply": false}),
        ),
        ("/v1/loyalty/earn", json!({"card": CARD, "points": 10})),
        (
            "/v1/loyalty/burn",
            json!({"customer_id": "C-1", "points": 20}),
        ),
        ("/v1/pickups/PU-77/collect", json!({})),
    ];
    let before = store.outbox_events().len();
    for (n, (path, body)) in facts.iter().enumerate() {
        let key = format!("till-1/r-{n}");
        let mut body = body.clone();
        body["client_key"] = json!(key);
        let (status, first) = agent.post_json(path, &body);
        assert_eq!(status, 201, "{path}: {first}");
        assert_eq!(first["durable"], true, "{path}");
        // The same request again: the first answer comes back.
        let (status, again) = agent.post_json(path, &body);
        assert_eq!(status, 200, "{path} retried: {again}");
        assert_eq!(again["replayed"], true, "{path}");
        let mut expected = first.clone();
        expected["replayed"] = json!(true);
        assert_eq!(
            again, expected,
            "{path}: the retry must get the first answer"
        );
        // The key reused for a different request (as a confused till's might): refused.
        match body.pointer_mut("/lines/0/qty") {
            Some(qty) => *qty = json!(5),
            None if path.contains("loyalty") => body["points"] = json!(11),
            None if path.contains("cycle") => body["counts"][0]["counted"] = json!(8),
            None if path.contains("movements") => body["qty"] = json!(4),
            None => continue,
        }
        let (status, reused) = agent.post_json(path, &body);
        assert_eq!(status, 422, "{path} reused: {reused}");
        assert_eq!(error_code(&reused), "idempotency_key_reused", "{path}");
    }
    assert_eq!(
        store.outbox_events().len() - before,
        facts.len(),
        "one event per fact"
    );
}

#[test]
fn a_sale_lowers_stock_once_and_is_in_the_outbox_with_its_lines() {
    let (store, gtin, agent) = started("");
    let (status, sale) = agent.post_json(
        "/v1/sales",
        &json!({"client_key": "till-1/r-100", "receipt": "R-100", "currency": "EUR",
                "lines": [{"code": gtin, "qty": 2, "unit_price_minor": 199},
                          {"code": gtin14(999_999_999_999), "qty": 1}]}),
    );
    assert_eq!(status, 201, "{sale}");
    assert_eq!(
        sale["total_minor"],
        Value::Null,
        "a line without a price leaves no total"
    );
    assert_eq!(sale["lines"][0]["stock_applied"], true);
    assert_eq!(
        sale["lines"][1]["stock_applied"], false,
        "unknown item: recorded, no stock"
    );
    assert_eq!(on_hand_and_available(&agent, &gtin), (8, 6));
    let events = store.outbox_events();
    let recorded = events
        .iter()
        .find(|e| e["type"] == "sale.recorded")
        .expect("sale event");
    assert_eq!(recorded["payload"]["receipt"], "R-100");
    assert_eq!(
        recorded["payload"]["by"], "till-1",
        "the till's token name is recorded"
    );
    assert_eq!(recorded["payload"]["lines"].as_array().unwrap().len(), 2);
    let (status, body) = agent.post_json("/v1/sales", &json!({"lines": [{"sku": SKU, "qty": 1}]}));
    assert_eq!(
        status, 400,
        "a sale without a key cannot be retried safely: {body}"
    );
    assert_eq!(body["error"]["field"], "client_key");
}

#[test]
fn the_offline_burn_cap_refuses_the_second_spend() {
    let (_store, _gtin, agent) = started("");
    let burn = |key: &str, points: i64| {
        agent.post_json(
            "/v1/loyalty/burn",
            &json!({"client_key": key, "card": CARD, "points": points}),
        )
    };
    let (status, first) = burn("k-1", 400);
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["balance_after"], 600);
    let (status, second) = burn("k-2", 400);
    assert_eq!(status, 409, "{second}");
    assert_eq!(error_code(&second), "offline_burn_cap");
    assert_eq!(second["error"]["details"]["allowed"], 100, "{second}");
    let (_, customer) = agent.get_json(&format!("/v1/customers/by-card/{CARD}"));
    assert_eq!(
        customer["loyalty"]["balance"], 600,
        "the refused burn changed nothing"
    );
    assert_eq!(customer["loyalty"]["pending_local"], -400);
    // The refused key is free again: the till may retry it with what is allowed.
    let (status, body) = burn("k-2", 100);
    assert_eq!(status, 201, "{body}");
    let (status, body) = agent.post_json(
        "/v1/loyalty/earn",
        &json!({"client_key": "k-3", "card": CARD, "points": 50}),
    );
    assert_eq!(status, 201, "earning is never capped: {body}");
    // GDPR: neither the card identifier nor the customer's name ever reaches the log.
    let log = agent.log_text();
    for secret in [CARD, "04:A2:2B:91:7C:80", "Quux"] {
        assert!(!log.contains(secret), "the log mentions {secret:?}:\n{log}");
    }
}

#[test]
fn ten_tills_burning_at_once_cannot_together_pass_the_cap() {
    let (_store, _gtin, agent) = started("");
    let agent = std::sync::Arc::new(agent);
    let threads: Vec<_> = (0..10)
        .map(|i| {
            let agent = std::sync::Arc::clone(&agent);
            std::thread::spawn(move || {
                agent
                    .post_json("/v1/loyalty/burn", &json!({"client_key": format!("race-{i}"), "customer_id": "C-1", "points": 100}))
                    .0
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        5,
        "{statuses:?}"
    );
}

#[test]
fn a_burn_beyond_the_balance_is_refused_even_under_the_cap() {
    let (_store, _gtin, agent) = started("");
    let (status, body) = agent.post_json(
        "/v1/loyalty/burn",
        &json!({"client_key": "b-1", "customer_id": "C-1", "points": 1001}),
    );
    assert_eq!(status, 409, "{body}");
    let code = error_code(&body);
    assert!(code == "insufficient_points", "{body}");
    let (status, body) = agent.post_json(
        "/v1/loyalty/burn",
        &json!({"client_key": "b-2", "customer_id": "C-404", "points": 1}),
    );
    assert_eq!(status, 404, "{body}");
}

#[test]
fn a_pickup_code_shows_the_order_and_collecting_it_moves_on_hand_but_not_available() {
    let (store, gtin, agent) = started("");
    assert_eq!(on_hand_and_available(&agent, &gtin), (10, 8));
    let (status, order) = agent.get_json("/v1/pickups/PU-77");
    assert_eq!(status, 200, "{order}");
    assert_eq!(order["order_id"], "WEB-77");
    assert_eq!(order["status"], "ready");
    assert_eq!(order["lines"][0]["qty"], 2);
    let (status, collected) =
        agent.post_json("/v1/pickups/PU-77/collect", &json!({"client_key": "pu-1"}));
    assert_eq!(status, 201, "{collected}");
    assert_eq!(on_hand_and_available(&agent, &gtin), (8, 8));
    let (_, order) = agent.get_json("/v1/pickups/PU-77");
    assert_eq!(order["status"], "collected", "{order}");
    let (status, again) =
        agent.post_json("/v1/pickups/PU-77/collect", &json!({"client_key": "pu-2"}));
    assert_eq!(status, 409, "a second hand-over of the same order: {again}");
    assert_eq!(error_code(&again), "already_collected");
    assert_eq!(on_hand_and_available(&agent, &gtin), (8, 8));
    let events = store.outbox_events();
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "pickup.collected")
            .count(),
        1
    );
    let (status, _) = agent.get_json("/v1/pickups/NO-SUCH");
    assert_eq!(status, 404);
}

#[test]
fn a_web_order_returned_in_store_restocks_and_is_recorded_as_cross_channel() {
    let (store, gtin, agent) = started("");
    let (status, body) = agent.post_json(
        "/v1/returns",
        &json!({"client_key": "ret-1", "origin": {"channel": "web"}, "lines": [{"sku": SKU, "qty": 1}]}),
    );
    assert_eq!(status, 400, "a web return names its order: {body}");
    assert_eq!(body["error"]["field"], "origin.order_id");
    let (status, body) = agent.post_json(
        "/v1/returns",
        &json!({"client_key": "ret-1", "origin": {"channel": "web", "order_id": "WEB-12"},
                "reason": "wrong size", "lines": [{"code": gtin, "qty": 1}]}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["cross_channel"], true);
    assert_eq!(on_hand_and_available(&agent, &gtin).0, 11, "restocked here");
    let events = store.outbox_events();
    let recorded = events
        .iter()
        .find(|e| e["type"] == "return.recorded")
        .unwrap();
    assert_eq!(recorded["payload"]["origin"]["order_id"], "WEB-12");
    assert_eq!(recorded["payload"]["cross_channel"], true);
    let (status, body) = agent.post_json(
        "/v1/returns",
        &json!({"client_key": "ret-2", "restock": false, "lines": [{"sku": SKU, "qty": 1}]}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        on_hand_and_available(&agent, &gtin).0,
        11,
        "damaged goods are not restocked"
    );
}

/// An SGTIN-96 EPC for `gtin` (company prefix 7 digits, partition 5) and `serial`.
fn sgtin96(gtin: &str, serial: u64) -> String {
    // GTIN-14 = indicator + company prefix (7) + item ref (5) + check digit.
    let indicator: u64 = gtin[0..1].parse().unwrap();
    let prefix: u64 = gtin[1..8].parse().unwrap();
    let item: u64 = format!("{indicator}{}", &gtin[8..13]).parse().unwrap();
    let mut bits: u128 = 0x30;
    bits = (bits << 3) | 1; // filter: point of sale
    bits = (bits << 3) | 5; // partition 5: 24-bit prefix, 20-bit item
    bits = (bits << 24) | u128::from(prefix);
    bits = (bits << 20) | u128::from(item);
    bits = (bits << 38) | u128::from(serial);
    format!("{bits:024X}")
}

#[test]
fn an_rfid_cycle_count_sets_stock_to_the_count_and_counts_each_tag_once() {
    let (store, gtin, agent) = started("");
    let mut epcs: Vec<String> = (1..=7).map(|s| sgtin96(&gtin, s)).collect();
    epcs.push(sgtin96(&gtin, 3)); // read twice
    epcs.push("E2801160600002".to_owned()); // not an EPC this agent decodes
    let (status, body) = agent.post_json(
        "/v1/cycle-counts",
        &json!({"client_key": "count-1", "zone": "sales floor", "epcs": epcs}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["items"][0]["counted"], 7, "{body}");
    assert_eq!(body["items"][0]["expected"], 10);
    assert_eq!(body["items"][0]["delta"], -3);
    assert_eq!(body["ignored_tags"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(on_hand_and_available(&agent, &gtin).0, 7);
    let events = store.outbox_events();
    let count = events
        .iter()
        .find(|e| e["type"] == "stock.cycle_count")
        .unwrap();
    assert_eq!(count["payload"]["source"], "rfid");
}

#[test]
fn a_product_is_found_by_element_string_and_by_digital_link() {
    let (_store, gtin, agent) = started("");
    for code in [
        format!("(01){gtin}(17)281231(10)LOT1"),
        format!("https://id.gs1.org/01/{gtin}/10/LOT1"),
        gtin[1..].to_owned(),
    ] {
        let query: String = url_encode(&code);
        let (status, body) = agent.get_json(&format!("/v1/products?code={query}"));
        assert_eq!(status, 200, "{code}: {body}");
        assert_eq!(body["sku"], SKU, "{code}");
    }
    let (status, body) = agent.get_json("/v1/products?code=%2800%29123");
    assert_eq!(status, 400, "{body}");
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_client_over_the_rate_limit_gets_429_with_retry_after() {
    let (_store, gtin, agent) = started("rate_limit_per_client = 5\nrate_limit_burst = 5\n");
    let mut limited = None;
    for _ in 0..30 {
        let response = agent
            .request(Method::GET, &format!("/v1/products/{gtin}"))
            .send()
            .unwrap();
        if response.status().as_u16() == 429 {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("30 requests at once must pass a limit of 5/s");
    assert!(response.headers().get("retry-after").is_some());
    let body: Value = response.json().unwrap();
    assert_eq!(error_code(&body), "rate_limited");
}

#[test]
fn a_token_file_readable_by_others_stops_the_agent_with_status_78() {
    let (store, _gtin) = pos_store("");
    let path = store.path("api-tokens");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = store.relais(&["run"]);
    assert_eq!(common::status_code(&out), 78, "{}", common::describe(&out));
    assert!(
        common::stderr(&out).contains("chmod 600"),
        "{}",
        common::describe(&out)
    );
}

#[test]
fn listening_on_the_store_network_without_tokens_is_a_config_error() {
    let store = Store::with(Settings {
        api: String::new(),
        ..Settings::default()
    });
    let config = std::fs::read_to_string(&store.config)
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"");
    std::fs::write(&store.config, config).unwrap();
    let out = store.relais(&["config", "validate", store.config.to_str().unwrap()]);
    assert_eq!(common::status_code(&out), 78, "{}", common::describe(&out));
    assert!(
        common::stderr(&out).contains("api.token_file"),
        "{}",
        common::describe(&out)
    );
}
