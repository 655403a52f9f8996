//! The MQTT session: connect, honour the broker's limits, announce, deliver the outbox,
//! receive downlink, notice a stuck link, reconnect (ADR 0007, ADR 0018).
//!
//! A fresh connection with Clean Start for every session: the outbox is the only resend
//! mechanism, so after a reconnect whatever was not acknowledged is simply read from the
//! outbox again (docs/contract.md, delivery). Packet ids, the in-flight window and every
//! timeout are the session's own (`sync::mqtt`): nothing below it keeps or replays state.

use super::downlink::{DownlinkHandle, DownlinkMessage};
use super::ending::{Learned, SessionEnd};
use super::limits::BrokerLimits;
use super::mqtt::codec::{self, Connect, Incoming, Will};
use super::mqtt::link::{Link, LinkEvent, LinkOptions};
use super::uplink::{BatchLimits, Uplink, UplinkStep};
use super::wire::{self, AgentState, Topics};
use super::{LinkState, SyncError, SyncShared};
use crate::config::{AckMode, SyncConfig};
use crate::outbox::OutboxHandle;
use crate::outbox::delivery::DeliveryReader;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

mod echo;
mod facts;
mod settle;

/// What the session needs from the rest of the agent.
pub struct SessionContext {
    pub config: SyncConfig,
    pub agent_id: String,
    pub outbox: OutboxHandle,
    pub delivery: DeliveryReader,
    pub downlink: DownlinkHandle,
    pub shared: Arc<SyncShared>,
    /// Builds the birth message (replica versions, outbox depth, devices, …) at each connect.
    pub birth: Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, wire::Birth> + Send + Sync>,
    /// `cfg/desired` and `cmd/req` messages go to the agent's control loop.
    pub fleet_inbox: mpsc::Sender<super::FleetInbound>,
}

/// The largest packet the agent accepts from the broker (a delta plus room for its topic).
pub const MAX_INCOMING_PACKET: u32 = (wire::MAX_DOWNLINK_BYTES + 64 * 1024) as u32;
/// QoS 1 messages the broker may have in flight to us (our Receive Maximum).
const RECEIVE_MAXIMUM: u16 = 32;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often timeouts are checked: the precision of every liveness limit.
const TICK: Duration = Duration::from_millis(250);

/// Connection settings of the agent's link — address, TLS with the pinned CA and client
/// certificate, credentials, keep-alive — under `client_id`, with an optional Will. `relais
/// doctor` connects with exactly these (its own client id, no Will) to prove the link works.
pub(crate) fn link_options(
    config: &SyncConfig,
    agent_id: &str,
    client_id: &str,
    will: Option<Will>,
) -> Result<LinkOptions, SyncError> {
    let Some(broker) = config.broker.as_ref() else {
        return Err(SyncError::NotConfigured);
    };
    let password = match &config.password_file {
        Some(path) => {
            Some(
                crate::tls::read_password_file(path).map_err(|source| SyncError::Secret {
                    path: path.clone(),
                    source,
                })?,
            )
        }
        None => None,
    };
    // With mutual TLS the broker takes the username from the certificate's CN.
    let username =
        (config.password_file.is_some() || config.client_cert_file.is_none()).then(|| {
            config
                .username
                .clone()
                .unwrap_or_else(|| agent_id.to_owned())
        });
    let tls = if broker.tls {
        let identity = match (&config.client_cert_file, &config.client_key_file) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            _ => None,
        };
        Some(Arc::new(crate::tls::client_config(
            config.ca_file.as_deref(),
            identity,
        )?))
    } else {
        None
    };
    Ok(LinkOptions {
        host: broker.host.clone(),
        port: broker.port,
        tls,
        connect: Connect {
            client_id: client_id.to_owned(),
            keep_alive: u16::try_from(config.keep_alive.as_secs()).unwrap_or(u16::MAX),
            username,
            password,
            will,
            receive_maximum: RECEIVE_MAXIMUM,
            maximum_packet_size: MAX_INCOMING_PACKET,
        },
        connect_timeout: CONNECT_TIMEOUT,
        write_timeout: config.write_timeout,
    })
}

/// Run sessions until `shutdown` flips to true.
pub async fn run(ctx: SessionContext, mut shutdown: watch::Receiver<bool>) {
    let topics = Topics::new(&ctx.agent_id);
    let mut backoff = super::Backoff::new(Duration::from_millis(500), ctx.config.reconnect_max);
    let mut learned = Learned::default();
    loop {
        if *shutdown.borrow() {
            return;
        }
        // A stalled or refused link stays so in health while the next attempts run: it says
        // what the operator must look at until a session delivers again.
        if !matches!(
            ctx.shared.link_state(),
            LinkState::Stalled | LinkState::Refused
        ) {
            ctx.shared.set_link(LinkState::Connecting);
        }
        // Whatever an earlier connection proved, this one proves again.
        ctx.shared.set_echoed(false);
        let (end, delivered) = connect_once(&ctx, &topics, &mut learned, &mut shutdown).await;
        if let SessionEnd::Shutdown = end {
            ctx.shared.set_link(LinkState::Disconnected);
            return;
        }
        // Only a session that got something acknowledged proves the link works: one that
        // ends before any PUBACK or ack keeps the backoff growing (issue 19: sessions that
        // came up and died at once reconnected every 0.3-0.5 s forever).
        if delivered {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        ctx.shared.set_link(end.link_state());
        ctx.shared.set_error(end.to_string());
        tracing::warn!(
            error = %end,
            link = end.link_state().as_str(),
            retry_in_ms = delay.as_millis() as u64,
            "broker session ended"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// One connection, start to end; the bool says whether anything was acknowledged.
async fn connect_once(
    ctx: &SessionContext,
    topics: &Topics,
    learned: &mut Learned,
    shutdown: &mut watch::Receiver<bool>,
) -> (SessionEnd, bool) {
    let will = Will {
        topic: topics.state(),
        payload: serde_json::to_vec(&AgentState::offline(&ctx.agent_id)).unwrap_or_default(),
        retain: learned.retain,
    };
    let client_id = ctx.config.client_id.as_deref().unwrap_or(&ctx.agent_id);
    let options = match link_options(&ctx.config, &ctx.agent_id, client_id, Some(will)) {
        Ok(options) => options,
        Err(e) => return (e.into(), false),
    };
    let requested_keep_alive = options.connect.keep_alive;
    let (link, connack) = tokio::select! {
        result = Link::connect(options) => match result {
            Ok(connected) => connected,
            Err(e) => return (e.into(), false),
        },
        _ = shutdown.changed() => return (SessionEnd::Shutdown, false),
    };
    if connack.reason >= 0x80 {
        if connack.reason == 0x9A {
            learned.retain = false;
        }
        return (
            SessionEnd::Refused {
                code: connack.reason,
                reason_string: connack
                    .properties
                    .string(codec::prop::REASON_STRING)
                    .map(str::to_owned),
            },
            false,
        );
    }
    let limits = match BrokerLimits::from_connack(
        &connack,
        requested_keep_alive,
        &ctx.config,
        topics.evt().len(),
    ) {
        Ok(limits) => limits,
        Err(e) => {
            ctx.shared.set_limits(None);
            let mut link = link;
            link.disconnect(e.disconnect_reason(), Duration::from_secs(1))
                .await;
            return (e.into(), false);
        }
    };
    // What this CONNACK says wins over what an earlier connection taught: a broker may gain
    // retained messages (only a refusal during this session takes them away again).
    learned.retain = limits.retain_available;
    tracing::info!(
        // Display, not Debug: `broker=mqtts://…`, never `broker=Some("mqtts://…")`.
        broker = %ctx.config.broker.as_ref().map(ToString::to_string).unwrap_or_default(),
        limits = %limits.summary(),
        "connected to the broker"
    );
    let client_id = ctx.config.client_id.as_deref().unwrap_or(&ctx.agent_id);
    if let Some(assigned) = &limits.assigned_client_id
        && assigned != client_id
    {
        tracing::warn!(assigned = %assigned, client_id = %client_id, "the broker assigned another client id: a replacement box with this agent id will not take this session over");
    }
    ctx.shared.set_limits(Some(limits.clone()));
    let hard_bytes = limits
        .maximum_packet_size
        .map(|m| (m as usize).saturating_sub(super::limits::publish_overhead(topics.evt().len())))
        .unwrap_or(usize::MAX);
    let soft_bytes = limits
        .batch_max_bytes
        .min(learned.max_payload.unwrap_or(usize::MAX));
    let uplink = Uplink::new(
        &ctx.config,
        &ctx.outbox,
        ctx.delivery.clone(),
        BatchLimits {
            soft_bytes,
            hard_bytes,
            window: limits.inflight_batches,
        },
    );
    let mut session = Session {
        ctx,
        topics,
        link,
        limits,
        retain: learned.retain,
        uplink,
        pending: HashMap::new(),
        waiting: VecDeque::new(),
        next_pkid: 0,
        evt_alias_sent: false,
        delivered: false,
        echo_nonce: Vec::new(),
        facts_reported: Default::default(),
    };
    let end = session.run(shutdown).await;
    learned.retain &= session.retain;
    match &end {
        SessionEnd::ServerDisconnect { code: 0x9A, .. } => learned.retain = false,
        SessionEnd::ServerDisconnect { code: 0x95, .. } => {
            let half = session.uplink.soft_bytes() / 2;
            learned.max_payload = Some(learned.max_payload.map_or(half, |m| m.min(half)).max(1));
        }
        _ => {}
    }
    (end, session.delivered)
}

/// What a packet id in flight carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    Batch,
    State,
    Fleet,
    Subscribe,
    Echo,
    Facts,
}

struct Pending {
    what: What,
    /// Stream offset of its last byte: it left when the link has written this much.
    end: u64,
    written_at: Option<Instant>,
}

/// A non-batch publish waiting for room in the broker's Receive Maximum.
struct Waiting {
    topic: String,
    retain: bool,
    payload: Vec<u8>,
    what: What,
}

struct Session<'a> {
    ctx: &'a SessionContext,
    topics: &'a Topics,
    link: Link,
    limits: BrokerLimits,
    retain: bool,
    uplink: Uplink,
    pending: HashMap<u16, Pending>,
    waiting: VecDeque<Waiting>,
    next_pkid: u16,
    evt_alias_sent: bool,
    /// The payload of this session's probe on `echo` (empty until it is published).
    echo_nonce: Vec<u8>,
    /// The last "store facts through N" report (`session/facts.rs`).
    facts_reported: facts::Reported,
    /// Anything acknowledged with success (PUBACK < 0x80, or central's ack).
    delivered: bool,
}

impl Session<'_> {
    async fn run(&mut self, shutdown: &mut watch::Receiver<bool>) -> SessionEnd {
        match self.serve(shutdown).await {
            Ok(()) => SessionEnd::Shutdown,
            Err(end) => {
                // Our own decision to close says why on the wire too (§3.14.2.1).
                let reason = match &end {
                    SessionEnd::Protocol(_) => Some(0x82),
                    SessionEnd::PubackTimeout { .. } | SessionEnd::Liveness(_) => Some(0x80),
                    _ => None,
                };
                if let Some(code) = reason {
                    self.link.disconnect(code, Duration::from_millis(200)).await;
                }
                end
            }
        }
    }

    async fn serve(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), SessionEnd> {
        self.subscribe().await?;
        let state = online_state(self.ctx, self.limits.maximum_packet_size).await;
        self.publish_state(&state).await?;
        self.publish_echo().await?;
        self.report_facts(true).await?;
        self.ctx.downlink.connected().await;
        self.publish_fleet(true).await?;

        let mut appended = self.ctx.outbox.appended();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut second = Instant::now();
        let mut state_dirty = self.ctx.shared.state_changed();
        let mut fleet_out = self.ctx.shared.fleet_out_changed();
        let mut dead_letters_seen = self.ctx.outbox.dead_letters();
        loop {
            self.fill().await?;
            tokio::select! {
                event = self.link.next_event() => match event {
                    Some(LinkEvent::Packet(packet)) => self.on_packet(packet).await?,
                    Some(LinkEvent::Closed(why)) => return Err(SessionEnd::Closed(why)),
                    None => return Err(SessionEnd::Closed(super::mqtt::link::Closed::Eof)),
                },
                _ = appended.changed() => self.uplink.wake(),
                _ = fleet_out.changed() => self.publish_fleet(false).await?,
                _ = state_dirty.changed() => {
                    let state = online_state(self.ctx, self.limits.maximum_packet_size).await;
                    self.publish_state(&state).await?;
                }
                _ = tick.tick() => {
                    self.check_liveness()?;
                    if second.elapsed() >= Duration::from_secs(1) {
                        second = Instant::now();
                        self.every_second(&mut dead_letters_seen);
                        self.report_facts(false).await?;
                    }
                }
                _ = shutdown.changed() => {
                    self.shut_down().await;
                    return Ok(());
                }
            }
        }
    }

    fn every_second(&mut self, dead_letters_seen: &mut u64) {
        self.uplink.wake();
        if self.ctx.config.ack == AckMode::Central {
            let overdue = self.uplink.resend_overdue(self.ctx.config.ack_timeout);
            if overdue > 0 {
                tracing::warn!(batches = overdue, timeout = ?self.ctx.config.ack_timeout, "central did not acknowledge in time; sending those batches again");
            }
        }
        let dead = self.ctx.outbox.dead_letters();
        if dead < *dead_letters_seen {
            // An operator requeued dead letters: they are behind our cursors.
            self.uplink.rewind();
        }
        *dead_letters_seen = dead;
    }

    /// PUBACK timeouts per message, write stalls and unanswered PINGREQs.
    fn check_liveness(&mut self) -> Result<(), SessionEnd> {
        if let Some(why) = self.link.liveness() {
            return Err(SessionEnd::Liveness(why));
        }
        let written = self.link.written();
        let now = Instant::now();
        let timeout = self.ctx.config.puback_timeout;
        let mut overdue: Option<(u16, What)> = None;
        for (pkid, p) in &mut self.pending {
            if p.written_at.is_none() && written >= p.end {
                // Its clock starts when it left, not when it was queued behind a slow link.
                p.written_at = Some(now);
            }
            if let Some(at) = p.written_at
                && now.duration_since(at) > timeout
            {
                overdue = Some((*pkid, p.what));
            }
        }
        if let Some((pkid, what)) = overdue {
            self.ctx.shared.set_link(LinkState::Stalled);
            let what = match what {
                What::Batch => format!(
                    "a batch (packet id {pkid}; {} events in flight)",
                    self.uplink.in_flight()
                ),
                What::State => format!("the state message (packet id {pkid})"),
                What::Fleet => format!("a fleet message (packet id {pkid})"),
                What::Subscribe => format!("SUBSCRIBE (packet id {pkid}, no SUBACK)"),
                What::Echo => format!("the ACL probe on echo (packet id {pkid})"),
                What::Facts => format!("the facts progress report (packet id {pkid})"),
            };
            return Err(SessionEnd::PubackTimeout {
                what,
                waited: timeout,
            });
        }
        Ok(())
    }

    fn alloc_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.pending.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    fn publishes_in_flight(&self) -> usize {
        self.pending
            .values()
            .filter(|p| p.what != What::Subscribe)
            .count()
    }

    fn room(&self) -> bool {
        self.publishes_in_flight() < usize::from(self.limits.receive_maximum)
            && self.link.has_room()
    }

    async fn send(&mut self, pkid: u16, what: What, packet: Bytes) -> Result<(), SessionEnd> {
        let end = self.link.send(packet).await.map_err(SessionEnd::Closed)?;
        self.pending.insert(
            pkid,
            Pending {
                what,
                end,
                written_at: None,
            },
        );
        Ok(())
    }

    async fn subscribe(&mut self) -> Result<(), SessionEnd> {
        let mut filters = vec![
            self.topics.ack(),
            self.topics.cfg_desired(),
            self.topics.cmd_req(),
            self.topics.echo(),
        ];
        if self.limits.wildcard_subscriptions {
            filters.push(self.topics.rpl_all());
        } else {
            filters.extend(
                crate::replica::Stream::ALL
                    .iter()
                    .map(|s| self.topics.rpl(*s)),
            );
        }
        let pkid = self.alloc_pkid();
        let filters: Vec<(String, u8)> = filters.into_iter().map(|f| (f, 1)).collect();
        let packet = codec::encode_subscribe(pkid, &filters)
            .ok_or_else(|| SessionEnd::Protocol("SUBSCRIBE too large".into()))?;
        self.send(pkid, What::Subscribe, packet).await
    }

    /// Publish (or queue, when the broker's window is full) a message that is not a batch.
    async fn publish_other(
        &mut self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
        what: What,
    ) -> Result<(), SessionEnd> {
        let retain = retain && self.retain;
        if let Some(max) = self.limits.maximum_packet_size
            && codec::publish_size(topic.len(), false, payload.len()).unwrap_or(usize::MAX)
                > max as usize
        {
            tracing::warn!(topic = %topic, bytes = payload.len(), max, "a message is over the broker's Maximum Packet Size; not sent");
            return Ok(());
        }
        if !self.room() {
            if what == What::State || what == What::Facts {
                // Only the newest state (and progress report) matters.
                self.waiting.retain(|w| w.what != what);
            }
            self.waiting.push_back(Waiting {
                topic,
                retain,
                payload,
                what,
            });
            return Ok(());
        }
        let pkid = self.alloc_pkid();
        let packet = codec::encode_publish(&topic, None, 1, retain, pkid, &payload)
            .ok_or_else(|| SessionEnd::Protocol("message over MQTT's size limit".into()))?;
        self.send(pkid, what, packet).await
    }

    async fn publish_state(&mut self, state: &AgentState) -> Result<(), SessionEnd> {
        let payload = serde_json::to_vec(state).unwrap_or_default();
        let topic = self.topics.state();
        self.publish_other(topic, true, payload, What::State).await
    }

    /// Publish the config report (retained) and pending command results.
    async fn publish_fleet(&mut self, fresh_session: bool) -> Result<(), SessionEnd> {
        let out = self.ctx.shared.take_fleet_publish(fresh_session);
        if let Some(report) = out.reported {
            let topic = self.topics.cfg_reported();
            self.publish_other(topic, true, report, What::Fleet).await?;
        }
        for result in out.results {
            let topic = self.topics.cmd_res();
            self.publish_other(topic, false, result, What::Fleet)
                .await?;
        }
        Ok(())
    }

    /// Fill the window: waiting messages first, then batches, as long as the broker's
    /// Receive Maximum and our window have room.
    async fn fill(&mut self) -> Result<(), SessionEnd> {
        while self.room()
            && let Some(w) = self.waiting.pop_front()
        {
            self.publish_other(w.topic, w.retain, w.payload, w.what)
                .await?;
        }
        // Batches follow SUBSCRIBE and the birth at once: the broker handles one connection's
        // packets in order, so central's acks find the subscription in place.
        while self.room() {
            match self.uplink.next_step().await {
                Ok(UplinkStep::Publish(batch)) => {
                    let pkid = self.alloc_pkid();
                    let evt = self.topics.evt();
                    let use_alias = self.limits.topic_alias_maximum >= 1;
                    let (topic, alias) = match (use_alias, self.evt_alias_sent) {
                        (true, true) => ("", Some(1)),
                        (true, false) => (evt.as_str(), Some(1)),
                        (false, _) => (evt.as_str(), None),
                    };
                    let packet =
                        codec::encode_publish(topic, alias, 1, false, pkid, &batch.payload)
                            .ok_or_else(|| {
                                SessionEnd::Protocol("batch over MQTT's size limit".into())
                            })?;
                    self.uplink.sent(pkid, &batch);
                    self.send(pkid, What::Batch, packet).await?;
                    self.evt_alias_sent = use_alias;
                }
                Ok(UplinkStep::Oversize { ranges, bytes }) => self.oversize(ranges, bytes).await,
                Ok(UplinkStep::Idle) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the outbox for delivery failed; retrying in 1 s");
                    break;
                }
            }
        }
        Ok(())
    }

    async fn on_packet(&mut self, packet: Incoming) -> Result<(), SessionEnd> {
        match packet {
            Incoming::PubAck(ack) => self.on_puback(ack).await,
            Incoming::SubAck(ack) => {
                if self.pending.remove(&ack.pkid).is_none() {
                    tracing::warn!(pkid = ack.pkid, "unexpected SUBACK; ignored");
                    return Ok(());
                }
                let refused: Vec<String> = ack
                    .reasons
                    .iter()
                    .filter(|r| **r >= 0x80)
                    .map(|r| format!("0x{r:02X} {}", codec::reason_name(*r)))
                    .collect();
                if !refused.is_empty() {
                    let message = format!(
                        "the broker refused {} of the agent's subscriptions ({}): central's acks, deltas, config or commands may not arrive. Check the broker ACL (readwrite on {}/#)",
                        refused.len(),
                        refused.join(", "),
                        self.topics.base()
                    );
                    tracing::error!("{message}");
                    self.ctx.shared.set_error(message);
                }
                Ok(())
            }
            Incoming::Publish(publish) => self.on_publish(publish).await,
            Incoming::Disconnect(d) => Err(SessionEnd::ServerDisconnect {
                code: d.reason,
                reason_string: d.reason_string,
                server_reference: d.server_reference,
            }),
            Incoming::PingResp | Incoming::UnsubAck(_) => Ok(()),
            Incoming::ConnAck(_) => Err(SessionEnd::Protocol("a second CONNACK".into())),
            Incoming::Auth(code) => Err(SessionEnd::Protocol(format!(
                "AUTH 0x{code:02X} without enhanced authentication"
            ))),
            Incoming::Qos2(kind, pkid) => Err(SessionEnd::Protocol(format!(
                "a QoS 2 packet (type {kind}, packet id {pkid}) on a session that uses QoS 1"
            ))),
        }
    }

    async fn on_puback(&mut self, ack: codec::Ack) -> Result<(), SessionEnd> {
        let Some(pending) = self.pending.remove(&ack.pkid) else {
            // A broker bug or a duplicate: nothing of ours is settled by it (issue 19: this
            // used to drop the connection).
            tracing::warn!(
                pkid = ack.pkid,
                reason = ack.reason,
                "PUBACK for a packet id not in flight; ignored"
            );
            return Ok(());
        };
        if ack.reason < 0x80 {
            self.delivered = true;
            self.ctx.shared.record_puback();
            if self.ctx.shared.link_state() != LinkState::Delivering {
                self.ctx.shared.set_link(LinkState::Delivering);
            }
        }
        match pending.what {
            What::Subscribe => {}
            What::State | What::Fleet | What::Echo | What::Facts => {
                if ack.reason >= 0x80 {
                    tracing::error!(
                        pkid = ack.pkid,
                        reason = %format!("0x{:02X} {}", ack.reason, codec::reason_name(ack.reason)),
                        reason_string = ack.reason_string.as_deref().unwrap_or(""),
                        "the broker refused a state or fleet message"
                    );
                    if ack.reason == 0x9A {
                        self.retain = false;
                    }
                }
            }
            What::Batch => {
                if let Some(done) = self.uplink.acknowledged(ack.pkid, ack.reason) {
                    self.settle(done, &ack).await;
                }
            }
        }
        Ok(())
    }

    async fn on_publish(&mut self, publish: codec::Publish) -> Result<(), SessionEnd> {
        if publish.topic_alias.is_some() {
            // We announced Topic Alias Maximum 0 (§3.1.2.11.5).
            return Err(SessionEnd::Protocol(
                "a PUBLISH with a topic alias after the agent allowed none".into(),
            ));
        }
        if publish.qos == 2 {
            return Err(SessionEnd::Protocol(
                "a QoS 2 PUBLISH on subscriptions granted QoS 1".into(),
            ));
        }
        let topics = self.topics;
        let topic = publish.topic.as_str();
        if topic == topics.ack() {
            self.on_central_ack(&publish.payload).await;
        } else if topic == topics.echo() {
            self.on_echo(&publish.payload);
        } else if topic == topics.cfg_desired() || topic == topics.cmd_req() {
            forward_fleet(self.ctx, topic == topics.cfg_desired(), &publish.payload);
        } else if let Some(stream) = topic
            .strip_prefix(topics.base())
            .and_then(|t| t.strip_prefix("/rpl/"))
        {
            self.ctx
                .downlink
                .send(DownlinkMessage::Rpl {
                    stream: stream.to_string(),
                    payload: publish.payload.to_vec(),
                })
                .await;
        }
        if publish.qos == 1 {
            self.link
                .send(codec::encode_puback(publish.pkid, 0))
                .await
                .map_err(SessionEnd::Closed)?;
        }
        Ok(())
    }
}

/// Hand a fleet document to the control loop. Bounded: when it is busy the message is
/// dropped with a warning — `cfg/desired` is retained and comes again at the next connect,
/// and central re-sends a command it got no answer to.
fn forward_fleet(ctx: &SessionContext, desired: bool, payload: &[u8]) {
    if payload.is_empty() {
        return; // a cleared retained message
    }
    let message = if desired {
        super::FleetInbound::Desired(payload.to_vec())
    } else {
        super::FleetInbound::Command(payload.to_vec())
    };
    if ctx.fleet_inbox.try_send(message).is_err() {
        tracing::warn!(desired, "fleet message dropped: the control loop is busy");
    }
}

/// The retained birth: what central's fleet view shows about this agent. Under a packet
/// limit too small for the full birth, the bare `online` state still goes out.
async fn online_state(ctx: &SessionContext, max_packet: Option<u32>) -> AgentState {
    let mut state = AgentState {
        v: wire::CONTRACT_VERSION,
        agent: ctx.agent_id.clone(),
        online: true,
        at_ms: crate::storage::now_unix_ms(),
        birth: Some((ctx.birth)().await),
    };
    if let Some(max) = max_packet {
        let size = serde_json::to_vec(&state).map(|v| v.len()).unwrap_or(0);
        let topic = Topics::new(&ctx.agent_id).state().len();
        if super::limits::publish_overhead(topic).saturating_add(size) > max as usize {
            tracing::warn!(
                bytes = size,
                max,
                "the birth is over the broker's Maximum Packet Size; publishing the bare online state"
            );
            state.birth = None;
        }
    }
    state
}
