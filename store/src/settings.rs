//! Installation-wide settings kept in the database (table `settings`).

use sqlx::AnyPool;

use crate::backend::DbError;

/// Returns the value of `key`, creating it with `make()` first if absent. Concurrent callers get
/// the same value (insert-if-absent, then read).
///
/// # Errors
/// [`DbError::Sqlx`] when the database fails.
pub async fn get_or_init(pool: &AnyPool, key: &str, make: impl FnOnce() -> String) -> Result<String, DbError> {
    sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
        .bind(key)
        .bind(make())
        .execute(pool)
        .await?;
    let value: String = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(key)
        .fetch_one(pool)
        .await?;
    Ok(value)
}
