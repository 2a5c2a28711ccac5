//! The order monitor (the seeds' OrderMonitor, 后督): settles orders whose time to pay is over.
//!
//! Every [`MonitorConfig::interval_ms`] it finds orders still `awaiting_payment` in `order_view`
//! whose `expire_at` is more than [`MonitorConfig::grace_ms`] in the past (the grace lets the
//! channel's own expiry and notifications in flight land first), re-checks each in the event
//! store (the read model may lag), and asks its channel what happened:
//!
//! | channel says (`query`)       | the monitor                                                       |
//! |------------------------------|-------------------------------------------------------------------|
//! | `Paid`                       | records the payment: `ReceiveChannelCallback` with notify id `query:<channel_trade_no>` (a lost notification; the money moved, never drop it) |
//! | `NotPaid`, `Failed`          | closes at the channel (`close`), then `CloseOrder { reason: expired }`; a refused close (the payer may be paying right now) leaves the order for the next round |
//! | `NotFound`                   | as `NotPaid`; a refused close is fine (the channel has nothing to close) |
//! | `Closed`                     | `CloseOrder { reason: expired }`                                  |
//! | `query` unsupported (sandbox)| `CloseOrder { reason: expired }`                                  |
//! | unavailable / refused        | nothing; retried next round                                       |
//!
//! An order flagged `amount_mismatch` is left alone: money moved with another amount and waits for
//! a person. A payment that arrives after the close is recorded as a late payment by the aggregate.
//!
//! Every decision is an event with its reason and the actor `worker:order_monitor`. Safe to run
//! in several processes at once: every step is idempotent in the aggregate and at the channel.

use std::time::Duration;

use chrono::{DateTime, Utc};
use payledger_channel_adapters::{Channel, ChannelError, ChannelPaymentStatus, Channels};
use payledger_domain::{CallbackOutcome, CloseReason, OrderError, OrderStatus, PaymentOrderCommand};
use payledger_store::time::fmt_ts;
use payledger_store::{Database, ExecuteError};
use uuid::Uuid;

/// Actor name recorded on the monitor's events.
pub const MONITOR_NAME: &str = "order_monitor";
/// Default time between rounds, milliseconds.
pub const INTERVAL_MS_DEFAULT: u64 = 30_000;
/// Default time past `expire_at` before an order is settled, milliseconds.
pub const GRACE_MS_DEFAULT: u64 = 60_000;
/// Orders read from `order_view` per query.
pub const PAGE_ORDERS_MAX: i64 = 100;
/// Orders settled per round at most, so one round's channel calls stay bounded; the rest wait
/// for the next round.
pub const ROUND_ORDERS_MAX: usize = 1_000;

/// When the monitor runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorConfig {
    /// Run the monitor at all (default true).
    pub enabled: bool,
    /// Time between rounds, milliseconds.
    pub interval_ms: u64,
    /// How long after `expire_at` an unpaid order is settled, milliseconds.
    pub grace_ms: u64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_ms: INTERVAL_MS_DEFAULT,
            grace_ms: GRACE_MS_DEFAULT,
        }
    }
}

/// What the monitor did to one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// The channel said paid: the payment was recorded.
    Paid,
    /// Closed here (and at the channel where it has a close).
    Closed,
    /// Left for the next round, with why.
    Deferred(String),
    /// Nothing to do (already settled, mismatch flagged, not yet due).
    Skipped,
}

/// Counts of one round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundReport {
    pub paid: usize,
    pub closed: usize,
    pub deferred: usize,
    pub skipped: usize,
}

/// The order monitor role.
pub struct OrderMonitor {
    db: Database,
    channels: Channels,
    config: MonitorConfig,
}

impl OrderMonitor {
    /// A monitor over `db` asking `channels`.
    pub fn new(db: Database, channels: Channels, config: MonitorConfig) -> Self {
        Self { db, channels, config }
    }

    /// Runs rounds forever, [`MonitorConfig::interval_ms`] apart. A failed round is logged and
    /// the next one tries again.
    pub async fn run(self) {
        let interval = Duration::from_millis(self.config.interval_ms.max(1));
        loop {
            match self.round(Utc::now()).await {
                Ok(r) if r.paid + r.closed + r.deferred > 0 => {
                    tracing::info!(
                        paid = r.paid,
                        closed = r.closed,
                        deferred = r.deferred,
                        "order monitor round"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "order monitor round failed; retrying next round"),
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// One round at `now`: settles every due order (up to [`ROUND_ORDERS_MAX`]).
    ///
    /// # Errors
    /// The database error of reading `order_view`; errors about single orders are logged and
    /// the order is deferred.
    pub async fn round(&self, now: DateTime<Utc>) -> Result<RoundReport, sqlx::Error> {
        // An absurd grace (past chrono's range) settles nothing rather than panicking.
        let cutoff = chrono::Duration::try_milliseconds(i64::try_from(self.config.grace_ms).unwrap_or(i64::MAX))
            .and_then(|grace| now.checked_sub_signed(grace))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut report = RoundReport::default();
        // Keyset pagination: orders left awaiting (deferred, flagged) must not hide the others.
        let mut after = (String::new(), String::new());
        let mut seen = 0;
        while seen < ROUND_ORDERS_MAX {
            let page: Vec<(String, String)> = sqlx::query_as(
                "SELECT order_id, expire_at FROM order_view \
                 WHERE status = 'awaiting_payment' AND expire_at <= $1 \
                 AND (expire_at > $2 OR (expire_at = $2 AND order_id > $3)) \
                 ORDER BY expire_at, order_id LIMIT $4",
            )
            .bind(fmt_ts(cutoff))
            .bind(&after.1)
            .bind(&after.0)
            .bind(PAGE_ORDERS_MAX)
            .fetch_all(self.db.pool())
            .await?;
            let Some(last) = page.last() else { break };
            after = last.clone();
            let full = page.len() as i64 == PAGE_ORDERS_MAX;
            for (order_id, _) in page {
                seen += 1;
                let Ok(order_id) = Uuid::parse_str(&order_id) else {
                    tracing::error!(%order_id, "order_view holds an order id that is not a UUID");
                    continue;
                };
                match self.settle(order_id, now, cutoff).await {
                    Settled::Paid => report.paid += 1,
                    Settled::Closed => report.closed += 1,
                    Settled::Deferred(why) => {
                        tracing::warn!(%order_id, why = %why, "order monitor: expired order left for the next round");
                        report.deferred += 1;
                    }
                    Settled::Skipped => report.skipped += 1,
                }
            }
            if !full {
                break;
            }
        }
        Ok(report)
    }

    /// Settles one order that `order_view` shows due; re-checked against the event store.
    pub async fn settle(&self, order_id: Uuid, now: DateTime<Utc>, cutoff: DateTime<Utc>) -> Settled {
        let order = match self.db.orders().load(order_id).await {
            Ok(o) => o.order,
            Err(e) => return Settled::Deferred(format!("loading the order failed: {e}")),
        };
        let Some(order) = order else {
            return Settled::Skipped;
        };
        if order.status != OrderStatus::AwaitingPayment || order.expire_at > cutoff || order.amount_mismatch {
            return Settled::Skipped;
        }
        let channel_name = order.terms.channel.clone();
        let Some(channel) = self.channels.get(&channel_name).cloned() else {
            // Not configured any more: we cannot ask whether money moved, so we do not close.
            return Settled::Deferred(format!("channel {channel_name} is not enabled"));
        };
        match channel.query(order_id).await {
            Ok(ChannelPaymentStatus::Paid {
                channel_trade_no,
                amount,
                paid_at,
            }) => {
                let command = PaymentOrderCommand::ReceiveChannelCallback {
                    channel: channel_name,
                    notify_id: format!("query:{channel_trade_no}"),
                    channel_trade_no,
                    outcome: CallbackOutcome::Succeeded { amount, paid_at },
                    received_at: now,
                };
                match self.db.execute(order_id, command, &actor()).await {
                    Ok(_) => Settled::Paid,
                    Err(e) => Settled::Deferred(format!("recording the queried payment: {e}")),
                }
            }
            Ok(ChannelPaymentStatus::Closed) | Err(ChannelError::Unsupported { .. }) => self.close(order_id, now).await,
            Ok(
                status @ (ChannelPaymentStatus::NotPaid
                | ChannelPaymentStatus::NotFound
                | ChannelPaymentStatus::Failed { .. }),
            ) => {
                self.close_at_channel_then_here(channel.as_ref(), order_id, &status, now)
                    .await
            }
            Err(e) => Settled::Deferred(format!("query at {}: {e}", channel.name())),
        }
    }

    async fn close_at_channel_then_here(
        &self,
        channel: &dyn Channel,
        order_id: Uuid,
        status: &ChannelPaymentStatus,
        now: DateTime<Utc>,
    ) -> Settled {
        match channel.close(order_id).await {
            Ok(()) | Err(ChannelError::Unsupported { .. }) => self.close(order_id, now).await,
            // The channel never had the order: nothing can be paid there.
            Err(ChannelError::Rejected { .. }) if *status == ChannelPaymentStatus::NotFound => {
                self.close(order_id, now).await
            }
            // E.g. paid between our query and the close: the next round's query tells.
            Err(e) => Settled::Deferred(format!("close at {}: {e}", channel.name())),
        }
    }

    async fn close(&self, order_id: Uuid, now: DateTime<Utc>) -> Settled {
        let command = PaymentOrderCommand::CloseOrder {
            reason: CloseReason::Expired,
            closed_at: now,
        };
        match self.db.execute(order_id, command, &actor()).await {
            Ok(_) => Settled::Closed,
            // A callback paid it meanwhile: nothing to settle.
            Err(ExecuteError::Rejected(OrderError::AlreadyPaid)) => Settled::Skipped,
            Err(e) => Settled::Deferred(format!("closing: {e}")),
        }
    }
}

fn actor() -> String {
    format!("worker:{MONITOR_NAME}")
}

/// Starts the monitor as a task, unless disabled.
pub fn spawn(db: Database, channels: Channels, config: MonitorConfig) -> Option<tokio::task::JoinHandle<()>> {
    config
        .enabled
        .then(|| tokio::spawn(OrderMonitor::new(db, channels, config).run()))
}
