#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! The technician's laptop on the store LAN (docs/operations.md): the real agent listening on
//! every address with a read-only token beside a till's full one, and `relais logs` reading a
//! journal (a script standing in for journalctl through the documented `RELAIS_JOURNALCTL`)
//! with this box's secrets taken out.

mod common;

use common::{Agent, Store, gtin14, product, stock};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TILL_TOKEN: &str = "till-1-token-0123456789abcdefXYZ";
const LAPTOP_TOKEN: &str = "laptop-read-token-9876543210zyxwvu";
const SKU: &str = "SKU-TECH-1";

/// A store whose API listens on the LAN (every address) behind a token file with a till's
/// full token and a technician's read-only one.
fn lan_store() -> (Store, String) {
    let store = Store::new();
    store.protect_api(
        &format!(
            "# tills\ntill-1 {TILL_TOKEN}\n# the technician's laptop\nlaptop {LAPTOP_TOKEN} read\n"
        ),
        "0.0.0.0:0",
        "",
    );
    let gtin = gtin14(400_638_133_393);
    store.import_ok(
        "products",
        "products.ndjson",
        &[product(&gtin, SKU, "Technician item")],
    );
    store.import_ok("stock", "stock.ndjson", &[stock(SKU, 10)]);
    (store, gtin)
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.code in {body}"))
}

fn sales_recorded(store: &Store) -> usize {
    store
        .outbox_events()
        .iter()
        .filter(|e| e["type"] == "sale.recorded")
        .count()
}

#[test]
fn a_read_only_token_on_the_lan_reads_health_lookups_and_the_status_page_but_a_sale_with_it_is_refused_and_nothing_recorded()
 {
    let (store, gtin) = lan_store();
    let laptop = Agent::start(&store.config).with_token(LAPTOP_TOKEN);
    assert!(
        laptop.addr.starts_with("0.0.0.0:"),
        "the agent should listen on every address: {}",
        laptop.addr
    );
    let (status, health) = laptop.get_json("/v1/health");
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["outbox"]["store_fact"]["depth"], 0, "{health}");
    let (status, found) = laptop.get_json(&format!("/v1/products/{gtin}"));
    assert_eq!(status, 200, "{found}");
    let page = laptop
        .request(reqwest::Method::GET, "/status/")
        .send()
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().unwrap().contains("<html"));
    let metrics = laptop
        .request(reqwest::Method::GET, "/v1/metrics")
        .send()
        .unwrap();
    assert_eq!(metrics.status(), 200);

    let (status, body) = laptop.post_json(
        "/v1/sales",
        &json!({"client_key": "laptop-1", "lines": [{"sku": SKU, "qty": 1}]}),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_code(&body), "read_only_token");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("laptop") && message.contains("read-only"),
        "{message}"
    );
    let (status, body) = laptop.post_json("/v1/outbox/requeue", &json!({}));
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_code(&body), "read_only_token");
    let deleted = laptop
        .request(reqwest::Method::DELETE, "/v1/alarms/disk_low")
        .send()
        .unwrap();
    assert_eq!(deleted.status(), 403);

    assert_eq!(laptop.health()["outbox"]["store_fact"]["depth"], 0);
    assert_eq!(sales_recorded(&store), 0);
}

#[test]
fn a_tills_full_token_still_records_a_sale_beside_a_read_only_one() {
    let (store, _gtin) = lan_store();
    let till = Agent::start(&store.config).with_token(TILL_TOKEN);
    let (status, body) = till.post_json(
        "/v1/sales",
        &json!({"client_key": "till-1/r-1", "lines": [{"sku": SKU, "qty": 1}]}),
    );
    assert_eq!(status, 201, "{body}");
    let events = store.outbox_events();
    let sale = events
        .iter()
        .find(|e| e["type"] == "sale.recorded")
        .unwrap_or_else(|| panic!("no sale recorded: {events:?}"));
    assert_eq!(sale["payload"]["by"], "till-1");
}

#[test]
fn a_token_line_with_an_unknown_role_stops_the_agent_with_78_naming_the_line() {
    let (store, _gtin) = lan_store();
    std::fs::write(
        store.path("api-tokens"),
        format!("till-1 {TILL_TOKEN}\nlaptop {LAPTOP_TOKEN} readonly\n"),
    )
    .unwrap();
    let out = store.relais(&["run"]);
    assert_eq!(common::status_code(&out), 78, "{}", common::describe(&out));
    let stderr = common::stderr(&out);
    assert!(
        stderr.contains("line 2") && stderr.contains("\"readonly\" is not a role"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(LAPTOP_TOKEN),
        "a token was printed: {stderr}"
    );
}

// ---- relais logs -------------------------------------------------------------------------

/// A stand-in for journalctl: records its arguments, then prints `journal` (the file's lines)
/// — after waiting for `gate` to exist before the last line when one is given.
fn fake_journalctl(dir: &Path, journal: &str, gate: Option<&Path>) -> (PathBuf, PathBuf) {
    let args = dir.join("journalctl.args");
    let lines = dir.join("journal.txt");
    std::fs::write(&lines, journal).unwrap();
    let wait = match gate {
        Some(gate) => format!(
            "head -n -1 '{lines}'\nwhile [ ! -e '{gate}' ]; do sleep 0.05; done\ntail -n 1 '{lines}'\n",
            lines = lines.display(),
            gate = gate.display()
        ),
        None => format!("cat '{}'\n", lines.display()),
    };
    let script = dir.join("journalctl");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\n{wait}",
            args.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, args)
}

fn logs(store: &Store, journalctl: &Path, extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(common::BIN);
    cmd.arg("--config")
        .arg(&store.config)
        .arg("logs")
        .args(extra)
        .env("RELAIS_JOURNALCTL", journalctl);
    common::run(cmd)
}

const PRIVATE_KEY_BODY: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg";

fn journal() -> String {
    [
        "2025-03-01T09:12:40.001Z  INFO relais: config loaded config=/etc/relais/relais.toml token_file=/etc/relais/api-tokens",
        "2025-03-01T09:12:41.220Z  INFO relais::agent: listening on 0.0.0.0:8080",
        &format!(
            "2025-03-01T09:12:44.120Z  WARN relais::api: slow request path=/v1/sales authorization=\"Bearer {TILL_TOKEN}\" ms=812"
        ),
        &format!("proxy: GET /status/#token={LAPTOP_TOKEN} 200"),
        "2025-03-01T09:14:00.000Z ERROR relais::sync::snapshot: download failed url=https://ops:s3cr3t-pw@central.example.com/snapshots/manifest.json",
        "relais: configuration error: the key file holds",
        "-----BEGIN PRIVATE KEY-----",
        PRIVATE_KEY_BODY,
        "-----END PRIVATE KEY-----",
        "2025-03-01T09:16:00.000Z  INFO relais::sync: connected broker=mqtts://broker.example.com:8883",
        "",
    ]
    .join("\n")
}

#[test]
fn relais_logs_shows_the_journal_with_the_boxs_tokens_bearer_headers_url_passwords_and_private_keys_hidden()
 {
    let (store, _gtin) = lan_store();
    let (script, args) = fake_journalctl(store.tmp.path(), &journal(), None);
    let out = logs(
        &store,
        &script,
        &["--since", "1 hour ago", "-n", "50", "-p", "warning"],
    );
    assert_eq!(common::status_code(&out), 0, "{}", common::describe(&out));
    let text = common::stdout(&out);
    for secret in [TILL_TOKEN, LAPTOP_TOKEN, "s3cr3t-pw", PRIVATE_KEY_BODY] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
    assert!(text.contains("authorization=\"Bearer [REDACTED"), "{text}");
    assert!(text.contains("#token=[REDACTED laptop]"), "{text}");
    assert!(
        text.contains("https://ops:[REDACTED]@central.example.com/"),
        "{text}"
    );
    assert!(text.contains("[REDACTED PRIVATE KEY]"), "{text}");
    // Ordinary lines pass untouched, the token file's path included.
    assert!(text.contains("token_file=/etc/relais/api-tokens"), "{text}");
    assert!(
        text.contains("connected broker=mqtts://broker.example.com:8883"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 8, "{text}");
    let args = std::fs::read_to_string(args).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(
        args,
        [
            "--unit=relais",
            "--output=cat",
            "--no-pager",
            "--since=1 hour ago",
            "--priority=warning",
            "--lines=50"
        ]
    );
}

#[test]
fn relais_logs_follow_prints_each_entry_as_it_comes_already_redacted() {
    let (store, _gtin) = lan_store();
    let gate = store.path("second-entry");
    let journal = format!(
        "2025-03-01T09:20:00Z  INFO relais: first\n2025-03-01T09:20:05Z  WARN relais::api: later authorization=\"Bearer {TILL_TOKEN}\"\n"
    );
    let (script, _) = fake_journalctl(store.tmp.path(), &journal, Some(&gate));
    let child = Command::new(common::BIN)
        .arg("--config")
        .arg(&store.config)
        .args(["logs", "--follow"])
        .env("RELAIS_JOURNALCTL", &script)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = common::KillOnDrop(child);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    // The first entry arrives while journalctl is still running: nothing is held back.
    let first = lines.next().unwrap().unwrap();
    assert!(first.ends_with("relais: first"), "{first}");
    std::fs::write(&gate, b"").unwrap();
    let second = lines.next().unwrap().unwrap();
    assert!(
        second.contains("Bearer [REDACTED") && !second.contains(TILL_TOKEN),
        "{second}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "relais logs did not end with journalctl"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn relais_logs_without_journalctl_says_there_is_no_journal_and_where_the_logs_go() {
    let (store, _gtin) = lan_store();
    let out = logs(&store, &store.path("no-such-journalctl"), &[]);
    assert_eq!(common::status_code(&out), 1, "{}", common::describe(&out));
    let stderr = common::stderr(&out);
    assert!(
        stderr.contains("no systemd journal") && stderr.contains("relais run"),
        "{stderr}"
    );
}

#[test]
fn relais_logs_of_a_unit_with_no_entries_says_so_and_why() {
    let (store, _gtin) = lan_store();
    let (script, _) = fake_journalctl(store.tmp.path(), "-- No entries --\n", None);
    let out = logs(&store, &script, &["--since", "today"]);
    assert_eq!(common::status_code(&out), 0, "{}", common::describe(&out));
    assert_eq!(common::stdout(&out), "");
    let stderr = common::stderr(&out);
    assert!(
        stderr.contains("no journal entries for unit \"relais\" matching these filters")
            && stderr.contains("systemctl status relais")
            && stderr.contains("systemd-journal group"),
        "{stderr}"
    );
}
