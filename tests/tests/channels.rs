//! WeChat Pay and Alipay end to end, on both backends: the real server configured from a
//! `payledger.toml` whose accounts point at the protocol simulators. Orders are placed at the
//! simulators, their signed (and, for WeChat Pay, encrypted) notifications reach
//! `/v1/callbacks/{channel}`, refunds go out through the refund worker; forged notifications are
//! refused in the channel's own format and change nothing. The order monitor settles expired
//! orders from the channel's word, queries awaiting ones on its schedule before expiry, and a
//! payment after its close is kept as a late payment.

use chrono::Utc;
use payledger_channel_adapters::alipay::account::parse_public_key;
use payledger_channel_adapters::alipay::types::format_beijing;
use payledger_channel_adapters::simulator::alipay::{self as alipay_sim, AlipaySimulator, SIM_SELLER_ID};
use payledger_channel_adapters::simulator::wechatpay::{
    self as wechat_sim, test_merchant_key, test_platform_keys, SignedNotification, SimulatorConfig, WechatPaySimulator,
    TEST_API_V3_KEY, TEST_APP_ID, TEST_MCH_ID, TEST_MERCHANT_SERIAL, TEST_PLATFORM_SERIAL,
};
use payledger_channel_adapters::CreateChannelOrder;
use payledger_command_api::config::ChannelAccounts;
use payledger_command_api::workers::monitor::MonitorConfig;
use payledger_domain::{ids, Currency, Money, OrderTerms, PaymentOrderCommand};
use payledger_tests::flows::{get_order, pay_path, wait_status, WAIT};
use payledger_tests::{eventually, Backend, MerchantCreds, Reply, TestServer};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The Alipay application of the test account.
const ALIPAY_APP_ID: &str = "2021000000000001";

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../channel-adapters/tests/fixtures")
        .join(path)
}

/// The simulators, the configuration file pointing at them, and the server reading it.
struct World {
    s: TestServer,
    /// The merchant, its `api_key` its live key: these tests are about real channels.
    m: MerchantCreds,
    /// The merchant's test key, for the sandbox.
    test_key: String,
    wechat: WechatPaySimulator,
    alipay: AlipaySimulator,
    accounts: ChannelAccounts,
    _dir: tempfile::TempDir,
}

/// Starts both simulators, writes `payledger.toml` (WeChat Pay keys next to it, referenced
/// relatively; the Alipay application key by absolute path), loads it as `payledger serve
/// --config` does, and starts the server with it and `monitor`.
async fn world(backend: Backend, monitor: MonitorConfig) -> Option<World> {
    let wechat = WechatPaySimulator::start(SimulatorConfig::for_test_account())
        .await
        .expect("WeChat Pay simulator");
    let app_public =
        parse_public_key(&std::fs::read_to_string(fixture("alipay/app_public_spki.pem")).expect("fixture"))
            .expect("app public key");
    let alipay = AlipaySimulator::start(ALIPAY_APP_ID, app_public)
        .await
        .expect("Alipay simulator");

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("keys")).expect("keys dir");
    let write = |name: &str, text: &str| std::fs::write(dir.path().join("keys").join(name), text).expect("key file");
    write(
        "apiclient_key.pem",
        &test_merchant_key().to_pkcs8_pem(LineEnding::LF).expect("pem"),
    );
    write(
        "wechatpay_pub.pem",
        &test_platform_keys()
            .public_key
            .to_public_key_pem(LineEnding::LF)
            .expect("pem"),
    );
    write(
        "alipay_public.pem",
        &alipay
            .alipay_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("pem"),
    );
    let toml = format!(
        r#"
[channels.wechatpay.main]
app_id = "{TEST_APP_ID}"
mch_id = "{TEST_MCH_ID}"
merchant_serial_no = "{TEST_MERCHANT_SERIAL}"
merchant_private_key_file = "keys/apiclient_key.pem"
platform_serial_no = "{TEST_PLATFORM_SERIAL}"
platform_public_key_file = "keys/wechatpay_pub.pem"
api_v3_key = "{api_v3_key}"
base_url = "{wechat_base}"

[channels.alipay.main]
app_id = "{ALIPAY_APP_ID}"
app_private_key_file = "{app_private}"
alipay_public_key_file = "keys/alipay_public.pem"
gateway_url = "{gateway}"
seller_id = "{SIM_SELLER_ID}"
"#,
        api_v3_key = std::str::from_utf8(TEST_API_V3_KEY).expect("ascii"),
        wechat_base = wechat.base_url(),
        app_private = fixture("alipay/app_private_pkcs8.pem").display(),
        gateway = alipay.gateway_url(),
    );
    let file = dir.path().join("payledger.toml");
    std::fs::write(&file, toml).expect("config file");
    let accounts = ChannelAccounts::load(&file).expect("the configuration loads");

    let configured = accounts.clone();
    let s = TestServer::start_with_config(backend, move |c| {
        c.channels = configured.clone();
        c.monitor = monitor.clone();
    })
    .await?;
    let mut m = s.add_merchant("shop1").await;
    let test_key = std::mem::replace(&mut m.api_key, m.live_api_key.clone());
    Some(World {
        s,
        m,
        test_key,
        wechat,
        alipay,
        accounts,
        _dir: dir,
    })
}

/// The monitor as production runs it: not due in any test that does not ask for it.
fn monitor_idle() -> MonitorConfig {
    MonitorConfig::default()
}

/// A monitor that settles an order as soon as it expired, checking five times a second; no
/// queries before expiry.
fn monitor_eager() -> MonitorConfig {
    MonitorConfig {
        enabled: true,
        interval_ms: 200,
        grace_ms: 0,
        query_schedule_ms: Vec::new(),
        ..MonitorConfig::default()
    }
}

/// A monitor that queries awaiting orders when their age crosses `points_ms`, checking ten
/// times a second; expiry as in production.
fn monitor_querying(points_ms: &[u64]) -> MonitorConfig {
    MonitorConfig {
        interval_ms: 100,
        query_schedule_ms: points_ms.to_vec(),
        ..MonitorConfig::default()
    }
}

fn order_body(out_trade_no: &str, amount: i64, channel: &str, method: &str) -> Value {
    json!({"out_trade_no": out_trade_no, "amount": amount, "currency": "CNY", "channel": channel,
           "method": method, "subject": "Coffee 咖啡"})
}

async fn create(w: &World, body: &Value) -> Value {
    let r = w.s.call("POST", "/v1/orders", Some(&w.m.api_key), Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["status"], "awaiting_payment", "{}", r.text);
    r.json
}

fn id_of(v: &Value, field: &str) -> Uuid {
    Uuid::parse_str(v[field].as_str().expect(field)).expect("uuid")
}

/// The order's events as `(type, payload, actor)`.
async fn events(w: &World, order_id: Uuid) -> Vec<(String, Value, String)> {
    let r =
        w.s.call(
            "GET",
            &format!("/v1/orders/{order_id}/events"),
            Some(&w.m.api_key),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["type"].as_str().expect("type").to_string(),
                e["payload"].clone(),
                e["metadata"]["actor"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn event_types(w: &World, order_id: Uuid) -> Vec<String> {
    events(w, order_id).await.into_iter().map(|(t, _, _)| t).collect()
}

async fn refund(w: &World, order_id: Uuid, out_refund_no: &str, amount: i64) -> Uuid {
    let r =
        w.s.call(
            "POST",
            &format!("/v1/orders/{order_id}/refunds"),
            Some(&w.m.api_key),
            Some(&json!({"out_refund_no": out_refund_no, "amount": amount, "reason": "returned"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["amount"], amount);
    id_of(&r.json, "refund_id")
}

async fn wait_refund(w: &World, refund_id: Uuid, status: &str) -> Value {
    eventually(WAIT, || async {
        let r =
            w.s.call("GET", &format!("/v1/refunds/{refund_id}"), Some(&w.m.api_key), None)
                .await;
        (r.json["status"] == status).then_some(r.json)
    })
    .await
    .unwrap_or_else(|| panic!("refund {refund_id} never became {status}"))
}

/// POSTs a WeChat Pay notification to our callback endpoint, as the simulator would.
async fn post_wechat(w: &World, n: &SignedNotification) -> Reply {
    let mut req =
        w.s.http
            .post(format!("{}/v1/callbacks/wechatpay", w.s.base))
            .header("content-type", "application/json")
            .body(n.body.clone());
    for (name, value) in &n.headers {
        req = req.header(name, value);
    }
    Reply::from(req.send().await.expect("sent")).await
}

async fn post_alipay(w: &World, form: &str) -> Reply {
    w.s.post_raw(
        "/v1/callbacks/alipay",
        None,
        "application/x-www-form-urlencoded; charset=utf-8",
        form.as_bytes().to_vec(),
    )
    .await
}

/// WeChat Pay's failure answer: a 4xx with `{"code":"FAIL","message":…}`.
fn assert_wechat_fail(r: &Reply, what: &str) {
    assert!((400..500).contains(&r.status), "{what}: {} {}", r.status, r.text);
    assert_eq!(r.json["code"], "FAIL", "{what}: {}", r.text);
    assert!(
        r.json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {}",
        r.text
    );
}

/// Alipay's failure answer: 200 with the plain text `failure`.
fn assert_alipay_answer(r: &Reply, answer: &str, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.text);
    assert!(r.content_type.starts_with("text/plain"), "{what}: {}", r.content_type);
    assert_eq!(r.text, answer, "{what}");
}

// --- WeChat Pay ------------------------------------------------------------------------------

async fn a_wechatpay_qr_order_is_paid_by_its_notification_and_refunded(backend: Backend) {
    let Some(w) = world(backend, monitor_idle()).await else {
        return;
    };
    let created = create(&w, &order_body("WX-1", 1234, "wechatpay", "qr")).await;
    let order_id = id_of(&created, "order_id");
    let out_trade_no = order_id.simple().to_string();
    assert!(
        created["qr_code"]
            .as_str()
            .is_some_and(|q| q.starts_with("weixin://wxpay/bizpayurl?pr=")),
        "{created}"
    );
    let placed = w.wechat.order(&out_trade_no).expect("placed at the simulator");
    assert_eq!(placed.amount.as_ref().map(|a| a.total), Some(1234));
    assert_eq!(placed.trade_state, "NOTPAY");

    let delivery = w.wechat.pay(&out_trade_no).await.expect("delivered");
    assert_eq!(delivery.status, 204, "WeChat Pay's success answer");
    let paid = w.wechat.order(&out_trade_no).expect("order");
    let transaction_id = paid.transaction_id.clone().expect("transaction_id");
    let view = wait_status(&w.s, &w.m.api_key, &order_id.to_string(), "paid").await;
    assert_eq!(view["paid_amount"], 1234);
    assert_eq!(view["channel_trade_no"], transaction_id.as_str());
    assert_eq!(view["amount_mismatch"], false);
    let evs = events(&w, order_id).await;
    let success = evs
        .iter()
        .find(|(t, _, _)| t == "PaymentSucceeded")
        .expect("PaymentSucceeded");
    assert_eq!(success.1["notify_id"], delivery.notification.id.as_str());
    assert_eq!(success.2, "channel:wechatpay");

    // The refund worker asks WeChat Pay, which answers PROCESSING: pending until its notification.
    let refund_id = refund(&w, order_id, "R-1", 400).await;
    let out_refund_no = refund_id.simple().to_string();
    let at_channel = eventually(WAIT, || async { w.wechat.refund(&out_refund_no) })
        .await
        .expect("the refund reached the simulator");
    assert_eq!(at_channel.status, "PROCESSING");
    assert_eq!(at_channel.amount.refund, 400);
    assert_eq!(at_channel.amount.total, 1234);
    assert_eq!(at_channel.transaction_id.as_deref(), Some(transaction_id.as_str()));
    assert_eq!(wait_refund(&w, refund_id, "pending").await["amount"], 400);

    let notified = w
        .wechat
        .complete_refund(&out_refund_no, "SUCCESS", &Default::default())
        .await
        .expect("delivered");
    assert_eq!(notified.status, 204);
    let done = wait_refund(&w, refund_id, "succeeded").await;
    assert_eq!(done["channel_refund_no"], at_channel.refund_id.as_str());
    let view = wait_status(&w.s, &w.m.api_key, &order_id.to_string(), "partially_refunded").await;
    assert_eq!(view["refunded_amount"], 400);

    // WeChat Pay re-sending the refund notification changes nothing.
    let before = event_types(&w, order_id).await;
    assert_eq!(w.wechat.redeliver(&notified).await.expect("delivered").status, 204);
    assert_eq!(event_types(&w, order_id).await, before);
    assert_eq!(
        before,
        [
            "OrderCreated",
            "ChannelOrderOpened",
            "PaymentSucceeded",
            "RefundRequested",
            "RefundSucceeded"
        ]
    );
}

async fn forged_wechatpay_notifications_are_refused_and_change_nothing(backend: Backend) {
    let Some(w) = world(backend, monitor_idle()).await else {
        return;
    };
    let order_id = id_of(
        &create(&w, &order_body("WX-F", 990, "wechatpay", "qr")).await,
        "order_id",
    );
    let out_trade_no = order_id.simple().to_string();
    // The payer paid at WeChat Pay; what reaches us is forged until the genuine one comes.
    let transaction = w.wechat.pay_without_notification(&out_trade_no).expect("paid");
    let builder = w.wechat.notifications();
    let before = event_types(&w, order_id).await;
    assert_eq!(before, ["OrderCreated", "ChannelOrderOpened"]);

    let forgeries = [
        (
            "tampered signature",
            wechat_sim::NotifyFaults {
                tamper_signature: true,
                ..Default::default()
            },
        ),
        (
            "signed with a wrong key",
            wechat_sim::NotifyFaults {
                wrong_key: true,
                ..Default::default()
            },
        ),
        (
            "stale timestamp",
            wechat_sim::NotifyFaults {
                timestamp_offset_seconds: -301,
                ..Default::default()
            },
        ),
        (
            "unknown platform serial",
            wechat_sim::NotifyFaults {
                serial_no: Some("PUB_KEY_ID_OTHER".into()),
                ..Default::default()
            },
        ),
        (
            "bad AES tag",
            wechat_sim::NotifyFaults {
                bad_aes_tag: true,
                ..Default::default()
            },
        ),
        (
            "another merchant's mchid",
            wechat_sim::NotifyFaults {
                mchid: Some("1900000000".into()),
                ..Default::default()
            },
        ),
    ];
    for (i, (what, faults)) in forgeries.iter().enumerate() {
        let n = builder.transaction(
            &format!("EV-FORGED-{i}"),
            "TRANSACTION.SUCCESS",
            &transaction,
            Utc::now(),
            faults,
        );
        assert_wechat_fail(&post_wechat(&w, &n).await, what);
        assert_eq!(event_types(&w, order_id).await, before, "{what} changed the order");
    }
    let view = get_order(&w.s, &w.m.api_key, &order_id.to_string()).await;
    assert_eq!(view.json["status"], "awaiting_payment");
    assert_eq!(view.json["paid_amount"], 0);

    // A notification about an order we never had: refused, nothing created.
    let mut stranger = transaction.clone();
    let unknown = Uuid::new_v4();
    stranger.out_trade_no = unknown.simple().to_string();
    let n = builder.transaction(
        "EV-STRANGER",
        "TRANSACTION.SUCCESS",
        &stranger,
        Utc::now(),
        &Default::default(),
    );
    assert_wechat_fail(&post_wechat(&w, &n).await, "unknown order");
    assert_eq!(get_order(&w.s, &w.m.api_key, &unknown.to_string()).await.status, 404);

    // The genuine one pays; the same notification again (WeChat Pay's retry) is no second event.
    let genuine = builder.transaction(
        "EV-GENUINE",
        "TRANSACTION.SUCCESS",
        &transaction,
        Utc::now(),
        &Default::default(),
    );
    assert_eq!(post_wechat(&w, &genuine).await.status, 204);
    let view = wait_status(&w.s, &w.m.api_key, &order_id.to_string(), "paid").await;
    assert_eq!(view["paid_amount"], 990);
    let paid = event_types(&w, order_id).await;
    assert_eq!(paid, ["OrderCreated", "ChannelOrderOpened", "PaymentSucceeded"]);
    let again = builder.sign("EV-GENUINE", genuine.body.clone(), Utc::now(), &Default::default());
    assert_eq!(post_wechat(&w, &again).await.status, 204, "a duplicate is acknowledged");
    assert_eq!(event_types(&w, order_id).await, paid, "a duplicate adds no event");
}

async fn a_wechatpay_notification_with_another_amount_flags_the_order_unpaid(backend: Backend) {
    let Some(w) = world(backend, monitor_idle()).await else {
        return;
    };
    let order_id = id_of(
        &create(&w, &order_body("WX-M", 5000, "wechatpay", "qr")).await,
        "order_id",
    );
    let faults = wechat_sim::NotifyFaults {
        amount_total: Some(1),
        ..Default::default()
    };
    let delivery = w
        .wechat
        .pay_with(&order_id.simple().to_string(), &faults)
        .await
        .expect("delivered");
    // Genuinely signed: recorded (so WeChat Pay stops re-sending), but it pays nothing.
    assert_eq!(delivery.status, 204);
    let view = eventually(WAIT, || async {
        let r = get_order(&w.s, &w.m.api_key, &order_id.to_string()).await;
        (r.json["amount_mismatch"] == true).then_some(r.json)
    })
    .await
    .expect("flagged amount_mismatch");
    assert_eq!(view["status"], "awaiting_payment");
    assert_eq!(view["paid_amount"], 0);
    let evs = events(&w, order_id).await;
    let (t, payload, _) = evs.last().expect("events");
    assert_eq!(t, "PaymentAmountMismatch");
    assert_eq!(payload["expected"]["amount_minor"], 5000, "{payload}");
    assert_eq!(payload["received"]["amount_minor"], 1, "{payload}");
}

// --- Alipay ----------------------------------------------------------------------------------

async fn alipay_qr_and_page_orders_are_paid_by_notification_and_refunded(backend: Backend) {
    let Some(w) = world(backend, monitor_idle()).await else {
        return;
    };
    for (n, method) in ["qr", "page"].into_iter().enumerate() {
        let amount = 2001 + n as i64;
        let created = create(&w, &order_body(&format!("ALI-{method}"), amount, "alipay", method)).await;
        let order_id = id_of(&created, "order_id");
        let out_trade_no = order_id.hyphenated().to_string();
        if method == "qr" {
            assert!(created["qr_code"].as_str().is_some_and(|q| !q.is_empty()), "{created}");
        } else {
            // The payer's browser opens the signed cashier URL; the gateway verifies it.
            let pay_url = created["pay_url"].as_str().expect("pay_url");
            assert!(pay_url.starts_with(&w.alipay.gateway_url()), "{pay_url}");
            let page = w.s.http.get(pay_url).send().await.expect("cashier");
            assert_eq!(page.status(), 200, "the gateway accepted our signed page.pay URL");
        }
        assert_eq!(
            w.alipay.trade(&out_trade_no).expect("trade").total_amount_fen,
            amount,
            "{method}"
        );

        let delivery = w.alipay.pay(&out_trade_no).await.expect("paid");
        assert!(delivery.acknowledged(), "{method}: answered {:?}", delivery.answer);
        let trade_no = w.alipay.trade(&out_trade_no).expect("trade").trade_no;
        let view = wait_status(&w.s, &w.m.api_key, &order_id.to_string(), "paid").await;
        assert_eq!(view["paid_amount"], amount, "{method}");
        assert_eq!(view["channel_trade_no"], trade_no.as_str(), "{method}");

        // Alipay refunds synchronously (fund_change = Y).
        let refund_id = refund(&w, order_id, "R-1", amount).await;
        let done = wait_refund(&w, refund_id, "succeeded").await;
        assert_eq!(done["amount"], amount);
        assert_eq!(
            w.alipay
                .trade(&out_trade_no)
                .expect("trade")
                .refunds
                .get(&refund_id.hyphenated().to_string()),
            Some(&amount),
            "{method}: refunded at the gateway under our refund id"
        );
        let view = wait_status(&w.s, &w.m.api_key, &order_id.to_string(), "refunded").await;
        assert_eq!(view["refunded_amount"], amount);
        assert_eq!(
            event_types(&w, order_id).await,
            [
                "OrderCreated",
                "ChannelOrderOpened",
                "PaymentSucceeded",
                "RefundRequested",
                "RefundSucceeded"
            ]
        );
    }
    assert!(
        w.alipay.refused_requests().is_empty(),
        "{:?}",
        w.alipay.refused_requests()
    );
}

async fn forged_alipay_notifications_are_answered_failure_and_change_nothing(backend: Backend) {
    let Some(w) = world(backend, monitor_idle()).await else {
        return;
    };
    let order_id = id_of(
        &create(&w, &order_body("ALI-F", 1500, "alipay", "qr")).await,
        "order_id",
    );
    let out_trade_no = order_id.hyphenated().to_string();
    let before = event_types(&w, order_id).await;

    // The payer pays; the notification that reaches us has a tampered signature.
    let first = w
        .alipay
        .pay_with(
            &out_trade_no,
            &alipay_sim::NotifyFaults {
                tamper_signature: true,
                ..Default::default()
            },
        )
        .await
        .expect("sent");
    assert_eq!((first.status, first.answer.as_str()), (200, "failure"));
    assert_eq!(event_types(&w, order_id).await, before);

    let forgeries = [
        (
            "signed with a wrong key",
            alipay_sim::NotifyFaults {
                wrong_key: true,
                ..Default::default()
            },
        ),
        (
            "stale notify_time",
            alipay_sim::NotifyFaults {
                notify_time: Some(format_beijing(Utc::now() - chrono::Duration::hours(49))),
                ..Default::default()
            },
        ),
        (
            "another app_id",
            alipay_sim::NotifyFaults {
                app_id: Some("2021000000000999".into()),
                ..Default::default()
            },
        ),
    ];
    for (what, faults) in &forgeries {
        let (_, form) = w.alipay.notification(&out_trade_no, faults).expect("trade");
        assert_alipay_answer(&post_alipay(&w, &form).await, "failure", what);
        assert_eq!(event_types(&w, order_id).await, before, "{what} changed the order");
    }
    assert_eq!(
        get_order(&w.s, &w.m.api_key, &order_id.to_string()).await.json["status"],
        "awaiting_payment"
    );

    // A correctly signed notification about an order we never had.
    let (_, genuine) = w
        .alipay
        .notification(&out_trade_no, &Default::default())
        .expect("trade");
    let unknown = Uuid::new_v4();
    let mut params: std::collections::BTreeMap<String, String> =
        url::form_urlencoded::parse(genuine.as_bytes()).into_owned().collect();
    params.insert("out_trade_no".into(), unknown.hyphenated().to_string());
    let stranger = alipay_sim::sign_notification(&params, &Default::default());
    assert_alipay_answer(&post_alipay(&w, &stranger).await, "failure", "unknown order");
    assert_eq!(get_order(&w.s, &w.m.api_key, &unknown.to_string()).await.status, 404);

    // The genuine one pays; the same notification again is acknowledged without a second event.
    assert_alipay_answer(&post_alipay(&w, &genuine).await, "success", "genuine");
    let view = wait_status(&w.s, &w.m.api_key, &order_id.to_string(), "paid").await;
    assert_eq!(view["paid_amount"], 1500);
    let paid = event_types(&w, order_id).await;
    assert_eq!(paid, ["OrderCreated", "ChannelOrderOpened", "PaymentSucceeded"]);
    assert_alipay_answer(&post_alipay(&w, &genuine).await, "success", "duplicate");
    assert_eq!(event_types(&w, order_id).await, paid, "a duplicate adds no event");
}

async fn an_alipay_notification_with_another_amount_flags_the_order_unpaid(backend: Backend) {
    let Some(w) = world(backend, monitor_idle()).await else {
        return;
    };
    let order_id = id_of(
        &create(&w, &order_body("ALI-M", 1500, "alipay", "qr")).await,
        "order_id",
    );
    let faults = alipay_sim::NotifyFaults {
        total_amount: Some("0.01".into()),
        ..Default::default()
    };
    let delivery = w
        .alipay
        .pay_with(&order_id.hyphenated().to_string(), &faults)
        .await
        .expect("sent");
    assert!(delivery.acknowledged(), "recorded, so Alipay stops re-sending");
    let view = get_order(&w.s, &w.m.api_key, &order_id.to_string()).await.json;
    assert_eq!(view["amount_mismatch"], true, "{view}");
    assert_eq!(view["status"], "awaiting_payment");
    assert_eq!(view["paid_amount"], 0);
    let evs = events(&w, order_id).await;
    let (t, payload, _) = evs.last().expect("events");
    assert_eq!(t, "PaymentAmountMismatch");
    assert_eq!(payload["received"]["amount_minor"], 1, "{payload}");
}

// --- The order monitor -----------------------------------------------------------------------

/// Creates an order directly in the event store as if it had been created `age` ago with the
/// shortest allowed expiry (60 s), so it is already expired: the API cannot make one (its
/// `expire_in_seconds` minimum is 60).
async fn create_expired(w: &World, out_trade_no: &str, amount: i64, channel: &str, method: &str) -> Uuid {
    let mode = payledger_domain::Mode::of_legacy_channel(channel);
    let order_id = ids::order_id(&w.m.merchant_id, mode, out_trade_no);
    let terms = OrderTerms {
        merchant_id: w.m.merchant_id.clone(),
        mode,
        out_trade_no: out_trade_no.into(),
        amount: Money::new(amount, Currency::CNY).expect("money"),
        channel: channel.into(),
        method: method.into(),
        subject: "Expired tea".into(),
        user_id: None,
        notify_url: None,
        return_url: None,
        expire_in_seconds: 60,
        metadata: Default::default(),
    };
    let created =
        w.s.database()
            .execute(
                order_id,
                PaymentOrderCommand::CreateOrder {
                    order_id,
                    terms,
                    created_at: Utc::now() - chrono::Duration::seconds(120),
                },
                "test",
            )
            .await
            .expect("created");
    assert_eq!(created.events.len(), 1);
    order_id
}

/// Places `order_id` at WeChat Pay as payledger would, through a channel built from the same
/// configuration.
async fn place_at_wechatpay(w: &World, order_id: Uuid, amount: i64) {
    let channels = w.accounts.channels(&w.s.base).expect("channels");
    let channel = channels
        .iter()
        .find(|(c, _)| c.name() == "wechatpay")
        .map(|(c, _)| c)
        .expect("wechatpay");
    channel
        .create(&CreateChannelOrder {
            order_id,
            amount: Money::new(amount, Currency::CNY).expect("money"),
            method: "qr".into(),
            subject: "Expired tea".into(),
            expire_at: Utc::now() - chrono::Duration::seconds(60),
            return_url: None,
            payer_id: None,
            payer_ip: None,
        })
        .await
        .expect("placed");
}

async fn closed_by_monitor(w: &World, order_id: Uuid) {
    let view = wait_status(&w.s, &w.m.api_key, &order_id.to_string(), "closed").await;
    assert_eq!(view["paid_amount"], 0);
    let evs = events(w, order_id).await;
    let (t, payload, actor) = evs.last().expect("events");
    assert_eq!(t, "OrderClosed");
    assert_eq!(payload["reason"], "expired", "{payload}");
    assert_eq!(actor, "worker:order_monitor");
}

async fn an_expired_sandbox_order_is_closed_by_the_monitor_and_cannot_be_paid(backend: Backend) {
    let Some(mut w) = world(backend, monitor_eager()).await else {
        return;
    };
    // A sandbox order is a test order: read with the test key.
    w.m.api_key = w.test_key.clone();
    let order_id = create_expired(&w, "SBX-EXP", 700, "sandbox", "page").await;
    // Past expire_at the sandbox, like a real channel, takes no money.
    let r =
        w.s.call(
            "POST",
            &pay_path(&w.s, &order_id.to_string()).await,
            None,
            Some(&json!({"result": "success"})),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(
        r.json["type"].as_str().is_some_and(|t| t.ends_with("order-expired")),
        "{}",
        r.text
    );
    closed_by_monitor(&w, order_id).await;
    assert_eq!(event_types(&w, order_id).await, ["OrderCreated", "OrderClosed"]);
}

async fn an_expired_wechatpay_order_whose_notification_was_lost_becomes_paid_not_closed(backend: Backend) {
    let Some(w) = world(backend, monitor_eager()).await else {
        return;
    };
    let out_trade_no = "WX-LOST";
    let order_id = ids::order_id(&w.m.merchant_id, payledger_domain::Mode::Live, out_trade_no);
    // Placed and paid at WeChat Pay before the order is due here; the notification never came.
    place_at_wechatpay(&w, order_id, 880).await;
    let transaction = w
        .wechat
        .pay_without_notification(&order_id.simple().to_string())
        .expect("paid");
    let transaction_id = transaction.transaction_id.expect("transaction_id");
    create_expired(&w, out_trade_no, 880, "wechatpay", "qr").await;

    let view = wait_status(&w.s, &w.m.api_key, &order_id.to_string(), "paid").await;
    assert_eq!(view["paid_amount"], 880);
    assert_eq!(view["channel_trade_no"], transaction_id.as_str());
    assert_eq!(view["late_payment"], false);
    let evs = events(&w, order_id).await;
    let types: Vec<&str> = evs.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(types, ["OrderCreated", "PaymentSucceeded"]);
    let (_, payload, actor) = &evs[1];
    assert_eq!(payload["notify_id"], format!("query:{transaction_id}"));
    assert_eq!(actor, "worker:order_monitor");
}

async fn an_expired_unpaid_wechatpay_order_is_closed_at_the_channel_and_here(backend: Backend) {
    let Some(w) = world(backend, monitor_eager()).await else {
        return;
    };
    let out_trade_no = "WX-EXP";
    let order_id = ids::order_id(&w.m.merchant_id, payledger_domain::Mode::Live, out_trade_no);
    place_at_wechatpay(&w, order_id, 660).await;
    create_expired(&w, out_trade_no, 660, "wechatpay", "qr").await;
    closed_by_monitor(&w, order_id).await;
    let at_channel = w.wechat.order(&order_id.simple().to_string()).expect("order");
    assert_eq!(at_channel.trade_state, "CLOSED", "closed at WeChat Pay before here");
}

async fn an_awaiting_wechatpay_order_whose_notification_was_lost_is_paid_by_a_scheduled_query_before_expiry(
    backend: Backend,
) {
    // One point, a second after creation: room for placing the order (RSA signing in a debug
    // build) and paying it before the monitor asks.
    let Some(w) = world(backend, monitor_querying(&[1_000])).await else {
        return;
    };
    let mut body = order_body("WX-QUERY", 990, "wechatpay", "qr");
    body["expire_in_seconds"] = json!(3600);
    let created = create(&w, &body).await;
    let order_id = id_of(&created, "order_id");
    let out_trade_no = order_id.simple().to_string();
    let transaction = w.wechat.pay_without_notification(&out_trade_no).expect("paid");
    let transaction_id = transaction.transaction_id.expect("transaction_id");
    assert_eq!(
        w.wechat.queries(&out_trade_no),
        0,
        "the monitor asked before the payer paid: the schedule point is too short for this machine"
    );

    let view = wait_status(&w.s, &w.m.api_key, &order_id.to_string(), "paid").await;
    assert_eq!(view["paid_amount"], 990);
    assert_eq!(view["channel_trade_no"], transaction_id.as_str());
    assert_eq!(view["late_payment"], false);
    assert_eq!(w.wechat.queries(&out_trade_no), 1, "asked once, at the point");
    let evs = events(&w, order_id).await;
    assert!(evs.iter().all(|(t, _, _)| t != "OrderClosed"), "{evs:?}");
    let paid: Vec<_> = evs.iter().filter(|(t, _, _)| t == "PaymentSucceeded").collect();
    assert_eq!(paid.len(), 1, "{evs:?}");
    let (_, payload, actor) = paid[0];
    assert!(
        payload["notify_id"].as_str().is_some_and(|n| n.starts_with("query:")),
        "{payload}"
    );
    assert_eq!(payload["notify_id"], format!("query:{transaction_id}"));
    assert_eq!(payload["late"], false, "{payload}");
    assert_eq!(actor, "worker:order_monitor");
    // Paid long before its expiry: the expiry pass had nothing to do with it.
    let expire_at = chrono::DateTime::parse_from_rfc3339(view["expire_at"].as_str().expect("expire_at")).expect("time");
    assert!(expire_at > Utc::now() + chrono::Duration::minutes(50), "{view}");
}

async fn an_unpaid_awaiting_wechatpay_order_is_queried_at_each_point_and_left_open(backend: Backend) {
    let Some(w) = world(backend, monitor_querying(&[300, 600])).await else {
        return;
    };
    let mut body = order_body("WX-WAIT", 440, "wechatpay", "qr");
    body["expire_in_seconds"] = json!(3600);
    let created = create(&w, &body).await;
    let order_id = id_of(&created, "order_id");
    let out_trade_no = order_id.simple().to_string();
    wait_status(&w.s, &w.m.api_key, &order_id.to_string(), "awaiting_payment").await;
    let before = events(&w, order_id).await;

    // Both points passed: the monitor asked twice (once per point: the windows do not overlap),
    // and the second query began after the first answer was handled.
    eventually(WAIT, || async { (w.wechat.queries(&out_trade_no) >= 2).then_some(()) })
        .await
        .unwrap_or_else(|| {
            panic!(
                "the monitor queried the order {} times, not at both points",
                w.wechat.queries(&out_trade_no)
            )
        });
    assert_eq!(w.wechat.queries(&out_trade_no), 2);
    assert_eq!(
        events(&w, order_id).await,
        before,
        "a query that says NOTPAY records nothing"
    );
    let view = get_order(&w.s, &w.m.api_key, &order_id.to_string()).await.json;
    assert_eq!(view["status"], "awaiting_payment", "{view}");
    let at_channel = w.wechat.order(&out_trade_no).expect("order");
    assert_eq!(
        at_channel.trade_state, "NOTPAY",
        "not closed at WeChat Pay before expiry"
    );
}

async fn a_wechatpay_order_closed_by_the_monitor_then_paid_is_a_late_payment_in_suspense(backend: Backend) {
    let Some(w) = world(backend, monitor_eager()).await else {
        return;
    };
    let out_trade_no = "WX-LATE";
    let order_id = ids::order_id(&w.m.merchant_id, payledger_domain::Mode::Live, out_trade_no);
    place_at_wechatpay(&w, order_id, 530).await;
    create_expired(&w, out_trade_no, 530, "wechatpay", "qr").await;
    closed_by_monitor(&w, order_id).await;

    // The payer's payment went through as the order closed: WeChat Pay notifies the success.
    let delivery = w.wechat.pay(&order_id.simple().to_string()).await.expect("delivered");
    assert_eq!(delivery.status, 204, "a late payment is accepted, not refused");
    let view = wait_status(&w.s, &w.m.api_key, &order_id.to_string(), "paid").await;
    assert_eq!(view["paid_amount"], 530);
    assert_eq!(view["late_payment"], true, "{view}");
    let evs = events(&w, order_id).await;
    let types: Vec<&str> = evs.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(types, ["OrderCreated", "OrderClosed", "PaymentSucceeded"]);
    assert_eq!(evs[2].1["late"], true, "{:?}", evs[2]);

    // The money belongs to no open order: the journal holds it in suspense, not as owed to the
    // merchant's sales.
    let suspense = format!("suspense:{}", w.m.merchant_id);
    let balances = eventually(WAIT, || async {
        let r = w.s.call("GET", "/v1/ledger/balances", Some(&w.m.api_key), None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let data = r.json["data"].as_array().cloned().unwrap_or_default();
        data.iter().any(|b| b["account"] == suspense.as_str()).then_some(data)
    })
    .await
    .expect("the late payment reached the journal");
    let held = balances
        .iter()
        .find(|b| b["account"] == suspense.as_str())
        .expect("suspense");
    assert_eq!(held["balance"], 530, "{held}");
    assert_eq!(held["currency"], "CNY", "{held}");
    let payable = format!("merchant_payable:{}", w.m.merchant_id);
    assert!(
        balances
            .iter()
            .all(|b| b["account"] != payable.as_str() || b["balance"] == 0),
        "{balances:?}"
    );
}

// --- What a merchant can use -------------------------------------------------------------------

async fn channels_lists_each_enabled_channel_with_its_methods_and_limits(backend: Backend) {
    let Some(w) = world(backend, monitor_idle()).await else {
        return;
    };
    let r = w.s.call("GET", "/v1/channels", Some(&w.m.api_key), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let by_name = |name: &str| {
        r.json["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|c| c["channel"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} is listed: {}", r.text))
    };
    let wechatpay = by_name("wechatpay");
    assert_eq!(wechatpay["methods"], json!(["qr", "h5", "jsapi"]));
    assert_eq!(wechatpay["default_method"], "qr");
    assert_eq!(wechatpay["currencies"], json!(["CNY"]));
    assert_eq!(wechatpay["amount_minor_max"], i64::from(i32::MAX));
    let alipay = by_name("alipay");
    assert_eq!(alipay["methods"], json!(["qr", "page", "h5"]));
    assert_eq!(alipay["amount_minor_max"], 10_000_000_000_i64);
    assert_eq!(
        r.json["data"].as_array().map(Vec::len),
        Some(2),
        "live mode has no sandbox"
    );

    // Test mode: the sandbox alone.
    let r = w.s.call("GET", "/v1/channels", Some(&w.test_key), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let data = r.json["data"].as_array().expect("data");
    assert_eq!(data.len(), 1, "test mode reaches only the sandbox: {}", r.text);
    assert_eq!(data[0]["channel"], "sandbox");
    assert_eq!(data[0]["methods"], json!(["page", "qr"]));
    assert_eq!(data[0]["currencies"], Value::Null, "any currency");

    let anonymous = w.s.call("GET", "/v1/channels", None, None).await;
    assert_eq!(anonymous.status, 401);
}

async fn a_currency_or_amount_the_channel_does_not_take_is_refused_before_the_channel_is_called(backend: Backend) {
    let Some(w) = world(backend, monitor_idle()).await else {
        return;
    };
    let cases = [
        ("wechatpay", "qr", "USD", 100, "currency"),
        ("alipay", "qr", "EUR", 100, "currency"),
        ("wechatpay", "qr", "CNY", i64::from(i32::MAX) + 1, "amount"),
        ("alipay", "qr", "CNY", 10_000_000_001, "amount"),
        ("sandbox", "jsapi", "CNY", 100, "method"),
    ];
    for (n, (channel, method, currency, amount, field)) in cases.into_iter().enumerate() {
        let mut body = order_body(&format!("CAP-{n}"), amount, channel, method);
        body["currency"] = json!(currency);
        let key = if channel == "sandbox" {
            &w.test_key
        } else {
            &w.m.api_key
        };
        let r = w.s.call("POST", "/v1/orders", Some(key), Some(&body)).await;
        assert_eq!(r.status, 422, "{channel} {currency} {amount}: {}", r.text);
        assert!(r.json["errors"][field].is_array(), "names {field}: {}", r.text);
    }
    let orders = w.s.call("GET", "/v1/orders", Some(&w.m.api_key), None).await;
    assert_eq!(orders.json["data"], json!([]), "nothing was recorded");
    // At the limit, the channel is asked.
    create(&w, &order_body("CAP-MAX", i64::from(i32::MAX), "wechatpay", "qr")).await;
}

payledger_tests::both_backends!(
    channels_lists_each_enabled_channel_with_its_methods_and_limits,
    a_currency_or_amount_the_channel_does_not_take_is_refused_before_the_channel_is_called,
    a_wechatpay_qr_order_is_paid_by_its_notification_and_refunded,
    forged_wechatpay_notifications_are_refused_and_change_nothing,
    a_wechatpay_notification_with_another_amount_flags_the_order_unpaid,
    alipay_qr_and_page_orders_are_paid_by_notification_and_refunded,
    forged_alipay_notifications_are_answered_failure_and_change_nothing,
    an_alipay_notification_with_another_amount_flags_the_order_unpaid,
    an_expired_sandbox_order_is_closed_by_the_monitor_and_cannot_be_paid,
    an_expired_wechatpay_order_whose_notification_was_lost_becomes_paid_not_closed,
    an_expired_unpaid_wechatpay_order_is_closed_at_the_channel_and_here,
    an_awaiting_wechatpay_order_whose_notification_was_lost_is_paid_by_a_scheduled_query_before_expiry,
    an_unpaid_awaiting_wechatpay_order_is_queried_at_each_point_and_left_open,
    a_wechatpay_order_closed_by_the_monitor_then_paid_is_a_late_payment_in_suspense,
);
