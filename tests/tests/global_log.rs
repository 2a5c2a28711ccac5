//! The global log's ordering rule on PostgreSQL: a transaction that took its position early but
//! commits late is never skipped, and readers are told when committed events are held back.

use chrono::Utc;
use payledger_domain::{ids, OrderTerms, PaymentOrderCommand, PaymentOrderEvent};
use payledger_store::{Database, LogPosition, PoolConfig};
use payledger_tests::{sandbox_terms, Backend, TestDb};
use sqlx::Connection;

fn terms(out_trade_no: &str) -> OrderTerms {
    sandbox_terms(out_trade_no, 100)
}

#[tokio::test]
async fn a_late_committing_event_is_held_back_not_skipped() {
    let Some(test_db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let db = Database::connect(Some(&test_db.url), PoolConfig::default())
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let log = db.log();

    // Transaction "late" appends order X first (smaller position) and stays open.
    let x = ids::order_id("m", payledger_domain::Mode::Test, "X");
    let created_x = PaymentOrderEvent::OrderCreated {
        order_id: x,
        terms: terms("X"),
        created_at: Utc::now(),
        expire_at: Utc::now(),
    };
    let mut late = sqlx::PgConnection::connect(&test_db.url).await.unwrap();
    let mut late_tx = late.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('PaymentOrder', $1, 1, 'OrderCreated', '1.0', $2, '{}')",
    )
    .bind(x.to_string())
    .bind(serde_json::to_value(&created_x).unwrap())
    .execute(&mut *late_tx)
    .await
    .unwrap();

    // Order Y commits meanwhile, with a larger position and a larger transaction id.
    let y = ids::order_id("m", payledger_domain::Mode::Test, "Y");
    let cmd = PaymentOrderCommand::CreateOrder {
        order_id: y,
        terms: terms("Y"),
        created_at: Utc::now(),
    };
    db.execute(y, cmd, "test").await.unwrap();

    // Y is committed but must not be read yet: reading it would move a checkpoint past X.
    let start = LogPosition::default();
    assert!(log.read_after(start, 100).await.unwrap().is_empty());
    assert!(log.held_back(start).await.unwrap(), "Y is committed and held back");

    late_tx.commit().await.unwrap();
    // Read as subscribers do, waiting out the horizon: pg_snapshot_xmin is cluster-wide, so a
    // transaction of a test running beside this one (a migration) can hold it back briefly.
    let events = payledger_tests::committed_events(&db).await;
    let order: Vec<_> = events.iter().map(|e| e.order_id).collect();
    assert_eq!(order, vec![x, y], "commit order of transactions, X's first");
    assert!(events[0].position < events[1].position);
    assert!(!log.held_back(events[1].position).await.unwrap());
    assert!(log.read_after(events[1].position, 100).await.unwrap().is_empty());
    // Events are facts: the store refuses to change them.
    assert!(sqlx::query("DELETE FROM events").execute(db.pool()).await.is_err());
    assert!(sqlx::query("UPDATE events SET event_version = '9'")
        .execute(db.pool())
        .await
        .is_err());
    db.close().await;
}

#[tokio::test]
async fn the_sqlite_log_is_in_insert_order_and_never_held_back() {
    let test_db = TestDb::create(Backend::Sqlite).await.unwrap();
    let db = Database::connect(Some(&test_db.url), PoolConfig::default())
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let mut expected = vec![];
    for no in ["A", "B", "C"] {
        let id = ids::order_id("m", payledger_domain::Mode::Test, no);
        let cmd = PaymentOrderCommand::CreateOrder {
            order_id: id,
            terms: terms(no),
            created_at: Utc::now(),
        };
        db.execute(id, cmd, "test").await.unwrap();
        expected.push(id);
    }
    let events = db.log().read_after(LogPosition::default(), 2).await.unwrap();
    assert_eq!(events.iter().map(|e| e.order_id).collect::<Vec<_>>(), expected[..2]);
    let rest = db.log().read_after(events[1].position, 100).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.order_id).collect::<Vec<_>>(), expected[2..]);
    assert!(!db.log().held_back(LogPosition::default()).await.unwrap());
    // Events are facts: the store refuses to change them.
    assert!(sqlx::query("DELETE FROM events").execute(db.pool()).await.is_err());
    assert!(sqlx::query("UPDATE events SET payload = '{}'")
        .execute(db.pool())
        .await
        .is_err());
    db.close().await;
}

/// Roles split over processes: an append in one process wakes the subscribers of another at
/// once (`LISTEN`/`NOTIFY`), and a wake-up received is not announced again.
#[tokio::test]
async fn an_append_in_one_process_wakes_the_subscribers_of_another() {
    use payledger_store::wake;
    use std::time::Duration;
    let Some(test_db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let api = Database::connect(Some(&test_db.url), PoolConfig::default())
        .await
        .unwrap();
    api.migrate().await.unwrap();
    let worker = Database::connect(Some(&test_db.url), PoolConfig::default())
        .await
        .unwrap();
    let mut woken = worker.appended();
    let listener = wake::spawn_listener(worker.clone(), test_db.url.clone()).expect("postgres listens");
    let announcer = wake::spawn_announcer(api.clone()).expect("postgres announces");
    // The listener wakes its subscribers once when it starts listening.
    tokio::time::timeout(Duration::from_secs(10), woken.changed())
        .await
        .expect("the listener started")
        .unwrap();
    let echoed = worker.appended_here();

    let order_id = ids::order_id("m", payledger_domain::Mode::Test, "W");
    let cmd = PaymentOrderCommand::CreateOrder {
        order_id,
        terms: terms("W"),
        created_at: Utc::now(),
    };
    api.execute(order_id, cmd, "test").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), woken.changed())
        .await
        .expect("the other process's subscribers were not woken by the append")
        .unwrap();
    assert!(
        !echoed.has_changed().unwrap(),
        "a wake-up received counted as this process's own append"
    );
    listener.abort();
    announcer.abort();
}
