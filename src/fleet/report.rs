//! The agent's report on `cfg/reported` (QoS 1, retained): what it did with the newest config
//! document it received, and what is in effect.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigStatus {
    /// The document is in effect.
    Applied,
    /// The document was refused (signature, audience, expiry, downgrade, validation); the
    /// previous configuration stays in effect.
    Rejected,
    /// The document was applied, failed its health check, and the previous configuration was
    /// restored.
    RolledBack,
    /// Received and valid, not in effect yet (e.g. waiting for a restart).
    Pending,
}

impl ConfigStatus {
    pub fn name(self) -> &'static str {
        match self {
            ConfigStatus::Applied => "applied",
            ConfigStatus::Rejected => "rejected",
            ConfigStatus::RolledBack => "rolled_back",
            ConfigStatus::Pending => "pending",
        }
    }

    /// Whether the agent is done with the document (`pending` is not).
    pub fn is_final(self) -> bool {
        !matches!(self, ConfigStatus::Pending)
    }

    /// Whether ops must look at this agent.
    pub fn is_failure(self) -> bool {
        matches!(self, ConfigStatus::Rejected | ConfigStatus::RolledBack)
    }
}

/// Open: central must ignore fields it does not know.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReport {
    pub v: u32,
    /// The reporting agent (`STORE/AGENT`).
    pub agent: String,
    /// `version` of the document this report is about.
    pub version: u64,
    pub status: ConfigStatus,
    /// Why it was rejected or rolled back, one line each, naming key, value and fix.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Version of the remote document in effect after this report (0: local file only). Equals
    /// `version` when `applied`; the previous one when `rejected` or `rolled_back`.
    #[serde(default)]
    pub effective_version: u64,
    /// sha256 (hex) of the effective configuration rendered as TOML, as in `state.birth.config`.
    pub effective_hash: String,
    /// Where each effective setting came from: dotted key → `default`, `file` or `remote vN`
    /// (`config::layers::Source` as text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_of_keys: Option<BTreeMap<String, String>>,
    /// RFC 3339, UTC: when the agent built this report.
    pub at: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

    use super::*;

    #[test]
    fn a_config_report_has_the_documented_shape_and_ignores_unknown_fields() {
        let json = r#"{"v":1,"agent":"store-0042/till-1","version":8,"status":"rolled_back",
            "reasons":["health check failed after apply: api did not answer"],
            "effective_version":7,"effective_hash":"ab12","at":"2026-01-01T00:00:00Z",
            "some_future_field":true}"#;
        let report: ConfigReport = serde_json::from_str(json).unwrap();
        assert_eq!(report.status, ConfigStatus::RolledBack);
        assert!(report.status.is_failure() && report.status.is_final());
        assert_eq!(report.effective_version, 7);
        let back: ConfigReport =
            serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        assert_eq!(back, report);
    }
}
