//! Executing `PaymentOrder` commands.
//!
//! cqrs-es's `CqrsFramework::execute` returns `()`: it tells neither which events a command
//! emitted (the API must answer 201 for a new order and 200 for a repeat) nor the resulting state,
//! and it never retries an optimistic-lock conflict. So we drive its event store directly, in
//! event-store mode only (its snapshot modes apply events twice in 0.5.0): cqrs-es loads the
//! order, the aggregate decides, and the events are appended through [`crate::append`]'s group
//! commit (cqrs-es's own `commit` writes one transaction per command, one statement per event).

use std::collections::HashMap;
use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::EventStoreAggregateContext;
use cqrs_es::persist::{PersistedEventRepository, PersistedEventStore, SerializedEvent};
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventEnvelope, EventStore};
use payledger_domain::{OrderError, PaymentOrder, PaymentOrderCommand};
use postgres_es::PostgresEventRepository;
use rand::Rng;
use sqlite_es::SqliteEventRepository;
use sqlx::{PgPool, SqlitePool};
use uuid::Uuid;

use crate::append::{AppendError, Appender, WritePool};
pub use crate::error::ExecuteError;

/// How many times a command is re-run after an optimistic-concurrency conflict before the caller
/// gets [`ExecuteError::Contention`]. Each retry reloads the order, so a duplicate callback that
/// lost the race becomes a no-op on its second run.
pub const CONFLICT_RETRIES_MAX: u32 = 8;
/// Upper bound of the random back-off before retry `n`: `n × CONFLICT_BACKOFF_STEP_MS`, jittered.
pub const CONFLICT_BACKOFF_STEP_MS: u64 = 5;

/// What a command did.
#[derive(Debug)]
pub struct Executed {
    /// The events this command committed, in order; empty when it was a no-op (a repeat).
    pub events: Vec<EventEnvelope<PaymentOrder>>,
    /// The order after the command.
    pub order: PaymentOrder,
    /// Sequence of the order's last event after the command (0: the order does not exist).
    pub sequence: usize,
}

type PgStore = PersistedEventStore<PostgresEventRepository, PaymentOrder>;
type LiteStore = PersistedEventStore<SqliteEventRepository, PaymentOrder>;

/// The `PaymentOrder` event store on either backend: cqrs-es loads, [`Appender`] appends.
pub struct OrderStore {
    events: Events,
    appender: Appender,
}

/// cqrs-es's event store, for loading.
enum Events {
    Postgres(PgStore, PgPool),
    Sqlite(LiteStore, SqlitePool),
}

impl OrderStore {
    /// Starts the committers (see [`Appender::start`]), so it must run inside a Tokio runtime.
    pub(crate) fn postgres(pool: PgPool, on_commit: crate::append::OnCommit) -> Self {
        let repo = PostgresEventRepository::new(pool.clone());
        Self {
            events: Events::Postgres(
                PersistedEventStore::new_event_store(repo).with_upcasters(crate::log::upcasters()),
                pool.clone(),
            ),
            appender: Appender::start(WritePool::Postgres(pool), None, on_commit),
        }
    }

    /// As [`OrderStore::postgres`]; each batch takes `write_turn` (the process's SQLite writer
    /// turn) for its transaction.
    pub(crate) fn sqlite(
        pool: SqlitePool,
        write_turn: std::sync::Arc<tokio::sync::Mutex<()>>,
        on_commit: crate::append::OnCommit,
    ) -> Self {
        let repo = SqliteEventRepository::new(pool.clone());
        Self {
            events: Events::Sqlite(
                PersistedEventStore::new_event_store(repo).with_upcasters(crate::log::upcasters()),
                pool.clone(),
            ),
            appender: Appender::start(WritePool::Sqlite(pool), Some(write_turn), on_commit),
        }
    }

    /// Where this store's appends are group-committed. Commands go through
    /// [`OrderStore::execute_with`]; this is for tests and tools that write rows directly.
    pub fn appender(&self) -> &Appender {
        &self.appender
    }

    pub(crate) async fn close(&self) {
        match &self.events {
            Events::Postgres(_, pool) => pool.close().await,
            Events::Sqlite(_, pool) => pool.close().await,
        }
    }

    /// Runs `command` against order `order_id`, retrying optimistic-concurrency conflicts up to
    /// [`CONFLICT_RETRIES_MAX`] times with jittered back-off. `metadata` is stored with every
    /// event (who asked, request id).
    ///
    /// # Errors
    /// [`ExecuteError::Rejected`] for a business-rule refusal (nothing stored),
    /// [`ExecuteError::Contention`] when retries ran out, [`ExecuteError::Overloaded`] when the
    /// append queue is full, [`ExecuteError::Unavailable`] when the database cannot be reached,
    /// [`ExecuteError::Store`] otherwise.
    pub async fn execute(
        &self,
        order_id: Uuid,
        command: PaymentOrderCommand,
        metadata: HashMap<String, String>,
    ) -> Result<Executed, ExecuteError> {
        self.execute_with(order_id, metadata, Start::Load, |_| {
            Ok::<_, ExecuteError>(command.clone())
        })
        .await
    }

    /// As [`OrderStore::execute`], with the command decided from the loaded order by `decide`,
    /// which may refuse (its error is returned as is, nothing stored). On a conflict the order
    /// is loaded again and `decide` runs again on it, so the decision always rests on the state
    /// the append extends: one load per attempt, where checking the order first and then
    /// executing would load it twice.
    ///
    /// `start` [`Start::New`] is for an order the caller has just seen not to exist: the first
    /// attempt skips the load and decides on the empty order. Only an append is trusted from
    /// that attempt (an order created meanwhile makes it conflict on its first sequence); an
    /// error of the store (overloaded, unavailable) is the answer; a conflict or a refusal is
    /// redone on the loaded order.
    ///
    /// The append is queued for group commit ([`crate::append`]) after the load and the
    /// decision; SQLite's one writer is held only for the batch's write.
    ///
    /// # Errors
    /// `decide`'s refusal; otherwise as [`OrderStore::execute`].
    pub async fn execute_with<E, F>(
        &self,
        order_id: Uuid,
        metadata: HashMap<String, String>,
        start: Start,
        decide: F,
    ) -> Result<Executed, E>
    where
        E: From<ExecuteError>,
        F: Fn(&PaymentOrder) -> Result<PaymentOrderCommand, E>,
    {
        let id = order_id.to_string();
        if start == Start::New {
            let attempt = match &self.events {
                Events::Postgres(store, _) => {
                    try_execute(store, &self.appender, &id, true, &decide, metadata.clone()).await
                }
                Events::Sqlite(store, _) => {
                    try_execute(store, &self.appender, &id, true, &decide, metadata.clone()).await
                }
            };
            match attempt {
                Ok(Attempt::Done(executed)) if !executed.events.is_empty() => return Ok(*executed),
                // Overloaded, unavailable or failed: the same append would meet the same
                // answer, so it is the command's answer (queueing it again would double the
                // load exactly when the queue is full).
                Err(Failure::Execute(e)) => return Err(e.into()),
                _ => {}
            }
        }
        for attempt in 0..=CONFLICT_RETRIES_MAX {
            let result = match &self.events {
                Events::Postgres(store, _) => {
                    try_execute(store, &self.appender, &id, false, &decide, metadata.clone()).await
                }
                Events::Sqlite(store, _) => {
                    try_execute(store, &self.appender, &id, false, &decide, metadata.clone()).await
                }
            };
            match result {
                Err(Failure::Conflict) if attempt < CONFLICT_RETRIES_MAX => {
                    let bound_ms = CONFLICT_BACKOFF_STEP_MS * u64::from(attempt + 1);
                    let wait_ms = rand::thread_rng().gen_range(0..=bound_ms);
                    tracing::debug!(%order_id, attempt, wait_ms, "optimistic lock conflict, retrying");
                    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                }
                Err(Failure::Conflict) => return Err(ExecuteError::Contention.into()),
                Err(Failure::Execute(e)) => return Err(e.into()),
                Ok(Attempt::Refused(e)) => return Err(e),
                Ok(Attempt::Done(executed)) => return Ok(*executed),
            }
        }
        Err(ExecuteError::Contention.into())
    }

    /// Loads the order's current state (an empty `PaymentOrder` when it does not exist).
    ///
    /// # Errors
    /// [`ExecuteError::Unavailable`] when the database cannot be reached, [`ExecuteError::Store`]
    /// when it fails otherwise or an event does not decode.
    pub async fn load(&self, order_id: Uuid) -> Result<PaymentOrder, ExecuteError> {
        let id = order_id.to_string();
        let result = match &self.events {
            Events::Postgres(store, _) => store.load_aggregate(&id).await.map(|mut c| c.aggregate().clone()),
            Events::Sqlite(store, _) => store.load_aggregate(&id).await.map(|mut c| c.aggregate().clone()),
        };
        result.map_err(ExecuteError::from_store)
    }
}

/// Where a command's first attempt starts (see [`OrderStore::execute_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Load the order's events.
    Load,
    /// The caller has just seen that the order does not exist: start from the empty order.
    New,
}

/// Why one attempt did not finish.
enum Failure {
    /// Another writer appended to the order first: load again and retry.
    Conflict,
    /// Anything else, final.
    Execute(ExecuteError),
}

impl From<AggregateError<OrderError>> for Failure {
    fn from(e: AggregateError<OrderError>) -> Self {
        match e {
            AggregateError::AggregateConflict => Self::Conflict,
            AggregateError::UserError(e) => Self::Execute(ExecuteError::Rejected(e)),
            e => Self::Execute(ExecuteError::from_store(e)),
        }
    }
}

/// One attempt's result short of a store failure.
enum Attempt<E> {
    Done(Box<Executed>),
    /// `decide` refused.
    Refused(E),
}

async fn try_execute<R, E, F>(
    store: &PersistedEventStore<R, PaymentOrder>,
    appender: &Appender,
    id: &str,
    assume_new: bool,
    decide: &F,
    metadata: HashMap<String, String>,
) -> Result<Attempt<E>, Failure>
where
    R: PersistedEventRepository,
    F: Fn(&PaymentOrder) -> Result<PaymentOrderCommand, E>,
{
    let mut context = if assume_new {
        EventStoreAggregateContext {
            aggregate_id: id.to_string(),
            aggregate: PaymentOrder::default(),
            current_sequence: 0,
            current_snapshot: None,
        }
    } else {
        store.load_aggregate(id).await?
    };
    let command = match decide(context.aggregate()) {
        Ok(c) => c,
        Err(e) => return Ok(Attempt::Refused(e)),
    };
    let sink = EventSink::default();
    context
        .aggregate()
        .handle(command, &(), &sink)
        .await
        .map_err(AggregateError::UserError)?;
    let order = context.aggregate().clone();
    let events = sink.collect().await;
    let sequence = context.current_sequence + events.len();
    if events.is_empty() {
        return Ok(Attempt::Done(Box::new(Executed {
            events: vec![],
            order,
            sequence,
        })));
    }
    let events: Vec<EventEnvelope<PaymentOrder>> = events
        .into_iter()
        .zip(context.current_sequence + 1..)
        .map(|(payload, sequence)| EventEnvelope {
            aggregate_id: id.to_string(),
            sequence,
            payload,
            metadata: metadata.clone(),
        })
        .collect();
    let rows = events
        .iter()
        .map(SerializedEvent::try_from)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::Execute(ExecuteError::Store(format!("an event does not serialize: {e}"))))?;
    match appender.append(id.to_string(), rows).await {
        Ok(()) => {}
        Err(AppendError::Conflict) => return Err(Failure::Conflict),
        Err(AppendError::Overloaded) => return Err(Failure::Execute(ExecuteError::Overloaded)),
        Err(AppendError::Failed(e)) => return Err(Failure::Execute(e)),
    }
    Ok(Attempt::Done(Box::new(Executed {
        events,
        order,
        sequence,
    })))
}
