//! The thread that drives one fixed UHF reader over LLRP/TCP.
//!
//! One session: connect → wait for the reader's ConnectionAttemptEvent → GET_READER_CAPABILITIES
//! → SET_READER_CONFIG (factory reset, keepalive, report spec) → ADD_ROSPEC → ENABLE_ROSPEC →
//! START_ROSPEC → read reports until the link fails or the agent stops. Any failure ends the
//! session with a `Status` event saying why, and the thread reconnects with
//! [`devices::backoff`](crate::devices::backoff). The debouncer outlives sessions, so a short
//! network blip does not make every tag on the shelf depart and arrive again.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer};

use super::llrp::{self, ConnectionAttempt, FrameReader, LlrpError, LlrpStatus, Message, msg};
use super::presence::{Presence, RawRead};
use crate::devices::{
    DeviceEvent, DeviceId, DeviceState, EventSink, POLL_INTERVAL, Stop, backoff, now_ms,
};
use crate::profiles::Profiles;

/// One `[[devices.llrp]]` entry (durations are humantime strings such as `"3s"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlrpReaderConfig {
    /// Free text for logs and the thread name (e.g. "entrance").
    pub name: String,
    /// Reader address; LLRP's registered port is 5084.
    pub address: SocketAddr,
    /// A tag not read on an antenna for this long has departed.
    #[serde(
        default = "default_debounce_window",
        deserialize_with = "humantime_duration"
    )]
    pub debounce_window: Duration,
    /// Keepalive period asked of the reader; the link is dead after 3 periods of silence.
    /// Zero turns keepalives (and that check) off.
    #[serde(default = "default_keepalive", deserialize_with = "humantime_duration")]
    pub keepalive: Duration,
    /// The reader sends a report every this many tag reads (0 is taken as 1: a report only at
    /// the end of an inventory that never ends would never come).
    #[serde(default = "default_report_every_n_tags")]
    pub report_every_n_tags: u16,
}

fn default_debounce_window() -> Duration {
    Duration::from_secs(3)
}

fn default_keepalive() -> Duration {
    Duration::from_secs(10)
}

fn default_report_every_n_tags() -> u16 {
    // Small batches keep arrival latency low; at 10,000 reads/s that is 500 messages/s.
    20
}

pub(crate) fn humantime_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!("{s:?} is not a duration such as \"3s\": {e}"))
    })
}

/// Our ROSpec's id. Any non-zero value works: the factory reset in SET_READER_CONFIG has
/// already deleted every other ROSpec.
pub const ROSPEC_ID: u32 = 1;
/// TCP connect timeout (a reader on the LAN answers in milliseconds).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the reader may take to answer one request, or to send its connection event.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a write may block when the reader stops reading.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a session ended. The message is the `detail` of the Status event: it says what a
/// technician can check.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to the reader at {addr}: {source}; check that it is powered, on the \
         network, and that LLRP is enabled on that port (normally 5084)"
    )]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("connection to the reader lost: {0}; check the network cable and the reader's power")]
    Io(#[from] io::Error),
    #[error(
        "the reader closed the connection (it may have rebooted, or another LLRP client took \
         it over)"
    )]
    Closed,
    #[error(
        "nothing received from the reader for {0:.1} s (3 keepalive periods): the link is \
         treated as dead; check the network path to the reader"
    )]
    KeepaliveTimeout(f64),
    #[error(
        "the reader did not announce the connection within {0} s: check that the address is an \
         LLRP reader and that LLRP is enabled in its settings"
    )]
    NoConnectionEvent(u64),
    #[error(
        "the reader {} (status {}): close the other LLRP client (vendor tool, reader web page) \
         or restart the reader", .0.describe(), .0.0
    )]
    ConnectionRefused(ConnectionAttempt),
    #[error("the reader did not answer {request} within {secs} s: restart the reader")]
    NoResponse { request: &'static str, secs: u64 },
    #[error(
        "the reader refused {request}: {status}; check the reader's firmware and LLRP settings \
         (its region and antennas)"
    )]
    Refused {
        request: &'static str,
        status: LlrpStatus,
    },
    #[error(
        "the reader could not process a message from Relais: {0}; check that its firmware \
         supports LLRP 1.0.1"
    )]
    ErrorMessage(LlrpStatus),
    #[error("{0}")]
    Protocol(#[from] LlrpError),
}

impl ClientError {
    /// Absent/unreachable is `Disconnected`; present but misbehaving is `Faulty`.
    pub fn state(&self) -> DeviceState {
        match self {
            ClientError::Connect { .. }
            | ClientError::Io(_)
            | ClientError::Closed
            | ClientError::KeepaliveTimeout(_) => DeviceState::Disconnected,
            ClientError::NoConnectionEvent(_)
            | ClientError::ConnectionRefused(_)
            | ClientError::NoResponse { .. }
            | ClientError::Refused { .. }
            | ClientError::ErrorMessage(_)
            | ClientError::Protocol(_) => DeviceState::Faulty,
        }
    }
}

/// Start the reader's thread. It runs until `stop` is set (then it closes the LLRP connection)
/// or the core drops the event channel.
pub fn spawn(config: LlrpReaderConfig, sink: EventSink, stop: Stop) -> io::Result<JoinHandle<()>> {
    spawn_with_profiles(config, Profiles::default(), sink, stop)
}

/// As [`spawn`], naming in the reader's status the firmware profile that matches the
/// manufacturer it announces in its capabilities (`llrp_vendor`), so a technician sees which
/// profile — and which documented quirks — apply to the reader on the other end.
pub fn spawn_with_profiles(
    config: LlrpReaderConfig,
    profiles: Profiles,
    sink: EventSink,
    stop: Stop,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("llrp-{}", config.name))
        .spawn(move || Driver::new(config, profiles, sink, stop).run())
}

/// The status line's description of the reader: what it says of itself and the profile that
/// matches its manufacturer (a specific one first, else the generic LLRP fallback).
fn describe_reader(capabilities: Option<&llrp::Capabilities>, profiles: &Profiles) -> String {
    let Some(c) = capabilities else {
        return "reader did not describe itself".into();
    };
    let profile = match profiles.match_llrp(c.manufacturer) {
        Some(p) => format!("profile {}", p.label()),
        None => "no firmware profile for this manufacturer".into(),
    };
    format!(
        "manufacturer PEN {}, model {}, firmware {:?}, {} antenna port(s); {profile}",
        c.manufacturer, c.model, c.firmware, c.max_antennas
    )
}

/// Builds one request from its message id.
type Encoder<'a> = &'a dyn Fn(u32) -> Vec<u8>;

/// How a session ended without an error.
enum End {
    Stopped,
    /// The core is gone: nobody to report to.
    SinkClosed,
}

/// State that outlives sessions.
struct Driver {
    config: LlrpReaderConfig,
    device: DeviceId,
    sink: EventSink,
    stop: Stop,
    presence: Presence,
    events: Vec<DeviceEvent>,
    last_status: Option<(DeviceState, String)>,
    sink_closed: bool,
    profiles: Profiles,
}

impl Driver {
    fn new(config: LlrpReaderConfig, profiles: Profiles, sink: EventSink, stop: Stop) -> Driver {
        let device = DeviceId::new("llrp", &config.address.to_string());
        Driver {
            presence: Presence::new(device.clone(), config.debounce_window),
            device,
            config,
            sink,
            stop,
            events: Vec::new(),
            last_status: None,
            sink_closed: false,
            profiles,
        }
    }

    fn run(mut self) {
        let mut attempt = 0u32;
        loop {
            if self.stop.is_stopped() || self.sink_closed {
                break;
            }
            let mut connected = false;
            match self.session(&mut connected) {
                Ok(End::Stopped) => {
                    self.status(DeviceState::Disconnected, "stopped by the agent".into());
                    break;
                }
                Ok(End::SinkClosed) => break,
                Err(e) => {
                    tracing::warn!(device = %self.device, reader = %self.config.name, "{e}");
                    self.status(e.state(), e.to_string());
                }
            }
            // A session that got as far as streaming resets the backoff: the next failure is
            // a new outage, not the same one.
            if connected {
                attempt = 0;
            }
            let until = Instant::now() + backoff(attempt);
            attempt = attempt.saturating_add(1);
            while Instant::now() < until && !self.stop.is_stopped() && !self.sink_closed {
                thread::sleep(POLL_INTERVAL.min(until.saturating_duration_since(Instant::now())));
                self.tick();
            }
        }
    }

    fn send(&mut self, event: DeviceEvent) {
        if !self.sink_closed && !self.sink.send(event) {
            self.sink_closed = true;
        }
    }

    /// Send a status change; the same state and detail are not repeated on every retry.
    fn status(&mut self, state: DeviceState, detail: String) {
        if self.last_status.as_ref() == Some(&(state, detail.clone())) {
            return;
        }
        self.last_status = Some((state, detail.clone()));
        let device = self.device.clone();
        self.send(DeviceEvent::Status {
            device,
            state,
            detail,
            at_ms: now_ms(),
        });
    }

    fn tick(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        self.presence.tick(&mut events);
        self.flush_events(&mut events);
        self.events = events;
    }

    fn on_report(&mut self, report: llrp::RoAccessReport) {
        if report.skipped > 0 {
            tracing::warn!(
                device = %self.device,
                skipped = report.skipped,
                "tag reports the reader sent malformed were skipped"
            );
        }
        let mut events = std::mem::take(&mut self.events);
        self.presence.reads(
            report.tags.iter().map(|tag| RawRead {
                epc: &tag.epc,
                antenna: tag.antenna,
                rssi_dbm: tag.peak_rssi_dbm,
                count: u64::from(tag.seen_count.max(1)),
            }),
            &mut events,
        );
        self.flush_events(&mut events);
        self.events = events;
    }

    fn flush_events(&mut self, events: &mut Vec<DeviceEvent>) {
        for event in events.drain(..) {
            self.send(event);
        }
    }

    fn session(&mut self, connected: &mut bool) -> Result<End, ClientError> {
        let Some(stream) = connect(self.config.address, &self.stop)? else {
            return Ok(End::Stopped);
        };
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(POLL_INTERVAL))?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let mut link = Link {
            stream,
            frames: FrameReader::default(),
            next_id: 1,
            last_rx: Instant::now(),
        };

        // 1. The reader speaks first: a READER_EVENT_NOTIFICATION with ConnectionAttemptEvent.
        let deadline = Instant::now() + RESPONSE_TIMEOUT;
        loop {
            if self.stop.is_stopped() {
                link.close();
                return Ok(End::Stopped);
            }
            if Instant::now() >= deadline {
                return Err(ClientError::NoConnectionEvent(RESPONSE_TIMEOUT.as_secs()));
            }
            let Some(message) = link.poll()? else {
                continue;
            };
            if let Message::ReaderEventNotification(event) = &message
                && let Some(attempt) = event.connection_attempt
            {
                if !attempt.is_success() {
                    return Err(ClientError::ConnectionRefused(attempt));
                }
                break;
            }
            self.background(&mut link, message)?;
        }

        // 2. Configure and start the inventory.
        let keepalive_ms = u32::try_from(self.config.keepalive.as_millis()).unwrap_or(u32::MAX);
        let every_n = self.config.report_every_n_tags.max(1);
        let spec = llrp::RoSpec {
            id: ROSPEC_ID,
            // Null start + explicit START_ROSPEC, rather than an immediate trigger: with an
            // immediate trigger ENABLE_ROSPEC already starts the inventory and readers differ
            // on whether a following START_ROSPEC is an error; this way a refusal to start
            // shows up as its own error.
            start: llrp::StartTrigger::Null,
            report_every_n_tags: every_n,
        };
        let requests: [(u16, Encoder<'_>); 5] = [
            (msg::GET_READER_CAPABILITIES, &llrp::get_reader_capabilities),
            (msg::SET_READER_CONFIG, &|id| {
                llrp::set_reader_config(id, keepalive_ms, every_n)
            }),
            (msg::ADD_ROSPEC, &|id| llrp::add_rospec(id, &spec)),
            (msg::ENABLE_ROSPEC, &|id| llrp::enable_rospec(id, ROSPEC_ID)),
            (msg::START_ROSPEC, &|id| llrp::start_rospec(id, ROSPEC_ID)),
        ];
        let mut capabilities = None;
        for (request, encode) in requests {
            let id = link.id();
            link.send(&encode(id))?;
            match self.await_response(&mut link, request)? {
                Some(Message::Response {
                    capabilities: Some(c),
                    ..
                }) => capabilities = Some(c),
                Some(_) => {}
                None => {
                    link.close();
                    return Ok(End::Stopped);
                }
            }
        }

        *connected = true;
        let reader = describe_reader(capabilities.as_ref(), &self.profiles);
        self.status(
            DeviceState::Connected,
            format!("inventory running ({reader})"),
        );

        // 3. Stream reports.
        let dead_after = self.config.keepalive.saturating_mul(3);
        loop {
            if self.sink_closed {
                return Ok(End::SinkClosed);
            }
            if self.stop.is_stopped() {
                link.close();
                return Ok(End::Stopped);
            }
            if !dead_after.is_zero() && link.last_rx.elapsed() > dead_after {
                return Err(ClientError::KeepaliveTimeout(
                    link.last_rx.elapsed().as_secs_f64(),
                ));
            }
            match link.poll()? {
                Some(message) => self.background(&mut link, message)?,
                None => self.tick(),
            }
        }
    }

    /// Wait for the response to `request`, handling keepalives and reports meanwhile.
    /// `Ok(None)`: the agent is stopping.
    fn await_response(
        &mut self,
        link: &mut Link,
        request: u16,
    ) -> Result<Option<Message>, ClientError> {
        let expected = msg::response_to(request);
        let deadline = Instant::now() + RESPONSE_TIMEOUT;
        loop {
            if self.stop.is_stopped() {
                return Ok(None);
            }
            if Instant::now() >= deadline {
                return Err(ClientError::NoResponse {
                    request: msg::name(request),
                    secs: RESPONSE_TIMEOUT.as_secs(),
                });
            }
            let Some(message) = link.poll()? else {
                continue;
            };
            match &message {
                // Matched on type, not id: responses come in request order on one TCP stream,
                // and some readers echo ids unreliably.
                Message::Response {
                    msg_type, status, ..
                } if *msg_type == expected => {
                    if !status.is_success() {
                        return Err(ClientError::Refused {
                            request: msg::name(request),
                            status: status.clone(),
                        });
                    }
                    return Ok(Some(message));
                }
                _ => self.background(link, message)?,
            }
        }
    }

    /// Messages that can come at any time.
    fn background(&mut self, link: &mut Link, message: Message) -> Result<(), ClientError> {
        match message {
            Message::Keepalive { id } => link.send(&llrp::keepalive_ack(id))?,
            Message::RoAccessReport(report) => self.on_report(report),
            Message::ReaderEventNotification(event) => {
                if let Some(text) = event.reader_exception {
                    tracing::warn!(device = %self.device, "reader exception: {text}");
                }
                if event.connection_close {
                    return Err(ClientError::Closed);
                }
            }
            Message::Response {
                msg_type, status, ..
            } => {
                if msg_type == msg::ERROR_MESSAGE {
                    return Err(ClientError::ErrorMessage(status));
                }
                tracing::debug!(device = %self.device, "unexpected {}", msg::name(msg_type));
            }
            Message::Other { msg_type } => {
                tracing::debug!(device = %self.device, msg_type, "ignored LLRP message");
            }
        }
        Ok(())
    }
}

/// Connect with [`CONNECT_TIMEOUT`] while still noticing `stop` every [`POLL_INTERVAL`]: std
/// cannot interrupt a blocking connect, so it runs on a short-lived helper thread that is
/// abandoned (and closes its socket) if the agent stops first. `Ok(None)`: stopped.
fn connect(addr: SocketAddr, stop: &Stop) -> Result<Option<TcpStream>, ClientError> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("llrp-connect".into())
        .spawn(move || {
            let _ = tx.send(TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT));
        })
        .map_err(|source| ClientError::Connect { addr, source })?;
    loop {
        if stop.is_stopped() {
            return Ok(None);
        }
        match rx.recv_timeout(POLL_INTERVAL) {
            Ok(Ok(stream)) => return Ok(Some(stream)),
            Ok(Err(source)) => return Err(ClientError::Connect { addr, source }),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(ClientError::Connect {
                    addr,
                    source: io::Error::other("connect helper thread ended without a result"),
                });
            }
        }
    }
}

/// One TCP connection to the reader.
struct Link {
    stream: TcpStream,
    frames: FrameReader,
    next_id: u32,
    last_rx: Instant,
}

impl Link {
    fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// The next decoded message; `Ok(None)` after a read timeout (one [`POLL_INTERVAL`]).
    fn poll(&mut self) -> Result<Option<Message>, ClientError> {
        loop {
            if let Some(frame) = self.frames.next_frame()? {
                return Ok(Some(llrp::decode_message(&frame)?));
            }
            match self.frames.read_from(&mut self.stream) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(_) => self.last_rx = Instant::now(),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Polite goodbye: delete our ROSpec (so the reader stops transmitting when we leave)
    /// and CLOSE_CONNECTION, then give the reader up to a second to answer. Errors are
    /// ignored: we are leaving either way.
    fn close(&mut self) {
        let delete = llrp::delete_rospec(self.id(), ROSPEC_ID);
        let close = llrp::close_connection(self.id());
        if self.send(&delete).is_err() || self.send(&close).is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            match self.poll() {
                Ok(Some(Message::Response { msg_type, .. }))
                    if msg_type == msg::CLOSE_CONNECTION_RESPONSE =>
                {
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn shipped_profiles() -> Profiles {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-profiles");
        Profiles::load_dir(&dir)
            .expect("the repository's firmware profiles load")
            .profiles
    }

    fn capabilities(manufacturer: u32) -> llrp::Capabilities {
        llrp::Capabilities {
            max_antennas: 4,
            manufacturer,
            model: 2001002,
            firmware: "7.6.0".into(),
        }
    }

    #[test]
    fn an_impinj_reader_is_matched_to_the_impinj_profile_by_its_enterprise_number() {
        let line = describe_reader(Some(&capabilities(25882)), &shipped_profiles());
        assert!(line.contains("manufacturer PEN 25882"), "{line}");
        assert!(line.contains("profile impinj-llrp@"), "{line}");
    }

    #[test]
    fn another_manufacturer_gets_the_generic_llrp_profile() {
        let line = describe_reader(Some(&capabilities(4329)), &shipped_profiles());
        assert!(line.contains("profile llrp-generic@"), "{line}");
    }

    #[test]
    fn with_no_profiles_loaded_or_no_capabilities_the_status_says_so() {
        let line = describe_reader(Some(&capabilities(25882)), &Profiles::default());
        assert!(
            line.ends_with("no firmware profile for this manufacturer"),
            "{line}"
        );
        assert_eq!(
            describe_reader(None, &shipped_profiles()),
            "reader did not describe itself"
        );
    }
}
