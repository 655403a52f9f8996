//! `relaisctl ledger run`: the ledger's loop. It applies what the ingest committed, watches
//! every agent's retained `state`, and keeps each online agent's replica at the ledger's
//! figures — deltas while the agent follows, a snapshot (`must_refetch`) when its birth shows a
//! version the ledger did not give it.

use super::db::Db;
use super::downlink::{self, STREAMS};
use super::{LedgerError, apply_ingested, open};
use crate::central::BrokerLogin;
use crate::central::sink::SinkTarget;
use crate::sync::wire::{self, AgentState, RplControl, RplHeartbeat, Topics};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct LedgerOptions {
    pub login: BrokerLogin,
    /// The ingest's database: a SQLite file or a `postgres://` URL.
    pub sink: String,
    pub client_id: String,
    /// Where agents' snapshots are written (`<root>/<store>/<agent>/manifest.json`), served
    /// over HTTPS at `snapshot_base_url`.
    pub snapshot_root: PathBuf,
    pub snapshot_base_url: String,
    /// How often the ledger applies and sends.
    pub interval: Duration,
    /// How often each online agent gets a heartbeat per stream (freshness, ADR 0024).
    pub heartbeat_every: Duration,
    /// Apply facts only; send nothing to agents (another process serves them, or a benchmark).
    pub apply_only: bool,
}

/// Latency from a fact's commit at its agent to the ledger's commit, in 1 ms buckets up to
/// 60 s (the last bucket holds everything slower).
#[derive(Clone, Debug)]
struct Latency {
    buckets: Vec<u64>,
}

impl Latency {
    const TOP_MS: usize = 60_000;

    fn new() -> Latency {
        Latency {
            buckets: vec![0; Latency::TOP_MS + 1],
        }
    }

    fn add(&mut self, ms: i64) {
        let i = usize::try_from(ms.max(0))
            .unwrap_or(usize::MAX)
            .min(Latency::TOP_MS);
        self.buckets[i] += 1;
    }

    fn summary(&self) -> LatencySummary {
        let count: u64 = self.buckets.iter().sum();
        let at = |q: f64| {
            let rank = ((count as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (ms, n) in self.buckets.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return ms as u64;
                }
            }
            Latency::TOP_MS as u64
        };
        LatencySummary {
            count,
            p50: at(0.50),
            p99: at(0.99),
            max: self.buckets.iter().rposition(|n| *n > 0).unwrap_or(0) as u64,
        }
    }
}

/// Medians and tails of the commit → ledger latency (`max` = 60000 means "60 s or more").
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RunReport {
    pub facts_applied: u64,
    pub rejected: u64,
    pub births: u64,
    pub deltas_sent: u64,
    pub rows_sent: u64,
    pub snapshots: u64,
    /// From each fact's commit at its agent to the ledger's commit of it.
    pub commit_to_ledger_ms: LatencySummary,
    pub seconds: f64,
}

enum Incoming {
    Connected,
    State(String, Box<AgentState>),
}

/// What the ledger knows of an agent from its retained `state`.
struct Seen {
    online: bool,
    last_heartbeat: Option<Instant>,
}

pub async fn run(
    options: LedgerOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<RunReport, LedgerError> {
    let started = Instant::now();
    // Opened (and any schema made) before anything else: a wrong --sink fails at once.
    let mut db = Reconnecting::open(&options.sink)?;
    let mut mqtt = options.login.options(&options.client_id)?;
    // Nothing to keep across restarts: births are retained, and the ledger's figures and
    // versions are in its database.
    mqtt.set_clean_start(true);
    let (client, mut eventloop) = AsyncClient::new(mqtt, 1024);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Incoming>(1024);
    let poller = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if tx.send(Incoming::Connected).await.is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    let Some((agent, "state")) = Topics::parse(&topic) else {
                        continue;
                    };
                    match serde_json::from_slice::<AgentState>(&p.payload) {
                        Ok(state) if state.agent == agent => {
                            if tx
                                .send(Incoming::State(agent, Box::new(state)))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        _ => tracing::warn!(%topic, "not an agent state; ignored"),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the ledger lost the broker; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    let mut report = RunReport::default();
    let mut agents: BTreeMap<String, Seen> = BTreeMap::new();
    // Agents to send a snapshot, each with when to try (again).
    let mut stale: BTreeMap<String, Instant> = BTreeMap::new();
    let mut latency = Latency::new();
    let mut tick = tokio::time::interval(options.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            incoming = rx.recv() => match incoming {
                None => break,
                Some(Incoming::Connected) => {
                    let filter = format!("{}/+/+/state", wire::TOPIC_ROOT);
                    if let Err(e) = client.subscribe(filter, QoS::AtLeastOnce).await {
                        tracing::warn!(error = %e, "cannot subscribe to the agents' state");
                    }
                }
                Some(Incoming::State(_, _)) if options.apply_only => {}
                Some(Incoming::State(agent, state)) => {
                    if !downlink::valid_agent(&agent) {
                        tracing::warn!(%agent, "agent id not served by the ledger (STORE/AGENT of plain names)");
                        continue;
                    }
                    let seen = agents.entry(agent.clone()).or_insert(Seen { online: false, last_heartbeat: None });
                    seen.online = state.online;
                    if let Some(birth) = &state.birth {
                        report.births += 1;
                        let ours = db.with(|db| downlink::versions(db, &agent))?;
                        // Unknown while the database is away: a snapshot settles it either way.
                        let differs = ours.is_none_or(|ours| ours.iter().any(|(stream, v)| {
                            let theirs = birth.replica.iter().find(|s| s.stream == *stream).map_or(0, |s| s.version);
                            *v == 0 || theirs != *v
                        }));
                        if differs {
                            stale.insert(agent, Instant::now());
                        }
                    }
                }
            },
            _ = tick.tick() => {
                let Some(applied) = db.with(apply_ingested)? else {
                    continue;
                };
                report.facts_applied += applied.facts;
                report.rejected += applied.rejected;
                for ms in applied.latencies_ms {
                    latency.add(ms);
                }
                if options.apply_only {
                    continue;
                }
                send_all(&client, &mut db, &options, &mut agents, &mut stale, &mut report).await?;
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.commit_to_ledger_ms = latency.summary();
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    poller.abort();
    // A PostgreSQL client closes its connection by blocking on its own runtime.
    tokio::task::block_in_place(move || drop(db));
    Ok(report)
}

/// The ledger's database, opened again after it was lost.
struct Reconnecting {
    db: Option<Db>,
    sink: String,
    /// The sink as logs show it: a URL without its password.
    shown: String,
    /// Failed attempts to open it again since it was lost.
    reopen_failures: u32,
}

impl Reconnecting {
    /// Opened now: a wrong --sink fails at once.
    fn open(sink: &str) -> Result<Reconnecting, LedgerError> {
        let target = SinkTarget::parse(sink)?;
        Ok(Reconnecting {
            db: Some(tokio::task::block_in_place(|| open(sink))?),
            sink: sink.to_owned(),
            shown: target.to_string(),
            reopen_failures: 0,
        })
    }

    /// Run `work` on the database, opening it again first if it was lost. A lost connection
    /// (PostgreSQL down or restarting) is `None`: nothing of that step was committed, and the
    /// next tick tries again; any other error ends the ledger.
    fn with<T>(
        &mut self,
        work: impl FnOnce(&mut Db) -> Result<T, LedgerError>,
    ) -> Result<Option<T>, LedgerError> {
        tokio::task::block_in_place(|| {
            let lost = |e: &LedgerError| match e {
                LedgerError::Db(e) => e.is_connection(),
                LedgerError::Central(crate::central::CentralError::Postgres { .. }) => true,
                _ => false,
            };
            let db = match &mut self.db {
                Some(db) => db,
                None => match open(&self.sink) {
                    Ok(opened) => {
                        tracing::info!(sink = %self.shown, "the ledger's database is back");
                        self.reopen_failures = 0;
                        self.db.insert(opened)
                    }
                    Err(e) if lost(&e) => {
                        // Said at the first failure and every ~10 s at the default tick after.
                        if self.reopen_failures.is_multiple_of(50) {
                            tracing::warn!(sink = %self.shown, error = %e, "the ledger's database is still away; nothing is applied or sent until it is back");
                        }
                        self.reopen_failures = self.reopen_failures.wrapping_add(1);
                        return Ok(None);
                    }
                    Err(e) => return Err(e),
                },
            };
            match work(db) {
                Ok(value) => Ok(Some(value)),
                Err(e) if lost(&e) => {
                    tracing::warn!(sink = %self.shown, error = %e, "the ledger lost its database; trying again at the next tick");
                    self.db = None;
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        })
    }
}

async fn publish<T: Serialize>(client: &AsyncClient, topic: String, message: &T) {
    let payload = serde_json::to_vec(message).unwrap_or_default();
    if let Err(e) = client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
    {
        // The agent's next birth shows a version the ledger did not give it: a snapshot.
        tracing::warn!(error = %e, "cannot publish to an agent");
    }
}

async fn send_all(
    client: &AsyncClient,
    db: &mut Reconnecting,
    options: &LedgerOptions,
    agents: &mut BTreeMap<String, Seen>,
    stale: &mut BTreeMap<String, Instant>,
    report: &mut RunReport,
) -> Result<(), LedgerError> {
    for (agent, seen) in agents.iter_mut().filter(|(_, s)| s.online) {
        let topics = Topics::new(agent);
        if stale.get(agent).is_some_and(|at| *at <= Instant::now()) {
            stale.remove(agent);
            // The database's errors end the step (or the ledger); a snapshot that cannot be
            // written is tried again later.
            let built =
                db.with(
                    |db| match downlink::build_snapshot(db, &options.snapshot_root, agent) {
                        Err(LedgerError::Db(e)) => Err(LedgerError::Db(e)),
                        other => Ok(other),
                    },
                )?;
            let version = match built {
                None => {
                    stale.insert(agent.clone(), Instant::now());
                    return Ok(());
                }
                Some(Ok(version)) => version,
                Some(Err(e)) => {
                    // Tried again at the next tick; the agent keeps its last good figures.
                    tracing::error!(%agent, error = %e, "cannot build the agent's snapshot; trying again in 30 s");
                    stale.insert(agent.clone(), Instant::now() + Duration::from_secs(30));
                    continue;
                }
            };
            report.snapshots += 1;
            let url = format!(
                "{}/{agent}/manifest.json",
                options.snapshot_base_url.trim_end_matches('/')
            );
            tracing::info!(%agent, version, "agent sent to a snapshot");
            for stream in STREAMS {
                let control = RplControl {
                    v: wire::CONTRACT_VERSION,
                    stream,
                    must_refetch: true,
                    manifest_url: Some(url.clone()),
                    reason: Some(format!("the ledger's figures at version {version}")),
                };
                publish(client, topics.rpl(stream), &control).await;
            }
            seen.last_heartbeat = Some(Instant::now());
            continue;
        }
        let Some(deltas) = db.with(|db| downlink::next_deltas(db, agent))? else {
            return Ok(());
        };
        for delta in &deltas {
            report.deltas_sent += 1;
            report.rows_sent += delta.ops.len() as u64;
            publish(client, topics.rpl(delta.stream), delta).await;
        }
        if seen
            .last_heartbeat
            .is_none_or(|at| at.elapsed() >= options.heartbeat_every)
        {
            seen.last_heartbeat = Some(Instant::now());
            let Some(versions) = db.with(|db| downlink::versions(db, agent))? else {
                return Ok(());
            };
            for (stream, version) in versions {
                if version > 0 {
                    let heartbeat = RplHeartbeat {
                        v: wire::CONTRACT_VERSION,
                        stream,
                        current_version: version,
                        at_ms: crate::storage::now_unix_ms(),
                    };
                    publish(client, topics.rpl(stream), &heartbeat).await;
                }
            }
        }
    }
    Ok(())
}
