//! The agent's own MQTT 5.0 client (ADR 0018): a codec written from the specification and one
//! connection's reader and writer tasks. The session (`sync::session`) decides everything
//! else: what to publish, packet ids, the in-flight window, timeouts.

pub mod codec;
pub mod link;
