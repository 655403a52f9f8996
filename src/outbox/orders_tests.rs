//! Web orders in the outbox: the migration of whole-order hand-overs to lines, and a line
//! released once through the real writer.
use super::*;
use crate::domain::{HandedOverLine, PickupCollected, StoreFact};
use crate::outbox::{AppendRequest, OutboxError};

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

fn collect(order_id: &str, lines: &[i64]) -> AppendRequest {
    AppendRequest::fact(StoreFact::PickupCollected(PickupCollected {
        order_id: order_id.into(),
        pickup_code: "PU".into(),
        lines: lines
            .iter()
            .map(|line| HandedOverLine {
                line: *line,
                sku: "A".into(),
                qty: 1,
                status: "picked".into(),
            })
            .collect(),
        was_ready: true,
        partial: false,
        client_key: None,
        by: "till-1".into(),
    }))
}

fn refused_lines(result: Result<crate::outbox::Appended, OutboxError>) -> Vec<i64> {
    match result {
        Err(OutboxError::Refused(crate::domain::FactRefused::AlreadyCollected {
            lines, ..
        })) => lines,
        other => panic!("expected already_collected, got {other:?}"),
    }
}

#[test]
fn orders_collected_before_hand_overs_were_per_line_stay_collected_line_by_line_or_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.db");
    let before = crate::outbox::MIGRATIONS
        .iter()
        .position(|sql| sql.contains("CREATE TABLE released_lines"))
        .expect("the per-line step");
    {
        let mut conn = storage::open_writer(&path, Durability::StoreFacts).expect("open");
        storage::migrate(&mut conn, &path, &crate::outbox::MIGRATIONS[..before]).expect("old");
        conn.execute_batch(
            r#"
            INSERT INTO events(seq, id, class, type, schema, boot, wall_ms, mono_ns, payload)
              VALUES (1, X'00000000000000000000000000000001', 0, 'pickup.collected', 1, 1, 5, 0,
                      '{"order_id":"WEB-1","lines":[{"line":1,"sku":"A","qty":1,"status":"picked"},
                                                  {"line":3,"sku":"B","qty":2,"status":"picked"}]}');
            INSERT INTO collected_orders(order_id, seq, wall_ms) VALUES ('WEB-1', 1, 5);
            -- Its event already delivered and gone: the whole order stays collected.
            INSERT INTO collected_orders(order_id, seq, wall_ms) VALUES ('WEB-OLD', 0, 4);
            UPDATE meta SET value = 1 WHERE key = 'last_seq';
            "#,
        )
        .expect("an outbox with whole-order hand-overs");
    }
    {
        let mut conn = storage::open_writer(&path, Durability::StoreFacts).expect("open");
        storage::migrate(&mut conn, &path, crate::outbox::MIGRATIONS).expect("migrated");
        let mut rows: Vec<(String, i64, i64)> = conn
            .prepare("SELECT order_id, line, seq FROM released_lines ORDER BY order_id, line")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        rows.sort();
        assert_eq!(
            rows,
            vec![
                ("WEB-1".to_owned(), 1, 1),
                ("WEB-1".to_owned(), 3, 1),
                ("WEB-OLD".to_owned(), crate::domain::WHOLE_ORDER, 0),
            ]
        );
    }
    let (handle, writer) = OutboxWriter::start(&path, settings()).expect("start");
    assert_eq!(
        refused_lines(handle.append_blocking(collect("WEB-1", &[3]))),
        [3]
    );
    handle
        .append_blocking(collect("WEB-1", &[2]))
        .expect("line 2 was never handed over");
    assert_eq!(
        refused_lines(handle.append_blocking(collect("WEB-OLD", &[7]))),
        [7],
        "every line of an order migrated whole"
    );
    drop(handle);
    writer.join();
}
