//! A deadline on every request, so that nothing can keep a client waiting without bound: a
//! database connection that went silent without closing (half-open TCP) would otherwise hold a
//! request until the operating system gives up on the socket, many minutes later. Past the
//! deadline the handler is dropped (an open transaction rolls back) and the client gets 503
//! problem+json with `Retry-After`; sending the request again is safe, as orders and refunds
//! are idempotent on the merchant's keys.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::http::error::ApiError;

/// Default whole-request deadline. Longer than anything a healthy request does (a channel
/// call's own timeout, the 2 s read-your-writes wait, the pool's acquire timeout), so it only
/// ever ends a request that is stuck.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// Middleware: runs the request under [`crate::app::ApiConfig::request_timeout_ms`]; when it
/// passes, answers 503 `unavailable` with `Retry-After: 1`.
pub async fn deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = Duration::from_millis(state.config.request_timeout_ms);
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(%method, %path, timeout_ms = limit.as_millis() as u64, "request deadline passed; answering 503");
            ApiError::Unavailable("the request did not finish in time; retry later".to_string()).into_response()
        }
    }
}
