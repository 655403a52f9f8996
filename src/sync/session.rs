//! The MQTT session: connect, announce, deliver the outbox, receive downlink, reconnect.
//!
//! A fresh rumqttc client and event loop are built for every connection. rumqttc keeps
//! unacknowledged publishes in memory and replays them on its own; letting it do so would make
//! two resend mechanisms race. Here the outbox is the only one: after a reconnect, whatever was
//! not acknowledged is simply read from the outbox again (see docs/contract.md, delivery).

use super::downlink::{DownlinkHandle, DownlinkMessage};
use super::uplink::{Uplink, UplinkStep};
use super::wire::{self, AgentState, Topics};
use super::{SyncError, SyncShared};
use crate::config::{AckMode, SyncConfig};
use crate::outbox::OutboxHandle;
use crate::outbox::delivery::DeliveryReader;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{LastWill, Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

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

/// Broker options for one connection attempt.
fn mqtt_options(ctx: &SessionContext, topics: &Topics) -> Result<MqttOptions, SyncError> {
    // The client id is the agent id: a second agent with the same id takes the session over,
    // which is what a replaced box should do.
    let mut options = broker_options(&ctx.config, &ctx.agent_id, &ctx.agent_id)?;
    let will = serde_json::to_vec(&AgentState::offline(&ctx.agent_id)).unwrap_or_default();
    options.set_last_will(LastWill::new(
        topics.state(),
        will,
        QoS::AtLeastOnce,
        true,
        None,
    ));
    Ok(options)
}

/// Everything the agent's connection uses — address, TLS with the pinned CA and client
/// certificate, credentials, limits — except the Last Will, under `client_id`. `relais doctor`
/// connects with exactly these settings (and its own client id, so a running agent is not
/// taken over) to prove the real link works.
pub(crate) fn broker_options(
    config: &SyncConfig,
    agent_id: &str,
    client_id: &str,
) -> Result<MqttOptions, SyncError> {
    let Some(broker) = config.broker.as_ref() else {
        return Err(SyncError::NotConfigured);
    };
    let mut options = MqttOptions::new(client_id.to_owned(), broker.host.clone(), broker.port);
    options.set_keep_alive(config.keep_alive);
    options.set_clean_start(true);
    // Downlink deltas may be large; rumqttc's default incoming limit is 10 KiB.
    options.set_max_packet_size(Some((wire::MAX_DOWNLINK_BYTES + 64 * 1024) as u32));
    options.set_connection_timeout(10);
    // Our own window bounds what is in flight; the request channel never needs to hold more.
    options.set_request_channel_capacity(config.inflight_batches * 2 + 16);
    options.set_outgoing_inflight_upper_limit(
        u16::try_from(config.inflight_batches + 8).unwrap_or(u16::MAX),
    );
    let username = config
        .username
        .clone()
        .unwrap_or_else(|| agent_id.to_owned());
    let password = match &config.password_file {
        Some(path) => crate::tls::read_password_file(path).map_err(|source| SyncError::Secret {
            path: path.clone(),
            source,
        })?,
        None => String::new(),
    };
    if config.password_file.is_some() || config.client_cert_file.is_none() {
        options.set_credentials(username, password);
    }
    if broker.tls {
        let identity = match (&config.client_cert_file, &config.client_key_file) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            _ => None,
        };
        let tls = crate::tls::client_config(config.ca_file.as_deref(), identity)?;
        options.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::new(tls)),
        ));
    }
    Ok(options)
}

/// Run sessions until `shutdown` flips to true.
pub async fn run(ctx: SessionContext, mut shutdown: watch::Receiver<bool>) {
    let topics = Topics::new(&ctx.agent_id);
    let mut backoff = super::Backoff::new(Duration::from_millis(500), ctx.config.reconnect_max);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let outcome = match mqtt_options(&ctx, &topics) {
            Ok(options) => connect_once(&ctx, &topics, options, &mut shutdown).await,
            Err(e) => Err(e),
        };
        ctx.shared.set_connected(false);
        match outcome {
            Ok(SessionEnd::Shutdown) => return,
            Ok(SessionEnd::Lost { was_up }) => {
                if was_up {
                    backoff.reset();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "broker connection failed; store facts keep being recorded and will be delivered after reconnect");
                ctx.shared.set_error(e.to_string());
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => {}
        }
    }
}

enum SessionEnd {
    Shutdown,
    Lost { was_up: bool },
}

async fn connect_once(
    ctx: &SessionContext,
    topics: &Topics,
    options: MqttOptions,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<SessionEnd, SyncError> {
    let capacity = ctx.config.inflight_batches * 2 + 16;
    let (client, mut eventloop) = AsyncClient::new(options, capacity);
    // The event loop is polled on a task of its own so publishing never waits on the socket;
    // the session reads its events from a bounded channel.
    let (events_tx, mut events) = mpsc::channel::<Result<Event, ConnectionError>>(256);
    let poller = tokio::spawn(async move {
        loop {
            let event = eventloop.poll().await;
            let failed = event.is_err();
            if events_tx.send(event).await.is_err() || failed {
                return;
            }
        }
    });
    let _poller_guard = AbortOnDrop(poller);

    // Wait for CONNACK.
    let connack = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(event) = events.recv().await {
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => return Ok(ack),
                Ok(_) => continue,
                Err(e) => return Err(SyncError::Connection(e.to_string())),
            }
        }
        Err(SyncError::Connection(
            "the connection closed before CONNACK".into(),
        ))
    });
    tokio::select! {
        result = connack => {
            result.map_err(|_| SyncError::Connection("no CONNACK within 15 s".into()))??;
        }
        _ = shutdown.changed() => return Ok(SessionEnd::Shutdown),
    }
    tracing::info!(broker = ?ctx.config.broker.as_ref().map(ToString::to_string), "connected to the broker");
    ctx.shared.set_connected(true);

    // Subscribe before the birth so nothing central sends in reaction to it is missed.
    let subscriptions = [
        topics.ack(),
        topics.rpl_all(),
        topics.cfg_desired(),
        topics.cmd_req(),
    ];
    for topic in subscriptions {
        client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .map_err(|e| SyncError::Connection(e.to_string()))?;
    }
    let mut uplink = Uplink::new(&ctx.config, &ctx.outbox, ctx.delivery.clone());
    let state = online_state(ctx).await;
    publish_other(&client, &mut uplink, topics.state(), true, &state).await?;
    ctx.downlink.connected().await;

    let mut appended = ctx.outbox.appended();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let rpl_prefix = format!("{}/rpl/", topics.base());
    let mut state_dirty = ctx.shared.state_changed();
    let mut fleet_out = ctx.shared.fleet_out_changed();
    publish_fleet(ctx, &client, &mut uplink, topics, true).await?;
    let mut dead_letters_seen = ctx.outbox.dead_letters();
    loop {
        // Fill the window before waiting: a backlog drains as fast as acknowledgments come.
        loop {
            match uplink.next_step().await {
                Ok(UplinkStep::Publish(batch)) => {
                    let payload = batch.payload;
                    uplink.expect_publish(Some((batch.ranges, batch.class)), batch.events);
                    client
                        .publish(topics.evt(), QoS::AtLeastOnce, false, payload)
                        .await
                        .map_err(|e| SyncError::Connection(e.to_string()))?;
                }
                Ok(UplinkStep::Idle) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the outbox for delivery failed; retrying in 1 s");
                    break;
                }
            }
        }
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else {
                    return Ok(SessionEnd::Lost { was_up: true });
                };
                match event {
                    Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => uplink.published(pkid),
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        let refused = !matches!(
                            ack.reason,
                            PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                        );
                        if let Some(done) = uplink.acknowledged(ack.pkid, refused) {
                            settle(ctx, done, ack.reason).await;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
                        if topic == topics.ack() {
                            on_central_ack(ctx, &mut uplink, &publish.payload).await;
                        } else if topic == topics.cfg_desired() || topic == topics.cmd_req() {
                            forward_fleet(ctx, topic == topics.cfg_desired(), &publish.payload);
                        } else if let Some(stream) = topic.strip_prefix(rpl_prefix.as_str()) {
                            ctx.downlink
                                .send(DownlinkMessage::Rpl {
                                    stream: stream.to_string(),
                                    payload: publish.payload.to_vec(),
                                })
                                .await;
                        }
                    }
                    Ok(Event::Incoming(Packet::Disconnect(d))) => {
                        tracing::warn!(reason = ?d.reason_code, "the broker closed the session");
                        return Ok(SessionEnd::Lost { was_up: true });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, in_flight = uplink.in_flight(), "lost the broker connection; unacknowledged events will be sent again");
                        ctx.shared.set_error(e.to_string());
                        return Ok(SessionEnd::Lost { was_up: true });
                    }
                }
            }
            _ = appended.changed() => uplink.wake(),
            _ = fleet_out.changed() => {
                publish_fleet(ctx, &client, &mut uplink, topics, false).await?;
            }
            _ = state_dirty.changed() => {
                let state = online_state(ctx).await;
                publish_other(&client, &mut uplink, topics.state(), true, &state).await?;
            }
            _ = tick.tick() => {
                uplink.wake();
                if ctx.config.ack == AckMode::Central {
                    let overdue = uplink.resend_overdue(ctx.config.ack_timeout);
                    if overdue > 0 {
                        tracing::warn!(batches = overdue, timeout = ?ctx.config.ack_timeout, "central did not acknowledge in time; sending those batches again");
                    }
                }
                let dead = ctx.outbox.dead_letters();
                if dead < dead_letters_seen {
                    // An operator requeued dead letters: they are behind our cursors.
                    uplink.rewind();
                }
                dead_letters_seen = dead;
            }
            _ = shutdown.changed() => {
                let offline = AgentState::offline(&ctx.agent_id);
                let _ = publish_other(&client, &mut uplink, topics.state(), true, &offline).await;
                // Give the broker a moment to take the offline state and pending acks.
                let deadline = Instant::now() + Duration::from_millis(500);
                while Instant::now() < deadline {
                    match tokio::time::timeout(Duration::from_millis(100), events.recv()).await {
                        Ok(Some(Ok(Event::Incoming(Packet::PubAck(ack))))) => {
                            if let Some(done) = uplink.acknowledged(ack.pkid, false) {
                                settle(ctx, done, ack.reason).await;
                            }
                        }
                        Ok(Some(Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))))) => uplink.published(pkid),
                        Ok(Some(Ok(_))) => {}
                        _ => break,
                    }
                }
                let _ = client.disconnect().await;
                return Ok(SessionEnd::Shutdown);
            }
        }
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

/// Publish the config report (retained) and pending command results.
async fn publish_fleet(
    ctx: &SessionContext,
    client: &AsyncClient,
    uplink: &mut Uplink,
    topics: &Topics,
    fresh_session: bool,
) -> Result<(), SyncError> {
    let out = ctx.shared.take_fleet_publish(fresh_session);
    if let Some(report) = out.reported {
        uplink.expect_publish(None, 0);
        client
            .publish(topics.cfg_reported(), QoS::AtLeastOnce, true, report)
            .await
            .map_err(|e| SyncError::Connection(e.to_string()))?;
    }
    let mut results = out.results.into_iter();
    while let Some(result) = results.next() {
        uplink.expect_publish(None, 0);
        if let Err(e) = client
            .publish(topics.cmd_res(), QoS::AtLeastOnce, false, result.clone())
            .await
        {
            let mut rest = vec![result];
            rest.extend(results);
            ctx.shared.return_command_results(rest);
            return Err(SyncError::Connection(e.to_string()));
        }
    }
    Ok(())
}

/// The retained birth: what central's fleet view shows about this agent.
async fn online_state(ctx: &SessionContext) -> AgentState {
    AgentState {
        v: wire::CONTRACT_VERSION,
        agent: ctx.agent_id.clone(),
        online: true,
        at_ms: crate::storage::now_unix_ms(),
        birth: Some((ctx.birth)().await),
    }
}

/// A publish that is not an outbox batch (state, command results): tracked only so packet
/// ids of batches stay matched to their publishes.
async fn publish_other<T: serde::Serialize>(
    client: &AsyncClient,
    uplink: &mut Uplink,
    topic: String,
    retain: bool,
    message: &T,
) -> Result<(), SyncError> {
    let payload = serde_json::to_vec(message).unwrap_or_default();
    uplink.expect_publish(None, 0);
    client
        .publish(topic, QoS::AtLeastOnce, retain, payload)
        .await
        .map_err(|e| SyncError::Connection(e.to_string()))
}

/// A batch was acknowledged by the broker: delete it (PUBACK mode), wait for central (central
/// mode), or park it as dead letters when refused.
async fn settle(ctx: &SessionContext, done: super::uplink::Settled, reason: PubAckReason) {
    match done {
        super::uplink::Settled::Delivered(ranges) => {
            let count: u64 = ranges.iter().map(|[a, b]| b - a + 1).sum();
            ctx.shared.record_delivered(count);
            if ctx.outbox.delivered(ranges).await.is_err() {
                tracing::debug!("outbox closed while settling a delivery");
            }
        }
        super::uplink::Settled::AwaitingCentral => {}
        super::uplink::Settled::Refused(ranges) => {
            let count: u64 = ranges.iter().map(|[a, b]| b - a + 1).sum();
            let message = format!(
                "the broker refused {count} events ({reason:?}): they are parked as dead letters and \
                 not retried. Check the broker ACL and that sync.username matches the agent id \
                 (topic {}), then requeue them with `POST /v1/outbox/requeue`",
                Topics::new(&ctx.agent_id).evt()
            );
            tracing::error!(events = count, reason = ?reason, "broker refused events; parked as dead letters");
            let _ = ctx
                .outbox
                .dead_letter(ranges, crate::outbox::ALARM_UPLINK_REFUSED, message)
                .await;
            ctx.shared.touch_state();
        }
    }
}

async fn on_central_ack(ctx: &SessionContext, uplink: &mut Uplink, payload: &[u8]) {
    if payload.len() > wire::MAX_DOWNLINK_BYTES {
        tracing::warn!(bytes = payload.len(), "central ack too large; ignored");
        return;
    }
    let ack: wire::Ack = match serde_json::from_slice(payload) {
        Ok(ack) => ack,
        Err(e) => {
            tracing::warn!(error = %e, "central ack is not valid JSON of the contract; ignored");
            return;
        }
    };
    if ack.v != wire::CONTRACT_VERSION || ack.seqs.iter().any(|[a, b]| a > b) {
        tracing::warn!("central ack has an unknown version or a reversed range; ignored");
        return;
    }
    if ctx.config.ack != AckMode::Central {
        return;
    }
    uplink.central_acked(&ack.seqs);
    ctx.shared.record_delivered(ack.count());
    let _ = ctx.outbox.delivered(ack.seqs).await;
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
