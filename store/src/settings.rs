//! Installation-wide settings kept in the database (table `settings`).

use sqlx::AnyPool;

use crate::backend::DbError;
use crate::sealed::Keyring;

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

/// The stored value of `key`, if any (a secret setting as stored: sealed).
///
/// # Errors
/// [`DbError::Sqlx`] when the database fails.
pub async fn get(pool: &AnyPool, key: &str) -> Result<Option<String>, DbError> {
    Ok(sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await?)
}

/// Where the secret setting `key` is sealed (the associated data of [`Keyring::seal`]).
pub fn secret_place(key: &str) -> String {
    format!("settings/{key}")
}

/// As [`get_or_init`] for a secret: stored sealed by `keyring` ([`crate::sealed`]), returned
/// open. A value stored before sealing existed is sealed in place (if it still holds what was
/// read), as is one sealed under an older key (re-wrapped under the current one).
///
/// # Errors
/// [`DbError::Sqlx`]; [`DbError::Corrupt`] when the stored value does not open with `keyring`.
pub async fn get_or_init_secret(
    pool: &AnyPool,
    keyring: &Keyring,
    key: &str,
    make: impl FnOnce() -> String,
) -> Result<String, DbError> {
    let place = secret_place(key);
    let stored = get_or_init(pool, key, || keyring.seal(&make(), &place)).await?;
    let corrupt = |e| DbError::Corrupt(format!("setting {key}: {e}"));
    if let Some(now) = keyring.rewrap(&stored, &place).map_err(corrupt)? {
        sqlx::query("UPDATE settings SET value = $1 WHERE key = $2 AND value = $3")
            .bind(now)
            .bind(key)
            .bind(&stored)
            .execute(pool)
            .await?;
    }
    keyring.open(&stored, &place).map_err(corrupt)
}
