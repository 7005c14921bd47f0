//! The map between Stripe customers and users: one customer per user, one
//! user per customer, the first recorded kept, nothing for users that do not
//! exist.

use tessera_core::UserRef;
use tessera_scheduler::store::Store;
use tessera_testkit::{backend_tests, Backend, TestDb};

async fn account(store: &dyn Store, email: &str) -> UserRef {
    let user: UserRef = format!("web:{}", email.split('@').next().unwrap())
        .parse()
        .unwrap();
    store
        .create_account(&user, "web-1", email, "$argon2id$stand-in", 0)
        .await
        .unwrap()
        .expect("a new account");
    user
}

async fn customers_map_both_ways_and_keep_the_first(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let nobody: UserRef = "web:nobody".parse().unwrap();
    assert_eq!(
        store
            .put_stripe_customer(&nobody, "cus_ghost", 1)
            .await
            .unwrap(),
        None,
        "no customer is recorded for a user that does not exist"
    );
    assert_eq!(store.stripe_customer_user("cus_ghost").await.unwrap(), None);

    let ada = account(&*store, "ada@example.org").await;
    let bob = account(&*store, "bob@example.org").await;
    assert_eq!(store.stripe_customer(&ada).await.unwrap(), None);
    assert_eq!(
        store.put_stripe_customer(&ada, "cus_ada", 2).await.unwrap(),
        Some("cus_ada".to_owned())
    );
    // A checkout racing the first made a second customer: the first stays.
    assert_eq!(
        store
            .put_stripe_customer(&ada, "cus_ada_2", 3)
            .await
            .unwrap(),
        Some("cus_ada".to_owned())
    );
    assert_eq!(
        store.stripe_customer(&ada).await.unwrap().as_deref(),
        Some("cus_ada")
    );
    assert_eq!(
        store.stripe_customer_user("cus_ada").await.unwrap(),
        Some(ada.clone())
    );
    assert_eq!(store.stripe_customer_user("cus_ada_2").await.unwrap(), None);

    // One user per customer: another user cannot take Ada's.
    assert_eq!(
        store.put_stripe_customer(&bob, "cus_ada", 4).await.unwrap(),
        None
    );
    assert_eq!(store.stripe_customer(&bob).await.unwrap(), None);
    assert_eq!(
        store.stripe_customer_user("cus_ada").await.unwrap(),
        Some(ada)
    );
}

backend_tests!(customers_map_both_ways_and_keep_the_first);
