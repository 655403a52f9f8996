//! The service manager's side of `relais run` (sd_notify(3)): `READY=1` once storage is open and
//! the API listens, a `STATUS=` line an operator sees in `systemctl status`, `WATCHDOG=1` while
//! the async core is alive, and `STOPPING=1` when shutdown begins.
//!
//! Everything here is a no-op without `NOTIFY_SOCKET` (a terminal, the tests, a container without
//! systemd), and a failed send is only logged: losing a notification must never stop a store
//! from selling. With `Type=notify`, systemd itself fails the start when READY never comes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::sync::{LinkState, SyncShared, SyncStatus};

use sd_notify::NotifyState;

/// True when a service manager listens for our notifications.
fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn send(states: &[NotifyState<'_>]) {
    if !enabled() {
        return;
    }
    if let Err(error) = sd_notify::notify(states) {
        // Debug only: the socket going away (systemd restarting) is not the agent's problem.
        tracing::debug!(%error, "sd_notify failed");
    }
}

/// How often the `STATUS=` line is brought up to date with the broker link.
const STATUS_EVERY: Duration = Duration::from_secs(2);
/// `systemctl status` shows one line: a long broker error is cut here.
const STATUS_ERROR_CHARS: usize = 160;

/// The `STATUS=` line: where the agent serves and what its broker link does now, so
/// `systemctl status relais` does not say "broker configured" while every connection fails.
pub fn status_line(addr: SocketAddr, sync: &SyncStatus) -> String {
    let link = if !sync.configured {
        "offline (no broker configured)".to_owned()
    } else {
        match (sync.link, &sync.last_error) {
            (LinkState::Delivering, _) => "broker connected, delivering".to_owned(),
            (LinkState::Connecting, _) => "broker connecting".to_owned(),
            (LinkState::Disconnected, None) => "broker not connected yet".to_owned(),
            (state, None) => format!("broker {}", state.as_str()),
            (state, Some(error)) => format!(
                "broker failing ({}): {}",
                state.as_str(),
                crate::doctor::truncate(error, STATUS_ERROR_CHARS)
            ),
        }
    };
    format!("serving on {addr}; {link}")
}

/// The readiness and watchdog link for one `relais run`. Dropping it stops feeding the watchdog
/// and updating the status line.
pub struct ServiceLink {
    watchdog: Option<tokio::task::JoinHandle<()>>,
    status: Option<tokio::task::JoinHandle<()>>,
}

impl ServiceLink {
    /// Tell the service manager the agent is ready, and start feeding its watchdog when one is
    /// configured (`WATCHDOG_USEC`, for this pid). Must be called from inside the tokio runtime.
    pub fn ready(addr: SocketAddr, sync: Arc<SyncShared>) -> ServiceLink {
        if !enabled() {
            return ServiceLink {
                watchdog: None,
                status: None,
            };
        }
        let status = status_line(addr, &sync.status());
        send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        let status = Some(tokio::spawn(follow_status(addr, sync, status)));
        // WATCHDOG_USEC comes from the environment: a zero would make a zero-period timer.
        let watchdog = match sd_notify::watchdog_enabled() {
            Some(interval) if !interval.is_zero() => {
                tracing::info!(
                    interval_ms = interval.as_millis() as u64,
                    "systemd watchdog enabled"
                );
                Some(tokio::spawn(feed_watchdog(interval / 2)))
            }
            _ => None,
        };
        ServiceLink { watchdog, status }
    }
}

/// Send a new `STATUS=` whenever the line changes (a connection that starts failing, one
/// that delivers again).
async fn follow_status(addr: SocketAddr, sync: Arc<SyncShared>, mut sent: String) {
    let mut ticks = tokio::time::interval(STATUS_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let line = status_line(addr, &sync.status());
        if line != sent {
            send(&[NotifyState::Status(&line)]);
            sent = line;
        }
    }
}

impl Drop for ServiceLink {
    fn drop(&mut self) {
        if let Some(task) = self.watchdog.take() {
            task.abort();
        }
        if let Some(task) = self.status.take() {
            task.abort();
        }
    }
}

/// Ping at half the interval, as sd_watchdog_enabled(3) advises, so one late tick is not a
/// restart. The pings come from a task on the async core on purpose: if the runtime wedges
/// (a blocking call on a worker, a deadlock), the pings stop and systemd restarts the agent.
async fn feed_watchdog(every: Duration) {
    // A tiny interval would only burn CPU; systemd's own minimum is far above this.
    let every = every.max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval(every);
    // After a stall, one ping is enough; a burst of catch-up pings would hide nothing useful.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        send(&[NotifyState::Watchdog]);
    }
}

/// Tell the service manager shutdown has begun, so `systemctl status` says so while the API
/// drains and the outbox writer checkpoints.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: draining requests and the outbox writer"),
    ]);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_status_line_follows_the_broker_link_instead_of_saying_configured() {
        let addr: SocketAddr = "127.0.0.1:8750".parse().unwrap();
        let mut sync = SyncStatus {
            configured: true,
            connected: false,
            link: LinkState::Refused,
            last_puback_age_s: None,
            limits: None,
            since_ms: 0,
            delivered_since_start: 0,
            last_error: Some("the broker refused the connection: CONNACK 0x87".into()),
            paused_streams: Vec::new(),
        };
        let line = status_line(addr, &sync);
        assert!(
            line.contains("broker failing (refused): the broker refused"),
            "{line}"
        );
        assert!(!line.contains("configured"), "{line}");
        sync.link = LinkState::Delivering;
        assert!(status_line(addr, &sync).ends_with("broker connected, delivering"));
        sync.configured = false;
        assert!(status_line(addr, &sync).contains("offline"));
    }
}
