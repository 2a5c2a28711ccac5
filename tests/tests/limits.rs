//! Every limit on what an outsider controls, end to end: one request exactly at the limit (served)
//! and one just past it (refused with the right status and a message naming the limit). The table
//! "Limits" in docs/api.md lists the same constants.

use std::time::Duration;

use payledger_command_api::app::{BODY_LIMIT_BYTES, CALLBACK_BODY_LIMIT_BYTES};
use payledger_command_api::http::extract::JSON_DEPTH_MAX;
use payledger_command_api::http::rate_limit::RateLimitConfig;
use payledger_command_api::validate::{
    CURSOR_BYTES_MAX, MERCHANT_NO_CHARS_MAX, METADATA_KEYS_MAX, METADATA_KEY_CHARS_MAX, METADATA_VALUE_CHARS_MAX,
    SHORT_TEXT_CHARS_MAX, SUBJECT_CHARS_MAX, URL_BYTES_MAX,
};
use payledger_projections::queries::PAGE_LIMIT_MAX;
use payledger_tests::flows::{create, create_id, order_body, pay, wait_status};
use payledger_tests::{Backend, Reply, TestServer};
use serde_json::{json, Map, Value};

fn assert_refused(r: &Reply, status: u16, field: Option<&str>, names: &str) {
    assert_eq!(r.status, status, "expected {status}: {}", r.text);
    assert_eq!(r.content_type, "application/problem+json", "{}", r.text);
    let message = match field {
        Some(f) => r.json["errors"][f].to_string(),
        None => r.json["detail"].to_string(),
    };
    assert!(
        message.contains(names),
        "message should name the limit {names}: {}",
        r.text
    );
}

/// `len` bytes of URL: `http://127.0.0.1/` and a path of `a`s.
fn url_of_bytes(len: usize) -> String {
    let base = "http://127.0.0.1/";
    format!("{base}{}", "a".repeat(len - base.len()))
}

/// A metadata map of `keys` keys of `key_chars` characters each, with values of `value_chars`.
fn metadata(keys: usize, key_chars: usize, value_chars: usize) -> Value {
    let mut m = Map::new();
    for i in 0..keys {
        let key = format!("{i:0>width$}", width = key_chars);
        m.insert(key, json!("值".repeat(value_chars)));
    }
    Value::Object(m)
}

async fn order_fields_are_served_at_their_limit_and_refused_past_it(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let key = s.add_merchant("shop1").await.api_key;
    // (field, value at the limit, value one past it, the limit as the message states it).
    // Texts use a 3-byte character where the limit is in characters, so bytes would not pass.
    let cases: Vec<(&str, Value, Value, String)> = vec![
        (
            "out_trade_no",
            json!("n".repeat(MERCHANT_NO_CHARS_MAX)),
            json!("n".repeat(MERCHANT_NO_CHARS_MAX + 1)),
            MERCHANT_NO_CHARS_MAX.to_string(),
        ),
        (
            "subject",
            json!("茶".repeat(SUBJECT_CHARS_MAX)),
            json!("茶".repeat(SUBJECT_CHARS_MAX + 1)),
            SUBJECT_CHARS_MAX.to_string(),
        ),
        (
            "user_id",
            json!("付".repeat(SHORT_TEXT_CHARS_MAX)),
            json!("付".repeat(SHORT_TEXT_CHARS_MAX + 1)),
            SHORT_TEXT_CHARS_MAX.to_string(),
        ),
        (
            "notify_url",
            json!(url_of_bytes(URL_BYTES_MAX)),
            json!(url_of_bytes(URL_BYTES_MAX + 1)),
            URL_BYTES_MAX.to_string(),
        ),
        (
            "return_url",
            json!(url_of_bytes(URL_BYTES_MAX)),
            json!(url_of_bytes(URL_BYTES_MAX + 1)),
            URL_BYTES_MAX.to_string(),
        ),
        (
            "metadata",
            metadata(METADATA_KEYS_MAX, 4, 1),
            metadata(METADATA_KEYS_MAX + 1, 4, 1),
            format!("{METADATA_KEYS_MAX} keys"),
        ),
        (
            "metadata",
            metadata(1, METADATA_KEY_CHARS_MAX, 1),
            metadata(1, METADATA_KEY_CHARS_MAX + 1, 1),
            METADATA_KEY_CHARS_MAX.to_string(),
        ),
        (
            "metadata",
            metadata(1, 4, METADATA_VALUE_CHARS_MAX),
            metadata(1, 4, METADATA_VALUE_CHARS_MAX + 1),
            METADATA_VALUE_CHARS_MAX.to_string(),
        ),
        ("currency", json!("CNY"), json!("CNYY"), "3 letters".to_string()),
    ];
    for (i, (field, at, past, names)) in cases.into_iter().enumerate() {
        let mut body = order_body(&format!("T-AT-{i}"), 100);
        body[field] = at;
        let r = create(&s, &key, &body).await;
        assert_eq!(r.status, 201, "{field} at its limit: {}", r.text);
        let mut body = order_body(&format!("T-PAST-{i}"), 100);
        body[field] = past;
        assert_refused(&create(&s, &key, &body).await, 422, Some(field), &names);
    }
}

async fn refund_fields_are_served_at_their_limit_and_refused_past_it(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let key = s.add_merchant("shop1").await.api_key;
    let order_id = create_id(&s, &key, &order_body("T-1", 1_000)).await;
    assert_eq!(pay(&s, &order_id, "success").await.status, 200);
    wait_status(&s, &key, &order_id, "paid").await;
    let path = format!("/v1/orders/{order_id}/refunds");
    let refund = |no: String, reason: String| json!({"out_refund_no": no, "amount": 1, "reason": reason});

    let at = refund("r".repeat(MERCHANT_NO_CHARS_MAX), "因".repeat(SHORT_TEXT_CHARS_MAX));
    let r = s.call("POST", &path, Some(&key), Some(&at)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let past_no = refund("r".repeat(MERCHANT_NO_CHARS_MAX + 1), "x".into());
    assert_refused(
        &s.call("POST", &path, Some(&key), Some(&past_no)).await,
        422,
        Some("out_refund_no"),
        &MERCHANT_NO_CHARS_MAX.to_string(),
    );
    let past_reason = refund("R-2".into(), "因".repeat(SHORT_TEXT_CHARS_MAX + 1));
    assert_refused(
        &s.call("POST", &path, Some(&key), Some(&past_reason)).await,
        422,
        Some("reason"),
        &SHORT_TEXT_CHARS_MAX.to_string(),
    );
}

async fn list_pages_are_served_at_their_limit_and_refused_past_it(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let key = s.add_merchant("shop1").await.api_key;
    for list in ["/v1/orders", "/v1/notifications"] {
        let r = s
            .call("GET", &format!("{list}?limit={PAGE_LIMIT_MAX}"), Some(&key), None)
            .await;
        assert_eq!(r.status, 200, "{list}: {}", r.text);
        let r = s
            .call("GET", &format!("{list}?limit={}", PAGE_LIMIT_MAX + 1), Some(&key), None)
            .await;
        assert_refused(&r, 422, Some("limit"), &PAGE_LIMIT_MAX.to_string());

        // A cursor at the length limit is decoded (and refused as not ours); past it, not even that.
        let at = s
            .call(
                "GET",
                &format!("{list}?cursor={}", "A".repeat(CURSOR_BYTES_MAX)),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(at.status, 422, "{}", at.text);
        assert!(
            !at.json["errors"]["cursor"].to_string().contains("at most"),
            "{}",
            at.text
        );
        let past = s
            .call(
                "GET",
                &format!("{list}?cursor={}", "A".repeat(CURSOR_BYTES_MAX + 1)),
                Some(&key),
                None,
            )
            .await;
        assert_refused(&past, 422, Some("cursor"), &CURSOR_BYTES_MAX.to_string());
    }
    let at = format!("/v1/orders?out_trade_no={}", "n".repeat(MERCHANT_NO_CHARS_MAX));
    assert_eq!(s.call("GET", &at, Some(&key), None).await.status, 200);
    let past = format!("/v1/orders?out_trade_no={}", "n".repeat(MERCHANT_NO_CHARS_MAX + 1));
    assert_refused(
        &s.call("GET", &past, Some(&key), None).await,
        422,
        Some("out_trade_no"),
        &MERCHANT_NO_CHARS_MAX.to_string(),
    );
}

/// A valid order body padded with JSON whitespace to exactly `len` bytes.
fn order_of_bytes(out_trade_no: &str, len: usize) -> Vec<u8> {
    let mut body = order_body(out_trade_no, 100).to_string().into_bytes();
    body.resize(len, b' ');
    body
}

async fn bodies_are_read_up_to_their_limit_and_refused_past_it(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let key = s.add_merchant("shop1").await.api_key;
    let r = s
        .post_raw(
            "/v1/orders",
            Some(&key),
            "application/json",
            order_of_bytes("T-AT", BODY_LIMIT_BYTES),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = s
        .post_raw(
            "/v1/orders",
            Some(&key),
            "application/json",
            order_of_bytes("T-PAST", BODY_LIMIT_BYTES + 1),
        )
        .await;
    assert_refused(&r, 413, None, &BODY_LIMIT_BYTES.to_string());

    // Callbacks: at the limit the body reaches the channel (which refuses the missing signature in
    // its own format); past it the body is not read.
    let r = s
        .post_raw(
            "/v1/callbacks/sandbox",
            None,
            "application/json",
            vec![b' '; CALLBACK_BODY_LIMIT_BYTES],
        )
        .await;
    assert_ne!(r.status, 413, "{}", r.text);
    assert_ne!(r.content_type, "application/problem+json", "{}", r.text);
    let r = s
        .post_raw(
            "/v1/callbacks/sandbox",
            None,
            "application/json",
            vec![b' '; CALLBACK_BODY_LIMIT_BYTES + 1],
        )
        .await;
    assert_refused(&r, 413, None, &CALLBACK_BODY_LIMIT_BYTES.to_string());
}

async fn json_nesting_is_parsed_up_to_its_limit_and_refused_past_it(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let key = s.add_merchant("shop1").await.api_key;
    // The body object is level 1, so `amount` gets the other levels.
    let nested = |depth: usize| {
        let arrays = depth - 1;
        let amount = format!("{}1{}", "[".repeat(arrays), "]".repeat(arrays));
        format!(r#"{{"out_trade_no":"T-1","amount":{amount},"currency":"CNY","channel":"sandbox","subject":"Tea"}}"#)
    };
    // At the limit the body parses and the amount is judged on its merits.
    let r = s
        .post_raw(
            "/v1/orders",
            Some(&key),
            "application/json",
            nested(JSON_DEPTH_MAX).into_bytes(),
        )
        .await;
    assert_refused(&r, 422, Some("amount"), "integer");
    let r = s
        .post_raw(
            "/v1/orders",
            Some(&key),
            "application/json",
            nested(JSON_DEPTH_MAX + 1).into_bytes(),
        )
        .await;
    assert_refused(&r, 400, None, &format!("{JSON_DEPTH_MAX} levels"));
}

/// `GET /v1/orders` as `key`: (status, `Retry-After`, body).
async fn list_orders(s: &TestServer, key: &str) -> (u16, Option<u64>, Value) {
    let r = s
        .http
        .get(format!("{}/v1/orders?limit=1", s.base))
        .bearer_auth(key)
        .send()
        .await
        .expect("request sent");
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = r.json().await.unwrap_or(Value::Null);
    (status, retry_after, body)
}

async fn a_merchant_over_its_rate_gets_429_and_others_are_unaffected(backend: Backend) {
    const BURST: u32 = 5;
    let Some(s) = TestServer::start_with_config(backend, |c| {
        c.rate_limit = RateLimitConfig {
            per_second: 1,
            burst: BURST,
        }
    })
    .await
    else {
        return;
    };
    let flood = s.add_merchant("flood").await.api_key;
    let calm = s.add_merchant("calm").await.api_key;
    // A full bucket serves the whole burst; the next requests come far faster than 1/s (a
    // refill only delays the refusal, never prevents it within 20 more requests).
    for i in 0..BURST {
        assert_eq!(list_orders(&s, &flood).await.0, 200, "request {i} of the burst");
    }
    let mut refused = None;
    for _ in 0..20 {
        let (status, retry_after, body) = list_orders(&s, &flood).await;
        if status == 429 {
            refused = Some((retry_after, body));
            break;
        }
        assert_eq!(status, 200);
    }
    let (retry_after, body) = refused.expect("a request past the burst is refused");
    let retry_after = retry_after.expect("Retry-After in whole seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(body["status"], 429);
    assert_eq!(body["type"], "https://payledger.dev/problems/rate-limited");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("1 requests per second (burst 5)"), "{detail}");

    assert_eq!(list_orders(&s, &calm).await.0, 200, "another merchant is unaffected");

    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(100)).await;
    assert_eq!(list_orders(&s, &flood).await.0, 200, "served again after Retry-After");
}

payledger_tests::both_backends!(
    order_fields_are_served_at_their_limit_and_refused_past_it,
    refund_fields_are_served_at_their_limit_and_refused_past_it,
    list_pages_are_served_at_their_limit_and_refused_past_it,
);

/// The database plays no part in these: SQLite only.
mod sqlite_only {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bodies_are_read_up_to_their_limit_and_refused_past_it() {
        super::bodies_are_read_up_to_their_limit_and_refused_past_it(Backend::Sqlite).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn json_nesting_is_parsed_up_to_its_limit_and_refused_past_it() {
        super::json_nesting_is_parsed_up_to_its_limit_and_refused_past_it(Backend::Sqlite).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_merchant_over_its_rate_gets_429_and_others_are_unaffected() {
        super::a_merchant_over_its_rate_gets_429_and_others_are_unaffected(Backend::Sqlite).await
    }
}
