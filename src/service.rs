//! The service manager's side of `relais run` (sd_notify(3)): `READY=1` once storage is open and
//! the API listens, a `STATUS=` line an operator sees in `systemctl status`, `WATCHDOG=1` while
//! the async core is alive, and `STOPPING=1` when shutdown begins.
//!
//! Everything here is a no-op without `NOTIFY_SOCKET` (a terminal, the tests, a container without
//! systemd), and a failed send is only logged: losing a notification must never stop a store
//! from selling. With `Type=notify`, systemd itself fails the start when READY never comes.

use std::net::SocketAddr;
use std::time::Duration;

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

/// The readiness and watchdog link for one `relais run`. Dropping it stops feeding the watchdog.
pub struct ServiceLink {
    watchdog: Option<tokio::task::JoinHandle<()>>,
}

impl ServiceLink {
    /// Tell the service manager the agent is ready, and start feeding its watchdog when one is
    /// configured (`WATCHDOG_USEC`, for this pid). Must be called from inside the tokio runtime.
    pub fn ready(addr: SocketAddr, broker_configured: bool) -> ServiceLink {
        if !enabled() {
            return ServiceLink { watchdog: None };
        }
        let sync = if broker_configured {
            "broker configured"
        } else {
            "offline (no broker configured)"
        };
        let status = format!("serving on {addr}; {sync}");
        send(&[NotifyState::Ready, NotifyState::Status(&status)]);
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
        ServiceLink { watchdog }
    }
}

impl Drop for ServiceLink {
    fn drop(&mut self) {
        if let Some(task) = self.watchdog.take() {
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
