//! `reconcile --statement`: a ledger with known payments and refunds on one channel, and a
//! statement in each supported format (generic CSV, WeChat Pay trade bill, Alipay 业务明细 in
//! GBK) with planted discrepancies; every one is found, nothing else is reported. On both
//! backends.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use payledger_channel_adapters::statement::{self, StatementFormat};
use payledger_command_api::ops;
use payledger_domain::{
    ids, CallbackOutcome, ChannelAccountRef, ChannelOrder, ChannelOrderOutcome, Currency, Mode, Money, OrderTerms,
    PaymentOrderCommand as C, RefundOutcome,
};
use payledger_projections::reconcile::{self, DiscrepancyKind, ItemKind};
use payledger_projections::{JournalProjection, OrderProjection};
use payledger_store::Database;
use payledger_tests::{catch_up, migrated_database, Backend};
use uuid::Uuid;

const MERCHANT: &str = "shop1";
/// The statement's day, China Standard Time.
const DAY: &str = "2026-11-20";

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc)
}

fn cny(minor: i64) -> Money {
    Money::new(minor, Currency::CNY).expect("money")
}

/// One order of the ledger: paid under `trade` at `paid_at`, optionally refunded.
struct Paid {
    out_trade_no: &'static str,
    amount: i64,
    trade: &'static str,
    paid_at: &'static str,
    refund: Option<(&'static str, i64, &'static str)>,
}

const LEDGER: [Paid; 4] = [
    Paid {
        out_trade_no: "O1",
        amount: 1000,
        trade: "T1",
        paid_at: "2026-11-20T02:00:00Z",
        refund: Some(("R1", 300, "2026-11-20T06:00:00Z")),
    },
    Paid {
        out_trade_no: "O2",
        amount: 2000,
        trade: "T2",
        paid_at: "2026-11-20T03:00:00Z",
        refund: Some(("R2", 500, "2026-11-20T07:00:00Z")),
    },
    // On the day, but the channel's statement does not list it.
    Paid {
        out_trade_no: "O3",
        amount: 3000,
        trade: "T3",
        paid_at: "2026-11-20T04:00:00Z",
        refund: None,
    },
    // 23:59:59 the day before in China: the channel lists it on the day; matched by reference.
    Paid {
        out_trade_no: "O4",
        amount: 400,
        trade: "T4",
        paid_at: "2026-11-19T15:59:59Z",
        refund: None,
    },
];

fn order_id(out_trade_no: &str) -> Uuid {
    ids::order_id(MERCHANT, Mode::Live, out_trade_no)
}

fn refund_id(out_trade_no: &str, out_refund_no: &str) -> Uuid {
    ids::refund_id(order_id(out_trade_no), out_refund_no)
}

/// The terms of a QR order of `amount` minor units on `channel`, in the mode that channel is
/// reached in. (The generic statement is the sandbox's: its orders are test orders, and their
/// ids, made by `order_id`, are only names here.)
fn terms(channel: &str, out_trade_no: &str, amount: i64) -> OrderTerms {
    OrderTerms {
        merchant_id: MERCHANT.into(),
        mode: Mode::of_legacy_channel(channel),
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

async fn build_ledger(db: &Database, channel: &str) {
    for p in &LEDGER {
        let id = order_id(p.out_trade_no);
        let paid_at = t(p.paid_at);
        let commands = [
            C::CreateOrder {
                order_id: id,
                terms: terms(channel, p.out_trade_no, p.amount),
                created_at: paid_at - chrono::Duration::minutes(1),
            },
            C::RecordChannelOrder {
                outcome: ChannelOrderOutcome::Opened(ChannelOrder::default()),
                recorded_at: paid_at - chrono::Duration::minutes(1),
            },
            C::ReceiveChannelCallback {
                account_id: None,
                channel: channel.into(),
                notify_id: format!("n-{}", p.trade),
                channel_trade_no: p.trade.into(),
                outcome: CallbackOutcome::Succeeded {
                    amount: cny(p.amount),
                    paid_at,
                },
                received_at: paid_at,
            },
        ];
        for c in commands {
            db.execute(id, c, "test").await.expect("execute");
        }
        if let Some((no, amount, at)) = p.refund {
            db.execute(
                id,
                C::RequestRefund {
                    out_refund_no: no.into(),
                    amount: cny(amount),
                    reason: None,
                    requested_at: t(at),
                },
                "test",
            )
            .await
            .expect("refund");
            db.execute(
                id,
                C::RecordRefundOutcome {
                    refund_id: refund_id(p.out_trade_no, no),
                    outcome: RefundOutcome::Succeeded {
                        channel_refund_no: None,
                    },
                    recorded_at: t(at),
                },
                "test",
            )
            .await
            .expect("refund outcome");
        }
    }
    let journal = JournalProjection::default();
    catch_up(db, &journal).await;
}

/// The statement the channel sends: O1 and its refund as booked; O2 for 21.00 instead of
/// 20.00 and its refund still processing; O4; a payment T9 of an order the ledger never saw;
/// no O3.
struct Planted {
    /// (out_trade_no, trade, yuan, CST time)
    payments: Vec<(String, &'static str, &'static str, &'static str)>,
    /// (out_trade_no, trade, out_refund_no, yuan, status, CST time)
    refunds: Vec<(String, &'static str, String, &'static str, &'static str, &'static str)>,
}

fn planted(order_key: impl Fn(Uuid) -> String, with_processing_refund: bool) -> Planted {
    let mut refunds = vec![(
        order_key(order_id("O1")),
        "T1",
        order_key(refund_id("O1", "R1")),
        "3.00",
        "SUCCESS",
        "2026-11-20 14:00:00",
    )];
    if with_processing_refund {
        refunds.push((
            order_key(order_id("O2")),
            "T2",
            order_key(refund_id("O2", "R2")),
            "5.00",
            "PROCESSING",
            "2026-11-20 15:00:00",
        ));
    }
    Planted {
        payments: vec![
            (order_key(order_id("O1")), "T1", "10.00", "2026-11-20 10:00:00"),
            (order_key(order_id("O2")), "T2", "21.00", "2026-11-20 11:00:00"),
            (order_key(order_id("O4")), "T4", "4.00", "2026-11-20 00:00:01"),
            (order_key(Uuid::new_v4()), "T9", "5.00", "2026-11-20 13:00:00"),
        ],
        refunds,
    }
}

fn yuan_to_minor(y: &str) -> i64 {
    let (a, b) = y.split_once('.').expect("two decimals");
    a.parse::<i64>().expect("yuan") * 100 + b.parse::<i64>().expect("fen")
}

fn generic(p: &Planted) -> Vec<u8> {
    let mut s = String::from(
        "type,out_trade_no,channel_trade_no,out_refund_no,channel_refund_no,amount_minor,currency,fee_minor,status,occurred_at\n",
    );
    let iso = |cst: &str| format!("{}+08:00", cst.replace(' ', "T"));
    for (o, trade, y, at) in &p.payments {
        s += &format!("payment,{o},{trade},,,{},CNY,,SUCCESS,{}\n", yuan_to_minor(y), iso(at));
    }
    for (o, trade, r, y, status, at) in &p.refunds {
        s += &format!(
            "refund,{o},{trade},{r},,{},CNY,,{status},{}\n",
            yuan_to_minor(y),
            iso(at)
        );
    }
    s.into_bytes()
}

fn fmt_yuan(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

fn wechatpay(p: &Planted) -> Vec<u8> {
    let mut s = String::from(
        "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,\
         应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,\
         手续费,费率,订单金额,申请退款金额,费率备注\n",
    );
    let (mut settled, mut refunded, mut ordered) = (0, 0, 0);
    for (o, trade, y, at) in &p.payments {
        settled += yuan_to_minor(y);
        ordered += yuan_to_minor(y);
        s += &format!(
            "`{at},`wx8888888888888888,`1900000109,`0,`,`{trade},`{o},`openid,`NATIVE,`SUCCESS,`OTHERS,`CNY,`{y},`0.00,\
             `0,`0,`0.00,`0.00,`,`,`tea,`,`0.00000,`0.60%,`{y},`0.00,`\n"
        );
    }
    for (o, trade, r, y, status, at) in &p.refunds {
        refunded += yuan_to_minor(y);
        s += &format!(
            "`{at},`wx8888888888888888,`1900000109,`0,`,`{trade},`{o},`openid,`NATIVE,`REFUND,`OTHERS,`CNY,`0.00,`0.00,\
             `5030000{trade},`{r},`{y},`0.00,`ORIGINAL,`{status},`tea,`,`0.00000,`0.60%,`0.00,`{y},`\n"
        );
    }
    s += "\n总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\n";
    s += &format!(
        "`{},`{},`{},`0.00,`0.00000,`{},`{}\n",
        p.payments.len() + p.refunds.len(),
        fmt_yuan(settled),
        fmt_yuan(refunded),
        fmt_yuan(ordered),
        fmt_yuan(refunded)
    );
    s.into_bytes()
}

fn alipay(p: &Planted) -> Vec<u8> {
    let mut s = String::from(
        "#支付宝业务明细查询\n#账号：[20880211096256330156]\n#起始日期：[2026年11月20日 00:00:00]   终止日期：[2026年11月21日 00:00:00]\n\
         #-----------------------------------------业务明细列表----------------------------------------\n\
         支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,\
         商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,\
         商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注\n",
    );
    let (mut paid, mut refunded) = (0, 0);
    for (o, trade, y, at) in &p.payments {
        paid += yuan_to_minor(y);
        s += &format!(
            "{trade}\t,{o}\t,交易\t,tea,{at},{at},\t,\t,\t,\t,buyer\t,{y},{y},0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,\t,0.00,0.00,\n"
        );
    }
    for (o, trade, r, y, _, at) in &p.refunds {
        refunded += yuan_to_minor(y);
        s += &format!(
            "{trade}\t,{o}\t,退款\t,tea,{at},{at},\t,\t,\t,\t,buyer\t,-{y},-{y},0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,{r}\t,0.00,0.00,\n"
        );
    }
    s += "#-----------------------------------------业务明细列表结束------------------------------------\n";
    s += &format!(
        "#交易合计：{}笔，商家实收共{}元，商家优惠共0.00元\n",
        p.payments.len(),
        fmt_yuan(paid)
    );
    s += &format!(
        "#退款合计：{}笔，商家实收退款共-{}元，商家优惠退款共0.00元\n",
        p.refunds.len(),
        fmt_yuan(refunded)
    );
    s += "#导出时间：[2026年11月21日 05:46:49]\n";
    let (bytes, _, unmappable) = encoding_rs::GBK.encode(&s);
    assert!(!unmappable);
    bytes.into_owned()
}

async fn finds_every_planted_discrepancy(backend: Backend, format: StatementFormat) {
    let Some((_test_db, db)) = migrated_database(backend).await else {
        return;
    };
    let (channel, bytes, refund_processing) = match format {
        StatementFormat::Generic => ("sandbox", generic(&planted(|u| u.to_string(), true)), true),
        StatementFormat::WechatPayTradeBill => {
            ("wechatpay", wechatpay(&planted(|u| u.simple().to_string(), true)), true)
        }
        // Alipay's detail file lists only completed refunds: R2 is simply absent.
        StatementFormat::AlipayTradeStatement => ("alipay", alipay(&planted(|u| u.to_string(), false)), false),
    };
    build_ledger(&db, channel).await;
    assert_eq!(statement::detect(&bytes), Some(format));
    let parsed = statement::parse(format, &bytes).expect("a valid statement");
    let day = NaiveDate::parse_from_str(DAY, "%Y-%m-%d").unwrap();

    // The generic file's times are in UTC for the sandbox channel's day, so name the day; the
    // Chinese channels' days are told from the lines themselves.
    let date = (channel == "sandbox").then_some(day);
    let report = reconcile::reconcile(db.pool(), channel, &reconcile::AccountScope::all(), &parsed, date)
        .await
        .expect("reconcile");
    assert_eq!(report.date, DAY);
    let mut found: Vec<(DiscrepancyKind, ItemKind, Option<String>)> = report
        .discrepancies
        .iter()
        .map(|d| (d.kind, d.item, d.reference.clone()))
        .collect();
    found.sort();
    let r2 = refund_id("O2", "R2").to_string();
    let mut expected = vec![
        (
            DiscrepancyKind::AmountDiffers,
            ItemKind::Payment,
            Some("T2".to_string()),
        ),
        (
            DiscrepancyKind::MissingInLedger,
            ItemKind::Payment,
            Some("T9".to_string()),
        ),
        (
            DiscrepancyKind::MissingAtChannel,
            ItemKind::Payment,
            Some("T3".to_string()),
        ),
        if refund_processing {
            (DiscrepancyKind::StatusDiffers, ItemKind::Refund, Some(r2))
        } else {
            (DiscrepancyKind::MissingAtChannel, ItemKind::Refund, Some(r2))
        },
    ];
    // O4 was paid the day before (15:59:59Z: 23:59:59 in China, and a UTC day earlier too); the
    // statement's line for it still matches by reference, so it is not reported.
    expected.sort();
    assert_eq!(found, expected, "{report:#?}");
    let amount = report
        .discrepancies
        .iter()
        .find(|d| d.kind == DiscrepancyKind::AmountDiffers)
        .expect("amount differs");
    assert_eq!(
        (amount.statement_amount_minor, amount.ledger_amount_minor),
        (Some(2100), Some(2000))
    );
    assert_eq!(amount.order_id.as_deref(), Some(order_id("O2").to_string().as_str()));
    // O1, O4 and R1 match exactly.
    assert_eq!(report.matched, 3, "{report:#?}");
    let ledger = &report.ledger_totals["CNY"];
    // On the day: O1, O2, O3 (O4 was the day before); refunds R1, R2.
    assert_eq!(
        (
            ledger.payments,
            ledger.payments_minor,
            ledger.refunds,
            ledger.refunds_minor
        ),
        (3, 6000, 2, 800)
    );
    let statement = &report.statement_totals["CNY"];
    assert_eq!((statement.payments, statement.payments_minor), (4, 4000));
    assert_eq!((statement.refunds, statement.refunds_minor), (1, 300));
    db.close().await;
}

macro_rules! formats_on_both_backends {
    ($($name:ident: $format:expr),* $(,)?) => {
        mod sqlite {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { finds_every_planted_discrepancy(Backend::Sqlite, $format).await })*
        }
        mod postgres {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { finds_every_planted_discrepancy(Backend::Postgres, $format).await })*
        }
    };
}

formats_on_both_backends!(
    generic_csv: StatementFormat::Generic,
    wechatpay_trade_bill: StatementFormat::WechatPayTradeBill,
    alipay_trade_statement: StatementFormat::AlipayTradeStatement,
);

/// Pays `out_trade_no` on `channel` through `account` (`PlaceOrder`, as the flows record it),
/// with trade `trade` at `paid_at`.
async fn paid_with_account(db: &Database, channel: &str, account: &str, out_trade_no: &str, amount: i64, trade: &str) {
    let id = order_id(out_trade_no);
    let paid_at = t("2026-11-20T04:00:00Z");
    let terms = terms(channel, out_trade_no, amount);
    let commands = [
        C::PlaceOrder {
            order_id: id,
            terms,
            created_at: paid_at - chrono::Duration::minutes(1),
            outcome: ChannelOrderOutcome::Opened(ChannelOrder::default()),
            account: Some(ChannelAccountRef {
                id: account.into(),
                app_id: Some(format!("app-{account}")),
                mch_id: None,
            }),
            recorded_at: paid_at - chrono::Duration::minutes(1),
        },
        C::ReceiveChannelCallback {
            account_id: Some(account.into()),
            channel: channel.into(),
            notify_id: format!("n-{trade}"),
            channel_trade_no: trade.into(),
            outcome: CallbackOutcome::Succeeded {
                amount: cny(amount),
                paid_at,
            },
            received_at: paid_at,
        },
    ];
    for c in commands {
        db.execute(id, c, "test").await.expect("execute");
    }
}

/// A statement is one channel account's: reconciled with that account's orders, it is clean;
/// with every account's, the other account's payment is "missing at the channel"; and the
/// command refuses to guess which account a statement is when the channel has several.
async fn a_statement_is_reconciled_with_its_own_accounts_orders(backend: Backend) {
    let Some((_test_db, db)) = migrated_database(backend).await else {
        return;
    };
    paid_with_account(&db, "alipay", "a", "A1", 100, "TA1").await;
    paid_with_account(&db, "alipay", "b", "B1", 200, "TB1").await;
    catch_up(&db, &JournalProjection::default()).await;
    catch_up(&db, &OrderProjection::default()).await;

    let a1 = order_id("A1").to_string();
    let csv = format!(
        "type,out_trade_no,channel_trade_no,out_refund_no,channel_refund_no,amount_minor,currency,fee_minor,status,occurred_at\n\
         payment,{a1},TA1,,,100,CNY,,SUCCESS,2026-11-20T12:00:00+08:00\n"
    );
    let parsed = statement::parse(StatementFormat::Generic, csv.as_bytes()).expect("a valid statement");
    let of_a = reconcile::AccountScope {
        account: Some("a".into()),
        with_legacy: false,
    };
    let report = reconcile::reconcile(db.pool(), "alipay", &of_a, &parsed, None)
        .await
        .expect("reconcile");
    assert_eq!((report.matched, report.discrepancies.len()), (1, 0), "{report:?}");
    assert_eq!(report.account.as_deref(), Some("a"));
    let report = reconcile::reconcile(db.pool(), "alipay", &reconcile::AccountScope::all(), &parsed, None)
        .await
        .expect("reconcile");
    let missing: Vec<_> = report
        .discrepancies
        .iter()
        .map(|d| (d.kind, d.reference.clone()))
        .collect();
    assert_eq!(missing, [(DiscrepancyKind::MissingAtChannel, Some("TB1".to_string()))]);

    // An order from before accounts were recorded is the legacy account's: in its scope only.
    let legacy = order_id("L1");
    for c in [
        C::CreateOrder {
            order_id: legacy,
            terms: terms("alipay", "L1", 100),
            created_at: t("2026-11-20T03:00:00Z"),
        },
        C::RecordChannelOrder {
            outcome: ChannelOrderOutcome::Opened(ChannelOrder::default()),
            recorded_at: t("2026-11-20T03:00:00Z"),
        },
        C::ReceiveChannelCallback {
            account_id: None,
            channel: "alipay".into(),
            notify_id: "n-TL1".into(),
            channel_trade_no: "TL1".into(),
            outcome: CallbackOutcome::Succeeded {
                amount: cny(100),
                paid_at: t("2026-11-20T04:00:00Z"),
            },
            received_at: t("2026-11-20T04:00:00Z"),
        },
    ] {
        db.execute(legacy, c, "test").await.expect("execute");
    }
    catch_up(&db, &JournalProjection::default()).await;
    catch_up(&db, &OrderProjection::default()).await;
    for (with_legacy, expected) in [(false, vec![]), (true, vec![Some("TL1".to_string())])] {
        let scope = reconcile::AccountScope {
            account: Some("a".into()),
            with_legacy,
        };
        let report = reconcile::reconcile(db.pool(), "alipay", &scope, &parsed, None)
            .await
            .expect("reconcile");
        let missing: Vec<_> = report.discrepancies.iter().map(|d| d.reference.clone()).collect();
        assert_eq!(missing, expected, "with_legacy {with_legacy}");
    }

    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("statement.csv");
    std::fs::write(&file, &csv).expect("statement file");
    let refused = payledger_command_api::ops::statement(&db, &file, "alipay", None, None, ops::Format::Json)
        .await
        .expect_err("which account's statement?");
    assert!(refused.to_string().contains("a, b"), "{refused}");
    assert!(refused.to_string().contains("before accounts"), "{refused}");
    assert!(refused.to_string().contains("--account"), "{refused}");
    let report = payledger_command_api::ops::statement(&db, &file, "alipay", Some("a"), None, ops::Format::Json)
        .await
        .expect("reconciled");
    assert!(report.is_clean(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_is_reconciled_with_its_own_accounts_orders_on_sqlite() {
    a_statement_is_reconciled_with_its_own_accounts_orders(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_is_reconciled_with_its_own_accounts_orders_on_postgres() {
    a_statement_is_reconciled_with_its_own_accounts_orders(Backend::Postgres).await;
}
