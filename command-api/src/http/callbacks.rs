//! `POST /v1/callbacks/{channel}/{account}` (and `/v1/callbacks/{channel}` for the orders opened
//! before accounts were recorded, and the sandbox): channel-facing. The account's adapter
//! verifies the raw body (in NATS mode the channel service does, `parse_callback`); only a
//! verified callback reaches the order, and only an order that account placed.
//! Answered in the channel's own format: a refused callback with the channel's failure answer; one
//! that could not be verified or recorded now with a failure and HTTP 500, so that the channel
//! sends it again on its schedule.
//!
//! A callback refused for its signature or content is charged against the client address's rate
//! limit of unauthenticated requests ([`crate::http::rate_limit::AddressRateLimit`]); past it,
//! the refusal is answered 429 with `Retry-After`, still in the channel's format. Only refusals
//! are charged, after verification: a channel's valid callbacks are never throttled by address.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use payledger_channel_adapters::CallbackAnswer;
use payledger_store::ExecuteError;

use crate::app::AppState;
use crate::flows::CallbackReceipt;
use crate::http::error::ApiError;
use crate::http::rate_limit::ClientAddr;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/callbacks/{channel}", post(receive))
        .route("/v1/callbacks/{channel}/{account}", post(receive_for_account))
}

fn answer(a: CallbackAnswer) -> Response {
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, a.content_type)], a.body).into_response()
}

/// `POST /v1/callbacks/{channel}`: a channel's payment or refund notification, answered in the
/// channel's own format (sandbox JSON `{"result"}`, WeChat Pay 204 or JSON `{code, message}`,
/// Alipay text `success`/`fail`). Verified by the channel's legacy account (its only account, or
/// the one marked `legacy`): the URL of the sandbox and of orders opened before accounts were
/// recorded; other orders' notify URLs name their account.
#[utoipa::path(
    post,
    path = "/v1/callbacks/{channel}",
    tag = "channels",
    params(("channel" = String, Path, description = "The channel that calls back: `sandbox`, `wechatpay`, `alipay`.")),
    request_body(
        description = "The channel's notification, verified by its signature: JSON (sandbox, WeChat Pay) or a form (Alipay).",
        content(("application/json"), ("application/x-www-form-urlencoded")),
    ),
    responses(
        (status = 200, description = "Recorded (sandbox, Alipay; Alipay also answers refusals with 200 and `fail`).", content(
            (Object = "application/json"),
            (String = "text/plain"),
        )),
        (status = 204, description = "Recorded (WeChat Pay)."),
        (status = 400, description = "Refused: bad signature, unknown order, unreadable body; in the channel's format.", content(
            (Object = "application/json"),
            (crate::openapi::Problem = "application/problem+json"),
        )),
        (status = 404, description = "No such channel enabled (or, with several accounts and none marked legacy, none to verify with).", content_type = "text/plain", body = String),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 429, description = "Refused (as for 400), and this client address has sent too many refused callbacks (`serve --unauthenticated-rate-limit`); in the channel's format, with `Retry-After`. Verified callbacks are never answered 429.", content(
            (Object = "application/json"),
            (String = "text/plain"),
        ), headers(("Retry-After" = String, description = "Seconds to wait."))),
        (status = 500, description = "Verified but not recorded; the channel retries on its schedule. In the channel's format.", content(
            (Object = "application/json"),
            (String = "text/plain"),
        )),
        (status = 503, description = "Not recorded because the database is unreachable or the order is contended; the channel retries on its schedule. In the channel's format.", content(
            (Object = "application/json"),
            (String = "text/plain"),
        )),
    ),
)]
pub(crate) async fn receive(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Path(channel_name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let channel = match state.channels.legacy(&channel_name) {
        Ok(channel) => channel,
        Err(e) => {
            tracing::warn!(channel = %channel_name, error = %e, "callback without an account to verify it");
            return (StatusCode::NOT_FOUND, "unknown channel").into_response();
        }
    };
    receive_with(state, addr, channel, &channel_name, headers, body).await
}

/// `POST /v1/callbacks/{channel}/{account}`: as `POST /v1/callbacks/{channel}`, verified by the
/// named channel account (the notify URL every order placed with it gave the channel), whatever
/// it takes new orders or not.
#[utoipa::path(
    post,
    path = "/v1/callbacks/{channel}/{account}",
    tag = "channels",
    params(
        ("channel" = String, Path, description = "The channel that calls back: `wechatpay`, `alipay`."),
        ("account" = String, Path, description = "The channel account the order was placed with, e.g. `main`."),
    ),
    request_body(
        description = "The channel's notification, verified by its signature: JSON (WeChat Pay) or a form (Alipay).",
        content(("application/json"), ("application/x-www-form-urlencoded")),
    ),
    responses(
        (status = 200, description = "Recorded (Alipay; it also answers refusals with 200 and `fail`).", content_type = "text/plain", body = String),
        (status = 204, description = "Recorded (WeChat Pay)."),
        (status = 400, description = "Refused: bad signature, unknown order, an order of another account, unreadable body; in the channel's format.", content(
            (Object = "application/json"),
            (crate::openapi::Problem = "application/problem+json"),
        )),
        (status = 404, description = "No such channel account configured.", content_type = "text/plain", body = String),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 429, description = "Refused, and this client address has sent too many refused callbacks; in the channel's format, with `Retry-After`.", content(
            (Object = "application/json"),
            (String = "text/plain"),
        ), headers(("Retry-After" = String, description = "Seconds to wait."))),
        (status = 500, description = "Verified but not recorded; the channel retries on its schedule.", content(
            (Object = "application/json"),
            (String = "text/plain"),
        )),
        (status = 503, description = "Not recorded now (database unreachable, order contended); the channel retries.", content(
            (Object = "application/json"),
            (String = "text/plain"),
        )),
    ),
)]
pub(crate) async fn receive_for_account(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Path((channel_name, account_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let Some(channel) = state.channels.account(&channel_name, &account_id) else {
        tracing::warn!(channel = %channel_name, account = %account_id, "callback for a channel account not configured");
        return (StatusCode::NOT_FOUND, "unknown channel account").into_response();
    };
    receive_with(state, addr, channel, &channel_name, headers, body).await
}

/// Verifies and records one notification with `channel` (one account's adapter).
async fn receive_with(
    state: AppState,
    addr: Option<std::net::IpAddr>,
    channel: std::sync::Arc<dyn payledger_channel_adapters::Channel>,
    channel_name: &str,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return crate::http::extract::body_rejection(e, crate::app::CALLBACK_BODY_LIMIT_BYTES).into_response()
        }
    };
    match state
        .flows
        .receive_callback(channel.as_ref(), &headers, &body, Utc::now())
        .await
    {
        // Whoever looks at the order next (the payer's return page, the merchant) reads it from
        // the log, or from read models that wait for it: no need to wait here.
        CallbackReceipt::Recorded { .. } => answer(channel.answer_callback(Ok(()))),
        CallbackReceipt::Unverified(e) => {
            tracing::error!(channel = %channel_name, error = %e, "callback not verified: the channel will send it again");
            let mut a = channel.answer_callback(Err("temporarily unable to verify".into()));
            a.status = 500;
            answer(a)
        }
        CallbackReceipt::Refused(e) => {
            tracing::warn!(channel = %channel_name, error = %e, "callback refused");
            if let Err(ApiError::TooManyRequests {
                retry_after_seconds, ..
            }) = state.address_limit.check(addr)
            {
                let mut a = channel.answer_callback(Err("too many refused callbacks from this address".into()));
                a.status = 429;
                let mut response = answer(a);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
                return response;
            }
            answer(channel.answer_callback(Err(e.to_string())))
        }
        CallbackReceipt::UnknownOrder(e) => {
            tracing::warn!(channel = %channel_name, error = %e, "callback refused");
            answer(channel.answer_callback(Err("unknown order".into())))
        }
        CallbackReceipt::NotRecorded(e) => {
            tracing::error!(channel = %channel_name, error = %e, "recording a callback failed");
            // Not recorded: tell the channel to retry on its schedule.
            let mut a = channel.answer_callback(Err("temporarily unable to record".into()));
            a.status = match e {
                ExecuteError::Unavailable(_) | ExecuteError::Contention | ExecuteError::Overloaded => 503,
                _ => 500,
            };
            answer(a)
        }
    }
}
