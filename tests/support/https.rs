//! A real HTTPS file server for tests and benchmarks: TLS 1.2/1.3 with a CA and server
//! certificate generated for the run, a hand-written HTTP/1.1 GET handler (one request per
//! connection) serving the files of one directory with `Content-Length` and `Range: bytes=N-`,
//! and fault knobs the test flips while it runs (cut the next response after N body bytes,
//! omit `Content-Length`). Every request is logged with its `Range` header and the body bytes
//! it got, so a test can prove what the client asked for.
//!
//! Include it with `#[path = "support/https.rs"] mod https;`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NO_CUT: u64 = u64::MAX;
const MAX_HEAD: usize = 16 * 1024;

/// One request the server answered (or cut).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    pub path: String,
    pub range: Option<String>,
    pub status: u16,
    pub body_bytes: u64,
}

/// Knobs and observations shared between the test and the server thread.
pub struct Faults {
    /// Cut the connection after this many body bytes of the next file response.
    cut_after: AtomicU64,
    /// Send file bodies without `Content-Length`, ending them by closing the connection.
    pub omit_content_length: AtomicBool,
    /// Files whose name contains the string: send this many body bytes, then hold the
    /// connection open and silent (a server that hangs mid-download).
    stall: Mutex<Option<(String, u64)>>,
    log: Mutex<Vec<Logged>>,
}

impl Faults {
    fn new() -> Faults {
        Faults {
            cut_after: AtomicU64::new(NO_CUT),
            omit_content_length: AtomicBool::new(false),
            stall: Mutex::new(None),
            log: Mutex::new(Vec::new()),
        }
    }
}

pub struct HttpsServer {
    pub addr: SocketAddr,
    /// PEM of the CA that signed the server certificate: what a client pins.
    pub ca_file: PathBuf,
    pub faults: Arc<Faults>,
    _certs: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpsServer {
    /// Serve the files of `root` on 127.0.0.1 (a free port), with a fresh CA.
    pub fn start(root: &Path) -> HttpsServer {
        let certs = tempfile::tempdir().expect("temp dir for the test CA");
        let (server_config, ca_pem) = tls_config();
        let ca_file = certs.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).expect("write CA PEM");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("listener address");
        let faults = Arc::new(Faults::new());
        let (shutdown_tx, mut shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let root = Arc::new(root.to_path_buf());
        let shared = Arc::clone(&faults);
        let thread = std::thread::Builder::new()
            .name("test-https".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("test server runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    loop {
                        tokio::select! {
                            _ = &mut shutdown_rx => break,
                            accepted = listener.accept() => {
                                let Ok((tcp, _)) = accepted else { continue };
                                let acceptor = acceptor.clone();
                                let root = Arc::clone(&root);
                                let faults = Arc::clone(&shared);
                                tokio::spawn(async move {
                                    // A failed handshake is what some tests want; the client
                                    // reports it.
                                    if let Ok(tls) = acceptor.accept(tcp).await {
                                        let _ = serve(tls, &root, &faults).await;
                                    }
                                });
                            }
                        }
                    }
                });
            })
            .expect("spawn test server thread");
        HttpsServer {
            addr,
            ca_file,
            faults,
            _certs: certs,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// `https://127.0.0.1:PORT/<path>` (the certificate holds the IP as a SAN).
    pub fn url(&self, path: &str) -> String {
        format!("https://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Cut the connection after `n` body bytes of the next file response (only that one).
    pub fn cut_next_response_after(&self, n: u64) {
        self.faults.cut_after.store(n, Ordering::SeqCst);
    }

    /// Every later response for a file whose name contains `name_part` sends `n` body bytes,
    /// then neither sends more nor closes (logged when it stops sending).
    pub fn stall_responses_after(&self, name_part: &str, n: u64) {
        *self.faults.stall.lock().expect("stall lock") = Some((name_part.to_string(), n));
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.faults.log.lock().expect("log lock").clone()
    }

    pub fn clear_log(&self) {
        self.faults.log.lock().expect("log lock").clear();
    }

    /// Body bytes sent for requests of `path`.
    pub fn body_bytes_served(&self, path: &str) -> u64 {
        self.requests()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.body_bytes)
            .sum()
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A CA and a server certificate for `localhost` and `127.0.0.1`, signed by it.
fn tls_config() -> (rustls::ServerConfig, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "relais test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "relais test central");
    let key = KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &issuer).expect("sign server cert");

    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(
        rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()),
    );
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key_der)
    .expect("server certificate");
    (config, ca_cert.pem())
}

type Tls = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// Answer one request on `tls`, then close the connection.
async fn serve(mut tls: Tls, root: &Path, faults: &Faults) -> std::io::Result<()> {
    let (head, early_body) = read_head(&mut tls).await?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let range = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("range")
            .then(|| value.trim().to_string())
    });
    let name = target.trim_start_matches('/').to_string();
    let log = |status: u16, body_bytes: u64| {
        faults.log.lock().expect("log lock").push(Logged {
            path: name.clone(),
            range: range.clone(),
            status,
            body_bytes,
        });
    };

    // An upload (diagnostics bundles): stored as `root/<name>`.
    if method == "PUT" && !name.is_empty() && !name.contains('/') && !name.contains("..") {
        let length = head
            .split("\r\n")
            .find_map(|line| {
                let (k, v) = line.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())
                    .flatten()
            })
            .unwrap_or(0);
        let mut body = early_body;
        while body.len() < length {
            let mut buf = vec![0u8; 64 * 1024];
            let n = tls.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
        }
        std::fs::write(root.join(&name), &body)?;
        tls.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?;
        log(201, body.len() as u64);
        return tls.shutdown().await;
    }
    // Subdirectories are served too (the ledger's snapshots live under STORE/AGENT/), never
    // an empty or `..` segment.
    let unsafe_path = name.split('/').any(|seg| seg.is_empty() || seg == "..");
    let file = if method != "GET" || name.is_empty() || unsafe_path {
        None
    } else {
        std::fs::File::open(root.join(&name)).ok()
    };
    let Some(mut file) = file else {
        tls.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?;
        log(404, 0);
        return tls.shutdown().await;
    };
    let len = file.metadata()?.len();
    let start = match range.as_deref() {
        None => None,
        Some(r) => r
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<u64>().ok()),
    };
    if let Some(start) = start
        && start >= len
    {
        let head = format!(
            "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        tls.write_all(head.as_bytes()).await?;
        log(416, 0);
        return tls.shutdown().await;
    }
    let from = start.unwrap_or(0);
    let (status, mut head) = match start {
        Some(s) => (
            206,
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{len}\r\n",
                len - 1
            ),
        ),
        None => (200, "HTTP/1.1 200 OK\r\n".to_string()),
    };
    if !faults.omit_content_length.load(Ordering::SeqCst) {
        head.push_str(&format!("Content-Length: {}\r\n", len - from));
    }
    head.push_str("Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n");
    tls.write_all(head.as_bytes()).await?;

    let cut = faults.cut_after.swap(NO_CUT, Ordering::SeqCst);
    let stall = faults
        .stall
        .lock()
        .expect("stall lock")
        .as_ref()
        .filter(|(part, _)| name.contains(part.as_str()))
        .map(|(_, n)| *n);
    let mut budget = (len - from).min(cut).min(stall.unwrap_or(NO_CUT));
    // Plain std reads: the files are small or in the page cache, and this is a test server.
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(from))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    while budget > 0 {
        let want = buf.len().min(usize::try_from(budget).unwrap_or(usize::MAX));
        let n = std::io::Read::read(&mut file, &mut buf[..want])?;
        if n == 0 {
            break;
        }
        tls.write_all(&buf[..n]).await?;
        sent += n as u64;
        budget -= n as u64;
    }
    tls.flush().await?;
    log(status, sent);
    if stall.is_some() && sent < len - from {
        // Hung, not closed: only the client's own timeout (or its shutdown) ends this.
        std::future::pending::<()>().await;
    }
    if cut != NO_CUT && sent < len - from {
        // No close_notify: the client sees the connection die mid-body, like a dropped uplink.
        return tls.get_mut().0.shutdown().await;
    }
    tls.shutdown().await
}

/// The request head, and the body bytes read past it.
async fn read_head(tls: &mut Tls) -> std::io::Result<(String, Vec<u8>)> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = head.split_off(end + 4);
            head.truncate(end);
            return Ok((String::from_utf8_lossy(&head).into_owned(), rest));
        }
        if head.len() > MAX_HEAD {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}
