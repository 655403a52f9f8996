//! Coupons redeemed at the till: `POST /v1/coupons/redeem` records `coupon.redeemed`.
//!
//! The code is read into a coupon identity (`domain::coupons`); whether a single-use coupon was
//! already redeemed here is settled on the outbox writer against every redemption committed
//! before it, so two tills scanning the same coupon at once get one 201 and one 409. Central
//! deduplicates across stores (docs/contract.md).

use super::auth::Caller;
use super::facts::{bounded_text, caller_name, named_customer, record};
use super::idempotency::{FactRequest, idempotency_key, route};
use super::{ApiError, ApiState};
use crate::decode::MAX_BARCODE_LEN;
use crate::domain::coupons::parse_coupon;
use crate::domain::{CouponRedeemed, StoreFact};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeemBody {
    #[serde(default)]
    client_key: Option<String>,
    /// A GS1 coupon in any form a scanner sends, or a plain code.
    code: String,
    /// The ticket the coupon was taken on.
    #[serde(default)]
    receipt: Option<String>,
    #[serde(default)]
    customer: Option<super::loyalty::CustomerBody>,
}

pub(super) async fn post_redeem(
    State(state): State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut request = FactRequest::<RedeemBody>::parse(route::COUPON_REDEEM, &[], body)?;
    let body = &request.body;
    let key = idempotency_key(&headers, body.client_key.as_deref(), true)?;
    bounded_text("receipt", &body.receipt, 64)?;
    // Characters, as the document counts them; a GS1 code may carry GS separators, so control
    // characters are left to the decoder.
    if body.code.chars().nth(MAX_BARCODE_LEN).is_some() {
        return Err(ApiError::invalid(
            "code",
            format!("longer than {MAX_BARCODE_LEN} characters"),
        ));
    }
    let coupon = parse_coupon(&body.code).map_err(|e| ApiError::invalid("code", e.to_string()))?;
    let customer_id = named_customer(&state, &mut request, |b| &b.customer).await?;
    let body = &request.body;
    let by = caller_name(&caller);
    let claim = request.claim(&by, key.as_deref());
    let mut redeemed = CouponRedeemed::new(coupon);
    redeemed.receipt = body.receipt.clone();
    redeemed.customer_id = customer_id.map(|(id, _)| id);
    redeemed.client_key = key;
    redeemed.by = by;
    record(&state, StoreFact::CouponRedeemed(redeemed), claim).await
}
