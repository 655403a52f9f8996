#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! The running agent owns a serial scanner (a real pseudo-terminal) and turns what it reads
//! into business events: decoded, looked up in the replica, recorded in the outbox.

mod common;

use common::{Store, gtin14, product, stock};
use serde_json::Value;
use serialport::{SerialPort, TTYPort};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

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
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn device_state(health: &Value, device: &str) -> Option<String> {
    health["devices"]
        .as_array()?
        .iter()
        .find(|d| d["device"] == device)
        .and_then(|d| d["state"].as_str().map(str::to_string))
}

#[test]
fn a_scanner_plugged_into_the_running_agent_turns_scans_into_recorded_lookups_and_its_unplugging_into_a_status()
 {
    let store = Store::new();
    let gtin = gtin14(400_638_133_393);
    store.import_ok(
        "products",
        "products.ndjson",
        &[product(&gtin, "SKU-MILK", "Whole milk 1 L")],
    );
    store.import_ok("stock", "stock.ndjson", &[stock("SKU-MILK", 12)]);
    let link = store.tmp.path().join("scanner");
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-profiles");
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(&store.config)
        .unwrap();
    write!(
        config,
        "\n[devices]\nprofiles_dir = \"{}\"\n[[devices.serial]]\nname = \"till-scanner\"\npath = \"{}\"\nprofile = \"serial-scanner-cr\"\n",
        profiles.display(),
        link.display()
    )
    .unwrap();
    drop(config);

    // The agent starts with its scanner absent (a normal state), and the scanner is plugged in
    // afterwards, which also keeps the pty's master out of the agent's inherited descriptors.
    let agent = store.start();
    wait_until("the absent scanner to be reported disconnected", || {
        (device_state(&agent.health(), "serial:till-scanner").as_deref() == Some("disconnected"))
            .then_some(())
    });
    let mut scanner = plug(&link);
    wait_until("the scanner to be connected", || {
        (device_state(&agent.health(), "serial:till-scanner").as_deref() == Some("connected"))
            .then_some(())
    });

    // A technician follows the live reads while the till scans.
    let mut watch = std::process::Command::new(common::BIN)
        .args([
            "--config",
            store.config.to_str().unwrap(),
            "devices",
            "watch",
            "--json",
        ])
        .args(["--agent", agent.url("").trim_start_matches("http://")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let watch_out = watch.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(watch_out)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));

    // An EAN-13 with its AIM identifier, as a scanner in AIM mode sends it, then a misread.
    let ean13 = gtin.trim_start_matches('0');
    scanner
        .master
        .write_all(format!("]E0{ean13}\r4006381333932\r").as_bytes())
        .unwrap();
    scanner.master.flush().unwrap();

    let scans = wait_until("two scans in the outbox", || {
        let scans: Vec<Value> = store
            .outbox_events()
            .into_iter()
            .filter(|e| e["type"] == "device.scan")
            .collect();
        (scans.len() >= 2).then_some(scans)
    });
    assert_eq!(scans[0]["class"], "telemetry");
    assert_eq!(scans[0]["payload"]["found"], true, "{}", scans[0]);
    assert_eq!(scans[0]["payload"]["sku"], "SKU-MILK");
    assert_eq!(scans[0]["payload"]["gtin"], gtin.as_str());
    assert_eq!(
        scans[1]["payload"]["valid"], false,
        "a bad check digit is not a product"
    );

    let watched: Value = serde_json::from_str(
        &lines_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("devices watch printed the scan"),
    )
    .unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(watched["kind"], "scan", "{watched}");
    assert_eq!(
        watched["detail"]["product"]["name"], "Whole milk 1 L",
        "{watched}"
    );

    let health = agent.health();
    let board = health["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == "serial:till-scanner")
        .cloned()
        .unwrap();
    assert_eq!(board["reads"], 2, "{board}");

    // Unplugged mid-shift: a normal state, reported, not an error.
    drop(scanner);
    let _ = std::fs::remove_file(&link);
    wait_until("the scanner to be reported disconnected", || {
        (device_state(&agent.health(), "serial:till-scanner").as_deref() == Some("disconnected"))
            .then_some(())
    });
    assert_eq!(agent.get_json("/v1/products/4006381333931").0, 200);
}
