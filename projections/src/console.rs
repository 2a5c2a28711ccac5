//! Reads for the console's overview: sums over a [`OrderScope`] (one merchant, or every merchant
//! of a mode for operators). Amounts in minor units, per currency: sums of different currencies
//! are never added together.

use sqlx::AnyPool;

use crate::queries::{OrderScope, QueryError};

/// One day's figures in one currency on one channel, summed over the scope's merchants. Amounts
/// in minor units.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DayTotals {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub currency: String,
    /// The orders' channel.
    pub channel: String,
    pub orders_created: i64,
    pub orders_paid: i64,
    pub paid_minor: i64,
    pub refunds_succeeded: i64,
    pub refunded_minor: i64,
}

/// Daily totals of `scope` per currency and channel for days `from_day..` (`YYYY-MM-DD`), oldest
/// first, then by currency and channel.
///
/// # Errors
/// [`QueryError::Db`].
pub async fn daily_totals(pool: &AnyPool, scope: &OrderScope, from_day: &str) -> Result<Vec<DayTotals>, QueryError> {
    // CAST: PostgreSQL's SUM of bigint is numeric, which the Any driver does not decode.
    let mut sql = String::from(
        "SELECT day, currency, channel, CAST(SUM(orders_created) AS BIGINT) AS orders_created, \
         CAST(SUM(orders_paid) AS BIGINT) AS orders_paid, CAST(SUM(paid_minor) AS BIGINT) AS paid_minor, \
         CAST(SUM(refunds_succeeded) AS BIGINT) AS refunds_succeeded, \
         CAST(SUM(refunded_minor) AS BIGINT) AS refunded_minor \
         FROM merchant_daily_stats WHERE mode = $1 AND day >= $2",
    );
    if scope.merchant_id.is_some() {
        sql.push_str(" AND merchant_id = $3");
    }
    sql.push_str(" GROUP BY day, currency, channel ORDER BY day, currency, channel");
    let mut query = sqlx::query_as::<_, DayTotals>(&sql)
        .bind(scope.mode.as_str())
        .bind(from_day);
    if let Some(m) = &scope.merchant_id {
        query = query.bind(m);
    }
    Ok(query.fetch_all(pool).await?)
}

/// Notifications of `scope` that are failing: abandoned, or still pending after a failed
/// attempt.
///
/// # Errors
/// [`QueryError::Db`].
pub async fn failing_notifications(pool: &AnyPool, scope: &OrderScope) -> Result<i64, QueryError> {
    let mut sql = String::from(
        "SELECT COUNT(*) FROM notify_job WHERE mode = $1 \
         AND (status = 'abandoned' OR (status = 'pending' AND attempts > 0))",
    );
    if scope.merchant_id.is_some() {
        sql.push_str(" AND merchant_id = $2");
    }
    let mut query = sqlx::query_scalar::<_, i64>(&sql).bind(scope.mode.as_str());
    if let Some(m) = &scope.merchant_id {
        query = query.bind(m);
    }
    Ok(query.fetch_one(pool).await?)
}

/// One refund in the console's list. Amount in minor units.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RefundRow {
    pub refund_id: String,
    pub order_id: String,
    pub merchant_id: String,
    pub out_refund_no: String,
    pub status: String,
    pub amount_minor: i64,
    pub currency: String,
    pub created_at: String,
}

/// Refunds of `scope`, newest first, at most `limit`: with `open`, only those that need watching
/// (pending, failed), else all.
///
/// # Errors
/// [`QueryError::Db`].
pub async fn refunds(pool: &AnyPool, scope: &OrderScope, open: bool, limit: i64) -> Result<Vec<RefundRow>, QueryError> {
    let mut sql = String::from(
        "SELECT refund_id, order_id, merchant_id, out_refund_no, status, amount_minor, currency, created_at \
         FROM refund_view WHERE mode = $1",
    );
    if open {
        sql.push_str(" AND status IN ('pending', 'failed')");
    }
    if scope.merchant_id.is_some() {
        sql.push_str(" AND merchant_id = $2");
    }
    sql.push_str(&format!(
        " ORDER BY created_at DESC, refund_id DESC LIMIT {}",
        limit.clamp(1, 500)
    ));
    let mut query = sqlx::query_as::<_, RefundRow>(&sql).bind(scope.mode.as_str());
    if let Some(m) = &scope.merchant_id {
        query = query.bind(m);
    }
    Ok(query.fetch_all(pool).await?)
}

/// One account's balance of one merchant's book. Amounts in minor units.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BalanceRow {
    pub merchant_id: String,
    pub account: String,
    pub currency: String,
    pub debit_minor: i64,
    pub credit_minor: i64,
    pub lines: i64,
}

/// Every account balance of `scope`'s books, by merchant and account.
///
/// # Errors
/// [`QueryError::Db`].
pub async fn balances(pool: &AnyPool, scope: &OrderScope) -> Result<Vec<BalanceRow>, QueryError> {
    let mut sql = String::from(
        "SELECT merchant_id, account, currency, debit_minor, credit_minor, lines FROM account_balance WHERE mode = $1",
    );
    if scope.merchant_id.is_some() {
        sql.push_str(" AND merchant_id = $2");
    }
    sql.push_str(" ORDER BY merchant_id, account, currency LIMIT 2000");
    let mut query = sqlx::query_as::<_, BalanceRow>(&sql).bind(scope.mode.as_str());
    if let Some(m) = &scope.merchant_id {
        query = query.bind(m);
    }
    Ok(query.fetch_all(pool).await?)
}

/// One line of a journal entry. Amounts in minor units.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EntryLine {
    pub entry_id: String,
    pub line: i64,
    pub merchant_id: String,
    pub order_id: String,
    pub event_type: String,
    pub reference: String,
    pub account: String,
    pub debit_minor: i64,
    pub credit_minor: i64,
    pub currency: String,
    pub occurred_at: String,
}

/// The journal lines of `scope` whose reference (a `channel_trade_no`, a `refund_id`) or order
/// id is `reference`, in time order.
///
/// # Errors
/// [`QueryError::Db`].
pub async fn entries(pool: &AnyPool, scope: &OrderScope, reference: &str) -> Result<Vec<EntryLine>, QueryError> {
    let mut sql = String::from(
        "SELECT entry_id, line, merchant_id, order_id, event_type, reference, account, debit_minor, credit_minor, \
         currency, occurred_at FROM ledger_entry WHERE mode = $1 AND (reference = $2 OR order_id = $2)",
    );
    if scope.merchant_id.is_some() {
        sql.push_str(" AND merchant_id = $3");
    }
    sql.push_str(" ORDER BY occurred_at, entry_id, line LIMIT 500");
    let mut query = sqlx::query_as::<_, EntryLine>(&sql)
        .bind(scope.mode.as_str())
        .bind(reference);
    if let Some(m) = &scope.merchant_id {
        query = query.bind(m);
    }
    Ok(query.fetch_all(pool).await?)
}
