//! What acknowledgments settle (central's `ack`, PUBACK outcomes, oversize events) and the
//! clean end of a session: split from `session.rs` to keep each file readable.

use super::{Session, What};
use crate::config::AckMode;
use crate::sync::mqtt::codec::{self, Incoming};
use crate::sync::mqtt::link::LinkEvent;
use crate::sync::uplink::Settled;
use crate::sync::wire::{self, AgentState};
use std::time::{Duration, Instant};

impl Session<'_> {
    pub(super) async fn on_central_ack(&mut self, payload: &[u8]) {
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
        if self.ctx.config.ack != AckMode::Central {
            return;
        }
        let settled = self.uplink.central_acked(&ack.seqs);
        let count = wire::Ack {
            v: ack.v,
            seqs: settled.clone(),
        }
        .count();
        if count < ack.count() {
            // A late ack for a batch sent before a reconnect or already settled is normal; an
            // ack for seqs never sent is not, but either way those rows stay queued.
            tracing::debug!(
                named = ack.count(),
                settled = count,
                "central's ack names seqs not in flight on this connection; those stay queued"
            );
        }
        if settled.is_empty() {
            return;
        }
        self.delivered = true;
        self.ctx.shared.record_delivered(count);
        let _ = self.ctx.outbox.delivered(settled).await;
    }

    /// A batch was acknowledged by the broker: delete it (PUBACK mode), wait for central
    /// (central mode), retry it later, split it, or park it as dead letters.
    pub(super) async fn settle(&mut self, done: Settled, ack: &codec::Ack) {
        let reason = format!("0x{:02X} {}", ack.reason, codec::reason_name(ack.reason));
        match done {
            Settled::Delivered(ranges) => {
                let count: u64 = ranges.iter().map(|[a, b]| b - a + 1).sum();
                self.ctx.shared.record_delivered(count);
                if self.ctx.outbox.delivered(ranges).await.is_err() {
                    tracing::debug!("outbox closed while settling a delivery");
                }
            }
            Settled::AwaitingCentral => {}
            Settled::Retry { events, delay } => {
                tracing::warn!(events, reason = %reason, retry_in_ms = delay.as_millis() as u64, "the broker refused a batch for now; it stays queued and is sent again after the delay");
                self.ctx.shared.set_error(format!(
                    "the broker refused a batch of {events} events for now (PUBACK {reason}); retrying in {} ms",
                    delay.as_millis()
                ));
            }
            Settled::Split { events, new_max } => {
                tracing::warn!(events, reason = %reason, new_max, "the broker refused a batch as too large; sending it again in halves, and later batches up to the new size");
            }
            Settled::Oversize { ranges, bytes } => self.oversize(ranges, bytes).await,
            Settled::Refused(ranges) => {
                let count: u64 = ranges.iter().map(|[a, b]| b - a + 1).sum();
                let message = format!(
                    "the broker refused {count} events (PUBACK {reason}{}): they are parked as dead letters and \
                     not retried. Check the broker ACL and that sync.username matches the agent id \
                     (topic {}), then requeue them with `POST /v1/outbox/requeue`",
                    ack.reason_string
                        .as_ref()
                        .map(|s| format!(", {s:?}"))
                        .unwrap_or_default(),
                    self.topics.evt()
                );
                tracing::error!(events = count, reason = %reason, "broker refused events; parked as dead letters");
                let _ = self
                    .ctx
                    .outbox
                    .dead_letter(ranges, crate::outbox::ALARM_UPLINK_REFUSED, message)
                    .await;
                // After the writer confirmed: the state counts these dead letters.
                self.ctx.shared.touch_state();
            }
        }
    }

    /// One event that no packet the broker accepts can carry: a dead letter naming the limit.
    pub(super) async fn oversize(&mut self, ranges: Vec<[u64; 2]>, bytes: usize) {
        let limit = self
            .limits
            .maximum_packet_size
            .map(|m| format!("Maximum Packet Size {m} bytes announced in CONNACK"))
            .unwrap_or_else(|| "a packet size the broker refused (PUBACK 0x95)".to_string());
        let seqs = ranges
            .iter()
            .map(|[a, b]| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        let message = format!(
            "an event (seq {seqs}) needs a {bytes}-byte message, over the broker's {limit}: it is \
             parked as a dead letter, not retried. Raise the broker's maximum packet size, then \
             requeue it with `POST /v1/outbox/requeue`"
        );
        tracing::error!(seq = %seqs, bytes, limit = %limit, "event too large for the broker; parked as a dead letter");
        let _ = self
            .ctx
            .outbox
            .dead_letter(ranges, crate::outbox::ALARM_UPLINK_TOO_LARGE, message)
            .await;
        self.ctx.shared.touch_state();
    }

    /// Clean shutdown: the offline state (so central sees it at once), then DISCONNECT 0x00
    /// so the broker discards the Will (§3.14.4), within about a second. When the offline state
    /// could not be delivered (no room in the broker's window, refused, no PUBACK in time),
    /// DISCONNECT 0x04 asks the broker for the Will instead: central must not keep seeing
    /// "online".
    pub(super) async fn shut_down(&mut self) {
        let offline = AgentState::offline(&self.ctx.agent_id);
        let payload = serde_json::to_vec(&offline).unwrap_or_default();
        let topic = self.topics.state();
        self.waiting.clear();
        let mut said_offline = false;
        let before = self.next_pkid;
        if self.room()
            && self
                .publish_other(topic, true, payload, What::State)
                .await
                .is_ok()
            && self.next_pkid != before
        {
            let pkid = self.next_pkid;
            let deadline = Instant::now() + Duration::from_secs(1);
            while self.pending.contains_key(&pkid) {
                let Ok(Some(LinkEvent::Packet(packet))) =
                    tokio::time::timeout_at(deadline.into(), self.link.next_event()).await
                else {
                    break;
                };
                if let Incoming::PubAck(ack) = packet {
                    said_offline |= ack.pkid == pkid && ack.reason < 0x80;
                    let _ = self.on_puback(ack).await;
                }
            }
        }
        let reason = if said_offline { 0x00 } else { 0x04 };
        self.link
            .disconnect(reason, Duration::from_millis(500))
            .await;
    }
}
