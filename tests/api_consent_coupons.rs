#![cfg(feature = "central")] // drives central's side: the default `central` feature
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! Consent and coupons at the till, through the real `relais run`: the marketing data a lookup
//! shows only with consent in effect, a consent change that takes effect at once and that only
//! a newer choice from central undoes (sent as a real delta through Mosquitto with
//! `relaisctl publish`), coupons redeemed once from two tills at once, retried after a timeout,
//! and refused when malformed.

#[path = "common/broker.rs"]
mod broker;
mod common;

use common::{Agent, Settings, Store};
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

const RELAISCTL: &str = env!("CARGO_BIN_EXE_relaisctl");

const TOKENS: [&str; 2] = [
    "till-1-token-0123456789abcdefghijklmn",
    "till-2-token-0123456789abcdefghijklmn",
];

/// C-77 allowed marketing on 2 November; C-88 never chose; C-99 withdrew it. All three have
/// segments and offers in central's data, and a loyalty card each.
const CARD_77: &str = "04A22B917C80";
const CARD_88: &str = "04A22B917C81";
const CARD_99: &str = "04A22B917C82";

/// A GS1 coupon (AI 8110) with serial 123456: company prefix 614141, offer 000123.
const SERIALISED: &str = "061414100012325011000050123456";
/// The same offer without a serial: a mass-printed coupon.
const UNSERIALISED: &str = "0614141000123250110000";

fn token_of(card: &str) -> String {
    relais::cards::CardHasher::new(&common::CARD_KEY)
        .token(&relais::cards::normalize_card_id(card).unwrap())
        .to_hex()
}

fn marketing() -> Value {
    json!({"segments": ["families", "organic"],
           "offers": [{"offer_id": "OF-12", "text": "-20 % on baby food this week"}]})
}

fn customer(id: &str, card: &str, consent: Option<Value>) -> Value {
    let mut row = json!({"customer_id": id, "display_name": format!("Customer {id}"),
                         "tier": "gold", "loyalty_balance": 120,
                         "card_tokens": [token_of(card)], "marketing": marketing()});
    if let Some(consent) = consent {
        row["consent"] = consent;
    }
    row
}

fn customers() -> Vec<Value> {
    vec![
        customer(
            "C-77",
            CARD_77,
            Some(
                json!({"marketing": {"granted": true, "at": "2026-11-02T10:00:00Z"},
                        "profiling": {"granted": false, "at": "2026-11-02T10:00:00Z"}}),
            ),
        ),
        customer("C-88", CARD_88, None),
        customer(
            "C-99",
            CARD_99,
            Some(json!({"marketing": {"granted": false, "at": "2026-10-01T08:30:00Z"}})),
        ),
    ]
}

/// A store of two tills and three customers; `sync` lines for `[sync]` (empty: offline).
fn store(sync: &str) -> (Store, Agent) {
    let store = Store::with(Settings {
        sync: sync.to_owned(),
        ..Settings::default()
    });
    let lines: String = TOKENS
        .iter()
        .enumerate()
        .map(|(i, t)| format!("till-{} {t}\n", i + 1))
        .collect();
    store.protect_api(&lines, "127.0.0.1:0", "rate_limit_per_client = 0\n");
    store.import_ok("customers", "customers.ndjson", &customers());
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

fn by_card(agent: &Agent, card: &str) -> Value {
    let (status, body) = agent.get_json(&format!("/v1/customers/by-card/{card}"));
    assert_eq!(status, 200, "{body}");
    body
}

fn events_of(store: &Store, kind: &str) -> Vec<Value> {
    store
        .outbox_events()
        .into_iter()
        .filter(|e| e["type"] == kind)
        .collect()
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[test]
fn a_customer_without_marketing_consent_is_shown_no_marketing_data_and_one_with_it_is() {
    let (_store, agent) = store("");
    let ada = by_card(&agent, CARD_77);
    assert_eq!(ada["consent"]["marketing"]["granted"], true, "{ada}");
    assert_eq!(ada["consent"]["marketing"]["source"], "central");
    assert_eq!(ada["marketing"], marketing(), "{ada}");
    assert_eq!(ada["consent"]["profiling"]["granted"], false);

    // Never asked: no consent, no date, so the till knows to ask; no marketing data.
    let never = by_card(&agent, CARD_88);
    assert_eq!(never["consent"]["marketing"]["granted"], false, "{never}");
    assert_eq!(never["consent"]["marketing"]["at_ms"], Value::Null);
    assert!(never.get("marketing").is_none(), "{never}");
    assert_eq!(never["tier"], "gold", "the tier is loyalty, not marketing");

    // Withdrawn: the date of the withdrawal, and still nothing to show.
    let withdrawn = by_card(&agent, CARD_99);
    assert_eq!(withdrawn["consent"]["marketing"]["granted"], false);
    assert!(withdrawn["consent"]["marketing"]["at_ms"].as_i64().unwrap() > 0);
    assert!(withdrawn.get("marketing").is_none(), "{withdrawn}");
}

#[test]
fn consent_granted_at_the_till_shows_marketing_at_once_and_only_a_central_row_dated_after_it_undoes_it()
 {
    if !broker::available() {
        eprintln!("mosquitto is not installed (scripts/test.sh installs it); skipping");
        return;
    }
    let broker = broker::Broker::start(broker::BrokerOptions::default());
    let (store, agent) = store(&format!("broker = \"{}\"\n", broker.url()));
    assert!(by_card(&agent, CARD_88).get("marketing").is_none());

    let before = std::time::SystemTime::now();
    let (status, body) = post_as(
        &agent,
        2,
        "/v1/customers/C-88/consent",
        &json!({"purpose": "marketing", "granted": true, "client_key": "till-2/consent-1"}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["customer_id"], "C-88");
    let seen = by_card(&agent, CARD_88);
    assert_eq!(seen["consent"]["marketing"]["granted"], true, "{seen}");
    assert_eq!(seen["consent"]["marketing"]["source"], "store");
    assert_eq!(seen["marketing"], marketing(), "shown at once: {seen}");

    // Central's row for C-88, dated an hour before the change here (it had not seen it yet):
    // the change recorded here stays in effect.
    let wait_version = |v: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let health = agent.health();
            let version = health["replica"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["stream"] == "customers")
                .and_then(|s| s["version"].as_u64())
                .unwrap_or(0);
            if version >= v {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "customers v{v} never applied: {health}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let older = rfc3339(before - Duration::from_secs(3600));
    let mut row = customer("C-88", CARD_88, None);
    row["consent"] = json!({"marketing": {"granted": false, "at": older}});
    publish(
        &broker,
        &json!({"v": 1, "stream": "customers", "version": 2,
                             "ops": [{"op": "upsert", "row": row}]}),
    );
    wait_version(2);
    let kept = by_card(&agent, CARD_88);
    assert_eq!(kept["consent"]["marketing"]["granted"], true, "{kept}");
    assert_eq!(kept["consent"]["marketing"]["source"], "store");
    assert_eq!(kept["marketing"], marketing());

    // A withdrawal central dates after the change here wins: nothing is shown any more.
    let newer = rfc3339(std::time::SystemTime::now() + Duration::from_secs(60));
    row["consent"] = json!({"marketing": {"granted": false, "at": newer}});
    publish(
        &broker,
        &json!({"v": 1, "stream": "customers", "version": 3,
                             "ops": [{"op": "upsert", "row": row}]}),
    );
    wait_version(3);
    let undone = by_card(&agent, CARD_88);
    assert_eq!(undone["consent"]["marketing"]["granted"], false, "{undone}");
    assert_eq!(undone["consent"]["marketing"]["source"], "central");
    assert!(undone.get("marketing").is_none(), "{undone}");

    agent.terminate();
    let events = events_of(&store, "consent.changed");
    assert_eq!(events.len(), 1, "{events:?}");
    let payload = &events[0]["payload"];
    assert_eq!(payload["customer_id"], "C-88");
    assert_eq!(payload["purpose"], "marketing");
    assert_eq!(payload["granted"], true);
    assert_eq!(payload["by"], "till-2");
    assert!(payload["at"].as_str().unwrap().ends_with('Z'), "{payload}");
    assert!(
        !payload.to_string().contains(CARD_88),
        "never a card number"
    );
}

fn publish(broker: &broker::Broker, delta: &Value) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("deltas.ndjson");
    common::write_ndjson(&path, std::slice::from_ref(delta));
    let out = Command::new(RELAISCTL)
        .args([
            "publish",
            "--broker",
            &broker.url(),
            "--agent",
            common::AGENT_ID,
        ])
        .arg("--deltas")
        .arg(&path)
        .output()
        .expect("relaisctl publish");
    assert!(out.status.success(), "{}", common::describe(&out));
}

#[test]
fn a_consent_change_for_an_unknown_customer_is_404_and_records_nothing() {
    let (store, agent) = store("");
    let (status, body) = agent.post_json(
        "/v1/customers/C-404/consent",
        &json!({"purpose": "marketing", "granted": true, "client_key": "till-1/c-404"}),
    );
    assert_eq!(status, 404, "{body}");
    let (status, body) = agent.post_json(
        "/v1/customers/C-77/consent",
        &json!({"purpose": "newsletters", "granted": true, "client_key": "till-1/c-77"}),
    );
    assert_eq!(status, 400, "an unknown purpose: {body}");
    agent.terminate();
    assert!(events_of(&store, "consent.changed").is_empty());
}

#[test]
fn a_consent_change_retried_with_its_key_is_recorded_once() {
    let (store, agent) = store("");
    let body = json!({"purpose": "marketing", "granted": false, "client_key": "till-1/wd-1"});
    let (status, first) = agent.post_json("/v1/customers/C-77/consent", &body);
    assert_eq!(status, 201, "{first}");
    let (status, again) = agent.post_json("/v1/customers/C-77/consent", &body);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["seq"], first["seq"]);
    assert_eq!(again["replayed"], true);
    let ada = by_card(&agent, CARD_77);
    assert_eq!(ada["consent"]["marketing"]["granted"], false, "{ada}");
    assert!(ada.get("marketing").is_none(), "withdrawn here: {ada}");
    agent.terminate();
    assert_eq!(events_of(&store, "consent.changed").len(), 1);
}

#[test]
fn a_serialised_gs1_coupon_redeemed_at_two_tills_at_once_is_taken_once() {
    let (store, agent) = store("");
    // Till 1 scans the coupon (AIM prefix, FNC1 implied); till 2 types it in brackets.
    let forms = [
        format!("]C18110{SERIALISED}"),
        format!("(8110){SERIALISED}"),
    ];
    let barrier = std::sync::Barrier::new(2);
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = forms
            .iter()
            .enumerate()
            .map(|(i, code)| {
                let agent = &agent;
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    post_as(
                        agent,
                        i + 1,
                        "/v1/coupons/redeem",
                        &json!({"code": code, "receipt": format!("R-{i}"),
                                "client_key": format!("till-{}/R-{i}/coupon", i + 1)}),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let taken: Vec<&(u16, Value)> = answers.iter().filter(|(s, _)| *s == 201).collect();
    let refused: Vec<&(u16, Value)> = answers.iter().filter(|(s, _)| *s == 409).collect();
    assert_eq!((taken.len(), refused.len()), (1, 1), "{answers:?}");
    let (_, taken) = taken[0];
    let (_, refused) = refused[0];
    assert_eq!(taken["coupon"], "gs1:614141:000123:123456");
    assert_eq!(taken["single_use"], true);
    assert_eq!(
        refused["error"]["code"], "coupon_already_redeemed",
        "{refused}"
    );
    assert_eq!(refused["error"]["details"]["seq"], taken["seq"]);
    agent.terminate();
    let events = events_of(&store, "coupon.redeemed");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["payload"]["serial"], "123456");
    assert_eq!(events[0]["payload"]["offer_code"], "000123");
}

#[test]
fn a_plain_code_retried_after_a_timeout_is_recorded_once_and_a_second_redemption_is_refused() {
    let (store, agent) = store("");
    let first = json!({"code": "WELCOME-7Q2X", "receipt": "R-1182",
                       "customer": {"card": CARD_77}, "client_key": "till-1/R-1182/coupon"});
    // The till gives up on its first request after 1 ms (the agent may or may not have recorded
    // it), then sends the same request again: the answer is the redemption, recorded once.
    let gave_up = agent
        .http
        .post(agent.url("/v1/coupons/redeem"))
        .bearer_auth(TOKENS[0])
        .header("content-type", "application/json")
        .body(first.to_string())
        .timeout(Duration::from_millis(1))
        .send();
    let (status, answer) = post_as(&agent, 1, "/v1/coupons/redeem", &first);
    assert!(
        status == 201 || (status == 200 && answer["replayed"] == true),
        "after {gave_up:?}: {status} {answer}"
    );
    assert_eq!(answer["coupon"], "plain:WELCOME-7Q2X");
    let (status, retry) = post_as(&agent, 1, "/v1/coupons/redeem", &first);
    assert_eq!(status, 200, "{retry}");
    assert_eq!(retry["seq"], answer["seq"]);
    // Another ticket, another till, the code typed in lower case: the same coupon.
    let (status, second) = post_as(
        &agent,
        2,
        "/v1/coupons/redeem",
        &json!({"code": "welcome-7q2x", "receipt": "R-2001", "client_key": "till-2/R-2001/c"}),
    );
    assert_eq!(status, 409, "{second}");
    assert_eq!(second["error"]["code"], "coupon_already_redeemed");
    assert_eq!(second["error"]["details"]["seq"], answer["seq"]);
    agent.terminate();
    let events = events_of(&store, "coupon.redeemed");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["payload"]["coupon"], "plain:WELCOME-7Q2X");
    assert_eq!(events[0]["payload"]["customer_id"], "C-77");
    assert!(!events[0]["payload"].to_string().contains(CARD_77));
}

#[test]
fn a_gs1_coupon_without_a_serial_is_taken_from_every_customer_who_brings_one() {
    let (store, agent) = store("");
    for i in 0..3 {
        let (status, body) = post_as(
            &agent,
            1 + i % 2,
            "/v1/coupons/redeem",
            &json!({"code": format!("(8110){UNSERIALISED}"), "receipt": format!("R-{i}"),
                    "client_key": format!("till/R-{i}/coupon")}),
        );
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["single_use"], false);
    }
    agent.terminate();
    assert_eq!(events_of(&store, "coupon.redeemed").len(), 3);
}

#[test]
fn a_malformed_coupon_is_refused_400_naming_the_field_and_records_nothing() {
    let (store, agent) = store("");
    for code in [
        // The serial's length indicator promises 6 digits; 3 follow.
        "(8110)061414100012325011000050123".to_owned(),
        // A GS1 barcode, but a product, not a coupon.
        "(01)09506000134352".to_owned(),
        // A plain code with a space and one far too long.
        "WELCOME 7".to_owned(),
        "X".repeat(40),
    ] {
        let (status, body) = agent.post_json(
            "/v1/coupons/redeem",
            &json!({"code": code, "client_key": format!("till-1/{}", code.len())}),
        );
        assert_eq!(status, 400, "{code}: {body}");
        assert_eq!(body["error"]["field"], "code", "{code}: {body}");
    }
    let (status, body) = agent.post_json("/v1/coupons/redeem", &json!({"client_key": "k"}));
    assert_eq!(status, 400, "{body}");
    agent.terminate();
    assert!(events_of(&store, "coupon.redeemed").is_empty());
}

#[test]
fn a_customers_snapshot_with_a_consent_date_that_is_not_rfc_3339_is_refused_naming_the_field() {
    let store = Store::new();
    let mut row = customer("C-1", CARD_77, None);
    row["consent"] = json!({"marketing": {"granted": true, "at": "02/11/2026"}});
    let path = store.path("customers.ndjson");
    common::write_ndjson(&path, &[row]);
    let out = store.import_file("customers", &path, None);
    assert_ne!(common::status_code(&out), 0);
    assert!(
        common::describe(&out).contains("consent.marketing.at"),
        "{}",
        common::describe(&out)
    );
}

#[test]
fn relaisctl_builds_a_customers_snapshot_with_consent_and_refuses_one_with_an_unknown_purpose() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("customers.ndjson");
    common::write_ndjson(&good, &customers());
    let out = Command::new(RELAISCTL)
        .args(["snapshot", "build", "--version", "7", "--out"])
        .arg(tmp.path().join("out"))
        .arg(format!("customers={}", good.display()))
        .output()
        .expect("relaisctl snapshot build");
    assert!(out.status.success(), "{}", common::describe(&out));
    let manifest = std::fs::read_to_string(tmp.path().join("out/manifest.json")).unwrap();
    assert!(manifest.contains("customers"), "{manifest}");

    let bad = tmp.path().join("bad.ndjson");
    let mut row = customer("C-1", CARD_77, None);
    row["consent"] = json!({"newsletters": {"granted": true, "at": "2026-11-02T10:00:00Z"}});
    common::write_ndjson(&bad, &[row]);
    let out = Command::new(RELAISCTL)
        .args(["snapshot", "build", "--version", "8", "--out"])
        .arg(tmp.path().join("out-bad"))
        .arg(format!("customers={}", bad.display()))
        .output()
        .expect("relaisctl snapshot build");
    assert!(!out.status.success());
    assert!(
        common::describe(&out).contains("newsletters"),
        "{}",
        common::describe(&out)
    );
}

#[test]
fn relais_lookup_card_tells_the_technician_each_consent_and_where_it_comes_from() {
    let store = Store::new();
    store.import_ok("customers", "customers.ndjson", &customers());
    let out = store.relais(&["lookup", "card", CARD_77]);
    let text = common::stdout(&out);
    assert!(
        text.contains("consent  marketing yes (central, 2026-11-02T10:00:00Z) · profiling no (central, 2026-11-02T10:00:00Z)"),
        "{text}"
    );
    let out = store.relais(&["lookup", "card", CARD_88]);
    assert!(
        common::stdout(&out).contains("marketing not asked (no consent)"),
        "{}",
        common::describe(&out)
    );
}
