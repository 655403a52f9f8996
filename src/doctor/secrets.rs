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
                 one `NAME TOKEN` per line (`openssl rand -base64 32`), mode 0600, owned by the \
                 service user",
            );
        }
        Err(e) => {
            return Finding::warn(
                CHECK,
                format!("cannot inspect {}: {e}", path.display()),
                "run the doctor as root",
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
                "run the doctor as root",
            )
        }
        Err(e) => Finding::fail(
            CHECK,
            e.to_string(),
            "correct the file (the message names the line), then `systemctl reload relais`",
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
    if let Some(finding) = unreadable_by_service(CHECK, path, &meta, service) {
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
