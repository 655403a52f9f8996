//! `relaisctl simulate fleet`: many agents in one process, each speaking the real contract over
//! its own MQTT connection — retained birth and Will, store facts in event batches with their
//! `fact_seq`, resends until central's `ack`, "store facts through N" reports — so central's side
//! (broker, ingest workers, sink) can be loaded like a chain of stores without running a
//! thousand agent processes (issue 15, item 5).
//!
//! A simulated agent keeps nothing on disk: it measures, per store fact, the time from its
//! commit (when it is made) to central's `ack` for it, which arrives only after the ingest
//! committed it. That is the latency a store feels between recording a sale and central
//! holding it.

use super::{BrokerLogin, CentralError};
use crate::domain::{MovementKind, StoreFact};
use crate::outbox::{Envelope, RetentionClass};
use crate::sync::wire::{
    self, Ack, AgentState, Birth, ConfigState, FactsProgress, OutboxState, Topics,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{LastWill, Packet};
use rumqttc::v5::{AsyncClient, Event};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Clone, Debug)]
pub struct FleetOptions {
    pub login: BrokerLogin,
    pub agents: usize,
    /// Store facts per second per agent.
    pub rate: f64,
    pub duration: Duration,
    /// Agent ids are `{prefix}-{n:05}/till-1`.
    pub prefix: String,
    /// Resend what central has not acknowledged after this long (`sync.ack_timeout`).
    pub ack_timeout: Duration,
    /// After `duration`, how long to wait for the last acks.
    pub drain: Duration,
    /// Facts committed in the first `warmup` (every agent connecting at once) count in the
    /// totals but not in `latency_ms`, which is the steady state; `latency_all_ms` has them.
    pub warmup: Duration,
    /// Store facts each agent holds before it connects, sent at once (a store back online).
    pub backlog: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl LatencyMs {
    fn of(mut samples: Vec<f64>) -> LatencyMs {
        samples.sort_by(f64::total_cmp);
        let pick = |q: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            let at = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[at.min(samples.len() - 1)]
        };
        LatencyMs {
            p50: pick(0.50),
            p90: pick(0.90),
            p99: pick(0.99),
            max: pick(1.0),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct FleetReport {
    pub agents: usize,
    /// Agents whose connection the broker accepted.
    pub connected: u64,
    pub rate_per_agent: f64,
    pub committed: u64,
    pub acked: u64,
    /// Committed but never acknowledged within the drain.
    pub unacked: u64,
    pub resent: u64,
    /// Acknowledged store facts per second over the run.
    pub acked_per_s: f64,
    /// Commit at the (simulated) agent → central's `ack` for it, after the warm-up.
    pub latency_ms: LatencyMs,
    /// The same over every acknowledged fact, the warm-up's included.
    pub latency_all_ms: LatencyMs,
    pub warmup_s: f64,
    pub seconds: f64,
    /// With a backlog: every agent's backlog facts.
    pub backlog_facts: u64,
    /// From the start to central's ack of the last backlog fact (0 if one never was).
    pub backlog_drained_s: f64,
    /// backlog_facts / backlog_drained_s: the rate the ingest took a fleet's backlog at.
    pub backlog_per_s: f64,
}

#[derive(Default)]
struct Totals {
    connected: AtomicU64,
    committed: AtomicU64,
    acked: AtomicU64,
    resent: AtomicU64,
}

/// Run the fleet; returns when every agent stopped (duration + drain) or on `shutdown`.
pub async fn run(options: FleetOptions) -> Result<FleetReport, CentralError> {
    if options.agents == 0 || !(options.rate > 0.0 && options.rate <= 1000.0) {
        return Err(CentralError::Usage(
            "--agents must be at least 1 and --rate between 0 and 1000 events per second".into(),
        ));
    }
    raise_open_files_limit();
    let started = Instant::now();
    let totals = Arc::new(Totals::default());
    let mut tasks = tokio::task::JoinSet::new();
    // Connections arrive spread over a second, as stores would, not in one burst; stores
    // holding a backlog reconnect together (central or the network was down).
    let spread = if options.backlog > 0 {
        0.0
    } else {
        Duration::from_secs(1).as_secs_f64() / options.agents as f64
    };
    for n in 0..options.agents {
        let agent = format!("{}-{n:05}/till-1", options.prefix);
        let mut mqtt = options.login.options(&agent)?;
        // Each simulated agent logs in as itself: the broker's ACL pattern confines it to its
        // own topics exactly as a real one (labs: no password, or the one of --password-file).
        let password = mqtt
            .credentials()
            .map(|login| login.password)
            .unwrap_or_default();
        mqtt.set_credentials(agent.clone(), password);
        mqtt.set_clean_start(true);
        // As the agent: a few batches in flight, not rumqttc's default of 65,535 slots.
        mqtt.set_outgoing_inflight_upper_limit(32);
        let topics = Topics::new(&agent);
        let will = serde_json::to_vec(&AgentState::offline(&agent)).unwrap_or_default();
        mqtt.set_last_will(LastWill::new(
            topics.state(),
            will,
            QoS::AtLeastOnce,
            true,
            None,
        ));
        let totals = Arc::clone(&totals);
        let options = options.clone();
        let delay = Duration::from_secs_f64(spread * n as f64);
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            simulate_agent(agent, mqtt, options, totals).await
        });
    }
    let mut steady: Vec<f64> = Vec::new();
    let mut all: Vec<f64> = Vec::new();
    let mut unacked = 0;
    let mut backlog_drained: Option<Instant> = None;
    let mut backlog_complete = true;
    let warm_until = started + options.warmup;
    while let Some(done) = tasks.join_next().await {
        if let Ok(AgentOutcome {
            latencies,
            unacked: left,
            backlog_drained: drained,
        }) = done
        {
            match drained {
                Some(at) => backlog_drained = backlog_drained.max(Some(at)),
                None => backlog_complete = false,
            }
            for (committed, ms) in latencies {
                all.push(ms);
                if committed >= warm_until {
                    steady.push(ms);
                }
            }
            unacked += left;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let acked = totals.acked.load(Ordering::Relaxed);
    let backlog_facts = options.backlog.saturating_mul(options.agents as u64);
    let backlog_drained_s = match backlog_drained {
        Some(at) if backlog_complete && backlog_facts > 0 => {
            at.duration_since(started).as_secs_f64()
        }
        _ => 0.0,
    };
    Ok(FleetReport {
        agents: options.agents,
        connected: totals.connected.load(Ordering::Relaxed),
        rate_per_agent: options.rate,
        committed: totals.committed.load(Ordering::Relaxed),
        acked,
        unacked,
        resent: totals.resent.load(Ordering::Relaxed),
        acked_per_s: acked as f64 / options.duration.as_secs_f64().max(0.001),
        latency_ms: LatencyMs::of(steady),
        latency_all_ms: LatencyMs::of(all),
        warmup_s: options.warmup.as_secs_f64(),
        seconds,
        backlog_facts,
        backlog_drained_s,
        backlog_per_s: if backlog_drained_s > 0.0 {
            backlog_facts as f64 / backlog_drained_s
        } else {
            0.0
        },
    })
}

/// What one simulated agent saw.
struct AgentOutcome {
    /// Per acknowledged fact: when it was committed, and the ms until central's ack.
    latencies: Vec<(Instant, f64)>,
    /// Facts never acknowledged.
    unacked: u64,
    /// When the last fact of its backlog was acknowledged (now, for an empty backlog).
    backlog_drained: Option<Instant>,
}

/// One simulated agent: its MQTT event loop in a task of its own (so publishing never waits on
/// the loop it needs), its store facts and their acks here.
async fn simulate_agent(
    agent: String,
    mqtt: rumqttc::v5::MqttOptions,
    options: FleetOptions,
    totals: Arc<Totals>,
) -> AgentOutcome {
    let topics = Topics::new(&agent);
    let (client, mut eventloop) = AsyncClient::new(mqtt, 256);
    let (acks_tx, mut acks) = mpsc::channel::<Ack>(64);
    let (connected_tx, mut connected) = mpsc::channel::<()>(4);
    let ack_topic = topics.ack();
    let poller = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = connected_tx.try_send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == ack_topic.as_bytes() => {
                    if let Ok(ack) = serde_json::from_slice::<Ack>(&p.payload) {
                        let _ = acks_tx.send(ack).await;
                    }
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    });
    let epoch = (rand::random::<u32>() % (i32::MAX as u32)).max(1);
    let mut fact_seq: u64 = 0;
    let mut pending: BTreeMap<u64, (Instant, Instant, String)> = BTreeMap::new();
    let mut latencies = Vec::new();
    // The backlog: committed before the connection, sent by the resend that follows CONNACK.
    let created = Instant::now();
    for _ in 0..options.backlog {
        fact_seq += 1;
        pending.insert(
            fact_seq,
            (created, created, envelope_json(&agent, epoch, fact_seq)),
        );
    }
    totals
        .committed
        .fetch_add(options.backlog, Ordering::Relaxed);
    let backlog_last = fact_seq;
    let mut backlog_drained = (backlog_last == 0).then(Instant::now);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / options.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
    let mut last_report = Instant::now() - Duration::from_secs(3600);
    let stop_committing = Instant::now() + options.duration;
    let give_up = stop_committing + options.drain;
    let mut online = false;
    loop {
        let now = Instant::now();
        if now >= give_up || (now >= stop_committing && pending.is_empty() && online) {
            break;
        }
        tokio::select! {
            Some(()) = connected.recv() => {
                online = true;
                totals.connected.fetch_add(1, Ordering::Relaxed);
                // Subscribed before the birth, as the agent does (contract §2).
                let _ = client.subscribe(topics.ack(), QoS::AtLeastOnce).await;
                let birth = birth_state(&agent, epoch, fact_seq);
                let _ = client
                    .publish(topics.state(), QoS::AtLeastOnce, true, birth)
                    .await;
                // A fresh connection: everything unacknowledged goes again, in batches.
                let all: Vec<u64> = pending.keys().copied().collect();
                resend(&client, &topics, &agent, &mut pending, &all).await;
            }
            Some(ack) = acks.recv() => {
                let now = Instant::now();
                for [first, last] in ack.seqs {
                    let settled: Vec<u64> = pending.range(first..=last).map(|(s, _)| *s).collect();
                    for seq in settled {
                        if let Some((committed, _, _)) = pending.remove(&seq) {
                            latencies.push((committed, now.duration_since(committed).as_secs_f64() * 1000.0));
                            totals.acked.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if backlog_drained.is_none()
                        && pending.range(..=backlog_last).next().is_none()
                    {
                        backlog_drained = Some(now);
                    }
                }
            }
            _ = ticker.tick(), if online && Instant::now() < stop_committing => {
                fact_seq += 1;
                let envelope = envelope_json(&agent, epoch, fact_seq);
                let now = Instant::now();
                let batch = batch_json(&agent, std::slice::from_ref(&envelope));
                pending.insert(fact_seq, (now, now, envelope));
                totals.committed.fetch_add(1, Ordering::Relaxed);
                let _ = client.publish(topics.evt(), QoS::AtLeastOnce, false, batch).await;
            }
            _ = housekeeping.tick() => {
                let now = Instant::now();
                let overdue: Vec<u64> = pending
                    .iter()
                    .filter(|(_, (_, sent, _))| now.duration_since(*sent) >= options.ack_timeout)
                    .map(|(seq, _)| *seq)
                    .collect();
                totals.resent.fetch_add(overdue.len() as u64, Ordering::Relaxed);
                resend(&client, &topics, &agent, &mut pending, &overdue).await;
                if online && last_report.elapsed() >= Duration::from_secs(5) {
                    last_report = Instant::now();
                    report_facts(&client, &topics, &agent, epoch, fact_seq).await;
                }
            }
        }
    }
    if online {
        report_facts(&client, &topics, &agent, epoch, fact_seq).await;
    }
    // A clean shutdown: the offline state replaces the retained birth, then DISCONNECT.
    let offline = serde_json::to_vec(&AgentState::offline(&agent)).unwrap_or_default();
    let _ = client
        .publish(topics.state(), QoS::AtLeastOnce, true, offline)
        .await;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), poller).await;
    AgentOutcome {
        latencies,
        unacked: pending.len() as u64,
        backlog_drained,
    }
}

/// "Store facts through N": every seq of a simulated agent is a store fact (no telemetry).
async fn report_facts(
    client: &AsyncClient,
    topics: &Topics,
    agent: &str,
    epoch: u32,
    through: u64,
) {
    let report = FactsProgress {
        v: wire::CONTRACT_VERSION,
        agent: agent.to_owned(),
        epoch,
        through,
        at_seq: through,
        at_ms: crate::storage::now_unix_ms(),
    };
    let payload = serde_json::to_vec(&report).unwrap_or_default();
    let _ = client
        .publish(topics.facts(), QoS::AtLeastOnce, false, payload)
        .await;
}

/// Events of one batch at most when unacknowledged facts go again (the agent's
/// `sync.batch_max_events` default).
const RESEND_BATCH: usize = 1000;

/// Send `seqs` of `pending` again, as the agent does after a reconnect or an ack timeout: in
/// batches, not one message per fact.
async fn resend(
    client: &AsyncClient,
    topics: &Topics,
    agent: &str,
    pending: &mut BTreeMap<u64, (Instant, Instant, String)>,
    seqs: &[u64],
) {
    let now = Instant::now();
    for chunk in seqs.chunks(RESEND_BATCH) {
        let envelopes: Vec<String> = chunk
            .iter()
            .filter_map(|seq| {
                let entry = pending.get_mut(seq)?;
                entry.1 = now;
                Some(entry.2.clone())
            })
            .collect();
        if envelopes.is_empty() {
            continue;
        }
        let batch = batch_json(agent, &envelopes);
        let _ = client
            .publish(topics.evt(), QoS::AtLeastOnce, false, batch)
            .await;
    }
}

/// One store fact (a one-unit sale) as the agent stores it: an envelope whose payload is the
/// shared typed fact.
fn envelope_json(agent: &str, epoch: u32, seq: u64) -> String {
    let fact = StoreFact::stock_movement(MovementKind::Sale, &format!("SKU-{}", seq % 50), 1);
    let payload = fact
        .payload_json()
        .ok()
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or(serde_json::Value::Null);
    let envelope = Envelope {
        id: uuid::Uuid::now_v7(),
        agent: agent.to_owned(),
        seq,
        boot: 1,
        wall_ms: crate::storage::now_unix_ms(),
        mono_ns: crate::outbox::monotonic_ns(),
        event_type: fact.event_type().to_owned(),
        schema: 1,
        class: RetentionClass::StoreFact,
        fact_seq: Some(seq),
        fact_epoch: Some(epoch),
        payload,
    };
    serde_json::to_string(&envelope).unwrap_or_default()
}

/// An event batch around stored envelopes, as the agent's uplink writes it (no re-encoding).
fn batch_json(agent: &str, envelopes: &[String]) -> String {
    let agent = serde_json::to_string(agent).unwrap_or_default();
    format!(
        "{{\"v\":{},\"agent\":{agent},\"events\":[{}]}}",
        wire::CONTRACT_VERSION,
        envelopes.join(",")
    )
}

fn birth_state(agent: &str, epoch: u32, last_fact_seq: u64) -> Vec<u8> {
    let state = AgentState {
        v: wire::CONTRACT_VERSION,
        agent: agent.to_owned(),
        online: true,
        at_ms: crate::storage::now_unix_ms(),
        birth: Some(Birth {
            software: format!("{}-simulated", env!("CARGO_PKG_VERSION")),
            boot: 1,
            config: ConfigState {
                version: 0,
                hash: String::new(),
            },
            replica: Vec::new(),
            outbox: OutboxState {
                store_fact_depth: 0,
                telemetry_depth: 0,
                dead_letter_depth: 0,
                oldest_store_fact_age_s: 0,
                last_seq: last_fact_seq,
                last_fact_seq,
                fact_epoch: epoch,
            },
            devices: Vec::new(),
            paused_streams: Vec::new(),
            alarms: Vec::new(),
        }),
    };
    serde_json::to_vec(&state).unwrap_or_default()
}

/// A thousand connections need more descriptors than a login shell's usual 1,024.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let Some(max) = limit.maximum
        && limit.current.is_some_and(|current| current < max)
    {
        let _ = setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(max),
                maximum: Some(max),
            },
        );
    }
}
