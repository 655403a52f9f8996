//! `delta_apply`: replica delta throughput through the applier thread: 200 deltas of 1,000
//! product upserts each (scaled by RELAIS_BENCH_SCALE) into a fresh replica, sent with
//! `ApplierHandle::apply_delta_blocking`. Limit in the same run: the same rows, already bound
//! values, inserted with one prepared `INSERT OR REPLACE` per row in transactions of 1,000 rows
//! on a plain connection with the replica's pragmas and schema. Goal: ≥ 50,000 ops/s.
//!
//! Then (`delta_apply/priority.rs`): stock delta latency while a 1M × scale row catalogue
//! imports, with deltas passing the import and in arrival order, beside the idle latency.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
#[path = "delta_apply/priority.rs"]
mod priority;

use common::{Scratch, emit, median, pass_str, percentile_sorted};
use relais::demo;
use relais::replica::Stream;
use relais::replica::apply::{DeltaOutcome, ReplicaApplier};
use relais::replica::delta::{CONTRACT_VERSION, Delta, DeltaOp};
use std::io::BufRead;
use std::path::Path;
use std::time::Instant;

const OPS_PER_DELTA: usize = 1_000;
const GOAL_OPS_PER_S: f64 = 50_000.0;

/// A product row as the limit binds it: what relais stores after validation.
struct Bound {
    gtin: i64,
    sku: String,
    name: String,
    attributes: Option<String>,
}

fn load_rows(path: &Path) -> (Vec<serde_json::Value>, Vec<Bound>) {
    let file = std::io::BufReader::new(std::fs::File::open(path).expect("open products"));
    let mut rows = Vec::new();
    let mut bound = Vec::new();
    for line in file.lines() {
        let row: serde_json::Value =
            serde_json::from_str(&line.expect("read products")).expect("product line is JSON");
        bound.push(Bound {
            gtin: row["gtin"]
                .as_str()
                .and_then(|g| g.parse().ok())
                .expect("gtin"),
            sku: row["sku"].as_str().expect("sku").to_string(),
            name: row["name"].as_str().expect("name").to_string(),
            attributes: row.get("attributes").map(|a| a.to_string()),
        });
        rows.push(row);
    }
    (rows, bound)
}

fn deltas(rows: &[serde_json::Value]) -> Vec<Delta> {
    rows.chunks(OPS_PER_DELTA)
        .enumerate()
        .map(|(i, chunk)| Delta {
            v: CONTRACT_VERSION,
            stream: Stream::Products,
            version: i as u64 + 1,
            ops: chunk
                .iter()
                .map(|row| DeltaOp::Upsert { row: row.clone() })
                .collect(),
        })
        .collect()
}

struct RelaisRun {
    seconds: f64,
    /// Per-delta round trips, microseconds.
    latencies_us: Vec<f64>,
}

fn run_relais(dir: &Path, deltas: Vec<Delta>, ops: usize) -> RelaisRun {
    let replica = dir.join("replica.db");
    let (handle, applier) = ReplicaApplier::start(&replica).expect("start applier");
    let mut latencies_us = Vec::with_capacity(deltas.len());
    let start = Instant::now();
    for delta in deltas {
        let t = Instant::now();
        let outcome = handle.apply_delta_blocking(delta).expect("apply delta");
        latencies_us.push(t.elapsed().as_secs_f64() * 1e6);
        assert!(
            matches!(outcome, DeltaOutcome::Applied { .. }),
            "{outcome:?}"
        );
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(handle);
    applier.join();
    let conn = relais::storage::open_reader(&replica).expect("reader");
    let count: i64 = conn
        .query_row("SELECT count(*) FROM products", [], |r| r.get(0))
        .expect("count");
    assert_eq!(count as usize, ops, "every upsert landed");
    RelaisRun {
        seconds,
        latencies_us,
    }
}

fn run_limit(dir: &Path, rows: &[Bound]) -> f64 {
    let path = dir.join("limit.db");
    // The replica's own opener: same pragmas (storage::open_writer, Rebuildable) and schema.
    let mut conn = relais::replica::open_writer(&path).expect("open limit db");
    let start = Instant::now();
    for chunk in rows.chunks(OPS_PER_DELTA) {
        let tx = conn.transaction().expect("begin");
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO products (gtin, sku, name, attributes) VALUES (?1, ?2, ?3, ?4)",
                )
                .expect("prepare");
            for r in chunk {
                stmt.execute(rusqlite::params![r.gtin, r.sku, r.name, r.attributes])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    start.elapsed().as_secs_f64()
}

fn main() {
    let n_deltas = common::scaled(200, 2) as usize;
    let ops = n_deltas * OPS_PER_DELTA;
    let runs = common::runs();
    eprintln!(
        "# delta_apply: {n_deltas} deltas x {OPS_PER_DELTA} product upserts, {runs} runs, median reported"
    );
    let scratch = Scratch::new("delta_apply");
    let data = scratch.sub("data");
    let products = data.join("products.ndjson");
    demo::write_products(&products, ops as u64).expect("write products");
    let (rows, bound) = load_rows(&products);
    assert_eq!(rows.len(), ops, "generated rows");

    // What the downlink pays before the applier: parsing the wire JSON (not part of the goal).
    let wire: Vec<Vec<u8>> = deltas(&rows)
        .iter()
        .map(|d| serde_json::to_vec(d).expect("serialise delta"))
        .collect();
    let (_, parse_t) = common::time(|| {
        for bytes in &wire {
            std::hint::black_box(Delta::from_json(bytes).expect("parse delta"));
        }
    });
    let parse_ops_per_s = ops as f64 / parse_t.as_secs_f64();
    eprintln!("# parsing the deltas from JSON: {parse_ops_per_s:.0} ops/s (one core)");

    let mut relais_runs = Vec::new();
    let mut limit_runs = Vec::new();
    for run in 0..runs {
        let dir = scratch.sub(&format!("run{run}"));
        let prepared = deltas(&rows);
        // Alternate the order so page-cache and thermal effects do not favour one side.
        let (r, l) = if run % 2 == 0 {
            let r = run_relais(&dir, prepared, ops);
            (r, run_limit(&dir, &bound))
        } else {
            let l = run_limit(&dir, &bound);
            (run_relais(&dir, prepared, ops), l)
        };
        eprintln!(
            "run {run}: relais {:.0} ops/s ({:.2} s) | prepared INSERT OR REPLACE {:.0} ops/s ({:.2} s)",
            ops as f64 / r.seconds,
            r.seconds,
            ops as f64 / l,
            l
        );
        relais_runs.push(r);
        limit_runs.push(l);
        let _ = std::fs::remove_dir_all(&dir);
    }

    let rel = median(
        &relais_runs
            .iter()
            .map(|r| ops as f64 / r.seconds)
            .collect::<Vec<_>>(),
    );
    let lim = median(
        &limit_runs
            .iter()
            .map(|l| ops as f64 / l)
            .collect::<Vec<_>>(),
    );
    let pass = rel >= GOAL_OPS_PER_S;
    eprintln!(
        "ops_per_s: relais {rel:.0} | limit {lim:.0} | ratio {:.2} (goal >= {GOAL_OPS_PER_S:.0} ops/s): {}",
        rel / lim,
        pass_str(pass)
    );
    emit(
        "delta_apply",
        "ops_per_s",
        rel,
        Some(lim),
        Some(">= 50000 ops/s"),
        Some(pass),
        serde_json::json!({
            "ops": ops,
            "deltas": n_deltas,
            "ops_per_delta": OPS_PER_DELTA,
            "parse_ops_per_s": parse_ops_per_s.round(),
        }),
    );

    let p = |q: f64| {
        median(
            &relais_runs
                .iter()
                .map(|r| {
                    let mut l = r.latencies_us.clone();
                    l.sort_by(f64::total_cmp);
                    percentile_sorted(&l, q) / 1000.0
                })
                .collect::<Vec<_>>(),
        )
    };
    let (p50, p99) = (p(50.0), p(99.0));
    let limit_per_delta_ms = 1000.0 * OPS_PER_DELTA as f64 / lim;
    eprintln!(
        "delta round trip: p50 {p50:.2} ms p99 {p99:.2} ms | limit {limit_per_delta_ms:.2} ms per 1,000 rows"
    );
    emit(
        "delta_apply",
        "delta_p50_ms",
        p50,
        Some(limit_per_delta_ms),
        None,
        None,
        serde_json::json!({"ops_per_delta": OPS_PER_DELTA}),
    );
    emit(
        "delta_apply",
        "delta_p99_ms",
        p99,
        Some(limit_per_delta_ms),
        None,
        None,
        serde_json::json!({"ops_per_delta": OPS_PER_DELTA}),
    );

    priority::measure(&scratch);
}
