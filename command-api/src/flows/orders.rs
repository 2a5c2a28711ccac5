//! Placing an order at its channel, and closing it.

use chrono::{DateTime, Utc};
use payledger_channel_adapters::{ChannelError, CreateChannelOrder};
use payledger_domain::aggregate::OrderState;
use payledger_domain::{ids, ChannelOrderOutcome, CloseReason, OrderStatus, OrderTerms, PaymentOrderCommand};
use payledger_store::Executed;
use uuid::Uuid;

use super::{FlowError, Flows};

/// What [`Flows::place_order`] did.
#[derive(Debug)]
pub struct Placed {
    /// The order's id (from the merchant and `out_trade_no`).
    pub order_id: Uuid,
    /// `false` when the same request had already created the order (a retry).
    pub is_new: bool,
    /// Sequence of the order's last event after the flow.
    pub sequence: usize,
    /// The order after the flow.
    pub order: OrderState,
    /// The channel's error when placing the order failed in this call; the order is then
    /// recorded as failed (`ChannelOrderFailed`) with [`Placed::failure_reason`].
    pub channel_error: Option<ChannelError>,
    /// The failure as recorded, `<code>: <message>`, when the channel failed in this call.
    pub failure_reason: Option<String>,
}

impl Placed {
    /// The channel's error when this call created the order and the channel refused or could
    /// not be reached: the caller answers with the failure, not with the order.
    pub fn failed_at_channel(&self) -> Option<&ChannelError> {
        let failed_now = self.is_new && self.order.status == OrderStatus::Failed && self.order.paid_amount_minor == 0;
        failed_now.then_some(self.channel_error.as_ref()).flatten()
    }
}

impl Flows {
    /// Creates the order of `terms` and places it at its channel: `CreateOrder`, the channel's
    /// `create`, then `RecordChannelOrder` with what the channel answered (opened, or failed with
    /// its code and whether a retry may work).
    ///
    /// Idempotent: the order id comes from the merchant and `out_trade_no`, so the same request
    /// again finds the order. An order created but not yet placed (a crash between the two
    /// steps) is placed by the retry; channels de-duplicate on our order id.
    ///
    /// # Errors
    /// The aggregate's refusal (e.g. `out_trade_no` taken with other terms), store failures;
    /// [`FlowError::Internal`] if the order's channel is gone. A channel failure is not an
    /// error: it is recorded and reported in [`Placed::channel_error`].
    pub async fn place_order(&self, terms: OrderTerms, actor: &str, now: DateTime<Utc>) -> Result<Placed, FlowError> {
        let order_id = ids::order_id(&terms.merchant_id, &terms.out_trade_no);
        let created = self
            .db
            .execute(
                order_id,
                PaymentOrderCommand::CreateOrder {
                    order_id,
                    terms,
                    created_at: now,
                },
                actor,
            )
            .await?;
        let is_new = !created.events.is_empty();
        let order = created
            .order
            .order
            .ok_or_else(|| FlowError::Internal(format!("order {order_id} missing after create")))?;
        if order.channel_order.is_some() || order.status != OrderStatus::AwaitingPayment {
            return Ok(Placed {
                order_id,
                is_new,
                sequence: created.sequence,
                order,
                channel_error: None,
                failure_reason: None,
            });
        }
        let (outcome, channel_error) = self.open_at_channel(&order).await?;
        let failure_reason = match &outcome {
            ChannelOrderOutcome::Failed { code, message, .. } => Some(format!("{code}: {message}")),
            ChannelOrderOutcome::Opened(_) => None,
        };
        let recorded = self
            .db
            .execute(
                order_id,
                PaymentOrderCommand::RecordChannelOrder {
                    outcome,
                    recorded_at: Utc::now(),
                },
                actor,
            )
            .await?;
        let order = recorded
            .order
            .order
            .ok_or_else(|| FlowError::Internal(format!("order {order_id} missing after placing it")))?;
        Ok(Placed {
            order_id,
            is_new,
            sequence: recorded.sequence,
            order,
            channel_error,
            failure_reason,
        })
    }

    /// Asks the order's channel to open it; the outcome to record, and the channel's error.
    async fn open_at_channel(
        &self,
        order: &OrderState,
    ) -> Result<(ChannelOrderOutcome, Option<ChannelError>), FlowError> {
        let channel_name = &order.terms.channel;
        let channel = self
            .channels
            .get(channel_name)
            .ok_or_else(|| FlowError::Internal(format!("channel {channel_name} vanished")))?;
        let request = CreateChannelOrder {
            order_id: order.order_id,
            amount: order.terms.amount,
            method: order.terms.method.clone(),
            subject: order.terms.subject.clone(),
            expire_at: order.expire_at,
            return_url: order.terms.return_url.clone(),
            payer_id: order.terms.user_id.clone(),
            payer_ip: None,
        };
        match crate::metrics::timed_channel_call(channel_name, "create", channel.create(&request)).await {
            Ok(channel_order) => Ok((ChannelOrderOutcome::Opened(channel_order), None)),
            Err(e) => {
                tracing::warn!(order_id = %order.order_id, error = %e, "channel order failed");
                let code = match &e {
                    ChannelError::Unavailable(_) => "channel_unavailable".to_string(),
                    ChannelError::Timeout(_) => "channel_timeout".to_string(),
                    ChannelError::Rejected { code, .. } => code.clone(),
                    ChannelError::Unsupported { .. } => "unsupported".to_string(),
                };
                let outcome = ChannelOrderOutcome::Failed {
                    code,
                    message: e.to_string(),
                    retryable: e.is_retryable(),
                };
                Ok((outcome, Some(e)))
            }
        }
    }

    /// Closes an unpaid order of `merchant_id` at the merchant's request (`CloseOrder`,
    /// reason `cancelled`); closing a closed order again changes nothing.
    ///
    /// # Errors
    /// [`FlowError::OrderNotFound`]; the aggregate's refusal (the order was paid); store
    /// failures.
    pub async fn close_order(&self, merchant_id: &str, order_id: Uuid, actor: &str) -> Result<Executed, FlowError> {
        self.owned_order(merchant_id, order_id).await?;
        let command = PaymentOrderCommand::CloseOrder {
            reason: CloseReason::Cancelled,
            closed_at: Utc::now(),
        };
        Ok(self.db.execute(order_id, command, actor).await?)
    }
}
