//! The embedded database's files are the ledger: only their owner may read them.

use std::os::unix::fs::PermissionsExt;

use payledger_domain::{ids, PaymentOrderCommand};
use payledger_store::{Database, PoolConfig};
use payledger_tests::sandbox_terms;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_new_sqlite_database_and_its_wal_are_private_to_their_owner() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ledger.db");
    let db = Database::connect(Some(&format!("sqlite://{}", file.display())), PoolConfig::default())
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let order_id = ids::order_id("m", payledger_domain::Mode::Test, "F-1");
    let create = PaymentOrderCommand::CreateOrder {
        order_id,
        terms: sandbox_terms("F-1", 100),
        created_at: chrono::Utc::now(),
    };
    db.execute(order_id, create, "test").await.unwrap();
    let wal = dir.path().join("ledger.db-wal");
    let shm = dir.path().join("ledger.db-shm");
    assert!(wal.exists() && shm.exists(), "WAL mode writes -wal and -shm files");
    for path in [&file, &wal, &shm] {
        assert_eq!(mode(path), 0o600, "{}", path.display());
    }
    db.close().await;
}
