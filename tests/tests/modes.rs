//! Test mode and live mode: one merchant, two keys, two books. The test key reaches only the
//! sandbox and the live key only real channels (a WeChat Pay simulator here); each mode has its
//! own order numbers, and no read (order, list, refund, notification, balance, daily figure)
//! of one mode shows the other's money. Live-mode merchant URLs may not be private addresses;
//! test mode's may.

use chrono::Utc;
use payledger_channel_adapters::simulator::wechatpay::{SimulatorConfig, WechatPaySimulator};
use payledger_tests::accounts::wechatpay_accounts;
use payledger_tests::flows::{create, create_id, get_order, order_body, pay, request_refund, wait_status, WAIT};
use payledger_tests::{Backend, Reply, TestServer, WebhookReceiver};
use serde_json::{json, Value};

/// A 422 naming `field`.
fn refused(r: &Reply, field: &str) {
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.json["errors"][field].is_array(), "names {field}: {}", r.text);
}

async fn get(s: &TestServer, key: &str, path: &str) -> Value {
    let r = s.call("GET", path, Some(key), None).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text);
    r.json
}

/// `(account, balance)` of the key's book.
async fn balances(s: &TestServer, key: &str) -> Vec<(String, i64)> {
    get(s, key, "/v1/ledger/balances").await["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|b| {
            (
                b["account"].as_str().expect("account").to_string(),
                b["balance"].as_i64().expect("balance"),
            )
        })
        .collect()
}

async fn test_and_live_money_never_mix(backend: Backend) {
    let wechat = WechatPaySimulator::start(SimulatorConfig::for_test_account())
        .await
        .expect("WeChat Pay simulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let accounts = wechatpay_accounts(&wechat, dir.path());
    let Some(s) = TestServer::start_with_config(backend, move |c| c.channels = accounts.clone()).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let (test, live) = (m.api_key.as_str(), m.live_api_key.as_str());
    let hook = WebhookReceiver::start(vec![]).await;

    // Each key reaches its own channels only.
    let mut on_wechat = order_body("T-1", 800);
    on_wechat["channel"] = json!("wechatpay");
    on_wechat["method"] = json!("qr");
    refused(&create(&s, test, &on_wechat).await, "channel");
    refused(&create(&s, live, &order_body("T-1", 555)).await, "channel");
    let s = &s;
    let channels = |key| async move {
        let list = get(s, key, "/v1/channels").await;
        let names: Vec<String> = list["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|c| c["channel"].as_str().expect("channel").to_string())
            .collect();
        names
    };
    assert_eq!(channels(test).await, ["sandbox"]);
    assert_eq!(channels(live).await, ["wechatpay"]);

    // The same out_trade_no in each mode: two orders. Test mode may notify localhost.
    let mut sandbox = order_body("T-1", 555);
    sandbox["notify_url"] = json!(hook.url);
    let test_order = create_id(s, test, &sandbox).await;
    let live_order = create_id(s, live, &on_wechat).await;
    assert_ne!(test_order, live_order);
    assert_eq!(get_order(s, test, &test_order).await.json["mode"], "test");
    assert_eq!(get_order(s, live, &live_order).await.json["mode"], "live");
    // Live mode may not aim a notification inward.
    let mut inward = on_wechat.clone();
    inward["out_trade_no"] = json!("T-2");
    inward["notify_url"] = json!(hook.url);
    refused(&create(s, live, &inward).await, "notify_url");

    // Both paid: the sandbox by its pay page, WeChat Pay by its notification.
    assert_eq!(pay(s, &test_order, "success").await.status, 200);
    let out_trade_no = live_order.replace('-', "");
    assert_eq!(wechat.pay(&out_trade_no).await.expect("delivered").status, 204);
    wait_status(s, test, &test_order, "paid").await;
    wait_status(s, live, &live_order, "paid").await;

    // Neither mode sees the other's order.
    assert_eq!(get_order(s, live, &test_order).await.status, 404);
    assert_eq!(get_order(s, test, &live_order).await.status, 404);
    let ids = |page: Value| -> Vec<String> {
        page["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|o| o["order_id"].as_str().expect("id").to_string())
            .collect()
    };
    assert_eq!(ids(get(s, test, "/v1/orders").await), std::slice::from_ref(&test_order));
    assert_eq!(ids(get(s, live, "/v1/orders").await), std::slice::from_ref(&live_order));
    let refund = request_refund(s, live, &test_order, "R-1", 1).await;
    assert_eq!(
        refund.status, 404,
        "the live key cannot refund a test order: {}",
        refund.text
    );

    // Each book holds its own money; the figures count each mode's orders alone.
    assert_eq!(
        balances(s, test).await,
        [
            ("channel_clearing:sandbox".to_string(), 555),
            ("merchant_payable:shop1".to_string(), 555)
        ]
    );
    assert_eq!(
        balances(s, live).await,
        [
            ("channel_clearing:wechatpay".to_string(), 800),
            ("merchant_payable:shop1".to_string(), 800)
        ]
    );
    let today = Utc::now().format("%Y-%m-%d").to_string();
    let today = &today;
    let paid = |key| async move {
        let stats = get(s, key, &format!("/v1/stats/daily?from={today}")).await;
        (
            stats["data"][0]["orders_created"].clone(),
            stats["data"][0]["paid_amount"].clone(),
        )
    };
    assert_eq!(paid(test).await, (json!(1), json!(555)));
    assert_eq!(paid(live).await, (json!(1), json!(800)));

    // The notification says which money it is about, and only the test key lists it.
    let received = hook.wait_for(1, WAIT).await;
    let body: Value = serde_json::from_slice(&received[0].body).expect("JSON");
    assert_eq!(
        (body["mode"].as_str(), body["data"]["mode"].as_str()),
        (Some("test"), Some("test"))
    );
    // Signed with the test secret only: a live receiver's check refuses it.
    let header = received[0]
        .headers
        .get(payledger_notifier::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .expect("signed");
    let now = Utc::now().timestamp();
    assert!(payledger_notifier::verify(
        &m.webhook_secret,
        header,
        &received[0].body,
        now,
        300
    ));
    assert!(!payledger_notifier::verify(
        &m.live_webhook_secret,
        header,
        &received[0].body,
        now,
        300
    ));
    assert_eq!(
        get(s, test, "/v1/notifications").await["data"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(get(s, live, "/v1/notifications").await["data"], json!([]));
    let id = body["id"].as_str().expect("id");
    assert_eq!(
        s.call("GET", &format!("/v1/notifications/{id}"), Some(live), None)
            .await
            .status,
        404
    );
}

payledger_tests::both_backends!(test_and_live_money_never_mix);
