//! The outbox checkpointer: a thread with its own connection that folds the WAL into
//! `outbox.db` while the writer keeps committing (ADR 0013).
//!
//! A checkpoint copies every page the WAL holds into the database file and fsyncs it: with
//! movements that touch index pages all over the file that is megabytes of writes and a long
//! fsync. Run on the writer thread, no group could commit meanwhile, and every event that
//! queued behind it paid the whole checkpoint in its time-to-durable. In WAL mode a `PASSIVE`
//! checkpoint needs no lock the writer needs (it takes the checkpoint lock, the writer the
//! write lock), so another connection can copy the frames while the writer appends new ones.
//!
//! What the checkpointer cannot do alone under steady load is let the WAL start over: SQLite
//! rewinds it only when a write transaction begins while *every* frame is already copied, and
//! the writer has always committed a few more frames by the time a round ends. So at the hard
//! limit the writer finishes the job itself between two groups (see
//! `WriterState::checkpoint_if_due`): by then the checkpointer has copied all but its last
//! round, so that costs the writer a small copy and one fsync of the database instead of the
//! whole checkpoint.
//!
//! Durability is untouched: a checkpoint only copies frames that were committed with FULL
//! sync, and SQLite fsyncs the database before it records them as copied.

use crate::storage::{self, Durability};
use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use super::OutboxError;

/// What the writer needs to know about the checkpointer without blocking on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// A round is requested or running: the writer must not start its own checkpoint (it
    /// would find the checkpoint lock taken) and need not request another.
    pub busy: bool,
    /// WAL frames copied into the database by the last round. Stale once the WAL rewound
    /// (the writer then sees fewer frames than this).
    pub backfilled: u32,
}

#[derive(Default)]
struct State {
    requested: bool,
    running: bool,
    stop: bool,
    backfilled: u32,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a round is requested, when one ends and on stop.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few plain fields that every writer leaves consistent; a panic in the
        // other thread cannot leave it half-updated in a way that matters.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Owns the `outbox-checkpointer` thread; dropping it stops and joins the thread.
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Open a second connection to `path` (after the writer created and migrated it) and start
    /// the thread. It idles until [`request`](Self::request).
    pub(crate) fn start(path: &Path) -> Result<Checkpointer, OutboxError> {
        let conn = storage::open_writer(path, Durability::StoreFacts)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("outbox-checkpointer".into())
            .spawn(move || run(&conn, &for_thread))
            .map_err(|e| {
                OutboxError::Commit(format!("cannot start the checkpointer thread: {e}"))
            })?;
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
        })
    }

    pub(crate) fn progress(&self) -> Progress {
        let state = self.shared.lock();
        Progress {
            busy: state.requested || state.running,
            backfilled: state.backfilled,
        }
    }

    /// Ask for one `PASSIVE` round; returns at once. A request made while one is pending is
    /// the same request.
    pub(crate) fn request(&self) {
        let mut state = self.shared.lock();
        state.requested = true;
        self.shared.changed.notify_all();
    }

    /// Block until no round is requested or running. Only used when the WAL reached its hard
    /// bound: the writer then waits rather than let the WAL grow further.
    pub(crate) fn wait_idle(&self) {
        let mut state = self.shared.lock();
        while (state.requested || state.running) && !state.stop {
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The writer just checkpointed everything itself: the WAL starts over at its next commit,
    /// so the copied count of the old generation no longer means anything.
    pub(crate) fn forget_backfill(&self) {
        self.shared.lock().backfilled = 0;
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, shared: &Shared) {
    loop {
        {
            let mut state = shared.lock();
            while !state.requested && !state.stop {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.stop {
                return;
            }
            state.requested = false;
            state.running = true;
        }
        let result = checkpoint_passive(conn);
        let mut state = shared.lock();
        state.running = false;
        match result {
            // Frames 1..=copied are in the database. If that is all of them the WAL may rewind
            // at the writer's next commit; the writer notices (fewer frames than copied).
            Ok(Round { copied, .. }) => {
                state.backfilled = u32::try_from(copied).unwrap_or(0);
            }
            Err(e) => {
                tracing::warn!(error = %e, "outbox checkpoint failed; retried on the next request")
            }
        }
        shared.changed.notify_all();
    }
}

/// The three numbers `PRAGMA wal_checkpoint` answers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Round {
    /// Another checkpoint held the lock (or, for RESTART, the writer was busy).
    pub busy: bool,
    /// Frames in the WAL when the checkpoint started.
    pub log: i64,
    /// Frames copied into the database so far, this round or before.
    pub copied: i64,
}

/// One `PASSIVE` checkpoint on `conn`: copies what no reader still needs, never waits.
pub(crate) fn checkpoint_passive(conn: &Connection) -> Result<Round, rusqlite::Error> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok(Round {
            busy: r.get::<_, i64>(0)? != 0,
            log: r.get(1)?,
            copied: r.get(2)?,
        })
    })
}
