//! Relais: the in-store edge agent. See ARCHITECTURE.md for the code map and its invariants.

pub mod agent;
pub mod api;
pub mod cards;
#[cfg(feature = "central")]
pub mod central;
pub mod config;
pub mod decode;
pub mod demo;
pub mod devices;
pub mod doctor;
pub mod domain;
pub mod fleet;
pub mod identity;
pub mod logging;
pub mod outbox;
pub mod profiles;
pub mod provision;
pub mod read_events;
pub mod reads;
pub mod redact;
pub mod replica;
pub mod scan;
pub mod service;
pub mod storage;
pub mod sync;
pub mod tls;
