//! The HTTP contract, end to end, on both backends: every scenario runs once on the embedded
//! SQLite default and once on a fresh PostgreSQL database (see `both_backends!` at the bottom).

use std::time::Duration;

use chrono::Utc;
use payledger_channel_adapters::sandbox::{SandboxCallback, SandboxChannel};
use payledger_command_api::app::{BODY_LIMIT_BYTES, CALLBACK_BODY_LIMIT_BYTES};
use payledger_tests::flows::{
    count, create, create_id, get_order, order_body, pay, pay_path, request_refund, sandbox_with_installation_secret,
    success_callback, wait_status, WAIT,
};
use payledger_tests::{eventually, Backend, Mode, Reply, TestServer, WebhookReceiver};
use serde_json::{json, Value};

/// Waits until the only notify job has `status`; returns its (status, attempts, last status code).
async fn wait_job(s: &TestServer, status: &str) -> (String, i64, Option<i64>) {
    eventually(WAIT, || async {
        let row: Option<(String, i64, Option<i64>)> =
            sqlx::query_as("SELECT status, attempts, last_status_code FROM notify_job")
                .fetch_optional(s.database().pool())
                .await
                .ok()
                .flatten();
        row.filter(|r| r.0 == status)
    })
    .await
    .unwrap_or_else(|| panic!("the notify job never became {status}"))
}

async fn event_types(s: &TestServer, key: &str, order_id: &str) -> Vec<String> {
    let r = s
        .call("GET", &format!("/v1/orders/{order_id}/events"), Some(key), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["events"]
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| e["type"].as_str().expect("type").to_string())
        .collect()
}

fn assert_problem(r: &Reply, status: u16) {
    assert_eq!(r.status, status, "expected {status}, got {}: {}", r.status, r.text);
    assert_eq!(r.content_type, "application/problem+json", "{}", r.text);
    assert_eq!(r.json["status"], status);
    assert!(
        r.json["type"].as_str().is_some_and(|t| t.starts_with("https://")),
        "{}",
        r.text
    );
    assert!(r.json["detail"].is_string());
}

async fn new_user_flow_works_end_to_end(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let hook = WebhookReceiver::start(vec![]).await;
    let mut body = order_body("T-1", 1000);
    body["notify_url"] = json!(hook.url);

    let created = create(&s, &m.api_key, &body).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let order_id = created.json["order_id"].as_str().expect("order_id").to_string();
    assert_eq!(created.json["status"], "awaiting_payment");
    assert_eq!(created.json["amount"], 1000);
    let pay_url = created.json["pay_url"].as_str().expect("pay_url");
    assert_eq!(pay_url, format!("{}{}", s.base, pay_path(&s, &order_id).await));
    sandbox_pay_page_needs_its_token(&s, pay_url, &order_id).await;

    // The same request again is the same order; the answers (folded from the appended events,
    // then from the log) and the read model (once it caught up) all show the same order.
    let again = create(&s, &m.api_key, &body).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json, created.json);
    assert_eq!(get_order(&s, &m.api_key, &order_id).await.json, created.json);
    let listed = s
        .call("GET", "/v1/orders?out_trade_no=T-1", Some(&m.api_key), None)
        .await;
    assert_eq!(listed.json["data"][0], created.json, "{}", listed.text);

    // The pay page renders, and paying makes the sandbox call back.
    let page = s.http.get(pay_url).send().await.expect("page");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("html").contains("Sandbox payment"));
    let paid = pay(&s, &order_id, "success").await;
    assert_eq!(paid.status, 200, "{}", paid.text);
    let view = get_order(&s, &m.api_key, &order_id).await;
    assert_eq!(view.json["status"], "paid", "{}", view.text);
    assert_eq!(view.json["paid_amount"], 1000);

    // The merchant receives a signed payment.succeeded.
    let got = hook.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1, "no notification arrived");
    let header = got[0].headers["payledger-signature"].to_str().expect("ascii");
    assert!(payledger_notifier::verify(
        &m.webhook_secret,
        header,
        &got[0].body,
        Utc::now().timestamp(),
        300
    ));
    let n: Value = serde_json::from_slice(&got[0].body).expect("json");
    assert_eq!(n["type"], "payment.succeeded");
    assert_eq!(n["data"]["order_id"], order_id.as_str());
    assert_eq!(n["data"]["status"], "paid");

    // Partial then full refund.
    let r1 = s
        .call(
            "POST",
            &format!("/v1/orders/{order_id}/refunds"),
            Some(&m.api_key),
            Some(&json!({"out_refund_no": "R-1", "amount": 300, "reason": "damaged"})),
        )
        .await;
    assert_eq!(r1.status, 201, "{}", r1.text);
    // The answer is the refund as the read model has it after the request: the refund worker may
    // already have completed it.
    assert!(
        r1.json["status"] == "pending" || r1.json["status"] == "succeeded",
        "{}",
        r1.text
    );
    assert_eq!(r1.json["amount"], 300);
    wait_status(&s, &m.api_key, &order_id, "partially_refunded").await;
    let refund_id = r1.json["refund_id"].as_str().expect("refund_id");
    let refund = s
        .call("GET", &format!("/v1/refunds/{refund_id}"), Some(&m.api_key), None)
        .await;
    assert_eq!(refund.json["status"], "succeeded", "{}", refund.text);
    assert_eq!(refund.json["amount"], 300);

    let r2 = request_refund(&s, &m.api_key, &order_id, "R-2", 700).await;
    assert_eq!(r2.status, 201, "{}", r2.text);
    let done = wait_status(&s, &m.api_key, &order_id, "refunded").await;
    assert_eq!(done["refunded_amount"], 1000);

    let got = hook.wait_for(3, WAIT).await;
    let types: Vec<String> = got
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).expect("json")["type"]
                .as_str()
                .expect("type")
                .to_string()
        })
        .collect();
    assert_eq!(
        types.iter().filter(|t| *t == "refund.succeeded").count(),
        2,
        "{types:?}"
    );

    // The audit trail shows every fact, in order, with who caused it.
    assert_eq!(
        event_types(&s, &m.api_key, &order_id).await,
        [
            "OrderCreated",
            "ChannelOrderOpened",
            "PaymentSucceeded",
            "RefundRequested",
            "RefundSucceeded",
            "RefundRequested",
            "RefundSucceeded"
        ]
    );
    let trail = s
        .call("GET", &format!("/v1/orders/{order_id}/events"), Some(&m.api_key), None)
        .await;
    let events = trail.json["events"].as_array().expect("events");
    assert_eq!(events[0]["metadata"]["actor"], "merchant:shop1");
    assert_eq!(events[2]["metadata"]["actor"], "channel:sandbox");
    assert_eq!(events[4]["metadata"]["actor"], "worker:refund_worker");
    let sequences: Vec<i64> = events.iter().map(|e| e["sequence"].as_i64().expect("seq")).collect();
    assert_eq!(sequences, (1..=7).collect::<Vec<_>>());

    // And the list endpoint finds it by out_trade_no.
    let list = s
        .call("GET", "/v1/orders?out_trade_no=T-1", Some(&m.api_key), None)
        .await;
    assert_eq!(list.json["data"].as_array().map(Vec::len), Some(1), "{}", list.text);
    assert_eq!(list.json["data"][0]["order_id"], order_id.as_str());
}

/// The pay page and its POST answer 404 without the order's pay token or with another order's
/// (the order id alone, derivable from the merchant id and out_trade_no, is not enough); the
/// page sends its own Content-Security-Policy with a nonce and no referrer. Every other answer
/// carries the default headers.
async fn sandbox_pay_page_needs_its_token(s: &TestServer, pay_url: &str, order_id: &str) {
    let http = reqwest::Client::new();
    let other = uuid::Uuid::new_v4();
    let other_token = sandbox_with_installation_secret(s).await.pay_token(other);
    let bare = format!("{}/sandbox/pay/{order_id}", s.base);
    for url in [
        bare.clone(),
        format!("{bare}?token="),
        format!("{bare}?token={other_token}"),
        format!("{bare}?token=00000000000000000000000000000000"),
    ] {
        let page = http.get(&url).send().await.expect("page");
        assert_eq!(page.status(), 404, "GET {url}");
        let post = http
            .post(&url)
            .json(&json!({"result": "success"}))
            .send()
            .await
            .expect("post");
        assert_eq!(post.status(), 404, "POST {url}");
    }
    let page = http.get(pay_url).send().await.expect("page");
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        csp.contains("script-src 'nonce-") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .expect("nonce");
    let html = page.text().await.expect("html");
    assert!(
        html.contains(&format!("<script nonce=\"{nonce}\">")),
        "the page's script carries the nonce"
    );
    assert!(
        !html.contains("onclick"),
        "no inline handlers, which the policy would block"
    );
    let api = http.get(format!("{}/v1/orders", s.base)).send().await.expect("api");
    assert_eq!(
        api.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
    assert_eq!(api.headers()["x-frame-options"], "DENY");
}

async fn bad_input_gets_a_clear_error_and_changes_nothing(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let key = m.api_key.as_str();
    let with = |field: &str, value: Value| {
        let mut b = order_body("T-BAD", 100);
        b[field] = value;
        b
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("zero amount", with("amount", json!(0)), "amount"),
        ("negative amount", with("amount", json!(-5)), "amount"),
        ("fractional amount", with("amount", json!(1.5)), "amount"),
        (
            "amount over 2^53-1",
            with("amount", json!(9_007_199_254_740_992_i64)),
            "amount",
        ),
        ("amount overflowing i64", with("amount", json!(u64::MAX)), "amount"),
        ("amount as a string", with("amount", json!("100")), "amount"),
        ("unknown currency", with("currency", json!("XYZ")), "currency"),
        ("unknown channel", with("channel", json!("paypal")), "channel"),
        ("method the channel lacks", with("method", json!("h5")), "method"),
        (
            "bad out_trade_no",
            with("out_trade_no", json!("has space")),
            "out_trade_no",
        ),
        ("empty subject", with("subject", json!("")), "subject"),
        (
            "ftp notify_url",
            with("notify_url", json!("ftp://x.example/n")),
            "notify_url",
        ),
        (
            "expire too short",
            with("expire_in_seconds", json!(1)),
            "expire_in_seconds",
        ),
        ("unknown field", with("amount_yuan", json!(1)), "amount_yuan"),
    ];
    for (what, body, field) in cases {
        let r = create(&s, key, &body).await;
        assert_problem(&r, 422);
        assert!(
            r.json["errors"][field].is_array(),
            "{what}: no error for {field}: {}",
            r.text
        );
    }
    let missing = json!({"amount": 100, "currency": "CNY", "channel": "sandbox", "subject": "x"});
    assert_problem(&create(&s, key, &missing).await, 422);

    let r = s
        .post_raw(
            "/v1/orders",
            Some(key),
            "application/json",
            b"{\"out_trade_no\": ".to_vec(),
        )
        .await;
    assert_problem(&r, 400);
    let r = s.post_raw("/v1/orders", Some(key), "text/plain", b"{}".to_vec()).await;
    assert_problem(&r, 415);
    // An oversized body is exactly one byte over: the server has to read every
    // byte to know, so it answers after the client has written them all. A larger
    // body races the answer: the server answers and closes at the limit, and the
    // client, still writing, sees a broken pipe instead of the 413.
    let r = s
        .post_raw(
            "/v1/orders",
            Some(key),
            "application/json",
            vec![b' '; BODY_LIMIT_BYTES + 1],
        )
        .await;
    assert_problem(&r, 413);
    // Exactly at the limit is read, then judged on its content.
    let mut at_limit = format!("{{\"subject\": \"{}", "x".repeat(1024 * 1024));
    at_limit.truncate(1024 * 1024 - 2);
    at_limit.push_str("\"}");
    assert_eq!(at_limit.len(), 1024 * 1024);
    let r = s
        .post_raw("/v1/orders", Some(key), "application/json", at_limit.into_bytes())
        .await;
    assert_problem(&r, 422);
    let r = s
        .post_raw(
            "/v1/callbacks/sandbox",
            None,
            "application/json",
            vec![b' '; CALLBACK_BODY_LIMIT_BYTES + 1],
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.text);

    assert_problem(&create(&s, "plk_wrong", &order_body("T-1", 100)).await, 401);
    let r = s.call("POST", "/v1/orders", None, Some(&order_body("T-1", 100))).await;
    assert_problem(&r, 401);

    // Nothing was created by any of it.
    let list = s.call("GET", "/v1/orders", Some(key), None).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json["data"], json!([]), "{}", list.text);
    let rows = count(&s, "events").await;
    assert_eq!(rows, 0);
}

async fn an_amount_at_the_limit_is_accepted(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let r = create(&s, &m.api_key, &order_body("T-MAX", 9_007_199_254_740_991)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["amount"], 9_007_199_254_740_991_i64);
}

async fn a_merchant_never_sees_another_merchants_order(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let a = s.add_merchant("shopA").await;
    let b = s.add_merchant("shopB").await;
    let created = create(&s, &a.api_key, &order_body("T-1", 100)).await;
    let order_id = created.json["order_id"].as_str().expect("id").to_string();
    for (method, path, body) in [
        ("GET", format!("/v1/orders/{order_id}"), None),
        ("GET", format!("/v1/orders/{order_id}/events"), None),
        ("POST", format!("/v1/orders/{order_id}/close"), None),
        (
            "POST",
            format!("/v1/orders/{order_id}/refunds"),
            Some(json!({"out_refund_no": "R", "amount": 1})),
        ),
    ] {
        assert_problem(&s.call(method, &path, Some(&b.api_key), body.as_ref()).await, 404);
    }
    let list = s
        .call("GET", "/v1/orders?out_trade_no=T-1", Some(&b.api_key), None)
        .await;
    assert_eq!(list.json["data"], json!([]));
    // B's own T-1 is a different order.
    let theirs = create(&s, &b.api_key, &order_body("T-1", 100)).await;
    assert_eq!(theirs.status, 201);
    assert_ne!(theirs.json["order_id"], order_id.as_str());
    // A's order was not touched.
    assert_eq!(
        get_order(&s, &a.api_key, &order_id).await.json["status"],
        "awaiting_payment"
    );
}

async fn same_out_trade_no_with_other_parameters_conflicts(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    assert_eq!(create(&s, &m.api_key, &order_body("T-1", 100)).await.status, 201);
    let r = create(&s, &m.api_key, &order_body("T-1", 101)).await;
    assert_problem(&r, 409);
    assert!(r.json["type"]
        .as_str()
        .expect("type")
        .ends_with("out-trade-no-conflict"));
}

async fn refunds_respect_the_refundable_amount_and_are_idempotent(mode: Mode) {
    let Some(s) = TestServer::start(mode).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let key = m.api_key.as_str();
    let order_id = create_id(&s, key, &order_body("T-1", 1000)).await;
    let refund = |no: &str, amount: i64, reason: Option<&str>| {
        let path = format!("/v1/orders/{order_id}/refunds");
        let body = json!({"out_refund_no": no, "amount": amount, "reason": reason});
        let s = &s;
        async move { s.call("POST", &path, Some(key), Some(&body)).await }
    };
    let unpaid = refund("R-0", 100, None).await;
    assert_problem(&unpaid, 409);
    assert!(unpaid.json["type"].as_str().expect("type").ends_with("order-not-paid"));

    assert_eq!(pay(&s, &order_id, "success").await.status, 200);
    let first = refund("R-1", 600, None).await;
    assert_eq!(first.status, 201, "{}", first.text);
    // 600 is pending or refunded: either way only 400 is left.
    let over = refund("R-2", 500, None).await;
    assert_problem(&over, 409);
    assert!(over.json["type"]
        .as_str()
        .expect("type")
        .ends_with("refund-exceeds-refundable"));
    // Same out_refund_no, same amount: the same refund.
    let again = refund("R-1", 600, None).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json["refund_id"], first.json["refund_id"]);
    // Same out_refund_no, other amount: conflict.
    assert_problem(&refund("R-1", 601, None).await, 409);
    // Bad amounts.
    assert_problem(&refund("R-3", 0, None).await, 422);
    // A refund the channel refuses fails, and its amount is refundable again.
    let refused = refund("R-4", 400, Some("sandbox:fail")).await;
    assert_eq!(refused.status, 201, "{}", refused.text);
    let refund_id = refused.json["refund_id"].as_str().expect("id").to_string();
    eventually(WAIT, || async {
        let r = s
            .call("GET", &format!("/v1/refunds/{refund_id}"), Some(key), None)
            .await;
        (r.json["status"] == "failed").then_some(())
    })
    .await
    .expect("refund R-4 never failed");
    assert_eq!(refund("R-5", 400, None).await.status, 201);
    let done = wait_status(&s, key, &order_id, "refunded").await;
    assert_eq!(done["refunded_amount"], 1000);
    assert_eq!(done["paid_amount"], 1000);
}

async fn closing_follows_the_order_lifecycle(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let key = m.api_key.as_str();
    let id1 = create_id(&s, key, &order_body("T-1", 100)).await;
    let closed = s
        .call("POST", &format!("/v1/orders/{id1}/close"), Some(key), None)
        .await;
    assert_eq!(closed.status, 200, "{}", closed.text);
    assert_eq!(closed.json["status"], "closed");
    assert_eq!(
        s.call("POST", &format!("/v1/orders/{id1}/close"), Some(key), None)
            .await
            .status,
        200
    );
    // Money that arrives after closing is recorded, never dropped.
    assert_eq!(pay(&s, &id1, "success").await.status, 200);
    let late = get_order(&s, key, &id1).await;
    assert_eq!(late.json["status"], "paid");
    assert_eq!(late.json["late_payment"], true);

    let id2 = create_id(&s, key, &order_body("T-2", 100)).await;
    assert_eq!(pay(&s, &id2, "success").await.status, 200);
    let r = s
        .call("POST", &format!("/v1/orders/{id2}/close"), Some(key), None)
        .await;
    assert_problem(&r, 409);
    assert!(r.json["type"].as_str().expect("type").ends_with("order-paid"));

    let id3 = create_id(&s, key, &order_body("T-3", 100)).await;
    assert_eq!(pay(&s, &id3, "fail").await.status, 200);
    assert_eq!(get_order(&s, key, &id3).await.json["status"], "failed");
}

async fn forged_and_malformed_callbacks_do_not_touch_the_order(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let order_id = create_id(&s, &m.api_key, &order_body("T-1", 100)).await;
    let before = event_types(&s, &m.api_key, &order_id).await;

    let forger = SandboxChannel::new(&s.base, b"not-the-installation-secret");
    let status = forger
        .send_callback(&success_callback(&order_id, 100, "forged"))
        .await
        .expect("sent");
    assert_eq!(status, 400);
    let body = serde_json::to_vec(&success_callback(&order_id, 100, "unsigned")).expect("json");
    let r = s
        .post_raw("/v1/callbacks/sandbox", None, "application/json", body)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json["result"], "fail");

    let real = sandbox_with_installation_secret(&s).await;
    let mut stale = success_callback(&order_id, 100, "stale");
    stale.sent_at = Utc::now() - chrono::Duration::hours(1);
    assert_eq!(real.send_callback(&stale).await.expect("sent"), 400);
    let mut unknown = success_callback(&order_id, 100, "bad-status");
    unknown.trade_status = "MAYBE".into();
    assert_eq!(real.send_callback(&unknown).await.expect("sent"), 400);
    let r = s
        .post_raw("/v1/callbacks/nochannel", None, "application/json", b"{}".to_vec())
        .await;
    assert_eq!(r.status, 404);

    assert_eq!(event_types(&s, &m.api_key, &order_id).await, before);
    assert_eq!(
        get_order(&s, &m.api_key, &order_id).await.json["status"],
        "awaiting_payment"
    );

    // A genuine callback with the wrong amount is recorded as a mismatch, not a payment.
    assert_eq!(
        real.send_callback(&success_callback(&order_id, 99, "short"))
            .await
            .expect("sent"),
        200
    );
    let view = get_order(&s, &m.api_key, &order_id).await;
    assert_eq!(view.json["status"], "awaiting_payment");
    assert_eq!(view.json["amount_mismatch"], true);
}

async fn a_channel_cannot_pay_another_channels_order(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    // Only the sandbox is enabled over HTTP today, so place a wechatpay order through the store.
    let order_id = payledger_domain::ids::order_id("shop1", payledger_domain::Mode::Live, "T-WX");
    let terms = payledger_domain::OrderTerms {
        merchant_id: "shop1".into(),
        mode: payledger_domain::Mode::Live,
        out_trade_no: "T-WX".into(),
        amount: payledger_domain::Money::new(100, payledger_domain::Currency::CNY).expect("money"),
        channel: "wechatpay".into(),
        method: "qr".into(),
        subject: "Tea".into(),
        user_id: None,
        notify_url: None,
        return_url: None,
        expire_in_seconds: 7200,
        metadata: Default::default(),
    };
    let command = payledger_domain::PaymentOrderCommand::CreateOrder {
        order_id,
        terms,
        created_at: Utc::now(),
    };
    s.database().execute(order_id, command, "test").await.expect("created");
    let sandbox = sandbox_with_installation_secret(&s).await;
    let status = sandbox
        .send_callback(&success_callback(&order_id.to_string(), 100, "cross"))
        .await
        .expect("sent");
    assert_eq!(status, 400, "a sandbox callback was accepted for a wechatpay order");
    assert_eq!(
        event_types(&s, &m.live_api_key, &order_id.to_string()).await,
        ["OrderCreated"]
    );
}

async fn concurrent_success_callbacks_pay_exactly_once(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let order_id = create_id(&s, &m.api_key, &order_body("T-1", 100)).await;
    let sandbox = sandbox_with_installation_secret(&s).await;
    // Twenty distinct notifications (a channel re-sending under new ids) and duplicates of one.
    let callbacks: Vec<SandboxCallback> = (0..20)
        .map(|i| success_callback(&order_id, 100, &format!("n-{}", i % 15)))
        .collect();
    let statuses = futures::future::join_all(callbacks.iter().map(|c| sandbox.send_callback(c))).await;
    for st in statuses {
        assert_eq!(st.expect("sent"), 200, "a concurrent callback was not acknowledged");
    }
    let types = event_types(&s, &m.api_key, &order_id).await;
    assert_eq!(
        types.iter().filter(|t| *t == "PaymentSucceeded").count(),
        1,
        "{types:?}"
    );
    assert_eq!(get_order(&s, &m.api_key, &order_id).await.json["status"], "paid");
}

/// A careless client fires forty refunds of one paid order at once, under distinct numbers: within
/// one process they take turns on the order instead of failing each other's version checks, so
/// none is answered 503, and every one is recorded once (40 × 2 of 100).
async fn forty_concurrent_refunds_of_one_order_queue_instead_of_failing(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let order_id = create_id(&s, &m.api_key, &order_body("T-1", 100)).await;
    assert_eq!(pay(&s, &order_id, "success").await.status, 200);
    let path = format!("/v1/orders/{order_id}/refunds");
    let bodies: Vec<Value> = (0..40)
        .map(|i| json!({"out_refund_no": format!("R-{i}"), "amount": 2}))
        .collect();
    let replies =
        futures::future::join_all(bodies.iter().map(|b| s.call("POST", &path, Some(&m.api_key), Some(b)))).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let types = event_types(&s, &m.api_key, &order_id).await;
    assert_eq!(
        types.iter().filter(|t| *t == "RefundRequested").count(),
        40,
        "{types:?}"
    );
    let order = get_order(&s, &m.api_key, &order_id).await.json;
    let refunds = order["refunds"].as_array().expect("refunds");
    let requested: i64 = refunds.iter().map(|r| r["amount"].as_i64().expect("amount")).sum();
    assert_eq!((refunds.len(), requested), (40, 80));
}

async fn a_queued_notification_survives_a_restart(mode: Mode) {
    let Some(mut s) = TestServer::start(mode).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    // The merchant is down for the first attempt.
    let hook = WebhookReceiver::start(vec![503]).await;
    let mut body = order_body("T-1", 100);
    body["notify_url"] = json!(hook.url);
    let order_id = create_id(&s, &m.api_key, &body).await;
    assert_eq!(pay(&s, &order_id, "success").await.status, 200);
    assert_eq!(hook.wait_for(1, WAIT).await.len(), 1);
    s.restart().await;
    let got = hook.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2, "the retry after the restart never came");
    let ids: Vec<Value> = got
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).expect("json")["id"].clone())
        .collect();
    assert_eq!(ids[0], ids[1], "the notification id must be stable across attempts");
    assert_eq!(wait_job(&s, "delivered").await.0, "delivered");
    let attempts = count(&s, "notify_attempt").await;
    assert_eq!(attempts, 2);
}

async fn a_notification_in_flight_at_a_crash_is_delivered_after_its_lease(mode: Mode) {
    let Some(mut s) = TestServer::start(mode).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    // Slow enough that the crash comes while the first request is in flight.
    let hook = WebhookReceiver::start_slow(vec![], Duration::from_millis(500)).await;
    let mut body = order_body("T-1", 100);
    body["notify_url"] = json!(hook.url);
    let order_id = create_id(&s, &m.api_key, &body).await;
    assert_eq!(pay(&s, &order_id, "success").await.status, 200);
    assert_eq!(hook.wait_for(1, WAIT).await.len(), 1);
    s.crash_and_restart().await;
    assert_eq!(
        count(&s, "notify_attempt").await,
        0,
        "the crash cut the attempt off before it was recorded"
    );
    // The claim's lease (request timeout 1 s + 5 s) expires, and the job is delivered again.
    let got = hook.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 2, "the notification was lost in the crash");
    assert_eq!(got[0].body, got[1].body, "the same notification, byte for byte");
    assert_eq!(wait_job(&s, "delivered").await.0, "delivered");
}

async fn a_failing_merchant_is_retried_then_abandoned(mode: Mode) {
    let Some(s) = TestServer::start(mode).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let hook = WebhookReceiver::start(vec![500; 10]).await;
    let mut body = order_body("T-1", 100);
    body["notify_url"] = json!(hook.url);
    let order_id = create_id(&s, &m.api_key, &body).await;
    assert_eq!(pay(&s, &order_id, "success").await.status, 200);
    // Schedule "1s,1s": three attempts, then abandoned.
    let row = wait_job(&s, "abandoned").await;
    assert_eq!(row, ("abandoned".to_string(), 3, Some(500)));
    assert_eq!(hook.received().len(), 3);
}

async fn a_slow_merchant_does_not_delay_another_merchants_notifications(mode: Mode) {
    let Some(s) = TestServer::start(mode).await else {
        return;
    };
    let slow_shop = s.add_merchant("slow").await;
    let fast_shop = s.add_merchant("fast").await;
    let slow = WebhookReceiver::start_slow(vec![], Duration::from_secs(4)).await;
    let fast = WebhookReceiver::start(vec![]).await;
    let mut body = order_body("T-1", 100);
    body["notify_url"] = json!(slow.url);
    let slow_order = create_id(&s, &slow_shop.api_key, &body).await;
    assert_eq!(pay(&s, &slow_order, "success").await.status, 200);
    assert_eq!(
        slow.wait_for(1, WAIT).await.len(),
        1,
        "the slow merchant got its request"
    );
    // While the slow merchant still holds its request open:
    body["notify_url"] = json!(fast.url);
    let fast_order = create_id(&s, &fast_shop.api_key, &body).await;
    let started = std::time::Instant::now();
    assert_eq!(pay(&s, &fast_order, "success").await.status, 200);
    assert_eq!(fast.wait_for(1, Duration::from_secs(3)).await.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the fast merchant waited {:?} behind the slow one",
        started.elapsed()
    );
}

async fn orders_list_newest_first_with_a_stable_cursor(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let mut ids = vec![];
    for i in 0..5 {
        let r = create(&s, &m.api_key, &order_body(&format!("T-{i}"), 100 + i)).await;
        ids.push(r.json["order_id"].as_str().expect("id").to_string());
    }
    ids.reverse();
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/orders?limit=2&cursor={c}"),
            None => "/v1/orders?limit=2".to_string(),
        };
        let page = s.call("GET", &path, Some(&m.api_key), None).await;
        assert_eq!(page.status, 200, "{}", page.text);
        for o in page.json["data"].as_array().expect("data") {
            seen.push(o["order_id"].as_str().expect("id").to_string());
        }
        if seen.len() == 2 {
            // An order created between pages must not shift the next page.
            create(&s, &m.api_key, &order_body("T-new", 1)).await;
        }
        match page.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_problem(&s.call("GET", "/v1/orders?limit=0", Some(&m.api_key), None).await, 422);
    assert_problem(
        &s.call("GET", "/v1/orders?cursor=zzz", Some(&m.api_key), None).await,
        422,
    );
    assert_problem(
        &s.call("GET", "/v1/orders?status=weird", Some(&m.api_key), None).await,
        422,
    );
}

async fn the_pay_page_escapes_merchant_text(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let mut body = order_body("T-1", 100);
    body["subject"] = json!("<img src=x onerror=alert(1)>");
    body["return_url"] = json!("https://shop.example/</script><script>alert(2)</script>");
    let created = create(&s, &m.api_key, &body).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let page = s
        .http
        .get(created.json["pay_url"].as_str().expect("pay_url"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(
        page.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "subject not escaped"
    );
    assert!(!page.contains("<img src=x"));
    assert!(
        !page.contains("</script><script>alert(2)"),
        "return_url broke out of the script"
    );
    assert_eq!(page.matches("</script>").count(), 1, "exactly our own script element");
}

async fn health_endpoints_answer(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    assert_eq!(s.call("GET", "/healthz", None, None).await.status, 200);
    assert_eq!(s.call("GET", "/readyz", None, None).await.status, 200);
}

payledger_tests::both_backends!(
    new_user_flow_works_end_to_end,
    bad_input_gets_a_clear_error_and_changes_nothing,
    an_amount_at_the_limit_is_accepted,
    a_merchant_never_sees_another_merchants_order,
    same_out_trade_no_with_other_parameters_conflicts,
    closing_follows_the_order_lifecycle,
    forged_and_malformed_callbacks_do_not_touch_the_order,
    a_channel_cannot_pay_another_channels_order,
    concurrent_success_callbacks_pay_exactly_once,
    forty_concurrent_refunds_of_one_order_queue_instead_of_failing,
    orders_list_newest_first_with_a_stable_cursor,
    the_pay_page_escapes_merchant_text,
    health_endpoints_answer,
);

// The refund worker and the notifier, embedded and on JetStream consumers (NATS mode).
payledger_tests::all_modes!(
    refunds_respect_the_refundable_amount_and_are_idempotent,
    a_queued_notification_survives_a_restart,
    a_notification_in_flight_at_a_crash_is_delivered_after_its_lease,
    a_failing_merchant_is_retried_then_abandoned,
    a_slow_merchant_does_not_delay_another_merchants_notifications,
);
