//! The reference ledger (`relaisctl ledger`, docs/ledger.md): central's stock per store and SKU,
//! loyalty per customer and web order lines, computed from the store facts the ingest holds and
//! from central's own channel (web orders, web returns, web loyalty, warehouse receipts), in the
//! same database as the ingest's `events`. It applies each agent's facts once, in `fact_seq`
//! order and only up to the last one held without a gap, with the agent's own rules
//! ([`rules`]); it sends every agent the rows that changed with the watermark they include
//! ([`downlink`]), so the store's figures converge with central's.

pub mod db;
pub mod downlink;
pub mod rules;
pub mod run;
pub mod store;
pub mod web;

use super::sink::SinkTarget;
use db::{Db, DbError, Tx, args};
use serde::Serialize;
use std::io::BufRead;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(
        "ledger database: {0} — check the --sink (disk space and permissions of a file; that a \
         PostgreSQL server runs and takes the URL's user)"
    )]
    Db(DbError),
    #[error(transparent)]
    Central(#[from] super::CentralError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {reason}. Nothing of this line was applied")]
    BadLine {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error("snapshot for {agent}: {reason}")]
    Snapshot { agent: String, reason: String },
}

// Not `#[from]`: that would make the database's error a `source` too, printed twice.
impl From<DbError> for LedgerError {
    fn from(e: DbError) -> Self {
        LedgerError::Db(e)
    }
}

/// Open (and create or upgrade) the ledger's tables in the ingest's database: a SQLite file or
/// a `postgres://` URL, as `relaisctl ingest --sink` takes.
pub fn open(sink: &str) -> Result<Db, LedgerError> {
    Db::open(&SinkTarget::parse(sink)?, store::SCHEMA)
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ApplyReport {
    pub facts: u64,
    pub changes: u64,
    /// Facts whose payload the rules could not read or whose change was refused (skipped,
    /// listed in `ledger_rejects`).
    pub rejected: u64,
    /// For each fact applied: milliseconds from its commit at the agent (`wall_ms`) to the
    /// ledger's commit of it.
    #[serde(skip)]
    pub latencies_ms: Vec<i64>,
}

/// Most facts applied in one transaction, over every agent: one write transaction per tick
/// however many agents moved, so the ingest workers sharing the database wait for the ledger's
/// write lock once per tick, not once per agent.
const APPLY_BATCH: i64 = 20_000;

/// Apply every fact the ingest holds without a gap and the ledger has not applied yet.
pub fn apply_ingested(db: &mut Db) -> Result<ApplyReport, LedgerError> {
    let mut report = ApplyReport::default();
    loop {
        let mut tx = db.transaction()?;
        let pending: Vec<(String, i64, i64, i64, i64)> = tx.collect(
            "SELECT f.agent, f.epoch, f.contiguous, COALESCE(c.fact_seq, 0), COALESCE(c.seq, 0)
                 FROM agent_facts f
                 LEFT JOIN ledger_cursor c ON c.agent = f.agent AND c.epoch = f.epoch
                 WHERE f.contiguous > COALESCE(c.fact_seq, 0)
                 ORDER BY f.agent, f.epoch",
            &[],
            |r| Ok((r.text(0)?, r.int(1)?, r.int(2)?, r.int(3)?, r.int(4)?)),
        )?;
        if pending.is_empty() {
            break;
        }
        let mut budget = APPLY_BATCH;
        let mut committed_at = Vec::new();
        for (agent, epoch, through, from_fact, from_seq) in pending {
            if budget <= 0 {
                break;
            }
            let upto = through.min(from_fact.saturating_add(budget));
            let facts: Vec<(i64, i64, String, String, i64, i64)> = tx.collect(
                "SELECT fact_seq, seq, type, payload, wall_ms, COALESCE(ingest_order, 0)
                     FROM events
                     WHERE agent = $1 AND fact_epoch = $2 AND fact_seq > $3 AND fact_seq <= $4
                     ORDER BY fact_seq",
                args![&agent, epoch, from_fact, upto],
                |r| {
                    Ok((
                        r.int(0)?,
                        r.int(1)?,
                        r.text(2)?,
                        r.text(3)?,
                        r.int(4)?,
                        r.int(5)?,
                    ))
                },
            )?;
            budget = budget.saturating_sub(facts.len().max(1) as i64);
            let mut last = (from_fact, from_seq);
            for (fact_seq, seq, event_type, payload, wall_ms, ingest_order) in facts {
                committed_at.push(wall_ms);
                let place = store::FactPlace {
                    agent: &agent,
                    epoch,
                    fact_seq,
                    ingest_order,
                };
                match apply_fact(&mut tx, place, seq, &event_type, &payload)? {
                    Ok(n) => report.changes += n,
                    Err(reason) => {
                        tracing::warn!(%agent, fact_seq, %reason, "fact skipped by the ledger");
                        tx.exec(
                            "INSERT INTO ledger_rejects(agent, epoch, fact_seq, reason)
                             VALUES ($1, $2, $3, $4)
                             ON CONFLICT(agent, epoch, fact_seq) DO UPDATE SET reason = excluded.reason",
                            args![&agent, epoch, fact_seq, &reason],
                        )?;
                        report.rejected += 1;
                    }
                }
                report.facts += 1;
                last = (fact_seq, seq);
            }
            tx.exec(
                "INSERT INTO ledger_cursor(agent, epoch, fact_seq, seq) VALUES ($1, $2, $3, $4)
                 ON CONFLICT(agent, epoch) DO UPDATE SET fact_seq = excluded.fact_seq,
                                                         seq = excluded.seq",
                args![&agent, epoch, last.0, last.1],
            )?;
            tx.exec(
                "INSERT INTO ledger_agents(agent, store) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                args![&agent, store::store_of(&agent)],
            )?;
        }
        tx.commit()?;
        let now = crate::storage::now_unix_ms();
        report
            .latencies_ms
            .extend(committed_at.into_iter().map(|at| now.saturating_sub(at)));
        if budget > 0 {
            break; // everything pending fitted in this transaction
        }
    }
    Ok(report)
}

/// One fact's changes, all or none (a savepoint): `Err(reason)` when the fact is skipped.
fn apply_fact(
    tx: &mut Tx<'_>,
    place: store::FactPlace<'_>,
    seq: i64,
    event_type: &str,
    payload: &str,
) -> Result<Result<u64, String>, DbError> {
    let changes = match rules::changes(event_type, payload) {
        Ok(changes) => changes,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let agent = place.agent;
    let store = store::store_of(agent);
    tx.batch("SAVEPOINT fact")?;
    for change in &changes {
        if let rules::Change::Coupon {
            identity,
            single_use,
        } = change
        {
            store::record_coupon(tx, place, identity, *single_use)?;
        }
        match store::apply(tx, store, change) {
            Ok(()) => store::touch(tx, agent, change, seq)?,
            Err(store::ApplyError::Db(e)) => return Err(e),
            Err(store::ApplyError::Refused(why)) => {
                tx.batch("ROLLBACK TO SAVEPOINT fact; RELEASE SAVEPOINT fact")?;
                return Ok(Err(why.to_string()));
            }
        }
    }
    tx.batch("RELEASE SAVEPOINT fact")?;
    Ok(Ok(changes.len() as u64))
}

/// Central's baseline: stock lines of one store, or customer lines (snapshot formats,
/// docs/snapshot-format.md). Replaces the figures it names.
pub enum Seed {
    Stock { store: String, path: PathBuf },
    Customers { path: PathBuf },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StockSeed {
    sku: String,
    on_hand: i64,
    #[serde(default)]
    #[allow(dead_code)] // a snapshot line may carry it; central's own figure has none
    watermark_seq: u64,
}

pub fn seed(db: &mut Db, seed: &Seed) -> Result<u64, LedgerError> {
    let path = match seed {
        Seed::Stock { path, .. } | Seed::Customers { path } => path,
    };
    let file = std::fs::File::open(path).map_err(|source| LedgerError::Read {
        path: path.clone(),
        source,
    })?;
    let mut tx = db.transaction()?;
    let mut rows = 0;
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| LedgerError::Read {
            path: path.clone(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| LedgerError::BadLine {
            path: path.clone(),
            line: index as u64 + 1,
            reason,
        };
        match seed {
            Seed::Stock { store, .. } => {
                let row: StockSeed = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
                tx.exec(
                    "INSERT INTO ledger_stock(store, sku, on_hand) VALUES ($1, $2, $3)
                     ON CONFLICT(store, sku) DO UPDATE SET on_hand = excluded.on_hand",
                    args![store, &row.sku, row.on_hand],
                )?;
            }
            Seed::Customers { .. } => {
                let (customer_id, balance, master) = web::customer_master(&line).map_err(bad)?;
                // A customer seeded again is central's master line anew, erasure included.
                tx.exec(
                    "INSERT INTO ledger_customers(customer_id, line, balance) VALUES ($1, $2, $3)
                     ON CONFLICT(customer_id) DO UPDATE SET line = excluded.line,
                         balance = excluded.balance, erased_ms = NULL",
                    args![&customer_id, &master, balance],
                )?;
            }
        }
        rows += 1;
    }
    tx.commit()?;
    Ok(rows)
}

/// The ledger's figures, as `relaisctl ledger show` prints them.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Figures {
    /// (store, sku) → on-hand.
    pub stock: Vec<(String, String, i64)>,
    /// (store, sku) → units reserved by open or picked order lines.
    pub reserved: Vec<(String, String, i64)>,
    /// customer → balance (erased customers left out).
    pub balances: Vec<(String, i64)>,
    /// agent → (fact_seq applied, watermark seq).
    pub cursors: Vec<(String, u64, u64)>,
    /// Single-use coupons taken again after their first ingested redemption.
    #[serde(default)]
    pub coupon_duplicates: Vec<store::CouponDuplicate>,
}

pub fn figures(db: &mut Db) -> Result<Figures, LedgerError> {
    let mut tx = db.transaction()?;
    let stock = tx.collect(
        "SELECT store, sku, on_hand FROM ledger_stock ORDER BY 1, 2",
        &[],
        |r| Ok((r.text(0)?, r.text(1)?, r.int(2)?)),
    )?;
    let reserved = tx.collect(
        "SELECT store, sku, CAST(SUM(qty) AS BIGINT) FROM ledger_order_lines
             WHERE status IN ('open', 'picked') GROUP BY store, sku ORDER BY 1, 2",
        &[],
        |r| Ok((r.text(0)?, r.text(1)?, r.int(2)?)),
    )?;
    let balances = tx.collect(
        "SELECT customer_id, balance FROM ledger_customers WHERE erased_ms IS NULL ORDER BY 1",
        &[],
        |r| Ok((r.text(0)?, r.int(1)?)),
    )?;
    let cursors = tx.collect(
        "SELECT agent, fact_seq, seq FROM ledger_cursor ORDER BY 1, 2",
        &[],
        |r| Ok((r.text(0)?, r.count(1)?, r.count(2)?)),
    )?;
    let coupon_duplicates = store::coupon_duplicates(&mut tx)?;
    tx.commit()?;
    Ok(Figures {
        stock,
        reserved,
        balances,
        cursors,
        coupon_duplicates,
    })
}

#[cfg(test)]
mod rules_tests;
#[cfg(test)]
mod store_tests;
