#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! What the doctor's fixes ask the box's administrator to do — acknowledge a handled alarm,
//! send dead letters again — done on the box with `sudo relais …`: no till's token, no HTTP
//! client to install. The request is proved with the running agent's per-boot key; anything
//! else on those routes still needs a token.

#[path = "common/broker.rs"]
mod broker;
mod common;

use common::{Store, describe, status_code, stdout};
use std::io::{Read, Write};

const TOKEN: &str = "till-1-token-0123456789abcdefghijklmn";

/// A store whose API needs a token, on a fixed port (the CLI finds the agent where the config
/// says it listens), and whose disk watermark is above any disk's free space, so `disk_low` is
/// raised at start.
fn store() -> Store {
    let store = Store::new();
    let port = broker::free_port();
    store.protect_api(
        &format!("till-1 {TOKEN}\n"),
        &format!("127.0.0.1:{port}"),
        "",
    );
    let text = std::fs::read_to_string(&store.config).unwrap();
    std::fs::write(
        &store.config,
        format!("{text}\n[disk]\nlow_free_mb = 1048576\n"),
    )
    .unwrap();
    store
}

/// A raw request with the given extra header lines: (status, body).
fn raw(port: u16, method: &str, path: &str, extra: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n{extra}content-length: 0\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    (status, answer)
}

fn port_of(store: &Store) -> u16 {
    let text = std::fs::read_to_string(&store.config).unwrap();
    let after = text.split("listen = \"127.0.0.1:").nth(1).unwrap();
    after.split('"').next().unwrap().parse().unwrap()
}

fn alarms(health: &serde_json::Value) -> Vec<String> {
    health["alarms"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["code"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_boxs_administrator_acknowledges_an_alarm_and_requeues_dead_letters_without_a_token() {
    let store = store();
    let agent = store.start().with_token(TOKEN);
    let health = agent.health();
    assert!(
        alarms(&health).contains(&"disk_low".to_owned()),
        "{health:#}"
    );

    let out = store.relais(&["alarms", "ack", "disk_low"]);
    assert_eq!(status_code(&out), 0, "{}", describe(&out));
    assert!(
        stdout(&out).contains("alarm disk_low acknowledged"),
        "{}",
        describe(&out)
    );
    assert!(
        agent.log_text().contains("alarm acknowledged"),
        "{}",
        agent.log_text()
    );
    // Nothing to acknowledge is said so, with its own exit status.
    let out = store.relais(&["alarms", "ack", "uplink_refused"]);
    assert_eq!(status_code(&out), 3, "{}", describe(&out));
    assert!(stdout(&out).contains("no alarm uplink_refused is raised"));

    let out = store.relais(&["outbox", "requeue"]);
    assert_eq!(status_code(&out), 0, "{}", describe(&out));
    assert!(
        stdout(&out).contains("no dead letters"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_forged_or_misdirected_box_key_proof_is_refused_and_the_routes_still_need_a_token() {
    let store = store();
    let agent = store.start().with_token(TOKEN);
    let port = port_of(&store);
    // No token, no proof.
    let (status, _) = raw(port, "DELETE", "/v1/alarms/disk_low", "");
    assert_eq!(status, 401);
    // A proof made with a guessed key.
    let forged = format!(
        "x-relais-doctor: {}:{}\r\n",
        "ab".repeat(16),
        "00".repeat(32)
    );
    let (status, body) = raw(port, "DELETE", "/v1/alarms/disk_low", &forged);
    assert_eq!(status, 401, "{body}");
    // A real proof for one action is no proof for another.
    let key = relais::api::doctor_link::DoctorKey::read(&store.data_dir).unwrap();
    let challenge = relais::api::doctor_link::challenge();
    let for_requeue = format!(
        "x-relais-doctor: {}\r\n",
        key.request_action(&challenge, "POST", "/v1/outbox/requeue")
    );
    let (status, body) = raw(port, "DELETE", "/v1/alarms/disk_low", &for_requeue);
    assert_eq!(status, 401, "{body}");
    // The proof is accepted only on the two administrator routes: a sale still needs a token.
    let for_sale = format!(
        "x-relais-doctor: {}\r\n",
        key.request_action(&challenge, "POST", "/v1/sales")
    );
    let (status, body) = raw(port, "POST", "/v1/sales", &for_sale);
    assert_eq!(status, 401, "{body}");
    assert!(alarms(&agent.health()).contains(&"disk_low".to_owned()));
}

#[test]
fn without_a_running_agent_the_command_says_to_start_it() {
    let store = store();
    let out = store.relais(&["alarms", "ack", "disk_low"]);
    assert_eq!(status_code(&out), 1, "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the agent is not running"), "{err}");
    assert!(err.contains("systemctl start relais"), "{err}");
}
