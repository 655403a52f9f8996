//! Sync with central over MQTT (uplink of outbox events, downlink of replica deltas) and
//! snapshots over HTTPS. See docs/contract.md.

pub mod wire;
