//! Fair share within a plan: jobs of one priority in start-time fair order
//! over users, tags taken in the creating transaction, kept on requeue, and
//! the queue's reads index-ordered on a large backlog.

use std::collections::HashMap;

use serde_json::json;

use tessera_core::fair::FairQueue;
use tessera_core::policy::Policy;
use tessera_core::{Capability, JobId, Priority, Transition, UserRef};
use tessera_scheduler::store::{CreateOutcome, Inspect, JobRecord, TransitionChange, WorkerSlot};
use tessera_testkit::{backend_tests, Backend, TestDb};

use crate::common::*;

fn image_worker(name: &str) -> WorkerSlot {
    WorkerSlot {
        worker_id: name.parse().unwrap(),
        capabilities: vec![Capability::Image],
        models: vec!["sdxl-1.0".into()],
        loaded_models: vec![],
    }
}

async fn on_plan(store: &dyn Inspect, user: &str, plan: &str) {
    let user: UserRef = user.parse().unwrap();
    store.set_plan(&user, plan, day(), 0).await.unwrap();
}

/// Claims the next job for `worker`, as a dispatcher would.
async fn claim(store: &dyn Inspect, worker: &WorkerSlot, now: i64) -> Option<JobRecord> {
    store
        .claim_next(worker, &Policy::default(), now)
        .await
        .unwrap()
        .map(|(job, _)| job)
}

/// One user queues 50 jobs, then another queues 2, both on PRO: the second
/// user's jobs are claimed second and fourth, not 51st and 52nd, and a third
/// user arriving after four claims is next.
async fn fair_share_a_flood_does_not_hold_back_another_user(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    for user in ["telegram:flood", "telegram:other", "telegram:late"] {
        on_plan(&*store, user, "pro").await;
    }
    let mut flood = Vec::new();
    for i in 0..50 {
        flood.push(created(&*store, "telegram:flood", 1_000 + i).await);
    }
    let other = [
        created(&*store, "telegram:other", 2_000).await,
        created(&*store, "telegram:other", 2_001).await,
    ];
    assert_eq!(
        flood.iter().map(|j| j.fair_tag).collect::<Vec<_>>(),
        (0..50).collect::<Vec<_>>(),
        "one token each: the flood's tags step by one"
    );
    assert_eq!((other[0].fair_tag, other[1].fair_tag), (0, 1));

    // The queue's order (and so the positions users are told).
    let head = store.queue_head(Capability::Image, 10).await.unwrap();
    let ids: Vec<&JobId> = head.iter().map(|j| &j.id).collect();
    assert_eq!(
        ids[..5],
        [
            &flood[0].id,
            &other[0].id,
            &flood[1].id,
            &other[1].id,
            &flood[2].id
        ]
    );

    let worker = image_worker("worker-gpu-0");
    let mut order = Vec::new();
    for t in 0..4 {
        order.push(claim(&*store, &worker, 3_000 + t).await.unwrap().id);
    }
    assert_eq!(
        order,
        vec![
            flood[0].id.clone(),
            other[0].id.clone(),
            flood[1].id.clone(),
            other[1].id.clone()
        ]
    );
    // The clock stands at the last claim's head (tag 1): a newcomer starts
    // there, ahead of the 48 flood jobs still queued.
    let late = created(&*store, "telegram:late", 4_000).await;
    assert_eq!(late.fair_tag, 1);
    assert_eq!(claim(&*store, &worker, 4_001).await.unwrap().id, late.id);
    assert_eq!(
        claim(&*store, &worker, 4_002).await.unwrap().id,
        flood[2].id
    );

    // Another plan's queue has its own clock: a FREE job starts at 0, and
    // a PRO job still runs first.
    let free = created(&*store, "telegram:free-user", 5_000).await;
    assert_eq!((free.priority, free.fair_tag), (Priority::FREE, 0));
    assert_eq!(
        claim(&*store, &worker, 5_001).await.unwrap().id,
        flood[3].id
    );
}

/// A job a lost worker gives back keeps its tag, so it does not lose its
/// place to jobs queued after it; one handed back unstarted keeps its tag
/// and its queued time.
async fn fair_tags_survive_a_requeue(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    for user in ["telegram:a", "telegram:b"] {
        on_plan(&*store, user, "pro").await;
    }
    let a: Vec<JobRecord> = [
        created(&*store, "telegram:a", 100).await,
        created(&*store, "telegram:a", 101).await,
        created(&*store, "telegram:a", 102).await,
    ]
    .into();
    let b = created(&*store, "telegram:b", 103).await;
    let worker = image_worker("worker-gpu-0");
    let first = claim(&*store, &worker, 200).await.unwrap();
    assert_eq!(first.id, a[0].id);

    // The worker is lost: back in the queue with its queued time renewed
    // (the wait bound counts from now) but its tag kept.
    let requeued = store
        .transition(&first.id, Transition::Requeue, &at(300))
        .await
        .unwrap();
    let requeued = match requeued {
        tessera_scheduler::store::TransitionOutcome::Applied(job) => job,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (requeued.fair_tag, requeued.queued_at),
        (a[0].fair_tag, Some(300))
    );
    // Tag 0 ties with B's job, queued earlier; both before A's later jobs,
    // though in arrival order it would now be last.
    let head = store.queue_head(Capability::Image, 10).await.unwrap();
    assert_eq!(
        head.iter().map(|j| &j.id).collect::<Vec<_>>(),
        vec![&b.id, &a[0].id, &a[1].id, &a[2].id]
    );
    assert_eq!(claim(&*store, &worker, 400).await.unwrap().id, b.id);

    // Handed back unstarted (the worker refused it): tag and queued time kept.
    let again = claim(&*store, &worker, 500).await.unwrap();
    assert_eq!(again.id, a[0].id);
    let change = TransitionChange {
        now: 600,
        release: true,
        ..Default::default()
    };
    store
        .transition(&again.id, Transition::Requeue, &change)
        .await
        .unwrap();
    let back = store.get_job(&again.id, None).await.unwrap().unwrap();
    assert_eq!((back.fair_tag, back.queued_at), (0, Some(300)));
    assert_eq!(claim(&*store, &worker, 700).await.unwrap().id, a[0].id);
}

/// Racing creates of one user take turns on the user's share row: their
/// tags are all different and leave no gap, whatever order they commit in;
/// another user's racing creates keep their own sequence.
async fn fair_tags_of_racing_creates_of_one_user_are_distinct_and_increasing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    for user in ["telegram:racer", "telegram:rival"] {
        on_plan(&*store, user, "pro").await;
    }
    // Each user's first job, so both share rows exist or are being made.
    let mut tasks = Vec::new();
    for i in 0..24 {
        let store = store.clone();
        let user = if i % 3 == 0 {
            "telegram:rival"
        } else {
            "telegram:racer"
        };
        tasks.push(tokio::spawn(async move {
            let job = created(&*store, user, 1_000 + i).await;
            (user, job.fair_tag)
        }));
    }
    let mut tags: HashMap<&str, Vec<i64>> = HashMap::new();
    for t in tasks {
        let (user, tag) = t.await.unwrap();
        tags.entry(user).or_default().push(tag);
    }
    for (user, mut tags) in tags {
        tags.sort_unstable();
        let n = tags.len() as i64;
        assert_eq!(tags, (0..n).collect::<Vec<_>>(), "{user}'s tags");
    }
}

/// The stores' tags equal the core's reference ([`FairQueue`]) through a
/// random run of creates of several users, plans and sizes (so costs differ)
/// and claims, in two capabilities.
async fn fair_tags_follow_the_core_reference(backend: Backend) {
    use rand::{Rng, SeedableRng};

    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let users = [
        ("telegram:u0", "pro"),
        ("telegram:u1", "pro"),
        ("telegram:u2", "pro"),
        ("telegram:u3", "starter"),
        ("telegram:u4", "starter"),
    ];
    for (user, plan) in users {
        on_plan(&*store, user, plan).await;
    }
    let worker = WorkerSlot {
        worker_id: "worker-gpu-0".parse().unwrap(),
        capabilities: vec![Capability::Image, Capability::Text],
        models: vec!["sdxl-1.0".into(), "llama-3.2-3b".into()],
        loaded_models: vec!["llama-3.2-3b".into()],
    };
    let mut reference: HashMap<(Capability, Priority), FairQueue<i64>> = HashMap::new();
    // Queued jobs: id -> (queue, tag).
    let mut queued: HashMap<JobId, ((Capability, Priority), i64)> = HashMap::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xfa12);
    let mut now = 1_000;
    for _ in 0..150 {
        now += 1;
        if rng.random_bool(0.6) {
            let (user, _) = users[rng.random_range(0..users.len())];
            let mut new = new_job(user, now);
            let params = if rng.random_bool(0.5) {
                let side = [1024, 1536][rng.random_range(0..2)];
                json!({"prompt": "x", "resolution": format!("{side}x{side}")})
            } else {
                new.capability = Capability::Text;
                let max_tokens = [256, 2048, 4096][rng.random_range(0..3)];
                json!({"prompt": "x", "max_tokens": max_tokens})
            };
            let job = match create(&*store, &new, params).await {
                CreateOutcome::Created(job) => job,
                other => panic!("{other:?}"),
            };
            let queue = (job.capability, job.priority);
            let expected = reference
                .entry(queue)
                .or_default()
                .enqueue(job.user_id, job.cost_tokens);
            assert_eq!(job.fair_tag, expected, "tag of {:?} in {queue:?}", job.id);
            queued.insert(job.id, (queue, job.fair_tag));
        } else if let Some(job) = claim(&*store, &worker, now).await {
            let (queue, _) = queued[&job.id];
            let head = queued
                .values()
                .filter(|(q, _)| *q == queue)
                .map(|(_, tag)| *tag)
                .min()
                .unwrap();
            reference.get_mut(&queue).unwrap().claimed(head);
            queued.remove(&job.id);
        }
    }
    assert!(
        reference.len() >= 3,
        "several queues were used: {:?}",
        reference.keys()
    );
}

/// On a backlog of 40,000 jobs (36,000 queued, four priorities, three models,
/// 1,000 users), every statement reading the queue is an exact,
/// index-ordered range of a queue index: the window's members and the
/// clock's probe read the index only, and nothing is sorted or scanned.
async fn fair_order_reads_stay_on_the_queue_indexes_on_a_large_backlog(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    // Users 1..=1000 and jobs: user n % 1000, its k-th job tagged k, so fair
    // order and age order differ within each range.
    let load = [
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 1000) \
         INSERT INTO users (user_ref, platform, platform_user_id, plan_id, created_at) \
         SELECT 'telegram:' || CAST(n AS TEXT), 'telegram', CAST(n AS TEXT), 'pro', 0 FROM g",
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 40000) \
         INSERT INTO jobs (id, user_id, user_ref, frontend, bot_id, capability, model, priority, \
             status, params, cost_tokens, billing_day, created_at, queued_at, fair_tag) \
         SELECT 'job_01000000000000000000' || CAST(100000 + n AS TEXT), 1 + n % 1000, \
             'telegram:' || CAST(1 + n % 1000 AS TEXT), 'telegram', 'tg-image-bot-1', \
             CASE n % 4 WHEN 3 THEN 'text' ELSE 'image' END, \
             CASE n % 4 WHEN 1 THEN 'flux-schnell' WHEN 3 THEN 'llama-3.2-3b' ELSE 'sdxl-1.0' END, \
             (n / 7) % 4, CASE WHEN n % 10 = 0 THEN 'COMPLETED' ELSE 'QUEUED' END, '{}', 1, \
             '2026-11-25', n, n, n / 1000 FROM g",
    ];
    match backend {
        Backend::Postgres => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            for sql in load {
                sqlx::query(sql).execute(&mut conn).await.unwrap();
            }
            sqlx::query("VACUUM ANALYZE jobs")
                .execute(&mut conn)
                .await
                .unwrap();
        }
        Backend::Sqlite => {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            for sql in load {
                sqlx::query(sql).execute(&mut conn).await.unwrap();
            }
            sqlx::query("ANALYZE").execute(&mut conn).await.unwrap();
        }
    }
    let queued = store.queue_head(Capability::Image, 40_000).await.unwrap();
    assert_eq!(queued.len(), 26_000);

    let plans: HashMap<&str, Vec<String>> = store
        .queue_plans(Capability::Image, "flux-schnell", 33)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let shown = |what: &str| format!("{what}:\n{}", plans[what].join("\n"));
    for what in ["window", "head", "before", "clock"] {
        eprintln!("{backend:?} {}", shown(what));
    }
    let count = |what: &str, needle: &str| {
        plans[what]
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    };
    for what in ["window", "head", "before", "clock"] {
        for bad in ["Sort", "Seq Scan", "Bitmap", "TEMP B-TREE", "SCAN jobs"] {
            assert_eq!(count(what, bad), 0, "{bad} in {}", shown(what));
        }
    }
    let (index_only, ordered) = match backend {
        Backend::Postgres => ("Index Only Scan using", "Index Scan using"),
        Backend::Sqlite => (
            "SEARCH jobs USING COVERING INDEX",
            "SEARCH jobs USING INDEX",
        ),
    };
    // Four priorities, each read in fair order and in age order.
    for index in ["jobs_queue_by_model_fair ", "jobs_queue_by_model_age "] {
        let needle = format!("{index_only} {index}");
        assert_eq!(count("window", &needle), 4, "{}", shown("window"));
    }
    assert_eq!(
        count("clock", &format!("{index_only} jobs_queue_fair ")),
        1,
        "{}",
        shown("clock")
    );
    assert_eq!(
        count("head", &format!("{ordered} jobs_queue_fair ")),
        1,
        "{}",
        shown("head")
    );
    assert_eq!(
        count("before", &format!("{index_only} jobs_queue_by_model_age ")),
        1,
        "{}",
        shown("before")
    );

    // And the window on that backlog is what the policy needs: per
    // priority, the first jobs in fair order (lowest tags) and in age order.
    let window = store
        .queue_window(&[(Capability::Image, "flux-schnell".into())], 2)
        .await
        .unwrap();
    for p in 0..4u8 {
        let mut range: Vec<_> = queued
            .iter()
            .filter(|j| j.model == "flux-schnell" && j.priority == Priority(p))
            .collect();
        let in_window =
            |j: &&tessera_core::policy::QueuedJob<JobId>| window.iter().any(|w| w.id == j.id);
        range.sort_by_key(|j| (j.fair_tag, j.queued_at));
        assert!(range[..2].iter().all(in_window), "fair head of {p}");
        range.sort_by_key(|j| j.queued_at);
        assert!(range[..2].iter().all(in_window), "age head of {p}");
    }
    assert!(window.len() <= 16);
}

backend_tests!(
    fair_share_a_flood_does_not_hold_back_another_user,
    fair_tags_survive_a_requeue,
    fair_tags_of_racing_creates_of_one_user_are_distinct_and_increasing,
    fair_tags_follow_the_core_reference,
    fair_order_reads_stay_on_the_queue_indexes_on_a_large_backlog,
);
