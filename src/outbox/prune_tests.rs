//! Retention on the real writer: what central covers goes after the retention and the settle
//! time, on-hand and balances stay exactly the same, and nothing a baseline can still need goes.

use super::*;
use crate::domain::{
    CountSource, CountedItem, CycleCount, CycleCountRecorded, FactLine, LoyaltyBaseline,
    LoyaltyOperation, LoyaltyRecorded, SaleRecorded, StockBaseline, StoreFact,
};
use crate::outbox::writer::{OutboxHandle, OutboxWriter, WriterSettings};
use crate::outbox::{AppendRequest, IdempotencyClaim};
use std::time::{Duration, Instant};

const KEEP: Duration = Duration::from_secs(1);

struct Store {
    _dir: tempfile::TempDir,
    outbox: PathBuf,
    replica: PathBuf,
}

impl Store {
    /// A data directory whose replica holds `stock` (sku, on hand, watermark), one customer
    /// `C-1` (1,000 points at watermark 0) and a current reservations stream.
    fn new(stock: &[(&str, i64, u64)]) -> Store {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = dir.path().join("outbox.db");
        let replica = dir.path().join("replica.db");
        let conn = crate::replica::open_writer(&replica).expect("replica");
        conn.execute("UPDATE streams SET version = 1", [])
            .expect("versions");
        for (sku, on_hand, watermark) in stock {
            conn.execute(
                "INSERT INTO stock(sku, on_hand, watermark_seq) VALUES (?1, ?2, ?3)",
                params![sku, on_hand, *watermark as i64],
            )
            .expect("stock");
        }
        conn.execute(
            "INSERT INTO customers(customer_id, display_name, tier, loyalty_balance,
                                   loyalty_watermark_seq) VALUES ('C-1', 'Ada', NULL, 1000, 0)",
            [],
        )
        .expect("customer");
        Store {
            _dir: dir,
            outbox,
            replica,
        }
    }

    fn settings(&self, history: Duration, keys: Duration) -> WriterSettings {
        WriterSettings {
            group_commit_max: 64,
            telemetry_quota_rows: 1000,
            low_free_mb: 0,
            seq_floor: 0,
            checkpoint_pages: crate::outbox::writer::DEFAULT_CHECKPOINT_PAGES,
            prune: PruneSettings::new(history, keys, Some(self.replica.clone())),
        }
    }

    fn start(&self) -> (OutboxHandle, OutboxWriter) {
        OutboxWriter::start(&self.outbox, self.settings(KEEP, KEEP)).expect("writer")
    }

    /// Central's delta: `sku` is `on_hand` including this agent's movements up to `watermark`.
    fn central_stock(&self, sku: &str, on_hand: i64, watermark: u64) {
        let conn = crate::replica::open_writer(&self.replica).expect("replica");
        conn.execute(
            "UPDATE stock SET on_hand = ?2, watermark_seq = ?3 WHERE sku = ?1",
            params![sku, on_hand, watermark as i64],
        )
        .expect("delta");
    }

    /// `on_hand@watermark + Σ movements after it`, computed here from the two files (the
    /// agent's own lookup code is not used, so a wrong prune cannot hide behind it).
    fn on_hand(&self, sku: &str) -> i64 {
        let baseline = self.baseline(sku);
        baseline.on_hand + self.movements_after(sku, baseline.watermark_seq)
    }

    fn baseline(&self, sku: &str) -> StockBaseline {
        let conn = crate::storage::open_reader(&self.replica).expect("replica");
        conn.query_row(
            "SELECT on_hand, watermark_seq FROM stock WHERE sku = ?1",
            [sku],
            |r| {
                Ok(StockBaseline {
                    on_hand: r.get(0)?,
                    watermark_seq: r.get::<_, i64>(1)? as u64,
                })
            },
        )
        .expect("baseline")
    }

    fn movements_after(&self, sku: &str, watermark: u64) -> i64 {
        let conn = crate::storage::open_reader(&self.outbox).expect("outbox");
        conn.query_row(
            "SELECT COALESCE(SUM(delta), 0) FROM stock_movements WHERE sku = ?1 AND seq > ?2",
            params![sku, watermark as i64],
            |r| r.get(0),
        )
        .expect("sum")
    }

    fn rows(&self, sql: &str) -> i64 {
        let conn = crate::storage::open_reader(&self.outbox).expect("outbox");
        conn.query_row(sql, [], |r| r.get(0)).expect("count")
    }

    fn pruned(&self, table: &str) -> i64 {
        let conn = crate::storage::open_reader(&self.outbox).expect("outbox");
        conn.query_row(
            "SELECT COALESCE((SELECT value FROM meta WHERE key = ?1), 0)",
            [pruned_key(table)],
            |r| r.get(0),
        )
        .expect("pruned")
    }

    /// Wait (at most 20 s) until `table` counts `n` rows pruned.
    fn wait_pruned(&self, table: &str, n: i64) {
        let until = Instant::now() + Duration::from_secs(20);
        while self.pruned(table) < n {
            assert!(
                Instant::now() < until,
                "{table}: {} rows pruned after 20 s, expected {n}",
                self.pruned(table)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A till's ticket: one line per (sku, qty) sold.
fn ticket(lines: &[(&str, i64)]) -> AppendRequest {
    AppendRequest::fact(StoreFact::Sale(crate::domain::Sale::plain(SaleRecorded {
        receipt: None,
        lines: lines
            .iter()
            .map(|(sku, qty)| FactLine {
                sku: Some((*sku).to_owned()),
                gtin: None,
                qty: *qty,
                unit_price_minor: Some(250),
                stock_applied: true,
                original_line: None,
                points: None,
            })
            .collect(),
        total_minor: None,
        currency: Some("EUR".into()),
        customer_id: Some("C-1".into()),
        earn_per_minor_units: None,
        points_earned: None,
        client_key: None,
        by: "till-1".into(),
    })))
}

fn loyalty(customer: &str, points: i64, baseline: LoyaltyBaseline) -> AppendRequest {
    AppendRequest::fact(StoreFact::Loyalty(LoyaltyOperation {
        recorded: LoyaltyRecorded {
            customer_id: customer.into(),
            points,
            receipt: None,
            client_key: None,
            by: "till-1".into(),
        },
        baseline,
        burn_cap: 10_000,
        balance_after: None,
    }))
}

#[test]
fn movements_central_covers_go_after_the_retention_and_on_hand_stays_exactly_the_same() {
    let store = Store::new(&[("MILK", 100, 0), ("BREAD", 40, 0)]);
    let (handle, writer) = store.start();
    // Three tickets of several lines: seqs 1, 2, 3.
    for lines in [
        [("MILK", 2), ("BREAD", 1)],
        [("MILK", 1), ("BREAD", 3)],
        [("MILK", 4), ("BREAD", 1)],
    ] {
        handle.append_blocking(ticket(&lines)).expect("ticket");
    }
    let before = (store.on_hand("MILK"), store.on_hand("BREAD"));
    assert_eq!(before, (93, 35));
    // Central has MILK up to seq 2 (97 = 100 - 2 - 1), BREAD nothing yet.
    store.central_stock("MILK", 97, 2);
    assert_eq!(store.on_hand("MILK"), 93);

    store.wait_pruned("stock_movements", 2);
    assert_eq!((store.on_hand("MILK"), store.on_hand("BREAD")), before);
    assert_eq!(
        store.rows("SELECT COUNT(*) FROM stock_movements WHERE sku = 'MILK'"),
        1,
        "MILK's movement after the watermark (seq 3) is kept"
    );
    assert_eq!(
        store.rows("SELECT COUNT(*) FROM stock_movements WHERE sku = 'BREAD'"),
        3,
        "BREAD's movements are after its watermark: kept whatever their age"
    );
    assert_eq!(
        store.rows("SELECT COUNT(*) FROM sku_movements WHERE sku = 'MILK'"),
        1
    );
    assert_eq!(store.pruned("sku_movements"), 2);
    // Another round finds nothing more to take while central stays where it is.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(store.pruned("stock_movements"), 2);
    assert_eq!((store.on_hand("MILK"), store.on_hand("BREAD")), before);
    drop(handle);
    writer.join();
}

#[test]
fn a_count_and_a_lookup_holding_a_baseline_from_before_centrals_delta_still_find_their_movements() {
    let store = Store::new(&[("MILK", 100, 0)]);
    // A longer keep gives a measurable settle window: 3 s.
    let keep = Duration::from_secs(3);
    let (handle, writer) =
        OutboxWriter::start(&store.outbox, store.settings(keep, keep)).expect("writer");
    for _ in 0..4 {
        handle
            .append_blocking(ticket(&[("MILK", 2), ("MILK", 1)]))
            .expect("ticket");
    }
    assert_eq!(store.on_hand("MILK"), 88);
    // The rows are old enough from here on; central's delta comes in once a round has started
    // with them old enough, so the next marking covers them.
    std::thread::sleep(keep + Duration::from_millis(200));
    // A lookup (or a till resolving a count) read the baseline before the delta...
    let old = store.baseline("MILK");
    assert_eq!(old.watermark_seq, 0);
    store.central_stock("MILK", 91, 3);
    let delta_at = Instant::now();
    // The count is settled by the writer with that old baseline: its `expected` is exact.
    let count = handle
        .append_blocking(AppendRequest::fact(StoreFact::CycleCount(CycleCount {
            recorded: CycleCountRecorded {
                zone: None,
                source: CountSource::Manual,
                items: vec![CountedItem {
                    sku: Some("MILK".into()),
                    gtin: None,
                    counted: 87,
                    expected: None,
                    delta: None,
                    watermark_seq: None,
                }],
                ignored_tags: Vec::new(),
                applied: true,
                as_of_seq: 0,
                client_key: None,
                by: "till-2".into(),
            },
            baselines: vec![Some(old)],
        })))
        .expect("count");
    let answer: serde_json::Value =
        serde_json::from_str(count.answer.as_deref().expect("answer")).expect("json");
    assert_eq!(answer["items"][0]["expected"], 88, "{answer}");
    // ...and sums the movements after it while the writer marks and the settle time runs:
    // nothing it needs goes before the settle time has passed since the delta.
    let until = Instant::now() + Duration::from_secs(30);
    while store.pruned("stock_movements") == 0 {
        assert!(Instant::now() < until, "nothing pruned after 30 s");
        if delta_at.elapsed() < keep {
            assert_eq!(
                old.on_hand + store.movements_after("MILK", old.watermark_seq),
                88 - 1,
                "{:?} after the delta, a baseline read before it lost movements",
                delta_at.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        delta_at.elapsed() >= keep,
        "pruned {:?} after the delta, before the settle time",
        delta_at.elapsed()
    );
    store.wait_pruned("stock_movements", 6);
    assert_eq!(store.on_hand("MILK"), 87, "88 less the count's adjustment");
    drop(handle);
    writer.join();
}

#[test]
fn a_key_past_its_retention_whose_event_central_has_no_longer_replays_and_one_within_does() {
    let store = Store::new(&[("MILK", 100, 0)]);
    let (handle, writer) = OutboxWriter::start(
        &store.outbox,
        store.settings(Duration::from_secs(3600), KEEP),
    )
    .expect("writer");
    let key = |k: &str| IdempotencyClaim::new("till-1", "POST /v1/sales", k, [9; 32]);
    let sent = |k: &str| ticket(&[("MILK", 1)]).with_key(key(k));
    let acked = handle.append_blocking(sent("t1/r1")).expect("first");
    let pending = handle.append_blocking(sent("t1/r2")).expect("second");
    // Central has the first (its event is deleted), not the second.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    rt.block_on(handle.delivered(vec![[acked.seq, acked.seq]]))
        .expect("delivered");
    let fresh = handle.append_blocking(sent("t1/r3")).expect("third");
    rt.block_on(handle.delivered(vec![[fresh.seq, fresh.seq]]))
        .expect("delivered");
    // Within the retention, a retry of a delivered fact replays.
    let retry = handle.append_blocking(sent("t1/r3")).expect("retry");
    assert!(retry.replayed);
    assert_eq!(retry.seq, fresh.seq);

    store.wait_pruned("idempotency", 2);
    let again = handle.append_blocking(sent("t1/r1")).expect("retry");
    assert!(
        !again.replayed,
        "a key past its retention is a new fact: {again:?}"
    );
    assert!(again.seq > fresh.seq);
    let retry = handle.append_blocking(sent("t1/r2")).expect("retry");
    assert!(
        retry.replayed && retry.seq == pending.seq,
        "central does not have it yet: the key still replays"
    );
    drop(handle);
    writer.join();
}

#[test]
fn loyalty_operations_central_covers_go_while_pending_ones_and_an_erased_customers_undelivered_ones_stay()
 {
    let store = Store::new(&[]);
    {
        let conn = crate::replica::open_writer(&store.replica).expect("replica");
        conn.execute(
            "INSERT INTO customers(customer_id, display_name, tier, loyalty_balance,
                                   loyalty_watermark_seq) VALUES ('C-2', 'Bo', NULL, 50, 0)",
            [],
        )
        .expect("customer");
    }
    let (handle, writer) = store.start();
    let base = |balance| LoyaltyBaseline {
        central_balance: balance,
        watermark_seq: 0,
    };
    let earned = handle
        .append_blocking(loyalty("C-1", 120, base(1000)))
        .expect("earn");
    let burned = handle
        .append_blocking(loyalty("C-1", -20, base(1000)))
        .expect("burn");
    let erased_pending = handle
        .append_blocking(loyalty("C-2", 30, base(50)))
        .expect("earn");
    let erased_sent = handle
        .append_blocking(loyalty("C-2", 5, base(50)))
        .expect("earn");
    // Central has C-1's first earn (1,120 at its seq); C-2 is erased, one of their two
    // operations delivered.
    {
        let conn = crate::replica::open_writer(&store.replica).expect("replica");
        conn.execute(
            "UPDATE customers SET loyalty_balance = 1120, loyalty_watermark_seq = ?1
             WHERE customer_id = 'C-1'",
            [earned.seq as i64],
        )
        .expect("delta");
        conn.execute("DELETE FROM customers WHERE customer_id = 'C-2'", [])
            .expect("erasure");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    rt.block_on(handle.delivered(vec![
        [earned.seq, earned.seq],
        [erased_sent.seq, erased_sent.seq],
    ]))
    .expect("delivered");
    store.wait_pruned("loyalty_ops", 2);
    std::thread::sleep(Duration::from_millis(2500));
    let kept: Vec<(i64, String, i64)> = {
        let conn = crate::storage::open_reader(&store.outbox).expect("outbox");
        let mut stmt = conn
            .prepare("SELECT seq, customer_id, points FROM loyalty_ops ORDER BY seq")
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    assert_eq!(
        kept,
        vec![
            (burned.seq as i64, "C-1".into(), -20),
            (erased_pending.seq as i64, "C-2".into(), 30),
        ],
        "the burn after the watermark and the erased customer's undelivered earn stay"
    );
    // C-1's balance is what it was: 1,120 at the watermark, less the pending burn.
    let pending: i64 = store.rows(&format!(
        "SELECT SUM(points) FROM loyalty_ops WHERE customer_id = 'C-1' AND seq > {}",
        earned.seq
    ));
    assert_eq!(1120 + pending, 1100);
    drop(handle);
    writer.join();
}

#[test]
fn sequence_numbers_are_not_reused_when_pruning_took_the_newest_rows() {
    let store = Store::new(&[("MILK", 100, 0)]);
    let (handle, writer) = store.start();
    let last = handle
        .append_blocking(ticket(&[("MILK", 1), ("MILK", 2)]))
        .expect("ticket");
    store.central_stock("MILK", 97, last.seq);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    rt.block_on(handle.delivered(vec![[1, last.seq]]))
        .expect("delivered");
    store.wait_pruned("stock_movements", 2);
    drop(handle);
    writer.join();
    assert_eq!(store.rows("SELECT COUNT(*) FROM events"), 0);
    let (handle, writer) = store.start();
    let next = handle
        .append_blocking(ticket(&[("MILK", 1)]))
        .expect("ticket");
    assert_eq!(next.seq, last.seq + 1);
    drop(handle);
    writer.join();
}

#[test]
fn a_replica_path_with_uri_characters_is_attached_as_itself() {
    assert_eq!(
        read_only_uri(Path::new("/var/lib/re%lais?#/replica é.db")),
        "file:/var/lib/re%25lais%3F%23/replica %C3%A9.db?mode=ro"
    );
}

/// 200,000 movements central counted a day ago, filed by SKU, over 500 SKUs whose replica
/// baseline covers them all.
fn seed_history(store: &Store, rows: i64) {
    crate::outbox::writer::migrate_only(&store.outbox).expect("migrate");
    let mut conn =
        crate::storage::open_writer(&store.outbox, crate::storage::Durability::StoreFacts)
            .expect("outbox");
    let day_ago = crate::storage::now_unix_ms() - 86_400_000;
    let tx = conn.transaction().expect("tx");
    {
        let mut movement = tx
            .prepare(
                "INSERT INTO stock_movements(seq, line, sku, delta, kind, wall_ms)
                 VALUES (?1, 0, ?2, -1, 'sale', ?3)",
            )
            .expect("prepare");
        let mut filed = tx
            .prepare("INSERT INTO sku_movements(sku, seq, line, delta) VALUES (?1, ?2, 0, -1)")
            .expect("prepare");
        for seq in 1..=rows {
            let sku = format!("SKU-{}", seq % 500);
            movement
                .execute(params![seq, sku, day_ago])
                .expect("movement");
            filed.execute(params![sku, seq]).expect("filed");
        }
    }
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key IN ('sku_indexed_upto', 'last_seq')",
        [rows],
    )
    .expect("meta");
    tx.commit().expect("commit");
    let replica = crate::replica::open_writer(&store.replica).expect("replica");
    for sku in 0..500 {
        replica
            .execute(
                "INSERT INTO stock(sku, on_hand, watermark_seq) VALUES (?1, 1000, ?2)",
                params![format!("SKU-{sku}"), rows],
            )
            .expect("stock");
    }
}

/// Four tills record five-line tickets, each every 150–450 ms (a Saturday rush is one every
/// few seconds per till), until `done` says so; returns every ticket's latency.
fn four_tills(handle: &OutboxHandle, done: &(dyn Fn() -> bool + Sync)) -> Vec<Duration> {
    std::thread::scope(|scope| {
        let tills: Vec<_> = (0..4u64)
            .map(|till| {
                let handle = handle.clone();
                scope.spawn(move || {
                    let mut latencies = Vec::new();
                    let mut n = till;
                    while !done() {
                        let skus: Vec<String> = (0..5)
                            .map(|i| format!("SKU-{}", (n % 500 + i * 7) % 500))
                            .collect();
                        let lines: Vec<(&str, i64)> =
                            skus.iter().map(|s| (s.as_str(), 1)).collect();
                        let started = Instant::now();
                        handle.append_blocking(ticket(&lines)).expect("ticket");
                        latencies.push(started.elapsed());
                        n = n
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1_442_695);
                        std::thread::sleep(Duration::from_millis(150 + (n >> 33) % 300));
                    }
                    latencies
                })
            })
            .collect();
        tills
            .into_iter()
            .flat_map(|t| t.join().expect("till"))
            .collect()
    })
}

fn percentile(latencies: &mut [Duration], p: f64) -> Duration {
    latencies.sort();
    let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
    latencies.get(i).copied().unwrap_or_default()
}

#[test]
fn pruning_200k_movements_while_four_tills_record_tickets_keeps_each_tickets_latency() {
    const ROWS: i64 = 200_000;
    let store = Store::new(&[]);
    seed_history(&store, ROWS);
    // Before: the same outbox and load, nothing to prune (no replica to read watermarks from).
    let mut before_settings = store.settings(KEEP, KEEP);
    before_settings.prune.replica = None;
    let (handle, writer) = OutboxWriter::start(&store.outbox, before_settings).expect("writer");
    let until = Instant::now() + Duration::from_secs(8);
    let mut before = four_tills(&handle, &|| Instant::now() >= until);
    drop(handle);
    writer.join();
    assert_eq!(store.pruned("stock_movements"), 0);

    let (handle, writer) = store.start();
    let started = Instant::now();
    let give_up = started + Duration::from_secs(240);
    let mut during = four_tills(&handle, &|| {
        store.pruned("stock_movements") >= ROWS || Instant::now() >= give_up
    });
    let took = started.elapsed();
    drop(handle);
    writer.join();
    assert_eq!(
        store.pruned("stock_movements"),
        ROWS,
        "not all pruned in {took:?}"
    );
    assert_eq!(store.pruned("sku_movements"), ROWS);
    let (p50_before, p99_before) = (percentile(&mut before, 0.5), percentile(&mut before, 0.99));
    let (p50_during, p99_during) = (percentile(&mut during, 0.5), percentile(&mut during, 0.99));
    println!(
        "pruning {ROWS} rows took {took:?} under 4 tills; tickets before: {} p50 {p50_before:?} \
         p99 {p99_before:?}; during: {} p50 {p50_during:?} p99 {p99_during:?} max {:?}",
        before.len(),
        during.len(),
        during.iter().max().copied().unwrap_or_default()
    );
    // A ticket waits for one chunk at most: a few milliseconds, not a whole round (seconds).
    // Generous, since the machine running the tests is shared: the figures are printed.
    assert!(
        p99_during <= p99_before * 2 + Duration::from_millis(50),
        "p99 {p99_before:?} before, {p99_during:?} while pruning"
    );
}

fn handed_over(order: &str) -> AppendRequest {
    AppendRequest::fact(StoreFact::PickupCollected(crate::domain::PickupCollected {
        order_id: order.into(),
        pickup_code: format!("PU-{order}"),
        lines: vec![crate::domain::HandedOverLine {
            line: 1,
            sku: "MILK".into(),
            qty: 2,
            status: "picked".into(),
        }],
        was_ready: true,
        partial: false,
        client_key: None,
        by: "till-1".into(),
    }))
}

#[test]
fn a_hand_over_record_goes_once_central_no_longer_lists_the_order_and_one_still_listed_stays() {
    let store = Store::new(&[("MILK", 100, 0)]);
    {
        let conn = crate::replica::open_writer(&store.replica).expect("replica");
        for order in ["WEB-1", "WEB-2"] {
            conn.execute(
                "INSERT INTO reservations(order_id, line, sku, qty, status, pickup_code)
                 VALUES (?1, 1, 'MILK', 2, 'picked', 'PU-' || ?1)",
                [order],
            )
            .expect("reservation");
        }
    }
    let (handle, writer) = store.start();
    let first = handle.append_blocking(handed_over("WEB-1")).expect("WEB-1");
    let second = handle.append_blocking(handed_over("WEB-2")).expect("WEB-2");
    // Central has both hand-overs and has closed WEB-1; WEB-2 is still in its stream.
    {
        let conn = crate::replica::open_writer(&store.replica).expect("replica");
        conn.execute("DELETE FROM reservations WHERE order_id = 'WEB-1'", [])
            .expect("delta");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    rt.block_on(handle.delivered(vec![[first.seq, second.seq]]))
        .expect("delivered");
    store.wait_pruned("released_lines", 1);
    assert_eq!(
        store.rows("SELECT COUNT(*) FROM released_lines WHERE order_id = 'WEB-2'"),
        1
    );
    // The record kept still stops a second hand-over of the order central lists.
    let again = handle.append_blocking(handed_over("WEB-2"));
    assert!(
        matches!(&again, Err(crate::outbox::OutboxError::Refused(_))),
        "{again:?}"
    );
    drop(handle);
    writer.join();
}

/// A ticket under `receipt` for customer C-1: one line of `qty` MILK.
fn receipted_ticket(receipt: &str, qty: i64) -> AppendRequest {
    AppendRequest::fact(StoreFact::Sale(crate::domain::Sale::plain(SaleRecorded {
        receipt: Some(receipt.to_owned()),
        lines: vec![FactLine {
            sku: Some("MILK".to_owned()),
            gtin: None,
            qty,
            unit_price_minor: Some(250),
            stock_applied: true,
            original_line: None,
            points: None,
        }],
        total_minor: None,
        currency: Some("EUR".into()),
        customer_id: Some("C-1".into()),
        earn_per_minor_units: None,
        points_earned: None,
        client_key: None,
        by: "till-1".into(),
    })))
}

#[test]
fn a_tickets_lines_go_after_the_return_window_once_central_has_it_and_a_newer_ones_stay() {
    let store = Store::new(&[("MILK", 100, 0)]);
    let settings = WriterSettings {
        prune: PruneSettings::new(KEEP, KEEP, Some(store.replica.clone())).with_returns_keep(KEEP),
        ..store.settings(KEEP, KEEP)
    };
    let (handle, writer) = OutboxWriter::start(&store.outbox, settings).expect("writer");
    let old = handle
        .append_blocking(receipted_ticket("R-OLD", 2))
        .expect("old ticket");
    let kept = handle
        .append_blocking(receipted_ticket("R-UNSENT", 1))
        .expect("ticket central has not got");
    assert_eq!(store.rows("SELECT COUNT(*) FROM sold_lines"), 2);
    // Central has the first ticket only.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    rt.block_on(handle.delivered(vec![[old.seq, old.seq]]))
        .expect("delivered");
    store.wait_pruned("sold_lines", 1);
    assert_eq!(
        store.rows("SELECT COUNT(*) FROM sold_lines WHERE receipt = 'R-OLD'"),
        0,
        "past the window and delivered"
    );
    assert_eq!(
        store.rows("SELECT COUNT(*) FROM sold_lines WHERE receipt = 'R-UNSENT'"),
        1,
        "its event is still queued: kept whatever its age"
    );
    assert!(kept.seq > old.seq);
    drop(handle);
    writer.join();
}

fn consent_change(purpose: crate::domain::ConsentPurpose, at_ms: i64) -> AppendRequest {
    AppendRequest::fact(StoreFact::ConsentChanged(crate::domain::ConsentChanged {
        customer_id: "C-1".into(),
        purpose,
        granted: true,
        at: "2026-12-07T10:00:00.000Z".into(),
        at_ms,
        client_key: None,
        by: "till-1".into(),
    }))
}

#[test]
fn a_consent_change_goes_once_centrals_row_is_dated_after_it_and_one_central_has_not_caught_up_with_stays()
 {
    use crate::domain::ConsentPurpose;
    let store = Store::new(&[("MILK", 100, 0)]);
    let (handle, writer) = store.start();
    let at = crate::storage::now_unix_ms() - 5_000;
    let first = handle
        .append_blocking(consent_change(ConsentPurpose::Marketing, at))
        .expect("marketing");
    let second = handle
        .append_blocking(consent_change(ConsentPurpose::Profiling, at))
        .expect("profiling");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    rt.block_on(handle.delivered(vec![[first.seq, second.seq]]))
        .expect("delivered");
    // Central's row: the marketing choice dated after the till's change (central has it), the
    // profiling one older (central has not applied the change yet).
    {
        let conn = crate::replica::open_writer(&store.replica).expect("replica");
        conn.execute(
            "UPDATE customers SET consent_marketing = 1, consent_marketing_ms = ?1,
                                  consent_profiling = 0, consent_profiling_ms = ?2
             WHERE customer_id = 'C-1'",
            params![at + 1_000, at - 86_400_000],
        )
        .expect("delta");
    }
    store.wait_pruned("consent_changes", 1);
    assert_eq!(
        store.rows("SELECT COUNT(*) FROM consent_changes WHERE purpose = 'marketing'"),
        0
    );
    assert_eq!(
        store.rows("SELECT COUNT(*) FROM consent_changes WHERE purpose = 'profiling'"),
        1,
        "still what the lookup shows: central's row is older"
    );
    drop(handle);
    writer.join();
}
