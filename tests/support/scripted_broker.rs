//! A scripted MQTT 5.0 broker for the agent's interop tests, written from the OASIS MQTT 5.0
//! specification (sections cited as §), independent of the agent's own codec.
//!
//! It accepts TCP on a random loopback port and speaks enough MQTT 5.0 to play the brokers a
//! retailer may run and the misbehaviours Mosquitto will not do: CONNACK with chosen properties
//! (Maximum Packet Size, Receive Maximum, Maximum QoS, Retain Available, Server Keep Alive,
//! Topic Alias Maximum, Assigned Client Identifier), SUBACK, PUBACK with chosen reason codes
//! or none at all, a socket it stops reading, DISCONNECT in every form, a PUBACK for nothing.
//!
//! Like a real broker it enforces what it announced (§3.2.2.3, §3.3.4): a packet over its
//! Maximum Packet Size, a retained message without Retain Available, QoS above its Maximum QoS,
//! more QoS 1 messages in flight than its Receive Maximum, or a topic alias above its maximum
//! is a *violation*: recorded, and answered with the DISCONNECT the specification prescribes.
//! A test that ends with violations found a client that broke the broker's limits.
//!
//! The script can be changed while the agent runs (`set`), so a test can "fix the broker" and
//! watch delivery resume.

#![allow(dead_code)]

#[path = "scripted_broker_wire.rs"]
mod wire;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wire::{Bad, Cursor, connack, parse_connect};

/// What the broker does; every field has the plain-broker default.
#[derive(Clone, Debug)]
pub struct Script {
    /// CONNACK reason code (0 = accept).
    pub connack_reason: u8,
    pub maximum_packet_size: Option<u32>,
    pub receive_maximum: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<bool>,
    pub server_keep_alive: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub assigned_client_id: Option<String>,
    /// Reason codes for successive PUBACKs of `evt` publishes, first to last; past the end
    /// every one is 0x00.
    pub evt_reasons: Vec<u8>,
    /// Reason code for every PUBACK of an `evt` publish whose payload is larger than this
    /// (0x95 Packet too large, like Mosquitto's message_size_limit).
    pub evt_too_large_over: Option<usize>,
    /// Send no PUBACK at all (PINGREQs still answered).
    pub withhold_pubacks: bool,
    /// Send each PUBACK this long after its PUBLISH (so a window of messages is in flight).
    pub puback_delay: Option<Duration>,
    /// Answer PINGREQ.
    pub answer_pings: bool,
    /// After this many bytes received on a connection, stop reading its socket (it stays open).
    pub stop_reading_after: Option<usize>,
    /// Send these raw bytes (a DISCONNECT) after the n-th `evt` publish of a connection, then
    /// close it.
    pub disconnect_after_evt: Option<(usize, Vec<u8>)>,
    /// Send DISCONNECT with this raw form right after CONNACK, then close.
    pub disconnect_after_connack: Option<Vec<u8>>,
    /// Send a PUBACK for a packet id the client never used, right after CONNACK.
    pub unexpected_puback: bool,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            connack_reason: 0,
            maximum_packet_size: None,
            receive_maximum: None,
            maximum_qos: None,
            retain_available: None,
            server_keep_alive: None,
            topic_alias_maximum: None,
            assigned_client_id: None,
            evt_reasons: Vec::new(),
            evt_too_large_over: None,
            withhold_pubacks: false,
            puback_delay: None,
            answer_pings: true,
            stop_reading_after: None,
            disconnect_after_evt: None,
            disconnect_after_connack: None,
            unexpected_puback: false,
        }
    }
}

/// One CONNECT as received.
#[derive(Clone, Debug)]
pub struct ConnectInfo {
    pub at: Instant,
    pub client_id: String,
    pub keep_alive: u16,
    pub clean_start: bool,
    pub will_retain: Option<bool>,
    pub username: Option<String>,
}

/// One PUBLISH as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub conn: usize,
    pub at: Instant,
    pub topic: String,
    pub retain: bool,
    pub qos: u8,
    pub payload: Vec<u8>,
    /// The PUBACK reason this broker answered with (None: none sent).
    pub puback: Option<u8>,
    /// Total packet size on the wire.
    pub size: usize,
}

#[derive(Default, Debug)]
pub struct Record {
    pub connects: Vec<ConnectInfo>,
    pub publishes: Vec<Received>,
    pub subscriptions: Vec<String>,
    /// (connection, reason code, when) of each DISCONNECT the client sent.
    pub client_disconnects: Vec<(usize, u8, Instant)>,
    /// (connection, when) of each PINGREQ.
    pub pings: Vec<(usize, Instant)>,
    /// (connection, when) of each connection's end as seen by the broker.
    pub closed: Vec<(usize, Instant)>,
    pub violations: Vec<String>,
    /// Most QoS 1 publishes seen unacknowledged at once on any connection.
    pub max_in_flight: usize,
}

pub struct ScriptedBroker {
    pub port: u16,
    script: Arc<Mutex<Script>>,
    record: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
}

impl ScriptedBroker {
    pub fn start(script: Script) -> ScriptedBroker {
        let listener = small_buffer_listener();
        let port = listener.local_addr().expect("addr").port();
        let script = Arc::new(Mutex::new(script));
        let record = Arc::new(Mutex::new(Record::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, r, st) = (Arc::clone(&script), Arc::clone(&record), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (s, r, st) = (Arc::clone(&s), Arc::clone(&r), Arc::clone(&st));
                std::thread::spawn(move || {
                    let mut conn = Conn::new(stream, s, r, st);
                    conn.serve();
                    conn.finish();
                });
            }
        });
        ScriptedBroker {
            port,
            script,
            record,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Change the script for connections made from now on (and for the running ones where a
    /// field is read per packet: PUBACK policy, pings).
    pub fn set(&self, change: impl FnOnce(&mut Script)) {
        change(&mut self.script.lock().expect("script"));
    }

    pub fn record<T>(&self, read: impl FnOnce(&Record) -> T) -> T {
        read(&self.record.lock().expect("record"))
    }

    pub fn connections(&self) -> usize {
        self.record(|r| r.connects.len())
    }

    pub fn violations(&self) -> Vec<String> {
        self.record(|r| r.violations.clone())
    }

    /// Event ids in the `evt` publishes this broker acknowledged with success, with repeats.
    pub fn acked_event_ids(&self) -> Vec<String> {
        self.record(|r| {
            r.publishes
                .iter()
                .filter(|p| p.topic.ends_with("/evt") && matches!(p.puback, Some(0x00 | 0x10)))
                .flat_map(|p| event_ids(&p.payload))
                .collect()
        })
    }

    /// Payloads of `state` publishes, parsed, with their retain flag.
    pub fn states(&self) -> Vec<(serde_json::Value, bool)> {
        self.record(|r| {
            r.publishes
                .iter()
                .filter(|p| p.topic.ends_with("/state"))
                .filter_map(|p| {
                    serde_json::from_slice(&p.payload)
                        .ok()
                        .map(|v| (v, p.retain))
                })
                .collect()
        })
    }
}

impl Drop for ScriptedBroker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A listener whose accepted sockets have a 16 KiB receive buffer (set before listen, so the
/// window scale matches): when the broker stops reading, the agent's writes block after the
/// agent's own send buffer fills, not after tens of MiB of autotuned buffer.
fn small_buffer_listener() -> TcpListener {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    socket.bind(&addr.into()).expect("bind");
    socket.listen(64).expect("listen");
    socket.into()
}

/// Event ids of one `evt` payload (an EventBatch of the contract).
pub fn event_ids(payload: &[u8]) -> Vec<String> {
    let Ok(batch) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return Vec::new();
    };
    batch["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

struct Conn {
    stream: TcpStream,
    script: Arc<Mutex<Script>>,
    record: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
    index: usize,
    /// The script as it was at CONNECT (what this connection announced).
    announced: Script,
    bytes_in: usize,
    evt_count: usize,
    aliases: std::collections::HashMap<u16, String>,
    /// Packet ids of QoS 1 publishes not yet acknowledged by us.
    unacked: Arc<Mutex<std::collections::BTreeSet<u16>>>,
    /// Delayed PUBACKs: (due, packet) to the connection's ack thread.
    delayed: Option<std::sync::mpsc::Sender<(Instant, u16, Vec<u8>)>>,
}

impl Conn {
    fn new(
        stream: TcpStream,
        script: Arc<Mutex<Script>>,
        record: Arc<Mutex<Record>>,
        stop: Arc<AtomicBool>,
    ) -> Conn {
        let announced = script.lock().expect("script").clone();
        Conn {
            stream,
            script,
            record,
            stop,
            index: usize::MAX,
            announced,
            bytes_in: 0,
            evt_count: 0,
            aliases: Default::default(),
            unacked: Default::default(),
            delayed: None,
        }
    }

    fn finish(&self) {
        if self.index != usize::MAX {
            self.record
                .lock()
                .expect("record")
                .closed
                .push((self.index, Instant::now()));
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    fn violation(&self, what: String) {
        self.record.lock().expect("record").violations.push(what);
    }

    fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// DISCONNECT from the server with a reason code (§3.14), then close.
    fn disconnect(&mut self, reason: u8) {
        self.send(&[0xE0, 0x02, reason, 0x00]);
        self.linger();
    }

    /// Close our side after a DISCONNECT but read what the client still sends, briefly: closing
    /// with unread bytes makes the kernel send RST, and a RST throws away the DISCONNECT still
    /// in the client's receive buffer (the client would see "connection reset", not the reason).
    fn linger(&mut self) {
        let _ = self.stream.flush();
        let _ = self.stream.shutdown(Shutdown::Write);
        let _ = self
            .stream
            .set_read_timeout(Some(Duration::from_millis(200)));
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut buf = [0u8; 16384];
        while Instant::now() < deadline {
            match self.stream.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return,
            }
        }
    }

    /// The thread that sends delayed PUBACKs in due order.
    fn delayed_acks(&mut self) -> std::sync::mpsc::Sender<(Instant, u16, Vec<u8>)> {
        if let Some(tx) = &self.delayed {
            return tx.clone();
        }
        let (tx, rx) = std::sync::mpsc::channel::<(Instant, u16, Vec<u8>)>();
        let mut stream = self.stream.try_clone().expect("clone");
        let unacked = Arc::clone(&self.unacked);
        std::thread::spawn(move || {
            for (due, pkid, packet) in rx {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                unacked.lock().expect("unacked").remove(&pkid);
                if stream.write_all(&packet).is_err() {
                    return;
                }
            }
        });
        self.delayed = Some(tx.clone());
        tx
    }

    /// Read one packet: (first byte, body, total size). None at end of stream.
    fn read_packet(&mut self) -> Result<Option<(u8, Vec<u8>, usize)>, Bad> {
        let mut first = [0u8; 1];
        match self.stream.read(&mut first) {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
        // §1.5.5 Variable Byte Integer.
        let mut len: usize = 0;
        let mut header = 1;
        for i in 0..4 {
            let mut b = [0u8; 1];
            if self.stream.read_exact(&mut b).is_err() {
                return Ok(None);
            }
            header += 1;
            len |= usize::from(b[0] & 0x7F) << (7 * i);
            if b[0] & 0x80 == 0 {
                break;
            }
            if i == 3 {
                return Err(Bad("remaining length over 4 bytes".into()));
            }
        }
        let total = header + len;
        if let Some(max) = self.announced.maximum_packet_size
            && total > max as usize
        {
            self.violation(format!(
                "a {total}-byte packet (type {}) over the announced Maximum Packet Size {max}",
                first[0] >> 4
            ));
            // §3.2.2.3.6 / §4.13: the server disconnects with 0x95.
            self.disconnect(0x95);
            return Ok(None);
        }
        let mut body = vec![0u8; len];
        if self.stream.read_exact(&mut body).is_err() {
            return Ok(None);
        }
        self.bytes_in += total;
        Ok(Some((first[0], body, total)))
    }

    fn serve(&mut self) {
        let _ = self.stream.set_nodelay(true);
        // §3.1: the first packet must be CONNECT.
        let Ok(Some((first, body, _))) = self.read_packet() else {
            return;
        };
        if first >> 4 != 1 {
            self.violation("first packet is not CONNECT".into());
            return;
        }
        let connect = match parse_connect(&body) {
            Ok(c) => c,
            Err(Bad(why)) => {
                self.violation(format!("malformed CONNECT: {why}"));
                return;
            }
        };
        {
            let mut record = self.record.lock().expect("record");
            self.index = record.connects.len();
            record.connects.push(connect.clone());
        }
        let a = self.announced.clone();
        let mut reason = a.connack_reason;
        // §3.2.2.3.5: a Will with retain on a server without retain is refused with 0x9A.
        if a.retain_available == Some(false) && connect.will_retain == Some(true) && reason == 0 {
            reason = 0x9A;
        }
        self.send(&connack(reason, &a));
        if reason >= 0x80 {
            return;
        }
        if let Some(raw) = &a.disconnect_after_connack {
            let raw = raw.clone();
            self.send(&raw);
            self.linger();
            return;
        }
        if a.unexpected_puback {
            // A PUBACK for packet id 65000, which the client never used.
            self.send(&[0x40, 0x02, 0xFD, 0xE8]);
        }
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            if let Some(limit) = a.stop_reading_after
                && self.bytes_in >= limit
            {
                // The socket stays open and unread: the client's writes fill the buffers.
                // Released when the script no longer asks for it, or the test ends.
                loop {
                    std::thread::sleep(Duration::from_millis(50));
                    let still = self
                        .script
                        .lock()
                        .expect("script")
                        .stop_reading_after
                        .is_some();
                    if !still || self.stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
            }
            let packet = match self.read_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return,
                Err(Bad(why)) => {
                    self.violation(format!("malformed packet: {why}"));
                    self.disconnect(0x81);
                    return;
                }
            };
            match self.handle(packet) {
                Ok(true) => {}
                Ok(false) => return,
                Err(Bad(why)) => {
                    self.violation(why);
                    return;
                }
            }
        }
    }

    /// Ok(false): the connection ends.
    fn handle(&mut self, (first, body, size): (u8, Vec<u8>, usize)) -> Result<bool, Bad> {
        let mut r = Cursor::new(&body);
        match first >> 4 {
            3 => {
                let qos = (first >> 1) & 3;
                let retain = first & 1 == 1;
                let mut topic = r.string()?;
                let pkid = if qos > 0 { r.u16()? } else { 0 };
                let props = r.properties()?;
                let payload = r.rest().to_vec();
                let a = &self.announced;
                if let Some(alias) = props.alias {
                    let max = a.topic_alias_maximum.unwrap_or(0);
                    if alias == 0 || alias > max {
                        self.violation(format!(
                            "topic alias {alias} over the announced maximum {max}"
                        ));
                        self.disconnect(0x94);
                        return Ok(false);
                    }
                    if topic.is_empty() {
                        match self.aliases.get(&alias) {
                            Some(t) => topic = t.clone(),
                            None => {
                                self.violation(format!("unknown topic alias {alias}"));
                                self.disconnect(0x82);
                                return Ok(false);
                            }
                        }
                    } else {
                        self.aliases.insert(alias, topic.clone());
                    }
                }
                if retain && a.retain_available == Some(false) {
                    self.violation(format!(
                        "a retained PUBLISH to {topic} without Retain Available"
                    ));
                    self.disconnect(0x9A);
                    return Ok(false);
                }
                if qos > a.maximum_qos.unwrap_or(2) {
                    self.violation(format!(
                        "a QoS {qos} PUBLISH over the announced Maximum QoS"
                    ));
                    self.disconnect(0x9B);
                    return Ok(false);
                }
                if qos == 1 {
                    let in_flight = {
                        let mut unacked = self.unacked.lock().expect("unacked");
                        unacked.insert(pkid);
                        unacked.len()
                    };
                    let max = usize::from(a.receive_maximum.unwrap_or(u16::MAX));
                    {
                        let mut record = self.record.lock().expect("record");
                        record.max_in_flight = record.max_in_flight.max(in_flight);
                    }
                    if in_flight > max {
                        self.violation(format!(
                            "{in_flight} QoS 1 publishes in flight over the announced Receive Maximum {max}"
                        ));
                        self.disconnect(0x93);
                        return Ok(false);
                    }
                }
                let is_evt = topic.ends_with("/evt");
                let script = self.script.lock().expect("script").clone();
                let reason = if script.withhold_pubacks || qos == 0 {
                    None
                } else if is_evt {
                    let n = self.record_evt_index();
                    let too_large = script
                        .evt_too_large_over
                        .is_some_and(|limit| payload.len() > limit);
                    Some(if too_large {
                        0x95
                    } else {
                        script.evt_reasons.get(n).copied().unwrap_or(0)
                    })
                } else {
                    Some(0)
                };
                self.record
                    .lock()
                    .expect("record")
                    .publishes
                    .push(Received {
                        conn: self.index,
                        at: Instant::now(),
                        topic: topic.clone(),
                        retain,
                        qos,
                        payload,
                        puback: reason,
                        size,
                    });
                if let Some(reason) = reason {
                    let [hi, lo] = pkid.to_be_bytes();
                    let packet = if reason == 0 {
                        vec![0x40, 0x02, hi, lo]
                    } else {
                        vec![0x40, 0x03, hi, lo, reason]
                    };
                    match script.puback_delay {
                        Some(delay) => {
                            let _ =
                                self.delayed_acks()
                                    .send((Instant::now() + delay, pkid, packet));
                        }
                        None => {
                            self.unacked.lock().expect("unacked").remove(&pkid);
                            self.send(&packet);
                        }
                    }
                }
                if is_evt {
                    self.evt_count += 1;
                    if let Some((n, raw)) = &script.disconnect_after_evt
                        && self.evt_count >= *n
                    {
                        let raw = raw.clone();
                        self.send(&raw);
                        self.linger();
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            8 => {
                // SUBSCRIBE (§3.8): grant what was asked, capped at the Maximum QoS.
                let pkid = r.u16()?;
                r.properties()?;
                let mut codes = Vec::new();
                while !r.is_empty() {
                    let filter = r.string()?;
                    let options = r.u8()?;
                    self.record
                        .lock()
                        .expect("record")
                        .subscriptions
                        .push(filter);
                    codes.push((options & 3).min(self.announced.maximum_qos.unwrap_or(2)));
                }
                let mut packet = vec![0x90, (3 + codes.len()) as u8];
                packet.extend_from_slice(&pkid.to_be_bytes());
                packet.push(0);
                packet.extend_from_slice(&codes);
                self.send(&packet);
                Ok(true)
            }
            4 => {
                // PUBACK for something we sent: we send only QoS 0, so none is expected.
                self.violation(
                    "a PUBACK from the client for a message the broker never sent".into(),
                );
                Ok(true)
            }
            12 => {
                self.record
                    .lock()
                    .expect("record")
                    .pings
                    .push((self.index, Instant::now()));
                if self.script.lock().expect("script").answer_pings {
                    self.send(&[0xD0, 0x00]);
                }
                Ok(true)
            }
            14 => {
                let reason = if body.is_empty() { 0 } else { body[0] };
                self.record
                    .lock()
                    .expect("record")
                    .client_disconnects
                    .push((self.index, reason, Instant::now()));
                Ok(false)
            }
            other => {
                self.violation(format!("unexpected packet type {other} from the client"));
                self.disconnect(0x82);
                Ok(false)
            }
        }
    }

    fn record_evt_index(&self) -> usize {
        self.record
            .lock()
            .expect("record")
            .publishes
            .iter()
            .filter(|p| p.topic.ends_with("/evt"))
            .count()
    }
}
