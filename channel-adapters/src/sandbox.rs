//! The sandbox channel: a stand-in payment channel that behaves like a real one.
//!
//! - `create` returns a `pay_url` to payledger's own sandbox page
//!   (`/sandbox/pay/{order_id}?token=<pay token>`); for method `qr`, the same URL is also the
//!   `qr_code` content. The token ([`SandboxChannel::pay_token`]) is what makes the URL
//!   unguessable, as a real channel's pay URL is: order ids are derived from the merchant id and
//!   `out_trade_no`, so without it anyone knowing both could pay or fail the order.
//! - [`SandboxChannel::pay`] is what the page's button does: it POSTs a callback to
//!   `{public_base_url}/v1/callbacks/sandbox`, as a real channel would, with the header
//!   `Sandbox-Signature: v1=<hex HMAC-SHA256(secret, body)>`. The secret is per installation.
//! - Callbacks are JSON ([`SandboxCallback`]); `sent_at` more than
//!   [`CALLBACK_TOLERANCE_SECONDS`] from now is refused, so a captured callback cannot be
//!   replayed later (a replay inside the window is a duplicate `notify_id`: a no-op).
//! - Refunds succeed, except when the reason is exactly [`FAIL_REFUND_REASON`], which the
//!   sandbox refuses (to exercise the failure path).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use payledger_domain::{parse_currency_code, CallbackOutcome, ChannelAccountRef, ChannelOrder, Money};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use crate::{
    CallbackAnswer, CallbackError, Channel, ChannelError, ChannelRefundRequest, ChannelRefundResult,
    CreateChannelOrder, Notification, VerifiedCallback,
};

/// The sandbox's only account, as orders record it.
pub const ACCOUNT_ID: &str = "sandbox";
/// Header carrying the callback signature.
pub const SIGNATURE_HEADER: &str = "Sandbox-Signature";
/// How far a callback's `sent_at` may be from our clock.
pub const CALLBACK_TOLERANCE_SECONDS: i64 = 300;
/// The refund reason that makes the sandbox refuse a refund.
pub const FAIL_REFUND_REASON: &str = "sandbox:fail";
/// Timeout of the callback POST the sandbox sends.
pub const CALLBACK_TIMEOUT_MS: u64 = 10_000;

/// The JSON body of a sandbox callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxCallback {
    /// Unique per notification; a re-sent notification keeps it.
    pub notify_id: String,
    pub order_id: Uuid,
    pub channel_trade_no: String,
    /// `SUCCESS` or `FAIL`.
    pub trade_status: String,
    /// Paid amount, minor units.
    pub amount: i64,
    /// ISO-4217 code.
    pub currency: String,
    pub sent_at: DateTime<Utc>,
}

/// Length of a pay page token ([`SandboxChannel::pay_token`]) in hex characters.
pub const PAY_TOKEN_HEX_LEN: usize = 32;

fn pay_token_input(order_id: Uuid) -> Vec<u8> {
    format!("sandbox-pay-page:{order_id}").into_bytes()
}

/// The sandbox channel.
pub struct SandboxChannel {
    public_base_url: String,
    secret: Vec<u8>,
    http: reqwest::Client,
}

impl SandboxChannel {
    /// A sandbox whose pages and callbacks live under `public_base_url` (no trailing slash, e.g.
    /// `http://127.0.0.1:8080`) and whose callbacks are signed with `secret`.
    pub fn new(public_base_url: &str, secret: &[u8]) -> Self {
        Self {
            public_base_url: public_base_url.trim_end_matches('/').to_string(),
            secret: secret.to_vec(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(CALLBACK_TIMEOUT_MS))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Hex HMAC-SHA256 of `body` with the installation secret.
    pub fn sign(&self, body: &[u8]) -> String {
        hex::encode(self.mac(body).finalize().into_bytes())
    }

    /// The pay page's token of `order_id`: 32 hex characters (128 bits) of
    /// HMAC-SHA256(installation secret, `"sandbox-pay-page:" + order_id`). The page and its POST
    /// refuse a request without it ([`SandboxChannel::verify_pay_token`]).
    pub fn pay_token(&self, order_id: Uuid) -> String {
        let mut hex = hex::encode(self.mac(&pay_token_input(order_id)).finalize().into_bytes());
        hex.truncate(PAY_TOKEN_HEX_LEN);
        hex
    }

    /// Whether `token` is `order_id`'s pay token, compared in constant time.
    pub fn verify_pay_token(&self, order_id: Uuid, token: &str) -> bool {
        let Ok(bytes) = hex::decode(token) else {
            return false;
        };
        bytes.len() * 2 == PAY_TOKEN_HEX_LEN
            && self
                .mac(&pay_token_input(order_id))
                .verify_truncated_left(&bytes)
                .is_ok()
    }

    fn mac(&self, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        mac.update(body);
        mac
    }

    /// The payer pays (`succeed`) or the payment fails: sends the signed callback to
    /// payledger and returns the HTTP status it answered.
    ///
    /// # Errors
    /// [`ChannelError::Unavailable`] when the callback could not be delivered.
    pub async fn pay(
        &self,
        order_id: Uuid,
        amount: Money,
        succeed: bool,
        now: DateTime<Utc>,
    ) -> Result<u16, ChannelError> {
        let callback = SandboxCallback {
            notify_id: Uuid::new_v4().to_string(),
            order_id,
            channel_trade_no: format!("SBX{}", order_id.simple()),
            trade_status: if succeed { "SUCCESS" } else { "FAIL" }.to_string(),
            amount: amount.amount_minor,
            currency: amount.currency.code().to_string(),
            sent_at: now,
        };
        self.send_callback(&callback).await
    }

    /// Sends `callback`, signed, to payledger's callback endpoint; returns the HTTP status.
    ///
    /// # Errors
    /// [`ChannelError::Unavailable`] when it could not be delivered.
    pub async fn send_callback(&self, callback: &SandboxCallback) -> Result<u16, ChannelError> {
        let body = serde_json::to_vec(callback).map_err(|e| ChannelError::Unavailable(e.to_string()))?;
        let response = self
            .http
            .post(format!("{}/v1/callbacks/sandbox", self.public_base_url))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, format!("v1={}", self.sign(&body)))
            .body(body)
            .send()
            .await
            .map_err(|e| ChannelError::Unavailable(format!("callback not delivered: {e}")))?;
        Ok(response.status().as_u16())
    }
}

/// The sandbox: `page` (its pay page) or `qr` (the same page's URL as a QR code), any currency
/// with a minor unit, any amount [`Money`] takes.
pub const CAPABILITIES: crate::Capabilities = crate::Capabilities {
    channel: "sandbox",
    methods: &["page", "qr"],
    currencies: None,
    amount_minor_min: 1,
    amount_minor_max: payledger_domain::AMOUNT_MINOR_MAX,
};

#[async_trait]
impl Channel for SandboxChannel {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    /// The sandbox has one account, `sandbox`, with no channel-side identity.
    fn channel_account(&self) -> ChannelAccountRef {
        ChannelAccountRef {
            id: ACCOUNT_ID.to_string(),
            app_id: None,
            mch_id: None,
        }
    }

    fn capabilities(&self) -> &'static crate::Capabilities {
        &CAPABILITIES
    }

    async fn create(&self, request: &CreateChannelOrder) -> Result<ChannelOrder, ChannelError> {
        let pay_url = format!(
            "{}/sandbox/pay/{}?token={}",
            self.public_base_url,
            request.order_id,
            self.pay_token(request.order_id)
        );
        Ok(ChannelOrder {
            qr_code: (request.method == "qr").then(|| pay_url.clone()),
            pay_url: Some(pay_url),
            channel_ref: Some(format!("SBXP{}", request.order_id.simple())),
        })
    }

    async fn refund(&self, request: &ChannelRefundRequest) -> Result<ChannelRefundResult, ChannelError> {
        if request.reason.as_deref() == Some(FAIL_REFUND_REASON) {
            return Ok(ChannelRefundResult::Failed {
                reason: "sandbox refused the refund as asked".to_string(),
            });
        }
        Ok(ChannelRefundResult::Succeeded {
            channel_refund_no: Some(format!("SBXR{}", request.refund_id.simple())),
        })
    }

    fn verify_callback(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Notification, CallbackError> {
        let header = headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or(CallbackError::BadSignature)?;
        let signature = header
            .strip_prefix("v1=")
            .and_then(|hex_sig| hex::decode(hex_sig).ok())
            .ok_or(CallbackError::BadSignature)?;
        // verify_slice compares in constant time.
        self.mac(body)
            .verify_slice(&signature)
            .map_err(|_| CallbackError::BadSignature)?;

        let cb: SandboxCallback = serde_json::from_slice(body).map_err(|e| CallbackError::Malformed(e.to_string()))?;
        if (now - cb.sent_at).num_seconds().abs() > CALLBACK_TOLERANCE_SECONDS {
            return Err(CallbackError::Malformed(format!(
                "sent_at {} is more than {CALLBACK_TOLERANCE_SECONDS} s from now",
                cb.sent_at
            )));
        }
        if cb.notify_id.is_empty() || cb.channel_trade_no.is_empty() {
            return Err(CallbackError::Malformed("empty notify_id or channel_trade_no".into()));
        }
        let outcome = match cb.trade_status.as_str() {
            "SUCCESS" => {
                let currency =
                    parse_currency_code(&cb.currency).map_err(|e| CallbackError::Malformed(e.to_string()))?;
                let amount = Money::new(cb.amount, currency).map_err(|e| CallbackError::Malformed(e.to_string()))?;
                CallbackOutcome::Succeeded {
                    amount,
                    paid_at: cb.sent_at,
                }
            }
            "FAIL" => CallbackOutcome::Failed {
                reason: "payer's payment failed in the sandbox".to_string(),
            },
            other => return Err(CallbackError::Malformed(format!("unknown trade_status {other:?}"))),
        };
        Ok(Notification::Payment(VerifiedCallback {
            order_id: cb.order_id,
            notify_id: cb.notify_id,
            channel_trade_no: cb.channel_trade_no,
            outcome,
        }))
    }

    fn answer_callback(&self, outcome: Result<(), String>) -> CallbackAnswer {
        match outcome {
            Ok(()) => CallbackAnswer {
                status: 200,
                content_type: "application/json",
                body: r#"{"result":"ok"}"#.to_string(),
            },
            Err(message) => CallbackAnswer {
                status: 400,
                content_type: "application/json",
                body: serde_json::json!({"result": "fail", "message": message}).to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use payledger_domain::Currency;

    fn sandbox() -> SandboxChannel {
        SandboxChannel::new("http://127.0.0.1:1", b"test-secret")
    }

    fn signed(s: &SandboxChannel, cb: &SandboxCallback) -> (http::HeaderMap, Vec<u8>) {
        let body = serde_json::to_vec(cb).unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert(SIGNATURE_HEADER, format!("v1={}", s.sign(&body)).parse().unwrap());
        (headers, body)
    }

    fn callback(now: DateTime<Utc>) -> SandboxCallback {
        SandboxCallback {
            notify_id: "n1".into(),
            order_id: Uuid::nil(),
            channel_trade_no: "SBX1".into(),
            trade_status: "SUCCESS".into(),
            amount: 100,
            currency: "CNY".into(),
            sent_at: now,
        }
    }

    #[test]
    fn a_signed_success_callback_verifies() {
        let s = sandbox();
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let (headers, body) = signed(&s, &callback(now));
        let Notification::Payment(v) = s.verify_callback(&headers, &body, now).unwrap() else {
            panic!("a sandbox callback is about a payment")
        };
        assert_eq!(
            v.outcome,
            CallbackOutcome::Succeeded {
                amount: Money::new(100, Currency::CNY).unwrap(),
                paid_at: now
            }
        );
        assert_eq!(v.notify_id, "n1");
    }

    #[test]
    fn the_pay_token_belongs_to_one_order_and_one_installation() {
        let sandbox = sandbox();
        let order = Uuid::new_v4();
        let token = sandbox.pay_token(order);
        assert_eq!(token.len(), PAY_TOKEN_HEX_LEN);
        assert!(sandbox.verify_pay_token(order, &token));
        assert!(
            !sandbox.verify_pay_token(Uuid::new_v4(), &token),
            "another order's token"
        );
        let other = SandboxChannel::new("http://127.0.0.1:1", b"other-secret");
        assert!(!other.verify_pay_token(order, &token), "another installation's token");
        let flipped = format!("{}{}", if token.starts_with('0') { '1' } else { '0' }, &token[1..]);
        for bad in ["", "zz", &token[..30], &format!("{token}00"), &flipped] {
            assert!(!sandbox.verify_pay_token(order, bad), "{bad:?}");
        }
    }

    #[test]
    fn a_tampered_body_or_other_secret_is_refused() {
        let s = sandbox();
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let (headers, mut body) = signed(&s, &callback(now));
        let last = body.len() - 2;
        body[last] ^= 1;
        assert_eq!(
            s.verify_callback(&headers, &body, now),
            Err(CallbackError::BadSignature)
        );

        let other = SandboxChannel::new("http://127.0.0.1:1", b"other-secret");
        let (headers, body) = signed(&other, &callback(now));
        assert_eq!(
            s.verify_callback(&headers, &body, now),
            Err(CallbackError::BadSignature)
        );
        assert_eq!(
            s.verify_callback(&http::HeaderMap::new(), &body, now),
            Err(CallbackError::BadSignature)
        );
    }

    #[test]
    fn a_stale_callback_is_refused() {
        let s = sandbox();
        let sent = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let (headers, body) = signed(&s, &callback(sent));
        let later = sent + chrono::Duration::seconds(CALLBACK_TOLERANCE_SECONDS + 1);
        assert!(matches!(
            s.verify_callback(&headers, &body, later),
            Err(CallbackError::Malformed(_))
        ));
    }

    #[test]
    fn a_signed_but_malformed_callback_is_refused() {
        let s = sandbox();
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut cb = callback(now);
        cb.amount = -5;
        let (headers, body) = signed(&s, &cb);
        assert!(matches!(
            s.verify_callback(&headers, &body, now),
            Err(CallbackError::Malformed(_))
        ));
        let body = b"{not json";
        let mut headers = http::HeaderMap::new();
        headers.insert(SIGNATURE_HEADER, format!("v1={}", s.sign(body)).parse().unwrap());
        assert!(matches!(
            s.verify_callback(&headers, body, now),
            Err(CallbackError::Malformed(_))
        ));
    }
}
