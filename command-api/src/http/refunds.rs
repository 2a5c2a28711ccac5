//! Refunds: `POST /v1/orders/{order_id}/refunds`, `GET /v1/refunds/{refund_id}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use payledger_projections::queries;
use payledger_projections::RefundView;
use serde::Deserialize;
use serde_json::Value;

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{AuthMerchant, JsonBody};
use crate::http::parse_id;
use crate::validate::{self, FieldErrors};

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/orders/{order_id}/refunds", post(create))
        .route("/v1/refunds/{refund_id}", get(show))
}

/// Body of a refund request; `amount` in minor units of the order's currency.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// The merchant's own refund number: 1–64 of `A-Z a-z 0-9 _ -`. The same number again is the
    /// same refund.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    pub out_refund_no: String,
    /// Amount to refund, an integer in minor units of the order's currency; at most what is still
    /// refundable (paid − refunded − pending).
    #[schema(value_type = i64, minimum = 1, maximum = 9_007_199_254_740_991_i64, example = 500)]
    pub amount: Value,
    /// Why, for the payer and the channel: at most 256 characters, no control characters.
    #[schema(max_length = 256, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub reason: Option<String>,
}

/// `POST /v1/orders/{order_id}/refunds`: 201 with the refund (status `pending`; the channel
/// completes it asynchronously); 200 with the existing refund for a repeated `out_refund_no` and
/// amount; 409 over the refundable amount (paid − refunded − pending), for an unpaid order, for
/// a repeated `out_refund_no` with another amount, or when the channel account that took the
/// payment is no longer configured (`channel-account-unavailable`).
#[utoipa::path(
    post,
    path = "/v1/orders/{order_id}/refunds",
    tag = "refunds",
    security(("api_key" = [])),
    params(("order_id" = String, Path, format = Uuid, description = "The order's id.")),
    request_body = RefundRequest,
    responses(
        (status = 201, description = "The refund, `pending` (the channel completes it asynchronously) or already final.", body = RefundView),
        (status = 200, description = "The same `out_refund_no` and amount again: the existing refund.", body = RefundView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::ValidationFailed),
        (status = 500, response = crate::openapi::InternalError),
        (status = 503, response = crate::openapi::ServiceUnavailable),
    ),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    AuthMerchant(merchant): AuthMerchant,
    Path(order_id): Path<String>,
    JsonBody(req): JsonBody<RefundRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let order_id = parse_id(&order_id, "order")?;
    let mut e = FieldErrors::default();
    validate::merchant_no(&mut e, "out_refund_no", &req.out_refund_no);
    let amount_minor = validate::amount_minor(&mut e, "amount", &req.amount);
    if let Some(r) = &req.reason {
        validate::text(&mut e, "reason", r, validate::SHORT_TEXT_CHARS_MAX, false);
    }
    e.finish()?;
    let amount_minor = amount_minor.ok_or_else(|| ApiError::Internal("validated refund lacks an amount".into()))?;
    let actor = format!("merchant:{}", merchant.merchant_id);
    let (refund_id, executed) = state
        .flows
        .request_refund(&merchant, order_id, req.out_refund_no, amount_minor, req.reason, &actor)
        .await?;
    let view = state.order_now(&merchant, order_id).await?;
    let refund = view
        .refunds
        .into_iter()
        .find(|r| r.refund_id == refund_id)
        .ok_or_else(|| ApiError::Internal(format!("refund {refund_id} missing after request")))?;
    let status = if executed.events.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(refund)))
}

/// `GET /v1/refunds/{refund_id}`: the refund view; 404 if it is not this merchant's.
#[utoipa::path(
    get,
    path = "/v1/refunds/{refund_id}",
    tag = "refunds",
    security(("api_key" = [])),
    params(("refund_id" = String, Path, format = Uuid, description = "The refund's id.")),
    responses(
        (status = 200, description = "The refund.", body = RefundView),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 404, response = crate::openapi::NotFound),
        (status = 500, response = crate::openapi::InternalError),
        (status = 503, response = crate::openapi::ServiceUnavailable),
    ),
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    AuthMerchant(merchant): AuthMerchant,
    Path(refund_id): Path<String>,
) -> Result<Json<RefundView>, ApiError> {
    let refund_id = parse_id(&refund_id, "refund")?;
    state.read_models_current().await?;
    queries::refund(state.db.pool(), &merchant, refund_id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("refund"))
}
