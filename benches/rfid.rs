//! `rfid`: (1) raw reads per second through the debouncer on one core, against the floor of a
//! bare `HashMap` counter over the same reads in the same run (goal ≥ 200,000 reads/s);
//! (2) RO_ACCESS_REPORT decode rate (frame reader + decoder), for reference; (3) CPU used by
//! the LLRP client thread while a local fake reader streams 10,000 reads/s (goal ≤ 10 % of one
//! core), measured from the thread's own CPU clock (/proc/self/task/<tid>/schedstat).
//!
//! One JSON object per metric on stdout (`value` is the measurement), human lines on stderr.
//! `RELAIS_BENCH_SCALE` shortens the runs, `RELAIS_BENCH_RUNS` sets how many runs the median
//! is taken over.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{emit, median, pass_str};
use relais::devices::rfid::debounce::{DebounceConfig, Debouncer};
use relais::devices::rfid::llrp::{self, FrameReader, TagRead, msg};
use relais::devices::rfid::{LlrpReaderConfig, spawn};
use relais::devices::{DeviceEvent, EventSink, Stop};

const DEBOUNCE_GOAL: f64 = 200_000.0;
const CPU_GOAL_PERCENT: f64 = 10.0;

/// A store-like read stream: `pairs` distinct (EPC, antenna) pairs, read round-robin with a
/// stride so consecutive reads hit different pairs (as a reader hopping between tags does).
fn reads(n: usize, pairs: u32) -> Vec<([u8; 12], u16)> {
    (0..n as u32)
        .map(|i| {
            let p = i.wrapping_mul(7919) % pairs;
            let mut epc = [0x30, 0x74, 0x25, 0x7B, 0xF7, 0x19, 0x4E, 0x40, 0, 0, 0, 0];
            epc[8..].copy_from_slice(&(p / 4).to_be_bytes());
            (epc, (p % 4) as u16 + 1)
        })
        .collect()
}

fn debouncer_run(reads: &[([u8; 12], u16)]) -> f64 {
    let mut d = Debouncer::new(DebounceConfig {
        window_ms: 3_000,
        max_tags: 20_000,
    });
    let mut out = Vec::with_capacity(1024);
    let start = Instant::now();
    for (i, (epc, antenna)) in reads.iter().enumerate() {
        // 10,000 reads per simulated second; tick every 200 simulated ms like the client.
        let t = (i / 10) as i64;
        d.read(epc, *antenna, Some(-60), t, &mut out);
        if i % 2000 == 0 {
            d.tick(t, &mut out);
            out.clear();
        }
    }
    black_box(&out);
    reads.len() as f64 / start.elapsed().as_secs_f64()
}

fn hashmap_floor_run(reads: &[([u8; 12], u16)]) -> f64 {
    let mut m: HashMap<([u8; 12], u16), u64> = HashMap::with_capacity(20_000);
    let start = Instant::now();
    for (epc, antenna) in reads {
        *m.entry((*epc, *antenna)).or_default() += 1;
    }
    black_box(&m);
    reads.len() as f64 / start.elapsed().as_secs_f64()
}

fn tag(serial: u32, antenna: u16) -> TagRead {
    let mut epc = vec![0x30, 0x74, 0x25, 0x7B, 0xF7, 0x19, 0x4E, 0x40];
    epc.extend_from_slice(&serial.to_be_bytes());
    TagRead {
        epc,
        epc_bits: 96,
        antenna,
        peak_rssi_dbm: Some(-58),
        first_seen_utc_us: Some(1_700_000_000_000_000),
        seen_count: 1,
    }
}

fn decode_run(stream: &[u8], reads_in_stream: usize) -> f64 {
    let start = Instant::now();
    let mut frames = FrameReader::default();
    let mut n = 0usize;
    for chunk in stream.chunks(1460) {
        frames.push(chunk);
        while let Some(f) = frames.next_frame().unwrap() {
            if let llrp::Message::RoAccessReport(r) = llrp::decode_message(&f).unwrap() {
                n += r.tags.len();
            }
        }
    }
    assert_eq!(n, reads_in_stream);
    n as f64 / start.elapsed().as_secs_f64()
}

/// CPU time of one thread of this process, in seconds.
fn thread_cpu_s(tid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok();
    if let Some(ns) = s.and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok()) {
        return Some(ns as f64 / 1e9);
    }
    // Fallback: utime + stime in clock ticks (USER_HZ, 100 on Linux).
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn find_thread(name: &str) -> Option<String> {
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let entry = entry.ok()?;
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            return Some(entry.file_name().to_string_lossy().into_owned());
        }
    }
    None
}

/// A fake reader: accepts one connection, announces it, answers every request with success,
/// and hands the write side to the caller once the ROSpec is started.
fn fake_reader() -> (SocketAddr, mpsc::Receiver<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .write_all(&llrp::reader_event_connection_attempt(0, 0, 0))
            .unwrap();
        let mut frames = FrameReader::default();
        let mut writer = Some(stream.try_clone().unwrap());
        loop {
            while let Ok(Some(f)) = frames.next_frame() {
                if matches!(f.msg_type, msg::KEEPALIVE_ACK) {
                    continue;
                }
                let reply = llrp::status_response(msg::response_to(f.msg_type), f.id, 0, "");
                if stream.write_all(&reply).is_err() {
                    return;
                }
                if f.msg_type == msg::START_ROSPEC
                    && let Some(w) = writer.take()
                {
                    let _ = tx.send(w);
                }
            }
            match frames.read_from(&mut stream) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    (addr, rx)
}

/// Stream 10,000 reads/s (reports of 20 reads every 2 ms, 200 distinct tags on 4 antennas)
/// for `seconds`; returns the client thread's CPU use in % of one core and the arrivals seen.
fn client_cpu_run(seconds: f64, run: usize) -> (f64, usize) {
    let (addr, streams) = fake_reader();
    let (sink, mut events) = EventSink::channel(100_000);
    let stop = Stop::new();
    let name = format!("rb{run}");
    let handle = spawn(
        LlrpReaderConfig {
            name: name.clone(),
            address: addr,
            debounce_window: Duration::from_secs(3),
            keepalive: Duration::from_secs(10),
            report_every_n_tags: 20,
        },
        sink,
        stop.clone(),
    )
    .unwrap();
    let drain = thread::spawn(move || {
        let mut arrived = 0usize;
        while let Some(e) = events.blocking_recv() {
            if matches!(e, DeviceEvent::TagArrived { .. }) {
                arrived += 1;
            }
        }
        arrived
    });
    let mut writer = streams.recv_timeout(Duration::from_secs(10)).unwrap();
    let tid = find_thread(&format!("llrp-{name}")).expect("client thread not found");
    // Pre-encode one second of reports so the fake reader's own work stays small.
    let reports: Vec<Vec<u8>> = (0..500u32)
        .map(|r| {
            let tags: Vec<TagRead> = (0..20u32)
                .map(|k| {
                    let i = r * 20 + k;
                    tag(i % 200, (i % 4) as u16 + 1)
                })
                .collect();
            llrp::ro_access_report(r, &tags)
        })
        .collect();
    let cpu0 = thread_cpu_s(&tid).unwrap_or(f64::NAN);
    let start = Instant::now();
    let total = (seconds * 500.0).round() as u32;
    for k in 0..total {
        writer.write_all(&reports[(k % 500) as usize]).unwrap();
        let due = start + Duration::from_micros(2_000 * u64::from(k + 1));
        thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu1 = thread_cpu_s(&tid).unwrap_or(f64::NAN);
    stop.stop();
    handle.join().unwrap();
    let arrived = drain.join().unwrap();
    ((cpu1 - cpu0) / wall * 100.0, arrived)
}

fn main() {
    let runs = common::runs();
    let n = common::scaled(5_000_000, 50_000) as usize;
    eprintln!("# rfid: debouncer over {n} reads of 2,000 (EPC, antenna) pairs, {runs} runs");
    let stream = reads(n, 2_000);
    let mut deb = Vec::new();
    let mut floor = Vec::new();
    for _ in 0..runs {
        deb.push(debouncer_run(&stream));
        floor.push(hashmap_floor_run(&stream));
    }
    let (deb, floor) = (median(&deb), median(&floor));
    let pass = deb >= DEBOUNCE_GOAL;
    eprintln!(
        "debouncer: {deb:.0} reads/s (bare HashMap counter {floor:.0}/s) — goal ≥ {DEBOUNCE_GOAL:.0}: {}",
        pass_str(pass)
    );
    emit(
        "rfid",
        "debouncer_reads_per_s",
        deb,
        Some(floor),
        Some("≥ 200000 reads/s"),
        Some(pass),
        serde_json::json!({"value": deb.round(), "limit_is": "bare HashMap counter, same reads"}),
    );

    let reports = common::scaled(20_000, 500) as u32;
    let mut bytes = Vec::new();
    for r in 0..reports {
        let tags: Vec<TagRead> = (0..20u32).map(|k| tag((r * 20 + k) % 200, 1)).collect();
        bytes.extend(llrp::ro_access_report(r, &tags));
    }
    let dec = median(
        &(0..runs)
            .map(|_| decode_run(&bytes, reports as usize * 20))
            .collect::<Vec<_>>(),
    );
    eprintln!("llrp decode: {dec:.0} tag reads/s from 1460-byte segments");
    emit(
        "rfid",
        "llrp_decode_reads_per_s",
        dec,
        None,
        None,
        None,
        serde_json::json!({"value": dec.round()}),
    );

    let seconds = (5.0 * common::scale()).max(1.0);
    let mut cpu = Vec::new();
    for run in 0..runs {
        let (pct, arrived) = client_cpu_run(seconds, run);
        eprintln!(
            "client run {run}: {pct:.2} % of one core at 10,000 reads/s ({arrived} arrivals)"
        );
        cpu.push(pct);
    }
    let cpu = median(&cpu);
    let pass = cpu <= CPU_GOAL_PERCENT;
    eprintln!(
        "client thread CPU: {cpu:.2} % of one core over {seconds:.1} s at 10,000 reads/s — goal ≤ {CPU_GOAL_PERCENT} %: {}",
        pass_str(pass)
    );
    emit(
        "rfid",
        "client_cpu_percent_at_10k_reads_per_s",
        cpu,
        None,
        Some("≤ 10 % of one core"),
        Some(pass),
        serde_json::json!({"value": (cpu * 100.0).round() / 100.0, "seconds": seconds}),
    );
}
