//! The LLRP reader thread against a fake reader on 127.0.0.1 speaking real TCP: the fake
//! answers every request, then streams RO_ACCESS_REPORTs (fragmented, batched, with unknown
//! and custom parameters), drops connections and refuses ROSpecs on demand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use relais::devices::rfid::llrp::{self, FrameReader, TagRead, msg, param};
use relais::devices::rfid::{LlrpReaderConfig, spawn};
use relais::devices::{DeviceEvent, DeviceState, EventSink, Stop};

// ---------------------------------------------------------------------------------------------
// Fake reader
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Behaviour {
    /// Status code and description answered to ADD_ROSPEC.
    add_rospec_error: Option<(u16, String)>,
    /// Status of the ConnectionAttemptEvent (0 = accepted).
    connection_status: u16,
}

/// One accepted client connection.
struct Session {
    writer: Arc<Mutex<TcpStream>>,
    /// Message types received from the client, in order, with their ids.
    received: Arc<Mutex<Vec<(u16, u32)>>>,
    started: Receiver<()>,
}

impl Session {
    fn wait_started(&self) {
        self.started
            .recv_timeout(Duration::from_secs(10))
            .expect("the client never sent START_ROSPEC");
    }

    fn write(&self, bytes: &[u8]) {
        self.writer.lock().unwrap().write_all(bytes).unwrap();
    }

    /// Write `bytes` in pieces of the given sizes (cycled), pausing so that TCP delivers
    /// them separately.
    fn write_in_pieces(&self, bytes: &[u8], sizes: &[usize]) {
        let mut w = self.writer.lock().unwrap();
        let mut at = 0;
        for size in sizes.iter().cycle() {
            if at >= bytes.len() {
                break;
            }
            let end = (at + size).min(bytes.len());
            w.write_all(&bytes[at..end]).unwrap();
            w.flush().unwrap();
            thread::sleep(Duration::from_millis(2));
            at = end;
        }
    }

    fn drop_connection(&self) {
        let _ = self.writer.lock().unwrap().shutdown(Shutdown::Both);
    }

    fn received_types(&self) -> Vec<u16> {
        self.received.lock().unwrap().iter().map(|r| r.0).collect()
    }
}

struct FakeReader {
    addr: SocketAddr,
    sessions: Receiver<Session>,
}

impl FakeReader {
    fn start(behaviour: Behaviour) -> FakeReader {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, sessions) = mpsc::channel();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                stream.set_nodelay(true).unwrap();
                let session = serve(stream, behaviour.clone());
                if tx.send(session).is_err() {
                    return;
                }
            }
        });
        FakeReader { addr, sessions }
    }

    fn next_session(&self) -> Session {
        self.sessions
            .recv_timeout(Duration::from_secs(10))
            .expect("the client never connected")
    }
}

/// Announce the connection, then answer requests on a thread of its own while the test
/// writes reports through the returned session.
fn serve(stream: TcpStream, behaviour: Behaviour) -> Session {
    let writer = Arc::new(Mutex::new(stream.try_clone().unwrap()));
    let received = Arc::new(Mutex::new(Vec::new()));
    let (started_tx, started) = mpsc::channel();
    writer
        .lock()
        .unwrap()
        .write_all(&llrp::reader_event_connection_attempt(
            0,
            behaviour.connection_status,
            1_700_000_000_000_000,
        ))
        .unwrap();
    let (w, r) = (writer.clone(), received.clone());
    thread::spawn(move || {
        let mut stream = stream;
        let mut frames = FrameReader::default();
        loop {
            while let Ok(Some(frame)) = frames.next_frame() {
                r.lock().unwrap().push((frame.msg_type, frame.id));
                let reply = match frame.msg_type {
                    msg::ADD_ROSPEC => match &behaviour.add_rospec_error {
                        Some((code, text)) => {
                            llrp::status_response(msg::ADD_ROSPEC_RESPONSE, frame.id, *code, text)
                        }
                        None => llrp::status_response(msg::ADD_ROSPEC_RESPONSE, frame.id, 0, ""),
                    },
                    msg::GET_READER_CAPABILITIES
                    | msg::SET_READER_CONFIG
                    | msg::ENABLE_ROSPEC
                    | msg::START_ROSPEC
                    | msg::DELETE_ROSPEC
                    | msg::CLOSE_CONNECTION => {
                        llrp::status_response(msg::response_to(frame.msg_type), frame.id, 0, "")
                    }
                    _ => continue,
                };
                if w.lock().unwrap().write_all(&reply).is_err() {
                    return;
                }
                if frame.msg_type == msg::START_ROSPEC {
                    let _ = started_tx.send(());
                }
                if frame.msg_type == msg::CLOSE_CONNECTION {
                    let _ = w.lock().unwrap().shutdown(Shutdown::Both);
                    return;
                }
            }
            match frames.read_from(&mut stream) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    Session {
        writer,
        received,
        started,
    }
}

// ---------------------------------------------------------------------------------------------
// Client side helpers
// ---------------------------------------------------------------------------------------------

struct Client {
    events: tokio::sync::mpsc::Receiver<DeviceEvent>,
    stop: Stop,
    handle: Option<JoinHandle<()>>,
}

impl Client {
    fn start(addr: SocketAddr, window: Duration, keepalive: Duration) -> Client {
        let (sink, events) = EventSink::channel(100_000);
        let stop = Stop::new();
        let config = LlrpReaderConfig {
            name: "test".into(),
            address: addr,
            debounce_window: window,
            keepalive,
            report_every_n_tags: 10,
        };
        let handle = spawn(config, sink, stop.clone()).unwrap();
        Client {
            events,
            stop,
            handle: Some(handle),
        }
    }

    /// Collect events until one matches `pred` (returned last), or panic after `timeout`.
    fn until(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&DeviceEvent) -> bool,
    ) -> Vec<DeviceEvent> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            match self.events.try_recv() {
                Ok(e) => {
                    let hit = pred(&e);
                    seen.push(e);
                    if hit {
                        return seen;
                    }
                }
                Err(_) => {
                    assert!(
                        Instant::now() < deadline,
                        "timed out; events so far: {seen:#?}"
                    );
                    thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }

    /// Everything that arrives during `d`.
    fn during(&mut self, d: Duration) -> Vec<DeviceEvent> {
        let deadline = Instant::now() + d;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match self.events.try_recv() {
                Ok(e) => seen.push(e),
                Err(_) => thread::sleep(Duration::from_millis(2)),
            }
        }
        seen
    }

    fn stop_and_join(&mut self, within: Duration) {
        self.stop.stop();
        let started = Instant::now();
        let handle = self.handle.take().unwrap();
        while !handle.is_finished() {
            assert!(
                started.elapsed() < within,
                "the thread did not stop within {within:?}"
            );
            // Keep draining so a full channel cannot block the thread.
            while self.events.try_recv().is_ok() {}
            thread::sleep(Duration::from_millis(5));
        }
        handle.join().unwrap();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.stop();
    }
}

fn is_state(e: &DeviceEvent, want: DeviceState) -> bool {
    matches!(e, DeviceEvent::Status { state, .. } if *state == want)
}

fn arrivals(events: &[DeviceEvent]) -> Vec<(String, u16)> {
    events
        .iter()
        .filter_map(|e| match e {
            DeviceEvent::TagArrived {
                epc_hex, antenna, ..
            } => Some((epc_hex.clone(), *antenna)),
            _ => None,
        })
        .collect()
}

fn departures(events: &[DeviceEvent]) -> Vec<(String, u16, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            DeviceEvent::TagDeparted {
                epc_hex,
                antenna,
                reads,
                ..
            } => Some((epc_hex.clone(), *antenna, *reads)),
            _ => None,
        })
        .collect()
}

fn tag(serial: u32, antenna: u16) -> TagRead {
    let mut epc = vec![0x30, 0x74, 0x25, 0x7B, 0xF7, 0x19, 0x4E, 0x40];
    epc.extend_from_slice(&serial.to_be_bytes());
    TagRead {
        epc,
        epc_bits: 96,
        antenna,
        peak_rssi_dbm: Some(-55),
        first_seen_utc_us: Some(1_700_000_000_000_000),
        seen_count: 1,
    }
}

fn hex(serial: u32) -> String {
    format!("3074257BF7194E40{serial:08X}")
}

const SECOND: Duration = Duration::from_secs(1);
const KEEPALIVE: Duration = Duration::from_secs(10);

/// Hand-built TLV for the tests that need parameters our encoders never write.
fn tlv(out: &mut Vec<u8>, param_type: u16, value: &[u8]) {
    out.extend_from_slice(&param_type.to_be_bytes());
    out.extend_from_slice(&((value.len() + 4) as u16).to_be_bytes());
    out.extend_from_slice(value);
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn the_client_configures_the_reader_in_order_reports_connected_and_turns_reads_into_arrivals() {
    let fake = FakeReader::start(Behaviour::default());
    let mut client = Client::start(fake.addr, SECOND, KEEPALIVE);
    let session = fake.next_session();
    session.wait_started();
    let events = client.until(5 * SECOND, |e| is_state(e, DeviceState::Connected));
    let DeviceEvent::Status { device, detail, .. } = events.last().unwrap() else {
        unreachable!()
    };
    assert_eq!(device.0, format!("llrp:{}", fake.addr));
    assert!(detail.contains("inventory running"), "{detail}");
    assert_eq!(
        session.received_types(),
        vec![
            msg::GET_READER_CAPABILITIES,
            msg::SET_READER_CONFIG,
            msg::ADD_ROSPEC,
            msg::ENABLE_ROSPEC,
            msg::START_ROSPEC
        ]
    );

    session.write(&llrp::ro_access_report(
        900,
        &[tag(1, 1), tag(2, 2), tag(1, 1)],
    ));
    let events = client.until(5 * SECOND, |e| {
        matches!(e, DeviceEvent::TagArrived { antenna: 2, .. })
    });
    assert_eq!(arrivals(&events), vec![(hex(1), 1), (hex(2), 2)]);
    let DeviceEvent::TagArrived { rssi_dbm, .. } = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(*rssi_dbm, Some(-55));

    // On stop the client deletes its ROSpec and closes the connection politely.
    client.stop_and_join(3 * SECOND);
    let types = session.received_types();
    assert_eq!(
        types[types.len() - 2..],
        [msg::DELETE_ROSPEC, msg::CLOSE_CONNECTION]
    );
}

#[test]
fn fragmented_writes_and_several_messages_per_write_lose_no_read_and_keepalives_are_acked() {
    let fake = FakeReader::start(Behaviour::default());
    let mut client = Client::start(fake.addr, 10 * SECOND, KEEPALIVE);
    let session = fake.next_session();
    session.wait_started();
    client.until(5 * SECOND, |e| is_state(e, DeviceState::Connected));

    let mut stream = Vec::new();
    for i in 0..40u32 {
        stream.extend(llrp::ro_access_report(
            1000 + i,
            &[tag(100 + i, 1), tag(100 + i, 1)],
        ));
        if i % 10 == 5 {
            stream.extend(llrp::keepalive(7000 + i));
        }
    }
    // Odd sizes split headers, lengths and parameters; 97 and 211 carry several messages.
    session.write_in_pieces(&stream, &[1, 3, 7, 13, 97, 5, 211, 2]);
    let events = client.until(
        10 * SECOND,
        |e| matches!(e, DeviceEvent::TagArrived { epc_hex, .. } if *epc_hex == hex(139)),
    );
    let want: Vec<(String, u16)> = (100..140).map(|i| (hex(i), 1)).collect();
    assert_eq!(arrivals(&events), want);

    // The whole stream again in one write.
    let mut stream = Vec::new();
    for i in 0..40u32 {
        stream.extend(llrp::ro_access_report(2000 + i, &[tag(200 + i, 2)]));
    }
    session.write(&stream);
    let events = client.until(
        10 * SECOND,
        |e| matches!(e, DeviceEvent::TagArrived { epc_hex, .. } if *epc_hex == hex(239)),
    );
    assert_eq!(arrivals(&events).len(), 40);

    let deadline = Instant::now() + 5 * SECOND;
    loop {
        let acks: Vec<u32> = session
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t == msg::KEEPALIVE_ACK)
            .map(|(_, id)| *id)
            .collect();
        if acks.len() == 4 {
            assert_eq!(acks, vec![7005, 7015, 7025, 7035]);
            break;
        }
        assert!(Instant::now() < deadline, "keepalive acks: {acks:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn unknown_parameters_custom_parameters_and_unknown_messages_are_skipped() {
    let fake = FakeReader::start(Behaviour::default());
    let mut client = Client::start(fake.addr, 10 * SECOND, KEEPALIVE);
    let session = fake.next_session();
    session.wait_started();
    client.until(5 * SECOND, |e| is_state(e, DeviceState::Connected));

    // A vendor's custom message (type 1023) and a message type LLRP does not define.
    session.write(&llrp::encode_message(
        1,
        msg::CUSTOM_MESSAGE,
        1,
        &[0, 0, 0x65, 0x1A, 1, 2],
    ));
    session.write(&llrp::encode_message(1, 999, 2, &[1, 2, 3, 4, 5]));

    let mut body = Vec::new();
    // Report-level custom parameter (vendor 25882, subtype 50, payload).
    tlv(
        &mut body,
        param::CUSTOM,
        &[0, 0, 0x65, 0x1A, 0, 0, 0, 50, 9, 9],
    );
    // TagReportData: an EPCData TLV of 128 bits, an unknown TLV (type 700), a known TV we do
    // not use (ChannelIndex), a custom parameter, then the antenna.
    let mut inner = Vec::new();
    let mut epc_data = 128u16.to_be_bytes().to_vec();
    epc_data.extend_from_slice(&[0xE2; 16]);
    tlv(&mut inner, param::EPC_DATA, &epc_data);
    tlv(&mut inner, 700, &[1, 2, 3, 4, 5, 6, 7]);
    inner.extend_from_slice(&[0x80 | 7, 0, 3]);
    tlv(&mut inner, param::CUSTOM, &[0, 0, 0x65, 0x1A, 0, 0, 0, 1]);
    inner.extend_from_slice(&[0x80 | 1, 0, 4]);
    tlv(&mut body, param::TAG_REPORT_DATA, &inner);
    // An RFSurveyReportData (242), which we never asked for, then a normal tag.
    tlv(&mut body, 242, &[0; 12]);
    let mut normal = Vec::new();
    llrp::tag_report_data(&mut normal, &tag(5, 1));
    body.extend(normal);
    session.write(&llrp::encode_message(1, msg::RO_ACCESS_REPORT, 3, &body));

    let events = client.until(5 * SECOND, |e| {
        matches!(e, DeviceEvent::TagArrived { antenna: 1, .. })
    });
    assert_eq!(arrivals(&events), vec![("E2".repeat(16), 4), (hex(5), 1)]);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, DeviceEvent::Status { .. })),
        "{events:?}"
    );
}

#[test]
fn a_dropped_connection_is_reported_disconnected_then_the_client_reconnects_and_resumes() {
    let fake = FakeReader::start(Behaviour::default());
    let mut client = Client::start(fake.addr, 10 * SECOND, KEEPALIVE);
    let first = fake.next_session();
    first.wait_started();
    client.until(5 * SECOND, |e| is_state(e, DeviceState::Connected));
    first.write(&llrp::ro_access_report(1, &[tag(1, 1)]));
    client.until(5 * SECOND, |e| matches!(e, DeviceEvent::TagArrived { .. }));

    first.drop_connection();
    let events = client.until(5 * SECOND, |e| is_state(e, DeviceState::Disconnected));
    let DeviceEvent::Status { detail, .. } = events.last().unwrap() else {
        unreachable!()
    };
    assert!(
        detail.contains("closed the connection") || detail.contains("lost"),
        "{detail}"
    );

    let second = fake.next_session();
    second.wait_started();
    client.until(5 * SECOND, |e| is_state(e, DeviceState::Connected));
    // Tag 1 is still present (its window has not run out): no second arrival for it.
    second.write(&llrp::ro_access_report(2, &[tag(1, 1), tag(2, 1)]));
    let events = client.until(5 * SECOND, |e| matches!(e, DeviceEvent::TagArrived { .. }));
    assert_eq!(arrivals(&events), vec![(hex(2), 1)]);
}

#[test]
fn ten_thousand_reads_a_second_of_twenty_epcs_on_two_antennas_make_exactly_forty_arrivals_then_forty_departures()
 {
    let window = Duration::from_millis(1500);
    let fake = FakeReader::start(Behaviour::default());
    let mut client = Client::start(fake.addr, window, KEEPALIVE);
    let session = fake.next_session();
    session.wait_started();
    client.until(5 * SECOND, |e| is_state(e, DeviceState::Connected));

    // 100 reports of 100 reads, one every 10 ms: 10,000 reads in one second.
    let start = Instant::now();
    let mut n = 0u32;
    for report in 0..100u32 {
        let tags: Vec<TagRead> = (0..100)
            .map(|_| {
                n += 1;
                tag(n % 20, 1 + (n / 20 % 2) as u16)
            })
            .collect();
        session.write(&llrp::ro_access_report(report, &tags));
        let due = start + Duration::from_millis(10 * u64::from(report + 1));
        thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    let sent_in = start.elapsed();
    assert!(sent_in < Duration::from_millis(1300), "{sent_in:?}");

    // Before the window runs out: exactly the 40 arrivals and nothing departed.
    let during = client.during(window / 2);
    let mut arrived = arrivals(&during);
    assert_eq!(arrived.len(), 40, "{during:?}");
    arrived.sort();
    arrived.dedup();
    assert_eq!(arrived.len(), 40);
    assert!(departures(&during).is_empty());

    // After the window: 40 departures whose read counts add up to every read sent.
    let after = client.during(window + Duration::from_millis(700));
    let departed = departures(&after);
    assert_eq!(departed.len(), 40, "{after:?}");
    assert_eq!(departed.iter().map(|d| d.2).sum::<u64>(), 10_000);
    assert!(departed.iter().all(|d| d.2 == 250), "{departed:?}");
    assert!(arrivals(&after).is_empty());
}

#[test]
fn an_error_status_to_add_rospec_makes_the_reader_faulty_with_its_error_description() {
    let fake = FakeReader::start(Behaviour {
        add_rospec_error: Some((101, "AntennaID 9 does not exist".into())),
        ..Behaviour::default()
    });
    let mut client = Client::start(fake.addr, SECOND, KEEPALIVE);
    let session = fake.next_session();
    let events = client.until(5 * SECOND, |e| is_state(e, DeviceState::Faulty));
    let DeviceEvent::Status { detail, .. } = events.last().unwrap() else {
        unreachable!()
    };
    assert!(detail.contains("ADD_ROSPEC"), "{detail}");
    assert!(detail.contains("AntennaID 9 does not exist"), "{detail}");
    assert!(detail.contains("M_FieldError"), "{detail}");
    assert!(
        !events.iter().any(|e| is_state(e, DeviceState::Connected)),
        "{events:?}"
    );
    assert!(!session.received_types().contains(&msg::ENABLE_ROSPEC));
    client.stop_and_join(3 * SECOND);
}

#[test]
fn a_reader_that_refuses_the_connection_because_another_client_holds_it_is_faulty() {
    let fake = FakeReader::start(Behaviour {
        connection_status: 2,
        ..Behaviour::default()
    });
    let mut client = Client::start(fake.addr, SECOND, KEEPALIVE);
    let _session = fake.next_session();
    let events = client.until(5 * SECOND, |e| is_state(e, DeviceState::Faulty));
    let DeviceEvent::Status { detail, .. } = events.last().unwrap() else {
        unreachable!()
    };
    assert!(detail.contains("another client"), "{detail}");
}

#[test]
fn a_reader_silent_for_three_keepalive_periods_is_treated_as_disconnected() {
    let fake = FakeReader::start(Behaviour::default());
    let mut client = Client::start(fake.addr, SECOND, Duration::from_millis(200));
    let session = fake.next_session();
    session.wait_started();
    let connected_at = Instant::now();
    client.until(5 * SECOND, |e| is_state(e, DeviceState::Connected));
    let events = client.until(5 * SECOND, |e| is_state(e, DeviceState::Disconnected));
    assert!(connected_at.elapsed() >= Duration::from_millis(600));
    let DeviceEvent::Status { detail, .. } = events.last().unwrap() else {
        unreachable!()
    };
    assert!(detail.contains("keepalive"), "{detail}");
}

#[test]
fn an_absent_reader_is_reported_disconnected_and_stop_is_honoured_within_a_poll_interval() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut client = Client::start(addr, SECOND, KEEPALIVE);
    let events = client.until(5 * SECOND, |e| is_state(e, DeviceState::Disconnected));
    let DeviceEvent::Status { detail, .. } = events.last().unwrap() else {
        unreachable!()
    };
    assert!(detail.contains("cannot connect"), "{detail}");
    client.stop_and_join(Duration::from_millis(600));
}

#[test]
fn the_reader_config_reads_humantime_durations_and_defaults_the_rest() {
    let c: LlrpReaderConfig = toml::from_str(
        "name = \"door\"\naddress = \"192.0.2.10:5084\"\ndebounce_window = \"2s\"\n",
    )
    .unwrap();
    assert_eq!(c.debounce_window, Duration::from_secs(2));
    assert_eq!(c.keepalive, Duration::from_secs(10));
    assert_eq!(c.report_every_n_tags, 20);
    let err = toml::from_str::<LlrpReaderConfig>(
        "name = \"door\"\naddress = \"192.0.2.10:5084\"\nkeepalive = \"often\"\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("not a duration"), "{err}");
}
