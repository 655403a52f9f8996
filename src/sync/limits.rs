//! The broker's limits from CONNACK (MQTT 5.0 §3.2.2.3) and what the agent does under them:
//! batch size, in-flight window, retain, QoS, keep-alive. Logged at each connect and shown in
//! `/v1/health` (`sync.limits`) and `relais doctor` (ADR 0018).

use super::mqtt::codec::{ConnAck, prop};
use serde::Serialize;

/// A CONNACK the agent cannot work with, or must not (a protocol error by the broker).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error(
        "the broker announced Receive Maximum 0 in CONNACK, a protocol error (MQTT 5.0 §3.2.2.3.3: \
         it must be 1 or more): no QoS 1 message could ever be sent. Fix the broker's \
         configuration (its max inflight / receive maximum setting)"
    )]
    ReceiveMaximumZero,
    #[error(
        "the broker announced Maximum Packet Size 0 in CONNACK, a protocol error (MQTT 5.0 \
         §3.2.2.3.6). Fix the broker's maximum packet size setting"
    )]
    MaximumPacketSizeZero,
    #[error(
        "the broker announced {name} = {value} in CONNACK, a protocol error (only 0 or 1 are \
         allowed). Fix the broker"
    )]
    BadByte { name: &'static str, value: u8 },
    #[error(
        "the broker allows QoS 0 only (Maximum QoS 0 in CONNACK): store facts need QoS 1 \
         (a PUBACK before a row leaves the outbox), so nothing is delivered. Allow QoS 1 for \
         this client on the broker; facts stay queued meanwhile"
    )]
    QosZeroOnly,
}

impl LimitsError {
    /// The reason code the agent closes with: 0x82 for the broker's protocol errors, 0x9B for
    /// a QoS it cannot use.
    pub fn disconnect_reason(&self) -> u8 {
        match self {
            LimitsError::QosZeroOnly => 0x9B,
            _ => 0x82,
        }
    }
}

/// The limits in effect for one connection.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BrokerLimits {
    /// Maximum Packet Size from CONNACK, bytes; null: none announced.
    pub maximum_packet_size: Option<u32>,
    /// Receive Maximum from CONNACK (65,535 when absent).
    pub receive_maximum: u16,
    /// Maximum QoS from CONNACK (2 when absent).
    pub maximum_qos: u8,
    pub retain_available: bool,
    /// Server Keep Alive from CONNACK, seconds; null: none, ours applies.
    pub server_keep_alive_s: Option<u16>,
    /// Keep-alive in effect, seconds (0: off, by the broker's choice).
    pub keep_alive_s: u16,
    pub topic_alias_maximum: u16,
    pub wildcard_subscriptions: bool,
    /// Assigned Client Identifier from CONNACK, when the broker chose one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_client_id: Option<String>,
    /// Largest `evt` payload the agent builds under these limits (bytes).
    pub batch_max_bytes: usize,
    /// Batches in flight at most under these limits.
    pub inflight_batches: usize,
}

/// Bytes a QoS 1 PUBLISH adds around its payload: fixed header (≤ 5), topic (2 + len),
/// packet id (2), properties (≤ 4: none, or one topic alias).
pub fn publish_overhead(topic_len: usize) -> usize {
    5 + 2 + topic_len + 2 + 4
}

impl BrokerLimits {
    /// Read CONNACK's properties against what the agent asked for.
    pub fn from_connack(
        ack: &ConnAck,
        requested_keep_alive: u16,
        config: &crate::config::SyncConfig,
        evt_topic_len: usize,
    ) -> Result<BrokerLimits, LimitsError> {
        let p = &ack.properties;
        let receive_maximum = p.u16(prop::RECEIVE_MAXIMUM).unwrap_or(u16::MAX);
        if receive_maximum == 0 {
            return Err(LimitsError::ReceiveMaximumZero);
        }
        let maximum_packet_size = p.u32(prop::MAXIMUM_PACKET_SIZE);
        if maximum_packet_size == Some(0) {
            return Err(LimitsError::MaximumPacketSizeZero);
        }
        let byte = |id: u8, name: &'static str, default: u8| match p.byte(id) {
            None => Ok(default),
            Some(v @ (0 | 1)) => Ok(v),
            Some(value) => Err(LimitsError::BadByte { name, value }),
        };
        let maximum_qos = byte(prop::MAXIMUM_QOS, "Maximum QoS", 2)?;
        let retain_available = byte(prop::RETAIN_AVAILABLE, "Retain Available", 1)? == 1;
        let wildcard_subscriptions = byte(
            prop::WILDCARD_SUB_AVAILABLE,
            "Wildcard Subscription Available",
            1,
        )? == 1;
        if maximum_qos == 0 {
            return Err(LimitsError::QosZeroOnly);
        }
        let server_keep_alive_s = p.u16(prop::SERVER_KEEP_ALIVE);
        let packet_budget = maximum_packet_size
            .map(|m| (m as usize).saturating_sub(publish_overhead(evt_topic_len)))
            .unwrap_or(usize::MAX);
        Ok(BrokerLimits {
            maximum_packet_size,
            receive_maximum,
            maximum_qos,
            retain_available,
            server_keep_alive_s,
            keep_alive_s: server_keep_alive_s.unwrap_or(requested_keep_alive),
            topic_alias_maximum: p.u16(prop::TOPIC_ALIAS_MAXIMUM).unwrap_or(0),
            wildcard_subscriptions,
            assigned_client_id: p.string(prop::ASSIGNED_CLIENT_ID).map(str::to_owned),
            batch_max_bytes: config.batch_max_bytes.min(packet_budget),
            // One slot of the broker's window stays free for state and fleet messages.
            inflight_batches: config
                .inflight_batches
                .min(usize::from(receive_maximum).saturating_sub(1).max(1)),
        })
    }

    /// One line for the log and the doctor.
    pub fn summary(&self) -> String {
        let packet = match self.maximum_packet_size {
            Some(m) => format!("{m} B"),
            None => "none".into(),
        };
        let keep_alive = match self.server_keep_alive_s {
            Some(0) => "off (Server Keep Alive 0)".to_string(),
            Some(s) => format!("{s} s (Server Keep Alive)"),
            None => format!("{} s", self.keep_alive_s),
        };
        let mut line = format!(
            "maximum packet size {packet}, receive maximum {}, maximum QoS {}, retain {}, \
             keep-alive {keep_alive}, topic alias maximum {}, wildcard subscriptions {}; \
             batches up to {} B, {} in flight",
            self.receive_maximum,
            self.maximum_qos,
            if self.retain_available {
                "available"
            } else {
                "not available"
            },
            self.topic_alias_maximum,
            if self.wildcard_subscriptions {
                "yes"
            } else {
                "no"
            },
            self.batch_max_bytes,
            self.inflight_batches,
        );
        if let Some(id) = &self.assigned_client_id {
            line.push_str(&format!("; assigned client id {id}"));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::mqtt::codec::{PropValue, Properties};

    fn connack(props: Vec<(u8, PropValue)>) -> ConnAck {
        ConnAck {
            session_present: false,
            reason: 0,
            properties: Properties(props),
        }
    }

    #[test]
    fn a_small_packet_limit_and_receive_maximum_shrink_batches_and_the_window() {
        let config = crate::config::Config::defaults().sync;
        let limits = BrokerLimits::from_connack(
            &connack(vec![
                (prop::MAXIMUM_PACKET_SIZE, PropValue::U32(131_072)),
                (prop::RECEIVE_MAXIMUM, PropValue::U16(3)),
                (prop::SERVER_KEEP_ALIVE, PropValue::U16(0)),
            ]),
            30,
            &config,
            30,
        )
        .unwrap();
        assert!(limits.batch_max_bytes + publish_overhead(30) <= 131_072);
        assert_eq!(limits.inflight_batches, 2);
        assert_eq!(limits.keep_alive_s, 0);
        assert!(limits.summary().contains("131072 B"));
    }

    #[test]
    fn receive_maximum_zero_and_qos_zero_are_refused_with_their_reason() {
        let config = crate::config::Config::defaults().sync;
        let zero = connack(vec![(prop::RECEIVE_MAXIMUM, PropValue::U16(0))]);
        let err = BrokerLimits::from_connack(&zero, 30, &config, 30).unwrap_err();
        assert_eq!(err, LimitsError::ReceiveMaximumZero);
        assert!(err.to_string().contains("protocol error"));
        let qos0 = connack(vec![(prop::MAXIMUM_QOS, PropValue::Byte(0))]);
        let err = BrokerLimits::from_connack(&qos0, 30, &config, 30).unwrap_err();
        assert_eq!(err.disconnect_reason(), 0x9B);
    }
}
