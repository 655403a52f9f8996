#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! The streaming and monitoring side of the local API on the real `relais run`: live reads as
//! Server-Sent Events (`/v1/events`) from scanners on real pseudo-terminals, and Prometheus
//! metrics (`/v1/metrics`).

mod common;

use common::{Agent, Store, gtin14, product, stock};
use serde_json::{Value, json};
use serialport::{SerialPort, TTYPort};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SKU: &str = "SKU-STREAM-1";

/// A serial scanner: the master side of a pseudo-terminal whose slave the agent opens.
struct Scanner {
    master: TTYPort,
    _slave: TTYPort,
}

impl Scanner {
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

    /// Scan codes as a CR-terminated scanner sends them, in one write (as fast as it goes).
    fn scan(&mut self, codes: &[String]) {
        let frames: String = codes.iter().map(|c| format!("{c}\r")).collect();
        self.master.write_all(frames.as_bytes()).unwrap();
        self.master.flush().unwrap();
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

fn device_state(agent: &Agent, device: &str) -> Option<String> {
    agent.health()["devices"]
        .as_array()?
        .iter()
        .find(|d| d["device"] == device)
        .and_then(|d| d["state"].as_str().map(str::to_string))
}

/// A store with one product and serial scanners named `names` (absent until plugged).
fn store_with_scanners(names: &[&str]) -> (Store, String, Vec<PathBuf>) {
    let store = Store::new();
    let gtin = gtin14(400_638_133_393);
    store.import_ok(
        "products",
        "products.ndjson",
        &[product(&gtin, SKU, "Stream test item")],
    );
    store.import_ok("stock", "stock.ndjson", &[stock(SKU, 10)]);
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-profiles");
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(&store.config)
        .unwrap();
    write!(
        config,
        "\n[devices]\nprofiles_dir = \"{}\"\n",
        profiles.display()
    )
    .unwrap();
    let mut links = Vec::new();
    for name in names {
        let link = store.tmp.path().join(name);
        write!(
            config,
            "[[devices.serial]]\nname = \"{name}\"\npath = \"{}\"\nprofile = \"serial-scanner-cr\"\n",
            link.display()
        )
        .unwrap();
        links.push(link);
    }
    (store, gtin, links)
}

/// Start the agent, then plug its scanners (which keeps the pty masters out of the agent's
/// inherited descriptors) and wait until each is connected.
fn start_with_scanners(names: &[&str]) -> (Store, String, Agent, Vec<Scanner>) {
    let (store, gtin, links) = store_with_scanners(names);
    let agent = store.start();
    let scanners: Vec<Scanner> = links.iter().map(|l| Scanner::plug(l)).collect();
    for name in names {
        let id = format!("serial:{name}");
        wait_until(&format!("{id} to be connected"), || {
            (device_state(&agent, &id).as_deref() == Some("connected")).then_some(())
        });
    }
    (store, gtin, agent, scanners)
}

/// One Server-Sent Event as a client assembles it.
#[derive(Debug, Clone)]
struct SseEvent {
    id: Option<u64>,
    event: String,
    data: Value,
}

/// An open `/v1/events` subscription: the agent has subscribed once this exists (the
/// response head has arrived); events are parsed on a thread and read with a timeout.
struct Subscription {
    events: mpsc::Receiver<SseEvent>,
}

impl Subscription {
    fn open(agent: &Agent, query: &str) -> Subscription {
        // No overall timeout: the body of an event stream never ends; `next` bounds each wait.
        let client = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .unwrap();
        let response = client
            .get(agent.url(&format!("/v1/events{query}")))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{:?}",
            response.headers()
        );
        assert_eq!(response.headers()["cache-control"], "no-store");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            let _client = client;
            let mut lines = BufReader::new(response).lines().map_while(Result::ok);
            assert_eq!(
                lines.next().as_deref(),
                Some("retry: 2000"),
                "the stream opens with its reconnection delay"
            );
            let (mut id, mut event, mut data) = (None, String::new(), String::new());
            for line in lines {
                if line.is_empty() {
                    if !event.is_empty() || !data.is_empty() {
                        let parsed = serde_json::from_str(&data).unwrap_or(Value::String(data));
                        let e = SseEvent {
                            id: id.take(),
                            event: std::mem::take(&mut event),
                            data: parsed,
                        };
                        if tx.send(e).is_err() {
                            return;
                        }
                    }
                    data = String::new();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.parse().expect("numeric id"));
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
        });
        Subscription { events }
    }

    fn next(&self, timeout: Duration) -> Option<SseEvent> {
        self.events.recv_timeout(timeout).ok()
    }

    /// The next event of kind `kind`, skipping others (device status changes).
    fn next_of(&self, kind: &str, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let e = self.next(left)?;
            if e.event == kind {
                return Some(e);
            }
        }
    }
}

/// `(name, labels) → value` for every sample; panics on a line that is not
/// `name{label="value",...} number`, `# HELP`, `# TYPE` or empty.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn parse_exposition(text: &str) -> Samples {
    let mut samples = Samples::new();
    let mut typed = BTreeSet::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with("# HELP ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.insert(name.to_string());
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let name = &line[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "no # TYPE before {line:?}");
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let end = loop {
                let (start, c) = chars
                    .next()
                    .unwrap_or_else(|| panic!("open {{ in {line:?}"));
                if c == '}' {
                    break start;
                }
                if c == ',' {
                    continue;
                }
                let eq = body[start..].find("=\"").expect("label=\"") + start;
                let key = body[start..eq].to_string();
                while chars.peek().is_some_and(|(i, _)| *i <= eq + 1) {
                    chars.next();
                }
                let mut value = String::new();
                loop {
                    match chars
                        .next()
                        .unwrap_or_else(|| panic!("open \" in {line:?}"))
                    {
                        (_, '"') => break,
                        (_, '\\') => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c @ ('\\' | '"'))) => value.push(c),
                            other => panic!("bad escape {other:?} in {line:?}"),
                        },
                        (_, c) => value.push(c),
                    }
                }
                assert!(labels.insert(key, value).is_none(), "dup label: {line:?}");
            };
            rest = &body[end + 1..];
        }
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no space before value: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        assert!(
            samples.insert((name.to_string(), labels), value).is_none(),
            "duplicate series: {line:?}"
        );
    }
    samples
}

fn scrape(agent: &Agent) -> Samples {
    let r = agent.http.get(agent.url("/v1/metrics")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; version=0.0.4");
    parse_exposition(&r.text().unwrap())
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sample(samples: &Samples, name: &str, pairs: &[(&str, &str)]) -> Option<f64> {
    samples.get(&(name.to_string(), labels(pairs))).copied()
}

fn series<'a>(
    samples: &'a Samples,
    name: &'a str,
) -> impl Iterator<Item = &'a BTreeMap<String, String>> {
    samples
        .keys()
        .filter(move |(n, _)| n == name)
        .map(|(_, l)| l)
}

#[test]
fn metrics_count_a_movement_in_the_outbox_depth_and_product_requests_by_route_and_status() {
    let (store, gtin, _links) = store_with_scanners(&[]);
    let agent = store.start();
    let before = scrape(&agent);
    let depth = |s: &Samples| sample(s, "relais_outbox_depth", &[("class", "store_fact")]);
    let depth_before = depth(&before).expect("outbox depth of store facts");
    assert_eq!(
        sample(&before, "relais_outbox_depth", &[("class", "telemetry")]),
        Some(0.0)
    );

    assert_eq!(agent.get_json(&format!("/v1/products/{gtin}")).0, 200);
    assert_eq!(
        agent.get_json(&format!("/v1/products/{}", gtin14(123))).0,
        404
    );
    let (status, body) = agent.post_movement(&json!({
        "kind": "sale", "sku": SKU, "qty": 1, "client_key": "metrics-1"
    }));
    assert_eq!(status, 201, "{body}");

    let after = scrape(&agent);
    assert_eq!(depth(&after), Some(depth_before + 1.0));
    let route = "/v1/products/{code}";
    assert_eq!(
        sample(
            &after,
            "relais_http_requests_total",
            &[("route", route), ("status", "200")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            "relais_http_requests_total",
            &[("route", route), ("status", "404")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            "relais_http_requests_total",
            &[("route", "/v1/movements"), ("status", "201")]
        ),
        Some(1.0)
    );
    // Route labels are templates: no barcode ever becomes a label value.
    for l in series(&after, "relais_http_requests_total") {
        assert_eq!(l.keys().collect::<Vec<_>>(), ["route", "status"], "{l:?}");
        assert!(!l["route"].contains(&gtin), "{l:?}");
    }
    assert_eq!(
        sample(
            &after,
            "relais_http_request_duration_seconds_count",
            &[("route", route)]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &after,
            "relais_http_request_duration_seconds_bucket",
            &[("route", route), ("le", "+Inf")]
        ),
        Some(2.0)
    );
    for l in series(&after, "relais_replica_stale") {
        assert_eq!(l.keys().collect::<Vec<_>>(), ["stream"], "{l:?}");
    }
    assert_eq!(
        sample(&after, "relais_replica_stale", &[("stream", "products")]),
        Some(0.0)
    );
    assert_eq!(
        sample(&after, "relais_replica_stale", &[("stream", "prices")]),
        Some(1.0),
        "never loaded"
    );
    assert!(
        sample(
            &after,
            "relais_replica_age_seconds",
            &[("stream", "products")]
        )
        .is_some()
    );
    assert!(
        sample(
            &after,
            "relais_replica_age_seconds",
            &[("stream", "prices")]
        )
        .is_none()
    );
    assert_eq!(sample(&after, "relais_sync_configured", &[]), Some(0.0));
    assert_eq!(
        sample(
            &after,
            "relais_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    for name in [
        "relais_outbox_bytes",
        "relais_outbox_oldest_unsent_age_seconds",
        "relais_outbox_dropped_total",
        "relais_outbox_delivered_total",
    ] {
        let classes: Vec<_> = series(&after, name).map(|l| l["class"].clone()).collect();
        assert_eq!(classes, ["store_fact", "telemetry"], "{name}");
    }
    for name in [
        "relais_outbox_dead_letters",
        "relais_sync_connected",
        "relais_sync_delivered_total",
        "relais_sync_paused_streams",
        "relais_alarms",
        "relais_uptime_seconds",
    ] {
        assert!(sample(&after, name, &[]).is_some(), "{name} missing");
    }
}

#[test]
fn a_scan_on_a_serial_scanner_arrives_on_the_event_stream_decoded() {
    let (_store, gtin, agent, mut scanners) = start_with_scanners(&["till"]);
    let events = Subscription::open(&agent, "");
    let ean13 = gtin.trim_start_matches('0').to_string();
    scanners[0].scan(std::slice::from_ref(&ean13));
    let scan = events
        .next_of("scan", Duration::from_secs(15))
        .expect("the scan on /v1/events");
    assert_eq!(scan.data["kind"], "scan", "{scan:?}");
    assert_eq!(scan.data["device"], "serial:till", "{scan:?}");
    assert_eq!(scan.data["detail"]["data"], ean13.as_str(), "{scan:?}");
    assert_eq!(
        scan.data["detail"]["decoded"]["gtin"],
        gtin.as_str(),
        "{scan:?}"
    );
    assert_eq!(scan.data["detail"]["product"]["sku"], SKU, "{scan:?}");
    assert!(scan.id.is_some_and(|id| id >= 1), "{scan:?}");

    let metrics = scrape(&agent);
    assert_eq!(
        sample(&metrics, "relais_device_up", &[("device", "serial:till")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "relais_device_reads_total",
            &[("device", "serial:till")]
        ),
        Some(1.0)
    );
}

#[test]
fn a_device_filter_keeps_other_devices_reads_off_the_stream() {
    let (_store, gtin, agent, mut scanners) = start_with_scanners(&["till-a", "till-b"]);
    let only_a = Subscription::open(&agent, "?device=till-a");
    let everything = Subscription::open(&agent, "?kind=scan");
    let ean13 = gtin.trim_start_matches('0').to_string();
    scanners[1].scan(std::slice::from_ref(&ean13));
    // B's scan has been published before A's: once `everything` saw A's, `only_a` had its
    // chance to (wrongly) receive B's.
    let first = everything.next_of("scan", Duration::from_secs(15)).unwrap();
    assert_eq!(first.data["device"], "serial:till-b");
    scanners[0].scan(std::slice::from_ref(&ean13));
    let second = everything.next_of("scan", Duration::from_secs(15)).unwrap();
    assert_eq!(second.data["device"], "serial:till-a");
    assert_eq!((first.id, second.id), (Some(1), Some(2)));

    let seen = only_a.next_of("scan", Duration::from_secs(15)).unwrap();
    assert_eq!(seen.data["device"], "serial:till-a", "{seen:?}");
    while let Some(e) = only_a.next(Duration::from_millis(300)) {
        assert_eq!(e.data["device"], "serial:till-a", "{e:?}");
    }

    let (status, body) = agent.get_json("/v1/events?kind=scans");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "kind", "{body}");
}

#[test]
fn a_hundred_subscribers_each_receive_every_one_of_two_hundred_scans_without_a_gap() {
    const SUBSCRIBERS: usize = 100;
    const SCANS: u64 = 200;
    let (_store, _gtin, agent, mut scanners) = start_with_scanners(&["till"]);
    let subscribers: Vec<Subscription> = (0..SUBSCRIBERS)
        .map(|_| Subscription::open(&agent, "?kind=scan"))
        .collect();
    let codes: Vec<String> = (0..SCANS)
        .map(|i| {
            gtin14(400_638_100_000 + i)
                .trim_start_matches('0')
                .to_string()
        })
        .collect();
    scanners[0].scan(&codes);

    let deadline = Instant::now() + Duration::from_secs(120);
    for (n, sub) in subscribers.iter().enumerate() {
        for (i, code) in codes.iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = sub
                .next(left)
                .unwrap_or_else(|| panic!("subscriber {n} got only {i} of {SCANS} scans"));
            assert_eq!(e.event, "scan", "subscriber {n}, event {i}: {e:?}");
            assert_eq!(
                e.id,
                Some(i as u64 + 1),
                "subscriber {n}: gap in ids: {e:?}"
            );
            assert_eq!(
                e.data["detail"]["data"],
                code.as_str(),
                "subscriber {n}: {e:?}"
            );
        }
    }
    // Nothing more (in particular no `lagged`) after the last scan.
    for (n, sub) in subscribers.iter().enumerate() {
        if let Some(e) = sub.next(Duration::from_millis(if n == 0 { 500 } else { 1 })) {
            panic!("subscriber {n}: unexpected {e:?}");
        }
    }
}

/// axum's graceful shutdown waits for every open connection: live streams must end when the
/// agent stops, or an open status page would hold `systemctl stop` until its timeout.
#[test]
fn sigterm_ends_the_agent_even_with_an_event_stream_and_a_live_stream_open() {
    let (store, _gtin, _links) = store_with_scanners(&[]);
    let agent = store.start();
    let _events = Subscription::open(&agent, "");
    let live = agent
        .http
        .get(agent.url("/v1/devices/live"))
        .send()
        .expect("live stream");
    assert!(live.status().is_success());
    let started = std::time::Instant::now();
    let status = agent.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    drop(live);
}
