//! Raw, file-shaped types of a firmware profile: what serde reads before validation. Every table
//! uses `deny_unknown_fields` so a misspelt key is an error naming that key instead of a setting
//! silently ignored in a store. Values that need checking (hex, globs, ranges) stay strings or
//! options here; `validate` turns them into the typed [`super::Profile`].

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    pub profile: RawHeader,
    #[serde(rename = "match", default)]
    pub matching: RawMatch,
    pub transport: Option<RawTransport>,
    pub framing: Option<RawFraming>,
    #[serde(default)]
    pub init: Vec<RawCommand>,
    pub health: Option<RawHealth>,
    #[serde(default)]
    pub quirks: BTreeMap<String, bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeader {
    pub id: String,
    pub name: String,
    pub version: String,
    pub vendor: String,
    pub model: String,
    pub kind: super::DeviceKind,
    pub description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMatch {
    #[serde(default)]
    pub usb_vid_pid: Vec<String>,
    pub serial_by_id: Option<String>,
    pub pcsc_reader_name: Option<String>,
    pub atr: Option<String>,
    pub llrp_vendor: Option<u32>,
    #[serde(default)]
    pub fallback: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTransport {
    pub baud: Option<u32>,
    pub data_bits: Option<u8>,
    pub parity: Option<super::Parity>,
    pub stop_bits: Option<u8>,
    pub flow_control: Option<super::FlowControl>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFraming {
    pub prefix: Option<String>,
    pub terminator: Option<String>,
    pub suffix: Option<String>,
    pub gs_substitute: Option<String>,
    pub aim_ids: Option<bool>,
    pub max_frame_bytes: Option<usize>,
    pub inter_byte_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCommand {
    pub description: Option<String>,
    pub send: Option<String>,
    pub send_hex: Option<String>,
    pub expect: Option<String>,
    pub expect_hex: Option<String>,
    pub timeout_ms: Option<u64>,
    // Optional at the serde level on purpose: a missing citation must produce our own error that
    // names `init[N].source` and explains the rule, not serde's generic "missing field".
    pub source: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub description: Option<String>,
    pub send: Option<String>,
    pub send_hex: Option<String>,
    pub expect: Option<String>,
    pub expect_hex: Option<String>,
    pub timeout_ms: Option<u64>,
    pub interval_s: Option<u64>,
    pub source: Option<String>,
}
