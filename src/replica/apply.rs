//! The replica applier: the one thread that writes `replica.db` while the agent runs.
//!
//! Deltas and snapshot imports both arrive here through a bounded channel and run on the
//! thread's connection, so the version check of a delta can never race an import of the same
//! stream, and no SQLite call runs on a tokio worker. While an import fills its shadow tables,
//! the deltas, heartbeats and state reads of *other* streams are taken between its chunks
//! (ADR 0024): a catalogue import no longer holds up the stock and reservation deltas behind
//! it; those of the importing stream wait for its swap.

use super::delta::{self, Delta};
use super::freshness::{self, Confirmation};
use super::import::{self, ImportError, ImportReport, Interleave, Progress};
use super::{Stream, StreamState};
use crate::storage::StorageError;
use rusqlite::Connection;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};

/// Commands queued for the applier. Small on purpose: a caller that floods it waits, and a
/// delta's memory is held by one queue slot at most.
const QUEUE: usize = 16;

/// Statements of every stream stay prepared (the default cache of 16 would evict them when
/// deltas of several streams interleave).
const STATEMENT_CACHE: usize = 64;

/// What happened to a delta that was valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeltaOutcome {
    /// The delta was the next version: its ops and the version committed together.
    Applied {
        stream: Stream,
        version: u64,
        ops: usize,
    },
    /// The replica already has this version (a redelivery): nothing changed.
    AlreadyApplied {
        stream: Stream,
        version: u64,
        live: u64,
    },
    /// A version is missing in between: nothing changed, a snapshot is needed.
    Gap {
        stream: Stream,
        expected: u64,
        got: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "{stream} delta version {version} refused: {reason}. Nothing was applied; the {stream} stay on \
         their previous version"
    )]
    InvalidDelta {
        stream: Stream,
        version: u64,
        reason: String,
    },
    #[error(
        "{stream} delta version {version} refused, `ops[{index}]`: {reason}. Nothing of the delta was \
         applied; the {stream} stay on their previous version until central publishes a corrected \
         delta or a snapshot"
    )]
    InvalidOp {
        stream: Stream,
        version: u64,
        /// Position of the op in `ops`, from 0.
        index: usize,
        reason: String,
    },
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(
        "the replica is locked by another writer (probably a `relais replica import` started by hand); \
         nothing was applied. Let it finish; the delta is applied again on redelivery"
    )]
    Busy,
    #[error(
        "replica database: {0}. Nothing was applied. If this repeats, stop the agent and run \
         `relais doctor`; a damaged replica is rebuilt from snapshots"
    )]
    Sqlite(rusqlite::Error),
    #[error(
        "the replica applier has stopped (the agent is shutting down); retry once it runs again"
    )]
    Closed,
}

impl From<rusqlite::Error> for ApplyError {
    fn from(e: rusqlite::Error) -> ApplyError {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                ApplyError::Busy
            }
            _ => ApplyError::Sqlite(e),
        }
    }
}

enum Command {
    Delta {
        delta: Delta,
        reply: oneshot::Sender<Result<DeltaOutcome, ApplyError>>,
    },
    Import {
        stream: Stream,
        file: PathBuf,
        version: u64,
        reply: oneshot::Sender<Result<ImportReport, ApplyError>>,
    },
    States {
        reply: oneshot::Sender<Result<Vec<StreamState>, ApplyError>>,
    },
    Confirm {
        stream: Stream,
        version: u64,
        central_ms: i64,
        reply: oneshot::Sender<Result<Confirmation, ApplyError>>,
    },
}

impl Command {
    /// Whether this may run between the chunks of an import of `importing`: anything that is
    /// not an import and does not touch the importing stream (whose version the swap sets).
    fn may_pass(&self, importing: Stream) -> bool {
        match self {
            Command::Delta { delta, .. } => delta.stream != importing,
            Command::Confirm { stream, .. } => *stream != importing,
            Command::States { .. } => true,
            Command::Import { .. } => false,
        }
    }
}

/// Whether deltas may pass a running import (ADR 0024). `Off` is the path before it, kept
/// so that `benches/delta_apply.rs` measures both in one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// Deltas, heartbeats and state reads of other streams run between an import's chunks.
    DeltasPassImports,
    /// Every command waits for the one before it, imports included.
    InOrder,
}

/// Cloneable handle of the applier. Dropping every handle stops the thread.
#[derive(Clone)]
pub struct ApplierHandle {
    sender: mpsc::Sender<Command>,
}

/// Owns the applier thread; [`join`](ReplicaApplier::join) waits for it to finish.
pub struct ReplicaApplier {
    thread: Option<JoinHandle<()>>,
}

impl ReplicaApplier {
    /// Open (creating and migrating if needed) the replica's writer connection and start the
    /// `replica-applier` thread that owns it. Blocking: call it at startup, not on a tokio
    /// worker.
    pub fn start(replica_path: &Path) -> Result<(ApplierHandle, ReplicaApplier), StorageError> {
        Self::start_with(replica_path, Priority::DeltasPassImports)
    }

    /// [`start`](Self::start) with the given priority of deltas over imports.
    pub fn start_with(
        replica_path: &Path,
        priority: Priority,
    ) -> Result<(ApplierHandle, ReplicaApplier), StorageError> {
        let conn = super::open_writer(replica_path)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let (sender, receiver) = mpsc::channel(QUEUE);
        let path = replica_path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("replica-applier".into())
            .spawn(move || {
                // Imports and deltas are bulk work; tills' requests come first on the CPU.
                crate::storage::yield_to_tills();
                run(conn, &path, receiver, priority)
            })
            // StorageError has no variant for a thread; the only cause is the process being out
            // of threads or memory, which DataDir's "check the host" advice covers best.
            .map_err(|source| StorageError::DataDir {
                path: PathBuf::from("<replica-applier thread>"),
                source,
            })?;
        Ok((
            ApplierHandle { sender },
            ReplicaApplier {
                thread: Some(thread),
            },
        ))
    }

    /// Wait until every handle is dropped and the thread has checkpointed and closed the file.
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl ApplierHandle {
    /// Apply a delta; see [`delta::apply`] for the version rule.
    pub async fn apply_delta(&self, delta: Delta) -> Result<DeltaOutcome, ApplyError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Delta { delta, reply }).await?;
        answer.await.map_err(|_| ApplyError::Closed)?
    }

    /// Same as [`apply_delta`](Self::apply_delta) for threads outside the async runtime
    /// (benchmarks, tests, CLI). Panics if called on a runtime thread, like every blocking
    /// tokio channel operation.
    pub fn apply_delta_blocking(&self, delta: Delta) -> Result<DeltaOutcome, ApplyError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .blocking_send(Command::Delta { delta, reply })
            .map_err(|_| ApplyError::Closed)?;
        answer.blocking_recv().map_err(|_| ApplyError::Closed)?
    }

    /// Import a snapshot file of `stream` as `version` (quietly: the agent logs the report).
    pub async fn import_snapshot(
        &self,
        stream: Stream,
        file: PathBuf,
        version: u64,
    ) -> Result<ImportReport, ApplyError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Import {
            stream,
            file,
            version,
            reply,
        })
        .await?;
        answer.await.map_err(|_| ApplyError::Closed)?
    }

    /// Same as [`import_snapshot`](Self::import_snapshot) for threads outside the async runtime
    /// (benchmarks, tests).
    pub fn import_snapshot_blocking(
        &self,
        stream: Stream,
        file: PathBuf,
        version: u64,
    ) -> Result<ImportReport, ApplyError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .blocking_send(Command::Import {
                stream,
                file,
                version,
                reply,
            })
            .map_err(|_| ApplyError::Closed)?;
        answer.blocking_recv().map_err(|_| ApplyError::Closed)?
    }

    /// Version and freshness of every stream, as the writer sees them.
    pub async fn stream_states(&self) -> Result<Vec<StreamState>, ApplyError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::States { reply }).await?;
        answer.await.map_err(|_| ApplyError::Closed)?
    }

    /// Record central's heartbeat: `stream` is current at `version` as of `central_ms`.
    pub async fn confirm(
        &self,
        stream: Stream,
        version: u64,
        central_ms: i64,
    ) -> Result<Confirmation, ApplyError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Confirm {
            stream,
            version,
            central_ms,
            reply,
        })
        .await?;
        answer.await.map_err(|_| ApplyError::Closed)?
    }

    async fn send(&self, command: Command) -> Result<(), ApplyError> {
        self.sender
            .send(command)
            .await
            .map_err(|_| ApplyError::Closed)
    }
}

fn run(
    mut conn: Connection,
    path: &Path,
    mut receiver: mpsc::Receiver<Command>,
    priority: Priority,
) {
    // Commands taken off the channel while an import ran but not allowed to pass it, in
    // arrival order. Bounded by the callers: each awaits its reply before sending again.
    let mut deferred: VecDeque<Command> = VecDeque::new();
    loop {
        let command = match deferred.pop_front() {
            Some(command) => command,
            None => match receiver.blocking_recv() {
                Some(command) => command,
                None => break,
            },
        };
        match command {
            Command::Import {
                stream,
                file,
                version,
                reply,
            } => {
                let result = match priority {
                    Priority::InOrder => import::import_with(
                        &mut conn,
                        stream,
                        &file,
                        Some(version),
                        Progress::Quiet,
                    ),
                    Priority::DeltasPassImports => {
                        let mut passing = Passing {
                            importing: stream,
                            receiver: &mut receiver,
                            deferred: &mut deferred,
                            ready: VecDeque::new(),
                            path,
                        };
                        import::import_interleaved(
                            &mut conn,
                            stream,
                            &file,
                            Some(version),
                            Progress::Quiet,
                            &mut passing,
                        )
                    }
                };
                // A failed import returns before giving back its 256 MiB page cache; this
                // connection lives as long as the agent, so take it back here either way.
                if let Err(e) = conn.execute_batch("PRAGMA cache_size=-32768;") {
                    tracing::warn!(error = %e, "cannot shrink the replica page cache after an import");
                }
                if stream == Stream::Customers && result.is_ok() {
                    // A customers snapshot drops every customer it does not list.
                    super::forget_damaged_copies(
                        path,
                        "a customers snapshot replaced the customers",
                    );
                }
                let _ = reply.send(result.map_err(ApplyError::from));
            }
            other => serve(&conn, path, other),
        }
    }
    // Every handle is gone: fold the WAL into the file so the next start (and a reader's
    // first query) does not replay it.
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::warn!(path = %path.display(), error = %e, "replica checkpoint at shutdown failed; the WAL will be replayed at next start");
    }
}

/// Run a command that is not an import (each is its own short transaction, or none).
fn serve(conn: &Connection, path: &Path, command: Command) {
    match command {
        Command::Delta { delta, reply } => {
            let result = delta::apply(conn, &delta);
            let erased = delta.stream == Stream::Customers
                && delta
                    .ops
                    .iter()
                    .any(|op| matches!(op, delta::DeltaOp::Delete { .. }));
            if erased && matches!(result, Ok(DeltaOutcome::Applied { .. })) {
                super::forget_damaged_copies(path, "a customer was erased");
            }
            let _ = reply.send(result);
        }
        Command::States { reply } => {
            let _ = reply.send(super::stream_states(conn).map_err(ApplyError::from));
        }
        Command::Confirm {
            stream,
            version,
            central_ms,
            reply,
        } => {
            let result = freshness::confirm(
                conn,
                stream,
                version,
                central_ms,
                crate::storage::now_unix_ms(),
            );
            let _ = reply.send(result.map_err(ApplyError::from));
        }
        Command::Import { reply, .. } => {
            // Imports are run by `run` only; reaching here would be a bug of this file.
            let _ = reply.send(Err(ApplyError::Closed));
        }
    }
}

/// What an import lets through between its chunks: the commands that may pass it, taken from
/// those deferred earlier (first, to keep each stream's order) and from the channel; the others
/// wait in `deferred` for after the import.
struct Passing<'a> {
    importing: Stream,
    receiver: &'a mut mpsc::Receiver<Command>,
    deferred: &'a mut VecDeque<Command>,
    ready: VecDeque<Command>,
    path: &'a Path,
}

impl Interleave for Passing<'_> {
    fn waiting(&mut self) -> bool {
        if !self.deferred.is_empty() {
            let mut kept = VecDeque::with_capacity(self.deferred.len());
            for command in self.deferred.drain(..) {
                if command.may_pass(self.importing) {
                    self.ready.push_back(command);
                } else {
                    kept.push_back(command);
                }
            }
            *self.deferred = kept;
        }
        while let Ok(command) = self.receiver.try_recv() {
            if command.may_pass(self.importing) {
                self.ready.push_back(command);
            } else {
                self.deferred.push_back(command);
            }
        }
        !self.ready.is_empty()
    }

    fn run(&mut self, conn: &Connection) {
        while let Some(command) = self.ready.pop_front() {
            serve(conn, self.path, command);
        }
    }
}
