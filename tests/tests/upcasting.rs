//! Events stored by an older version still load after their payload changed. The fixture
//! `tests/fixtures/events_v1.json` holds real rows written by payledger before
//! `ChannelOrderFailed` 2.0 (which added `retryable`): a paid and partly refunded order and two
//! orders whose channel order failed (unreachable, refused), all on the sandbox and written
//! before `OrderCreated` 2.0 (which added `terms.mode`) and `ChannelOrderOpened` 2.0 (which added
//! `account`). On both backends they are inserted as
//! stored rows into a database of that time (migrations up to 0006), the database is upgraded,
//! and they are read through the global log, the aggregate, the flows and the projections.

use payledger_channel_adapters::simulator::wechatpay::{SimulatorConfig, WechatPaySimulator};
use payledger_channel_adapters::Channels;
use payledger_command_api::flows::Flows;
use payledger_domain::{
    ids, Currency, Mode, Money, OrderError, OrderStatus, PaymentOrderCommand as C, PaymentOrderEvent as E,
    CHANNEL_ORDER_FAILED_VERSION,
};
use payledger_projections::{queries, JournalProjection, OrderProjection};
use payledger_store::{Backend as StoreBackend, Database, ExecuteError, OrderOwner, PoolConfig};
use payledger_tests::accounts::wechatpay_accounts;
use payledger_tests::{catch_up, Backend, TestDb};
use serde_json::Value;

const FIXTURE: &str = include_str!("../fixtures/events_v1.json");
const MERCHANT: &str = "shop_v1";

/// The last migration before test and live mode.
const BEFORE_MODES: i64 = 6;

/// The id the fixture's orders have: ids of before modes, which live orders keep.
fn v1_order_id(out_trade_no: &str) -> uuid::Uuid {
    ids::legacy_test_order_id(MERCHANT, out_trade_no)
}

fn owner(mode: Mode) -> OrderOwner {
    OrderOwner {
        merchant_id: MERCHANT.into(),
        mode,
    }
}

async fn insert_fixture(db: &Database) {
    let rows: Vec<Value> = serde_json::from_str(FIXTURE).expect("fixture");
    assert_eq!(rows.len(), 9);
    let sql = match db.backend() {
        StoreBackend::Postgres => {
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             VALUES ($1, $2, $3, $4, $5, CAST($6 AS jsonb), CAST($7 AS jsonb))"
        }
        StoreBackend::Sqlite => {
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
        }
    };
    for r in rows {
        assert_eq!(r["event_version"], "1.0", "the fixture holds version 1.0 rows");
        sqlx::query(sql)
            .bind(r["aggregate_type"].as_str().expect("type"))
            .bind(r["aggregate_id"].as_str().expect("id"))
            .bind(r["sequence"].as_i64().expect("sequence"))
            .bind(r["event_type"].as_str().expect("event_type"))
            .bind(r["event_version"].as_str().expect("version"))
            .bind(r["payload"].to_string())
            .bind(r["metadata"].to_string())
            .execute(db.pool())
            .await
            .expect("insert a stored v1 row");
    }
}

async fn version_1_events_still_load(backend: Backend) {
    let Some(test_db) = TestDb::create(backend).await else {
        return;
    };
    let db = Database::connect(Some(&test_db.url), PoolConfig::default())
        .await
        .expect("connect");
    db.migrate_up_to(BEFORE_MODES).await.expect("migrate to 0006");
    insert_fixture(&db).await;
    // A notification of the paid order, queued before the upgrade.
    sqlx::query(
        "INSERT INTO notify_job (notification_id, merchant_id, order_id, event_type, notify_url, body, status, \
         attempts, next_attempt_at, created_at, updated_at) VALUES ('n-v1', $1, $2, 'payment.succeeded', \
         'https://shop.example/n', '{}', 'delivered', 1, '2026-01-01T00:00:00.000000Z', \
         '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
    )
    .bind(MERCHANT)
    .bind(v1_order_id("V1-PAID").to_string())
    .execute(db.pool())
    .await
    .expect("a queued notification");
    db.migrate().await.expect("upgrade");

    // The upgrade: sandbox orders are test orders, their notifications too, and the flows
    // are told that test orders from before keep their ids.
    let mode: String = sqlx::query_scalar("SELECT mode FROM notify_job WHERE notification_id = 'n-v1'")
        .fetch_one(db.pool())
        .await
        .expect("mode");
    assert_eq!(mode, "test");
    let flows = Flows::open(db.clone(), Channels::default()).await.expect("flows");
    assert!(flows.legacy_test_ids, "the migration marks the legacy test ids");

    // The global log upcasts: `retryable` comes from what 1.0 wrote in the message.
    for (out_trade_no, retryable) in [("V1-UNAVAILABLE", true), ("V1-REFUSED", false)] {
        let events = db
            .log()
            .order_events(v1_order_id(out_trade_no))
            .await
            .expect("order events");
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[1].event_version, "1.0",
            "the stored version is reported as stored"
        );
        match &events[1].event {
            E::ChannelOrderFailed { code, retryable: r, .. } => {
                assert_eq!(code, "channel_error");
                assert_eq!(*r, retryable, "{out_trade_no}");
            }
            other => panic!("expected ChannelOrderFailed, got {other:?}"),
        }
    }

    // ChannelOrderOpened 1.0 did not say which account opened the order: account `None`, the
    // channel's legacy account.
    let paid = v1_order_id("V1-PAID");
    let events = db.log().order_events(paid).await.expect("order events");
    let opened = events
        .iter()
        .find(|e| matches!(e.event, E::ChannelOrderOpened { .. }))
        .expect("ChannelOrderOpened");
    assert_eq!(opened.event_version, "1.0", "the stored version is reported as stored");
    match &opened.event {
        E::ChannelOrderOpened {
            account, channel_order, ..
        } => {
            assert_eq!(*account, None);
            assert!(channel_order.pay_url.is_some(), "the rest of the payload is kept");
        }
        other => panic!("expected ChannelOrderOpened, got {other:?}"),
    }
    let state = flows.order(paid).await.expect("load").expect("order");
    assert_eq!(state.channel_account, None);

    // The aggregate loads them and decides on them.
    let failed = v1_order_id("V1-UNAVAILABLE");
    let close = db
        .execute(
            failed,
            C::CloseOrder {
                reason: payledger_domain::CloseReason::Cancelled,
                closed_at: chrono::Utc::now(),
            },
            "test",
        )
        .await;
    assert!(
        matches!(
            close,
            Err(ExecuteError::Rejected(OrderError::InvalidState {
                status: OrderStatus::Failed,
                ..
            }))
        ),
        "{close:?}"
    );
    let paid = v1_order_id("V1-PAID");
    // OrderCreated 1.0 is upcast: an order on the sandbox is a test order.
    let created = &db.log().order_events(paid).await.expect("events")[0];
    match &created.event {
        E::OrderCreated { terms, .. } => assert_eq!(terms.mode, Mode::Test),
        other => panic!("expected OrderCreated, got {other:?}"),
    }
    // Creating it again in test mode, as the merchant's retry would, finds it under its old
    // id: no second order.
    let E::OrderCreated { terms, .. } = created.event.clone() else {
        unreachable!()
    };
    let again = flows
        .place_order(terms.clone(), "test", chrono::Utc::now())
        .await
        .expect("a repeat");
    assert_eq!((again.order_id, again.is_new), (paid, false));
    // A live order with the same number is a new order beside it: test data neither blocks it
    // nor shows through a conflict; a retry finds it.
    let wechat = WechatPaySimulator::start(SimulatorConfig::for_test_account())
        .await
        .expect("WeChat Pay simulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut channels = Channels::default();
    for c in wechatpay_accounts(&wechat, dir.path())
        .channels("http://127.0.0.1:9")
        .expect("channels")
    {
        channels = channels.with(c.0);
    }
    let live_flows = Flows {
        channels,
        ..flows.clone()
    };
    let live_terms = payledger_domain::OrderTerms {
        mode: Mode::Live,
        channel: "wechatpay".into(),
        method: "qr".into(),
        ..terms
    };
    let live = live_flows
        .place_order(live_terms.clone(), "test", chrono::Utc::now())
        .await
        .unwrap_or_else(|e| panic!("the live order is placed beside the test one: {e}"));
    assert!(live.is_new && live.channel_error.is_none(), "{live:?}");
    assert_eq!(
        live.order_id,
        ids::live_order_id_beside_legacy_test(MERCHANT, "V1-PAID")
    );
    let retry = live_flows
        .place_order(live_terms, "test", chrono::Utc::now())
        .await
        .expect("a repeat");
    assert_eq!((retry.order_id, retry.is_new), (live.order_id, false));
    let refund = db
        .execute(
            paid,
            C::RequestRefund {
                out_refund_no: "R-2".into(),
                amount: Money::new(1001, Currency::CNY).expect("money"),
                reason: None,
                requested_at: chrono::Utc::now(),
            },
            "test",
        )
        .await;
    assert!(
        matches!(
            refund,
            Err(ExecuteError::Rejected(OrderError::RefundExceedsRefundable {
                refundable_minor: 1000,
                ..
            }))
        ),
        "1999 paid, 999 refunded in v1 events: {refund:?}"
    );

    // New failures are written as the current version.
    let fresh = ids::order_id(MERCHANT, Mode::Test, "V2-NEW");
    let mut created: Value = serde_json::from_str::<Vec<Value>>(FIXTURE).expect("fixture")[0]["payload"].clone();
    created["OrderCreated"]["order_id"] = Value::String(fresh.to_string());
    created["OrderCreated"]["terms"]["out_trade_no"] = Value::String("V2-NEW".into());
    created["OrderCreated"]["terms"]["mode"] = Value::String("test".into());
    let E::OrderCreated { terms, created_at, .. } = serde_json::from_value(created).expect("an OrderCreated") else {
        panic!("not an OrderCreated")
    };
    db.execute(
        fresh,
        C::CreateOrder {
            order_id: fresh,
            terms,
            created_at,
        },
        "test",
    )
    .await
    .expect("create");
    db.execute(
        fresh,
        C::RecordChannelOrder {
            outcome: payledger_domain::ChannelOrderOutcome::Failed {
                code: "channel_unavailable".into(),
                message: "channel unavailable: timeout".into(),
                retryable: true,
            },
            recorded_at: chrono::Utc::now(),
        },
        "test",
    )
    .await
    .expect("record failure");
    let version: String =
        sqlx::query_scalar("SELECT event_version FROM events WHERE aggregate_id = $1 AND sequence = 2")
            .bind(fresh.to_string())
            .fetch_one(db.pool())
            .await
            .expect("version");
    assert_eq!(version, CHANNEL_ORDER_FAILED_VERSION);

    // The projections build from them.
    let views = OrderProjection::default();
    catch_up(&db, &views).await;
    let journal = JournalProjection::default();
    catch_up(&db, &journal).await;
    let view = queries::order(db.pool(), &owner(Mode::Test), paid)
        .await
        .expect("query")
        .expect("the v1 order");
    assert_eq!(view.status, OrderStatus::PartiallyRefunded);
    assert_eq!((view.paid_amount, view.refunded_amount), (1999, 999));
    assert_eq!(view.mode, Mode::Test);
    let balances = queries::balances(db.pool(), &owner(Mode::Test))
        .await
        .expect("balances");
    let payable = balances
        .iter()
        .find(|b| b.account == "merchant_payable:shop_v1")
        .expect("payable");
    assert_eq!(payable.balance, 1000);
    // Live mode sees none of it.
    assert_eq!(
        queries::order(db.pool(), &owner(Mode::Live), paid)
            .await
            .expect("query"),
        None
    );
    assert!(queries::balances(db.pool(), &owner(Mode::Live))
        .await
        .expect("balances")
        .is_empty());
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_1_events_still_load_on_sqlite() {
    version_1_events_still_load(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_1_events_still_load_on_postgres() {
    version_1_events_still_load(Backend::Postgres).await;
}
