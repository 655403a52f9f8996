//! The systemd unit that starts the agent: which account it runs as, which config file it
//! gives the agent (`--config` on `ExecStart=` or `RELAIS_CONFIG` in `Environment=`) and what
//! else its environment changes. A doctor that checks another config than the one the
//! service uses would pass a box whose agent cannot start. Without systemd (a container, a
//! developer's machine) there is no unit to read and the check says so.

use super::Finding;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CHECK: &str = "unit";
pub const UNIT: &str = "relais.service";

/// What `sudo systemctl show relais.service` says, when systemd answers and the unit is loaded.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unit {
    pub user: Option<String>,
    /// The config file the agent is started with: `--config` on `ExecStart=`, else
    /// `RELAIS_CONFIG` (clap prefers the argument).
    pub config: Option<PathBuf>,
    /// `Environment=` assignments that change the agent's behaviour.
    pub relais_env: Vec<String>,
}

/// `None` when systemd does not answer or knows no such unit.
pub fn inspect() -> Option<Unit> {
    let text = super::command_output(
        "systemctl",
        &[
            "show",
            UNIT,
            "--no-pager",
            "-p",
            "LoadState",
            "-p",
            "User",
            "-p",
            "Environment",
            "-p",
            "ExecStart",
        ],
        Duration::from_secs(3),
    )?;
    parse_show(&text)
}

/// Parse `sudo systemctl show`'s `Key=value` lines.
pub fn parse_show(text: &str) -> Option<Unit> {
    let mut unit = Unit::default();
    let mut loaded = false;
    let mut env_config = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "LoadState" => loaded = value.trim() == "loaded",
            "User" if !value.trim().is_empty() => unit.user = Some(value.trim().to_owned()),
            "Environment" => {
                for assignment in value.split_whitespace() {
                    let assignment = assignment.trim_matches('"');
                    if let Some(path) = assignment.strip_prefix("RELAIS_CONFIG=") {
                        env_config = Some(PathBuf::from(path));
                    }
                    if assignment.starts_with("RELAIS_") {
                        unit.relais_env.push(assignment.to_owned());
                    }
                }
            }
            "ExecStart" => {
                // `{ path=/usr/bin/relais ; argv[]=/usr/bin/relais --config F run ; … }`
                let argv = value
                    .split(" ; ")
                    .find_map(|part| part.trim_start_matches("{ ").strip_prefix("argv[]="));
                if let Some(argv) = argv {
                    let words: Vec<&str> = argv.split_whitespace().collect();
                    for (i, word) in words.iter().enumerate() {
                        if let Some(path) = word.strip_prefix("--config=") {
                            unit.config = Some(PathBuf::from(path));
                        } else if *word == "--config"
                            && let Some(path) = words.get(i + 1)
                        {
                            unit.config = Some(PathBuf::from(path));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if unit.config.is_none() {
        unit.config = env_config;
    }
    loaded.then_some(unit)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The `unit` finding. `checked`: the config file this doctor loaded (`None`: defaults).
pub fn finding(unit: Option<&Unit>, checked: Option<&Path>) -> Finding {
    let Some(unit) = unit else {
        return Finding::pass(
            CHECK,
            format!(
                "no {UNIT} known to systemd here (systemd not running, or the package not \
                 installed): the agent's own environment was not checked"
            ),
        );
    };
    let user = unit.user.as_deref().unwrap_or("root");
    let env = if unit.relais_env.is_empty() {
        String::new()
    } else {
        format!("; environment {}", unit.relais_env.join(" "))
    };
    let started_with = unit
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CONFIG_PATH));
    let detail = format!("{UNIT} runs as {user} with {}{env}", started_with.display());
    let checked_same = checked.is_some_and(|c| same_file(c, &started_with));
    if !checked_same {
        return Finding::warn(
            CHECK,
            format!(
                "{detail}, but this doctor checked {}",
                checked
                    .map(|c| c.display().to_string())
                    .unwrap_or_else(|| "the built-in defaults".to_owned())
            ),
            format!(
                "check what the service uses: `sudo relais --config {} doctor`",
                started_with.display()
            ),
        );
    }
    Finding::pass(CHECK, detail)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_units_user_config_and_environment_are_read_from_systemctl_show() {
        let text = "LoadState=loaded\nUser=relais\nEnvironment=RELAIS_LOG=debug LANG=C\n\
                    ExecStart={ path=/usr/bin/relais ; argv[]=/usr/bin/relais --config /etc/relais/relais.toml run ; ignore_errors=no ; start_time=[n/a] }\n";
        let unit = parse_show(text).unwrap();
        assert_eq!(unit.user.as_deref(), Some("relais"));
        assert_eq!(
            unit.config.as_deref(),
            Some(Path::new("/etc/relais/relais.toml"))
        );
        assert_eq!(unit.relais_env, vec!["RELAIS_LOG=debug".to_owned()]);
        assert!(parse_show("LoadState=not-found\nUser=\n").is_none());
    }

    #[test]
    fn a_doctor_that_checked_another_config_than_the_units_says_so() {
        let unit = Unit {
            user: Some("relais".into()),
            config: Some("/etc/relais/other.toml".into()),
            relais_env: Vec::new(),
        };
        let f = finding(Some(&unit), Some(Path::new("/etc/relais/relais.toml")));
        assert_eq!(f.status, super::super::Status::Warn);
        assert!(
            f.fix
                .as_deref()
                .is_some_and(|fix| fix.contains("--config /etc/relais/other.toml")),
            "{f:?}"
        );
    }
}
