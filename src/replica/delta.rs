//! Replica deltas: central's changes to one stream between two consecutive versions
//! (docs/snapshot-format.md, "Deltas").
//!
//! A delta applies only on top of the version just before it, in one transaction with the new
//! version, so the replica is always exactly some version of central's data. An upsert row is a
//! snapshot line of its stream, validated by the import's own code: a row that a snapshot would
//! refuse is refused here too.

use super::Stream;
use super::apply::{ApplyError, DeltaOutcome};
use super::import::{self, PriceKind, Row};
use crate::decode::gtin::Gtin14;
use crate::storage;
use rusqlite::{CachedStatement, Connection, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

/// The only contract version of deltas this agent understands.
pub const CONTRACT_VERSION: u32 = 1;

/// Most ops in one delta. Bigger changes are a snapshot's job; the bound keeps one message
/// from holding the replica's write lock (and the agent's memory) for long.
pub const MAX_OPS: usize = 50_000;

/// One delta, as sent on `rpl/{stream}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Delta {
    /// Contract version; required, and must be [`CONTRACT_VERSION`].
    #[schemars(extend("const" = 1), description = "Contract version: required, and must be 1.")]
    pub v: u32,
    pub stream: Stream,
    /// Central's version of the stream once this delta is applied (≥ 1).
    #[schemars(range(min = 1, max = i64::MAX))]
    pub version: u64,
    #[schemars(length(max = MAX_OPS))]
    pub ops: Vec<DeltaOp>,
}

/// One change. `row` and `key` stay JSON until the delta is applied, because their shape
/// depends on the stream; they are validated then, with the op's index in any error.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum DeltaOp {
    /// Insert or replace the row with the same primary key; `row` is a snapshot line.
    Upsert {
        /// A complete snapshot line of the stream (docs/snapshot-format.md).
        #[schemars(extend("type" = "object"))]
        row: serde_json::Value,
    },
    /// Remove the row with this primary key, if there is one.
    Delete {
        /// The row's primary key: products `{gtin}`; prices `{sku, kind, valid_from, promo_id?}`;
        /// stock `{sku}`; customers `{customer_id}`; reservations `{order_id, line}`.
        #[schemars(extend("type" = "object"))]
        key: serde_json::Value,
    },
}

#[derive(Debug, thiserror::Error)]
#[error(
    "not a replica delta of contract v{CONTRACT_VERSION}: {reason}. Nothing was applied; central must \
     publish a corrected delta (or a snapshot)"
)]
pub struct DeltaParseError {
    /// Names the field: `ops[3].op: unknown variant …`.
    pub reason: String,
}

impl Delta {
    /// Parse a delta from JSON. Errors name the path of the bad field (`ops[2].row`), which a
    /// parse through an untagged enum cannot do.
    pub fn from_json(bytes: &[u8]) -> Result<Delta, DeltaParseError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let delta: Delta = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            DeltaParseError {
                reason: if path == "." {
                    inner.to_string()
                } else {
                    format!("`{path}`: {inner}")
                },
            }
        })?;
        de.end().map_err(|e| DeltaParseError {
            reason: e.to_string(),
        })?;
        Ok(delta)
    }

    /// Check the whole delta as applying it would (envelope, then every op with the same rules
    /// as a snapshot line), without a database: what is wrong, naming the op, if anything.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(reason) = self.envelope_problem() {
            return Err(reason);
        }
        for (i, op) in self.ops.iter().enumerate() {
            parse_op(self.stream, op).map_err(|e| format!("ops[{i}]: {e}"))?;
        }
        Ok(())
    }

    /// What is wrong with the envelope (contract version, version, op count), if anything.
    fn envelope_problem(&self) -> Option<String> {
        if self.v != CONTRACT_VERSION {
            return Some(format!(
                "contract version v={} but this agent understands v={CONTRACT_VERSION}; upgrade the \
                 agent, or have central publish v={CONTRACT_VERSION} deltas",
                self.v
            ));
        }
        if self.version == 0 {
            return Some("version 0; the first delta of a stream is version 1".into());
        }
        if i64::try_from(self.version).is_err() {
            return Some(format!("version {} is too large", self.version));
        }
        if self.ops.is_empty() {
            return Some("no ops; a delta changes at least one row".into());
        }
        if self.ops.len() > MAX_OPS {
            return Some(format!(
                "{} ops; at most {MAX_OPS} per delta, send bigger changes as a snapshot",
                self.ops.len()
            ));
        }
        None
    }
}

// ---- delete keys, in the text forms of the snapshot lines ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductKey {
    gtin: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceKey {
    sku: String,
    kind: PriceKind,
    valid_from: String,
    #[serde(default)]
    promo_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StockKey {
    sku: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerKey {
    customer_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReservationKey {
    order_id: String,
    line: u32,
}

/// A validated primary key, ready to bind.
enum Key {
    Product(i64),
    Price {
        sku: String,
        kind: i64,
        valid_from: i64,
        promo_id: String,
    },
    Stock(String),
    Customer(String),
    Reservation {
        order_id: String,
        line: i64,
    },
}

fn parse_key(stream: Stream, key: &serde_json::Value) -> Result<Key, String> {
    use import::RowSource;
    let parsed = match stream {
        Stream::Products => {
            let k: ProductKey = key.decode()?;
            let gtin = Gtin14::parse(&k.gtin).map_err(|e| format!("`gtin` = {:?}: {e}", k.gtin))?;
            Key::Product(gtin.as_i64())
        }
        Stream::Prices => {
            let k: PriceKey = key.decode()?;
            import::check_text("sku", &k.sku, 64)?;
            let valid_from = import::parse_time("valid_from", &k.valid_from)?;
            let (kind, promo_id) = import::price_identity(k.kind, k.promo_id)?;
            Key::Price {
                sku: k.sku,
                kind,
                valid_from,
                promo_id,
            }
        }
        Stream::Stock => {
            let k: StockKey = key.decode()?;
            import::check_text("sku", &k.sku, 64)?;
            Key::Stock(k.sku)
        }
        Stream::Customers => {
            let k: CustomerKey = key.decode()?;
            import::check_text("customer_id", &k.customer_id, 64)?;
            Key::Customer(k.customer_id)
        }
        Stream::Reservations => {
            let k: ReservationKey = key.decode()?;
            import::check_text("order_id", &k.order_id, 64)?;
            Key::Reservation {
                order_id: k.order_id,
                line: i64::from(k.line),
            }
        }
    };
    Ok(parsed)
}

enum Op {
    Upsert(Row),
    Delete(Key),
}

fn parse_op(stream: Stream, op: &DeltaOp) -> Result<Op, String> {
    match op {
        DeltaOp::Upsert { row } => import::parse_row_from(stream, row)
            .map(Op::Upsert)
            .map_err(|e| format!("upsert `row`: {e}")),
        DeltaOp::Delete { key } => parse_key(stream, key)
            .map(Op::Delete)
            .map_err(|e| format!("delete `key`: {e}")),
    }
}

/// The statements one stream's ops need, prepared once per delta from the connection's cache.
struct Statements<'c> {
    upsert: CachedStatement<'c>,
    delete: CachedStatement<'c>,
    tokens: Option<TokenStatements<'c>>,
}

struct TokenStatements<'c> {
    delete_of_customer: CachedStatement<'c>,
    insert: CachedStatement<'c>,
    owner: CachedStatement<'c>,
}

impl TokenStatements<'_> {
    /// Delete every card token of `customer_id`, through `card_tokens_by_customer`.
    fn delete_all_of(&mut self, customer_id: &str) -> Result<(), rusqlite::Error> {
        self.delete_of_customer.execute([customer_id]).map(drop)
    }
}

fn main_table(stream: Stream) -> &'static str {
    match stream {
        Stream::Products => "products",
        Stream::Prices => "prices",
        Stream::Stock => "stock",
        Stream::Customers => "customers",
        Stream::Reservations => "reservations",
    }
}

fn delete_sql(stream: Stream) -> &'static str {
    match stream {
        Stream::Products => "DELETE FROM products WHERE gtin = ?1",
        Stream::Prices => {
            "DELETE FROM prices WHERE sku = ?1 AND kind = ?2 AND valid_from = ?3 AND promo_id = ?4"
        }
        Stream::Stock => "DELETE FROM stock WHERE sku = ?1",
        Stream::Customers => "DELETE FROM customers WHERE customer_id = ?1",
        Stream::Reservations => "DELETE FROM reservations WHERE order_id = ?1 AND line = ?2",
    }
}

impl<'c> Statements<'c> {
    fn prepare(conn: &'c Connection, stream: Stream) -> Result<Statements<'c>, rusqlite::Error> {
        let tokens = match stream {
            Stream::Customers => Some(TokenStatements {
                delete_of_customer: {
                    // Built here, not by the import: a snapshot of a million customers would
                    // pay for it on every import; a delta pays once per snapshot (the index
                    // goes with the table an import replaces).
                    conn.execute_batch(
                        "CREATE INDEX IF NOT EXISTS card_tokens_by_customer \
                         ON card_tokens(customer_id)",
                    )?;
                    conn.prepare_cached("DELETE FROM card_tokens WHERE customer_id = ?1")?
                },
                insert: conn.prepare_cached(
                    "INSERT INTO card_tokens (token, customer_id) VALUES (?1, ?2)",
                )?,
                owner: conn
                    .prepare_cached("SELECT customer_id FROM card_tokens WHERE token = ?1")?,
            }),
            _ => None,
        };
        Ok(Statements {
            upsert: conn.prepare_cached(&import::upsert_sql(main_table(stream)))?,
            delete: conn.prepare_cached(delete_sql(stream))?,
            tokens,
        })
    }

    /// Run one op. `Ok(Err(reason))` is a refusal of the op (the delta is invalid); `Err` is a
    /// database failure.
    fn run(&mut self, op: &Op) -> Result<Result<(), String>, rusqlite::Error> {
        match op {
            Op::Upsert(row) => {
                let customer = match (row, self.tokens.as_mut()) {
                    (
                        Row::Customer {
                            customer_id,
                            tokens,
                            ..
                        },
                        Some(ts),
                    ) => {
                        // Before the upsert: it replaces the list that names the old tokens.
                        ts.delete_all_of(customer_id)?;
                        Some((customer_id, tokens, ts))
                    }
                    _ => None,
                };
                import::execute_main(&mut self.upsert, row)?;
                if let Some((customer_id, tokens, ts)) = customer {
                    for (i, token) in tokens.iter().enumerate() {
                        let bytes = token.as_bytes().as_slice();
                        match ts.insert.execute(params![bytes, customer_id]) {
                            Ok(_) => {}
                            Err(e) if is_constraint(&e) => {
                                let owner: String = ts.owner.query_row([bytes], |r| r.get(0))?;
                                return Ok(Err(if &owner == customer_id {
                                    format!("`card_tokens[{i}]` is listed twice")
                                } else {
                                    format!(
                                        "`card_tokens[{i}]` already belongs to customer {owner:?}; a card \
                                         belongs to one customer, so an earlier op of the same delta must \
                                         take it away from {owner:?} first"
                                    )
                                }));
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            Op::Delete(key) => {
                match key {
                    Key::Product(gtin) => self.delete.execute([gtin])?,
                    Key::Price {
                        sku,
                        kind,
                        valid_from,
                        promo_id,
                    } => self
                        .delete
                        .execute(params![sku, kind, valid_from, promo_id])?,
                    Key::Stock(sku) => self.delete.execute([sku])?,
                    Key::Customer(customer_id) => {
                        // An erasure: the tokens go too, or the card would still name the
                        // customer.
                        if let Some(ts) = self.tokens.as_mut() {
                            ts.delete_all_of(customer_id)?;
                        }
                        self.delete.execute([customer_id])?
                    }
                    Key::Reservation { order_id, line } => {
                        self.delete.execute(params![order_id, line])?
                    }
                };
            }
        }
        Ok(Ok(()))
    }
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

/// Apply `delta` on `conn`, the replica's writer connection: all of it with the stream's new
/// version in one transaction, or nothing.
///
/// Takes a shared connection so the applier can run it between the chunks of an import whose
/// statements hold the connection (`replica::import::Interleave`); the transaction is still
/// the connection's only one: the import commits its chunk first.
pub fn apply(conn: &Connection, delta: &Delta) -> Result<DeltaOutcome, ApplyError> {
    let stream = delta.stream;
    if let Some(reason) = delta.envelope_problem() {
        return Err(ApplyError::InvalidDelta {
            stream,
            version: delta.version,
            reason,
        });
    }
    // IMMEDIATE: the version read below must still hold when the new one is written, even if
    // an operator runs `relais replica import` by hand meanwhile.
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let live: i64 = tx
        .prepare_cached("SELECT version FROM streams WHERE name = ?1")?
        .query_row([stream.name()], |r| r.get(0))?;
    let live = live.max(0) as u64;
    if delta.version <= live {
        return Ok(DeltaOutcome::AlreadyApplied {
            stream,
            version: delta.version,
            live,
        });
    }
    if delta.version > live + 1 {
        return Ok(DeltaOutcome::Gap {
            stream,
            expected: live + 1,
            got: delta.version,
        });
    }
    {
        let mut statements = Statements::prepare(&tx, stream)?;
        for (index, raw) in delta.ops.iter().enumerate() {
            let invalid = |reason| ApplyError::InvalidOp {
                stream,
                version: delta.version,
                index,
                reason,
            };
            let op = parse_op(stream, raw).map_err(invalid)?;
            statements.run(&op)?.map_err(invalid)?;
        }
    }
    tx.prepare_cached("UPDATE streams SET version = ?1, applied_ms = ?2 WHERE name = ?3")?
        .execute(params![
            import::non_negative("version", delta.version).unwrap_or(i64::MAX),
            storage::now_unix_ms(),
            stream.name()
        ])?;
    tx.commit()?;
    Ok(DeltaOutcome::Applied {
        stream,
        version: delta.version,
        ops: delta.ops.len(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const PRODUCT_DELTA: &str = r#"{"v":1,"stream":"products","version":43,"ops":[
        {"op":"upsert","row":{"gtin":"04006381333931","sku":"SKU-0042","name":"Milk 1 L"}},
        {"op":"delete","key":{"gtin":"04006381333931"}}]}"#;

    #[test]
    fn a_delta_of_the_contract_parses_into_upserts_and_deletes() {
        let delta = Delta::from_json(PRODUCT_DELTA.as_bytes()).unwrap();
        assert_eq!(delta.v, 1);
        assert_eq!(delta.stream, Stream::Products);
        assert_eq!(delta.version, 43);
        assert!(matches!(delta.ops[0], DeltaOp::Upsert { .. }));
        assert!(matches!(delta.ops[1], DeltaOp::Delete { .. }));
        let again: Delta = serde_json::from_str(&serde_json::to_string(&delta).unwrap()).unwrap();
        assert_eq!(
            again, delta,
            "serialising and parsing back gives the same delta"
        );
    }

    #[test]
    fn a_delta_without_its_contract_version_is_not_a_delta() {
        let err = Delta::from_json(br#"{"stream":"stock","version":1,"ops":[]}"#).unwrap_err();
        assert!(err.reason.contains("`v`"), "{err}");
    }

    #[test]
    fn a_parse_error_names_the_op_and_the_field() {
        let cases: [(&str, &str); 4] = [
            (
                r#"{"v":1,"stream":"stock","version":2,"ops":[{"op":"upsert","row":{}},{"op":"patch","row":{}}]}"#,
                "ops[1].op",
            ),
            (
                r#"{"v":1,"stream":"stock","version":2,"ops":[{"op":"upsert","row":{},"rows":1}]}"#,
                "ops[0]",
            ),
            (
                r#"{"v":1,"stream":"stock","version":2,"ops":[],"extra":true}"#,
                "extra",
            ),
            (
                r#"{"v":1,"stream":"stock","version":"2","ops":[]}"#,
                "version",
            ),
        ];
        for (json, path) in cases {
            let err = Delta::from_json(json.as_bytes()).unwrap_err();
            assert!(
                err.reason.contains(&format!("`{path}`")),
                "{json}: {err} should name {path}"
            );
        }
    }

    #[test]
    fn a_delta_and_a_control_message_are_told_apart_on_the_downlink() {
        use crate::sync::wire::RplMessage;
        let delta: RplMessage = serde_json::from_str(PRODUCT_DELTA).unwrap();
        assert!(matches!(delta, RplMessage::Delta(_)), "{delta:?}");
        let control: RplMessage =
            serde_json::from_str(r#"{"v":1,"stream":"products","must_refetch":true}"#).unwrap();
        assert!(matches!(control, RplMessage::Control(_)), "{control:?}");
    }

    #[test]
    fn an_upsert_row_is_validated_like_a_snapshot_line() {
        let row = serde_json::json!({"gtin": "04006381333932", "sku": "S", "name": "N"});
        let err = parse_op(Stream::Products, &DeltaOp::Upsert { row })
            .err()
            .unwrap();
        assert!(err.contains("check digit"), "{err}");
        let row = serde_json::json!({"sku": "S", "on_hand": "many"});
        let err = parse_op(Stream::Stock, &DeltaOp::Upsert { row })
            .err()
            .unwrap();
        assert!(err.contains("`on_hand`"), "{err}");
    }

    #[test]
    fn a_price_key_follows_the_promo_rules_of_a_price_line() {
        let key =
            serde_json::json!({"sku": "S", "kind": "promo", "valid_from": "2026-01-01T00:00:00Z"});
        let err = parse_op(Stream::Prices, &DeltaOp::Delete { key })
            .err()
            .unwrap();
        assert!(err.contains("promo_id"), "{err}");
        let key = serde_json::json!({"sku": "S", "kind": "base", "valid_from": "yesterday"});
        let err = parse_op(Stream::Prices, &DeltaOp::Delete { key })
            .err()
            .unwrap();
        assert!(err.contains("RFC 3339"), "{err}");
    }

    #[test]
    fn a_replica_of_schema_1_is_migrated_with_its_customers_and_tokens_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replica.db");
        let conn =
            crate::storage::open_writer(&path, crate::storage::Durability::Rebuildable).unwrap();
        let steps = super::super::migrations();
        let first: Vec<&str> = steps.iter().take(1).map(String::as_str).collect();
        // The customers table as schema 1 had it, whatever step 1 creates today.
        conn.execute_batch(first[0]).unwrap();
        conn.execute_batch(
            "DROP TABLE customers;
             CREATE TABLE customers (customer_id TEXT PRIMARY KEY, display_name TEXT NOT NULL, tier TEXT,
               loyalty_balance INTEGER NOT NULL, loyalty_watermark_seq INTEGER NOT NULL) WITHOUT ROWID;
             PRAGMA user_version = 1;
             INSERT INTO customers VALUES ('C1', 'Ann', NULL, 5, 0), ('C2', 'Bob', 'gold', 7, 3);
             INSERT INTO card_tokens VALUES (x'00000000000000000000000000000001', 'C1'),
                                            (x'00000000000000000000000000000002', 'C1');",
        )
        .unwrap();
        drop(conn);
        let conn = super::super::open_writer(&path).unwrap();
        let rows: Vec<(String, Option<String>, i64)> = conn
            .prepare("SELECT customer_id, tier, loyalty_balance FROM customers ORDER BY 1")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                ("C1".into(), None, 5),
                ("C2".into(), Some("gold".into()), 7)
            ]
        );
        let columns: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('customers')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!columns.iter().any(|c| c == "token_list"), "{columns:?}");
        let tokens: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM card_tokens WHERE customer_id = 'C1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tokens, 2);
    }
}
