//! NATS as a three-node JetStream cluster, the stream, its consumers and the configuration bucket
//! with three replicas (`--nats-replicas 3`, what `compose.yaml` runs). Under load in NATS mode
//! the node leading the stream is killed, the load goes on, the node comes back, the load goes
//! on: every event of the log is in the stream exactly once, every refund gets its outcome, every
//! notification is delivered, and the consumers have nothing left pending.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream;
use payledger_tests::flows::{create_id, order_body, pay, request_refund};
use payledger_tests::nats_cluster::NatsCluster;
use payledger_tests::{committed_events, eventually, Mode, TestServer, WebhookReceiver};
use serde_json::json;

/// Orders per phase (before the kill, with a node down, after its return).
const ORDERS_PER_PHASE: usize = 8;
/// How long the system may take to settle after the last request.
const SETTLE: Duration = Duration::from_secs(90);

/// One merchant flow: create (with a notify_url), pay, refund 100 of 1000. Returns the order id.
async fn flow(s: &TestServer, key: &str, hook: &str, n: usize) -> String {
    let mut body = order_body(&format!("C-{n}"), 1000);
    body["notify_url"] = json!(hook);
    let order_id = create_id(s, key, &body).await;
    let paid = pay(s, &order_id, "success").await;
    assert_eq!(paid.status, 200, "{}", paid.text);
    let refund = request_refund(s, key, &order_id, "R-1", 100).await;
    assert_eq!(refund.status, 201, "{}", refund.text);
    order_id
}

async fn stream_leader(js: &jetstream::Context, stream: &str) -> Option<String> {
    let mut s = js.get_stream(stream).await.ok()?;
    s.info().await.ok()?.cluster.as_ref()?.leader.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_loses_a_node_and_nothing_is_lost_or_published_twice() {
    let Some(mut cluster) = NatsCluster::start(3).await else {
        return;
    };
    let urls = cluster.urls();
    let Some(s) = TestServer::start_with_config(Mode::Nats, move |c| {
        let relay = c.relay.as_mut().expect("NATS mode");
        relay.nats_url = urls.clone();
        relay.replicas = 3;
        relay.ack_timeout_ms = 5_000;
        c.sender.schedule = "1s,1s,2s,2s,5s,5s,10s".parse().expect("schedule");
    })
    .await
    else {
        return;
    };
    let stream = s.stream.as_ref().expect("NATS mode").name.clone();
    let m = s.add_merchant("shop1").await;
    let hook = WebhookReceiver::start(vec![]).await;
    let js = cluster.jetstream().await;

    let mut orders = Vec::new();
    for n in 0..ORDERS_PER_PHASE {
        orders.push(flow(&s, &m.api_key, &hook.url, n).await);
    }
    // The stream exists with three replicas; kill the node that leads it.
    let leader = eventually(SETTLE, || async { stream_leader(&js, &stream).await })
        .await
        .expect("the stream has a leader");
    let mut created = js.get_stream(&stream).await.expect("stream");
    assert_eq!(created.info().await.expect("info").config.num_replicas, 3);
    let down = cluster.index_of(&leader).expect("a node of ours");
    cluster.kill(down);
    for n in ORDERS_PER_PHASE..2 * ORDERS_PER_PHASE {
        orders.push(flow(&s, &m.api_key, &hook.url, n).await);
    }
    cluster.restart(down).await;
    for n in 2 * ORDERS_PER_PHASE..3 * ORDERS_PER_PHASE {
        orders.push(flow(&s, &m.api_key, &hook.url, n).await);
    }

    // Every refund got its outcome from the refund worker, through the stream.
    for order_id in &orders {
        let refunded = eventually(SETTLE, || async {
            let r = s
                .call("GET", &format!("/v1/orders/{order_id}"), Some(&m.api_key), None)
                .await;
            (r.json["refunded_amount"] == 100).then_some(())
        })
        .await;
        assert!(refunded.is_some(), "order {order_id}: its refund has no outcome");
    }
    // Every notification (payment and refund of each order) was delivered.
    let due = 2 * orders.len();
    let received = eventually(SETTLE, || async {
        let ids: HashSet<String> = hook
            .received()
            .iter()
            .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .filter_map(|b| b["id"].as_str().map(str::to_string))
            .collect();
        (ids.len() >= due).then_some(ids.len())
    })
    .await;
    assert_eq!(received, Some(due), "every notification delivered once at least");

    // Every event of the log is in the stream exactly once.
    let events = committed_events(s.database()).await;
    let expected: HashSet<String> = events
        .iter()
        .map(|e| payledger_bus::envelope::msg_id(e.order_id, e.sequence))
        .collect();
    let want = expected.len() as u64;
    let stored = eventually(SETTLE, || {
        let (js, stream) = (js.clone(), stream.clone());
        async move {
            let mut st = js.get_stream(&stream).await.ok()?;
            let last = st.info().await.ok()?.state.last_sequence;
            (last >= want).then_some(())?;
            let mut ids = Vec::new();
            for seq in 1..=last {
                let m = st.get_raw_message(seq).await.ok()?;
                let id = m.headers.get(async_nats::header::NATS_MESSAGE_ID)?.as_str().to_string();
                ids.push(id);
            }
            Some(ids)
        }
    })
    .await
    .expect("the stream holds the log");
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "a message is in the stream twice");
    assert_eq!(
        unique.into_iter().cloned().collect::<HashSet<String>>(),
        expected,
        "stream and log differ"
    );

    // The consumers resumed and hold nothing back.
    for durable in [
        payledger_bus::consumer::REFUNDS_DURABLE_DEFAULT,
        payledger_bus::consumer::NOTIFIER_DURABLE_DEFAULT,
    ] {
        let drained = eventually(SETTLE, || {
            let (js, stream) = (js.clone(), stream.clone());
            async move {
                let st = js.get_stream(&stream).await.ok()?;
                let mut consumer: jetstream::consumer::PullConsumer = st.get_consumer(durable).await.ok()?;
                let info = consumer.info().await.ok()?;
                (info.num_pending == 0 && info.num_ack_pending == 0).then_some(info.config.num_replicas)
            }
        })
        .await;
        assert!(drained.is_some(), "consumer {durable} still holds messages");
    }
}
