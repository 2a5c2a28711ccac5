//! The refund worker: executes `RefundRequested` at the channel and records the outcome.
//!
//! An at-least-once subscriber of the global log. Safe to repeat: it re-reads the order and skips
//! refunds that are no longer pending, channels de-duplicate on the refund id, and
//! `RecordRefundOutcome` with the same outcome is a no-op. A channel that is unavailable stops
//! the worker at that event (retried after a pause), so no refund is skipped.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use payledger_channel_adapters::{ChannelError, ChannelRefundRequest, ChannelRefundResult, Channels};
use payledger_domain::{Money, PaymentOrderCommand, PaymentOrderEvent, RefundOutcome, RefundStatus};
use payledger_store::subscription::{EffectSubscriber, SubscriberError};
use payledger_store::{Database, LogEvent};

/// Checkpoint name.
pub const REFUND_WORKER_NAME: &str = "refund_worker";
/// Attempts at the channel per refund before the worker pauses and tries the batch again.
pub const CHANNEL_ATTEMPTS_MAX: u32 = 3;

/// Sends requested refunds to their channel.
pub struct RefundWorker {
    db: Database,
    channels: Channels,
}

impl RefundWorker {
    /// A worker over `db` using `channels`.
    pub fn new(db: Database, channels: Channels) -> Self {
        Self { db, channels }
    }
}

#[async_trait]
impl EffectSubscriber for RefundWorker {
    fn name(&self) -> &'static str {
        REFUND_WORKER_NAME
    }

    async fn handle(&self, event: &LogEvent) -> Result<(), SubscriberError> {
        let PaymentOrderEvent::RefundRequested { refund_id, reason, .. } = &event.event else {
            return Ok(());
        };
        let order = self
            .db
            .orders()
            .load(event.order_id)
            .await
            .map_err(|e| SubscriberError::Failed(e.to_string()))?
            .order
            .ok_or_else(|| SubscriberError::Failed(format!("order {} not found", event.order_id)))?;
        let Some(refund) = order.refund(*refund_id).cloned() else {
            return Err(SubscriberError::Failed(format!("refund {refund_id} not on its order")));
        };
        if refund.status != RefundStatus::Pending {
            return Ok(());
        }
        let Some(channel) = self.channels.get(&order.terms.channel) else {
            return Err(SubscriberError::Failed(format!(
                "channel {} is not enabled",
                order.terms.channel
            )));
        };
        let request = ChannelRefundRequest {
            order_id: order.order_id,
            refund_id: refund.refund_id,
            channel_trade_no: order.channel_trade_no.clone(),
            amount: refund.amount,
            paid: Money {
                amount_minor: order.paid_amount_minor,
                currency: order.terms.amount.currency,
            },
            reason: reason.clone(),
        };
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match crate::metrics::timed_channel_call(&order.terms.channel, "refund", channel.refund(&request)).await {
                // The channel de-duplicates on refund_id: sending a refund again after a timeout
                // refunds once.
                Err(e) if e.is_retryable() && attempt < CHANNEL_ATTEMPTS_MAX => {
                    tracing::warn!(%refund_id, attempt, error = %e, "channel unavailable for refund; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                other => break other,
            }
        };
        let outcome = match result {
            Ok(ChannelRefundResult::Succeeded { channel_refund_no }) => RefundOutcome::Succeeded { channel_refund_no },
            Ok(ChannelRefundResult::Failed { reason }) => RefundOutcome::Failed { reason },
            Err(ChannelError::Rejected { code, message }) => RefundOutcome::Failed {
                reason: format!("{code}: {message}"),
            },
            Err(e @ ChannelError::Unsupported { .. }) => RefundOutcome::Failed { reason: e.to_string() },
            // The channel's callback will tell.
            Ok(ChannelRefundResult::Pending) => return Ok(()),
            Err(e @ (ChannelError::Unavailable(_) | ChannelError::Timeout(_))) => {
                return Err(SubscriberError::Failed(e.to_string()))
            }
        };
        self.db
            .execute(
                event.order_id,
                PaymentOrderCommand::RecordRefundOutcome {
                    refund_id: *refund_id,
                    outcome,
                    recorded_at: Utc::now(),
                },
                &format!("worker:{REFUND_WORKER_NAME}"),
            )
            .await
            .map_err(|e| SubscriberError::Failed(e.to_string()))?;
        Ok(())
    }
}
