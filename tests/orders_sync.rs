#![cfg(feature = "central")] // drives central's side: the default `central` feature
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! Ship-from-store from central's side: `relaisctl` builds a reservations snapshot and publishes
//! a reservations delta carrying ship orders (`fulfilment: ship`), through a real Mosquitto; the
//! agent applies it and the store ships the order.

#[path = "common/broker.rs"]
mod broker;
mod common;

use broker::{Broker, BrokerOptions};
use common::{Settings, Store, gtin14, product, stock};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

const RELAISCTL: &str = env!("CARGO_BIN_EXE_relaisctl");

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn reservations_version(agent: &common::Agent) -> u64 {
    agent.health()["replica"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"] == "reservations")
        .and_then(|s| s["version"].as_u64())
        .unwrap_or(0)
}

#[test]
fn relaisctl_builds_a_snapshot_with_a_ship_order_and_refuses_an_unknown_fulfilment() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("reservations.ndjson");
    common::write_ndjson(
        &good,
        &[
            json!({"order_id": "SHIP-1", "line": 1, "sku": "SKU-1", "qty": 2, "status": "open",
                   "fulfilment": "ship"}),
            json!({"order_id": "WEB-1", "line": 1, "sku": "SKU-1", "qty": 1, "status": "picked",
                   "pickup_code": "PU-1"}),
        ],
    );
    let build = |input: &std::path::Path, out: &str| {
        Command::new(RELAISCTL)
            .args(["snapshot", "build", "--version", "7", "--out"])
            .arg(tmp.path().join(out))
            .arg(format!("reservations={}", input.display()))
            .output()
            .expect("relaisctl")
    };
    let out = build(&good, "published");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tmp.path().join("published/manifest.json").exists());
    let bad = tmp.path().join("bad.ndjson");
    common::write_ndjson(
        &bad,
        &[
            json!({"order_id": "SHIP-1", "line": 1, "sku": "SKU-1", "qty": 2, "status": "open",
                 "fulfilment": "drone"}),
        ],
    );
    let out = build(&bad, "refused");
    assert!(!out.status.success(), "an unknown fulfilment is refused");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expected `collect` or `ship`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_ship_order_published_by_relaisctl_reserves_its_units_and_ships_from_the_store() {
    if !broker::available() {
        eprintln!("mosquitto is not installed (scripts/test.sh installs it); skipping");
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    let store = Store::with(Settings {
        sync: format!("broker = \"{}\"\n", broker.url()),
        ..Settings::default()
    });
    let milk = gtin14(400_638_133_393);
    store.import_ok("products", "p.ndjson", &[product(&milk, "SKU-1", "Milk")]);
    store.import_ok("stock", "s.ndjson", &[stock("SKU-1", 10)]);
    let agent = store.start();
    wait_until("connected", Duration::from_secs(20), || {
        agent.health()["sync"]["connected"] == json!(true)
    });
    let delta = json!({"v": 1, "stream": "reservations", "version": 1, "ops": [
        {"op": "upsert", "row": {"order_id": "SHIP-9", "line": 1, "sku": "SKU-1", "qty": 3,
                                  "status": "open", "fulfilment": "ship"}}
    ]});
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("deltas.ndjson");
    common::write_ndjson(&path, &[delta]);
    let out = Command::new(RELAISCTL)
        .args([
            "publish",
            "--broker",
            &broker.url(),
            "--agent",
            common::AGENT_ID,
            "--deltas",
        ])
        .arg(&path)
        .output()
        .expect("publish");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the delta applied", Duration::from_secs(20), || {
        reservations_version(&agent) == 1
    });
    let stock_of = || {
        let (_, body) = agent.get_json(&format!("/v1/products/{milk}"));
        (
            body["stock"]["on_hand"].as_i64().unwrap(),
            body["stock"]["available"].as_i64().unwrap(),
        )
    };
    assert_eq!(stock_of(), (10, 7), "the ship order's units are reserved");
    for (step, body) in [
        ("picked", json!({})),
        ("packed", json!({})),
        (
            "shipped",
            json!({"carrier": "UPS", "tracking_number": "1Z999AA10123456784"}),
        ),
    ] {
        let (status, answer) = agent.post_json(&format!("/v1/shipments/SHIP-9/{step}"), &body);
        assert_eq!(status, 201, "{step}: {answer}");
    }
    assert_eq!(
        stock_of(),
        (7, 7),
        "shipped: on-hand down, available unchanged"
    );
}
