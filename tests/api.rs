#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! The local HTTP API of the real `relais run`: errors are JSON and say what is wrong, and a
//! movement is recorded once per client key.

mod common;

use common::{Agent, Settings, Store, gtin14, product, stock};
use serde_json::{Value, json};

const SKU: &str = "SKU-API-1";

fn store_with_a_product() -> (Store, String) {
    store_with_a_product_and(Settings {
        api: "max_body_bytes = 1024".into(),
        ..Settings::default()
    })
}

fn store_with_a_product_and(settings: Settings) -> (Store, String) {
    let store = Store::with(settings);
    let gtin = gtin14(400_638_133_393);
    store.import_ok(
        "products",
        "products.ndjson",
        &[product(&gtin, SKU, "Api test item")],
    );
    store.import_ok("stock", "stock.ndjson", &[stock(SKU, 10)]);
    (store, gtin)
}

fn started() -> (Store, String, Agent) {
    let (store, gtin) = store_with_a_product();
    let agent = store.start();
    (store, gtin, agent)
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.code in {body}"))
}

#[test]
fn a_movement_that_is_not_json_gets_400_with_a_json_error_code() {
    let (_store, _gtin, agent) = started();
    let (status, body) = agent.post_raw("/v1/movements", "{\"kind\": \"sale\", ");
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "invalid_json");
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[test]
fn a_movement_with_an_unknown_field_gets_400_naming_the_field() {
    let (_store, _gtin, agent) = started();
    let (status, body) = agent.post_movement(&json!({
        "kind": "sale", "sku": SKU, "qty": 1, "client_key": "k-unknown", "quantity": 1
    }));
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("quantity"),
        "the unknown field is not named: {body}"
    );
}

#[test]
fn a_body_larger_than_max_body_bytes_gets_413_as_json() {
    let (_store, _gtin, agent) = started();
    let note = "x".repeat(2000);
    let body = json!({"kind": "sale", "sku": SKU, "qty": 1, "note": note}).to_string();
    assert!(body.len() > 1024);
    let (status, answer) = agent.post_raw("/v1/movements", body);
    assert_eq!(status, 413, "{answer}");
    assert_eq!(error_code(&answer), "body_too_large");
    // Nothing was recorded.
    assert_eq!(agent.health()["outbox"]["store_fact"]["depth"], 0);
}

#[test]
fn a_sale_with_a_negative_qty_gets_400_naming_qty() {
    let (_store, _gtin, agent) = started();
    let (status, body) = agent.post_movement(&json!({
        "kind": "sale", "sku": SKU, "qty": -2, "client_key": "k-neg"
    }));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "qty", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("qty")
    );
    assert_eq!(agent.health()["outbox"]["store_fact"]["depth"], 0);
}

#[test]
fn a_gtin_with_a_wrong_check_digit_gets_400_naming_gtin() {
    let (_store, gtin, agent) = started();
    let mut bad = gtin.clone();
    let last = bad.pop().and_then(|c| c.to_digit(10)).unwrap_or(0);
    bad.push(char::from_digit((last + 1) % 10, 10).unwrap_or('0'));
    let (status, body) = agent.post_movement(&json!({"kind": "sale", "gtin": bad, "qty": 1}));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "gtin", "{body}");
}

#[test]
fn a_sale_of_an_unknown_gtin_is_still_recorded_with_201_and_no_stock_effect() {
    let (_store, _gtin, agent) = started();
    let unknown = gtin14(999_999_999_999);
    let (status, body) = agent.post_movement(&json!({
        "kind": "sale", "gtin": unknown, "qty": 1, "client_key": "k-unknown-gtin"
    }));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["stock_applied"], false, "{body}");
    assert_eq!(body["durable"], true, "{body}");
    assert!(body["sku"].is_null(), "{body}");
    assert_eq!(agent.health()["outbox"]["store_fact"]["depth"], 1);
}

#[test]
fn a_sale_by_gtin_lowers_the_stock_the_product_endpoint_shows() {
    let (_store, gtin, agent) = started();
    let (status, body) = agent.post_movement(&json!({
        "kind": "sale", "gtin": gtin, "qty": 3, "client_key": "k-by-gtin"
    }));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["sku"], SKU);
    assert_eq!(body["stock_applied"], true);
    let (status, product) = agent.get_json(&format!("/v1/products/{gtin}"));
    assert_eq!(status, 200, "{product}");
    assert_eq!(product["stock"]["on_hand"], 7, "{product}");
}

#[test]
fn a_replayed_client_key_gets_200_with_the_same_id_and_seq_and_counts_once() {
    let (_store, gtin, agent) = started();
    let movement = json!({"kind": "sale", "sku": SKU, "qty": 1, "client_key": "till-1/r-42/l-1"});
    let (first_status, first) = agent.post_movement(&movement);
    assert_eq!(first_status, 201, "{first}");
    assert_eq!(first["replayed"], false);
    let (again_status, again) = agent.post_movement(&movement);
    assert_eq!(again_status, 200, "{again}");
    assert_eq!(again["replayed"], true, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["seq"], first["seq"]);
    let (_, product) = agent.get_json(&format!("/v1/products/{gtin}"));
    assert_eq!(
        product["stock"]["on_hand"], 9,
        "the replay was counted twice: {product}"
    );
    assert_eq!(agent.health()["outbox"]["store_fact"]["depth"], 1);
}

#[test]
fn health_answers_with_a_status_and_the_agent_id() {
    let (_store, _gtin, agent) = started();
    let (status, health) = agent.get_json("/v1/health");
    assert_eq!(status, 200, "{health}");
    // Prices, customers and reservations were never loaded: stale, hence degraded.
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["agent"], common::AGENT_ID);
    assert!(
        health["outbox"]["boot"].as_u64().unwrap_or(0) >= 1,
        "{health}"
    );
    assert!(
        health["alarms"].as_array().is_some_and(|a| a.is_empty()),
        "{health}"
    );
}

#[test]
fn an_unknown_product_gets_404_as_json() {
    let (_store, _gtin, agent) = started();
    let (status, body) = agent.get_json(&format!("/v1/products/{}", gtin14(123)));
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_code(&body), "not_found");
    let (status, body) = agent.get_json("/v1/products/12345");
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "invalid_code");
}

#[test]
fn a_body_of_exactly_max_body_bytes_is_accepted_and_one_byte_more_is_refused() {
    let (_store, _gtin, agent) = started();
    // JSON allows trailing whitespace: pad a small valid movement to exactly the limit.
    let small = json!({"kind": "sale", "sku": SKU, "qty": 1, "client_key": "k-300"}).to_string();
    let exact = format!("{small}{}", " ".repeat(1024 - small.len()));
    assert_eq!(exact.len(), 1024);
    let (status, body) = agent.post_raw("/v1/movements", exact.clone());
    assert_eq!(status, 201, "{body}");
    let over = format!("{} ", exact.replace("k-300", "k-301"));
    assert_eq!(over.len(), 1025);
    let (status, body) = agent.post_raw("/v1/movements", over);
    assert_eq!(status, 413, "{body}");
}

#[test]
fn a_customer_is_found_over_http_by_card_uid_with_or_without_separators() {
    let (store, _gtin) = store_with_a_product();
    let hasher = relais::cards::CardHasher::new(&common::CARD_KEY);
    let token = hasher
        .token(&relais::cards::normalize_card_id("04A22B917C80").expect("id"))
        .to_hex();
    store.import_ok(
        "customers",
        "customers.ndjson",
        &[json!({"customer_id": "C-9", "display_name": "Ada", "loyalty_balance": 7, "card_tokens": [token]})],
    );
    let agent = store.start();
    for id in ["04:A2:2B:91:7C:80", "04a22b917c80"] {
        let (status, body) = agent.get_json(&format!("/v1/customers/by-card/{id}"));
        assert_eq!(status, 200, "{id}: {body}");
        assert_eq!(body["customer_id"], "C-9", "{body}");
        assert_eq!(body["loyalty"]["balance"], 7, "{body}");
    }
    let (status, body) = agent.get_json("/v1/customers/by-card/04:A2:2B:91:7C:81");
    assert_eq!(status, 404, "{body}");
    let (status, body) = agent.get_json("/v1/customers/by-card/04%2FA2");
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "invalid_code");
}

#[test]
fn a_retry_gets_the_first_answer_and_the_same_key_on_another_movement_is_refused_with_422() {
    let (_store, gtin, agent) = started();
    let sale = json!({"kind": "sale", "sku": SKU, "qty": 1, "client_key": "till-2/r-7/l-1"});
    let (status, first) = agent.post_movement(&sale);
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["stock_applied"], true);
    // The same request again, its fields in another order: a retry.
    let (status, again) = agent.post_raw(
        "/v1/movements",
        r#"{"client_key":"till-2/r-7/l-1","qty":1,"sku":"SKU-A1","kind":"sale"}"#
            .replace("SKU-A1", SKU),
    );
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["replayed"], true);
    assert_eq!((&again["id"], &again["seq"]), (&first["id"], &first["seq"]));
    assert_eq!(again["sku"], SKU, "{again}");
    // The key reused for a different movement: refused, and nothing is recorded.
    let (status, reused) = agent.post_movement(&json!({
        "kind": "sale", "gtin": gtin14(999_999_999_999), "qty": 1, "client_key": "till-2/r-7/l-1"
    }));
    assert_eq!(status, 422, "{reused}");
    assert_eq!(
        reused["error"]["code"], "idempotency_key_reused",
        "{reused}"
    );
    assert_eq!(reused["error"]["details"]["first_seq"], first["seq"]);
    let (_, product) = agent.get_json(&format!("/v1/products/{gtin}"));
    let (status, next) = agent.post_movement(&json!({
        "kind": "sale", "sku": SKU, "qty": 1, "client_key": "till-2/r-7/l-2"
    }));
    assert_eq!(status, 201, "{next}");
    assert_eq!(
        next["seq"].as_u64(),
        first["seq"].as_u64().map(|s| s + 1),
        "the refused request used no seq and recorded nothing: {product}"
    );
}

#[test]
fn a_stock_snapshot_counts_only_the_local_movements_after_its_watermark() {
    let (store, gtin, agent) = started();
    for i in 0..3 {
        let (status, body) = agent.post_movement(&json!({
            "kind": "sale", "sku": SKU, "qty": 1, "client_key": format!("wm-{i}")
        }));
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["seq"], i + 1);
    }
    let (_, product) = agent.get_json(&format!("/v1/products/{gtin}"));
    assert_eq!(product["stock"]["on_hand"], 7, "{product}");
    // Central has seen movements 1 and 2 and counts 50 - 2 = 48 at watermark 2.
    store.import_ok(
        "stock",
        "stock-v2.ndjson",
        &[json!({"sku": SKU, "on_hand": 48, "watermark_seq": 2})],
    );
    let (_, product) = agent.get_json(&format!("/v1/products/{gtin}"));
    assert_eq!(product["stock"]["central_on_hand"], 48, "{product}");
    assert_eq!(
        product["stock"]["local_movements_after_watermark"], -1,
        "{product}"
    );
    assert_eq!(product["stock"]["on_hand"], 47, "{product}");
}

#[test]
fn a_product_imported_by_another_process_is_found_by_the_next_lookup_while_a_till_keeps_the_reader_busy()
 {
    // One reader, kept busy by lookups in a tight loop, stays inside its kept read snapshot
    // (ADR 0012) while `relais replica import`, another process, swaps in new products.
    let (store, gtin) = store_with_a_product_and(Settings {
        api: "rate_limit_per_client = 0".into(),
        replica: "readers = 1".into(),
        ..Settings::default()
    });
    let agent = store.start();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = agent.url(&format!("/v1/products/{gtin}"));
    let busy = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let client = common::http_client();
            let mut found = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if client.get(&url).send().is_ok_and(|r| r.status() == 200) {
                    found += 1;
                }
            }
            found
        })
    };
    for round in 0..5u64 {
        let added = gtin14(400_638_133_400 + round);
        store.import_ok(
            "products",
            &format!("products-{round}.ndjson"),
            &[
                product(&gtin, SKU, "Api test item"),
                product(&added, &format!("SKU-ADDED-{round}"), "Added item"),
            ],
        );
        let (status, body) = agent.get_json(&format!("/v1/products/{added}"));
        assert_eq!(status, 200, "round {round}: the import is not seen: {body}");
        assert_eq!(body["sku"], format!("SKU-ADDED-{round}"), "{body}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let found = busy.join().expect("busy client");
    assert!(found > 0, "the busy client never got an answer");
}

/// A request as a browser page would make it: raw headers, no helpers.
fn browser_request(
    agent: &Agent,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let mut request = agent.http.request(method, agent.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.body(body.to_owned()).send().expect("request");
    let status = response.status().as_u16();
    let text = response.text().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn a_web_page_posting_a_sale_as_text_plain_from_another_origin_records_nothing() {
    let (_store, _gtin, agent) = started();
    let sale = json!({"client_key": "csrf-1", "lines": [{"sku": SKU, "qty": 1}]}).to_string();
    // What a cross-site form or a "simple" fetch sends.
    let (status, body) = browser_request(
        &agent,
        reqwest::Method::POST,
        "/v1/sales",
        &[
            ("content-type", "text/plain"),
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ],
        &sale,
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_code(&body), "cross_origin");
    // Even with the origin stripped (a privacy extension), text/plain is not JSON.
    let (status, body) = browser_request(
        &agent,
        reqwest::Method::POST,
        "/v1/sales",
        &[("content-type", "text/plain")],
        &sale,
    );
    assert_eq!(status, 415, "{body}");
    assert_eq!(error_code(&body), "unsupported_media_type");
    // A page on another port of the same box is another site too.
    let (status, _) = browser_request(
        &agent,
        reqwest::Method::POST,
        "/v1/sales",
        &[
            ("content-type", "application/json"),
            ("origin", "http://127.0.0.1:3000"),
        ],
        &sale,
    );
    assert_eq!(status, 403);
    assert_eq!(agent.health()["outbox"]["store_fact"]["depth"], 0);
}

#[test]
fn a_page_that_rebinds_its_own_name_to_the_agent_reads_nothing() {
    let (_store, _gtin, agent) = started();
    let port = agent.addr.rsplit_once(':').map(|(_, p)| p).unwrap_or("0");
    let rebound = format!("rebind.evil.example:{port}");
    for path in ["/v1/health", "/v1/products/04006381333931", "/"] {
        let (status, body) = browser_request(
            &agent,
            reqwest::Method::GET,
            path,
            &[("host", &rebound)],
            "",
        );
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(error_code(&body), "host_not_allowed", "{path}");
    }
}

#[test]
fn the_status_page_and_a_name_listed_in_allowed_hosts_keep_working() {
    let (store, _gtin) = store_with_a_product_and(Settings {
        api: "allowed_hosts = [\"relais-till-agent\"]\nallowed_origins = [\"https://pos.store.example\"]".into(),
        ..Settings::default()
    });
    let agent = store.start();
    let port = agent
        .addr
        .rsplit_once(':')
        .map(|(_, p)| p)
        .unwrap_or("0")
        .to_owned();
    let own = format!("http://{}", agent.addr);
    // The page, navigated to from a link on another site, and its own same-origin requests.
    let (status, _) = browser_request(
        &agent,
        reqwest::Method::GET,
        "/",
        &[
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "navigate"),
        ],
        "",
    );
    assert_eq!(status, 200);
    let (status, body) = browser_request(
        &agent,
        reqwest::Method::DELETE,
        "/v1/alarms/disk_low",
        &[("origin", &own), ("sec-fetch-site", "same-origin")],
        "",
    );
    assert_eq!(status, 404, "reached the handler: {body}");
    let (status, _) = browser_request(
        &agent,
        reqwest::Method::GET,
        "/v1/health",
        &[("host", &format!("relais-till-agent:{port}"))],
        "",
    );
    assert_eq!(status, 200);
    let (status, body) = browser_request(
        &agent,
        reqwest::Method::POST,
        "/v1/movements",
        &[
            ("content-type", "application/json"),
            ("origin", "https://pos.store.example"),
        ],
        &json!({"kind": "receipt", "sku": SKU, "qty": 1, "client_key": "web-pos-1"}).to_string(),
    );
    assert_eq!(status, 201, "{body}");
}
