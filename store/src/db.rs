//! Connecting, pooling and migrating.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::AnyPool;
use tokio::sync::watch;

use crate::log::GlobalLog;
use crate::orders::{OrderStore, Start};
use crate::tail::LogTail;
use crate::turns::OrderTurns;

/// The embedded default's database file, in the working directory.
pub const DEFAULT_SQLITE_FILE: &str = "payledger.db";

pub use crate::backend::{is_unavailable, Backend, DbError};

/// Counter of events this process appended to the store, labelled `event_type` (e.g.
/// `PaymentSucceeded`), counted by the committers after each commit ([`crate::append`]), which
/// every append goes through.
pub const EVENTS_APPENDED_TOTAL: &str = "payledger_events_appended_total";

/// Default of [`PoolConfig::acquire_timeout_ms`]: while PostgreSQL is unreachable every request
/// fails (503) after at most this long, well inside an HTTP client's patience.
pub const ACQUIRE_TIMEOUT_MS_DEFAULT: u64 = 2_000;
/// PostgreSQL ends a session that sits idle inside a transaction this long (its
/// `idle_in_transaction_session_timeout`), so a client that vanished without closing its
/// connection (half-open TCP) cannot hold row locks, such as a subscriber's checkpoint, for
/// ever. Nothing of ours idles in a transaction: network calls happen outside them.
pub const IDLE_IN_TRANSACTION_TIMEOUT_MS: u64 = 60_000;
/// Default of [`PoolConfig::statement_timeout_ms`] for a serving process: PostgreSQL cancels a
/// statement of ours that runs (or waits for a lock) longer than this, so a runaway query or a
/// lock held elsewhere cannot pin a connection and the request or worker waiting on it for
/// ever. Every query of a serving process is indexed and short; 30 s is far beyond any of them.
pub const STATEMENT_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// SQLite's busy timeout (how long a statement waits for the file's write lock) when the
/// statement timeout is longer or off.
pub const SQLITE_BUSY_TIMEOUT_MS_MAX: u64 = 10_000;

/// Pool sizes. Two pools share the database: the typed one cqrs-es appends through, and an
/// `Any` pool for the read side and subscribers, whose SQL is written once for both backends.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Connections for command execution (cqrs-es).
    pub store_connections_max: u32,
    /// Connections for queries and subscribers.
    pub query_connections_max: u32,
    /// How long an operation waits for a connection (a free one, or a new one to be
    /// established) before failing with `PoolTimedOut`. It bounds connecting too: sqlx retries
    /// a refused connection until this deadline, so it is also how long a request takes to fail
    /// while the database is down.
    pub acquire_timeout_ms: u64,
    /// Longest a statement may run, milliseconds; 0: no limit. PostgreSQL: the session's
    /// `statement_timeout` on every connection of both pools, past which PostgreSQL cancels
    /// the statement (SQLSTATE 57014, which [`is_unavailable`] counts as transient: a request
    /// answers 503, a worker retries later). SQLite has no server to cancel a statement, and
    /// its statements here are short in-process work; what can last is waiting for the
    /// file's write lock, so there it bounds the busy timeout: the smaller of this and
    /// [`SQLITE_BUSY_TIMEOUT_MS_MAX`]. Migrations never run under it ([`Database::migrate`]);
    /// `payledger migrate`, `replay` and `reconcile` connect with [`PoolConfig::maintenance`].
    pub statement_timeout_ms: u64,
}

impl Default for PoolConfig {
    /// A serving process's pools, with [`STATEMENT_TIMEOUT_MS_DEFAULT`].
    fn default() -> Self {
        Self {
            store_connections_max: 8,
            query_connections_max: 8,
            acquire_timeout_ms: ACQUIRE_TIMEOUT_MS_DEFAULT,
            statement_timeout_ms: STATEMENT_TIMEOUT_MS_DEFAULT,
        }
    }
}

impl PoolConfig {
    /// The pools of the operator commands that read or write everything at once (`migrate`,
    /// `replay`, `reconcile`): as the default, without a statement timeout, since a replay's
    /// swap or a verify's comparison of a large ledger may rightly take long.
    pub fn maintenance() -> Self {
        Self {
            statement_timeout_ms: 0,
            ..Self::default()
        }
    }

    /// SQLite's busy timeout under this configuration (see [`PoolConfig::statement_timeout_ms`]).
    fn sqlite_busy_timeout_ms(&self) -> u64 {
        match self.statement_timeout_ms {
            0 => SQLITE_BUSY_TIMEOUT_MS_MAX,
            ms => ms.min(SQLITE_BUSY_TIMEOUT_MS_MAX),
        }
    }
}

/// What the committers do after each commit: wake this process's subscribers (`appended`), tell
/// the announcer of [`crate::wake`] (`appended_here`), and count the events by type.
fn announce_commits(
    appended: Arc<watch::Sender<u64>>,
    appended_here: Arc<watch::Sender<u64>>,
) -> crate::append::OnCommit {
    Arc::new(move |events| {
        appended.send_modify(|n| *n = n.wrapping_add(1));
        appended_here.send_modify(|n| *n = n.wrapping_add(1));
        for e in events {
            metrics::counter!(EVENTS_APPENDED_TOTAL, "event_type" => e.event_type.clone()).increment(1);
        }
    })
}

/// Creates the SQLite file at `path` readable and writable by its owner only (0600) when it
/// does not exist yet, before SQLite opens it: SQLite gives the `-wal` and `-shm` files the
/// database file's permissions, so the ledger's data is never readable by other users of the
/// machine. An existing file is left as it is, with a warning when others may read it. A failure
/// here is left to SQLite's own open to report.
fn create_private(path: &std::path::Path) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" {
        return;
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the database file is readable by other users; chmod 600 it"
            );
        }
        Ok(_) => {}
        Err(_) => {
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path);
        }
    }
}

/// A connected, migrated-on-demand database.
#[derive(Clone)]
pub struct Database {
    backend: Backend,
    any: AnyPool,
    orders: Arc<OrderStore>,
    appended: Arc<watch::Sender<u64>>,
    /// Changes only on this process's own appends (what [`crate::wake`] announces).
    appended_here: Arc<watch::Sender<u64>>,
    tail: Arc<LogTail>,
    order_turns: Arc<OrderTurns>,
    /// SQLite only: this process's writers queue here before taking the file's write lock.
    write_turn: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl Database {
    /// Connects to `url`: `postgres://…` / `postgresql://…` or `sqlite://PATH`; `None` means the
    /// embedded default, `sqlite://payledger.db` (created if missing).
    ///
    /// # Errors
    /// [`DbError::UnsupportedUrl`] for another scheme; [`DbError::Sqlx`] when the database
    /// cannot be reached.
    pub async fn connect(url: Option<&str>, pools: PoolConfig) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let url = url
            .map(str::to_string)
            .unwrap_or_else(|| format!("sqlite://{DEFAULT_SQLITE_FILE}"));
        let acquire_timeout = Duration::from_millis(pools.acquire_timeout_ms);
        let write_turn = Arc::new(tokio::sync::Mutex::new(()));
        let appended = Arc::new(watch::channel(0).0);
        let appended_here = Arc::new(watch::channel(0).0);
        let on_commit = announce_commits(appended.clone(), appended_here.clone());
        let statement_timeout = pools.statement_timeout_ms.to_string();
        let busy_timeout_ms = pools.sqlite_busy_timeout_ms();
        let (backend, orders) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let idle_in_tx = IDLE_IN_TRANSACTION_TIMEOUT_MS.to_string();
            let options = PgConnectOptions::from_str(&url)?.options([
                ("idle_in_transaction_session_timeout", idle_in_tx.as_str()),
                ("statement_timeout", statement_timeout.as_str()),
            ]);
            let pool = PgPoolOptions::new()
                .max_connections(pools.store_connections_max)
                .acquire_timeout(acquire_timeout)
                .connect_with(options)
                .await?;
            (Backend::Postgres, OrderStore::postgres(pool, on_commit))
        } else if url.starts_with("sqlite:") {
            // FULL: a payment ledger must not lose a committed event on power loss, which
            // NORMAL allows in WAL mode. WAL lets readers run beside the single writer.
            let options = SqliteConnectOptions::from_str(&url)?;
            create_private(options.get_filename());
            let options = options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_millis(busy_timeout_ms));
            let pool = SqlitePoolOptions::new()
                .max_connections(pools.store_connections_max)
                .acquire_timeout(acquire_timeout)
                .connect_with(options)
                .await?;
            (Backend::Sqlite, OrderStore::sqlite(pool, write_turn.clone(), on_commit))
        } else {
            return Err(DbError::UnsupportedUrl(url));
        };
        let any = AnyPoolOptions::new()
            .max_connections(pools.query_connections_max)
            .acquire_timeout(acquire_timeout)
            .after_connect(move |conn, _| {
                let statement_timeout = statement_timeout.clone();
                Box::pin(async move {
                    match backend {
                        Backend::Sqlite => {
                            // Same durability and lock waiting as the store pool.
                            sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await?;
                            let busy = format!("PRAGMA busy_timeout = {busy_timeout_ms}");
                            sqlx::query(&busy).execute(&mut *conn).await?;
                        }
                        Backend::Postgres => {
                            let set =
                                format!("SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_TIMEOUT_MS}");
                            sqlx::query(&set).execute(&mut *conn).await?;
                            let set = format!("SET statement_timeout = {statement_timeout}");
                            sqlx::query(&set).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        Ok(Self {
            backend,
            orders: Arc::new(orders),
            appended,
            appended_here,
            tail: Arc::new(LogTail::new(GlobalLog::new(backend, any.clone()))),
            any,
            order_turns: Arc::new(OrderTurns::default()),
            write_turn: (backend == Backend::Sqlite).then_some(write_turn),
        })
    }

    /// Applies the migrations in `schemas/postgres` or `schemas/sqlite` (embedded at build
    /// time). Idempotent.
    ///
    /// Never under the statement timeout ([`PoolConfig::statement_timeout_ms`]): a migration
    /// may rewrite a large table, and waits for the migration lock while another process
    /// migrates. On PostgreSQL it runs on a connection of its own with `statement_timeout = 0`,
    /// which is closed afterwards rather than handed back to the pool without its limit.
    ///
    /// # Errors
    /// [`DbError::Migrate`] when a migration fails or an applied one was changed.
    pub async fn migrate(&self) -> Result<(), DbError> {
        self.migrate_up_to(i64::MAX).await
    }

    /// Applies the migrations numbered up to `version` (e.g. `6` for `0006_*.sql`), as an
    /// installation of an older payledger has them: for tests of what a later migration does
    /// to existing data. Idempotent; never under the statement timeout, as [`Database::migrate`].
    ///
    /// # Errors
    /// As [`Database::migrate`].
    pub async fn migrate_up_to(&self, version: i64) -> Result<(), DbError> {
        let mut migrator = match self.backend {
            Backend::Postgres => sqlx::migrate!("../schemas/postgres"),
            Backend::Sqlite => sqlx::migrate!("../schemas/sqlite"),
        };
        if version < i64::MAX {
            let kept: Vec<_> = migrator.iter().filter(|m| m.version <= version).cloned().collect();
            migrator.migrations = kept.into();
        }
        match self.backend {
            Backend::Postgres => {
                let mut conn = self.any.acquire().await?;
                let migrated = match sqlx::query("SET statement_timeout = 0").execute(&mut *conn).await {
                    Ok(_) => migrator.run(&mut *conn).await.map_err(DbError::from),
                    Err(e) => Err(DbError::from(e)),
                };
                let _ = conn.close().await;
                migrated?;
            }
            Backend::Sqlite => migrator.run(&self.any).await?,
        }
        Ok(())
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool for read tables, subscribers and other portable SQL (`$1` placeholders work on
    /// both backends).
    pub fn pool(&self) -> &AnyPool {
        &self.any
    }

    /// Command execution for `PaymentOrder`.
    pub fn orders(&self) -> &OrderStore {
        &self.orders
    }

    /// Executes `command` on order `order_id` on behalf of `actor` (`merchant:<id>`,
    /// `channel:<name>`, `worker:<name>`), which every stored event records as `metadata.actor`
    /// (see [`OrderStore::execute`]). When it stored events, this process's subscribers are woken
    /// (by the committer, after the commit).
    ///
    /// Commands on the same order wait their turn in this process ([`OrderTurns`]), so they do
    /// not fail each other's version checks; their appends are group-committed with other
    /// orders' ([`crate::append`]), on SQLite inside the process's write turn
    /// ([`Database::write_turn`]), which the load before it does not take.
    ///
    /// # Errors
    /// As [`OrderStore::execute`].
    pub async fn execute(
        &self,
        order_id: uuid::Uuid,
        command: payledger_domain::PaymentOrderCommand,
        actor: &str,
    ) -> Result<crate::Executed, crate::ExecuteError> {
        self.execute_with(order_id, actor, Start::Load, |_| {
            Ok::<_, crate::ExecuteError>(command.clone())
        })
        .await
    }

    /// As [`Database::execute`], with the command decided from the loaded order by `decide`
    /// (which may refuse), starting from the empty order when `start` is [`Start::New`]: see
    /// [`OrderStore::execute_with`]. A flow that would check the order and then execute loads
    /// it once this way.
    ///
    /// # Errors
    /// `decide`'s refusal; otherwise as [`OrderStore::execute`].
    pub async fn execute_with<E, F>(
        &self,
        order_id: uuid::Uuid,
        actor: &str,
        start: Start,
        decide: F,
    ) -> Result<crate::Executed, E>
    where
        E: From<crate::ExecuteError>,
        F: Fn(&payledger_domain::PaymentOrder) -> Result<payledger_domain::PaymentOrderCommand, E>,
    {
        let metadata = std::collections::HashMap::from([("actor".to_string(), actor.to_string())]);
        let _order_turn = self.order_turns.take(order_id).await;
        // Subscribers are woken and events counted by the committer, right after the commit
        // (`announce_commits`), even when this caller has stopped waiting.
        self.orders.execute_with(order_id, metadata, start, decide).await
    }

    /// On SQLite, waits for this process's turn to write and holds it until the guard drops:
    /// take it before a write transaction so writers queue in memory rather than in SQLite's
    /// busy handler (see [`crate::turns`]). `None` at once on PostgreSQL, which has no single
    /// writer.
    pub async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.write_turn {
            Some(turn) => Some(turn.clone().lock_owned().await),
            None => None,
        }
    }

    /// The global, ordered log of every event.
    pub fn log(&self) -> GlobalLog {
        GlobalLog::new(self.backend, self.any.clone())
    }

    /// The log's tail as this process's subscribers read it: one database read per batch,
    /// shared by all of them (see [`LogTail`]).
    pub fn tail(&self) -> &LogTail {
        &self.tail
    }

    /// Tells in-process subscribers that events were appended, so they read now rather than
    /// at their next poll. Other processes learn of it through [`crate::wake`], or poll.
    pub fn notify_appended(&self) {
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that changes whenever this process appends (not on wake-ups from others).
    pub fn appended_here(&self) -> watch::Receiver<u64> {
        self.appended_here.subscribe()
    }

    /// A receiver that changes whenever [`Database::notify_appended`] is called.
    pub fn appended(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// Whether the database answers a trivial query within `timeout` (a connection cut without
    /// a close, half-open, would otherwise keep the caller waiting).
    pub async fn ping(&self, timeout: Duration) -> bool {
        let query = sqlx::query("SELECT 1").execute(&self.any);
        matches!(tokio::time::timeout(timeout, query).await, Ok(Ok(_)))
    }

    /// Closes both pools.
    pub async fn close(&self) {
        self.any.close().await;
        self.orders.close().await;
    }
}
