#![cfg(feature = "central")] // drives central's side: the default `central` feature
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! `relaisctl ingest` into PostgreSQL (issue 15, item 2): shared workers, a real Mosquitto, a
//! real PostgreSQL (`initdb` per test) and real producers (the agent draining its outbox, or
//! `relaisctl simulate fleet`), with a worker, the broker and the database killed mid-stream.
//! Each test ends with every fact in `events` exactly once — by id and by (agent, fact_epoch,
//! fact_seq) — and `relaisctl facts` saying every numbering is complete.

#[path = "common/broker.rs"]
mod broker;
mod common;
#[path = "common/postgres.rs"]
mod postgres;

use broker::{Broker, BrokerOptions};
use common::{KillOnDrop, Settings, Store};
use postgres::Postgres;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RELAISCTL: &str = env!("CARGO_BIN_EXE_relaisctl");

fn services_available() -> bool {
    if !broker::available() {
        eprintln!("mosquitto is not installed (scripts/test.sh installs it); skipping");
        return false;
    }
    if !postgres::available() {
        eprintln!("PostgreSQL is not installed (scripts/test.sh installs it); skipping");
        return false;
    }
    true
}

/// `relaisctl ingest` as one worker of the share group `ingest`, into PostgreSQL.
fn worker(broker: &Broker, pg: &Postgres, name: &str) -> KillOnDrop {
    worker_with(broker, pg, name, &[])
}

fn worker_with(broker: &Broker, pg: &Postgres, name: &str, extra: &[&str]) -> KillOnDrop {
    let child = Command::new(RELAISCTL)
        .args(["ingest", "--json", "--share", "ingest"])
        .args(extra)
        .args([
            "--broker",
            &broker.url(),
            "--sink",
            &pg.url(),
            "--client-id",
            name,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("relaisctl ingest");
    KillOnDrop(child)
}

/// `relaisctl facts --sink postgres://… --json`: one row per agent and numbering (none while
/// the database is unreachable).
fn facts(pg: &Postgres) -> Vec<Value> {
    let out = Command::new(RELAISCTL)
        .args(["facts", "--json", "--sink", &pg.url()])
        .output()
        .expect("relaisctl facts");
    if !out.status.success() {
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

/// Until a worker has made the schema (the producers start only then).
fn wait_for_schema(pg: &Postgres) {
    wait_for("the workers' schema", Duration::from_secs(20), || {
        pg.psql("SELECT to_regclass('public.agent_facts') IS NOT NULL") == "t"
    });
}

fn contiguous(pg: &Postgres) -> u64 {
    facts(pg)
        .first()
        .and_then(|r| r["contiguous"].as_u64())
        .unwrap_or(0)
}

/// Every one of `expected` store facts in `events` exactly once, by id and by numbering, and
/// `relaisctl facts` complete for each of `agents` numberings.
fn assert_each_fact_held_once(pg: &Postgres, expected: u64, agents: usize) {
    let counts = pg.psql(
        "SELECT count(*), count(DISTINCT id), count(DISTINCT (agent, fact_epoch, fact_seq)) \
         FROM events WHERE class = 'store_fact'",
    );
    assert_eq!(
        counts,
        format!("{expected}|{expected}|{expected}"),
        "rows | distinct ids | distinct (agent, fact_epoch, fact_seq)"
    );
    let rows = facts(pg);
    assert_eq!(rows.len(), agents, "{rows:?}");
    for row in &rows {
        assert_eq!(row["missing"], 0, "{row}");
        assert_eq!(row["superseded"], false, "{row}");
        assert!(row["reported"].as_u64().unwrap() > 0, "{row}");
        assert_eq!(row["contiguous"], row["reported"], "{row}");
    }
    let held: u64 = rows.iter().map(|r| r["contiguous"].as_u64().unwrap()).sum();
    assert_eq!(held, expected);
}

fn agent_store(broker: &Broker) -> Store {
    Store::with(Settings {
        sync: format!(
            "broker = \"{}\"\nack = \"central\"\nack_timeout = \"3s\"\n",
            broker.url()
        ),
        ..Settings::default()
    })
}

/// Two tills' tickets of several lines, recorded while central is catching up.
fn two_tills_sell(agent: &common::Agent) {
    let tea = common::gtin14(400_638_133_394);
    let cake = common::gtin14(400_638_133_395);
    std::thread::scope(|s| {
        for till in ["till-1", "till-2"] {
            let (tea, cake) = (&tea, &cake);
            s.spawn(move || {
                let (status, sale) = agent.post_json(
                    "/v1/sales",
                    &json!({"client_key": format!("{till}/r1"), "currency": "EUR",
                            "lines": [{"code": tea, "qty": 1, "unit_price_minor": 250},
                                      {"code": cake, "qty": 2, "unit_price_minor": 1190},
                                      {"code": tea, "qty": 3, "unit_price_minor": 250}]}),
                );
                assert_eq!(status, 201, "{sale}");
            });
        }
    });
}

fn import_catalogue(store: &Store) {
    store.import_ok(
        "products",
        "products.ndjson",
        &[
            common::product(&common::gtin14(400_638_133_394), "SKU-TEA", "Green tea"),
            common::product(&common::gtin14(400_638_133_395), "SKU-CAKE", "Lemon cake"),
        ],
    );
}

fn held_ids(pg: &Postgres) -> HashSet<String> {
    pg.psql("SELECT id FROM events WHERE class = 'store_fact'")
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn two_shared_workers_into_postgresql_one_sigkilled_mid_stream_and_restarted_hold_every_fact_once()
{
    if !services_available() {
        return;
    }
    const FACTS: usize = 10_000;
    let pg = Postgres::start();
    let broker = Broker::start(BrokerOptions { persistence: false });
    let mut a = worker(&broker, &pg, "ingest-a");
    let _b = worker(&broker, &pg, "ingest-b");
    wait_for_schema(&pg);
    let store = agent_store(&broker);
    let mut ids = store.seed_outbox(FACTS);
    import_catalogue(&store);
    let agent = store.start();

    wait_for("part of the drain", Duration::from_secs(30), || {
        contiguous(&pg) >= FACTS as u64 / 5
    });
    // Worker A dies with a group in flight (maybe mid-transaction) and comes back under the
    // same name: the agent resends what it never acknowledged, to whichever worker.
    let _ = a.0.kill();
    let _ = a.0.wait();
    a = worker(&broker, &pg, "ingest-a");
    two_tills_sell(&agent);

    wait_for("every fact held", Duration::from_secs(60), || {
        facts(&pg).first().is_some_and(|r| {
            r["contiguous"].as_u64() == Some(FACTS as u64 + 2)
                && r["reported"].as_u64() == Some(FACTS as u64 + 2)
        })
    });
    assert_each_fact_held_once(&pg, FACTS as u64 + 2, 1);
    let held = held_ids(&pg);
    let sales: Vec<String> = held.difference(&ids).cloned().collect();
    assert_eq!(sales.len(), 2, "the two tickets besides the seeded facts");
    ids.extend(sales);
    assert!(held == ids, "events holds exactly the agent's facts");
    let lines = pg.psql(
        "SELECT count(*) FROM events WHERE type = 'sale.recorded' \
         AND jsonb_array_length(payload::jsonb -> 'lines') = 3",
    );
    assert_eq!(lines, "2", "each ticket with its three lines");
    wait_for(
        "the agent's outbox to empty",
        Duration::from_secs(20),
        || agent.health()["outbox"]["store_fact"]["depth"].as_u64() == Some(0),
    );
    drop(a);
}

#[test]
fn the_broker_killed_mid_stream_and_restarted_on_its_port_loses_and_doubles_no_fact_in_postgresql()
{
    if !services_available() {
        return;
    }
    const AGENTS: usize = 20;
    let pg = Postgres::start();
    let mut broker = Broker::start(BrokerOptions { persistence: false });
    let _a = worker(&broker, &pg, "ingest-a");
    let _b = worker(&broker, &pg, "ingest-b");
    wait_for_schema(&pg);
    let fleet = Command::new(RELAISCTL)
        .args(["simulate", "fleet", "--json", "--broker", &broker.url()])
        .args(["--agents", &AGENTS.to_string(), "--rate", "20"])
        .args(["--duration", "8s", "--ack-timeout", "3s", "--drain", "40s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("relaisctl simulate fleet");
    wait_for("facts flowing", Duration::from_secs(20), || {
        pg.psql("SELECT count(*) FROM events")
            .parse::<u64>()
            .unwrap_or(0)
            >= 1_000
    });
    // The broker dies with messages queued for the workers and acks on their way back; every
    // connection drops. It comes back empty (no persistence) on the same port.
    broker.kill();
    std::thread::sleep(Duration::from_secs(1));
    broker.restart();

    let out = fleet.wait_with_output().expect("the fleet");
    assert!(
        out.status.success(),
        "simulate fleet: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("the fleet's report");
    assert!(
        report["connected"].as_u64().unwrap() >= AGENTS as u64,
        "{report}"
    );
    let committed = report["committed"].as_u64().unwrap();
    assert!(committed >= AGENTS as u64 * 100, "{report}");
    assert_eq!(report["acked"], committed, "{report}");
    assert_eq!(report["unacked"], 0, "{report}");
    wait_for("every agent's last report", Duration::from_secs(15), || {
        let rows = facts(&pg);
        rows.len() == AGENTS && rows.iter().all(|r| r["contiguous"] == r["reported"])
    });
    assert_each_fact_held_once(&pg, committed, AGENTS);
}

#[test]
fn postgresql_sigkilled_mid_stream_makes_the_workers_wait_still_connected_to_the_broker_and_acknowledge_nothing_until_it_is_back_then_every_fact_lands_once()
 {
    if !services_available() {
        return;
    }
    const FACTS: usize = 10_000;
    let mut pg = Postgres::start();
    // Notices: the broker logs each connection, and each client it drops for silence.
    let broker = Broker::start_with(BrokerOptions { persistence: false }, "log_type notice");
    // A 5 s keep-alive (rumqttc's least): the database stays down for 9 s, longer than the
    // broker waits on a silent client (1.5 × keep-alive), so a worker that stopped polling MQTT
    // while it waited for the database would be dropped.
    let keep_alive = ["--keep-alive", "5s"];
    let mut a = worker_with(&broker, &pg, "ingest-a", &keep_alive);
    let mut b = worker_with(&broker, &pg, "ingest-b", &keep_alive);
    wait_for_schema(&pg);
    let store = agent_store(&broker);
    let ids = store.seed_outbox(FACTS);
    let agent = store.start();
    let depth = || {
        agent.health()["outbox"]["store_fact"]["depth"]
            .as_u64()
            .unwrap()
    };

    wait_for("part of the drain", Duration::from_secs(30), || {
        contiguous(&pg) >= FACTS as u64 / 5
    });
    // Connections made before the outage do not count: rumqttc drops a connect that its caller
    // stops polling half-way (a worker's idle tick at start-up can), and simply connects again.
    let log_before_outage = broker.log().len();
    pg.kill();
    // Acks of groups committed just before the crash may still be on their way.
    std::thread::sleep(Duration::from_secs(1));
    let before = depth();
    std::thread::sleep(Duration::from_secs(8));
    let after = depth();
    assert!(before > 0, "the agent drained everything before the crash");
    assert_eq!(
        before, after,
        "a fact was acknowledged while the database was down"
    );
    for w in [&mut a, &mut b] {
        assert!(
            w.0.try_wait().unwrap().is_none(),
            "a worker gave up on the lost database instead of waiting"
        );
    }
    pg.restart();

    wait_for("every fact held", Duration::from_secs(60), || {
        facts(&pg).first().is_some_and(|r| {
            r["contiguous"].as_u64() == Some(FACTS as u64)
                && r["reported"].as_u64() == Some(FACTS as u64)
        })
    });
    assert_each_fact_held_once(&pg, FACTS as u64, 1);
    assert!(
        held_ids(&pg) == ids,
        "events holds exactly the agent's facts"
    );
    wait_for(
        "the agent's outbox to empty",
        Duration::from_secs(20),
        || depth() == 0,
    );
    let log = broker.log();
    let since_outage = log.get(log_before_outage..).unwrap_or_default();
    for name in ["ingest-a", "ingest-b"] {
        let connects = since_outage
            .lines()
            .filter(|l| l.contains("New client connected") && l.contains(&format!(" as {name} ")))
            .count();
        assert_eq!(
            connects, 0,
            "{name} kept its MQTT connection through the database outage:\n{log}"
        );
    }
    assert!(
        !log.contains("exceeded timeout"),
        "the broker dropped a silent worker:\n{log}"
    );
}

#[test]
fn a_sink_whose_constraint_refuses_the_events_ends_the_ingest_with_a_clear_message_and_acknowledges_nothing()
 {
    if !services_available() {
        return;
    }
    let pg = Postgres::start();
    let broker = Broker::start(BrokerOptions { persistence: false });
    // The schema exists (a first worker made it); then someone adds a rule the events break:
    // no retry can fix that, and the operator must hear of it.
    let first = worker(&broker, &pg, "ingest-a");
    wait_for_schema(&pg);
    drop(first);
    pg.psql("ALTER TABLE events ADD CONSTRAINT no_movement_here CHECK (type <> 'stock.movement')");
    let out = Command::new(RELAISCTL)
        .args(["ingest", "--share", "ingest", "--client-id", "ingest-b"])
        .args(["--broker", &broker.url(), "--sink", &pg.url()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("relaisctl ingest");
    let store = agent_store(&broker);
    store.seed_outbox(50);
    let agent = store.start();
    let out = out.wait_with_output().expect("the worker's end");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the worker kept running: {stderr}");
    assert!(
        stderr.contains("no_movement_here")
            && stderr.contains("23514")
            && stderr.contains("start the ingest again"),
        "the message names the constraint and what to do: {stderr}"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM events"), "0");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        agent.health()["outbox"]["store_fact"]["depth"].as_u64(),
        Some(50),
        "the agent still holds every fact: nothing was acknowledged"
    );
}

#[test]
fn relaisctl_facts_on_an_unreachable_database_fails_at_once_naming_the_sink_without_its_password() {
    let port = broker::free_port();
    let started = Instant::now();
    let out = Command::new(RELAISCTL)
        .args(["facts", "--sink"])
        .arg(format!("postgres://central:s3cret@127.0.0.1:{port}/chain"))
        .output()
        .expect("relaisctl facts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it waited for the database"
    );
    assert!(
        stderr.contains(&format!("postgres://central@127.0.0.1:{port}/chain")),
        "names the sink: {stderr}"
    );
    assert!(!stderr.contains("s3cret"), "shows the password: {stderr}");
}
