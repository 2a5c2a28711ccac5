//! Console users load from their snapshot and the events after it: every console request loads
//! its user, and every action is one more event of that user. The snapshot is written with each
//! append, gives the same user as a fold from the first event, is the only thing read before its
//! sequence, and is ignored when of another fold's version. On both backends.

use chrono::Utc;
use payledger_domain::console::{console_user_id, ConsoleRole, ConsoleUser, ConsoleUserCommand, ConsoleUserEvent};
use payledger_store::console::{execute, load, users};
use payledger_store::Database;
use payledger_tests::{both_backends, migrated_database, Backend};
use uuid::Uuid;

const ACTIONS: usize = 300;

/// The user folded from every one of its events, as the audit log holds them.
async fn full_fold(db: &Database, user_id: Uuid) -> (ConsoleUser, i64) {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT sequence, payload FROM console_events WHERE aggregate_type = $1 AND aggregate_id = $2 \
         ORDER BY sequence",
    )
    .bind(ConsoleUser::TYPE)
    .bind(user_id.to_string())
    .fetch_all(db.pool())
    .await
    .expect("events");
    let events: Vec<ConsoleUserEvent> = rows
        .iter()
        .map(|(_, p)| serde_json::from_str(p).expect("event"))
        .collect();
    (ConsoleUser::from_events(&events), rows.last().map_or(0, |(s, _)| *s))
}

async fn snapshot(db: &Database, user_id: Uuid) -> Option<(i64, i64, String)> {
    sqlx::query_as("SELECT sequence, version, state FROM console_snapshots WHERE aggregate_id = $1")
        .bind(user_id.to_string())
        .fetch_optional(db.pool())
        .await
        .expect("snapshot")
}

async fn users_load_from_their_snapshot(backend: Backend) {
    let Some((_test_db, db)) = migrated_database(backend).await else {
        return;
    };
    let pool = db.pool();
    let email = "ops@example.com";
    let id = console_user_id(email);
    let now = Utc::now();
    execute(
        pool,
        id,
        ConsoleUserCommand::AddUser {
            email: email.into(),
            role: ConsoleRole::Support,
            merchant_id: None,
            password_hash: "$argon2id$test".into(),
            added_by: "test".into(),
            at: now,
        },
    )
    .await
    .expect("add");
    for k in 0..ACTIONS {
        execute(
            pool,
            id,
            ConsoleUserCommand::RecordAction {
                action: "resend".into(),
                target: format!("notification:{k}"),
                detail: String::new(),
                outcome: "ok".into(),
                address: "127.0.0.1".into(),
                at: now,
            },
        )
        .await
        .expect("action");
    }
    for reason in ["password", "totp"] {
        execute(
            pool,
            id,
            ConsoleUserCommand::RecordFailedLogin {
                address: "127.0.0.1".into(),
                reason: reason.into(),
                at: now,
            },
        )
        .await
        .expect("failed login");
    }
    let last = 1 + ACTIONS as i64 + 2;

    // Written with the last append, and the same user as the fold from the first event.
    let (sequence, version, _) = snapshot(&db, id).await.expect("a snapshot");
    assert_eq!((sequence, version), (last, ConsoleUser::SNAPSHOT_VERSION));
    let full = full_fold(&db, id).await;
    assert_eq!(full.1, last);
    assert_eq!(full.0.state().expect("a user").failures_in_row.len(), 2);
    assert_eq!(load(pool, id).await.expect("load"), full);
    assert_eq!(
        users(pool).await.expect("users"),
        vec![full.0.state().cloned().expect("a user")]
    );

    // Nothing before the snapshot's sequence is read: a snapshot that says otherwise is believed
    // (which is why the store alone writes them, in the appending transaction).
    let mut disabled: serde_json::Value =
        serde_json::from_str(&snapshot(&db, id).await.expect("snapshot").2).expect("json");
    disabled["state"]["disabled"] = serde_json::Value::Bool(true);
    sqlx::query("UPDATE console_snapshots SET state = $1 WHERE aggregate_id = $2")
        .bind(disabled.to_string())
        .bind(id.to_string())
        .execute(pool)
        .await
        .expect("update");
    assert!(load(pool, id).await.expect("load").0.state().expect("user").disabled);
    assert!(users(pool).await.expect("users")[0].disabled);

    // A snapshot of another fold's version is ignored: the fold starts from the first event.
    sqlx::query("UPDATE console_snapshots SET version = version + 1 WHERE aggregate_id = $1")
        .bind(id.to_string())
        .execute(pool)
        .await
        .expect("update");
    assert_eq!(load(pool, id).await.expect("load"), full);
    assert_eq!(
        users(pool).await.expect("users"),
        vec![full.0.state().cloned().expect("user")]
    );

    // Without one (a database from before snapshots), the same; the next append writes it.
    sqlx::query("DELETE FROM console_snapshots")
        .execute(pool)
        .await
        .expect("delete");
    assert_eq!(load(pool, id).await.expect("load"), full);
    execute(
        pool,
        id,
        ConsoleUserCommand::RecordLogin {
            address: "127.0.0.1".into(),
            totp_step: Some(7),
            at: now,
        },
    )
    .await
    .expect("login");
    let (sequence, _, _) = snapshot(&db, id).await.expect("written again");
    assert_eq!(sequence, last + 1);
    let after_login = full_fold(&db, id).await;
    assert!(after_login.0.state().expect("user").failures_in_row.is_empty());
    assert_eq!(after_login.0.state().expect("user").last_totp_step, Some(7));
    assert_eq!(load(pool, id).await.expect("load"), after_login);
    db.close().await;
}

both_backends!(users_load_from_their_snapshot);
