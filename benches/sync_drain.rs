#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark harness: a panic is a failed run
//! Uplink drain, end to end: a queued outbox → the real `relais` binary → a real Mosquitto →
//! `relaisctl ingest` (deduplicating SQLite sink, end-to-end `ack`) → rows deleted durably.
//!
//! Limit measured in the same run: `mosquitto_pub --repeat N -q 1` on the same broker, one
//! event-sized message per publish. Goals: drain ≥ 2× that message rate in events/s (batching),
//! and 1,000,000 queued events delivered and acknowledged in ≤ 30 s.

#[path = "../tests/common/broker.rs"]
mod broker;
mod common;

use common::{Scratch, emit, median, pass_str, runs, scale, scaled};
use relais::outbox::{AppendRequest, MovementKind, StoreFact};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RELAIS: &str = env!("CARGO_BIN_EXE_relais");
const RELAISCTL: &str = env!("CARGO_BIN_EXE_relaisctl");

fn payload(i: usize) -> String {
    serde_json::json!({"kind": "sale", "sku": format!("SKU-{:06}", i % 50_000), "gtin": "04006381333931",
        "qty": 1, "delta": -1, "till": "till-03", "receipt": format!("R-{:08}", i / 4)})
    .to_string()
}

fn seed(outbox: &Path, n: usize) {
    let (handle, writer) = relais::outbox::OutboxWriter::start(
        outbox,
        relais::outbox::writer::WriterSettings {
            group_commit_max: 4096,
            telemetry_quota_rows: 0,
            low_free_mb: 0,
            seq_floor: 0,
            checkpoint_pages: relais::outbox::writer::DEFAULT_CHECKPOINT_PAGES,
            prune: Default::default(),
        },
    )
    .expect("outbox");
    handle
        .append_pipelined_blocking((0..n).map(|i| {
            AppendRequest::fact(StoreFact::stock_movement(
                MovementKind::Sale,
                &format!("SKU-{:06}", i % 50_000),
                1,
            ))
        }))
        .expect("seed");
    drop(handle);
    writer.join();
}

/// mosquitto_pub's QoS 1 message rate for one event-sized message.
fn mosquitto_pub_rate(port: u16, n: u64) -> f64 {
    let message = format!(
        "{{\"v\":1,\"agent\":\"bench/limit\",\"events\":[{{\"id\":\"0190f3c2-0000-7000-8000-000000000000\",\"payload\":{}}}]}}",
        payload(1)
    );
    let start = Instant::now();
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-V",
            "mqttv5",
        ])
        .args([
            "-u",
            "bench/limit",
            "-t",
            "relais/v1/bench/limit/evt",
            "-m",
            &message,
        ])
        .args(["--repeat", &n.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("mosquitto_pub (apt-get install mosquitto-clients)");
    assert!(status.success(), "mosquitto_pub failed");
    n as f64 / start.elapsed().as_secs_f64()
}

/// User + system CPU seconds of a running process, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // utime and stime are fields 14 and 15 of the line; 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn health(client: &reqwest::blocking::Client, port: u16) -> Option<serde_json::Value> {
    client
        .get(format!("http://127.0.0.1:{port}/v1/health"))
        .send()
        .ok()?
        .json()
        .ok()
}

/// Seed `n` events, start ingest and agent, time until the outbox is empty and the sink full.
fn drain_once(scratch: &Scratch, run: usize, broker: &broker::Broker, n: usize) -> f64 {
    let dir = scratch.sub(&format!("run-{run}"));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    eprint!("  run {run}: seeding {n} events… ");
    let (_, seed_time) = common::time(|| seed(&data.join("outbox.db"), n));
    eprintln!("{:.1} s", seed_time.as_secs_f64());
    let sink = dir.join("sink.db");
    let mut ingest = Command::new(RELAISCTL)
        .args(["ingest", "--broker", &broker.url(), "--json", "--client-id"])
        .arg(format!("bench-ingest-{run}"))
        .arg("--sink")
        .arg(&sink)
        .stdout(Stdio::null())
        .spawn()
        .expect("relaisctl ingest");
    std::thread::sleep(Duration::from_millis(300));
    let port = broker::free_port();
    let config = dir.join("relais.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nid = \"bench-store/agent-{run}\"\ndata_dir = \"{}\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n\
             [disk]\nlow_free_mb = 0\n[sync]\nbroker = \"{}\"\nack = \"central\"\n",
            data.display(),
            broker.url()
        ),
    )
    .unwrap();
    let start = Instant::now();
    let mut agent = Command::new(RELAIS)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("relais run");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    let seconds = loop {
        let done = health(&client, port).is_some_and(|h| {
            h["outbox"]["store_fact"]["depth"] == 0
                && h["sync"]["delivered_since_start"].as_u64() >= Some(n as u64)
        });
        if done {
            break start.elapsed().as_secs_f64();
        }
        assert!(Instant::now() < deadline, "drain did not finish in 600 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    let agent_cpu = cpu_seconds(agent.id());
    let ingest_cpu = cpu_seconds(ingest.id());
    let _ = agent.kill();
    let _ = agent.wait();
    // Like a real central, the ingest runs on; it has acknowledged everything by now.
    let _ = ingest.kill();
    let _ = ingest.wait();
    let conn = rusqlite::Connection::open(&sink).unwrap();
    let stored: i64 = conn
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored as usize, n, "every event in the sink");
    eprintln!(
        "  run {run}: {n} events delivered and acknowledged in {seconds:.2} s ({:.0} events/s); CPU: agent {agent_cpu:.1} s, ingest {ingest_cpu:.1} s",
        n as f64 / seconds
    );
    seconds
}

fn main() {
    if !Path::new(broker::MOSQUITTO).exists() {
        eprintln!(
            "sync_drain: mosquitto is not installed (apt-get install mosquitto mosquitto-clients); skipped"
        );
        return;
    }
    let n = scaled(1_000_000, 2_000) as usize;
    let pub_n = scaled(20_000, 1_000);
    let scratch = Scratch::new("sync-drain");
    let broker = broker::Broker::start(broker::BrokerOptions::default());
    let mut drain_rates = Vec::new();
    let mut drain_seconds = Vec::new();
    let mut pub_rates = Vec::new();
    for run in 0..runs() {
        let rate = mosquitto_pub_rate(broker.port, pub_n);
        eprintln!("  run {run}: mosquitto_pub -q 1 --repeat {pub_n}: {rate:.0} messages/s");
        pub_rates.push(rate);
        let seconds = drain_once(&scratch, run, &broker, n);
        drain_seconds.push(seconds);
        drain_rates.push(n as f64 / seconds);
    }
    let drain = median(&drain_rates);
    let limit = median(&pub_rates);
    let ratio_ok = drain >= 2.0 * limit;
    eprintln!(
        "drain: {drain:.0} events/s vs mosquitto_pub {limit:.0} messages/s = {:.2}x (goal >= 2x: {})",
        drain / limit,
        pass_str(ratio_ok)
    );
    emit(
        "sync_drain",
        "drain_events_per_s",
        drain,
        Some(limit),
        Some(">= 2x mosquitto_pub -q 1 messages/s"),
        Some(ratio_ok),
        serde_json::json!({"events": n, "ack": "central"}),
    );
    let catch_up = median(&drain_seconds);
    let full_scale = (scale() - 1.0).abs() < f64::EPSILON;
    let catch_up_ok = catch_up <= 30.0;
    eprintln!(
        "catch-up: {n} queued events delivered and acknowledged in {catch_up:.1} s (goal <= 30 s for 1,000,000{})",
        if full_scale {
            format!(": {}", pass_str(catch_up_ok))
        } else {
            ", judged at full scale only".into()
        }
    );
    emit(
        "sync_drain",
        "catch_up_seconds",
        catch_up,
        None,
        Some("<= 30 s for 1,000,000 events"),
        full_scale.then_some(catch_up_ok),
        serde_json::json!({"events": n}),
    );
}
