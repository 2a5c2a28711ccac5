//! Reads for the console's overview: sums over a [`OrderScope`] (one merchant, or every merchant
//! of a mode for operators). Amounts in minor units, per currency: sums of different currencies
//! are never added together.

use sqlx::AnyPool;

use crate::queries::{OrderScope, QueryError};

/// One day's figures in one currency, summed over the scope's merchants. Amounts in minor units.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DayTotals {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub currency: String,
    pub orders_created: i64,
    pub orders_paid: i64,
    pub paid_minor: i64,
    pub refunds_succeeded: i64,
    pub refunded_minor: i64,
}

/// Daily totals of `scope` for days `from_day..` (`YYYY-MM-DD`), oldest first.
///
/// # Errors
/// [`QueryError::Db`].
pub async fn daily_totals(pool: &AnyPool, scope: &OrderScope, from_day: &str) -> Result<Vec<DayTotals>, QueryError> {
    // CAST: PostgreSQL's SUM of bigint is numeric, which the Any driver does not decode.
    let mut sql = String::from(
        "SELECT day, currency, CAST(SUM(orders_created) AS BIGINT) AS orders_created, \
         CAST(SUM(orders_paid) AS BIGINT) AS orders_paid, CAST(SUM(paid_minor) AS BIGINT) AS paid_minor, \
         CAST(SUM(refunds_succeeded) AS BIGINT) AS refunds_succeeded, \
         CAST(SUM(refunded_minor) AS BIGINT) AS refunded_minor \
         FROM merchant_daily_stats WHERE mode = $1 AND day >= $2",
    );
    if scope.merchant_id.is_some() {
        sql.push_str(" AND merchant_id = $3");
    }
    sql.push_str(" GROUP BY day, currency ORDER BY day, currency");
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
