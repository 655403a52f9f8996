//! Everything that crosses the MQTT link, as versioned types. Only the sync module (and the
//! central-side tools in `central/`) know topics and wire shapes; docs/contract.md and
//! docs/asyncapi.yaml describe exactly these types; docs/schemas/ is generated from them
//! (`sync::schemas`, ADR 0027).

use crate::replica::Stream;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Version of the wire contract; every message carries it as `v`.
pub const CONTRACT_VERSION: u32 = 1;

/// An agent id as every message carries it: `{store}/{agent}`, each part 1-64 characters of
/// `A-Z a-z 0-9 _ -` (what the config accepts), equal to the agent of the topic.
pub const AGENT_ID_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}/[A-Za-z0-9_-]{1,64}$";

/// Root of every topic: `relais/v1/{store}/{agent}/...`.
pub const TOPIC_ROOT: &str = "relais/v1";

/// Downlink messages larger than this are refused before parsing.
pub const MAX_DOWNLINK_BYTES: usize = 4 << 20;

/// Topics of one agent. The agent id is also its MQTT username (or certificate CN), so the
/// broker ACL `pattern readwrite relais/v1/%u/#` confines each agent to these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    base: String,
}

impl Topics {
    pub fn new(agent_id: &str) -> Topics {
        Topics {
            base: format!("{TOPIC_ROOT}/{agent_id}"),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }
    pub fn state(&self) -> String {
        format!("{}/state", self.base)
    }
    pub fn evt(&self) -> String {
        format!("{}/evt", self.base)
    }
    pub fn ack(&self) -> String {
        format!("{}/ack", self.base)
    }
    pub fn rpl(&self, stream: Stream) -> String {
        format!("{}/rpl/{}", self.base, stream.name())
    }
    pub fn rpl_all(&self) -> String {
        format!("{}/rpl/+", self.base)
    }
    pub fn cfg_desired(&self) -> String {
        format!("{}/cfg/desired", self.base)
    }
    pub fn cfg_reported(&self) -> String {
        format!("{}/cfg/reported", self.base)
    }
    pub fn cmd_req(&self) -> String {
        format!("{}/cmd/req", self.base)
    }
    pub fn cmd_res(&self) -> String {
        format!("{}/cmd/res", self.base)
    }
    /// The agent's own probe, published and read back at every connect: proof that the
    /// broker lets this identity write *and* read its own topics (docs/contract.md).
    pub fn echo(&self) -> String {
        format!("{}/echo", self.base)
    }
    /// Where the agent says how far its store facts go ([`FactsProgress`], ADR 0026).
    pub fn facts(&self) -> String {
        format!("{}/facts", self.base)
    }

    /// Agent id (`store/agent`) and the rest of a topic under `relais/v1/`, for central-side
    /// consumers subscribed with wildcards.
    pub fn parse(topic: &str) -> Option<(String, &str)> {
        let rest = topic.strip_prefix(TOPIC_ROOT)?.strip_prefix('/')?;
        let mut parts = rest.splitn(3, '/');
        let store = parts.next()?;
        let agent = parts.next()?;
        let tail = parts.next()?;
        if store.is_empty() || agent.is_empty() {
            return None;
        }
        Some((format!("{store}/{agent}"), tail))
    }
}

/// Uplink on `evt`: a batch of outbox events (each an [`crate::outbox::Envelope`]).
///
/// The agent writes this JSON directly from stored rows (no re-serialisation); consumers read
/// it with this type.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    description = "Uplink on `evt`: a batch of outbox events of one retention class, in \
    increasing `seq` order (docs/contract.md §3.2)."
)]
pub struct EventBatch {
    #[schemars(extend("const" = 1))]
    pub v: u32,
    #[schemars(regex(pattern = AGENT_ID_PATTERN))]
    pub agent: String,
    #[schemars(length(min = 1))]
    pub events: Vec<crate::outbox::Envelope>,
}

/// Downlink on `ack`: central's application acknowledgment, "these sequence numbers are
/// durable at central". Inclusive ranges `[first, last]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    #[schemars(extend("const" = 1))]
    pub v: u32,
    pub seqs: Vec<[u64; 2]>,
}

impl Ack {
    /// Compress sorted or unsorted sequence numbers into inclusive ranges.
    pub fn from_seqs(mut seqs: Vec<u64>) -> Ack {
        seqs.sort_unstable();
        seqs.dedup();
        let mut ranges: Vec<[u64; 2]> = Vec::new();
        for seq in seqs {
            match ranges.last_mut() {
                Some(last) if last[1] + 1 == seq => last[1] = seq,
                _ => ranges.push([seq, seq]),
            }
        }
        Ack {
            v: CONTRACT_VERSION,
            seqs: ranges,
        }
    }

    /// Number of sequence numbers covered, saturating (a hostile ack cannot overflow).
    pub fn count(&self) -> u64 {
        self.seqs
            .iter()
            .map(|[a, b]| b.saturating_sub(*a).saturating_add(1))
            .fold(0u64, u64::saturating_add)
    }
}

/// Retained on `state`: the birth message at every connect, and (as the Will) the death.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct AgentState {
    #[schemars(extend("const" = 1))]
    pub v: u32,
    #[schemars(regex(pattern = AGENT_ID_PATTERN))]
    pub agent: String,
    pub online: bool,
    /// Unix ms when this message was built (for the Will: when the connection was made).
    pub at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth: Option<Birth>,
}

impl AgentState {
    /// What the Will and a clean shutdown say: offline, no birth details.
    pub fn offline(agent: &str) -> AgentState {
        AgentState {
            v: CONTRACT_VERSION,
            agent: agent.to_string(),
            online: false,
            at_ms: crate::storage::now_unix_ms(),
            birth: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Birth {
    /// Agent software version (Cargo package version).
    pub software: String,
    pub boot: u64,
    pub config: ConfigState,
    pub replica: Vec<ReplicaStreamState>,
    pub outbox: OutboxState,
    #[serde(default)]
    pub devices: Vec<DeviceSummary>,
    /// Streams whose downlink is paused because central sent something unusable.
    #[serde(default)]
    pub paused_streams: Vec<PausedStream>,
    #[serde(default)]
    pub alarms: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct ConfigState {
    /// Version of the remote configuration document in effect (0: local file only).
    pub version: u64,
    /// sha256 of the effective configuration rendered as TOML.
    pub hash: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct ReplicaStreamState {
    pub stream: Stream,
    pub version: u64,
    pub applied_ms: i64,
    /// When central's last heartbeat confirmed `version` (unix ms; 0 when never). Absent from
    /// agents older than the heartbeat.
    #[serde(default)]
    pub confirmed_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct OutboxState {
    pub store_fact_depth: u64,
    pub telemetry_depth: u64,
    pub dead_letter_depth: u64,
    /// Age in seconds of the oldest unsent store fact (0 when none).
    pub oldest_store_fact_age_s: u64,
    pub last_seq: u64,
    /// The newest store fact's number in `fact_epoch` (ADR 0026); 0 from agents before it.
    #[serde(default)]
    pub last_fact_seq: u64,
    #[serde(default)]
    pub fact_epoch: u32,
}

/// On `facts` (QoS 1, not retained), after every connect and then periodically while
/// connected: "every store fact of epoch `epoch` numbered 1 through `through` is committed
/// here, and no other store fact has a `seq` up to `at_seq`" (ADR 0026).
///
/// Central holding every fact of the epoch through `through` therefore holds every store fact
/// of this agent with `seq ≤ at_seq`, whatever telemetry was dropped in between: that `at_seq`
/// is a watermark it may publish. Holding fewer, its watermark is the `seq` of the last fact
/// it holds without a gap.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FactsProgress {
    #[schemars(extend("const" = 1))]
    pub v: u32,
    #[schemars(regex(pattern = AGENT_ID_PATTERN))]
    pub agent: String,
    pub epoch: u32,
    pub through: u64,
    pub at_seq: u64,
    /// Unix ms when the figures were read.
    pub at_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct DeviceSummary {
    pub id: String,
    pub state: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct PausedStream {
    pub stream: Stream,
    pub reason: String,
}

/// Downlink on `rpl/{stream}`: a delta, a control message telling the agent to refetch, or a
/// heartbeat saying the stream is still current.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(untagged)]
pub enum RplMessage {
    Control(RplControl),
    Heartbeat(RplHeartbeat),
    Delta(crate::replica::delta::Delta),
}

/// Central's "`stream` is current at `current_version`", sent on `rpl/{stream}` while the
/// stream does not change, so that a stream unchanged for days is not taken for a stale one:
/// the agent's freshness counts from the later of its last change and the last heartbeat at
/// its live version. A heartbeat ahead of the live version means deltas were lost (the agent
/// refetches, as for a delta gap); one behind it is a replay (ignored).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RplHeartbeat {
    #[schemars(extend("const" = 1))]
    pub v: u32,
    pub stream: Stream,
    /// The newest version central published of `stream`.
    pub current_version: u64,
    /// Central's clock when it sent this (unix ms): a heartbeat that waited in a queue
    /// confirms the stream only as of then.
    pub at_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RplControl {
    #[schemars(extend("const" = 1))]
    pub v: u32,
    pub stream: Stream,
    /// Always true: the only control message so far.
    #[schemars(extend("const" = true))]
    pub must_refetch: bool,
    /// Manifest to fetch; the configured `sync.snapshot_url` when absent.
    #[serde(default)]
    #[schemars(regex(pattern = "^https://"))]
    pub manifest_url: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_compresses_sequence_numbers_into_ranges() {
        let ack = Ack::from_seqs(vec![5, 1, 2, 3, 9, 10, 3]);
        assert_eq!(ack.seqs, vec![[1, 3], [5, 5], [9, 10]]);
        assert_eq!(ack.count(), 6);
    }

    #[test]
    fn a_topic_names_its_agent_and_its_kind() {
        let t = Topics::new("store-12/till-1");
        assert_eq!(t.evt(), "relais/v1/store-12/till-1/evt");
        assert_eq!(
            Topics::parse("relais/v1/store-12/till-1/rpl/products"),
            Some(("store-12/till-1".to_string(), "rpl/products"))
        );
        assert_eq!(Topics::parse("other/v1/a/b/evt"), None);
    }
}
