//! Events of the `PaymentOrder` aggregate: the facts the ledger records, forever.
//!
//! Stored as cqrs-es serialises them: `{"<EventType>": {fields}}`, with `event_type` the variant
//! name and `event_version` from [`PaymentOrderEvent::version`]. A payload change bumps that
//! type's version and adds an upcaster (in the store) from the older one; stored events are never
//! rewritten.
//!
//! Versions: every type is `1.0` except `ChannelOrderFailed` `2.0` (added `retryable`),
//! `OrderCreated` `2.0` (added `terms.mode`) and `ChannelOrderOpened` `2.0` (added `account`).

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::commands::{ChannelAccountRef, ChannelOrder, CloseReason, OrderTerms};
use crate::money::Money;

/// Payload version of the event types that never changed.
pub const EVENT_VERSION: &str = "1.0";
/// Payload version of `ChannelOrderFailed` (2.0 added `retryable`).
pub const CHANNEL_ORDER_FAILED_VERSION: &str = "2.0";
/// Payload version of `OrderCreated` (2.0 added `terms.mode`).
pub const ORDER_CREATED_VERSION: &str = "2.0";
/// Payload version of `ChannelOrderOpened` (2.0 added `account`).
pub const CHANNEL_ORDER_OPENED_VERSION: &str = "2.0";

/// Every fact about a payment order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentOrderEvent {
    /// The merchant created the order.
    OrderCreated {
        order_id: Uuid,
        terms: OrderTerms,
        created_at: DateTime<Utc>,
        expire_at: DateTime<Utc>,
    },
    /// The channel accepted the order; the payer can pay.
    ChannelOrderOpened {
        channel_order: ChannelOrder,
        /// The channel account that opened it; `None` for orders opened before accounts were
        /// recorded (version 1.0), which belong to the channel's legacy account.
        account: Option<ChannelAccountRef>,
        opened_at: DateTime<Utc>,
    },
    /// The channel refused the order or could not be reached; the order failed.
    ChannelOrderFailed {
        /// The channel's error code, or ours (`channel_unavailable`, `unsupported`).
        code: String,
        message: String,
        /// The channel could not be reached or failed on its side (a new order may succeed
        /// later); `false` when it refused this order.
        retryable: bool,
        failed_at: DateTime<Utc>,
    },
    /// The payer paid. `late` when the order had already been closed or failed: money moved
    /// anyway and must be refunded or settled by hand; it is never dropped.
    PaymentSucceeded {
        notify_id: String,
        channel_trade_no: String,
        amount: Money,
        paid_at: DateTime<Utc>,
        late: bool,
    },
    /// The channel reports the payment failed.
    PaymentFailed {
        notify_id: String,
        channel_trade_no: String,
        reason: String,
        failed_at: DateTime<Utc>,
    },
    /// A success callback whose amount or currency differs from the order: flagged for a
    /// person, the order is not paid.
    PaymentAmountMismatch {
        notify_id: String,
        channel_trade_no: String,
        expected: Money,
        received: Money,
        received_at: DateTime<Utc>,
    },
    /// A second successful payment under another `channel_trade_no` for an order already paid:
    /// the payer paid twice. Real money, held in suspense until refunded or settled by hand;
    /// the order stays paid once.
    DuplicatePayment {
        notify_id: String,
        channel_trade_no: String,
        amount: Money,
        received_at: DateTime<Utc>,
    },
    /// The order was closed unpaid.
    OrderClosed {
        reason: CloseReason,
        closed_at: DateTime<Utc>,
    },
    /// A refund was requested; it counts against the refundable amount until it fails.
    RefundRequested {
        refund_id: Uuid,
        out_refund_no: String,
        amount: Money,
        reason: Option<String>,
        requested_at: DateTime<Utc>,
    },
    /// The channel returned the money to the payer.
    RefundSucceeded {
        refund_id: Uuid,
        channel_refund_no: Option<String>,
        succeeded_at: DateTime<Utc>,
    },
    /// The channel refused the refund; its amount is refundable again.
    RefundFailed {
        refund_id: Uuid,
        reason: String,
        failed_at: DateTime<Utc>,
    },
}

impl PaymentOrderEvent {
    /// The variant name, e.g. `"PaymentSucceeded"`; also the stored `event_type`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::OrderCreated { .. } => "OrderCreated",
            Self::ChannelOrderOpened { .. } => "ChannelOrderOpened",
            Self::ChannelOrderFailed { .. } => "ChannelOrderFailed",
            Self::PaymentSucceeded { .. } => "PaymentSucceeded",
            Self::PaymentFailed { .. } => "PaymentFailed",
            Self::PaymentAmountMismatch { .. } => "PaymentAmountMismatch",
            Self::DuplicatePayment { .. } => "DuplicatePayment",
            Self::OrderClosed { .. } => "OrderClosed",
            Self::RefundRequested { .. } => "RefundRequested",
            Self::RefundSucceeded { .. } => "RefundSucceeded",
            Self::RefundFailed { .. } => "RefundFailed",
        }
    }

    /// The payload version this code writes for the event's type.
    pub fn version(&self) -> &'static str {
        match self {
            Self::ChannelOrderFailed { .. } => CHANNEL_ORDER_FAILED_VERSION,
            Self::OrderCreated { .. } => ORDER_CREATED_VERSION,
            Self::ChannelOrderOpened { .. } => CHANNEL_ORDER_OPENED_VERSION,
            _ => EVENT_VERSION,
        }
    }

    /// When the fact happened (the command's time, not the time it was stored).
    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            Self::OrderCreated { created_at: t, .. }
            | Self::ChannelOrderOpened { opened_at: t, .. }
            | Self::ChannelOrderFailed { failed_at: t, .. }
            | Self::PaymentSucceeded { paid_at: t, .. }
            | Self::PaymentFailed { failed_at: t, .. }
            | Self::PaymentAmountMismatch { received_at: t, .. }
            | Self::DuplicatePayment { received_at: t, .. }
            | Self::OrderClosed { closed_at: t, .. }
            | Self::RefundRequested { requested_at: t, .. }
            | Self::RefundSucceeded { succeeded_at: t, .. }
            | Self::RefundFailed { failed_at: t, .. } => *t,
        }
    }
}

impl DomainEvent for PaymentOrderEvent {
    fn event_type(&self) -> String {
        self.name().to_string()
    }

    fn event_version(&self) -> String {
        self.version().to_string()
    }
}
