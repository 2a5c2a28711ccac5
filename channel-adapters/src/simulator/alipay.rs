//! An in-process Alipay open-platform gateway, for tests and local development.
//!
//! It holds its own RSA2 key pair (the "Alipay key", [`SimulatorKeys::shared`]) and our
//! application's public key, and behaves as <https://opendocs.alipay.com/common/02kf5q> and the
//! API pages say Alipay does:
//!
//! - `POST /gateway.do` (public parameters in the query or the form, `biz_content` in the form):
//!   checks `app_id`, `sign_type=RSA2`, `charset=utf-8`, `version=1.0` and our RSA2 signature
//!   over the sorted non-empty parameters except `sign`; a bad signature gets
//!   `40002 isv.invalid-signature`, unsigned, as do other gateway-level refusals. Then serves
//!   `alipay.trade.precreate`, `.query`, `.close`, `.refund` and `.fastpay.refund.query` from
//!   in-memory trades, with responses signed over the exact node text.
//! - `GET /gateway.do`: the cashier page of `alipay.trade.page.pay` / `.wap.pay`; a request
//!   that verifies records the trade and answers an HTML page.
//! - Like Alipay, a QR or cashier trade does not exist for `query`/`close`/`refund` until the
//!   payer scans or pays ([`AlipaySimulator::scan`], [`AlipaySimulator::pay`]).
//!
//! Driving it: [`AlipaySimulator::pay`] marks the trade `TRADE_SUCCESS` and POSTs a signed
//! `trade_status_sync` notification to the trade's `notify_url`, recording the answer
//! ([`Delivery`]); [`AlipaySimulator::resend`] re-sends a notification with the same `notify_id`;
//! [`AlipaySimulator::notify_refund`] sends the notification of a refund. Faults:
//! [`NotifyFaults`] for notifications (tampered signature, wrong key, other amount, other
//! `app_id`) and [`ResponseFault`] for the next gateway response (tampered or wrong-key
//! signature, unsigned, a business error, an HTTP status). [`AlipaySimulator::notification`]
//! and [`sign_notification`] build notification bodies without HTTP.
//!
//! Amounts inside the simulator are fen, as everywhere in payledger; yuan strings only on the
//! wire.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rsa::RsaPublicKey;

use super::{generate_key, signing_key_of};
use crate::rsa_sign::SigningKey;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::alipay::amount::{fen_to_yuan, yuan_to_fen};
use crate::alipay::sign::{request_sign_content, response_node_name, rsa2_sign, rsa2_verify, SIGN_TYPE};
use crate::alipay::types::{
    format_beijing, parse_beijing, RefundBiz, RefundQueryBiz, TradeCreateBiz, TradeRefBiz, TradeStatus, METHOD_CLOSE,
    METHOD_PAGE_PAY, METHOD_PRECREATE, METHOD_QUERY, METHOD_REFUND, METHOD_REFUND_QUERY, METHOD_WAP_PAY,
};

/// The seller (merchant PID) the simulator puts in notifications.
pub const SIM_SELLER_ID: &str = "2088000000000001";
/// The buyer the simulator puts in notifications.
pub const SIM_BUYER_ID: &str = "2088000000000002";
/// Timeout of the notification POST the simulator sends.
pub const NOTIFY_TIMEOUT_MS: u64 = 10_000;
/// Size of the simulator's generated keys.
pub const SIM_KEY_BITS: usize = 2048;

/// The simulator's keys: the "Alipay" key pair it signs with, and an unrelated key for the
/// wrong-key faults. Generated once per process (RSA-2048 generation is slow in debug builds).
pub struct SimulatorKeys {
    /// Signs responses and notifications, as Alipay's key does (with *ring*).
    pub alipay_private_key: SigningKey,
    /// What the adapter must be configured with as `alipay_public_key`.
    pub alipay_public_key: RsaPublicKey,
    /// A key Alipay does not hold (forgeries).
    pub wrong_private_key: SigningKey,
}

impl SimulatorKeys {
    /// The process-wide keys, generated on first use.
    ///
    /// # Panics
    /// If the operating system's random source fails (start-up of a test tool).
    pub fn shared() -> &'static SimulatorKeys {
        static KEYS: OnceLock<SimulatorKeys> = OnceLock::new();
        KEYS.get_or_init(|| {
            let alipay_private_key = signing_key_of(&generate_key(SIM_KEY_BITS));
            let wrong_private_key = signing_key_of(&generate_key(SIM_KEY_BITS));
            SimulatorKeys {
                alipay_public_key: alipay_private_key.public_key().clone(),
                alipay_private_key,
                wrong_private_key,
            }
        })
    }
}

/// Faults in one notification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyFaults {
    /// Corrupt the signature after signing.
    pub tamper_signature: bool,
    /// Sign with a key that is not Alipay's.
    pub wrong_key: bool,
    /// Report this `total_amount` (yuan string, sent verbatim) instead of the trade's.
    pub total_amount: Option<String>,
    /// Report this `app_id` instead of the application's (correctly signed).
    pub app_id: Option<String>,
    /// Report this `notify_time` (Beijing `yyyy-MM-dd HH:mm:ss`) instead of now.
    pub notify_time: Option<String>,
}

/// A fault in the next gateway response (server calls only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseFault {
    /// Change the node text after signing it.
    TamperSignature,
    /// Sign with a key that is not Alipay's.
    WrongKey,
    /// Leave the `sign` out.
    Unsigned,
    /// Answer this error (signed) instead of serving the call.
    Business {
        code: String,
        sub_code: String,
        sub_msg: String,
    },
    /// Answer this HTTP status with an empty body.
    HttpStatus(u16),
}

/// A notification the simulator sent, and what it was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Where it was POSTed (the `notify_url` of the request that created the trade).
    pub notify_url: String,
    /// Its `notify_id`; a re-send keeps it.
    pub notify_id: String,
    /// The form body sent.
    pub body: String,
    /// HTTP status of the answer; 0 when it could not be delivered.
    pub status: u16,
    /// Answer body; Alipay stops re-sending only on exactly `success`.
    pub answer: String,
}

impl Delivery {
    /// Whether Alipay would consider it delivered.
    pub fn acknowledged(&self) -> bool {
        self.answer == "success"
    }
}

/// Why a driver call did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// No order with this `out_trade_no` was ever placed at the simulator.
    #[error("no trade {0}")]
    NoTrade(String),
    /// The trade is not waiting for payment (already paid or closed).
    #[error("trade {out_trade_no} is {status}")]
    WrongState { out_trade_no: String, status: String },
    /// [`AlipaySimulator::resend`] before any notification of the trade.
    #[error("nothing was sent for {0} yet")]
    NothingSent(String),
    /// No refund with this `out_request_no` on the trade.
    #[error("no refund {0}")]
    NoRefund(String),
}

/// A trade as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTrade {
    /// Our order id.
    pub out_trade_no: String,
    /// The simulator's trade number (Alipay's `trade_no`: date, `22001`, sequence).
    pub trade_no: String,
    /// The method that created it (`alipay.trade.precreate`, `.page.pay`, `.wap.pay`).
    pub created_by: String,
    /// Fen.
    pub total_amount_fen: i64,
    /// As sent in `biz_content`.
    pub subject: String,
    /// From the creating request's public parameters.
    pub notify_url: String,
    /// `false` until the payer scans/opens the cashier or pays: Alipay answers
    /// `ACQ.TRADE_NOT_EXIST` before that.
    pub exists: bool,
    /// Alipay's trade status.
    pub status: TradeStatus,
    /// As sent (`yyyy-MM-dd HH:mm:ss`, Beijing time); not enforced by the simulator.
    pub time_expire: Option<String>,
    /// Set by [`AlipaySimulator::pay`].
    pub paid_at: Option<DateTime<Utc>>,
    /// Refunds by `out_request_no`, fen.
    pub refunds: BTreeMap<String, i64>,
}

impl SimTrade {
    fn refunded_fen(&self) -> i64 {
        self.refunds.values().sum()
    }
}

struct SimState {
    trades: HashMap<String, SimTrade>,
    next_trade: u64,
    response_faults: VecDeque<ResponseFault>,
    deliveries: Vec<Delivery>,
    /// Last notification body per out_trade_no, for re-sends.
    last_sent: HashMap<String, (String, String, String)>,
    requests_refused: Vec<String>,
}

struct Inner {
    app_id: String,
    app_public_key: RsaPublicKey,
    base_url: String,
    state: Mutex<SimState>,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        // A test that panicked while holding the lock must not hide the state from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running simulated Alipay gateway. Dropping it stops the server.
pub struct AlipaySimulator {
    inner: Arc<Inner>,
    http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for AlipaySimulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl AlipaySimulator {
    /// Starts a gateway on `127.0.0.1` (a free port) for the application `app_id` whose
    /// requests `app_public_key` verifies.
    ///
    /// # Errors
    /// The listener's I/O error.
    pub async fn start(app_id: &str, app_public_key: RsaPublicKey) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let inner = Arc::new(Inner {
            app_id: app_id.to_string(),
            app_public_key,
            base_url,
            state: Mutex::new(SimState {
                trades: HashMap::new(),
                next_trade: 1,
                response_faults: VecDeque::new(),
                deliveries: Vec::new(),
                last_sent: HashMap::new(),
                requests_refused: Vec::new(),
            }),
        });
        let router = Router::new()
            .route("/gateway.do", get(gateway).post(gateway))
            .with_state(inner.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        // Keys are generated now, not inside the first request's handler.
        let _ = SimulatorKeys::shared();
        Ok(Self {
            inner,
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(NOTIFY_TIMEOUT_MS))
                .build()
                .unwrap_or_default(),
            shutdown: Some(tx),
        })
    }

    /// `http://127.0.0.1:<port>/gateway.do`: the adapter's `gateway_url`.
    pub fn gateway_url(&self) -> String {
        format!("{}/gateway.do", self.inner.base_url)
    }

    /// The public key to configure the adapter with as Alipay's.
    pub fn alipay_public_key(&self) -> RsaPublicKey {
        SimulatorKeys::shared().alipay_public_key.clone()
    }

    /// The trade `out_trade_no`, if the gateway ever saw it.
    pub fn trade(&self, out_trade_no: &str) -> Option<SimTrade> {
        self.inner.lock().trades.get(out_trade_no).cloned()
    }

    /// Every notification sent so far, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner.lock().deliveries.clone()
    }

    /// `sub_code`s of requests refused before the business layer (bad signature, app id, …).
    pub fn refused_requests(&self) -> Vec<String> {
        self.inner.lock().requests_refused.clone()
    }

    /// Queues a fault for the next server-call response.
    pub fn inject(&self, fault: ResponseFault) {
        self.inner.lock().response_faults.push_back(fault);
    }

    /// The payer scans the QR code or opens the cashier: the trade now exists, `WAIT_BUYER_PAY`.
    ///
    /// # Errors
    /// [`SimError::NoTrade`].
    pub fn scan(&self, out_trade_no: &str) -> Result<(), SimError> {
        let mut state = self.inner.lock();
        let trade = state
            .trades
            .get_mut(out_trade_no)
            .ok_or_else(|| SimError::NoTrade(out_trade_no.into()))?;
        trade.exists = true;
        Ok(())
    }

    /// The payer pays: the trade becomes `TRADE_SUCCESS` and a signed notification is POSTed
    /// to its `notify_url`.
    ///
    /// # Errors
    /// [`SimError::NoTrade`]; [`SimError::WrongState`] unless the trade awaits payment.
    pub async fn pay(&self, out_trade_no: &str) -> Result<Delivery, SimError> {
        self.pay_with(out_trade_no, &NotifyFaults::default()).await
    }

    /// As [`AlipaySimulator::pay`], with faults in the notification.
    ///
    /// # Errors
    /// As [`AlipaySimulator::pay`].
    pub async fn pay_with(&self, out_trade_no: &str, faults: &NotifyFaults) -> Result<Delivery, SimError> {
        {
            let mut state = self.inner.lock();
            let trade = state
                .trades
                .get_mut(out_trade_no)
                .ok_or_else(|| SimError::NoTrade(out_trade_no.into()))?;
            if trade.status != TradeStatus::WaitBuyerPay {
                return Err(SimError::WrongState {
                    out_trade_no: out_trade_no.into(),
                    status: trade.status.as_str().into(),
                });
            }
            trade.exists = true;
            trade.status = TradeStatus::TradeSuccess;
            trade.paid_at = Some(Utc::now());
        }
        let (notify_url, body) = self.notification(out_trade_no, faults)?;
        Ok(self.send(out_trade_no, notify_url, body).await)
    }

    /// The body of a payment notification about the trade as it stands (normally
    /// `TRADE_SUCCESS`), signed as Alipay signs, with `faults`; and where it would go.
    ///
    /// # Errors
    /// [`SimError::NoTrade`].
    pub fn notification(&self, out_trade_no: &str, faults: &NotifyFaults) -> Result<(String, String), SimError> {
        let state = self.inner.lock();
        let trade = state
            .trades
            .get(out_trade_no)
            .ok_or_else(|| SimError::NoTrade(out_trade_no.into()))?;
        let mut params = self.base_notify_params(trade, faults);
        let yuan = fen_to_yuan(trade.total_amount_fen).unwrap_or_default();
        let total = faults.total_amount.clone().unwrap_or(yuan);
        params.insert("total_amount".into(), total.clone());
        params.insert("receipt_amount".into(), total.clone());
        params.insert("buyer_pay_amount".into(), total);
        if let Some(paid_at) = trade.paid_at {
            params.insert("gmt_payment".into(), format_beijing(paid_at));
        }
        Ok((trade.notify_url.clone(), sign_notification(&params, faults)))
    }

    /// Sends the notification of refund `out_request_no` of the trade (`TRADE_SUCCESS` after a
    /// partial refund, `TRADE_CLOSED` after a full one, with `refund_fee`, `gmt_refund` and
    /// `out_biz_no`), as Alipay does to the payment's `notify_url`.
    ///
    /// # Errors
    /// [`SimError::NoTrade`], [`SimError::NoRefund`].
    pub async fn notify_refund(&self, out_trade_no: &str, out_request_no: &str) -> Result<Delivery, SimError> {
        let (notify_url, body) = {
            let state = self.inner.lock();
            let trade = state
                .trades
                .get(out_trade_no)
                .ok_or_else(|| SimError::NoTrade(out_trade_no.into()))?;
            if !trade.refunds.contains_key(out_request_no) {
                return Err(SimError::NoRefund(out_request_no.into()));
            }
            let mut params = self.base_notify_params(trade, &NotifyFaults::default());
            params.insert(
                "total_amount".into(),
                fen_to_yuan(trade.total_amount_fen).unwrap_or_default(),
            );
            params.insert(
                "refund_fee".into(),
                fen_to_yuan(trade.refunded_fen()).unwrap_or_default(),
            );
            params.insert("gmt_refund".into(), format!("{}.000", format_beijing(Utc::now())));
            params.insert("out_biz_no".into(), out_request_no.into());
            if let Some(paid_at) = trade.paid_at {
                params.insert("gmt_payment".into(), format_beijing(paid_at));
            }
            (
                trade.notify_url.clone(),
                sign_notification(&params, &NotifyFaults::default()),
            )
        };
        Ok(self.send(out_trade_no, notify_url, body).await)
    }

    /// Re-sends the last notification of the trade unchanged (same `notify_id`), as Alipay does
    /// when it did not get `success`.
    ///
    /// # Errors
    /// [`SimError::NothingSent`].
    pub async fn resend(&self, out_trade_no: &str) -> Result<Delivery, SimError> {
        let (notify_url, body) = {
            let state = self.inner.lock();
            let (url, body, _) = state
                .last_sent
                .get(out_trade_no)
                .ok_or_else(|| SimError::NothingSent(out_trade_no.into()))?;
            (url.clone(), body.clone())
        };
        Ok(self.send(out_trade_no, notify_url, body).await)
    }

    fn base_notify_params(&self, trade: &SimTrade, faults: &NotifyFaults) -> BTreeMap<String, String> {
        let now = format_beijing(Utc::now());
        let pairs = [
            ("notify_time", faults.notify_time.clone().unwrap_or_else(|| now.clone())),
            ("notify_type", "trade_status_sync".into()),
            ("notify_id", Uuid::new_v4().simple().to_string()),
            (
                "app_id",
                faults.app_id.clone().unwrap_or_else(|| self.inner.app_id.clone()),
            ),
            ("auth_app_id", self.inner.app_id.clone()),
            ("charset", "utf-8".into()),
            ("version", "1.0".into()),
            ("sign_type", SIGN_TYPE.into()),
            ("trade_no", trade.trade_no.clone()),
            ("out_trade_no", trade.out_trade_no.clone()),
            ("trade_status", trade.status.as_str().into()),
            ("subject", trade.subject.clone()),
            ("seller_id", SIM_SELLER_ID.into()),
            ("buyer_id", SIM_BUYER_ID.into()),
            ("gmt_create", now),
        ];
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    async fn send(&self, out_trade_no: &str, notify_url: String, body: String) -> Delivery {
        let notify_id = url::form_urlencoded::parse(body.as_bytes())
            .find(|(k, _)| k == "notify_id")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let (status, answer) = match self
            .http
            .post(&notify_url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded; charset=utf-8")
            .body(body.clone())
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.text().await.unwrap_or_default())
            }
            Err(e) => (0, e.to_string()),
        };
        let delivery = Delivery {
            notify_url: notify_url.clone(),
            notify_id: notify_id.clone(),
            body: body.clone(),
            status,
            answer,
        };
        let mut state = self.inner.lock();
        state
            .last_sent
            .insert(out_trade_no.to_string(), (notify_url, body, notify_id));
        state.deliveries.push(delivery.clone());
        delivery
    }
}

/// Signs notification parameters as Alipay does (RSA2 over every parameter but `sign` and
/// `sign_type`, sorted) and form-encodes them with `sign` and `sign_type=RSA2`. `faults` may
/// sign with the wrong key or corrupt the signature.
pub fn sign_notification(params: &BTreeMap<String, String>, faults: &NotifyFaults) -> String {
    let keys = SimulatorKeys::shared();
    let key = if faults.wrong_key {
        &keys.wrong_private_key
    } else {
        &keys.alipay_private_key
    };
    let content = crate::alipay::sign::notify_sign_content(params, false);
    let mut sign = rsa2_sign(key, &content).expect("RSA-2048 signs");
    if faults.tamper_signature {
        sign = tamper_base64_signature(&sign);
    }
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        if k != "sign" && k != "sign_type" {
            form.append_pair(k, v);
        }
    }
    form.append_pair("sign_type", SIGN_TYPE);
    form.append_pair("sign", &sign);
    form.finish()
}

/// Flips one bit of a base64 signature, keeping it valid base64 of the same length.
fn tamper_base64_signature(sign: &str) -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    match engine.decode(sign) {
        Ok(mut bytes) if !bytes.is_empty() => {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x01;
            engine.encode(bytes)
        }
        _ => format!("A{sign}"),
    }
}

/// What a request handler answers.
enum Answer {
    /// A response node for the method: signed unless `signed` is false.
    Node { node: serde_json::Value, signed: bool },
    /// An HTML page (page.pay/wap.pay).
    Html(String),
}

fn error_node(code: &str, msg: &str, sub_code: &str, sub_msg: &str) -> serde_json::Value {
    json!({"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg})
}

fn gateway_refusal(sub_code: &str, sub_msg: &str) -> Answer {
    Answer::Node {
        node: error_node("40002", "Invalid Arguments", sub_code, sub_msg),
        signed: false,
    }
}

fn business(sub_code: &str, sub_msg: &str) -> Answer {
    Answer::Node {
        node: error_node("40004", "Business Failed", sub_code, sub_msg),
        signed: true,
    }
}

fn success<T: Serialize>(body: &T) -> Answer {
    let mut node = serde_json::to_value(body).unwrap_or_else(|_| json!({}));
    if let Some(map) = node.as_object_mut() {
        map.insert("code".into(), json!("10000"));
        map.insert("msg".into(), json!("Success"));
    }
    Answer::Node { node, signed: true }
}

async fn gateway(State(inner): State<Arc<Inner>>, method: Method, RawQuery(query): RawQuery, body: Bytes) -> Response {
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    let sources = [query.unwrap_or_default().into_bytes(), body.to_vec()];
    let mut repeated = false;
    for source in &sources {
        for (k, v) in url::form_urlencoded::parse(source) {
            repeated |= params.insert(k.into_owned(), v.into_owned()).is_some();
        }
    }
    let api = params.get("method").cloned().unwrap_or_default();
    let node_name = if api.is_empty() {
        "error_response".to_string()
    } else {
        response_node_name(&api)
    };
    let is_page = api == METHOD_PAGE_PAY || api == METHOD_WAP_PAY;

    let answer = if repeated {
        gateway_refusal("isv.invalid-parameter", "参数重复")
    } else {
        match check_request(&inner, &params) {
            Err(refusal) => {
                inner.lock().requests_refused.push(refusal.0.to_string());
                gateway_refusal(refusal.0, refusal.1)
            }
            Ok(()) if is_page && method == Method::GET => cashier(&inner, &api, &params),
            Ok(()) if method != Method::POST => gateway_refusal("isv.invalid-method", "不支持的请求方式"),
            Ok(()) => {
                let fault = inner.lock().response_faults.pop_front();
                match fault {
                    Some(ResponseFault::HttpStatus(code)) => {
                        return StatusCode::from_u16(code)
                            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                            .into_response();
                    }
                    Some(ResponseFault::Business {
                        code,
                        sub_code,
                        sub_msg,
                    }) => {
                        let msg = if code == "20000" {
                            "Service Currently Unavailable"
                        } else {
                            "Business Failed"
                        };
                        let answer = Answer::Node {
                            node: error_node(&code, msg, &sub_code, &sub_msg),
                            signed: true,
                        };
                        return render(&node_name, answer, None);
                    }
                    other => {
                        let answer = serve(&inner, &api, &params);
                        return render(&node_name, answer, other);
                    }
                }
            }
        }
    };
    render(&node_name, answer, None)
}

/// Public parameters and our signature, as Alipay's gateway checks them. `Err((sub_code,
/// sub_msg))` is a gateway-level refusal.
fn check_request(inner: &Inner, params: &BTreeMap<String, String>) -> Result<(), (&'static str, &'static str)> {
    let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
    for (name, sub_code) in [
        ("app_id", "isv.missing-app-id"),
        ("method", "isv.missing-method"),
        ("sign", "isv.missing-signature"),
        ("sign_type", "isv.missing-signature-type"),
        ("timestamp", "isv.missing-timestamp"),
        ("version", "isv.missing-version"),
    ] {
        if get(name).is_none() {
            return Err((sub_code, "缺少必选参数"));
        }
    }
    if get("app_id") != Some(inner.app_id.as_str()) {
        return Err(("isv.invalid-app-id", "无效的AppID参数"));
    }
    if get("sign_type") != Some(SIGN_TYPE) {
        return Err(("isv.invalid-signature-type", "无效的签名类型"));
    }
    let sign = get("sign").unwrap_or_default();
    if !rsa2_verify(&inner.app_public_key, &request_sign_content(params), sign) {
        return Err(("isv.invalid-signature", "验签出错"));
    }
    if get("charset").is_some_and(|c| !c.eq_ignore_ascii_case("utf-8")) {
        return Err(("isv.invalid-charset", "字符集错误"));
    }
    if get("version") != Some("1.0") {
        return Err(("isv.invalid-version", "版本号错误"));
    }
    if get("timestamp").and_then(parse_beijing).is_none() {
        return Err(("isv.invalid-timestamp", "非法的时间戳参数"));
    }
    Ok(())
}

fn render(node_name: &str, answer: Answer, fault: Option<ResponseFault>) -> Response {
    let (node, signed) = match answer {
        Answer::Html(page) => {
            return ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response();
        }
        Answer::Node { node, signed } => (node, signed),
    };
    let text = node.to_string();
    let keys = SimulatorKeys::shared();
    let body = match (signed, fault) {
        (false, _) | (_, Some(ResponseFault::Unsigned)) => format!("{{\"{node_name}\":{text}}}"),
        (true, Some(ResponseFault::WrongKey)) => {
            let sign = rsa2_sign(&keys.wrong_private_key, &text).expect("RSA-2048 signs");
            format!("{{\"{node_name}\":{text},\"sign\":\"{sign}\"}}")
        }
        (true, Some(ResponseFault::TamperSignature)) => {
            let sign = rsa2_sign(&keys.alipay_private_key, &text).expect("RSA-2048 signs");
            // The text changes after signing ("Success" → "success"): what a meddler would do.
            let tampered = text.replacen("Success", "success", 1);
            format!("{{\"{node_name}\":{tampered},\"sign\":\"{sign}\"}}")
        }
        (true, _) => {
            let sign = rsa2_sign(&keys.alipay_private_key, &text).expect("RSA-2048 signs");
            format!("{{\"{node_name}\":{text},\"sign\":\"{sign}\"}}")
        }
    };
    ([(header::CONTENT_TYPE, "application/json;charset=utf-8")], body).into_response()
}

fn biz<T: serde::de::DeserializeOwned>(params: &BTreeMap<String, String>) -> Result<T, Answer> {
    let text = params.get("biz_content").map(String::as_str).unwrap_or("{}");
    serde_json::from_str(text).map_err(|_| Answer::Node {
        node: error_node(
            "40002",
            "Invalid Arguments",
            "isv.invalid-parameter",
            "biz_content 格式错误",
        ),
        signed: true,
    })
}

/// Records (or re-finds) the trade a create call names. `Err` is the answer refusing it.
fn open_trade(
    inner: &Inner,
    api: &str,
    params: &BTreeMap<String, String>,
    create: &TradeCreateBiz,
) -> Result<SimTrade, Answer> {
    let Ok(total_amount_fen) = yuan_to_fen(&create.total_amount) else {
        return Err(business("ACQ.INVALID_PARAMETER", "total_amount 非法"));
    };
    if !(1..=crate::alipay::amount::ALIPAY_AMOUNT_FEN_MAX).contains(&total_amount_fen) {
        return Err(business("ACQ.TOTAL_FEE_EXCEED", "订单金额超过限额"));
    }
    if create.out_trade_no.is_empty() || create.out_trade_no.len() > 64 {
        return Err(business("ACQ.INVALID_PARAMETER", "out_trade_no 非法"));
    }
    let mut state = inner.lock();
    if let Some(existing) = state.trades.get(&create.out_trade_no) {
        if existing.total_amount_fen != total_amount_fen || existing.subject != create.subject {
            return Err(business("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改"));
        }
        return match existing.status {
            TradeStatus::TradeSuccess | TradeStatus::TradeFinished => {
                Err(business("ACQ.TRADE_HAS_SUCCESS", "交易已被支付"))
            }
            TradeStatus::TradeClosed => Err(business("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")),
            TradeStatus::WaitBuyerPay => Ok(existing.clone()),
        };
    }
    let trade_no = format!("{}22001{:013}", Utc::now().format("%Y%m%d"), state.next_trade);
    state.next_trade += 1;
    let trade = SimTrade {
        out_trade_no: create.out_trade_no.clone(),
        trade_no,
        created_by: api.to_string(),
        total_amount_fen,
        subject: create.subject.clone(),
        notify_url: params.get("notify_url").cloned().unwrap_or_default(),
        exists: false,
        status: TradeStatus::WaitBuyerPay,
        time_expire: create.time_expire.clone(),
        paid_at: None,
        refunds: BTreeMap::new(),
    };
    state.trades.insert(trade.out_trade_no.clone(), trade.clone());
    Ok(trade)
}

fn cashier(inner: &Inner, api: &str, params: &BTreeMap<String, String>) -> Answer {
    let create: TradeCreateBiz = match biz(params) {
        Ok(c) => c,
        Err(_) => return Answer::Html("<html><body>ALIPAY ERROR: isv.invalid-parameter</body></html>".into()),
    };
    match open_trade(inner, api, params, &create) {
        Ok(trade) => Answer::Html(format!(
            "<html><body><h1>Alipay cashier (simulator)</h1><p>{}</p><p>{} yuan</p><p>out_trade_no {}</p></body></html>",
            html_escape(&trade.subject),
            fen_to_yuan(trade.total_amount_fen).unwrap_or_default(),
            html_escape(&trade.out_trade_no),
        )),
        Err(Answer::Node { node, .. }) => Answer::Html(format!(
            "<html><body>ALIPAY ERROR: {}</body></html>",
            html_escape(node["sub_code"].as_str().unwrap_or_default())
        )),
        Err(html) => html,
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn serve(inner: &Inner, api: &str, params: &BTreeMap<String, String>) -> Answer {
    let result = match api {
        METHOD_PRECREATE => precreate(inner, params),
        METHOD_QUERY => query(inner, params),
        METHOD_CLOSE => close(inner, params),
        METHOD_REFUND => refund(inner, params),
        METHOD_REFUND_QUERY => refund_query(inner, params),
        _ => Err(gateway_refusal("isv.invalid-method", "不存在的方法名")),
    };
    result.unwrap_or_else(|answer| answer)
}

fn precreate(inner: &Inner, params: &BTreeMap<String, String>) -> Result<Answer, Answer> {
    let create: TradeCreateBiz = biz(params)?;
    let trade = open_trade(inner, METHOD_PRECREATE, params, &create)?;
    Ok(success(&json!({
        "out_trade_no": trade.out_trade_no,
        "qr_code": format!("{}/qr/{}", inner.base_url, trade.out_trade_no),
    })))
}

/// The existing trade a query/close/refund names, or `ACQ.TRADE_NOT_EXIST`.
fn existing_trade<'a>(
    state: &'a mut SimState,
    out_trade_no: Option<&str>,
    trade_no: Option<&str>,
) -> Result<&'a mut SimTrade, Answer> {
    let not_exist = || business("ACQ.TRADE_NOT_EXIST", "交易不存在");
    let trade = match (out_trade_no, trade_no) {
        (Some(o), _) => state.trades.get_mut(o),
        (None, Some(t)) => state.trades.values_mut().find(|x| x.trade_no == t),
        (None, None) => {
            return Err(business(
                "ACQ.INVALID_PARAMETER",
                "out_trade_no 与 trade_no 不能同时为空",
            ))
        }
    };
    match trade {
        Some(t) if t.exists => {
            if trade_no.is_some_and(|n| n != t.trade_no) {
                return Err(not_exist());
            }
            Ok(t)
        }
        _ => Err(not_exist()),
    }
}

fn query(inner: &Inner, params: &BTreeMap<String, String>) -> Result<Answer, Answer> {
    let r: TradeRefBiz = biz(params)?;
    let mut state = inner.lock();
    let trade = existing_trade(&mut state, r.out_trade_no.as_deref(), r.trade_no.as_deref())?;
    let yuan = fen_to_yuan(trade.total_amount_fen).unwrap_or_default();
    let mut node = json!({
        "trade_no": trade.trade_no,
        "out_trade_no": trade.out_trade_no,
        "buyer_logon_id": "159****5620",
        "trade_status": trade.status.as_str(),
        "total_amount": yuan,
    });
    if let Some(paid_at) = trade.paid_at {
        node["send_pay_date"] = json!(format_beijing(paid_at));
        node["buyer_pay_amount"] = json!(yuan);
    }
    Ok(success(&node))
}

fn close(inner: &Inner, params: &BTreeMap<String, String>) -> Result<Answer, Answer> {
    let r: TradeRefBiz = biz(params)?;
    let mut state = inner.lock();
    let trade = existing_trade(&mut state, r.out_trade_no.as_deref(), r.trade_no.as_deref())?;
    match trade.status {
        TradeStatus::WaitBuyerPay | TradeStatus::TradeClosed => {
            trade.status = TradeStatus::TradeClosed;
            Ok(success(
                &json!({"trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no}),
            ))
        }
        TradeStatus::TradeSuccess | TradeStatus::TradeFinished => {
            Err(business("ACQ.TRADE_STATUS_ERROR", "交易状态不合法"))
        }
    }
}

fn refund(inner: &Inner, params: &BTreeMap<String, String>) -> Result<Answer, Answer> {
    let r: RefundBiz = biz(params)?;
    let Ok(amount_fen) = yuan_to_fen(&r.refund_amount) else {
        return Err(business("ACQ.INVALID_PARAMETER", "refund_amount 非法"));
    };
    if amount_fen <= 0 {
        return Err(business("ACQ.INVALID_PARAMETER", "refund_amount 非法"));
    }
    let mut state = inner.lock();
    let trade = existing_trade(&mut state, Some(&r.out_trade_no), r.trade_no.as_deref())?;
    let answer = |trade: &SimTrade, fund_change: &str| {
        success(&json!({
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "buyer_logon_id": "159****5620",
            "fund_change": fund_change,
            "refund_fee": fen_to_yuan(trade.refunded_fen()).unwrap_or_default(),
            "gmt_refund_pay": format_beijing(Utc::now()),
        }))
    };
    if let Some(&previous) = trade.refunds.get(&r.out_request_no) {
        // Alipay refunds once per out_request_no; the same request again moves nothing.
        if previous != amount_fen {
            return Err(business("ACQ.DISCORDANT_REPEAT_REQUEST", "请求信息不一致"));
        }
        return Ok(answer(trade, "N"));
    }
    match trade.status {
        TradeStatus::TradeSuccess => {}
        TradeStatus::TradeFinished => return Err(business("ACQ.TRADE_HAS_FINISHED", "交易已完结")),
        _ => return Err(business("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")),
    }
    if trade.refunded_fen() + amount_fen > trade.total_amount_fen {
        return Err(business("ACQ.REASON_TRADE_REFUND_FEE_ERR", "退款金额超限"));
    }
    trade.refunds.insert(r.out_request_no.clone(), amount_fen);
    if trade.refunded_fen() == trade.total_amount_fen {
        trade.status = TradeStatus::TradeClosed;
    }
    Ok(answer(trade, "Y"))
}

fn refund_query(inner: &Inner, params: &BTreeMap<String, String>) -> Result<Answer, Answer> {
    let r: RefundQueryBiz = biz(params)?;
    let mut state = inner.lock();
    let trade = existing_trade(&mut state, Some(&r.out_trade_no), None)?;
    match trade.refunds.get(&r.out_request_no) {
        // Alipay: no business fields means the refund was not received or did not succeed.
        None => Ok(success(&json!({}))),
        Some(&amount_fen) => Ok(success(&json!({
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "out_request_no": r.out_request_no,
            "total_amount": fen_to_yuan(trade.total_amount_fen).unwrap_or_default(),
            "refund_amount": fen_to_yuan(amount_fen).unwrap_or_default(),
            "refund_status": "REFUND_SUCCESS",
        }))),
    }
}
