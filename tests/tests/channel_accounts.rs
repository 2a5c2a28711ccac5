//! Several accounts per channel, and the order's own account: on both backends, WeChat Pay and
//! Alipay each move to a new account (another `mch_id` / `app_id`, another simulator) while
//! orders of the old one await payment or refund. Every old order is still paid, queried and
//! refunded at the old account; new orders go to the new one; and a configuration that would
//! strand the old account's open orders (removing it, or changing its identity in place) does
//! not start.

use std::sync::{Arc, Mutex};

use payledger_channel_adapters::simulator::alipay::AlipaySimulator;
use payledger_channel_adapters::simulator::wechatpay::{SimulatorConfig, WechatPaySimulator, TEST_APP_ID, TEST_MCH_ID};
use payledger_command_api::config::ChannelAccounts;
use payledger_command_api::workers::monitor::MonitorConfig;
use payledger_domain::{ids, Mode};
use payledger_store::{Backend as StoreBackend, Database, PoolConfig};
use payledger_tests::accounts::{
    alipay_account_toml, start_alipay_simulator_for, wechatpay_account_toml, ALIPAY_APP_ID,
};
use payledger_tests::flows::{create_id, request_refund, wait_status, WAIT};
use payledger_tests::{eventually, Backend, MerchantCreds, TestServer};
use serde_json::{json, Value};
use uuid::Uuid;

/// The second WeChat Pay merchant and application.
const NEW_MCH_ID: &str = "1230000200";
const NEW_WECHAT_APP_ID: &str = "wx0000000000second";
/// The second Alipay application.
const NEW_ALIPAY_APP_ID: &str = "2021000000000002";

/// Two simulators per channel (the old account's and the new one's), and the server, whose
/// configuration the test swaps between restarts.
struct World {
    s: TestServer,
    m: MerchantCreds,
    wechat_old: WechatPaySimulator,
    wechat_new: WechatPaySimulator,
    alipay_old: AlipaySimulator,
    alipay_new: AlipaySimulator,
    /// What the next (re)start reads.
    config: Arc<Mutex<ChannelAccounts>>,
}

impl World {
    /// The account tables: `old` with `old_extra` lines (and WeChat Pay `old_mch_id`), and,
    /// when `with_new`, the `new` accounts.
    fn toml(&self, old: bool, old_extra: &str, old_mch_id: &str, with_new: bool) -> String {
        let mut toml = String::new();
        if old {
            toml += &wechatpay_account_toml("old", &self.wechat_old, old_mch_id, TEST_APP_ID, old_extra);
            toml += &alipay_account_toml(
                "old",
                &self.alipay_old,
                ALIPAY_APP_ID,
                &self.alipay_old.gateway_url(),
                old_extra,
            );
        }
        if with_new {
            toml += &wechatpay_account_toml("new", &self.wechat_new, NEW_MCH_ID, NEW_WECHAT_APP_ID, "");
            toml += &alipay_account_toml(
                "new",
                &self.alipay_new,
                NEW_ALIPAY_APP_ID,
                &self.alipay_new.gateway_url(),
                "",
            );
        }
        toml
    }

    /// Makes `toml` the configuration of the next start.
    fn configure(&self, toml: &str) {
        let accounts = ChannelAccounts::parse(toml, "payledger.toml", std::path::Path::new(".")).expect("parses");
        *self.config.lock().expect("config") = accounts;
    }

    async fn create(&self, channel: &str) -> Uuid {
        let body = json!({"out_trade_no": Uuid::new_v4().simple().to_string(), "amount": 1200, "currency": "CNY",
                          "channel": channel, "method": "qr", "subject": "Coffee"});
        Uuid::parse_str(&create_id(&self.s, &self.m.live_api_key, &body).await).expect("uuid")
    }

    async fn paid(&self, order_id: Uuid) -> Value {
        wait_status(&self.s, &self.m.live_api_key, &order_id.to_string(), "paid").await
    }

    async fn refund(&self, order_id: Uuid, amount: i64) -> Uuid {
        let r = request_refund(&self.s, &self.m.live_api_key, order_id, "R-1", amount).await;
        assert_eq!(r.status, 201, "{}", r.text);
        Uuid::parse_str(r.json["refund_id"].as_str().expect("refund_id")).expect("uuid")
    }

    async fn refund_status(&self, refund_id: Uuid, status: &str) {
        eventually(WAIT, || async {
            let r = self
                .s
                .call(
                    "GET",
                    &format!("/v1/refunds/{refund_id}"),
                    Some(&self.m.live_api_key),
                    None,
                )
                .await;
            (r.json["status"] == status).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("refund {refund_id} never became {status}"));
    }
}

/// WeChat Pay's `out_trade_no` of our order.
fn wx(order_id: Uuid) -> String {
    order_id.simple().to_string()
}

/// Alipay's `out_trade_no` of our order.
fn ali(order_id: Uuid) -> String {
    order_id.hyphenated().to_string()
}

async fn world(backend: Backend) -> Option<World> {
    let wechat_old = WechatPaySimulator::start(SimulatorConfig::for_test_account())
        .await
        .expect("simulator");
    let wechat_new = WechatPaySimulator::start(SimulatorConfig {
        mch_id: NEW_MCH_ID.into(),
        app_id: NEW_WECHAT_APP_ID.into(),
        ..SimulatorConfig::for_test_account()
    })
    .await
    .expect("simulator");
    let alipay_old = start_alipay_simulator_for(ALIPAY_APP_ID).await;
    let alipay_new = start_alipay_simulator_for(NEW_ALIPAY_APP_ID).await;
    let config = Arc::new(Mutex::new(ChannelAccounts::default()));
    let read = config.clone();
    // The monitor queries awaiting orders from 300 ms of age: how a payment whose notification
    // was lost is found.
    let s = TestServer::start_with_config(backend, move |c| {
        c.channels = read.lock().expect("config").clone();
        c.monitor = MonitorConfig {
            interval_ms: 100,
            query_schedule_ms: vec![300],
            ..MonitorConfig::default()
        };
    })
    .await?;
    let m = s.add_merchant("shop1").await;
    Some(World {
        s,
        m,
        wechat_old,
        wechat_new,
        alipay_old,
        alipay_new,
        config,
    })
}

async fn an_account_change_under_waiting_orders_loses_no_payment(backend: Backend) {
    let Some(mut w) = world(backend).await else {
        return;
    };
    // One account per channel, `old`.
    w.configure(&w.toml(true, "", TEST_MCH_ID, false));
    w.s.restart().await;
    let wx_waiting = w.create("wechatpay").await;
    let wx_lost = w.create("wechatpay").await;
    let wx_paid = w.create("wechatpay").await;
    let ali_waiting = w.create("alipay").await;
    let ali_paid = w.create("alipay").await;
    assert!(
        w.wechat_old.order(&wx(wx_waiting)).is_some(),
        "placed with the old account"
    );
    w.wechat_old.pay(&wx(wx_paid)).await.expect("delivered");
    w.alipay_old.pay(&ali(ali_paid)).await.expect("delivered");
    w.paid(wx_paid).await;
    w.paid(ali_paid).await;

    // The new accounts take the new orders; the old ones only serve theirs.
    w.configure(&w.toml(true, "new_orders = false", TEST_MCH_ID, true));
    w.s.restart().await;
    let wx_new = w.create("wechatpay").await;
    let ali_new = w.create("alipay").await;
    assert!(w.wechat_new.order(&wx(wx_new)).is_some(), "placed with the new account");
    assert!(w.wechat_old.order(&wx(wx_new)).is_none());
    assert!(
        w.alipay_new.trade(&ali(ali_new)).is_some(),
        "placed with the new account"
    );
    assert!(w.alipay_old.trade(&ali(ali_new)).is_none());

    // The old orders' notifications come from the old accounts, to the old accounts' URLs.
    let delivery = w.wechat_old.pay(&wx(wx_waiting)).await.expect("delivered");
    assert_eq!(delivery.status, 204, "the old account verified its own notification");
    assert!(
        delivery.notify_url.ends_with("/v1/callbacks/wechatpay/old"),
        "{}",
        delivery.notify_url
    );
    let delivery = w.alipay_old.pay(&ali(ali_waiting)).await.expect("delivered");
    assert!(delivery.acknowledged(), "answered {:?}", delivery.answer);
    w.paid(wx_waiting).await;
    w.paid(ali_waiting).await;
    // A payment whose notification was lost: the monitor asks the old account, which knows it.
    w.wechat_old.pay_without_notification(&wx(wx_lost)).expect("paid");
    w.paid(wx_lost).await;
    assert!(w.wechat_old.queries(&wx(wx_lost)) > 0, "queried at the old account");
    assert_eq!(w.wechat_new.queries(&wx(wx_lost)), 0, "never at the new one");
    // Refunds of the old payments go to the old accounts.
    let wx_refund = w.refund(wx_paid, 500).await;
    let at_old = eventually(WAIT, || async { w.wechat_old.refund(&wx_refund.simple().to_string()) }).await;
    assert!(at_old.is_some(), "refunded at the old account");
    assert!(w.wechat_new.refund(&wx_refund.simple().to_string()).is_none());
    w.wechat_old
        .complete_refund(&wx_refund.simple().to_string(), "SUCCESS", &Default::default())
        .await
        .expect("delivered");
    w.refund_status(wx_refund, "succeeded").await;
    let ali_refund = w.refund(ali_paid, 1200).await;
    w.refund_status(ali_refund, "succeeded").await;
    let refunded = w.alipay_old.trade(&ali(ali_paid)).expect("trade").refunds;
    assert_eq!(refunded.get(&ali_refund.hyphenated().to_string()), Some(&1200));
    // And the new ones are paid at the new accounts.
    w.wechat_new.pay(&wx(wx_new)).await.expect("delivered");
    w.alipay_new.pay(&ali(ali_new)).await.expect("delivered");
    w.paid(wx_new).await;
    w.paid(ali_new).await;

    // One more order waits at the old account (placed while it took new orders).
    w.configure(&w.toml(true, "", TEST_MCH_ID, false));
    w.s.restart().await;
    let wx_open = w.create("wechatpay").await;
    // Removing the old account now would strand it: the server does not start, and says why.
    w.configure(&w.toml(false, "", TEST_MCH_ID, true));
    let refused = w.s.try_restart().await.expect_err("refused");
    assert!(refused.contains("wechatpay.old"), "{refused}");
    assert!(refused.contains("1 open order"), "{refused}");
    // Nor may its merchant id change in place under that order.
    w.configure(&w.toml(true, "", "1239999999", true));
    let refused = w.s.try_restart().await.expect_err("refused");
    assert!(refused.contains("mch_id=1230000109"), "{refused}");
    assert!(refused.contains("new account"), "{refused}");
    // Kept, closed to new orders: the order is paid at the old account.
    w.configure(&w.toml(true, "new_orders = false", TEST_MCH_ID, true));
    w.s.restart().await;
    w.wechat_old.pay(&wx(wx_open)).await.expect("delivered");
    w.paid(wx_open).await;
    // Now nothing is open at the old account: it may go.
    w.configure(&w.toml(false, "", TEST_MCH_ID, true));
    w.s.try_restart().await.expect("starts without the old account");
    // Its paid orders can no longer be refunded through payledger: said at once, not left pending.
    let r = request_refund(&w.s, &w.m.live_api_key, wx_paid, "R-2", 100).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("channel-account-unavailable"), "{}", r.text);
    let r =
        w.s.call("POST", "/v1/callbacks/wechatpay/old", None, Some(&json!({})))
            .await;
    assert_eq!(r.status, 404, "{}", r.text);
}

/// Stores a WeChat Pay order awaiting payment of `merchant` as payledger wrote it before
/// accounts were recorded (and before modes): `OrderCreated` and `ChannelOrderOpened` 1.0.
async fn insert_v1_wechatpay_order(url: &str, merchant: &str, out_trade_no: &str) -> Uuid {
    let db = Database::connect(Some(url), PoolConfig::default())
        .await
        .expect("connect");
    let order_id = ids::order_id(merchant, Mode::Live, out_trade_no);
    let now = chrono::Utc::now();
    let ts = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let rows = [
        (
            1,
            "OrderCreated",
            json!({"OrderCreated": {"order_id": order_id, "created_at": ts(now),
                "expire_at": ts(now + chrono::Duration::hours(1)),
                "terms": {"amount": {"amount_minor": 1999, "currency": "CNY"}, "channel": "wechatpay",
                          "expire_in_seconds": 3600, "merchant_id": merchant, "metadata": {}, "method": "qr",
                          "notify_url": null, "out_trade_no": out_trade_no, "return_url": null,
                          "subject": "Green tea", "user_id": null}}}),
        ),
        (
            2,
            "ChannelOrderOpened",
            json!({"ChannelOrderOpened": {"channel_order": {"channel_ref": null, "pay_url": null,
                "qr_code": "weixin://wxpay/bizpayurl?pr=v1"}, "opened_at": ts(now)}}),
        ),
    ];
    let sql = match db.backend() {
        StoreBackend::Postgres => {
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             VALUES ('PaymentOrder', $1, $2, $3, '1.0', CAST($4 AS jsonb), CAST($5 AS jsonb))"
        }
        StoreBackend::Sqlite => {
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             VALUES ('PaymentOrder', $1, $2, $3, '1.0', $4, $5)"
        }
    };
    for (sequence, event_type, payload) in rows {
        sqlx::query(sql)
            .bind(order_id.to_string())
            .bind(sequence)
            .bind(event_type)
            .bind(payload.to_string())
            .bind(json!({"actor": format!("merchant:{merchant}")}).to_string())
            .execute(db.pool())
            .await
            .expect("a stored v1 row");
    }
    db.close().await;
    order_id
}

async fn orders_from_before_accounts_keep_the_account_they_were_placed_with(backend: Backend) {
    let Some(mut w) = world(backend).await else {
        return;
    };
    // The first start with accounts pins each channel's only account as its legacy account.
    w.configure(&w.toml(true, "", TEST_MCH_ID, false));
    w.s.restart().await;
    w.s.stop().await;
    let v1 = insert_v1_wechatpay_order(&w.s.db.url, &w.m.merchant_id, "V1-WX").await;

    // That account's merchant id changed in place under the old order: refused, though the
    // order never recorded its account.
    w.configure(&w.toml(true, "", "1239999999", true));
    let refused = w.s.try_restart().await.expect_err("refused");
    assert!(refused.contains("opened before accounts were recorded"), "{refused}");
    assert!(refused.contains("1 open order"), "{refused}");

    // A second account beside it (no `legacy` mark needed: the pin holds): the old order is
    // asked about at the account it was placed with, never at the new one.
    w.configure(&w.toml(true, "", TEST_MCH_ID, true));
    w.s.try_restart().await.expect("starts");
    let view = wait_status(&w.s, &w.m.live_api_key, &v1.to_string(), "awaiting_payment").await;
    assert_eq!(view["channel"], "wechatpay");
    let asked = eventually(WAIT, || async { (w.wechat_old.queries(&wx(v1)) > 0).then_some(()) }).await;
    assert!(asked.is_some(), "the monitor asks the pinned account");
    assert_eq!(w.wechat_new.queries(&wx(v1)), 0);
}

payledger_tests::both_backends!(
    an_account_change_under_waiting_orders_loses_no_payment,
    orders_from_before_accounts_keep_the_account_they_were_placed_with,
);
