//! The `PaymentOrder` aggregate: `handle` decides, `apply` only mutates (and asserts the
//! invariants, because an event that breaks them is a bug, not input).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::commands::{
    CallbackOutcome, ChannelAccountRef, ChannelOrder, ChannelOrderOutcome, OrderTerms, PaymentOrderCommand,
    RefundOutcome,
};
use crate::error::OrderError;
use crate::events::PaymentOrderEvent;
use crate::ids;
use crate::money::Money;

pub use crate::status::{OrderStatus, RefundStatus};

/// A refund of this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub refund_id: Uuid,
    pub out_refund_no: String,
    pub amount: Money,
    pub status: RefundStatus,
}

/// The created order's state; `None` in [`PaymentOrder`] until `OrderCreated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    pub order_id: Uuid,
    pub terms: OrderTerms,
    pub created_at: DateTime<Utc>,
    pub expire_at: DateTime<Utc>,
    pub status: OrderStatus,
    pub channel_order: Option<ChannelOrder>,
    /// The channel account that opened the order; `None` before it was opened, and for orders
    /// opened before accounts were recorded (the channel's legacy account serves those).
    #[serde(default)]
    pub channel_account: Option<ChannelAccountRef>,
    pub channel_trade_no: Option<String>,
    /// Amount received, minor units; 0 until `PaymentSucceeded`.
    pub paid_amount_minor: i64,
    /// Sum of succeeded refunds, minor units.
    pub refunded_amount_minor: i64,
    /// The payment arrived after the order was closed or failed.
    pub late_payment: bool,
    /// A callback reported another amount or currency than the order's.
    pub amount_mismatch: bool,
    pub refunds: Vec<Refund>,
    /// Channel notification ids already recorded: a repeat is a no-op.
    pub seen_notify_ids: BTreeSet<String>,
    /// Channel trade numbers whose money went to suspense (amount mismatch, duplicate payment):
    /// a re-sent success for one of them is a no-op, so the money is counted once.
    #[serde(default)]
    pub suspense_trade_nos: BTreeSet<String>,
}

impl OrderState {
    /// Sum of refunds that are pending, minor units.
    pub fn pending_refund_minor(&self) -> i64 {
        self.refunds
            .iter()
            .filter(|r| r.status == RefundStatus::Pending)
            .map(|r| r.amount.amount_minor)
            .sum()
    }

    /// What can still be refunded: paid − succeeded − pending, minor units.
    pub fn refundable_minor(&self) -> i64 {
        self.paid_amount_minor - self.refunded_amount_minor - self.pending_refund_minor()
    }

    /// The refund with this id, if any.
    pub fn refund(&self, refund_id: Uuid) -> Option<&Refund> {
        self.refunds.iter().find(|r| r.refund_id == refund_id)
    }
}

/// One payment order, rebuilt from its events. `order` is `None` before `OrderCreated`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentOrder {
    pub order: Option<OrderState>,
}

impl PaymentOrder {
    /// Folds events into a fresh aggregate (what the event store does on load).
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a PaymentOrderEvent>) -> Self {
        let mut order = Self::default();
        for e in events {
            order.apply(e.clone());
        }
        order
    }

    /// `CreateOrder`'s rule: a new order is `OrderCreated` (if its mode reaches its channel);
    /// the same terms again nothing; other terms a conflict.
    fn create(
        &self,
        order_id: Uuid,
        terms: OrderTerms,
        created_at: DateTime<Utc>,
    ) -> Result<Vec<PaymentOrderEvent>, OrderError> {
        if !terms.amount.is_valid() {
            return Err(OrderError::InvalidAmount(format!("{:?}", terms.amount)));
        }
        match &self.order {
            Some(existing) if existing.terms == terms => Ok(vec![]),
            Some(_) => Err(OrderError::OutTradeNoConflict(terms.out_trade_no)),
            None if !terms.mode.reaches(&terms.channel) => Err(OrderError::ChannelNotInMode {
                channel: terms.channel,
                mode: terms.mode,
            }),
            None => {
                let expire_at = terms.expire_at(created_at);
                Ok(vec![PaymentOrderEvent::OrderCreated {
                    order_id,
                    terms,
                    created_at,
                    expire_at,
                }])
            }
        }
    }

    fn decide(&self, command: PaymentOrderCommand) -> Result<Vec<PaymentOrderEvent>, OrderError> {
        use PaymentOrderCommand as C;
        use PaymentOrderEvent as E;

        match command {
            C::CreateOrder {
                order_id,
                terms,
                created_at,
            } => return self.create(order_id, terms, created_at),
            C::PlaceOrder {
                order_id,
                terms,
                created_at,
                outcome,
                account,
                recorded_at,
            } => {
                let mut events = self.create(order_id, terms, created_at)?;
                let unanswered = match &self.order {
                    None => true,
                    Some(o) => o.status == OrderStatus::AwaitingPayment && o.channel_order.is_none(),
                };
                if unanswered {
                    events.push(channel_answer(outcome, account, recorded_at));
                }
                return Ok(events);
            }
            _ => {}
        }
        let order = self.order.as_ref().ok_or(OrderError::OrderNotFound)?;
        match command {
            C::CreateOrder { .. } | C::PlaceOrder { .. } => unreachable!("handled above"),

            C::RecordChannelOrder { outcome, recorded_at } => {
                if order.status != OrderStatus::AwaitingPayment {
                    return Err(OrderError::InvalidState {
                        status: order.status,
                        action: "record a channel order",
                    });
                }
                // The first answer wins: two racing creates may both have asked the channel.
                if order.channel_order.is_some() {
                    return Ok(vec![]);
                }
                Ok(vec![channel_answer(outcome, None, recorded_at)])
            }

            C::ReceiveChannelCallback {
                channel,
                account_id,
                notify_id,
                channel_trade_no,
                outcome,
                received_at,
            } => {
                // A valid signature from one channel must never move another channel's order.
                if channel != order.terms.channel {
                    return Err(OrderError::WrongChannel {
                        order: order.terms.channel.clone(),
                        callback: channel,
                    });
                }
                // Nor one account's keys an order another account of the channel placed.
                if let (Some(placed), Some(verified)) = (&order.channel_account, &account_id) {
                    if placed.id != *verified {
                        return Err(OrderError::WrongChannelAccount {
                            order: placed.id.clone(),
                            callback: verified.clone(),
                        });
                    }
                }
                if order.seen_notify_ids.contains(&notify_id) {
                    return Ok(vec![]);
                }
                match outcome {
                    CallbackOutcome::Succeeded { amount, paid_at } => {
                        // Money already held in suspense under this trade number, or the order's
                        // own payment, re-announced (whatever amount it now claims).
                        if order.suspense_trade_nos.contains(&channel_trade_no)
                            || (order.status.is_paid()
                                && order.channel_trade_no.as_deref() == Some(channel_trade_no.as_str()))
                        {
                            return Ok(vec![]);
                        }
                        if amount != order.terms.amount {
                            return Ok(vec![E::PaymentAmountMismatch {
                                notify_id,
                                channel_trade_no,
                                expected: order.terms.amount,
                                received: amount,
                                received_at,
                            }]);
                        }
                        // One PaymentSucceeded per order: a channel re-sending success under a
                        // new notification id is the same payment; another trade number is the
                        // payer paying twice.
                        if order.status.is_paid() {
                            if order.channel_trade_no.as_deref() == Some(channel_trade_no.as_str()) {
                                return Ok(vec![]);
                            }
                            return Ok(vec![E::DuplicatePayment {
                                notify_id,
                                channel_trade_no,
                                amount,
                                received_at,
                            }]);
                        }
                        let late = order.status != OrderStatus::AwaitingPayment;
                        Ok(vec![E::PaymentSucceeded {
                            notify_id,
                            channel_trade_no,
                            amount,
                            paid_at,
                            late,
                        }])
                    }
                    CallbackOutcome::Failed { reason } => {
                        // A failure report only matters while we still wait for the money; after
                        // a success, close or failure it changes nothing.
                        if order.status != OrderStatus::AwaitingPayment {
                            return Ok(vec![]);
                        }
                        Ok(vec![E::PaymentFailed {
                            notify_id,
                            channel_trade_no,
                            reason,
                            failed_at: received_at,
                        }])
                    }
                }
            }

            C::CloseOrder { reason, closed_at } => match order.status {
                OrderStatus::AwaitingPayment => Ok(vec![E::OrderClosed { reason, closed_at }]),
                OrderStatus::Closed => Ok(vec![]),
                s if s.is_paid() => Err(OrderError::AlreadyPaid),
                status => Err(OrderError::InvalidState {
                    status,
                    action: "close",
                }),
            },

            C::RequestRefund {
                out_refund_no,
                amount,
                reason,
                requested_at,
            } => {
                if let Some(existing) = order.refunds.iter().find(|r| r.out_refund_no == out_refund_no) {
                    return if existing.amount == amount {
                        Ok(vec![])
                    } else {
                        Err(OrderError::OutRefundNoConflict(out_refund_no))
                    };
                }
                if !order.status.is_paid() {
                    return Err(OrderError::NotPaid(order.status));
                }
                if !amount.is_valid() {
                    return Err(OrderError::InvalidAmount(format!("{amount:?}")));
                }
                if amount.currency != order.terms.amount.currency {
                    return Err(OrderError::CurrencyMismatch {
                        order: order.terms.amount.currency.code().to_string(),
                        refund: amount.currency.code().to_string(),
                    });
                }
                let refundable_minor = order.refundable_minor();
                if amount.amount_minor > refundable_minor {
                    return Err(OrderError::RefundExceedsRefundable {
                        requested: amount,
                        refundable_minor,
                    });
                }
                Ok(vec![E::RefundRequested {
                    refund_id: ids::refund_id(order.order_id, &out_refund_no),
                    out_refund_no,
                    amount,
                    reason,
                    requested_at,
                }])
            }

            C::RecordRefundOutcome {
                refund_id,
                outcome,
                recorded_at,
            } => {
                let refund = order.refund(refund_id).ok_or(OrderError::RefundNotFound(refund_id))?;
                match (refund.status, &outcome) {
                    (RefundStatus::Pending, _) => {}
                    (RefundStatus::Succeeded, RefundOutcome::Succeeded { .. })
                    | (RefundStatus::Failed, RefundOutcome::Failed { .. }) => return Ok(vec![]),
                    _ => return Err(OrderError::RefundAlreadyFinal(refund_id)),
                }
                Ok(vec![match outcome {
                    RefundOutcome::Succeeded { channel_refund_no } => E::RefundSucceeded {
                        refund_id,
                        channel_refund_no,
                        succeeded_at: recorded_at,
                    },
                    RefundOutcome::Failed { reason } => E::RefundFailed {
                        refund_id,
                        reason,
                        failed_at: recorded_at,
                    },
                }])
            }
        }
    }

    fn state_mut(&mut self, event: &str) -> &mut OrderState {
        match self.order.as_mut() {
            Some(o) => o,
            None => panic!("{event} applied to an order that was never created"),
        }
    }
}

impl Aggregate for PaymentOrder {
    const TYPE: &'static str = "PaymentOrder";
    type Command = PaymentOrderCommand;
    type Event = PaymentOrderEvent;
    type Error = OrderError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use PaymentOrderEvent as E;
        match event {
            E::OrderCreated {
                order_id,
                terms,
                created_at,
                expire_at,
            } => {
                assert!(self.order.is_none(), "OrderCreated applied twice");
                assert!(terms.amount.is_valid(), "OrderCreated with invalid amount");
                self.order = Some(OrderState {
                    order_id,
                    terms,
                    created_at,
                    expire_at,
                    status: OrderStatus::AwaitingPayment,
                    channel_order: None,
                    channel_account: None,
                    channel_trade_no: None,
                    paid_amount_minor: 0,
                    refunded_amount_minor: 0,
                    late_payment: false,
                    amount_mismatch: false,
                    refunds: vec![],
                    seen_notify_ids: BTreeSet::new(),
                    suspense_trade_nos: BTreeSet::new(),
                });
            }
            E::ChannelOrderOpened {
                channel_order, account, ..
            } => {
                let o = self.state_mut("ChannelOrderOpened");
                o.channel_order = Some(channel_order);
                o.channel_account = account;
            }
            E::ChannelOrderFailed { .. } => {
                let o = self.state_mut("ChannelOrderFailed");
                o.channel_order = Some(ChannelOrder::default());
                o.status = OrderStatus::Failed;
            }
            E::PaymentSucceeded {
                notify_id,
                channel_trade_no,
                amount,
                late,
                ..
            } => {
                let o = self.state_mut("PaymentSucceeded");
                assert_eq!(o.paid_amount_minor, 0, "second PaymentSucceeded on one order");
                assert_eq!(amount, o.terms.amount, "PaymentSucceeded amount differs from the order");
                o.seen_notify_ids.insert(notify_id);
                o.channel_trade_no = Some(channel_trade_no);
                o.paid_amount_minor = amount.amount_minor;
                o.late_payment = late;
                o.status = OrderStatus::Paid;
            }
            E::PaymentFailed {
                notify_id,
                channel_trade_no,
                ..
            } => {
                let o = self.state_mut("PaymentFailed");
                o.seen_notify_ids.insert(notify_id);
                o.channel_trade_no = Some(channel_trade_no);
                o.status = OrderStatus::Failed;
            }
            E::PaymentAmountMismatch {
                notify_id,
                channel_trade_no,
                ..
            } => {
                let o = self.state_mut("PaymentAmountMismatch");
                o.seen_notify_ids.insert(notify_id);
                // Not asserted new: before DuplicatePayment existed, a mismatch re-sent under a
                // new notification id was recorded again. Those stored facts must still load;
                // the money is counted once (here and in the journal).
                o.suspense_trade_nos.insert(channel_trade_no);
                o.amount_mismatch = true;
            }
            E::DuplicatePayment {
                notify_id,
                channel_trade_no,
                ..
            } => {
                let o = self.state_mut("DuplicatePayment");
                assert!(o.status.is_paid(), "DuplicatePayment on an unpaid order");
                assert_ne!(
                    o.channel_trade_no.as_deref(),
                    Some(channel_trade_no.as_str()),
                    "DuplicatePayment of the order's own payment"
                );
                o.seen_notify_ids.insert(notify_id);
                assert!(
                    o.suspense_trade_nos.insert(channel_trade_no),
                    "money of one channel trade put in suspense twice"
                );
            }
            E::OrderClosed { .. } => {
                let o = self.state_mut("OrderClosed");
                assert!(!o.status.is_paid(), "OrderClosed on a paid order");
                o.status = OrderStatus::Closed;
            }
            E::RefundRequested {
                refund_id,
                out_refund_no,
                amount,
                ..
            } => {
                let o = self.state_mut("RefundRequested");
                assert!(o.status.is_paid(), "RefundRequested on an unpaid order");
                assert!(
                    amount.amount_minor <= o.refundable_minor(),
                    "RefundRequested beyond the refundable amount"
                );
                o.refunds.push(Refund {
                    refund_id,
                    out_refund_no,
                    amount,
                    status: RefundStatus::Pending,
                });
            }
            E::RefundSucceeded { refund_id, .. } => {
                let o = self.state_mut("RefundSucceeded");
                let refund = o
                    .refunds
                    .iter_mut()
                    .find(|r| r.refund_id == refund_id)
                    .expect("RefundSucceeded for an unknown refund");
                assert_eq!(refund.status, RefundStatus::Pending, "refund finalised twice");
                refund.status = RefundStatus::Succeeded;
                o.refunded_amount_minor += refund.amount.amount_minor;
                assert!(o.refunded_amount_minor <= o.paid_amount_minor, "refunded exceeds paid");
                o.status = if o.refunded_amount_minor == o.paid_amount_minor {
                    OrderStatus::Refunded
                } else {
                    OrderStatus::PartiallyRefunded
                };
            }
            E::RefundFailed { refund_id, .. } => {
                let o = self.state_mut("RefundFailed");
                let refund = o
                    .refunds
                    .iter_mut()
                    .find(|r| r.refund_id == refund_id)
                    .expect("RefundFailed for an unknown refund");
                assert_eq!(refund.status, RefundStatus::Pending, "refund finalised twice");
                refund.status = RefundStatus::Failed;
            }
        }
    }
}

/// The event recording the channel's answer to placing an order.
fn channel_answer(
    outcome: ChannelOrderOutcome,
    account: Option<ChannelAccountRef>,
    recorded_at: DateTime<Utc>,
) -> PaymentOrderEvent {
    match outcome {
        ChannelOrderOutcome::Opened(channel_order) => PaymentOrderEvent::ChannelOrderOpened {
            channel_order,
            account,
            opened_at: recorded_at,
        },
        ChannelOrderOutcome::Failed {
            code,
            message,
            retryable,
        } => PaymentOrderEvent::ChannelOrderFailed {
            code,
            message,
            retryable,
            failed_at: recorded_at,
        },
    }
}
