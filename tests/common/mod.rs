#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! Shared harness for the integration tests: a store (temp data dir + config file), the real
//! `relais` binary run as a child process, and snapshot/HTTP helpers.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_relais");
pub const AGENT_ID: &str = "test-store/agent-1";
/// The card hash key every test store uses (32 bytes, the minimum).
pub const CARD_KEY: [u8; 32] = *b"relais-integration-test-card-key";

/// Extra settings for a store's config file.
#[derive(Default, Clone)]
pub struct Settings {
    /// Extra `key = value` lines for `[api]`.
    pub api: String,
    /// Extra `key = value` lines for `[replica]`.
    pub replica: String,
    /// `key = value` lines for `[sync]` (none: offline).
    pub sync: String,
}

/// A temp directory with a data dir, a card key and a config file pointing at them.
pub struct Store {
    pub tmp: tempfile::TempDir,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub key_file: PathBuf,
}

impl Store {
    pub fn new() -> Store {
        Store::with(Settings::default())
    }

    pub fn with(settings: Settings) -> Store {
        Store::for_agent(AGENT_ID, settings)
    }

    /// A store whose agent has this id (`STORE/AGENT`): several agents of a chain in one test.
    pub fn for_agent(agent_id: &str, settings: Settings) -> Store {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let key_file = tmp.path().join("card.key");
        std::fs::write(&key_file, CARD_KEY).expect("write card key");
        let config = tmp.path().join("relais.toml");
        let text = format!(
            "[agent]\nid = \"{agent_id}\"\ndata_dir = \"{}\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n{}\n\n\
             [replica]\n{}\n\n[customers]\ncard_hash_key_file = \"{}\"\n\n[sync]\n{}\n",
            data_dir.display(),
            settings.api,
            settings.replica,
            key_file.display(),
            settings.sync
        );
        std::fs::write(&config, text).expect("write config");
        Store {
            tmp,
            config,
            data_dir,
            key_file,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    pub fn replica_db(&self) -> PathBuf {
        self.data_dir.join("replica.db")
    }

    pub fn outbox_db(&self) -> PathBuf {
        self.data_dir.join("outbox.db")
    }

    /// Run `relais --config <this store's config> ARGS` to completion.
    pub fn relais(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&self.config).args(args);
        run(cmd)
    }

    /// Write `lines` as an NDJSON file named `name` and import it as `stream`.
    pub fn import(
        &self,
        stream: &str,
        name: &str,
        lines: &[Value],
        version: Option<u64>,
    ) -> Output {
        let path = self.path(name);
        write_ndjson(&path, lines);
        self.import_file(stream, &path, version)
    }

    pub fn import_file(&self, stream: &str, path: &Path, version: Option<u64>) -> Output {
        let path = path.to_str().expect("utf-8 path");
        let version = version.map(|v| v.to_string());
        let mut args = vec!["replica", "import", "--stream", stream, path];
        if let Some(v) = &version {
            args.extend(["--version", v.as_str()]);
        }
        self.relais(&args)
    }

    /// Import and insist that it worked.
    pub fn import_ok(&self, stream: &str, name: &str, lines: &[Value]) {
        let out = self.import(stream, name, lines, None);
        assert_success(&out, &format!("import of {stream}"));
    }

    /// `relais lookup barcode CODE --json`: (exit status, parsed answer).
    pub fn lookup_barcode(&self, code: &str) -> (i32, Value) {
        let out = self.relais(&["lookup", "barcode", code, "--json"]);
        (status_code(&out), parse_json_stdout(&out))
    }

    /// `relais lookup card ID --json`: (exit status, parsed answer).
    pub fn lookup_card(&self, id: &str) -> (i32, Value) {
        let out = self.relais(&["lookup", "card", id, "--json"]);
        (status_code(&out), parse_json_stdout(&out))
    }

    /// Put the API behind `token_lines` (the token file's text, written 0600), listening on
    /// `listen`, with `extra_api` lines added to `[api]`; returns the token file's path.
    pub fn protect_api(&self, token_lines: &str, listen: &str, extra_api: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let tokens = self.path("api-tokens");
        std::fs::write(&tokens, token_lines).unwrap();
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = std::fs::read_to_string(&self.config).unwrap().replace(
            "listen = \"127.0.0.1:0\"\n",
            &format!(
                "listen = \"{listen}\"\ntoken_file = \"{}\"\n{extra_api}",
                tokens.display()
            ),
        );
        std::fs::write(&self.config, config).unwrap();
        tokens
    }

    /// Put `n` store facts (one-line sales over 97 SKUs) into the outbox through the real
    /// writer, before the agent starts; returns their event ids.
    pub fn seed_outbox(&self, n: usize) -> std::collections::HashSet<String> {
        use relais::domain::{MovementKind, StoreFact};
        use relais::outbox::AppendRequest;
        std::fs::create_dir_all(&self.data_dir).unwrap();
        let settings = relais::outbox::writer::WriterSettings {
            group_commit_max: 1024,
            telemetry_quota_rows: 1_000_000,
            low_free_mb: 0,
            seq_floor: 0,
            checkpoint_pages: relais::outbox::writer::DEFAULT_CHECKPOINT_PAGES,
            prune: Default::default(),
        };
        let (handle, writer) =
            relais::outbox::OutboxWriter::start(&self.outbox_db(), settings).expect("outbox");
        let requests = (0..n).map(|i| {
            AppendRequest::fact(StoreFact::stock_movement(
                MovementKind::Sale,
                &format!("SKU-{}", i % 97),
                1,
            ))
        });
        let appended = handle.append_pipelined_blocking(requests).expect("seed");
        drop(handle);
        writer.join();
        appended.into_iter().map(|a| a.id.to_string()).collect()
    }

    /// Every envelope in the outbox, oldest first (`relais outbox tail`).
    pub fn outbox_events(&self) -> Vec<Value> {
        let out = self.relais(&["outbox", "tail", "-n", "1000000"]);
        assert_success(&out, "outbox tail");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad tail line {l:?}: {e}")))
            .collect()
    }

    pub fn outbox_stats(&self) -> Value {
        let out = self.relais(&["outbox", "stats", "--json"]);
        assert_success(&out, "outbox stats");
        parse_json_stdout(&out)
    }

    /// Start `relais run` on this store and wait until `/v1/health` answers.
    pub fn start(&self) -> Agent {
        Agent::start(&self.config)
    }
}

pub fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null());
    cmd.output().expect("run relais")
}

pub fn status_code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("relais killed by a signal: {}", describe(out)))
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        stdout(out),
        stderr(out)
    )
}

pub fn assert_success(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed: {}", describe(out));
}

pub fn parse_json_stdout(out: &Output) -> Value {
    let text = stdout(out);
    let line = text.lines().rev().find(|l| l.trim_start().starts_with('{'));
    match line {
        Some(l) => {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe(out)))
        }
        None => Value::Null,
    }
}

pub fn write_ndjson(path: &Path, lines: &[Value]) {
    let mut text = String::new();
    for l in lines {
        text.push_str(&l.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).expect("write ndjson");
}

/// GS1 mod-10 check digit of `body` (digits without the check digit).
pub fn check_digit(body: &str) -> u8 {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let v = u32::from(d - b'0');
            if i % 2 == 0 { v * 3 } else { v }
        })
        .sum();
    ((10 - (sum % 10)) % 10) as u8
}

/// A valid GTIN-14 whose 13-digit body is `body`.
pub fn gtin14(body: u64) -> String {
    let body = format!("{body:013}");
    format!("{body}{}", check_digit(&body))
}

pub fn product(gtin: &str, sku: &str, name: &str) -> Value {
    serde_json::json!({"gtin": gtin, "sku": sku, "name": name})
}

pub fn stock(sku: &str, on_hand: i64) -> Value {
    serde_json::json!({"sku": sku, "on_hand": on_hand})
}

pub fn base_price(sku: &str, minor: i64, from: &str) -> Value {
    serde_json::json!({"sku": sku, "price_minor": minor, "currency": "EUR", "valid_from": from})
}

pub fn reservation(order: &str, sku: &str, qty: i64) -> Value {
    serde_json::json!({"order_id": order, "line": 1, "sku": sku, "qty": qty, "status": "open"})
}

/// A running `relais run`; killed (SIGKILL) and reaped when dropped.
pub struct Agent {
    child: Option<Child>,
    pub addr: String,
    pub base: String,
    log: Arc<Mutex<Vec<String>>>,
    pub http: reqwest::blocking::Client,
    /// Sent as `Authorization: Bearer` by the helpers below when set.
    pub token: Option<String>,
}

pub fn http_client() -> reqwest::blocking::Client {
    // reqwest is built with rustls but no default crypto provider: name it once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client")
}

const START_TIMEOUT: Duration = Duration::from_secs(30);

impl Agent {
    pub fn start(config: &Path) -> Agent {
        match Agent::try_start(config) {
            Ok(agent) => agent,
            Err(why) => panic!("{why}"),
        }
    }

    /// Start `relais run`; `Err` with its stderr when it exits before listening.
    pub fn try_start(config: &Path) -> Result<Agent, String> {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn relais run");
        let pipe = child.stderr.take().expect("stderr pipe");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.strip_prefix("relais: listening on http://") {
                        let addr = rest
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string();
                        let _ = tx.send(addr);
                    }
                    if let Ok(mut l) = log.lock() {
                        l.push(line);
                    }
                }
            });
        }
        let mut agent = Agent {
            child: Some(child),
            addr: String::new(),
            base: String::new(),
            log,
            http: http_client(),
            token: None,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(addr) => {
                    agent.base = format!("http://{addr}");
                    agent.addr = addr;
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = agent
                        .wait_exit(Duration::from_secs(5))
                        .map_or_else(|| "still running".to_string(), |s| s.to_string());
                    return Err(format!(
                        "relais run exited ({status}) before listening:\n{}",
                        agent.log_text()
                    ));
                }
            }
            if let Some(status) = agent.child_mut().try_wait().expect("try_wait") {
                agent.child = None;
                // The reader thread ends at EOF of stderr: wait for it to collect the last lines.
                while let Ok(addr) = rx.recv_timeout(Duration::from_secs(5)) {
                    let _ = addr;
                }
                return Err(format!(
                    "relais run exited ({status}) before listening:\n{}",
                    agent.log_text()
                ));
            }
            assert!(
                Instant::now() < deadline,
                "relais run did not listen within {START_TIMEOUT:?}:\n{}",
                agent.log_text()
            );
        }
        agent.wait_healthy();
        Ok(agent)
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("agent already stopped")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent already stopped").id()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// The log as it keeps growing, readable after `terminate` consumed the agent.
    pub fn log_lines(&self) -> Arc<Mutex<Vec<String>>> {
        Arc::clone(&self.log)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The helpers below send `token` from now on.
    pub fn with_token(mut self, token: &str) -> Agent {
        self.token = Some(token.to_owned());
        self
    }

    /// A request builder carrying the token, if any.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::blocking::RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Poll the readiness probe (public, so it works whatever the token) until it answers 200.
    pub fn wait_healthy(&self) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let deadline = Instant::now() + START_TIMEOUT;
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        loop {
            if let Ok(r) = client.get(self.url("/v1/health/ready")).send()
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/v1/health/ready did not answer within {START_TIMEOUT:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn health(&self) -> Value {
        self.get_json("/v1/health").1
    }

    pub fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self
            .request(reqwest::Method::GET, path)
            .send()
            .expect("GET");
        let status = r.status().as_u16();
        let body = r.text().expect("body");
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    /// POST raw bytes as JSON; (status, parsed body or the raw text as a JSON string).
    pub fn post_raw(&self, path: &str, body: impl Into<Vec<u8>>) -> (u16, Value) {
        let r = self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body.into())
            .send()
            .expect("POST");
        let status = r.status().as_u16();
        let body = r.text().expect("body");
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    pub fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, body.to_string())
    }

    pub fn post_movement(&self, body: &Value) -> (u16, Value) {
        self.post_raw("/v1/movements", body.to_string())
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Send SIGTERM and wait (bounded) for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        match self.wait_exit(Duration::from_secs(20)) {
            Some(status) => status,
            None => panic!(
                "relais did not exit within 20 s of SIGTERM:\n{}",
                self.log_text()
            ),
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// A child process killed (SIGKILL) and reaped when dropped, for `relais replica import` etc.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip finish")
}
