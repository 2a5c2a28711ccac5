//! Commands of the `PaymentOrder` aggregate. Each carries the time it happens at (`*_at`), so the
//! aggregate never reads a clock.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::mode::Mode;
use crate::money::Money;

/// What a merchant asked for when creating an order. Two `CreateOrder`s with equal terms are the
/// same request (idempotent); equal `out_trade_no` with other terms is a conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderTerms {
    /// The merchant that owns the order.
    pub merchant_id: String,
    /// Test or live: the mode of the API key that created the order. Test orders reach only
    /// the sandbox channel, live orders only real channels ([`Mode::reaches`]).
    pub mode: Mode,
    /// The merchant's own order number, unique per merchant (`[A-Za-z0-9_-]{1,64}`).
    pub out_trade_no: String,
    /// Amount to collect, in minor units.
    pub amount: Money,
    /// Payment channel name (`sandbox`, `alipay`, `wechatpay`, …).
    pub channel: String,
    /// Channel payment method (`page`, `qr`, `h5`, …).
    pub method: String,
    /// Short description shown to the payer.
    pub subject: String,
    /// The merchant's id of the payer, if given.
    pub user_id: Option<String>,
    /// Where payment outcome notifications are POSTed (http/https).
    pub notify_url: Option<String>,
    /// Where the payer's browser returns after paying (http/https).
    pub return_url: Option<String>,
    /// Seconds from creation after which the order should no longer be paid.
    pub expire_in_seconds: u32,
    /// Free-form merchant data, echoed back (bounded by the API).
    pub metadata: BTreeMap<String, String>,
}

impl OrderTerms {
    /// When an order created at `created_at` on these terms stops being payable:
    /// `created_at + expire_in_seconds`. The channel is told the same time when the order is
    /// placed there, before the order exists.
    pub fn expire_at(&self, created_at: DateTime<Utc>) -> DateTime<Utc> {
        created_at + chrono::Duration::seconds(i64::from(self.expire_in_seconds))
    }
}

/// The channel account an order was placed with: our name for it, and the channel-side identity
/// every later call about the order (notification, query, close, refund) must be made with.
///
/// Recorded on `ChannelOrderOpened`, so that a configuration change never sends an order's
/// business to another account: the account that placed an order keeps serving it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct ChannelAccountRef {
    /// Our name for the account: `main` in the configuration's `[channels.wechatpay.main]`.
    pub id: String,
    /// The channel's application id: WeChat Pay `appid`, Alipay `app_id`; `None` for the
    /// sandbox.
    pub app_id: Option<String>,
    /// The channel's merchant id: WeChat Pay `mchid`; `None` for Alipay (whose application is
    /// the account) and the sandbox.
    pub mch_id: Option<String>,
}

impl ChannelAccountRef {
    /// The channel-side identity as one text, e.g. `app_id=wxd678efh567hg6787 mch_id=1230000109`
    /// (empty for an account without one, like the sandbox's). Two references to the same `id`
    /// with different identities are two different accounts at the channel.
    pub fn identity(&self) -> String {
        let app = self.app_id.as_deref().map(|a| format!("app_id={a}"));
        let mch = self.mch_id.as_deref().map(|m| format!("mch_id={m}"));
        app.into_iter().chain(mch).collect::<Vec<_>>().join(" ")
    }
}

impl std::fmt::Display for ChannelAccountRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.identity() {
            identity if identity.is_empty() => write!(f, "{}", self.id),
            identity => write!(f, "{} ({identity})", self.id),
        }
    }
}

/// What the channel returned when the order was placed there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ChannelOrder {
    /// Page the payer opens to pay.
    pub pay_url: Option<String>,
    /// Content of a QR code the payer scans.
    pub qr_code: Option<String>,
    /// The channel's own reference for the pending order (prepay id …), if any.
    pub channel_ref: Option<String>,
}

/// Outcome of placing the order at the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelOrderOutcome {
    /// The channel accepted the order.
    Opened(ChannelOrder),
    /// The channel refused it or could not be reached; `code` is ours or the channel's;
    /// `retryable` when it could not be reached (rather than refused the order).
    Failed {
        code: String,
        message: String,
        retryable: bool,
    },
}

/// What a verified channel callback says about the payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallbackOutcome {
    /// The payer paid `amount`.
    Succeeded { amount: Money, paid_at: DateTime<Utc> },
    /// The channel reports the payment failed.
    Failed { reason: String },
}

/// Why an order is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The merchant cancelled it.
    Cancelled,
    /// It was not paid before `expire_at`.
    Expired,
}

/// What the channel says about a refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefundOutcome {
    /// The money went back to the payer.
    Succeeded { channel_refund_no: Option<String> },
    /// The channel refused the refund; nothing moved.
    Failed { reason: String },
}

/// Every command the aggregate handles. The table of rules is in `ARCHITECTURE.md` ("Where each
/// money rule lives"); the rules themselves are `PaymentOrder::decide` in `aggregate.rs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentOrderCommand {
    /// Create the order. Same terms again: no event. Other terms: [`crate::OrderError::OutTradeNoConflict`].
    CreateOrder {
        order_id: Uuid,
        terms: OrderTerms,
        created_at: DateTime<Utc>,
    },
    /// Create the order and record the channel's answer to placing it, in one append: the
    /// channel was asked first (keyed by `order_id`, so asking again after a crash before this
    /// command is idempotent at the channel). New order: `OrderCreated` and
    /// `ChannelOrderOpened` (or `ChannelOrderFailed`). Same terms again: no event, unless the
    /// order has no channel answer yet (created by `CreateOrder` and cut off before
    /// `RecordChannelOrder`), which this answer then completes. Other terms:
    /// [`crate::OrderError::OutTradeNoConflict`].
    PlaceOrder {
        order_id: Uuid,
        terms: OrderTerms,
        created_at: DateTime<Utc>,
        outcome: ChannelOrderOutcome,
        /// The channel account that was asked; `None` only for callers that predate accounts.
        account: Option<ChannelAccountRef>,
        recorded_at: DateTime<Utc>,
    },
    /// Record the channel's answer to placing the order (the two-append create of earlier
    /// versions; records no account, like the events of that time).
    RecordChannelOrder {
        outcome: ChannelOrderOutcome,
        recorded_at: DateTime<Utc>,
    },
    /// A verified channel callback about the payment. `channel` is the channel whose signature
    /// was verified: it speaks only for orders placed on it. `notify_id` is the channel's id of
    /// the notification, used to recognise duplicates. `account_id` is the channel account
    /// whose keys verified it (`None`: not known): it speaks only for orders placed with it.
    ReceiveChannelCallback {
        channel: String,
        account_id: Option<String>,
        notify_id: String,
        channel_trade_no: String,
        outcome: CallbackOutcome,
        received_at: DateTime<Utc>,
    },
    /// Close an unpaid order.
    CloseOrder {
        reason: CloseReason,
        closed_at: DateTime<Utc>,
    },
    /// Refund part or all of the paid amount. Idempotent on `out_refund_no`.
    RequestRefund {
        out_refund_no: String,
        amount: Money,
        reason: Option<String>,
        requested_at: DateTime<Utc>,
    },
    /// Record what the channel did with a refund.
    RecordRefundOutcome {
        refund_id: Uuid,
        outcome: RefundOutcome,
        recorded_at: DateTime<Utc>,
    },
}
