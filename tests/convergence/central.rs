//! Central's processes for the convergence simulation: a real Mosquitto, two shared ingest
//! workers, the ledger, their database (a SQLite file, or a real PostgreSQL), an HTTPS server
//! for the ledger's snapshots, and one TCP proxy per store (its WAN link, which the simulation
//! cuts).

use crate::broker::{Broker, BrokerOptions, Proxy};
use crate::https::HttpsServer;
use crate::postgres::Postgres;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const RELAISCTL: &str = env!("CARGO_BIN_EXE_relaisctl");

/// The database the ingest and the ledger share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

pub struct Central {
    pub tmp: tempfile::TempDir,
    pub broker: Broker,
    pub https: HttpsServer,
    sink: String,
    postgres: Option<Postgres>,
    pub snapshots: PathBuf,
    ingest: Vec<Option<Child>>,
    ledger: Option<Child>,
    web_files: u64,
}

fn spawn(mut cmd: Command, log: &Path) -> Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    cmd.stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap()
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Central {
    pub fn start(engine: Engine) -> Central {
        let tmp = tempfile::tempdir().unwrap();
        let snapshots = tmp.path().join("snapshots");
        std::fs::create_dir_all(&snapshots).unwrap();
        let https = HttpsServer::start(&snapshots);
        let postgres = (engine == Engine::Postgres).then(Postgres::start);
        let sink = match &postgres {
            Some(pg) => pg.url(),
            None => tmp.path().join("central.db").to_str().unwrap().to_owned(),
        };
        Central {
            broker: Broker::start(BrokerOptions::default()),
            sink,
            postgres,
            snapshots,
            https,
            tmp,
            ingest: vec![None, None],
            ledger: None,
            web_files: 0,
        }
    }

    pub fn relaisctl(&self, args: &[&str]) -> Output {
        Command::new(RELAISCTL).args(args).output().unwrap()
    }

    fn sink(&self) -> &str {
        &self.sink
    }

    /// PostgreSQL SIGKILLed, down for `down`, then started again on its data (crash
    /// recovery); `false` on SQLite (a file does not go down).
    pub fn crash_database(&mut self, down: std::time::Duration) -> bool {
        let Some(pg) = self.postgres.as_mut() else {
            return false;
        };
        pg.kill();
        std::thread::sleep(down);
        pg.restart();
        true
    }

    pub fn seed(&self, stock: &[(String, PathBuf)], customers: &Path) {
        let mut args = vec![
            "ledger".to_owned(),
            "seed".into(),
            "--sink".into(),
            self.sink().into(),
        ];
        for (store, path) in stock {
            args.push("--stock".into());
            args.push(format!("{store}={}", path.display()));
        }
        args.push("--customers".into());
        args.push(customers.display().to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.relaisctl(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn start_ingest(&mut self, worker: usize) {
        let mut cmd = Command::new(RELAISCTL);
        cmd.args([
            "ingest",
            "--broker",
            &self.broker.url(),
            "--sink",
            self.sink(),
        ])
        .args([
            "--share",
            "central",
            "--client-id",
            &format!("ingest-{worker}"),
        ]);
        let log = self.tmp.path().join(format!("ingest-{worker}.log"));
        self.ingest[worker] = Some(spawn(cmd, &log));
    }

    /// SIGKILL: whatever it had in flight is never acknowledged, so the agents resend it.
    pub fn kill_ingest(&mut self, worker: usize) {
        kill(&mut self.ingest[worker]);
    }

    pub fn start_ledger(&mut self) {
        let mut cmd = Command::new(RELAISCTL);
        cmd.args([
            "ledger",
            "run",
            "--broker",
            &self.broker.url(),
            "--sink",
            self.sink(),
        ])
        .args(["--snapshot-dir", self.snapshots.to_str().unwrap()])
        .args(["--snapshot-base-url", &self.https.url("")])
        .args(["--interval", "200ms", "--heartbeat-every", "10s"])
        .env("RELAISCTL_LOG", "info");
        let log = self.tmp.path().join("ledger.log");
        self.ledger = Some(spawn(cmd, &log));
    }

    pub fn kill_ledger(&mut self) {
        kill(&mut self.ledger);
    }

    /// Central's own channel: these operations, applied once each; returns the op_ids the
    /// ledger refused.
    pub fn web(&mut self, ops: &[Value]) -> Vec<String> {
        if ops.is_empty() {
            return Vec::new();
        }
        self.web_files += 1;
        let path = self
            .tmp
            .path()
            .join(format!("web-{}.ndjson", self.web_files));
        crate::common::write_ndjson(&path, ops);
        // Fed twice: the second time applies nothing (each op_id once).
        let mut reports = Vec::new();
        for _ in 0..2 {
            let out = self.relaisctl(&[
                "ledger",
                "web",
                "--json",
                "--sink",
                self.sink(),
                path.to_str().unwrap(),
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            reports.push(serde_json::from_slice::<Value>(&out.stdout).unwrap());
        }
        let refused: Vec<String> = reports[0]["refused"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["op_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            reports[1]["applied"], 0,
            "a file fed again applies nothing: {}",
            reports[1]
        );
        assert_eq!(
            reports[1]["already_applied"].as_u64().unwrap() as usize,
            ops.len() - refused.len(),
            "{}",
            reports[1]
        );
        refused
    }

    /// The ledger's figures (after applying whatever the ingest holds).
    pub fn figures(&self) -> Value {
        let out = self.relaisctl(&["ledger", "show", "--json", "--sink", self.sink()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn logs(&self) -> String {
        let mut text = String::new();
        for name in ["ledger.log", "ingest-0.log", "ingest-1.log"] {
            let log = std::fs::read_to_string(self.tmp.path().join(name)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            text.push_str(&format!("--- {name} (last lines)\n"));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    pub fn proxy(&self) -> Proxy {
        Proxy::start(self.broker.port)
    }
}

impl Drop for Central {
    fn drop(&mut self) {
        for worker in &mut self.ingest {
            kill(worker);
        }
        kill(&mut self.ledger);
    }
}
