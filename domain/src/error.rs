//! Why the aggregate refused a command. Each variant is a business rule; the HTTP layer maps
//! them to 404/409/422.

use uuid::Uuid;

use crate::mode::Mode;
use crate::money::Money;
use crate::status::OrderStatus;

/// A command the `PaymentOrder` aggregate refused. Nothing was recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// The order does not exist (no `OrderCreated`).
    #[error("order not found")]
    OrderNotFound,
    /// A callback verified by one channel for an order placed on another.
    #[error("callback from channel {callback} for an order placed on {order}")]
    WrongChannel { order: String, callback: String },
    /// A callback verified with one channel account's keys for an order another account placed.
    #[error("callback verified by channel account {callback} for an order placed with account {order}")]
    WrongChannelAccount {
        /// The account that placed the order.
        order: String,
        /// The account whose keys verified the callback.
        callback: String,
    },
    /// `CreateOrder` for an existing `out_trade_no` with other terms.
    #[error("out_trade_no {0:?} already exists with other parameters")]
    OutTradeNoConflict(String),
    /// A new order on a channel its mode cannot reach: test mode reaches only the sandbox,
    /// live mode never does ([`crate::Mode::reaches`]).
    #[error("channel {channel} cannot be used in {mode} mode")]
    ChannelNotInMode { channel: String, mode: Mode },
    /// An amount violates the `Money` invariants (not positive, too large, no minor unit).
    #[error("invalid amount: {0}")]
    InvalidAmount(String),
    /// The command does not apply in the order's current status.
    #[error("order is {status}: cannot {action}")]
    InvalidState { status: OrderStatus, action: &'static str },
    /// `CloseOrder` on an order that was paid.
    #[error("order is already paid and cannot be closed; refund it instead")]
    AlreadyPaid,
    /// `RequestRefund` on an order that was not paid.
    #[error("order is {0}: only a paid order can be refunded")]
    NotPaid(OrderStatus),
    /// A refund in another currency than the order.
    #[error("refund currency {refund} differs from the order currency {order}")]
    CurrencyMismatch { order: String, refund: String },
    /// The refund would take refunded + pending refunds above the paid amount.
    #[error("refund of {} exceeds the refundable amount of {refundable_minor} minor units", requested.amount_minor)]
    RefundExceedsRefundable { requested: Money, refundable_minor: i64 },
    /// The same `out_refund_no` with another amount.
    #[error("out_refund_no {0:?} already exists with another amount")]
    OutRefundNoConflict(String),
    /// `RecordRefundOutcome` for a refund this order does not have.
    #[error("refund {0} not found on this order")]
    RefundNotFound(Uuid),
    /// `RecordRefundOutcome` contradicting an outcome already recorded.
    #[error("refund {0} already has a different final outcome")]
    RefundAlreadyFinal(Uuid),
}
