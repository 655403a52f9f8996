//! Click-and-collect: the customer shows the order's code, the till scans it
//! (`GET /v1/pickups/{code}` → the order's lines), staff pick the lines
//! (`POST /v1/pickups/{code}/prepare` → `pickup.prepared`) and hand the goods over, all of them
//! or the lines the customer takes now (`POST /v1/pickups/{code}/collect` → `pickup.collected`).
//!
//! Handing a line over takes its goods out of on-hand (a sale-kind movement) and its
//! reservation out of `reserved` (the outbox's `released_lines`), so `available` does not move;
//! the writer refuses a line handed over twice. A line is ready when central's stream says
//! `picked` or when it was prepared here (ADR 0022).

use super::auth::Caller;
use super::facts::{MAX_LINES, bounded_text, caller_name, record};
use super::idempotency::{FactRequest, idempotency_key, route};
use super::{ApiError, ApiState};
use crate::domain::{
    HandedOverLine, OrderLine, PickupCollected, PickupPrepared, ReservedLine, ReservedStock,
    SaleRecorded, StockBaseline, StoreFact,
};
use crate::replica::{Stream, lookup, stream_states};
use crate::storage;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

#[derive(Serialize, Clone)]
pub(super) struct PickupLine {
    pub line: i64,
    pub sku: String,
    pub qty: i64,
    /// Central's status of the line (`open`, `picked`, `collected`, `cancelled`).
    pub status: String,
    /// Prepared here (`pickup.prepared`): ready for hand-over here whatever `status` says.
    pub prepared_here: bool,
    /// The seq of the fact that handed this line over (or shipped it) here, if one did.
    pub released_here: Option<u64>,
}

impl PickupLine {
    fn live(&self) -> bool {
        self.status != "cancelled"
    }

    /// Still to leave the store: not cancelled, not collected per central, not released here.
    fn open(&self) -> bool {
        self.live() && self.status != "collected" && self.released_here.is_none()
    }

    fn ready(&self) -> bool {
        self.status == "picked" || self.prepared_here
    }
}

#[derive(Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum PickupStatus {
    /// Every line still to collect is ready: hand it over.
    Ready,
    /// Some lines not ready yet: hand over the ready ones by naming them, or wait.
    NotReady,
    Collected,
    Cancelled,
}

#[derive(Serialize)]
struct Pickup {
    order_id: String,
    pickup_code: String,
    fulfilment: String,
    status: PickupStatus,
    lines: Vec<PickupLine>,
    /// The latest hand-over of this order here (seq of its event), if any.
    collected_here: Option<Collected>,
    freshness: lookup::Freshness,
}

#[derive(Serialize, Clone, Copy)]
struct Collected {
    seq: u64,
    at_ms: i64,
}

fn check_code(code: &str) -> Result<(), ApiError> {
    bounded_text("code", &Some(code.to_owned()), 64)
}

/// The reservation lines of an order (or of a pickup code) with what this store did to them.
pub(super) fn order_lines(
    conn: &Connection,
    sql_where: &str,
    value: &str,
) -> Result<Vec<(String, String, PickupLine)>, rusqlite::Error> {
    let mut rows = Vec::new();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT r.order_id, r.fulfilment, r.line, r.sku, r.qty, r.status,
                EXISTS (SELECT 1 FROM facts.prepared_lines p
                         WHERE p.order_id = r.order_id AND p.line = r.line),
                (SELECT MIN(c.seq) FROM facts.released_lines c
                  WHERE c.order_id = r.order_id AND c.line IN (r.line, -1))
         FROM reservations r WHERE {sql_where} ORDER BY r.order_id, r.line"
    ))?;
    let mut query = stmt.query([value])?;
    while let Some(r) = query.next()? {
        rows.push((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            PickupLine {
                line: r.get(2)?,
                sku: r.get(3)?,
                qty: r.get(4)?,
                status: r.get(5)?,
                prepared_here: r.get(6)?,
                released_here: r.get::<_, Option<i64>>(7)?.map(|s| s.max(0) as u64),
            },
        ));
    }
    Ok(rows)
}

/// The order behind a pickup code, as the replica and this store's facts know it.
fn find(
    conn: &Connection,
    code: &str,
    stale_after: crate::replica::freshness::StaleAfter,
) -> Result<Result<Pickup, ApiError>, rusqlite::Error> {
    let fresh = lookup::freshness(
        &stream_states(conn)?,
        &[Stream::Reservations],
        storage::now_unix_ms(),
        stale_after,
    );
    let rows = order_lines(conn, "r.pickup_code = ?1", code)?;
    let Some((order_id, fulfilment, _)) = rows.first().cloned() else {
        let mut err = ApiError::not_found(
            "no order with this pickup code in the replica (mistyped, or not synced yet: see \
             `freshness`)",
        );
        err.details = serde_json::to_value(&fresh).ok();
        return Ok(Err(err));
    };
    if rows.iter().any(|(id, _, _)| *id != order_id) {
        return Ok(Err(ApiError::new(
            StatusCode::CONFLICT,
            "ambiguous_pickup_code",
            "this pickup code belongs to more than one order; look the order up in central",
        )));
    }
    let latest = rows.iter().filter_map(|(_, _, l)| l.released_here).max();
    let collected_here = match latest {
        Some(seq) => conn
            .prepare_cached(
                "SELECT wall_ms FROM facts.released_lines WHERE order_id = ?1 AND seq = ?2 \
                 LIMIT 1",
            )?
            .query_row(rusqlite::params![order_id, seq as i64], |r| r.get(0))
            .map(|at_ms| Some(Collected { seq, at_ms }))?,
        None => None,
    };
    let lines: Vec<PickupLine> = rows.into_iter().map(|(_, _, line)| line).collect();
    let status = if !lines.iter().any(PickupLine::live) {
        PickupStatus::Cancelled
    } else if !lines.iter().any(PickupLine::open) {
        PickupStatus::Collected
    } else if lines.iter().filter(|l| l.open()).all(PickupLine::ready) {
        PickupStatus::Ready
    } else {
        PickupStatus::NotReady
    };
    Ok(Ok(Pickup {
        order_id,
        pickup_code: code.to_owned(),
        fulfilment,
        status,
        lines,
        collected_here,
        freshness: fresh,
    }))
}

/// A click-and-collect order to hand over or prepare at the counter: a ship order is refused.
async fn load_for_counter(state: &ApiState, code: String) -> Result<Pickup, ApiError> {
    let pickup = load(state, code).await?;
    if pickup.fulfilment != "collect" {
        return Err(wrong_fulfilment(&pickup.order_id, &pickup.fulfilment));
    }
    Ok(pickup)
}

async fn load(state: &ApiState, code: String) -> Result<Pickup, ApiError> {
    check_code(&code)?;
    let stale_after = state.tunables.stale_after();
    state
        .readers
        .run(move |conn| find(conn, &code, stale_after))
        .await?
        .map_err(|e| ApiError::internal(format!("replica read failed: {e}")))?
}

pub(super) async fn get_pickup(
    State(state): State<Arc<ApiState>>,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    let pickup = load(&state, code).await?;
    Ok(axum::Json(pickup).into_response())
}

/// The body of a hand-over or a preparation: which lines (all of them when absent).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinesBody {
    #[serde(default)]
    client_key: Option<String>,
    #[serde(default)]
    lines: Option<Vec<i64>>,
}

fn join(lines: &[i64]) -> String {
    lines
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A 409 naming the lines it is about.
pub(super) fn conflict(code: &'static str, message: String, lines: &[i64]) -> ApiError {
    let mut refusal = ApiError::new(StatusCode::CONFLICT, code, message);
    refusal.details = Some(serde_json::json!({ "reason": code, "lines": lines }));
    refusal
}

pub(super) fn wrong_fulfilment(order_id: &str, fulfilment: &str) -> ApiError {
    let what = if fulfilment == "ship" {
        "is shipped from the store: record its steps with POST /v1/shipments/{order_id}/picked, \
         …/packed and …/shipped; do not hand it over at the counter"
    } else {
        "is collected at the counter (POST /v1/pickups/{code}/collect), not shipped"
    };
    ApiError::new(
        StatusCode::CONFLICT,
        "wrong_fulfilment",
        format!("order {order_id} {what}"),
    )
}

/// The lines a request names, checked against the order: 400 for a line the order does not
/// have or named twice, 409 for a line cancelled or collected per central. Lines released here
/// are left to the writer, so that a retry gets its first answer.
fn chosen_lines<'p>(pickup: &'p Pickup, named: &[i64]) -> Result<Vec<&'p PickupLine>, ApiError> {
    if named.is_empty() || named.len() > MAX_LINES {
        return Err(ApiError::invalid(
            "lines",
            format!("give 1 to {MAX_LINES} line numbers, or leave `lines` out for every line"),
        ));
    }
    let by_line: BTreeMap<i64, &PickupLine> = pickup.lines.iter().map(|l| (l.line, l)).collect();
    let mut seen = BTreeSet::new();
    let mut chosen = Vec::with_capacity(named.len());
    for (i, n) in named.iter().enumerate() {
        let Some(line) = by_line.get(n) else {
            return Err(ApiError::invalid(
                &format!("lines[{i}]"),
                format!("order {} has no line {n}", pickup.order_id),
            ));
        };
        if !seen.insert(*n) {
            return Err(ApiError::invalid(
                &format!("lines[{i}]"),
                format!("line {n} is named twice"),
            ));
        }
        chosen.push(*line);
    }
    let cancelled: Vec<i64> = chosen
        .iter()
        .filter(|l| !l.live())
        .map(|l| l.line)
        .collect();
    if !cancelled.is_empty() {
        return Err(conflict(
            "order_cancelled",
            format!(
                "line(s) {} of order {} were cancelled: do not hand them over",
                join(&cancelled),
                pickup.order_id
            ),
            &cancelled,
        ));
    }
    let elsewhere: Vec<i64> = chosen
        .iter()
        .filter(|l| l.status == "collected")
        .map(|l| l.line)
        .collect();
    if !elsewhere.is_empty() {
        return Err(conflict(
            "already_collected",
            format!(
                "central says line(s) {} of order {} were already collected",
                join(&elsewhere),
                pickup.order_id
            ),
            &elsewhere,
        ));
    }
    Ok(chosen)
}

/// Every line still to leave the store, or (when none is left) the lines this store released,
/// so that the writer replays a retry or names them in its refusal.
fn all_lines(pickup: &Pickup) -> Result<Vec<&PickupLine>, ApiError> {
    if !pickup.lines.iter().any(PickupLine::live) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "order_cancelled",
            format!(
                "order {} was cancelled: do not hand it over",
                pickup.order_id
            ),
        ));
    }
    let open: Vec<&PickupLine> = pickup.lines.iter().filter(|l| l.open()).collect();
    if !open.is_empty() {
        return Ok(open);
    }
    let here: Vec<&PickupLine> = pickup
        .lines
        .iter()
        .filter(|l| l.released_here.is_some())
        .collect();
    if here.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_collected",
            format!(
                "central says order {} was already collected",
                pickup.order_id
            ),
        ));
    }
    Ok(here)
}

pub(super) async fn collect(
    State(state): State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request =
        FactRequest::<LinesBody>::parse_or_empty(route::PICKUP_COLLECT, &[code.as_str()], body)?;
    let key = idempotency_key(&headers, request.body.client_key.as_deref(), true)?;
    let pickup = load_for_counter(&state, code).await?;
    let chosen = match &request.body.lines {
        Some(named) => chosen_lines(&pickup, named)?,
        None => all_lines(&pickup)?,
    };
    // A line handed over here already is left to the writer (a retry replays, anything else is
    // refused there); every other line must be ready.
    let not_ready: Vec<i64> = chosen
        .iter()
        .filter(|l| l.released_here.is_none() && !l.ready())
        .map(|l| l.line)
        .collect();
    if !not_ready.is_empty() {
        let mut refusal = ApiError::new(
            StatusCode::CONFLICT,
            "order_not_ready",
            format!(
                "order {} is not ready: line(s) {} not picked yet; hand over the ready lines by \
                 naming them in `lines`, or prepare the others first",
                pickup.order_id,
                join(&not_ready)
            ),
        );
        refusal.details = Some(serde_json::json!({
            "reason": "order_not_ready",
            "not_picked": not_ready,
        }));
        return Err(refusal);
    }
    let chosen_set: BTreeSet<i64> = chosen.iter().map(|l| l.line).collect();
    let partial = pickup
        .lines
        .iter()
        .any(|l| l.open() && !chosen_set.contains(&l.line));
    let was_ready = chosen.iter().all(|l| l.status == "picked");
    let handed_over: Vec<HandedOverLine> = chosen
        .into_iter()
        .map(|l| HandedOverLine {
            line: l.line,
            sku: l.sku.clone(),
            qty: l.qty,
            status: l.status.clone(),
        })
        .collect();
    let by = caller_name(&caller);
    let claim = request.claim(&by, key.as_deref());
    let fact = StoreFact::PickupCollected(PickupCollected {
        order_id: pickup.order_id,
        pickup_code: pickup.pickup_code,
        lines: handed_over,
        was_ready,
        partial,
        client_key: key,
        by,
    });
    record(&state, fact, claim).await
}

pub(super) async fn prepare(
    State(state): State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request =
        FactRequest::<LinesBody>::parse_or_empty(route::PICKUP_PREPARE, &[code.as_str()], body)?;
    // Optional: a line is prepared once whatever the key, so a retry without one is refused
    // (409 `already_prepared`) rather than recorded twice.
    let key = idempotency_key(&headers, request.body.client_key.as_deref(), false)?;
    let pickup = load_for_counter(&state, code).await?;
    let chosen = match &request.body.lines {
        Some(named) => chosen_lines(&pickup, named)?,
        None => {
            let all = all_lines(&pickup)?;
            // Every line not ready yet; if all are, the lines themselves, so that the writer
            // replays a retry or says they were prepared.
            let waiting: Vec<&PickupLine> = all.iter().copied().filter(|l| !l.ready()).collect();
            if waiting.is_empty() { all } else { waiting }
        }
    };
    let lines: Vec<OrderLine> = chosen
        .into_iter()
        .map(|l| OrderLine {
            line: l.line,
            sku: l.sku.clone(),
            qty: l.qty,
        })
        .collect();
    let by = caller_name(&caller);
    let claim = request.claim(&by, key.as_deref());
    let fact = StoreFact::PickupPrepared(PickupPrepared {
        order_id: pickup.order_id,
        pickup_code: pickup.pickup_code,
        lines,
        client_key: key,
        by,
    });
    record(&state, fact, claim).await
}

/// The SKUs a ticket moves: what `[pickups] protect_reserved` checks against reservations.
pub(super) fn stocked_skus(recorded: &SaleRecorded) -> BTreeSet<String> {
    recorded
        .lines
        .iter()
        .filter(|l| l.stock_applied)
        .filter_map(|l| l.sku.clone())
        .collect()
}

/// With `[pickups] protect_reserved`, each SKU of a ticket that web orders reserve, with
/// central's baseline and the reserving lines as this reader sees them; the writer adds the
/// local movements and releases after them (empty when the protection is off).
pub(super) async fn reserved_for(
    state: &ApiState,
    skus: &BTreeSet<String>,
) -> Result<Vec<ReservedStock>, ApiError> {
    if !state.tunables.protect_reserved() || skus.is_empty() {
        return Ok(Vec::new());
    }
    let skus = skus.clone();
    state
        .readers
        .run(move |conn| reserved_stock(conn, skus))
        .await?
        .map_err(|e| ApiError::internal(format!("replica read failed: {e}")))
}

fn reserved_stock(
    conn: &Connection,
    skus: BTreeSet<String>,
) -> Result<Vec<ReservedStock>, rusqlite::Error> {
    let mut out = Vec::new();
    for sku in skus {
        let reservations: Vec<ReservedLine> = conn
            .prepare_cached(
                "SELECT order_id, line, qty FROM reservations \
                 WHERE sku = ?1 AND status IN ('open', 'picked')",
            )?
            .query_map([&sku], |r| {
                Ok(ReservedLine {
                    order_id: r.get(0)?,
                    line: r.get(1)?,
                    qty: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        if reservations.is_empty() {
            continue;
        }
        let baseline = conn
            .prepare_cached("SELECT on_hand, watermark_seq FROM stock WHERE sku = ?1")?
            .query_row([&sku], |r| {
                Ok(StockBaseline {
                    on_hand: r.get(0)?,
                    watermark_seq: r.get::<_, i64>(1)?.max(0) as u64,
                })
            })
            .optional()?;
        out.push(ReservedStock {
            sku,
            baseline,
            reservations,
        });
    }
    Ok(out)
}
