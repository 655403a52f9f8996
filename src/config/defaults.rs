//! Default values, allowed ranges and the table of known keys.
//!
//! The key table is the single source for "which keys exist", so the
//! unknown-key error, the type-error hints and the docs cannot drift apart.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::AgentId;

pub(crate) const ROOT_DATA_DIR: &str = "/var/lib/relais";
pub(crate) const LOCAL_DATA_DIR: &str = "relais-data";
pub(crate) const CARD_HASH_KEY_FILE_NAME: &str = "card-hash.key";

pub(crate) const LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 8750));
pub(crate) const MAX_BODY_BYTES: (i64, i64, i64) = (65_536, 1_024, 16_777_216);
/// Requests per second per client address: far above what a till does (a few per second),
/// low enough that one till stuck in a retry loop cannot starve the others. 0 turns it off.
pub(crate) const RATE_LIMIT_PER_CLIENT: (i64, i64, i64) = (1_000, 0, 1_000_000);
pub(crate) const RATE_LIMIT_BURST: (i64, i64, i64) = (2_000, 1, 1_000_000);
/// Open connections in all: below the unit's `LimitNOFILE=4096` with room for the databases,
/// devices and the broker, so a flood is answered 503 instead of exhausting descriptors.
pub(crate) const MAX_CONNECTIONS: (i64, i64, i64) = (1_024, 16, 60_000);
/// Open connections from one address: a till keeps a handful, a POS server streaming events to
/// its screens a few hundred at most; one peer cannot take them all.
pub(crate) const MAX_CONNECTIONS_PER_CLIENT: (i64, i64, i64) = (256, 1, 60_000);
/// Live streams (`/v1/events`, `/v1/devices/live`) open at once: status pages and POS screens.
pub(crate) const MAX_STREAMS: (i64, i64, i64) = (256, 1, 4_096);
/// How long a client may take to send a request's headers, and how long an idle keep-alive
/// connection is kept; a whole request (its body included) gets 4× this.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const HEADER_READ_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(300));
/// Points a customer may burn here that central has not confirmed yet (see docs/config.md).
pub(crate) const OFFLINE_BURN_CAP: (i64, i64, i64) = (1_000, 0, 1_000_000_000);
/// Minor currency units that earn one loyalty point on a ticket naming a customer (100: one
/// point per euro); 0 turns earning on tickets off.
pub(crate) const EARN_PER_MINOR_UNITS: (i64, i64, i64) = (100, 0, 1_000_000_000);

pub(crate) const STALE_AFTER_MIN: Duration = Duration::from_secs(60);
pub(crate) const STALE_AFTER_MAX: Duration = Duration::from_secs(365 * 86_400);
pub(crate) const READERS: (i64, i64, i64) = (2, 1, 16);

pub(crate) const GROUP_COMMIT_MAX: (i64, i64, i64) = (1_024, 1, 65_536);
pub(crate) const TELEMETRY_QUOTA_ROWS: (i64, i64, i64) = (200_000, 0, 100_000_000);

/// `outbox.history_keep`: stock movements, loyalty operations and hand-over records covered by
/// central are kept this long (a week of local history to answer a till's or an auditor's
/// question without central), then pruned (ADR 0025). One second at least: shorter is for
/// tests only, since it also shortens how long marked rows settle before they go.
pub(crate) const HISTORY_KEEP: Duration = Duration::from_secs(7 * 86_400);
/// `outbox.keys_keep`: a stored idempotency answer is replayed to a till's retry this long.
pub(crate) const KEYS_KEEP: Duration = Duration::from_secs(7 * 86_400);
/// `outbox.returns_keep`: what each ticket sold is kept this long for the returns that name it
/// (the store's return window).
pub(crate) const RETURNS_KEEP: Duration = crate::outbox::prune::DEFAULT_RETURNS_KEEP;
pub(crate) const KEEP_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(3650 * 86_400));

pub(crate) const LOW_FREE_MB: (i64, i64, i64) = (256, 0, 1_048_576);

pub(crate) const LOG_LEVEL: &str = "info";

/// `disk.damaged_copies_keep`: how long a damaged database moved aside is kept.
pub(crate) const DAMAGED_COPIES_KEEP: Duration = Duration::from_secs(7 * 86_400);
pub(crate) const DAMAGED_COPIES_KEEP_RANGE: (Duration, Duration) =
    (Duration::from_secs(3600), Duration::from_secs(365 * 86_400));
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(30);
pub(crate) const ACK_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const RECONNECT_MAX: Duration = Duration::from_secs(60);
/// Longer than a full window takes on a slow store uplink (8 × 512 KiB at 2 Mbit/s ≈ 17 s),
/// short enough that a broker withholding PUBACKs is noticed within a minute (ADR 0018).
pub(crate) const PUBACK_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const BATCH_MAX_EVENTS: (i64, i64, i64) = (1_000, 1, 10_000);
// The contract caps a message at 4 MiB (brokers drop larger ones, and a dropped publish comes
// back with a PUBACK code rumqttc cannot read): a batch must fit with room to spare.
pub(crate) const BATCH_MAX_BYTES: (i64, i64, i64) = (524_288, 4_096, 4_128_768);
pub(crate) const INFLIGHT_BATCHES: (i64, i64, i64) = (8, 1, 64);
/// A fact leaves the outbox only once central has stored it: the broker's PUBACK alone can
/// lose facts when the broker crashes before central reads them (ADR 0020).
pub(crate) const ACK: crate::config::AckMode = crate::config::AckMode::Central;
/// How long a remote config may leave the agent without a broker before it is rolled back.
pub(crate) const ROLLBACK_AFTER: Duration = Duration::from_secs(300);

pub(crate) fn agent_id() -> AgentId {
    AgentId {
        store: "demo-store".to_owned(),
        agent: "relais".to_owned(),
    }
}

/// One key of the file, for error hints.
pub(crate) struct KeySpec {
    pub section: &'static str,
    pub key: &'static str,
    /// Phrased to follow "expected ...".
    pub kind: &'static str,
    pub example: &'static str,
}

pub(crate) const SECTIONS: &[&str] = &[
    "agent",
    "api",
    "replica",
    "outbox",
    "disk",
    "customers",
    "loyalty",
    "pickups",
    "log",
    "sync",
    "fleet",
    "devices",
    "scans",
];

pub(crate) const KEYS: &[KeySpec] = &[
    KeySpec {
        section: "agent",
        key: "id",
        kind: "a string \"STORE/AGENT\"",
        example: "\"demo-store/relais\"",
    },
    KeySpec {
        section: "agent",
        key: "data_dir",
        kind: "a string (directory path)",
        example: "\"/var/lib/relais\"",
    },
    KeySpec {
        section: "api",
        key: "listen",
        kind: "a string \"IP:PORT\"",
        example: "\"127.0.0.1:8750\"",
    },
    KeySpec {
        section: "api",
        key: "max_body_bytes",
        kind: "an integer",
        example: "65536",
    },
    KeySpec {
        section: "api",
        key: "token_file",
        kind: "a string (file path)",
        example: "\"/etc/relais/api-tokens\"",
    },
    KeySpec {
        section: "api",
        key: "rate_limit_per_client",
        kind: "an integer (requests per second, 0 = off)",
        example: "1000",
    },
    KeySpec {
        section: "api",
        key: "rate_limit_burst",
        kind: "an integer",
        example: "2000",
    },
    KeySpec {
        section: "api",
        key: "max_connections",
        kind: "an integer",
        example: "1024",
    },
    KeySpec {
        section: "api",
        key: "max_connections_per_client",
        kind: "an integer",
        example: "256",
    },
    KeySpec {
        section: "api",
        key: "max_streams",
        kind: "an integer",
        example: "256",
    },
    KeySpec {
        section: "api",
        key: "header_read_timeout",
        kind: "a duration string",
        example: "\"10s\"",
    },
    KeySpec {
        section: "api",
        key: "allowed_hosts",
        kind: "an array of host names",
        example: "[\"relais-store-42\"]",
    },
    KeySpec {
        section: "api",
        key: "allowed_origins",
        kind: "an array of origins (scheme://host[:port])",
        example: "[\"https://pos.store42.example\"]",
    },
    KeySpec {
        section: "replica",
        key: "stale_after",
        kind: "a duration string, or a [replica.stale_after] table of them per stream",
        example: "\"36h\"",
    },
    KeySpec {
        section: "replica",
        key: "readers",
        kind: "an integer",
        example: "2",
    },
    KeySpec {
        section: "outbox",
        key: "group_commit_max",
        kind: "an integer",
        example: "1024",
    },
    KeySpec {
        section: "outbox",
        key: "telemetry_quota_rows",
        kind: "an integer",
        example: "200000",
    },
    KeySpec {
        section: "outbox",
        key: "history_keep",
        kind: "a duration string",
        example: "\"7d\"",
    },
    KeySpec {
        section: "outbox",
        key: "keys_keep",
        kind: "a duration string",
        example: "\"7d\"",
    },
    KeySpec {
        section: "outbox",
        key: "returns_keep",
        kind: "a duration string",
        example: "\"90d\"",
    },
    KeySpec {
        section: "disk",
        key: "low_free_mb",
        kind: "an integer",
        example: "256",
    },
    KeySpec {
        section: "disk",
        key: "damaged_copies_keep",
        kind: "a duration string",
        example: "\"7d\"",
    },
    KeySpec {
        section: "customers",
        key: "card_hash_key_file",
        kind: "a string (file path)",
        example: "\"/var/lib/relais/card-hash.key\"",
    },
    KeySpec {
        section: "loyalty",
        key: "offline_burn_cap",
        kind: "an integer (points)",
        example: "1000",
    },
    KeySpec {
        section: "loyalty",
        key: "earn_per_minor_units",
        kind: "an integer (minor currency units per point)",
        example: "100",
    },
    KeySpec {
        section: "pickups",
        key: "protect_reserved",
        kind: "a boolean",
        example: "true",
    },
    KeySpec {
        section: "log",
        key: "level",
        kind: "a string",
        example: "\"info\"",
    },
    KeySpec {
        section: "log",
        key: "format",
        kind: "a string, \"text\" or \"json\"",
        example: "\"text\"",
    },
    KeySpec {
        section: "sync",
        key: "broker",
        kind: "a string URL \"mqtts://HOST:PORT\" or \"mqtt://HOST:PORT\"",
        example: "\"mqtts://broker.example.com:8883\"",
    },
    KeySpec {
        section: "sync",
        key: "username",
        kind: "a string",
        example: "\"store-0042/relais\"",
    },
    KeySpec {
        section: "sync",
        key: "client_id",
        kind: "a string",
        example: "\"store-0042.relais\"",
    },
    KeySpec {
        section: "sync",
        key: "password_file",
        kind: "a string (file path)",
        example: "\"/etc/relais/broker.password\"",
    },
    KeySpec {
        section: "sync",
        key: "ca_file",
        kind: "a string (file path)",
        example: "\"/etc/relais/ca.pem\"",
    },
    KeySpec {
        section: "sync",
        key: "client_cert_file",
        kind: "a string (file path)",
        example: "\"/etc/relais/client.pem\"",
    },
    KeySpec {
        section: "sync",
        key: "client_key_file",
        kind: "a string (file path)",
        example: "\"/etc/relais/client.key\"",
    },
    KeySpec {
        section: "sync",
        key: "keep_alive",
        kind: "a duration string",
        example: "\"30s\"",
    },
    KeySpec {
        section: "sync",
        key: "ack",
        kind: "a string, \"puback\" or \"central\"",
        example: "\"puback\"",
    },
    KeySpec {
        section: "sync",
        key: "ack_timeout",
        kind: "a duration string",
        example: "\"60s\"",
    },
    KeySpec {
        section: "sync",
        key: "batch_max_events",
        kind: "an integer",
        example: "1000",
    },
    KeySpec {
        section: "sync",
        key: "batch_max_bytes",
        kind: "an integer",
        example: "524288",
    },
    KeySpec {
        section: "sync",
        key: "inflight_batches",
        kind: "an integer",
        example: "8",
    },
    KeySpec {
        section: "sync",
        key: "reconnect_max",
        kind: "a duration string",
        example: "\"60s\"",
    },
    KeySpec {
        section: "sync",
        key: "puback_timeout",
        kind: "a duration string",
        example: "\"30s\"",
    },
    KeySpec {
        section: "sync",
        key: "write_timeout",
        kind: "a duration string",
        example: "\"30s\"",
    },
    KeySpec {
        section: "sync",
        key: "snapshot_url",
        kind: "a string URL",
        example: "\"https://central.example.com/snapshots/store-0042/manifest.json\"",
    },
    KeySpec {
        section: "fleet",
        key: "ops_public_keys_file",
        kind: "a string (file path)",
        example: "\"/etc/relais/ops.pub\"",
    },
    KeySpec {
        section: "fleet",
        key: "rollback_after",
        kind: "a duration string",
        example: "\"5m\"",
    },
    KeySpec {
        section: "fleet",
        key: "remote_may",
        kind: "an array of weakenings",
        example: "[\"verbose_logs\"]",
    },
];

pub(crate) fn key_spec(section: &str, key: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|k| k.section == section && k.key == key)
}

pub(crate) fn keys_of(section: &str) -> Vec<&'static str> {
    KEYS.iter()
        .filter(|k| k.section == section)
        .map(|k| k.key)
        .collect()
}

/// The data directory used when the file does not set one, from the real
/// process environment.
pub(crate) fn data_dir() -> PathBuf {
    let cwd = std::env::current_dir().ok();
    data_dir_for(
        rustix::process::geteuid().is_root(),
        std::env::var_os("XDG_STATE_HOME"),
        cwd.as_deref(),
    )
}

/// Pure form of [`data_dir`] so the choice can be tested without being root or
/// touching the process environment.
pub(crate) fn data_dir_for(
    is_root: bool,
    xdg_state_home: Option<OsString>,
    cwd: Option<&Path>,
) -> PathBuf {
    if is_root {
        return PathBuf::from(ROOT_DATA_DIR);
    }
    // The XDG base-directory spec says relative values are invalid and must be
    // ignored; honouring one would make the location depend on the cwd anyway.
    if let Some(xdg) = xdg_state_home.map(PathBuf::from)
        && xdg.is_absolute()
    {
        return xdg.join("relais");
    }
    match cwd {
        Some(cwd) => cwd.join(LOCAL_DATA_DIR),
        // `defaults()` cannot fail, and a deleted working directory must not
        // stop the agent from at least reporting its config; the relative
        // path still means "next to where I was started".
        None => PathBuf::from(".").join(LOCAL_DATA_DIR),
    }
}

pub(crate) fn card_hash_key_file(data_dir: &Path) -> PathBuf {
    data_dir.join(CARD_HASH_KEY_FILE_NAME)
}
