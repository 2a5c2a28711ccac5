//! Wake-ups across processes: when the roles run in several processes on one PostgreSQL
//! database, an append in one process wakes the subscribers of the others through PostgreSQL's
//! `LISTEN`/`NOTIFY` instead of leaving them to their next poll
//! ([`crate::subscription::POLL_INTERVAL_MS`]).
//!
//! - [`spawn_announcer`] (a process that appends): after this process's appends commit, one
//!   `NOTIFY` on [`LOG_CHANNEL`]. While one is in flight, further appends fold into the next, so
//!   under load it costs one small statement per round trip, not one per append. Off the
//!   command's path: a command never waits for it.
//! - [`spawn_listener`] (a process that runs subscribers): `LISTEN`s on [`LOG_CHANNEL`] on its
//!   own connection and wakes this process's subscribers ([`Database::notify_appended`]).
//!
//! A wake-up only says "look now"; what subscribers read is decided by the log, so a lost or
//! repeated notification costs latency, never an event: the poll remains the safety net. Only
//! appends announce (a wake-up received is not passed on), so processes never echo each other.
//! Neither runs on SQLite, whose processes share one file on one machine and poll it.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::task::JoinHandle;

use crate::db::{Backend, Database};

/// The PostgreSQL notification channel announcing appends.
pub const LOG_CHANNEL: &str = "payledger_log";
/// Pause before reconnecting a listener or announcer that failed.
pub const RECONNECT_DELAY_MS: u64 = 1_000;

/// Announces this process's appends to the other processes (see the module docs). `None` on
/// SQLite.
pub fn spawn_announcer(db: Database) -> Option<JoinHandle<()>> {
    if db.backend() != Backend::Postgres {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut appended = db.appended_here();
        while appended.changed().await.is_ok() {
            let sent = sqlx::query("SELECT pg_notify($1, '')")
                .bind(LOG_CHANNEL)
                .execute(db.pool())
                .await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "announcing an append to other processes failed; they will poll");
                tokio::time::sleep(Duration::from_millis(RECONNECT_DELAY_MS)).await;
            }
        }
    }))
}

/// Wakes this process's subscribers when another process announces an append (see the module
/// docs). `url` is the database's; `None` on SQLite.
pub fn spawn_listener(db: Database, url: String) -> Option<JoinHandle<()>> {
    if db.backend() != Backend::Postgres {
        return None;
    }
    Some(tokio::spawn(async move {
        loop {
            match listen(&db, &url).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "listening for other processes' appends failed; polling meanwhile")
                }
            }
            tokio::time::sleep(Duration::from_millis(RECONNECT_DELAY_MS)).await;
        }
    }))
}

async fn listen(db: &Database, url: &str) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(LOG_CHANNEL).await?;
    // Appends made while this listener was not yet listening are not announced to it.
    db.notify_appended();
    loop {
        listener.recv().await?;
        db.notify_appended();
    }
}
