#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark harness: a panic is a failed run
//! Config push to applied on a fleet: the real `relaisctl config push --key … --agents-file …`
//! against a real Mosquitto, and N simulated agents (100 at scale 1.0) in this process, each a
//! rumqttc MQTT v5 client doing what the agent's fleet link does with a `cfg/desired` document:
//! verify it against the pinned ops key (`fleet::verify_config`), merge it over the local file
//! and validate the result (`config::layers::merge`), store it durably (`pending.json`, then
//! renamed to the known-good `config.json`), and publish a retained `ConfigReport` (applied,
//! effective hash = sha256 of `config.to_toml()`) on `cfg/reported`.
//!
//! Per agent: the time from the push's start (just before `relaisctl` is spawned) to its report
//! arriving at a `central` subscriber of `relais/v1/+/+/cfg/reported`.
//!
//! Limit measured in the same run: the same N QoS 1 retained publishes of a document-sized
//! payload from one fresh MQTT connection in this process, each simulated agent echoing it at
//! once (retained, QoS 1), timed the same way: what the broker and the MQTT round trips cost,
//! without a process start, signing, verification, validation or storage.

#[path = "../tests/common/broker.rs"]
mod broker;
mod common;

use common::{Scratch, emit, median, percentile_sorted, runs, scaled};
use relais::config::AgentId;
use relais::config::layers::{self, RemoteLayer};
use relais::fleet::{self, ConfigReport, ConfigStatus};
use relais::sync::wire::Topics;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

const RELAISCTL: &str = env!("CARGO_BIN_EXE_relaisctl");
/// Longest wait for a whole push (relaisctl's own `--timeout`) or a limit round.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);
/// Topics of the limit round, inside each agent's own subtree (the ACL allows nothing else).
const PING: &str = "bench/ping";
const PONG: &str = "bench/pong";

fn options(client_id: &str, username: &str, port: u16) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_start(true);
    options.set_max_packet_size(Some(1 << 20));
    options.set_connection_timeout(10);
    options.set_credentials(username, "");
    options
}

/// One simulated agent, as its running configuration knows it: id, local file, pinned-key file
/// and `<data_dir>/fleet`.
struct AgentCtx {
    id: AgentId,
    topics: Topics,
    file: PathBuf,
    keys_file: PathBuf,
    fleet_dir: PathBuf,
}

/// What an agent tells the bench about each document it handled.
struct Handled {
    version: u64,
    received: Instant,
    verify: Duration,
    merge: Duration,
    persist: Duration,
    report_bytes: usize,
}

/// What the `central` observer saw.
enum Seen {
    Report {
        agent: String,
        version: u64,
        status: ConfigStatus,
        at: Instant,
    },
    Pong {
        agent: String,
        nonce: u64,
        at: Instant,
    },
}

enum Inbound {
    Desired(Vec<u8>, Instant),
    Ping(Vec<u8>, Instant),
}

/// The fleet link's `on_desired` for a config document, without `Running::apply` (there are no
/// subsystems to restart here): the same files read, the same checks, the same durable writes.
/// Returns the report and, when applied, the new version in effect.
fn on_desired(
    ctx: &AgentCtx,
    current: u64,
    bytes: &[u8],
    times: &mut [Duration; 3],
) -> Option<(ConfigReport, u64)> {
    let report = |version: u64, status, reasons: Vec<String>, effective, hash: String, sources| {
        ConfigReport {
            v: fleet::DOCUMENT_VERSION,
            agent: ctx.id.to_string(),
            version,
            status,
            reasons,
            effective_version: effective,
            effective_hash: hash,
            source_of_keys: sources,
            at: fleet::format_time(SystemTime::now()),
        }
    };
    let t0 = Instant::now();
    // Like the real agent: the pinned keys are read from their file at each document.
    let keys = fleet::read_public_keys(&ctx.keys_file).expect("pinned keys");
    let claimed = fleet::SignedDocument::from_json(bytes).map_or(0, |d| d.version);
    let verified = fleet::verify_config(bytes, &keys, &ctx.id, SystemTime::now());
    times[0] = t0.elapsed();
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            let r = report(
                claimed,
                ConfigStatus::Rejected,
                vec![e.to_string()],
                current,
                String::new(),
                None,
            );
            return Some((r, current));
        }
    };
    let version = verified.version;
    if version == current {
        return None; // the retained document again
    }
    if version < current {
        let why = format!("version {version} is older than version {current} in effect");
        let r = report(
            version,
            ConfigStatus::Rejected,
            vec![why],
            current,
            String::new(),
            None,
        );
        return Some((r, current));
    }
    let t1 = Instant::now();
    // … and so is the local file, merged under the remote layer and validated.
    let text = std::fs::read_to_string(&ctx.file).expect("local config");
    let layer = RemoteLayer {
        version,
        body: verified.body,
    };
    let layered = match layers::merge(&text, &ctx.file, Some(&layer)) {
        Ok(l) => l,
        Err(e) => {
            let r = report(
                version,
                ConfigStatus::Rejected,
                vec![e.to_string()],
                current,
                String::new(),
                None,
            );
            return Some((r, current));
        }
    };
    let hash = relais::profiles::sha256_hex(layered.config.to_toml().as_bytes());
    let sources = layered
        .sources
        .iter()
        .map(|(k, s)| (k.clone(), s.to_string()))
        .collect();
    times[1] = t1.elapsed();
    // Stored on probation, then promoted at once: this document leaves `[sync]` as it was.
    let t2 = Instant::now();
    let dir = &ctx.fleet_dir;
    std::fs::create_dir_all(dir).expect("fleet dir");
    relais::storage::write_file_atomically(&dir.join("pending.json"), bytes, 0o600)
        .expect("pending.json");
    std::fs::rename(dir.join("pending.json"), dir.join("config.json")).expect("promote");
    relais::storage::fsync_dir(dir);
    times[2] = t2.elapsed();
    let r = report(
        version,
        ConfigStatus::Applied,
        Vec::new(),
        version,
        hash,
        Some(sources),
    );
    Some((r, version))
}

/// Start one simulated agent; `ready` fires once its subscriptions are acknowledged.
fn spawn_agent(
    index: usize,
    ctx: AgentCtx,
    port: u16,
    ready: mpsc::UnboundedSender<usize>,
    handled: mpsc::UnboundedSender<Handled>,
    pinged: mpsc::UnboundedSender<Instant>,
) {
    let ctx = Arc::new(ctx);
    let id = ctx.id.to_string();
    let (client, mut eventloop) = AsyncClient::new(options(&id, &id, port), 16);
    let (tx, mut rx) = mpsc::unbounded_channel::<Inbound>();
    // The session: keeps the connection polled, like the agent's sync task.
    let desired = ctx.topics.cfg_desired();
    let ping = format!("{}/{PING}", ctx.topics.base());
    let filters = vec![
        Filter::new(desired.clone(), QoS::AtLeastOnce),
        Filter::new(ping.clone(), QoS::AtLeastOnce),
    ];
    let sub = client.clone();
    tokio::spawn(async move {
        sub.subscribe_many(filters).await.expect("subscribe");
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready.send(index);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let at = Instant::now();
                    let message = if p.topic.as_ref() == desired.as_bytes() {
                        Inbound::Desired(p.payload.to_vec(), at)
                    } else if p.topic.as_ref() == ping.as_bytes() {
                        Inbound::Ping(p.payload.to_vec(), at)
                    } else {
                        continue;
                    };
                    if tx.send(message).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("agent {index} lost its connection: {e}"),
            }
        }
    });
    // The agent's main loop: one document at a time, in order.
    tokio::spawn(async move {
        let mut current = 0u64;
        let reported = ctx.topics.cfg_reported();
        let pong = format!("{}/{PONG}", ctx.topics.base());
        while let Some(message) = rx.recv().await {
            match message {
                Inbound::Ping(payload, received) => {
                    client
                        .publish(pong.clone(), QoS::AtLeastOnce, true, payload)
                        .await
                        .expect("pong");
                    let _ = pinged.send(received);
                }
                Inbound::Desired(bytes, received) => {
                    let c = Arc::clone(&ctx);
                    // A blocking thread, like each real agent's own box: the file reads, fsyncs
                    // and CPU work of N agents overlap as far as this machine allows.
                    let (outcome, times) = tokio::task::spawn_blocking(move || {
                        let mut times = [Duration::ZERO; 3];
                        (on_desired(&c, current, &bytes, &mut times), times)
                    })
                    .await
                    .expect("on_desired");
                    let Some((report, now_current)) = outcome else {
                        continue;
                    };
                    current = now_current;
                    let payload = serde_json::to_vec(&report).expect("report");
                    let _ = handled.send(Handled {
                        version: report.version,
                        received,
                        verify: times[0],
                        merge: times[1],
                        persist: times[2],
                        report_bytes: payload.len(),
                    });
                    client
                        .publish(reported.clone(), QoS::AtLeastOnce, true, payload)
                        .await
                        .expect("report");
                }
            }
        }
    });
}

/// Central's view: every agent's `cfg/reported` and `bench/pong`.
async fn spawn_observer(port: u16) -> mpsc::UnboundedReceiver<Seen> {
    let (client, mut eventloop) = AsyncClient::new(options("bench-observer", "central", port), 16);
    client
        .subscribe_many([
            Filter::new("relais/v1/+/+/cfg/reported", QoS::AtLeastOnce),
            Filter::new(format!("relais/v1/+/+/{PONG}"), QoS::AtLeastOnce),
        ])
        .await
        .expect("subscribe");
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        let mut ready = Some(ready_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let at = Instant::now();
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    let Some((agent, tail)) = Topics::parse(&topic) else {
                        continue;
                    };
                    let seen = if tail == "cfg/reported" {
                        let Ok(r) = serde_json::from_slice::<ConfigReport>(&p.payload) else {
                            continue;
                        };
                        Seen::Report {
                            agent,
                            version: r.version,
                            status: r.status,
                            at,
                        }
                    } else if tail == PONG {
                        let v: serde_json::Value =
                            serde_json::from_slice(&p.payload).unwrap_or_default();
                        let Some(nonce) = v["nonce"].as_u64() else {
                            continue;
                        };
                        Seen::Pong { agent, nonce, at }
                    } else {
                        continue;
                    };
                    if tx.send(seen).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("the observer lost its connection: {e}"),
            }
        }
    });
    ready_rx.await.expect("observer subscribed");
    rx
}

/// Per-agent latencies of one round, and its totals.
struct Round {
    /// Seconds from the start to each agent's answer, sorted.
    latencies: Vec<f64>,
    /// Seconds from the start until every answer arrived and the publisher was done.
    total: f64,
    /// Seconds from the start until the first and the last agent received its message.
    first_delivery: f64,
    last_delivery: f64,
}

impl Round {
    fn median(&self) -> f64 {
        percentile_sorted(&self.latencies, 50.0)
    }
    fn p99(&self) -> f64 {
        percentile_sorted(&self.latencies, 99.0)
    }
    fn max(&self) -> f64 {
        self.latencies.last().copied().unwrap_or(f64::NAN)
    }
}

/// Wait until every agent in `agents` has an entry from `pick`, or the round times out.
async fn collect(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    agents: &[String],
    deadline: Instant,
    mut pick: impl FnMut(Seen) -> Option<(String, Instant)>,
) -> HashMap<String, Instant> {
    let mut got: HashMap<String, Instant> = HashMap::new();
    while got.len() < agents.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, seen.recv()).await {
            Ok(Some(s)) => {
                if let Some((agent, at)) = pick(s) {
                    got.entry(agent).or_insert(at);
                }
            }
            Ok(None) => panic!("the observer stopped"),
            Err(_) => break,
        }
    }
    got
}

struct PushRun {
    round: Round,
    relaisctl_wall: f64,
    relaisctl_exit: Option<i32>,
    relaisctl_applied: usize,
    handled: Vec<Handled>,
}

/// One `relaisctl config push` of `version` to every agent.
async fn push_round(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    handled: &mut mpsc::UnboundedReceiver<Handled>,
    agents: &[String],
    broker_url: &str,
    files: &Files,
    version: u64,
) -> PushRun {
    let mut command = tokio::process::Command::new(RELAISCTL);
    command
        .args(["config", "push", "--broker", broker_url, "--agents-file"])
        .arg(&files.agents_file)
        .arg("--key")
        .arg(&files.key_file)
        .args(["--version", &version.to_string()])
        .arg(&files.remote)
        .args(["--json", "--timeout", "60s"])
        .kill_on_drop(true);
    let start = Instant::now();
    let child = tokio::spawn(async move {
        let out = command.output().await.expect("run relaisctl config push");
        (out, start.elapsed())
    });
    let reports = collect(seen, agents, start + ROUND_TIMEOUT, |s| match s {
        Seen::Report {
            agent,
            version: v,
            status,
            at,
        } if v == version => {
            assert_eq!(status, ConfigStatus::Applied, "{agent} version {v}");
            Some((agent, at))
        }
        _ => None,
    })
    .await;
    let (out, wall) = child.await.expect("relaisctl task");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let results: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "relaisctl config push --json printed no JSON array ({e}); exit {:?}\nstdout: {stdout}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let relaisctl_applied = results
        .iter()
        .filter(|r| r["outcome"] == "reported" && r["report"]["status"] == "applied")
        .count();
    let total = reports
        .values()
        .map(|at| at.duration_since(start))
        .max()
        .unwrap_or(ROUND_TIMEOUT)
        .max(wall)
        .as_secs_f64();
    assert_eq!(
        reports.len(),
        agents.len(),
        "reports of version {version} seen by the observer"
    );
    let mut done = Vec::new();
    while let Ok(h) = handled.try_recv() {
        if h.version == version {
            done.push(h);
        }
    }
    let (first_delivery, last_delivery) = delivery_span(start, done.iter().map(|h| h.received));
    let mut latencies: Vec<f64> = reports
        .values()
        .map(|at| at.duration_since(start).as_secs_f64())
        .collect();
    latencies.sort_by(f64::total_cmp);
    PushRun {
        round: Round {
            latencies,
            total,
            first_delivery,
            last_delivery,
        },
        relaisctl_wall: wall.as_secs_f64(),
        relaisctl_exit: out.status.code(),
        relaisctl_applied,
        handled: done,
    }
}

/// The limit: N document-sized publishes (QoS 1, retained) from one fresh connection, echoed.
async fn limit_round(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    pinged: &mut mpsc::UnboundedReceiver<Instant>,
    agents: &[String],
    port: u16,
    nonce: u64,
    payload_bytes: usize,
) -> Round {
    let n = agents.len();
    let start = Instant::now();
    let (client, mut eventloop) = AsyncClient::new(
        options(&format!("bench-limit-{nonce}"), "central", port),
        n + 16,
    );
    let head = format!("{{\"nonce\":{nonce},\"pad\":\"");
    let pad = "x".repeat(payload_bytes.saturating_sub(head.len() + 2).max(1));
    let payload = format!("{head}{pad}\"}}").into_bytes();
    for agent in agents {
        client
            .publish(
                format!("{}/{PING}", Topics::new(agent).base()),
                QoS::AtLeastOnce,
                true,
                payload.clone(),
            )
            .await
            .expect("queue a publish");
    }
    let publisher = tokio::spawn(async move {
        let mut acked = 0usize;
        while acked < n {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("the limit publisher lost its connection: {e}"),
            }
        }
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
        start.elapsed()
    });
    let pongs = collect(seen, agents, start + ROUND_TIMEOUT, |s| match s {
        Seen::Pong {
            agent,
            nonce: got,
            at,
        } if got == nonce => Some((agent, at)),
        _ => None,
    })
    .await;
    let published = publisher.await.expect("limit publisher");
    assert_eq!(pongs.len(), n, "echoes of limit round {nonce}");
    let mut received = Vec::new();
    while let Ok(at) = pinged.try_recv() {
        received.push(at);
    }
    let (first_delivery, last_delivery) = delivery_span(start, received.into_iter());
    let mut latencies: Vec<f64> = pongs
        .values()
        .map(|at| at.duration_since(start).as_secs_f64())
        .collect();
    latencies.sort_by(f64::total_cmp);
    let total = latencies
        .last()
        .copied()
        .unwrap_or(f64::NAN)
        .max(published.as_secs_f64());
    Round {
        latencies,
        total,
        first_delivery,
        last_delivery,
    }
}

/// Seconds from `start` to the first and the last of `times`.
fn delivery_span(start: Instant, times: impl Iterator<Item = Instant>) -> (f64, f64) {
    times
        .map(|at| at.duration_since(start).as_secs_f64())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), t| {
            (lo.min(t), hi.max(t))
        })
}

fn median_us(values: impl Iterator<Item = Duration>) -> f64 {
    let v: Vec<f64> = values.map(|d| d.as_secs_f64() * 1e6).collect();
    median(&v)
}

fn main() {
    if !Path::new(broker::MOSQUITTO).exists() {
        eprintln!(
            "fleet_push: mosquitto is not installed (apt-get install mosquitto mosquitto-clients); skipped"
        );
        return;
    }
    let n = scaled(100, 5) as usize;
    let scratch = Scratch::new("fleet-push");
    let broker = broker::Broker::start(broker::BrokerOptions::default());

    // Ops: a fresh key, as `relaisctl keygen` writes it (mode 0600, or relaisctl refuses it).
    let (key, pem) = fleet::SigningKey::generate().expect("ops key");
    let key_file = scratch.path().join("ops.key");
    relais::storage::write_file_atomically(&key_file, pem.as_bytes(), 0o600).expect("ops.key");
    let pub_file = scratch.path().join("ops.pub");
    std::fs::write(&pub_file, format!("{}\n", key.public_key().to_line())).expect("ops.pub");

    // The fleet: agents `store-0000/till-1` …, each with a small local file pinning the key.
    let mut agents = Vec::with_capacity(n);
    let mut contexts = Vec::with_capacity(n);
    for i in 0..n {
        let id: AgentId = format!("store-{i:04}/till-1").parse().expect("agent id");
        let dir = scratch.sub(&format!("agent-{i:04}"));
        let file = dir.join("relais.toml");
        std::fs::write(
            &file,
            format!(
                "[agent]\nid = \"{id}\"\ndata_dir = \"{}\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n\n\
                 [sync]\nbroker = \"{}\"\n\n[fleet]\nops_public_keys_file = \"{}\"\n",
                dir.join("data").display(),
                broker.url(),
                pub_file.display()
            ),
        )
        .expect("local config");
        // What the agent's startup validated and keeps as its running configuration.
        let text = std::fs::read_to_string(&file).expect("local config");
        let running = relais::config::Config::from_toml_str(&text, &file).expect("valid file");
        agents.push(id.to_string());
        contexts.push(AgentCtx {
            topics: Topics::new(&id.to_string()),
            id,
            file,
            keys_file: running.fleet.ops_public_keys_file.expect("pinned"),
            fleet_dir: running.agent.data_dir.join("fleet"),
        });
    }
    let agents_file = scratch.path().join("stores.txt");
    std::fs::write(&agents_file, agents.join("\n") + "\n").expect("agents file");
    let remote = scratch.path().join("remote.toml");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let files = Files {
        agents_file,
        key_file,
        remote,
    };
    runtime.block_on(fleet(&broker, contexts, agents, &files, &key));
}

struct Files {
    agents_file: PathBuf,
    key_file: PathBuf,
    remote: PathBuf,
}

fn remote_settings(run: usize) -> String {
    format!(
        "[api]\nrate_limit_per_client = 50\n\n[loyalty]\noffline_burn_cap = {}\n",
        7 + run
    )
}

async fn fleet(
    broker: &broker::Broker,
    contexts: Vec<AgentCtx>,
    agents: Vec<String>,
    files: &Files,
    key: &fleet::SigningKey,
) {
    let n = agents.len();
    let mut seen = spawn_observer(broker.port).await;
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (handled_tx, mut handled_rx) = mpsc::unbounded_channel();
    let (pinged_tx, mut pinged_rx) = mpsc::unbounded_channel();
    let connect_start = Instant::now();
    for (i, ctx) in contexts.into_iter().enumerate() {
        spawn_agent(
            i,
            ctx,
            broker.port,
            ready_tx.clone(),
            handled_tx.clone(),
            pinged_tx.clone(),
        );
    }
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(30), ready_rx.recv())
            .await
            .expect("every simulated agent subscribed within 30 s");
    }
    eprintln!(
        "  {n} simulated agents connected and subscribed in {:.2} s",
        connect_start.elapsed().as_secs_f64()
    );

    let mut pushes = Vec::new();
    let mut limits = Vec::new();
    for run in 0..runs() {
        let version = run as u64 + 1;
        std::fs::write(&files.remote, remote_settings(run)).expect("remote.toml");
        let push = push_round(
            &mut seen,
            &mut handled_rx,
            &agents,
            &broker.url(),
            files,
            version,
        )
        .await;
        assert_eq!(
            push.relaisctl_exit,
            Some(0),
            "relaisctl config push exit status (0: every agent applied)"
        );
        assert_eq!(push.relaisctl_applied, n, "agents relaisctl saw apply");
        // The limit's payload: as large as one signed document of this push.
        let draft = fleet::Draft::config(
            fleet::Audience::Agent(agents[0].parse().expect("agent id")),
            version,
            remote_settings(run),
            SystemTime::now(),
        );
        let doc_bytes = fleet::sign(&draft, key).expect("sign").to_json().len();
        let nonce = run as u64;
        let limit = limit_round(
            &mut seen,
            &mut pinged_rx,
            &agents,
            broker.port,
            nonce,
            doc_bytes,
        )
        .await;
        let h = &push.handled;
        let (p, l) = (&push.round, &limit);
        eprintln!(
            "  run {run}: push v{version} to applied: median {:.3} s, p99 {:.3} s, max {:.3} s, \
             total {:.3} s; documents delivered {:.3}..{:.3} s; relaisctl {:.3} s, exit {:?}, \
             {} applied",
            p.median(),
            p.p99(),
            p.max(),
            p.total,
            p.first_delivery,
            p.last_delivery,
            push.relaisctl_wall,
            push.relaisctl_exit,
            push.relaisctl_applied,
        );
        eprintln!(
            "  run {run}: limit (publish + echo): median {:.3} s, p99 {:.3} s, max {:.3} s, \
             total {:.3} s; delivered {:.3}..{:.3} s",
            l.median(),
            l.p99(),
            l.max(),
            l.total,
            l.first_delivery,
            l.last_delivery,
        );
        eprintln!(
            "  run {run}: per agent (median): verify {:.0} µs, merge + validate {:.0} µs, \
             store {:.0} µs; document {doc_bytes} B, report {} B",
            median_us(h.iter().map(|h| h.verify)),
            median_us(h.iter().map(|h| h.merge)),
            median_us(h.iter().map(|h| h.persist)),
            h.first().map_or(0, |h| h.report_bytes),
        );
        pushes.push(push);
        limits.push(limit);
    }

    let of_push = |f: &dyn Fn(&PushRun) -> f64| median(&pushes.iter().map(f).collect::<Vec<_>>());
    let of_limit = |f: &dyn Fn(&Round) -> f64| median(&limits.iter().map(f).collect::<Vec<_>>());
    let median_s = of_push(&|p| p.round.median());
    let p99_s = of_push(&|p| p.round.p99());
    let max_s = of_push(&|p| p.round.max());
    let total_s = of_push(&|p| p.round.total);
    let l_median = of_limit(&|l| l.median());
    let l_p99 = of_limit(&|l| l.p99());
    let l_max = of_limit(&|l| l.max());
    let l_total = of_limit(&|l| l.total);
    let applied = pushes
        .iter()
        .map(|p| p.relaisctl_applied)
        .min()
        .unwrap_or(0);
    let per_agent = |f: &dyn Fn(&Handled) -> Duration| {
        median_us(pushes.iter().flat_map(|p| p.handled.iter()).map(f))
    };
    eprintln!(
        "fleet push to applied, {n} agents (median of {} runs): median {median_s:.3} s, \
         p99 {p99_s:.3} s, max {max_s:.3} s, total {total_s:.3} s; limit (publish + echo): \
         median {l_median:.3} s, p99 {l_p99:.3} s, total {l_total:.3} s; ratio median {:.2}, \
         p99 {:.2}",
        pushes.len(),
        median_s / l_median,
        p99_s / l_p99
    );
    let summary = serde_json::json!({
        "agents": n, "median_s": median_s, "p99_s": p99_s, "max_s": max_s,
        "total_s": total_s, "applied": applied,
        "limit_median_s": l_median, "limit_p99_s": l_p99, "limit_max_s": l_max,
        "limit_total_s": l_total,
    });
    for (metric, value, limit) in [
        ("median_s", median_s, l_median),
        ("p99_s", p99_s, l_p99),
        ("max_s", max_s, l_max),
        ("total_s", total_s, l_total),
    ] {
        emit(
            "fleet_push",
            metric,
            value,
            Some(limit),
            None,
            None,
            summary.clone(),
        );
    }
    let all_applied = pushes
        .iter()
        .all(|p| p.relaisctl_exit == Some(0) && p.relaisctl_applied == n);
    emit(
        "fleet_push",
        "relaisctl_wall_s",
        of_push(&|p| p.relaisctl_wall),
        None,
        Some("exit 0, every agent applied"),
        Some(all_applied),
        serde_json::json!({
            "agents": n,
            "applied": applied,
            "exit_status": pushes.iter().map(|p| p.relaisctl_exit).collect::<Vec<_>>(),
            "first_delivery_s": of_push(&|p| p.round.first_delivery),
            "last_delivery_s": of_push(&|p| p.round.last_delivery),
            "limit_first_delivery_s": of_limit(&|l| l.first_delivery),
            "limit_last_delivery_s": of_limit(&|l| l.last_delivery),
            "agent_verify_us": per_agent(&|h| h.verify),
            "agent_merge_validate_us": per_agent(&|h| h.merge),
            "agent_store_us": per_agent(&|h| h.persist),
        }),
    );
}
