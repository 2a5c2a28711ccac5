//! The wire protocol round-trips, and a [`RemoteChannel`] over a loopback [`Requester`] that
//! calls [`answer`] behaves as the adapter it reaches (results and errors alike).

use std::sync::Mutex;

use chrono::TimeZone;
use payledger_domain::{CallbackOutcome, Currency, Money, RefundOutcome};

use super::*;
use crate::sandbox::{SandboxCallback, SandboxChannel, SIGNATURE_HEADER};
use crate::{Channels, VerifiedCallback, VerifiedRefundCallback};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 8, 0, 0).unwrap()
}

fn cny(amount_minor: i64) -> Money {
    Money::new(amount_minor, Currency::CNY).unwrap()
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T) {
    let json = serde_json::to_vec(&value).unwrap();
    assert_eq!(
        serde_json::from_slice::<T>(&json).unwrap(),
        value,
        "{}",
        String::from_utf8_lossy(&json)
    );
}

fn create_request() -> CreateChannelOrder {
    CreateChannelOrder {
        order_id: Uuid::from_u128(7),
        amount: cny(1999),
        method: "page".into(),
        subject: "Coffee 咖啡".into(),
        expire_at: now(),
        return_url: Some("https://shop.example/back".into()),
        payer_id: None,
        payer_ip: Some("203.0.113.9".into()),
    }
}

#[test]
fn every_wire_type_round_trips() {
    round_trip(create_request());
    round_trip(ChannelRefundRequest {
        order_id: Uuid::from_u128(7),
        refund_id: Uuid::from_u128(8),
        channel_trade_no: Some("T1".into()),
        amount: cny(500),
        paid: cny(1999),
        reason: None,
    });
    round_trip(OrderRef {
        order_id: Uuid::from_u128(7),
    });
    round_trip(RefundRef {
        order_id: Uuid::from_u128(7),
        refund_id: Uuid::from_u128(8),
    });
    for r in [
        ChannelRefundResult::Succeeded {
            channel_refund_no: Some("R1".into()),
        },
        ChannelRefundResult::Failed { reason: "no".into() },
        ChannelRefundResult::Pending,
    ] {
        round_trip(r);
    }
    for s in [
        ChannelPaymentStatus::NotPaid,
        ChannelPaymentStatus::Paid {
            channel_trade_no: "T1".into(),
            amount: cny(1999),
            paid_at: now(),
        },
        ChannelPaymentStatus::Closed,
        ChannelPaymentStatus::Failed { reason: "x".into() },
        ChannelPaymentStatus::NotFound,
    ] {
        round_trip(s);
    }
    round_trip(Notification::Payment(VerifiedCallback {
        order_id: Uuid::from_u128(7),
        notify_id: "n1".into(),
        channel_trade_no: "T1".into(),
        outcome: CallbackOutcome::Succeeded {
            amount: cny(1999),
            paid_at: now(),
        },
    }));
    round_trip(Notification::Refund(VerifiedRefundCallback {
        order_id: Uuid::from_u128(7),
        refund_id: Uuid::from_u128(8),
        notify_id: "n2".into(),
        outcome: RefundOutcome::Failed {
            reason: "closed".into(),
        },
    }));
    for e in [
        CallbackError::BadSignature,
        CallbackError::Malformed("m".into()),
        CallbackError::Unverified("u".into()),
    ] {
        round_trip(Reply::<Notification, _>::Err(e));
    }
    round_trip(Reply::<ChannelOrder, WireChannelError>::Ok(ChannelOrder::default()));
    let mut headers = http::HeaderMap::new();
    headers.append("wechatpay-signature", "c2ln".parse().unwrap());
    headers.append("x-repeated", "a".parse().unwrap());
    headers.append("x-repeated", "b".parse().unwrap());
    let body = b"{\"id\":\"\xe4\xb8\x80\"}\x00\xff".to_vec();
    let request = CallbackRequest::new(&headers, &body, now());
    round_trip(request.clone());
    assert_eq!(request.decode().unwrap(), (headers, body));
}

#[test]
fn channel_errors_keep_their_kind_across_the_wire() {
    for e in [
        ChannelError::Unavailable("down".into()),
        ChannelError::Timeout("slow".into()),
        ChannelError::Rejected {
            code: "ORDERPAID".into(),
            message: "paid".into(),
        },
        ChannelError::Unsupported {
            channel: "sandbox",
            operation: "query",
        },
    ] {
        let wire = WireChannelError::from(&e);
        round_trip(wire.clone());
        assert_eq!(wire.into_channel_error("sandbox", Operation::Query), e);
    }
    assert_eq!(
        serde_json::to_value(Reply::<(), _>::Err(WireChannelError::Rejected {
            code: "C".into(),
            message: "M".into()
        }))
        .unwrap(),
        serde_json::json!({"err": {"error": "rejected", "code": "C", "message": "M"}})
    );
}

#[test]
fn operations_name_their_subjects() {
    for op in Operation::ALL {
        assert_eq!(Operation::parse(op.as_str()), Some(op));
    }
    assert_eq!(Operation::parse("pay"), None);
    assert_eq!(
        subject(SUBJECT_PREFIX_DEFAULT, "wechatpay", Operation::QueryRefund),
        "payledger.channel.wechatpay.query_refund"
    );
}

/// Answers every request with [`answer`] on `channels` (a channel service without NATS), and
/// records the subjects asked.
struct Loopback {
    channels: Channels,
    subjects: Mutex<Vec<String>>,
}

#[async_trait]
impl Requester for Loopback {
    async fn request(&self, subject: String, payload: Vec<u8>) -> Result<Vec<u8>, RequestError> {
        self.subjects.lock().unwrap().push(subject.clone());
        let mut tokens = subject.rsplitn(3, '.');
        let (op, channel) = (tokens.next().unwrap(), tokens.next().unwrap());
        let account = requested_account(&payload).expect("every request names its account");
        answer(
            self.channels.for_order(channel, Some(&account)).ok(),
            channel,
            Operation::parse(op).unwrap(),
            &payload,
        )
        .await
        .map_err(|e| RequestError::Other(e.to_string()))
    }
}

/// Fails every request with one [`RequestError`].
struct Failing(RequestError);

#[async_trait]
impl Requester for Failing {
    async fn request(&self, _: String, _: Vec<u8>) -> Result<Vec<u8>, RequestError> {
        Err(self.0.clone())
    }
}

fn sandbox() -> Arc<SandboxChannel> {
    Arc::new(SandboxChannel::new("http://127.0.0.1:1", b"test-secret"))
}

fn signed_callback(s: &SandboxChannel, order_id: Uuid) -> (http::HeaderMap, Vec<u8>) {
    let body = serde_json::to_vec(&SandboxCallback {
        notify_id: "n1".into(),
        order_id,
        channel_trade_no: "SBX1".into(),
        trade_status: "SUCCESS".into(),
        amount: 1999,
        currency: "CNY".into(),
        sent_at: now(),
    })
    .unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert(SIGNATURE_HEADER, format!("v1={}", s.sign(&body)).parse().unwrap());
    (headers, body)
}

#[tokio::test]
async fn a_remote_channel_answers_as_the_adapter_it_reaches() {
    let local = Channels::default().with(sandbox());
    let service = Arc::new(Loopback {
        channels: local.local(),
        subjects: Mutex::default(),
    });
    let remote = local.remote(service.clone(), "test.channel");
    let channel = remote.for_new_order("sandbox").unwrap();
    assert_eq!(channel.name(), "sandbox");
    assert_eq!(channel.methods(), local.for_new_order("sandbox").unwrap().methods());

    let request = create_request();
    assert_eq!(
        channel.create(&request).await.unwrap(),
        local.for_new_order("sandbox").unwrap().create(&request).await.unwrap()
    );
    // The sandbox has no queries: Unsupported, named after the channel and operation.
    assert_eq!(
        channel.query(request.order_id).await,
        Err(ChannelError::Unsupported {
            channel: "sandbox",
            operation: "query"
        })
    );
    let (headers, body) = signed_callback(&sandbox(), request.order_id);
    let Notification::Payment(p) = channel.parse_callback(&headers, &body, now()).await.unwrap() else {
        panic!("a payment notification")
    };
    assert_eq!(p.order_id, request.order_id);
    let forged = SandboxChannel::new("http://127.0.0.1:1", b"other-secret");
    let (headers, body) = signed_callback(&forged, request.order_id);
    assert_eq!(
        channel.parse_callback(&headers, &body, now()).await,
        Err(CallbackError::BadSignature)
    );
    assert_eq!(
        *service.subjects.lock().unwrap(),
        [
            "test.channel.sandbox.create",
            "test.channel.sandbox.query",
            "test.channel.sandbox.parse_callback",
            "test.channel.sandbox.parse_callback"
        ]
    );
}

#[tokio::test]
async fn a_channel_not_enabled_at_the_service_is_unavailable() {
    let here = Channels::default().with(sandbox());
    let service = Arc::new(Loopback {
        channels: Channels::default(),
        subjects: Mutex::default(),
    });
    let channel = here.remote(service, "p").for_new_order("sandbox").unwrap();
    assert!(matches!(
        channel.create(&create_request()).await,
        Err(ChannelError::Unavailable(m)) if m.contains("not enabled")
    ));
    let (headers, body) = signed_callback(&sandbox(), Uuid::from_u128(7));
    assert!(matches!(
        channel.parse_callback(&headers, &body, now()).await,
        Err(CallbackError::Unverified(m)) if m.contains("not enabled")
    ));
}

#[tokio::test]
async fn transport_failures_become_timeout_or_unavailable() {
    let here = Channels::default().with(sandbox());
    let get = |e: RequestError| here.remote(Arc::new(Failing(e)), "p").for_new_order("sandbox").unwrap();
    assert!(matches!(
        get(RequestError::Timeout).create(&create_request()).await,
        Err(ChannelError::Timeout(m)) if m.contains("p.sandbox.create")
    ));
    assert!(matches!(
        get(RequestError::NoResponders).refund(&ChannelRefundRequest {
            order_id: Uuid::from_u128(7),
            refund_id: Uuid::from_u128(8),
            channel_trade_no: None,
            amount: cny(1),
            paid: cny(1),
            reason: None,
        }).await,
        Err(ChannelError::Unavailable(m)) if m.contains("no channel service")
    ));
    assert!(matches!(
        get(RequestError::Other("cut".into())).close(Uuid::from_u128(7)).await,
        Err(ChannelError::Unavailable(m)) if m.contains("cut")
    ));
    let (headers, body) = signed_callback(&sandbox(), Uuid::from_u128(7));
    assert!(matches!(
        get(RequestError::Timeout).parse_callback(&headers, &body, now()).await,
        Err(CallbackError::Unverified(_))
    ));
    assert!(ChannelError::Timeout(String::new()).is_retryable());
    assert!(!ChannelError::Rejected {
        code: String::new(),
        message: String::new()
    }
    .is_retryable());
}

#[tokio::test]
async fn a_callback_body_over_the_limit_is_refused_before_it_is_sent() {
    let here = Channels::default().with(sandbox());
    let service = Arc::new(Loopback {
        channels: here.local(),
        subjects: Mutex::default(),
    });
    let channel = here.remote(service.clone(), "p").for_new_order("sandbox").unwrap();
    let headers = http::HeaderMap::new();
    // At the limit it is sent (and refused by the sandbox: no signature).
    let at_limit = vec![b' '; CALLBACK_BODY_BYTES_MAX];
    assert_eq!(
        channel.parse_callback(&headers, &at_limit, now()).await,
        Err(CallbackError::BadSignature)
    );
    let past = vec![b' '; CALLBACK_BODY_BYTES_MAX + 1];
    assert!(matches!(
        channel.parse_callback(&headers, &past, now()).await,
        Err(CallbackError::Malformed(m)) if m.contains("exceeds")
    ));
    assert_eq!(
        service.subjects.lock().unwrap().len(),
        1,
        "the body past the limit was not sent"
    );
}

#[tokio::test]
async fn a_malformed_request_is_a_service_error() {
    let e = answer(Some(sandbox()), "sandbox", Operation::Create, b"{}")
        .await
        .unwrap_err();
    assert_eq!(e.operation, "create");
    let e = answer(None, "alipay", Operation::ParseCallback, b"[]")
        .await
        .unwrap_err();
    assert_eq!(e.operation, "parse_callback");
}

#[tokio::test]
async fn each_request_names_its_account_and_the_service_answers_with_it() {
    use crate::registry::labelled::{account, who};
    use crate::AccountUse;

    let here = Channels::default();
    let legacy_closed = AccountUse {
        new_orders: false,
        legacy: true,
    };
    here.insert_account(account("a", "1"), legacy_closed);
    here.insert(account("b", "2"));
    let service = Arc::new(Loopback {
        channels: here.local(),
        subjects: Mutex::default(),
    });
    let remote = here.remote(service.clone(), "p");
    assert_eq!(who(&remote.for_new_order("wechatpay").unwrap()).await, "b");
    assert_eq!(who(&remote.account("wechatpay", "a").unwrap()).await, "a");
    // The same id with another merchant id here than at the service: never answered by the
    // service's (other) account.
    let elsewhere = Channels::default().with(account("a", "9"));
    let mismatched = elsewhere.remote(service, "p").account("wechatpay", "a").unwrap();
    assert!(matches!(
        mismatched.create(&create_request()).await,
        Err(ChannelError::Unavailable(m)) if m.contains("not enabled")
    ));

    // A request from before accounts names none: the channel's legacy account answers.
    let payload = serde_json::to_vec(&create_request()).unwrap();
    assert_eq!(requested_account(&payload), None);
    let answered = answer(here.legacy("wechatpay").ok(), "wechatpay", Operation::Create, &payload)
        .await
        .unwrap();
    let reply: Reply<ChannelOrder, WireChannelError> = serde_json::from_slice(&answered).unwrap();
    assert_eq!(
        reply,
        Reply::Ok(ChannelOrder {
            channel_ref: Some("a".into()),
            ..ChannelOrder::default()
        })
    );
}
