//! One thread per serial scanner port: open with the profile's transport, read with a
//! [`POLL_INTERVAL`] timeout, frame, and send [`DeviceEvent::Scan`]. A port that vanishes is a
//! normal state: `Status Disconnected` with the reason, reopen with [`backoff`], `Status
//! Connected` when it is back. The framing profile is fixed for the life of the thread; a profile
//! reload takes effect when the agent restarts the driver.

use super::SerialScannerConfig;
use super::framing::{Framer, FramingCounters};
use crate::devices::{
    DeviceEvent, DeviceId, DeviceState, EventSink, POLL_INTERVAL, Stop, backoff, now_ms,
};
use crate::profiles::{FlowControl, Framing, Parity, Profile, Transport};
use serde::Serialize;
use std::io::{ErrorKind, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Live counters of one port, shared with the status page. Framing counters are cumulative
/// across reconnects.
#[derive(Debug, Default)]
pub struct SerialCounters {
    bytes: AtomicU64,
    frames: AtomicU64,
    discarded_oversize: AtomicU64,
    discarded_garbage: AtomicU64,
    discarded_timeout: AtomicU64,
    discarded_invalid_utf8: AtomicU64,
    discarded_cut: AtomicU64,
    garbage_bytes: AtomicU64,
    connects: AtomicU64,
    disconnects: AtomicU64,
    open_failures: AtomicU64,
    connected: AtomicBool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SerialCountersSnapshot {
    #[serde(flatten)]
    pub framing: FramingCounters,
    /// Successful opens.
    pub connects: u64,
    /// Losses of an open port (read error, end of file, device removed).
    pub disconnects: u64,
    /// Failed open attempts.
    pub open_failures: u64,
    pub connected: bool,
}

impl SerialCounters {
    pub fn snapshot(&self) -> SerialCountersSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SerialCountersSnapshot {
            framing: FramingCounters {
                bytes: l(&self.bytes),
                frames: l(&self.frames),
                discarded_oversize: l(&self.discarded_oversize),
                discarded_garbage: l(&self.discarded_garbage),
                discarded_timeout: l(&self.discarded_timeout),
                discarded_invalid_utf8: l(&self.discarded_invalid_utf8),
                discarded_cut: l(&self.discarded_cut),
                garbage_bytes: l(&self.garbage_bytes),
            },
            connects: l(&self.connects),
            disconnects: l(&self.disconnects),
            open_failures: l(&self.open_failures),
            connected: self.connected.load(Ordering::Relaxed),
        }
    }

    fn publish(&self, c: &FramingCounters) {
        let s = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        s(&self.bytes, c.bytes);
        s(&self.frames, c.frames);
        s(&self.discarded_oversize, c.discarded_oversize);
        s(&self.discarded_garbage, c.discarded_garbage);
        s(&self.discarded_timeout, c.discarded_timeout);
        s(&self.discarded_invalid_utf8, c.discarded_invalid_utf8);
        s(&self.discarded_cut, c.discarded_cut);
        s(&self.garbage_bytes, c.garbage_bytes);
    }
}

/// Start the port's thread. Fails only if the OS cannot create a thread or the profile is not
/// a serial scanner profile (a misconfiguration the caller reports).
pub fn spawn(
    config: SerialScannerConfig,
    profile: Arc<Profile>,
    sink: EventSink,
    stop: Stop,
) -> std::io::Result<JoinHandle<()>> {
    spawn_with_counters(config, profile, sink, stop, Arc::default())
}

/// [`spawn`], publishing the port's counters into `counters` (keep a clone for the status page).
pub fn spawn_with_counters(
    config: SerialScannerConfig,
    profile: Arc<Profile>,
    sink: EventSink,
    stop: Stop,
    counters: Arc<SerialCounters>,
) -> std::io::Result<JoinHandle<()>> {
    let (Some(transport), Some(framing)) = (profile.transport.clone(), profile.framing.clone())
    else {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            format!(
                "profile {} is a {} profile without serial transport/framing; give serial \
                 scanner {:?} a serial_scanner profile",
                profile.id,
                profile.kind.as_str(),
                config.name
            ),
        ));
    };
    let port = Port {
        device: DeviceId::new("serial", &config.name),
        config,
        profile,
        transport,
        framing,
        sink,
        stop,
        counters,
    };
    std::thread::Builder::new()
        .name(format!("serial-{}", port.config.name))
        .spawn(move || port.run())
}

struct Port {
    device: DeviceId,
    config: SerialScannerConfig,
    profile: Arc<Profile>,
    transport: Transport,
    framing: Framing,
    sink: EventSink,
    stop: Stop,
    counters: Arc<SerialCounters>,
}

/// How a connected session ended.
enum Ended {
    Stopped,
    /// The core is gone: the thread exits.
    SinkClosed,
    Lost(String),
}

impl Port {
    fn run(self) {
        let clock = Instant::now();
        let mut framer = Framer::new(&self.framing);
        let mut attempt = 0u32;
        // Last state sent: a status goes to the core only when the state changes, so a port that
        // stays absent does not send an event every backoff step (later reasons are logged).
        let mut last: Option<DeviceState> = None;
        tracing::info!(device = %self.device, path = %self.config.path.display(),
            profile = %self.profile.label(), "serial scanner driver started");
        while !self.stop.is_stopped() {
            match self.open() {
                Ok(port) => {
                    attempt = 0;
                    self.counters.connects.fetch_add(1, Ordering::Relaxed);
                    self.counters.connected.store(true, Ordering::Relaxed);
                    let detail = format!(
                        "opened {} at {}, profile {}",
                        self.config.path.display(),
                        self.transport,
                        self.profile.label()
                    );
                    if !self.status(DeviceState::Connected, detail, &mut last) {
                        return;
                    }
                    let ended = self.session(port, &mut framer, clock);
                    self.counters.connected.store(false, Ordering::Relaxed);
                    match ended {
                        Ended::Stopped | Ended::SinkClosed => return,
                        Ended::Lost(reason) => {
                            framer.abandon();
                            self.counters.publish(&framer.counters());
                            self.counters.disconnects.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(device = %self.device, %reason, "serial scanner lost");
                            if !self.status(DeviceState::Disconnected, reason, &mut last) {
                                return;
                            }
                            // A vanished port is usually back at once (USB re-enumeration) or
                            // not for a long time; try immediately first.
                            continue;
                        }
                    }
                }
                Err((state, reason)) => {
                    self.counters.open_failures.fetch_add(1, Ordering::Relaxed);
                    if !self.status(state, reason, &mut last) {
                        return;
                    }
                }
            }
            if !self.sleep(backoff(attempt)) {
                return;
            }
            attempt = attempt.saturating_add(1);
        }
    }

    /// Sends a status change; false when the core is gone.
    fn status(&self, state: DeviceState, detail: String, last: &mut Option<DeviceState>) -> bool {
        if *last == Some(state) {
            tracing::debug!(device = %self.device, ?state, %detail, "serial scanner still");
            return true;
        }
        *last = Some(state);
        self.sink.send(DeviceEvent::Status {
            device: self.device.clone(),
            state,
            detail,
            at_ms: now_ms(),
        })
    }

    /// Sleep in slices so `stop` is seen within [`POLL_INTERVAL`]; false when stopped.
    fn sleep(&self, total: Duration) -> bool {
        let until = Instant::now() + total;
        loop {
            if self.stop.is_stopped() {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(POLL_INTERVAL / 4));
        }
    }

    fn open(&self) -> Result<Box<dyn serialport::SerialPort>, (DeviceState, String)> {
        let mut port = open_port(&self.config.path, &self.transport)?;
        if self.profile.quirk("clear_input_on_open")
            && let Err(e) = port.clear(serialport::ClearBuffer::Input)
        {
            tracing::debug!(device = %self.device, error = %e, "cannot clear input on open");
        }
        self.init(&mut *port);
        Ok(port)
    }

    /// Send the profile's cited init commands. A wrong or missing answer is reported as
    /// `Faulty` but the port stays open: the scanner may still scan with its stored settings.
    fn init(&self, port: &mut dyn serialport::SerialPort) {
        for (i, cmd) in self.profile.init.iter().enumerate() {
            let answer = port.write_all(&cmd.send).and_then(|()| match &cmd.expect {
                None => Ok(true),
                Some(want) => {
                    let deadline = Instant::now() + Duration::from_millis(cmd.timeout_ms);
                    let mut got = Vec::new();
                    let mut buf = [0u8; 256];
                    while Instant::now() < deadline && !contains(&got, want) && got.len() < 4096 {
                        match port.read(&mut buf) {
                            Ok(n) => got.extend_from_slice(buf.get(..n).unwrap_or_default()),
                            Err(e) if e.kind() == ErrorKind::TimedOut => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(contains(&got, want))
                }
            });
            let problem = match answer {
                Ok(true) => continue,
                Ok(false) => "no expected answer".to_owned(),
                Err(e) => e.to_string(),
            };
            let _ = self.sink.send(DeviceEvent::Status {
                device: self.device.clone(),
                state: DeviceState::Faulty,
                detail: format!(
                    "init command {i} of profile {} ({}): {problem}; check the scanner model \
                     matches the profile",
                    self.profile.id, cmd.source
                ),
                at_ms: now_ms(),
            });
        }
    }

    fn session(
        &self,
        mut port: Box<dyn serialport::SerialPort>,
        framer: &mut Framer,
        clock: Instant,
    ) -> Ended {
        let mut buf = [0u8; 1024];
        let now = || u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        loop {
            if self.stop.is_stopped() {
                return Ended::Stopped;
            }
            match port.read(&mut buf) {
                Ok(0) => return Ended::Lost("end of file: the port was closed".into()),
                Ok(n) => {
                    let frames = framer.push(buf.get(..n).unwrap_or_default(), now());
                    self.counters.publish(&framer.counters());
                    let sent_any = !frames.is_empty();
                    for data in frames {
                        let event = DeviceEvent::Scan {
                            device: self.device.clone(),
                            data,
                            at_ms: now_ms(),
                        };
                        if !self.sink.send(event) {
                            return Ended::SinkClosed;
                        }
                    }
                    // A send may have blocked on a busy core while the next frame's first
                    // bytes sat in the port buffer: not line silence.
                    if sent_any {
                        framer.resume(now());
                    }
                }
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    framer.tick(now());
                    self.counters.publish(&framer.counters());
                }
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {}
                Err(e) => {
                    return Ended::Lost(format!(
                        "read from {} failed: {e} (device unplugged or powered off?)",
                        self.config.path.display()
                    ));
                }
            }
        }
    }
}

/// Open a serial device with the profile's line settings and a [`POLL_INTERVAL`] read timeout.
/// serialport opens TTYs with `TIOCEXCL`, so a second opener (another agent, a terminal program)
/// is refused: one owner per port. The error is the state to report and why.
pub(crate) fn open_port(
    path: &std::path::Path,
    t: &Transport,
) -> Result<Box<dyn serialport::SerialPort>, (DeviceState, String)> {
    let Some(path_str) = path.to_str() else {
        return Err((
            DeviceState::Faulty,
            format!(
                "path {} is not valid UTF-8; use the /dev/serial/by-id link or /dev/ttyXXX name",
                path.display()
            ),
        ));
    };
    serialport::new(path_str, t.baud)
        .data_bits(match t.data_bits {
            5 => serialport::DataBits::Five,
            6 => serialport::DataBits::Six,
            7 => serialport::DataBits::Seven,
            _ => serialport::DataBits::Eight,
        })
        .parity(match t.parity {
            Parity::None => serialport::Parity::None,
            Parity::Odd => serialport::Parity::Odd,
            Parity::Even => serialport::Parity::Even,
        })
        .stop_bits(if t.stop_bits == 2 {
            serialport::StopBits::Two
        } else {
            serialport::StopBits::One
        })
        .flow_control(match t.flow_control {
            FlowControl::None => serialport::FlowControl::None,
            FlowControl::Software => serialport::FlowControl::Software,
            FlowControl::Hardware => serialport::FlowControl::Hardware,
        })
        .timeout(POLL_INTERVAL)
        .open()
        .map_err(|e| classify_open_error(path, &e))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn classify_open_error(path: &std::path::Path, e: &serialport::Error) -> (DeviceState, String) {
    let io_kind = match e.kind() {
        serialport::ErrorKind::Io(k) => Some(k),
        _ => None,
    };
    let p = path.display();
    match io_kind {
        Some(ErrorKind::PermissionDenied) => (
            DeviceState::Faulty,
            format!(
                "cannot open {p}: permission denied; add the agent user to the group owning the \
                 port (usually dialout)"
            ),
        ),
        Some(ErrorKind::NotFound) => (
            DeviceState::Disconnected,
            format!("{p} is absent: the device is unplugged or the path is wrong ({e})"),
        ),
        _ => (
            DeviceState::Disconnected,
            format!(
                "cannot open {p}: {e}; check the device is plugged in and no other program \
                 holds the port"
            ),
        ),
    }
}
