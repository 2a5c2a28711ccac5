//! A channel's notification: verified by its adapter, recorded on its order.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use payledger_channel_adapters::{CallbackError, Channel, Notification};
use payledger_domain::{OrderError, PaymentOrderCommand, PaymentOrderEvent};
use payledger_store::ExecuteError;
use uuid::Uuid;

use super::Flows;

/// What [`Flows::receive_callback`] made of a notification; the caller answers the channel in
/// its own format.
#[derive(Debug)]
pub enum CallbackReceipt {
    /// Verified and recorded (or a repeat, recorded before): the order's last sequence.
    Recorded {
        /// The order it was about.
        order_id: Uuid,
        /// Sequence of the order's last event after recording it.
        sequence: usize,
    },
    /// The signature or the content is wrong: refused, nothing changes.
    Refused(CallbackError),
    /// Could not be verified now (the channel service did not answer): the channel should send
    /// it again.
    Unverified(CallbackError),
    /// Verified, but about an order this channel does not have (unknown, or another
    /// channel's): to the channel, an unknown order.
    UnknownOrder(OrderError),
    /// Verified, but not recorded now (the store failed or the order is contended): the channel
    /// should send it again.
    NotRecorded(ExecuteError),
}

impl Flows {
    /// Verifies `body` (with `headers`) as the notification of `channel` (one account's
    /// adapter: it speaks only for the orders that account placed) and records it on its
    /// order: a payment outcome as `ReceiveChannelCallback`, a refund outcome as
    /// `RecordRefundOutcome`. A repeated notification is a no-op in the aggregate. An amount
    /// that differs from the order's is flagged, and money for a closed order is kept as a late
    /// payment (both logged as warnings for a person).
    pub async fn receive_callback(
        &self,
        channel: &dyn Channel,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> CallbackReceipt {
        let channel_name = channel.name();
        let verified = match channel.parse_callback(headers, body, now).await {
            Ok(v) => v,
            Err(e @ CallbackError::Unverified(_)) => return CallbackReceipt::Unverified(e),
            Err(e) => return CallbackReceipt::Refused(e),
        };
        let order_id = verified.order_id();
        // A refund outcome names no channel for the aggregate to check: the account is checked
        // here (a payment's is checked by the aggregate, `ReceiveChannelCallback`).
        if let Notification::Refund(_) = &verified {
            let verified_by = channel.channel_account().id;
            match self.order(order_id).await {
                Ok(Some(order)) => {
                    if let Some(placed) = order.channel_account.filter(|placed| placed.id != verified_by) {
                        return CallbackReceipt::UnknownOrder(OrderError::WrongChannelAccount {
                            order: placed.id,
                            callback: verified_by,
                        });
                    }
                    if order.terms.channel != channel_name {
                        return CallbackReceipt::UnknownOrder(OrderError::WrongChannel {
                            order: order.terms.channel,
                            callback: channel_name.to_string(),
                        });
                    }
                }
                Ok(None) => return CallbackReceipt::UnknownOrder(OrderError::OrderNotFound),
                Err(e) => return CallbackReceipt::NotRecorded(e),
            }
        }
        let command = match verified {
            Notification::Payment(p) => PaymentOrderCommand::ReceiveChannelCallback {
                channel: channel_name.to_string(),
                account_id: Some(channel.channel_account().id),
                notify_id: p.notify_id,
                channel_trade_no: p.channel_trade_no,
                outcome: p.outcome,
                received_at: now,
            },
            Notification::Refund(r) => PaymentOrderCommand::RecordRefundOutcome {
                refund_id: r.refund_id,
                outcome: r.outcome,
                recorded_at: now,
            },
        };
        let actor = format!("channel:{channel_name}");
        match self.db.execute(order_id, command, &actor).await {
            Ok(executed) => {
                for e in &executed.events {
                    warn_for_a_person(order_id, &e.payload);
                }
                CallbackReceipt::Recorded {
                    order_id,
                    sequence: executed.sequence,
                }
            }
            // A channel speaks only for its own orders: to it, another channel's order is unknown.
            Err(ExecuteError::Rejected(
                e @ (OrderError::OrderNotFound
                | OrderError::WrongChannel { .. }
                | OrderError::WrongChannelAccount { .. }),
            )) => CallbackReceipt::UnknownOrder(e),
            Err(e) => CallbackReceipt::NotRecorded(e),
        }
    }
}

/// Logs the facts a callback recorded that a person must look at.
fn warn_for_a_person(order_id: Uuid, event: &PaymentOrderEvent) {
    match event {
        PaymentOrderEvent::PaymentAmountMismatch { expected, received, .. } => {
            tracing::warn!(%order_id, ?expected, ?received, "callback amount differs from the order: flagged");
        }
        // Money for an order already closed: kept (suspense), for a person to refund or settle.
        PaymentOrderEvent::PaymentSucceeded {
            amount,
            channel_trade_no,
            late: true,
            ..
        } => {
            tracing::warn!(%order_id, ?amount, %channel_trade_no, "late payment: the order was closed before the channel's success; kept in suspense");
        }
        _ => {}
    }
}
