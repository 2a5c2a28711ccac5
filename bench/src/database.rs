//! Fresh PostgreSQL databases for a run (one for payledger, one for pgbench), the server's
//! durability settings, and the sandbox secret the server keeps in its `settings` table.

use anyhow::Context;
use serde::Serialize;
use sqlx::{Connection, PgConnection};
use url::Url;

/// The settings key of the sandbox's callback secret (`payledger_command_api::app::SANDBOX_SECRET_KEY`).
pub use payledger_command_api::app::SANDBOX_SECRET_KEY;

/// A database this run created on the PostgreSQL server of `admin_url`; dropped by [`drop`].
#[derive(Debug, Clone)]
pub struct FreshDatabase {
    /// The database's name.
    pub name: String,
    /// A URL to it: the admin URL with the database's name as path.
    pub url: String,
}

/// `admin_url` with its path (the database name) replaced by `name`.
///
/// # Errors
/// When `admin_url` is not a URL.
pub fn with_database(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let mut url = Url::parse(admin_url).with_context(|| format!("not a database URL: {admin_url}"))?;
    url.set_path(&format!("/{name}"));
    Ok(url.into())
}

/// Creates database `payledger_bench_<suffix>` on the server of `admin_url`.
///
/// # Errors
/// When the server cannot be reached or refuses to create it.
pub async fn create(admin_url: &str, suffix: &str) -> anyhow::Result<FreshDatabase> {
    let name = format!("payledger_bench_{suffix}");
    let mut admin = PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {admin_url}"))?;
    // The name is ours (letters, digits, _): quoting is enough.
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .with_context(|| format!("creating database {name}"))?;
    admin.close().await.ok();
    Ok(FreshDatabase {
        url: with_database(admin_url, &name)?,
        name,
    })
}

/// Drops `db` (closing its other sessions).
///
/// # Errors
/// When the server cannot be reached or refuses.
pub async fn drop(admin_url: &str, db: &FreshDatabase) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(admin_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", db.name))
        .execute(&mut admin)
        .await
        .with_context(|| format!("dropping database {}", db.name))?;
    admin.close().await.ok();
    Ok(())
}

/// The PostgreSQL server settings that decide what a commit costs.
#[derive(Debug, Clone, Serialize)]
pub struct Durability {
    /// `on` is the durable setting the benchmark is meant for.
    pub synchronous_commit: String,
    pub fsync: String,
    pub wal_sync_method: String,
    pub commit_delay: String,
    pub server_version: String,
}

/// Reads [`Durability`] from the server of `url`.
///
/// # Errors
/// When the server cannot be reached.
pub async fn durability(url: &str) -> anyhow::Result<Durability> {
    let mut conn = PgConnection::connect(url).await?;
    let mut show = async |name: &str| -> anyhow::Result<String> {
        Ok(sqlx::query_scalar::<_, String>(&format!("SHOW {name}"))
            .fetch_one(&mut conn)
            .await?)
    };
    let d = Durability {
        synchronous_commit: show("synchronous_commit").await?,
        fsync: show("fsync").await?,
        wal_sync_method: show("wal_sync_method").await?,
        commit_delay: show("commit_delay").await?,
        server_version: show("server_version").await?,
    };
    conn.close().await.ok();
    Ok(d)
}

/// The sandbox callback secret the server stored at start, read from its database (`postgres://…`
/// or `sqlite://FILE`) and opened with the server's secrets key file `key_file`.
///
/// # Errors
/// When the database cannot be read, holds no secret yet, or the key does not open it.
pub async fn sandbox_secret(database_url: &str, key_file: &std::path::Path) -> anyhow::Result<String> {
    let keyring = payledger_store::sealed::Keyring::load_file(key_file)?;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(database_url)
        .await
        .with_context(|| format!("connecting to {database_url}"))?;
    let secret: String = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(SANDBOX_SECRET_KEY)
        .fetch_one(&mut conn)
        .await
        .context("reading the sandbox secret from settings")?;
    conn.close().await.ok();
    let place = payledger_store::settings::secret_place(SANDBOX_SECRET_KEY);
    Ok(keyring.open(&secret, &place)?)
}

/// PostgreSQL's next transaction id (`pg_snapshot_xmax` of a fresh snapshot). The difference
/// of two readings is how many write transactions (each a commit with its WAL flush, or an
/// abort) the whole server started in between: exact and immediate, unlike `pg_stat_database`,
/// whose counters other sessions publish up to seconds late. Read-only transactions take no id.
///
/// # Errors
/// When the server cannot be reached.
pub async fn next_transaction_id(url: &str) -> anyhow::Result<i64> {
    let mut conn = PgConnection::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let next: i64 = sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await.ok();
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_keeps_host_and_parameters() {
        let url = with_database(
            "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
            "payledger_bench_x",
        )
        .expect("url");
        assert_eq!(
            url,
            "postgres://postgres@127.0.0.1:5432/payledger_bench_x?sslmode=disable"
        );
    }
}
