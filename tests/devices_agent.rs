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

/// A fake M100 UHF module on a pty master: answers Stop and Get Module Information, and while a
/// Multiple Inventory runs sends one notification for `epc` every 50 ms as long as `present`.
fn fake_uhf_module(
    link: &Path,
    epc: Vec<u8>,
    present: std::sync::Arc<std::sync::atomic::AtomicBool>,
    quit: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (std::thread::JoinHandle<()>, TTYPort) {
    use relais::devices::rfid::m100::{self, cmd, frame_type};
    use std::io::Read;
    use std::sync::atomic::Ordering;
    let Scanner { mut master, _slave } = plug(link);
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
                    m100::tag_notice(-58, m100::pc_for(epc.len()), &epc, 0x1234)
                } else {
                    m100::error_response(0x15)
                };
                master.write_all(&frame).unwrap();
            }
        }
    });
    (thread, _slave)
}

#[test]
fn a_uhf_module_plugged_into_the_running_agent_records_arrivals_and_departures_as_store_facts() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let store = Store::new();
    let link = store.tmp.path().join("uhf-module");
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-profiles");
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(&store.config)
        .unwrap();
    write!(
        config,
        "\n[devices]\nprofiles_dir = \"{}\"\n[[devices.rfid_serial]]\nname = \"door\"\npath = \"{}\"\ndebounce_window = \"1s\"\nrestart_after = \"500ms\"\n",
        profiles.display(),
        link.display()
    )
    .unwrap();
    drop(config);

    let agent = store.start();
    wait_until("the absent module to be reported disconnected", || {
        (device_state(&agent.health(), "rfid-serial:door").as_deref() == Some("disconnected"))
            .then_some(())
    });
    let epc: Vec<u8> = vec![
        0x30, 0x75, 0x1F, 0xEB, 0x70, 0x5C, 0x59, 0x04, 0xE3, 0xD5, 0x0D, 0x70,
    ];
    let present = Arc::new(AtomicBool::new(true));
    let quit = Arc::new(AtomicBool::new(false));
    let (module, slave) = fake_uhf_module(&link, epc, present.clone(), quit.clone());
    wait_until("the module to be connected", || {
        (device_state(&agent.health(), "rfid-serial:door").as_deref() == Some("connected"))
            .then_some(())
    });

    let arrived = wait_until("an rfid.arrived store fact", || {
        store
            .outbox_events()
            .into_iter()
            .find(|e| e["type"] == "rfid.arrived")
    });
    assert_eq!(arrived["class"], "store_fact", "{arrived}");
    assert_eq!(
        arrived["payload"]["device"], "rfid-serial:door",
        "{arrived}"
    );
    assert_eq!(arrived["payload"]["epc"], "30751FEB705C5904E3D50D70");
    assert_eq!(arrived["payload"]["antenna"], 1);
    assert_eq!(arrived["payload"]["rssi_dbm"], -58);

    // The tag leaves the field: one departure after the window, counting every read.
    present.store(false, Ordering::SeqCst);
    let departed = wait_until("an rfid.departed store fact", || {
        store
            .outbox_events()
            .into_iter()
            .find(|e| e["type"] == "rfid.departed")
    });
    assert!(
        departed["payload"]["reads"].as_u64().unwrap() >= 1,
        "{departed}"
    );
    let arrivals = store
        .outbox_events()
        .into_iter()
        .filter(|e| e["type"] == "rfid.arrived")
        .count();
    assert_eq!(arrivals, 1, "one presence, one arrival");

    // Unplugged: a status, not an error.
    quit.store(true, Ordering::SeqCst);
    module.join().unwrap();
    drop(slave);
    let _ = std::fs::remove_file(&link);
    wait_until("the module to be reported disconnected", || {
        (device_state(&agent.health(), "rfid-serial:door").as_deref() == Some("disconnected"))
            .then_some(())
    });
}
