#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! A LAN peer cannot take the API away from the tills (docs/security.md, finding 1): hundreds
//! of idle or half-sent connections from one address are refused past its share or closed
//! after the header timeout, live streams have a ceiling, and a till's sale is answered as
//! usual meanwhile.

mod common;

use common::{Settings, Store, product, stock};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const SKU: &str = "SKU-LIMIT-1";

fn store(api: &str) -> Store {
    let store = Store::with(Settings {
        api: api.into(),
        ..Settings::default()
    });
    store.import_ok(
        "products",
        "products.ndjson",
        &[product(&common::gtin14(400_638_133_393), SKU, "Item")],
    );
    store.import_ok("stock", "stock.ndjson", &[stock(SKU, 100)]);
    store
}

/// A connection from `source` (another loopback address: another LAN peer) to `agent`.
fn connect_from(source: [u8; 4], agent: SocketAddr) -> std::io::Result<TcpStream> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((source, 0)))?;
        let stream = socket.connect(agent).await?;
        stream.into_std()
    })
}

/// What the agent says on `stream` within `wait`: `Some(text)` (possibly empty: closed), or
/// `None` when it said nothing and kept the connection open.
fn said(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(wait)).ok()?;
    let mut buf = [0u8; 512];
    match stream.read(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(String::new()),
        Err(_) => None,
    }
}

#[test]
fn hundreds_of_half_sent_connections_from_one_peer_never_slow_a_tills_sale() {
    let store = store("header_read_timeout = \"4s\"\nmax_connections_per_client = 64\n");
    let agent = store.start();
    let addr: SocketAddr = agent.addr.parse().unwrap();
    // The peer opens 300 connections and sends half a request on each.
    let mut held = Vec::new();
    for _ in 0..300 {
        let mut stream = connect_from([127, 0, 0, 2], addr).expect("connect");
        let _ = stream.write_all(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
        held.push(stream);
    }
    let opened = Instant::now();
    // Past its share the peer was refused at once, with a reason.
    let mut refused = 0;
    let mut kept = Vec::new();
    for mut stream in held {
        match said(&mut stream, Duration::from_millis(10)) {
            Some(text) if text.starts_with("HTTP/1.1 503") => {
                assert!(text.contains("too_many_connections"), "{text}");
                refused += 1;
            }
            Some(text) => panic!("unexpected answer to a half-sent request: {text:?}"),
            None => kept.push(stream),
        }
    }
    assert_eq!(refused, 300 - 64, "the peer's share is 64 connections");
    // The till, from its own address, is served as usual meanwhile.
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        let (status, body) = agent.post_json(
            "/v1/sales",
            &json!({"client_key": format!("r-{i}"), "lines": [{"sku": SKU, "qty": 1}]}),
        );
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, 201, "{body}");
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a sale took {slowest:?} while the peer held its connections"
    );
    // The 64 it kept are closed once the header timeout passes.
    std::thread::sleep(Duration::from_millis(4_500).saturating_sub(opened.elapsed()));
    for mut stream in kept {
        let text = said(&mut stream, Duration::from_secs(2))
            .expect("the agent closed the half-sent connection after its header timeout");
        assert!(!text.starts_with("HTTP/1.1 2"), "{text}");
    }
    // And the peer may connect again, now that its places are free.
    let mut again = connect_from([127, 0, 0, 2], addr).expect("reconnect");
    again
        .write_all(b"GET /v1/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let text = said(&mut again, Duration::from_secs(5)).unwrap_or_default();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[test]
fn a_peer_opening_more_live_streams_than_allowed_is_told_503_and_the_others_keep_streaming() {
    let store = store("max_streams = 2\n");
    let agent = store.start();
    let addr: SocketAddr = agent.addr.parse().unwrap();
    let open = |path: &str| {
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let text = said(&mut stream, Duration::from_secs(5)).unwrap_or_default();
        (stream, text)
    };
    let (first, text) = open("/v1/events");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let (_second, text) = open("/v1/devices/live");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let (_third, text) = open("/v1/events");
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("too_many_streams"), "{text}");
    // A stream closed gives its place back.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_s, text) = open("/v1/events");
        if text.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the place never came back: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
