#![cfg(feature = "central")] // drives central's side: the default `central` feature
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! Per-stream freshness with central's heartbeat, and stock deltas that do not wait for a
//! catalogue import (issue 18, item 7): the real agent, a real Mosquitto, the HTTPS snapshot
//! server of the snapshot tests.

#[path = "common/broker.rs"]
mod broker;
mod common;
#[path = "support/https.rs"]
mod https;

use broker::{Broker, BrokerOptions};
use common::{Settings, Store};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const RELAISCTL: &str = env!("CARGO_BIN_EXE_relaisctl");
const HOUR_MS: i64 = 3_600_000;

fn skip() -> bool {
    if !broker::available() {
        eprintln!("mosquitto is not installed (scripts/test.sh installs it); skipping");
        return true;
    }
    false
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn relaisctl(args: &[&str]) {
    let out = Command::new(RELAISCTL)
        .args(args)
        .output()
        .expect("relaisctl");
    assert!(
        out.status.success(),
        "relaisctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `mosquitto_pub` as central's identity, on one of the agent's topics.
fn publish_as_central(broker: &Broker, topic: &str, payload: &Value) {
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-u", "central", "-q", "1", "-m", &payload.to_string()])
        .args(["-t", &format!("relais/v1/{}/{topic}", common::AGENT_ID)])
        .output()
        .expect("mosquitto_pub (apt-get install mosquitto-clients)");
    assert!(out.status.success(), "{}", common::describe(&out));
}

fn heartbeat(broker: &Broker, stream: &str, version: u64, at_ms: i64) {
    publish_as_central(
        broker,
        &format!("rpl/{stream}"),
        &json!({"v": 1, "stream": stream, "current_version": version, "at_ms": at_ms}),
    );
}

fn stream_of<'a>(freshness: &'a Value, stream: &str) -> &'a Value {
    freshness["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stream"] == stream))
        .unwrap_or_else(|| panic!("no {stream} in {freshness}"))
}

fn health_stream(agent: &common::Agent, stream: &str) -> Value {
    agent.health()["replica"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stream"] == stream).cloned())
        .unwrap_or_else(|| panic!("no {stream} in health"))
}

/// Age the streams as if their last change was `ago_ms` before now.
fn changed_ago(replica: &Path, stream: &str, ago_ms: i64) {
    let conn = rusqlite::Connection::open(replica).unwrap();
    conn.execute(
        "UPDATE streams SET applied_ms = ?1 WHERE name = ?2",
        rusqlite::params![now_ms() - ago_ms, stream],
    )
    .unwrap();
}

fn build_snapshot(served: &Path, version: u64, input: &Path) {
    relaisctl(&[
        "snapshot",
        "build",
        "--version",
        &version.to_string(),
        "--out",
        served.to_str().unwrap(),
        &format!("products={}", input.display()),
    ]);
}

#[test]
fn a_catalogue_unchanged_for_3_days_but_confirmed_an_hour_ago_is_fresh_while_stock_silent_for_3_hours_is_stale()
 {
    if skip() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let milk = common::gtin14(400638133393);
    let bread = common::gtin14(400638133394);
    let input = tmp.path().join("catalogue-5.ndjson");
    common::write_ndjson(
        &input,
        &[
            common::product(&milk, "SKU-1", "Milk 1 L"),
            common::product(&bread, "SKU-2", "Bread 500 g"),
        ],
    );
    build_snapshot(&served, 5, &input);
    let server = https::HttpsServer::start(&served);
    let store = Store::with(Settings {
        // The catalogue gets 2 days here (its default is 7) so that 3 days unchanged is stale
        // without a heartbeat; stock keeps its default of 2 h.
        replica: "stale_after = { products = \"2d\" }".into(),
        sync: format!(
            "broker = \"{}\"\nca_file = \"{}\"\nsnapshot_url = \"{}\"\n",
            broker.url(),
            server.ca_file.display(),
            server.url("manifest.json")
        ),
        ..Settings::default()
    });
    store.import_ok(
        "products",
        "p.ndjson",
        &[
            common::product(&milk, "SKU-1", "Milk 1 L"),
            common::product(&bread, "SKU-2", "Bread 500 g"),
        ],
    );
    store.import_ok(
        "stock",
        "s.ndjson",
        &[common::stock("SKU-1", 12), common::stock("SKU-2", 4)],
    );
    changed_ago(&store.replica_db(), "products", 72 * HOUR_MS);
    changed_ago(&store.replica_db(), "stock", 3 * HOUR_MS);
    let agent = store.start();
    wait_until("connected", Duration::from_secs(20), || {
        agent.health()["sync"]["connected"] == json!(true)
    });

    let (_, before) = agent.get_json(&format!("/v1/products/{milk}"));
    assert_eq!(
        stream_of(&before["freshness"], "products")["stale"],
        true,
        "{before}"
    );

    // Central: "products is still current at version 1", sent an hour ago.
    heartbeat(&broker, "products", 1, now_ms() - HOUR_MS);
    wait_until("the catalogue confirmed", Duration::from_secs(20), || {
        health_stream(&agent, "products")["stale"] == false
    });
    let (_, after) = agent.get_json(&format!("/v1/products/{milk}"));
    let products = stream_of(&after["freshness"], "products");
    assert_eq!(products["stale"], false, "{after}");
    let age = products["age_s"].as_f64().unwrap();
    assert!(
        (3_500.0..3_700.0).contains(&age),
        "aged from the heartbeat's time: {age}"
    );
    let stock = stream_of(&after["freshness"], "stock");
    assert_eq!(
        stock["stale"], true,
        "stock has no heartbeat for 3 h: {after}"
    );
    assert!(stock["age_s"].as_f64().unwrap() > 3.0 * 3600.0 - 60.0);
    assert_eq!(
        after["freshness"]["stale"], true,
        "one stale stream flags the answer"
    );

    // A heartbeat for a version older than the live one is a replay: it confirms nothing,
    // even sent just now. The stock heartbeat after it shows it was handled.
    heartbeat(&broker, "products", 0, now_ms());
    heartbeat(&broker, "stock", 1, now_ms());
    wait_until("stock confirmed", Duration::from_secs(20), || {
        health_stream(&agent, "stock")["stale"] == false
    });
    let products = health_stream(&agent, "products");
    assert!(
        products["age_s"].as_f64().unwrap() > 3_500.0,
        "the older heartbeat moved nothing: {products}"
    );
    assert_eq!(products["version"], 1);
    assert!(
        !server
            .requests()
            .iter()
            .any(|r| r.path.contains("products-5")),
        "neither heartbeat fetched a snapshot: {:?}",
        server.requests()
    );

    // Central is at 5 and says so: versions were lost, the agent fetches the snapshot.
    relaisctl(&[
        "publish",
        "--broker",
        &broker.url(),
        "--agent",
        common::AGENT_ID,
        "--heartbeat",
        "products",
        "--current-version",
        "5",
    ]);
    wait_until("products at version 5", Duration::from_secs(30), || {
        health_stream(&agent, "products")["version"] == 5
    });
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.path.contains("products-5") && r.status == 200),
        "{:?}",
        server.requests()
    );
    let products = health_stream(&agent, "products");
    assert_eq!(products["stale"], false, "{products}");
}

fn shadow_exists(replica: &Path) -> bool {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(replica, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return false;
    };
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE name = 'products__shadow'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .is_ok_and(|n| n > 0)
}

fn on_hand(agent: &common::Agent, gtin: &str) -> Option<i64> {
    let (status, p) = agent.get_json(&format!("/v1/products/{gtin}"));
    (status == 200)
        .then(|| p["stock"]["central_on_hand"].as_i64())
        .flatten()
}

#[test]
fn a_stock_delta_published_while_a_large_catalogue_imports_is_applied_before_the_import_finishes() {
    if skip() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let catalogue = tmp.path().join("catalogue.ndjson");
    relais::demo::write_products(&catalogue, 400_000).unwrap();
    build_snapshot(&served, 9, &catalogue);
    let server = https::HttpsServer::start(&served);
    let store = Store::with(Settings {
        sync: format!(
            "broker = \"{}\"\nca_file = \"{}\"\nsnapshot_url = \"{}\"\n",
            broker.url(),
            server.ca_file.display(),
            server.url("manifest.json")
        ),
        ..Settings::default()
    });
    let milk = common::gtin14(400638133393);
    store.import_ok(
        "products",
        "p.ndjson",
        &[common::product(&milk, "SKU-M", "Milk 1 L")],
    );
    store.import_ok("stock", "s.ndjson", &[common::stock("SKU-M", 12)]);
    let agent = store.start();
    wait_until("connected", Duration::from_secs(20), || {
        agent.health()["sync"]["connected"] == json!(true)
    });
    assert_eq!(on_hand(&agent, &milk), Some(12));

    relaisctl(&[
        "publish",
        "--broker",
        &broker.url(),
        "--agent",
        common::AGENT_ID,
        "--refetch",
        "products",
        "--reason",
        "new catalogue",
    ]);
    wait_until(
        "the catalogue import to start",
        Duration::from_secs(60),
        || shadow_exists(&store.replica_db()),
    );
    let published = Instant::now();
    publish_as_central(
        &broker,
        "rpl/stock",
        &json!({"v": 1, "stream": "stock", "version": 2, "ops": [
            {"op": "upsert", "row": {"sku": "SKU-M", "on_hand": 7}}
        ]}),
    );
    wait_until("the stock delta", Duration::from_secs(60), || {
        on_hand(&agent, &milk) == Some(7)
    });
    let applied_after = published.elapsed();
    // The till saw the new stock while the old catalogue was still live and the new one still
    // filling: the delta did not wait for the import.
    assert_eq!(
        health_stream(&agent, "products")["version"],
        1,
        "the catalogue import had already finished ({applied_after:?}): make the catalogue bigger"
    );
    assert!(
        shadow_exists(&store.replica_db()),
        "the import is still filling"
    );
    assert_eq!(health_stream(&agent, "stock")["version"], 2);

    wait_until(
        "the catalogue at version 9",
        Duration::from_secs(120),
        || health_stream(&agent, "products")["version"] == 9,
    );
    let import_done = published.elapsed();
    eprintln!(
        "stock delta applied {applied_after:?} after publishing; the import ended {import_done:?} after it"
    );
    assert!(!shadow_exists(&store.replica_db()));
    // Milk is not in the new catalogue; a product of it is, with the stock the delta left.
    assert_eq!(health_stream(&agent, "stock")["version"], 2);
}
