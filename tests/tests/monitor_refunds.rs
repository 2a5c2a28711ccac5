//! The order monitor sweeps refunds left pending in the store: a `RefundRequested` that never
//! reached a refund worker (NATS: gone from the stream after its retention while the refunds
//! consumer was down) is still executed, through the refund worker's own flow.

use payledger_channel_adapters::sandbox::FAIL_REFUND_REASON;
use payledger_command_api::workers::monitor::MonitorConfig;
use payledger_tests::flows::{create_id, order_body, pay, wait_status, WAIT};
use payledger_tests::{both_backends, eventually, Backend, TestServer};
use serde_json::{json, Value};

async fn a_refund_no_refund_worker_received_is_completed_by_the_monitor(backend: Backend) {
    // No `refunds` role anywhere: nothing but the monitor can execute the refunds.
    let Some(s) = TestServer::start_with_config(backend, |c| {
        c.roles = "api,projector,notifier,monitor".parse().expect("roles");
        c.monitor = MonitorConfig {
            interval_ms: 100,
            refund_age_ms: 300,
            ..MonitorConfig::default()
        };
    })
    .await
    else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let key = m.api_key.as_str();
    let order_id = create_id(&s, key, &order_body("T-1", 1000)).await;
    assert_eq!(pay(&s, &order_id, "success").await.status, 200);
    wait_status(&s, key, &order_id, "paid").await;

    let refund = |out_refund_no: &'static str, amount: i64, reason: Option<&'static str>| {
        let s = &s;
        let order_id = &order_id;
        async move {
            let r = s
                .call(
                    "POST",
                    &format!("/v1/orders/{order_id}/refunds"),
                    Some(key),
                    Some(&json!({"out_refund_no": out_refund_no, "amount": amount, "reason": reason})),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
            r.json["refund_id"].as_str().expect("refund_id").to_string()
        }
    };
    let succeeds = refund("R-1", 400, None).await;
    // The sandbox refuses a refund with this reason: it fails only if the monitor sends the
    // reason of the RefundRequested, as the refund worker does.
    let fails = refund("R-2", 300, Some(FAIL_REFUND_REASON)).await;

    let final_status = |refund_id: String| {
        let s = &s;
        async move {
            eventually(WAIT, || async {
                let r = s
                    .call("GET", &format!("/v1/refunds/{refund_id}"), Some(key), None)
                    .await;
                assert_eq!(r.status, 200, "{}", r.text);
                (r.json["status"] != "pending").then_some(r.json)
            })
            .await
            .unwrap_or_else(|| panic!("refund {refund_id} is still pending: the monitor never drove it"))
        }
    };
    let done: Value = final_status(succeeds).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let refused: Value = final_status(fails).await;
    assert_eq!(refused["status"], "failed", "{refused}");
    let order = wait_status(&s, key, &order_id, "partially_refunded").await;
    assert_eq!(order["refunded_amount"], 400, "{order}");

    // Recorded by the monitor, once each.
    let events = payledger_tests::committed_events(s.database()).await;
    let outcomes: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.event_type.as_str(), "RefundSucceeded" | "RefundFailed"))
        .collect();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    for e in outcomes {
        assert_eq!(e.metadata["actor"], "worker:order_monitor", "{e:?}");
    }
}

both_backends!(a_refund_no_refund_worker_received_is_completed_by_the_monitor);
