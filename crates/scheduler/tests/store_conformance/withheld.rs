//! Outputs withheld for review: a failing transition that records the
//! artifacts (marked withheld, with their classification) and keeps or
//! refunds the tokens as asked; a completion that stores the classification.

use tessera_api::internal::ArtifactKind;
use tessera_core::{ArtifactId, JobState, Transition, UserRef};
use tessera_scheduler::store::{NewArtifact, Store, TransitionChange, TransitionOutcome};
use tessera_testkit::{backend_tests, Backend, TestDb};

use crate::common::*;

fn artifact(job: &tessera_core::JobId, classification: &str, withheld: bool) -> NewArtifact {
    NewArtifact {
        id: ArtifactId::generate(),
        kind: ArtifactKind::Image,
        storage_key: format!("artifacts/{job}/1/0.png"),
        format: "png".into(),
        width: Some(64),
        height: Some(64),
        file_size: 100,
        position: 0,
        classification: Some(classification.into()),
        withheld,
        usage: None,
    }
}

async fn running(store: &dyn Store, user: &str) -> tessera_scheduler::store::JobRecord {
    let job = created(store, user, 10).await;
    let dispatch = TransitionChange {
        now: 20,
        worker_id: Some("worker-gpu-0".parse().unwrap()),
        ..Default::default()
    };
    match store
        .transition(&job.id, Transition::Dispatch, &dispatch)
        .await
        .unwrap()
    {
        TransitionOutcome::Applied(job) => job,
        other => panic!("{other:?}"),
    }
}

const FOUND: &str = r#"{"model":"nudenet-320n","frames":1,"detections":[{"label":"BUTTOCKS_EXPOSED","score":0.37}]}"#;

async fn withheld_outputs_are_kept_and_tokens_kept_or_refunded(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;

    // Kept tokens: the job fails, its artifact recorded and marked withheld.
    let job = running(&*store, "telegram:7").await;
    let kept = artifact(&job.id, FOUND, true);
    let change = TransitionChange {
        now: 30,
        artifacts: vec![kept.clone()],
        error: Some(("content_withheld".into(), "Your image was withheld.".into())),
        keep_tokens: true,
        ..Default::default()
    };
    let TransitionOutcome::Applied(failed) = store
        .transition(&job.id, Transition::Fail, &change)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(failed.status, JobState::Failed);
    assert_eq!(failed.error_code.as_deref(), Some("content_withheld"));
    assert!(!failed.refunded);
    let user: UserRef = "telegram:7".parse().unwrap();
    assert_eq!(store.tokens_used(&user, day()).await.unwrap(), 1);
    let stored = store.get_artifact(&kept.id).await.unwrap().unwrap();
    assert!(stored.withheld);
    assert_eq!(stored.classification.as_deref(), Some(FOUND));
    assert_eq!(
        store
            .artifacts_of(std::slice::from_ref(&job.id))
            .await
            .unwrap()
            .len(),
        1
    );

    // Refunded: the same, with the tokens given back.
    let job = running(&*store, "telegram:8").await;
    let change = TransitionChange {
        now: 30,
        artifacts: vec![artifact(&job.id, FOUND, true)],
        error: Some(("content_withheld".into(), "Your image was withheld.".into())),
        ..Default::default()
    };
    let TransitionOutcome::Applied(failed) = store
        .transition(&job.id, Transition::Fail, &change)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(failed.refunded);
    let user: UserRef = "telegram:8".parse().unwrap();
    assert_eq!(store.tokens_used(&user, day()).await.unwrap(), 0);

    // Delivered: the classification stored, not withheld.
    let job = running(&*store, "telegram:9").await;
    let delivered = artifact(&job.id, FOUND, false);
    let change = TransitionChange {
        now: 30,
        artifacts: vec![delivered.clone()],
        ..Default::default()
    };
    store
        .transition(&job.id, Transition::Complete, &change)
        .await
        .unwrap();
    let stored = store.get_artifact(&delivered.id).await.unwrap().unwrap();
    assert!(!stored.withheld);
    assert_eq!(stored.classification.as_deref(), Some(FOUND));
}

backend_tests!(withheld_outputs_are_kept_and_tokens_kept_or_refunded);
