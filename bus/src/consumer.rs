//! Durable JetStream pull consumers of the event stream: the NATS-mode path of the refund worker
//! and the notifier's enqueuer.
//!
//! A [`Consumer`] creates (or finds) the durable consumer [`ConsumerConfig::durable_name`] on the
//! relay's stream, filtered to one subject (nats-server 2.9 takes a single filter per consumer),
//! with explicit acks. It pulls batches of up to [`ConsumerConfig::batch_max`] messages (never
//! more than can start at once), runs up to [`ConsumerConfig::concurrency_max`] handlers at once,
//! decodes each [`Envelope`] back into
//! the [`LogEvent`] the embedded subscribers see, and calls the same
//! [`EffectSubscriber::handle`]:
//! - `Ok`: the message is acked (after the effect, so a crash in between redelivers it:
//!   at-least-once, and the handlers are idempotent);
//! - `Err`: the message is nak'ed with the delay [`ConsumerConfig::nak_delay`] picks by its
//!   delivery count ([`NAK_BACKOFF_MS_DEFAULT`]: 1 s up to 60 s), and redelivered forever: a
//!   refund or a notification is never dropped because the database or a channel was down;
//! - a body that is not an envelope is terminated (`+TERM`): redelivering it cannot help.
//!
//! While a handler runs longer than half the consumer's ack wait, the runner tells JetStream it
//! is still working (`+WPI`), so a slow channel call is not delivered twice at once; a handler
//! still running after [`ConsumerConfig::handler_timeout_ms`] is abandoned and its message
//! nak'ed, as a failure.
//!
//! This back-off is for the consumer's own failures only. The merchant's notification retry
//! schedule lives in `notify_job` (the notifier's sender), whose rows also carry the attempts,
//! abandonment and resends.
//!
//! NATS down: the client reconnects in the background; failed pulls are retried with back-off
//! ([`RETRY_MS_MIN`] doubling to [`RETRY_MS_MAX`]), nothing panics. The stream is the relay's:
//! until it exists the consumer waits for it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{self, Context};
use futures::StreamExt;
use payledger_store::subscription::{EffectSubscriber, SubscriberError};
use tokio::sync::watch;

use crate::envelope::Envelope;
use crate::relay::RelayConfig;

/// Durable name of the refund worker's consumer.
pub const REFUNDS_DURABLE_DEFAULT: &str = "payledger-refunds";
/// Durable name of the notifier's consumer.
pub const NOTIFIER_DURABLE_DEFAULT: &str = "payledger-notifier";
/// Default messages per pull (also the most un-acked messages one runner holds).
pub const BATCH_MAX_DEFAULT: usize = 64;
/// Default handlers running at once per consumer.
pub const CONCURRENCY_MAX_DEFAULT: usize = 8;
/// Default time JetStream waits for an ack before redelivering, milliseconds.
pub const ACK_WAIT_MS_DEFAULT: u64 = 30_000;
/// Default of [`ConsumerConfig::handler_timeout_ms`]: longest one message's handler may run.
/// A refund's channel calls take at most three attempts of 15 s; past this the handler is
/// waiting on a connection gone silent, and would otherwise hold the message (renewing its ack
/// wait) for ever.
pub const HANDLER_TIMEOUT_MS_DEFAULT: u64 = 120_000;
/// How long one pull waits for messages when the stream is idle, milliseconds.
pub const PULL_EXPIRES_MS: u64 = 5_000;
/// Default nak delays by delivery count: the n-th failed delivery waits the n-th entry (the last
/// one for every later delivery).
pub const NAK_BACKOFF_MS_DEFAULT: [u64; 6] = [1_000, 2_000, 5_000, 10_000, 30_000, 60_000];
/// Longest [`Consumer::run`] waits, once stopped, for its last acks to reach NATS.
pub const ACK_FLUSH_MS: u64 = 2_000;
/// First pause after a failed pull (NATS down, stream missing).
pub const RETRY_MS_MIN: u64 = 200;
/// Longest pause between failed pulls.
pub const RETRY_MS_MAX: u64 = 10_000;
/// Prometheus: messages a consumer finished, labelled `consumer` (durable name) and `outcome`
/// (`handled`: acked; `failed`: nak'ed for redelivery; `undecodable`: terminated).
pub const CONSUMER_MESSAGES_TOTAL: &str = "payledger_consumer_messages_total";
/// Prometheus: deliveries that were redeliveries (delivery count above 1), by `consumer`.
pub const CONSUMER_REDELIVERED_TOTAL: &str = "payledger_consumer_redelivered_total";
/// Prometheus: messages of the stream the consumer has not been delivered yet, by `consumer`
/// (gauge, refreshed after each pull).
pub const CONSUMER_PENDING_MESSAGES: &str = "payledger_consumer_pending_messages";
/// Prometheus: pulls that failed (NATS down, stream missing), by `consumer`.
pub const CONSUMER_FAILED_PULLS_TOTAL: &str = "payledger_consumer_failed_pulls_total";

/// The durable names of payledger's own consumers (`--nats-refunds-durable`,
/// `--nats-notifier-durable`). Processes running the same role share one durable, so JetStream
/// hands each message to one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durables {
    /// The refund worker's ([`REFUNDS_DURABLE_DEFAULT`]).
    pub refunds: String,
    /// The notifier's enqueuer ([`NOTIFIER_DURABLE_DEFAULT`]).
    pub notifier: String,
}

impl Default for Durables {
    fn default() -> Self {
        Self {
            refunds: REFUNDS_DURABLE_DEFAULT.to_string(),
            notifier: NOTIFIER_DURABLE_DEFAULT.to_string(),
        }
    }
}

/// One durable consumer of the event stream. Its `Debug` hides credentials in the URL.
#[derive(Clone)]
pub struct ConsumerConfig {
    /// NATS server URL(s), as [`RelayConfig::nats_url`].
    pub nats_url: String,
    /// The relay's stream.
    pub stream: String,
    /// Durable consumer name: JetStream remembers its acks across restarts and shares its
    /// messages among every process running it.
    pub durable_name: String,
    /// The one subject it takes, e.g. `payledger.events.*.RefundRequested`.
    pub filter_subject: String,
    /// Messages per pull (1 or more).
    pub batch_max: usize,
    /// Handlers running at once (1 or more).
    pub concurrency_max: usize,
    /// JetStream's ack wait, milliseconds.
    pub ack_wait_ms: u64,
    /// Nak delays by delivery count, milliseconds (see [`ConsumerConfig::nak_delay`]).
    pub nak_backoff_ms: Vec<u64>,
    /// Longest a handler may run on one message, milliseconds ([`HANDLER_TIMEOUT_MS_DEFAULT`]);
    /// past it the handler is dropped and the message nak'ed like a failure (logged), so it is
    /// delivered again after its back-off.
    pub handler_timeout_ms: u64,
}

impl std::fmt::Debug for ConsumerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerConfig")
            .field("stream", &self.stream)
            .field("durable_name", &self.durable_name)
            .field("filter_subject", &self.filter_subject)
            .field("batch_max", &self.batch_max)
            .field("concurrency_max", &self.concurrency_max)
            .finish_non_exhaustive()
    }
}

impl ConsumerConfig {
    /// Consumer `durable_name` of the relay's stream, taking events of type `event_type` (`*`
    /// for every type) of every merchant: `<prefix>.*.<event_type>`, or `<prefix>.*.>` for `*`.
    pub fn for_events(relay: &RelayConfig, durable_name: &str, event_type: &str) -> Self {
        let tail = if event_type == "*" { ">" } else { event_type };
        Self {
            nats_url: relay.nats_url.clone(),
            stream: relay.stream.clone(),
            durable_name: durable_name.to_string(),
            filter_subject: format!("{}.*.{tail}", relay.subject_prefix),
            batch_max: BATCH_MAX_DEFAULT,
            concurrency_max: CONCURRENCY_MAX_DEFAULT,
            ack_wait_ms: ACK_WAIT_MS_DEFAULT,
            nak_backoff_ms: NAK_BACKOFF_MS_DEFAULT.to_vec(),
            handler_timeout_ms: HANDLER_TIMEOUT_MS_DEFAULT,
        }
    }

    /// The nak delay of a message delivered `delivered` times (1 on the first delivery): entry
    /// `delivered - 1` of [`ConsumerConfig::nak_backoff_ms`], its last entry past the end, 1 s
    /// when it is empty.
    pub fn nak_delay(&self, delivered: i64) -> Duration {
        let i = usize::try_from(delivered.saturating_sub(1)).unwrap_or(0);
        let ms = self
            .nak_backoff_ms
            .get(i)
            .or(self.nak_backoff_ms.last())
            .copied()
            .unwrap_or(1_000);
        Duration::from_millis(ms)
    }

    fn pull_config(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(self.durable_name.clone()),
            description: Some(format!("payledger {} (see bus::consumer)", self.durable_name)),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_millis(self.ack_wait_ms),
            filter_subject: self.filter_subject.clone(),
            // Redelivered until handled: a refund or a notification is never given up here.
            max_deliver: -1,
            ..Default::default()
        }
    }
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// Not connected to NATS (yet, or any more): the client reconnects in the background.
    #[error("not connected to NATS")]
    NotConnected,
    /// JetStream refused or did not answer (the stream may not exist yet).
    #[error("NATS: {0}")]
    Nats(String),
}

/// A durable consumer running an [`EffectSubscriber`]'s handler on each event.
pub struct Consumer {
    config: ConsumerConfig,
    handler: Arc<dyn EffectSubscriber>,
    nats: Option<(async_nats::Client, Context)>,
    consumer: Option<PullConsumer>,
}

impl Consumer {
    /// A consumer of `config` calling `handler`; not connected yet.
    pub fn new(config: ConsumerConfig, handler: Arc<dyn EffectSubscriber>) -> Self {
        Self {
            config,
            handler,
            nats: None,
            consumer: None,
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    async fn connect(&mut self) -> Result<(), ConsumerError> {
        if self.nats.is_none() {
            let client = async_nats::ConnectOptions::new()
                .name(format!("payledger-{}", self.handler.name()))
                .retry_on_initial_connect()
                .max_reconnects(None)
                .connect(crate::server_addrs(&self.config.nats_url).map_err(ConsumerError::Nats)?)
                .await
                .map_err(|e| ConsumerError::Nats(format!("connecting: {e}")))?;
            let js = jetstream::new(client.clone());
            self.nats = Some((client, js));
        }
        Ok(())
    }

    /// The durable consumer, created on the stream when missing (an existing one keeps its
    /// settings and its acks).
    async fn consumer(&mut self) -> Result<PullConsumer, ConsumerError> {
        self.connect().await?;
        if let Some(c) = &self.consumer {
            return Ok(c.clone());
        }
        let Some((client, js)) = &self.nats else {
            return Err(ConsumerError::NotConnected);
        };
        if client.connection_state() != State::Connected {
            return Err(ConsumerError::NotConnected);
        }
        let stream = js
            .get_stream(&self.config.stream)
            .await
            .map_err(|e| ConsumerError::Nats(format!("stream {} (the relay creates it): {e}", self.config.stream)))?;
        let consumer: PullConsumer = stream
            .get_or_create_consumer(&self.config.durable_name, self.config.pull_config())
            .await
            .map_err(|e| ConsumerError::Nats(format!("consumer {}: {e}", self.config.durable_name)))?;
        tracing::info!(stream = %self.config.stream, durable = %self.config.durable_name,
            filter = %self.config.filter_subject, "JetStream consumer ready");
        self.consumer = Some(consumer.clone());
        Ok(consumer)
    }

    /// Pulls one batch (waiting up to [`PULL_EXPIRES_MS`] for messages) and handles it, every
    /// message acked or nak'ed before this returns, unless `stop` turns true: then handlers in
    /// flight finish and no new one starts (the rest are redelivered after the ack wait).
    /// Returns how many messages it handled.
    ///
    /// # Errors
    /// [`ConsumerError`] when NATS is unreachable or the stream or consumer is missing.
    pub async fn step(&mut self, stop: &watch::Receiver<bool>) -> Result<usize, ConsumerError> {
        let consumer = self.consumer().await?;
        let batch = consumer
            .batch()
            // No more than can start at once: a message waiting in the batch gets no progress
            // signal, so behind slow handlers it would pass its ack wait and be delivered again
            // while still queued here (a refund sent to the channel twice at once).
            .max_messages(self.config.batch_max.min(self.config.concurrency_max).max(1))
            .expires(Duration::from_millis(PULL_EXPIRES_MS))
            .messages()
            .await
            .map_err(|e| {
                // A deleted consumer or stream is looked up (and created) again next time.
                self.consumer = None;
                ConsumerError::Nats(format!("pulling from {}: {e}", self.config.durable_name))
            })?;
        let mut stop = stop.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let handled = std::sync::atomic::AtomicUsize::new(0);
        let (this, count) = (&*self, &handled);
        batch
            .take_until(stopped)
            .for_each_concurrent(self.config.concurrency_max.max(1), move |message| async move {
                match message {
                    Ok(m) => {
                        this.finish(m).await;
                        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!(durable = %this.config.durable_name, error = %e, "pull interrupted"),
                }
            })
            .await;
        self.record_pending(&consumer).await;
        Ok(handled.into_inner())
    }

    /// Handles one message and acks, naks or terminates it.
    async fn finish(&self, message: jetstream::Message) {
        let durable = self.config.durable_name.as_str();
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        if delivered > 1 {
            metrics::counter!(CONSUMER_REDELIVERED_TOTAL, "consumer" => durable.to_string()).increment(1);
        }
        let event = match Envelope::from_slice(&message.payload).and_then(Envelope::into_log_event) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(durable, subject = %message.subject, error = %e, "not an event envelope; dropped");
                metrics::counter!(CONSUMER_MESSAGES_TOTAL, "consumer" => durable.to_string(), "outcome" => "undecodable")
                    .increment(1);
                if let Err(e) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(durable, error = %e, "terminating a message failed");
                }
                return;
            }
        };
        let result = {
            let handle = self.handler.handle(&event);
            tokio::pin!(handle);
            // Tell JetStream the work goes on, so a long channel call is not redelivered meanwhile.
            let mut progress = tokio::time::interval(Duration::from_millis((self.config.ack_wait_ms / 2).max(100)));
            progress.tick().await;
            // ... but not for ever: a handler stuck on a silent connection gives the message back.
            let timeout_ms = self.config.handler_timeout_ms;
            let deadline = tokio::time::sleep(Duration::from_millis(timeout_ms));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    r = &mut handle => break r,
                    _ = &mut deadline => break Err(SubscriberError::Failed(format!(
                        "handler still running after {timeout_ms} ms (a silent connection?); abandoned"
                    ))),
                    _ = progress.tick() => {
                        let _ = message.ack_with(AckKind::Progress).await;
                    }
                }
            }
        };
        let (kind, outcome) = match result {
            Ok(()) => (AckKind::Ack, "handled"),
            Err(e) => {
                let delay = self.config.nak_delay(delivered);
                tracing::warn!(durable, order_id = %event.order_id, sequence = event.sequence, delivered,
                    retry_in_ms = delay.as_millis() as u64, error = %e, "handler failed; redelivered later");
                (AckKind::Nak(Some(delay)), "failed")
            }
        };
        metrics::counter!(CONSUMER_MESSAGES_TOTAL, "consumer" => durable.to_string(), "outcome" => outcome)
            .increment(1);
        // A lost ack means a redelivery, which the handlers tolerate.
        if let Err(e) = message.ack_with(kind).await {
            tracing::warn!(durable, error = %e, "acknowledging a message failed; it will be redelivered");
        }
    }

    async fn record_pending(&self, consumer: &PullConsumer) {
        if let Ok(info) = consumer.get_info().await {
            metrics::gauge!(CONSUMER_PENDING_MESSAGES, "consumer" => self.config.durable_name.clone())
                .set(info.num_pending as f64);
        }
    }

    /// Pulls and handles until `stop` turns true: then it pulls no more, lets the handlers in
    /// flight finish and ack (or nak) their messages, flushes those acks to NATS (at most
    /// [`ACK_FLUSH_MS`]) and returns. Failures are logged and retried with back-off; NATS being
    /// down is one of them.
    pub async fn run(mut self, stop: watch::Receiver<bool>) {
        let mut retry_ms = RETRY_MS_MIN;
        while !*stop.borrow() {
            match self.step(&stop).await {
                Ok(_) => retry_ms = RETRY_MS_MIN,
                Err(e) => {
                    metrics::counter!(CONSUMER_FAILED_PULLS_TOTAL, "consumer" => self.config.durable_name.clone())
                        .increment(1);
                    tracing::warn!(durable = %self.config.durable_name, error = %e, retry_in_ms = retry_ms,
                        "JetStream pull failed; retrying");
                    let mut stop = stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(retry_ms)) => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                    retry_ms = (retry_ms * 2).min(RETRY_MS_MAX);
                }
            }
        }
        // The acks of the last messages are only queued in the client: send them before it goes.
        if let Some((client, _)) = &self.nats {
            let flushed = tokio::time::timeout(Duration::from_millis(ACK_FLUSH_MS), client.flush()).await;
            if !matches!(flushed, Ok(Ok(()))) {
                tracing::warn!(durable = %self.config.durable_name, "acks not flushed at stop; those messages are redelivered");
            }
        }
        tracing::info!(durable = %self.config.durable_name, "JetStream consumer stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_take_one_event_type_or_all_of_them() {
        let relay = RelayConfig::new("nats://127.0.0.1:4222");
        let refunds = ConsumerConfig::for_events(&relay, REFUNDS_DURABLE_DEFAULT, "RefundRequested");
        assert_eq!(refunds.filter_subject, "payledger.events.*.RefundRequested");
        let all = ConsumerConfig::for_events(&relay, NOTIFIER_DURABLE_DEFAULT, "*");
        assert_eq!(all.filter_subject, "payledger.events.*.>");
        assert_eq!(all.pull_config().max_deliver, -1, "never given up");
        assert_eq!(all.pull_config().ack_policy, AckPolicy::Explicit);
    }

    #[test]
    fn the_nak_delay_follows_the_delivery_count_and_stays_at_the_last_step() {
        let mut c = ConsumerConfig::for_events(&RelayConfig::new("nats://x"), "d", "*");
        c.nak_backoff_ms = vec![100, 500];
        assert_eq!(c.nak_delay(1), Duration::from_millis(100));
        assert_eq!(c.nak_delay(2), Duration::from_millis(500));
        assert_eq!(c.nak_delay(50), Duration::from_millis(500));
        assert_eq!(
            c.nak_delay(0),
            Duration::from_millis(100),
            "a count below 1 is the first"
        );
        c.nak_backoff_ms.clear();
        assert_eq!(c.nak_delay(3), Duration::from_secs(1));
    }
}
