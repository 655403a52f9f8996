//! The outbox: store facts and telemetry waiting to reach central, in `outbox.db`
//! (WAL, `synchronous=FULL`).
//!
//! The local effect of a store fact (a stock movement, a loyalty operation) lives in this same
//! database, in the same transaction as its event: SQLite commits across attached WAL databases
//! are not atomic, so putting the effect in `replica.db` could count a sale that was never sent,
//! or send a sale that was never counted (see docs/adr/0002-store-facts-live-in-the-outbox.md).

mod checkpointer;
pub mod delivery;
mod keys;
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
    /// Points earned (positive) or burned (negative) here, pending until central's loyalty
    /// watermark passes this event's seq.
    Loyalty {
        customer_id: String,
        points: i64,
        /// Burns carry the balance they were checked against; the writer re-checks them with
        /// every pending operation, so two tills cannot spend the same points at once.
        guard: Option<BurnGuard>,
    },
    /// A click-and-collect order handed over: its reservations stop counting, and a second
    /// collection of the same order is refused.
    PickupCollected { order_id: String },
}

/// What a burn is checked against, read from the replica by the producer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BurnGuard {
    /// Central's balance and the agent seq it already includes.
    pub central_balance: i64,
    pub watermark_seq: u64,
    /// `loyalty.offline_burn_cap`.
    pub cap: i64,
}

/// Why the writer refused one store fact (the rest of its group commits as usual).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum FactRefused {
    #[error(
        "burning {requested} points would bring the points burned here and not yet confirmed by \
         central to {would_be}, above loyalty.offline_burn_cap = {cap} (already pending: \
         {pending_burned}). Burn at most {allowed} now, or wait until central confirms"
    )]
    BurnCapExceeded {
        requested: i64,
        pending_burned: i64,
        would_be: i64,
        cap: i64,
        allowed: i64,
    },
    #[error("the balance is {balance} points; burning {requested} would make it negative")]
    InsufficientPoints { balance: i64, requested: i64 },
    #[error("order {order_id} was already collected here (event seq {seq})")]
    AlreadyCollected { order_id: String, seq: u64 },
}

impl FactRefused {
    /// Stable machine-readable code for API clients.
    pub fn code(&self) -> &'static str {
        match self {
            FactRefused::BurnCapExceeded { .. } => "offline_burn_cap",
            FactRefused::InsufficientPoints { .. } => "insufficient_points",
            FactRefused::AlreadyCollected { .. } => "already_collected",
        }
    }
}

#[derive(Clone, Debug)]
pub struct AppendRequest {
    pub draft: EventDraft,
    /// All committed in the event's transaction, or none of them.
    pub effects: Vec<LocalEffect>,
    /// Client-supplied idempotency key: a retry with the same key gets the first answer.
    pub client_key: Option<String>,
    /// With `client_key`: the answer the client got (JSON), kept with the key so that a retry
    /// is answered with exactly the first answer.
    pub answer_json: Option<String>,
}

/// A durable append: the event is on disk when a producer receives this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Appended {
    pub id: Uuid,
    pub seq: u64,
    /// True when `client_key` had been seen: nothing new was written.
    pub replayed: bool,
    /// On a replay, the answer recorded with the key the first time (if one was).
    #[serde(skip)]
    pub first_answer: Option<String>,
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
    #[error("refused: {0}")]
    Refused(#[from] FactRefused),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

/// Outbox schema, one step per `user_version`.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    r#"
-- Click-and-collect orders handed over here. Kept after delivery: it is what stops the same
-- order being collected twice, and what takes its reservations out of `available` until
-- central's reservations stream catches up.
ALTER TABLE idempotency ADD COLUMN answer TEXT;
CREATE TABLE collected_orders (
    order_id TEXT PRIMARY KEY,
    seq      INTEGER NOT NULL,
    wall_ms  INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    r#"
-- ADR 0014: movements are filed by SKU when the writer is idle, not inside each group's
-- commit, where every movement dirtied a random index leaf of its own (half the WAL bytes of
-- an event). Rows up to meta.sku_indexed_upto are here, later ones only in stock_movements;
-- `movements_after` sums both.
DROP INDEX stock_movements_by_sku;
CREATE TABLE sku_movements (
    sku   TEXT NOT NULL,
    seq   INTEGER NOT NULL,
    delta INTEGER NOT NULL,
    PRIMARY KEY (sku, seq)
) WITHOUT ROWID;
INSERT INTO sku_movements(sku, seq, delta) SELECT sku, seq, delta FROM stock_movements;
INSERT INTO meta(key, value)
    VALUES ('sku_indexed_upto', (SELECT COALESCE(MAX(seq), 0) FROM stock_movements));
"#,
    r#"
-- ADR 0015: a group appends its events' idempotency keys here, in seq order, instead of into
-- `idempotency` (ordered by key: a leaf page of its own per event); the writer moves them
-- there when it idles and, until then, finds them through a hash it keeps in memory.
CREATE TABLE unfiled_keys (
    seq        INTEGER PRIMARY KEY,
    client_key TEXT NOT NULL,
    id         BLOB NOT NULL,
    answer     TEXT
);
"#,
];

/// The tables whose rows carry an event's `seq`: the newest `seq` ever used is the max over them
/// and `meta.last_seq` (appends do not rewrite `meta`; see `stats::read`).
pub(crate) const SEQ_TABLES: &[&str] = &[
    "events",
    "stock_movements",
    "loyalty_ops",
    "idempotency",
    "unfiled_keys",
];

/// SQL for the sum of a SKU's local movements after a watermark, for readers with `outbox.db`
/// attached as `facts`. `sku` and `watermark` are SQL expressions (columns or parameters).
/// Movements up to `sku_indexed_upto` are found through `sku_movements`; the few after it
/// (those of a burst the writer has not filed yet) by a range scan of the newest rows, skipped
/// when the connection knows its snapshot has none (`relais_all_filed()`, registered by
/// `storage::open_lookup_connection`): that scan was 15 % of a lookup.
pub(crate) fn movements_after(sku: &str, watermark: &str) -> String {
    format!(
        "((SELECT COALESCE(SUM(m.delta), 0) FROM facts.sku_movements m
            WHERE m.sku = {sku} AND m.seq > {watermark})
          + CASE WHEN relais_all_filed() THEN 0 ELSE
            (SELECT COALESCE(SUM(t.delta), 0) FROM facts.stock_movements t
              WHERE t.seq > MAX({watermark},
                                (SELECT value FROM facts.meta WHERE key = 'sku_indexed_upto'))
                AND t.sku = {sku}) END)"
    )
}

/// SQL answering whether every stock movement in the snapshot is filed by SKU.
pub(crate) const ALL_FILED_SQL: &str =
    "SELECT (SELECT value FROM facts.meta WHERE key = 'sku_indexed_upto')
            >= (SELECT COALESCE(MAX(seq), 0) FROM facts.stock_movements)";

pub(crate) fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}
