//! Checks on the data directory: where it is, whether the agent can write it, the databases'
//! integrity, free space, the clock against what was written, replica freshness and the
//! outbox backlog. Read-only throughout.

use super::{Finding, age, truncate};
use crate::config::Config;
use crate::provision::users::{self, Account};
use crate::storage::{self, Integrity};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Outbox backlog: the oldest store fact not yet delivered. Past an hour the link has been
/// down for longer than a WAN blip; past a day central's stock and sales figures for this
/// store are a day behind and someone must look.
pub const BACKLOG_WARN: Duration = Duration::from_secs(3600);
pub const BACKLOG_FAIL: Duration = Duration::from_secs(24 * 3600);
/// Free space: warn below twice the watermark, before the agent starts refusing work.
const DISK_WARN_FACTOR: u64 = 2;
/// A clock this far behind data already written is wrong (ordinary skew between an NTP
/// step and a file's mtime is seconds).
const CLOCK_TOLERANCE: Duration = Duration::from_secs(300);
/// The software did not exist before this year: an earlier clock was never set.
const EARLIEST_YEAR: u32 = 2025;

fn data_paths(config: &Config) -> crate::agent::DataPaths {
    crate::agent::DataPaths::new(&config.agent.data_dir)
}

/// `root:dialout 0660`, for messages.
pub(crate) fn owner_mode(meta: &std::fs::Metadata) -> String {
    let user = users::user_name(meta.uid()).unwrap_or_else(|| meta.uid().to_string());
    let group = users::group_name(meta.gid()).unwrap_or_else(|| meta.gid().to_string());
    format!("{user}:{group} {:04o}", meta.mode() & 0o7777)
}

pub(super) fn data_dir(config: &Config, service: Option<&Account>) -> Finding {
    const CHECK: &str = "data_dir";
    let dir = &config.agent.data_dir;
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Finding::warn(
            CHECK,
            format!("{} does not exist yet", dir.display()),
            format!(
                "the agent creates it at its first start (`sudo systemctl start relais`); or \
                 create it now: `sudo install -d -o {0} -g {0} -m 750 {1}`",
                super::SERVICE_USER,
                dir.display()
            ),
        ),
        Err(e) => cannot_inspect(CHECK, dir, &e),
        Ok(meta) if !meta.is_dir() => Finding::fail(
            CHECK,
            format!("{} is not a directory", dir.display()),
            "move the file away or set agent.data_dir to a directory",
        ),
        Ok(meta) => {
            match rustix::fs::access(
                dir.as_path(),
                rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
            ) {
                Err(rustix::io::Errno::ROFS) => {
                    return Finding::fail(
                        CHECK,
                        format!("{} is on a read-only file system", dir.display()),
                        "remount it read-write (`mount -o remount,rw …`; check `dmesg` for disk \
                         errors that made the kernel remount it read-only) or set agent.data_dir \
                         to a writable volume",
                    );
                }
                Err(rustix::io::Errno::ACCESS) if service.is_none() => {
                    return Finding::fail(
                        CHECK,
                        format!(
                            "{} is not writable by this user ({})",
                            dir.display(),
                            owner_mode(&meta)
                        ),
                        super::ownership::fix(dir, None),
                    );
                }
                _ => {}
            }
            if let Some(account) = service
                && !users::may_access(account, meta.uid(), meta.gid(), meta.mode(), true)
            {
                return Finding::fail(
                    CHECK,
                    format!(
                        "{} ({}) is not writable by the service user {}",
                        dir.display(),
                        owner_mode(&meta),
                        account.name
                    ),
                    format!(
                        "{} (systemd's StateDirectory= gives /var/lib/relais to it, mode 0750)",
                        super::ownership::fix(dir, Some(account))
                    ),
                );
            }
            Finding::pass(
                CHECK,
                format!("{} writable ({})", dir.display(), owner_mode(&meta)),
            )
        }
    }
}

fn cannot_inspect(check: &str, path: &Path, e: &std::io::Error) -> Finding {
    Finding::warn(
        check,
        format!("cannot inspect {}: {e}", path.display()),
        "run with sudo: `sudo relais doctor`",
    )
}

pub(super) fn integrity(config: &Config) -> Vec<Finding> {
    let paths = data_paths(config);
    vec![
        integrity_of(
            &paths.replica,
            "the agent moves it aside at its next start (`sudo systemctl restart relais`, alarm \
             replica_rebuilt) and starts on an empty replica; reload it from snapshots (the \
             agent fetches them itself with sync.snapshot_url, else `relais replica import`); \
             see \"Damaged databases\" in /usr/share/doc/relais/operations.md",
        ),
        integrity_of(
            &paths.outbox,
            "the agent moves it aside at its next start (`sudo systemctl restart relais`, alarm \
             outbox_replaced) and continues on a fresh outbox; recover the unsent store facts \
             from outbox.db.damaged-* and hand them to central ops (\"Damaged databases\" in \
             /usr/share/doc/relais/operations.md)",
        ),
    ]
}

fn integrity_of(path: &Path, fix: &str) -> Finding {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let check = format!("integrity:{name}");
    let meta = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Finding::pass(
                check,
                format!(
                    "{} not created yet (the agent creates it at its first start)",
                    path.display()
                ),
            );
        }
        Err(e) => return cannot_inspect(&check, path, &e),
        Ok(meta) => meta,
    };
    // A file we may not read is not a damaged file.
    if let Err(e) = std::fs::File::open(path) {
        return cannot_inspect(&check, path, &e);
    }
    match storage::quick_check_read_only(path) {
        Err(e) => Finding::warn(
            check,
            format!("cannot check {} as this user: {e}", path.display()),
            "run with sudo: `sudo relais doctor`",
        ),
        Ok(Integrity::Ok | Integrity::Missing) => Finding::pass(
            check,
            format!(
                "{}: quick_check ok ({:.1} MiB)",
                path.display(),
                meta.len() as f64 / 1_048_576.0
            ),
        ),
        Ok(Integrity::Damaged(why)) => Finding::fail(
            check,
            format!(
                "{} is damaged: quick_check says {}",
                path.display(),
                truncate(&why, 300)
            ),
            fix,
        ),
    }
}

/// The directory itself, or its nearest existing ancestor (a data dir not created yet will
/// live on that volume).
fn existing_ancestor(dir: &Path) -> PathBuf {
    let mut at = dir.to_path_buf();
    while !at.exists() {
        match at.parent() {
            Some(parent) => at = parent.to_path_buf(),
            None => break,
        }
    }
    at
}

pub(super) fn disk(config: &Config) -> Finding {
    const CHECK: &str = "disk";
    let volume = existing_ancestor(&config.agent.data_dir);
    let low = config.disk.low_free_mb;
    let Some(free) = storage::free_bytes(&volume) else {
        return Finding::warn(
            CHECK,
            format!("cannot measure the free space of {}", volume.display()),
            "check with `df -h` by hand",
        );
    };
    let free_mb = free / (1024 * 1024);
    let detail = format!(
        "{free_mb} MiB free on the volume of {} (disk.low_free_mb = {low})",
        config.agent.data_dir.display()
    );
    let fix = format!(
        "free space on that volume (old `*.damaged-*` databases and `snapshots/*.part` in {}, \
         logs: `sudo journalctl --vacuum-size=100M`, packages: `sudo apt-get clean`), or lower \
         disk.low_free_mb",
        config.agent.data_dir.display()
    );
    if free_mb < low || free == 0 {
        Finding::fail(
            CHECK,
            format!(
                "{detail}: below the watermark, the agent refuses droppable telemetry and sales \
                 fail once the disk is full"
            ),
            fix,
        )
    } else if free_mb < low.saturating_mul(DISK_WARN_FACTOR) {
        Finding::warn(
            CHECK,
            format!("{detail}: less than {DISK_WARN_FACTOR}× the watermark left"),
            fix,
        )
    } else {
        Finding::pass(CHECK, detail)
    }
}

/// The newest moment this box recorded: the newest outbox event's wall time and the
/// databases' modification times. A clock behind it has gone backwards.
fn newest_written(config: &Config) -> Option<(SystemTime, String)> {
    let paths = data_paths(config);
    let mut newest: Option<(SystemTime, String)> = None;
    let mut consider = |t: SystemTime, what: String| {
        if newest.as_ref().is_none_or(|(n, _)| t > *n) {
            newest = Some((t, what));
        }
    };
    if paths.outbox.exists()
        && let Ok(conn) = storage::open_read_only(&paths.outbox)
        && let Ok(Some(ms)) = conn.query_row("SELECT MAX(wall_ms) FROM events", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
    {
        consider(
            UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64),
            "the newest outbox event".into(),
        );
    }
    for file in [&paths.outbox, &paths.replica] {
        for suffix in ["", "-wal"] {
            let mut path = file.as_os_str().to_owned();
            path.push(suffix);
            let path = PathBuf::from(path);
            if let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified()) {
                consider(modified, format!("the last change of {}", path.display()));
            }
        }
    }
    newest
}

fn year_of(t: SystemTime) -> u32 {
    crate::fleet::format_time(t)
        .get(..4)
        .and_then(|y| y.parse().ok())
        .unwrap_or(0)
}

/// `timedatectl show -p NTPSynchronized --value`: `Some(true/false)`, `None` when it cannot
/// say (no systemd, no timedated) within two seconds.
fn ntp_synchronized() -> Option<bool> {
    let out = super::command_output(
        "timedatectl",
        &["show", "-p", "NTPSynchronized", "--value"],
        Duration::from_secs(2),
    )?;
    match out.trim() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

pub(super) fn clock(config: &Config) -> Finding {
    const CHECK: &str = "clock";
    let now = SystemTime::now();
    let shown = crate::fleet::format_time(now);
    let set_fix = "turn NTP on (`timedatectl set-ntp true`; it needs UDP 123 to an NTP server, \
                   see `timedatectl timesync-status`), or set the time by hand: `timedatectl \
                   set-time 'YYYY-MM-DD HH:MM:SS'`";
    if year_of(now) < EARLIEST_YEAR {
        return Finding::fail(
            CHECK,
            format!("the clock says {shown}: before {EARLIEST_YEAR}, so it was never set"),
            set_fix,
        );
    }
    if let Some((newest, what)) = newest_written(config)
        && let Ok(ahead) = newest.duration_since(now)
        && ahead > CLOCK_TOLERANCE
    {
        return Finding::fail(
            CHECK,
            format!(
                "the clock says {shown}, {} behind {what} ({}): either the clock is behind now \
                 or it was ahead then; events recorded now would look older than ones already \
                 recorded",
                age(ahead.as_secs_f64()),
                crate::fleet::format_time(newest)
            ),
            set_fix,
        );
    }
    match ntp_synchronized() {
        Some(true) => Finding::pass(CHECK, format!("{shown}; NTP synchronized")),
        Some(false) => Finding::warn(
            CHECK,
            format!("{shown}; NTP is not synchronized (timedatectl)"),
            set_fix,
        ),
        None => Finding::pass(
            CHECK,
            format!(
                "{shown}; not behind data already written (NTP state unknown: timedatectl not available)"
            ),
        ),
    }
}

pub(super) fn replica(config: &Config) -> Finding {
    const CHECK: &str = "replica";
    let path = data_paths(config).replica;
    let load_fix = if config.sync.snapshot_url.is_some() {
        "the agent fetches every empty stream's snapshot at its next broker connection \
         (sync.snapshot_url); check the broker check above"
    } else {
        "import the store's snapshots as the service user (root would leave root's files in the \
         data directory): `sudo -u relais relais replica import --stream STREAM FILE` for each \
         stream (/usr/share/doc/relais/snapshot-format.md), or set sync.snapshot_url"
    };
    if !path.exists() {
        return Finding::warn(CHECK, "no replica yet: lookups answer not found", load_fix);
    }
    let states = storage::open_read_only(&path)
        .map_err(|e| e.to_string())
        .and_then(|conn| crate::replica::stream_states(&conn).map_err(|e| e.to_string()));
    let states = match states {
        Ok(states) => states,
        Err(e) => {
            return Finding::warn(
                CHECK,
                format!("cannot read the stream versions: {e}"),
                "see the integrity check above; the agent migrates the schema at its next start",
            );
        }
    };
    let stale_after = config.replica.stale_after;
    let fresh = crate::replica::lookup::freshness(
        &states,
        &crate::replica::Stream::ALL,
        storage::now_unix_ms(),
        stale_after,
    );
    let summary = fresh
        .streams
        .iter()
        .map(|s| match s.age_s {
            Some(a) => format!("{} v{} ({} ago)", s.stream.name(), s.version, age(a)),
            None => format!("{} never loaded", s.stream.name()),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let never: Vec<&str> = fresh
        .streams
        .iter()
        .filter(|s| s.age_s.is_none())
        .map(|s| s.stream.name())
        .collect();
    if !never.is_empty() {
        return Finding::warn(
            CHECK,
            format!(
                "{summary}: lookups of {} answer not found",
                if never.len() == 1 {
                    "that stream"
                } else {
                    "those streams"
                }
            ),
            load_fix,
        );
    }
    if fresh.stale {
        let fix = if config.sync.broker.is_some() {
            "central's deltas are not arriving: check the broker check above; central ops can \
             force a snapshot with `relaisctl publish --agent ID --refetch STREAM`"
        } else {
            "offline: import fresh snapshots (`relais replica import`), or configure the broker"
        };
        // Each stream against its own limit: name the limit of every stale one.
        let over: Vec<String> = fresh
            .streams
            .iter()
            .filter(|s| s.stale)
            .map(|s| {
                format!(
                    "{} older than replica.stale_after.{} = {}",
                    s.stream.name(),
                    s.stream.name(),
                    humantime::format_duration(stale_after.get(s.stream))
                )
            })
            .collect();
        return Finding::warn(
            CHECK,
            format!(
                "{summary}: {}; answers are flagged stale (a stream's age counts from its last \
                 change or central's last heartbeat confirming it, whichever is later)",
                over.join(", ")
            ),
            fix,
        );
    }
    Finding::pass(CHECK, summary)
}

pub(super) fn outbox(config: &Config) -> Finding {
    const CHECK: &str = "outbox";
    let path = data_paths(config).outbox;
    if !path.exists() {
        return Finding::pass(CHECK, "empty (not created yet)");
    }
    let read = storage::open_read_only(&path)
        .map_err(|e| e.to_string())
        .and_then(|conn| {
            let stats = crate::outbox::stats::read(&conn).map_err(|e| e.to_string())?;
            let dead = crate::outbox::stats::dead_letters(&conn).map_err(|e| e.to_string())?;
            Ok((stats, dead))
        });
    let (stats, dead) = match read {
        Ok(read) => read,
        Err(e) => {
            return Finding::warn(
                CHECK,
                format!("cannot read the outbox: {e}"),
                "see the integrity check above; the agent migrates the schema at its next start",
            );
        }
    };
    let waiting = stats.store_fact.depth;
    let oldest = stats.oldest_store_fact_age_s(storage::now_unix_ms());
    let detail = match oldest {
        Some(a) => format!(
            "{waiting} store fact(s) and {} telemetry event(s) waiting; the oldest store fact is {} old",
            stats.telemetry.depth,
            age(a)
        ),
        None => format!(
            "no store fact waiting ({} telemetry event(s))",
            stats.telemetry.depth
        ),
    };
    if dead > 0 {
        return Finding::fail(
            CHECK,
            format!("{detail}; {dead} event(s) refused by the broker (dead letters)"),
            "the broker refused them (usually its ACL or a sync.username that is not the agent \
             id: see the acl check); once fixed, send them again on the box: `sudo relais outbox \
             requeue`",
        );
    }
    if config.sync.broker.is_none() {
        return Finding::pass(
            CHECK,
            format!("{detail}; offline: delivered once a broker is configured"),
        );
    }
    let link_fix = "store facts are safe on disk and leave in order once the link works: see \
                    the broker check, the WAN link, and `sudo journalctl -u relais` for the sync \
                    errors";
    match oldest {
        Some(a) if a > BACKLOG_FAIL.as_secs_f64() => Finding::fail(
            CHECK,
            format!(
                "{detail}: more than {} undelivered",
                age(BACKLOG_FAIL.as_secs_f64())
            ),
            link_fix,
        ),
        Some(a) if a > BACKLOG_WARN.as_secs_f64() => Finding::warn(
            CHECK,
            format!(
                "{detail}: more than {} undelivered",
                age(BACKLOG_WARN.as_secs_f64())
            ),
            link_fix,
        ),
        _ => Finding::pass(CHECK, detail),
    }
}
