//! `relais doctor`: check a box and explain every problem with its fix, whether or not the
//! agent is running. The list of checks, their thresholds and fixes is docs/operations.md
//! ("Doctor"); each check here is one [`Finding`].
//!
//! The doctor never changes the box: databases are opened read-only and the data-dir lock is
//! not taken; the broker is reached with the agent's own settings under another client id, so
//! a running agent's session is not taken over.

mod agent;
mod broker;
mod devices;
mod files;
mod secrets;

use crate::config::{Config, ConfigSource};
use serde::Serialize;
use std::path::Path;

/// A finding's verdict; a report's is the worst of its findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    /// `relais doctor`'s exit status: 0 all pass, 1 a warning, 2 a failure.
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Pass => 0,
            Status::Warn => 1,
            Status::Fail => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check's result: what was seen, and what to do when it is not a pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: String,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl Finding {
    pub fn pass(check: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding {
            check: check.into(),
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn warn(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            check: check.into(),
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn fail(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            check: check.into(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub status: Status,
    pub checks: Vec<Finding>,
}

impl Report {
    fn new(checks: Vec<Finding>) -> Report {
        let status = checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Pass);
        Report { status, checks }
    }
}

/// The account the service runs as (`User=` in systemd/relais.service): permissions are
/// checked for it when it exists, whoever runs the doctor.
pub const SERVICE_USER: &str = "relais";

/// Run every check with the config at `config_path` (`None`: the default path, else the
/// built-in defaults, as `relais run` does).
pub fn run(config_path: Option<&Path>) -> Report {
    let mut checks = Vec::new();
    let Some(config) = config_check(config_path, &mut checks) else {
        return Report::new(checks);
    };
    let service_user = crate::provision::users::lookup(SERVICE_USER);
    let service_user = service_user.as_ref();
    checks.push(files::data_dir(&config, service_user));
    checks.extend(files::integrity(&config));
    checks.push(files::disk(&config));
    checks.push(files::clock(&config));
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => {
            let (link, limits, acl) = runtime.block_on(broker::check(&config));
            checks.push(link);
            checks.push(limits);
            checks.push(acl);
        }
        Err(e) => checks.push(Finding::fail(
            "broker",
            format!("cannot start an async runtime for the broker check: {e}"),
            "run the doctor again; if it persists, the box is out of memory or threads",
        )),
    }
    checks.push(devices::pcscd(&config));
    checks.extend(devices::serial(&config, service_user));
    checks.push(devices::profiles(&config));
    checks.push(files::replica(&config));
    checks.push(files::outbox(&config));
    checks.push(secrets::api_tokens(&config, service_user));
    checks.push(secrets::ops_keys(&config, service_user));
    checks.extend(secrets::broker_ca(&config, service_user));
    checks.push(agent::running(&config));
    Report::new(checks)
}

/// The config check; the effective config (file + the stored remote layer, as the agent
/// would start with) when it passes.
fn config_check(path: Option<&Path>, checks: &mut Vec<Finding>) -> Option<Config> {
    let (config, source) = match Config::load(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            checks.push(Finding::fail(
                "config",
                e.to_string(),
                "fix every problem listed (each names the key, the value and the fix) and run \
                 `relais config validate FILE`; the other checks need a valid config",
            ));
            return None;
        }
    };
    let file = match source {
        ConfigSource::BuiltInDefaults => {
            checks.push(Finding::warn(
                "config",
                format!(
                    "no config file at {}: built-in defaults (agent id {}, offline, API on \
                     loopback)",
                    crate::config::DEFAULT_CONFIG_PATH,
                    config.agent.id
                ),
                "provision this box: `relais provision BUNDLE` (docs/provisioning.md)",
            ));
            return Some(config);
        }
        ConfigSource::File(file) => file,
    };
    let remote = crate::agent::stored_remote_layer(&config);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        // Just loaded it: a race with an editor. Judge what was loaded.
        Err(_) => {
            checks.push(Finding::pass("config", format!("{} valid", file.display())));
            return Some(config);
        }
    };
    match (
        crate::config::layers::merge(&text, &file, remote.as_ref()),
        &remote,
    ) {
        (Ok(layered), Some(remote)) => {
            checks.push(Finding::pass(
                "config",
                format!(
                    "{} valid; central's remote config v{} in effect over it",
                    file.display(),
                    remote.version
                ),
            ));
            Some(layered.config)
        }
        (Ok(layered), None) => {
            checks.push(Finding::pass(
                "config",
                format!("{} valid (no remote config)", file.display()),
            ));
            Some(layered.config)
        }
        (Err(e), remote) => {
            checks.push(Finding::warn(
                "config",
                format!(
                    "{} valid, but the stored remote config{} does not apply over it: {e}",
                    file.display(),
                    remote
                        .as_ref()
                        .map(|r| format!(" v{}", r.version))
                        .unwrap_or_default()
                ),
                "central ops: push a corrected config with a higher version (`relaisctl config \
                 push`); the checks below use the file alone",
            ));
            Some(config)
        }
    }
}

/// `12 s`, `3 h 4 min`: ages for people.
pub(crate) fn age(seconds: f64) -> String {
    let whole = std::time::Duration::from_secs(seconds.max(0.0) as u64);
    humantime::format_duration(whole).to_string()
}

/// At most `max` characters of a message (SQLite can list thousands of damaged pages).
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}
