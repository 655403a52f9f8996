//! Store facts numbered without a gap (`fact_seq`, ADR 0026), whatever comes between them.
use super::*;
use crate::domain::{LoyaltyBaseline, LoyaltyOperation, LoyaltyRecorded};
use crate::outbox::delivery::{self, FetchQuery};
use crate::outbox::{EventDraft, MovementKind, StoreFact};

fn settings() -> WriterSettings {
    WriterSettings {
        group_commit_max: 64,
        telemetry_quota_rows: 3,
        low_free_mb: 0,
        seq_floor: 0,
        checkpoint_pages: DEFAULT_CHECKPOINT_PAGES,
        prune: Default::default(),
    }
}

fn sale(sku: &str) -> AppendRequest {
    AppendRequest::fact(StoreFact::stock_movement(MovementKind::Sale, sku, 1))
}

fn scan() -> AppendRequest {
    AppendRequest::event(EventDraft {
        event_type: "scan.read",
        schema: 1,
        class: RetentionClass::Telemetry,
        payload_json: r#"{"code":"3001000000004"}"#.into(),
    })
}

/// A burn the rules refuse: the customer has no points.
fn refused_burn() -> AppendRequest {
    AppendRequest::fact(StoreFact::Loyalty(LoyaltyOperation {
        recorded: LoyaltyRecorded {
            customer_id: "C1".into(),
            points: -50,
            receipt: None,
            client_key: None,
            by: "till-1".into(),
        },
        baseline: LoyaltyBaseline {
            central_balance: 0,
            watermark_seq: 0,
        },
        burn_cap: 1_000,
        balance_after: None,
    }))
}

/// (seq, fact_seq, fact_epoch) of every event still queued, in seq order.
fn numbering(path: &Path) -> Vec<(u64, Option<u64>, Option<u32>)> {
    let conn = storage::open_reader(path).expect("reader");
    stats::after(&conn, "s/a", 0, 10_000)
        .expect("events")
        .into_iter()
        .map(|e| (e.seq, e.fact_seq, e.fact_epoch))
        .collect()
}

#[test]
fn store_facts_are_numbered_without_a_gap_whatever_telemetry_refusals_and_restarts_come_between() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("start");
    let epoch = handle.stats().fact_epoch;
    assert!(epoch > 0, "a new outbox draws its numbering");
    let mut fact_seqs = Vec::new();
    for round in 0..4 {
        for _ in 0..3 {
            handle.append_blocking(scan()).expect("scan");
        }
        assert!(matches!(
            handle.append_blocking(refused_burn()),
            Err(OutboxError::Refused(_))
        ));
        let appended = handle
            .append_blocking(sale(&format!("SKU-{round}")))
            .expect("sale");
        fact_seqs.push(appended.seq);
    }
    let stats = handle.stats();
    assert_eq!(stats.last_fact_seq, 4);
    assert_eq!(stats.last_seq, *fact_seqs.last().expect("facts"));
    drop(handle);
    writer.join();
    // Telemetry over its quota (3 rows) was dropped: `seq` has gaps, `fact_seq` none.
    let queued = numbering(&path);
    let facts: Vec<_> = queued.iter().filter(|(_, f, _)| f.is_some()).collect();
    assert_eq!(
        facts
            .iter()
            .map(|(_, f, _)| f.unwrap_or(0))
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(
        facts.iter().map(|(s, _, _)| *s).collect::<Vec<_>>(),
        fact_seqs
    );
    assert!(facts.iter().all(|(_, _, e)| *e == Some(epoch)));
    assert!(
        queued
            .iter()
            .filter(|(_, f, _)| f.is_none())
            .all(|(_, _, e)| e.is_none()),
        "telemetry carries no fact number"
    );

    // Every fact delivered and deleted, then a restart: the numbering goes on from 5.
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("restart");
    handle
        .sender
        .blocking_send(WriterCommand::Delivered {
            ranges: vec![[1, 1_000]],
        })
        .expect("deliver");
    handle
        .append_blocking(scan())
        .expect("a group to carry the delete");
    drop(handle);
    writer.join();
    assert!(numbering(&path).iter().all(|(_, f, _)| f.is_none()));
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("restart");
    handle.append_blocking(sale("SKU-9")).expect("sale");
    assert_eq!(handle.stats().last_fact_seq, 5);
    assert_eq!(
        handle.stats().fact_epoch,
        epoch,
        "the same file keeps its numbering"
    );
    drop(handle);
    writer.join();
}

#[test]
fn an_outbox_from_before_fact_numbering_numbers_its_queued_store_facts_in_seq_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    {
        let mut conn = rusqlite::Connection::open(&path).expect("open");
        let step = crate::outbox::MIGRATIONS
            .iter()
            .position(|sql| sql.contains("ADD COLUMN fact_seq"))
            .expect("the numbering's step");
        let before = &crate::outbox::MIGRATIONS[..step];
        storage::migrate(&mut conn, &path, before).expect("previous schema");
        // Store facts at seq 2, 5 and 6 between telemetry, as an older agent left them.
        for (seq, class) in [(2, 0), (3, 1), (5, 0), (6, 0), (7, 1)] {
            conn.execute(
                "INSERT INTO events(seq, id, class, type, schema, boot, wall_ms, mono_ns, payload)
                 VALUES (?1, randomblob(16), ?2, 'stock.movement', 1, 1, 0, 0, '{}')",
                [seq, class],
            )
            .expect("row");
        }
    }
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("migrate");
    assert_eq!(handle.stats().last_fact_seq, 3);
    let next = handle.append_blocking(sale("SKU-1")).expect("sale");
    assert_eq!(next.seq, 8);
    drop(handle);
    writer.join();
    let facts: Vec<(u64, u64)> = numbering(&path)
        .into_iter()
        .filter_map(|(s, f, _)| Some((s, f?)))
        .collect();
    assert_eq!(facts, vec![(2, 1), (5, 2), (6, 3), (8, 4)]);
}

#[test]
fn the_uplink_sends_a_facts_number_and_epoch_and_telemetry_without_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("start");
    handle.append_blocking(sale("SKU-1")).expect("sale");
    handle.append_blocking(scan()).expect("scan");
    let epoch = handle.stats().fact_epoch;
    drop(handle);
    writer.join();
    let conn = storage::open_reader(&path).expect("reader");
    let fetch = |class| {
        delivery::fetch(
            &conn,
            "s/a",
            FetchQuery {
                class,
                after: 0,
                before: u64::MAX,
                max_events: 10,
                max_bytes: 1 << 20,
            },
        )
        .expect("fetch")
        .events
    };
    let fact: crate::outbox::Envelope =
        serde_json::from_str(&fetch(RetentionClass::StoreFact)[0].json).expect("envelope");
    assert_eq!((fact.fact_seq, fact.fact_epoch), (Some(1), Some(epoch)));
    let telemetry = &fetch(RetentionClass::Telemetry)[0].json;
    assert!(!telemetry.contains("fact_seq") && !telemetry.contains("fact_epoch"));
}
