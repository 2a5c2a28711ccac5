//! Alipay's asynchronous notifications (异步通知), verified and turned into [`Notification`]s.
//!
//! Source: <https://opendocs.alipay.com/open/270/105902> (电脑网站支付结果异步通知; the same
//! parameters for wap.pay and precreate) and <https://opendocs.alipay.com/common/02mse7>
//! (验签). Alipay POSTs `application/x-www-form-urlencoded` with `notify_type=trade_status_sync`,
//! re-sends until the answer body is exactly `success` (8 times within about 25 h), and keeps
//! `notify_id` across re-sends: it is the duplicate key.
//!
//! Decisions, each with its reason:
//! - **Signature first**, over every parameter but `sign` and `sign_type`. Alipay's SDK keeps
//!   empty values in the content, some of its guides drop them; we try the SDK's form and, only
//!   when an empty value is present, the other. Either way every non-empty value is signed.
//!   `sign_type` other than `RSA2` (e.g. legacy SHA-1 `RSA`) is refused as a bad signature.
//! - **Account**: `app_id` must be ours (Alipay's guide: 验证 app_id 是否为该商户本身), else
//!   Malformed; `seller_id` too when [`AlipayAccount::seller_id`] is configured.
//! - **Freshness**: Alipay signs no nonce; it signs `notify_time` (通知的发送时间). Its whole
//!   re-send schedule fits in 25 h, so a `notify_time` more than [`NOTIFY_AGE_SECONDS_MAX`] old, or
//!   more than [`NOTIFY_FUTURE_SECONDS_MAX`] ahead of our clock, cannot be a genuine delivery and is
//!   refused (Malformed). Within the window a replay is a duplicate `notify_id`: a no-op upstream.
//! - **trade_status**: `TRADE_SUCCESS`/`TRADE_FINISHED` → [`CallbackOutcome::Succeeded`] with
//!   `total_amount` in fen and `gmt_payment` as `paid_at` (a later `TRADE_FINISHED`, sent when the
//!   refund period ends, is the same payment under a new `notify_id`, which the aggregate
//!   ignores). `TRADE_CLOSED` → [`CallbackOutcome::Failed`] (unpaid trade closed or expired).
//!   `WAIT_BUYER_PAY` is not a state change we record and is refused as Malformed (Alipay only
//!   sends it when the merchant opts in; the trait has no "acknowledge and ignore").
//! - **Refunds**: a notification carrying `gmt_refund` or `out_biz_no` is about a refund, whatever
//!   its `trade_status` (a partial refund keeps `TRADE_SUCCESS`, a full one makes `TRADE_CLOSED`;
//!   Alipay's FAQ: 退款触发的异步通知中有 refund_fee、gmt_refund). `out_biz_no` is the refund's
//!   `out_request_no`, i.e. our refund id → [`Notification::Refund`] succeeded. A refund made
//!   outside payledger (no UUID in `out_biz_no`) is refused as Malformed.
//! - The amount is passed through as Alipay states it: comparing it with the order is the
//!   aggregate's job (it records a mismatch).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use payledger_domain::{CallbackOutcome, RefundOutcome};
use uuid::Uuid;

use super::account::AlipayAccount;
use super::amount::yuan_to_money;
use super::sign::{notify_sign_content, rsa2_verify, SIGN_TYPE};
use super::types::{parse_beijing, TradeStatus};
use crate::{CallbackError, Notification, VerifiedCallback, VerifiedRefundCallback};

/// The largest notification body we read, in bytes (real ones are about 1–2 KB).
pub const NOTIFY_BODY_BYTES_MAX: usize = 64 * 1024;
/// How old a `notify_time` may be: Alipay's re-sends end after about 25 h.
pub const NOTIFY_AGE_SECONDS_MAX: i64 = 48 * 3600;
/// How far ahead of our clock a `notify_time` may be (clock skew).
pub const NOTIFY_FUTURE_SECONDS_MAX: i64 = 600;
/// `notify_type` of trade notifications.
pub const NOTIFY_TYPE_TRADE: &str = "trade_status_sync";
/// The answer Alipay needs to stop re-sending: exactly these 7 characters.
pub const ANSWER_SUCCESS: &str = "success";
/// Our answer when we could not take the notification; anything else makes Alipay re-send.
pub const ANSWER_FAILURE: &str = "failure";

/// Decodes an `application/x-www-form-urlencoded` body into parameters (`+` is a space).
///
/// # Errors
/// [`CallbackError::Malformed`] for a repeated parameter: which value did Alipay sign?
pub fn parse_form(body: &[u8]) -> Result<BTreeMap<String, String>, CallbackError> {
    let mut params = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if params.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(CallbackError::Malformed(format!("parameter {k} repeated")));
        }
    }
    Ok(params)
}

/// Checks the RSA2 `sign` of notification parameters against Alipay's public key.
///
/// # Errors
/// [`CallbackError::BadSignature`] when `sign` is missing, `sign_type` is not `RSA2`, or the
/// signature does not verify.
pub fn verify_params(account: &AlipayAccount, params: &BTreeMap<String, String>) -> Result<(), CallbackError> {
    let sign = params
        .get("sign")
        .filter(|s| !s.is_empty())
        .ok_or(CallbackError::BadSignature)?;
    if params.get("sign_type").is_some_and(|t| t != SIGN_TYPE) {
        return Err(CallbackError::BadSignature);
    }
    let key = &account.alipay_public_key;
    if rsa2_verify(key, &notify_sign_content(params, false), sign) {
        return Ok(());
    }
    let has_empty = params.values().any(String::is_empty);
    if has_empty && rsa2_verify(key, &notify_sign_content(params, true), sign) {
        return Ok(());
    }
    Err(CallbackError::BadSignature)
}

/// Verifies and parses one notification: see the module documentation for every rule.
///
/// # Errors
/// [`CallbackError::BadSignature`] (unsigned, forged, other key); [`CallbackError::Malformed`]
/// (too large, not a form, other `app_id`/`seller_id`, stale, missing field, unknown status).
pub fn verify_notification(
    account: &AlipayAccount,
    headers: &http::HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Notification, CallbackError> {
    if body.len() > NOTIFY_BODY_BYTES_MAX {
        return Err(CallbackError::Malformed(format!(
            "body of {} bytes exceeds {NOTIFY_BODY_BYTES_MAX}",
            body.len()
        )));
    }
    if let Some(content_type) = headers.get(http::header::CONTENT_TYPE) {
        let is_form = content_type
            .to_str()
            .is_ok_and(|t| t.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
        if !is_form {
            return Err(CallbackError::Malformed("content type is not a form".into()));
        }
    }
    let params = parse_form(body)?;
    verify_params(account, &params)?;

    // Signed from here on; the checks below are about meaning, not origin.
    let field = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let required = |name: &str| field(name).ok_or_else(|| CallbackError::Malformed(format!("{name} missing")));

    if required("app_id")? != account.app_id {
        return Err(CallbackError::Malformed("app_id is not this account's".into()));
    }
    if let Some(seller_id) = &account.seller_id {
        if field("seller_id") != Some(seller_id.as_str()) {
            return Err(CallbackError::Malformed("seller_id is not this account's".into()));
        }
    }
    if required("notify_type")? != NOTIFY_TYPE_TRADE {
        return Err(CallbackError::Malformed("notify_type is not trade_status_sync".into()));
    }
    let notify_time = required("notify_time")?;
    let sent_at = parse_beijing(notify_time)
        .ok_or_else(|| CallbackError::Malformed(format!("notify_time {notify_time:?} is not yyyy-MM-dd HH:mm:ss")))?;
    let age_seconds = (now - sent_at).num_seconds();
    if age_seconds > NOTIFY_AGE_SECONDS_MAX || -age_seconds > NOTIFY_FUTURE_SECONDS_MAX {
        return Err(CallbackError::Malformed(format!(
            "notify_time {notify_time} is outside the accepted window"
        )));
    }
    let notify_id = required("notify_id")?.to_string();
    let channel_trade_no = required("trade_no")?.to_string();
    let out_trade_no = required("out_trade_no")?;
    let order_id = Uuid::parse_str(out_trade_no)
        .map_err(|_| CallbackError::Malformed(format!("out_trade_no {out_trade_no:?} is not a payledger order id")))?;
    let trade_status_text = required("trade_status")?;
    let trade_status = TradeStatus::parse(trade_status_text)
        .ok_or_else(|| CallbackError::Malformed(format!("unknown trade_status {trade_status_text:?}")))?;

    if field("gmt_refund").is_some() || field("out_biz_no").is_some() {
        let out_biz_no = required("out_biz_no")?;
        let refund_id = Uuid::parse_str(out_biz_no)
            .map_err(|_| CallbackError::Malformed(format!("out_biz_no {out_biz_no:?} is not a payledger refund id")))?;
        return Ok(Notification::Refund(VerifiedRefundCallback {
            order_id,
            refund_id,
            notify_id,
            outcome: RefundOutcome::Succeeded {
                channel_refund_no: Some(out_biz_no.to_string()),
            },
        }));
    }

    let outcome = match trade_status {
        TradeStatus::TradeSuccess | TradeStatus::TradeFinished => {
            let total_amount = required("total_amount")?;
            let amount = yuan_to_money(total_amount).map_err(|e| CallbackError::Malformed(e.to_string()))?;
            let gmt_payment = required("gmt_payment")?;
            let paid_at = parse_beijing(gmt_payment)
                .ok_or_else(|| CallbackError::Malformed(format!("gmt_payment {gmt_payment:?} is not a time")))?;
            CallbackOutcome::Succeeded { amount, paid_at }
        }
        TradeStatus::TradeClosed => CallbackOutcome::Failed {
            reason: "Alipay closed the unpaid trade (TRADE_CLOSED)".to_string(),
        },
        TradeStatus::WaitBuyerPay => {
            return Err(CallbackError::Malformed(
                "WAIT_BUYER_PAY is not a payment outcome; nothing to record".into(),
            ))
        }
    };
    Ok(Notification::Payment(VerifiedCallback {
        order_id,
        notify_id,
        channel_trade_no,
        outcome,
    }))
}
