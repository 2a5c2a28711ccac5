//! WeChat Pay API v3 (direct merchant): Native (`qr`), H5 (`h5`) and JSAPI (`jsapi`) payments,
//! query, close, refunds and notifications.
//!
//! - [`WechatPayChannel`] implements [`Channel`] as `"wechatpay"`.
//! - [`WechatPayAccount`]: ids, the merchant private key, the platform public key, the APIv3 key.
//! - [`sign`]: request and answer signatures; [`aead`]: `AEAD_AES_256_GCM` of notification
//!   resources; [`notify`]: notification checks; [`types`]: the JSON bodies.
//!
//! Our `order_id` is sent as `out_trade_no` and our `refund_id` as `out_refund_no`, both in
//! simple form (32 hex digits: WeChat Pay allows 6–32 characters). Amounts are fen (CNY minor
//! units), exactly our [`Money::amount_minor`]; other currencies are refused.
//!
//! API reference: <https://pay.weixin.qq.com/wiki/doc/apiv3/apis/index.shtml> (Native
//! `chapter3_4_*`, H5 `chapter3_2_*`, JSAPI `chapter3_1_*`).

pub mod account;
pub mod aead;
mod client;
pub mod notify;
pub mod sign;
pub mod types;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use payledger_domain::{ChannelAccountRef, ChannelOrder, Money};
use serde::Serialize;
use uuid::Uuid;

pub use account::{AccountError, WechatPayAccount, WechatPayIds, API_V3_KEY_LEN, DEFAULT_BASE_URL};
pub use client::{ANSWER_TOLERANCE_SECONDS, CONNECT_TIMEOUT_MS, REQUEST_TIMEOUT_MS, USER_AGENT};
pub use notify::TIMESTAMP_TOLERANCE_SECONDS;

use crate::{
    CallbackAnswer, CallbackError, Channel, ChannelError, ChannelPaymentStatus, ChannelRefundRequest,
    ChannelRefundResult, CreateChannelOrder, Notification,
};
use types::{
    CloseRequest, H5Info, OrderAmount, OrderRequest, Payer, PrepayResponse, Refund, RefundRequest, RefundRequestAmount,
    SceneInfo, Transaction,
};

/// The channel's name in URLs and orders.
pub const NAME: &str = "wechatpay";
/// Payment methods: `qr` (Native, a `code_url` to show as a QR code), `h5` (a `h5_url` for a
/// mobile browser), `jsapi` (a `prepay_id` for an official account or mini program).
pub const METHODS: &[&str] = &["qr", "h5", "jsapi"];
/// The only currency of domestic WeChat Pay.
pub const CURRENCY: &str = "CNY";
/// `description` limit, bytes (longer subjects are cut at a character boundary).
pub const DESCRIPTION_BYTES_MAX: usize = 127;
/// Refund `reason` limit, bytes.
pub const REFUND_REASON_BYTES_MAX: usize = 80;
/// Largest `amount.total`, fen (the field is a 32-bit int).
pub const AMOUNT_FEN_MAX: i64 = i32::MAX as i64;
/// [`METHODS`], CNY only, 1 fen to [`AMOUNT_FEN_MAX`].
pub const CAPABILITIES: crate::Capabilities = crate::Capabilities {
    channel: NAME,
    methods: METHODS,
    currencies: Some(&[CURRENCY]),
    amount_minor_min: 1,
    amount_minor_max: AMOUNT_FEN_MAX,
};
/// China Standard Time, the offset WeChat Pay writes times in.
const CST_OFFSET_SECONDS: i32 = 8 * 3600;

/// The parameters a JSAPI / mini-program page passes to `requestPayment` (`WeixinJSBridge`),
/// signed with the merchant key (<https://pay.weixin.qq.com/wiki/doc/apiv3/apis/chapter3_1_4.shtml>).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsapiPayParams {
    pub app_id: String,
    /// Unix seconds, as text.
    pub time_stamp: String,
    pub nonce_str: String,
    /// `prepay_id=…`.
    pub package: String,
    /// `RSA`.
    pub sign_type: String,
    /// base64 SHA256withRSA of `appId\ntimeStamp\nnonceStr\npackage\n`.
    pub pay_sign: String,
}

/// The WeChat Pay channel of one merchant account.
pub struct WechatPayChannel {
    account: WechatPayAccount,
    http: reqwest::Client,
}

impl std::fmt::Debug for WechatPayChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatPayChannel")
            .field("account", &self.account)
            .finish()
    }
}

impl WechatPayChannel {
    /// The channel for `account`, with timeouts [`CONNECT_TIMEOUT_MS`] / [`REQUEST_TIMEOUT_MS`].
    pub fn new(account: WechatPayAccount) -> Self {
        Self {
            account,
            http: client::http_client(),
        }
    }

    /// The account it speaks for.
    pub fn account(&self) -> &WechatPayAccount {
        &self.account
    }

    /// Our id in WeChat Pay's `out_trade_no` / `out_refund_no` form: 32 lower-case hex digits.
    pub fn channel_id(id: Uuid) -> String {
        id.simple().to_string()
    }

    /// The signed parameters for a JSAPI payment page, from the `prepay_id` that
    /// [`Channel::create`] put in `channel_ref`.
    ///
    /// # Errors
    /// [`sign::SignError`] if the merchant key cannot sign.
    pub fn jsapi_pay_params(
        &self,
        prepay_id: &str,
        timestamp: i64,
        nonce: &str,
    ) -> Result<JsapiPayParams, sign::SignError> {
        let package = format!("prepay_id={prepay_id}");
        let message = sign::jsapi_pay_message(&self.account.app_id, timestamp, nonce, &package);
        Ok(JsapiPayParams {
            app_id: self.account.app_id.clone(),
            time_stamp: timestamp.to_string(),
            nonce_str: nonce.to_string(),
            package,
            sign_type: "RSA".into(),
            pay_sign: sign::sign(&self.account.merchant_private_key, &message)?,
        })
    }

    /// The API path and body for placing `request` (no I/O).
    ///
    /// # Errors
    /// [`ChannelError::Rejected`] with code `UNSUPPORTED_METHOD`, `UNSUPPORTED_CURRENCY`,
    /// `AMOUNT_TOO_LARGE`, `MISSING_PAYER_IP` (h5) or `MISSING_PAYER_ID` (jsapi).
    pub fn order_request(&self, request: &CreateChannelOrder) -> Result<(&'static str, OrderRequest), ChannelError> {
        let path = match request.method.as_str() {
            "qr" => "/v3/pay/transactions/native",
            "h5" => "/v3/pay/transactions/h5",
            "jsapi" => "/v3/pay/transactions/jsapi",
            other => {
                return Err(rejected(
                    "UNSUPPORTED_METHOD",
                    format!("wechatpay has no method {other:?}; use one of {METHODS:?}"),
                ))
            }
        };
        let total = fen(request.amount)?;
        let present = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let payer = match request.method.as_str() {
            "jsapi" => Some(Payer {
                openid: present(&request.payer_id)
                    .ok_or_else(|| rejected("MISSING_PAYER_ID", "jsapi needs the payer's openid".into()))?,
            }),
            _ => None,
        };
        let scene_info = match request.method.as_str() {
            "h5" => Some(SceneInfo {
                payer_client_ip: present(&request.payer_ip)
                    .ok_or_else(|| rejected("MISSING_PAYER_IP", "h5 needs the payer's IP address".into()))?,
                h5_info: Some(H5Info { kind: "Wap".into() }),
            }),
            _ => None,
        };
        Ok((
            path,
            OrderRequest {
                appid: self.account.app_id.clone(),
                mchid: self.account.mch_id.clone(),
                description: truncate_bytes(&request.subject, DESCRIPTION_BYTES_MAX),
                out_trade_no: Self::channel_id(request.order_id),
                time_expire: Some(cst_rfc3339(request.expire_at)),
                notify_url: self.account.notify_url.clone(),
                amount: OrderAmount {
                    total,
                    currency: CURRENCY.into(),
                },
                payer,
                scene_info,
            },
        ))
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: http::Method,
        path_and_query: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ChannelError> {
        let answer = self.call_raw(method, path_and_query, body).await?;
        serde_json::from_slice(&answer)
            .map_err(|e| ChannelError::Unavailable(format!("unexpected WeChat Pay answer to {path_and_query}: {e}")))
    }

    async fn call_raw(
        &self,
        method: http::Method,
        path_and_query: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Vec<u8>, ChannelError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ChannelError::Unavailable(format!("cannot encode the request: {e}")))?;
        client::call(&self.http, &self.account, method, path_and_query, body).await
    }
}

#[async_trait]
impl Channel for WechatPayChannel {
    fn name(&self) -> &'static str {
        NAME
    }

    /// The account's id, `appid` and `mchid`.
    fn channel_account(&self) -> ChannelAccountRef {
        ChannelAccountRef {
            id: self.account.account_id.clone(),
            app_id: Some(self.account.app_id.clone()),
            mch_id: Some(self.account.mch_id.clone()),
        }
    }

    fn capabilities(&self) -> &'static crate::Capabilities {
        &CAPABILITIES
    }

    /// `POST /v3/pay/transactions/{native,h5,jsapi}`: `qr` → `qr_code` = `code_url`; `h5` →
    /// `pay_url` = `h5_url`; `jsapi` → `channel_ref` = `prepay_id`.
    async fn create(&self, request: &CreateChannelOrder) -> Result<ChannelOrder, ChannelError> {
        let (path, body) = self.order_request(request)?;
        let answer: PrepayResponse = self.call(http::Method::POST, path, Some(&body)).await?;
        let missing = |field: &str| ChannelError::Unavailable(format!("WeChat Pay answer to {path} lacks {field}"));
        Ok(match request.method.as_str() {
            "qr" => ChannelOrder {
                qr_code: Some(answer.code_url.ok_or_else(|| missing("code_url"))?),
                ..ChannelOrder::default()
            },
            "h5" => ChannelOrder {
                pay_url: Some(answer.h5_url.ok_or_else(|| missing("h5_url"))?),
                ..ChannelOrder::default()
            },
            _ => ChannelOrder {
                channel_ref: Some(answer.prepay_id.ok_or_else(|| missing("prepay_id"))?),
                ..ChannelOrder::default()
            },
        })
    }

    /// `POST /v3/refund/domestic/refunds`, by `transaction_id` when known. `SUCCESS` →
    /// `Succeeded` (WeChat's `refund_id`), `PROCESSING` → `Pending`, `CLOSED` / `ABNORMAL` →
    /// `Failed`.
    async fn refund(&self, request: &ChannelRefundRequest) -> Result<ChannelRefundResult, ChannelError> {
        let body = RefundRequest {
            transaction_id: request.channel_trade_no.clone().filter(|t| !t.is_empty()),
            out_trade_no: request
                .channel_trade_no
                .as_deref()
                .filter(|t| !t.is_empty())
                .is_none()
                .then(|| Self::channel_id(request.order_id)),
            out_refund_no: Self::channel_id(request.refund_id),
            reason: request
                .reason
                .as_deref()
                .filter(|r| !r.trim().is_empty())
                .map(|r| truncate_bytes(r, REFUND_REASON_BYTES_MAX)),
            notify_url: Some(self.account.notify_url.clone()),
            amount: RefundRequestAmount {
                refund: fen(request.amount)?,
                total: fen(request.paid)?,
                currency: CURRENCY.into(),
            },
        };
        let refund: Refund = self
            .call(http::Method::POST, "/v3/refund/domestic/refunds", Some(&body))
            .await?;
        refund_result(&refund)
    }

    /// `GET /v3/pay/transactions/out-trade-no/{out_trade_no}?mchid=`. `SUCCESS` and `REFUND`
    /// (paid, then refunded) → `Paid`; `NOTPAY`, `USERPAYING` → `NotPaid`; `CLOSED`, `REVOKED` →
    /// `Closed`; `PAYERROR` → `Failed`; 404 `ORDER_NOT_EXIST` → `NotFound`.
    async fn query(&self, order_id: Uuid) -> Result<ChannelPaymentStatus, ChannelError> {
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{}?mchid={}",
            Self::channel_id(order_id),
            self.account.mch_id
        );
        let t: Transaction = match self.call(http::Method::GET, &path, None::<&()>).await {
            Err(ChannelError::Rejected { code, .. }) if code == "ORDER_NOT_EXIST" => {
                return Ok(ChannelPaymentStatus::NotFound)
            }
            other => other?,
        };
        let malformed = |e: CallbackError| ChannelError::Unavailable(format!("unexpected query answer: {e}"));
        Ok(match t.trade_state.as_str() {
            "SUCCESS" | "REFUND" => ChannelPaymentStatus::Paid {
                channel_trade_no: t
                    .transaction_id
                    .clone()
                    .ok_or_else(|| malformed(CallbackError::Malformed("missing transaction_id".into())))?,
                amount: notify::transaction_amount(&t).map_err(malformed)?,
                paid_at: notify::parse_time(t.success_time.as_deref(), "success_time").map_err(malformed)?,
            },
            "NOTPAY" | "USERPAYING" => ChannelPaymentStatus::NotPaid,
            "CLOSED" | "REVOKED" => ChannelPaymentStatus::Closed,
            "PAYERROR" => ChannelPaymentStatus::Failed {
                reason: t.trade_state_desc.unwrap_or_else(|| "PAYERROR".into()),
            },
            other => {
                return Err(ChannelError::Unavailable(format!("unknown trade_state {other:?}")));
            }
        })
    }

    /// `POST /v3/pay/transactions/out-trade-no/{out_trade_no}/close` → 204. A paid order is
    /// `Rejected` with code `ORDERPAID`.
    async fn close(&self, order_id: Uuid) -> Result<(), ChannelError> {
        let path = format!("/v3/pay/transactions/out-trade-no/{}/close", Self::channel_id(order_id));
        let body = CloseRequest {
            mchid: self.account.mch_id.clone(),
        };
        self.call_raw(http::Method::POST, &path, Some(&body)).await.map(|_| ())
    }

    /// `GET /v3/refund/domestic/refunds/{out_refund_no}`, mapped as [`Channel::refund`]. An
    /// unknown refund is `Rejected` with WeChat's code (`RESOURCE_NOT_EXISTS`): the trait has no
    /// "not found" refund result.
    async fn query_refund(&self, order_id: Uuid, refund_id: Uuid) -> Result<ChannelRefundResult, ChannelError> {
        let _ = order_id;
        let path = format!("/v3/refund/domestic/refunds/{}", Self::channel_id(refund_id));
        let refund: Refund = self.call(http::Method::GET, &path, None::<&()>).await?;
        refund_result(&refund)
    }

    fn verify_callback(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Notification, CallbackError> {
        notify::verify_notification(&self.account, headers, body, now)
    }

    /// Success: 204, no body. Failure: 400 with `{"code":"FAIL","message":…}` (WeChat Pay
    /// retries on any non-2xx).
    fn answer_callback(&self, outcome: Result<(), String>) -> CallbackAnswer {
        match outcome {
            Ok(()) => CallbackAnswer {
                status: 204,
                content_type: "application/json",
                body: String::new(),
            },
            Err(message) => CallbackAnswer {
                status: 400,
                content_type: "application/json",
                body: serde_json::json!({"code": "FAIL", "message": message}).to_string(),
            },
        }
    }
}

fn rejected(code: &str, message: String) -> ChannelError {
    ChannelError::Rejected {
        code: code.into(),
        message,
    }
}

/// The amount in fen, refusing other currencies and amounts past [`AMOUNT_FEN_MAX`].
fn fen(amount: Money) -> Result<i64, ChannelError> {
    if amount.currency.code() != CURRENCY {
        return Err(rejected(
            "UNSUPPORTED_CURRENCY",
            format!("wechatpay takes only {CURRENCY}, not {}", amount.currency.code()),
        ));
    }
    if amount.amount_minor > AMOUNT_FEN_MAX {
        return Err(rejected(
            "AMOUNT_TOO_LARGE",
            format!("{} fen is over WeChat Pay's {AMOUNT_FEN_MAX}", amount.amount_minor),
        ));
    }
    Ok(amount.amount_minor)
}

fn refund_result(refund: &Refund) -> Result<ChannelRefundResult, ChannelError> {
    Ok(match refund.status.as_str() {
        "SUCCESS" => ChannelRefundResult::Succeeded {
            channel_refund_no: Some(refund.refund_id.clone()),
        },
        "PROCESSING" => ChannelRefundResult::Pending,
        "CLOSED" => ChannelRefundResult::Failed {
            reason: "CLOSED: WeChat Pay closed the refund".into(),
        },
        "ABNORMAL" => ChannelRefundResult::Failed {
            reason: "ABNORMAL: the refund could not reach the payer; it needs handling in the merchant platform".into(),
        },
        other => return Err(ChannelError::Unavailable(format!("unknown refund status {other:?}"))),
    })
}

/// RFC 3339 in China Standard Time, seconds precision: `2018-06-08T10:34:56+08:00`.
pub fn cst_rfc3339(t: DateTime<Utc>) -> String {
    let cst = FixedOffset::east_opt(CST_OFFSET_SECONDS).expect("+08:00 is a valid offset");
    t.with_timezone(&cst).to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// `s` cut to at most `max` bytes at a character boundary.
fn truncate_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests;
