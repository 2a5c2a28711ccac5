//! The `order_view` projection: tables `order_view`, `refund_view`, `merchant_daily_stats`.
//!
//! A transactional subscriber: for each batch it loads the affected orders' current views, folds
//! the new events in, and upserts the rows, all in the checkpoint's transaction.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use payledger_store::subscription::{SubscriberError, TransactionalSubscriber};
use payledger_store::time::fmt_ts;
use payledger_store::{LogEvent, LogPosition};
use sqlx::AnyConnection;
use tokio::sync::watch;
use uuid::Uuid;

use crate::sql::{self, Value};
use crate::stats::{self, DailyDelta, DailyKey};
use crate::view::OrderView;

/// Checkpoint name of this projection.
pub const PROJECTION_NAME: &str = "order_view";

/// Keeps `order_view`, `refund_view` and `merchant_daily_stats`. Share it in an `Arc`.
///
/// Each batch costs three statements whatever its size: one load of the touched orders' views,
/// one multi-row upsert per table (see [`crate::sql`]).
pub struct OrderProjection {
    tables: Tables,
    checkpoint: String,
    /// Where the last batch this process committed ended.
    applied: watch::Sender<LogPosition>,
}

impl Default for OrderProjection {
    fn default() -> Self {
        Self::new(Tables::live())
    }
}

impl OrderProjection {
    /// The projection writing `tables`.
    pub fn new(tables: Tables) -> Self {
        Self {
            checkpoint: tables.checkpoint(PROJECTION_NAME),
            tables,
            applied: watch::channel(LogPosition::default()).0,
        }
    }

    /// Waits until this process's runner of the projection has committed every event up to
    /// `position`, or `timeout` passes; returns whether it did. Costs no query: the runner
    /// publishes each committed batch's end. (A runner in another process: poll the checkpoint,
    /// [`payledger_store::subscription::checkpoint`] of [`PROJECTION_NAME`].)
    pub async fn wait_until(&self, position: LogPosition, timeout: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        let reached = tokio::time::timeout(timeout, applied.wait_for(|at| *at >= position)).await;
        matches!(reached, Ok(Ok(_)))
    }
}

/// The tables a projection writes: the live ones, or a shadow set being rebuilt beside them
/// (same definitions, names with a suffix) by `replay` and `reconcile --verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    suffix: String,
}

/// Suffix of the shadow tables.
pub const SHADOW_SUFFIX: &str = "__shadow";

impl Tables {
    /// The tables the API reads.
    pub fn live() -> Self {
        Self { suffix: String::new() }
    }

    /// The shadow set, `<table>__shadow`.
    pub fn shadow() -> Self {
        Self {
            suffix: SHADOW_SUFFIX.to_string(),
        }
    }

    /// The name of `table` in this set.
    pub fn name(&self, table: &str) -> String {
        format!("{table}{}", self.suffix)
    }

    /// The checkpoint name of projection `projection` writing this set.
    pub fn checkpoint(&self, projection: &str) -> String {
        format!("{projection}{}", self.suffix)
    }

    /// Whether this is the live set.
    pub fn is_live(&self) -> bool {
        self.suffix.is_empty()
    }
}

/// The current views of `ids` (those that exist), by order id.
async fn load_views(
    conn: &mut AnyConnection,
    table: &str,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, OrderView>, SubscriberError> {
    let mut views = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(sql::PARAMS_PER_STATEMENT_MAX) {
        let query = format!(
            "SELECT doc FROM {table} WHERE order_id IN ({})",
            sql::placeholders(1, chunk.len())
        );
        let mut q = sqlx::query_scalar::<_, String>(&query);
        for id in chunk {
            q = q.bind(id.to_string());
        }
        for doc in q.fetch_all(&mut *conn).await? {
            let v: OrderView = serde_json::from_str(&doc)
                .map_err(|e| SubscriberError::Failed(format!("{table} row does not decode: {e}")))?;
            views.insert(v.order_id, v);
        }
    }
    Ok(views)
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, SubscriberError> {
    serde_json::to_string(v).map_err(|e| SubscriberError::Failed(e.to_string()))
}

async fn store_views(conn: &mut AnyConnection, tables: &Tables, views: &[&OrderView]) -> Result<(), SubscriberError> {
    let mut orders = Vec::with_capacity(views.len());
    let mut refunds = vec![];
    for v in views {
        orders.push(vec![
            Value::from(v.order_id.to_string()),
            v.merchant_id.as_str().into(),
            v.mode.as_str().into(),
            v.out_trade_no.as_str().into(),
            v.status.as_str().into(),
            v.amount.into(),
            v.currency.as_str().into(),
            v.channel.as_str().into(),
            fmt_ts(v.created_at).into(),
            fmt_ts(v.updated_at).into(),
            v.last_sequence.into(),
            to_json(v)?.into(),
            fmt_ts(v.expire_at).into(),
            v.channel_account.as_deref().into(),
            v.channel_account_identity.as_deref().into(),
        ]);
        for r in &v.refunds {
            refunds.push(vec![
                Value::from(r.refund_id.to_string()),
                v.order_id.to_string().into(),
                v.merchant_id.as_str().into(),
                v.mode.as_str().into(),
                r.out_refund_no.as_str().into(),
                r.status.as_str().into(),
                r.amount.into(),
                r.currency.as_str().into(),
                fmt_ts(r.created_at).into(),
                fmt_ts(r.updated_at).into(),
                to_json(r)?.into(),
            ]);
        }
    }
    let order_view = tables.name("order_view");
    sql::insert_rows(
        conn,
        &order_view,
        &[
            "order_id",
            "merchant_id",
            "mode",
            "out_trade_no",
            "status",
            "amount_minor",
            "currency",
            "channel",
            "created_at",
            "updated_at",
            "last_sequence",
            "doc",
            "expire_at",
            "channel_account",
            "channel_account_identity",
        ],
        &orders,
        // The account columns are not in the document a later batch loads the view from: keep
        // what an earlier batch recorded.
        &format!(
            "ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at, \
             last_sequence = excluded.last_sequence, doc = excluded.doc, \
             channel_account = COALESCE(excluded.channel_account, {order_view}.channel_account), \
             channel_account_identity = COALESCE(excluded.channel_account_identity, {order_view}.channel_account_identity)"
        ),
    )
    .await?;
    sql::insert_rows(
        conn,
        &tables.name("refund_view"),
        &[
            "refund_id",
            "order_id",
            "merchant_id",
            "mode",
            "out_refund_no",
            "status",
            "amount_minor",
            "currency",
            "created_at",
            "updated_at",
            "doc",
        ],
        &refunds,
        "ON CONFLICT (refund_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at, \
         doc = excluded.doc",
    )
    .await?;
    Ok(())
}

async fn store_stats(
    conn: &mut AnyConnection,
    tables: &Tables,
    stats: &BTreeMap<DailyKey, DailyDelta>,
) -> Result<(), SubscriberError> {
    let table = tables.name("merchant_daily_stats");
    let rows: Vec<Vec<Value>> = stats
        .iter()
        .map(|(k, d)| {
            vec![
                Value::from(k.merchant_id.as_str()),
                k.mode.as_str().into(),
                k.day.as_str().into(),
                k.currency.as_str().into(),
                k.channel.as_str().into(),
                d.orders_created.into(),
                d.orders_paid.into(),
                d.paid_minor.into(),
                d.refunds_succeeded.into(),
                d.refunded_minor.into(),
            ]
        })
        .collect();
    let tail = format!(
        "ON CONFLICT (merchant_id, mode, day, currency, channel) DO UPDATE SET \
         orders_created = {table}.orders_created + excluded.orders_created, \
         orders_paid = {table}.orders_paid + excluded.orders_paid, \
         paid_minor = {table}.paid_minor + excluded.paid_minor, \
         refunds_succeeded = {table}.refunds_succeeded + excluded.refunds_succeeded, \
         refunded_minor = {table}.refunded_minor + excluded.refunded_minor"
    );
    sql::insert_rows(
        conn,
        &table,
        &[
            "merchant_id",
            "mode",
            "day",
            "currency",
            "channel",
            "orders_created",
            "orders_paid",
            "paid_minor",
            "refunds_succeeded",
            "refunded_minor",
        ],
        &rows,
        &tail,
    )
    .await?;
    Ok(())
}

#[async_trait]
impl TransactionalSubscriber for OrderProjection {
    fn name(&self) -> &str {
        &self.checkpoint
    }

    async fn apply(&self, tx: &mut AnyConnection, events: &[LogEvent]) -> Result<(), SubscriberError> {
        let mut ids: Vec<Uuid> = events.iter().map(|e| e.order_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut views = load_views(tx, &self.tables.name("order_view"), &ids).await?;
        let mut stats: BTreeMap<DailyKey, DailyDelta> = BTreeMap::new();
        // Log order is sequence order within each order.
        for e in events {
            let before = views.remove(&e.order_id);
            if let Some((key, d)) = stats::delta(before.as_ref(), e.sequence, &e.event) {
                stats.entry(key).or_default().add(&d);
            }
            let after = OrderView::fold(before, e.sequence, &e.event).map_err(SubscriberError::Failed)?;
            views.insert(e.order_id, after);
        }
        // Only the orders this batch touched (all of them: each had at least one event).
        let changed: Vec<&OrderView> = ids.iter().filter_map(|id| views.get(id)).collect();
        store_views(tx, &self.tables, &changed).await?;
        store_stats(tx, &self.tables, &stats).await?;
        Ok(())
    }

    fn committed(&self, up_to: LogPosition) {
        self.applied.send_if_modified(|at| {
            let forward = up_to > *at;
            if forward {
                *at = up_to;
            }
            forward
        });
    }
}
