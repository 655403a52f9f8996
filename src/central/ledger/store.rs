//! The ledger's tables, beside `events` in the ingest's database, and the one function that
//! applies a change to them. Every change to a figure goes through [`apply`], whether it came
//! from a store fact or from central's own channel.

use super::db::{DbError, Tx, args};
use super::rules::{Change, LineStatus, line_moves};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ledger_stock (
    store   TEXT NOT NULL,
    sku     TEXT NOT NULL,
    on_hand BIGINT NOT NULL,
    PRIMARY KEY (store, sku)
) WITHOUT ROWID;
-- `line`: the customer's snapshot line as central's master data has it, without the balance.
CREATE TABLE IF NOT EXISTS ledger_customers (
    customer_id TEXT PRIMARY KEY,
    line        TEXT NOT NULL,
    balance     BIGINT NOT NULL,
    erased_ms   BIGINT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_order_lines (
    order_id    TEXT NOT NULL,
    line        BIGINT NOT NULL,
    store       TEXT NOT NULL,
    sku         TEXT NOT NULL,
    qty         BIGINT NOT NULL,
    status      TEXT NOT NULL,
    pickup_code TEXT,
    fulfilment  TEXT NOT NULL,
    PRIMARY KEY (order_id, line)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ledger_order_lines_by_store ON ledger_order_lines(store);
-- How far the ledger applied each agent's store facts (by fact_seq), and that fact's seq: the
-- watermark its figures include.
CREATE TABLE IF NOT EXISTS ledger_cursor (
    agent    TEXT NOT NULL,
    epoch    BIGINT NOT NULL,
    fact_seq BIGINT NOT NULL,
    seq      BIGINT NOT NULL,
    PRIMARY KEY (agent, epoch)
) WITHOUT ROWID;
-- Central's operations seen, once each; a refused one keeps its refusal (`code: reason`).
CREATE TABLE IF NOT EXISTS ledger_web_ops (
    op_id      TEXT PRIMARY KEY,
    applied_ms BIGINT NOT NULL,
    refused    TEXT
) WITHOUT ROWID;
-- Events the rules could not read: skipped (the cursor moves on) and kept here for an operator.
CREATE TABLE IF NOT EXISTS ledger_rejects (
    agent    TEXT NOT NULL,
    epoch    BIGINT NOT NULL,
    fact_seq BIGINT NOT NULL,
    reason   TEXT NOT NULL,
    PRIMARY KEY (agent, epoch, fact_seq)
) WITHOUT ROWID;
-- The agents the ledger serves, what it last sent each of them per row, and each stream's
-- version on its side.
CREATE TABLE IF NOT EXISTS ledger_agents (
    agent TEXT PRIMARY KEY,
    store TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_sent (
    agent  TEXT NOT NULL,
    stream TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (agent, stream, key)
) WITHOUT ROWID;
-- The seq of each agent's last fact that moved a row (stock by SKU, customers by id): a row
-- whose figure came back to what was sent still goes out again with the new watermark.
CREATE TABLE IF NOT EXISTS ledger_touch (
    agent  TEXT NOT NULL,
    stream TEXT NOT NULL,
    key    TEXT NOT NULL,
    seq    BIGINT NOT NULL,
    PRIMARY KEY (agent, stream, key)
) WITHOUT ROWID;
-- Coupons the stores took, each with its fact's place in the ingest's order: of a single-use
-- coupon's redemptions, every one after the first ingested is a duplicate (docs/contract.md).
CREATE TABLE IF NOT EXISTS ledger_coupon_redemptions (
    agent        TEXT NOT NULL,
    epoch        BIGINT NOT NULL,
    fact_seq     BIGINT NOT NULL,
    coupon       TEXT NOT NULL,
    single_use   BIGINT NOT NULL,
    ingest_order BIGINT NOT NULL,
    PRIMARY KEY (agent, epoch, fact_seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ledger_coupon_redemptions_by_coupon
    ON ledger_coupon_redemptions(coupon, ingest_order);
CREATE TABLE IF NOT EXISTS ledger_versions (
    agent   TEXT NOT NULL,
    stream  TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (agent, stream)
) WITHOUT ROWID;
";

/// What applying a change found wrong with it (the whole unit it belongs to is refused).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "customer {0:?} is not in the ledger: seed it (relaisctl ledger seed --customers) first"
    )]
    UnknownCustomer(String),
    #[error("order {order_id:?} has no line {line}")]
    UnknownLine { order_id: String, line: i64 },
    #[error("{0} would overflow")]
    Overflow(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The store an agent belongs to: the first part of `STORE/AGENT`.
pub fn store_of(agent: &str) -> &str {
    agent.split_once('/').map_or(agent, |(store, _)| store)
}

/// Apply one change, as part of the caller's transaction.
pub fn apply(tx: &mut Tx<'_>, store: &str, change: &Change) -> Result<(), ApplyError> {
    match change {
        Change::Stock { sku, delta } => {
            let now = match tx.row(
                "SELECT on_hand FROM ledger_stock WHERE store = $1 AND sku = $2",
                args![store, sku],
            )? {
                Some(row) => row.int(0)?,
                None => 0,
            };
            let after = now
                .checked_add(*delta)
                .ok_or_else(|| Refusal::Overflow(format!("on-hand of {sku} at {store}")))?;
            tx.exec(
                "INSERT INTO ledger_stock(store, sku, on_hand) VALUES ($1, $2, $3)
                 ON CONFLICT(store, sku) DO UPDATE SET on_hand = excluded.on_hand",
                args![store, sku, after],
            )?;
        }
        Change::Points { customer_id, delta } => {
            let balance = tx
                .row(
                    "SELECT balance FROM ledger_customers WHERE customer_id = $1",
                    args![customer_id],
                )?
                .ok_or_else(|| Refusal::UnknownCustomer(customer_id.clone()))?
                .int(0)?;
            let after = balance
                .checked_add(*delta)
                .ok_or_else(|| Refusal::Overflow(format!("balance of {customer_id}")))?;
            tx.exec(
                "UPDATE ledger_customers SET balance = $2 WHERE customer_id = $1",
                args![customer_id, after],
            )?;
        }
        Change::Line {
            order_id,
            line,
            status,
        } => {
            let Some(now) = tx.row(
                "SELECT status FROM ledger_order_lines WHERE order_id = $1 AND line = $2",
                args![order_id, *line],
            )?
            else {
                return Err(Refusal::UnknownLine {
                    order_id: order_id.clone(),
                    line: *line,
                }
                .into());
            };
            let now = now.text(0)?;
            if LineStatus::parse(&now).is_some_and(|from| line_moves(from, *status)) {
                tx.exec(
                    "UPDATE ledger_order_lines SET status = $3 WHERE order_id = $1 AND line = $2",
                    args![order_id, *line, status.name()],
                )?;
            }
        }
        Change::Consent(change) => {
            let line = tx.row(
                "SELECT line FROM ledger_customers WHERE customer_id = $1 AND erased_ms IS NULL",
                args![&change.customer_id],
            )?;
            // An erased or unknown customer's choice changes nothing central keeps.
            if let Some(line) = line
                && let Some(updated) = with_consent(&line.text(0)?, change)
            {
                tx.exec(
                    "UPDATE ledger_customers SET line = $2 WHERE customer_id = $1",
                    args![&change.customer_id, &updated],
                )?;
            }
        }
        // Kept with its fact's place in the ingest order ([`record_coupon`]); no figure moves.
        Change::Coupon { .. } => {}
    }
    Ok(())
}

/// Where a fact sits: its agent's numbering and the ingest's order.
#[derive(Clone, Copy, Debug)]
pub struct FactPlace<'a> {
    pub agent: &'a str,
    pub epoch: i64,
    pub fact_seq: i64,
    pub ingest_order: i64,
}

/// Keep a coupon redemption (once per fact, as every fact is applied once).
pub fn record_coupon(
    tx: &mut Tx<'_>,
    place: FactPlace<'_>,
    identity: &str,
    single_use: bool,
) -> Result<(), DbError> {
    tx.exec(
        "INSERT INTO ledger_coupon_redemptions(agent, epoch, fact_seq, coupon, single_use,
                                               ingest_order)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        args![
            place.agent,
            place.epoch,
            place.fact_seq,
            identity,
            i64::from(single_use),
            place.ingest_order
        ],
    )?;
    Ok(())
}

/// A single-use coupon taken again: which redemption, and the first ingested one it repeats.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CouponDuplicate {
    pub coupon: String,
    pub agent: String,
    pub fact_seq: u64,
    pub first_agent: String,
    pub first_fact_seq: u64,
}

/// Every duplicate redemption of a single-use coupon, for the issuer's clearing or the store's
/// loss report. Computed from what is applied, so a first redemption applied late (its store
/// was behind a gap) still comes out first.
pub fn coupon_duplicates(tx: &mut Tx<'_>) -> Result<Vec<CouponDuplicate>, DbError> {
    tx.collect(
        "SELECT r.coupon, r.agent, r.fact_seq, f.agent, f.fact_seq
         FROM ledger_coupon_redemptions r
         JOIN ledger_coupon_redemptions f ON f.coupon = r.coupon AND f.single_use = 1
              AND f.ingest_order = (SELECT MIN(m.ingest_order) FROM ledger_coupon_redemptions m
                                    WHERE m.coupon = r.coupon AND m.single_use = 1)
         WHERE r.single_use = 1 AND r.ingest_order > f.ingest_order
         ORDER BY r.coupon, r.ingest_order",
        &[],
        |r| {
            Ok(CouponDuplicate {
                coupon: r.text(0)?,
                agent: r.text(1)?,
                fact_seq: r.count(2)?,
                first_agent: r.text(3)?,
                first_fact_seq: r.count(4)?,
            })
        },
    )
}

/// The customer line with a till's consent choice, when it is dated at or after the one the
/// line holds (the agent's rule, ADR 0023); `None` when the line keeps its own.
fn with_consent(line: &str, change: &crate::domain::consent::ConsentChanged) -> Option<String> {
    let at = |text: &str| humantime::parse_rfc3339(text).ok();
    let changed_at = at(&change.at)?;
    let mut value: serde_json::Value = serde_json::from_str(line).ok()?;
    let purpose = change.purpose.name();
    let held = value
        .get("consent")
        .and_then(|c| c.get(purpose))
        .and_then(|c| c.get("at"))
        .and_then(|a| a.as_str())
        .and_then(at);
    if held.is_some_and(|held| held > changed_at) {
        return None;
    }
    let consent = value
        .as_object_mut()?
        .entry("consent")
        .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    consent.as_object_mut()?.insert(
        purpose.to_owned(),
        serde_json::json!({"granted": change.granted, "at": change.at}),
    );
    serde_json::to_string(&value).ok()
}

/// One agent's progress through its facts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cursor {
    pub fact_seq: u64,
    pub seq: u64,
}

pub fn cursor(tx: &mut Tx<'_>, agent: &str, epoch: u32) -> Result<Cursor, DbError> {
    Ok(
        match tx.row(
            "SELECT fact_seq, seq FROM ledger_cursor WHERE agent = $1 AND epoch = $2",
            args![agent, epoch],
        )? {
            Some(row) => Cursor {
                fact_seq: row.count(0)?,
                seq: row.count(1)?,
            },
            None => Cursor::default(),
        },
    )
}

/// The watermark the ledger's figures include for `agent`: the seq of the last fact applied
/// in its newest outbox epoch (facts are numbered in seq order, so every fact of the agent up
/// to that seq is in).
pub fn watermark(tx: &mut Tx<'_>, agent: &str) -> Result<u64, DbError> {
    match tx.row(
        "SELECT c.seq FROM ledger_cursor c JOIN agent_facts f
             ON f.agent = c.agent AND f.epoch = c.epoch
         WHERE c.agent = $1 ORDER BY f.first_seen_ms DESC, c.epoch DESC LIMIT 1",
        args![agent],
    )? {
        Some(row) => row.count(0),
        None => Ok(0),
    }
}

/// Remember that `agent`'s fact `seq` moved this row.
pub fn touch(tx: &mut Tx<'_>, agent: &str, change: &Change, seq: i64) -> Result<(), DbError> {
    let (stream, key) = match change {
        Change::Stock { sku, .. } => ("stock", sku),
        Change::Points { customer_id, .. } => ("customers", customer_id),
        Change::Line { .. } | Change::Consent(_) | Change::Coupon { .. } => return Ok(()),
    };
    tx.exec(
        "INSERT INTO ledger_touch(agent, stream, key, seq) VALUES ($1, $2, $3, $4)
         ON CONFLICT(agent, stream, key) DO UPDATE SET seq = excluded.seq",
        args![agent, stream, key, seq],
    )?;
    Ok(())
}
