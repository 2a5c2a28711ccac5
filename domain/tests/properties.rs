//! Property tests of the `PaymentOrder` aggregate: random command sequences against one order
//! must never break the ledger invariants of `ARCHITECTURE.md` (refunded ≤ paid, refunds never
//! exceed what was paid, one `PaymentSucceeded` per order, status follows the amounts), and the
//! state the aggregate builds while handling must equal the state rebuilt from its events.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use payledger_domain::{
    ids, CallbackOutcome, ChannelOrder, ChannelOrderOutcome, CloseReason, Currency, Mode, Money, OrderError,
    OrderStatus, OrderTerms, PaymentOrder, PaymentOrderCommand as C, PaymentOrderEvent as E, RefundOutcome,
    RefundStatus,
};
use proptest::prelude::*;

const MERCHANT_ID: &str = "m_1001";
const OUT_TRADE_NO: &str = "T0001";
/// Small on purpose: random refunds of 1..=2× this often hit the refundable limit exactly.
const ORDER_AMOUNT_MINOR: i64 = 100;
/// Longest command sequence per case.
const STEPS_MAX: usize = 40;
/// Distinct channel notification ids (small, so duplicates are frequent).
const NOTIFY_ID_POOL: u8 = 4;
/// Distinct channel trade numbers callbacks draw from.
const TRADE_POOL: u8 = 2;
/// Distinct merchant refund numbers (small, so idempotent retries and conflicts are frequent).
const OUT_REFUND_NO_POOL: u8 = 4;

/// How much a generated refund asks for.
#[derive(Debug, Clone, Copy)]
enum RefundAmount {
    /// A fixed amount, 1..=2× the order amount.
    Minor(i64),
    /// Exactly what is still refundable at that point (1 if nothing is), so sequences reach
    /// `Refunded` and the limit itself often.
    Remaining,
}

#[derive(Debug, Clone, Copy)]
enum CallbackAmount {
    Right,
    Short,
    OtherCurrency,
}

/// A command in abstract form; turned into a `PaymentOrderCommand` at a given step.
#[derive(Debug, Clone)]
enum Op {
    Create,
    RecordChannelOrder {
        opened: bool,
    },
    Callback {
        notify: u8,
        /// Which channel trade: the payer may pay more than once.
        trade: u8,
        success: bool,
        amount: CallbackAmount,
    },
    Close {
        expired: bool,
    },
    RequestRefund {
        out_refund_no: u8,
        amount: RefundAmount,
    },
    RecordRefundOutcome {
        refund: RefundTarget,
        success: bool,
    },
}

/// Which refund a generated outcome is for.
#[derive(Debug, Clone)]
enum RefundTarget {
    /// One of the refunds the order has at that point (any `out_refund_no` of the pool if it
    /// has none yet).
    Requested(prop::sample::Index),
    /// The refund of this `out_refund_no`, requested or not (so unknown refunds occur too).
    OutRefundNo(u8),
}

fn order_id() -> uuid::Uuid {
    ids::order_id(MERCHANT_ID, Mode::Test, OUT_TRADE_NO)
}

fn cny(amount_minor: i64) -> Money {
    Money::new(amount_minor, Currency::CNY).unwrap()
}

fn terms() -> OrderTerms {
    OrderTerms {
        merchant_id: MERCHANT_ID.to_string(),
        mode: Mode::Test,
        out_trade_no: OUT_TRADE_NO.to_string(),
        amount: cny(ORDER_AMOUNT_MINOR),
        channel: "sandbox".to_string(),
        method: "qr".to_string(),
        subject: "A book".to_string(),
        user_id: None,
        notify_url: None,
        return_url: None,
        expire_in_seconds: 900,
        metadata: BTreeMap::new(),
    }
}

fn out_refund_no(n: u8) -> String {
    format!("R{n}")
}

/// Step `step` happens `step` seconds after a fixed start, so every event time is distinct.
fn time_at(step: usize) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 15, 10, 0, 0).unwrap() + Duration::seconds(i64::try_from(step).unwrap())
}

impl RefundAmount {
    fn minor(self, state: &PaymentOrder) -> i64 {
        match self {
            RefundAmount::Minor(amount_minor) => amount_minor,
            RefundAmount::Remaining => state.order.as_ref().map_or(1, |o| o.refundable_minor().max(1)),
        }
    }
}

impl RefundTarget {
    fn refund_id(&self, state: &PaymentOrder) -> uuid::Uuid {
        let refunds = state.order.as_ref().map_or(&[][..], |o| &o.refunds[..]);
        match self {
            RefundTarget::Requested(index) if !refunds.is_empty() => refunds[index.index(refunds.len())].refund_id,
            RefundTarget::Requested(index) => ids::refund_id(
                order_id(),
                &out_refund_no(u8::try_from(index.index(usize::from(OUT_REFUND_NO_POOL))).unwrap()),
            ),
            RefundTarget::OutRefundNo(n) => ids::refund_id(order_id(), &out_refund_no(*n)),
        }
    }
}

impl Op {
    /// The command for this op at `step`, given the state it will be handled against.
    fn command(&self, step: usize, state: &PaymentOrder) -> C {
        let t = time_at(step);
        match *self {
            Op::Create => C::CreateOrder {
                order_id: order_id(),
                terms: terms(),
                created_at: t,
            },
            Op::RecordChannelOrder { opened } => C::RecordChannelOrder {
                outcome: if opened {
                    ChannelOrderOutcome::Opened(ChannelOrder {
                        pay_url: Some("https://sandbox.example/pay".to_string()),
                        qr_code: None,
                        channel_ref: None,
                    })
                } else {
                    ChannelOrderOutcome::Failed {
                        code: "channel_unavailable".to_string(),
                        message: "timeout".to_string(),
                        retryable: true,
                    }
                },
                recorded_at: t,
            },
            Op::Callback {
                notify,
                trade,
                success,
                amount,
            } => C::ReceiveChannelCallback {
                account_id: None,
                channel: "sandbox".to_string(),
                notify_id: format!("N{notify}"),
                channel_trade_no: format!("CH{trade}"),
                outcome: if success {
                    let amount = match amount {
                        CallbackAmount::Right => cny(ORDER_AMOUNT_MINOR),
                        CallbackAmount::Short => cny(ORDER_AMOUNT_MINOR - 1),
                        CallbackAmount::OtherCurrency => Money::new(ORDER_AMOUNT_MINOR, Currency::USD).unwrap(),
                    };
                    CallbackOutcome::Succeeded { amount, paid_at: t }
                } else {
                    CallbackOutcome::Failed {
                        reason: "declined".to_string(),
                    }
                },
                received_at: t,
            },
            Op::Close { expired } => C::CloseOrder {
                reason: if expired {
                    CloseReason::Expired
                } else {
                    CloseReason::Cancelled
                },
                closed_at: t,
            },
            Op::RequestRefund {
                out_refund_no: n,
                amount,
            } => C::RequestRefund {
                out_refund_no: out_refund_no(n),
                amount: cny(amount.minor(state)),
                reason: None,
                requested_at: t,
            },
            Op::RecordRefundOutcome { ref refund, success } => C::RecordRefundOutcome {
                refund_id: refund.refund_id(state),
                outcome: if success {
                    RefundOutcome::Succeeded {
                        channel_refund_no: Some(format!("CHR{step}")),
                    }
                } else {
                    RefundOutcome::Failed {
                        reason: "refused".to_string(),
                    }
                },
                recorded_at: t,
            },
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    let callback_amount = prop_oneof![
        4 => Just(CallbackAmount::Right),
        1 => Just(CallbackAmount::Short),
        1 => Just(CallbackAmount::OtherCurrency),
    ];
    let refund_amount = prop_oneof![
        3 => (1..=2 * ORDER_AMOUNT_MINOR).prop_map(RefundAmount::Minor),
        1 => Just(RefundAmount::Remaining),
    ];
    let refund_target = prop_oneof![
        4 => any::<prop::sample::Index>().prop_map(RefundTarget::Requested),
        1 => (0..OUT_REFUND_NO_POOL).prop_map(RefundTarget::OutRefundNo),
    ];
    prop_oneof![
        1 => Just(Op::Create),
        2 => prop::bool::weighted(0.8).prop_map(|opened| Op::RecordChannelOrder { opened }),
        5 => (0..NOTIFY_ID_POOL, 0..TRADE_POOL, prop::bool::weighted(0.8), callback_amount).prop_map(
            |(notify, trade, success, amount)| Op::Callback { notify, trade, success, amount }
        ),
        1 => any::<bool>().prop_map(|expired| Op::Close { expired }),
        7 => (0..OUT_REFUND_NO_POOL, refund_amount).prop_map(
            |(out_refund_no, amount)| Op::RequestRefund { out_refund_no, amount }
        ),
        6 => (refund_target, prop::bool::weighted(0.7)).prop_map(
            |(refund, success)| Op::RecordRefundOutcome { refund, success }
        ),
    ]
}

/// Mostly start with `CreateOrder`, so most cases exercise a live order; the rest check that
/// commands on a missing order are refused without events.
fn ops() -> impl Strategy<Value = Vec<Op>> {
    (prop::bool::weighted(0.9), prop::collection::vec(op(), 1..=STEPS_MAX)).prop_map(|(create_first, rest)| {
        let mut ops = Vec::with_capacity(rest.len() + 1);
        if create_first {
            ops.push(Op::Create);
        }
        ops.extend(rest);
        ops
    })
}

/// Handles `command` on a clone of `state`, as the event store does: the clone with the events
/// applied, or the error, plus whatever the aggregate wrote to the sink.
async fn handle(state: &PaymentOrder, command: C) -> (PaymentOrder, Result<(), OrderError>, Vec<E>) {
    let mut next = state.clone();
    let sink = EventSink::default();
    let result = next.handle(command, &(), &sink).await;
    (next, result, sink.collect().await)
}

/// The invariants that must hold after every step, whatever happened before.
fn check_invariants(live: &PaymentOrder, history: &[E]) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        &PaymentOrder::from_events(history),
        live,
        "re-folding the events must give the live state"
    );

    let successes: Vec<&E> = history
        .iter()
        .filter(|e| matches!(e, E::PaymentSucceeded { .. }))
        .collect();
    prop_assert!(successes.len() <= 1, "two PaymentSucceeded: {:?}", successes);
    let created = history.iter().filter(|e| matches!(e, E::OrderCreated { .. })).count();

    let Some(o) = &live.order else {
        prop_assert!(history.is_empty(), "events without an order: {:?}", history);
        return Ok(());
    };
    prop_assert_eq!(created, 1);
    prop_assert!(
        matches!(history.first(), Some(E::OrderCreated { .. })),
        "first event is not OrderCreated: {:?}",
        history.first()
    );

    let paid = o.paid_amount_minor;
    let refunded = o.refunded_amount_minor;
    let pending = o.pending_refund_minor();
    prop_assert!(refunded >= 0 && pending >= 0);
    prop_assert!(refunded <= paid, "refunded {} > paid {}", refunded, paid);
    prop_assert!(
        refunded + pending <= paid,
        "refunded {} + pending {} > paid {}",
        refunded,
        pending,
        paid
    );
    prop_assert_eq!(paid > 0, successes.len() == 1);
    prop_assert!(paid == 0 || paid == ORDER_AMOUNT_MINOR);

    let succeeded_sum: i64 = o
        .refunds
        .iter()
        .filter(|r| r.status == RefundStatus::Succeeded)
        .map(|r| r.amount.amount_minor)
        .sum();
    prop_assert_eq!(refunded, succeeded_sum);

    // Status follows the amounts.
    prop_assert_eq!(o.status.is_paid(), paid > 0);
    prop_assert_eq!(o.status == OrderStatus::Refunded, paid > 0 && refunded == paid);
    prop_assert_eq!(
        o.status == OrderStatus::PartiallyRefunded,
        refunded > 0 && refunded < paid
    );
    prop_assert_eq!(o.status == OrderStatus::Paid, paid > 0 && refunded == 0);

    // A payment is late exactly when the order had been closed or failed before it.
    if let Some(at) = history.iter().position(|e| matches!(e, E::PaymentSucceeded { .. })) {
        let closed_or_failed_before = history[..at].iter().any(|e| {
            matches!(
                e,
                E::OrderClosed { .. } | E::ChannelOrderFailed { .. } | E::PaymentFailed { .. }
            )
        });
        prop_assert_eq!(o.late_payment, closed_or_failed_before);
        prop_assert!(
            matches!(&history[at], E::PaymentSucceeded { late, .. } if *late == closed_or_failed_before),
            "late flag of {:?} differs from closed_or_failed_before = {}",
            history[at],
            closed_or_failed_before
        );
    }
    Ok(())
}

/// Rules checked against the state just before a command (a small model of the decisions that
/// matter most for money).
fn check_decision(
    before: &PaymentOrder,
    op: &Op,
    result: &Result<(), OrderError>,
    emitted: &[E],
) -> Result<(), TestCaseError> {
    let Some(o) = &before.order else {
        if !matches!(op, Op::Create) {
            prop_assert_eq!(result, &Err(OrderError::OrderNotFound));
        }
        return Ok(());
    };
    match *op {
        // Money that moved is never dropped: a first success with the right amount on an unpaid
        // order is recorded, whatever the order's status.
        Op::Callback {
            notify,
            trade,
            success: true,
            amount: CallbackAmount::Right,
        } if !o.status.is_paid()
            && !o.seen_notify_ids.contains(&format!("N{notify}"))
            && !o.suspense_trade_nos.contains(&format!("CH{trade}")) =>
        {
            prop_assert!(result.is_ok());
            prop_assert!(
                matches!(emitted, [E::PaymentSucceeded { .. }]),
                "success callback dropped: {:?}",
                emitted
            );
        }
        // A payer paying twice: a new trade's success on a paid order is kept, in suspense.
        Op::Callback {
            notify,
            trade,
            success: true,
            amount: CallbackAmount::Right,
        } if o.status.is_paid()
            && !o.seen_notify_ids.contains(&format!("N{notify}"))
            && o.channel_trade_no != Some(format!("CH{trade}"))
            && !o.suspense_trade_nos.contains(&format!("CH{trade}")) =>
        {
            prop_assert!(
                matches!(emitted, [E::DuplicatePayment { .. }]),
                "second payment dropped: {:?}",
                emitted
            );
        }
        // A mismatched amount never pays.
        Op::Callback {
            amount: CallbackAmount::Short | CallbackAmount::OtherCurrency,
            ..
        } => {
            prop_assert!(
                !emitted.iter().any(|e| matches!(e, E::PaymentSucceeded { .. })),
                "mismatched callback paid the order: {:?}",
                emitted
            );
        }
        // A new refund on a paid order is accepted exactly up to the refundable amount.
        Op::RequestRefund {
            out_refund_no: n,
            amount,
        } if o.status.is_paid() && !o.refunds.iter().any(|r| r.out_refund_no == out_refund_no(n)) => {
            let amount_minor = amount.minor(before);
            let refundable_minor = o.refundable_minor();
            if amount_minor <= refundable_minor {
                prop_assert!(result.is_ok(), "{:?}", result);
                prop_assert_eq!(emitted.len(), 1);
            } else {
                prop_assert_eq!(
                    result,
                    &Err(OrderError::RefundExceedsRefundable {
                        requested: cny(amount_minor),
                        refundable_minor,
                    })
                );
            }
        }
        _ => {}
    }
    Ok(())
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let mut live = PaymentOrder::default();
    let mut history: Vec<E> = Vec::new();

    for (step, op) in ops.iter().enumerate() {
        let command = op.command(step, &live);
        let (next, result, emitted) = rt.block_on(handle(&live, command.clone()));
        check_decision(&live, op, &result, &emitted)?;
        match &result {
            Ok(()) => {
                live = next;
                history.extend(emitted.iter().cloned());
            }
            Err(_) => {
                // A refused command records nothing and changes nothing.
                prop_assert!(emitted.is_empty(), "error after events: {:?}", emitted);
                prop_assert_eq!(&next, &live);
            }
        }
        check_invariants(&live, &history)?;

        // Every command is safe to retry: once it emitted its events, the same command again
        // emits nothing (a failed channel order is final, so recording it again is refused).
        if !emitted.is_empty() {
            let (_, retry, again) = rt.block_on(handle(&live, command));
            prop_assert!(again.is_empty(), "retry of {:?} emitted {:?}", op, again);
            if matches!(
                (op, live.order.as_ref().map(|o| o.status)),
                (Op::RecordChannelOrder { opened: false }, Some(OrderStatus::Failed))
            ) {
                prop_assert!(matches!(retry, Err(OrderError::InvalidState { .. })), "{:?}", retry);
            } else {
                prop_assert_eq!(retry, Ok(()));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_command_sequences_keep_the_ledger_invariants(ops in ops()) {
        run(&ops)?;
    }
}
