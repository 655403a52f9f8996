//! Remote commands (the body of a command document, on `cmd/req`) and the agent's answer (on
//! `cmd/res`).

use super::FleetError;
use crate::replica::Stream;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Longest `set_log_level` override: a forgotten debug level must not fill a store's disk.
const MAX_LOG_LEVEL_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
const MAX_URL_BYTES: usize = 2048;

/// One command, as JSON tagged by `command`. Strict: a field this agent does not know is
/// refused, so an operator never believes an option was applied when it was ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Refetch one replica stream's snapshot: `{"command":"resync","stream":"prices"}`.
    Resync { stream: Stream },
    /// Run the self-test and answer with its report in `data`: `{"command":"self_test"}`.
    /// (Written with braces: serde ignores unknown fields on unit variants of a tagged enum,
    /// and `{"command":"self_test","force":true}` must be refused, not half obeyed.)
    SelfTest {},
    /// Reload firmware profiles from disk: `{"command":"reload_profiles"}`.
    ReloadProfiles {},
    /// Change the log level for a while, then return to the configured one:
    /// `{"command":"set_log_level","level":"debug","expires_in":"30m"}`. `expires_in` is a
    /// duration (`90s`, `30m`, `2h`), at most 24 h.
    SetLogLevel {
        level: LogLevel,
        #[serde(
            serialize_with = "serialize_duration",
            deserialize_with = "deserialize_log_lifetime"
        )]
        expires_in: Duration,
    },
    /// Collect diagnostics (logs, health, config with secrets removed) and PUT them to `url`
    /// (https only): `{"command":"upload_diagnostics","url":"https://…"}`.
    UploadDiagnostics { url: HttpsUrl },
}

impl Command {
    /// The `command` tag: `resync`, `self_test`, …
    pub fn name(&self) -> &'static str {
        match self {
            Command::Resync { .. } => "resync",
            Command::SelfTest {} => "self_test",
            Command::ReloadProfiles {} => "reload_profiles",
            Command::SetLogLevel { .. } => "set_log_level",
            Command::UploadDiagnostics { .. } => "upload_diagnostics",
        }
    }

    pub fn from_json(text: &str) -> Result<Command, FleetError> {
        serde_json::from_str(text).map_err(|e| FleetError::BadCommand(e.to_string()))
    }

    pub fn to_json(&self) -> Result<String, FleetError> {
        serde_json::to_string(self).map_err(|e| FleetError::BadCommand(e.to_string()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn serialize_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

fn deserialize_log_lifetime<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    let duration = humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "expires_in {text:?}: {e}; write a duration like \"30m\" or \"2h\""
        ))
    })?;
    if duration.is_zero() || duration > MAX_LOG_LEVEL_LIFETIME {
        return Err(serde::de::Error::custom(format!(
            "expires_in {text:?}: must be more than 0 and at most 24h"
        )));
    }
    Ok(duration)
}

/// An `https://` URL with a host and no credentials in it. Plain http would hand a store's
/// diagnostics to anyone on the path; credentials in the URL end up in logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpsUrl(String);

impl HttpsUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for HttpsUrl {
    type Err = FleetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| FleetError::BadCommand(format!("url {s:?}: {why}"));
        if s.len() > MAX_URL_BYTES {
            return Err(bad(&format!("longer than {MAX_URL_BYTES} bytes")));
        }
        let url = reqwest::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "https" {
            return Err(bad("only https:// is allowed"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "credentials in the URL are not allowed; use a pre-signed URL",
            ));
        }
        Ok(HttpsUrl(s.to_string()))
    }
}

impl TryFrom<String> for HttpsUrl {
    type Error = FleetError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<HttpsUrl> for String {
    fn from(u: HttpsUrl) -> String {
        u.0
    }
}

impl fmt::Display for HttpsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// Done.
    Ok,
    /// Accepted and attempted, but it failed (e.g. the upload server answered 500).
    Error,
    /// Not attempted: the document did not verify, was expired or replayed, or the command is
    /// unknown to this agent.
    Rejected,
}

impl CommandStatus {
    pub fn name(self) -> &'static str {
        match self {
            CommandStatus::Ok => "ok",
            CommandStatus::Error => "error",
            CommandStatus::Rejected => "rejected",
        }
    }
}

/// The agent's answer on `cmd/res` (QoS 1, not retained). Open: central must ignore fields it
/// does not know.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    pub v: u32,
    /// The answering agent (`STORE/AGENT`).
    pub agent: String,
    /// The command document's `version` (its id); 0 when the document was too broken to read one.
    pub version: u64,
    /// The command's name, when the body could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    pub status: CommandStatus,
    /// For a person: what happened, or why not.
    pub message: String,
    /// Command-specific output (e.g. the self-test report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// RFC 3339, UTC: when the answer was built.
    pub at: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

    use super::*;

    #[test]
    fn commands_have_the_documented_json_shapes() {
        let cases = [
            (
                r#"{"command":"resync","stream":"stock"}"#,
                Command::Resync {
                    stream: Stream::Stock,
                },
            ),
            (r#"{"command":"self_test"}"#, Command::SelfTest {}),
            (
                r#"{"command":"reload_profiles"}"#,
                Command::ReloadProfiles {},
            ),
            (
                r#"{"command":"set_log_level","level":"debug","expires_in":"30m"}"#,
                Command::SetLogLevel {
                    level: LogLevel::Debug,
                    expires_in: Duration::from_secs(1800),
                },
            ),
            (
                r#"{"command":"upload_diagnostics","url":"https://diag.example.com/u/1"}"#,
                Command::UploadDiagnostics {
                    url: "https://diag.example.com/u/1".parse().unwrap(),
                },
            ),
        ];
        for (json, command) in cases {
            assert_eq!(Command::from_json(json).unwrap(), command, "{json}");
            assert_eq!(command.to_json().unwrap(), json);
        }
    }

    #[test]
    fn bad_commands_are_refused_with_the_reason() {
        for (json, why) in [
            (r#"{"command":"reboot"}"#, "unknown variant"),
            (r#"{"command":"self_test","force":true}"#, "unknown field"),
            (
                r#"{"command":"resync","stream":"everything"}"#,
                "unknown variant",
            ),
            (
                r#"{"command":"set_log_level","level":"debug","expires_in":"25h"}"#,
                "at most 24h",
            ),
            (
                r#"{"command":"set_log_level","level":"debug","expires_in":"0s"}"#,
                "more than 0",
            ),
            (
                r#"{"command":"set_log_level","level":"loud","expires_in":"1h"}"#,
                "unknown variant",
            ),
            (
                r#"{"command":"upload_diagnostics","url":"http://diag.example.com/"}"#,
                "only https",
            ),
            (
                r#"{"command":"upload_diagnostics","url":"https://u:p@diag.example.com/"}"#,
                "credentials",
            ),
            (
                r#"{"command":"upload_diagnostics","url":"not a url"}"#,
                "url",
            ),
        ] {
            let err = Command::from_json(json).unwrap_err().to_string();
            assert!(err.contains(why), "{json}: {err}");
        }
    }
}
