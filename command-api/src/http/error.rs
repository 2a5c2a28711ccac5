//! The HTTP layer's one error type: each case maps to a status and an RFC 9457
//! `application/problem+json` body. Internal details go to the log, never to the client.

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use payledger_domain::OrderError;
use payledger_store::{DbError, ExecuteError};
use serde_json::json;

/// Base of our problem `type` URIs (RFC 9457 §3.1.1).
pub const PROBLEM_BASE: &str = "https://payledger.dev/problems/";

/// Everything a handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 422: the request is well-formed but its fields are invalid; `errors` maps each field to
    /// its messages.
    #[error("validation failed")]
    Validation(BTreeMap<String, Vec<String>>),
    /// 400: the body is not valid JSON (or a query string does not parse).
    #[error("malformed request: {0}")]
    Malformed(String),
    /// 401: no or wrong API key.
    #[error("missing or invalid API key")]
    Unauthorized,
    /// 404: no such resource for this merchant.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 409: the request conflicts with the resource's state; `slug` names the rule.
    #[error("{detail}")]
    Conflict { slug: &'static str, detail: String },
    /// 413: body over the limit of the route, `limit_bytes`.
    #[error("request body larger than the limit of {limit_bytes} bytes")]
    PayloadTooLarge { limit_bytes: usize },
    /// 415: not `application/json`.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// 429: the merchant's request rate, or the client address's rate of unauthenticated
    /// requests, is over its quota (see [`crate::http::rate_limit`]);
    /// answered with `Retry-After: <retry_after_seconds>`.
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after_seconds: u64 },
    /// 502 `channel-failed`: the payment channel refused (or does not support) the request.
    #[error("payment channel failed: {0}")]
    BadGateway(String),
    /// 502 `channel-unavailable`: the payment channel (or, in NATS mode, the channel service)
    /// could not be reached or failed on its side; may work later.
    #[error("payment channel unavailable: {0}")]
    ChannelUnavailable(String),
    /// 504 `channel-timeout`: the payment channel (or the channel service) did not answer in
    /// time; whether it acted is unknown.
    #[error("payment channel did not answer in time: {0}")]
    ChannelTimeout(String),
    /// 503 with `Retry-After`: try again shortly (contention on one order, database
    /// unreachable or overloaded).
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected failure; the detail is logged only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 503 for a database that cannot be reached (connection refused or cut, no connection
    /// within the pool's acquire timeout). The cause is logged; the client is told only to
    /// retry (`Retry-After`): the same request again is safe, as orders and refunds are idempotent
    /// on the merchant's `out_trade_no` / `out_refund_no`.
    pub fn database_unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::warn!(%cause, "database unavailable; answering 503");
        Self::Unavailable("the database is unavailable; retry later".to_string())
    }

    /// A 422 with one message for one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let mut errors = BTreeMap::new();
        errors.insert(field.to_string(), vec![message.into()]);
        Self::Validation(errors)
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation", "Invalid request"),
            Self::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed", "Malformed request"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Self::Conflict { slug, .. } => (StatusCode::CONFLICT, slug, "Conflict"),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Payload too large"),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            Self::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests"),
            Self::BadGateway(_) => (StatusCode::BAD_GATEWAY, "channel-failed", "Payment channel failed"),
            Self::ChannelUnavailable(_) => (
                StatusCode::BAD_GATEWAY,
                "channel-unavailable",
                "Payment channel unavailable",
            ),
            Self::ChannelTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "channel-timeout",
                "Payment channel timeout",
            ),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        let detail = match &self {
            Self::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "an internal error occurred; it has been logged".to_string()
            }
            other => other.to_string(),
        };
        let mut body = json!({
            "type": format!("{PROBLEM_BASE}{slug}"),
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
        });
        if let Self::Validation(errors) = &self {
            body["errors"] = json!(errors);
        }
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match self {
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::TooManyRequests {
                retry_after_seconds, ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
            }
            // The rest of the body was never read, so the connection cannot carry another
            // request: say so, or a keep-alive client reuses it and its next request fails.
            Self::PayloadTooLarge { .. } => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        let conflict = |slug| ApiError::Conflict {
            slug,
            detail: e.to_string(),
        };
        match &e {
            OrderError::OrderNotFound => Self::NotFound("order"),
            OrderError::RefundNotFound(_) => Self::NotFound("refund"),
            OrderError::InvalidAmount(m) => Self::field("amount", m.clone()),
            OrderError::CurrencyMismatch { .. } => Self::field("currency", e.to_string()),
            OrderError::ChannelNotInMode { .. } => Self::field("channel", e.to_string()),
            OrderError::WrongChannel { .. } | OrderError::WrongChannelAccount { .. } => conflict("wrong-channel"),
            OrderError::OutTradeNoConflict(_) => conflict("out-trade-no-conflict"),
            OrderError::OutRefundNoConflict(_) => conflict("out-refund-no-conflict"),
            OrderError::InvalidState { .. } => conflict("invalid-state"),
            OrderError::AlreadyPaid => conflict("order-paid"),
            OrderError::NotPaid(_) => conflict("order-not-paid"),
            OrderError::RefundExceedsRefundable { .. } => conflict("refund-exceeds-refundable"),
            OrderError::RefundAlreadyFinal(_) => conflict("refund-final"),
        }
    }
}

impl From<ExecuteError> for ApiError {
    fn from(e: ExecuteError) -> Self {
        match e {
            ExecuteError::Rejected(e) => e.into(),
            ExecuteError::Contention | ExecuteError::Overloaded => Self::Unavailable(e.to_string()),
            ExecuteError::Unavailable(detail) => Self::database_unavailable(detail),
            ExecuteError::Store(detail) => Self::Internal(detail),
        }
    }
}

impl From<crate::flows::FlowError> for ApiError {
    fn from(e: crate::flows::FlowError) -> Self {
        use crate::flows::FlowError;
        match e {
            FlowError::OrderNotFound => Self::NotFound("order"),
            FlowError::Invalid { field, message } => Self::field(field, message),
            FlowError::Execute(e) => e.into(),
            FlowError::Internal(detail) => Self::Internal(detail),
            FlowError::ChannelAccount(e) => Self::Conflict {
                slug: "channel-account-unavailable",
                detail: e.to_string(),
            },
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        if e.is_unavailable() {
            Self::database_unavailable(e)
        } else {
            Self::Internal(e.to_string())
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        DbError::Sqlx(e).into()
    }
}

impl From<payledger_projections::queries::QueryError> for ApiError {
    fn from(e: payledger_projections::queries::QueryError) -> Self {
        match e {
            payledger_projections::queries::QueryError::Db(e) => e.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}
