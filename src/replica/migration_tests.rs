//! Replica schema steps applied to a replica that has data.
use super::*;
use crate::storage::{self, Durability};

#[test]
fn reservations_from_before_ship_orders_are_click_and_collect_and_keep_their_indexes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("replica.db");
    let steps = migrations();
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let before = steps
        .iter()
        .position(|sql| sql.contains("reservations__v4"))
        .expect("the fulfilment step");
    {
        let mut conn = storage::open_writer(&path, Durability::Rebuildable).expect("open");
        storage::migrate(&mut conn, &path, &steps[..before]).expect("old schema");
        // The old table, as the first step made it before the column existed.
        conn.execute_batch(
            "DROP TABLE reservations;
             CREATE TABLE reservations (order_id TEXT NOT NULL, line INTEGER NOT NULL,
                 sku TEXT NOT NULL, qty INTEGER NOT NULL, status TEXT NOT NULL, pickup_code TEXT,
                 PRIMARY KEY (order_id, line)) WITHOUT ROWID;
             INSERT INTO reservations VALUES ('WEB-1', 1, 'A', 2, 'picked', 'PU-1');",
        )
        .expect("an old replica");
    }
    let mut conn = storage::open_writer(&path, Durability::Rebuildable).expect("open");
    storage::migrate(&mut conn, &path, &steps).expect("migrated");
    let row: (String, String) = conn
        .query_row(
            "SELECT pickup_code, fulfilment FROM reservations WHERE order_id = 'WEB-1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("the row survives");
    assert_eq!(row, ("PU-1".to_owned(), "collect".to_owned()));
    let indexes: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'reservations' \
             AND name LIKE 'reservations_by_%'",
            [],
            |r| r.get(0),
        )
        .expect("indexes");
    assert_eq!(indexes, 2, "by SKU and by pickup code");
}
