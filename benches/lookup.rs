//! `lookup`: latency of `relais::replica::lookup::product_by_code` on a 1M-product replica
//! (prices, stock and reservations from `demo::generate`), against the floor of one SQLite
//! lookup: a bare primary-key probe `SELECT sku FROM products WHERE gtin=?` with a cached
//! statement, on the same connection, the same codes, in the same run.
//! Goals: p50 ≤ 10 µs, p99 ≤ 25 µs.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{Scratch, emit, median, pass_str, percentile_sorted};
use relais::cards::CardHasher;
use relais::demo::{self, Rng, StoreSize};
use relais::replica::import::{Progress, import_file};
use relais::replica::lookup::{Answer, product_by_code};
use std::hint::black_box;
use std::time::{Duration, Instant};

type Metric = (&'static str, fn(&Percentiles) -> f64, Option<f64>);

struct Percentiles {
    p50: f64,
    p99: f64,
    p999: f64,
    mean: f64,
}

fn percentiles(mut ns: Vec<u32>) -> Percentiles {
    ns.sort_unstable();
    let mean = ns.iter().map(|&x| f64::from(x)).sum::<f64>() / ns.len().max(1) as f64;
    Percentiles {
        p50: percentile_sorted(&ns, 50.0) / 1000.0,
        p99: percentile_sorted(&ns, 99.0) / 1000.0,
        p999: percentile_sorted(&ns, 99.9) / 1000.0,
        mean: mean / 1000.0,
    }
}

fn elapsed_ns(start: Instant) -> u32 {
    u32::try_from(start.elapsed().as_nanos()).unwrap_or(u32::MAX)
}

fn main() {
    let n = common::scaled(1_000_000, 1_000);
    let lookups = common::scaled(250_000, 5_000) as usize;
    let warmup = common::scaled(100_000, 2_000) as usize;
    let runs = common::runs();
    eprintln!(
        "# lookup: {n} products, {lookups} lookups per run after {warmup} warm-up, {runs} runs"
    );
    let scratch = Scratch::new("lookup");
    let data = scratch.sub("data");
    let now_ms = relais::storage::now_unix_ms();
    let (store, gen_t) = common::time(|| {
        demo::generate(
            &data,
            StoreSize {
                products: n,
                customers: 1_000,
            },
            &CardHasher::new(&[7u8; 32]),
            now_ms,
        )
        .expect("generate store")
    });
    let replica = scratch.path().join("replica.db");
    let outbox = scratch.path().join("outbox.db");
    let (_, import_t) = common::time(|| {
        for (stream, file) in &store.files {
            import_file(&replica, *stream, file, None, Progress::Quiet)
                .unwrap_or_else(|e| panic!("import {stream}: {e}"));
        }
    });
    relais::outbox::writer::migrate_only(&outbox).expect("outbox schema");
    let _ = std::fs::remove_dir_all(&data);
    eprintln!(
        "# generated in {:.1} s, imported all streams in {:.1} s",
        gen_t.as_secs_f64(),
        import_t.as_secs_f64()
    );

    // The agent's reader-pool connection: it keeps its read snapshot between lookups while
    // nothing is committed, and checks that before each one (`storage::LookupConnection`).
    let mut reader =
        relais::storage::LookupConnection::open(&replica, &outbox).expect("lookup connection");
    let conn =
        relais::storage::reader_pool_connection(&replica, &outbox).expect("probe connection");
    let stale_after =
        relais::replica::freshness::StaleAfter::uniform(Duration::from_secs(36 * 3600));
    let mut rng = Rng::new(42);
    let mut pick = |count: usize| -> Vec<(String, i64)> {
        (0..count)
            .map(|_| {
                let g = demo::product_gtin(rng.below(n)).expect("valid gtin");
                (g.to_string(), g.as_i64())
            })
            .collect()
    };

    // Warm-up: both query paths, so the page cache and the statement cache are hot.
    let mut probe = conn
        .prepare_cached("SELECT sku FROM products WHERE gtin = ?1")
        .expect("prepare probe");
    for (code, gtin) in pick(warmup) {
        let answer = product_by_code(reader.current(), &code, now_ms, stale_after).expect("lookup");
        assert!(matches!(answer, Answer::Found(_)), "{code} not found");
        let sku: String = probe.query_row([gtin], |r| r.get(0)).expect("probe");
        black_box(sku);
    }

    let mut relais_runs = Vec::new();
    let mut limit_runs = Vec::new();
    for run in 0..runs {
        let codes = pick(lookups);
        let mut rel = Vec::with_capacity(lookups);
        let mut lim = Vec::with_capacity(lookups);
        // Interleave in blocks so both see the same machine noise.
        for block in codes.chunks(10_000) {
            for (code, _) in block {
                let start = Instant::now();
                let answer =
                    product_by_code(reader.current(), code, now_ms, stale_after).expect("lookup");
                rel.push(elapsed_ns(start));
                assert!(matches!(answer, Answer::Found(_)), "{code} not found");
                black_box(answer);
            }
            for (_, gtin) in block {
                let start = Instant::now();
                let sku: String = probe.query_row([*gtin], |r| r.get(0)).expect("probe");
                lim.push(elapsed_ns(start));
                black_box(sku);
            }
        }
        let r = percentiles(rel);
        let l = percentiles(lim);
        eprintln!(
            "run {run}: product_by_code p50 {:.2} µs p99 {:.2} µs p99.9 {:.2} µs mean {:.2} µs | PK probe p50 {:.2} µs p99 {:.2} µs p99.9 {:.2} µs",
            r.p50, r.p99, r.p999, r.mean, l.p50, l.p99, l.p999
        );
        relais_runs.push(r);
        limit_runs.push(l);
    }

    let med = |rs: &[Percentiles], f: fn(&Percentiles) -> f64| {
        median(&rs.iter().map(f).collect::<Vec<_>>())
    };
    let metrics: [Metric; 4] = [
        ("p50_us", |p| p.p50, Some(10.0)),
        ("p99_us", |p| p.p99, Some(25.0)),
        ("p999_us", |p| p.p999, None),
        ("mean_us", |p| p.mean, None),
    ];
    for (metric, f, goal) in metrics {
        let rel = med(&relais_runs, f);
        let lim = med(&limit_runs, f);
        let pass = goal.map(|g| rel <= g);
        eprintln!(
            "{metric}: product_by_code {rel:.2} | PK probe {lim:.2} | ratio {:.1}x{}",
            rel / lim,
            match (goal, pass) {
                (Some(g), Some(p)) => format!(" (goal ≤ {g} µs): {}", pass_str(p)),
                _ => String::new(),
            }
        );
        let goal_s = goal.map(|g| format!("<= {g} us"));
        emit(
            "lookup",
            metric,
            rel,
            Some(lim),
            goal_s.as_deref(),
            pass,
            serde_json::json!({"products": n, "lookups_per_run": lookups}),
        );
    }
}
