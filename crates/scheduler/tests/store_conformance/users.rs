//! Plans and quotas: the plan's limit, the seeded plans, and racing creates
//! that never overspend.

use serde_json::json;

use tessera_core::{Plan, UserRef};
use tessera_scheduler::store::CreateOutcome;
use tessera_testkit::{backend_tests, Backend, TestDb};

use crate::common::*;

async fn the_quota_stops_at_the_plan_limit(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    for i in 0..20 {
        created(&*store, "telegram:2", i).await;
    }
    match create(
        &*store,
        &new_job("telegram:2", 99),
        json!({"prompt": "one more"}),
    )
    .await
    {
        CreateOutcome::QuotaExhausted { plan, used, cost } => {
            assert_eq!((plan.id.as_str(), used, cost), ("free", 20, 1));
        }
        other => panic!("expected quota exhaustion, got {other:?}"),
    }
    // Bigger jobs cost more, within the plan's limits.
    let pro: UserRef = "telegram:3".parse().unwrap();
    store
        .set_plan(&pro, "starter", day(), 0)
        .await
        .unwrap()
        .unwrap();
    let huge = json!({"prompt": "x", "resolution": "1536x1536"});
    assert!(matches!(
        create(&*store, &new_job("telegram:3", 1), huge).await,
        CreateOutcome::Created(ref j) if j.cost_tokens == 3
    ));
    // The next day starts from zero.
    let mut tomorrow = new_job("telegram:2", 100);
    tomorrow.day = day().succ_opt().unwrap();
    assert!(matches!(
        create(&*store, &tomorrow, json!({"prompt": "x"})).await,
        CreateOutcome::Created(_)
    ));
}

async fn plans_are_the_seeds_and_can_be_assigned(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    assert_eq!(store.plans().await.unwrap(), Plan::seed_plans());
    let user: UserRef = "web:ada".parse().unwrap();
    let q = store
        .set_plan(&user, "pro", day(), 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((q.plan.id.as_str(), q.tokens_used), ("pro", 0));
    assert!(store
        .set_plan(&user, "platinum", day(), 1)
        .await
        .unwrap()
        .is_none());
    let job = created(&*store, "web:ada", 2).await;
    assert_eq!(job.priority.0, 2, "jobs carry their plan's priority");
}

/// Racing creates by one user serialise on their usage row: never more than the quota.
async fn concurrent_creates_never_overspend(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            create(
                &*store,
                &new_job("telegram:race", i),
                json!({"prompt": "x"}),
            )
            .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), CreateOutcome::Created(_)) {
            ok += 1;
        }
    }
    assert_eq!(ok, 20);
    let user: UserRef = "telegram:race".parse().unwrap();
    assert_eq!(store.tokens_used(&user, day()).await.unwrap(), 20);
}

/// A payment channel meeting a user first creates them on FREE; meeting a
/// known user again changes nothing (not their plan, not their spending).
async fn ensure_user_creates_once_and_keeps_what_is_there(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let new: UserRef = "telegram:41".parse().unwrap();
    assert!(store.quota(&new, day(), 0).await.unwrap().is_none());
    store.ensure_user(&new, 0).await.unwrap();
    let quota = store.quota(&new, day(), 0).await.unwrap().expect("created");
    assert_eq!(quota.plan.id, Plan::DEFAULT_ID);
    let known: UserRef = "telegram:42".parse().unwrap();
    store.set_plan(&known, "pro", day(), 0).await.unwrap();
    created(&*store, "telegram:42", 1).await;
    store.ensure_user(&known, 5).await.unwrap();
    let quota = store.quota(&known, day(), 5).await.unwrap().unwrap();
    assert_eq!((quota.plan.id.as_str(), quota.tokens_used), ("pro", 1));
}

backend_tests!(
    the_quota_stops_at_the_plan_limit,
    plans_are_the_seeds_and_can_be_assigned,
    concurrent_creates_never_overspend,
    ensure_user_creates_once_and_keeps_what_is_there,
);
