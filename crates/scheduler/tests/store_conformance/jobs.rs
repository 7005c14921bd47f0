//! Jobs: creating and charging, validation, idempotency, the state machine
//! with its refunds, and listing.

use serde_json::json;

use tessera_core::{JobId, JobState, Platform, Transition, UserRef};
use tessera_scheduler::store::{
    CreateOutcome, Idempotency, JobFilter, TransitionChange, TransitionOutcome,
};
use tessera_testkit::{backend_tests, Backend, TestDb};

use crate::common::*;

async fn first_sight_creates_a_free_user_and_charges_the_job(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let user: UserRef = "telegram:1".parse().unwrap();
    assert!(store.quota(&user, day(), 0).await.unwrap().is_none());

    let job = created(&*store, "telegram:1", 1_000).await;
    assert_eq!(job.status, JobState::Queued);
    assert_eq!((job.created_at, job.queued_at), (1_000, Some(1_000)));
    assert_eq!(job.model, "sdxl-1.0");
    assert_eq!(job.cost_tokens, 1);
    assert_eq!(job.attempts, 0);
    assert_eq!(job.reply_context, Some(json!({"chat_id": 42})));
    assert_eq!(job.request_id.as_deref(), Some("req-conformance"));
    assert_eq!(job.params.to_value()["width"], 1024);

    let quota = store.quota(&user, day(), 0).await.unwrap().unwrap();
    assert_eq!(quota.plan.id, "free");
    assert_eq!(quota.tokens_used, 1);
    assert_eq!(store.get_job(&job.id, None).await.unwrap().unwrap(), job);
    assert!(store
        .get_job(&job.id, Some(Platform::Discord))
        .await
        .unwrap()
        .is_none());
}

async fn invalid_parameters_create_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let out = create(
        &*store,
        &new_job("telegram:4", 1),
        json!({"prompt": "x", "resolution": "2048x2048"}),
    )
    .await;
    let CreateOutcome::Invalid(e) = out else {
        panic!("expected invalid, got {out:?}")
    };
    assert_eq!(e.code, "resolution_not_allowed");
    let user: UserRef = "telegram:4".parse().unwrap();
    assert_eq!(store.tokens_used(&user, day()).await.unwrap(), 0);
    let all = store
        .list_jobs(&JobFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(all.is_empty());
}

async fn idempotency_replays_and_detects_conflicts(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let mut first = new_job("telegram:5", 1);
    first.idempotency = Some(Idempotency {
        key: "abc".into(),
        request_hash: vec![1; 32],
    });
    let CreateOutcome::Created(job) = create(&*store, &first, json!({"prompt": "x"})).await else {
        panic!()
    };
    let mut retry = new_job("telegram:5", 2);
    retry.idempotency = first.idempotency.clone();
    assert_eq!(
        create(&*store, &retry, json!({"prompt": "x"})).await,
        CreateOutcome::Replayed(job.clone())
    );
    let mut different = new_job("telegram:5", 3);
    different.idempotency = Some(Idempotency {
        key: "abc".into(),
        request_hash: vec![2; 32],
    });
    assert_eq!(
        create(&*store, &different, json!({"prompt": "y"})).await,
        CreateOutcome::IdempotencyConflict
    );
    // Same key from another bot is a different request.
    let mut other_bot = new_job("telegram:5", 4);
    other_bot.bot_id = "tg-image-bot-2".parse().unwrap();
    other_bot.idempotency = first.idempotency.clone();
    assert!(matches!(
        create(&*store, &other_bot, json!({"prompt": "x"})).await,
        CreateOutcome::Created(_)
    ));
    let user: UserRef = "telegram:5".parse().unwrap();
    assert_eq!(store.tokens_used(&user, day()).await.unwrap(), 2);
}

async fn transitions_follow_the_state_machine_and_refund(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let user: UserRef = "telegram:6".parse().unwrap();
    let job = created(&*store, "telegram:6", 10).await;

    // Illegal: a queued job cannot complete.
    let out = store
        .transition(&job.id, Transition::Complete, &at(11))
        .await
        .unwrap();
    assert!(matches!(out, TransitionOutcome::Illegal(ref j) if j.status == JobState::Queued));

    let dispatch = TransitionChange {
        now: 20,
        worker_id: Some("worker-gpu-0".parse().unwrap()),
        ..Default::default()
    };
    let TransitionOutcome::Applied(running) = store
        .transition(&job.id, Transition::Dispatch, &dispatch)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (running.status, running.attempts, running.started_at),
        (JobState::Running, 1, Some(20))
    );
    assert_eq!(running.worker_id.as_deref(), Some("worker-gpu-0"));

    // The worker is lost: back to the queue, attempts kept.
    let TransitionOutcome::Applied(requeued) = store
        .transition(&job.id, Transition::Requeue, &at(30))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (requeued.status, requeued.attempts, requeued.queued_at),
        (JobState::Queued, 1, Some(30))
    );
    assert_eq!((requeued.worker_id, requeued.started_at), (None, None));

    // Sent to a worker that refuses it: back in the queue in the place it
    // had (its queued time kept), and the attempt not counted.
    store
        .transition(&job.id, Transition::Dispatch, &dispatch)
        .await
        .unwrap();
    let refused = TransitionChange {
        now: 35,
        release: true,
        ..Default::default()
    };
    let TransitionOutcome::Applied(handed_back) = store
        .transition(&job.id, Transition::Requeue, &refused)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (
            handed_back.status,
            handed_back.attempts,
            handed_back.queued_at
        ),
        (JobState::Queued, 1, Some(30))
    );

    store
        .transition(&job.id, Transition::Dispatch, &dispatch)
        .await
        .unwrap();
    let TransitionOutcome::Applied(done) = store
        .transition(&job.id, Transition::Complete, &at(40))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (done.status, done.ended_at, done.attempts, done.refunded),
        (JobState::Completed, Some(40), 2, false)
    );
    assert_eq!(store.tokens_used(&user, day()).await.unwrap(), 1);

    // Terminal: nothing moves it, and cancelling it refunds nothing.
    for t in Transition::ALL {
        let out = store.transition(&job.id, t, &at(50)).await.unwrap();
        assert!(
            matches!(out, TransitionOutcome::Illegal(_)),
            "{t:?} moved a completed job"
        );
    }
    assert_eq!(store.tokens_used(&user, day()).await.unwrap(), 1);

    // Cancel and fail refund exactly once.
    let a = created(&*store, "telegram:6", 60).await;
    let b = created(&*store, "telegram:6", 61).await;
    assert_eq!(store.tokens_used(&user, day()).await.unwrap(), 3);
    let cancel = TransitionChange {
        now: 70,
        error: Some(("cancelled_by_user".into(), "bye".into())),
        ..Default::default()
    };
    let TransitionOutcome::Applied(c) = store
        .transition(&a.id, Transition::Cancel, &cancel)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (c.status, c.refunded, c.error_code.as_deref()),
        (JobState::Cancelled, true, Some("cancelled_by_user"))
    );
    assert!(matches!(
        store
            .transition(&a.id, Transition::Cancel, &cancel)
            .await
            .unwrap(),
        TransitionOutcome::Illegal(_)
    ));
    store
        .transition(&b.id, Transition::Dispatch, &dispatch)
        .await
        .unwrap();
    let TransitionOutcome::Applied(f) = store
        .transition(&b.id, Transition::Fail, &cancel)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(f.refunded);
    assert_eq!(store.tokens_used(&user, day()).await.unwrap(), 1);

    // Scoped to another frontend, the job does not exist.
    let c = created(&*store, "telegram:6", 80).await;
    let scoped = TransitionChange {
        frontend: Some(Platform::Discord),
        ..at(81)
    };
    assert_eq!(
        store
            .transition(&c.id, Transition::Cancel, &scoped)
            .await
            .unwrap(),
        TransitionOutcome::NotFound
    );
    assert_eq!(
        store
            .transition(&JobId::generate(), Transition::Cancel, &at(1))
            .await
            .unwrap(),
        TransitionOutcome::NotFound
    );
}

async fn listing_filters_and_pages_newest_first(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(created(&*store, "telegram:7", i).await.id);
    }
    let mut other = new_job("telegram:8", 10);
    other.bot_id = "tg-image-bot-2".parse().unwrap();
    create(&*store, &other, json!({"prompt": "x"})).await;
    store
        .transition(&ids[0], Transition::Cancel, &at(20))
        .await
        .unwrap();

    let page = |before: Option<JobId>| JobFilter {
        user_ref: Some("telegram:7".parse().unwrap()),
        before,
        limit: 2,
        ..Default::default()
    };
    let p1 = store.list_jobs(&page(None)).await.unwrap();
    let p2 = store
        .list_jobs(&page(Some(p1[1].id.clone())))
        .await
        .unwrap();
    let p3 = store
        .list_jobs(&page(Some(p2[1].id.clone())))
        .await
        .unwrap();
    let seen: Vec<_> = p1
        .iter()
        .chain(&p2)
        .chain(&p3)
        .map(|j| j.id.clone())
        .collect();
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected);

    let queued = store
        .list_jobs(&JobFilter {
            statuses: vec![JobState::Queued],
            bot_id: Some("tg-image-bot-1".parse().unwrap()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(queued.len(), 4);
    let bot2 = store
        .list_jobs(&JobFilter {
            bot_id: Some("tg-image-bot-2".parse().unwrap()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(bot2.len(), 1);
    let discord = store
        .list_jobs(&JobFilter {
            frontend: Some(Platform::Discord),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(discord.is_empty());
}

backend_tests!(
    first_sight_creates_a_free_user_and_charges_the_job,
    invalid_parameters_create_nothing,
    idempotency_replays_and_detects_conflicts,
    transitions_follow_the_state_machine_and_refund,
    listing_filters_and_pages_newest_first,
);
