//! The bounded run of the subscriber step (`subscription::catch_up`, what replay and verify use):
//! it stops exactly at `until`, reads ahead in batches without losing or repeating an event,
//! gives a newcomer running beside an up-to-date subscriber only what each lacks, and picks up
//! from a checkpoint someone else moved.

use std::sync::Mutex;

use async_trait::async_trait;
use chrono::Utc;
use payledger_domain::{ids, PaymentOrderCommand};
use payledger_store::subscription::{
    catch_up, checkpoint, save_checkpoint, CatchUp, SubscriberError, TransactionalSubscriber,
};
use payledger_store::{Database, LogEvent, LogPosition};
use payledger_tests::{committed_events, migrated_database, sandbox_terms, Backend};
use sqlx::AnyConnection;

/// Records the positions it was given, and writes nothing.
struct Recorder {
    name: &'static str,
    seen: Mutex<Vec<LogPosition>>,
}

impl Recorder {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            seen: Mutex::new(Vec::new()),
        }
    }

    fn seen(&self) -> Vec<LogPosition> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait]
impl TransactionalSubscriber for Recorder {
    fn name(&self) -> &str {
        self.name
    }

    async fn apply(&self, _tx: &mut AnyConnection, events: &[LogEvent]) -> Result<(), SubscriberError> {
        self.seen.lock().unwrap().extend(events.iter().map(|e| e.position));
        Ok(())
    }
}

fn run(until: Option<LogPosition>) -> CatchUp {
    CatchUp {
        until,
        batch_size: 3,
        read_ahead: 2,
        durable: true,
    }
}

async fn create_orders(db: &Database, from: usize, to: usize) {
    for n in from..to {
        let out_trade_no = format!("C-{n}");
        let order_id = ids::order_id("m", payledger_domain::Mode::Test, &out_trade_no);
        let create = PaymentOrderCommand::CreateOrder {
            order_id,
            terms: sandbox_terms(&out_trade_no, 100),
            created_at: Utc::now(),
        };
        db.execute(order_id, create, "test").await.unwrap();
    }
}

async fn a_bounded_run_stops_at_until_and_resumes_without_gaps(backend: Backend) {
    let Some((_test_db, db)) = migrated_database(backend).await else {
        return;
    };
    create_orders(&db, 0, 8).await;
    let log: Vec<LogPosition> = committed_events(&db).await.iter().map(|e| e.position).collect();
    assert_eq!(log.len(), 8, "one OrderCreated per order");
    let counted = std::sync::atomic::AtomicU64::new(0);
    let progress = |n: u64| {
        counted.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    };

    let first = Recorder::new("catch_up_first");
    let applied = catch_up(&db, &[&first], run(Some(log[4])), &progress).await.unwrap();
    assert_eq!(applied, 5, "events up to and including `until`");
    assert_eq!(first.seen(), log[..5].to_vec());
    assert_eq!(checkpoint(db.pool(), "catch_up_first").await.unwrap(), log[4]);

    let applied = catch_up(&db, &[&first], run(None), &progress).await.unwrap();
    assert_eq!(applied, 3);
    assert_eq!(first.seen(), log, "every event once, in log order");
    assert_eq!(catch_up(&db, &[&first], run(None), &progress).await.unwrap(), 0);
    assert_eq!(
        counted.load(std::sync::atomic::Ordering::Relaxed),
        8,
        "progress told of each batch"
    );

    // A newcomer beside the up-to-date subscriber: the newcomer gets everything, the other only
    // what arrived since its checkpoint.
    create_orders(&db, 8, 10).await;
    let log: Vec<LogPosition> = committed_events(&db).await.iter().map(|e| e.position).collect();
    let newcomer = Recorder::new("catch_up_newcomer");
    let applied = catch_up(&db, &[&newcomer, &first], run(None), &|_| {}).await.unwrap();
    assert_eq!(applied, 10, "the batches start at the lowest checkpoint");
    assert_eq!(newcomer.seen(), log);
    assert_eq!(first.seen(), log, "no event twice for the subscriber that had it");
    for name in ["catch_up_first", "catch_up_newcomer"] {
        assert_eq!(checkpoint(db.pool(), name).await.unwrap(), log[9], "{name}");
    }

    // Someone else moves the checkpoint back (as a second runner's view could differ): the run
    // starts from the stored position, not from what it read ahead last time.
    save_checkpoint(db.pool(), "catch_up_first", log[6]).await.unwrap();
    let again = Recorder::new("catch_up_first");
    assert_eq!(catch_up(&db, &[&again], run(None), &|_| {}).await.unwrap(), 3);
    assert_eq!(again.seen(), log[7..].to_vec());
    db.close().await;
}

payledger_tests::both_backends!(a_bounded_run_stops_at_until_and_resumes_without_gaps);
