//! Outbox depth, age and size, and reading events back as envelopes (`outbox stats`, `tail`).

use super::{Envelope, RetentionClass};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use uuid::Uuid;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClassStats {
    pub depth: u64,
    pub bytes: u64,
    /// Wall time of the oldest unsent event of this class.
    pub oldest_unsent_ms: Option<i64>,
    pub dropped: u64,
    /// Delivered since the agent started (not persisted).
    pub delivered: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutboxStats {
    pub store_fact: ClassStats,
    pub telemetry: ClassStats,
    pub last_seq: u64,
    /// The newest store fact's `fact_seq` (ADR 0026): every store fact of `fact_epoch` from 1
    /// through this one is committed, and none after it up to `last_seq` (the two are updated
    /// together, under the writer's lock, so they are one consistent pair).
    pub last_fact_seq: u64,
    pub fact_epoch: u32,
    pub boot: u64,
}

impl OutboxStats {
    pub fn class(&self, class: RetentionClass) -> &ClassStats {
        match class {
            RetentionClass::StoreFact => &self.store_fact,
            RetentionClass::Telemetry => &self.telemetry,
        }
    }

    fn class_mut(&mut self, class: RetentionClass) -> &mut ClassStats {
        match class {
            RetentionClass::StoreFact => &mut self.store_fact,
            RetentionClass::Telemetry => &mut self.telemetry,
        }
    }

    pub(crate) fn record_append(
        &mut self,
        class: RetentionClass,
        bytes: u64,
        wall_ms: i64,
        seq: u64,
        fact_seq: Option<u64>,
    ) {
        let c = self.class_mut(class);
        c.depth += 1;
        c.bytes += bytes;
        c.oldest_unsent_ms.get_or_insert(wall_ms);
        self.last_seq = self.last_seq.max(seq);
        if let Some(fact_seq) = fact_seq {
            self.last_fact_seq = self.last_fact_seq.max(fact_seq);
        }
    }

    pub(crate) fn record_drop(
        &mut self,
        class: RetentionClass,
        rows: u64,
        bytes: u64,
        oldest: Option<i64>,
    ) {
        let c = self.class_mut(class);
        c.depth = c.depth.saturating_sub(rows);
        c.bytes = c.bytes.saturating_sub(bytes);
        c.dropped += rows;
        c.oldest_unsent_ms = oldest;
    }

    pub(crate) fn record_delivered(&mut self, class: RetentionClass, rows: u64, bytes: u64) {
        let c = self.class_mut(class);
        c.depth = c.depth.saturating_sub(rows);
        c.bytes = c.bytes.saturating_sub(bytes);
        c.delivered += rows;
    }

    pub(crate) fn set_oldest(&mut self, class: RetentionClass, oldest: Option<i64>) {
        self.class_mut(class).oldest_unsent_ms = oldest;
    }

    /// Age in seconds of the oldest unsent store fact: the figure ops alarm on.
    pub fn oldest_store_fact_age_s(&self, now_ms: i64) -> Option<f64> {
        self.store_fact
            .oldest_unsent_ms
            .map(|ms| ((now_ms - ms).max(0) as f64) / 1000.0)
    }
}

/// Compute the stats from the table (at start, and for the CLI while the agent runs).
pub fn read(conn: &Connection) -> Result<OutboxStats, rusqlite::Error> {
    let mut out = OutboxStats::default();
    let mut stmt = conn.prepare(
        "SELECT class, COUNT(*), COALESCE(SUM(length(payload)), 0), MIN(wall_ms)
         FROM events WHERE state = 0 GROUP BY class",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let Some(class) = RetentionClass::from_code(row.get(0)?) else {
            continue;
        };
        let c = out.class_mut(class);
        c.depth = row.get::<_, i64>(1)?.max(0) as u64;
        c.bytes = row.get::<_, i64>(2)?.max(0) as u64;
        c.oldest_unsent_ms = row.get(3)?;
    }
    let meta = |key: &str| -> Result<u64, rusqlite::Error> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
            r.get::<_, i64>(0)
        })
        .map(|v| v.max(0) as u64)
    };
    // Appends do not rewrite `meta.last_seq` (one page less per commit): the newest seq is the
    // max over the rows that carry one, and meta covers rows deleted since.
    let newest = super::SEQ_TABLES
        .iter()
        .map(|table| format!("COALESCE((SELECT MAX(seq) FROM {table}), 0)"))
        .collect::<Vec<_>>()
        .join(", ");
    let max_event: i64 = conn.query_row(&format!("SELECT MAX({newest})"), [], |r| r.get(0))?;
    out.last_seq = meta("last_seq")?.max(max_event.max(0) as u64);
    let max_fact: i64 =
        conn.query_row("SELECT COALESCE(MAX(fact_seq), 0) FROM events", [], |r| {
            r.get(0)
        })?;
    out.last_fact_seq = meta("last_fact_seq")?.max(max_fact.max(0) as u64);
    out.fact_epoch = u32::try_from(meta("fact_epoch")?).unwrap_or(0);
    out.boot = meta("boot")?;
    Ok(out)
}

/// Events parked because the broker refused them.
pub fn dead_letters(conn: &Connection) -> Result<u64, rusqlite::Error> {
    conn.query_row("SELECT COUNT(*) FROM events WHERE state = 2", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n.max(0) as u64)
}

/// The newest `limit` events, oldest first.
pub fn newest(
    conn: &Connection,
    agent: &str,
    limit: usize,
) -> Result<Vec<Envelope>, rusqlite::Error> {
    let mut events = query_envelopes(
        conn,
        agent,
        "SELECT seq, id, class, type, schema, boot, wall_ms, mono_ns, payload, fact_seq, (SELECT value FROM meta WHERE key = 'fact_epoch') FROM events ORDER BY seq DESC LIMIT ?2",
        0,
        limit,
    )?;
    events.reverse();
    Ok(events)
}

/// Up to `limit` events with `seq > after_seq`, oldest first.
pub fn after(
    conn: &Connection,
    agent: &str,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<Envelope>, rusqlite::Error> {
    query_envelopes(
        conn,
        agent,
        "SELECT seq, id, class, type, schema, boot, wall_ms, mono_ns, payload, fact_seq, (SELECT value FROM meta WHERE key = 'fact_epoch') FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        after_seq,
        limit,
    )
}

fn query_envelopes(
    conn: &Connection,
    agent: &str,
    sql: &str,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<Envelope>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params![after_seq as i64, limit as i64], |r| {
        let id: Vec<u8> = r.get(1)?;
        let payload: String = r.get(8)?;
        Ok(Envelope {
            seq: r.get::<_, i64>(0)? as u64,
            id: Uuid::from_slice(&id).unwrap_or(Uuid::nil()),
            agent: agent.to_string(),
            class: RetentionClass::from_code(r.get(2)?).unwrap_or(RetentionClass::Telemetry),
            event_type: r.get(3)?,
            schema: r.get(4)?,
            boot: r.get::<_, i64>(5)? as u64,
            wall_ms: r.get(6)?,
            mono_ns: r.get::<_, i64>(7)? as u64,
            fact_seq: r.get::<_, Option<i64>>(9)?.map(|n| n.max(0) as u64),
            fact_epoch: r
                .get::<_, Option<i64>>(9)?
                .and(r.get::<_, Option<i64>>(10)?)
                .and_then(|e| u32::try_from(e).ok()),
            payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
        })
    })?;
    rows.collect()
}

/// The tables whose rows are pruned once central covers them (ADR 0025), as `outbox stats`
/// reports them.
pub const RETENTION_TABLES: &[&str] = &[
    "stock_movements",
    "sku_movements",
    "loyalty_ops",
    "idempotency",
    "unfiled_keys",
    "released_lines",
    "prepared_lines",
    "shipment_steps",
    "sold_lines",
    "returned_lines",
    "consent_changes",
];

/// One table's retention, for an auditor: rows held, rows pruned since the outbox was created,
/// and the time of the oldest row kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TableRetention {
    pub table: &'static str,
    pub rows: u64,
    pub pruned: u64,
    /// Unix ms of the oldest row still held; `None` when empty or when the table keeps no
    /// time of its own (`sku_movements` copies `stock_movements`; `unfiled_keys` are filed
    /// into `idempotency` within moments).
    pub oldest_kept_ms: Option<i64>,
}

/// Every table of [`RETENTION_TABLES`]; counts whole tables, for the CLI only.
pub fn retention(conn: &Connection) -> Result<Vec<TableRetention>, rusqlite::Error> {
    RETENTION_TABLES
        .iter()
        .map(|&table| {
            let rows: i64 =
                conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
            let pruned: Option<i64> = conn
                .query_row(
                    "SELECT value FROM meta WHERE key = ?1",
                    [super::prune::pruned_key(table)],
                    |r| r.get(0),
                )
                .optional()?;
            let oldest_sql = match table {
                "stock_movements" | "loyalty_ops" => Some(format!(
                    "SELECT wall_ms FROM {table} ORDER BY seq, line LIMIT 1"
                )),
                "idempotency" => Some("SELECT MIN(at_ms) FROM idempotency".to_string()),
                "consent_changes" => Some("SELECT MIN(at_ms) FROM consent_changes".to_string()),
                "released_lines" | "prepared_lines" | "shipment_steps" | "sold_lines"
                | "returned_lines" => Some(format!("SELECT MIN(wall_ms) FROM {table}")),
                _ => None,
            };
            let oldest_kept_ms = match oldest_sql {
                Some(sql) => conn
                    .query_row(&sql, [], |r| r.get::<_, Option<i64>>(0))
                    .optional()?
                    .flatten(),
                None => None,
            };
            Ok(TableRetention {
                table,
                rows: rows.max(0) as u64,
                pruned: pruned.unwrap_or(0).max(0) as u64,
                oldest_kept_ms,
            })
        })
        .collect()
}
