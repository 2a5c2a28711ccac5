//! Read models, the journal, replay and verify, on both backends: tables built live from the
//! walking-skeleton flows equal a replay; verify reports planted differences; the journal
//! balances and the dashboards' endpoints show it.

use chrono::Utc;
use payledger_projections::rebuild::{self, DifferenceKind, Projection};
use payledger_tests::flows::{
    create_id, order_body, pay, sandbox_with_installation_secret, success_callback, wait_status, WAIT,
};
use payledger_tests::{eventually, Backend, MerchantCreds, TestServer};
use serde_json::{json, Value};
use sqlx::Row;

/// Every row of every projection table, as text, in key order.
async fn snapshot(s: &TestServer) -> Vec<(String, Vec<String>)> {
    let mut all = vec![];
    for p in Projection::ALL {
        for t in p.tables() {
            let rows = sqlx::query(&format!("SELECT * FROM {} ORDER BY {}", t.name, t.key.join(", ")))
                .fetch_all(s.database().pool())
                .await
                .expect("snapshot");
            for r in rows {
                let cells = (0..r.columns().len())
                    .map(|i| {
                        r.try_get::<Option<String>, _>(i)
                            .map(|v| v.unwrap_or_default())
                            .or_else(|_| r.try_get::<i64, _>(i).map(|v| v.to_string()))
                            .expect("a text or integer cell")
                    })
                    .collect();
                all.push((t.name.to_string(), cells));
            }
        }
    }
    all
}

async fn refund(s: &TestServer, m: &MerchantCreds, order_id: &str, out_refund_no: &str, amount: i64) {
    let r = s
        .call(
            "POST",
            &format!("/v1/orders/{order_id}/refunds"),
            Some(&m.api_key),
            Some(&json!({"out_refund_no": out_refund_no, "amount": amount})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

async fn balances(s: &TestServer, m: &MerchantCreds) -> Vec<(String, i64, i64, i64)> {
    let r = s.call("GET", "/v1/ledger/balances", Some(&m.api_key), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|b| {
            (
                b["account"].as_str().expect("account").to_string(),
                b["debit"].as_i64().expect("debit"),
                b["credit"].as_i64().expect("credit"),
                b["balance"].as_i64().expect("balance"),
            )
        })
        .collect()
}

/// Four orders of merchant `shop1`: A paid 1000 then refunded 300; B paid 500 and refunded in
/// full; C closed unpaid; D paid 700 and then paid again by the payer under another trade.
async fn run_flows(s: &TestServer, m: &MerchantCreds) -> [String; 4] {
    let a = create_id(s, &m.api_key, &order_body("A", 1000)).await;
    let b = create_id(s, &m.api_key, &order_body("B", 500)).await;
    let c = create_id(s, &m.api_key, &order_body("C", 200)).await;
    let d = create_id(s, &m.api_key, &order_body("D", 700)).await;
    for id in [&a, &b, &d] {
        assert_eq!(pay(s, id, "success").await.status, 200);
    }
    let r = s
        .call("POST", &format!("/v1/orders/{c}/close"), Some(&m.api_key), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let sandbox = sandbox_with_installation_secret(s).await;
    let mut twice = success_callback(&d, 700, "second-payment");
    twice.channel_trade_no = "SBX-SECOND".into();
    twice.sent_at = Utc::now();
    assert_eq!(sandbox.send_callback(&twice).await.expect("sent"), 200);
    refund(s, m, &a, "RA-1", 300).await;
    refund(s, m, &b, "RB-1", 500).await;
    wait_status(s, &m.api_key, &a, "partially_refunded").await;
    wait_status(s, &m.api_key, &b, "refunded").await;
    [a, b, c, d]
}

const EXPECTED_BALANCES: [(&str, i64, i64, i64); 3] = [
    // Received 1000 + 500 + 700 + 700 (the second payment), refunded 300 + 500.
    ("channel_clearing:sandbox", 2900, 800, 2100),
    // Owed for the three paid orders, less the refunds.
    ("merchant_payable:shop1", 800, 2200, 1400),
    // The payer's second payment of D.
    ("suspense:shop1", 0, 700, 700),
];

async fn wait_balances(s: &TestServer, m: &MerchantCreds) {
    let expected: Vec<(String, i64, i64, i64)> = EXPECTED_BALANCES
        .iter()
        .map(|(a, d, c, b)| (a.to_string(), *d, *c, *b))
        .collect();
    let got = eventually(WAIT, || async {
        let got = balances(s, m).await;
        (got == expected).then_some(got)
    })
    .await;
    assert!(
        got.is_some(),
        "balances never became {expected:?}: {:?}",
        balances(s, m).await
    );
}

async fn journal_and_dashboards_show_the_money(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let [_, _, _, d] = run_flows(&s, &m).await;
    wait_balances(&s, &m).await;

    let order = wait_status(&s, &m.api_key, &d, "paid").await;
    assert_eq!(order["duplicate_payment"], true);
    assert_eq!(order["paid_amount"], 700, "paid once");

    let today = Utc::now().format("%Y-%m-%d").to_string();
    let r = s
        .call("GET", &format!("/v1/stats/daily?from={today}"), Some(&m.api_key), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json["data"],
        json!([{"day": today, "currency": "CNY", "orders_created": 4, "orders_paid": 3, "paid_amount": 2200,
                "refunds_succeeded": 2, "refunded_amount": 800}])
    );
    let r = s
        .call("GET", "/v1/stats/daily?from=2026-13-01", Some(&m.api_key), None)
        .await;
    assert_eq!(r.status, 422, "{}", r.text);

    // Another merchant sees an empty book.
    let other = s.add_merchant("shop2").await;
    assert!(balances(&s, &other).await.is_empty());
}

async fn replay_rebuilds_identical_tables_while_serving(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    run_flows(&s, &m).await;
    wait_balances(&s, &m).await;
    let before = snapshot(&s).await;
    assert!(before.len() > 20, "the flows filled the tables: {}", before.len());

    for p in Projection::ALL {
        let report = rebuild::replay(s.database(), p, &|_| {}).await.expect("replay");
        // 4 created + 4 opened + 3 paid + 1 closed + 1 duplicate payment + 2 × (refund requested,
        // succeeded).
        assert_eq!(report.events, 17, "{report:?}");
    }
    assert_eq!(snapshot(&s).await, before);

    // The server goes on serving and projecting into the swapped-in tables.
    let e = create_id(&s, &m.api_key, &order_body("E", 100)).await;
    assert_eq!(pay(&s, &e, "success").await.status, 200);
    wait_status(&s, &m.api_key, &e, "paid").await;
    let got = eventually(WAIT, || async {
        let b = balances(&s, &m).await;
        b.iter()
            .any(|(a, d, _, _)| a == "channel_clearing:sandbox" && *d == 3000)
            .then_some(b)
    })
    .await;
    assert!(got.is_some(), "the journal went on after the swap");
    let report = rebuild::verify(s.database(), &|_| {}).await.expect("verify");
    assert!(report.is_clean(), "{report:?}");
}

async fn verify_reports_planted_differences(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let [a, _, c, _] = run_flows(&s, &m).await;
    wait_balances(&s, &m).await;
    let clean = rebuild::verify(s.database(), &|_| {}).await.expect("verify");
    assert!(clean.is_clean(), "{clean:?}");
    assert!(clean.rows_compared > 20);

    let pool = s.database().pool();
    // A changed row, a lost journal line, a row nobody's events explain.
    sqlx::query("UPDATE order_view SET status = 'closed' WHERE order_id = $1")
        .bind(&a)
        .execute(pool)
        .await
        .expect("corrupt");
    let (entry_id,): (String,) = sqlx::query_as(
        "SELECT entry_id FROM ledger_entry WHERE event_type = 'RefundSucceeded' ORDER BY entry_id LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .expect("an entry");
    sqlx::query("DELETE FROM ledger_entry WHERE entry_id = $1 AND line = 2")
        .bind(&entry_id)
        .execute(pool)
        .await
        .expect("delete");
    sqlx::query("DELETE FROM refund_view WHERE order_id = $1")
        .bind(&a)
        .execute(pool)
        .await
        .expect("delete");
    sqlx::query(
        "INSERT INTO merchant_daily_stats VALUES ('shop1', 'test', '1999-01-01', 'CNY', 'sandbox', 1, 0, 0, 0, 0)",
    )
    .execute(pool)
    .await
    .expect("insert");

    let report = rebuild::verify(s.database(), &|_| {}).await.expect("verify");
    assert!(!report.is_clean());
    let found: Vec<(&str, String, DifferenceKind)> = report
        .differences
        .iter()
        .map(|d| (d.table, d.key.clone(), d.kind))
        .collect();
    let refund_id: Value = s
        .call("GET", &format!("/v1/orders/{a}"), Some(&m.api_key), None)
        .await
        .json["refunds"][0]["refund_id"]
        .clone();
    let mut expected = vec![
        ("order_view", a.clone(), DifferenceKind::Different),
        (
            "refund_view",
            refund_id.as_str().expect("refund id").to_string(),
            DifferenceKind::Missing,
        ),
        (
            "merchant_daily_stats",
            "shop1|test|1999-01-01|CNY|sandbox".to_string(),
            DifferenceKind::Extra,
        ),
        ("ledger_entry", format!("{entry_id}|2"), DifferenceKind::Missing),
    ];
    expected.sort();
    let mut found_sorted = found.clone();
    found_sorted.sort();
    assert_eq!(found_sorted, expected, "{report:?}");
    assert_eq!(report.differences_total, 4);
    assert_eq!(report.unbalanced_entries.len(), 1, "{report:?}");
    assert_eq!(report.unbalanced_entries[0].entry_id, entry_id);
    // Verify changed nothing: the closed order C is untouched, the corruption is still there.
    let status: String = sqlx::query_scalar("SELECT status FROM order_view WHERE order_id = $1")
        .bind(&a)
        .fetch_one(pool)
        .await
        .expect("status");
    assert_eq!(status, "closed");
    let _ = c;

    // A replay repairs the live tables.
    for p in Projection::ALL {
        rebuild::replay(s.database(), p, &|_| {}).await.expect("replay");
    }
    let repaired = rebuild::verify(s.database(), &|_| {}).await.expect("verify");
    assert!(repaired.is_clean(), "{repaired:?}");
}

payledger_tests::both_backends!(
    journal_and_dashboards_show_the_money,
    replay_rebuilds_identical_tables_while_serving,
    verify_reports_planted_differences,
);
