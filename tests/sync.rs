#![cfg(feature = "central")] // drives central's side: the default `central` feature
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! Sync with a real Mosquitto: lossless uplink through broker crashes, agent crashes and
//! network cuts; dead letters on ACL refusal; birth and Will; downlink deltas.

#[path = "common/broker.rs"]
mod broker;
mod common;
#[path = "support/https.rs"]
mod https;

use broker::{Broker, BrokerOptions, Proxy};
use common::{KillOnDrop, Settings, Store};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RELAISCTL: &str = env!("CARGO_BIN_EXE_relaisctl");

fn skip() -> bool {
    if !broker::available() {
        eprintln!("mosquitto is not installed (scripts/test.sh installs it); skipping");
        return true;
    }
    false
}

/// A store whose agent talks to `broker_url`.
fn store_with_broker(broker_url: &str, extra: &str) -> Store {
    Store::with(Settings {
        sync: format!("broker = \"{broker_url}\"\n{extra}"),
        ..Settings::default()
    })
}

/// `relaisctl ingest` as a child process.
struct Ingest {
    _child: KillOnDrop,
    sink: PathBuf,
}

impl Ingest {
    /// Runs until dropped: it must keep acknowledging resent duplicates after it has every
    /// event, or an agent in `central` mode would wait for acks forever.
    fn start(broker: &Broker, sink: &Path) -> Ingest {
        let child = Command::new(RELAISCTL)
            .args(["ingest", "--broker", &broker.url(), "--json"])
            .arg("--sink")
            .arg(sink)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("relaisctl ingest");
        Ingest {
            _child: KillOnDrop(child),
            sink: sink.to_path_buf(),
        }
    }

    /// Wait until the sink holds `n` distinct events.
    fn wait_for(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = sink_ids(&self.sink).len();
            if got >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the ingest sink holds {got} of {n} events after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn sink_ids(sink: &Path) -> HashSet<String> {
    let Ok(conn) = rusqlite::Connection::open(sink) else {
        return HashSet::new();
    };
    let Ok(mut stmt) = conn.prepare("SELECT id FROM events") else {
        return HashSet::new();
    };
    stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|id| uuid::Uuid::from_slice(&id.unwrap()).unwrap().to_string())
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn outbox_depth(agent: &common::Agent) -> u64 {
    let h = agent.health();
    h["outbox"]["store_fact"]["depth"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

/// A drain of `N` seeded events into a fresh ingest, with `fault` applied once a `part` of
/// them reached central; ends when the sink holds exactly the seeded ids and the outbox is
/// empty.
fn drain_with_fault(
    persistence: bool,
    sync: &str,
    part: usize,
    fault: impl FnOnce(&mut Broker, common::Agent, &Store) -> common::Agent,
) {
    const N: usize = 100_000;
    let mut broker = Broker::start(BrokerOptions { persistence });
    let tmp = tempfile::tempdir().unwrap();
    let sink = tmp.path().join("sink.db");
    // The ingest's persistent session must exist before the agent publishes.
    let ingest = Ingest::start(&broker, &sink);
    std::thread::sleep(Duration::from_millis(300));
    let store = store_with_broker(&broker.url(), sync);
    let ids = store.seed_outbox(N);
    let agent = store.start();
    wait_until("part of the drain", Duration::from_secs(120), || {
        sink_ids(&sink).len() >= N / part
    });
    let agent = fault(&mut broker, agent, &store);
    ingest.wait_for(N, Duration::from_secs(180));
    let got = sink_ids(&sink);
    assert_eq!(got.len(), N);
    assert!(got == ids, "the sink holds exactly the seeded event ids");
    wait_until("the outbox to empty", Duration::from_secs(60), || {
        outbox_depth(&agent) == 0
    });
}

fn drain_through_broker_crash(persistence: bool) {
    // Without broker persistence only central's end-to-end ack can be lossless.
    let sync = "ack = \"central\"\nack_timeout = \"10s\"\n";
    drain_with_fault(persistence, sync, 3, |broker, agent, _| {
        broker.restart();
        agent
    });
}

#[test]
fn a_broker_killed_mid_drain_and_restarted_with_persistence_loses_no_event() {
    if skip() {
        return;
    }
    drain_through_broker_crash(true);
}

#[test]
fn a_broker_killed_mid_drain_and_restarted_without_persistence_loses_no_event() {
    if skip() {
        return;
    }
    drain_through_broker_crash(false);
}

#[test]
fn an_agent_sigkilled_mid_drain_delivers_every_event_after_restart() {
    if skip() {
        return;
    }
    drain_with_fault(false, "", 4, |_, agent, store| {
        agent.kill();
        store.start()
    });
}

#[test]
fn a_network_cut_longer_than_keep_alive_is_noticed_and_facts_recorded_meanwhile_are_delivered() {
    if skip() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    let proxy = Proxy::start(broker.port);
    let tmp = tempfile::tempdir().unwrap();
    let sink = tmp.path().join("sink.db");
    let ingest = Ingest::start(&broker, &sink);
    std::thread::sleep(Duration::from_millis(300));
    let store = store_with_broker(
        &proxy.url(),
        "keep_alive = \"5s\"\nreconnect_max = \"2s\"\n",
    );
    store.import_ok(
        "products",
        "p.ndjson",
        &[common::product(
            &common::gtin14(400638133393),
            "SKU-1",
            "Milk",
        )],
    );
    let agent = store.start();
    let sale = |i: usize| json!({"sku": "SKU-1", "kind": "sale", "qty": 1, "client_key": format!("sale-{i}")});
    for i in 0..20 {
        let (status, body) = agent.post_movement(&sale(i));
        assert_eq!(status, 201, "{body}");
    }
    wait_until(
        "the first sales at central",
        Duration::from_secs(30),
        || sink_ids(&sink).len() >= 20,
    );
    proxy.blackhole(true);
    wait_until(
        "the agent to notice the dead link",
        Duration::from_secs(30),
        || agent.health()["sync"]["connected"] == json!(false),
    );
    for i in 20..40 {
        let (status, body) = agent.post_movement(&sale(i));
        assert_eq!(status, 201, "a sale is recorded while offline: {body}");
    }
    // The 20 offline sales wait in the outbox, with any earlier ones whose PUBACK was lost in
    // the cut: those go out again (a duplicate the ingest absorbs), never missing.
    let depth = outbox_depth(&agent);
    assert!(
        (20..=40).contains(&depth),
        "outbox depth {depth} while offline"
    );
    proxy.blackhole(false);
    ingest.wait_for(40, Duration::from_secs(60));
    assert_eq!(sink_ids(&sink).len(), 40);
    wait_until("the outbox to empty", Duration::from_secs(30), || {
        outbox_depth(&agent) == 0
    });
}

#[test]
fn a_publish_refused_by_the_broker_acl_is_dead_lettered_with_an_alarm_and_can_be_requeued() {
    if skip() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    // Username of another agent: the ACL pattern relais/v1/%u/# refuses our topics.
    let store = store_with_broker(&broker.url(), "username = \"other-store/agent-9\"\n");
    store.seed_outbox(10);
    let agent = store.start();
    wait_until("the refusal", Duration::from_secs(30), || {
        agent.health()["dead_letters"].as_u64() == Some(10)
    });
    let health = agent.health();
    assert!(
        health["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["code"] == "uplink_refused"),
        "{health}"
    );
    assert_eq!(
        health["outbox"]["store_fact"]["depth"], 0,
        "dead letters are not queued"
    );
    // Nothing is retried while parked: the count stays put.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(agent.health()["dead_letters"], 10);
    let (status, body) = agent.post_raw("/v1/outbox/requeue", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["requeued"], 10);
}

fn fleet_status(broker: &Broker) -> Value {
    let out = Command::new(RELAISCTL)
        .args([
            "fleet",
            "status",
            "--json",
            "--broker",
            &broker.url(),
            "--settle",
            "500ms",
        ])
        .output()
        .expect("fleet status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("fleet json")
}

#[test]
fn the_birth_state_is_retained_and_the_will_marks_a_killed_agent_offline() {
    if skip() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    let store = store_with_broker(&broker.url(), "");
    store.seed_outbox(3);
    let agent = store.start();
    wait_until(
        "the agent online in the fleet",
        Duration::from_secs(20),
        || {
            fleet_status(&broker).as_array().is_some_and(|a| {
                a.iter()
                    .any(|e| e["agent"] == common::AGENT_ID && e["online"] == true)
            })
        },
    );
    let fleet = fleet_status(&broker);
    let me = fleet
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["agent"] == common::AGENT_ID)
        .unwrap()
        .clone();
    let birth = &me["state"]["birth"];
    assert_eq!(birth["software"], env!("CARGO_PKG_VERSION"));
    assert!(birth["boot"].as_u64().unwrap() >= 1);
    assert_eq!(birth["replica"].as_array().unwrap().len(), 5);
    assert_eq!(birth["config"]["hash"].as_str().unwrap().len(), 64);
    agent.kill();
    wait_until("the Will", Duration::from_secs(20), || {
        fleet_status(&broker).as_array().is_some_and(|a| {
            a.iter()
                .any(|e| e["agent"] == common::AGENT_ID && e["online"] == false)
        })
    });
}

fn publish_deltas(broker: &Broker, deltas: &[Value]) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("deltas.ndjson");
    common::write_ndjson(&path, deltas);
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
}

fn stream_version(agent: &common::Agent, stream: &str) -> u64 {
    agent.health()["replica"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"] == stream)
        .and_then(|s| s["version"].as_u64())
        .unwrap_or(0)
}

#[test]
fn deltas_apply_in_order_a_replay_changes_nothing_and_a_bad_one_pauses_the_stream() {
    if skip() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    let store = store_with_broker(&broker.url(), "");
    let milk = common::gtin14(400638133393);
    store.import_ok(
        "products",
        "p.ndjson",
        &[common::product(&milk, "SKU-1", "Milk")],
    );
    let agent = store.start();
    wait_until("connected", Duration::from_secs(20), || {
        agent.health()["sync"]["connected"] == json!(true)
    });
    let v2 = json!({"v": 1, "stream": "products", "version": 2, "ops": [
        {"op": "upsert", "row": {"gtin": milk, "sku": "SKU-1", "name": "Whole milk 1 L"}}
    ]});
    publish_deltas(&broker, std::slice::from_ref(&v2));
    wait_until("version 2", Duration::from_secs(20), || {
        stream_version(&agent, "products") == 2
    });
    let (_, p) = agent.get_json(&format!("/v1/products/{milk}"));
    assert_eq!(p["name"], "Whole milk 1 L", "{p}");

    // The same delta again, then a stale one: nothing changes.
    let stale = json!({"v": 1, "stream": "products", "version": 1, "ops": [
        {"op": "upsert", "row": {"gtin": milk, "sku": "SKU-1", "name": "Old name"}}
    ]});
    publish_deltas(&broker, &[v2, stale]);
    std::thread::sleep(Duration::from_millis(500));
    let (_, p) = agent.get_json(&format!("/v1/products/{milk}"));
    assert_eq!(p["name"], "Whole milk 1 L");
    assert_eq!(stream_version(&agent, "products"), 2);

    // A delta with a bad check digit is refused whole; the stream pauses and says why.
    let bad = json!({"v": 1, "stream": "products", "version": 3, "ops": [
        {"op": "upsert", "row": {"gtin": "4006381333932", "sku": "SKU-2", "name": "Bad"}}
    ]});
    publish_deltas(&broker, &[bad]);
    wait_until("the stream to pause", Duration::from_secs(20), || {
        agent.health()["sync"]["paused_streams"]
            .as_array()
            .is_some_and(|p| p.iter().any(|s| s["stream"] == "products"))
    });
    assert_eq!(
        stream_version(&agent, "products"),
        2,
        "the last good replica stays"
    );
    wait_until(
        "the pause reported on state",
        Duration::from_secs(20),
        || {
            fleet_status(&broker).as_array().is_some_and(|a| {
                a.iter().any(|e| {
                    e["state"]["birth"]["paused_streams"]
                        .as_array()
                        .is_some_and(|p| p.iter().any(|s| s["stream"] == "products"))
                })
            })
        },
    );
    let (status, _) = agent.get_json(&format!("/v1/products/{milk}"));
    assert_eq!(status, 200, "lookups keep working on the last good data");
}

fn relaisctl(args: &[&str]) -> std::process::Output {
    let out = Command::new(RELAISCTL)
        .args(args)
        .output()
        .expect("relaisctl");
    assert!(
        out.status.success(),
        "relaisctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn build_snapshot(dir: &Path, version: u64, products: &[Value]) {
    let input = dir.join(format!("products-input-{version}.ndjson"));
    common::write_ndjson(&input, products);
    relaisctl(&[
        "snapshot",
        "build",
        "--version",
        &version.to_string(),
        "--out",
        dir.to_str().unwrap(),
        &format!("products={}", input.display()),
    ]);
}

fn product_name(agent: &common::Agent, gtin: &str) -> Option<String> {
    let (status, p) = agent.get_json(&format!("/v1/products/{gtin}"));
    (status == 200).then(|| p["name"].as_str().unwrap_or_default().to_string())
}

#[test]
fn a_delta_gap_fetches_the_snapshot_over_https_then_applies_the_deltas_after_it_and_must_refetch_fetches_again()
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
    build_snapshot(
        &served,
        11,
        &[
            common::product(&milk, "SKU-1", "Milk v11"),
            common::product(&bread, "SKU-2", "Bread v11"),
        ],
    );
    let server = https::HttpsServer::start(&served);
    let store = store_with_broker(
        &broker.url(),
        &format!(
            "ca_file = \"{}\"\nsnapshot_url = \"{}\"\n",
            server.ca_file.display(),
            server.url("manifest.json")
        ),
    );
    store.import_ok(
        "products",
        "p.ndjson",
        &[common::product(&milk, "SKU-1", "Milk v1")],
    );
    let agent = store.start();
    wait_until("connected", Duration::from_secs(20), || {
        agent.health()["sync"]["connected"] == json!(true)
    });
    assert_eq!(
        product_name(&agent, &bread),
        None,
        "not in the local replica yet"
    );

    // Central is at 12; the agent at 1: a gap. The agent fetches snapshot 11, then applies 12.
    publish_deltas(
        &broker,
        &[json!({"v": 1, "stream": "products", "version": 12, "ops": [
            {"op": "upsert", "row": {"gtin": milk, "sku": "SKU-1", "name": "Milk v12"}}
        ]})],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while stream_version(&agent, "products") != 12 {
        assert!(
            Instant::now() < deadline,
            "no version 12: {}\n{}",
            agent.health(),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(product_name(&agent, &bread).as_deref(), Some("Bread v11"));
    assert_eq!(product_name(&agent, &milk).as_deref(), Some("Milk v12"));
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.path.contains("products-11") && r.status == 200),
        "{:?}",
        server.requests()
    );

    // Central rebuilt its catalogue: must_refetch makes the agent take snapshot 20.
    build_snapshot(&served, 20, &[common::product(&milk, "SKU-1", "Milk v20")]);
    relaisctl(&[
        "publish",
        "--broker",
        &broker.url(),
        "--agent",
        common::AGENT_ID,
        "--refetch",
        "products",
        "--reason",
        "catalogue rebuilt",
    ]);
    wait_until("version 20", Duration::from_secs(60), || {
        stream_version(&agent, "products") == 20
    });
    assert_eq!(product_name(&agent, &milk).as_deref(), Some("Milk v20"));
    assert_eq!(
        product_name(&agent, &bread),
        None,
        "the snapshot replaced the stream"
    );
    assert!(
        agent.health()["sync"]["paused_streams"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_replica_moved_aside_at_startup_is_rebuilt_from_the_snapshot_at_the_first_connection() {
    use std::os::unix::fs::FileExt;
    if skip() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let catalogue = tmp.path().join("catalogue.ndjson");
    relais::demo::write_products(&catalogue, 3000).unwrap();
    relaisctl(&[
        "snapshot",
        "build",
        "--version",
        "7",
        "--out",
        served.to_str().unwrap(),
        &format!("products={}", catalogue.display()),
    ]);
    let server = https::HttpsServer::start(&served);
    let store = store_with_broker(
        &broker.url(),
        &format!(
            "ca_file = \"{}\"\nsnapshot_url = \"{}\"\n",
            server.ca_file.display(),
            server.url("manifest.json")
        ),
    );
    let out = store.import_file("products", &catalogue, Some(5));
    common::assert_success(&out, "import");
    // Damage the middle third of replica.db: the next start moves it aside.
    let path = store.replica_db();
    let len = std::fs::metadata(&path).unwrap().len();
    let garbage: Vec<u8> = (0..len / 3)
        .map(|i| (i as u8).wrapping_mul(37) ^ 0xA5)
        .collect();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&garbage, len / 3).unwrap();
    file.sync_all().unwrap();
    drop(file);

    let agent = store.start();
    wait_until(
        "the rebuilt products stream",
        Duration::from_secs(60),
        || stream_version(&agent, "products") == 7,
    );
    let health = agent.health();
    assert!(
        health["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["code"] == "replica_rebuilt"),
        "{health}"
    );
    assert!(
        health["sync"]["paused_streams"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{health}"
    );
}

#[test]
fn a_sale_posted_at_the_till_lowers_stock_and_reaches_central_through_the_broker() {
    if skip() {
        return;
    }
    let broker = Broker::start(BrokerOptions { persistence: false });
    let tmp = tempfile::tempdir().unwrap();
    let sink = tmp.path().join("sink.db");
    let _ingest = Ingest::start(&broker, &sink);
    let store = store_with_broker(&broker.url(), "");
    let gtin = common::gtin14(400_638_133_394);
    store.import_ok(
        "products",
        "products.ndjson",
        &[common::product(&gtin, "SKU-E2E", "End to end")],
    );
    store.import_ok("stock", "stock.ndjson", &[common::stock("SKU-E2E", 5)]);
    let agent = store.start();
    let (status, sale) = agent.post_json(
        "/v1/sales",
        &json!({"client_key": "till-9/r-1", "lines": [{"code": gtin, "qty": 2}]}),
    );
    assert_eq!(status, 201, "{sale}");
    let (_, product) = agent.get_json(&format!("/v1/products/{gtin}"));
    assert_eq!(
        product["stock"]["on_hand"], 3,
        "stock down at once: {product}"
    );
    // Delivered: central's sink holds the sale, under the id the till was given.
    let id = sale["id"].as_str().unwrap().to_owned();
    wait_until("the sale at central", Duration::from_secs(30), || {
        sink_ids(&sink).contains(&id)
    });
    let conn = rusqlite::Connection::open(&sink).unwrap();
    let (kind, payload): (String, String) = conn
        .query_row("SELECT type, payload FROM events", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(kind, "sale.recorded");
    let payload: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(payload["lines"][0]["sku"], "SKU-E2E");
    wait_until("the outbox to empty", Duration::from_secs(30), || {
        outbox_depth(&agent) == 0
    });
}

/// VmRSS of a process, in MB.
fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[test]
fn deltas_flooding_in_while_a_snapshot_downloads_keep_the_agent_s_memory_bounded() {
    if skip() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    // A snapshot server that accepts and never answers: the refetch stays in progress.
    let stall = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = stall.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = std::sync::Arc::clone(&held);
    std::thread::spawn(move || {
        for conn in stall.incoming().flatten() {
            keep.lock().unwrap().push(conn);
        }
    });
    let store = store_with_broker(
        &broker.url(),
        &format!("snapshot_url = \"https://127.0.0.1:{port}/manifest.json\"\n"),
    );
    let agent = store.start();
    wait_until("connected", Duration::from_secs(20), || {
        agent.health()["sync"]["connected"] == json!(true)
    });
    relaisctl(&[
        "publish",
        "--broker",
        &broker.url(),
        "--agent",
        common::AGENT_ID,
        "--refetch",
        "products",
    ]);
    wait_until("the refetch to start", Duration::from_secs(20), || {
        !held.lock().unwrap().is_empty()
    });
    let start = rss_mb(agent.pid());
    // Valid deltas of ~3.4 MB each arrive while the snapshot downloads, in two waves: what the
    // agent holds must not grow with the flood.
    let wave = |first: u64| -> Vec<Value> {
        (first..first + 8)
            .map(|d| {
                let ops: Vec<Value> = (0..40_000u64)
                    .map(|i| {
                        let gtin = common::gtin14(4_000_000_000 + d * 40_000 + i);
                        json!({"op": "upsert", "row": {"gtin": gtin, "sku": format!("SKU-{d}-{i}"),
                               "name": format!("Flood item {d}/{i}")}})
                    })
                    .collect();
                json!({"v": 1, "stream": "products", "version": d + 2, "ops": ops})
            })
            .collect()
    };
    publish_deltas(&broker, &wave(0));
    wait_until(
        "the flood to be dropped past the bound",
        Duration::from_secs(60),
        || {
            agent
                .log_text()
                .contains("delta dropped while the snapshot downloads")
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let first = rss_mb(agent.pid());
    publish_deltas(&broker, &wave(8));
    // Every delta is buffered (a few, within the bound) or dropped, at the queue or the buffer.
    let dropped = || {
        let log = agent.log_text();
        log.matches("delta dropped while the snapshot downloads")
            .count()
            + log.matches("downlink message dropped").count()
    };
    wait_until(
        "the second wave to be handled",
        Duration::from_secs(60),
        || dropped() >= 16 - 4,
    );
    std::thread::sleep(Duration::from_millis(500));
    let second = rss_mb(agent.pid());
    eprintln!(
        "floods of 2 × 8 deltas (~27 MB of JSON each) during a refetch: RSS {start:.0} → \
         {first:.0} → {second:.0} MB"
    );
    assert!(
        second - first < 48.0 && second < 256.0,
        "RSS went {start:.0} → {first:.0} → {second:.0} MB: it grows with the flood"
    );
    assert!(
        agent.health()["status"].is_string(),
        "the agent still answers"
    );
}

/// `mosquitto_pub` as central's identity, on one of the agent's topics.
fn publish_as_central(broker: &Broker, topic: &str, payload: &str) {
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-u", "central", "-q", "1", "-m", payload])
        .args(["-t", &format!("relais/v1/{}/{topic}", common::AGENT_ID)])
        .output()
        .expect("mosquitto_pub (apt-get install mosquitto-clients)");
    assert!(out.status.success(), "{}", common::describe(&out));
}

#[test]
fn a_forged_central_ack_for_seqs_not_yet_sent_deletes_nothing_and_they_still_reach_central() {
    if skip() {
        return;
    }
    const N: usize = 200;
    let broker = Broker::start(BrokerOptions::default());
    // One event per batch, one batch in flight, and (central mode) at most 8 awaiting central:
    // with no ingest running, the agent sends about 9 events and waits; the rest stay unsent.
    let store = store_with_broker(
        &broker.url(),
        "ack = \"central\"\nack_timeout = \"2s\"\nbatch_max_events = 1\ninflight_batches = 1\n",
    );
    let ids = store.seed_outbox(N);
    let agent = store.start();
    wait_until("the agent to deliver", Duration::from_secs(30), || {
        agent.health()["sync"]["connected"] == json!(true)
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(outbox_depth(&agent), N as u64, "nothing acked yet");
    // Someone who can publish on the agent's `ack` topic (or a stale ack from a central that
    // lost its state) claims central has seqs the agent never sent on this connection.
    let forged = json!({"v": 1, "seqs": [[N as u64 / 2, N as u64 + 1000]]}).to_string();
    publish_as_central(&broker, "ack", &forged);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        outbox_depth(&agent),
        N as u64,
        "a forged ack deleted facts central never got"
    );
    // The real central comes up: every seeded event arrives, none was lost to the forgery.
    let tmp = tempfile::tempdir().unwrap();
    let ingest = Ingest::start(&broker, &tmp.path().join("sink.db"));
    ingest.wait_for(N, Duration::from_secs(120));
    assert!(sink_ids(&ingest.sink) == ids, "exactly the seeded events");
    wait_until("the outbox to empty", Duration::from_secs(60), || {
        outbox_depth(&agent) == 0
    });
}

#[test]
fn sigterm_during_a_snapshot_download_that_hangs_mid_file_exits_within_seconds_and_cleanly() {
    if skip() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let products: Vec<Value> = (0..5_000u64)
        .map(|i| {
            let gtin = common::gtin14(4_100_000_000 + i);
            common::product(&gtin, &format!("SKU-{i}"), &format!("Item {i}"))
        })
        .collect();
    build_snapshot(&served, 11, &products);
    let server = https::HttpsServer::start(&served);
    // The manifest answers; the products file sends 4 KiB and then hangs, well inside the
    // client's 30 s read timeout, and would again at every retry.
    server.stall_responses_after("products-", 4096);
    let store = store_with_broker(
        &broker.url(),
        &format!(
            "ca_file = \"{}\"\nsnapshot_url = \"{}\"\n",
            server.ca_file.display(),
            server.url("manifest.json")
        ),
    );
    let agent = store.start();
    // An empty replica fetches its snapshot at the first connection.
    wait_until("the download to hang", Duration::from_secs(30), || {
        server
            .requests()
            .iter()
            .any(|r| r.path.starts_with("products-") && r.body_bytes == 4096)
    });
    std::thread::sleep(Duration::from_millis(500));
    let log = agent.log_lines();
    let started = Instant::now();
    let status = agent.terminate();
    let took = started.elapsed();
    eprintln!("SIGTERM during a hung snapshot download: exited in {took:?} ({status})");
    std::thread::sleep(Duration::from_millis(200));
    let log = log.lock().unwrap().join("\n");
    assert!(status.success(), "normal shutdown, exit 0: {status}\n{log}");
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM took {took:?} (TimeoutStopSec is 30 s)\n{log}"
    );
    assert!(
        log.contains("stopped cleanly"),
        "the normal shutdown path ran to its end:\n{log}"
    );
}

/// Names of the `*.damaged-*` files in the data directory.
fn damaged_copies(store: &Store) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&store.data_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".damaged-"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_damaged_replica_copy_holding_a_customer_is_deleted_at_her_erasure_and_old_copies_expire() {
    use std::os::unix::fs::FileExt;
    if skip() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    let store = store_with_broker(&broker.url(), "");
    let tmp = tempfile::tempdir().unwrap();
    let catalogue = tmp.path().join("catalogue.ndjson");
    relais::demo::write_products(&catalogue, 3000).unwrap();
    common::assert_success(
        &store.import_file("products", &catalogue, Some(5)),
        "import",
    );
    store.import_ok(
        "customers",
        "customers.ndjson",
        &[json!({"customer_id": "C-1", "display_name": "Zelda Quux", "loyalty_balance": 10})],
    );
    // Damage the middle third of replica.db (products): the next start moves it aside, with
    // the customer still readable in it.
    let path = store.replica_db();
    let len = std::fs::metadata(&path).unwrap().len();
    let garbage: Vec<u8> = (0..len / 3).map(|i| (i as u8) ^ 0x5A).collect();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&garbage, len / 3).unwrap();
    file.sync_all().unwrap();
    drop(file);
    // Copies left by earlier damage: two past disk.damaged_copies_keep (7 days by default),
    // and an outbox copy of an hour ago, which may hold undelivered store facts.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let old = now - 8 * 86_400;
    let recent_outbox = format!("outbox.db.damaged-{}", now - 3600);
    for name in [
        format!("replica.db.damaged-{old}"),
        format!("outbox.db.damaged-{old}"),
        recent_outbox.clone(),
    ] {
        std::fs::write(store.data_dir.join(name), b"Zelda Quux").unwrap();
    }

    let agent = store.start();
    wait_until("connected", Duration::from_secs(20), || {
        agent.health()["sync"]["connected"] == json!(true)
    });
    let copies = damaged_copies(&store);
    let fresh: Vec<&String> = copies
        .iter()
        .filter(|n| n.starts_with("replica.db.damaged-") && !n.contains(&old.to_string()))
        .collect();
    assert_eq!(
        fresh.len(),
        1,
        "the damaged replica moved aside: {copies:?}"
    );
    assert!(
        !copies.iter().any(|n| n.contains(&old.to_string())),
        "copies past the retention are deleted at startup: {copies:?}"
    );
    let held = std::fs::read(store.data_dir.join(fresh[0])).unwrap();
    assert!(
        held.windows(10).any(|w| w == b"Zelda Quux"),
        "the damaged copy holds the customer"
    );
    // Central erases the customer (GDPR): the damaged copy must not keep her.
    publish_deltas(
        &broker,
        &[json!({"v": 1, "stream": "customers", "version": 1, "ops": [
            {"op": "delete", "key": {"customer_id": "C-1"}}
        ]})],
    );
    wait_until(
        "the damaged replica copies to go",
        Duration::from_secs(30),
        || {
            !damaged_copies(&store)
                .iter()
                .any(|n| n.starts_with("replica.db.damaged-"))
        },
    );
    assert_eq!(
        damaged_copies(&store),
        vec![recent_outbox],
        "the recent outbox copy is kept for recovery until its retention"
    );
    wait_until("the deletion in the log", Duration::from_secs(5), || {
        agent
            .log_text()
            .contains("damaged replica copies deleted with the erasure")
    });
}
