//! A small pool of read-only SQLite connections, each owned by its own thread.
//!
//! Async handlers submit a closure and await a oneshot reply, so SQLite never runs on a
//! tokio worker. Each connection has the replica as `main` and the outbox attached as
//! `facts`, because stock and loyalty answers combine central baselines with local facts.

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce(&mut Connection) + Send + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum ReaderPoolError {
    #[error("the agent is shutting down; retry in a moment")]
    Closed,
    #[error("the agent is overloaded: too many lookups queued; retry in a moment")]
    Busy,
    #[error(transparent)]
    Storage(#[from] super::StorageError),
}

#[derive(Clone)]
pub struct ReaderPool {
    sender: SyncSender<Job>,
}

impl ReaderPool {
    /// Open `readers` connections on `replica` with `outbox` attached as `facts`.
    pub fn start(
        replica: &Path,
        outbox: &Path,
        readers: usize,
    ) -> Result<ReaderPool, ReaderPoolError> {
        // Bounded: a flood of lookups gets `Busy` instead of unbounded memory.
        let (sender, receiver) = sync_channel::<Job>(readers.max(1) * 256);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..readers.max(1) {
            let conn = open_lookup_connection(replica, outbox)?;
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("sqlite-reader-{index}"))
                .spawn(move || reader_loop(conn, receiver))
                .map_err(|e| {
                    ReaderPoolError::Storage(super::StorageError::DataDir {
                        path: PathBuf::from("<thread>"),
                        source: e,
                    })
                })?;
        }
        Ok(ReaderPool { sender })
    }

    /// Run `f` on a reader connection and await its result.
    pub async fn run<T, F>(&self, f: F) -> Result<T, ReaderPoolError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        match self.sender.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(ReaderPoolError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(ReaderPoolError::Closed),
        }
        rx.await.map_err(|_| ReaderPoolError::Closed)
    }
}

/// A connection for lookups: replica as `main`, outbox as `facts`.
pub fn open_lookup_connection(
    replica: &Path,
    outbox: &Path,
) -> Result<Connection, super::StorageError> {
    let conn = super::open_reader(replica)?;
    conn.execute("ATTACH DATABASE ?1 AS facts", [outbox.to_string_lossy()])
        .map_err(|source| super::StorageError::Open {
            path: outbox.to_path_buf(),
            source,
        })?;
    Ok(conn)
}

fn reader_loop(mut conn: Connection, receiver: Arc<Mutex<Receiver<Job>>>) {
    loop {
        let job = {
            let Ok(guard) = receiver.lock() else { return };
            match guard.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        job(&mut conn);
    }
}
