//! The ledger's one door to its database, which is the ingest's: a SQLite file (labs) or
//! PostgreSQL (a chain). The ledger's SQL is written once, in what both engines run alike —
//! `$N` parameters, `ON CONFLICT` upserts, `CAST(… AS BIGINT)`, savepoints — and this module
//! binds parameters and reads values the way each engine wants them.
//!
//! Every use is inside a [`Tx`]: on PostgreSQL each one first takes the ledger's advisory lock,
//! so two ledger processes (`ledger run` and `ledger web`, say) take turns as they do on SQLite
//! (`BEGIN IMMEDIATE`): a cursor read and the facts applied after it are one step.

use crate::central::sink::SinkTarget;
use crate::central::sink::postgres::{PgSink, PgTarget, describe, is_connection_fault};
use postgres::types::{ToSql, Type};
use std::collections::HashMap;

/// The advisory lock every ledger transaction holds on PostgreSQL ("ledger" in ASCII).
const LEDGER_LOCK: i64 = 0x6c65_6467_6572;

/// The engine's error is the message itself (not a `source`): an error chain would print it twice.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("SQLite: {0}")]
    Sqlite(rusqlite::Error),
    #[error("PostgreSQL: {}", describe(.0))]
    Postgres(postgres::Error),
    #[error("{0}")]
    Value(String),
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sqlite(e)
    }
}

impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> Self {
        DbError::Postgres(e)
    }
}

impl DbError {
    /// The database went away (PostgreSQL down or restarting): open it again and carry on;
    /// nothing half-done was committed.
    pub fn is_connection(&self) -> bool {
        matches!(self, DbError::Postgres(e) if is_connection_fault(e))
    }
}

/// A parameter.
#[derive(Clone, Copy, Debug)]
pub enum Arg<'a> {
    Int(i64),
    Text(&'a str),
    Null,
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<u32> for Arg<'_> {
    fn from(v: u32) -> Self {
        Arg::Int(i64::from(v))
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        v.map_or(Arg::Null, Arg::Text)
    }
}

/// Parameters as a slice of [`Arg`]: `args![agent, epoch]`.
macro_rules! args {
    ($($v:expr),* $(,)?) => { &[$($crate::central::ledger::db::Arg::from($v)),*] };
}
pub(crate) use args;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

/// One result row.
#[derive(Clone, Debug)]
pub struct Row(Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value, DbError> {
        self.0
            .get(i)
            .ok_or_else(|| DbError::Value(format!("no column {i} in the row")))
    }

    pub fn int(&self, i: usize) -> Result<i64, DbError> {
        self.opt_int(i)?
            .ok_or_else(|| DbError::Value(format!("column {i} is NULL, an integer expected")))
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            Value::Text(_) => Err(DbError::Value(format!(
                "column {i} is text, not an integer"
            ))),
        }
    }

    /// A non-negative integer (a sequence number, a version).
    pub fn count(&self, i: usize) -> Result<u64, DbError> {
        Ok(u64::try_from(self.int(i)?).unwrap_or(0))
    }

    pub fn text(&self, i: usize) -> Result<String, DbError> {
        self.opt_text(i)?
            .ok_or_else(|| DbError::Value(format!("column {i} is NULL, text expected")))
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v.clone())),
            Value::Int(_) => Err(DbError::Value(format!(
                "column {i} is an integer, not text"
            ))),
        }
    }
}

pub struct Pg {
    client: postgres::Client,
    /// Statements by their SQL: prepared once per connection (one round trip per use after).
    statements: HashMap<String, postgres::Statement>,
}

pub enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(Box<Pg>),
}

impl Db {
    /// Open the ingest's database, making its tables if no worker has yet, and the ledger's.
    pub fn open(target: &SinkTarget, ledger_schema: &str) -> Result<Db, super::LedgerError> {
        match target {
            SinkTarget::Sqlite(path) => {
                let conn = crate::central::sink::sqlite::open_sink(path)?;
                conn.execute_batch(ledger_schema).map_err(DbError::from)?;
                Ok(Db::Sqlite(conn))
            }
            SinkTarget::Postgres(target) => Ok(Db::Postgres(Box::new(open_postgres(
                target,
                ledger_schema,
            )?))),
        }
    }

    pub fn transaction(&mut self) -> Result<Tx<'_>, DbError> {
        match self {
            Db::Sqlite(conn) => Ok(Tx::Sqlite(
                conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?,
            )),
            Db::Postgres(pg) => {
                let mut tx = pg.client.transaction()?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LEDGER_LOCK])?;
                Ok(Tx::Postgres {
                    tx,
                    statements: &mut pg.statements,
                })
            }
        }
    }
}

fn open_postgres(target: &PgTarget, ledger_schema: &str) -> Result<Pg, super::LedgerError> {
    // The ingest's tables, made or upgraded by the ingest's own code (its schema steps, under
    // its lock); the ledger may start before any worker has.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::central::CentralError::Usage(format!("cannot start a runtime: {e}")))?;
    drop(runtime.block_on(PgSink::open(target, false))?);
    drop(runtime);
    let config = postgres::Config::from(target.config().clone());
    // Loopback and labs only without TLS, as the ingest (docs/central.md, "PostgreSQL").
    let mut client = config.connect(postgres::NoTls).map_err(DbError::from)?;
    let mut tx = client.transaction().map_err(DbError::from)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LEDGER_LOCK])
        .map_err(DbError::from)?;
    tx.batch_execute(&postgres_schema(ledger_schema))
        .map_err(DbError::from)?;
    tx.commit().map_err(DbError::from)?;
    Ok(Pg {
        client,
        statements: HashMap::new(),
    })
}

/// The ledger's schema as PostgreSQL takes it: the same tables, without SQLite's storage hint.
fn postgres_schema(schema: &str) -> String {
    schema.replace(") WITHOUT ROWID;", ");")
}

/// `$N` → `?N`: SQLite numbers `$`-parameters by first appearance, not by their digits.
fn sqlite_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

pub enum Tx<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Postgres {
        tx: postgres::Transaction<'a>,
        statements: &'a mut HashMap<String, postgres::Statement>,
    },
}

impl Tx<'_> {
    /// Run a statement; the number of rows it changed.
    pub fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, DbError> {
        match self {
            Tx::Sqlite(tx) => {
                let mut stmt = tx.prepare_cached(&sqlite_sql(sql))?;
                Ok(stmt.execute(rusqlite::params_from_iter(args.iter().map(sqlite_arg)))? as u64)
            }
            Tx::Postgres { tx, statements } => {
                let stmt = prepared(tx, statements, sql)?;
                let bound = pg_args(&stmt, args)?;
                Ok(tx.execute(&stmt, &refs(&bound))?)
            }
        }
    }

    pub fn rows(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, DbError> {
        match self {
            Tx::Sqlite(tx) => {
                let mut stmt = tx.prepare_cached(&sqlite_sql(sql))?;
                let width = stmt.column_count();
                let mut rows =
                    stmt.query(rusqlite::params_from_iter(args.iter().map(sqlite_arg)))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let mut values = Vec::with_capacity(width);
                    for i in 0..width {
                        values.push(match r.get_ref(i)? {
                            rusqlite::types::ValueRef::Null => Value::Null,
                            rusqlite::types::ValueRef::Integer(v) => Value::Int(v),
                            rusqlite::types::ValueRef::Text(t) => {
                                Value::Text(String::from_utf8_lossy(t).into_owned())
                            }
                            other => {
                                return Err(DbError::Value(format!(
                                    "column {i}: a {:?} value where the ledger keeps integers and text",
                                    other.data_type()
                                )));
                            }
                        });
                    }
                    out.push(Row(values));
                }
                Ok(out)
            }
            Tx::Postgres { tx, statements } => {
                let stmt = prepared(tx, statements, sql)?;
                let bound = pg_args(&stmt, args)?;
                tx.query(&stmt, &refs(&bound))?.iter().map(pg_row).collect()
            }
        }
    }

    /// Every row, each read into a `T`.
    pub fn collect<T>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        read: impl FnMut(&Row) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        self.rows(sql, args)?.iter().map(read).collect()
    }

    /// The first row, if any.
    pub fn row(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Option<Row>, DbError> {
        Ok(self.rows(sql, args)?.into_iter().next())
    }

    /// Statements without parameters (savepoints).
    pub fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        match self {
            Tx::Sqlite(tx) => Ok(tx.execute_batch(sql)?),
            Tx::Postgres { tx, .. } => Ok(tx.batch_execute(sql)?),
        }
    }

    pub fn commit(self) -> Result<(), DbError> {
        match self {
            Tx::Sqlite(tx) => Ok(tx.commit()?),
            Tx::Postgres { tx, .. } => Ok(tx.commit()?),
        }
    }
}

fn sqlite_arg(arg: &Arg<'_>) -> rusqlite::types::Value {
    match arg {
        Arg::Int(v) => rusqlite::types::Value::Integer(*v),
        Arg::Text(s) => rusqlite::types::Value::Text((*s).to_owned()),
        Arg::Null => rusqlite::types::Value::Null,
    }
}

fn prepared(
    tx: &mut postgres::Transaction<'_>,
    statements: &mut HashMap<String, postgres::Statement>,
    sql: &str,
) -> Result<postgres::Statement, DbError> {
    if let Some(stmt) = statements.get(sql) {
        return Ok(stmt.clone());
    }
    let stmt = tx.prepare(sql)?;
    statements.insert(sql.to_owned(), stmt.clone());
    Ok(stmt)
}

type Bound = Box<dyn ToSql + Sync>;

fn refs(bound: &[Bound]) -> Vec<&(dyn ToSql + Sync)> {
    bound.iter().map(|b| b.as_ref()).collect()
}

fn is_text(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    )
}

/// Each parameter as the type the server inferred for it.
fn pg_args(stmt: &postgres::Statement, args: &[Arg<'_>]) -> Result<Vec<Bound>, DbError> {
    if stmt.params().len() != args.len() {
        return Err(DbError::Value(format!(
            "{} parameters given, the statement takes {}",
            args.len(),
            stmt.params().len()
        )));
    }
    stmt.params()
        .iter()
        .zip(args)
        .enumerate()
        .map(|(i, (ty, arg))| {
            let wrong = || DbError::Value(format!("parameter ${}: {arg:?} for a {ty}", i + 1));
            let narrow = |v: i64| i32::try_from(v).map_err(|_| wrong());
            Ok(match (arg, ty) {
                (Arg::Int(v), &Type::INT8) => Box::new(*v) as Bound,
                (Arg::Int(v), &Type::INT4) => Box::new(narrow(*v)?),
                (Arg::Int(v), &Type::BOOL) => Box::new(*v != 0),
                (Arg::Text(s), ty) if is_text(ty) => Box::new((*s).to_owned()),
                (Arg::Null, &Type::INT8) => Box::new(None::<i64>),
                (Arg::Null, &Type::INT4) => Box::new(None::<i32>),
                (Arg::Null, ty) if is_text(ty) => Box::new(None::<String>),
                _ => return Err(wrong()),
            })
        })
        .collect()
}

fn pg_row(row: &postgres::Row) -> Result<Row, DbError> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let value = match *ty {
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v.into())),
            ref t if is_text(t) => row.try_get::<_, Option<String>>(i)?.map(Value::Text),
            _ => {
                return Err(DbError::Value(format!(
                    "column {} is a {ty}: the ledger reads integers and text (CAST it)",
                    column.name()
                )));
            }
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_parameters_become_numbered_sqlite_parameters() {
        assert_eq!(
            sqlite_sql("SELECT a FROM t WHERE b = $2 AND c = $1 AND d = '$x' AND e = $10"),
            "SELECT a FROM t WHERE b = ?2 AND c = ?1 AND d = '$x' AND e = ?10"
        );
    }

    #[test]
    fn the_postgresql_schema_drops_only_sqlites_storage_hint() {
        let schema =
            "CREATE TABLE t (a BIGINT PRIMARY KEY) WITHOUT ROWID;\nCREATE INDEX i ON t(a);";
        assert_eq!(
            postgres_schema(schema),
            "CREATE TABLE t (a BIGINT PRIMARY KEY);\nCREATE INDEX i ON t(a);"
        );
    }
}
