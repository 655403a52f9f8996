//! A small pool of read-only SQLite connections, each owned by its own thread.
//!
//! Async handlers submit a closure and await a oneshot reply, so SQLite never runs on a
//! tokio worker. Each connection has the replica as `main` and the outbox attached as
//! `facts`, because stock and loyalty answers combine central baselines with local facts.

use rusqlite::Connection;
use std::path::{Path, PathBuf};
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
    sender: flume::Sender<Job>,
}

impl ReaderPool {
    /// Open `readers` connections on `replica` with `outbox` attached as `facts`.
    pub fn start(
        replica: &Path,
        outbox: &Path,
        readers: usize,
    ) -> Result<ReaderPool, ReaderPoolError> {
        // Bounded: a flood of lookups gets `Busy` instead of unbounded memory. A multi-consumer
        // channel, so that every idle reader waits on the queue itself: with one receiver
        // behind a mutex, each job woke the waiting reader and then, through the mutex
        // hand-over, the other one too, only for it to park again (two futex wake-ups and
        // context switches per lookup on a 2-core box).
        let (sender, receiver) = flume::bounded::<Job>(readers.max(1) * 256);
        for index in 0..readers.max(1) {
            let conn = open_lookup_connection(replica, outbox)?;
            let receiver = receiver.clone();
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
            Err(flume::TrySendError::Full(_)) => return Err(ReaderPoolError::Busy),
            Err(flume::TrySendError::Disconnected(_)) => return Err(ReaderPoolError::Closed),
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
    // Memory-mapped reads: a page outside the connection's 8 MiB cache is read straight from
    // the OS page cache instead of `pread` + copy + a cache slot, which is most of a lookup's
    // tail on a 1M-product replica. Safe beside the single writer: in WAL mode writers never
    // write the database file through the map, readers get WAL frames by `pread`, and a
    // checkpoint only rewrites pages no open read snapshot still needs. Set before ATTACH so
    // `facts` is mapped too. The limit only reserves address space (pages are shared with the
    // page cache), kept small on 32-bit targets where address space is scarce.
    conn.pragma_update(None, "mmap_size", READER_MMAP_BYTES)
        .map_err(|source| super::StorageError::Open {
            path: replica.to_path_buf(),
            source,
        })?;
    conn.execute("ATTACH DATABASE ?1 AS facts", [outbox.to_string_lossy()])
        .map_err(|source| super::StorageError::Open {
            path: outbox.to_path_buf(),
            source,
        })?;
    Ok(conn)
}

/// Upper bound of each reader's map of each file (`PRAGMA mmap_size`).
const READER_MMAP_BYTES: i64 = if cfg!(target_pointer_width = "64") {
    1 << 30
} else {
    128 << 20
};

fn reader_loop(mut conn: Connection, receiver: flume::Receiver<Job>) {
    // Ends when every sender (the pool's clones) is gone.
    while let Ok(job) = receiver.recv() {
        job(&mut conn);
    }
}
