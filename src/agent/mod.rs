//! `relais run`: the one path that turns a validated config into a running agent. Startup
//! opens storage (checking integrity first), starts the single writer and the reader pool, then
//! serves the API until SIGTERM/SIGINT, and shuts down in reverse: stop accepting, drain the
//! requests in flight, let the outbox writer commit what it holds, checkpoint, exit 0.

mod fleet_link;
pub mod running;

use crate::api::{self, ApiState};
use crate::cards::{CardHasher, CardKeyError};
use crate::config::Config;
use crate::config::layers;
use crate::config::live::{ConfigInEffect, Tunables};
use crate::outbox::writer::WriterSettings;
use crate::outbox::{OutboxError, OutboxHandle, OutboxWriter};
use crate::replica::apply::{ApplierHandle, ReplicaApplier};
use crate::storage::{self, Integrity, ReaderPool, ReaderPoolError, StorageError};
use crate::sync::SyncShared;
use running::{Parts, Running};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    Readers(#[from] ReaderPoolError),
    #[error(transparent)]
    CardKey(#[from] CardKeyError),
    #[error(
        "cannot listen on {addr}: {source}. Another relais (or another program) may hold the port; \
         stop it or change api.listen"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "another relais is already running on data directory {dir} (lock {lock} is held{holder}); stop it \
         first, or give this one its own agent.data_dir"
    )]
    AlreadyRunning {
        dir: PathBuf,
        lock: PathBuf,
        holder: String,
    },
    #[error(
        "cannot create the lock file {path}: {source}. {}",
        crate::storage::io_fix(.path.parent().unwrap_or(.path), .source)
    )]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    ApiTokens(#[from] crate::api::TokenFileError),
    #[error(transparent)]
    Apply(#[from] running::ApplyError),
    #[error("the API server failed: {0}")]
    Serve(std::io::Error),
}

/// Paths of the data directory's files.
#[derive(Debug, Clone)]
pub struct DataPaths {
    pub dir: PathBuf,
    pub replica: PathBuf,
    pub outbox: PathBuf,
}

impl DataPaths {
    /// Delete the damaged copies of both databases older than `keep` (`disk.damaged_copies_keep`):
    /// at startup and hourly, since they may hold personal data.
    pub fn expire_damaged_copies(&self, keep: std::time::Duration) {
        for database in [&self.replica, &self.outbox] {
            storage::remove_damaged_copies(database, Some(keep));
        }
    }

    pub fn new(dir: &Path) -> DataPaths {
        DataPaths {
            dir: dir.to_path_buf(),
            replica: dir.join(storage::REPLICA_FILE),
            outbox: dir.join(storage::OUTBOX_FILE),
        }
    }
}

/// Storage opened and checked: the writer thread and reader pool are running.
pub struct OpenStorage {
    /// Held for the life of the agent: a second agent on the same data directory would be a
    /// second writer of outbox.db, and its `seq` would collide with ours.
    _lock: std::fs::File,
    pub paths: DataPaths,
    pub outbox: OutboxHandle,
    pub writer: OutboxWriter,
    pub readers: ReaderPool,
    pub hasher: CardHasher,
    /// The replica's single writer while the agent runs (deltas, snapshot imports).
    pub applier: ApplierHandle,
    pub applier_thread: ReplicaApplier,
    /// Alarms to raise once the outbox is up (e.g. a damaged file was moved aside).
    pub startup_alarms: Vec<(&'static str, String)>,
}

/// Integrity-check both databases, move damaged ones aside, create and migrate, start threads.
pub fn open_storage(config: &Config) -> Result<OpenStorage, AgentError> {
    let paths = DataPaths::new(&config.agent.data_dir);
    storage::ensure_data_dir(&paths.dir)?;
    let lock = lock_data_dir(&paths.dir)?;
    let mut startup_alarms = Vec::new();

    if let Integrity::Damaged(reason) = storage::quick_check(&paths.replica) {
        let aside = storage::move_aside(&paths.replica)?;
        tracing::error!(%reason, moved_to = %aside.display(),
            "replica.db is damaged: moved aside; starting empty and rebuilding from the next snapshot");
        startup_alarms.push((
            "replica_rebuilt",
            format!(
                "replica.db failed its integrity check ({reason}) and was moved to {}; the replica is empty \
                 until the next snapshot import (`relais replica import`)",
                aside.display()
            ),
        ));
    }
    let (applier, applier_thread) = ReplicaApplier::start(&paths.replica)?;

    let mut seq_floor = 0;
    if let Integrity::Damaged(reason) = storage::quick_check(&paths.outbox) {
        let aside = storage::move_aside(&paths.outbox)?;
        seq_floor = salvage_seq_floor(&aside);
        tracing::error!(%reason, moved_to = %aside.display(), seq_floor,
            "outbox.db is damaged: moved aside (not deleted); running on a fresh outbox");
        startup_alarms.push((
            "outbox_replaced",
            format!(
                "outbox.db failed its integrity check ({reason}). It was moved to {} and a fresh outbox \
                 started at seq {}. Unsent store facts may be in the old file: stop the agent, run \
                 `sqlite3 {} .recover > recovered.sql` (`sudo apt-get install sqlite3` first), and send \
                 it to central ops; see \"Damaged databases\" in /usr/share/doc/relais/operations.md",
                aside.display(),
                seq_floor + 1,
                aside.display()
            ),
        ));
    }
    paths.expire_damaged_copies(config.disk.damaged_copies_keep);
    let (outbox, writer) = OutboxWriter::start(
        &paths.outbox,
        WriterSettings {
            group_commit_max: config.outbox.group_commit_max,
            telemetry_quota_rows: config.outbox.telemetry_quota_rows,
            low_free_mb: config.disk.low_free_mb,
            seq_floor,
            checkpoint_pages: crate::outbox::writer::DEFAULT_CHECKPOINT_PAGES,
            prune: crate::outbox::prune::PruneSettings::new(
                config.outbox.history_keep,
                config.outbox.keys_keep,
                Some(paths.replica.clone()),
            )
            .with_returns_keep(config.outbox.returns_keep),
        },
    )?;
    let readers = ReaderPool::start(&paths.replica, &paths.outbox, config.replica.readers)?;
    let hasher = card_hasher(config)?;
    Ok(OpenStorage {
        _lock: lock,
        paths,
        outbox,
        writer,
        readers,
        hasher,
        applier,
        applier_thread,
        startup_alarms,
    })
}

/// Take the data directory's exclusive lock (released by the kernel when the process dies,
/// so a SIGKILLed agent never leaves a stale lock) and record our pid in it for the message
/// the next contender gets.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, AgentError> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("relais.lock");
    let lock_err = |source| AgentError::Lock {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(lock_err)?;
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        return Err(AgentError::AlreadyRunning {
            dir: dir.to_path_buf(),
            lock: path.clone(),
            holder: if holder.is_empty() {
                String::new()
            } else {
                format!(" by pid {holder}")
            },
        });
    }
    file.set_len(0).map_err(lock_err)?;
    file.rewind().map_err(lock_err)?;
    write!(file, "{}", std::process::id()).map_err(lock_err)?;
    Ok(file)
}

/// The card key: generated on first start only at its default place in the data directory;
/// a key file configured elsewhere must exist (it is the fleet's, provisioned).
pub fn card_hasher(config: &Config) -> Result<CardHasher, CardKeyError> {
    let path = &config.customers.card_hash_key_file;
    if *path == config.agent.data_dir.join(DEFAULT_CARD_KEY_FILE) {
        CardHasher::load_or_create(path)
    } else {
        CardHasher::load(path)
    }
}

pub const DEFAULT_CARD_KEY_FILE: &str = "card-hash.key";

/// Highest sequence the damaged outbox may have used, plus a margin for rows we could not
/// read. When nothing is readable, a floor derived from the clock is still above any sequence
/// this box can have produced.
fn salvage_seq_floor(damaged: &Path) -> u64 {
    let readable =
        rusqlite::Connection::open_with_flags(damaged, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()
            .and_then(|conn| {
                let meta: Option<i64> = conn
                    .query_row("SELECT value FROM meta WHERE key = 'last_seq'", [], |r| {
                        r.get(0)
                    })
                    .ok();
                // Each table may be unreadable on its own in a damaged file: ask them one by one.
                let max = crate::outbox::SEQ_TABLES
                    .iter()
                    .filter_map(|table| {
                        conn.query_row(&format!("SELECT MAX(seq) FROM {table}"), [], |r| {
                            r.get::<_, Option<i64>>(0)
                        })
                        .ok()
                        .flatten()
                    })
                    .max();
                meta.into_iter().chain(max).max()
            });
    match readable {
        Some(seq) => (seq.max(0) as u64).saturating_add(1_000_000),
        None => (storage::now_unix_ms().max(0) as u64).saturating_mul(1000),
    }
}

/// The remote config layer the agent would start with (the known-good document central
/// pushed, verified again), for `relais config show`.
pub fn stored_remote_layer(config: &Config) -> Option<layers::RemoteLayer> {
    fleet_link::stored_layer(config)
}

/// What `relais run` starts from.
pub struct Launch {
    pub config: Config,
    /// The file the config came from, read again on SIGHUP; `None`: built-in defaults.
    pub file: Option<PathBuf>,
    pub log: crate::logging::LogControl,
}

fn config_text(file: &Option<PathBuf>) -> Result<String, crate::config::ConfigError> {
    match file {
        None => Ok(String::new()),
        Some(path) => {
            std::fs::read_to_string(path).map_err(|cause| crate::config::ConfigError::Unreadable {
                path: path.clone(),
                cause,
            })
        }
    }
}

fn origin_of(file: &Option<PathBuf>) -> PathBuf {
    file.clone()
        .unwrap_or_else(|| PathBuf::from("built-in defaults"))
}

/// Run the agent until `shutdown` resolves. `on_ready` is called once the API listens.
pub async fn run(
    launch: Launch,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(SocketAddr) + Send,
) -> Result<(), AgentError> {
    let started = Instant::now();
    let Launch {
        config: file_config,
        file,
        log,
    } = launch;
    // The remote layer central pushed last (verified again), over the local file.
    let remote = fleet_link::stored_layer(&file_config);
    let config = match &remote {
        Some(layer) => match config_text(&file)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                layers::merge(&text, &origin_of(&file), Some(layer)).map_err(|e| e.to_string())
            }) {
            Ok(layered) => layered.config,
            Err(why) => {
                tracing::error!(%why, "the stored remote config no longer applies over the file; running on the file alone");
                file_config.clone()
            }
        },
        None => file_config.clone(),
    };
    // Before storage: a bad token file is a configuration error, found in milliseconds.
    if let Some(path) = &config.api.token_file {
        api::ApiTokens::load(path)?;
    }
    let storage = open_storage(&config)?;
    for (code, message) in &storage.startup_alarms {
        storage.outbox.raise_alarm(code, message.clone()).await;
    }
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .map_err(|source| AgentError::Bind {
            addr: config.api.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(AgentError::Serve)?;
    let in_effect = ConfigInEffect {
        hash: crate::profiles::sha256_hex(config.to_toml().as_bytes()),
        source: file.as_ref().map_or_else(
            || "built-in defaults".to_owned(),
            |p| p.display().to_string(),
        ),
        remote_version: remote.as_ref().map(|r| r.version),
    };
    let tunables = Arc::new(Tunables::new(&config, in_effect.clone()));
    let reads = Arc::new(crate::reads::ReadContext {
        readers: storage.readers.clone(),
        outbox: storage.outbox.clone(),
        hasher: storage.hasher.clone(),
        tunables: Arc::clone(&tunables),
        record_scans: config.devices.record_scans,
        board: Default::default(),
        live: tokio::sync::broadcast::channel(1024).0,
    });
    let sync = Arc::new(SyncShared::new(config.sync.broker.is_some()));
    // Graceful shutdown waits for every open connection; live streams (SSE, NDJSON) would
    // hold it forever, so they end when this flips.
    let (stop_streams, streams_stopped) = tokio::sync::watch::channel(false);
    let gate = Arc::new(api::GateCell::default());
    let state = Arc::new(ApiState {
        reads: Arc::clone(&reads),
        agent_id: config.agent.id.to_string(),
        readers: storage.readers.clone(),
        outbox: storage.outbox.clone(),
        hasher: storage.hasher.clone(),
        tunables: Arc::clone(&tunables),
        started,
        sync: Arc::clone(&sync),
        shutdown: streams_stopped,
        streams: Arc::new(tokio::sync::Semaphore::new(config.api.max_streams)),
        doctor_key: match api::doctor_link::DoctorKey::create(&storage.paths.dir) {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::warn!(error = %e, dir = %storage.paths.dir.display(),
                    "cannot write the doctor key: `relais doctor` will see only whether the agent is ready");
                None
            }
        },
    });
    let app = api::router(state, config.api.max_body_bytes, Arc::clone(&gate));

    // Store hardware: one thread per device, events into the core through a bounded channel.
    let (sink, device_events) = crate::devices::EventSink::channel(1024);
    let consumer = tokio::spawn(crate::reads::consume(device_events, Arc::clone(&reads)));
    let (fleet_inbox, fleet_messages) = tokio::sync::mpsc::channel(16);
    let mut running = Running::new(Parts {
        paths: storage.paths.clone(),
        outbox: storage.outbox.clone(),
        applier: storage.applier.clone(),
        reads: Arc::clone(&reads),
        sync: Arc::clone(&sync),
        sink,
        gate,
        tunables,
        log,
        fleet_inbox,
    });
    // Startup is the first apply: the same path a reload takes.
    running.apply(config.clone(), in_effect).await?;
    let (stop_control, control_stopped) = tokio::sync::watch::channel(false);
    let control = tokio::spawn(control_loop(
        running,
        Control {
            file,
            remote,
            messages: fleet_messages,
        },
        control_stopped,
    ));

    tracing::info!(%addr, agent = %config.agent.id, data_dir = %storage.paths.dir.display(),
        startup_ms = started.elapsed().as_millis() as u64, "relais is ready");
    on_ready(addr);
    // Under systemd (Type=notify): ready only now that storage is open and the API listens.
    let service = crate::service::ServiceLink::ready(addr, Arc::clone(&sync));
    let shutdown = async move {
        shutdown.await;
        // Said when shutdown begins, not when it ends: the drain below may take seconds.
        crate::service::stopping();
        let _ = stop_streams.send(true);
    };
    let limits = api::server::ServeLimits {
        max_connections: config.api.max_connections,
        max_connections_per_client: config.api.max_connections_per_client,
        header_read_timeout: config.api.header_read_timeout,
    };
    api::server::serve(listener, app, limits, shutdown)
        .await
        .map_err(AgentError::Serve)?;
    tracing::info!("shutting down: stopping devices and sync, then draining the outbox writer");
    let _ = stop_control.send(true);
    if let Ok(running) = control.await {
        running.stop().await;
    }
    // Every sink is gone with its thread: the consumer finishes the events already queued.
    let _ = consumer.await;
    drop(reads);
    let OpenStorage {
        outbox,
        writer,
        applier,
        applier_thread,
        ..
    } = storage;
    // The router (and its handle clones) is gone once serve returns; this is the last handle.
    drop(outbox);
    drop(applier);
    let _ = tokio::task::spawn_blocking(move || {
        writer.join();
        applier_thread.join();
    })
    .await;
    // Fed through the whole drain: a slow checkpoint is bounded by TimeoutStopSec, and a
    // watchdog kill mid-checkpoint would only make it slower on the next start.
    drop(service);
    tracing::info!("stopped cleanly");
    Ok(())
}

/// What the control loop reacts to besides its stop signal.
struct Control {
    file: Option<PathBuf>,
    /// The remote layer in effect.
    remote: Option<layers::RemoteLayer>,
    messages: tokio::sync::mpsc::Receiver<crate::sync::FleetInbound>,
}

/// Owns the running components: SIGHUP reloads the file, the fleet link applies documents and
/// runs commands from central. Returns the components when told to stop.
async fn control_loop(
    mut running: Running,
    mut control: Control,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Running {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).ok();
    let mut link = fleet_link::FleetLink::new(&running, control.remote.clone());
    // Startup already expired the damaged copies; then once an hour.
    let mut retention = tokio::time::interval_at(
        tokio::time::Instant::now() + std::time::Duration::from_secs(3600),
        std::time::Duration::from_secs(3600),
    );
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = async {
                match hangup.as_mut() {
                    Some(h) => { h.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                tracing::info!("SIGHUP: reloading the configuration file");
                reload_file(&mut running, &control).await;
            }
            Some(message) = control.messages.recv() => {
                if let Some(remote) = link.handle(&mut running, &control.file, message).await {
                    control.remote = remote;
                }
            }
            _ = link.tick() => {
                if let Some(remote) = link.check_probation(&mut running, &control.file).await {
                    control.remote = remote;
                }
            }
            _ = retention.tick() => {
                if let Some(keep) = running.config().map(|c| c.disk.damaged_copies_keep) {
                    let paths = running.parts().paths.clone();
                    let _ = tokio::task::spawn_blocking(move || paths.expire_damaged_copies(keep)).await;
                }
            }
            _ = stop.changed() => return running,
        }
    }
}

/// Apply the file as it is now (with the remote layer in effect). A file that does not
/// validate changes nothing; the error is logged with every problem.
async fn reload_file(running: &mut Running, control: &Control) {
    let layered = config_text(&control.file)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            layers::merge(&text, &origin_of(&control.file), control.remote.as_ref())
                .map_err(|e| e.to_string())
        });
    match layered {
        Ok(layered) => {
            let in_effect = in_effect_of(&layered.config, &control.file, control.remote.as_ref());
            match running.apply(layered.config, in_effect).await {
                Ok(applied) => {
                    tracing::info!(changed = ?applied.changed, deferred = ?applied.deferred, "configuration reloaded")
                }
                Err(e) => {
                    tracing::error!(error = %e, "configuration reload refused; nothing changed")
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "configuration reload refused; nothing changed"),
    }
}

pub(crate) fn in_effect_of(
    config: &Config,
    file: &Option<PathBuf>,
    remote: Option<&layers::RemoteLayer>,
) -> ConfigInEffect {
    ConfigInEffect {
        hash: crate::profiles::sha256_hex(config.to_toml().as_bytes()),
        source: file.as_ref().map_or_else(
            || "built-in defaults".to_owned(),
            |p| p.display().to_string(),
        ),
        remote_version: remote.map(|r| r.version),
    }
}

/// Start the MQTT session and the downlink when a broker is configured. A sync that cannot
/// start (unreadable CA, …) is logged and reported on health; the store keeps selling offline.
pub(crate) fn start_sync(config: &Config, parts: &running::Parts) -> Option<running::SyncRun> {
    let (stop_sync, stop) = tokio::sync::watch::channel(false);
    let shared = &parts.sync;
    let reads = &parts.reads;
    use crate::sync::{downlink, session, snapshot, wire};
    config.sync.broker.as_ref()?;
    let agent_id = config.agent.id.to_string();
    let delivery = match crate::outbox::delivery::DeliveryReader::start(
        &parts.paths.outbox,
        &agent_id,
    ) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the outbox reader: sync disabled; events stay queued");
            shared.set_error(e.to_string());
            return None;
        }
    };
    let identity = match (&config.sync.client_cert_file, &config.sync.client_key_file) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        _ => None,
    };
    let snapshots = match snapshot::SnapshotClient::new(config.sync.ca_file.as_deref(), identity) {
        Ok(client) => Some(client),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTPS client for snapshots; deltas still apply");
            None
        }
    };
    let (downlink, downlink_task) = downlink::start(downlink::DownlinkContext {
        applier: parts.applier.clone(),
        snapshots,
        snapshot_url: config.sync.snapshot_url.clone(),
        snapshot_dir: parts.paths.dir.join(storage::SNAPSHOTS_DIR),
        shared: Arc::clone(shared),
    });
    let tunables = Arc::clone(&parts.tunables);
    let outbox = parts.outbox.clone();
    let applier = parts.applier.clone();
    let reads = Arc::clone(reads);
    let birth_shared = Arc::clone(shared);
    let birth = Arc::new(move || {
        let outbox = outbox.clone();
        let applier = applier.clone();
        let reads = Arc::clone(&reads);
        let shared = Arc::clone(&birth_shared);
        let in_effect = tunables.in_effect();
        let fut: futures_util::future::BoxFuture<'static, wire::Birth> = Box::pin(async move {
            let stats = outbox.stats();
            let now = storage::now_unix_ms();
            let replica = applier
                .stream_states()
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|s| wire::ReplicaStreamState {
                    stream: s.stream,
                    version: s.version,
                    applied_ms: s.applied_ms,
                    confirmed_ms: s.confirmed_ms,
                })
                .collect();
            wire::Birth {
                software: env!("CARGO_PKG_VERSION").to_string(),
                boot: stats.boot,
                config: wire::ConfigState {
                    version: in_effect.remote_version.unwrap_or(0),
                    hash: in_effect.hash,
                },
                replica,
                outbox: wire::OutboxState {
                    store_fact_depth: stats.store_fact.depth,
                    telemetry_depth: stats.telemetry.depth,
                    dead_letter_depth: outbox.dead_letters(),
                    oldest_store_fact_age_s: stats
                        .oldest_store_fact_age_s(now)
                        .map_or(0, |s| s as u64),
                    last_seq: stats.last_seq,
                    last_fact_seq: stats.last_fact_seq,
                    fact_epoch: stats.fact_epoch,
                },
                devices: reads
                    .devices()
                    .into_iter()
                    .map(|d| wire::DeviceSummary {
                        id: d.device.to_string(),
                        state: format!("{:?}", d.state).to_lowercase(),
                    })
                    .collect(),
                paused_streams: shared.paused_streams(),
                alarms: outbox.alarms().into_iter().map(|a| a.code).collect(),
            }
        });
        fut
    });
    let session_task = tokio::spawn(session::run(
        session::SessionContext {
            config: config.sync.clone(),
            agent_id,
            outbox: parts.outbox.clone(),
            delivery,
            downlink: downlink.clone(),
            shared: Arc::clone(shared),
            birth,
            fleet_inbox: parts.fleet_inbox.clone(),
        },
        stop,
    ));
    Some(running::SyncRun {
        stop: stop_sync,
        session: session_task,
        downlink_task,
        downlink,
    })
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
