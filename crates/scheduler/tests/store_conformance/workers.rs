//! Workers: what their heartbeats leave in the database.

use tessera_core::{Capability, JobId};
use tessera_testkit::{backend_tests, Backend, TestDb};

async fn heartbeats_keep_the_latest_description_and_first_sight(backend: Backend) {
    use tessera_api::internal::{EngineReadiness, Heartbeat, WorkerStatus};
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let mut hb = Heartbeat {
        worker_id: "worker-gpu-0".parse().unwrap(),
        status: WorkerStatus::Idle,
        address: "http://127.0.0.1:9000".into(),
        capabilities: vec![Capability::Image, Capability::Video],
        models: vec!["sdxl-1.0".into(), "wan-2.1".into()],
        loaded_models: vec![],
        model_memory: Vec::new(),
        current_job: None,
        gpu_name: Some("NVIDIA GeForce RTX 5060 Ti".into()),
        gpu_memory_used: Some(8000),
        gpu_memory_total: Some(16311),
        gpu_utilization: Some(12.5),
        engines: vec![EngineReadiness {
            engine: "comfyui".into(),
            capability: Capability::Image,
            models: vec!["sdxl-1.0".into()],
            ready: false,
            since: "2026-05-01T10:00:00Z".parse().unwrap(),
            error: Some("ComfyUI at http://127.0.0.1:8188 cannot be reached".into()),
        }],
    };
    let first = store.record_heartbeat(&hb, 1_000).await.unwrap();
    assert_eq!((first.first_seen_at, first.last_seen_at), (1_000, 1_000));
    assert_eq!(first.heartbeat, hb);
    hb.status = WorkerStatus::Busy;
    hb.loaded_models = vec!["sdxl-1.0".into()];
    hb.current_job = Some(JobId::generate());
    hb.gpu_name = None;
    hb.gpu_memory_used = None;
    hb.engines[0].ready = true;
    hb.engines[0].error = None;
    let second = store.record_heartbeat(&hb, 31_000).await.unwrap();
    assert_eq!((second.first_seen_at, second.last_seen_at), (1_000, 31_000));
    assert_eq!(second.heartbeat, hb);
    let mut other = hb.clone();
    other.worker_id = "worker-gpu-1".parse().unwrap();
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

backend_tests!(heartbeats_keep_the_latest_description_and_first_sight,);
