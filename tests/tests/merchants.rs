//! Merchants' API keys: each key is one merchant's key of one mode; the cache trusts a found key
//! for its time to live and never caches a wrong one.

use std::time::Duration;

use payledger_domain::Mode;
use payledger_store::merchants::{self, ApiKeyCache, ApiKeyHash, Credentials, API_KEY_CACHE_TTL_MS};
use payledger_store::sealed::Keyring;
use payledger_tests::{migrated_database, Backend};

async fn the_cache_trusts_a_found_key_for_its_ttl_and_never_caches_a_miss(backend: Backend) {
    let Some((_test_db, db)) = migrated_database(backend).await else {
        return;
    };
    let cache = ApiKeyCache::default();
    let keyring = Keyring::parse(&Keyring::new_entry("k1")).expect("keyring");

    // A miss is not remembered: the key works as soon as it exists.
    assert_eq!(
        cache
            .merchant(db.pool(), &keyring, &ApiKeyHash::of("plk_one"))
            .await
            .unwrap(),
        None
    );
    merchants::add(db.pool(), &keyring, "shop1", credentials("plk_one", "plk_test_one"))
        .await
        .unwrap();
    let found = cache
        .merchant(db.pool(), &keyring, &ApiKeyHash::of("plk_one"))
        .await
        .unwrap()
        .expect("found");
    assert_eq!((found.0.merchant_id.as_str(), found.1), ("shop1", Mode::Live));

    // Within the time to live the cache answers without the table; after it, the table again.
    sqlx::query("DELETE FROM merchants WHERE merchant_id = 'shop1'")
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(
        cache
            .merchant(db.pool(), &keyring, &ApiKeyHash::of("plk_one"))
            .await
            .unwrap()
            .map(|(m, _)| m.merchant_id),
        Some("shop1".to_string())
    );
    tokio::time::sleep(Duration::from_millis(API_KEY_CACHE_TTL_MS + 100)).await;
    assert_eq!(
        cache
            .merchant(db.pool(), &keyring, &ApiKeyHash::of("plk_one"))
            .await
            .unwrap(),
        None
    );
}

fn credentials<'a>(live_api_key: &'a str, test_api_key: &'a str) -> Credentials<'a> {
    Credentials {
        live_api_key,
        test_api_key,
        webhook_secret: "whsec_live",
        test_webhook_secret: "whsec_test",
    }
}

/// A merchant's live key authenticates it in live mode, its test key in test mode, and each
/// mode has its own webhook secret; new test credentials replace the old ones and leave the
/// live ones alone; a merchant from before modes (live key and secret only) gets its first test
/// credentials the same way.
async fn each_key_is_one_merchants_key_of_one_mode(backend: Backend) {
    let Some((_test_db, db)) = migrated_database(backend).await else {
        return;
    };
    let keyring = Keyring::parse(&Keyring::new_entry("k1")).expect("keyring");
    let keyring = std::sync::Arc::new(keyring);
    let mode_of = |key: &'static str| {
        let (pool, keyring) = (db.pool().clone(), keyring.clone());
        async move {
            merchants::by_api_key(&pool, &keyring, key)
                .await
                .unwrap()
                .map(|(m, mode)| (m.merchant_id, mode))
        }
    };
    merchants::add(db.pool(), &keyring, "shop1", credentials("plk_live_a", "plk_test_a"))
        .await
        .unwrap();
    assert_eq!(mode_of("plk_live_a").await, Some(("shop1".into(), Mode::Live)));
    assert_eq!(mode_of("plk_test_a").await, Some(("shop1".into(), Mode::Test)));
    let secrets = |merchant: &'static str| {
        let (pool, keyring) = (db.pool().clone(), keyring.clone());
        async move {
            let m = merchants::get(&pool, &keyring, merchant)
                .await
                .unwrap()
                .expect("merchant");
            (
                m.webhook_secret_for(Mode::Live).map(str::to_string),
                m.webhook_secret_for(Mode::Test).map(str::to_string),
            )
        }
    };
    assert_eq!(
        secrets("shop1").await,
        (Some("whsec_live".into()), Some("whsec_test".into()))
    );

    let set = |merchant, key, secret| {
        let (pool, keyring) = (db.pool().clone(), keyring.clone());
        async move {
            merchants::set_test_credentials(&pool, &keyring, merchant, key, secret)
                .await
                .unwrap()
        }
    };
    assert!(set("shop1", "plk_test_b", "whsec_test_b").await);
    assert_eq!(mode_of("plk_test_a").await, None);
    assert_eq!(mode_of("plk_test_b").await, Some(("shop1".into(), Mode::Test)));
    assert_eq!(mode_of("plk_live_a").await, Some(("shop1".into(), Mode::Live)));
    assert_eq!(
        secrets("shop1").await,
        (Some("whsec_live".into()), Some("whsec_test_b".into()))
    );
    assert!(!set("nobody", "plk_test_c", "whsec_c").await);

    // A merchant stored before modes existed: one key, no test key.
    sqlx::query(
        "INSERT INTO merchants (merchant_id, api_key_sha256, webhook_secret, created_at) \
         VALUES ('old', $1, 'whsec', '2026-01-01T00:00:00.000000Z')",
    )
    .bind(merchants::api_key_hash("plk_old"))
    .execute(db.pool())
    .await
    .unwrap();
    assert_eq!(mode_of("plk_old").await, Some(("old".into(), Mode::Live)));
    assert_eq!(secrets("old").await, (Some("whsec".into()), None), "no test secret yet");
    assert!(set("old", "plk_test_old", "whsec_test_old").await);
    assert_eq!(mode_of("plk_test_old").await, Some(("old".into(), Mode::Test)));
    assert_eq!(secrets("old").await.1, Some("whsec_test_old".into()));
}

payledger_tests::both_backends!(
    the_cache_trusts_a_found_key_for_its_ttl_and_never_caches_a_miss,
    each_key_is_one_merchants_key_of_one_mode
);
