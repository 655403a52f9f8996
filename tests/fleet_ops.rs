#![cfg(feature = "central")] // drives central's side: the default `central` feature
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! The ops side of signed fleet documents against a real Mosquitto: `relaisctl keygen`,
//! `config sign`, `config push` (retained on cfg/desired, verified by `relais::fleet::verify`
//! with the generated key), reports awaited on cfg/reported, and `cmd send` with and without
//! an agent answering. The "agent" here is a small MQTT client standing in for the real one,
//! so these tests pin the wire contract both sides build against.

#[path = "common/broker.rs"]
mod broker;

use broker::{Broker, BrokerOptions};
use relais::config::AgentId;
use relais::fleet::{self, CommandResult, CommandStatus, ConfigReport, ConfigStatus, FleetError};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{Client, Event, MqttOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

const RELAISCTL: &str = env!("CARGO_BIN_EXE_relaisctl");
const AGENT: &str = "store-1/till-1";
const REMOTE_TOML: &str = "[api]\nrate_limit_per_client = 50\n";

fn skip() -> bool {
    if !broker::available() {
        eprintln!("mosquitto is not installed (scripts/test.sh installs it); skipping");
        return true;
    }
    false
}

fn relaisctl(args: &[&str]) -> Output {
    Command::new(RELAISCTL)
        .args(args)
        .output()
        .expect("run relaisctl")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
fn assert_status(out: &Output, code: i32) {
    let (stdout, stderr) = text(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

/// `relaisctl keygen --out DIR/NAME`: the private and public key paths.
fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let out = relaisctl(&["keygen", "--out", dir.to_str().unwrap(), "--name", name]);
    assert_status(&out, 0);
    let (stdout, _) = text(&out);
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let keys = fleet::read_public_keys(&public).unwrap();
    assert!(stdout.contains(keys[0].key_id()), "{stdout}");
    assert!(stdout.contains("fleet.ops_public_keys_file"), "{stdout}");
    (private, public)
}

fn sign_config(dir: &Path, key: &Path, agent: &str, version: u64, name: &str) -> PathBuf {
    let toml = dir.join("remote.toml");
    std::fs::write(&toml, REMOTE_TOML).unwrap();
    let doc = dir.join(name);
    let out = relaisctl(&[
        "config",
        "sign",
        "--key",
        key.to_str().unwrap(),
        "--agent",
        agent,
        "--version",
        &version.to_string(),
        toml.to_str().unwrap(),
        "--out",
        doc.to_str().unwrap(),
    ]);
    assert_status(&out, 0);
    doc
}

fn options(client_id: &str, username: &str, broker: &Broker) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", broker.port);
    options.set_credentials(username, "");
    options.set_keep_alive(Duration::from_secs(5));
    options
}

/// Subscribe to `topic` and collect what arrives within `quiet` of the last message (retained
/// messages arrive right after the SUBACK).
fn retained(broker: &Broker, topic: &str) -> Vec<(bool, Vec<u8>)> {
    let (client, mut connection) = Client::new(options("test-reader", "central", broker), 10);
    client.subscribe(topic, QoS::AtLeastOnce).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut subscribed_at: Option<Instant> = None;
    while Instant::now() < deadline {
        if subscribed_at.is_some_and(|t| t.elapsed() > Duration::from_millis(500)) {
            break;
        }
        match connection.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => subscribed_at = Some(Instant::now()),
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => got.push((p.retain, p.payload.to_vec())),
            Ok(Err(e)) => panic!("reader: {e}"),
            _ => {}
        }
    }
    let _ = client.disconnect();
    got
}

/// A stand-in agent: verifies what arrives on its cfg/desired and cmd/req with the pinned keys
/// and answers like the real one (applied or rejected; ok or rejected). Returns once it is
/// subscribed.
fn fake_agent(broker: &Broker, pinned: Vec<fleet::PublicKey>) -> mpsc::Receiver<String> {
    let me: AgentId = AGENT.parse().unwrap();
    let (client, mut connection) = Client::new(options(AGENT, AGENT, broker), 10);
    let base = format!("relais/v1/{AGENT}");
    client
        .subscribe(format!("{base}/cfg/desired"), QoS::AtLeastOnce)
        .unwrap();
    client
        .subscribe(format!("{base}/cmd/req"), QoS::AtLeastOnce)
        .unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (seen_tx, seen_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut subacks = 0;
        for event in connection.iter() {
            let Ok(event) = event else { return };
            match event {
                Event::Incoming(Packet::SubAck(_)) => {
                    subacks += 1;
                    if subacks == 2 {
                        let _ = ready_tx.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    let now = SystemTime::now();
                    if topic.ends_with("/cfg/desired") {
                        let claimed = fleet::SignedDocument::from_json(&p.payload)
                            .map(|d| d.version)
                            .unwrap_or(0);
                        let (status, reasons) =
                            match fleet::verify_config(&p.payload, &pinned, &me, now) {
                                Ok(_) => (ConfigStatus::Applied, vec![]),
                                Err(e) => (ConfigStatus::Rejected, vec![e.to_string()]),
                            };
                        let _ = seen_tx.send(format!("cfg {claimed} {}", status.name()));
                        let report = ConfigReport {
                            v: 1,
                            agent: AGENT.into(),
                            version: claimed,
                            status,
                            reasons,
                            effective_version: if status == ConfigStatus::Applied {
                                claimed
                            } else {
                                0
                            },
                            effective_hash: "0".repeat(64),
                            source_of_keys: None,
                            at: fleet::format_time(now),
                        };
                        let _ = client.publish(
                            format!("relais/v1/{AGENT}/cfg/reported"),
                            QoS::AtLeastOnce,
                            true,
                            serde_json::to_vec(&report).unwrap(),
                        );
                    } else if topic.ends_with("/cmd/req") {
                        let claimed = fleet::SignedDocument::from_json(&p.payload)
                            .map(|d| d.version)
                            .unwrap_or(0);
                        let (status, command, message) =
                            match fleet::verify_command(&p.payload, &pinned, &me, now) {
                                Ok((_, c)) => (
                                    CommandStatus::Ok,
                                    Some(c.name().to_string()),
                                    "done".to_string(),
                                ),
                                Err(e) => (CommandStatus::Rejected, None, e.to_string()),
                            };
                        let _ = seen_tx.send(format!("cmd {claimed} {}", status.name()));
                        let result = CommandResult {
                            v: 1,
                            agent: AGENT.into(),
                            version: claimed,
                            command,
                            status,
                            message,
                            data: Some(serde_json::json!({"checks": 3})),
                            at: fleet::format_time(now),
                        };
                        let _ = client.publish(
                            format!("relais/v1/{AGENT}/cmd/res"),
                            QoS::AtLeastOnce,
                            false,
                            serde_json::to_vec(&result).unwrap(),
                        );
                    }
                }
                _ => {}
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("fake agent subscribed");
    seen_rx
}

#[test]
fn a_pushed_config_is_retained_on_cfg_desired_and_verifies_with_the_generated_key() {
    if skip() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(&dir.path().join("keys"), "ops");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the private key is owner-only");
    }
    let doc = sign_config(dir.path(), &key, AGENT, 3, "doc.json");
    let out = relaisctl(&[
        "config",
        "push",
        "--broker",
        &broker.url(),
        "--agent",
        AGENT,
        "--signed",
        doc.to_str().unwrap(),
        "--no-wait",
    ]);
    assert_status(&out, 0);
    assert!(
        text(&out).0.contains("published (retained)"),
        "{:?}",
        text(&out)
    );

    // Whoever subscribes later (the agent at its next connection) gets it, retained.
    let got = retained(&broker, &format!("relais/v1/{AGENT}/cfg/desired"));
    assert_eq!(got.len(), 1, "{got:?}");
    let (retain, payload) = &got[0];
    assert!(retain, "cfg/desired is retained");
    let pinned = fleet::read_public_keys(&public).unwrap();
    let me: AgentId = AGENT.parse().unwrap();
    let verified = fleet::verify_config(payload, &pinned, &me, SystemTime::now()).unwrap();
    assert_eq!(verified.version, 3);
    assert_eq!(verified.body, REMOTE_TOML);
    let other_agent: AgentId = "store-2/till-1".parse().unwrap();
    assert!(matches!(
        fleet::verify(payload, &pinned, &other_agent, SystemTime::now()),
        Err(FleetError::WrongAgent { .. })
    ));

    // A document signed with another key: refused, naming both key ids.
    let (rogue_key, rogue_public) = keygen(&dir.path().join("rogue"), "ops");
    let rogue_doc = sign_config(dir.path(), &rogue_key, AGENT, 4, "rogue.json");
    let err = fleet::verify(
        &std::fs::read(&rogue_doc).unwrap(),
        &pinned,
        &me,
        SystemTime::now(),
    )
    .unwrap_err();
    let rogue_id = fleet::read_public_keys(&rogue_public).unwrap()[0]
        .key_id()
        .to_string();
    assert!(matches!(err, FleetError::UnknownKey { .. }), "{err:?}");
    assert!(err.to_string().contains(&rogue_id), "{err}");
    assert!(err.to_string().contains(pinned[0].key_id()), "{err}");

    // `config verify` says the same from the command line.
    let out = relaisctl(&[
        "config",
        "verify",
        "--pub",
        public.to_str().unwrap(),
        "--agent",
        AGENT,
        doc.to_str().unwrap(),
    ]);
    assert_status(&out, 0);
    let out = relaisctl(&[
        "config",
        "verify",
        "--pub",
        public.to_str().unwrap(),
        "--agent",
        AGENT,
        rogue_doc.to_str().unwrap(),
    ]);
    assert_status(&out, 1);
    assert!(text(&out).1.contains("does not pin"), "{:?}", text(&out));
}

#[test]
fn a_fleet_wide_push_goes_to_each_listed_agent_and_star_alone_is_refused() {
    if skip() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(&dir.path().join("keys"), "ops");
    let doc = sign_config(dir.path(), &key, "*", 5, "fleet.json");
    let out = relaisctl(&[
        "config",
        "push",
        "--broker",
        &broker.url(),
        "--agent",
        "*",
        "--signed",
        doc.to_str().unwrap(),
        "--no-wait",
    ]);
    assert_status(&out, 1);
    assert!(text(&out).1.contains("--agents-file"), "{:?}", text(&out));

    let agents = dir.path().join("agents.txt");
    std::fs::write(
        &agents,
        "# two stores\nstore-1/till-1\nstore-2/back-office\n",
    )
    .unwrap();
    let out = relaisctl(&[
        "config",
        "push",
        "--broker",
        &broker.url(),
        "--agents-file",
        agents.to_str().unwrap(),
        "--signed",
        doc.to_str().unwrap(),
        "--no-wait",
    ]);
    assert_status(&out, 0);
    let pinned = fleet::read_public_keys(&public).unwrap();
    for agent in ["store-1/till-1", "store-2/back-office"] {
        let got = retained(&broker, &format!("relais/v1/{agent}/cfg/desired"));
        assert_eq!(got.len(), 1, "{agent}: {got:?}");
        let v = fleet::verify_config(
            &got[0].1,
            &pinned,
            &agent.parse().unwrap(),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(v.version, 5);
        assert_eq!(v.audience, fleet::Audience::Fleet);
    }
}

#[test]
fn config_push_waits_for_the_agents_report_and_exits_by_its_status() {
    if skip() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(&dir.path().join("keys"), "ops");
    let seen = fake_agent(&broker, fleet::read_public_keys(&public).unwrap());
    let toml = dir.path().join("remote.toml");
    std::fs::write(&toml, REMOTE_TOML).unwrap();

    // Signed on the fly with the pinned key: applied, exit 0.
    let out = relaisctl(&[
        "config",
        "push",
        "--broker",
        &broker.url(),
        "--agent",
        AGENT,
        "--key",
        key.to_str().unwrap(),
        "--version",
        "6",
        toml.to_str().unwrap(),
        "--timeout",
        "10s",
    ]);
    assert_status(&out, 0);
    assert!(text(&out).0.contains("applied"), "{:?}", text(&out));
    assert_eq!(
        seen.recv_timeout(Duration::from_secs(5)).unwrap(),
        "cfg 6 applied"
    );

    // Signed with a key the agent does not pin: rejected, exit 1, the reason shown.
    let (rogue, _) = keygen(&dir.path().join("rogue"), "ops");
    let out = relaisctl(&[
        "config",
        "push",
        "--broker",
        &broker.url(),
        "--agent",
        AGENT,
        "--key",
        rogue.to_str().unwrap(),
        "--version",
        "7",
        toml.to_str().unwrap(),
        "--timeout",
        "10s",
        "--json",
    ]);
    assert_status(&out, 1);
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results[0]["outcome"], "reported");
    assert_eq!(results[0]["report"]["status"], "rejected");
    assert!(
        results[0]["report"]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("does not pin"),
        "{results}"
    );
    // The previous retained report (version 6) was seen first and is shown as "before".
    assert_eq!(results[0]["before"]["version"], 6, "{results}");
}

#[test]
fn cmd_send_prints_the_agents_answer() {
    if skip() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(&dir.path().join("keys"), "ops");
    let seen = fake_agent(&broker, fleet::read_public_keys(&public).unwrap());
    let out = relaisctl(&[
        "cmd",
        "send",
        "--broker",
        &broker.url(),
        "--agent",
        AGENT,
        "--key",
        key.to_str().unwrap(),
        "--timeout",
        "10s",
        "set-log-level",
        "--level",
        "debug",
        "--expires-in",
        "30m",
    ]);
    assert_status(&out, 0);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("set_log_level ok: done"), "{stdout}");
    assert!(stdout.contains("\"checks\": 3"), "{stdout}");
    assert!(
        seen.recv_timeout(Duration::from_secs(5))
            .unwrap()
            .ends_with(" ok")
    );

    // A command the agent would refuse is refused before it is signed.
    let out = relaisctl(&[
        "cmd",
        "send",
        "--broker",
        &broker.url(),
        "--agent",
        AGENT,
        "--key",
        key.to_str().unwrap(),
        "upload-diagnostics",
        "--url",
        "http://diag.example.com/",
    ]);
    assert_status(&out, 1);
    assert!(text(&out).1.contains("only https"), "{:?}", text(&out));
}

#[test]
fn cmd_send_without_an_answer_exits_2_with_a_clear_message() {
    if skip() {
        return;
    }
    let broker = Broker::start(BrokerOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(&dir.path().join("keys"), "ops");
    let send = |timeout: &str| {
        relaisctl(&[
            "cmd",
            "send",
            "--broker",
            &broker.url(),
            "--agent",
            AGENT,
            "--key",
            key.to_str().unwrap(),
            "--timeout",
            timeout,
            "self-test",
        ])
    };

    // Nobody subscribed to cmd/req: the broker says so, no need to wait the timeout out.
    let started = Instant::now();
    let out = send("30s");
    assert_status(&out, 2);
    assert!(started.elapsed() < Duration::from_secs(15));
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("nobody subscribes to store-1/till-1's cmd/req"),
        "{stderr}"
    );
    assert!(stderr.contains("not queued"), "{stderr}");

    // Someone subscribed but silent (a hung agent): the timeout ends it.
    let (client, mut connection) = Client::new(options(AGENT, AGENT, &broker), 10);
    client
        .subscribe(format!("relais/v1/{AGENT}/cmd/req"), QoS::AtLeastOnce)
        .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = tx.send(None);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(Some(p.payload.to_vec()));
                }
                Err(_) => return,
                _ => {}
            }
        }
    });
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap().is_none());
    let started = Instant::now();
    let out = send("1s");
    assert_status(&out, 2);
    assert!(started.elapsed() >= Duration::from_secs(1));
    let (_, stderr) = text(&out);
    assert!(stderr.contains("no answer from store-1/till-1"), "{stderr}");
    // What the silent agent received is a signed command it could have verified.
    let payload = rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    let pinned = fleet::read_public_keys(&public).unwrap();
    let (verified, command) = fleet::verify_command(
        &payload,
        &pinned,
        &AGENT.parse().unwrap(),
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(command.name(), "self_test");
    let lifetime = verified
        .expires_at
        .unwrap()
        .duration_since(verified.issued_at)
        .unwrap();
    assert_eq!(
        lifetime,
        Duration::from_secs(600),
        "default command lifetime"
    );
}
