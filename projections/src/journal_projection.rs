//! The `journal` projection: tables `ledger_entry`, `account_balance` and its private memory
//! `journal_order`, posted by [`crate::journal::post`] in the checkpoint's transaction.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use payledger_store::subscription::{SubscriberError, TransactionalSubscriber};
use payledger_store::time::fmt_ts;
use payledger_store::LogEvent;
use sqlx::AnyConnection;
use uuid::Uuid;

use crate::journal::{self, JournalOrder};
use crate::projection::Tables;
use crate::sql::{self, Value};

/// Checkpoint name of this projection.
pub const JOURNAL_PROJECTION_NAME: &str = "journal";

/// Keeps the journal. Each batch: one load of the touched orders' memory, three multi-row
/// statements.
pub struct JournalProjection {
    tables: Tables,
    checkpoint: String,
}

impl Default for JournalProjection {
    fn default() -> Self {
        Self::new(Tables::live())
    }
}

impl JournalProjection {
    /// The projection writing `tables`.
    pub fn new(tables: Tables) -> Self {
        Self {
            checkpoint: tables.checkpoint(JOURNAL_PROJECTION_NAME),
            tables,
        }
    }
}

async fn load(
    conn: &mut AnyConnection,
    table: &str,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, JournalOrder>, SubscriberError> {
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(sql::PARAMS_PER_STATEMENT_MAX) {
        let query = format!(
            "SELECT order_id, doc FROM {table} WHERE order_id IN ({})",
            sql::placeholders(1, chunk.len())
        );
        let mut q = sqlx::query_as::<_, (String, String)>(&query);
        for id in chunk {
            q = q.bind(id.to_string());
        }
        for (id, doc) in q.fetch_all(&mut *conn).await? {
            let corrupt = |e: String| SubscriberError::Failed(format!("{table} row {id} does not decode: {e}"));
            let id = Uuid::parse_str(&id).map_err(|e| corrupt(e.to_string()))?;
            found.insert(id, serde_json::from_str(&doc).map_err(|e| corrupt(e.to_string()))?);
        }
    }
    Ok(found)
}

#[async_trait]
impl TransactionalSubscriber for JournalProjection {
    fn name(&self) -> &str {
        &self.checkpoint
    }

    async fn apply(&self, tx: &mut AnyConnection, events: &[LogEvent]) -> Result<(), SubscriberError> {
        let mut ids: Vec<Uuid> = events.iter().map(|e| e.order_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let memory_table = self.tables.name("journal_order");
        let mut orders = load(tx, &memory_table, &ids).await?;
        let mut lines = vec![];
        // (merchant_id, mode, account, currency) → (debit, credit, lines)
        let mut balances: BTreeMap<(String, &'static str, String, String), (i64, i64, i64)> = BTreeMap::new();
        for e in events {
            let (order, posted) =
                journal::post(orders.remove(&e.order_id), e.sequence, &e.event).map_err(SubscriberError::Failed)?;
            for (i, l) in posted.iter().enumerate() {
                let b = balances
                    .entry((
                        order.merchant_id.clone(),
                        order.mode.as_str(),
                        l.account.clone(),
                        l.currency.clone(),
                    ))
                    .or_default();
                b.0 += l.debit_minor;
                b.1 += l.credit_minor;
                b.2 += 1;
                lines.push(vec![
                    Value::from(e.event_id.to_string()),
                    (i as i64 + 1).into(),
                    order.merchant_id.as_str().into(),
                    order.mode.as_str().into(),
                    e.order_id.to_string().into(),
                    e.event.name().into(),
                    journal::reference(&e.event).unwrap_or_default().into(),
                    l.account.as_str().into(),
                    l.debit_minor.into(),
                    l.credit_minor.into(),
                    l.currency.as_str().into(),
                    fmt_ts(e.event.occurred_at()).into(),
                ]);
            }
            orders.insert(e.order_id, order);
        }
        let mut memory = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(o) = orders.get(id) {
                let doc = serde_json::to_string(o).map_err(|e| SubscriberError::Failed(e.to_string()))?;
                memory.push(vec![Value::from(id.to_string()), doc.into()]);
            }
        }
        sql::insert_rows(
            tx,
            &memory_table,
            &["order_id", "doc"],
            &memory,
            "ON CONFLICT (order_id) DO UPDATE SET doc = excluded.doc",
        )
        .await?;
        sql::insert_rows(
            tx,
            &self.tables.name("ledger_entry"),
            &[
                "entry_id",
                "line",
                "merchant_id",
                "mode",
                "order_id",
                "event_type",
                "reference",
                "account",
                "debit_minor",
                "credit_minor",
                "currency",
                "occurred_at",
            ],
            &lines,
            "",
        )
        .await?;
        let table = self.tables.name("account_balance");
        let rows: Vec<Vec<Value>> = balances
            .into_iter()
            .map(|((m, mode, a, c), (d, cr, n))| {
                vec![m.into(), mode.into(), a.into(), c.into(), d.into(), cr.into(), n.into()]
            })
            .collect();
        sql::insert_rows(
            tx,
            &table,
            &[
                "merchant_id",
                "mode",
                "account",
                "currency",
                "debit_minor",
                "credit_minor",
                "lines",
            ],
            &rows,
            &format!(
                "ON CONFLICT (merchant_id, mode, account, currency) DO UPDATE SET \
                 debit_minor = {table}.debit_minor + excluded.debit_minor, \
                 credit_minor = {table}.credit_minor + excluded.credit_minor, \
                 lines = {table}.lines + excluded.lines"
            ),
        )
        .await?;
        Ok(())
    }
}
