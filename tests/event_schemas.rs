#![cfg(feature = "central")] // drives central's side: the default `central` feature
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! The published JSON Schemas (docs/schemas/, ADR 0027) are the ones the agent's types generate,
//! and every event a store day sends to central matches them: a real Mosquitto, the real agent
//! with a serial scanner and a UHF module at the door on pseudo-terminals, the real `relaisctl
//! ingest`, and the schemas read from the committed files (not from the types), so the test
//! proves the documents.

#[path = "common/broker.rs"]
mod broker;
mod common;

use broker::{Broker, BrokerOptions};
use common::{Agent, KillOnDrop, Settings, Store, base_price, check_digit, product, stock};
use serde_json::{Value, json};
use serialport::{SerialPort, TTYPort};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RELAISCTL: &str = env!("CARGO_BIN_EXE_relaisctl");
const REGENERATE: &str = "cargo run --bin relaisctl -- schemas --out docs/schemas";

fn published_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas")
}

/// `relative path → text` of every `.json` file under `dir/events` and `dir/messages`.
fn schema_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for sub in ["events", "messages"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                files.insert(
                    format!("{sub}/{name}"),
                    std::fs::read(entry.path()).unwrap(),
                );
            }
        }
    }
    files
}

/// A published schema, compiled.
fn validator(relative: &str) -> jsonschema::Validator {
    let path = published_dir().join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; regenerate with `{REGENERATE}`", path.display()));
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("{} is not a valid JSON Schema: {e}", path.display()))
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn the_published_schemas_are_the_ones_the_types_generate() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(RELAISCTL)
        .args(["schemas", "--out"])
        .arg(tmp.path())
        .output()
        .expect("relaisctl schemas");
    assert!(out.status.success(), "{}", common::describe(&out));
    let generated = schema_files(tmp.path());
    let published = schema_files(&published_dir());
    assert!(generated.len() >= 20, "{:?}", generated.keys());
    let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(
        names(&published),
        names(&generated),
        "docs/schemas/ does not list the files the types generate: run `{REGENERATE}` and commit \
         docs/schemas/"
    );
    for (name, text) in &generated {
        assert!(
            published[name] == *text,
            "docs/schemas/{name} differs from what the types generate: run `{REGENERATE}` and \
             commit docs/schemas/"
        );
    }
    // The AsyncAPI document references every one of them.
    let asyncapi =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/asyncapi.yaml"))
            .unwrap();
    for name in generated.keys() {
        assert!(
            asyncapi.contains(&format!("$ref: './schemas/{name}'")),
            "docs/asyncapi.yaml does not reference schemas/{name}: add it to the messages or to \
             components/schemas/Event"
        );
    }
}

/// A sale as the agent records it: three lines, a customer earning points.
fn sale_payload() -> Value {
    json!({"receipt": "R-1", "currency": "EUR", "total_minor": 4749, "customer_id": "C-77",
           "earn_per_minor_units": 100, "points_earned": 46, "client_key": "t1/r-1", "by": "till-1",
           "lines": [
               {"sku": "SKU-MILK", "gtin": "03001000000000", "qty": 3, "unit_price_minor": 250,
                "stock_applied": true, "points": 7},
               {"sku": "SKU-BREAD", "gtin": null, "qty": 1, "unit_price_minor": 1999,
                "stock_applied": true, "points": 19},
               {"sku": null, "gtin": null, "qty": 2, "unit_price_minor": 1000,
                "stock_applied": false, "points": 20}]})
}

#[test]
fn a_sale_whose_line_quantity_is_a_string_is_refused_by_the_sale_schema() {
    let sale = validator("events/sale.recorded.json");
    let good = sale_payload();
    assert_eq!(errors(&sale, &good), Vec::<String>::new());
    let mut bad = good.clone();
    bad["lines"][1]["qty"] = json!("1");
    let found = errors(&sale, &bad);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("/lines/1/qty"), "{found:?}");
    // And a GTIN that is not 14 digits, a line without its `qty`.
    let mut bad = good.clone();
    bad["lines"][0]["gtin"] = json!("3001000000000");
    assert!(!sale.is_valid(&bad));
    let mut bad = good;
    bad["lines"][2].as_object_mut().unwrap().remove("qty");
    assert!(!sale.is_valid(&bad));
}

const TOKENS: [&str; 2] = [
    "till-1-token-0123456789abcdefghijklmn",
    "till-2-token-0123456789abcdefghijklmn",
];
/// (GTIN-13 body, SKU, stock, price)
const ITEMS: [(&str, &str, i64, i64); 4] = [
    ("300100000000", "SKU-MILK", 100, 250),
    ("300100000001", "SKU-BREAD", 50, 1999),
    ("300100000002", "SKU-EGGS", 40, 1000),
    ("300100000003", "SKU-JAM", 30, 450),
];
/// Ada's loyalty card as the till sends it, and the house card a scanner reads.
const CARD: &str = "04A22B917C80";
const HOUSE_CARD: &str = "9250000000017";
/// A card of a scheme the store has no pattern for: withheld as a possible card number.
const FOREIGN_CARD: &str = "6037991234567890";
/// A serialised GS1 coupon (AI 8110): issuer 614141, offer 000123, serial 123456.
const GS1_COUPON: &str = "(8110)061414100012325011000050123456";

fn ean13(body: &str) -> String {
    format!("{body}{}", check_digit(body))
}

fn gtin14(body: &str) -> String {
    format!("0{}", ean13(body))
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

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every message published under `relais/v1/#`, as central sees it: (topic, payload).
type Recorded = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

fn record_broker(broker: &Broker) -> Recorded {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut options = MqttOptions::new("test-schema-recorder", "127.0.0.1", broker.port);
    options.set_credentials("central", "");
    options.set_max_packet_size(8 << 20, 8 << 20);
    let (client, mut connection) = Client::new(options, 256);
    client.subscribe("relais/v1/#", QoS::AtLeastOnce).unwrap();
    let sink = Arc::clone(&seen);
    let (subscribed_tx, subscribed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _client = client;
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = subscribed_tx.send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = p.topic.clone();
                    sink.lock().unwrap().push((topic, p.payload.to_vec()));
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    // Nothing the agent publishes may pass before the recorder listens.
    subscribed
        .recv_timeout(Duration::from_secs(10))
        .expect("the recorder subscribed");
    seen
}

/// The EPC of an SGTIN-96 tag on a jacket passing the door.
const EPC: [u8; 12] = [
    0x30, 0x75, 0x1F, 0xEB, 0x70, 0x5C, 0x59, 0x04, 0xE3, 0xD5, 0x0D, 0x70,
];

/// A fake M100 UHF module on a pty master behind `link` (as tests/devices_agent.rs): answers
/// Stop and Get Module Information and, while a Multiple Inventory runs, reports `EPC` every
/// 50 ms as long as `present`, else "no tag".
fn fake_uhf_module(
    link: &Path,
    present: Arc<AtomicBool>,
    quit: Arc<AtomicBool>,
) -> (std::thread::JoinHandle<()>, TTYPort) {
    use relais::devices::rfid::m100::{self, cmd, frame_type};
    use std::io::Read;
    let (mut master, slave) = TTYPort::pair().expect("pseudo-terminals are available");
    std::os::unix::fs::symlink(slave.name().unwrap(), link).unwrap();
    master.set_timeout(Duration::from_millis(20)).unwrap();
    let thread = std::thread::spawn(move || {
        let mut decoder = m100::Decoder::new();
        let mut polling = false;
        let mut buf = [0u8; 256];
        let mut last = Instant::now();
        while !quit.load(Ordering::SeqCst) {
            let n = match master.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => 0,
                Err(_) => return,
            };
            for f in decoder.push(&buf[..n], 0) {
                let answer = match f.command {
                    cmd::STOP_POLL => {
                        polling = false;
                        m100::encode(frame_type::RESPONSE, cmd::STOP_POLL, &[0])
                    }
                    cmd::MODULE_INFO => m100::encode(
                        frame_type::RESPONSE,
                        cmd::MODULE_INFO,
                        b"\x00M100 26dBm V1.0",
                    ),
                    _ => {
                        polling = true;
                        continue;
                    }
                };
                master.write_all(&answer).unwrap();
            }
            if polling && last.elapsed() >= Duration::from_millis(50) {
                last = Instant::now();
                let frame = if present.load(Ordering::SeqCst) {
                    m100::tag_notice(-58, m100::pc_for(EPC.len()), &EPC, 0x1234)
                } else {
                    m100::error_response(0x15)
                };
                master.write_all(&frame).unwrap();
            }
        }
    });
    (thread, slave)
}

/// The schema file of a message on `topic` (relative to `relais/v1/{store}/{agent}/`).
fn message_schema(tail: &str) -> Option<&'static str> {
    match tail {
        "state" => Some("messages/state.json"),
        "evt" => Some("messages/evt.json"),
        "facts" => Some("messages/facts.json"),
        "ack" => Some("messages/ack.json"),
        _ => None,
    }
}

/// A store with four products, prices and stock, Ada (C-77) with a till card and a house card,
/// a click-and-collect order (WEB-3L) and a ship order (SHIP-1), two tills, and a serial scanner
/// on a pseudo-terminal behind `link` and a UHF module at the door behind `door`.
fn store(broker: &Broker, link: &Path, door: &Path) -> Store {
    let store = Store::with(Settings {
        sync: format!("broker = \"{}\"\nack_timeout = \"5s\"\n", broker.url()),
        ..Settings::default()
    });
    let lines: String = TOKENS
        .iter()
        .enumerate()
        .map(|(i, t)| format!("till-{} {t}\n", i + 1))
        .collect();
    store.protect_api(&lines, "127.0.0.1:0", "rate_limit_per_client = 0\n");
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-profiles");
    let config = std::fs::read_to_string(&store.config).unwrap();
    std::fs::write(
        &store.config,
        format!(
            "{config}\n[scans]\n[[scans.cards]]\nname = \"house-card\"\nprefix = \"9250\"\nlength = 13\n\
             [devices]\nprofiles_dir = \"{}\"\n[[devices.serial]]\nname = \"till-scanner\"\n\
             path = \"{}\"\nprofile = \"serial-scanner-cr\"\n\
             [[devices.rfid_serial]]\nname = \"door\"\npath = \"{}\"\ndebounce_window = \"1s\"\n",
            profiles.display(),
            link.display(),
            door.display()
        ),
    )
    .unwrap();
    let products: Vec<Value> = ITEMS
        .iter()
        .map(|(body, sku, _, _)| product(&gtin14(body), sku, sku))
        .collect();
    store.import_ok("products", "products.ndjson", &products);
    let prices: Vec<Value> = ITEMS
        .iter()
        .map(|(_, sku, _, price)| base_price(sku, *price, "2026-01-01T00:00:00Z"))
        .collect();
    store.import_ok("prices", "prices.ndjson", &prices);
    let stocks: Vec<Value> = ITEMS.iter().map(|(_, sku, n, _)| stock(sku, *n)).collect();
    store.import_ok("stock", "stock.ndjson", &stocks);
    let hasher = relais::cards::CardHasher::new(&common::CARD_KEY);
    let till_card = hasher
        .token(&relais::cards::normalize_card_id(CARD).unwrap())
        .to_hex();
    let house_card = hasher.token(HOUSE_CARD).to_hex();
    store.import_ok(
        "customers",
        "customers.ndjson",
        &[
            json!({"customer_id": "C-77", "display_name": "Ada Q.", "tier": "gold",
                   "loyalty_balance": 120, "card_tokens": [till_card, house_card]}),
        ],
    );
    let order = |order: &str, line: i64, sku: &str, qty: i64, status: &str| {
        json!({"order_id": order, "line": line, "sku": sku, "qty": qty, "status": status,
               "pickup_code": format!("PU-{order}")})
    };
    store.import_ok(
        "reservations",
        "reservations.ndjson",
        &[
            order("WEB-3L", 1, "SKU-MILK", 2, "picked"),
            order("WEB-3L", 2, "SKU-BREAD", 1, "picked"),
            order("WEB-3L", 3, "SKU-JAM", 1, "open"),
            json!({"order_id": "SHIP-1", "line": 1, "sku": "SKU-MILK", "qty": 3,
                   "status": "open", "fulfilment": "ship"}),
            json!({"order_id": "SHIP-1", "line": 2, "sku": "SKU-JAM", "qty": 2,
                   "status": "open", "fulfilment": "ship"}),
        ],
    );
    store
}

/// What a store does in a day, through the API as the tills do it; returns the ids of the
/// store facts recorded.
fn store_day(agent: &Agent) -> BTreeSet<String> {
    let facts = std::cell::RefCell::new(BTreeSet::new());
    let record = |what: &str, till: usize, path: &str, body: Value| -> Value {
        let (status, answer) = post_as(agent, till, path, &body);
        assert_eq!(status, 201, "{what}: {answer}");
        facts
            .borrow_mut()
            .insert(answer["id"].as_str().unwrap().to_string());
        answer
    };
    let milk = gtin14(ITEMS[0].0);
    let sale = record(
        "a three-line ticket with Ada's card",
        1,
        "/v1/sales",
        json!({"client_key": "t1/r-1", "receipt": "R-1", "currency": "EUR",
               "customer": {"card": CARD},
               "lines": [{"code": milk, "qty": 3, "unit_price_minor": 250},
                         {"sku": "SKU-BREAD", "qty": 1, "unit_price_minor": 1999},
                         {"sku": "SKU-EGGS", "qty": 2, "unit_price_minor": 1000}]}),
    );
    assert_eq!(sale["points_earned"], 46, "{sale}");
    // The till gave up waiting and sends the ticket again: the same answer, no second fact.
    let (status, again) = post_as(
        agent,
        1,
        "/v1/sales",
        &json!({"client_key": "t1/r-1", "receipt": "R-1", "currency": "EUR",
                "customer": {"card": CARD},
                "lines": [{"code": milk, "qty": 3, "unit_price_minor": 250},
                          {"sku": "SKU-BREAD", "qty": 1, "unit_price_minor": 1999},
                          {"sku": "SKU-EGGS", "qty": 2, "unit_price_minor": 1000}]}),
    );
    assert!(status == 200 || status == 201, "{again}");
    assert_eq!(again["id"], sale["id"], "{again}");
    // Two tills at once, one ticket with an item the replica does not know.
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=2)
            .map(|till| {
                s.spawn(move || {
                    post_as(
                        agent,
                        till,
                        "/v1/sales",
                        &json!({"client_key": format!("t{till}/r-{}", till + 1),
                                "receipt": format!("R-{}", till + 1), "currency": "EUR",
                                "lines": [{"sku": "SKU-JAM", "qty": 1, "unit_price_minor": 450},
                                          {"code": gtin14("400000000001"), "qty": 1,
                                           "unit_price_minor": 99}]}),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, answer) in answers {
        assert_eq!(status, 201, "{answer}");
        facts
            .borrow_mut()
            .insert(answer["id"].as_str().unwrap().to_string());
    }
    record(
        "a return of one milk and the eggs of R-1",
        2,
        "/v1/returns",
        json!({"client_key": "t2/ret-1", "original": {"receipt": "R-1"},
               "customer": {"card": CARD}, "reason": "changed mind",
               "lines": [{"sku": "SKU-MILK", "qty": 1, "original_line": 0},
                         {"sku": "SKU-EGGS", "qty": 2, "original_line": 2}]}),
    );
    record(
        "a goods receipt",
        1,
        "/v1/movements",
        json!({"client_key": "bo/rcpt-1", "kind": "receipt", "sku": "SKU-JAM", "qty": 12,
               "note": "delivery 4711"}),
    );
    record(
        "a cycle count of the dairy shelf",
        2,
        "/v1/cycle-counts",
        json!({"client_key": "count-1", "zone": "dairy", "apply": true,
               "counts": [{"sku": "SKU-MILK", "counted": 97}, {"sku": "SKU-EGGS", "counted": 40}]}),
    );
    record(
        "a goodwill earn",
        1,
        "/v1/loyalty/earn",
        json!({"client_key": "t1/earn-1", "customer_id": "C-77", "points": 10}),
    );
    record(
        "a loyalty burn",
        1,
        "/v1/loyalty/burn",
        json!({"client_key": "t1/burn-1", "card": CARD, "points": 30}),
    );
    record(
        "the open line of WEB-3L prepared here",
        2,
        "/v1/pickups/PU-WEB-3L/prepare",
        json!({"client_key": "web-3l/prep"}),
    );
    let collected = record(
        "WEB-3L's milk and bread collected",
        1,
        "/v1/pickups/PU-WEB-3L/collect",
        json!({"client_key": "web-3l/collect-1", "lines": [1, 2]}),
    );
    assert_eq!(collected["partial"], true, "{collected}");
    for (step, body) in [
        ("picked", json!({"client_key": "ship-1/picked"})),
        ("packed", json!({"client_key": "ship-1/packed"})),
        (
            "shipped",
            json!({"client_key": "ship-1/shipped", "carrier": "DHL Paket",
                   "tracking_number": "JJD0001234567"}),
        ),
    ] {
        record(step, 2, &format!("/v1/shipments/SHIP-1/{step}"), body);
    }
    record(
        "Ada allows marketing",
        1,
        "/v1/customers/C-77/consent",
        json!({"client_key": "t1/consent-1", "purpose": "marketing", "granted": true}),
    );
    record(
        "a plain coupon",
        1,
        "/v1/coupons/redeem",
        json!({"client_key": "t1/R-1/coupon", "code": "WELCOME-7Q2X", "receipt": "R-1",
               "customer": {"card": CARD}}),
    );
    record(
        "a serialised GS1 coupon",
        2,
        "/v1/coupons/redeem",
        json!({"client_key": "t2/R-2/coupon", "code": GS1_COUPON, "receipt": "R-2"}),
    );
    facts.into_inner()
}

/// `relaisctl ingest` into `sink`, acknowledging to the agent.
fn ingest(broker: &Broker, sink: &Path) -> KillOnDrop {
    let child = Command::new(RELAISCTL)
        .args(["ingest", "--broker", &broker.url(), "--json", "--sink"])
        .arg(sink)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("relaisctl ingest");
    KillOnDrop(child)
}

/// (event id, type, class) of every event the sink holds.
fn held(sink: &Path) -> Vec<(String, String, String)> {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(sink, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare("SELECT id, type, class FROM events") else {
        return Vec::new();
    };
    stmt.query_map([], |r| {
        let id: Vec<u8> = r.get(0)?;
        Ok((id, r.get(1)?, r.get(2)?))
    })
    .map(|rows| {
        rows.flatten()
            .map(|(id, t, c)| {
                let id = uuid::Uuid::from_slice(&id).map_or_else(
                    |_| String::from_utf8_lossy(&id).into_owned(),
                    |u| u.to_string(),
                );
                (id, t, c)
            })
            .collect()
    })
    .unwrap_or_default()
}

#[test]
fn every_event_the_agent_emits_in_a_store_day_matches_its_published_schema() {
    if !broker::available() {
        eprintln!("mosquitto is not installed (scripts/test.sh installs it); skipping");
        return;
    }
    let broker = Broker::start(BrokerOptions { persistence: false });
    let tmp = tempfile::tempdir().unwrap();
    let sink = tmp.path().join("sink.db");
    let recorded = record_broker(&broker);
    let central = ingest(&broker, &sink);
    let link = tmp.path().join("usb-Till_Scanner-if00");
    let (mut scanner, slave) = TTYPort::pair().expect("pseudo-terminals are available");
    std::os::unix::fs::symlink(slave.name().unwrap(), &link).unwrap();
    let door = tmp.path().join("usb-Door_UHF-if00");
    let (present, quit) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(false)),
    );
    let (module, _module_slave) = fake_uhf_module(&door, Arc::clone(&present), Arc::clone(&quit));
    let store = store(&broker, &link, &door);
    let agent = store.start().with_token(TOKENS[0]);
    let connected = |device: &str| {
        agent.health()["devices"].as_array().is_some_and(|d| {
            d.iter()
                .any(|d| d["device"] == device && d["state"] == "connected")
        })
    };
    wait_for(
        "the scanner and the door connected",
        Duration::from_secs(20),
        || connected("serial:till-scanner") && connected("rfid-serial:door"),
    );

    // The cashier scans Ada's house card, a carton of milk and a card of another scheme.
    let milk = ean13(ITEMS[0].0);
    scanner
        .write_all(format!("{HOUSE_CARD}\r{milk}\r{FOREIGN_CARD}\r").as_bytes())
        .unwrap();
    scanner.flush().unwrap();
    let facts = store_day(&agent);
    // The jacket leaves the door's field: a departure once the debounce window passed.
    wait_for("the jacket's arrival", Duration::from_secs(20), || {
        held(&sink).iter().any(|(_, t, _)| t == "rfid.arrived")
    });
    present.store(false, Ordering::SeqCst);

    // Central holds every store fact, and the three reads.
    wait_for(
        "the sink to hold every store fact and the reads",
        Duration::from_secs(60),
        || {
            let held = held(&sink);
            let ids: BTreeSet<&str> = held.iter().map(|(id, _, _)| id.as_str()).collect();
            facts.iter().all(|f| ids.contains(f.as_str()))
                && held.iter().filter(|(_, t, _)| t == "device.scan").count() >= 2
                && held.iter().any(|(_, t, _)| t == "device.card")
                && held.iter().any(|(_, t, _)| t == "rfid.departed")
        },
    );
    // The recorder subscribed beside the ingest saw each of them too (and the ack that
    // followed).
    let held = held(&sink);
    wait_for(
        "the recorder to see every held event",
        Duration::from_secs(20),
        || {
            let seen = recorded.lock().unwrap();
            let text: Vec<String> = seen
                .iter()
                .map(|(_, p)| String::from_utf8_lossy(p).into_owned())
                .collect();
            held.iter()
                .all(|(id, _, _)| text.iter().any(|t| t.contains(id.as_str())))
                && seen.iter().any(|(t, _)| t.ends_with("/ack"))
        },
    );
    drop(agent);
    drop(central);
    quit.store(true, Ordering::SeqCst);
    module.join().unwrap();

    let mut validators: BTreeMap<String, jsonschema::Validator> = BTreeMap::new();
    let mut validate = |schema: &str, instance: &Value, what: &str| -> Vec<String> {
        if !published_dir().join(schema).exists() {
            return vec![format!("{what}: no published schema {schema}")];
        }
        let v = validators
            .entry(schema.to_string())
            .or_insert_with(|| validator(schema));
        errors(v, instance)
            .into_iter()
            .map(|e| format!("{what} against {schema}: {e}\n  {instance}"))
            .collect()
    };
    let mut failures = Vec::new();
    let mut events_validated = BTreeSet::new();
    let mut types_seen = BTreeSet::new();
    let mut messages: BTreeMap<&str, usize> = BTreeMap::new();
    let seen = recorded.lock().unwrap().clone();
    for (topic, payload) in &seen {
        let tail = relais::sync::wire::Topics::parse(topic).map(|(_, t)| t.to_string());
        let Some(schema) = tail.as_deref().and_then(message_schema) else {
            continue;
        };
        if payload.is_empty() {
            continue; // a cleared retained message
        }
        let message: Value = match serde_json::from_slice(payload) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{topic}: not JSON: {e}"));
                continue;
            }
        };
        *messages.entry(schema).or_default() += 1;
        failures.extend(validate(schema, &message, topic));
        if schema != "messages/evt.json" {
            continue;
        }
        for event in message["events"].as_array().into_iter().flatten() {
            let event_type = event["type"].as_str().unwrap_or_default().to_string();
            let what = format!("{event_type} {}", event["id"]);
            failures.extend(validate("messages/envelope.json", event, &what));
            failures.extend(validate(
                &format!("events/{event_type}.json"),
                &event["payload"],
                &what,
            ));
            events_validated.insert(event["id"].as_str().unwrap_or_default().to_string());
            types_seen.insert(event_type);
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    for (id, event_type, _) in &held {
        assert!(
            events_validated.contains(id),
            "{event_type} {id} is held by central but was not validated"
        );
    }
    let registry = relais::sync::schemas::events();
    for (id, event_type, class) in &held {
        let registered = registry.iter().find(|e| e.event_type == event_type);
        assert_eq!(
            registered.map(|e| e.class.name()),
            Some(class.as_str()),
            "{event_type} {id}: its class is not the one the registry publishes"
        );
    }
    // Every event type the agent can emit: the tills' store facts, the door's RFID store facts
    // and the scanner's telemetry.
    let expected: BTreeSet<&str> = registry.iter().map(|e| e.event_type).collect();
    assert!(registry.iter().filter(|e| e.api_fact).count() >= 13);
    let missing: Vec<&&str> = expected
        .iter()
        .filter(|t| !types_seen.contains(**t))
        .collect();
    assert!(
        missing.is_empty(),
        "the store day emitted no {missing:?}; seen: {types_seen:?}"
    );
    for schema in ["state", "evt", "facts", "ack"].map(|m| format!("messages/{m}.json")) {
        assert!(
            messages.contains_key(schema.as_str()),
            "no message validated against {schema}: {messages:?}"
        );
    }
    println!(
        "event schemas: {} event types, {} events validated, 0 failures ({} messages: {messages:?})",
        types_seen.len(),
        events_validated.len(),
        messages.values().sum::<usize>()
    );
}
