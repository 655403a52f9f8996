//! The writer's own tests: sequence, keys, quota, disk watermark, filing, checkpoints.
use super::*;
use crate::outbox::{EventDraft, IdempotencyClaim, MovementKind, StoreFact};

fn settings() -> WriterSettings {
    WriterSettings {
        group_commit_max: 64,
        telemetry_quota_rows: 1000,
        low_free_mb: 0,
        seq_floor: 0,
        checkpoint_pages: DEFAULT_CHECKPOINT_PAGES,
        prune: Default::default(),
    }
}

/// A store fact (a one-unit sale of SKU-1) or a telemetry event, with `key` if given.
fn request(class: RetentionClass, key: Option<&str>) -> AppendRequest {
    let request = match class {
        RetentionClass::StoreFact => movement("SKU-1", -1),
        RetentionClass::Telemetry => AppendRequest::event(EventDraft {
            event_type: "test.event",
            schema: 1,
            class,
            payload_json: r#"{"n":1}"#.into(),
        }),
    };
    match key {
        Some(key) => request.with_key(claim(key)),
        None => request,
    }
}

/// A stock movement of `delta` units (an adjustment: any sign).
fn movement(sku: &str, delta: i64) -> AppendRequest {
    AppendRequest::fact(StoreFact::stock_movement(
        MovementKind::Adjustment,
        sku,
        delta,
    ))
}

/// `key` as one till sends it with one request (the fingerprint stands for the request).
fn claim(key: &str) -> IdempotencyClaim {
    IdempotencyClaim::new("till-1", "POST /v1/movements", key, [7; 32])
}

fn movement_sum(path: &Path) -> i64 {
    let conn = storage::open_reader(path).expect("reader");
    conn.query_row(
        "SELECT COALESCE(SUM(delta), 0) FROM stock_movements",
        [],
        |r| r.get(0),
    )
    .expect("sum")
}

#[test]
fn sequence_numbers_continue_across_a_restart_and_the_boot_counter_grows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("start");
    let first: Vec<u64> = (0..5)
        .map(|_| {
            handle
                .append_blocking(request(RetentionClass::StoreFact, None))
                .expect("append")
                .seq
        })
        .collect();
    assert_eq!(first, vec![1, 2, 3, 4, 5]);
    let boot1 = handle.stats().boot;
    drop(handle);
    writer.join();
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("restart");
    let next = handle
        .append_blocking(request(RetentionClass::StoreFact, None))
        .expect("append");
    assert_eq!(next.seq, 6);
    assert_eq!(handle.stats().boot, boot1 + 1);
    drop(handle);
    writer.join();
    assert_eq!(movement_sum(&path), -6);
}

#[test]
fn a_repeated_client_key_returns_the_first_answer_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("start");
    let a = handle
        .append_blocking(request(RetentionClass::StoreFact, Some("k")))
        .expect("first");
    let b = handle
        .append_blocking(request(RetentionClass::StoreFact, Some("k")))
        .expect("retry");
    assert!(!a.replayed);
    assert!(b.replayed);
    assert_eq!((a.id, a.seq), (b.id, b.seq));
    assert_eq!(handle.stats().store_fact.depth, 1);
    drop(handle);
    writer.join();
    assert_eq!(movement_sum(&path), -1);
}

#[test]
fn telemetry_beyond_its_quota_drops_the_oldest_and_never_a_store_fact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let mut s = settings();
    s.telemetry_quota_rows = 10;
    let (handle, writer) = OutboxWriter::start(&path, s).expect("start");
    for _ in 0..3 {
        handle
            .append_blocking(request(RetentionClass::StoreFact, None))
            .expect("fact");
    }
    for _ in 0..25 {
        handle
            .append_blocking(request(RetentionClass::Telemetry, None))
            .expect("telemetry");
    }
    let stats = handle.stats();
    assert_eq!(stats.telemetry.depth, 10);
    assert_eq!(stats.telemetry.dropped, 15);
    assert_eq!(stats.store_fact.depth, 3);
    drop(handle);
    writer.join();
    let conn = storage::open_reader(&path).expect("reader");
    let oldest_telemetry: i64 = conn
        .query_row("SELECT MIN(seq) FROM events WHERE class = 1", [], |r| {
            r.get(0)
        })
        .expect("min");
    assert_eq!(
        oldest_telemetry,
        3 + 15 + 1,
        "the 15 oldest telemetry events were dropped"
    );
    assert_eq!(stats::read(&conn).expect("stats").store_fact.depth, 3);
}

#[test]
fn below_the_disk_watermark_telemetry_is_refused_but_store_facts_are_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let mut s = settings();
    s.low_free_mb = 1 << 40; // more than any disk has: always below the watermark
    let (handle, writer) = OutboxWriter::start(&path, s).expect("start");
    let refused = handle.append_blocking(request(RetentionClass::Telemetry, None));
    assert!(
        matches!(refused, Err(OutboxError::DiskLow { .. })),
        "{refused:?}"
    );
    assert!(
        handle
            .append_blocking(request(RetentionClass::StoreFact, None))
            .is_ok()
    );
    assert!(handle.alarms().iter().any(|a| a.code == "disk_low"));
    drop(handle);
    writer.join();
}

#[test]
fn a_disk_below_the_watermark_raises_its_alarm_at_startup_before_any_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let mut s = settings();
    s.low_free_mb = 1 << 40;
    let (handle, writer) = OutboxWriter::start(&path, s).expect("start");
    let deadline = Instant::now() + Duration::from_secs(5);
    let alarm = loop {
        if let Some(alarm) = handle.alarms().into_iter().find(|a| a.code == "disk_low") {
            break alarm;
        }
        assert!(
            Instant::now() < deadline,
            "no disk_low alarm without an append"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // One direction everywhere: the watermark comes down, never up.
    assert!(
        alarm.message.contains("lower disk.low_free_mb"),
        "{}",
        alarm.message
    );
    assert!(!alarm.message.contains("raise"), "{}", alarm.message);
    drop(handle);
    writer.join();
}

#[test]
fn a_seq_floor_lifts_the_next_sequence_number() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let mut s = settings();
    s.seq_floor = 5000;
    let (handle, writer) = OutboxWriter::start(&path, s).expect("start");
    let a = handle
        .append_blocking(request(RetentionClass::StoreFact, None))
        .expect("append");
    assert_eq!(a.seq, 5001);
    drop(handle);
    writer.join();
}

#[test]
fn concurrent_producers_each_get_a_distinct_durable_sequence_number() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("start");
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let h = handle.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| {
                        let key = format!("{t}-{i}");
                        h.append_blocking(request(RetentionClass::StoreFact, Some(&key)))
                            .map(|a| a.seq)
                    })
                    .collect::<Result<Vec<u64>, _>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("thread").expect("appends"))
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 800);
    assert_eq!(seqs.last().copied(), Some(800));
    drop(handle);
    writer.join();
    assert_eq!(movement_sum(&path), -800);
}

/// Names of this process's threads, from procfs.
#[cfg(target_os = "linux")]
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("procfs")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

/// A SKU's movements after `watermark` as a lookup sums them (outbox attached as `facts`).
fn local_movements(path: &Path, sku: &str, watermark: i64) -> i64 {
    let conn = Connection::open_in_memory().expect("memory");
    conn.execute("ATTACH ?1 AS facts", [path.to_string_lossy()])
        .expect("attach");
    // As a connection that does not know whether its snapshot has unfiled movements.
    crate::storage::register_all_filed(&conn, Default::default()).expect("function");
    let sql = format!("SELECT {}", crate::outbox::movements_after("?1", "?2"));
    conn.query_row(&sql, params![sku, watermark], |r| r.get(0))
        .expect("sum")
}

fn meta_value(path: &Path, key: &str) -> i64 {
    let conn = storage::open_reader(path).expect("reader");
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .expect("meta")
}

#[test]
fn movements_are_filed_by_sku_when_the_writer_idles_and_lookups_count_them_the_same_before_and_after()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("start");
    let burst = (0..3000).map(|i| {
        let key = format!("m-{i}");
        movement(&format!("SKU-{}", i % 3), if i % 3 == 2 { 5 } else { -1 }).with_key(claim(&key))
    });
    let appended = handle.append_pipelined_blocking(burst).expect("appends");
    let last = appended.last().map_or(0, |a| a.seq) as i64;
    // Right after the burst most of it is not filed yet; the sum is exact anyway.
    assert!(meta_value(&path, "sku_indexed_upto") < last);
    assert_eq!(local_movements(&path, "SKU-0", 0), -1000);
    assert_eq!(local_movements(&path, "SKU-2", 0), 5000);
    // Past a watermark only the later movements count.
    assert_eq!(local_movements(&path, "SKU-1", last - 30), -10);
    let deadline = Instant::now() + Duration::from_secs(10);
    while meta_value(&path, "sku_indexed_upto") < last && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        meta_value(&path, "sku_indexed_upto"),
        last,
        "an idle writer files every movement"
    );
    assert_eq!(local_movements(&path, "SKU-0", 0), -1000);
    assert_eq!(local_movements(&path, "SKU-2", 0), 5000);
    assert_eq!(local_movements(&path, "SKU-1", last - 30), -10);
    drop(handle);
    writer.join();
    assert_eq!(count_rows(&path, "sku_movements"), 3000);
}

fn count_rows(path: &Path, table: &str) -> i64 {
    let conn = storage::open_reader(path).expect("reader");
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

/// A one-unit sale of `sku` under `key`: the answer names the SKU, so a replay shows which
/// request's answer it carries.
fn keyed(key: &str, sku: &str) -> AppendRequest {
    movement(sku, -1).with_key(claim(key))
}

fn answer_of(sku: &str) -> String {
    format!("{{\"sku\":\"{sku}\",\"stock_applied\":true}}")
}

#[test]
fn a_key_used_before_a_restart_gets_its_first_answer_after_it_both_before_and_after_filing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("start");
    let burst = (0..500).map(|i| keyed(&format!("till-{i}"), &format!("S-{i}")));
    let first = handle.append_pipelined_blocking(burst).expect("burst");
    drop(handle);
    writer.join();
    // A crash mid-burst leaves every key unfiled; whatever the writer filed goes back.
    rusqlite::Connection::open(&path)
        .expect("open")
        .execute_batch(
            "INSERT INTO unfiled_keys(seq, client_key, id, answer, fingerprint)
                 SELECT seq, client_key, id, answer, fingerprint FROM idempotency;
             DELETE FROM idempotency;",
        )
        .expect("unfile");
    assert_eq!(count_rows(&path, "unfiled_keys"), 500);

    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("restart");
    let again = handle
        .append_blocking(keyed("till-123", "S-other"))
        .expect("retry after restart");
    assert!(again.replayed, "the key survived the restart unfiled");
    assert_eq!((again.id, again.seq), (first[123].id, first[123].seq));
    assert_eq!(again.answer, Some(answer_of("S-123")));
    let deadline = Instant::now() + Duration::from_secs(10);
    while count_rows(&path, "unfiled_keys") > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        count_rows(&path, "unfiled_keys"),
        0,
        "an idle writer files every key"
    );
    assert_eq!(count_rows(&path, "idempotency"), 500);
    let filed = handle
        .append_blocking(keyed("till-499", "S-x"))
        .expect("retry after filing");
    assert!(filed.replayed);
    assert_eq!(filed.seq, first[499].seq);
    assert_eq!(filed.answer, Some(answer_of("S-499")));
    let fresh = handle
        .append_blocking(keyed("till-500", "S-500"))
        .expect("new key");
    assert!(!fresh.replayed);
    assert_eq!(handle.stats().store_fact.depth, 501);
    drop(handle);
    writer.join();
    assert_eq!(movement_sum(&path), -501);
}

#[test]
fn the_same_key_twice_in_one_group_is_recorded_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("start");
    let answers = handle
        .append_pipelined_blocking([
            keyed("twice", "S-1"),
            keyed("other", "S-2"),
            keyed("twice", "S-3"),
        ])
        .expect("appends");
    assert!(!answers[0].replayed && !answers[1].replayed);
    assert!(answers[2].replayed);
    assert_eq!(answers[2].seq, answers[0].seq);
    assert_eq!(answers[2].answer, Some(answer_of("S-1")));
    drop(handle);
    writer.join();
    assert_eq!(movement_sum(&path), -2);
    assert_eq!(
        count_rows(&path, "unfiled_keys") + count_rows(&path, "idempotency"),
        2
    );
}

#[test]
fn an_outbox_from_before_the_sku_table_is_migrated_with_every_movement_filed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    {
        let mut conn = storage::open_writer(&path, Durability::StoreFacts).expect("open");
        storage::migrate(&mut conn, &path, &crate::outbox::MIGRATIONS[..2]).expect("v2");
        for seq in 1..=50_i64 {
            conn.execute(
                "INSERT INTO stock_movements(seq, sku, delta, kind, wall_ms)
                 VALUES (?1, ?2, -1, 'sale', 0)",
                params![seq, format!("SKU-{}", seq % 2)],
            )
            .expect("movement");
        }
    }
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("start");
    drop(handle);
    writer.join();
    assert_eq!(meta_value(&path, "sku_indexed_upto"), 50);
    assert_eq!(local_movements(&path, "SKU-0", 0), -25);
    assert_eq!(local_movements(&path, "SKU-1", 40), -5);
    assert_eq!(count_rows(&path, "sku_movements"), 50);
}

#[test]
fn a_burst_is_left_in_the_wal_until_the_writer_idles_then_folded_in_and_the_wal_shrinks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let wal = dir.path().join("outbox.db-wal");
    let mut s = settings();
    s.checkpoint_pages = 64;
    let limit = u64::from(s.checkpoint_pages) * 1024;
    let (handle, writer) = OutboxWriter::start(&path, s).expect("start");
    let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let main_before = len(&path);
    // One burst: several times `checkpoint_pages` of WAL, under the burst budget.
    let burst = (0..600).map(|i| {
        let key = format!("burst-{i}");
        movement(&format!("SKU-{:05}", (i * 7919) % 10_000), -1).with_key(claim(&key))
    });
    handle.append_pipelined_blocking(burst).expect("appends");
    let wal_after_burst = len(&wal);
    assert!(
        wal_after_burst > 2 * limit,
        "the burst wrote {wal_after_burst} bytes of WAL, expected well past {limit}"
    );
    // Idle: the checkpointer copies the burst into outbox.db.
    let deadline = Instant::now() + Duration::from_secs(10);
    while len(&path) <= main_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        len(&path) > main_before,
        "outbox.db stayed {main_before} bytes: an idle writer did not have the WAL folded in"
    );
    // The next commit rewinds the WAL, and the size limit cuts the file back.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    while len(&wal) > limit + 16 * 1048 && Instant::now() < deadline {
        let key = format!("after-{n}");
        handle
            .append_blocking(request(RetentionClass::StoreFact, Some(&key)))
            .expect("append");
        n += 1;
        std::thread::sleep(Duration::from_millis(60));
    }
    assert!(
        len(&wal) <= limit + 16 * 1048,
        "the WAL stayed {} bytes after the fold (was {wal_after_burst})",
        len(&wal)
    );
    drop(handle);
    writer.join();
    assert_eq!(movement_sum(&path), -600 - n);
}

#[cfg(target_os = "linux")]
#[test]
fn the_checkpointer_thread_folds_the_wal_into_the_database_and_keeps_it_bounded_under_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let wal = dir.path().join("outbox.db-wal");
    let mut s = settings();
    s.checkpoint_pages = 64;
    let hard = u64::from(s.checkpoint_pages * (BURST_FACTOR + CHECKPOINT_HARD_EXTRA));
    let (handle, writer) = OutboxWriter::start(&path, s).expect("start");
    // A new thread names itself once it runs, so its name may show a moment after start.
    // Linux keeps the first 15 bytes of a thread's name.
    let named = |deadline: Instant| loop {
        if thread_names()
            .iter()
            .any(|n| n == &"outbox-checkpointer"[..15])
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        named(Instant::now() + Duration::from_secs(10)),
        "a checkpoint_pages > 0 writer runs its checkpointer thread"
    );
    let mut largest_wal = 0;
    for round in 0..40 {
        let requests = (0..250).map(|i| {
            let key = format!("{round}-{i}");
            // Spread the movements over many SKUs so each group dirties many index pages.
            movement(&format!("SKU-{:05}", (i * 7919 + round * 31) % 10_000), -1)
                .with_key(claim(&key))
        });
        handle.append_pipelined_blocking(requests).expect("appends");
        largest_wal = largest_wal.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    // While the writer still runs (no shutdown TRUNCATE yet) the database file holds the
    // appends: only checkpoints copy pages there.
    let main_len = std::fs::metadata(&path).expect("outbox.db").len();
    // 10,000 appends write tens of MB of WAL frames; a WAL that was never rewound would
    // hold them all. Bounded: twice the hard limit plus one group of 64 events.
    let frame = 24 + 1024;
    let bound = (2 * hard + 64 * 16) * frame;
    assert!(
        largest_wal <= bound,
        "the WAL reached {largest_wal} bytes, over its bound of {bound}"
    );
    // A fresh outbox.db is its schema: a few pages.
    assert!(
        main_len > 256 * 1024,
        "outbox.db is {main_len} bytes: the WAL was not folded in while the writer ran"
    );
    drop(handle);
    writer.join();
    assert_eq!(movement_sum(&path), -10_000);
    assert_eq!(
        std::fs::metadata(&wal).map_or(0, |m| m.len()),
        0,
        "TRUNCATE at shutdown"
    );
}

/// A ticket of `lines` (sku, qty) as the API hands it to the writer.
fn ticket(lines: &[(&str, i64)]) -> AppendRequest {
    AppendRequest::fact(StoreFact::Sale(crate::domain::Sale::plain(
        crate::domain::SaleRecorded {
            receipt: None,
            lines: lines
                .iter()
                .map(|(sku, qty)| crate::domain::FactLine {
                    sku: Some((*sku).into()),
                    gtin: None,
                    qty: *qty,
                    unit_price_minor: None,
                    stock_applied: true,
                    original_line: None,
                    points: None,
                })
                .collect(),
            total_minor: None,
            currency: None,
            customer_id: None,
            earn_per_minor_units: None,
            points_earned: None,
            client_key: None,
            by: "till-1".into(),
        },
    )))
}

fn sku_sum(path: &Path, sku: &str) -> i64 {
    let conn = storage::open_reader(path).expect("reader");
    conn.query_row(
        "SELECT COALESCE(SUM(delta), 0) FROM stock_movements WHERE sku = ?1",
        [sku],
        |r| r.get(0),
    )
    .expect("sum")
}

#[test]
fn a_ticket_of_several_lines_with_the_same_item_twice_records_one_movement_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("start");
    let sale = handle
        .append_blocking(ticket(&[("MILK", 2), ("BREAD", 1), ("MILK", 3)]))
        .expect("a three-line ticket is recorded");
    assert!(!sale.replayed);
    // The next ticket is recorded too: nothing of the first one is left half-done.
    handle
        .append_blocking(ticket(&[("MILK", 1), ("EGGS", 12)]))
        .expect("the next ticket");
    let deadline = Instant::now() + Duration::from_secs(10);
    while meta_value(&path, "sku_indexed_upto") < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        local_movements(&path, "MILK", 0),
        -6,
        "filed by SKU, both lines counted"
    );
    drop(handle);
    writer.join();
    assert_eq!(sku_sum(&path, "MILK"), -6);
    assert_eq!(sku_sum(&path, "BREAD"), -1);
    assert_eq!(sku_sum(&path, "EGGS"), -12);
    assert_eq!(count_rows(&path, "stock_movements"), 5);
    assert_eq!(count_rows(&path, "sku_movements"), 5);
}

#[test]
fn a_fact_the_database_refuses_is_refused_alone_and_the_rest_of_its_group_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("create");
    drop(handle);
    writer.join();
    // A constraint of the database's own, as a damaged row or a future rule might raise it.
    rusqlite::Connection::open(&path)
        .expect("open")
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON stock_movements WHEN NEW.sku = 'POISON'
             BEGIN SELECT RAISE(ABORT, 'this SKU is poisoned'); END;",
        )
        .expect("trigger");
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("start");
    let answers: Vec<_> = {
        let receivers: Vec<_> = [
            ticket(&[("A", 1), ("B", 2)]).with_key(claim("t1")),
            ticket(&[("A", 1), ("POISON", 1)]).with_key(claim("t2")),
            ticket(&[("B", 1), ("A", 4)]).with_key(claim("t3")),
        ]
        .into_iter()
        .map(|r| {
            let (reply, answer) = oneshot::channel();
            handle
                .sender
                .blocking_send(WriterCommand::Append { request: r, reply })
                .expect("queue");
            answer
        })
        .collect();
        receivers
            .into_iter()
            .map(|r| r.blocking_recv().expect("answer"))
            .collect()
    };
    let first = answers[0].as_ref().expect("the first ticket commits");
    assert!(
        matches!(&answers[1], Err(OutboxError::NotRecordable(why)) if why.contains("poisoned")),
        "{:?}",
        answers[1]
    );
    let third = answers[2].as_ref().expect("the third ticket commits");
    assert_eq!(third.seq, first.seq + 1, "the refused fact used no seq");
    // Its key is free: the corrected ticket gets it.
    let corrected = handle
        .append_blocking(ticket(&[("A", 1)]).with_key(claim("t2")))
        .expect("corrected");
    assert!(!corrected.replayed);
    drop(handle);
    writer.join();
    assert_eq!(sku_sum(&path, "A"), -6);
    assert_eq!(sku_sum(&path, "B"), -3);
    assert_eq!(sku_sum(&path, "POISON"), 0);
    assert_eq!(count_rows(&path, "events"), 3);
}

#[test]
fn a_key_reused_with_another_request_is_refused_and_records_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("start");
    let first = handle.append_blocking(keyed("k", "S-1")).expect("first");
    let mut other = movement("S-2", -5).with_key(claim("k"));
    if let Some(c) = other.idempotency.as_mut() {
        c.fingerprint = [8; 32];
    }
    match handle.append_blocking(other) {
        Err(OutboxError::KeyReused { key, seq }) => {
            assert_eq!((key.as_str(), seq), ("k", first.seq));
        }
        other => panic!("expected KeyReused, got {other:?}"),
    }
    // The same key from another caller, or on another route, is another fact.
    let elsewhere = [
        IdempotencyClaim::new("till-2", "POST /v1/movements", "k", [7; 32]),
        IdempotencyClaim::new("till-1", "POST /v1/sales", "k", [7; 32]),
    ];
    for claim in elsewhere {
        let a = handle
            .append_blocking(movement("S-3", -1).with_key(claim))
            .expect("another scope");
        assert!(!a.replayed);
    }
    let retry = handle.append_blocking(keyed("k", "S-1")).expect("retry");
    assert!(retry.replayed);
    assert_eq!(retry.seq, first.seq);
    drop(handle);
    writer.join();
    assert_eq!(sku_sum(&path, "S-2"), 0);
    assert_eq!(movement_sum(&path), -3);
}

#[test]
fn deliveries_carried_by_a_group_that_fails_are_deleted_by_the_next_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("start");
    let seqs: Vec<u64> = (0..3)
        .map(|_| {
            handle
                .append_blocking(request(RetentionClass::StoreFact, None))
                .expect("append")
                .seq
        })
        .collect();
    drop(handle);
    writer.join();
    // Deleting delivered events fails once (as a failing disk would fail the group).
    rusqlite::Connection::open(&path)
        .expect("open")
        .execute_batch(
            "CREATE TABLE fail_once(n INTEGER); INSERT INTO fail_once VALUES (1);
             CREATE TRIGGER fail_delete BEFORE DELETE ON events
             WHEN (SELECT n FROM fail_once) = 1
             BEGIN SELECT RAISE(ABORT, 'delete failed'); END;",
        )
        .expect("trigger");
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("restart");
    handle
        .sender
        .blocking_send(WriterCommand::Delivered {
            ranges: vec![[seqs[0], seqs[2]]],
        })
        .expect("delivered");
    let failed = handle.append_blocking(request(RetentionClass::StoreFact, None));
    assert!(
        matches!(failed, Err(OutboxError::Commit(_))),
        "the group failed: {failed:?}"
    );
    assert_eq!(handle.stats().store_fact.depth, 3);
    rusqlite::Connection::open(&path)
        .expect("open")
        .execute_batch("UPDATE fail_once SET n = 0")
        .expect("heal");
    handle
        .append_blocking(request(RetentionClass::StoreFact, None))
        .expect("the next group commits");
    assert_eq!(
        handle.stats().store_fact.depth,
        1,
        "the three delivered events were deleted by the next group"
    );
    drop(handle);
    writer.join();
    assert_eq!(count_rows(&path, "events"), 1);
}

#[test]
fn an_outbox_from_before_scoped_keys_and_line_movements_is_migrated_keeping_every_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    {
        let mut conn = storage::open_writer(&path, Durability::StoreFacts).expect("open");
        storage::migrate(&mut conn, &path, &crate::outbox::MIGRATIONS[..4]).expect("v4");
        conn.execute_batch(
            r#"
            INSERT INTO events(seq, id, class, type, schema, boot, wall_ms, mono_ns, payload)
              VALUES (2, X'00000000000000000000000000000002', 0, 'sale.recorded', 1, 1, 0, 0,
                      '{"by":"till-7","client_key":"r-2"}');
            INSERT INTO stock_movements(seq, sku, delta, kind, wall_ms) VALUES (1, 'A', -1, 'sale', 0);
            INSERT INTO stock_movements(seq, sku, delta, kind, wall_ms) VALUES (2, 'A', -2, 'sale', 0);
            INSERT INTO sku_movements(sku, seq, delta) VALUES ('A', 1, -1);
            UPDATE meta SET value = 1 WHERE key = 'sku_indexed_upto';
            INSERT INTO loyalty_ops(seq, customer_id, points, wall_ms) VALUES (2, 'C', 10, 0);
            INSERT INTO idempotency(client_key, seq, id, answer)
              VALUES ('r-1', 1, X'00000000000000000000000000000001', '{"n":1}');
            INSERT INTO unfiled_keys(seq, client_key, id, answer)
              VALUES (2, 'r-2', X'00000000000000000000000000000002', '{"n":2}');
            UPDATE meta SET value = 2 WHERE key = 'last_seq';
            "#,
        )
        .expect("a v4 outbox");
    }
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("migrate and start");
    // r-2's event was still here: the key is now till-7's on the sales route.
    let scoped = IdempotencyClaim::new("till-7", "POST /v1/sales", "r-2", [9; 32]);
    let again = handle
        .append_blocking(ticket(&[("A", 1)]).with_key(scoped))
        .expect("till-7's retry");
    assert!(again.replayed);
    assert_eq!((again.seq, again.answer.as_deref()), (2, Some("{\"n\":2}")));
    let other_till = IdempotencyClaim::new("till-8", "POST /v1/sales", "r-2", [9; 32]);
    assert!(
        !handle
            .append_blocking(ticket(&[("A", 1)]).with_key(other_till))
            .expect("till-8")
            .replayed,
        "another till's key of the same name is its own"
    );
    // r-1's event was delivered before the upgrade: its caller is unknown, so the raw key
    // still replays (never applies twice), for any caller.
    let legacy = IdempotencyClaim::new("anyone", "POST /v1/sales", "r-1", [9; 32]);
    let replay = handle
        .append_blocking(ticket(&[("A", 1)]).with_key(legacy))
        .expect("legacy retry");
    assert!(replay.replayed);
    assert_eq!(
        (replay.seq, replay.answer.as_deref()),
        (1, Some("{\"n\":1}"))
    );
    drop(handle);
    writer.join();
    assert_eq!(local_movements(&path, "A", 0), -4, "1 + 2 before, 1 after");
    assert_eq!(count_rows(&path, "loyalty_ops"), 1);
}

#[test]
fn a_delivery_of_thousands_is_deleted_a_few_thousand_per_group_and_a_range_past_the_newest_seq_ends()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("start");
    let n = 3 * DELETES_PER_GROUP + 100;
    let appended = handle
        .append_pipelined_blocking((0..n).map(|_| request(RetentionClass::StoreFact, None)))
        .expect("appends");
    let last = appended.last().map_or(0, |a| a.seq);
    // Central acknowledges all of it, and more than was ever sent.
    handle
        .sender
        .blocking_send(WriterCommand::Delivered {
            ranges: vec![[1, u64::MAX]],
        })
        .expect("delivered");
    let deadline = Instant::now() + Duration::from_secs(20);
    while handle.stats().store_fact.depth > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        handle.stats().store_fact.depth,
        0,
        "every delivered event deleted"
    );
    // The writer is free again: a new fact is recorded after the last seq.
    let next = handle
        .append_blocking(request(RetentionClass::StoreFact, None))
        .expect("append");
    assert_eq!(next.seq, last + 1);
    drop(handle);
    writer.join();
    assert_eq!(count_rows(&path, "events"), 1);
}

#[test]
fn under_sustained_load_the_unfiled_movements_stay_bounded_in_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("start");
    // Five-line tickets, pipelined: the writer never idles for IDLE_FOLD_AFTER.
    let tickets = 2 * UNFILED_ROWS_MAX / 5;
    let lines = [("A", 1), ("B", 1), ("C", 1), ("D", 1), ("E", 1)];
    handle
        .append_pipelined_blocking((0..tickets).map(|_| ticket(&lines)))
        .expect("tickets");
    let conn = storage::open_reader(&path).expect("reader");
    let unfiled: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM stock_movements
             WHERE seq > (SELECT value FROM meta WHERE key = 'sku_indexed_upto')",
            [],
            |r| r.get(0),
        )
        .expect("unfiled");
    assert!(
        (unfiled as u64) < UNFILED_ROWS_MAX + FILE_CHUNK as u64 + 64 * 5,
        "{unfiled} unfiled rows after {} written",
        tickets * 5
    );
    drop(handle);
    writer.join();
    assert_eq!(local_movements(&path, "A", 0), -(tickets as i64));
}
