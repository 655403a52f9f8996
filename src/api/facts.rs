//! Store facts posted by tills and back office: stock movements, sales, returns (cross-channel
//! included) and RFID cycle counts.
//!
//! Every handler follows one path (`record`): validate the whole body, resolve codes on a
//! reader, then hand one event with all its local effects to the outbox writer. A 2xx means the
//! event and its effects are durable together; a retry with the same idempotency key gets the
//! first answer back, byte for byte, and changes nothing.

use super::auth::Caller;
use super::{ApiError, ApiState, error};
use crate::decode::gtin::Gtin14;
use crate::outbox::{AppendRequest, EventDraft, LocalEffect, MovementKind, RetentionClass};
use crate::replica::lookup;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::sync::Arc;

pub(super) const MAX_QTY: i64 = 1_000_000;
/// A till ticket or a count larger than this is a client bug, not a sale.
const MAX_LINES: usize = 500;
/// An RFID count of a whole store floor stays well under this.
const MAX_EPCS: usize = 50_000;
const KEY_MAX: usize = 128;
const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The idempotency key of a request: the body's `client_key` or the `Idempotency-Key` header.
pub(super) fn idempotency_key(
    headers: &HeaderMap,
    body_key: Option<&str>,
    required: bool,
) -> Result<Option<String>, ApiError> {
    let header = match headers.get(IDEMPOTENCY_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::invalid("Idempotency-Key", "must be printable ASCII"))?,
        ),
    };
    let key = match (body_key, header) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::invalid(
                "client_key",
                "differs from the Idempotency-Key header; send one of them",
            ));
        }
        (Some(k), _) | (None, Some(k)) => Some(k.to_owned()),
        (None, None) if required => {
            return Err(ApiError::invalid(
                "client_key",
                "required: a key unique to this ticket (e.g. till + receipt number), in the \
                 body or as an Idempotency-Key header, so that a retry is not counted twice",
            ));
        }
        (None, None) => None,
    };
    bounded_text("client_key", &key, KEY_MAX)?;
    Ok(key)
}

pub(super) fn bounded_text(
    field: &str,
    value: &Option<String>,
    max: usize,
) -> Result<(), ApiError> {
    match value {
        Some(v) if v.is_empty() || v.len() > max || v.chars().any(char::is_control) => Err(
            ApiError::invalid(field, format!("must be 1 to {max} printable characters")),
        ),
        _ => Ok(()),
    }
}

/// One store fact ready for the outbox.
pub(super) struct Fact {
    pub event_type: &'static str,
    pub payload: Value,
    pub effects: Vec<LocalEffect>,
    pub key: Option<String>,
    /// What the client is told (besides id, seq, durable, replayed), kept with the key.
    pub answer: Map<String, Value>,
}

/// Append `fact` and answer 201, or 200 with the first answer when its key was seen before.
pub(super) async fn record(state: &ApiState, fact: Fact) -> Result<Response, ApiError> {
    let internal = |e: serde_json::Error| ApiError::internal(e.to_string());
    let answer_json = serde_json::to_string(&fact.answer).map_err(internal)?;
    let request = AppendRequest {
        draft: EventDraft {
            event_type: fact.event_type,
            schema: 1,
            class: RetentionClass::StoreFact,
            payload_json: serde_json::to_string(&fact.payload).map_err(internal)?,
        },
        effects: fact.effects,
        answer_json: fact.key.as_ref().map(|_| answer_json),
        client_key: fact.key,
    };
    let appended = state.outbox.append(request).await?;
    let mut body = Map::new();
    body.insert("id".into(), json!(appended.id));
    body.insert("seq".into(), json!(appended.seq));
    body.insert("durable".into(), json!(true));
    body.insert("replayed".into(), json!(appended.replayed));
    let (status, answer) = if appended.replayed {
        // Keys recorded before answers were kept have none: the ids still identify the fact.
        let first = appended
            .first_answer
            .and_then(|text| serde_json::from_str::<Map<String, Value>>(&text).ok())
            .unwrap_or_default();
        (StatusCode::OK, first)
    } else {
        (StatusCode::CREATED, fact.answer)
    };
    for (k, v) in answer {
        body.entry(k).or_insert(v);
    }
    Ok((status, axum::Json(Value::Object(body))).into_response())
}

/// The caller's token name, recorded in the event (which till did it).
pub(super) fn caller_name(caller: &Option<Extension<Caller>>) -> String {
    caller
        .as_ref()
        .map(|Extension(Caller(name))| name.to_string())
        .unwrap_or_else(|| "local".to_owned())
}

// ---------------------------------------------------------------------------------------
// Lines: what was sold, returned or counted.

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
}

#[derive(Clone, Serialize)]
pub(super) struct Line {
    /// `None` when the replica does not know the item: still recorded, without stock effect.
    pub sku: Option<String>,
    pub gtin: Option<Gtin14>,
    pub qty: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_price_minor: Option<i64>,
    pub stock_applied: bool,
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
            if line.qty <= 0 || line.qty > MAX_QTY {
                return Err(ApiError::invalid(
                    &format!("{at}.qty"),
                    format!("{}: must be 1 to {MAX_QTY} units", line.qty),
                ));
            }
            if line.unit_price_minor.is_some_and(|p| p < 0) {
                return Err(ApiError::invalid(
                    &format!("{at}.unit_price_minor"),
                    "must not be negative",
                ));
            }
            item_ref(&at, &line.sku, &line.code)
        })
        .collect()
}

/// Resolve every line on one reader, so a ticket sees one replica snapshot.
async fn resolve_lines(state: &ApiState, lines: Vec<LineBody>) -> Result<Vec<Line>, ApiError> {
    let items = check_lines(&lines)?;
    state
        .readers
        .run(move |conn| {
            lines
                .iter()
                .zip(&items)
                .map(|(line, item)| {
                    let (sku, gtin) = resolve(conn, item)?;
                    Ok(Line {
                        // A barcode the replica does not know has no SKU: the line is
                        // recorded for central without a local stock effect.
                        stock_applied: sku.is_some(),
                        sku,
                        gtin,
                        qty: line.qty,
                        unit_price_minor: line.unit_price_minor,
                    })
                })
                .collect::<Result<Vec<Line>, rusqlite::Error>>()
        })
        .await?
        .map_err(|e| ApiError::internal(format!("replica read failed: {e}")))
}

fn movement_effects(lines: &[Line], kind: MovementKind) -> Vec<LocalEffect> {
    lines
        .iter()
        .filter_map(|line| {
            let sku = line.sku.clone()?;
            let delta = match kind {
                MovementKind::Sale => -line.qty,
                _ => line.qty,
            };
            Some(LocalEffect::StockMovement { sku, delta, kind })
        })
        .collect()
}

fn lines_json(lines: &[Line]) -> Value {
    serde_json::to_value(lines).unwrap_or(Value::Null)
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

pub(super) fn movement_delta(kind: MovementKind, qty: i64) -> Result<i64, ApiError> {
    if qty.abs() > MAX_QTY {
        return Err(ApiError::invalid(
            "qty",
            format!("{qty} is beyond ±{MAX_QTY} units"),
        ));
    }
    match kind {
        MovementKind::Adjustment if qty == 0 => Err(ApiError::invalid(
            "qty",
            "an adjustment of 0 changes nothing",
        )),
        MovementKind::Adjustment => Ok(qty),
        _ if qty <= 0 => Err(ApiError::invalid(
            "qty",
            format!(
                "{qty}: must be positive for a {}; the kind gives the direction",
                kind.name()
            ),
        )),
        MovementKind::Sale => Ok(-qty),
        MovementKind::Return | MovementKind::Receipt => Ok(qty),
    }
}

pub(super) async fn post_movement(
    State(state): State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: MovementBody = error::parse_json(body)?;
    let delta = movement_delta(body.kind, body.qty)?;
    let key = idempotency_key(&headers, body.client_key.as_deref(), false)?;
    bounded_text("note", &body.note, 256)?;
    let item = match (&body.sku, &body.gtin) {
        (None, None) => return Err(ApiError::invalid("sku", "give `sku` or `gtin`")),
        (Some(_), _) => item_ref("movement", &body.sku, &None)?,
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
    let payload = json!({
        "kind": body.kind,
        "sku": sku,
        "gtin": gtin.map(|g| g.to_string()),
        "qty": body.qty,
        "delta": delta,
        "client_key": key,
        "note": body.note,
        "stock_applied": sku.is_some(),
        "by": caller_name(&caller),
    });
    let mut answer = Map::new();
    answer.insert("sku".into(), json!(sku));
    answer.insert("stock_applied".into(), json!(sku.is_some()));
    let effects = sku
        .clone()
        .map(|sku| LocalEffect::StockMovement {
            sku,
            delta,
            kind: body.kind,
        })
        .into_iter()
        .collect();
    record(
        &state,
        Fact {
            event_type: "stock.movement",
            payload,
            effects,
            key,
            answer,
        },
    )
    .await
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
    let body: SaleBody = error::parse_json(body)?;
    let key = idempotency_key(&headers, body.client_key.as_deref(), true)?;
    bounded_text("receipt", &body.receipt, 64)?;
    check_currency(&body.currency)?;
    let lines = resolve_lines(&state, body.lines).await?;
    let total_minor: Option<i64> = lines
        .iter()
        .map(|l| l.unit_price_minor.map(|p| p.saturating_mul(l.qty)))
        .sum();
    let payload = json!({
        "receipt": body.receipt,
        "lines": lines_json(&lines),
        "total_minor": total_minor,
        "currency": body.currency,
        "client_key": key,
        "by": caller_name(&caller),
    });
    let mut answer = Map::new();
    answer.insert("lines".into(), lines_json(&lines));
    answer.insert("total_minor".into(), json!(total_minor));
    record(
        &state,
        Fact {
            event_type: "sale.recorded",
            payload,
            effects: movement_effects(&lines, MovementKind::Sale),
            key,
            answer,
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------
// POST /v1/returns

#[derive(Deserialize, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Channel {
    Store,
    Web,
    App,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Origin {
    channel: Channel,
    /// The original order or receipt; required for a web or app order.
    #[serde(default)]
    order_id: Option<String>,
    #[serde(default)]
    store: Option<String>,
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
    origin: Option<Origin>,
    #[serde(default)]
    reason: Option<String>,
    /// Damaged goods are recorded but not put back on sale.
    #[serde(default = "yes")]
    restock: bool,
}

fn yes() -> bool {
    true
}

pub(super) async fn post_return(
    State(state): State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: ReturnBody = error::parse_json(body)?;
    let key = idempotency_key(&headers, body.client_key.as_deref(), true)?;
    bounded_text("receipt", &body.receipt, 64)?;
    bounded_text("reason", &body.reason, 256)?;
    let channel = body.origin.as_ref().map_or(Channel::Store, |o| o.channel);
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
    let mut lines = resolve_lines(&state, body.lines).await?;
    if !body.restock {
        for line in &mut lines {
            line.stock_applied = false;
        }
    }
    let effects = if body.restock {
        movement_effects(&lines, MovementKind::Return)
    } else {
        Vec::new()
    };
    let origin = body
        .origin
        .as_ref()
        .map(|o| json!({"channel": o.channel, "order_id": o.order_id, "store": o.store}));
    let payload = json!({
        "receipt": body.receipt,
        "lines": lines_json(&lines),
        "origin": origin.clone().unwrap_or(json!({"channel": "store"})),
        "cross_channel": channel != Channel::Store,
        "reason": body.reason,
        "restocked": body.restock,
        "client_key": key,
        "by": caller_name(&caller),
    });
    let mut answer = Map::new();
    answer.insert("lines".into(), lines_json(&lines));
    answer.insert("cross_channel".into(), json!(channel != Channel::Store));
    answer.insert("restocked".into(), json!(body.restock));
    record(
        &state,
        Fact {
            event_type: "return.recorded",
            payload,
            effects,
            key,
            answer,
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------
// POST /v1/cycle-counts

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountLine {
    #[serde(default)]
    sku: Option<String>,
    #[serde(default)]
    code: Option<String>,
    counted: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CycleCountBody {
    #[serde(default)]
    client_key: Option<String>,
    #[serde(default)]
    zone: Option<String>,
    /// Counted quantities per item…
    #[serde(default)]
    counts: Option<Vec<CountLine>>,
    /// …or the EPCs an RFID sweep read (hex); SGTIN tags are counted per GTIN.
    #[serde(default)]
    epcs: Option<Vec<String>>,
    /// Set local stock to the count (an adjustment per differing item). Off: record only.
    #[serde(default = "yes")]
    apply: bool,
}

#[derive(Serialize)]
struct CountResult {
    sku: Option<String>,
    gtin: Option<Gtin14>,
    counted: i64,
    /// Local on-hand when the count was recorded; `None` when the item has no stock record.
    expected: Option<i64>,
    delta: Option<i64>,
}

/// Count EPCs per GTIN; each tag counts once however often it was read. Tags that are not
/// SGTIN (or do not decode) are reported, not counted.
/// Tags counted per GTIN, and the tags that could not be counted (with why).
type EpcCount = (Vec<(Gtin14, i64)>, Vec<Value>);

fn count_epcs(epcs: &[String]) -> Result<EpcCount, ApiError> {
    if epcs.len() > MAX_EPCS {
        return Err(ApiError::invalid(
            "epcs",
            format!("at most {MAX_EPCS} tags per count"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut per_gtin: std::collections::BTreeMap<i64, (Gtin14, i64)> = Default::default();
    let mut ignored = Vec::new();
    for hex in epcs {
        let normalised = hex.trim().to_ascii_uppercase();
        if !seen.insert(normalised.clone()) {
            continue;
        }
        match crate::decode::epc::decode_epc_hex(&normalised) {
            Ok(tag) => match tag.gtin {
                Some(gtin) => per_gtin.entry(gtin.as_i64()).or_insert((gtin, 0)).1 += 1,
                None => ignored.push(
                    json!({"epc": normalised, "reason": format!("{} carries no GTIN", tag.scheme)}),
                ),
            },
            Err(e) => ignored.push(json!({"epc": normalised, "reason": e.to_string()})),
        }
    }
    Ok((per_gtin.into_values().collect(), ignored))
}

/// Local on-hand of a SKU: central's baseline plus local movements after its watermark.
fn on_hand(conn: &Connection, sku: &str) -> Result<Option<i64>, rusqlite::Error> {
    let baseline: Option<(i64, i64)> = conn
        .prepare_cached("SELECT on_hand, watermark_seq FROM stock WHERE sku = ?1")?
        .query_row([sku], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (central, watermark) = baseline.unwrap_or((0, 0));
    static LOCAL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!("SELECT {}", crate::outbox::movements_after("?1", "?2"))
    });
    let local: i64 = conn
        .prepare_cached(&LOCAL)?
        .query_row(rusqlite::params![sku, watermark], |r| r.get(0))?;
    Ok((baseline.is_some() || local != 0).then_some(central + local))
}

pub(super) async fn post_cycle_count(
    State(state): State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: CycleCountBody = error::parse_json(body)?;
    let key = idempotency_key(&headers, body.client_key.as_deref(), true)?;
    bounded_text("zone", &body.zone, 64)?;
    let (items, ignored, source) = match (&body.counts, &body.epcs) {
        (Some(counts), None) => {
            if counts.is_empty() || counts.len() > MAX_LINES {
                return Err(ApiError::invalid(
                    "counts",
                    format!("give 1 to {MAX_LINES} items"),
                ));
            }
            let mut items = Vec::with_capacity(counts.len());
            for (i, c) in counts.iter().enumerate() {
                let at = format!("counts[{i}]");
                if !(0..=MAX_QTY).contains(&c.counted) {
                    return Err(ApiError::invalid(
                        &format!("{at}.counted"),
                        format!("must be 0 to {MAX_QTY}"),
                    ));
                }
                items.push((item_ref(&at, &c.sku, &c.code)?, c.counted));
            }
            (items, Vec::new(), "manual")
        }
        (None, Some(epcs)) => {
            let (per_gtin, ignored) = count_epcs(epcs)?;
            let items = per_gtin
                .into_iter()
                .map(|(gtin, n)| (ItemRef::Gtin(gtin), n))
                .collect();
            (items, ignored, "rfid")
        }
        _ => {
            return Err(ApiError::invalid(
                "counts",
                "give exactly one of `counts` (per item) or `epcs` (an RFID sweep)",
            ));
        }
    };
    let results = state
        .readers
        .run(move |conn| {
            items
                .iter()
                .map(|(item, counted)| {
                    let (sku, gtin) = resolve(conn, item)?;
                    let expected = match &sku {
                        Some(sku) => on_hand(conn, sku)?,
                        None => None,
                    };
                    Ok(CountResult {
                        delta: expected.map(|e| counted - e),
                        sku,
                        gtin,
                        counted: *counted,
                        expected,
                    })
                })
                .collect::<Result<Vec<CountResult>, rusqlite::Error>>()
        })
        .await?
        .map_err(|e| ApiError::internal(format!("replica read failed: {e}")))?;
    // Unknown to stock so far: the count itself is the first local figure for the item.
    let effects: Vec<LocalEffect> = if body.apply {
        results
            .iter()
            .filter_map(|r| {
                let sku = r.sku.clone()?;
                let delta = r.delta.unwrap_or(r.counted);
                (delta != 0).then_some(LocalEffect::StockMovement {
                    sku,
                    delta,
                    kind: MovementKind::Adjustment,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let results_json = serde_json::to_value(&results).unwrap_or(Value::Null);
    let payload = json!({
        "zone": body.zone,
        "source": source,
        "items": results_json,
        "ignored_tags": ignored,
        "applied": body.apply,
        "client_key": key,
        "by": caller_name(&caller),
    });
    let mut answer = Map::new();
    answer.insert("items".into(), results_json);
    answer.insert("ignored_tags".into(), json!(ignored));
    answer.insert("adjustments".into(), json!(effects.len()));
    record(
        &state,
        Fact {
            event_type: "stock.cycle_count",
            payload,
            effects,
            key,
            answer,
        },
    )
    .await
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
    fn a_negative_sale_or_an_empty_adjustment_is_refused() {
        assert!(movement_delta(MovementKind::Sale, -2).is_err());
        assert!(movement_delta(MovementKind::Adjustment, 0).is_err());
        assert!(movement_delta(MovementKind::Receipt, MAX_QTY + 1).is_err());
    }

    #[test]
    fn a_tag_read_twice_counts_once_and_a_non_sgtin_tag_is_reported() {
        // SGTIN-96 from TDS examples (GTIN 80614141123458) read twice, plus an SSCC-96.
        let sgtin = "3074257BF7194E4000001A85".to_owned();
        let sscc = "3174257BF4499602D2000000".to_owned();
        let (counts, ignored) =
            count_epcs(&[sgtin.clone(), sgtin.to_lowercase(), sscc]).unwrap_or_default();
        assert_eq!(counts.len(), 1);
        assert_eq!(counts[0].1, 1);
        assert_eq!(ignored.len(), 1);
    }
}
