//! NATS mode, graceful shutdown: the JetStream consumers stop pulling, finish the message in
//! hand and ack it, then stop. A refund being executed when the server is asked to stop is
//! recorded and its message acked once: not redelivered, not lost.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use payledger_bus::consumer::REFUNDS_DURABLE_DEFAULT;
use payledger_channel_adapters::simulator::alipay::AlipaySimulator;
use payledger_store::{Database, PoolConfig};
use payledger_tests::accounts::{alipay_accounts, start_alipay_simulator};
use payledger_tests::flows::{create_id, order_body, request_refund, wait_status, WAIT};
use payledger_tests::nats::TestStream;
use payledger_tests::{committed_events, Mode, TestServer};
use serde_json::json;
use tokio::sync::Notify;

/// How long the gateway in front of the simulator holds a refund call: the message is in hand
/// for this long, and the shutdown comes meanwhile.
const REFUND_DELAY: Duration = Duration::from_millis(1_500);

/// A gateway in front of the Alipay simulator that holds every `alipay.trade.refund` call for
/// [`REFUND_DELAY`] (telling `refund_seen` when one arrives) and forwards everything as it is.
struct SlowGateway {
    url: String,
    refund_seen: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Forward {
    upstream: String,
    refund_seen: Arc<Notify>,
    http: reqwest::Client,
}

async fn forward(
    State(f): State<Forward>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, Bytes) {
    let query = uri.query().unwrap_or_default();
    if query.contains("alipay.trade.refund") || String::from_utf8_lossy(&body).contains("alipay.trade.refund") {
        f.refund_seen.notify_one();
        tokio::time::sleep(REFUND_DELAY).await;
    }
    let target = match uri.query() {
        Some(q) => format!("{}{}?{q}", f.upstream, uri.path()),
        None => format!("{}{}", f.upstream, uri.path()),
    };
    let mut request = f.http.request(method, target).body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await.expect("the simulator answers");
    let status = answer.status();
    let mut out = HeaderMap::new();
    if let Some(ct) = answer.headers().get("content-type") {
        out.insert("content-type", ct.clone());
    }
    (status, out, answer.bytes().await.expect("body"))
}

impl SlowGateway {
    async fn start(sim: &AlipaySimulator) -> Self {
        let upstream = url::Url::parse(&sim.gateway_url()).expect("url");
        let upstream = upstream.origin().ascii_serialization();
        let refund_seen = Arc::new(Notify::new());
        let state = Forward {
            upstream,
            refund_seen: refund_seen.clone(),
            http: reqwest::Client::new(),
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/gateway.do", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, refund_seen, task }
    }
}

impl Drop for SlowGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn consumer_info(stream: &TestStream, durable: &str) -> async_nats::jetstream::consumer::Info {
    let s = stream.js.get_stream(&stream.name).await.expect("stream");
    let c: PullConsumer = s.get_consumer(durable).await.expect("consumer");
    c.get_info().await.expect("info")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_while_a_refund_is_in_hand_finishes_and_acks_it_once() {
    let sim = start_alipay_simulator().await;
    let gateway = SlowGateway::start(&sim).await;
    let accounts = alipay_accounts(&sim, &gateway.url);
    let Some(mut s) = TestServer::start_with_config(Mode::Nats, move |c| c.channels = accounts.clone()).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let mut body = order_body("ALI-1", 1500);
    body["channel"] = json!("alipay");
    body["method"] = json!("qr");
    let order_id = create_id(&s, &m.live_api_key, &body).await;
    sim.pay(&order_id).await.expect("paid at Alipay");
    wait_status(&s, &m.live_api_key, &order_id, "paid").await;

    let r = request_refund(&s, &m.live_api_key, &order_id, "R-1", 1500).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let refund_id = r.json["refund_id"].as_str().expect("refund_id").to_string();
    // The refund worker holds the RefundRequested message and is calling the channel: stop now.
    tokio::time::timeout(WAIT, gateway.refund_seen.notified())
        .await
        .expect("the refund worker never called the channel");
    let url = s.db.url.clone();
    s.stop().await;

    // The refund was finished: executed at the channel and its outcome recorded...
    let db = Database::connect(Some(&url), PoolConfig::default())
        .await
        .expect("connect");
    let outcomes: Vec<_> = committed_events(&db)
        .await
        .into_iter()
        .filter(|e| e.event_type == "RefundSucceeded")
        .collect();
    assert_eq!(
        outcomes.len(),
        1,
        "the refund in hand at shutdown was not finished: {outcomes:?}"
    );
    let refunded_at_alipay = sim.trade(&order_id).expect("trade").refunds;
    assert_eq!(
        refunded_at_alipay.get(&refund_id),
        Some(&1500),
        "{refunded_at_alipay:?}"
    );
    db.close().await;
    // ... and its message acked, once: nothing pending, nothing redelivered.
    let stream = s.stream.as_ref().expect("NATS mode has a stream");
    let info = consumer_info(stream, REFUNDS_DURABLE_DEFAULT).await;
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
    assert_eq!(info.num_redelivered, 0, "{info:?}");
    assert_eq!(
        info.ack_floor.stream_sequence, info.delivered.stream_sequence,
        "{info:?}"
    );
    assert!(info.delivered.consumer_sequence >= 1, "{info:?}");
}
