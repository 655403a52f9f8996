#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! `relais replica import`: a bad snapshot is refused with a message that says where and why,
//! and whatever happens to an import, the replica that was live before stays live.

mod common;

use common::{KillOnDrop, Store, describe, gtin14, product, stderr, write_ndjson};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::Duration;

const OLD_GTIN: &str = "00000096385074"; // EAN-8 96385074
const OLD_ONLY_GTIN: &str = "00036000291452"; // UPC-A 036000291452

/// A store whose products stream holds version 1 with two products.
fn store_with_old_products() -> Store {
    let store = Store::new();
    store.import_ok(
        "products",
        "old.ndjson",
        &[
            product(OLD_GTIN, "SKU-1", "Old name"),
            product(OLD_ONLY_GTIN, "SKU-2", "Only in the old snapshot"),
        ],
    );
    store
}

fn products_version(store: &Store) -> u64 {
    let out = store.relais(&["replica", "status", "--json"]);
    common::assert_success(&out, "replica status");
    let status = common::parse_json_stdout(&out);
    status["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stream"] == "products"))
        .and_then(|s| s["version"].as_u64())
        .unwrap_or_else(|| panic!("no products version in {status}"))
}

fn found_name(store: &Store, code: &str) -> Option<String> {
    let (status, answer) = store.lookup_barcode(code);
    match answer["outcome"].as_str() {
        Some("found") => Some(answer["name"].as_str().unwrap_or_default().to_string()),
        Some("not_found") => {
            assert_eq!(status, 4, "{answer}");
            None
        }
        _ => panic!("unexpected lookup answer (exit {status}): {answer}"),
    }
}

/// The version-1 replica is still the live one.
fn assert_old_replica_intact(store: &Store) {
    assert_eq!(found_name(store, OLD_GTIN).as_deref(), Some("Old name"));
    assert_eq!(
        found_name(store, OLD_ONLY_GTIN).as_deref(),
        Some("Only in the old snapshot")
    );
    assert_eq!(products_version(store), 1);
}

fn assert_refused(out: &std::process::Output, needles: &[&str]) {
    assert!(
        !out.status.success(),
        "the import was accepted: {}",
        describe(out)
    );
    let err = stderr(out);
    for needle in needles {
        assert!(
            err.contains(needle),
            "stderr does not contain {needle:?}:\n{err}"
        );
    }
}

fn new_products(n: u64) -> Vec<Value> {
    (0..n)
        .map(|i| {
            product(
                &gtin14(5_000_000_000 + i),
                &format!("NEW-{i}"),
                &format!("New {i}"),
            )
        })
        .collect()
}

#[test]
fn a_malformed_line_is_refused_naming_its_line_number_and_the_old_replica_stays() {
    let store = store_with_old_products();
    let path = store.path("malformed.ndjson");
    let good = |i: u64| product(&gtin14(5_000_000_000 + i), "S", "N").to_string();
    let text = format!(
        "{}\n{}\n{{\"gtin\": \"0000009638507\n{}\n",
        good(1),
        good(2),
        good(3)
    );
    std::fs::write(&path, text).expect("write");
    let out = store.import_file("products", &path, None);
    assert_refused(&out, &["line 3", "malformed.ndjson"]);
    assert_old_replica_intact(&store);
}

#[test]
fn a_line_with_an_unknown_field_is_refused_naming_the_line_and_the_field() {
    let store = store_with_old_products();
    let mut lines = new_products(3);
    lines[1]["colour"] = json!("red");
    let out = store.import("products", "unknown-field.ndjson", &lines, None);
    assert_refused(&out, &["line 2", "colour"]);
    assert_old_replica_intact(&store);
}

#[test]
fn a_truncated_gzip_snapshot_is_refused_and_the_old_replica_stays() {
    let store = store_with_old_products();
    let mut text = String::new();
    for line in new_products(5000) {
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let gz = common::gzip(text.as_bytes());
    let path = store.path("cut.ndjson.gz");
    std::fs::write(&path, &gz[..gz.len() / 2]).expect("write");
    let out = store.import_file("products", &path, None);
    assert_refused(&out, &["gzip", "cut.ndjson.gz"]);
    assert_old_replica_intact(&store);
    // None of the rows before the cut leaked into the live table either.
    assert_eq!(found_name(&store, &gtin14(5_000_000_000)), None);
}

#[test]
fn a_duplicate_key_is_refused_naming_the_line_of_the_second_occurrence() {
    let store = store_with_old_products();
    let mut lines = new_products(6);
    lines[4]["gtin"] = lines[1]["gtin"].clone();
    let out = store.import("products", "dup.ndjson", &lines, None);
    assert_refused(&out, &["line 5", "duplicate"]);
    assert_old_replica_intact(&store);
}

#[test]
fn a_gtin_with_a_wrong_check_digit_is_refused_naming_the_line_and_the_check_digit() {
    let store = store_with_old_products();
    let mut lines = new_products(4);
    // 96385074 is valid; 96385071 has check digit 1 where 4 is expected.
    lines[1]["gtin"] = json!("96385071");
    let out = store.import("products", "check.ndjson", &lines, None);
    assert_refused(&out, &["line 2", "check digit is 1", "give 4"]);
    assert_old_replica_intact(&store);
}

#[test]
fn an_empty_snapshot_is_refused_and_the_old_replica_stays() {
    let store = store_with_old_products();
    let path = store.path("empty.ndjson");
    std::fs::write(&path, "").expect("write");
    assert_refused(&store.import_file("products", &path, None), &["no records"]);
    std::fs::write(&path, "\n  \n\n").expect("write");
    assert_refused(&store.import_file("products", &path, None), &["no records"]);
    assert_old_replica_intact(&store);
}

#[test]
fn a_snapshot_older_than_the_live_version_is_refused_and_the_old_replica_stays() {
    let store = Store::new();
    let out = store.import(
        "products",
        "v5.ndjson",
        &[product(OLD_GTIN, "SKU-1", "Version five")],
        Some(5),
    );
    common::assert_success(&out, "import v5");
    assert_eq!(products_version(&store), 5);
    let out = store.import("products", "v3.ndjson", &new_products(2), Some(3));
    assert_refused(&out, &["version 3", "(5)"]);
    assert_eq!(products_version(&store), 5);
    assert_eq!(
        found_name(&store, OLD_GTIN).as_deref(),
        Some("Version five")
    );
    assert_eq!(found_name(&store, &gtin14(5_000_000_000)), None);
    // The same version again is allowed (a re-sent snapshot).
    let out = store.import("products", "v5b.ndjson", &new_products(2), Some(5));
    common::assert_success(&out, "re-import of v5");
}

#[test]
fn a_gzip_snapshot_imports_like_a_plain_one() {
    let store = Store::new();
    let mut text = String::new();
    for line in new_products(1000) {
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let path = store.path("products.ndjson.gz");
    std::fs::write(&path, common::gzip(text.as_bytes())).expect("write");
    let out = store.relais(&[
        "replica",
        "import",
        "--stream",
        "products",
        path.to_str().expect("utf-8"),
        "--json",
    ]);
    common::assert_success(&out, "gzip import");
    let report = common::parse_json_stdout(&out);
    assert_eq!(report["rows"], 1000, "{report}");
    assert_eq!(report["version"], 1, "{report}");
    assert_eq!(
        found_name(&store, &gtin14(5_000_000_999)).as_deref(),
        Some("New 999")
    );
}

#[test]
fn a_reimport_replaces_the_rows_and_a_product_absent_from_the_new_snapshot_is_gone() {
    let store = store_with_old_products();
    let out = store.import(
        "products",
        "v2.ndjson",
        &[
            product(OLD_GTIN, "SKU-1", "New name"),
            product(&gtin14(5_000_000_000), "SKU-3", "Brand new"),
        ],
        None,
    );
    common::assert_success(&out, "reimport");
    assert_eq!(products_version(&store), 2);
    assert_eq!(found_name(&store, OLD_GTIN).as_deref(), Some("New name"));
    assert_eq!(
        found_name(&store, OLD_ONLY_GTIN),
        None,
        "a removed product is still there"
    );
    assert_eq!(
        found_name(&store, &gtin14(5_000_000_000)).as_deref(),
        Some("Brand new")
    );
    // A third import still works (index names of the swapped tables do not collide).
    let out = store.import("products", "v3.ndjson", &new_products(3), None);
    common::assert_success(&out, "third import");
    assert_eq!(found_name(&store, OLD_GTIN), None);
}

#[test]
fn an_import_killed_halfway_leaves_the_old_replica_live_and_the_next_import_succeeds() {
    let store = store_with_old_products();
    let big = store.path("big.ndjson");
    write_ndjson(&big, &new_products(300_000));
    let child = Command::new(common::BIN)
        .arg("--config")
        .arg(&store.config)
        .args(["replica", "import", "--stream", "products"])
        .arg(&big)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn import");
    let mut child = KillOnDrop(child);
    // The moment of the kill is the point of the test: this is a delay, not a wait.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.0.try_wait().expect("try_wait").is_none(),
        "the import finished within 200 ms: the file is too small to kill it halfway"
    );
    child.0.kill().expect("SIGKILL");
    let status = child.0.wait().expect("wait");
    assert!(!status.success());
    drop(child);

    assert_old_replica_intact(&store);
    assert_eq!(found_name(&store, &gtin14(5_000_000_000)), None);

    let out = store.import("products", "after-kill.ndjson", &new_products(10), None);
    common::assert_success(&out, "import after the killed one");
    assert_eq!(products_version(&store), 2);
    assert_eq!(
        found_name(&store, &gtin14(5_000_000_009)).as_deref(),
        Some("New 9")
    );
    assert_eq!(found_name(&store, OLD_GTIN), None);
}

#[test]
fn an_older_snapshot_imported_while_a_newer_one_is_running_is_refused_and_the_newer_one_wins() {
    let store = store_with_old_products();
    let newer = store.path("v10.ndjson");
    write_ndjson(&newer, &new_products(150_000));
    let older = store.path("v5.ndjson");
    write_ndjson(
        &older,
        &[product(OLD_GTIN, "SKU-1", "From the older snapshot")],
    );
    let spawn = |path: &std::path::Path, version: &str| {
        let log =
            std::fs::File::create(store.path(&format!("import-v{version}.log"))).expect("log");
        KillOnDrop(
            Command::new(common::BIN)
                .arg("--config")
                .arg(&store.config)
                .args([
                    "replica",
                    "import",
                    "--stream",
                    "products",
                    "--version",
                    version,
                ])
                .arg(path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn import"),
        )
    };
    let mut big = spawn(&newer, "10");
    // Let the big import get going (a delay by design: the race needs it to be in progress).
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        big.0.try_wait().expect("try_wait").is_none(),
        "the v10 import already finished"
    );
    let mut small = spawn(&older, "5");
    let small_status = small.0.wait().expect("v5 import");
    let big_status = big.0.wait().expect("v10 import");
    assert!(big_status.success(), "the v10 import failed");
    let small_log = std::fs::read_to_string(store.path("import-v5.log")).unwrap_or_default();
    assert!(
        !small_status.success(),
        "the v5 import was accepted while v10 was being imported; now live: products version {}\n{small_log}",
        products_version(&store)
    );
    assert_eq!(products_version(&store), 10);
    assert_eq!(found_name(&store, OLD_GTIN), None);
}

#[test]
fn a_card_token_given_to_two_customers_is_refused_naming_both_lines() {
    let store = Store::new();
    let token = "00112233445566778899aabbccddeeff";
    let customer = |id: &str, tokens: &[&str]| json!({"customer_id": id, "display_name": "A. Customer", "loyalty_balance": 10, "card_tokens": tokens});
    let lines = vec![
        customer("C1", &["ffeeddccbbaa99887766554433221100"]),
        customer("C2", &[token]),
        customer("C3", &[]),
        customer("C4", &[token]),
    ];
    let path = store.path("customers.ndjson");
    write_ndjson(&path, &lines);
    let out = store.import_file("customers", &path, None);
    assert_refused(&out, &["line 4", "line 2", "duplicate"]);
    // Distinct tokens import fine, and each finds its customer.
    let good = vec![
        customer("C1", &[token]),
        customer("C2", &["ffeeddccbbaa99887766554433221100"]),
    ];
    write_ndjson(&path, &good);
    let out = store.import_file("customers", &path, None);
    assert!(out.status.success(), "{}", describe(&out));
}
