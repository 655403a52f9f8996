//! `relaisctl publish`: send replica deltas (one JSON delta per NDJSON line), a
//! `must_refetch` control message, or a heartbeat ("still current at version N") to one agent's
//! `rpl/{stream}` topic.

use super::{BrokerLogin, CentralError};
use crate::replica::Stream;
use crate::replica::delta::Delta;
use crate::sync::wire::{self, RplControl, RplHeartbeat, Topics};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event};
use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

/// Read and check deltas: each line must parse as a delta of the contract, for `stream`.
pub fn read_deltas(path: &Path) -> Result<Vec<Delta>, CentralError> {
    let file = std::fs::File::open(path).map_err(|source| CentralError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut deltas = Vec::new();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| CentralError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| CentralError::BadLine {
            path: path.to_path_buf(),
            line: index as u64 + 1,
            reason,
        };
        if line.len() > wire::MAX_DOWNLINK_BYTES {
            return Err(bad(format!(
                "{} bytes; agents refuse downlink messages over {} bytes",
                line.len(),
                wire::MAX_DOWNLINK_BYTES
            )));
        }
        let delta: Delta = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        deltas.push(delta);
    }
    Ok(deltas)
}

pub enum Message {
    Deltas(Vec<Delta>),
    Refetch {
        stream: Stream,
        manifest_url: Option<String>,
        reason: Option<String>,
    },
    /// `stream` is current at `version`, as of now on central's clock.
    Heartbeat {
        stream: Stream,
        version: u64,
    },
}

/// Publish to `agent`'s topics and wait for every PUBACK.
pub async fn publish(
    login: &BrokerLogin,
    agent: &str,
    message: Message,
) -> Result<usize, CentralError> {
    let topics = Topics::new(agent);
    let payloads: Vec<(String, Vec<u8>)> = match message {
        Message::Deltas(deltas) => deltas
            .iter()
            .map(|d| {
                (
                    topics.rpl(d.stream),
                    serde_json::to_vec(d).unwrap_or_default(),
                )
            })
            .collect(),
        Message::Refetch {
            stream,
            manifest_url,
            reason,
        } => {
            let control = RplControl {
                v: wire::CONTRACT_VERSION,
                stream,
                must_refetch: true,
                manifest_url,
                reason,
            };
            vec![(
                topics.rpl(stream),
                serde_json::to_vec(&control).unwrap_or_default(),
            )]
        }
        Message::Heartbeat { stream, version } => {
            let heartbeat = RplHeartbeat {
                v: wire::CONTRACT_VERSION,
                stream,
                current_version: version,
                at_ms: crate::storage::now_unix_ms(),
            };
            vec![(
                topics.rpl(stream),
                serde_json::to_vec(&heartbeat).unwrap_or_default(),
            )]
        }
    };
    let client_id = format!("relaisctl-publish-{}", std::process::id());
    let (client, mut eventloop) = AsyncClient::new(login.options(&client_id)?, 64);
    let total = payloads.len();
    let sender = client.clone();
    let producer = tokio::spawn(async move {
        for (topic, payload) in payloads {
            if sender
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut acked = 0;
    while acked < total {
        match tokio::time::timeout(Duration::from_secs(30), eventloop.poll()).await {
            Err(_) => return Err(CentralError::Broker("no acknowledgment within 30 s".into())),
            Ok(Err(e)) => return Err(CentralError::Broker(e.to_string())),
            Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                if !matches!(
                    ack.reason,
                    rumqttc::v5::mqttbytes::v5::PubAckReason::Success
                        | rumqttc::v5::mqttbytes::v5::PubAckReason::NoMatchingSubscribers
                ) {
                    return Err(CentralError::Broker(format!(
                        "the broker refused a publish to {agent}: {:?}",
                        ack.reason
                    )));
                }
                acked += 1;
            }
            Ok(Ok(_)) => {}
        }
    }
    let _ = producer.await;
    let _ = client.disconnect().await;
    // Let the DISCONNECT go out.
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
    Ok(total)
}
