//! Checkpointed subscribers of the global log.
//!
//! Two kinds, by where their effects live:
//! - [`TransactionalSubscriber`]: effects are rows in this database (read models, the notify
//!   queue). Each batch and the checkpoint commit in one transaction, so a crash anywhere leaves
//!   the effects exactly as if every event had been applied once.
//! - [`EffectSubscriber`]: effects are outside (a channel call, another command). At-least-once:
//!   the checkpoint moves after the effect, so handlers must be idempotent.
//!
//! Every subscriber of a process reads the log through [`Database::tail`], so a batch is read
//! and decoded once however many subscribers want it. The transactional subscribers of a process
//! run together ([`run_transactional`]): one transaction per batch for all of them, each with its
//! own checkpoint. Effect subscribers ([`run_effects`]) keep their position in memory and save
//! it at most every [`EFFECT_CHECKPOINT_INTERVAL_MS`].
//!
//! Replay and verify rebuild a projection through the same step as the live runners
//! ([`catch_up`]: bounded, reading ahead in a task of its own), and finish under a lock with
//! [`catch_up_in`]. The relay (`payledger-bus`) reads through the same tail and waits by the
//! same rule ([`wait_after`]); its step publishes instead of writing rows.
//!
//! One runner per subscriber name is expected; for transactional subscribers a second runner is
//! harmless (the checkpoint rows are locked for the batch and re-checked).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::{Any, AnyConnection, AnyPool, Row, Transaction};

use crate::db::{Backend, Database, DbError};
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
    /// An effect subscriber's batch took longer than its step timeout (see
    /// [`run_effects_with`]) and was abandoned.
    #[error("effects batch took longer than {0} ms (a silent connection?); abandoned")]
    EffectsTimedOut(u64),
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

    /// Called with a position up to which every event is applied and committed: after each
    /// batch commits, and when a step finds nothing after its checkpoint (so a runner that
    /// starts on an up-to-date checkpoint says so before any new event arrives). Used to wake
    /// readers waiting for the read model; never moves backwards in a runner.
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
    /// Another runner (or a replay) moved a checkpoint since it was read: nothing was applied,
    /// and the next step starts from the stored positions.
    Moved,
}

async fn idle(db: &Database, from: LogPosition) -> Result<Progress, SubscriberError> {
    Ok(if db.log().held_back(from).await? {
        Progress::HeldBack
    } else {
        Progress::CaughtUp
    })
}

/// Locks the checkpoints of `names` (sorted, so two runners lock in the same order) for the
/// rest of the transaction, creating missing ones at the start of the log, in one statement
/// (see [`lock_checkpoint`]). Returns their positions in the order of `names`.
async fn lock_checkpoints(tx: &mut AnyConnection, names: &[&str]) -> Result<Vec<LogPosition>, DbError> {
    let values: Vec<String> = (0..names.len()).map(|i| format!("(${}, $1)", i + 2)).collect();
    let sql = format!(
        "INSERT INTO subscriber_checkpoint (name, updated_at) VALUES {} \
         ON CONFLICT (name) DO UPDATE SET updated_at = subscriber_checkpoint.updated_at \
         RETURNING name, transaction_id, global_position",
        values.join(", ")
    );
    let mut query = sqlx::query(&sql).bind(fmt_ts(Utc::now()));
    for name in names {
        query = query.bind(*name);
    }
    let rows = query.fetch_all(&mut *tx).await?;
    names
        .iter()
        .map(|name| {
            let row = rows
                .iter()
                .find(|r| r.try_get::<String, _>(0).is_ok_and(|n| n == *name))
                .ok_or_else(|| DbError::Corrupt(format!("checkpoint {name} was not returned by its upsert")))?;
            Ok(LogPosition {
                transaction_id: row.try_get(1)?,
                global_position: row.try_get(2)?,
            })
        })
        .collect()
}

/// Moves the (locked) checkpoints of `names` to `position`, in one statement.
async fn save_checkpoints(tx: &mut AnyConnection, names: &[&str], position: LogPosition) -> Result<(), DbError> {
    let placeholders: Vec<String> = (0..names.len()).map(|i| format!("${}", i + 4)).collect();
    let sql = format!(
        "UPDATE subscriber_checkpoint SET transaction_id = $1, global_position = $2, updated_at = $3 \
         WHERE name IN ({})",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(&sql)
        .bind(position.transaction_id)
        .bind(position.global_position)
        .bind(fmt_ts(Utc::now()));
    for name in names {
        query = query.bind(*name);
    }
    query.execute(&mut *tx).await?;
    Ok(())
}

/// Where a step's batch comes from.
enum Source {
    /// The process's shared [`Database::tail`]: the live runners' source, read once for all.
    Tail,
    /// A reader task running ahead of the applying step: bounded runs ([`catch_up`]).
    Ahead(ReadAhead),
}

impl Source {
    /// The next batch after `from`; empty when there is nothing (more) to read.
    async fn read(&mut self, db: &Database, from: LogPosition) -> Result<Vec<LogEvent>, DbError> {
        match self {
            Source::Tail => db.tail().read_after(from, BATCH_SIZE_MAX).await,
            Source::Ahead(ahead) => ahead.next(db, from).await,
        }
    }
}

/// Reads batches of the log in a task of its own, [`CatchUp::read_ahead`] batches ahead of the
/// caller, from a position up to an optional end. A request from another position than where the last batch
/// ended (a checkpoint moved by someone else) restarts the reader there.
struct ReadAhead {
    options: CatchUp,
    /// Where the next received batch starts (after), while a reader runs.
    next_after: Option<LogPosition>,
    batches: Option<tokio::sync::mpsc::Receiver<Result<Vec<LogEvent>, DbError>>>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl ReadAhead {
    fn new(options: CatchUp) -> Self {
        Self {
            options,
            next_after: None,
            batches: None,
            reader: None,
        }
    }

    async fn next(&mut self, db: &Database, from: LogPosition) -> Result<Vec<LogEvent>, DbError> {
        if self.next_after != Some(from) {
            self.restart(db, from);
        }
        let Some(batches) = self.batches.as_mut() else {
            return Ok(Vec::new());
        };
        match batches.recv().await {
            Some(Ok(events)) => {
                self.next_after = events.last().map(|e| e.position);
                Ok(events)
            }
            Some(Err(e)) => {
                self.next_after = None;
                Err(e)
            }
            // The reader reached the end (of the range, or of the log with nothing held back).
            None => Ok(Vec::new()),
        }
    }

    fn restart(&mut self, db: &Database, from: LogPosition) {
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
        let CatchUp {
            until,
            batch_size,
            read_ahead,
            ..
        } = self.options;
        let (send, batches) = tokio::sync::mpsc::channel(read_ahead.max(1));
        let log = db.log();
        self.reader = Some(tokio::spawn(async move {
            let mut at = from;
            loop {
                if until.is_some_and(|u| at >= u) {
                    return;
                }
                let events = match log.read_range(at, until, batch_size).await {
                    Ok(events) => events,
                    Err(e) => {
                        let _ = send.send(Err(e)).await;
                        return;
                    }
                };
                match events.last() {
                    Some(last) => {
                        at = last.position;
                        if send.send(Ok(events)).await.is_err() {
                            return;
                        }
                    }
                    None => match log.held_back(at).await {
                        Ok(true) => tokio::time::sleep(Duration::from_millis(HELD_BACK_RETRY_MS)).await,
                        Ok(false) => return,
                        Err(e) => {
                            let _ = send.send(Err(e)).await;
                            return;
                        }
                    },
                }
            }
        }));
        self.batches = Some(batches);
        self.next_after = Some(from);
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
    }
}

/// Gives each of `subscribers` (at `positions`) the events of `events` after its own position,
/// through `tx`. Returns the names of those that had any.
async fn apply_after<'s>(
    tx: &mut AnyConnection,
    subscribers: &[&'s dyn TransactionalSubscriber],
    positions: &[LogPosition],
    events: &[LogEvent],
) -> Result<Vec<&'s str>, SubscriberError> {
    let mut behind = Vec::with_capacity(subscribers.len());
    for (subscriber, position) in subscribers.iter().zip(positions) {
        let start = events.partition_point(|e| e.position <= *position);
        if start < events.len() {
            subscriber.apply(tx, &events[start..]).await?;
            behind.push(subscriber.name());
        }
    }
    Ok(behind)
}

/// Applies the next batch of the log to every one of `subscribers` (sorted by name, names
/// distinct) in one transaction: one read (from `source`), one statement locking every
/// checkpoint, each subscriber's own writes for the events after its checkpoint, one statement
/// moving the checkpoints, one commit (on PostgreSQL without waiting for the WAL flush unless
/// `durable`). `at` caches the checkpoints between steps (`None`: read them); a runner that
/// finds them moved by someone else refreshes it and answers [`Progress::Moved`].
///
/// The batch starts at the lowest checkpoint, so a subscriber far behind (one added by an
/// upgrade) is caught up in full batches before the others see new events.
///
/// This is the one step of every transactional subscriber: the live runners
/// ([`run_transactional`]) and the bounded runs of replay and verify ([`catch_up`]).
async fn step_together(
    db: &Database,
    subscribers: &[&dyn TransactionalSubscriber],
    at: &mut Option<Vec<LogPosition>>,
    source: &mut Source,
    durable: bool,
) -> Result<Progress, SubscriberError> {
    let names: Vec<&str> = subscribers.iter().map(|s| s.name()).collect();
    let positions = match at.take() {
        Some(p) => p,
        None => {
            let mut p = Vec::with_capacity(names.len());
            for name in &names {
                p.push(checkpoint(db.pool(), name).await?);
            }
            p
        }
    };
    let Some(from) = positions.iter().min().copied() else {
        return Ok(Progress::CaughtUp);
    };
    // Read before opening the transaction: an idle poll then costs no write (and no fsync).
    let events = source.read(db, from).await?;
    let Some(last) = events.last().map(|e| e.position) else {
        // Read to the end: each subscriber has applied everything up to its checkpoint.
        for (subscriber, position) in subscribers.iter().zip(&positions) {
            subscriber.committed(*position);
        }
        *at = Some(positions);
        return match source {
            Source::Tail => idle(db, from).await,
            // The reader waited out what was held back before it ended.
            Source::Ahead(_) => Ok(Progress::CaughtUp),
        };
    };
    let _write_turn = db.write_turn().await;
    let mut tx: Transaction<'static, Any> = db.pool().begin().await?;
    if !durable && db.backend() == Backend::Postgres {
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
    }
    let locked = lock_checkpoints(&mut tx, &names).await?;
    if locked != positions {
        tx.rollback().await?;
        *at = Some(locked);
        return Ok(Progress::Moved);
    }
    let behind = apply_after(&mut tx, subscribers, &positions, &events).await?;
    save_checkpoints(&mut tx, &behind, last).await?;
    tx.commit().await?;
    *at = Some(positions.iter().map(|p| (*p).max(last)).collect());
    for subscriber in subscribers {
        subscriber.committed(last);
    }
    Ok(Progress::Applied(events.len()))
}

/// How a bounded run ([`catch_up`]) reads and commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    /// Stop at this position (`None`: at the end of the readable log, once no committed event
    /// is held back by an open transaction).
    pub until: Option<LogPosition>,
    /// Events read and applied per transaction.
    pub batch_size: i64,
    /// Batches read ahead of the one being applied (reading and writing overlap).
    pub read_ahead: usize,
    /// `false`: on PostgreSQL the batches commit without waiting for the WAL flush, for tables
    /// that a crash may lose because a new run rebuilds them (a replay's shadow tables).
    pub durable: bool,
}

/// Runs `subscribers` together, with the live runners' step (`step_together`), until they
/// stand at `options.until` or at the end of the log; `progress` is told each batch's size.
/// Returns the number of events applied (a batch counts once, however many subscribers).
///
/// # Errors
/// The first failing batch's error (it rolled back; the checkpoints stand after the batches
/// before it).
pub async fn catch_up(
    db: &Database,
    subscribers: &[&dyn TransactionalSubscriber],
    options: CatchUp,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64, SubscriberError> {
    let mut subscribers = subscribers.to_vec();
    subscribers.sort_by(|a, b| a.name().cmp(b.name()));
    subscribers.dedup_by(|a, b| a.name() == b.name());
    let mut source = Source::Ahead(ReadAhead::new(options));
    let mut at = None;
    let mut applied = 0u64;
    loop {
        match step_together(db, &subscribers, &mut at, &mut source, options.durable).await? {
            Progress::Applied(n) => {
                applied += n as u64;
                progress(n as u64);
            }
            Progress::Moved => {}
            Progress::HeldBack => tokio::time::sleep(Duration::from_millis(HELD_BACK_RETRY_MS)).await,
            Progress::CaughtUp => return Ok(applied),
        }
    }
}

/// Inside the caller's transaction `tx`, brings `subscriber` from its checkpoint to `until` (or the end of what `tx` can
/// read), with the same apply as a step, reading on `tx`'s own connection (on SQLite it holds
/// the write lock and must not wait for another). Stores the checkpoint in `tx`; returns the
/// position reached and the number of events applied. Replay's swap and verify's snapshot use
/// it to finish a [`catch_up`] under a lock.
///
/// # Errors
/// The subscriber's or the database's error; `tx` should then be rolled back.
pub async fn catch_up_in(
    db: &Database,
    tx: &mut AnyConnection,
    subscriber: &dyn TransactionalSubscriber,
    until: Option<LogPosition>,
    batch_size: i64,
) -> Result<(LogPosition, u64), SubscriberError> {
    let mut at = lock_checkpoint(&mut *tx, subscriber.name()).await?;
    let mut applied = 0u64;
    while until.is_none_or(|u| at < u) {
        let events = db.log().read_range_on(&mut *tx, at, until, batch_size).await?;
        let Some(last) = events.last().map(|e| e.position) else {
            break;
        };
        apply_after(tx, &[subscriber], &[at], &events).await?;
        applied += events.len() as u64;
        at = last;
    }
    save_checkpoint(&mut *tx, subscriber.name(), at).await?;
    Ok((at, applied))
}

/// Applies the next batch for `subscriber` alone (as [`run_transactional`] does for a group).
///
/// # Errors
/// The subscriber's or the database's error; nothing was committed.
pub async fn step_transactional(
    db: &Database,
    subscriber: &dyn TransactionalSubscriber,
) -> Result<Progress, SubscriberError> {
    step_together(db, &[subscriber], &mut None, &mut Source::Tail, true).await
}

/// Runs `subscribers` together until the task is aborted (aborting is safe: an unfinished
/// batch rolls back): each batch of the log is applied to all of them in one transaction with
/// their checkpoints. A failed batch (the database unreachable, say) is logged and retried
/// after [`ERROR_BACKOFF_MS`]; a batch is abandoned after [`STEP_TIMEOUT_MS`].
pub async fn run_transactional(db: Database, mut subscribers: Vec<Arc<dyn TransactionalSubscriber>>) {
    subscribers.sort_by(|a, b| a.name().cmp(b.name()));
    subscribers.dedup_by(|a, b| a.name() == b.name());
    let names = subscribers.iter().map(|s| s.name()).collect::<Vec<_>>().join(",");
    let subscribers: Vec<&dyn TransactionalSubscriber> = subscribers.iter().map(AsRef::as_ref).collect();
    let mut wake = db.appended();
    let mut at = None;
    let mut source = Source::Tail;
    let step_timeout = Duration::from_millis(STEP_TIMEOUT_MS);
    loop {
        let step = step_together(&db, &subscribers, &mut at, &mut source, true);
        let result = tokio::time::timeout(step_timeout, step)
            .await
            .unwrap_or(Err(SubscriberError::TimedOut));
        if result.is_err() {
            // The batch may or may not have committed: read the checkpoints again.
            at = None;
        }
        pause_after(result, &names, &mut wake, None).await;
    }
}

/// Longest an effect subscriber's progress stays only in memory: its checkpoint is saved at
/// most this often, not after every batch (a crash repeats at most this much, which an
/// at-least-once handler must absorb anyway).
pub const EFFECT_CHECKPOINT_INTERVAL_MS: u64 = 1_000;

/// An effect subscriber's position: where it has handled up to, and what is stored.
struct EffectProgress {
    handled: LogPosition,
    saved: LogPosition,
    saved_at: tokio::time::Instant,
}

impl EffectProgress {
    /// Stores the handled position if it moved and `force` or the interval passed.
    async fn save(&mut self, db: &Database, name: &str, force: bool) -> Result<(), DbError> {
        let due = self.saved_at.elapsed() >= Duration::from_millis(EFFECT_CHECKPOINT_INTERVAL_MS);
        if self.handled != self.saved && (force || due) {
            save_checkpoint(db.pool(), name, self.handled).await?;
            self.saved = self.handled;
            self.saved_at = tokio::time::Instant::now();
        }
        Ok(())
    }

    /// When the unsaved progress must be saved, if there is any.
    fn save_due(&self) -> Option<tokio::time::Instant> {
        (self.handled != self.saved).then(|| self.saved_at + Duration::from_millis(EFFECT_CHECKPOINT_INTERVAL_MS))
    }
}

/// Handles the next batch for `subscriber`, one event at a time, from `progress.handled`.
async fn step_effects(
    db: &Database,
    subscriber: &dyn EffectSubscriber,
    progress: &mut EffectProgress,
) -> Result<Progress, SubscriberError> {
    let events = db.tail().read_after(progress.handled, BATCH_SIZE_MAX).await?;
    if events.is_empty() {
        return idle(db, progress.handled).await;
    }
    for event in &events {
        if let Err(e) = subscriber.handle(event).await {
            progress.save(db, subscriber.name(), true).await?;
            return Err(e);
        }
        progress.handled = event.position;
    }
    progress.save(db, subscriber.name(), false).await?;
    Ok(Progress::Applied(events.len()))
}

/// Longest one batch of an effect subscriber may take in [`run_effects`]: a refund's channel
/// calls take at most three attempts of 15 s each; past this it waits on a connection gone
/// silent (channel or database), and is abandoned and retried rather than stalled for ever.
pub const EFFECT_STEP_TIMEOUT_MS: u64 = 120_000;

/// Runs an effect subscriber until the task is aborted (at-least-once: an event whose effect
/// ran but whose checkpoint did not is handled again). Its checkpoint is saved at most every
/// [`EFFECT_CHECKPOINT_INTERVAL_MS`]; progress made while the log is quiet is saved when that
/// interval ends. A batch is abandoned after [`EFFECT_STEP_TIMEOUT_MS`] (logged) and retried
/// from the last event handled.
pub async fn run_effects(db: Database, subscriber: Arc<dyn EffectSubscriber>) {
    run_effects_with(db, subscriber, EFFECT_STEP_TIMEOUT_MS).await;
}

/// [`run_effects`] with another step timeout, milliseconds.
pub async fn run_effects_with(db: Database, subscriber: Arc<dyn EffectSubscriber>, step_timeout_ms: u64) {
    let mut wake = db.appended();
    let name = subscriber.name();
    let mut progress = loop {
        match checkpoint(db.pool(), name).await {
            Ok(at) => {
                break EffectProgress {
                    handled: at,
                    saved: at,
                    saved_at: tokio::time::Instant::now(),
                }
            }
            Err(e) => pause_after(Err(e.into()), name, &mut wake, None).await,
        }
    };
    loop {
        let step = step_effects(&db, subscriber.as_ref(), &mut progress);
        let result = tokio::time::timeout(Duration::from_millis(step_timeout_ms), step)
            .await
            .unwrap_or(Err(SubscriberError::EffectsTimedOut(step_timeout_ms)));
        let save_by = progress.save_due();
        pause_after(result, name, &mut wake, save_by).await;
        if let Err(e) = progress.save(&db, name, false).await {
            tracing::warn!(subscriber = name, error = %e, "saving the checkpoint failed; retrying later");
        }
    }
}

/// The one waiting rule of every subscriber loop (the relay's too): straight on after a full
/// batch or a moved checkpoint; a few milliseconds when events are held back (the open
/// transaction ending wakes nobody); otherwise until this process appends or another announces
/// an append ([`crate::wake`]), [`POLL_INTERVAL_MS`] passes, or `until` comes (a checkpoint to
/// save).
pub async fn wait_after(
    progress: Progress,
    wake: &mut tokio::sync::watch::Receiver<u64>,
    until: Option<tokio::time::Instant>,
) {
    let poll = tokio::time::Instant::now() + Duration::from_millis(POLL_INTERVAL_MS);
    match progress {
        Progress::Applied(n) if n as i64 >= BATCH_SIZE_MAX => {}
        Progress::Moved => {}
        Progress::HeldBack => tokio::time::sleep(Duration::from_millis(HELD_BACK_RETRY_MS)).await,
        Progress::Applied(_) | Progress::CaughtUp => {
            tokio::select! {
                _ = wake.changed() => {}
                _ = tokio::time::sleep_until(until.map_or(poll, |u| u.min(poll))) => {}
            }
        }
    }
}

/// [`wait_after`], or after a failure (logged) [`ERROR_BACKOFF_MS`].
async fn pause_after(
    result: Result<Progress, SubscriberError>,
    name: &str,
    wake: &mut tokio::sync::watch::Receiver<u64>,
    until: Option<tokio::time::Instant>,
) {
    match result {
        Ok(progress) => wait_after(progress, wake, until).await,
        Err(e) => {
            tracing::error!(subscriber = name, error = %e, "subscriber batch failed; retrying");
            tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MS)).await;
        }
    }
}
