//! What is inside the data directory: every file and directory the agent opens or creates
//! (the lock file, outbox.db and replica.db with their `-wal`/`-shm`, `snapshots/`, `fleet/`,
//! `doctor.key`, the card key) must be usable by the account the agent runs as. A directory
//! owned by the service user says nothing about a `outbox.db` a `sudo` command left root's:
//! the agent then dies at "cannot create the lock file" and systemd restarts it every 2 s.

use super::Finding;
use super::files::owner_mode;
use crate::config::Config;
use crate::provision::users::{self, Account};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const CHECK: &str = "data_files";
/// A data directory holds a few dozen entries; past this something else lives there and the
/// walk stops rather than taking minutes.
const MAX_ENTRIES: usize = 10_000;
/// `snapshots/STREAM/…` is the deepest the agent goes.
const MAX_DEPTH: usize = 4;
/// Offending paths named in the detail; the fix covers them all.
const NAMED: usize = 6;

/// Permission bits an entry needs: read + write for files, read + write + enter for
/// directories (the agent creates, renames and deletes inside them), read only for the ones
/// the agent never writes.
#[derive(Clone, Copy)]
enum Need {
    ReadWrite,
    Enter,
    Read,
}

impl Need {
    fn bits(self) -> u32 {
        match self {
            Need::ReadWrite => 0o6,
            Need::Enter => 0o7,
            Need::Read => 0o4,
        }
    }

    fn access(self) -> rustix::fs::Access {
        use rustix::fs::Access;
        match self {
            Need::ReadWrite => Access::READ_OK | Access::WRITE_OK,
            Need::Enter => Access::READ_OK | Access::WRITE_OK | Access::EXEC_OK,
            Need::Read => Access::READ_OK,
        }
    }
}

/// Whether `account` has `need` on an entry by its owner, group and mode (root: always).
fn allows(account: &Account, meta: &std::fs::Metadata, need: Need) -> bool {
    if account.uid == 0 {
        return true;
    }
    let mode = meta.mode();
    let bits = if account.uid == meta.uid() {
        (mode >> 6) & 0o7
    } else if account.groups.contains(&meta.gid()) {
        (mode >> 3) & 0o7
    } else {
        mode & 0o7
    };
    bits & need.bits() == need.bits()
}

/// Who is judged: the service account when it exists, else this process (not root: its own
/// `access(2)` answer, which also counts ACLs).
enum Judge<'a> {
    Service(&'a Account),
    ThisUser,
    /// Root with no service account: the agent would run as root and may open anything.
    Nobody,
}

impl Judge<'_> {
    fn ok(&self, path: &Path, meta: &std::fs::Metadata, need: Need) -> bool {
        match self {
            Judge::Service(account) => allows(account, meta, need),
            Judge::ThisUser => !matches!(
                rustix::fs::access(path, need.access()),
                Err(rustix::io::Errno::ACCESS | rustix::io::Errno::PERM)
            ),
            Judge::Nobody => true,
        }
    }

    fn who(&self) -> String {
        match self {
            Judge::Service(account) => format!("the service user {}", account.name),
            Judge::ThisUser => format!(
                "this user ({})",
                users::user_name(users::effective_uid())
                    .unwrap_or_else(|| users::effective_uid().to_string())
            ),
            Judge::Nobody => "root".to_owned(),
        }
    }
}

/// What the walk found.
#[derive(Default)]
struct Walk {
    entries: usize,
    /// Entries the agent could not use, with `owner:group mode`.
    bad: Vec<(PathBuf, String)>,
    /// Directories this process may not look into.
    hidden: Vec<PathBuf>,
    truncated: bool,
}

fn walk(dir: &Path, judge: &Judge<'_>, read_only: &[PathBuf]) -> Walk {
    let mut found = Walk::default();
    let mut pending = vec![(dir.to_path_buf(), 0usize)];
    while let Some((at, depth)) = pending.pop() {
        let listing = match std::fs::read_dir(&at) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                found.hidden.push(at);
                continue;
            }
            Err(_) => continue,
        };
        for entry in listing.flatten() {
            if found.entries >= MAX_ENTRIES {
                found.truncated = true;
                return found;
            }
            found.entries += 1;
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            // The agent writes files new and never through a link, and never opens the
            // damaged databases it moved aside: neither decides whether it can start.
            let name = entry.file_name();
            if meta.file_type().is_symlink() || name.to_string_lossy().contains(".damaged-") {
                continue;
            }
            let need = if meta.is_dir() {
                Need::Enter
            } else if read_only.contains(&path) {
                Need::Read
            } else {
                Need::ReadWrite
            };
            if !judge.ok(&path, &meta, need) {
                found.bad.push((path.clone(), owner_mode(&meta)));
            }
            if meta.is_dir() && depth + 1 < MAX_DEPTH {
                pending.push((path, depth + 1));
            }
        }
    }
    found
}

/// The `data_files` finding.
pub(super) fn contents(config: &Config, service: Option<&Account>) -> Finding {
    let dir = &config.agent.data_dir;
    if !dir.is_dir() {
        return Finding::pass(CHECK, "nothing inside yet (see the data_dir check)");
    }
    let judge = match service {
        Some(account) => Judge::Service(account),
        None if users::effective_uid() != 0 => Judge::ThisUser,
        None => Judge::Nobody,
    };
    // The agent only reads its card key; it may be root's when it lives in the data dir.
    let read_only = vec![config.customers.card_hash_key_file.clone()];
    let found = walk(dir, &judge, &read_only);
    if !found.bad.is_empty() {
        let named: Vec<String> = found
            .bad
            .iter()
            .take(NAMED)
            .map(|(path, owner)| {
                let shown = path.strip_prefix(dir).unwrap_or(path);
                format!("{} ({owner})", shown.display())
            })
            .collect();
        let more = found.bad.len().saturating_sub(NAMED);
        let lock = found
            .bad
            .iter()
            .any(|(p, _)| p.file_name().is_some_and(|n| n == "relais.lock"));
        return Finding::fail(
            CHECK,
            format!(
                "{} entr{} in {} cannot be used by {}: {}{}. The agent {}",
                found.bad.len(),
                if found.bad.len() == 1 { "y" } else { "ies" },
                dir.display(),
                judge.who(),
                named.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                },
                if lock {
                    "does not start (\"cannot create the lock file\"; systemd retries it every \
                     few seconds)"
                } else {
                    "fails when it opens or writes them (at start, or at the first sale)"
                }
            ),
            fix(dir, service),
        );
    }
    if !found.hidden.is_empty() {
        return Finding::warn(
            CHECK,
            format!(
                "cannot look inside {} as {}: whether the agent can use its files is unknown",
                found
                    .hidden
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                judge.who()
            ),
            "run with sudo: `sudo relais doctor`",
        );
    }
    let detail = match judge {
        Judge::Nobody => format!(
            "{} entr{} in {}; no service account {} on this box, so the agent runs as root and \
             may use them all",
            found.entries,
            if found.entries == 1 { "y" } else { "ies" },
            dir.display(),
            super::SERVICE_USER
        ),
        _ => format!(
            "{} entr{} in {}{}, every one usable by {}",
            found.entries,
            if found.entries == 1 { "y" } else { "ies" },
            dir.display(),
            if found.truncated {
                format!(" (the first {MAX_ENTRIES} looked at)")
            } else {
                String::new()
            },
            judge.who()
        ),
    };
    Finding::pass(CHECK, detail)
}

/// `sudo chown -R relais:relais DIR && sudo chmod -R u+rwX DIR`: ownership for the root-owned
/// file, the mode for one its owner may not write.
pub(super) fn fix(dir: &Path, service: Option<&Account>) -> String {
    let (user, group) = match service {
        Some(account) => (
            account.name.clone(),
            users::group_name(account.gid).unwrap_or_else(|| account.gid.to_string()),
        ),
        None => {
            let uid = users::effective_uid();
            let name = users::user_name(uid).unwrap_or_else(|| uid.to_string());
            (name.clone(), name)
        }
    };
    format!(
        "give all of it to the user the agent runs as: `sudo chown -R {user}:{group} {0} && sudo \
         chmod -R u+rwX {0}` (a command run with sudo in the data directory leaves root's files \
         behind), then `sudo systemctl restart relais`",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_file_its_owner_may_only_read_is_flagged_for_a_service_user_that_owns_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        std::fs::write(&path, b"x").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let owner = Account {
            name: "relais".into(),
            uid: meta.uid().max(1),
            gid: meta.gid(),
            groups: vec![meta.gid()],
        };
        let judge = Judge::Service(&owner);
        // Owned (by uid) or not, 0400 cannot be written by a non-root account.
        let found = walk(dir.path(), &judge, &[]);
        assert_eq!(found.bad.len(), 1, "{:?}", found.bad);
        // The card key is only read: 0400 is enough when it is the owner's.
        if meta.uid() != 0 {
            let found = walk(dir.path(), &judge, std::slice::from_ref(&path));
            assert!(found.bad.is_empty(), "{:?}", found.bad);
        }
    }
}
