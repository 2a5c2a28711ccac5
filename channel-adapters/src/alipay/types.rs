//! Wire shapes of the Alipay OpenAPI calls we make: method names, `biz_content` bodies and
//! response nodes, and Alipay's `yyyy-MM-dd HH:mm:ss` Beijing time.
//!
//! Amounts here are Alipay's yuan strings ([`super::amount`] converts them); nothing outside
//! this module tree sees them. The simulator uses the same shapes from the other side.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// 统一收单线下交易预创建 (QR code), <https://opendocs.alipay.com/apis/api_1/alipay.trade.precreate>.
pub const METHOD_PRECREATE: &str = "alipay.trade.precreate";
/// 统一收单下单并支付页面 (PC web), <https://opendocs.alipay.com/apis/api_1/alipay.trade.page.pay>.
pub const METHOD_PAGE_PAY: &str = "alipay.trade.page.pay";
/// 手机网站支付 (mobile web), <https://opendocs.alipay.com/apis/api_1/alipay.trade.wap.pay>.
pub const METHOD_WAP_PAY: &str = "alipay.trade.wap.pay";
/// 统一收单线下交易查询, <https://opendocs.alipay.com/apis/api_1/alipay.trade.query>.
pub const METHOD_QUERY: &str = "alipay.trade.query";
/// 统一收单交易关闭, <https://opendocs.alipay.com/apis/api_1/alipay.trade.close>.
pub const METHOD_CLOSE: &str = "alipay.trade.close";
/// 统一收单交易退款, <https://opendocs.alipay.com/apis/api_1/alipay.trade.refund>.
pub const METHOD_REFUND: &str = "alipay.trade.refund";
/// 统一收单交易退款查询, <https://opendocs.alipay.com/apis/api_1/alipay.trade.fastpay.refund.query>.
pub const METHOD_REFUND_QUERY: &str = "alipay.trade.fastpay.refund.query";

/// `code` of a successful call (<https://opendocs.alipay.com/common/02km9f>, 网关返回码).
pub const CODE_SUCCESS: &str = "10000";
/// 服务不可用: Alipay's side failed; retry.
pub const CODE_UNAVAILABLE: &str = "20000";
/// 授权权限不足.
pub const CODE_INSUFFICIENT_PERMISSION: &str = "20001";
/// 缺少必选参数.
pub const CODE_MISSING_PARAMETER: &str = "40001";
/// 非法的参数 (also a bad signature: `isv.invalid-signature`).
pub const CODE_INVALID_PARAMETER: &str = "40002";
/// 业务处理失败: see `sub_code`.
pub const CODE_BUSINESS_FAILED: &str = "40004";
/// 权限不足.
pub const CODE_PERMISSION_DENIED: &str = "40006";

/// `product_code` of `alipay.trade.page.pay`.
pub const PRODUCT_PAGE: &str = "FAST_INSTANT_TRADE_PAY";
/// `product_code` of `alipay.trade.wap.pay`.
pub const PRODUCT_WAP: &str = "QUICK_WAP_WAY";
/// `product_code` of `alipay.trade.precreate`.
pub const PRODUCT_PRECREATE: &str = "FACE_TO_FACE_PAYMENT";

/// Alipay's time zone: every `yyyy-MM-dd HH:mm:ss` it sends or expects is Beijing time.
pub fn beijing() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset")
}

/// `2014-07-24 03:07:50` in Beijing time.
pub fn format_beijing(at: DateTime<Utc>) -> String {
    at.with_timezone(&beijing()).format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Parses Alipay's `yyyy-MM-dd HH:mm:ss` (Beijing time); `None` for anything else.
pub fn parse_beijing(text: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").ok()?;
    beijing()
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// `trade_status` of a trade (交易状态).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TradeStatus {
    /// 交易创建，等待买家付款.
    WaitBuyerPay,
    /// 未付款交易超时关闭，或支付完成后全额退款.
    TradeClosed,
    /// 交易支付成功 (refundable).
    TradeSuccess,
    /// 交易结束，不可退款.
    TradeFinished,
}

impl TradeStatus {
    /// The wire name, e.g. `TRADE_SUCCESS`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WaitBuyerPay => "WAIT_BUYER_PAY",
            Self::TradeClosed => "TRADE_CLOSED",
            Self::TradeSuccess => "TRADE_SUCCESS",
            Self::TradeFinished => "TRADE_FINISHED",
        }
    }

    /// From the wire name; `None` for an unknown status.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::WaitBuyerPay,
            Self::TradeClosed,
            Self::TradeSuccess,
            Self::TradeFinished,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// `biz_content` of precreate, page.pay and wap.pay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeCreateBiz {
    /// Our order id, hyphenated (36 of the 64 characters allowed).
    pub out_trade_no: String,
    /// Yuan, two decimals.
    pub total_amount: String,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_code: Option<String>,
    /// Absolute deadline, `yyyy-MM-dd HH:mm:ss` Beijing time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<String>,
    /// wap.pay: where the payer lands when leaving the cashier unpaid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quit_url: Option<String>,
}

/// `biz_content` naming one trade (query, close).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeRefBiz {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
}

/// `biz_content` of `alipay.trade.refund`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundBiz {
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
    /// Yuan, two decimals.
    pub refund_amount: String,
    /// Our refund id: Alipay refunds once per `out_request_no`.
    pub out_request_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_reason: Option<String>,
}

/// `biz_content` of `alipay.trade.fastpay.refund.query`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundQueryBiz {
    pub out_trade_no: String,
    pub out_request_no: String,
}

/// The part every response node has (公共响应参数).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStatus {
    pub code: String,
    #[serde(default)]
    pub msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_msg: Option<String>,
}

/// A response whose `code` is not [`CODE_SUCCESS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {msg}: {} {}", sub_code.as_deref().unwrap_or("-"), sub_msg.as_deref().unwrap_or(""))]
pub struct GatewayError {
    /// Gateway code: `20000` unavailable, `40002` invalid parameter, `40004` business failure, …
    pub code: String,
    /// Its description, e.g. `Business Failed`.
    pub msg: String,
    /// The detailed code: `ACQ.*` (business), `isv.*` (our request), `isp.*` (Alipay's side).
    pub sub_code: Option<String>,
    /// Its description, often Chinese.
    pub sub_msg: Option<String>,
}

impl GatewayError {
    /// Whether `sub_code` is `wanted` (Alipay prefixes some with `aop.`).
    pub fn sub_code_is(&self, wanted: &str) -> bool {
        self.sub_code
            .as_deref()
            .is_some_and(|s| s == wanted || s.strip_prefix("aop.") == Some(wanted))
    }
}

/// Success node of precreate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrecreateResponse {
    pub out_trade_no: String,
    /// The content of the QR code to show, e.g. `https://qr.alipay.com/bax…`.
    pub qr_code: String,
}

/// Success node of `alipay.trade.query`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_status: Option<String>,
    /// Yuan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_amount: Option<String>,
    /// When the money went to the seller (paid), Beijing time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_pay_date: Option<String>,
}

/// Success node of `alipay.trade.refund`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    /// `Y`: this call moved money. `N` or absent: ask `alipay.trade.fastpay.refund.query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fund_change: Option<String>,
    /// Total refunded on the trade so far, yuan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_fee: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gmt_refund_pay: Option<String>,
}

/// Success node of `alipay.trade.fastpay.refund.query`. All business fields are absent when
/// Alipay has no such refund (退款请求未收到或者退款失败).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RefundQueryResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_request_no: Option<String>,
    /// This refund, yuan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_amount: Option<String>,
    /// `REFUND_SUCCESS`, or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_status: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_time_is_eight_hours_ahead_of_utc() {
        let t = Utc.with_ymd_and_hms(2016, 7, 19, 6, 10, 47).unwrap();
        assert_eq!(format_beijing(t), "2016-07-19 14:10:47");
        assert_eq!(parse_beijing("2016-07-19 14:10:47"), Some(t));
        assert_eq!(parse_beijing("2016-07-19T14:10:47"), None);
        assert_eq!(parse_beijing("2016-07-19 14:10"), None);
    }

    #[test]
    fn trade_status_names_round_trip() {
        for s in [
            TradeStatus::WaitBuyerPay,
            TradeStatus::TradeClosed,
            TradeStatus::TradeSuccess,
            TradeStatus::TradeFinished,
        ] {
            assert_eq!(TradeStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::json!(s.as_str()));
        }
        assert_eq!(TradeStatus::parse("TRADE_PENDING"), None);
    }
}
