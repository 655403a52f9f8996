//! `relais logs [--since …] [--until …] [-p …] [-n N] [--follow]`: the agent's journal with
//! secrets taken out (`relais::redact`), for a technician to read or paste into a ticket.
//!
//! It runs `journalctl --unit=relais --output=cat` with the filters given. Test seam: the
//! program run is `$RELAIS_JOURNALCTL` when set (a script standing in for journalctl; no more
//! power than `PATH` already gives whoever runs the command).

use relais::config::{Config, ConfigError, ConfigSource};
use relais::redact::Redactor;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

/// Entries shown when neither `--lines` nor `--since` narrows them: a day of a busy agent is
/// thousands of lines, and the newest are the ones a technician needs.
const DEFAULT_LINES: u32 = 200;

/// What journalctl prints instead of entries (not with every version or output mode).
const NO_ENTRIES: &str = "-- No entries --";

#[derive(clap::Args)]
pub struct LogsArgs {
    /// Entries from this time on, in journalctl's syntax ("1 hour ago", "today",
    /// "2025-03-01 09:00")
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Entries up to this time, in the same syntax
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// The newest N entries [default: 200 unless --since is given]
    #[arg(short = 'n', long, value_name = "N")]
    pub lines: Option<u32>,
    /// Keep printing new entries as the agent logs them (Ctrl-C to stop)
    #[arg(short, long)]
    pub follow: bool,
    /// Only entries this severe or worse (err, warning, info, debug)
    #[arg(short, long, value_name = "LEVEL")]
    pub priority: Option<String>,
    /// The systemd unit the agent runs as
    #[arg(long, default_value = "relais")]
    pub unit: String,
}

/// Kills journalctl if we stop reading early (`relais logs -f | head`, an error), so a
/// follower never outlives the command.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn journalctl_args(args: &LogsArgs) -> Vec<String> {
    // `--name=value` throughout: a value starting with '-' stays a value.
    let mut out = vec![
        format!("--unit={}", args.unit),
        "--output=cat".to_owned(),
        "--no-pager".to_owned(),
    ];
    if let Some(since) = &args.since {
        out.push(format!("--since={since}"));
    }
    if let Some(until) = &args.until {
        out.push(format!("--until={until}"));
    }
    if let Some(priority) = &args.priority {
        out.push(format!("--priority={priority}"));
    }
    let lines = match (args.lines, &args.since) {
        (Some(n), _) => Some(n),
        (None, None) if !args.follow => Some(DEFAULT_LINES),
        (None, _) => None,
    };
    if let Some(n) = lines {
        out.push(format!("--lines={n}"));
    }
    if args.follow {
        out.push("--follow".to_owned());
    }
    out
}

/// The secrets of this box known by value: its API tokens by name and the broker password.
/// Unreadable files only leave those to the patterns; the technician is told once.
fn known_secrets(config: &Config) -> Vec<(String, String)> {
    let mut secrets = Vec::new();
    let mut unreadable = Vec::new();
    if let Some(path) = &config.api.token_file {
        match std::fs::read_to_string(path) {
            Ok(text) => secrets.extend(relais::api::token_secrets(&text)),
            Err(e) => unreadable.push(format!("{} ({e})", path.display())),
        }
    }
    if let Some(path) = &config.sync.password_file {
        match std::fs::read_to_string(path) {
            Ok(text) => secrets.push(("broker password".to_owned(), text.trim().to_owned())),
            Err(e) => unreadable.push(format!("{} ({e})", path.display())),
        }
    }
    if !unreadable.is_empty() {
        eprintln!(
            "relais logs: note: cannot read {}: those secrets are hidden by pattern only \
             (run as root to hide them wherever they appear)",
            unreadable.join(", ")
        );
    }
    secrets
}

/// Exit status: 0 printed (or nothing to print, said on stderr), 1 journalctl is missing or
/// failed. `config`: a config that does not load still gets its logs read, by pattern only.
pub fn run(
    args: &LogsArgs,
    config: Result<(Config, ConfigSource), ConfigError>,
) -> anyhow::Result<u8> {
    let secrets = match &config {
        Ok((config, _)) => known_secrets(config),
        Err(e) => {
            eprintln!(
                "relais logs: note: the config does not load ({}), so this box's tokens are \
                 hidden by pattern only",
                e.to_string().lines().next().unwrap_or("")
            );
            Vec::new()
        }
    };
    let program = std::env::var_os("RELAIS_JOURNALCTL").unwrap_or_else(|| "journalctl".into());
    let spawned = Command::new(&program)
        .args(journalctl_args(args))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => Reaped(child),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "relais logs: {} not found: this system has no systemd journal to read. The \
                 agent logs to its standard error: run in a terminal (`relais run`), it prints \
                 there; under another supervisor, read that supervisor's log of it",
                program.to_string_lossy()
            );
            return Ok(1);
        }
        Err(e) => anyhow::bail!("cannot run {}: {e}", program.to_string_lossy()),
    };
    let (Some(stdout), Some(stderr)) = (child.0.stdout.take(), child.0.stderr.take()) else {
        anyhow::bail!("journalctl's output could not be read");
    };
    // journalctl's own messages (permission hints, bad --since) are shown as they come, and
    // kept to explain a failure.
    let errors = std::thread::spawn(move || {
        let mut kept = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            kept.push(line);
        }
        kept
    });
    let mut redactor = Redactor::new(secrets);
    let mut reader = BufReader::new(stdout);
    let mut out = std::io::stdout().lock();
    let mut printed: u64 = 0;
    let mut raw = Vec::new();
    loop {
        raw.clear();
        if reader.read_until(b'\n', &mut raw)? == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&raw);
        let text = text.trim_end_matches(['\n', '\r']);
        if text == NO_ENTRIES {
            continue;
        }
        if let Some(line) = redactor.line(text) {
            writeln!(out, "{line}")?;
            // One line at a time: `--follow` is read as it happens.
            out.flush()?;
            printed = printed.saturating_add(1);
        }
    }
    let status = child.0.wait()?;
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        eprintln!(
            "relais logs: {} failed ({status}){}",
            program.to_string_lossy(),
            if errors.is_empty() {
                String::new()
            } else {
                ": see its message above".to_owned()
            }
        );
        return Ok(1);
    }
    if printed == 0 {
        eprintln!(
            "relais logs: no journal entries for unit {:?}{}. Either the agent does not run \
             under systemd on this box (`systemctl status {}`; a `relais run` in a terminal \
             logs there), or this account may not read the system journal (run with sudo, or \
             join the systemd-journal group)",
            args.unit,
            if args.since.is_some() || args.until.is_some() || args.priority.is_some() {
                " matching these filters"
            } else {
                ""
            },
            args.unit
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> LogsArgs {
        LogsArgs {
            since: None,
            until: None,
            lines: None,
            follow: false,
            priority: None,
            unit: "relais".into(),
        }
    }

    #[test]
    fn without_filters_the_newest_200_lines_are_asked_for_and_since_lifts_that() {
        assert_eq!(
            journalctl_args(&args()),
            ["--unit=relais", "--output=cat", "--no-pager", "--lines=200"]
        );
        let since = LogsArgs {
            since: Some("-1h".into()),
            follow: true,
            ..args()
        };
        assert_eq!(
            journalctl_args(&since),
            [
                "--unit=relais",
                "--output=cat",
                "--no-pager",
                "--since=-1h",
                "--follow"
            ]
        );
    }
}
