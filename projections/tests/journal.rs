//! The journal over long random command sequences on several orders: every entry balances,
//! and the balances say what the orders say (merchant payable = on-time payments − their
//! refunds; suspense = late, mismatched and duplicate money − refunds of late payments).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use payledger_domain::{
    ids, CallbackOutcome, ChannelOrder, ChannelOrderOutcome, CloseReason, Currency, Money, OrderTerms, PaymentOrder,
    PaymentOrderCommand as C, PaymentOrderEvent as E, RefundOutcome,
};
use payledger_projections::journal::{self, JournalOrder};
use proptest::prelude::*;
use uuid::Uuid;

const ORDERS: usize = 3;
const ORDER_AMOUNT_MINOR: i64 = 10_000;
const MERCHANT_ID: &str = "m1";

#[derive(Debug, Clone)]
enum Op {
    Open { order: usize },
    Pay { order: usize, trade: u8, short: bool },
    Close { order: usize },
    Refund { order: usize, no: u8, amount: i64 },
    RefundOutcome { order: usize, no: u8, ok: bool },
}

fn op() -> impl Strategy<Value = Op> {
    let order = 0..ORDERS;
    prop_oneof![
        1 => order.clone().prop_map(|order| Op::Open { order }),
        4 => (order.clone(), 0u8..3, prop::bool::weighted(0.2))
            .prop_map(|(order, trade, short)| Op::Pay { order, trade, short }),
        1 => order.clone().prop_map(|order| Op::Close { order }),
        4 => (order.clone(), 0u8..4, 1i64..=ORDER_AMOUNT_MINOR)
            .prop_map(|(order, no, amount)| Op::Refund { order, no, amount }),
        4 => (order, 0u8..4, prop::bool::weighted(0.8))
            .prop_map(|(order, no, ok)| Op::RefundOutcome { order, no, ok }),
    ]
}

fn at(step: usize) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(step as i64)
}

fn cny(minor: i64) -> Money {
    Money::new(minor, Currency::CNY).unwrap()
}

fn order_id(i: usize) -> Uuid {
    ids::order_id(MERCHANT_ID, payledger_domain::Mode::Test, &format!("T{i}"))
}

fn command(op: &Op, step: usize) -> (usize, C) {
    let t = at(step);
    match *op {
        Op::Open { order } => (
            order,
            C::RecordChannelOrder {
                outcome: ChannelOrderOutcome::Opened(ChannelOrder::default()),
                recorded_at: t,
            },
        ),
        Op::Pay { order, trade, short } => (
            order,
            C::ReceiveChannelCallback {
                account_id: None,
                channel: "sandbox".into(),
                notify_id: format!("N{step}"),
                channel_trade_no: format!("CH{trade}"),
                outcome: CallbackOutcome::Succeeded {
                    amount: cny(if short {
                        ORDER_AMOUNT_MINOR - 1
                    } else {
                        ORDER_AMOUNT_MINOR
                    }),
                    paid_at: t,
                },
                received_at: t,
            },
        ),
        Op::Close { order } => (
            order,
            C::CloseOrder {
                reason: CloseReason::Expired,
                closed_at: t,
            },
        ),
        Op::Refund { order, no, amount } => (
            order,
            C::RequestRefund {
                out_refund_no: format!("R{no}"),
                amount: cny(amount),
                reason: None,
                requested_at: t,
            },
        ),
        Op::RefundOutcome { order, no, ok } => (
            order,
            C::RecordRefundOutcome {
                refund_id: ids::refund_id(order_id(order), &format!("R{no}")),
                outcome: if ok {
                    RefundOutcome::Succeeded {
                        channel_refund_no: None,
                    }
                } else {
                    RefundOutcome::Failed { reason: "no".into() }
                },
                recorded_at: t,
            },
        ),
    }
}

fn create(i: usize) -> C {
    C::CreateOrder {
        order_id: order_id(i),
        terms: OrderTerms {
            merchant_id: MERCHANT_ID.into(),
            mode: payledger_domain::Mode::Test,
            out_trade_no: format!("T{i}"),
            amount: cny(ORDER_AMOUNT_MINOR),
            channel: "sandbox".into(),
            method: "qr".into(),
            subject: "s".into(),
            user_id: None,
            notify_url: None,
            return_url: None,
            expire_in_seconds: 900,
            metadata: BTreeMap::new(),
        },
        created_at: at(0),
    }
}

/// Handles `command` (cqrs-es 0.5 applies what it emits to `state`); a refused command emits
/// nothing and leaves `state` as it was.
async fn handle(state: &mut PaymentOrder, command: C) -> Vec<E> {
    let mut next = state.clone();
    let sink = EventSink::default();
    if next.handle(command, &(), &sink).await.is_err() {
        return vec![];
    }
    *state = next;
    sink.collect().await
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut orders: Vec<PaymentOrder> = vec![PaymentOrder::default(); ORDERS];
    // The global log: (order, sequence, event), interleaved across orders as commands come.
    let mut sequences = [0i64; ORDERS];
    let mut log: Vec<(usize, i64, E)> = vec![];
    for (i, order) in orders.iter_mut().enumerate() {
        for e in rt.block_on(handle(order, create(i))) {
            sequences[i] += 1;
            log.push((i, sequences[i], e));
        }
    }
    for (step, op) in ops.iter().enumerate() {
        let (i, c) = command(op, step + 1);
        for e in rt.block_on(handle(&mut orders[i], c)) {
            sequences[i] += 1;
            log.push((i, sequences[i], e));
        }
    }

    let mut memory: HashMap<usize, JournalOrder> = HashMap::new();
    // debit − credit per account
    let mut balance: BTreeMap<String, i64> = BTreeMap::new();
    for (i, sequence, e) in &log {
        let (next, lines) = journal::post(memory.remove(i), *sequence, e).map_err(TestCaseError::fail)?;
        memory.insert(*i, next);
        let debits: i64 = lines.iter().map(|l| l.debit_minor).sum();
        let credits: i64 = lines.iter().map(|l| l.credit_minor).sum();
        prop_assert_eq!(debits, credits, "entry of {:?} does not balance: {:?}", e, lines);
        for l in &lines {
            prop_assert!(
                (l.debit_minor == 0) != (l.credit_minor == 0),
                "one side per line: {:?}",
                l
            );
            *balance.entry(l.account.clone()).or_default() += l.debit_minor - l.credit_minor;
        }
        // Re-delivery posts nothing.
        let (_, again) = journal::post(memory.get(i).cloned(), *sequence, e).map_err(TestCaseError::fail)?;
        prop_assert!(again.is_empty());
    }
    prop_assert_eq!(balance.values().sum::<i64>(), 0, "the whole book balances");

    // What the orders themselves say.
    let mut payable = 0;
    let mut suspense = 0;
    for (_, _, e) in &log {
        match e {
            E::PaymentAmountMismatch { received, .. } => suspense += received.amount_minor,
            E::DuplicatePayment { amount, .. } => suspense += amount.amount_minor,
            _ => {}
        }
    }
    for o in orders.iter().filter_map(|o| o.order.as_ref()) {
        let net = o.paid_amount_minor - o.refunded_amount_minor;
        if o.late_payment {
            suspense += net;
        } else {
            payable += net;
        }
    }
    let get = |a: &str| balance.get(a).copied().unwrap_or(0);
    prop_assert_eq!(-get(&journal::payable_account(MERCHANT_ID)), payable);
    prop_assert_eq!(-get(&journal::suspense_account(MERCHANT_ID)), suspense);
    prop_assert_eq!(get(&journal::clearing_account("sandbox")), payable + suspense);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_journal_balances_after_any_command_sequence(ops in prop::collection::vec(op(), 0..120)) {
        run(&ops)?;
    }
}

#[test]
fn a_trade_put_in_suspense_twice_by_an_older_version_is_posted_once() {
    let created = match create(0) {
        C::CreateOrder {
            order_id,
            terms,
            created_at,
        } => E::OrderCreated {
            order_id,
            terms,
            created_at,
            expire_at: created_at,
        },
        _ => unreachable!(),
    };
    let mismatch = |notify: &str| E::PaymentAmountMismatch {
        notify_id: notify.into(),
        channel_trade_no: "CH1".into(),
        expected: cny(ORDER_AMOUNT_MINOR),
        received: cny(ORDER_AMOUNT_MINOR - 1),
        received_at: at(1),
    };
    let (o, _) = journal::post(None, 1, &created).unwrap();
    let (o, first) = journal::post(Some(o), 2, &mismatch("N1")).unwrap();
    let (_, second) = journal::post(Some(o), 3, &mismatch("N2")).unwrap();
    assert_eq!(first.len(), 2);
    assert!(second.is_empty(), "the same trade's money posted twice: {second:?}");
}
