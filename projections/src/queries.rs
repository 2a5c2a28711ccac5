//! Reads of the read tables, always scoped to one merchant in one mode ([`OrderOwner`]): another
//! merchant's order, or the same merchant's order of the other mode, is simply not found.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use payledger_store::OrderOwner;
use sqlx::AnyPool;
use uuid::Uuid;

use crate::view::{OrderView, RefundView};

/// Most orders one list page returns.
pub const PAGE_LIMIT_MAX: i64 = 100;
/// Orders per page when the client does not say.
pub const PAGE_LIMIT_DEFAULT: i64 = 20;

/// A read failure: the database, or a stored document that does not decode.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("stored view does not decode: {0}")]
    Corrupt(String),
}

fn decode<T: serde::de::DeserializeOwned>(doc: Option<String>) -> Result<Option<T>, QueryError> {
    doc.map(|d| serde_json::from_str(&d).map_err(|e| QueryError::Corrupt(e.to_string())))
        .transpose()
}

/// The order `order_id` of `owner`.
///
/// # Errors
/// [`QueryError`] when the database fails or the row does not decode.
pub async fn order(pool: &AnyPool, owner: &OrderOwner, order_id: Uuid) -> Result<Option<OrderView>, QueryError> {
    let doc = sqlx::query_scalar("SELECT doc FROM order_view WHERE order_id = $1 AND merchant_id = $2 AND mode = $3")
        .bind(order_id.to_string())
        .bind(&owner.merchant_id)
        .bind(owner.mode.as_str())
        .fetch_optional(pool)
        .await?;
    decode(doc)
}

/// The refund `refund_id` of `owner`.
///
/// # Errors
/// [`QueryError`] when the database fails or the row does not decode.
pub async fn refund(pool: &AnyPool, owner: &OrderOwner, refund_id: Uuid) -> Result<Option<RefundView>, QueryError> {
    let doc = sqlx::query_scalar("SELECT doc FROM refund_view WHERE refund_id = $1 AND merchant_id = $2 AND mode = $3")
        .bind(refund_id.to_string())
        .bind(&owner.merchant_id)
        .bind(owner.mode.as_str())
        .fetch_optional(pool)
        .await?;
    decode(doc)
}

/// Whose orders a list reads: one mode, and one merchant or (operators in the console) every
/// merchant. The API always reads one merchant ([`OrderScope::of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderScope {
    pub mode: payledger_domain::Mode,
    /// `None`: every merchant.
    pub merchant_id: Option<String>,
}

impl OrderScope {
    /// One merchant in one mode: what an API key sees.
    pub fn of(owner: &OrderOwner) -> Self {
        Self {
            mode: owner.mode,
            merchant_id: Some(owner.merchant_id.clone()),
        }
    }
}

/// Filters of `GET /v1/orders` and of the console's order list.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub out_trade_no: Option<String>,
    /// Channel name (console only).
    pub channel: Option<String>,
    /// Amount at least / at most, minor units (console only).
    pub amount_min: Option<i64>,
    pub amount_max: Option<i64>,
    /// Wire name of a status, e.g. `paid`.
    pub status: Option<String>,
    /// Created at or after (RFC 3339 UTC text as stored).
    pub created_from: Option<String>,
    /// Created before.
    pub created_to: Option<String>,
}

/// One page of orders, newest first, and the cursor of the next page.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct OrderPage {
    /// At most `limit` orders, newest first.
    pub data: Vec<OrderView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Why a cursor was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid cursor")]
pub struct InvalidCursor;

/// Encodes the position after `(created_at, order_id)`: opaque to clients. Also used for other
/// lists keyed on `(created_at, <uuid>)` (the notify queue).
pub fn encode_cursor(created_at: &str, order_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{created_at}|{order_id}"))
}

/// Decodes a cursor from [`encode_cursor`].
///
/// # Errors
/// [`InvalidCursor`] for anything we did not issue.
pub fn decode_cursor(cursor: &str) -> Result<(String, String), InvalidCursor> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| InvalidCursor)?;
    let text = String::from_utf8(raw).map_err(|_| InvalidCursor)?;
    let (created_at, order_id) = text.split_once('|').ok_or(InvalidCursor)?;
    // Only what encode_cursor wrote: a timestamp and a uuid, so no crafted text reaches a query.
    chrono::DateTime::parse_from_rfc3339(created_at).map_err(|_| InvalidCursor)?;
    Uuid::parse_str(order_id).map_err(|_| InvalidCursor)?;
    Ok((created_at.to_string(), order_id.to_string()))
}

/// The orders of `owner` matching `filter`, newest first, `limit` per page (clamped to
/// 1..=[`PAGE_LIMIT_MAX`]), after `cursor`. Keyset pagination on `(created_at, order_id)`, so
/// orders inserted meanwhile never shift or repeat a page.
///
/// # Errors
/// [`QueryError`] when the database fails or a row does not decode.
pub async fn list_orders(
    pool: &AnyPool,
    owner: &OrderOwner,
    filter: &OrderFilter,
    limit: i64,
    cursor: Option<(String, String)>,
) -> Result<OrderPage, QueryError> {
    list_orders_in(pool, &OrderScope::of(owner), filter, limit, cursor).await
}

/// As [`list_orders`], for a [`OrderScope`]: every merchant of a mode when it names none.
///
/// # Errors
/// As [`list_orders`].
pub async fn list_orders_in(
    pool: &AnyPool,
    scope: &OrderScope,
    filter: &OrderFilter,
    limit: i64,
    cursor: Option<(String, String)>,
) -> Result<OrderPage, QueryError> {
    let limit = limit.clamp(1, PAGE_LIMIT_MAX);
    let mut sql = String::from("SELECT doc, created_at, order_id FROM order_view WHERE mode = $1");
    let mut args: Vec<String> = vec![scope.mode.as_str().to_string()];
    let mut push = |clause: &str, value: String, sql: &mut String| {
        args.push(value);
        sql.push_str(&clause.replace('?', &format!("${}", args.len())));
    };
    if let Some(m) = &scope.merchant_id {
        push(" AND merchant_id = ?", m.clone(), &mut sql);
    }
    if let Some(v) = &filter.channel {
        push(" AND channel = ?", v.clone(), &mut sql);
    }
    if let Some(v) = &filter.out_trade_no {
        push(" AND out_trade_no = ?", v.clone(), &mut sql);
    }
    if let Some(v) = &filter.status {
        push(" AND status = ?", v.clone(), &mut sql);
    }
    if let Some(v) = &filter.created_from {
        push(" AND created_at >= ?", v.clone(), &mut sql);
    }
    if let Some(v) = &filter.created_to {
        push(" AND created_at < ?", v.clone(), &mut sql);
    }
    if let Some((created_at, order_id)) = cursor {
        push(" AND (created_at < ?", created_at.clone(), &mut sql);
        push(" OR (created_at = ?", created_at, &mut sql);
        push(" AND order_id < ?))", order_id, &mut sql);
    }
    // Integers, not text: written into the statement (bound as text they would compare as text).
    if let Some(v) = filter.amount_min {
        sql.push_str(&format!(" AND amount_minor >= {v}"));
    }
    if let Some(v) = filter.amount_max {
        sql.push_str(&format!(" AND amount_minor <= {v}"));
    }
    sql.push_str(&format!(" ORDER BY created_at DESC, order_id DESC LIMIT {}", limit + 1));
    let mut query = sqlx::query_as::<_, (String, String, String)>(&sql);
    for a in &args {
        query = query.bind(a);
    }
    let mut rows = query.fetch_all(pool).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|(_, c, id)| encode_cursor(c, id))
    } else {
        None
    };
    let data = rows
        .into_iter()
        .map(|(doc, _, _)| serde_json::from_str(&doc).map_err(|e| QueryError::Corrupt(e.to_string())))
        .collect::<Result<_, _>>()?;
    Ok(OrderPage { data, next_cursor })
}

/// Most days `GET /v1/stats/daily` returns at once.
pub const STATS_DAYS_MAX: i64 = 366;

/// One merchant's figures for one UTC day and currency. Amounts in minor units.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DailyStats {
    /// `YYYY-MM-DD` (UTC).
    #[schema(format = Date)]
    pub day: String,
    /// ISO-4217 code.
    pub currency: String,
    /// Orders created that day.
    pub orders_created: i64,
    /// Orders paid that day.
    pub orders_paid: i64,
    /// Sum of payments received on time and late, minor units.
    pub paid_amount: i64,
    /// Refunds that succeeded that day.
    pub refunds_succeeded: i64,
    /// Sum of succeeded refunds, minor units.
    pub refunded_amount: i64,
}

/// The daily figures of `owner` (one merchant, one mode) for days in `from..=to` (`YYYY-MM-DD`, either open), newest
/// first, at most [`STATS_DAYS_MAX`] rows.
///
/// # Errors
/// [`QueryError::Db`] when the database fails.
pub async fn daily_stats(
    pool: &AnyPool,
    owner: &OrderOwner,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Vec<DailyStats>, QueryError> {
    let rows = sqlx::query_as::<_, DailyStats>(&format!(
        // The table keeps each day per channel: summed here. CAST: PostgreSQL's SUM of bigint is
        // numeric, which the Any driver does not decode.
        "SELECT day, currency, CAST(SUM(orders_created) AS BIGINT) AS orders_created, \
         CAST(SUM(orders_paid) AS BIGINT) AS orders_paid, CAST(SUM(paid_minor) AS BIGINT) AS paid_amount, \
         CAST(SUM(refunds_succeeded) AS BIGINT) AS refunds_succeeded, \
         CAST(SUM(refunded_minor) AS BIGINT) AS refunded_amount FROM merchant_daily_stats \
         WHERE merchant_id = $1 AND mode = $2 AND day >= $3 AND day <= $4 GROUP BY day, currency \
         ORDER BY day DESC, currency LIMIT {STATS_DAYS_MAX}"
    ))
    .bind(&owner.merchant_id)
    .bind(owner.mode.as_str())
    .bind(from.unwrap_or("0000-00-00"))
    .bind(to.unwrap_or("9999-99-99"))
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// One account of the merchant's book. Amounts in minor units.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AccountBalance {
    /// e.g. `channel_clearing:sandbox`, `merchant_payable:<merchant_id>`, `suspense:<merchant_id>`.
    pub account: String,
    /// ISO-4217 code.
    pub currency: String,
    /// Sum of debit postings, minor units.
    pub debit: i64,
    /// Sum of credit postings, minor units.
    pub credit: i64,
    /// On the account's normal side, minor units: debit − credit for `channel_clearing:*` (an
    /// asset), credit − debit for the others (what is owed).
    pub balance: i64,
    /// Journal lines summed.
    pub lines: i64,
}

/// The account balances of `owner`'s book (one merchant, one mode) from the journal, by
/// account and currency.
///
/// # Errors
/// [`QueryError::Db`] when the database fails.
pub async fn balances(pool: &AnyPool, owner: &OrderOwner) -> Result<Vec<AccountBalance>, QueryError> {
    let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT account, currency, debit_minor, credit_minor, lines FROM account_balance \
         WHERE merchant_id = $1 AND mode = $2 ORDER BY account, currency",
    )
    .bind(&owner.merchant_id)
    .bind(owner.mode.as_str())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(account, currency, debit, credit, lines)| {
            let balance = if account.starts_with("channel_clearing:") {
                debit - credit
            } else {
                credit - debit
            };
            AccountBalance {
                account,
                currency,
                debit,
                credit,
                balance,
                lines,
            }
        })
        .collect())
}
