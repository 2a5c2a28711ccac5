//! `merchant_daily_stats`: per merchant, mode, UTC day, currency and channel, the dashboard's counts
//! and sums, as a pure function of (order view before the event, event). Amounts are minor units.

use payledger_domain::{Mode, PaymentOrderEvent};

use crate::view::OrderView;

/// The row an event counts in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DailyKey {
    pub merchant_id: String,
    /// Test and live money are counted apart.
    pub mode: Mode,
    /// `YYYY-MM-DD`, UTC, of when the event happened.
    pub day: String,
    /// ISO-4217 code.
    pub currency: String,
    /// The order's channel (`sandbox`, `wechat`, `alipay`, ...): a payment or refund counts for
    /// the channel its order was created on.
    pub channel: String,
}

/// What an event adds to its row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DailyDelta {
    pub orders_created: i64,
    pub orders_paid: i64,
    pub paid_minor: i64,
    pub refunds_succeeded: i64,
    pub refunded_minor: i64,
}

impl DailyDelta {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &DailyDelta) {
        self.orders_created += other.orders_created;
        self.orders_paid += other.orders_paid;
        self.paid_minor += other.paid_minor;
        self.refunds_succeeded += other.refunds_succeeded;
        self.refunded_minor += other.refunded_minor;
    }
}

/// What `event` (at `sequence`) adds to the stats, given the order's view before it (`None`
/// before `OrderCreated`). Events already folded into `before` add nothing.
pub fn delta(before: Option<&OrderView>, sequence: i64, event: &PaymentOrderEvent) -> Option<(DailyKey, DailyDelta)> {
    use PaymentOrderEvent as E;
    let day = event.occurred_at().format("%Y-%m-%d").to_string();
    match (before, event) {
        (None, E::OrderCreated { terms, .. }) => Some((
            DailyKey {
                merchant_id: terms.merchant_id.clone(),
                mode: terms.mode,
                day,
                currency: terms.amount.currency.code().to_string(),
                channel: terms.channel.clone(),
            },
            DailyDelta {
                orders_created: 1,
                ..DailyDelta::default()
            },
        )),
        (Some(v), _) if sequence <= v.last_sequence => None,
        (Some(v), E::PaymentSucceeded { amount, .. }) => Some((
            DailyKey {
                merchant_id: v.merchant_id.clone(),
                mode: v.mode,
                day,
                currency: amount.currency.code().to_string(),
                channel: v.channel.clone(),
            },
            DailyDelta {
                orders_paid: 1,
                paid_minor: amount.amount_minor,
                ..DailyDelta::default()
            },
        )),
        (Some(v), E::RefundSucceeded { refund_id, .. }) => {
            let r = v.refunds.iter().find(|r| r.refund_id == *refund_id)?;
            Some((
                DailyKey {
                    merchant_id: v.merchant_id.clone(),
                    mode: v.mode,
                    day,
                    currency: r.currency.clone(),
                    channel: v.channel.clone(),
                },
                DailyDelta {
                    refunds_succeeded: 1,
                    refunded_minor: r.amount,
                    ..DailyDelta::default()
                },
            ))
        }
        _ => None,
    }
}
