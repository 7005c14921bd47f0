//! Frontend keys: found by their hash until revoked.

use tessera_core::Platform;
use tessera_testkit::{backend_tests, Backend, TestDb};

async fn keys_are_found_by_hash_until_revoked(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let key = store
        .insert_api_key(Platform::Discord, "dc-image-bot-1", &[7; 32], 5)
        .await
        .unwrap();
    assert_eq!(
        store.find_api_key(&[7; 32]).await.unwrap(),
        Some(key.clone())
    );
    assert_eq!(store.find_api_key(&[8; 32]).await.unwrap(), None);
    let revoked = store.revoke_api_key(&key.id, 9).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(9));
    assert_eq!(
        store
            .revoke_api_key(&key.id, 10)
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(9)
    );
    assert_eq!(store.find_api_key(&[7; 32]).await.unwrap(), None);
    assert_eq!(store.list_api_keys().await.unwrap(), vec![revoked]);
}

backend_tests!(keys_are_found_by_hash_until_revoked,);
