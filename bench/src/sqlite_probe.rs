//! The embedded SQLite default's own limit: the event store's append transaction (read the
//! order's events, insert one, commit) run back to back by one writer on a migrated file with
//! the server's settings (WAL, `synchronous=FULL`). SQLite has one writer, so more clients
//! cannot raise this; it is what the server's SQLite phases are compared with, as pgbench is
//! for PostgreSQL.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection};

/// What the probe measured.
#[derive(Debug, Clone, Serialize)]
pub struct SqliteAppendProbe {
    /// Append transactions committed.
    pub transactions: u64,
    /// Per second of the measured time.
    pub tps: f64,
}

/// Runs the append transaction for `duration` on the migrated SQLite file `path`.
///
/// # Errors
/// When the file cannot be opened or a statement fails.
pub async fn run(path: &Path, duration: Duration) -> anyhow::Result<SqliteAppendProbe> {
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10));
    let mut conn = SqliteConnection::connect_with(&options).await?;
    let started = Instant::now();
    let mut transactions = 0u64;
    while started.elapsed() < duration {
        let id = uuid::Uuid::new_v4().to_string();
        let mut tx = conn.begin().await?;
        sqlx::query(
            "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata \
             FROM events WHERE aggregate_type = 'PaymentOrder' AND aggregate_id = $1 ORDER BY sequence",
        )
        .bind(&id)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             VALUES ('PaymentOrder', $1, 1, 'OrderCreated', '1', $2, '{\"actor\": \"merchant/bench-01\"}')",
        )
        .bind(&id)
        .bind(crate::pgbench::SAMPLE_PAYLOAD)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        transactions += 1;
    }
    let wall = started.elapsed().as_secs_f64();
    conn.close().await.ok();
    Ok(SqliteAppendProbe {
        transactions,
        tps: transactions as f64 / wall,
    })
}
