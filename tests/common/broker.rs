//! A real Mosquitto per test: random port, generated config (ACL, optional persistence), killed
//! and restarted for fault tests; and a TCP proxy that can blackhole traffic to simulate a cut
//! WAN without closing sockets.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// Whether the tests can run here (scripts/test.sh installs mosquitto).
pub fn available() -> bool {
    std::path::Path::new(MOSQUITTO).exists()
}

#[derive(Clone, Default)]
pub struct BrokerOptions {
    /// Keep messages and sessions on disk across restarts (saved on every change).
    pub persistence: bool,
}

pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    conf: PathBuf,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Broker {
    pub fn start(options: BrokerOptions) -> Broker {
        Broker::start_with(options, "")
    }

    /// A broker with `extra` lines appended to its configuration (e.g. `max_packet_size`).
    pub fn start_with(options: BrokerOptions, extra: &str) -> Broker {
        // The contract's ACL: every agent confined to its own subtree by username; the
        // central tools' user sees everything.
        Broker::start_with_acl(
            options,
            extra,
            "pattern readwrite relais/v1/%u/#\n\nuser central\ntopic readwrite relais/v1/#\n",
        )
    }

    /// A broker whose ACL file is `acl` (Mosquitto's `acl_file` syntax).
    pub fn start_with_acl(options: BrokerOptions, extra: &str, acl_text: &str) -> Broker {
        let dir = tempfile::tempdir().expect("broker dir");
        let port = free_port();
        let acl = dir.path().join("acl");
        std::fs::write(&acl, acl_text).expect("acl");
        let persistence = if options.persistence {
            format!(
                "persistence true\npersistence_location {}/\nautosave_interval 1\nautosave_on_changes true\n",
                dir.path().display()
            )
        } else {
            "persistence false\n".to_string()
        };
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nacl_file {}\n{persistence}\
                 max_queued_messages 10000000\nmax_inflight_messages 0\n\
                 log_dest stderr\nlog_type error\nlog_type warning\n{extra}\n",
                acl.display()
            ),
        )
        .expect("conf");
        let mut broker = Broker {
            child: None,
            port,
            dir,
            conf,
        };
        broker.launch();
        broker
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .expect("log");
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no goodbye to clients, nothing saved beyond what is on disk.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP proxy in front of the broker. `blackhole(true)` silently drops every byte in both
/// directions while keeping the sockets open, like a WAN link that died without a RST.
pub struct Proxy {
    pub port: u16,
    blackhole: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let port = listener.local_addr().expect("addr").port();
        let blackhole = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (bh, st) = (Arc::clone(&blackhole), Arc::clone(&stop));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    let bh = Arc::clone(&bh);
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if bh.load(Ordering::Relaxed) {
                                continue;
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy {
            port,
            blackhole,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn blackhole(&self, on: bool) {
        self.blackhole.store(on, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
