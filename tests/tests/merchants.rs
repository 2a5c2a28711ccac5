//! The API-key cache: a found key is trusted for its time to live, a wrong one never cached.

use std::time::Duration;

use payledger_store::merchants::{self, ApiKeyCache, ApiKeyHash, API_KEY_CACHE_TTL_MS};
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
    merchants::add(db.pool(), &keyring, "shop1", "plk_one", "whsec")
        .await
        .unwrap();
    let found = cache
        .merchant(db.pool(), &keyring, &ApiKeyHash::of("plk_one"))
        .await
        .unwrap()
        .expect("found");
    assert_eq!(found.merchant_id, "shop1");

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
            .map(|m| m.merchant_id),
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

payledger_tests::both_backends!(the_cache_trusts_a_found_key_for_its_ttl_and_never_caches_a_miss);
