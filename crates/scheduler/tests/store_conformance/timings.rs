//! Learned timings: each worker's runs of each model, warm and cold apart, as
//! a plain mean over the first five runs and a moving one after.

use tessera_core::{Capability, WorkerId};
use tessera_scheduler::store::TimingRecord;
use tessera_testkit::{backend_tests, Backend, TestDb};

async fn runs_are_learned_per_worker_and_model_warm_and_cold_apart(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let gpu0: WorkerId = "worker-gpu-0".parse().unwrap();
    let gpu1: WorkerId = "worker-gpu-1".parse().unwrap();
    assert!(store.timings().await.unwrap().is_empty());
    let image = Capability::Image;
    // Warm runs of 10, 20, 30 s: a plain mean.
    for (i, ms) in [10_000, 20_000, 30_000].into_iter().enumerate() {
        store
            .learn_timing(&gpu0, image, "sdxl-1.0", ms, false, i as i64)
            .await
            .unwrap();
    }
    store
        .learn_timing(&gpu0, image, "sdxl-1.0", 70_000, true, 5)
        .await
        .unwrap();
    store
        .learn_timing(&gpu1, image, "sdxl-1.0", 9_000, false, 6)
        .await
        .unwrap();
    store
        .learn_timing(&gpu0, Capability::Video, "sdxl-1.0", 1_000, false, 7)
        .await
        .unwrap();
    let got = store.timings().await.unwrap();
    assert_eq!(
        got,
        vec![
            TimingRecord {
                worker_id: gpu0.clone(),
                capability: image,
                model: "sdxl-1.0".into(),
                warm_ms: Some(20_000.0),
                warm_runs: 3,
                cold_ms: Some(70_000.0),
                cold_runs: 1,
                updated_at: 5,
            },
            TimingRecord {
                worker_id: gpu0.clone(),
                capability: Capability::Video,
                model: "sdxl-1.0".into(),
                warm_ms: Some(1_000.0),
                warm_runs: 1,
                cold_ms: None,
                cold_runs: 0,
                updated_at: 7,
            },
            TimingRecord {
                worker_id: gpu1,
                capability: image,
                model: "sdxl-1.0".into(),
                warm_ms: Some(9_000.0),
                warm_runs: 1,
                cold_ms: None,
                cold_runs: 0,
                updated_at: 6,
            },
        ]
    );
    // Two more of 20 s keep the mean (five runs); past five, each run moves
    // it a fifth of the way: 20 + (70 - 20) / 5 = 30 s.
    for ms in [20_000, 20_000, 70_000] {
        store
            .learn_timing(&gpu0, image, "sdxl-1.0", ms, false, 9)
            .await
            .unwrap();
    }
    let got = store.timings().await.unwrap();
    let sdxl = &got[0];
    assert_eq!(sdxl.warm_runs, 6);
    assert!(
        (sdxl.warm_ms.unwrap() - 30_000.0).abs() < 1e-6,
        "{:?}",
        sdxl.warm_ms
    );
    assert_eq!(sdxl.cold_ms, Some(70_000.0), "cold runs apart");
}

backend_tests!(runs_are_learned_per_worker_and_model_warm_and_cold_apart);
