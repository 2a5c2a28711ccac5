//! Checkpointed subscribers of the global log.
//!
//! Two kinds, by where their effects live:
//! - [`TransactionalSubscriber`]: effects are rows in this database (read models, the notify
//!   queue). Each batch and the checkpoint commit in one transaction, so a crash anywhere leaves
//!   the effects exactly as if every event had been applied once.
//! - [`EffectSubscriber`]: effects are outside (a channel call, another command). At-least-once:
//!   the checkpoint moves after the effect, so handlers must be idempotent.
//!
//! One runner per subscriber name is expected; for transactional subscribers a second runner is
//! harmless (the checkpoint row is locked for the batch and re-checked).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::{Any, AnyConnection, AnyPool, Row, Transaction};

use crate::db::{Database, DbError};
use crate::log::{LogEvent, LogPosition};
use crate::time::fmt_ts;

/// Events read and applied per transaction.
pub const BATCH_SIZE_MAX: i64 = 500;
/// How often an idle subscriber looks at the log when nobody wakes it (other processes' appends).
pub const POLL_INTERVAL_MS: u64 = 500;
/// How soon to look again when committed events are held back by an open transaction.
pub const HELD_BACK_RETRY_MS: u64 = 5;
/// Pause after a failed batch before trying again (the database down: one attempt a second,
/// each failing within the pool's acquire timeout, so an outage costs no spinning).
pub const ERROR_BACKOFF_MS: u64 = 1_000;
/// Longest one transactional batch may take before it is abandoned (rolled back) and retried.
/// A batch is database work only; this bounds a connection that went half-open (peer gone
/// without a close), which would otherwise stall the subscriber for ever.
pub const STEP_TIMEOUT_MS: u64 = 60_000;

/// A subscriber failure. The batch is not checkpointed and will be retried.
#[derive(Debug, thiserror::Error)]
pub enum SubscriberError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Failed(String),
    #[error("batch took longer than {STEP_TIMEOUT_MS} ms; abandoned")]
    TimedOut,
}

impl From<sqlx::Error> for SubscriberError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Sqlx(e))
    }
}

/// A subscriber whose effects are written in the checkpoint's transaction.
#[async_trait]
pub trait TransactionalSubscriber: Send + Sync + 'static {
    /// Checkpoint name; stable forever.
    fn name(&self) -> &str;

    /// Applies `events` (in commit order, never empty) through `tx`.
    ///
    /// # Errors
    /// Any error rolls the batch back; it is retried after [`ERROR_BACKOFF_MS`].
    async fn apply(&self, tx: &mut AnyConnection, events: &[LogEvent]) -> Result<(), SubscriberError>;

    /// Called after a batch committed (e.g. to wake readers waiting for it).
    fn committed(&self, _up_to: LogPosition) {}
}

/// A subscriber with effects outside the database transaction; at-least-once.
#[async_trait]
pub trait EffectSubscriber: Send + Sync + 'static {
    /// Checkpoint name; stable forever.
    fn name(&self) -> &'static str;

    /// Handles one event. Must be idempotent: after a crash the same event comes again.
    ///
    /// # Errors
    /// The checkpoint stays before this event; it is retried after [`ERROR_BACKOFF_MS`].
    async fn handle(&self, event: &LogEvent) -> Result<(), SubscriberError>;
}

/// The stored position of subscriber `name` (the start of the log if it never ran).
///
/// # Errors
/// [`DbError::Sqlx`] when the database fails.
pub async fn checkpoint(pool: &AnyPool, name: &str) -> Result<LogPosition, DbError> {
    let row = sqlx::query("SELECT transaction_id, global_position FROM subscriber_checkpoint WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    Ok(match row {
        Some(r) => LogPosition {
            transaction_id: r.try_get(0)?,
            global_position: r.try_get(1)?,
        },
        None => LogPosition::default(),
    })
}

/// Writes the checkpoint (creating it if needed) and returns the position it held before. The
/// write comes first so the row is locked for the rest of the transaction (PostgreSQL row lock;
/// on SQLite it takes the write lock up front instead of upgrading a read later, which can fail
/// with SQLITE_BUSY without waiting).
pub async fn lock_checkpoint(tx: &mut AnyConnection, name: &str) -> Result<LogPosition, DbError> {
    let row = sqlx::query(
        "INSERT INTO subscriber_checkpoint (name, updated_at) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET updated_at = subscriber_checkpoint.updated_at \
         RETURNING transaction_id, global_position",
    )
    .bind(name)
    .bind(fmt_ts(Utc::now()))
    .fetch_one(&mut *tx)
    .await?;
    Ok(LogPosition {
        transaction_id: row.try_get(0)?,
        global_position: row.try_get(1)?,
    })
}

/// Stores `position` as subscriber `name`'s checkpoint.
///
/// # Errors
/// [`DbError::Sqlx`] when the database fails.
pub async fn save_checkpoint<'e, E>(executor: E, name: &str, position: LogPosition) -> Result<(), DbError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    sqlx::query(
        "INSERT INTO subscriber_checkpoint (name, transaction_id, global_position, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET transaction_id = $2, global_position = $3, updated_at = $4",
    )
    .bind(name)
    .bind(position.transaction_id)
    .bind(position.global_position)
    .bind(fmt_ts(Utc::now()))
    .execute(executor)
    .await?;
    Ok(())
}

/// What one step of a subscriber did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Applied this many events (a full batch means: more may be waiting).
    Applied(usize),
    /// Nothing to apply; the log is read to its end.
    CaughtUp,
    /// Nothing to apply yet: committed events wait behind an open transaction.
    HeldBack,
}

async fn idle(db: &Database, from: LogPosition) -> Result<Progress, SubscriberError> {
    Ok(if db.log().held_back(from).await? {
        Progress::HeldBack
    } else {
        Progress::CaughtUp
    })
}

/// Applies the next batch for `subscriber`.
///
/// # Errors
/// The subscriber's or the database's error; nothing was committed.
pub async fn step_transactional(
    db: &Database,
    subscriber: &dyn TransactionalSubscriber,
) -> Result<Progress, SubscriberError> {
    step_transactional_range(db, subscriber, None, BATCH_SIZE_MAX).await
}

/// As [`step_transactional`], with at most `batch` events, none after `until` when given.
///
/// # Errors
/// As [`step_transactional`].
pub async fn step_transactional_range(
    db: &Database,
    subscriber: &dyn TransactionalSubscriber,
    until: Option<LogPosition>,
    batch: i64,
) -> Result<Progress, SubscriberError> {
    let name = subscriber.name();
    let from = checkpoint(db.pool(), name).await?;
    if until.is_some_and(|u| from >= u) {
        return Ok(Progress::CaughtUp);
    }
    // Read before opening the transaction: an idle poll then costs no write (and no fsync).
    let events = db.log().read_range(from, until, batch).await?;
    let Some(last) = events.last().map(|e| e.position) else {
        return idle(db, from).await;
    };
    let mut tx: Transaction<'static, Any> = db.pool().begin().await?;
    if lock_checkpoint(&mut tx, name).await? != from {
        // Another runner moved it meanwhile: drop this batch and read again.
        tx.rollback().await?;
        return Ok(Progress::Applied(batch as usize));
    }
    subscriber.apply(&mut tx, &events).await?;
    save_checkpoint(&mut *tx, name, last).await?;
    tx.commit().await?;
    subscriber.committed(last);
    Ok(Progress::Applied(events.len()))
}

/// Handles the next batch for `subscriber`, one event at a time.
///
/// # Errors
/// The first failing event's error; the checkpoint is saved just before it.
pub async fn step_effects(db: &Database, subscriber: &dyn EffectSubscriber) -> Result<Progress, SubscriberError> {
    let name = subscriber.name();
    let from = checkpoint(db.pool(), name).await?;
    let events = db.log().read_after(from, BATCH_SIZE_MAX).await?;
    if events.is_empty() {
        return idle(db, from).await;
    }
    let mut done = from;
    for event in &events {
        if let Err(e) = subscriber.handle(event).await {
            if done != from {
                save_checkpoint(db.pool(), name, done).await?;
            }
            return Err(e);
        }
        done = event.position;
    }
    if done != from {
        save_checkpoint(db.pool(), name, done).await?;
    }
    Ok(Progress::Applied(events.len()))
}

/// Runs a transactional subscriber until the task is aborted (aborting is safe: an unfinished
/// batch rolls back). A failed batch (the database unreachable, say) is logged and retried
/// after [`ERROR_BACKOFF_MS`]; a batch is abandoned after [`STEP_TIMEOUT_MS`].
pub async fn run_transactional(db: Database, subscriber: Arc<dyn TransactionalSubscriber>) {
    let mut wake = db.appended();
    let step_timeout = Duration::from_millis(STEP_TIMEOUT_MS);
    loop {
        let step = step_transactional(&db, subscriber.as_ref());
        let result = tokio::time::timeout(step_timeout, step)
            .await
            .unwrap_or(Err(SubscriberError::TimedOut));
        pause_after(result, subscriber.name(), &mut wake).await;
    }
}

/// Runs an effect subscriber until the task is aborted (at-least-once: an event whose effect
/// ran but whose checkpoint did not is handled again).
pub async fn run_effects(db: Database, subscriber: Arc<dyn EffectSubscriber>) {
    let mut wake = db.appended();
    loop {
        let result = step_effects(&db, subscriber.as_ref()).await;
        pause_after(result, subscriber.name(), &mut wake).await;
    }
}

async fn pause_after(
    result: Result<Progress, SubscriberError>,
    name: &str,
    wake: &mut tokio::sync::watch::Receiver<u64>,
) {
    match result {
        Ok(Progress::Applied(n)) if n as i64 >= BATCH_SIZE_MAX => {}
        Ok(Progress::HeldBack) => tokio::time::sleep(Duration::from_millis(HELD_BACK_RETRY_MS)).await,
        Ok(_) => {
            tokio::select! {
                _ = wake.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)) => {}
            }
        }
        Err(e) => {
            tracing::error!(subscriber = name, error = %e, "subscriber batch failed; retrying");
            tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MS)).await;
        }
    }
}
