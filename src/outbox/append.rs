//! One group's appends inside the writer's transaction: the sequence, the idempotency keys and
//! one `SAVEPOINT` per fact, so a fact refused for its own reason (a rule, a constraint, a
//! value out of range) is refused alone while the rest of its group commits (ADR 0017). Only a
//! failure of the storage itself (I/O, a full disk, a damaged file) fails the group.
//!
//! What a store fact checks and does is the domain's (`crate::domain`): the writer settles it
//! against a [`TxLedger`] (the facts before it, this group's included) and writes its effects.

use super::keys::{Claimed, UnfiledKeys};
use super::stats::OutboxStats;
use super::{AppendBody, AppendRequest, Appended, OutboxError, RetentionClass};
use crate::domain::{
    Effect, FactRefused, Ledger, PendingPoints, Redemption, ReturnOriginal, ShipStep, SoldLine,
    Unsettled,
};
use rusqlite::{ErrorCode, OptionalExtension, Transaction, params};
use uuid::Uuid;

/// The writer's in-memory state of the sequence, kept apart from its connection so that a
/// group can borrow both.
pub(super) struct Appender {
    pub next_seq: u64,
    pub boot: u64,
    pub stats: OutboxStats,
    /// Idempotency keys claimed but not yet moved into `idempotency` (ADR 0015).
    pub keys: UnfiledKeys,
    /// Movements up to this seq are in `sku_movements` (`meta.sku_indexed_upto`).
    pub sku_indexed_upto: u64,
    /// The newest movement written (possibly by a group that then rolled back).
    pub movements_upto: u64,
    /// Movement rows after `sku_indexed_upto`: what a lookup range-scans.
    pub unfiled_rows: u64,
}

/// Why one fact was not written.
enum FactFailure {
    Refused(FactRefused),
    Storage(rusqlite::Error),
    Encode(serde_json::Error),
}

impl From<rusqlite::Error> for FactFailure {
    fn from(e: rusqlite::Error) -> Self {
        FactFailure::Storage(e)
    }
}

impl From<Unsettled<rusqlite::Error>> for FactFailure {
    fn from(e: Unsettled<rusqlite::Error>) -> Self {
        match e {
            Unsettled::Refused(refused) => FactFailure::Refused(refused),
            Unsettled::Ledger(e) => FactFailure::Storage(e),
        }
    }
}

/// The clock of one group: every event of it carries the same times.
#[derive(Clone, Copy)]
pub(super) struct GroupClock {
    pub wall_ms: i64,
    pub mono_ns: u64,
}

/// Whether a SQLite error belongs to the statement's own data (a constraint, a value too big,
/// a bad type, an arithmetic overflow in a sum) rather than to the storage. The first kind is
/// undone by rolling back to the fact's savepoint; the second fails the group, since the
/// transaction may already be gone.
fn is_storage_failure(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(err, _) => matches!(
            err.code,
            ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::NotADatabase
                | ErrorCode::CannotOpen
                | ErrorCode::ReadOnly
                | ErrorCode::OutOfMemory
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::PermissionDenied
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::InternalMalfunction
                | ErrorCode::OperationAborted
                | ErrorCode::OperationInterrupted
        ),
        rusqlite::Error::SqlInputError { .. }
        | rusqlite::Error::InvalidQuery
        | rusqlite::Error::ExecuteReturnedResults => true,
        _ => false,
    }
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Appender {
    /// Append one request in the group's transaction. `Ok(Err(_))`: this request was refused
    /// (or replayed) alone; `Err(_)`: the storage failed and the whole group must roll back.
    pub(super) fn append(
        &mut self,
        tx: &Transaction<'_>,
        request: &mut AppendRequest,
        clock: GroupClock,
    ) -> Result<Result<Appended, OutboxError>, rusqlite::Error> {
        if let Some(claim) = &request.idempotency
            && let Some(first) = self.keys.find(tx, claim)?
        {
            return Ok(replay(first, claim));
        }
        let seq = self.next_seq;
        let id = Uuid::now_v7();
        tx.prepare_cached("SAVEPOINT fact")?.execute([])?;
        match self.write(tx, request, seq, id, clock) {
            Ok(written) => {
                tx.prepare_cached("RELEASE fact")?.execute([])?;
                self.next_seq += 1;
                if let Some(claim) = &request.idempotency {
                    self.keys.remember(&claim.scoped_key, seq);
                }
                if written.movements > 0 {
                    // Filed by SKU later (`file_movements`); if this group rolls back the next
                    // filing finds nothing and catches up.
                    self.movements_upto = seq;
                    self.unfiled_rows += written.movements;
                }
                self.stats.record_append(
                    written.class,
                    written.bytes,
                    clock.wall_ms,
                    seq,
                    written.fact_seq,
                );
                Ok(Ok(Appended {
                    id,
                    seq,
                    replayed: false,
                    answer: written.answer,
                }))
            }
            Err(FactFailure::Storage(e)) if is_storage_failure(&e) => Err(e),
            Err(failure) => {
                tx.prepare_cached("ROLLBACK TO fact")?.execute([])?;
                tx.prepare_cached("RELEASE fact")?.execute([])?;
                Ok(Err(match failure {
                    FactFailure::Refused(refused) => OutboxError::Refused(refused),
                    FactFailure::Storage(e) => OutboxError::NotRecordable(e.to_string()),
                    FactFailure::Encode(e) => OutboxError::NotRecordable(e.to_string()),
                }))
            }
        }
    }

    fn write(
        &self,
        tx: &Transaction<'_>,
        request: &mut AppendRequest,
        seq: u64,
        id: Uuid,
        clock: GroupClock,
    ) -> Result<Written, FactFailure> {
        let mut movements = 0;
        let (event_type, schema, class, payload, answer) = match &mut request.body {
            AppendBody::Event(draft) => (
                draft.event_type,
                draft.schema,
                draft.class,
                std::borrow::Cow::Borrowed(draft.payload_json.as_str()),
                None,
            ),
            AppendBody::Fact(draft) => {
                let fact = &mut draft.fact;
                // Checked here, on the single writer, against every fact committed before it
                // (this group's included): a check in the handler could race another till.
                let mut ledger = TxLedger {
                    tx,
                    sku_indexed_upto: self.sku_indexed_upto,
                };
                fact.settle(&mut ledger, seq)?;
                for effect in fact.effects() {
                    movements += u64::from(matches!(effect, Effect::Movement { .. }));
                    write_effect(tx, seq, clock.wall_ms, &effect)?;
                }
                // What the producer could not serialise before settling, serialised now.
                let payload = match draft.payload_json.take() {
                    Some(json) => json,
                    None => fact.payload_json().map_err(FactFailure::Encode)?,
                };
                let answer = match draft.answer_json.take() {
                    Some(json) => json,
                    None => fact.answer_json().map_err(FactFailure::Encode)?,
                };
                (
                    fact.event_type(),
                    1,
                    RetentionClass::StoreFact,
                    std::borrow::Cow::Owned(payload),
                    Some(answer),
                )
            }
        };
        // Numbered only once nothing can refuse it any more: a refused fact leaves no gap.
        let fact_seq = (class == RetentionClass::StoreFact)
            .then(|| self.stats.last_fact_seq.saturating_add(1));
        tx.prepare_cached(
            "INSERT INTO events(seq, id, class, type, schema, boot, wall_ms, mono_ns, payload, fact_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            as_i64(seq),
            id.as_bytes().as_slice(),
            class.code(),
            event_type,
            schema,
            as_i64(self.boot),
            clock.wall_ms,
            as_i64(clock.mono_ns),
            payload,
            fact_seq.map(as_i64),
        ])?;
        if let Some(claim) = &request.idempotency {
            // A refused fact claims no key, so a corrected retry can use it.
            self.keys
                .insert(tx, claim, seq, id.as_bytes(), answer.as_deref())?;
        }
        Ok(Written {
            class,
            fact_seq,
            bytes: payload.len() as u64,
            answer,
            movements,
        })
    }
}

struct Written {
    class: RetentionClass,
    fact_seq: Option<u64>,
    bytes: u64,
    answer: Option<String>,
    /// Stock movement rows written.
    movements: u64,
}

/// The first answer for a retry, or the refusal of a different request reusing the key.
fn replay(first: Claimed, claim: &super::IdempotencyClaim) -> Result<Appended, OutboxError> {
    let seq = first.seq.max(0) as u64;
    if !first.same_request(&claim.fingerprint) {
        return Err(OutboxError::KeyReused {
            key: claim.client_key().unwrap_or_default(),
            seq,
        });
    }
    Ok(Appended {
        id: Uuid::from_slice(&first.id).unwrap_or(Uuid::nil()),
        seq,
        replayed: true,
        answer: first.answer,
    })
}

fn write_effect(
    tx: &Transaction<'_>,
    seq: u64,
    wall_ms: i64,
    effect: &Effect<'_>,
) -> rusqlite::Result<()> {
    match *effect {
        Effect::Movement {
            line,
            sku,
            delta,
            kind,
        } => {
            tx.prepare_cached(
                "INSERT INTO stock_movements(seq, line, sku, delta, kind, wall_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![as_i64(seq), line, sku, delta, kind.name(), wall_ms])?;
        }
        Effect::Loyalty {
            line,
            customer_id,
            points,
        } => {
            tx.prepare_cached(
                "INSERT INTO loyalty_ops(seq, line, customer_id, points, wall_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![as_i64(seq), line, customer_id, points, wall_ms])?;
        }
        Effect::LineReleased {
            order_id,
            line,
            how,
        } => {
            tx.prepare_cached(
                "INSERT INTO released_lines(order_id, line, seq, wall_ms, how)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![order_id, line, as_i64(seq), wall_ms, how.name()])?;
        }
        Effect::LinePrepared { order_id, line } => {
            tx.prepare_cached(
                "INSERT INTO prepared_lines(order_id, line, seq, wall_ms) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![order_id, line, as_i64(seq), wall_ms])?;
        }
        Effect::ShipmentStep { order_id, step } => {
            tx.prepare_cached(
                "INSERT INTO shipment_steps(order_id, step, seq, wall_ms) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![order_id, step.code(), as_i64(seq), wall_ms])?;
        }
        Effect::ConsentChanged {
            customer_id,
            purpose,
            granted,
            at_ms,
        } => {
            // The newest change per customer and purpose is what lookups compare with central's.
            tx.prepare_cached(
                "INSERT OR REPLACE INTO consent_changes(customer_id, purpose, granted, at_ms, seq)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                customer_id,
                purpose.name(),
                granted,
                at_ms,
                as_i64(seq)
            ])?;
        }
        Effect::CouponRedeemed { coupon } => {
            tx.prepare_cached(
                "INSERT INTO coupon_redemptions(coupon, seq, wall_ms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![coupon, as_i64(seq), wall_ms])?;
        }
        Effect::PointsReversed {
            customer_id,
            points,
        } => {
            tx.prepare_cached(
                "INSERT INTO loyalty_ops(seq, line, customer_id, points, wall_ms, reversal)
                 VALUES (?1, 0, ?2, ?3, ?4, 1)",
            )?
            .execute(params![as_i64(seq), customer_id, points, wall_ms])?;
        }
        Effect::Sold {
            receipt,
            line,
            sku,
            gtin,
            qty,
            points,
            customer_id,
        } => {
            tx.prepare_cached(
                "INSERT INTO sold_lines(receipt, line, seq, sku, gtin, qty, points, customer_id,
                                        wall_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                receipt,
                line,
                as_i64(seq),
                sku,
                gtin,
                qty,
                points,
                customer_id,
                wall_ms
            ])?;
        }
        Effect::Returned {
            original,
            line,
            return_line,
            qty,
            points,
        } => {
            let (source, id) = original.key();
            tx.prepare_cached(
                "INSERT INTO returned_lines(source, original, line, seq, return_line, qty, points,
                                            wall_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                source,
                id,
                line,
                as_i64(seq),
                return_line,
                qty,
                points,
                wall_ms
            ])?;
        }
    }
    Ok(())
}

/// The domain's view of the facts before the one being settled: the writer's own transaction.
struct TxLedger<'t, 'c> {
    tx: &'t Transaction<'c>,
    sku_indexed_upto: u64,
}

impl Ledger for TxLedger<'_, '_> {
    type Error = rusqlite::Error;

    fn movements_after(&mut self, sku: &str, watermark_seq: u64) -> rusqlite::Result<i64> {
        // Filed movements through the SKU index, the unfiled tail by a range scan: the same
        // split as `outbox::movements_after` for readers (ADR 0014).
        let filed: i64 = self
            .tx
            .prepare_cached(
                "SELECT COALESCE(SUM(delta), 0) FROM sku_movements WHERE sku = ?1 AND seq > ?2",
            )?
            .query_row(params![sku, as_i64(watermark_seq)], |r| r.get(0))?;
        let unfiled: i64 = self
            .tx
            .prepare_cached(
                "SELECT COALESCE(SUM(delta), 0) FROM stock_movements WHERE seq > ?2 AND sku = ?1",
            )?
            .query_row(
                params![sku, as_i64(watermark_seq.max(self.sku_indexed_upto))],
                |r| r.get(0),
            )?;
        filed
            .checked_add(unfiled)
            .ok_or(rusqlite::Error::IntegralValueOutOfRange(0, i64::MAX))
    }

    fn pending_points(
        &mut self,
        customer_id: &str,
        watermark_seq: u64,
    ) -> rusqlite::Result<PendingPoints> {
        self.tx
            .prepare_cached(
                "SELECT COALESCE(SUM(points), 0),
                        COALESCE(SUM(CASE WHEN points < 0 AND reversal = 0
                                          THEN -points ELSE 0 END), 0)
                 FROM loyalty_ops WHERE customer_id = ?1 AND seq > ?2",
            )?
            .query_row(params![customer_id, as_i64(watermark_seq)], |r| {
                Ok(PendingPoints {
                    net: r.get(0)?,
                    burned: r.get(1)?,
                })
            })
    }

    fn released_lines(&mut self, order_id: &str) -> rusqlite::Result<Vec<(i64, u64)>> {
        self.tx
            .prepare_cached("SELECT line, seq FROM released_lines WHERE order_id = ?1")?
            .query_map([order_id], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
            })?
            .collect()
    }

    fn prepared_lines(&mut self, order_id: &str) -> rusqlite::Result<Vec<i64>> {
        self.tx
            .prepare_cached("SELECT line FROM prepared_lines WHERE order_id = ?1")?
            .query_map([order_id], |r| r.get::<_, i64>(0))?
            .collect()
    }

    fn shipment_steps(&mut self, order_id: &str) -> rusqlite::Result<Vec<ShipStep>> {
        let codes: Vec<i64> = self
            .tx
            .prepare_cached("SELECT step FROM shipment_steps WHERE order_id = ?1")?
            .query_map([order_id], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(codes.into_iter().filter_map(ShipStep::from_code).collect())
    }

    fn coupon_redeemed(&mut self, coupon: &str) -> rusqlite::Result<Option<Redemption>> {
        self.tx
            .prepare_cached("SELECT seq, wall_ms FROM coupon_redemptions WHERE coupon = ?1")?
            .query_row([coupon], |r| {
                Ok(Redemption {
                    seq: r.get::<_, i64>(0)?.max(0) as u64,
                    at_ms: r.get(1)?,
                })
            })
            .optional()
    }

    fn receipt_seq(&mut self, receipt: &str) -> rusqlite::Result<Option<u64>> {
        Ok(self
            .tx
            .prepare_cached("SELECT seq FROM sold_lines WHERE receipt = ?1 LIMIT 1")?
            .query_row([receipt], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|seq| seq.max(0) as u64))
    }

    fn sold_lines(&mut self, receipt: &str) -> rusqlite::Result<Vec<SoldLine>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT line, sku, gtin, qty, points, customer_id FROM sold_lines
             WHERE receipt = ?1 ORDER BY line",
        )?;
        let rows = stmt.query_map([receipt], |r| {
            Ok(SoldLine {
                line: r.get(0)?,
                sku: r.get(1)?,
                gtin: r.get(2)?,
                qty: r.get(3)?,
                points: r.get(4)?,
                customer_id: r.get(5)?,
            })
        })?;
        rows.collect()
    }

    fn returned_qty(&mut self, original: &ReturnOriginal, line: u32) -> rusqlite::Result<i64> {
        let (source, id) = original.key();
        self.tx
            .prepare_cached(
                "SELECT COALESCE(SUM(qty), 0) FROM returned_lines
                 WHERE source = ?1 AND original = ?2 AND line = ?3",
            )?
            .query_row(params![source, id, line], |r| r.get(0))
    }
}
