//! Idempotency keys with honest semantics (docs/api.md, ADR 0017).
//!
//! A key is scoped to the caller (its token name; `local` when no tokens are configured) and
//! the route, and travels with a fingerprint of the request: SHA-256 over the route, its path
//! parameters and the body as JSON values (object keys sorted, the body's own `client_key`
//! left out, so the key may move between the body and the header). The outbox writer replays
//! the first answer for the same fingerprint and refuses a different one with
//! `422 idempotency_key_reused`. So a till can neither read nor suppress another till's facts
//! by guessing their keys, and a key reused by mistake for a new ticket says so instead of
//! silently answering the old one.
//!
//! A card number as read never enters the fingerprint (a SHA-256 of a low-entropy number
//! beside a body the event repeats could be brute-forced back): every `card` field is left
//! out, and the customer the card resolved to is bound in instead ([`FactRequest::bind_customer`]).

use super::ApiError;
use super::error;
use crate::outbox::IdempotencyClaim;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;
use serde_json::Value;

const KEY_MAX: usize = 128;
/// The field that carries a card as read, in any body: never fingerprinted.
const CARD_FIELD: &str = "card";
const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The routes whose facts take keys; a key used on one is unrelated to the same key on another.
/// These names are also what the outbox migration derives from older events' types.
pub(super) mod route {
    pub const MOVEMENTS: &str = "POST /v1/movements";
    pub const SALES: &str = "POST /v1/sales";
    pub const RETURNS: &str = "POST /v1/returns";
    pub const CYCLE_COUNTS: &str = "POST /v1/cycle-counts";
    pub const LOYALTY_EARN: &str = "POST /v1/loyalty/earn";
    pub const LOYALTY_BURN: &str = "POST /v1/loyalty/burn";
    pub const PICKUP_COLLECT: &str = "POST /v1/pickups/{code}/collect";
    pub const CONSENT: &str = "POST /v1/customers/{customer_id}/consent";
    pub const COUPON_REDEEM: &str = "POST /v1/coupons/redeem";
    pub const PICKUP_PREPARE: &str = "POST /v1/pickups/{code}/prepare";
    pub const SHIPMENT_STEP: &str = "POST /v1/shipments/{order_id}/{step}";
}

/// A store fact's request: its body, parsed, and what identifies it for its key.
pub(super) struct FactRequest<T> {
    pub body: T,
    route: &'static str,
    fingerprint: [u8; 32],
}

impl<T: DeserializeOwned> FactRequest<T> {
    /// Parse the body (every failure a clear 400/413) and fingerprint it with the route and
    /// its path parameters.
    pub fn parse(
        route: &'static str,
        path_params: &[&str],
        body: Result<Bytes, BytesRejection>,
    ) -> Result<FactRequest<T>, ApiError> {
        let bytes = error::body_bytes(body)?;
        let parsed: T = error::parse_slice(&bytes)?;
        // The typed parse succeeded, so the bytes are JSON.
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if let Some(field) = null_member(&value, "") {
            // Serde reads `null` as an absent optional field; docs/openapi.json types every
            // field without null, so a request says "absent" by leaving the field out.
            return Err(ApiError::invalid(
                &field,
                "null is not a value here: leave the field out instead",
            ));
        }
        Ok(FactRequest {
            body: parsed,
            route,
            fingerprint: fingerprint(route, path_params, &value),
        })
    }

    /// A request that may come without a body (`{}` assumed).
    pub fn parse_or_empty(
        route: &'static str,
        path_params: &[&str],
        body: Result<Bytes, BytesRejection>,
    ) -> Result<FactRequest<T>, ApiError> {
        match &body {
            Ok(bytes) if bytes.is_empty() => {
                FactRequest::parse(route, path_params, Ok(Bytes::from_static(b"{}")))
            }
            _ => FactRequest::parse(route, path_params, body),
        }
    }

    /// Bind the customer a card (or id) resolved to into the fingerprint: two requests with one
    /// key and different cards then differ, without the card itself being kept.
    pub fn bind_customer(&mut self, customer_id: &str) {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&self.fingerprint);
        ctx.update(b"customer");
        ctx.update(customer_id.as_bytes());
        self.fingerprint.copy_from_slice(ctx.finish().as_ref());
    }

    /// The scoped claim for `key`, if the request has one.
    pub fn claim(&self, caller: &str, key: Option<&str>) -> Option<IdempotencyClaim> {
        key.map(|key| IdempotencyClaim::new(caller, self.route, key, self.fingerprint))
    }
}

/// The path of the first `null` in an object or array of `value` (`lines[2].sku`), if any.
fn null_member(value: &Value, at: &str) -> Option<String> {
    match value {
        Value::Object(map) => map.iter().find_map(|(key, child)| {
            let here = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            match child {
                Value::Null => Some(here),
                _ => null_member(child, &here),
            }
        }),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, child)| {
            let here = format!("{at}[{i}]");
            match child {
                Value::Null => Some(here),
                _ => null_member(child, &here),
            }
        }),
        _ => None,
    }
}

/// SHA-256 over the route, the path parameters and the body's JSON value in a canonical form.
fn fingerprint(route: &str, path_params: &[&str], body: &Value) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut field = |bytes: &[u8]| {
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(bytes);
    };
    field(route.as_bytes());
    for param in path_params {
        field(param.as_bytes());
    }
    let mut canonical = Vec::with_capacity(256);
    match body {
        Value::Object(map) => {
            let mut top = map.clone();
            top.remove("client_key");
            write_canonical(&mut canonical, &Value::Object(top));
        }
        other => write_canonical(&mut canonical, other),
    }
    field(&canonical);
    let digest = ctx.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// JSON with object keys in byte order at every level, whatever order the client sent them
/// in (and whatever order `serde_json`'s map keeps).
fn write_canonical(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> =
                map.iter().filter(|(key, _)| *key != CARD_FIELD).collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(out, &Value::String(key.clone()));
                out.push(b':');
                write_canonical(out, value);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(out, item);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

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
    super::facts::bounded_text("client_key", &key, KEY_MAX)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_same_request_with_its_keys_reordered_or_its_key_moved_has_the_same_fingerprint() {
        let a = json!({"client_key": "k", "lines": [{"qty": 1, "sku": "A"}], "receipt": "R"});
        let b = json!({"receipt": "R", "lines": [{"sku": "A", "qty": 1}]});
        assert_eq!(
            fingerprint(route::SALES, &[], &a),
            fingerprint(route::SALES, &[], &b)
        );
    }

    #[test]
    fn another_body_another_route_or_another_path_parameter_changes_the_fingerprint() {
        let a = json!({"lines": [{"sku": "A", "qty": 1}]});
        let b = json!({"lines": [{"sku": "A", "qty": 2}]});
        let base = fingerprint(route::SALES, &[], &a);
        assert_ne!(base, fingerprint(route::SALES, &[], &b));
        assert_ne!(base, fingerprint(route::RETURNS, &[], &a));
        assert_ne!(
            fingerprint(route::PICKUP_COLLECT, &["PU-1"], &json!({})),
            fingerprint(route::PICKUP_COLLECT, &["PU-2"], &json!({}))
        );
        // A nested client_key is data, not the key.
        assert_ne!(
            fingerprint(route::SALES, &[], &json!({"x": {"client_key": 1}})),
            fingerprint(route::SALES, &[], &json!({"x": {}}))
        );
    }

    #[test]
    fn a_null_anywhere_in_a_request_is_named_by_its_path_and_a_request_without_one_passes() {
        let body = json!({"lines": [{"sku": "A", "qty": 1}, {"sku": null, "qty": 1}]});
        assert_eq!(null_member(&body, "").as_deref(), Some("lines[1].sku"));
        assert_eq!(
            null_member(&json!({"client_key": null}), "").as_deref(),
            Some("client_key")
        );
        assert_eq!(null_member(&json!({"lines": [{"qty": 1}]}), ""), None);
    }

    #[test]
    fn a_scoped_key_is_what_sqlite_json_array_writes() {
        let claim = IdempotencyClaim::new("till-1", route::SALES, "t1/\"r\"1", [0; 32]);
        let conn = rusqlite::Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        let sqlite: String = conn
            .query_row(
                "SELECT json_array('till-1', 'POST /v1/sales', 't1/\"r\"1')",
                [],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(claim.scoped_key, sqlite);
        assert_eq!(claim.client_key().as_deref(), Some("t1/\"r\"1"));
    }
}
