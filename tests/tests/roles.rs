//! `serve --roles`: an API-only process and a worker process (projector, notifier, refunds,
//! monitor) on one database behave as one server, on both backends.

use std::time::Duration;

use payledger_command_api::app::{self, ServeConfig};
use payledger_command_api::roles::Roles;
use payledger_store::PoolConfig;
use payledger_tests::flows::{create_id, get_order, order_body, pay, request_refund, WAIT};
use payledger_tests::{eventually, Backend, TestServer, WebhookReceiver};
use serde_json::json;

async fn split_roles_serve_the_whole_flow(backend: Backend) {
    let Some(api) = TestServer::start_with_config(backend, |c| c.roles = "api".parse().expect("roles")).await else {
        return;
    };
    let mut config = ServeConfig::new("127.0.0.1:0".parse().expect("addr"), Some(api.db.url.clone()));
    config.secrets_key = payledger_tests::secrets_key_for(&api.db.url);
    config.roles = "projector,notifier,refunds,monitor".parse::<Roles>().expect("roles");
    config.sender.schedule = "1s,1s".parse().expect("schedule");
    config.sender.poll_interval_ms = 100;
    config.pools = PoolConfig {
        store_connections_max: 4,
        query_connections_max: 4,
        acquire_timeout_ms: 10_000,
        ..PoolConfig::default()
    };
    let worker = app::start(config).await.expect("worker starts");
    let worker_base = format!("http://{}", worker.addr);

    let m = api.add_merchant("shop1").await;
    let key = m.api_key.as_str();
    let hook = WebhookReceiver::start(vec![]).await;
    let mut body = order_body("T-1", 1000);
    body["notify_url"] = json!(hook.url);
    let order_id = create_id(&api, key, &body).await;
    assert_eq!(pay(&api, &order_id, "success").await.status, 200);

    // Projected by the worker, read through the API process.
    let status = |s: &'static str| {
        let (api, order_id) = (&api, &order_id);
        async move {
            eventually(WAIT, || async {
                let r = get_order(api, key, order_id).await;
                (r.json["status"] == s).then_some(())
            })
            .await
            .unwrap_or_else(|| panic!("order never became {s} through the api process"));
        }
    };
    status("paid").await;
    // The worker's notifier delivers the notify job.
    let got = hook.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1, "the payment notification was not delivered");

    // The refund is answered by the API process and carried out by the worker's refund worker.
    let started = tokio::time::Instant::now();
    let r = request_refund(&api, key, &order_id, "R-1", 300).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Read-your-writes polls the projection run elsewhere instead of sitting out its timeout.
    assert!(
        started.elapsed() < Duration::from_millis(app::READ_YOUR_WRITES_TIMEOUT_MS),
        "the refund took {:?}: the api process waited out the projection timeout",
        started.elapsed()
    );
    status("partially_refunded").await;
    let refund_id = r.json["refund_id"].as_str().expect("refund_id").to_string();
    eventually(WAIT, || async {
        let r = api
            .call("GET", &format!("/v1/refunds/{refund_id}"), Some(key), None)
            .await;
        (r.json["status"] == "succeeded").then_some(())
    })
    .await
    .expect("the worker's refund worker completed the refund");

    // Operations endpoints everywhere; the API only on the api process.
    let metrics = api.call("GET", "/metrics", None, None).await;
    assert_eq!(metrics.status, 200, "{}", metrics.text);
    let http = reqwest::Client::new();
    for (path, expected) in [
        ("/metrics", 200),
        ("/readyz", 200),
        ("/healthz", 200),
        ("/v1/orders", 404),
    ] {
        let r = http
            .get(format!("{worker_base}{path}"))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), expected, "GET {path} on the worker process");
    }
    worker.shutdown().await;
}

#[tokio::test]
async fn split_roles_serve_the_whole_flow_sqlite() {
    split_roles_serve_the_whole_flow(Backend::Sqlite).await;
}

#[tokio::test]
async fn split_roles_serve_the_whole_flow_postgres() {
    split_roles_serve_the_whole_flow(Backend::Postgres).await;
}
