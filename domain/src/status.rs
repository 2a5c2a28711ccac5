//! The two status machines' states: an order's ([`OrderStatus`]) and a refund's
//! ([`RefundStatus`]). Their transitions are decided in [`crate::aggregate`]; the names here are
//! the wire names every read model and API answer uses.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Lifecycle of an order: `awaiting_payment → paid → partially_refunded → refunded`,
/// `awaiting_payment → closed | failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Created, not paid yet.
    #[default]
    AwaitingPayment,
    /// Paid, nothing refunded.
    Paid,
    /// Some but not all of the paid amount refunded.
    PartiallyRefunded,
    /// The whole paid amount refunded.
    Refunded,
    /// Closed unpaid (cancelled or expired).
    Closed,
    /// The channel order or the payment failed.
    Failed,
}

impl OrderStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [OrderStatus; 6] = [
        Self::AwaitingPayment,
        Self::Paid,
        Self::PartiallyRefunded,
        Self::Refunded,
        Self::Closed,
        Self::Failed,
    ];

    /// The wire name, e.g. `"partially_refunded"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingPayment => "awaiting_payment",
            Self::Paid => "paid",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Refunded => "refunded",
            Self::Closed => "closed",
            Self::Failed => "failed",
        }
    }

    /// Whether money was received (paid, possibly refunded since).
    pub fn is_paid(self) -> bool {
        matches!(self, Self::Paid | Self::PartiallyRefunded | Self::Refunded)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// State of one refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Requested, the channel has not answered yet; counts against the refundable amount.
    Pending,
    /// The money went back.
    Succeeded,
    /// Refused; does not count.
    Failed,
}

impl RefundStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}
