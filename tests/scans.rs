#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! Scans at a till, through the real binary: the scale-label test set (restricted-circulation
//! codes with an embedded price or weight in the default French and German layouts, GS1 DataBar
//! Expanded fresh food with (3103)/(3922)/(17)), each with the price to charge; and a loyalty
//! card read by a serial scanner (a real pseudo-terminal) that identifies the customer while its
//! number appears nowhere — data directory, logs, or what the broker receives.

#[path = "common/broker.rs"]
mod broker;
mod common;

use common::{Store, base_price, check_digit, product, stock};
use serde_json::{Value, json};
use serialport::{SerialPort, TTYPort};
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// A GTIN-13 from its 12 digits, as the scanner sends it.
fn ean13(body12: &str) -> String {
    format!("{body12}{}", check_digit(body12))
}

/// The same number as the replica files it: GTIN-14.
fn gtin14(body12: &str) -> String {
    format!("0{}", ean13(body12))
}

/// The German value check digit (GS1 General Specifications §7.9.3) of a 5-digit value.
fn de_value_check(value: &str) -> char {
    let d: Vec<u32> = value.bytes().map(|b| u32::from(b - b'0')).collect();
    let five_plus = |x: u32| (x * 5) / 10 + (x * 5) % 10;
    let two_minus = |x: u32| [0, 2, 4, 6, 8, 9, 1, 3, 5, 7][x as usize];
    let five_minus = |x: u32| [0, 5, 9, 4, 8, 3, 7, 2, 6, 1][x as usize];
    let sum =
        five_plus(d[0]) + two_minus(d[1]) + five_minus(d[2]) + five_plus(d[3]) + two_minus(d[4]);
    let target = (10 - sum % 10) % 10;
    let digit = (0..10).find(|x| five_minus(*x) == target).unwrap();
    char::from(b'0' + digit as u8)
}

fn date_in(days: i64) -> chrono::NaiveDate {
    chrono::Local::now().date_naive() + chrono::Duration::days(days)
}

fn set_config(store: &Store, extra: &str) {
    let base = std::fs::read_to_string(&store.config).unwrap();
    let base = base.split("\n# test:\n").next().unwrap().to_string();
    std::fs::write(&store.config, format!("{base}\n# test:\n{extra}")).unwrap();
}

/// One case of the test set: the code a till scans, the item it is, what to charge.
struct Label {
    what: &'static str,
    code: String,
    sku: &'static str,
    charge: i64,
    source: &'static str,
}

fn check(store: &Store, labels: &[Label]) {
    for l in labels {
        let (status, v) = store.lookup_barcode(&l.code);
        assert_eq!(status, 0, "{}: {v}", l.what);
        assert_eq!(v["sku"], l.sku, "{}: {v}", l.what);
        let charge = &v["scan"]["price_to_charge"];
        assert_eq!(
            (charge["amount_minor"].as_i64(), charge["source"].as_str()),
            (Some(l.charge), Some(l.source)),
            "{}: {v}",
            l.what
        );
        assert_eq!(charge["currency"], "EUR", "{}", l.what);
    }
}

#[test]
fn scale_labels_and_fresh_food_labels_give_the_price_to_charge_in_the_default_layouts() {
    let store = Store::new();
    // Items are filed under their label's number with the value zeroed; prices are per kg (or
    // per unit for a count label).
    let fr_cheese = "260010100000"; // French weight layout 26 IIIII VVVVV
    let fr_tray = "210020100000"; // French price layout 21 IIIII VVVVV
    let de_ham = format!("281234{}00000", de_value_check("00000")); // 28 IIII C VVVVV
    let de_rolls = format!("251234{}00000", de_value_check("00000"));
    let salmon = "99300100003018"; // GTIN-14, indicator 9: a variable-measure trade item
    let salmon = format!("{}{}", &salmon[..13], check_digit(&salmon[..13]));
    store.import_ok(
        "products",
        "p.ndjson",
        &[
            product(&gtin14(fr_cheese), "PLU-CHEESE", "Comté (au kg)"),
            product(&gtin14(fr_tray), "PLU-TRAY", "Plateau (prix étiqueté)"),
            product(&gtin14(&de_ham), "PLU-HAM", "Schinken (je kg)"),
            product(&gtin14(&de_rolls), "PLU-ROLLS", "Brötchen (Stück)"),
            product(&salmon, "FRESH-SALMON", "Saumon (au kg)"),
        ],
    );
    let from = "2020-01-01T00:00:00Z";
    store.import_ok(
        "prices",
        "pr.ndjson",
        &[
            base_price("PLU-CHEESE", 2490, from),
            base_price("PLU-TRAY", 100, from),
            base_price("PLU-HAM", 1999, from),
            base_price("PLU-ROLLS", 45, from),
            base_price("FRESH-SALMON", 2890, from),
        ],
    );
    store.import_ok("stock", "s.ndjson", &[stock("PLU-CHEESE", 5)]);
    store.import_ok(
        "reservations",
        "r.ndjson",
        &[common::reservation("W-1", "PLU-TRAY", 1)],
    );

    // France (the default region): 1.235 kg × 24.90/kg = 30.7515 → 30.75; a 12.49 tray.
    let expiry = date_in(3).format("%y%m%d").to_string();
    let past = date_in(-1).format("%y%m%d").to_string();
    check(
        &store,
        &[
            Label {
                what: "French weight label",
                code: ean13("260010101235"),
                sku: "PLU-CHEESE",
                charge: 3075,
                source: "label_weight_x_unit_price",
            },
            Label {
                what: "French weight label, 0.100 kg rounds half up",
                code: ean13("260010100100"),
                sku: "PLU-CHEESE",
                charge: 249,
                source: "label_weight_x_unit_price",
            },
            Label {
                what: "French price label",
                code: ean13("210020101249"),
                sku: "PLU-TRAY",
                charge: 1249,
                source: "label_price",
            },
            Label {
                what: "DataBar Expanded (bracketed) with (3103) (3922) (17)",
                code: format!("(01){salmon}(3103)000755(17){expiry}(3922)2182"),
                sku: "FRESH-SALMON",
                charge: 2182,
                source: "ai_392n",
            },
            Label {
                what: "DataBar Expanded as the scanner sends it",
                code: format!("]e001{salmon}310300075539222182\u{1d}17{expiry}"),
                sku: "FRESH-SALMON",
                charge: 2182,
                source: "ai_392n",
            },
            Label {
                what: "DataBar Expanded without a price: weight × price per kg",
                code: format!("(01){salmon}(3103)000755(17){expiry}"),
                sku: "FRESH-SALMON",
                charge: 2182,
                source: "net_weight_x_unit_price",
            },
        ],
    );
    let (_, fresh) =
        store.lookup_barcode(&format!("(01){salmon}(3103)000755(17){expiry}(3922)2182"));
    assert_eq!(fresh["scan"]["expired"], false, "{fresh}");
    assert_eq!(fresh["scan"]["net_weight_kg"], "0.755", "{fresh}");
    let (_, stale) = store.lookup_barcode(&format!("(01){salmon}(3103)000755(17){past}(3922)2182"));
    assert_eq!(stale["scan"]["expired"], true, "{stale}");
    let ais: Vec<&str> = stale["scan"]["ais"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ais, ["text", "measure", "date", "amount"], "{stale}");

    // Germany: 1.500 kg × 19.99/kg = 29.985 → 29.99; 6 rolls × 0.45.
    set_config(&store, "[scans]\nrcn_region = \"de\"\n");
    check(
        &store,
        &[
            Label {
                what: "German weight label",
                code: ean13(&format!("281234{}01500", de_value_check("01500"))),
                sku: "PLU-HAM",
                charge: 2999,
                source: "label_weight_x_unit_price",
            },
            Label {
                what: "German count label",
                code: ean13(&format!("251234{}00006", de_value_check("00006"))),
                sku: "PLU-ROLLS",
                charge: 270,
                source: "label_count_x_unit_price",
            },
        ],
    );
    // A German label whose value check digit is wrong is a misread: invalid, with the rule.
    let wrong = if de_value_check("01500") == '9' {
        '0'
    } else {
        '9'
    };
    let (status, v) = store.lookup_barcode(&ean13(&format!("281234{wrong}01500")));
    assert_eq!(status, 65, "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains("check digit"),
        "{v}"
    );

    // A bad [scans] value is refused naming its key, its value and the fix.
    set_config(
        &store,
        "[scans]\nrcn_region = \"xx\"\n[[scans.cards]]\nname = \"c\"\nprefix = \"92\"\n",
    );
    let out = store.relais(&["config", "validate", store.config.to_str().unwrap()]);
    assert_eq!(common::status_code(&out), 78);
    let err = common::stderr(&out);
    assert!(
        err.contains("scans.rcn_region") && err.contains("\"xx\"") && err.contains("fix:"),
        "{err}"
    );
    assert!(err.contains("scans.cards[0].length"), "{err}");
}

struct Scanner {
    master: TTYPort,
    _slave: TTYPort,
}

fn plug(link: &Path) -> Scanner {
    let (master, slave) = TTYPort::pair().expect("pseudo-terminals are available");
    let name = slave.name().expect("the slave side has a path");
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(name, link).unwrap();
    Scanner {
        master,
        _slave: slave,
    }
}

fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every MQTT message under `relais/v1/#`, as central's user sees them.
fn record_broker(broker: &broker::Broker) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut options = MqttOptions::new("test-central-recorder", "127.0.0.1", broker.port);
    options.set_credentials("central", "");
    let (client, mut connection) = Client::new(options, 64);
    client.subscribe("relais/v1/#", QoS::AtLeastOnce).unwrap();
    let sink = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        let _client = client;
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let mut all = sink.lock().unwrap();
                    all.extend_from_slice(p.topic.as_bytes());
                    all.push(b' ');
                    all.extend_from_slice(&p.payload);
                    all.push(b'\n');
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    seen
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(path.display().to_string());
        }
    }
    found
}

#[test]
fn a_loyalty_card_read_by_a_serial_scanner_identifies_the_customer_and_its_number_appears_nowhere()
{
    const CARD: &str = "9250000000017";
    // A card of a scheme this store has no pattern for: withheld as a possible card number.
    const FOREIGN: &str = "6037991234567890";
    let have_broker = broker::available();
    let broker = have_broker.then(|| broker::Broker::start(broker::BrokerOptions::default()));
    let store = Store::with(common::Settings {
        sync: broker
            .as_ref()
            .map(|b| format!("broker = \"{}\"\n", b.url()))
            .unwrap_or_default(),
        ..common::Settings::default()
    });
    let token = relais::cards::CardHasher::new(&common::CARD_KEY)
        .token(CARD)
        .to_hex();
    store.import_ok(
        "customers",
        "c.ndjson",
        &[
            json!({"customer_id": "C-0042", "display_name": "Marie L.", "tier": "gold",
                 "loyalty_balance": 1200, "loyalty_watermark_seq": 0, "card_tokens": [token]}),
        ],
    );
    let milk = gtin14("400638133393");
    store.import_ok(
        "products",
        "p.ndjson",
        &[product(&milk, "SKU-MILK", "Whole milk 1 L")],
    );
    let link = store.tmp.path().join("scanner");
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-profiles");
    set_config(
        &store,
        &format!(
            "[log]\nlevel = \"info,relais=trace\"\n\
             [scans]\n[[scans.cards]]\nname = \"house-card\"\nprefix = \"9250\"\nlength = 13\n\
             [devices]\nprofiles_dir = \"{}\"\n[[devices.serial]]\nname = \"till-scanner\"\npath = \"{}\"\nprofile = \"serial-scanner-cr\"\n",
            profiles.display(),
            link.display()
        ),
    );
    let recorded = broker.as_ref().map(record_broker);
    let agent = store.start();
    let mut scanner = plug(&link);
    wait_until("the scanner to be connected", || {
        agent.health()["devices"]
            .as_array()?
            .iter()
            .any(|d| d["device"] == "serial:till-scanner" && d["state"] == "connected")
            .then_some(())
    });

    // The till follows the live reads while the cashier scans the card, a product and a card of
    // another scheme.
    let live = agent
        .request(reqwest::Method::GET, "/v1/devices/live")
        .send()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(live).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let ean = ean13("400638133393");
    scanner
        .master
        .write_all(format!("{CARD}\r{ean}\r{FOREIGN}\r").as_bytes())
        .unwrap();
    scanner.master.flush().unwrap();
    let mut reads = Vec::new();
    while reads.len() < 3 {
        let line = lines
            .recv_timeout(Duration::from_secs(15))
            .expect("three live reads");
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["kind"] != "status" {
            reads.push(v);
        }
    }
    assert_eq!(reads[0]["kind"], "card", "{}", reads[0]);
    assert_eq!(reads[0]["detail"]["via"], "scanner");
    assert_eq!(reads[0]["detail"]["identified_by"], "house-card");
    assert_eq!(reads[0]["detail"]["customer"]["customer_id"], "C-0042");
    assert_eq!(
        reads[1]["detail"]["product"]["sku"], "SKU-MILK",
        "{}",
        reads[1]
    );
    assert_eq!(
        reads[2]["detail"]["withheld"], "possible_card_number",
        "{}",
        reads[2]
    );

    // Recorded as telemetry: still in the outbox, or already delivered to the broker.
    let recorded_text = || {
        let mut text: String = store
            .outbox_events()
            .iter()
            .map(|e| format!("{e}\n"))
            .collect();
        if let Some(r) = &recorded {
            text.push_str(&String::from_utf8_lossy(&r.lock().unwrap()));
        }
        text
    };
    // The same event may be seen twice (in the outbox and at the broker): wait for each read. The
    // product scan is recorded as it was read (its data is no one's secret).
    wait_until("the card and both scans recorded", || {
        let text = recorded_text();
        (text.contains("device.card")
            && text.contains("C-0042")
            && text.contains("possible_card_number")
            && text.contains(&ean))
        .then_some(())
    });
    // The till's own lookup keeps the scan too; a code breaking a GS1 rule is a 400 naming it.
    let (status, found) = agent.get_json(&format!("/v1/products/{ean}"));
    assert_eq!(
        (status, &found["scan"]["kind"]),
        (200, &json!("gtin")),
        "{found}"
    );
    let (status, refused) = agent.get_json("/v1/products?code=%2810%29LOT7");
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["details"]["rule"], "req", "{refused}");
    assert_eq!(refused["error"]["details"]["ai"], "10", "{refused}");
    let log = agent.log_text();
    assert!(agent.terminate().success());

    for number in [CARD, FOREIGN] {
        let in_files = files_containing(&store.data_dir, number.as_bytes());
        assert!(in_files.is_empty(), "{number} found in {in_files:?}");
        assert!(!log.contains(number), "{number} is in the agent's log");
        if let Some(recorded) = &recorded {
            let all = recorded.lock().unwrap();
            assert!(
                !all.windows(number.len()).any(|w| w == number.as_bytes()),
                "{number} reached the broker"
            );
        }
    }
    if !have_broker {
        eprintln!("mosquitto is not installed: the broker part of this test was skipped");
    }
}
