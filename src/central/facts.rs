//! Central's proof of completeness (issue 15, ADR 0026): for every agent and fact numbering
//! (`epoch`), the highest `fact_seq` held without a gap, and what the agent last said it has.
//! From the two, the watermark central may publish: the `seq` up to which it provably holds
//! every store fact of that agent, whatever telemetry was dropped in between.

use crate::outbox::{Envelope, RetentionClass};
use crate::sync::wire::FactsProgress;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agent_facts (
    agent           TEXT NOT NULL,
    epoch           INTEGER NOT NULL,
    -- Every store fact numbered 1 through `contiguous` is in `events`.
    contiguous      INTEGER NOT NULL DEFAULT 0,
    -- The seq of fact number `contiguous` (0 before the first).
    contiguous_seq  INTEGER NOT NULL DEFAULT 0,
    -- The agent's last report: facts 1..reported exist, none other up to reported_at_seq.
    reported        INTEGER NOT NULL DEFAULT 0,
    reported_at_seq INTEGER NOT NULL DEFAULT 0,
    reported_ms     INTEGER NOT NULL DEFAULT 0,
    first_seen_ms   INTEGER NOT NULL,
    PRIMARY KEY (agent, epoch)
) WITHOUT ROWID;
";

/// Sinks made before fact numbering lack its columns: add them (a lab sink, never dropped).
pub(super) fn upgrade_events(conn: &Connection) -> rusqlite::Result<()> {
    let has: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('events') WHERE name = 'fact_seq'",
        [],
        |r| r.get(0),
    )?;
    if !has {
        conn.execute_batch(
            "ALTER TABLE events ADD COLUMN fact_epoch INTEGER;
             ALTER TABLE events ADD COLUMN fact_seq INTEGER;",
        )?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS events_by_fact ON events(agent, fact_epoch, fact_seq)
             WHERE fact_seq IS NOT NULL;",
    )?;
    // The order central ingested events in (the first redemption of a single-use coupon is
    // the first ingested, docs/contract.md): rows older than the column keep none.
    let has_order: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('events') WHERE name = 'ingest_order'",
        [],
        |r| r.get(0),
    )?;
    if !has_order {
        conn.execute_batch("ALTER TABLE events ADD COLUMN ingest_order INTEGER;")?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS events_by_ingest_order ON events(ingest_order)
             WHERE ingest_order IS NOT NULL;",
    )?;
    conn.execute_batch(SCHEMA)
}

/// After a batch's events are inserted (same transaction): move each touched numbering's
/// contiguous mark as far as the facts now held allow.
pub(super) fn advance(tx: &Transaction<'_>, events: &[Envelope]) -> rusqlite::Result<()> {
    let mut touched: Vec<(&str, u32)> = events
        .iter()
        .filter(|e| e.class == RetentionClass::StoreFact)
        .filter_map(|e| Some((e.agent.as_str(), e.fact_epoch?)))
        .collect();
    touched.sort_unstable();
    touched.dedup();
    let now = crate::storage::now_unix_ms();
    for (agent, epoch) in touched {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO agent_facts(agent, epoch, first_seen_ms) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![agent, epoch, now])?;
        let (mut contiguous, mut contiguous_seq): (i64, i64) = tx
            .prepare_cached(
                "SELECT contiguous, contiguous_seq FROM agent_facts WHERE agent = ?1 AND epoch = ?2",
            )?
            .query_row(params![agent, epoch], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let mut next = tx.prepare_cached(
            "SELECT seq FROM events WHERE agent = ?1 AND fact_epoch = ?2 AND fact_seq = ?3",
        )?;
        while let Some(seq) = next
            .query_row(params![agent, epoch, contiguous.saturating_add(1)], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
        {
            contiguous = contiguous.saturating_add(1);
            contiguous_seq = seq;
        }
        tx.prepare_cached(
            "UPDATE agent_facts SET contiguous = ?3, contiguous_seq = ?4
             WHERE agent = ?1 AND epoch = ?2",
        )?
        .execute(params![agent, epoch, contiguous, contiguous_seq])?;
    }
    Ok(())
}

/// An agent's "store facts through N" report. Reports only move forward (QoS 1 may deliver an
/// older one after a newer one).
pub(super) fn record_report(conn: &Connection, report: &FactsProgress) -> rusqlite::Result<()> {
    let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "INSERT INTO agent_facts(agent, epoch, reported, reported_at_seq, reported_ms, first_seen_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)
         ON CONFLICT(agent, epoch) DO UPDATE SET
             reported = excluded.reported,
             reported_at_seq = excluded.reported_at_seq,
             reported_ms = excluded.reported_ms
         WHERE excluded.reported_at_seq >= agent_facts.reported_at_seq",
    )?
    .execute(params![
        report.agent,
        report.epoch,
        to_i64(report.through),
        to_i64(report.at_seq),
        report.at_ms
    ])?;
    Ok(())
}

/// One agent's fact numbering as central holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AgentFacts {
    pub agent: String,
    pub epoch: u32,
    /// Every store fact numbered 1 through this one is held.
    pub contiguous: u64,
    pub contiguous_seq: u64,
    /// What the agent last said it has (0: no report yet).
    pub reported: u64,
    pub reported_at_seq: u64,
    /// Facts the agent has that central does not hold yet (reported − contiguous, at least).
    pub missing: u64,
    /// The seq up to which central provably holds every store fact of this numbering: what
    /// a baseline built from these events may carry as its `watermark_seq`.
    pub watermark_seq: u64,
    /// A later numbering of the same agent exists (its outbox was replaced): facts missing
    /// from this one are lost, not late.
    pub superseded: bool,
}

impl AgentFacts {
    pub(crate) fn from_row(
        agent: String,
        epoch: u32,
        contiguous: u64,
        contiguous_seq: u64,
        reported: u64,
        reported_at_seq: u64,
    ) -> AgentFacts {
        let complete = reported > 0 && contiguous >= reported;
        AgentFacts {
            missing: reported.saturating_sub(contiguous),
            watermark_seq: if complete {
                reported_at_seq.max(contiguous_seq)
            } else {
                contiguous_seq
            },
            agent,
            epoch,
            contiguous,
            contiguous_seq,
            reported,
            reported_at_seq,
            superseded: false,
        }
    }
}

/// Every agent's numberings, newest last per agent.
pub fn status(conn: &Connection) -> rusqlite::Result<Vec<AgentFacts>> {
    let mut stmt = conn.prepare(
        "SELECT agent, epoch, contiguous, contiguous_seq, reported, reported_at_seq
         FROM agent_facts ORDER BY agent, first_seen_ms, epoch",
    )?;
    let to_u64 = |n: i64| n.max(0) as u64;
    let mut rows: Vec<AgentFacts> = stmt
        .query_map([], |r| {
            Ok(AgentFacts::from_row(
                r.get(0)?,
                u32::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                to_u64(r.get(2)?),
                to_u64(r.get(3)?),
                to_u64(r.get(4)?),
                to_u64(r.get(5)?),
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    mark_superseded(&mut rows);
    Ok(rows)
}

/// Rows ordered by agent, then oldest numbering first: all but an agent's last are closed.
pub(crate) fn mark_superseded(rows: &mut [AgentFacts]) {
    for i in 1..rows.len() {
        if rows[i].agent == rows[i - 1].agent {
            rows[i - 1].superseded = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watermark_passes_dropped_telemetry_only_once_every_reported_fact_is_held() {
        // Facts 1..3 held, the last at seq 10; the agent says 3 facts through seq 25.
        let done = AgentFacts::from_row("s/a".into(), 7, 3, 10, 3, 25);
        assert_eq!((done.missing, done.watermark_seq), (0, 25));
        // Fact 4 exists but is not here yet: the watermark stops at fact 3's seq.
        let late = AgentFacts::from_row("s/a".into(), 7, 3, 10, 4, 30);
        assert_eq!((late.missing, late.watermark_seq), (1, 10));
        // No report yet: only what is held without a gap counts.
        let quiet = AgentFacts::from_row("s/a".into(), 7, 2, 8, 0, 0);
        assert_eq!(quiet.watermark_seq, 8);
    }
}
