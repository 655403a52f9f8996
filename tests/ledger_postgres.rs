#![cfg(feature = "central")] // drives central's side: the default `central` feature
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! The ledger on a real PostgreSQL (ADR 0029), through the real `relaisctl`: several ledger
//! processes working on one database at once take turns (an advisory lock per transaction), so
//! each of central's operations is applied exactly once and none of them fails.

#[path = "common/postgres.rs"]
mod postgres;

use postgres::Postgres;
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};

const RELAISCTL: &str = env!("CARGO_BIN_EXE_relaisctl");

fn write_lines(path: &std::path::Path, lines: &[Value]) {
    let mut file = std::fs::File::create(path).unwrap();
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
}

fn relaisctl(args: &[&str]) -> Value {
    let out = Command::new(RELAISCTL).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "relaisctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

#[test]
fn four_ledger_processes_feeding_the_same_web_file_at_once_apply_each_operation_once() {
    if !postgres::available() {
        eprintln!("PostgreSQL is not installed (scripts/test.sh installs it); skipping");
        return;
    }
    let pg = Postgres::start();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let customers = dir.path().join("customers.ndjson");
    write_lines(
        &customers,
        &[
            json!({"customer_id": "C-1", "display_name": "Ada", "loyalty_balance": 100, "card_tokens": []}),
            json!({"customer_id": "C-2", "display_name": "Grace", "loyalty_balance": 0, "card_tokens": []}),
        ],
    );
    let stock = dir.path().join("stock.ndjson");
    write_lines(&stock, &[json!({"sku": "SKU-TEA", "on_hand": 10})]);
    relaisctl(&[
        "ledger",
        "seed",
        "--sink",
        &url,
        "--stock",
        &format!("S1={}", stock.display()),
        "--customers",
        customers.to_str().unwrap(),
    ]);

    // 300 operations: web earns for two customers and warehouse receipts, fed by four processes
    // at the same moment.
    let mut ops = Vec::new();
    for i in 0..100 {
        ops.push(json!({"type": "loyalty", "op_id": format!("earn-{i}"), "customer_id": "C-1", "points": 3}));
        ops.push(json!({"type": "receipt", "op_id": format!("rcpt-{i}"), "store": "S1", "sku": "SKU-TEA", "qty": 2}));
        ops.push(json!({"type": "loyalty", "op_id": format!("earn2-{i}"), "customer_id": "C-2", "points": 1}));
    }
    let file = dir.path().join("web.ndjson");
    write_lines(&file, &ops);
    let file = file.to_str().unwrap().to_owned();
    let feeders: Vec<_> = (0..4)
        .map(|_| {
            Command::new(RELAISCTL)
                .args(["ledger", "web", "--json", "--sink", &url, &file])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut applied = 0;
    let mut already = 0;
    for feeder in feeders {
        let out = feeder.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a ledger feeding at the same time failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["refused"], json!([]), "{report}");
        applied += report["applied"].as_u64().unwrap();
        already += report["already_applied"].as_u64().unwrap();
    }
    assert_eq!(
        applied, 300,
        "every operation applied by exactly one of them"
    );
    assert_eq!(already, 3 * 300, "and found applied by the three others");

    let figures = relaisctl(&["ledger", "show", "--json", "--sink", &url]);
    assert_eq!(
        figures["balances"],
        json!([["C-1", 100 + 3 * 100], ["C-2", 100]]),
        "{figures}"
    );
    assert_eq!(
        figures["stock"],
        json!([["S1", "SKU-TEA", 10 + 2 * 100]]),
        "{figures}"
    );
    assert_eq!(
        pg.psql("SELECT COUNT(*) FROM ledger_web_ops WHERE refused IS NULL"),
        "300"
    );
}
