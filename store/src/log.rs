//! The global log: every stored event, in commit order, for subscribers and audit.
//!
//! PostgreSQL hands out `global_position` at insert time, but transactions commit in another
//! order, so "position > checkpoint" would skip a row that commits late with a smaller
//! position. We order by `(transaction_id, global_position)` and read only rows whose
//! transaction is below `pg_snapshot_xmin(pg_current_snapshot())`, i.e. every transaction that
//! could still commit before them has finished. A long transaction can delay readers; it can
//! never make them skip. SQLite has one writer, so insert order is commit order.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use cqrs_es::Aggregate;
use payledger_domain::{ids, Mode, OrderTerms, PaymentOrder, PaymentOrderEvent};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::AnyConnection;
use sqlx::{AnyPool, Row};
use uuid::Uuid;

use crate::backend::{Backend, DbError};
use crate::time::parse_ts;

pub use crate::upcast::upcasters;

/// Orders looked up per query by [`GlobalLog::owners_of`] (bound parameters stay far below
/// SQLite's and PostgreSQL's limits).
pub const MERCHANT_LOOKUP_ORDERS_MAX: usize = 500;

/// Who an order belongs to: its merchant, in test or live mode. Every event of the order belongs
/// to the same owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderOwner {
    pub merchant_id: String,
    pub mode: Mode,
}

impl OrderOwner {
    /// The owner named in an order's terms.
    pub fn of(terms: &OrderTerms) -> Self {
        Self {
            merchant_id: terms.merchant_id.clone(),
            mode: terms.mode,
        }
    }

    /// Whether the order of `terms` is this owner's: same merchant, same mode.
    pub fn owns(&self, terms: &OrderTerms) -> bool {
        terms.merchant_id == self.merchant_id && terms.mode == self.mode
    }
}

/// A position in the global log: `(transaction_id, global_position)`, compared in that order.
/// On SQLite `transaction_id` is always 0. `LogPosition::default()` is before the first event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogPosition {
    pub transaction_id: i64,
    pub global_position: i64,
}

/// One event as read from the global log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEvent {
    /// Where it is in the log.
    pub position: LogPosition,
    /// Stable id: `ids::event_id(order_id, sequence)`.
    pub event_id: Uuid,
    /// The aggregate (order) it belongs to.
    pub order_id: Uuid,
    /// 1-based, dense per order.
    pub sequence: i64,
    /// The event type name, e.g. `PaymentSucceeded`.
    pub event_type: String,
    /// The stored payload version (before upcasting).
    pub event_version: String,
    /// The decoded (upcast) event.
    pub event: PaymentOrderEvent,
    /// Stored metadata: who caused it (`actor`), request id.
    pub metadata: serde_json::Value,
    /// When the database stored it.
    pub recorded_at: DateTime<Utc>,
}

/// Reads the global log. Cheap to clone.
#[derive(Clone)]
pub struct GlobalLog {
    backend: Backend,
    pool: AnyPool,
    upcasters: std::sync::Arc<Vec<Box<dyn EventUpcaster>>>,
}

const PG_COLUMNS: &str = "e.transaction_id::text::bigint AS tx, e.global_position AS pos, e.aggregate_id, \
     e.sequence, e.event_type, e.event_version, e.payload::text AS payload, e.metadata::text AS metadata, \
     to_char(e.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS recorded_at";
const SQLITE_COLUMNS: &str = "0 AS tx, p.global_position AS pos, e.aggregate_id, e.sequence, e.event_type, \
     e.event_version, e.payload, e.metadata, e.recorded_at";
const SQLITE_FROM: &str = "event_positions p JOIN events e ON e.aggregate_type = p.aggregate_type \
     AND e.aggregate_id = p.aggregate_id AND e.sequence = p.sequence";

impl GlobalLog {
    pub(crate) fn new(backend: Backend, pool: AnyPool) -> Self {
        Self {
            backend,
            pool,
            upcasters: std::sync::Arc::new(upcasters()),
        }
    }

    /// Up to `limit` events after `after`, in commit order, only ones whose commit order is
    /// final (see the module docs).
    ///
    /// # Errors
    /// [`DbError::Sqlx`] when the database fails; [`DbError::Corrupt`] when a stored event does
    /// not decode (a bug or tampering: the subscriber must stop, not skip it).
    pub async fn read_after(&self, after: LogPosition, limit: i64) -> Result<Vec<LogEvent>, DbError> {
        self.read_range(after, None, limit).await
    }

    /// As [`GlobalLog::read_after`], but only events at or before `until` when given (a
    /// rebuild that must stop exactly where a live projection stands).
    ///
    /// # Errors
    /// As [`GlobalLog::read_after`].
    pub async fn read_range(
        &self,
        after: LogPosition,
        until: Option<LogPosition>,
        limit: i64,
    ) -> Result<Vec<LogEvent>, DbError> {
        let mut conn = self.pool.acquire().await?;
        self.read_range_on(&mut conn, after, until, limit).await
    }

    /// As [`GlobalLog::read_range`], on `conn`: for a reader holding a transaction, which must
    /// not wait for a second pool connection (see [`GlobalLog::order_events_on`]).
    ///
    /// # Errors
    /// As [`GlobalLog::read_after`].
    pub async fn read_range_on(
        &self,
        conn: &mut AnyConnection,
        after: LogPosition,
        until: Option<LogPosition>,
        limit: i64,
    ) -> Result<Vec<LogEvent>, DbError> {
        let until = until.unwrap_or(LogPosition {
            transaction_id: i64::MAX,
            global_position: i64::MAX,
        });
        let rows = match self.backend {
            Backend::Postgres => {
                // No `aggregate_type` condition: the store holds one aggregate type, and with the
                // condition a fresh table's statistics led the planner to a bitmap scan of the whole
                // primary key on every step (~1,000 rows per read at 3,000 events; most of the
                // database's CPU under load). The global-order index alone answers this.
                let sql = format!(
                    "SELECT {PG_COLUMNS} FROM events e \
                     WHERE (e.transaction_id, e.global_position) > (($1::bigint)::text::xid8, $2) \
                     AND (e.transaction_id, e.global_position) <= (($3::bigint)::text::xid8, $4) \
                     AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
                     ORDER BY e.transaction_id, e.global_position LIMIT $5"
                );
                sqlx::query(&sql)
                    .bind(after.transaction_id)
                    .bind(after.global_position)
                    .bind(until.transaction_id)
                    .bind(until.global_position)
                    .bind(limit)
                    .fetch_all(&mut *conn)
                    .await?
            }
            Backend::Sqlite => {
                let sql = format!(
                    "SELECT {SQLITE_COLUMNS} FROM {SQLITE_FROM} WHERE p.aggregate_type = $1 \
                     AND p.global_position > $2 AND p.global_position <= $3 ORDER BY p.global_position LIMIT $4"
                );
                sqlx::query(&sql)
                    .bind(PaymentOrder::TYPE)
                    .bind(after.global_position)
                    .bind(until.global_position)
                    .bind(limit)
                    .fetch_all(&mut *conn)
                    .await?
            }
        };
        rows.iter().map(|r| self.decode(r)).collect()
    }

    /// How many events the store holds (for progress reporting).
    ///
    /// # Errors
    /// [`DbError::Sqlx`] when the database fails.
    pub async fn count(&self) -> Result<i64, DbError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Whether committed events exist after `after`, readable or not. Called when
    /// [`GlobalLog::read_after`] returned nothing: a `true` then means they are held back by an
    /// older open transaction (any transaction with an id holds the horizon, not only appends),
    /// or were released since the read. Either way the reader should look again within
    /// milliseconds: the open transaction ending wakes nobody. Always false on SQLite.
    ///
    /// # Errors
    /// [`DbError::Sqlx`] when the database fails.
    pub async fn held_back(&self, after: LogPosition) -> Result<bool, DbError> {
        if self.backend == Backend::Sqlite {
            return Ok(false);
        }
        // "Is the newest committed event after `after`?": one backward probe of the global-order
        // index. (An EXISTS over a row comparison was planned as a sequential scan, ~5 ms at 40k
        // events, paid by every idle subscriber step.)
        let held: bool = sqlx::query_scalar(
            "SELECT COALESCE((SELECT (e.transaction_id, e.global_position) > (($1::bigint)::text::xid8, $2) \
             FROM events e ORDER BY e.transaction_id DESC, e.global_position DESC LIMIT 1), false)",
        )
        .bind(after.transaction_id)
        .bind(after.global_position)
        .fetch_one(&self.pool)
        .await?;
        Ok(held)
    }

    /// The position of the newest committed event (readable yet or not; the start of the log
    /// when it is empty). A reader that has applied everything up to it has seen every write
    /// acknowledged before this call.
    ///
    /// # Errors
    /// [`DbError::Sqlx`] when the database fails.
    pub async fn head(&self) -> Result<LogPosition, DbError> {
        // One backward probe of the global-order index (PostgreSQL) or the rowid (SQLite).
        let sql = match self.backend {
            Backend::Postgres => {
                "SELECT e.transaction_id::text::bigint, e.global_position FROM events e \
                 ORDER BY e.transaction_id DESC, e.global_position DESC LIMIT 1"
            }
            Backend::Sqlite => {
                "SELECT 0, p.global_position FROM event_positions p ORDER BY p.global_position DESC LIMIT 1"
            }
        };
        let row = sqlx::query(sql).fetch_optional(&self.pool).await?;
        Ok(match row {
            Some(r) => LogPosition {
                transaction_id: r.try_get(0)?,
                global_position: r.try_get(1)?,
            },
            None => LogPosition::default(),
        })
    }

    /// Every event of one order, by sequence: the audit trail.
    ///
    /// # Errors
    /// As [`GlobalLog::read_after`].
    pub async fn order_events(&self, order_id: Uuid) -> Result<Vec<LogEvent>, DbError> {
        let sql = self.order_sql();
        let rows = sqlx::query(&sql)
            .bind(PaymentOrder::TYPE)
            .bind(order_id.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| self.decode(r)).collect()
    }

    /// The owner (merchant and mode) of each order in `order_ids`, read from its `OrderCreated`
    /// event (sequence 1), in one query per [`MERCHANT_LOOKUP_ORDERS_MAX`] orders. Orders without
    /// an `OrderCreated` are absent from the map. For a reader that needs the owner of events
    /// other than `OrderCreated` (the NATS relay's subjects and headers) without waiting for a
    /// projection.
    ///
    /// # Errors
    /// As [`GlobalLog::read_after`].
    pub async fn owners_of(&self, order_ids: &[Uuid]) -> Result<HashMap<Uuid, OrderOwner>, DbError> {
        let columns = match self.backend {
            Backend::Postgres => PG_COLUMNS,
            Backend::Sqlite => SQLITE_COLUMNS,
        };
        let from = match self.backend {
            Backend::Postgres => "events e",
            Backend::Sqlite => SQLITE_FROM,
        };
        let mut merchants = HashMap::with_capacity(order_ids.len());
        for chunk in order_ids.chunks(MERCHANT_LOOKUP_ORDERS_MAX) {
            // `$2, $3, …`: the Any driver binds no arrays, so the IN list is spelled out.
            let placeholders: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT {columns} FROM {from} WHERE e.aggregate_type = $1 AND e.sequence = 1 \
                 AND e.aggregate_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(PaymentOrder::TYPE);
            for id in chunk {
                query = query.bind(id.to_string());
            }
            for row in query.fetch_all(&self.pool).await? {
                let event = self.decode(&row)?;
                if let PaymentOrderEvent::OrderCreated { terms, .. } = event.event {
                    merchants.insert(event.order_id, OrderOwner::of(&terms));
                }
            }
        }
        Ok(merchants)
    }

    /// As [`GlobalLog::order_events`], on `conn`: for a transactional subscriber, which must not
    /// take a second pool connection while its transaction holds one (on SQLite that transaction
    /// holds the write lock, and the connections it would wait for may be waiting for that lock).
    ///
    /// # Errors
    /// As [`GlobalLog::read_after`].
    pub async fn order_events_on(&self, conn: &mut AnyConnection, order_id: Uuid) -> Result<Vec<LogEvent>, DbError> {
        let sql = self.order_sql();
        let rows = sqlx::query(&sql)
            .bind(PaymentOrder::TYPE)
            .bind(order_id.to_string())
            .fetch_all(&mut *conn)
            .await?;
        rows.iter().map(|r| self.decode(r)).collect()
    }

    fn order_sql(&self) -> String {
        match self.backend {
            Backend::Postgres => format!(
                "SELECT {PG_COLUMNS} FROM events e WHERE e.aggregate_type = $1 AND e.aggregate_id = $2 ORDER BY e.sequence"
            ),
            Backend::Sqlite => format!(
                "SELECT {SQLITE_COLUMNS} FROM {SQLITE_FROM} WHERE p.aggregate_type = $1 AND p.aggregate_id = $2 \
                 ORDER BY p.sequence"
            ),
        }
    }

    fn decode(&self, row: &AnyRow) -> Result<LogEvent, DbError> {
        let aggregate_id: String = row.try_get("aggregate_id")?;
        let sequence: i64 = row.try_get("sequence")?;
        let corrupt = |what: String| DbError::Corrupt(format!("event {aggregate_id}#{sequence}: {what}"));
        let payload: String = row.try_get("payload")?;
        let metadata: String = row.try_get("metadata")?;
        let event_type: String = row.try_get("event_type")?;
        let event_version: String = row.try_get("event_version")?;
        let metadata: serde_json::Value = serde_json::from_str(&metadata).map_err(|e| corrupt(e.to_string()))?;
        // Most rows are at the current version: decode them straight from the text. Only rows an
        // upcaster claims take the detour through a JSON tree.
        let event: PaymentOrderEvent = if self.upcasters.iter().any(|u| u.can_upcast(&event_type, &event_version)) {
            let mut serialized = SerializedEvent {
                aggregate_id: aggregate_id.clone(),
                sequence: usize::try_from(sequence).map_err(|e| corrupt(e.to_string()))?,
                aggregate_type: PaymentOrder::TYPE.to_string(),
                event_type: event_type.clone(),
                event_version: event_version.clone(),
                payload: serde_json::from_str(&payload).map_err(|e| corrupt(e.to_string()))?,
                metadata: serde_json::Value::Null,
            };
            for upcaster in self.upcasters.iter() {
                if upcaster.can_upcast(&serialized.event_type, &serialized.event_version) {
                    serialized = upcaster.upcast(serialized);
                }
            }
            serde_json::from_value(serialized.payload).map_err(|e| corrupt(e.to_string()))?
        } else {
            serde_json::from_str(&payload).map_err(|e| corrupt(e.to_string()))?
        };
        let order_id = Uuid::parse_str(&aggregate_id).map_err(|e| corrupt(e.to_string()))?;
        let recorded_at: String = row.try_get("recorded_at")?;
        Ok(LogEvent {
            position: LogPosition {
                transaction_id: row.try_get("tx")?,
                global_position: row.try_get("pos")?,
            },
            event_id: ids::event_id(&aggregate_id, sequence),
            order_id,
            sequence,
            event_type,
            event_version,
            event,
            metadata,
            recorded_at: parse_ts(&recorded_at).map_err(|e| corrupt(e.to_string()))?,
        })
    }
}
