//! `relaisctl fleet status`: what every agent last said on its retained `state` topic.

use super::{BrokerLogin, CentralError};
use crate::sync::wire::{self, AgentState, Topics};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Serialize)]
pub struct FleetEntry {
    pub agent: String,
    pub online: bool,
    pub at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<AgentState>,
    /// Set when the retained message is not a valid state of the contract.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}

/// Collect retained states until none arrived for `settle` (or `limit` passed).
pub async fn collect(
    login: &BrokerLogin,
    settle: Duration,
    limit: Duration,
) -> Result<Vec<FleetEntry>, CentralError> {
    let client_id = format!("relaisctl-fleet-{}", std::process::id());
    let (client, mut eventloop) = AsyncClient::new(login.options(&client_id)?, 64);
    let started = Instant::now();
    let mut last = Instant::now();
    let mut entries: BTreeMap<String, FleetEntry> = BTreeMap::new();
    let mut subscribed = false;
    while started.elapsed() < limit && (!subscribed || last.elapsed() < settle) {
        let event = match tokio::time::timeout(settle, eventloop.poll()).await {
            Err(_) => continue,
            Ok(Err(e)) => return Err(CentralError::Broker(e.to_string())),
            Ok(Ok(event)) => event,
        };
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                client
                    .subscribe(format!("{}/+/+/state", wire::TOPIC_ROOT), QoS::AtLeastOnce)
                    .await
                    .map_err(|e| CentralError::Broker(e.to_string()))?;
            }
            Event::Incoming(Packet::SubAck(_)) => {
                subscribed = true;
                last = Instant::now();
            }
            Event::Incoming(Packet::Publish(p)) => {
                last = Instant::now();
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                let Some((agent, "state")) = Topics::parse(&topic) else {
                    continue;
                };
                let entry = match serde_json::from_slice::<AgentState>(&p.payload) {
                    Ok(state) => FleetEntry {
                        agent: agent.clone(),
                        online: state.online,
                        at_ms: state.at_ms,
                        state: Some(state),
                        invalid: None,
                    },
                    Err(e) => FleetEntry {
                        agent: agent.clone(),
                        online: false,
                        at_ms: 0,
                        state: None,
                        invalid: Some(e.to_string()),
                    },
                };
                // An offline Will carries no birth; keep the last birth's details visible.
                match entries.get_mut(&agent) {
                    Some(old) if entry.state.as_ref().is_some_and(|s| s.birth.is_none()) => {
                        old.online = entry.online;
                        old.at_ms = entry.at_ms;
                    }
                    _ => {
                        entries.insert(agent, entry);
                    }
                }
            }
            _ => {}
        }
    }
    let _ = client.disconnect().await;
    Ok(entries.into_values().collect())
}

/// Human table: one line per agent.
pub fn render(entries: &[FleetEntry], now_ms: i64) -> String {
    let mut out = format!(
        "{:<32} {:<8} {:<9} {:>6} {:>10} {:>9} {:>10} {:<24} {}\n",
        "AGENT", "STATUS", "SOFTWARE", "BOOT", "BACKLOG", "OLDEST", "DEAD", "REPLICA", "NOTES"
    );
    for e in entries {
        let status = if e.invalid.is_some() {
            "invalid"
        } else if e.online {
            "online"
        } else {
            "offline"
        };
        let birth = e.state.as_ref().and_then(|s| s.birth.as_ref());
        let (software, boot, backlog, oldest, dead, replica) = match birth {
            Some(b) => (
                b.software.clone(),
                b.boot.to_string(),
                b.outbox.store_fact_depth.to_string(),
                format!("{}s", b.outbox.oldest_store_fact_age_s),
                b.outbox.dead_letter_depth.to_string(),
                b.replica
                    .iter()
                    .map(|r| format!("{}={}", &r.stream.name()[..2], r.version))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            None => Default::default(),
        };
        let mut notes = Vec::new();
        if let Some(why) = &e.invalid {
            notes.push(format!("bad state: {why}"));
        }
        if let Some(b) = birth {
            for p in &b.paused_streams {
                notes.push(format!("{} paused: {}", p.stream, p.reason));
            }
            if !b.alarms.is_empty() {
                notes.push(format!("alarms: {}", b.alarms.join(",")));
            }
        }
        if !e.online && e.at_ms > 0 {
            notes.push(format!("since {}s", ((now_ms - e.at_ms).max(0)) / 1000));
        }
        out.push_str(&format!(
            "{:<32} {:<8} {:<9} {:>6} {:>10} {:>9} {:>10} {:<24} {}\n",
            e.agent,
            status,
            software,
            boot,
            backlog,
            oldest,
            dead,
            replica,
            notes.join("; ")
        ));
    }
    out
}
