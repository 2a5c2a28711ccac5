//! Why a command did not execute ([`ExecuteError`]), shared by the command path
//! ([`crate::orders`]) and group commit ([`crate::append`]).

use cqrs_es::AggregateError;
use payledger_domain::OrderError;

/// Why a command did not execute.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// The aggregate refused it: a business rule.
    #[error(transparent)]
    Rejected(#[from] OrderError),
    /// Still conflicting after [`crate::orders::CONFLICT_RETRIES_MAX`] retries: too many concurrent writers on
    /// one order. Safe to retry later.
    #[error("too many concurrent changes to this order; retry")]
    Contention,
    /// The append queue is full ([`crate::append::APPEND_QUEUE_MAX`] commands wait already):
    /// the store is at its limit. Nothing was stored; safe to retry later.
    #[error("the event store is at capacity; retry")]
    Overloaded,
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
    pub(crate) fn from_sqlx(e: &sqlx::Error) -> Self {
        if crate::backend::is_unavailable(e) {
            Self::Unavailable(e.to_string())
        } else {
            Self::Store(e.to_string())
        }
    }

    pub(crate) fn from_store(e: AggregateError<OrderError>) -> Self {
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
