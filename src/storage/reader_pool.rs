//! A small pool of read-only SQLite connections, each owned by its own thread.
//!
//! Async handlers submit a closure and await a oneshot reply, so SQLite never runs on a
//! tokio worker. Each connection has the replica as `main` and the outbox attached as
//! `facts`, because stock and loyalty answers combine central baselines with local facts.
//! Each keeps its read snapshot between jobs while nothing was committed
//! ([`LookupConnection`]) and gives it back after [`IDLE_RELEASE`] without work.

use super::snapshot::{IDLE_RELEASE, LookupConnection};
use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce(&Connection) + Send + 'static>;

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
            let conn = LookupConnection::open(replica, outbox)?;
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
        F: FnOnce(&Connection) -> T + Send + 'static,
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
    open_lookup_connection_with(replica, outbox, Arc::new(AtomicBool::new(false)))
}

/// [`open_lookup_connection`], with `all_filed` behind the SQL function `relais_all_filed()`:
/// the caller sets it while it knows that its read snapshot has no unfiled stock movement, so
/// a lookup skips the range scan of the unfiled tail (`outbox::movements_after`). Left false
/// the scan always runs, which is always right.
pub(crate) fn open_lookup_connection_with(
    replica: &Path,
    outbox: &Path,
    all_filed: Arc<AtomicBool>,
) -> Result<Connection, super::StorageError> {
    let conn = super::open_reader(replica)?;
    register_all_filed(&conn, all_filed).map_err(|source| super::StorageError::Open {
        path: replica.to_path_buf(),
        source,
    })?;
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

/// Define `relais_all_filed()` on `conn`, answering `all_filed` (see
/// [`open_lookup_connection_with`]). Every connection that runs `outbox::movements_after` needs it.
pub(crate) fn register_all_filed(
    conn: &Connection,
    all_filed: Arc<AtomicBool>,
) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "relais_all_filed",
        0,
        FunctionFlags::SQLITE_UTF8,
        move |_| Ok(all_filed.load(Ordering::Relaxed)),
    )
}

/// Upper bound of each reader's map of each file (`PRAGMA mmap_size`).
const READER_MMAP_BYTES: i64 = if cfg!(target_pointer_width = "64") {
    1 << 30
} else {
    128 << 20
};

fn reader_loop(mut conn: LookupConnection, receiver: flume::Receiver<Job>) {
    // Ends when every sender (the pool's clones) is gone.
    loop {
        let next = if conn.keeps_snapshot() {
            receiver.recv_timeout(IDLE_RELEASE)
        } else {
            receiver
                .recv()
                .map_err(|_| flume::RecvTimeoutError::Disconnected)
        };
        match next {
            Ok(job) => job(conn.current()),
            // Idle: give the snapshot back so checkpoints can restart the WAL behind it.
            Err(flume::RecvTimeoutError::Timeout) => conn.release(),
            Err(flume::RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_idle_reader_gives_its_snapshot_back_so_the_wal_can_be_emptied() {
        let files = super::super::snapshot::tests::files();
        let writer = crate::replica::open_writer(&files.replica).unwrap();
        writer.execute_batch("PRAGMA busy_timeout=0").unwrap();
        let pool = ReaderPool::start(&files.replica, &files.outbox, 1).unwrap();

        writer
            .execute(
                "INSERT INTO products(gtin, sku, name) VALUES (4006381333931, 'A', 'a')",
                [],
            )
            .unwrap();
        let seen: i64 = pool
            .run(|conn| conn.query_row("SELECT count(*) FROM products", [], |r| r.get(0)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen, 1);
        writer
            .execute(
                "INSERT INTO products(gtin, sku, name) VALUES (96385074, 'B', 'b')",
                [],
            )
            .unwrap();

        // No more jobs: within a few IDLE_RELEASE periods (longer on a loaded machine) the
        // reader ends its read transaction; a reader that kept it would block this forever.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let truncated = loop {
            tokio::time::sleep(IDLE_RELEASE * 5).await;
            let (busy, log): (i64, i64) = writer
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap();
            if (busy, log) == (0, 0) || std::time::Instant::now() > deadline {
                break (busy, log);
            }
        };
        assert_eq!(
            truncated,
            (0, 0),
            "the WAL was emptied behind the idle reader"
        );
    }
}
