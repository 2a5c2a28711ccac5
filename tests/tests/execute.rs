//! `Database::execute_with`: one load per attempt, and `Start::New` never trusted past an append.

use chrono::Utc;
use payledger_domain::{ids, PaymentOrder, PaymentOrderCommand};
use payledger_store::{ExecuteError, Start};
use payledger_tests::{migrated_database, sandbox_terms, Backend};

fn create(out_trade_no: &str, amount: i64) -> PaymentOrderCommand {
    PaymentOrderCommand::CreateOrder {
        order_id: ids::order_id("m", payledger_domain::Mode::Test, out_trade_no),
        terms: sandbox_terms(out_trade_no, amount),
        created_at: Utc::now(),
    }
}

async fn starting_new_is_trusted_only_for_an_append(backend: Backend) {
    let Some((_test_db, db)) = migrated_database(backend).await else {
        return;
    };
    let order_id = ids::order_id("m", payledger_domain::Mode::Test, "N-1");
    let new = |command: PaymentOrderCommand| {
        let db = db.clone();
        async move {
            db.execute_with(order_id, "test", Start::New, move |_: &PaymentOrder| {
                Ok::<_, ExecuteError>(command.clone())
            })
            .await
        }
    };

    // A new order: appended from the empty state.
    let first = new(create("N-1", 100)).await.unwrap();
    assert_eq!((first.events.len(), first.sequence), (1, 1));
    // The same create again, wrongly started as new: the append conflicts, the retry loads the
    // order and finds a repeat (nothing appended), not a second OrderCreated.
    let again = new(create("N-1", 100)).await.unwrap();
    assert_eq!((again.events.len(), again.sequence), (0, 1));
    // Other terms, wrongly started as new: refused on the loaded order.
    match new(create("N-1", 200)).await {
        Err(ExecuteError::Rejected(_)) => {}
        other => panic!("a conflicting create was not refused: {other:?}"),
    }
    assert_eq!(db.log().order_events(order_id).await.unwrap().len(), 1);
}

async fn a_refusal_of_decide_stores_nothing_and_is_returned_as_is(backend: Backend) {
    let Some((_test_db, db)) = migrated_database(backend).await else {
        return;
    };
    let order_id = ids::order_id("m", payledger_domain::Mode::Test, "D-1");
    db.execute(order_id, create("D-1", 100), "test").await.unwrap();
    #[derive(Debug, PartialEq)]
    enum Refusal {
        NotMine(String),
        Store,
    }
    impl From<ExecuteError> for Refusal {
        fn from(_: ExecuteError) -> Self {
            Refusal::Store
        }
    }
    let refused = db
        .execute_with(order_id, "test", Start::Load, |order: &PaymentOrder| {
            let owner = order
                .order
                .as_ref()
                .map(|o| o.terms.merchant_id.clone())
                .unwrap_or_default();
            Err::<PaymentOrderCommand, _>(Refusal::NotMine(owner))
        })
        .await
        .unwrap_err();
    assert_eq!(refused, Refusal::NotMine("m".into()), "decide saw the loaded order");
    assert_eq!(db.log().order_events(order_id).await.unwrap().len(), 1);
}

payledger_tests::both_backends!(
    starting_new_is_trusted_only_for_an_append,
    a_refusal_of_decide_stores_nothing_and_is_returned_as_is
);
