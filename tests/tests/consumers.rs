//! The refund worker and the notifier on the global log (embedded) and on durable JetStream
//! consumers (NATS mode): a refund whose channel is briefly unavailable is retried, not lost; in
//! NATS mode the consumers really are the path (cut NATS off and nothing is queued or refunded
//! until it returns).

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use payledger_bus::consumer::{NOTIFIER_DURABLE_DEFAULT, REFUNDS_DURABLE_DEFAULT};
use payledger_channel_adapters::simulator::alipay::ResponseFault;
use payledger_tests::accounts::{alipay_accounts, start_alipay_simulator};
use payledger_tests::flows::{count, create_id, order_body, pay, request_refund, wait_status, WAIT};
use payledger_tests::nats::{nats_addr, nats_url, Proxy, TestStream};
use payledger_tests::{eventually, Backend, Mode, TestServer, WebhookReceiver};
use serde_json::{json, Value};

async fn a_refund_whose_channel_is_briefly_unavailable_is_retried_not_lost(mode: Mode) {
    let sim = start_alipay_simulator().await;
    let accounts = alipay_accounts(&sim, &sim.gateway_url());
    let Some(s) = TestServer::start_with_config(mode, move |c| c.channels = accounts.clone()).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let mut body = order_body("ALI-1", 1500);
    body["channel"] = json!("alipay");
    body["method"] = json!("qr");
    let order_id = create_id(&s, &m.live_api_key, &body).await;
    sim.pay(&order_id).await.expect("paid at Alipay");
    wait_status(&s, &m.live_api_key, &order_id, "paid").await;

    // Alipay answers 503 to the worker's first round of attempts and two more: the refund only
    // goes through if the worker's failed handling is retried (the log's back-off, or a nak).
    let faults = payledger_command_api::workers::refunds::CHANNEL_ATTEMPTS_MAX as usize + 2;
    for _ in 0..faults {
        sim.inject(ResponseFault::HttpStatus(503));
    }
    let r = request_refund(&s, &m.live_api_key, &order_id, "R-1", 1500).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let refund_id = r.json["refund_id"].as_str().expect("refund_id").to_string();
    let done = wait_status(&s, &m.live_api_key, &order_id, "refunded").await;
    assert_eq!(done["refunded_amount"], 1500);
    let refunded_at_alipay = sim.trade(&order_id).expect("trade").refunds;
    assert_eq!(
        refunded_at_alipay.get(&refund_id),
        Some(&1500),
        "{refunded_at_alipay:?}"
    );
    let events = s
        .call(
            "GET",
            &format!("/v1/orders/{order_id}/events"),
            Some(&m.live_api_key),
            None,
        )
        .await;
    let types: Vec<&str> = events.json["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        types
            .iter()
            .copied()
            .filter(|t| t.starts_with("Refund"))
            .collect::<Vec<_>>(),
        ["RefundRequested", "RefundSucceeded"],
        "one outcome, no failure recorded for the outage"
    );
    if mode == Mode::Nats {
        // The outage went through the consumer's nak and redelivery, and /metrics says so.
        let text = s.call("GET", "/metrics", None, None).await.text;
        let sample = |name: &str, labels: &[&str]| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
                .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
                .sum()
        };
        let refunds = "consumer=\"payledger-refunds\"";
        assert!(
            sample("payledger_consumer_messages_total", &[refunds, "outcome=\"failed\""]) >= 1.0,
            "{text}"
        );
        assert!(sample("payledger_consumer_messages_total", &[refunds, "outcome=\"handled\""]) >= 1.0);
        assert!(sample("payledger_consumer_redelivered_total", &[refunds]) >= 1.0);
    }
}

async fn consumer(stream: &TestStream, durable: &str) -> Option<async_nats::jetstream::consumer::Info> {
    let s = stream.js.get_stream(&stream.name).await.ok()?;
    let c: PullConsumer = s.get_consumer(durable).await.ok()?;
    c.get_info().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_nats_mode_nothing_is_queued_or_refunded_until_nats_returns() {
    let Some(stream) = TestStream::create().await else {
        return;
    };
    let mut proxy = Proxy::new(nats_addr()).await;
    proxy.start().await;
    let relay = stream.relay_config(&proxy.url_for(&nats_url()));
    let Some(s) = TestServer::start_with_config(Backend::Postgres, move |c| c.relay = Some(relay.clone())).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let key = m.api_key.as_str();
    let hook = WebhookReceiver::start(vec![]).await;
    let mut body = order_body("T-1", 100);
    body["notify_url"] = json!(hook.url);
    let order_id = create_id(&s, key, &body).await;
    // Both durable consumers exist on the test stream once the relay created it.
    for durable in [NOTIFIER_DURABLE_DEFAULT, REFUNDS_DURABLE_DEFAULT] {
        eventually(WAIT, || consumer(&stream, durable))
            .await
            .unwrap_or_else(|| panic!("consumer {durable} never appeared"));
    }

    proxy.stop().await;
    assert_eq!(pay(&s, &order_id, "success").await.status, 200);
    wait_status(&s, key, &order_id, "paid").await;
    let refund = request_refund(&s, key, &order_id, "R-1", 100).await;
    assert_eq!(refund.status, 201, "{}", refund.text);
    // Embedded, both happen within milliseconds; here they wait for NATS.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&s, "notify_job").await,
        0,
        "queued without NATS: not the consumer's path"
    );
    let view = s.call("GET", &format!("/v1/orders/{order_id}"), Some(key), None).await;
    assert_eq!(view.json["status"], "paid", "refunded without NATS: {}", view.text);

    proxy.start().await;
    let done = eventually(Duration::from_secs(30), || async {
        let r = s.call("GET", &format!("/v1/orders/{order_id}"), Some(key), None).await;
        (r.json["status"] == "refunded").then_some(r.json)
    })
    .await
    .expect("the refund went through once NATS was back");
    assert_eq!(done["refunded_amount"], 100);
    let got = hook.wait_for(2, Duration::from_secs(30)).await;
    let mut types: Vec<String> = got
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).expect("json")["type"]
                .as_str()
                .expect("type")
                .to_string()
        })
        .collect();
    types.sort();
    assert_eq!(types, ["payment.succeeded", "refund.succeeded"]);

    // The consumers acknowledged what they handled: the notifier saw every event, the refund
    // worker its one RefundRequested.
    let published = stream.count().await;
    assert!(
        published >= 5,
        "created, paid, refund requested and succeeded: {published}"
    );
    eventually(WAIT, || async {
        consumer(&stream, NOTIFIER_DURABLE_DEFAULT)
            .await
            .filter(|i| i.num_ack_pending == 0 && i.ack_floor.stream_sequence == published)
    })
    .await
    .expect("the notifier consumer acked the whole stream");
    let refunds = consumer(&stream, REFUNDS_DURABLE_DEFAULT)
        .await
        .expect("refunds consumer");
    assert_eq!(refunds.delivered.consumer_sequence, 1, "{refunds:?}");
    assert_eq!(refunds.num_ack_pending, 0, "{refunds:?}");
}

payledger_tests::all_modes!(a_refund_whose_channel_is_briefly_unavailable_is_retried_not_lost);
