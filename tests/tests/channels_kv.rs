//! Channel accounts from the NATS KV bucket (NATS mode): a WeChat Pay account put into the bucket
//! enables the channel without restart; a change that would strand the account's open order
//! (another merchant id in place, deleting it) is refused; a second account takes the new orders
//! while the first still settles its own; deleted keys remove accounts and, the last one, the
//! channel. SQLite only: the registry is the same on both backends.

use std::time::Duration;

use async_nats::jetstream;
use payledger_channel_adapters::simulator::wechatpay::{SimulatorConfig, WechatPaySimulator, TEST_APP_ID, TEST_MCH_ID};
use payledger_tests::accounts::wechatpay_account_value;
use payledger_tests::nats::{nats_url, TestStream};
use payledger_tests::{eventually, Backend, MerchantCreds, Reply, TestServer};
use serde_json::json;

/// How long a KV change may take to reach the live registry.
const APPLIED: Duration = Duration::from_secs(10);

async fn create_order(s: &TestServer, m: &MerchantCreds) -> Reply {
    let body = json!({"out_trade_no": uuid::Uuid::new_v4().simple().to_string(), "amount": 100,
                      "currency": "CNY", "channel": "wechatpay", "method": "qr", "subject": "Coffee"});
    s.call("POST", "/v1/orders", Some(&m.live_api_key), Some(&body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechatpay_accounts_in_nats_kv_apply_without_restart() {
    let Some(stream) = TestStream::create().await else {
        return;
    };
    let bucket = format!("payledger_test_{}", uuid::Uuid::new_v4().simple());
    let wechat = WechatPaySimulator::start(SimulatorConfig::for_test_account())
        .await
        .expect("WeChat Pay simulator");

    let relay = stream.relay_config(&nats_url());
    let configured_bucket = bucket.clone();
    let Some(s) = TestServer::start_with_config(Backend::Sqlite, move |c| {
        c.relay = Some(relay.clone());
        c.config_bucket = configured_bucket.clone();
    })
    .await
    else {
        return;
    };
    let m = s.add_merchant("shop1").await;

    // The server created the empty bucket; no WeChat Pay account yet.
    let kv = stream
        .js
        .get_key_value(&bucket)
        .await
        .expect("the server created the bucket");
    let r = create_order(&s, &m).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("unknown or disabled channel"), "{}", r.text);

    // Put the simulator's account: the channel comes up without restart.
    kv.put(
        "channels.wechatpay.main",
        wechatpay_account_value(&wechat, TEST_MCH_ID, TEST_APP_ID, "").into(),
    )
    .await
    .expect("put");
    let created = eventually(APPLIED, || async {
        let r = create_order(&s, &m).await;
        (r.status == 201).then_some(r)
    })
    .await
    .expect("a wechatpay order is created once the account is in KV");
    assert_eq!(created.json["status"], "awaiting_payment", "{}", created.text);
    assert!(
        created.json["qr_code"]
            .as_str()
            .is_some_and(|q| q.starts_with("weixin://wxpay/bizpayurl?pr=")),
        "{}",
        created.text
    );
    let order_id = created.json["order_id"].as_str().expect("order_id").replace('-', "");
    assert!(wechat.order(&order_id).is_some(), "placed at the simulator");

    // A bad value is refused and the adapter stays.
    kv.put("channels.wechatpay.main", "mch_id = 1\n".into())
        .await
        .expect("put");
    // Another merchant id in place, under the order awaiting payment: refused, the account stays
    // (the old merchant's order would be asked about at a merchant that does not know it).
    kv.put(
        "channels.wechatpay.main",
        wechatpay_account_value(&wechat, "1900000001", TEST_APP_ID, "").into(),
    )
    .await
    .expect("put");
    // The move done right: a new account (another merchant, another simulator) for new orders,
    // the old one closed to them.
    let wechat_new = WechatPaySimulator::start(SimulatorConfig {
        mch_id: "1900000001".into(),
        ..SimulatorConfig::for_test_account()
    })
    .await
    .expect("WeChat Pay simulator");
    kv.put(
        "channels.wechatpay.next",
        wechatpay_account_value(&wechat_new, "1900000001", TEST_APP_ID, "").into(),
    )
    .await
    .expect("put");
    kv.put(
        "channels.wechatpay.main",
        wechatpay_account_value(&wechat, TEST_MCH_ID, TEST_APP_ID, "new_orders = false").into(),
    )
    .await
    .expect("put");
    // Orders created until the change applies still go to the old account: they are paid there.
    let mut at_old = vec![order_id.clone()];
    let moved = loop {
        let r = create_order(&s, &m).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let id = r.json["order_id"].as_str().expect("order_id").replace('-', "");
        if wechat_new.order(&id).is_some() {
            break id;
        }
        assert!(at_old.len() < 200, "new orders never went to the new account");
        at_old.push(id);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(wechat.order(&moved).is_none());
    assert_eq!(
        wechat.requests_refused(),
        0,
        "the in-place change never reached the simulator"
    );

    // Deleting the old account's key while its order awaits payment is refused too.
    kv.delete("channels.wechatpay.main").await.expect("delete");
    // The old orders are paid at the old account, the new one at the new account.
    for id in &at_old {
        let delivery = wechat.pay(id).await.expect("delivered");
        assert_eq!(delivery.status, 204, "the old account still verifies its notifications");
        assert!(
            delivery.notify_url.ends_with("/v1/callbacks/wechatpay/main"),
            "{}",
            delivery.notify_url
        );
    }
    assert_eq!(wechat_new.pay(&moved).await.expect("delivered").status, 204);
    for id in at_old.iter().chain([&moved]) {
        let paid = eventually(APPLIED, || async {
            let r = s
                .call("GET", &format!("/v1/orders/{id}"), Some(&m.live_api_key), None)
                .await;
            (r.json["status"] == "paid").then_some(())
        })
        .await;
        assert!(paid.is_some(), "order {id} paid");
    }

    // Nothing is open at the old account now: put and delete it again, and it goes.
    kv.put(
        "channels.wechatpay.main",
        wechatpay_account_value(&wechat, TEST_MCH_ID, TEST_APP_ID, "new_orders = false").into(),
    )
    .await
    .expect("put");
    kv.delete("channels.wechatpay.main").await.expect("delete");
    let gone = eventually(APPLIED, || async {
        let r = s
            .call("POST", "/v1/callbacks/wechatpay/main", None, Some(&json!({})))
            .await;
        (r.status == 404).then_some(r)
    })
    .await;
    assert!(
        gone.is_some(),
        "the old account is removed once it serves no open order"
    );
    // Deleting the last account disables the channel.
    kv.delete("channels.wechatpay.next").await.expect("delete");
    let disabled = eventually(APPLIED, || async {
        let r = create_order(&s, &m).await;
        (r.status == 422).then_some(r)
    })
    .await
    .expect("the channel is disabled once its accounts are deleted");
    assert!(
        disabled.text.contains("unknown or disabled channel"),
        "{}",
        disabled.text
    );

    let _ = jetstream::Context::delete_key_value(&stream.js, &bucket).await;
}
