//! The order monitor (what Chinese payment systems call 后督, the after-the-fact check): asks the channel about orders whose
//! notification is late, and settles orders whose time to pay is over.
//!
//! Every [`MonitorConfig::interval_ms`] a round does two things.
//!
//! **Before expiry: the query schedule.** Like the channels' own query schedules, an order still
//! `awaiting_payment` is asked about once its age (now − `created_at`) crosses each point of
//! [`MonitorConfig::query_schedule_ms`] (default 1m, 5m, 15m). A round selects, for each point
//! `p`, the orders with `created_at` in `(previous round − p − lag, now − p − lag]`, where `lag`
//! is [`VIEW_LAG_ALLOWANCE_MS`] (2 s: the projection writes the row a moment after the order was
//! created); the previous round's position is kept in memory: the first round of a process looks
//! back one interval, a round cut short by [`ROUND_ORDERS_MAX`] or a database error resumes where
//! it stopped. An order already due for the expiry pass below is left to it. Before expiry
//! nothing is ever closed:
//!
//! | channel says (`query`)        | the monitor, before expiry                                       |
//! |-------------------------------|------------------------------------------------------------------|
//! | `Paid`                        | records the payment: `ReceiveChannelCallback` with notify id `query:<channel_trade_no>` |
//! | `NotPaid`, `NotFound`         | nothing: the payer may still pay                                 |
//! | `Failed`                      | nothing (logged): the payer may try again until `expire_at`      |
//! | `Closed`                      | nothing (logged: unusual before our expiry); the expiry pass closes it here |
//! | `query` unsupported (sandbox) | nothing                                                          |
//! | unavailable / refused         | nothing (logged); the next point or the expiry pass asks again   |
//!
//! An order whose row reaches `order_view` more than the allowance after its creation misses
//! that point; the next point, or the expiry pass, asks for it.
//!
//! **At expiry.** Orders still `awaiting_payment` whose `expire_at` is more than
//! [`MonitorConfig::grace_ms`] in the past (the grace lets the channel's own expiry and
//! notifications in flight land first) are re-checked in the event store (the read model may
//! lag), and their channel is asked what happened:
//!
//! | channel says (`query`)       | the monitor, at expiry                                            |
//! |------------------------------|-------------------------------------------------------------------|
//! | `Paid`                       | records the payment: `ReceiveChannelCallback` with notify id `query:<channel_trade_no>` (a lost notification; the money moved, never drop it) |
//! | `NotPaid`, `Failed`          | closes at the channel (`close`), then `CloseOrder { reason: expired }`; a refused close (the payer may be paying right now) leaves the order for the next round |
//! | `NotFound`                   | as `NotPaid`; a refused close is fine (the channel has nothing to close) |
//! | `Closed`                     | `CloseOrder { reason: expired }`                                  |
//! | `query` unsupported (sandbox)| `CloseOrder { reason: expired }`                                  |
//! | unavailable / refused        | nothing; retried next round                                       |
//!
//! An order flagged `amount_mismatch` is left alone: money moved with another amount and waits for
//! a person. A payment that arrives after the close is recorded by the aggregate as a late payment
//! (`PaymentSucceeded { late: true }`, journaled to `suspense:<merchant>`) and logged as a warning
//! by the callback handler.
//!
//! **Pending refunds.** A refund is executed by the refund worker when its `RefundRequested`
//! reaches it; in NATS mode that is a message of a stream that keeps messages for a while (7 days
//! by default), so a refunds consumer down longer never sees it, and the refund would stay
//! pending for ever. At most once every [`MonitorConfig::refund_age_ms`], a round also reads
//! `refund_view` for refunds still `pending` that were requested more than that long ago, and
//! drives each again through the refund worker's own flow ([`Flows::execute_refund`], with the
//! reason of its `RefundRequested`). That is safe beside the worker: a refund no longer pending
//! is left alone, channels de-duplicate refunds on `refund_id`, and the same outcome recorded
//! twice is one event. A refund the channel holds as pending (it answers by notification) is
//! sent again at the next sweep; one that cannot be executed now (channel unavailable) waits
//! for the next sweep.
//!
//! Every decision is an event with its reason and the actor `worker:order_monitor`. Safe to run
//! in several processes at once: every step is idempotent in the aggregate and at the channel
//! (several processes each query on the schedule; a payment is recorded once).

use std::time::Duration;

use chrono::{DateTime, Utc};
use payledger_channel_adapters::Channels;
use payledger_domain::PaymentOrderEvent;
use payledger_store::time::fmt_ts;
use payledger_store::Database;
use uuid::Uuid;

use crate::flows::{Flows, RefundExecution, Settled};

/// Actor name recorded on the monitor's events.
pub const MONITOR_NAME: &str = "order_monitor";
/// Default time between rounds, milliseconds.
pub const INTERVAL_MS_DEFAULT: u64 = 30_000;
/// Default time past `expire_at` before an order is settled, milliseconds.
pub const GRACE_MS_DEFAULT: u64 = 60_000;
/// Default ages (now − `created_at`) at which an awaiting order is queried before its expiry,
/// milliseconds: 1m, 5m, 15m.
pub const QUERY_SCHEDULE_MS_DEFAULT: [u64; 3] = [60_000, 300_000, 900_000];
/// How long after an order's creation its `order_view` row is taken to be visible,
/// milliseconds: the schedule pass asks at age `point + VIEW_LAG_ALLOWANCE_MS`, so a row the
/// projection wrote up to this late is still in its window (the windows are on `created_at`,
/// the time the order was created, not the time its row appeared).
pub const VIEW_LAG_ALLOWANCE_MS: u64 = 2_000;
/// Orders read from `order_view` per query.
pub const PAGE_ORDERS_MAX: i64 = 100;
/// Orders settled per round at most, and orders queried on the schedule per round at most, so
/// one round's channel calls stay bounded; the rest wait for the next round.
pub const ROUND_ORDERS_MAX: usize = 1_000;
/// Default of [`MonitorConfig::refund_age_ms`]: 10 minutes. The refund worker executes a refund
/// within seconds, and its JetStream consumer retries a failing one with back-offs up to 60 s,
/// so a refund still pending after this long was most likely never delivered.
pub const REFUND_AGE_MS_DEFAULT: u64 = 600_000;
/// Default of [`MonitorConfig::step_timeout_ms`]: longest one step of a round (a page read from
/// the database, one order settled or queried, one refund driven) may take. A channel call takes
/// at most three attempts of 15 s; past this the step waits on a connection gone silent.
pub const STEP_TIMEOUT_MS_DEFAULT: u64 = 120_000;
/// Refunds driven per sweep at most (each is a channel call); the rest wait for the next sweep.
pub const ROUND_REFUNDS_MAX: usize = 1_000;

/// When the monitor runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorConfig {
    /// Run the monitor at all (default true).
    pub enabled: bool,
    /// Time between rounds, milliseconds.
    pub interval_ms: u64,
    /// How long after `expire_at` an unpaid order is settled, milliseconds.
    pub grace_ms: u64,
    /// Ages (now − `created_at`, milliseconds) at which an awaiting order is queried at its
    /// channel before expiry; a payment found is recorded, nothing else is done. Empty: no
    /// queries before expiry. Points closer together than `interval_ms` are all asked in the
    /// same round (one query per point).
    pub query_schedule_ms: Vec<u64>,
    /// Refunds still pending this long after they were requested (milliseconds) are driven
    /// again by the monitor, and the monitor looks for them at most this often. 0: every round,
    /// every pending refund (tests).
    pub refund_age_ms: u64,
    /// Longest one step of a round may take, milliseconds ([`STEP_TIMEOUT_MS_DEFAULT`]): a page
    /// read past it ends the round (an error, logged; the next round tries again), an order or
    /// refund past it is left for the next round (logged).
    pub step_timeout_ms: u64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_ms: INTERVAL_MS_DEFAULT,
            grace_ms: GRACE_MS_DEFAULT,
            query_schedule_ms: QUERY_SCHEDULE_MS_DEFAULT.to_vec(),
            refund_age_ms: REFUND_AGE_MS_DEFAULT,
            step_timeout_ms: STEP_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// Counts of one round (both passes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Payments recorded from a query (before or at expiry).
    pub paid: usize,
    /// Orders closed at expiry.
    pub closed: usize,
    /// Expired orders left for the next round.
    pub deferred: usize,
    /// Orders found settled meanwhile, or flagged.
    pub skipped: usize,
    /// Orders queried before expiry and left waiting (not paid, or the query failed).
    pub waiting: usize,
    /// Pending refunds driven again whose outcome is now recorded (or which were found settled).
    pub refunds_settled: usize,
    /// Pending refunds driven again that stay pending: held by the channel, or not executable
    /// now (logged).
    pub refunds_pending: usize,
}

/// Where the schedule pass of one query point resumes: orders after `(created_at, order_id)`
/// in keyset order (`fmt_ts` text, so text order is time order).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    created_at: String,
    order_id: String,
}

impl Cursor {
    /// The position just after every order created at or before `t` (timestamps are stored at
    /// microsecond precision, so "≥ t + 1µs with any id" is "> t").
    fn after(t: DateTime<Utc>) -> Self {
        let micros = t.timestamp_micros().saturating_add(1);
        Self {
            created_at: fmt_ts(DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MAX_UTC)),
            order_id: String::new(),
        }
    }
}

/// The order monitor role.
pub struct OrderMonitor {
    flows: Flows,
    config: MonitorConfig,
    /// One per [`MonitorConfig::query_schedule_ms`] point; `None` until the first round.
    cursors: Option<Vec<Cursor>>,
    /// When the last sweep of pending refunds ran; `None` until the first round.
    refunds_swept_at: Option<DateTime<Utc>>,
}

impl OrderMonitor {
    /// A monitor over `db` asking `channels`, recording its channel calls in `calls`.
    pub fn new(db: Database, channels: Channels, config: MonitorConfig, calls: crate::metrics::CallLog) -> Self {
        Self {
            flows: Flows::new(db, channels).with_calls(calls),
            config,
            cursors: None,
            refunds_swept_at: None,
        }
    }

    /// Runs rounds forever, [`MonitorConfig::interval_ms`] apart. A failed round is logged and
    /// the next one tries again.
    pub async fn run(mut self) {
        let interval = Duration::from_millis(self.config.interval_ms.max(1));
        loop {
            match self.round(Utc::now()).await {
                Ok(r) if r.paid + r.closed + r.deferred + r.refunds_settled + r.refunds_pending > 0 => {
                    tracing::info!(
                        paid = r.paid,
                        closed = r.closed,
                        deferred = r.deferred,
                        waiting = r.waiting,
                        refunds_settled = r.refunds_settled,
                        refunds_pending = r.refunds_pending,
                        "order monitor round"
                    )
                }
                Ok(r) if r.waiting > 0 => tracing::debug!(waiting = r.waiting, "order monitor round"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "order monitor round failed; retrying next round"),
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// One round at `now`: settles every due order (up to [`ROUND_ORDERS_MAX`]), then queries
    /// the orders whose age crossed a point of the query schedule since the previous round (up
    /// to [`ROUND_ORDERS_MAX`]), then, when [`MonitorConfig::refund_age_ms`] passed since the
    /// last sweep, drives the refunds pending longer than that (up to [`ROUND_REFUNDS_MAX`]).
    ///
    /// # Errors
    /// The database error of reading `order_view` or `refund_view` (the schedule pass resumes
    /// where it stopped next round, the refund sweep runs again next round); errors about single
    /// orders and refunds are logged and the order is deferred or left waiting.
    pub async fn round(&mut self, now: DateTime<Utc>) -> Result<RoundReport, sqlx::Error> {
        // An absurd grace (past chrono's range) settles nothing rather than panicking.
        let cutoff = before(now, self.config.grace_ms).unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut report = RoundReport::default();
        self.expired_pass(now, cutoff, &mut report).await?;
        self.schedule_pass(now, cutoff, &mut report).await?;
        self.refund_pass(now, &mut report).await?;
        Ok(report)
    }

    /// Drives again the refunds still pending [`MonitorConfig::refund_age_ms`] after they were
    /// requested, when that long passed since the last sweep (see the module's documentation).
    async fn refund_pass(&mut self, now: DateTime<Utc>, report: &mut RoundReport) -> Result<(), sqlx::Error> {
        // An age past chrono's range never comes.
        let Some(requested_before) = before(now, self.config.refund_age_ms) else {
            return Ok(());
        };
        if self.refunds_swept_at.is_some_and(|last| last > requested_before) {
            return Ok(());
        }
        let requested_before = fmt_ts(requested_before);
        let mut after = (String::new(), String::new());
        let mut seen = 0;
        while seen < ROUND_REFUNDS_MAX {
            let page = sqlx::query_as::<_, (String, String, String)>(
                "SELECT refund_id, order_id, created_at FROM refund_view \
                 WHERE status = 'pending' AND created_at <= $1 \
                 AND (created_at > $2 OR (created_at = $2 AND refund_id > $3)) \
                 ORDER BY created_at, refund_id LIMIT $4",
            )
            .bind(&requested_before)
            .bind(&after.1)
            .bind(&after.0)
            .bind(PAGE_ORDERS_MAX)
            .fetch_all(self.flows.db.pool());
            let page = self.bounded(page).await.unwrap_or_else(|| Err(self.timed_out()))?;
            let Some((refund_id, _, created_at)) = page.last() else {
                break;
            };
            after = (refund_id.clone(), created_at.clone());
            let full = page.len() as i64 == PAGE_ORDERS_MAX;
            for (refund_id, order_id, _) in page {
                seen += 1;
                let (Ok(refund_id), Ok(order_id)) = (Uuid::parse_str(&refund_id), Uuid::parse_str(&order_id)) else {
                    tracing::error!(%refund_id, %order_id, "refund_view holds an id that is not a UUID");
                    continue;
                };
                let driven = self.drive_refund(order_id, refund_id);
                match self.bounded(driven).await.unwrap_or_else(|| Err(self.step_timed_out())) {
                    Ok(RefundExecution::Recorded | RefundExecution::AlreadySettled) => report.refunds_settled += 1,
                    Ok(RefundExecution::PendingAtChannel) => report.refunds_pending += 1,
                    Err(why) => {
                        tracing::warn!(%order_id, %refund_id, why = %why, "order monitor: pending refund left for the next sweep");
                        report.refunds_pending += 1;
                    }
                }
            }
            if !full {
                break;
            }
        }
        self.refunds_swept_at = Some(now);
        Ok(())
    }

    /// `step`, or `None` when it takes longer than [`MonitorConfig::step_timeout_ms`] (it is then
    /// dropped: a connection gone silent must not stall the monitor for ever).
    async fn bounded<T>(&self, step: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::time::timeout(Duration::from_millis(self.config.step_timeout_ms), step)
            .await
            .ok()
    }

    /// Why a step was abandoned.
    fn step_timed_out(&self) -> String {
        format!(
            "took longer than {} ms (a silent connection?); abandoned",
            self.config.step_timeout_ms
        )
    }

    /// A page read abandoned, as the error that ends the round.
    fn timed_out(&self) -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("reading a page {}", self.step_timed_out()),
        ))
    }

    /// Executes one pending refund as the refund worker would, with the reason its
    /// `RefundRequested` carries (read from the order's events: the source of truth).
    async fn drive_refund(&self, order_id: Uuid, refund_id: Uuid) -> Result<RefundExecution, String> {
        let events = self
            .flows
            .db
            .log()
            .order_events(order_id)
            .await
            .map_err(|e| e.to_string())?;
        let reason = events.iter().find_map(|e| match &e.event {
            PaymentOrderEvent::RefundRequested {
                refund_id: id, reason, ..
            } if *id == refund_id => Some(reason.clone()),
            _ => None,
        });
        let Some(reason) = reason else {
            return Err(format!("no RefundRequested for refund {refund_id} on its order"));
        };
        tracing::info!(%order_id, %refund_id, "order monitor: driving a refund still pending");
        self.flows.execute_refund(order_id, refund_id, reason, &actor()).await
    }

    /// Settles the orders whose `expire_at` is at or before `cutoff`.
    async fn expired_pass(
        &self,
        now: DateTime<Utc>,
        cutoff: DateTime<Utc>,
        report: &mut RoundReport,
    ) -> Result<(), sqlx::Error> {
        // Keyset pagination: orders left awaiting (deferred, flagged) must not hide the others.
        let mut after = (String::new(), String::new());
        let mut seen = 0;
        while seen < ROUND_ORDERS_MAX {
            let page = sqlx::query_as::<_, (String, String)>(
                "SELECT order_id, expire_at FROM order_view \
                 WHERE status = 'awaiting_payment' AND expire_at <= $1 \
                 AND (expire_at > $2 OR (expire_at = $2 AND order_id > $3)) \
                 ORDER BY expire_at, order_id LIMIT $4",
            )
            .bind(fmt_ts(cutoff))
            .bind(&after.1)
            .bind(&after.0)
            .bind(PAGE_ORDERS_MAX)
            .fetch_all(self.flows.db.pool());
            let page = self.bounded(page).await.unwrap_or_else(|| Err(self.timed_out()))?;
            let Some(last) = page.last() else { break };
            after = last.clone();
            let full = page.len() as i64 == PAGE_ORDERS_MAX;
            for (order_id, _) in page {
                seen += 1;
                let Ok(order_id) = Uuid::parse_str(&order_id) else {
                    tracing::error!(%order_id, "order_view holds an order id that is not a UUID");
                    continue;
                };
                let actor = actor();
                let settled = self.flows.settle_expired(order_id, now, cutoff, &actor);
                let settled = self
                    .bounded(settled)
                    .await
                    .unwrap_or_else(|| Settled::Deferred(self.step_timed_out()));
                match settled {
                    Settled::Paid => report.paid += 1,
                    Settled::Closed => report.closed += 1,
                    Settled::Deferred(why) => {
                        tracing::warn!(%order_id, why = %why, "order monitor: expired order left for the next round");
                        report.deferred += 1;
                    }
                    Settled::Skipped | Settled::Waiting => report.skipped += 1,
                }
            }
            if !full {
                break;
            }
        }
        Ok(())
    }

    /// Queries the awaiting orders, not yet due for [`Self::expired_pass`], whose age crossed a
    /// point of [`MonitorConfig::query_schedule_ms`] since the previous round.
    async fn schedule_pass(
        &mut self,
        now: DateTime<Utc>,
        cutoff: DateTime<Utc>,
        report: &mut RoundReport,
    ) -> Result<(), sqlx::Error> {
        let points = self.config.query_schedule_ms.clone();
        // The first round looks back one interval.
        let cursors = self.cursors.take().unwrap_or_else(|| {
            points
                .iter()
                .map(|&p| {
                    let lookback = p
                        .saturating_add(VIEW_LAG_ALLOWANCE_MS)
                        .saturating_add(self.config.interval_ms);
                    Cursor::after(before(now, lookback).unwrap_or(DateTime::<Utc>::MIN_UTC))
                })
                .collect()
        });
        let mut next = Vec::with_capacity(points.len());
        let mut seen = 0;
        let mut failed = None;
        for (&point, mut cursor) in points.iter().zip(cursors) {
            // A point past chrono's range is never crossed.
            let Some(upper) = before(now, point.saturating_add(VIEW_LAG_ALLOWANCE_MS)) else {
                next.push(cursor);
                continue;
            };
            let upper_text = fmt_ts(upper);
            while failed.is_none() && seen < ROUND_ORDERS_MAX && cursor.created_at <= upper_text {
                let page = sqlx::query_as::<_, (String, String)>(
                    "SELECT order_id, created_at FROM order_view \
                     WHERE status = 'awaiting_payment' AND created_at <= $1 \
                     AND (created_at > $2 OR (created_at = $2 AND order_id > $3)) \
                     AND expire_at > $4 \
                     ORDER BY created_at, order_id LIMIT $5",
                )
                .bind(&upper_text)
                .bind(&cursor.created_at)
                .bind(&cursor.order_id)
                .bind(fmt_ts(cutoff))
                .bind(PAGE_ORDERS_MAX)
                .fetch_all(self.flows.db.pool());
                let page = match self.bounded(page).await.unwrap_or_else(|| Err(self.timed_out())) {
                    Ok(page) => page,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                };
                let full = page.len() as i64 == PAGE_ORDERS_MAX;
                let mut cut = false;
                for (order_id, created_at) in page {
                    if seen == ROUND_ORDERS_MAX {
                        // The rest of the window waits for the next round, from `cursor`.
                        cut = true;
                        break;
                    }
                    seen += 1;
                    cursor = Cursor {
                        created_at,
                        order_id: order_id.clone(),
                    };
                    let Ok(order_id) = Uuid::parse_str(&order_id) else {
                        tracing::error!(%order_id, "order_view holds an order id that is not a UUID");
                        continue;
                    };
                    let actor = actor();
                    let queried = self.flows.query_before_expiry(order_id, now, cutoff, &actor);
                    let queried = self.bounded(queried).await.unwrap_or_else(|| {
                        tracing::warn!(%order_id, why = %self.step_timed_out(), "order monitor: query left for the next point");
                        Settled::Waiting
                    });
                    match queried {
                        Settled::Paid => report.paid += 1,
                        Settled::Skipped => report.skipped += 1,
                        Settled::Waiting | Settled::Closed | Settled::Deferred(_) => report.waiting += 1,
                    }
                }
                if !full && !cut {
                    // The whole window is done: the next round starts after it.
                    cursor = Cursor::after(upper);
                    break;
                }
            }
            next.push(cursor);
        }
        self.cursors = Some(next);
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Parses a query schedule for [`MonitorConfig::query_schedule_ms`]: comma-separated durations
/// in humantime syntax, e.g. `1m,5m,15m`, into milliseconds, sorted and de-duplicated. `none` (or
/// an empty string) is the empty schedule: no queries before expiry.
///
/// # Errors
/// The duration that does not parse, with why; a zero duration (an order is not queried the
/// moment it is created).
pub fn parse_query_schedule(s: &str) -> Result<Vec<u64>, String> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let mut points = s
        .split(',')
        .map(|d| {
            let ms = humantime::parse_duration(d.trim())
                .map_err(|e| format!("{d:?}: {e}"))?
                .as_millis();
            match u64::try_from(ms) {
                Ok(0) => Err(format!("{d:?}: a query point must be after creation")),
                Ok(ms) => Ok(ms),
                Err(_) => Err(format!("{d:?}: too long")),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    points.sort_unstable();
    points.dedup();
    Ok(points)
}

/// `now − ms`, or `None` past chrono's range.
fn before(now: DateTime<Utc>, ms: u64) -> Option<DateTime<Utc>> {
    chrono::Duration::try_milliseconds(i64::try_from(ms).ok()?).and_then(|d| now.checked_sub_signed(d))
}

fn actor() -> String {
    format!("worker:{MONITOR_NAME}")
}

/// Starts the monitor as a task, unless disabled.
pub fn spawn(
    db: Database,
    channels: Channels,
    config: MonitorConfig,
    calls: crate::metrics::CallLog,
) -> Option<tokio::task::JoinHandle<()>> {
    config
        .enabled
        .then(|| tokio::spawn(OrderMonitor::new(db, channels, config, calls).run()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_schedule_parses_to_sorted_milliseconds() {
        assert_eq!(parse_query_schedule("1m, 5m,15m"), Ok(vec![60_000, 300_000, 900_000]));
        assert_eq!(parse_query_schedule("15m,1m,1m,300ms"), Ok(vec![300, 60_000, 900_000]));
        assert_eq!(parse_query_schedule("none"), Ok(vec![]));
        assert_eq!(parse_query_schedule(""), Ok(vec![]));
        assert!(parse_query_schedule("1m,soon").is_err());
        assert!(parse_query_schedule("0s").is_err());
    }

    #[test]
    fn the_default_schedule_is_the_channels_one() {
        assert_eq!(
            MonitorConfig::default().query_schedule_ms,
            parse_query_schedule("1m,5m,15m").expect("parses")
        );
    }

    #[test]
    fn a_cursor_after_a_time_excludes_it_and_includes_the_next_microsecond() {
        let t = DateTime::parse_from_rfc3339("2024-05-01T10:00:00.123456789Z")
            .expect("time")
            .with_timezone(&Utc);
        let c = Cursor::after(t);
        assert_eq!(c.created_at, "2024-05-01T10:00:00.123457Z");
        assert!(c.created_at.as_str() > fmt_ts(t).as_str());
        assert_eq!(c.order_id, "");
    }
}
