//! The notify queue over HTTP (`GET /v1/notifications`, `GET /v1/notifications/{id}`,
//! `POST /v1/notifications/{id}/resend`) and `/metrics`, on both backends; the notifier scenarios
//! also in NATS mode (`all_modes!`).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use payledger_tests::flows::{create_id, order_body, pay, request_refund, WAIT};
use payledger_tests::{eventually, Backend, Mode, Reply, TestServer, WebhookReceiver};
use serde_json::{json, Value};

fn assert_problem(r: &Reply, status: u16) {
    assert_eq!(r.status, status, "expected {status}, got {}: {}", r.status, r.text);
    assert_eq!(r.content_type, "application/problem+json", "{}", r.text);
    assert_eq!(r.json["status"], status);
}

/// Creates an order notifying `notify_url` and pays it; returns the order id.
async fn paid_order(s: &TestServer, key: &str, out_trade_no: &str, notify_url: &str) -> String {
    let mut body = order_body(out_trade_no, 100);
    body["notify_url"] = json!(notify_url);
    let order_id = create_id(s, key, &body).await;
    assert_eq!(pay(s, &order_id, "success").await.status, 200);
    order_id
}

/// `GET path` until `accept` holds for the JSON answer; returns it.
async fn wait_json(s: &TestServer, key: &str, path: &str, what: &str, accept: impl Fn(&Value) -> bool) -> Value {
    eventually(WAIT, || async {
        let r = s.call("GET", path, Some(key), None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        accept(&r.json).then_some(r.json)
    })
    .await
    .unwrap_or_else(|| panic!("{what}: never happened"))
}

fn ids_of(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .expect("data array")
        .iter()
        .map(|n| n["notification_id"].as_str().expect("notification_id").to_string())
        .collect()
}

async fn an_abandoned_notification_is_resent_and_delivered_under_the_same_id(mode: Mode) {
    // Two attempts, 100 ms apart, then abandoned.
    let Some(s) = TestServer::start_with(mode, "100ms".parse().expect("schedule")).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let key = m.api_key.as_str();
    // Down for the two scheduled attempts, back up for the resend.
    let hook = WebhookReceiver::start(vec![500, 500]).await;
    let order_id = paid_order(&s, key, "T-1", &hook.url).await;

    let abandoned = wait_json(&s, key, "/v1/notifications?status=abandoned", "abandoned", |p| {
        p["data"].as_array().is_some_and(|d| d.len() == 1)
    })
    .await;
    let n = &abandoned["data"][0];
    assert_eq!(n["order_id"], order_id.as_str());
    assert_eq!(n["type"], "payment.succeeded");
    assert_eq!(n["status"], "abandoned");
    assert_eq!(n["attempts"], 2);
    assert_eq!(n["last_status_code"], 500);
    assert_eq!(n["last_error"], "merchant answered HTTP 500");
    assert_eq!(n["next_attempt_at"], Value::Null, "nothing is due for an abandoned job");
    let id = n["notification_id"].as_str().expect("id").to_string();

    let resent = s
        .call("POST", &format!("/v1/notifications/{id}/resend"), Some(key), None)
        .await;
    assert_eq!(resent.status, 202, "{}", resent.text);
    assert_eq!(resent.json["notification_id"], id.as_str());
    assert_eq!(resent.json["resend_count"], 1);
    assert_eq!(resent.json["resent_by"], "merchant:shop1");

    let detail = wait_json(&s, key, &format!("/v1/notifications/{id}"), "delivered", |n| {
        n["status"] == "delivered"
    })
    .await;
    assert_eq!(detail["attempts"], 3, "the resend continues the attempt count");
    assert_eq!(detail["last_status_code"], 200);
    assert_eq!(detail["last_error"], Value::Null);
    let log = detail["attempt_log"].as_array().expect("attempt_log");
    let numbers: Vec<i64> = log.iter().map(|a| a["attempt"].as_i64().expect("attempt")).collect();
    let codes: Vec<i64> = log
        .iter()
        .map(|a| a["status_code"].as_i64().expect("status_code"))
        .collect();
    assert_eq!(numbers, vec![1, 2, 3]);
    assert_eq!(codes, vec![500, 500, 200]);
    for a in log {
        assert!(a["latency_ms"].as_i64().is_some_and(|ms| ms >= 0), "{a}");
        assert!(a["attempted_at"].is_string(), "{a}");
    }
    assert!(log[0]["error"].is_string() && log[2]["error"].is_null(), "{log:?}");

    let got = hook.received();
    assert_eq!(got.len(), 3, "two scheduled attempts and the resend");
    for r in &got {
        let body: Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(body["id"], id.as_str(), "the same notification id in every delivery");
        let header = r.headers["payledger-signature"].to_str().expect("ascii");
        assert!(
            payledger_notifier::verify(&m.webhook_secret, header, &r.body, Utc::now().timestamp(), 300),
            "every delivery is signed"
        );
    }
    assert_eq!(got[0].body, got[2].body, "the resend sends the same body");

    // A delivered notification can be resent too (the merchant lost it on its side).
    let again = s
        .call("POST", &format!("/v1/notifications/{id}/resend"), Some(key), None)
        .await;
    assert_eq!(again.status, 202, "{}", again.text);
    assert_eq!(hook.wait_for(4, WAIT).await.len(), 4);
    let detail = wait_json(&s, key, &format!("/v1/notifications/{id}"), "delivered again", |n| {
        n["status"] == "delivered" && n["attempts"] == 4
    })
    .await;
    assert_eq!(detail["resend_count"], 2);
}

async fn resending_a_pending_notification_conflicts_and_other_merchants_see_nothing(mode: Mode) {
    // The retry after a failure is a minute away, so the job stays pending for the test.
    let Some(s) = TestServer::start_with(mode, "60s".parse().expect("schedule")).await else {
        return;
    };
    let a = s.add_merchant("shopA").await;
    let b = s.add_merchant("shopB").await;
    let hook = WebhookReceiver::start(vec![503]).await;
    paid_order(&s, &a.api_key, "T-1", &hook.url).await;
    let pending = wait_json(
        &s,
        &a.api_key,
        "/v1/notifications?status=pending",
        "a failed attempt",
        |p| p["data"][0]["attempts"] == 1,
    )
    .await;
    let n = &pending["data"][0];
    assert_eq!(n["last_status_code"], 503);
    assert!(n["next_attempt_at"].is_string(), "a pending job says when it is due");
    let id = n["notification_id"].as_str().expect("id").to_string();

    let refused = s
        .call(
            "POST",
            &format!("/v1/notifications/{id}/resend"),
            Some(&a.api_key),
            None,
        )
        .await;
    assert_problem(&refused, 409);
    assert!(refused.json["type"]
        .as_str()
        .is_some_and(|t| t.ends_with("notification-pending")));
    let still = s
        .call("GET", &format!("/v1/notifications/{id}"), Some(&a.api_key), None)
        .await;
    assert_eq!(still.json["resend_count"], 0, "a refused resend changes nothing");
    assert_eq!(still.json["attempts"], 1);
    assert_eq!(hook.received().len(), 1);

    // Another merchant: not found, and nothing listed.
    for (method, path) in [
        ("GET", format!("/v1/notifications/{id}")),
        ("POST", format!("/v1/notifications/{id}/resend")),
        ("GET", "/v1/notifications/not-a-uuid".to_string()),
    ] {
        assert_problem(&s.call(method, &path, Some(&b.api_key), None).await, 404);
    }
    let theirs = s.call("GET", "/v1/notifications", Some(&b.api_key), None).await;
    assert_eq!(theirs.status, 200, "{}", theirs.text);
    assert_eq!(theirs.json["data"], json!([]));
    assert_problem(&s.call("GET", "/v1/notifications", None, None).await, 401);

    // Invalid filters: 422 naming each field.
    for (query, field) in [
        ("status=failed", "status"),
        ("order_id=T-1", "order_id"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("cursor=garbage", "cursor"),
    ] {
        let r = s
            .call("GET", &format!("/v1/notifications?{query}"), Some(&a.api_key), None)
            .await;
        assert_problem(&r, 422);
        assert!(r.json["errors"][field].is_array(), "{query}: {}", r.text);
    }
}

async fn notifications_list_newest_first_with_filters_and_a_cursor(mode: Mode) {
    let Some(s) = TestServer::start(mode).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let key = m.api_key.as_str();
    let hook = WebhookReceiver::start(vec![]).await;
    let mut orders = Vec::new();
    for no in ["T-1", "T-2", "T-3"] {
        orders.push(paid_order(&s, key, no, &hook.url).await);
    }
    let all = wait_json(&s, key, "/v1/notifications?status=delivered", "three deliveries", |p| {
        p["data"].as_array().is_some_and(|d| d.len() == 3)
    })
    .await;
    assert_eq!(all["next_cursor"], Value::Null);
    let created: Vec<&str> = all["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|n| n["created_at"].as_str().expect("created_at"))
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first: {created:?}");

    let first = s.call("GET", "/v1/notifications?limit=2", Some(key), None).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(ids_of(&first.json).len(), 2);
    let cursor = first.json["next_cursor"].as_str().expect("a next page").to_string();
    let second = s
        .call(
            "GET",
            &format!("/v1/notifications?limit=2&cursor={cursor}"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(second.json["next_cursor"], Value::Null);
    let mut paged = ids_of(&first.json);
    paged.extend(ids_of(&second.json));
    assert_eq!(paged, ids_of(&all), "the pages are the whole list, in order, once");

    let one = s
        .call(
            "GET",
            &format!("/v1/notifications?order_id={}", orders[1]),
            Some(key),
            None,
        )
        .await;
    assert_eq!(one.status, 200, "{}", one.text);
    let data = one.json["data"].as_array().expect("data");
    assert_eq!(data.len(), 1, "{}", one.text);
    assert_eq!(data[0]["order_id"], orders[1].as_str());
    assert_eq!(data[0]["type"], "payment.succeeded");
    let none = s
        .call("GET", "/v1/notifications?status=abandoned", Some(key), None)
        .await;
    assert_eq!(none.json["data"], json!([]));
}

/// One sample of a Prometheus text exposition: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, rest)) => {
                    let labels = rest
                        .trim_end_matches('}')
                        .split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                        .collect();
                    (name.to_string(), labels)
                }
            };
            Some((name, labels, value))
        })
        .collect()
}

/// The sum of `name`'s samples whose labels include `labels` (0 when none).
fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).is_some_and(|x| x == v)))
        .map(|(_, _, v)| v)
        .sum()
}

async fn scrape(s: &TestServer) -> Vec<Sample> {
    let r = s.call("GET", "/metrics", None, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.content_type.starts_with("text/plain"), "{}", r.content_type);
    parse_metrics(&r.text)
}

async fn metrics_count_appended_events_notifications_and_channel_calls(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let key = m.api_key.as_str();
    // Counters are per process and other tests run beside this one: compare before and after.
    let before = scrape(&s).await;
    let hook = WebhookReceiver::start(vec![500]).await;
    let order_id = paid_order(&s, key, "T-1", &hook.url).await;
    let refund = request_refund(&s, key, &order_id, "R-1", 100).await;
    assert_eq!(refund.status, 201, "{}", refund.text);

    let grew = |after: &[Sample], name: &str, labels: &[(&str, &str)]| {
        metric(after, name, labels) - metric(&before, name, labels) >= 1.0
    };
    let expectations: [(&str, &[(&str, &str)]); 9] = [
        ("payledger_events_appended_total", &[("event_type", "OrderCreated")]),
        ("payledger_events_appended_total", &[("event_type", "PaymentSucceeded")]),
        ("payledger_events_appended_total", &[("event_type", "RefundSucceeded")]),
        (
            "payledger_notifications_total",
            &[("outcome", "failed"), ("status_class", "5xx")],
        ),
        (
            "payledger_notifications_total",
            &[("outcome", "delivered"), ("status_class", "2xx")],
        ),
        (
            "payledger_notification_latency_seconds_count",
            &[("status_class", "2xx")],
        ),
        (
            "payledger_channel_call_seconds_count",
            &[("channel", "sandbox"), ("operation", "create"), ("outcome", "ok")],
        ),
        (
            "payledger_channel_call_seconds_count",
            &[("channel", "sandbox"), ("operation", "refund"), ("outcome", "ok")],
        ),
        ("payledger_notification_latency_seconds_bucket", &[("le", "+Inf")]),
    ];
    let after = eventually(Duration::from_secs(15), || async {
        let after = scrape(&s).await;
        expectations
            .iter()
            .all(|(name, labels)| grew(&after, name, labels))
            .then_some(after)
    })
    .await;
    let Some(after) = after else {
        let after = scrape(&s).await;
        let missing: Vec<_> = expectations
            .iter()
            .filter(|(name, labels)| !grew(&after, name, labels))
            .collect();
        panic!("metrics that did not grow: {missing:?}");
    };
    assert!(metric(&after, "payledger_log_head_position", &[]) >= 4.0);
    assert!(
        after.iter().any(|(n, l, v)| n == "payledger_subscriber_lag_events"
            && l.get("subscriber").is_some_and(|s| s == "notify_enqueue")
            && *v >= 0.0),
        "the enqueuer's lag is reported"
    );
    assert!(metric(&after, "payledger_notify_queue_jobs", &[("status", "delivered")]) >= 1.0);
}

/// `--deny-private-urls` (test mode: live mode refuses them by default) is checked on the
/// address each attempt connects to, not only when
/// the order was created: orders created while private targets were allowed (an IP literal,
/// and a name that resolves to loopback, as a rebinding name would) are refused after a
/// restart with the flag, and nothing reaches them. The attempt log shows the merchant a
/// generic message, never the socket-level error that would make it a port scanner.
async fn a_private_notify_url_is_refused_when_each_attempt_connects(backend: Backend) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let allow = Arc::new(AtomicBool::new(true));
    let flag = allow.clone();
    let Some(mut s) = TestServer::start_with_config(backend, move |c| {
        c.private_urls.test = flag.load(Ordering::SeqCst);
        // Room for the restart before the second attempts.
        c.sender.schedule = "3s,500ms".parse().expect("schedule");
    })
    .await
    else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let key = m.api_key.as_str();
    // The first attempt of each is answered 500, so each has a retry due after the restart.
    let hook = WebhookReceiver::start(vec![500, 500]).await;
    assert!(hook.url.contains("127.0.0.1"), "{}", hook.url);
    let by_name = hook.url.replace("127.0.0.1", "localhost");
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let literal = paid_order(&s, key, "T-LITERAL", &hook.url).await;
    let name = paid_order(&s, key, "T-NAME", &by_name).await;
    let closed = paid_order(&s, key, "T-CLOSED", &format!("http://127.0.0.1:{closed_port}/n")).await;
    assert_eq!(hook.wait_for(2, WAIT).await.len(), 2);
    let first_error = |order_id: String| {
        let s = &s;
        async move {
            wait_json(
                s,
                key,
                &format!("/v1/notifications?order_id={order_id}"),
                "a failed attempt",
                |p| p["data"][0]["attempts"].as_i64().is_some_and(|a| a >= 1),
            )
            .await["data"][0]["last_error"]
                .clone()
        }
    };
    assert_eq!(
        first_error(closed.clone()).await,
        payledger_notifier::outbound::NO_ANSWER,
        "a closed port is not told apart from any other failure"
    );

    allow.store(false, Ordering::SeqCst);
    s.restart().await;
    // A new order cannot aim at loopback any more.
    let mut body = order_body("T-AFTER", 100);
    body["notify_url"] = json!(hook.url);
    assert_problem(&s.call("POST", "/v1/orders", Some(key), Some(&body)).await, 422);

    for order_id in [&literal, &name, &closed] {
        let page = wait_json(
            &s,
            key,
            &format!("/v1/notifications?order_id={order_id}"),
            "abandoned",
            |p| p["data"][0]["status"] == "abandoned",
        )
        .await;
        let n = &page["data"][0];
        assert_eq!(n["last_error"], payledger_notifier::outbound::REFUSED_TARGET, "{n}");
        assert_eq!(n["last_status_code"], Value::Null, "{n}");
    }
    assert_eq!(hook.received().len(), 2, "nothing reached loopback after the restart");
}

payledger_tests::both_backends!(
    metrics_count_appended_events_notifications_and_channel_calls,
    a_private_notify_url_is_refused_when_each_attempt_connects,
);

// The notifier, embedded and on its JetStream consumer (NATS mode).
payledger_tests::all_modes!(
    an_abandoned_notification_is_resent_and_delivered_under_the_same_id,
    resending_a_pending_notification_conflicts_and_other_merchants_see_nothing,
    notifications_list_newest_first_with_filters_and_a_cursor,
);
