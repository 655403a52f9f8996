//! Downlink: replica deltas in version order, snapshots when a delta cannot apply.
//!
//! One task owns the decisions (which stream is refetching, which deltas wait for a
//! snapshot); the replica applier thread owns the writes. A bad message never reaches the
//! replica: it is refused, reported on `state`, and the stream pauses on its last good
//! version until a snapshot or a valid next delta arrives.

use super::SyncShared;
use super::snapshot::{SnapshotClient, SnapshotError};
use super::wire::{self, RplMessage};
use crate::replica::Stream;
use crate::replica::apply::{ApplierHandle, DeltaOutcome};
use crate::replica::delta::Delta;
use crate::replica::freshness::Confirmation;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub enum DownlinkMessage {
    Rpl {
        stream: String,
        payload: Vec<u8>,
    },
    /// A session came up: streams that never had a snapshot (or whose replica was moved
    /// aside) are fetched now.
    Connected,
}

#[derive(Clone)]
pub struct DownlinkHandle {
    sender: mpsc::Sender<DownlinkMessage>,
    /// Payload bytes queued for the downlink task (`MAX_QUEUED_BYTES`).
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

/// Payload bytes that may wait for the downlink task: the queue holds 64 messages, and 64 of
/// 4 MB would be 256 MB. Past it a message is dropped with a warning (a dropped delta shows up
/// as a gap, which fetches a snapshot); the session never waits on the downlink.
const MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;

impl DownlinkHandle {
    pub async fn send(&self, message: DownlinkMessage) {
        use std::sync::atomic::Ordering;
        let bytes = match &message {
            DownlinkMessage::Rpl { payload, .. } => payload.len(),
            DownlinkMessage::Connected => 0,
        };
        let queued = self.queued.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if bytes > 0 && queued > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
            if let DownlinkMessage::Rpl { stream, .. } = &message {
                tracing::warn!(%stream, bytes, queued, "downlink message dropped: the downlink is behind by more than 16 MiB; a dropped delta shows up as a gap and fetches a snapshot");
            }
            return;
        }
        if self.sender.send(message).await.is_err() {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    pub async fn connected(&self) {
        self.send(DownlinkMessage::Connected).await;
    }
}

pub struct DownlinkContext {
    pub applier: ApplierHandle,
    pub snapshots: Option<SnapshotClient>,
    pub snapshot_url: Option<String>,
    pub snapshot_dir: PathBuf,
    pub shared: Arc<SyncShared>,
}

/// Deltas kept while a stream refetches; beyond this the snapshot's successor deltas are
/// dropped and the next gap simply triggers another refetch.
const MAX_BUFFERED_DELTAS: usize = 256;

/// Bytes of deltas (as received) kept while streams refetch, all streams together: a parsed
/// delta holds several times its JSON in memory, and 30 deltas of 4 MB once took the agent from
/// 15 MB to 2 GB (docs/security.md, finding 4). Past it, later deltas are dropped like past the
/// count: the next gap after the snapshot triggers another refetch.
const MAX_BUFFERED_BYTES: usize = 8 * 1024 * 1024;

pub fn start(ctx: DownlinkContext) -> (DownlinkHandle, tokio::task::JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel(64);
    let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let task = tokio::spawn(run(ctx, receiver, Arc::clone(&queued)));
    (DownlinkHandle { sender, queued }, task)
}

struct Refetch {
    buffered: BTreeMap<u64, Delta>,
    /// JSON bytes of `buffered`, as received.
    bytes: usize,
}

/// Refetch bookkeeping: what is running, and when each stream last finished one, so a
/// snapshot that is older than the deltas around it does not turn into a download loop.
#[derive(Default)]
struct Refetches {
    running: HashMap<Stream, Refetch>,
    finished: HashMap<Stream, std::time::Instant>,
    /// The download tasks, owned here rather than detached: when sync stops (shutdown, a
    /// reload) the downlink task is aborted, this set is dropped with it and aborts them. A
    /// detached task kept its applier handle, so the applier thread (and SIGTERM) waited for
    /// a hung download's retries: 72 s, past the unit's TimeoutStopSec (issue 16).
    tasks: tokio::task::JoinSet<()>,
}

impl Refetches {
    /// JSON bytes buffered by every running refetch.
    fn buffered_bytes(&self) -> usize {
        self.running.values().map(|r| r.bytes).sum()
    }

    /// Keep `delta` (`bytes` as received) for after `stream`'s snapshot, if within the bounds.
    fn buffer(&mut self, stream: Stream, delta: Delta, bytes: usize) {
        let total = self.buffered_bytes();
        let Some(refetch) = self.running.get_mut(&stream) else {
            return;
        };
        if refetch.buffered.len() >= MAX_BUFFERED_DELTAS
            || total.saturating_add(bytes) > MAX_BUFFERED_BYTES
        {
            tracing::warn!(%stream, version = delta.version, bytes, buffered = refetch.buffered.len(),
                buffered_bytes = total,
                "delta dropped while the snapshot downloads (buffer full); the next gap fetches again");
            return;
        }
        refetch.bytes += bytes;
        refetch.buffered.insert(delta.version, delta);
    }
}

/// A second refetch of the same stream within this window waits for it to pass.
const REFETCH_COOLDOWN: Duration = Duration::from_secs(30);

/// Why a refetch starts: only an explicit need makes a missing manifest entry an error.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    /// A gap: the stream cannot progress without it.
    Required,
    /// Central asked (must_refetch): no cooldown, central knows it has something new.
    Asked,
    /// The stream is empty at connect (new box, replica moved aside): fetch if central has one.
    IfPublished,
}

async fn run(
    ctx: DownlinkContext,
    mut receiver: mpsc::Receiver<DownlinkMessage>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
) {
    let ctx = Arc::new(ctx);
    let mut refetching = Refetches::default();
    let (done_tx, mut done_rx) = mpsc::channel::<(Stream, Result<Option<u64>, String>)>(8);
    loop {
        tokio::select! {
            message = receiver.recv() => {
                let Some(message) = message else { return };
                match message {
                    DownlinkMessage::Connected => {
                        let states = ctx.applier.stream_states().await.unwrap_or_default();
                        for state in states {
                            if state.version == 0 && ctx.snapshot_url.is_some() && !refetching.running.contains_key(&state.stream) {
                                tracing::info!(stream = %state.stream, "no replica data yet: fetching a snapshot");
                                start_refetch(&ctx, state.stream, None, Need::IfPublished, &mut refetching, &done_tx);
                            }
                        }
                    }
                    DownlinkMessage::Rpl { stream, payload } => {
                        let bytes = payload.len();
                        handle_rpl(&ctx, &stream, payload, &mut refetching, &done_tx).await;
                        queued.fetch_sub(bytes, std::sync::atomic::Ordering::AcqRel);
                    }
                }
            }
            Some((stream, result)) = done_rx.recv() => {
                let Some(mut refetch) = refetching.running.remove(&stream) else { continue };
                refetching.finished.insert(stream, std::time::Instant::now());
                match result {
                    Ok(None) => {
                        tracing::info!(%stream, "central publishes no snapshot of this stream yet; waiting for deltas");
                    }
                    Ok(Some(version)) => {
                        tracing::info!(%stream, version, buffered = refetch.buffered.len(), "snapshot imported; applying the deltas that came meanwhile");
                        ctx.shared.resume_stream(stream);
                        let mut pending = refetch.buffered.split_off(&(version + 1)).into_values();
                        for delta in pending.by_ref() {
                            if !apply(&ctx, delta, &mut refetching, &done_tx).await {
                                break;
                            }
                        }
                        // A new gap started another refetch: what was not applied waits for it.
                        for delta in pending {
                            let bytes = delta.ops.len().saturating_mul(64);
                            refetching.buffer(stream, delta, bytes);
                        }
                    }
                    Err(reason) => {
                        tracing::error!(%stream, %reason, "snapshot refetch failed; the stream keeps its last good data");
                        ctx.shared.pause_stream(stream, format!("snapshot refetch failed: {reason}"));
                    }
                }
            }
        }
    }
}

async fn handle_rpl(
    ctx: &Arc<DownlinkContext>,
    topic_stream: &str,
    payload: Vec<u8>,
    refetching: &mut Refetches,
    done: &mpsc::Sender<(Stream, Result<Option<u64>, String>)>,
) {
    let Some(stream) = Stream::ALL.into_iter().find(|s| s.name() == topic_stream) else {
        tracing::warn!(topic_stream, "delta on an unknown stream topic; ignored");
        return;
    };
    if payload.len() > wire::MAX_DOWNLINK_BYTES {
        refuse(
            ctx,
            stream,
            format!(
                "a downlink message of {} bytes exceeds the {} byte limit",
                payload.len(),
                wire::MAX_DOWNLINK_BYTES
            ),
        );
        return;
    }
    // A 50,000-op delta takes tens of milliseconds to parse: off the async workers.
    let bytes = payload.len();
    let parsed = tokio::task::spawn_blocking(move || parse_rpl(&payload)).await;
    let message = match parsed {
        Ok(Ok(m)) => m,
        Ok(Err(reason)) => {
            refuse(ctx, stream, reason);
            return;
        }
        Err(e) => {
            refuse(ctx, stream, format!("parsing the message failed: {e}"));
            return;
        }
    };
    match message {
        RplMessage::Control(control) => {
            if control.stream != stream
                || control.v != wire::CONTRACT_VERSION
                || !control.must_refetch
            {
                refuse(
                    ctx,
                    stream,
                    "control message for another stream, version or action".into(),
                );
                return;
            }
            if !refetching.running.contains_key(&stream) {
                tracing::info!(%stream, reason = control.reason.as_deref().unwrap_or(""), "central asked for a refetch");
                start_refetch(
                    ctx,
                    stream,
                    control.manifest_url,
                    Need::Asked,
                    refetching,
                    done,
                );
            }
        }
        RplMessage::Heartbeat(heartbeat) => {
            if heartbeat.stream != stream || heartbeat.v != wire::CONTRACT_VERSION {
                refuse(
                    ctx,
                    stream,
                    format!(
                        "a heartbeat of contract version {} for {} arrived on the {stream} topic",
                        heartbeat.v, heartbeat.stream
                    ),
                );
                return;
            }
            // A refetch sets the version at its swap: there is nothing to confirm until then,
            // and a heartbeat ahead is what the refetch is already for.
            if refetching.running.contains_key(&stream) {
                return;
            }
            heartbeat_received(ctx, heartbeat, refetching, done).await;
        }
        RplMessage::Delta(delta) => {
            if delta.stream != stream {
                refuse(
                    ctx,
                    stream,
                    format!("a {} delta arrived on the {stream} topic", delta.stream),
                );
                return;
            }
            if refetching.running.contains_key(&stream) {
                refetching.buffer(stream, delta, bytes);
                return;
            }
            apply(ctx, delta, refetching, done).await;
        }
    }
}

/// Apply one delta; returns false when it could not (gap or refusal).
async fn apply(
    ctx: &Arc<DownlinkContext>,
    delta: Delta,
    refetching: &mut Refetches,
    done: &mpsc::Sender<(Stream, Result<Option<u64>, String>)>,
) -> bool {
    let stream = delta.stream;
    // Kept for a gap: the delta that revealed it is the first to apply after the snapshot.
    let kept = delta.clone();
    match ctx.applier.apply_delta(delta).await {
        Ok(DeltaOutcome::Applied { version, ops, .. }) => {
            tracing::debug!(%stream, version, ops, "delta applied");
            ctx.shared.resume_stream(stream);
            true
        }
        Ok(DeltaOutcome::AlreadyApplied { version, live, .. }) => {
            tracing::debug!(%stream, version, live, "delta already applied; ignored");
            true
        }
        Ok(DeltaOutcome::Gap { expected, got, .. }) => {
            tracing::warn!(%stream, expected, got, "delta gap: fetching a snapshot");
            start_refetch(ctx, stream, None, Need::Required, refetching, done);
            // Its size as JSON is not known here: counted by its ops, as a parsed delta holds.
            let bytes = kept.ops.len().saturating_mul(64);
            refetching.buffer(stream, kept, bytes);
            false
        }
        Err(e) => {
            refuse(ctx, stream, e.to_string());
            false
        }
    }
}

/// Central says the stream is current at a version: confirm it, refetch when central is ahead
/// (versions were lost on the way, as for a delta gap), ignore a replay.
async fn heartbeat_received(
    ctx: &Arc<DownlinkContext>,
    heartbeat: wire::RplHeartbeat,
    refetching: &mut Refetches,
    done: &mpsc::Sender<(Stream, Result<Option<u64>, String>)>,
) {
    let stream = heartbeat.stream;
    match ctx
        .applier
        .confirm(stream, heartbeat.current_version, heartbeat.at_ms)
        .await
    {
        Ok(Confirmation::Confirmed {
            version,
            confirmed_ms,
            ..
        }) => {
            tracing::debug!(%stream, version, confirmed_ms, "central confirmed the stream is current");
        }
        Ok(Confirmation::Ahead { live, got, .. }) => {
            tracing::warn!(%stream, live, central = got, "central's heartbeat is ahead of the replica: fetching a snapshot");
            start_refetch(ctx, stream, None, Need::Required, refetching, done);
        }
        Ok(Confirmation::Behind { live, got, .. }) => {
            tracing::debug!(%stream, live, heartbeat = got, "heartbeat older than the replica; ignored");
        }
        Err(e) => {
            tracing::warn!(%stream, error = %e, "central's heartbeat could not be recorded; the stream's age counts from its last change");
        }
    }
}

/// A delta or a control message; when neither, the reason names the field that is wrong
/// (serde's untagged enums only say "did not match any variant").
fn parse_rpl(payload: &[u8]) -> Result<RplMessage, String> {
    if let Ok(message) = serde_json::from_slice::<RplMessage>(payload) {
        return Ok(message);
    }
    let value = serde_json::from_slice::<serde_json::Value>(payload).ok();
    let has = |field: &str| value.as_ref().is_some_and(|v| v.get(field).is_some());
    if has("current_version") {
        return match serde_json::from_slice::<wire::RplHeartbeat>(payload) {
            Ok(heartbeat) => Ok(RplMessage::Heartbeat(heartbeat)),
            Err(e) => Err(format!("not a valid heartbeat of the contract: {e}")),
        };
    }
    if has("must_refetch") {
        return match serde_json::from_slice::<wire::RplControl>(payload) {
            Ok(control) => Ok(RplMessage::Control(control)),
            Err(e) => Err(format!("not a valid control message of the contract: {e}")),
        };
    }
    match Delta::from_json(payload) {
        // Checked in full here, on the blocking pool: a delta is never buffered (or applied)
        // before its rows passed the rules a snapshot line passes.
        Ok(delta) => match delta.validate() {
            Ok(()) => Ok(RplMessage::Delta(delta)),
            Err(reason) => Err(format!("not a valid delta of the contract: {reason}")),
        },
        Err(e) => Err(format!("not a valid delta of the contract: {}", e.reason)),
    }
}

fn refuse(ctx: &DownlinkContext, stream: Stream, reason: String) {
    tracing::error!(%stream, %reason, "downlink message refused; the stream keeps its last good data");
    ctx.shared.pause_stream(stream, reason);
}

fn start_refetch(
    ctx: &Arc<DownlinkContext>,
    stream: Stream,
    manifest_url: Option<String>,
    need: Need,
    refetching: &mut Refetches,
    done: &mpsc::Sender<(Stream, Result<Option<u64>, String>)>,
) {
    let Some(url) = manifest_url.or_else(|| ctx.snapshot_url.clone()) else {
        ctx.shared.pause_stream(
            stream,
            "a snapshot is needed but sync.snapshot_url is not configured".into(),
        );
        return;
    };
    if !url.starts_with("https://") {
        ctx.shared
            .pause_stream(stream, format!("snapshot URL {url:?} is not https://"));
        return;
    }
    if refetching.running.contains_key(&stream) {
        return;
    }
    let wait = match need {
        Need::Asked => Duration::ZERO,
        Need::Required | Need::IfPublished => refetching
            .finished
            .get(&stream)
            .map(|at| REFETCH_COOLDOWN.saturating_sub(at.elapsed()))
            .unwrap_or_default(),
    };
    refetching.running.insert(
        stream,
        Refetch {
            buffered: BTreeMap::new(),
            bytes: 0,
        },
    );
    let ctx = Arc::clone(ctx);
    let done = done.clone();
    // Reap the finished ones (their results went through `done`).
    while refetching.tasks.try_join_next().is_some() {}
    refetching.tasks.spawn(async move {
        if !wait.is_zero() {
            tracing::warn!(%stream, wait_s = wait.as_secs(), "another snapshot needed right after the last one (is central's snapshot older than its deltas?); waiting before fetching again");
            tokio::time::sleep(wait).await;
        }
        let result = refetch_with_retries(&ctx, stream, &url, need).await;
        let _ = done.send((stream, result)).await;
    });
}

/// Fetch and import, retrying transient failures with backoff; a checksum mismatch is
/// retried too (the part is discarded), a refused import is not.
async fn refetch_with_retries(
    ctx: &DownlinkContext,
    stream: Stream,
    url: &str,
    need: Need,
) -> Result<Option<u64>, String> {
    let Some(client) = ctx.snapshots.as_ref() else {
        return Err("no HTTPS client (TLS configuration failed at startup)".into());
    };
    let mut backoff = super::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut attempts = 0;
    loop {
        attempts += 1;
        match refetch_once(ctx, client, stream, url, need).await {
            Ok(version) => return Ok(version),
            Err(RefetchError::Final(reason)) => return Err(reason),
            Err(RefetchError::Retry(reason)) if attempts < 8 => {
                tracing::warn!(%stream, attempt = attempts, %reason, "snapshot download failed; resuming after a pause");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(RefetchError::Retry(reason)) => return Err(reason),
        }
    }
}

enum RefetchError {
    Retry(String),
    Final(String),
}

async fn refetch_once(
    ctx: &DownlinkContext,
    client: &SnapshotClient,
    stream: Stream,
    url: &str,
    need: Need,
) -> Result<Option<u64>, RefetchError> {
    let retry = |e: SnapshotError| RefetchError::Retry(e.to_string());
    let manifest = client.manifest(url).await.map_err(retry)?;
    let Some(entry) = manifest.streams.iter().find(|e| e.stream == stream) else {
        if need == Need::IfPublished {
            return Ok(None);
        }
        return Err(RefetchError::Final(format!(
            "the manifest at {url} has no {stream} snapshot"
        )));
    };
    let mut last_logged = std::time::Instant::now();
    let mut progress = |done: u64, total: u64| {
        if last_logged.elapsed() >= Duration::from_secs(2) {
            last_logged = std::time::Instant::now();
            tracing::info!(%stream, done, total, "downloading snapshot");
        }
    };
    let file = client
        .download(url, entry, &ctx.snapshot_dir, &mut progress)
        .await
        .map_err(retry)?;
    let result = ctx
        .applier
        .import_snapshot(stream, file.clone(), entry.version)
        .await;
    // The verified file is not needed once imported (or refused): the next refetch downloads
    // the snapshot of that day anyway.
    let _ = std::fs::remove_file(&file);
    match result {
        Ok(report) => Ok(Some(report.version)),
        Err(e) => Err(RefetchError::Final(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_delta_is_refused_with_the_op_and_field_that_are_wrong() {
        let bad = br#"{"v":1,"stream":"products","version":3,"ops":[{"op":"patch","row":{}}]}"#;
        let reason = parse_rpl(bad).err().unwrap_or_default();
        assert!(reason.contains("ops[0]"), "{reason}");
        let control = br#"{"v":1,"stream":"products","must_refetch":true,"extra":1}"#;
        let reason = parse_rpl(control).err().unwrap_or_default();
        assert!(reason.contains("control message"), "{reason}");
        let good = br#"{"v":1,"stream":"stock","must_refetch":true}"#;
        assert!(matches!(parse_rpl(good), Ok(RplMessage::Control(_))));
    }

    #[test]
    fn a_heartbeat_parses_and_a_malformed_one_names_what_is_wrong() {
        let good = br#"{"v":1,"stream":"stock","current_version":42,"at_ms":1765100000000}"#;
        match parse_rpl(good) {
            Ok(RplMessage::Heartbeat(h)) => {
                assert_eq!((h.stream, h.current_version), (Stream::Stock, 42))
            }
            other => panic!("{other:?}"),
        }
        let bad = br#"{"v":1,"stream":"stock","current_version":-1,"at_ms":0}"#;
        let reason = parse_rpl(bad).err().unwrap_or_default();
        assert!(reason.contains("heartbeat"), "{reason}");
        let missing = br#"{"v":1,"stream":"stock","current_version":4}"#;
        let reason = parse_rpl(missing).err().unwrap_or_default();
        assert!(reason.contains("at_ms"), "{reason}");
    }
}
