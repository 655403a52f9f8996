#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! The real agent against a scripted MQTT 5.0 broker (tests/support/scripted_broker.rs) that
//! plays managed brokers' limits and the misbehaviours of issue 19. Each test asserts that
//! delivery resumes with every fact acknowledged exactly once (the contract allows a resend
//! only of what was never acknowledged), or that the agent says precisely why not in its log,
//! `/v1/health` and `relais doctor`; and that the broker saw no violation of what it announced.

mod common;
#[path = "support/scripted_broker.rs"]
mod scripted;

use common::{Agent, Settings, Store};
use scripted::{Script, ScriptedBroker};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Fast liveness for tests: every limit is seconds, not the production half-minutes.
const FAST: &str = "puback_timeout = \"2s\"\nwrite_timeout = \"2s\"\nreconnect_max = \"2s\"\n";

/// The scripted broker stands for the broker alone, with no central behind it to send
/// end-to-end acks: these tests are about what the broker's own answers do (`ack = "puback"`).
fn store_for(broker: &ScriptedBroker, extra: &str) -> Store {
    Store::with(Settings {
        sync: format!("broker = \"{}\"\nack = \"puback\"\n{extra}", broker.url()),
        ..Settings::default()
    })
}

fn wait_until(what: &str, timeout: Duration, agent: &Agent, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\nhealth: {:#}\nlog:\n{}",
            agent.health()["sync"],
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn depth(agent: &Agent) -> u64 {
    agent.health()["outbox"]["store_fact"]["depth"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

/// Every seeded fact was acknowledged by the broker exactly once (none missing, none
/// acknowledged twice), the outbox is empty, and the broker saw no limit broken.
fn assert_delivered_exactly_once(broker: &ScriptedBroker, agent: &Agent, ids: &HashSet<String>) {
    wait_until(
        "every fact acknowledged and the outbox empty",
        Duration::from_secs(60),
        agent,
        || broker.acked_event_ids().len() >= ids.len() && depth(agent) == 0,
    );
    let acked = broker.acked_event_ids();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &acked {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "acknowledged more than once: {twice:?}");
    let got: HashSet<String> = acked.into_iter().collect();
    assert!(
        got == *ids,
        "the acknowledged ids are exactly the seeded ones"
    );
    assert_eq!(broker.violations(), Vec::<String>::new(), "limits broken");
}

fn sync_health(agent: &Agent) -> Value {
    agent.health()["sync"].clone()
}

/// `relais doctor --json`, and its finding named `check`.
fn doctor_finding(store: &Store, check: &str) -> Value {
    let out = store.relais(&["doctor", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}\n{}", common::describe(&out)));
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("no {check} finding in {report:#}"))
        .clone()
}

#[test]
fn batches_fit_a_128_kib_packet_limit_with_their_envelope_and_the_limits_show_in_log_health_and_doctor()
 {
    // AWS IoT Core: 128 KB messages, topic aliases, an id of its own choosing.
    let broker = ScriptedBroker::start(Script {
        maximum_packet_size: Some(131_072),
        topic_alias_maximum: Some(8),
        assigned_client_id: Some("aws-assigned-7".into()),
        ..Script::default()
    });
    let store = store_for(&broker, FAST);
    let ids = store.seed_outbox(3000);
    let agent = store.start();
    assert_delivered_exactly_once(&broker, &agent, &ids);
    let sizes: Vec<usize> = broker.record(|r| {
        r.publishes
            .iter()
            .filter(|p| p.topic.ends_with("/evt"))
            .map(|p| p.size)
            .collect()
    });
    assert!(
        sizes.len() >= 6,
        "3000 facts need several batches: {sizes:?}"
    );
    assert!(sizes.iter().all(|s| *s <= 131_072), "{sizes:?}");
    assert!(
        sizes.iter().any(|s| *s > 100_000),
        "batches are filled close to the limit: {sizes:?}"
    );
    assert_eq!(broker.connections(), 1, "no reconnect needed");
    let sync = sync_health(&agent);
    assert_eq!(sync["connected"], true, "{sync:#}");
    assert_eq!(sync["link"], "delivering");
    assert_eq!(sync["limits"]["maximum_packet_size"], 131_072);
    assert_eq!(sync["limits"]["topic_alias_maximum"], 8);
    assert_eq!(sync["limits"]["assigned_client_id"], "aws-assigned-7");
    assert!(sync["last_puback_age_s"].as_f64().unwrap() < 30.0);
    assert!(
        agent
            .log_text()
            .contains("maximum packet size 131072 B, receive maximum 65535"),
        "{}",
        agent.log_text()
    );
    let limits = doctor_finding(&store, "broker_limits");
    assert_eq!(limits["status"], "warn", "{limits:#}");
    assert!(
        limits["detail"].as_str().unwrap().contains("131072 B"),
        "{limits:#}"
    );
    let metrics = agent
        .request(reqwest::Method::GET, "/v1/metrics")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("relais_sync_last_puback_age_seconds "),
        "{metrics}"
    );
}

#[test]
fn a_256_kib_broker_without_retain_gets_state_and_will_unretained_and_every_fact() {
    // Azure IoT Hub: 256 KB messages, no retained messages.
    let broker = ScriptedBroker::start(Script {
        maximum_packet_size: Some(262_144),
        retain_available: Some(false),
        ..Script::default()
    });
    let store = store_for(&broker, FAST);
    let ids = store.seed_outbox(3000);
    let agent = store.start();
    assert_delivered_exactly_once(&broker, &agent, &ids);
    // The first CONNECT carried a retained Will (the agent could not know); the broker refused
    // it as the specification says (CONNACK 0x9A) and the next one carried none.
    let wills: Vec<Option<bool>> =
        broker.record(|r| r.connects.iter().map(|c| c.will_retain).collect());
    assert_eq!(wills, vec![Some(true), Some(false)]);
    let states = broker.states();
    assert!(!states.is_empty());
    assert!(
        states.iter().all(|(_, retain)| !retain),
        "state is never retained: {states:?}"
    );
    assert_eq!(sync_health(&agent)["limits"]["retain_available"], false);
}

#[test]
fn receive_maximum_10_bounds_the_messages_in_flight() {
    let broker = ScriptedBroker::start(Script {
        receive_maximum: Some(10),
        puback_delay: Some(Duration::from_millis(50)),
        ..Script::default()
    });
    let store = store_for(
        &broker,
        &format!("{FAST}batch_max_events = 5\ninflight_batches = 64\n"),
    );
    let ids = store.seed_outbox(1500);
    let agent = store.start();
    assert_delivered_exactly_once(&broker, &agent, &ids);
    let most = broker.record(|r| r.max_in_flight);
    assert!((9..=10).contains(&most), "in flight at most {most}");
    assert_eq!(sync_health(&agent)["limits"]["inflight_batches"], 9);
}

#[test]
fn an_event_larger_than_the_broker_packet_limit_is_dead_lettered_with_an_alarm_naming_the_limit() {
    let broker = ScriptedBroker::start(Script {
        maximum_packet_size: Some(256),
        ..Script::default()
    });
    let store = store_for(&broker, FAST);
    store.seed_outbox(5);
    let agent = store.start();
    wait_until("5 dead letters", Duration::from_secs(20), &agent, || {
        agent.health()["dead_letters"] == 5
    });
    let health = agent.health();
    let alarm = health["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["code"] == "uplink_too_large")
        .unwrap_or_else(|| panic!("{health:#}"))
        .clone();
    assert!(
        alarm["message"]
            .as_str()
            .unwrap()
            .contains("Maximum Packet Size 256 bytes"),
        "{alarm:#}"
    );
    assert!(agent.log_text().contains("event too large for the broker"));
    // Nothing over the limit was ever sent (the broker would have recorded a violation), so
    // nothing is retried either; the bare online state fits and went out.
    assert_eq!(broker.violations(), Vec::<String>::new());
    assert_eq!(
        broker.record(|r| r
            .publishes
            .iter()
            .filter(|p| p.topic.ends_with("/evt"))
            .count()),
        0
    );
    let states = broker.states();
    assert!(
        states
            .iter()
            .any(|(s, _)| s["online"] == true && s.get("birth").is_none())
    );
    assert_eq!(broker.connections(), 1);
}

#[test]
fn a_broker_that_stops_reading_is_noticed_by_the_write_timeout_and_delivery_resumes_when_it_reads()
{
    let broker = ScriptedBroker::start(Script {
        stop_reading_after: Some(64 * 1024),
        ..Script::default()
    });
    // A window far larger than the socket buffers, and a PUBACK timeout that cannot fire first.
    let store = store_for(
        &broker,
        "write_timeout = \"2s\"\npuback_timeout = \"60s\"\nreconnect_max = \"2s\"\n\
         batch_max_bytes = 1048576\ninflight_batches = 16\n",
    );
    let ids = store.seed_outbox(25_000);
    let agent = store.start();
    wait_until(
        "the stall reported",
        Duration::from_secs(30),
        &agent,
        || sync_health(&agent)["link"] == "stalled",
    );
    let sync = sync_health(&agent);
    assert_eq!(sync["connected"], false, "{sync:#}");
    assert!(
        sync["last_error"]
            .as_str()
            .unwrap()
            .contains("accepted no byte for 2 s"),
        "{sync:#}"
    );
    assert!(agent.log_text().contains("it stopped reading"));
    broker.set(|s| s.stop_reading_after = None);
    assert_delivered_exactly_once(&broker, &agent, &ids);
    assert_eq!(sync_health(&agent)["link"], "delivering");
}

#[test]
fn withheld_pubacks_close_the_link_after_the_puback_timeout_and_health_says_stalled_until_they_flow()
 {
    let broker = ScriptedBroker::start(Script {
        withhold_pubacks: true,
        ..Script::default()
    });
    let store = store_for(&broker, FAST);
    // A fixed API port, so the doctor finds the running agent where the config says it is.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let config = std::fs::read_to_string(&store.config).unwrap();
    std::fs::write(
        &store.config,
        config.replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    let ids = store.seed_outbox(200);
    let agent = store.start();
    wait_until(
        "the PUBACK timeout",
        Duration::from_secs(20),
        &agent,
        || {
            sync_health(&agent)["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("no PUBACK within 2 s"))
        },
    );
    let sync = sync_health(&agent);
    assert_ne!(sync["link"], "delivering", "{sync:#}");
    assert_eq!(sync["connected"], false);
    assert_eq!(sync["last_puback_age_s"], Value::Null, "never a PUBACK");
    assert!(agent.log_text().contains("acknowledges none"));
    // The agent closed the silent connection itself, with a reason.
    assert!(
        broker.record(|r| r
            .client_disconnects
            .iter()
            .any(|(_, code, _)| *code == 0x80)),
        "DISCONNECT 0x80 from the agent"
    );
    // The doctor proves it with its own QoS 1 probe, and relays what the running agent says.
    let acl = doctor_finding(&store, "acl");
    assert!(
        acl["detail"]
            .as_str()
            .unwrap()
            .contains("acknowledges none"),
        "{acl:#}"
    );
    let running = doctor_finding(&store, "agent");
    assert!(
        running["detail"]
            .as_str()
            .unwrap()
            .contains("no PUBACK within 2 s"),
        "{running:#}"
    );
    broker.set(|s| s.withhold_pubacks = false);
    assert_delivered_exactly_once(&broker, &agent, &ids);
    let sync = sync_health(&agent);
    assert_eq!(sync["connected"], true);
    assert!(sync["last_puback_age_s"].as_f64().unwrap() < 10.0);
}

/// A broker the agent cannot use: no hot reconnect loop (at most one connection per backoff
/// step), a precise reason in health, log and doctor; then the broker is fixed and every fact
/// arrives.
fn unusable_then_fixed(script: Script, reason: &str, fix: impl FnOnce(&mut Script)) {
    let broker = ScriptedBroker::start(script);
    let store = store_for(
        &broker,
        "puback_timeout = \"2s\"\nwrite_timeout = \"2s\"\nreconnect_max = \"4s\"\n",
    );
    let ids = store.seed_outbox(100);
    let agent = store.start();
    std::thread::sleep(Duration::from_secs(5));
    let connections = broker.connections();
    // Backoff 0.5, 1, 2, 4 s (jittered down to half): at most 6 attempts in 5 s; a reset
    // backoff made 10-20.
    assert!(
        (1..=6).contains(&connections),
        "{connections} connections in 5 s"
    );
    let sync = sync_health(&agent);
    assert_eq!(sync["connected"], false, "{sync:#}");
    assert_eq!(sync["link"], "refused", "{sync:#}");
    assert!(
        sync["last_error"].as_str().unwrap().contains(reason),
        "{sync:#}"
    );
    assert!(agent.log_text().contains(reason));
    let limits = doctor_finding(&store, "broker_limits");
    assert_eq!(limits["status"], "fail", "{limits:#}");
    assert!(
        limits["detail"].as_str().unwrap().contains(reason),
        "{limits:#}"
    );
    assert_eq!(depth(&agent), 100, "every fact still queued");
    broker.set(fix);
    assert_delivered_exactly_once(&broker, &agent, &ids);
}

#[test]
fn receive_maximum_0_is_reported_as_a_protocol_error_with_growing_backoff_until_the_broker_is_fixed()
 {
    unusable_then_fixed(
        Script {
            receive_maximum: Some(0),
            ..Script::default()
        },
        "Receive Maximum 0",
        |s| s.receive_maximum = Some(20),
    );
}

#[test]
fn a_broker_allowing_only_qos_0_gets_no_reconnect_loop_and_every_surface_says_why() {
    unusable_then_fixed(
        Script {
            maximum_qos: Some(0),
            ..Script::default()
        },
        "Maximum QoS 0",
        |s| s.maximum_qos = None,
    );
}

#[test]
fn sessions_that_end_before_any_puback_do_not_reset_the_backoff() {
    // The broker accepts, then at once says "server busy" in the short DISCONNECT form.
    let broker = ScriptedBroker::start(Script {
        disconnect_after_connack: Some(vec![0xE0, 0x01, 0x89]),
        ..Script::default()
    });
    let store = store_for(
        &broker,
        "puback_timeout = \"2s\"\nwrite_timeout = \"2s\"\nreconnect_max = \"4s\"\n",
    );
    let ids = store.seed_outbox(50);
    let agent = store.start();
    std::thread::sleep(Duration::from_secs(6));
    let times: Vec<Instant> = broker.record(|r| r.connects.iter().map(|c| c.at).collect());
    assert!(
        (2..=6).contains(&times.len()),
        "{} connections in 6 s",
        times.len()
    );
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.last().unwrap() >= &Duration::from_millis(900),
        "the delay grew: {gaps:?}"
    );
    assert!(
        sync_health(&agent)["last_error"]
            .as_str()
            .unwrap()
            .contains("0x89 Server busy")
    );
    broker.set(|s| s.disconnect_after_connack = None);
    assert_delivered_exactly_once(&broker, &agent, &ids);
}

#[test]
fn transient_refusals_are_retried_with_backoff_and_never_dead_lettered() {
    let broker = ScriptedBroker::start(Script {
        evt_reasons: vec![0x97, 0x89, 0x8B],
        ..Script::default()
    });
    let store = store_for(&broker, FAST);
    let ids = store.seed_outbox(50);
    let agent = store.start();
    assert_delivered_exactly_once(&broker, &agent, &ids);
    assert_eq!(agent.health()["dead_letters"], 0);
    let attempts: Vec<Instant> = broker.record(|r| {
        r.publishes
            .iter()
            .filter(|p| p.topic.ends_with("/evt"))
            .map(|p| p.at)
            .collect()
    });
    assert_eq!(attempts.len(), 4, "three refusals, then the success");
    assert!(
        attempts[1] - attempts[0] >= Duration::from_millis(400),
        "not resent at once: {attempts:?}"
    );
    assert_eq!(
        broker.connections(),
        1,
        "a refusal is not a reason to reconnect"
    );
    assert!(agent.log_text().contains("0x97 Quota exceeded"));
}

#[test]
fn a_permanent_refusal_parks_the_batch_and_the_state_republished_at_once_counts_it() {
    let broker = ScriptedBroker::start(Script {
        evt_reasons: vec![0x99],
        ..Script::default()
    });
    let store = store_for(&broker, FAST);
    store.seed_outbox(10);
    let agent = store.start();
    wait_until("10 dead letters", Duration::from_secs(20), &agent, || {
        agent.health()["dead_letters"] == 10
    });
    wait_until(
        "a state that counts them",
        Duration::from_secs(10),
        &agent,
        || {
            broker.states().last().is_some_and(|(s, _)| {
                s["birth"]["outbox"]["dead_letter_depth"] == 10
                    && s["birth"]["alarms"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|c| c == "uplink_refused"))
            })
        },
    );
    // Exactly two states: the birth and the one after the refusal (never one that lags).
    assert_eq!(broker.states().len(), 2, "{:?}", broker.states());
    assert!(agent.log_text().contains("0x99 Payload format invalid"));
}

#[test]
fn a_puback_0x95_splits_the_batch_until_it_fits_and_nothing_is_lost() {
    let broker = ScriptedBroker::start(Script {
        evt_too_large_over: Some(20_000),
        ..Script::default()
    });
    let store = store_for(&broker, FAST);
    let ids = store.seed_outbox(1000);
    let agent = store.start();
    assert_delivered_exactly_once(&broker, &agent, &ids);
    assert_eq!(agent.health()["dead_letters"], 0);
    assert_eq!(broker.connections(), 1);
    assert!(agent.log_text().contains("sending it again in halves"));
}

#[test]
fn server_keep_alive_0_switches_pings_off_without_a_reconnect_loop() {
    let broker = ScriptedBroker::start(Script {
        server_keep_alive: Some(0),
        ..Script::default()
    });
    let store = store_for(&broker, &format!("{FAST}keep_alive = \"5s\"\n"));
    let ids = store.seed_outbox(100);
    let agent = store.start();
    assert_delivered_exactly_once(&broker, &agent, &ids);
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(broker.record(|r| r.pings.len()), 0, "keep-alive is off");
    assert_eq!(broker.connections(), 1);
    assert_eq!(sync_health(&agent)["limits"]["keep_alive_s"], 0);
    assert_eq!(sync_health(&agent)["connected"], true);
}

#[test]
fn a_server_keep_alive_override_paces_the_pings_and_an_unanswered_one_ends_the_link_within_one_and_a_half()
 {
    let broker = ScriptedBroker::start(Script {
        server_keep_alive: Some(2),
        answer_pings: false,
        ..Script::default()
    });
    let store = store_for(&broker, &format!("{FAST}keep_alive = \"60s\"\n"));
    let ids = store.seed_outbox(20);
    let agent = store.start();
    wait_until(
        "the dead link noticed",
        Duration::from_secs(15),
        &agent,
        || broker.record(|r| !r.closed.is_empty()),
    );
    let (first_ping, closed, last_packet) = broker.record(|r| {
        let last = r
            .publishes
            .iter()
            .filter(|p| p.conn == 0)
            .map(|p| p.at)
            .max()
            .unwrap();
        (r.pings[0].1, r.closed[0].1, last)
    });
    // A ping 2 s (Server Keep Alive, not our 60 s) after the last packet, the link closed 1 s
    // (half the keep-alive) after the unanswered ping: 3 s, the documented 1.5 ×.
    let ping_after = first_ping - last_packet;
    assert!(
        ping_after >= Duration::from_millis(1800) && ping_after <= Duration::from_millis(2600),
        "{ping_after:?}"
    );
    let closed_after = closed - last_packet;
    assert!(
        // 3 s, plus the agent's 250 ms check interval and a loaded CI machine's scheduling.
        closed_after <= Duration::from_millis(4500),
        "dead link noticed after {closed_after:?}"
    );
    assert!(
        sync_health(&agent)["last_error"]
            .as_str()
            .unwrap()
            .contains("no answer to PINGREQ")
    );
    broker.set(|s| s.answer_pings = true);
    wait_until(
        "a link that stays up",
        Duration::from_secs(15),
        &agent,
        || sync_health(&agent)["connected"] == true,
    );
    let acked: HashSet<String> = broker.acked_event_ids().into_iter().collect();
    assert!(acked == ids);
}

#[test]
fn every_server_disconnect_form_ends_the_session_and_delivery_resumes() {
    let forms: Vec<(Vec<u8>, &str)> = vec![
        (vec![0xE0, 0x00], "0x00 Success"),
        (vec![0xE0, 0x01, 0x89], "0x89 Server busy"),
        (vec![0xE0, 0x02, 0x8B, 0x00], "0x8B Server shutting down"),
        (
            {
                let props = [&[0x1F, 0, 4][..], b"move", &[0x1C, 0, 7][..], b"b2:8883"].concat();
                let mut p = vec![0xE0, 0, 0x9C, props.len() as u8];
                p.extend_from_slice(&props);
                p[1] = (p.len() - 2) as u8;
                p
            },
            "0x9C Use another server (\"move\"), server reference \"b2:8883\"",
        ),
    ];
    let broker = ScriptedBroker::start(Script::default());
    let store = store_for(&broker, &format!("{FAST}batch_max_events = 10\n"));
    let mut ids = HashSet::new();
    let agent = {
        ids.extend(store.seed_outbox(5));
        store.start()
    };
    wait_until("the first facts", Duration::from_secs(20), &agent, || {
        depth(&agent) == 0
    });
    for (form, words) in forms {
        let before = broker.connections();
        broker.set(|s| s.disconnect_after_evt = Some((1, form.clone())));
        for i in 0..3 {
            let (status, body) = agent.post_movement(&json!({
                "sku": "SKU-1", "kind": "adjustment", "qty": 1,
                "client_key": format!("{words}-{i}")
            }));
            assert_eq!(status, 201, "{body}");
            ids.insert(body["id"].as_str().unwrap().to_owned());
        }
        wait_until(words, Duration::from_secs(20), &agent, || {
            agent.log_text().contains(words)
        });
        broker.set(|s| s.disconnect_after_evt = None);
        wait_until("a new session", Duration::from_secs(20), &agent, || {
            broker.connections() > before && depth(&agent) == 0
        });
    }
    assert_delivered_exactly_once(&broker, &agent, &ids);
}

#[test]
fn an_unexpected_puback_is_ignored_and_the_connection_stays_up() {
    let broker = ScriptedBroker::start(Script {
        unexpected_puback: true,
        ..Script::default()
    });
    let store = store_for(&broker, FAST);
    let ids = store.seed_outbox(300);
    let agent = store.start();
    assert_delivered_exactly_once(&broker, &agent, &ids);
    assert_eq!(broker.connections(), 1);
    assert!(agent.log_text().contains("not in flight"));
}

#[test]
fn a_clean_shutdown_publishes_the_offline_state_then_disconnects_with_0x00() {
    let broker = ScriptedBroker::start(Script::default());
    let store = store_for(&broker, FAST);
    let ids = store.seed_outbox(20);
    let agent = store.start();
    assert_delivered_exactly_once(&broker, &agent, &ids);
    let status = agent.terminate();
    assert!(status.success(), "{status:?}");
    let (last_state, disconnects) = broker.record(|r| {
        let state = r
            .publishes
            .iter()
            .rfind(|p| p.topic.ends_with("/state"))
            .map(|p| (p.payload.clone(), p.retain, p.at))
            .unwrap();
        (state, r.client_disconnects.clone())
    });
    let (payload, retain, at) = last_state;
    let state: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(state["online"], false);
    assert!(retain);
    assert_eq!(disconnects.len(), 1, "{disconnects:?}");
    let (_, reason, disconnected_at) = disconnects[0];
    assert_eq!(
        reason, 0x00,
        "normal disconnection: the broker drops the Will"
    );
    assert!(
        at <= disconnected_at,
        "the offline state goes before DISCONNECT"
    );
}

#[test]
fn the_batch_defaults_in_code_and_in_the_docs_agree() {
    let defaults = relais::config::Config::defaults().sync;
    let config_md = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config.md"),
    )
    .unwrap();
    for (key, value) in [
        ("sync.batch_max_events", defaults.batch_max_events),
        ("sync.batch_max_bytes", defaults.batch_max_bytes),
        ("sync.inflight_batches", defaults.inflight_batches),
    ] {
        let row = config_md
            .lines()
            .find(|l| l.starts_with(&format!("| `{key}` |")))
            .unwrap_or_else(|| panic!("no row for {key}"));
        assert!(
            row.contains(&format!("| `{value}` |")),
            "docs/config.md says {row:?}, the code {value}"
        );
    }
    let contract = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/contract.md"),
    )
    .unwrap();
    assert!(contract.contains(&format!(
        "`sync.batch_max_events` events (default {})",
        defaults.batch_max_events
    )));
}
