//! The ACL echo (issue 16, finding 7): at every connect the session publishes a fresh nonce on
//! its own `echo` topic, to which it subscribed first, and reads it back. A broker that takes
//! the CONNECT and acknowledges the agent's publishes can still refuse it read access to its
//! own topics (Mosquitto grants every subscription and enforces read access only on delivery):
//! such a broker would never deliver central's acks, deltas, config or commands. Only the echo
//! proves the broker accepts this agent's identity both ways; a remote config that moves the
//! agent to a new broker is promoted only on it (`agent::fleet_link`).

use super::{Session, What};

impl Session<'_> {
    pub(super) async fn publish_echo(&mut self) -> Result<(), super::SessionEnd> {
        self.echo_nonce = format!(
            "{{\"echo\":\"{}\",\"at_ms\":{}}}",
            uuid::Uuid::now_v7(),
            crate::storage::now_unix_ms()
        )
        .into_bytes();
        let topic = self.topics.echo();
        let payload = self.echo_nonce.clone();
        self.publish_other(topic, false, payload, What::Echo).await
    }

    /// A message on `echo`: only this session's own nonce counts (a retained or replayed
    /// probe from another connection proves nothing about this one).
    pub(super) fn on_echo(&mut self, payload: &[u8]) {
        if self.echo_nonce.is_empty() || payload != self.echo_nonce.as_slice() {
            tracing::debug!("a message on echo that is not this session's probe; ignored");
            return;
        }
        if !self.ctx.shared.echoed() {
            tracing::info!("the broker delivers the agent's own topics back (ACL echo)");
        }
        self.ctx.shared.set_echoed(true);
    }
}
