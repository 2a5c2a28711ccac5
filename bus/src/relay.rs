//! The relay: a subscriber of the global log that publishes every event to JetStream.
//!
//! Each event goes to stream [`RelayConfig::stream`] (default `PAYLEDGER_EVENTS`), subject
//! `<prefix>.<merchant_id>.<event_type>` (prefix default `payledger.events`), headers
//! `Nats-Msg-Id: <order_id>:<sequence>` and `Payledger-Mode: test|live` (the order's mode, also
//! the envelope's `mode`: a downstream system that must never see test money filters on it),
//! body the [`Envelope`] as JSON.
//!
//! # Batches, acks in flight, checkpoint
//! One step reads up to [`RelayConfig::batch_events_max`] events after the relay's checkpoint,
//! publishes them without waiting for each ack, then waits for all acks and only then saves the
//! checkpoint (all or nothing per batch). A crash or error anywhere before that leaves the
//! checkpoint where it was and the whole batch is published again; JetStream drops the messages
//! it already holds because their `Nats-Msg-Id` repeats within the stream's duplicate window.
//! So delivery to the stream is at-least-once from the relay and, within the window,
//! exactly-once in the stream.
//!
//! # Order per order
//! Publishing a batch in log order with every ack in flight is not enough: when the connection
//! breaks mid-batch, messages written to the dead socket are lost while later ones, still in
//! the client's buffer, reach the server after reconnecting, so a retry would store an earlier
//! event of an order after a later one. The relay therefore publishes a batch in rounds: round
//! `k` holds the `k`-th event of each order present in the batch (in log order), all its acks
//! in flight at once, and round `k + 1` starts only when every ack of round `k` came back. An
//! event is thus published only after its order's previous event is stored, and the stream holds
//! each order's events as a gap-free prefix, in sequence order, whatever fails. A batch of 500
//! events over distinct orders is one round; orders have a few events each, so a loaded relay
//! still has hundreds of acks in flight per round.
//!
//! # NATS down
//! The client reconnects in the background (also when NATS is down at start). While it is not
//! connected, or when a publish or an ack fails or times out, the step fails, the checkpoint
//! stays, and the relay backs off ([`BACKOFF_MS_MIN`] doubling to [`BACKOFF_MS_MAX`]) and tries
//! again. Orders are accepted meanwhile: their events are in the database, and the relay
//! publishes them, in order, when NATS is back.

use std::collections::{HashMap, VecDeque};
use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use chrono::Utc;
use payledger_domain::{Mode, PaymentOrderEvent};
use payledger_store::subscription::{checkpoint, wait_after, Progress};
use payledger_store::{Database, DbError, LogEvent, LogPosition, OrderOwner};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::envelope::{self, Envelope, EnvelopeError};

/// Default stream name.
pub const STREAM_DEFAULT: &str = "PAYLEDGER_EVENTS";
/// Default subject prefix; subjects are `<prefix>.<merchant_id>.<event_type>`.
pub const SUBJECT_PREFIX_DEFAULT: &str = "payledger.events";
/// Default checkpoint name (`subscriber_checkpoint.name`).
pub const CHECKPOINT_DEFAULT: &str = "nats_relay";
/// Default events per batch, which is also the bound on acks in flight.
pub const BATCH_EVENTS_DEFAULT: i64 = 1_000;
/// Largest accepted batch: bounds acks in flight and the memory of one batch.
pub const BATCH_EVENTS_MAX: i64 = 10_000;
/// Default time JetStream has to acknowledge one message (and to answer stream management).
pub const ACK_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Default JetStream duplicate window: a re-publish within it is dropped by the server. It must
/// cover the time from a publish to its re-publish after a crash or failed batch (a restart).
pub const DUPLICATE_WINDOW_MS_DEFAULT: u64 = 120_000;
/// Default retention of the stream's messages: 7 days, in milliseconds (consumers that are down
/// longer lose the oldest events; the database keeps them all).
pub const MAX_AGE_MS_DEFAULT: u64 = 7 * 24 * 3_600_000;
/// First pause after a failed step.
pub const BACKOFF_MS_MIN: u64 = 200;
/// Longest pause between failed steps.
pub const BACKOFF_MS_MAX: u64 = 10_000;
/// Default of [`RelayConfig::step_timeout_ms`]: longest one step (read a batch, publish it, wait
/// for its acks, move the checkpoint) may take before it is abandoned and retried. Every NATS
/// operation has its own timeout ([`RelayConfig::ack_timeout_ms`]); this also bounds a database
/// connection gone silent (half-open), which would otherwise stall the relay for ever.
pub const STEP_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// How often [`Relay::connect`] looks whether the first connection is up.
/// Prometheus: events JetStream acknowledged (counter; duplicates included).
pub const EVENTS_PUBLISHED_TOTAL: &str = "payledger_events_published_total";
/// Prometheus: acknowledgements JetStream marked duplicate (re-publishes after a crash).
pub const EVENTS_DUPLICATE_TOTAL: &str = "payledger_events_published_duplicate_total";
/// Prometheus: age of the oldest event the relay has not published yet, seconds (gauge).
pub const RELAY_LAG_SECONDS: &str = "payledger_relay_lag_seconds";
/// Prometheus: relay steps that failed (NATS down, timeouts) and were retried.
pub const RELAY_FAILED_STEPS_TOTAL: &str = "payledger_relay_failed_steps_total";

const CONNECT_POLL_MS: u64 = 10;
/// Orders whose merchant the relay remembers (about 100 bytes each). Past it the oldest entry
/// goes; a miss costs one batched query per batch ([`payledger_store::GlobalLog::owners_of`]).
pub const MERCHANT_CACHE_ORDERS_MAX: usize = 100_000;

/// Where and how the relay publishes. Its `Debug` hides credentials in the URL.
#[derive(Clone)]
pub struct RelayConfig {
    /// NATS server URL(s), e.g. `nats://127.0.0.1:4222` (comma-separated for a cluster).
    pub nats_url: String,
    /// JetStream stream name; the relay creates it when missing and leaves an existing one as it is.
    pub stream: String,
    /// Subject prefix: no wildcards, no trailing dot. The stream captures `<prefix>.>`.
    pub subject_prefix: String,
    /// Checkpoint name in `subscriber_checkpoint`; one per NATS deployment fed from this database.
    pub checkpoint: String,
    /// Events per batch (1..=[`BATCH_EVENTS_MAX`]).
    pub batch_events_max: i64,
    /// Time to wait for one ack or one stream-management answer, in milliseconds.
    pub ack_timeout_ms: u64,
    /// The stream's duplicate window, in milliseconds; only used when the relay creates the
    /// stream. Must exceed the relay's worst restart time (docs/postgres-and-nats.md, "Events on NATS").
    pub duplicate_window_ms: u64,
    /// The stream's retention (`max_age`), in milliseconds; 0 keeps messages forever. Only used
    /// when the relay creates the stream.
    pub max_age_ms: u64,
    /// NATS mode's channel calls (see [`crate::channel_service`]): subject prefix of the channel
    /// service, `<prefix>.<channel>.<operation>` (default `payledger.channel`).
    pub channel_subject_prefix: String,
    /// How long a channel call waits for the channel service's answer, in milliseconds.
    pub channel_timeout_ms: u64,
    /// Longest one relay step may take, milliseconds ([`STEP_TIMEOUT_MS_DEFAULT`]); past it the
    /// step is abandoned (the checkpoint stays: the batch is published again, and JetStream
    /// drops the repeats) and retried with back-off.
    pub step_timeout_ms: u64,
    /// Copies JetStream keeps of the stream (and of the configuration bucket), 1 to 5: 3 on a
    /// three-node cluster survives the loss of one node. Only used when the stream is created;
    /// the consumers inherit it.
    pub replicas: usize,
}

impl RelayConfig {
    /// The defaults for a NATS server at `nats_url`.
    pub fn new(nats_url: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            stream: STREAM_DEFAULT.to_string(),
            subject_prefix: SUBJECT_PREFIX_DEFAULT.to_string(),
            checkpoint: CHECKPOINT_DEFAULT.to_string(),
            batch_events_max: BATCH_EVENTS_DEFAULT,
            ack_timeout_ms: ACK_TIMEOUT_MS_DEFAULT,
            duplicate_window_ms: DUPLICATE_WINDOW_MS_DEFAULT,
            max_age_ms: MAX_AGE_MS_DEFAULT,
            channel_subject_prefix: payledger_channel_adapters::remote::SUBJECT_PREFIX_DEFAULT.to_string(),
            channel_timeout_ms: crate::channel_service::REQUEST_TIMEOUT_MS_DEFAULT,
            step_timeout_ms: STEP_TIMEOUT_MS_DEFAULT,
            replicas: 1,
        }
    }

    /// [`RelayConfig::nats_url`] without credentials (`user:password@`, token@), for logs.
    pub fn nats_url_redacted(&self) -> String {
        self.nats_url
            .split(',')
            .map(|server| match (server.find("://"), server.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &server[..scheme], &server[at + 1..]),
                (None, Some(at)) => format!("***@{}", &server[at + 1..]),
                _ => server.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    fn batch(&self) -> i64 {
        self.batch_events_max.clamp(1, BATCH_EVENTS_MAX)
    }
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("nats_url", &self.nats_url_redacted())
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .field("checkpoint", &self.checkpoint)
            .field("batch_events_max", &self.batch_events_max)
            .field("ack_timeout_ms", &self.ack_timeout_ms)
            .field("duplicate_window_ms", &self.duplicate_window_ms)
            .field("max_age_ms", &self.max_age_ms)
            .field("channel_subject_prefix", &self.channel_subject_prefix)
            .field("channel_timeout_ms", &self.channel_timeout_ms)
            .finish()
    }
}

/// A relay failure. The batch is not checkpointed and will be published again.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading the log or saving the checkpoint failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The NATS client is not connected (NATS down or unreachable); nothing was published.
    #[error("NATS is not connected")]
    NotConnected,
    /// Connecting, managing the stream, publishing or an ack failed or timed out.
    #[error("NATS: {0}")]
    Nats(String),
    /// An event has no `OrderCreated` (data written by hand or corrupt): it has no merchant, so
    /// no subject. The relay stops here rather than skip it.
    #[error("order {0} has no OrderCreated event: cannot tell its merchant")]
    UnknownMerchant(Uuid),
    /// An event could not be serialised.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The step took longer than [`RelayConfig::step_timeout_ms`] (a silent connection) and was
    /// abandoned.
    #[error("step took longer than {0} ms (a silent connection?); abandoned")]
    TimedOut(u64),
}

/// Counters of one relay, read with [`RelayMetrics::snapshot`]. Shared with whoever exports them.
#[derive(Debug, Default)]
pub struct RelayMetrics {
    published: AtomicU64,
    duplicates: AtomicU64,
    failed_steps: AtomicU64,
    lag_ms: AtomicU64,
    checkpoint_position: AtomicU64,
}

/// A reading of [`RelayMetrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayMetricsSnapshot {
    /// Events JetStream acknowledged since start (duplicates included).
    pub published_total: u64,
    /// Of those, acks that said "duplicate": re-publishes JetStream dropped.
    pub duplicates_total: u64,
    /// Steps that failed (NATS down, timeouts, database errors) since start.
    pub failed_steps_total: u64,
    /// Relay lag in milliseconds: age of the oldest event not yet acknowledged at the last step
    /// (0 when caught up).
    pub lag_ms: u64,
    /// `global_position` of the checkpoint.
    pub checkpoint_position: u64,
}

impl RelayMetrics {
    /// The current values.
    pub fn snapshot(&self) -> RelayMetricsSnapshot {
        RelayMetricsSnapshot {
            published_total: self.published.load(Ordering::Relaxed),
            duplicates_total: self.duplicates.load(Ordering::Relaxed),
            failed_steps_total: self.failed_steps.load(Ordering::Relaxed),
            lag_ms: self.lag_ms.load(Ordering::Relaxed),
            checkpoint_position: self.checkpoint_position.load(Ordering::Relaxed),
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayProgress {
    /// Published and checkpointed this many events (a full batch: more may be waiting).
    Published(usize),
    /// The log is read to its end.
    CaughtUp,
    /// Committed events wait behind an open transaction; look again soon.
    HeldBack,
}

/// What publishing one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// Messages acknowledged.
    pub acked: usize,
    /// Of those, acks that said "duplicate".
    pub duplicates: usize,
    /// Rounds (see the module docs) it took.
    pub rounds: usize,
}

/// Order → owner (merchant and mode), bounded; evicts the oldest insertion first.
#[derive(Default)]
struct MerchantCache {
    map: HashMap<Uuid, OrderOwner>,
    order: VecDeque<Uuid>,
}

impl MerchantCache {
    fn insert(&mut self, order_id: Uuid, owner: OrderOwner) {
        if self.map.insert(order_id, owner).is_none() {
            self.order.push_back(order_id);
            while self.order.len() > MERCHANT_CACHE_ORDERS_MAX {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
}

struct Message {
    subject: String,
    mode: Mode,
    msg_id: String,
    body: Bytes,
}

/// The relay. Build it with [`Relay::new`] (no I/O), connect with [`Relay::connect`], then
/// [`Relay::run`] it, or drive it with [`Relay::step`].
pub struct Relay {
    db: Database,
    config: RelayConfig,
    metrics: Arc<RelayMetrics>,
    merchants: Mutex<MerchantCache>,
    nats: Option<(async_nats::Client, Context)>,
    stream_ready: bool,
}

impl Relay {
    /// A relay of `db`'s global log, not connected yet.
    pub fn new(db: Database, config: RelayConfig) -> Self {
        Self {
            db,
            config,
            metrics: Arc::default(),
            merchants: Mutex::default(),
            nats: None,
            stream_ready: false,
        }
    }

    /// Its counters (a shared handle: they keep moving while the relay runs).
    pub fn metrics(&self) -> Arc<RelayMetrics> {
        self.metrics.clone()
    }

    /// Its configuration.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// Creates the NATS client and waits up to [`RelayConfig::ack_timeout_ms`] for it to
    /// connect. It keeps connecting and reconnecting in the background, so this succeeds while
    /// NATS is down; steps fail with [`RelayError::NotConnected`] until it is back.
    ///
    /// # Errors
    /// [`RelayError::Nats`] when the URL is not a NATS URL.
    pub async fn connect(&mut self) -> Result<(), RelayError> {
        if self.nats.is_some() {
            return Ok(());
        }
        let timeout = Duration::from_millis(self.config.ack_timeout_ms);
        let client = async_nats::ConnectOptions::new()
            .name("payledger-relay")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(timeout)
            .connect(crate::server_addrs(&self.config.nats_url).map_err(RelayError::Nats)?)
            .await
            .map_err(|e| RelayError::Nats(format!("connecting to {}: {e}", self.config.nats_url_redacted())))?;
        // Give a reachable server the time to answer before the first step, so that step does
        // not fail for nothing; an unreachable one is retried in the background.
        let deadline = tokio::time::Instant::now() + timeout;
        while client.connection_state() != State::Connected && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(CONNECT_POLL_MS)).await;
        }
        let js = jetstream::ContextBuilder::new()
            .timeout(timeout)
            .max_ack_inflight(self.config.batch() as usize)
            .backpressure_on_inflight(true)
            .build(client.clone());
        self.nats = Some((client, js));
        Ok(())
    }

    fn stream_config(&self) -> StreamConfig {
        StreamConfig {
            name: self.config.stream.clone(),
            subjects: vec![format!("{}.>", self.config.subject_prefix)],
            storage: StorageType::File,
            duplicate_window: Duration::from_millis(self.config.duplicate_window_ms),
            max_age: Duration::from_millis(self.config.max_age_ms),
            description: Some("payledger events: one message per event, see schemas/events".into()),
            num_replicas: self.config.replicas,
            ..Default::default()
        }
    }

    fn connected(&self) -> Result<(&async_nats::Client, &Context), RelayError> {
        match &self.nats {
            Some((client, js)) if client.connection_state() == State::Connected => Ok((client, js)),
            _ => Err(RelayError::NotConnected),
        }
    }

    /// Creates the stream when it is missing. An existing stream keeps its configuration, which
    /// an operator may have changed (retention, replicas, duplicate window); a warning is logged
    /// when its subjects do not cover `<prefix>.>`.
    ///
    /// # Errors
    /// [`RelayError::NotConnected`]; [`RelayError::Nats`] when JetStream refuses (e.g. another
    /// stream already captures the subjects) or does not answer in time.
    pub async fn ensure_stream(&mut self) -> Result<(), RelayError> {
        let config = self.stream_config();
        let (_, js) = self.connected()?;
        let ours = format!("{}.>", self.config.subject_prefix);
        match js.get_stream(&self.config.stream).await {
            Ok(mut stream) => {
                let info = stream
                    .info()
                    .await
                    .map_err(|e| RelayError::Nats(format!("reading stream {}: {e}", self.config.stream)))?;
                if !info.config.subjects.iter().any(|s| covers(s, &ours)) {
                    tracing::warn!(stream = %self.config.stream, subjects = ?info.config.subjects, expected = %ours,
                        "the stream's subjects do not cover the relay's; publishes will fail");
                }
            }
            Err(e)
                if matches!(e.kind(), GetStreamErrorKind::JetStream(ref j)
                    if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                js.create_stream(config)
                    .await
                    .map_err(|e| RelayError::Nats(format!("creating stream {}: {e}", self.config.stream)))?;
                tracing::info!(stream = %self.config.stream, subjects = %ours, "JetStream stream created");
            }
            Err(e) => {
                return Err(RelayError::Nats(format!(
                    "looking up stream {}: {e}",
                    self.config.stream
                )))
            }
        }
        self.stream_ready = true;
        Ok(())
    }

    /// The owner (merchant and mode) of each event's order: from the cache, or from
    /// `OrderCreated` in the store in one batched read for the misses.
    async fn merchants(&self, events: &[LogEvent]) -> Result<HashMap<Uuid, OrderOwner>, RelayError> {
        let mut cache = self.merchants.lock().await;
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        for e in events {
            if found.contains_key(&e.order_id) {
                continue;
            }
            if let PaymentOrderEvent::OrderCreated { terms, .. } = &e.event {
                cache.insert(e.order_id, OrderOwner::of(terms));
            }
            match cache.map.get(&e.order_id) {
                Some(m) => {
                    found.insert(e.order_id, m.clone());
                }
                None if !missing.contains(&e.order_id) => missing.push(e.order_id),
                None => {}
            }
        }
        if !missing.is_empty() {
            let read = self.db.log().owners_of(&missing).await?;
            for id in missing {
                let m = read.get(&id).ok_or(RelayError::UnknownMerchant(id))?;
                cache.insert(id, m.clone());
                found.insert(id, m.clone());
            }
        }
        Ok(found)
    }

    fn messages(&self, events: &[LogEvent], owners: &HashMap<Uuid, OrderOwner>) -> Result<Vec<Message>, RelayError> {
        events
            .iter()
            .map(|e| {
                let owner = owners.get(&e.order_id).ok_or(RelayError::UnknownMerchant(e.order_id))?;
                let envelope = Envelope::new(e, owner)?;
                Ok(Message {
                    subject: envelope::subject(&self.config.subject_prefix, &owner.merchant_id, &envelope.event_type),
                    mode: owner.mode,
                    msg_id: envelope.msg_id(),
                    body: Bytes::from(serde_json::to_vec(&envelope).map_err(EnvelopeError::from)?),
                })
            })
            .collect()
    }

    /// Publishes `events` (in log order) and waits for every ack, in rounds (module docs). Does
    /// not touch the checkpoint: [`Relay::step`] does. Public so a test can stop exactly between
    /// the acks and the checkpoint, as a crash there would.
    ///
    /// # Errors
    /// The first failure; messages of earlier rounds are stored, none of later rounds were sent.
    pub async fn publish(&mut self, events: &[LogEvent]) -> Result<Published, RelayError> {
        if !self.stream_ready {
            self.ensure_stream().await?;
        }
        let merchants = self.merchants(events).await?;
        let messages = self.messages(events, &merchants)?;
        let mut outcome = Published::default();
        for round in rounds(events) {
            let js = self.connected()?.1.clone();
            let mut acks = Vec::with_capacity(round.len());
            for i in round {
                let m = &messages[i];
                let publish = PublishMessage::build()
                    .payload(m.body.clone())
                    .message_id(&m.msg_id)
                    .header(envelope::MODE_HEADER, m.mode.as_str());
                let ack = js
                    .send_publish(m.subject.clone(), publish)
                    .await
                    .map_err(|e| RelayError::Nats(format!("publishing {}: {e}", m.msg_id)))?;
                acks.push(ack.into_future());
            }
            let expected_stream = &self.config.stream;
            for result in futures::future::join_all(acks).await {
                let ack = result.map_err(|e| {
                    if e.kind() == async_nats::jetstream::context::PublishErrorKind::StreamNotFound {
                        self.stream_ready = false;
                    }
                    RelayError::Nats(format!("waiting for an ack: {e}"))
                })?;
                if &ack.stream != expected_stream {
                    return Err(RelayError::Nats(format!(
                        "stream {} took a message meant for {expected_stream}: two streams share the subjects",
                        ack.stream
                    )));
                }
                outcome.acked += 1;
                outcome.duplicates += usize::from(ack.duplicate);
            }
            outcome.rounds += 1;
        }
        self.metrics
            .published
            .fetch_add(outcome.acked as u64, Ordering::Relaxed);
        self.metrics
            .duplicates
            .fetch_add(outcome.duplicates as u64, Ordering::Relaxed);
        // Also to the process's metrics recorder (`GET /metrics`).
        metrics::counter!(EVENTS_PUBLISHED_TOTAL).increment(outcome.acked as u64);
        metrics::counter!(EVENTS_DUPLICATE_TOTAL).increment(outcome.duplicates as u64);
        Ok(outcome)
    }

    /// Publishes the next batch after the checkpoint and moves the checkpoint past it.
    ///
    /// # Errors
    /// [`RelayError`]; the checkpoint did not move.
    pub async fn step(&mut self) -> Result<RelayProgress, RelayError> {
        let started = std::time::Instant::now();
        let from = checkpoint(self.db.pool(), &self.config.checkpoint).await?;
        self.metrics
            .checkpoint_position
            .store(from.global_position.max(0) as u64, Ordering::Relaxed);
        let events = self.db.tail().read_after(from, self.config.batch()).await?;
        let Some(first) = events.first() else {
            // Nothing to publish yet: still create the stream, which consumers wait for.
            if !self.stream_ready {
                self.ensure_stream().await?;
            }
            self.metrics.lag_ms.store(0, Ordering::Relaxed);
            metrics::gauge!(RELAY_LAG_SECONDS).set(0.0);
            return Ok(if self.db.log().held_back(from).await? {
                RelayProgress::HeldBack
            } else {
                RelayProgress::CaughtUp
            });
        };
        let read = started.elapsed();
        let lag_ms = (Utc::now() - first.recorded_at).num_milliseconds().max(0) as u64;
        self.metrics.lag_ms.store(lag_ms, Ordering::Relaxed);
        metrics::gauge!(RELAY_LAG_SECONDS).set(lag_ms as f64 / 1000.0);
        let published = self.publish(&events).await?;
        let acked = started.elapsed();
        let last: LogPosition = events.last().map_or(from, |e| e.position);
        save_checkpoint_forward(self.db.pool(), &self.config.checkpoint, last).await?;
        self.metrics
            .checkpoint_position
            .store(last.global_position.max(0) as u64, Ordering::Relaxed);
        tracing::debug!(
            events = events.len(),
            rounds = published.rounds,
            duplicates = published.duplicates,
            lag_ms,
            read_ms = read.as_millis() as u64,
            publish_ms = (acked - read).as_millis() as u64,
            checkpoint_ms = (started.elapsed() - acked).as_millis() as u64,
            "relay batch published"
        );
        Ok(RelayProgress::Published(events.len()))
    }

    /// Connects and publishes forever: until the task is aborted, which is safe at any point
    /// (an unfinished batch is published again by the next run, and JetStream drops the
    /// duplicates). Failures are logged and retried with back-off; so is a step that takes
    /// longer than [`RelayConfig::step_timeout_ms`], which is abandoned the same way.
    pub async fn run(mut self) {
        let mut wake = self.db.appended();
        let mut backoff_ms = BACKOFF_MS_MIN;
        let step_timeout_ms = self.config.step_timeout_ms;
        loop {
            let step = async {
                self.connect().await?;
                self.step().await
            };
            let result = tokio::time::timeout(Duration::from_millis(step_timeout_ms), step)
                .await
                .unwrap_or(Err(RelayError::TimedOut(step_timeout_ms)));
            match result {
                Ok(progress) => {
                    backoff_ms = BACKOFF_MS_MIN;
                    let progress = match progress {
                        // Straight on: a short batch makes the next step find the end and wait.
                        RelayProgress::Published(_) => Progress::Moved,
                        RelayProgress::HeldBack => Progress::HeldBack,
                        RelayProgress::CaughtUp => Progress::CaughtUp,
                    };
                    wait_after(progress, &mut wake, None).await;
                }
                Err(e) => {
                    self.metrics.failed_steps.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(RELAY_FAILED_STEPS_TOTAL).increment(1);
                    tracing::warn!(error = %e, retry_in_ms = backoff_ms, "relay step failed; the checkpoint stays");
                    tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                    backoff_ms = (backoff_ms * 2).min(BACKOFF_MS_MAX);
                }
            }
        }
    }
}

/// Whether stream subject `filter` (maybe with wildcards) captures every subject `ours` does.
fn covers(filter: &str, ours: &str) -> bool {
    let (f, o): (Vec<_>, Vec<_>) = (filter.split('.').collect(), ours.split('.').collect());
    for (i, token) in f.iter().enumerate() {
        match (*token, o.get(i)) {
            (">", Some(_)) => return true,
            ("*", Some(t)) if *t != ">" => {}
            (t, Some(x)) if t == *x => {}
            _ => return false,
        }
    }
    f.len() == o.len()
}

/// Saves `position` as checkpoint `name`, only forward: a second relay that read the same batch
/// (or a stale one) cannot move it back, so a slow relay never makes the next step republish what
/// a faster one already passed. A save behind the stored position changes nothing.
///
/// # Errors
/// [`DbError::Sqlx`] when the database fails.
pub async fn save_checkpoint_forward(pool: &sqlx::AnyPool, name: &str, position: LogPosition) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO subscriber_checkpoint (name, transaction_id, global_position, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET transaction_id = excluded.transaction_id, \
         global_position = excluded.global_position, updated_at = excluded.updated_at \
         WHERE (subscriber_checkpoint.transaction_id, subscriber_checkpoint.global_position) \
         < (excluded.transaction_id, excluded.global_position)",
    )
    .bind(name)
    .bind(position.transaction_id)
    .bind(position.global_position)
    .bind(payledger_store::time::fmt_ts(Utc::now()))
    .execute(pool)
    .await?;
    Ok(())
}

/// Indices of `events` by round: round `k` holds the `k`-th event of each order, in log order.
fn rounds(events: &[LogEvent]) -> Vec<Vec<usize>> {
    let mut per_order: HashMap<Uuid, usize> = HashMap::new();
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let k = per_order.entry(e.order_id).or_insert(0);
        if rounds.len() <= *k {
            rounds.push(Vec::new());
        }
        rounds[*k].push(i);
        *k += 1;
    }
    rounds
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use payledger_domain::{CloseReason, PaymentOrderEvent};

    fn event(order: u128, sequence: i64) -> LogEvent {
        LogEvent {
            position: LogPosition::default(),
            event_id: Uuid::nil(),
            order_id: Uuid::from_u128(order),
            sequence,
            event_type: "OrderClosed".into(),
            event_version: "1.0".into(),
            event: PaymentOrderEvent::OrderClosed {
                reason: CloseReason::Cancelled,
                closed_at: Utc::now(),
            },
            metadata: serde_json::json!({}),
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn credentials_in_the_nats_url_never_reach_the_logs() {
        let config = RelayConfig::new("nats://relay:s3cret@n1:4222,tok@n2:4222,nats://n3:4222");
        assert_eq!(
            config.nats_url_redacted(),
            "nats://***@n1:4222,***@n2:4222,nats://n3:4222"
        );
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn a_round_holds_at_most_one_event_per_order_and_keeps_log_order() {
        let events = vec![
            event(1, 1),
            event(2, 1),
            event(1, 2),
            event(3, 1),
            event(1, 3),
            event(2, 2),
        ];
        assert_eq!(rounds(&events), vec![vec![0, 1, 3], vec![2, 5], vec![4]]);
    }

    #[test]
    fn a_stream_subject_covers_ours_only_with_matching_tokens_or_wildcards() {
        let ours = "payledger.events.>";
        assert!(covers("payledger.events.>", ours));
        assert!(covers("payledger.>", ours));
        assert!(covers(">", ours));
        assert!(!covers("payledger.events.*", ours), "one token only");
        assert!(!covers("payledger.events.shop1.>", ours), "narrower");
        assert!(!covers("other.events.>", ours));
    }

    #[test]
    fn a_batch_of_distinct_orders_is_one_round() {
        let events: Vec<_> = (0..500).map(|i| event(i, 1)).collect();
        assert_eq!(rounds(&events).len(), 1);
    }

    #[test]
    fn the_merchant_cache_forgets_the_oldest_order_past_its_bound() {
        let mut cache = MerchantCache::default();
        for i in 0..=MERCHANT_CACHE_ORDERS_MAX as u128 {
            let owner = OrderOwner {
                merchant_id: "m".into(),
                mode: Mode::Live,
            };
            cache.insert(Uuid::from_u128(i), owner);
        }
        assert_eq!(cache.map.len(), MERCHANT_CACHE_ORDERS_MAX);
        assert!(!cache.map.contains_key(&Uuid::from_u128(0)));
        assert!(cache
            .map
            .contains_key(&Uuid::from_u128(MERCHANT_CACHE_ORDERS_MAX as u128)));
    }
}
