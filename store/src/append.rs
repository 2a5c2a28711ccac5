//! Group commit: the appends of concurrent commands in one transaction.
//!
//! Every command's events reach the store through one [`Appender`] per process. A command
//! queues its serialized events and waits; a committer task takes everything queued (up to
//! [`APPEND_BATCH_COMMANDS_MAX`] commands) and writes it in one transaction with one multi-row
//! `INSERT … ON CONFLICT DO NOTHING RETURNING aggregate_id, sequence`. When every committer is
//! busy the queue fills while they commit, so one commit (one WAL flush) carries many commands;
//! below that, a command is a batch of one, as before.
//!
//! Each command stays optimistic on its own order. Its rows are keyed
//! `(aggregate_type, aggregate_id, sequence)`, and the statement reports which rows it inserted:
//! - all of a command's rows: appended, it is answered `Ok` after the commit;
//! - none: another writer holds its first sequence; only that command is answered
//!   [`AppendError::Conflict`] (it reloads and decides again), the others commit;
//! - some but not all (another writer wrote part of its range, which needs two processes racing
//!   on one order): the transaction is rolled back (events are immutable, so the stray rows cannot
//!   be deleted), that command is answered `Conflict` and the rest are written again.
//!
//! Two commands on one order never share a batch (the second is answered `Conflict` at once; in
//! one process [`crate::turns::OrderTurns`] already keeps them apart). The queue is bounded
//! ([`APPEND_QUEUE_MAX`]): a command that finds it full gets [`AppendError::Overloaded`] (503)
//! rather than waiting without end.
//!
//! Nothing about ordering changes: a batch is one transaction, so on PostgreSQL its rows share a
//! `transaction_id` and read in `global_position` order, and on SQLite they are inserted while
//! this process holds its write turn (the file's single writer).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The row shape an [`Appender`] writes (cqrs-es's serialized event).
pub use cqrs_es::persist::SerializedEvent;
use sqlx::{Database as SqlxDatabase, Encode, PgPool, Postgres, QueryBuilder, Sqlite, SqlitePool, Type};
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::error::ExecuteError;

/// Commands that may wait for a committer at once; one more is refused with
/// [`AppendError::Overloaded`]. About a second of appends at the machine's measured peak.
pub const APPEND_QUEUE_MAX: usize = 1_024;
/// Commands per transaction at most. A command appends a handful of events (at most 3 today),
/// so a batch stays far below both databases' bound-parameter limits.
pub const APPEND_BATCH_COMMANDS_MAX: usize = 64;
/// Rows per `INSERT` statement (7 parameters each: 3,500 parameters, under SQLite's 32,766).
pub const APPEND_STATEMENT_ROWS_MAX: usize = 500;
/// Committer tasks on PostgreSQL, as many as the store pool's default connections: below that
/// many concurrent appends every command finds an idle committer and commits at once, as it would
/// alone; past it, commands queue and go in together. (Two committers batched earlier and cost
/// latency at moderate load: p99 of `POST /v1/orders` at half the peak rate 65–103 ms against
/// 12–17 ms without group commit; with eight it is 19.6 ms at a higher rate.) SQLite has one
/// writer, so one committer.
pub const POSTGRES_COMMITTERS: usize = 8;

/// How long one batch's transaction may take before its commands are answered
/// [`ExecuteError::Unavailable`] (a half-open connection would otherwise hold a committer, its
/// callers and the log's horizon for minutes). Below the HTTP request deadline.
pub const APPEND_TIMEOUT_MS: u64 = 10_000;

/// Called after each commit with the events of the commands it appended (wakes subscribers,
/// counts events).
pub(crate) type OnCommit = Arc<dyn Fn(&[&SerializedEvent]) + Send + Sync>;

/// Histogram of commands per committed transaction (`1` when the system is idle).
pub const APPEND_BATCH_COMMANDS: &str = "payledger_append_batch_commands";

/// Why an append did not happen. Nothing of the command was stored in any case.
#[derive(Debug)]
pub enum AppendError {
    /// Another writer appended to the order first: reload it and decide again.
    Conflict,
    /// The queue is full ([`APPEND_QUEUE_MAX`]); retry later (503).
    Overloaded,
    /// The transaction failed (unavailable database or another fault).
    Failed(ExecuteError),
}

/// One command's append, waiting for a committer.
struct Pending {
    aggregate_id: String,
    events: Vec<SerializedEvent>,
    reply: oneshot::Sender<Result<(), AppendError>>,
}

/// The write pool the committers use.
#[derive(Clone)]
pub(crate) enum WritePool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// The process's entry to group commit (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Appender {
    queue: mpsc::Sender<Pending>,
}

impl Appender {
    /// Starts the committer tasks on `pool` (which must run inside a Tokio runtime). On SQLite,
    /// `write_turn` is taken around each batch. The tasks end when the last `Appender` clone is
    /// dropped.
    pub(crate) fn start(pool: WritePool, write_turn: Option<Arc<Mutex<()>>>, on_commit: OnCommit) -> Self {
        let (queue, receiver) = mpsc::channel(APPEND_QUEUE_MAX);
        let receiver = Arc::new(Mutex::new(receiver));
        let committers = match pool {
            WritePool::Postgres(_) => POSTGRES_COMMITTERS,
            WritePool::Sqlite(_) => 1,
        };
        for _ in 0..committers {
            tokio::spawn(commit_loop(
                receiver.clone(),
                pool.clone(),
                write_turn.clone(),
                on_commit.clone(),
            ));
        }
        Self { queue }
    }

    /// Appends `events` (all of one aggregate, consecutive sequences, the first one after the
    /// aggregate's last stored event) and waits for the commit. A caller that stops waiting
    /// before its batch is written (a request past its deadline, a client gone) is dropped from
    /// the batch: nothing of it is stored, as when a transaction of its own was dropped.
    ///
    /// # Errors
    /// See [`AppendError`].
    pub async fn append(&self, aggregate_id: String, events: Vec<SerializedEvent>) -> Result<(), AppendError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            aggregate_id,
            events,
            reply,
        };
        match self.queue.try_send(pending) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(AppendError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(AppendError::Failed(ExecuteError::Unavailable(
                    "the event store is closed".into(),
                )))
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(AppendError::Failed(ExecuteError::Store(
                "the committer stopped before answering".into(),
            )))
        })
    }
}

async fn commit_loop(
    receiver: Arc<Mutex<mpsc::Receiver<Pending>>>,
    pool: WritePool,
    write_turn: Option<Arc<Mutex<()>>>,
    on_commit: OnCommit,
) {
    loop {
        let mut batch = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < APPEND_BATCH_COMMANDS_MAX {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        let _turn = match &write_turn {
            Some(turn) => Some(turn.lock().await),
            None => None,
        };
        // Callers who stopped waiting go first, so that an abandoned command cannot take
        // its order's place in the batch from a live one behind it.
        batch.retain(|pending| !pending.reply.is_closed());
        let batch = one_per_aggregate(batch);
        write_and_answer(&pool, batch, &on_commit, true).await;
    }
}

/// One transaction of `batch` on `$pool` (a `PgPool` or `SqlitePool`, database type `$db`): the
/// two backends differ only in their types, so the body is written once.
macro_rules! write_batch {
    ($pool:expr, $batch:expr, $db:ty) => {{
        let batch: &[Pending] = $batch;
        let attempt = async {
            let mut tx = $pool.begin().await?;
            let rows = rows_of(batch);
            let mut inserted = Vec::with_capacity(rows.len());
            for chunk in rows.chunks(APPEND_STATEMENT_ROWS_MAX) {
                let mut query = insert_statement::<$db>(chunk);
                inserted.extend(query.build_query_as::<(String, i64)>().fetch_all(&mut *tx).await?);
            }
            match classify(batch, &inserted) {
                Ok(appended) => {
                    tx.commit().await?;
                    Ok(Written::Committed(appended))
                }
                Err(partial) => {
                    tx.rollback().await?;
                    Ok(Written::RolledBack { partial })
                }
            }
        };
        attempt.await.unwrap_or_else(Written::Failed)
    }};
}

/// Writes `batch` (see the module docs) and answers every command in it. When the transaction
/// fails for a reason that is neither transient nor a conflict (a row the database refuses) and
/// `split` is set, each command is written again on its own, so only the faulty one fails.
fn write_and_answer<'a>(
    pool: &'a WritePool,
    mut batch: Vec<Pending>,
    on_commit: &'a OnCommit,
    split: bool,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        while !batch.is_empty() {
            let timeout = Duration::from_millis(APPEND_TIMEOUT_MS);
            let written = match pool {
                WritePool::Postgres(pool) => {
                    tokio::time::timeout(timeout, async { write_batch!(pool, &batch, Postgres) }).await
                }
                WritePool::Sqlite(pool) => {
                    tokio::time::timeout(timeout, async { write_batch!(pool, &batch, Sqlite) }).await
                }
            };
            let Ok(written) = written else {
                // Dropping the attempt dropped its transaction; if the time ran out during
                // COMMIT, the outcome is unknown. Retrying a command is safe: it reloads first.
                tracing::error!(
                    commands = batch.len(),
                    timeout_ms = APPEND_TIMEOUT_MS,
                    "an append batch timed out; it may or may not have committed"
                );
                for pending in batch {
                    let _ = pending
                        .reply
                        .send(Err(AppendError::Failed(ExecuteError::Unavailable(format!(
                            "the event store did not answer within {APPEND_TIMEOUT_MS} ms"
                        )))));
                }
                return;
            };
            match written {
                Written::Committed(outcomes) => {
                    metrics::histogram!(APPEND_BATCH_COMMANDS).record(batch.len() as f64);
                    let appended: Vec<&SerializedEvent> = batch
                        .iter()
                        .zip(&outcomes)
                        .filter(|(_, &appended)| appended)
                        .flat_map(|(pending, _)| pending.events.iter())
                        .collect();
                    if !appended.is_empty() {
                        on_commit(&appended);
                    }
                    for (pending, appended) in batch.into_iter().zip(outcomes) {
                        let _ = pending
                            .reply
                            .send(if appended { Ok(()) } else { Err(AppendError::Conflict) });
                    }
                    return;
                }
                Written::RolledBack { partial } => {
                    // Answer the partly conflicting commands and write the others again.
                    let mut rest = Vec::with_capacity(batch.len());
                    for (pending, partial) in batch.into_iter().zip(partial) {
                        if partial {
                            let _ = pending.reply.send(Err(AppendError::Conflict));
                        } else {
                            rest.push(pending);
                        }
                    }
                    batch = rest;
                }
                Written::Failed(e) => {
                    let conflict = e
                        .as_database_error()
                        .and_then(|d| d.code())
                        .is_some_and(|code| code == "40P01" || code == "40001");
                    let transient = conflict || crate::backend::is_unavailable(&e);
                    if split && !transient && batch.len() > 1 {
                        tracing::warn!(error = %e, commands = batch.len(), "an append batch was refused; writing its commands one by one");
                        for pending in batch {
                            write_and_answer(pool, vec![pending], on_commit, false).await;
                        }
                        return;
                    }
                    tracing::warn!(error = %e, commands = batch.len(), "appending a batch failed");
                    for pending in batch {
                        let _ = pending.reply.send(Err(if conflict {
                            // A deadlock with another process's batch: nothing stored, decide again.
                            AppendError::Conflict
                        } else {
                            AppendError::Failed(ExecuteError::from_sqlx(&e))
                        }));
                    }
                    return;
                }
            }
        }
    })
}

/// Keeps the first command per aggregate; a later one in the same batch would claim the same
/// sequences, so it is answered `Conflict` now and decides again on the reloaded order.
fn one_per_aggregate(batch: Vec<Pending>) -> Vec<Pending> {
    let mut seen = std::collections::HashSet::with_capacity(batch.len());
    let mut kept = Vec::with_capacity(batch.len());
    for pending in batch {
        if seen.insert(pending.aggregate_id.clone()) {
            kept.push(pending);
        } else {
            let _ = pending.reply.send(Err(AppendError::Conflict));
        }
    }
    kept
}

/// What one transaction did.
enum Written {
    /// Committed; per command, whether its rows were appended (else it conflicted, nothing of it
    /// stored).
    Committed(Vec<bool>),
    /// Rolled back because of the commands marked `true` (partly inserted); nothing stored.
    RolledBack { partial: Vec<bool> },
    /// The database failed; nothing known to be stored.
    Failed(sqlx::Error),
}

/// Sorts the inserted `(aggregate_id, sequence)` rows by command: `Ok(appended)` per command, or
/// `Err(partial)` when some command had only part of its rows inserted.
fn classify(batch: &[Pending], inserted: &[(String, i64)]) -> Result<Vec<bool>, Vec<bool>> {
    let mut counts: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
    for (aggregate_id, _) in inserted {
        *counts.entry(aggregate_id.as_str()).or_default() += 1;
    }
    let appended: Vec<usize> = batch
        .iter()
        .map(|p| counts.get(p.aggregate_id.as_str()).copied().unwrap_or(0))
        .collect();
    let partial: Vec<bool> = batch
        .iter()
        .zip(&appended)
        .map(|(p, &n)| n != 0 && n != p.events.len())
        .collect();
    if partial.iter().any(|&p| p) {
        Err(partial)
    } else {
        Ok(batch.iter().zip(appended).map(|(p, n)| n == p.events.len()).collect())
    }
}

/// The multi-row insert of `rows` (placeholders as the backend wants them).
fn insert_statement<'a, DB>(rows: &'a [&'a SerializedEvent]) -> QueryBuilder<'a, DB>
where
    DB: SqlxDatabase,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
    &'a serde_json::Value: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) ",
    );
    query.push_values(rows, |mut row, event| {
        row.push_bind(event.aggregate_type.as_str())
            .push_bind(event.aggregate_id.as_str())
            .push_bind(i64::try_from(event.sequence).unwrap_or(i64::MAX))
            .push_bind(event.event_type.as_str())
            .push_bind(event.event_version.as_str())
            .push_bind(&event.payload)
            .push_bind(&event.metadata);
    });
    query.push(" ON CONFLICT DO NOTHING RETURNING aggregate_id, sequence");
    query
}

fn rows_of(batch: &[Pending]) -> Vec<&SerializedEvent> {
    batch.iter().flat_map(|p| p.events.iter()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(aggregate_id: &str, events: usize) -> (Pending, oneshot::Receiver<Result<(), AppendError>>) {
        let (reply, answer) = oneshot::channel();
        let events = (1..=events)
            .map(|sequence| SerializedEvent {
                aggregate_id: aggregate_id.into(),
                sequence,
                aggregate_type: "PaymentOrder".into(),
                event_type: "E".into(),
                event_version: "1".into(),
                payload: serde_json::json!({}),
                metadata: serde_json::json!({}),
            })
            .collect();
        (
            Pending {
                aggregate_id: aggregate_id.into(),
                events,
                reply,
            },
            answer,
        )
    }

    fn rows(list: &[(&str, i64)]) -> Vec<(String, i64)> {
        list.iter().map(|(a, s)| (a.to_string(), *s)).collect()
    }

    #[test]
    fn a_command_with_all_its_rows_is_appended_and_one_with_none_conflicts() {
        let batch = vec![pending("a", 2).0, pending("b", 1).0, pending("c", 1).0];
        let inserted = rows(&[("a", 1), ("a", 2), ("c", 1)]);
        assert_eq!(classify(&batch, &inserted), Ok(vec![true, false, true]));
    }

    #[test]
    fn a_command_with_part_of_its_rows_rolls_the_batch_back_and_is_named() {
        let batch = vec![pending("a", 2).0, pending("b", 3).0];
        let inserted = rows(&[("a", 1), ("a", 2), ("b", 3)]);
        assert_eq!(classify(&batch, &inserted), Err(vec![false, true]));
    }

    #[test]
    fn a_second_command_on_the_same_order_in_one_batch_conflicts_at_once() {
        let (first, _first_answer) = pending("a", 1);
        let (second, mut second_answer) = pending("a", 1);
        let (other, _other_answer) = pending("b", 1);
        let kept = one_per_aggregate(vec![first, second, other]);
        let kept: Vec<&str> = kept.iter().map(|p| p.aggregate_id.as_str()).collect();
        assert_eq!(kept, ["a", "b"]);
        assert!(matches!(second_answer.try_recv(), Ok(Err(AppendError::Conflict))));
    }
}
