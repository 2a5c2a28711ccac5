//! Merchants' API keys: each key is one merchant's key of one mode; the cache trusts a found key
//! for its time to live and never caches a wrong one.

use std::time::Duration;

use payledger_domain::Mode;
use payledger_store::merchants::{self, ApiKeyCache, ApiKeyHash, ApiKeys, API_KEY_CACHE_TTL_MS};
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
    let keys = ApiKeys {
        live: "plk_one",
        test: "plk_test_one",
    };
    merchants::add(db.pool(), &keyring, "shop1", keys, "whsec")
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

/// A merchant's live key authenticates it in live mode, its test key in test mode; a new test
/// key replaces the old one and leaves the live key alone; a merchant from before modes (live
/// key only) gets its first test key the same way.
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
    let keys = ApiKeys {
        live: "plk_live_a",
        test: "plk_test_a",
    };
    merchants::add(db.pool(), &keyring, "shop1", keys, "whsec")
        .await
        .unwrap();
    assert_eq!(mode_of("plk_live_a").await, Some(("shop1".into(), Mode::Live)));
    assert_eq!(mode_of("plk_test_a").await, Some(("shop1".into(), Mode::Test)));

    assert!(merchants::set_test_key(db.pool(), "shop1", "plk_test_b").await.unwrap());
    assert_eq!(mode_of("plk_test_a").await, None);
    assert_eq!(mode_of("plk_test_b").await, Some(("shop1".into(), Mode::Test)));
    assert_eq!(mode_of("plk_live_a").await, Some(("shop1".into(), Mode::Live)));
    assert!(!merchants::set_test_key(db.pool(), "nobody", "plk_test_c")
        .await
        .unwrap());

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
    assert!(merchants::set_test_key(db.pool(), "old", "plk_test_old").await.unwrap());
    assert_eq!(mode_of("plk_test_old").await, Some(("old".into(), Mode::Test)));
}

payledger_tests::both_backends!(
    the_cache_trusts_a_found_key_for_its_ttl_and_never_caches_a_miss,
    each_key_is_one_merchants_key_of_one_mode
);
