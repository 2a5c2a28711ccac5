//! Unit tests of the WeChat Pay adapter without HTTP. Keys: WeChat Pay's published test key
//! (`tests/fixtures/wechatpay/`), used here as both the merchant and the platform key.

use super::*;
use crate::rsa_sign::{SigningKey, SigningKeyError};
use crate::wechatpay::sign::{HEADER_NONCE, HEADER_SERIAL, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use crate::wechatpay::types::{
    EncryptedResource, NotificationEnvelope, RefundAmount, RefundResource, TransactionAmount,
};
use crate::VerifiedCallback;
use chrono::TimeZone;
use payledger_domain::{CallbackOutcome, Currency, RefundOutcome};

const DOC_KEY_PKCS1: &str = include_str!("../../tests/fixtures/wechatpay/wechatpay_doc_test_key.pem");
const DOC_KEY_PKCS8: &str = include_str!("../../tests/fixtures/wechatpay/wechatpay_doc_test_key_pkcs8.pem");
const DOC_PUB_SPKI: &str = include_str!("../../tests/fixtures/wechatpay/wechatpay_doc_test_pub.pem");
const API_V3_KEY: &[u8; 32] = b"payledgerTestApiV3Key32BytesLong";
const PLATFORM_SERIAL: &str = "PUB_KEY_ID_0000000000000000000000000001";

fn ids() -> WechatPayIds {
    WechatPayIds {
        account_id: "main".into(),
        app_id: "wxd678efh567hg6787".into(),
        mch_id: "1230000109".into(),
        merchant_serial_no: "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB".into(),
        platform_serial_no: PLATFORM_SERIAL.into(),
        notify_url: "https://pay.example.com/v1/callbacks/wechatpay".into(),
    }
}

fn channel() -> WechatPayChannel {
    WechatPayChannel::new(WechatPayAccount::from_pem(ids(), DOC_KEY_PKCS8, DOC_PUB_SPKI, API_V3_KEY).unwrap())
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 4, 0, 0).unwrap()
}

fn cny(fen: i64) -> Money {
    Money::new(fen, Currency::CNY).unwrap()
}

fn order(method: &str) -> CreateChannelOrder {
    CreateChannelOrder {
        order_id: Uuid::parse_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap(),
        amount: cny(1999),
        method: method.into(),
        subject: "Image形象店-深圳腾大-QQ公仔".into(),
        expire_at: Utc.with_ymd_and_hms(2026, 3, 1, 4, 30, 0).unwrap(),
        return_url: None,
        payer_id: None,
        payer_ip: None,
    }
}

/// Published in WeChat Pay's signature-generation guide with its test key: the JSAPI order of
/// merchant 1230000109 signed at 1554208460 with nonce 593BEC0C930BF1AFEB40B4A08C8FB242.
#[test]
fn request_signature_matches_wechatpay_published_example() {
    let key = SigningKey::from_pem(DOC_KEY_PKCS1).unwrap();
    let body = r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109","description":"Image形象店-深圳腾大-QQ公仔","out_trade_no":"1217752501201407033233368018","notify_url":"https://www.weixin.qq.com/wxpay/pay.php","amount":{"total":100,"currency":"CNY"},"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}"#;
    let message = sign::request_message(
        "POST",
        "/v3/pay/transactions/jsapi",
        1554208460,
        "593BEC0C930BF1AFEB40B4A08C8FB242",
        body.as_bytes(),
    );
    let expected = "gEuexJ547PHFV77TQ6eiE4tphVYfWfUe1Wc2dBmVnoMYU2rl/M4zhw+b3vBhuMw6AC7pteNkryLA7UWU2h+umo0OdSuuLm1++O3NckQPCSfm6dypsjn4GYm84KMqXWFrhFmyxEwIdEJDr3w1UYfxOcu55OQupfLkrt/ZzuOspnliJFrPzGQFUk7lGqMMtpz3EfbDUNxnVsHblORg3hVmuYNmbGWnS2ovU30Y2Q+iKFDxzkaXBk8LTy6HzvxizRo6Q+J4SVM7O0hKXfgo1QdI68kpzNULb3EVBXlhTyPUzhkHzzLxECL1qHl3HH2hEv8++C+4wBlsagF3j/O6PABojA==";
    assert_eq!(sign::sign(&key, &message).unwrap(), expected);
    assert!(sign::verify(key.public_key(), &message, expected));
    let mut altered = message.clone();
    altered[0] = b'G';
    assert!(!sign::verify(key.public_key(), &altered, expected));
}

#[test]
fn keys_load_from_pkcs8_or_pkcs1_pem_and_from_files() {
    let a = WechatPayAccount::from_pem(ids(), DOC_KEY_PKCS1, DOC_PUB_SPKI, API_V3_KEY).unwrap();
    let b = WechatPayAccount::from_pem(ids(), DOC_KEY_PKCS8, DOC_PUB_SPKI, API_V3_KEY).unwrap();
    assert_eq!(a.merchant_private_key.public_key(), b.merchant_private_key.public_key());
    let message = sign::request_message("GET", "/v3/certificates", 1554208460, "N", b"");
    assert_eq!(
        sign::sign(&a.merchant_private_key, &message).unwrap(),
        sign::sign(&b.merchant_private_key, &message).unwrap()
    );
    assert_eq!(a.base_url, DEFAULT_BASE_URL);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wechatpay");
    let c = WechatPayAccount::from_pem_files(
        ids(),
        &dir.join("wechatpay_doc_test_key_pkcs8.pem"),
        &dir.join("wechatpay_doc_test_pub.pem"),
        API_V3_KEY,
    )
    .unwrap();
    assert_eq!(&c.platform_public_key, a.merchant_private_key.public_key());
    assert!(matches!(
        WechatPayAccount::from_pem_files(ids(), &dir.join("missing.pem"), &dir.join("x"), API_V3_KEY),
        Err(AccountError::Io { .. })
    ));
}

#[test]
fn bad_keys_and_wrong_api_v3_key_length_are_refused() {
    assert_eq!(
        WechatPayAccount::from_pem(ids(), "nope", DOC_PUB_SPKI, API_V3_KEY).unwrap_err(),
        AccountError::PrivateKey
    );
    assert_eq!(
        WechatPayAccount::from_pem(ids(), DOC_KEY_PKCS8, DOC_KEY_PKCS8, API_V3_KEY).unwrap_err(),
        AccountError::PublicKey
    );
    // An RSA-1024 key was accepted while `rsa` signed; ring (and WECHATPAY2-SHA256-RSA2048) need
    // 2048 bits, and the error says so.
    let short = include_str!("../../tests/fixtures/alipay/short_1024_private.pem");
    let err = WechatPayAccount::from_pem(ids(), short, DOC_PUB_SPKI, API_V3_KEY).unwrap_err();
    assert_eq!(
        err,
        AccountError::PrivateKeyUnusable(SigningKeyError::TooShort { bits: 1024 })
    );
    assert_eq!(
        err.to_string(),
        "merchant private key cannot sign: 1024-bit RSA key; at least 2048 bits are needed"
    );
    assert_eq!(
        WechatPayAccount::from_pem(ids(), DOC_KEY_PKCS8, DOC_PUB_SPKI, b"short").unwrap_err(),
        AccountError::ApiV3KeyLength(5)
    );
    assert_eq!(
        WechatPayAccount::from_pem(ids(), DOC_KEY_PKCS8, DOC_PUB_SPKI, &[b'k'; 33]).unwrap_err(),
        AccountError::ApiV3KeyLength(33)
    );
    let mut empty = ids();
    empty.mch_id = " ".into();
    assert_eq!(
        WechatPayAccount::from_pem(empty, DOC_KEY_PKCS8, DOC_PUB_SPKI, API_V3_KEY).unwrap_err(),
        AccountError::Empty("mch_id")
    );
}

#[test]
fn debug_output_never_shows_keys() {
    let c = channel();
    let shown = format!("{c:?}");
    assert!(shown.contains("1230000109"));
    assert!(!shown.contains("payledgerTestApiV3Key"));
    assert!(!shown.contains("MII"));
    assert!(!shown.contains("n: BigUint"));
    assert!(shown.contains("<redacted>"));
}

#[test]
fn qr_order_is_a_native_order_with_simple_out_trade_no_and_cst_expiry() {
    let (path, body) = channel().order_request(&order("qr")).unwrap();
    assert_eq!(path, "/v3/pay/transactions/native");
    assert_eq!(body.out_trade_no, "67e5504410b1426f9247bb680e5fe0c8");
    assert_eq!(body.time_expire.as_deref(), Some("2026-03-01T12:30:00+08:00"));
    assert_eq!(body.amount.total, 1999);
    assert_eq!(body.amount.currency, "CNY");
    assert_eq!(body.mchid, "1230000109");
    assert_eq!(body.appid, "wxd678efh567hg6787");
    assert_eq!(body.notify_url, "https://pay.example.com/v1/callbacks/wechatpay");
    assert_eq!((body.payer, body.scene_info), (None, None));
    let json = serde_json::to_value(channel().order_request(&order("qr")).unwrap().1).unwrap();
    assert!(json.get("payer").is_none() && json.get("scene_info").is_none());
}

#[test]
fn h5_order_needs_the_payer_ip() {
    let err = channel().order_request(&order("h5")).unwrap_err();
    assert!(matches!(err, ChannelError::Rejected { ref code, .. } if code == "MISSING_PAYER_IP"));
    let mut o = order("h5");
    o.payer_ip = Some("203.0.113.7".into());
    let (path, body) = channel().order_request(&o).unwrap();
    assert_eq!(path, "/v3/pay/transactions/h5");
    let scene = body.scene_info.unwrap();
    assert_eq!(scene.payer_client_ip, "203.0.113.7");
    assert_eq!(scene.h5_info.unwrap().kind, "Wap");
}

#[test]
fn jsapi_order_needs_the_payer_openid() {
    let mut o = order("jsapi");
    o.payer_id = Some("  ".into());
    let err = channel().order_request(&o).unwrap_err();
    assert!(matches!(err, ChannelError::Rejected { ref code, .. } if code == "MISSING_PAYER_ID"));
    o.payer_id = Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into());
    let (path, body) = channel().order_request(&o).unwrap();
    assert_eq!(path, "/v3/pay/transactions/jsapi");
    assert_eq!(body.payer.unwrap().openid, "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
}

#[test]
fn other_currencies_methods_and_oversized_amounts_are_rejected() {
    let mut o = order("qr");
    o.amount = Money::new(100, Currency::USD).unwrap();
    assert!(
        matches!(channel().order_request(&o), Err(ChannelError::Rejected { code, .. }) if code == "UNSUPPORTED_CURRENCY")
    );
    assert!(
        matches!(channel().order_request(&order("page")), Err(ChannelError::Rejected { code, .. }) if code == "UNSUPPORTED_METHOD")
    );
    let mut o = order("qr");
    o.amount = cny(AMOUNT_FEN_MAX);
    assert!(channel().order_request(&o).is_ok());
    o.amount = cny(AMOUNT_FEN_MAX + 1);
    assert!(
        matches!(channel().order_request(&o), Err(ChannelError::Rejected { code, .. }) if code == "AMOUNT_TOO_LARGE")
    );
}

#[test]
fn long_subjects_are_cut_to_127_bytes_at_a_character_boundary() {
    let mut o = order("qr");
    o.subject = "形".repeat(50);
    let description = channel().order_request(&o).unwrap().1.description;
    assert_eq!(description, "形".repeat(42));
    assert!(description.len() <= DESCRIPTION_BYTES_MAX);
    o.subject = "a".repeat(127);
    assert_eq!(channel().order_request(&o).unwrap().1.description.len(), 127);
}

#[test]
fn callback_answers_204_on_success_and_400_fail_json_otherwise() {
    let c = channel();
    let ok = c.answer_callback(Ok(()));
    assert_eq!((ok.status, ok.body.as_str()), (204, ""));
    let err = c.answer_callback(Err("order not found".into()));
    assert_eq!(err.status, 400);
    let body: serde_json::Value = serde_json::from_str(&err.body).unwrap();
    assert_eq!(body, serde_json::json!({"code": "FAIL", "message": "order not found"}));
}

#[test]
fn refund_statuses_map_to_results() {
    let refund = |status: &str| Refund {
        refund_id: "50000000382019052709732678859".into(),
        out_refund_no: "r".into(),
        transaction_id: None,
        out_trade_no: None,
        user_received_account: None,
        success_time: None,
        create_time: None,
        status: status.into(),
        amount: RefundAmount {
            total: 100,
            refund: 100,
            payer_total: None,
            payer_refund: None,
            currency: Some("CNY".into()),
        },
    };
    assert_eq!(
        refund_result(&refund("SUCCESS")).unwrap(),
        ChannelRefundResult::Succeeded {
            channel_refund_no: Some("50000000382019052709732678859".into())
        }
    );
    assert_eq!(
        refund_result(&refund("PROCESSING")).unwrap(),
        ChannelRefundResult::Pending
    );
    assert!(matches!(
        refund_result(&refund("CLOSED")).unwrap(),
        ChannelRefundResult::Failed { .. }
    ));
    assert!(matches!(
        refund_result(&refund("ABNORMAL")).unwrap(),
        ChannelRefundResult::Failed { .. }
    ));
    assert!(matches!(
        refund_result(&refund("WHAT")),
        Err(ChannelError::Unavailable(_))
    ));
}

#[test]
fn jsapi_pay_params_are_signed_over_four_lines() {
    let c = channel();
    let p = c
        .jsapi_pay_params("wx201410272009395522657a690389285100", 1414561699, "N1")
        .unwrap();
    assert_eq!(p.package, "prepay_id=wx201410272009395522657a690389285100");
    let message = sign::jsapi_pay_message(&p.app_id, 1414561699, "N1", &p.package);
    assert!(sign::verify(&c.account().platform_public_key, &message, &p.pay_sign));
    let json = serde_json::to_value(&p).unwrap();
    assert!(json.get("paySign").is_some() && json.get("timeStamp").is_some());
}

// --- notifications ---------------------------------------------------------------------------

fn transaction(order_id: Uuid) -> Transaction {
    Transaction {
        appid: "wxd678efh567hg6787".into(),
        mchid: "1230000109".into(),
        out_trade_no: WechatPayChannel::channel_id(order_id),
        transaction_id: Some("4200000001202603010000000001".into()),
        trade_type: Some("NATIVE".into()),
        trade_state: "SUCCESS".into(),
        trade_state_desc: Some("支付成功".into()),
        success_time: Some("2026-03-01T11:59:30+08:00".into()),
        payer: Some(Payer { openid: "o1".into() }),
        amount: Some(TransactionAmount {
            total: 1999,
            payer_total: Some(1999),
            currency: "CNY".into(),
            payer_currency: Some("CNY".into()),
        }),
    }
}

/// Builds a notification as WeChat Pay would: encrypted with `API_V3_KEY`, signed with the
/// doc test key under `serial` at `timestamp`.
fn notification(
    event_type: &str,
    resource: &impl Serialize,
    serial: &str,
    timestamp: i64,
) -> (http::HeaderMap, Vec<u8>) {
    let plaintext = serde_json::to_vec(resource).unwrap();
    let envelope = NotificationEnvelope {
        id: "EV-2018022511223320873".into(),
        create_time: "2026-03-01T12:00:00+08:00".into(),
        event_type: event_type.into(),
        resource_type: "encrypt-resource".into(),
        summary: Some("支付成功".into()),
        resource: EncryptedResource {
            original_type: Some("transaction".into()),
            algorithm: "AEAD_AES_256_GCM".into(),
            ciphertext: aead::encrypt(API_V3_KEY, "fdasflkja484", "transaction", &plaintext).unwrap(),
            associated_data: "transaction".into(),
            nonce: "fdasflkja484".into(),
        },
    };
    let body = serde_json::to_vec(&envelope).unwrap();
    let key = SigningKey::from_pem(DOC_KEY_PKCS1).unwrap();
    let ts = timestamp.to_string();
    let signature = sign::sign(&key, &sign::response_message(&ts, "NONCE1", &body)).unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert(HEADER_SERIAL, serial.parse().unwrap());
    headers.insert(HEADER_TIMESTAMP, ts.parse().unwrap());
    headers.insert(HEADER_NONCE, "NONCE1".parse().unwrap());
    headers.insert(HEADER_SIGNATURE, signature.parse().unwrap());
    (headers, body)
}

#[test]
fn a_signed_transaction_success_becomes_a_succeeded_payment_with_the_exact_amount() {
    let order_id = Uuid::new_v4();
    let (headers, body) = notification(
        "TRANSACTION.SUCCESS",
        &transaction(order_id),
        PLATFORM_SERIAL,
        now().timestamp(),
    );
    let n = channel().verify_callback(&headers, &body, now()).unwrap();
    assert_eq!(
        n,
        Notification::Payment(VerifiedCallback {
            order_id,
            notify_id: "EV-2018022511223320873".into(),
            channel_trade_no: "4200000001202603010000000001".into(),
            outcome: CallbackOutcome::Succeeded {
                amount: cny(1999),
                paid_at: Utc.with_ymd_and_hms(2026, 3, 1, 3, 59, 30).unwrap(),
            },
        })
    );
}

#[test]
fn a_tampered_body_missing_headers_or_unknown_serial_is_a_bad_signature() {
    let c = channel();
    let (headers, body) = notification(
        "TRANSACTION.SUCCESS",
        &transaction(Uuid::new_v4()),
        PLATFORM_SERIAL,
        now().timestamp(),
    );
    let mut tampered = body.clone();
    let at = tampered.iter().position(|&b| b == b'E').unwrap();
    tampered[at] = b'F';
    assert_eq!(
        c.verify_callback(&headers, &tampered, now()),
        Err(CallbackError::BadSignature)
    );
    assert_eq!(
        c.verify_callback(&http::HeaderMap::new(), &body, now()),
        Err(CallbackError::BadSignature)
    );
    let (headers, body) = notification(
        "TRANSACTION.SUCCESS",
        &transaction(Uuid::new_v4()),
        "OTHER_SERIAL",
        now().timestamp(),
    );
    assert_eq!(
        c.verify_callback(&headers, &body, now()),
        Err(CallbackError::BadSignature)
    );
}

#[test]
fn a_timestamp_over_five_minutes_away_is_refused_and_one_at_the_limit_accepted() {
    let c = channel();
    let order_id = Uuid::new_v4();
    let at_limit = now().timestamp() - TIMESTAMP_TOLERANCE_SECONDS;
    let (headers, body) = notification("TRANSACTION.SUCCESS", &transaction(order_id), PLATFORM_SERIAL, at_limit);
    assert!(c.verify_callback(&headers, &body, now()).is_ok());
    let (headers, body) = notification(
        "TRANSACTION.SUCCESS",
        &transaction(order_id),
        PLATFORM_SERIAL,
        at_limit - 1,
    );
    assert!(
        matches!(c.verify_callback(&headers, &body, now()), Err(CallbackError::Malformed(m)) if m.contains("Timestamp"))
    );
    for extreme in [i64::MIN, i64::MAX] {
        let (headers, body) = notification("TRANSACTION.SUCCESS", &transaction(order_id), PLATFORM_SERIAL, extreme);
        assert!(matches!(
            c.verify_callback(&headers, &body, now()),
            Err(CallbackError::Malformed(_))
        ));
    }
    let future = now().timestamp() + TIMESTAMP_TOLERANCE_SECONDS + 1;
    let (headers, body) = notification("TRANSACTION.SUCCESS", &transaction(order_id), PLATFORM_SERIAL, future);
    assert!(matches!(
        c.verify_callback(&headers, &body, now()),
        Err(CallbackError::Malformed(_))
    ));
}

#[test]
fn another_merchants_or_apps_notification_is_malformed() {
    let c = channel();
    let mut t = transaction(Uuid::new_v4());
    t.mchid = "1900000001".into();
    let (headers, body) = notification("TRANSACTION.SUCCESS", &t, PLATFORM_SERIAL, now().timestamp());
    assert!(
        matches!(c.verify_callback(&headers, &body, now()), Err(CallbackError::Malformed(m)) if m.contains("mchid"))
    );
    let mut t = transaction(Uuid::new_v4());
    t.appid = "wx0000000000000000".into();
    let (headers, body) = notification("TRANSACTION.SUCCESS", &t, PLATFORM_SERIAL, now().timestamp());
    assert!(
        matches!(c.verify_callback(&headers, &body, now()), Err(CallbackError::Malformed(m)) if m.contains("appid"))
    );
}

#[test]
fn a_payerror_transaction_is_a_failed_payment_and_notpay_is_not_an_outcome() {
    let c = channel();
    let mut t = transaction(Uuid::new_v4());
    t.trade_state = "PAYERROR".into();
    t.trade_state_desc = Some("银行卡余额不足".into());
    let (headers, body) = notification("TRANSACTION.PAYERROR", &t, PLATFORM_SERIAL, now().timestamp());
    let Notification::Payment(p) = c.verify_callback(&headers, &body, now()).unwrap() else {
        panic!("a transaction notification is about a payment")
    };
    assert!(matches!(p.outcome, CallbackOutcome::Failed { reason } if reason.contains("PAYERROR")));
    t.trade_state = "NOTPAY".into();
    let (headers, body) = notification("TRANSACTION.NOTPAY", &t, PLATFORM_SERIAL, now().timestamp());
    assert!(matches!(
        c.verify_callback(&headers, &body, now()),
        Err(CallbackError::Malformed(_))
    ));
}

fn refund_resource(order_id: Uuid, refund_id: Uuid, status: &str) -> RefundResource {
    RefundResource {
        mchid: "1230000109".into(),
        out_trade_no: WechatPayChannel::channel_id(order_id),
        transaction_id: "4200000001202603010000000001".into(),
        out_refund_no: WechatPayChannel::channel_id(refund_id),
        refund_id: "50000000382019052709732678859".into(),
        refund_status: status.into(),
        success_time: Some("2026-03-01T12:00:00+08:00".into()),
        user_received_account: Some("支付用户零钱".into()),
        amount: RefundAmount {
            total: 1999,
            refund: 500,
            payer_total: Some(1999),
            payer_refund: Some(500),
            currency: None,
        },
    }
}

#[test]
fn refund_notifications_become_refund_outcomes() {
    let c = channel();
    let (order_id, refund_id) = (Uuid::new_v4(), Uuid::new_v4());
    let (headers, body) = notification(
        "REFUND.SUCCESS",
        &refund_resource(order_id, refund_id, "SUCCESS"),
        PLATFORM_SERIAL,
        now().timestamp(),
    );
    let Notification::Refund(r) = c.verify_callback(&headers, &body, now()).unwrap() else {
        panic!("a refund notification is about a refund")
    };
    assert_eq!((r.order_id, r.refund_id), (order_id, refund_id));
    assert_eq!(
        r.outcome,
        RefundOutcome::Succeeded {
            channel_refund_no: Some("50000000382019052709732678859".into())
        }
    );
    for status in ["ABNORMAL", "CLOSED"] {
        let (headers, body) = notification(
            &format!("REFUND.{status}"),
            &refund_resource(order_id, refund_id, status),
            PLATFORM_SERIAL,
            now().timestamp(),
        );
        let Notification::Refund(r) = c.verify_callback(&headers, &body, now()).unwrap() else {
            panic!("a refund notification is about a refund")
        };
        assert!(matches!(r.outcome, RefundOutcome::Failed { reason } if reason.starts_with(status)));
    }
    let (headers, body) = notification(
        "REFUND.SUCCESS",
        &refund_resource(order_id, refund_id, "CLOSED"),
        PLATFORM_SERIAL,
        now().timestamp(),
    );
    assert!(matches!(
        c.verify_callback(&headers, &body, now()),
        Err(CallbackError::Malformed(_))
    ));
}

#[test]
fn cst_rfc3339_writes_beijing_time() {
    assert_eq!(
        cst_rfc3339(Utc.with_ymd_and_hms(2018, 6, 8, 2, 34, 56).unwrap()),
        "2018-06-08T10:34:56+08:00"
    );
}
