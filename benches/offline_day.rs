#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark harness: a panic is a failed run
//! A store back after a day offline (issue 15): its outbox holds 100,000 store facts recorded
//! while it was cut off (one-line sales over 97 SKUs and loyalty earns of 200 customers); it
//! reconnects to a real Mosquitto, two shared `relaisctl ingest` workers and `relaisctl ledger
//! run`. Measured from the agent's start: every fact delivered and acknowledged (the limit: what
//! the sync alone costs), every fact in the ledger, and the store's replica agreeing with the
//! ledger on every SKU's on-hand and every customer's balance. Goal: converged within 60 s.

#[path = "common/agent.rs"]
mod agent;
#[path = "../tests/common/broker.rs"]
mod broker;
mod common;
#[path = "../tests/support/https.rs"]
mod https;

use common::{Scratch, emit, median, pass_str, runs, scaled};
use relais::domain::facts::LoyaltyRecorded;
use relais::domain::{LoyaltyBaseline, LoyaltyOperation, MovementKind, StoreFact};
use relais::outbox::AppendRequest;
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RELAIS: &str = env!("CARGO_BIN_EXE_relais");
const RELAISCTL: &str = env!("CARGO_BIN_EXE_relaisctl");
const AGENT: &str = "S9/till-1";
const SKUS: usize = 97;
const CUSTOMERS: usize = 200;
const CARD_KEY: [u8; 32] = *b"relais-benchmark-card-hash-key!!";

fn gtin(i: usize) -> String {
    let body = format!("{:013}", 400_900_000_000u64 + i as u64);
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(k, b)| u32::from(b - b'0') * if k % 2 == 0 { 3 } else { 1 })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

fn card(i: usize) -> String {
    format!("04B2{i:08X}")
}

fn write_lines(path: &Path, lines: impl Iterator<Item = serde_json::Value>) {
    let text: String = lines.map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

fn ctl(args: &[&str]) {
    let out = Command::new(RELAISCTL).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "relaisctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn spawn(args: &[&str]) -> Child {
    Command::new(RELAISCTL)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The facts a till records during a day cut off from central.
fn seed_outbox(outbox: &Path, n: usize) {
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
            if i % 10 == 9 {
                AppendRequest::fact(StoreFact::Loyalty(LoyaltyOperation {
                    recorded: LoyaltyRecorded {
                        customer_id: format!("C-{}", i % CUSTOMERS),
                        points: 5,
                        receipt: None,
                        client_key: None,
                        by: "till-1".into(),
                    },
                    baseline: LoyaltyBaseline {
                        central_balance: 0,
                        watermark_seq: 0,
                    },
                    burn_cap: 0,
                    balance_after: None,
                }))
            } else {
                AppendRequest::fact(StoreFact::stock_movement(
                    MovementKind::Sale,
                    &format!("SKU-{}", i % SKUS),
                    1,
                ))
            }
        }))
        .expect("seed");
    drop(handle);
    writer.join();
}

struct Figures {
    stock: BTreeMap<String, i64>,
    balances: BTreeMap<String, i64>,
    applied: i64,
}

fn ledger_figures(sink: &Path) -> Option<Figures> {
    let conn = Connection::open(sink).ok()?;
    conn.busy_timeout(Duration::from_secs(5)).ok()?;
    let mut stmt = conn
        .prepare("SELECT sku, on_hand FROM ledger_stock WHERE store = 'S9'")
        .ok()?;
    let stock = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .ok()?
        .collect::<Result<_, _>>()
        .ok()?;
    let mut stmt = conn
        .prepare("SELECT customer_id, balance FROM ledger_customers")
        .ok()?;
    let balances = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .ok()?
        .collect::<Result<_, _>>()
        .ok()?;
    let applied = conn
        .query_row(
            "SELECT COALESCE(SUM(fact_seq), 0) FROM ledger_cursor WHERE agent = ?1",
            [AGENT],
            |r| r.get(0),
        )
        .ok()?;
    Some(Figures {
        stock,
        balances,
        applied,
    })
}

fn get(client: &reqwest::blocking::Client, base: &str, path: &str) -> serde_json::Value {
    client
        .get(format!("{base}{path}"))
        .send()
        .and_then(|r| r.json())
        .unwrap_or(serde_json::Value::Null)
}

/// Whether the store's replica itself holds the ledger's figures for every SKU and customer:
/// central's baseline equal to the ledger's and nothing of its own left above the watermark
/// (the figure a till shows is right earlier, as soon as the ledger has every fact).
fn agrees(client: &reqwest::blocking::Client, base: &str, ledger: &Figures) -> bool {
    (0..SKUS).all(|i| {
        let stock = &get(client, base, &format!("/v1/products/{}", gtin(i)))["stock"];
        stock["central_on_hand"].as_i64() == ledger.stock.get(&format!("SKU-{i}")).copied()
            && stock["local_movements_after_watermark"] == 0
    }) && (0..CUSTOMERS).step_by(7).all(|i| {
        let loyalty = &get(client, base, &format!("/v1/customers/by-card/{}", card(i)))["loyalty"];
        loyalty["central_balance"].as_i64() == ledger.balances.get(&format!("C-{i}")).copied()
            && loyalty["pending_local"] == 0
    })
}

struct Run {
    drained: f64,
    in_ledger: f64,
    converged: f64,
}

fn run_once(scratch: &Scratch, run: usize, broker: &broker::Broker, n: usize) -> Run {
    let dir = scratch.sub(&format!("run-{run}"));
    let snapshots = dir.join("snapshots");
    std::fs::create_dir_all(&snapshots).unwrap();
    let server = https::HttpsServer::start(&snapshots);
    let sink = dir.join("central.db");
    let sink_s = sink.to_str().unwrap();
    let stock = dir.join("stock.ndjson");
    write_lines(
        &stock,
        (0..SKUS).map(|i| serde_json::json!({"sku": format!("SKU-{i}"), "on_hand": 1_000_000})),
    );
    let hasher = relais::cards::CardHasher::new(&CARD_KEY);
    let customers = dir.join("customers.ndjson");
    write_lines(
        &customers,
        (0..CUSTOMERS).map(|i| {
            let token = hasher
                .token(&relais::cards::normalize_card_id(&card(i)).unwrap())
                .to_hex();
            serde_json::json!({"customer_id": format!("C-{i}"), "display_name": format!("Customer {i}"),
                               "loyalty_balance": 1000, "card_tokens": [token]})
        }),
    );
    let stock_arg = format!("S9={}", stock.display());
    ctl(&[
        "ledger",
        "seed",
        "--sink",
        sink_s,
        "--stock",
        &stock_arg,
        "--customers",
        customers.to_str().unwrap(),
    ]);
    let url = broker.url();
    let mut central: Vec<Child> = (0..2)
        .map(|w| {
            spawn(&[
                "ingest",
                "--broker",
                &url,
                "--sink",
                sink_s,
                "--share",
                "bench",
                "--client-id",
                &format!("ingest-{run}-{w}"),
            ])
        })
        .collect();
    let base_url = server.url("");
    central.push(spawn(&[
        "ledger",
        "run",
        "--broker",
        &url,
        "--sink",
        sink_s,
        "--client-id",
        &format!("ledger-{run}"),
        "--snapshot-dir",
        snapshots.to_str().unwrap(),
        "--snapshot-base-url",
        &base_url,
    ]));

    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let key = dir.join("card.key");
    std::fs::write(&key, CARD_KEY).unwrap();
    let port = broker::free_port();
    let config = dir.join("relais.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nid = \"{AGENT}\"\ndata_dir = \"{}\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n\
             [disk]\nlow_free_mb = 0\n[customers]\ncard_hash_key_file = \"{}\"\n\
             [sync]\nbroker = \"{url}\"\nca_file = \"{}\"\nsnapshot_url = \"{}\"\n",
            data.display(),
            key.display(),
            server.ca_file.display(),
            server.url(&format!("{AGENT}/manifest.json")),
        ),
    )
    .unwrap();
    let products = dir.join("products.ndjson");
    write_lines(
        &products,
        (0..SKUS).map(|i| serde_json::json!({"gtin": gtin(i), "sku": format!("SKU-{i}"), "name": format!("Item {i}")})),
    );
    let out = Command::new(RELAIS)
        .arg("--config")
        .arg(&config)
        .args(["replica", "import", "--stream", "products"])
        .arg(&products)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::blocking::Client::new();
    let base = format!("http://127.0.0.1:{port}");

    // The store as it was the day before: online, with the ledger's figures.
    let agent = agent::Agent::try_start(&config).expect("relais run");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !get(&client, &base, "/v1/health")["replica"]
        .as_array()
        .is_some_and(|a| {
            a.iter()
                .filter(|s| s["version"].as_u64() >= Some(1))
                .count()
                >= 3
        })
    {
        assert!(
            Instant::now() < deadline,
            "no first snapshot from the ledger"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.terminate();

    eprint!("  run {run}: the day offline: {n} facts into the outbox… ");
    let (_, took) = common::time(|| seed_outbox(&data.join("outbox.db"), n));
    eprintln!("{:.1} s", took.as_secs_f64());

    let start = Instant::now();
    let agent = agent::Agent::try_start(&config).expect("relais run");
    let (mut drained, mut in_ledger) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(600);
    let converged = loop {
        let now = start.elapsed().as_secs_f64();
        if drained.is_none()
            && get(&client, &base, "/v1/health")["outbox"]["store_fact"]["depth"] == 0
        {
            drained = Some(now);
        }
        if let Some(figures) = ledger_figures(&sink) {
            if in_ledger.is_none() && figures.applied >= n as i64 {
                in_ledger = Some(now);
            }
            if in_ledger.is_some() && agrees(&client, &base, &figures) {
                break start.elapsed().as_secs_f64();
            }
        }
        assert!(Instant::now() < deadline, "not converged in 600 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    agent.terminate();
    for mut c in central {
        let _ = c.kill();
        let _ = c.wait();
    }
    let run = Run {
        drained: drained.unwrap_or(converged),
        in_ledger: in_ledger.unwrap_or(converged),
        converged,
    };
    eprintln!(
        "  run: delivered and acknowledged {:.1} s, all in the ledger {:.1} s, replica agrees {:.1} s",
        run.drained, run.in_ledger, run.converged
    );
    run
}

fn main() {
    if !Path::new(broker::MOSQUITTO).exists() {
        eprintln!("offline_day: mosquitto is not installed (apt-get install mosquitto); skipped");
        return;
    }
    let n = scaled(100_000, 2_000) as usize;
    let scratch = Scratch::new("offline-day");
    let broker = broker::Broker::start(broker::BrokerOptions::default());
    let runs: Vec<Run> = (0..runs())
        .map(|r| run_once(&scratch, r, &broker, n))
        .collect();
    let med = |f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let (drained, in_ledger, converged) = (
        med(|r| r.drained),
        med(|r| r.in_ledger),
        med(|r| r.converged),
    );
    let pass = converged <= 60.0;
    eprintln!(
        "offline day: {n} facts converged in {converged:.1} s (delivery alone {drained:.1} s = the limit, \
         {:.2}x; in the ledger at {in_ledger:.1} s; goal <= 60 s: {})",
        converged / drained,
        pass_str(pass)
    );
    emit(
        "offline_day",
        "converged_seconds",
        converged,
        Some(drained),
        Some("<= 60 s for 100,000 facts"),
        Some(pass),
        serde_json::json!({"facts": n, "in_ledger_seconds": in_ledger, "skus": SKUS, "customers": CUSTOMERS}),
    );
}
