//! The console's store: [`ConsoleUser`] and [`ReconciliationRun`] events (`console_events`), the
//! users' snapshots (`console_snapshots`) and server-side sessions (`console_sessions`), on either
//! backend. Why the console's events have their own table beside `events`:
//! `schemas/postgres/0009_console.sql`; why users have snapshots: `0011_console_snapshots.sql`.

use chrono::{DateTime, Utc};
use payledger_domain::console::{ConsoleUser, ConsoleUserCommand, ConsoleUserError, ConsoleUserEvent, UserState};
use payledger_domain::merchant::{merchant_aggregate_id, Merchant, MerchantCommand, MerchantError, MerchantEvent};
use payledger_domain::reconciliation::{
    ReconciliationCommand, ReconciliationError, ReconciliationEvent, ReconciliationRun, RunState,
};
use sqlx::{AnyConnection, AnyPool, Row};
use uuid::Uuid;

use crate::DbError;

/// Users whose events after their snapshots [`users`] asks for in one statement.
const USERS_PER_TAIL_QUERY: usize = 200;

/// How many times a console command is re-run after another process appended to the same user
/// first (two logins at once).
const CONFLICT_RETRIES_MAX: u32 = 5;

/// What a console command did.
#[derive(Debug)]
pub struct ConsoleExecuted {
    /// The user after the command.
    pub user: ConsoleUser,
    /// The events appended.
    pub events: Vec<ConsoleUserEvent>,
}

/// A console command's failure: the user's rule refused it, or the database failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Refused(#[from] ConsoleUserError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for ConsoleError {
    fn from(e: sqlx::Error) -> Self {
        ConsoleError::Db(DbError::Sqlx(e))
    }
}

/// One line of the audit log: a console user's event.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// Order of recording, ascending; the cursor of [`audit`].
    pub position: i64,
    /// The user's e-mail address.
    pub actor: String,
    pub event: ConsoleUserEvent,
}

/// Filters of [`audit`].
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this user's events (e-mail address).
    pub actor: Option<String>,
    /// Only this event type (`ActionRecorded`, `LoginFailed`, …).
    pub event_type: Option<String>,
}

/// The user `user_id` folded from its events, with the sequence of its last event (0: no such
/// user). The fold starts from the user's snapshot (`console_snapshots`, written with each
/// append) when it is of this fold's [`ConsoleUser::SNAPSHOT_VERSION`], and reads only the events
/// after it: a load costs the same however long the user's history.
///
/// # Errors
/// [`DbError`] when the database fails, or an event or the snapshot does not decode.
pub async fn load(pool: &AnyPool, user_id: Uuid) -> Result<(ConsoleUser, i64), DbError> {
    let mut conn = pool.acquire().await?;
    let id = user_id.to_string();
    let snapshot = sqlx::query(
        "SELECT sequence, state FROM console_snapshots \
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND version = $3",
    )
    .bind(ConsoleUser::TYPE)
    .bind(&id)
    .bind(ConsoleUser::SNAPSHOT_VERSION)
    .fetch_optional(&mut *conn)
    .await?;
    let (mut user, mut sequence) = match snapshot {
        Some(row) => (
            decode_snapshot(&row.try_get::<String, _>("state")?)?,
            row.try_get::<i64, _>("sequence")?,
        ),
        None => (ConsoleUser::default(), 0),
    };
    let rows = sqlx::query(
        "SELECT sequence, payload FROM console_events \
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 ORDER BY sequence",
    )
    .bind(ConsoleUser::TYPE)
    .bind(&id)
    .bind(sequence)
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        sequence = row.try_get::<i64, _>("sequence")?;
        user.apply(&decode(&row.try_get::<String, _>("payload")?)?);
    }
    Ok((user, sequence))
}

fn decode_snapshot(state: &str) -> Result<ConsoleUser, DbError> {
    serde_json::from_str(state).map_err(|e| DbError::Corrupt(format!("console user snapshot: {e}")))
}

/// The events of one aggregate of `aggregate_type`, in order, and the sequence of the last.
async fn load_events<E: serde::de::DeserializeOwned>(
    pool: &AnyPool,
    aggregate_type: &str,
    id: Uuid,
) -> Result<(Vec<E>, i64), DbError> {
    let mut conn = pool.acquire().await?;
    load_events_on(&mut conn, aggregate_type, id).await
}

/// As [`load_events`], on `conn` (inside a caller's transaction).
async fn load_events_on<E: serde::de::DeserializeOwned>(
    conn: &mut AnyConnection,
    aggregate_type: &str,
    id: Uuid,
) -> Result<(Vec<E>, i64), DbError> {
    let rows = sqlx::query(
        "SELECT sequence, payload FROM console_events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
    )
    .bind(aggregate_type)
    .bind(id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    let mut events = Vec::with_capacity(rows.len());
    let mut sequence = 0;
    for row in rows {
        sequence = row.try_get::<i64, _>("sequence")?;
        events.push(decode_as(&row.try_get::<String, _>("payload")?)?);
    }
    Ok((events, sequence))
}

/// Loads the user, decides `command`, appends its events under the user's next sequence
/// numbers; re-runs on the reloaded user when another writer appended first.
///
/// # Errors
/// [`ConsoleError::Refused`] by the user's rules; [`ConsoleError::Db`].
pub async fn execute(
    pool: &AnyPool,
    user_id: Uuid,
    command: ConsoleUserCommand,
) -> Result<ConsoleExecuted, ConsoleError> {
    let mut attempt = 0;
    loop {
        let (mut user, sequence) = load(pool, user_id).await?;
        let events = user.decide(command.clone())?;
        for e in &events {
            user.apply(e);
        }
        let actor = user.state().map(|s| s.email.clone()).unwrap_or_default();
        let rows: Vec<_> = events.iter().map(|e| (e.event_type(), e.at(), e)).collect();
        match append_user(pool, user_id, sequence, &actor, &rows, &user).await {
            Ok(()) => return Ok(ConsoleExecuted { user, events }),
            Err(e) if is_conflict(&e) && attempt < CONFLICT_RETRIES_MAX => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Appends a user's `events` after sequence `after` and, in the same transaction, stores `user`
/// (the fold after them) as its snapshot. A unique violation means another writer appended
/// first: neither is written.
async fn append_user(
    pool: &AnyPool,
    user_id: Uuid,
    after: i64,
    actor: &str,
    events: &[(&'static str, DateTime<Utc>, &ConsoleUserEvent)],
    user: &ConsoleUser,
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let state = serde_json::to_string(user).map_err(|err| sqlx::Error::Encode(Box::new(err)))?;
    let mut tx = pool.begin().await?;
    insert_events_on(&mut tx, ConsoleUser::TYPE, user_id, after, actor, events).await?;
    sqlx::query(
        "INSERT INTO console_snapshots (aggregate_type, aggregate_id, sequence, version, state) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET \
         sequence = excluded.sequence, version = excluded.version, state = excluded.state",
    )
    .bind(ConsoleUser::TYPE)
    .bind(user_id.to_string())
    .bind(after + events.len() as i64)
    .bind(ConsoleUser::SNAPSHOT_VERSION)
    .bind(state)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Appends `events` (type, time, event) to one aggregate after sequence `after`, in one
/// transaction; a unique violation means another writer appended first.
async fn append<E: serde::Serialize>(
    pool: &AnyPool,
    aggregate_type: &str,
    id: Uuid,
    after: i64,
    actor: &str,
    events: &[(&'static str, DateTime<Utc>, &E)],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    insert_events_on(&mut tx, aggregate_type, id, after, actor, events).await?;
    tx.commit().await
}

/// Inserts `events` after sequence `after` on `conn` (inside the caller's transaction).
async fn insert_events_on<E: serde::Serialize>(
    conn: &mut AnyConnection,
    aggregate_type: &str,
    id: Uuid,
    after: i64,
    actor: &str,
    events: &[(&'static str, DateTime<Utc>, &E)],
) -> Result<(), sqlx::Error> {
    for (i, (event_type, at, e)) in events.iter().enumerate() {
        let payload = serde_json::to_string(e).map_err(|err| sqlx::Error::Encode(Box::new(err)))?;
        sqlx::query(
            "INSERT INTO console_events (aggregate_type, aggregate_id, sequence, event_type, actor, at, payload) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(aggregate_type)
        .bind(id.to_string())
        .bind(after + 1 + i as i64)
        .bind(*event_type)
        .bind(actor)
        .bind(crate::time::fmt_ts(*at))
        .bind(payload)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

fn is_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn decode(payload: &str) -> Result<ConsoleUserEvent, DbError> {
    decode_as(payload)
}

fn decode_as<E: serde::de::DeserializeOwned>(payload: &str) -> Result<E, DbError> {
    serde_json::from_str(payload).map_err(|e| DbError::Corrupt(format!("console event: {e}")))
}

/// A reconciliation run's command failure.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Refused(#[from] ReconciliationError),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Loads run `run_id`, decides `command`, appends its events (`actor`: who, for the table's
/// `actor` column); re-runs on the reloaded run when another writer appended first. Returns the
/// run after the command.
///
/// # Errors
/// [`RunError::Refused`] by the run's rules; [`RunError::Db`].
pub async fn execute_run(
    pool: &AnyPool,
    run_id: Uuid,
    actor: &str,
    command: ReconciliationCommand,
) -> Result<ReconciliationRun, RunError> {
    let mut attempt = 0;
    loop {
        let (events, sequence) = load_events::<ReconciliationEvent>(pool, ReconciliationRun::TYPE, run_id).await?;
        let mut run = ReconciliationRun::default();
        events.iter().for_each(|e| run.apply(e));
        let new = run.decide(command.clone())?;
        new.iter().for_each(|e| run.apply(e));
        let rows: Vec<_> = new.iter().map(|e| (e.event_type(), e.at(), e)).collect();
        match append(pool, ReconciliationRun::TYPE, run_id, sequence, actor, &rows).await {
            Ok(()) => return Ok(run),
            Err(e) if is_conflict(&e) && attempt < CONFLICT_RETRIES_MAX => attempt += 1,
            Err(e) => return Err(DbError::Sqlx(e).into()),
        }
    }
}

/// Every reconciliation run, newest first.
///
/// # Errors
/// [`DbError`].
pub async fn runs(pool: &AnyPool) -> Result<Vec<(Uuid, RunState)>, DbError> {
    let rows = sqlx::query(
        "SELECT aggregate_id, payload FROM console_events WHERE aggregate_type = $1 ORDER BY aggregate_id, sequence",
    )
    .bind(ReconciliationRun::TYPE)
    .fetch_all(pool)
    .await?;
    let mut runs: Vec<(Uuid, ReconciliationRun)> = Vec::new();
    for row in rows {
        let id: String = row.try_get("aggregate_id")?;
        let id = Uuid::parse_str(&id).map_err(|e| DbError::Corrupt(format!("run id: {e}")))?;
        let event: ReconciliationEvent = decode_as(&row.try_get::<String, _>("payload")?)?;
        match runs.last_mut() {
            Some((last, run)) if *last == id => run.apply(&event),
            _ => {
                let mut run = ReconciliationRun::default();
                run.apply(&event);
                runs.push((id, run));
            }
        }
    }
    let mut states: Vec<(Uuid, RunState)> = runs
        .into_iter()
        .filter_map(|(id, run)| run.state().cloned().map(|s| (id, s)))
        .collect();
    states.sort_by_key(|(_, s)| std::cmp::Reverse(s.at));
    Ok(states)
}

/// Run `run_id`, if recorded.
///
/// # Errors
/// [`DbError`].
pub async fn run(pool: &AnyPool, run_id: Uuid) -> Result<Option<RunState>, DbError> {
    let (events, _) = load_events::<ReconciliationEvent>(pool, ReconciliationRun::TYPE, run_id).await?;
    let mut run = ReconciliationRun::default();
    events.iter().for_each(|e| run.apply(e));
    Ok(run.state().cloned())
}

/// Every console user, by e-mail address: each from its snapshot and the events after it (see
/// [`load`]), in a few statements however many events the users have.
///
/// # Errors
/// [`DbError`].
pub async fn users(pool: &AnyPool) -> Result<Vec<UserState>, DbError> {
    // Every statement here is led by an index whatever the planner knows of the table (one busy
    // user can be nearly all of `console_events`): each user by its `UserAdded` event, with its
    // snapshot by primary key; then the events after each snapshot, one primary-key range each.
    // An event appended between the two reads is after the snapshot read, so it is folded in.
    let mut conn = pool.acquire().await?;
    // (Led by `event_type` alone: with `aggregate_type` beside it PostgreSQL intersects both
    // indexes, and the second holds every event of every user. Only users have `UserAdded`; the
    // type is checked on the rows.)
    let heads = sqlx::query(
        "SELECT u.aggregate_type, u.aggregate_id, s.sequence, s.state FROM console_events u \
         LEFT JOIN console_snapshots s ON s.aggregate_type = u.aggregate_type \
         AND s.aggregate_id = u.aggregate_id AND s.version = $1 WHERE u.event_type = 'UserAdded'",
    )
    .bind(ConsoleUser::SNAPSHOT_VERSION)
    .fetch_all(&mut *conn)
    .await?;
    let mut folded: std::collections::BTreeMap<String, (ConsoleUser, i64)> = Default::default();
    for row in heads {
        if row.try_get::<String, _>("aggregate_type")? != ConsoleUser::TYPE {
            continue;
        }
        let user = match row.try_get::<Option<String>, _>("state")? {
            Some(state) => decode_snapshot(&state)?,
            None => ConsoleUser::default(),
        };
        let sequence = row.try_get::<Option<i64>, _>("sequence")?.unwrap_or(0);
        folded.insert(row.try_get("aggregate_id")?, (user, sequence));
    }
    let after: Vec<(String, i64)> = folded.iter().map(|(id, (_, s))| (id.clone(), *s)).collect();
    for chunk in after.chunks(USERS_PER_TAIL_QUERY) {
        let ranges: Vec<String> = (0..chunk.len())
            .map(|k| format!("(aggregate_id = ${} AND sequence > ${})", 2 + 2 * k, 3 + 2 * k))
            .collect();
        let sql = format!(
            "SELECT aggregate_id, payload FROM console_events WHERE aggregate_type = $1 AND ({}) \
             ORDER BY aggregate_id, sequence",
            ranges.join(" OR ")
        );
        let mut query = sqlx::query(&sql).bind(ConsoleUser::TYPE);
        for (id, sequence) in chunk {
            query = query.bind(id).bind(*sequence);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let id: String = row.try_get("aggregate_id")?;
            let event = decode(&row.try_get::<String, _>("payload")?)?;
            if let Some((user, _)) = folded.get_mut(&id) {
                user.apply(&event);
            }
        }
    }
    let folded: Vec<ConsoleUser> = folded.into_values().map(|(u, _)| u).collect();
    let mut users: Vec<UserState> = folded.iter().filter_map(|u| u.state().cloned()).collect();
    users.sort_by(|a, b| a.email.cmp(&b.email));
    Ok(users)
}

/// The audit log: console users' events matching `filter`, newest first, at most `limit`, before
/// position `before` (the previous page's last).
///
/// # Errors
/// [`DbError`].
pub async fn audit(
    pool: &AnyPool,
    filter: &AuditFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEntry>, DbError> {
    let mut sql = String::from("SELECT position, actor, payload FROM console_events WHERE aggregate_type = $1");
    let mut args: Vec<String> = vec![ConsoleUser::TYPE.to_string()];
    if let Some(actor) = &filter.actor {
        args.push(actor.trim().to_lowercase());
        sql.push_str(&format!(" AND actor = ${}", args.len()));
    }
    if let Some(t) = &filter.event_type {
        args.push(t.clone());
        sql.push_str(&format!(" AND event_type = ${}", args.len()));
    }
    if let Some(before) = before {
        sql.push_str(&format!(" AND position < {before}"));
    }
    sql.push_str(&format!(" ORDER BY position DESC LIMIT {}", limit.clamp(1, 500)));
    let mut query = sqlx::query(&sql);
    for a in &args {
        query = query.bind(a);
    }
    query
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|row| {
            Ok(AuditEntry {
                position: row.try_get("position")?,
                actor: row.try_get("actor")?,
                event: decode(&row.try_get::<String, _>("payload")?)?,
            })
        })
        .collect()
}

/// A server-side console session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub user_id: Uuid,
    /// `password`, `totp`, `enrol` or `full` (see the table's comment).
    pub stage: String,
    pub csrf_token: String,
    pub created_at: i64,
    pub last_seen_at: i64,
}

/// Stores a new session.
///
/// # Errors
/// [`DbError`].
pub async fn create_session(
    pool: &AnyPool,
    token_hash: &str,
    user_id: Uuid,
    stage: &str,
    csrf_token: &str,
    address: &str,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO console_sessions (token_hash, user_id, stage, csrf_token, address, created_at, last_seen_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(token_hash)
    .bind(user_id.to_string())
    .bind(stage)
    .bind(csrf_token)
    .bind(address)
    .bind(now.timestamp())
    .execute(pool)
    .await?;
    Ok(())
}

/// The session of `token_hash`, if any.
///
/// # Errors
/// [`DbError`].
pub async fn session(pool: &AnyPool, token_hash: &str) -> Result<Option<SessionRow>, DbError> {
    let row = sqlx::query(
        "SELECT user_id, stage, csrf_token, created_at, last_seen_at FROM console_sessions WHERE token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        let user_id: String = row.try_get("user_id")?;
        Ok(SessionRow {
            user_id: Uuid::parse_str(&user_id).map_err(|e| DbError::Corrupt(format!("session user id: {e}")))?,
            stage: row.try_get("stage")?,
            csrf_token: row.try_get("csrf_token")?,
            created_at: row.try_get("created_at")?,
            last_seen_at: row.try_get("last_seen_at")?,
        })
    })
    .transpose()
}

/// Marks the session used at `now` and sets its stage.
///
/// # Errors
/// [`DbError`].
pub async fn touch_session(pool: &AnyPool, token_hash: &str, stage: &str, now: DateTime<Utc>) -> Result<(), DbError> {
    sqlx::query("UPDATE console_sessions SET last_seen_at = $1, stage = $2 WHERE token_hash = $3")
        .bind(now.timestamp())
        .bind(stage)
        .bind(token_hash)
        .execute(pool)
        .await?;
    Ok(())
}

/// Ends one session.
///
/// # Errors
/// [`DbError`].
pub async fn end_session(pool: &AnyPool, token_hash: &str) -> Result<(), DbError> {
    sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
        .bind(token_hash)
        .execute(pool)
        .await?;
    Ok(())
}

/// Ends every session of `user_id` (logout everywhere, a disabled user, a changed password).
///
/// # Errors
/// [`DbError`].
pub async fn end_sessions_of(pool: &AnyPool, user_id: Uuid) -> Result<u64, DbError> {
    let done = sqlx::query("DELETE FROM console_sessions WHERE user_id = $1")
        .bind(user_id.to_string())
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Deletes the sessions idle since before `idle_before` or created before `created_before`.
///
/// # Errors
/// [`DbError`].
pub async fn prune_sessions(pool: &AnyPool, idle_before: i64, created_before: i64) -> Result<u64, DbError> {
    let done = sqlx::query("DELETE FROM console_sessions WHERE last_seen_at < $1 OR created_at < $2")
        .bind(idle_before)
        .bind(created_before)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// A merchant command's failure.
#[derive(Debug, thiserror::Error)]
pub enum MerchantOpError {
    #[error(transparent)]
    Refused(#[from] MerchantError),
    #[error("no merchant {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for MerchantOpError {
    fn from(e: sqlx::Error) -> Self {
        MerchantOpError::Db(DbError::Sqlx(e))
    }
}

/// Decides `command` on merchant `merchant_id` and, in one transaction, applies `change` to its
/// stored credentials and appends the events (`actor`: who). A repeat (disabling a disabled
/// merchant) changes nothing. Returns the events appended.
///
/// # Errors
/// [`MerchantOpError::Refused`] by the merchant's rules; [`MerchantOpError::NotFound`];
/// [`MerchantOpError::Db`].
pub async fn execute_merchant(
    db: &crate::Database,
    keyring: &crate::sealed::Keyring,
    merchant_id: &str,
    actor: &str,
    command: MerchantCommand,
    change: Option<crate::merchants::CredentialChange<'_>>,
) -> Result<Vec<MerchantEvent>, MerchantOpError> {
    let id = merchant_aggregate_id(merchant_id);
    // The transaction reads, then writes: on SQLite it must hold the process's write turn, or a
    // write committed meanwhile fails it at once (a WAL snapshot cannot be upgraded).
    let _turn = db.write_turn().await;
    let pool = db.pool();
    let mut attempt = 0;
    loop {
        let mut tx = pool.begin().await?;
        let (events, sequence) = load_events_on::<MerchantEvent>(&mut tx, Merchant::TYPE, id).await?;
        let mut merchant = Merchant::default();
        events.iter().for_each(|e| merchant.apply(e));
        let new = merchant.decide(command.clone())?;
        if new.is_empty() {
            return Ok(new);
        }
        if let Some(change) = &change {
            if !crate::merchants::change_in(&mut tx, keyring, merchant_id, change).await? {
                return Err(MerchantOpError::NotFound(merchant_id.to_string()));
            }
        }
        let rows: Vec<_> = new.iter().map(|e| (e.event_type(), e.at(), e)).collect();
        let appended = match insert_events_on(&mut tx, Merchant::TYPE, id, sequence, actor, &rows).await {
            Ok(()) => tx.commit().await,
            Err(e) => Err(e),
        };
        match appended {
            Ok(()) => return Ok(new),
            Err(e) if is_conflict(&e) && attempt < CONFLICT_RETRIES_MAX => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Stores a new merchant (as [`crate::merchants::add`]) and its `MerchantAdded` event, in one
/// transaction.
///
/// # Errors
/// [`MerchantOpError::Refused`] ([`MerchantError::Exists`]) when the id is taken;
/// [`MerchantOpError::Db`].
pub async fn add_merchant(
    db: &crate::Database,
    keyring: &crate::sealed::Keyring,
    merchant_id: &str,
    credentials: crate::merchants::Credentials<'_>,
    actor: &str,
    by: &str,
    at: DateTime<Utc>,
) -> Result<(), MerchantOpError> {
    let _turn = db.write_turn().await;
    let mut tx = db.pool().begin().await?;
    if !crate::merchants::add_in(&mut tx, keyring, merchant_id, credentials).await? {
        return Err(MerchantError::Exists.into());
    }
    let id = merchant_aggregate_id(merchant_id);
    let (events, sequence) = load_events_on::<MerchantEvent>(&mut tx, Merchant::TYPE, id).await?;
    let mut merchant = Merchant::default();
    events.iter().for_each(|e| merchant.apply(e));
    let new = merchant.decide(MerchantCommand::Add { by: by.to_string(), at })?;
    let rows: Vec<_> = new.iter().map(|e| (e.event_type(), e.at(), e)).collect();
    insert_events_on(&mut tx, Merchant::TYPE, id, sequence, actor, &rows).await?;
    tx.commit().await?;
    Ok(())
}

/// Merchant `merchant_id`'s events, oldest first (its page's history).
///
/// # Errors
/// [`DbError`].
pub async fn merchant_events(pool: &AnyPool, merchant_id: &str) -> Result<Vec<MerchantEvent>, DbError> {
    Ok(
        load_events::<MerchantEvent>(pool, Merchant::TYPE, merchant_aggregate_id(merchant_id))
            .await?
            .0,
    )
}
