//! Small steps of the payment flow over the HTTP API, shared by the end-to-end tests.

use std::time::Duration;

use chrono::Utc;
use payledger_channel_adapters::sandbox::{SandboxCallback, SandboxChannel};
use payledger_command_api::app::SANDBOX_SECRET_KEY;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{eventually, Reply, TestServer};

/// How long a test waits for something asynchronous (projection, notification).
pub const WAIT: Duration = Duration::from_secs(10);

pub fn order_body(out_trade_no: &str, amount: i64) -> Value {
    json!({"out_trade_no": out_trade_no, "amount": amount, "currency": "CNY", "channel": "sandbox", "subject": "Tea"})
}

pub async fn create(s: &TestServer, key: &str, body: &Value) -> Reply {
    s.call("POST", "/v1/orders", Some(key), Some(body)).await
}

/// `POST /v1/orders/{order_id}/refunds`: a refund of `amount` minor units under
/// `out_refund_no`.
pub async fn request_refund(
    s: &TestServer,
    key: &str,
    order_id: impl std::fmt::Display,
    out_refund_no: &str,
    amount: i64,
) -> Reply {
    s.call(
        "POST",
        &format!("/v1/orders/{order_id}/refunds"),
        Some(key),
        Some(&json!({"out_refund_no": out_refund_no, "amount": amount})),
    )
    .await
}

/// Creates an order that must be new (201); returns its id.
pub async fn create_id(s: &TestServer, key: &str, body: &Value) -> String {
    let r = create(s, key, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["order_id"].as_str().expect("order_id").to_string()
}

/// Rows in `table`.
pub async fn count(s: &TestServer, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(s.database().pool())
        .await
        .expect("count")
}

pub async fn pay(s: &TestServer, order_id: &str, result: &str) -> Reply {
    s.call(
        "POST",
        &pay_path(s, order_id).await,
        None,
        Some(&json!({ "result": result })),
    )
    .await
}

/// The sandbox pay page's path of `order_id`, with its pay token (what the order's `pay_url`
/// holds); a text that is not a UUID gets no token.
pub async fn pay_path(s: &TestServer, order_id: &str) -> String {
    match Uuid::parse_str(order_id) {
        Ok(id) => {
            let token = sandbox_with_installation_secret(s).await.pay_token(id);
            format!("/sandbox/pay/{order_id}?token={token}")
        }
        Err(_) => format!("/sandbox/pay/{order_id}"),
    }
}

pub async fn get_order(s: &TestServer, key: &str, order_id: &str) -> Reply {
    s.call("GET", &format!("/v1/orders/{order_id}"), Some(key), None).await
}

/// Waits until the order's status is `status`; returns the order view.
pub async fn wait_status(s: &TestServer, key: &str, order_id: &str, status: &str) -> Value {
    eventually(WAIT, || async {
        let r = get_order(s, key, order_id).await;
        (r.json["status"] == status).then_some(r.json)
    })
    .await
    .unwrap_or_else(|| panic!("order {order_id} never became {status}"))
}

pub async fn sandbox_with_installation_secret(s: &TestServer) -> SandboxChannel {
    let stored: String = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(SANDBOX_SECRET_KEY)
        .fetch_one(s.database().pool())
        .await
        .expect("the installation's sandbox secret");
    let keyring = &s.running.as_ref().expect("running").keyring;
    let secret = keyring
        .open(&stored, &payledger_store::settings::secret_place(SANDBOX_SECRET_KEY))
        .expect("the sandbox secret opens");
    SandboxChannel::new(&s.base, secret.as_bytes())
}

pub fn success_callback(order_id: &str, amount: i64, notify_id: &str) -> SandboxCallback {
    SandboxCallback {
        notify_id: notify_id.to_string(),
        order_id: Uuid::parse_str(order_id).expect("uuid"),
        channel_trade_no: "SBX-TEST".into(),
        trade_status: "SUCCESS".into(),
        amount,
        currency: "CNY".into(),
        sent_at: Utc::now(),
    }
}
