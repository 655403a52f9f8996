#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! Starting and stopping the real agent: damaged databases are moved aside with an alarm
//! instead of stopping the store, and SIGTERM stops cleanly with the outbox checkpointed.

mod common;

use common::{Agent, Store, gtin14, product, stock};
use serde_json::{Value, json};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

fn wal_len(db: &Path) -> Option<u64> {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(PathBuf::from(wal)).ok().map(|m| m.len())
}

/// Overwrite the middle third of a database file with garbage, keeping its header page.
fn corrupt_middle(path: &Path) {
    let len = std::fs::metadata(path).expect("db file").len();
    assert!(
        len >= 8 * 4096,
        "{} is only {len} bytes: too small to damage meaningfully",
        path.display()
    );
    let start = len / 3;
    let garbage: Vec<u8> = (0..(len / 3))
        .map(|i| (i as u8).wrapping_mul(37) ^ 0xA5)
        .collect();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open db");
    file.write_all_at(&garbage, start).expect("overwrite");
    file.sync_all().expect("sync");
}

fn damaged_files(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("data dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{prefix}.damaged-")))
        .collect()
}

fn find_alarm<'a>(health: &'a Value, code: &str) -> Option<&'a Value> {
    health["alarms"]
        .as_array()?
        .iter()
        .find(|a| a["code"] == code)
}

fn sale(agent: &Agent, sku: &str, key: &str) -> Value {
    let (status, body) = agent.post_movement(&json!({
        "kind": "sale", "sku": sku, "qty": 1, "client_key": key,
        "note": "padding so that the outbox spans many pages ......................................"
    }));
    assert_eq!(status, 201, "{body}");
    body
}

fn stop_cleanly(agent: Agent) {
    let status = agent.terminate();
    assert!(status.success(), "SIGTERM did not give exit 0: {status}");
}

#[test]
fn sigterm_exits_0_and_leaves_the_outbox_wal_checkpointed() {
    let store = Store::new();
    let agent = store.start();
    for i in 0..20 {
        sale(&agent, "SKU-T", &format!("term-{i}"));
    }
    assert!(
        wal_len(&store.outbox_db()).is_some_and(|l| l > 0),
        "precondition: the running agent has outbox pages in its WAL"
    );
    stop_cleanly(agent);
    let wal = wal_len(&store.outbox_db());
    assert!(
        wal.is_none_or(|l| l == 0),
        "outbox.db-wal holds {wal:?} bytes after SIGTERM"
    );
    // Nothing was lost, and the next start is a new boot.
    let stats = store.outbox_stats();
    assert_eq!(stats["store_fact"]["depth"], 20, "{stats}");
    assert_eq!(stats["last_seq"], 20, "{stats}");
    let agent = store.start();
    assert_eq!(agent.health()["outbox"]["boot"], 2);
    assert_eq!(sale(&agent, "SKU-T", "term-20")["seq"], 21);
}

#[test]
fn sigterm_on_an_idle_agent_exits_0_promptly() {
    let store = Store::new();
    let agent = store.start();
    let started = std::time::Instant::now();
    stop_cleanly(agent);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_corrupted_replica_is_moved_aside_and_the_agent_starts_with_a_replica_rebuilt_alarm() {
    let store = Store::new();
    let products: Vec<Value> = (0..3000)
        .map(|i| {
            product(
                &gtin14(7_000_000_000 + i),
                &format!("SKU-{i}"),
                &format!("Product number {i} with a long enough name"),
            )
        })
        .collect();
    store.import_ok("products", "products.ndjson", &products);
    let agent = store.start();
    let probe = gtin14(7_000_000_000 + 1500);
    assert_eq!(agent.get_json(&format!("/v1/products/{probe}")).0, 200);
    stop_cleanly(agent);

    corrupt_middle(&store.replica_db());
    let agent = store.start();
    let health = agent.health();
    let alarm = find_alarm(&health, "replica_rebuilt")
        .unwrap_or_else(|| panic!("no replica_rebuilt alarm: {health}"));
    assert!(
        alarm["message"]
            .as_str()
            .unwrap_or_default()
            .contains("replica.db.damaged-"),
        "{alarm}"
    );
    assert_eq!(health["status"], "degraded", "{health}");
    let aside = damaged_files(&store.data_dir, "replica.db");
    assert!(
        aside
            .iter()
            .any(|n| !n.ends_with("-wal") && !n.ends_with("-shm")),
        "no replica.db.damaged-* in {aside:?}"
    );
    // The replica is empty until the next snapshot, and the agent still serves.
    assert_eq!(agent.get_json(&format!("/v1/products/{probe}")).0, 404);
    assert_eq!(
        sale(&agent, "SKU-1", "after-rebuild")["stock_applied"],
        true
    );
    // The next import rebuilds it while the agent runs.
    store.import_ok("products", "again.ndjson", &products[..10]);
    assert_eq!(
        agent
            .get_json(&format!("/v1/products/{}", gtin14(7_000_000_000)))
            .0,
        200
    );
    // Once rebuilt, the operator acknowledges the alarm and it is gone; a second ack is a 404.
    let client = common::http_client();
    let ack = |code: &str| {
        client
            .delete(agent.url(&format!("/v1/alarms/{code}")))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(ack("replica_rebuilt"), 204);
    assert_eq!(ack("replica_rebuilt"), 404);
    assert!(find_alarm(&agent.health(), "replica_rebuilt").is_none());
}

#[test]
fn a_corrupted_outbox_is_moved_aside_with_an_alarm_and_new_sequence_numbers_stay_above_the_old_ones()
 {
    let store = Store::new();
    store.import_ok(
        "products",
        "products.ndjson",
        &[product(&gtin14(42), "SKU-O", "Outbox item")],
    );
    store.import_ok("stock", "stock.ndjson", &[stock("SKU-O", 1000)]);
    let agent = store.start();
    let mut old_max = 0;
    for i in 0..400 {
        old_max = old_max.max(
            sale(&agent, "SKU-O", &format!("old-{i}"))["seq"]
                .as_u64()
                .expect("seq"),
        );
    }
    stop_cleanly(agent);
    assert_eq!(old_max, 400);

    corrupt_middle(&store.outbox_db());
    let agent = store.start();
    let health = agent.health();
    let alarm = find_alarm(&health, "outbox_replaced")
        .unwrap_or_else(|| panic!("no outbox_replaced alarm: {health}"));
    assert!(
        alarm["message"]
            .as_str()
            .unwrap_or_default()
            .contains("outbox.db.damaged-"),
        "{alarm}"
    );
    assert_eq!(health["status"], "degraded", "{health}");
    let aside = damaged_files(&store.data_dir, "outbox.db");
    assert!(
        aside
            .iter()
            .any(|n| !n.ends_with("-wal") && !n.ends_with("-shm")),
        "no outbox.db.damaged-* in {aside:?}"
    );

    // The agent keeps recording, above every sequence number the old outbox used.
    let first = sale(&agent, "SKU-O", "new-0")["seq"].as_u64().expect("seq");
    let second = sale(&agent, "SKU-O", "new-1")["seq"].as_u64().expect("seq");
    assert!(
        first > old_max,
        "new seq {first} is not above the old outbox's {old_max}"
    );
    assert_eq!(second, first + 1);
    let health = agent.health();
    assert_eq!(health["outbox"]["store_fact"]["depth"], 2, "{health}");

    // The alarm survives a restart: it was recorded in the new outbox.
    stop_cleanly(agent);
    let agent = store.start();
    let health = agent.health();
    assert!(
        find_alarm(&health, "outbox_replaced").is_some(),
        "alarm lost at restart: {health}"
    );
    let third = sale(&agent, "SKU-O", "new-2")["seq"].as_u64().expect("seq");
    assert_eq!(third, second + 1);
}

#[test]
fn a_second_agent_on_the_same_data_dir_refuses_to_start() {
    let store = Store::new();
    let first = store.start();
    sale(&first, "SKU-2", "first-0");
    // Same config, same data dir: systemd restarting while the old process still drains, or an
    // operator running `relais run` by hand next to the service.
    match Agent::try_start(&store.config) {
        Err(log) => assert!(
            log.contains(&store.data_dir.display().to_string()),
            "the refusal does not name the data dir:\n{log}"
        ),
        Ok(second) => {
            // What goes wrong: both writers number events from their own copy of last_seq.
            let (a, a_body) = first.post_movement(
                &json!({"kind": "sale", "sku": "SKU-2", "qty": 1, "client_key": "first-1"}),
            );
            let (b, b_body) = second.post_movement(
                &json!({"kind": "sale", "sku": "SKU-2", "qty": 1, "client_key": "second-0"}),
            );
            panic!(
                "a second agent started on the same data dir (boot {}); first agent answered {a} {a_body}, \
                 second agent answered {b} {b_body}",
                second.health()["outbox"]["boot"]
            );
        }
    }
}

#[test]
fn an_agent_whose_port_is_taken_exits_1_saying_it_cannot_listen() {
    let first_store = Store::new();
    let first = first_store.start();
    let second = Store::with(common::Settings::default());
    let text = std::fs::read_to_string(&second.config).expect("config");
    std::fs::write(&second.config, text.replace("127.0.0.1:0", &first.addr)).expect("config");
    let err = match Agent::try_start(&second.config) {
        Ok(_) => panic!(
            "a second agent listened on {}, which the first one holds",
            first.addr
        ),
        Err(log) => log,
    };
    assert!(err.contains("exit status: 1"), "{err}");
    assert!(err.contains("cannot listen on"), "{err}");
    assert!(err.contains(&first.addr), "{err}");
    // The first agent is unaffected.
    assert_eq!(first.get_json("/v1/health").0, 200);
}

#[test]
fn the_cannot_listen_error_names_its_os_cause_once() {
    let first_store = Store::new();
    let first = first_store.start();
    let second = Store::new();
    let text = std::fs::read_to_string(&second.config).expect("config");
    std::fs::write(&second.config, text.replace("127.0.0.1:0", &first.addr)).expect("config");
    let err = match Agent::try_start(&second.config) {
        Ok(_) => panic!("a second agent listened on {}", first.addr),
        Err(log) => log,
    };
    let line = err
        .lines()
        .find(|l| l.starts_with("relais: cannot listen"))
        .unwrap_or_else(|| panic!("no error line in:\n{err}"));
    assert_eq!(line.matches("Address already in use").count(), 1, "{line}");
}
