//! The read models beside the append. On SQLite the committer applies the process's read
//! models to each batch of appends in the append's own transaction (`run_transactional` hands it
//! its group), so a command's order view is written when the command is answered. A read model
//! that fails there never costs the command: its part is undone in a savepoint, the events
//! commit, and the runner applies them once the read model works again. Both backends share
//! the failure scenario; PostgreSQL's committers do not apply read models, so the "written when
//! answered" checks are SQLite's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use payledger_domain::{ids, Mode, PaymentOrderCommand};
use payledger_projections::OrderProjection;
use payledger_store::subscription::{run_transactional, SubscriberError, TransactionalSubscriber};
use payledger_store::{Database, LogEvent};
use payledger_tests::{eventually, migrated_database, sandbox_terms, Backend};
use uuid::Uuid;

/// A read model that refuses every batch while `failing` is set, and writes nothing.
struct Refusing {
    failing: AtomicBool,
}

#[async_trait]
impl TransactionalSubscriber for Refusing {
    fn name(&self) -> &str {
        "test_refusing"
    }

    async fn apply(&self, _tx: &mut sqlx::AnyConnection, _events: &[LogEvent]) -> Result<(), SubscriberError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(SubscriberError::Failed("refused on purpose".into()))
        } else {
            Ok(())
        }
    }
}

async fn create(db: &Database, out_trade_no: &str) -> Uuid {
    let order_id = ids::order_id("m", Mode::Test, out_trade_no);
    let command = PaymentOrderCommand::CreateOrder {
        order_id,
        terms: sandbox_terms(out_trade_no, 100),
        created_at: Utc::now(),
    };
    let executed = db.execute(order_id, command, "test").await.expect("create");
    assert_eq!(executed.events.len(), 1, "a new order");
    order_id
}

async fn viewed(db: &Database, order_id: Uuid) -> bool {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM order_view WHERE order_id = $1")
        .bind(order_id.to_string())
        .fetch_one(db.pool())
        .await
        .expect("order_view");
    n == 1
}

async fn a_failing_read_model_never_costs_the_command(backend: Backend) {
    let Some((_test_db, db)) = migrated_database(backend).await else {
        return;
    };
    let refusing = Arc::new(Refusing {
        failing: AtomicBool::new(true),
    });
    let runner = tokio::spawn(run_transactional(
        db.clone(),
        vec![Arc::new(OrderProjection::default()), refusing.clone()],
    ));

    // The group's batch fails (its other member's writes with it), the command does not.
    let first = create(&db, "INLINE-1").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !viewed(&db, first).await,
        "order_view's writes were undone with the failing member's"
    );
    assert_eq!(
        db.log().order_events(first).await.unwrap().len(),
        1,
        "the event is stored"
    );

    // Once the read model works again, the runner applies what was left to it.
    refusing.failing.store(false, Ordering::SeqCst);
    let caught_up = eventually(Duration::from_secs(10), || async {
        viewed(&db, first).await.then_some(())
    })
    .await;
    assert!(
        caught_up.is_some(),
        "the runner applied the event the failing batch left"
    );

    if backend == Backend::Sqlite {
        // Caught up again: every later command's view is written in its own append.
        for n in 2..=21 {
            let order_id = create(&db, &format!("INLINE-{n}")).await;
            assert!(
                viewed(&db, order_id).await,
                "order {n}'s view was committed with its event, before the command was answered"
            );
        }
    }
    runner.abort();
}

/// With no runner, nothing applies read models on the append path: the views wait for one.
async fn without_a_runner_the_append_writes_events_only(backend: Backend) {
    let Some((_test_db, db)) = migrated_database(backend).await else {
        return;
    };
    let runner = tokio::spawn(run_transactional(
        db.clone(),
        vec![Arc::new(OrderProjection::default())],
    ));
    let early = create(&db, "RUNNER-1").await;
    let seen = eventually(Duration::from_secs(10), || async {
        viewed(&db, early).await.then_some(())
    })
    .await;
    assert!(seen.is_some(), "the running read model saw the first order");
    runner.abort();
    let _ = runner.await;

    // The aborted runner's group is gone from the committer too.
    let late = create(&db, "RUNNER-2").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!viewed(&db, late).await, "no read model runs, so no view");
}

payledger_tests::both_backends!(
    a_failing_read_model_never_costs_the_command,
    without_a_runner_the_append_writes_events_only,
);
