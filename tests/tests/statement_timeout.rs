//! The statement timeout (`serve --db-statement-timeout`): a statement of a serving process that
//! runs past it is cancelled; migrations and the operator commands' pools are exempt.

use std::time::{Duration, Instant};

use payledger_store::{is_unavailable, Database, PoolConfig};
use payledger_tests::{Backend, TestDb, TestServer};
use sqlx::Connection;

/// The serving process's pool cancels a statement past the configured timeout, with PostgreSQL's
/// own error (SQLSTATE 57014), which the store counts as transient (503, retried by workers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_past_the_timeout_is_cancelled_on_the_serving_pool() {
    let Some(server) = TestServer::start_with_config(Backend::Postgres, |c| c.pools.statement_timeout_ms = 200).await
    else {
        return;
    };
    let started = Instant::now();
    let err = sqlx::query("SELECT pg_sleep(5)")
        .execute(server.database().pool())
        .await
        .expect_err("a 5 s statement under a 200 ms timeout is cancelled");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "cancelled late: {:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("statement timeout"), "{err}");
    let code = err.as_database_error().and_then(|e| e.code()).map(|c| c.to_string());
    assert_eq!(code.as_deref(), Some("57014"), "{err}");
    assert!(is_unavailable(&err), "a cancelled statement is transient: {err}");
    // Statements within the limit still run, on the same pool.
    sqlx::query("SELECT pg_sleep(0.01)")
        .execute(server.database().pool())
        .await
        .expect("a short statement runs");
}

/// Migrations are not under the statement timeout: here one waits for a lock on the migrations
/// table well past it (as it would behind another process's migration) and still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_not_under_the_statement_timeout() {
    let Some(test_db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let pools = PoolConfig {
        statement_timeout_ms: 100,
        ..PoolConfig::default()
    };
    let db = Database::connect(Some(&test_db.url), pools).await.expect("connect");
    db.migrate().await.expect("first migration");

    let mut holder = sqlx::PgConnection::connect(&test_db.url).await.expect("connect");
    sqlx::query("BEGIN").execute(&mut holder).await.expect("begin");
    sqlx::query("LOCK TABLE _sqlx_migrations IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .expect("lock");
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        sqlx::query("COMMIT")
            .execute(&mut holder)
            .await
            .expect("release the lock");
    });
    let started = Instant::now();
    db.migrate()
        .await
        .expect("migrate waits for the lock past the statement timeout");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "migrate did not wait for the lock, so this test proves nothing: {:?}",
        started.elapsed()
    );
    release.await.expect("released");
    // The pool's connections are still under the timeout after a migration.
    let err = sqlx::query("SELECT pg_sleep(2)")
        .execute(db.pool())
        .await
        .expect_err("cancelled");
    assert!(err.to_string().contains("statement timeout"), "{err}");
    db.close().await;
}

/// `payledger migrate`, `replay` and `reconcile` connect with [`PoolConfig::maintenance`]: a
/// statement longer than the serving default's is not cancelled there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_commands_pools_have_no_statement_timeout() {
    let Some(test_db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    assert_eq!(PoolConfig::maintenance().statement_timeout_ms, 0);
    let db = Database::connect(Some(&test_db.url), PoolConfig::maintenance())
        .await
        .expect("connect");
    let timeout: String = sqlx::query_scalar("SELECT current_setting('statement_timeout')")
        .fetch_one(db.pool())
        .await
        .expect("read the setting");
    assert_eq!(timeout, "0", "maintenance connections carry no statement timeout");
    db.close().await;

    let served = Database::connect(Some(&test_db.url), PoolConfig::default())
        .await
        .expect("connect");
    let timeout: String = sqlx::query_scalar("SELECT current_setting('statement_timeout')")
        .fetch_one(served.pool())
        .await
        .expect("read the setting");
    assert_eq!(timeout, "30s", "serving connections carry the default");
    served.close().await;
}

/// SQLite: the timeout bounds the wait for the write lock (the busy timeout), so a writer
/// behind a lock held elsewhere fails after it rather than after the 10 s maximum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_it_bounds_the_wait_for_the_write_lock() {
    let Some(test_db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let pools = PoolConfig {
        statement_timeout_ms: 300,
        ..PoolConfig::default()
    };
    let db = Database::connect(Some(&test_db.url), pools).await.expect("connect");
    db.migrate().await.expect("migrate");
    let mut holder = sqlx::SqliteConnection::connect(&test_db.url).await.expect("connect");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .expect("take the write lock");
    let started = Instant::now();
    let err = sqlx::query("INSERT INTO settings (key, value) VALUES ('k', 'v')")
        .execute(db.pool())
        .await
        .expect_err("the write lock is held elsewhere");
    let waited = started.elapsed();
    assert!(err.to_string().contains("locked"), "{err}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "waited {waited:?} for the lock"
    );
    sqlx::query("ROLLBACK").execute(&mut holder).await.expect("release");
    db.close().await;
}
