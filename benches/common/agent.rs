//! The real release `relais run` as a child process, for the benches that measure it over HTTP
//! (`http_lookup`, `sse_fanout`): start, wait for the listening address and `/v1/health`, CPU
//! seconds from /proc, SIGTERM. Included with `#[path = "common/agent.rs"] mod agent;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_relais");

pub struct Agent {
    child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
    drain: Option<JoinHandle<Vec<String>>>,
}

impl Agent {
    /// Start `relais --config CONFIG run`; `Err(exit status, stderr)` when it exits before
    /// printing its listening address (e.g. a configuration error, exit 78).
    pub fn try_start(config: &Path) -> Result<Agent, (Option<i32>, String)> {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel::<String>();
        let drain = std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut tail = Vec::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("relais: listening on http://") {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                tail.push(line);
                if tail.len() > 50 {
                    tail.remove(0);
                }
            }
            tail
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(addr) => Ok(Agent {
                child,
                addr,
                drain: Some(drain),
            }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok().and_then(|s| s.code());
                let tail = drain.join().unwrap_or_default();
                Err((status, tail.join("\n")))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Wait until `GET /v1/health` answers 200.
    pub fn wait_healthy(&self, client: &reqwest::blocking::Client, token: Option<&str>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut request = client.get(self.url("/v1/health"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            match request.send() {
                Ok(r) if r.status().is_success() => return,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                other => panic!("GET /v1/health never answered 200: {other:?}"),
            }
        }
    }

    /// User + system CPU seconds the agent has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }

    /// SIGTERM, wait up to 30 s; returns the exit status (None: had to be killed).
    pub fn terminate(mut self) -> Option<ExitStatus> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut exit = None;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().expect("wait for relais") {
                exit = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if exit.is_none() {
            eprintln!("relais did not exit within 30 s of SIGTERM; killing it");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let tail = self
            .drain
            .take()
            .and_then(|d| d.join().ok())
            .unwrap_or_default();
        if !exit.is_some_and(|s| s.success()) {
            eprintln!(
                "relais exit status {exit:?}; stderr tail:\n{}",
                tail.join("\n")
            );
        }
        exit
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Only reached when `terminate` was not called (a panic): never leave the agent behind.
        if self.drain.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// User + system CPU seconds of a running process, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // utime and stime are fields 14 and 15 of the line; 12 and 13 after the name.
    // USER_HZ is 100 on every Linux the agent targets (x86_64, arm64).
    (ticks(11) + ticks(12)) / 100.0
}

/// A token file as `[api] token_file` wants it: `NAME TOKEN` lines, mode 0600.
pub fn write_token_file(path: &Path, token: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("bench-till {token}\n")).expect("write the token file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .expect("chmod 600 the token file");
}

/// Whether `relais` refused the config because it does not know the API auth keys (a build
/// older than `[api] token_file`): then the benches measure without authentication.
pub fn unknown_auth_keys(stderr: &str) -> bool {
    stderr.lines().any(|l| {
        l.contains("unknown key")
            && (l.contains("token_file") || l.contains("rate_limit_per_client"))
    })
}
