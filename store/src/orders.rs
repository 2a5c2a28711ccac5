//! Executing `PaymentOrder` commands.
//!
//! cqrs-es's `CqrsFramework::execute` returns `()`: it tells neither which events a command
//! emitted (the API must answer 201 for a new order and 200 for a repeat) nor the resulting state,
//! and it never retries an optimistic-lock conflict. So we drive its event store directly, in
//! event-store mode only (its snapshot modes apply events twice in 0.5.0).

use std::collections::HashMap;
use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::EventStoreAggregateContext;
use cqrs_es::persist::{PersistedEventRepository, PersistedEventStore};
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventEnvelope, EventStore};
use payledger_domain::{OrderError, PaymentOrder, PaymentOrderCommand};
use postgres_es::PostgresEventRepository;
use rand::Rng;
use sqlite_es::SqliteEventRepository;
use sqlx::{PgPool, SqlitePool};
use uuid::Uuid;

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

/// Why a command did not execute.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// The aggregate refused it: a business rule.
    #[error(transparent)]
    Rejected(#[from] OrderError),
    /// Still conflicting after [`CONFLICT_RETRIES_MAX`] retries: too many concurrent writers on
    /// one order. Safe to retry later.
    #[error("too many concurrent changes to this order; retry")]
    Contention,
    /// The database is unreachable or overloaded (see [`crate::backend::is_unavailable`]); nothing was
    /// stored by this attempt. Safe to retry later.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// The database failed otherwise or holds data that does not decode.
    #[error("event store failure: {0}")]
    Store(String),
}

impl ExecuteError {
    /// Sorts a failure of cqrs-es that is not a business rule or a conflict: a lost or refused
    /// connection is [`ExecuteError::Unavailable`], the rest [`ExecuteError::Store`]. postgres-es
    /// and sqlite-es box the `sqlx::Error` they got, so it is looked at there.
    fn from_store(e: AggregateError<OrderError>) -> Self {
        let unavailable = match &e {
            AggregateError::DatabaseConnectionError(_) => true,
            AggregateError::UnexpectedError(inner) => inner
                .downcast_ref::<sqlx::Error>()
                .is_some_and(crate::backend::is_unavailable),
            _ => false,
        };
        if unavailable {
            Self::Unavailable(e.to_string())
        } else {
            Self::Store(e.to_string())
        }
    }
}

type PgStore = PersistedEventStore<PostgresEventRepository, PaymentOrder>;
type LiteStore = PersistedEventStore<SqliteEventRepository, PaymentOrder>;

/// The `PaymentOrder` event store on either backend.
pub enum OrderStore {
    /// postgres-es.
    Postgres(PgStore, PgPool),
    /// sqlite-es.
    Sqlite(LiteStore, SqlitePool),
}

impl OrderStore {
    pub(crate) fn postgres(pool: PgPool) -> Self {
        let repo = PostgresEventRepository::new(pool.clone());
        Self::Postgres(
            PersistedEventStore::new_event_store(repo).with_upcasters(crate::log::upcasters()),
            pool,
        )
    }

    pub(crate) fn sqlite(pool: SqlitePool) -> Self {
        let repo = SqliteEventRepository::new(pool.clone());
        Self::Sqlite(
            PersistedEventStore::new_event_store(repo).with_upcasters(crate::log::upcasters()),
            pool,
        )
    }

    pub(crate) async fn close(&self) {
        match self {
            Self::Postgres(_, pool) => pool.close().await,
            Self::Sqlite(_, pool) => pool.close().await,
        }
    }

    /// Runs `command` against order `order_id`, retrying optimistic-concurrency conflicts up to
    /// [`CONFLICT_RETRIES_MAX`] times with jittered back-off. `metadata` is stored with every
    /// event (who asked, request id).
    ///
    /// # Errors
    /// [`ExecuteError::Rejected`] for a business-rule refusal (nothing stored),
    /// [`ExecuteError::Contention`] when retries ran out, [`ExecuteError::Unavailable`] when the
    /// database cannot be reached, [`ExecuteError::Store`] otherwise.
    pub async fn execute(
        &self,
        order_id: Uuid,
        command: PaymentOrderCommand,
        metadata: HashMap<String, String>,
    ) -> Result<Executed, ExecuteError> {
        self.execute_with(order_id, metadata, Start::Load, None, |_| {
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
    /// that attempt (an order created meanwhile makes it conflict on its first sequence); any
    /// other result is redone on the loaded order.
    ///
    /// `write_turn`, when given, is taken for each append (after the load and the decision) and
    /// released with its commit: SQLite's one writer is then held only for the write.
    ///
    /// # Errors
    /// `decide`'s refusal; otherwise as [`OrderStore::execute`].
    pub async fn execute_with<E, F>(
        &self,
        order_id: Uuid,
        metadata: HashMap<String, String>,
        start: Start,
        write_turn: Option<&tokio::sync::Mutex<()>>,
        decide: F,
    ) -> Result<Executed, E>
    where
        E: From<ExecuteError>,
        F: Fn(&PaymentOrder) -> Result<PaymentOrderCommand, E>,
    {
        let id = order_id.to_string();
        if start == Start::New {
            let attempt = match self {
                Self::Postgres(store, _) => try_execute(store, &id, true, write_turn, &decide, metadata.clone()).await,
                Self::Sqlite(store, _) => try_execute(store, &id, true, write_turn, &decide, metadata.clone()).await,
            };
            if let Ok(Attempt::Done(executed)) = attempt {
                if !executed.events.is_empty() {
                    return Ok(*executed);
                }
            }
        }
        for attempt in 0..=CONFLICT_RETRIES_MAX {
            let result = match self {
                Self::Postgres(store, _) => try_execute(store, &id, false, write_turn, &decide, metadata.clone()).await,
                Self::Sqlite(store, _) => try_execute(store, &id, false, write_turn, &decide, metadata.clone()).await,
            };
            match result {
                Err(AggregateError::AggregateConflict) if attempt < CONFLICT_RETRIES_MAX => {
                    let bound_ms = CONFLICT_BACKOFF_STEP_MS * u64::from(attempt + 1);
                    let wait_ms = rand::thread_rng().gen_range(0..=bound_ms);
                    tracing::debug!(%order_id, attempt, wait_ms, "optimistic lock conflict, retrying");
                    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                }
                Err(AggregateError::AggregateConflict) => return Err(ExecuteError::Contention.into()),
                Err(AggregateError::UserError(e)) => return Err(ExecuteError::Rejected(e).into()),
                Err(e) => return Err(ExecuteError::from_store(e).into()),
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
        let result = match self {
            Self::Postgres(store, _) => store.load_aggregate(&id).await.map(|mut c| c.aggregate().clone()),
            Self::Sqlite(store, _) => store.load_aggregate(&id).await.map(|mut c| c.aggregate().clone()),
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

/// One attempt's result short of a store failure.
enum Attempt<E> {
    Done(Box<Executed>),
    /// `decide` refused.
    Refused(E),
}

async fn try_execute<R, E, F>(
    store: &PersistedEventStore<R, PaymentOrder>,
    id: &str,
    assume_new: bool,
    write_turn: Option<&tokio::sync::Mutex<()>>,
    decide: &F,
    metadata: HashMap<String, String>,
) -> Result<Attempt<E>, AggregateError<OrderError>>
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
    let turn = match write_turn {
        Some(t) => Some(t.lock().await),
        None => None,
    };
    let events = store.commit(events, context, metadata).await?;
    drop(turn);
    Ok(Attempt::Done(Box::new(Executed {
        events,
        order,
        sequence,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(e: sqlx::Error) -> Box<dyn std::error::Error + Send + Sync> {
        Box::new(e)
    }

    #[test]
    fn a_lost_or_refused_connection_is_unavailable_not_a_store_failure() {
        let timed_out = AggregateError::<OrderError>::UnexpectedError(boxed(sqlx::Error::PoolTimedOut));
        assert!(matches!(
            ExecuteError::from_store(timed_out),
            ExecuteError::Unavailable(_)
        ));
        let cut = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let cut = AggregateError::<OrderError>::DatabaseConnectionError(boxed(sqlx::Error::Io(cut)));
        assert!(matches!(ExecuteError::from_store(cut), ExecuteError::Unavailable(_)));
    }

    #[test]
    fn a_database_fault_that_retrying_cannot_fix_stays_a_store_failure() {
        let missing = AggregateError::<OrderError>::UnexpectedError(boxed(sqlx::Error::ColumnNotFound("x".into())));
        assert!(matches!(ExecuteError::from_store(missing), ExecuteError::Store(_)));
        let bad_payload = AggregateError::<OrderError>::DeserializationError(boxed(sqlx::Error::RowNotFound));
        assert!(matches!(ExecuteError::from_store(bad_payload), ExecuteError::Store(_)));
    }
}
