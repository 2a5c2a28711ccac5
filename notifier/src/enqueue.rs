//! Turning outcome events into `notify_job` rows.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use payledger_domain::PaymentOrderEvent;
use payledger_projections::OrderView;
use payledger_store::subscription::{SubscriberError, TransactionalSubscriber};
use payledger_store::time::fmt_ts;
use payledger_store::{GlobalLog, LogEvent, LogPosition};
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
}

impl NotifyEnqueuer {
    /// `queued` is notified after each batch that queued something (wakes the [`crate::Sender`]).
    pub fn new(log: GlobalLog, queued: Arc<Notify>) -> Self {
        Self { log, queued }
    }
}

#[async_trait]
impl TransactionalSubscriber for NotifyEnqueuer {
    fn name(&self) -> &str {
        ENQUEUER_NAME
    }

    async fn apply(&self, tx: &mut AnyConnection, events: &[LogEvent]) -> Result<(), SubscriberError> {
        for e in events {
            let Some(kind) = notification_type(&e.event) else {
                continue;
            };
            // The order as it was right after this event: the same document on every replay.
            let history = self.log.order_events_on(&mut *tx, e.order_id).await?;
            let view = OrderView::from_events(
                history
                    .iter()
                    .take_while(|h| h.sequence <= e.sequence)
                    .map(|h| (h.sequence, &h.event)),
            )
            .map_err(SubscriberError::Failed)?
            .ok_or_else(|| SubscriberError::Failed(format!("no history for order {}", e.order_id)))?;
            let Some(notify_url) = view.notify_url.clone() else {
                continue;
            };
            let mut body = serde_json::json!({
                "id": e.event_id,
                "type": kind,
                "created_at": fmt_ts(e.event.occurred_at()),
                "data": view,
            });
            if let PaymentOrderEvent::RefundSucceeded { refund_id, .. }
            | PaymentOrderEvent::RefundFailed { refund_id, .. } = &e.event
            {
                body["refund_id"] = serde_json::json!(refund_id);
            }
            let now = fmt_ts(Utc::now());
            sqlx::query(
                "INSERT INTO notify_job (notification_id, merchant_id, order_id, event_type, notify_url, body, status, \
                 attempts, next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7, $7) \
                 ON CONFLICT (notification_id) DO NOTHING",
            )
            .bind(e.event_id.to_string())
            .bind(&view.merchant_id)
            .bind(e.order_id.to_string())
            .bind(kind)
            .bind(notify_url)
            .bind(body.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    fn committed(&self, _up_to: LogPosition) {
        self.queued.notify_one();
    }
}
