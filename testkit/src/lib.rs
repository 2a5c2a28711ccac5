//! Test support shared by every crate's tests: a database of one's own per test (SQLite file or a
//! fresh PostgreSQL database) and the test NATS server. No payledger crate is a dependency, so
//! any crate (the binary's own tests included) can use it without a cycle.
//!
//! PostgreSQL: `PAYLEDGER_TEST_PG` (default `postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable`)
//! must point at a server where we may create databases. NATS: `PAYLEDGER_TEST_NATS` (default
//! `nats://127.0.0.1:4222`, with JetStream). When either is unreachable, tests fail if `CI=true`,
//! and are skipped with a loud message otherwise.

use std::time::Duration;

use sqlx::Connection;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Admin URL of the PostgreSQL server used by tests.
pub fn pg_admin_url() -> String {
    std::env::var("PAYLEDGER_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".to_string())
}

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// A database for one test, dropped (PostgreSQL) or deleted (SQLite) afterwards.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh database, or `None` when PostgreSQL is unreachable outside CI.
    ///
    /// # Panics
    /// When PostgreSQL is unreachable and `CI=true`.
    pub async fn create(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("payledger.db").display());
                Some(Self {
                    url,
                    pg_name: None,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let admin = pg_admin_url();
                let mut conn = match sqlx::PgConnection::connect(&admin).await {
                    Ok(c) => c,
                    Err(e) => {
                        if std::env::var("CI").is_ok_and(|v| v == "true") {
                            panic!("PostgreSQL at {admin} is unreachable and CI=true: {e}");
                        }
                        eprintln!("\n*** SKIPPING PostgreSQL test: {admin} unreachable ({e}) ***\n");
                        return None;
                    }
                };
                let name = format!("payledger_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                Some(Self {
                    url: with_database(&admin, &name),
                    pg_name: Some(name),
                    _dir: None,
                })
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Best effort, on a thread of its own: Drop cannot await inside the test's runtime.
            let admin = pg_admin_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await
                        .ok()
                })
            })
            .join();
        }
    }
}

/// URL of the NATS server used by tests.
pub fn nats_url() -> String {
    std::env::var("PAYLEDGER_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string())
}

/// A client of the test NATS server, or `None` (after a loud message naming `what` is skipped)
/// when it is unreachable outside CI.
///
/// # Panics
/// When NATS is unreachable and `CI=true`.
pub async fn connect_nats(what: &str) -> Option<async_nats::Client> {
    let url = nats_url();
    match async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(url.as_str())
        .await
    {
        Ok(c) => Some(c),
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("NATS at {url} is unreachable and CI=true: {e}");
            }
            eprintln!("\n*** SKIPPING {what}: NATS at {url} unreachable ({e}) ***\n");
            None
        }
    }
}

/// Debian's headless browser and its WebDriver for the browser tests: `PAYLEDGER_TEST_CHROMIUM`
/// (default `/usr/bin/chromium`) and `PAYLEDGER_TEST_CHROMEDRIVER` (default
/// `/usr/bin/chromedriver`). `None` (after a loud message naming `what`) when either is missing
/// outside CI; `.ci/run` installs both.
///
/// # Panics
/// When either is missing and `CI=true`.
pub fn chromium(what: &str) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let path = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from(default))
    };
    let browser = path("PAYLEDGER_TEST_CHROMIUM", "/usr/bin/chromium");
    let driver = path("PAYLEDGER_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
    for p in [&browser, &driver] {
        if !p.exists() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "{} not found and CI=true: apt-get install chromium chromium-driver",
                    p.display()
                );
            }
            eprintln!("\n*** SKIPPING {what}: {} not found ***\n", p.display());
            return None;
        }
    }
    Some((browser, driver))
}
