//! `/v1/notifications`: the merchant's view of its notify queue, and resend.
//!
//! A notification's `notification_id` is the `id` of the JSON body POSTed to `notify_url`; it
//! stays the same across attempts and resends, so merchants de-duplicate on it.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use payledger_notifier::queries::{self as notify, JobStatus, NotificationFilter, ResendError};

use serde::Deserialize;

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::extract::AuthMerchant;
use crate::http::parse_id;
use crate::validate::{self, FieldErrors};

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/notifications", get(list))
        .route("/v1/notifications/{notification_id}", get(show))
        .route("/v1/notifications/{notification_id}/resend", post(resend))
}

/// Query of `GET /v1/notifications`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `pending`, `delivered` or `abandoned`.
    #[param(value_type = Option<JobStatus>)]
    pub status: Option<String>,
    /// Only this order's notifications (a UUID).
    #[param(format = Uuid)]
    pub order_id: Option<String>,
    /// Page size, 1..=100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `GET /v1/notifications?status=&order_id=&limit=&cursor=`: the merchant's notifications,
/// newest first, keyset pagination: `{data: [{notification_id, order_id, type, status, attempts,
/// last_status_code, last_error, next_attempt_at, created_at, updated_at, resend_count,
/// resent_at, resent_by}], next_cursor}`. 422 naming the field for an unknown status, an
/// `order_id` that is not a UUID, a limit out of range or a cursor we did not issue.
#[utoipa::path(
    get,
    path = "/v1/notifications",
    tag = "notifications",
    security(("api_key" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "One page of the merchant's notifications, newest first.", body = notify::NotificationPage),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 422, response = crate::openapi::ValidationFailed),
        (status = 500, response = crate::openapi::InternalError),
        (status = 503, response = crate::openapi::ServiceUnavailable),
    ),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    AuthMerchant(merchant): AuthMerchant,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let mut e = FieldErrors::default();
    let status = q.status.as_deref().and_then(|s| {
        let parsed = JobStatus::parse(s);
        if parsed.is_none() {
            let names: Vec<&str> = JobStatus::ALL.iter().map(|st| st.as_str()).collect();
            e.add("status", format!("one of {}", names.join(", ")));
        }
        parsed
    });
    let order_id = q.order_id.as_deref().and_then(|id| {
        let parsed = uuid::Uuid::parse_str(id).ok();
        if parsed.is_none() {
            e.add("order_id", "must be an order id (a UUID)");
        }
        parsed
    });
    let (limit, cursor) = validate::page(&mut e, q.limit, q.cursor.as_deref());
    e.finish()?;
    let filter = NotificationFilter { status, order_id };
    let page = notify::list(state.db.pool(), &merchant, &filter, limit, cursor).await?;
    Ok(Json(page))
}

/// `GET /v1/notifications/{notification_id}`: the notification as in the list plus
/// `attempt_log: [{attempt, attempted_at, status_code, latency_ms, error}]`, oldest first; 404
/// if it is not this merchant's.
#[utoipa::path(
    get,
    path = "/v1/notifications/{notification_id}",
    tag = "notifications",
    security(("api_key" = [])),
    params(("notification_id" = String, Path, format = Uuid, description = "The notification's id.")),
    responses(
        (status = 200, description = "The notification and every delivery attempt, oldest first.", body = notify::NotificationDetail),
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
    Path(notification_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let notification_id = parse_id(&notification_id, "notification")?;
    notify::detail(state.db.pool(), &merchant, notification_id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("notification"))
}

/// `POST /v1/notifications/{notification_id}/resend` (no body): a `delivered` or `abandoned`
/// notification is due again now, with the same id and body; 202 Accepted with the notification
/// (delivery happens in the background: watch its `status`). 409 `notification-pending` when it
/// is `pending` (its next attempt is already scheduled or in flight); 404 if it is not this
/// merchant's. Who asked is recorded as `resent_by`.
#[utoipa::path(
    post,
    path = "/v1/notifications/{notification_id}/resend",
    tag = "notifications",
    security(("api_key" = [])),
    params(("notification_id" = String, Path, format = Uuid, description = "The notification's id.")),
    responses(
        (status = 202, description = "Due again now; delivery happens in the background.", body = notify::NotificationView),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 500, response = crate::openapi::InternalError),
        (status = 503, response = crate::openapi::ServiceUnavailable),
    ),
)]
pub(crate) async fn resend(
    State(state): State<AppState>,
    AuthMerchant(merchant): AuthMerchant,
    Path(notification_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let notification_id = parse_id(&notification_id, "notification")?;
    let actor = format!("merchant:{}", merchant.merchant_id);
    let job = notify::resend(state.db.pool(), &merchant, notification_id, &actor, Utc::now())
        .await
        .map_err(|e| match e {
            ResendError::NotFound => ApiError::NotFound("notification"),
            ResendError::Pending(_) => ApiError::Conflict {
                slug: "notification-pending",
                detail: e.to_string(),
            },
            ResendError::Db(e) => e.into(),
        })?;
    state.notify_queued.notify_one();
    Ok((StatusCode::ACCEPTED, Json(job)))
}
