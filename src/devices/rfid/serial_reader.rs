//! The thread that drives one UHF RFID module on a serial port with the M100 protocol
//! ([`super::m100`]). One thread owns the port (opened exclusively, like a serial scanner's).
//!
//! One session: open with the profile's transport → the profile's cited `[[init]]` commands
//! (the shipped profile stops any inventory a previous run left going) → the `[health]` probe
//! (Get Module Information: proves a module speaking this protocol at this baud rate is there,
//! and names it in the Connected status) → Multiple Inventory with the largest count → read tag
//! notifications into the shared [`Presence`] debouncer, exactly as the LLRP client does, so the
//! arrived/departed events are the same. The module ends a multi-poll by itself after its count
//! and sends nothing to say so; a line silent for `restart_after` therefore gets Stop + Multiple
//! Inventory again. Stop always answers, so a line still silent one `restart_after` later means
//! the module itself stopped answering: the session ends `Faulty` and the port is reopened with
//! backoff. A vanished port is `Disconnected`, reopened at once and then with
//! [`backoff`](crate::devices::backoff). On stop the thread sends Stop so the module does not
//! keep transmitting, then closes the port.

use std::io::{self, ErrorKind, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::client::humantime_duration;
use super::m100::{self, DecoderCounters, Frame, Message};
use super::presence::{Presence, RawRead};
use crate::devices::serial::driver::open_port;
use crate::devices::serial::{PickError, PortDevice, pick_port_profile};
use crate::devices::{
    DeviceEvent, DeviceId, DeviceState, EventSink, POLL_INTERVAL, Stop, backoff, now_ms,
};
use crate::profiles::{Command, DeviceKind, Profile, Profiles, Transport};

/// One `[[devices.rfid_serial]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RfidSerialConfig {
    /// Short name used in the device id (`rfid-serial:<name>`) and the thread name.
    pub name: String,
    /// Device path; prefer the /dev/serial/by-id link, which survives re-plugging.
    pub path: PathBuf,
    /// Profile id; else the most specific `rfid_serial_reader` profile matching the port's USB
    /// id / by-id name, else the fallback one (`magicrf-m100`).
    #[serde(default)]
    pub profile: Option<String>,
    /// A tag not read for this long has departed.
    #[serde(
        default = "default_debounce_window",
        deserialize_with = "humantime_duration"
    )]
    pub debounce_window: Duration,
    /// Line silence after which the inventory is stopped and started again. Keep it well
    /// under `debounce_window`, or tags depart while the module is being restarted.
    #[serde(
        default = "default_restart_after",
        deserialize_with = "humantime_duration"
    )]
    pub restart_after: Duration,
}

fn default_debounce_window() -> Duration {
    Duration::from_secs(3)
}

fn default_restart_after() -> Duration {
    Duration::from_secs(1)
}

/// Single-antenna modules: every read is on antenna 1, as LLRP numbers antennas from 1.
pub const ANTENNA: u16 = 1;
/// Rounds asked per Multiple Inventory: the most the 16-bit count allows, so restarts are rare.
pub const POLL_COUNT: u16 = u16::MAX;
/// Most bytes kept while waiting for a command's expected answer.
const MAX_ANSWER_BYTES: usize = 4096;

/// The profile for a configured module: the one named in the config, else the most specific
/// match for the port, else the fallback `rfid_serial_reader` profile.
pub fn pick_profile(
    profiles: &Profiles,
    config: &RfidSerialConfig,
) -> Result<Arc<Profile>, PickError> {
    pick_port_profile(
        profiles,
        PortDevice {
            device: "UHF serial reader",
            kind: DeviceKind::RfidSerialReader,
            fallback_file: "magicrf-m100.toml",
            name: &config.name,
            path: &config.path,
            profile: config.profile.as_deref(),
        },
    )
}

/// Live counters of one module, cumulative across reconnects.
#[derive(Debug, Default)]
pub struct RfidSerialCounters {
    decoder: std::sync::Mutex<DecoderCounters>,
    tag_reads: AtomicU64,
    empty_rounds: AtomicU64,
    module_errors: AtomicU64,
    malformed: AtomicU64,
    inventory_starts: AtomicU64,
    connects: AtomicU64,
    disconnects: AtomicU64,
    open_failures: AtomicU64,
    connected: AtomicBool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RfidSerialCountersSnapshot {
    #[serde(flatten)]
    pub decoder: DecoderCounters,
    /// Tag notifications read.
    pub tag_reads: u64,
    /// "No tag" answers (error 0x15): an empty field, not a fault.
    pub empty_rounds: u64,
    /// Other error responses from the module.
    pub module_errors: u64,
    /// Verified frames whose content was not what the protocol says.
    pub malformed: u64,
    /// Multiple Inventory commands sent (first start and restarts).
    pub inventory_starts: u64,
    /// Successful opens of the port.
    pub connects: u64,
    /// Losses of an open port.
    pub disconnects: u64,
    /// Failed open attempts.
    pub open_failures: u64,
    pub connected: bool,
}

impl RfidSerialCounters {
    pub fn snapshot(&self) -> RfidSerialCountersSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RfidSerialCountersSnapshot {
            decoder: self.decoder.lock().map(|d| *d).unwrap_or_default(),
            tag_reads: l(&self.tag_reads),
            empty_rounds: l(&self.empty_rounds),
            module_errors: l(&self.module_errors),
            malformed: l(&self.malformed),
            inventory_starts: l(&self.inventory_starts),
            connects: l(&self.connects),
            disconnects: l(&self.disconnects),
            open_failures: l(&self.open_failures),
            connected: self.connected.load(Ordering::Relaxed),
        }
    }

    fn add(a: &AtomicU64) {
        a.fetch_add(1, Ordering::Relaxed);
    }
}

/// Start the module's thread. Fails only if the OS cannot create a thread or the profile has no
/// serial transport (a misconfiguration the caller reports).
pub fn spawn(
    config: RfidSerialConfig,
    profile: Arc<Profile>,
    sink: EventSink,
    stop: Stop,
) -> io::Result<JoinHandle<()>> {
    spawn_with_counters(config, profile, sink, stop, Arc::default())
}

/// [`spawn`], publishing the module's counters into `counters`.
pub fn spawn_with_counters(
    config: RfidSerialConfig,
    profile: Arc<Profile>,
    sink: EventSink,
    stop: Stop,
    counters: Arc<RfidSerialCounters>,
) -> io::Result<JoinHandle<()>> {
    let (DeviceKind::RfidSerialReader, Some(transport)) = (profile.kind, profile.transport.clone())
    else {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!(
                "profile {} is a {} profile; give UHF serial reader {:?} an rfid_serial_reader \
                 profile",
                profile.id,
                profile.kind.as_str(),
                config.name
            ),
        ));
    };
    let device = DeviceId::new("rfid-serial", &config.name);
    let driver = Driver {
        presence: Presence::new(device.clone(), config.debounce_window),
        device,
        transport,
        profile,
        sink,
        stop,
        counters,
        events: Vec::new(),
        last_state: None,
        sink_closed: false,
        clock: Instant::now(),
        decoder: m100::Decoder::new(),
        decoder_base: DecoderCounters::default(),
        errors_logged: Vec::new(),
        config,
    };
    thread::Builder::new()
        .name(format!("rfid-serial-{}", driver.config.name))
        .spawn(move || driver.run())
}

/// How a session ended.
enum Ended {
    Stopped,
    /// The core is gone: the thread exits.
    SinkClosed,
    /// The port vanished or failed: `Disconnected`, reopen at once.
    Lost(String),
    /// The port is there but the module does not behave: `Faulty`, reopen with backoff.
    Faulty(String),
}

/// State that outlives sessions.
struct Driver {
    config: RfidSerialConfig,
    device: DeviceId,
    transport: Transport,
    profile: Arc<Profile>,
    sink: EventSink,
    stop: Stop,
    counters: Arc<RfidSerialCounters>,
    presence: Presence,
    events: Vec<DeviceEvent>,
    last_state: Option<DeviceState>,
    sink_closed: bool,
    /// Origin of the decoder's millisecond clock.
    clock: Instant,
    decoder: m100::Decoder,
    /// Counters of earlier sessions' decoders, so the published ones are cumulative.
    decoder_base: DecoderCounters,
    /// Module error codes already logged at warn level this session (a module can repeat an
    /// error every inventory round).
    errors_logged: Vec<u8>,
}

type Port = Box<dyn serialport::SerialPort>;

impl Driver {
    fn run(mut self) {
        tracing::info!(device = %self.device, path = %self.config.path.display(),
            profile = %self.profile.label(), "UHF serial reader driver started");
        if self.config.restart_after >= self.config.debounce_window {
            tracing::warn!(device = %self.device,
                "restart_after is not shorter than debounce_window: every tag in the field will \
                 depart and arrive again each time the inventory is restarted; shorten \
                 restart_after");
        }
        let mut attempt = 0u32;
        while !self.stop.is_stopped() && !self.sink_closed {
            match open_port(&self.config.path, &self.transport) {
                Ok(port) => {
                    RfidSerialCounters::add(&self.counters.connects);
                    let mut streaming = false;
                    let ended = self.session(port, &mut streaming);
                    self.counters.connected.store(false, Ordering::Relaxed);
                    self.end_decoder();
                    if streaming {
                        attempt = 0;
                    }
                    match ended {
                        Ended::Stopped => {
                            self.status(DeviceState::Disconnected, "stopped by the agent".into());
                            return;
                        }
                        Ended::SinkClosed => return,
                        Ended::Lost(reason) => {
                            RfidSerialCounters::add(&self.counters.disconnects);
                            tracing::warn!(device = %self.device, %reason, "UHF serial reader lost");
                            self.status(DeviceState::Disconnected, reason);
                            // A vanished USB port is usually back at once (re-enumeration) or
                            // not for a long time; try immediately first.
                            continue;
                        }
                        Ended::Faulty(reason) => {
                            tracing::warn!(device = %self.device, %reason, "UHF serial reader faulty");
                            self.status(DeviceState::Faulty, reason);
                        }
                    }
                }
                Err((state, reason)) => {
                    RfidSerialCounters::add(&self.counters.open_failures);
                    self.status(state, reason);
                }
            }
            // Departures keep coming out while the module is away.
            let until = Instant::now() + backoff(attempt);
            attempt = attempt.saturating_add(1);
            while Instant::now() < until && !self.stop.is_stopped() && !self.sink_closed {
                thread::sleep(
                    (POLL_INTERVAL / 4).min(until.saturating_duration_since(Instant::now())),
                );
                self.tick();
            }
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn send(&mut self, event: DeviceEvent) {
        if !self.sink_closed && !self.sink.send(event) {
            self.sink_closed = true;
        }
    }

    /// Send a state change; a module that stays absent does not send one event per retry
    /// (later reasons are logged).
    fn status(&mut self, state: DeviceState, detail: String) {
        if self.last_state == Some(state) {
            tracing::debug!(device = %self.device, ?state, %detail, "UHF serial reader still");
            return;
        }
        self.last_state = Some(state);
        let device = self.device.clone();
        self.send(DeviceEvent::Status {
            device,
            state,
            detail,
            at_ms: now_ms(),
        });
    }

    fn flush(&mut self) {
        let events = std::mem::take(&mut self.events);
        for e in events {
            self.send(e);
        }
    }

    fn tick(&mut self) {
        self.presence.tick(&mut self.events);
        self.flush();
    }

    fn publish_decoder(&self) {
        let c = self.decoder.counters();
        let b = self.decoder_base;
        let total = DecoderCounters {
            bytes: b.bytes + c.bytes,
            frames: b.frames + c.frames,
            bad_checksum: b.bad_checksum + c.bad_checksum,
            bad_end: b.bad_end + c.bad_end,
            oversize: b.oversize + c.oversize,
            cut: b.cut + c.cut,
            garbage_bytes: b.garbage_bytes + c.garbage_bytes,
        };
        if let Ok(mut d) = self.counters.decoder.lock() {
            *d = total;
        }
    }

    /// The port is gone: what was half-received is cut; start the next session clean.
    fn end_decoder(&mut self) {
        let frames = self.decoder.abandon();
        for f in &frames {
            self.on_frame(f);
        }
        self.publish_decoder();
        self.decoder_base = self.counters.snapshot().decoder;
        self.decoder = m100::Decoder::new();
        self.flush();
    }

    fn on_frame(&mut self, frame: &Frame) {
        match m100::decode(frame) {
            Ok(Message::Tag(tag)) => {
                RfidSerialCounters::add(&self.counters.tag_reads);
                self.presence.reads(
                    [RawRead {
                        epc: &tag.epc,
                        antenna: ANTENNA,
                        rssi_dbm: Some(tag.rssi_dbm),
                        count: 1,
                    }],
                    &mut self.events,
                );
            }
            Ok(Message::Error {
                code: m100::error_code::INVENTORY_FAIL,
            }) => RfidSerialCounters::add(&self.counters.empty_rounds),
            Ok(Message::Error { code }) => {
                RfidSerialCounters::add(&self.counters.module_errors);
                if self.errors_logged.contains(&code) {
                    tracing::debug!(device = %self.device, code, "module error again");
                } else {
                    self.errors_logged.push(code);
                    tracing::warn!(device = %self.device, "module reports error 0x{code:02X}: {}",
                        m100::describe_error(code));
                }
            }
            Ok(other) => tracing::debug!(device = %self.device, ?other, "M100 frame ignored"),
            Err(e) => {
                RfidSerialCounters::add(&self.counters.malformed);
                tracing::warn!(device = %self.device, "{e}");
            }
        }
    }

    /// Read once (at most [`POLL_INTERVAL`]) and handle what came. `Ok(bytes read)`.
    fn read_once(&mut self, port: &mut Port, raw: Option<&mut Vec<u8>>) -> Result<usize, Ended> {
        let mut buf = [0u8; 1024];
        let now = self.now();
        let (n, frames) = match port.read(&mut buf) {
            Ok(0) => {
                return Err(Ended::Lost(format!(
                    "end of file on {}: the port was closed (module unplugged?)",
                    self.config.path.display()
                )));
            }
            Ok(n) => {
                let bytes = buf.get(..n).unwrap_or_default();
                if let Some(raw) = raw {
                    raw.extend_from_slice(bytes);
                    // A module still streaming from a previous run sends kilobytes a second
                    // before it answers: keep the newest bytes, where the answer will be.
                    if raw.len() > MAX_ANSWER_BYTES {
                        raw.drain(..raw.len() - MAX_ANSWER_BYTES / 2);
                    }
                }
                (n, self.decoder.push(bytes, now))
            }
            Err(e) if e.kind() == ErrorKind::TimedOut => (0, self.decoder.tick(now)),
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {
                (0, Vec::new())
            }
            Err(e) => {
                return Err(Ended::Lost(format!(
                    "read from {} failed: {e} (module unplugged or powered off?)",
                    self.config.path.display()
                )));
            }
        };
        for f in &frames {
            self.on_frame(f);
        }
        self.publish_decoder();
        self.presence.tick(&mut self.events);
        self.flush();
        Ok(n)
    }

    fn write(&self, port: &mut Port, bytes: &[u8]) -> Result<(), Ended> {
        port.write_all(bytes)
            .and_then(|()| port.flush())
            .map_err(|e| {
                Ended::Lost(format!(
                    "write to {} failed: {e} (module unplugged?)",
                    self.config.path.display()
                ))
            })
    }

    /// Send one profile command and wait for its expected answer, handling any tag notices
    /// meanwhile. `Ok(Some(frames))`: answered, with the frames received while waiting;
    /// `Ok(None)`: no answer in time.
    fn exchange(&mut self, port: &mut Port, cmd: &Command) -> Result<Option<Vec<Frame>>, Ended> {
        self.write(port, &cmd.send)?;
        let Some(want) = &cmd.expect else {
            return Ok(Some(Vec::new()));
        };
        let deadline = Instant::now() + Duration::from_millis(cmd.timeout_ms);
        let mut raw = Vec::new();
        while Instant::now() < deadline {
            if self.stop.is_stopped() {
                return Err(Ended::Stopped);
            }
            self.read_once(port, Some(&mut raw))?;
            if contains(&raw, want) {
                // Decode the answer itself (the decoder consumed it already for notices).
                let mut d = m100::Decoder::new();
                return Ok(Some(d.push(&raw, 0)));
            }
        }
        Ok(None)
    }

    fn session(&mut self, mut port: Port, streaming: &mut bool) -> Ended {
        self.errors_logged.clear();
        if self.profile.quirk("clear_input_on_open")
            && let Err(e) = port.clear(serialport::ClearBuffer::Input)
        {
            tracing::debug!(device = %self.device, error = %e, "cannot clear input on open");
        }
        let profile = self.profile.clone();
        let transport = self.transport.to_string();
        let not_answering = |what: String, source: &str, timeout_ms: u64| {
            format!(
                "{what} of profile {} ({source}) got no expected answer within {timeout_ms} ms: \
                 check the module is powered, its TX/RX wired to the adapter's RX/TX, and set to \
                 {transport} as the profile says",
                profile.id
            )
        };
        for (i, cmd) in profile.init.iter().enumerate() {
            match self.exchange(&mut port, cmd) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Ended::Faulty(not_answering(
                        format!("init command {i}"),
                        &cmd.source,
                        cmd.timeout_ms,
                    ));
                }
                Err(ended) => return ended,
            }
        }
        let mut module = String::from("module did not describe itself");
        if let Some(health) = &profile.health {
            match self.exchange(&mut port, &health.command) {
                Ok(Some(frames)) => {
                    if let Some(name) = frames.iter().find_map(module_name) {
                        module = format!("module {name:?}");
                    }
                }
                Ok(None) => {
                    return Ended::Faulty(not_answering(
                        "the health probe".into(),
                        &health.command.source,
                        health.command.timeout_ms,
                    ));
                }
                Err(ended) => return ended,
            }
        }
        if let Err(ended) = self.write(&mut port, &m100::multi_poll(POLL_COUNT)) {
            return ended;
        }
        RfidSerialCounters::add(&self.counters.inventory_starts);
        *streaming = true;
        self.counters.connected.store(true, Ordering::Relaxed);
        let detail = format!(
            "inventory running on {} at {} ({module}), profile {}",
            self.config.path.display(),
            self.transport,
            profile.label()
        );
        self.status(DeviceState::Connected, detail.clone());

        let restart_after = self.config.restart_after.max(POLL_INTERVAL);
        let mut last_rx = Instant::now();
        let mut restarted_at: Option<Instant> = None;
        loop {
            if self.sink_closed {
                return Ended::SinkClosed;
            }
            if self.stop.is_stopped() {
                // Leave the module quiet; errors do not matter, we are leaving either way.
                let _ = port.write_all(&m100::stop_poll());
                let _ = port.flush();
                return Ended::Stopped;
            }
            match self.read_once(&mut port, None) {
                Ok(0) => {}
                Ok(_) => {
                    last_rx = Instant::now();
                    restarted_at = None;
                }
                Err(ended) => return ended,
            }
            if last_rx.elapsed() < restart_after {
                continue;
            }
            match restarted_at {
                Some(at) if at.elapsed() >= restart_after => {
                    return Ended::Faulty(format!(
                        "the module stopped answering: no reply to Stop Multiple Inventory within \
                         {} ms; check its power supply (UHF modules draw far more than a USB \
                         port idles at) and cable",
                        restart_after.as_millis()
                    ));
                }
                Some(_) => {}
                None => {
                    // The multi-poll count ran out, or the module dropped it: start it again.
                    let mut both = m100::stop_poll();
                    both.extend(m100::multi_poll(POLL_COUNT));
                    if let Err(ended) = self.write(&mut port, &both) {
                        return ended;
                    }
                    RfidSerialCounters::add(&self.counters.inventory_starts);
                    tracing::debug!(device = %self.device, "line silent: inventory restarted");
                    restarted_at = Some(Instant::now());
                }
            }
        }
    }
}

/// The text of a Get Module Information answer (parameter 0 is the kind asked).
fn module_name(frame: &Frame) -> Option<String> {
    if frame.frame_type != m100::frame_type::RESPONSE || frame.command != m100::cmd::MODULE_INFO {
        return None;
    }
    let text: String = frame
        .params
        .get(1..)?
        .iter()
        .map(|&b| char::from(b))
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(64)
        .collect();
    let text = text.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_config_entry_has_defaults_and_refuses_unknown_keys() {
        let c: RfidSerialConfig =
            toml::from_str("name = \"door\"\npath = \"/dev/ttyUSB0\"\n").unwrap();
        assert_eq!(c.debounce_window, Duration::from_secs(3));
        assert_eq!(c.restart_after, Duration::from_secs(1));
        assert_eq!(c.profile, None);
        let c: RfidSerialConfig = toml::from_str(
            "name = \"door\"\npath = \"/dev/ttyUSB0\"\ndebounce_window = \"5s\"\nrestart_after = \"500ms\"\n",
        )
        .unwrap();
        assert_eq!(c.restart_after, Duration::from_millis(500));
        let err = toml::from_str::<RfidSerialConfig>(
            "name = \"door\"\npath = \"/dev/ttyUSB0\"\nbaud = 9600\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn module_information_text_is_read_from_its_answer() {
        let mut params = vec![0u8];
        params.extend_from_slice(b"M100 26dBm V1.0\x00");
        let f = Frame {
            frame_type: m100::frame_type::RESPONSE,
            command: m100::cmd::MODULE_INFO,
            params,
        };
        assert_eq!(module_name(&f).as_deref(), Some("M100 26dBm V1.0"));
        let empty = Frame {
            params: vec![0],
            ..f.clone()
        };
        assert_eq!(module_name(&empty), None);
    }
}
