//! Reads of the notify queue and the merchant's resend, always scoped to one merchant: another
//! merchant's notification is simply not found.
//!
//! The queue's statuses (`notify_job.status`), see [`JobStatus`]:
//! - `pending`: waiting for its next attempt at `next_attempt_at`, or an attempt is in flight
//!   (the sender moved `next_attempt_at` to the end of its lease);
//! - `delivered`: the merchant answered 2xx;
//! - `abandoned`: the last attempt of the retry schedule failed.

use chrono::{DateTime, Utc};
use payledger_projections::queries::{encode_cursor, PAGE_LIMIT_MAX};
use payledger_store::time::fmt_ts;
use payledger_store::OrderOwner;
use serde::Serialize;
use sqlx::AnyPool;
use uuid::Uuid;

/// Where a notification stands; the wire names are the stored `notify_job.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = NotificationStatus)]
pub enum JobStatus {
    Pending,
    Delivered,
    Abandoned,
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 3] = [Self::Pending, Self::Delivered, Self::Abandoned];

    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Abandoned => "abandoned",
        }
    }

    /// The status named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// One notification as the merchant sees it (`GET /v1/notifications`). Times are RFC 3339 UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = Notification)]
pub struct NotificationView {
    /// Stable across attempts and resends: the `id` of the body POSTed to `notify_url`.
    #[schema(format = Uuid)]
    pub notification_id: String,
    #[schema(format = Uuid)]
    pub order_id: String,
    /// `payment.succeeded`, `payment.failed`, `order.closed`, `refund.succeeded`, `refund.failed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A [`JobStatus`] wire name.
    #[schema(value_type = JobStatus)]
    pub status: String,
    /// Delivery attempts made so far (resends continue the count).
    pub attempts: i64,
    /// HTTP status of the last attempt; `None` before the first, or when it got no answer.
    pub last_status_code: Option<i64>,
    /// Why the last attempt failed (a non-2xx answer, a timeout, a refused connection).
    pub last_error: Option<String>,
    /// When the next attempt is due; only while `pending` (during an attempt: its lease's end).
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// How many times the merchant asked for a resend.
    pub resend_count: i64,
    /// When the last resend was asked for, and by whom (`merchant:<id>`).
    #[schema(format = DateTime)]
    pub resent_at: Option<String>,
    pub resent_by: Option<String>,
}

/// One delivery attempt (`notify_attempt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = NotificationAttempt)]
pub struct AttemptView {
    /// 1-based, continuing across resends.
    pub attempt: i64,
    #[schema(format = DateTime)]
    pub attempted_at: String,
    /// The merchant's HTTP status; `None` when there was no answer (see `error`).
    pub status_code: Option<i64>,
    /// From sending the request to the end of the answer (or the failure), milliseconds.
    pub latency_ms: i64,
    /// Why it failed; `None` for a 2xx.
    pub error: Option<String>,
}

/// A notification with its attempts (`GET /v1/notifications/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NotificationDetail {
    #[serde(flatten)]
    pub notification: NotificationView,
    /// Every attempt, oldest first.
    pub attempt_log: Vec<AttemptView>,
}

/// Filters of `GET /v1/notifications`.
#[derive(Debug, Clone, Default)]
pub struct NotificationFilter {
    pub status: Option<JobStatus>,
    pub order_id: Option<Uuid>,
}

/// One page, newest first, and the cursor of the next page (`None` on the last).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NotificationPage {
    /// At most `limit` notifications, newest first.
    pub data: Vec<NotificationView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Why a resend was refused.
#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    /// No such notification for this merchant.
    #[error("notification not found")]
    NotFound,
    /// The job is `pending`: its next attempt is already scheduled or in flight, and a second
    /// concurrent delivery of the same notification would only confuse the merchant.
    #[error("notification {0} is pending: its next attempt is already scheduled or in flight")]
    Pending(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

#[derive(sqlx::FromRow)]
struct Row {
    notification_id: String,
    order_id: String,
    event_type: String,
    status: String,
    attempts: i64,
    last_status_code: Option<i64>,
    last_error: Option<String>,
    next_attempt_at: String,
    created_at: String,
    updated_at: String,
    resend_count: i64,
    resent_at: Option<String>,
    resent_by: Option<String>,
}

impl From<Row> for NotificationView {
    fn from(r: Row) -> Self {
        let pending = r.status == JobStatus::Pending.as_str();
        Self {
            notification_id: r.notification_id,
            order_id: r.order_id,
            kind: r.event_type,
            next_attempt_at: pending.then_some(r.next_attempt_at),
            status: r.status,
            attempts: r.attempts,
            last_status_code: r.last_status_code,
            last_error: r.last_error,
            created_at: r.created_at,
            updated_at: r.updated_at,
            resend_count: r.resend_count,
            resent_at: r.resent_at,
            resent_by: r.resent_by,
        }
    }
}

#[derive(sqlx::FromRow)]
struct ScopedRow {
    merchant_id: String,
    #[sqlx(flatten)]
    row: Row,
}

/// The console's notification list: jobs of `mode`, of `merchant_id` or of every merchant. With
/// `failing`, those that need a person (abandoned, or pending after a failed attempt), else every
/// job; newest first, at most `limit` (clamped to 1..=[`PAGE_LIMIT_MAX`]). Each with its merchant.
///
/// # Errors
/// [`sqlx::Error`] when the database fails.
pub async fn list_for_console(
    pool: &AnyPool,
    mode: payledger_domain::Mode,
    merchant_id: Option<&str>,
    failing: bool,
    limit: i64,
) -> Result<Vec<(String, NotificationView)>, sqlx::Error> {
    let mut sql = format!("SELECT merchant_id, {COLUMNS} FROM notify_job WHERE mode = $1");
    if failing {
        sql.push_str(" AND (status = 'abandoned' OR (status = 'pending' AND attempts > 0))");
    }
    if merchant_id.is_some() {
        sql.push_str(" AND merchant_id = $2");
    }
    sql.push_str(&format!(
        " ORDER BY created_at DESC, notification_id DESC LIMIT {}",
        limit.clamp(1, PAGE_LIMIT_MAX)
    ));
    let mut query = sqlx::query_as::<_, ScopedRow>(&sql).bind(mode.as_str());
    if let Some(m) = merchant_id {
        query = query.bind(m);
    }
    Ok(query
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| (r.merchant_id, NotificationView::from(r.row)))
        .collect())
}

const COLUMNS: &str = "notification_id, order_id, event_type, status, attempts, last_status_code, last_error, \
     next_attempt_at, created_at, updated_at, resend_count, resent_at, resent_by";

/// The notifications of `owner` (one merchant, one mode) matching `filter`, newest first, `limit` per page (clamped to
/// 1..=[`PAGE_LIMIT_MAX`]), after `cursor` (from [`payledger_projections::queries::decode_cursor`]).
/// Keyset pagination on `(created_at, notification_id)`, so jobs queued meanwhile never shift or
/// repeat a page.
///
/// # Errors
/// [`sqlx::Error`] when the database fails.
pub async fn list(
    pool: &AnyPool,
    owner: &OrderOwner,
    filter: &NotificationFilter,
    limit: i64,
    cursor: Option<(String, String)>,
) -> Result<NotificationPage, sqlx::Error> {
    let limit = limit.clamp(1, PAGE_LIMIT_MAX);
    let mut sql = format!("SELECT {COLUMNS} FROM notify_job WHERE merchant_id = $1 AND mode = $2");
    let mut args: Vec<String> = vec![owner.merchant_id.clone(), owner.mode.as_str().to_string()];
    let mut push = |clause: &str, value: String, sql: &mut String| {
        args.push(value);
        sql.push_str(&clause.replace('?', &format!("${}", args.len())));
    };
    if let Some(status) = filter.status {
        push(" AND status = ?", status.as_str().to_string(), &mut sql);
    }
    if let Some(order_id) = filter.order_id {
        push(" AND order_id = ?", order_id.to_string(), &mut sql);
    }
    if let Some((created_at, id)) = cursor {
        push(" AND (created_at < ?", created_at.clone(), &mut sql);
        push(" OR (created_at = ?", created_at, &mut sql);
        push(" AND notification_id < ?))", id, &mut sql);
    }
    sql.push_str(&format!(
        " ORDER BY created_at DESC, notification_id DESC LIMIT {}",
        limit + 1
    ));
    let mut query = sqlx::query_as::<_, Row>(&sql);
    for a in &args {
        query = query.bind(a);
    }
    let mut rows = query.fetch_all(pool).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| encode_cursor(&r.created_at, &r.notification_id))
    } else {
        None
    };
    Ok(NotificationPage {
        data: rows.into_iter().map(NotificationView::from).collect(),
        next_cursor,
    })
}

/// The notification `notification_id` of `owner`, without its attempts.
///
/// # Errors
/// [`sqlx::Error`] when the database fails.
pub async fn get(
    pool: &AnyPool,
    owner: &OrderOwner,
    notification_id: Uuid,
) -> Result<Option<NotificationView>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notify_job WHERE notification_id = $1 AND merchant_id = $2 AND mode = $3"
    ))
    .bind(notification_id.to_string())
    .bind(&owner.merchant_id)
    .bind(owner.mode.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(NotificationView::from))
}

/// The notification `notification_id` of `owner` with every attempt, oldest first.
///
/// # Errors
/// [`sqlx::Error`] when the database fails.
pub async fn detail(
    pool: &AnyPool,
    owner: &OrderOwner,
    notification_id: Uuid,
) -> Result<Option<NotificationDetail>, sqlx::Error> {
    let Some(notification) = get(pool, owner, notification_id).await? else {
        return Ok(None);
    };
    let attempt_log = sqlx::query_as(
        "SELECT attempt, attempted_at, status_code, latency_ms, error FROM notify_attempt \
         WHERE notification_id = $1 ORDER BY attempt",
    )
    .bind(notification_id.to_string())
    .fetch_all(pool)
    .await?;
    Ok(Some(NotificationDetail {
        notification,
        attempt_log,
    }))
}

/// Makes a `delivered` or `abandoned` notification due again at `now`: status back to
/// `pending`, the same id and body, the attempts counter continuing (so the retry schedule goes
/// on from where it stood: a resent abandoned job gets one attempt and is abandoned again if it
/// fails). Records `actor` and `now` as the last resend. The caller wakes the [`crate::Sender`].
///
/// Only finished jobs are resent: a `pending` one is refused rather than attempted twice at once,
/// and since the sender only claims `pending` jobs, a finished job is never in flight.
///
/// # Errors
/// [`ResendError::NotFound`], [`ResendError::Pending`], [`ResendError::Db`].
pub async fn resend(
    pool: &AnyPool,
    owner: &OrderOwner,
    notification_id: Uuid,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<NotificationView, ResendError> {
    let now = fmt_ts(now);
    let updated = sqlx::query(
        "UPDATE notify_job SET status = 'pending', next_attempt_at = $1, updated_at = $1, \
         resend_count = resend_count + 1, resent_at = $1, resent_by = $2 \
         WHERE notification_id = $3 AND merchant_id = $4 AND mode = $5 AND status IN ('delivered', 'abandoned')",
    )
    .bind(&now)
    .bind(actor)
    .bind(notification_id.to_string())
    .bind(&owner.merchant_id)
    .bind(owner.mode.as_str())
    .execute(pool)
    .await?
    .rows_affected();
    let job = get(pool, owner, notification_id).await?.ok_or(ResendError::NotFound)?;
    if updated == 0 {
        return Err(ResendError::Pending(job.notification_id));
    }
    Ok(job)
}
