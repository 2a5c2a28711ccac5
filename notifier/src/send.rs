//! Delivering queued notifications.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use payledger_domain::Mode;
use payledger_store::merchants;
use payledger_store::sealed::Keyring;
use payledger_store::time::fmt_ts;
use payledger_store::DbError;
use sqlx::AnyPool;
use tokio::sync::{watch, Notify, Semaphore};

use crate::outbound::{check_target, is_refused, PublicOnly, NO_ANSWER, REFUSED_TARGET};
use crate::signature::{sign_with_all, SIGNATURE_HEADER};

/// Counter of finished delivery attempts, labelled `outcome` (`delivered`; `failed`: retried
/// later; `abandoned`: it was the last attempt) and `status_class` (`2xx`, `3xx`, `4xx`, `5xx`,
/// or `none` when the merchant did not answer).
pub const NOTIFICATIONS_TOTAL: &str = "payledger_notifications_total";
/// Histogram of one delivery attempt's duration in seconds (request to answer or failure),
/// labelled `status_class` as [`NOTIFICATIONS_TOTAL`].
pub const NOTIFICATION_LATENCY_SECONDS: &str = "payledger_notification_latency_seconds";

/// Least pause after a failed scan of the notify queue (the database unreachable, say), so an
/// outage is retried once a second, not at every poll. Delivery resumes by itself afterwards.
pub const SCAN_ERROR_BACKOFF_MS: u64 = 1_000;

/// The `status_class` label of an attempt: `2xx` … `5xx`, `none` without an answer.
fn status_class(status_code: Option<u16>) -> &'static str {
    match status_code.map(|c| c / 100) {
        Some(1) => "1xx",
        Some(2) => "2xx",
        Some(3) => "3xx",
        Some(4) => "4xx",
        Some(5) => "5xx",
        Some(_) => "other",
        None => "none",
    }
}

/// Delays between attempts: after attempt n fails, attempt n+1 waits `delays[n-1]`; after the
/// last delay's attempt fails the notification is abandoned. So `delays.len() + 1` attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    pub delays: Vec<Duration>,
}

impl Default for RetrySchedule {
    /// WeChat Pay's notification intervals, ten retries (docs/notifications.md): 15s, 15s, 30s, 3m, 10m,
    /// 20m, 30m, 30m, 30m, 60m.
    fn default() -> Self {
        "15s,15s,30s,3m,10m,20m,30m,30m,30m,60m"
            .parse()
            .expect("the default schedule parses")
    }
}

impl FromStr for RetrySchedule {
    type Err = String;

    /// Parses a comma-separated list of durations, e.g. `15s,15s,30s,3m` (humantime syntax).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let delays = s
            .split(',')
            .map(|d| humantime::parse_duration(d.trim()).map_err(|e| format!("{d:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if delays.is_empty() {
            return Err("the retry schedule needs at least one delay".into());
        }
        Ok(Self { delays })
    }
}

/// How the sender behaves.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    pub schedule: RetrySchedule,
    /// Whole-request timeout of one POST (a slow merchant costs at most this).
    pub request_timeout_ms: u64,
    /// Deliveries in flight at once.
    pub concurrency_max: usize,
    /// How long a claimed job is hidden from other senders while it is being delivered.
    pub lease_ms: u64,
    /// How often the queue is checked when nothing wakes the sender.
    pub poll_interval_ms: u64,
    /// Whether a `notify_url` may reach a non-public address (loopback, private, link-local…,
    /// see [`crate::outbound`]), per mode. Where not, the address is checked when each request
    /// connects (IP literals before it, names by the resolver), and no proxy is used.
    pub private_targets: PrivateTargets,
}

/// Which modes' merchant URLs (`notify_url`, `return_url`) may reach non-public addresses.
/// Default: test mode may (a developer receives notifications on localhost), live mode may not
/// (a merchant's URL must not turn payledger against its own network).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrivateTargets {
    /// Test mode's URLs may be private.
    pub test: bool,
    /// Live mode's URLs may be private (an installation whose merchants are on its own network).
    pub live: bool,
}

impl Default for PrivateTargets {
    fn default() -> Self {
        Self {
            test: true,
            live: false,
        }
    }
}

impl PrivateTargets {
    /// Both modes may reach private addresses.
    pub const ALL: Self = Self { test: true, live: true };
    /// Neither mode may.
    pub const NONE: Self = Self {
        test: false,
        live: false,
    };

    /// Whether URLs of `mode` may reach private addresses.
    pub fn allows(self, mode: Mode) -> bool {
        match mode {
            Mode::Test => self.test,
            Mode::Live => self.live,
        }
    }
}

impl SenderConfig {
    /// The longest a graceful stop waits for deliveries in flight.
    pub fn stop_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms + 1_000)
    }
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            schedule: RetrySchedule::default(),
            request_timeout_ms: 10_000,
            concurrency_max: 16,
            lease_ms: 60_000,
            poll_interval_ms: 1_000,
            private_targets: PrivateTargets::default(),
        }
    }
}

/// Delivers due notifications.
#[derive(Clone)]
pub struct Sender {
    pool: AnyPool,
    keyring: Arc<Keyring>,
    /// Reaches any address: for the modes whose URLs may be private.
    http_any: reqwest::Client,
    /// Connects only to public addresses, no proxy: for the others.
    http_public: reqwest::Client,
    config: Arc<SenderConfig>,
    queued: Arc<Notify>,
    permits: Arc<Semaphore>,
}

#[derive(sqlx::FromRow)]
struct Job {
    notification_id: String,
    merchant_id: String,
    mode: String,
    notify_url: String,
    body: String,
    attempts: i64,
    next_attempt_at: String,
}

impl Sender {
    /// A sender over the notify queue in `pool`; `queued` wakes it (see [`crate::NotifyEnqueuer`]).
    /// `keyring` opens the merchants' sealed webhook secrets.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (TLS roots unavailable).
    pub fn new(
        pool: AnyPool,
        keyring: Arc<Keyring>,
        mut config: SenderConfig,
        queued: Arc<Notify>,
    ) -> Result<Self, reqwest::Error> {
        // A lease shorter than a request would let a second sender deliver a job still in flight.
        config.lease_ms = config.lease_ms.max(config.request_timeout_ms + 5_000);
        let builder = || {
            reqwest::Client::builder()
                .timeout(Duration::from_millis(config.request_timeout_ms))
                .connect_timeout(Duration::from_millis(config.request_timeout_ms.min(5_000)))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("payledger-notifier/", env!("CARGO_PKG_VERSION")))
        };
        let http_any = builder().build()?;
        // A proxy would resolve the name in our stead, past the guard.
        let http_public = builder().dns_resolver(Arc::new(PublicOnly)).no_proxy().build()?;
        Ok(Self {
            pool,
            keyring,
            http_any,
            http_public,
            permits: Arc::new(Semaphore::new(config.concurrency_max)),
            config: Arc::new(config),
            queued,
        })
    }

    /// Sends until `stop` turns true, then lets the deliveries in flight finish and record their
    /// attempts (bounded by the request timeout) and returns. If the task is aborted instead
    /// (a crash), an attempt cut off is retried when its lease expires: at-least-once, and the
    /// stable `id` lets merchants de-duplicate.
    ///
    /// Deliveries run beside the queue scan, at most `concurrency_max` at once, so a merchant
    /// that takes the whole request timeout delays nobody else's notifications.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut in_flight = tokio::task::JoinSet::new();
        while !*stop.borrow() {
            while in_flight.try_join_next().is_some() {}
            let wait_ms = match self.claim_due(&mut in_flight).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => self.config.poll_interval_ms,
                Err(e) => {
                    tracing::error!(error = %e, retry_in_ms = SCAN_ERROR_BACKOFF_MS, "notify queue scan failed");
                    self.config.poll_interval_ms.max(SCAN_ERROR_BACKOFF_MS)
                }
            };
            tokio::select! {
                _ = self.queued.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
                _ = stop.changed() => {}
            }
        }
        while in_flight.join_next().await.is_some() {}
    }

    /// Claims the jobs that are due now and starts delivering them into `in_flight`; returns how
    /// many it claimed. Waits for a free delivery slot when all are busy.
    ///
    /// # Errors
    /// [`DbError`] when the queue cannot be read.
    async fn claim_due(&self, in_flight: &mut tokio::task::JoinSet<()>) -> Result<usize, DbError> {
        let now = Utc::now();
        let jobs: Vec<Job> = sqlx::query_as(
            "SELECT notification_id, merchant_id, mode, notify_url, body, attempts, next_attempt_at FROM notify_job \
             WHERE status = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2",
        )
        .bind(fmt_ts(now))
        .bind(self.config.concurrency_max as i64)
        .fetch_all(&self.pool)
        .await?;
        // The lease outlasts the request timeout, so a job in flight is never picked up twice.
        let lease_until = fmt_ts(now + chrono::Duration::milliseconds(self.config.lease_ms as i64));
        let mut claimed_count = 0;
        for job in jobs {
            let permit = Arc::clone(&self.permits)
                .acquire_owned()
                .await
                .expect("semaphore is never closed");
            // Claim by moving next_attempt_at forward, only if nobody else did first.
            let claimed = sqlx::query(
                "UPDATE notify_job SET next_attempt_at = $1 WHERE notification_id = $2 AND status = 'pending' \
                 AND next_attempt_at = $3",
            )
            .bind(&lease_until)
            .bind(&job.notification_id)
            .bind(&job.next_attempt_at)
            .execute(&self.pool)
            .await?
            .rows_affected()
                == 1;
            if !claimed {
                continue;
            }
            claimed_count += 1;
            let this = self.clone();
            in_flight.spawn(async move {
                let _permit = permit;
                let id = job.notification_id.clone();
                if let Err(e) = this.deliver(job).await {
                    tracing::error!(notification_id = %id, error = %e, "recording a notification attempt failed");
                }
            });
        }
        Ok(claimed_count)
    }

    /// What the attempt log (which the merchant reads) says about a request that got no
    /// answer: a timeout by name (a merchant that hangs), a refused target, or one generic
    /// [`NO_ANSWER`]: the socket-level error would tell an open port from a closed one. The
    /// whole error, with its causes, goes to the operator's log.
    fn attempt_error(&self, notification_id: &str, e: &reqwest::Error) -> String {
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        tracing::info!(notification_id, error = %detail, "notification got no answer");
        if is_refused(e) {
            REFUSED_TARGET.to_string()
        } else if e.is_timeout() {
            format!(
                "timed out after {} ms without an answer",
                self.config.request_timeout_ms
            )
        } else {
            NO_ANSWER.to_string()
        }
    }

    /// POSTs the signed notification to `notify_url`; the answer's status, or what the attempt
    /// log says when there is none.
    async fn post(&self, job: &Job, mode: Mode, webhook_secrets: &[&str]) -> Result<u16, String> {
        let url = reqwest::Url::parse(&job.notify_url).map_err(|_| NO_ANSWER.to_string())?;
        let http = if self.config.private_targets.allows(mode) {
            &self.http_any
        } else {
            if check_target(&url).is_err() {
                return Err(REFUSED_TARGET.to_string());
            }
            &self.http_public
        };
        let t = Utc::now().timestamp();
        http.post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, sign_with_all(webhook_secrets, t, job.body.as_bytes()))
            .body(job.body.clone())
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| self.attempt_error(&job.notification_id, &e))
    }

    async fn deliver(&self, job: Job) -> Result<(), DbError> {
        let attempt = job.attempts + 1;
        let started = Instant::now();
        // A job of an unknown mode is treated as live: the stricter rule for its target.
        let mode = Mode::parse(&job.mode).unwrap_or(Mode::Live);
        let result: Result<u16, String> = match merchants::get(&self.pool, &self.keyring, &job.merchant_id).await {
            Ok(None) => Err(format!("merchant {} no longer exists", job.merchant_id)),
            // Each mode signs with its own secret: a test notification never carries the
            // signature a live receiver trusts.
            // During a rotation's overlap the previous secret signs too (one `v1=` each).
            Ok(Some(m)) => match m.webhook_secrets_for(mode, Utc::now()) {
                secrets if !secrets.is_empty() => self.post(&job, mode, &secrets).await,
                _ => Err(format!(
                    "not sent: the merchant has no {mode} webhook secret yet (operator: payledger merchants test-key {})",
                    job.merchant_id
                )),
            },
            // The secret does not open with this process's key (a key rotated elsewhere, the
            // wrong key file): an attempt that failed, retried on the schedule and visible in
            // the attempt log, not a job leased again forever.
            Err(DbError::Corrupt(detail)) => {
                tracing::error!(notification_id = %job.notification_id, %detail, "cannot sign the notification");
                Err(
                    "not sent: the webhook secret could not be opened to sign it (operator: check the secrets key)"
                        .into(),
                )
            }
            Err(e) => return Err(e),
        };
        let latency = started.elapsed();
        let latency_ms = latency.as_millis() as i64;
        let now = Utc::now();
        let (status_code, error) = match &result {
            Ok(code) if (200..300).contains(code) => (Some(*code), None),
            Ok(code) => (Some(*code), Some(format!("merchant answered HTTP {code}"))),
            Err(e) => (None, Some(e.clone())),
        };
        let delivered = error.is_none();
        let retry_delay = self.config.schedule.delays.get(job.attempts as usize);
        let (status, next_attempt_at) = match (delivered, retry_delay) {
            (true, _) => ("delivered", now),
            (false, Some(delay)) => ("pending", now + chrono::Duration::from_std(*delay).unwrap_or_default()),
            (false, None) => ("abandoned", now),
        };
        tracing::info!(notification_id = %job.notification_id, attempt, status, ?status_code, latency_ms, "notification attempt");
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO notify_attempt (notification_id, attempt, attempted_at, status_code, latency_ms, error) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (notification_id, attempt) DO NOTHING",
        )
        .bind(&job.notification_id)
        .bind(attempt)
        .bind(fmt_ts(now))
        .bind(status_code.map(i64::from))
        .bind(latency_ms)
        .bind(&error)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE notify_job SET status = $1, attempts = $2, next_attempt_at = $3, last_status_code = $4, \
             last_error = $5, updated_at = $6 WHERE notification_id = $7",
        )
        .bind(status)
        .bind(attempt)
        .bind(fmt_ts(next_attempt_at))
        .bind(status_code.map(i64::from))
        .bind(&error)
        .bind(fmt_ts(now))
        .bind(&job.notification_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        // Counted once recorded, so the metric agrees with notify_attempt.
        let class = status_class(status_code);
        let outcome = if status == "pending" { "failed" } else { status };
        metrics::counter!(NOTIFICATIONS_TOTAL, "outcome" => outcome, "status_class" => class).increment(1);
        metrics::histogram!(NOTIFICATION_LATENCY_SECONDS, "status_class" => class).record(latency.as_secs_f64());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_is_ten_retries_over_wechat_intervals() {
        let s = RetrySchedule::default();
        let secs: Vec<u64> = s.delays.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600]);
    }

    #[test]
    fn schedule_parse_rejects_garbage() {
        assert!("15s,abc".parse::<RetrySchedule>().is_err());
        assert_eq!(
            "1s, 2m".parse::<RetrySchedule>().unwrap().delays,
            vec![Duration::from_secs(1), Duration::from_secs(120)]
        );
    }
}
