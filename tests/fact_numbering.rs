#![cfg(feature = "central")] // drives central's side: the default `central` feature
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! Central proves it holds every store fact (issue 15, ADR 0026): store facts carry a gap-free
//! `fact_seq`, the agent reports "store facts through N at seq S" on `…/facts`, and
//! `relaisctl ingest` turns both into the watermark central may publish — through dropped
//! telemetry (gaps in `seq`) and an ingest killed mid-drain. A real Mosquitto, the real agent
//! and the real `relaisctl`.

#[path = "common/broker.rs"]
mod broker;
mod common;

use broker::{Broker, BrokerOptions};
use common::{KillOnDrop, Settings, Store};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RELAISCTL: &str = env!("CARGO_BIN_EXE_relaisctl");

fn ingest(broker: &Broker, sink: &Path) -> KillOnDrop {
    let child = Command::new(RELAISCTL)
        .args(["ingest", "--broker", &broker.url(), "--json"])
        .arg("--sink")
        .arg(sink)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("relaisctl ingest");
    KillOnDrop(child)
}

/// `relaisctl facts --sink … --json`: one row per agent and numbering.
fn facts(sink: &Path) -> Vec<Value> {
    if !sink.exists() {
        return Vec::new();
    }
    let out = Command::new(RELAISCTL)
        .args(["facts", "--json", "--sink"])
        .arg(sink)
        .output()
        .expect("relaisctl facts");
    if !out.status.success() {
        // The ingest may hold the sink's write lock for a moment: try again.
        return Vec::new();
    }
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap_or_default()
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Store facts with scans between them, in an outbox whose telemetry quota drops most scans:
/// `seq` has gaps only telemetry made. Returns (facts, the newest seq).
fn seed_with_dropped_telemetry(store: &Store, facts: usize) -> (usize, u64) {
    use relais::domain::{MovementKind, StoreFact};
    use relais::outbox::{AppendRequest, EventDraft, RetentionClass};
    std::fs::create_dir_all(&store.data_dir).unwrap();
    let settings = relais::outbox::writer::WriterSettings {
        group_commit_max: 256,
        telemetry_quota_rows: 50,
        low_free_mb: 0,
        seq_floor: 0,
        checkpoint_pages: relais::outbox::writer::DEFAULT_CHECKPOINT_PAGES,
        prune: Default::default(),
    };
    let (handle, writer) =
        relais::outbox::OutboxWriter::start(&store.outbox_db(), settings).expect("outbox");
    let requests = (0..facts).flat_map(|i| {
        let scans = (0..3).map(|_| {
            AppendRequest::event(EventDraft {
                event_type: "scan.read",
                schema: 1,
                class: RetentionClass::Telemetry,
                payload_json: r#"{"code":"3001000000004"}"#.into(),
            })
        });
        scans.chain(std::iter::once(AppendRequest::fact(
            StoreFact::stock_movement(MovementKind::Sale, &format!("SKU-{}", i % 31), 1),
        )))
    });
    handle.append_pipelined_blocking(requests).expect("seed");
    let last_seq = handle.stats().last_seq;
    drop(handle);
    writer.join();
    (facts, last_seq)
}

#[test]
fn central_holds_every_store_fact_through_the_agents_report_despite_dropped_telemetry_and_a_killed_ingest()
 {
    if !broker::available() {
        eprintln!("mosquitto is not installed (scripts/test.sh installs it); skipping");
        return;
    }
    let broker = Broker::start(BrokerOptions { persistence: false });
    let tmp = tempfile::tempdir().unwrap();
    let sink = tmp.path().join("sink.db");
    let mut central = ingest(&broker, &sink);
    std::thread::sleep(Duration::from_millis(300));
    let store = Store::with(Settings {
        sync: format!(
            "broker = \"{}\"\nack = \"central\"\nack_timeout = \"5s\"\n",
            broker.url()
        ),
        ..Settings::default()
    });
    let (seeded, seeded_seq) = seed_with_dropped_telemetry(&store, 3_000);
    let gtin = common::gtin14(400_638_133_394);
    store.import_ok(
        "products",
        "products.ndjson",
        &[common::product(&gtin, "SKU-F", "Fact numbering")],
    );
    let agent = store.start();

    // The ingest dies mid-drain; what it did not commit is resent to its successor.
    wait_for("part of the drain", Duration::from_secs(60), || {
        facts(&sink)
            .first()
            .is_some_and(|r| r["contiguous"].as_u64().unwrap_or(0) >= 500)
    });
    let _ = central.0.kill();
    let _ = central.0.wait();
    std::thread::sleep(Duration::from_millis(500));
    central = ingest(&broker, &sink);

    wait_for("every seeded fact held", Duration::from_secs(120), || {
        facts(&sink).first().is_some_and(|r| {
            r["contiguous"].as_u64() == Some(seeded as u64)
                && r["reported"].as_u64() == Some(seeded as u64)
        })
    });
    let row = facts(&sink).remove(0);
    assert_eq!(row["agent"], common::AGENT_ID);
    assert_eq!(row["missing"], 0, "{row}");
    assert_eq!(row["superseded"], false, "{row}");
    // Every fact is held, so the watermark reaches the agent's newest seq at its report, past
    // the telemetry dropped at the end of the backlog.
    assert!(
        row["watermark_seq"].as_u64().unwrap() >= seeded_seq,
        "watermark {} below the seeded outbox's newest seq {seeded_seq}: {row}",
        row["watermark_seq"]
    );
    let held: u64 = rusqlite::Connection::open(&sink)
        .unwrap()
        .query_row(
            "SELECT COUNT(DISTINCT fact_seq) FROM events WHERE fact_seq IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(held, seeded as u64, "each fact held once");

    // Two tills' tickets now: numbered right after the backlog, and the watermark follows them.
    let mut last_sale_seq = 0;
    for till in ["till-1", "till-2"] {
        let (status, sale) = agent.post_json(
            "/v1/sales",
            &json!({"client_key": format!("{till}/r1"), "currency": "EUR",
                    "lines": [{"code": gtin, "qty": 1, "unit_price_minor": 250},
                              {"code": gtin, "qty": 2, "unit_price_minor": 250}]}),
        );
        assert_eq!(status, 201, "{sale}");
        last_sale_seq = sale["seq"].as_u64().unwrap();
    }
    wait_for(
        "the two tickets held and reported",
        Duration::from_secs(30),
        || {
            facts(&sink).first().is_some_and(|r| {
                r["contiguous"].as_u64() == Some(seeded as u64 + 2)
                    && r["watermark_seq"].as_u64().unwrap_or(0) >= last_sale_seq
            })
        },
    );
    drop(central);
}

/// `relaisctl ingest` as one worker of a shared-subscription group.
fn worker(broker: &Broker, sink: &Path, name: &str, stdout: Stdio) -> std::process::Child {
    Command::new(RELAISCTL)
        .args([
            "ingest",
            "--broker",
            &broker.url(),
            "--json",
            "--share",
            "ingest",
        ])
        // No idle exit: under a loaded CI machine a pause between resends is no reason to stop.
        .args(["--client-id", name])
        .arg("--sink")
        .arg(sink)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("relaisctl ingest worker")
}

#[test]
fn two_ingest_workers_share_the_agents_events_and_one_killed_mid_stream_loses_and_doubles_nothing()
{
    if !broker::available() {
        eprintln!("mosquitto is not installed (scripts/test.sh installs it); skipping");
        return;
    }
    const FACTS: usize = 20_000;
    let broker = Broker::start(BrokerOptions { persistence: false });
    let tmp = tempfile::tempdir().unwrap();
    let sink = tmp.path().join("sink.db");
    let doomed = KillOnDrop(worker(&broker, &sink, "ingest-a", Stdio::null()));
    // Killed if the test fails before it stops it.
    let mut survivor = KillOnDrop(worker(&broker, &sink, "ingest-b", Stdio::piped()));
    std::thread::sleep(Duration::from_millis(500));
    let store = Store::with(Settings {
        sync: format!(
            "broker = \"{}\"\nack = \"central\"\nack_timeout = \"3s\"\n",
            broker.url()
        ),
        ..Settings::default()
    });
    let ids = store.seed_outbox(FACTS);
    let agent = store.start();
    wait_for("part of the drain", Duration::from_secs(60), || {
        facts(&sink)
            .first()
            .is_some_and(|r| r["contiguous"].as_u64().unwrap_or(0) >= FACTS as u64 / 5)
    });
    // Worker A dies with batches in flight and never comes back: the agent resends what it
    // never acknowledged, and the broker gives it to worker B.
    drop(doomed);
    wait_for("every fact held", Duration::from_secs(240), || {
        facts(&sink)
            .first()
            .is_some_and(|r| r["contiguous"].as_u64() == Some(FACTS as u64))
    });
    let conn = rusqlite::Connection::open(&sink).unwrap();
    let (rows, distinct): (i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COUNT(DISTINCT fact_seq) FROM events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (rows, distinct),
        (FACTS as i64, FACTS as i64),
        "each fact once"
    );
    let held: std::collections::HashSet<String> = conn
        .prepare("SELECT id FROM events")
        .unwrap()
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|id| uuid::Uuid::from_slice(&id.unwrap()).unwrap().to_string())
        .collect();
    assert!(held == ids, "the sink holds exactly the agent's facts");
    let depth = || agent.health()["outbox"]["store_fact"]["depth"].as_u64();
    wait_for(
        "the agent's outbox to empty",
        Duration::from_secs(30),
        || depth() == Some(0),
    );
    // B took only its share before A died: the broker split the stream between them.
    // SIGINT: the worker stops cleanly and prints its report.
    let stopped = Command::new("kill")
        .args(["-INT", &survivor.0.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(stopped.success());
    let mut stdout = Vec::new();
    std::io::Read::read_to_end(
        &mut survivor.0.stdout.take().expect("worker B's stdout"),
        &mut stdout,
    )
    .expect("worker B's report");
    let _ = survivor.0.wait();
    let report: Value = serde_json::from_slice(&stdout).expect("worker B's report");
    let got = report["events_received"].as_u64().unwrap();
    assert!(got > 0, "worker B received nothing: {report}");
    let before_kill = FACTS as u64 / 5;
    assert!(
        report["events_new"].as_u64().unwrap() < FACTS as u64,
        "worker B stored everything, so A never shared the load: {report} ({before_kill} before the kill)"
    );
}

#[test]
fn a_simulated_fleet_of_agents_is_held_complete_by_two_shared_ingest_workers() {
    if !broker::available() {
        eprintln!("mosquitto is not installed (scripts/test.sh installs it); skipping");
        return;
    }
    const AGENTS: usize = 60;
    let broker = Broker::start(BrokerOptions { persistence: false });
    let tmp = tempfile::tempdir().unwrap();
    let sink = tmp.path().join("sink.db");
    let _a = KillOnDrop(worker(&broker, &sink, "ingest-a", Stdio::null()));
    let _b = KillOnDrop(worker(&broker, &sink, "ingest-b", Stdio::null()));
    std::thread::sleep(Duration::from_millis(500));
    let out = Command::new(RELAISCTL)
        .args(["simulate", "fleet", "--broker", &broker.url(), "--json"])
        .args([
            "--agents",
            &AGENTS.to_string(),
            "--rate",
            "5",
            "--duration",
            "4s",
        ])
        .args(["--ack-timeout", "3s", "--drain", "60s"])
        .output()
        .expect("relaisctl simulate fleet");
    assert!(
        out.status.success(),
        "simulate fleet: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("the fleet's report");
    assert_eq!(report["connected"], AGENTS as u64, "{report}");
    let committed = report["committed"].as_u64().unwrap();
    assert!(committed >= AGENTS as u64 * 15, "{report}");
    assert_eq!(report["acked"], committed, "{report}");
    assert_eq!(report["unacked"], 0, "{report}");
    // Central's view: every simulated agent complete, each fact once.
    wait_for("the last reports", Duration::from_secs(15), || {
        let rows = facts(&sink);
        rows.len() == AGENTS
            && rows
                .iter()
                .all(|r| r["missing"] == 0 && r["contiguous"] == r["reported"])
    });
    let rows = facts(&sink);
    let held: u64 = rows.iter().map(|r| r["contiguous"].as_u64().unwrap()).sum();
    assert_eq!(held, committed);
}
