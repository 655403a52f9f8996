//! `relais doctor`: check a box and explain every problem with its fix, whether or not the
//! agent is running. The list of checks, their thresholds and fixes is docs/operations.md
//! ("Doctor"); each check here is one [`Finding`].
//!
//! The doctor never changes the box: databases are opened read-only and the data-dir lock is
//! not taken; the broker is reached with the agent's own settings under another client id, so
//! a running agent's session is not taken over.

mod agent;
pub use agent::{BoxActionError, box_action};
mod broker;
mod devices;
mod files;
mod ownership;
mod secrets;
pub mod unit;

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
    run_as(config_path, None)
}

/// [`run`], judging permissions for the account `user` (`None`: the unit's `User=`, else
/// [`SERVICE_USER`]).
pub fn run_as(config_path: Option<&Path>, user: Option<&str>) -> Report {
    let mut checks = Vec::new();
    let Some((config, file)) = config_check(config_path, &mut checks) else {
        return Report::new(checks);
    };
    let unit = unit::inspect();
    let name = user
        .map(str::to_owned)
        .or_else(|| unit.as_ref().and_then(|u| u.user.clone()))
        .unwrap_or_else(|| SERVICE_USER.to_owned());
    let service_user = crate::provision::users::lookup(&name);
    if service_user.is_none() && (user.is_some() || name != SERVICE_USER) {
        checks.push(Finding::fail(
            "service_user",
            format!("the agent is to run as {name}, but there is no such account on this box"),
            format!(
                "create it (`sudo systemd-sysusers`, which the package runs) or name the right \
                 one; the checks below judge permissions as {}",
                if users_is_root() { "root" } else { "this user" }
            ),
        ));
    }
    let service_user = service_user.as_ref();
    checks.push(unit::finding(unit.as_ref(), file.as_deref()));
    checks.push(files::data_dir(&config, service_user));
    checks.push(ownership::contents(&config, service_user));
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
    checks.push(secrets::card_key(&config, service_user));
    checks.push(secrets::api_tokens(&config, service_user));
    checks.push(secrets::ops_keys(&config, service_user));
    checks.extend(secrets::broker_ca(&config, service_user));
    checks.push(agent::running(&config));
    Report::new(checks)
}

fn users_is_root() -> bool {
    crate::provision::users::effective_uid() == 0
}

/// The config check; the effective config (file + the stored remote layer, as the agent
/// would start with) and the file it came from, when it passes.
fn config_check(
    path: Option<&Path>,
    checks: &mut Vec<Finding>,
) -> Option<(Config, Option<std::path::PathBuf>)> {
    let (config, source) = match Config::load(path) {
        Ok(loaded) => loaded,
        Err(crate::config::ConfigError::Unreadable { path, cause })
            if cause.kind() == std::io::ErrorKind::PermissionDenied && !users_is_root() =>
        {
            checks.push(Finding::fail(
                "config",
                format!("cannot read {} as this user: {cause}", path.display()),
                "run with sudo: `sudo relais doctor` (the config is readable by root and the \
                 relais group only)",
            ));
            return None;
        }
        Err(crate::config::ConfigError::Missing { path }) => {
            checks.push(Finding::fail(
                "config",
                format!("{} does not exist", path.display()),
                format!(
                    "pass the config the agent uses (`relais --config FILE doctor`); if this box \
                     is new, it is not provisioned: `sudo relais provision BUNDLE` creates {}",
                    crate::config::DEFAULT_CONFIG_PATH
                ),
            ));
            return None;
        }
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
                    "this box is not provisioned: no config file at {} (built-in defaults: agent \
                     id {}, offline, API on loopback)",
                    crate::config::DEFAULT_CONFIG_PATH,
                    config.agent.id
                ),
                PROVISION_FIX,
            ));
            return Some((config, None));
        }
        ConfigSource::File(file) => file,
    };
    let checked = Some(file.clone());
    let remote = crate::agent::stored_remote_layer(&config);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        // Just loaded it: a race with an editor. Judge what was loaded.
        Err(_) => {
            checks.push(Finding::pass("config", format!("{} valid", file.display())));
            return Some((config, checked));
        }
    };
    // The package's own relais.toml leaves agent.id to `relais provision`: a valid file
    // without it is a box nobody provisioned yet.
    if !names_agent_id(&text) {
        checks.push(Finding::warn(
            "config",
            format!(
                "this box is not provisioned: {} sets no agent.id (the agent would run offline \
                 as {})",
                file.display(),
                config.agent.id
            ),
            PROVISION_FIX,
        ));
        return Some((config, checked));
    }
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
            Some((layered.config, checked))
        }
        (Ok(layered), None) => {
            checks.push(Finding::pass(
                "config",
                format!("{} valid (no remote config)", file.display()),
            ));
            Some((layered.config, checked))
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
            Some((config, checked))
        }
    }
}

const PROVISION_FIX: &str = "provision it with the bundle central ops prepared for it: `sudo \
     relais provision BUNDLE` (/usr/share/doc/relais/provisioning.md)";

/// Whether the config text sets `[agent] id`.
fn names_agent_id(text: &str) -> bool {
    toml::from_str::<toml::Table>(text).is_ok_and(|table| {
        table
            .get("agent")
            .and_then(|agent| agent.get("id"))
            .is_some()
    })
}

/// A command's standard output when it exits 0 within `timeout`; `None` when it is missing,
/// fails or hangs (the doctor must answer on a box without systemd, or with a wedged one).
pub(crate) fn command_output(
    program: &str,
    args: &[&str],
    timeout: std::time::Duration,
) -> Option<String> {
    use std::io::Read;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(_)) => return None,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut out = String::new();
    child.stdout.take()?.read_to_string(&mut out).ok()?;
    Some(out)
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
