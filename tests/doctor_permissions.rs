#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! `relais doctor` and `relais run` against files the service user cannot use: a root-owned
//! file inside a data directory that is the service user's, a root-owned lock, a config only
//! root may read. Run as root (the tests skip otherwise); `nobody` stands for the service user.

mod common;

use common::{Store, describe};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn finding<'a>(report: &'a Value, check: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("no {check} finding in {report:#}"))
}

/// As root: a store whose data directory (and everything in it) belongs to `nobody`, the
/// account that stands for the service user here.
fn give_to_nobody(path: &Path) {
    std::os::unix::fs::lchown(path, Some(65534), Some(65534)).unwrap();
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).unwrap() {
            give_to_nobody(&entry.unwrap().path());
        }
    }
}

#[test]
fn a_root_owned_outbox_inside_the_service_users_data_dir_fails_the_doctor_naming_it_until_chowned()
{
    if !rustix::process::geteuid().is_root() {
        println!("skipped: only root can leave a root-owned file in another user's directory");
        return;
    }
    let store = Store::new();
    store.import_ok(
        "products",
        "products.ndjson",
        &[common::product(
            &common::gtin14(400_638_133_393),
            "SKU-1",
            "Item",
        )],
    );
    // One run of the agent makes every file it keeps: outbox.db, the lock, the doctor key.
    let agent = store.start();
    agent.terminate();
    give_to_nobody(&store.data_dir);
    // What `sudo relais outbox …` run in the data directory leaves behind.
    std::os::unix::fs::chown(store.outbox_db(), Some(0), Some(0)).unwrap();
    std::fs::set_permissions(store.outbox_db(), std::fs::Permissions::from_mode(0o644)).unwrap();

    let doctor_as_nobody = || {
        let out = store.relais(&["doctor", "--json", "--user", "nobody"]);
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}", describe(&out)));
        (common::status_code(&out), report)
    };
    let (code, report) = doctor_as_nobody();
    assert_eq!(code, 2, "{report:#}");
    // The directory itself is the service user's: that check alone would pass.
    assert_eq!(finding(&report, "data_dir")["status"], "pass", "{report:#}");
    let files = finding(&report, "data_files");
    assert_eq!(files["status"], "fail", "{files:#}");
    let detail = files["detail"].as_str().unwrap();
    assert!(detail.contains("outbox.db (root:root 0644)"), "{files:#}");
    assert!(!detail.contains("replica.db"), "{files:#}");
    let fix = files["fix"].as_str().unwrap();
    assert!(
        fix.contains(&format!(
            "sudo chown -R nobody:nogroup {}",
            store.data_dir.display()
        )),
        "{files:#}"
    );
    // The human rendering does not end in "every check passed".
    let out = store.relais(&["doctor", "--user", "nobody"]);
    assert!(!common::stdout(&out).contains("every check passed"));

    give_to_nobody(&store.data_dir);
    let (_, report) = doctor_as_nobody();
    let files = finding(&report, "data_files");
    assert_eq!(files["status"], "pass", "{files:#}");
}

#[test]
fn the_agent_refused_its_lock_file_names_the_chown_that_fixes_it() {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: only root can leave a root-owned lock in another user's directory");
        return;
    }
    let store = Store::new();
    let agent = store.start();
    agent.terminate();
    std::fs::set_permissions(store.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    give_to_nobody(&store.data_dir);
    give_to_nobody(&store.key_file);
    let lock = store.data_dir.join("relais.lock");
    std::os::unix::fs::chown(&lock, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        common::BIN,
    ])
    .arg("--config")
    .arg(&store.config)
    .arg("run");
    let out = common::run(cmd);
    assert_ne!(common::status_code(&out), 0, "{}", describe(&out));
    let stderr = common::stderr(&out);
    assert!(stderr.contains("cannot create the lock file"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "sudo chown -R nobody:nogroup {}",
            store.data_dir.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_doctor_without_root_on_a_root_only_config_says_run_with_sudo() {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: only root can make a config another account cannot read");
        return;
    }
    let store = Store::new();
    std::fs::set_permissions(store.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&store.config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        common::BIN,
    ])
    .arg("--config")
    .arg(&store.config)
    .args(["doctor", "--json"]);
    let out = common::run(cmd);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}", describe(&out)));
    assert_eq!(common::status_code(&out), 2, "{report:#}");
    let config = finding(&report, "config");
    assert!(
        config["fix"].as_str().unwrap().contains("run with sudo"),
        "{config:#}"
    );
    assert!(
        !config["fix"].as_str().unwrap().contains("UTF-8"),
        "{config:#}"
    );
}

#[test]
fn a_card_key_only_root_may_read_fails_the_doctor_for_the_service_user() {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: only root can make a key another account cannot read");
        return;
    }
    let store = Store::new();
    std::fs::set_permissions(&store.key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = store.relais(&["doctor", "--json", "--user", "nobody"]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}", describe(&out)));
    assert_eq!(common::status_code(&out), 2, "{report:#}");
    let key = finding(&report, "card_key");
    assert_eq!(key["status"], "fail", "{key:#}");
    assert!(
        key["detail"]
            .as_str()
            .unwrap()
            .contains("cannot be read by the service user nobody"),
        "{key:#}"
    );
    // Given to the service user, it passes.
    std::os::unix::fs::chown(&store.key_file, Some(65534), Some(65534)).unwrap();
    let out = store.relais(&["doctor", "--json", "--user", "nobody"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(finding(&report, "card_key")["status"], "pass", "{report:#}");
}
