//! The reference consumer: subscribes to every agent's `evt`, deduplicates on event id into a
//! sink (SQLite or PostgreSQL, `central::sink`), and only then acknowledges — to the broker
//! (PUBACK, manual) and to the agent
//! (`ack`, the end-to-end acknowledgment). A crash of the ingest before its commit means the
//! broker redelivers; after it, the duplicate is absorbed by the primary key.

use super::sink::{Message, Sink, SinkTarget};
use super::{BrokerLogin, CentralError};
use crate::sync::wire::{self, Ack, EventBatch, FactsProgress, Topics};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use serde::Serialize;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct IngestOptions {
    pub login: BrokerLogin,
    /// Where the events land: a SQLite file (created if missing) or a PostgreSQL database.
    pub sink: SinkTarget,
    /// MQTT client id; the session persists under it, so a restarted ingest gets what the
    /// broker queued meanwhile.
    pub client_id: String,
    /// Send the end-to-end `ack` to agents after each commit.
    pub send_acks: bool,
    /// Share the agents' topics with the other workers of this group (MQTT v5 shared
    /// subscriptions, `$share/<group>/…`): the broker gives each message to one of them.
    pub share_group: Option<String>,
    /// Stop once the sink holds this many distinct events (tests, benchmarks).
    pub stop_after_events: Option<u64>,
    /// Stop after this long without a message.
    pub idle_exit: Option<Duration>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct IngestReport {
    pub messages: u64,
    pub events_received: u64,
    pub events_new: u64,
    pub duplicates: u64,
    pub rejected_messages: u64,
    /// "Store facts through N" reports recorded.
    pub fact_reports: u64,
    /// Events the sink holds (counted at the start, then + new). Not counted on PostgreSQL
    /// without `stop_after_events`: a chain's `events` table is too large to count at each
    /// worker's start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sink_total: Option<u64>,
    pub seconds: f64,
}

fn parse_message(publish: &Publish) -> Message {
    let topic = String::from_utf8_lossy(&publish.topic).into_owned();
    let parsed = match Topics::parse(&topic) {
        Some((agent, "evt")) => {
            parse_batch(&agent, &publish.payload).map(|batch| Message::Batch { agent, batch })
        }
        Some((agent, "facts")) => parse_facts(&agent, &publish.payload).map(Message::Facts),
        _ => Err(format!("unexpected topic {topic}")),
    };
    parsed.unwrap_or_else(|reason| Message::Refused { topic, reason })
}

/// Validate a batch: the agent named inside must be the one of the topic (an agent cannot
/// speak for another, even if the broker ACL were too wide).
fn parse_batch(topic_agent: &str, payload: &[u8]) -> Result<EventBatch, String> {
    let batch: EventBatch =
        serde_json::from_slice(payload).map_err(|e| format!("not an event batch: {e}"))?;
    if batch.v != wire::CONTRACT_VERSION {
        return Err(format!("contract version {} is not supported", batch.v));
    }
    if batch.agent != topic_agent || batch.events.iter().any(|e| e.agent != topic_agent) {
        return Err(format!(
            "the batch names agent {:?} but arrived on {topic_agent:?}'s topic",
            batch.agent
        ));
    }
    // Both sinks keep numbers as signed 64-bit integers: no agent counts that far, so a number
    // past it is a damaged or forged batch, refused rather than stored wrapped or clamped.
    let fits = |n: u64| i64::try_from(n).is_ok();
    if let Some(e) = batch
        .events
        .iter()
        .find(|e| !fits(e.seq) || !fits(e.boot) || e.fact_seq.is_some_and(|n| !fits(n)))
    {
        return Err(format!(
            "event {} carries a seq, boot or fact_seq above 2^63 - 1",
            e.id
        ));
    }
    Ok(batch)
}

/// The filter for every agent's `kind` topic, shared within `group` when one is given. Each
/// message then reaches one worker of the group; the end-to-end `ack` is what makes a worker
/// killed with messages in flight harmless: the agent resends what was never acknowledged, and
/// another worker takes it.
pub fn subscription(group: Option<&str>, kind: &str) -> String {
    match group {
        Some(group) => format!("$share/{group}/{}/+/+/{kind}", wire::TOPIC_ROOT),
        None => format!("{}/+/+/{kind}", wire::TOPIC_ROOT),
    }
}

/// A share name as MQTT v5 allows it (§4.8.2: no `/`, `+` or `#`), kept to a plain charset.
pub fn valid_share_group(group: &str) -> bool {
    !group.is_empty()
        && group.len() <= 64
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Validate a "store facts through N" report: the agent named inside must be the topic's.
fn parse_facts(topic_agent: &str, payload: &[u8]) -> Result<FactsProgress, String> {
    let progress: FactsProgress =
        serde_json::from_slice(payload).map_err(|e| format!("not a facts report: {e}"))?;
    if progress.v != wire::CONTRACT_VERSION {
        return Err(format!("contract version {} is not supported", progress.v));
    }
    if progress.agent != topic_agent {
        return Err(format!(
            "the report names agent {:?} but arrived on {topic_agent:?}'s topic",
            progress.agent
        ));
    }
    if i64::try_from(progress.through).is_err() || i64::try_from(progress.at_seq).is_err() {
        return Err("the report's numbers are above 2^63 - 1".into());
    }
    Ok(progress)
}

/// Messages committed in one transaction at most.
const GROUP_MAX: usize = 256;
/// How long a group waits for its next message once it has one.
const GROUP_WAIT: Duration = Duration::from_millis(3);

pub async fn run(
    options: IngestOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<IngestReport, CentralError> {
    let started = Instant::now();
    let mut sink = Sink::open(&options.sink, true).await?;
    let mut mqtt = options.login.options(&options.client_id)?;
    if options.share_group.is_some() {
        // One worker of a group: its session ends with its connection, so the broker stops
        // handing it messages the moment it dies. The group, not the worker, is the durable
        // consumer; what a dead worker had in flight was never acknowledged to its agent, which
        // resends it to the group (ADR 0026).
        mqtt.set_clean_start(true);
        mqtt.set_session_expiry_interval(None);
    } else {
        // The only consumer: a persistent session, so the broker queues while it is down.
        mqtt.set_clean_start(false);
        mqtt.set_session_expiry_interval(Some(7 * 86_400));
    }
    mqtt.set_manual_acks(true);
    // Room for a whole group's PUBACKs and acks while the loop is not polled.
    let (client, mut eventloop) = AsyncClient::new(mqtt, 4 * GROUP_MAX + 64);
    let mut report = IngestReport {
        sink_total: if options.stop_after_events.is_some()
            || matches!(options.sink, SinkTarget::Sqlite(_))
        {
            Some(sink.count().await?)
        } else {
            None
        },
        ..IngestReport::default()
    };
    let filter = subscription(options.share_group.as_deref(), "evt");
    let facts_filter = subscription(options.share_group.as_deref(), "facts");
    let mut last_message = Instant::now();
    tokio::pin!(shutdown);
    let mut idle_check = tokio::time::interval(Duration::from_millis(200));
    let filters = [filter, facts_filter];
    // What the event loop gave while a request waited for room (see `queue`), handled before
    // the loop is polled again.
    let mut stash: VecDeque<Polled> = VecDeque::new();
    loop {
        if let Some(target) = options.stop_after_events
            && report.sink_total.is_some_and(|held| held >= target)
        {
            break;
        }
        let event = match stash.pop_front() {
            Some(event) => event,
            None => tokio::select! {
                _ = &mut shutdown => break,
                _ = idle_check.tick() => {
                    if let Some(idle) = options.idle_exit && last_message.elapsed() > idle {
                        break;
                    }
                    continue;
                }
                event = eventloop.poll() => event,
            },
        };
        // A group: this message and whatever else arrives within GROUP_WAIT, up to GROUP_MAX.
        let mut group: Vec<Publish> = Vec::new();
        let mut next = Some(event);
        while let Some(event) = next.take() {
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    // Subscribed at every connect: the broker may have lost the session.
                    for filter in &filters {
                        queue(&mut eventloop, &mut stash, || {
                            client
                                .try_subscribe(filter.clone(), QoS::AtLeastOnce)
                                .is_ok()
                        })
                        .await;
                    }
                    tracing::info!("ingest connected and subscribed");
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => group.push(publish),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "ingest lost the broker; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
            if !group.is_empty() && group.len() < GROUP_MAX {
                next = match stash.pop_front() {
                    Some(event) => Some(event),
                    None => tokio::time::timeout(GROUP_WAIT, eventloop.poll())
                        .await
                        .ok(),
                };
            }
        }
        if !group.is_empty() {
            last_message = Instant::now();
            // A sink that waits for its database gives way to a shutdown: nothing of the
            // group was acknowledged, so its agents send it again to whoever runs next.
            tokio::select! {
                settled = settle_group(
                    &client, &mut eventloop, &mut stash, &mut sink, &options, &mut report, group,
                ) => settled?,
                _ = &mut shutdown => break,
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    // Requests only leave when the event loop is polled: flush the last acks (to the agents and
    // to the broker) and the DISCONNECT before returning, or the agents would wait for acks
    // that never went out.
    let _ = client.try_disconnect();
    let flush_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < flush_until {
        match tokio::time::timeout(Duration::from_millis(500), eventloop.poll()).await {
            Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(_)) => {}
        }
    }
    Ok(report)
}

/// Commit a group, then tell each agent once what it may delete, then PUBACK every message
/// (a refused one too: redelivering garbage would not fix it).
async fn settle_group(
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    stash: &mut VecDeque<Polled>,
    sink: &mut Sink,
    options: &IngestOptions,
    report: &mut IngestReport,
    group: Vec<Publish>,
) -> Result<(), CentralError> {
    report.messages += group.len() as u64;
    let messages: Vec<Message> = group.iter().map(parse_message).collect();
    for message in &messages {
        if let Message::Refused { topic, reason } = message {
            report.rejected_messages += 1;
            tracing::warn!(%topic, %reason, "message refused by the ingest");
        }
    }
    // The event loop is polled while the commit runs (a database that is down is waited out):
    // its pings keep the broker from dropping the worker, and what arrives meanwhile is kept
    // for the next group, within what the broker's in-flight window lets through.
    let committed = {
        let commit = sink.commit(&messages);
        tokio::pin!(commit);
        loop {
            tokio::select! {
                biased;
                committed = &mut commit => break committed?,
                event = eventloop.poll(), if stash.len() < STASH_MAX => stash.push_back(event),
            }
        }
    };
    report.events_received += committed.received;
    report.events_new += committed.new;
    report.duplicates += committed.received - committed.new;
    if let Some(held) = report.sink_total.as_mut() {
        *held = held.saturating_add(committed.new);
    }
    report.fact_reports += committed.fact_reports;
    if options.send_acks {
        for (agent, seqs) in committed.acks {
            let payload = serde_json::to_vec(&Ack::from_seqs(seqs)).unwrap_or_default();
            let topic = Topics::new(&agent).ack();
            queue(eventloop, stash, || {
                client
                    .try_publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                    .is_ok()
            })
            .await;
        }
    }
    // PUBACK only now: the events are durable in the sink.
    for publish in &group {
        queue(eventloop, stash, || client.try_ack(publish).is_ok()).await;
    }
    Ok(())
}

/// Most events kept from the loop while a commit runs: past it the loop is left alone until
/// the commit ends (the broker's in-flight window holds far fewer publishes).
const STASH_MAX: usize = 16 * GROUP_MAX;

/// One poll of the event loop, as the loop hands it over.
type Polled = Result<Event, rumqttc::v5::ConnectionError>;

/// Hand a request to the client without ever waiting on a full request queue: only the event
/// loop empties that queue, and awaiting room while the loop is not polled deadlocks the worker
/// (under a broker's Receive Maximum, a group's acks and PUBACKs can outnumber the queue).
/// When the queue is full the loop is polled once, and what it gives is kept for later.
async fn queue(
    eventloop: &mut EventLoop,
    stash: &mut VecDeque<Polled>,
    mut queued: impl FnMut() -> bool,
) {
    for _ in 0..100_000 {
        if queued() {
            return;
        }
        if let Ok(event) = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await
        {
            stash.push_back(event);
        }
    }
    // Never reached while the event loop lives; an ack left unsent is sent again by the
    // agent's resend, a PUBACK by the broker's redelivery.
    tracing::warn!("a request could not be queued; the peer will send again");
}
