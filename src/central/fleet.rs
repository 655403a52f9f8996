//! `relaisctl fleet status`: what every agent last said on its retained `state` and
//! `cfg/reported` topics.

use super::{BrokerLogin, CentralError};
use crate::fleet::ConfigReport;
use crate::sync::wire::{self, AgentState, Topics};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet};
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
    /// The agent's retained report on the newest config document it received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigReport>,
    /// Set when the retained `cfg/reported` message is not a valid report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_invalid: Option<String>,
}

impl FleetEntry {
    fn new(agent: String) -> FleetEntry {
        FleetEntry {
            agent,
            online: false,
            at_ms: 0,
            state: None,
            invalid: None,
            config: None,
            config_invalid: None,
        }
    }

    /// Whether the agent rejected or rolled back its newest config document.
    pub fn config_failed(&self) -> bool {
        self.config.as_ref().is_some_and(|c| c.status.is_failure())
    }
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
                // One SUBSCRIBE, so one SUBACK says both subscriptions are in place.
                client
                    .subscribe_many([
                        Filter::new(format!("{}/+/+/state", wire::TOPIC_ROOT), QoS::AtLeastOnce),
                        Filter::new(
                            format!("{}/+/+/cfg/reported", wire::TOPIC_ROOT),
                            QoS::AtLeastOnce,
                        ),
                    ])
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
                match Topics::parse(&topic) {
                    Some((agent, "state")) => {
                        let entry = entries
                            .entry(agent.clone())
                            .or_insert_with(|| FleetEntry::new(agent));
                        match serde_json::from_slice::<AgentState>(&p.payload) {
                            // An offline Will carries no birth; keep the last birth's details
                            // visible.
                            Ok(state) if state.birth.is_none() && entry.state.is_some() => {
                                entry.online = state.online;
                                entry.at_ms = state.at_ms;
                            }
                            Ok(state) => {
                                entry.online = state.online;
                                entry.at_ms = state.at_ms;
                                entry.state = Some(state);
                                entry.invalid = None;
                            }
                            Err(e) => {
                                entry.online = false;
                                entry.at_ms = 0;
                                entry.state = None;
                                entry.invalid = Some(e.to_string());
                            }
                        }
                    }
                    Some((agent, "cfg/reported")) => {
                        let entry = entries
                            .entry(agent.clone())
                            .or_insert_with(|| FleetEntry::new(agent));
                        match serde_json::from_slice::<ConfigReport>(&p.payload) {
                            Ok(report) => {
                                entry.config = Some(report);
                                entry.config_invalid = None;
                            }
                            Err(e) => {
                                entry.config = None;
                                entry.config_invalid = Some(e.to_string());
                            }
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let _ = client.disconnect().await;
    Ok(entries.into_values().collect())
}

/// The CONFIG column: the remote config version in effect, then the newest document's fate
/// when it is not simply "applied", e.g. `7`, `7 (8 rejected)`, `7 (8 pending)`.
fn config_column(e: &FleetEntry) -> String {
    match (&e.config, e.state.as_ref().and_then(|s| s.birth.as_ref())) {
        (Some(c), _) if c.status == crate::fleet::ConfigStatus::Applied => {
            c.effective_version.to_string()
        }
        (Some(c), _) => format!(
            "{} ({} {})",
            c.effective_version,
            c.version,
            c.status.name()
        ),
        (None, Some(b)) => b.config.version.to_string(),
        (None, None) => String::new(),
    }
}

/// Human table: one line per agent; agents that rejected or rolled back a config are counted
/// again below the table, because those need ops.
pub fn render(entries: &[FleetEntry], now_ms: i64) -> String {
    let mut out = format!(
        "{:<32} {:<8} {:<9} {:>6} {:>10} {:>9} {:>10} {:<24} {:<18} {}\n",
        "AGENT",
        "STATUS",
        "SOFTWARE",
        "BOOT",
        "BACKLOG",
        "OLDEST",
        "DEAD",
        "REPLICA",
        "CONFIG",
        "NOTES"
    );
    for e in entries {
        let status = if e.invalid.is_some() {
            "invalid"
        } else if e.online {
            "online"
        } else if e.state.is_none() {
            // Only a config report so far.
            "unknown"
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
        if let Some(c) = e.config.as_ref().filter(|_| e.config_failed()) {
            notes.push(format!(
                "CONFIG {} {}: {}",
                c.version,
                c.status.name().to_uppercase(),
                if c.reasons.is_empty() {
                    "no reason given".to_string()
                } else {
                    c.reasons.join(" / ")
                }
            ));
        }
        if let Some(why) = &e.config_invalid {
            notes.push(format!("bad cfg/reported: {why}"));
        }
        out.push_str(&format!(
            "{:<32} {:<8} {:<9} {:>6} {:>10} {:>9} {:>10} {:<24} {:<18} {}\n",
            e.agent,
            status,
            software,
            boot,
            backlog,
            oldest,
            dead,
            replica,
            config_column(e),
            notes.join("; ")
        ));
    }
    let failed: Vec<&str> = entries
        .iter()
        .filter(|e| e.config_failed())
        .map(|e| e.agent.as_str())
        .collect();
    if !failed.is_empty() {
        out.push_str(&format!(
            "\n{} agent(s) rejected or rolled back their newest config: {}\n",
            failed.len(),
            failed.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

    use super::*;
    use crate::fleet::ConfigStatus;

    fn report(version: u64, status: ConfigStatus, effective_version: u64) -> ConfigReport {
        ConfigReport {
            v: 1,
            agent: "s/a".into(),
            version,
            status,
            reasons: vec!["api.listen: 0.0.0.0:8080 needs api.token_file".into()],
            effective_version,
            effective_hash: "ab".into(),
            source_of_keys: None,
            at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn fleet_status_shows_the_config_in_effect_and_flags_rejections() {
        let mut ok = FleetEntry::new("store-1/till-1".into());
        ok.config = Some(report(7, ConfigStatus::Applied, 7));
        let mut bad = FleetEntry::new("store-2/till-1".into());
        bad.config = Some(report(8, ConfigStatus::Rejected, 7));
        let text = render(&[ok, bad], 0);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("CONFIG"), "{text}");
        assert!(
            lines[1].contains(" 7 ") && !lines[1].contains("REJECTED"),
            "{text}"
        );
        assert!(lines[2].contains("7 (8 rejected)"), "{text}");
        assert!(lines[2].contains("CONFIG 8 REJECTED: api.listen"), "{text}");
        assert!(
            text.contains("1 agent(s) rejected or rolled back their newest config: store-2/till-1"),
            "{text}"
        );
    }
}
