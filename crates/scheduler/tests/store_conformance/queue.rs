//! The queue: its head, run times, windows, and claims racing or batched.

use serde_json::json;

use tessera_core::{Capability, JobId, JobState, Transition, UserRef};
use tessera_scheduler::store::{CreateOutcome, JobFilter, TransitionChange};
use tessera_testkit::{backend_tests, Backend, TestDb};

use crate::common::*;

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
            worker_id: Some("w".parse().unwrap()),
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
            fair_tag: j.fair_tag,
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
            worker_id: "w".parse().unwrap(),
            capabilities: caps.clone(),
            models: models.clone(),
            loaded_models: loaded.clone(),
        };
        let view = WorkerView {
            capabilities: &caps,
            models: &models,
            loaded_models: &loaded,
            load_ms: &[],
            warm_elsewhere: &[],
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
        // Other workers hold some models warm: the window still holds the
        // best job whose model is loaded nowhere.
        let elsewhere = subset(&mut rng, &all_models);
        let view = WorkerView {
            warm_elsewhere: &elsewhere,
            ..view
        };
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
                worker_id: format!("worker-gpu-{w}").parse().unwrap(),
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
        worker_id: "late".parse().unwrap(),
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
        worker_id: "worker-gpu-0".parse().unwrap(),
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
                (ids[0].clone(), "w-a".parse().unwrap()),
                (ids[1].clone(), "w-b".parse().unwrap()),
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
                (ids[0].clone(), "w-c".parse().unwrap()),
                (ids[2].clone(), "w-c".parse().unwrap()),
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

backend_tests!(
    batch_claims_pass_over_chosen_jobs_and_taken_ones,
    the_queue_head_is_in_policy_order,
    run_times_come_from_completed_jobs,
    queue_windows_find_what_a_full_scan_finds,
    racing_claims_dispatch_each_job_once,
);
