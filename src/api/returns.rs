//! `POST /v1/returns`: goods brought back, from this store or another channel.
//!
//! A return may name its original: a store receipt (`original.receipt`, each line naming its
//! `original_line`, the index in that ticket) or a web order (`origin.order_id`, each line
//! naming the order's line). The writer checks it against what the original sold (the ticket
//! as this agent filed it; the order's lines as the reader saw them in the reservations stream)
//! minus what was returned of it before, and reverses the points the sale earned on the
//! returned units (docs/adr/0021). A return naming no original, or one the agent does not know,
//! is recorded unchecked (`original_checked: false`): central decides.

use super::auth::Caller;
use super::facts::{
    LineBody, bounded_text, caller_name, in_range, named_customer, record, resolve_lines, yes,
};
use super::idempotency::{FactRequest, idempotency_key, route};
use super::{ApiError, ApiState};
use crate::domain::{
    Channel, OrderedLine, Return, ReturnOrigin, ReturnOriginal, ReturnRecorded, StoreFact,
};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;

/// An original line number: a ticket's line index or an order's line number.
const MAX_ORIGINAL_LINE: i64 = 1_000_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OriginBody {
    channel: Channel,
    /// The original order or receipt; required for a web or app order.
    #[serde(default)]
    order_id: Option<String>,
    #[serde(default)]
    store: Option<String>,
}

/// The store ticket a return reverses.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OriginalBody {
    receipt: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReturnBody {
    #[serde(default)]
    client_key: Option<String>,
    #[serde(default)]
    receipt: Option<String>,
    lines: Vec<LineBody>,
    #[serde(default)]
    origin: Option<OriginBody>,
    #[serde(default)]
    original: Option<OriginalBody>,
    #[serde(default)]
    reason: Option<String>,
    /// Damaged goods are recorded but not put back on sale.
    #[serde(default = "yes")]
    restock: bool,
    /// The customer bringing the goods back, when known.
    #[serde(default)]
    customer: Option<super::loyalty::CustomerBody>,
}

/// Which original the body names, checked against its lines: every line names its original
/// line when the return names an original, none does otherwise.
fn original_of(body: &ReturnBody) -> Result<Option<ReturnOriginal>, ApiError> {
    let web_order = body
        .origin
        .as_ref()
        .filter(|o| o.channel != Channel::Store)
        .and_then(|o| o.order_id.clone());
    let named_lines = body.lines.iter().any(|l| l.original_line.is_some());
    let original = match (&body.original, web_order) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "original.receipt",
                "a receipt names a store ticket; a web or app order is named by \
                 origin.order_id alone",
            ));
        }
        (Some(original), None) => {
            bounded_text("original.receipt", &Some(original.receipt.clone()), 64)?;
            Some(ReturnOriginal::Receipt(original.receipt.clone()))
        }
        // A web return naming no line keeps the body it always had: recorded unchecked.
        (None, Some(order)) if named_lines => Some(ReturnOriginal::OrderId(order)),
        (None, _) => None,
    };
    for (i, line) in body.lines.iter().enumerate() {
        let at = format!("lines[{i}].original_line");
        match (line.original_line, &original) {
            (Some(l), Some(_)) => {
                in_range(&at, l, 0..=MAX_ORIGINAL_LINE, "(a line of the original)")?;
            }
            (None, Some(_)) => {
                return Err(ApiError::invalid(
                    &at,
                    "required: a return naming its original names the original line of \
                     every line",
                ));
            }
            (Some(_), None) => {
                return Err(ApiError::invalid(
                    &at,
                    "names a line of an original the return does not name: give \
                     original.receipt, or origin.order_id of a web or app order",
                ));
            }
            (None, None) => {}
        }
    }
    Ok(original)
}

/// The order's lines in the reservations stream; `None` when the stream does not know it.
async fn order_lines(
    state: &ApiState,
    order_id: String,
) -> Result<Option<Vec<OrderedLine>>, ApiError> {
    let lines = state
        .readers
        .run(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT line, sku, qty, status FROM reservations WHERE order_id = ?1 \
                 ORDER BY line",
            )?;
            let rows = stmt.query_map([&order_id], |r| {
                Ok(OrderedLine {
                    line: r.get(0)?,
                    sku: r.get(1)?,
                    qty: r.get(2)?,
                    cancelled: r.get::<_, String>(3)? == "cancelled",
                })
            })?;
            rows.collect::<Result<Vec<_>, rusqlite::Error>>()
        })
        .await?
        .map_err(|e| ApiError::internal(format!("replica read failed: {e}")))?;
    Ok((!lines.is_empty()).then_some(lines))
}

pub(super) async fn post_return(
    State(state): State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut request = FactRequest::<ReturnBody>::parse(route::RETURNS, &[], body)?;
    let customer_id = named_customer(&state, &mut request, |b| &b.customer)
        .await?
        .map(|(id, _)| id);
    let body = &request.body;
    let key = idempotency_key(&headers, body.client_key.as_deref(), true)?;
    bounded_text("receipt", &body.receipt, 64)?;
    bounded_text("reason", &body.reason, 256)?;
    if let Some(origin) = &body.origin {
        bounded_text("origin.order_id", &origin.order_id, 64)?;
        bounded_text("origin.store", &origin.store, 64)?;
        if origin.channel != Channel::Store && origin.order_id.is_none() {
            return Err(ApiError::invalid(
                "origin.order_id",
                "required for a web or app order: central matches the return to it",
            ));
        }
    }
    let original = original_of(body)?;
    let by = caller_name(&caller);
    let claim = request.claim(&by, key.as_deref());
    let ReturnBody {
        receipt,
        lines,
        origin,
        reason,
        restock,
        ..
    } = request.body;
    let mut lines = resolve_lines(&state, lines).await?;
    if !restock {
        for line in &mut lines {
            line.stock_applied = false;
        }
    }
    // The order as this agent knows it, passed to the writer the way a count passes its
    // baselines; what was returned of it is read there.
    let order_lines = match &original {
        Some(ReturnOriginal::OrderId(order)) => order_lines(&state, order.clone()).await?,
        _ => None,
    };
    let origin = origin.map_or(
        ReturnOrigin {
            channel: Channel::Store,
            order_id: None,
            store: None,
        },
        |o| ReturnOrigin {
            channel: o.channel,
            order_id: o.order_id,
            store: o.store,
        },
    );
    let fact = StoreFact::Return(Return {
        recorded: ReturnRecorded {
            receipt,
            lines,
            cross_channel: origin.channel != Channel::Store,
            origin,
            reason,
            restocked: restock,
            customer_id,
            original,
            original_checked: false,
            reversed_customer_id: None,
            points_reversed: None,
            client_key: key,
            by,
        },
        order_lines,
    });
    record(&state, fact, claim).await
}
