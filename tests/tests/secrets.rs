//! Secrets at rest (`payledger_store::sealed`), on both backends: webhook secrets and the
//! sandbox's callback secret are stored sealed; values stored in plain text before sealing
//! existed are sealed at start; rotating the key re-wraps them; a process with the wrong key
//! refuses to start and says why.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use payledger_channel_adapters::sandbox::SandboxChannel;
use payledger_command_api::app::{self, ServeConfig, SANDBOX_SECRET_KEY};
use payledger_store::sealed::{KeySource, Keyring};
use payledger_tests::flows::{create_id, order_body, pay, sandbox_with_installation_secret, WAIT};
use payledger_tests::{secrets_key_for, Backend, TestServer, WebhookReceiver};
use serde_json::json;

/// The stored test webhook secret (these tests' notifications are of sandbox orders).
async fn stored_webhook_secret(s: &TestServer, merchant_id: &str) -> String {
    sqlx::query_scalar("SELECT test_webhook_secret FROM merchants WHERE merchant_id = $1")
        .bind(merchant_id)
        .fetch_one(s.database().pool())
        .await
        .expect("merchant row")
}

async fn stored_sandbox_secret(s: &TestServer) -> String {
    sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(SANDBOX_SECRET_KEY)
        .fetch_one(s.database().pool())
        .await
        .expect("settings row")
}

/// Pays a new order notifying `hook`; asserts the notification is signed with `secret`.
async fn notification_is_signed_with(
    s: &TestServer,
    key: &str,
    hook: &WebhookReceiver,
    out_trade_no: &str,
    secret: &str,
) {
    let seen = hook.received().len();
    let mut body = order_body(out_trade_no, 100);
    body["notify_url"] = json!(hook.url);
    let order_id = create_id(s, key, &body).await;
    assert_eq!(pay(s, &order_id, "success").await.status, 200);
    let got = hook.wait_for(seen + 1, WAIT).await;
    let last = got.last().expect("a notification");
    let header = last.headers["payledger-signature"].to_str().expect("ascii");
    assert!(
        payledger_notifier::verify(secret, header, &last.body, Utc::now().timestamp(), 300),
        "signed with the merchant's webhook secret"
    );
}

async fn secrets_are_sealed_migrated_and_rotated(backend: Backend) {
    let key = Arc::new(Mutex::new(None::<KeySource>));
    let chosen = key.clone();
    let Some(mut s) = TestServer::start_with_config(backend, move |c| {
        if let Some(k) = chosen.lock().expect("lock").clone() {
            c.secrets_key = k;
        }
    })
    .await
    else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let hook = WebhookReceiver::start(vec![]).await;

    // Sealed at rest: neither secret shows in its row.
    let stored = stored_webhook_secret(&s, "shop1").await;
    assert!(stored.starts_with("sealed1:test:"), "{stored}");
    assert!(!stored.contains(&m.webhook_secret));
    let sandbox_stored = stored_sandbox_secret(&s).await;
    assert!(sandbox_stored.starts_with("sealed1:test:"), "{sandbox_stored}");
    notification_is_signed_with(&s, &m.api_key, &hook, "T-1", &m.webhook_secret).await;

    // A merchant stored before sealing existed (plain text) is sealed at the next start, and
    // its notifications are still signed with its secret.
    sqlx::query(
        "INSERT INTO merchants (merchant_id, api_key_sha256, test_api_key_sha256, webhook_secret, \
         test_webhook_secret, created_at) \
         VALUES ('legacy', $1, $2, 'whsec_plain_legacy_live', 'whsec_plain_legacy', '2026-01-01T00:00:00Z')",
    )
    .bind(payledger_store::merchants::api_key_hash("plk_legacy_live"))
    .bind(payledger_store::merchants::api_key_hash("plk_legacy"))
    .execute(s.database().pool())
    .await
    .expect("legacy row");
    // So is a sandbox secret stored in plain text.
    sqlx::query("UPDATE settings SET value = 'plain-sandbox-secret' WHERE key = $1")
        .bind(SANDBOX_SECRET_KEY)
        .execute(s.database().pool())
        .await
        .expect("legacy sandbox secret");
    s.restart().await;
    let sandbox_stored = stored_sandbox_secret(&s).await;
    assert!(sandbox_stored.starts_with("sealed1:test:"), "{sandbox_stored}");
    assert_eq!(
        sandbox_with_installation_secret(&s).await.sign(b"x"),
        SandboxChannel::new(&s.base, b"plain-sandbox-secret").sign(b"x"),
        "the same sandbox secret, now sealed"
    );
    let legacy = stored_webhook_secret(&s, "legacy").await;
    assert!(
        legacy.starts_with("sealed1:test:") && !legacy.contains("whsec_plain_legacy"),
        "{legacy}"
    );
    let legacy_live: String = sqlx::query_scalar("SELECT webhook_secret FROM merchants WHERE merchant_id = 'legacy'")
        .fetch_one(s.database().pool())
        .await
        .expect("merchant row");
    assert!(
        legacy_live.starts_with("sealed1:test:"),
        "the live secret too: {legacy_live}"
    );
    notification_is_signed_with(&s, "plk_legacy", &hook, "T-2", "whsec_plain_legacy").await;

    // Rotation: a new key first, the old one after it; a restart re-wraps every secret under the
    // new key id, after which the old key can go.
    let KeySource::Inline(old) = secrets_key_for(&s.db.url) else {
        unreachable!("tests use inline keys")
    };
    let new = Keyring::new_entry("k2");
    *key.lock().expect("lock") = Some(KeySource::Inline(format!("{new}\n{old}")));
    s.restart().await;
    for merchant in ["shop1", "legacy"] {
        let stored = stored_webhook_secret(&s, merchant).await;
        assert!(stored.starts_with("sealed1:k2:"), "{merchant}: {stored}");
    }
    assert!(stored_sandbox_secret(&s).await.starts_with("sealed1:k2:"));
    *key.lock().expect("lock") = Some(KeySource::Inline(new.clone()));
    s.restart().await;
    notification_is_signed_with(&s, &m.api_key, &hook, "T-3", &m.webhook_secret).await;
    notification_is_signed_with(&s, "plk_legacy", &hook, "T-4", "whsec_plain_legacy").await;

    // A damaged row (tampered, or sealed elsewhere) does not stop the installation: the restart
    // goes on, the other merchants are served and notified; the damaged one's key gets 500.
    let damaged = stored_webhook_secret(&s, "legacy")
        .await
        .replacen("sealed1:k2:", "sealed1:k2:A", 1);
    sqlx::query("UPDATE merchants SET test_webhook_secret = $1 WHERE merchant_id = 'legacy'")
        .bind(&damaged)
        .execute(s.database().pool())
        .await
        .expect("damage");
    s.restart().await;
    notification_is_signed_with(&s, &m.api_key, &hook, "T-5", &m.webhook_secret).await;
    let refused = s
        .call("POST", "/v1/orders", Some("plk_legacy"), Some(&order_body("T-6", 100)))
        .await;
    assert_eq!(refused.status, 500, "{}", refused.text);

    // A process with another key refuses to start and names the key id it lacks.
    s.stop().await;
    let mut config = ServeConfig::new("127.0.0.1:0".parse().expect("addr"), Some(s.db.url.clone()));
    config.secrets_key = KeySource::Inline(Keyring::new_entry("k3"));
    let err = match app::start(config).await {
        Ok(_) => panic!("started with the wrong key"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("\"k2\"") && err.contains("secrets key"), "{err}");
}

payledger_tests::both_backends!(secrets_are_sealed_migrated_and_rotated);
