//! Prometheus metrics: one process-wide recorder, rendered at `GET /metrics` in the text
//! exposition format (<https://prometheus.io/docs/instrumenting/exposition_formats/>).
//!
//! Metrics are recorded with the `metrics` facade where things happen (the store, the notifier,
//! channel calls); the recorder is installed once per process by [`handle`], since `metrics`
//! allows one global recorder and a process (the test suite) may start many servers. Counters
//! are therefore per process, not per server.
//!
//! | name | type | labels | what |
//! |------|------|--------|------|
//! | `payledger_events_appended_total` | counter | `event_type` | events appended to the store |
//! | `payledger_append_batch_commands` | histogram | | commands per append transaction (group commit; 1 when idle) |
//! | `payledger_notifications_total` | counter | `outcome` (`delivered`, `failed`, `abandoned`), `status_class` (`2xx`…`5xx`, `none`) | notification attempts |
//! | `payledger_notification_latency_seconds` | histogram | `status_class` | one attempt's duration |
//! | `payledger_channel_call_seconds` | histogram | `channel`, `operation` (`create`, `refund`), `outcome` (`ok`, `rejected`, `unavailable`, `timeout`, `unsupported`) | a call to a payment channel |
//! | `payledger_log_head_position` | gauge | | global position of the newest event in the log |
//! | `payledger_subscriber_lag_events` | gauge | `subscriber` | head position minus the subscriber's checkpoint: an estimate of the events it has yet to apply (positions may have gaps, and on PostgreSQL commit order is not position order) |
//! | `payledger_notify_queue_jobs` | gauge | `status` | notify queue jobs by status |
//! | `payledger_rate_limited_total` | counter | `limit` (`merchant`, `address`) | requests refused with 429 by a rate limit ([`crate::http::rate_limit`]) |
//!
//! | `payledger_events_published_total` | counter | | events JetStream acknowledged (relay) |
//! | `payledger_events_published_duplicate_total` | counter | | acknowledgements marked duplicate: re-publishes after a crash |
//! | `payledger_relay_lag_seconds` | gauge | | age of the oldest event the relay has not published yet |
//! | `payledger_relay_failed_steps_total` | counter | | relay steps that failed (NATS down, timeouts) and were retried |
//! | `payledger_consumer_messages_total` | counter | `consumer` (durable), `outcome` (`handled`, `failed`, `undecodable`) | messages a JetStream consumer finished (NATS mode) |
//! | `payledger_consumer_redelivered_total` | counter | `consumer` | deliveries that were redeliveries |
//! | `payledger_consumer_pending_messages` | gauge | `consumer` | stream messages not yet delivered to the consumer |
//! | `payledger_consumer_failed_pulls_total` | counter | `consumer` | pulls that failed (NATS down, stream missing) and were retried |
//!
//! The `payledger_subscriber_lag_events`, `payledger_log_head_position` and
//! `payledger_notify_queue_jobs` gauges are read from the database at each scrape; the relay's
//! checkpoint shows as `payledger_subscriber_lag_events{subscriber="nats_relay"}`.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use payledger_channel_adapters::ChannelError;
use payledger_store::{Backend, Database};

/// See the module table.
pub const CHANNEL_CALL_SECONDS: &str = "payledger_channel_call_seconds";
/// See the module table.
pub const LOG_HEAD_POSITION: &str = "payledger_log_head_position";
/// See the module table.
pub const SUBSCRIBER_LAG_EVENTS: &str = "payledger_subscriber_lag_events";
/// See the module table.
pub const NOTIFY_QUEUE_JOBS: &str = "payledger_notify_queue_jobs";

/// Histogram buckets of every `*_seconds` metric: 5 ms to 30 s, covering a local channel
/// simulator and a merchant that takes the whole request timeout.
const SECONDS_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Buckets of [`payledger_store::append::APPEND_BATCH_COMMANDS`], up to the batch limit.
const BATCH_BUCKETS: [f64; 7] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
/// How often histograms are compacted when nobody scrapes (the exporter's upkeep).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process's Prometheus recorder, installed on first use. When another recorder was
/// installed first (an embedding program's), that one keeps receiving the metrics and this
/// handle renders nothing; a warning is logged, nothing panics.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(payledger_store::append::APPEND_BATCH_COMMANDS.into()),
                    &BATCH_BUCKETS,
                )
            });
        let builder = match builder {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "histogram buckets refused; histograms render as summaries");
                PrometheusBuilder::new()
            }
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            tracing::warn!(error = %e, "a metrics recorder was already installed; /metrics will be empty");
        }
        describe();
        let upkeep = handle.clone();
        // A plain thread: the handle outlives any one server's runtime (tests start many).
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "metrics upkeep thread did not start; histograms compact at scrapes only");
        }
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        payledger_store::db::EVENTS_APPENDED_TOTAL,
        "Events appended to the store by this process, by event type."
    );
    describe_histogram!(
        payledger_store::append::APPEND_BATCH_COMMANDS,
        "Commands appended per event-store transaction (group commit)."
    );
    describe_counter!(
        crate::http::rate_limit::RATE_LIMITED_TOTAL,
        "Requests refused with 429 by a rate limit: per merchant, or per client address for unauthenticated requests."
    );
    describe_counter!(
        payledger_notifier::NOTIFICATIONS_TOTAL,
        "Notification delivery attempts by outcome and merchant answer."
    );
    describe_histogram!(
        payledger_notifier::NOTIFICATION_LATENCY_SECONDS,
        Unit::Seconds,
        "Duration of one notification delivery attempt."
    );
    describe_histogram!(
        CHANNEL_CALL_SECONDS,
        Unit::Seconds,
        "Duration of a call to a payment channel."
    );
    describe_gauge!(LOG_HEAD_POSITION, "Global position of the newest event in the log.");
    describe_gauge!(
        SUBSCRIBER_LAG_EVENTS,
        "Log head position minus the subscriber's checkpoint position."
    );
    describe_gauge!(NOTIFY_QUEUE_JOBS, "Notify queue jobs by status.");
}

/// How many of this process's most recent channel calls [`CallLog`] keeps.
pub const RECENT_CHANNEL_CALLS: usize = 500;

/// One call to a payment channel, as [`CallLog`] keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelCall {
    pub at: chrono::DateTime<chrono::Utc>,
    pub channel: String,
    /// The channel account's id (our name for it).
    pub account: String,
    /// `create`, `refund`.
    pub operation: &'static str,
    /// As in [`CHANNEL_CALL_SECONDS`]: `ok`, `rejected`, `unavailable`, `timeout`, `unsupported`.
    pub outcome: &'static str,
    pub latency: std::time::Duration,
}

/// This process's most recent channel calls ([`RECENT_CHANNEL_CALLS`]), newest last, for the
/// console's channel page (the histogram is for Prometheus; this is what a person reads). Cheap to
/// clone.
#[derive(Debug, Clone, Default)]
pub struct CallLog(std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<ChannelCall>>>);

impl CallLog {
    fn record(&self, call: ChannelCall) {
        let mut calls = self.0.lock().expect("not poisoned");
        if calls.len() == RECENT_CHANNEL_CALLS {
            calls.pop_front();
        }
        calls.push_back(call);
    }

    /// The calls kept, oldest first.
    pub fn recent(&self) -> Vec<ChannelCall> {
        self.0.lock().expect("not poisoned").iter().cloned().collect()
    }
}

/// Times one channel call and records it in [`CHANNEL_CALL_SECONDS`] with its outcome, and in
/// `log`.
pub async fn timed_channel_call<T>(
    log: &CallLog,
    channel: &str,
    account: &str,
    operation: &'static str,
    call: impl Future<Output = Result<T, ChannelError>>,
) -> Result<T, ChannelError> {
    let started = Instant::now();
    let result = call.await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(ChannelError::Rejected { .. }) => "rejected",
        Err(ChannelError::Unavailable(_)) => "unavailable",
        Err(ChannelError::Timeout(_)) => "timeout",
        Err(ChannelError::Unsupported { .. }) => "unsupported",
    };
    metrics::histogram!(
        CHANNEL_CALL_SECONDS,
        "channel" => channel.to_string(),
        "operation" => operation,
        "outcome" => outcome
    )
    .record(started.elapsed().as_secs_f64());
    log.record(ChannelCall {
        at: chrono::Utc::now(),
        channel: channel.to_string(),
        account: account.to_string(),
        operation,
        outcome,
        latency: started.elapsed(),
    });
    result
}

/// Reads the gauges that live in the database (log head, subscriber lag, queue depth) and sets
/// them; a failed read leaves the previous values and is logged.
pub async fn refresh_database_gauges(db: &Database) {
    if let Err(e) = try_refresh(db).await {
        tracing::warn!(error = %e, "reading metrics gauges from the database failed");
    }
}

async fn try_refresh(db: &Database) -> Result<(), sqlx::Error> {
    let pool = db.pool();
    let head_sql = match db.backend() {
        Backend::Postgres => "SELECT MAX(global_position) FROM events",
        Backend::Sqlite => "SELECT MAX(global_position) FROM event_positions",
    };
    let head: Option<i64> = sqlx::query_scalar(head_sql).fetch_one(pool).await?;
    let head = head.unwrap_or(0);
    metrics::gauge!(LOG_HEAD_POSITION).set(head as f64);
    let checkpoints: Vec<(String, i64)> = sqlx::query_as("SELECT name, global_position FROM subscriber_checkpoint")
        .fetch_all(pool)
        .await?;
    for (name, position) in checkpoints {
        metrics::gauge!(SUBSCRIBER_LAG_EVENTS, "subscriber" => name).set((head - position).max(0) as f64);
    }
    let queue: Vec<(String, i64)> = sqlx::query_as("SELECT status, COUNT(*) FROM notify_job GROUP BY status")
        .fetch_all(pool)
        .await?;
    for status in ["pending", "delivered", "abandoned"] {
        let n = queue.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
        metrics::gauge!(NOTIFY_QUEUE_JOBS, "status" => status).set(n as f64);
    }
    Ok(())
}
