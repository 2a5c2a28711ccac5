//! An in-process WeChat Pay API v3 for tests: an axum server on `127.0.0.1` that speaks the
//! protocol as [`crate::wechatpay`] expects it, with its own platform key pair.
//!
//! What it does, as WeChat Pay does:
//! - Checks every request's `Authorization` (mchid, merchant serial, timestamp within 5 min,
//!   SHA256withRSA over `METHOD\nURL\ntimestamp\nnonce\nbody\n` with the merchant public key);
//!   anything wrong is `401 {"code":"SIGN_ERROR"}`.
//! - Keeps orders and refunds in memory: Native/H5/JSAPI placement (the same `out_trade_no`
//!   with the same parameters answers the same prepay; other parameters `400 INVALID_REQUEST`),
//!   query (`404 ORDER_NOT_EXIST`), close (`204`; paid: `400 ORDERPAID`), refund (answers
//!   `PROCESSING`; one refund per `out_refund_no`; over the refundable amount
//!   `400 INVALID_REQUEST`), refund query (`404 RESOURCE_NOT_EXISTS`).
//! - Signs every answer with the platform key (`Wechatpay-Signature`, `-Timestamp`, `-Nonce`,
//!   `-Serial`), unless an [`AnswerFault`] says otherwise.
//!
//! Driving it: [`WechatPaySimulator::pay`] marks an order paid and POSTs `TRANSACTION.SUCCESS`
//! to its `notify_url` ([`WechatPaySimulator::pay_without_notification`]: the notification is
//! lost); [`WechatPaySimulator::complete_refund`] settles a refund and POSTs
//! `REFUND.<status>`; [`WechatPaySimulator::redeliver`] re-sends a notification (same `id`, fresh
//! signature), as WeChat Pay's retries do. [`NotifyFaults`] forge the notifications
//! (tampered or wrong-key signature, stale timestamp, unknown serial, bad AES tag, another
//! amount, mchid or appid). [`NotificationBuilder`] builds the same notifications without HTTP.
//!
//! Keys: RSA-2048 generation (by the `rsa` crate, test-only) is slow in debug builds, so
//! [`test_platform_keys`], [`test_merchant_key`] and [`test_wrong_key`] generate once per
//! process. Everything the simulator signs is signed by *ring*, as the adapter signs.
//!
//! Protocol: <https://pay.weixin.qq.com/wiki/doc/apiv3/wechatpay/wechatpay4_0.shtml> (signatures),
//! `wechatpay4_2.shtml` (resource encryption), `apis/chapter3_4_*.shtml` (Native API).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use rsa::{RsaPrivateKey, RsaPublicKey};

use super::{generate_key, signing_key_of};
use crate::rsa_sign::SigningKey;
use serde::Serialize;

use crate::wechatpay::sign::{self, Authorization, HEADER_NONCE, HEADER_SERIAL, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use crate::wechatpay::types::{
    CloseRequest, EncryptedResource, ErrorBody, NotificationEnvelope, OrderRequest, PrepayResponse, Refund,
    RefundAmount, RefundRequest, RefundResource, Transaction, TransactionAmount,
};
use crate::wechatpay::{aead, cst_rfc3339, WechatPayAccount, WechatPayIds};

/// How far a request's `Authorization` timestamp may be from the simulator's clock, seconds.
pub const REQUEST_TOLERANCE_SECONDS: i64 = 300;
/// Size of the generated RSA keys, bits (WeChat Pay's size).
pub const KEY_BITS: usize = 2048;
/// Serial of [`test_platform_keys`], in the "WeChat Pay public key" id form.
pub const TEST_PLATFORM_SERIAL: &str = "PUB_KEY_ID_0114232134912410000000000000";
/// `mchid` of [`WechatPaySimulator::start_with_test_account`].
pub const TEST_MCH_ID: &str = "1230000109";
/// `appid` of the test account.
pub const TEST_APP_ID: &str = "wxd678efh567hg6787";
/// Merchant certificate serial of the test account.
pub const TEST_MERCHANT_SERIAL: &str = "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB";
/// APIv3 key of the test account.
pub const TEST_API_V3_KEY: &[u8; 32] = b"simulatorApiV3Key000000000000032";
/// The associated data WeChat Pay uses for transaction resources.
const TRANSACTION_AD: &str = "transaction";
/// The associated data WeChat Pay uses for refund resources.
const REFUND_AD: &str = "refund";
/// Timeout of a notification POST, milliseconds.
pub const NOTIFY_TIMEOUT_MS: u64 = 5_000;

/// A platform key pair and the serial WeChat Pay names it by.
#[derive(Clone)]
pub struct PlatformKeys {
    /// Signs answers and notifications (with *ring*, as the adapter signs).
    pub private_key: SigningKey,
    pub public_key: RsaPublicKey,
    pub serial_no: String,
}

impl std::fmt::Debug for PlatformKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformKeys")
            .field("serial_no", &self.serial_no)
            .finish_non_exhaustive()
    }
}

/// The simulator's platform keys, generated once per process, serial [`TEST_PLATFORM_SERIAL`].
pub fn test_platform_keys() -> &'static PlatformKeys {
    static KEYS: OnceLock<PlatformKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let private_key = signing_key_of(&generate_key(KEY_BITS));
        PlatformKeys {
            public_key: private_key.public_key().clone(),
            private_key,
            serial_no: TEST_PLATFORM_SERIAL.into(),
        }
    })
}

/// A merchant API private key for tests, generated once per process; an `rsa` key so that tests
/// can write it out as PEM (the account signs with [`test_merchant_signing_key`]).
pub fn test_merchant_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| generate_key(KEY_BITS))
}

/// [`test_merchant_key`] loaded into *ring*: what [`test_account`] signs with.
pub fn test_merchant_signing_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| signing_key_of(test_merchant_key()))
}

/// A key nobody trusts, for "signed with a wrong key" faults; generated once per process.
pub fn test_wrong_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| signing_key_of(&generate_key(KEY_BITS)))
}

/// The test account: [`TEST_MCH_ID`], [`TEST_APP_ID`], [`test_merchant_key`], trusting
/// [`test_platform_keys`], notifications to `notify_url`, calling `base_url`.
pub fn test_account(base_url: &str, notify_url: &str) -> WechatPayAccount {
    let ids = WechatPayIds {
        account_id: "simulated".into(),
        app_id: TEST_APP_ID.into(),
        mch_id: TEST_MCH_ID.into(),
        merchant_serial_no: TEST_MERCHANT_SERIAL.into(),
        platform_serial_no: TEST_PLATFORM_SERIAL.into(),
        notify_url: notify_url.into(),
    };
    WechatPayAccount::new(
        ids,
        test_merchant_signing_key().clone(),
        test_platform_keys().public_key.clone(),
        TEST_API_V3_KEY,
    )
    .expect("the test account is valid")
    .with_base_url(base_url)
}

/// What the simulator knows about the merchant.
#[derive(Clone)]
pub struct SimulatorConfig {
    pub mch_id: String,
    pub app_id: String,
    /// The `serial_no` our requests must name.
    pub merchant_serial_no: String,
    /// Verifies our requests.
    pub merchant_public_key: RsaPublicKey,
    /// Encrypts notification resources.
    pub api_v3_key: [u8; 32],
    /// Signs answers and notifications.
    pub platform: PlatformKeys,
}

impl SimulatorConfig {
    /// The config matching [`test_account`], signing with [`test_platform_keys`].
    pub fn for_test_account() -> Self {
        Self {
            mch_id: TEST_MCH_ID.into(),
            app_id: TEST_APP_ID.into(),
            merchant_serial_no: TEST_MERCHANT_SERIAL.into(),
            merchant_public_key: test_merchant_key().to_public_key(),
            api_v3_key: *TEST_API_V3_KEY,
            platform: test_platform_keys().clone(),
        }
    }

    /// The config matching `account`, signing with `platform` (whose public key the account must
    /// trust).
    pub fn for_account(account: &WechatPayAccount, platform: PlatformKeys) -> Self {
        Self {
            mch_id: account.mch_id.clone(),
            app_id: account.app_id.clone(),
            merchant_serial_no: account.merchant_serial_no.clone(),
            merchant_public_key: account.merchant_private_key.public_key().clone(),
            api_v3_key: account.api_v3_key,
            platform,
        }
    }
}

/// Forgeries applied to a notification. The default forges nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyFaults {
    /// Flip a bit of the signature.
    pub tamper_signature: bool,
    /// Sign with [`test_wrong_key`] instead of the platform key.
    pub wrong_key: bool,
    /// Added to the signature timestamp, seconds (e.g. `-301`: stale).
    pub timestamp_offset_seconds: i64,
    /// `Wechatpay-Serial` other than the platform's.
    pub serial_no: Option<String>,
    /// Flip a bit of the AES-GCM tag (the signature is made over the altered body, so it
    /// verifies).
    pub bad_aes_tag: bool,
    /// `amount.total` other than the order's, fen.
    pub amount_total: Option<i64>,
    /// Another `mchid` in the resource.
    pub mchid: Option<String>,
    /// Another `appid` in the resource.
    pub appid: Option<String>,
}

/// Forgeries applied to API answers, until cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFault {
    /// No signature headers.
    Unsigned,
    /// Signed with [`test_wrong_key`].
    WrongKey,
    /// `500 SYSTEM_ERROR` instead of handling the request.
    ServerError,
}

/// A notification ready to POST: the envelope `id`, the headers and the exact body.
#[derive(Debug, Clone)]
pub struct SignedNotification {
    pub id: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

/// A notification that was POSTed, and the HTTP status the receiver answered.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub notification: SignedNotification,
    pub notify_url: String,
    pub status: u16,
}

/// Why the simulator could not do what a test asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("no order with out_trade_no {0}")]
    UnknownOrder(String),
    #[error("no refund with out_refund_no {0}")]
    UnknownRefund(String),
    #[error("refund status must be SUCCESS, ABNORMAL or CLOSED, not {0}")]
    BadRefundStatus(String),
    #[error("notification not delivered: {0}")]
    NotDelivered(String),
}

/// Builds notifications as WeChat Pay does: resource encrypted with the APIv3 key, envelope
/// signed with the platform key. No HTTP.
#[derive(Clone)]
pub struct NotificationBuilder {
    api_v3_key: [u8; 32],
    platform: PlatformKeys,
}

impl NotificationBuilder {
    /// A builder encrypting with `api_v3_key` and signing with `platform`.
    pub fn new(api_v3_key: [u8; 32], platform: PlatformKeys) -> Self {
        Self { api_v3_key, platform }
    }

    /// A `TRANSACTION.*` notification of `transaction` (faults `amount_total`, `mchid`, `appid`
    /// applied to it), `event_type` e.g. `TRANSACTION.SUCCESS`.
    pub fn transaction(
        &self,
        id: &str,
        event_type: &str,
        transaction: &Transaction,
        now: DateTime<Utc>,
        faults: &NotifyFaults,
    ) -> SignedNotification {
        let mut t = transaction.clone();
        if let (Some(total), Some(amount)) = (faults.amount_total, t.amount.as_mut()) {
            amount.total = total;
            amount.payer_total = Some(total);
        }
        if let Some(mchid) = &faults.mchid {
            t.mchid = mchid.clone();
        }
        if let Some(appid) = &faults.appid {
            t.appid = appid.clone();
        }
        self.envelope(id, event_type, "transaction", TRANSACTION_AD, &t, now, faults)
    }

    /// A `REFUND.*` notification of `refund` (fault `mchid` applied to it).
    pub fn refund(
        &self,
        id: &str,
        event_type: &str,
        refund: &RefundResource,
        now: DateTime<Utc>,
        faults: &NotifyFaults,
    ) -> SignedNotification {
        let mut r = refund.clone();
        if let Some(mchid) = &faults.mchid {
            r.mchid = mchid.clone();
        }
        self.envelope(id, event_type, "refund", REFUND_AD, &r, now, faults)
    }

    #[allow(clippy::too_many_arguments)]
    fn envelope(
        &self,
        id: &str,
        event_type: &str,
        original_type: &str,
        associated_data: &str,
        resource: &impl Serialize,
        now: DateTime<Utc>,
        faults: &NotifyFaults,
    ) -> SignedNotification {
        let plaintext = serde_json::to_vec(resource).expect("resources serialise");
        let nonce = &sign::new_nonce()[..aead::NONCE_LEN];
        let mut ciphertext =
            aead::encrypt(&self.api_v3_key, nonce, associated_data, &plaintext).expect("nonce is 12 bytes");
        if faults.bad_aes_tag {
            let mut sealed = BASE64.decode(&ciphertext).expect("we just encoded it");
            if let Some(last) = sealed.last_mut() {
                *last ^= 0x01;
            }
            ciphertext = BASE64.encode(sealed);
        }
        let envelope = NotificationEnvelope {
            id: id.into(),
            create_time: cst_rfc3339(now),
            event_type: event_type.into(),
            resource_type: "encrypt-resource".into(),
            summary: Some(if event_type.starts_with("REFUND.") {
                "退款结果".into()
            } else {
                "支付成功".into()
            }),
            resource: EncryptedResource {
                original_type: Some(original_type.into()),
                algorithm: aead::ALGORITHM.into(),
                ciphertext,
                associated_data: associated_data.into(),
                nonce: nonce.into(),
            },
        };
        let body = serde_json::to_vec(&envelope).expect("envelopes serialise");
        self.sign(id, body, now, faults)
    }

    /// Signs `body` as notification `id` at `now` (plus the faults' offset) with a fresh nonce:
    /// what a re-sent notification carries.
    pub fn sign(&self, id: &str, body: Vec<u8>, now: DateTime<Utc>, faults: &NotifyFaults) -> SignedNotification {
        let headers = signature_headers(&self.platform, &body, now, faults);
        SignedNotification {
            id: id.into(),
            headers,
            body,
        }
    }
}

/// The four signature headers over `body`, with the faults applied.
fn signature_headers(platform: &PlatformKeys, body: &[u8], now: DateTime<Utc>, faults: &NotifyFaults) -> HeaderMap {
    let timestamp = (now.timestamp() + faults.timestamp_offset_seconds).to_string();
    let nonce = sign::new_nonce();
    let key = if faults.wrong_key {
        test_wrong_key()
    } else {
        &platform.private_key
    };
    let mut signature = sign::sign(key, &sign::response_message(&timestamp, &nonce, body)).expect("RSA-2048 signs");
    if faults.tamper_signature {
        let mut raw = BASE64.decode(&signature).expect("we just encoded it");
        raw[0] ^= 0x01;
        signature = BASE64.encode(raw);
    }
    let serial = faults.serial_no.clone().unwrap_or_else(|| platform.serial_no.clone());
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (HEADER_SERIAL, serial),
        (HEADER_TIMESTAMP, timestamp),
        (HEADER_NONCE, nonce),
        (HEADER_SIGNATURE, signature),
    ] {
        headers.insert(name, HeaderValue::from_str(&value).expect("ASCII header value"));
    }
    headers
}

/// An order as the simulator keeps it.
#[derive(Debug, Clone)]
struct SimOrder {
    request: OrderRequest,
    trade_type: &'static str,
    prepay: PrepayResponse,
    trade_state: &'static str,
    transaction_id: Option<String>,
    success_time: Option<String>,
}

impl SimOrder {
    fn transaction(&self) -> Transaction {
        Transaction {
            appid: self.request.appid.clone(),
            mchid: self.request.mchid.clone(),
            out_trade_no: self.request.out_trade_no.clone(),
            transaction_id: self.transaction_id.clone(),
            trade_type: Some(self.trade_type.into()),
            trade_state: self.trade_state.into(),
            trade_state_desc: Some(
                match self.trade_state {
                    "SUCCESS" => "支付成功",
                    "REFUND" => "转入退款",
                    "CLOSED" => "已关闭",
                    _ => "未支付",
                }
                .into(),
            ),
            success_time: self.success_time.clone(),
            payer: self.request.payer.clone(),
            amount: Some(TransactionAmount {
                total: self.request.amount.total,
                payer_total: self.transaction_id.as_ref().map(|_| self.request.amount.total),
                currency: self.request.amount.currency.clone(),
                payer_currency: Some(self.request.amount.currency.clone()),
            }),
        }
    }
}

#[derive(Debug, Clone)]
struct SimRefund {
    refund: Refund,
    notify_url: Option<String>,
}

#[derive(Default)]
struct Books {
    orders: HashMap<String, SimOrder>,
    refunds: HashMap<String, SimRefund>,
    answer_fault: Option<AnswerFault>,
    requests_refused: u64,
    /// Authenticated queries answered, by `out_trade_no`.
    queries: HashMap<String, u64>,
}

struct Inner {
    config: SimulatorConfig,
    books: Mutex<Books>,
    sequence: AtomicU64,
    http: reqwest::Client,
}

impl Inner {
    fn books(&self) -> MutexGuard<'_, Books> {
        // A panicking test thread must not hide the books from the others.
        self.books.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn next(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A running simulator; the server stops when it is dropped.
pub struct WechatPaySimulator {
    inner: Arc<Inner>,
    base_url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for WechatPaySimulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl WechatPaySimulator {
    /// Starts a simulator on a free port of `127.0.0.1`. Needs a tokio runtime.
    ///
    /// # Errors
    /// The I/O error if no port could be bound.
    pub async fn start(config: SimulatorConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let inner = Arc::new(Inner {
            config,
            books: Mutex::new(Books::default()),
            sequence: AtomicU64::new(0),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_millis(NOTIFY_TIMEOUT_MS))
                .build()
                .unwrap_or_default(),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "WeChat Pay simulator stopped");
            }
        });
        Ok(Self {
            inner,
            base_url,
            server,
        })
    }

    /// Starts a simulator for [`test_account`] and returns it with the account, pointed at it.
    ///
    /// # Errors
    /// As [`Self::start`].
    pub async fn start_with_test_account(notify_url: &str) -> std::io::Result<(Self, WechatPayAccount)> {
        let simulator = Self::start(SimulatorConfig::for_test_account()).await?;
        let account = test_account(simulator.base_url(), notify_url);
        Ok((simulator, account))
    }

    /// `http://127.0.0.1:<port>`, to give the account as its `base_url`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The builder of this simulator's notifications (same keys), for crafting them without HTTP.
    pub fn notifications(&self) -> NotificationBuilder {
        NotificationBuilder::new(self.inner.config.api_v3_key, self.inner.config.platform.clone())
    }

    /// The order as a query would answer it.
    pub fn order(&self, out_trade_no: &str) -> Option<Transaction> {
        self.inner.books().orders.get(out_trade_no).map(SimOrder::transaction)
    }

    /// The refund as a refund query would answer it.
    pub fn refund(&self, out_refund_no: &str) -> Option<Refund> {
        self.inner.books().refunds.get(out_refund_no).map(|r| r.refund.clone())
    }

    /// How many requests were refused with `401 SIGN_ERROR`.
    pub fn requests_refused(&self) -> u64 {
        self.inner.books().requests_refused
    }

    /// How many authenticated order queries (`GET …/out-trade-no/{out_trade_no}`) were answered
    /// for `out_trade_no`, found or not.
    pub fn queries(&self, out_trade_no: &str) -> u64 {
        self.inner.books().queries.get(out_trade_no).copied().unwrap_or(0)
    }

    /// Forges the API answers from now on (`None`: honest again).
    pub fn set_answer_fault(&self, fault: Option<AnswerFault>) {
        self.inner.books().answer_fault = fault;
    }

    /// The payer pays: the order becomes `SUCCESS` and `TRANSACTION.SUCCESS` is POSTed to its
    /// `notify_url`.
    ///
    /// # Errors
    /// [`SimError::UnknownOrder`], [`SimError::NotDelivered`].
    pub async fn pay(&self, out_trade_no: &str) -> Result<Delivery, SimError> {
        self.pay_with(out_trade_no, &NotifyFaults::default()).await
    }

    /// [`Self::pay`] with forged notification content or signature.
    ///
    /// # Errors
    /// As [`Self::pay`].
    pub async fn pay_with(&self, out_trade_no: &str, faults: &NotifyFaults) -> Result<Delivery, SimError> {
        let now = Utc::now();
        let (transaction, notify_url) = self.mark_paid(out_trade_no, now)?;
        let id = self.notification_id();
        let notification = self
            .notifications()
            .transaction(&id, "TRANSACTION.SUCCESS", &transaction, now, faults);
        self.deliver(notification, &notify_url).await
    }

    /// The payer pays but the notification is lost: the order becomes `SUCCESS` (a query says
    /// so) and nothing is POSTed. Returns the transaction as a query answers it.
    ///
    /// # Errors
    /// [`SimError::UnknownOrder`].
    pub fn pay_without_notification(&self, out_trade_no: &str) -> Result<Transaction, SimError> {
        self.mark_paid(out_trade_no, Utc::now()).map(|(t, _)| t)
    }

    /// Marks the order paid (once: paying again keeps the first transaction) and returns it with
    /// its `notify_url`.
    fn mark_paid(&self, out_trade_no: &str, now: DateTime<Utc>) -> Result<(Transaction, String), SimError> {
        let seq = self.inner.next();
        let mut books = self.inner.books();
        let order = books
            .orders
            .get_mut(out_trade_no)
            .ok_or_else(|| SimError::UnknownOrder(out_trade_no.into()))?;
        if order.transaction_id.is_none() {
            order.trade_state = "SUCCESS";
            order.transaction_id = Some(format!("42000{:023}", seq));
            order.success_time = Some(cst_rfc3339(now));
        }
        Ok((order.transaction(), order.request.notify_url.clone()))
    }

    /// Settles refund `out_refund_no` with `status` (`SUCCESS`, `ABNORMAL`, `CLOSED`) and POSTs
    /// `REFUND.<status>` to the refund's `notify_url`.
    ///
    /// # Errors
    /// [`SimError::UnknownRefund`], [`SimError::BadRefundStatus`], [`SimError::NotDelivered`]
    /// (also when the refund has no `notify_url`).
    pub async fn complete_refund(
        &self,
        out_refund_no: &str,
        status: &str,
        faults: &NotifyFaults,
    ) -> Result<Delivery, SimError> {
        let status: &'static str = match status {
            "SUCCESS" => "SUCCESS",
            "ABNORMAL" => "ABNORMAL",
            "CLOSED" => "CLOSED",
            other => return Err(SimError::BadRefundStatus(other.into())),
        };
        let now = Utc::now();
        let (resource, notify_url) = {
            let mut books = self.inner.books();
            let sim = books
                .refunds
                .get_mut(out_refund_no)
                .ok_or_else(|| SimError::UnknownRefund(out_refund_no.into()))?;
            sim.refund.status = status.into();
            if status == "SUCCESS" {
                sim.refund.success_time = Some(cst_rfc3339(now));
            }
            let r = sim.refund.clone();
            let notify_url = sim.notify_url.clone();
            if status == "SUCCESS" {
                if let Some(order) = r.out_trade_no.as_ref().and_then(|o| books.orders.get_mut(o)) {
                    order.trade_state = "REFUND";
                }
            }
            let resource = RefundResource {
                mchid: self.inner.config.mch_id.clone(),
                out_trade_no: r.out_trade_no.clone().unwrap_or_default(),
                transaction_id: r.transaction_id.clone().unwrap_or_default(),
                out_refund_no: r.out_refund_no.clone(),
                refund_id: r.refund_id.clone(),
                refund_status: status.into(),
                success_time: r.success_time.clone(),
                user_received_account: r.user_received_account.clone(),
                amount: r.amount.clone(),
            };
            (resource, notify_url)
        };
        let notify_url = notify_url.ok_or_else(|| SimError::NotDelivered("the refund has no notify_url".into()))?;
        let id = self.notification_id();
        let notification = self
            .notifications()
            .refund(&id, &format!("REFUND.{status}"), &resource, now, faults);
        self.deliver(notification, &notify_url).await
    }

    /// Sends `delivery`'s notification again: same body and `id`, a fresh signature and
    /// timestamp, as WeChat Pay's retries are.
    ///
    /// # Errors
    /// [`SimError::NotDelivered`].
    pub async fn redeliver(&self, delivery: &Delivery) -> Result<Delivery, SimError> {
        let notification = self.notifications().sign(
            &delivery.notification.id,
            delivery.notification.body.clone(),
            Utc::now(),
            &NotifyFaults::default(),
        );
        self.deliver(notification, &delivery.notify_url).await
    }

    /// POSTs `notification` to `notify_url` and returns the receiver's status.
    ///
    /// # Errors
    /// [`SimError::NotDelivered`] when the POST failed.
    pub async fn deliver(&self, notification: SignedNotification, notify_url: &str) -> Result<Delivery, SimError> {
        let mut request = self
            .inner
            .http
            .post(notify_url)
            .header(http::header::CONTENT_TYPE, "application/json");
        for (name, value) in &notification.headers {
            request = request.header(name, value);
        }
        let response = request
            .body(notification.body.clone())
            .send()
            .await
            .map_err(|e| SimError::NotDelivered(e.to_string()))?;
        Ok(Delivery {
            notification,
            notify_url: notify_url.into(),
            status: response.status().as_u16(),
        })
    }

    fn notification_id(&self) -> String {
        format!("EV-{:019}", self.inner.next())
    }
}

// --- HTTP ------------------------------------------------------------------------------------

/// An answer before signing.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl Answer {
    fn json(status: StatusCode, value: &impl Serialize) -> Self {
        Self {
            status,
            body: serde_json::to_vec(value).expect("answers serialise"),
        }
    }

    fn error(status: StatusCode, code: &str, message: &str) -> Self {
        Self::json(
            status,
            &ErrorBody {
                code: code.into(),
                message: message.into(),
            },
        )
    }

    fn no_content() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            body: Vec::new(),
        }
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = inner.books().answer_fault;
    let answer = if fault == Some(AnswerFault::ServerError) {
        Answer::error(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "simulated failure")
    } else if let Err(why) = authenticate(&inner, &method, &uri, &headers, &body) {
        inner.books().requests_refused += 1;
        Answer::error(StatusCode::UNAUTHORIZED, "SIGN_ERROR", why)
    } else {
        route(&inner, &method, &uri, &body)
    };
    let mut response = Response::builder()
        .status(answer.status)
        .header("Request-ID", format!("sim-{}", inner.next()));
    if !answer.body.is_empty() {
        response = response.header(http::header::CONTENT_TYPE, "application/json");
    }
    if fault != Some(AnswerFault::Unsigned) {
        let faults = NotifyFaults {
            wrong_key: fault == Some(AnswerFault::WrongKey),
            ..NotifyFaults::default()
        };
        for (name, value) in &signature_headers(&inner.config.platform, &answer.body, Utc::now(), &faults) {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from(answer.body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// Checks `Authorization` as WeChat Pay does; the reason when it fails.
fn authenticate(
    inner: &Inner,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), &'static str> {
    let header = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("missing Authorization")?;
    let auth = Authorization::parse(header).ok_or("malformed Authorization")?;
    if auth.mchid != inner.config.mch_id {
        return Err("mchid does not match");
    }
    if auth.serial_no != inner.config.merchant_serial_no {
        return Err("unknown merchant certificate serial");
    }
    let timestamp: i64 = auth.timestamp.parse().map_err(|_| "bad timestamp")?;
    if Utc::now().timestamp().abs_diff(timestamp) > REQUEST_TOLERANCE_SECONDS.unsigned_abs() {
        return Err("timestamp expired");
    }
    let url = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let message = sign::request_message(method.as_str(), url, timestamp, &auth.nonce_str, body);
    if !sign::verify(&inner.config.merchant_public_key, &message, &auth.signature) {
        return Err("signature does not verify");
    }
    Ok(())
}

fn route(inner: &Inner, method: &Method, uri: &Uri, body: &[u8]) -> Answer {
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["v3", "pay", "transactions", kind @ ("native" | "h5" | "jsapi")]) => place_order(inner, kind, body),
        ("GET", ["v3", "pay", "transactions", "out-trade-no", out_trade_no]) => {
            query_order(inner, out_trade_no, uri.query().unwrap_or(""))
        }
        ("POST", ["v3", "pay", "transactions", "out-trade-no", out_trade_no, "close"]) => {
            close_order(inner, out_trade_no, body)
        }
        ("POST", ["v3", "refund", "domestic", "refunds"]) => create_refund(inner, body),
        ("GET", ["v3", "refund", "domestic", "refunds", out_refund_no]) => {
            match inner.books().refunds.get(*out_refund_no) {
                Some(r) => Answer::json(StatusCode::OK, &r.refund),
                None => Answer::error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "退款单不存在"),
            }
        }
        _ => Answer::error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such API"),
    }
}

fn place_order(inner: &Inner, kind: &str, body: &[u8]) -> Answer {
    let request: OrderRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Answer::error(StatusCode::BAD_REQUEST, "PARAM_ERROR", &e.to_string()),
    };
    if request.mchid != inner.config.mch_id || request.appid != inner.config.app_id {
        return Answer::error(StatusCode::BAD_REQUEST, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配");
    }
    let problem = if !(6..=32).contains(&request.out_trade_no.len()) {
        Some("out_trade_no must be 6 to 32 characters")
    } else if request.amount.total < 1 || request.amount.currency != "CNY" {
        Some("amount.total must be at least 1 fen in CNY")
    } else if kind == "h5" && request.scene_info.as_ref().is_none_or(|s| s.payer_client_ip.is_empty()) {
        Some("scene_info.payer_client_ip is required")
    } else if kind == "jsapi" && request.payer.as_ref().is_none_or(|p| p.openid.is_empty()) {
        Some("payer.openid is required")
    } else {
        None
    };
    if let Some(problem) = problem {
        return Answer::error(StatusCode::BAD_REQUEST, "PARAM_ERROR", problem);
    }
    let seq = inner.next();
    let mut books = inner.books();
    if let Some(existing) = books.orders.get(&request.out_trade_no) {
        return match existing.trade_state {
            "SUCCESS" | "REFUND" => Answer::error(StatusCode::BAD_REQUEST, "ORDERPAID", "该订单已支付"),
            "CLOSED" => Answer::error(StatusCode::BAD_REQUEST, "ORDER_CLOSED", "订单已关闭"),
            _ if existing.request == request => Answer::json(StatusCode::OK, &existing.prepay),
            _ => Answer::error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "商户订单号重复"),
        };
    }
    let prepay_id = format!("wx{}{:010}", Utc::now().format("%d%H%M%S"), seq);
    let (trade_type, prepay) = match kind {
        "native" => (
            "NATIVE",
            PrepayResponse {
                code_url: Some(format!("weixin://wxpay/bizpayurl?pr=sim{seq}")),
                ..PrepayResponse::default()
            },
        ),
        "h5" => (
            "MWEB",
            PrepayResponse {
                h5_url: Some(format!(
                    "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id={prepay_id}&package={seq}"
                )),
                ..PrepayResponse::default()
            },
        ),
        _ => (
            "JSAPI",
            PrepayResponse {
                prepay_id: Some(prepay_id),
                ..PrepayResponse::default()
            },
        ),
    };
    let answer = Answer::json(StatusCode::OK, &prepay);
    books.orders.insert(
        request.out_trade_no.clone(),
        SimOrder {
            request,
            trade_type,
            prepay,
            trade_state: "NOTPAY",
            transaction_id: None,
            success_time: None,
        },
    );
    answer
}

fn query_order(inner: &Inner, out_trade_no: &str, query: &str) -> Answer {
    if query != format!("mchid={}", inner.config.mch_id) {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "mchid query parameter is required",
        );
    }
    let mut books = inner.books();
    *books.queries.entry(out_trade_no.to_string()).or_default() += 1;
    match books.orders.get(out_trade_no) {
        Some(order) => Answer::json(StatusCode::OK, &order.transaction()),
        None => Answer::error(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在"),
    }
}

fn close_order(inner: &Inner, out_trade_no: &str, body: &[u8]) -> Answer {
    match serde_json::from_slice::<CloseRequest>(body) {
        Ok(close) if close.mchid == inner.config.mch_id => {}
        _ => return Answer::error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "body must be {\"mchid\":…}"),
    }
    let mut books = inner.books();
    match books.orders.get_mut(out_trade_no) {
        None => Answer::error(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在"),
        Some(order) if order.transaction_id.is_some() => {
            Answer::error(StatusCode::BAD_REQUEST, "ORDERPAID", "订单已支付")
        }
        Some(order) => {
            order.trade_state = "CLOSED";
            Answer::no_content()
        }
    }
}

fn create_refund(inner: &Inner, body: &[u8]) -> Answer {
    let request: RefundRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Answer::error(StatusCode::BAD_REQUEST, "PARAM_ERROR", &e.to_string()),
    };
    let seq = inner.next();
    let mut books = inner.books();
    if let Some(existing) = books.refunds.get(&request.out_refund_no) {
        // One refund per out_refund_no: asking again answers the same refund.
        return Answer::json(StatusCode::OK, &existing.refund);
    }
    let order = books
        .orders
        .values()
        .find(|o| match (&request.transaction_id, &request.out_trade_no) {
            (Some(t), _) => o.transaction_id.as_ref() == Some(t),
            (None, Some(n)) => &o.request.out_trade_no == n,
            (None, None) => false,
        });
    let Some(order) = order else {
        return Answer::error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "订单不存在");
    };
    if order.transaction_id.is_none() {
        return Answer::error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "订单未支付");
    }
    if request.amount.total != order.request.amount.total || request.amount.currency != "CNY" {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "amount.total does not match the order",
        );
    }
    let out_trade_no = order.request.out_trade_no.clone();
    let refunded: i64 = books
        .refunds
        .values()
        .filter(|r| r.refund.out_trade_no.as_deref() == Some(&out_trade_no) && r.refund.status != "CLOSED")
        .map(|r| r.refund.amount.refund)
        .sum();
    if request.amount.refund < 1 || refunded + request.amount.refund > request.amount.total {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "申请退款金额超过订单可退金额",
        );
    }
    let transaction_id = books.orders.get(&out_trade_no).and_then(|o| o.transaction_id.clone());
    let refund = Refund {
        refund_id: format!("50300{:024}", seq),
        out_refund_no: request.out_refund_no.clone(),
        transaction_id,
        out_trade_no: Some(out_trade_no),
        user_received_account: Some("支付用户零钱".into()),
        success_time: None,
        create_time: Some(cst_rfc3339(Utc::now())),
        status: "PROCESSING".into(),
        amount: RefundAmount {
            total: request.amount.total,
            refund: request.amount.refund,
            payer_total: Some(request.amount.total),
            payer_refund: Some(request.amount.refund),
            currency: Some("CNY".into()),
        },
    };
    let answer = Answer::json(StatusCode::OK, &refund);
    books.refunds.insert(
        request.out_refund_no,
        SimRefund {
            refund,
            notify_url: request.notify_url,
        },
    );
    answer
}
