//! The replica: central's truth kept locally in `replica.db` (WAL, `synchronous=NORMAL`) so the
//! store keeps selling with the WAN down. Everything here can be rebuilt from a snapshot, which
//! is why it may lose its last transactions on power loss and why a damaged file is moved aside
//! rather than repaired.

pub mod apply;
pub mod consent;
pub mod delta;
pub mod freshness;
pub mod import;
pub mod lookup;
mod rows;

use serde::Serialize;
use std::fmt;

/// A replicated stream. Each has one monotonically increasing version set by central.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    serde::Deserialize,
    clap::ValueEnum,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Products,
    Prices,
    Stock,
    Customers,
    Reservations,
}

impl Stream {
    pub const ALL: [Stream; 5] = [
        Stream::Products,
        Stream::Prices,
        Stream::Stock,
        Stream::Customers,
        Stream::Reservations,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stream::Products => "products",
            Stream::Prices => "prices",
            Stream::Stock => "stock",
            Stream::Customers => "customers",
            Stream::Reservations => "reservations",
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Replica schema, one step per `user_version`. The table definitions are shared with the
/// import's shadow tables through [`table_ddl`] so the two can never drift apart.
pub(crate) fn migrations() -> Vec<String> {
    let mut first = String::from(
        "CREATE TABLE streams (name TEXT PRIMARY KEY, version INTEGER NOT NULL, applied_ms INTEGER NOT NULL) WITHOUT ROWID;\n",
    );
    for stream in Stream::ALL {
        first.push_str(&format!(
            "INSERT INTO streams(name, version, applied_ms) VALUES ('{}', 0, 0);\n",
            stream.name()
        ));
        for (table, ddl) in table_ddl(stream, "") {
            first.push_str(&ddl);
            first.push_str(";\n");
            for index in index_ddl(table, "", "g0") {
                first.push_str(&index);
                first.push_str(";\n");
            }
        }
    }
    vec![
        first,
        CUSTOMERS_TOKEN_LIST.to_owned(),
        customers_without_token_list(),
        customers_with_consent(),
        reservations_with_fulfilment(),
        STREAMS_CONFIRMED.to_owned(),
    ]
}

/// Step 4: consent choices with their dates and the marketing data they guard (ADR 0023). The
/// table is rebuilt from [`table_ddl`] rather than altered, so a replica created by step 1 of
/// today (which already has the columns) and one of an older schema end up identical.
fn customers_with_consent() -> String {
    let mut step = String::new();
    for (_, ddl) in table_ddl(Stream::Customers, "__v4")
        .into_iter()
        .filter(|(table, _)| *table == "customers")
    {
        step.push_str(&ddl);
        step.push_str(";\n");
    }
    step.push_str(
        "INSERT INTO customers__v4 (customer_id, display_name, tier, loyalty_balance, \
         loyalty_watermark_seq) SELECT customer_id, display_name, tier, loyalty_balance, \
         loyalty_watermark_seq FROM customers;\n\
         DROP TABLE customers;\n\
         ALTER TABLE customers__v4 RENAME TO customers;\n",
    );
    step
}

/// ADR 0022: a reservation says how the order leaves the store (`collect` at the counter or
/// `ship` from here); rows from before are click-and-collect, as they were. Rebuilt rather than
/// altered so that a fresh replica, whose first step already has the column, takes the same
/// path.
fn reservations_with_fulfilment() -> String {
    let mut step = String::new();
    for (table, ddl) in table_ddl(Stream::Reservations, "__v4") {
        step.push_str(&ddl);
        step.push_str(";\n");
        step.push_str(&format!(
            "INSERT INTO {table}__v4 (order_id, line, sku, qty, status, pickup_code) \
             SELECT order_id, line, sku, qty, status, pickup_code FROM {table};\n\
             DROP TABLE {table};\n\
             ALTER TABLE {table}__v4 RENAME TO {table};\n"
        ));
        for index in index_ddl(table, "", "v4") {
            step.push_str(&index);
            step.push_str(";\n");
        }
    }
    step
}

/// Step 6: when central's heartbeat last confirmed the live version of a stream (unix ms, 0
/// when never): a stream that did not change but is still current is not stale
/// (`replica::freshness`).
const STREAMS_CONFIRMED: &str =
    "ALTER TABLE streams ADD COLUMN confirmed_ms INTEGER NOT NULL DEFAULT 0;\n";

/// Step 2 (kept as it shipped): customers carried the list of their card tokens, so that a delta
/// replacing or erasing one customer's tokens found them without an index on
/// `card_tokens(customer_id)`.
const CUSTOMERS_TOKEN_LIST: &str = "CREATE TABLE customers__v2 (customer_id TEXT PRIMARY KEY, \
     display_name TEXT NOT NULL, tier TEXT, loyalty_balance INTEGER NOT NULL, \
     loyalty_watermark_seq INTEGER NOT NULL, token_list BLOB) WITHOUT ROWID;
INSERT INTO customers__v2 (customer_id, display_name, tier, loyalty_balance, loyalty_watermark_seq, token_list) \
     SELECT c.customer_id, c.display_name, c.tier, c.loyalty_balance, c.loyalty_watermark_seq, t.list \
     FROM customers c LEFT JOIN (SELECT customer_id, unhex(group_concat(hex(token), '')) AS list \
     FROM card_tokens GROUP BY customer_id) t ON t.customer_id = c.customer_id;
DROP TABLE customers;
ALTER TABLE customers__v2 RENAME TO customers;
";

/// Step 3: the list goes again. Writing it cost every customers import more than a second per
/// million customers (the import goal is < 10 s); the index it replaced is now built lazily by
/// the applier at the first customers delta after an import (see `replica::delta`), so imports
/// pay nothing and deltas pay once.
fn customers_without_token_list() -> String {
    let mut step = String::new();
    for (_, ddl) in table_ddl(Stream::Customers, "__v3")
        .into_iter()
        .filter(|(table, _)| *table == "customers")
    {
        step.push_str(&ddl);
        step.push_str(";\n");
    }
    // Only the columns of step 3: the table is created as today's DDL has it.
    step.push_str(
        "INSERT INTO customers__v3 (customer_id, display_name, tier, loyalty_balance, \
         loyalty_watermark_seq) SELECT customer_id, display_name, tier, loyalty_balance, \
         loyalty_watermark_seq FROM customers;\n\
         DROP TABLE customers;\n\
         ALTER TABLE customers__v3 RENAME TO customers;\n",
    );
    step
}

/// `CREATE TABLE` statements of a stream's tables, with `suffix` appended to each table name
/// (empty for the live tables, `__shadow` for an import in progress).
pub(crate) fn table_ddl(stream: Stream, suffix: &str) -> Vec<(&'static str, String)> {
    match stream {
        Stream::Products => vec![(
            "products",
            format!(
                "CREATE TABLE products{suffix} (gtin INTEGER PRIMARY KEY, sku TEXT NOT NULL, \
                 name TEXT NOT NULL, attributes TEXT)"
            ),
        )],
        Stream::Prices => vec![(
            "prices",
            format!(
                "CREATE TABLE prices{suffix} (sku TEXT NOT NULL, kind INTEGER NOT NULL, \
                 price_minor INTEGER NOT NULL, currency TEXT NOT NULL, valid_from INTEGER NOT NULL, \
                 valid_to INTEGER, promo_id TEXT NOT NULL DEFAULT '', \
                 PRIMARY KEY (sku, kind, valid_from, promo_id)) WITHOUT ROWID"
            ),
        )],
        Stream::Stock => vec![(
            "stock",
            format!(
                "CREATE TABLE stock{suffix} (sku TEXT PRIMARY KEY, on_hand INTEGER NOT NULL, \
                 watermark_seq INTEGER NOT NULL) WITHOUT ROWID"
            ),
        )],
        // Card tokens are keyed by token (lookups by card); deltas find a customer's tokens
        // through `card_tokens_by_customer`, built lazily (see `replica::delta`).
        Stream::Customers => vec![
            (
                "customers",
                format!(
                    "CREATE TABLE customers{suffix} (customer_id TEXT PRIMARY KEY, display_name TEXT NOT NULL, \
                     tier TEXT, loyalty_balance INTEGER NOT NULL, loyalty_watermark_seq INTEGER NOT NULL, \
                     consent_marketing INTEGER, consent_marketing_ms INTEGER, \
                     consent_profiling INTEGER, consent_profiling_ms INTEGER, marketing TEXT) \
                     WITHOUT ROWID"
                ),
            ),
            (
                "card_tokens",
                format!(
                    "CREATE TABLE card_tokens{suffix} (token BLOB PRIMARY KEY, customer_id TEXT NOT NULL) \
                     WITHOUT ROWID"
                ),
            ),
        ],
        Stream::Reservations => vec![(
            "reservations",
            format!(
                "CREATE TABLE reservations{suffix} (order_id TEXT NOT NULL, line INTEGER NOT NULL, \
                 sku TEXT NOT NULL, qty INTEGER NOT NULL, status TEXT NOT NULL, pickup_code TEXT, \
                 fulfilment TEXT NOT NULL DEFAULT 'collect', \
                 PRIMARY KEY (order_id, line)) WITHOUT ROWID"
            ),
        )],
    }
}

/// Secondary indexes of a table. Index names carry a generation tag because an index keeps its
/// name when its shadow table is renamed into place: the next import needs fresh names.
pub(crate) fn index_ddl(table: &str, suffix: &str, generation: &str) -> Vec<String> {
    match table {
        "reservations" => vec![
            format!(
                "CREATE INDEX reservations_by_sku_{generation} ON reservations{suffix}(sku, status)"
            ),
            format!(
                "CREATE INDEX reservations_by_pickup_{generation} ON reservations{suffix}(pickup_code) \
                 WHERE pickup_code IS NOT NULL"
            ),
        ],
        _ => Vec::new(),
    }
}

/// Version and freshness of one stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StreamState {
    pub stream: Stream,
    pub version: u64,
    /// When the last snapshot or delta was applied (unix ms); 0 when never.
    pub applied_ms: i64,
    /// When central's heartbeat last said the live version is still current (unix ms); 0 when
    /// never.
    pub confirmed_ms: i64,
}

impl StreamState {
    /// When the stream was last known current (see `replica::freshness`).
    pub fn current_ms(&self) -> i64 {
        freshness::last_current_ms(self.applied_ms, self.confirmed_ms)
    }
}

pub fn stream_states(conn: &rusqlite::Connection) -> Result<Vec<StreamState>, rusqlite::Error> {
    // A replica not migrated yet (read by `relais doctor` before an upgraded agent first
    // started) has no `confirmed_ms`: it reads as never confirmed. Only that case pays for
    // the second prepare.
    let mut stmt =
        match conn.prepare_cached("SELECT name, version, applied_ms, confirmed_ms FROM streams") {
            Ok(stmt) => stmt,
            Err(_) => conn.prepare_cached("SELECT name, version, applied_ms, 0 FROM streams")?,
        };
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, version, applied_ms, confirmed_ms) = row?;
        if let Some(stream) = Stream::ALL.into_iter().find(|s| s.name() == name) {
            out.push(StreamState {
                stream,
                version: version.max(0) as u64,
                applied_ms,
                confirmed_ms,
            });
        }
    }
    Ok(out)
}

/// A GDPR erasure must reach every copy of the replica: a damaged one moved aside still holds
/// the customers it had (issue 16). The replica is rebuilt from snapshots, so nothing is lost.
/// Shared by the running agent's applier and `relais replica import` (the agent stopped).
/// A cut snapshot download (`snapshots/*.part`) may hold the erased customer too: it goes as
/// well (any stream's: a part does not say which stream it is, and the next attempt simply
/// downloads the file again).
pub(crate) fn forget_damaged_copies(path: &std::path::Path, why: &str) {
    let removed = crate::storage::remove_damaged_copies(path, None);
    if !removed.is_empty() {
        tracing::info!(
            copies = removed.len(),
            reason = why,
            "damaged replica copies deleted with the erasure"
        );
    }
    let parts = path
        .parent()
        .map(|dir| dir.join(crate::storage::SNAPSHOTS_DIR))
        .and_then(|dir| std::fs::read_dir(dir).ok());
    for entry in parts.into_iter().flatten().flatten() {
        let part = entry.path();
        if part.extension().is_some_and(|ext| ext == "part") {
            match std::fs::remove_file(&part) {
                Ok(()) => tracing::info!(path = %part.display(), reason = why,
                    "partial snapshot download deleted with the erasure"),
                Err(e) => tracing::warn!(path = %part.display(), error = %e,
                    "cannot delete a partial snapshot download at an erasure; delete it by hand"),
            }
        }
    }
}

/// Open (creating and migrating if needed) the replica's writer connection.
pub fn open_writer(
    path: &std::path::Path,
) -> Result<rusqlite::Connection, crate::storage::StorageError> {
    let mut conn = crate::storage::open_writer(path, crate::storage::Durability::Rebuildable)?;
    let steps = migrations();
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    crate::storage::migrate(&mut conn, path, &steps)?;
    Ok(conn)
}

#[cfg(test)]
#[path = "migration_tests.rs"]
mod migration_tests;
