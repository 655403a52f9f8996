#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! Personal data and history kept no longer than needed (issue 18, item 8), through the real
//! binary: sales central has counted go once the retention passed while the shelf shows the
//! same stock, `relais outbox stats` shows it, and an erasure imported by hand reaches the
//! damaged copies of the replica, and a till's key replays until its retention passed and
//! central has the fact.

#[path = "common/broker.rs"]
mod broker;
mod common;

use common::{Agent, Settings, Store, assert_success, gtin14, product, stock};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const TILLS: &str = "till-1 till-1-token-0123456789abcdefghijklmn\n\
                     till-2 till-2-token-0123456789abcdefghijklmn\n";
const TOKENS: [&str; 2] = [
    "till-1-token-0123456789abcdefghijklmn",
    "till-2-token-0123456789abcdefghijklmn",
];

/// (GTIN body, SKU, central's on hand)
const ITEMS: [(u64, &str, i64); 3] = [
    (300_100_000_000, "SKU-MILK", 100),
    (300_100_000_008, "SKU-BREAD", 50),
    (300_100_000_016, "SKU-EGGS", 40),
];

/// A store whose history and keys are kept one second (the documented minimum, for tests).
fn store() -> Store {
    let store = Store::new();
    store.protect_api(TILLS, "127.0.0.1:0", "rate_limit_per_client = 0\n");
    let mut config = std::fs::read_to_string(&store.config).unwrap();
    config.push_str("\n[outbox]\nhistory_keep = \"1s\"\nkeys_keep = \"1s\"\n");
    std::fs::write(&store.config, config).unwrap();
    let products: Vec<Value> = ITEMS
        .iter()
        .map(|(body, sku, _)| product(&gtin14(*body), sku, sku))
        .collect();
    store.import_ok("products", "products.ndjson", &products);
    let stocks: Vec<Value> = ITEMS.iter().map(|(_, sku, n)| stock(sku, *n)).collect();
    store.import_ok("stock", "stock.ndjson", &stocks);
    store
}

fn on_hand(agent: &Agent, i: usize) -> i64 {
    let (status, body) = agent.get_json(&format!("/v1/products/{}", gtin14(ITEMS[i].0)));
    assert_eq!(status, 200, "{body}");
    body["stock"]["on_hand"].as_i64().unwrap()
}

fn shelf(agent: &Agent) -> Vec<i64> {
    (0..ITEMS.len()).map(|i| on_hand(agent, i)).collect()
}

fn sell(agent: &Agent, till: usize, key: &str, lines: &[(usize, i64)]) {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(i, qty)| json!({"code": gtin14(ITEMS[*i].0), "qty": qty, "unit_price_minor": 199}))
        .collect();
    let r = agent
        .http
        .post(agent.url("/v1/sales"))
        .bearer_auth(TOKENS[till - 1])
        .header("content-type", "application/json")
        .body(json!({"client_key": key, "currency": "EUR", "lines": lines}).to_string())
        .send()
        .expect("POST");
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().unwrap_or_default());
}

/// The retention rows of `relais outbox stats --json`, by table.
fn retention(store: &Store, table: &str) -> Value {
    let stats = store.outbox_stats();
    stats["retention"]
        .as_array()
        .unwrap_or_else(|| panic!("no retention in {stats}"))
        .iter()
        .find(|t| t["table"] == table)
        .cloned()
        .unwrap_or_else(|| panic!("no {table} in {stats}"))
}

#[test]
fn sales_central_has_counted_are_pruned_after_the_retention_and_the_shelf_shows_the_same_stock() {
    let store = store();
    let agent = store.start().with_token(TOKENS[0]);
    // Two tills, baskets of several items.
    sell(&agent, 1, "t1/r1", &[(0, 2), (1, 1)]);
    sell(&agent, 2, "t2/r1", &[(0, 1), (2, 3), (1, 2)]);
    sell(&agent, 1, "t1/r2", &[(2, 1), (0, 4)]);
    sell(&agent, 2, "t2/r2", &[(1, 1)]);
    let before = shelf(&agent);
    assert_eq!(before, vec![93, 46, 36]);
    agent.terminate();

    // Central's stock snapshot has counted the first two tickets (their seqs, from the outbox).
    let sales: Vec<u64> = store
        .outbox_events()
        .iter()
        .filter(|e| e["type"] == "sale.recorded")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(sales.len(), 4);
    let watermark = sales[1];
    let central = [(0, 100 - 2 - 1), (1, 50 - 1 - 2), (2, 40 - 3)];
    let snapshot: Vec<Value> = central
        .iter()
        .map(|(i, n)| json!({"sku": ITEMS[*i].1, "on_hand": n, "watermark_seq": watermark}))
        .collect();
    store.import_ok("stock", "stock-2.ndjson", &snapshot);

    let agent = store.start().with_token(TOKENS[0]);
    assert_eq!(shelf(&agent), before, "the new baseline plus what it lacks");
    // The five lines of the first two tickets go; the three of the last two stay.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let movements = retention(&store, "stock_movements");
        if movements["pruned"] == 5 {
            assert_eq!(movements["rows"], 3, "{movements}");
            assert!(
                movements["oldest_kept_ms"].as_i64().is_some(),
                "{movements}"
            );
            break;
        }
        assert!(Instant::now() < until, "not pruned after 30 s: {movements}");
        assert_eq!(shelf(&agent), before, "the shelf changed while pruning");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(retention(&store, "sku_movements")["pruned"], 5);
    assert_eq!(shelf(&agent), before, "after pruning");
    // The text form names every table for an auditor.
    let out = store.relais(&["outbox", "stats"]);
    assert_success(&out, "outbox stats");
    let text = String::from_utf8_lossy(&out.stdout);
    for table in [
        "stock_movements",
        "loyalty_ops",
        "idempotency",
        "released_lines",
        "prepared_lines",
        "shipment_steps",
    ] {
        assert!(text.contains(table), "{table} missing from:\n{text}");
    }
    assert!(text.contains("retention: history 1s, keys 1s"), "{text}");
    agent.terminate();
}

#[test]
fn a_customers_snapshot_imported_by_hand_deletes_the_damaged_replica_copies_and_cut_downloads_holding_the_erased_customer()
 {
    let store = Store::new();
    let customers = |ids: &[&str]| -> Vec<Value> {
        ids.iter()
            .map(|id| {
                json!({"customer_id": id, "display_name": format!("Name of {id}"),
                             "loyalty_balance": 10, "card_tokens": []})
            })
            .collect()
    };
    store.import_ok("customers", "customers.ndjson", &customers(&["C-1", "C-2"]));
    // A replica moved aside when it was found damaged still holds C-2; so does its WAL.
    let replica = store.replica_db();
    let aside = store.data_dir.join("replica.db.damaged-1765000000");
    std::fs::copy(&replica, &aside).unwrap();
    let aside_wal = store.data_dir.join("replica.db.damaged-1765000000-wal");
    std::fs::write(&aside_wal, b"C-2").unwrap();
    // The outbox's copy may hold undelivered facts: it is kept to its own retention.
    let outbox_aside = store.data_dir.join("outbox.db.damaged-1765000000");
    std::fs::write(&outbox_aside, b"store facts").unwrap();
    // A customers snapshot whose download was cut holds C-2 as well.
    std::fs::create_dir_all(store.data_dir.join("snapshots")).unwrap();
    let part = store.data_dir.join("snapshots/customers-41.ndjson.part");
    std::fs::write(&part, b"{\"customer_id\":\"C-2\"").unwrap();

    // Central's snapshot without C-2: an erasure, imported with the agent stopped.
    store.import_ok("customers", "customers-2.ndjson", &customers(&["C-1"]));
    assert!(
        !aside.exists(),
        "the damaged copy still holds the erased customer"
    );
    assert!(!aside_wal.exists());
    assert!(
        !part.exists(),
        "the cut download still holds the erased customer"
    );
    assert!(
        outbox_aside.exists(),
        "the outbox's damaged copy is not the replica's"
    );
    let conn = rusqlite::Connection::open(&replica).unwrap();
    let left: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM customers WHERE customer_id = 'C-2'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
}

#[test]
fn a_retry_within_the_key_retention_replays_and_one_after_it_once_central_has_the_fact_is_a_new_fact()
 {
    if !broker::available() {
        eprintln!("mosquitto is not installed (scripts/test.sh installs it); skipping");
        return;
    }
    let broker = broker::Broker::start(broker::BrokerOptions::default());
    // PUBACK is central's acknowledgment here: a delivered event leaves the outbox at once.
    let store = Store::with(Settings {
        sync: format!("broker = \"{}\"\nack = \"puback\"\n", broker.url()),
        ..Settings::default()
    });
    let mut config = std::fs::read_to_string(&store.config).unwrap();
    config.push_str("\n[outbox]\nkeys_keep = \"1s\"\n");
    std::fs::write(&store.config, config).unwrap();
    store.import_ok(
        "products",
        "products.ndjson",
        &[product(&gtin14(ITEMS[0].0), ITEMS[0].1, "Milk")],
    );
    let agent = store.start();
    let sale = json!({"sku": ITEMS[0].1, "kind": "sale", "qty": 2, "client_key": "t1/r1"});
    let (status, first) = agent.post_movement(&sale);
    assert_eq!(status, 201, "{first}");
    let (status, retry) = agent.post_movement(&sale);
    assert_eq!(status, 200, "within the retention: {retry}");
    assert_eq!(retry["replayed"], true);
    assert_eq!(retry["id"], first["id"]);

    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let keys = retention(&store, "idempotency");
        if keys["pruned"] == 1 {
            break;
        }
        assert!(
            Instant::now() < until,
            "key not pruned after 30 s: {keys}, {}",
            store.outbox_stats()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, again) = agent.post_movement(&sale);
    assert_eq!(
        status, 201,
        "past the retention, central has it: a new fact: {again}"
    );
    assert_ne!(again["id"], first["id"]);
    assert!(again["seq"].as_u64() > first["seq"].as_u64(), "{again}");
    agent.terminate();
}
