//! The only module family that touches rusqlite directly: opening databases with the right
//! pragmas, integrity checks at start, moving damaged files aside, and the read-only pool.
//!
//! Each database file has exactly one writer connection, owned by one thread
//! (`outbox::writer`, the import path). Readers use [`ReaderPool`], whose connections live on
//! their own threads so that no SQLite call ever runs on a tokio worker.

mod reader_pool;
mod snapshot;

#[cfg(test)]
pub(crate) use reader_pool::register_all_filed;
pub use reader_pool::{
    ReaderPool, ReaderPoolError, open_lookup_connection as reader_pool_connection,
};
pub use snapshot::LookupConnection;

use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const REPLICA_FILE: &str = "replica.db";
pub const OUTBOX_FILE: &str = "outbox.db";
/// Snapshot downloads, under the data directory (`<file>.part` while incomplete).
pub const SNAPSHOTS_DIR: &str = "snapshots";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(
        "cannot open database {path}: {source}. {}",
        open_fix(.path, .source)
    )]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot move damaged database {path} aside: {source}. Move it by hand and restart")]
    MoveAside {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot create data directory {path}: {source}. {}",
        io_fix(.path, .source)
    )]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How much durability a database needs. The replica can always be rebuilt from central,
/// so it trades the last transactions on power loss for speed; the outbox holds store facts
/// that exist nowhere else, so every commit reaches the disk before anyone is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Rebuildable,
    StoreFacts,
}

/// What to do when the agent may not use its data directory or a file in it: give all of it to
/// the user the agent runs as (a file left root's by a `sudo` command is the usual cause).
pub fn ownership_fix(dir: &Path) -> String {
    use crate::provision::users;
    let uid = users::effective_uid();
    let (user, group) = if uid == 0 {
        // Root can write anything: the service account is who will run into it.
        (
            crate::doctor::SERVICE_USER.to_owned(),
            crate::doctor::SERVICE_USER.to_owned(),
        )
    } else {
        let gid = rustix::process::getegid().as_raw();
        (
            users::user_name(uid).unwrap_or_else(|| uid.to_string()),
            users::group_name(gid).unwrap_or_else(|| gid.to_string()),
        )
    };
    format!(
        "Give the data directory and everything in it to {user}, the user the agent runs as: \
         `sudo chown -R {user}:{group} {}` (`sudo relais doctor` names every file it cannot use)",
        dir.display()
    )
}

/// The fix for an I/O error on the data directory `dir` or a file in it.
pub fn io_fix(dir: &Path, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => ownership_fix(dir),
        std::io::ErrorKind::ReadOnlyFilesystem => format!(
            "{} is on a read-only file system: remount it read-write (`dmesg` says why the kernel \
             made it read-only) or set agent.data_dir to a writable volume",
            dir.display()
        ),
        _ => "Run `sudo relais doctor`: it checks the data directory and every file in it".into(),
    }
}

/// The fix for a database that cannot be opened: ownership when SQLite could not open or write
/// the file, else the space and the doctor.
fn open_fix(path: &Path, e: &rusqlite::Error) -> String {
    let dir = path.parent().unwrap_or(path);
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly) => ownership_fix(dir),
        Some(rusqlite::ErrorCode::PermissionDenied) => ownership_fix(dir),
        _ => "Check that the disk is not full and run `sudo relais doctor`".into(),
    }
}

pub fn ensure_data_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::create_dir_all(dir).map_err(|source| StorageError::DataDir {
        path: dir.to_path_buf(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Databases hold customer tokens and store facts: the service user writes, its group
        // (root's tools, the doctor) may look; others nothing. As the unit's
        // StateDirectoryMode=0750 and docs/packaging.md say.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750));
    }
    Ok(())
}

/// Open the single writer connection of a database file.
pub fn open_writer(path: &Path, durability: Durability) -> Result<Connection, StorageError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StorageError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    // The replica holds customer rows that GDPR erasure must really remove (secure_delete).
    // The outbox's events name customers by central's id (tickets, loyalty operations): a
    // delivered event's bytes must not linger in free space either, but zeroing freelist pages
    // would add writes to every group that deletes deliveries. FAST zeroes deleted content only
    // in pages the delete writes anyway: more CPU, no more I/O (SQLite's documentation); pages
    // that become wholly free keep their bytes until reused, which a busy outbox does soon.
    let (synchronous, secure_delete) = match durability {
        Durability::Rebuildable => ("NORMAL", "ON"),
        Durability::StoreFacts => ("FULL", "FAST"),
    };
    // The outbox's commits are small and touch a few pages each (event, idempotency key, stock
    // movement, sku index); every touched page is written whole to the WAL on each commit, so
    // small pages cut the bytes fsynced per commit. Only effective when the file is created.
    let page_size = match durability {
        Durability::Rebuildable => 4096,
        Durability::StoreFacts => 1024,
    };
    // A checkpoint runs inside the commit that crosses the threshold and fsyncs the database
    // file too; with 1 KiB pages the default (1000 pages) would do that every megabyte.
    let autocheckpoint = match durability {
        Durability::Rebuildable => 1000,
        Durability::StoreFacts => 16384,
    };
    let pragmas = format!(
        "PRAGMA page_size={page_size}; PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous}; PRAGMA foreign_keys=ON; \
         PRAGMA busy_timeout=10000; PRAGMA cache_size=-32768; PRAGMA secure_delete={secure_delete}; \
         PRAGMA temp_store=MEMORY; PRAGMA wal_autocheckpoint={autocheckpoint};"
    );
    conn.execute_batch(&pragmas)
        .map_err(|source| StorageError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(conn)
}

/// Open a connection that can only read. It is a normal connection with `query_only`, because a
/// truly read-only open of a WAL database fails when the `-shm` file is missing.
pub fn open_reader(path: &Path) -> Result<Connection, StorageError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StorageError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    conn.execute_batch("PRAGMA query_only=1; PRAGMA busy_timeout=5000; PRAGMA cache_size=-8192;")
        .map_err(|source| StorageError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(conn)
}

/// Result of `PRAGMA quick_check` on a file at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integrity {
    Missing,
    Ok,
    Damaged(String),
}

pub fn quick_check(path: &Path) -> Integrity {
    if !path.exists() {
        return Integrity::Missing;
    }
    let conn = match Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE) {
        Ok(c) => c,
        Err(e) => return Integrity::Damaged(e.to_string()),
    };
    let result: Result<Vec<String>, rusqlite::Error> = conn
        .prepare("PRAGMA quick_check")
        .and_then(|mut stmt| stmt.query_map([], |r| r.get::<_, String>(0))?.collect());
    match result {
        Ok(lines) if lines.len() == 1 && lines[0] == "ok" => Integrity::Ok,
        Ok(lines) => Integrity::Damaged(lines.join("; ")),
        Err(e) => Integrity::Damaged(e.to_string()),
    }
}

/// Open a database strictly read-only (`relais doctor`): nothing is ever written to the main
/// file, whoever else has it open. SQLite may still create the `-wal`/`-shm` side files when
/// they are missing (as root it gives them the database file's owner), which is harmless.
pub fn open_read_only(path: &Path) -> Result<Connection, StorageError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StorageError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    conn.execute_batch("PRAGMA busy_timeout=5000;")
        .map_err(|source| StorageError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(conn)
}

/// [`quick_check`] on a read-only connection: for inspecting a database that a running agent
/// may own (`relais doctor`), without taking its lock or checkpointing its WAL. Unlike
/// [`quick_check`], a file that cannot be opened or read (permissions, a read-only directory
/// without the `-shm` file, a lock) is an `Err`, not "damaged": only SQLite's corruption
/// errors and `quick_check`'s own findings are.
pub fn quick_check_read_only(path: &Path) -> Result<Integrity, StorageError> {
    if !path.exists() {
        return Ok(Integrity::Missing);
    }
    let conn = open_read_only(path)?;
    let result: Result<Vec<String>, rusqlite::Error> = conn
        .prepare("PRAGMA quick_check")
        .and_then(|mut stmt| stmt.query_map([], |r| r.get::<_, String>(0))?.collect());
    match result {
        Ok(lines) if lines.len() == 1 && lines[0] == "ok" => Ok(Integrity::Ok),
        Ok(lines) => Ok(Integrity::Damaged(lines.join("; "))),
        Err(e)
            if matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
            ) =>
        {
            Ok(Integrity::Damaged(e.to_string()))
        }
        Err(source) => Err(StorageError::Sqlite {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Rename a damaged database and its WAL/SHM side files to `<name>.damaged-<unix>`;
/// returns the new path of the main file. Nothing is deleted.
pub fn move_aside(path: &Path) -> Result<PathBuf, StorageError> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut target = path.as_os_str().to_owned();
    target.push(format!(".damaged-{stamp}"));
    let target = PathBuf::from(target);
    for suffix in ["", "-wal", "-shm"] {
        let mut from = path.as_os_str().to_owned();
        from.push(suffix);
        let from = PathBuf::from(from);
        if !from.exists() {
            continue;
        }
        let mut to = target.as_os_str().to_owned();
        to.push(suffix);
        std::fs::rename(&from, PathBuf::from(to)).map_err(|source| StorageError::MoveAside {
            path: from.clone(),
            source,
        })?;
    }
    if let Some(dir) = path.parent() {
        fsync_dir(dir);
    }
    Ok(target)
}

/// Delete the copies [`move_aside`] made of `database` (with their `-wal`/`-shm`) that were
/// moved aside at least `older_than` ago, or all of them with `None`; returns what was
/// deleted. They may hold personal data, so they must not outlive their use (issue 16).
/// Best effort: a file that cannot be deleted is logged and tried again next time.
pub fn remove_damaged_copies(database: &Path, older_than: Option<Duration>) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (database.parent(), database.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.damaged-", name.to_string_lossy());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let stamp = rest
            .strip_suffix("-wal")
            .or_else(|| rest.strip_suffix("-shm"))
            .unwrap_or(rest);
        // Only names `move_aside` makes: digits, nothing else.
        let Ok(moved_at) = stamp.parse::<u64>() else {
            continue;
        };
        // A stamp in the future (the clock went back) counts as just moved.
        let age = Duration::from_secs(now.saturating_sub(moved_at));
        if older_than.is_some_and(|keep| age < keep) {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), age_s = age.as_secs(), "damaged database copy deleted");
                removed.push(path);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete a damaged database copy; retried later")
            }
        }
    }
    if !removed.is_empty() {
        fsync_dir(dir);
    }
    removed
}

/// Make a rename durable. Best effort: some filesystems refuse to fsync a directory.
pub fn fsync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Write a small file atomically: temp file, fsync, rename, fsync the directory.
pub fn write_file_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    write_file_atomically_owned(path, bytes, mode, None)
}

/// [`write_file_atomically`] with an exact mode (whatever the umask) and, when `owner` is
/// `Some((uid, gid))`, that owner — both set on the temp file before the rename, so the final
/// path never holds the new content with the wrong permissions (`relais provision` as root
/// installs secrets for the service user).
pub fn write_file_atomically_owned(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    {
        // A new file, never an existing one and never through a link: whoever can write the
        // directory must not be able to aim the temp name at another file (provisioning runs as
        // root). A temp file left by a crash is removed first (that removes a link, not its
        // target); if one appears again in between, the open fails instead of following it.
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(mode)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
        }
        let mut f = match opts.open(&tmp) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(&tmp)?;
                opts.open(&tmp)?
            }
            other => other?,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // The mode given to open() is filtered by the umask and ignored for a stale temp
            // file left by a crash; set it explicitly before any byte is written.
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
            }
        }
        #[cfg(not(unix))]
        let _ = (mode, owner);
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    fsync_dir(dir);
    Ok(())
}

/// Bring a database to the newest schema. `steps[i]` upgrades `user_version` i to i+1, each in
/// its own transaction, so a crash between steps resumes at the right one.
pub fn migrate(conn: &mut Connection, path: &Path, steps: &[&str]) -> Result<(), StorageError> {
    let err = |source| StorageError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    for (index, sql) in steps.iter().enumerate().skip(current.max(0) as usize) {
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.execute_batch(&format!("PRAGMA user_version={}", index + 1))
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}

/// How much lower than the agent's own threads bulk work runs (nice steps).
const BACKGROUND_NICE: i32 = 10;

/// Lower the calling thread's scheduling priority: for threads doing bulk work that no till
/// waits on (a snapshot import, the uplink's reads). On a 2-core box they otherwise take the
/// CPU from the threads answering tills: a 1M-product refetch and a backlog drain pushed a
/// ticket's p50 from 3 to 20 ms (the tickets bench). They still get every idle cycle.
pub fn yield_to_tills() {
    let this = rustix::thread::gettid();
    let now = rustix::process::getpriority_process(Some(this)).unwrap_or(0);
    let lower = now.saturating_add(BACKGROUND_NICE).min(19);
    if let Err(e) = rustix::process::setpriority_process(Some(this), lower) {
        tracing::debug!(error = %e, "cannot lower a background thread's priority");
    }
}

pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Free bytes available to unprivileged writers on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod secure_delete_tests {
    use super::{Durability, open_writer};

    /// Insert a row holding `marker`, delete it, fold the WAL in: is `marker` still in the file?
    fn lingers(conn: &rusqlite::Connection, path: &std::path::Path, marker: &str) -> bool {
        let run = |sql: &str| {
            conn.execute_batch(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        };
        run("CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, payload TEXT)");
        // Neighbours keep the page in use, as a busy outbox's are: only the one row goes.
        for seq in 1..=8 {
            let payload = if seq == 4 {
                format!("{{\"customer_id\":\"{marker}\"}}")
            } else {
                format!("{{\"customer_id\":\"C-{seq:06}\"}}")
            };
            conn.execute(
                "INSERT INTO events (seq, payload) VALUES (?1, ?2)",
                rusqlite::params![seq, payload],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
        run("DELETE FROM events WHERE seq = 4");
        run("PRAGMA wal_checkpoint(TRUNCATE)");
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{e}"));
        bytes.windows(marker.len()).any(|w| w == marker.as_bytes())
    }

    #[test]
    fn a_delivered_event_deleted_from_the_outbox_leaves_no_customer_id_in_the_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let outbox = dir.path().join("outbox.db");
        let conn = open_writer(&outbox, Durability::StoreFacts).unwrap_or_else(|e| panic!("{e}"));
        assert!(!lingers(&conn, &outbox, "C-ERASED-4711"));

        // The control: without secure_delete the deleted bytes stay in the page's free space.
        let plain = dir.path().join("plain.db");
        let conn = rusqlite::Connection::open(&plain).unwrap_or_else(|e| panic!("{e}"));
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA secure_delete=OFF")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(lingers(&conn, &plain, "C-ERASED-4711"));
    }
}

#[cfg(test)]
mod atomic_write_tests {
    use super::write_file_atomically;

    #[test]
    fn a_link_planted_at_the_temp_name_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let victim = dir.path().join("shadow");
        std::fs::write(&victim, "root:secret\n").unwrap_or_else(|e| panic!("{e}"));
        let target = dir.path().join("ops.pub");
        std::os::unix::fs::symlink(&victim, dir.path().join("ops.pub.tmp"))
            .unwrap_or_else(|e| panic!("{e}"));
        write_file_atomically(&target, b"relais-ed25519 AAAA k1\n", 0o644)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap_or_default(),
            "root:secret\n",
            "the link's target was not written"
        );
        assert_eq!(
            std::fs::read(&target).unwrap_or_default(),
            b"relais-ed25519 AAAA k1\n"
        );
        assert!(
            !std::fs::symlink_metadata(&target)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(true)
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod damaged_copy_tests {
    use super::*;

    #[test]
    fn only_damaged_copies_of_that_database_past_the_retention_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let old = now - 8 * 86_400;
        let recent = now - 3600;
        let names = [
            format!("replica.db.damaged-{old}"),
            format!("replica.db.damaged-{old}-wal"),
            format!("replica.db.damaged-{recent}"),
            format!("outbox.db.damaged-{old}"),
            "replica.db".to_string(),
            "replica.db.damaged-notes.txt".to_string(),
        ];
        for name in &names {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let replica = dir.path().join("replica.db");
        let week = Duration::from_secs(7 * 86_400);
        let mut removed = remove_damaged_copies(&replica, Some(week));
        removed.sort();
        assert_eq!(
            removed,
            vec![dir.path().join(&names[0]), dir.path().join(&names[1]),]
        );
        // An erasure: every copy of the replica, none of the outbox, nothing else.
        assert_eq!(
            remove_damaged_copies(&replica, None),
            vec![dir.path().join(&names[2])]
        );
        for kept in &names[3..] {
            assert!(dir.path().join(kept).exists(), "{kept} was deleted");
        }
    }
}
