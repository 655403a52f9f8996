#![cfg(feature = "central")] // drives central's side: the default `central` feature
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! The real agent against MQTT 5.0 brokers other than a default Mosquitto: ejabberd's
//! mod_mqtt (Debian package), rumqttd (crates.io, installed by scripts/test.sh), and Mosquitto
//! configured like a managed broker (an announced packet limit; a silent message size limit).
//! The results are the compatibility table in docs/contract.md §10: each test asserts the row.
//!
//! Every run: facts seeded before the agent starts reach `relaisctl ingest` (central's
//! reference consumer) through the broker, central's end-to-end `ack` comes back through it
//! and empties the outbox, the retained birth shows the agent online in `relaisctl fleet
//! status`, and a clean shutdown leaves it offline.

#[path = "common/broker.rs"]
mod broker;
mod common;

use common::{KillOnDrop, Settings, Store};
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RELAISCTL: &str = env!("CARGO_BIN_EXE_relaisctl");
const EJABBERDCTL: &str = "/usr/sbin/ejabberdctl";

/// A broker under test and how the agent and central must talk to it.
struct RealBroker {
    name: &'static str,
    port: u16,
    /// Extra `[sync]` lines for the agent.
    agent_sync: String,
    /// Extra arguments for relaisctl (credentials).
    central_args: Vec<String>,
    stop: Option<Box<dyn FnOnce()>>,
    _dir: tempfile::TempDir,
}

impl RealBroker {
    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for RealBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The tests' Mosquitto (tests/common/broker.rs: the contract's ACL) with extra lines in its
/// configuration.
fn mosquitto(name: &'static str, extra: &str) -> Option<RealBroker> {
    if !broker::available() {
        eprintln!("mosquitto is not installed (scripts/test.sh installs it); skipping");
        return None;
    }
    let mosquitto = broker::Broker::start_with(broker::BrokerOptions::default(), extra);
    Some(RealBroker {
        name,
        port: mosquitto.port,
        agent_sync: String::new(),
        central_args: Vec::new(),
        stop: Some(Box::new(move || drop(mosquitto))),
        _dir: tempfile::tempdir().unwrap(),
    })
}

/// rumqttd: `RELAIS_RUMQTTD`, or where scripts/test.sh installs it, or the PATH.
fn rumqttd_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("RELAIS_RUMQTTD") {
        return Some(PathBuf::from(path));
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let installed = Path::new(&home).join(".cache/relais-tools/rumqttd-0.20.0/bin/rumqttd");
    if installed.exists() {
        return Some(installed);
    }
    let which = Command::new("which").arg("rumqttd").output().ok()?;
    which
        .status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&which.stdout).trim()))
}

fn rumqttd() -> Option<RealBroker> {
    let Some(binary) = rumqttd_binary() else {
        eprintln!("rumqttd is not installed (scripts/test.sh installs it); skipping");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = broker::free_port();
    let conf = dir.path().join("rumqttd.toml");
    std::fs::write(
        &conf,
        format!(
            "id = 0\n[router]\nid = 0\nmax_connections = 100\nmax_outgoing_packet_count = 200\n\
             max_segment_size = 104857600\nmax_segment_count = 10\n\n\
             [v5.1]\nname = \"v5-1\"\nlisten = \"127.0.0.1:{port}\"\nnext_connection_delay_ms = 1\n\
             [v5.1.connections]\nconnection_timeout_ms = 60000\nmax_payload_size = 1048576\n\
             max_inflight_count = 100\n"
        ),
    )
    .unwrap();
    let child = Command::new(binary)
        .args(["-q", "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    wait_port(port, "rumqttd");
    Some(RealBroker {
        name: "rumqttd",
        port,
        // rumqttd refuses a client id with '/' (it closes the connection without CONNACK).
        agent_sync: "client_id = \"test-store.agent-1\"\n".into(),
        central_args: Vec::new(),
        stop: Some(Box::new(move || drop(child))),
        _dir: dir,
    })
}

fn ejabberd() -> Option<RealBroker> {
    if !Path::new(EJABBERDCTL).exists() {
        eprintln!("ejabberd is not installed (scripts/test.sh installs it); skipping");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = broker::free_port();
    let base = dir.path();
    let node = format!("relais{port}@localhost");
    for sub in ["logs", "spool"] {
        std::fs::create_dir_all(base.join(sub)).unwrap();
    }
    // ejabberdctl runs the node as the `ejabberd` user: it must be able to write here.
    let _ = Command::new("chmod")
        .args(["-R", "a+rwx"])
        .arg(base)
        .status();
    std::fs::write(
        base.join("ejabberd.yml"),
        format!(
            "hosts:\n  - localhost\nloglevel: warning\nauth_method: internal\n\
             listen:\n  -\n    port: {port}\n    ip: \"127.0.0.1\"\n    module: mod_mqtt\n\
             acl:\n  everyone:\n    user_regexp: \"\"\naccess_rules:\n  mqtt_all:\n    allow: all\n\
             modules:\n  mod_mqtt:\n    access_subscribe:\n      \"relais/#\": mqtt_all\n\
             \x20   access_publish:\n      \"relais/#\": mqtt_all\n"
        ),
    )
    .unwrap();
    std::fs::write(
        base.join("ejabberdctl.cfg"),
        format!(
            "EJABBERD_CONFIG_PATH={0}/ejabberd.yml\nEJABBERD_PID_PATH={0}/ejabberd.pid\n",
            base.display()
        ),
    )
    .unwrap();
    let ctl = |args: &[&str]| {
        Command::new(EJABBERDCTL)
            .arg("--ctl-config")
            .arg(base.join("ejabberdctl.cfg"))
            .arg("--config")
            .arg(base.join("ejabberd.yml"))
            .arg("--logs")
            .arg(base.join("logs"))
            .arg("--spool")
            .arg(base.join("spool"))
            .args(["--node", &node])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    assert!(ctl(&["start"]), "ejabberd did not start");
    assert!(ctl(&["started"]), "ejabberd did not come up");
    // MQTT clients log in as ejabberd accounts: the agent (its id is not a valid account
    // name, so a username of its own) and central.
    for (user, password) in [("agent1", "agent-secret"), ("central", "central-secret")] {
        assert!(ctl(&["register", user, "localhost", password]));
        std::fs::write(base.join(user), password).unwrap();
    }
    wait_port(port, "ejabberd");
    let agent_sync = format!(
        "username = \"agent1\"\npassword_file = \"{}\"\n",
        base.join("agent1").display()
    );
    let central_args = vec![
        "--password-file".to_string(),
        base.join("central").to_string_lossy().into_owned(),
    ];
    let stop_args: Vec<std::ffi::OsString> = vec![
        "--ctl-config".into(),
        base.join("ejabberdctl.cfg").into(),
        "--node".into(),
        node.clone().into(),
        "stop".into(),
    ];
    Some(RealBroker {
        name: "ejabberd",
        port,
        agent_sync,
        central_args,
        stop: Some(Box::new(move || {
            let _ = Command::new(EJABBERDCTL)
                .args(&stop_args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        })),
        _dir: dir,
    })
}

fn sink_ids(sink: &Path) -> HashSet<String> {
    let Ok(conn) = rusqlite::Connection::open(sink) else {
        return HashSet::new();
    };
    let Ok(mut stmt) = conn.prepare("SELECT id FROM events") else {
        return HashSet::new();
    };
    stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .filter_map(Result::ok)
        .map(|id| uuid::Uuid::from_slice(&id).unwrap().to_string())
        .collect()
}

fn fleet_online(broker: &RealBroker) -> Option<bool> {
    let out = Command::new(RELAISCTL)
        .args(["fleet", "status", "--json", "--settle", "500ms", "--broker"])
        .arg(broker.url())
        .args(&broker.central_args)
        .output()
        .unwrap();
    let fleet: Value = serde_json::from_slice(&out.stdout).ok()?;
    fleet
        .as_array()?
        .iter()
        .find(|e| e["agent"] == common::AGENT_ID)
        .and_then(|e| e["online"].as_bool())
}

/// What one broker did with the agent: the row of the compatibility table.
struct Outcome {
    limits: Value,
    log: String,
    retained_online: bool,
    retained_offline: bool,
}

/// Seeded facts through the broker to central and its acks back; then a clean shutdown.
fn round_trip(broker: &RealBroker, n: usize, sync_extra: &str) -> Outcome {
    let tmp = tempfile::tempdir().unwrap();
    let sink = tmp.path().join("sink.db");
    let ingest = Command::new(RELAISCTL)
        .args(["ingest", "--json", "--broker"])
        .arg(broker.url())
        .args(&broker.central_args)
        .arg("--sink")
        .arg(&sink)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ingest = KillOnDrop(ingest);
    std::thread::sleep(Duration::from_millis(500));
    let store = Store::with(Settings {
        sync: format!(
            "broker = \"{}\"\nack = \"central\"\nack_timeout = \"10s\"\nreconnect_max = \"2s\"\n{}{}",
            broker.url(),
            broker.agent_sync,
            sync_extra
        ),
        ..Settings::default()
    });
    let ids = store.seed_outbox(n);
    let agent = store.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = sink_ids(&sink);
        let depth = agent.health()["outbox"]["store_fact"]["depth"].as_u64();
        if got.len() >= n && depth == Some(0) {
            assert!(
                got == ids,
                "{}: central holds exactly the seeded facts",
                broker.name
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}: central holds {} of {n}, outbox depth {depth:?}\n{:#}\n{}",
            broker.name,
            got.len(),
            agent.health()["sync"],
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let sync = agent.health()["sync"].clone();
    assert_eq!(sync["connected"], true, "{}: {sync:#}", broker.name);
    assert_eq!(agent.health()["dead_letters"], 0);
    let retained_online = fleet_online(broker) == Some(true);
    let log = agent.log_text();
    assert!(agent.terminate().success());
    let retained_offline = fleet_online(broker) == Some(false);
    Outcome {
        limits: sync["limits"].clone(),
        log,
        retained_online,
        retained_offline,
    }
}

#[test]
fn ejabberd_mod_mqtt_delivers_every_fact_end_to_end_with_retained_birth_and_clean_offline() {
    let Some(broker) = ejabberd() else { return };
    let outcome = round_trip(&broker, 2000, "");
    assert!(outcome.retained_online, "the birth is retained");
    assert!(
        outcome.retained_offline,
        "the clean shutdown leaves it offline"
    );
    // ejabberd 23.01 answers with its own keep-alive and topic aliases, and no packet limit.
    assert_eq!(
        outcome.limits["server_keep_alive_s"], 30,
        "{:#}",
        outcome.limits
    );
    assert_eq!(outcome.limits["maximum_packet_size"], Value::Null);
}

#[test]
fn rumqttd_delivers_every_fact_end_to_end_with_a_client_id_without_a_slash() {
    let Some(broker) = rumqttd() else { return };
    let outcome = round_trip(&broker, 2000, "");
    assert_eq!(
        outcome.limits["topic_alias_maximum"], 4096,
        "{:#}",
        outcome.limits
    );
    assert!(outcome.retained_online && outcome.retained_offline);
}

#[test]
fn mosquitto_announcing_a_128_kib_packet_limit_gets_batches_that_fit() {
    let Some(broker) = mosquitto("mosquitto max_packet_size", "max_packet_size 131072") else {
        return;
    };
    let outcome = round_trip(&broker, 3000, "");
    assert_eq!(outcome.limits["maximum_packet_size"], 131_072);
    assert!(outcome.limits["batch_max_bytes"].as_u64().unwrap() < 131_072);
    assert!(outcome.retained_online && outcome.retained_offline);
}

#[test]
fn mosquitto_with_a_silent_message_size_limit_gets_batches_split_after_its_puback_0x95() {
    // message_size_limit is not announced in CONNACK: mosquitto drops a larger message and
    // answers PUBACK 0x95; the agent splits the batch and lowers its size.
    let Some(broker) = mosquitto("mosquitto message_size_limit", "message_size_limit 65536") else {
        return;
    };
    let outcome = round_trip(&broker, 3000, "");
    assert_eq!(outcome.limits["maximum_packet_size"], Value::Null);
    assert!(
        outcome.log.contains("sending it again in halves"),
        "{}",
        outcome.log
    );
    assert!(outcome.retained_online && outcome.retained_offline);
}
