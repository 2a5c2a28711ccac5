//! The per-client-address rate limit of unauthenticated traffic (`serve
//! --unauthenticated-rate-limit`): wrong API keys, the sandbox pay page and refused channel
//! callbacks are answered 429 with `Retry-After` past the address's burst, while a merchant's
//! authenticated requests and a properly signed callback from the same address are still served.
//! Every request of a test comes from 127.0.0.1, one address.

use payledger_command_api::http::rate_limit::RateLimitConfig;
use payledger_tests::flows::{create_id, order_body, pay_path, sandbox_with_installation_secret, success_callback};
use payledger_tests::{Backend, TestServer};
use serde_json::Value;

/// The address's burst in these tests; refills at 1 per second, slow next to the requests.
const BURST: u32 = 3;
/// Requests sent at most while waiting for the first 429: a refill only delays it.
const TRIES: usize = 20;

async fn start(backend: Backend) -> Option<TestServer> {
    TestServer::start_with_config(backend, |c| {
        c.unauthenticated_rate_limit = RateLimitConfig {
            per_second: 1,
            burst: BURST,
        }
    })
    .await
}

/// One answer: status, `Retry-After` in seconds, content type, body (JSON, `Null` when not).
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    content_type: String,
    json: Value,
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let r = req.send().await.expect("request sent");
    let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let retry_after = header("retry-after").and_then(|v| v.parse().ok());
    let content_type = header("content-type").unwrap_or_default();
    Answer {
        status: r.status().as_u16(),
        retry_after,
        content_type,
        json: r.json().await.unwrap_or(Value::Null),
    }
}

/// Sends `req()` until it is answered 429 (at most [`TRIES`] times), asserting every earlier
/// answer is `served`; returns the 429 and how many were served before it.
async fn until_refused(mut req: impl FnMut() -> reqwest::RequestBuilder, served: u16) -> (Answer, usize) {
    for i in 0..TRIES {
        let a = send(req()).await;
        if a.status == 429 {
            return (a, i);
        }
        assert_eq!(a.status, served, "request {i}: {}", a.json);
    }
    panic!("no 429 within {TRIES} requests from one address");
}

fn assert_rate_limited_problem(a: &Answer) {
    assert_eq!(a.status, 429);
    let retry_after = a.retry_after.expect("Retry-After in whole seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(a.content_type, "application/problem+json");
    assert_eq!(a.json["type"], "https://payledger.dev/problems/rate-limited");
    let detail = a.json["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("1 unauthenticated requests per second (burst 3)") && detail.contains("127.0.0.1"),
        "{detail}"
    );
}

async fn wrong_api_keys_are_limited_per_address_and_merchants_are_still_served(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let key = s.add_merchant("shop1").await.api_key;
    let list = |key: &str| s.http.get(format!("{}/v1/orders?limit=1", s.base)).bearer_auth(key);
    // More merchants than the burst use their keys for the first time in this process, all from
    // this one address (a proxy after a restart): valid keys never charge it.
    let mut keys = vec![key.clone()];
    for i in 2..=(BURST + 2) {
        keys.push(s.add_merchant(&format!("shop{i}")).await.api_key);
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(send(list(key)).await.status, 200, "merchant {i}'s first request");
    }

    let wrong = "plk_0000000000000000000000000000000000000000000000000000000000000000";
    let (refused, served) = until_refused(|| list(wrong), 401).await;
    assert!(served >= (BURST - 1) as usize, "only {served} wrong keys answered 401");
    assert_rate_limited_problem(&refused);
    // The address is over its limit: a request without a key is refused too, and so is a key
    // this process has never found, before any lookup.
    let no_key = send(s.http.get(format!("{}/v1/orders", s.base))).await;
    assert_rate_limited_problem(&no_key);
    let other_wrong = "plk_1111111111111111111111111111111111111111111111111111111111111111";
    assert_rate_limited_problem(&send(list(other_wrong)).await);

    // The merchant's authenticated requests never count against the address, however often.
    for i in 0..2 * BURST {
        assert_eq!(
            send(list(&key)).await.status,
            200,
            "merchant request {i} from the limited address"
        );
    }
}

/// Guessed pay tokens are charged against the address (404, then 429); the payer holding the
/// order's token is never charged, however often it loads the page.
async fn sandbox_pay_page_guesses_are_limited_per_address_and_the_payer_is_not(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let key = s.add_merchant("shop1").await.api_key;
    let order_id = create_id(&s, &key, &order_body("T-1", 100)).await;
    let page = format!("{}{}", s.base, pay_path(&s, &order_id).await);
    for i in 0..BURST * 3 {
        assert_eq!(send(s.http.get(&page)).await.status, 200, "the payer's request {i}");
    }
    let guess = format!(
        "{}/sandbox/pay/{order_id}?token=00000000000000000000000000000000",
        s.base
    );
    let (refused, guessed) = until_refused(|| s.http.get(&guess), 404).await;
    assert!(guessed >= 1, "a guess is answered 404 before the limit");
    assert_rate_limited_problem(&refused);
    assert_eq!(send(s.http.get(&page)).await.status, 200, "the payer is still served");
}

async fn unsigned_callbacks_are_limited_per_address_and_signed_ones_are_accepted(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let key = s.add_merchant("shop1").await.api_key;
    let order_id = create_id(&s, &key, &order_body("T-1", 100)).await;
    let unsigned = serde_json::to_vec(&success_callback(&order_id, 100, "unsigned")).expect("json");
    let callback = || {
        s.http
            .post(format!("{}/v1/callbacks/sandbox", s.base))
            .header("content-type", "application/json")
            .body(unsigned.clone())
    };

    let (refused, served) = until_refused(callback, 400).await;
    assert!(
        served >= (BURST - 1) as usize,
        "only {served} unsigned callbacks answered 400"
    );
    // In the sandbox channel's own format, with the status and Retry-After of a rate limit.
    let retry_after = refused.retry_after.expect("Retry-After");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(refused.json["result"], "fail", "{}", refused.json);

    // A callback that verifies is never limited by address: it is recorded.
    let sandbox = sandbox_with_installation_secret(&s).await;
    let status = sandbox
        .send_callback(&success_callback(&order_id, 100, "signed"))
        .await
        .expect("sent");
    assert_eq!(status, 200, "a signed callback from the limited address");
    let order = s.call("GET", &format!("/v1/orders/{order_id}"), Some(&key), None).await;
    assert_eq!(order.json["status"], "paid", "{}", order.text);
}

payledger_tests::both_backends!(
    wrong_api_keys_are_limited_per_address_and_merchants_are_still_served,
    sandbox_pay_page_guesses_are_limited_per_address_and_the_payer_is_not,
    unsigned_callbacks_are_limited_per_address_and_signed_ones_are_accepted,
);
