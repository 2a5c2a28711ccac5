//! A runner that starts on an up-to-date checkpoint tells waiting readers so at its first step,
//! before any new event: after a restart on a quiet system, a list does not sit out the
//! read-your-writes timeout.

use std::time::Duration;

use chrono::Utc;
use payledger_domain::{ids, PaymentOrderCommand};
use payledger_projections::OrderProjection;
use payledger_store::subscription::{step_transactional, Progress};
use payledger_tests::{catch_up, migrated_database, sandbox_terms, Backend};

async fn a_restarted_runner_reports_its_checkpoint_before_any_new_event(backend: Backend) {
    let Some((_test_db, db)) = migrated_database(backend).await else {
        return;
    };
    let order_id = ids::order_id("m", payledger_domain::Mode::Test, "R-1");
    let create = PaymentOrderCommand::CreateOrder {
        order_id,
        terms: sandbox_terms("R-1", 100),
        created_at: Utc::now(),
    };
    db.execute(order_id, create, "test").await.unwrap();
    // The process before the restart projected everything.
    catch_up(&db, &OrderProjection::default()).await;
    let head = db.log().head().await.unwrap();

    // After the restart: a new runner, nothing new in the log.
    let restarted = OrderProjection::default();
    assert!(
        !restarted.wait_until(head, Duration::ZERO).await,
        "nothing said yet before the first step"
    );
    assert_eq!(step_transactional(&db, &restarted).await.unwrap(), Progress::CaughtUp);
    assert!(
        restarted.wait_until(head, Duration::ZERO).await,
        "the first step found the log read to its end and said so"
    );
}

payledger_tests::both_backends!(a_restarted_runner_reports_its_checkpoint_before_any_new_event);
