#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! SIGHUP reloads the configuration file through the same apply path as startup: what changed
//! takes effect without a restart, storage stays up, a broken file changes nothing.

mod common;

use common::{Store, status_code};
use reqwest::Method;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const OLD_TOKEN: &str = "old-till-token-0123456789abcdef";
const NEW_TOKEN: &str = "new-till-token-0123456789abcdef";

fn write_tokens(path: &std::path::Path, token: &str) {
    std::fs::write(path, format!("till-1 {token}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn hangup(agent: &common::Agent) {
    let pid = rustix::process::Pid::from_raw(agent.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
}

fn status_with(agent: &common::Agent, token: &str, path: &str) -> u16 {
    agent
        .http
        .request(Method::GET, agent.url(path))
        .bearer_auth(token)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn wait_for(agent: &common::Agent, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn with_api_lines(store: &Store, lines: &str) -> String {
    let original = std::fs::read_to_string(&store.config).unwrap();
    original.replace(
        "listen = \"127.0.0.1:0\"\n",
        &format!("listen = \"127.0.0.1:0\"\n{lines}"),
    )
}

#[test]
fn sighup_applies_a_rotated_token_and_new_limits_without_a_restart() {
    let store = Store::new();
    let tokens = store.path("api-tokens");
    write_tokens(&tokens, OLD_TOKEN);
    let config = with_api_lines(&store, &format!("token_file = \"{}\"\n", tokens.display()));
    std::fs::write(&store.config, &config).unwrap();
    let agent = store.start().with_token(OLD_TOKEN);
    let (status, sale) = agent.post_json(
        "/v1/movements",
        &json!({"kind": "receipt", "sku": "S-1", "qty": 5, "client_key": "before-reload"}),
    );
    assert_eq!(status, 201, "{sale}");
    let hash_before = agent.health()["config"]["hash"].clone();

    // Rotate the till's token and lower the burn cap, then SIGHUP.
    write_tokens(&tokens, NEW_TOKEN);
    std::fs::write(
        &store.config,
        format!("{config}\n[loyalty]\noffline_burn_cap = 7\n"),
    )
    .unwrap();
    hangup(&agent);
    wait_for(&agent, "the new token to be accepted", || {
        status_with(&agent, NEW_TOKEN, "/v1/health") == 200
    });
    assert_eq!(
        status_with(&agent, OLD_TOKEN, "/v1/health"),
        401,
        "the old token is gone"
    );
    let agent = agent.with_token(NEW_TOKEN);
    let health = agent.health();
    assert_ne!(health["config"]["hash"], hash_before, "{health}");
    // Storage was not restarted: the movement is still there, and the seq continues.
    let (status, next) = agent.post_json(
        "/v1/movements",
        &json!({"kind": "receipt", "sku": "S-1", "qty": 1, "client_key": "after-reload"}),
    );
    assert_eq!(status, 201, "{next}");
    assert_eq!(next["seq"].as_u64(), sale["seq"].as_u64().map(|s| s + 1));
    // The log is read from the agent's stderr by another thread: on a loaded machine the line
    // arrives a moment after the reload took effect.
    wait_for(&agent, "the reload to be logged", || {
        agent.log_text().contains("configuration reloaded")
    });
}

#[test]
fn sighup_with_a_broken_file_changes_nothing_and_says_why() {
    let store = Store::new();
    let tokens = store.path("api-tokens");
    write_tokens(&tokens, OLD_TOKEN);
    let config = with_api_lines(&store, &format!("token_file = \"{}\"\n", tokens.display()));
    std::fs::write(&store.config, &config).unwrap();
    let agent = store.start().with_token(OLD_TOKEN);
    let hash_before = agent.health()["config"]["hash"].clone();
    let broken = format!("{config}\n[loyalty]\noffline_burn_cap = -5\n");
    std::fs::write(&store.config, broken).unwrap();
    hangup(&agent);
    wait_for(&agent, "the refusal, naming the key, in the log", || {
        let log = agent.log_text();
        log.contains("configuration reload refused") && log.contains("loyalty.offline_burn_cap")
    });
    assert_eq!(agent.health()["config"]["hash"], hash_before);
    assert_eq!(status_with(&agent, OLD_TOKEN, "/v1/health"), 200);
}

#[test]
fn a_changed_listen_address_waits_for_the_next_restart() {
    let store = Store::new();
    let agent = store.start();
    let config = std::fs::read_to_string(&store.config)
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"");
    std::fs::write(&store.config, config).unwrap();
    hangup(&agent);
    wait_for(&agent, "the reload", || {
        agent.log_text().contains("configuration reloaded")
    });
    assert!(
        agent.log_text().contains("next restart"),
        "{}",
        agent.log_text()
    );
    let (status, _) = agent.get_json("/v1/health");
    assert_eq!(status, 200, "still serving on the address it started with");
    let out = store.relais(&["config", "validate", store.config.to_str().unwrap()]);
    assert_eq!(status_code(&out), 0);
}

#[test]
fn sighup_reloads_firmware_profiles_changed_on_disk_without_a_restart() {
    let store = Store::new();
    let profiles = store.path("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-profiles");
    std::fs::copy(
        source.join("serial-scanner-cr.toml"),
        profiles.join("serial-scanner-cr.toml"),
    )
    .unwrap();
    let config = std::fs::read_to_string(&store.config).unwrap();
    std::fs::write(
        &store.config,
        format!(
            "{config}\n[devices]\nprofiles_dir = \"{}\"\n",
            profiles.display()
        ),
    )
    .unwrap();
    let agent = store.start();
    assert!(agent.log_text().contains("count=1"), "{}", agent.log_text());
    std::fs::copy(
        source.join("pcsc-contactless-generic.toml"),
        profiles.join("pcsc-contactless-generic.toml"),
    )
    .unwrap();
    hangup(&agent);
    wait_for(&agent, "the profiles to be reloaded", || {
        let log = agent.log_text();
        log.contains("count=2") && log.contains("devices and firmware profiles")
    });
    let (status, _) = agent.get_json("/v1/health");
    assert_eq!(status, 200);
}

fn health_stream(agent: &common::Agent, stream: &str) -> serde_json::Value {
    agent.health()["replica"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stream"] == stream).cloned())
        .unwrap_or_else(|| panic!("no {stream} in health"))
}

#[test]
fn sighup_applies_a_new_per_stream_stale_after_to_health_without_a_restart() {
    let store = Store::new();
    store.import_ok("stock", "stock.ndjson", &[common::stock("SKU-1", 4)]);
    store.import_ok(
        "products",
        "products.ndjson",
        &[common::product(
            &common::gtin14(400638133393),
            "SKU-1",
            "Milk",
        )],
    );
    // Stock last changed 3 hours ago, the catalogue 3 days ago.
    {
        let conn = rusqlite::Connection::open(store.replica_db()).unwrap();
        conn.execute_batch(
            "UPDATE streams SET applied_ms = CAST(unixepoch('subsec') * 1000 AS INTEGER) - 10800000 WHERE name = 'stock';
             UPDATE streams SET applied_ms = CAST(unixepoch('subsec') * 1000 AS INTEGER) - 259200000 WHERE name = 'products';",
        )
        .unwrap();
    }
    let agent = store.start();
    // The defaults: stock 2h (stale after 3h), products 7d (fresh after 3 days).
    assert_eq!(health_stream(&agent, "stock")["stale"], true);
    assert_eq!(health_stream(&agent, "products")["stale"], false);

    let config = std::fs::read_to_string(&store.config).unwrap();
    std::fs::write(
        &store.config,
        config.replace(
            "[replica]\n",
            "[replica]\nstale_after = { stock = \"4h\", products = \"2d\" }\n",
        ),
    )
    .unwrap();
    hangup(&agent);
    wait_for(&agent, "stock within its new limit", || {
        health_stream(&agent, "stock")["stale"] == false
    });
    assert_eq!(
        health_stream(&agent, "products")["stale"],
        true,
        "3 days is past the catalogue's new 2 days"
    );
}
