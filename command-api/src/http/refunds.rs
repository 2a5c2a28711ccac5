//! Refunds: `POST /v1/orders/{order_id}/refunds`, `GET /v1/refunds/{refund_id}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use payledger_domain::{ids, Money, PaymentOrderCommand};
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    pub out_refund_no: String,
    pub amount: Value,
    pub reason: Option<String>,
}

/// `POST /v1/orders/{order_id}/refunds`: 201 with the refund (status `pending`; the channel
/// completes it asynchronously); 200 with the existing refund for a repeated `out_refund_no` and
/// amount; 409 over the refundable amount (paid − refunded − pending), for an unpaid order, or for
/// a repeated `out_refund_no` with another amount.
async fn create(
    State(state): State<AppState>,
    AuthMerchant(merchant): AuthMerchant,
    Path(order_id): Path<String>,
    JsonBody(req): JsonBody<RefundRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let order_id = parse_id(&order_id, "order")?;
    let order = state.owned_order(&merchant.merchant_id, order_id).await?;
    let mut e = FieldErrors::default();
    validate::merchant_no(&mut e, "out_refund_no", &req.out_refund_no);
    let amount_minor = validate::amount_minor(&mut e, "amount", &req.amount);
    if let Some(r) = &req.reason {
        validate::text(&mut e, "reason", r, validate::SHORT_TEXT_CHARS_MAX, false);
    }
    e.finish()?;
    let amount = amount_minor
        .map(|a| Money::new(a, order.terms.amount.currency))
        .transpose()
        .map_err(|err| ApiError::field("amount", err.to_string()))?
        .ok_or_else(|| ApiError::Internal("validated refund lacks an amount".into()))?;
    let refund_id = ids::refund_id(order_id, &req.out_refund_no);
    let executed = state
        .execute(
            order_id,
            PaymentOrderCommand::RequestRefund {
                out_refund_no: req.out_refund_no,
                amount,
                reason: req.reason,
                requested_at: Utc::now(),
            },
            &format!("merchant:{}", merchant.merchant_id),
        )
        .await?;
    let view = state
        .order_view_at(&merchant.merchant_id, order_id, executed.sequence)
        .await?;
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
async fn show(
    State(state): State<AppState>,
    AuthMerchant(merchant): AuthMerchant,
    Path(refund_id): Path<String>,
) -> Result<Json<RefundView>, ApiError> {
    let refund_id = parse_id(&refund_id, "refund")?;
    queries::refund(state.db.pool(), &merchant.merchant_id, refund_id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("refund"))
}
