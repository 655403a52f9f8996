//! Click-and-collect: the customer shows the order's code, the till scans it
//! (`GET /v1/pickups/{code}` → the order's lines), staff hand the goods over
//! (`POST /v1/pickups/{code}/collect` → a `pickup.collected` store fact).
//!
//! Collecting takes the goods out of on-hand (a sale-kind movement per line) and the order's
//! reservations out of `reserved` (the local `collected_orders` record), so `available` does
//! not move; the writer refuses a second collection of the same order.

use super::auth::Caller;
use super::facts::{bounded_text, caller_name, record};
use super::idempotency::{FactRequest, idempotency_key, route};
use super::{ApiError, ApiState};
use crate::domain::{HandedOverLine, PickupCollected, StoreFact};
use crate::replica::{Stream, lookup, stream_states};
use crate::storage;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Serialize, Clone)]
struct PickupLine {
    line: i64,
    sku: String,
    qty: i64,
    status: String,
}

#[derive(Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum PickupStatus {
    /// Every line picked: hand it over.
    Ready,
    /// Some lines not picked yet: not handed over until they are.
    NotReady,
    Collected,
    Cancelled,
}

#[derive(Serialize)]
struct Pickup {
    order_id: String,
    pickup_code: String,
    status: PickupStatus,
    lines: Vec<PickupLine>,
    /// When this store recorded the collection (seq of its event), if it did.
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
    let mut rows = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT order_id, line, sku, qty, status FROM reservations \
         WHERE pickup_code = ?1 ORDER BY order_id, line",
    )?;
    let mut query = stmt.query([code])?;
    while let Some(r) = query.next()? {
        rows.push((
            r.get::<_, String>(0)?,
            PickupLine {
                line: r.get(1)?,
                sku: r.get(2)?,
                qty: r.get(3)?,
                status: r.get(4)?,
            },
        ));
    }
    let Some((order_id, _)) = rows.first().cloned() else {
        let mut err = ApiError::not_found(
            "no order with this pickup code in the replica (mistyped, or not synced yet: see \
             `freshness`)",
        );
        err.details = serde_json::to_value(&fresh).ok();
        return Ok(Err(err));
    };
    if rows.iter().any(|(id, _)| *id != order_id) {
        return Ok(Err(ApiError::new(
            StatusCode::CONFLICT,
            "ambiguous_pickup_code",
            "this pickup code belongs to more than one order; look the order up in central",
        )));
    }
    let collected_here = conn
        .prepare_cached("SELECT seq, wall_ms FROM facts.collected_orders WHERE order_id = ?1")?
        .query_row([&order_id], |r| {
            Ok(Collected {
                seq: r.get::<_, i64>(0)? as u64,
                at_ms: r.get(1)?,
            })
        })
        .optional()?;
    let lines: Vec<PickupLine> = rows.into_iter().map(|(_, line)| line).collect();
    let live = || lines.iter().filter(|l| l.status != "cancelled");
    // Lines central already marks collected (handed over elsewhere) are never handed over
    // again; the order is ready when every other live line is picked.
    let remaining = || live().filter(|l| l.status != "collected");
    let status = if collected_here.is_some() || remaining().count() == 0 {
        if live().count() == 0 {
            PickupStatus::Cancelled
        } else {
            PickupStatus::Collected
        }
    } else if remaining().all(|l| l.status == "picked") {
        PickupStatus::Ready
    } else {
        PickupStatus::NotReady
    };
    Ok(Ok(Pickup {
        order_id,
        pickup_code: code.to_owned(),
        status,
        lines,
        collected_here,
        freshness: fresh,
    }))
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectBody {
    #[serde(default)]
    client_key: Option<String>,
}

pub(super) async fn collect(
    State(state): State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request =
        FactRequest::<CollectBody>::parse_or_empty(route::PICKUP_COLLECT, &[code.as_str()], body)?;
    let key = idempotency_key(&headers, request.body.client_key.as_deref(), true)?;
    let pickup = load(&state, code).await?;
    // A retry of a collection that went through must get its first answer, so a collected
    // order is refused here only when the key is new; the writer checks again atomically.
    let refusal = match pickup.status {
        PickupStatus::Cancelled => Some(ApiError::new(
            StatusCode::CONFLICT,
            "order_cancelled",
            format!(
                "order {} was cancelled: do not hand it over",
                pickup.order_id
            ),
        )),
        PickupStatus::Collected if pickup.collected_here.is_none() => Some(ApiError::new(
            StatusCode::CONFLICT,
            "already_collected",
            format!(
                "central says order {} was already collected",
                pickup.order_id
            ),
        )),
        PickupStatus::NotReady => {
            let not_picked: Vec<i64> = pickup
                .lines
                .iter()
                .filter(|l| !matches!(l.status.as_str(), "picked" | "cancelled" | "collected"))
                .map(|l| l.line)
                .collect();
            let mut refusal = ApiError::new(
                StatusCode::CONFLICT,
                "order_not_ready",
                format!(
                    "order {} is not ready: line(s) {} not picked yet; hand it over once \
                     central says every line is picked",
                    pickup.order_id,
                    not_picked
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            refusal.details = Some(serde_json::json!({
                "reason": "order_not_ready",
                "not_picked": not_picked,
            }));
            Some(refusal)
        }
        _ => None,
    };
    if let Some(refusal) = refusal {
        return Err(refusal);
    }
    let handed_over: Vec<HandedOverLine> = pickup
        .lines
        .into_iter()
        .filter(|l| l.status != "cancelled" && l.status != "collected")
        .map(|l| HandedOverLine {
            line: l.line,
            sku: l.sku,
            qty: l.qty,
            status: l.status,
        })
        .collect();
    let by = caller_name(&caller);
    let claim = request.claim(&by, key.as_deref());
    let fact = StoreFact::PickupCollected(PickupCollected {
        order_id: pickup.order_id,
        pickup_code: pickup.pickup_code,
        lines: handed_over,
        was_ready: pickup.status == PickupStatus::Ready,
        client_key: key,
        by,
    });
    record(&state, fact, claim).await
}
