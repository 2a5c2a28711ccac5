//! Rebuilding projections from the global log: `payledger replay` and `reconcile --verify`.
//!
//! Both build a projection's tables afresh, from position 0, into a **shadow** set beside the
//! live one (`<table>__shadow`, same definition), using the projection's own batched code with
//! larger batches ([`REPLAY_BATCH_SIZE`]). Then:
//! - replay swaps them in: in one transaction it locks the live checkpoint (the live runner
//!   waits), applies what arrived meanwhile, renames the shadow tables over the live ones and
//!   moves the live checkpoint to the shadow's. Readers see the old tables or the new, never a
//!   mix; the server keeps serving.
//! - verify builds the shadow up to the live checkpoint, then under the same lock catches up to
//!   exactly where the live tables stand and takes a snapshot in which live and shadow tables
//!   stand at the same position, and lets the lock go: the comparison, row by row, runs on that
//!   snapshot while the live projector moves on (see [`verify`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use payledger_store::subscription::{
    catch_up, catch_up_in, checkpoint, lock_checkpoint, save_checkpoint, CatchUp, SubscriberError,
    TransactionalSubscriber,
};
use payledger_store::{Backend, Database, DbError, LogPosition};
use serde::Serialize;
use sqlx::{Any, AnyConnection, Transaction};

use crate::journal_projection::{JournalProjection, JOURNAL_PROJECTION_NAME};
use crate::projection::{OrderProjection, Tables, PROJECTION_NAME};

/// Events per transaction when rebuilding (the live runner uses smaller batches to keep lag low).
pub const REPLAY_BATCH_SIZE: i64 = 5_000;
/// Batches read ahead of the one being applied.
pub const READ_AHEAD_BATCHES: usize = 2;
/// Most differences listed per table by verify (all are counted).
pub const DIFFERENCES_LISTED_MAX: i64 = 1_000;
/// SQLite: attempts at a snapshot where the live and shadow checkpoints agree (see
/// [`frozen_snapshot`]) before verify compares under the live lock instead.
pub const SQLITE_SNAPSHOT_ATTEMPTS: usize = 20;

/// A table a projection owns, and the columns that identify a row.
#[derive(Debug, Clone, Copy)]
pub struct TableSpec {
    pub name: &'static str,
    pub key: &'static [&'static str],
    /// Rows are only inserted, never upserted: a rebuild adds the primary key after the rows,
    /// like the other indexes (nothing needs it during the build).
    pub insert_only: bool,
}

/// The projections that can be rebuilt. (`notify_enqueue` cannot: the notify queue's state is
/// driven by deliveries, which are not events.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projection {
    /// `order_view`, `refund_view`, `merchant_daily_stats`.
    OrderView,
    /// `ledger_entry`, `account_balance`, `journal_order`.
    Journal,
}

impl Projection {
    /// Every rebuildable projection.
    pub const ALL: [Projection; 2] = [Projection::OrderView, Projection::Journal];

    /// Its checkpoint name, also its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Projection::OrderView => PROJECTION_NAME,
            Projection::Journal => JOURNAL_PROJECTION_NAME,
        }
    }

    /// The projection called `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The tables it writes.
    pub fn tables(self) -> &'static [TableSpec] {
        match self {
            Projection::OrderView => &[
                TableSpec {
                    name: "order_view",
                    key: &["order_id"],
                    insert_only: false,
                },
                TableSpec {
                    name: "refund_view",
                    key: &["refund_id"],
                    insert_only: false,
                },
                TableSpec {
                    name: "merchant_daily_stats",
                    key: &["merchant_id", "mode", "day", "currency", "channel"],
                    insert_only: false,
                },
            ],
            Projection::Journal => &[
                TableSpec {
                    name: "ledger_entry",
                    key: &["entry_id", "line"],
                    insert_only: true,
                },
                TableSpec {
                    name: "account_balance",
                    key: &["merchant_id", "mode", "account", "currency"],
                    insert_only: false,
                },
                TableSpec {
                    name: "journal_order",
                    key: &["order_id"],
                    insert_only: false,
                },
            ],
        }
    }

    /// Its subscriber writing `tables`.
    pub fn subscriber(self, tables: Tables) -> Arc<dyn TransactionalSubscriber> {
        match self {
            Projection::OrderView => Arc::new(OrderProjection::new(tables)),
            Projection::Journal => Arc::new(JournalProjection::new(tables)),
        }
    }
}

/// A rebuild failure.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Subscriber(#[from] SubscriberError),
}

impl From<sqlx::Error> for RebuildError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Sqlx(e))
    }
}

/// What a replay did.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub projection: &'static str,
    /// Events applied to the new tables.
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    /// Where the live checkpoint stands after the swap.
    pub position: LogPosition,
}

async fn exec(conn: &mut AnyConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::query(sql).execute(&mut *conn).await.map(|_| ())
}

/// Drops any leftover shadow tables and checkpoint of `projection`, and creates empty shadow
/// tables with the live tables' columns, defaults, checks and keys. Secondary indexes come after
/// the rows ([`index_shadow`]): building an index once is much cheaper than maintaining it
/// through millions of inserts, and verify never needs them.
async fn create_shadow(db: &Database, projection: Projection) -> Result<(), RebuildError> {
    let shadow = Tables::shadow();
    let mut conn = db.pool().acquire().await?;
    sqlx::query("DELETE FROM subscriber_checkpoint WHERE name = $1")
        .bind(shadow.checkpoint(projection.name()))
        .execute(&mut *conn)
        .await?;
    for t in projection.tables() {
        let name = shadow.name(t.name);
        exec(&mut conn, &format!("DROP TABLE IF EXISTS {name}")).await?;
        match db.backend() {
            Backend::Postgres => {
                exec(
                    &mut conn,
                    &format!(
                        "CREATE TABLE {name} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)",
                        t.name
                    ),
                )
                .await?;
                if !t.insert_only {
                    exec(
                        &mut conn,
                        &format!("ALTER TABLE {name} ADD PRIMARY KEY ({})", t.key.join(", ")),
                    )
                    .await?;
                }
            }
            Backend::Sqlite => {
                // SQLite has no LIKE: re-issue the stored CREATE TABLE under the new name (its
                // inline keys come along).
                let sql: String =
                    sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = $1")
                        .bind(t.name)
                        .fetch_one(&mut *conn)
                        .await?;
                let body = sql.find('(').map(|i| &sql[i..]).unwrap_or_default();
                exec(&mut conn, &format!("CREATE TABLE {name} {body}")).await?;
            }
        }
    }
    Ok(())
}

/// `CREATE [UNIQUE] INDEX <index> ON <table> <rest>` re-aimed at `table` under a new index name
/// (index names are schema-wide; a previous replay's suffix is replaced).
fn reindex_statement(definition: &str, index: &str, table: &str, suffix: &str) -> Option<String> {
    let upper = definition.to_ascii_uppercase();
    let head = if upper.starts_with("CREATE UNIQUE INDEX") {
        "CREATE UNIQUE INDEX"
    } else {
        "CREATE INDEX"
    };
    let on = upper.find(" ON ")?;
    let after_on = &definition[on + 4..];
    // The table name ends at the first space (PostgreSQL: "… USING btree (…)") or parenthesis.
    let end = after_on.find([' ', '('])?;
    let base = index.split("__").next().unwrap_or(index);
    Some(format!(
        "{head} {base}__{suffix} ON {table} {}",
        after_on[end..].trim_start()
    ))
}

/// Creates the live tables' secondary indexes on the shadow tables.
async fn index_shadow(db: &Database, projection: Projection) -> Result<(), RebuildError> {
    let shadow = Tables::shadow();
    let suffix = format!("{:x}", chrono::Utc::now().timestamp_micros());
    let mut conn = db.pool().acquire().await?;
    for t in projection.tables() {
        if t.insert_only && db.backend() == Backend::Postgres {
            exec(
                &mut conn,
                &format!(
                    "ALTER TABLE {} ADD PRIMARY KEY ({})",
                    shadow.name(t.name),
                    t.key.join(", ")
                ),
            )
            .await?;
        }
        let definitions: Vec<(String, String)> =
            match db.backend() {
                Backend::Postgres => {
                    sqlx::query_as(
                        "SELECT i.relname::text, pg_get_indexdef(x.indexrelid) FROM pg_index x \
                     JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid \
                     WHERE c.relname = $1 AND pg_table_is_visible(c.oid) AND NOT x.indisprimary ORDER BY 1",
                    )
                    .bind(t.name)
                    .fetch_all(&mut *conn)
                    .await?
                }
                Backend::Sqlite => sqlx::query_as(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = $1 AND sql IS NOT NULL \
                     ORDER BY 1",
                )
                .bind(t.name)
                .fetch_all(&mut *conn)
                .await?,
            };
        for (index, definition) in definitions {
            let statement = reindex_statement(&definition, &index, &shadow.name(t.name), &suffix).ok_or_else(|| {
                RebuildError::Subscriber(SubscriberError::Failed(format!(
                    "unexpected index definition {definition:?}"
                )))
            })?;
            exec(&mut conn, &statement).await?;
        }
    }
    Ok(())
}

/// How replay and verify run the shadow subscriber: large batches, read ahead, and (the shadow
/// being rebuilt by any new run) commits that do not wait for the WAL flush on PostgreSQL.
fn shadow_run(until: Option<LogPosition>) -> CatchUp {
    CatchUp {
        until,
        batch_size: REPLAY_BATCH_SIZE,
        read_ahead: READ_AHEAD_BATCHES,
        durable: false,
    }
}

/// Under a lock held by the caller, applies in `tx` what the shadow still lacks up to `until`.
async fn finish_in(
    db: &Database,
    tx: &mut AnyConnection,
    shadow: &dyn TransactionalSubscriber,
    until: Option<LogPosition>,
) -> Result<(LogPosition, u64), RebuildError> {
    Ok(catch_up_in(db, tx, shadow, until, REPLAY_BATCH_SIZE).await?)
}

/// Rebuilds `projection` from position 0 into shadow tables and swaps them in atomically while
/// the server keeps serving. `progress` is told how many events each batch applied.
///
/// # Errors
/// [`RebuildError`] from the database or the projection; the live tables are then untouched.
pub async fn replay(
    db: &Database,
    projection: Projection,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ReplayReport, RebuildError> {
    let started = Instant::now();
    create_shadow(db, projection).await?;
    let shadow = projection.subscriber(Tables::shadow());
    let mut events = catch_up(db, &[shadow.as_ref()], shadow_run(None), progress).await?;
    index_shadow(db, projection).await?;

    let mut tx = db.pool().begin().await?;
    lock_checkpoint(&mut tx, projection.name()).await?;
    let (position, more) = finish_in(db, &mut tx, shadow.as_ref(), None).await?;
    progress(more);
    events += more;
    save_checkpoint(&mut *tx, projection.name(), position).await?;
    sqlx::query("DELETE FROM subscriber_checkpoint WHERE name = $1")
        .bind(shadow.name())
        .execute(&mut *tx)
        .await?;
    for t in projection.tables() {
        let retired = format!("{}__retired", t.name);
        exec(&mut tx, &format!("DROP TABLE IF EXISTS {retired}")).await?;
        exec(&mut tx, &format!("ALTER TABLE {} RENAME TO {retired}", t.name)).await?;
        exec(
            &mut tx,
            &format!("ALTER TABLE {} RENAME TO {}", Tables::shadow().name(t.name), t.name),
        )
        .await?;
        exec(&mut tx, &format!("DROP TABLE {retired}")).await?;
    }
    tx.commit().await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(ReplayReport {
        projection: projection.name(),
        events,
        seconds,
        events_per_second: events as f64 / seconds.max(1e-9),
        position,
    })
}

/// How a live row differs from the replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    /// The replay has the row; the live table does not.
    Missing,
    /// The live table has a row the replay does not.
    Extra,
    /// Both have the row, with other values.
    Different,
}

/// One row that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub table: &'static str,
    /// The row's key values joined by `|`.
    pub key: String,
    pub kind: DifferenceKind,
}

/// An entry whose lines do not balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnbalancedEntry {
    pub entry_id: String,
    pub currency: String,
    pub debit_minor: i64,
    pub credit_minor: i64,
}

/// What verify found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Events replayed into the shadow tables.
    pub events: u64,
    /// Rows compared, live tables.
    pub rows_compared: i64,
    /// Differences (at most [`DIFFERENCES_LISTED_MAX`] per table listed).
    pub differences: Vec<Difference>,
    /// Differences counted, per table, listed or not.
    pub differences_total: i64,
    /// Journal entries (live table) whose debits and credits differ.
    pub unbalanced_entries: Vec<UnbalancedEntry>,
}

impl VerifyReport {
    /// Live tables equal the replay and the journal balances.
    pub fn is_clean(&self) -> bool {
        self.differences_total == 0 && self.unbalanced_entries.is_empty()
    }
}

/// Key columns of `t` as one text value per row (`a || '|' || b`).
fn key_expr(t: &TableSpec) -> String {
    t.key
        .iter()
        .map(|k| format!("CAST({k} AS TEXT)"))
        .collect::<Vec<_>>()
        .join(" || '|' || ")
}

async fn compare_table(conn: &mut AnyConnection, t: &TableSpec, report: &mut VerifyReport) -> Result<(), sqlx::Error> {
    let live = t.name;
    let shadow = Tables::shadow().name(t.name);
    let key = key_expr(t);
    let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {live}"))
        .fetch_one(&mut *conn)
        .await?;
    report.rows_compared += rows;
    // Keys of rows present on one side only (as whole rows); a key on both sides is "different".
    let only_live = format!("SELECT {key} AS k FROM (SELECT * FROM {live} EXCEPT SELECT * FROM {shadow}) d");
    let only_shadow = format!("SELECT {key} AS k FROM (SELECT * FROM {shadow} EXCEPT SELECT * FROM {live}) d");
    let sql = format!(
        "SELECT k, SUM(l), SUM(s) FROM (SELECT k, 1 AS l, 0 AS s FROM ({only_live}) a \
         UNION ALL SELECT k, 0 AS l, 1 AS s FROM ({only_shadow}) b) u GROUP BY k ORDER BY k"
    );
    let found: Vec<(String, i64, i64)> = sqlx::query_as(&sql).fetch_all(&mut *conn).await?;
    report.differences_total += found.len() as i64;
    for (k, in_live, in_shadow) in found.into_iter().take(DIFFERENCES_LISTED_MAX as usize) {
        let kind = match (in_live > 0, in_shadow > 0) {
            (true, true) => DifferenceKind::Different,
            (true, false) => DifferenceKind::Extra,
            _ => DifferenceKind::Missing,
        };
        report.differences.push(Difference {
            table: t.name,
            key: k,
            kind,
        });
    }
    Ok(())
}

async fn unbalanced_entries(conn: &mut AnyConnection) -> Result<Vec<UnbalancedEntry>, sqlx::Error> {
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT entry_id, currency, CAST(SUM(debit_minor) AS BIGINT), CAST(SUM(credit_minor) AS BIGINT) \
         FROM ledger_entry GROUP BY entry_id, currency HAVING SUM(debit_minor) <> SUM(credit_minor) \
         ORDER BY entry_id LIMIT 1000",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(entry_id, currency, debit_minor, credit_minor)| UnbalancedEntry {
            entry_id,
            currency,
            debit_minor,
            credit_minor,
        })
        .collect())
}

/// Rebuilds every projection into shadow tables and compares them with the live tables at the
/// same log position; checks that every journal entry balances. The live tables are not
/// changed; the shadow tables are dropped afterwards.
///
/// The live projection's lock is held only to bring the shadow to the live position and take a
/// snapshot of both ([`frozen_snapshot`]); the comparison runs on that snapshot, so the live
/// projector keeps applying events meanwhile.
///
/// # Errors
/// [`RebuildError`] from the database or a projection.
pub async fn verify(db: &Database, progress: &(dyn Fn(u64) + Sync)) -> Result<VerifyReport, RebuildError> {
    verify_with(db, progress, None).await
}

/// Called by [`verify_with`] once a projection's snapshot is taken and the live lock released,
/// before its tables are compared (tests use it to act while verify compares).
pub type ComparingHook<'a> = &'a (dyn Fn(Projection) -> Pin<Box<dyn Future<Output = ()> + Send>> + Sync);

/// [`verify`], calling `comparing` (when given) for each projection right before its comparison.
///
/// # Errors
/// As [`verify`].
pub async fn verify_with(
    db: &Database,
    progress: &(dyn Fn(u64) + Sync),
    comparing: Option<ComparingHook<'_>>,
) -> Result<VerifyReport, RebuildError> {
    let mut report = VerifyReport::default();
    for projection in Projection::ALL {
        create_shadow(db, projection).await?;
        let shadow = projection.subscriber(Tables::shadow());
        // Up to where the live tables stood when we started, then up to where they stand after
        // that (what the live projector applied meanwhile), so the locked step has little to do.
        for _ in 0..2 {
            let live_at = checkpoint(db.pool(), projection.name()).await?;
            report.events += catch_up(db, &[shadow.as_ref()], shadow_run(Some(live_at)), progress).await?;
        }
        let mut snapshot = frozen_snapshot(db, projection, shadow.as_ref(), &mut report, progress).await?;
        if let Some(hook) = comparing {
            hook(projection).await;
        }
        for t in projection.tables() {
            compare_table(&mut snapshot, t, &mut report).await?;
        }
        if projection == Projection::Journal {
            report.unbalanced_entries = unbalanced_entries(&mut snapshot).await?;
        }
        snapshot.rollback().await?;
        drop_shadow(db, projection).await?;
    }
    Ok(report)
}

/// A transaction that sees `projection`'s live tables and its shadow tables at the same log
/// position, holding no lock the live projector waits for.
///
/// PostgreSQL: one transaction locks the live checkpoint (the live projector waits), another
/// brings the shadow up to it and commits, then the locked transaction exports its snapshot
/// (`pg_export_snapshot`), a `REPEATABLE READ` transaction imports it, and the lock goes.
/// The importing transaction only reads, so it has no transaction id and does not hold back the
/// log's horizon for the live readers.
///
/// SQLite (one writer, snapshots are WAL read transactions, which cannot be handed over):
/// under the live lock (the write lock) the shadow is brought up to the live checkpoint and
/// committed; a read transaction then begins and checks that both checkpoints still agree in
/// its snapshot (the live projector may have committed in between: then again, up to
/// [`SQLITE_SNAPSHOT_ATTEMPTS`] times, and after that the comparison runs under the lock, as a
/// warning says).
async fn frozen_snapshot(
    db: &Database,
    projection: Projection,
    shadow: &dyn TransactionalSubscriber,
    report: &mut VerifyReport,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Transaction<'static, Any>, RebuildError> {
    match db.backend() {
        Backend::Postgres => {
            let mut lock = db.pool().begin().await?;
            let live_now = lock_checkpoint(&mut lock, projection.name()).await?;
            let mut copy = db.pool().begin().await?;
            let (_, more) = finish_in(db, &mut copy, shadow, Some(live_now)).await?;
            copy.commit().await?;
            progress(more);
            report.events += more;
            // A new statement of a READ COMMITTED transaction: its snapshot holds the shadow's
            // commit, and the live tables as they stand under the lock.
            let id: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
                .fetch_one(&mut *lock)
                .await?;
            if !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                return Err(SubscriberError::Failed(format!("unexpected snapshot id {id:?}")).into());
            }
            let mut snapshot = db.pool().begin().await?;
            exec(
                &mut snapshot,
                "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            )
            .await?;
            exec(&mut snapshot, &format!("SET TRANSACTION SNAPSHOT '{id}'")).await?;
            lock.rollback().await?;
            Ok(snapshot)
        }
        Backend::Sqlite => {
            for _ in 0..SQLITE_SNAPSHOT_ATTEMPTS {
                let mut lock = db.pool().begin().await?;
                let live_now = lock_checkpoint(&mut lock, projection.name()).await?;
                let (_, more) = finish_in(db, &mut lock, shadow, Some(live_now)).await?;
                lock.commit().await?;
                progress(more);
                report.events += more;
                let mut snapshot = db.pool().begin().await?;
                // The first read fixes the snapshot.
                let positions: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT transaction_id, global_position FROM subscriber_checkpoint WHERE name IN ($1, $2)",
                )
                .bind(projection.name())
                .bind(shadow.name())
                .fetch_all(&mut *snapshot)
                .await?;
                if positions.len() == 2 && positions[0] == positions[1] {
                    return Ok(snapshot);
                }
                snapshot.rollback().await?;
            }
            tracing::warn!(
                projection = projection.name(),
                attempts = SQLITE_SNAPSHOT_ATTEMPTS,
                "the live projection moved at every attempt at a snapshot; comparing under its lock"
            );
            let mut lock = db.pool().begin().await?;
            let live_now = lock_checkpoint(&mut lock, projection.name()).await?;
            let (_, more) = finish_in(db, &mut lock, shadow, Some(live_now)).await?;
            progress(more);
            report.events += more;
            Ok(lock)
        }
    }
}

async fn drop_shadow(db: &Database, projection: Projection) -> Result<(), RebuildError> {
    let shadow = Tables::shadow();
    let mut conn = db.pool().acquire().await?;
    for t in projection.tables() {
        exec(&mut conn, &format!("DROP TABLE IF EXISTS {}", shadow.name(t.name))).await?;
    }
    sqlx::query("DELETE FROM subscriber_checkpoint WHERE name = $1")
        .bind(shadow.checkpoint(projection.name()))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::reindex_statement;

    #[test]
    fn index_definitions_are_re_aimed_at_the_shadow_table() {
        assert_eq!(
            reindex_statement(
                "CREATE INDEX order_view_merchant_created ON public.order_view USING btree (merchant_id, created_at DESC)",
                "order_view_merchant_created",
                "order_view__shadow",
                "abc"
            )
            .as_deref(),
            Some("CREATE INDEX order_view_merchant_created__abc ON order_view__shadow USING btree (merchant_id, created_at DESC)")
        );
        // A previous replay's suffix is replaced; SQLite's stored SQL has no USING.
        assert_eq!(
            reindex_statement(
                "CREATE UNIQUE INDEX x__old ON \"order_view\"(a, b)",
                "x__old",
                "order_view__shadow",
                "new"
            )
            .as_deref(),
            Some("CREATE UNIQUE INDEX x__new ON order_view__shadow (a, b)")
        );
        assert_eq!(reindex_statement("garbage", "x", "t", "s"), None);
    }
}
