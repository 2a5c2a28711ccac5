//! Merchants: who may call the API, in which mode, and the secret their notifications are signed
//! with.
//!
//! Each merchant has two API keys: the live key (real channels, real money) and the test key
//! (the sandbox only); the key a request carries decides its [`Mode`]. Only their SHA-256 is
//! stored. A merchant added before modes existed has its old key as live key and no test key
//! (and no test webhook secret) until [`set_test_credentials`] gives it both.
//!
//! The webhook secret is stored sealed ([`crate::sealed`], place
//! `merchants.webhook_secret/<merchant_id>`): every function that writes or reads it takes the
//! process's [`Keyring`].

use chrono::{DateTime, Utc};
use payledger_domain::Mode;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, AnyPool};

use crate::backend::DbError;
use crate::sealed::Keyring;
use crate::time::fmt_ts;

/// A merchant as stored (the API keys themselves are never stored, only their SHA-256). `Debug`
/// never shows the webhook secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Merchant {
    pub merchant_id: String,
    /// HMAC-SHA256 key for `Payledger-Signature` on live-mode notifications (opened: stored
    /// sealed).
    pub webhook_secret: String,
    /// The same for test-mode notifications: its own secret, so that a notification about
    /// sandbox money never carries the signature a live receiver trusts. `None` for a merchant
    /// from before modes until `payledger merchants test-key` gives it one.
    pub test_webhook_secret: Option<String>,
    /// The live secret before the last rotation, and until when it still signs (beside the
    /// current one).
    pub previous_webhook_secret: Option<(String, DateTime<Utc>)>,
    /// The same for test mode.
    pub previous_test_webhook_secret: Option<(String, DateTime<Utc>)>,
}

impl Merchant {
    /// The secret notifications of `mode` are signed with, if the merchant has one.
    pub fn webhook_secret_for(&self, mode: Mode) -> Option<&str> {
        match mode {
            Mode::Live => Some(&self.webhook_secret),
            Mode::Test => self.test_webhook_secret.as_deref(),
        }
    }

    /// Every secret a notification of `mode` sent at `now` is signed with: the current one
    /// first, then the previous one while its overlap lasts. Empty when the merchant has no
    /// secret of that mode.
    pub fn webhook_secrets_for(&self, mode: Mode, now: DateTime<Utc>) -> Vec<&str> {
        let previous = match mode {
            Mode::Live => &self.previous_webhook_secret,
            Mode::Test => &self.previous_test_webhook_secret,
        };
        self.webhook_secret_for(mode)
            .into_iter()
            .chain(
                previous
                    .iter()
                    .filter(|(_, until)| *until > now)
                    .map(|(s, _)| s.as_str()),
            )
            .collect()
    }
}

impl std::fmt::Debug for Merchant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Merchant")
            .field("merchant_id", &self.merchant_id)
            .finish_non_exhaustive()
    }
}

/// Why adding a merchant failed.
#[derive(Debug, thiserror::Error)]
pub enum AddMerchantError {
    #[error("merchant {0:?} already exists")]
    Exists(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Hex SHA-256 of an API key. API keys are 256-bit random tokens, so an unsalted fast hash does
/// not weaken them and lets authentication look the merchant up by hash in one query.
pub fn api_key_hash(api_key: &str) -> String {
    hex::encode(Sha256::digest(api_key.as_bytes()))
}

/// Where a merchant's (live) webhook secret is sealed (the associated data of [`Keyring::seal`]).
pub fn webhook_secret_place(merchant_id: &str) -> String {
    format!("merchants.webhook_secret/{merchant_id}")
}

/// Where a merchant's test webhook secret is sealed.
pub fn test_webhook_secret_place(merchant_id: &str) -> String {
    format!("merchants.test_webhook_secret/{merchant_id}")
}

/// Where the webhook secret column `column` of `merchant_id` is sealed: each column its own
/// place, so a sealed value cannot be moved from one to another.
fn place_of(column: &str, merchant_id: &str) -> String {
    match column {
        "webhook_secret" => webhook_secret_place(merchant_id),
        "test_webhook_secret" => test_webhook_secret_place(merchant_id),
        other => format!("merchants.{other}/{merchant_id}"),
    }
}

/// The sealed webhook secret columns: current and previous, per mode.
const SECRET_COLUMNS: [&str; 4] = [
    "webhook_secret",
    "test_webhook_secret",
    "previous_webhook_secret",
    "previous_test_webhook_secret",
];

/// A new merchant's credentials, one API key and one webhook secret per mode (random tokens; by
/// convention `plk_live_…`, `plk_test_…`, `whsec_…`).
#[derive(Clone, Copy)]
pub struct Credentials<'a> {
    /// The key of live mode: real channels only.
    pub live_api_key: &'a str,
    /// The key of test mode: the sandbox only.
    pub test_api_key: &'a str,
    /// Signs live-mode notifications.
    pub webhook_secret: &'a str,
    /// Signs test-mode notifications.
    pub test_webhook_secret: &'a str,
}

/// Stores a new merchant with the hashes of its API keys and its webhook secrets sealed by
/// `keyring`.
///
/// # Errors
/// [`AddMerchantError::Exists`] when `merchant_id` is taken; [`AddMerchantError::Db`] otherwise
/// (also when a key equals one stored already).
pub async fn add(
    pool: &AnyPool,
    keyring: &Keyring,
    merchant_id: &str,
    credentials: Credentials<'_>,
) -> Result<(), AddMerchantError> {
    let mut conn = pool.acquire().await.map_err(DbError::from)?;
    if !add_in(&mut conn, keyring, merchant_id, credentials).await? {
        return Err(AddMerchantError::Exists(merchant_id.to_string()));
    }
    Ok(())
}

/// As [`add`], on `conn` (inside a caller's transaction); false when `merchant_id` is taken.
///
/// # Errors
/// [`DbError::Sqlx`] (also when a key equals one stored already).
pub async fn add_in(
    conn: &mut AnyConnection,
    keyring: &Keyring,
    merchant_id: &str,
    credentials: Credentials<'_>,
) -> Result<bool, DbError> {
    let result = sqlx::query(
        "INSERT INTO merchants (merchant_id, api_key_sha256, test_api_key_sha256, webhook_secret, \
         test_webhook_secret, created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (merchant_id) DO NOTHING",
    )
    .bind(merchant_id)
    .bind(api_key_hash(credentials.live_api_key))
    .bind(api_key_hash(credentials.test_api_key))
    .bind(keyring.seal(credentials.webhook_secret, &webhook_secret_place(merchant_id)))
    .bind(keyring.seal(credentials.test_webhook_secret, &test_webhook_secret_place(merchant_id)))
    .bind(fmt_ts(Utc::now()))
    .execute(&mut *conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Gives merchant `merchant_id` new test-mode credentials, replacing those it had (the old key
/// stops working within [`API_KEY_CACHE_TTL_MS`]): how a merchant from before modes gets its
/// first. Returns whether the merchant exists.
///
/// # Errors
/// [`DbError::Sqlx`] when the database fails.
pub async fn set_test_credentials(
    pool: &AnyPool,
    keyring: &Keyring,
    merchant_id: &str,
    test_api_key: &str,
    test_webhook_secret: &str,
) -> Result<bool, DbError> {
    let changed =
        sqlx::query("UPDATE merchants SET test_api_key_sha256 = $1, test_webhook_secret = $2 WHERE merchant_id = $3")
            .bind(api_key_hash(test_api_key))
            .bind(keyring.seal(test_webhook_secret, &test_webhook_secret_place(merchant_id)))
            .bind(merchant_id)
            .execute(pool)
            .await?
            .rows_affected();
    Ok(changed > 0)
}

/// The merchant whose API key is `api_key`, and the key's mode, if any.
///
/// # Errors
/// [`DbError::Sqlx`] when the database fails; [`DbError::Corrupt`] when the webhook secret does
/// not open with `keyring`.
pub async fn by_api_key(pool: &AnyPool, keyring: &Keyring, api_key: &str) -> Result<Option<(Merchant, Mode)>, DbError> {
    by_key_hash(pool, keyring, &ApiKeyHash::of(api_key)).await
}

async fn by_key_hash(
    pool: &AnyPool,
    keyring: &Keyring,
    hash: &ApiKeyHash,
) -> Result<Option<(Merchant, Mode)>, DbError> {
    // Two indexed lookups in one statement; a key is one merchant's live or test key, never both.
    // A disabled merchant's keys are refused like unknown ones.
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT 'live' FROM merchants WHERE api_key_sha256 = $1 AND disabled_at IS NULL \
         UNION ALL SELECT 'test' FROM merchants WHERE test_api_key_sha256 = $1 AND disabled_at IS NULL",
    )
    .bind(&hash.0)
    .fetch_optional(pool)
    .await?;
    let Some((mode,)) = row else { return Ok(None) };
    let mode = Mode::parse(&mode).ok_or_else(|| DbError::Corrupt(format!("key mode {mode:?}")))?;
    let column = match mode {
        Mode::Live => "api_key_sha256",
        Mode::Test => "test_api_key_sha256",
    };
    let stored: Option<StoredMerchant> =
        sqlx::query_as(&format!("SELECT {STORED_COLUMNS} FROM merchants WHERE {column} = $1"))
            .bind(&hash.0)
            .fetch_optional(pool)
            .await?;
    stored.map(|m| Ok((opened(keyring, m)?, mode))).transpose()
}

/// An API key's [`api_key_hash`], computed once per request and used for every lookup of it
/// ([`ApiKeyCache::known`], [`ApiKeyCache::merchant`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiKeyHash(String);

impl ApiKeyHash {
    /// The hash of `api_key`.
    pub fn of(api_key: &str) -> Self {
        Self(api_key_hash(api_key))
    }
}

/// A merchant's row as stored (secrets sealed).
#[derive(sqlx::FromRow)]
struct StoredMerchant {
    merchant_id: String,
    webhook_secret: String,
    test_webhook_secret: Option<String>,
    previous_webhook_secret: Option<String>,
    previous_webhook_secret_until: Option<String>,
    previous_test_webhook_secret: Option<String>,
    previous_test_webhook_secret_until: Option<String>,
}

const STORED_COLUMNS: &str = "merchant_id, webhook_secret, test_webhook_secret, previous_webhook_secret, \
     previous_webhook_secret_until, previous_test_webhook_secret, previous_test_webhook_secret_until";

fn opened(keyring: &Keyring, m: StoredMerchant) -> Result<Merchant, DbError> {
    let id = m.merchant_id;
    let corrupt = |e: String| DbError::Corrupt(format!("merchant {id}: {e}"));
    let open = |stored: &str, column: &str| {
        keyring
            .open(stored, &place_of(column, &id))
            .map_err(|e| corrupt(e.to_string()))
    };
    let previous = |stored: Option<String>, until: Option<String>, column: &str| -> Result<_, DbError> {
        match (stored, until) {
            (Some(s), Some(u)) => {
                let until = crate::time::parse_ts(&u).map_err(|e| corrupt(e.to_string()))?;
                Ok(Some((open(&s, column)?, until)))
            }
            _ => Ok(None),
        }
    };
    Ok(Merchant {
        webhook_secret: open(&m.webhook_secret, "webhook_secret")?,
        test_webhook_secret: m
            .test_webhook_secret
            .as_deref()
            .map(|t| open(t, "test_webhook_secret"))
            .transpose()?,
        previous_webhook_secret: previous(
            m.previous_webhook_secret,
            m.previous_webhook_secret_until,
            "previous_webhook_secret",
        )?,
        previous_test_webhook_secret: previous(
            m.previous_test_webhook_secret,
            m.previous_test_webhook_secret_until,
            "previous_test_webhook_secret",
        )?,
        merchant_id: id,
    })
}

/// One merchant whose webhook secret is stored sealed, as `(merchant_id, stored value)`, if any:
/// a sign that the installation already has a secrets key.
///
/// # Errors
/// [`DbError::Sqlx`] when the database fails.
pub async fn any_sealed(pool: &AnyPool) -> Result<Option<(String, String)>, DbError> {
    Ok(sqlx::query_as(
        "SELECT merchant_id, webhook_secret FROM merchants WHERE webhook_secret LIKE 'sealed1:%' \
         ORDER BY merchant_id LIMIT 1",
    )
    .fetch_optional(pool)
    .await?)
}

/// Seals the webhook secrets stored before sealing existed and re-wraps those sealed under an
/// older key of `keyring` under its current one (key rotation); returns how many changed. Each
/// row changes only if it still holds what was read, so processes doing this at once agree. A
/// secret that does not open with `keyring` is logged (error) and left as it is: one damaged
/// row must not stop the installation (that merchant's notifications fail, visibly, instead).
///
/// # Errors
/// [`DbError::Sqlx`].
pub async fn seal_stored(pool: &AnyPool, keyring: &Keyring) -> Result<u64, DbError> {
    let rows: Vec<StoredMerchant> = sqlx::query_as(&format!("SELECT {STORED_COLUMNS} FROM merchants"))
        .fetch_all(pool)
        .await?;
    let mut changed = 0;
    for m in rows {
        let merchant_id = m.merchant_id;
        let columns = [
            ("webhook_secret", Some(m.webhook_secret)),
            ("test_webhook_secret", m.test_webhook_secret),
            ("previous_webhook_secret", m.previous_webhook_secret),
            ("previous_test_webhook_secret", m.previous_test_webhook_secret),
        ];
        for (column, stored) in columns {
            let Some(stored) = stored else { continue };
            let now = match keyring.rewrap(&stored, &place_of(column, &merchant_id)) {
                Ok(now) => now,
                Err(e) => {
                    tracing::error!(%merchant_id, column, error = %e, "a webhook secret does not open; left as it is");
                    continue;
                }
            };
            if let Some(now) = now {
                // `column` is one of SECRET_COLUMNS, never input.
                debug_assert!(SECRET_COLUMNS.contains(&column));
                changed += sqlx::query(&format!(
                    "UPDATE merchants SET {column} = $1 WHERE merchant_id = $2 AND {column} = $3"
                ))
                .bind(now)
                .bind(&merchant_id)
                .bind(&stored)
                .execute(pool)
                .await?
                .rows_affected();
            }
        }
    }
    Ok(changed)
}

/// How long [`ApiKeyCache`] trusts a key it found, milliseconds. Merchants' keys are only ever
/// added today; when keys can be rotated or revoked, this is how long an old key keeps working
/// in a process that saw it just before.
pub const API_KEY_CACHE_TTL_MS: u64 = 1_000;
/// Keys [`ApiKeyCache`] holds; past it the cache starts again empty.
pub const API_KEY_CACHE_ENTRIES_MAX: usize = 10_000;

type CacheEntry = ((Merchant, Mode), std::time::Instant);

/// The merchants (and modes) of recently seen API keys, for [`API_KEY_CACHE_TTL_MS`]: under load nearly
/// every request skips the lookup (a statement and a round trip each). Only keys that were
/// found are kept, so a wrong key always costs a lookup and never a cache entry.
#[derive(Default)]
pub struct ApiKeyCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, CacheEntry>>,
}

impl ApiKeyCache {
    /// As [`by_api_key`] for the key whose hash is `hash`, answered from the cache while the
    /// entry is fresh.
    ///
    /// # Errors
    /// [`DbError::Sqlx`] when the database fails; [`DbError::Corrupt`] when the webhook secret
    /// does not open with `keyring`.
    pub async fn merchant(
        &self,
        pool: &AnyPool,
        keyring: &Keyring,
        hash: &ApiKeyHash,
    ) -> Result<Option<(Merchant, Mode)>, DbError> {
        let ttl = std::time::Duration::from_millis(API_KEY_CACHE_TTL_MS);
        let fresh = self
            .lock()
            .get(&hash.0)
            .filter(|(_, at)| at.elapsed() < ttl)
            .map(|(m, _)| m.clone());
        if fresh.is_some() {
            return Ok(fresh);
        }
        let found = by_key_hash(pool, keyring, hash).await?;
        if let Some(m) = &found {
            let mut entries = self.lock();
            if entries.len() >= API_KEY_CACHE_ENTRIES_MAX {
                entries.clear();
            }
            entries.insert(hash.0.clone(), (m.clone(), std::time::Instant::now()));
        }
        Ok(found)
    }

    /// Whether a lookup of this process found the key whose hash is `hash` before (its entry
    /// may since have gone stale; entries go only when the cache is full and starts again).
    /// Answered from memory: the HTTP layer charges keys it does not know against the client
    /// address's rate limit before their lookup, and never a key known here.
    pub fn known(&self, hash: &ApiKeyHash) -> bool {
        self.lock().contains_key(&hash.0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, CacheEntry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The merchant `merchant_id`, if it exists.
///
/// # Errors
/// [`DbError::Sqlx`] when the database fails; [`DbError::Corrupt`] when the webhook secret does
/// not open with `keyring`.
pub async fn get(pool: &AnyPool, keyring: &Keyring, merchant_id: &str) -> Result<Option<Merchant>, DbError> {
    let row: Option<StoredMerchant> = sqlx::query_as(&format!(
        "SELECT {STORED_COLUMNS} FROM merchants WHERE merchant_id = $1"
    ))
    .bind(merchant_id)
    .fetch_optional(pool)
    .await?;
    row.map(|row| opened(keyring, row)).transpose()
}

/// One merchant in the console's list.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MerchantSummary {
    pub merchant_id: String,
    pub created_at: String,
    /// When it was disabled; `None`: enabled.
    pub disabled_at: Option<String>,
}

/// Every merchant (`only`: just that one), by id.
///
/// # Errors
/// [`DbError::Sqlx`].
pub async fn list(pool: &AnyPool, only: Option<&str>) -> Result<Vec<MerchantSummary>, DbError> {
    let mut sql = String::from("SELECT merchant_id, created_at, disabled_at FROM merchants");
    if only.is_some() {
        sql.push_str(" WHERE merchant_id = $1");
    }
    sql.push_str(" ORDER BY merchant_id LIMIT 10000");
    let mut query = sqlx::query_as::<_, MerchantSummary>(&sql);
    if let Some(m) = only {
        query = query.bind(m);
    }
    Ok(query.fetch_all(pool).await?)
}

/// A change of a merchant's stored credentials or state, made by [`change_in`] in the caller's
/// transaction (beside the event that records it).
pub enum CredentialChange<'a> {
    /// A new API key for `mode` (only its hash is stored); the old one stops working at once
    /// (within [`API_KEY_CACHE_TTL_MS`] in processes that saw it just before).
    ApiKey { mode: Mode, api_key: &'a str },
    /// A new webhook secret for `mode`; the current one becomes the previous, signing beside the
    /// new one until `previous_until`.
    WebhookSecret {
        mode: Mode,
        secret: &'a str,
        previous_until: DateTime<Utc>,
    },
    /// Disabled at this time (`None`: enabled again).
    Disabled(Option<DateTime<Utc>>),
}

/// Applies `change` to merchant `merchant_id` on `conn` (inside the caller's transaction);
/// returns whether the merchant exists.
///
/// # Errors
/// [`DbError::Sqlx`]; [`DbError::Corrupt`] when the current secret does not open with `keyring`.
pub async fn change_in(
    conn: &mut AnyConnection,
    keyring: &Keyring,
    merchant_id: &str,
    change: &CredentialChange<'_>,
) -> Result<bool, DbError> {
    let done = match change {
        CredentialChange::ApiKey { mode, api_key } => {
            let column = match mode {
                Mode::Live => "api_key_sha256",
                Mode::Test => "test_api_key_sha256",
            };
            sqlx::query(&format!("UPDATE merchants SET {column} = $1 WHERE merchant_id = $2"))
                .bind(api_key_hash(api_key))
                .bind(merchant_id)
                .execute(&mut *conn)
                .await?
        }
        CredentialChange::WebhookSecret {
            mode,
            secret,
            previous_until,
        } => {
            let (current, previous) = match mode {
                Mode::Live => ("webhook_secret", "previous_webhook_secret"),
                Mode::Test => ("test_webhook_secret", "previous_test_webhook_secret"),
            };
            let stored: Option<(Option<String>,)> =
                sqlx::query_as(&format!("SELECT {current} FROM merchants WHERE merchant_id = $1"))
                    .bind(merchant_id)
                    .fetch_optional(&mut *conn)
                    .await?;
            let Some((stored,)) = stored else { return Ok(false) };
            // The current secret moves to the previous column: opened and sealed again under
            // that column's place.
            let previous_sealed = stored
                .map(|s| keyring.open(&s, &place_of(current, merchant_id)))
                .transpose()
                .map_err(|e| DbError::Corrupt(format!("merchant {merchant_id}: {e}")))?
                .map(|plain| keyring.seal(&plain, &place_of(previous, merchant_id)));
            sqlx::query(&format!(
                "UPDATE merchants SET {current} = $1, {previous} = $2, {previous}_until = $3 WHERE merchant_id = $4"
            ))
            .bind(keyring.seal(secret, &place_of(current, merchant_id)))
            .bind(previous_sealed)
            .bind(fmt_ts(*previous_until))
            .bind(merchant_id)
            .execute(&mut *conn)
            .await?
        }
        CredentialChange::Disabled(at) => {
            sqlx::query("UPDATE merchants SET disabled_at = $1 WHERE merchant_id = $2")
                .bind(at.map(fmt_ts))
                .bind(merchant_id)
                .execute(&mut *conn)
                .await?
        }
    };
    Ok(done.rows_affected() == 1)
}
