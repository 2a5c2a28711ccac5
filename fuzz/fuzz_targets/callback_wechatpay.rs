//! `POST /v1/callbacks/wechatpay`: WeChat Pay API v3 notifications through
//! `Channel::verify_callback`, at three depths:
//! 1. arbitrary signature headers and body (the header parsing and the signature check);
//! 2. an arbitrary body signed with the platform key (the envelope's JSON);
//! 3. a signed, well-formed envelope whose resource is arbitrary plaintext encrypted with the
//!    APIv3 key (the decrypted transaction / refund JSON and its mapping to a notification).
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use chrono::Utc;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use payledger_channel_adapters::rsa_sign::SigningKey;
use payledger_channel_adapters::wechatpay::sign::{
    response_message, sign, HEADER_NONCE, HEADER_SERIAL, HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
use payledger_channel_adapters::wechatpay::{aead, WechatPayAccount, WechatPayChannel, WechatPayIds};
use payledger_channel_adapters::Channel;

const API_V3_KEY: &[u8; 32] = b"fuzz-apiv3-key-0123456789abcdef!";
const SERIAL: &str = "FUZZSERIAL";
const NONCE: &str = "fuzznonce123";

struct Fixture {
    key: SigningKey,
    channel: WechatPayChannel,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    // The 2048-bit Alipay fixture key (a 1024-bit one was used while `rsa` signed; ring, which
    // signs now, refuses keys under 2048 bits). No parsing step depends on the key's size.
    FIXTURE.get_or_init(|| {
        let pem = include_str!("../../channel-adapters/tests/fixtures/alipay/app_private_pkcs8.pem");
        let key = SigningKey::from_pem(pem).expect("fixture key");
        let ids = WechatPayIds {
            account_id: "fuzz".into(),
            app_id: "wxfuzz".into(),
            mch_id: "1900000001".into(),
            merchant_serial_no: "MERCHANT".into(),
            platform_serial_no: SERIAL.into(),
            notify_url: "https://example.com/v1/callbacks/wechatpay".into(),
        };
        let account = WechatPayAccount::new(ids, key.clone(), key.public_key().clone(), API_V3_KEY).expect("account");
        Fixture {
            key,
            channel: WechatPayChannel::new(account),
        }
    })
}

#[derive(Debug, Arbitrary)]
enum Input<'a> {
    Raw {
        serial: &'a str,
        signature: &'a str,
        timestamp: &'a str,
        nonce: &'a str,
        body: &'a [u8],
    },
    SignedBody(&'a [u8]),
    SignedResource {
        event_type: EventType<'a>,
        associated_data: &'a str,
        plaintext: &'a [u8],
    },
}

#[derive(Debug, Arbitrary)]
enum EventType<'a> {
    TransactionSuccess,
    RefundSuccess,
    RefundAbnormal,
    Other(&'a str),
}

fn headers(serial: &str, signature: &str, timestamp: &str, nonce: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (HEADER_SERIAL, serial),
        (HEADER_SIGNATURE, signature),
        (HEADER_TIMESTAMP, timestamp),
        (HEADER_NONCE, nonce),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    headers
}

fn signed(body: &[u8]) -> HeaderMap {
    let timestamp = Utc::now().timestamp().to_string();
    let signature = sign(&fixture().key, &response_message(&timestamp, NONCE, body)).expect("sign");
    headers(SERIAL, &signature, &timestamp, NONCE)
}

fuzz_target!(|input: Input<'_>| {
    let f = fixture();
    let (headers, body) = match input {
        Input::Raw {
            serial,
            signature,
            timestamp,
            nonce,
            body,
        } => {
            let result = f
                .channel
                .verify_callback(&headers(serial, signature, timestamp, nonce), body, Utc::now());
            assert!(result.is_err(), "an unsigned notification was accepted");
            return;
        }
        Input::SignedBody(body) => (signed(body), body.to_vec()),
        Input::SignedResource {
            event_type,
            associated_data,
            plaintext,
        } => {
            let event_type = match event_type {
                EventType::TransactionSuccess => "TRANSACTION.SUCCESS",
                EventType::RefundSuccess => "REFUND.SUCCESS",
                EventType::RefundAbnormal => "REFUND.ABNORMAL",
                EventType::Other(s) => s,
            };
            let Ok(ciphertext) = aead::encrypt(API_V3_KEY, NONCE, associated_data, plaintext) else {
                return;
            };
            let body = serde_json::json!({
                "id": "EV-FUZZ",
                "create_time": "2026-11-21T10:00:00+08:00",
                "event_type": event_type,
                "resource_type": "encrypt-resource",
                "resource": {
                    "algorithm": "AEAD_AES_256_GCM",
                    "ciphertext": ciphertext,
                    "associated_data": associated_data,
                    "nonce": NONCE,
                },
            })
            .to_string()
            .into_bytes();
            (signed(&body), body)
        }
    };
    let result = f.channel.verify_callback(&headers, &body, Utc::now());
    let _ = f.channel.answer_callback(result.map(|_| ()).map_err(|e| e.to_string()));
});
