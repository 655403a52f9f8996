//! UHF RFID readers over LLRP (EPCglobal Low Level Reader Protocol, TCP port 5084): the
//! protocol codec, the debouncer that turns raw reads into arrived/departed events, and the
//! per-reader thread. See `docs/llrp.md`.

pub mod client;
pub mod debounce;
pub mod llrp;

pub use client::{ClientError, LlrpReaderConfig, spawn};
pub use debounce::{DebounceConfig, Debouncer, TagEvent};
