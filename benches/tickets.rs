//! `tickets`: what a till feels when it sells, on the real release `relais run` over HTTP.
//!
//! **Store.** 100,000 products with prices, promotions, stock and reservations
//! (`demo::generate`, imported with `import_file` as `http_lookup` does), an outbox already
//! holding 100,000 store facts (`stock.movement` sales of the store's SKUs, appended through
//! `relais::outbox::OutboxWriter` as `sync_drain` seeds it: the backlog of a morning with the
//! WAN down), 32 tills, each with its own bearer token (`[api] token_file`, 32 lines,
//! `rate_limit_per_client = 0`). Both files are built once and copied for every agent start.
//!
//! **Tills.** 32 keep-alive connections, closed loop (a till sends its next ticket once it has
//! the answer to the last one). A ticket is `POST /v1/sales` with 5 lines: 5 distinct GTINs
//! drawn from 10,000 of the replica's products, quantities 1–3, `unit_price_minor` on lines 1, 3
//! and 5, a `receipt`, `currency`, and a `client_key` unique per ticket. The reference is the
//! one-line rate: the same 32 tills posting `POST /v1/movements` sales (one GTIN, a unique
//! key), measured on the same agent in the same run, interleaved with the tickets. The same
//! ticket naming a customer by loyalty card (`"customer": {"card": …}`, one of the store's
//! customers at random), which earns points in the sale's own transaction (ADR 0021), is
//! measured between the two and printed beside the plain ticket (`customer_ticket_*`).
//!
//! **Client.** The tills are this bench's own HTTP/1.1 client: two threads (like `wrk -t2`),
//! each a current-thread tokio runtime driving 16 keep-alive connections, building each request
//! (a fresh body and key) just before sending it and recording per request its start time,
//! latency and status. Why not `wrk`: it can build a fresh body per request (`wrk.format` in
//! `request()`), but it only reports a histogram for the whole run, and the busy-Saturday goal
//! is about the requests sent while an import and a drain are both in progress, a window known
//! only once it is over; and it costs more CPU. Measured on the 2-core VM on 2026-12-07 (load
//! average 11 from other work), against the same agent and store: `wrk -t2 -c32` with the
//! 5-line ticket built in Lua per request took 16–19 µs of CPU per ticket and 12–14 µs per
//! movement (`/usr/bin/time`, two 8 s runs each); this client, minutes before, 12.1 µs and
//! 9.2 µs. Every line prints the client's CPU per request (`client_cpu_us_per_request`).
//!
//! **Quiet store** (one agent per run, no broker): tickets for `T` seconds and movements for
//! `T` seconds (10 s at scale 1.0, 1 s minimum), order alternating between runs, each after its
//! own warm-up. Durable tickets/s (2xx), lines/s, p50/p99/p99.9, non-2xx; movements/s, p50/p99;
//! ratio lines/s ÷ movements/s.
//!
//! **Busy Saturday** (three more agents per run, same store): the tills **paced** at 4 tickets/s
//! each (128 tickets/s, 640 lines/s: far beyond a real store, where a till scans an item every
//! few seconds; each ticket timed from its scheduled send, so queueing behind a stall counts),
//! which is the judged load; the tills in a **closed loop**, reported beside it (what is left for
//! tills when they saturate the box); and no tills, for the import's and the drain's own limits.
//! In each, after a
//! lead-in, the store's link to central comes up (`[sync]` added to the config and SIGHUP, the
//! reload path `Running::apply` starts sync as at startup: this puts the start at a chosen
//! moment of the load instead of before the first till connects): a real Mosquitto on a random
//! port (`tests/common/broker.rs`), `relaisctl ingest` (at `nice 19`: it runs at central in
//! production, not on the store's box) acknowledging end to end (`ack =
//! "central"`), so the 100,000 queued facts drain. Once the first one is acknowledged (the
//! agent's subscriptions are in place), central tells the agent to refetch its products the
//! real way, `relaisctl publish --refetch products`; the agent's `[sync] snapshot_url` points at
//! an HTTPS server (`tests/support/https.rs`) serving `relaisctl snapshot build` output of
//! 1,000,000 products, so the agent downloads, verifies and imports it while the tills sell.
//! The bench polls `/v1/health` every 20 ms: connected, the seeded facts drained (the oldest
//! unsent store fact is younger than the seeding), products at the snapshot's version; and the
//! HTTPS server's log for the manifest request (the refetch started). The **window** where
//! both are in progress runs from the later start to the earlier end, each end taken at the
//! last poll that still saw it running (so the window lies inside the true one). Ticket
//! p50/p99 over the requests sent in the window, 5xx over the whole load. Goal: p99 ≤ 20 ms
//! and no 5xx. Import duration (refetch start → new version visible) and drain rate (seeded
//! facts ÷ connect → drained) are compared with the same drain and import on a third agent
//! with no tills, in the same run. At the end every fact must reach central's sink: the seeded
//! ones plus every ticket answered 201.
//!
//! Read the busy figures with Little's law in mind: 32 tills in a closed loop keep 32 tickets
//! in flight, so their mean latency is 32 ÷ tickets/s, and the tickets/s is whatever CPU the
//! import, the drain, `relaisctl ingest` and Mosquitto leave on the box. Each sync run also
//! prints, to tell queueing from a stall: the cores used by the agent, the ingest and the bench
//! while both were in progress (from /proc at each poll) and where the slowest tickets were on
//! the run's timeline. (No price checks run beside the tills: while tickets flow, a product
//! lookup range-scans the movements not yet filed by SKU, tens of milliseconds of a reader
//! thread each, so even one every 10 ms halved the tickets/s and would skew the comparison
//! with the quiet store, which has none.)
//!
//! Scale (`RELAIS_BENCH_SCALE`): products, GTIN pool, snapshot rows, seeded facts and durations.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "common/agent.rs"]
mod agent;
#[path = "../tests/common/broker.rs"]
mod broker;
mod common;
#[path = "../tests/support/https.rs"]
mod https;

use agent::Agent;
use common::{Scratch, emit, median, pass_str, runs, scale, scaled};
use relais::cards::CardHasher;
use relais::demo::{self, Rng, StoreSize};
use relais::outbox::{AppendRequest, MovementKind, StoreFact};
use relais::replica::import::{Progress, import_file};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RELAISCTL: &str = env!("CARGO_BIN_EXE_relaisctl");
const TILLS: usize = 32;
const CLIENT_THREADS: usize = 2;
const LINES: usize = 5;
const GOAL_P99_MS: f64 = 20.0;
/// The busy Saturday's judged load: each till sends a ticket every 250 ms (128 tickets/s, 640
/// lines/s for the 32 tills: hundreds of times a real store's rate, where a till scans an item
/// every few seconds), on a fixed schedule, each ticket timed from its scheduled send.
const PACED_TICKETS_PER_S_PER_TILL: f64 = 4.0;
/// The replica's streams are at version 1 after `import_file(.., None, ..)`; central's new
/// products snapshot is version 2.
const SNAPSHOT_VERSION: u64 = 2;
const POLL: Duration = Duration::from_millis(20);
const BENCH: &str = "tickets";
/// Customers of the generated store (their cards are `demo::customer_card_number(0..n)`).
static CUSTOMERS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

// ---------------------------------------------------------------------------------------
// The tills: an HTTP/1.1 client, closed loop, one connection per till.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// `POST /v1/sales`, 5 lines.
    Ticket,
    /// The same ticket naming a customer by loyalty card: resolved on a reader (card hashed,
    /// customer looked up), points earned in the sale's transaction, balance settled on the
    /// writer (ADR 0021).
    CustomerTicket,
    /// `POST /v1/movements`, one sale line.
    Movement,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Ticket | Kind::CustomerTicket => "/v1/sales",
            Kind::Movement => "/v1/movements",
        }
    }
    fn lines(self) -> usize {
        match self {
            Kind::Ticket | Kind::CustomerTicket => LINES,
            Kind::Movement => 1,
        }
    }
}

#[derive(Clone, Copy)]
struct Sample {
    /// µs since the bench's epoch.
    start_us: u64,
    latency_us: u32,
    /// 0: no answer (socket error).
    status: u16,
}

struct LoadConfig {
    addr: String,
    kind: Kind,
    /// Unique per load: keeps every key of the bench distinct.
    tag: String,
    tokens: Arc<Vec<String>>,
    gtins: Arc<Vec<String>>,
    epoch: Instant,
    deadline: Option<Instant>,
    stop: Arc<AtomicBool>,
    /// Open loop: each till sends on this schedule (None: closed loop).
    pace: Option<Duration>,
}

struct ThreadOut {
    samples: Vec<Sample>,
    cpu_s: f64,
    errors: Vec<String>,
}

struct Load {
    threads: Vec<std::thread::JoinHandle<ThreadOut>>,
    stop: Arc<AtomicBool>,
    agent_pid: u32,
    agent_cpu_before: f64,
}

struct LoadOut {
    /// Every request, sorted by start.
    samples: Vec<Sample>,
    client_cpu_s: f64,
    agent_cpu_s: f64,
    errors: Vec<String>,
}

impl LoadOut {
    fn answered(&self) -> usize {
        self.samples.len()
    }
    fn client_cpu_us_per_request(&self) -> f64 {
        self.client_cpu_s * 1e6 / self.answered().max(1) as f64
    }
    fn agent_cpu_us_per_request(&self) -> f64 {
        self.agent_cpu_s * 1e6 / self.answered().max(1) as f64
    }
}

impl Load {
    /// Start the 32 tills; they run until `deadline` (when given) or `stop`.
    fn start(
        template: &LoadTemplate,
        kind: Kind,
        tag: String,
        agent: &Agent,
        deadline: Option<Instant>,
        pace: Option<Duration>,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let config = Arc::new(LoadConfig {
            addr: agent.addr.clone(),
            kind,
            tag,
            tokens: Arc::clone(&template.tokens),
            gtins: Arc::clone(&template.gtins),
            epoch: template.epoch,
            deadline,
            stop: Arc::clone(&stop),
            pace,
        });
        let agent_cpu_before = agent.cpu_seconds();
        let threads = (0..CLIENT_THREADS)
            .map(|t| {
                let config = Arc::clone(&config);
                std::thread::Builder::new()
                    .name(format!("till-client-{t}"))
                    .spawn(move || client_thread(&config, t))
                    .expect("spawn a client thread")
            })
            .collect();
        Load {
            threads,
            stop,
            agent_pid: agent.pid(),
            agent_cpu_before,
        }
    }

    /// Stop the tills now and collect what they measured.
    fn finish(self) -> LoadOut {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    /// Wait for the tills to stop by themselves (at their deadline).
    fn join(self) -> LoadOut {
        let mut samples = Vec::new();
        let mut client_cpu_s = 0.0;
        let mut errors = Vec::new();
        for thread in self.threads {
            let out = thread.join().expect("client thread");
            samples.extend(out.samples);
            client_cpu_s += out.cpu_s;
            errors.extend(out.errors);
        }
        let agent_cpu_s = agent::cpu_seconds(self.agent_pid) - self.agent_cpu_before;
        samples.sort_by_key(|s| s.start_us);
        LoadOut {
            samples,
            client_cpu_s,
            agent_cpu_s,
            errors,
        }
    }
}

/// What every load of the bench shares.
struct LoadTemplate {
    tokens: Arc<Vec<String>>,
    gtins: Arc<Vec<String>>,
    epoch: Instant,
}

impl LoadTemplate {
    fn us(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_micros() as u64
    }
}

/// One client thread: a current-thread runtime driving its share of the tills.
fn client_thread(config: &Arc<LoadConfig>, thread: usize) -> ThreadOut {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let (samples, errors) = runtime.block_on(async {
        let tasks: Vec<_> = (0..TILLS)
            .filter(|till| till % CLIENT_THREADS == thread)
            .map(|till| tokio::spawn(till_loop(Arc::clone(config), till)))
            .collect();
        let mut samples = Vec::new();
        let mut errors = Vec::new();
        for task in tasks {
            let (s, e) = task.await.expect("till task");
            samples.extend(s);
            errors.extend(e);
        }
        (samples, errors)
    });
    drop(runtime);
    ThreadOut {
        samples,
        cpu_s: thread_cpu_seconds(),
        errors,
    }
}

/// User + system CPU seconds of the calling thread (from its start), from /proc.
fn thread_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return f64::NAN;
    };
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The body of request `n` of `till`: a fresh key each time.
fn write_body(body: &mut String, config: &LoadConfig, till: usize, n: u64, rng: &mut Rng) {
    let gtins = &config.gtins;
    let tag = &config.tag;
    match config.kind {
        Kind::Ticket | Kind::CustomerTicket => {
            // The receipt carries the load's tag: receipts are unique per agent (ADR 0021), and
            // one agent serves several loads.
            let _ = write!(
                body,
                r#"{{"client_key":"{tag}/till-{till:02}/t-{n}","receipt":"R-{tag}-{till:02}-{n:07}","currency":"EUR","#
            );
            if config.kind == Kind::CustomerTicket {
                let card =
                    demo::customer_card_number(rng.below(CUSTOMERS.get().copied().unwrap_or(100)));
                let _ = write!(body, r#""customer":{{"card":"{card}"}},"#);
            }
            body.push_str(r#""lines":["#);
            let mut picked = [usize::MAX; LINES];
            for i in 0..LINES {
                let g = loop {
                    let g = rng.below(gtins.len() as u64) as usize;
                    if !picked[..i].contains(&g) {
                        break g;
                    }
                };
                picked[i] = g;
                if i > 0 {
                    body.push(',');
                }
                let qty = 1 + rng.below(3);
                if i % 2 == 0 {
                    let price = 49 + rng.below(4_950);
                    let _ = write!(
                        body,
                        r#"{{"code":"{}","qty":{qty},"unit_price_minor":{price}}}"#,
                        gtins[g]
                    );
                } else {
                    let _ = write!(body, r#"{{"code":"{}","qty":{qty}}}"#, gtins[g]);
                }
            }
            body.push_str("]}");
        }
        Kind::Movement => {
            let g = rng.below(gtins.len() as u64) as usize;
            let _ = write!(
                body,
                r#"{{"kind":"sale","gtin":"{}","qty":1,"client_key":"{tag}/till-{till:02}/m-{n}"}}"#,
                gtins[g]
            );
        }
    }
}

async fn till_loop(config: Arc<LoadConfig>, till: usize) -> (Vec<Sample>, Vec<String>) {
    let mut rng = Rng::new(0x7111_0000 + till as u64 * 7919 + config.tag.len() as u64);
    let token = &config.tokens[till];
    let path = config.kind.path();
    let mut samples = Vec::with_capacity(1 << 14);
    let mut errors = Vec::new();
    let mut stream: Option<tokio::net::TcpStream> = None;
    let mut body = String::with_capacity(1024);
    let mut request: Vec<u8> = Vec::with_capacity(2048);
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut n = 0u64;
    // Paced: till i's first ticket is i/32 of an interval in, so the tills do not send at once.
    let mut slot = config
        .pace
        .map(|every| Instant::now() + every.mul_f64(till as f64 / TILLS as f64));
    loop {
        if let Some(at) = slot {
            tokio::time::sleep_until(at.into()).await;
        }
        if config.stop.load(Ordering::Relaxed)
            || config.deadline.is_some_and(|d| Instant::now() >= d)
        {
            break;
        }
        if stream.is_none() {
            match tokio::net::TcpStream::connect(&config.addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stream = Some(s);
                }
                Err(e) => {
                    if errors.len() < 5 {
                        errors.push(format!("till {till}: connect: {e}"));
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        n += 1;
        body.clear();
        write_body(&mut body, &config, till, n, &mut rng);
        request.clear();
        let _ = std::io::Write::write_fmt(
            &mut request,
            format_args!(
                "POST {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {token}\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                config.addr,
                body.len()
            ),
        );
        request.extend_from_slice(body.as_bytes());
        let Some(conn) = stream.as_mut() else {
            continue;
        };
        // Paced: timed from the scheduled send, so a ticket that waited behind a slow one is
        // charged for the wait (no coordinated omission).
        let started = match (slot.as_mut(), config.pace) {
            (Some(at), Some(every)) => {
                let scheduled = *at;
                *at += every;
                scheduled
            }
            _ => Instant::now(),
        };
        let result = exchange(conn, &request, &mut buf).await;
        let latency = started.elapsed();
        let status = match result {
            Ok((status, body_at)) => {
                if !(200..300).contains(&status) && errors.len() < 5 {
                    errors.push(format!(
                        "till {till}: {status} {}",
                        String::from_utf8_lossy(&buf[body_at..])
                    ));
                }
                status
            }
            Err(e) => {
                if errors.len() < 5 {
                    errors.push(format!("till {till}: {e}"));
                }
                stream = None;
                0
            }
        };
        samples.push(Sample {
            start_us: started.saturating_duration_since(config.epoch).as_micros() as u64,
            latency_us: latency.as_micros().min(u128::from(u32::MAX)) as u32,
            status,
        });
    }
    (samples, errors)
}

/// Send one request, read one response (`Content-Length` framed): (status, body offset).
async fn exchange(
    stream: &mut tokio::net::TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<(u16, usize)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    stream.write_all(request).await?;
    buf.clear();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the response head",
            ));
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("non-UTF-8 head"))?;
    let status: u16 = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status code"))?;
    let length: usize = head
        .split("\r\n")
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .ok_or_else(|| bad("no content-length"))?;
    while buf.len() < head_end + length {
        if stream.read_buf(buf).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed inside the response body",
            ));
        }
    }
    Ok((status, head_end))
}

// ---------------------------------------------------------------------------------------
// Figures of a window of requests.

#[derive(Clone, Copy, Debug)]
struct Stats {
    seconds: f64,
    /// Requests sent in the window, answered.
    requests: usize,
    ok: usize,
    non_2xx: usize,
    server_errors: usize,
    socket_errors: usize,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

impl Stats {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.seconds
    }
}

/// Requests sent in `[from_us, to_us)`: the 2xx rate, errors and latency percentiles of every
/// answered request.
fn stats(samples: &[Sample], from_us: u64, to_us: u64) -> Stats {
    let lo = samples.partition_point(|s| s.start_us < from_us);
    let hi = samples.partition_point(|s| s.start_us < to_us);
    let window = &samples[lo..hi.max(lo)];
    let mut latencies: Vec<u32> = window
        .iter()
        .filter(|s| s.status != 0)
        .map(|s| s.latency_us)
        .collect();
    latencies.sort_unstable();
    let ms = |p: f64| common::percentile_sorted(&latencies, p) / 1000.0;
    Stats {
        seconds: to_us.saturating_sub(from_us) as f64 / 1e6,
        requests: window.len(),
        ok: window
            .iter()
            .filter(|s| (200..300).contains(&s.status))
            .count(),
        non_2xx: window
            .iter()
            .filter(|s| s.status != 0 && !(200..300).contains(&s.status))
            .count(),
        server_errors: window.iter().filter(|s| s.status >= 500).count(),
        socket_errors: window.iter().filter(|s| s.status == 0).count(),
        p50_ms: ms(50.0),
        p90_ms: ms(90.0),
        p99_ms: ms(99.0),
        p999_ms: ms(99.9),
        max_ms: latencies
            .last()
            .map_or(f64::NAN, |m| f64::from(*m) / 1000.0),
    }
}

fn describe(who: &str, s: &Stats, lines: usize) -> String {
    format!(
        "{who}: {:.0}/s ({:.0} lines/s), p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, \
         max {:.1} ms, non-2xx {}, 5xx {}, socket errors {} ({} requests in {:.2} s)",
        s.rate(),
        s.rate() * lines as f64,
        s.p50_ms,
        s.p90_ms,
        s.p99_ms,
        s.p999_ms,
        s.max_ms,
        s.non_2xx,
        s.server_errors,
        s.socket_errors,
        s.requests,
        s.seconds
    )
}

// ---------------------------------------------------------------------------------------
// Store, agents and central.

struct Durations {
    warm: Duration,
    measure: Duration,
    /// Busy run: the tills sell this long after their warm-up before the link comes up.
    lead_in: Duration,
    tail: Duration,
}

fn secs(base: f64, min: f64) -> Duration {
    Duration::from_secs_f64((base * scale()).max(min))
}

struct Setup {
    scratch: Scratch,
    template: PathBuf,
    token_file: PathBuf,
    seeded: u64,
    /// Wall clock (unix ms) after the last seeded fact: younger facts are the tills'.
    seed_done_ms: i64,
    snapshot_rows: u64,
    snapshot_file: String,
    server: https::HttpsServer,
    broker: broker::Broker,
    load: LoadTemplate,
    durations: Durations,
}

/// A config for `relais run`; with `sync`, the link to central (Mosquitto, HTTPS snapshots).
fn config_text(setup: &Setup, id: &str, data_dir: &Path, sync: bool) -> String {
    let mut text = format!(
        "[agent]\nid = \"{id}\"\ndata_dir = \"{}\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n\
         token_file = \"{}\"\nrate_limit_per_client = 0\n\n[disk]\nlow_free_mb = 0\n",
        data_dir.display(),
        setup.token_file.display()
    );
    if sync {
        let _ = write!(
            text,
            "\n[sync]\nbroker = \"{}\"\nack = \"central\"\nsnapshot_url = \"{}\"\nca_file = \"{}\"\n",
            setup.broker.url(),
            setup.server.url(relais::central::snapshot::MANIFEST_FILE),
            setup.server.ca_file.display()
        );
    }
    text
}

/// Copy the store's template files (replica + seeded outbox) into a fresh data directory.
fn fresh_data_dir(setup: &Setup, name: &str) -> PathBuf {
    let dir = setup.scratch.sub(name);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    for entry in std::fs::read_dir(&setup.template).expect("template dir") {
        let entry = entry.expect("template entry");
        std::fs::copy(entry.path(), data.join(entry.file_name())).expect("copy template file");
    }
    dir
}

fn start_agent(setup: &Setup, dir: &Path, id: &str) -> (Agent, PathBuf) {
    let config = dir.join("relais.toml");
    std::fs::write(&config, config_text(setup, id, &dir.join("data"), false))
        .expect("write config");
    let agent = Agent::try_start(&config)
        .unwrap_or_else(|(status, stderr)| panic!("relais did not start ({status:?}):\n{stderr}"));
    (agent, config)
}

fn client() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

fn health(client: &reqwest::blocking::Client, agent: &Agent, token: &str) -> serde_json::Value {
    client
        .get(agent.url("/v1/health"))
        .bearer_auth(token)
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .expect("GET /v1/health")
}

fn products_version(health: &serde_json::Value) -> Option<u64> {
    health["replica"]
        .as_array()?
        .iter()
        .find(|s| s["stream"] == "products")?["version"]
        .as_u64()
}

fn sighup(pid: u32) {
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP failed");
}

// ---------------------------------------------------------------------------------------
// Quiet store.

struct Quiet {
    tickets: Stats,
    movements: Stats,
    /// The same 5-line tickets naming a customer by card, earning points.
    customer_tickets: Stats,
    tickets_load: LoadOut,
    movements_load: LoadOut,
    customer_tickets_load: LoadOut,
}

/// One measured load: warm-up, then `measure`; the stats of the requests sent after warm-up.
fn measured_load(setup: &Setup, agent: &Agent, kind: Kind, tag: String) -> (Stats, LoadOut) {
    let d = &setup.durations;
    let start = Instant::now();
    let load = Load::start(
        &setup.load,
        kind,
        tag,
        agent,
        Some(start + d.warm + d.measure),
        None,
    );
    let out = load.join();
    let from = setup.load.us(start + d.warm);
    let to = setup.load.us(start + d.warm + d.measure);
    (stats(&out.samples, from, to), out)
}

fn quiet_run(setup: &Setup, run: usize) -> Quiet {
    let dir = fresh_data_dir(setup, &format!("run{run}-quiet"));
    let (agent, _) = start_agent(setup, &dir, &format!("bench-store/tickets-{run}-quiet"));
    agent.wait_healthy(&client(), Some(&setup.load.tokens[0]));
    // Order alternating between runs; the customer tickets always between the other two, so
    // both ticket kinds are measured as near in time as the plain ticket and the movement.
    let order = if run.is_multiple_of(2) {
        [Kind::Ticket, Kind::CustomerTicket, Kind::Movement]
    } else {
        [Kind::Movement, Kind::CustomerTicket, Kind::Ticket]
    };
    let mut tickets = None;
    let mut movements = None;
    let mut customer_tickets = None;
    for (step, kind) in order.into_iter().enumerate() {
        let tag = format!("r{run}q{step}");
        let (s, out) = measured_load(setup, &agent, kind, tag);
        let who = match kind {
            Kind::Ticket => "quiet tickets  ",
            Kind::CustomerTicket => "quiet customer tickets",
            Kind::Movement => "quiet movements",
        };
        eprintln!(
            "  run {run} {}; CPU per request: agent {:.0} µs, client {:.1} µs",
            describe(who, &s, kind.lines()),
            out.agent_cpu_us_per_request(),
            out.client_cpu_us_per_request()
        );
        for e in out.errors.iter().take(3) {
            eprintln!("    error: {e}");
        }
        match kind {
            Kind::Ticket => tickets = Some((s, out)),
            Kind::CustomerTicket => customer_tickets = Some((s, out)),
            Kind::Movement => movements = Some((s, out)),
        }
    }
    let exit = agent.terminate();
    assert!(
        exit.is_some_and(|s| s.success()),
        "relais exit on SIGTERM: {exit:?}"
    );
    let (tickets, tickets_load) = tickets.expect("tickets measured");
    let (movements, movements_load) = movements.expect("movements measured");
    let (customer_tickets, customer_tickets_load) =
        customer_tickets.expect("customer tickets measured");
    Quiet {
        tickets,
        movements,
        customer_tickets,
        tickets_load,
        movements_load,
        customer_tickets_load,
    }
}

// ---------------------------------------------------------------------------------------
// Sync: drain + import, with or without tills.

/// When each thing was seen (seconds since the bench's epoch). Starts: the first poll that
/// saw it (at or after the fact); ends: `*_seen` the first poll that saw it done, `*_last_running`
/// the last poll that saw it still running (before the fact).
#[derive(Clone, Copy, Debug, Default)]
struct Timeline {
    /// The tills' load started (busy run).
    load_start: f64,
    hup: f64,
    connected: f64,
    refetch: f64,
    downloaded: f64,
    imported_seen: f64,
    imported_last_running: f64,
    drained_seen: f64,
    drained_last_running: f64,
    /// Events acknowledged by central when the seeded ones were drained (seeded + live).
    delivered_at_drained: u64,
    polls: usize,
    /// The slowest `/v1/health` answer while polling (ms): the timeline's resolution.
    slowest_poll_ms: f64,
}

impl Timeline {
    fn import_s(&self) -> f64 {
        self.imported_seen - self.refetch
    }
    fn drain_s(&self) -> f64 {
        self.drained_seen - self.connected
    }
    /// Both in progress, conservatively: from the later start to the earlier end.
    fn both(&self) -> (f64, f64) {
        (
            self.connected.max(self.refetch),
            self.imported_last_running.min(self.drained_last_running),
        )
    }
    /// Either in progress.
    fn any(&self) -> (f64, f64) {
        (self.connected, self.imported_seen.max(self.drained_seen))
    }
}

/// CPU seconds used so far by the agent, `relaisctl ingest` and this bench process (the
/// tills' client and the HTTPS server), sampled at each health poll.
#[derive(Clone, Copy, Debug)]
struct CpuSample {
    at: f64,
    agent: f64,
    ingest: f64,
    bench: f64,
}

/// Cores used by (agent, ingest, bench) between the first sample at or after `from` and the
/// last one at or before `to`.
fn cores(samples: &[CpuSample], from: f64, to: f64) -> (f64, f64, f64) {
    let first = samples.iter().find(|s| s.at >= from);
    let last = samples.iter().rev().find(|s| s.at <= to);
    match (first, last) {
        (Some(a), Some(b)) if b.at > a.at => {
            let dt = b.at - a.at;
            (
                (b.agent - a.agent) / dt,
                (b.ingest - a.ingest) / dt,
                (b.bench - a.bench) / dt,
            )
        }
        _ => (f64::NAN, f64::NAN, f64::NAN),
    }
}

struct SyncRun {
    cpu: Vec<CpuSample>,
    timeline: Timeline,
    /// The tills' load (busy run only).
    load: Option<LoadOut>,
    sink_events: u64,
    expected_in_sink: u64,
}

/// The tills beside a sync run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tills {
    /// None: the import's and the drain's own limits.
    Off,
    /// Each till on a fixed schedule ([`PACED_TICKETS_PER_S_PER_TILL`]): the judged load.
    Paced,
    /// Closed loop, as fast as they are answered: what is left for tills on a saturated box.
    Saturating,
}

impl Tills {
    fn name(self) -> &'static str {
        match self {
            Tills::Off => "untilled",
            Tills::Paced => "busy",
            Tills::Saturating => "saturated",
        }
    }
}

fn sync_run(setup: &Setup, run: usize, tills: Tills) -> SyncRun {
    let with_tills = tills != Tills::Off;
    let name = tills.name();
    let dir = fresh_data_dir(setup, &format!("run{run}-{name}"));
    let id = format!("bench-store/tickets-{run}-{name}");
    let sink = dir.join("sink.db");
    // Central's ingest runs at central, not on the store's box: here it shares the 2 cores, so it
    // runs at the lowest priority to leave the box to the agent, as in production.
    let mut ingest = Command::new("nice")
        .args(["-n", "19", RELAISCTL])
        .args(["ingest", "--broker", &setup.broker.url(), "--json"])
        .arg("--client-id")
        .arg(format!("bench-ingest-{run}-{name}"))
        .arg("--sink")
        .arg(&sink)
        .stdout(Stdio::null())
        .spawn()
        .expect("relaisctl ingest");
    let ingest_started = Instant::now();
    let (agent, config) = start_agent(setup, &dir, &id);
    let http = client();
    let token = setup.load.tokens[0].clone();
    agent.wait_healthy(&http, Some(&token));
    let v0 = products_version(&health(&http, &agent, &token));
    assert_eq!(v0, Some(1), "products at version 1 before the refetch");
    // The ingest subscribes before the agent connects (as sync_drain waits).
    if let Some(wait) = Duration::from_millis(300).checked_sub(ingest_started.elapsed()) {
        std::thread::sleep(wait);
    }
    setup.server.clear_log();

    let epoch = setup.load.epoch;
    let at = |i: Instant| i.saturating_duration_since(epoch).as_secs_f64();
    let mut cpu = Vec::new();
    let load_start = at(Instant::now());
    let load = with_tills.then(|| {
        let pace = (tills == Tills::Paced)
            .then(|| Duration::from_secs_f64(1.0 / PACED_TICKETS_PER_S_PER_TILL));
        let load = Load::start(
            &setup.load,
            Kind::Ticket,
            format!("r{run}{name}"),
            &agent,
            None,
            pace,
        );
        std::thread::sleep(setup.durations.warm + setup.durations.lead_in);
        load
    });

    // The link comes up: [sync] added, SIGHUP.
    std::fs::write(&config, config_text(setup, &id, &dir.join("data"), true))
        .expect("write config");
    let mut t = Timeline {
        load_start,
        hup: at(Instant::now()),
        ..Timeline::default()
    };
    sighup(agent.pid());
    let mut connected = false;
    let mut publish: Option<Child> = None;
    let mut published = false;
    let (mut refetch, mut downloaded, mut imported, mut drained) = (false, false, false, false);
    let deadline = Instant::now() + Duration::from_secs(600);
    while !(imported && drained) {
        assert!(
            Instant::now() < deadline,
            "{name} run {run}: drain or import not done in 600 s: {t:?}"
        );
        let asked = Instant::now();
        let h = health(&http, &agent, &token);
        t.slowest_poll_ms = t.slowest_poll_ms.max(asked.elapsed().as_secs_f64() * 1e3);
        let now = at(Instant::now());
        cpu.push(CpuSample {
            at: now,
            agent: agent.cpu_seconds(),
            ingest: agent::cpu_seconds(ingest.id()),
            bench: agent::cpu_seconds(std::process::id()),
        });
        t.polls += 1;
        let log = setup.server.requests();
        if !connected && h["sync"]["connected"] == true {
            connected = true;
            t.connected = now;
        }
        let delivered = h["sync"]["delivered_since_start"].as_u64().unwrap_or(0);
        if connected && !published && publish.is_none() && delivered > 0 {
            publish = Some(
                Command::new(RELAISCTL)
                    .args(["publish", "--broker", &setup.broker.url(), "--agent", &id])
                    .args(["--refetch", "products"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("relaisctl publish"),
            );
        }
        if let Some(child) = publish.as_mut()
            && let Some(status) = child.try_wait().expect("wait for relaisctl publish")
        {
            let out = publish.take().expect("publish child").wait_with_output();
            assert!(
                status.success(),
                "relaisctl publish --refetch failed: {status}: {:?}",
                out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            );
            published = true;
        }
        if !refetch
            && log
                .iter()
                .any(|l| l.path == relais::central::snapshot::MANIFEST_FILE)
        {
            refetch = true;
            t.refetch = now;
        }
        if !downloaded
            && log
                .iter()
                .any(|l| l.path == setup.snapshot_file && l.status == 200)
        {
            downloaded = true;
            t.downloaded = now;
        }
        if !imported {
            if products_version(&h) == Some(SNAPSHOT_VERSION) {
                imported = true;
                t.imported_seen = now;
            } else {
                t.imported_last_running = now;
            }
        }
        if connected && !drained {
            let oldest = h["outbox"]["store_fact"]["oldest_unsent_ms"].as_i64();
            if oldest.is_none_or(|ms| ms > setup.seed_done_ms) {
                drained = true;
                t.drained_seen = now;
                t.delivered_at_drained = delivered;
            } else {
                t.drained_last_running = now;
            }
        } else if !connected {
            t.drained_last_running = now;
        }
        std::thread::sleep(POLL);
    }
    let load = load.map(|load| {
        std::thread::sleep(setup.durations.tail);
        load.finish()
    });
    // Every fact reaches central: wait for the live tickets' deliveries.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let h = health(&http, &agent, &token);
        if h["outbox"]["store_fact"]["depth"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name} run {run}: outbox not empty 120 s after the load: {}",
            h["outbox"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let exit = agent.terminate();
    assert!(
        exit.is_some_and(|s| s.success()),
        "relais exit on SIGTERM: {exit:?}"
    );
    let _ = ingest.kill();
    let _ = ingest.wait();
    let conn = rusqlite::Connection::open(&sink).expect("open the sink");
    let sink_events: i64 = conn
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .expect("count the sink");
    let created = load
        .as_ref()
        .map_or(0, |l| l.samples.iter().filter(|s| s.status == 201).count());
    SyncRun {
        cpu,
        timeline: t,
        load,
        sink_events: sink_events.max(0) as u64,
        expected_in_sink: setup.seeded + created as u64,
    }
}

/// Where the slowest tickets of a busy run were, against its timeline (seconds from the
/// refetch's start): what a reader needs to tell queueing from a stall.
fn slowest(samples: &[Sample], t: &Timeline) -> String {
    let mut worst: Vec<&Sample> = samples.iter().filter(|s| s.status != 0).collect();
    worst.sort_by_key(|s| std::cmp::Reverse(s.latency_us));
    let rel = |s: f64| s - t.refetch;
    let mut out = format!(
        "timeline from the refetch: link up {:+.2} s, downloaded {:+.2} s, drained {:+.2} s, \
         imported {:+.2} s; slowest tickets (sent at, latency):",
        rel(t.connected),
        rel(t.downloaded),
        rel(t.drained_seen),
        rel(t.imported_seen)
    );
    for s in worst.iter().take(5) {
        let _ = write!(
            out,
            " {:+.2} s {:.0} ms;",
            rel(s.start_us as f64 / 1e6),
            f64::from(s.latency_us) / 1e3
        );
    }
    out
}

// ---------------------------------------------------------------------------------------
// Setup and report.

fn seed(outbox: &Path, n: u64, products: u64) {
    let (handle, writer) = relais::outbox::OutboxWriter::start(
        outbox,
        relais::outbox::writer::WriterSettings {
            group_commit_max: 4096,
            telemetry_quota_rows: 0,
            low_free_mb: 0,
            seq_floor: 0,
            checkpoint_pages: relais::outbox::writer::DEFAULT_CHECKPOINT_PAGES,
            prune: Default::default(),
        },
    )
    .expect("outbox");
    handle
        .append_pipelined_blocking((0..n).map(|i| {
            AppendRequest::fact(StoreFact::stock_movement(
                MovementKind::Sale,
                &demo::product_sku(i.wrapping_mul(7919) % products),
                1,
            ))
        }))
        .expect("seed");
    drop(handle);
    writer.join();
}

fn setup() -> Setup {
    let products = scaled(100_000, 2_000);
    let pool = scaled(10_000, 1_000).min(products) as usize;
    let snapshot_products = scaled(1_000_000, 2_000);
    let seeded = scaled(100_000, 2_000);
    let durations = Durations {
        warm: secs(2.0, 0.5),
        measure: secs(10.0, 1.0),
        lead_in: secs(2.0, 0.5),
        tail: Duration::from_millis(500),
    };
    eprintln!(
        "# tickets: {products} products, {pool} GTINs sold, {TILLS} tills × {LINES}-line tickets; \
         {seeded} queued facts, {snapshot_products}-product snapshot; {:.1} s per measurement \
         (+{:.1} s warm-up), {} runs; binary {}",
        durations.measure.as_secs_f64(),
        durations.warm.as_secs_f64(),
        runs(),
        agent::BIN
    );
    let scratch = Scratch::new("tickets");
    let template = scratch.sub("template");
    let gen_dir = scratch.sub("generated");
    let (store, gen_t) = common::time(|| {
        demo::generate(
            &gen_dir,
            StoreSize {
                products,
                customers: *CUSTOMERS.get_or_init(|| scaled(1_000, 100)),
            },
            &CardHasher::new(&[7u8; 32]),
            relais::storage::now_unix_ms(),
        )
        .expect("generate store")
    });
    // The fleet's card key, so the agent hashes the tills' cards as the generator did.
    let card_key = template.join("card-hash.key");
    std::fs::write(&card_key, [7u8; 32]).expect("write the card key");
    std::fs::set_permissions(&card_key, {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::Permissions::from_mode(0o600)
    })
    .expect("chmod the card key");
    let replica = template.join(relais::storage::REPLICA_FILE);
    let (_, import_t) = common::time(|| {
        for (stream, file) in &store.files {
            import_file(&replica, *stream, file, None, Progress::Quiet)
                .unwrap_or_else(|e| panic!("import {stream}: {e}"));
        }
    });
    let (_, seed_t) = common::time(|| seed(&template.join("outbox.db"), seeded, products));
    // The seeded facts' wall clock is before this; the tills' facts after.
    std::thread::sleep(Duration::from_millis(5));
    let seed_done_ms = relais::storage::now_unix_ms();

    // Central's snapshot set: `relaisctl snapshot build`, served over HTTPS.
    let served = scratch.sub("served");
    let input = gen_dir.join("snapshot-products.ndjson");
    demo::write_products(&input, snapshot_products).expect("write snapshot products");
    let snapshot_rows = std::fs::read(&input)
        .expect("read snapshot products")
        .iter()
        .filter(|b| **b == b'\n')
        .count() as u64;
    let (status, build_t) = common::time(|| {
        Command::new(RELAISCTL)
            .args([
                "snapshot",
                "build",
                "--version",
                &SNAPSHOT_VERSION.to_string(),
            ])
            .arg("--out")
            .arg(&served)
            .arg(format!("products={}", input.display()))
            .stdout(Stdio::null())
            .status()
            .expect("relaisctl snapshot build")
    });
    assert!(status.success(), "relaisctl snapshot build: {status}");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(served.join(relais::central::snapshot::MANIFEST_FILE)).expect("manifest"),
    )
    .expect("manifest JSON");
    let snapshot_file = manifest["streams"][0]["file"]
        .as_str()
        .expect("manifest file")
        .to_string();
    let snapshot_bytes = manifest["streams"][0]["bytes"].as_u64().unwrap_or(0);
    let _ = std::fs::remove_dir_all(&gen_dir);
    eprintln!(
        "# store generated in {:.1} s, imported in {:.1} s, {seeded} facts seeded in {:.1} s; \
         snapshot {snapshot_file} ({snapshot_rows} rows, {snapshot_bytes} bytes) built in {:.1} s",
        gen_t.as_secs_f64(),
        import_t.as_secs_f64(),
        seed_t.as_secs_f64(),
        build_t.as_secs_f64()
    );

    // A token per till.
    let tokens: Vec<String> = (0..TILLS)
        .map(|i| format!("bench-till-{i:02}-token-0123456789abcdef"))
        .collect();
    let token_file = scratch.path().join("api-tokens");
    {
        use std::os::unix::fs::PermissionsExt;
        let text: String = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| format!("till-{:02} {t}\n", i + 1))
            .collect();
        std::fs::write(&token_file, text).expect("write the token file");
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod 600 the token file");
    }
    let mut rng = Rng::new(23);
    let mut gtins = Vec::with_capacity(pool);
    let mut seen = std::collections::HashSet::new();
    while gtins.len() < pool {
        let i = rng.below(products);
        if let Some(gtin) = demo::product_gtin(i)
            && seen.insert(i)
        {
            gtins.push(gtin.to_string());
        }
    }
    let server = https::HttpsServer::start(&served);
    let broker = broker::Broker::start(broker::BrokerOptions::default());
    Setup {
        scratch,
        template,
        token_file,
        seeded,
        seed_done_ms,
        snapshot_rows,
        snapshot_file,
        server,
        broker,
        load: LoadTemplate {
            tokens: Arc::new(tokens),
            gtins: Arc::new(gtins),
            epoch: Instant::now(),
        },
        durations,
    }
}

fn main() {
    if !Path::new(broker::MOSQUITTO).exists() {
        eprintln!(
            "tickets: mosquitto is not installed (apt-get install mosquitto mosquitto-clients); skipped"
        );
        return;
    }
    let load_start = common::load_average();
    eprintln!("# load average at start: {load_start:.2}");
    let setup = setup();
    let runs = runs();
    let mut quiet = Vec::new();
    let mut busy = Vec::new();
    let mut saturated = Vec::new();
    let mut untilled = Vec::new();
    for run in 0..runs {
        eprintln!("run {run}: load average {:.2}", common::load_average());
        quiet.push(quiet_run(&setup, run));
        // The sync runs take turns in order.
        let order = match run % 3 {
            0 => [Tills::Paced, Tills::Off, Tills::Saturating],
            1 => [Tills::Off, Tills::Saturating, Tills::Paced],
            _ => [Tills::Saturating, Tills::Paced, Tills::Off],
        };
        for tills in order {
            let r = sync_run(&setup, run, tills);
            let t = &r.timeline;
            let who = format!("{:9}", tills.name());
            eprintln!(
                "  run {run} {who}: drain {} facts in {:.2} s ({:.0}/s; {} acknowledged by then), \
                 import {} rows in {:.2} s (download {:.2} s), both in progress for {:.2} s; \
                 {} health polls (slowest {:.0} ms); sink {} / {} expected",
                setup.seeded,
                t.drain_s(),
                setup.seeded as f64 / t.drain_s(),
                t.delivered_at_drained,
                setup.snapshot_rows,
                t.import_s(),
                t.downloaded - t.refetch,
                t.both().1 - t.both().0,
                t.polls,
                t.slowest_poll_ms,
                r.sink_events,
                r.expected_in_sink
            );
            let (bf, bt) = t.both();
            let (agent_cores, ingest_cores, bench_cores) = cores(&r.cpu, bf, bt);
            eprintln!(
                "  run {run} {who}: while both were in progress, cores used: agent {agent_cores:.2}, \
                 ingest {ingest_cores:.2}, bench (tills + HTTPS server) {bench_cores:.2}"
            );
            if let Some(load) = &r.load {
                let us = |s: f64| (s * 1e6).max(0.0) as u64;
                let (from, to) = t.both();
                let lead_from = t.load_start + setup.durations.warm.as_secs_f64();
                eprintln!(
                    "  run {run} {}",
                    describe(
                        "busy, lead-in  ",
                        &stats(&load.samples, us(lead_from), us(t.hup)),
                        LINES
                    )
                );
                eprintln!(
                    "  run {run} {}",
                    describe(
                        "busy, both     ",
                        &stats(&load.samples, us(from), us(to)),
                        LINES
                    )
                );
                let (afrom, ato) = t.any();
                eprintln!(
                    "  run {run} {}",
                    describe(
                        "busy, either   ",
                        &stats(&load.samples, us(afrom), us(ato)),
                        LINES
                    )
                );
                eprintln!("  run {run} {}", slowest(&load.samples, t));
                for e in load.errors.iter().take(3) {
                    eprintln!("    error: {e}");
                }
            }
            match tills {
                Tills::Paced => busy.push(r),
                Tills::Saturating => saturated.push(r),
                Tills::Off => untilled.push(r),
            }
        }
    }
    let load_end = common::load_average();
    eprintln!("# load average at end: {load_end:.2}");
    report(
        &setup,
        &quiet,
        &busy,
        &saturated,
        &untilled,
        (load_start, load_end),
    );
}

fn report(
    setup: &Setup,
    quiet: &[Quiet],
    busy: &[SyncRun],
    saturated: &[SyncRun],
    untilled: &[SyncRun],
    (load_start, load_end): (f64, f64),
) {
    let med = |v: Vec<f64>| median(&v);
    let base = serde_json::json!({
        "tills": TILLS, "lines_per_ticket": LINES, "client": "bench (2 threads, tokio)",
        "auth": "bearer", "load_average_start": load_start, "load_average_end": load_end,
    });
    let extra = |more: serde_json::Value| {
        let mut v = base.clone();
        if let (Some(map), serde_json::Value::Object(more)) = (v.as_object_mut(), more) {
            map.extend(more);
        }
        v
    };
    // Quiet store.
    let tickets = med(quiet.iter().map(|q| q.tickets.rate()).collect());
    let movements = med(quiet.iter().map(|q| q.movements.rate()).collect());
    let lines = tickets * LINES as f64;
    let t_pct = |f: fn(&Stats) -> f64| med(quiet.iter().map(|q| f(&q.tickets)).collect());
    let m_pct = |f: fn(&Stats) -> f64| med(quiet.iter().map(|q| f(&q.movements)).collect());
    let client_cpu = med(quiet
        .iter()
        .map(|q| q.tickets_load.client_cpu_us_per_request())
        .collect());
    let agent_cpu = med(quiet
        .iter()
        .map(|q| q.tickets_load.agent_cpu_us_per_request())
        .collect());
    let m_client_cpu = med(quiet
        .iter()
        .map(|q| q.movements_load.client_cpu_us_per_request())
        .collect());
    let m_agent_cpu = med(quiet
        .iter()
        .map(|q| q.movements_load.agent_cpu_us_per_request())
        .collect());
    let quiet_non_2xx: usize = quiet
        .iter()
        .map(|q| q.tickets.non_2xx + q.movements.non_2xx + q.customer_tickets.non_2xx)
        .sum();
    let quiet_socket: usize = quiet
        .iter()
        .map(|q| {
            q.tickets.socket_errors + q.movements.socket_errors + q.customer_tickets.socket_errors
        })
        .sum();
    let measure_s = setup.durations.measure.as_secs_f64();
    eprintln!(
        "median, quiet store: {tickets:.0} tickets/s = {lines:.0} lines/s vs {movements:.0} one-line \
         movements/s (lines/s ÷ movements/s = {:.2}); tickets p50 {:.2} ms, p99 {:.2} ms, p99.9 \
         {:.2} ms (movements p50 {:.2}, p99 {:.2} ms); non-2xx {quiet_non_2xx}, socket errors \
         {quiet_socket} ({}); CPU per request: agent {agent_cpu:.0} µs per ticket, {m_agent_cpu:.0} \
         µs per movement; client {client_cpu:.1} / {m_client_cpu:.1} µs",
        lines / movements,
        t_pct(|s| s.p50_ms),
        t_pct(|s| s.p99_ms),
        t_pct(|s| s.p999_ms),
        m_pct(|s| s.p50_ms),
        m_pct(|s| s.p99_ms),
        pass_str(quiet_non_2xx == 0 && quiet_socket == 0)
    );
    let q = |more: serde_json::Value| {
        let mut v = extra(serde_json::json!({"load": "quiet", "seconds": measure_s}));
        if let (Some(map), serde_json::Value::Object(more)) = (v.as_object_mut(), more) {
            map.extend(more);
        }
        v
    };
    emit(
        BENCH,
        "tickets_per_s",
        tickets,
        Some(movements),
        None,
        None,
        q(serde_json::json!({
            "limit_is": "one-line movements/s, same tills, same run",
            "agent_cpu_us_per_request": agent_cpu, "client_cpu_us_per_request": client_cpu,
        })),
    );
    emit(
        BENCH,
        "lines_per_s",
        lines,
        Some(movements),
        None,
        None,
        q(serde_json::json!({"limit_is": "one-line movements/s, same tills, same run"})),
    );
    type Pick = fn(&Stats) -> f64;
    let percentiles: [(&str, Pick); 4] = [
        ("p50_ms", |s| s.p50_ms),
        ("p90_ms", |s| s.p90_ms),
        ("p99_ms", |s| s.p99_ms),
        ("p999_ms", |s| s.p999_ms),
    ];
    for (metric, f) in percentiles {
        emit(
            BENCH,
            &format!("ticket_{metric}"),
            t_pct(f),
            Some(m_pct(f)),
            None,
            None,
            q(serde_json::json!({"limit_is": "one-line movement latency, same run"})),
        );
    }
    // The same ticket naming a customer by card and earning points in its transaction, beside
    // the plain ticket of the same run (ADR 0021).
    let c_pct = |f: fn(&Stats) -> f64| med(quiet.iter().map(|q| f(&q.customer_tickets)).collect());
    let c_tickets = med(quiet.iter().map(|q| q.customer_tickets.rate()).collect());
    let c_agent_cpu = med(quiet
        .iter()
        .map(|q| q.customer_tickets_load.agent_cpu_us_per_request())
        .collect());
    eprintln!(
        "median, quiet store: {c_tickets:.0} customer tickets/s (card + earn) vs {tickets:.0} plain; \
         p50 {:.2} ms vs {:.2}, p99 {:.2} ms vs {:.2}; agent {c_agent_cpu:.0} µs CPU per customer \
         ticket vs {agent_cpu:.0}",
        c_pct(|s| s.p50_ms),
        t_pct(|s| s.p50_ms),
        c_pct(|s| s.p99_ms),
        t_pct(|s| s.p99_ms),
    );
    let customer = |more: serde_json::Value| {
        let mut v = q(serde_json::json!({
            "limit_is": "the plain 5-line ticket, same tills, same agent, same run",
            "customer": "by loyalty card (hashed, looked up on a reader), points earned in the sale's transaction",
        }));
        if let (Some(map), serde_json::Value::Object(more)) = (v.as_object_mut(), more) {
            map.extend(more);
        }
        v
    };
    emit(
        BENCH,
        "customer_tickets_per_s",
        c_tickets,
        Some(tickets),
        None,
        None,
        customer(serde_json::json!({
            "agent_cpu_us_per_request": c_agent_cpu, "plain_agent_cpu_us_per_request": agent_cpu,
        })),
    );
    for (metric, f) in [("p50_ms", (|s| s.p50_ms) as Pick), ("p99_ms", |s| s.p99_ms)] {
        emit(
            BENCH,
            &format!("customer_ticket_{metric}"),
            c_pct(f),
            Some(t_pct(f)),
            None,
            None,
            customer(serde_json::json!({})),
        );
    }
    emit(
        BENCH,
        "movements_per_s",
        movements,
        None,
        None,
        None,
        q(serde_json::json!({
            "p50_ms": m_pct(|s| s.p50_ms), "p99_ms": m_pct(|s| s.p99_ms),
            "p999_ms": m_pct(|s| s.p999_ms),
            "agent_cpu_us_per_request": m_agent_cpu, "client_cpu_us_per_request": m_client_cpu,
        })),
    );
    emit(
        BENCH,
        "quiet_non_2xx",
        quiet_non_2xx as f64,
        None,
        Some("0 (and 0 socket errors)"),
        Some(quiet_non_2xx == 0 && quiet_socket == 0),
        q(serde_json::json!({"socket_errors": quiet_socket, "summed_over_runs": true})),
    );

    // Busy Saturday.
    let us = |s: f64| (s * 1e6).max(0.0) as u64;
    let window = |r: &SyncRun, w: (f64, f64)| -> Stats {
        stats(
            &r.load.as_ref().expect("busy load").samples,
            us(w.0),
            us(w.1),
        )
    };
    let both: Vec<Stats> = busy.iter().map(|r| window(r, r.timeline.both())).collect();
    let any: Vec<Stats> = busy.iter().map(|r| window(r, r.timeline.any())).collect();
    let whole: Vec<Stats> = busy
        .iter()
        .chain(saturated)
        .map(|r| window(r, (0.0, 1e9)))
        .collect();
    let saturated_both: Vec<Stats> = saturated
        .iter()
        .map(|r| window(r, r.timeline.both()))
        .collect();
    let saturated_p99 = med(saturated_both.iter().map(|s| s.p99_ms).collect());
    let saturated_p50 = med(saturated_both.iter().map(|s| s.p50_ms).collect());
    let saturated_rate = med(saturated_both.iter().map(Stats::rate).collect());
    let busy_p99 = med(both.iter().map(|s| s.p99_ms).collect());
    let busy_p50 = med(both.iter().map(|s| s.p50_ms).collect());
    let busy_rate = med(both.iter().map(Stats::rate).collect());
    let window_s = med(both.iter().map(|s| s.seconds).collect());
    let window_requests: usize = both.iter().map(|s| s.requests).sum();
    let any_p99 = med(any.iter().map(|s| s.p99_ms).collect());
    let any_p50 = med(any.iter().map(|s| s.p50_ms).collect());
    let server_errors: usize = whole.iter().map(|s| s.server_errors).sum();
    let busy_non_2xx: usize = whole.iter().map(|s| s.non_2xx).sum();
    let busy_socket: usize = whole.iter().map(|s| s.socket_errors).sum();
    let quiet_p99 = t_pct(|s| s.p99_ms);
    let quiet_p50 = t_pct(|s| s.p50_ms);
    // A run whose drain ended before the import started has no window: not judged.
    let judged = !both.is_empty() && both.iter().all(|s| s.requests > 0);
    let p99_pass = judged && busy_p99 <= GOAL_P99_MS;
    let import_s = med(busy.iter().map(|r| r.timeline.import_s()).collect());
    let import_limit = med(untilled.iter().map(|r| r.timeline.import_s()).collect());
    let drain_rate = med(busy
        .iter()
        .map(|r| setup.seeded as f64 / r.timeline.drain_s())
        .collect());
    let drain_limit = med(untilled
        .iter()
        .map(|r| setup.seeded as f64 / r.timeline.drain_s())
        .collect());
    let delivered_all = busy
        .iter()
        .chain(saturated)
        .chain(untilled)
        .all(|r| r.sink_events == r.expected_in_sink);
    eprintln!(
        "median, busy Saturday (window with both in progress: {window_s:.2} s, {window_requests} \
         tickets over the runs): tickets p50 {busy_p50:.2} ms, p99 {busy_p99:.2} ms (quiet p50 \
         {quiet_p50:.2}, p99 {quiet_p99:.2} ms; either in progress: p50 {any_p50:.2}, p99 \
         {any_p99:.2} ms), {busy_rate:.0} tickets/s; goal p99 ≤ {GOAL_P99_MS} ms: {}; 5xx \
         {server_errors} (non-2xx {busy_non_2xx}, socket errors {busy_socket}): {}",
        if judged {
            pass_str(p99_pass)
        } else {
            "NOT JUDGED (no window)"
        },
        pass_str(server_errors == 0)
    );
    eprintln!(
        "median, saturating tills (closed loop) in the same window: p50 {saturated_p50:.2} ms, \
         p99 {saturated_p99:.2} ms, {saturated_rate:.0} tickets/s (mean latency = 32 tills ÷ \
         tickets/s: whatever CPU the import and the drain leave)"
    );
    eprintln!(
        "median, under the tickets: import of {} products {import_s:.2} s (no tills: \
         {import_limit:.2} s, ×{:.2}); drain {drain_rate:.0} facts/s (no tills: {drain_limit:.0}/s, \
         ×{:.2}); every fact in central's sink: {}",
        setup.snapshot_rows,
        import_s / import_limit,
        drain_rate / drain_limit,
        pass_str(delivered_all)
    );
    let b = |more: serde_json::Value| {
        let mut v = extra(serde_json::json!({
            "load": "busy", "tills": format!("{TILLS} paced at {PACED_TICKETS_PER_S_PER_TILL} tickets/s each"),
            "snapshot_rows": setup.snapshot_rows, "seeded_facts": setup.seeded,
            "ack": "central", "window_s": window_s, "window_tickets": window_requests,
        }));
        if let (Some(map), serde_json::Value::Object(more)) = (v.as_object_mut(), more) {
            map.extend(more);
        }
        v
    };
    emit(
        BENCH,
        "busy_p99_ms",
        busy_p99,
        Some(quiet_p99),
        Some("<= 20 ms while a snapshot import and an uplink drain are both in progress"),
        judged.then_some(p99_pass),
        b(serde_json::json!({
            "limit_is": "quiet-store ticket p99, same run",
            "p999_ms": med(both.iter().map(|s| s.p999_ms).collect()),
            "max_ms": med(both.iter().map(|s| s.max_ms).collect()),
            "either_in_progress_p99_ms": any_p99,
        })),
    );
    emit(
        BENCH,
        "saturated_busy_p99_ms",
        saturated_p99,
        Some(quiet_p99),
        None,
        None,
        b(serde_json::json!({
            "limit_is": "quiet-store ticket p99, same run",
            "tills": "closed loop", "p50_ms": saturated_p50, "tickets_per_s": saturated_rate,
        })),
    );
    emit(
        BENCH,
        "busy_p50_ms",
        busy_p50,
        Some(quiet_p50),
        None,
        None,
        b(
            serde_json::json!({"limit_is": "quiet-store ticket p50, same run",
            "either_in_progress_p50_ms": any_p50}),
        ),
    );
    emit(
        BENCH,
        "busy_tickets_per_s",
        busy_rate,
        Some(tickets),
        None,
        None,
        b(serde_json::json!({"limit_is": "quiet-store tickets/s, same run"})),
    );
    emit(
        BENCH,
        "busy_5xx",
        server_errors as f64,
        None,
        Some("0"),
        Some(server_errors == 0),
        b(
            serde_json::json!({"non_2xx": busy_non_2xx, "socket_errors": busy_socket,
            "summed_over_runs": true}),
        ),
    );
    emit(
        BENCH,
        "import_s",
        import_s,
        Some(import_limit),
        None,
        None,
        b(
            serde_json::json!({"limit_is": "the same refetch with no tills, same run",
            "from": "manifest request", "to": "new products version in /v1/health"}),
        ),
    );
    emit(
        BENCH,
        "drain_events_per_s",
        drain_rate,
        Some(drain_limit),
        None,
        None,
        b(
            serde_json::json!({"limit_is": "the same drain with no tills, same run",
            "from": "connected", "to": "every seeded fact acknowledged by central"}),
        ),
    );
    emit(
        BENCH,
        "delivered_every_fact",
        f64::from(u8::from(delivered_all)),
        None,
        Some("central's sink holds every seeded fact and every ticket answered 201"),
        Some(delivered_all),
        b(serde_json::json!({
            "sink_events": busy.iter().chain(saturated).chain(untilled)
                .map(|r| r.sink_events).collect::<Vec<_>>(),
            "expected": busy.iter().chain(saturated).chain(untilled)
                .map(|r| r.expected_in_sink).collect::<Vec<_>>(),
        })),
    );
}
