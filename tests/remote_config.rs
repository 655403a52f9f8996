#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! Remote configuration and commands from central, end to end: a real Mosquitto, the real
//! agent, documents signed with a real Ed25519 key. A signed document is applied through the
//! startup path and reported; a forged, older or invalid one changes nothing and is reported;
//! a document that cuts the agent off its broker is rolled back by the agent itself; a command
//! runs once and its replay is refused.

#[path = "common/broker.rs"]
mod broker;
mod common;
#[path = "support/https.rs"]
mod https;

use broker::{Broker, BrokerOptions};
use common::{AGENT_ID, Settings, Store};
use relais::fleet::{self, Audience, Command, Draft, SigningKey};
use serde_json::Value;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant, SystemTime};

const TOPIC_BASE: &str = "relais/v1/test-store/agent-1";

struct Ops {
    key: SigningKey,
}

impl Ops {
    fn new() -> Ops {
        Ops {
            key: SigningKey::generate().unwrap().0,
        }
    }

    fn public_line(&self) -> String {
        self.key.public_key().to_line()
    }

    fn config(&self, version: u64, toml: &str) -> Vec<u8> {
        let me = AGENT_ID.parse().unwrap();
        let draft = Draft::config(
            Audience::Agent(me),
            version,
            toml.to_owned(),
            SystemTime::now(),
        );
        fleet::sign(&draft, &self.key).unwrap().to_json()
    }

    fn command(&self, version: u64, command: &Command) -> Vec<u8> {
        let me = AGENT_ID.parse().unwrap();
        let draft = Draft::command(
            Audience::Agent(me),
            version,
            command,
            SystemTime::now(),
            Duration::from_secs(600),
        )
        .unwrap();
        fleet::sign(&draft, &self.key).unwrap().to_json()
    }
}

fn publish(broker: &Broker, topic: &str, payload: &[u8], retain: bool) {
    let mut args = vec![
        "-h".to_owned(),
        "127.0.0.1".into(),
        "-p".into(),
        broker.port.to_string(),
        "-u".into(),
        "central".into(),
        "-q".into(),
        "1".into(),
        "-t".into(),
        format!("{TOPIC_BASE}/{topic}"),
        "-s".into(),
    ];
    if retain {
        args.push("-r".into());
    }
    let mut child = Process::new("mosquitto_pub")
        .args(&args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (apt-get install mosquitto-clients)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(payload).unwrap();
    assert!(child.wait().unwrap().success());
}

/// A subscriber to one of the agent's topics, collecting messages in the background.
struct Watch {
    _child: common::KillOnDrop,
    lines: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Watch {
    fn start(broker: &Broker, topic: &str) -> Watch {
        let mut child = Process::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &broker.port.to_string(),
                "-u",
                "central",
                "-q",
                "1",
            ])
            .args(["-t", &format!("{TOPIC_BASE}/{topic}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub");
        let stdout = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&lines);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        Watch {
            _child: common::KillOnDrop(child),
            lines,
        }
    }

    /// The first message (from now on, or already seen) matching `pred`.
    fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.lines.lock().unwrap().iter().find(|v| pred(v)) {
                return v.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {timeout:?}; saw {:?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A store whose agent talks to `broker` and pins `ops`' key; `rollback_after` short.
fn store(broker: &Broker, ops: &Ops) -> Store {
    let store = Store::with(Settings {
        sync: format!("broker = \"{}\"\nreconnect_max = \"1s\"\n", broker.url()),
        ..Settings::default()
    });
    let keys = store.path("ops.pub");
    std::fs::write(&keys, format!("{}\n", ops.public_line())).unwrap();
    let config = std::fs::read_to_string(&store.config).unwrap();
    std::fs::write(
        &store.config,
        format!(
            "{config}\n[fleet]\nops_public_keys_file = \"{}\"\nrollback_after = \"10s\"\n",
            keys.display()
        ),
    )
    .unwrap();
    store
}

fn report_for(version: u64) -> impl Fn(&Value) -> bool {
    move |v| v["version"] == version
}

#[test]
fn a_signed_config_is_applied_and_reported_and_bad_ones_change_nothing() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    let ops = Ops::new();
    let store = store(&broker, &ops);
    let agent = store.start();
    let reports = Watch::start(&broker, "cfg/reported");
    let hash_before = agent.health()["config"]["hash"].clone();

    // v5: a lower burn cap, from central.
    publish(
        &broker,
        "cfg/desired",
        &ops.config(5, "[loyalty]\noffline_burn_cap = 7\n"),
        true,
    );
    let report = reports.wait("report of v5", Duration::from_secs(20), report_for(5));
    assert_eq!(report["status"], "applied", "{report}");
    assert_eq!(report["effective_version"], 5);
    assert_eq!(
        report["source_of_keys"]["loyalty.offline_burn_cap"], "remote v5",
        "{report}"
    );
    let health = agent.health();
    assert_eq!(health["config"]["remote_version"], 5, "{health}");
    assert_ne!(health["config"]["hash"], hash_before);
    assert_eq!(report["effective_hash"], health["config"]["hash"]);

    // Forged: signed by a key the agent does not pin.
    let intruder = Ops::new();
    publish(
        &broker,
        "cfg/desired",
        &intruder.config(6, "[loyalty]\noffline_burn_cap = 99999\n"),
        true,
    );
    let report = reports.wait(
        "report of the forged v6",
        Duration::from_secs(20),
        report_for(6),
    );
    assert_eq!(report["status"], "rejected", "{report}");
    assert_eq!(report["effective_version"], 5);

    // Older than the one in effect.
    publish(
        &broker,
        "cfg/desired",
        &ops.config(4, "[loyalty]\noffline_burn_cap = 1\n"),
        true,
    );
    let report = reports.wait(
        "report of the old v4",
        Duration::from_secs(20),
        report_for(4),
    );
    assert_eq!(report["status"], "rejected", "{report}");
    assert!(
        report["reasons"][0].as_str().unwrap().contains("downgrade"),
        "{report}"
    );

    // Invalid value, and a key only the box may set.
    publish(
        &broker,
        "cfg/desired",
        &ops.config(7, "[replica]\nstale_after = \"never\"\n"),
        true,
    );
    let report = reports.wait(
        "report of the invalid v7",
        Duration::from_secs(20),
        report_for(7),
    );
    assert_eq!(report["status"], "rejected", "{report}");
    assert!(
        report["reasons"][0]
            .as_str()
            .unwrap()
            .contains("replica.stale_after"),
        "{report}"
    );
    publish(
        &broker,
        "cfg/desired",
        &ops.config(8, "[agent]\ndata_dir = \"/tmp/elsewhere\"\n"),
        true,
    );
    let report = reports.wait(
        "report of the local-only v8",
        Duration::from_secs(20),
        report_for(8),
    );
    assert_eq!(report["status"], "rejected", "{report}");
    assert_eq!(
        agent.health()["config"]["remote_version"],
        5,
        "still v5 in effect"
    );

    // v5 survives a restart: it is the known-good document on disk.
    agent.terminate();
    let agent = store.start();
    assert_eq!(
        agent.health()["config"]["remote_version"],
        5,
        "{}",
        agent.log_text()
    );
    let shown = store.relais(&["config", "show"]);
    assert!(
        common::stdout(&shown).contains("offline_burn_cap"),
        "{}",
        common::describe(&shown)
    );
}

#[test]
fn a_config_that_cuts_the_agent_off_its_broker_is_rolled_back_by_the_agent() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    let ops = Ops::new();
    let store = store(&broker, &ops);
    let agent = store.start();
    let reports = Watch::start(&broker, "cfg/reported");
    let dead = format!("mqtt://127.0.0.1:{}", broker::free_port());
    publish(
        &broker,
        "cfg/desired",
        &ops.config(3, &format!("[sync]\nbroker = \"{dead}\"\n")),
        true,
    );
    // Applied (maybe unreported: the link goes down with it), then rolled back after 10 s
    // without a broker; the report arrives once the old broker answers again.
    let report = reports.wait("the rollback report", Duration::from_secs(60), |v| {
        v["version"] == 3 && v["status"] == "rolled_back"
    });
    assert_eq!(report["effective_version"], 0, "{report}");
    assert!(
        report["reasons"][0]
            .as_str()
            .unwrap()
            .contains("no broker connection"),
        "{report}"
    );
    let health = agent.health();
    assert_eq!(health["config"]["remote_version"], Value::Null, "{health}");
    // `connected` means the broker acknowledged something of this session (ADR 0018): the
    // report can reach the watcher a moment before its PUBACK reaches the agent.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while agent.health()["sync"]["connected"] != true {
        assert!(std::time::Instant::now() < deadline, "{}", agent.health());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The retained v3 comes again at every connect; it is not applied again.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(agent.health()["config"]["remote_version"], Value::Null);
}

#[test]
fn a_signed_command_runs_once_and_its_replay_is_refused() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    let ops = Ops::new();
    let store = store(&broker, &ops);
    let agent = store.start();
    let results = Watch::start(&broker, "cmd/res");
    let self_test = ops.command(100, &Command::SelfTest {});
    publish(&broker, "cmd/req", &self_test, false);
    let result = results.wait("the self-test result", Duration::from_secs(20), |v| {
        v["version"] == 100
    });
    assert_eq!(result["command"], "self_test", "{result}");
    assert!(
        result["data"]["checks"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{result}"
    );
    publish(&broker, "cmd/req", &self_test, false);
    let replay = results.wait("the replay's refusal", Duration::from_secs(20), |v| {
        v["version"] == 100 && v["status"] == "rejected"
    });
    assert!(
        replay["message"].as_str().unwrap().contains("replay"),
        "{replay}"
    );
    let level = Command::SetLogLevel {
        level: fleet::LogLevel::Debug,
        expires_in: Duration::from_secs(60),
    };
    publish(&broker, "cmd/req", &ops.command(101, &level), false);
    let result = results.wait("the log level result", Duration::from_secs(20), |v| {
        v["version"] == 101
    });
    assert_eq!(result["status"], "ok", "{result}");
    drop(agent);
}

#[test]
fn a_signed_upload_command_sends_a_diagnostics_bundle_without_customer_data() {
    if !broker::available() {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let uploads = tempfile::tempdir().unwrap();
    let server = https::HttpsServer::start(uploads.path());
    let broker = Broker::start(BrokerOptions::default());
    let ops = Ops::new();
    let store = store(&broker, &ops);
    let config = std::fs::read_to_string(&store.config).unwrap().replace(
        "[sync]\n",
        &format!("[sync]\nca_file = \"{}\"\n", server.ca_file.display()),
    );
    std::fs::write(&store.config, config).unwrap();
    let agent = store.start();
    let (status, _) = agent.post_json(
        "/v1/movements",
        &serde_json::json!({"kind": "receipt", "sku": "S-1", "qty": 2}),
    );
    assert_eq!(status, 201);
    let results = Watch::start(&broker, "cmd/res");
    let upload = Command::UploadDiagnostics {
        url: server.url("bundle.json").parse().unwrap(),
    };
    publish(&broker, "cmd/req", &ops.command(200, &upload), false);
    let result = results.wait("the upload result", Duration::from_secs(60), |v| {
        v["version"] == 200
    });
    assert_eq!(result["status"], "ok", "{result}");
    let bundle: Value =
        serde_json::from_slice(&std::fs::read(uploads.path().join("bundle.json")).unwrap())
            .unwrap();
    for part in ["self_test", "doctor", "outbox", "config", "logs", "devices"] {
        assert!(
            bundle.get(part).is_some(),
            "no {part} in the bundle: {bundle}"
        );
    }
    assert!(bundle["outbox"]["store_fact"]["depth"].is_u64(), "{bundle}");
    assert!(bundle["doctor"]["checks"].is_array(), "{bundle}");
}

#[test]
fn the_retained_document_replayed_at_a_reconnect_changes_nothing_and_loses_no_event() {
    if !broker::available() {
        return;
    }
    let mut broker = Broker::start(BrokerOptions { persistence: true });
    let ops = Ops::new();
    let store = store(&broker, &ops);
    let agent = store.start();
    let reports = Watch::start(&broker, "cfg/reported");
    publish(
        &broker,
        "cfg/desired",
        &ops.config(5, "[loyalty]\noffline_burn_cap = 7\n"),
        true,
    );
    reports.wait("report of v5", Duration::from_secs(20), report_for(5));
    let applied_lines = |agent: &common::Agent| {
        agent
            .log_text()
            .lines()
            .filter(|l| l.contains("remote config applied"))
            .count()
    };
    let before = applied_lines(&agent);
    let (status, first) = agent.post_json(
        "/v1/movements",
        &serde_json::json!({"kind": "receipt", "sku": "S-1", "qty": 1, "client_key": "k-before"}),
    );
    assert_eq!(status, 201, "{first}");

    // The broker restarts; the agent reconnects and receives the retained v5 again.
    broker.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.health()["sync"]["connected"] != true {
        assert!(
            Instant::now() < deadline,
            "no reconnect:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        applied_lines(&agent),
        before,
        "the replay was applied again:\n{}",
        agent.log_text()
    );
    assert_eq!(agent.health()["config"]["remote_version"], 5);
    let (status, second) = agent.post_json(
        "/v1/movements",
        &serde_json::json!({"kind": "receipt", "sku": "S-1", "qty": 1, "client_key": "k-after"}),
    );
    assert_eq!(status, 201, "{second}");
    assert_eq!(
        second["seq"].as_u64(),
        first["seq"].as_u64().map(|s| s + 1),
        "the outbox writer kept its sequence"
    );
    // Both facts exist (delivered or still queued): nothing was lost across the reconnect.
    let recorded = store.outbox_events().len() as u64
        + agent.health()["sync"]["delivered_since_start"]
            .as_u64()
            .unwrap_or(0);
    assert!(recorded >= 2, "{recorded}");
}

#[test]
fn an_older_signed_config_replayed_after_the_known_good_document_is_lost_is_refused() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    let ops = Ops::new();
    let store = store(&broker, &ops);
    let agent = store.start();
    let reports = Watch::start(&broker, "cfg/reported");
    // Central's v5, then v8 (retained: each replaces the one before on the broker).
    for (version, cap) in [(5, 50), (8, 80)] {
        publish(
            &broker,
            "cfg/desired",
            &ops.config(version, &format!("[loyalty]\noffline_burn_cap = {cap}\n")),
            true,
        );
        let report = reports.wait("the report", Duration::from_secs(20), report_for(version));
        assert_eq!(report["status"], "applied", "{report}");
    }
    agent.terminate();
    // The known-good document is lost (or expired, or its key unpinned): only the floor is left.
    std::fs::remove_file(store.data_dir.join("fleet/config.json")).expect("known-good v8");
    // An attacker with access to the broker (or a stale retained message) replays the old v5.
    publish(
        &broker,
        "cfg/desired",
        &ops.config(5, "[loyalty]\noffline_burn_cap = 50\n"),
        true,
    );
    let reports = Watch::start(&broker, "cfg/reported");
    let agent = store.start();
    let report = reports.wait(
        "the refusal of the replayed v5",
        Duration::from_secs(20),
        |v| v["version"] == 5 && v["status"] == "rejected",
    );
    assert!(
        report["reasons"][0]
            .as_str()
            .unwrap_or_default()
            .contains("older than version 8"),
        "{report}"
    );
    assert_ne!(agent.health()["config"]["remote_version"], 5);
}

#[test]
fn a_validly_signed_document_that_would_weaken_the_box_is_refused_and_changes_nothing() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    let ops = Ops::new();
    let store = store(&broker, &ops);
    let agent = store.start();
    let reports = Watch::start(&broker, "cfg/reported");
    // A stolen ops key turns on keyboard capture and verbose logs.
    publish(
        &broker,
        "cfg/desired",
        &ops.config(
            3,
            "[log]\nlevel = \"trace\"\n\n[[devices.hid]]\nname = \"capture\"\npath = \"/dev/input/by-id/usb-kbd-event-kbd\"\n",
        ),
        true,
    );
    let report = reports.wait("the refusal", Duration::from_secs(20), report_for(3));
    assert_eq!(report["status"], "rejected", "{report}");
    let reason = report["reasons"][0].as_str().unwrap_or_default();
    assert!(reason.contains("weaken"), "{report}");
    assert!(
        reason.contains("keyboard") && reason.contains("below info"),
        "{report}"
    );
    assert_ne!(agent.health()["config"]["remote_version"], 3);
}

/// Wait until `check` holds.
fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The version of the known-good document on disk, if any.
fn known_good_version(store: &Store) -> Option<u64> {
    let bytes = std::fs::read(store.data_dir.join("fleet/config.json")).ok()?;
    fleet::SignedDocument::from_json(&bytes)
        .ok()
        .map(|d| d.version)
}

#[test]
fn a_signed_config_moving_the_agent_to_a_broker_that_refuses_its_own_topics_is_rolled_back_and_never_known_good()
 {
    if !broker::available() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    let ops = Ops::new();
    let store = store(&broker, &ops);
    let agent = store.start();
    let reports = Watch::start(&broker, "cfg/reported");
    // The new broker takes the CONNECT and acknowledges every publish of the agent, but its
    // ACL never lets the agent read its own topics: central's acks, deltas, config and
    // commands could never reach it again. Any answer from that broker is not a proof.
    let write_only = Broker::start_with_acl(
        BrokerOptions::default(),
        "",
        "pattern write relais/v1/%u/#\n\nuser central\ntopic readwrite relais/v1/#\n",
    );
    publish(
        &broker,
        "cfg/desired",
        &ops.config(4, &format!("[sync]\nbroker = \"{}\"\n", write_only.url())),
        true,
    );
    // There, the agent is "connected" (its publishes are acknowledged) ...
    wait_until(
        "the agent to deliver to the write-only broker",
        Duration::from_secs(20),
        || {
            let health = agent.health();
            health["config"]["remote_version"] == 4 && health["sync"]["connected"] == true
        },
    );
    // ... yet after fleet.rollback_after (10 s) it is back on the old broker, saying why.
    let report = reports.wait("the rollback report", Duration::from_secs(60), |v| {
        v["version"] == 4 && v["status"] == "rolled_back"
    });
    let reason = report["reasons"][0].as_str().unwrap_or_default();
    assert!(reason.contains("own topics echoed back"), "{report}");
    assert_eq!(agent.health()["config"]["remote_version"], Value::Null);
    assert_ne!(known_good_version(&store), Some(4), "v4 became known good");
    assert!(!store.data_dir.join("fleet/pending.json").exists());
    // A restart starts on the old broker, not on v4.
    agent.terminate();
    let agent = store.start();
    wait_until(
        "the old broker after a restart",
        Duration::from_secs(20),
        || agent.health()["sync"]["connected"] == true,
    );
    assert_ne!(agent.health()["config"]["remote_version"], 4);
}

#[test]
fn a_signed_config_moving_the_agent_to_a_broker_that_echoes_its_own_topics_is_promoted() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    let ops = Ops::new();
    let store = store(&broker, &ops);
    let agent = store.start();
    let new_broker = Broker::start(BrokerOptions::default());
    let reports = Watch::start(&new_broker, "cfg/reported");
    publish(
        &broker,
        "cfg/desired",
        &ops.config(4, &format!("[sync]\nbroker = \"{}\"\n", new_broker.url())),
        true,
    );
    let report = reports.wait("v4's report", Duration::from_secs(20), report_for(4));
    assert_eq!(report["status"], "applied", "{report}");
    wait_until("v4 to become known good", Duration::from_secs(20), || {
        known_good_version(&store) == Some(4)
    });
    assert!(agent.log_text().contains("echoes the agent's own topics"));
    // Past fleet.rollback_after it is still in effect.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(agent.health()["config"]["remote_version"], 4);
    assert!(
        !reports
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|v| v["status"] == "rolled_back"),
        "nothing rolled back"
    );
}
