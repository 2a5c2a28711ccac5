//! Dashboard reads: `GET /v1/stats/daily` and `GET /v1/ledger/balances`, scoped to the
//! authenticated merchant. Amounts are integers in minor units.

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use chrono::NaiveDate;
use payledger_projections::queries;
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::extract::AuthMerchant;
use crate::validate::FieldErrors;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/stats/daily", get(daily))
        .route("/v1/ledger/balances", get(balances))
}

/// Query of `GET /v1/stats/daily`: days `from..=to` as `YYYY-MM-DD` (UTC), either open.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DailyQuery {
    /// First day, `YYYY-MM-DD` (UTC).
    #[param(format = Date)]
    pub from: Option<String>,
    /// Last day, `YYYY-MM-DD` (UTC).
    #[param(format = Date)]
    pub to: Option<String>,
}

/// `GET /v1/stats/daily?from=&to=`: `{"data": [{day, currency, orders_created, orders_paid,
/// paid_amount, refunds_succeeded, refunded_amount}]}`, newest day first, at most 366 rows;
/// 422 for a malformed day.
#[utoipa::path(
    get,
    path = "/v1/stats/daily",
    tag = "ledger",
    security(("api_key" = [])),
    params(DailyQuery),
    responses(
        (status = 200, description = "Per day and currency: orders created and paid, amounts paid and refunded (minor units).", body = crate::openapi::DailyStatsList),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 422, response = crate::openapi::ValidationFailed),
        (status = 500, response = crate::openapi::InternalError),
        (status = 503, response = crate::openapi::ServiceUnavailable),
    ),
)]
pub(crate) async fn daily(
    State(state): State<AppState>,
    AuthMerchant(merchant): AuthMerchant,
    query: Result<Query<DailyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let mut e = FieldErrors::default();
    for (field, v) in [("from", &q.from), ("to", &q.to)] {
        if let Some(d) = v {
            if NaiveDate::parse_from_str(d, "%Y-%m-%d").is_err() || d.len() != 10 {
                e.add(field, "must be a day, YYYY-MM-DD");
            }
        }
    }
    e.finish()?;
    state.read_models_current().await?;
    let data = queries::daily_stats(state.db.pool(), &merchant, q.from.as_deref(), q.to.as_deref()).await?;
    Ok(Json(json!({ "data": data })))
}

/// `GET /v1/ledger/balances`: `{"data": [{account, currency, debit, credit, balance, lines}]}`
/// from the double-entry journal.
#[utoipa::path(
    get,
    path = "/v1/ledger/balances",
    tag = "ledger",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The merchant's accounts: debit, credit and balance in minor units.", body = crate::openapi::BalanceList),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::InternalError),
        (status = 503, response = crate::openapi::ServiceUnavailable),
    ),
)]
pub(crate) async fn balances(
    State(state): State<AppState>,
    AuthMerchant(merchant): AuthMerchant,
) -> Result<impl IntoResponse, ApiError> {
    state.read_models_current().await?;
    let data = queries::balances(state.db.pool(), &merchant).await?;
    Ok(Json(json!({ "data": data })))
}
