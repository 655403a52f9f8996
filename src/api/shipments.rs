//! Ship-from-store: central assigns a web order to the store (a reservation with
//! `fulfilment: ship`), staff record its steps in order, each once
//! (`POST /v1/shipments/{order_id}/picked`, `…/packed`, `…/shipped`). The order's
//! units stay reserved until `shipped`, which takes each line out of on-hand and out of
//! `reserved` together, with the carrier and tracking number central tells the customer
//! (ADR 0022). The writer keeps the steps in order (two packing benches cannot both ship).

use super::auth::Caller;
use super::facts::{bounded_text, caller_name, record};
use super::idempotency::{FactRequest, idempotency_key, route};
use super::pickups::{conflict, order_lines, wrong_fulfilment};
use super::{ApiError, ApiState};
use crate::domain::{OrderLine, ShipStep, ShipmentRecorded, StoreFact, Tracking};
use crate::replica::{Stream, lookup, stream_states};
use crate::storage;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;

/// Characters of a carrier's name.
const CARRIER_MAX: usize = 40;
/// A tracking number: 4 to 40 letters, digits or dashes (what carriers print under the barcode).
const TRACKING_LEN: std::ops::RangeInclusive<usize> = 4..=40;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepBody {
    #[serde(default)]
    client_key: Option<String>,
    #[serde(default)]
    carrier: Option<String>,
    #[serde(default)]
    tracking_number: Option<String>,
}

/// The tracking of a `shipped` step (both fields required), and none for the other steps.
fn tracking(step: ShipStep, body: &StepBody) -> Result<Option<Tracking>, ApiError> {
    bounded_text("carrier", &body.carrier, CARRIER_MAX)?;
    if let Some(number) = &body.tracking_number
        && (!TRACKING_LEN.contains(&number.len())
            || !number
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    {
        return Err(ApiError::invalid(
            "tracking_number",
            "4 to 40 letters, digits or dashes, as the carrier prints it",
        ));
    }
    match (step, &body.carrier, &body.tracking_number) {
        (ShipStep::Shipped, Some(carrier), Some(number)) => Ok(Some(Tracking {
            carrier: carrier.clone(),
            tracking_number: number.clone(),
        })),
        (ShipStep::Shipped, None, _) => Err(ApiError::invalid(
            "carrier",
            "required when the parcel ships: central tells the customer",
        )),
        (ShipStep::Shipped, _, None) => Err(ApiError::invalid(
            "tracking_number",
            "required when the parcel ships: central tells the customer",
        )),
        (_, Some(_), _) => Err(ApiError::invalid(
            "carrier",
            "only given with the `shipped` step",
        )),
        (_, _, Some(_)) => Err(ApiError::invalid(
            "tracking_number",
            "only given with the `shipped` step",
        )),
        (_, None, None) => Ok(None),
    }
}

pub(super) async fn picked(
    state: State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    post_step(state, caller, order_id, ShipStep::Picked, headers, body).await
}

pub(super) async fn packed(
    state: State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    post_step(state, caller, order_id, ShipStep::Packed, headers, body).await
}

pub(super) async fn shipped(
    state: State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    post_step(state, caller, order_id, ShipStep::Shipped, headers, body).await
}

/// One step of a ship order. The key is optional: each step is recorded once whatever the key,
/// so a retry without one is refused (409 `step_already_recorded`) rather than counted twice.
async fn post_step(
    State(state): State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    order_id: String,
    step: ShipStep,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = FactRequest::<StepBody>::parse_or_empty(
        route::SHIPMENT_STEP,
        &[order_id.as_str(), step.name()],
        body,
    )?;
    bounded_text("order_id", &Some(order_id.clone()), 64)?;
    let tracking = tracking(step, &request.body)?;
    let key = idempotency_key(&headers, request.body.client_key.as_deref(), false)?;
    let stale_after = state.tunables.stale_after();
    let (rows, fresh) = {
        let order_id = order_id.clone();
        state
            .readers
            .run(move |conn| {
                let fresh = lookup::freshness(
                    &stream_states(conn)?,
                    &[Stream::Reservations],
                    storage::now_unix_ms(),
                    stale_after,
                );
                Ok::<_, rusqlite::Error>((order_lines(conn, "r.order_id = ?1", &order_id)?, fresh))
            })
            .await?
            .map_err(|e| ApiError::internal(format!("replica read failed: {e}")))?
    };
    let Some((_, fulfilment, _)) = rows.first() else {
        let mut err = ApiError::not_found(
            "no order with this id in the replica (mistyped, or not synced yet: see \
             `freshness`)",
        );
        err.details = serde_json::to_value(&fresh).ok();
        return Err(err);
    };
    if fulfilment != "ship" {
        return Err(wrong_fulfilment(&order_id, fulfilment));
    }
    let lines: Vec<OrderLine> = rows
        .iter()
        .filter(|(_, _, l)| l.status != "cancelled" && l.status != "collected")
        .map(|(_, _, l)| OrderLine {
            line: l.line,
            sku: l.sku.clone(),
            qty: l.qty,
        })
        .collect();
    if lines.is_empty() {
        let all: Vec<i64> = rows.iter().map(|(_, _, l)| l.line).collect();
        return Err(conflict(
            "order_cancelled",
            format!("order {order_id} has no line left to ship (cancelled): do not ship it"),
            &all,
        ));
    }
    let by = caller_name(&caller);
    let claim = request.claim(&by, key.as_deref());
    let fact = StoreFact::Shipment(ShipmentRecorded {
        order_id,
        step,
        lines,
        tracking,
        client_key: key,
        by,
    });
    record(&state, fact, claim).await
}
