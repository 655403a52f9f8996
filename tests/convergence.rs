#![cfg(feature = "central")] // drives central's side: the default `central` feature
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! Convergence, proven by simulation (issue 15): three stores — one with two tills — and the web
//! trade against one ledger through the real agents, a real Mosquitto, two shared ingest
//! workers and `relaisctl ledger`, with faults: a store cut off for a long stretch (its own
//! "day"), a till SIGKILLed, the broker restarted, an ingest worker and the ledger killed. At the
//! end every agent's on-hand and available per SKU and balance per customer equal the ledger's,
//! and the ledger's equal an independent oracle (the sum of every operation that was accepted).
//!
//! `RELAIS_CONVERGENCE_SEED` and `RELAIS_CONVERGENCE_OPS` pick the run (CI: one short seed);
//! `scripts/soak-convergence.sh` runs many.

#[path = "common/broker.rs"]
mod broker;
#[path = "convergence/central.rs"]
mod central;
mod common;
#[path = "support/https.rs"]
mod https;
#[path = "convergence/sim.rs"]
mod sim;

#[test]
fn three_stores_and_the_web_converge_with_the_ledger_and_the_oracle_through_cuts_and_kills() {
    if !broker::available() {
        eprintln!("mosquitto is not installed (scripts/test.sh installs it); skipping");
        return;
    }
    let seed = std::env::var("RELAIS_CONVERGENCE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let ops = std::env::var("RELAIS_CONVERGENCE_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(240);
    let outcome = sim::run(seed, ops);
    println!("{}", outcome.summary());
    assert!(
        outcome.mismatches.is_empty(),
        "seed {seed}: {} mismatches after convergence:\n{}",
        outcome.mismatches.len(),
        outcome.mismatches.join("\n")
    );
}
