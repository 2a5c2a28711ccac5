//! `reconcile --verify` compares on a snapshot: the live projections' lock is held only to take
//! it, so the live projector keeps applying events while verify compares, and the comparison is
//! still exact (clean, though the live tables moved on meanwhile).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use payledger_projections::rebuild::{self, Projection};
use payledger_store::subscription::checkpoint;
use payledger_tests::flows::{create_id, order_body, pay, wait_status};
use payledger_tests::{both_backends, eventually, Backend, TestServer};

/// How long the live projector is given to apply an event while verify compares. It applies
/// one within milliseconds when nothing holds its lock.
const ADVANCE_WITHIN: Duration = Duration::from_secs(5);

async fn the_live_projector_advances_while_verify_compares(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let paid = create_id(&s, &m.api_key, &order_body("T-0", 1000)).await;
    assert_eq!(pay(&s, &paid, "success").await.status, 200);
    wait_status(&s, &m.api_key, &paid, "paid").await;

    // While verify compares each projection: a new order over HTTP, and the live projection's
    // checkpoint must reach it.
    let advanced: Arc<Mutex<Vec<(Projection, bool)>>> = Arc::default();
    let (db, http, base, key) = (s.database().clone(), s.http.clone(), s.base.clone(), m.api_key.clone());
    let seen = advanced.clone();
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hook = move |p: Projection| -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let (db, http, base, key, seen, counter) = (
            db.clone(),
            http.clone(),
            base.clone(),
            key.clone(),
            seen.clone(),
            counter.clone(),
        );
        Box::pin(async move {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let r = http
                .post(format!("{base}/v1/orders"))
                .bearer_auth(&key)
                .json(&order_body(&format!("DURING-{n}"), 100))
                .send()
                .await
                .expect("request sent");
            assert_eq!(r.status().as_u16(), 201, "an order created while verify compares");
            let head = db.log().head().await.expect("head");
            let reached = eventually(ADVANCE_WITHIN, || async {
                (checkpoint(db.pool(), p.name()).await.expect("checkpoint") >= head).then_some(())
            })
            .await
            .is_some();
            seen.lock().expect("lock").push((p, reached));
        })
    };
    let report = rebuild::verify_with(s.database(), &|_| {}, Some(&hook))
        .await
        .expect("verify");
    assert_eq!(
        *advanced.lock().expect("lock"),
        vec![(Projection::OrderView, true), (Projection::Journal, true)],
        "the live projector did not advance while verify compared"
    );
    // The comparison saw live and replayed tables at one position, though the live ones moved on.
    assert!(report.is_clean(), "{report:?}");
    assert!(report.rows_compared > 0);
    // And the live tables hold what arrived meanwhile.
    let clean = rebuild::verify(s.database(), &|_| {}).await.expect("verify again");
    assert!(clean.is_clean(), "{clean:?}");
}

both_backends!(the_live_projector_advances_while_verify_compares);
