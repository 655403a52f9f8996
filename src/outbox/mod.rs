//! The outbox: store facts and telemetry waiting to reach central, in `outbox.db`
//! (WAL, `synchronous=FULL`).
//!
//! The local effect of a store fact (a stock movement, a loyalty operation) lives in this same
//! database, in the same transaction as its event: SQLite commits across attached WAL databases
//! are not atomic, so putting the effect in `replica.db` could count a sale that was never sent,
//! or send a sale that was never counted (see docs/adr/0002-store-facts-live-in-the-outbox.md).

pub mod delivery;
pub mod stats;

/// Alarm raised when the broker refuses events (they become dead letters).
pub const ALARM_UPLINK_REFUSED: &str = "uplink_refused";
pub mod writer;

pub use stats::{ClassStats, OutboxStats};
pub use writer::{OutboxHandle, OutboxWriter};

use serde::Serialize;
use uuid::Uuid;

/// Retention class: whether an event may ever be dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionClass {
    /// Sales, movements, loyalty, pickups: exist nowhere else, never dropped.
    StoreFact,
    /// Scans, raw reads, device status: droppable, oldest first, within a quota.
    Telemetry,
}

impl RetentionClass {
    pub const ALL: [RetentionClass; 2] = [RetentionClass::StoreFact, RetentionClass::Telemetry];

    pub fn code(self) -> i64 {
        match self {
            RetentionClass::StoreFact => 0,
            RetentionClass::Telemetry => 1,
        }
    }

    pub fn from_code(code: i64) -> Option<RetentionClass> {
        match code {
            0 => Some(RetentionClass::StoreFact),
            1 => Some(RetentionClass::Telemetry),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RetentionClass::StoreFact => "store_fact",
            RetentionClass::Telemetry => "telemetry",
        }
    }
}

/// What a producer hands to the outbox. The payload is serialised by the producer so that the
/// writer thread only does SQLite work.
#[derive(Clone, Debug)]
pub struct EventDraft {
    pub event_type: &'static str,
    pub schema: u32,
    pub class: RetentionClass,
    pub payload_json: String,
}

/// The kind of a stock movement. Sign rules live here so no caller gets them wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    Sale,
    Return,
    Receipt,
    Adjustment,
}

impl MovementKind {
    pub fn name(self) -> &'static str {
        match self {
            MovementKind::Sale => "sale",
            MovementKind::Return => "return",
            MovementKind::Receipt => "receipt",
            MovementKind::Adjustment => "adjustment",
        }
    }
}

/// The local effect committed in the same transaction as the event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalEffect {
    StockMovement {
        sku: String,
        delta: i64,
        kind: MovementKind,
    },
}

#[derive(Clone, Debug)]
pub struct AppendRequest {
    pub draft: EventDraft,
    pub effect: Option<LocalEffect>,
    /// Client-supplied idempotency key: a retry with the same key gets the first answer.
    pub client_key: Option<String>,
}

/// A durable append: the event is on disk when a producer receives this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Appended {
    pub id: Uuid,
    pub seq: u64,
    /// True when `client_key` had been seen: nothing new was written.
    pub replayed: bool,
}

/// The versioned event envelope, as stored and as sent to central.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Envelope {
    pub id: Uuid,
    pub agent: String,
    pub seq: u64,
    pub boot: u64,
    pub wall_ms: i64,
    pub mono_ns: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema: u32,
    pub class: RetentionClass,
    pub payload: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(
        "disk nearly full ({free_mb} MB free, watermark {watermark_mb} MB): droppable events are \
         refused until space is freed; store facts are still accepted"
    )]
    DiskLow { free_mb: u64, watermark_mb: u64 },
    #[error("the outbox writer has stopped (agent shutting down); retry the request")]
    Closed,
    #[error(
        "the outbox could not commit: {0}. Nothing was recorded; retry. If it persists, run \
         `relais outbox stats` and check disk space and the data directory"
    )]
    Commit(String),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

/// Outbox schema, one step per `user_version`.
pub(crate) const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO meta(key, value) VALUES ('last_seq', 0), ('boot', 0);
CREATE TABLE events (
    seq      INTEGER PRIMARY KEY,
    id       BLOB NOT NULL,
    class    INTEGER NOT NULL,
    type     TEXT NOT NULL,
    schema   INTEGER NOT NULL,
    boot     INTEGER NOT NULL,
    wall_ms  INTEGER NOT NULL,
    mono_ns  INTEGER NOT NULL,
    payload  TEXT NOT NULL,
    state    INTEGER NOT NULL DEFAULT 0
);
-- Only telemetry needs an index of its own (quota trimming, oldest first); store facts are
-- read in seq order through the primary key, so indexing them would only slow every append.
CREATE INDEX events_telemetry ON events(seq) WHERE class = 1;
CREATE TABLE stock_movements (
    seq      INTEGER PRIMARY KEY,
    sku      TEXT NOT NULL,
    delta    INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    wall_ms  INTEGER NOT NULL
);
CREATE INDEX stock_movements_by_sku ON stock_movements(sku, seq);
CREATE TABLE loyalty_ops (
    seq         INTEGER PRIMARY KEY,
    customer_id TEXT NOT NULL,
    points      INTEGER NOT NULL,
    wall_ms     INTEGER NOT NULL
);
CREATE INDEX loyalty_ops_by_customer ON loyalty_ops(customer_id, seq);
CREATE TABLE idempotency (
    client_key TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    id         BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE alarms (
    code      TEXT PRIMARY KEY,
    raised_ms INTEGER NOT NULL,
    message   TEXT NOT NULL
) WITHOUT ROWID;
"#];

pub(crate) fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}
