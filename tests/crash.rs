#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! Crash safety of the real agent: movements posted by concurrent clients while `relais run`
//! is SIGKILLed again and again. A 2xx means durable, and idempotent retries never count twice.

mod common;

use common::{Agent, Store, gtin14, product, stock};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: usize = 8;
const KILLS: usize = 5;
const BASELINE: i64 = 100_000;
const SKUS: [&str; 3] = ["CRASH-A", "CRASH-B", "CRASH-C"];

/// One movement a client must get recorded.
#[derive(Clone, Debug)]
struct Job {
    key: String,
    sku: &'static str,
}

/// What one client thread saw.
#[derive(Default)]
struct ClientLog {
    /// key → (status, seq, id) of the 2xx answer.
    acked: HashMap<String, (u16, u64, String)>,
    /// Keys whose request failed or was in flight at the kill: to retry at the next start.
    unanswered: Vec<Job>,
    /// Anything that is neither a 2xx nor a connection failure.
    unexpected: Vec<String>,
    next: usize,
}

struct Round {
    url: String,
    stop: Arc<AtomicBool>,
    acked_now: Arc<AtomicUsize>,
}

/// Run the clients against `agent` until `stop` is set (or, when `only_retries`, until every
/// unanswered key has been retried).
fn run_clients(
    round: &Round,
    logs: &[Arc<Mutex<ClientLog>>],
    only_retries: bool,
) -> Vec<std::thread::JoinHandle<()>> {
    logs.iter()
        .enumerate()
        .map(|(c, log)| {
            let log = Arc::clone(log);
            let url = round.url.clone();
            let stop = Arc::clone(&round.stop);
            let acked_now = Arc::clone(&round.acked_now);
            std::thread::spawn(move || {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .expect("client");
                let mut retries: Vec<Job> =
                    std::mem::take(&mut log.lock().expect("log").unanswered);
                retries.reverse();
                while !stop.load(Ordering::SeqCst) {
                    let job = match retries.pop() {
                        Some(job) => job,
                        None if only_retries => break,
                        None => {
                            let mut l = log.lock().expect("log");
                            let n = l.next;
                            l.next += 1;
                            Job {
                                key: format!("client-{c}/movement-{n}"),
                                sku: SKUS[(n + c) % SKUS.len()],
                            }
                        }
                    };
                    let body =
                        json!({"kind": "sale", "sku": job.sku, "qty": 1, "client_key": job.key});
                    let answer = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .and_then(|r| {
                            let status = r.status().as_u16();
                            r.text().map(|t| (status, t))
                        });
                    let mut l = log.lock().expect("log");
                    match answer {
                        Ok((status @ (200 | 201), text)) => {
                            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                            let seq = v["seq"].as_u64().unwrap_or(0);
                            let id = v["id"].as_str().unwrap_or_default().to_string();
                            if v["sku"] != job.sku || seq == 0 || v["durable"] != true {
                                l.unexpected
                                    .push(format!("{}: odd 2xx answer {text}", job.key));
                            }
                            l.acked.insert(job.key, (status, seq, id));
                            acked_now.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok((status, text)) => {
                            l.unexpected
                                .push(format!("{}: HTTP {status} {text}", job.key));
                            l.unanswered.push(job);
                        }
                        Err(_) => {
                            // Killed mid-request (or refused): unknown whether it was recorded.
                            l.unanswered.push(job);
                            l.unanswered.extend(retries.drain(..).rev());
                            break;
                        }
                    }
                }
                // Keys never attempted this round go back to the retry list.
                log.lock()
                    .expect("log")
                    .unanswered
                    .extend(retries.into_iter().rev());
            })
        })
        .collect()
}

fn wait_for(what: &str, agent: &Agent, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A store whose SKUs have a baseline stock of BASELINE; returns their GTINs.
fn crash_store() -> (Store, Vec<String>) {
    let store = Store::new();
    let gtins: Vec<String> = (0..SKUS.len() as u64)
        .map(|i| gtin14(8_000_000_000 + i))
        .collect();
    let products: Vec<Value> = SKUS
        .iter()
        .zip(&gtins)
        .map(|(sku, g)| product(g, sku, sku))
        .collect();
    store.import_ok("products", "products.ndjson", &products);
    let baseline: Vec<Value> = SKUS.iter().map(|sku| stock(sku, BASELINE)).collect();
    store.import_ok("stock", "stock.ndjson", &baseline);

    (store, gtins)
}

struct Audit {
    acked: usize,
    replays: usize,
    events: usize,
}

/// With the agent running after `starts` starts and every key answered: each acknowledged key is
/// in the outbox exactly once with the seq it was acknowledged with, seqs only grow (also across
/// boots), and stock on hand is the baseline minus one unit per recorded key.
fn audit(
    store: &Store,
    agent: &Agent,
    logs: &[Arc<Mutex<ClientLog>>],
    gtins: &[String],
    starts: u64,
) -> Audit {
    let mut acked: BTreeMap<String, (u16, u64, String)> = BTreeMap::new();
    let mut sent_per_sku: HashMap<&str, i64> = HashMap::new();
    for log in logs {
        let l = log.lock().expect("log");
        assert!(
            l.unexpected.is_empty(),
            "unexpected answers: {:#?}",
            l.unexpected
        );
        assert!(
            l.unanswered.is_empty(),
            "keys never answered after the last start: {:?}",
            l.unanswered
        );
        for (key, answer) in &l.acked {
            acked.insert(key.clone(), answer.clone());
        }
    }
    for key in acked.keys() {
        let n: usize = key
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("key number");
        let c: usize = key
            .strip_prefix("client-")
            .and_then(|r| r.split('/').next())
            .and_then(|c| c.parse().ok())
            .expect("client number");
        *sent_per_sku.entry(SKUS[(n + c) % SKUS.len()]).or_default() += 1;
    }

    assert_eq!(store.outbox_stats()["boot"], starts);

    // The outbox, as `relais outbox tail` shows it.
    let events = store.outbox_events();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut per_sku: HashMap<String, i64> = HashMap::new();
    let mut last: Option<(u64, u64)> = None;
    for e in &events {
        let seq = e["seq"].as_u64().expect("seq");
        let boot = e["boot"].as_u64().expect("boot");
        if let Some((prev_seq, prev_boot)) = last {
            assert!(
                seq > prev_seq,
                "seq {seq} after {prev_seq}: not unique and increasing"
            );
            assert!(
                boot >= prev_boot,
                "seq {seq} of boot {boot} follows seq {prev_seq} of boot {prev_boot}: a seq was reused across restarts"
            );
        }
        last = Some((seq, boot));
        assert!((1..=starts).contains(&boot), "{e}");
        assert_eq!(e["agent"], common::AGENT_ID);
        assert_eq!(e["type"], "stock.movement", "{e}");
        let key = e["payload"]["client_key"]
            .as_str()
            .expect("client_key")
            .to_string();
        let sku = e["payload"]["sku"].as_str().expect("sku").to_string();
        assert_eq!(e["payload"]["delta"], -1, "{e}");
        if let Some(first) = seen.insert(key.clone(), seq) {
            panic!("client key {key} is in the outbox twice: seq {first} and {seq}");
        }
        *per_sku.entry(sku).or_default() += 1;
    }
    for (key, (_, seq, _)) in &acked {
        match seen.get(key) {
            None => panic!("{key} was acknowledged (seq {seq}) but is not in the outbox"),
            Some(stored) => assert_eq!(
                stored, seq,
                "{key} was acknowledged with seq {seq} but stored as {stored}"
            ),
        }
    }
    assert_eq!(
        seen.len(),
        acked.len(),
        "the outbox holds keys nobody was told about"
    );

    // A replay after all those restarts still answers with the original seq and id.
    let (replayed_key, (_, replayed_seq, replayed_id)) = acked.iter().next().expect("an acked key");
    let sku = events
        .iter()
        .find(|e| e["payload"]["client_key"] == replayed_key.as_str())
        .map(|e| e["payload"]["sku"].clone())
        .expect("event");
    let (status, body) = agent
        .post_movement(&json!({"kind": "sale", "sku": sku, "qty": 1, "client_key": replayed_key}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["seq"], *replayed_seq);
    assert_eq!(body["id"], replayed_id.as_str());

    // Stock on hand = baseline − one unit per distinct recorded key.
    for (sku, gtin) in SKUS.iter().zip(gtins) {
        let (status, answer) = agent.get_json(&format!("/v1/products/{gtin}"));
        assert_eq!(status, 200, "{answer}");
        let expected = BASELINE - per_sku.get(*sku).copied().unwrap_or(0);
        assert_eq!(
            per_sku.get(*sku).copied().unwrap_or(0),
            sent_per_sku.get(sku).copied().unwrap_or(0),
            "{sku}: keys in the outbox vs keys acknowledged"
        );
        assert_eq!(answer["stock"]["on_hand"], expected, "{sku}: {answer}");
    }
    let distinct: HashSet<&String> = seen.keys().collect();
    assert_eq!(distinct.len(), events.len());
    let replays = acked
        .values()
        .filter(|(status, _, _)| *status == 200)
        .count();
    Audit {
        acked: acked.len(),
        replays,
        events: events.len(),
    }
}

#[test]
fn movements_acknowledged_before_repeated_sigkills_are_each_in_the_outbox_exactly_once_and_counted_once()
 {
    let (store, gtins) = crash_store();
    let logs: Vec<Arc<Mutex<ClientLog>>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let mut boots = Vec::new();
    let mut in_flight_at_kills = 0;

    for kill in 0..KILLS {
        let agent = store.start();
        boots.push(agent.health()["outbox"]["boot"].as_u64().expect("boot"));
        let round = Round {
            url: agent.url("/v1/movements"),
            stop: Arc::new(AtomicBool::new(false)),
            acked_now: Arc::new(AtomicUsize::new(0)),
        };
        let threads = run_clients(&round, &logs, false);
        // Let the stream run for a while (more each time), then pull the plug mid-stream.
        let target = 40 + 25 * kill;
        wait_for(
            "acknowledged movements",
            &agent,
            Duration::from_secs(30),
            || round.acked_now.load(Ordering::SeqCst) >= target,
        );
        agent.kill();
        round.stop.store(true, Ordering::SeqCst);
        for t in threads {
            t.join().expect("client thread");
        }
        in_flight_at_kills += logs
            .iter()
            .map(|l| l.lock().expect("log").unanswered.len())
            .sum::<usize>();
    }

    // Last start: every client retries what was never answered, then we audit.
    let agent = store.start();
    boots.push(agent.health()["outbox"]["boot"].as_u64().expect("boot"));
    let round = Round {
        url: agent.url("/v1/movements"),
        stop: Arc::new(AtomicBool::new(false)),
        acked_now: Arc::new(AtomicUsize::new(0)),
    };
    for t in run_clients(&round, &logs, true) {
        t.join().expect("client thread");
    }

    // Boot grew by one at each start.
    assert_eq!(
        boots,
        (1..=KILLS as u64 + 1).collect::<Vec<_>>(),
        "boot counters per start"
    );
    let result = audit(&store, &agent, &logs, &gtins, KILLS as u64 + 1);
    assert!(
        in_flight_at_kills > 0,
        "no request was ever in flight at a kill: the test proved nothing"
    );
    assert!(result.acked >= (0..KILLS).map(|k| 40 + 25 * k).sum::<usize>());
    eprintln!(
        "crash test: {} movements acknowledged, {in_flight_at_kills} unanswered at kills and retried \
         ({} of them had been recorded: answered 200 on retry), {} events",
        result.acked, result.replays, result.events
    );
}

#[test]
fn a_sigterm_under_concurrent_load_exits_0_and_every_acknowledged_movement_is_in_the_outbox_once() {
    let (store, gtins) = crash_store();
    let logs: Vec<Arc<Mutex<ClientLog>>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let agent = store.start();
    let round = Round {
        url: agent.url("/v1/movements"),
        stop: Arc::new(AtomicBool::new(false)),
        acked_now: Arc::new(AtomicUsize::new(0)),
    };
    let threads = run_clients(&round, &logs, false);
    wait_for(
        "acknowledged movements",
        &agent,
        Duration::from_secs(30),
        || round.acked_now.load(Ordering::SeqCst) >= 100,
    );
    let status = agent.terminate();
    round.stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("client thread");
    }
    assert!(
        status.success(),
        "SIGTERM under load did not give exit 0: {status}"
    );
    let wal = std::fs::metadata(store.data_dir.join("outbox.db-wal"))
        .map(|m| m.len())
        .ok();
    assert!(
        wal.is_none_or(|l| l == 0),
        "outbox.db-wal holds {wal:?} bytes after SIGTERM"
    );

    let agent = store.start();
    for t in run_clients(
        &Round {
            url: agent.url("/v1/movements"),
            stop: Arc::new(AtomicBool::new(false)),
            acked_now: Arc::new(AtomicUsize::new(0)),
        },
        &logs,
        true,
    ) {
        t.join().expect("client thread");
    }
    let result = audit(&store, &agent, &logs, &gtins, 2);
    assert!(result.acked >= 100);
}

/// Set by the test below for its child process: the outbox the child writes to.
const CHECKPOINT_CHILD_OUTBOX: &str = "RELAIS_TEST_CHECKPOINT_CHILD_OUTBOX";
/// Whose keys the child claims, and where (keys are scoped to both).
const CHECKPOINT_CHILD_CALLER: &str = "child";
const CHECKPOINT_CHILD_ROUTE: &str = "POST /v1/movements";

/// The child half of the checkpoint crash test (this same test binary, started as a process
/// so that it can be SIGKILLed): four threads append movements through the real writer with a
/// checkpoint after almost every group, and print each key once it is acknowledged.
#[test]
#[ignore = "started as a child process by acknowledged_appends_survive_sigkills_in_the_middle_of_checkpoints"]
fn checkpoint_crash_child() {
    use relais::outbox::writer::WriterSettings;
    use relais::outbox::{AppendRequest, IdempotencyClaim, MovementKind, OutboxWriter, StoreFact};
    use std::io::Write;
    let Some(path) = std::env::var_os(CHECKPOINT_CHILD_OUTBOX) else {
        return;
    };
    let boot = std::process::id();
    let settings = WriterSettings {
        group_commit_max: 64,
        telemetry_quota_rows: 1000,
        low_free_mb: 0,
        seq_floor: 0,
        // Eight pages: the writer checkpoints between nearly every two groups, so a kill
        // lands in the middle of one often.
        checkpoint_pages: 8,
        prune: Default::default(),
    };
    let (handle, _writer) =
        OutboxWriter::start(std::path::Path::new(&path), settings).expect("outbox");
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let handle = handle.clone();
            let out = Arc::clone(&out);
            std::thread::spawn(move || {
                for i in 0.. {
                    let key = format!("ck-{boot}-{t}-{i}");
                    let appended = handle
                        .append_blocking(
                            AppendRequest::fact(StoreFact::stock_movement(
                                MovementKind::Sale,
                                &format!("CK-{}", i % 500),
                                1,
                            ))
                            .with_key(IdempotencyClaim::new(
                                CHECKPOINT_CHILD_CALLER,
                                CHECKPOINT_CHILD_ROUTE,
                                &key,
                                [0; 32],
                            )),
                        )
                        .expect("append");
                    let mut out = out.lock().expect("stdout");
                    writeln!(out, "ACK {key} {}", appended.seq).expect("write");
                    out.flush().expect("flush");
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn acknowledged_appends_survive_sigkills_in_the_middle_of_checkpoints() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    for round in 0..4 {
        let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "checkpoint_crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHECKPOINT_CHILD_OUTBOX, &path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the child");
        let stdout = child.stdout.take().expect("child stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut record = |line: &str| {
            if let Some(rest) = line.strip_prefix("ACK ") {
                let (key, seq) = rest.split_once(' ').expect("ACK key seq");
                acked.insert(key.to_string(), seq.parse().expect("seq"));
            }
        };
        // Kill at a different point of the stream each round.
        let target = 300 + 170 * round;
        let mut seen = 0;
        for line in lines.by_ref() {
            let line = line.expect("child output");
            seen += usize::from(line.starts_with("ACK "));
            record(&line);
            if seen >= target {
                break;
            }
        }
        child.kill().expect("SIGKILL the child");
        let _ = child.wait();
        // Whatever the child printed before it died was acknowledged too.
        for line in lines.map_while(Result::ok) {
            record(&line);
        }
        assert!(seen >= target, "the child stopped early (round {round})");
    }
    // Checkpoints really ran: only they copy pages into the main database file.
    let main_len = std::fs::metadata(&path).expect("outbox.db").len();
    assert!(
        main_len > 64 * 1024,
        "outbox.db is {main_len} bytes: no checkpoint ran, the test proved nothing"
    );
    let conn = rusqlite::Connection::open(&path).expect("open the outbox");
    let mut find = conn
        .prepare(
            "SELECT i.seq, (SELECT COUNT(*) FROM events e WHERE e.seq = i.seq), \
                    (SELECT COUNT(*) FROM stock_movements m WHERE m.seq = i.seq) \
             FROM (SELECT client_key, seq FROM idempotency \
                   UNION ALL SELECT client_key, seq FROM unfiled_keys) i \
             WHERE i.client_key = ?1",
        )
        .expect("prepare");
    for (key, seq) in &acked {
        let scoped =
            relais::outbox::scoped_key(CHECKPOINT_CHILD_CALLER, CHECKPOINT_CHILD_ROUTE, key);
        let (stored, events, movements): (i64, i64, i64) = find
            .query_row([scoped], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap_or_else(|e| panic!("{key} was acknowledged (seq {seq}) but is lost: {e}"));
        assert_eq!(stored as u64, *seq, "{key}");
        assert_eq!((events, movements), (1, 1), "{key}: event and movement");
    }
    let (events, movements): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM events), (SELECT -SUM(delta) FROM stock_movements)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("counts");
    assert_eq!(events, movements, "every event has its movement");
    assert!(events as usize >= acked.len());
    eprintln!(
        "checkpoint crash test: {} appends acknowledged over 4 SIGKILLs, {events} events stored, \
         outbox.db {main_len} bytes",
        acked.len()
    );
}
