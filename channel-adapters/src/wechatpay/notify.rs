//! Notifications WeChat Pay POSTs to our `notify_url`: verify, decrypt, check, map.
//!
//! Steps, in order (<https://pay.weixin.qq.com/wiki/doc/apiv3/apis/chapter3_4_5.shtml>,
//! refunds <https://pay.weixin.qq.com/wiki/doc/apiv3/apis/chapter3_4_11.shtml>):
//! 1. `Wechatpay-Serial` must name our platform key, and `Wechatpay-Signature` must verify over
//!    `timestamp\nnonce\nbody\n` with it: else [`CallbackError::BadSignature`].
//! 2. `Wechatpay-Timestamp` within [`TIMESTAMP_TOLERANCE_SECONDS`] of now: else
//!    [`CallbackError::Malformed`] (signed, but a replay or a clock far off).
//! 3. The envelope parses, `resource` decrypts with the APIv3 key, and the plaintext names our
//!    `mchid` (and `appid` for payments): else [`CallbackError::Malformed`]. A tag that does not
//!    verify under a valid signature means our APIv3 key is not the one WeChat Pay holds (changed
//!    in the merchant platform?): signed but unusable, so `Malformed`, with that said.
//!
//! Amounts are passed through exactly (fen and currency as WeChat Pay sent them): comparing them
//! with the order is the aggregate's job. Duplicates keep the envelope `id`, our `notify_id`.

use chrono::{DateTime, Utc};
use payledger_domain::{parse_currency_code, CallbackOutcome, Money, RefundOutcome};
use uuid::Uuid;

use super::account::WechatPayAccount;
use super::aead;
use super::sign::SignatureHeaders;
use super::types::{NotificationEnvelope, RefundResource, Transaction};
use crate::{CallbackError, Notification, VerifiedCallback, VerifiedRefundCallback};

/// How far `Wechatpay-Timestamp` may be from our clock, seconds (WeChat Pay's SDKs use 5 min).
pub const TIMESTAMP_TOLERANCE_SECONDS: i64 = 300;
/// `event_type` of a paid transaction.
pub const EVENT_TRANSACTION_SUCCESS: &str = "TRANSACTION.SUCCESS";
/// `event_type` prefix of refund notifications (`REFUND.SUCCESS`, `.ABNORMAL`, `.CLOSED`).
pub const EVENT_REFUND_PREFIX: &str = "REFUND.";
/// The only `resource_type`.
pub const RESOURCE_TYPE: &str = "encrypt-resource";

/// Verifies and parses a notification (see the module docs for the rules).
///
/// # Errors
/// [`CallbackError::BadSignature`] for a missing, unknown-serial or wrong signature;
/// [`CallbackError::Malformed`] for a stale timestamp, bad JSON, a resource that does not decrypt,
/// another merchant's or app's notification, or an event we do not know.
pub fn verify_notification(
    account: &WechatPayAccount,
    headers: &http::HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Notification, CallbackError> {
    let signed = SignatureHeaders::from_headers(headers).ok_or(CallbackError::BadSignature)?;
    if signed.serial != account.platform_serial_no {
        return Err(CallbackError::BadSignature);
    }
    if !signed.verify(&account.platform_public_key, body) {
        return Err(CallbackError::BadSignature);
    }
    let timestamp = signed
        .timestamp_seconds()
        .ok_or_else(|| CallbackError::Malformed("Wechatpay-Timestamp is not an integer".into()))?;
    if now.timestamp().abs_diff(timestamp) > TIMESTAMP_TOLERANCE_SECONDS.unsigned_abs() {
        return Err(CallbackError::Malformed(format!(
            "Wechatpay-Timestamp {timestamp} is more than {TIMESTAMP_TOLERANCE_SECONDS} s from now"
        )));
    }

    let envelope: NotificationEnvelope =
        serde_json::from_slice(body).map_err(|e| CallbackError::Malformed(format!("envelope: {e}")))?;
    if envelope.id.is_empty() {
        return Err(CallbackError::Malformed("empty notification id".into()));
    }
    if envelope.resource_type != RESOURCE_TYPE || envelope.resource.algorithm != aead::ALGORITHM {
        return Err(CallbackError::Malformed(format!(
            "unsupported resource {} / {}",
            envelope.resource_type, envelope.resource.algorithm
        )));
    }
    let plaintext = aead::decrypt(
        &account.api_v3_key,
        &envelope.resource.nonce,
        &envelope.resource.associated_data,
        &envelope.resource.ciphertext,
    )
    .map_err(|e| CallbackError::Malformed(format!("resource does not decrypt with our APIv3 key: {e}")))?;

    if envelope.event_type.starts_with("TRANSACTION.") {
        let transaction: Transaction = serde_json::from_slice(&plaintext)
            .map_err(|e| CallbackError::Malformed(format!("transaction resource: {e}")))?;
        payment(account, envelope.id, transaction).map(Notification::Payment)
    } else if envelope.event_type.starts_with(EVENT_REFUND_PREFIX) {
        let refund: RefundResource = serde_json::from_slice(&plaintext)
            .map_err(|e| CallbackError::Malformed(format!("refund resource: {e}")))?;
        refund_callback(account, &envelope.event_type, envelope.id, refund).map(Notification::Refund)
    } else {
        Err(CallbackError::Malformed(format!(
            "unknown event_type {:?}",
            envelope.event_type
        )))
    }
}

fn payment(account: &WechatPayAccount, notify_id: String, t: Transaction) -> Result<VerifiedCallback, CallbackError> {
    if t.mchid != account.mch_id || t.appid != account.app_id {
        return Err(CallbackError::Malformed(format!(
            "notification for mchid {} / appid {}, not this account",
            t.mchid, t.appid
        )));
    }
    let order_id = parse_id(&t.out_trade_no, "out_trade_no")?;
    let channel_trade_no = t
        .transaction_id
        .clone()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| CallbackError::Malformed("missing transaction_id".into()))?;
    let outcome = match t.trade_state.as_str() {
        "SUCCESS" => CallbackOutcome::Succeeded {
            amount: transaction_amount(&t)?,
            paid_at: parse_time(t.success_time.as_deref(), "success_time")?,
        },
        "PAYERROR" | "CLOSED" | "REVOKED" => CallbackOutcome::Failed {
            reason: format!(
                "{}: {}",
                t.trade_state,
                t.trade_state_desc.as_deref().unwrap_or("payment failed at WeChat Pay")
            ),
        },
        other => {
            return Err(CallbackError::Malformed(format!(
                "trade_state {other:?} is not an outcome"
            )))
        }
    };
    Ok(VerifiedCallback {
        order_id,
        notify_id,
        channel_trade_no,
        outcome,
    })
}

fn refund_callback(
    account: &WechatPayAccount,
    event_type: &str,
    notify_id: String,
    r: RefundResource,
) -> Result<VerifiedRefundCallback, CallbackError> {
    if r.mchid != account.mch_id {
        return Err(CallbackError::Malformed(format!(
            "refund notification for mchid {}, not this account",
            r.mchid
        )));
    }
    if event_type.strip_prefix(EVENT_REFUND_PREFIX) != Some(r.refund_status.as_str()) {
        return Err(CallbackError::Malformed(format!(
            "event_type {event_type} disagrees with refund_status {}",
            r.refund_status
        )));
    }
    let outcome = match r.refund_status.as_str() {
        "SUCCESS" => RefundOutcome::Succeeded {
            channel_refund_no: Some(r.refund_id.clone()),
        },
        "CLOSED" => RefundOutcome::Failed {
            reason: "CLOSED: WeChat Pay closed the refund".into(),
        },
        "ABNORMAL" => RefundOutcome::Failed {
            reason: "ABNORMAL: the refund could not reach the payer (e.g. a cancelled card); \
                     it needs handling in the merchant platform"
                .into(),
        },
        other => return Err(CallbackError::Malformed(format!("unknown refund_status {other:?}"))),
    };
    Ok(VerifiedRefundCallback {
        order_id: parse_id(&r.out_trade_no, "out_trade_no")?,
        refund_id: parse_id(&r.out_refund_no, "out_refund_no")?,
        notify_id,
        outcome,
    })
}

/// The transaction's `amount.total` (the order amount, fen) in its currency.
pub(crate) fn transaction_amount(t: &Transaction) -> Result<Money, CallbackError> {
    let amount = t
        .amount
        .as_ref()
        .ok_or_else(|| CallbackError::Malformed("missing amount".into()))?;
    let currency = parse_currency_code(&amount.currency).map_err(|e| CallbackError::Malformed(e.to_string()))?;
    Money::new(amount.total, currency).map_err(|e| CallbackError::Malformed(e.to_string()))
}

/// Our id sent as `out_trade_no` / `out_refund_no` (simple form; hyphenated accepted too).
pub(crate) fn parse_id(value: &str, field: &str) -> Result<Uuid, CallbackError> {
    Uuid::try_parse(value).map_err(|_| CallbackError::Malformed(format!("{field} {value:?} is not one of our ids")))
}

/// An RFC 3339 time with offset, to UTC.
pub(crate) fn parse_time(value: Option<&str>, field: &str) -> Result<DateTime<Utc>, CallbackError> {
    let value = value.ok_or_else(|| CallbackError::Malformed(format!("missing {field}")))?;
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| CallbackError::Malformed(format!("{field} {value:?}: {e}")))
}
