//! The serial scanner driver against real pseudo-terminals: the test holds the master side (the
//! "scanner") and the driver opens the slave through a symlink, the way it opens a
//! /dev/serial/by-id link. Unplugging is closing the master and removing the link; re-plugging is
//! a new pty behind the same link.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use relais::devices::serial::{SerialCounters, SerialScannerConfig, spawn_with_counters};
use relais::devices::{DeviceEvent, DeviceState, EventSink, Stop};
use relais::profiles::Profile;
use serialport::{SerialPort, TTYPort};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const PROFILE: &str = r#"
[profile]
id = "test-aim"
name = "test scanner with AIM ids"
version = "1.0.0"
vendor = "test"
model = "pty"
kind = "serial_scanner"
[match]
fallback = true
[transport]
baud = 9600
[framing]
terminator = "\r"
aim_ids = true
max_frame_bytes = 64
inter_byte_timeout_ms = 200
"#;

struct Scanner {
    master: TTYPort,
    _slave: TTYPort,
}

/// A new pty whose slave is reachable through `link`.
fn plug(link: &Path) -> Scanner {
    let (master, slave) = TTYPort::pair().expect("pseudo-terminals are available");
    let name = slave.name().expect("the slave side has a path");
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(&name, link).unwrap();
    Scanner {
        master,
        _slave: slave,
    }
}

impl Scanner {
    fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
        self.master.flush().unwrap();
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    link: PathBuf,
    events: mpsc::Receiver<DeviceEvent>,
    counters: Arc<SerialCounters>,
    stop: Stop,
    thread: Option<JoinHandle<()>>,
}

fn start() -> (Harness, Scanner) {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("usb-Test_Scanner-if00");
    let scanner = plug(&link);
    let profile = Profile::from_bytes(Path::new("test-aim.toml"), PROFILE.as_bytes()).unwrap();
    let (sink, mut rx) = EventSink::channel(64);
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
    let counters = Arc::new(SerialCounters::default());
    let config = SerialScannerConfig {
        name: "till-1".into(),
        path: link.clone(),
        profile: None,
    };
    let thread = spawn_with_counters(
        config,
        Arc::new(profile),
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
    };
    h.expect_status(DeviceState::Connected);
    (h, scanner)
}

impl Harness {
    fn next(&self) -> DeviceEvent {
        self.events
            .recv_timeout(Duration::from_secs(5))
            .expect("an event within 5 s")
    }

    fn expect_scan(&self) -> String {
        match self.next() {
            DeviceEvent::Scan { device, data, .. } => {
                assert_eq!(device.0, "serial:till-1");
                data
            }
            other => panic!("expected a scan, got {other:?}"),
        }
    }

    /// Skips other statuses (a port that stays absent may report a second reason).
    fn expect_status(&self, want: DeviceState) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.next() {
                DeviceEvent::Status { state, detail, .. } if state == want => return detail,
                DeviceEvent::Status { .. } => continue,
                other => panic!("expected status {want:?}, got {other:?}"),
            }
        }
        panic!("no {want:?} status within 10 s")
    }

    fn assert_quiet(&self, for_: Duration) {
        if let Ok(ev) = self.events.recv_timeout(for_) {
            panic!("unexpected event {ev:?}");
        }
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
fn real_scanner_streams_become_exact_scan_events() {
    let (h, mut scanner) = start();
    // EAN-13 with its AIM id.
    scanner.send(b"]E09506000134352\r");
    assert_eq!(h.expect_scan(), "]E09506000134352");
    // Line noise, then GS1-128 with GS separators between variable-length fields.
    scanner.send(b"\x00\xff\x13\x80");
    scanner.send(b"]C1010950600013435210ABC123\x1d3103000123\x1d21XYZ\r");
    assert_eq!(
        h.expect_scan(),
        "]C1010950600013435210ABC123\x1d3103000123\x1d21XYZ"
    );
    // A GS1 QR code arriving in two pieces (well within the inter-byte timeout).
    scanner.send(b"]Q3https://id.gs1.org/01/095060");
    std::thread::sleep(Duration::from_millis(50));
    scanner.send(b"00134352/10/ABC\r\n");
    assert_eq!(
        h.expect_scan(),
        "]Q3https://id.gs1.org/01/09506000134352/10/ABC"
    );
    // Oversize (over 64 bytes), then a frame with noise inside it, then a frame without an AIM
    // id: all dropped. Then GS1 DataMatrix and EAN-8 in one write.
    let mut oversize = b"]C0".to_vec();
    oversize.extend_from_slice(&[b'7'; 200]);
    oversize.push(b'\r');
    scanner.send(&oversize);
    scanner.send(b"]E0950600\x00\x0701343\r");
    scanner.send(b"]d2010950600013435217261231\r]E495060002\r");
    assert_eq!(h.expect_scan(), "]d2010950600013435217261231");
    assert_eq!(h.expect_scan(), "]E495060002");
    h.assert_quiet(Duration::from_millis(300));

    let c = h.counters.snapshot();
    assert_eq!(c.framing.frames, 5);
    assert_eq!(c.framing.discarded_oversize, 1);
    // One stretch of noise between frames + one frame with control bytes inside.
    assert_eq!(c.framing.discarded_garbage, 2);
    assert_eq!(c.framing.garbage_bytes, 4);
    assert_eq!(c.framing.discarded_timeout, 0);
    assert_eq!((c.connects, c.disconnects, c.connected), (1, 0, true));
    h.stop_within_a_second();
}

#[test]
fn a_frame_cut_by_silence_is_dropped_and_not_glued_to_the_next() {
    let (h, mut scanner) = start();
    scanner.send(b"]E0950600");
    std::thread::sleep(Duration::from_millis(500));
    // The rest of the cut frame has no AIM id: garbage. The next scan is intact.
    scanner.send(b"0134352\r]E04006381333931\r");
    assert_eq!(h.expect_scan(), "]E04006381333931");
    let c = h.counters.snapshot();
    assert_eq!(c.framing.discarded_timeout, 1);
    assert_eq!(c.framing.discarded_garbage, 1);
    assert_eq!(c.framing.frames, 1);
    h.stop_within_a_second();
}

#[test]
fn an_unplugged_port_reports_disconnected_and_resumes_when_back() {
    let (h, mut scanner) = start();
    scanner.send(b"]E04006381333931\r");
    assert_eq!(h.expect_scan(), "]E04006381333931");
    // Unplugged in the middle of a frame.
    scanner.send(b"]E0950600");
    std::thread::sleep(Duration::from_millis(50));
    drop(scanner);
    std::fs::remove_file(&h.link).unwrap();
    let reason = h.expect_status(DeviceState::Disconnected);
    assert!(!reason.is_empty());
    // Stays absent for a while: no scan, and the thread keeps retrying.
    h.assert_quiet(Duration::from_millis(700));
    let c = h.counters.snapshot();
    assert_eq!(c.framing.discarded_cut, 1);
    assert!(!c.connected);
    assert!(c.open_failures >= 1, "{c:?}");

    // Plugged back in (a new pty behind the same by-id style link).
    let mut scanner = plug(&h.link);
    let detail = h.expect_status(DeviceState::Connected);
    assert!(detail.contains("test-aim@1.0.0"), "{detail}");
    scanner.send(b"]E09506000134352\r");
    assert_eq!(h.expect_scan(), "]E09506000134352");
    let c = h.counters.snapshot();
    assert_eq!((c.connects, c.disconnects, c.framing.frames), (2, 1, 2));
    h.stop_within_a_second();
}

#[test]
fn stop_is_honoured_while_the_port_is_absent() {
    let (h, scanner) = start();
    drop(scanner);
    std::fs::remove_file(&h.link).unwrap();
    h.expect_status(DeviceState::Disconnected);
    // Let it enter a backoff sleep.
    std::thread::sleep(Duration::from_millis(700));
    h.stop_within_a_second();
}

#[test]
fn a_missing_port_at_start_is_disconnected_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let profile = Profile::from_bytes(Path::new("test-aim.toml"), PROFILE.as_bytes()).unwrap();
    let (sink, mut rx) = EventSink::channel(8);
    let stop = Stop::new();
    let config = SerialScannerConfig {
        name: "absent".into(),
        path: dir.path().join("nothing-here"),
        profile: None,
    };
    let t = relais::devices::serial::spawn(config, Arc::new(profile), sink, stop.clone()).unwrap();
    match rx.blocking_recv() {
        Some(DeviceEvent::Status { state, detail, .. }) => {
            assert_eq!(state, DeviceState::Disconnected);
            assert!(detail.contains("nothing-here"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    stop.stop();
    t.join().unwrap();
}
