//! The outbox: store facts and telemetry waiting to reach central, in `outbox.db`
//! (WAL, `synchronous=FULL`).
//!
//! The local effect of a store fact (a stock movement, a loyalty operation) lives in this same
//! database, in the same transaction as its event: SQLite commits across attached WAL databases
//! are not atomic, so putting the effect in `replica.db` could count a sale that was never sent,
//! or send a sale that was never counted (see docs/adr/0002-store-facts-live-in-the-outbox.md).

mod append;
mod checkpointer;
pub mod delivery;
mod keys;
pub mod prune;
pub mod stats;

/// Alarm raised when the broker refuses events (they become dead letters).
pub const ALARM_UPLINK_REFUSED: &str = "uplink_refused";
/// An event larger than the broker's Maximum Packet Size was parked as a dead letter.
pub const ALARM_UPLINK_TOO_LARGE: &str = "uplink_too_large";
pub mod writer;

pub use stats::{ClassStats, OutboxStats};
pub use writer::{OutboxHandle, OutboxWriter};

pub use crate::domain::{FactRefused, MovementKind, StoreFact};
use serde::Serialize;
use uuid::Uuid;

/// Retention class: whether an event may ever be dropped.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
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

/// What a producer hands to the writer: a prepared event (telemetry, device facts: no local
/// effect, payload serialised by the producer) or a store fact, whose rules the writer runs
/// inside its transaction (`domain`), so what it checks and computes sees every fact before it.
#[derive(Clone, Debug)]
pub enum AppendBody {
    Event(EventDraft),
    Fact(Box<FactDraft>),
}

/// A store fact on its way to the writer, with the JSON that settling it cannot change already
/// serialised by the producer: the writer's time is every till's (one thread commits for all),
/// a producer's runs beside it (ADR 0017).
#[derive(Clone, Debug)]
pub struct FactDraft {
    pub fact: StoreFact,
    pub(crate) payload_json: Option<String>,
    pub(crate) answer_json: Option<String>,
}

impl FactDraft {
    pub fn new(fact: StoreFact) -> FactDraft {
        // A serialisation error here is left for the writer, which reports it for this fact.
        let payload_json = (!fact.settling_changes_payload())
            .then(|| fact.payload_json().ok())
            .flatten();
        let answer_json = (!fact.settling_changes_answer())
            .then(|| fact.answer_json().ok())
            .flatten();
        FactDraft {
            fact,
            payload_json,
            answer_json,
        }
    }
}

/// A client's idempotency key, scoped to who sent it and where, with a fingerprint of what it
/// asked for (docs/api.md, ADR 0017).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyClaim {
    /// `["<caller>","<route>","<key>"]`: one caller's key on one route. The JSON array form is
    /// unambiguous whatever the three contain, and is what the migration from unscoped keys
    /// builds with SQLite's `json_array`.
    pub scoped_key: String,
    /// SHA-256 of the request (route, path parameters, body without its key).
    pub fingerprint: [u8; 32],
}

impl IdempotencyClaim {
    pub fn new(caller: &str, route: &str, key: &str, fingerprint: [u8; 32]) -> IdempotencyClaim {
        IdempotencyClaim {
            scoped_key: scoped_key(caller, route, key),
            fingerprint,
        }
    }

    /// The key as the client sent it (what an outbox from before scoped keys stored).
    pub fn client_key(&self) -> Option<String> {
        serde_json::from_str::<[String; 3]>(&self.scoped_key)
            .ok()
            .map(|[_, _, key]| key)
    }
}

/// `["caller","route","key"]`, byte for byte what SQLite's `json_array` writes.
pub fn scoped_key(caller: &str, route: &str, key: &str) -> String {
    serde_json::to_string(&[caller, route, key]).unwrap_or_default()
}

#[derive(Clone, Debug)]
pub struct AppendRequest {
    pub body: AppendBody,
    /// A retry with the same claim gets the first answer; the same key with another
    /// fingerprint is refused (`OutboxError::KeyReused`).
    pub idempotency: Option<IdempotencyClaim>,
}

impl AppendRequest {
    /// A store fact, without an idempotency key.
    pub fn fact(fact: StoreFact) -> AppendRequest {
        AppendRequest {
            body: AppendBody::Fact(Box::new(FactDraft::new(fact))),
            idempotency: None,
        }
    }

    /// A prepared event (telemetry, device facts), without an idempotency key.
    pub fn event(draft: EventDraft) -> AppendRequest {
        AppendRequest {
            body: AppendBody::Event(draft),
            idempotency: None,
        }
    }

    pub fn with_key(mut self, claim: IdempotencyClaim) -> AppendRequest {
        self.idempotency = Some(claim);
        self
    }
}

/// A durable append: the event is on disk when a producer receives this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Appended {
    pub id: Uuid,
    pub seq: u64,
    /// True when the idempotency key had been seen: nothing new was written.
    pub replayed: bool,
    /// What the client is told about a store fact (JSON object): computed by the writer for a
    /// new fact, the one recorded with the key the first time for a replay (`None` for keys
    /// recorded before answers were kept, and for prepared events).
    #[serde(skip)]
    pub answer: Option<String>,
}

/// The versioned event envelope, as stored and as sent to central.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Envelope {
    /// UUID v7: the deduplication key; the same event always carries the same id.
    #[schemars(schema_with = "crate::sync::schemas::uuid")]
    pub id: Uuid,
    #[schemars(regex(pattern = crate::sync::wire::AGENT_ID_PATTERN))]
    pub agent: String,
    /// The agent's sequence number: unique, never reused, shared by both classes.
    #[schemars(range(min = 1))]
    pub seq: u64,
    pub boot: u64,
    pub wall_ms: i64,
    pub mono_ns: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema: u32,
    pub class: RetentionClass,
    /// Store facts only: their gap-free number within `fact_epoch` (ADR 0026).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub fact_seq: Option<u64>,
    /// The numbering `fact_seq` belongs to: one per outbox file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub fact_epoch: Option<u32>,
    /// The event's data, shaped by (`type`, `schema`): docs/schemas/events/{type}.json.
    pub payload: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(
        "disk nearly full ({free_mb} MiB free, below disk.low_free_mb = {watermark_mb} MiB): \
         telemetry is refused, store facts are still recorded. Free space on the data volume, or \
         lower disk.low_free_mb"
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
    #[error(
        "idempotency key {key:?} was already used by this caller on this route for a different \
         request (event seq {seq}); nothing was recorded. Use a new key for a new fact, or \
         resend the first request unchanged to get its answer"
    )]
    KeyReused { key: String, seq: u64 },
    #[error(
        "this fact cannot be recorded: {0}. Nothing was recorded; the other facts of its group \
         were not affected"
    )]
    NotRecordable(String),
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
    r#"
-- ADR 0017: a fact's effects are keyed per line, so a ticket of several items (the same item
-- twice included) is one movement per line; keys are scoped to their caller and route, with a
-- fingerprint of the request. Rows are appended in (seq, line) order, so the tables stay
-- append-only at the right edge of their b-trees, as the rowid tables were.
CREATE TABLE stock_movements_v5 (
    seq      INTEGER NOT NULL,
    line     INTEGER NOT NULL,
    sku      TEXT NOT NULL,
    delta    INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    wall_ms  INTEGER NOT NULL,
    PRIMARY KEY (seq, line)
) WITHOUT ROWID;
INSERT INTO stock_movements_v5(seq, line, sku, delta, kind, wall_ms)
    SELECT seq, 0, sku, delta, kind, wall_ms FROM stock_movements;
DROP TABLE stock_movements;
ALTER TABLE stock_movements_v5 RENAME TO stock_movements;

CREATE TABLE sku_movements_v5 (
    sku   TEXT NOT NULL,
    seq   INTEGER NOT NULL,
    line  INTEGER NOT NULL,
    delta INTEGER NOT NULL,
    PRIMARY KEY (sku, seq, line)
) WITHOUT ROWID;
INSERT INTO sku_movements_v5(sku, seq, line, delta) SELECT sku, seq, 0, delta FROM sku_movements;
DROP TABLE sku_movements;
ALTER TABLE sku_movements_v5 RENAME TO sku_movements;

CREATE TABLE loyalty_ops_v5 (
    seq         INTEGER NOT NULL,
    line        INTEGER NOT NULL,
    customer_id TEXT NOT NULL,
    points      INTEGER NOT NULL,
    wall_ms     INTEGER NOT NULL,
    PRIMARY KEY (seq, line)
) WITHOUT ROWID;
INSERT INTO loyalty_ops_v5(seq, line, customer_id, points, wall_ms)
    SELECT seq, 0, customer_id, points, wall_ms FROM loyalty_ops;
DROP TABLE loyalty_ops;
ALTER TABLE loyalty_ops_v5 RENAME TO loyalty_ops;
CREATE INDEX loyalty_ops_by_customer ON loyalty_ops(customer_id, seq);

-- Keys: fingerprint NULL = scoped by this migration from the event still in the outbox (its
-- request is unknown, so any body replays it); X'00' = an unscoped key whose event was already
-- delivered, matched by the raw key for any caller (replay only) until retention drops it.
ALTER TABLE unfiled_keys ADD COLUMN fingerprint BLOB;
ALTER TABLE idempotency ADD COLUMN fingerprint BLOB;
CREATE TEMP TABLE route_of(type TEXT PRIMARY KEY, route TEXT NOT NULL);
INSERT INTO temp.route_of VALUES
    ('stock.movement', 'POST /v1/movements'),
    ('sale.recorded', 'POST /v1/sales'),
    ('return.recorded', 'POST /v1/returns'),
    ('stock.cycle_count', 'POST /v1/cycle-counts'),
    ('loyalty.earned', 'POST /v1/loyalty/earn'),
    ('loyalty.burned', 'POST /v1/loyalty/burn'),
    ('pickup.collected', 'POST /v1/pickups/{code}/collect');
UPDATE unfiled_keys SET fingerprint = X'00';
UPDATE unfiled_keys SET client_key = (
    SELECT json_array(COALESCE(json_extract(e.payload, '$.by'), 'local'), r.route, unfiled_keys.client_key)
    FROM events e JOIN temp.route_of r ON r.type = e.type WHERE e.seq = unfiled_keys.seq),
    fingerprint = NULL
WHERE EXISTS (SELECT 1 FROM events e JOIN temp.route_of r ON r.type = e.type
              WHERE e.seq = unfiled_keys.seq);
UPDATE idempotency SET fingerprint = X'00';
UPDATE idempotency SET client_key = (
    SELECT json_array(COALESCE(json_extract(e.payload, '$.by'), 'local'), r.route, idempotency.client_key)
    FROM events e JOIN temp.route_of r ON r.type = e.type WHERE e.seq = idempotency.seq),
    fingerprint = NULL
WHERE EXISTS (SELECT 1 FROM events e JOIN temp.route_of r ON r.type = e.type
              WHERE e.seq = idempotency.seq);
DROP TABLE temp.route_of;
INSERT INTO meta(key, value) VALUES ('unscoped_keys',
    (SELECT COUNT(*) FROM unfiled_keys WHERE fingerprint = X'00')
    + (SELECT COUNT(*) FROM idempotency WHERE fingerprint = X'00'));
"#,
    r#"
-- ADR 0026: store facts carry a gap-free sequence of their own (`fact_seq`), beside `seq`
-- (which telemetry shares and may leave gaps in), so central can prove it holds every store
-- fact up to a number. The numbering belongs to this file: `fact_epoch` is drawn when it is
-- made, so a replaced (damaged) outbox starts a new numbering that central can tell apart.
-- Store facts still queued here are numbered in seq order.
ALTER TABLE events ADD COLUMN fact_seq INTEGER;
UPDATE events SET fact_seq = numbered.n
    FROM (SELECT seq, ROW_NUMBER() OVER (ORDER BY seq) AS n FROM events WHERE class = 0) AS numbered
    WHERE events.seq = numbered.seq;
INSERT INTO meta(key, value) VALUES
    ('fact_epoch', (abs(random()) % 2147483646) + 1),
    ('last_fact_seq', (SELECT COALESCE(MAX(fact_seq), 0) FROM events));
"#,
    r#"
-- ADR 0023: the newest consent change recorded here per customer and purpose (lookups compare
-- its date with central's), and the single-use coupons redeemed here (a second redemption is
-- refused). Both are kept after delivery: they are what the rules read, and central's copy may
-- lag (one consent row per customer and purpose at most; docs/privacy.md says how long).
CREATE TABLE consent_changes (
    customer_id TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    granted     INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (customer_id, purpose)
) WITHOUT ROWID;
CREATE TABLE coupon_redemptions (
    coupon  TEXT PRIMARY KEY,
    seq     INTEGER NOT NULL,
    wall_ms INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    r#"
-- ADR 0025: stored answers are kept `outbox.keys_keep` after they were filed, then pruned once
-- central has their event. Keys filed before this step count from the upgrade. The index finds
-- the oldest keys without reading the whole table (filing appends to its right edge).
ALTER TABLE idempotency ADD COLUMN at_ms INTEGER;
UPDATE idempotency SET at_ms = CAST(unixepoch('subsec') * 1000 AS INTEGER);
CREATE INDEX idempotency_by_seq ON idempotency(seq);
"#,
    r#"
-- ADR 0022: web orders are handed over line by line (a partial hand-over leaves the rest
-- open) and shipped from the store, so what left the store is kept per (order_id, line), with
-- how it left. Kept after delivery, like collected_orders was: it stops a line going out twice
-- and takes its reservation out of `available` until central's stream catches up. An order
-- collected before this step is listed line by line from its event; if the event is no longer
-- here, line -1 stands for every line of it (the hand-over was of the whole order then).
CREATE TABLE released_lines (
    order_id TEXT NOT NULL,
    line     INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    wall_ms  INTEGER NOT NULL,
    how      TEXT NOT NULL,
    PRIMARY KEY (order_id, line)
) WITHOUT ROWID;
INSERT OR IGNORE INTO released_lines(order_id, line, seq, wall_ms, how)
    SELECT c.order_id, json_extract(l.value, '$.line'), c.seq, c.wall_ms, 'collected'
    FROM collected_orders c JOIN events e ON e.seq = c.seq AND e.type = 'pickup.collected',
         json_each(e.payload, '$.lines') l
    WHERE json_valid(e.payload) AND json_type(l.value, '$.line') = 'integer';
INSERT OR IGNORE INTO released_lines(order_id, line, seq, wall_ms, how)
    SELECT c.order_id, -1, c.seq, c.wall_ms, 'collected' FROM collected_orders c
    WHERE NOT EXISTS (SELECT 1 FROM released_lines r WHERE r.order_id = c.order_id);
DROP TABLE collected_orders;
-- Click-and-collect lines staff picked here (`pickup.prepared`): ready for hand-over here.
CREATE TABLE prepared_lines (
    order_id TEXT NOT NULL,
    line     INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    wall_ms  INTEGER NOT NULL,
    PRIMARY KEY (order_id, line)
) WITHOUT ROWID;
-- Steps of ship-from-store orders recorded here (1 picked, 2 packed, 3 shipped).
CREATE TABLE shipment_steps (
    order_id TEXT NOT NULL,
    step     INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    wall_ms  INTEGER NOT NULL,
    PRIMARY KEY (order_id, step)
) WITHOUT ROWID;
"#,
    r#"
-- ADR 0021: what each ticket with a receipt sold, line by line, filed under its receipt (one
-- receipt, one sale: a second is refused), and what returns brought back of each line of a
-- ticket or web order. Written by the writer in the sale's or return's own transaction, so a
-- return is checked against every return before it. Keyed by receipt: a till's receipts come
-- in order, so its rows land on the few leaf pages it is filling.
CREATE TABLE sold_lines (
    receipt     TEXT NOT NULL,
    line        INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    sku         TEXT,
    gtin        INTEGER,
    qty         INTEGER NOT NULL,
    points      INTEGER NOT NULL,
    customer_id TEXT,
    wall_ms     INTEGER NOT NULL,
    PRIMARY KEY (receipt, line)
) WITHOUT ROWID;
-- Pruning takes them oldest first (ADR 0025, `outbox.returns_keep`): seqs grow, so this index is
-- appended at its right edge.
CREATE INDEX sold_lines_by_seq ON sold_lines(seq);
CREATE TABLE returned_lines (
    source      TEXT NOT NULL,
    original    TEXT NOT NULL,
    line        INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    return_line INTEGER NOT NULL,
    qty         INTEGER NOT NULL,
    points      INTEGER NOT NULL,
    wall_ms     INTEGER NOT NULL,
    PRIMARY KEY (source, original, line, seq, return_line)
) WITHOUT ROWID;
CREATE INDEX returned_lines_by_seq ON returned_lines(seq);
-- Points a return took back: they lower the balance like a burn but are not one, so they do
-- not use up loyalty.offline_burn_cap (nothing can be spent twice through them).
ALTER TABLE loyalty_ops ADD COLUMN reversal INTEGER NOT NULL DEFAULT 0;
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
