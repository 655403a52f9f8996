//! Replica deltas (placeholder; being written).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Delta {
    pub stream: super::Stream,
    pub version: u64,
    pub ops: Vec<serde_json::Value>,
}
