//! Sync with central over MQTT (uplink of outbox events, downlink of replica deltas) and
//! snapshots over HTTPS. See docs/contract.md and docs/adr/0007-mqtt-topics-and-delivery.md.
//!
//! Only this module (and `central/`, its counterpart) knows topics and wire types.

pub mod downlink;
pub(crate) mod ending;
pub mod limits;
pub mod mqtt;
pub mod schemas;
pub mod session;
pub mod snapshot;
pub mod uplink;
pub mod wire;

use crate::replica::Stream;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("no broker configured (sync.broker); running offline")]
    NotConfigured,
    #[error(
        "cannot read {path}: {source}. Provision the broker credentials (relais provision) or fix sync.password_file"
    )]
    Secret {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "TLS setup for the broker failed: {0}. Check sync.ca_file, sync.client_cert_file and sync.client_key_file"
    )]
    Tls(#[from] crate::tls::TlsError),
    #[error("broker connection: {0}")]
    Connection(String),
}

/// What the rest of the agent (health, status page, birth message) sees of sync.
#[derive(Default)]
pub struct SyncShared {
    configured: AtomicBool,
    connected: AtomicBool,
    /// This connection's ACL echo came back (`session/echo.rs`); false again when it ends.
    echoed: AtomicBool,
    link: Mutex<LinkState>,
    limits: Mutex<Option<limits::BrokerLimits>>,
    /// Unix ms of the last success PUBACK (0: none since start).
    last_puback_ms: AtomicI64,
    since_ms: AtomicI64,
    delivered: AtomicU64,
    last_error: Mutex<Option<String>>,
    paused: Mutex<BTreeMap<Stream, String>>,
    state_changed: Option<tokio::sync::watch::Sender<()>>,
    fleet_out: Mutex<FleetOutbox>,
    fleet_out_changed: Option<tokio::sync::watch::Sender<()>>,
}

/// A fleet message from central, for the agent's control loop.
#[derive(Debug, Clone)]
pub enum FleetInbound {
    /// A `cfg/desired` document (retained: it comes again at every connect).
    Desired(Vec<u8>),
    /// A `cmd/req` document.
    Command(Vec<u8>),
}

/// Fleet messages for central, published by whichever session is connected.
#[derive(Debug, Default)]
struct FleetOutbox {
    /// The latest `cfg/reported` (retained), published at every connect and when it changes.
    reported: Option<Vec<u8>>,
    reported_sent: bool,
    /// `cmd/res` not yet published; bounded, oldest dropped (central re-asks a command whose
    /// answer never came).
    results: std::collections::VecDeque<Vec<u8>>,
}

/// Command results kept while offline.
const MAX_PENDING_RESULTS: usize = 64;

/// What a session should publish now.
#[derive(Debug, Default)]
pub struct FleetPublish {
    pub reported: Option<Vec<u8>>,
    pub results: Vec<Vec<u8>>,
}

/// What the link is doing, for health, metrics and the doctor. `connected` is true only in
/// `Delivering`: a broker that takes the connection but acknowledges nothing is not "connected".
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// No broker configured, or not tried yet.
    #[default]
    Disconnected,
    /// TCP/TLS/CONNECT under way, or connected and waiting for the first PUBACK (the birth).
    Connecting,
    /// Connected, and the broker acknowledges what the agent publishes.
    Delivering,
    /// A connection was closed because the broker stopped acknowledging or reading (PUBACK
    /// timeout, write stall, unanswered PINGREQ), and no session delivered since (reconnects
    /// keep this state); `last_error` says which.
    Stalled,
    /// The broker refused the connection or announced limits the agent cannot work with, and no
    /// session delivered since; `last_error` says which and what to change.
    Refused,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Disconnected => "disconnected",
            LinkState::Connecting => "connecting",
            LinkState::Delivering => "delivering",
            LinkState::Stalled => "stalled",
            LinkState::Refused => "refused",
        }
    }
}

/// Health's view of sync.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SyncStatus {
    pub configured: bool,
    /// True only while the broker acknowledges what the agent publishes (`link` = delivering).
    pub connected: bool,
    pub link: LinkState,
    /// Seconds since the last success PUBACK; null when none came since the agent started.
    pub last_puback_age_s: Option<f64>,
    /// The broker's limits from the last CONNACK and what the agent uses under them.
    pub limits: Option<limits::BrokerLimits>,
    /// Since when the link is in its current state (unix ms; 0 before the first attempt).
    pub since_ms: i64,
    pub delivered_since_start: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub paused_streams: Vec<wire::PausedStream>,
}

impl SyncShared {
    pub fn new(configured: bool) -> SyncShared {
        SyncShared {
            configured: AtomicBool::new(configured),
            state_changed: Some(tokio::sync::watch::channel(()).0),
            fleet_out_changed: Some(tokio::sync::watch::channel(()).0),
            ..SyncShared::default()
        }
    }

    /// Whether a broker is configured (a reload may add or remove it).
    pub fn set_configured(&self, configured: bool) {
        self.configured.store(configured, Ordering::Relaxed);
    }

    /// The config report to publish (retained) on `cfg/reported`.
    pub fn report_config(&self, payload: Vec<u8>) {
        if let Ok(mut out) = self.fleet_out.lock() {
            out.reported = Some(payload);
            out.reported_sent = false;
        }
        if let Some(tx) = &self.fleet_out_changed {
            tx.send_replace(());
        }
    }

    /// A command result to publish on `cmd/res`.
    pub fn push_command_result(&self, payload: Vec<u8>) {
        if let Ok(mut out) = self.fleet_out.lock() {
            if out.results.len() >= MAX_PENDING_RESULTS {
                out.results.pop_front();
            }
            out.results.push_back(payload);
        }
        if let Some(tx) = &self.fleet_out_changed {
            tx.send_replace(());
        }
    }

    /// Take what a session must publish. After a (re)connect, `fresh_session` re-sends the
    /// retained report too, in case the broker lost it.
    pub fn take_fleet_publish(&self, fresh_session: bool) -> FleetPublish {
        let Ok(mut out) = self.fleet_out.lock() else {
            return FleetPublish::default();
        };
        let reported = if fresh_session || !out.reported_sent {
            out.reported_sent = true;
            out.reported.clone()
        } else {
            None
        };
        FleetPublish {
            reported,
            results: out.results.drain(..).collect(),
        }
    }

    /// Put results back when a session could not publish them.
    pub fn return_command_results(&self, results: Vec<Vec<u8>>) {
        if let Ok(mut out) = self.fleet_out.lock() {
            for r in results.into_iter().rev() {
                out.results.push_front(r);
            }
            out.results.truncate(MAX_PENDING_RESULTS);
        }
    }

    pub fn fleet_out_changed(&self) -> tokio::sync::watch::Receiver<()> {
        match &self.fleet_out_changed {
            Some(tx) => tx.subscribe(),
            None => tokio::sync::watch::channel(()).1,
        }
    }

    pub fn status(&self) -> SyncStatus {
        SyncStatus {
            configured: self.configured.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
            link: self.link.lock().map(|l| *l).unwrap_or_default(),
            last_puback_age_s: self.last_puback_age_s(),
            limits: self.limits.lock().ok().and_then(|l| l.clone()),
            since_ms: self.since_ms.load(Ordering::Relaxed),
            delivered_since_start: self.delivered.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
            paused_streams: self.paused_streams(),
        }
    }

    pub fn paused_streams(&self) -> Vec<wire::PausedStream> {
        self.paused
            .lock()
            .map(|p| {
                p.iter()
                    .map(|(stream, reason)| wire::PausedStream {
                        stream: *stream,
                        reason: reason.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn link_state(&self) -> LinkState {
        self.link.lock().map(|l| *l).unwrap_or_default()
    }

    /// Seconds since the last success PUBACK (None: none since start).
    pub fn last_puback_age_s(&self) -> Option<f64> {
        let at = self.last_puback_ms.load(Ordering::Relaxed);
        (at > 0).then(|| {
            let age = crate::storage::now_unix_ms().saturating_sub(at).max(0);
            age as f64 / 1000.0
        })
    }

    pub(crate) fn set_link(&self, state: LinkState) {
        let changed = self
            .link
            .lock()
            .map(|mut l| std::mem::replace(&mut *l, state) != state)
            .unwrap_or(false);
        let up = state == LinkState::Delivering;
        self.connected.store(up, Ordering::Relaxed);
        if !up {
            self.echoed.store(false, Ordering::Relaxed);
        }
        if changed {
            self.since_ms
                .store(crate::storage::now_unix_ms(), Ordering::Relaxed);
        }
        if up && let Ok(mut e) = self.last_error.lock() {
            *e = None;
        }
    }

    /// Whether the broker of the current connection delivered the agent's own probe back:
    /// it accepts this agent's identity for writing and reading its topics.
    pub fn echoed(&self) -> bool {
        self.echoed.load(Ordering::Relaxed)
    }

    pub(crate) fn set_echoed(&self, echoed: bool) {
        self.echoed.store(echoed, Ordering::Relaxed);
    }

    pub(crate) fn set_limits(&self, limits: Option<limits::BrokerLimits>) {
        if let Ok(mut l) = self.limits.lock() {
            *l = limits;
        }
    }

    pub(crate) fn record_puback(&self) {
        self.last_puback_ms
            .store(crate::storage::now_unix_ms(), Ordering::Relaxed);
    }

    pub(crate) fn set_error(&self, error: String) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error);
        }
    }

    pub(crate) fn record_delivered(&self, events: u64) {
        self.delivered.fetch_add(events, Ordering::Relaxed);
    }

    pub(crate) fn pause_stream(&self, stream: Stream, reason: String) {
        if let Ok(mut p) = self.paused.lock() {
            p.insert(stream, reason);
        }
        self.touch_state();
    }

    pub(crate) fn resume_stream(&self, stream: Stream) {
        let removed = self
            .paused
            .lock()
            .map(|mut p| p.remove(&stream).is_some())
            .unwrap_or(false);
        if removed {
            self.touch_state();
        }
    }

    /// Something reported on `state` changed: the session republishes it.
    pub(crate) fn touch_state(&self) {
        if let Some(tx) = &self.state_changed {
            tx.send_replace(());
        }
    }

    pub(crate) fn state_changed(&self) -> tokio::sync::watch::Receiver<()> {
        match &self.state_changed {
            Some(tx) => {
                let mut rx = tx.subscribe();
                rx.mark_unchanged();
                rx
            }
            None => tokio::sync::watch::channel(()).1,
        }
    }
}

/// Exponential backoff with full jitter: a fleet of stores that lost the same broker must
/// not reconnect in lockstep when it comes back.
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let millis = ceiling.as_millis().max(1) as u64;
        // Half fixed, half random: never zero (no hot loop), never above the ceiling.
        Duration::from_millis(millis / 2 + rand::random_range(0..=millis / 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_ceiling_and_stays_jittered_below_it() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(delays[9] >= Duration::from_secs(1), "{delays:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
