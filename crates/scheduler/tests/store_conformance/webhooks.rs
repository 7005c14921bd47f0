//! Job webhooks: keys' secrets, and an ended job's one delivery, claimed by
//! one deliverer at a time and recorded fenced on its attempt.

use serde_json::json;

use tessera_core::Transition;
use tessera_scheduler::store::{
    AttemptOutcome, Callback, CreateOutcome, DeliveryState, JobRecord, Store,
};
use tessera_testkit::{backend_tests, Backend, TestDb};

use crate::common::*;

async fn hooked(store: &dyn Store, user: &str, now: i64) -> JobRecord {
    let mut new = new_job(user, now);
    new.callback = Some(Callback {
        url: "https://example.com/hook".into(),
        key_id: "key_01JD3Z8X9Q4W6E2R5T7Y9V1K3M".into(),
    });
    match create(store, &new, json!({"prompt": "a lighthouse"})).await {
        CreateOutcome::Created(job) => job,
        other => panic!("expected a created job, got {other:?}"),
    }
}

async fn secrets_are_set_replaced_and_read(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    assert_eq!(store.webhook_secret("key_a").await.unwrap(), None);
    store
        .set_webhook_secret("key_a", "whsec_1", 5)
        .await
        .unwrap();
    store
        .set_webhook_secret("key_b", "whsec_2", 6)
        .await
        .unwrap();
    assert_eq!(
        store.webhook_secret("key_a").await.unwrap().as_deref(),
        Some("whsec_1")
    );
    store
        .set_webhook_secret("key_a", "whsec_3", 7)
        .await
        .unwrap();
    assert_eq!(
        store.webhook_secret("key_a").await.unwrap().as_deref(),
        Some("whsec_3")
    );
    assert_eq!(
        store.webhook_secret("key_b").await.unwrap().as_deref(),
        Some("whsec_2")
    );
}

async fn an_ended_job_has_one_delivery_claimed_once_and_recorded_fenced(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let plain = created(&*store, "telegram:1", 10).await;
    assert_eq!(plain.callback_url, None);
    let job = hooked(&*store, "telegram:2", 10).await;
    assert_eq!(
        job.callback_url.as_deref(),
        Some("https://example.com/hook")
    );
    assert_eq!(
        job.callback_key_id.as_deref(),
        Some("key_01JD3Z8X9Q4W6E2R5T7Y9V1K3M")
    );
    // Nothing is due while the job lives.
    assert_eq!(store.webhook_delivery(&job.id).await.unwrap(), None);
    assert!(store.claim_webhooks(100, 200, 10).await.unwrap().is_empty());

    store
        .transition(&plain.id, Transition::Cancel, &at(20))
        .await
        .unwrap();
    store
        .transition(&job.id, Transition::Cancel, &at(20))
        .await
        .unwrap();
    assert_eq!(store.webhook_delivery(&plain.id).await.unwrap(), None);
    let due = store.webhook_delivery(&job.id).await.unwrap().unwrap();
    assert_eq!(due.event, "job.cancelled");
    assert_eq!(due.state, DeliveryState::Pending);
    assert_eq!((due.attempts, due.due_at, due.created_at), (0, 20, 20));
    assert_eq!(due.url, "https://example.com/hook");
    assert!(due.id.as_str().starts_with("whk_"));

    // Not due before its time; claimed once, then leased.
    assert!(store.claim_webhooks(19, 100, 10).await.unwrap().is_empty());
    let claimed = store.claim_webhooks(30, 1000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, due.id);
    assert_eq!(claimed[0].attempts, 1);
    assert_eq!(claimed[0].first_attempt_at, Some(30));
    assert_eq!(claimed[0].due_at, 1000);
    assert!(store
        .claim_webhooks(999, 2000, 10)
        .await
        .unwrap()
        .is_empty());

    // A failed attempt: due again later, same webhook id.
    let retry = AttemptOutcome::Retry {
        due_at: 500,
        status: Some(500),
        error: "the receiver answered 500".into(),
    };
    assert!(!store
        .record_webhook_attempt(&job.id, 2, &retry, 40)
        .await
        .unwrap());
    assert!(store
        .record_webhook_attempt(&job.id, 1, &retry, 40)
        .await
        .unwrap());
    let waiting = store.webhook_delivery(&job.id).await.unwrap().unwrap();
    assert_eq!(waiting.state, DeliveryState::Pending);
    assert_eq!(waiting.due_at, 500);
    assert_eq!(waiting.last_status, Some(500));
    assert_eq!(waiting.ended_at, None);
    let again = store.claim_webhooks(500, 2000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, due.id);
    assert_eq!(again[0].attempts, 2);
    assert_eq!(again[0].first_attempt_at, Some(30));
    assert_eq!(again[0].last_attempt_at, Some(500));

    // Delivered: final; a stale attempt's outcome changes nothing.
    let delivered = AttemptOutcome::Delivered { status: 204 };
    assert!(store
        .record_webhook_attempt(&job.id, 2, &delivered, 510)
        .await
        .unwrap());
    assert!(!store
        .record_webhook_attempt(&job.id, 2, &retry, 520)
        .await
        .unwrap());
    let done = store.webhook_delivery(&job.id).await.unwrap().unwrap();
    assert_eq!(done.state, DeliveryState::Delivered);
    assert_eq!(done.last_status, Some(204));
    assert_eq!(done.last_error, None);
    assert_eq!(done.ended_at, Some(510));
    assert!(store
        .claim_webhooks(i64::MAX / 2, i64::MAX / 2, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn an_abandoned_delivery_is_not_claimed_again(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let job = hooked(&*store, "telegram:3", 10).await;
    store
        .transition(&job.id, Transition::Cancel, &at(20))
        .await
        .unwrap();
    let claimed = store.claim_webhooks(20, 100, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let abandoned = AttemptOutcome::Abandoned {
        status: None,
        error: "no answer".into(),
    };
    assert!(store
        .record_webhook_attempt(&job.id, 1, &abandoned, 30)
        .await
        .unwrap());
    let row = store.webhook_delivery(&job.id).await.unwrap().unwrap();
    assert_eq!(row.state, DeliveryState::Abandoned);
    assert_eq!(row.last_error.as_deref(), Some("no answer"));
    assert_eq!(row.ended_at, Some(30));
    assert!(store
        .claim_webhooks(1000, 2000, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn racing_claims_take_each_delivery_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let mut ids = Vec::new();
    for n in 0..6 {
        let job = hooked(&*store, &format!("telegram:{}", 10 + n), 10).await;
        store
            .transition(&job.id, Transition::Cancel, &at(20))
            .await
            .unwrap();
        ids.push(job.id);
    }
    let claims = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.claim_webhooks(30, 1000, 2).await.unwrap() })
    });
    let mut claimed = Vec::new();
    for c in futures::future::join_all(claims).await {
        claimed.extend(c.unwrap().into_iter().map(|d| d.job_id));
    }
    claimed.sort();
    let before = claimed.len();
    claimed.dedup();
    assert_eq!(claimed.len(), before, "a delivery was claimed twice");
    // Whatever the racing claims left is claimed by the next one.
    claimed.extend(
        store
            .claim_webhooks(30, 1000, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.job_id),
    );
    claimed.sort();
    ids.sort();
    assert_eq!(claimed, ids);
}

backend_tests!(
    secrets_are_set_replaced_and_read,
    an_ended_job_has_one_delivery_claimed_once_and_recorded_fenced,
    an_abandoned_delivery_is_not_claimed_again,
    racing_claims_take_each_delivery_once,
);
