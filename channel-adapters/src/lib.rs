//! Payment channels behind one trait.
//!
//! A channel adapter speaks one channel's protocol and nothing else: it holds no database and no
//! order logic: a request goes out, an answer comes back. payledger sends the channel our
//! `order_id` as the channel-side `out_trade_no`, so every callback names the order directly.
//!
//! - [`Channel`]: place an order, refund, verify a callback, answer it in the channel's format.
//! - [`sandbox::SandboxChannel`]: the built-in channel for development and tests.
//! - [`wechatpay::WechatPayChannel`] (WeChat Pay API v3) and [`alipay::AlipayChannel`] (Alipay
//!   OpenAPI, RSA2); [`simulator`] (feature `simulators`) speaks their protocols for tests.
//! - [`rsa_sign`]: the RSA private key both channels sign with ([`rsa_sign::SigningKey`], held by
//!   *ring*).
//! - [`statement`]: parsers of channel settlement statements for reconciliation.
//! - [`Channels`]: the enabled channels and their accounts; an order is served by the account
//!   that opened it. [`Channels::remote`] reaches them through a channel service instead
//!   ([`remote`]: the wire protocol and [`remote::RemoteChannel`]).

pub mod alipay;
mod registry;
pub mod remote;
pub mod rsa_sign;
pub mod sandbox;
#[cfg(feature = "simulators")]
pub mod simulator;
pub mod statement;
pub mod wechatpay;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payledger_domain::{CallbackOutcome, ChannelAccountRef, ChannelOrder, Money, RefundOutcome};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use registry::{AccountError, AccountUse, Channels};

/// Placing an order at a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateChannelOrder {
    /// Our order id; the channel's `out_trade_no`.
    pub order_id: Uuid,
    pub amount: Money,
    /// Channel payment method, e.g. `page`, `qr`.
    pub method: String,
    pub subject: String,
    pub expire_at: DateTime<Utc>,
    pub return_url: Option<String>,
    /// The payer's id at the channel where the method needs one (WeChat Pay JSAPI `openid`).
    pub payer_id: Option<String>,
    /// The payer's IP address where the method needs one (WeChat Pay H5 `payer_client_ip`).
    pub payer_ip: Option<String>,
}

/// Refunding part of a paid order at the channel. Channels de-duplicate on `refund_id`, so
/// sending it twice refunds once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRefundRequest {
    pub order_id: Uuid,
    pub refund_id: Uuid,
    pub channel_trade_no: Option<String>,
    /// This refund, minor units.
    pub amount: Money,
    /// The order's paid amount, minor units (channels want both).
    pub paid: Money,
    pub reason: Option<String>,
}

/// The channel's answer to a refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ChannelRefundResult {
    /// Money returned.
    Succeeded { channel_refund_no: Option<String> },
    /// Refused; nothing moved.
    Failed { reason: String },
    /// Accepted; the outcome comes later by callback or query.
    Pending,
}

/// A payment callback whose signature and shape were verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedCallback {
    pub order_id: Uuid,
    /// The channel's id of this notification (duplicates share it).
    pub notify_id: String,
    pub channel_trade_no: String,
    pub outcome: CallbackOutcome,
}

/// A refund callback whose signature and shape were verified (e.g. WeChat Pay `REFUND.SUCCESS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedRefundCallback {
    pub order_id: Uuid,
    /// Our refund id, sent to the channel as its `out_refund_no`.
    pub refund_id: Uuid,
    /// The channel's id of this notification (duplicates share it).
    pub notify_id: String,
    pub outcome: RefundOutcome,
}

/// What a verified channel notification is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "about", content = "notification", rename_all = "snake_case")]
pub enum Notification {
    /// The payment of an order.
    Payment(VerifiedCallback),
    /// A refund of an order.
    Refund(VerifiedRefundCallback),
}

impl Notification {
    /// The order the notification is about.
    pub fn order_id(&self) -> Uuid {
        match self {
            Notification::Payment(p) => p.order_id,
            Notification::Refund(r) => r.order_id,
        }
    }
}

/// What the channel says about a payment when asked (the order monitor's and reconciliation's
/// view; callbacks may be lost, a query is the channel's word now).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ChannelPaymentStatus {
    /// Known to the channel, not paid yet.
    NotPaid,
    /// Paid: `amount` in minor units.
    Paid {
        channel_trade_no: String,
        amount: Money,
        paid_at: DateTime<Utc>,
    },
    /// Closed or cancelled at the channel; can no longer be paid.
    Closed,
    /// The payment failed at the channel.
    Failed { reason: String },
    /// The channel has no such order.
    NotFound,
}

/// How to answer the channel's HTTP callback, in its own format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackAnswer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// A channel call that did not work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// Could not reach the channel or it failed on its side: may work later.
    #[error("channel unavailable: {0}")]
    Unavailable(String),
    /// No answer in time (the channel service over NATS, see [`remote`]). Retryable, but the
    /// outcome is unknown: the channel may have acted, so retry only what it de-duplicates
    /// (`out_trade_no`, `out_refund_no`).
    #[error("channel call timed out: {0}")]
    Timeout(String),
    /// The channel refused the request; trying again will not help.
    #[error("channel refused the request: {code}: {message}")]
    Rejected { code: String, message: String },
    /// This channel has no such operation.
    #[error("{channel} does not support {operation}")]
    Unsupported {
        channel: &'static str,
        operation: &'static str,
    },
}

impl ChannelError {
    /// Whether the same call may work later: [`ChannelError::Unavailable`] and
    /// [`ChannelError::Timeout`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, ChannelError::Unavailable(_) | ChannelError::Timeout(_))
    }
}

/// Why a callback was refused. Nothing about the order changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", content = "message", rename_all = "snake_case")]
pub enum CallbackError {
    /// Missing or wrong signature.
    #[error("signature verification failed")]
    BadSignature,
    /// Signed but unusable (bad JSON, missing field, stale).
    #[error("malformed callback: {0}")]
    Malformed(String),
    /// Could not be verified now (the channel service did not answer, or the channel is not
    /// enabled there): not a verdict on the callback. Answer the channel with a failure so that
    /// it sends the notification again on its schedule.
    #[error("callback not verified now: {0}")]
    Unverified(String),
}

/// What a merchant may ask of a channel: its payment methods, currencies and amount range. The one
/// source of these facts: orders are validated against them, `GET /v1/channels` lists them, and
/// the OpenAPI document's `method` is generated from them, so the three cannot drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// The channel's name in URLs and orders, e.g. `wechatpay`.
    pub channel: &'static str,
    /// Payment methods; the first is the default.
    pub methods: &'static [&'static str],
    /// ISO-4217 codes it takes; `None`: any currency with a minor unit.
    pub currencies: Option<&'static [&'static str]>,
    /// Smallest amount of one order, minor units.
    pub amount_minor_min: i64,
    /// Largest amount of one order, minor units (the channel's own limit).
    pub amount_minor_max: i64,
}

/// Every channel payledger has an adapter for, in the order documents list them.
pub const CAPABILITIES: [&Capabilities; 3] = [&sandbox::CAPABILITIES, &wechatpay::CAPABILITIES, &alipay::CAPABILITIES];

/// One payment channel's protocol.
#[async_trait]
pub trait Channel: Send + Sync {
    /// The name in URLs and orders, e.g. `sandbox`.
    fn name(&self) -> &'static str;

    /// What merchants may ask of it: methods, currencies, amount range.
    fn capabilities(&self) -> &'static Capabilities;

    /// The channel account this adapter speaks for: our id for it and its channel-side identity
    /// (recorded on every order it opens).
    fn channel_account(&self) -> ChannelAccountRef;

    /// The payment methods it supports; the first is the default.
    fn methods(&self) -> &'static [&'static str] {
        self.capabilities().methods
    }

    /// Places the order at the channel.
    ///
    /// # Errors
    /// [`ChannelError::Unavailable`] (transient) or [`ChannelError::Rejected`].
    async fn create(&self, request: &CreateChannelOrder) -> Result<ChannelOrder, ChannelError>;

    /// Asks the channel to refund.
    ///
    /// # Errors
    /// [`ChannelError::Unavailable`] (transient: retry) or [`ChannelError::Rejected`].
    async fn refund(&self, request: &ChannelRefundRequest) -> Result<ChannelRefundResult, ChannelError>;

    /// Asks the channel about the payment of `order_id`.
    ///
    /// # Errors
    /// [`ChannelError`]; [`ChannelError::Unsupported`] by default.
    async fn query(&self, order_id: Uuid) -> Result<ChannelPaymentStatus, ChannelError> {
        let _ = order_id;
        Err(ChannelError::Unsupported {
            channel: self.name(),
            operation: "query",
        })
    }

    /// Closes the unpaid order at the channel, so the payer can no longer pay it.
    ///
    /// # Errors
    /// [`ChannelError`]; [`ChannelError::Unsupported`] by default.
    async fn close(&self, order_id: Uuid) -> Result<(), ChannelError> {
        let _ = order_id;
        Err(ChannelError::Unsupported {
            channel: self.name(),
            operation: "close",
        })
    }

    /// Asks the channel about a refund (our `refund_id` is its `out_refund_no`).
    ///
    /// # Errors
    /// [`ChannelError`]; [`ChannelError::Unsupported`] by default.
    async fn query_refund(&self, order_id: Uuid, refund_id: Uuid) -> Result<ChannelRefundResult, ChannelError> {
        let _ = (order_id, refund_id);
        Err(ChannelError::Unsupported {
            channel: self.name(),
            operation: "query_refund",
        })
    }

    /// Verifies a notification's signature (in constant time), decrypts it where the channel
    /// encrypts, checks it was meant for this channel account, and parses it.
    ///
    /// # Errors
    /// [`CallbackError`] for a forged, stale or malformed notification.
    fn verify_callback(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Notification, CallbackError>;

    /// [`Channel::verify_callback`] where the adapter runs: in this process by default; a
    /// [`RemoteChannel`] asks the channel service over NATS. The callback endpoint calls this.
    ///
    /// # Errors
    /// [`CallbackError`] for a forged, stale or malformed notification;
    /// [`CallbackError::Unverified`] when the channel service could not be asked.
    async fn parse_callback(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Notification, CallbackError> {
        self.verify_callback(headers, body, now)
    }

    /// The HTTP answer the channel expects: success after the callback was recorded, or failure
    /// (the channel will then retry on its schedule).
    fn answer_callback(&self, outcome: Result<(), String>) -> CallbackAnswer;
}
