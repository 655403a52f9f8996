//! The SQLite sink (labs): one file, workers take turns on its write lock.

use super::{Committed, Message};
use crate::central::CentralError;
use crate::central::facts::{self, AgentFacts};
use crate::sync::wire::EventBatch;
use rusqlite::{Connection, Transaction, params};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SINK_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id      BLOB PRIMARY KEY,
    agent   TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    boot    INTEGER NOT NULL,
    type    TEXT NOT NULL,
    class   TEXT NOT NULL,
    wall_ms INTEGER NOT NULL,
    payload TEXT NOT NULL,
    fact_epoch INTEGER,
    fact_seq   INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_by_agent ON events(agent, seq);
";

pub struct SqliteSink {
    path: PathBuf,
    conn: Connection,
}

impl SqliteSink {
    pub fn open(path: &Path) -> Result<SqliteSink, CentralError> {
        let conn = open_sink(path)?;
        Ok(SqliteSink {
            path: path.to_path_buf(),
            conn,
        })
    }

    fn err(&self, source: rusqlite::Error) -> CentralError {
        CentralError::Sink {
            path: self.path.clone(),
            source,
        }
    }

    pub fn count(&mut self) -> Result<u64, CentralError> {
        sink_count(&self.conn).map_err(|e| self.err(e))
    }

    pub(crate) fn commit(&mut self, messages: &[Message]) -> Result<Committed, CentralError> {
        commit_group(&mut self.conn, messages).map_err(|e| self.err(e))
    }

    pub fn facts(&mut self) -> Result<Vec<AgentFacts>, CentralError> {
        facts::status(&self.conn).map_err(|e| self.err(e))
    }
}

pub fn open_sink(path: &Path) -> Result<Connection, CentralError> {
    let sink_err = |source| CentralError::Sink {
        path: path.to_path_buf(),
        source,
    };
    let mut conn = Connection::open(path).map_err(sink_err)?;
    // FULL: an `ack` tells the agent it may delete; the sink must survive a power cut first.
    conn.execute_batch(
        "PRAGMA busy_timeout=5000; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
    )
    .map_err(sink_err)?;
    // Workers of one group open the same sink at once: one of them makes or upgrades it.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sink_err)?;
    tx.execute_batch(SINK_SCHEMA).map_err(sink_err)?;
    facts::upgrade_events(&tx).map_err(sink_err)?;
    tx.commit().map_err(sink_err)?;
    Ok(conn)
}

pub fn sink_count(conn: &Connection) -> Result<u64, rusqlite::Error> {
    conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0))
        .map(|n| n.max(0) as u64)
}

/// Store one batch in the group's transaction, numbering its events from `order` on (the
/// ingest order; writers of a SQLite sink take turns, so the numbers follow the commits);
/// returns the new events.
fn store_in(
    tx: &Transaction<'_>,
    batch: &EventBatch,
    order: &mut i64,
) -> Result<u64, rusqlite::Error> {
    let mut new = 0;
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO events(id, agent, seq, boot, type, class, wall_ms, payload,
                                          fact_epoch, fact_seq, ingest_order)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        for e in &batch.events {
            *order = order.saturating_add(1);
            // The ingest refused any batch whose numbers do not fit (ingest::parse_batch).
            new += insert.execute(params![
                e.id.as_bytes().as_slice(),
                e.agent,
                i64::try_from(e.seq).unwrap_or(i64::MAX),
                i64::try_from(e.boot).unwrap_or(i64::MAX),
                e.event_type,
                e.class.name(),
                e.wall_ms,
                e.payload.to_string(),
                e.fact_epoch,
                e.fact_seq.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
                *order,
            ])? as u64;
        }
    }
    facts::advance(tx, &batch.events)?;
    Ok(new)
}

/// Every message of a group in one transaction: one `fsync` for all of them, so the sink's
/// throughput is its commit rate times the group size. A busy sink (another worker's write
/// lock) is waited out: nothing is acknowledged until it commits. Any other error ends the
/// ingest, so an operator sees a full disk or a damaged sink.
fn commit_group(conn: &mut Connection, messages: &[Message]) -> Result<Committed, rusqlite::Error> {
    let mut waited = Duration::ZERO;
    loop {
        match try_commit_group(conn, messages) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                if waited.as_millis().is_multiple_of(10_000) {
                    tracing::warn!(
                        waited_s = waited.as_secs(),
                        "the sink is busy (another writer); retrying"
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
                waited += Duration::from_millis(50);
            }
            other => return other,
        }
    }
}

fn try_commit_group(
    conn: &mut Connection,
    messages: &[Message],
) -> Result<Committed, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut new = 0;
    let mut order: i64 = tx.query_row(
        "SELECT COALESCE(MAX(ingest_order), 0) FROM events WHERE ingest_order IS NOT NULL",
        [],
        |r| r.get(0),
    )?;
    for message in messages {
        match message {
            Message::Batch { batch, .. } => new += store_in(&tx, batch, &mut order)?,
            Message::Facts(progress) => facts::record_report(&tx, progress)?,
            Message::Refused { .. } => {}
        }
    }
    tx.commit()?;
    Ok(Committed::of(messages, new))
}
