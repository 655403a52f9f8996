//! The PC/SC driver against a real pcscd with the vsmartcard vpcd virtual reader and a card
//! emulator (see docs/pcsc.md). Skipped with a clear line when pcscd / vpcd are not installed.
//!
//! libpcsclite reads `PCSCLITE_CSOCK_NAME` once per process, so every test re-runs this binary
//! for itself with its own private pcscd socket: tests stay parallel and never touch a system
//! pcscd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "support/pcscd.rs"]
mod pcscd;
#[path = "support/vpcd_card.rs"]
mod vpcd_card;

use pcscd::PrivatePcscd;
use relais::devices::pcsc::{self, LoyaltyApplet, PcscConfig};
use relais::devices::{DeviceEvent, DeviceId, DeviceState, EventSink, Stop};
use std::path::PathBuf;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::Receiver;
use vpcd_card::{CardKind, MIFARE_ATR, VirtualCard};

const CHILD_DIR_ENV: &str = "RELAIS_PCSC_TEST_DIR";
const READER: &str = "Virtual PCD 00 00";
const UID_7: [u8; 7] = [0x04, 0xA2, 0x2B, 0x1C, 0x5D, 0x6E, 0x80];
const WAIT: Duration = Duration::from_secs(8);

/// Run `body` in a child copy of this binary talking to its own pcscd socket.
fn isolated(name: &str, body: impl FnOnce(Lab)) {
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        body(Lab::new(PathBuf::from(dir)));
        return;
    }
    if let Err(missing) = pcscd::tools_installed() {
        println!("skipping {name}: {missing}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir.path())
        .env("PCSCLITE_CSOCK_NAME", dir.path().join("pcscd.comm"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let logs: String = std::fs::read_dir(dir.path())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child test {name} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- pcscd\n{logs}"
    );
}

/// What one child test has: a directory for pcscd and a vpcd port.
struct Lab {
    dir: PathBuf,
    port: u16,
}

impl Lab {
    fn new(dir: PathBuf) -> Lab {
        let port = pcscd::free_vpcd_port().unwrap();
        Lab { dir, port }
    }

    fn pcscd(&self) -> PrivatePcscd {
        PrivatePcscd::start(&self.dir, &self.dir.join("pcscd.comm"), self.port).unwrap()
    }
}

struct Running {
    events: Receiver<DeviceEvent>,
    stop: Stop,
    thread: JoinHandle<()>,
}

fn start_driver(config: PcscConfig) -> Running {
    let (sink, events) = EventSink::channel(64);
    let stop = Stop::new();
    let thread = pcsc::spawn(config, sink, stop.clone()).unwrap();
    Running {
        events,
        stop,
        thread,
    }
}

fn only_first_reader() -> PcscConfig {
    PcscConfig {
        reader_filter: Some(READER.into()),
        loyalty_applet: None,
    }
}

impl Running {
    /// The first event matching `want` within `WAIT`; events before it are returned too.
    fn wait_for(&mut self, what: &str, want: impl Fn(&DeviceEvent) -> bool) -> Vec<DeviceEvent> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match self.events.try_recv() {
                Ok(event) => {
                    let done = want(&event);
                    seen.push(event);
                    if done {
                        return seen;
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        panic!("no {what} within {WAIT:?}; saw {seen:?}");
    }

    /// Everything that arrives within `quiet`.
    fn drain(&mut self, quiet: Duration) -> Vec<DeviceEvent> {
        let deadline = Instant::now() + quiet;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match self.events.try_recv() {
                Ok(event) => seen.push(event),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        seen
    }

    fn wait_reader_connected(&mut self) {
        self.wait_for("reader connected", |e| {
            is_status(e, READER, DeviceState::Connected)
        });
    }

    fn wait_presented(&mut self) -> (String, String) {
        let (uid, atr, _) = self.wait_presented_with_applet();
        (uid, atr)
    }

    /// UID, ATR and the loyalty applet's identifier of the next card presented.
    fn wait_presented_with_applet(&mut self) -> (String, String, Option<String>) {
        let seen = self.wait_for("CardPresented", |e| {
            matches!(e, DeviceEvent::CardPresented { .. })
        });
        match seen.last() {
            Some(DeviceEvent::CardPresented {
                device,
                uid,
                applet,
                atr_hex,
                ..
            }) => {
                assert_eq!(*device, DeviceId::new("pcsc", READER));
                (
                    uid.0.clone(),
                    atr_hex.clone(),
                    applet.as_ref().map(|a| a.0.clone()),
                )
            }
            other => panic!("expected CardPresented, got {other:?}"),
        }
    }

    fn wait_removed(&mut self) {
        self.wait_for("CardRemoved", |e| {
            matches!(e, DeviceEvent::CardRemoved { device, .. } if *device == DeviceId::new("pcsc", READER))
        });
    }

    /// Stop and assert the thread is gone within a second.
    fn stop_within_a_second(self) {
        let asked = Instant::now();
        self.stop.stop();
        while !self.thread.is_finished() {
            assert!(
                asked.elapsed() < Duration::from_secs(1),
                "driver still running 1 s after stop"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.thread.join().unwrap();
    }
}

fn is_status(event: &DeviceEvent, name: &str, want: DeviceState) -> bool {
    matches!(event, DeviceEvent::Status { device, state, .. }
        if *device == DeviceId::new("pcsc", name) && *state == want)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[test]
fn a_presented_card_is_reported_with_its_normalised_uid_and_atr() {
    isolated(
        "a_presented_card_is_reported_with_its_normalised_uid_and_atr",
        |lab| {
            let _pcscd = lab.pcscd();
            let mut driver = start_driver(only_first_reader());
            driver.wait_reader_connected();
            let card = VirtualCard::with_uid(&UID_7).insert(lab.port).unwrap();
            let (uid, atr_hex) = driver.wait_presented();
            assert_eq!(uid, "04A22B1C5D6E80");
            assert_eq!(atr_hex, hex(&MIFARE_ATR));
            card.remove();
            driver.stop_within_a_second();
        },
    );
}

#[test]
fn a_removed_card_is_reported_removed_and_the_next_card_is_read() {
    isolated(
        "a_removed_card_is_reported_removed_and_the_next_card_is_read",
        |lab| {
            let _pcscd = lab.pcscd();
            let mut driver = start_driver(only_first_reader());
            driver.wait_reader_connected();
            let card = VirtualCard::with_uid(&UID_7).insert(lab.port).unwrap();
            driver.wait_presented();
            card.remove();
            driver.wait_removed();
            let second = VirtualCard::with_uid(&[0xDE, 0xAD, 0xBE, 0xEF])
                .insert(lab.port)
                .unwrap();
            assert_eq!(driver.wait_presented().0, "DEADBEEF");
            second.remove();
            driver.wait_removed();
            driver.stop_within_a_second();
        },
    );
}

#[test]
fn an_unknown_card_is_ignored_and_the_driver_keeps_working() {
    isolated(
        "an_unknown_card_is_ignored_and_the_driver_keeps_working",
        |lab| {
            let _pcscd = lab.pcscd();
            let mut driver = start_driver(only_first_reader());
            driver.wait_reader_connected();
            let unknown = VirtualCard::unknown().insert(lab.port).unwrap();
            // Long enough for pcscd to poll the card in and for the driver to ask it.
            std::thread::sleep(Duration::from_millis(1500));
            let asked = unknown.remove();
            assert!(
                asked.contains(&vec![0xFF, 0xCA, 0x00, 0x00, 0x00]),
                "the driver never asked the unknown card for its UID: {asked:?}"
            );
            let quiet = driver.drain(Duration::from_millis(1500));
            assert!(
                !quiet.iter().any(|e| matches!(
                    e,
                    DeviceEvent::CardPresented { .. } | DeviceEvent::CardRemoved { .. }
                )),
                "an unknown card produced card events: {quiet:?}"
            );
            assert!(
                !quiet
                    .iter()
                    .any(|e| matches!(e, DeviceEvent::Status { .. })),
                "an unknown card changed a device state: {quiet:?}"
            );
            let good = VirtualCard::with_uid(&UID_7).insert(lab.port).unwrap();
            assert_eq!(driver.wait_presented().0, "04A22B1C5D6E80");
            good.remove();
            driver.stop_within_a_second();
        },
    );
}

#[test]
fn a_card_is_reported_whether_or_not_it_carries_the_loyalty_applet_and_carries_the_applets_number()
{
    isolated(
        "a_card_is_reported_whether_or_not_it_carries_the_loyalty_applet_and_carries_the_applets_number",
        |lab| {
            let _pcscd = lab.pcscd();
            let mut driver = start_driver(PcscConfig {
                reader_filter: Some(READER.into()),
                loyalty_applet: Some(LoyaltyApplet {
                    aid_hex: "F0 52 45 4C 41 49 53".into(),
                    read_apdu_hex: "80 B0 00 00 08".into(),
                }),
            });
            driver.wait_reader_connected();
            let loyalty = VirtualCard {
                atr: MIFARE_ATR.to_vec(),
                kind: CardKind::Loyalty {
                    uid: UID_7.to_vec(),
                    aid: vec![0xF0, 0x52, 0x45, 0x4C, 0x41, 0x49, 0x53],
                    read_apdu: vec![0x80, 0xB0, 0x00, 0x00, 0x08],
                    data: b"70012345\0\0".to_vec(),
                },
            }
            .insert(lab.port)
            .unwrap();
            let (uid, _, applet) = driver.wait_presented_with_applet();
            assert_eq!(uid, "04A22B1C5D6E80");
            assert_eq!(
                applet.as_deref(),
                Some("70012345"),
                "the applet's loyalty number"
            );
            let asked = loyalty.remove();
            assert!(
                asked.contains(&vec![0x80, 0xB0, 0x00, 0x00, 0x08]),
                "the applet was not read after SELECT: {asked:?}"
            );
            driver.wait_removed();
            let plain = VirtualCard::with_uid(&[0x11, 0x22, 0x33, 0x44])
                .insert(lab.port)
                .unwrap();
            let (uid, _, applet) = driver.wait_presented_with_applet();
            assert_eq!(uid, "11223344");
            assert_eq!(
                applet, None,
                "a card without the applet is known by its UID only"
            );
            plain.remove();
            driver.stop_within_a_second();
        },
    );
}

#[test]
fn readers_come_and_go_with_pcscd_and_the_driver_waits_for_it() {
    isolated(
        "readers_come_and_go_with_pcscd_and_the_driver_waits_for_it",
        |lab| {
            let mut driver = start_driver(PcscConfig::default());
            let seen = driver.wait_for("pcscd disconnected", |e| {
                is_status(e, "pcscd", DeviceState::Disconnected)
            });
            let Some(DeviceEvent::Status { detail, .. }) = seen.last() else {
                panic!("no status in {seen:?}");
            };
            assert!(detail.contains("pcscd not reachable"), "{detail}");

            let pcscd = lab.pcscd();
            driver.wait_for("pcscd connected", |e| {
                is_status(e, "pcscd", DeviceState::Connected)
            });
            // No filter: both vpcd slots are readers.
            driver.wait_reader_connected();
            driver.wait_for("second reader connected", |e| {
                is_status(e, "Virtual PCD 00 01", DeviceState::Connected)
            });
            let card = VirtualCard::with_uid(&UID_7).insert(lab.port).unwrap();
            driver.wait_presented();

            // pcscd going away takes its readers (and the card on one) with it.
            pcscd.stop();
            driver.wait_removed();
            driver.wait_for("reader disconnected", |e| {
                is_status(e, READER, DeviceState::Disconnected)
            });
            driver.wait_for("pcscd disconnected again", |e| {
                is_status(e, "pcscd", DeviceState::Disconnected)
            });
            drop(card);

            // And it comes back without a restart of the driver.
            let _pcscd = lab.pcscd();
            driver.wait_reader_connected();
            driver.stop_within_a_second();
        },
    );
}

#[test]
fn stop_ends_the_driver_within_a_second_even_while_pcscd_is_absent() {
    isolated(
        "stop_ends_the_driver_within_a_second_even_while_pcscd_is_absent",
        |_lab| {
            let mut driver = start_driver(PcscConfig::default());
            driver.wait_for("pcscd disconnected", |e| {
                is_status(e, "pcscd", DeviceState::Disconnected)
            });
            // Let the backoff grow past a second before asking it to stop.
            std::thread::sleep(Duration::from_millis(1200));
            driver.stop_within_a_second();
        },
    );
}

#[test]
fn an_invalid_loyalty_applet_is_refused_at_start() {
    let (sink, _events) = EventSink::channel(1);
    let refused = pcsc::spawn(
        PcscConfig {
            reader_filter: None,
            loyalty_applet: Some(LoyaltyApplet {
                aid_hex: "F0 01".into(),
                read_apdu_hex: "80B00000".into(),
            }),
        },
        sink,
        Stop::new(),
    );
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("aid_hex"), "{message}");
}

fn card_token(id: &str) -> String {
    let hasher = relais::cards::CardHasher::new(&common::CARD_KEY);
    let normalized = relais::cards::normalize_card_id(id).expect("card id");
    hasher.token(&normalized).to_hex()
}

/// The running agent, its pcscd and a loyalty card whose UID central does not know (random at
/// each tap on many cards) but whose applet carries the loyalty number central does know.
#[test]
fn the_agent_identifies_a_loyalty_card_by_its_applet_number_and_a_plain_card_by_its_uid() {
    isolated(
        "the_agent_identifies_a_loyalty_card_by_its_applet_number_and_a_plain_card_by_its_uid",
        |lab| {
            use std::io::Write as _;
            let _pcscd = lab.pcscd();
            let store = common::Store::new();
            store.import_ok(
                "customers",
                "customers.ndjson",
                &[
                    serde_json::json!({"customer_id": "C-APPLET", "display_name": "Ada L.",
                        "loyalty_balance": 50, "card_tokens": [card_token("70012345")]}),
                    serde_json::json!({"customer_id": "C-UID", "display_name": "Bob M.",
                        "loyalty_balance": 10, "card_tokens": [card_token("11223344")]}),
                ],
            );
            let mut config = std::fs::OpenOptions::new()
                .append(true)
                .open(&store.config)
                .unwrap();
            write!(
                config,
                "\n[devices.pcsc]\nreader_filter = \"{READER}\"\n\
                 [devices.pcsc.loyalty_applet]\naid_hex = \"F0 52 45 4C 41 49 53\"\n\
                 read_apdu_hex = \"80 B0 00 00 0A\"\n"
            )
            .unwrap();
            drop(config);
            // The agent inherits PCSCLITE_CSOCK_NAME: it talks to this test's own pcscd.
            let agent = store.start();
            let card_events = |store: &common::Store| -> Vec<serde_json::Value> {
                store
                    .outbox_events()
                    .into_iter()
                    .filter(|e| e["type"] == "device.card")
                    .collect()
            };
            let wait_cards = |n: usize| -> Vec<serde_json::Value> {
                let deadline = Instant::now() + WAIT;
                loop {
                    let cards = card_events(&store);
                    if cards.len() >= n {
                        return cards;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{n} card event(s) expected, got {cards:?}\n{}",
                        agent.log_text()
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            };
            let loyalty = VirtualCard {
                atr: MIFARE_ATR.to_vec(),
                kind: CardKind::Loyalty {
                    uid: vec![0x08, 0x9A, 0x7B, 0x6C],
                    aid: vec![0xF0, 0x52, 0x45, 0x4C, 0x41, 0x49, 0x53],
                    read_apdu: vec![0x80, 0xB0, 0x00, 0x00, 0x0A],
                    data: b"70012345\0\0".to_vec(),
                },
            }
            .insert(lab.port)
            .unwrap();
            let cards = wait_cards(1);
            assert_eq!(cards[0]["payload"]["known"], true, "{cards:?}");
            assert_eq!(cards[0]["payload"]["customer_id"], "C-APPLET", "{cards:?}");
            loyalty.remove();
            let plain = VirtualCard::with_uid(&[0x11, 0x22, 0x33, 0x44])
                .insert(lab.port)
                .unwrap();
            let cards = wait_cards(2);
            assert_eq!(cards[1]["payload"]["customer_id"], "C-UID", "{cards:?}");
            plain.remove();
            let log = agent.log_text();
            for secret in ["70012345", "11223344", "089A7B6C"] {
                assert!(!log.contains(secret), "{secret} reached the log:\n{log}");
            }
        },
    );
}
