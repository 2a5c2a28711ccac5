//! The JSON bodies of WeChat Pay API v3, as sent and received (direct-merchant mode).
//!
//! Amounts are integers in fen (CNY minor units). Times are RFC 3339 with an offset, e.g.
//! `2018-06-08T10:34:56+08:00`. Unknown fields are ignored: WeChat Pay adds fields without notice.
//! Sources: Native/H5/JSAPI order placement (`apis/chapter3_4_1`, `chapter3_3_1`, `chapter3_1_1`),
//! query (`chapter3_4_2`), close (`chapter3_4_3`), refund (`chapter3_4_9`), refund query
//! (`chapter3_4_10`), payment and refund notifications (`chapter3_4_5`, `chapter3_4_11`) under
//! <https://pay.weixin.qq.com/wiki/doc/apiv3/apis/>.

use serde::{Deserialize, Serialize};

/// Body of `POST /v3/pay/transactions/{native,h5,jsapi}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRequest {
    pub appid: String,
    pub mchid: String,
    /// Up to 127 bytes.
    pub description: String,
    /// 6–32 characters of `[0-9A-Za-z_\-|*]`; we send our order id in simple (hex) form.
    pub out_trade_no: String,
    /// RFC 3339, e.g. `2018-06-08T10:34:56+08:00`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub time_expire: Option<String>,
    pub notify_url: String,
    pub amount: OrderAmount,
    /// JSAPI only.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payer: Option<Payer>,
    /// H5 only (and optional elsewhere).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub scene_info: Option<SceneInfo>,
}

/// `amount` of an order request: fen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderAmount {
    pub total: i64,
    /// `CNY`.
    pub currency: String,
}

/// `payer` of a JSAPI order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payer {
    pub openid: String,
}

/// `scene_info` of an H5 order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneInfo {
    pub payer_client_ip: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub h5_info: Option<H5Info>,
}

/// `scene_info.h5_info`: `type` is `Wap`, `iOS` or `Android`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct H5Info {
    #[serde(rename = "type")]
    pub kind: String,
}

/// Answer to order placement: `code_url` (Native), `h5_url` (H5) or `prepay_id` (JSAPI).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PrepayResponse {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub h5_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub prepay_id: Option<String>,
}

/// A transaction: the answer to a query and the plaintext of a `TRANSACTION.*` notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub appid: String,
    pub mchid: String,
    pub out_trade_no: String,
    /// WeChat Pay's order number; absent until paid.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub transaction_id: Option<String>,
    /// `NATIVE`, `MWEB` (H5), `JSAPI`, …
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub trade_type: Option<String>,
    /// `SUCCESS`, `REFUND`, `NOTPAY`, `CLOSED`, `REVOKED`, `USERPAYING`, `PAYERROR`.
    pub trade_state: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub trade_state_desc: Option<String>,
    /// RFC 3339; present when paid.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub success_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payer: Option<Payer>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub amount: Option<TransactionAmount>,
}

/// `amount` of a transaction: fen. `total` is the order amount; `payer_total` what the payer paid
/// after coupons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionAmount {
    pub total: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payer_total: Option<i64>,
    pub currency: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payer_currency: Option<String>,
}

/// Body of `POST /v3/pay/transactions/out-trade-no/{out_trade_no}/close`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseRequest {
    pub mchid: String,
}

/// Body of `POST /v3/refund/domestic/refunds`. One of `transaction_id`, `out_trade_no`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub transaction_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub out_trade_no: Option<String>,
    /// Our refund id, simple form; WeChat Pay refunds once per `out_refund_no`.
    pub out_refund_no: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub notify_url: Option<String>,
    pub amount: RefundRequestAmount,
}

/// `amount` of a refund request: fen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequestAmount {
    /// This refund.
    pub refund: i64,
    /// The order's amount.
    pub total: i64,
    pub currency: String,
}

/// A refund: the answer to a refund request or query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    /// WeChat Pay's refund number.
    pub refund_id: String,
    pub out_refund_no: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub transaction_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub out_trade_no: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user_received_account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub success_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub create_time: Option<String>,
    /// `SUCCESS`, `CLOSED`, `PROCESSING`, `ABNORMAL`.
    pub status: String,
    pub amount: RefundAmount,
}

/// `amount` of a refund or refund notification: fen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAmount {
    pub total: i64,
    pub refund: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payer_total: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payer_refund: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub currency: Option<String>,
}

/// Plaintext of a `REFUND.*` notification (no `appid`: refunds belong to the merchant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundResource {
    pub mchid: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub out_refund_no: String,
    pub refund_id: String,
    /// `SUCCESS`, `CLOSED`, `ABNORMAL`.
    pub refund_status: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub success_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user_received_account: Option<String>,
    pub amount: RefundAmount,
}

/// Body of a 4xx/5xx answer: `{"code":"PARAM_ERROR","message":"…"}` (plus `detail`, ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// A notification as POSTed to `notify_url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationEnvelope {
    /// Unique per notification; re-sends keep it, e.g. `EV-2018022511223320873`.
    pub id: String,
    /// RFC 3339.
    pub create_time: String,
    /// `TRANSACTION.SUCCESS`, `REFUND.SUCCESS`, `REFUND.ABNORMAL`, `REFUND.CLOSED`.
    pub event_type: String,
    /// `encrypt-resource`.
    pub resource_type: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub summary: Option<String>,
    pub resource: EncryptedResource,
}

/// `resource` of a notification: AEAD_AES_256_GCM ciphertext of a [`Transaction`] or
/// [`RefundResource`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedResource {
    /// `transaction` or `refund`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub original_type: Option<String>,
    pub algorithm: String,
    /// base64(ciphertext ‖ 16-byte tag).
    pub ciphertext: String,
    /// May be empty or absent.
    #[serde(default)]
    pub associated_data: String,
    /// 12 characters.
    pub nonce: String,
}
