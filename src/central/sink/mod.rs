//! Where `relaisctl ingest` stores what agents send: a SQLite file (labs, one machine) or a
//! PostgreSQL database (a chain: several workers commit in parallel). Both hold the same tables
//! (`events`, `agent_facts`) with the same meaning, so central's ledger and `relaisctl facts`
//! read either; both commit a group of messages in one transaction before anything of it is
//! acknowledged.

pub mod postgres;
pub mod sqlite;

use super::CentralError;
use super::facts::AgentFacts;
use crate::sync::wire::{EventBatch, FactsProgress};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// What `--sink` names.
#[derive(Clone, Debug)]
pub enum SinkTarget {
    /// A SQLite file (created if missing).
    Sqlite(PathBuf),
    /// A `postgres://` or `postgresql://` URL (boxed: a parsed config is large).
    Postgres(Box<postgres::PgTarget>),
}

impl SinkTarget {
    /// A `postgres://…` URL is a database server; anything else is a SQLite file's path.
    pub fn parse(text: &str) -> Result<SinkTarget, CentralError> {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            postgres::PgTarget::parse(text).map(|t| SinkTarget::Postgres(Box::new(t)))
        } else if text.is_empty() {
            Err(CentralError::Usage(
                "--sink: give a SQLite file's path or a postgres://USER@HOST:PORT/DB URL".into(),
            ))
        } else {
            Ok(SinkTarget::Sqlite(PathBuf::from(text)))
        }
    }
}

/// Shown in logs and errors: a URL without its password.
impl fmt::Display for SinkTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkTarget::Sqlite(path) => write!(f, "{}", path.display()),
            SinkTarget::Postgres(target) => write!(f, "{target}"),
        }
    }
}

/// One message of a group, parsed.
pub(crate) enum Message {
    Batch { agent: String, batch: EventBatch },
    Facts(FactsProgress),
    Refused { topic: String, reason: String },
}

/// What a committed group tells: per agent, the seqs it may now acknowledge.
#[derive(Default)]
pub(crate) struct Committed {
    pub acks: BTreeMap<String, Vec<u64>>,
    pub received: u64,
    pub new: u64,
    pub fact_reports: u64,
}

impl Committed {
    /// The acks and counts of every message of a group once the group is durable.
    fn of(messages: &[Message], new: u64) -> Committed {
        let mut out = Committed {
            new,
            ..Committed::default()
        };
        for message in messages {
            match message {
                Message::Batch { agent, batch } => {
                    out.received += batch.events.len() as u64;
                    out.acks
                        .entry(agent.clone())
                        .or_default()
                        .extend(batch.events.iter().map(|e| e.seq));
                }
                Message::Facts(_) => out.fact_reports += 1,
                Message::Refused { .. } => {}
            }
        }
        out
    }
}

/// An open sink. One per ingest process: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Sink {
    Sqlite(sqlite::SqliteSink),
    Postgres(postgres::PgSink),
}

impl Sink {
    /// Open (and create or upgrade) the sink. With `patient` (the ingest), a database that
    /// cannot be reached, now or later, is waited for with backoff; without (`relaisctl
    /// facts`), that is an error at once.
    pub async fn open(target: &SinkTarget, patient: bool) -> Result<Sink, CentralError> {
        Ok(match target {
            SinkTarget::Sqlite(path) => Sink::Sqlite(sqlite::SqliteSink::open(path)?),
            SinkTarget::Postgres(target) => {
                Sink::Postgres(postgres::PgSink::open(target, patient).await?)
            }
        })
    }

    /// Distinct events held.
    pub async fn count(&mut self) -> Result<u64, CentralError> {
        match self {
            Sink::Sqlite(sink) => sink.count(),
            Sink::Postgres(sink) => sink.count().await,
        }
    }

    /// Every message of a group in one transaction. Returns only once it is durable; a busy
    /// SQLite file or a lost database connection is waited out (nothing is acknowledged
    /// meanwhile), anything else ends the ingest.
    pub(crate) async fn commit(&mut self, messages: &[Message]) -> Result<Committed, CentralError> {
        match self {
            Sink::Sqlite(sink) => tokio::task::block_in_place(|| sink.commit(messages)),
            Sink::Postgres(sink) => sink.commit(messages).await,
        }
    }

    /// Every agent's fact numberings (`relaisctl facts`), newest last per agent.
    pub async fn facts(&mut self) -> Result<Vec<AgentFacts>, CentralError> {
        match self {
            Sink::Sqlite(sink) => sink.facts(),
            Sink::Postgres(sink) => sink.facts().await,
        }
    }
}
