//! Channel adapters as a NATS service (`serve --roles channels`) against the real NATS server and
//! PostgreSQL: a process without the adapters' work pays and refunds through a second process
//! that serves them; without a channel service, or with one that never answers, placing an order
//! fails fast with 502 / 504 and the order is recorded as failed (retryable), not lost; WeChat
//! Pay notifications are verified by the channel service (`parse_callback`).

use std::time::Duration;

use futures::StreamExt;
use payledger_bus::RelayConfig;
use payledger_channel_adapters::simulator::wechatpay::{NotifyFaults, SimulatorConfig, WechatPaySimulator};
use payledger_channel_adapters::CreateChannelOrder;
use payledger_command_api::app::{self, Running, ServeConfig};
use payledger_command_api::config::ChannelAccounts;
use payledger_store::PoolConfig;
use payledger_tests::accounts::wechatpay_accounts;
use payledger_tests::flows::{
    create, create_id, get_order, order_body, pay, pay_path, request_refund, wait_status, WAIT,
};
use payledger_tests::nats::{nats_url, TestStream};
use payledger_tests::{eventually, Backend, MerchantCreds, Reply, TestServer};
use serde_json::{json, Value};

/// The roles of a process that calls channels but does not serve them. With the relay: in NATS
/// mode the refund worker consumes `RefundRequested` from the relay's stream.
const CALLER_ROLES: &str = "api,projector,notifier,refunds,monitor,relay";
/// A "fails fast" answer comes well within this, on a loaded machine too.
const FAST: Duration = Duration::from_secs(5);

/// An API process in NATS mode with `roles`, channel calls on `stream`'s prefix.
async fn caller(
    stream: &TestStream,
    roles: &'static str,
    configure: impl Fn(&mut ServeConfig) + Send + Sync + 'static,
) -> Option<TestServer> {
    let relay = stream.relay_config(&nats_url());
    TestServer::start_with_config(Backend::Postgres, move |c| {
        c.relay = Some(relay.clone());
        c.roles = roles.parse().expect("roles");
        configure(c);
    })
    .await
}

/// A second process on `api`'s database running only the `channels` role, its public URL the
/// API's (so pay URLs and notify URLs point at the API process).
async fn channel_service(api: &TestServer, relay: RelayConfig, channels: ChannelAccounts) -> Running {
    let mut config = ServeConfig::new("127.0.0.1:0".parse().expect("addr"), Some(api.db.url.clone()));
    config.secrets_key = payledger_tests::secrets_key_for(&api.db.url);
    config.roles = "channels".parse().expect("roles");
    config.relay = Some(relay);
    config.public_url = Some(api.base.clone());
    config.channels = channels;
    config.pools = PoolConfig {
        store_connections_max: 2,
        query_connections_max: 2,
        acquire_timeout_ms: 10_000,
        ..PoolConfig::default()
    };
    app::start(config).await.expect("the channels process starts")
}

/// Waits until nothing listens on `<prefix>.sandbox.create` any more (a stopped service's
/// unsubscriptions reach the server asynchronously).
async fn wait_no_responders(stream: &TestStream) {
    let client = async_nats::connect(nats_url()).await.expect("NATS");
    let subject = format!("{}.sandbox.create", stream.channel_prefix);
    let gone = eventually(WAIT, || async {
        let request = async_nats::Request::new()
            .payload("{}".into())
            .timeout(Some(Duration::from_millis(500)));
        match client.send_request(subject.clone(), request).await {
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(gone.is_some(), "the stopped channel service still answers {subject}");
}

/// The order's events as `(type, payload)`.
async fn events(s: &TestServer, key: &str, order_id: &str) -> Vec<(String, Value)> {
    let r = s
        .call("GET", &format!("/v1/orders/{order_id}/events"), Some(key), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| (e["type"].as_str().expect("type").to_string(), e["payload"].clone()))
        .collect()
}

/// The order `out_trade_no` of merchant `m`, which a failed create answered without an id.
async fn failed_order(s: &TestServer, m: &MerchantCreds, out_trade_no: &str, code: &str) {
    let order_id =
        payledger_domain::ids::order_id(&m.merchant_id, payledger_domain::Mode::Test, out_trade_no).to_string();
    let view = wait_status(s, &m.api_key, &order_id, "failed").await;
    assert_eq!(view["paid_amount"], 0, "{view}");
    let evs = events(s, &m.api_key, &order_id).await;
    let types: Vec<&str> = evs.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["OrderCreated", "ChannelOrderFailed"]);
    assert_eq!(evs[1].1["code"], code, "{}", evs[1].1);
    assert_eq!(evs[1].1["retryable"], true, "{}", evs[1].1);
}

fn assert_problem(r: &Reply, status: u16, slug: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.content_type, "application/problem+json");
    assert_eq!(
        r.json["type"],
        format!("https://payledger.dev/problems/{slug}"),
        "{}",
        r.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_without_channels_pays_and_refunds_through_the_channels_process() {
    let Some(stream) = TestStream::create().await else {
        return;
    };
    let Some(api) = caller(&stream, CALLER_ROLES, |_| {}).await else {
        return;
    };
    let channels = channel_service(&api, stream.relay_config(&nats_url()), ChannelAccounts::default()).await;
    let m = api.add_merchant("shop1").await;
    let key = m.api_key.as_str();

    let r = create(&api, key, &order_body("N-1", 1500)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let order_id = r.json["order_id"].as_str().expect("order_id").to_string();
    assert_eq!(
        r.json["pay_url"],
        format!("{}{}", api.base, pay_path(&api, &order_id).await)
    );
    // The sandbox's signed callback is verified by the channels process (parse_callback).
    let paid = pay(&api, &order_id, "success").await;
    assert_eq!(paid.status, 200, "{}", paid.text);
    assert_eq!(paid.json["callback_status"], 200, "{}", paid.text);
    wait_status(&api, key, &order_id, "paid").await;
    // A forged callback is refused by it.
    let forged = api
        .post_raw(
            "/v1/callbacks/sandbox",
            None,
            "application/json",
            serde_json::to_vec(
                &json!({"notify_id": "forged", "order_id": order_id, "channel_trade_no": "X",
                "trade_status": "SUCCESS", "amount": 1500, "currency": "CNY", "sent_at": chrono::Utc::now()}),
            )
            .expect("json"),
        )
        .await;
    assert!((400..500).contains(&forged.status), "{} {}", forged.status, forged.text);

    // The refund worker here refunds through the channels process.
    let r = request_refund(&api, key, &order_id, "R-1", 600).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let view = wait_status(&api, key, &order_id, "partially_refunded").await;
    assert_eq!(view["refunds"][0]["status"], "succeeded", "{view}");
    assert_eq!(view["refunded_amount"], 600);

    // Without the channels process, this process cannot reach a channel: its calls went over NATS.
    channels.shutdown().await;
    wait_no_responders(&stream).await;
    let r = create(&api, key, &order_body("N-2", 700)).await;
    assert_problem(&r, 502, "channel-unavailable");
    failed_order(&api, &m, "N-2", "channel_unavailable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_channel_service_placing_an_order_answers_502_fast_and_records_it_failed() {
    let Some(stream) = TestStream::create().await else {
        return;
    };
    let Some(api) = caller(&stream, "api,projector", |_| {}).await else {
        return;
    };
    let m = api.add_merchant("shop1").await;
    let started = tokio::time::Instant::now();
    let r = create(&api, &m.api_key, &order_body("N-1", 1000)).await;
    assert!(started.elapsed() < FAST, "answered after {:?}", started.elapsed());
    assert_problem(&r, 502, "channel-unavailable");
    assert!(
        r.json["detail"]
            .as_str()
            .is_some_and(|d| d.contains("channel_unavailable")),
        "{}",
        r.text
    );
    failed_order(&api, &m, "N-1", "channel_unavailable").await;
    // The same request again is the recorded order, not a second attempt.
    let again = create(&api, &m.api_key, &order_body("N-1", 1000)).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json["status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_service_that_never_answers_gives_504_after_the_channel_timeout() {
    let Some(stream) = TestStream::create().await else {
        return;
    };
    const TIMEOUT_MS: u64 = 1_000;
    // Listens on the create subject and never answers.
    let client = async_nats::connect(nats_url()).await.expect("NATS");
    let mut silent = client
        .subscribe(format!("{}.sandbox.create", stream.channel_prefix))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let Some(api) = caller(&stream, "api,projector", |c| {
        c.relay.as_mut().expect("NATS mode").channel_timeout_ms = TIMEOUT_MS;
    })
    .await
    else {
        return;
    };
    let m = api.add_merchant("shop1").await;
    let started = tokio::time::Instant::now();
    let r = create(&api, &m.api_key, &order_body("N-1", 1000)).await;
    let took = started.elapsed();
    assert_problem(&r, 504, "channel-timeout");
    assert!(
        took >= Duration::from_millis(TIMEOUT_MS),
        "answered after {took:?}, before the timeout"
    );
    assert!(
        took < Duration::from_millis(TIMEOUT_MS) + FAST,
        "answered after {took:?}"
    );
    failed_order(&api, &m, "N-1", "channel_timeout").await;
    // The call-latency metric counts the timeout as its own outcome (only this test times out).
    let metrics = api.call("GET", "/metrics", None, None).await;
    assert!(
        metrics
            .text
            .lines()
            .any(|l| l.starts_with("payledger_channel_call_seconds_count")
                && l.contains(r#"operation="create""#)
                && l.contains(r#"outcome="timeout""#)),
        "{}",
        metrics.text
    );
    // What went out was the order, as the wire protocol says.
    let request = tokio::time::timeout(FAST, silent.next())
        .await
        .expect("the request reached the subscriber")
        .expect("a message");
    let sent: CreateChannelOrder = serde_json::from_slice(&request.payload).expect("a create request");
    assert_eq!(
        sent.order_id,
        payledger_domain::ids::order_id("shop1", payledger_domain::Mode::Test, "N-1")
    );
    assert_eq!(sent.amount.amount_minor, 1000);
}

/// `payledger.toml` with the WeChat Pay test account of `sim`, keys inline.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechatpay_notifications_are_verified_by_the_channel_service() {
    let Some(stream) = TestStream::create().await else {
        return;
    };
    let wechat = WechatPaySimulator::start(SimulatorConfig::for_test_account())
        .await
        .expect("WeChat Pay simulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let accounts = wechatpay_accounts(&wechat, dir.path());
    let here = accounts.clone();
    let Some(api) = caller(&stream, CALLER_ROLES, move |c| c.channels = here.clone()).await else {
        return;
    };
    let channels = channel_service(&api, stream.relay_config(&nats_url()), accounts).await;
    let m = api.add_merchant("shop1").await;
    let mut body = order_body("WX-1", 1234);
    body["channel"] = json!("wechatpay");
    body["method"] = json!("qr");
    let order_id = create_id(&api, &m.live_api_key, &body).await;
    let out_trade_no = order_id.replace('-', "");
    assert!(wechat.order(&out_trade_no).is_some(), "placed at the simulator");

    // A tampered signature is refused (WeChat Pay's 4xx FAIL answer) and changes nothing.
    let forged = wechat
        .pay_with(
            &out_trade_no,
            &NotifyFaults {
                tamper_signature: true,
                ..Default::default()
            },
        )
        .await
        .expect("delivered");
    assert!(
        (400..500).contains(&forged.status),
        "forged notification answered {}",
        forged.status
    );
    assert_eq!(
        get_order(&api, &m.live_api_key, &order_id).await.json["status"],
        "awaiting_payment"
    );
    // The genuine one pays the order.
    let genuine = wechat.pay(&out_trade_no).await.expect("delivered");
    assert_eq!(genuine.status, 204, "WeChat Pay's success answer");
    let view = wait_status(&api, &m.live_api_key, &order_id, "paid").await;
    assert_eq!(view["paid_amount"], 1234);

    // With the channels process gone, the API process cannot verify (though it has the account):
    // it answers a failure so that WeChat Pay sends the notification again.
    channels.shutdown().await;
    wait_no_responders(&stream).await;
    let again = wechat.redeliver(&genuine).await.expect("delivered");
    assert_eq!(again.status, 500, "a notification not verified now is answered 500");
}
