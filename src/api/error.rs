//! JSON errors that say what is wrong: `{"error": {"code", "message", "field"?, "details"?}}`.

use crate::outbox::OutboxError;
use crate::replica::lookup::LookupError;
use crate::storage::ReaderPoolError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub details: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            details: None,
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("`{field}`: {}", message.into()),
        );
        e.field = Some(field.to_string());
        e
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn too_many_requests(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
                details: self.details.as_ref(),
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<ReaderPoolError> for ApiError {
    fn from(e: ReaderPoolError) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string())
    }
}

impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> ApiError {
        match e {
            LookupError::InvalidBarcode(ref barcode) => {
                // The GS1 rule broken and the AI it is about, for a till to show or log.
                let details = serde_json::json!({"rule": barcode.rule(), "ai": barcode.ai()});
                let mut err = ApiError::new(StatusCode::BAD_REQUEST, "invalid_code", e.to_string());
                err.details = Some(details);
                err
            }
            LookupError::InvalidCode(_) | LookupError::NoGtin | LookupError::InvalidCard(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_code", e.to_string())
            }
            LookupError::Sqlite(_) => ApiError::internal(e.to_string()),
        }
    }
}

impl From<OutboxError> for ApiError {
    fn from(e: OutboxError) -> ApiError {
        match e {
            OutboxError::DiskLow { .. } => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "disk_low", e.to_string())
            }
            OutboxError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                e.to_string(),
            ),
            OutboxError::Refused(refused) => {
                let status = if refused.is_conflict() {
                    StatusCode::CONFLICT
                } else {
                    StatusCode::UNPROCESSABLE_ENTITY
                };
                let mut err = ApiError::new(status, refused.code(), refused.to_string());
                err.details = serde_json::to_value(&refused).ok();
                err
            }
            OutboxError::KeyReused { seq, .. } => {
                let mut err = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    e.to_string(),
                );
                err.field = Some("client_key".into());
                err.details = Some(serde_json::json!({ "first_seq": seq }));
                err
            }
            OutboxError::NotRecordable(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_recordable",
                e.to_string(),
            ),
            OutboxError::Commit(_) | OutboxError::Storage(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_recorded",
                e.to_string(),
            ),
        }
    }
}

/// The body's bytes, or the error that says why there are none (413 past the limit). Bodies are
/// parsed by us ([`parse_slice`]) so that every failure comes back as our JSON error with the
/// position and the field, not axum's plain text.
pub fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "body_too_large",
                "request body is larger than api.max_body_bytes",
            )
        } else {
            ApiError::new(status, "unreadable_body", rejection.body_text())
        }
    })
}

/// Parse JSON bytes into a request type; a 400 with the position otherwise.
pub fn parse_slice<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let mut err = ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("body is not a valid request: {e} (see docs/api.md)"),
        );
        err.details = Some(serde_json::json!({"line": e.line(), "column": e.column()}));
        err
    })
}
