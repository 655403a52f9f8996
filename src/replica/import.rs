//! Snapshot import: NDJSON (plain or gzip) streamed into shadow tables that replace the live
//! ones in one transaction. A bad line, a truncated file or a crash leaves the live tables
//! exactly as they were: the shadow tables are filled in chunked transactions nobody reads
//! (so the WAL is checkpointed a few MB at a time), and the live tables are never truncated,
//! only swapped. One import at a time per replica (a lock file beside it): a second one waits,
//! then sees the version the first one left.
//!
//! Reading, decompressing and JSON parsing run on their own thread; SQLite inserts run on the
//! caller's thread, which is the replica's single writer for the duration of the import.

use super::{Stream, index_ddl, table_ddl};
use crate::cards::CardToken;
use crate::decode::gtin::Gtin14;
use crate::storage;
use rusqlite::{Connection, Statement, params};
use serde::Deserialize;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant};

/// A line longer than this is refused: snapshot lines are small records, and an unbounded
/// line would let one corrupt file exhaust the box's memory.
pub const MAX_LINE_BYTES: usize = 1 << 20;
const BATCH_ROWS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: the file ends in the middle of a gzip stream or is not valid gzip ({source}); \
         the download was probably cut: fetch it again. Nothing was imported"
    )]
    Gzip {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {reason}. Nothing was imported; the previous {stream} stay live")]
    BadLine {
        path: PathBuf,
        stream: Stream,
        line: u64,
        reason: String,
    },
    #[error(
        "{path}: no records; an empty snapshot would erase every {stream} row, so it is refused"
    )]
    Empty { path: PathBuf, stream: Stream },
    #[error(
        "version {requested} is older than the {stream} version already live ({current}); importing it \
         would roll central's data back. Pass the newest snapshot, or --version {current} or higher"
    )]
    OlderVersion {
        stream: Stream,
        requested: u64,
        current: u64,
    },
    #[error(
        "the replica is locked by another writer (another import, or the agent applying a snapshot); \
         wait for it to finish and retry. Nothing was imported"
    )]
    Busy,
    #[error("replica database: {0}")]
    Sqlite(rusqlite::Error),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
}

impl From<rusqlite::Error> for ImportError {
    fn from(e: rusqlite::Error) -> ImportError {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                ImportError::Busy
            }
            _ => ImportError::Sqlite(e),
        }
    }
}

/// How progress is shown: a bar on a terminal, log lines otherwise, or nothing (tests, demo).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    Auto,
    Quiet,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportReport {
    pub stream: Stream,
    pub rows: u64,
    pub version: u64,
    pub previous_version: u64,
    pub seconds: f64,
    pub rows_per_s: f64,
}

// ---- line formats (docs/snapshot-format.md) ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductLine {
    gtin: String,
    sku: String,
    name: String,
    /// Kept as the validated JSON text it arrived as: parsing it into a map and serialising it
    /// back doubled the cost of a product import.
    #[serde(default)]
    attributes: Option<Box<serde_json::value::RawValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceLine {
    sku: String,
    #[serde(default)]
    kind: PriceKind,
    price_minor: i64,
    currency: String,
    valid_from: String,
    #[serde(default)]
    valid_to: Option<String>,
    #[serde(default)]
    promo_id: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum PriceKind {
    #[default]
    Base,
    Promo,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StockLine {
    sku: String,
    on_hand: i64,
    #[serde(default)]
    watermark_seq: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerLine {
    customer_id: String,
    display_name: String,
    #[serde(default)]
    tier: Option<String>,
    #[serde(default)]
    loyalty_balance: i64,
    #[serde(default)]
    loyalty_watermark_seq: u64,
    #[serde(default)]
    card_tokens: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReservationLine {
    order_id: String,
    line: u32,
    sku: String,
    qty: i64,
    status: ReservationStatus,
    #[serde(default)]
    pickup_code: Option<String>,
}

#[derive(Deserialize, Clone, Copy, Debug)]
#[serde(rename_all = "snake_case")]
enum ReservationStatus {
    Open,
    Picked,
    Collected,
    Cancelled,
}

impl ReservationStatus {
    fn name(self) -> &'static str {
        match self {
            ReservationStatus::Open => "open",
            ReservationStatus::Picked => "picked",
            ReservationStatus::Collected => "collected",
            ReservationStatus::Cancelled => "cancelled",
        }
    }
}

/// A validated row, ready to bind. Snapshot lines and delta upserts both become one, through
/// the same validation, so the two formats cannot drift apart.
pub(crate) enum Row {
    Product {
        gtin: i64,
        sku: String,
        name: String,
        attributes: Option<String>,
    },
    Price {
        sku: String,
        kind: i64,
        price_minor: i64,
        currency: String,
        valid_from: i64,
        valid_to: Option<i64>,
        promo_id: String,
    },
    Stock {
        sku: String,
        on_hand: i64,
        watermark_seq: i64,
    },
    Customer {
        customer_id: String,
        display_name: String,
        tier: Option<String>,
        balance: i64,
        watermark_seq: i64,
        tokens: Vec<CardToken>,
    },
    Reservation {
        order_id: String,
        line: i64,
        sku: String,
        qty: i64,
        status: &'static str,
        pickup_code: Option<String>,
    },
}

pub(crate) fn check_text(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("`{field}` is empty"));
    }
    if value.len() > max {
        return Err(format!(
            "`{field}` is {} bytes long; the limit is {max}",
            value.len()
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("`{field}` contains control characters"));
    }
    Ok(())
}

pub(crate) fn parse_time(field: &str, value: &str) -> Result<i64, String> {
    humantime::parse_rfc3339(value)
        .map_err(|e| {
            format!(
                "`{field}` = {value:?} is not an RFC 3339 UTC time like 2026-01-31T23:00:00Z ({e})"
            )
        })
        .and_then(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .map_err(|_| format!("`{field}` = {value:?} is before 1970"))
        })
}

fn json_error(e: serde_json::Error) -> String {
    format!("{e}")
}

pub(crate) fn non_negative(field: &str, value: u64) -> Result<i64, String> {
    i64::try_from(value).map_err(|_| format!("`{field}` = {value} is too large"))
}

/// Where a row's JSON comes from: a snapshot line (bytes, errors with a column) or a delta
/// upsert already parsed into a value (errors with the path of the bad field).
pub(crate) trait RowSource {
    fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, String>;
}

impl RowSource for &[u8] {
    fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(self).map_err(json_error)
    }
}

impl RowSource for &serde_json::Value {
    fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        // Path tracking costs on every field; only a row that fails pays for it, twice.
        if let Ok(value) = T::deserialize(*self) {
            return Ok(value);
        }
        serde_path_to_error::deserialize(*self).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.into_inner().to_string()
            } else {
                format!("`{path}`: {}", e.into_inner())
            }
        })
    }
}

/// The promo rules of a price's identity, shared by snapshot lines and delta delete keys:
/// returns the stored `kind` code and `promo_id` (empty for a base price).
pub(crate) fn price_identity(
    kind: PriceKind,
    promo_id: Option<String>,
) -> Result<(i64, String), String> {
    match (kind, promo_id) {
        (PriceKind::Promo, Some(id)) => {
            check_text("promo_id", &id, 64)?;
            Ok((1, id))
        }
        (PriceKind::Promo, None) => Err("a promo price needs a `promo_id`".into()),
        (PriceKind::Base, Some(_)) => Err("a base price cannot have a `promo_id`".into()),
        (PriceKind::Base, None) => Ok((0, String::new())),
    }
}

pub(crate) fn parse_row(stream: Stream, line: &[u8]) -> Result<Row, String> {
    parse_row_from(stream, line)
}

pub(crate) fn parse_row_from(stream: Stream, source: impl RowSource) -> Result<Row, String> {
    match stream {
        Stream::Products => {
            let p: ProductLine = source.decode()?;
            let gtin = Gtin14::parse(&p.gtin).map_err(|e| format!("`gtin` = {:?}: {e}", p.gtin))?;
            check_text("sku", &p.sku, 64)?;
            check_text("name", &p.name, 256)?;
            let attributes = match p.attributes {
                Some(raw) if raw.get().starts_with('{') => Some(raw.get().to_string()),
                Some(_) => return Err("`attributes` must be a JSON object".into()),
                None => None,
            };
            Ok(Row::Product {
                gtin: gtin.as_i64(),
                sku: p.sku,
                name: p.name,
                attributes,
            })
        }
        Stream::Prices => {
            let p: PriceLine = source.decode()?;
            check_text("sku", &p.sku, 64)?;
            if p.price_minor < 0 {
                return Err(format!("`price_minor` = {} is negative", p.price_minor));
            }
            if p.currency.len() != 3 || !p.currency.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(format!(
                    "`currency` = {:?} is not an ISO 4217 code like EUR",
                    p.currency
                ));
            }
            let valid_from = parse_time("valid_from", &p.valid_from)?;
            let valid_to = p
                .valid_to
                .as_deref()
                .map(|v| parse_time("valid_to", v))
                .transpose()?;
            if let Some(to) = valid_to
                && to <= valid_from
            {
                return Err(
                    "`valid_to` is not after `valid_from`: the price would never apply".into(),
                );
            }
            let (kind, promo_id) = price_identity(p.kind, p.promo_id)?;
            Ok(Row::Price {
                sku: p.sku,
                kind,
                price_minor: p.price_minor,
                currency: p.currency,
                valid_from,
                valid_to,
                promo_id,
            })
        }
        Stream::Stock => {
            let s: StockLine = source.decode()?;
            check_text("sku", &s.sku, 64)?;
            Ok(Row::Stock {
                sku: s.sku,
                on_hand: s.on_hand,
                watermark_seq: non_negative("watermark_seq", s.watermark_seq)?,
            })
        }
        Stream::Customers => {
            let c: CustomerLine = source.decode()?;
            check_text("customer_id", &c.customer_id, 64)?;
            check_text("display_name", &c.display_name, 128)?;
            if let Some(tier) = &c.tier {
                check_text("tier", tier, 32)?;
            }
            if c.card_tokens.len() > 32 {
                return Err(format!(
                    "{} card tokens; at most 32 per customer",
                    c.card_tokens.len()
                ));
            }
            let tokens = c
                .card_tokens
                .iter()
                .map(|t| CardToken::from_hex(t).map_err(|e| format!("`card_tokens`: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Row::Customer {
                customer_id: c.customer_id,
                display_name: c.display_name,
                tier: c.tier,
                balance: c.loyalty_balance,
                watermark_seq: non_negative("loyalty_watermark_seq", c.loyalty_watermark_seq)?,
                tokens,
            })
        }
        Stream::Reservations => {
            let r: ReservationLine = source.decode()?;
            check_text("order_id", &r.order_id, 64)?;
            check_text("sku", &r.sku, 64)?;
            if r.qty <= 0 {
                return Err(format!("`qty` = {} must be positive", r.qty));
            }
            if let Some(code) = &r.pickup_code {
                check_text("pickup_code", code, 64)?;
            }
            Ok(Row::Reservation {
                order_id: r.order_id,
                line: i64::from(r.line),
                sku: r.sku,
                qty: r.qty,
                status: r.status.name(),
                pickup_code: r.pickup_code,
            })
        }
    }
}

/// Counts compressed bytes read, for a progress bar whose total is the file size.
struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

type Batch = Vec<(u64, Row)>;
type ParseResult = Result<Batch, ImportError>;

/// Open `path` (gzip detected by its magic bytes) and parse it on a thread of its own.
fn spawn_parser(
    path: &Path,
    stream: Stream,
    bytes_read: Arc<AtomicU64>,
) -> Result<Receiver<ParseResult>, ImportError> {
    let read_err = |source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut buffered = BufReader::with_capacity(
        1 << 16,
        CountingReader {
            inner: file,
            count: bytes_read,
        },
    );
    let is_gzip = buffered
        .fill_buf()
        .map_err(read_err)?
        .starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn BufRead + Send> = if is_gzip {
        Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::bufread::MultiGzDecoder::new(buffered),
        ))
    } else {
        Box::new(buffered)
    };
    let (tx, rx) = sync_channel::<ParseResult>(8);
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("import-parser".into())
        .spawn(move || {
            crate::storage::yield_to_tills();
            let result = parse_all(reader, &path, stream, is_gzip, &tx);
            if let Err(e) = result {
                let _ = tx.send(Err(e));
            }
        })
        .map_err(read_err)?;
    Ok(rx)
}

fn parse_all(
    mut reader: Box<dyn BufRead + Send>,
    path: &Path,
    stream: Stream,
    is_gzip: bool,
    tx: &std::sync::mpsc::SyncSender<ParseResult>,
) -> Result<(), ImportError> {
    let mut line = Vec::with_capacity(512);
    let mut line_no = 0u64;
    let mut batch: Batch = Vec::with_capacity(BATCH_ROWS);
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|source| {
                if is_gzip {
                    ImportError::Gzip {
                        path: path.to_path_buf(),
                        source,
                    }
                } else {
                    ImportError::Read {
                        path: path.to_path_buf(),
                        source,
                    }
                }
            })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let bad = |reason: String| ImportError::BadLine {
            path: path.to_path_buf(),
            stream,
            line: line_no,
            reason,
        };
        if line.len() > MAX_LINE_BYTES {
            return Err(bad(format!("line longer than {MAX_LINE_BYTES} bytes")));
        }
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            continue;
        }
        let row = parse_row(stream, trimmed).map_err(bad)?;
        batch.push((line_no, row));
        if batch.len() == BATCH_ROWS {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
            if tx.send(Ok(full)).is_err() {
                return Ok(()); // the writer gave up; its error is the one reported
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Ok(batch));
    }
    Ok(())
}

struct Inserters<'c> {
    main: Statement<'c>,
    tokens: Option<Statement<'c>>,
    /// Card tokens are random keys: inserted as they come, each lands on a random page of a
    /// b-tree that outgrows the cache. Buffered and inserted in key order at the end instead,
    /// the b-tree is built append-only (measured: customers import 13–16 s → see ADR 0003).
    pending_tokens: Vec<PendingToken>,
    customer_ids: Vec<Box<str>>,
}

/// 16-byte token, index into `customer_ids`, snapshot line (for duplicate reports).
struct PendingToken {
    token: CardToken,
    customer: u32,
    line: u64,
}

impl Inserters<'_> {
    /// Insert the buffered card tokens in key order; a token present twice is reported with
    /// both lines.
    fn flush_tokens(&mut self, path: &Path, stream: Stream) -> Result<(), ImportError> {
        let Some(stmt) = self.tokens.as_mut() else {
            return Ok(());
        };
        self.pending_tokens.sort_unstable_by(|a, b| {
            a.token
                .as_bytes()
                .cmp(b.token.as_bytes())
                .then(a.line.cmp(&b.line))
        });
        let mut previous: Option<&PendingToken> = None;
        for pending in &self.pending_tokens {
            if let Some(prev) = previous
                && prev.token == pending.token
            {
                return Err(ImportError::BadLine {
                    path: path.to_path_buf(),
                    stream,
                    line: pending.line,
                    reason: format!(
                        "duplicate key: a card token of this customer is also on line {}",
                        prev.line
                    ),
                });
            }
            let customer = self
                .customer_ids
                .get(pending.customer as usize)
                .map(|c| c.as_ref())
                .unwrap_or_default();
            stmt.execute(params![pending.token.as_bytes().as_slice(), customer])?;
            previous = Some(pending);
        }
        self.pending_tokens = Vec::new();
        Ok(())
    }
}

fn insert_row(ins: &mut Inserters<'_>, row: &Row, line: u64) -> Result<(), rusqlite::Error> {
    execute_main(&mut ins.main, row)?;
    if let Row::Customer {
        customer_id,
        tokens,
        ..
    } = row
        && !tokens.is_empty()
    {
        let customer = u32::try_from(ins.customer_ids.len()).unwrap_or(u32::MAX);
        ins.customer_ids.push(customer_id.as_str().into());
        ins.pending_tokens
            .extend(tokens.iter().map(|token| PendingToken {
                token: *token,
                customer,
                line,
            }));
    }
    Ok(())
}

/// Bind `row` to a statement made from [`insert_sql`] or [`upsert_sql`] of the row's main
/// table and run it (a customer's card tokens are the caller's business).
pub(crate) fn execute_main(stmt: &mut Statement<'_>, row: &Row) -> Result<(), rusqlite::Error> {
    match row {
        Row::Product {
            gtin,
            sku,
            name,
            attributes,
        } => stmt.execute(params![gtin, sku, name, attributes]),
        Row::Price {
            sku,
            kind,
            price_minor,
            currency,
            valid_from,
            valid_to,
            promo_id,
        } => stmt.execute(params![
            sku,
            kind,
            price_minor,
            currency,
            valid_from,
            valid_to,
            promo_id
        ]),
        Row::Stock {
            sku,
            on_hand,
            watermark_seq,
        } => stmt.execute(params![sku, on_hand, watermark_seq]),
        Row::Customer {
            customer_id,
            display_name,
            tier,
            balance,
            watermark_seq,
            tokens: _,
        } => stmt.execute(params![
            customer_id,
            display_name,
            tier,
            balance,
            watermark_seq
        ]),
        Row::Reservation {
            order_id,
            line,
            sku,
            qty,
            status,
            pickup_code,
        } => stmt.execute(params![order_id, line, sku, qty, status, pickup_code]),
    }
    .map(drop)
}

fn row_key(row: &Row) -> String {
    match row {
        Row::Product { gtin, .. } => format!("gtin {gtin:014}"),
        Row::Price {
            sku,
            valid_from,
            promo_id,
            ..
        } => format!("price of sku {sku:?} from {valid_from} ms promo {promo_id:?}"),
        Row::Stock { sku, .. } => format!("sku {sku:?}"),
        Row::Customer { customer_id, .. } => {
            format!("customer {customer_id:?} or one of its card tokens")
        }
        Row::Reservation { order_id, line, .. } => format!("order {order_id:?} line {line}"),
    }
}

const SHADOW: &str = "__shadow";

fn insert_sql(table: &str) -> String {
    format!("INSERT INTO {table}{SHADOW} {}", columns_and_values(table))
}

/// Insert-or-replace into a live table, for delta upserts: the same columns as the import.
pub(crate) fn upsert_sql(table: &str) -> String {
    format!(
        "INSERT OR REPLACE INTO {table} {}",
        columns_and_values(table)
    )
}

fn columns_and_values(table: &str) -> &'static str {
    match table {
        "products" => "(gtin, sku, name, attributes) VALUES (?1, ?2, ?3, ?4)",
        "prices" => {
            "(sku, kind, price_minor, currency, valid_from, valid_to, promo_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        }
        "stock" => "(sku, on_hand, watermark_seq) VALUES (?1, ?2, ?3)",
        "customers" => {
            "(customer_id, display_name, tier, loyalty_balance, loyalty_watermark_seq) \
             VALUES (?1, ?2, ?3, ?4, ?5)"
        }
        "card_tokens" => "(token, customer_id) VALUES (?1, ?2)",
        _ => "(order_id, line, sku, qty, status, pickup_code) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    }
}

/// Import one stream's snapshot file into the replica at `replica_path`.
pub fn import_file(
    replica_path: &Path,
    stream: Stream,
    path: &Path,
    version: Option<u64>,
    progress: Progress,
) -> Result<ImportReport, ImportError> {
    let mut conn = super::open_writer(replica_path)?;
    import_with(&mut conn, stream, path, version, progress)
}

/// Same as [`import_file`] on an open writer connection.
pub fn import_with(
    conn: &mut Connection,
    stream: Stream,
    path: &Path,
    version: Option<u64>,
    progress: Progress,
) -> Result<ImportReport, ImportError> {
    import_interleaved(conn, stream, path, version, progress, &mut NothingWaits)
}

/// Work that may run on the writer connection between the chunks of an import (ADR 0024): the
/// replica applier lets stock and reservation deltas through while a catalogue imports.
pub trait Interleave {
    /// True when something waits to run before the import goes on. Called after every batch
    /// of rows, so it must be cheap (a `try_recv`).
    fn waiting(&mut self) -> bool;
    /// Run what waits, on `conn`, with no transaction of the import open: each piece of work
    /// commits on its own; the shadow tables it leaves alone.
    fn run(&mut self, conn: &Connection);
}

/// The import of `relais replica import`: nothing else uses the connection.
struct NothingWaits;

impl Interleave for NothingWaits {
    fn waiting(&mut self) -> bool {
        false
    }
    fn run(&mut self, _: &Connection) {}
}

/// [`import_with`], letting `interleave` run between chunks of the fill, between index builds
/// and before the swap.
pub fn import_interleaved(
    conn: &mut Connection,
    stream: Stream,
    path: &Path,
    version: Option<u64>,
    progress: Progress,
    interleave: &mut dyn Interleave,
) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    let total_bytes = std::fs::metadata(path)
        .map_err(|source| ImportError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    // Held until the import returns: the version read below stays the live one.
    let _one_import_at_a_time = import_lock(conn)?;
    let current: i64 = conn.query_row(
        "SELECT version FROM streams WHERE name = ?1",
        [stream.name()],
        |r| r.get(0),
    )?;
    let current = current.max(0) as u64;
    let version = version.unwrap_or(current + 1);
    if version < current {
        return Err(ImportError::OlderVersion {
            stream,
            requested: version,
            current,
        });
    }
    let bytes_read = Arc::new(AtomicU64::new(0));
    let batches = spawn_parser(path, stream, Arc::clone(&bytes_read))?;
    let reporter = ProgressReporter::new(progress, stream, total_bytes);

    // A big page cache for the duration of the import: the shadow b-trees stay in memory.
    conn.execute_batch("PRAGMA cache_size=-262144;")?;
    let tables = table_ddl(stream, SHADOW);
    let filled = fill_and_swap(
        conn,
        Fill {
            stream,
            path,
            version,
            tables: &tables,
            batches: &batches,
            reporter: &reporter,
            bytes_read: &bytes_read,
        },
        interleave,
    );
    if filled.is_err() {
        // Whatever the shadow tables hold is not live and never will be.
        let _ = conn.execute_batch("ROLLBACK");
        for (table, _) in &tables {
            let _ = conn.execute_batch(&format!("DROP TABLE IF EXISTS {table}{SHADOW}"));
        }
    }
    let _ = conn.execute_batch("PRAGMA cache_size=-32768; PRAGMA secure_delete=ON;");
    let rows = filled?;
    let seconds = started.elapsed().as_secs_f64();
    reporter.finish(rows, seconds);
    Ok(ImportReport {
        stream,
        rows,
        version,
        previous_version: current,
        seconds,
        rows_per_s: rows as f64 / seconds.max(1e-9),
    })
}

/// An exclusive lock on `<replica>.import-lock`, waiting for another import of this replica (the
/// agent's applier or `relais replica import`) to finish. `None` for an in-memory database.
fn import_lock(conn: &Connection) -> Result<Option<std::fs::File>, ImportError> {
    let Some(db) = conn.path().filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let path = std::path::PathBuf::from(format!("{db}.import-lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| ImportError::Read {
            path: path.clone(),
            source,
        })?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
        ImportError::Read {
            path,
            source: e.into(),
        }
    })?;
    Ok(Some(file))
}

/// Rows filled into the shadow tables per transaction. The live tables are swapped in one
/// small transaction at the end, so readers never see a partial stream; filling in chunks lets
/// the WAL be checkpointed a few MB at a time while the import runs, instead of ~200 MB at one
/// commit (the tills' fsyncs waited behind that write-back: the tickets bench's busy p99).
const FILL_CHUNK_ROWS: u64 = 50_000;

/// What one import fills its shadow tables from.
struct Fill<'a> {
    stream: Stream,
    path: &'a Path,
    version: u64,
    tables: &'a [(&'a str, String)],
    batches: &'a std::sync::mpsc::Receiver<ParseResult>,
    reporter: &'a ProgressReporter,
    bytes_read: &'a AtomicU64,
}

/// Fill the shadow tables from `batches` in chunked transactions, build their indexes, and swap
/// them in; returns the rows imported. Between two batches, when `interleave` has work waiting,
/// the chunk commits early and the work runs (ADR 0024): the shadow tables are nobody else's,
/// so ending a chunk early changes nothing but the number of commits. On `Err` a transaction
/// may be open: the caller rolls back and drops the shadow tables.
fn fill_and_swap(
    conn: &Connection,
    fill: Fill<'_>,
    interleave: &mut dyn Interleave,
) -> Result<u64, ImportError> {
    let Fill {
        stream,
        path,
        version,
        tables,
        batches,
        reporter,
        bytes_read,
    } = fill;
    conn.execute_batch("BEGIN")?;
    for (table, ddl) in tables {
        conn.execute_batch(&format!("DROP TABLE IF EXISTS {table}{SHADOW}; {ddl};"))?;
    }
    conn.execute_batch("COMMIT; BEGIN")?;
    let mut rows = 0u64;
    let mut since_commit = 0u64;
    {
        let mut ins = Inserters {
            main: conn.prepare(&insert_sql(tables[0].0))?,
            tokens: match tables.get(1) {
                Some((table, _)) => Some(conn.prepare(&insert_sql(table))?),
                None => None,
            },
            pending_tokens: Vec::new(),
            customer_ids: Vec::new(),
        };
        for batch in batches.iter() {
            let batch = batch?;
            for (line, row) in &batch {
                if let Err(e) = insert_row(&mut ins, row, *line) {
                    let reason = match &e {
                        rusqlite::Error::SqliteFailure(f, _)
                            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                        {
                            format!(
                                "duplicate key: {} appears earlier in the file",
                                row_key(row)
                            )
                        }
                        _ => return Err(ImportError::Sqlite(e)),
                    };
                    return Err(ImportError::BadLine {
                        path: path.to_path_buf(),
                        stream,
                        line: *line,
                        reason,
                    });
                }
            }
            rows += batch.len() as u64;
            since_commit += batch.len() as u64;
            if interleave.waiting() {
                conn.execute_batch("COMMIT")?;
                interleave.run(conn);
                conn.execute_batch("BEGIN")?;
                since_commit = 0;
            } else if since_commit >= FILL_CHUNK_ROWS {
                conn.execute_batch("COMMIT; BEGIN")?;
                since_commit = 0;
            }
            reporter.update(rows, bytes_read.load(Ordering::Relaxed));
        }
        ins.flush_tokens(path, stream)?;
    }
    if rows == 0 {
        return Err(ImportError::Empty {
            path: path.to_path_buf(),
            stream,
        });
    }
    conn.execute_batch("COMMIT")?;
    let generation = format!("g{}", storage::now_unix_ms());
    for (table, _) in tables {
        // One index per transaction: each is one statement's worth of pages.
        for index in index_ddl(table, SHADOW, &generation) {
            conn.execute_batch(&index)?;
            if interleave.waiting() {
                interleave.run(conn);
            }
        }
    }
    if interleave.waiting() {
        interleave.run(conn);
    }
    // Dropping the old tables zeroes their pages only where personal data lived (GDPR
    // erasure); elsewhere that would be ~100 MB of writes at the swap for nothing.
    if stream != Stream::Customers {
        conn.execute_batch("PRAGMA secure_delete=OFF")?;
    }
    conn.execute_batch("BEGIN")?;
    for (table, _) in tables {
        conn.execute_batch(&format!(
            "DROP TABLE {table}; ALTER TABLE {table}{SHADOW} RENAME TO {table};"
        ))?;
    }
    conn.execute(
        "UPDATE streams SET version = ?1, applied_ms = ?2 WHERE name = ?3",
        params![
            non_negative("version", version).unwrap_or(i64::MAX),
            storage::now_unix_ms(),
            stream.name()
        ],
    )?;
    conn.execute_batch("COMMIT")?;
    Ok(rows)
}

enum ProgressReporter {
    Bar(indicatif::ProgressBar),
    Log {
        stream: Stream,
        total: u64,
        started: Instant,
        last: std::cell::Cell<Instant>,
    },
    Quiet,
}

impl ProgressReporter {
    fn new(mode: Progress, stream: Stream, total_bytes: u64) -> ProgressReporter {
        use std::io::IsTerminal;
        if mode == Progress::Quiet {
            return ProgressReporter::Quiet;
        }
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(total_bytes);
            let style = indicatif::ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {percent:>3}% {msg} ETA {eta}",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(stream.name());
            ProgressReporter::Bar(bar)
        } else {
            let now = Instant::now();
            ProgressReporter::Log {
                stream,
                total: total_bytes,
                started: now,
                last: std::cell::Cell::new(now),
            }
        }
    }

    fn update(&self, rows: u64, bytes: u64) {
        match self {
            ProgressReporter::Bar(bar) => {
                bar.set_position(bytes);
                let rate = rows as f64 / bar.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!("{rows} rows, {rate:.0} rows/s"));
            }
            ProgressReporter::Log {
                stream,
                total,
                started,
                last,
            } => {
                if last.get().elapsed() < Duration::from_secs(2) {
                    return;
                }
                last.set(Instant::now());
                let elapsed = started.elapsed().as_secs_f64();
                let fraction = if *total > 0 {
                    bytes as f64 / *total as f64
                } else {
                    0.0
                };
                let eta = if fraction > 0.0 {
                    elapsed / fraction - elapsed
                } else {
                    f64::NAN
                };
                tracing::info!(
                    stream = stream.name(),
                    rows,
                    percent = format!("{:.0}", fraction * 100.0),
                    rows_per_s = format!("{:.0}", rows as f64 / elapsed.max(1e-3)),
                    eta_s = format!("{eta:.0}"),
                    "importing snapshot"
                );
            }
            ProgressReporter::Quiet => {}
        }
    }

    fn finish(&self, rows: u64, seconds: f64) {
        if let ProgressReporter::Bar(bar) = self {
            bar.finish_with_message(format!("{rows} rows in {seconds:.1} s"));
        }
    }
}
