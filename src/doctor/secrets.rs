//! The API token file and the pinned ops public keys: present, private where they must be,
//! readable by the service user, and parseable by the same code the agent uses.

use super::Finding;
use super::files::owner_mode;
use crate::config::Config;
use crate::provision::users::{self, Account};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// `Some(finding)` when the service user cannot read `path`.
fn unreadable_by_service(
    check: &str,
    path: &Path,
    meta: &std::fs::Metadata,
    service: Option<&Account>,
) -> Option<Finding> {
    let account = service?;
    if users::may_access(account, meta.uid(), meta.gid(), meta.mode(), false) {
        return None;
    }
    Some(Finding::fail(
        check,
        format!(
            "{} ({}) cannot be read by the service user {}",
            path.display(),
            owner_mode(meta),
            account.name
        ),
        format!(
            "`chown {0}:{0} {1}` (relais provision does this when run as root)",
            account.name,
            path.display()
        ),
    ))
}

/// `Some(finding)` when the service user could rewrite a file the agent trusts (or replace it
/// in its directory): it could then pin an ops key or a CA of its own.
fn writable_by_service(
    check: &str,
    path: &Path,
    meta: &std::fs::Metadata,
    service: Option<&Account>,
) -> Option<Finding> {
    let account = service?;
    if account.uid == 0 {
        return None;
    }
    let dir_writable = path
        .parent()
        .and_then(|dir| std::fs::metadata(dir).ok())
        .is_some_and(|d| {
            d.uid() == account.uid || users::may_access(account, d.uid(), d.gid(), d.mode(), true)
        });
    let file_writable = meta.uid() == account.uid
        || users::may_access(account, meta.uid(), meta.gid(), meta.mode(), true);
    if !file_writable && !dir_writable {
        return None;
    }
    Some(Finding::fail(
        check,
        format!(
            "{} ({}) is a trust anchor the service user {} can rewrite{}: a compromised agent \
             could pin a key of its own",
            path.display(),
            owner_mode(meta),
            account.name,
            if dir_writable {
                " (its directory is writable)"
            } else {
                ""
            }
        ),
        format!(
            "`sudo chown root:{0} {1} && sudo chmod 0644 {1}`, and make its directory root's \
             (`relais provision` installs trust anchors this way)",
            account.name,
            path.display()
        ),
    ))
}

/// The broker's CA (`sync.ca_file`): readable by the service, writable only by root.
pub(super) fn broker_ca(config: &Config, service: Option<&Account>) -> Option<Finding> {
    const CHECK: &str = "broker_ca";
    let path = config.sync.ca_file.as_ref()?;
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => {
            return Some(Finding::fail(
                CHECK,
                format!("cannot read {}: {e}", path.display()),
                "provision the box (`relais provision BUNDLE` installs ca.pem), or correct \
                 sync.ca_file",
            ));
        }
    };
    Some(
        unreadable_by_service(CHECK, path, &meta, service)
            .or_else(|| writable_by_service(CHECK, path, &meta, service))
            .unwrap_or_else(|| {
                Finding::pass(
                    CHECK,
                    format!("{} ({}): pinned, root's", path.display(), owner_mode(&meta)),
                )
            }),
    )
}

/// The card hash key (`customers.card_hash_key_file`): the agent refuses to start without it,
/// except at its default place in the data directory, where it creates one.
pub(super) fn card_key(config: &Config, service: Option<&Account>) -> Finding {
    const CHECK: &str = "card_key";
    let path = &config.customers.card_hash_key_file;
    let default = config
        .agent
        .data_dir
        .join(crate::agent::DEFAULT_CARD_KEY_FILE);
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && *path == default => {
            return Finding::pass(
                CHECK,
                format!(
                    "{} not created yet (the agent makes it at its first start)",
                    path.display()
                ),
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Finding::warn(
                CHECK,
                format!("cannot inspect {}: {e}", path.display()),
                "run with sudo: `sudo relais doctor`",
            );
        }
        Err(e) => {
            return Finding::fail(
                CHECK,
                format!("{}: {e}: the agent refuses to start", path.display()),
                "provision the box (`sudo relais provision BUNDLE` installs card-hash.key), or \
                 correct customers.card_hash_key_file",
            );
        }
    };
    unreadable_by_service(CHECK, path, &meta, service).unwrap_or_else(|| {
        Finding::pass(CHECK, format!("{} ({})", path.display(), owner_mode(&meta)))
    })
}

pub(super) fn api_tokens(config: &Config, service: Option<&Account>) -> Finding {
    const CHECK: &str = "api_tokens";
    let Some(path) = &config.api.token_file else {
        return Finding::pass(
            CHECK,
            format!(
                "not configured: the API on {} (loopback) needs no token",
                config.api.listen
            ),
        );
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Finding::fail(
                CHECK,
                format!(
                    "api.token_file {} does not exist: the agent refuses to start",
                    path.display()
                ),
                "provision the box (`relais provision BUNDLE` installs api-tokens), or create it: \
                 one `NAME TOKEN` per line (`NAME TOKEN read` for read-only) (`openssl rand -base64 32`), mode 0600, owned by the \
                 service user",
            );
        }
        Err(e) => {
            return Finding::warn(
                CHECK,
                format!("cannot inspect {}: {e}", path.display()),
                "run with sudo: `sudo relais doctor`",
            );
        }
    };
    if meta.mode() & 0o077 != 0 {
        return Finding::fail(
            CHECK,
            format!(
                "{} ({}) is readable by group or others: the agent refuses to start, anyone on \
                 the box could post sales",
                path.display(),
                owner_mode(&meta)
            ),
            format!(
                "`chmod 600 {0} && chown {1}:{1} {0}`",
                path.display(),
                super::SERVICE_USER
            ),
        );
    }
    if let Some(finding) = unreadable_by_service(CHECK, path, &meta, service) {
        return finding;
    }
    match crate::api::ApiTokens::load(path) {
        Ok(tokens) => Finding::pass(
            CHECK,
            format!(
                "{} ({}): {} token(s)",
                path.display(),
                owner_mode(&meta),
                tokens.len()
            ),
        ),
        Err(crate::api::TokenFileError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Finding::warn(
                CHECK,
                format!("cannot read {} as this user", path.display()),
                "run with sudo: `sudo relais doctor`",
            )
        }
        Err(e) => Finding::fail(
            CHECK,
            e.to_string(),
            "correct the file (the message names the line), then `sudo systemctl reload relais`",
        ),
    }
}

pub(super) fn ops_keys(config: &Config, service: Option<&Account>) -> Finding {
    const CHECK: &str = "ops_keys";
    let Some(path) = &config.fleet.ops_public_keys_file else {
        if config.sync.broker.is_some() {
            return Finding::warn(
                CHECK,
                "fleet.ops_public_keys_file not set: signed configuration and commands from \
                 central are refused",
                "provision the box (`relais provision BUNDLE` installs ops.pub), or set \
                 fleet.ops_public_keys_file to the ops public key file",
            );
        }
        return Finding::pass(CHECK, "not configured (offline: no remote configuration)");
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => {
            return Finding::fail(
                CHECK,
                format!("cannot read {}: {e}", path.display()),
                "provision the box (`relais provision BUNDLE` installs ops.pub), or correct \
                 fleet.ops_public_keys_file",
            );
        }
    };
    if let Some(finding) = unreadable_by_service(CHECK, path, &meta, service)
        .or_else(|| writable_by_service(CHECK, path, &meta, service))
    {
        return finding;
    }
    match crate::fleet::read_public_keys(path) {
        Ok(keys) => Finding::pass(
            CHECK,
            format!(
                "{}: {} key(s): {}",
                path.display(),
                keys.len(),
                keys.iter()
                    .map(|k| k.key_id().to_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Err(e) => Finding::fail(
            CHECK,
            e.to_string(),
            "replace it with the ops.pub from central ops (lines `relais-ed25519 <base64> \
             <key_id>`, as `relaisctl keygen` writes them)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn account(uid: u32) -> Account {
        Account {
            name: "relais".into(),
            uid,
            gid: uid,
            groups: Vec::new(),
        }
    }

    #[test]
    fn an_ops_key_file_the_service_user_owns_is_flagged_and_a_root_owned_one_is_not() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("ops.pub");
        std::fs::write(&path, "relais-ed25519 AAAA k1\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
        // As root, the file is given to a service-like account; as anyone else, it is theirs.
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&path, Some(4242), Some(4242))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{e}"));
        // The file's owner stands for the service user: it could rewrite its own trust anchor.
        let owner = account(meta.uid());
        let flagged = writable_by_service("ops_keys", &path, &meta, Some(&owner));
        assert!(
            flagged.is_some_and(|f| f.detail.contains("can rewrite")),
            "a trust anchor its service user owns is flagged"
        );
        // Another account that can only read it (and not write its directory) passes.
        let other = account(meta.uid().wrapping_add(1));
        assert!(writable_by_service("ops_keys", &path, &meta, Some(&other)).is_none());
    }
}
