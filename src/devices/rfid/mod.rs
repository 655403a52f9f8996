//! UHF RFID readers: fixed readers over LLRP (EPCglobal Low Level Reader Protocol, TCP port
//! 5084) and UHF modules on a serial port speaking the MagicRF M100 protocol. Each has its codec
//! and its per-reader thread; both feed the same debouncer ([`presence`]) that turns raw reads
//! into arrived/departed events. See `docs/llrp.md` and `docs/rfid-serial.md`.

pub mod client;
pub mod debounce;
pub mod llrp;
pub mod m100;
pub mod presence;
pub mod serial_reader;

pub use client::{ClientError, LlrpReaderConfig, spawn, spawn_with_profiles};
pub use debounce::{DebounceConfig, Debouncer, TagEvent};
pub use serial_reader::RfidSerialConfig;
