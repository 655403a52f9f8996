//! `relaisctl config push` and `relaisctl cmd send`: deliver signed documents (src/fleet) to
//! agents and wait for their answers on `cfg/reported` and `cmd/res`.
//!
//! A config goes to `cfg/desired` **retained**, so an agent offline now gets it at its next
//! connection; a command goes to `cmd/req` not retained, because an order for now must not fire
//! days later. There is no fleet topic: a fleet-wide (`agent = "*"`) document is published to
//! each agent's own topic, which keeps the broker ACL at one line per agent pattern.

use super::{BrokerLogin, CentralError};
use crate::config::AgentId;
use crate::fleet::{
    CommandResult, CommandStatus, ConfigReport, DocumentKind, FLEET_WIDE, FleetError,
    SignedDocument,
};
use crate::sync::wire::Topics;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest wait for the broker to acknowledge the publishes themselves.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// Topic filters per SUBSCRIBE packet when waiting on many agents.
const FILTERS_PER_SUBSCRIBE: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Central(#[from] CentralError),
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error("{path} line {line}: {reason}")]
    AgentsFile {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{0}")]
    Usage(String),
}

/// One `STORE/AGENT` per line; blank lines and `#` comments skipped, duplicates dropped.
pub fn read_agents_file(path: &Path) -> Result<Vec<AgentId>, OpsError> {
    let text = std::fs::read_to_string(path).map_err(|source| CentralError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut agents = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let agent: AgentId = line.parse().map_err(|e| OpsError::AgentsFile {
            path: path.to_path_buf(),
            line: index + 1,
            reason: format!("{line:?}: {e}"),
        })?;
        if !agents.contains(&agent) {
            agents.push(agent);
        }
    }
    if agents.is_empty() {
        return Err(OpsError::AgentsFile {
            path: path.to_path_buf(),
            line: 0,
            reason: "lists no agent (one STORE/AGENT per line)".into(),
        });
    }
    Ok(agents)
}

/// Read a signed document from a file and check it fits the push: its kind, and an audience
/// that includes every target (the agent would refuse it otherwise). The signature is checked
/// by the agents, against the keys they pin.
pub fn read_signed(
    path: &Path,
    kind: DocumentKind,
    targets: &[AgentId],
) -> Result<SignedDocument, OpsError> {
    let bytes = std::fs::read(path).map_err(|source| CentralError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let doc = SignedDocument::from_json(&bytes)
        .map_err(|e| OpsError::Usage(format!("{}: {e}", path.display())))?;
    if doc.kind != kind {
        return Err(OpsError::Usage(format!(
            "{} is a {} document, not a {kind}",
            path.display(),
            doc.kind
        )));
    }
    if doc.agent != FLEET_WIDE
        && let Some(other) = targets.iter().find(|t| t.to_string() != doc.agent)
    {
        return Err(OpsError::Usage(format!(
            "{} is signed for {}; {other} would refuse it. Sign one for {other}, or a fleet-wide one (--agent '*')",
            path.display(),
            doc.agent
        )));
    }
    Ok(doc)
}

/// What became of a config push to one agent.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PushOutcome {
    /// Retained on the broker; not waited for (`--no-wait`).
    Published,
    /// The agent reported on this version with a final status.
    Reported { report: ConfigReport },
    /// No final report in time. `last`: a `pending` report for this version, if any.
    TimedOut { last: Option<ConfigReport> },
    /// The broker refused the publish (PUBACK reason code).
    Refused { reason: String },
}

#[derive(Clone, Debug, Serialize)]
pub struct PushResult {
    pub agent: String,
    pub version: u64,
    #[serde(flatten)]
    pub outcome: PushOutcome,
    /// The agent's retained report from before this push (another version), if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<ConfigReport>,
}

impl PushResult {
    fn failed(&self) -> bool {
        match &self.outcome {
            PushOutcome::Reported { report } => report.status.is_failure(),
            PushOutcome::Refused { .. } => true,
            PushOutcome::Published | PushOutcome::TimedOut { .. } => false,
        }
    }
}

/// Exit status of `config push`: 0 every agent applied (or, without waiting, every publish was
/// accepted), 1 one rejected or rolled back (or the broker refused), 2 one did not answer.
pub fn push_exit_code(results: &[PushResult]) -> u8 {
    if results.iter().any(PushResult::failed) {
        1
    } else if results
        .iter()
        .any(|r| matches!(r.outcome, PushOutcome::TimedOut { .. }))
    {
        2
    } else {
        0
    }
}

/// One line per agent, for people.
pub fn render_push(results: &[PushResult], waited: Duration) -> String {
    let mut out = String::new();
    for r in results {
        let line = match &r.outcome {
            PushOutcome::Published => {
                "published (retained); the agent applies it when connected, see `relaisctl fleet status`"
                    .to_string()
            }
            PushOutcome::Reported { report } => {
                let mut s = format!(
                    "{} (in effect: version {}, hash {})",
                    report.status.name(),
                    report.effective_version,
                    short_hash(&report.effective_hash)
                );
                for reason in &report.reasons {
                    s.push_str(&format!("\n    - {reason}"));
                }
                s
            }
            PushOutcome::TimedOut { last } => {
                let mut s = format!(
                    "no final report within {}s: the agent may be offline (the document stays retained and applies when it connects)",
                    waited.as_secs()
                );
                if let Some(last) = last {
                    s.push_str(&format!("; last report: {}", last.status.name()));
                }
                s
            }
            PushOutcome::Refused { reason } => format!(
                "the broker refused the publish ({reason}): check that --username may write relais/v1/#"
            ),
        };
        out.push_str(&format!("{} version {}: {line}\n", r.agent, r.version));
        if let Some(before) = &r.before
            && before.effective_version >= r.version
            && !matches!(r.outcome, PushOutcome::Reported { .. })
        {
            out.push_str(&format!(
                "    note: the agent already runs version {}; it refuses versions that are not newer\n",
                before.effective_version
            ));
        }
    }
    out
}

fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Publish each `(agent, document)` to `cfg/desired` (QoS 1, retained) and, with `wait`,
/// collect each agent's report on this document's version until it is final or `wait` passed.
pub async fn push_config(
    login: &BrokerLogin,
    docs: Vec<(AgentId, SignedDocument)>,
    wait: Option<Duration>,
) -> Result<Vec<PushResult>, OpsError> {
    let client_id = format!("relaisctl-config-{}", std::process::id());
    let (client, mut eventloop) = AsyncClient::new(login.options(&client_id)?, 64);
    let agents: Vec<String> = docs.iter().map(|(a, _)| a.to_string()).collect();
    let versions: HashMap<String, u64> = docs
        .iter()
        .map(|(a, d)| (a.to_string(), d.version))
        .collect();
    let publishes: Vec<(String, String, Vec<u8>)> = docs
        .iter()
        .map(|(a, d)| {
            (
                a.to_string(),
                Topics::new(&a.to_string()).cfg_desired(),
                d.to_json(),
            )
        })
        .collect();
    let filters: Vec<Filter> = if wait.is_some() {
        agents
            .iter()
            .map(|a| Filter::new(Topics::new(a).cfg_reported(), QoS::AtLeastOnce))
            .collect()
    } else {
        Vec::new()
    };
    let order: VecDeque<String> = publishes.iter().map(|(a, _, _)| a.clone()).collect();
    // Subscribe before publishing, on the same connection: the broker handles both in order,
    // so no report sent in reaction to the document can be missed.
    let producer = spawn_producer(client.clone(), filters, publishes, true);

    let mut results: BTreeMap<String, PushResult> = BTreeMap::new();
    let mut before: HashMap<String, ConfigReport> = HashMap::new();
    let mut pending: HashMap<String, ConfigReport> = HashMap::new();
    let mut acks = PubAcks::new(order);
    let publish_deadline = Instant::now() + PUBLISH_TIMEOUT;
    let mut wait_deadline: Option<Instant> = None;
    loop {
        let all_acked = acks.remaining() == 0;
        if all_acked && wait_deadline.is_none() {
            match wait {
                None => break,
                Some(w) => wait_deadline = Some(Instant::now() + w),
            }
        }
        if all_acked && results.len() == agents.len() {
            break;
        }
        let deadline = wait_deadline.unwrap_or(publish_deadline);
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            if !all_acked {
                return Err(CentralError::Broker(format!(
                    "{} of {} publishes not acknowledged within {}s",
                    acks.remaining(),
                    agents.len(),
                    PUBLISH_TIMEOUT.as_secs()
                ))
                .into());
            }
            break;
        };
        let event = match tokio::time::timeout(left, eventloop.poll()).await {
            Err(_) => continue,
            Ok(Err(e)) => return Err(CentralError::Broker(e.to_string()).into()),
            Ok(Ok(event)) => event,
        };
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => acks.sent(pkid),
            Event::Incoming(Packet::PubAck(ack)) => {
                // No subscriber is normal for a retained document: the agent gets it later.
                if let Some((agent, Err(reason))) = acks.acked(ack.pkid, &ack.reason, true) {
                    let version = versions.get(&agent).copied().unwrap_or(0);
                    results.insert(
                        agent.clone(),
                        PushResult {
                            agent,
                            version,
                            outcome: PushOutcome::Refused { reason },
                            before: None,
                        },
                    );
                }
            }
            Event::Incoming(Packet::Publish(p)) => {
                let topic = String::from_utf8_lossy(&p.topic);
                let Some((agent, "cfg/reported")) = Topics::parse(&topic) else {
                    continue;
                };
                let Some(&version) = versions.get(&agent) else {
                    continue;
                };
                if results.contains_key(&agent) {
                    continue;
                }
                let Ok(report) = serde_json::from_slice::<ConfigReport>(&p.payload) else {
                    tracing::warn!(%agent, "unreadable cfg/reported message ignored");
                    continue;
                };
                if report.version != version {
                    before.entry(agent).or_insert(report);
                } else if report.status.is_final() {
                    results.insert(
                        agent.clone(),
                        PushResult {
                            agent,
                            version,
                            outcome: PushOutcome::Reported { report },
                            before: None,
                        },
                    );
                } else {
                    pending.insert(agent, report);
                }
            }
            _ => {}
        }
    }
    let _ = producer.await;
    disconnect(&client, &mut eventloop).await;
    Ok(agents
        .into_iter()
        .map(|agent| {
            let mut result = results.remove(&agent).unwrap_or_else(|| PushResult {
                agent: agent.clone(),
                version: versions.get(&agent).copied().unwrap_or(0),
                outcome: if wait.is_some() {
                    PushOutcome::TimedOut {
                        last: pending.remove(&agent),
                    }
                } else {
                    PushOutcome::Published
                },
                before: None,
            });
            result.before = before.remove(&agent);
            result
        })
        .collect())
}

/// What became of a command.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CommandOutcome {
    Answered {
        result: CommandResult,
    },
    /// The broker said nobody subscribes to the agent's `cmd/req`: it is offline (or runs a
    /// version without remote commands). Commands are not queued for offline agents.
    NotSubscribed,
    /// Delivered, but no answer for this command's id in time.
    TimedOut,
    /// The broker refused the publish.
    Refused {
        reason: String,
    },
}

/// 0 ok, 1 error or rejected (or refused by the broker), 2 no answer.
pub fn command_exit_code(outcome: &CommandOutcome) -> u8 {
    match outcome {
        CommandOutcome::Answered { result } => match result.status {
            CommandStatus::Ok => 0,
            CommandStatus::Error | CommandStatus::Rejected => 1,
        },
        CommandOutcome::Refused { .. } => 1,
        CommandOutcome::NotSubscribed | CommandOutcome::TimedOut => 2,
    }
}

/// Publish a command document to `agent`'s `cmd/req` (QoS 1, not retained) and wait up to
/// `timeout` for the `cmd/res` answer with its `version`.
pub async fn send_command(
    login: &BrokerLogin,
    agent: &AgentId,
    doc: &SignedDocument,
    timeout: Duration,
) -> Result<CommandOutcome, OpsError> {
    if doc.kind != DocumentKind::Command {
        return Err(OpsError::Usage(format!(
            "a {} document cannot be sent as a command",
            doc.kind
        )));
    }
    let agent = agent.to_string();
    let topics = Topics::new(&agent);
    let client_id = format!("relaisctl-cmd-{}", std::process::id());
    let (client, mut eventloop) = AsyncClient::new(login.options(&client_id)?, 16);
    let producer = spawn_producer(
        client.clone(),
        vec![Filter::new(topics.cmd_res(), QoS::AtLeastOnce)],
        vec![(agent.clone(), topics.cmd_req(), doc.to_json())],
        false,
    );
    let mut acks = PubAcks::new(VecDeque::from([agent.clone()]));
    let deadline = Instant::now() + timeout;
    let outcome = loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            if acks.remaining() > 0 {
                return Err(CentralError::Broker(format!(
                    "the publish was not acknowledged within {}s",
                    timeout.as_secs()
                ))
                .into());
            }
            break CommandOutcome::TimedOut;
        };
        let event = match tokio::time::timeout(left, eventloop.poll()).await {
            Err(_) => continue,
            Ok(Err(e)) => return Err(CentralError::Broker(e.to_string()).into()),
            Ok(Ok(event)) => event,
        };
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => acks.sent(pkid),
            Event::Incoming(Packet::PubAck(ack)) => {
                if ack.reason == PubAckReason::NoMatchingSubscribers {
                    break CommandOutcome::NotSubscribed;
                }
                if let Some((_, Err(reason))) = acks.acked(ack.pkid, &ack.reason, false) {
                    break CommandOutcome::Refused { reason };
                }
            }
            Event::Incoming(Packet::Publish(p)) => {
                if p.topic.as_ref() != topics.cmd_res().as_bytes() {
                    continue;
                }
                match serde_json::from_slice::<CommandResult>(&p.payload) {
                    Ok(result) if result.version == doc.version => {
                        break CommandOutcome::Answered { result };
                    }
                    Ok(other) => {
                        tracing::info!(version = other.version, "answer to another command ignored")
                    }
                    Err(e) => tracing::warn!("unreadable cmd/res message ignored: {e}"),
                }
            }
            _ => {}
        }
    };
    producer.abort();
    disconnect(&client, &mut eventloop).await;
    Ok(outcome)
}

/// Queue the subscriptions, then the publishes, on the client's request channel. A task of its
/// own: the channel is bounded and only drains while the event loop is polled.
fn spawn_producer(
    client: AsyncClient,
    filters: Vec<Filter>,
    publishes: Vec<(String, String, Vec<u8>)>,
    retain: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut filters = filters;
        while !filters.is_empty() {
            let rest = filters.split_off(filters.len().min(FILTERS_PER_SUBSCRIBE));
            if client.subscribe_many(filters).await.is_err() {
                return;
            }
            filters = rest;
        }
        for (_, topic, payload) in publishes {
            if client
                .publish(topic, QoS::AtLeastOnce, retain, payload)
                .await
                .is_err()
            {
                return;
            }
        }
    })
}

/// Which agent each packet id belongs to. rumqttc reports `Outgoing::Publish(pkid)` in the
/// order the publishes were queued, which is the order of `waiting`.
struct PubAcks {
    waiting: VecDeque<String>,
    by_pkid: HashMap<u16, String>,
    remaining: usize,
}

impl PubAcks {
    fn new(order: VecDeque<String>) -> PubAcks {
        let remaining = order.len();
        PubAcks {
            waiting: order,
            by_pkid: HashMap::new(),
            remaining,
        }
    }

    fn remaining(&self) -> usize {
        self.remaining
    }

    fn sent(&mut self, pkid: u16) {
        if let Some(agent) = self.waiting.pop_front() {
            self.by_pkid.insert(pkid, agent);
        }
    }

    /// The agent a PUBACK is for, and whether the broker accepted the publish.
    fn acked(
        &mut self,
        pkid: u16,
        reason: &PubAckReason,
        no_subscribers_ok: bool,
    ) -> Option<(String, Result<(), String>)> {
        let agent = self.by_pkid.remove(&pkid)?;
        self.remaining = self.remaining.saturating_sub(1);
        let accepted = matches!(reason, PubAckReason::Success)
            || (no_subscribers_ok && matches!(reason, PubAckReason::NoMatchingSubscribers));
        Some((
            agent,
            if accepted {
                Ok(())
            } else {
                Err(format!("{reason:?}"))
            },
        ))
    }
}

async fn disconnect(client: &AsyncClient, eventloop: &mut EventLoop) {
    let _ = client.disconnect().await;
    // Let the DISCONNECT go out.
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

    use super::*;
    use crate::fleet::ConfigStatus;

    fn result(status: Option<ConfigStatus>) -> PushResult {
        PushResult {
            agent: "s/a".into(),
            version: 3,
            outcome: match status {
                None => PushOutcome::TimedOut { last: None },
                Some(status) => PushOutcome::Reported {
                    report: ConfigReport {
                        v: 1,
                        agent: "s/a".into(),
                        version: 3,
                        status,
                        reasons: vec![],
                        effective_version: 3,
                        effective_hash: String::new(),
                        source_of_keys: None,
                        at: String::new(),
                    },
                },
            },
            before: None,
        }
    }

    #[test]
    fn push_exit_status_is_1_for_any_refusal_then_2_for_silence() {
        assert_eq!(push_exit_code(&[result(Some(ConfigStatus::Applied))]), 0);
        assert_eq!(
            push_exit_code(&[result(None), result(Some(ConfigStatus::RolledBack))]),
            1
        );
        assert_eq!(
            push_exit_code(&[result(Some(ConfigStatus::Applied)), result(None)]),
            2
        );
    }

    #[test]
    fn an_agents_file_lists_valid_unique_agents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agents.txt");
        std::fs::write(
            &path,
            "# stores\nstore-1/till-1\n\nstore-2/till-1\nstore-1/till-1\n",
        )
        .unwrap();
        let agents = read_agents_file(&path).unwrap();
        assert_eq!(agents.len(), 2);
        std::fs::write(&path, "store-1/till-1\nstore 2/till\n").unwrap();
        let err = read_agents_file(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
