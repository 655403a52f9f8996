//! `relais identity`: who this box is, for the sticker on it and for central ops — agent id,
//! store, client certificate (subject, issuer, serial, expiry), pinned ops key ids and broker,
//! and a QR code of them ([docs/operations.md](../../docs/operations.md), "The box label").
//!
//! Everything shown is public: the certificate, never its key; ops key ids, never keys; the
//! broker address, never a password or token.

pub mod cert;
pub mod qr;

use crate::config::{Config, ConfigSource};
use cert::CertInfo;
use serde::Serialize;
use std::path::{Path, PathBuf};

pub use qr::QrError;

/// EX_CONFIG, as `relais provision` answers a refused bundle: the box needs configuring, and
/// running the command again will not help.
pub const EXIT_NOT_PROVISIONED: u8 = 78;

/// Version of the QR payload's layout ([`Identity::payload`]); a reader refuses another.
pub const PAYLOAD_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "this box is not provisioned: {reason}. Install its bundle from central ops with \
         `relais provision BUNDLE` (docs/provisioning.md), then run `relais identity` again"
    )]
    NotProvisioned { reason: String },
    #[error(transparent)]
    Qr(#[from] QrError),
    #[error("cannot write the label PNG {path}: {source}. Choose a writable path with --png")]
    WritePng {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl IdentityError {
    pub fn exit_code(&self) -> u8 {
        match self {
            IdentityError::NotProvisioned { .. } => EXIT_NOT_PROVISIONED,
            IdentityError::Qr(_) | IdentityError::WritePng { .. } => 1,
        }
    }
}

/// The client certificate as far as it could be read.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Certificate {
    Read {
        path: PathBuf,
        #[serde(flatten)]
        info: CertInfo,
        /// Whole days until `not_after`, negative once expired.
        days_left: i64,
        expired: bool,
        not_yet_valid: bool,
    },
    /// Configured but missing or unusable: the box was provisioned and then damaged.
    Problem { path: PathBuf, problem: String },
}

/// The pinned ops public keys (`fleet.ops_public_keys_file`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum OpsKeys {
    NotPinned,
    Pinned { path: PathBuf, key_ids: Vec<String> },
    Problem { path: PathBuf, problem: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    pub agent_id: String,
    pub store: String,
    pub broker: Option<String>,
    pub config: PathBuf,
    pub certificate: Certificate,
    pub ops_keys: OpsKeys,
}

/// The QR code's text: compact JSON, keys in this order, absent values left out. Documented
/// in docs/operations.md; central ops scan it to match a box to its fleet record.
#[derive(Serialize)]
struct Payload<'a> {
    v: u8,
    agent: &'a str,
    store: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    serial: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_after: Option<String>,
    ops_keys: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    broker: Option<&'a str>,
}

const SECONDS_PER_DAY: i64 = 86_400;

/// RFC 3339 in UTC, to the second (`2027-03-01T12:00:00Z`).
pub fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0).map_or_else(
        || format!("@{unix}"),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

impl Identity {
    /// Read the identity the config points at. A box is provisioned when it has a config file
    /// naming a client certificate (what `relais provision` installs); a certificate or key
    /// file that is missing after that is shown as a problem, not as unprovisioned.
    pub fn read(
        config: &Config,
        source: &ConfigSource,
        now_unix: i64,
    ) -> Result<Identity, IdentityError> {
        let config_path = match source {
            ConfigSource::File(path) => path.clone(),
            ConfigSource::BuiltInDefaults => {
                return Err(IdentityError::NotProvisioned {
                    reason: format!(
                        "there is no config file ({} does not exist)",
                        crate::config::DEFAULT_CONFIG_PATH
                    ),
                });
            }
        };
        let Some(cert_path) = &config.sync.client_cert_file else {
            return Err(IdentityError::NotProvisioned {
                reason: format!(
                    "{} names no client certificate (sync.client_cert_file)",
                    config_path.display()
                ),
            });
        };
        Ok(Identity {
            agent_id: config.agent.id.to_string(),
            store: config.agent.id.store.clone(),
            broker: config.sync.broker.as_ref().map(ToString::to_string),
            config: config_path,
            certificate: read_certificate(cert_path, now_unix),
            ops_keys: read_ops_keys(config.fleet.ops_public_keys_file.as_deref()),
        })
    }

    /// The QR code's text ([`PAYLOAD_VERSION`] 1).
    pub fn payload(&self) -> String {
        let cert = match &self.certificate {
            Certificate::Read { info, .. } => Some(info),
            Certificate::Problem { .. } => None,
        };
        let ops_keys = match &self.ops_keys {
            OpsKeys::Pinned { key_ids, .. } => key_ids.iter().map(String::as_str).collect(),
            OpsKeys::NotPinned | OpsKeys::Problem { .. } => Vec::new(),
        };
        let payload = Payload {
            v: PAYLOAD_VERSION,
            agent: &self.agent_id,
            store: &self.store,
            subject: cert.map(|c| c.subject.as_str()),
            issuer: cert.map(|c| c.issuer.as_str()),
            serial: cert.map(|c| c.serial.as_str()),
            not_after: cert.map(|c| rfc3339(c.not_after)),
            ops_keys,
            broker: self.broker.as_deref(),
        };
        // Plain strings, numbers and lists: serialising cannot fail.
        serde_json::to_string(&payload).unwrap_or_default()
    }

    /// The PNG of the payload's QR code, written atomically (a half-written label is never
    /// left at `path`).
    pub fn write_png(&self, path: &Path) -> Result<(), IdentityError> {
        let bytes = qr::png(&qr::encode(&self.payload())?)?;
        crate::storage::write_file_atomically(path, &bytes, 0o644).map_err(|source| {
            IdentityError::WritePng {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// The payload's QR code for a terminal.
    pub fn terminal_qr(&self) -> Result<String, IdentityError> {
        Ok(qr::terminal(&qr::encode(&self.payload())?))
    }
}

fn read_certificate(path: &Path, now_unix: i64) -> Certificate {
    let problem = |problem: String| Certificate::Problem {
        path: path.to_path_buf(),
        problem,
    };
    let pem = match std::fs::read(path) {
        Ok(pem) => pem,
        Err(e) => return problem(format!("cannot read it: {e}")),
    };
    match cert::parse_pem(&pem) {
        Ok(info) => {
            let days_left = info
                .not_after
                .checked_sub(now_unix)
                .map_or(i64::MIN, |s| s.div_euclid(SECONDS_PER_DAY));
            Certificate::Read {
                path: path.to_path_buf(),
                expired: info.not_after <= now_unix,
                not_yet_valid: now_unix < info.not_before,
                days_left,
                info,
            }
        }
        Err(e) => problem(format!("the file is {e}")),
    }
}

fn read_ops_keys(path: Option<&Path>) -> OpsKeys {
    let Some(path) = path else {
        return OpsKeys::NotPinned;
    };
    match crate::fleet::read_public_keys(path) {
        Ok(keys) => OpsKeys::Pinned {
            path: path.to_path_buf(),
            key_ids: keys.iter().map(|k| k.key_id().to_owned()).collect(),
        },
        Err(e) => OpsKeys::Problem {
            path: path.to_path_buf(),
            problem: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn identity(certificate: Certificate) -> Identity {
        Identity {
            agent_id: "store-0042/till-1".into(),
            store: "store-0042".into(),
            broker: Some("mqtts://broker.example.com:8883".into()),
            config: "/etc/relais/relais.toml".into(),
            certificate,
            ops_keys: OpsKeys::Pinned {
                path: "/etc/relais/ops.pub".into(),
                key_ids: vec!["k1".into(), "k2".into()],
            },
        }
    }

    #[test]
    fn the_payload_is_compact_json_with_the_documented_keys_in_order() {
        let id = identity(Certificate::Read {
            path: "/etc/relais/client.pem".into(),
            info: CertInfo {
                subject: "CN=store-0042/till-1".into(),
                issuer: "CN=Relais fleet CA".into(),
                common_name: Some("store-0042/till-1".into()),
                serial: "8f0102".into(),
                not_before: 0,
                not_after: 1_803_902_400,
            },
            days_left: 10,
            expired: false,
            not_yet_valid: false,
        });
        assert_eq!(
            id.payload(),
            r#"{"v":1,"agent":"store-0042/till-1","store":"store-0042","subject":"CN=store-0042/till-1","issuer":"CN=Relais fleet CA","serial":"8f0102","not_after":"2027-03-01T12:00:00Z","ops_keys":["k1","k2"],"broker":"mqtts://broker.example.com:8883"}"#
        );
    }

    #[test]
    fn a_missing_certificate_leaves_its_fields_out_of_the_payload() {
        let id = identity(Certificate::Problem {
            path: "/etc/relais/client.pem".into(),
            problem: "cannot read it".into(),
        });
        let payload: serde_json::Value = serde_json::from_str(&id.payload()).unwrap();
        assert!(payload.get("subject").is_none());
        assert!(payload.get("not_after").is_none());
        assert_eq!(payload["agent"], "store-0042/till-1");
    }

    #[test]
    fn days_left_count_down_to_zero_and_below_once_expired() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let path = dir.path().join("client.pem");
        std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
        let not_after = 1_893_456_000; // 2030-01-01T00:00:00Z
        let at = |now| match read_certificate(&path, now) {
            Certificate::Read {
                days_left, expired, ..
            } => (days_left, expired),
            Certificate::Problem { problem, .. } => panic!("{problem}"),
        };
        assert_eq!(at(not_after - 3 * SECONDS_PER_DAY), (3, false));
        assert_eq!(at(not_after - 1), (0, false));
        assert_eq!(at(not_after), (0, true));
        assert_eq!(at(not_after + 1), (-1, true));
        assert!(matches!(
            read_certificate(&dir.path().join("absent.pem"), 0),
            Certificate::Problem { .. }
        ));
    }
}
