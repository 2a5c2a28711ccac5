//! The channel adapters as a NATS service (the NATS micro/service API, `nats micro ls`), and the
//! [`Requester`] that calls it.
//!
//! - Service [`SERVICE_NAME`], one endpoint per channel payledger knows ([`CHANNEL_NAMES`]) and
//!   operation: `<prefix>.<channel>.<operation>` (prefix
//!   [`crate::RelayConfig::channel_subject_prefix`], default `payledger.channel`; the wire
//!   protocol is [`payledger_channel_adapters::remote`]). Endpoints join the service's queue
//!   group, so several `channels` processes share the requests.
//! - Each request is answered by the live local [`Channels`] at the time it arrives; a channel
//!   not enabled here answers `unavailable` (`parse_callback`: `unverified`). Channel errors travel
//!   in the body; only a malformed request gets a service error (`Nats-Service-Error`, code 400).
//! - Requests are handled concurrently, at most [`IN_FLIGHT_REQUESTS_MAX`] at once: a slow
//!   channel call does not hold up the others; past the bound new requests wait in the
//!   subscription, and their callers time out rather than pile up work here.

use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::service::{self, ServiceExt};
use async_nats::{Client, RequestErrorKind};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use payledger_channel_adapters::remote::{self, Operation, RequestError, Requester};
use payledger_channel_adapters::Channels;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// The service's name in the NATS service API.
pub const SERVICE_NAME: &str = "payledger-channels";
/// Every channel payledger has an adapter for: each gets endpoints, enabled or not, so a request
/// for a disabled one is answered (with an error) rather than left to time out.
pub const CHANNEL_NAMES: [&str; 3] = ["sandbox", "wechatpay", "alipay"];
/// Default of [`crate::RelayConfig::channel_timeout_ms`]: the time a caller waits for an answer, in milliseconds: longer than the adapters' own
/// HTTP timeouts (10 s), so a channel's slow answer arrives as the channel's own error.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 15_000;
/// Requests one service process handles at once.
pub const IN_FLIGHT_REQUESTS_MAX: usize = 256;
/// Time to connect to NATS at start before going on (the client keeps trying in the background).
const CONNECT_TIMEOUT_MS: u64 = 5_000;
const CONNECT_POLL_MS: u64 = 10;

/// Starting the service failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelServiceError {
    /// Connecting, or registering the service or an endpoint, failed.
    #[error("channel service: {0}")]
    Nats(String),
}

/// A client for `nats_url` named `name`, reconnecting forever (also when NATS is down at start:
/// it waits up to 5 s for the first connection, then goes on while the client keeps trying).
///
/// # Errors
/// [`ChannelServiceError::Nats`] for a URL the client refuses.
pub async fn connect(nats_url: &str, name: &str) -> Result<Client, ChannelServiceError> {
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .connect(crate::server_addrs(nats_url).map_err(ChannelServiceError::Nats)?)
        .await
        .map_err(|e| ChannelServiceError::Nats(format!("connecting: {e}")))?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(CONNECT_TIMEOUT_MS);
    while client.connection_state() != State::Connected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(CONNECT_POLL_MS)).await;
    }
    Ok(client)
}

/// Stops the service (its ping/info/stats responder) when the serving task ends or is aborted.
struct StopOnDrop(Option<service::Service>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let (Some(service), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                let _ = service.stop().await;
            });
        }
    }
}

/// Registers the service and its endpoints on `client` and serves them from the adapters of
/// `channels` (its [local view](Channels::local): never a remote one, which would ask itself)
/// until the returned task is aborted.
///
/// # Errors
/// [`ChannelServiceError::Nats`] when the service or an endpoint cannot be registered.
pub async fn serve(
    client: Client,
    channels: &Channels,
    subject_prefix: &str,
) -> Result<JoinHandle<()>, ChannelServiceError> {
    let channels = channels.local();
    let service = client
        .service_builder()
        .description("payledger channel adapters: create, refund, query, close, query_refund, parse_callback")
        .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| ChannelServiceError::Nats(format!("registering {SERVICE_NAME}: {e}")))?;
    let mut endpoints = Vec::new();
    for channel in CHANNEL_NAMES {
        for operation in Operation::ALL {
            let subject = remote::subject(subject_prefix, channel, operation);
            let endpoint = service
                .endpoint_builder()
                .name(format!("{channel}-{}", operation.as_str()))
                .add(subject.clone())
                .await
                .map_err(|e| ChannelServiceError::Nats(format!("endpoint {subject}: {e}")))?;
            endpoints.push(endpoint.map(move |request| (channel, operation, request)).boxed());
        }
    }
    // The subscriptions are only sent so far: a round trip makes sure the server has them before
    // this process calls itself ready, so a caller's first request finds a responder. NATS down
    // at start is not fatal: the client subscribes when it connects.
    // Bounded: while NATS is unreachable the client queues the flush until it connects.
    match tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "channel service endpoints not confirmed by NATS yet"),
        Err(_) => tracing::warn!("NATS unreachable: channel service endpoints are registered when it connects"),
    }
    let guard = StopOnDrop(Some(service));
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_REQUESTS_MAX));
    Ok(tokio::spawn(async move {
        let _guard = guard;
        let mut requests = futures::stream::select_all(endpoints);
        let mut handlers = tokio::task::JoinSet::new();
        while let Some((channel, operation, request)) = requests.next().await {
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                break;
            };
            // The account the request names; none: the channel's legacy account (a caller from
            // before accounts).
            let adapter = match remote::requested_account(&request.message.payload) {
                // Only the same account at the channel: same id, same app_id / mch_id.
                Some(account) => channels.for_order(channel, Some(&account)).ok(),
                None => channels.legacy(channel).ok(),
            };
            handlers.spawn(async move {
                let _permit = permit;
                let answer = match remote::answer(adapter, channel, operation, &request.message.payload).await {
                    Ok(body) => Ok(Bytes::from(body)),
                    Err(malformed) => {
                        tracing::warn!(channel, operation = operation.as_str(), error = %malformed, "channel service: malformed request");
                        Err(service::error::Error {
                            status: malformed.to_string(),
                            code: 400,
                        })
                    }
                };
                if let Err(e) = request.respond(answer).await {
                    tracing::warn!(channel, operation = operation.as_str(), error = %e, "channel service: answer not sent");
                }
            });
            // Reap finished handlers so the set does not grow with every request.
            while handlers.try_join_next().is_some() {}
        }
        tracing::warn!("channel service: every endpoint closed");
    }))
}

/// Sends channel requests over NATS, waiting at most the configured time for each answer.
pub struct NatsRequester {
    client: Client,
    timeout: Duration,
}

impl NatsRequester {
    /// Requests through `client`, each waiting at most `timeout_ms` milliseconds.
    pub fn new(client: Client, timeout_ms: u64) -> Self {
        Self {
            client,
            timeout: Duration::from_millis(timeout_ms),
        }
    }
}

#[async_trait]
impl Requester for NatsRequester {
    /// # Errors
    /// [`RequestError::Other`] at once while NATS is not connected (no point waiting out the
    /// timeout) and for a service error answer; [`RequestError::NoResponders`],
    /// [`RequestError::Timeout`].
    async fn request(&self, subject: String, payload: Vec<u8>) -> Result<Vec<u8>, RequestError> {
        if self.client.connection_state() != State::Connected {
            return Err(RequestError::Other("NATS is not connected".into()));
        }
        let request = async_nats::Request::new()
            .payload(Bytes::from(payload))
            .timeout(Some(self.timeout));
        let message = self
            .client
            .send_request(subject, request)
            .await
            .map_err(|e| match e.kind() {
                RequestErrorKind::TimedOut => RequestError::Timeout,
                RequestErrorKind::NoResponders => RequestError::NoResponders,
                RequestErrorKind::Other => RequestError::Other(e.to_string()),
            })?;
        if let Some(error) = message
            .headers
            .as_ref()
            .and_then(|h| h.get(service::NATS_SERVICE_ERROR))
        {
            return Err(RequestError::Other(format!(
                "the channel service refused the request: {}",
                error.as_str()
            )));
        }
        Ok(message.payload.to_vec())
    }
}
