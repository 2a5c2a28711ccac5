//! `merchant_daily_stats`, the daily figures per merchant, mode, day, currency and channel: what
//! the order projection counts for payments and refunds on several channels, what the API (summed
//! over channels) and the console's overview (per channel, every merchant) read from it, and the
//! upgrade that added the channel (migration 0010), which folds the log again. On both backends.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use payledger_domain::{
    ids, CallbackOutcome, ChannelOrder, ChannelOrderOutcome, Currency, Mode, Money, OrderTerms,
    PaymentOrderCommand as C, RefundOutcome,
};
use payledger_projections::console::{daily_totals, DayTotals};
use payledger_projections::queries::{self, OrderScope};
use payledger_projections::{OrderProjection, PROJECTION_NAME};
use payledger_store::subscription::{checkpoint, save_checkpoint};
use payledger_store::{Database, OrderOwner, PoolConfig};
use payledger_tests::{both_backends, catch_up, migrated_database, Backend, TestDb};

/// The last migration before the daily figures had a channel.
const BEFORE_CHANNELS: i64 = 9;

fn cny(minor: i64) -> Money {
    Money::new(minor, Currency::CNY).expect("money")
}

fn terms(merchant: &str, mode: Mode, channel: &str, out_trade_no: &str, amount: i64) -> OrderTerms {
    OrderTerms {
        merchant_id: merchant.into(),
        mode,
        out_trade_no: out_trade_no.into(),
        amount: cny(amount),
        channel: channel.into(),
        method: "qr".into(),
        subject: "tea".into(),
        user_id: None,
        notify_url: None,
        return_url: None,
        expire_in_seconds: 900,
        metadata: BTreeMap::new(),
    }
}

/// One order: created on `channel`, paid when `paid`, then refunded `refund` minor units.
struct Order {
    merchant: &'static str,
    mode: Mode,
    channel: &'static str,
    out_trade_no: &'static str,
    amount: i64,
    paid: bool,
    refund: Option<i64>,
}

const ORDERS: [Order; 6] = [
    Order {
        merchant: "shop1",
        mode: Mode::Live,
        channel: "wechatpay",
        out_trade_no: "W1",
        amount: 1000,
        paid: true,
        refund: None,
    },
    Order {
        merchant: "shop1",
        mode: Mode::Live,
        channel: "alipay",
        out_trade_no: "A1",
        amount: 500,
        paid: true,
        refund: Some(200),
    },
    // Created, never paid: lowers alipay's success rate.
    Order {
        merchant: "shop1",
        mode: Mode::Live,
        channel: "alipay",
        out_trade_no: "A2",
        amount: 300,
        paid: false,
        refund: None,
    },
    Order {
        merchant: "shop2",
        mode: Mode::Live,
        channel: "alipay",
        out_trade_no: "A1",
        amount: 40,
        paid: true,
        refund: None,
    },
    // Test money stays out of every live figure.
    Order {
        merchant: "shop1",
        mode: Mode::Test,
        channel: "sandbox",
        out_trade_no: "S1",
        amount: 700,
        paid: true,
        refund: Some(700),
    },
    Order {
        merchant: "shop1",
        mode: Mode::Test,
        channel: "sandbox",
        out_trade_no: "S2",
        amount: 9,
        paid: false,
        refund: None,
    },
];

async fn write_orders(db: &Database, now: DateTime<Utc>) {
    for o in &ORDERS {
        let id = ids::order_id(o.merchant, o.mode, o.out_trade_no);
        let mut commands = vec![
            C::CreateOrder {
                order_id: id,
                terms: terms(o.merchant, o.mode, o.channel, o.out_trade_no, o.amount),
                created_at: now,
            },
            C::RecordChannelOrder {
                outcome: ChannelOrderOutcome::Opened(ChannelOrder::default()),
                recorded_at: now,
            },
        ];
        if o.paid {
            commands.push(C::ReceiveChannelCallback {
                account_id: None,
                channel: o.channel.into(),
                notify_id: format!("n-{}-{}", o.merchant, o.out_trade_no),
                channel_trade_no: format!("T-{}-{}", o.merchant, o.out_trade_no),
                outcome: CallbackOutcome::Succeeded {
                    amount: cny(o.amount),
                    paid_at: now,
                },
                received_at: now,
            });
        }
        for c in commands {
            db.execute(id, c, "test").await.expect("execute");
        }
        if let Some(amount) = o.refund {
            db.execute(
                id,
                C::RequestRefund {
                    out_refund_no: "R1".into(),
                    amount: cny(amount),
                    reason: None,
                    requested_at: now,
                },
                "test",
            )
            .await
            .expect("refund");
            db.execute(
                id,
                C::RecordRefundOutcome {
                    refund_id: ids::refund_id(id, "R1"),
                    outcome: RefundOutcome::Succeeded {
                        channel_refund_no: None,
                    },
                    recorded_at: now,
                },
                "test",
            )
            .await
            .expect("refund outcome");
        }
    }
}

/// Every row of the table: (merchant, mode, day, currency, channel, created, paid, paid minor,
/// refunds, refunded minor).
type StatsRow = (String, String, String, String, String, i64, i64, i64, i64, i64);

async fn stats_rows(db: &Database) -> Vec<StatsRow> {
    sqlx::query_as(
        "SELECT merchant_id, mode, day, currency, channel, orders_created, orders_paid, paid_minor, \
         refunds_succeeded, refunded_minor FROM merchant_daily_stats \
         ORDER BY merchant_id, mode, day, currency, channel",
    )
    .fetch_all(db.pool())
    .await
    .expect("stats rows")
}

fn expected_rows(day: &str) -> Vec<StatsRow> {
    let row = |m: &str, mode: &str, channel: &str, n: [i64; 5]| {
        (
            m.to_string(),
            mode.to_string(),
            day.to_string(),
            "CNY".to_string(),
            channel.to_string(),
            n[0],
            n[1],
            n[2],
            n[3],
            n[4],
        )
    };
    vec![
        row("shop1", "live", "alipay", [2, 1, 500, 1, 200]),
        row("shop1", "live", "wechatpay", [1, 1, 1000, 0, 0]),
        row("shop1", "test", "sandbox", [2, 1, 700, 1, 700]),
        row("shop2", "live", "alipay", [1, 1, 40, 0, 0]),
    ]
}

async fn daily_figures_are_kept_per_channel(backend: Backend) {
    let Some((_test_db, db)) = migrated_database(backend).await else {
        return;
    };
    let now = Utc::now();
    let day = now.format("%Y-%m-%d").to_string();
    write_orders(&db, now).await;
    catch_up(&db, &OrderProjection::default()).await;
    assert_eq!(stats_rows(&db).await, expected_rows(&day));

    // The API sums a merchant's channels: one row per day and currency.
    let shop1_live = OrderOwner {
        merchant_id: "shop1".into(),
        mode: Mode::Live,
    };
    let api = queries::daily_stats(db.pool(), &shop1_live, Some(&day), None)
        .await
        .expect("daily stats");
    assert_eq!(api.len(), 1, "{api:?}");
    let d = &api[0];
    assert_eq!(
        (
            d.orders_created,
            d.orders_paid,
            d.paid_amount,
            d.refunds_succeeded,
            d.refunded_amount
        ),
        (3, 2, 1500, 1, 200)
    );

    // The operators' overview: every live merchant, per channel.
    let total = |channel: &str, n: [i64; 5]| DayTotals {
        day: day.clone(),
        currency: "CNY".into(),
        channel: channel.into(),
        orders_created: n[0],
        orders_paid: n[1],
        paid_minor: n[2],
        refunds_succeeded: n[3],
        refunded_minor: n[4],
    };
    let every_live = OrderScope {
        mode: Mode::Live,
        merchant_id: None,
    };
    assert_eq!(
        daily_totals(db.pool(), &every_live, &day).await.expect("totals"),
        vec![
            total("alipay", [3, 2, 540, 1, 200]),
            total("wechatpay", [1, 1, 1000, 0, 0])
        ]
    );
    // One merchant's staff: only its own.
    let shop2 = OrderScope {
        mode: Mode::Live,
        merchant_id: Some("shop2".into()),
    };
    assert_eq!(
        daily_totals(db.pool(), &shop2, &day).await.expect("totals"),
        vec![total("alipay", [1, 1, 40, 0, 0])]
    );
    let test = OrderScope {
        mode: Mode::Test,
        merchant_id: None,
    };
    assert_eq!(
        daily_totals(db.pool(), &test, &day).await.expect("totals"),
        vec![total("sandbox", [2, 1, 700, 1, 700])]
    );
    db.close().await;
}

/// A database of before the channel column, whose order projection had folded the whole log:
/// the upgrade drops the summed rows and the checkpoint, and the projection folds the log again
/// into rows per channel, and the same order views.
async fn the_upgrade_folds_the_log_again(backend: Backend) {
    let Some(test_db) = TestDb::create(backend).await else {
        return;
    };
    let db = Database::connect(Some(&test_db.url), PoolConfig::default())
        .await
        .expect("connect");
    db.migrate_up_to(BEFORE_CHANNELS).await.expect("migrate to 0009");
    let now = Utc::now();
    let day = now.format("%Y-%m-%d").to_string();
    write_orders(&db, now).await;
    // What the projection of that version left: its figures without a channel, a view, and its
    // checkpoint at the head of the log.
    sqlx::query("INSERT INTO merchant_daily_stats VALUES ('shop1', 'live', $1, 'CNY', 3, 2, 1500, 1, 200)")
        .bind(&day)
        .execute(db.pool())
        .await
        .expect("an old row");
    sqlx::query(
        "INSERT INTO order_view (order_id, merchant_id, mode, out_trade_no, status, amount_minor, currency, \
         channel, created_at, updated_at, last_sequence, doc) \
         VALUES ('stale', 'shop1', 'live', 'OLD', 'paid', 1, 'CNY', 'alipay', 'x', 'x', 99, '{}')",
    )
    .execute(db.pool())
    .await
    .expect("an old view");
    let head = db.log().head().await.expect("head");
    save_checkpoint(db.pool(), PROJECTION_NAME, head)
        .await
        .expect("checkpoint");

    db.migrate().await.expect("upgrade");
    assert_eq!(
        checkpoint(db.pool(), PROJECTION_NAME).await.expect("checkpoint"),
        Default::default(),
        "the projection starts from the beginning of the log"
    );
    assert!(stats_rows(&db).await.is_empty());

    catch_up(&db, &OrderProjection::default()).await;
    assert_eq!(stats_rows(&db).await, expected_rows(&day));
    let views: Vec<(String,)> = sqlx::query_as("SELECT out_trade_no FROM order_view ORDER BY out_trade_no")
        .fetch_all(db.pool())
        .await
        .expect("views");
    assert_eq!(
        views.len(),
        ORDERS.len(),
        "every order folded again, the stale view gone: {views:?}"
    );
    assert!(!views.iter().any(|(n,)| n == "OLD"));
    let refunds: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM refund_view")
        .fetch_one(db.pool())
        .await
        .expect("refunds");
    assert_eq!(refunds, 2);
    db.close().await;
}

both_backends!(daily_figures_are_kept_per_channel, the_upgrade_folds_the_log_again);
