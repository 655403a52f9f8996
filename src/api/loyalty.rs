//! Loyalty earn and burn at the till: `POST /v1/loyalty/earn`, `POST /v1/loyalty/burn`.
//!
//! `balance = central balance@watermark + Σ local operations after it`. A burn is checked on the
//! outbox writer (one thread, so two tills cannot both spend the last points) against that
//! balance and against `loyalty.offline_burn_cap`: the points burned here that central has not
//! confirmed yet. That cap bounds what a store cut off from central can lose to the same points
//! being spent in two stores; online, central's loyalty stream confirms burns within seconds.

use super::auth::Caller;
use super::facts::{bounded_text, caller_name, in_range, record};
use super::idempotency::{FactRequest, idempotency_key, route};
use super::{ApiError, ApiState};
use crate::domain::{LoyaltyBaseline, LoyaltyOperation, LoyaltyRecorded, StoreFact};
use crate::replica::lookup::{self, Answer, CustomerAnswer};
use crate::storage;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;

/// Far above any real basket's points; a larger figure is a client bug.
const MAX_POINTS: i64 = 10_000_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoyaltyBody {
    #[serde(default)]
    client_key: Option<String>,
    /// The card as read (hashed on the way in, never stored or logged)…
    #[serde(default)]
    card: Option<String>,
    /// …or central's customer id.
    #[serde(default)]
    customer_id: Option<String>,
    points: i64,
    /// The sale this operation belongs to.
    #[serde(default)]
    receipt: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Operation {
    Earn,
    Burn,
}

pub(super) async fn post_earn(
    state: State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    operation(state, caller, headers, body, Operation::Earn).await
}

pub(super) async fn post_burn(
    state: State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    operation(state, caller, headers, body, Operation::Burn).await
}

pub(super) enum CustomerRef {
    Card(String),
    Id(String),
}

/// Who a sale or a return is for: the card as read (hashed at once, never stored) or
/// central's customer id.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CustomerBody {
    #[serde(default)]
    card: Option<String>,
    #[serde(default)]
    customer_id: Option<String>,
}

impl CustomerBody {
    /// Exactly one of the two, each bounded; `field` prefixes the names in errors.
    pub(super) fn reference(&self, field: &str) -> Result<CustomerRef, ApiError> {
        customer_ref(field, &self.card, &self.customer_id)
    }
}

fn customer_ref(
    prefix: &str,
    card: &Option<String>,
    customer_id: &Option<String>,
) -> Result<CustomerRef, ApiError> {
    let name = |f: &str| {
        if prefix.is_empty() {
            f.to_owned()
        } else {
            format!("{prefix}.{f}")
        }
    };
    bounded_text(&name("customer_id"), customer_id, 64)?;
    bounded_text(&name("card"), card, 128)?;
    match (card, customer_id) {
        (Some(card), None) => Ok(CustomerRef::Card(card.clone())),
        (None, Some(id)) => Ok(CustomerRef::Id(id.clone())),
        _ => Err(ApiError::invalid(
            &name("card"),
            "give exactly one of `card` (as read) or `customer_id`",
        )),
    }
}

/// The customer as the replica knows them; 404 (nothing recorded) when it does not.
pub(super) async fn customer(
    state: &ApiState,
    who: CustomerRef,
) -> Result<CustomerAnswer, ApiError> {
    let hasher = state.hasher.clone();
    let stale_after = state.tunables.stale_after();
    let answer = state
        .readers
        .run(move |conn| {
            let now = storage::now_unix_ms();
            match who {
                CustomerRef::Card(card) => {
                    lookup::customer_by_card(conn, &hasher, &card, now, stale_after)
                }
                CustomerRef::Id(id) => lookup::customer_by_id(conn, &id, now, stale_after),
            }
        })
        .await??;
    match answer {
        Answer::Found(customer) => Ok(customer),
        Answer::NotFound { freshness } => {
            let mut err = ApiError::not_found(
                "no such customer in the replica (unknown card, or erased); the operation was \
                 not recorded",
            );
            err.details = serde_json::to_value(freshness).ok();
            Err(err)
        }
    }
}

async fn operation(
    State(state): State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    op: Operation,
) -> Result<Response, ApiError> {
    let route = match op {
        Operation::Earn => route::LOYALTY_EARN,
        Operation::Burn => route::LOYALTY_BURN,
    };
    let mut request = FactRequest::<LoyaltyBody>::parse(route, &[], body)?;
    let body = &request.body;
    let key = idempotency_key(&headers, body.client_key.as_deref(), true)?;
    bounded_text("receipt", &body.receipt, 64)?;
    in_range(
        "points",
        body.points,
        1..=MAX_POINTS,
        "points (the endpoint gives the direction)",
    )?;
    let who = customer_ref("", &body.card, &body.customer_id)?;
    let customer = customer(&state, who).await?;
    request.bind_customer(&customer.customer_id);
    let body = &request.body;
    let points = match op {
        Operation::Earn => body.points,
        Operation::Burn => -body.points,
    };
    let by = caller_name(&caller);
    let claim = request.claim(&by, key.as_deref());
    // The writer checks a burn against the balance and the cap, and computes the balance after
    // the operation, against every operation committed before it (`domain`).
    let fact = StoreFact::Loyalty(LoyaltyOperation {
        recorded: LoyaltyRecorded {
            customer_id: customer.customer_id,
            points,
            receipt: body.receipt.clone(),
            client_key: key,
            by,
        },
        baseline: LoyaltyBaseline {
            central_balance: customer.loyalty.central_balance,
            watermark_seq: customer.loyalty.watermark_seq,
        },
        burn_cap: state.tunables.offline_burn_cap(),
        balance_after: None,
    });
    record(&state, fact, claim).await
}
