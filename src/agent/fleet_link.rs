//! The agent's side of fleet management (docs/fleet.md): signed configuration documents from
//! central on `cfg/desired`, applied through the same path as startup and reported on
//! `cfg/reported`; health-gated rollback; signed commands on `cmd/req` answered on `cmd/res`.
//!
//! On disk, under `<data_dir>/fleet/`: `config.json` is the **known-good** remote document (the
//! one startup uses), `pending.json` the one on probation, `state.json` the highest version rolled
//! back (so the retained document that caused it is not applied again at the next connect), the
//! highest version ever applied (the downgrade floor: it holds even when the known-good document
//! expired, its key was unpinned or the file was lost, so an older retained document can never
//! come back) and the last command version (so a command cannot be replayed).

use super::running::Running;
use super::{config_text, in_effect_of, origin_of};
use crate::config::layers::{self, RemoteLayer};
use crate::config::{AgentId, Config};
use crate::fleet::{self, Command, CommandResult, CommandStatus, ConfigReport, ConfigStatus};
use crate::storage;
use crate::sync::FleetInbound;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

const KNOWN_GOOD: &str = "config.json";
const PENDING: &str = "pending.json";
const STATE: &str = "state.json";

#[derive(Default, Serialize, Deserialize)]
struct LinkState {
    /// Remote config versions at or below this were rolled back: refused from now on.
    #[serde(default)]
    rolled_back_through: u64,
    /// The highest command version executed: anything at or below is a replay.
    #[serde(default)]
    last_command: u64,
    /// The highest remote config version ever applied here: anything below is a downgrade.
    #[serde(default)]
    highest_applied: u64,
    /// The highest version refused for being below that floor (for the operator).
    #[serde(default)]
    highest_refused_as_old: u64,
}

fn fleet_dir(config: &Config) -> PathBuf {
    config.agent.data_dir.join("fleet")
}

fn pinned_keys(config: &Config) -> Result<Vec<fleet::PublicKey>, String> {
    match &config.fleet.ops_public_keys_file {
        None => Err(
            "no ops public key is pinned (fleet.ops_public_keys_file): remote documents are \
             refused until provisioning installs one"
                .into(),
        ),
        Some(path) => fleet::read_public_keys(path).map_err(|e| e.to_string()),
    }
}

/// The known-good remote layer, verified again (a key may have been unpinned since).
pub(super) fn stored_layer(config: &Config) -> Option<RemoteLayer> {
    let path = fleet_dir(config).join(KNOWN_GOOD);
    let bytes = std::fs::read(&path).ok()?;
    let keys = match pinned_keys(config) {
        Ok(keys) => keys,
        Err(why) => {
            tracing::warn!(%why, "a stored remote config exists but cannot be verified; ignoring it");
            return None;
        }
    };
    match fleet::verify_config(&bytes, &keys, &config.agent.id, SystemTime::now()) {
        Ok(v) => Some(RemoteLayer {
            version: v.version,
            body: v.body,
        }),
        Err(e) => {
            tracing::error!(error = %e, path = %path.display(), "the stored remote config no longer verifies; ignoring it");
            None
        }
    }
}

/// `relais doctor`'s report for this box, as JSON (it runs its own checks, some blocking).
async fn doctor_report(file: &Option<PathBuf>) -> serde_json::Value {
    let file = file.clone();
    match tokio::task::spawn_blocking(move || crate::doctor::run(file.as_deref())).await {
        Ok(report) => serde_json::to_value(report).unwrap_or_default(),
        Err(e) => serde_json::json!({ "error": format!("the doctor did not finish: {e}") }),
    }
}

/// A remote config applied and waiting to prove the broker is still reachable.
struct Probation {
    version: u64,
    deadline: Instant,
    /// What to return to.
    previous: Option<RemoteLayer>,
}

pub(super) struct FleetLink {
    agent: AgentId,
    dir: PathBuf,
    state: LinkState,
    remote: Option<RemoteLayer>,
    probation: Option<Probation>,
    /// A temporary log level and when it ends.
    log_until: Option<Instant>,
    tick: tokio::time::Interval,
}

fn load_state(dir: &Path) -> LinkState {
    std::fs::read(dir.join(STATE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    storage::write_file_atomically(&dir.join(name), bytes, 0o600)
}

impl FleetLink {
    pub(super) fn new(running: &Running, remote: Option<RemoteLayer>) -> FleetLink {
        let (agent, dir) = match running.config() {
            Some(c) => (c.agent.id.clone(), fleet_dir(c)),
            None => (crate::config::Config::defaults().agent.id, PathBuf::new()),
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut state = load_state(&dir);
        // An agent from before the floor was kept: the known-good document is the floor.
        state.highest_applied = state
            .highest_applied
            .max(remote.as_ref().map_or(0, |r| r.version));
        FleetLink {
            state,
            agent,
            dir,
            remote,
            probation: None,
            log_until: None,
            tick,
        }
    }

    pub(super) async fn tick(&mut self) {
        self.tick.tick().await;
    }

    fn save_state(&self) {
        if let Ok(bytes) = serde_json::to_vec(&self.state)
            && let Err(e) = write(&self.dir, STATE, &bytes)
        {
            tracing::error!(error = %e, "cannot save the fleet link state");
        }
    }

    fn report(
        &self,
        running: &Running,
        version: u64,
        status: ConfigStatus,
        reasons: Vec<String>,
        sources: Option<std::collections::BTreeMap<String, String>>,
    ) {
        let in_effect = running.parts().tunables.in_effect();
        let report = ConfigReport {
            v: fleet::DOCUMENT_VERSION,
            agent: self.agent.to_string(),
            version,
            status,
            reasons,
            effective_version: self.remote.as_ref().map_or(0, |r| r.version),
            effective_hash: in_effect.hash,
            source_of_keys: sources,
            at: fleet::format_time(SystemTime::now()),
        };
        match status {
            ConfigStatus::Applied => {
                tracing::info!(version, "remote config applied")
            }
            _ => {
                tracing::warn!(version, status = status.name(), reasons = ?report.reasons, "remote config not in effect")
            }
        }
        if let Ok(payload) = serde_json::to_vec(&report) {
            running.parts().sync.report_config(payload);
        }
    }

    /// A message from central. Returns the new remote layer when it changed.
    pub(super) async fn handle(
        &mut self,
        running: &mut Running,
        file: &Option<PathBuf>,
        message: FleetInbound,
    ) -> Option<Option<RemoteLayer>> {
        match message {
            FleetInbound::Desired(bytes) => self.on_desired(running, file, &bytes).await,
            FleetInbound::Command(bytes) => {
                self.on_command(running, file, &bytes).await;
                None
            }
        }
    }

    async fn on_desired(
        &mut self,
        running: &mut Running,
        file: &Option<PathBuf>,
        bytes: &[u8],
    ) -> Option<Option<RemoteLayer>> {
        let config = running.config()?.clone();
        // The version as claimed, for the report of a document that does not verify.
        let claimed = fleet::SignedDocument::from_json(bytes)
            .map(|d| d.version)
            .unwrap_or(0);
        let reject = |link: &Self, running: &Running, version: u64, why: String| {
            link.report(running, version, ConfigStatus::Rejected, vec![why], None);
            None
        };
        let keys = match pinned_keys(&config) {
            Ok(keys) => keys,
            Err(why) => return reject(self, running, claimed, why),
        };
        let verified = match fleet::verify_config(bytes, &keys, &self.agent, SystemTime::now()) {
            Ok(v) => v,
            Err(e) => return reject(self, running, claimed, e.to_string()),
        };
        let version = verified.version;
        let current = self.remote.as_ref().map_or(0, |r| r.version);
        let floor = self.state.highest_applied.max(current);
        if version == current
            || self
                .probation
                .as_ref()
                .is_some_and(|p| p.version == version)
        {
            // The retained document again, at a reconnect: nothing to do.
            return None;
        }
        if version < floor {
            if version > self.state.highest_refused_as_old {
                self.state.highest_refused_as_old = version;
                self.save_state();
            }
            return reject(
                self,
                running,
                version,
                format!(
                    "version {version} is older than version {floor} applied on this agent: a downgrade is refused; sign the old settings with a new version"
                ),
            );
        }
        if version <= self.state.rolled_back_through {
            return reject(
                self,
                running,
                version,
                format!(
                    "version {version} was rolled back on this agent; publish the fix as a new version"
                ),
            );
        }
        let layer = RemoteLayer {
            version,
            body: verified.body,
        };
        let layered = match config_text(file)
            .map_err(|e| vec![e.to_string()])
            .and_then(|text| {
                layers::merge(&text, &origin_of(file), Some(&layer)).map_err(|e| match e {
                    layers::LayerError::Invalid(config_error) => match *config_error {
                        crate::config::ConfigError::Invalid { problems, .. } => {
                            problems.iter().map(ToString::to_string).collect()
                        }
                        other => vec![other.to_string()],
                    },
                    other => vec![other.to_string()],
                })
            }) {
            Ok(l) => l,
            Err(reasons) => {
                self.report(running, version, ConfigStatus::Rejected, reasons, None);
                return None;
            }
        };
        let sources = layered
            .sources
            .iter()
            .map(|(k, s)| (k.clone(), s.to_string()))
            .collect();
        let in_effect = in_effect_of(&layered.config, file, Some(&layer));
        let new_config = layered.config;
        match running.apply(new_config.clone(), in_effect).await {
            Ok(applied) => {
                tracing::info!(version, changed = ?applied.changed, deferred = ?applied.deferred, "remote config applied");
            }
            Err(e) => {
                self.report(
                    running,
                    version,
                    ConfigStatus::Rejected,
                    vec![e.to_string()],
                    None,
                );
                return None;
            }
        }
        // The floor is on disk before anything else records this version: a crash after this
        // point can only make the agent refuse this version again, never accept an older one.
        if version > self.state.highest_applied {
            self.state.highest_applied = version;
            self.save_state();
        }
        let previous = self.remote.replace(layer.clone());
        if let Err(e) = write(&self.dir, PENDING, bytes) {
            tracing::error!(error = %e, "cannot store the remote config; it applies until the next restart only");
        }
        if new_config.sync.broker.is_some() && new_config.sync != config.sync {
            // A change to the link itself is proven good only once the broker answers under
            // the new settings; any other change leaves the link as it was.
            self.probation = Some(Probation {
                version,
                deadline: Instant::now() + new_config.fleet.rollback_after,
                previous,
            });
        } else {
            self.promote();
        }
        self.report(
            running,
            version,
            ConfigStatus::Applied,
            Vec::new(),
            Some(sources),
        );
        Some(Some(layer))
    }

    /// The pending document becomes the known-good one.
    fn promote(&mut self) {
        self.probation = None;
        let from = self.dir.join(PENDING);
        let to = self.dir.join(KNOWN_GOOD);
        let renamed = std::fs::rename(&from, &to);
        storage::fsync_dir(&self.dir);
        if let Err(e) = renamed {
            tracing::error!(error = %e, "cannot record the remote config as known good");
        }
    }

    /// Once a second: end a temporary log level; judge a config on probation.
    pub(super) async fn check_probation(
        &mut self,
        running: &mut Running,
        file: &Option<PathBuf>,
    ) -> Option<Option<RemoteLayer>> {
        if let Some(until) = self.log_until
            && Instant::now() >= until
        {
            self.log_until = None;
            if let Some(level) = running.config().map(|c| c.log.level.clone()) {
                let _ = running.parts().log.set(&level);
                tracing::info!(%level, "temporary log level expired; back to the configured one");
            }
        }
        let probation = self.probation.as_ref()?;
        // Not any answer: a broker can take the CONNECT and acknowledge publishes while its
        // ACL refuses this agent read access to its own topics, which would cut it off from
        // central's config and commands for good. Only the ACL echo proves both ways.
        let sync = &running.parts().sync;
        if sync.status().connected && sync.echoed() {
            tracing::info!(
                version = probation.version,
                "remote config proven: the broker answers and echoes the agent's own topics"
            );
            self.promote();
            return None;
        }
        if Instant::now() < probation.deadline {
            return None;
        }
        let probation = self.probation.take()?;
        let why = format!(
            "no broker connection that accepts this agent's identity (its own topics echoed back) for {} after applying version {}: returned to the last known good configuration",
            crate::config::render::duration(
                running
                    .config()
                    .map_or(Duration::from_secs(0), |c| c.fleet.rollback_after)
            ),
            probation.version
        );
        tracing::error!(%why, "remote config rolled back");
        let layered = config_text(file)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                layers::merge(&text, &origin_of(file), probation.previous.as_ref())
                    .map_err(|e| e.to_string())
            });
        let layered = match layered {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot rebuild the previous configuration; keeping the current one");
                return None;
            }
        };
        let in_effect = in_effect_of(&layered.config, file, probation.previous.as_ref());
        if let Err(e) = running.apply(layered.config, in_effect).await {
            tracing::error!(error = %e, "rollback failed; keeping the current configuration");
            return None;
        }
        let _ = std::fs::remove_file(self.dir.join(PENDING));
        self.state.rolled_back_through = self.state.rolled_back_through.max(probation.version);
        self.save_state();
        self.remote = probation.previous.clone();
        self.report(
            running,
            probation.version,
            ConfigStatus::RolledBack,
            vec![why],
            None,
        );
        Some(probation.previous)
    }

    async fn on_command(&mut self, running: &mut Running, file: &Option<PathBuf>, bytes: &[u8]) {
        let claimed = fleet::SignedDocument::from_json(bytes)
            .map(|d| d.version)
            .unwrap_or(0);
        let agent = self.agent.to_string();
        let answer = |status: CommandStatus,
                      version: u64,
                      command: Option<&str>,
                      message: String,
                      data: Option<serde_json::Value>| CommandResult {
            v: fleet::DOCUMENT_VERSION,
            agent: agent.clone(),
            version,
            command: command.map(str::to_owned),
            status,
            message,
            data,
            at: fleet::format_time(SystemTime::now()),
        };
        let result = match running.config().map(pinned_keys) {
            None => return,
            Some(Err(why)) => answer(CommandStatus::Rejected, claimed, None, why, None),
            Some(Ok(keys)) => {
                match fleet::verify_command(bytes, &keys, &self.agent, SystemTime::now()) {
                    Err(e) => answer(CommandStatus::Rejected, claimed, None, e.to_string(), None),
                    Ok((verified, _)) if verified.version <= self.state.last_command => answer(
                        CommandStatus::Rejected,
                        verified.version,
                        None,
                        format!(
                            "command {} was already received (last: {}): a replay is refused; send a new command",
                            verified.version, self.state.last_command
                        ),
                        None,
                    ),
                    Ok((verified, command)) => {
                        self.state.last_command = verified.version;
                        self.save_state();
                        let name = command.name();
                        tracing::info!(command = name, version = verified.version, key = %verified.key_id, "command from central");
                        let (status, message, data) =
                            self.run_command(running, file, command).await;
                        answer(status, verified.version, Some(name), message, data)
                    }
                }
            }
        };
        if let Ok(payload) = serde_json::to_vec(&result) {
            running.parts().sync.push_command_result(payload);
        }
    }

    async fn run_command(
        &mut self,
        running: &mut Running,
        file: &Option<PathBuf>,
        command: Command,
    ) -> (CommandStatus, String, Option<serde_json::Value>) {
        match command {
            Command::Resync { stream } => match running.resync(stream).await {
                Ok(()) => (
                    CommandStatus::Ok,
                    format!("{stream} snapshot refetch started"),
                    None,
                ),
                Err(why) => (CommandStatus::Error, why, None),
            },
            Command::SelfTest {} => {
                let report = running.self_test().await;
                let ok = report.get("ok").and_then(serde_json::Value::as_bool) == Some(true);
                let status = if ok {
                    CommandStatus::Ok
                } else {
                    CommandStatus::Error
                };
                (status, "self-test finished".into(), Some(report))
            }
            Command::ReloadProfiles {} => {
                let devices = running.reload_profiles().await;
                (
                    CommandStatus::Ok,
                    format!("firmware profiles reloaded; {devices} device threads running"),
                    Some(serde_json::json!({ "devices": devices })),
                )
            }
            Command::SetLogLevel { level, expires_in } => {
                match running.parts().log.set(level.name()) {
                    Ok(()) => {
                        self.log_until = Some(Instant::now() + expires_in);
                        (
                            CommandStatus::Ok,
                            format!(
                                "log level {level} for {}; then back to the configured level",
                                crate::config::render::duration(expires_in)
                            ),
                            None,
                        )
                    }
                    Err(why) => (CommandStatus::Error, why, None),
                }
            }
            Command::UploadDiagnostics { url } => {
                let doctor = doctor_report(file).await;
                match running.upload_diagnostics(url.as_str(), doctor).await {
                    Ok(bytes) => (
                        CommandStatus::Ok,
                        format!("diagnostics uploaded ({bytes} bytes)"),
                        None,
                    ),
                    Err(why) => (CommandStatus::Error, why, None),
                }
            }
        }
    }
}
