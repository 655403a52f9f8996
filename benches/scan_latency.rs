//! `scan_latency`: time from a scan's last byte being available on the serial line to its
//! `DeviceEvent::Scan` arriving at the core, through a real pseudo-terminal and the real driver
//! thread. Two feeds: `paced_9600` writes each byte at its 9600-baud slot (10 bits per byte, as
//! an RS-232 scanner does) and subtracts the frame's own transmission time; `burst` writes the
//! frame at once (a USB CDC scanner). The floor is a bare pty read on the same machine: one byte
//! written to the master and read from the slave.
//! Goal: p99 ≤ 5 ms beyond transmission time.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{emit, pass_str, percentile_sorted};
use relais::devices::serial::{SerialScannerConfig, spawn};
use relais::devices::{DeviceEvent, EventSink, Stop};
use relais::profiles::Profile;
use serialport::{SerialPort, TTYPort};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BYTE_TIME: Duration = Duration::from_nanos(10 * 1_000_000_000 / 9600);
const GOAL_P99_MS: f64 = 5.0;

const CODES: &[&[u8]] = &[
    b"]E09506000134352\r",
    b"]C1010950600013435210ABC123\x1d3103000123\r",
    b"]E495060002\r",
    b"]Q3https://id.gs1.org/01/09506000134352\r",
];

fn profile() -> Profile {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-profiles/serial-scanner-cr.toml");
    Profile::load_file(&path).expect("the generic serial profile loads")
}

/// Wait until `deadline`, sleeping while far and spinning the last 200 µs so byte slots are
/// accurate to a few µs.
fn wait_until(deadline: Instant) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > Duration::from_micros(200) {
            std::thread::sleep(left - Duration::from_micros(150));
        } else {
            std::hint::spin_loop();
        }
    }
}

struct Stats {
    p50: f64,
    p99: f64,
}

fn stats(mut ms: Vec<f64>) -> Stats {
    ms.sort_by(f64::total_cmp);
    Stats {
        p50: percentile_sorted(&ms, 50.0),
        p99: percentile_sorted(&ms, 99.0),
    }
}

/// Latencies (ms) of `n` scans, beyond transmission time.
fn run(n: usize, paced: bool) -> Vec<f64> {
    let (mut master, slave) = TTYPort::pair().expect("pseudo-terminals are available");
    let path = PathBuf::from(slave.name().expect("slave path"));
    let (sink, mut rx) = EventSink::channel(16);
    let stop = Stop::new();
    let config = SerialScannerConfig {
        name: "bench".into(),
        path,
        profile: None,
    };
    let thread = spawn(config, Arc::new(profile()), sink, stop.clone()).expect("driver starts");
    match rx.blocking_recv() {
        Some(DeviceEvent::Status { .. }) => {}
        other => panic!("expected Connected, got {other:?}"),
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let frame = CODES[i % CODES.len()];
        let last_byte_at = if paced {
            let t0 = Instant::now();
            let mut last = t0;
            for (k, b) in frame.iter().enumerate() {
                // Byte k is on the wire during slot k and readable at its end.
                wait_until(t0 + BYTE_TIME * (k as u32 + 1));
                last = Instant::now();
                master.write_all(std::slice::from_ref(b)).unwrap();
            }
            last
        } else {
            let start = Instant::now();
            master.write_all(frame).unwrap();
            start
        };
        match rx.blocking_recv() {
            Some(DeviceEvent::Scan { .. }) => {}
            other => panic!("expected a scan, got {other:?}"),
        }
        // The paced writer put the last byte down at the end of its slot, i.e. after the whole
        // frame's transmission time: what remains is the driver's own latency.
        out.push(last_byte_at.elapsed().as_secs_f64() * 1000.0);
        // Scans are human-paced; leave the driver idle between them like a till does.
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.stop();
    drop(master);
    thread.join().unwrap();
    drop(slave);
    out
}

/// The physical floor: one byte through the pty into a blocked reader on another thread.
fn floor(n: usize) -> Vec<f64> {
    let (mut master, slave) = TTYPort::pair().expect("pseudo-terminals are available");
    let mut reader = serialport::new(slave.name().unwrap(), 9600)
        .timeout(Duration::from_millis(200))
        .open_native()
        .expect("slave opens");
    let (tx, rx) = std::sync::mpsc::channel::<Instant>();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        let mut got = 0;
        while got < n {
            if let Ok(k) = reader.read(&mut buf) {
                for _ in 0..k {
                    tx.send(Instant::now()).unwrap();
                    got += 1;
                }
            }
        }
    });
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        master.write_all(b"x").unwrap();
        let at = rx.recv().unwrap();
        out.push(at.duration_since(start).as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(2));
    }
    t.join().unwrap();
    drop(slave);
    out
}

fn main() {
    let n = common::scaled(1_000, 50) as usize;
    let avg_len = CODES.iter().map(|c| c.len()).sum::<usize>() as f64 / CODES.len() as f64;
    eprintln!(
        "# scan_latency: {n} scans per feed, frames {avg_len:.0} bytes on average ({:.1} ms at \
         9600 baud)",
        avg_len * BYTE_TIME.as_secs_f64() * 1000.0
    );
    let floor = stats(floor(n));
    eprintln!(
        "pty floor: p50 {:.3} ms, p99 {:.3} ms",
        floor.p50, floor.p99
    );
    for (metric, paced) in [("paced_9600", true), ("burst", false)] {
        let s = stats(run(n, paced));
        let pass = s.p99 <= GOAL_P99_MS;
        eprintln!(
            "{metric}: beyond transmission p50 {:.3} ms, p99 {:.3} ms (goal p99 ≤ {GOAL_P99_MS} \
             ms: {})",
            s.p50,
            s.p99,
            pass_str(pass)
        );
        emit(
            "scan_latency",
            &format!("{metric}_p50_ms"),
            s.p50,
            Some(floor.p50),
            None,
            None,
            serde_json::json!({ "scans": n, "unit": "ms beyond transmission" }),
        );
        emit(
            "scan_latency",
            &format!("{metric}_p99_ms"),
            s.p99,
            Some(floor.p99),
            Some("≤ 5 ms"),
            Some(pass),
            serde_json::json!({ "scans": n, "unit": "ms beyond transmission" }),
        );
    }
}
