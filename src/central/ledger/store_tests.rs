//! The ledger's storage: facts applied once, in order, never past a gap; central's channel
//! applied once per op; rows sent again when the agent's own fact moved them.

use super::db::{Db, args};
use super::downlink::{build_snapshot, next_deltas};
use super::{Seed, apply_ingested, figures, open, seed, web};
use crate::replica::delta::DeltaOp;
use std::path::Path;

const AGENT: &str = "S1/till-1";

fn sale(sku: &str, qty: i64, customer: Option<(&str, i64)>) -> String {
    let mut v = serde_json::json!({"receipt": null, "lines": [{"sku": sku, "gtin": null, "qty": qty,
        "unit_price_minor": 450, "stock_applied": true}], "total_minor": 450 * qty,
        "currency": "EUR", "client_key": null, "by": "till-1"});
    if let Some((id, points)) = customer {
        v["customer_id"] = id.into();
        v["points_earned"] = points.into();
    }
    v.to_string()
}

/// One statement in a transaction of its own (what an ingest worker's commit leaves).
fn exec(db: &mut Db, sql: &str, args: &[super::db::Arg<'_>]) {
    let mut tx = db.transaction().unwrap();
    tx.exec(sql, args).unwrap();
    tx.commit().unwrap();
}

fn fact(db: &mut Db, fact_seq: i64, seq: i64, event_type: &str, payload: &str) {
    exec(
        db,
        "INSERT INTO events(id, agent, seq, boot, type, class, wall_ms, payload, fact_epoch, fact_seq)
         VALUES ($1, $2, $3, 1, $4, 'store_fact', 0, $5, 7, $6)",
        args![&format!("id-{seq}"), AGENT, seq, event_type, payload, fact_seq],
    );
}

fn held_through(db: &mut Db, contiguous: i64, seq: i64) {
    held_through_for(db, AGENT, contiguous, seq);
}

/// The ingest holds `agent`'s facts without a gap through `contiguous` (its seq `seq`).
fn held_through_for(db: &mut Db, agent: &str, contiguous: i64, seq: i64) {
    exec(
        db,
        "INSERT INTO agent_facts(agent, epoch, contiguous, contiguous_seq, first_seen_ms)
         VALUES ($1, 7, $2, $3, 0)
         ON CONFLICT(agent, epoch) DO UPDATE SET contiguous = excluded.contiguous,
                                                 contiguous_seq = excluded.contiguous_seq",
        args![agent, contiguous, seq],
    );
}

fn seeded(dir: &Path) -> Db {
    let path = dir.join("central.db");
    let mut conn = open(&path.to_string_lossy()).unwrap();
    let stock = dir.join("stock.ndjson");
    std::fs::write(
        &stock,
        "{\"sku\":\"SKU-TEA\",\"on_hand\":10}\n{\"sku\":\"SKU-JAM\",\"on_hand\":4}\n",
    )
    .unwrap();
    let customers = dir.join("customers.ndjson");
    std::fs::write(
        &customers,
        "{\"customer_id\":\"C-7\",\"display_name\":\"Ada\",\"loyalty_balance\":100,\"card_tokens\":[]}\n",
    )
    .unwrap();
    seed(
        &mut conn,
        &Seed::Stock {
            store: "S1".into(),
            path: stock,
        },
    )
    .unwrap();
    seed(&mut conn, &Seed::Customers { path: customers }).unwrap();
    conn
}

fn on_hand(conn: &mut Db, sku: &str) -> i64 {
    figures(conn)
        .unwrap()
        .stock
        .into_iter()
        .find(|(s, k, _)| s == "S1" && k == sku)
        .map_or(0, |r| r.2)
}

#[test]
fn facts_are_applied_once_in_order_and_never_past_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = seeded(dir.path());
    fact(
        &mut conn,
        1,
        3,
        "sale.recorded",
        &sale("SKU-TEA", 2, Some(("C-7", 9))),
    );
    fact(&mut conn, 2, 5, "sale.recorded", &sale("SKU-TEA", 1, None));
    fact(&mut conn, 4, 9, "sale.recorded", &sale("SKU-JAM", 1, None));
    held_through(&mut conn, 2, 5);
    assert_eq!(apply_ingested(&mut conn).unwrap().facts, 2);
    assert_eq!(on_hand(&mut conn, "SKU-TEA"), 7);
    assert_eq!(
        on_hand(&mut conn, "SKU-JAM"),
        4,
        "fact 4 waits behind the missing fact 3"
    );
    assert_eq!(
        apply_ingested(&mut conn).unwrap().facts,
        0,
        "nothing applied twice"
    );
    fact(
        &mut conn,
        3,
        7,
        "stock.movement",
        &serde_json::json!({"kind": "receipt", "sku": "SKU-JAM",
        "gtin": null, "qty": 6, "delta": 6, "client_key": null, "note": null, "stock_applied": true,
        "by": "backoffice"})
        .to_string(),
    );
    held_through(&mut conn, 4, 9);
    assert_eq!(apply_ingested(&mut conn).unwrap().facts, 2);
    let f = figures(&mut conn).unwrap();
    assert_eq!(on_hand(&mut conn, "SKU-JAM"), 9);
    assert_eq!(f.balances, vec![("C-7".to_owned(), 109)]);
    assert_eq!(f.cursors, vec![(AGENT.to_owned(), 4, 9)]);
}

#[test]
fn a_payload_the_rules_cannot_read_is_skipped_and_kept_for_an_operator() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = seeded(dir.path());
    fact(
        &mut conn,
        1,
        1,
        "sale.recorded",
        r#"{"lines": "not lines"}"#,
    );
    fact(
        &mut conn,
        2,
        2,
        "loyalty.earned",
        r#"{"customer_id": "C-404", "points": 5, "receipt": null, "client_key": null, "by": "x"}"#,
    );
    fact(&mut conn, 3, 3, "sale.recorded", &sale("SKU-TEA", 1, None));
    held_through(&mut conn, 3, 3);
    let report = apply_ingested(&mut conn).unwrap();
    assert_eq!((report.facts, report.rejected), (3, 2));
    assert_eq!(
        on_hand(&mut conn, "SKU-TEA"),
        9,
        "the good fact behind them is applied"
    );
    let mut tx = conn.transaction().unwrap();
    let kept = tx
        .row("SELECT COUNT(*) FROM ledger_rejects", &[])
        .unwrap()
        .unwrap()
        .int(0)
        .unwrap();
    drop(tx);
    assert_eq!(kept, 2);
}

#[test]
fn a_row_back_at_its_figure_is_sent_again_when_the_agents_own_sale_moved_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = seeded(dir.path());
    build_snapshot(&mut conn, &dir.path().join("snapshots"), AGENT).unwrap();
    assert!(
        next_deltas(&mut conn, AGENT).unwrap().is_empty(),
        "nothing changed since the snapshot"
    );
    // The till sells one tea; the warehouse delivers one: on-hand is 10 again, but the agent
    // must learn that central now counts its sale (watermark 5), or it would count it twice.
    fact(&mut conn, 1, 5, "sale.recorded", &sale("SKU-TEA", 1, None));
    held_through(&mut conn, 1, 5);
    apply_ingested(&mut conn).unwrap();
    let ops = dir.path().join("web.ndjson");
    std::fs::write(
        &ops,
        r#"{"type":"receipt","op_id":"w1","store":"S1","sku":"SKU-TEA","qty":1}"#,
    )
    .unwrap();
    web::apply_file(&mut conn, &ops).unwrap();
    assert_eq!(on_hand(&mut conn, "SKU-TEA"), 10);
    let deltas = next_deltas(&mut conn, AGENT).unwrap();
    let stock: Vec<_> = deltas
        .iter()
        .filter(|d| d.stream.name() == "stock")
        .collect();
    assert_eq!(stock.len(), 1);
    assert_eq!(
        stock[0].version, 2,
        "the delta follows the snapshot's version"
    );
    let DeltaOp::Upsert { row } = &stock[0].ops[0] else {
        panic!("an upsert")
    };
    assert_eq!(
        row,
        &serde_json::json!({"sku": "SKU-TEA", "on_hand": 10, "watermark_seq": 5})
    );
    assert!(
        next_deltas(&mut conn, AGENT).unwrap().is_empty(),
        "sent once"
    );
}

#[test]
fn a_web_file_fed_twice_applies_once_and_a_bad_line_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = seeded(dir.path());
    let ops = dir.path().join("web.ndjson");
    std::fs::write(
        &ops,
        "{\"type\":\"loyalty\",\"op_id\":\"a\",\"customer_id\":\"C-7\",\"points\":-60}\n\
         {\"type\":\"loyalty\",\"op_id\":\"b\",\"customer_id\":\"C-7\",\"points\":-60}\n\
         {\"type\":\"order\",\"op_id\":\"c\",\"order_id\":\"W-1\",\"store\":\"S1\",\"pickup_code\":\"PU-1\",\
          \"lines\":[{\"line\":1,\"sku\":\"SKU-JAM\",\"qty\":2}]}\n",
    )
    .unwrap();
    let first = web::apply_file(&mut conn, &ops).unwrap();
    assert_eq!(first.applied, 2);
    assert_eq!(
        first.refused.len(),
        1,
        "the second burn would take C-7 below zero"
    );
    assert_eq!(first.refused[0].code, "insufficient_points");
    let again = web::apply_file(&mut conn, &ops).unwrap();
    assert_eq!(
        (again.applied, again.already_applied, again.refused.len()),
        (0, 2, 1)
    );
    let f = figures(&mut conn).unwrap();
    assert_eq!(f.balances, vec![("C-7".to_owned(), 40)]);
    assert_eq!(f.reserved, vec![("S1".to_owned(), "SKU-JAM".to_owned(), 2)]);
    let bad = dir.path().join("bad.ndjson");
    std::fs::write(
        &bad,
        "{\"type\":\"receipt\",\"op_id\":\"d\",\"store\":\"S1\",\"sku\":\"SKU-TEA\",\"qty\":5}\n\
         {\"type\":\"receipt\",\"op_id\":\"e\",\"store\":\"S1\",\"sku\":\"SKU-TEA\",\"qty\":0}\n",
    )
    .unwrap();
    let err = web::apply_file(&mut conn, &bad).unwrap_err().to_string();
    assert!(err.contains("line 2") && err.contains("qty 0"), "{err}");
    assert_eq!(
        on_hand(&mut conn, "SKU-TEA"),
        10,
        "the good line before it was not applied either"
    );
}

#[test]
fn an_erased_customer_is_deleted_from_every_agent_that_held_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = seeded(dir.path());
    build_snapshot(&mut conn, &dir.path().join("snapshots"), AGENT).unwrap();
    let ops = dir.path().join("erase.ndjson");
    std::fs::write(
        &ops,
        r#"{"type":"erase","op_id":"gdpr-1","customer_id":"C-7"}"#,
    )
    .unwrap();
    web::apply_file(&mut conn, &ops).unwrap();
    let deltas = next_deltas(&mut conn, AGENT).unwrap();
    let customers: Vec<_> = deltas
        .iter()
        .filter(|d| d.stream.name() == "customers")
        .collect();
    assert_eq!(
        customers[0].ops,
        vec![DeltaOp::Delete {
            key: serde_json::json!({"customer_id": "C-7"})
        }]
    );
    let mut tx = conn.transaction().unwrap();
    let line = tx
        .row(
            "SELECT line FROM ledger_customers WHERE customer_id = 'C-7'",
            &[],
        )
        .unwrap()
        .unwrap()
        .text(0)
        .unwrap();
    drop(tx);
    assert_eq!(
        line, "{}",
        "the master data is gone; only the id stays, to tell the stores"
    );
    assert!(figures(&mut conn).unwrap().balances.is_empty());
}

/// A fact of any agent, numbered `ingest_order` by the ingest, and held through `fact_seq`.
fn ingested(db: &mut Db, agent: &str, fact_seq: i64, payload: &str, ingest_order: i64) {
    exec(
        db,
        "INSERT INTO events(id, agent, seq, boot, type, class, wall_ms, payload, fact_epoch,
                            fact_seq, ingest_order)
         VALUES ($1, $2, $3, 1, 'coupon.redeemed', 'store_fact', 0, $4, 7, $3, $5)",
        args![
            &format!("{agent}-{fact_seq}"),
            agent,
            fact_seq,
            payload,
            ingest_order
        ],
    );
    held_through_for(db, agent, fact_seq, fact_seq);
}

fn coupon(identity: &str, single_use: bool) -> String {
    serde_json::json!({"coupon": identity, "scheme": "plain", "single_use": single_use,
        "receipt": "R-1", "client_key": null, "by": "till"})
    .to_string()
}

#[test]
fn a_single_use_coupon_taken_in_two_stores_is_a_duplicate_after_the_first_ingested_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = seeded(dir.path());
    // S2 took SPRING10 first by the ingest's order, but S1's redemption is applied first (S2's
    // store was behind): the first ingested still wins. A multi-use coupon is never a duplicate.
    ingested(&mut db, "S1/till-1", 1, &coupon("plain:SPRING10", true), 20);
    ingested(
        &mut db,
        "S1/till-1",
        2,
        &coupon("gs1:0614141:123", false),
        21,
    );
    assert_eq!(apply_ingested(&mut db).unwrap().facts, 2);
    assert!(figures(&mut db).unwrap().coupon_duplicates.is_empty());
    ingested(&mut db, "S2/till-1", 1, &coupon("plain:SPRING10", true), 12);
    ingested(
        &mut db,
        "S2/till-1",
        2,
        &coupon("gs1:0614141:123", false),
        22,
    );
    ingested(&mut db, "S3/till-1", 1, &coupon("plain:SPRING10", true), 30);
    assert_eq!(apply_ingested(&mut db).unwrap().facts, 3);
    assert_eq!(
        apply_ingested(&mut db).unwrap().facts,
        0,
        "a fact is applied once, so a redemption is kept once"
    );
    let duplicates = figures(&mut db).unwrap().coupon_duplicates;
    let seen: Vec<(&str, &str, &str)> = duplicates
        .iter()
        .map(|d| (d.coupon.as_str(), d.agent.as_str(), d.first_agent.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("plain:SPRING10", "S1/till-1", "S2/till-1"),
            ("plain:SPRING10", "S3/till-1", "S2/till-1"),
        ]
    );
    assert_eq!(on_hand(&mut db, "SKU-TEA"), 10, "a coupon moves no stock");
}
