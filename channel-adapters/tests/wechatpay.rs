//! The WeChat Pay adapter against the simulator, over HTTP both ways: our signed requests to
//! the simulated API, and its signed, encrypted notifications to a receiver that does what
//! payledger's callback endpoint does (`verify_callback`, then `answer_callback`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use payledger_channel_adapters::simulator::wechatpay::{
    test_account, test_wrong_key, AnswerFault, Delivery, NotifyFaults, WechatPaySimulator,
};
use payledger_channel_adapters::wechatpay::{WechatPayAccount, WechatPayChannel};
use payledger_channel_adapters::{
    CallbackError, Channel, ChannelError, ChannelPaymentStatus, ChannelRefundRequest, ChannelRefundResult,
    CreateChannelOrder, Notification, VerifiedCallback,
};
use payledger_domain::{CallbackOutcome, Currency, Money, RefundOutcome};
use tokio::sync::{mpsc, Mutex};
use uuid::Uuid;

type Received = Result<Notification, CallbackError>;

struct Harness {
    sim: WechatPaySimulator,
    channel: Arc<WechatPayChannel>,
    received: Mutex<mpsc::UnboundedReceiver<Received>>,
    _receiver: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Receiver {
    channel: Arc<WechatPayChannel>,
    seen: mpsc::UnboundedSender<Received>,
}

async fn callback(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let verified = r.channel.verify_callback(&headers, &body, Utc::now());
    let answer = r
        .channel
        .answer_callback(verified.as_ref().map(|_| ()).map_err(|e| e.to_string()));
    let _ = r.seen.send(verified);
    (
        StatusCode::from_u16(answer.status).unwrap(),
        [(http::header::CONTENT_TYPE, answer.content_type)],
        answer.body,
    )
}

impl Harness {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let notify_url = format!("http://{}/v1/callbacks/wechatpay", listener.local_addr().unwrap());
        let (sim, account) = WechatPaySimulator::start_with_test_account(&notify_url).await.unwrap();
        let channel = Arc::new(WechatPayChannel::new(account));
        let (seen, received) = mpsc::unbounded_channel();
        let app = Router::new()
            .route("/v1/callbacks/wechatpay", post(callback))
            .with_state(Receiver {
                channel: channel.clone(),
                seen,
            });
        let receiver = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            sim,
            channel,
            received: Mutex::new(received),
            _receiver: receiver,
        }
    }

    async fn next_notification(&self) -> Received {
        tokio::time::timeout(std::time::Duration::from_secs(10), self.received.lock().await.recv())
            .await
            .expect("a notification arrives")
            .expect("the receiver is running")
    }

    /// Places a paid-to-be `qr` order of `fen` and returns its id and `out_trade_no`.
    async fn placed(&self, fen: i64) -> (Uuid, String) {
        let order = order("qr", fen);
        self.channel.create(&order).await.unwrap();
        (order.order_id, WechatPayChannel::channel_id(order.order_id))
    }

    async fn paid(&self, fen: i64) -> (Uuid, String) {
        let (order_id, out_trade_no) = self.placed(fen).await;
        assert_eq!(self.sim.pay(&out_trade_no).await.unwrap().status, 204);
        assert!(self.next_notification().await.is_ok());
        (order_id, out_trade_no)
    }

    async fn pay_forged(&self, faults: NotifyFaults) -> (Delivery, Received) {
        let (_, out_trade_no) = self.placed(1999).await;
        let delivery = self.sim.pay_with(&out_trade_no, &faults).await.unwrap();
        (delivery, self.next_notification().await)
    }
}

fn cny(fen: i64) -> Money {
    Money::new(fen, Currency::CNY).unwrap()
}

fn order(method: &str, fen: i64) -> CreateChannelOrder {
    CreateChannelOrder {
        order_id: Uuid::new_v4(),
        amount: cny(fen),
        method: method.into(),
        subject: "payledger test order".into(),
        expire_at: Utc::now() + chrono::Duration::minutes(30),
        return_url: None,
        payer_id: None,
        payer_ip: None,
    }
}

fn refund_request(order_id: Uuid, fen: i64, paid: i64) -> ChannelRefundRequest {
    ChannelRefundRequest {
        order_id,
        refund_id: Uuid::new_v4(),
        channel_trade_no: None,
        amount: cny(fen),
        paid: cny(paid),
        reason: Some("customer asked".into()),
    }
}

#[tokio::test]
async fn a_paid_qr_order_notifies_a_succeeded_payment_with_the_exact_amount() {
    let h = Harness::start().await;
    let o = order("qr", 1999);
    let created = h.channel.create(&o).await.unwrap();
    assert!(created.qr_code.unwrap().starts_with("weixin://wxpay/bizpayurl?pr="));
    let out_trade_no = WechatPayChannel::channel_id(o.order_id);
    assert_eq!(out_trade_no.len(), 32);
    assert_eq!(
        h.channel.query(o.order_id).await.unwrap(),
        ChannelPaymentStatus::NotPaid
    );

    let delivery = h.sim.pay(&out_trade_no).await.unwrap();
    assert_eq!(delivery.status, 204);
    let Notification::Payment(p) = h.next_notification().await.unwrap() else {
        panic!("TRANSACTION.SUCCESS is about a payment")
    };
    let t = h.sim.order(&out_trade_no).unwrap();
    let transaction_id = t.transaction_id.unwrap();
    let paid_at = chrono::DateTime::parse_from_rfc3339(&t.success_time.unwrap())
        .unwrap()
        .to_utc();
    assert_eq!(
        p,
        VerifiedCallback {
            order_id: o.order_id,
            notify_id: delivery.notification.id.clone(),
            channel_trade_no: transaction_id.clone(),
            outcome: CallbackOutcome::Succeeded {
                amount: cny(1999),
                paid_at,
            },
        }
    );
    assert_eq!(
        h.channel.query(o.order_id).await.unwrap(),
        ChannelPaymentStatus::Paid {
            channel_trade_no: transaction_id,
            amount: cny(1999),
            paid_at,
        }
    );
}

#[tokio::test]
async fn h5_and_jsapi_orders_return_their_urls_and_prepay_id() {
    let h = Harness::start().await;
    let mut o = order("h5", 100);
    o.payer_ip = Some("203.0.113.9".into());
    let created = h.channel.create(&o).await.unwrap();
    assert!(created.pay_url.unwrap().starts_with("https://wx.tenpay.com/"));

    let mut o = order("jsapi", 100);
    o.payer_id = Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into());
    let created = h.channel.create(&o).await.unwrap();
    let prepay_id = created.channel_ref.unwrap();
    assert!(prepay_id.starts_with("wx"));
    // The same out_trade_no with the same parameters answers the same prepay.
    assert_eq!(h.channel.create(&o).await.unwrap().channel_ref.unwrap(), prepay_id);
    assert_eq!(
        h.sim
            .order(&WechatPayChannel::channel_id(o.order_id))
            .unwrap()
            .payer
            .unwrap()
            .openid,
        "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
    );
}

#[tokio::test]
async fn query_and_close_follow_the_order_at_wechat_pay() {
    let h = Harness::start().await;
    assert_eq!(
        h.channel.query(Uuid::new_v4()).await.unwrap(),
        ChannelPaymentStatus::NotFound
    );
    let (order_id, out_trade_no) = h.placed(300).await;
    h.channel.close(order_id).await.unwrap();
    assert_eq!(h.sim.order(&out_trade_no).unwrap().trade_state, "CLOSED");
    assert_eq!(h.channel.query(order_id).await.unwrap(), ChannelPaymentStatus::Closed);
    assert!(matches!(
        h.channel.close(Uuid::new_v4()).await,
        Err(ChannelError::Rejected { code, .. }) if code == "ORDER_NOT_EXIST"
    ));

    let (paid_order, _) = h.paid(300).await;
    assert!(matches!(
        h.channel.close(paid_order).await,
        Err(ChannelError::Rejected { code, .. }) if code == "ORDERPAID"
    ));
}

#[tokio::test]
async fn a_refund_is_pending_until_refund_success_is_notified() {
    let h = Harness::start().await;
    let (order_id, out_trade_no) = h.paid(1999).await;
    let request = refund_request(order_id, 500, 1999);
    assert_eq!(h.channel.refund(&request).await.unwrap(), ChannelRefundResult::Pending);
    assert_eq!(
        h.channel.query_refund(order_id, request.refund_id).await.unwrap(),
        ChannelRefundResult::Pending
    );
    // The same refund_id again refunds once.
    assert_eq!(h.channel.refund(&request).await.unwrap(), ChannelRefundResult::Pending);

    let out_refund_no = WechatPayChannel::channel_id(request.refund_id);
    let delivery = h
        .sim
        .complete_refund(&out_refund_no, "SUCCESS", &NotifyFaults::default())
        .await
        .unwrap();
    assert_eq!(delivery.status, 204);
    let refund_id = h.sim.refund(&out_refund_no).unwrap().refund_id;
    let Notification::Refund(r) = h.next_notification().await.unwrap() else {
        panic!("REFUND.SUCCESS is about a refund")
    };
    assert_eq!((r.order_id, r.refund_id), (order_id, request.refund_id));
    assert_eq!(r.notify_id, delivery.notification.id);
    assert_eq!(
        r.outcome,
        RefundOutcome::Succeeded {
            channel_refund_no: Some(refund_id.clone())
        }
    );
    assert_eq!(
        h.channel.query_refund(order_id, request.refund_id).await.unwrap(),
        ChannelRefundResult::Succeeded {
            channel_refund_no: Some(refund_id)
        }
    );
    assert_eq!(h.sim.order(&out_trade_no).unwrap().trade_state, "REFUND");
    assert!(matches!(
        h.channel.query(order_id).await.unwrap(),
        ChannelPaymentStatus::Paid { .. }
    ));
}

#[tokio::test]
async fn refunds_over_the_paid_amount_or_of_unknown_refunds_are_rejected() {
    let h = Harness::start().await;
    let (order_id, _) = h.paid(1000).await;
    assert_eq!(
        h.channel.refund(&refund_request(order_id, 600, 1000)).await.unwrap(),
        ChannelRefundResult::Pending
    );
    assert!(matches!(
        h.channel.refund(&refund_request(order_id, 401, 1000)).await,
        Err(ChannelError::Rejected { code, .. }) if code == "INVALID_REQUEST"
    ));
    assert_eq!(
        h.channel.refund(&refund_request(order_id, 400, 1000)).await.unwrap(),
        ChannelRefundResult::Pending
    );
    assert!(matches!(
        h.channel.query_refund(order_id, Uuid::new_v4()).await,
        Err(ChannelError::Rejected { code, .. }) if code == "RESOURCE_NOT_EXISTS"
    ));
}

#[tokio::test]
async fn abnormal_and_closed_refunds_are_notified_as_failed() {
    let h = Harness::start().await;
    let (order_id, _) = h.paid(1000).await;
    for status in ["ABNORMAL", "CLOSED"] {
        let request = refund_request(order_id, 100, 1000);
        h.channel.refund(&request).await.unwrap();
        let out_refund_no = WechatPayChannel::channel_id(request.refund_id);
        h.sim
            .complete_refund(&out_refund_no, status, &NotifyFaults::default())
            .await
            .unwrap();
        let Notification::Refund(r) = h.next_notification().await.unwrap() else {
            panic!("REFUND.* is about a refund")
        };
        assert!(matches!(r.outcome, RefundOutcome::Failed { reason } if reason.starts_with(status)));
        assert!(matches!(
            h.channel.query_refund(order_id, request.refund_id).await.unwrap(),
            ChannelRefundResult::Failed { .. }
        ));
    }
}

#[tokio::test]
async fn tampered_or_wrong_key_signatures_and_unknown_serials_are_refused_with_400() {
    let h = Harness::start().await;
    for faults in [
        NotifyFaults {
            tamper_signature: true,
            ..NotifyFaults::default()
        },
        NotifyFaults {
            wrong_key: true,
            ..NotifyFaults::default()
        },
        NotifyFaults {
            serial_no: Some("PUB_KEY_ID_9999".into()),
            ..NotifyFaults::default()
        },
    ] {
        let (delivery, received) = h.pay_forged(faults.clone()).await;
        assert_eq!(received, Err(CallbackError::BadSignature), "{faults:?}");
        assert_eq!(delivery.status, 400);
    }
}

#[tokio::test]
async fn stale_or_replayed_timestamps_are_refused() {
    let h = Harness::start().await;
    for offset in [-301, 301, -3600] {
        let (delivery, received) = h
            .pay_forged(NotifyFaults {
                timestamp_offset_seconds: offset,
                ..NotifyFaults::default()
            })
            .await;
        assert!(
            matches!(received, Err(CallbackError::Malformed(ref m)) if m.contains("Timestamp")),
            "{offset}"
        );
        assert_eq!(delivery.status, 400);
    }
}

#[tokio::test]
async fn another_merchants_or_apps_notifications_and_bad_aes_tags_are_malformed() {
    let h = Harness::start().await;
    for (faults, says) in [
        (
            NotifyFaults {
                mchid: Some("1900000001".into()),
                ..NotifyFaults::default()
            },
            "mchid",
        ),
        (
            NotifyFaults {
                appid: Some("wx0000000000000000".into()),
                ..NotifyFaults::default()
            },
            "appid",
        ),
        (
            NotifyFaults {
                bad_aes_tag: true,
                ..NotifyFaults::default()
            },
            "decrypt",
        ),
    ] {
        let (delivery, received) = h.pay_forged(faults).await;
        assert!(
            matches!(received, Err(CallbackError::Malformed(ref m)) if m.contains(says)),
            "{received:?}"
        );
        assert_eq!(delivery.status, 400);
    }
}

#[tokio::test]
async fn an_amount_other_than_the_orders_is_passed_through_for_the_aggregate_to_judge() {
    let h = Harness::start().await;
    let (delivery, received) = h
        .pay_forged(NotifyFaults {
            amount_total: Some(1),
            ..NotifyFaults::default()
        })
        .await;
    assert_eq!(delivery.status, 204);
    let Ok(Notification::Payment(p)) = received else {
        panic!("a signed payment notification verifies: {received:?}")
    };
    assert!(matches!(p.outcome, CallbackOutcome::Succeeded { amount, .. } if amount == cny(1)));
}

#[tokio::test]
async fn a_redelivered_notification_keeps_its_notify_id() {
    let h = Harness::start().await;
    let (_, out_trade_no) = h.placed(800).await;
    let first = h.sim.pay(&out_trade_no).await.unwrap();
    let Notification::Payment(a) = h.next_notification().await.unwrap() else {
        panic!("a payment")
    };
    let again = h.sim.redeliver(&first).await.unwrap();
    assert_eq!(again.status, 204);
    assert_ne!(again.notification.headers, first.notification.headers);
    let Notification::Payment(b) = h.next_notification().await.unwrap() else {
        panic!("a payment")
    };
    assert_eq!(a.notify_id, b.notify_id);
    assert_eq!(a, b);
}

#[tokio::test]
async fn notifications_built_without_http_verify_directly() {
    let h = Harness::start().await;
    let (order_id, out_trade_no) = h.placed(42).await;
    let mut t = h.sim.order(&out_trade_no).unwrap();
    t.trade_state = "SUCCESS".into();
    t.transaction_id = Some("4200000000000000000000000042".into());
    t.success_time = Some("2026-03-01T12:00:00+08:00".into());
    let n = h
        .sim
        .notifications()
        .transaction("EV-1", "TRANSACTION.SUCCESS", &t, Utc::now(), &NotifyFaults::default());
    let Notification::Payment(p) = h.channel.verify_callback(&n.headers, &n.body, Utc::now()).unwrap() else {
        panic!("a payment")
    };
    assert_eq!((p.order_id, p.notify_id.as_str()), (order_id, "EV-1"));
}

#[tokio::test]
async fn unverifiable_or_failed_answers_are_unavailable_not_rejections() {
    let h = Harness::start().await;
    for fault in [AnswerFault::Unsigned, AnswerFault::WrongKey, AnswerFault::ServerError] {
        h.sim.set_answer_fault(Some(fault));
        assert!(
            matches!(
                h.channel.create(&order("qr", 100)).await,
                Err(ChannelError::Unavailable(_))
            ),
            "{fault:?}"
        );
    }
    h.sim.set_answer_fault(None);
    assert!(h.channel.create(&order("qr", 100)).await.is_ok());
}

#[tokio::test]
async fn requests_signed_with_another_merchant_key_are_refused_with_sign_error() {
    let h = Harness::start().await;
    let good = h.channel.account().clone();
    let forged = WechatPayAccount {
        merchant_private_key: test_wrong_key().clone(),
        ..good
    };
    let channel = WechatPayChannel::new(forged);
    assert!(matches!(
        channel.create(&order("qr", 100)).await,
        Err(ChannelError::Rejected { code, .. }) if code == "SIGN_ERROR"
    ));
    assert_eq!(h.sim.requests_refused(), 1);
}

#[tokio::test]
async fn an_unreachable_wechat_pay_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let channel = WechatPayChannel::new(test_account(&closed, "https://example.com/notify"));
    assert!(matches!(
        channel.create(&order("qr", 100)).await,
        Err(ChannelError::Unavailable(_))
    ));
}
