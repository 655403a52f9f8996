//! The parts of a running agent that configuration drives, and the **one path** that applies a
//! configuration to them: [`Running::apply`] starts everything at startup (from nothing) and, on
//! a reload (SIGHUP, a remote document from central), compares the new config with the one in
//! effect and restarts only what changed. Storage — the outbox writer, the replica applier, the
//! reader pool, the data directory lock — is opened once before and is never touched here, so a
//! reload or a replayed remote document cannot tear it down.

use crate::api::{ApiTokens, BrowserPolicy, Gate, GateCell, TokenFileError};
use crate::config::Config;
use crate::config::live::{ConfigInEffect, Tunables};
use crate::devices::EventSink;
use crate::devices::runtime::DeviceThreads;
use crate::logging::LogControl;
use crate::outbox::OutboxHandle;
use crate::reads::ReadContext;
use crate::replica::apply::ApplierHandle;
use crate::sync::SyncShared;
use std::sync::Arc;

use super::DataPaths;

/// Handles that live as long as the agent and that components are started with.
pub struct Parts {
    pub paths: DataPaths,
    pub outbox: OutboxHandle,
    pub applier: ApplierHandle,
    pub reads: Arc<ReadContext>,
    pub sync: Arc<SyncShared>,
    /// Device threads send here; the core's consumer outlives any restart of the devices.
    pub sink: EventSink,
    pub gate: Arc<GateCell>,
    pub tunables: Arc<Tunables>,
    pub log: LogControl,
    /// Remote documents and commands received by the MQTT session go to the control loop here.
    pub fleet_inbox: tokio::sync::mpsc::Sender<crate::sync::FleetInbound>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Tokens(#[from] TokenFileError),
}

/// What an apply changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Components restarted or settings updated in place.
    pub changed: Vec<&'static str>,
    /// Settings that only take effect at the next start (storage, listener); the values in
    /// effect stay the old ones until then.
    pub deferred: Vec<&'static str>,
}

/// The sync tasks of one `[sync]` configuration.
pub struct SyncRun {
    pub stop: tokio::sync::watch::Sender<bool>,
    pub session: tokio::task::JoinHandle<()>,
    pub downlink_task: tokio::task::JoinHandle<()>,
    pub downlink: crate::sync::downlink::DownlinkHandle,
}

pub struct Running {
    parts: Parts,
    /// `None` until the first apply.
    config: Option<Config>,
    profiles_fingerprint: String,
    devices: Option<DeviceThreads>,
    sync: Option<SyncRun>,
}

fn gate_of(config: &Config) -> Result<Gate, TokenFileError> {
    let tokens = match &config.api.token_file {
        Some(path) => Some(ApiTokens::load(path)?),
        None => None,
    };
    match &tokens {
        Some(t) => tracing::info!(tokens = t.len(), "API bearer tokens loaded"),
        None => tracing::warn!(listen = %config.api.listen,
            "no api.token_file: the API accepts any local process without a token (loopback only)"),
    }
    Ok(Gate::new(
        tokens,
        config.api.rate_limit_per_client,
        config.api.rate_limit_burst,
        BrowserPolicy::new(&config.api.allowed_hosts, &config.api.allowed_origins),
    ))
}

impl Running {
    pub fn new(parts: Parts) -> Running {
        Running {
            parts,
            config: None,
            profiles_fingerprint: String::new(),
            devices: None,
            sync: None,
        }
    }

    pub fn config(&self) -> Option<&Config> {
        self.config.as_ref()
    }

    pub fn parts(&self) -> &Parts {
        &self.parts
    }

    /// Bring the running agent to `new`. Everything that can fail is prepared before anything
    /// changes: an error leaves the agent exactly as it was.
    pub async fn apply(
        &mut self,
        mut new: Config,
        in_effect: ConfigInEffect,
    ) -> Result<Applied, ApplyError> {
        let mut applied = Applied::default();
        let old = self.config.take();
        // Prepare.
        let gate_changed = old.as_ref().is_none_or(|o| {
            o.api.token_file != new.api.token_file
                || o.api.rate_limit_per_client != new.api.rate_limit_per_client
                || o.api.rate_limit_burst != new.api.rate_limit_burst
        });
        // A token file is re-read on every reload, changed path or not: rotating a till's
        // token is an edit of the file followed by SIGHUP.
        let gate = match gate_of(&new) {
            Ok(gate) => gate,
            Err(e) => {
                self.config = old;
                return Err(e.into());
            }
        };
        let (profiles, profiles_from, profile_errors) =
            crate::devices::runtime::load_profiles(&new.devices);

        // Settings owned by storage or the listener keep their running values.
        if let Some(old) = &old {
            macro_rules! defer {
                ($($field:ident).+, $name:literal) => {
                    if old.$($field).+ != new.$($field).+ {
                        new.$($field).+ = old.$($field).+.clone();
                        applied.deferred.push($name);
                    }
                };
            }
            defer!(agent, "agent");
            defer!(api.listen, "api.listen");
            defer!(api.max_body_bytes, "api.max_body_bytes");
            defer!(api.max_connections, "api.max_connections");
            defer!(
                api.max_connections_per_client,
                "api.max_connections_per_client"
            );
            defer!(api.max_streams, "api.max_streams");
            defer!(api.header_read_timeout, "api.header_read_timeout");
            defer!(replica.readers, "replica.readers");
            defer!(outbox, "outbox");
            defer!(disk, "disk");
            defer!(customers, "customers");
            defer!(log.format, "log.format");
        }

        // Commit.
        self.parts.gate.replace(gate);
        if gate_changed {
            applied.changed.push("api auth and rate limits");
        }
        if old.as_ref().is_none_or(|o| {
            o.replica.stale_after != new.replica.stale_after || o.loyalty != new.loyalty
        }) {
            applied.changed.push("replica staleness and loyalty limits");
        }
        if old.as_ref().is_some_and(|o| o.scans != new.scans) {
            applied
                .changed
                .push("scan rules (scale-label layouts, loyalty-card patterns)");
        }
        self.parts.tunables.update(&new);
        self.parts.tunables.set_in_effect(in_effect);
        if let Some(o) = &old
            && o.log.level != new.log.level
        {
            match self.parts.log.set(&new.log.level) {
                Ok(()) => applied.changed.push("log level"),
                Err(e) => tracing::warn!(error = %e, "log level not changed"),
            }
        }

        let devices_changed = old
            .as_ref()
            .is_none_or(|o| o.devices.to_toml() != new.devices.to_toml())
            || profiles.fingerprint() != self.profiles_fingerprint;
        if devices_changed {
            for error in &profile_errors {
                tracing::error!(%error, "firmware profile refused");
            }
            tracing::info!(from = %profiles_from, count = profiles.len(),
                fingerprint = %profiles.fingerprint(), "firmware profiles loaded");
            if let Some(devices) = self.devices.take() {
                let _ = tokio::task::spawn_blocking(move || devices.shutdown()).await;
            }
            let fingerprint = profiles.fingerprint().to_string();
            let (devices_config, sink) = (new.devices.clone(), self.parts.sink.clone());
            let started = tokio::task::spawn_blocking(move || {
                crate::devices::runtime::start(&devices_config, &profiles, &sink)
            })
            .await;
            self.devices = started.ok();
            self.profiles_fingerprint = fingerprint;
            if old.is_some() {
                applied.changed.push("devices and firmware profiles");
            }
        }

        if old.as_ref().is_none_or(|o| o.sync != new.sync) {
            self.stop_sync().await;
            self.parts.sync.set_configured(new.sync.broker.is_some());
            self.sync = super::start_sync(&new, &self.parts);
            if old.is_some() {
                applied.changed.push("sync");
            }
        }
        if !applied.deferred.is_empty() {
            tracing::warn!(settings = ?applied.deferred,
                "these settings take effect at the next restart (`systemctl restart relais`)");
        }
        self.config = Some(new);
        Ok(applied)
    }

    /// Restart the device threads with the firmware profiles as they are on disk now.
    pub async fn reload_profiles(&mut self) -> usize {
        let Some(config) = self.config.clone() else {
            return 0;
        };
        self.profiles_fingerprint.clear();
        let in_effect = self.parts.tunables.in_effect();
        let _ = self.apply(config, in_effect).await;
        self.devices.as_ref().map_or(0, DeviceThreads::count)
    }

    pub fn device_count(&self) -> usize {
        self.devices.as_ref().map_or(0, DeviceThreads::count)
    }

    async fn stop_sync(&mut self) {
        if let Some(run) = self.sync.take() {
            let _ = run.stop.send(true);
            let _ = run.session.await;
            run.downlink_task.abort();
            let _ = run.downlink_task.await;
            self.parts
                .sync
                .set_link(crate::sync::LinkState::Disconnected);
        }
    }

    /// Refetch one stream's snapshot, as if central had sent `must_refetch`.
    pub async fn resync(&self, stream: crate::replica::Stream) -> Result<(), String> {
        let Some(run) = &self.sync else {
            return Err("sync is not configured on this agent (no sync.broker)".into());
        };
        if self
            .config
            .as_ref()
            .is_none_or(|c| c.sync.snapshot_url.is_none())
        {
            return Err(
                "no sync.snapshot_url: this agent does not know where snapshots are".into(),
            );
        }
        let payload = serde_json::json!({
            "v": crate::sync::wire::CONTRACT_VERSION,
            "stream": stream.name(),
            "must_refetch": true,
            "reason": "resync command from central ops",
        });
        run.downlink
            .send(crate::sync::downlink::DownlinkMessage::Rpl {
                stream: stream.name().to_owned(),
                payload: payload.to_string().into_bytes(),
            })
            .await;
        Ok(())
    }

    /// Checks a technician or central can run remotely: each with `ok` and what was seen.
    pub async fn self_test(&self) -> serde_json::Value {
        use serde_json::json;
        let parts = &self.parts;
        let replica = parts.applier.stream_states().await;
        let writer_up = !parts.outbox.is_closed();
        let stats = parts.outbox.stats();
        let now = crate::storage::now_unix_ms();
        let free_mb = crate::storage::free_bytes(&parts.paths.dir).map(|b| b / (1024 * 1024));
        let low_mb = self.config.as_ref().map_or(0, |c| c.disk.low_free_mb);
        let sync = parts.sync.status();
        let devices = parts.reads.devices();
        let stale_after = parts.tunables.stale_after();
        let streams = replica.as_ref().ok().map(|states| {
            crate::replica::lookup::freshness(
                states,
                &crate::replica::Stream::ALL,
                now,
                stale_after,
            )
        });
        let checks = vec![
            json!({"check": "replica readable", "ok": replica.is_ok(),
                   "detail": replica.as_ref().err().map(|e| e.to_string())}),
            json!({"check": "outbox writer running", "ok": writer_up}),
            json!({"check": "disk space", "ok": free_mb.is_none_or(|f| f >= low_mb),
                   "free_mb": free_mb, "low_free_mb": low_mb}),
            json!({"check": "replica fresh", "ok": streams.as_ref().is_some_and(|f| !f.stale),
                   "streams": streams.map(|f| f.streams)}),
            json!({"check": "broker connected", "ok": !sync.configured || sync.connected,
                   "configured": sync.configured, "last_error": sync.last_error}),
            json!({"check": "devices connected",
                   "ok": devices.iter().all(|d| format!("{:?}", d.state).eq_ignore_ascii_case("connected")),
                   "devices": devices.len()}),
            json!({"check": "oldest unsent store fact",
                   "ok": true, "age_s": stats.oldest_store_fact_age_s(now)}),
        ];
        let ok = checks.iter().all(|c| c["ok"] == json!(true));
        json!({"ok": ok, "checks": checks, "alarms": parts.outbox.alarms()})
    }

    /// Collect diagnostics (self-test, doctor report, outbox stats, alarms, devices, recent
    /// logs, effective config — paths only, no secrets, no customer data) and PUT them to `url`.
    pub async fn upload_diagnostics(
        &self,
        url: &str,
        doctor: serde_json::Value,
    ) -> Result<usize, String> {
        let Some(config) = &self.config else {
            return Err("the agent is not configured yet".into());
        };
        let bundle = serde_json::json!({
            "agent": config.agent.id.to_string(),
            "software": env!("CARGO_PKG_VERSION"),
            "at_ms": crate::storage::now_unix_ms(),
            "self_test": self.self_test().await,
            "outbox": self.parts.outbox.stats(),
            "dead_letters": self.parts.outbox.dead_letters(),
            "sync": self.parts.sync.status(),
            "devices": self.parts.reads.devices(),
            "config_in_effect": self.parts.tunables.in_effect(),
            "config": config.to_toml(),
            "doctor": doctor,
            "logs": recent_logs().await,
        });
        let body = serde_json::to_vec_pretty(&bundle).map_err(|e| e.to_string())?;
        let identity = match (&config.sync.client_cert_file, &config.sync.client_key_file) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        };
        let tls = crate::tls::client_config(config.sync.ca_file.as_deref(), identity)
            .map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .https_only(true)
            .redirect(crate::tls::same_origin_redirects())
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        let size = body.len();
        let response = client
            .put(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("upload to {url} failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("the upload server answered {}", response.status()));
        }
        Ok(size)
    }

    /// Stop sync and devices (storage is the caller's to drain).
    pub async fn stop(mut self) {
        self.stop_sync().await;
        if let Some(devices) = self.devices.take() {
            let _ = tokio::task::spawn_blocking(move || devices.shutdown()).await;
        }
    }
}

/// The agent's recent journal (it never logs card identifiers or customer names). Reading it
/// needs the service user in `systemd-journal`; without it, the bundle says why logs are missing.
async fn recent_logs() -> serde_json::Value {
    let run = tokio::process::Command::new("journalctl")
        .args([
            "-u",
            "relais",
            "-n",
            "2000",
            "--no-pager",
            "-o",
            "short-iso",
        ])
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(std::time::Duration::from_secs(10), run).await {
        Ok(Ok(out)) if out.status.success() => {
            serde_json::Value::String(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Ok(Ok(out)) => serde_json::json!({
            "unavailable": String::from_utf8_lossy(&out.stderr).trim().to_owned()
        }),
        Ok(Err(e)) => serde_json::json!({ "unavailable": format!("journalctl: {e}") }),
        Err(_) => serde_json::json!({ "unavailable": "journalctl took longer than 10 s" }),
    }
}
