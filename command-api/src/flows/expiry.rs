//! Orders whose notification is late or whose time to pay is over: asked at their channel,
//! settled here (the order monitor calls these on its schedule).

use chrono::{DateTime, Utc};
use payledger_channel_adapters::{Channel, ChannelError, ChannelPaymentStatus};
use payledger_domain::{CallbackOutcome, CloseReason, OrderError, OrderStatus, PaymentOrderCommand};
use payledger_store::ExecuteError;
use uuid::Uuid;

use super::Flows;

/// What [`Flows::settle_expired`] or [`Flows::query_before_expiry`] did to one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// The channel said paid: the payment was recorded.
    Paid,
    /// Closed here (and at the channel where it has a close).
    Closed,
    /// Left for the next round, with why.
    Deferred(String),
    /// Nothing to do (already settled, mismatch flagged, not yet due).
    Skipped,
    /// Queried before expiry and not paid at the channel (or the channel has no query): left
    /// waiting, nothing recorded.
    Waiting,
}

impl Flows {
    /// Asks the channel about one awaiting order before its expiry (re-checked against the
    /// event store) and records a payment it reports. Never closes.
    pub async fn query_before_expiry(
        &self,
        order_id: Uuid,
        now: DateTime<Utc>,
        cutoff: DateTime<Utc>,
        actor: &str,
    ) -> Settled {
        let order = match self.order(order_id).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(%order_id, error = %e, "order monitor: loading the order failed; not queried");
                return Settled::Waiting;
            }
        };
        let Some(order) = order else {
            return Settled::Skipped;
        };
        // Due at expiry: the expiry pass settles it.
        if order.status != OrderStatus::AwaitingPayment || order.expire_at <= cutoff || order.amount_mismatch {
            return Settled::Skipped;
        }
        let channel_name = order.terms.channel.clone();
        let channel = match self.channels.for_order(&channel_name, order.channel_account.as_ref()) {
            Ok(channel) => channel,
            Err(e) => {
                tracing::warn!(%order_id, error = %e, "order monitor: the order's channel account is not available; not queried");
                return Settled::Waiting;
            }
        };
        match channel.query(order_id).await {
            Ok(ChannelPaymentStatus::Paid {
                channel_trade_no,
                amount,
                paid_at,
            }) => self.record_queried_payment(order_id, queried_payment(channel.as_ref(), channel_trade_no, amount, paid_at, now), actor).await.unwrap_or_else(|why| {
                tracing::warn!(%order_id, why = %why, "order monitor: a payment found before expiry was not recorded; asked again later");
                Settled::Waiting
            }),
            Ok(ChannelPaymentStatus::NotPaid | ChannelPaymentStatus::NotFound) | Err(ChannelError::Unsupported { .. }) => {
                Settled::Waiting
            }
            Ok(ChannelPaymentStatus::Failed { reason }) => {
                tracing::info!(%order_id, channel = %channel_name, reason = %reason, "order monitor: payment attempt failed at the channel; the order stays open until it expires");
                Settled::Waiting
            }
            Ok(ChannelPaymentStatus::Closed) => {
                tracing::warn!(%order_id, channel = %channel_name, "order monitor: the channel closed the order before its expiry here; it is closed here at expiry");
                Settled::Waiting
            }
            Err(e) => {
                tracing::warn!(%order_id, channel = %channel_name, error = %e, "order monitor: scheduled query failed; asked again at the next point or at expiry");
                Settled::Waiting
            }
        }
    }

    /// Records a payment a query reported (see [`queried_payment`]).
    async fn record_queried_payment(
        &self,
        order_id: Uuid,
        command: PaymentOrderCommand,
        actor: &str,
    ) -> Result<Settled, String> {
        match self.db.execute(order_id, command, actor).await {
            Ok(_) => Ok(Settled::Paid),
            Err(e) => Err(format!("recording the queried payment: {e}")),
        }
    }

    /// Settles one order whose time to pay is over (`expire_at` at or before `cutoff`),
    /// re-checked against the event store: asks its channel whether it was paid. Paid (the
    /// notification was lost): the payment is recorded. Not paid or unknown there: closed at the
    /// channel, then here (`CloseOrder`, reason `expired`). Already closed there, or a channel
    /// without queries: closed here. The channel unreachable, or its close refused: deferred to
    /// the next round. An order flagged `amount_mismatch` is left for a person.
    pub async fn settle_expired(
        &self,
        order_id: Uuid,
        now: DateTime<Utc>,
        cutoff: DateTime<Utc>,
        actor: &str,
    ) -> Settled {
        let order = match self.order(order_id).await {
            Ok(o) => o,
            Err(e) => return Settled::Deferred(format!("loading the order failed: {e}")),
        };
        let Some(order) = order else {
            return Settled::Skipped;
        };
        if order.status != OrderStatus::AwaitingPayment || order.expire_at > cutoff || order.amount_mismatch {
            return Settled::Skipped;
        }
        let channel_name = order.terms.channel.clone();
        // Only the account that placed the order can say whether money moved: without it, we do
        // not close.
        let channel = match self.channels.for_order(&channel_name, order.channel_account.as_ref()) {
            Ok(channel) => channel,
            Err(e) => return Settled::Deferred(e.to_string()),
        };
        match channel.query(order_id).await {
            Ok(ChannelPaymentStatus::Paid {
                channel_trade_no,
                amount,
                paid_at,
            }) => self
                .record_queried_payment(
                    order_id,
                    queried_payment(channel.as_ref(), channel_trade_no, amount, paid_at, now),
                    actor,
                )
                .await
                .unwrap_or_else(Settled::Deferred),
            Ok(ChannelPaymentStatus::Closed) | Err(ChannelError::Unsupported { .. }) => {
                self.close_expired(order_id, now, actor).await
            }
            Ok(
                status @ (ChannelPaymentStatus::NotPaid
                | ChannelPaymentStatus::NotFound
                | ChannelPaymentStatus::Failed { .. }),
            ) => {
                self.close_at_channel_then_here(channel.as_ref(), order_id, &status, now, actor)
                    .await
            }
            Err(e) => Settled::Deferred(format!("query at {}: {e}", channel.name())),
        }
    }

    async fn close_at_channel_then_here(
        &self,
        channel: &dyn Channel,
        order_id: Uuid,
        status: &ChannelPaymentStatus,
        now: DateTime<Utc>,
        actor: &str,
    ) -> Settled {
        match channel.close(order_id).await {
            Ok(()) | Err(ChannelError::Unsupported { .. }) => self.close_expired(order_id, now, actor).await,
            // The channel never had the order: nothing can be paid there.
            Err(ChannelError::Rejected { .. }) if *status == ChannelPaymentStatus::NotFound => {
                self.close_expired(order_id, now, actor).await
            }
            // E.g. paid between our query and the close: the next round's query tells.
            Err(e) => Settled::Deferred(format!("close at {}: {e}", channel.name())),
        }
    }

    async fn close_expired(&self, order_id: Uuid, now: DateTime<Utc>, actor: &str) -> Settled {
        let command = PaymentOrderCommand::CloseOrder {
            reason: CloseReason::Expired,
            closed_at: now,
        };
        match self.db.execute(order_id, command, actor).await {
            Ok(_) => Settled::Closed,
            // A callback paid it meanwhile: nothing to settle.
            Err(ExecuteError::Rejected(OrderError::AlreadyPaid)) => Settled::Skipped,
            Err(e) => Settled::Deferred(format!("closing: {e}")),
        }
    }
}

/// The command a payment found by a query records: what the channel's lost notification would
/// have recorded, with notify id `query:<channel_trade_no>`.
fn queried_payment(
    channel: &dyn Channel,
    channel_trade_no: String,
    amount: payledger_domain::Money,
    paid_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> PaymentOrderCommand {
    PaymentOrderCommand::ReceiveChannelCallback {
        channel: channel.name().to_string(),
        account_id: Some(channel.channel_account().id),
        notify_id: format!("query:{channel_trade_no}"),
        channel_trade_no,
        outcome: CallbackOutcome::Succeeded { amount, paid_at },
        received_at: now,
    }
}
