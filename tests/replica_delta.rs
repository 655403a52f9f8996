#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! Replica deltas through the applier thread, read back with the lookups a till uses.

use relais::cards::CardHasher;
use relais::decode::gtin::Gtin14;
use relais::outbox::writer::WriterSettings;
use relais::outbox::{AppendRequest, MovementKind, OutboxWriter, StoreFact};
use relais::replica::apply::{ApplierHandle, ApplyError, DeltaOutcome, ReplicaApplier};
use relais::replica::delta::Delta;
use relais::replica::lookup::{self, Answer};
use relais::replica::{Stream, StreamState};
use rusqlite::Connection;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

const MILK: &str = "04006381333931";
const BREAD: &str = "00000096385074";
const BAD_CHECK_DIGIT: &str = "04006381333932";
const STALE_AFTER: relais::replica::freshness::StaleAfter =
    relais::replica::freshness::StaleAfter::uniform(Duration::from_secs(3600));

/// A replica with its applier running and an (empty) outbox to attach as `facts`.
struct Replica {
    tmp: tempfile::TempDir,
    applier: Option<(ApplierHandle, ReplicaApplier)>,
}

impl Replica {
    fn new() -> Replica {
        let tmp = tempfile::tempdir().unwrap();
        relais::outbox::writer::migrate_only(&tmp.path().join("outbox.db")).unwrap();
        let mut replica = Replica { tmp, applier: None };
        replica.start();
        replica
    }

    fn start(&mut self) {
        self.applier = Some(ReplicaApplier::start(&self.replica_db()).unwrap());
    }

    /// Drop the handle and wait for the thread: it checkpoints the WAL into the file.
    fn stop(&mut self) {
        if let Some((handle, applier)) = self.applier.take() {
            drop(handle);
            applier.join();
        }
    }

    fn handle(&self) -> &ApplierHandle {
        &self.applier.as_ref().unwrap().0
    }

    fn replica_db(&self) -> PathBuf {
        self.tmp.path().join("replica.db")
    }

    fn outbox_db(&self) -> PathBuf {
        self.tmp.path().join("outbox.db")
    }

    fn apply(&self, stream: Stream, version: u64, ops: Vec<Value>) -> DeltaOutcome {
        self.try_apply(stream, version, ops)
            .unwrap_or_else(|e| panic!("{stream} delta {version}: {e}"))
    }

    fn try_apply(
        &self,
        stream: Stream,
        version: u64,
        ops: Vec<Value>,
    ) -> Result<DeltaOutcome, ApplyError> {
        self.handle()
            .apply_delta_blocking(delta(stream, version, ops))
    }

    fn states(&self) -> Vec<StreamState> {
        block_on(self.handle().stream_states()).unwrap()
    }

    fn version(&self, stream: Stream) -> u64 {
        state(&self.states(), stream).version
    }

    fn import(&self, stream: Stream, lines: &[Value], version: u64) {
        let file = self.tmp.path().join(format!("{stream}-{version}.ndjson"));
        write_lines(&file, lines);
        let report = block_on(self.handle().import_snapshot(stream, file, version)).unwrap();
        assert_eq!(report.rows, lines.len() as u64);
    }

    fn reader(&self) -> Connection {
        relais::storage::reader_pool_connection(&self.replica_db(), &self.outbox_db()).unwrap()
    }

    fn count(&self, sql: &str) -> i64 {
        self.reader().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    fn product_name(&self, gtin: &str) -> Option<String> {
        match lookup::product_by_code(&self.reader(), gtin, now(), STALE_AFTER).unwrap() {
            Answer::Found(p) => Some(p.name),
            Answer::NotFound { .. } => None,
        }
    }

    fn customer_by_card(&self, card: &str) -> Option<lookup::CustomerAnswer> {
        match lookup::customer_by_card(&self.reader(), &hasher(), card, now(), STALE_AFTER).unwrap()
        {
            Answer::Found(c) => Some(c),
            Answer::NotFound { .. } => None,
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.stop();
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

fn now() -> i64 {
    relais::storage::now_unix_ms()
}

fn hasher() -> CardHasher {
    CardHasher::new(b"relais-replica-delta-test-key-32")
}

fn token(card: &str) -> String {
    hasher().token_for(card).unwrap().to_hex()
}

fn delta(stream: Stream, version: u64, ops: Vec<Value>) -> Delta {
    serde_json::from_value(json!({"v": 1, "stream": stream, "version": version, "ops": ops}))
        .unwrap()
}

fn upsert(row: Value) -> Value {
    json!({"op": "upsert", "row": row})
}

fn delete(key: Value) -> Value {
    json!({"op": "delete", "key": key})
}

fn product(gtin: &str, sku: &str, name: &str) -> Value {
    json!({"gtin": gtin, "sku": sku, "name": name})
}

fn customer(id: &str, name: &str, balance: i64, watermark: u64, cards: &[&str]) -> Value {
    let tokens: Vec<String> = cards.iter().map(|c| token(c)).collect();
    json!({"customer_id": id, "display_name": name, "loyalty_balance": balance,
           "loyalty_watermark_seq": watermark, "card_tokens": tokens})
}

fn state(states: &[StreamState], stream: Stream) -> StreamState {
    states.iter().find(|s| s.stream == stream).unwrap().clone()
}

fn write_lines(path: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

fn invalid_op(result: Result<DeltaOutcome, ApplyError>) -> (usize, String) {
    match result {
        Err(e @ ApplyError::InvalidOp { index, .. }) => (index, e.to_string()),
        other => panic!("expected an invalid op, got {other:?}"),
    }
}

#[test]
fn a_delta_with_the_next_version_applies_in_one_transaction() {
    let replica = Replica::new();
    let before = now();
    let outcome = replica.apply(
        Stream::Products,
        1,
        vec![
            upsert(product(MILK, "SKU-MILK", "Milk 1 L")),
            upsert(product(BREAD, "SKU-BREAD", "Bread")),
            upsert(product(MILK, "SKU-MILK", "Whole milk 1 L")),
        ],
    );
    assert_eq!(
        outcome,
        DeltaOutcome::Applied {
            stream: Stream::Products,
            version: 1,
            ops: 3
        }
    );
    let products = state(&replica.states(), Stream::Products);
    assert_eq!(products.version, 1);
    assert!(products.applied_ms >= before, "{products:?}");
    assert_eq!(
        replica.product_name(MILK).as_deref(),
        Some("Whole milk 1 L"),
        "a later op of the same delta replaces an earlier one"
    );

    // The last op is bad: the ones before it must not be visible either.
    let result = replica.try_apply(
        Stream::Products,
        2,
        vec![
            delete(json!({"gtin": BREAD})),
            upsert(product(MILK, "SKU-MILK", "Renamed")),
            upsert(product(BAD_CHECK_DIGIT, "SKU-X", "Bad")),
        ],
    );
    let (index, _) = invalid_op(result);
    assert_eq!(index, 2);
    assert_eq!(replica.version(Stream::Products), 1);
    assert_eq!(replica.product_name(BREAD).as_deref(), Some("Bread"));
    assert_eq!(
        replica.product_name(MILK).as_deref(),
        Some("Whole milk 1 L")
    );
}

#[test]
fn a_replayed_delta_is_a_no_op_and_reports_already_applied() {
    let replica = Replica::new();
    replica.apply(
        Stream::Products,
        1,
        vec![upsert(product(MILK, "SKU-MILK", "Milk"))],
    );
    replica.apply(
        Stream::Products,
        2,
        vec![upsert(product(BREAD, "SKU-BREAD", "Bread"))],
    );
    let applied_ms = state(&replica.states(), Stream::Products).applied_ms;
    for version in [1, 2] {
        let outcome = replica.apply(
            Stream::Products,
            version,
            vec![upsert(product(MILK, "SKU-MILK", "Changed by a replay"))],
        );
        assert_eq!(
            outcome,
            DeltaOutcome::AlreadyApplied {
                stream: Stream::Products,
                version,
                live: 2
            }
        );
    }
    assert_eq!(replica.product_name(MILK).as_deref(), Some("Milk"));
    let products = state(&replica.states(), Stream::Products);
    assert_eq!((products.version, products.applied_ms), (2, applied_ms));
}

#[test]
fn a_gap_applies_nothing_and_reports_gap_with_expected_and_got() {
    let replica = Replica::new();
    replica.apply(
        Stream::Products,
        1,
        vec![upsert(product(MILK, "SKU-MILK", "Milk"))],
    );
    let outcome = replica.apply(
        Stream::Products,
        3,
        vec![
            upsert(product(BREAD, "SKU-BREAD", "Bread")),
            delete(json!({"gtin": MILK})),
        ],
    );
    assert_eq!(
        outcome,
        DeltaOutcome::Gap {
            stream: Stream::Products,
            expected: 2,
            got: 3
        }
    );
    assert_eq!(replica.version(Stream::Products), 1);
    assert_eq!(replica.product_name(BREAD), None);
    assert_eq!(replica.product_name(MILK).as_deref(), Some("Milk"));
    // A stream that never had data expects version 1.
    let outcome = replica.apply(
        Stream::Stock,
        5,
        vec![upsert(json!({"sku": "A", "on_hand": 1}))],
    );
    assert_eq!(
        outcome,
        DeltaOutcome::Gap {
            stream: Stream::Stock,
            expected: 1,
            got: 5
        }
    );
}

#[test]
fn an_invalid_op_refuses_the_whole_delta_and_names_the_op_index() {
    let good_product = upsert(product(MILK, "SKU-MILK", "Milk"));
    let cases: Vec<(Stream, Vec<Value>, usize, &str)> = vec![
        (
            Stream::Products,
            vec![
                good_product.clone(),
                upsert(product(BAD_CHECK_DIGIT, "S", "N")),
            ],
            1,
            "check digit",
        ),
        (
            Stream::Products,
            vec![
                good_product.clone(),
                good_product.clone(),
                upsert(json!({"gtin": BREAD, "sku": "S", "name": "N", "colour": "red"})),
            ],
            2,
            "unknown field `colour`",
        ),
        (
            Stream::Products,
            vec![good_product.clone(), delete(json!({"sku": "SKU-MILK"}))],
            1,
            "unknown field `sku`",
        ),
        (
            Stream::Prices,
            vec![delete(json!({"sku": "SKU-MILK", "kind": "base"}))],
            0,
            "valid_from",
        ),
        (
            Stream::Prices,
            vec![upsert(
                json!({"sku": "S", "price_minor": 100, "currency": "eur", "valid_from": "2026-01-01T00:00:00Z"}),
            )],
            0,
            "ISO 4217",
        ),
        (
            Stream::Stock,
            vec![
                upsert(json!({"sku": "S", "on_hand": 3})),
                upsert(json!({"sku": "S", "on_hand": "3"})),
            ],
            1,
            "`on_hand`",
        ),
        (
            Stream::Customers,
            vec![upsert(
                json!({"customer_id": "C1", "display_name": "Ann", "card_tokens": ["zz"]}),
            )],
            0,
            "card_tokens",
        ),
        (
            Stream::Reservations,
            vec![upsert(
                json!({"order_id": "O1", "line": 0, "sku": "S", "qty": 0, "status": "open"}),
            )],
            0,
            "`qty`",
        ),
        (
            Stream::Reservations,
            vec![delete(json!({"order_id": "O1", "line": -1}))],
            0,
            "`line`",
        ),
    ];
    let replica = Replica::new();
    for (stream, ops, expected, reason) in cases {
        let (index, message) = invalid_op(replica.try_apply(stream, 1, ops));
        assert_eq!(index, expected, "{message}");
        assert!(
            message.contains(&format!("`ops[{expected}]`")),
            "names the op: {message}"
        );
        assert!(message.contains(reason), "says why ({reason}): {message}");
        assert!(
            message.contains("Nothing of the delta was applied"),
            "{message}"
        );
        assert_eq!(replica.version(stream), 0, "{message}");
    }
    assert_eq!(replica.count("SELECT count(*) FROM products"), 0);
    assert_eq!(replica.count("SELECT count(*) FROM stock"), 0);
}

#[test]
fn a_delta_of_another_contract_version_without_ops_or_of_version_zero_is_refused() {
    let replica = Replica::new();
    let mut other_contract = delta(
        Stream::Stock,
        1,
        vec![upsert(json!({"sku": "S", "on_hand": 1}))],
    );
    other_contract.v = 2;
    let cases = [
        (other_contract, "upgrade the agent"),
        (delta(Stream::Stock, 1, vec![]), "no ops"),
        (
            delta(
                Stream::Stock,
                0,
                vec![upsert(json!({"sku": "S", "on_hand": 1}))],
            ),
            "version 0",
        ),
    ];
    for (delta, reason) in cases {
        match replica.handle().apply_delta_blocking(delta) {
            Err(e @ ApplyError::InvalidDelta { .. }) => {
                assert!(e.to_string().contains(reason), "{e}")
            }
            other => panic!("expected a refusal ({reason}), got {other:?}"),
        }
    }
    assert_eq!(replica.version(Stream::Stock), 0);
    let missing_v = br#"{"stream":"stock","version":1,"ops":[{"op":"delete","key":{"sku":"S"}}]}"#;
    let err = Delta::from_json(missing_v).unwrap_err();
    assert!(err.to_string().contains("`v`"), "{err}");
}

#[test]
fn deleting_a_missing_row_is_not_an_error() {
    let replica = Replica::new();
    let deletes = [
        (Stream::Products, json!({"gtin": MILK})),
        (
            Stream::Prices,
            json!({"sku": "S", "kind": "promo", "promo_id": "P", "valid_from": "2026-01-01T00:00:00Z"}),
        ),
        (Stream::Stock, json!({"sku": "S"})),
        (Stream::Customers, json!({"customer_id": "C404"})),
        (Stream::Reservations, json!({"order_id": "O1", "line": 3})),
    ];
    for (stream, key) in deletes {
        let outcome = replica.apply(stream, 1, vec![delete(key.clone()), delete(key)]);
        assert!(
            matches!(outcome, DeltaOutcome::Applied { ops: 2, .. }),
            "{outcome:?}"
        );
    }
}

#[test]
fn upserting_a_customer_replaces_its_card_tokens() {
    let replica = Replica::new();
    replica.apply(
        Stream::Customers,
        1,
        vec![upsert(customer(
            "C1",
            "Marie D.",
            120,
            0,
            &["04A22B917C80", "9250000000017"],
        ))],
    );
    let found = replica.customer_by_card("04:a2:2b:91:7c:80").unwrap();
    assert_eq!(
        (found.customer_id.as_str(), found.display_name.as_str()),
        ("C1", "Marie D.")
    );
    assert_eq!(found.loyalty.balance, 120);
    replica.apply(
        Stream::Customers,
        2,
        vec![upsert(customer(
            "C1",
            "Marie Dupont",
            150,
            0,
            &["04A22B917C81"],
        ))],
    );
    assert!(replica.customer_by_card("04A22B917C80").is_none());
    assert!(replica.customer_by_card("9250000000017").is_none());
    let found = replica.customer_by_card("04A22B917C81").unwrap();
    assert_eq!(found.display_name, "Marie Dupont");
    assert_eq!(found.loyalty.balance, 150);
    assert_eq!(replica.count("SELECT count(*) FROM card_tokens"), 1);
    assert_eq!(replica.count("SELECT count(*) FROM customers"), 1);
}

#[test]
fn a_card_token_owned_by_another_customer_refuses_the_whole_delta() {
    let replica = Replica::new();
    replica.apply(
        Stream::Customers,
        1,
        vec![upsert(customer("C1", "Ann", 0, 0, &["04A22B917C80"]))],
    );
    let (index, message) = invalid_op(replica.try_apply(
        Stream::Customers,
        2,
        vec![
            upsert(customer("C3", "Cy", 0, 0, &[])),
            upsert(customer(
                "C2",
                "Bob",
                0,
                0,
                &["04A22B917C81", "04A22B917C80"],
            )),
        ],
    ));
    assert_eq!(index, 1, "{message}");
    assert!(message.contains("\"C1\""), "names the owner: {message}");
    assert_eq!(replica.version(Stream::Customers), 1);
    assert_eq!(replica.count("SELECT count(*) FROM customers"), 1);
    assert_eq!(
        replica
            .customer_by_card("04A22B917C80")
            .unwrap()
            .customer_id,
        "C1"
    );

    // The same token listed twice for one customer is refused too.
    let (index, message) = invalid_op(replica.try_apply(
        Stream::Customers,
        2,
        vec![upsert(customer(
            "C2",
            "Bob",
            0,
            0,
            &["04A22B917C81", "04A22B917C81"],
        ))],
    ));
    assert_eq!(index, 0);
    assert!(message.contains("listed twice"), "{message}");

    // Taken away from C1 earlier in the same delta, the card can move to C2.
    replica.apply(
        Stream::Customers,
        2,
        vec![
            upsert(customer("C1", "Ann", 0, 0, &[])),
            upsert(customer("C2", "Bob", 0, 0, &["04A22B917C80"])),
        ],
    );
    assert_eq!(
        replica
            .customer_by_card("04A22B917C80")
            .unwrap()
            .customer_id,
        "C2"
    );
}

#[test]
fn a_customer_delete_removes_the_row_and_its_card_tokens_and_a_lookup_by_that_card_then_finds_nothing()
 {
    let replica = Replica::new();
    replica.apply(
        Stream::Customers,
        1,
        vec![
            upsert(customer(
                "C1",
                "Ann",
                10,
                0,
                &["04A22B917C80", "9250000000017"],
            )),
            upsert(customer("C2", "Bob", 20, 0, &["04A22B917C81"])),
        ],
    );
    assert!(replica.customer_by_card("04A22B917C80").is_some());
    replica.apply(
        Stream::Customers,
        2,
        vec![delete(json!({"customer_id": "C1"}))],
    );
    assert!(replica.customer_by_card("04A22B917C80").is_none());
    assert!(replica.customer_by_card("9250000000017").is_none());
    assert_eq!(
        replica.count("SELECT count(*) FROM card_tokens WHERE customer_id = 'C1'"),
        0
    );
    assert_eq!(
        replica.count("SELECT count(*) FROM customers WHERE customer_id = 'C1'"),
        0
    );
    assert_eq!(
        replica
            .customer_by_card("04A22B917C81")
            .unwrap()
            .display_name,
        "Bob",
        "the other customer stays"
    );
}

fn file_contains(path: &Path, needle: &[u8]) -> bool {
    let mut found = false;
    for suffix in ["", "-wal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        if let Ok(bytes) = std::fs::read(PathBuf::from(name)) {
            found |= bytes.windows(needle.len()).any(|w| w == needle);
        }
    }
    found
}

#[test]
fn an_erased_customer_s_display_name_is_gone_from_the_database_file() {
    const NAME: &str = "Zelda Quokkafeather";
    let mut replica = Replica::new();
    replica.import(
        Stream::Customers,
        &[
            customer("C1", NAME, 10, 0, &["04A22B917C80"]),
            customer("C2", "Bob", 20, 0, &["04A22B917C81"]),
        ],
        1,
    );
    replica.apply(
        Stream::Customers,
        2,
        vec![upsert(customer("C3", "Cy", 0, 0, &[]))],
    );
    replica.stop();
    assert!(
        file_contains(&replica.replica_db(), NAME.as_bytes()),
        "the name is in the file before the erasure (else this test proves nothing)"
    );
    replica.start();
    replica.apply(
        Stream::Customers,
        3,
        vec![delete(json!({"customer_id": "C1"}))],
    );
    replica.stop();
    assert!(
        !file_contains(&replica.replica_db(), NAME.as_bytes()),
        "secure_delete must overwrite the erased row"
    );
    replica.start();
    assert!(replica.customer_by_card("04A22B917C80").is_none());
    assert_eq!(
        replica
            .customer_by_card("04A22B917C81")
            .unwrap()
            .display_name,
        "Bob"
    );
}

#[test]
fn prices_upsert_and_delete_by_their_full_key() {
    let replica = Replica::new();
    let from = "2020-01-01T00:00:00Z";
    let promo_from = "2020-06-01T00:00:00Z";
    replica.apply(
        Stream::Prices,
        1,
        vec![
            upsert(
                json!({"sku": "SKU-P", "price_minor": 1000, "currency": "EUR", "valid_from": from}),
            ),
            upsert(
                json!({"sku": "SKU-P", "kind": "promo", "promo_id": "SPRING", "price_minor": 800,
                          "currency": "EUR", "valid_from": promo_from}),
            ),
        ],
    );
    let price = || {
        lookup::effective_price(&replica.reader(), "SKU-P", now())
            .unwrap()
            .map(|p| (p.price_minor, p.kind))
    };
    assert_eq!(price(), Some((800, "promo")));
    // Replacing the base price keeps one row per key.
    replica.apply(
        Stream::Prices,
        2,
        vec![
            upsert(json!({"sku": "SKU-P", "price_minor": 700, "currency": "EUR", "valid_from": from})),
            // Another promotion id: a different key, so nothing is deleted.
            delete(json!({"sku": "SKU-P", "kind": "promo", "promo_id": "AUTUMN", "valid_from": promo_from})),
        ],
    );
    assert_eq!(price(), Some((700, "base")));
    assert_eq!(replica.count("SELECT count(*) FROM prices"), 2);
    replica.apply(
        Stream::Prices,
        3,
        vec![delete(
            json!({"sku": "SKU-P", "kind": "promo", "promo_id": "SPRING", "valid_from": promo_from}),
        )],
    );
    assert_eq!(replica.count("SELECT count(*) FROM prices"), 1);
    replica.apply(
        Stream::Prices,
        4,
        vec![delete(
            json!({"sku": "SKU-P", "kind": "base", "valid_from": "2020-01-01T00:00:00.000Z"}),
        )],
    );
    assert_eq!(price(), None);
}

#[test]
fn reservations_upsert_and_delete_by_order_and_line() {
    let replica = Replica::new();
    replica.apply(
        Stream::Products,
        1,
        vec![upsert(product(MILK, "SKU-MILK", "Milk"))],
    );
    replica.apply(
        Stream::Stock,
        1,
        vec![upsert(
            json!({"sku": "SKU-MILK", "on_hand": 10, "watermark_seq": 0}),
        )],
    );
    let reserved = || {
        let gtin = Gtin14::parse(MILK).unwrap();
        match lookup::product_by_gtin(&replica.reader(), gtin, now(), STALE_AFTER).unwrap() {
            Answer::Found(p) => {
                let s = p.stock.unwrap();
                (s.reserved, s.available)
            }
            Answer::NotFound { .. } => panic!("milk not found"),
        }
    };
    let line = |line: u32, qty: i64, status: &str| {
        upsert(
            json!({"order_id": "O-1", "line": line, "sku": "SKU-MILK", "qty": qty, "status": status}),
        )
    };
    replica.apply(
        Stream::Reservations,
        1,
        vec![line(0, 2, "open"), line(1, 3, "picked")],
    );
    assert_eq!(reserved(), (5, 5));
    replica.apply(Stream::Reservations, 2, vec![line(0, 2, "collected")]);
    assert_eq!(reserved(), (3, 7));
    replica.apply(
        Stream::Reservations,
        3,
        vec![delete(json!({"order_id": "O-1", "line": 1}))],
    );
    assert_eq!(reserved(), (0, 10));
    assert_eq!(replica.count("SELECT count(*) FROM reservations"), 1);
}

fn outbox_settings() -> WriterSettings {
    WriterSettings {
        group_commit_max: 64,
        telemetry_quota_rows: 1000,
        low_free_mb: 0,
        seq_floor: 0,
        checkpoint_pages: relais::outbox::writer::DEFAULT_CHECKPOINT_PAGES,
        prune: Default::default(),
    }
}

/// A stock movement of `delta` units of `sku`.
fn movement(sku: &str, delta: i64) -> AppendRequest {
    let kind = if delta < 0 {
        MovementKind::Sale
    } else {
        MovementKind::Receipt
    };
    AppendRequest::fact(StoreFact::stock_movement(kind, sku, delta.abs()))
}

/// A loyalty operation of `points` (signed) for `customer_id`, not guarded by any cap.
fn loyalty(customer_id: &str, points: i64) -> AppendRequest {
    AppendRequest::fact(StoreFact::Loyalty(relais::domain::LoyaltyOperation {
        recorded: relais::domain::LoyaltyRecorded {
            customer_id: customer_id.into(),
            points,
            receipt: None,
            client_key: None,
            by: "local".into(),
        },
        baseline: relais::domain::LoyaltyBaseline {
            central_balance: 0,
            watermark_seq: 0,
        },
        burn_cap: i64::MAX,
        balance_after: None,
    }))
}

#[test]
fn stock_on_hand_is_the_delta_baseline_plus_the_movements_after_its_watermark() {
    let replica = Replica::new();
    let (outbox, writer) = OutboxWriter::start(&replica.outbox_db(), outbox_settings()).unwrap();
    let deltas = [-1i64, -2, 10, -3, -4, 5];
    let mut seqs = Vec::new();
    for delta in deltas {
        seqs.push(
            outbox
                .append_blocking(movement("SKU-MILK", delta))
                .unwrap()
                .seq,
        );
    }
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);

    replica.apply(
        Stream::Products,
        1,
        vec![upsert(product(MILK, "SKU-MILK", "Milk"))],
    );
    // Central counted the movements up to seq 4 in its on-hand: 100 - 1 - 2 + 10 - 3.
    replica.apply(
        Stream::Stock,
        1,
        vec![upsert(
            json!({"sku": "SKU-MILK", "on_hand": 104, "watermark_seq": 4}),
        )],
    );
    let stock = || {
        let gtin = Gtin14::parse(MILK).unwrap();
        match lookup::product_by_gtin(&replica.reader(), gtin, now(), STALE_AFTER).unwrap() {
            Answer::Found(p) => p.stock.unwrap(),
            Answer::NotFound { .. } => panic!("milk not found"),
        }
    };
    let s = stock();
    assert_eq!(s.central_on_hand, 104);
    assert_eq!(s.watermark_seq, 4);
    assert_eq!(s.local_movements_after_watermark, -4 + 5);
    assert_eq!(s.on_hand, 105);

    // The next baseline includes everything: nothing is counted twice.
    replica.apply(
        Stream::Stock,
        2,
        vec![upsert(
            json!({"sku": "SKU-MILK", "on_hand": 105, "watermark_seq": 6}),
        )],
    );
    let s = stock();
    assert_eq!((s.on_hand, s.local_movements_after_watermark), (105, 0));

    // A movement recorded after that baseline counts on top of it.
    outbox.append_blocking(movement("SKU-MILK", -7)).unwrap();
    assert_eq!(stock().on_hand, 98);
    drop(outbox);
    writer.join();
}

#[test]
fn the_loyalty_balance_is_the_delta_baseline_plus_the_local_operations_after_its_watermark() {
    let replica = Replica::new();
    let (outbox, writer) = OutboxWriter::start(&replica.outbox_db(), outbox_settings()).unwrap();
    // The five operations, through the writer as a till's would be.
    let points = [50i64, -20, 30, 15, -5];
    let seqs: Vec<u64> = points
        .iter()
        .map(|&points| outbox.append_blocking(loyalty("C1", points)).unwrap().seq)
        .collect();
    drop(outbox);
    writer.join();

    // Central's balance includes the first three operations: 1000 + 50 - 20 + 30.
    replica.apply(
        Stream::Customers,
        1,
        vec![upsert(customer(
            "C1",
            "Ann",
            1060,
            seqs[2],
            &["04A22B917C80"],
        ))],
    );
    let loyalty = replica.customer_by_card("04A22B917C80").unwrap().loyalty;
    assert_eq!(loyalty.central_balance, 1060);
    assert_eq!(loyalty.watermark_seq, seqs[2]);
    assert_eq!(loyalty.pending_local, 15 - 5);
    assert_eq!(loyalty.balance, 1070);

    replica.apply(
        Stream::Customers,
        2,
        vec![upsert(customer(
            "C1",
            "Ann",
            1070,
            seqs[4],
            &["04A22B917C80"],
        ))],
    );
    let loyalty = replica.customer_by_card("04A22B917C80").unwrap().loyalty;
    assert_eq!((loyalty.balance, loyalty.pending_local), (1070, 0));
}

#[test]
fn the_applier_thread_serves_concurrent_callers() {
    let replica = Replica::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    const VERSIONS: u64 = 25;
    runtime.block_on(async {
        let mut tasks = Vec::new();
        // One task per stream, each sending its versions in order; plus replays and readers.
        for stream in [Stream::Stock, Stream::Reservations, Stream::Products] {
            let handle = replica.handle().clone();
            tasks.push(tokio::spawn(async move {
                for version in 1..=VERSIONS {
                    let op = match stream {
                        Stream::Stock => {
                            upsert(json!({"sku": format!("S{version}"), "on_hand": 1}))
                        }
                        Stream::Reservations => upsert(json!({"order_id": "O", "line": version,
                            "sku": "S", "qty": 1, "status": "open"})),
                        _ => upsert(product(MILK, "SKU-MILK", &format!("Milk v{version}"))),
                    };
                    let outcome = handle
                        .apply_delta(delta(stream, version, vec![op.clone()]))
                        .await;
                    assert!(
                        matches!(outcome, Ok(DeltaOutcome::Applied { .. })),
                        "{stream} {version}: {outcome:?}"
                    );
                    let replay = handle.apply_delta(delta(stream, version, vec![op])).await;
                    assert!(
                        matches!(replay, Ok(DeltaOutcome::AlreadyApplied { .. })),
                        "{replay:?}"
                    );
                }
            }));
        }
        for _ in 0..3 {
            let handle = replica.handle().clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..VERSIONS {
                    let states = handle.stream_states().await.unwrap();
                    assert_eq!(states.len(), Stream::ALL.len());
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    // Callers on plain threads share the same queue.
    std::thread::scope(|scope| {
        for sku in ["T1", "T2", "T3", "T4"] {
            let handle = replica.handle().clone();
            scope.spawn(move || {
                let op = upsert(json!({"sku": sku, "on_hand": 1}));
                let outcome =
                    handle.apply_delta_blocking(delta(Stream::Stock, VERSIONS + 1, vec![op]));
                assert!(
                    matches!(
                        outcome,
                        Ok(DeltaOutcome::Applied { .. } | DeltaOutcome::AlreadyApplied { .. })
                    ),
                    "{outcome:?}"
                );
            });
        }
    });
    let states = replica.states();
    assert_eq!(state(&states, Stream::Stock).version, VERSIONS + 1);
    assert_eq!(state(&states, Stream::Reservations).version, VERSIONS);
    assert_eq!(state(&states, Stream::Products).version, VERSIONS);
    assert_eq!(
        replica.count("SELECT count(*) FROM stock"),
        VERSIONS as i64 + 1,
        "exactly one of the four competing version-26 deltas applied"
    );
    assert_eq!(
        replica.product_name(MILK),
        Some(format!("Milk v{VERSIONS}"))
    );
}

#[test]
fn import_snapshot_through_the_applier_works_and_bumps_the_version() {
    let replica = Replica::new();
    // A delta first, so the applier's statement cache refers to the table the import replaces.
    replica.apply(
        Stream::Products,
        1,
        vec![upsert(product(MILK, "SKU-MILK", "Milk from a delta"))],
    );
    replica.import(
        Stream::Products,
        &[
            product(BREAD, "SKU-BREAD", "Bread"),
            product(MILK, "SKU-MILK", "Milk from the snapshot"),
        ],
        7,
    );
    assert_eq!(replica.version(Stream::Products), 7);
    assert_eq!(
        replica.product_name(MILK).as_deref(),
        Some("Milk from the snapshot")
    );
    assert_eq!(
        replica.apply(Stream::Products, 7, vec![delete(json!({"gtin": BREAD}))]),
        DeltaOutcome::AlreadyApplied {
            stream: Stream::Products,
            version: 7,
            live: 7
        }
    );
    replica.apply(
        Stream::Products,
        8,
        vec![
            delete(json!({"gtin": BREAD})),
            upsert(product(MILK, "SKU-MILK", "Milk after the snapshot")),
        ],
    );
    assert_eq!(replica.product_name(BREAD), None);
    assert_eq!(
        replica.product_name(MILK).as_deref(),
        Some("Milk after the snapshot")
    );

    // An import refused by the import's own rules comes back as the import's error.
    let older = replica.tmp.path().join("older.ndjson");
    write_lines(&older, &[product(MILK, "SKU-MILK", "Old")]);
    let err = block_on(replica.handle().import_snapshot(Stream::Products, older, 3)).unwrap_err();
    assert!(matches!(err, ApplyError::Import(_)), "{err:?}");
    assert_eq!(replica.version(Stream::Products), 8);

    // The token list written by the import is what a later delta replaces.
    replica.import(
        Stream::Customers,
        &[customer("C1", "Ann", 0, 0, &["04A22B917C80"])],
        1,
    );
    replica.apply(
        Stream::Customers,
        2,
        vec![upsert(customer("C1", "Ann", 0, 0, &["04A22B917C81"]))],
    );
    assert!(replica.customer_by_card("04A22B917C80").is_none());
    assert!(replica.customer_by_card("04A22B917C81").is_some());
}

/// A reader connection lives as long as the agent, so whatever a lookup keeps between calls
/// (prepared statements, mapped pages) must never hide a later delta: the next lookup on the
/// same connection sees the new stream version, its product, price and freshness.
#[test]
fn a_delta_applied_after_a_lookup_is_seen_by_the_next_lookup_on_the_same_connection() {
    let replica = Replica::new();
    replica.apply(
        Stream::Products,
        1,
        vec![upsert(product(MILK, "SKU-MILK", "Milk 1 L"))],
    );
    let conn = replica.reader();
    let look = |code: &str| lookup::product_by_code(&conn, code, now(), STALE_AFTER).unwrap();
    let products_version = |answer: &Answer<lookup::ProductAnswer>| {
        let fresh = match answer {
            Answer::Found(p) => &p.freshness,
            Answer::NotFound { freshness } => freshness,
        };
        fresh
            .streams
            .iter()
            .find(|s| s.stream == Stream::Products)
            .map(|s| s.version)
    };
    let first = look(MILK);
    assert_eq!(products_version(&first), Some(1));
    assert!(matches!(look(BREAD), Answer::NotFound { .. }));

    replica.apply(
        Stream::Products,
        2,
        vec![
            upsert(product(MILK, "SKU-MILK", "Whole milk 1 L")),
            upsert(product(BREAD, "SKU-BREAD", "Bread")),
        ],
    );
    replica.apply(
        Stream::Prices,
        1,
        vec![upsert(
            json!({"sku": "SKU-MILK", "price_minor": 129, "currency": "EUR",
                   "valid_from": "2020-01-01T00:00:00Z"}),
        )],
    );
    let Answer::Found(milk) = look(MILK) else {
        panic!("milk not found after the delta")
    };
    assert_eq!(milk.name, "Whole milk 1 L");
    assert_eq!(milk.price.as_ref().map(|p| p.price_minor), Some(129));
    let versions: Vec<(Stream, u64)> = milk
        .freshness
        .streams
        .iter()
        .map(|s| (s.stream, s.version))
        .collect();
    assert_eq!(
        versions,
        vec![
            (Stream::Products, 2),
            (Stream::Prices, 1),
            (Stream::Stock, 0),
            (Stream::Reservations, 0)
        ]
    );
    let prices = milk
        .freshness
        .streams
        .iter()
        .find(|s| s.stream == Stream::Prices)
        .unwrap();
    assert!(
        prices.age_s.is_some_and(|a| a < 60.0),
        "a just-applied stream is fresh: {prices:?}"
    );
    let bread = look(BREAD);
    assert!(matches!(bread, Answer::Found(_)), "{bread:?}");
    assert_eq!(products_version(&bread), Some(2));
}

#[test]
fn consent_and_marketing_in_a_customers_delta_are_checked_like_a_snapshot_line_and_shown_only_with_consent()
 {
    let replica = Replica::new();
    let mut ann = customer("C1", "Ann", 5, 0, &["04A1"]);
    ann["marketing"] = json!({"segments": ["families"], "offers": []});
    replica.import(Stream::Customers, std::slice::from_ref(&ann), 1);
    let found = replica.customer_by_card("04A1").unwrap();
    assert!(!found.consent.marketing.granted);
    assert_eq!(found.marketing, None, "no consent, no marketing data");

    ann["consent"] = json!({"marketing": {"granted": true, "at": "2026-11-02T10:00:00Z"}});
    replica.apply(Stream::Customers, 2, vec![upsert(ann.clone())]);
    let found = replica.customer_by_card("04A1").unwrap();
    assert!(found.consent.marketing.granted);
    assert_eq!(found.consent.marketing.at_ms, Some(1_793_613_600_000));
    assert_eq!(
        found.marketing.unwrap().segments,
        vec!["families".to_owned()]
    );

    // The same mistakes a snapshot line is refused for, named with the op and the field.
    for (consent, why) in [
        (
            json!({"marketing": {"granted": true, "at": "yesterday"}}),
            "consent.marketing.at",
        ),
        (
            json!({"newsletters": {"granted": true, "at": "2026-11-02T10:00:00Z"}}),
            "newsletters",
        ),
        (
            json!({"marketing": {"granted": "yes", "at": "2026-11-02T10:00:00Z"}}),
            "granted",
        ),
    ] {
        let mut bad = ann.clone();
        bad["consent"] = consent;
        let (index, message) = invalid_op(replica.try_apply(
            Stream::Customers,
            3,
            vec![upsert(ann.clone()), upsert(bad)],
        ));
        assert_eq!(index, 1, "{message}");
        assert!(message.contains(why), "{why}: {message}");
    }
    assert_eq!(replica.version(Stream::Customers), 2);
}
