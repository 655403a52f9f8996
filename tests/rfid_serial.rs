//! The UHF serial reader driver (M100 protocol) against a fake module on a real pseudo-terminal:
//! the test holds the master side (the "module") and the driver opens the slave through a
//! symlink, the way it opens a /dev/serial/by-id link. The fake answers the commands the way
//! the protocol says, streams tag notifications for the tags "in its field" while a Multiple
//! Inventory runs, and writes scripted bytes (noise, split frames, a bad checksum) on demand.
//! Unplugging is closing the master and removing the link; re-plugging is a new pty behind the
//! same link.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use relais::devices::rfid::m100::{self, cmd, frame_type};
use relais::devices::rfid::serial_reader::{
    RfidSerialConfig, RfidSerialCounters, spawn_with_counters,
};
use relais::devices::{DeviceEvent, DeviceState, EventSink, Stop};
use relais::profiles::Profile;
use serialport::{SerialPort, TTYPort};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The tag notification published with the protocol description, byte for byte.
const PUBLISHED_NOTICE: &str =
    "BB 02 22 00 11 C9 34 00 30 75 1F EB 70 5C 59 04 E3 D5 0D 70 3A 76 EF 7E";
const EPC_A: &str = "30751FEB705C5904E3D50D70";
const EPC_B: [u8; 12] = [
    0xE2, 0x00, 0x47, 0x1B, 0xB0, 0, 0x60, 0x13, 0x04, 0x45, 0x09, 0xD0,
];
const EPC_C: [u8; 12] = [0xE2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0C];
const MODULE_NAME: &str = "M100 26dBm V1.0";

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn epc_a() -> Vec<u8> {
    hex(PUBLISHED_NOTICE)[8..20].to_vec()
}

fn shipped_profile() -> Profile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-profiles/magicrf-m100.toml");
    Profile::load_file(&path).expect("the shipped M100 profile loads")
}

/// What the fake module does, shared with the test.
#[derive(Default)]
struct Field {
    /// Tags answering every inventory round: (EPC, RSSI).
    tags: Mutex<Vec<(Vec<u8>, i8)>>,
    /// The count of the running Multiple Inventory ran out (the module went quiet by itself).
    exhausted: AtomicBool,
    /// The module is already inventorying when the port opens (left going by a previous run).
    streaming_at_plug: AtomicBool,
}

struct Module {
    /// Command codes received from the driver, in order.
    commands: mpsc::Receiver<u8>,
    /// Chunks to write, one write each, 20 ms apart.
    script: mpsc::Sender<Vec<Vec<u8>>>,
    quit: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _slave: TTYPort,
}

/// A new pty whose slave is reachable through `link`, with a fake module on the master.
fn plug(link: &Path, field: Arc<Field>) -> Module {
    let (mut master, slave) = TTYPort::pair().expect("pseudo-terminals are available");
    let name = slave.name().expect("the slave side has a path");
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(&name, link).unwrap();
    master.set_timeout(Duration::from_millis(20)).unwrap();
    let (commands_tx, commands) = mpsc::channel();
    let (script, script_rx) = mpsc::channel::<Vec<Vec<u8>>>();
    let quit = Arc::new(AtomicBool::new(false));
    let q = quit.clone();
    let thread = std::thread::spawn(move || fake_module(master, field, q, commands_tx, script_rx));
    Module {
        commands,
        script,
        quit,
        thread: Some(thread),
        _slave: slave,
    }
}

fn fake_module(
    mut master: TTYPort,
    field: Arc<Field>,
    quit: Arc<AtomicBool>,
    commands: mpsc::Sender<u8>,
    script: mpsc::Receiver<Vec<Vec<u8>>>,
) {
    let mut decoder = m100::Decoder::new();
    let mut polling = field.streaming_at_plug.load(Ordering::SeqCst);
    let mut last_round = Instant::now();
    let clock = Instant::now();
    let mut buf = [0u8; 256];
    while !quit.load(Ordering::SeqCst) {
        let n = match master.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => 0,
            Err(_) => return,
        };
        let now = clock.elapsed().as_millis() as u64;
        for frame in decoder.push(&buf[..n], now) {
            assert_eq!(frame.frame_type, frame_type::COMMAND, "{frame:?}");
            let _ = commands.send(frame.command);
            let answer = match frame.command {
                cmd::STOP_POLL => {
                    polling = false;
                    Some(m100::encode(frame_type::RESPONSE, cmd::STOP_POLL, &[0]))
                }
                cmd::MODULE_INFO => {
                    let mut p = vec![0u8];
                    p.extend_from_slice(MODULE_NAME.as_bytes());
                    Some(m100::encode(frame_type::RESPONSE, cmd::MODULE_INFO, &p))
                }
                cmd::MULTI_POLL => {
                    assert_eq!(frame.params, [0x22, 0xFF, 0xFF], "reserved byte + count");
                    polling = true;
                    field.exhausted.store(false, Ordering::SeqCst);
                    None
                }
                other => panic!("the driver sent an unexpected command 0x{other:02X}"),
            };
            if let Some(a) = answer {
                master.write_all(&a).unwrap();
            }
        }
        while let Ok(chunks) = script.try_recv() {
            for c in chunks {
                master.write_all(&c).unwrap();
                master.flush().unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if polling
            && !field.exhausted.load(Ordering::SeqCst)
            && last_round.elapsed() >= Duration::from_millis(50)
        {
            last_round = Instant::now();
            let tags = field.tags.lock().unwrap().clone();
            if tags.is_empty() {
                master.write_all(&m100::error_response(0x15)).unwrap();
            }
            for (epc, rssi) in tags {
                let notice = m100::tag_notice(rssi, m100::pc_for(epc.len()), &epc, 0x1234);
                master.write_all(&notice).unwrap();
            }
        }
    }
}

impl Module {
    /// The next command codes the driver sends, within 5 s.
    fn expect_commands(&self, want: &[u8]) {
        for &w in want {
            let got = self
                .commands
                .recv_timeout(Duration::from_secs(5))
                .expect("a command from the driver within 5 s");
            assert_eq!(got, w, "expected command 0x{w:02X}, got 0x{got:02X}");
        }
    }

    /// Waits for `code` among the next commands (skipping others).
    fn wait_command(&self, code: u8, within: Duration) {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Ok(c) = self.commands.recv_timeout(left)
                && c == code
            {
                return;
            }
        }
        panic!("the driver did not send 0x{code:02X} within {within:?}");
    }

    fn unplug(mut self, link: &Path) {
        self.quit.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        std::fs::remove_file(link).unwrap();
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    link: PathBuf,
    events: mpsc::Receiver<DeviceEvent>,
    counters: Arc<RfidSerialCounters>,
    stop: Stop,
    thread: Option<JoinHandle<()>>,
    /// Events skipped while waiting for others, for later assertions.
    seen: Vec<DeviceEvent>,
}

fn start(field: Arc<Field>, plugged: bool) -> (Harness, Option<Module>) {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("usb-1a86_USB_Serial-if00-port0");
    let module = plugged.then(|| plug(&link, field));
    let (sink, mut rx) = EventSink::channel(256);
    // The core's receiver is a tokio channel; a forwarding thread gives the test timeouts.
    let (tx, events) = mpsc::channel();
    std::thread::spawn(move || {
        while let Some(ev) = rx.blocking_recv() {
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    let stop = Stop::new();
    let counters = Arc::new(RfidSerialCounters::default());
    let config = RfidSerialConfig {
        name: "door".into(),
        path: link.clone(),
        profile: None,
        debounce_window: Duration::from_millis(1_200),
        restart_after: Duration::from_millis(300),
    };
    let thread = spawn_with_counters(
        config,
        Arc::new(shipped_profile()),
        sink,
        stop.clone(),
        counters.clone(),
    )
    .unwrap();
    let h = Harness {
        _dir: dir,
        link,
        events,
        counters,
        stop,
        thread: Some(thread),
        seen: Vec::new(),
    };
    (h, module)
}

impl Harness {
    /// The first event matching `pred` within `within`; the others are kept in `seen`.
    fn wait(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&DeviceEvent) -> bool,
    ) -> DeviceEvent {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(ev) if pred(&ev) => return ev,
                Ok(ev) => self.seen.push(ev),
                Err(_) => break,
            }
        }
        panic!("no {what} within {within:?}; saw {:#?}", self.seen);
    }

    fn status(&mut self, want: DeviceState) -> String {
        match self.wait(
            &format!("{want:?} status"),
            Duration::from_secs(10),
            |e| matches!(e, DeviceEvent::Status { state, .. } if *state == want),
        ) {
            DeviceEvent::Status { device, detail, .. } => {
                assert_eq!(device.0, "rfid-serial:door");
                detail
            }
            _ => unreachable!(),
        }
    }

    fn arrived(&mut self, epc: &str) -> DeviceEvent {
        self.wait(
            &format!("arrival of {epc}"),
            Duration::from_secs(5),
            |e| matches!(e, DeviceEvent::TagArrived { epc_hex, .. } if epc_hex == epc),
        )
    }

    fn departed(&mut self, epc: &str, within: Duration) -> u64 {
        match self.wait(
            &format!("departure of {epc}"),
            within,
            |e| matches!(e, DeviceEvent::TagDeparted { epc_hex, .. } if epc_hex == epc),
        ) {
            DeviceEvent::TagDeparted { antenna, reads, .. } => {
                assert_eq!(antenna, 1);
                reads
            }
            _ => unreachable!(),
        }
    }

    fn departures_seen(&self, epc: &str) -> usize {
        self.seen
            .iter()
            .filter(|e| matches!(e, DeviceEvent::TagDeparted { epc_hex, .. } if epc_hex == epc))
            .count()
    }

    /// Stop and require the thread to end within 1 s.
    fn stop_within_a_second(mut self) {
        self.stop.stop();
        let t = self.thread.take().unwrap();
        let since = Instant::now();
        while !t.is_finished() {
            assert!(
                since.elapsed() < Duration::from_secs(1),
                "driver ignored stop"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        t.join().unwrap();
    }
}

#[test]
fn a_module_on_a_serial_port_turns_tag_notices_into_arrivals_and_departures_through_noise_restarts_and_an_unplug()
 {
    let field = Arc::new(Field::default());
    let (mut h, module) = start(field.clone(), true);
    let module = module.unwrap();

    // Session start: stop whatever was running (profile init), Get Module Information (profile
    // health probe), then Multiple Inventory; Connected names the module and the profile.
    module.expect_commands(&[cmd::STOP_POLL, cmd::MODULE_INFO, cmd::MULTI_POLL]);
    let detail = h.status(DeviceState::Connected);
    assert!(detail.contains(MODULE_NAME), "{detail}");
    assert!(detail.contains("magicrf-m100@1.0.0"), "{detail}");
    assert!(detail.contains("115200 8N1"), "{detail}");

    // Noise, the published notification split in two writes, a notification with a bad
    // checksum (tag C), an empty round, tag B, more noise.
    let published = hex(PUBLISHED_NOTICE);
    let mut bad = m100::tag_notice(-50, m100::pc_for(12), &EPC_C, 0x4242);
    let last = bad.len() - 2;
    bad[last] ^= 0x5A;
    module
        .script
        .send(vec![
            vec![0x00, 0xFF, 0x13, 0x7E, 0xBB],
            published[..9].to_vec(),
            published[9..].to_vec(),
            bad,
            m100::error_response(0x15),
            m100::tag_notice(-61, m100::pc_for(12), &EPC_B, 0x0001),
            vec![0xBB, 0x02],
        ])
        .unwrap();
    match h.arrived(EPC_A) {
        DeviceEvent::TagArrived {
            device,
            antenna,
            rssi_dbm,
            ..
        } => {
            assert_eq!(device.0, "rfid-serial:door");
            assert_eq!((antenna, rssi_dbm), (1, Some(-55)));
        }
        _ => unreachable!(),
    }
    match h.arrived(&relais::devices::rfid::llrp::epc_hex(&EPC_B)) {
        DeviceEvent::TagArrived { rssi_dbm, .. } => assert_eq!(rssi_dbm, Some(-61)),
        _ => unreachable!(),
    }

    // From now on tag A stays in the field; B was read once and is gone: it departs after the
    // window, A does not.
    field.tags.lock().unwrap().push((epc_a(), -55));
    let b_reads = h.departed(
        &relais::devices::rfid::llrp::epc_hex(&EPC_B),
        Duration::from_secs(5),
    );
    assert_eq!(b_reads, 1);
    assert_eq!(h.departures_seen(EPC_A), 0);

    // The module's inventory count runs out: it goes quiet; the driver restarts the inventory
    // within `restart_after` and tag A, still in the field, does not depart meanwhile.
    field.exhausted.store(true, Ordering::SeqCst);
    module.wait_command(cmd::STOP_POLL, Duration::from_secs(3));
    module.expect_commands(&[cmd::MULTI_POLL]);
    std::thread::sleep(Duration::from_millis(1_500));
    while let Ok(ev) = h.events.try_recv() {
        h.seen.push(ev);
    }
    assert_eq!(h.departures_seen(EPC_A), 0, "{:#?}", h.seen);
    assert!(
        !h.seen
            .iter()
            .any(|e| matches!(e, DeviceEvent::TagArrived { epc_hex, .. } if epc_hex == EPC_A)),
        "A arrived twice: {:#?}",
        h.seen
    );

    let c = h.counters.snapshot();
    assert!(c.decoder.bad_checksum >= 1, "{c:?}");
    assert!(c.decoder.garbage_bytes >= 5, "{c:?}");
    assert_eq!(c.malformed, 0, "{c:?}");
    assert!(c.empty_rounds >= 1, "{c:?}");
    assert!(c.inventory_starts >= 2, "{c:?}");
    assert!(c.tag_reads >= 10, "{c:?}");
    assert!(c.connected);

    // Unplugged: Disconnected, and tag A departs once the window passes without reads.
    module.unplug(&h.link);
    let reason = h.status(DeviceState::Disconnected);
    assert!(!reason.is_empty());
    let a_reads = h.departed(EPC_A, Duration::from_secs(5));
    assert!(a_reads >= 10, "{a_reads}");
    assert!(!h.counters.snapshot().connected);

    // Plugged back in behind the same link with tag A on the shelf: the driver starts over and
    // A arrives again.
    let module = plug(&h.link, field.clone());
    module.expect_commands(&[cmd::STOP_POLL, cmd::MODULE_INFO, cmd::MULTI_POLL]);
    h.status(DeviceState::Connected);
    h.arrived(EPC_A);
    let c = h.counters.snapshot();
    assert_eq!((c.connects, c.disconnects), (2, 1), "{c:?}");

    // Stopping the agent stops the module's inventory and ends the thread promptly.
    let commands = &module.commands;
    while commands.try_recv().is_ok() {}
    h.stop_within_a_second();
    module.wait_command(cmd::STOP_POLL, Duration::from_secs(2));
}

#[test]
fn a_port_where_no_module_answers_is_reported_faulty_with_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyUSB-silent");
    // A pty nobody answers on: the adapter is there, the module is not (or at another baud).
    let (_master, slave) = TTYPort::pair().unwrap();
    std::os::unix::fs::symlink(slave.name().unwrap(), &link).unwrap();
    let (sink, mut rx) = EventSink::channel(8);
    let stop = Stop::new();
    let config = RfidSerialConfig {
        name: "silent".into(),
        path: link,
        profile: None,
        debounce_window: Duration::from_secs(3),
        restart_after: Duration::from_secs(1),
    };
    let t = relais::devices::rfid::serial_reader::spawn(
        config,
        Arc::new(shipped_profile()),
        sink,
        stop.clone(),
    )
    .unwrap();
    match rx.blocking_recv() {
        Some(DeviceEvent::Status { state, detail, .. }) => {
            assert_eq!(state, DeviceState::Faulty);
            assert!(detail.contains("no expected answer"), "{detail}");
            assert!(detail.contains("115200 8N1"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    stop.stop();
    t.join().unwrap();
    drop(slave);
}

#[test]
fn a_missing_port_at_start_is_disconnected_not_an_error() {
    let (h, module) = start(Arc::new(Field::default()), false);
    assert!(module.is_none());
    let mut h = h;
    let detail = h.status(DeviceState::Disconnected);
    assert!(detail.contains("usb-1a86_USB_Serial"), "{detail}");
    h.stop_within_a_second();
}

#[test]
fn a_scanner_profile_is_refused_for_a_uhf_module() {
    let scanner = Profile::load_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-profiles/serial-scanner-cr.toml"),
    )
    .unwrap();
    let (sink, _rx) = EventSink::channel(1);
    let config = RfidSerialConfig {
        name: "x".into(),
        path: "/dev/null".into(),
        profile: None,
        debounce_window: Duration::from_secs(3),
        restart_after: Duration::from_secs(1),
    };
    let err =
        relais::devices::rfid::serial_reader::spawn(config, Arc::new(scanner), sink, Stop::new())
            .unwrap_err();
    assert!(err.to_string().contains("rfid_serial_reader"), "{err}");
}

#[test]
fn a_module_left_streaming_by_a_previous_run_is_stopped_probed_and_restarted() {
    let field = Arc::new(Field::default());
    field.streaming_at_plug.store(true, Ordering::SeqCst);
    field.tags.lock().unwrap().push((epc_a(), -40));
    let (mut h, module) = start(field, true);
    let module = module.unwrap();
    // Notifications are already flowing when the driver opens the port; its Stop and probe
    // still get their answers among them, and the inventory is started afresh.
    module.expect_commands(&[cmd::STOP_POLL, cmd::MODULE_INFO, cmd::MULTI_POLL]);
    let detail = h.status(DeviceState::Connected);
    assert!(detail.contains(MODULE_NAME), "{detail}");
    match h.arrived(EPC_A) {
        DeviceEvent::TagArrived { rssi_dbm, .. } => assert_eq!(rssi_dbm, Some(-40)),
        _ => unreachable!(),
    }
    h.stop_within_a_second();
}
