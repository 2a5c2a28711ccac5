//! The `order_view` / `refund_view` projection.
//!
//! A transactional subscriber: for each batch it loads the affected orders' current views, folds
//! the new events in, and upserts the rows, all in the checkpoint's transaction.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use payledger_store::subscription::{SubscriberError, TransactionalSubscriber};
use payledger_store::time::fmt_ts;
use payledger_store::{LogEvent, LogPosition};
use sqlx::{AnyConnection, AnyPool};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use uuid::Uuid;

use crate::view::OrderView;

/// Checkpoint name of this projection.
pub const PROJECTION_NAME: &str = "order_view";

/// How many committed batches a waiter may fall behind before it re-checks the table.
pub const APPLIED_BROADCAST_CAPACITY: usize = 256;

/// `(order_id, last_sequence)` of every order a committed batch changed.
type AppliedBatch = Arc<Vec<(Uuid, i64)>>;

/// Keeps `order_view` and `refund_view`. Share it in an `Arc`.
pub struct OrderProjection {
    /// What the batch in progress changed; published once it commits.
    pending: Mutex<Vec<(Uuid, i64)>>,
    applied: broadcast::Sender<AppliedBatch>,
}

impl Default for OrderProjection {
    fn default() -> Self {
        Self {
            pending: Mutex::new(vec![]),
            applied: broadcast::channel(APPLIED_BROADCAST_CAPACITY).0,
        }
    }
}

impl OrderProjection {
    /// Waits until `order_view` holds order `order_id` at `sequence` or later, or `timeout`
    /// passes. Used by the API so that a client reads its own writes; returns whether it did.
    ///
    /// One table lookup, then only the batches this process commits are inspected: a waiter
    /// costs no query per batch. Falling behind the broadcast, it looks at the table again.
    ///
    /// # Errors
    /// The database error of the check query.
    pub async fn wait_for(
        &self,
        pool: &AnyPool,
        order_id: Uuid,
        sequence: i64,
        timeout: Duration,
    ) -> Result<bool, sqlx::Error> {
        // Subscribe before looking, so a batch committed in between is still seen.
        let mut applied = self.applied.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut look = true;
        loop {
            if look {
                let have: Option<i64> = sqlx::query_scalar("SELECT last_sequence FROM order_view WHERE order_id = $1")
                    .bind(order_id.to_string())
                    .fetch_optional(pool)
                    .await?;
                if have.is_some_and(|s| s >= sequence) {
                    return Ok(true);
                }
            }
            match tokio::time::timeout_at(deadline, applied.recv()).await {
                Err(_) | Ok(Err(broadcast::error::RecvError::Closed)) => return Ok(false),
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => look = true,
                Ok(Ok(batch)) => {
                    if batch.iter().any(|(id, s)| *id == order_id && *s >= sequence) {
                        return Ok(true);
                    }
                    look = false;
                }
            }
        }
    }
}

async fn load_view(conn: &mut AnyConnection, order_id: Uuid) -> Result<Option<OrderView>, SubscriberError> {
    let doc: Option<String> = sqlx::query_scalar("SELECT doc FROM order_view WHERE order_id = $1")
        .bind(order_id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    doc.map(|d| serde_json::from_str(&d))
        .transpose()
        .map_err(|e| SubscriberError::Failed(format!("order_view {order_id} does not decode: {e}")))
}

async fn store_view(conn: &mut AnyConnection, v: &OrderView) -> Result<(), SubscriberError> {
    let doc = serde_json::to_string(v).map_err(|e| SubscriberError::Failed(e.to_string()))?;
    sqlx::query(
        "INSERT INTO order_view (order_id, merchant_id, out_trade_no, status, amount_minor, currency, channel, \
         created_at, updated_at, last_sequence, doc) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (order_id) DO UPDATE SET status = $4, updated_at = $9, last_sequence = $10, doc = $11",
    )
    .bind(v.order_id.to_string())
    .bind(&v.merchant_id)
    .bind(&v.out_trade_no)
    .bind(v.status.as_str())
    .bind(v.amount)
    .bind(&v.currency)
    .bind(&v.channel)
    .bind(fmt_ts(v.created_at))
    .bind(fmt_ts(v.updated_at))
    .bind(v.last_sequence)
    .bind(doc)
    .execute(&mut *conn)
    .await?;
    for r in &v.refunds {
        let doc = serde_json::to_string(r).map_err(|e| SubscriberError::Failed(e.to_string()))?;
        sqlx::query(
            "INSERT INTO refund_view (refund_id, order_id, merchant_id, out_refund_no, status, amount_minor, currency, \
             created_at, updated_at, doc) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (refund_id) DO UPDATE SET status = $5, updated_at = $9, doc = $10",
        )
        .bind(r.refund_id.to_string())
        .bind(v.order_id.to_string())
        .bind(&v.merchant_id)
        .bind(&r.out_refund_no)
        .bind(r.status.as_str())
        .bind(r.amount)
        .bind(&r.currency)
        .bind(fmt_ts(r.created_at))
        .bind(fmt_ts(r.updated_at))
        .bind(doc)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl TransactionalSubscriber for OrderProjection {
    fn name(&self) -> &'static str {
        PROJECTION_NAME
    }

    async fn apply(&self, tx: &mut AnyConnection, events: &[LogEvent]) -> Result<(), SubscriberError> {
        // Group by order, keeping each order's events in log order (which is sequence order).
        let mut order: Vec<Uuid> = vec![];
        let mut by_order: HashMap<Uuid, Vec<&LogEvent>> = HashMap::new();
        for e in events {
            by_order
                .entry(e.order_id)
                .or_insert_with(|| {
                    order.push(e.order_id);
                    vec![]
                })
                .push(e);
        }
        let mut changed = Vec::with_capacity(order.len());
        for order_id in order {
            let mut view = load_view(tx, order_id).await?;
            for e in &by_order[&order_id] {
                view = Some(OrderView::fold(view, e.sequence, &e.event).map_err(SubscriberError::Failed)?);
            }
            if let Some(v) = view {
                store_view(tx, &v).await?;
                changed.push((v.order_id, v.last_sequence));
            }
        }
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = changed;
        Ok(())
    }

    fn committed(&self, _up_to: LogPosition) {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        // No receiver is fine: nobody is waiting.
        let _ = self.applied.send(Arc::new(batch));
    }
}
