//! Group commit (`payledger_store::append`): many commands' appends in one transaction, each
//! still optimistic on its own order, behind a bounded queue.

use std::time::Duration;

use payledger_store::append::{
    AppendError, SerializedEvent, APPEND_BATCH_COMMANDS_MAX, APPEND_QUEUE_MAX, POSTGRES_COMMITTERS,
};
use payledger_store::Database;
use payledger_tests::{migrated_database, Backend};
use sqlx::Row;

/// Rows for `aggregate_id` at `sequences`. The payload is not a real event: these tests read
/// the rows back by key only, and no subscriber runs.
fn rows(aggregate_id: &str, sequences: &[usize]) -> Vec<SerializedEvent> {
    sequences
        .iter()
        .map(|&sequence| SerializedEvent {
            aggregate_id: aggregate_id.into(),
            sequence,
            aggregate_type: "PaymentOrder".into(),
            event_type: "TestRow".into(),
            event_version: "1".into(),
            payload: serde_json::json!({ "n": sequence }),
            metadata: serde_json::json!({ "actor": "test" }),
        })
        .collect()
}

/// Holds every append of `db` back until dropped: on SQLite the process's write turn (which
/// the committer takes), on PostgreSQL a lock on `events` that blocks inserts.
enum Hold {
    Sqlite(#[allow(dead_code)] tokio::sync::OwnedMutexGuard<()>),
    Postgres(#[allow(dead_code)] sqlx::Transaction<'static, sqlx::Any>),
}

async fn hold_appends(db: &Database) -> Hold {
    match db.write_turn().await {
        Some(turn) => Hold::Sqlite(turn),
        None => {
            let mut tx = db.pool().begin().await.unwrap();
            sqlx::query("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await
                .unwrap();
            Hold::Postgres(tx)
        }
    }
}

/// `(aggregate_id, sequence)` of every stored row, sorted.
async fn stored(db: &Database) -> Vec<(String, i64)> {
    let rows = sqlx::query("SELECT aggregate_id, sequence FROM events ORDER BY aggregate_id, sequence")
        .fetch_all(db.pool())
        .await
        .unwrap();
    rows.iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect()
}

fn spawn_append(
    db: &Database,
    aggregate_id: &str,
    sequences: &[usize],
) -> tokio::task::JoinHandle<Result<(), AppendError>> {
    let appender = db.orders().appender().clone();
    let (id, rows) = (aggregate_id.to_string(), rows(aggregate_id, sequences));
    tokio::spawn(async move { appender.append(id, rows).await })
}

async fn a_conflict_answers_only_its_own_command(backend: Backend) {
    let Some((_test_db, db)) = migrated_database(backend).await else {
        return;
    };
    let appender = db.orders().appender().clone();
    // Another writer's rows: X has its first event, Y (oddly) only its second.
    appender.append("X".into(), rows("X", &[1])).await.unwrap();
    appender.append("Y".into(), rows("Y", &[2])).await.unwrap();

    // Held back, so that the four queue up and are written in one batch: fillers first keep
    // every committer busy (each takes one and waits on the hold).
    let hold = hold_appends(&db).await;
    let fillers = occupy_committers(&db).await;
    let a = spawn_append(&db, "A", &[1]);
    let x = spawn_append(&db, "X", &[1]); // stale: X's 1 is taken, nothing of it may land
    let b = spawn_append(&db, "B", &[1, 2]);
    let y = spawn_append(&db, "Y", &[1, 2]); // partly taken: its 1 alone must not land
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(hold);

    for filler in fillers {
        filler.await.unwrap().unwrap();
    }
    assert!(a.await.unwrap().is_ok());
    assert!(matches!(x.await.unwrap(), Err(AppendError::Conflict)));
    assert!(b.await.unwrap().is_ok());
    assert!(matches!(y.await.unwrap(), Err(AppendError::Conflict)));
    let mut expected: Vec<(String, i64)> = [("A", 1), ("B", 1), ("B", 2), ("X", 1), ("Y", 2)]
        .iter()
        .map(|(a, s)| (a.to_string(), *s))
        .collect();
    expected.extend((0..POSTGRES_COMMITTERS).map(|i| (format!("F-{i}"), 1)));
    expected.sort();
    assert_eq!(stored(&db).await, expected, "the stored rows");
}

/// Spawns one append per committer and waits until each committer holds one (they block on
/// the hold), so that what is spawned next queues up for one batch.
async fn occupy_committers(db: &Database) -> Vec<tokio::task::JoinHandle<Result<(), AppendError>>> {
    let mut fillers = Vec::new();
    for i in 0..POSTGRES_COMMITTERS {
        fillers.push(spawn_append(db, &format!("F-{i}"), &[1]));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    fillers
}

async fn a_refused_row_fails_only_its_command_and_a_caller_gone_stores_nothing(backend: Backend) {
    let Some((_test_db, db)) = migrated_database(backend).await else {
        return;
    };
    let hold = hold_appends(&db).await;
    let fillers = occupy_committers(&db).await;
    let a = spawn_append(&db, "A", &[1]);
    let refused = spawn_append(&db, "Z", &[0]); // sequence 0 breaks the table's CHECK
    let gone = spawn_append(&db, "C", &[1]);
    let b = spawn_append(&db, "B", &[1]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    gone.abort(); // its caller stops waiting before the batch is written
    drop(hold);

    for filler in fillers {
        filler.await.unwrap().unwrap();
    }
    assert!(a.await.unwrap().is_ok(), "a good command beside a refused row commits");
    assert!(b.await.unwrap().is_ok(), "a good command beside a refused row commits");
    assert!(matches!(refused.await.unwrap(), Err(AppendError::Failed(_))));
    let names: Vec<String> = stored(&db).await.into_iter().map(|(a, _)| a).collect();
    assert!(
        names.contains(&"A".to_string()) && names.contains(&"B".to_string()),
        "{names:?}"
    );
    assert!(!names.contains(&"Z".to_string()), "{names:?}");
    assert!(
        !names.contains(&"C".to_string()),
        "an abandoned append was stored: {names:?}"
    );
}

async fn queued_commands_share_transactions(backend: Backend) {
    let Some((_test_db, db)) = migrated_database(backend).await else {
        return;
    };
    let hold = hold_appends(&db).await;
    let commands = 200;
    let appends: Vec<_> = (0..commands)
        .map(|i| spawn_append(&db, &format!("G-{i}"), &[1, 2]))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(hold);
    for append in appends {
        append.await.unwrap().unwrap();
    }
    assert_eq!(stored(&db).await.len(), 2 * commands);
    if backend == Backend::Postgres {
        // Each committer had taken one batch before the hold; the rest waited in the queue and
        // went in together, up to a batch's limit each.
        let transactions: i64 = sqlx::query("SELECT count(DISTINCT transaction_id)::bigint FROM events")
            .fetch_one(db.pool())
            .await
            .unwrap()
            .get(0);
        let most = POSTGRES_COMMITTERS + commands.div_ceil(APPEND_BATCH_COMMANDS_MAX);
        assert!(
            transactions as usize <= most,
            "{commands} commands in {transactions} transactions"
        );
    }
}

async fn a_full_queue_answers_overloaded_and_loses_nothing_it_accepted(backend: Backend) {
    let Some((_test_db, db)) = migrated_database(backend).await else {
        return;
    };
    let hold = hold_appends(&db).await;
    // More than the committers can hold (one batch each) plus the queue.
    let total = APPEND_QUEUE_MAX + POSTGRES_COMMITTERS * APPEND_BATCH_COMMANDS_MAX + 50;
    let appends: Vec<_> = (0..total).map(|i| spawn_append(&db, &format!("Q-{i}"), &[1])).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(hold);
    let (mut appended, mut overloaded) = (0, 0);
    for append in appends {
        match append.await.unwrap() {
            Ok(()) => appended += 1,
            Err(AppendError::Overloaded) => overloaded += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert!(overloaded >= 50, "{overloaded} of {total} refused");
    assert_eq!(appended + overloaded, total);
    assert_eq!(stored(&db).await.len(), appended, "every accepted append is stored");
}

payledger_tests::both_backends!(
    a_conflict_answers_only_its_own_command,
    a_refused_row_fails_only_its_command_and_a_caller_gone_stores_nothing,
    queued_commands_share_transactions,
    a_full_queue_answers_overloaded_and_loses_nothing_it_accepted
);
