//! Turning outcome events into `notify_job` rows: from the global log ([`NotifyEnqueuer`],
//! embedded mode) or from the notifier's JetStream consumer ([`EventEnqueuer`], NATS mode).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use payledger_domain::PaymentOrderEvent;
use payledger_projections::OrderView;
use payledger_store::subscription::{EffectSubscriber, SubscriberError, TransactionalSubscriber};
use payledger_store::time::fmt_ts;
use payledger_store::{Database, GlobalLog, LogEvent, LogPosition};
use sqlx::AnyConnection;
use tokio::sync::Notify;

/// Checkpoint name of the enqueuer.
pub const ENQUEUER_NAME: &str = "notify_enqueue";

/// The notification type of an event, if merchants are notified of it.
pub fn notification_type(event: &PaymentOrderEvent) -> Option<&'static str> {
    Some(match event {
        PaymentOrderEvent::PaymentSucceeded { .. } => "payment.succeeded",
        PaymentOrderEvent::PaymentFailed { .. } => "payment.failed",
        PaymentOrderEvent::OrderClosed { .. } => "order.closed",
        PaymentOrderEvent::RefundSucceeded { .. } => "refund.succeeded",
        PaymentOrderEvent::RefundFailed { .. } => "refund.failed",
        _ => return None,
    })
}

/// Queues a notification for every outcome event of an order with a `notify_url`.
pub struct NotifyEnqueuer {
    log: GlobalLog,
    queued: Arc<Notify>,
    /// Whether the batch in progress queued a job (the sender is woken once it commits).
    queued_in_batch: std::sync::atomic::AtomicBool,
}

impl NotifyEnqueuer {
    /// `queued` is notified after each batch that queued something (wakes the [`crate::Sender`]).
    pub fn new(log: GlobalLog, queued: Arc<Notify>) -> Self {
        Self {
            log,
            queued,
            queued_in_batch: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// Queues the notification of `e` through `tx` when merchants are notified of its type and its
/// order has a `notify_url`; returns whether a job was queued (a repeat is a no-op: the job id is
/// the event id). Shared by the embedded enqueuer (many events, one transaction with the
/// checkpoint) and the JetStream one (one event, one transaction, then the ack).
///
/// # Errors
/// [`SubscriberError`] when the database fails or the order's history does not fold.
pub async fn enqueue(log: &GlobalLog, tx: &mut AnyConnection, e: &LogEvent) -> Result<bool, SubscriberError> {
    let Some(kind) = notification_type(&e.event) else {
        return Ok(false);
    };
    // The order as it was right after this event: the same document on every replay.
    let history = log.order_events_on(&mut *tx, e.order_id).await?;
    let view = OrderView::from_events(
        history
            .iter()
            .take_while(|h| h.sequence <= e.sequence)
            .map(|h| (h.sequence, &h.event)),
    )
    .map_err(SubscriberError::Failed)?
    .ok_or_else(|| SubscriberError::Failed(format!("no history for order {}", e.order_id)))?;
    let Some(notify_url) = view.notify_url.clone() else {
        return Ok(false);
    };
    let mut body = serde_json::json!({
        "id": e.event_id,
        "type": kind,
        "mode": view.mode,
        "created_at": fmt_ts(e.event.occurred_at()),
        "data": view,
    });
    if let PaymentOrderEvent::RefundSucceeded { refund_id, .. } | PaymentOrderEvent::RefundFailed { refund_id, .. } =
        &e.event
    {
        body["refund_id"] = serde_json::json!(refund_id);
    }
    let now = fmt_ts(Utc::now());
    sqlx::query(
        "INSERT INTO notify_job (notification_id, merchant_id, mode, order_id, event_type, notify_url, body, status, \
         attempts, next_attempt_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $8, $8) ON CONFLICT (notification_id) DO NOTHING",
    )
    .bind(e.event_id.to_string())
    .bind(&view.merchant_id)
    .bind(view.mode.as_str())
    .bind(e.order_id.to_string())
    .bind(kind)
    .bind(notify_url)
    .bind(body.to_string())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(true)
}

#[async_trait]
impl TransactionalSubscriber for NotifyEnqueuer {
    fn name(&self) -> &str {
        ENQUEUER_NAME
    }

    async fn apply(&self, tx: &mut AnyConnection, events: &[LogEvent]) -> Result<(), SubscriberError> {
        for e in events {
            if enqueue(&self.log, tx, e).await? {
                self.queued_in_batch.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn committed(&self, _up_to: LogPosition) {
        if self.queued_in_batch.swap(false, std::sync::atomic::Ordering::Relaxed) {
            self.queued.notify_one();
        }
    }
}

/// The enqueuer of NATS mode: the handler of the notifier's JetStream consumer. Each event's job
/// is one INSERT (its own transaction), committed before the consumer acks the message (a crash
/// in between redelivers it, and the repeat is a no-op), and then wakes the [`crate::Sender`].
pub struct EventEnqueuer {
    db: Database,
    queued: Arc<Notify>,
}

impl EventEnqueuer {
    /// Queues into `db`; `queued` is notified after each queued job.
    pub fn new(db: Database, queued: Arc<Notify>) -> Self {
        Self { db, queued }
    }
}

#[async_trait]
impl EffectSubscriber for EventEnqueuer {
    fn name(&self) -> &'static str {
        "notify_enqueue_jetstream"
    }

    async fn handle(&self, event: &LogEvent) -> Result<(), SubscriberError> {
        // Most events are not notified: no transaction for them.
        if notification_type(&event.event).is_none() {
            return Ok(());
        }
        // No explicit transaction: the job is one INSERT, atomic on its own, and the history it
        // is built from never changes. (A read-then-write transaction on SQLite fails with
        // SQLITE_BUSY instead of waiting when another writer holds the lock.)
        let mut conn = self.db.pool().acquire().await?;
        let queued = enqueue(&self.db.log(), &mut conn, event).await?;
        if queued {
            self.queued.notify_one();
        }
        Ok(())
    }
}
