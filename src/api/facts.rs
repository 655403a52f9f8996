//! Store facts posted by tills and back office: stock movements, sales and returns
//! (cross-channel included); cycle counts are in `counts.rs`, loyalty and pickups beside.
//!
//! Every handler follows one path: validate the whole body (every number against its
//! documented range, 400 naming the field), resolve codes on a reader, then hand one typed
//! [`StoreFact`] to the outbox writer, which settles it against every fact before it
//! (`crate::domain`) and commits it with its local effects (`record`). A 2xx means the event
//! and its effects are durable together; a retry with the same idempotency key gets the first
//! answer back and changes nothing.

use super::auth::Caller;
use super::idempotency::{FactRequest, idempotency_key, route};
use super::{ApiError, ApiState};
use crate::decode::gtin::Gtin14;
use crate::domain::{
    FactLine, LoyaltyBaseline, MovementKind, Sale, SaleRecorded, StockMovementRecorded, StoreFact,
    returns,
};
use crate::outbox::{AppendRequest, IdempotencyClaim};
use crate::replica::lookup;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rusqlite::{Connection, OptionalExtension};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// Units in one line or movement.
pub(super) const MAX_QTY: i64 = 1_000_000;
/// A unit price in minor units (10 million in a currency with cents): a larger figure is a
/// client bug. With `MAX_QTY` and `MAX_LINES` a ticket's total stays far inside an i64.
pub(super) const MAX_UNIT_PRICE_MINOR: i64 = 1_000_000_000;
/// A till ticket or a count larger than this is a client bug, not a sale.
pub(super) const MAX_LINES: usize = 500;

pub(super) fn bounded_text(
    field: &str,
    value: &Option<String>,
    max: usize,
) -> Result<(), ApiError> {
    // Characters, not bytes: docs/openapi.json states these limits as JSON Schema lengths,
    // which count characters, and a till's "é" must not count twice.
    match value {
        Some(v)
            if v.is_empty() || v.chars().nth(max).is_some() || v.chars().any(char::is_control) =>
        {
            Err(ApiError::invalid(
                field,
                format!("must be 1 to {max} printable characters"),
            ))
        }
        _ => Ok(()),
    }
}

/// `value` within `range`, or a 400 naming `field` and the range.
pub(super) fn in_range(
    field: &str,
    value: i64,
    range: std::ops::RangeInclusive<i64>,
    unit: &str,
) -> Result<i64, ApiError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(
            field,
            format!(
                "{value}: must be {} to {} {unit}",
                range.start(),
                range.end()
            ),
        ))
    }
}

/// Append `fact` and answer 201, or 200 with the first answer when its key was seen before.
pub(super) async fn record(
    state: &ApiState,
    fact: StoreFact,
    claim: Option<IdempotencyClaim>,
) -> Result<Response, ApiError> {
    let mut request = AppendRequest::fact(fact);
    request.idempotency = claim;
    let appended = state.outbox.append(request).await?;
    let mut body = Map::new();
    body.insert("id".into(), json!(appended.id));
    body.insert("seq".into(), json!(appended.seq));
    body.insert("durable".into(), json!(true));
    body.insert("replayed".into(), json!(appended.replayed));
    // Keys recorded before answers were kept have none: the ids still identify the fact.
    let answer = appended
        .answer
        .and_then(|text| serde_json::from_str::<Map<String, Value>>(&text).ok())
        .unwrap_or_default();
    for (k, v) in answer {
        body.entry(k).or_insert(v);
    }
    let status = if appended.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(Value::Object(body))).into_response())
}

/// The caller's token name, recorded in the event (which till did it) and scoping its keys.
pub(super) fn caller_name(caller: &Option<Extension<Caller>>) -> String {
    caller
        .as_ref()
        .map(|Extension(Caller(name))| name.to_string())
        .unwrap_or_else(|| "local".to_owned())
}

// ---------------------------------------------------------------------------------------
// Lines: what was sold or returned.

/// An item as a till names it: `sku`, or `code` in any barcode form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LineBody {
    #[serde(default)]
    sku: Option<String>,
    #[serde(default)]
    code: Option<String>,
    qty: i64,
    #[serde(default)]
    unit_price_minor: Option<i64>,
    /// A return's line: the line of its original (index in the ticket, or the order's line).
    #[serde(default)]
    pub(super) original_line: Option<i64>,
}

pub(super) enum ItemRef {
    Sku(String),
    Gtin(Gtin14),
}

/// Check one item reference; `at` names it in errors (e.g. `lines[2]`).
pub(super) fn item_ref(
    at: &str,
    sku: &Option<String>,
    code: &Option<String>,
) -> Result<ItemRef, ApiError> {
    bounded_text(&format!("{at}.sku"), sku, 64)?;
    match (sku, code) {
        (Some(sku), None) => Ok(ItemRef::Sku(sku.clone())),
        (None, Some(code)) => lookup::gtin_of_code(code)
            .map(ItemRef::Gtin)
            .map_err(|e| ApiError::invalid(&format!("{at}.code"), e.to_string())),
        _ => Err(ApiError::invalid(at, "give exactly one of `sku` or `code`")),
    }
}

/// The SKU and GTIN of an item in the replica (SKU kept as given when the replica lacks it).
pub(super) fn resolve(
    conn: &Connection,
    item: &ItemRef,
) -> Result<(Option<String>, Option<Gtin14>), rusqlite::Error> {
    Ok(match item {
        ItemRef::Sku(sku) => {
            let gtin: Option<i64> = conn
                .prepare_cached("SELECT gtin FROM products WHERE sku = ?1 LIMIT 1")?
                .query_row([sku], |r| r.get(0))
                .optional()?;
            (
                Some(sku.clone()),
                gtin.and_then(|g| Gtin14::parse(&format!("{g:014}")).ok()),
            )
        }
        ItemRef::Gtin(gtin) => {
            let sku: Option<String> = conn
                .prepare_cached("SELECT sku FROM products WHERE gtin = ?1")?
                .query_row([gtin.as_i64()], |r| r.get(0))
                .optional()?;
            (sku, Some(*gtin))
        }
    })
}

fn check_lines(lines: &[LineBody]) -> Result<Vec<ItemRef>, ApiError> {
    if lines.is_empty() || lines.len() > MAX_LINES {
        return Err(ApiError::invalid(
            "lines",
            format!("give 1 to {MAX_LINES} lines"),
        ));
    }
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let at = format!("lines[{i}]");
            in_range(&format!("{at}.qty"), line.qty, 1..=MAX_QTY, "units")?;
            if let Some(price) = line.unit_price_minor {
                in_range(
                    &format!("{at}.unit_price_minor"),
                    price,
                    0..=MAX_UNIT_PRICE_MINOR,
                    "minor units",
                )?;
            }
            item_ref(&at, &line.sku, &line.code)
        })
        .collect()
}

/// Resolve every line on one reader, so a ticket sees one replica snapshot.
pub(super) async fn resolve_lines(
    state: &ApiState,
    lines: Vec<LineBody>,
) -> Result<Vec<FactLine>, ApiError> {
    let items = check_lines(&lines)?;
    state
        .readers
        .run(move |conn| {
            lines
                .iter()
                .zip(&items)
                .map(|(line, item)| {
                    let (sku, gtin) = resolve(conn, item)?;
                    Ok(FactLine {
                        // A barcode the replica does not know has no SKU: the line is
                        // recorded for central without a local stock effect.
                        stock_applied: sku.is_some(),
                        sku,
                        gtin,
                        qty: line.qty,
                        unit_price_minor: line.unit_price_minor,
                        original_line: line.original_line.and_then(|l| u32::try_from(l).ok()),
                        points: None,
                    })
                })
                .collect::<Result<Vec<FactLine>, rusqlite::Error>>()
        })
        .await?
        .map_err(|e| ApiError::internal(format!("replica read failed: {e}")))
}

/// Σ qty × unit price when every line has a price; a 400 if it leaves the range of an i64
/// (it cannot, within the documented ranges: checked all the same).
fn ticket_total(lines: &[FactLine]) -> Result<Option<i64>, ApiError> {
    let mut total: i64 = 0;
    for line in lines {
        let Some(price) = line.unit_price_minor else {
            return Ok(None);
        };
        total = price
            .checked_mul(line.qty)
            .and_then(|amount| total.checked_add(amount))
            .ok_or_else(|| ApiError::invalid("lines", "the ticket's total is out of range"))?;
    }
    Ok(Some(total))
}

// ---------------------------------------------------------------------------------------
// POST /v1/movements

/// A single stock movement as a back office posts it (receipts, adjustments; single-line
/// sales and returns too).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MovementBody {
    kind: MovementKind,
    #[serde(default)]
    sku: Option<String>,
    /// Any barcode form (`code` is accepted as a synonym).
    #[serde(default, alias = "code")]
    gtin: Option<String>,
    /// Units: positive for sale/return/receipt (the kind gives the sign), signed for adjustment.
    qty: i64,
    #[serde(default)]
    client_key: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

/// The signed stock change of a movement, with `qty` checked against its range first (so no
/// sign flip or absolute value can overflow).
pub(super) fn movement_delta(kind: MovementKind, qty: i64) -> Result<i64, ApiError> {
    match kind {
        MovementKind::Adjustment => {
            in_range("qty", qty, -MAX_QTY..=MAX_QTY, "units")?;
            if qty == 0 {
                return Err(ApiError::invalid(
                    "qty",
                    "an adjustment of 0 changes nothing",
                ));
            }
        }
        _ if qty <= 0 => {
            return Err(ApiError::invalid(
                "qty",
                format!(
                    "{qty}: must be positive for a {}; the kind gives the direction",
                    kind.name()
                ),
            ));
        }
        _ => {
            in_range("qty", qty, 1..=MAX_QTY, "units")?;
        }
    }
    kind.delta(qty)
        .ok_or_else(|| ApiError::invalid("qty", "out of range"))
}

pub(super) async fn post_movement(
    State(state): State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = FactRequest::<MovementBody>::parse(route::MOVEMENTS, &[], body)?;
    let body = &request.body;
    let delta = movement_delta(body.kind, body.qty)?;
    let key = idempotency_key(&headers, body.client_key.as_deref(), false)?;
    bounded_text("note", &body.note, 256)?;
    let item = match (&body.sku, &body.gtin) {
        (None, None) => return Err(ApiError::invalid("sku", "give `sku` or `gtin`")),
        (Some(_), gtin) => {
            // `sku` wins, but a `gtin` sent beside it is still checked: a malformed field is
            // refused wherever it stands (docs/openapi.json says so).
            if let Some(code) = gtin {
                lookup::gtin_of_code(code)
                    .map_err(|_| ApiError::invalid("gtin", "not a valid GTIN or barcode"))?;
            }
            item_ref("movement", &body.sku, &None)?
        }
        (None, Some(_)) => item_ref("movement", &None, &body.gtin)
            .map_err(|_| ApiError::invalid("gtin", "not a valid GTIN or barcode"))?,
    };
    // A sale of an item the replica does not know is still a sale: it is recorded for
    // central, just without a local stock effect, rather than refused.
    let (sku, gtin) = state
        .readers
        .run(move |conn| resolve(conn, &item))
        .await?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let by = caller_name(&caller);
    let claim = request.claim(&by, key.as_deref());
    let fact = StoreFact::Movement(StockMovementRecorded {
        kind: body.kind,
        stock_applied: sku.is_some(),
        sku,
        gtin,
        qty: body.qty,
        delta,
        client_key: key,
        note: body.note.clone(),
        by,
    });
    record(&state, fact, claim).await
}

// ---------------------------------------------------------------------------------------
// POST /v1/sales

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaleBody {
    #[serde(default)]
    client_key: Option<String>,
    /// The till's own receipt number, for central's reconciliation.
    #[serde(default)]
    receipt: Option<String>,
    lines: Vec<LineBody>,
    #[serde(default)]
    currency: Option<String>,
    /// The customer buying, when the till knows them (loyalty card scanned, account named).
    #[serde(default)]
    customer: Option<super::loyalty::CustomerBody>,
}

pub(super) fn yes() -> bool {
    true
}

fn check_currency(currency: &Option<String>) -> Result<(), ApiError> {
    match currency {
        Some(c) if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) => Err(
            ApiError::invalid("currency", "an ISO 4217 code such as \"EUR\""),
        ),
        _ => Ok(()),
    }
}

pub(super) async fn post_sale(
    State(state): State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut request = FactRequest::<SaleBody>::parse(route::SALES, &[], body)?;
    let key = idempotency_key(&headers, request.body.client_key.as_deref(), true)?;
    bounded_text("receipt", &request.body.receipt, 64)?;
    check_currency(&request.body.currency)?;
    if let Some(i) = request
        .body
        .lines
        .iter()
        .position(|l| l.original_line.is_some())
    {
        return Err(ApiError::invalid(
            &format!("lines[{i}].original_line"),
            "only a return names an original line",
        ));
    }
    let customer = named_customer(&state, &mut request, |b| &b.customer).await?;
    let by = caller_name(&caller);
    let claim = request.claim(&by, key.as_deref());
    let SaleBody {
        receipt,
        lines,
        currency,
        ..
    } = request.body;
    let lines = resolve_lines(&state, lines).await?;
    let mut recorded = SaleRecorded {
        receipt,
        total_minor: ticket_total(&lines)?,
        lines,
        currency,
        customer_id: customer.as_ref().map(|c| c.0.clone()),
        earn_per_minor_units: None,
        points_earned: None,
        client_key: key,
        by,
    };
    // The rule in effect now, written into the payload: central recomputes from the event.
    returns::apply_earn(&mut recorded, state.tunables.earn_per_minor_units())
        .map_err(|e| ApiError::invalid("lines", e.to_string()))?;
    let recorded_skus = super::pickups::stocked_skus(&recorded);
    let fact = StoreFact::Sale(Sale {
        recorded,
        loyalty: customer.map(|c| c.1),
        balance_after: None,
        reserved: super::pickups::reserved_for(&state, &recorded_skus).await?,
    });
    record(&state, fact, claim).await
}

/// The customer a ticket names, resolved against the replica (a card is hashed at once and
/// never kept; an unknown card or id is a 404 and nothing is recorded) and bound into the
/// request's fingerprint. Only central's customer id goes into the fact.
pub(super) async fn named_customer<T: serde::de::DeserializeOwned>(
    state: &ApiState,
    request: &mut FactRequest<T>,
    customer: impl Fn(&T) -> &Option<super::loyalty::CustomerBody>,
) -> Result<Option<(String, LoyaltyBaseline)>, ApiError> {
    let Some(body) = customer(&request.body) else {
        return Ok(None);
    };
    let who = body.reference("customer")?;
    let found = super::loyalty::customer(state, who).await?;
    request.bind_customer(&found.customer_id);
    let baseline = LoyaltyBaseline {
        central_balance: found.loyalty.central_balance,
        watermark_seq: found.loyalty.watermark_seq,
    };
    Ok(Some((found.customer_id, baseline)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sale_lowers_stock_and_a_receipt_raises_it() {
        assert_eq!(movement_delta(MovementKind::Sale, 2).ok(), Some(-2));
        assert_eq!(movement_delta(MovementKind::Receipt, 5).ok(), Some(5));
        assert_eq!(movement_delta(MovementKind::Return, 1).ok(), Some(1));
        assert_eq!(movement_delta(MovementKind::Adjustment, -3).ok(), Some(-3));
    }

    #[test]
    fn a_negative_sale_an_empty_adjustment_or_one_past_the_range_is_refused() {
        assert!(movement_delta(MovementKind::Sale, -2).is_err());
        assert!(movement_delta(MovementKind::Adjustment, 0).is_err());
        assert!(movement_delta(MovementKind::Receipt, MAX_QTY + 1).is_err());
        // |i64::MIN| does not exist: an absolute value taken first would wrap.
        assert!(movement_delta(MovementKind::Adjustment, i64::MIN).is_err());
        assert!(movement_delta(MovementKind::Adjustment, i64::MAX).is_err());
        assert!(movement_delta(MovementKind::Sale, i64::MAX).is_err());
    }

    #[test]
    fn a_text_limit_counts_characters_not_bytes_and_refuses_control_characters() {
        assert!(bounded_text("receipt", &Some("é".repeat(64)), 64).is_ok());
        assert!(bounded_text("receipt", &Some("é".repeat(65)), 64).is_err());
        assert!(bounded_text("receipt", &Some("R\u{85}1".into()), 64).is_err());
        assert!(bounded_text("receipt", &Some(String::new()), 64).is_err());
        assert!(bounded_text("receipt", &None, 64).is_ok());
    }

    #[test]
    fn a_ticket_total_needs_every_price_and_sums_them() {
        let line = |qty, price| FactLine {
            sku: None,
            gtin: None,
            qty,
            unit_price_minor: price,
            stock_applied: false,
            original_line: None,
            points: None,
        };
        assert_eq!(
            ticket_total(&[line(2, Some(150)), line(1, Some(99))]).ok(),
            Some(Some(399))
        );
        assert_eq!(
            ticket_total(&[line(2, Some(150)), line(1, None)]).ok(),
            Some(None)
        );
        assert!(ticket_total(&[line(i64::MAX, Some(2))]).is_err());
    }
}
