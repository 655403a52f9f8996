//! The PostgreSQL sink (issue 15, item 2): the same `events` and `agent_facts` as the SQLite
//! sink, written by any number of workers at once.
//!
//! A group of messages is one transaction of two statements: every event of the group in one
//! `INSERT … SELECT FROM unnest(…) ON CONFLICT (id) DO NOTHING`, then `relais_settle`, a
//! server-side function that moves each touched numbering's contiguous `fact_seq` and records
//! the agents' "facts through N" reports exactly as `central::facts` does for SQLite.
//!
//! Workers commit in parallel, so two of them may hold facts of the same agent at once. The
//! walk therefore runs after taking the `agent_facts` row's lock, and each of its reads sees
//! whatever committed before (READ COMMITTED, a volatile function: a fresh snapshot per
//! statement): whichever of two workers settles second walks over the other's facts. Rows are
//! locked in (agent, epoch) order and events inserted in id order, so two groups never wait on
//! each other in a cycle; a deadlock the server still reports is retried like a lost
//! connection.

use super::{Committed, Message};
use crate::central::CentralError;
use crate::central::facts::{self, AgentFacts};
use crate::outbox::RetentionClass;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use tokio_postgres::{Client, Config, NoTls, Statement};

/// A `postgres://` URL, parsed; shown without its password.
#[derive(Clone)]
pub struct PgTarget {
    config: Config,
    shown: String,
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgTarget({})", self.shown)
    }
}

impl fmt::Display for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl PgTarget {
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub fn parse(url: &str) -> Result<PgTarget, CentralError> {
        let config: Config = url.parse().map_err(|e| {
            CentralError::Usage(format!(
                "--sink: not a PostgreSQL URL ({e}); write postgres://USER@HOST:PORT/DATABASE \
                 (the password in a ~/.pgpass-style URL is accepted but better kept out of the \
                 command line: postgres://USER:PASSWORD@… )"
            ))
        })?;
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let port = config
                    .get_ports()
                    .get(i)
                    .or_else(|| config.get_ports().first())
                    .copied()
                    .unwrap_or(5432);
                match host {
                    tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                    tokio_postgres::config::Host::Unix(dir) => {
                        format!("[{}]:{port}", dir.display())
                    }
                }
            })
            .collect();
        let shown = format!(
            "postgres://{}@{}/{}",
            config.get_user().unwrap_or(""),
            hosts.join(","),
            config.get_dbname().unwrap_or("")
        );
        Ok(PgTarget { config, shown })
    }
}

/// The advisory lock the schema is made under ("relais" in ASCII): the first worker of a group
/// to connect creates or upgrades it, the others wait and find it done.
const SCHEMA_LOCK: i64 = 0x7265_6c61_6973;

/// Schema steps, applied in order once each; `relais_sink_schema.version` counts those done.
const STEPS: &[&str] = &["
CREATE TABLE IF NOT EXISTS events (
    id         uuid PRIMARY KEY,
    agent      text NOT NULL,
    seq        bigint NOT NULL,
    boot       bigint NOT NULL,
    type       text NOT NULL,
    class      text NOT NULL,
    wall_ms    bigint NOT NULL,
    payload    text NOT NULL,
    fact_epoch bigint,
    fact_seq   bigint
);
CREATE INDEX IF NOT EXISTS events_by_agent ON events (agent, seq);
CREATE INDEX IF NOT EXISTS events_by_fact ON events (agent, fact_epoch, fact_seq)
    WHERE fact_seq IS NOT NULL;
CREATE TABLE IF NOT EXISTS agent_facts (
    agent           text NOT NULL,
    epoch           bigint NOT NULL,
    contiguous      bigint NOT NULL DEFAULT 0,
    contiguous_seq  bigint NOT NULL DEFAULT 0,
    reported        bigint NOT NULL DEFAULT 0,
    reported_at_seq bigint NOT NULL DEFAULT 0,
    reported_ms     bigint NOT NULL DEFAULT 0,
    first_seen_ms   bigint NOT NULL,
    PRIMARY KEY (agent, epoch)
);
-- Per (agent, epoch), in the order given: with p_advance, walk `contiguous` forward over the
-- facts now held (central::facts::advance); with a report, record it if it is not older
-- than the one held (central::facts::record_report).
CREATE OR REPLACE FUNCTION relais_settle(
    p_agent text[], p_epoch bigint[], p_advance boolean[],
    p_reported bigint[], p_reported_at_seq bigint[], p_reported_ms bigint[], p_now bigint)
RETURNS void LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    i integer;
    v_c bigint;
    v_cs bigint;
    r record;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_agent, 1), 0) LOOP
        INSERT INTO agent_facts (agent, epoch, first_seen_ms)
        VALUES (p_agent[i], p_epoch[i],
                CASE WHEN p_advance[i] THEN p_now ELSE coalesce(p_reported_ms[i], p_now) END)
        ON CONFLICT DO NOTHING;
        SELECT contiguous, contiguous_seq INTO v_c, v_cs FROM agent_facts
        WHERE agent = p_agent[i] AND epoch = p_epoch[i] FOR UPDATE;
        IF p_advance[i] THEN
            -- One index range scan from the mark, left at the first gap (a cursor fetches
            -- a few rows at a time), rather than one lookup per fact.
            FOR r IN SELECT fact_seq, seq FROM events
                     WHERE agent = p_agent[i] AND fact_epoch = p_epoch[i] AND fact_seq > v_c
                     ORDER BY fact_seq LOOP
                EXIT WHEN r.fact_seq > v_c + 1;
                v_c := r.fact_seq;
                v_cs := r.seq;
            END LOOP;
            UPDATE agent_facts SET contiguous = v_c, contiguous_seq = v_cs
            WHERE agent = p_agent[i] AND epoch = p_epoch[i];
        END IF;
        IF p_reported_at_seq[i] IS NOT NULL THEN
            UPDATE agent_facts SET reported = p_reported[i],
                                   reported_at_seq = p_reported_at_seq[i],
                                   reported_ms = p_reported_ms[i]
            WHERE agent = p_agent[i] AND epoch = p_epoch[i]
              AND p_reported_at_seq[i] >= reported_at_seq;
        END IF;
    END LOOP;
END
$fn$;
",
// The order central ingested events in: numbered as they are inserted (the first redemption
// of a single-use coupon is the first ingested, docs/contract.md).
"ALTER TABLE events ADD COLUMN IF NOT EXISTS ingest_order bigint GENERATED BY DEFAULT AS IDENTITY;
"];

const INSERT_EVENTS: &str = "
INSERT INTO events (id, agent, seq, boot, type, class, wall_ms, payload, fact_epoch, fact_seq)
SELECT u.id::uuid, u.agent, u.seq, u.boot, u.type, u.class, u.wall_ms, u.payload,
       u.fact_epoch, u.fact_seq
FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[], $6::text[],
            $7::int8[], $8::text[], $9::int8[], $10::int8[])
     AS u(id, agent, seq, boot, type, class, wall_ms, payload, fact_epoch, fact_seq)
ON CONFLICT (id) DO NOTHING";

const SETTLE: &str = "SELECT relais_settle($1::text[], $2::int8[], $3::bool[], $4::int8[], \
                      $5::int8[], $6::int8[], $7::int8)";

/// How a database error is met.
#[derive(Debug, PartialEq, Eq)]
enum Fault {
    /// The connection is gone or the server cannot serve yet (down, restarting, recovering):
    /// reconnect and commit the group again.
    Connection,
    /// A deadlock or serialization failure: the server rolled back; run the group again.
    Retry,
    /// A constraint, a schema that is not ours, a full disk …: the operator must act.
    Fatal,
}

/// The server went away or cannot serve yet: connect again and repeat the work.
pub(crate) fn is_connection_fault(e: &tokio_postgres::Error) -> bool {
    classify(e) == Fault::Connection
}

fn classify(e: &tokio_postgres::Error) -> Fault {
    if e.is_closed() {
        return Fault::Connection;
    }
    if let Some(state) = e.code() {
        let code = state.code();
        return if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300") {
            Fault::Connection
        } else if matches!(code, "40P01" | "40001") {
            Fault::Retry
        } else {
            Fault::Fatal
        };
    }
    // No SQLSTATE: refused, reset, timed out — an I/O error somewhere in its chain.
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return Fault::Connection;
        }
        source = cause.source();
    }
    Fault::Fatal
}

/// An error's full text: tokio-postgres's `Display` names only the kind ("db error").
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(": ");
            text.push_str(detail);
        }
        return text;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

struct Conn {
    client: Client,
    insert: Statement,
    settle: Statement,
}

pub struct PgSink {
    target: PgTarget,
    conn: Option<Conn>,
    /// Wait for a database that is down (the ingest) or fail at once (`relaisctl facts`).
    patient: bool,
}

const COMMITTING: &str = "committing a group";

/// Backoff between connection attempts: from 100 ms, doubling, at most 5 s.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl PgSink {
    pub async fn open(target: &PgTarget, patient: bool) -> Result<PgSink, CentralError> {
        let mut sink = PgSink {
            target: target.clone(),
            conn: None,
            patient,
        };
        sink.connected().await?;
        Ok(sink)
    }

    fn fatal(&self, what: &str, e: &tokio_postgres::Error) -> CentralError {
        let advice = if what == COMMITTING {
            "Nothing of the group was acknowledged, so the agents keep it and send it again: \
             fix the database (schema, constraints, space, rights) and start the ingest again"
        } else {
            "Check that the server runs and that the sink's tables are the ones relaisctl made"
        };
        CentralError::Postgres {
            sink: self.target.shown.clone(),
            reason: format!("{what}: {}. {advice}", describe(e)),
        }
    }

    /// The open connection, or a new one (schema made or upgraded, statements prepared),
    /// waiting for the server with backoff when patient.
    async fn connected(&mut self) -> Result<&mut Conn, CentralError> {
        let mut backoff = BACKOFF_MIN;
        let mut attempts: u32 = 0;
        while self.conn.is_none() {
            match connect(&self.target).await {
                Ok(conn) => {
                    if attempts > 0 {
                        tracing::info!(sink = %self.target, attempts, "PostgreSQL is back");
                    }
                    self.conn = Some(conn);
                }
                Err(ConnectError::Schema(reason)) => {
                    return Err(CentralError::Postgres {
                        sink: self.target.shown.clone(),
                        reason,
                    });
                }
                Err(ConnectError::Db(e)) => {
                    if !self.patient || classify(&e) == Fault::Fatal {
                        return Err(CentralError::Postgres {
                            sink: self.target.shown.clone(),
                            reason: format!(
                                "cannot use the database: {}. Check the URL, that the server \
                                 runs and that the user may create tables in it",
                                describe(&e)
                            ),
                        });
                    }
                    if attempts.is_multiple_of(10) {
                        tracing::warn!(
                            sink = %self.target, error = %describe(&e), attempts,
                            "PostgreSQL is unreachable; nothing is acknowledged until it is back"
                        );
                    }
                    attempts = attempts.saturating_add(1);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        self.conn.as_mut().ok_or_else(|| CentralError::Postgres {
            sink: self.target.shown.clone(),
            reason: "no connection".into(),
        })
    }

    /// Run `op` on a live connection; a lost connection (or a deadlock) runs it again on a new
    /// one. `op` must be safe to repeat: a commit whose answer was lost may have happened.
    async fn with_retry<T>(
        &mut self,
        what: &str,
        mut op: impl AsyncFnMut(&mut Conn) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, CentralError> {
        let mut backoff = BACKOFF_MIN;
        loop {
            let conn = self.connected().await?;
            match op(conn).await {
                Ok(value) => return Ok(value),
                Err(e) => match classify(&e) {
                    Fault::Fatal => return Err(self.fatal(what, &e)),
                    Fault::Retry => {
                        tracing::debug!(error = %describe(&e), "{what}: retried");
                    }
                    Fault::Connection => {
                        if !self.patient {
                            return Err(self.fatal(what, &e));
                        }
                        tracing::warn!(
                            sink = %self.target, error = %describe(&e),
                            "{what}: lost the PostgreSQL connection; nothing of it is acknowledged, \
                             reconnecting"
                        );
                        self.conn = None;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                },
            }
        }
    }

    pub async fn count(&mut self) -> Result<u64, CentralError> {
        self.with_retry("counting events", async |conn: &mut Conn| {
            let row = conn
                .client
                .query_one("SELECT count(*) FROM events", &[])
                .await?;
            Ok(row.try_get::<_, i64>(0)?.max(0) as u64)
        })
        .await
    }

    pub(crate) async fn commit(&mut self, messages: &[Message]) -> Result<Committed, CentralError> {
        let rows = Rows::of(messages);
        let settle = Settle::of(messages);
        let now = crate::storage::now_unix_ms();
        let new = self
            .with_retry(COMMITTING, async |conn: &mut Conn| {
                // Repeatable as a whole: the insert skips what a lost commit already stored,
                // the walk and the reports only move forward.
                let tx = conn.client.transaction().await?;
                let mut new = 0;
                if !rows.ids.is_empty() {
                    new = tx
                        .execute(
                            &conn.insert,
                            &[
                                &rows.ids,
                                &rows.agents,
                                &rows.seqs,
                                &rows.boots,
                                &rows.types,
                                &rows.classes,
                                &rows.wall_ms,
                                &rows.payloads,
                                &rows.fact_epochs,
                                &rows.fact_seqs,
                            ],
                        )
                        .await?;
                }
                if !settle.agents.is_empty() {
                    tx.execute(
                        &conn.settle,
                        &[
                            &settle.agents,
                            &settle.epochs,
                            &settle.advance,
                            &settle.reported,
                            &settle.reported_at_seq,
                            &settle.reported_ms,
                            &now,
                        ],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(new)
            })
            .await?;
        Ok(Committed::of(messages, new))
    }

    pub async fn facts(&mut self) -> Result<Vec<AgentFacts>, CentralError> {
        let mut rows = self
            .with_retry("reading agent_facts", async |conn: &mut Conn| {
                let rows = conn
                    .client
                    .query(
                        "SELECT agent, epoch, contiguous, contiguous_seq, reported, reported_at_seq
                         FROM agent_facts ORDER BY agent, first_seen_ms, epoch",
                        &[],
                    )
                    .await?;
                let to_u64 = |n: i64| n.max(0) as u64;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    out.push(AgentFacts::from_row(
                        r.try_get(0)?,
                        u32::try_from(r.try_get::<_, i64>(1)?).unwrap_or(0),
                        to_u64(r.try_get(2)?),
                        to_u64(r.try_get(3)?),
                        to_u64(r.try_get(4)?),
                        to_u64(r.try_get(5)?),
                    ));
                }
                Ok(out)
            })
            .await?;
        facts::mark_superseded(&mut rows);
        Ok(rows)
    }
}

enum ConnectError {
    Db(tokio_postgres::Error),
    Schema(String),
}

impl From<tokio_postgres::Error> for ConnectError {
    fn from(e: tokio_postgres::Error) -> Self {
        ConnectError::Db(e)
    }
}

async fn connect(target: &PgTarget) -> Result<Conn, ConnectError> {
    // Loopback and labs only without TLS; a chain's database connection adds it
    // (docs/central.md, "PostgreSQL").
    let (mut client, connection) = target.config.connect(NoTls).await?;
    let shown = target.shown.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(sink = %shown, error = %e, "PostgreSQL connection ended");
        }
    });
    prepare_schema(&mut client).await?;
    let insert = client.prepare(INSERT_EVENTS).await?;
    let settle = client.prepare(SETTLE).await?;
    Ok(Conn {
        client,
        insert,
        settle,
    })
}

/// Create or upgrade the schema under the advisory lock, in one transaction.
async fn prepare_schema(client: &mut Client) -> Result<(), ConnectError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS relais_sink_schema (version integer NOT NULL)")
        .await?;
    let done = match tx
        .query_opt("SELECT version FROM relais_sink_schema", &[])
        .await?
    {
        Some(row) => row.try_get::<_, i32>(0)?,
        None => {
            tx.execute("INSERT INTO relais_sink_schema (version) VALUES (0)", &[])
                .await?;
            0
        }
    };
    let done = usize::try_from(done).unwrap_or(usize::MAX);
    if done > STEPS.len() {
        return Err(ConnectError::Schema(format!(
            "the sink's schema is at version {done}, newer than this relaisctl knows ({}): \
             run the relaisctl that made it, or a newer one",
            STEPS.len()
        )));
    }
    for step in &STEPS[done..] {
        tx.batch_execute(step).await?;
    }
    let version = i32::try_from(STEPS.len()).unwrap_or(i32::MAX);
    tx.execute("UPDATE relais_sink_schema SET version = $1", &[&version])
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A group's events as columns, in id order (two workers inserting the same resent events
/// then wait on each other in one order only).
#[derive(Default)]
struct Rows {
    ids: Vec<String>,
    agents: Vec<String>,
    seqs: Vec<i64>,
    boots: Vec<i64>,
    types: Vec<String>,
    classes: Vec<&'static str>,
    wall_ms: Vec<i64>,
    payloads: Vec<String>,
    fact_epochs: Vec<Option<i64>>,
    fact_seqs: Vec<Option<i64>>,
}

impl Rows {
    fn of(messages: &[Message]) -> Rows {
        let mut events: Vec<&crate::outbox::Envelope> = messages
            .iter()
            .filter_map(|m| match m {
                Message::Batch { batch, .. } => Some(batch.events.iter()),
                _ => None,
            })
            .flatten()
            .collect();
        events.sort_by_key(|e| e.id);
        let mut rows = Rows::default();
        // The ingest refused any batch whose numbers do not fit a bigint (ingest::parse_batch).
        let big = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for e in events {
            rows.ids.push(e.id.to_string());
            rows.agents.push(e.agent.clone());
            rows.seqs.push(big(e.seq));
            rows.boots.push(big(e.boot));
            rows.types.push(e.event_type.clone());
            rows.classes.push(e.class.name());
            rows.wall_ms.push(e.wall_ms);
            rows.payloads.push(e.payload.to_string());
            rows.fact_epochs.push(e.fact_epoch.map(i64::from));
            rows.fact_seqs.push(e.fact_seq.map(big));
        }
        rows
    }
}

/// What `relais_settle` does for a group, one entry per (agent, epoch) in that order.
#[derive(Default)]
struct Settle {
    agents: Vec<String>,
    epochs: Vec<i64>,
    advance: Vec<bool>,
    reported: Vec<Option<i64>>,
    reported_at_seq: Vec<Option<i64>>,
    reported_ms: Vec<Option<i64>>,
}

impl Settle {
    fn of(messages: &[Message]) -> Settle {
        // (advance, newest report: through, at_seq, at_ms)
        type Entry = (bool, Option<(i64, i64, i64)>);
        let mut touched: BTreeMap<(&str, u32), Entry> = BTreeMap::new();
        let big = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for message in messages {
            match message {
                Message::Batch { batch, .. } => {
                    for e in &batch.events {
                        if e.class == RetentionClass::StoreFact
                            && let Some(epoch) = e.fact_epoch
                        {
                            touched.entry((e.agent.as_str(), epoch)).or_default().0 = true;
                        }
                    }
                }
                Message::Facts(p) => {
                    let entry = touched.entry((p.agent.as_str(), p.epoch)).or_default();
                    let report = (big(p.through), big(p.at_seq), p.at_ms);
                    // Reports only move forward: of a group's, the one at the highest seq
                    // (the last of equals, as applying them in turn would leave).
                    if entry.1.is_none_or(|held| report.1 >= held.1) {
                        entry.1 = Some(report);
                    }
                }
                Message::Refused { .. } => {}
            }
        }
        let mut out = Settle::default();
        for ((agent, epoch), (advance, report)) in touched {
            out.agents.push(agent.to_owned());
            out.epochs.push(i64::from(epoch));
            out.advance.push(advance);
            out.reported.push(report.map(|r| r.0));
            out.reported_at_seq.push(report.map(|r| r.1));
            out.reported_ms.push(report.map(|r| r.2));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Envelope;
    use crate::sync::wire::{self, EventBatch, FactsProgress};

    fn fact(agent: &str, epoch: u32, n: u64) -> Envelope {
        Envelope {
            id: uuid::Uuid::now_v7(),
            agent: agent.into(),
            seq: n + 10,
            boot: 1,
            wall_ms: 0,
            mono_ns: 0,
            event_type: "stock.movement".into(),
            schema: 1,
            class: RetentionClass::StoreFact,
            fact_seq: Some(n),
            fact_epoch: Some(epoch),
            payload: serde_json::Value::Null,
        }
    }

    fn report(agent: &str, through: u64, at_seq: u64) -> Message {
        Message::Facts(FactsProgress {
            v: wire::CONTRACT_VERSION,
            agent: agent.into(),
            epoch: 1,
            through,
            at_seq,
            at_ms: i64::try_from(at_seq).unwrap(),
        })
    }

    #[test]
    fn a_group_settles_each_numbering_once_in_agent_order_with_its_newest_report() {
        let messages = vec![
            report("s/b", 5, 9),
            Message::Batch {
                agent: "s/a".into(),
                batch: EventBatch {
                    v: wire::CONTRACT_VERSION,
                    agent: "s/a".into(),
                    events: vec![fact("s/a", 2, 3), fact("s/a", 2, 1), fact("s/a", 2, 2)],
                },
            },
            // Older than the first (QoS 1 reorders): ignored; then one at the same seq.
            report("s/b", 4, 7),
            report("s/b", 6, 9),
        ];
        let settle = Settle::of(&messages);
        assert_eq!(settle.agents, ["s/a", "s/b"]);
        assert_eq!(settle.epochs, [2, 1]);
        assert_eq!(settle.advance, [true, false]);
        assert_eq!(settle.reported, [None, Some(6)]);
        assert_eq!(settle.reported_at_seq, [None, Some(9)]);
        let rows = Rows::of(&messages);
        let mut sorted = rows.ids.clone();
        sorted.sort();
        assert_eq!(rows.ids, sorted, "events go in id order");
        assert_eq!(rows.fact_seqs.len(), 3);
    }

    #[test]
    fn a_url_is_shown_without_its_password() {
        let target = PgTarget::parse("postgres://relais:s3cret@db.example:6543/central").unwrap();
        assert_eq!(
            target.to_string(),
            "postgres://relais@db.example:6543/central"
        );
        assert!(!format!("{target:?}").contains("s3cret"));
    }
}
