//! The refund worker: executes `RefundRequested` at the channel and records the outcome.
//!
//! An at-least-once subscriber of the global log. Safe to repeat: it re-reads the order and skips
//! refunds that are no longer pending, channels de-duplicate on the refund id, and
//! `RecordRefundOutcome` with the same outcome is a no-op. A channel that is unavailable stops
//! the worker at that event (retried after a pause), so no refund is skipped.

use async_trait::async_trait;
use payledger_channel_adapters::Channels;
use payledger_domain::PaymentOrderEvent;
use payledger_store::subscription::{EffectSubscriber, SubscriberError};
use payledger_store::{Database, LogEvent};

use crate::flows::Flows;
pub use crate::flows::CHANNEL_ATTEMPTS_MAX;

/// Checkpoint name.
pub const REFUND_WORKER_NAME: &str = "refund_worker";

/// Sends requested refunds to their channel.
pub struct RefundWorker {
    flows: Flows,
}

impl RefundWorker {
    /// A worker over `db` using `channels`, recording its channel calls in `calls`.
    pub fn new(db: Database, channels: Channels, calls: crate::metrics::CallLog) -> Self {
        Self {
            flows: Flows::new(db, channels).with_calls(calls),
        }
    }
}

#[async_trait]
impl EffectSubscriber for RefundWorker {
    fn name(&self) -> &'static str {
        REFUND_WORKER_NAME
    }

    /// Executes each `RefundRequested` with [`Flows::execute_refund`]; a refund that cannot be
    /// executed now stops the worker at this event, so it is tried again.
    async fn handle(&self, event: &LogEvent) -> Result<(), SubscriberError> {
        let PaymentOrderEvent::RefundRequested { refund_id, reason, .. } = &event.event else {
            return Ok(());
        };
        let actor = format!("worker:{REFUND_WORKER_NAME}");
        self.flows
            .execute_refund(event.order_id, *refund_id, reason.clone(), &actor)
            .await
            .map(|_| ())
            .map_err(SubscriberError::Failed)
    }
}
