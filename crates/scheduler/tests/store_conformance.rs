//! One behaviour suite for every storage backend: each test runs on PostgreSQL and
//! on SQLite and must pass unchanged on both.

use chrono::NaiveDate;
use serde_json::json;

use tessera_core::billing::CostRules;
use tessera_core::catalog::ModelCatalog;
use tessera_core::{params, Capability, JobId, JobState, Plan, Platform, Transition, UserRef};
use tessera_scheduler::store::{
    AccountRecord, CreateOutcome, Idempotency, JobFilter, JobRecord, NewJob, RedeemOutcome, Store,
    TransitionChange, TransitionOutcome,
};
use tessera_testkit::{backend_tests, Backend, TestDb};

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 25).unwrap()
}

fn new_job(user: &str, now: i64) -> NewJob {
    NewJob {
        id: JobId::generate(),
        frontend: Platform::Telegram,
        bot_id: "tg-image-bot-1".into(),
        user_ref: user.parse().unwrap(),
        capability: Capability::Image,
        reply_context: Some(json!({"chat_id": 42})),
        idempotency: None,
        request_id: Some("req-conformance".into()),
        now,
        day: day(),
    }
}

async fn create(store: &dyn Store, new: &NewJob, params: serde_json::Value) -> CreateOutcome {
    let catalog = ModelCatalog::default();
    let costs = CostRules::default();
    let validate = |plan: &Plan| params::validate(new.capability, &params, plan, &catalog, &costs);
    store.create_job(new, &validate).await.unwrap()
}

async fn created(store: &dyn Store, user: &str, now: i64) -> JobRecord {
    match create(
        store,
        &new_job(user, now),
        json!({"prompt": "a lighthouse"}),
    )
    .await
    {
        CreateOutcome::Created(job) => job,
        other => panic!("expected a created job, got {other:?}"),
    }
}

fn at(now: i64) -> TransitionChange {
    TransitionChange {
        now,
        ..Default::default()
    }
}

async fn first_sight_creates_a_free_user_and_charges_the_job(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let user: UserRef = "telegram:1".parse().unwrap();
    assert!(store.quota(&user, day()).await.unwrap().is_none());

    let job = created(&*store, "telegram:1", 1_000).await;
    assert_eq!(job.status, JobState::Queued);
    assert_eq!((job.created_at, job.queued_at), (1_000, Some(1_000)));
    assert_eq!(job.model, "sdxl-1.0");
    assert_eq!(job.cost_tokens, 1);
    assert_eq!(job.attempts, 0);
    assert_eq!(job.reply_context, Some(json!({"chat_id": 42})));
    assert_eq!(job.request_id.as_deref(), Some("req-conformance"));
    assert_eq!(job.params["width"], 1024);

    let quota = store.quota(&user, day()).await.unwrap().unwrap();
    assert_eq!(quota.plan.id, "free");
    assert_eq!(quota.tokens_used, 1);
    assert_eq!(store.get_job(&job.id, None).await.unwrap().unwrap(), job);
    assert!(store
        .get_job(&job.id, Some(Platform::Discord))
        .await
        .unwrap()
        .is_none());
}

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
    other_bot.bot_id = "tg-image-bot-2".into();
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
        worker_id: Some("worker-gpu-0".into()),
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
    other.bot_id = "tg-image-bot-2".into();
    create(&*store, &other, json!({"prompt": "x"})).await;
    store
        .transition(&ids[0], Transition::Cancel, &at(20))
        .await
        .unwrap();

    let page = |before: Option<JobId>| JobFilter {
        user_ref: Some("telegram:7".into()),
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
            bot_id: Some("tg-image-bot-1".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(queued.len(), 4);
    let bot2 = store
        .list_jobs(&JobFilter {
            bot_id: Some("tg-image-bot-2".into()),
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

async fn the_queue_head_is_in_policy_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let pro: UserRef = "telegram:pro".parse().unwrap();
    store.set_plan(&pro, "pro", day(), 0).await.unwrap();
    let f1 = created(&*store, "telegram:free", 100).await;
    let f2 = created(&*store, "telegram:free", 200).await;
    let p1 = created(&*store, "telegram:pro", 300).await;
    let f3 = created(&*store, "telegram:free", 400).await;
    let mut video = new_job("telegram:free", 150);
    video.capability = Capability::Video;
    assert!(matches!(
        create(&*store, &video, json!({"prompt": "x"})).await,
        CreateOutcome::Created(_)
    ));

    let ids = |head: Vec<tessera_core::policy::QueuedJob<JobId>>| {
        head.into_iter().map(|j| j.id).collect::<Vec<_>>()
    };
    let head = store.queue_head(Capability::Image, 100).await.unwrap();
    assert_eq!(head[0].priority.0, 2);
    assert_eq!(
        (head[1].queued_at, head[1].model.as_str()),
        (100, "sdxl-1.0")
    );
    assert_eq!(
        ids(head),
        vec![p1.id.clone(), f1.id.clone(), f2.id.clone(), f3.id.clone()]
    );
    assert_eq!(
        ids(store.queue_head(Capability::Image, 2).await.unwrap()),
        vec![p1.id, f1.id.clone()]
    );
    store
        .transition(&f1.id, Transition::Cancel, &at(500))
        .await
        .unwrap();
    assert_eq!(
        store
            .queue_head(Capability::Image, 100)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        store
            .queue_head(Capability::Video, 100)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(store
        .queue_head(Capability::Text, 100)
        .await
        .unwrap()
        .is_empty());
}

async fn run_times_come_from_completed_jobs(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    assert!(store
        .recent_run_times(Capability::Image, 10)
        .await
        .unwrap()
        .is_empty());
    for (start, end) in [(100, 1_100), (200, 3_200)] {
        let job = created(&*store, "telegram:9", start).await;
        let d = TransitionChange {
            now: start,
            worker_id: Some("w".into()),
            ..Default::default()
        };
        store
            .transition(&job.id, Transition::Dispatch, &d)
            .await
            .unwrap();
        store
            .transition(&job.id, Transition::Complete, &at(end))
            .await
            .unwrap();
    }
    let failed = created(&*store, "telegram:9", 300).await;
    store
        .transition(&failed.id, Transition::Fail, &at(9_000))
        .await
        .unwrap();
    assert_eq!(
        store.recent_run_times(Capability::Image, 10).await.unwrap(),
        vec![3_000, 1_000]
    );
    assert_eq!(
        store.recent_run_times(Capability::Image, 1).await.unwrap(),
        vec![3_000]
    );
    assert!(store
        .recent_run_times(Capability::Video, 10)
        .await
        .unwrap()
        .is_empty());
}

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

/// The store's queue window holds exactly the candidates a full scan of the
/// queue finds (the core's reference), on random queues with ties, random
/// workers and random sets of jobs already chosen (fewer than the depth).
async fn queue_windows_find_what_a_full_scan_finds(backend: Backend) {
    use rand::{Rng, SeedableRng};
    use tessera_core::policy::{Candidates, QueuedJob, WorkerView};
    use tessera_scheduler::store::WorkerSlot;

    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let users = ["telegram:p0", "telegram:p1", "telegram:p2", "telegram:p3"];
    for (user, plan) in users.iter().zip(["free", "starter", "pro", "admin"]) {
        store
            .set_plan(&user.parse().unwrap(), plan, day(), 0)
            .await
            .unwrap();
    }
    let image = ["sdxl-1.0", "flux-schnell"];
    let text = ["llama-3.2-3b", "qwen-2.5-7b"];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7e55e7a);
    let mut made = 0;
    while made < 60 {
        let mut new = new_job(users[rng.random_range(0..4)], rng.random_range(0..20));
        let params = if rng.random_bool(0.5) {
            json!({"prompt": "x", "model": image[rng.random_range(0..2)]})
        } else {
            new.capability = Capability::Text;
            json!({"prompt": "x", "model": text[rng.random_range(0..2)]})
        };
        match create(&*store, &new, params).await {
            CreateOutcome::Created(job) => {
                made += 1;
                if rng.random_bool(0.15) {
                    store
                        .transition(&job.id, Transition::Cancel, &at(30))
                        .await
                        .unwrap();
                }
            }
            CreateOutcome::Invalid(_) => {} // model outside the user's plan
            other => panic!("{other:?}"),
        }
    }
    let queued: Vec<QueuedJob<JobId>> = store
        .list_jobs(&JobFilter {
            statuses: vec![JobState::Queued],
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|j| QueuedJob {
            id: j.id,
            capability: j.capability,
            model: j.model,
            priority: j.priority,
            queued_at: j.queued_at.unwrap(),
        })
        .collect();
    let all_models: Vec<String> = image.iter().chain(&text).map(|m| (*m).to_owned()).collect();
    let subset = |rng: &mut rand::rngs::StdRng, from: &[String]| -> Vec<String> {
        from.iter()
            .filter(|_| rng.random_bool(0.5))
            .cloned()
            .collect()
    };
    for _ in 0..40 {
        let mut caps = vec![];
        if rng.random_bool(0.7) {
            caps.push(Capability::Image);
        }
        if rng.random_bool(0.7) {
            caps.push(Capability::Text);
        }
        let models = subset(&mut rng, &all_models);
        let loaded = subset(&mut rng, &models);
        let slot = WorkerSlot {
            worker_id: "w".into(),
            capabilities: caps.clone(),
            models: models.clone(),
            loaded_models: loaded.clone(),
        };
        let view = WorkerView {
            capabilities: &caps,
            models: &models,
            loaded_models: &loaded,
        };
        let expected = Candidates::from_queue(&queued, &view);
        let found = store.candidates(&slot).await.unwrap();
        assert_eq!(found.as_ref(), expected, "worker {slot:?}");

        let depth = rng.random_range(1..6u32);
        let window = store.queue_window(&slot.ranges(), depth).await.unwrap();
        // Passing over jobs of the window itself is the hard case: a range
        // whose every head was chosen must still show its next job.
        let chosen: Vec<&JobId> = window
            .iter()
            .filter(|_| rng.random_bool(0.6))
            .take(depth as usize - 1)
            .map(|j| &j.id)
            .collect();
        let expected =
            Candidates::from_queue(queued.iter().filter(|j| !chosen.contains(&&j.id)), &view);
        let found =
            Candidates::from_queue(window.iter().filter(|j| !chosen.contains(&&j.id)), &view);
        assert_eq!(
            found, expected,
            "worker {slot:?}, depth {depth}, chosen {chosen:?}"
        );
    }
}

/// Racing dispatchers never run one job twice, and drain the queue.
async fn racing_claims_dispatch_each_job_once(backend: Backend) {
    use std::collections::HashSet;
    use tessera_core::policy::Policy;
    use tessera_scheduler::store::WorkerSlot;

    let db = TestDb::new(backend).await;
    let store = db.store().await;
    for i in 0..6 {
        created(&*store, "telegram:claims", i).await;
    }
    let mut tasks = Vec::new();
    for w in 0..12 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let slot = WorkerSlot {
                worker_id: format!("worker-gpu-{w}"),
                capabilities: vec![Capability::Image],
                models: vec!["sdxl-1.0".into()],
                loaded_models: vec![],
            };
            store
                .claim_next(&slot, &Policy::default(), 100)
                .await
                .unwrap()
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        if let Some((job, _)) = t.await.unwrap() {
            assert_eq!(
                (job.status, job.attempts, job.started_at),
                (JobState::Running, 1, Some(100))
            );
            assert!(ids.insert(job.id), "a job was dispatched twice");
        }
    }
    // Up to 8 lost races per claimer are retried; 12 claimers cover 6 jobs.
    let left = store.queue_head(Capability::Image, 100).await.unwrap();
    assert_eq!(ids.len() + left.len(), 6);
    let slot = WorkerSlot {
        worker_id: "late".into(),
        capabilities: vec![Capability::Image],
        models: vec!["sdxl-1.0".into()],
        loaded_models: vec![],
    };
    while let Some((job, _)) = store
        .claim_next(&slot, &Policy::default(), 200)
        .await
        .unwrap()
    {
        assert!(ids.insert(job.id), "a job was dispatched twice");
    }
    assert_eq!(ids.len(), 6);
    let nothing = WorkerSlot {
        models: vec!["flux-schnell".into()],
        ..slot
    };
    assert!(store
        .claim_next(&nothing, &Policy::default(), 300)
        .await
        .unwrap()
        .is_none());
}

async fn heartbeats_keep_the_latest_description_and_first_sight(backend: Backend) {
    use tessera_api::internal::{Heartbeat, WorkerStatus};
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let mut hb = Heartbeat {
        worker_id: "worker-gpu-0".into(),
        status: WorkerStatus::Idle,
        address: "http://127.0.0.1:9000".into(),
        capabilities: vec![Capability::Image, Capability::Video],
        models: vec!["sdxl-1.0".into(), "wan-2.1".into()],
        loaded_models: vec![],
        current_job: None,
        gpu_name: Some("NVIDIA GeForce RTX 5060 Ti".into()),
        gpu_memory_used: Some(8000),
        gpu_memory_total: Some(16311),
        gpu_utilization: Some(12.5),
    };
    let first = store.record_heartbeat(&hb, 1_000).await.unwrap();
    assert_eq!((first.first_seen_at, first.last_seen_at), (1_000, 1_000));
    assert_eq!(first.heartbeat, hb);
    hb.status = WorkerStatus::Busy;
    hb.loaded_models = vec!["sdxl-1.0".into()];
    hb.current_job = Some(JobId::generate());
    hb.gpu_name = None;
    hb.gpu_memory_used = None;
    let second = store.record_heartbeat(&hb, 31_000).await.unwrap();
    assert_eq!((second.first_seen_at, second.last_seen_at), (1_000, 31_000));
    assert_eq!(second.heartbeat, hb);
    let mut other = hb.clone();
    other.worker_id = "worker-gpu-1".into();
    store.record_heartbeat(&other, 32_000).await.unwrap();
    let all = store.list_workers().await.unwrap();
    assert_eq!(
        all.iter()
            .map(|w| w.heartbeat.worker_id.as_str())
            .collect::<Vec<_>>(),
        ["worker-gpu-0", "worker-gpu-1"]
    );
    assert_eq!(all[0], second);
}

/// A dispatch pass chooses jobs for several workers, passing over those
/// already chosen, and claims them in one transaction; a job no longer queued
/// is left out, never dispatched twice.
async fn batch_claims_pass_over_chosen_jobs_and_taken_ones(backend: Backend) {
    use tessera_core::policy::Candidates;
    use tessera_scheduler::store::WorkerSlot;

    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(created(&*store, "telegram:batch", i).await.id);
    }
    let slot = WorkerSlot {
        worker_id: "worker-gpu-0".into(),
        capabilities: vec![Capability::Image],
        models: vec!["sdxl-1.0".into()],
        loaded_models: vec![],
    };
    let all = store.candidates(&slot).await.unwrap();
    assert_eq!(all.best.as_ref().map(|j| &j.id), Some(&ids[0]));
    // A window of depth 3 serves a pass of two workers: the second passes over
    // the first one's job.
    let window = store.queue_window(&slot.ranges(), 3).await.unwrap();
    let window_ids: Vec<&JobId> = window.iter().map(|j| &j.id).collect();
    assert_eq!(window_ids, ids.iter().collect::<Vec<_>>());
    let rest = Candidates::from_queue(window.iter().filter(|j| j.id != ids[0]), &slot.view());
    assert_eq!(rest.best.map(|j| &j.id), Some(&ids[1]));
    assert_eq!(rest.oldest.map(|j| &j.id), Some(&ids[1]));
    let shallow = store.queue_window(&slot.ranges(), 1).await.unwrap();
    assert_eq!(shallow.len(), 1, "depth bounds each range");

    let first = store
        .claim_batch(
            &[
                (ids[0].clone(), "w-a".into()),
                (ids[1].clone(), "w-b".into()),
            ],
            100,
        )
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    for (job, worker) in first.iter().zip(["w-a", "w-b"]) {
        assert_eq!(
            (
                job.status,
                job.attempts,
                job.worker_id.as_deref(),
                job.started_at
            ),
            (JobState::Running, 1, Some(worker), Some(100))
        );
    }
    let second = store
        .claim_batch(
            &[
                (ids[0].clone(), "w-c".into()),
                (ids[2].clone(), "w-c".into()),
            ],
            200,
        )
        .await
        .unwrap();
    assert_eq!(
        second.iter().map(|j| &j.id).collect::<Vec<_>>(),
        vec![&ids[2]]
    );
    let again = store.get_job(&ids[0], None).await.unwrap().unwrap();
    assert_eq!(
        (again.worker_id.as_deref(), again.attempts),
        (Some("w-a"), 1)
    );
}

// ---- accounts and links ----

/// A stand-in for a link code's hash: the store keeps whatever it is given.
fn code(n: u8) -> [u8; 32] {
    [n; 32]
}

/// The web bot the accounts here are created through.
const WEB_BOT: &str = "web-1";

/// A job of the website's bot for a `web:` user.
fn web_job(user: &str, now: i64) -> NewJob {
    NewJob {
        frontend: Platform::Web,
        bot_id: WEB_BOT.into(),
        reply_context: None,
        ..new_job(user, now)
    }
}

async fn account(store: &dyn Store, user: &str, email: &str) -> AccountRecord {
    store
        .create_account(
            &user.parse().unwrap(),
            WEB_BOT,
            email,
            "$argon2id$stand-in",
            5,
        )
        .await
        .unwrap()
        .expect("a new account")
}

#[track_caller]
fn linked(outcome: RedeemOutcome) -> AccountRecord {
    match outcome {
        RedeemOutcome::Linked(account) => account,
        other => panic!("expected a link, got {other:?}"),
    }
}

async fn accounts_are_found_by_email_and_user(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let ada = account(&*store, "web:ada", "ada@example.org").await;
    assert_eq!(
        (
            ada.user_ref.as_str(),
            ada.home_bot.as_str(),
            ada.email.as_str(),
            ada.created_at
        ),
        ("web:ada", WEB_BOT, "ada@example.org", 5)
    );
    assert!(ada.linked.is_empty());
    // An email is one account's.
    assert!(store
        .create_account(
            &"web:eve".parse().unwrap(),
            "demo",
            "ada@example.org",
            "h",
            6
        )
        .await
        .unwrap()
        .is_none());
    let (found, hash) = store
        .account_by_email("ada@example.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found, hash.as_str()), (ada.clone(), "$argon2id$stand-in"));
    assert!(store
        .account_by_email("eve@example.org")
        .await
        .unwrap()
        .is_none());
    let web_ada: UserRef = "web:ada".parse().unwrap();
    assert_eq!(store.get_account(&web_ada).await.unwrap(), Some(ada));
    // A web user seen only through jobs, and a user never seen, have no account.
    created(&*store, "web:anon", 1).await;
    for user in ["web:anon", "web:nobody", "telegram:1"] {
        let user: UserRef = user.parse().unwrap();
        assert_eq!(store.get_account(&user).await.unwrap(), None, "{user}");
    }
    // An account starts on the default plan; its quota names its home bot,
    // other users' none.
    let quota = store.quota(&web_ada, day()).await.unwrap().unwrap();
    assert_eq!((quota.plan.id.as_str(), quota.tokens_used), ("free", 0));
    assert_eq!(quota.home_bot.as_deref(), Some(WEB_BOT));
    let anon = store
        .quota(&"web:anon".parse().unwrap(), day())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(anon.home_bot, None);

    // Another web bot may not create jobs for the account: nothing is
    // charged. Its own bot may; a user that is no account is anyone's.
    let demo = |user: &str| NewJob {
        bot_id: "demo".into(),
        ..web_job(user, 7)
    };
    assert_eq!(
        create(&*store, &demo("web:ada"), json!({"prompt": "x"})).await,
        CreateOutcome::ForeignAccount
    );
    assert_eq!(store.tokens_used(&web_ada, day()).await.unwrap(), 0);
    assert!(matches!(
        create(&*store, &web_job("web:ada", 8), json!({"prompt": "x"})).await,
        CreateOutcome::Created(_)
    ));
    assert!(matches!(
        create(&*store, &demo("web:anon"), json!({"prompt": "x"})).await,
        CreateOutcome::Created(_)
    ));
}

async fn link_codes_link_once_replace_and_expire(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let ada = account(&*store, "web:ada", "ada@example.org").await;
    let web_ada: UserRef = "web:ada".parse().unwrap();
    let tg: UserRef = "telegram:7".parse().unwrap();
    let dc: UserRef = "discord:8".parse().unwrap();

    // Asking creates the bot user on first sight, on the default plan.
    assert!(store.quota(&tg, day()).await.unwrap().is_none());
    assert!(store.put_link_code(&tg, &code(1), 1_000, 0).await.unwrap());
    assert_eq!(
        store.quota(&tg, day()).await.unwrap().unwrap().plan.id,
        "free"
    );
    // Another user cannot get a code equal to a live one.
    assert!(!store.put_link_code(&dc, &code(1), 1_000, 0).await.unwrap());

    // Unknown codes, and users without an account, link nothing; the code
    // survives a redeem by a user with no account.
    assert_eq!(
        store
            .redeem_link_code(&web_ada, WEB_BOT, &code(9), 10)
            .await
            .unwrap(),
        RedeemOutcome::InvalidCode
    );
    let anon: UserRef = "web:anon".parse().unwrap();
    assert_eq!(
        store
            .redeem_link_code(&anon, WEB_BOT, &code(1), 10)
            .await
            .unwrap(),
        RedeemOutcome::NoAccount
    );
    // Nor does another web bot's key, for an account that is not its own.
    assert_eq!(
        store
            .redeem_link_code(&web_ada, "demo", &code(1), 10)
            .await
            .unwrap(),
        RedeemOutcome::NoAccount
    );
    let now = linked(
        store
            .redeem_link_code(&web_ada, WEB_BOT, &code(1), 10)
            .await
            .unwrap(),
    );
    assert_eq!(now.linked, ["telegram:7"]);
    assert_eq!(now.user_id, ada.user_id);
    assert_eq!(store.get_account(&web_ada).await.unwrap(), Some(now));
    // Single use.
    assert_eq!(
        store
            .redeem_link_code(&web_ada, WEB_BOT, &code(1), 11)
            .await
            .unwrap(),
        RedeemOutcome::InvalidCode
    );

    // Asking again replaces the earlier code.
    assert!(store.put_link_code(&dc, &code(2), 1_000, 20).await.unwrap());
    assert!(store.put_link_code(&dc, &code(3), 1_000, 21).await.unwrap());
    assert_eq!(
        store
            .redeem_link_code(&web_ada, WEB_BOT, &code(2), 22)
            .await
            .unwrap(),
        RedeemOutcome::InvalidCode
    );
    // A code is live until its expiry, not at it.
    assert_eq!(
        store
            .redeem_link_code(&web_ada, WEB_BOT, &code(3), 1_000)
            .await
            .unwrap(),
        RedeemOutcome::InvalidCode
    );
    assert!(store
        .put_link_code(&dc, &code(4), 2_000, 1_500)
        .await
        .unwrap());
    let both = linked(
        store
            .redeem_link_code(&web_ada, WEB_BOT, &code(4), 1_999)
            .await
            .unwrap(),
    );
    // Sorted, whatever the order of linking.
    assert_eq!(both.linked, ["discord:8", "telegram:7"]);

    // An expired code is forgotten when anyone next asks, so its hash is free again.
    assert!(store
        .put_link_code(&tg, &code(5), 3_000, 2_000)
        .await
        .unwrap());
    assert!(store
        .put_link_code(&dc, &code(5), 9_000, 3_000)
        .await
        .unwrap());

    // Re-linking moves a bot user to the account that redeems its new code.
    account(&*store, "web:bob", "bob@example.org").await;
    let web_bob: UserRef = "web:bob".parse().unwrap();
    assert!(store
        .put_link_code(&tg, &code(6), 9_000, 3_000)
        .await
        .unwrap());
    let bob = linked(
        store
            .redeem_link_code(&web_bob, WEB_BOT, &code(6), 3_001)
            .await
            .unwrap(),
    );
    assert_eq!(
        (bob.user_ref.as_str(), bob.linked.clone()),
        ("web:bob", vec!["telegram:7".to_owned()])
    );
    let ada = store.get_account(&web_ada).await.unwrap().unwrap();
    assert_eq!(ada.linked, ["discord:8"]);
    let (by_email, _) = store
        .account_by_email("ada@example.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_email, ada);
}

/// Two redeems racing for one code: one links, the other finds no code.
async fn racing_redeems_link_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    for i in 0..8 {
        account(&*store, &format!("web:a{i}"), &format!("a{i}@example.org")).await;
    }
    for round in 0..5u8 {
        let tg: UserRef = format!("telegram:{round}").parse().unwrap();
        assert!(store
            .put_link_code(&tg, &code(round), 1_000, 0)
            .await
            .unwrap());
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let account: UserRef = format!("web:a{i}").parse().unwrap();
                store
                    .redeem_link_code(&account, WEB_BOT, &code(round), 1)
                    .await
                    .unwrap()
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                RedeemOutcome::Linked(a) => winners.push(a),
                RedeemOutcome::InvalidCode => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert!(winners[0].linked.contains(&tg.to_string()));
    }
}

/// A linked bot user is billed as its account: one plan, one quota, jobs
/// charged and refunded to the account's usage row, from either side.
async fn linked_users_share_the_accounts_plan_and_quota(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let ada = account(&*store, "web:ada", "ada@example.org").await;
    let web_ada: UserRef = "web:ada".parse().unwrap();
    let tg: UserRef = "telegram:7".parse().unwrap();
    // A job before linking is the bot user's own.
    let before = created(&*store, "telegram:7", 1).await;
    assert_ne!(before.user_id, ada.user_id);
    assert!(store.put_link_code(&tg, &code(1), 1_000, 2).await.unwrap());
    linked(
        store
            .redeem_link_code(&web_ada, WEB_BOT, &code(1), 3)
            .await
            .unwrap(),
    );
    // Its own day's usage stays its own; the account's is now what it sees.
    assert_eq!(
        store.tokens_charged(before.user_id, day()).await.unwrap(),
        1
    );
    assert_eq!(store.tokens_used(&tg, day()).await.unwrap(), 0);

    // Racing creates from both sides: the account's 20 free tokens, no more.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let store = store.clone();
        let user = if i % 2 == 0 { "telegram:7" } else { "web:ada" };
        tasks.push(tokio::spawn(async move {
            let new = if user.starts_with("web:") {
                web_job(user, 10 + i)
            } else {
                new_job(user, 10 + i)
            };
            create(&*store, &new, json!({"prompt": "x"})).await
        }));
    }
    let mut jobs = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            CreateOutcome::Created(job) => jobs.push(job),
            CreateOutcome::QuotaExhausted { plan, used, .. } => {
                assert_eq!((plan.id.as_str(), used), ("free", 20));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(jobs.len(), 20);
    assert!(jobs.iter().all(|j| j.user_id == ada.user_id));
    assert!(jobs.iter().any(|j| j.user_ref == "telegram:7"));
    assert!(jobs.iter().any(|j| j.user_ref == "web:ada"));
    for user in [&tg, &web_ada] {
        let q = store.quota(user, day()).await.unwrap().unwrap();
        assert_eq!((q.plan.id.as_str(), q.tokens_used), ("free", 20), "{user}");
        assert_eq!(q.user_ref, user.to_string());
        assert_eq!(store.tokens_used(user, day()).await.unwrap(), 20);
    }
    assert_eq!(store.tokens_charged(ada.user_id, day()).await.unwrap(), 20);

    // A refund goes back to the account, whichever side cancels.
    let bot_job = jobs.iter().find(|j| j.user_ref == "telegram:7").unwrap();
    let out = store
        .transition(&bot_job.id, Transition::Cancel, &at(100))
        .await
        .unwrap();
    assert!(matches!(out, TransitionOutcome::Applied(ref j) if j.refunded));
    assert_eq!(store.tokens_used(&web_ada, day()).await.unwrap(), 19);
    assert_eq!(store.tokens_used(&tg, day()).await.unwrap(), 19);

    // The plan of a linked user is its account's: setting it sets the account's.
    let q = store
        .set_plan(&tg, "pro", day(), 200)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((q.plan.id.as_str(), q.tokens_used), ("pro", 19));
    let q = store.quota(&web_ada, day()).await.unwrap().unwrap();
    assert_eq!(q.plan.id, "pro");
    let job = created(&*store, "telegram:7", 300).await;
    assert_eq!((job.priority.0, job.user_id), (2, ada.user_id));
    let gauges = store.gauges().await.unwrap();
    // One person: counted once, on the plan that applies.
    assert_eq!(gauges.users_per_plan, [("pro".to_owned(), 1)]);

    // Tokens charged to each user id equal the costs of its jobs not refunded.
    let mut ids: Vec<JobId> = jobs.iter().map(|j| j.id.clone()).collect();
    ids.extend([before.id, job.id]);
    let checked = tessera_testkit::invariants::check(&*store, &ids, None, false).await;
    assert_eq!(checked.tokens_charged, 1 + 19 + 1);
}

/// The two schemas, migrated, have the same tables and columns, and the
/// same columns may be NULL (SQLite's primary keys aside: it lets a
/// non-integer primary key hold NULL, though Tessera never writes one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schemas_are_equal_column_for_column() {
    use sqlx::Connection;
    use std::collections::BTreeMap;

    let pg = TestDb::new(Backend::Postgres).await;
    let lite = TestDb::new(Backend::Sqlite).await;
    // Opening a store applies the migrations.
    pg.store().await.close().await;
    lite.store().await.close().await;

    // (table, column) -> (nullable, part of the primary key)
    let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    let rows: Vec<(String, String, String, bool)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text, c.is_nullable::text, \
         EXISTS (SELECT 1 FROM information_schema.table_constraints t \
                 JOIN information_schema.key_column_usage k \
                   ON k.constraint_name = t.constraint_name AND k.table_name = t.table_name \
                 WHERE t.constraint_type = 'PRIMARY KEY' AND t.table_name = c.table_name \
                   AND k.column_name = c.column_name) \
         FROM information_schema.columns c \
         WHERE c.table_schema = 'public' AND c.table_name NOT LIKE '\\_sqlx%'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let postgres: BTreeMap<(String, String), (bool, bool)> = rows
        .into_iter()
        .map(|(t, c, nullable, pk)| ((t, c), (nullable == "YES", pk)))
        .collect();
    let mut conn = sqlx::SqliteConnection::connect(&lite.url).await.unwrap();
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT m.name, p.name, p.\"notnull\", p.pk FROM sqlite_master m \
         JOIN pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         AND m.name NOT LIKE '\\_sqlx%' ESCAPE '\\'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let sqlite: BTreeMap<(String, String), (bool, bool)> = rows
        .into_iter()
        .map(|(t, c, notnull, pk)| ((t, c), (notnull == 0, pk > 0)))
        .collect();

    let names =
        |m: &BTreeMap<(String, String), (bool, bool)>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&postgres),
        names(&sqlite),
        "tables and columns differ"
    );
    assert!(postgres.contains_key(&("link_codes".to_owned(), "code_hash".to_owned())));
    for (column, &(pg_nullable, pk)) in &postgres {
        let (lite_nullable, lite_pk) = sqlite[column];
        assert_eq!(pk, lite_pk, "{column:?}: primary key on one side only");
        if !pk {
            assert_eq!(
                pg_nullable, lite_nullable,
                "{column:?}: NULL allowed on one side only"
            );
        }
    }
}

backend_tests!(
    batch_claims_pass_over_chosen_jobs_and_taken_ones,
    first_sight_creates_a_free_user_and_charges_the_job,
    the_quota_stops_at_the_plan_limit,
    invalid_parameters_create_nothing,
    idempotency_replays_and_detects_conflicts,
    transitions_follow_the_state_machine_and_refund,
    listing_filters_and_pages_newest_first,
    the_queue_head_is_in_policy_order,
    run_times_come_from_completed_jobs,
    keys_are_found_by_hash_until_revoked,
    plans_are_the_seeds_and_can_be_assigned,
    concurrent_creates_never_overspend,
    queue_windows_find_what_a_full_scan_finds,
    racing_claims_dispatch_each_job_once,
    heartbeats_keep_the_latest_description_and_first_sight,
    accounts_are_found_by_email_and_user,
    link_codes_link_once_replace_and_expire,
    racing_redeems_link_once,
    linked_users_share_the_accounts_plan_and_quota,
);
