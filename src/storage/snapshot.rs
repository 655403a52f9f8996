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
//! connection reads both files' headers before every lookup and keeps its
//! transaction only if they are byte-for-byte what they were when the snapshot was taken;
//! otherwise it ends the transaction and the lookup reads a fresh snapshot. A commit made by
//! any connection of any process is therefore seen by every lookup that starts after it,
//! exactly as without the kept transaction. A header read that fails or changes halfway only
//! costs a fresh snapshot.
//!
//! The headers are read from a read-only shared mapping of each `-shm` file's first page, as
//! SQLite reads them itself: two `pread`s were a tenth of a lookup. A file is mapped only once
//! this connection has read through it (SQLite then holds its own mapping and the lock that
//! stops any other connection from truncating the file), and only when it is long enough; until
//! then, and whenever mapping fails, the header is read with `pread`.
//!
//! A kept snapshot pins the WAL frames it reads, so a checkpoint cannot restart the WAL
//! behind it: the pool ends it after [`IDLE_RELEASE`] without a lookup, and a commit ends it
//! at the next lookup.

use rusqlite::Connection;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

/// How long a reader with nothing to do keeps its snapshot before giving it back.
pub const IDLE_RELEASE: Duration = Duration::from_millis(2);

/// Both copies of the WAL-index header.
const HEADER_BYTES: usize = 96;

/// The header as the words it is compared in.
type Header = [u64; HEADER_BYTES / 8];

/// The replica as `main`, the outbox attached as `facts`, and the snapshot kept between
/// lookups (module docs).
pub struct LookupConnection {
    conn: Connection,
    /// The `-shm` files of the replica and the outbox, opened on first use.
    shm: [ShmHeader; 2],
    /// The headers both files had when the kept snapshot was taken; `None` when none is kept.
    kept: Option<[Header; 2]>,
    /// A snapshot was taken through this connection, so SQLite has both `-shm` files open and
    /// mapped: from then on they may be mapped here too (module docs).
    read_through: bool,
    /// True only while the kept snapshot is known to hold no unfiled stock movement (read by
    /// the connection's `relais_all_filed()`; see `outbox::movements_after`).
    all_filed: Arc<AtomicBool>,
}

struct ShmHeader {
    path: PathBuf,
    file: Option<File>,
    map: Option<HeaderMap>,
}

/// A read-only shared mapping of the first page of a `-shm` file.
struct HeaderMap {
    start: NonNull<std::ffi::c_void>,
}

// The only `unsafe` in Relais (ADR 0016): mapping, reading and unmapping these 96 bytes.
// SAFETY: the mapping is only read, through atomic loads, and unmapped once, in `drop`.
#[allow(unsafe_code)]
unsafe impl Send for HeaderMap {}

#[allow(unsafe_code)]
impl HeaderMap {
    /// Map the header of `file`, which must hold at least `HEADER_BYTES` bytes.
    fn new(file: &File) -> Option<HeaderMap> {
        let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
        if len < HEADER_BYTES {
            return None;
        }
        // SAFETY: a fresh read-only mapping chosen by the kernel, of bytes inside the file (its
        // length checked above); nothing else in the process aliases it as a Rust reference.
        let start = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                HEADER_BYTES,
                rustix::mm::ProtFlags::READ,
                rustix::mm::MapFlags::SHARED,
                file,
                0,
            )
        }
        .ok()?;
        Some(HeaderMap {
            start: NonNull::new(start)?,
        })
    }

    fn read(&self) -> Header {
        // Other processes (and SQLite in this one) write these bytes at any time, so a plain or
        // volatile read is a data race, undefined behaviour however harmless it looks. Atomic
        // loads are defined for memory another writer changes concurrently. The mapping is
        // read-only: std allows only "sufficiently small" `Relaxed` loads there (4 bytes on
        // 32-bit targets, see "Atomic accesses to read-only memory" in `core::sync::atomic`),
        // hence 32-bit words — SQLite's header fields are 32-bit words anyway — and a fence for
        // the ordering. A torn header (words from before and after a commit) only differs from
        // the kept one, which takes a fresh snapshot: the safe direction.
        let words = self.start.as_ptr().cast::<u32>();
        let mut header: Header = [0; HEADER_BYTES / 8];
        for (i, word) in header.iter_mut().enumerate() {
            let mut bytes = [0u8; 8];
            for (half, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                // SAFETY: `2 * i + half < 24` words = the 96 mapped bytes, which stay mapped
                // until `drop`; the map is page-aligned, so each word is 4-aligned. This process
                // only ever loads them, atomically and `Relaxed` (allowed on read-only memory),
                // and never makes a non-atomic Rust reference to them.
                let atomic = unsafe { AtomicU32::from_ptr(words.add(2 * i + half)) };
                chunk.copy_from_slice(&atomic.load(Ordering::Relaxed).to_ne_bytes());
            }
            // The same bytes in the same order as the `pread` path below, so the two compare.
            *word = u64::from_ne_bytes(bytes);
        }
        // Orders the loads above before the snapshot's reads that follow.
        std::sync::atomic::fence(Ordering::Acquire);
        header
    }
}

#[allow(unsafe_code)]
impl Drop for HeaderMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped, once; no reference into it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.start.as_ptr(), HEADER_BYTES) };
    }
}

impl ShmHeader {
    fn new(database: &Path) -> ShmHeader {
        let mut path = database.as_os_str().to_owned();
        path.push("-shm");
        ShmHeader {
            path: PathBuf::from(path),
            file: None,
            map: None,
        }
    }

    /// The file's WAL-index header now, or `None` when it cannot be read (no `-shm` yet, a
    /// short file): the caller then takes a fresh snapshot. `may_map`: SQLite has the file
    /// open through this connection (module docs).
    fn read(&mut self, may_map: bool) -> Option<Header> {
        if let Some(map) = &self.map {
            return Some(map.read());
        }
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let file = self.file.as_ref()?;
        if may_map {
            self.map = HeaderMap::new(file);
            if let Some(map) = &self.map {
                return Some(map.read());
            }
        }
        let mut bytes = [0u8; HEADER_BYTES];
        match file.read_exact_at(&mut bytes, 0) {
            Ok(()) => {
                let mut header: Header = [0; HEADER_BYTES / 8];
                for (word, chunk) in header.iter_mut().zip(bytes.chunks_exact(8)) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(chunk);
                    *word = u64::from_ne_bytes(b);
                }
                Some(header)
            }
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
            read_through: false,
        })
    }

    /// The connection, inside a read transaction that sees every commit finished before this
    /// call. Never fails: if the transaction cannot be kept or begun, the connection is
    /// handed out without one and each statement takes its own snapshot, as SQLite does by
    /// default.
    pub fn current(&mut self) -> &Connection {
        let may_map = self.read_through;
        let now = match (self.shm[0].read(may_map), self.shm[1].read(may_map)) {
            (Some(replica), Some(outbox)) => Some([replica, outbox]),
            _ => None,
        };
        if let Some(kept) = &self.kept {
            // `is_autocommit` also catches a transaction SQLite rolled back after an error.
            if now.as_ref() == Some(kept) && !self.conn.is_autocommit() {
                // The lookup that took this snapshot read both files through SQLite.
                self.read_through = true;
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

    /// Whether both `-shm` headers are read through a mapping (tests).
    #[cfg(test)]
    fn headers_mapped(&self) -> bool {
        self.shm.iter().all(|shm| shm.map.is_some())
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
                "INSERT INTO stock_movements(seq, line, sku, delta, kind, wall_ms) \
                 VALUES (1, 0, 'A', -1, 'sale', 0)",
                [],
            )
            .unwrap();
        let conn = reader.current();
        assert_eq!(count(conn, "facts.stock_movements"), 1);
        assert_eq!(count(conn, "products"), 1);
    }

    #[test]
    fn a_commit_by_another_process_is_seen_by_the_next_lookup_through_the_mapped_headers() {
        let f = files();
        // Held open like the agent's writers: SQLite never truncates a `-shm` someone has open.
        let _replica = open_writer(&f.replica, Durability::Rebuildable).unwrap();
        let _outbox = open_writer(&f.outbox, Durability::StoreFacts).unwrap();
        let mut reader = LookupConnection::open(&f.replica, &f.outbox).unwrap();
        assert_eq!(count(reader.current(), "products"), 0);
        assert_eq!(count(reader.current(), "products"), 0);
        for round in 1..=12i64 {
            let (file, sql) = if round % 2 == 0 {
                (
                    &f.replica,
                    format!(
                        "INSERT INTO products(gtin, sku, name) VALUES ({round}, 'S{round}', 'n');"
                    ),
                )
            } else {
                (
                    &f.outbox,
                    format!(
                        "INSERT INTO stock_movements(seq, line, sku, delta, kind, wall_ms) \
                         VALUES ({round}, 0, 'A', -1, 'sale', 0);"
                    ),
                )
            };
            let out = std::process::Command::new("sqlite3")
                .arg(file)
                .arg(format!("PRAGMA busy_timeout=5000; {sql}"))
                .output()
                .expect("the sqlite3 CLI (scripts/test.sh installs it)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let conn = reader.current();
            assert_eq!(count(conn, "products"), round / 2, "round {round}");
            assert_eq!(
                count(conn, "facts.stock_movements"),
                (round + 1) / 2,
                "round {round}"
            );
            assert!(
                reader.headers_mapped(),
                "round {round}: read through the maps"
            );
        }
    }

    #[test]
    fn a_header_is_mapped_only_from_a_file_long_enough_to_hold_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x-shm");
        std::fs::write(&path, [7u8; HEADER_BYTES - 1]).unwrap();
        let file = File::open(&path).unwrap();
        assert!(
            HeaderMap::new(&file).is_none(),
            "short: read with pread instead"
        );
        let mut bytes = vec![0u8; 4096];
        bytes[..8].copy_from_slice(&42u64.to_ne_bytes());
        bytes[88..96].copy_from_slice(&9u64.to_ne_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let header = HeaderMap::new(&file).expect("mapped").read();
        assert_eq!((header[0], header[11]), (42, 9));
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
                    "INSERT INTO stock_movements(seq, line, sku, delta, kind, wall_ms) \
                     VALUES (?1, 0, 'A', -1, 'sale', 0)",
                    [seq],
                )
                .unwrap();
        };
        assert_eq!(ask(&mut reader), (true, 0), "an empty outbox has all filed");
        movement(1);
        assert_eq!(ask(&mut reader), (false, -1), "unfiled: scanned");
        outbox
            .execute_batch(
                "INSERT INTO sku_movements(sku, seq, line, delta) VALUES ('A', 1, 0, -1);
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
