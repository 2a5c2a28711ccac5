//! Alipay (支付宝) open platform, RSA2, as a payledger [`Channel`].
//!
//! - Methods: `qr` → `alipay.trade.precreate` (server call; the answer's `qr_code` is
//!   [`ChannelOrder::qr_code`]); `page` → `alipay.trade.page.pay` and `h5` →
//!   `alipay.trade.wap.pay`, which are not server calls: the payer's browser opens a signed GET
//!   URL to the gateway ([`ChannelOrder::pay_url`]).
//! - `out_trade_no` is our order id (hyphenated UUID, 36 ≤ 64 characters), `out_request_no` our
//!   refund id. Amounts are fen everywhere in payledger and yuan strings only on the wire
//!   ([`amount`]); CNY only.
//! - Every response is verified over the raw text of its `…_response` node ([`sign`]); every
//!   notification over its sorted parameters ([`notify`]).
//! - Error mapping (<https://opendocs.alipay.com/common/02km9f>): `20000`, `isp.*` and
//!   `ACQ.SYSTEM_ERROR` are Alipay's failures → [`ChannelError::Unavailable`]; transport errors,
//!   non-200 statuses and responses that fail verification too. Other codes refuse the request →
//!   [`ChannelError::Rejected`] with `code` = `sub_code` (or `code`) and the messages. Per call
//!   exceptions are on each method below.
//!
//! Sources: the API pages named in [`types`]; signing <https://opendocs.alipay.com/common/02kf5q>;
//! verification <https://opendocs.alipay.com/common/02mse7>.

pub mod account;
pub mod amount;
mod client;
pub mod notify;
pub mod sign;
pub mod types;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payledger_domain::{ChannelAccountRef, ChannelOrder, Currency, Money};
use uuid::Uuid;

pub use account::{AlipayAccount, KeyError, DEFAULT_GATEWAY_URL};
use client::GatewayClient;
pub use client::{CONNECT_TIMEOUT_MS, REQUEST_TIMEOUT_MS, RESPONSE_BYTES_MAX};
use types::*;

use crate::{
    CallbackAnswer, CallbackError, Channel, ChannelError, ChannelPaymentStatus, ChannelRefundRequest,
    ChannelRefundResult, CreateChannelOrder, Notification,
};

/// The channel's name in URLs and orders.
pub const CHANNEL_NAME: &str = "alipay";
/// Payment methods; `qr` is the default.
pub const METHODS: &[&str] = &["qr", "page", "h5"];
/// [`METHODS`], CNY only, 0.01 to 100,000,000.00 yuan ([`amount::ALIPAY_AMOUNT_FEN_MAX`] fen).
pub const CAPABILITIES: crate::Capabilities = crate::Capabilities {
    channel: CHANNEL_NAME,
    methods: METHODS,
    currencies: Some(&["CNY"]),
    amount_minor_min: 1,
    amount_minor_max: amount::ALIPAY_AMOUNT_FEN_MAX,
};
/// Alipay's longest `subject`, in characters (`String(256)`).
pub const SUBJECT_CHARS_MAX: usize = 256;

/// `alipay.trade.refund` sub_codes that mean the refund was refused and nothing moved
/// (<https://opendocs.alipay.com/apis/api_1/alipay.trade.refund>, 业务错误码): the refund is
/// [`ChannelRefundResult::Failed`]. Any other business failure is treated as unknown and
/// reported [`ChannelError::Unavailable`], so the refund is retried with the same
/// `out_request_no` (Alipay refunds once per `out_request_no`) rather than recorded as failed
/// when money may have moved.
pub const REFUND_REFUSED_SUB_CODES: &[&str] = &[
    "ACQ.TRADE_NOT_EXIST",
    "ACQ.TRADE_STATUS_ERROR",
    "ACQ.TRADE_HAS_FINISHED",
    "ACQ.TRADE_HAS_CLOSE",
    "ACQ.TRADE_NOT_ALLOW_REFUND",
    "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
    "ACQ.REASON_TRADE_REFUND_FEE_ERR",
    "ACQ.REFUND_FEE_ERROR",
    "ACQ.SELLER_BALANCE_NOT_ENOUGH",
    "ACQ.REASON_TRADE_BEEN_FREEZEN",
    "ACQ.ONLINE_TRADE_VOUCHER_NOT_ALLOW_REFUND",
    "ACQ.DISCORDANT_REPEAT_REQUEST",
    "ACQ.BUYER_ERROR",
    "ACQ.INVALID_PARAMETER",
];

/// The Alipay channel for one application.
pub struct AlipayChannel {
    client: GatewayClient,
}

impl AlipayChannel {
    /// A channel speaking for `account`.
    ///
    /// # Errors
    /// [`ChannelError::Unavailable`] when the HTTP client cannot be built (TLS set-up).
    pub fn new(account: AlipayAccount) -> Result<Self, ChannelError> {
        Ok(Self {
            client: GatewayClient::new(account)?,
        })
    }

    /// The account this channel speaks for.
    pub fn account(&self) -> &AlipayAccount {
        &self.client.account
    }

    /// The signed parameters of a request (public parameters, `biz_content`, `extra`, `sign`),
    /// as sent; for tests and diagnostics.
    ///
    /// # Errors
    /// [`ChannelError::Unavailable`] if the private key cannot sign (*ring* failed).
    pub fn signed_params(
        &self,
        method: &str,
        biz_content: &str,
        extra: &[(&str, &str)],
        now: DateTime<Utc>,
    ) -> Result<std::collections::BTreeMap<String, String>, ChannelError> {
        self.client.signed_params(method, biz_content, extra, now)
    }

    /// Checks a gateway response body as [`Channel`] calls do and parses the trade query
    /// answer; for tests of response verification without HTTP.
    ///
    /// # Errors
    /// [`ChannelError::Unavailable`] for an unsigned or tampered response.
    pub fn verify_query_response(&self, body: &str) -> Result<Result<QueryResponse, GatewayError>, ChannelError> {
        self.client.verify_response(METHOD_QUERY, body)
    }

    fn create_biz(&self, request: &CreateChannelOrder, product_code: &str) -> Result<TradeCreateBiz, ChannelError> {
        let total_amount = yuan_of(request.amount)?;
        if request.subject.chars().count() > SUBJECT_CHARS_MAX {
            return Err(rejected(
                "SUBJECT_TOO_LONG",
                format!("Alipay takes at most {SUBJECT_CHARS_MAX} characters"),
            ));
        }
        Ok(TradeCreateBiz {
            out_trade_no: request.order_id.hyphenated().to_string(),
            total_amount,
            subject: request.subject.clone(),
            product_code: Some(product_code.to_string()),
            time_expire: Some(format_beijing(request.expire_at)),
            quit_url: None,
        })
    }
}

/// Fen → yuan for a CNY amount within Alipay's range.
fn yuan_of(amount: Money) -> Result<String, ChannelError> {
    if amount.currency != Currency::CNY {
        return Err(rejected(
            "CURRENCY_NOT_SUPPORTED",
            format!("Alipay takes CNY, not {}", amount.currency.code()),
        ));
    }
    if !(1..=amount::ALIPAY_AMOUNT_FEN_MAX).contains(&amount.amount_minor) {
        return Err(rejected(
            "AMOUNT_OUT_OF_RANGE",
            format!(
                "{} fen is outside Alipay's 1..={} fen",
                amount.amount_minor,
                amount::ALIPAY_AMOUNT_FEN_MAX
            ),
        ));
    }
    amount::fen_to_yuan(amount.amount_minor).map_err(|e| rejected("AMOUNT_INVALID", e.to_string()))
}

fn rejected(code: &str, message: String) -> ChannelError {
    ChannelError::Rejected {
        code: code.to_string(),
        message,
    }
}

fn to_json<T: serde::Serialize>(biz: &T) -> Result<String, ChannelError> {
    serde_json::to_string(biz).map_err(|e| rejected("BIZ_CONTENT", e.to_string()))
}

/// Whether Alipay's error is its own failure (retry) rather than a refusal.
fn is_transient(e: &GatewayError) -> bool {
    e.code == CODE_UNAVAILABLE
        || e.sub_code.as_deref().is_some_and(|s| s.starts_with("isp."))
        || e.sub_code_is("ACQ.SYSTEM_ERROR")
}

/// The default mapping of a gateway error.
fn gateway_error(method: &str, e: GatewayError) -> ChannelError {
    if is_transient(&e) {
        return ChannelError::Unavailable(format!("{method}: {e}"));
    }
    ChannelError::Rejected {
        code: e.sub_code.clone().unwrap_or_else(|| e.code.clone()),
        message: match &e.sub_msg {
            Some(sub_msg) => format!("{}: {sub_msg}", e.msg),
            None => e.msg.clone(),
        },
    }
}

fn unavailable(method: &str, what: impl std::fmt::Display) -> ChannelError {
    ChannelError::Unavailable(format!("{method}: {what}"))
}

#[async_trait]
impl Channel for AlipayChannel {
    fn name(&self) -> &'static str {
        CHANNEL_NAME
    }

    /// The account's id and `app_id`: an Alipay application is the account at the channel
    /// (`seller_id` only narrows which notifications it accepts, so adding it changes no
    /// order's account).
    fn channel_account(&self) -> ChannelAccountRef {
        let account = &self.client.account;
        ChannelAccountRef {
            id: account.account_id.clone(),
            app_id: Some(account.app_id.clone()),
            mch_id: None,
        }
    }

    fn capabilities(&self) -> &'static crate::Capabilities {
        &CAPABILITIES
    }

    /// `qr`: `alipay.trade.precreate`, answer's `qr_code`. `page`/`h5`: a signed GET URL for
    /// `alipay.trade.page.pay` (`product_code` `FAST_INSTANT_TRADE_PAY`) or
    /// `alipay.trade.wap.pay` (`QUICK_WAP_WAY`, `quit_url` = `return_url`); `return_url` is sent
    /// as the public parameter. `time_expire` is `expire_at` in Beijing time, so Alipay itself
    /// refuses payment after it.
    ///
    /// # Errors
    /// [`ChannelError::Rejected`] for another currency (`CURRENCY_NOT_SUPPORTED`), an amount
    /// outside 0.01..=100000000 yuan (`AMOUNT_OUT_OF_RANGE`), an unknown method
    /// (`METHOD_NOT_SUPPORTED`), a subject over 256 characters, or Alipay's refusal; otherwise
    /// [`ChannelError::Unavailable`].
    async fn create(&self, request: &CreateChannelOrder) -> Result<ChannelOrder, ChannelError> {
        let now = Utc::now();
        let extra: Vec<(&str, &str)> = request
            .return_url
            .as_deref()
            .map(|u| vec![("return_url", u)])
            .unwrap_or_default();
        match request.method.as_str() {
            "qr" => {
                let biz = to_json(&self.create_biz(request, PRODUCT_PRECREATE)?)?;
                let answer: PrecreateResponse = self
                    .client
                    .call(METHOD_PRECREATE, &biz)
                    .await?
                    .map_err(|e| gateway_error(METHOD_PRECREATE, e))?;
                if answer.out_trade_no != request.order_id.hyphenated().to_string() || answer.qr_code.is_empty() {
                    return Err(unavailable(
                        METHOD_PRECREATE,
                        "answer is about another trade or has no qr_code",
                    ));
                }
                Ok(ChannelOrder {
                    pay_url: None,
                    qr_code: Some(answer.qr_code),
                    channel_ref: None,
                })
            }
            "page" => {
                let biz = to_json(&self.create_biz(request, PRODUCT_PAGE)?)?;
                Ok(ChannelOrder {
                    pay_url: Some(self.client.pay_url(METHOD_PAGE_PAY, &biz, &extra, now)?),
                    qr_code: None,
                    channel_ref: None,
                })
            }
            "h5" => {
                let mut biz = self.create_biz(request, PRODUCT_WAP)?;
                biz.quit_url = request.return_url.clone();
                let biz = to_json(&biz)?;
                Ok(ChannelOrder {
                    pay_url: Some(self.client.pay_url(METHOD_WAP_PAY, &biz, &extra, now)?),
                    qr_code: None,
                    channel_ref: None,
                })
            }
            other => Err(rejected(
                "METHOD_NOT_SUPPORTED",
                format!("Alipay methods are {METHODS:?}, not {other:?}"),
            )),
        }
    }

    /// `alipay.trade.refund` with `out_request_no` = our refund id. `fund_change` `Y` →
    /// [`ChannelRefundResult::Succeeded`] (`channel_refund_no` = `out_request_no`: Alipay gives
    /// refunds no number of their own; its statements name a refund by trade and
    /// `out_request_no`). `N` or absent (e.g. this `out_request_no` was already refunded) → the
    /// refund is queried, as Alipay's guide asks (退款成功判断). Sub_codes in
    /// [`REFUND_REFUSED_SUB_CODES`] → [`ChannelRefundResult::Failed`].
    ///
    /// # Errors
    /// [`ChannelError::Unavailable`] for Alipay failures and unknown business failures (retry:
    /// same `out_request_no` refunds once); [`ChannelError::Rejected`] for gateway-level refusals
    /// (bad parameters, permissions: nothing reached the refund) and non-CNY amounts.
    async fn refund(&self, request: &ChannelRefundRequest) -> Result<ChannelRefundResult, ChannelError> {
        let biz = RefundBiz {
            out_trade_no: request.order_id.hyphenated().to_string(),
            trade_no: request.channel_trade_no.clone(),
            refund_amount: yuan_of(request.amount)?,
            out_request_no: request.refund_id.hyphenated().to_string(),
            refund_reason: request.reason.clone(),
        };
        let answer = self
            .client
            .call::<RefundResponse>(METHOD_REFUND, &to_json(&biz)?)
            .await?;
        match answer {
            Ok(r) if r.fund_change.as_deref() == Some("Y") => Ok(ChannelRefundResult::Succeeded {
                channel_refund_no: Some(biz.out_request_no),
            }),
            Ok(_) => self.query_refund(request.order_id, request.refund_id).await,
            Err(e) if is_transient(&e) => Err(gateway_error(METHOD_REFUND, e)),
            Err(e) if e.code == CODE_BUSINESS_FAILED => {
                if REFUND_REFUSED_SUB_CODES.iter().any(|c| e.sub_code_is(c)) {
                    Ok(ChannelRefundResult::Failed { reason: e.to_string() })
                } else {
                    Err(unavailable(METHOD_REFUND, format!("outcome unknown: {e}")))
                }
            }
            Err(e) => Err(gateway_error(METHOD_REFUND, e)),
        }
    }

    /// `alipay.trade.query`: `WAIT_BUYER_PAY` → `NotPaid`; `TRADE_SUCCESS`/`TRADE_FINISHED` →
    /// `Paid` (`total_amount` in fen, `send_pay_date` as `paid_at`); `TRADE_CLOSED` → `Closed`
    /// (also after a full refund; the order's own state tells the two apart);
    /// `ACQ.TRADE_NOT_EXIST` → `NotFound` (for QR and cashier orders Alipay creates the trade
    /// only when the payer scans or logs in).
    ///
    /// # Errors
    /// [`ChannelError`] as in the module documentation; [`ChannelError::Unavailable`] for a paid
    /// answer without amount, trade number or time.
    async fn query(&self, order_id: Uuid) -> Result<ChannelPaymentStatus, ChannelError> {
        let biz = TradeRefBiz {
            out_trade_no: Some(order_id.hyphenated().to_string()),
            trade_no: None,
        };
        let answer = self.client.call::<QueryResponse>(METHOD_QUERY, &to_json(&biz)?).await?;
        let r = match answer {
            Ok(r) => r,
            Err(e) if e.sub_code_is("ACQ.TRADE_NOT_EXIST") => return Ok(ChannelPaymentStatus::NotFound),
            Err(e) => return Err(gateway_error(METHOD_QUERY, e)),
        };
        let status = r.trade_status.as_deref().unwrap_or_default();
        match TradeStatus::parse(status) {
            Some(TradeStatus::WaitBuyerPay) => Ok(ChannelPaymentStatus::NotPaid),
            Some(TradeStatus::TradeClosed) => Ok(ChannelPaymentStatus::Closed),
            Some(TradeStatus::TradeSuccess | TradeStatus::TradeFinished) => {
                let incomplete = || {
                    unavailable(
                        METHOD_QUERY,
                        "paid trade without trade_no, total_amount or send_pay_date",
                    )
                };
                let channel_trade_no = r.trade_no.filter(|t| !t.is_empty()).ok_or_else(incomplete)?;
                let amount = amount::yuan_to_money(r.total_amount.as_deref().ok_or_else(incomplete)?)
                    .map_err(|e| unavailable(METHOD_QUERY, e))?;
                let paid_at = r
                    .send_pay_date
                    .as_deref()
                    .and_then(parse_beijing)
                    .ok_or_else(incomplete)?;
                Ok(ChannelPaymentStatus::Paid {
                    channel_trade_no,
                    amount,
                    paid_at,
                })
            }
            None => Err(unavailable(METHOD_QUERY, format!("unknown trade_status {status:?}"))),
        }
    }

    /// `alipay.trade.close`. `ACQ.TRADE_NOT_EXIST` is success: Alipay has no trade yet (QR not
    /// scanned, cashier not entered), and `time_expire` bounds when one could still be created;
    /// a payment after that is a late payment, which the aggregate handles.
    ///
    /// # Errors
    /// [`ChannelError::Rejected`] with `ACQ.TRADE_STATUS_ERROR` when the trade is paid, others
    /// as in the module documentation.
    async fn close(&self, order_id: Uuid) -> Result<(), ChannelError> {
        let biz = TradeRefBiz {
            out_trade_no: Some(order_id.hyphenated().to_string()),
            trade_no: None,
        };
        match self
            .client
            .call::<serde_json::Value>(METHOD_CLOSE, &to_json(&biz)?)
            .await?
        {
            Ok(_) => Ok(()),
            Err(e) if e.sub_code_is("ACQ.TRADE_NOT_EXIST") => Ok(()),
            Err(e) => Err(gateway_error(METHOD_CLOSE, e)),
        }
    }

    /// `alipay.trade.fastpay.refund.query` (<https://opendocs.alipay.com/apis/api_1/alipay.trade.fastpay.refund.query>):
    /// `refund_status` `REFUND_SUCCESS`, or (for the synchronous refund API) business fields
    /// with no `refund_status` → `Succeeded`. No business fields: Alipay has not (yet) refunded;
    /// it says to retry the refund with the same `out_request_no`, and a query soon after the
    /// refund may not see it yet → `Pending` (never `Failed`: that could free an amount that was
    /// refunded after all). `ACQ.TRADE_NOT_EXIST` → `Failed` (no trade, no money to move).
    ///
    /// # Errors
    /// [`ChannelError`] as in the module documentation.
    async fn query_refund(&self, order_id: Uuid, refund_id: Uuid) -> Result<ChannelRefundResult, ChannelError> {
        let biz = RefundQueryBiz {
            out_trade_no: order_id.hyphenated().to_string(),
            out_request_no: refund_id.hyphenated().to_string(),
        };
        let answer = self
            .client
            .call::<RefundQueryResponse>(METHOD_REFUND_QUERY, &to_json(&biz)?)
            .await?;
        match answer {
            Ok(r) => {
                let known = r.out_request_no.as_deref() == Some(biz.out_request_no.as_str())
                    && r.refund_amount.as_deref().is_some_and(|a| !a.is_empty());
                match r.refund_status.as_deref() {
                    Some("REFUND_SUCCESS") | None if known => Ok(ChannelRefundResult::Succeeded {
                        channel_refund_no: Some(biz.out_request_no),
                    }),
                    _ => Ok(ChannelRefundResult::Pending),
                }
            }
            Err(e) if e.sub_code_is("ACQ.TRADE_NOT_EXIST") => Ok(ChannelRefundResult::Failed { reason: e.to_string() }),
            Err(e) => Err(gateway_error(METHOD_REFUND_QUERY, e)),
        }
    }

    fn verify_callback(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Notification, CallbackError> {
        notify::verify_notification(&self.client.account, headers, body, now)
    }

    /// `success` (exactly, `text/plain`) stops Alipay's re-sends; `failure` makes it re-send on
    /// its schedule. Both with status 200: Alipay reads only the body.
    fn answer_callback(&self, outcome: Result<(), String>) -> CallbackAnswer {
        CallbackAnswer {
            status: 200,
            content_type: "text/plain",
            body: match outcome {
                Ok(()) => notify::ANSWER_SUCCESS,
                Err(_) => notify::ANSWER_FAILURE,
            }
            .to_string(),
        }
    }
}
