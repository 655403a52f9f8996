//! Reading the outbox for delivery: a thread of its own owns a read-only connection to
//! `outbox.db` and hands the uplink ready-to-publish JSON. Deleting delivered rows is the
//! writer's job ([`super::OutboxHandle::delivered`]); WAL lets both run at once.

use super::RetentionClass;
use crate::storage::{self, StorageError};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::value::RawValue;
use std::path::Path;
use std::sync::mpsc::{SyncSender, sync_channel};
use tokio::sync::oneshot;
use uuid::Uuid;

/// One event ready to publish: the envelope as JSON text, exactly as central receives it.
#[derive(Clone, Debug)]
pub struct OutgoingEvent {
    pub seq: u64,
    pub class: RetentionClass,
    pub json: String,
}

/// Which rows to read: one class, `after < seq < before`, not dead-lettered.
#[derive(Clone, Copy, Debug)]
pub struct FetchQuery {
    pub class: RetentionClass,
    pub after: u64,
    /// Exclusive upper bound; `u64::MAX` for "everything committed so far".
    pub before: u64,
    pub max_events: usize,
    pub max_bytes: usize,
}

/// A fetch's rows, and how far the table was covered: when fewer rows than the limits came
/// back, every row of the class below `covered_to` was seen, so the next fetch starts there
/// instead of rescanning rows of the other class.
#[derive(Debug, Default)]
pub struct Fetched {
    pub events: Vec<OutgoingEvent>,
    pub covered_to: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(
        "reading the outbox for delivery failed: {0}. The events stay queued; delivery is retried"
    )]
    Sqlite(#[from] rusqlite::Error),
    #[error("the outbox reader has stopped (agent shutting down)")]
    Closed,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

type Job = Box<dyn FnOnce(&mut Connection) + Send + 'static>;

/// Handle to the `outbox-reader` thread; cloneable, the thread ends with the last clone.
#[derive(Clone)]
pub struct DeliveryReader {
    sender: SyncSender<Job>,
    agent: std::sync::Arc<str>,
}

#[derive(Serialize)]
struct WireEnvelope<'a> {
    id: Uuid,
    agent: &'a str,
    seq: u64,
    boot: u64,
    wall_ms: i64,
    mono_ns: u64,
    #[serde(rename = "type")]
    event_type: &'a str,
    schema: u32,
    class: RetentionClass,
    #[serde(skip_serializing_if = "Option::is_none")]
    fact_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fact_epoch: Option<u32>,
    payload: &'a RawValue,
}

impl DeliveryReader {
    pub fn start(outbox: &Path, agent: &str) -> Result<DeliveryReader, DeliveryError> {
        let mut conn = storage::open_reader(outbox)?;
        let (sender, receiver) = sync_channel::<Job>(4);
        std::thread::Builder::new()
            .name("outbox-reader".into())
            .spawn(move || {
                // Reading batches for the uplink is a drain nobody at a till waits on.
                crate::storage::yield_to_tills();
                while let Ok(job) = receiver.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| {
                DeliveryError::Storage(StorageError::DataDir {
                    path: outbox.to_path_buf(),
                    source: e,
                })
            })?;
        Ok(DeliveryReader {
            sender,
            agent: agent.into(),
        })
    }

    pub fn agent(&self) -> &str {
        &self.agent
    }

    pub async fn fetch(&self, query: FetchQuery) -> Result<Fetched, DeliveryError> {
        let (tx, rx) = oneshot::channel();
        let agent = std::sync::Arc::clone(&self.agent);
        let job: Job = Box::new(move |conn| {
            let _ = tx.send(fetch(conn, &agent, query));
        });
        // The channel is small and the uplink sends one fetch at a time; a full channel only
        // means the thread is busy, so wait on it from a blocking-safe place.
        let sender = self.sender.clone();
        tokio::task::spawn_blocking(move || sender.send(job))
            .await
            .map_err(|_| DeliveryError::Closed)?
            .map_err(|_| DeliveryError::Closed)?;
        rx.await.map_err(|_| DeliveryError::Closed)?
    }
}

impl DeliveryReader {
    /// The rows of `ranges` still queued (a resend of a batch central did not acknowledge).
    pub async fn fetch_ranges(
        &self,
        class: RetentionClass,
        ranges: Vec<[u64; 2]>,
    ) -> Result<Vec<OutgoingEvent>, DeliveryError> {
        let mut events = Vec::new();
        for [first, last] in ranges {
            let fetched = self
                .fetch(FetchQuery {
                    class,
                    after: first.saturating_sub(1),
                    before: last.saturating_add(1),
                    max_events: usize::MAX >> 1,
                    max_bytes: usize::MAX >> 1,
                })
                .await?;
            events.extend(fetched.events);
        }
        Ok(events)
    }
}

/// Read one batch; runs on the reader thread.
pub fn fetch(conn: &Connection, agent: &str, q: FetchQuery) -> Result<Fetched, DeliveryError> {
    let tx = conn.unchecked_transaction()?;
    let newest: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?;
    let before = q.before.min(newest.max(0) as u64 + 1);
    let epoch: Option<i64> = tx
        .query_row("SELECT value FROM meta WHERE key = 'fact_epoch'", [], |r| {
            r.get(0)
        })
        .optional()?;
    let epoch = epoch.and_then(|e| u32::try_from(e).ok());
    // Literal class values so telemetry can use its partial index.
    let sql = match q.class {
        RetentionClass::StoreFact => {
            "SELECT seq, id, type, schema, boot, wall_ms, mono_ns, payload, fact_seq FROM events
             WHERE class = 0 AND state = 0 AND seq > ?1 AND seq < ?2 ORDER BY seq LIMIT ?3"
        }
        RetentionClass::Telemetry => {
            "SELECT seq, id, type, schema, boot, wall_ms, mono_ns, payload, NULL FROM events
             WHERE class = 1 AND state = 0 AND seq > ?1 AND seq < ?2 ORDER BY seq LIMIT ?3"
        }
    };
    let mut stmt = tx.prepare_cached(sql)?;
    let mut rows = stmt.query(params![
        q.after.min(i64::MAX as u64) as i64,
        before.min(i64::MAX as u64) as i64,
        q.max_events as i64
    ])?;
    let mut out = Fetched {
        events: Vec::new(),
        covered_to: before.saturating_sub(1).max(q.after),
    };
    let mut bytes = 0usize;
    let mut full = false;
    while let Some(row) = rows.next()? {
        let seq = row.get::<_, i64>(0)?.max(0) as u64;
        let id: Vec<u8> = row.get(1)?;
        let event_type: String = row.get(2)?;
        let payload: String = row.get(7)?;
        // Payloads were serialised by the agent itself; a row that is somehow not JSON is
        // still delivered, as a JSON string, rather than blocking the queue forever.
        let raw = match RawValue::from_string(payload) {
            Ok(raw) => raw,
            Err(_) => {
                let text: String = row.get(7)?;
                RawValue::from_string(serde_json::Value::String(text).to_string())?
            }
        };
        let envelope = WireEnvelope {
            id: Uuid::from_slice(&id).unwrap_or(Uuid::nil()),
            agent,
            seq,
            boot: row.get::<_, i64>(4)?.max(0) as u64,
            wall_ms: row.get(5)?,
            mono_ns: row.get::<_, i64>(6)?.max(0) as u64,
            event_type: &event_type,
            schema: row.get(3)?,
            class: q.class,
            fact_seq: row.get::<_, Option<i64>>(8)?.map(|n| n.max(0) as u64),
            fact_epoch: epoch.filter(|_| q.class == RetentionClass::StoreFact),
            payload: &raw,
        };
        let json = serde_json::to_string(&envelope)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        if !out.events.is_empty() && bytes + json.len() > q.max_bytes {
            full = true;
            break;
        }
        bytes += json.len() + 1;
        out.events.push(OutgoingEvent {
            seq,
            class: q.class,
            json,
        });
    }
    if full || out.events.len() >= q.max_events {
        out.covered_to = out.events.last().map_or(q.after, |e| e.seq);
    }
    Ok(out)
}

impl From<serde_json::Error> for DeliveryError {
    fn from(e: serde_json::Error) -> DeliveryError {
        DeliveryError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    }
}
