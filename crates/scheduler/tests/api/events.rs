//! Following a job: a worker's output pieces and progress reach the
//! followers (`GET /api/v1/jobs/{job_id}/events`, `Lifecycle::follow`) in
//! order and before the end; repeated pieces are ignored, gaps and stale
//! attempts refused; a job is followed only by the keys that may read it.

use reqwest::StatusCode;
use serde_json::json;

use tessera_api::internal::{OutputPiece, ProgressReport};
use tessera_api::public::CreateJobRequest;
use tessera_api::{Client, ErrorCode};
use tessera_core::policy::Policy;
use tessera_core::{Capability, JobId, JobState, Platform};
use tessera_scheduler::lifecycle::JobEvent;
use tessera_scheduler::store::WorkerSlot;
use tessera_testkit::sse::Events;
use tessera_testkit::{backend_tests, Backend, TestApp};

use crate::common::*;

const WORKER: &str = "worker-gpu-0";

/// Claims the next image job for `WORKER`, as the dispatcher would
/// (QUEUED → RUNNING, attempt 1), without sending it anywhere: the test
/// plays the worker.
async fn claim(app: &TestApp, job: &JobId) {
    let slot = WorkerSlot {
        worker_id: WORKER.parse().unwrap(),
        capabilities: vec![Capability::Image],
        models: vec!["sdxl-1.0".into()],
        loaded_models: vec![],
    };
    let now = chrono::Utc::now().timestamp_millis();
    let (claimed, _) = app
        .store()
        .claim_next(&slot, &Policy::default(), now)
        .await
        .unwrap()
        .expect("a job to claim");
    assert_eq!(&claimed.id, job);
}

fn piece(attempt: i32, offset: u64, text: &str) -> OutputPiece {
    OutputPiece {
        worker_id: WORKER.parse().unwrap(),
        attempt,
        offset,
        text: text.into(),
    }
}

async fn a_follower_gets_the_output_in_order_before_the_end(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let base = app.base_url();
    let key = app.key(Platform::Telegram, TG_BOT).await;
    let tg = app.client_with(&key);
    let internal = Client::new(&base, app.internal_token.clone()).unwrap();
    let job = tg
        .create_job(&tg_job("telegram:40", prompt("a story")), None)
        .await
        .unwrap()
        .job
        .job_id;
    // Followed from the queue on.
    let mut events = Events::open(&base, &key, &job).await;
    claim(&app, &job).await;

    let ack = internal
        .send_output(&job, &piece(1, 0, "Once"), None)
        .await
        .unwrap();
    assert_eq!(ack.received, 4);
    assert_eq!(events.next().await, Some(("started".into(), json!({}))));
    assert_eq!(
        events.next().await,
        Some(("output".into(), json!({"text": "Once"})))
    );
    // A retried piece is acknowledged and ignored; an overlapping one adds
    // only its new tail.
    let again = internal.send_output(&job, &piece(1, 0, "Once"), None).await;
    assert_eq!(again.unwrap().received, 4);
    let ack = internal
        .send_output(&job, &piece(1, 2, "ce upon"), None)
        .await
        .unwrap();
    assert_eq!(ack.received, 9);
    assert_eq!(
        events.next().await,
        Some(("output".into(), json!({"text": " upon"}))),
        "the repeated piece is not sent twice"
    );
    // A gap is refused; the text held is unchanged.
    let gap = internal
        .send_output(&job, &piece(1, 20, "a time"), None)
        .await
        .unwrap_err();
    assert!(gap.is(ErrorCode::OutputGap), "{gap}");
    assert_eq!(gap.status(), Some(StatusCode::CONFLICT));
    // Another attempt, another worker: stale, as for progress.
    for stale in [
        piece(2, 9, " a time"),
        OutputPiece {
            worker_id: "worker-gpu-7".parse().unwrap(),
            ..piece(1, 9, " a time")
        },
    ] {
        let e = internal.send_output(&job, &stale, None).await.unwrap_err();
        assert!(e.is(ErrorCode::StaleAttempt), "{e}");
        assert_eq!(e.status(), Some(StatusCode::CONFLICT));
    }
    // A piece that is no piece.
    let bad = send(
        raw(
            &app,
            reqwest::Method::POST,
            &format!("/api/internal/jobs/{job}/output"),
        )
        .bearer_auth(&app.internal_token)
        .json(&json!({"worker_id": WORKER, "attempt": 1, "offset": -1, "text": "x"})),
    )
    .await;
    bad.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_output_piece");
    internal
        .report_progress(
            &job,
            &ProgressReport {
                worker_id: WORKER.parse().unwrap(),
                attempt: 1,
                progress: 50.0,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        events.next().await,
        Some(("progress".into(), json!({"progress": 50.0})))
    );

    // A follower joining now gets the attempt's text so far at once.
    let mut late = Events::open(&base, &key, &job).await;
    assert_eq!(late.next().await, Some(("started".into(), json!({}))));
    assert_eq!(
        late.next().await,
        Some(("output".into(), json!({"text": "Once upon"})))
    );
    assert_eq!(
        late.next().await,
        Some(("progress".into(), json!({"progress": 50.0})))
    );
    // And through the scheduler's own interface.
    let lifecycle = app.handle.lifecycle();
    let mut follower = lifecycle.follow(&job);
    let ack = internal
        .send_output(&job, &piece(1, 9, " a time"), None)
        .await
        .unwrap();
    assert_eq!(ack.received, 16);
    assert_eq!(
        follower.recv().await.unwrap(),
        JobEvent::Output(" a time".into())
    );
    for e in [&mut events, &mut late] {
        assert_eq!(
            e.next().await,
            Some(("output".into(), json!({"text": " a time"})))
        );
    }
    assert_eq!(lifecycle.follows().len(), 1);

    // The end: every follower gets it, last, and the stream closes.
    tg.cancel_job(&job).await.unwrap();
    assert_eq!(
        follower.recv().await.unwrap(),
        JobEvent::Ended(JobState::Cancelled)
    );
    for e in [&mut events, &mut late] {
        let (name, view) = e.next().await.expect("the end");
        assert_eq!(name, "end");
        assert_eq!(view["status"], "CANCELLED", "{view}");
        assert_eq!(view["job_id"], job.to_string());
        assert_eq!(e.next().await, None, "the stream closes after the end");
    }
    assert!(
        lifecycle.follows().is_empty(),
        "no stream is kept after the end"
    );
    // Output after the end is stale.
    let e = internal
        .send_output(&job, &piece(1, 16, "."), None)
        .await
        .unwrap_err();
    assert!(e.is(ErrorCode::StaleAttempt), "{e}");
    assert!(lifecycle.follows().is_empty());
    assert_eq!(
        counter(
            &app,
            "tessera_stream_output_bytes_total",
            &[("capability", "image")]
        )
        .await,
        16
    );
    // Following an ended job: its end, at once.
    let mut after = Events::open(&base, &key, &job).await;
    assert_eq!(after.next().await.map(|e| e.0), Some("end".into()));
    assert_eq!(after.next().await, None);
    app.shutdown().await;
}

/// A key follows only the jobs it may read, as `GET /api/v1/jobs/{id}`.
async fn only_keys_that_see_a_job_follow_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let base = app.base_url();
    let web_key = app.key(Platform::Web, WEB).await;
    let demo_key = app.key(Platform::Web, DEMO).await;
    let dc_key = app.key(Platform::Discord, DC_BOT).await;
    let web = app.client_with(&web_key);
    let job = web
        .create_job(
            &CreateJobRequest {
                frontend: Platform::Web,
                bot_id: WEB.parse().unwrap(),
                user_ref: "web:me".parse().unwrap(),
                ..tg_job("telegram:1", prompt("a heron"))
            },
            None,
        )
        .await
        .unwrap()
        .job
        .job_id;
    for key in [&demo_key, &dc_key] {
        let resp = Events::request(&base, key, &job).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "job_not_found", "{body}");
    }
    assert!(
        app.handle.lifecycle().follows().is_empty(),
        "a refused follower leaves no stream"
    );
    // The website's own key follows it: queued, no event until it ends.
    let mut events = Events::open(&base, &web_key, &job).await;
    web.cancel_job(&job).await.unwrap();
    assert_eq!(events.next().await.map(|e| e.0), Some("end".into()));
    app.shutdown().await;
}

backend_tests!(
    a_follower_gets_the_output_in_order_before_the_end,
    only_keys_that_see_a_job_follow_it,
);
