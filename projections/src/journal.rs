//! The double-entry journal as a pure function of the events: which accounts each money-moving
//! event debits and credits. Amounts are integer minor units; each entry's lines balance.
//!
//! Accounts (one book per merchant and mode: every line carries its order's mode, and balances
//! are kept per merchant, mode, account and currency, so test money never meets live money):
//! - `channel_clearing:<channel>`: what the channel holds for us (asset: debit-normal).
//! - `merchant_payable:<merchant_id>`: what we owe the merchant (liability: credit-normal).
//! - `suspense:<merchant_id>`: money received that belongs to no paid order yet (a late payment
//!   on a closed order, a mismatched amount, a payer paying twice): credit-normal, cleared by a
//!   refund or by hand.
//!
//! | event | debit | credit |
//! |---|---|---|
//! | `PaymentSucceeded` (on time) | `channel_clearing` | `merchant_payable` |
//! | `PaymentSucceeded` (late) | `channel_clearing` | `suspense` |
//! | `PaymentAmountMismatch`, `DuplicatePayment` | `channel_clearing` | `suspense` (amount received) |
//! | `RefundSucceeded` | the account the payment credited | `channel_clearing` |
//!
//! Requests and failures move no money and post nothing.

use std::collections::{BTreeMap, BTreeSet};

use payledger_domain::{Mode, Money, PaymentOrderEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What the journal remembers of an order between events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalOrder {
    pub merchant_id: String,
    /// The book the order's lines go to.
    pub mode: Mode,
    pub channel: String,
    /// The account the order's payment was credited to (`merchant_payable:…` or `suspense:…`);
    /// `None` until paid.
    pub paid_to: Option<String>,
    /// Requested refunds' amounts, by refund id (minor units, with currency).
    pub refunds: BTreeMap<Uuid, Money>,
    /// Channel trade numbers already posted to suspense: a trade's money is posted once, even
    /// where an older version recorded its mismatch twice.
    #[serde(default)]
    pub suspense_trades: BTreeSet<String>,
    /// Sequence of the last event posted.
    pub last_sequence: i64,
}

/// One line of an entry. Exactly one of `debit_minor`, `credit_minor` is non-zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalLine {
    pub account: String,
    pub debit_minor: i64,
    pub credit_minor: i64,
    /// ISO-4217 code.
    pub currency: String,
}

/// `channel_clearing:<channel>`.
pub fn clearing_account(channel: &str) -> String {
    format!("channel_clearing:{channel}")
}

/// `merchant_payable:<merchant_id>`.
pub fn payable_account(merchant_id: &str) -> String {
    format!("merchant_payable:{merchant_id}")
}

/// `suspense:<merchant_id>`.
pub fn suspense_account(merchant_id: &str) -> String {
    format!("suspense:{merchant_id}")
}

fn transfer(debit: String, credit: String, amount: &Money) -> Vec<JournalLine> {
    let currency = amount.currency.code().to_string();
    vec![
        JournalLine {
            account: debit,
            debit_minor: amount.amount_minor,
            credit_minor: 0,
            currency: currency.clone(),
        },
        JournalLine {
            account: credit,
            debit_minor: 0,
            credit_minor: amount.amount_minor,
            currency,
        },
    ]
}

/// The outside document an event's entry answers to: the `channel_trade_no` of money received,
/// the `refund_id` of a refund; `None` for events that post nothing.
pub fn reference(event: &PaymentOrderEvent) -> Option<String> {
    use PaymentOrderEvent as E;
    match event {
        E::PaymentSucceeded { channel_trade_no, .. }
        | E::PaymentAmountMismatch { channel_trade_no, .. }
        | E::DuplicatePayment { channel_trade_no, .. } => Some(channel_trade_no.clone()),
        E::RefundSucceeded { refund_id, .. } => Some(refund_id.to_string()),
        _ => None,
    }
}

/// Posts one event (at `sequence`) of an order: the order's next journal memory and the lines
/// of the event's entry (empty for events that move no money). An event at or below
/// `last_sequence` posts nothing (re-delivery is harmless).
///
/// # Errors
/// A description when the log is inconsistent (an event before `OrderCreated`, a refund outcome
/// for an unknown refund): the projection must stop rather than guess.
pub fn post(
    order: Option<JournalOrder>,
    sequence: i64,
    event: &PaymentOrderEvent,
) -> Result<(JournalOrder, Vec<JournalLine>), String> {
    use PaymentOrderEvent as E;
    if let E::OrderCreated { terms, .. } = event {
        return Ok(match order {
            Some(o) => (o, vec![]),
            None => (
                JournalOrder {
                    merchant_id: terms.merchant_id.clone(),
                    mode: terms.mode,
                    channel: terms.channel.clone(),
                    paid_to: None,
                    refunds: BTreeMap::new(),
                    suspense_trades: BTreeSet::new(),
                    last_sequence: sequence,
                },
                vec![],
            ),
        });
    }
    let mut o = order.ok_or_else(|| format!("{} at sequence {sequence} before OrderCreated", event.name()))?;
    if sequence <= o.last_sequence {
        return Ok((o, vec![]));
    }
    o.last_sequence = sequence;
    let clearing = clearing_account(&o.channel);
    let lines = match event {
        E::PaymentSucceeded { amount, late, .. } => {
            let to = if *late {
                suspense_account(&o.merchant_id)
            } else {
                payable_account(&o.merchant_id)
            };
            o.paid_to = Some(to.clone());
            transfer(clearing, to, amount)
        }
        E::PaymentAmountMismatch {
            received: amount,
            channel_trade_no,
            ..
        }
        | E::DuplicatePayment {
            amount,
            channel_trade_no,
            ..
        } => {
            if o.suspense_trades.insert(channel_trade_no.clone()) {
                transfer(clearing, suspense_account(&o.merchant_id), amount)
            } else {
                vec![]
            }
        }
        E::RefundRequested { refund_id, amount, .. } => {
            o.refunds.insert(*refund_id, *amount);
            vec![]
        }
        E::RefundSucceeded { refund_id, .. } => {
            let amount = *o
                .refunds
                .get(refund_id)
                .ok_or_else(|| format!("RefundSucceeded for unknown refund {refund_id}"))?;
            let from = o
                .paid_to
                .clone()
                .ok_or_else(|| format!("RefundSucceeded for refund {refund_id} of an unpaid order"))?;
            transfer(from, clearing, &amount)
        }
        E::OrderCreated { .. } => unreachable!("handled above"),
        E::ChannelOrderOpened { .. }
        | E::ChannelOrderFailed { .. }
        | E::PaymentFailed { .. }
        | E::OrderClosed { .. }
        | E::RefundFailed { .. } => vec![],
    };
    Ok((o, lines))
}
