//! The sandbox channel's payer-facing page: `GET /sandbox/pay/{order_id}` shows the order and two
//! buttons; `POST /sandbox/pay/{order_id}` with `{"result":"success"|"fail"}` makes the sandbox
//! send its signed callback to `/v1/callbacks/sandbox`, exactly as a real channel would.
//!
//! Both need the order's pay token (`?token=`, in the `pay_url` the order was created with;
//! `SandboxChannel::pay_token`): without it, or with another order's, they answer 404 as for an
//! order that does not exist. The page sends its own Content-Security-Policy (a nonce for its
//! one script and style) and no referrer, so the token does not leave with a link.
//!
//! The token is what authenticates the payer, so a request whose token does not check (a
//! guess) is charged against the client address's rate limit
//! ([`crate::http::rate_limit::AddressRateLimit`]): 429 past it, 404 before. A payer with the
//! right token is never charged (a load test paying many orders from one machine is served).
//!
//! Like a real channel after `time_expire`, the page refuses payment once the order's
//! `expire_at` has passed (409 `order-expired`). A closed order that has not expired can still be
//! paid: that is how a late payment (money that moved after a close) is tried out.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use html_escape::encode_text;
use payledger_domain::aggregate::OrderState;
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::extract::JsonBody;
use crate::http::parse_id;
use crate::http::rate_limit::ClientAddr;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new().route("/sandbox/pay/{order_id}", get(page).post(pay))
}

/// Query of the sandbox pay page and its POST.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PayPageQuery {
    /// The order's pay token, from its `pay_url`: 32 hex characters. Required: without it the
    /// answer is 404.
    #[param(pattern = "^[0-9a-fA-F]{32}$")]
    pub token: Option<String>,
}

type PayPageQueryResult = Result<Query<PayPageQuery>, axum::extract::rejection::QueryRejection>;

/// The sandbox order `order_id`, when `query` holds its pay token; 404 otherwise, charged
/// against `addr`'s rate limit (429 past it). The token is checked before the order is looked
/// up, so guessing costs no database work.
async fn sandbox_order(
    state: &AppState,
    addr: ClientAddr,
    order_id: &str,
    query: PayPageQueryResult,
) -> Result<OrderState, ApiError> {
    let token = query.ok().and_then(|Query(q)| q.token).unwrap_or_default();
    let order_id = match parse_id(order_id, "order") {
        Ok(id) if state.sandbox.verify_pay_token(id, &token) => id,
        _ => {
            state.address_limit.check(addr.0)?;
            return Err(ApiError::NotFound("order"));
        }
    };
    let order = state
        .db
        .orders()
        .load(order_id)
        .await?
        .order
        .ok_or(ApiError::NotFound("order"))?;
    if order.terms.channel != "sandbox" {
        return Err(ApiError::NotFound("order"));
    }
    Ok(order)
}

/// JSON for a value embedded in an inline `<script>`: `<`, `>` and `&` are written as `\uXXXX`
/// escapes, so merchant-supplied text (a `return_url` may hold `</script>`) cannot end the
/// script element or open markup. Still valid JSON and the same value.
fn script_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|_| "null".into())
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// `GET /sandbox/pay/{order_id}`: the payer's page of a sandbox order.
#[utoipa::path(
    get,
    path = "/sandbox/pay/{order_id}",
    tag = "channels",
    params(("order_id" = String, Path, format = Uuid, description = "The order's id."), PayPageQuery),
    responses(
        (status = 200, description = "An HTML page with the order and Pay / Fail buttons.", content_type = "text/html", body = String),
        (status = 404, response = crate::openapi::NotFound),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::InternalError),
        (status = 503, response = crate::openapi::ServiceUnavailable),
    ),
)]
pub(crate) async fn page(
    State(state): State<AppState>,
    addr: ClientAddr,
    Path(order_id): Path<String>,
    query: PayPageQueryResult,
) -> Result<impl IntoResponse, ApiError> {
    let order = sandbox_order(&state, addr, &order_id, query).await?;
    let nonce = crate::http::security::nonce();
    let money = order.terms.amount;
    let amount = payledger_domain::format_minor(money.amount_minor, money.currency.code());
    let return_url = script_json(&order.terms.return_url);
    let csp = crate::http::security::pay_page_csp(&nonce);
    let html = Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>payledger sandbox — pay</title>
<style nonce="{nonce}">body{{font-family:sans-serif;max-width:28rem;margin:3rem auto}}button{{font-size:1.1rem;margin-right:1rem}}</style>
</head><body>
<h1>Sandbox payment</h1>
<p>This page stands in for a payment channel. No real money moves.</p>
<dl><dt>Order</dt><dd><code>{order_id}</code></dd>
<dt>Subject</dt><dd>{subject}</dd>
<dt>Amount</dt><dd>{amount} {currency}</dd>
<dt>Status</dt><dd id="status">{status}</dd></dl>
<button id="pay" type="button">Pay</button><button id="fail" type="button">Fail the payment</button>
<p id="result" role="status"></p>
<script nonce="{nonce}">
const returnUrl = {return_url};
document.getElementById('pay').addEventListener('click', () => pay('success'));
document.getElementById('fail').addEventListener('click', () => pay('fail'));
async function pay(result) {{
  const r = await fetch(location.pathname + location.search, {{method: 'POST', headers: {{'Content-Type': 'application/json'}}, body: JSON.stringify({{result}})}});
  const body = await r.json();
  document.getElementById('result').textContent = r.ok ? 'Callback sent: ' + body.order_status : 'Failed: ' + (body.detail || r.status);
  if (r.ok && returnUrl) {{ location.href = returnUrl; }}
}}
</script>
</body></html>"#,
        order_id = order.order_id,
        subject = encode_text(&order.terms.subject),
        currency = money.currency.code(),
        status = order.status,
    ));
    Ok(([(header::CONTENT_SECURITY_POLICY, csp)], html))
}

/// Body of `POST /sandbox/pay/{order_id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SandboxPayRequest)]
pub struct PayRequest {
    /// `success` or `fail`.
    #[schema(pattern = "^(success|fail)$", example = "success")]
    pub result: String,
}

/// `POST /sandbox/pay/{order_id}`: plays the payer; the sandbox sends its signed callback.
#[utoipa::path(
    post,
    path = "/sandbox/pay/{order_id}",
    tag = "channels",
    params(("order_id" = String, Path, format = Uuid, description = "The order's id."), PayPageQuery),
    request_body = PayRequest,
    responses(
        (status = 200, description = "The callback was sent and recorded.", body = crate::openapi::SandboxPayResult),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::ValidationFailed),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::InternalError),
        (status = 503, response = crate::openapi::ServiceUnavailable),
        (status = 502, response = crate::openapi::BadGateway),
    ),
)]
pub(crate) async fn pay(
    State(state): State<AppState>,
    addr: ClientAddr,
    Path(order_id): Path<String>,
    query: PayPageQueryResult,
    JsonBody(req): JsonBody<PayRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let succeed = match req.result.as_str() {
        "success" => true,
        "fail" => false,
        _ => return Err(ApiError::field("result", "must be \"success\" or \"fail\"")),
    };
    let order = sandbox_order(&state, addr, &order_id, query).await?;
    let now = Utc::now();
    if now >= order.expire_at {
        return Err(ApiError::Conflict {
            slug: "order-expired",
            detail: format!(
                "order {} expired at {}; the channel no longer takes payment for it",
                order.order_id,
                payledger_store::time::fmt_ts(order.expire_at)
            ),
        });
    }
    let callback_status = state
        .sandbox
        .pay(order.order_id, order.terms.amount, succeed, now)
        .await
        .map_err(|e| ApiError::BadGateway(e.to_string()))?;
    if callback_status == 503 {
        // payledger could not record it (database unavailable): the payer may try again.
        return Err(ApiError::Unavailable(
            "payledger could not record the payment now; retry later".to_string(),
        ));
    }
    if callback_status != 200 {
        return Err(ApiError::BadGateway(format!(
            "payledger answered the sandbox callback with HTTP {callback_status}"
        )));
    }
    let after = state.db.orders().load(order.order_id).await?;
    let status = after.order.map(|o| o.status.as_str()).unwrap_or("unknown");
    Ok((
        StatusCode::OK,
        Json(json!({"order_id": order.order_id, "callback_status": callback_status, "order_status": status})),
    ))
}

#[cfg(test)]
mod tests {
    use super::script_json;

    #[test]
    fn text_embedded_in_a_script_cannot_close_it() {
        let url = Some("https://shop.example/</script><script>alert(1)</script>?a=1&b=2".to_string());
        let embedded = script_json(&url);
        assert!(!embedded.contains('<') && !embedded.contains('>') && !embedded.contains('&'));
        let back: Option<String> = serde_json::from_str(&embedded).unwrap();
        assert_eq!(back, url, "still the same value once parsed");
    }
}
