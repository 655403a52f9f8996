//! Store hardware: one thread per device, each sending typed [`DeviceEvent`]s into the core
//! over a bounded channel. A device that is unplugged, absent or misbehaving is a normal state
//! (reported as [`DeviceState`]), never an error that stops the agent.

pub mod hid;
pub mod pcsc;
pub mod rfid;
pub mod runtime;
pub mod serial;
pub mod simulated;

use serde::Serialize;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Stable name of a device in events, logs and the status page, e.g. `serial:/dev/ttyACM0`,
/// `pcsc:ACS ACR122U PICC Interface 00 00`, `llrp:192.0.2.10:5084`, `hid:/dev/input/event3`.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct DeviceId(pub String);

impl DeviceId {
    pub fn new(kind: &str, name: &str) -> DeviceId {
        DeviceId(format!("{kind}:{name}"))
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Open and working.
    Connected,
    /// Absent or unplugged: the driver keeps retrying with backoff.
    Disconnected,
    /// Present but misbehaving (bad init answer, protocol error); `detail` says what.
    Faulty,
}

/// What a device thread reports. Raw card identifiers travel only inside the process, from the
/// driver to the core, which hashes them before anything is stored; `Debug`/logs never show them.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeviceEvent {
    /// One framed barcode read, as the scanner sent it (AIM identifier kept when present).
    Scan {
        device: DeviceId,
        data: String,
        at_ms: i64,
    },
    /// A contactless card was presented; `uid` is the normalised ISO 14443 UID (upper-case hex).
    CardPresented {
        device: DeviceId,
        #[serde(skip)]
        uid: SecretUid,
        /// The identifier read from the loyalty applet the profile describes, when the card
        /// carries it: cards whose UID is random at every tap are known by this instead.
        #[serde(skip)]
        applet: Option<SecretUid>,
        atr_hex: String,
        at_ms: i64,
    },
    CardRemoved {
        device: DeviceId,
        at_ms: i64,
    },
    /// First read of an EPC on an antenna after the debounce window (not every raw read).
    TagArrived {
        device: DeviceId,
        epc_hex: String,
        antenna: u16,
        rssi_dbm: Option<i16>,
        at_ms: i64,
    },
    /// The EPC was not read on that antenna for the whole debounce window.
    TagDeparted {
        device: DeviceId,
        epc_hex: String,
        antenna: u16,
        reads: u64,
        at_ms: i64,
    },
    /// Connected / disconnected / faulty, with a human-readable reason.
    Status {
        device: DeviceId,
        state: DeviceState,
        detail: String,
        at_ms: i64,
    },
}

/// A card identifier on its way from a driver to the core, which hashes it. `Debug` shows
/// nothing of it, so no log line or panic message can leak a UID.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretUid(pub String);

impl fmt::Debug for SecretUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretUid(<redacted>)")
    }
}

/// Where device threads send events. Sending blocks when the core is behind (backpressure on a
/// device is better than losing a scan); it fails only when the core has shut down, which tells
/// the thread to exit.
#[derive(Clone)]
pub struct EventSink {
    sender: tokio::sync::mpsc::Sender<DeviceEvent>,
}

impl EventSink {
    pub fn channel(capacity: usize) -> (EventSink, tokio::sync::mpsc::Receiver<DeviceEvent>) {
        let (sender, receiver) = tokio::sync::mpsc::channel(capacity.max(1));
        (EventSink { sender }, receiver)
    }

    /// From a device thread (never from async code). Returns false when the core is gone.
    pub fn send(&self, event: DeviceEvent) -> bool {
        self.sender.blocking_send(event).is_ok()
    }
}

/// Cooperative stop flag shared by the core and its device threads; drivers check it at least
/// every [`POLL_INTERVAL`].
#[derive(Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }

    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Longest a driver may block in one read before checking [`Stop`].
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Reconnect backoff for absent devices: 0.5 s doubling to 10 s, so an unplugged scanner costs
/// nothing and a replugged one is back within seconds.
pub fn backoff(attempt: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << attempt.min(5));
    Duration::from_millis(ms.min(10_000))
}

pub fn now_ms() -> i64 {
    crate::storage::now_unix_ms()
}
