//! One MQTT connection: TCP (or TLS), the CONNECT/CONNACK handshake, then a reader task and a
//! writer task around the socket so the session never waits on it.
//!
//! Why our own tasks and not a client library's event loop: the liveness the agent needs is
//! about the socket itself. A broker that stops reading leaves a writer blocked in `write`
//! forever; a library that writes from the same loop that sends PINGREQs then never pings and
//! never notices (issue 19). Here the writer measures every write against `write_timeout`, the
//! reader timestamps every packet, and the session reads both through [`Link::liveness`].

use super::codec::{self, CodecError, ConnAck, Connect, Incoming};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Why a connection could not be made or ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("no TCP connection to {addr} within {secs} s")]
    ConnectTimeout { addr: String, secs: u64 },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("the CONNECT packet is larger than MQTT allows (client id, credentials or Will)")]
    ConnectTooLarge,
    #[error("no CONNACK within {0} s")]
    NoConnAck(u64),
    #[error("the broker answered CONNECT with {0:?} instead of CONNACK")]
    NotConnAck(Box<Incoming>),
    #[error("the connection closed before CONNACK")]
    ClosedBeforeConnAck,
    #[error("reading from the broker: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Codec(#[from] CodecError),
}

/// Why a running link ended, as seen by its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The broker closed the socket.
    Eof,
    Io(String),
    Codec(CodecError),
    /// A write accepted no byte for this long.
    WriteStalled(Duration),
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::Eof => f.write_str("the broker closed the connection"),
            Closed::Io(e) => write!(f, "connection error: {e}"),
            Closed::Codec(e) => write!(f, "{e}"),
            Closed::WriteStalled(d) => write!(
                f,
                "the broker accepted no byte for {} s (it stopped reading: a full receive buffer or a dead path)",
                d.as_secs()
            ),
        }
    }
}

pub enum LinkEvent {
    Packet(Incoming),
    Closed(Closed),
}

/// Where to connect and how.
pub struct LinkOptions {
    pub host: String,
    pub port: u16,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub connect: Connect,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
}

/// Timestamps shared by the tasks and the session (ms since `start`, 0 = never).
struct Clock {
    start: Instant,
    written: AtomicU64,
    writing_since: AtomicU64,
    last_incoming: AtomicU64,
    ping_sent: AtomicU64,
    stalled: AtomicBool,
}

impl Clock {
    fn now(&self) -> u64 {
        // +1: 0 means "never".
        u64::try_from(self.start.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }
}

enum Out {
    Packet(Bytes),
    /// Write this (a DISCONNECT), then close the socket.
    Close(Bytes),
}

/// A live connection after a successful CONNACK.
pub struct Link {
    out: mpsc::Sender<Out>,
    events: mpsc::Receiver<LinkEvent>,
    clock: Arc<Clock>,
    queued: u64,
    keep_alive: Duration,
    write_timeout: Duration,
    writer: Option<tokio::task::JoinHandle<()>>,
    reader: tokio::task::JoinHandle<()>,
}

/// Packets queued for the writer: the session's own window bounds what it queues.
const OUT_QUEUE: usize = 256;
const EVENTS_QUEUE: usize = 256;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl Link {
    /// Connect, send CONNECT and wait for the broker's answer. A CONNACK with a refusal code
    /// is returned as such: the caller names the reason.
    pub async fn connect(options: LinkOptions) -> Result<(Link, ConnAck), LinkError> {
        let addr = format!("{}:{}", options.host, options.port);
        let tcp = tokio::time::timeout(
            options.connect_timeout,
            tokio::net::TcpStream::connect((options.host.as_str(), options.port)),
        )
        .await
        .map_err(|_| LinkError::ConnectTimeout {
            addr: addr.clone(),
            secs: options.connect_timeout.as_secs(),
        })?
        .map_err(|source| LinkError::Connect {
            addr: addr.clone(),
            source,
        })?;
        // Batches are written whole; small packets (PUBACK, PINGREQ) must not wait for more.
        let _ = tcp.set_nodelay(true);
        let mut stream: Box<dyn Stream> = match &options.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(options.host.clone())
                    .map_err(|_| LinkError::ServerName(options.host.clone()))?;
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
                let tls =
                    tokio::time::timeout(options.connect_timeout, connector.connect(name, tcp))
                        .await
                        .map_err(|_| LinkError::ConnectTimeout {
                            addr: addr.clone(),
                            secs: options.connect_timeout.as_secs(),
                        })?
                        .map_err(|source| LinkError::Tls {
                            addr: addr.clone(),
                            source,
                        })?;
                Box::new(tls)
            }
        };
        let connect = codec::encode_connect(&options.connect).ok_or(LinkError::ConnectTooLarge)?;
        let max_incoming = options.connect.maximum_packet_size as usize;
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let handshake = async {
            stream.write_all(&connect).await?;
            stream.flush().await?;
            match read_packet(&mut stream, &mut buf, max_incoming).await? {
                Some(Incoming::ConnAck(ack)) => Ok(ack),
                Some(other) => Err(LinkError::NotConnAck(Box::new(other))),
                None => Err(LinkError::ClosedBeforeConnAck),
            }
        };
        let secs = options.connect_timeout.as_secs();
        let connack = tokio::time::timeout(options.connect_timeout, handshake)
            .await
            .map_err(|_| LinkError::NoConnAck(secs))??;
        // §3.2.2.3.14: the Server Keep Alive replaces ours; 0 switches keep-alive off.
        let keep_alive_s = connack
            .properties
            .u16(codec::prop::SERVER_KEEP_ALIVE)
            .unwrap_or(options.connect.keep_alive);
        let keep_alive = Duration::from_secs(u64::from(keep_alive_s));
        let clock = Arc::new(Clock {
            start: Instant::now(),
            written: AtomicU64::new(0),
            writing_since: AtomicU64::new(0),
            last_incoming: AtomicU64::new(0),
            ping_sent: AtomicU64::new(0),
            stalled: AtomicBool::new(false),
        });
        clock.last_incoming.store(clock.now(), Ordering::Relaxed);
        let (read_half, write_half) = tokio::io::split(stream);
        let (events_tx, events) = mpsc::channel(EVENTS_QUEUE);
        let (out, out_rx) = mpsc::channel(OUT_QUEUE);
        let reader = tokio::spawn(read_loop(
            read_half,
            buf,
            max_incoming,
            events_tx.clone(),
            Arc::clone(&clock),
        ));
        let writer = tokio::spawn(write_loop(
            write_half,
            out_rx,
            events_tx,
            Arc::clone(&clock),
            keep_alive,
            options.write_timeout,
        ));
        Ok((
            Link {
                out,
                events,
                clock,
                queued: 0,
                keep_alive,
                write_timeout: options.write_timeout,
                writer: Some(writer),
                reader,
            },
            connack,
        ))
    }

    /// Queue a packet; returns the byte offset its last byte will have in the stream (compare
    /// with [`Link::written`] to know it left). Err when the writer is gone.
    pub async fn send(&mut self, packet: Bytes) -> Result<u64, Closed> {
        let len = packet.len() as u64;
        self.out
            .send(Out::Packet(packet))
            .await
            .map_err(|_| Closed::Io("the connection's writer has ended".into()))?;
        self.queued = self.queued.saturating_add(len);
        Ok(self.queued)
    }

    /// Bytes the socket accepted so far.
    pub fn written(&self) -> u64 {
        self.clock.written.load(Ordering::Relaxed)
    }

    /// Whether the writer has room without waiting.
    pub fn has_room(&self) -> bool {
        self.out.capacity() > 8
    }

    pub async fn next_event(&mut self) -> Option<LinkEvent> {
        self.events.recv().await
    }

    /// The keep-alive in effect (the broker's Server Keep Alive when it sent one).
    pub fn keep_alive(&self) -> Duration {
        self.keep_alive
    }

    /// A reason to give up on this connection now, if there is one: a write that has accepted
    /// no byte for `write_timeout`, or a PINGREQ unanswered for half the keep-alive (so a dead
    /// path is noticed within 1.5 × keep-alive of the last packet).
    pub fn liveness(&self) -> Option<String> {
        let now = self.clock.now();
        let since = self.clock.writing_since.load(Ordering::Relaxed);
        let stall_ms = u64::try_from(self.write_timeout.as_millis()).unwrap_or(u64::MAX);
        if self.clock.stalled.load(Ordering::Relaxed)
            || (since != 0 && now.saturating_sub(since) > stall_ms)
        {
            return Some(Closed::WriteStalled(self.write_timeout).to_string());
        }
        let ping = self.clock.ping_sent.load(Ordering::Relaxed);
        let heard = self.clock.last_incoming.load(Ordering::Relaxed);
        let grace = u64::try_from(
            (self.keep_alive / 2)
                .max(Duration::from_secs(1))
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        if ping != 0 && heard < ping && now.saturating_sub(ping) > grace {
            return Some(format!(
                "no answer to PINGREQ within {} s (keep-alive {} s): the path to the broker is dead",
                grace / 1000,
                self.keep_alive.as_secs()
            ));
        }
        None
    }

    /// Send DISCONNECT with `reason` and close, waiting at most `wait` for it to leave.
    pub async fn disconnect(&mut self, reason: u8, wait: Duration) {
        let packet = codec::encode_disconnect(reason);
        if tokio::time::timeout(wait, self.out.send(Out::Close(packet)))
            .await
            .is_ok()
            && let Some(writer) = self.writer.take()
        {
            let _ = tokio::time::timeout(wait, writer).await;
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(writer) = &self.writer {
            writer.abort();
        }
    }
}

/// Read one whole packet; Ok(None) at a clean end of stream.
async fn read_packet<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Incoming>, LinkError> {
    loop {
        if let Some((first, len, header)) = codec::parse_header(buf)? {
            let size = header.saturating_add(len);
            if size > max {
                return Err(CodecError::TooLarge { size, max }.into());
            }
            if buf.len() >= size {
                let mut packet = buf.split_to(size);
                let body = packet.split_off(header).freeze();
                return Ok(Some(codec::decode(first, body)?));
            }
            buf.reserve(size - buf.len());
        }
        if stream.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(LinkError::Io(std::io::ErrorKind::UnexpectedEof.into()))
            };
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut stream: R,
    mut buf: BytesMut,
    max: usize,
    events: mpsc::Sender<LinkEvent>,
    clock: Arc<Clock>,
) {
    loop {
        let event = match read_packet(&mut stream, &mut buf, max).await {
            Ok(Some(packet)) => {
                clock.last_incoming.store(clock.now(), Ordering::Relaxed);
                LinkEvent::Packet(packet)
            }
            Ok(None) => LinkEvent::Closed(Closed::Eof),
            Err(LinkError::Codec(e)) => LinkEvent::Closed(Closed::Codec(e)),
            Err(e) => LinkEvent::Closed(Closed::Io(e.to_string())),
        };
        let last = matches!(event, LinkEvent::Closed(_));
        if events.send(event).await.is_err() || last {
            return;
        }
    }
}

/// Write `bytes`, giving up when one `write` call accepts nothing for `stall`: progress, not
/// the packet's total time, is what is measured, so a slow link with a large batch is fine.
async fn write_stalling<W: AsyncWrite + Unpin>(
    stream: &mut W,
    bytes: &[u8],
    stall: Duration,
    clock: &Clock,
    counted: bool,
) -> Result<(), Closed> {
    let mut offset = 0;
    clock.writing_since.store(clock.now(), Ordering::Relaxed);
    while offset < bytes.len() {
        let n = match tokio::time::timeout(stall, stream.write(&bytes[offset..])).await {
            Err(_) => {
                clock.stalled.store(true, Ordering::Relaxed);
                return Err(Closed::WriteStalled(stall));
            }
            Ok(Err(e)) => return Err(Closed::Io(e.to_string())),
            Ok(Ok(0)) => return Err(Closed::Eof),
            Ok(Ok(n)) => n,
        };
        offset += n;
        // Only the session's packets count: its offsets know nothing of our PINGREQs.
        if counted {
            clock.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        clock.writing_since.store(clock.now(), Ordering::Relaxed);
    }
    match tokio::time::timeout(stall, stream.flush()).await {
        Err(_) => {
            clock.stalled.store(true, Ordering::Relaxed);
            return Err(Closed::WriteStalled(stall));
        }
        Ok(Err(e)) => return Err(Closed::Io(e.to_string())),
        Ok(Ok(())) => {}
    }
    clock.writing_since.store(0, Ordering::Relaxed);
    Ok(())
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut stream: W,
    mut out: mpsc::Receiver<Out>,
    events: mpsc::Sender<LinkEvent>,
    clock: Arc<Clock>,
    keep_alive: Duration,
    stall: Duration,
) {
    let mut last_write = Instant::now();
    loop {
        // §3.1.2.10: a control packet at least every keep-alive; 0 means never.
        let ping_at = (!keep_alive.is_zero()).then(|| last_write + keep_alive);
        // Some(message or end of the queue), or None: time for a PINGREQ.
        let next = tokio::select! {
            next = out.recv() => Some(next),
            _ = async {
                match ping_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            } => {
                // An outstanding PINGREQ keeps its time: a second one must not push the
                // deadline of the first (with a 1 s keep-alive the next comes before it).
                let outstanding = clock.ping_sent.load(Ordering::Relaxed)
                    > clock.last_incoming.load(Ordering::Relaxed);
                if !outstanding {
                    clock.ping_sent.store(clock.now(), Ordering::Relaxed);
                }
                None
            }
        };
        let (bytes, close, counted) = match next {
            Some(Some(Out::Packet(b))) => (b, false, true),
            Some(Some(Out::Close(b))) => (b, true, false),
            Some(None) => return,
            None => (codec::encode_pingreq(), false, false),
        };
        if let Err(why) = write_stalling(&mut stream, &bytes, stall, &clock, counted).await {
            let _ = events.try_send(LinkEvent::Closed(why));
            return;
        }
        last_write = Instant::now();
        if close {
            let _ = tokio::time::timeout(stall, stream.shutdown()).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn options(port: u16, keep_alive: u16) -> LinkOptions {
        LinkOptions {
            host: "127.0.0.1".into(),
            port,
            tls: None,
            connect: Connect {
                client_id: "t".into(),
                keep_alive,
                username: None,
                password: None,
                will: None,
                receive_maximum: 8,
                maximum_packet_size: 1 << 20,
            },
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_millis(500),
        }
    }

    /// A peer that reads CONNECT, answers CONNACK with `props`, then reads (or not) forever.
    async fn peer(props: &'static [u8], keep_reading: bool) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await;
            let mut connack = vec![0x20, (3 + props.len()) as u8, 0, 0, props.len() as u8];
            connack.extend_from_slice(props);
            s.write_all(&connack).await.unwrap();
            loop {
                if keep_reading {
                    if s.read(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                } else {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            }
        });
        port
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_is_reported_as_a_write_stall() {
        let port = peer(&[], false).await;
        let (mut link, _) = Link::connect(options(port, 60)).await.unwrap();
        let big = Bytes::from(vec![0u8; 1 << 20]);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(why) = link.liveness() {
                assert!(why.contains("accepted no byte"), "{why}");
                return;
            }
            assert!(Instant::now() < deadline, "no stall noticed");
            if link.has_room() {
                let _ = link.send(big.clone()).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn an_unanswered_pingreq_after_the_server_keep_alive_ends_the_link_within_one_and_a_half()
    {
        // Server Keep Alive 1 s overrides the 60 s asked for; the peer reads but never answers.
        let port = peer(&[0x13, 0, 1], true).await;
        let started = Instant::now();
        let (link, connack) = Link::connect(options(port, 60)).await.unwrap();
        assert_eq!(
            connack.properties.u16(codec::prop::SERVER_KEEP_ALIVE),
            Some(1)
        );
        assert_eq!(link.keep_alive(), Duration::from_secs(1));
        loop {
            if let Some(why) = link.liveness() {
                assert!(why.contains("no answer to PINGREQ"), "{why}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_millis(3000),
            "{took:?}"
        );
        assert_eq!(
            link.written(),
            0,
            "a PINGREQ is not one of the session's bytes"
        );
    }
}
