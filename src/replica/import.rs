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
use crate::storage;
use rusqlite::{Connection, Statement, params};
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

// The line formats and their validation live in `rows.rs`; their paths here are kept for
// `delta.rs` and the rest of this file.
pub use super::rows::PriceKind;
pub(crate) use super::rows::{
    Row, RowSource, check_text, non_negative, parse_row, parse_row_from, parse_time, price_identity,
};

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
            consent,
            marketing,
        } => stmt.execute(params![
            customer_id,
            display_name,
            tier,
            balance,
            watermark_seq,
            consent.marketing.map(|c| c.granted),
            consent.marketing.map(|c| c.at_ms),
            consent.profiling.map(|c| c.granted),
            consent.profiling.map(|c| c.at_ms),
            marketing,
        ]),
        Row::Reservation {
            order_id,
            line,
            sku,
            qty,
            status,
            pickup_code,
            fulfilment,
        } => stmt.execute(params![
            order_id,
            line,
            sku,
            qty,
            status,
            pickup_code,
            fulfilment
        ]),
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
            "(customer_id, display_name, tier, loyalty_balance, loyalty_watermark_seq, \
             consent_marketing, consent_marketing_ms, consent_profiling, consent_profiling_ms, \
             marketing) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        }
        "card_tokens" => "(token, customer_id) VALUES (?1, ?2)",
        _ => {
            "(order_id, line, sku, qty, status, pickup_code, fulfilment) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        }
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
    let report = import_with(&mut conn, stream, path, version, progress)?;
    if stream == Stream::Customers {
        // As the running agent does (`apply`): the customers it does not list are erased, in
        // the copies moved aside too.
        super::forget_damaged_copies(replica_path, "a customers snapshot replaced the customers");
    }
    Ok(report)
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
    // An empty file would erase the stream: refused, but for the reservations of a store that
    // has no web order open, which is a normal state (the ledger publishes it, issue 15).
    if rows == 0 && stream != Stream::Reservations {
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
