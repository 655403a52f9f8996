//! Central-side tools behind `relaisctl`: what an integrator starts from, and what makes the
//! whole loop testable (snapshot build, delta publish, reference ingest, fleet status).

pub mod facts;
pub mod fleet;
pub mod ingest;
pub mod ledger;
pub mod ops;
pub mod publish;
pub mod simulate;
pub mod sink;
pub mod snapshot;

use crate::config::BrokerUrl;
use rumqttc::v5::MqttOptions;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CentralError {
    #[error("TLS setup failed: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("broker: {0}. Check --broker, credentials and that the broker runs")]
    Broker(String),
    #[error("event sink {path}: {source}")]
    Sink {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("PostgreSQL sink {sink}: {reason}")]
    Postgres { sink: String, reason: String },
    #[error("{path} line {line}: {reason}")]
    BadLine {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error("{0}")]
    Usage(String),
}

/// How a central tool reaches the broker.
#[derive(Clone, Debug)]
pub struct BrokerLogin {
    pub broker: BrokerUrl,
    pub username: String,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// MQTT keep-alive: how long the broker waits on a silent client before dropping it.
    pub keep_alive: Duration,
}

impl BrokerLogin {
    pub fn options(&self, client_id: &str) -> Result<MqttOptions, CentralError> {
        let mut options = MqttOptions::new(client_id, self.broker.host.clone(), self.broker.port);
        options.set_keep_alive(self.keep_alive);
        // rumqttc keeps a slot per publish it may have in flight, 65,535 by default (~13 MB a
        // client): central's tools need far fewer, and a simulated fleet runs thousands.
        options.set_outgoing_inflight_upper_limit(1024);
        options.set_max_packet_size(Some(
            (crate::sync::wire::MAX_DOWNLINK_BYTES + (16 << 20)) as u32,
        ));
        let password = match &self.password_file {
            Some(path) => {
                crate::tls::read_password_file(path).map_err(|source| CentralError::Read {
                    path: path.clone(),
                    source,
                })?
            }
            None => String::new(),
        };
        options.set_credentials(self.username.clone(), password);
        if self.broker.tls {
            let identity = match (&self.client_cert_file, &self.client_key_file) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                _ => None,
            };
            let tls = crate::tls::client_config(self.ca_file.as_deref(), identity)?;
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::new(tls)),
            ));
        }
        Ok(options)
    }
}
