//! Stock delta latency while a catalogue snapshot imports (issue 18, item 7; ADR 0024).
//!
//! Stock deltas arrive every `INTERVAL` (open loop: each one's latency counts from when it was
//! due, so a delta held behind the import is charged the whole wait, not just its own apply)
//! and are applied one after the other, as the downlink does, while a products snapshot of
//! 1M rows × scale imports on the same applier. Measured with deltas passing the import
//! (`Priority::DeltasPassImports`, the agent's) and in arrival order (`Priority::InOrder`, the
//! path before), beside the same deltas on an idle applier.

use crate::common::{Scratch, emit, percentile_sorted, scaled};
use relais::replica::Stream;
use relais::replica::apply::{DeltaOutcome, Priority, ReplicaApplier};
use relais::replica::delta::{CONTRACT_VERSION, Delta, DeltaOp};
use std::path::Path;
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_millis(10);

fn stock_delta(version: u64) -> Delta {
    Delta {
        v: CONTRACT_VERSION,
        stream: Stream::Stock,
        version,
        ops: vec![DeltaOp::Upsert {
            row: serde_json::json!({"sku": format!("SKU-{:06}", version % 5000), "on_hand": version % 40}),
        }],
    }
}

struct Run {
    /// Latency of each delta due while the import ran (or of every delta when idle), ms.
    latencies_ms: Vec<f64>,
    import_s: Option<f64>,
}

/// `deltas_when_idle` deltas with no import, or deltas until the import of `catalogue` is done.
fn run(dir: &Path, priority: Priority, catalogue: Option<&Path>, deltas_when_idle: u64) -> Run {
    std::fs::create_dir_all(dir).expect("run dir");
    let (handle, applier) =
        ReplicaApplier::start_with(&dir.join("replica.db"), priority).expect("start applier");
    // When the import ended: the deltas due before it are its figure, however late they
    // were applied.
    let ended = std::sync::Arc::new(std::sync::OnceLock::<Instant>::new());
    let importer = catalogue.map(|file| {
        let handle = handle.clone();
        let file = file.to_path_buf();
        let ended = std::sync::Arc::clone(&ended);
        std::thread::spawn(move || {
            let started = Instant::now();
            handle
                .import_snapshot_blocking(Stream::Products, file, 1)
                .expect("import catalogue");
            let end = Instant::now();
            let _ = ended.set(end);
            (started, end)
        })
    });
    // Let the import start filling before the first delta is due.
    std::thread::sleep(Duration::from_millis(20));
    let start = Instant::now();
    let mut latencies_ms = Vec::new();
    let mut version = 0u64;
    loop {
        let due = start + INTERVAL * u32::try_from(version).unwrap_or(u32::MAX);
        let done = match &importer {
            // At least one delta, even when a tiny catalogue (CI's scale) imported before it.
            Some(_) => version > 0 && ended.get().is_some_and(|end| due > *end),
            None => version >= deltas_when_idle,
        };
        if done {
            break;
        }
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        version += 1;
        let outcome = handle
            .apply_delta_blocking(stock_delta(version))
            .expect("apply stock delta");
        assert!(
            matches!(outcome, DeltaOutcome::Applied { .. }),
            "{outcome:?}"
        );
        latencies_ms.push(due.elapsed().as_secs_f64() * 1000.0);
    }
    let import_s = importer.map(|thread| {
        let (started, end) = thread.join().expect("importer");
        (end - started).as_secs_f64()
    });
    drop(handle);
    applier.join();
    Run {
        latencies_ms,
        import_s,
    }
}

fn percentiles(mut latencies: Vec<f64>) -> (f64, f64, usize) {
    latencies.sort_by(f64::total_cmp);
    (
        percentile_sorted(&latencies, 50.0),
        percentile_sorted(&latencies, 99.0),
        latencies.len(),
    )
}

pub fn measure(scratch: &Scratch) {
    let rows = scaled(1_000_000, 2_000);
    let catalogue = scratch.sub("priority-data").join("catalogue.ndjson");
    relais::demo::write_products(&catalogue, rows).expect("write catalogue");
    eprintln!(
        "# stock deltas every {} ms while a {rows}-row catalogue imports",
        INTERVAL.as_millis()
    );

    let idle = run(
        &scratch.sub("priority-idle"),
        Priority::DeltasPassImports,
        None,
        200,
    );
    let (idle_p50, idle_p99, idle_n) = percentiles(idle.latencies_ms);
    eprintln!("idle: stock delta p50 {idle_p50:.2} ms p99 {idle_p99:.2} ms ({idle_n} deltas)");
    emit(
        "delta_apply",
        "stock_delta_idle_p50_ms",
        idle_p50,
        None,
        None,
        None,
        serde_json::json!({"deltas": idle_n}),
    );
    emit(
        "delta_apply",
        "stock_delta_idle_p99_ms",
        idle_p99,
        None,
        None,
        None,
        serde_json::json!({"deltas": idle_n}),
    );

    for (priority, name) in [
        (Priority::InOrder, "in_order"),
        (Priority::DeltasPassImports, "deltas_pass_imports"),
    ] {
        let r = run(
            &scratch.sub(&format!("priority-{name}")),
            priority,
            Some(&catalogue),
            0,
        );
        let import_s = r.import_s.unwrap_or_default();
        let (p50, p99, n) = percentiles(r.latencies_ms);
        eprintln!(
            "{name}: stock delta during the import p50 {p50:.2} ms p99 {p99:.2} ms ({n} deltas); \
             import {import_s:.2} s ({:.0} rows/s)",
            rows as f64 / import_s.max(1e-9)
        );
        // The limit beside it: the same deltas on an idle applier.
        let extra = serde_json::json!({
            "priority": name,
            "catalogue_rows": rows,
            "deltas": n,
            "import_s": (import_s * 1000.0).round() / 1000.0,
            "delta_interval_ms": INTERVAL.as_millis(),
        });
        emit(
            "delta_apply",
            &format!("stock_delta_during_import_p50_ms_{name}"),
            p50,
            Some(idle_p50),
            None,
            None,
            extra.clone(),
        );
        emit(
            "delta_apply",
            &format!("stock_delta_during_import_p99_ms_{name}"),
            p99,
            Some(idle_p99),
            None,
            None,
            extra,
        );
    }
}
