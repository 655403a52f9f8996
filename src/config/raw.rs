//! Stage 1: the file exactly as written.
//!
//! Every field is optional so that an absent key falls back to its default in
//! stage 2, and every table denies unknown fields so that a misspelt key is an
//! error instead of a silently ignored setting. Scalars whose legal values are
//! narrower than their TOML type (ranges, addresses, durations, enums) are kept
//! as plain TOML types here and checked in stage 2, which can report every
//! problem of a file at once rather than stopping at the first.
//!
//! `Spanned` keeps the byte range of each value so stage 2 can still point at
//! `line:column`.

use serde::Deserialize;
use toml::Spanned;

pub(crate) type Field<T> = Option<Spanned<T>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub agent: Option<RawAgent>,
    pub api: Option<RawApi>,
    pub replica: Option<RawReplica>,
    pub outbox: Option<RawOutbox>,
    pub disk: Option<RawDisk>,
    pub customers: Option<RawCustomers>,
    pub loyalty: Option<RawLoyalty>,
    pub pickups: Option<RawPickups>,
    pub log: Option<RawLog>,
    pub sync: Option<RawSync>,
    pub fleet: Option<RawFleet>,
    /// Parsed in stage 2 by the drivers' own types (see `config::devices`).
    pub devices: Option<toml::Table>,
    /// Parsed in stage 2 by `config::scans`.
    pub scans: Option<toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([agent])")]
pub(crate) struct RawAgent {
    pub id: Field<String>,
    pub data_dir: Field<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([api])")]
pub(crate) struct RawApi {
    pub listen: Field<String>,
    pub max_body_bytes: Field<i64>,
    pub token_file: Field<String>,
    pub rate_limit_per_client: Field<i64>,
    pub rate_limit_burst: Field<i64>,
    pub max_connections: Field<i64>,
    pub max_connections_per_client: Field<i64>,
    pub max_streams: Field<i64>,
    pub header_read_timeout: Field<String>,
    pub allowed_hosts: Field<Vec<String>>,
    pub allowed_origins: Field<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([replica])")]
pub(crate) struct RawReplica {
    /// A duration string (every stream) or a table of them per stream: checked in stage 2.
    pub stale_after: Field<toml::Value>,
    pub readers: Field<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([outbox])")]
pub(crate) struct RawOutbox {
    pub group_commit_max: Field<i64>,
    pub telemetry_quota_rows: Field<i64>,
    pub history_keep: Field<String>,
    pub keys_keep: Field<String>,
    pub returns_keep: Field<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([disk])")]
pub(crate) struct RawDisk {
    pub low_free_mb: Field<i64>,
    pub damaged_copies_keep: Field<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([customers])")]
pub(crate) struct RawCustomers {
    pub card_hash_key_file: Field<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([loyalty])")]
pub(crate) struct RawLoyalty {
    pub offline_burn_cap: Field<i64>,
    pub earn_per_minor_units: Field<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([pickups])")]
pub(crate) struct RawPickups {
    pub protect_reserved: Field<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([log])")]
pub(crate) struct RawLog {
    pub level: Field<String>,
    pub format: Field<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([fleet])")]
pub(crate) struct RawFleet {
    pub ops_public_keys_file: Field<String>,
    pub rollback_after: Field<String>,
    pub remote_may: Field<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([sync])")]
pub(crate) struct RawSync {
    pub broker: Field<String>,
    pub username: Field<String>,
    pub client_id: Field<String>,
    pub password_file: Field<String>,
    pub ca_file: Field<String>,
    pub client_cert_file: Field<String>,
    pub client_key_file: Field<String>,
    pub keep_alive: Field<String>,
    pub ack: Field<String>,
    pub ack_timeout: Field<String>,
    pub batch_max_events: Field<i64>,
    pub batch_max_bytes: Field<i64>,
    pub inflight_batches: Field<i64>,
    pub reconnect_max: Field<String>,
    pub puback_timeout: Field<String>,
    pub write_timeout: Field<String>,
    pub snapshot_url: Field<String>,
}
