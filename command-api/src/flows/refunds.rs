//! Refunds: the merchant's request, and its execution at the channel.

use std::time::Duration;

use chrono::Utc;
use payledger_channel_adapters::{ChannelError, ChannelRefundRequest, ChannelRefundResult};
use payledger_domain::{ids, Money, PaymentOrder, PaymentOrderCommand, RefundOutcome, RefundStatus};
use payledger_store::{Executed, OrderOwner, Start};
use uuid::Uuid;

use super::{FlowError, Flows};

/// Attempts at the channel per refund before [`Flows::execute_refund`] gives up for now (the
/// refund stays pending and the caller retries later).
pub const CHANNEL_ATTEMPTS_MAX: u32 = 3;

/// What [`Flows::execute_refund`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundExecution {
    /// The channel answered with an outcome (succeeded or failed), now recorded.
    Recorded,
    /// The channel accepted it and will tell the outcome by notification.
    PendingAtChannel,
    /// Nothing to do: the refund is no longer pending (a repeated delivery).
    AlreadySettled,
}

impl Flows {
    /// Records a refund request of `amount_minor` (minor units of the order's currency) on
    /// `owner`'s order: `RequestRefund`. The refund's id comes from the order and
    /// `out_refund_no`, so the same request again is the same refund. The channel is called
    /// later, by [`Flows::execute_refund`].
    ///
    /// Returns the refund's id and what the command appended (nothing for a repeat).
    ///
    /// # Errors
    /// [`FlowError::OrderNotFound`]; [`FlowError::Invalid`] (`amount`) for an amount the order's
    /// currency cannot hold; [`FlowError::ChannelAccount`] when the account that took the payment
    /// is not configured any more; the aggregate's refusal (over the refundable amount, an
    /// unpaid order, `out_refund_no` reused with another amount); store failures.
    pub async fn request_refund(
        &self,
        owner: &OrderOwner,
        order_id: Uuid,
        out_refund_no: String,
        amount_minor: i64,
        reason: Option<String>,
        actor: &str,
    ) -> Result<(Uuid, Executed), FlowError> {
        let refund_id = ids::refund_id(order_id, &out_refund_no);
        let requested_at = Utc::now();
        // One load: ownership and the currency are checked on the state the append extends.
        let executed = self
            .db
            .execute_with(order_id, actor, Start::Load, |order: &PaymentOrder| {
                let order = order
                    .order
                    .as_ref()
                    .filter(|o| owner.owns(&o.terms))
                    .ok_or(FlowError::OrderNotFound)?;
                // Only the account that took the payment can return it: none configured, no
                // refund recorded that could never be sent.
                self.channels
                    .for_order(&order.terms.channel, order.channel_account.as_ref())?;
                let amount = Money::new(amount_minor, order.terms.amount.currency).map_err(|e| FlowError::Invalid {
                    field: "amount",
                    message: e.to_string(),
                })?;
                Ok::<_, FlowError>(PaymentOrderCommand::RequestRefund {
                    out_refund_no: out_refund_no.clone(),
                    amount,
                    reason: reason.clone(),
                    requested_at,
                })
            })
            .await?;
        Ok((refund_id, executed))
    }

    /// Sends a requested refund to its order's channel and records the outcome
    /// (`RecordRefundOutcome`). Safe to repeat: a refund no longer pending is left alone,
    /// channels de-duplicate on the refund id, and recording the same outcome again is a no-op.
    /// A channel that cannot be reached is asked up to [`CHANNEL_ATTEMPTS_MAX`] times.
    ///
    /// # Errors
    /// A message when the refund could not be executed now and stays pending: the order or
    /// refund is missing, its channel is not enabled, the channel is unavailable or timed out,
    /// or the store failed. The caller tries again later.
    pub async fn execute_refund(
        &self,
        order_id: Uuid,
        refund_id: Uuid,
        reason: Option<String>,
        actor: &str,
    ) -> Result<RefundExecution, String> {
        let order = self
            .order(order_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("order {order_id} not found"))?;
        let Some(refund) = order.refund(refund_id).cloned() else {
            return Err(format!("refund {refund_id} not on its order"));
        };
        if refund.status != RefundStatus::Pending {
            return Ok(RefundExecution::AlreadySettled);
        }
        // The account that took the payment refunds it, whatever takes new orders now.
        let channel = self
            .channels
            .for_order(&order.terms.channel, order.channel_account.as_ref())
            .map_err(|e| e.to_string())?;
        let request = ChannelRefundRequest {
            order_id: order.order_id,
            refund_id: refund.refund_id,
            channel_trade_no: order.channel_trade_no.clone(),
            amount: refund.amount,
            paid: Money {
                amount_minor: order.paid_amount_minor,
                currency: order.terms.amount.currency,
            },
            reason,
        };
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match crate::metrics::timed_channel_call(
                &self.calls,
                &order.terms.channel,
                &channel.channel_account().id,
                "refund",
                channel.refund(&request),
            )
            .await
            {
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
            // The channel's notification will tell.
            Ok(ChannelRefundResult::Pending) => return Ok(RefundExecution::PendingAtChannel),
            Err(e @ (ChannelError::Unavailable(_) | ChannelError::Timeout(_))) => return Err(e.to_string()),
        };
        let command = PaymentOrderCommand::RecordRefundOutcome {
            refund_id,
            outcome,
            recorded_at: Utc::now(),
        };
        self.db
            .execute(order_id, command, actor)
            .await
            .map_err(|e| e.to_string())?;
        Ok(RefundExecution::Recorded)
    }
}
