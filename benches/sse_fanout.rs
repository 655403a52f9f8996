//! `sse_fanout`: the real release `relais run` with a serial barcode scanner on a real
//! pseudo-terminal (generic `serial-scanner-cr` profile, default `record_scans = true`) and a
//! 100,000-product replica; 100 subscribers on `GET /v1/events` (raw HTTP/1.1 over TCP, one
//! tokio current-thread runtime in the bench) while the bench writes 1,000 scans/s of distinct
//! replica GTINs into the pty. Every subscriber must receive every scan event: delivered,
//! dropped (missing or announced by a `lagged` frame), and end-to-end latency from the scan's
//! write into the pty to its event being parsed by the subscriber.
//!
//! Limits measured in the same run: the same paced frames read by a bare thread from the pty
//! (latency floor of the input path), the pty's unpaced frame rate (throughput floor), and
//! relais' own unpaced scan rate with no subscriber (scan → decode → lookup → publish → record),
//! whose ratio to the offered 1,000/s is the headroom.
//! Goal: 100 subscribers, 1,000 events/s, no event dropped.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "common/agent.rs"]
mod agent;
mod common;

use agent::Agent;
use common::{Scratch, emit, median, pass_str, percentile_sorted, runs, scale};
use relais::cards::CardHasher;
use relais::demo::{self, Rng, StoreSize};
use relais::replica::import::{Progress, import_file};
use serialport::{SerialPort, TTYPort};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SUBSCRIBERS: usize = 100;
const RATE_PER_S: u64 = 1_000;
const DEVICE: &str = "serial:bench";

/// The scans of one paced run: frame bytes, and for each index the write time (ns after
/// `base`, 0 = not written yet).
struct Feed {
    base: Instant,
    frames: Vec<Vec<u8>>,
    index: HashMap<String, u32>,
    written_ns: Vec<AtomicU64>,
}

impl Feed {
    fn new(codes: &[String]) -> Feed {
        Feed {
            base: Instant::now(),
            frames: codes
                .iter()
                .map(|c| format!("{c}\r").into_bytes())
                .collect(),
            index: codes
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), i as u32))
                .collect(),
            written_ns: codes.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn len(&self) -> usize {
        self.frames.len()
    }

    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

/// Write every frame at `rate` per second (catching up without sleeping when behind), stamping
/// each just before its write. Returns the achieved rate.
fn write_paced(master: &mut TTYPort, feed: &Feed, rate: u64) -> f64 {
    let start = Instant::now();
    let period = Duration::from_nanos(1_000_000_000 / rate);
    for (i, frame) in feed.frames.iter().enumerate() {
        let due = start + period * i as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        feed.written_ns[i].store(feed.now_ns().max(1), Ordering::Release);
        master.write_all(frame).expect("write into the pty");
    }
    feed.len() as f64 / start.elapsed().as_secs_f64()
}

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    /// Per scan index: how many times it arrived (1 is right).
    counts: Vec<u8>,
    latencies_us: Vec<u32>,
    lagged_missed: u64,
    not_found: u64,
    unknown: u64,
    /// When the first and the last scan event arrived (ns after `Feed::base`).
    first_ns: u64,
    last_ns: u64,
    error: Option<String>,
}

/// HTTP/1.1 chunked transfer decoding, incremental.
#[derive(Default)]
struct Dechunk {
    raw: Vec<u8>,
    /// Bytes still to copy from the current chunk (then its CRLF).
    in_chunk: Option<usize>,
    ended: bool,
}

impl Dechunk {
    /// Move complete chunk payloads from `raw` into `out`.
    fn decode(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let mut pos = 0;
        loop {
            match self.in_chunk {
                None => {
                    let Some(eol) = find(&self.raw[pos..], b"\r\n") else {
                        break;
                    };
                    let line = std::str::from_utf8(&self.raw[pos..pos + eol])
                        .map_err(|_| "chunk size line is not UTF-8".to_string())?;
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(hex, 16)
                        .map_err(|_| format!("bad chunk size line {line:?}"))?;
                    pos += eol + 2;
                    if size == 0 {
                        self.ended = true;
                        break;
                    }
                    self.in_chunk = Some(size);
                }
                Some(size) => {
                    if self.raw.len() - pos < size + 2 {
                        break;
                    }
                    out.extend_from_slice(&self.raw[pos..pos + size]);
                    pos += size + 2;
                    self.in_chunk = None;
                }
            }
        }
        self.raw.drain(..pos);
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Handle the complete SSE frames at the front of `sse`; keep the incomplete rest.
fn frames(sse: &mut Vec<u8>, feed: &Feed, seen: &mut Seen, received: &AtomicUsize) {
    let mut pos = 0;
    while let Some(end) = find(&sse[pos..], b"\n\n") {
        let frame = &sse[pos..pos + end];
        pos += end + 2;
        let mut event = "";
        let mut data = "";
        for line in frame.split(|b| *b == b'\n') {
            let line = std::str::from_utf8(line).unwrap_or("");
            if let Some(v) = line.strip_prefix("event: ") {
                event = v;
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = v;
            }
        }
        match event {
            "scan" => {
                let now = feed.now_ns();
                // `detail.data` is the first "data" key of a LiveRead (device, at_ms and kind
                // come before detail), and a GTIN needs no JSON escaping.
                let code = data
                    .split_once("\"data\":\"")
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map(|(code, _)| code);
                match code.and_then(|c| feed.index.get(c)) {
                    Some(&i) => {
                        let i = i as usize;
                        seen.counts[i] = seen.counts[i].saturating_add(1);
                        let written = feed.written_ns[i].load(Ordering::Acquire);
                        seen.latencies_us.push(
                            u32::try_from(now.saturating_sub(written) / 1000).unwrap_or(u32::MAX),
                        );
                        if !data.contains("\"found\":true") {
                            seen.not_found += 1;
                        }
                        if seen.first_ns == 0 {
                            seen.first_ns = now;
                        }
                        seen.last_ns = now;
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    None => seen.unknown += 1,
                }
            }
            "lagged" => {
                seen.lagged_missed += data
                    .split_once("\"missed\":")
                    .and_then(|(_, n)| n.trim_end_matches('}').parse::<u64>().ok())
                    .unwrap_or(1);
            }
            _ => {} // status events, the retry line, heartbeats
        }
    }
    sse.drain(..pos);
}

/// One subscriber: raw HTTP/1.1 `GET /v1/events`, then SSE frames until `stop`.
async fn subscribe(
    addr: String,
    token: Option<String>,
    feed: Arc<Feed>,
    subscribed: Arc<AtomicUsize>,
    received: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Seen {
    let mut seen = Seen {
        counts: vec![0; feed.len()],
        latencies_us: Vec::with_capacity(feed.len()),
        ..Seen::default()
    };
    let fail = |mut seen: Seen, why: String| {
        seen.error = Some(why);
        seen
    };
    let mut stream = match tokio::net::TcpStream::connect(&addr).await {
        Ok(s) => s,
        Err(e) => return fail(seen, format!("connect: {e}")),
    };
    let _ = stream.set_nodelay(true);
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET /v1/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{auth}\r\n"
    );
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return fail(seen, format!("write: {e}"));
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let mut dechunk = Dechunk::default();
    // Response head.
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => return fail(seen, "closed before the response head".into()),
            Ok(n) => n,
            Err(e) => return fail(seen, format!("read: {e}")),
        };
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = find(&head, b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
            if !text.starts_with("http/1.1 200") {
                return fail(seen, format!("response: {text}"));
            }
            if !text.contains("transfer-encoding: chunked") {
                return fail(seen, format!("expected a chunked body: {text}"));
            }
            dechunk.raw.extend_from_slice(&head[end + 4..]);
            break;
        }
    }
    subscribed.fetch_add(1, Ordering::SeqCst);
    let mut sse = Vec::new();
    loop {
        if let Err(e) = dechunk.decode(&mut sse) {
            return fail(seen, e);
        }
        frames(&mut sse, &feed, &mut seen, &received);
        if dechunk.ended || stop.load(Ordering::Relaxed) {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Err(_idle) => continue,
            Ok(Ok(0)) => return fail(seen, "stream closed by the agent".into()),
            Ok(Ok(n)) => dechunk.raw.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return fail(seen, format!("read: {e}")),
        }
    }
    seen
}

struct FanoutResult {
    sent: usize,
    send_rate: f64,
    /// Per subscriber: scans delivered per second between the first and the last delivery.
    delivered_rate: f64,
    delivered: u64,
    dropped: u64,
    duplicates: u64,
    lagged_missed: u64,
    not_found: u64,
    errors: Vec<String>,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    /// Agent CPU from the first write to the last delivery, in % of one core.
    agent_cpu_percent: f64,
    /// This bench's CPU (100 subscribers + the pty writer), same window.
    bench_cpu_percent: f64,
}

/// This process's user + system CPU seconds, from /proc/self/stat.
fn self_cpu_seconds() -> f64 {
    agent::cpu_seconds(std::process::id())
}

fn fanout(
    agent: &Agent,
    token: Option<&str>,
    master: &mut TTYPort,
    codes: &[String],
) -> FanoutResult {
    let feed = Arc::new(Feed::new(codes));
    let subscribed = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = {
        let (addr, token) = (agent.addr.clone(), token.map(str::to_string));
        let (feed, subscribed, received, stop) = (
            feed.clone(),
            subscribed.clone(),
            received.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let tasks: Vec<_> = (0..SUBSCRIBERS)
                    .map(|_| {
                        tokio::spawn(subscribe(
                            addr.clone(),
                            token.clone(),
                            feed.clone(),
                            subscribed.clone(),
                            received.clone(),
                            stop.clone(),
                        ))
                    })
                    .collect();
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.expect("subscriber task"));
                }
                out
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while subscribed.load(Ordering::SeqCst) < SUBSCRIBERS {
        assert!(
            Instant::now() < deadline && !clients.is_finished(),
            "only {} of {SUBSCRIBERS} subscribers connected",
            subscribed.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let cpu_before = agent.cpu_seconds();
    let bench_cpu_before = self_cpu_seconds();
    let first_write_ns = feed.now_ns();
    let send_rate = write_paced(master, &feed, RATE_PER_S);
    // Let the tail arrive: done when every subscriber has every scan, or 5 s without progress.
    let expected = feed.len() * SUBSCRIBERS;
    let mut last = (received.load(Ordering::Relaxed), Instant::now());
    while received.load(Ordering::Relaxed) < expected {
        let now = received.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(5) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let agent_cpu_s = agent.cpu_seconds() - cpu_before;
    let bench_cpu_s = self_cpu_seconds() - bench_cpu_before;
    stop.store(true, Ordering::Relaxed);
    let seen = clients.join().expect("subscriber thread");

    let mut latencies: Vec<u32> = Vec::with_capacity(expected);
    let (mut delivered, mut duplicates, mut lagged_missed, mut not_found) = (0u64, 0u64, 0, 0);
    let mut errors = Vec::new();
    let (mut unknown, mut unknown_subscribers) = (0u64, 0usize);
    let (mut first_ns, mut last_ns) = (u64::MAX, first_write_ns);
    for s in seen {
        last_ns = last_ns.max(s.last_ns);
        if s.first_ns > 0 {
            first_ns = first_ns.min(s.first_ns);
        }
        delivered += s.counts.iter().filter(|c| **c > 0).count() as u64;
        duplicates += s
            .counts
            .iter()
            .map(|c| u64::from(c.saturating_sub(1)))
            .sum::<u64>();
        lagged_missed += s.lagged_missed;
        not_found += s.not_found;
        if s.unknown > 0 {
            unknown += s.unknown;
            unknown_subscribers += 1;
        }
        errors.extend(s.error);
        latencies.extend(s.latencies_us);
    }
    if unknown > 0 {
        // A GTIN the bench never wrote: a frame cut or glued by the driver.
        errors.push(format!(
            "{unknown} scan events with a code that was never written, at \
             {unknown_subscribers} subscribers"
        ));
    }
    latencies.sort_unstable();
    let ms = |p: f64| percentile_sorted(&latencies, p) / 1000.0;
    let span_s = (last_ns - first_write_ns) as f64 / 1e9;
    let delivery_s = last_ns.saturating_sub(first_ns) as f64 / 1e9;
    FanoutResult {
        sent: feed.len(),
        send_rate,
        delivered_rate: (delivered as f64 / SUBSCRIBERS as f64 - 1.0) / delivery_s,
        delivered,
        dropped: expected as u64 - delivered,
        duplicates,
        lagged_missed,
        not_found,
        errors,
        p50_ms: ms(50.0),
        p99_ms: ms(99.0),
        p999_ms: ms(99.9),
        max_ms: latencies
            .last()
            .map_or(f64::NAN, |l| f64::from(*l) / 1000.0),
        agent_cpu_percent: agent_cpu_s / span_s * 100.0,
        bench_cpu_percent: bench_cpu_s / span_s * 100.0,
    }
}

/// The input path alone: the same frames at the same pace into a fresh pty, read by a bare
/// thread (raw mode, like the driver), latency from write to the terminator being read.
fn pty_floor_paced(codes: &[String]) -> (f64, f64) {
    let (mut master, slave) = TTYPort::pair().expect("pseudo-terminals are available");
    master
        .set_timeout(Duration::from_secs(60))
        .expect("pty timeout");
    let mut reader = serialport::new(slave.name().unwrap(), 9600)
        .timeout(Duration::from_millis(200))
        .open_native()
        .expect("slave opens");
    let feed = Arc::new(Feed::new(codes));
    let n = feed.len();
    let reader_feed = feed.clone();
    let t = std::thread::spawn(move || {
        let mut lat = Vec::with_capacity(n);
        let mut buf = [0u8; 4096];
        let mut got = 0;
        while got < n {
            if let Ok(k) = reader.read(&mut buf) {
                let now = reader_feed.now_ns();
                for _ in buf[..k].iter().filter(|b| **b == b'\r') {
                    let written = reader_feed.written_ns[got].load(Ordering::Acquire);
                    lat.push(u32::try_from(now.saturating_sub(written) / 1000).unwrap_or(u32::MAX));
                    got += 1;
                }
            }
        }
        lat
    });
    write_paced(&mut master, &feed, RATE_PER_S);
    let mut lat = t.join().unwrap();
    drop(slave);
    lat.sort_unstable();
    (
        percentile_sorted(&lat, 50.0) / 1000.0,
        percentile_sorted(&lat, 99.0) / 1000.0,
    )
}

/// The pty's frame rate, unpaced: a writer as fast as the pty takes it, a bare reader.
fn pty_floor_rate(codes: &[String]) -> f64 {
    let (mut master, slave) = TTYPort::pair().expect("pseudo-terminals are available");
    master
        .set_timeout(Duration::from_secs(60))
        .expect("pty timeout");
    let mut reader = serialport::new(slave.name().unwrap(), 9600)
        .timeout(Duration::from_millis(200))
        .open_native()
        .expect("slave opens");
    let n = codes.len();
    let bytes: Vec<u8> = codes
        .iter()
        .flat_map(|c| format!("{c}\r").into_bytes())
        .collect();
    let start = Instant::now();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut got = 0;
        while got < n {
            if let Ok(k) = reader.read(&mut buf) {
                got += buf[..k].iter().filter(|b| **b == b'\r').count();
            }
        }
        start.elapsed()
    });
    for frame in bytes.chunks(15) {
        master.write_all(frame).unwrap();
    }
    let elapsed = t.join().unwrap();
    drop(slave);
    n as f64 / elapsed.as_secs_f64()
}

fn health(
    client: &reqwest::blocking::Client,
    agent: &Agent,
    token: Option<&str>,
) -> serde_json::Value {
    let mut request = client.get(agent.url("/v1/health"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request
        .send()
        .and_then(|r| r.json())
        .expect("GET /v1/health")
}

fn device(health: &serde_json::Value) -> Option<serde_json::Value> {
    health["devices"]
        .as_array()?
        .iter()
        .find(|d| d["device"] == DEVICE)
        .cloned()
}

fn reads(client: &reqwest::blocking::Client, agent: &Agent, token: Option<&str>) -> u64 {
    device(&health(client, agent, token))
        .and_then(|d| d["reads"].as_u64())
        .unwrap_or(0)
}

/// Relais' own scan rate with nobody subscribed: every frame written as fast as the pty takes
/// it, timed until the device board has counted them all.
fn relais_rate(
    client: &reqwest::blocking::Client,
    agent: &Agent,
    token: Option<&str>,
    master: &mut TTYPort,
    codes: &[String],
) -> (f64, u64) {
    let before = reads(client, agent, token);
    let target = before + codes.len() as u64;
    let bytes: Vec<u8> = codes
        .iter()
        .flat_map(|c| format!("{c}\r").into_bytes())
        .collect();
    let start = Instant::now();
    // The pty blocks the writer when the driver is behind; the board counts as the core goes.
    master.write_all(&bytes).expect("write into the pty");
    // Done when every scan is counted, or when the count has not moved for 3 s: the driver
    // lost some frames (the second value returned).
    let (mut count, mut moved) = (before, Instant::now());
    while count < target {
        std::thread::sleep(Duration::from_millis(5));
        let now = reads(client, agent, token);
        if now != count {
            (count, moved) = (now, Instant::now());
        } else if moved.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let read = count - before;
    let elapsed = moved.min(Instant::now()).duration_since(start);
    (read as f64 / elapsed.as_secs_f64(), target - count)
}

fn config_text(
    data_dir: &Path,
    link: &Path,
    token_file: Option<&Path>,
    record_scans: bool,
) -> String {
    let mut api = String::from("listen = \"127.0.0.1:0\"\n");
    if let Some(path) = token_file {
        api.push_str(&format!(
            "token_file = \"{}\"\nrate_limit_per_client = 0\n",
            path.display()
        ));
    }
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-profiles");
    format!(
        "[agent]\nid = \"bench-store/relais\"\ndata_dir = \"{}\"\n\n[api]\n{api}\n[devices]\n\
         record_scans = {record_scans}\nprofiles_dir = \"{}\"\n[[devices.serial]]\nname = \"bench\"\npath = \"{}\"\n\
         profile = \"serial-scanner-cr\"\n",
        data_dir.display(),
        profiles.display(),
        link.display()
    )
}

fn wait_for(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !probe() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Everything measured with one agent configuration.
struct Variant {
    auth: &'static str,
    results: Vec<FanoutResult>,
    /// Bare pty latency floor of each run: (p50, p99) ms.
    floors: Vec<(f64, f64)>,
    pty_rates: Vec<f64>,
    relais_rates: Vec<f64>,
    /// Frames of the unpaced bursts that never became a scan.
    unpaced_lost: Vec<u64>,
}

struct Setup<'a> {
    data_dir: &'a Path,
    scratch: &'a Scratch,
    per_run: usize,
    floor_n: usize,
    burst_n: usize,
}

/// Start the agent with `record_scans`, plug the scanner, warm up, then `runs()` runs of
/// (pty floor, paced fan-out, bare pty rate, relais unpaced rate).
fn variant(
    setup: &Setup<'_>,
    record_scans: bool,
    next_code: &mut dyn FnMut() -> String,
) -> Variant {
    let token = "bench-till-token-0123456789abcdef";
    let token_file = setup.scratch.path().join("api-tokens");
    agent::write_token_file(&token_file, token);
    let link: PathBuf = setup.scratch.path().join("scanner");
    let _ = std::fs::remove_file(&link);
    let config = setup.scratch.path().join("relais.toml");
    let write_config = |token_file: Option<&Path>| {
        let text = config_text(setup.data_dir, &link, token_file, record_scans);
        std::fs::write(&config, text).expect("write config");
    };
    write_config(Some(&token_file));
    let (agent, token) = match Agent::try_start(&config) {
        Ok(agent) => (agent, Some(token)),
        Err((status, stderr)) if status == Some(78) && agent::unknown_auth_keys(&stderr) => {
            eprintln!(
                "# this build has no `[api] token_file`: subscribing without authentication ({})",
                stderr
                    .lines()
                    .find(|l| agent::unknown_auth_keys(l))
                    .unwrap_or("")
                    .trim()
            );
            write_config(None);
            let agent = Agent::try_start(&config)
                .unwrap_or_else(|(s, e)| panic!("relais did not start ({s:?}):\n{e}"));
            (agent, None)
        }
        Err((status, stderr)) => panic!("relais did not start ({status:?}):\n{stderr}"),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    agent.wait_healthy(&client, token);
    // The scanner is plugged in after the agent started (as in tests/devices_agent.rs): the
    // pty master never leaks into the agent's descriptors.
    wait_for("the absent scanner to be reported", || {
        device(&health(&client, &agent, token)).is_some()
    });
    let (mut master, slave) = TTYPort::pair().expect("pseudo-terminals are available");
    // A write into a full pty waits for the driver (backpressure), never times out.
    master
        .set_timeout(Duration::from_secs(600))
        .expect("pty timeout");
    std::os::unix::fs::symlink(slave.name().expect("slave path"), &link).expect("symlink");
    wait_for("the scanner to be connected", || {
        device(&health(&client, &agent, token)).is_some_and(|d| d["state"] == "connected")
    });
    // Warm-up: a few hundred scans through the whole path.
    let warm: Vec<String> = (0..500).map(|_| next_code()).collect();
    let (_, lost) = relais_rate(&client, &agent, token, &mut master, &warm);
    if lost > 0 {
        eprintln!("# warm-up: the driver lost {lost} of {} frames", warm.len());
    }

    let mut v = Variant {
        auth: if token.is_some() { "bearer" } else { "none" },
        results: Vec::new(),
        floors: Vec::new(),
        pty_rates: Vec::new(),
        relais_rates: Vec::new(),
        unpaced_lost: Vec::new(),
    };
    for run in 0..runs() {
        // Codes distinct within a run (a repeated code would make two scans indistinguishable).
        let mut codes: Vec<String> = Vec::with_capacity(setup.per_run);
        let mut seen = std::collections::HashSet::new();
        while codes.len() < setup.per_run {
            let c = next_code();
            if seen.insert(c.clone()) {
                codes.push(c);
            }
        }
        let floor = pty_floor_paced(&codes[..setup.floor_n.min(setup.per_run)]);
        let r = fanout(&agent, token, &mut master, &codes);
        let burst: Vec<String> = (0..setup.burst_n).map(|_| next_code()).collect();
        let pty_rate = pty_floor_rate(&burst);
        let (relais_rate, lost) = relais_rate(&client, &agent, token, &mut master, &burst);
        eprintln!(
            "record_scans={record_scans} run {run}: wrote {} scans at {:.0}/s; each subscriber \
             received {:.0}/s; delivered {} of {} ({} dropped, {} announced by `lagged`, {} \
             duplicates, {} not found); latency p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max \
             {:.1} ms (bare pty p50 {:.3} ms, p99 {:.3} ms); CPU: agent {:.0} %, subscribers {:.0} %; \
             unpaced without subscribers: relais {relais_rate:.0} scans/s ({lost} of {} frames \
             lost), bare pty {pty_rate:.0} frames/s{}",
            r.sent,
            r.send_rate,
            r.delivered_rate,
            r.delivered,
            r.sent * SUBSCRIBERS,
            r.dropped,
            r.lagged_missed,
            r.duplicates,
            r.not_found,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_ms,
            floor.0,
            floor.1,
            r.agent_cpu_percent,
            r.bench_cpu_percent,
            burst.len(),
            if r.errors.is_empty() {
                String::new()
            } else {
                format!("; errors: {:?}", r.errors)
            }
        );
        v.results.push(r);
        v.floors.push(floor);
        v.pty_rates.push(pty_rate);
        v.relais_rates.push(relais_rate);
        v.unpaced_lost.push(lost);
    }
    let exit = agent.terminate();
    if !exit.is_some_and(|s| s.success()) {
        eprintln!("relais did not exit 0 on SIGTERM: {exit:?}");
    }
    drop(master);
    drop(slave);
    let _ = std::fs::remove_file(&link);
    v
}

fn report(v: &Variant, record_scans: bool, extra_base: &serde_json::Value) {
    let suffix = if record_scans {
        ""
    } else {
        "_record_scans_off"
    };
    let med =
        |f: &dyn Fn(&FanoutResult) -> f64| median(&v.results.iter().map(f).collect::<Vec<_>>());
    let dropped_total: u64 = v.results.iter().map(|r| r.dropped).sum();
    let errors: Vec<String> = v.results.iter().flat_map(|r| r.errors.clone()).collect();
    let no_drop = dropped_total == 0 && errors.is_empty();
    let delivered_rate = med(&|r| r.delivered_rate);
    let send_rate = med(&|r| r.send_rate);
    let floor_p50 = median(&v.floors.iter().map(|f| f.0).collect::<Vec<_>>());
    let floor_p99 = median(&v.floors.iter().map(|f| f.1).collect::<Vec<_>>());
    let relais_rate = median(&v.relais_rates);
    let pty_rate = median(&v.pty_rates);
    // 2 %: the last delivery's own latency stretches a short run's span.
    let rate_pass = delivered_rate >= 0.98 * RATE_PER_S as f64;
    eprintln!(
        "median, record_scans={record_scans}: each of {SUBSCRIBERS} subscribers received \
         {delivered_rate:.0} events/s (written at {send_rate:.0}/s; goal {RATE_PER_S}/s: {}); \
         dropped in all runs: {dropped_total} (goal 0: {}); latency p50 {:.3} ms, p99 {:.3} ms \
         (bare pty {floor_p50:.3} / {floor_p99:.3} ms); agent CPU {:.0} %; unpaced without \
         subscribers relais {relais_rate:.0} scans/s ({:.2}× the offered {RATE_PER_S}/s; bare pty \
         {pty_rate:.0} frames/s)",
        pass_str(rate_pass),
        pass_str(no_drop),
        med(&|r| r.p50_ms),
        med(&|r| r.p99_ms),
        med(&|r| r.agent_cpu_percent),
        relais_rate / RATE_PER_S as f64,
    );
    let extra = |more: serde_json::Value| {
        let mut e = extra_base.clone();
        if let (Some(map), serde_json::Value::Object(more)) = (e.as_object_mut(), more) {
            map.extend(more);
        }
        if let Some(map) = e.as_object_mut() {
            map.insert("record_scans".into(), record_scans.into());
            map.insert("auth".into(), v.auth.into());
        }
        e
    };
    emit(
        "sse_fanout",
        &format!("events_per_s_per_subscriber{suffix}"),
        delivered_rate,
        Some(send_rate),
        Some(">= 1000 events/s"),
        Some(rate_pass),
        extra(serde_json::json!({"limit_is": "scans/s written into the pty"})),
    );
    emit(
        "sse_fanout",
        &format!("dropped{suffix}"),
        dropped_total as f64,
        None,
        Some("0"),
        Some(no_drop),
        extra(serde_json::json!({
            "summed_over_runs": true,
            "delivered": v.results.iter().map(|r| r.delivered).sum::<u64>(),
            "expected": v.results.iter().map(|r| r.sent * SUBSCRIBERS).sum::<usize>(),
            "lagged_missed": v.results.iter().map(|r| r.lagged_missed).sum::<u64>(),
            "duplicates": v.results.iter().map(|r| r.duplicates).sum::<u64>(),
            "not_found": v.results.iter().map(|r| r.not_found).sum::<u64>(),
            "errors": errors,
        })),
    );
    type Pick = fn(&FanoutResult) -> f64;
    let latencies: [(&str, Pick, Option<f64>); 4] = [
        ("latency_p50_ms", |r| r.p50_ms, Some(floor_p50)),
        ("latency_p99_ms", |r| r.p99_ms, Some(floor_p99)),
        ("latency_p999_ms", |r| r.p999_ms, None),
        ("latency_max_ms", |r| r.max_ms, None),
    ];
    for (metric, f, floor) in latencies {
        emit(
            "sse_fanout",
            &format!("{metric}{suffix}"),
            med(&f),
            floor,
            None,
            None,
            extra(serde_json::json!({
                "unit": "ms from the write into the pty to the event parsed by a subscriber",
                "limit_is": "bare thread reading the same paced frames from a pty"})),
        );
    }
    emit(
        "sse_fanout",
        &format!("agent_cpu_percent{suffix}"),
        med(&|r| r.agent_cpu_percent),
        None,
        None,
        None,
        extra(
            serde_json::json!({"unit": "% of one core, first write to last delivery",
            "subscribers_cpu_percent": med(&|r| r.bench_cpu_percent)}),
        ),
    );
    emit(
        "sse_fanout",
        &format!("unpaced_scans_per_s_no_subscriber{suffix}"),
        relais_rate,
        Some(pty_rate),
        None,
        None,
        extra(serde_json::json!({"limit_is": "bare pty frames/s",
            "times_offered_rate": relais_rate / RATE_PER_S as f64,
            "frames_lost": v.unpaced_lost.iter().sum::<u64>()})),
    );
}

fn main() {
    let n = common::scaled(100_000, 2_000);
    let seconds = ((10.0 * scale()).round() as u64).max(2);
    let per_run = (seconds * RATE_PER_S) as usize;
    let setup_counts = (
        per_run,
        (per_run / 2).max(1_000),
        common::scaled(10_000, 1_000) as usize,
    );
    eprintln!(
        "# sse_fanout: {SUBSCRIBERS} subscribers, {RATE_PER_S} scans/s for {seconds} s ({per_run} \
         scans) ×{} runs, with record_scans on (default) then off; {n} products; binary {}",
        runs(),
        agent::BIN
    );
    let scratch = Scratch::new("sse_fanout");
    let data_dir = scratch.sub("data");
    let snap = scratch.sub("snapshots");
    let (store, gen_t) = common::time(|| {
        demo::generate(
            &snap,
            StoreSize {
                products: n,
                customers: common::scaled(1_000, 100),
            },
            &CardHasher::new(&[7u8; 32]),
            relais::storage::now_unix_ms(),
        )
        .expect("generate store")
    });
    let replica = data_dir.join(relais::storage::REPLICA_FILE);
    let (_, import_t) = common::time(|| {
        for (stream, file) in &store.files {
            import_file(&replica, *stream, file, None, Progress::Quiet)
                .unwrap_or_else(|e| panic!("import {stream}: {e}"));
        }
    });
    let _ = std::fs::remove_dir_all(&snap);
    eprintln!(
        "# generated in {:.1} s, imported all streams in {:.1} s",
        gen_t.as_secs_f64(),
        import_t.as_secs_f64()
    );
    let setup = Setup {
        data_dir: &data_dir,
        scratch: &scratch,
        per_run: setup_counts.0,
        floor_n: setup_counts.1,
        burst_n: setup_counts.2,
    };
    // Replica GTINs: every scan is found, like a till's.
    let mut rng = Rng::new(5);
    let mut next_code = || demo::product_gtin(rng.below(n)).expect("gtin").to_string();
    let base = serde_json::json!({"subscribers": SUBSCRIBERS, "rate_per_s": RATE_PER_S,
        "seconds": seconds, "products": n});
    for record_scans in [true, false] {
        let v = variant(&setup, record_scans, &mut next_code);
        report(&v, record_scans, &base);
    }
}
