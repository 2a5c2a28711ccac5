//! The order view and refund view: what `GET /v1/orders/{id}` and `GET /v1/refunds/{id}` return
//! and what notifications carry as `data`. Amounts are integers in minor units; times RFC 3339
//! UTC.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use payledger_domain::{Mode, OrderStatus, PaymentOrderEvent, RefundStatus};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One order as the merchant sees it (schema `Order`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Order)]
pub struct OrderView {
    /// UUIDv5 of the merchant id, mode and `out_trade_no`: the same order for a retried request.
    pub order_id: Uuid,
    pub merchant_id: String,
    /// The mode of the key that created the order: `test` (sandbox) or `live`.
    #[schema(value_type = crate::openapi::ModeSchema)]
    pub mode: Mode,
    /// The merchant's own order number.
    pub out_trade_no: String,
    #[schema(value_type = crate::openapi::OrderStatusSchema)]
    pub status: OrderStatus,
    /// Amount to collect, minor units.
    pub amount: i64,
    /// ISO-4217 code.
    pub currency: String,
    pub channel: String,
    pub method: String,
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pay_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qr_code: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Received, minor units (0 until paid).
    pub paid_amount: i64,
    /// Refunded (succeeded refunds), minor units.
    pub refunded_amount: i64,
    pub channel_trade_no: Option<String>,
    /// Paid after it was closed or failed: needs a refund or manual settlement.
    pub late_payment: bool,
    /// A callback reported another amount or currency.
    pub amount_mismatch: bool,
    /// The payer paid a second time under another channel trade number (money in suspense).
    #[serde(default)]
    pub duplicate_payment: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expire_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub refunds: Vec<RefundView>,
    /// Sequence of the last event folded in.
    pub last_sequence: i64,
    /// The channel account that opened the order (its id), when recorded: the platform's
    /// business, not the merchant's, so stored in its own column and never in the document.
    #[serde(skip)]
    pub channel_account: Option<String>,
    /// That account's channel-side identity ([`payledger_domain::ChannelAccountRef::identity`]).
    #[serde(skip)]
    pub channel_account_identity: Option<String>,
}

/// One refund as the merchant sees it (schema `Refund`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Refund)]
pub struct RefundView {
    /// UUIDv5 of the order id and `out_refund_no`: the same refund for a retried request.
    pub refund_id: Uuid,
    pub order_id: Uuid,
    /// The merchant's own refund number.
    pub out_refund_no: String,
    #[schema(value_type = crate::openapi::RefundStatusSchema)]
    pub status: RefundStatus,
    /// Minor units.
    pub amount: i64,
    pub currency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_refund_no: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl OrderView {
    /// Folds one event (at `sequence`) into the view. `view` is `None` before `OrderCreated`;
    /// events already folded (`sequence <= last_sequence`) are ignored, so re-delivery is
    /// harmless.
    ///
    /// # Errors
    /// A description when an event other than `OrderCreated` arrives for a missing view (the log
    /// is inconsistent: the projection must stop rather than guess).
    pub fn fold(view: Option<Self>, sequence: i64, event: &PaymentOrderEvent) -> Result<Self, String> {
        use PaymentOrderEvent as E;
        let at = event.occurred_at();
        if let E::OrderCreated {
            order_id,
            terms,
            created_at,
            expire_at,
        } = event
        {
            if let Some(v) = view {
                return Ok(v);
            }
            return Ok(Self {
                order_id: *order_id,
                merchant_id: terms.merchant_id.clone(),
                mode: terms.mode,
                out_trade_no: terms.out_trade_no.clone(),
                status: OrderStatus::AwaitingPayment,
                amount: terms.amount.amount_minor,
                currency: terms.amount.currency.code().to_string(),
                channel: terms.channel.clone(),
                method: terms.method.clone(),
                subject: terms.subject.clone(),
                user_id: terms.user_id.clone(),
                notify_url: terms.notify_url.clone(),
                return_url: terms.return_url.clone(),
                pay_url: None,
                qr_code: None,
                metadata: terms.metadata.clone(),
                paid_amount: 0,
                refunded_amount: 0,
                channel_trade_no: None,
                late_payment: false,
                amount_mismatch: false,
                duplicate_payment: false,
                failure_reason: None,
                created_at: *created_at,
                expire_at: *expire_at,
                paid_at: None,
                closed_at: None,
                updated_at: *created_at,
                refunds: vec![],
                last_sequence: sequence,
                channel_account: None,
                channel_account_identity: None,
            });
        }
        let mut v = view.ok_or_else(|| format!("{} at sequence {sequence} before OrderCreated", event.name()))?;
        if sequence <= v.last_sequence {
            return Ok(v);
        }
        match event {
            E::OrderCreated { .. } => unreachable!("handled above"),
            E::ChannelOrderOpened {
                channel_order, account, ..
            } => {
                v.pay_url = channel_order.pay_url.clone();
                v.qr_code = channel_order.qr_code.clone();
                v.channel_account = account.as_ref().map(|a| a.id.clone());
                v.channel_account_identity = account.as_ref().map(|a| a.identity());
            }
            E::ChannelOrderFailed { code, message, .. } => {
                v.status = OrderStatus::Failed;
                v.failure_reason = Some(format!("{code}: {message}"));
            }
            E::PaymentSucceeded {
                channel_trade_no,
                amount,
                paid_at,
                late,
                ..
            } => {
                v.status = OrderStatus::Paid;
                v.paid_amount = amount.amount_minor;
                v.channel_trade_no = Some(channel_trade_no.clone());
                v.paid_at = Some(*paid_at);
                v.late_payment = *late;
            }
            E::PaymentFailed {
                channel_trade_no,
                reason,
                ..
            } => {
                v.status = OrderStatus::Failed;
                v.channel_trade_no = Some(channel_trade_no.clone());
                v.failure_reason = Some(reason.clone());
            }
            E::PaymentAmountMismatch { .. } => v.amount_mismatch = true,
            E::DuplicatePayment { .. } => v.duplicate_payment = true,
            E::OrderClosed { closed_at, .. } => {
                v.status = OrderStatus::Closed;
                v.closed_at = Some(*closed_at);
            }
            E::RefundRequested {
                refund_id,
                out_refund_no,
                amount,
                reason,
                requested_at,
            } => v.refunds.push(RefundView {
                refund_id: *refund_id,
                order_id: v.order_id,
                out_refund_no: out_refund_no.clone(),
                status: RefundStatus::Pending,
                amount: amount.amount_minor,
                currency: amount.currency.code().to_string(),
                reason: reason.clone(),
                channel_refund_no: None,
                failure_reason: None,
                created_at: *requested_at,
                updated_at: *requested_at,
            }),
            E::RefundSucceeded {
                refund_id,
                channel_refund_no,
                ..
            } => {
                let r = v
                    .refunds
                    .iter_mut()
                    .find(|r| r.refund_id == *refund_id)
                    .ok_or_else(|| format!("RefundSucceeded for unknown refund {refund_id}"))?;
                r.status = RefundStatus::Succeeded;
                r.channel_refund_no = channel_refund_no.clone();
                r.updated_at = at;
                v.refunded_amount += r.amount;
                v.status = if v.refunded_amount == v.paid_amount {
                    OrderStatus::Refunded
                } else {
                    OrderStatus::PartiallyRefunded
                };
            }
            E::RefundFailed { refund_id, reason, .. } => {
                let r = v
                    .refunds
                    .iter_mut()
                    .find(|r| r.refund_id == *refund_id)
                    .ok_or_else(|| format!("RefundFailed for unknown refund {refund_id}"))?;
                r.status = RefundStatus::Failed;
                r.failure_reason = Some(reason.clone());
                r.updated_at = at;
            }
        }
        v.updated_at = at;
        v.last_sequence = sequence;
        Ok(v)
    }

    /// Folds a whole history (sequence-ordered) into a view; `None` for an empty history.
    ///
    /// # Errors
    /// As [`OrderView::fold`].
    pub fn from_events<'a>(
        events: impl IntoIterator<Item = (i64, &'a PaymentOrderEvent)>,
    ) -> Result<Option<Self>, String> {
        let mut view = None;
        for (sequence, event) in events {
            view = Some(Self::fold(view, sequence, event)?);
        }
        Ok(view)
    }
}
