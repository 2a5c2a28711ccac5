//! The Alipay adapter against the simulated gateway: orders, notifications through a real HTTP
//! receiver, refunds, queries, and every forgery we know of.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::{Duration, Utc};
use payledger_channel_adapters::alipay::account::{parse_private_key, parse_public_key, KeyError};
use payledger_channel_adapters::alipay::sign::{rsa2_sign, rsa2_verify};
use payledger_channel_adapters::alipay::types::format_beijing;
use payledger_channel_adapters::alipay::{AlipayAccount, AlipayChannel};
use payledger_channel_adapters::rsa_sign::SigningKey;
use payledger_channel_adapters::simulator::alipay::{
    AlipaySimulator, NotifyFaults, ResponseFault, SimulatorKeys, SIM_SELLER_ID,
};
use payledger_channel_adapters::{
    CallbackError, Channel, ChannelError, ChannelPaymentStatus, ChannelRefundRequest, ChannelRefundResult,
    CreateChannelOrder, Notification,
};
use payledger_domain::{CallbackOutcome, Currency, Money, RefundOutcome};
use uuid::Uuid;

const APP_ID: &str = "2021000000000001";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/alipay")
        .join(name)
}

fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

fn app_private_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| parse_private_key(&fixture_text("app_private_pkcs8.pem")).unwrap())
}

fn form_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        "application/x-www-form-urlencoded; charset=utf-8".parse().unwrap(),
    );
    h
}

type Received = Arc<Mutex<Vec<Result<Notification, CallbackError>>>>;

/// The simulator, an adapter pointed at it, and a tiny notify_url receiver that runs
/// `verify_callback` and answers with `answer_callback`, as payledger's callback endpoint does.
struct Harness {
    sim: AlipaySimulator,
    channel: Arc<AlipayChannel>,
    received: Received,
}

#[derive(Clone)]
struct ReceiverState {
    channel: Arc<OnceLock<Arc<AlipayChannel>>>,
    received: Received,
}

async fn receive(State(state): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> Response {
    let channel = state.channel.get().expect("channel set before any payment");
    let result = channel.verify_callback(&headers, &body, Utc::now());
    let answer = channel.answer_callback(result.as_ref().map(|_| ()).map_err(ToString::to_string));
    state.received.lock().unwrap().push(result);
    (
        axum::http::StatusCode::from_u16(answer.status).unwrap(),
        [(axum::http::header::CONTENT_TYPE, answer.content_type)],
        answer.body,
    )
        .into_response()
}

async fn harness_with(app_key: SigningKey) -> Harness {
    let sim = AlipaySimulator::start(APP_ID, app_private_key().public_key().clone())
        .await
        .unwrap();
    let slot = Arc::new(OnceLock::new());
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let notify_url = format!("http://{}/v1/callbacks/alipay", listener.local_addr().unwrap());
    let router = Router::new()
        .route("/v1/callbacks/alipay", post(receive))
        .with_state(ReceiverState {
            channel: slot.clone(),
            received: received.clone(),
        });
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let account = AlipayAccount::new("test", APP_ID, app_key, sim.alipay_public_key(), &notify_url)
        .with_gateway_url(&sim.gateway_url())
        .with_seller_id(SIM_SELLER_ID);
    let channel = Arc::new(AlipayChannel::new(account).unwrap());
    slot.set(channel.clone()).ok().unwrap();
    Harness { sim, channel, received }
}

async fn harness() -> Harness {
    harness_with(app_private_key().clone()).await
}

fn cny(fen: i64) -> Money {
    Money::new(fen, Currency::CNY).unwrap()
}

fn order(method: &str, fen: i64) -> CreateChannelOrder {
    CreateChannelOrder {
        order_id: Uuid::new_v4(),
        amount: cny(fen),
        method: method.to_string(),
        subject: "Coffee 咖啡".to_string(),
        expire_at: Utc::now() + Duration::minutes(30),
        return_url: Some("https://shop.example.com/done?x=1&y=2".to_string()),
        payer_id: None,
        payer_ip: None,
    }
}

fn refund_request(order: &CreateChannelOrder, fen: i64) -> ChannelRefundRequest {
    ChannelRefundRequest {
        order_id: order.order_id,
        refund_id: Uuid::new_v4(),
        channel_trade_no: None,
        amount: cny(fen),
        paid: order.amount,
        reason: Some("customer asked".into()),
    }
}

impl Harness {
    fn last_received(&self) -> Result<Notification, CallbackError> {
        self.received
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a notification arrived")
    }

    /// Places a QR order and has the payer pay it; returns the order.
    async fn paid_qr_order(&self, fen: i64) -> CreateChannelOrder {
        let o = order("qr", fen);
        self.channel.create(&o).await.unwrap();
        let delivery = self.sim.pay(&o.order_id.to_string()).await.unwrap();
        assert!(delivery.acknowledged(), "{delivery:?}");
        o
    }

    /// Verifies a notification body built by the simulator for `order_id` with `faults`.
    fn verify_built(&self, order_id: Uuid, faults: &NotifyFaults) -> Result<Notification, CallbackError> {
        let (_, body) = self.sim.notification(&order_id.to_string(), faults).unwrap();
        self.channel
            .verify_callback(&form_headers(), body.as_bytes(), Utc::now())
    }
}

fn succeeded_amount(n: &Notification) -> Money {
    match n {
        Notification::Payment(p) => match &p.outcome {
            CallbackOutcome::Succeeded { amount, .. } => *amount,
            other => panic!("not a success: {other:?}"),
        },
        other => panic!("not a payment: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Orders and payment notifications

#[tokio::test]
async fn qr_order_paid_at_the_simulator_is_a_verified_payment_with_exact_fen() {
    let h = harness().await;
    let o = order("qr", 1234);
    let placed = h.channel.create(&o).await.unwrap();
    let out_trade_no = o.order_id.hyphenated().to_string();
    assert_eq!(
        placed.qr_code,
        Some(
            h.sim
                .gateway_url()
                .replace("/gateway.do", &format!("/qr/{out_trade_no}"))
        )
    );
    assert_eq!(placed.pay_url, None);
    let trade = h.sim.trade(&out_trade_no).unwrap();
    assert_eq!(trade.total_amount_fen, 1234);
    assert_eq!(trade.created_by, "alipay.trade.precreate");
    assert_eq!(trade.time_expire, Some(format_beijing(o.expire_at)));

    let delivery = h.sim.pay(&out_trade_no).await.unwrap();
    assert_eq!((delivery.status, delivery.answer.as_str()), (200, "success"));
    let Notification::Payment(p) = h.last_received().unwrap() else {
        panic!("a payment notification")
    };
    let trade = h.sim.trade(&out_trade_no).unwrap();
    assert_eq!(p.order_id, o.order_id);
    assert_eq!(p.notify_id, delivery.notify_id);
    assert_eq!(p.channel_trade_no, trade.trade_no);
    let paid_at = trade.paid_at.unwrap();
    assert_eq!(
        p.outcome,
        CallbackOutcome::Succeeded {
            amount: cny(1234),
            paid_at: paid_at - Duration::nanoseconds(i64::from(paid_at.timestamp_subsec_nanos())),
        }
    );
}

#[tokio::test]
async fn placing_the_same_qr_order_twice_gives_the_same_code() {
    let h = harness().await;
    let o = order("qr", 100);
    let first = h.channel.create(&o).await.unwrap();
    assert_eq!(h.channel.create(&o).await.unwrap(), first);
    let mut changed = o.clone();
    changed.amount = cny(101);
    assert!(matches!(
        h.channel.create(&changed).await,
        Err(ChannelError::Rejected { code, .. }) if code == "ACQ.CONTEXT_INCONSISTENT"
    ));
}

#[tokio::test]
async fn page_and_h5_orders_are_signed_gateway_urls_the_cashier_accepts() {
    let h = harness().await;
    for (method, api, product) in [
        ("page", "alipay.trade.page.pay", "FAST_INSTANT_TRADE_PAY"),
        ("h5", "alipay.trade.wap.pay", "QUICK_WAP_WAY"),
    ] {
        let o = order(method, 990);
        let placed = h.channel.create(&o).await.unwrap();
        assert_eq!(placed.qr_code, None);
        let pay_url = url::Url::parse(placed.pay_url.as_deref().unwrap()).unwrap();
        assert!(pay_url.as_str().starts_with(&h.sim.gateway_url()));
        let q: std::collections::HashMap<String, String> = pay_url.query_pairs().into_owned().collect();
        assert_eq!(q["method"], api);
        assert_eq!(q["return_url"], "https://shop.example.com/done?x=1&y=2");
        let biz: serde_json::Value = serde_json::from_str(&q["biz_content"]).unwrap();
        assert_eq!(biz["product_code"], product);
        assert_eq!(biz["total_amount"], "9.90");
        assert_eq!(biz["out_trade_no"], o.order_id.hyphenated().to_string());

        // The payer's browser opens it.
        let page = reqwest::get(pay_url.as_str()).await.unwrap().text().await.unwrap();
        assert!(page.contains("Alipay cashier"), "{page}");
        assert_eq!(h.sim.trade(&o.order_id.to_string()).unwrap().created_by, api);

        h.sim.pay(&o.order_id.to_string()).await.unwrap();
        assert_eq!(succeeded_amount(&h.last_received().unwrap()), cny(990));
    }
}

#[tokio::test]
async fn a_page_url_with_a_changed_amount_is_refused_by_the_gateway() {
    let h = harness().await;
    let o = order("page", 10_000);
    let pay_url = h.channel.create(&o).await.unwrap().pay_url.unwrap();
    let tampered = pay_url.replace("100.00", "1.00");
    assert_ne!(tampered, pay_url);
    let page = reqwest::get(&tampered).await.unwrap().text().await.unwrap();
    assert!(page.contains("isv.invalid-signature"), "{page}");
    assert_eq!(h.sim.refused_requests(), vec!["isv.invalid-signature".to_string()]);
    assert_eq!(h.sim.trade(&o.order_id.to_string()), None);
}

#[tokio::test]
async fn requests_signed_with_another_key_are_refused_with_invalid_signature() {
    let h = harness_with(SimulatorKeys::shared().wrong_private_key.clone()).await;
    let err = h.channel.create(&order("qr", 100)).await.unwrap_err();
    assert!(
        matches!(&err, ChannelError::Rejected { code, .. } if code == "isv.invalid-signature"),
        "{err:?}"
    );
    assert_eq!(h.sim.refused_requests(), vec!["isv.invalid-signature".to_string()]);
}

#[tokio::test]
async fn other_currencies_amounts_and_methods_are_refused_before_calling_alipay() {
    let h = harness().await;
    let mut o = order("qr", 100);
    o.amount = Money::new(100, Currency::USD).unwrap();
    assert!(
        matches!(h.channel.create(&o).await, Err(ChannelError::Rejected { code, .. }) if code == "CURRENCY_NOT_SUPPORTED")
    );
    let o = order("qr", 10_000_000_001);
    assert!(
        matches!(h.channel.create(&o).await, Err(ChannelError::Rejected { code, .. }) if code == "AMOUNT_OUT_OF_RANGE")
    );
    assert!(
        h.channel.create(&order("qr", 10_000_000_000)).await.is_ok(),
        "the limit itself is accepted"
    );
    let o = order("jsapi", 100);
    assert!(
        matches!(h.channel.create(&o).await, Err(ChannelError::Rejected { code, .. }) if code == "METHOD_NOT_SUPPORTED")
    );
    let mut o = order("qr", 100);
    o.subject = "x".repeat(257);
    assert!(
        matches!(h.channel.create(&o).await, Err(ChannelError::Rejected { code, .. }) if code == "SUBJECT_TOO_LONG")
    );
    assert_eq!(h.sim.refused_requests(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Forged and odd notifications

#[tokio::test]
async fn a_tampered_signature_is_refused_and_answered_failure() {
    let h = harness().await;
    let o = order("qr", 500);
    h.channel.create(&o).await.unwrap();
    let faults = NotifyFaults {
        tamper_signature: true,
        ..NotifyFaults::default()
    };
    let delivery = h.sim.pay_with(&o.order_id.to_string(), &faults).await.unwrap();
    assert_eq!((delivery.status, delivery.answer.as_str()), (200, "failure"));
    assert!(!delivery.acknowledged());
    assert_eq!(h.last_received(), Err(CallbackError::BadSignature));
}

#[tokio::test]
async fn a_notification_signed_with_another_key_is_a_bad_signature() {
    let h = harness().await;
    let o = h.paid_qr_order(500).await;
    let faults = NotifyFaults {
        wrong_key: true,
        ..NotifyFaults::default()
    };
    assert_eq!(h.verify_built(o.order_id, &faults), Err(CallbackError::BadSignature));
}

#[tokio::test]
async fn a_changed_parameter_or_missing_sign_is_a_bad_signature() {
    let h = harness().await;
    let o = h.paid_qr_order(500).await;
    let (_, body) = h
        .sim
        .notification(&o.order_id.to_string(), &NotifyFaults::default())
        .unwrap();
    assert!(body.contains("total_amount=5.00"));
    let changed = body.replace("total_amount=5.00", "total_amount=0.05");
    assert_eq!(
        h.channel
            .verify_callback(&form_headers(), changed.as_bytes(), Utc::now()),
        Err(CallbackError::BadSignature)
    );
    let unsigned: String = body
        .split('&')
        .filter(|p| !p.starts_with("sign="))
        .collect::<Vec<_>>()
        .join("&");
    assert_eq!(
        h.channel
            .verify_callback(&form_headers(), unsigned.as_bytes(), Utc::now()),
        Err(CallbackError::BadSignature)
    );
    let rsa1 = body.replace("sign_type=RSA2", "sign_type=RSA");
    assert_eq!(
        h.channel.verify_callback(&form_headers(), rsa1.as_bytes(), Utc::now()),
        Err(CallbackError::BadSignature)
    );
}

#[tokio::test]
async fn a_notification_for_another_app_id_is_malformed() {
    let h = harness().await;
    let o = h.paid_qr_order(500).await;
    let faults = NotifyFaults {
        app_id: Some("2021999999999999".into()),
        ..NotifyFaults::default()
    };
    assert!(matches!(
        h.verify_built(o.order_id, &faults),
        Err(CallbackError::Malformed(m)) if m.contains("app_id")
    ));
}

#[tokio::test]
async fn a_notification_for_another_seller_is_malformed_when_the_seller_is_configured() {
    let h = harness().await;
    let o = h.paid_qr_order(500).await;
    let (_, body) = h
        .sim
        .notification(&o.order_id.to_string(), &NotifyFaults::default())
        .unwrap();
    let other_seller = AlipayChannel::new(h.channel.account().clone().with_seller_id("2088999999999999")).unwrap();
    assert!(matches!(
        other_seller.verify_callback(&form_headers(), body.as_bytes(), Utc::now()),
        Err(CallbackError::Malformed(m)) if m.contains("seller_id")
    ));
    let mut unchecked = h.channel.account().clone();
    unchecked.seller_id = None;
    let unchecked = AlipayChannel::new(unchecked).unwrap();
    assert!(unchecked
        .verify_callback(&form_headers(), body.as_bytes(), Utc::now())
        .is_ok());
}

#[tokio::test]
async fn an_amount_mismatch_is_passed_through_for_the_aggregate_to_judge() {
    let h = harness().await;
    let o = order("qr", 1234);
    h.channel.create(&o).await.unwrap();
    let faults = NotifyFaults {
        total_amount: Some("0.01".into()),
        ..NotifyFaults::default()
    };
    let delivery = h.sim.pay_with(&o.order_id.to_string(), &faults).await.unwrap();
    assert!(delivery.acknowledged());
    assert_eq!(succeeded_amount(&h.last_received().unwrap()), cny(1));
}

#[tokio::test]
async fn a_duplicate_notification_keeps_its_notify_id() {
    let h = harness().await;
    let o = h.paid_qr_order(700).await;
    let first = h.last_received().unwrap();
    let again = h.sim.resend(&o.order_id.to_string()).await.unwrap();
    assert!(again.acknowledged());
    let second = h.last_received().unwrap();
    assert_eq!(second, first, "same notify_id, same content");
    let deliveries = h.sim.deliveries();
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[0].notify_id, deliveries[1].notify_id);
}

#[tokio::test]
async fn notification_amounts_are_exact_yuan_strings_or_refused() {
    let h = harness().await;
    let o = h.paid_qr_order(1230).await;
    for (yuan, fen) in [("0.01", 1), ("12.3", 1230), ("12.30", 1230), ("12", 1200)] {
        let faults = NotifyFaults {
            total_amount: Some(yuan.into()),
            ..NotifyFaults::default()
        };
        assert_eq!(
            succeeded_amount(&h.verify_built(o.order_id, &faults).unwrap()),
            cny(fen),
            "{yuan}"
        );
    }
    for bad in ["12.345", "-1", "1e3", "0.00", " 1", "1,00"] {
        let faults = NotifyFaults {
            total_amount: Some(bad.into()),
            ..NotifyFaults::default()
        };
        assert!(
            matches!(h.verify_built(o.order_id, &faults), Err(CallbackError::Malformed(_))),
            "{bad:?} must be refused"
        );
    }
}

#[tokio::test]
async fn a_notification_outside_the_delivery_window_is_malformed() {
    let h = harness().await;
    let o = h.paid_qr_order(100).await;
    let old = NotifyFaults {
        notify_time: Some(format_beijing(Utc::now() - Duration::hours(49))),
        ..NotifyFaults::default()
    };
    assert!(matches!(
        h.verify_built(o.order_id, &old),
        Err(CallbackError::Malformed(_))
    ));
    let within = NotifyFaults {
        notify_time: Some(format_beijing(Utc::now() - Duration::hours(25))),
        ..NotifyFaults::default()
    };
    assert!(
        h.verify_built(o.order_id, &within).is_ok(),
        "Alipay's last re-send is ~25 h late"
    );
    let future = NotifyFaults {
        notify_time: Some(format_beijing(Utc::now() + Duration::hours(1))),
        ..NotifyFaults::default()
    };
    assert!(matches!(
        h.verify_built(o.order_id, &future),
        Err(CallbackError::Malformed(_))
    ));
}

#[tokio::test]
async fn waiting_and_closed_trades_are_not_payments() {
    let h = harness().await;
    let o = order("qr", 100);
    h.channel.create(&o).await.unwrap();
    h.sim.scan(&o.order_id.to_string()).unwrap();
    // WAIT_BUYER_PAY: nothing to record.
    assert!(matches!(
        h.verify_built(o.order_id, &NotifyFaults::default()),
        Err(CallbackError::Malformed(m)) if m.contains("WAIT_BUYER_PAY")
    ));
    h.channel.close(o.order_id).await.unwrap();
    let Notification::Payment(p) = h.verify_built(o.order_id, &NotifyFaults::default()).unwrap() else {
        panic!("a closed trade is about the payment")
    };
    assert!(matches!(p.outcome, CallbackOutcome::Failed { .. }));
}

#[tokio::test]
async fn a_form_body_that_is_not_a_form_or_repeats_a_field_is_malformed() {
    let h = harness().await;
    let mut json = HeaderMap::new();
    json.insert(axum::http::header::CONTENT_TYPE, "application/json".parse().unwrap());
    assert!(matches!(
        h.channel.verify_callback(&json, b"{}", Utc::now()),
        Err(CallbackError::Malformed(_))
    ));
    assert!(matches!(
        h.channel
            .verify_callback(&form_headers(), b"a=1&a=2&sign=x", Utc::now()),
        Err(CallbackError::Malformed(_))
    ));
    let big = vec![b'a'; 64 * 1024 + 1];
    assert!(matches!(
        h.channel.verify_callback(&form_headers(), &big, Utc::now()),
        Err(CallbackError::Malformed(_))
    ));
}

#[tokio::test]
async fn answers_are_the_plain_words_alipay_reads() {
    let h = harness().await;
    let ok = h.channel.answer_callback(Ok(()));
    assert_eq!(
        (ok.status, ok.content_type, ok.body.as_str()),
        (200, "text/plain", "success")
    );
    let err = h.channel.answer_callback(Err("nope".into()));
    assert_eq!((err.content_type, err.body.as_str()), ("text/plain", "failure"));
}

// ---------------------------------------------------------------------------------------------
// Query, close, refunds

#[tokio::test]
async fn query_reports_not_found_not_paid_paid_and_closed() {
    let h = harness().await;
    let o = order("qr", 1500);
    h.channel.create(&o).await.unwrap();
    assert_eq!(h.channel.query(o.order_id).await, Ok(ChannelPaymentStatus::NotFound));
    h.sim.scan(&o.order_id.to_string()).unwrap();
    assert_eq!(h.channel.query(o.order_id).await, Ok(ChannelPaymentStatus::NotPaid));
    h.channel.close(o.order_id).await.unwrap();
    assert_eq!(h.channel.query(o.order_id).await, Ok(ChannelPaymentStatus::Closed));

    let paid = h.paid_qr_order(1500).await;
    let trade = h.sim.trade(&paid.order_id.to_string()).unwrap();
    let Ok(ChannelPaymentStatus::Paid {
        channel_trade_no,
        amount,
        paid_at,
    }) = h.channel.query(paid.order_id).await
    else {
        panic!("paid")
    };
    assert_eq!((channel_trade_no, amount), (trade.trade_no, cny(1500)));
    assert_eq!(paid_at.timestamp(), trade.paid_at.unwrap().timestamp());
}

#[tokio::test]
async fn closing_a_paid_trade_is_refused_and_an_unscanned_one_is_fine() {
    let h = harness().await;
    let paid = h.paid_qr_order(100).await;
    assert!(matches!(
        h.channel.close(paid.order_id).await,
        Err(ChannelError::Rejected { code, .. }) if code == "ACQ.TRADE_STATUS_ERROR"
    ));
    let unscanned = order("qr", 100);
    h.channel.create(&unscanned).await.unwrap();
    assert_eq!(h.channel.close(unscanned.order_id).await, Ok(()));
}

#[tokio::test]
async fn refund_succeeds_once_per_refund_id_and_can_be_queried() {
    let h = harness().await;
    let o = h.paid_qr_order(1000).await;
    let r = refund_request(&o, 300);
    let expected = ChannelRefundResult::Succeeded {
        channel_refund_no: Some(r.refund_id.hyphenated().to_string()),
    };
    assert_eq!(h.channel.refund(&r).await, Ok(expected.clone()));
    assert_eq!(
        h.channel.refund(&r).await,
        Ok(expected.clone()),
        "fund_change N, confirmed by query"
    );
    let trade = h.sim.trade(&o.order_id.to_string()).unwrap();
    assert_eq!(trade.refunds.values().sum::<i64>(), 300, "refunded once");
    assert_eq!(h.channel.query_refund(o.order_id, r.refund_id).await, Ok(expected));
    assert_eq!(
        h.channel.query_refund(o.order_id, Uuid::new_v4()).await,
        Ok(ChannelRefundResult::Pending),
        "unknown to Alipay: not proven failed"
    );
}

#[tokio::test]
async fn refunding_more_than_paid_fails_and_an_unpaid_trade_cannot_be_refunded() {
    let h = harness().await;
    let o = h.paid_qr_order(1000).await;
    h.channel.refund(&refund_request(&o, 800)).await.unwrap();
    let Ok(ChannelRefundResult::Failed { reason }) = h.channel.refund(&refund_request(&o, 201)).await else {
        panic!("over the paid amount")
    };
    assert!(reason.contains("ACQ.REASON_TRADE_REFUND_FEE_ERR"), "{reason}");

    let unpaid = order("qr", 1000);
    h.channel.create(&unpaid).await.unwrap();
    let Ok(ChannelRefundResult::Failed { reason }) = h.channel.refund(&refund_request(&unpaid, 100)).await else {
        panic!("no trade")
    };
    assert!(reason.contains("ACQ.TRADE_NOT_EXIST"), "{reason}");
    assert!(matches!(
        h.channel.query_refund(unpaid.order_id, Uuid::new_v4()).await,
        Ok(ChannelRefundResult::Failed { .. })
    ));
}

#[tokio::test]
async fn refund_notifications_name_our_refund_id() {
    let h = harness().await;
    let o = h.paid_qr_order(1000).await;
    for (fen, status) in [(400, "TRADE_SUCCESS"), (600, "TRADE_CLOSED")] {
        let r = refund_request(&o, fen);
        h.channel.refund(&r).await.unwrap();
        let delivery = h
            .sim
            .notify_refund(&o.order_id.to_string(), &r.refund_id.to_string())
            .await
            .unwrap();
        assert!(
            delivery.body.contains(&format!("trade_status={status}")),
            "{}",
            delivery.body
        );
        assert!(delivery.acknowledged());
        let Notification::Refund(refund) = h.last_received().unwrap() else {
            panic!("a refund notification")
        };
        assert_eq!((refund.order_id, refund.refund_id), (o.order_id, r.refund_id));
        assert_eq!(refund.notify_id, delivery.notify_id);
        assert_eq!(
            refund.outcome,
            RefundOutcome::Succeeded {
                channel_refund_no: Some(r.refund_id.to_string())
            }
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Responses: signatures and error mapping

#[tokio::test]
async fn a_tampered_unsigned_or_wrong_key_response_is_not_believed() {
    let h = harness().await;
    for (fault, words) in [
        (ResponseFault::TamperSignature, "signature"),
        (ResponseFault::WrongKey, "signature"),
        (ResponseFault::Unsigned, "not signed"),
    ] {
        h.sim.inject(fault.clone());
        let err = h.channel.create(&order("qr", 100)).await.unwrap_err();
        assert!(
            matches!(&err, ChannelError::Unavailable(m) if m.contains(words)),
            "{fault:?}: {err:?}"
        );
    }
    // A refund whose answer cannot be believed is retried, never recorded.
    let o = h.paid_qr_order(100).await;
    h.sim.inject(ResponseFault::TamperSignature);
    assert!(matches!(
        h.channel.refund(&refund_request(&o, 100)).await,
        Err(ChannelError::Unavailable(_))
    ));
}

#[tokio::test]
async fn response_verification_uses_the_raw_node_text() {
    let h = harness().await;
    let keys = SimulatorKeys::shared();
    let node = r#"{"code":"10000",   "msg":"Success","trade_status":"WAIT_BUYER_PAY"}"#;
    let sign = rsa2_sign(&keys.alipay_private_key, node).unwrap();
    let body = format!(r#"{{"alipay_trade_query_response":{node},"sign":"{sign}"}}"#);
    let parsed = h.channel.verify_query_response(&body).unwrap().unwrap();
    assert_eq!(parsed.trade_status.as_deref(), Some("WAIT_BUYER_PAY"));
    // The same JSON value re-serialised is not what was signed.
    let compact = r#"{"code":"10000","msg":"Success","trade_status":"WAIT_BUYER_PAY"}"#;
    let body = format!(r#"{{"alipay_trade_query_response":{compact},"sign":"{sign}"}}"#);
    assert!(matches!(
        h.channel.verify_query_response(&body),
        Err(ChannelError::Unavailable(_))
    ));
    // An unsigned business answer is refused; an unsigned gateway refusal is believed.
    let body =
        r#"{"alipay_trade_query_response":{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST"}}"#;
    assert!(matches!(
        h.channel.verify_query_response(body),
        Err(ChannelError::Unavailable(_))
    ));
    let body = r#"{"error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-app-id"}}"#;
    assert!(matches!(h.channel.verify_query_response(body), Ok(Err(e)) if e.code == "40002"));
}

#[tokio::test]
async fn alipay_failures_are_unavailable_and_refusals_are_rejected() {
    let h = harness().await;
    let o = h.paid_qr_order(1000).await;
    let business = |code: &str, sub_code: &str| ResponseFault::Business {
        code: code.into(),
        sub_code: sub_code.into(),
        sub_msg: "simulated".into(),
    };

    h.sim.inject(business("20000", "isp.unknow-error"));
    assert!(matches!(
        h.channel.query(o.order_id).await,
        Err(ChannelError::Unavailable(_))
    ));
    h.sim.inject(ResponseFault::HttpStatus(502));
    assert!(matches!(h.channel.query(o.order_id).await, Err(ChannelError::Unavailable(m)) if m.contains("502")));
    h.sim.inject(business("40004", "ACQ.SYSTEM_ERROR"));
    assert!(matches!(
        h.channel.refund(&refund_request(&o, 100)).await,
        Err(ChannelError::Unavailable(_))
    ));
    h.sim.inject(business("40004", "aop.ACQ.SYSTEM_ERROR"));
    assert!(matches!(
        h.channel.refund(&refund_request(&o, 100)).await,
        Err(ChannelError::Unavailable(_))
    ));
    h.sim.inject(business("40004", "ACQ.SOMETHING_NEW"));
    assert!(
        matches!(h.channel.refund(&refund_request(&o, 100)).await, Err(ChannelError::Unavailable(m)) if m.contains("unknown")),
        "an unknown refund failure may have moved money: retry, do not record"
    );
    h.sim.inject(business("40004", "ACQ.SELLER_BALANCE_NOT_ENOUGH"));
    assert!(matches!(
        h.channel.refund(&refund_request(&o, 100)).await,
        Ok(ChannelRefundResult::Failed { reason }) if reason.contains("ACQ.SELLER_BALANCE_NOT_ENOUGH")
    ));
    h.sim.inject(business("40004", "ACQ.TRADE_HAS_SUCCESS"));
    assert!(matches!(
        h.channel.create(&order("qr", 100)).await,
        Err(ChannelError::Rejected { code, message }) if code == "ACQ.TRADE_HAS_SUCCESS" && message.contains("simulated")
    ));
    assert_eq!(
        h.sim.trade(&o.order_id.to_string()).unwrap().refunds.len(),
        0,
        "no injected failure moved money"
    );
}

#[tokio::test]
async fn an_unreachable_gateway_is_unavailable() {
    let h = harness().await;
    let account = h
        .channel
        .account()
        .clone()
        .with_gateway_url("http://127.0.0.1:1/gateway.do");
    let channel = AlipayChannel::new(account).unwrap();
    assert!(matches!(
        channel.create(&order("qr", 100)).await,
        Err(ChannelError::Unavailable(_))
    ));
    assert!(matches!(
        channel.query(Uuid::new_v4()).await,
        Err(ChannelError::Unavailable(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// Keys and the signature vector

#[test]
fn every_key_format_alipay_hands_out_loads_the_same_key() {
    let pkcs8 = parse_private_key(&fixture_text("app_private_pkcs8.pem")).unwrap();
    let content = fixture_text("sign_vector_content.txt");
    let signature = rsa2_sign(&pkcs8, &content).unwrap();
    for name in ["app_private_pkcs1.pem", "app_private_pkcs8.b64"] {
        let key = parse_private_key(&fixture_text(name)).unwrap();
        assert_eq!(key.public_key(), pkcs8.public_key(), "{name}");
        assert_eq!(rsa2_sign(&key, &content).unwrap(), signature, "{name}");
    }
    let public = pkcs8.public_key().clone();
    for name in ["app_public_spki.pem", "app_public_pkcs1.pem", "app_public_spki.b64"] {
        assert_eq!(parse_public_key(&fixture_text(name)).unwrap(), public, "{name}");
    }
    // The bare base64 may come wrapped over lines.
    let wrapped: String = fixture_text("app_public_spki.b64")
        .as_bytes()
        .chunks(64)
        .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
        .collect();
    assert_eq!(parse_public_key(&wrapped).unwrap(), public);
}

#[test]
fn short_garbage_and_missing_keys_are_refused_without_echoing_them() {
    assert!(matches!(
        parse_private_key(&fixture_text("short_1024_private.pem")),
        Err(KeyError::TooShort { bits: 1024, .. })
    ));
    assert!(matches!(parse_private_key("not a key"), Err(KeyError::Format { .. })));
    assert!(matches!(
        parse_public_key(&fixture_text("app_private_pkcs8.pem")),
        Err(KeyError::Format { .. })
    ));
    let err = AlipayAccount::from_pem_files(
        "a",
        APP_ID,
        &fixture("missing.pem"),
        &fixture("app_public_spki.pem"),
        "https://x/notify",
    )
    .unwrap_err();
    assert!(matches!(err, KeyError::Io { .. }));
    let secret = fixture_text("app_private_pkcs8.b64");
    let err = parse_public_key(&secret).unwrap_err().to_string();
    assert!(!err.contains(&secret[..40]));
}

#[test]
fn accounts_load_from_files_and_debug_hides_the_private_key() {
    let account = AlipayAccount::from_pem_files(
        "main",
        APP_ID,
        &fixture("app_private_pkcs1.pem"),
        &fixture("app_public_spki.b64"),
        "https://pay.example.com/v1/callbacks/alipay",
    )
    .unwrap();
    assert_eq!(account.gateway_url, "https://openapi.alipay.com/gateway.do");
    let debug = format!("{account:?}");
    assert!(debug.contains("<redacted>") && debug.contains(APP_ID), "{debug}");
    let pkcs8_body = fixture_text("app_private_pkcs8.b64");
    assert!(!debug.contains(&pkcs8_body[30..70]));
    assert!(!debug.contains("BigUint") && !debug.contains("primes"), "{debug}");
}

/// Independent check of our RSA2: OpenSSL signed the fixture content with the fixture key
/// (`openssl dgst -sha256 -sign`); PKCS#1 v1.5 is deterministic, so we must produce the same.
#[test]
fn our_rsa2_signature_matches_openssl_byte_for_byte() {
    let key = parse_private_key(&fixture_text("app_private_pkcs8.pem")).unwrap();
    let content = fixture_text("sign_vector_content.txt");
    let expected = fixture_text("sign_vector_openssl.b64").trim().to_string();
    assert_eq!(rsa2_sign(&key, &content).unwrap(), expected);
    let public = parse_public_key(&fixture_text("app_public_spki.b64")).unwrap();
    assert!(rsa2_verify(&public, &content, &expected));
    assert!(!rsa2_verify(&public, &content.replace("88.88", "88.89"), &expected));
    assert!(!rsa2_verify(&public, &content, "not base64!"));
    assert!(!rsa2_verify(&public, &content, "AAAA"));
}

/// The request the adapter sends carries a `sign` over exactly the documented content.
#[test]
fn request_parameters_are_the_documented_public_parameters_signed() {
    let account = AlipayAccount::new(
        "main",
        APP_ID,
        app_private_key().clone(),
        app_private_key().public_key().clone(),
        "https://pay.example.com/notify",
    );
    let channel = AlipayChannel::new(account).unwrap();
    let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2014, 7, 23, 19, 7, 50).unwrap();
    let params = channel
        .signed_params("alipay.trade.query", r#"{"out_trade_no":"1"}"#, &[], now)
        .unwrap();
    let keys: Vec<&str> = params.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "app_id",
            "biz_content",
            "charset",
            "format",
            "method",
            "notify_url",
            "sign",
            "sign_type",
            "timestamp",
            "version"
        ]
    );
    assert_eq!(params["timestamp"], "2014-07-24 03:07:50");
    assert_eq!(
        (
            params["charset"].as_str(),
            params["sign_type"].as_str(),
            params["version"].as_str()
        ),
        ("utf-8", "RSA2", "1.0")
    );
    let content = format!(
        "app_id={APP_ID}&biz_content={{\"out_trade_no\":\"1\"}}&charset=utf-8&format=JSON&method=alipay.trade.query\
         &notify_url=https://pay.example.com/notify&sign_type=RSA2&timestamp=2014-07-24 03:07:50&version=1.0"
    );
    assert!(rsa2_verify(app_private_key().public_key(), &content, &params["sign"]));
}
