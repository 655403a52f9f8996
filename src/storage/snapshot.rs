//! A lookup connection that keeps its read snapshot from one lookup to the next while no one
//! committed anything, because starting and ending a read transaction is most of what a point
//! lookup costs in SQLite.
//!
//! Each statement run outside a transaction opens and closes a read transaction on every file
//! it touches: a shared `fcntl` lock on a WAL read-mark and its release, a look at the WAL
//! index and an `fstat`, twice for a lookup that reads the replica and the attached outbox.
//! Measured on the 1M-product replica (perf, 2026-11-24), that was 45 % of a barcode lookup.
//!
//! The snapshot is kept only while it is provably current. SQLite publishes every commit in the
//! WAL-index header at the start of each database's `-shm` file (two copies of the 48-byte
//! `WalIndexHdr`, https://www.sqlite.org/walformat.html#the_wal_index_file_format) before the
//! committer releases its write lock and so before anyone is told of the commit. The
//! connection reads both files' headers (one `pread` each) before every lookup and keeps its
//! transaction only if they are byte-for-byte what they were when the snapshot was taken;
//! otherwise it ends the transaction and the lookup reads a fresh snapshot. A commit made by
//! any connection of any process is therefore seen by every lookup that starts after it,
//! exactly as without the kept transaction. A header read that fails or changes halfway only
//! costs a fresh snapshot.
//!
//! A kept snapshot pins the WAL frames it reads, so a checkpoint cannot restart the WAL
//! behind it: the pool ends it after [`IDLE_RELEASE`] without a lookup, and a commit ends it
//! at the next lookup.

use rusqlite::Connection;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a reader with nothing to do keeps its snapshot before giving it back.
pub const IDLE_RELEASE: Duration = Duration::from_millis(2);

/// Both copies of the WAL-index header.
const HEADER_BYTES: usize = 96;

/// The replica as `main`, the outbox attached as `facts`, and the snapshot kept between
/// lookups (module docs).
pub struct LookupConnection {
    conn: Connection,
    /// The `-shm` files of the replica and the outbox, opened on first use.
    shm: [ShmHeader; 2],
    /// The headers both files had when the kept snapshot was taken; `None` when none is kept.
    kept: Option<[[u8; HEADER_BYTES]; 2]>,
    /// True only while the kept snapshot is known to hold no unfiled stock movement (read by
    /// the connection's `relais_all_filed()`; see `outbox::movements_after`).
    all_filed: Arc<AtomicBool>,
}

struct ShmHeader {
    path: PathBuf,
    file: Option<File>,
}

impl ShmHeader {
    fn new(database: &Path) -> ShmHeader {
        let mut path = database.as_os_str().to_owned();
        path.push("-shm");
        ShmHeader {
            path: PathBuf::from(path),
            file: None,
        }
    }

    /// The file's WAL-index header now, or `None` when it cannot be read (no `-shm` yet, a
    /// short file): the caller then takes a fresh snapshot.
    fn read(&mut self) -> Option<[u8; HEADER_BYTES]> {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let mut header = [0u8; HEADER_BYTES];
        match self.file.as_ref()?.read_exact_at(&mut header, 0) {
            Ok(()) => Some(header),
            Err(_) => {
                // Reopened next time, in case the file was replaced.
                self.file = None;
                None
            }
        }
    }
}

impl LookupConnection {
    /// Open the replica at `replica` with the outbox at `outbox` attached as `facts`.
    pub fn open(replica: &Path, outbox: &Path) -> Result<LookupConnection, super::StorageError> {
        let all_filed = Arc::new(AtomicBool::new(false));
        Ok(LookupConnection {
            conn: super::reader_pool::open_lookup_connection_with(
                replica,
                outbox,
                Arc::clone(&all_filed),
            )?,
            all_filed,
            shm: [ShmHeader::new(replica), ShmHeader::new(outbox)],
            kept: None,
        })
    }

    /// The connection, inside a read transaction that sees every commit finished before this
    /// call. Never fails: if the transaction cannot be kept or begun, the connection is
    /// handed out without one and each statement takes its own snapshot, as SQLite does by
    /// default.
    pub fn current(&mut self) -> &Connection {
        let now = match (self.shm[0].read(), self.shm[1].read()) {
            (Some(replica), Some(outbox)) => Some([replica, outbox]),
            _ => None,
        };
        if let Some(kept) = &self.kept {
            // `is_autocommit` also catches a transaction SQLite rolled back after an error.
            if now.as_ref() == Some(kept) && !self.conn.is_autocommit() {
                return &self.conn;
            }
            self.release();
        }
        // Unknown until the new snapshot says otherwise: the lookup then scans the tail.
        self.all_filed.store(false, Ordering::Relaxed);
        let Some(now) = now else {
            return &self.conn;
        };
        // BEGIN takes no snapshot: the lookup's first read does, after the headers above were
        // read, so the snapshot holds at least everything they announced. A later commit
        // changes them and ends this transaction at the next call.
        match self
            .conn
            .prepare_cached("BEGIN DEFERRED")
            .and_then(|mut begin| begin.execute([]))
        {
            Ok(_) => {
                self.kept = Some(now);
                // Asked once per snapshot, inside it: while it is kept nothing can change the
                // answer, and most lookups then skip the unfiled tail.
                let all_filed = self
                    .conn
                    .prepare_cached(crate::outbox::ALL_FILED_SQL)
                    .and_then(|mut s| s.query_row([], |r| r.get::<_, bool>(0)));
                self.all_filed
                    .store(matches!(all_filed, Ok(true)), Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "lookup snapshot not kept; reading without"),
        }
        &self.conn
    }

    /// Give the kept snapshot back, so checkpoints can restart the WAL behind it.
    pub fn release(&mut self) {
        self.all_filed.store(false, Ordering::Relaxed);
        if self.kept.take().is_none() || self.conn.is_autocommit() {
            return;
        }
        let ended = self
            .conn
            .prepare_cached("COMMIT")
            .and_then(|mut commit| commit.execute([]));
        if let Err(e) = ended {
            tracing::debug!(error = %e, "ending the lookup snapshot failed; rolling back");
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// Whether a snapshot is kept (the pool releases it when idle).
    pub fn keeps_snapshot(&self) -> bool {
        self.kept.is_some()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::storage::{Durability, open_writer};

    /// A migrated replica and outbox in a temporary directory, as the agent opens them.
    pub(in crate::storage) struct Files {
        _dir: tempfile::TempDir,
        pub replica: PathBuf,
        pub outbox: PathBuf,
    }

    pub(in crate::storage) fn files() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let replica = dir.path().join("replica.db");
        let outbox = dir.path().join("outbox.db");
        crate::replica::open_writer(&replica).unwrap();
        crate::outbox::writer::migrate_only(&outbox).unwrap();
        Files {
            _dir: dir,
            replica,
            outbox,
        }
    }

    fn count(conn: &Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_kept_snapshot_shows_every_commit_to_either_file_at_the_next_lookup() {
        let f = files();
        let replica = open_writer(&f.replica, Durability::Rebuildable).unwrap();
        let outbox = open_writer(&f.outbox, Durability::StoreFacts).unwrap();
        let mut reader = LookupConnection::open(&f.replica, &f.outbox).unwrap();

        assert_eq!(count(reader.current(), "products"), 0);
        assert!(
            reader.keeps_snapshot(),
            "the first lookup keeps its snapshot"
        );
        assert!(!reader.current().is_autocommit(), "and stays in it");

        replica
            .execute(
                "INSERT INTO products(gtin, sku, name) VALUES (4006381333931, 'A', 'a')",
                [],
            )
            .unwrap();
        assert_eq!(count(reader.current(), "products"), 1);

        outbox
            .execute(
                "INSERT INTO stock_movements(seq, sku, delta, kind, wall_ms) \
                 VALUES (1, 'A', -1, 'sale', 0)",
                [],
            )
            .unwrap();
        let conn = reader.current();
        assert_eq!(count(conn, "facts.stock_movements"), 1);
        assert_eq!(count(conn, "products"), 1);
    }

    #[test]
    fn a_snapshot_with_unfiled_movements_scans_them_and_one_without_skips_the_scan_exactly() {
        let f = files();
        let outbox = open_writer(&f.outbox, Durability::StoreFacts).unwrap();
        let mut reader = LookupConnection::open(&f.replica, &f.outbox).unwrap();
        let sql = format!(
            "SELECT relais_all_filed(), {}",
            crate::outbox::movements_after("'A'", "0")
        );
        let ask = |reader: &mut LookupConnection| -> (bool, i64) {
            reader
                .current()
                .query_row(&sql, [], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
        };
        let movement = |seq: i64| {
            outbox
                .execute(
                    "INSERT INTO stock_movements(seq, sku, delta, kind, wall_ms) \
                     VALUES (?1, 'A', -1, 'sale', 0)",
                    [seq],
                )
                .unwrap();
        };
        assert_eq!(ask(&mut reader), (true, 0), "an empty outbox has all filed");
        movement(1);
        assert_eq!(ask(&mut reader), (false, -1), "unfiled: scanned");
        outbox
            .execute_batch(
                "INSERT INTO sku_movements(sku, seq, delta) VALUES ('A', 1, -1);
                 UPDATE meta SET value = 1 WHERE key = 'sku_indexed_upto';",
            )
            .unwrap();
        assert_eq!(
            ask(&mut reader),
            (true, -1),
            "filed: counted once, scan skipped"
        );
        movement(2);
        assert_eq!(ask(&mut reader), (false, -2), "one filed, one not");
    }

    #[test]
    fn a_released_snapshot_lets_a_checkpoint_empty_the_wal() {
        let f = files();
        let replica = open_writer(&f.replica, Durability::Rebuildable).unwrap();
        replica.execute_batch("PRAGMA busy_timeout=0").unwrap();
        let mut reader = LookupConnection::open(&f.replica, &f.outbox).unwrap();
        replica
            .execute(
                "INSERT INTO products(gtin, sku, name) VALUES (4006381333931, 'A', 'a')",
                [],
            )
            .unwrap();
        assert_eq!(count(reader.current(), "products"), 1);

        let truncate = |conn: &Connection| -> (i64, i64) {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap()
        };
        replica
            .execute(
                "INSERT INTO products(gtin, sku, name) VALUES (96385074, 'B', 'b')",
                [],
            )
            .unwrap();
        assert_eq!(truncate(&replica).0, 1, "the kept snapshot holds the WAL");
        reader.release();
        assert!(!reader.keeps_snapshot());
        assert_eq!(truncate(&replica), (0, 0), "released: the WAL is emptied");
        assert_eq!(count(reader.current(), "products"), 2);
    }
}
