//! The local HTTP API (axum), bound to loopback by default. Handlers never touch SQLite: reads
//! go through the reader pool, writes through the outbox writer, and a 2xx answer to a write
//! means the fact is durable.

pub mod auth;
mod counts;
mod coupons;
mod customers;
pub mod doctor_link;
mod error;
mod events;
mod facts;
mod guard;
mod idempotency;
mod loyalty;
mod metrics;
mod pickups;
mod returns;
pub mod server;
mod shipments;
mod status_page;

pub use auth::{ApiTokens, Gate, GateCell, Role, TokenFileError, token_secrets};
pub use error::ApiError;
pub use guard::BrowserPolicy;

use crate::cards::CardHasher;
use crate::outbox::OutboxHandle;
use crate::replica::lookup::{self, Answer};
use crate::replica::{StreamState, stream_states};
use crate::storage::{self, ReaderPool};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

/// Everything a handler may use. Cheap to share; owns no blocking resource itself.
pub struct ApiState {
    pub agent_id: String,
    /// Device board and live reads (the core's read consumer).
    pub reads: Arc<crate::reads::ReadContext>,
    pub readers: ReaderPool,
    pub outbox: OutboxHandle,
    pub hasher: CardHasher,
    /// Reloadable settings (staleness limit, burn cap, which config is in effect).
    pub tunables: Arc<crate::config::live::Tunables>,
    pub started: Instant,
    pub sync: Arc<crate::sync::SyncShared>,
    /// Flips to true when the agent shuts down: long-lived streams end so the HTTP server can.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// One place per open live stream (`api.max_streams`).
    pub streams: Arc<tokio::sync::Semaphore>,
    /// The key `relais doctor` proves itself with (`doctor_link`); `None` if it could not be
    /// written at start.
    pub doctor_key: Option<doctor_link::DoctorKey>,
}

/// The body of a live stream: it ends when the agent starts shutting down, and holds one of
/// `api.max_streams` places while open, so status pages left open (or a peer opening streams
/// in a loop) cannot pile up. Over the limit: 503 `too_many_streams`.
pub(crate) fn live_body<S>(state: &ApiState, stream: S) -> Result<axum::body::Body, ApiError>
where
    S: futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static,
{
    use futures_util::StreamExt;
    let place = Arc::clone(&state.streams)
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                "too many live streams are open (api.max_streams): close a status page or a \
                 watcher, then retry",
            )
        })?;
    let stream = until_shutdown(stream, state.shutdown.clone()).map(move |chunk| {
        let _held = &place;
        chunk
    });
    Ok(axum::body::Body::from_stream(stream))
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

/// The protected routes: every one needs a bearer token when tokens are configured.
/// `docs/openapi.json` documents each; a test keeps the two in step.
pub const PROTECTED_ROUTES: [&str; 24] = [
    "/v1/health",
    "/v1/products",
    "/v1/products/{code}",
    "/v1/customers/by-card/{id}",
    "/v1/movements",
    "/v1/sales",
    "/v1/returns",
    "/v1/cycle-counts",
    "/v1/loyalty/earn",
    "/v1/loyalty/burn",
    "/v1/pickups/{code}",
    "/v1/pickups/{code}/collect",
    "/v1/customers/{customer_id}/consent",
    "/v1/coupons/redeem",
    "/v1/pickups/{code}/prepare",
    "/v1/shipments/{order_id}/picked",
    "/v1/shipments/{order_id}/packed",
    "/v1/shipments/{order_id}/shipped",
    "/v1/alarms/{code}",
    "/v1/devices/live",
    "/v1/events",
    "/v1/metrics",
    "/v1/outbox/requeue",
    "/v1/openapi.json",
];

/// Protected routes the box's administrator may also call with the doctor key instead of a
/// token (`auth::require_token_or_box_key`).
pub const BOX_ADMIN_ROUTES: [&str; 2] = ["/v1/alarms/{code}", "/v1/outbox/requeue"];

/// Without a token: probes for systemd and load balancers (no data), and the status page's
/// static assets (the page itself asks for the token).
/// `/v1/health/doctor` answers only `relais doctor` holding this boot's key (`doctor_link`).
pub const PUBLIC_ROUTES: [&str; 3] = ["/v1/health/live", "/v1/health/ready", "/v1/health/doctor"];

pub fn router(state: Arc<ApiState>, max_body_bytes: usize, gate: Arc<GateCell>) -> Router {
    let http = Arc::new(metrics::HttpMetrics::default());
    let scrape = {
        let http = Arc::clone(&http);
        move |state: State<Arc<ApiState>>| metrics::metrics(state, Arc::clone(&http))
    };
    let protected: [MethodRouter<Arc<ApiState>>; 24] = [
        get(health),
        get(product_by_query),
        get(product),
        get(customer_by_card),
        post(facts::post_movement),
        post(facts::post_sale),
        post(returns::post_return),
        post(counts::post_cycle_count),
        post(loyalty::post_earn),
        post(loyalty::post_burn),
        get(pickups::get_pickup),
        post(pickups::collect),
        post(customers::post_consent),
        post(coupons::post_redeem),
        post(pickups::prepare),
        post(shipments::picked),
        post(shipments::packed),
        post(shipments::shipped),
        delete(acknowledge_alarm),
        get(live_reads),
        get(events::events),
        get(scrape),
        post(requeue_dead_letters),
        get(openapi),
    ];
    let public: [MethodRouter<Arc<ApiState>>; 3] = [get(live), get(ready), get(doctor_health)];
    let track = |route: &'static str, method_router: MethodRouter<Arc<ApiState>>| {
        // Each route counts its requests under its own template (bounded label values).
        let label = metrics::RouteLabel {
            metrics: Arc::clone(&http),
            route,
        };
        method_router.layer(from_fn_with_state(label, metrics::track))
    };
    let admin = auth::AdminGate {
        gate: Arc::clone(&gate),
        key: state.doctor_key.clone(),
    };
    let mut router = Router::new();
    for (path, route) in PROTECTED_ROUTES.into_iter().zip(protected) {
        let guarded = if BOX_ADMIN_ROUTES.contains(&path) {
            route.layer(from_fn_with_state(
                admin.clone(),
                auth::require_token_or_box_key,
            ))
        } else {
            route.layer(from_fn_with_state(Arc::clone(&gate), auth::require_token))
        };
        router = router.route(path, track(path, guarded));
    }
    for (path, route) in PUBLIC_ROUTES.into_iter().zip(public) {
        router = router.route(path, track(path, route));
    }
    let unmatched = metrics::RouteLabel {
        metrics: Arc::clone(&http),
        route: metrics::UNMATCHED,
    };
    router
        .merge(status_page::routes())
        .fallback(not_found.layer(from_fn_with_state(unmatched, metrics::track)))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(from_fn_with_state(Arc::clone(&gate), guard::browser_guard))
        .layer(from_fn_with_state(gate, auth::rate_limit))
        .with_state(state)
}

/// The API's OpenAPI 3 description, as in the repository.
const OPENAPI_JSON: &str = include_str!("../../docs/openapi.json");

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI_JSON,
    )
        .into_response()
}

/// Liveness: the process answers. Nothing else is checked, so a probe never restarts an
/// agent that is merely offline.
async fn live() -> Response {
    Json(serde_json::json!({"status": "live"})).into_response()
}

/// Readiness: storage answers (a replica read through the pool, which also reads the
/// outbox file) and the outbox writer is running. 503 otherwise.
async fn ready(State(state): State<Arc<ApiState>>) -> Response {
    let storage = replica_states(&state).await.is_ok();
    let writer = !state.outbox.is_closed();
    let ready = storage && writer;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({
            "status": if ready { "ready" } else { "not_ready" },
            "storage": storage,
            "outbox_writer": writer,
        })),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see docs/api.md")
}

async fn product(
    State(state): State<Arc<ApiState>>,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    let stale_after = state.tunables.stale_after();
    // Decoded on the async side (pure, microseconds): a bad code never takes a reader's turn.
    let decoded = lookup::decode_code(&code)?;
    let rules = state.tunables.scan_rules();
    let today = crate::scan::today();
    let answer = state
        .readers
        .run(move |conn| {
            lookup::product_by_scan(
                conn,
                &decoded,
                &rules,
                storage::now_unix_ms(),
                today,
                stale_after,
            )
        })
        .await??;
    Ok(answer_response(answer))
}

async fn customer_by_card(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let stale_after = state.tunables.stale_after();
    let hasher = state.hasher.clone();
    let answer = state
        .readers
        .run(move |conn| {
            lookup::customer_by_card(conn, &hasher, &id, storage::now_unix_ms(), stale_after)
        })
        .await??;
    Ok(answer_response(answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeQuery {
    code: String,
}

/// `GET /v1/products?code=…`: the same lookup, for barcode forms awkward in a path (a GS1
/// element string with GS characters, a Digital Link URI).
async fn product_by_query(
    state: State<Arc<ApiState>>,
    query: Result<Query<CodeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(CodeQuery { code }) =
        query.map_err(|_| ApiError::invalid("code", "give the barcode as ?code=…"))?;
    product(state, Path(code)).await
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

/// `GET /v1/devices/live`: decoded reads and device status changes as they happen, one JSON
/// object per line (NDJSON), for `relais devices watch` and POS software. A subscriber that
/// falls behind loses the oldest reads, never blocks the devices.
async fn live_reads(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let receiver = state.reads.live.subscribe();
    let stream = futures_util::stream::unfold(receiver, |mut rx| async move {
        let line = match rx.recv().await {
            Ok(read) => {
                let mut line = Vec::with_capacity(read.json.len() + 1);
                line.extend_from_slice(&read.json);
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
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        live_body(&state, stream)?,
    )
        .into_response())
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
    config: crate::config::live::ConfigInEffect,
}

/// Version and last apply of every replica stream, read on a reader thread.
pub(crate) async fn replica_states(state: &ApiState) -> Result<Vec<StreamState>, ApiError> {
    state
        .readers
        .run(stream_states)
        .await?
        .map_err(|e| ApiError::internal(format!("replica read failed: {e}")))
}

async fn health(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    Ok(Json(health_of(&state).await?).into_response())
}

/// `GET /v1/health/doctor`: the full health, for `relais doctor` only, proved both ways with the
/// key of this boot; 401 to anyone else.
async fn doctor_health(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let key = state.doctor_key.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the doctor key could not be written at start; see the agent's log",
        )
    })?;
    let challenge = headers
        .get(doctor_link::REQUEST_HEADER)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| key.accept(h))
        .ok_or_else(|| {
            ApiError::unauthorized(
                "this route answers `relais doctor` only (it proves itself with the key in the \
                 data directory); use /v1/health with a token",
            )
        })?;
    let body = serde_json::to_vec(&health_of(&state).await?)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let proof = key.prove(&challenge, &body);
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            ),
            (
                axum::http::HeaderName::from_static(doctor_link::PROOF_HEADER),
                axum::http::HeaderValue::from_str(&proof)
                    .map_err(|e| ApiError::internal(e.to_string()))?,
            ),
        ],
        body,
    )
        .into_response())
}

async fn health_of(state: &ApiState) -> Result<Health, ApiError> {
    let states = replica_states(state).await?;
    let now = storage::now_unix_ms();
    let fresh = lookup::freshness(
        &states,
        &crate::replica::Stream::ALL,
        now,
        state.tunables.stale_after(),
    );
    let outbox = state.outbox.stats();
    let alarms = state.outbox.alarms();
    let status = if alarms.is_empty() && !fresh.stale {
        "ok"
    } else {
        "degraded"
    };
    Ok(Health {
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
        config: state.tunables.in_effect(),
    })
}
