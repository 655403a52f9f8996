//! Agent configuration: `/etc/relais/relais.toml` (or `--config PATH`).
//!
//! Loading is two stages. [`raw`] deserializes the file into all-optional
//! structs that reject unknown keys; [`validate`] turns those into the typed
//! [`Config`], filling defaults and collecting *every* problem so an operator
//! fixing a store box over a slow remote session sees them all in one go.
//! Any [`ConfigError`] should end the process with [`ConfigError::EXIT_CODE`].

mod defaults;
mod devices;
mod error;
pub mod layers;
pub mod live;
mod raw;
pub(crate) mod render;
mod scans;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use devices::DevicesConfig;
pub use error::{ConfigError, ConfigProblem, Location};
pub use scans::ScansConfig;
pub use validate::AgentIdError;

/// The embedded demo identity, which `relais` runs under until a bundle names the box.
pub fn default_agent_id() -> AgentId {
    defaults::agent_id()
}

pub const DEFAULT_CONFIG_PATH: &str = "/etc/relais/relais.toml";

/// Environment variable the binary accepts in place of `--config`.
pub const CONFIG_ENV: &str = "RELAIS_CONFIG";

/// Where the effective configuration came from, for the startup log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    BuiltInDefaults,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(p) => write!(f, "{}", p.display()),
            ConfigSource::BuiltInDefaults => f.write_str("built-in defaults"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub agent: AgentConfig,
    pub api: ApiConfig,
    pub replica: ReplicaConfig,
    pub outbox: OutboxConfig,
    pub disk: DiskConfig,
    pub customers: CustomersConfig,
    pub loyalty: LoyaltyConfig,
    pub pickups: PickupsConfig,
    pub log: LogConfig,
    pub sync: SyncConfig,
    pub fleet: FleetConfig,
    pub devices: DevicesConfig,
    /// `[scans]`: scale-label layouts and loyalty-card patterns.
    pub scans: ScansConfig,
}

/// `[fleet]`: remote configuration and commands from central ops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// Ops public keys pinned at provisioning; without it, remote documents are refused.
    pub ops_public_keys_file: Option<PathBuf>,
    /// A remote config after which the broker stays unreachable this long is rolled back.
    pub rollback_after: Duration,
    /// What a signed remote document may do that weakens the box (`layers::Weakening`); none
    /// by default.
    pub remote_may: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub id: AgentId,
    /// Always absolute.
    pub data_dir: PathBuf,
}

/// `store/agent`; each part is safe as an MQTT username and topic segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentId {
    pub store: String,
    pub agent: String,
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.store, self.agent)
    }
}

impl FromStr for AgentId {
    type Err = AgentIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        validate::parse_agent_id(s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// Bearer tokens, one per line (see `api::auth`). Required unless `listen` is loopback.
    pub token_file: Option<PathBuf>,
    /// Requests per second per client address; 0 = unlimited.
    pub rate_limit_per_client: u32,
    pub rate_limit_burst: u32,
    /// Connections open at once, in all and from one address; over either: 503 and close.
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// Live streams (SSE, NDJSON) open at once.
    pub max_streams: usize,
    /// Time to send a request's headers; also the idle keep-alive time.
    pub header_read_timeout: Duration,
    /// Host names (besides IP literals, `localhost` and this box's own name) a request's
    /// `Host` may carry: a till that reaches the agent by name. Lower case, no port.
    pub allowed_hosts: Vec<String>,
    /// Browser origins (`scheme://host[:port]`) besides the agent's own that may send
    /// requests: a web POS served from another address. Lower case.
    pub allowed_origins: Vec<String>,
}

/// `[loyalty]`: what the store may do with points while central cannot confirm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoyaltyConfig {
    /// Points one customer may burn here beyond central's last confirmed balance: the most a
    /// store cut off from central can lose to the same points being spent in two places.
    pub offline_burn_cap: i64,
    /// Minor currency units of a ticket line that earn one point for the customer it names
    /// (rounded down per line); 0: tickets earn nothing.
    pub earn_per_minor_units: i64,
}

/// `[pickups]`: web orders the store hands over or ships.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PickupsConfig {
    /// Refuse a till sale that would take a SKU's on-hand below the units reserved for web
    /// orders (409 `reserved_stock`). Off by default: a store may prefer to sell and let
    /// central re-source the order.
    pub protect_reserved: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// How old each stream may be before its answers are flagged stale.
    pub stale_after: crate::replica::freshness::StaleAfter,
    pub readers: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxConfig {
    pub group_commit_max: usize,
    pub telemetry_quota_rows: u64,
    /// Stock movements, loyalty operations and hand-over records are kept at least this long,
    /// then pruned once central's replica covers them (docs/privacy.md, ADR 0025).
    pub history_keep: Duration,
    /// Stored idempotency answers are kept at least this long (a till's retry window), then
    /// pruned once central acknowledged their event.
    pub keys_keep: Duration,
    /// `outbox.returns_keep`: a ticket's lines are kept this long for returns naming it.
    pub returns_keep: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    pub low_free_mb: u64,
    /// Damaged databases moved aside (`*.damaged-*`) are deleted this long after the move:
    /// they may hold personal data (docs/security.md).
    pub damaged_copies_keep: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomersConfig {
    /// Always absolute.
    pub card_hash_key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A level or an `EnvFilter`-style directive list, already checked for
    /// syntax; hand it to `EnvFilter::try_new`.
    pub level: String,
    pub format: LogFormat,
}

/// `[sync]`: the MQTT link to central. Without `broker` the agent runs offline: it records
/// and serves everything locally, and delivers the outbox once a broker is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    pub broker: Option<BrokerUrl>,
    /// MQTT username; the agent id when absent (the broker ACL keys on it).
    pub username: Option<String>,
    /// MQTT client id; the agent id when absent. For brokers that refuse a '/' in client ids.
    pub client_id: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Pinned CA for the broker and the snapshot server; the system roots when absent.
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub keep_alive: Duration,
    pub ack: AckMode,
    pub ack_timeout: Duration,
    pub batch_max_events: usize,
    pub batch_max_bytes: usize,
    pub inflight_batches: usize,
    pub reconnect_max: Duration,
    /// A published message without PUBACK this long after it left ends the connection.
    pub puback_timeout: Duration,
    /// A write to the broker that accepts no byte this long ends the connection.
    pub write_timeout: Duration,
    pub snapshot_url: Option<String>,
}

/// When an outbox row may be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// On the broker's PUBACK with a success reason code.
    Puback,
    /// On central's application `ack` (end to end).
    Central,
}

impl AckMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::Puback => "puback",
            AckMode::Central => "central",
        }
    }
}

/// `mqtt://host:port` (plain, labs only) or `mqtts://host:port` (TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for BrokerUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tls, rest) = if let Some(rest) = s.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = s.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err("the scheme must be mqtts:// (TLS) or mqtt:// (plain, labs only)".into());
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or("unclosed '[' in an IPv6 address")?;
            (host, after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
            return Err(format!("{host:?} is not a host name or address"));
        }
        let port = match port {
            None => {
                if tls {
                    8883
                } else {
                    1883
                }
            }
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("port {p:?} is not a number from 1 to 65535"))?,
        };
        Ok(BrokerUrl {
            tls,
            host: host.to_owned(),
            port,
        })
    }
}

impl SyncConfig {
    fn defaults() -> SyncConfig {
        SyncConfig {
            broker: None,
            username: None,
            client_id: None,
            password_file: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            keep_alive: defaults::KEEP_ALIVE,
            ack: defaults::ACK,
            ack_timeout: defaults::ACK_TIMEOUT,
            batch_max_events: defaults::BATCH_MAX_EVENTS.0 as usize,
            batch_max_bytes: defaults::BATCH_MAX_BYTES.0 as usize,
            inflight_batches: defaults::INFLIGHT_BATCHES.0 as usize,
            reconnect_max: defaults::RECONNECT_MAX,
            puback_timeout: defaults::PUBACK_TIMEOUT,
            write_timeout: defaults::WRITE_TIMEOUT,
            snapshot_url: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Config {
    /// Explicit path: missing file is an error. None: use
    /// [`DEFAULT_CONFIG_PATH`] if it exists, else built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<(Config, ConfigSource), ConfigError> {
        load_with_default(path, Path::new(DEFAULT_CONFIG_PATH))
    }

    /// Parses and validates `text`; `origin` is the file it came from, used in
    /// messages and as the base for relative paths.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let raw = validate::parse_raw(text, origin)?;
        validate::validate(raw, text, origin)
    }

    /// What you get with an empty file.
    pub fn defaults() -> Config {
        let data_dir = defaults::data_dir();
        Config {
            agent: AgentConfig {
                id: defaults::agent_id(),
                data_dir: data_dir.clone(),
            },
            api: ApiConfig {
                listen: defaults::LISTEN,
                max_body_bytes: defaults::MAX_BODY_BYTES.0 as usize,
                token_file: None,
                rate_limit_per_client: defaults::RATE_LIMIT_PER_CLIENT.0 as u32,
                rate_limit_burst: defaults::RATE_LIMIT_BURST.0 as u32,
                max_connections: defaults::MAX_CONNECTIONS.0 as usize,
                max_connections_per_client: defaults::MAX_CONNECTIONS_PER_CLIENT.0 as usize,
                max_streams: defaults::MAX_STREAMS.0 as usize,
                header_read_timeout: defaults::HEADER_READ_TIMEOUT,
                allowed_hosts: Vec::new(),
                allowed_origins: Vec::new(),
            },
            loyalty: LoyaltyConfig {
                offline_burn_cap: defaults::OFFLINE_BURN_CAP.0,
                earn_per_minor_units: defaults::EARN_PER_MINOR_UNITS.0,
            },
            pickups: PickupsConfig::default(),
            replica: ReplicaConfig {
                stale_after: crate::replica::freshness::StaleAfter::DEFAULT,
                readers: defaults::READERS.0 as usize,
            },
            outbox: OutboxConfig {
                group_commit_max: defaults::GROUP_COMMIT_MAX.0 as usize,
                telemetry_quota_rows: defaults::TELEMETRY_QUOTA_ROWS.0 as u64,
                history_keep: defaults::HISTORY_KEEP,
                keys_keep: defaults::KEYS_KEEP,
                returns_keep: defaults::RETURNS_KEEP,
            },
            disk: DiskConfig {
                low_free_mb: defaults::LOW_FREE_MB.0 as u64,
                damaged_copies_keep: defaults::DAMAGED_COPIES_KEEP,
            },
            customers: CustomersConfig {
                card_hash_key_file: defaults::card_hash_key_file(&data_dir),
            },
            log: LogConfig {
                level: defaults::LOG_LEVEL.to_owned(),
                format: LogFormat::Text,
            },
            sync: SyncConfig::defaults(),
            fleet: FleetConfig {
                ops_public_keys_file: None,
                rollback_after: defaults::ROLLBACK_AFTER,
                remote_may: Vec::new(),
            },
            devices: DevicesConfig::defaults(),
            scans: ScansConfig::default(),
        }
    }

    /// The effective configuration as TOML: every section and key, in a fixed
    /// order, defaults filled in. Re-parses to an equal `Config`.
    pub fn to_toml(&self) -> String {
        render::to_toml(self)
    }
}

fn load_with_default(
    explicit: Option<&Path>,
    default_path: &Path,
) -> Result<(Config, ConfigSource), ConfigError> {
    let path = match explicit {
        Some(p) => p,
        None => default_path,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match explicit {
                // An explicitly named file that is absent is almost always a
                // typo or a failed deploy; running on demo defaults would hide it.
                Some(_) => Err(ConfigError::Missing {
                    path: path.to_path_buf(),
                }),
                None => Ok((Config::defaults(), ConfigSource::BuiltInDefaults)),
            };
        }
        Err(cause) => {
            return Err(ConfigError::Unreadable {
                path: path.to_path_buf(),
                cause,
            });
        }
    };
    let config = Config::from_toml_str(&text, path)?;
    let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    Ok((config, ConfigSource::File(shown)))
}
