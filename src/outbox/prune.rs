//! Retention of the outbox's history (issue 18, item 8; ADR 0025): stock movements, loyalty
//! operations, stored idempotency answers and hand-over records are deleted once central's
//! replica covers them and their retention passed, by the writer when it idles, in chunks.
//!
//! **Why a movement may go.** A stock figure is `on_hand@watermark + Σ movements with
//! seq > watermark` (the same for points with the customer's loyalty watermark). A movement
//! with `seq ≤` the SKU's watermark is inside central's baseline, so no figure computed from
//! that baseline reads it. But a figure is computed from a baseline read *earlier*: a lookup's
//! snapshot of `replica.db`, a count or a sale whose baseline a reader resolved before the
//! writer settles it. Such a baseline may be older than the delta that advanced the watermark,
//! and it still needs the movements between its watermark and the new one.
//!
//! So pruning runs in two steps. **Marking** lists the rows the replica covers *now* (and
//! whose retention passed) in a temporary table of the writer's connection; the replica is
//! attached read-only for that statement only. **Deleting** removes them only after
//! [`settle`](PruneSettings::settle) passed since the marking ended (10 minutes; a keep set
//! shorter, for tests, shortens it to the keep). A baseline read after the marking began has a
//! watermark at or above the one that covered a marked row (central's watermarks only grow;
//! the version rule refuses older deltas and snapshots), so it never needs that row; one read
//! before it belongs to a request that ended long ago: a lookup's snapshot lives for one lookup
//! (ADR 0012), a fact's resolved baseline until the writer settles it, bounded by the request
//! time limit (4 × `api.header_read_timeout`) and the writer's bounded queue.
//!
//! Only the writer writes `outbox.db` and only the applier writes `replica.db` (invariant 1):
//! the replica is attached with `mode=ro`, and never while a group commits.

use super::stats::RETENTION_TABLES;
use rusqlite::{Connection, params};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the history is kept, and where central's watermarks are read.
#[derive(Clone, Debug)]
pub struct PruneSettings {
    /// Stock movements, loyalty operations and hand-over records are kept at least this long
    /// (`outbox.history_keep`), and afterwards until central's replica covers them.
    pub history_keep: Duration,
    /// Stored idempotency answers are kept at least this long (`outbox.keys_keep`), and
    /// afterwards until central acknowledged their event.
    pub keys_keep: Duration,
    /// What each ticket sold and what returns brought back of it are kept this long
    /// (`outbox.returns_keep`, the store's return window), and afterwards until central has
    /// the fact: a return naming an older ticket is recorded unchecked (central decides).
    pub returns_keep: Duration,
    /// `replica.db`, attached read-only while marking. `None`: only keys are pruned (what the
    /// replica covers is unknown, so the rest is kept).
    pub replica: Option<PathBuf>,
}

/// `outbox.returns_keep` by default: a 90-day return window.
pub const DEFAULT_RETURNS_KEEP: Duration = Duration::from_secs(90 * 86_400);

/// What a marked row waits at least before it is deleted (module docs).
const SETTLE_MAX: Duration = Duration::from_secs(600);

/// A finished round is followed by the next after this long (or the shorter keep).
const ROUND_EVERY: Duration = Duration::from_secs(600);

/// Rows one marking or deleting transaction handles at most: a chunk of deletes is a few
/// milliseconds (two b-trees and the marks), and the writer goes back to its channel between
/// chunks, so a till's ticket waits for one chunk at most.
pub(super) const PRUNE_CHUNK: i64 = 256;

impl PruneSettings {
    pub fn new(history_keep: Duration, keys_keep: Duration, replica: Option<PathBuf>) -> Self {
        PruneSettings {
            history_keep,
            keys_keep,
            returns_keep: DEFAULT_RETURNS_KEEP,
            replica,
        }
    }

    /// `outbox.returns_keep`.
    pub fn with_returns_keep(mut self, returns_keep: Duration) -> Self {
        self.returns_keep = returns_keep;
        self
    }

    /// How long marked rows wait before they are deleted.
    pub fn settle(&self) -> Duration {
        SETTLE_MAX
            .min(self.history_keep)
            .min(self.keys_keep)
            .min(self.returns_keep)
    }

    fn round_every(&self) -> Duration {
        ROUND_EVERY
            .min(self.history_keep)
            .min(self.keys_keep)
            .min(self.returns_keep)
    }
}

impl Default for PruneSettings {
    /// The documented defaults (`outbox.history_keep`, `outbox.keys_keep`: 7 days), no replica.
    fn default() -> Self {
        let week = Duration::from_secs(7 * 86_400);
        PruneSettings::new(week, week, None)
    }
}

/// The history pruned, one kind of row at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `stock_movements` and their `sku_movements` copies, covered by `stock.watermark_seq`.
    Movements,
    /// `loyalty_ops`, covered by `customers.loyalty_watermark_seq`; an erased customer's once
    /// their event was delivered.
    Loyalty,
    /// `idempotency`: past `keys_keep` and their event acknowledged (deleted from `events`).
    Keys,
    /// `released_lines` (hand-overs and shipments), `prepared_lines` and `shipment_steps`:
    /// central no longer lists the order and the fact was delivered.
    Released,
    Prepared,
    ShipmentSteps,
    /// `sold_lines` and `returned_lines`: past `returns_keep` and the fact delivered.
    SoldLines,
    ReturnedLines,
    /// `consent_changes`: once central's customers row carries a choice for that purpose dated
    /// at or after the change (the row no longer changes what a lookup shows), or central
    /// erased the customer; the change delivered, and past `history_keep`.
    Consent,
}

const KINDS: [Kind; 9] = [
    Kind::Movements,
    Kind::Loyalty,
    Kind::Keys,
    Kind::Released,
    Kind::Prepared,
    Kind::ShipmentSteps,
    Kind::SoldLines,
    Kind::ReturnedLines,
    Kind::Consent,
];

impl Kind {
    fn code(self) -> i64 {
        self as i64
    }

    fn needs_replica(self) -> bool {
        !matches!(self, Kind::Keys | Kind::SoldLines | Kind::ReturnedLines)
    }

    /// The seq of the last of the next `?2` rows after `?1`, and the oldest time among them.
    fn chunk_sql(self) -> &'static str {
        match self {
            Kind::Movements => {
                "SELECT MAX(seq), MIN(wall_ms) FROM (SELECT seq, wall_ms FROM main.stock_movements
                   WHERE seq > ?1 ORDER BY seq, line LIMIT ?2)"
            }
            Kind::Loyalty => {
                "SELECT MAX(seq), MIN(wall_ms) FROM (SELECT seq, wall_ms FROM main.loyalty_ops
                   WHERE seq > ?1 ORDER BY seq, line LIMIT ?2)"
            }
            Kind::Keys => {
                "SELECT MAX(seq), MIN(at_ms) FROM (SELECT seq, at_ms FROM main.idempotency
                   WHERE seq > ?1 ORDER BY seq LIMIT ?2)"
            }
            // Small tables (order lines of a week): no index by seq is worth its cost.
            Kind::Released => {
                "SELECT MAX(seq), MIN(wall_ms) FROM (SELECT seq, wall_ms FROM main.released_lines
                   WHERE seq > ?1 ORDER BY seq LIMIT ?2)"
            }
            Kind::Prepared => {
                "SELECT MAX(seq), MIN(wall_ms) FROM (SELECT seq, wall_ms FROM main.prepared_lines
                   WHERE seq > ?1 ORDER BY seq LIMIT ?2)"
            }
            Kind::ShipmentSteps => {
                "SELECT MAX(seq), MIN(wall_ms) FROM (SELECT seq, wall_ms FROM main.shipment_steps
                   WHERE seq > ?1 ORDER BY seq LIMIT ?2)"
            }
            Kind::SoldLines => {
                "SELECT MAX(seq), MIN(wall_ms) FROM (SELECT seq, wall_ms FROM main.sold_lines
                   WHERE seq > ?1 ORDER BY seq LIMIT ?2)"
            }
            Kind::ReturnedLines => {
                "SELECT MAX(seq), MIN(wall_ms) FROM (SELECT seq, wall_ms FROM main.returned_lines
                   WHERE seq > ?1 ORDER BY seq LIMIT ?2)"
            }
            // One row per customer and purpose at most: small, no index by seq.
            Kind::Consent => {
                "SELECT MAX(seq), MIN(at_ms) FROM (SELECT seq, at_ms FROM main.consent_changes
                   WHERE seq > ?1 ORDER BY seq LIMIT ?2)"
            }
        }
    }

    /// Lists the rows of seq in `(?1, ?2]` older than `?3` that central covers now.
    fn mark_sql(self) -> &'static str {
        match self {
            Kind::Movements => {
                "INSERT OR IGNORE INTO temp.prune_due(kind, seq, line, key)
                 SELECT 0, m.seq, m.line, m.sku FROM main.stock_movements m
                 JOIN rpl.stock s ON s.sku = m.sku
                 WHERE m.seq > ?1 AND m.seq <= ?2 AND m.wall_ms <= ?3 AND m.seq <= s.watermark_seq"
            }
            // An erased customer has no watermark any more: their operations go once central
            // has their events (before that, the points must still reach central). A replica
            // rebuilt empty (version 0) lists nobody: nothing is taken as erased then.
            Kind::Loyalty => {
                "INSERT OR IGNORE INTO temp.prune_due(kind, seq, line, key)
                 SELECT 1, o.seq, o.line, o.customer_id FROM main.loyalty_ops o
                 LEFT JOIN rpl.customers c ON c.customer_id = o.customer_id
                 WHERE o.seq > ?1 AND o.seq <= ?2 AND o.wall_ms <= ?3
                   AND (SELECT version FROM rpl.streams WHERE name = 'customers') > 0
                   AND (o.seq <= c.loyalty_watermark_seq
                        OR (c.customer_id IS NULL
                            AND NOT EXISTS (SELECT 1 FROM main.events e WHERE e.seq = o.seq)))"
            }
            Kind::Keys => {
                "INSERT OR IGNORE INTO temp.prune_due(kind, seq, line, key)
                 SELECT 2, i.seq, 0, i.client_key FROM main.idempotency i
                 WHERE i.seq > ?1 AND i.seq <= ?2 AND i.at_ms <= ?3
                   AND NOT EXISTS (SELECT 1 FROM main.events e WHERE e.seq = i.seq)"
            }
            Kind::Released => {
                "INSERT OR IGNORE INTO temp.prune_due(kind, seq, line, key)
                 SELECT 3, c.seq, c.line, c.order_id FROM main.released_lines c
                 WHERE c.seq > ?1 AND c.seq <= ?2 AND c.wall_ms <= ?3
                   AND (SELECT version FROM rpl.streams WHERE name = 'reservations') > 0
                   AND NOT EXISTS (SELECT 1 FROM rpl.reservations r WHERE r.order_id = c.order_id)
                   AND NOT EXISTS (SELECT 1 FROM main.events e WHERE e.seq = c.seq)"
            }
            Kind::Prepared => {
                "INSERT OR IGNORE INTO temp.prune_due(kind, seq, line, key)
                 SELECT 4, c.seq, c.line, c.order_id FROM main.prepared_lines c
                 WHERE c.seq > ?1 AND c.seq <= ?2 AND c.wall_ms <= ?3
                   AND (SELECT version FROM rpl.streams WHERE name = 'reservations') > 0
                   AND NOT EXISTS (SELECT 1 FROM rpl.reservations r WHERE r.order_id = c.order_id)
                   AND NOT EXISTS (SELECT 1 FROM main.events e WHERE e.seq = c.seq)"
            }
            Kind::SoldLines => {
                "INSERT OR IGNORE INTO temp.prune_due(kind, seq, line, key)
                 SELECT 6, s.seq, s.line, s.receipt FROM main.sold_lines s
                 WHERE s.seq > ?1 AND s.seq <= ?2 AND s.wall_ms <= ?3
                   AND NOT EXISTS (SELECT 1 FROM main.events e WHERE e.seq = s.seq)"
            }
            // Marked per (seq, original line): every return line of one return for it goes.
            Kind::ReturnedLines => {
                "INSERT OR IGNORE INTO temp.prune_due(kind, seq, line, key)
                 SELECT 7, r.seq, r.line, json_array(r.source, r.original) FROM main.returned_lines r
                 WHERE r.seq > ?1 AND r.seq <= ?2 AND r.wall_ms <= ?3
                   AND NOT EXISTS (SELECT 1 FROM main.events e WHERE e.seq = r.seq)"
            }
            Kind::Consent => {
                "INSERT OR IGNORE INTO temp.prune_due(kind, seq, line, key)
                 SELECT 8, c.seq, 0, json_array(c.customer_id, c.purpose)
                 FROM main.consent_changes c
                 LEFT JOIN rpl.customers k ON k.customer_id = c.customer_id
                 WHERE c.seq > ?1 AND c.seq <= ?2 AND c.at_ms <= ?3
                   AND (SELECT version FROM rpl.streams WHERE name = 'customers') > 0
                   AND NOT EXISTS (SELECT 1 FROM main.events e WHERE e.seq = c.seq)
                   AND (k.customer_id IS NULL
                        OR (c.purpose = 'marketing' AND k.consent_marketing_ms >= c.at_ms)
                        OR (c.purpose = 'profiling' AND k.consent_profiling_ms >= c.at_ms))"
            }
            Kind::ShipmentSteps => {
                "INSERT OR IGNORE INTO temp.prune_due(kind, seq, line, key)
                 SELECT 5, c.seq, c.step, c.order_id FROM main.shipment_steps c
                 WHERE c.seq > ?1 AND c.seq <= ?2 AND c.wall_ms <= ?3
                   AND (SELECT version FROM rpl.streams WHERE name = 'reservations') > 0
                   AND NOT EXISTS (SELECT 1 FROM rpl.reservations r WHERE r.order_id = c.order_id)
                   AND NOT EXISTS (SELECT 1 FROM main.events e WHERE e.seq = c.seq)"
            }
        }
    }

    /// Deletes one marked row (`?1` seq, `?2` line, `?3` key) from the outbox's tables.
    fn delete_sql(self) -> &'static [&'static str] {
        match self {
            Kind::Movements => &[
                "DELETE FROM main.stock_movements WHERE seq = ?1 AND line = ?2 AND sku = ?3",
                "DELETE FROM main.sku_movements WHERE sku = ?3 AND seq = ?1 AND line = ?2",
            ],
            Kind::Loyalty => {
                &["DELETE FROM main.loyalty_ops WHERE seq = ?1 AND line = ?2 AND customer_id = ?3"]
            }
            Kind::Keys => &["DELETE FROM main.idempotency WHERE client_key = ?3 AND seq = ?1"],
            Kind::Released => {
                &["DELETE FROM main.released_lines WHERE order_id = ?3 AND line = ?2 AND seq = ?1"]
            }
            Kind::Prepared => {
                &["DELETE FROM main.prepared_lines WHERE order_id = ?3 AND line = ?2 AND seq = ?1"]
            }
            Kind::ShipmentSteps => {
                &["DELETE FROM main.shipment_steps WHERE order_id = ?3 AND step = ?2 AND seq = ?1"]
            }
            Kind::SoldLines => {
                &["DELETE FROM main.sold_lines WHERE receipt = ?3 AND line = ?2 AND seq = ?1"]
            }
            Kind::Consent => &["DELETE FROM main.consent_changes
                 WHERE customer_id = json_extract(?3, '$[0]') AND purpose = json_extract(?3, '$[1]')
                   AND seq = ?1"],
            Kind::ReturnedLines => &["DELETE FROM main.returned_lines
                 WHERE source = json_extract(?3, '$[0]') AND original = json_extract(?3, '$[1]')
                   AND line = ?2 AND seq = ?1"],
        }
    }

    /// The `meta` counters of rows deleted, one per statement of [`delete_sql`](Self::delete_sql).
    fn tables(self) -> &'static [&'static str] {
        match self {
            Kind::Movements => &["stock_movements", "sku_movements"],
            Kind::Loyalty => &["loyalty_ops"],
            Kind::Keys => &["idempotency"],
            Kind::Released => &["released_lines"],
            Kind::Prepared => &["prepared_lines"],
            Kind::ShipmentSteps => &["shipment_steps"],
            Kind::SoldLines => &["sold_lines"],
            Kind::ReturnedLines => &["returned_lines"],
            Kind::Consent => &["consent_changes"],
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    /// The next round starts at `at`.
    Waiting { at: Instant },
    /// Marking kind `KINDS[kind]`, from the row after `cursor`. The cutoffs are the round's.
    Marking { kind: usize, cursor: i64 },
    /// Everything is marked; deleting starts at `at` (after the settle time).
    Settling { at: Instant },
    /// Deleting the marked rows of `KINDS[kind]`.
    Deleting { kind: usize },
}

/// The writer's pruning state between idle moments.
pub(super) struct Pruner {
    settings: PruneSettings,
    phase: Phase,
    /// Unix ms before which a history row / a key is old enough, fixed when a round starts.
    history_cutoff_ms: i64,
    keys_cutoff_ms: i64,
    returns_cutoff_ms: i64,
    /// The replica could be attached this round (else only keys are marked).
    replica_ok: bool,
    /// The temporary table exists on the writer's connection.
    ready: bool,
}

impl Pruner {
    pub(super) fn new(settings: PruneSettings) -> Pruner {
        // The first round waits for the settle time too: a start is often a busy moment.
        let at = Instant::now() + settings.settle();
        Pruner {
            settings,
            phase: Phase::Waiting { at },
            history_cutoff_ms: 0,
            keys_cutoff_ms: 0,
            returns_cutoff_ms: 0,
            replica_ok: false,
            ready: false,
        }
    }

    /// When the pruner next has work; `None` while marking or deleting (work is due now).
    pub(super) fn due_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting { at } | Phase::Settling { at } => Some(at),
            Phase::Marking { .. } | Phase::Deleting { .. } => None,
        }
    }

    /// Whether a step would do something now.
    pub(super) fn due_now(&self) -> bool {
        self.due_at().is_none_or(|at| Instant::now() >= at)
    }

    /// One bounded step: start a round, mark one chunk, or delete one chunk. `last_seq`: the
    /// newest seq assigned, kept in `meta` before any delete (a seq is never reused). A
    /// failure ends the round (the caller logs it); the next round starts over.
    pub(super) fn step(&mut self, conn: &mut Connection, last_seq: u64) -> rusqlite::Result<()> {
        match self.try_step(conn, last_seq) {
            Ok(()) => Ok(()),
            Err(e) => {
                // Start over later: marks of a failed round are dropped with the next one.
                self.phase = Phase::Waiting {
                    at: Instant::now() + self.settings.round_every(),
                };
                let _ = conn.execute_batch("DETACH DATABASE rpl");
                Err(e)
            }
        }
    }

    fn try_step(&mut self, conn: &mut Connection, last_seq: u64) -> rusqlite::Result<()> {
        match self.phase {
            Phase::Waiting { at } => {
                if Instant::now() < at {
                    return Ok(());
                }
                self.start_round(conn)
            }
            Phase::Marking { kind, cursor } => self.mark_chunk(conn, kind, cursor),
            Phase::Settling { at } => {
                if Instant::now() >= at {
                    self.phase = Phase::Deleting { kind: 0 };
                }
                Ok(())
            }
            Phase::Deleting { kind } => self.delete_chunk(conn, kind, last_seq),
        }
    }

    fn start_round(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        if !self.ready {
            conn.execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS prune_due (
                    kind INTEGER NOT NULL, seq INTEGER NOT NULL, line INTEGER NOT NULL,
                    key TEXT NOT NULL, PRIMARY KEY (kind, seq, line, key)) WITHOUT ROWID",
            )?;
            self.ready = true;
        }
        conn.execute("DELETE FROM temp.prune_due", [])?;
        let now = crate::storage::now_unix_ms();
        self.history_cutoff_ms = now.saturating_sub(millis(self.settings.history_keep));
        self.keys_cutoff_ms = now.saturating_sub(millis(self.settings.keys_keep));
        self.returns_cutoff_ms = now.saturating_sub(millis(self.settings.returns_keep));
        self.replica_ok = self
            .settings
            .replica
            .as_deref()
            .is_some_and(|path| path.exists());
        self.phase = Phase::Marking { kind: 0, cursor: 0 };
        Ok(())
    }

    fn mark_chunk(&mut self, conn: &Connection, kind: usize, cursor: i64) -> rusqlite::Result<()> {
        let Some(&k) = KINDS.get(kind) else {
            self.phase = Phase::Settling {
                at: Instant::now() + self.settings.settle(),
            };
            return Ok(());
        };
        let next_kind = Phase::Marking {
            kind: kind + 1,
            cursor: 0,
        };
        if k.needs_replica() && !self.replica_ok {
            self.phase = next_kind;
            return Ok(());
        }
        let (upto, oldest): (Option<i64>, Option<i64>) = conn
            .prepare_cached(k.chunk_sql())?
            .query_row(params![cursor, PRUNE_CHUNK], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let cutoff = match k {
            Kind::Keys => self.keys_cutoff_ms,
            Kind::SoldLines | Kind::ReturnedLines => self.returns_cutoff_ms,
            _ => self.history_cutoff_ms,
        };
        let Some(upto) = upto else {
            self.phase = next_kind;
            return Ok(());
        };
        // Rows are in time order but for clock jumps; a chunk wholly past the cutoff ends the
        // kind's pass (what a jump left behind goes at the next round).
        if oldest.is_none_or(|oldest| oldest > cutoff) {
            self.phase = next_kind;
            return Ok(());
        }
        if k.needs_replica() {
            if let Some(path) = &self.settings.replica {
                attach_read_only(conn, path)?;
            }
            // Not cached: a statement naming `rpl` must not outlive the attachment.
            let marked = conn.execute(k.mark_sql(), params![cursor, upto, cutoff]);
            let detached = conn.execute_batch("DETACH DATABASE rpl");
            marked?;
            detached?;
        } else {
            conn.prepare_cached(k.mark_sql())?
                .execute(params![cursor, upto, cutoff])?;
        }
        self.phase = Phase::Marking { kind, cursor: upto };
        Ok(())
    }

    fn delete_chunk(
        &mut self,
        conn: &mut Connection,
        kind: usize,
        last_seq: u64,
    ) -> rusqlite::Result<()> {
        let Some(&k) = KINDS.get(kind) else {
            self.phase = Phase::Waiting {
                at: Instant::now() + self.settings.round_every(),
            };
            return Ok(());
        };
        let tx = conn.transaction()?;
        let rows: Vec<(i64, i64, String)> = tx
            .prepare_cached(
                "SELECT seq, line, key FROM temp.prune_due WHERE kind = ?1
                 ORDER BY seq, line LIMIT ?2",
            )?
            .query_map(params![k.code(), PRUNE_CHUNK], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        if rows.is_empty() {
            drop(tx);
            self.phase = Phase::Deleting { kind: kind + 1 };
            return Ok(());
        }
        // The newest seq may be among these rows: `meta` keeps it (see `stats::read`).
        tx.prepare_cached("UPDATE meta SET value = MAX(value, ?1) WHERE key = 'last_seq'")?
            .execute([i64::try_from(last_seq).unwrap_or(i64::MAX)])?;
        let mut deleted = vec![0u64; k.delete_sql().len()];
        for (seq, line, key) in &rows {
            for (n, sql) in k.delete_sql().iter().enumerate() {
                let changed = tx.prepare_cached(sql)?.execute(params![seq, line, key])?;
                deleted[n] = deleted[n].saturating_add(changed as u64);
            }
            tx.prepare_cached(
                "DELETE FROM temp.prune_due WHERE kind = ?1 AND seq = ?2 AND line = ?3 AND key = ?4",
            )?
            .execute(params![k.code(), seq, line, key])?;
        }
        for (table, n) in k.tables().iter().zip(deleted) {
            tx.prepare_cached(
                "INSERT INTO meta(key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
            )?
            .execute(params![
                pruned_key(table),
                i64::try_from(n).unwrap_or(i64::MAX)
            ])?;
        }
        tx.commit()
    }
}

/// The `meta` key counting the rows pruned from `table`.
pub(crate) fn pruned_key(table: &str) -> String {
    debug_assert!(RETENTION_TABLES.contains(&table));
    format!("pruned.{table}")
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `ATTACH` `path` read-only as `rpl`: a URI with `mode=ro`, so this connection cannot write
/// the replica whatever it runs (the applier is its only writer).
fn attach_read_only(conn: &Connection, path: &Path) -> rusqlite::Result<()> {
    conn.execute("ATTACH DATABASE ?1 AS rpl", [read_only_uri(path)])?;
    Ok(())
}

/// `file:<path>?mode=ro`, with every byte a URI path cannot hold as such escaped.
fn read_only_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for byte in path.as_os_str().as_encoded_bytes() {
        if byte.is_ascii() && !matches!(byte, b'%' | b'?' | b'#') {
            uri.push(char::from(*byte));
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri.push_str("?mode=ro");
    uri
}

#[cfg(test)]
#[path = "prune_tests.rs"]
mod tests;
