//! A customer's consent changed at the till: `POST /v1/customers/{customer_id}/consent`.
//!
//! The change is a store fact (`consent.changed`, named by central's customer id only) and takes
//! effect here at once: lookups show the newer of central's choice and the changes recorded
//! here (`domain::consent::in_effect`), so a customer who just allowed marketing sees their
//! offers on the next lookup, and one who withdrew it no longer does.

use super::auth::Caller;
use super::facts::{bounded_text, caller_name, record};
use super::idempotency::{FactRequest, idempotency_key, route};
use super::loyalty::{CustomerRef, customer};
use super::{ApiError, ApiState};
use crate::domain::{ConsentChanged, ConsentPurpose, StoreFact};
use crate::storage;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentBody {
    #[serde(default)]
    client_key: Option<String>,
    purpose: ConsentPurpose,
    granted: bool,
}

/// The agent's clock as RFC 3339 with milliseconds: the date central compares.
fn rfc3339_ms(unix_ms: i64) -> String {
    let at = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

pub(super) async fn post_consent(
    State(state): State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    Path(customer_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = FactRequest::<ConsentBody>::parse(route::CONSENT, &[customer_id.as_str()], body)?;
    let body = &request.body;
    let key = idempotency_key(&headers, body.client_key.as_deref(), true)?;
    bounded_text("customer_id", &Some(customer_id.clone()), 64)?;
    let found = customer(&state, CustomerRef::Id(customer_id)).await?;
    let at_ms = storage::now_unix_ms();
    let by = caller_name(&caller);
    let claim = request.claim(&by, key.as_deref());
    let fact = StoreFact::ConsentChanged(ConsentChanged {
        customer_id: found.customer_id,
        purpose: body.purpose,
        granted: body.granted,
        at: rfc3339_ms(at_ms),
        at_ms,
        client_key: key,
        by,
    });
    record(&state, fact, claim).await
}
