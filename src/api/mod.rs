//! The local HTTP API (axum), bound to loopback by default. Handlers never touch SQLite: reads
//! go through the reader pool, writes through the outbox writer, and a 2xx answer to a write
//! means the fact is durable.

mod error;
mod events;
mod metrics;

pub use error::ApiError;

use crate::cards::CardHasher;
use crate::decode::gtin::Gtin14;
use crate::outbox::{
    AppendRequest, EventDraft, LocalEffect, MovementKind, OutboxHandle, RetentionClass,
};
use crate::replica::lookup::{self, Answer};
use crate::replica::{StreamState, stream_states};
use crate::storage::{self, ReaderPool};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything a handler may use. Cheap to share; owns no blocking resource itself.
pub struct ApiState {
    pub agent_id: String,
    /// Device board and live reads (the core's read consumer).
    pub reads: Arc<crate::reads::ReadContext>,
    pub readers: ReaderPool,
    pub outbox: OutboxHandle,
    pub hasher: CardHasher,
    pub stale_after: Duration,
    pub started: Instant,
    pub sync: Arc<crate::sync::SyncShared>,
    /// Flips to true when the agent shuts down: long-lived streams end so the HTTP server can.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Ends `stream` when the agent starts shutting down.
pub(crate) fn until_shutdown<S: futures_util::Stream>(
    stream: S,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> impl futures_util::Stream<Item = S::Item> {
    use futures_util::StreamExt;
    stream.take_until(async move {
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    })
}

pub fn router(state: Arc<ApiState>, max_body_bytes: usize) -> Router {
    let http = Arc::new(metrics::HttpMetrics::default());
    let scrape = {
        let http = Arc::clone(&http);
        move |state: State<Arc<ApiState>>| metrics::metrics(state, Arc::clone(&http))
    };
    let routes: [(&'static str, MethodRouter<Arc<ApiState>>); 9] = [
        ("/v1/health", get(health)),
        ("/v1/products/{code}", get(product)),
        ("/v1/customers/by-card/{id}", get(customer_by_card)),
        ("/v1/movements", post(post_movement)),
        (
            "/v1/alarms/{code}",
            axum::routing::delete(acknowledge_alarm),
        ),
        ("/v1/devices/live", get(live_reads)),
        ("/v1/events", get(events::events)),
        ("/v1/metrics", get(scrape)),
        ("/v1/outbox/requeue", post(requeue_dead_letters)),
    ];
    let mut router = Router::new();
    for (path, route) in routes {
        // Each route counts its requests under its own template (bounded label values).
        let label = metrics::RouteLabel {
            metrics: Arc::clone(&http),
            route: path,
        };
        router = router.route(path, route.layer(from_fn_with_state(label, metrics::track)));
    }
    let unmatched = metrics::RouteLabel {
        metrics: http,
        route: metrics::UNMATCHED,
    };
    router
        .fallback(not_found.layer(from_fn_with_state(unmatched, metrics::track)))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see docs/api.md")
}

async fn product(
    State(state): State<Arc<ApiState>>,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    let stale_after = state.stale_after;
    let answer = state
        .readers
        .run(move |conn| lookup::product_by_code(conn, &code, storage::now_unix_ms(), stale_after))
        .await??;
    Ok(answer_response(answer))
}

async fn customer_by_card(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let stale_after = state.stale_after;
    let hasher = state.hasher.clone();
    let answer = state
        .readers
        .run(move |conn| {
            lookup::customer_by_card(conn, &hasher, &id, storage::now_unix_ms(), stale_after)
        })
        .await??;
    Ok(answer_response(answer))
}

/// Found → 200 (with `freshness.stale` telling whether it may be out of date), not found → 404.
fn answer_response<T: Serialize>(answer: Answer<T>) -> Response {
    match answer {
        Answer::Found(body) => Json(body).into_response(),
        Answer::NotFound { freshness } => {
            let mut err = ApiError::not_found("no such item in the replica");
            err.details = serde_json::to_value(freshness).ok();
            err.into_response()
        }
    }
}

/// A stock movement as a till or back office posts it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MovementBody {
    kind: MovementKind,
    #[serde(default)]
    sku: Option<String>,
    #[serde(default)]
    gtin: Option<String>,
    /// Units: positive for sale/return/receipt (the kind gives the sign), signed for adjustment.
    qty: i64,
    /// Idempotency key chosen by the client (e.g. till + receipt + line): a retry returns the
    /// first answer instead of counting the movement twice.
    #[serde(default)]
    client_key: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Serialize)]
struct MovementPayload<'a> {
    kind: MovementKind,
    sku: Option<&'a str>,
    gtin: Option<String>,
    qty: i64,
    delta: i64,
    client_key: Option<&'a str>,
    note: Option<&'a str>,
    stock_applied: bool,
}

#[derive(Serialize)]
struct MovementAnswer {
    id: uuid::Uuid,
    seq: u64,
    durable: bool,
    replayed: bool,
    sku: Option<String>,
    stock_applied: bool,
}

const MAX_QTY: i64 = 1_000_000;

fn movement_delta(kind: MovementKind, qty: i64) -> Result<i64, ApiError> {
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

fn bounded_text(field: &str, value: &Option<String>, max: usize) -> Result<(), ApiError> {
    match value {
        Some(v) if v.is_empty() || v.len() > max || v.chars().any(char::is_control) => Err(
            ApiError::invalid(field, format!("must be 1 to {max} printable characters")),
        ),
        _ => Ok(()),
    }
}

async fn post_movement(
    State(state): State<Arc<ApiState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: MovementBody = error::parse_json(body)?;
    let delta = movement_delta(body.kind, body.qty)?;
    bounded_text("sku", &body.sku, 64)?;
    bounded_text("client_key", &body.client_key, 128)?;
    bounded_text("note", &body.note, 256)?;
    let gtin = match &body.gtin {
        Some(code) => {
            Some(Gtin14::parse(code.trim()).map_err(|e| ApiError::invalid("gtin", e.to_string()))?)
        }
        None => None,
    };
    // A sale of an item the replica does not know is still a sale: it is recorded for
    // central, just without a local stock effect, rather than refused.
    let sku = match (&body.sku, gtin) {
        (Some(sku), _) => Some(sku.clone()),
        (None, Some(gtin)) => state
            .readers
            .run(move |conn| sku_of(conn, gtin))
            .await?
            .map_err(|e| ApiError::internal(e.to_string()))?,
        (None, None) => return Err(ApiError::invalid("sku", "give `sku` or `gtin`")),
    };
    let payload = MovementPayload {
        kind: body.kind,
        sku: sku.as_deref(),
        gtin: gtin.map(|g| g.to_string()),
        qty: body.qty,
        delta,
        client_key: body.client_key.as_deref(),
        note: body.note.as_deref(),
        stock_applied: sku.is_some(),
    };
    let payload_json =
        serde_json::to_string(&payload).map_err(|e| ApiError::internal(e.to_string()))?;
    let request = AppendRequest {
        draft: EventDraft {
            event_type: "stock.movement",
            schema: 1,
            class: RetentionClass::StoreFact,
            payload_json,
        },
        effect: sku.clone().map(|sku| LocalEffect::StockMovement {
            sku,
            delta,
            kind: body.kind,
        }),
        client_key: body.client_key.clone(),
    };
    let appended = state.outbox.append(request).await?;
    // A replay answers with what was recorded the first time, whatever this retry's body says.
    let recorded_sku = if appended.replayed {
        let seq = appended.seq;
        state
            .readers
            .run(move |conn| recorded_movement_sku(conn, seq))
            .await?
            .map_err(|e| ApiError::internal(e.to_string()))?
    } else {
        sku
    };
    let status = if appended.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let answer = MovementAnswer {
        id: appended.id,
        seq: appended.seq,
        durable: true,
        replayed: appended.replayed,
        stock_applied: recorded_sku.is_some(),
        sku: recorded_sku,
    };
    Ok((status, Json(answer)).into_response())
}

fn recorded_movement_sku(
    conn: &rusqlite::Connection,
    seq: u64,
) -> Result<Option<String>, rusqlite::Error> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached("SELECT sku FROM facts.stock_movements WHERE seq = ?1")?
        .query_row([seq as i64], |r| r.get(0))
        .optional()
}

fn sku_of(conn: &rusqlite::Connection, gtin: Gtin14) -> Result<Option<String>, rusqlite::Error> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached("SELECT sku FROM products WHERE gtin = ?1")?
        .query_row([gtin.as_i64()], |r| r.get(0))
        .optional()
}

/// `GET /v1/devices/live`: decoded reads and device status changes as they happen, one JSON
/// object per line (NDJSON), for `relais devices watch` and POS software. A subscriber that
/// falls behind loses the oldest reads, never blocks the devices.
async fn live_reads(State(state): State<Arc<ApiState>>) -> Response {
    let receiver = state.reads.live.subscribe();
    let stream = futures_util::stream::unfold(receiver, |mut rx| async move {
        let line = match rx.recv().await {
            Ok(read) => {
                let mut line = serde_json::to_vec(&read).unwrap_or_default();
                line.push(b'\n');
                line
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                format!("{{\"kind\":\"lagged\",\"missed\":{n}}}\n").into_bytes()
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), rx))
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(until_shutdown(stream, state.shutdown.clone())),
    )
        .into_response()
}

/// `DELETE /v1/alarms/{code}`: the operator has dealt with it (204), or no such alarm (404).
async fn acknowledge_alarm(
    State(state): State<Arc<ApiState>>,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    if state.outbox.clear_alarm(&code).await? {
        tracing::info!(%code, "alarm acknowledged");
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!("no alarm {code:?} is raised")))
    }
}

/// Put the events the broker refused back in line, once the cause (ACL, credentials) is fixed.
async fn requeue_dead_letters(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let requeued = state.outbox.requeue_dead_letters().await?;
    tracing::info!(requeued, "dead letters requeued by an operator");
    Ok(Json(serde_json::json!({ "requeued": requeued })).into_response())
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    agent: String,
    version: &'static str,
    uptime_s: u64,
    outbox: crate::outbox::OutboxStats,
    oldest_unsent_store_fact_age_s: Option<f64>,
    replica: Vec<lookup::StreamFreshness>,
    alarms: Vec<crate::outbox::writer::Alarm>,
    devices: Vec<crate::reads::DeviceStatus>,
    sync: crate::sync::SyncStatus,
    dead_letters: u64,
}

/// Version and last apply of every replica stream, read on a reader thread.
pub(crate) async fn replica_states(state: &ApiState) -> Result<Vec<StreamState>, ApiError> {
    state
        .readers
        .run(|conn| stream_states(conn))
        .await?
        .map_err(|e| ApiError::internal(format!("replica read failed: {e}")))
}

async fn health(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let states = replica_states(&state).await?;
    let now = storage::now_unix_ms();
    let fresh = lookup::freshness(
        &states,
        &crate::replica::Stream::ALL,
        now,
        state.stale_after,
    );
    let outbox = state.outbox.stats();
    let alarms = state.outbox.alarms();
    let status = if alarms.is_empty() && !fresh.stale {
        "ok"
    } else {
        "degraded"
    };
    Ok(Json(Health {
        status,
        agent: state.agent_id.clone(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: state.started.elapsed().as_secs(),
        oldest_unsent_store_fact_age_s: outbox.oldest_store_fact_age_s(now),
        outbox,
        replica: fresh.streams,
        alarms,
        devices: state.reads.devices(),
        sync: state.sync.status(),
        dead_letters: state.outbox.dead_letters(),
    })
    .into_response())
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
}
