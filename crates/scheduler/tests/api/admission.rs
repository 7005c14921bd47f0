//! Admission control: a plan's queue past its wait bound refuses new jobs
//! of that plan (`queue_full`), a user at their plan's cap is refused
//! (`too_many_queued`), both with a Retry-After and nothing charged; higher
//! plans are still admitted; nothing is refused without a ready worker or a
//! measured run time.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use tessera_api::public::JobList;
use tessera_api::public::ListJobsQuery;
use tessera_api::Client;
use tessera_core::{Capability, JobState, Platform};
use tessera_testkit::{backend_tests, sim, Backend, TestApp};

use crate::common::*;

/// The free plan's bound in these tests, ms.
const FREE_BOUND_MS: i64 = 7_000;
/// The sim worker's run time, ms.
const RUN_MS: u64 = 3_000;

/// `tessera_admission_refusals_total{plan, reason}` as scraped.
async fn refusals_counted(app: &TestApp, plan: &str, reason: &str) -> u64 {
    let labels = [("plan", plan), ("reason", reason)];
    counter(app, "tessera_admission_refusals_total", &labels).await
}

async fn queued(tg: &Client) -> usize {
    let list: JobList = tg
        .list_jobs(&ListJobsQuery {
            status: Some("QUEUED".into()),
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    list.jobs.len()
}

async fn a_full_queue_refuses_its_plan_with_the_wait_and_a_retry_time(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.admission.max_wait_ms.insert("free".into(), FREE_BOUND_MS);
    })
    .await;
    let http = reqwest::Client::new();
    let key = app.key(Platform::Telegram, TG_BOT).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    app.admin
        .set_plan("telegram:900", &"pro".parse().unwrap())
        .await
        .unwrap();
    let _worker = app
        .worker(
            "worker-gpu-0",
            vec![sim(Capability::Image, &["sdxl-1.0"], RUN_MS)],
        )
        .await;

    // One job completes: the run time is measured.
    let first = tg
        .create_job(&tg_job("telegram:1", prompt("first")), None)
        .await
        .unwrap()
        .job;
    let deadline = Instant::now() + Duration::from_secs(30);
    while tg.get_job(&first.job_id).await.unwrap().status != JobState::Completed {
        assert!(Instant::now() < deadline, "the first job never completed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The estimator reads run times afresh every 5 s.
    tokio::time::sleep(Duration::from_millis(5200)).await;

    // Free jobs fill the queue until the next one would wait past the bound.
    let mut created = 0;
    let refused = loop {
        let user = format!("telegram:{}", 10 + created);
        let answer = send(raw_create(
            &http,
            &app,
            &key,
            &tg_job(&user, prompt("more")),
            None,
        ))
        .await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            break answer;
        }
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        created += 1;
        assert!(created < 10, "the queue never filled: {}", answer.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let queued_now = queued(&tg).await;
    let error = refused.error(StatusCode::TOO_MANY_REQUESTS, "queue_full");
    let wait = error.expected_wait_seconds.expect("the expected wait");
    let retry = error.retry_after_seconds.expect("the retry time");
    let bound = (FREE_BOUND_MS / 1000) as u64;
    // Past the bound, by the measured run time (a little over the sim's) on
    // one worker: at least three jobs ahead (two would wait about 6 s).
    assert!(wait > bound, "{}", refused.body);
    assert!(wait >= 3 * RUN_MS / 1000, "{}", refused.body);
    assert!(
        wait <= (queued_now as u64 + 1) * (RUN_MS / 1000 + 1),
        "{} with {queued_now} queued",
        refused.body
    );
    // Retry once the excess has drained.
    assert!(retry >= 1 && retry <= wait - bound + 1, "{}", refused.body);
    assert_eq!(
        refused.header("retry-after"),
        Some(retry.to_string().as_str())
    );
    assert!(error.message.contains("retry in"), "{}", error.message);

    // Nothing charged, no job: the refused user exists with nothing spent.
    let user = format!("telegram:{}", 10 + created);
    let quota = tg.get_user(&user).await.unwrap();
    assert_eq!(quota.tokens_used_today, 0);
    let mine = tg
        .list_jobs(&ListJobsQuery {
            user_ref: Some(user.parse().unwrap()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(mine.jobs.is_empty());
    assert_eq!(refusals_counted(&app, "free", "queue_full").await, 1);

    // A pro job has no free job ahead of it: admitted at the same moment.
    let pro = send(raw_create(
        &http,
        &app,
        &key,
        &tg_job("telegram:900", prompt("pro")),
        None,
    ))
    .await;
    assert_eq!(pro.status, StatusCode::CREATED, "{}", pro.body);
    // And the free queue still refuses.
    let again = send(raw_create(
        &http,
        &app,
        &key,
        &tg_job(&user, prompt("again")),
        None,
    ))
    .await;
    again.error(StatusCode::TOO_MANY_REQUESTS, "queue_full");
    app.shutdown().await;
}

async fn a_user_at_their_plan_cap_is_refused_until_a_job_leaves_the_queue(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.admission.max_queued_per_user.insert("free".into(), 2);
        c.admission.max_queued_per_user.insert("pro".into(), 0);
    })
    .await;
    let http = reqwest::Client::new();
    let key = app.key(Platform::Telegram, TG_BOT).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;

    // No worker: the jobs stay queued.
    let a = tg
        .create_job(&tg_job("telegram:7", prompt("a")), Some("a"))
        .await
        .unwrap()
        .job;
    tg.create_job(&tg_job("telegram:7", prompt("b")), None)
        .await
        .unwrap();
    let third = send(raw_create(
        &http,
        &app,
        &key,
        &tg_job("telegram:7", prompt("c")),
        None,
    ))
    .await;
    let error = third.error(StatusCode::TOO_MANY_REQUESTS, "too_many_queued");
    // Until one of them has run: one job's run time (the assumed 30 s of an
    // image, none measured yet).
    assert_eq!(error.retry_after_seconds, Some(30));
    assert_eq!(error.expected_wait_seconds, None);
    assert_eq!(third.header("retry-after"), Some("30"));
    assert_eq!(
        tg.get_user("telegram:7").await.unwrap().tokens_used_today,
        2
    );
    assert_eq!(refusals_counted(&app, "free", "too_many_queued").await, 1);

    // A retry of an accepted create is answered with its job, cap or not.
    let replay = send(raw_create(
        &http,
        &app,
        &key,
        &tg_job("telegram:7", prompt("a")),
        Some("a"),
    ))
    .await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.body);
    assert_eq!(replay.body["job_id"], a.job_id.as_str());

    // Another user is not held to this one's count; a plan whose cap is 0
    // has none.
    tg.create_job(&tg_job("telegram:8", prompt("x")), None)
        .await
        .unwrap();
    app.admin
        .set_plan("telegram:9", &"pro".parse().unwrap())
        .await
        .unwrap();
    for i in 0..4 {
        tg.create_job(&tg_job("telegram:9", prompt(&format!("p{i}"))), None)
            .await
            .unwrap();
    }

    // One job leaves the queue: the user is admitted again.
    tg.cancel_job(&a.job_id).await.unwrap();
    let admitted = send(raw_create(
        &http,
        &app,
        &key,
        &tg_job("telegram:7", prompt("c")),
        None,
    ))
    .await;
    assert_eq!(admitted.status, StatusCode::CREATED, "{}", admitted.body);
    app.shutdown().await;
}

/// A cap is the person's: a chat user linked to a website account shares
/// the account's count, and the account the chat user's.
async fn a_cap_counts_the_persons_jobs_on_every_linked_platform(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.admission.max_queued_per_user.insert("free".into(), 2);
    })
    .await;
    let web = app.frontend(Platform::Web, WEB).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let ada = web
        .create_account(&tessera_api::public::Credentials {
            email: "ada@example.org".into(),
            password: "correct horse battery".into(),
        })
        .await
        .unwrap();
    let code = tg
        .create_link_code(&"telegram:42".parse().unwrap())
        .await
        .unwrap();
    web.redeem_link_code(&ada.user_ref, &code.code)
        .await
        .unwrap();
    // No worker: every job stays queued. One on the website, one in the chat.
    web.create_job(
        &image_job(Platform::Web, WEB, &ada.user_ref.to_string(), prompt("w")),
        None,
    )
    .await
    .unwrap();
    tg.create_job(&tg_job("telegram:42", prompt("t")), None)
        .await
        .unwrap();
    for refused in [
        tg.create_job(&tg_job("telegram:42", prompt("t2")), None)
            .await
            .unwrap_err(),
        web.create_job(
            &image_job(Platform::Web, WEB, &ada.user_ref.to_string(), prompt("w2")),
            None,
        )
        .await
        .unwrap_err(),
    ] {
        assert_eq!(refused.code(), Some("too_many_queued"), "{refused:?}");
    }
    // Someone else on the same bot is not held to it.
    tg.create_job(&tg_job("telegram:43", prompt("x")), None)
        .await
        .unwrap();
    app.shutdown().await;
}

async fn nothing_is_refused_without_a_ready_worker_or_a_measured_run_time(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.admission.max_wait_ms.insert("free".into(), 1);
    })
    .await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    // No worker serves the model: the unservable bound has these jobs.
    for i in 0..4 {
        tg.create_job(&tg_job(&format!("telegram:{i}"), prompt("x")), None)
            .await
            .unwrap();
    }
    // A worker that serves it (busy, so the jobs stay queued), and no job
    // has completed: the run time is only assumed.
    busy_image_worker(&app).await;
    for i in 4..8 {
        tg.create_job(&tg_job(&format!("telegram:{i}"), prompt("x")), None)
            .await
            .unwrap();
    }
    assert_eq!(queued(&tg).await, 8);
    app.shutdown().await;
}

backend_tests!(
    a_cap_counts_the_persons_jobs_on_every_linked_platform,
    a_full_queue_refuses_its_plan_with_the_wait_and_a_retry_time,
    a_user_at_their_plan_cap_is_refused_until_a_job_leaves_the_queue,
    nothing_is_refused_without_a_ready_worker_or_a_measured_run_time,
);
