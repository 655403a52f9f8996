#![cfg(feature = "central")] // drives central's side: the default `central` feature
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! Convergence, proven by simulation (issue 15): three stores — one with two tills — and the web
//! trade against one ledger through the real agents, a real Mosquitto, two shared ingest
//! workers and `relaisctl ledger`, with faults: a store cut off for a long stretch (its own
//! "day"), a till SIGKILLed, the broker restarted, an ingest worker and the ledger killed, and
//! on PostgreSQL the database crashed and recovered. At the end every agent's on-hand and
//! available per SKU and balance per customer equal the ledger's, and the ledger's equal an
//! independent oracle (the sum of every operation that was accepted).
//!
//! Central's database is PostgreSQL (a chain's) in one test and a SQLite file (a lab's) in the
//! other. `RELAIS_CONVERGENCE_SEED` and `RELAIS_CONVERGENCE_OPS` pick the run (CI: one short
//! seed each); `scripts/soak-convergence.sh` runs many.

#[path = "common/broker.rs"]
mod broker;
#[path = "convergence/central.rs"]
mod central;
mod common;
#[path = "support/https.rs"]
mod https;
#[path = "common/postgres.rs"]
mod postgres;
#[path = "convergence/sim.rs"]
mod sim;

use central::Engine;

fn seed_and_ops(default_ops: usize) -> (u64, usize) {
    let seed = std::env::var("RELAIS_CONVERGENCE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let ops = std::env::var("RELAIS_CONVERGENCE_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_ops);
    (seed, ops)
}

/// One simulation at a time: each runs eight agents and central on this machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn converge(engine: Engine, default_ops: usize) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (seed, ops) = seed_and_ops(default_ops);
    let outcome = sim::run(seed, ops, engine);
    println!("{}", outcome.summary());
    // Also where a passing run's output is kept (cargo shows a passing test's stdout only with
    // --nocapture): scripts/test.sh prints these lines after the suite.
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("convergence-{engine:?}.txt")),
        format!("{}\n", outcome.summary()),
    );
    assert!(
        outcome.mismatches.is_empty(),
        "{engine:?}, seed {seed}: {} mismatches after convergence:\n{}",
        outcome.mismatches.len(),
        outcome.mismatches.join("\n")
    );
}

#[test]
fn three_stores_and_the_web_converge_with_a_ledger_on_postgresql_through_cuts_and_kills_and_a_database_crash()
 {
    if !broker::available() || !postgres::available() {
        eprintln!(
            "mosquitto or postgresql is not installed (scripts/test.sh installs both); skipping"
        );
        return;
    }
    converge(Engine::Postgres, 240);
}

#[test]
fn three_stores_and_the_web_converge_with_a_ledger_on_a_sqlite_file_through_cuts_and_kills() {
    if !broker::available() {
        eprintln!("mosquitto is not installed (scripts/test.sh installs it); skipping");
        return;
    }
    converge(Engine::Sqlite, 160);
}
