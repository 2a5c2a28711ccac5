//! Given/when/then tests of the `PaymentOrder` rules in `ARCHITECTURE.md` ("Where each money rule
//! lives"), one test per rule, named after it.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use payledger_domain::{
    ids, CallbackOutcome, ChannelAccountRef, ChannelOrder, ChannelOrderOutcome, CloseReason, Currency, Mode, Money,
    OrderError, OrderStatus, OrderTerms, PaymentOrder, PaymentOrderCommand as C, PaymentOrderEvent as E, RefundOutcome,
    RefundStatus, AMOUNT_MINOR_MAX,
};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Fixtures. One order of 100.00 CNY, expiring 15 minutes after creation.

const MERCHANT_ID: &str = "m_1001";
const OUT_TRADE_NO: &str = "T20250115_0001";
const ORDER_AMOUNT_MINOR: i64 = 10_000;
const EXPIRE_IN_SECONDS: u32 = 900;

fn framework() -> TestFramework<PaymentOrder> {
    TestFramework::<PaymentOrder>::with(())
}

/// A fixed instant on 2025-01-15, `minute` minutes after 10:00 UTC.
fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 15, 10, minute, 0).unwrap()
}

fn cny(amount_minor: i64) -> Money {
    Money::new(amount_minor, Currency::CNY).unwrap()
}

fn order_id() -> Uuid {
    ids::order_id(MERCHANT_ID, Mode::Test, OUT_TRADE_NO)
}

fn refund_id(out_refund_no: &str) -> Uuid {
    ids::refund_id(order_id(), out_refund_no)
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
        user_id: Some("u_42".to_string()),
        notify_url: Some("https://merchant.example/notify".to_string()),
        return_url: None,
        expire_in_seconds: EXPIRE_IN_SECONDS,
        metadata: BTreeMap::from([("cart".to_string(), "c-7".to_string())]),
    }
}

fn channel_order() -> ChannelOrder {
    ChannelOrder {
        pay_url: None,
        qr_code: Some("sandbox://pay/abc".to_string()),
        channel_ref: Some("prepay_1".to_string()),
    }
}

// Commands.

fn create_order(terms: OrderTerms) -> C {
    C::CreateOrder {
        order_id: order_id(),
        terms,
        created_at: at(0),
    }
}

fn place_order(terms: OrderTerms, outcome: ChannelOrderOutcome) -> C {
    C::PlaceOrder {
        order_id: order_id(),
        terms,
        created_at: at(0),
        account: None,
        outcome,
        recorded_at: at(1),
    }
}

fn channel_failure() -> ChannelOrderOutcome {
    ChannelOrderOutcome::Failed {
        code: "channel_unavailable".to_string(),
        message: "connect timeout".to_string(),
        retryable: true,
    }
}

fn record_channel_order_opened() -> C {
    C::RecordChannelOrder {
        outcome: ChannelOrderOutcome::Opened(channel_order()),
        recorded_at: at(1),
    }
}

fn record_channel_order_failed() -> C {
    C::RecordChannelOrder {
        outcome: ChannelOrderOutcome::Failed {
            code: "channel_unavailable".to_string(),
            message: "connect timeout".to_string(),
            retryable: true,
        },
        recorded_at: at(1),
    }
}

fn success_callback(notify_id: &str, amount: Money) -> C {
    success_callback_for_trade(notify_id, "CH_TRADE_1", amount)
}

fn success_callback_for_trade(notify_id: &str, channel_trade_no: &str, amount: Money) -> C {
    C::ReceiveChannelCallback {
        account_id: None,
        channel: "sandbox".to_string(),
        notify_id: notify_id.to_string(),
        channel_trade_no: channel_trade_no.to_string(),
        outcome: CallbackOutcome::Succeeded { amount, paid_at: at(5) },
        received_at: at(6),
    }
}

fn failed_callback(notify_id: &str) -> C {
    C::ReceiveChannelCallback {
        account_id: None,
        channel: "sandbox".to_string(),
        notify_id: notify_id.to_string(),
        channel_trade_no: "CH_TRADE_1".to_string(),
        outcome: CallbackOutcome::Failed {
            reason: "insufficient balance".to_string(),
        },
        received_at: at(6),
    }
}

fn close_order() -> C {
    C::CloseOrder {
        reason: CloseReason::Cancelled,
        closed_at: at(3),
    }
}

fn request_refund(out_refund_no: &str, amount: Money) -> C {
    C::RequestRefund {
        out_refund_no: out_refund_no.to_string(),
        amount,
        reason: Some("returned".to_string()),
        requested_at: at(20),
    }
}

fn record_refund_succeeded(out_refund_no: &str) -> C {
    C::RecordRefundOutcome {
        refund_id: refund_id(out_refund_no),
        outcome: RefundOutcome::Succeeded {
            channel_refund_no: Some(format!("CH_{out_refund_no}")),
        },
        recorded_at: at(30),
    }
}

fn record_refund_failed(out_refund_no: &str) -> C {
    C::RecordRefundOutcome {
        refund_id: refund_id(out_refund_no),
        outcome: RefundOutcome::Failed {
            reason: "account closed".to_string(),
        },
        recorded_at: at(30),
    }
}

// Events, as the commands above emit them.

fn order_created() -> E {
    E::OrderCreated {
        order_id: order_id(),
        terms: terms(),
        created_at: at(0),
        expire_at: at(15),
    }
}

fn channel_order_opened() -> E {
    E::ChannelOrderOpened {
        account: None,
        channel_order: channel_order(),
        opened_at: at(1),
    }
}

fn channel_order_failed() -> E {
    E::ChannelOrderFailed {
        code: "channel_unavailable".to_string(),
        message: "connect timeout".to_string(),
        retryable: true,
        failed_at: at(1),
    }
}

fn payment_succeeded(notify_id: &str, late: bool) -> E {
    E::PaymentSucceeded {
        notify_id: notify_id.to_string(),
        channel_trade_no: "CH_TRADE_1".to_string(),
        amount: cny(ORDER_AMOUNT_MINOR),
        paid_at: at(5),
        late,
    }
}

fn payment_failed(notify_id: &str) -> E {
    E::PaymentFailed {
        notify_id: notify_id.to_string(),
        channel_trade_no: "CH_TRADE_1".to_string(),
        reason: "insufficient balance".to_string(),
        failed_at: at(6),
    }
}

fn payment_amount_mismatch(notify_id: &str, received: Money) -> E {
    E::PaymentAmountMismatch {
        notify_id: notify_id.to_string(),
        channel_trade_no: "CH_TRADE_1".to_string(),
        expected: cny(ORDER_AMOUNT_MINOR),
        received,
        received_at: at(6),
    }
}

fn order_closed() -> E {
    E::OrderClosed {
        reason: CloseReason::Cancelled,
        closed_at: at(3),
    }
}

fn refund_requested(out_refund_no: &str, amount_minor: i64) -> E {
    E::RefundRequested {
        refund_id: refund_id(out_refund_no),
        out_refund_no: out_refund_no.to_string(),
        amount: cny(amount_minor),
        reason: Some("returned".to_string()),
        requested_at: at(20),
    }
}

fn refund_succeeded(out_refund_no: &str) -> E {
    E::RefundSucceeded {
        refund_id: refund_id(out_refund_no),
        channel_refund_no: Some(format!("CH_{out_refund_no}")),
        succeeded_at: at(30),
    }
}

fn refund_failed(out_refund_no: &str) -> E {
    E::RefundFailed {
        refund_id: refund_id(out_refund_no),
        reason: "account closed".to_string(),
        failed_at: at(30),
    }
}

/// An order that was created, opened at the channel and paid on time.
fn paid_order() -> Vec<E> {
    vec![order_created(), channel_order_opened(), payment_succeeded("N1", false)]
}

fn with(mut history: Vec<E>, more: impl IntoIterator<Item = E>) -> Vec<E> {
    history.extend(more);
    history
}

fn status_after(events: &[E]) -> OrderStatus {
    PaymentOrder::from_events(events)
        .order
        .expect("history creates the order")
        .status
}

// ---------------------------------------------------------------------------------------------
// CreateOrder

#[tokio::test]
async fn create_order_emits_order_created_expiring_after_expire_in_seconds() {
    let expected_expire_at = at(0) + Duration::seconds(i64::from(EXPIRE_IN_SECONDS));
    assert_eq!(expected_expire_at, at(15));
    framework()
        .given_no_previous_events()
        .when_async(create_order(terms()))
        .await
        .then_expect_events(vec![E::OrderCreated {
            order_id: order_id(),
            terms: terms(),
            created_at: at(0),
            expire_at: expected_expire_at,
        }]);
}

#[tokio::test]
async fn create_order_again_with_same_terms_emits_nothing() {
    framework()
        .given(vec![order_created()])
        .when_async(create_order(terms()))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn create_order_again_with_same_terms_after_payment_emits_nothing() {
    framework()
        .given(paid_order())
        .when_async(create_order(terms()))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_new_order_must_be_on_a_channel_its_mode_reaches() {
    let live_on_sandbox = OrderTerms {
        mode: Mode::Live,
        ..terms()
    };
    framework()
        .given_no_previous_events()
        .when_async(create_order(live_on_sandbox))
        .await
        .then_expect_error(OrderError::ChannelNotInMode {
            channel: "sandbox".into(),
            mode: Mode::Live,
        });
    let test_on_wechatpay = OrderTerms {
        channel: "wechatpay".into(),
        ..terms()
    };
    framework()
        .given_no_previous_events()
        .when_async(create_order(test_on_wechatpay))
        .await
        .then_expect_error(OrderError::ChannelNotInMode {
            channel: "wechatpay".into(),
            mode: Mode::Test,
        });
}

#[tokio::test]
async fn create_order_with_other_terms_is_out_trade_no_conflict() {
    let other = OrderTerms {
        amount: cny(ORDER_AMOUNT_MINOR + 1),
        ..terms()
    };
    framework()
        .given(vec![order_created()])
        .when_async(create_order(other))
        .await
        .then_expect_error(OrderError::OutTradeNoConflict(OUT_TRADE_NO.to_string()));

    let other_subject = OrderTerms {
        subject: "Another book".to_string(),
        ..terms()
    };
    framework()
        .given(vec![order_created()])
        .when_async(create_order(other_subject))
        .await
        .then_expect_error(OrderError::OutTradeNoConflict(OUT_TRADE_NO.to_string()));
}

#[tokio::test]
async fn place_order_creates_the_order_and_records_the_channel_answer_in_one_command() {
    framework()
        .given_no_previous_events()
        .when_async(place_order(terms(), ChannelOrderOutcome::Opened(channel_order())))
        .await
        .then_expect_events(vec![order_created(), channel_order_opened()]);
    framework()
        .given_no_previous_events()
        .when_async(place_order(terms(), channel_failure()))
        .await
        .then_expect_events(vec![order_created(), channel_order_failed()]);
}

#[tokio::test]
async fn place_order_again_with_same_terms_emits_nothing_and_the_first_answer_stands() {
    framework()
        .given(vec![order_created(), channel_order_opened()])
        .when_async(place_order(terms(), channel_failure()))
        .await
        .then_expect_events(vec![]);
    framework()
        .given(paid_order())
        .when_async(place_order(terms(), ChannelOrderOutcome::Opened(channel_order())))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn place_order_completes_an_order_created_without_a_channel_answer() {
    framework()
        .given(vec![order_created()])
        .when_async(place_order(terms(), ChannelOrderOutcome::Opened(channel_order())))
        .await
        .then_expect_events(vec![channel_order_opened()]);
    // Closed before it was placed: nothing to place.
    framework()
        .given(vec![order_created(), order_closed()])
        .when_async(place_order(terms(), ChannelOrderOutcome::Opened(channel_order())))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn place_order_with_other_terms_is_out_trade_no_conflict_and_records_nothing() {
    let other = OrderTerms {
        amount: cny(ORDER_AMOUNT_MINOR + 1),
        ..terms()
    };
    framework()
        .given(vec![order_created()])
        .when_async(place_order(other, ChannelOrderOutcome::Opened(channel_order())))
        .await
        .then_expect_error(OrderError::OutTradeNoConflict(OUT_TRADE_NO.to_string()));
}

#[tokio::test]
async fn place_order_with_invalid_amount_is_rejected() {
    let invalid = OrderTerms {
        amount: Money {
            amount_minor: 0,
            currency: Currency::CNY,
        },
        ..terms()
    };
    framework()
        .given_no_previous_events()
        .when_async(place_order(invalid, ChannelOrderOutcome::Opened(channel_order())))
        .await
        .then_expect_error(OrderError::InvalidAmount(format!(
            "{:?}",
            Money {
                amount_minor: 0,
                currency: Currency::CNY
            }
        )));
}

#[tokio::test]
async fn create_order_with_invalid_amount_is_rejected() {
    // `Money` fields are public and deserialisation bypasses `Money::new`, so the aggregate must
    // re-check: zero, negative, past the limit, and a currency without a minor unit.
    let invalid = [
        Money {
            amount_minor: 0,
            currency: Currency::CNY,
        },
        Money {
            amount_minor: -100,
            currency: Currency::CNY,
        },
        Money {
            amount_minor: AMOUNT_MINOR_MAX + 1,
            currency: Currency::CNY,
        },
        Money {
            amount_minor: 100,
            currency: Currency::XAU,
        },
    ];
    for amount in invalid {
        let result = framework()
            .given_no_previous_events()
            .when_async(create_order(OrderTerms { amount, ..terms() }))
            .await
            .inspect_result();
        assert!(
            matches!(result, Err(OrderError::InvalidAmount(_))),
            "{amount:?} gave {result:?}"
        );
    }
}

#[tokio::test]
async fn create_order_at_the_amount_limit_is_accepted() {
    let at_limit = OrderTerms {
        amount: cny(AMOUNT_MINOR_MAX),
        ..terms()
    };
    framework()
        .given_no_previous_events()
        .when_async(create_order(at_limit.clone()))
        .await
        .then_expect_events(vec![E::OrderCreated {
            order_id: order_id(),
            terms: at_limit,
            created_at: at(0),
            expire_at: at(15),
        }]);
}

// ---------------------------------------------------------------------------------------------
// RecordChannelOrder

#[tokio::test]
async fn channel_order_opened_emits_channel_order_opened() {
    framework()
        .given(vec![order_created()])
        .when_async(record_channel_order_opened())
        .await
        .then_expect_events(vec![channel_order_opened()]);
}

#[tokio::test]
async fn channel_order_failed_emits_channel_order_failed_and_fails_the_order() {
    framework()
        .given(vec![order_created()])
        .when_async(record_channel_order_failed())
        .await
        .then_expect_events(vec![channel_order_failed()]);
    assert_eq!(
        status_after(&[order_created(), channel_order_failed()]),
        OrderStatus::Failed
    );
}

#[tokio::test]
async fn second_channel_order_record_emits_nothing() {
    // The first answer wins, whatever the second one says.
    framework()
        .given(vec![order_created(), channel_order_opened()])
        .when_async(record_channel_order_opened())
        .await
        .then_expect_events(vec![]);
    framework()
        .given(vec![order_created(), channel_order_opened()])
        .when_async(record_channel_order_failed())
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn channel_order_on_closed_order_is_invalid_state() {
    framework()
        .given(vec![order_created(), order_closed()])
        .when_async(record_channel_order_opened())
        .await
        .then_expect_error(OrderError::InvalidState {
            status: OrderStatus::Closed,
            action: "record a channel order",
        });
}

#[tokio::test]
async fn channel_order_on_paid_order_is_invalid_state() {
    framework()
        .given(paid_order())
        .when_async(record_channel_order_opened())
        .await
        .then_expect_error(OrderError::InvalidState {
            status: OrderStatus::Paid,
            action: "record a channel order",
        });
}

#[tokio::test]
async fn channel_order_on_failed_order_is_invalid_state() {
    framework()
        .given(vec![order_created(), channel_order_failed()])
        .when_async(record_channel_order_failed())
        .await
        .then_expect_error(OrderError::InvalidState {
            status: OrderStatus::Failed,
            action: "record a channel order",
        });
}

#[tokio::test]
async fn channel_order_without_order_is_order_not_found() {
    framework()
        .given_no_previous_events()
        .when_async(record_channel_order_opened())
        .await
        .then_expect_error(OrderError::OrderNotFound);
}

// ---------------------------------------------------------------------------------------------
// ReceiveChannelCallback

#[tokio::test]
async fn success_callback_with_matching_amount_pays_the_order() {
    framework()
        .given(vec![order_created(), channel_order_opened()])
        .when_async(success_callback("N1", cny(ORDER_AMOUNT_MINOR)))
        .await
        .then_expect_events(vec![payment_succeeded("N1", false)]);

    let order = PaymentOrder::from_events(&paid_order()).order.unwrap();
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(order.paid_amount_minor, ORDER_AMOUNT_MINOR);
    assert_eq!(order.channel_trade_no.as_deref(), Some("CH_TRADE_1"));
    assert!(!order.late_payment);
}

#[tokio::test]
async fn callback_without_order_is_order_not_found() {
    framework()
        .given_no_previous_events()
        .when_async(success_callback("N1", cny(ORDER_AMOUNT_MINOR)))
        .await
        .then_expect_error(OrderError::OrderNotFound);
}

#[tokio::test]
async fn callback_from_another_channel_is_wrong_channel() {
    let mut cmd = success_callback("N1", cny(ORDER_AMOUNT_MINOR));
    if let C::ReceiveChannelCallback { channel, .. } = &mut cmd {
        *channel = "wechatpay".to_string();
    }
    framework()
        .given(vec![order_created(), channel_order_opened()])
        .when_async(cmd)
        .await
        .then_expect_error(OrderError::WrongChannel {
            order: "sandbox".to_string(),
            callback: "wechatpay".to_string(),
        });
}

fn opened_with_account(id: &str) -> E {
    E::ChannelOrderOpened {
        account: Some(ChannelAccountRef {
            id: id.to_string(),
            app_id: Some("wx-app".to_string()),
            mch_id: Some("1230000109".to_string()),
        }),
        channel_order: channel_order(),
        opened_at: at(1),
    }
}

fn callback_verified_by(account_id: Option<&str>) -> C {
    let mut cmd = success_callback("N1", cny(ORDER_AMOUNT_MINOR));
    if let C::ReceiveChannelCallback { account_id: a, .. } = &mut cmd {
        *a = account_id.map(str::to_string);
    }
    cmd
}

#[tokio::test]
async fn callback_verified_by_another_account_of_the_channel_is_refused() {
    framework()
        .given(vec![order_created(), opened_with_account("old")])
        .when_async(callback_verified_by(Some("new")))
        .await
        .then_expect_error(OrderError::WrongChannelAccount {
            order: "old".to_string(),
            callback: "new".to_string(),
        });
}

#[tokio::test]
async fn callback_verified_by_the_account_that_placed_the_order_pays_it() {
    framework()
        .given(vec![order_created(), opened_with_account("old")])
        .when_async(callback_verified_by(Some("old")))
        .await
        .then_expect_events(vec![payment_succeeded("N1", false)]);
}

#[tokio::test]
async fn an_order_opened_before_accounts_takes_a_callback_of_any_account() {
    // ChannelOrderOpened 1.0 says nothing about the account: the registry's legacy account
    // verifies these orders' notifications, and the aggregate has nothing to compare.
    framework()
        .given(vec![order_created(), channel_order_opened()])
        .when_async(callback_verified_by(Some("main")))
        .await
        .then_expect_events(vec![payment_succeeded("N1", false)]);
}

#[test]
fn the_order_remembers_the_account_that_opened_it() {
    let mut order = PaymentOrder::default();
    cqrs_es::Aggregate::apply(&mut order, order_created());
    cqrs_es::Aggregate::apply(&mut order, opened_with_account("old"));
    let account = order.order.unwrap().channel_account.unwrap();
    assert_eq!(account.id, "old");
    assert_eq!(account.identity(), "app_id=wx-app mch_id=1230000109");
}

#[tokio::test]
async fn duplicate_notify_id_emits_nothing() {
    framework()
        .given(paid_order())
        .when_async(success_callback("N1", cny(ORDER_AMOUNT_MINOR)))
        .await
        .then_expect_events(vec![]);
    // A duplicate of a failure notification is recognised too, even while still awaiting.
    framework()
        .given(vec![order_created(), payment_failed("N1")])
        .when_async(failed_callback("N1"))
        .await
        .then_expect_events(vec![]);
    // And a duplicate of a mismatched one is not flagged twice.
    framework()
        .given(vec![
            order_created(),
            payment_amount_mismatch("N1", cny(ORDER_AMOUNT_MINOR - 1)),
        ])
        .when_async(success_callback("N1", cny(ORDER_AMOUNT_MINOR - 1)))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn second_success_with_new_notify_id_after_paid_emits_nothing() {
    framework()
        .given(paid_order())
        .when_async(success_callback("N2", cny(ORDER_AMOUNT_MINOR)))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn callback_amount_mismatch_is_flagged_and_does_not_pay() {
    let short = cny(ORDER_AMOUNT_MINOR - 1);
    framework()
        .given(vec![order_created(), channel_order_opened()])
        .when_async(success_callback("N1", short))
        .await
        .then_expect_events(vec![payment_amount_mismatch("N1", short)]);

    let flagged = vec![
        order_created(),
        channel_order_opened(),
        payment_amount_mismatch("N1", short),
    ];
    let order = PaymentOrder::from_events(&flagged).order.unwrap();
    assert_eq!(order.status, OrderStatus::AwaitingPayment);
    assert_eq!(order.paid_amount_minor, 0);
    assert!(order.amount_mismatch);

    // The same channel trade announced again (any amount) is the money already in suspense.
    framework()
        .given(flagged.clone())
        .when_async(success_callback("N2", cny(ORDER_AMOUNT_MINOR)))
        .await
        .then_expect_events(vec![]);

    // Not paid: a later payment (another trade) with the right amount still pays, on time.
    framework()
        .given(flagged)
        .when_async(success_callback_for_trade("N3", "CH_TRADE_2", cny(ORDER_AMOUNT_MINOR)))
        .await
        .then_expect_events(vec![E::PaymentSucceeded {
            notify_id: "N3".to_string(),
            channel_trade_no: "CH_TRADE_2".to_string(),
            amount: cny(ORDER_AMOUNT_MINOR),
            paid_at: at(5),
            late: false,
        }]);
}

#[tokio::test]
async fn second_success_with_another_trade_after_paid_is_duplicate_payment_recorded_once() {
    let duplicate = E::DuplicatePayment {
        notify_id: "N2".to_string(),
        channel_trade_no: "CH_TRADE_2".to_string(),
        amount: cny(ORDER_AMOUNT_MINOR),
        received_at: at(6),
    };
    framework()
        .given(paid_order())
        .when_async(success_callback_for_trade("N2", "CH_TRADE_2", cny(ORDER_AMOUNT_MINOR)))
        .await
        .then_expect_events(vec![duplicate.clone()]);

    let history = with(paid_order(), [duplicate]);
    let order = PaymentOrder::from_events(&history).order.unwrap();
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(order.paid_amount_minor, ORDER_AMOUNT_MINOR, "the order is paid once");
    assert_eq!(order.channel_trade_no.as_deref(), Some("CH_TRADE_1"));

    // Re-sent under a new notification id: the same duplicate, not a third payment.
    framework()
        .given(history)
        .when_async(success_callback_for_trade("N3", "CH_TRADE_2", cny(ORDER_AMOUNT_MINOR)))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn callback_currency_mismatch_is_flagged_as_amount_mismatch() {
    let usd = Money::new(ORDER_AMOUNT_MINOR, Currency::USD).unwrap();
    framework()
        .given(vec![order_created(), channel_order_opened()])
        .when_async(success_callback("N1", usd))
        .await
        .then_expect_events(vec![payment_amount_mismatch("N1", usd)]);
}

#[tokio::test]
async fn success_after_order_closed_is_recorded_as_late_payment() {
    let history = vec![order_created(), channel_order_opened(), order_closed()];
    framework()
        .given(history.clone())
        .when_async(success_callback("N1", cny(ORDER_AMOUNT_MINOR)))
        .await
        .then_expect_events(vec![payment_succeeded("N1", true)]);

    let order = PaymentOrder::from_events(&with(history, [payment_succeeded("N1", true)]))
        .order
        .unwrap();
    assert_eq!(order.status, OrderStatus::Paid);
    assert!(order.late_payment);
}

#[tokio::test]
async fn success_after_payment_failed_is_recorded_as_late_payment() {
    framework()
        .given(vec![order_created(), channel_order_opened(), payment_failed("N1")])
        .when_async(success_callback("N2", cny(ORDER_AMOUNT_MINOR)))
        .await
        .then_expect_events(vec![payment_succeeded("N2", true)]);
}

#[tokio::test]
async fn success_after_channel_order_failed_is_recorded_as_late_payment() {
    framework()
        .given(vec![order_created(), channel_order_failed()])
        .when_async(success_callback("N1", cny(ORDER_AMOUNT_MINOR)))
        .await
        .then_expect_events(vec![payment_succeeded("N1", true)]);
}

#[tokio::test]
async fn failed_callback_while_awaiting_payment_emits_payment_failed() {
    framework()
        .given(vec![order_created(), channel_order_opened()])
        .when_async(failed_callback("N1"))
        .await
        .then_expect_events(vec![payment_failed("N1")]);
    assert_eq!(
        status_after(&[order_created(), channel_order_opened(), payment_failed("N1")]),
        OrderStatus::Failed
    );
}

#[tokio::test]
async fn failed_callback_after_paid_emits_nothing() {
    framework()
        .given(paid_order())
        .when_async(failed_callback("N2"))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn failed_callback_after_order_closed_emits_nothing() {
    // A failure report only matters while the money is awaited; a closed order stays closed.
    framework()
        .given(vec![order_created(), channel_order_opened(), order_closed()])
        .when_async(failed_callback("N1"))
        .await
        .then_expect_events(vec![]);
}

// ---------------------------------------------------------------------------------------------
// CloseOrder

#[tokio::test]
async fn close_awaiting_order_emits_order_closed() {
    framework()
        .given(vec![order_created(), channel_order_opened()])
        .when_async(close_order())
        .await
        .then_expect_events(vec![order_closed()]);
    assert_eq!(status_after(&[order_created(), order_closed()]), OrderStatus::Closed);
}

#[tokio::test]
async fn close_closed_order_again_emits_nothing() {
    framework()
        .given(vec![order_created(), order_closed()])
        .when_async(C::CloseOrder {
            reason: CloseReason::Expired,
            closed_at: at(16),
        })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn close_paid_order_is_already_paid() {
    framework()
        .given(paid_order())
        .when_async(close_order())
        .await
        .then_expect_error(OrderError::AlreadyPaid);
    // Still paid after a partial refund: refund it, do not close it.
    framework()
        .given(with(
            paid_order(),
            [refund_requested("R1", 1_000), refund_succeeded("R1")],
        ))
        .when_async(close_order())
        .await
        .then_expect_error(OrderError::AlreadyPaid);
}

#[tokio::test]
async fn close_failed_order_is_invalid_state() {
    framework()
        .given(vec![order_created(), channel_order_failed()])
        .when_async(close_order())
        .await
        .then_expect_error(OrderError::InvalidState {
            status: OrderStatus::Failed,
            action: "close",
        });
}

#[tokio::test]
async fn close_without_order_is_order_not_found() {
    framework()
        .given_no_previous_events()
        .when_async(close_order())
        .await
        .then_expect_error(OrderError::OrderNotFound);
}

// ---------------------------------------------------------------------------------------------
// RequestRefund

#[tokio::test]
async fn refund_of_paid_order_emits_refund_requested_with_derived_refund_id() {
    framework()
        .given(paid_order())
        .when_async(request_refund("R1", cny(3_000)))
        .await
        .then_expect_events(vec![E::RefundRequested {
            refund_id: ids::refund_id(order_id(), "R1"),
            out_refund_no: "R1".to_string(),
            amount: cny(3_000),
            reason: Some("returned".to_string()),
            requested_at: at(20),
        }]);
}

#[tokio::test]
async fn refund_of_unpaid_order_is_not_paid() {
    framework()
        .given(vec![order_created(), channel_order_opened()])
        .when_async(request_refund("R1", cny(1_000)))
        .await
        .then_expect_error(OrderError::NotPaid(OrderStatus::AwaitingPayment));
    framework()
        .given(vec![order_created(), order_closed()])
        .when_async(request_refund("R1", cny(1_000)))
        .await
        .then_expect_error(OrderError::NotPaid(OrderStatus::Closed));
    // A mismatched callback did not pay the order either.
    framework()
        .given(vec![
            order_created(),
            payment_amount_mismatch("N1", cny(ORDER_AMOUNT_MINOR - 1)),
        ])
        .when_async(request_refund("R1", cny(1_000)))
        .await
        .then_expect_error(OrderError::NotPaid(OrderStatus::AwaitingPayment));
}

#[tokio::test]
async fn refund_without_order_is_order_not_found() {
    framework()
        .given_no_previous_events()
        .when_async(request_refund("R1", cny(1_000)))
        .await
        .then_expect_error(OrderError::OrderNotFound);
}

#[tokio::test]
async fn refund_over_refundable_amount_is_rejected() {
    framework()
        .given(paid_order())
        .when_async(request_refund("R1", cny(ORDER_AMOUNT_MINOR + 1)))
        .await
        .then_expect_error(OrderError::RefundExceedsRefundable {
            requested: cny(ORDER_AMOUNT_MINOR + 1),
            refundable_minor: ORDER_AMOUNT_MINOR,
        });
}

#[tokio::test]
async fn refund_of_the_whole_paid_amount_is_accepted() {
    framework()
        .given(paid_order())
        .when_async(request_refund("R1", cny(ORDER_AMOUNT_MINOR)))
        .await
        .then_expect_events(vec![refund_requested("R1", ORDER_AMOUNT_MINOR)]);
}

#[tokio::test]
async fn refund_with_invalid_amount_is_rejected() {
    let zero = Money {
        amount_minor: 0,
        currency: Currency::CNY,
    };
    let result = framework()
        .given(paid_order())
        .when_async(request_refund("R1", zero))
        .await
        .inspect_result();
    assert!(matches!(result, Err(OrderError::InvalidAmount(_))), "{result:?}");
}

#[tokio::test]
async fn pending_refunds_count_against_refundable() {
    let history = with(paid_order(), [refund_requested("R1", 6_000)]);
    framework()
        .given(history.clone())
        .when_async(request_refund("R2", cny(4_001)))
        .await
        .then_expect_error(OrderError::RefundExceedsRefundable {
            requested: cny(4_001),
            refundable_minor: 4_000,
        });
    framework()
        .given(history)
        .when_async(request_refund("R2", cny(4_000)))
        .await
        .then_expect_events(vec![refund_requested("R2", 4_000)]);
}

#[tokio::test]
async fn succeeded_refunds_count_against_refundable() {
    framework()
        .given(with(
            paid_order(),
            [refund_requested("R1", 6_000), refund_succeeded("R1")],
        ))
        .when_async(request_refund("R2", cny(4_001)))
        .await
        .then_expect_error(OrderError::RefundExceedsRefundable {
            requested: cny(4_001),
            refundable_minor: 4_000,
        });
}

#[tokio::test]
async fn failed_refunds_do_not_count_against_refundable() {
    framework()
        .given(with(paid_order(), [refund_requested("R1", 6_000), refund_failed("R1")]))
        .when_async(request_refund("R2", cny(ORDER_AMOUNT_MINOR)))
        .await
        .then_expect_events(vec![refund_requested("R2", ORDER_AMOUNT_MINOR)]);
}

#[tokio::test]
async fn same_out_refund_no_with_same_amount_emits_nothing() {
    framework()
        .given(with(paid_order(), [refund_requested("R1", 3_000)]))
        .when_async(request_refund("R1", cny(3_000)))
        .await
        .then_expect_events(vec![]);
    // Also once the refund is final: a retry is the same request, not a new refund.
    framework()
        .given(with(
            paid_order(),
            [refund_requested("R1", 3_000), refund_succeeded("R1")],
        ))
        .when_async(request_refund("R1", cny(3_000)))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn same_out_refund_no_with_other_amount_is_out_refund_no_conflict() {
    framework()
        .given(with(paid_order(), [refund_requested("R1", 3_000)]))
        .when_async(request_refund("R1", cny(2_000)))
        .await
        .then_expect_error(OrderError::OutRefundNoConflict("R1".to_string()));
}

#[tokio::test]
async fn refund_in_other_currency_is_currency_mismatch() {
    framework()
        .given(paid_order())
        .when_async(request_refund("R1", Money::new(1_000, Currency::USD).unwrap()))
        .await
        .then_expect_error(OrderError::CurrencyMismatch {
            order: "CNY".to_string(),
            refund: "USD".to_string(),
        });
}

#[tokio::test]
async fn refund_of_fully_refunded_order_exceeds_refundable_zero() {
    framework()
        .given(with(
            paid_order(),
            [refund_requested("R1", ORDER_AMOUNT_MINOR), refund_succeeded("R1")],
        ))
        .when_async(request_refund("R2", cny(1)))
        .await
        .then_expect_error(OrderError::RefundExceedsRefundable {
            requested: cny(1),
            refundable_minor: 0,
        });
}

#[tokio::test]
async fn late_payment_can_be_refunded() {
    framework()
        .given(vec![
            order_created(),
            channel_order_opened(),
            order_closed(),
            payment_succeeded("N1", true),
        ])
        .when_async(request_refund("R1", cny(ORDER_AMOUNT_MINOR)))
        .await
        .then_expect_events(vec![refund_requested("R1", ORDER_AMOUNT_MINOR)]);
}

// ---------------------------------------------------------------------------------------------
// RecordRefundOutcome

#[tokio::test]
async fn refund_success_on_pending_refund_emits_refund_succeeded() {
    framework()
        .given(with(paid_order(), [refund_requested("R1", 3_000)]))
        .when_async(record_refund_succeeded("R1"))
        .await
        .then_expect_events(vec![refund_succeeded("R1")]);
}

#[tokio::test]
async fn refund_failure_on_pending_refund_emits_refund_failed() {
    let history = with(paid_order(), [refund_requested("R1", 3_000)]);
    framework()
        .given(history.clone())
        .when_async(record_refund_failed("R1"))
        .await
        .then_expect_events(vec![refund_failed("R1")]);

    let order = PaymentOrder::from_events(&with(history, [refund_failed("R1")]))
        .order
        .unwrap();
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(order.refunded_amount_minor, 0);
    assert_eq!(order.refunds[0].status, RefundStatus::Failed);
    assert_eq!(order.refundable_minor(), ORDER_AMOUNT_MINOR);
}

#[tokio::test]
async fn refund_outcome_for_unknown_refund_is_refund_not_found() {
    framework()
        .given(with(paid_order(), [refund_requested("R1", 3_000)]))
        .when_async(record_refund_succeeded("R2"))
        .await
        .then_expect_error(OrderError::RefundNotFound(refund_id("R2")));
}

#[tokio::test]
async fn same_refund_outcome_again_emits_nothing() {
    framework()
        .given(with(
            paid_order(),
            [refund_requested("R1", 3_000), refund_succeeded("R1")],
        ))
        .when_async(record_refund_succeeded("R1"))
        .await
        .then_expect_events(vec![]);
    framework()
        .given(with(paid_order(), [refund_requested("R1", 3_000), refund_failed("R1")]))
        .when_async(record_refund_failed("R1"))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn contradicting_refund_outcome_is_refund_already_final() {
    framework()
        .given(with(
            paid_order(),
            [refund_requested("R1", 3_000), refund_succeeded("R1")],
        ))
        .when_async(record_refund_failed("R1"))
        .await
        .then_expect_error(OrderError::RefundAlreadyFinal(refund_id("R1")));
    framework()
        .given(with(paid_order(), [refund_requested("R1", 3_000), refund_failed("R1")]))
        .when_async(record_refund_succeeded("R1"))
        .await
        .then_expect_error(OrderError::RefundAlreadyFinal(refund_id("R1")));
}

// ---------------------------------------------------------------------------------------------
// Status

#[test]
fn partial_refund_success_makes_order_partially_refunded() {
    let events = with(paid_order(), [refund_requested("R1", 3_000), refund_succeeded("R1")]);
    let order = PaymentOrder::from_events(&events).order.unwrap();
    assert_eq!(order.status, OrderStatus::PartiallyRefunded);
    assert_eq!(order.refunded_amount_minor, 3_000);
    assert_eq!(order.refundable_minor(), ORDER_AMOUNT_MINOR - 3_000);
}

#[test]
fn full_refund_success_makes_order_refunded() {
    // In two parts: the first leaves it partially refunded, the second completes it.
    let events = with(
        paid_order(),
        [
            refund_requested("R1", 3_000),
            refund_requested("R2", 7_000),
            refund_succeeded("R1"),
            refund_succeeded("R2"),
        ],
    );
    let order = PaymentOrder::from_events(&events).order.unwrap();
    assert_eq!(order.status, OrderStatus::Refunded);
    assert_eq!(order.refunded_amount_minor, ORDER_AMOUNT_MINOR);
    assert_eq!(order.refundable_minor(), 0);
}

#[test]
fn pending_refund_leaves_order_paid() {
    let events = with(paid_order(), [refund_requested("R1", ORDER_AMOUNT_MINOR)]);
    let order = PaymentOrder::from_events(&events).order.unwrap();
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(order.pending_refund_minor(), ORDER_AMOUNT_MINOR);
    assert_eq!(order.refundable_minor(), 0);
}

// ---------------------------------------------------------------------------------------------
// Invariants asserted in `apply`: an event that breaks them is a bug and must not fold.

#[test]
#[should_panic(expected = "second PaymentSucceeded on one order")]
fn apply_refuses_a_second_payment_succeeded() {
    let _ = PaymentOrder::from_events(&with(paid_order(), [payment_succeeded("N2", false)]));
}

#[test]
#[should_panic(expected = "RefundRequested beyond the refundable amount")]
fn apply_refuses_a_refund_beyond_the_paid_amount() {
    let _ = PaymentOrder::from_events(&with(
        paid_order(),
        [refund_requested("R1", 6_000), refund_requested("R2", 4_001)],
    ));
}

#[test]
#[should_panic(expected = "OrderClosed on a paid order")]
fn apply_refuses_closing_a_paid_order() {
    let _ = PaymentOrder::from_events(&with(paid_order(), [order_closed()]));
}

#[test]
#[should_panic(expected = "refund finalised twice")]
fn apply_refuses_finalising_a_refund_twice() {
    let _ = PaymentOrder::from_events(&with(
        paid_order(),
        [
            refund_requested("R1", 3_000),
            refund_succeeded("R1"),
            refund_succeeded("R1"),
        ],
    ));
}

#[tokio::test]
async fn the_paid_trade_re_announced_with_another_amount_emits_nothing() {
    framework()
        .given(paid_order())
        .when_async(success_callback("N9", cny(ORDER_AMOUNT_MINOR - 1)))
        .await
        .then_expect_events(vec![]);
}

#[test]
fn a_mismatch_recorded_twice_for_one_trade_by_an_older_version_still_loads() {
    // Before DuplicatePayment existed, a mismatch re-sent under a new notification id was
    // recorded again: stored facts that must keep loading.
    let short = cny(ORDER_AMOUNT_MINOR - 1);
    let history = vec![
        order_created(),
        channel_order_opened(),
        payment_amount_mismatch("N1", short),
        payment_amount_mismatch("N2", short),
    ];
    let order = PaymentOrder::from_events(&history).order.unwrap();
    assert!(order.amount_mismatch);
    assert_eq!(order.suspense_trade_nos.len(), 1);
    assert_eq!(order.status, OrderStatus::AwaitingPayment);
}
