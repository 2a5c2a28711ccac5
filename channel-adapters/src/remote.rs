//! Channels reached through a channel service (request-reply, e.g. NATS): the wire protocol and
//! [`RemoteChannel`].
//!
//! # Subjects
//! `<prefix>.<channel>.<operation>`, prefix default [`SUBJECT_PREFIX_DEFAULT`], operation one of
//! [`Operation`]: `create`, `refund`, `query`, `close`, `query_refund`, `parse_callback`.
//!
//! # Bodies (JSON)
//! | operation | request | answer `ok` |
//! |-----------|---------|-------------|
//! | `create` | [`CreateChannelOrder`] | [`ChannelOrder`] |
//! | `refund` | [`ChannelRefundRequest`] | [`ChannelRefundResult`] |
//! | `query` | [`OrderRef`] | [`ChannelPaymentStatus`] |
//! | `close` | [`OrderRef`] | `null` |
//! | `query_refund` | [`RefundRef`] | [`ChannelRefundResult`] |
//! | `parse_callback` | [`CallbackRequest`] | [`Notification`] |
//!
//! Every request body also carries [`ACCOUNT_FIELD`], `"account": {"id", "app_id", "mch_id"}`
//! (a [`ChannelAccountRef`]): the channel account to act for. The service answers with its
//! adapter of that id only if it has the same channel-side identity (else, as for an account it
//! does not have: `unavailable`, never another merchant's answer); a request without it gets the
//! channel's legacy account, see [`crate::Channels::legacy`].
//!
//! Every answer is a [`Reply`]: `{"ok": …}` or `{"err": …}`, the error a [`WireChannelError`]
//! (`parse_callback`: a [`CallbackError`]). Errors travel in the body, so a refusal by the
//! channel (`rejected` with its code) stays distinct from `unavailable` and `unsupported` across
//! the hop. Amounts are [`payledger_domain::Money`]: integer minor units and an ISO-4217 code.
//!
//! # Transport
//! A [`Requester`] carries the bytes (`payledger-bus` implements it with async-nats); this crate
//! does no networking of its own for it. A request that gets no answer in time becomes
//! [`ChannelError::Timeout`]; no service listening, or any other transport failure,
//! [`ChannelError::Unavailable`].

use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use payledger_domain::{ChannelAccountRef, ChannelOrder};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    CallbackAnswer, CallbackError, Channel, ChannelError, ChannelPaymentStatus, ChannelRefundRequest,
    ChannelRefundResult, CreateChannelOrder, Notification,
};

/// Default subject prefix of channel services: `payledger.channel.<channel>.<operation>`.
pub const SUBJECT_PREFIX_DEFAULT: &str = "payledger.channel";
/// Largest callback body sent to a channel service, in bytes. Channels' notifications are a few
/// KiB; base64 makes the request 4/3 of this, well under NATS's default 1 MiB payload limit.
pub const CALLBACK_BODY_BYTES_MAX: usize = 256 * 1024;

/// One channel operation, the last token of its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Refund,
    Query,
    Close,
    QueryRefund,
    ParseCallback,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 6] = [
        Operation::Create,
        Operation::Refund,
        Operation::Query,
        Operation::Close,
        Operation::QueryRefund,
        Operation::ParseCallback,
    ];

    /// The subject token, e.g. `query_refund`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Refund => "refund",
            Operation::Query => "query",
            Operation::Close => "close",
            Operation::QueryRefund => "query_refund",
            Operation::ParseCallback => "parse_callback",
        }
    }

    /// The operation named `token`.
    pub fn parse(token: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == token)
    }
}

/// The request field naming the channel account to act for, a [`ChannelAccountRef`] (every
/// operation's body is a JSON object; the service reads this field before the operation's own
/// fields).
pub const ACCOUNT_FIELD: &str = "account";

/// The account a request names in [`ACCOUNT_FIELD`]; `None` when it names none (a caller from
/// before accounts, meaning the channel's legacy account) or the body is not a JSON object.
pub fn requested_account(payload: &[u8]) -> Option<ChannelAccountRef> {
    #[derive(Deserialize)]
    struct Addressed {
        account: Option<ChannelAccountRef>,
    }
    serde_json::from_slice::<Addressed>(payload).ok()?.account
}

/// `<prefix>.<channel>.<operation>`.
pub fn subject(prefix: &str, channel: &str, operation: Operation) -> String {
    format!("{prefix}.{channel}.{}", operation.as_str())
}

/// Body of `query` and `close`: the order, which is the channel's `out_trade_no`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRef {
    pub order_id: Uuid,
}

/// Body of `query_refund`: the order and our refund id (the channel's `out_refund_no`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRef {
    pub order_id: Uuid,
    pub refund_id: Uuid,
}

/// Body of `parse_callback`: the channel's HTTP notification as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackRequest {
    /// Request headers as `[name, value]` pairs, in order (a name may repeat). Values that are
    /// not UTF-8 are carried lossily; the signature headers channels use are ASCII.
    pub headers: Vec<(String, String)>,
    /// The raw body, standard base64.
    pub body_base64: String,
    /// The time to judge the notification's freshness by (the receiving server's clock).
    pub now: DateTime<Utc>,
}

impl CallbackRequest {
    /// The request for `headers` and `body` received at `now`.
    pub fn new(headers: &http::HeaderMap, body: &[u8], now: DateTime<Utc>) -> Self {
        Self {
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body_base64: BASE64.encode(body),
            now,
        }
    }

    /// The headers and body back.
    ///
    /// # Errors
    /// A message naming the bad header or the body that is not base64.
    pub fn decode(&self) -> Result<(http::HeaderMap, Vec<u8>), String> {
        let mut headers = http::HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let name =
                http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("bad header name {name:?}"))?;
            let value = http::HeaderValue::from_str(value).map_err(|_| format!("bad value of header {name}"))?;
            headers.append(name, value);
        }
        let body = BASE64
            .decode(&self.body_base64)
            .map_err(|e| format!("body is not base64: {e}"))?;
        Ok((headers, body))
    }
}

/// A channel error on the wire (a [`ChannelError`] without its `&'static` names, which the
/// caller fills in from its own adapter).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum WireChannelError {
    Unavailable { message: String },
    Timeout { message: String },
    Rejected { code: String, message: String },
    Unsupported,
}

impl From<&ChannelError> for WireChannelError {
    fn from(e: &ChannelError) -> Self {
        match e {
            ChannelError::Unavailable(message) => Self::Unavailable {
                message: message.clone(),
            },
            ChannelError::Timeout(message) => Self::Timeout {
                message: message.clone(),
            },
            ChannelError::Rejected { code, message } => Self::Rejected {
                code: code.clone(),
                message: message.clone(),
            },
            ChannelError::Unsupported { .. } => Self::Unsupported,
        }
    }
}

impl WireChannelError {
    /// The [`ChannelError`] of `channel`'s `operation`.
    pub fn into_channel_error(self, channel: &'static str, operation: Operation) -> ChannelError {
        match self {
            Self::Unavailable { message } => ChannelError::Unavailable(message),
            Self::Timeout { message } => ChannelError::Timeout(message),
            Self::Rejected { code, message } => ChannelError::Rejected { code, message },
            Self::Unsupported => ChannelError::Unsupported {
                channel,
                operation: operation.as_str(),
            },
        }
    }
}

/// Every answer of a channel service: `{"ok": T}` or `{"err": E}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply<T, E> {
    Ok(T),
    Err(E),
}

impl<T, E> From<Result<T, E>> for Reply<T, E> {
    fn from(r: Result<T, E>) -> Self {
        match r {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Err(e),
        }
    }
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Nobody answered in time (the request may have been carried out).
    #[error("no answer in time")]
    Timeout,
    /// No service listens on the subject.
    #[error("no channel service is listening")]
    NoResponders,
    /// The transport failed, or the service refused the request as malformed.
    #[error("{0}")]
    Other(String),
}

/// Sends one request and waits (bounded) for its answer: the transport of [`RemoteChannel`].
#[async_trait]
pub trait Requester: Send + Sync {
    /// The answer's body to `payload` sent on `subject`.
    ///
    /// # Errors
    /// [`RequestError`].
    async fn request(&self, subject: String, payload: Vec<u8>) -> Result<Vec<u8>, RequestError>;
}

/// A channel whose operations a channel service carries out. Name, methods and the callback
/// answer (pure formatting) come from the adapter configured in this process.
pub struct RemoteChannel {
    local: Arc<dyn Channel>,
    requester: Arc<dyn Requester>,
    prefix: String,
}

impl RemoteChannel {
    /// `local`'s operations sent through `requester` to `<subject_prefix>.<name>.<operation>`.
    pub fn new(local: Arc<dyn Channel>, requester: Arc<dyn Requester>, subject_prefix: &str) -> Self {
        Self {
            local,
            requester,
            prefix: subject_prefix.to_string(),
        }
    }

    /// Sends `body`, returns the raw answer or the transport failure as a [`ChannelError`].
    async fn send<B: Serialize>(&self, operation: Operation, body: &B) -> Result<Vec<u8>, ChannelError> {
        let subject = subject(&self.prefix, self.local.name(), operation);
        let mut body = serde_json::to_value(body).map_err(|e| ChannelError::Unavailable(e.to_string()))?;
        if let Some(fields) = body.as_object_mut() {
            let account = serde_json::to_value(self.local.channel_account())
                .map_err(|e| ChannelError::Unavailable(e.to_string()))?;
            fields.insert(ACCOUNT_FIELD.into(), account);
        }
        let payload = serde_json::to_vec(&body).map_err(|e| ChannelError::Unavailable(e.to_string()))?;
        self.requester
            .request(subject.clone(), payload)
            .await
            .map_err(|e| match e {
                RequestError::Timeout => ChannelError::Timeout(format!("no answer on {subject}")),
                RequestError::NoResponders => {
                    ChannelError::Unavailable(format!("no channel service answers {subject}"))
                }
                RequestError::Other(why) => ChannelError::Unavailable(format!("{subject}: {why}")),
            })
    }

    async fn call<B: Serialize, T: DeserializeOwned>(&self, operation: Operation, body: &B) -> Result<T, ChannelError> {
        let answer = self.send(operation, body).await?;
        match serde_json::from_slice::<Reply<T, WireChannelError>>(&answer) {
            Ok(Reply::Ok(v)) => Ok(v),
            Ok(Reply::Err(e)) => Err(e.into_channel_error(self.local.name(), operation)),
            Err(e) => Err(ChannelError::Unavailable(format!(
                "unreadable answer of the channel service to {}: {e}",
                operation.as_str()
            ))),
        }
    }
}

#[async_trait]
impl Channel for RemoteChannel {
    fn name(&self) -> &'static str {
        self.local.name()
    }

    fn capabilities(&self) -> &'static crate::Capabilities {
        self.local.capabilities()
    }

    fn channel_account(&self) -> ChannelAccountRef {
        self.local.channel_account()
    }

    async fn create(&self, request: &CreateChannelOrder) -> Result<ChannelOrder, ChannelError> {
        self.call(Operation::Create, request).await
    }

    async fn refund(&self, request: &ChannelRefundRequest) -> Result<ChannelRefundResult, ChannelError> {
        self.call(Operation::Refund, request).await
    }

    async fn query(&self, order_id: Uuid) -> Result<ChannelPaymentStatus, ChannelError> {
        self.call(Operation::Query, &OrderRef { order_id }).await
    }

    async fn close(&self, order_id: Uuid) -> Result<(), ChannelError> {
        self.call(Operation::Close, &OrderRef { order_id }).await
    }

    async fn query_refund(&self, order_id: Uuid, refund_id: Uuid) -> Result<ChannelRefundResult, ChannelError> {
        self.call(Operation::QueryRefund, &RefundRef { order_id, refund_id })
            .await
    }

    /// The local adapter's verification. payledger calls [`Channel::parse_callback`], which goes
    /// to the channel service.
    fn verify_callback(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Notification, CallbackError> {
        self.local.verify_callback(headers, body, now)
    }

    /// Sends the notification to the channel service's `parse_callback`.
    ///
    /// # Errors
    /// The service's [`CallbackError`]; [`CallbackError::Malformed`] for a body over
    /// [`CALLBACK_BODY_BYTES_MAX`]; [`CallbackError::Unverified`] when the service could not be
    /// asked or could not answer.
    async fn parse_callback(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Notification, CallbackError> {
        if body.len() > CALLBACK_BODY_BYTES_MAX {
            return Err(CallbackError::Malformed(format!(
                "body of {} bytes exceeds {CALLBACK_BODY_BYTES_MAX} bytes",
                body.len()
            )));
        }
        let request = CallbackRequest::new(headers, body, now);
        let answer = self
            .send(Operation::ParseCallback, &request)
            .await
            .map_err(|e| CallbackError::Unverified(e.to_string()))?;
        match serde_json::from_slice::<Reply<Notification, CallbackError>>(&answer) {
            Ok(reply) => match reply {
                Reply::Ok(n) => Ok(n),
                Reply::Err(e) => Err(e),
            },
            Err(e) => Err(CallbackError::Unverified(format!(
                "unreadable answer of the channel service: {e}"
            ))),
        }
    }

    fn answer_callback(&self, outcome: Result<(), String>) -> CallbackAnswer {
        self.local.answer_callback(outcome)
    }
}

/// A malformed request to a channel service (bad JSON or fields): the service answers it with a
/// service-level error, not a channel error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {operation} request: {reason}")]
pub struct MalformedRequest {
    pub operation: &'static str,
    pub reason: String,
}

fn decode<T: DeserializeOwned>(operation: Operation, payload: &[u8]) -> Result<T, MalformedRequest> {
    serde_json::from_slice(payload).map_err(|e| MalformedRequest {
        operation: operation.as_str(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize, E: Serialize>(reply: Reply<T, E>) -> Vec<u8> {
    // Our own plain data types: serialising them does not fail; if it ever did, the caller
    // reads this answer as "unreadable" and treats the channel as unavailable.
    serde_json::to_vec(&reply).unwrap_or_else(|e| {
        tracing::error!(error = %e, "channel service answer not serialisable");
        b"{}".to_vec()
    })
}

fn channel_reply<T: Serialize>(r: Result<T, ChannelError>) -> Vec<u8> {
    encode(Reply::from(r.map_err(|e| WireChannelError::from(&e))))
}

/// The channel service's side: carries out `operation` of `channel` (the account the request
/// names, [`requested_account`]; `None`: not enabled in the serving process) for the request
/// `payload`, and returns the [`Reply`]'s bytes.
///
/// # Errors
/// [`MalformedRequest`] when `payload` is not the operation's request.
pub async fn answer(
    channel: Option<Arc<dyn Channel>>,
    channel_name: &str,
    operation: Operation,
    payload: &[u8],
) -> Result<Vec<u8>, MalformedRequest> {
    let not_enabled = || format!("channel {channel_name} is not enabled at this channel service");
    let Some(channel) = channel else {
        // Still check the request, so a malformed one is told so whatever the configuration.
        return Ok(match operation {
            Operation::ParseCallback => {
                decode::<CallbackRequest>(operation, payload)?;
                encode::<Notification, _>(Reply::Err(CallbackError::Unverified(not_enabled())))
            }
            _ => encode::<(), _>(Reply::Err(WireChannelError::Unavailable { message: not_enabled() })),
        });
    };
    Ok(match operation {
        Operation::Create => channel_reply(channel.create(&decode(operation, payload)?).await),
        Operation::Refund => channel_reply(channel.refund(&decode(operation, payload)?).await),
        Operation::Query => {
            let r: OrderRef = decode(operation, payload)?;
            channel_reply(channel.query(r.order_id).await)
        }
        Operation::Close => {
            let r: OrderRef = decode(operation, payload)?;
            channel_reply(channel.close(r.order_id).await)
        }
        Operation::QueryRefund => {
            let r: RefundRef = decode(operation, payload)?;
            channel_reply(channel.query_refund(r.order_id, r.refund_id).await)
        }
        Operation::ParseCallback => {
            let r: CallbackRequest = decode(operation, payload)?;
            let (headers, body) = r.decode().map_err(|reason| MalformedRequest {
                operation: operation.as_str(),
                reason,
            })?;
            encode(Reply::from(channel.parse_callback(&headers, &body, r.now).await))
        }
    })
}

#[cfg(test)]
mod tests;
