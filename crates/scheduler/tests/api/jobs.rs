//! Jobs: the round trip, idempotent creates, listing and delivery.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::json;

use tessera_api::public::{CreateJobResponse, ListJobsQuery};
use tessera_core::{Capability, JobId, JobState, Platform};
use tessera_testkit::{backend_tests, Backend, TestApp};

use crate::common::*;

// ---- the round trip ----

async fn create_get_cancel_round_trip(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let http = reqwest::Client::new();
    let key = app.key(Platform::Telegram, TG_BOT).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let mut req = tg_job("telegram:42", prompt("a beautiful sunset"));
    req.reply_context = Some(json!({"chat_id": 42, "message_id": 7}));

    let created = send(raw_create(&http, &app, &key, &req, None)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.header(tessera_api::IDEMPOTENT_REPLAYED), None);
    assert!(
        created.header(tessera_api::REQUEST_ID).is_some(),
        "every answer carries a request id"
    );
    let created: CreateJobResponse = serde_json::from_value(created.body).expect("a create answer");
    assert_eq!(created.status, JobState::Queued);
    assert_eq!(created.cost_tokens, 1);
    assert!(created.estimated_time_seconds > 0);
    assert!(created.job_id.as_str().starts_with("job_"));

    // Another key of the same bot reads it. No worker serves its model yet, so
    // instead of a queue position the job says why it waits.
    let job = tg.get_job(&created.job_id).await.unwrap();
    assert_eq!(job.job_id, created.job_id);
    assert_eq!(job.status, JobState::Queued);
    assert_eq!(job.queue_position, None);
    assert_eq!(
        job.notice.as_ref().map(|n| n.code.as_str()),
        Some("no_worker")
    );

    // A busy worker that serves the model: the job has a place in its queue.
    busy_image_worker(&app).await;
    let job = tg.get_job(&created.job_id).await.unwrap();
    assert_eq!(job.notice, None);
    assert_eq!(job.queue_position, Some(0));
    assert!(job.estimated_time_seconds.is_some_and(|s| s > 0));
    assert_eq!(
        (job.frontend, job.bot_id.as_str()),
        (Platform::Telegram, TG_BOT)
    );
    assert_eq!(job.capability, Capability::Image);
    assert_eq!(job.model, "sdxl-1.0");
    assert_eq!(job.user_ref, "telegram:42");
    assert_eq!(
        job.params,
        json!({"prompt": "a beautiful sunset", "width": 1024, "height": 1024, "steps": 30})
    );
    assert_eq!(job.params["width"], 1024);
    assert_eq!(
        job.reply_context,
        Some(json!({"chat_id": 42, "message_id": 7}))
    );
    // Another bot of the same platform sees the job but not where its bot
    // answers (for Discord that holds an interaction token).
    let other = app.frontend(Platform::Telegram, "tg-video-bot-1").await;
    let seen = other.get_job(&created.job_id).await.unwrap();
    assert_eq!(seen.job_id, created.job_id);
    assert_eq!(seen.reply_context, None);
    let listed = other
        .list_jobs(&ListJobsQuery {
            user_ref: Some("telegram:42".parse().unwrap()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(listed.jobs.iter().all(|j| j.reply_context.is_none()));
    assert_eq!((job.cost_tokens, job.refunded, job.attempts), (1, false, 0));
    assert_eq!(job.error, None);
    assert!(job.queued_at.is_some() && job.started_at.is_none() && job.ended_at.is_none());

    let quota = tg.get_user("telegram:42").await.unwrap();
    assert_eq!(quota.plan.id, "free");
    assert_eq!(
        (quota.tokens_used_today, quota.tokens_left_today),
        (1, Some(19))
    );

    let cancelled = tg.cancel_job(&created.job_id).await.unwrap();
    assert_eq!(cancelled.status, JobState::Cancelled);
    assert!(cancelled.refunded);
    assert_eq!(
        cancelled.error.as_ref().map(|e| e.code.as_str()),
        Some("cancelled_by_user")
    );
    assert!(cancelled.ended_at.is_some());
    assert_eq!(
        (cancelled.queue_position, cancelled.estimated_time_seconds),
        (None, None)
    );

    let again = tg.cancel_job(&created.job_id).await;
    api_error(again, StatusCode::CONFLICT, "job_finished");

    let job = tg.get_job(&created.job_id).await.unwrap();
    assert_eq!(job.status, JobState::Cancelled);
    assert_eq!(
        job.error.map(|e| e.code),
        Some("cancelled_by_user".to_owned())
    );

    let quota = tg.get_user("telegram:42").await.unwrap();
    assert_eq!(
        (quota.tokens_used_today, quota.tokens_left_today),
        (0, Some(20))
    );

    // Ids that are not jobs, or not this frontend's, are simply not found.
    api_error(
        tg.get_job(&JobId::generate()).await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    );
    api_error(
        tg.cancel_job(&JobId::generate()).await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    );
    let bad_id = send(raw(&app, Method::GET, "/api/v1/jobs/not-a-job").bearer_auth(&key)).await;
    bad_id.error(StatusCode::NOT_FOUND, "job_not_found");
    app.shutdown().await;
}

// ---- idempotency ----

async fn idempotent_retries_replay_the_first_job(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let http = reqwest::Client::new();
    let key = app.key(Platform::Telegram, TG_BOT).await;
    let tg = app.client_with(&key);
    let req = tg_job("telegram:5", prompt("a lighthouse"));

    let first = send(raw_create(&http, &app, &key, &req, Some("retry-1"))).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.header(tessera_api::IDEMPOTENT_REPLAYED), None);
    let second = send(raw_create(&http, &app, &key, &req, Some("retry-1"))).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(
        second.header(tessera_api::IDEMPOTENT_REPLAYED),
        Some("true")
    );
    assert_eq!(first.body["job_id"], second.body["job_id"]);
    assert_eq!(second.body["cost_tokens"], 1);
    let job_id: JobId = serde_json::from_value(first.body["job_id"].clone()).unwrap();

    // The typed client reports the replay too.
    let third = tg.create_job(&req, Some("retry-1")).await.unwrap();
    assert!(third.replayed);
    assert_eq!(third.job.job_id, job_id);
    assert_eq!(
        tg.get_user("telegram:5").await.unwrap().tokens_used_today,
        1
    );

    // The same key for a different request is refused, and charges nothing.
    let different = tg_job("telegram:5", prompt("a different lighthouse"));
    api_error(
        tg.create_job(&different, Some("retry-1")).await,
        StatusCode::CONFLICT,
        "idempotency_key_reused",
    );
    // A fresh key is a fresh job.
    let fresh = tg.create_job(&different, Some("retry-2")).await.unwrap();
    assert!(!fresh.replayed);
    assert_ne!(fresh.job.job_id, job_id);
    assert_eq!(
        tg.get_user("telegram:5").await.unwrap().tokens_used_today,
        2
    );

    // A replay returns the job as created, even after it was cancelled.
    tg.cancel_job(&job_id).await.unwrap();
    let late = tg.create_job(&req, Some("retry-1")).await.unwrap();
    assert!(late.replayed);
    assert_eq!(late.job.job_id, job_id);
    assert_eq!(
        tg.get_user("telegram:5").await.unwrap().tokens_used_today,
        1
    );

    // The same request spelled differently (keys in another order, other spacing)
    // is still the same request.
    let spelled = |text: &str| {
        http.post(format!("{}/api/v1/jobs", app.base_url()))
            .bearer_auth(&key)
            .header(CONTENT_TYPE, "application/json")
            .header(tessera_api::IDEMPOTENCY_KEY, "spelling")
            .body(text.to_owned())
    };
    let a = send(spelled(
        r#"{"frontend":"telegram","bot_id":"tg-image-bot-1","capability":"image","user_ref":"telegram:5","params":{"prompt":"a tower","resolution":"512x512"}}"#,
    ))
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let b = send(spelled(
        r#"{ "params": { "resolution": "512x512", "prompt": "a tower" },
             "user_ref": "telegram:5", "capability": "image",
             "bot_id": "tg-image-bot-1", "frontend": "telegram", "reply_context": null }"#,
    ))
    .await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.body);
    assert_eq!(b.header(tessera_api::IDEMPOTENT_REPLAYED), Some("true"));
    assert_eq!(a.body["job_id"], b.body["job_id"]);
    assert_eq!(
        tg.get_user("telegram:5").await.unwrap().tokens_used_today,
        2
    );

    // Keys of up to 128 printable characters are accepted; longer ones are not.
    let longest = "k".repeat(128);
    tg.create_job(&tg_job("telegram:5", prompt("long key")), Some(&longest))
        .await
        .expect("a 128-character key is fine");
    api_error(
        tg.create_job(
            &tg_job("telegram:5", prompt("longer key")),
            Some(&"k".repeat(129)),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_idempotency_key",
    );
    assert_eq!(
        tg.get_user("telegram:5").await.unwrap().tokens_used_today,
        3
    );

    // Keys are per bot: another bot's identical key is its own request.
    let tg2 = app.frontend(Platform::Telegram, TG_BOT_2).await;
    let other = image_job(
        Platform::Telegram,
        TG_BOT_2,
        "telegram:6",
        prompt("a lighthouse"),
    );
    let other = tg2.create_job(&other, Some("retry-1")).await.unwrap();
    assert!(!other.replayed);
    assert_ne!(other.job.job_id, job_id);
    app.shutdown().await;
}

async fn concurrent_retries_with_one_key_create_one_job(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let req = tg_job("telegram:burst", prompt("one job only"));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let tg = tg.clone();
            let req = req.clone();
            tokio::spawn(async move { tg.create_job(&req, Some("burst-key")).await })
        })
        .collect();
    let mut job_ids = HashSet::new();
    let mut fresh = 0;
    for t in futures::future::join_all(tasks).await {
        let created = t.expect("task").expect("every retry succeeds");
        job_ids.insert(created.job.job_id);
        if !created.replayed {
            fresh += 1;
        }
    }
    assert_eq!(job_ids.len(), 1, "one key, one job: {job_ids:?}");
    assert_eq!(fresh, 1, "exactly one answer is the original create");
    assert_eq!(
        tg.get_user("telegram:burst")
            .await
            .unwrap()
            .tokens_used_today,
        1
    );
    let jobs = list_all(&app.admin, by_user("telegram:burst"), true).await;
    assert_eq!(ids(&jobs), job_ids.into_iter().collect::<Vec<_>>());
    app.shutdown().await;
}

/// The last token of the day: a retry racing its first attempt must answer with
/// that attempt's job, not with "quota exhausted" (the first attempt spent it).
async fn racing_retries_on_the_last_token_all_get_the_job(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    for i in 0..19 {
        let req = tg_job("telegram:last", prompt(&format!("warm-up {i}")));
        tg.create_job(&req, None).await.expect("within quota");
    }
    let req = tg_job("telegram:last", prompt("the twentieth"));
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (tg, req) = (tg.clone(), req.clone());
            tokio::spawn(async move { tg.create_job(&req, Some("last-token")).await })
        })
        .collect();
    let mut job_ids = HashSet::new();
    for t in futures::future::join_all(tasks).await {
        let created = t
            .expect("task")
            .unwrap_or_else(|e| panic!("a retry of a created job was refused: {e}"));
        job_ids.insert(created.job.job_id);
    }
    assert_eq!(job_ids.len(), 1, "one key, one job: {job_ids:?}");
    let quota = tg.get_user("telegram:last").await.unwrap();
    assert_eq!(
        (quota.tokens_used_today, quota.tokens_left_today),
        (20, Some(0))
    );
    // A different request after that is refused as it should be.
    let more = tg_job("telegram:last", prompt("one more"));
    let refused = tg.create_job(&more, Some("another-key")).await.unwrap_err();
    assert_eq!(refused.code(), Some("quota_exhausted"));
    app.shutdown().await;
}

// ---- listing ----

async fn listing_filters_pages_and_scopes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg1 = app.frontend(Platform::Telegram, TG_BOT).await;
    let tg2 = app.frontend(Platform::Telegram, TG_BOT_2).await;
    let dc = app.frontend(Platform::Discord, DC_BOT).await;

    // Created one after another, a few milliseconds apart, so that "newest first"
    // has one meaning.
    let mut telegram = Vec::new();
    let mut discord = Vec::new();
    for (client, req) in [
        (&tg1, tg_job("telegram:a", prompt("1"))),
        (
            &tg2,
            image_job(Platform::Telegram, TG_BOT_2, "telegram:b", prompt("2")),
        ),
        (
            &dc,
            image_job(Platform::Discord, DC_BOT, "discord:c", prompt("3")),
        ),
        (&tg1, tg_job("telegram:a", prompt("4"))),
        (
            &tg2,
            image_job(Platform::Telegram, TG_BOT_2, "telegram:b", prompt("5")),
        ),
        (&tg1, tg_job("telegram:a", prompt("6"))),
        (
            &dc,
            image_job(Platform::Discord, DC_BOT, "discord:c", prompt("7")),
        ),
    ] {
        let id = client.create_job(&req, None).await.unwrap().job.job_id;
        if req.frontend == Platform::Telegram {
            telegram.push(id);
        } else {
            discord.push(id);
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    tg1.cancel_job(&telegram[0]).await.unwrap();
    let newest_first = |v: &[JobId]| v.iter().rev().cloned().collect::<Vec<_>>();

    // A telegram key sees both telegram bots' jobs, newest first.
    let all = tg1.list_jobs(&ListJobsQuery::default()).await.unwrap();
    assert_eq!(ids(&all.jobs), newest_first(&telegram));
    assert_eq!(all.next_cursor, None);

    let bot1 = tg1
        .list_jobs(&ListJobsQuery {
            bot_id: Some(TG_BOT.parse().unwrap()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(bot1.jobs.len(), 3);
    assert!(bot1.jobs.iter().all(|j| j.bot_id == TG_BOT));
    let bot2 = tg1
        .list_jobs(&ListJobsQuery {
            bot_id: Some(TG_BOT_2.parse().unwrap()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(bot2.jobs.len(), 2);
    assert!(bot2.jobs.iter().all(|j| j.bot_id == TG_BOT_2));

    let status = |s: &str| ListJobsQuery {
        status: Some(s.into()),
        ..Default::default()
    };
    let live_or_cancelled = tg1.list_jobs(&status("QUEUED,CANCELLED")).await.unwrap();
    assert_eq!(live_or_cancelled.jobs.len(), 5);
    let cancelled = tg1.list_jobs(&status("CANCELLED")).await.unwrap();
    assert_eq!(ids(&cancelled.jobs), vec![telegram[0].clone()]);
    let queued = tg1.list_jobs(&status("QUEUED")).await.unwrap();
    assert_eq!(queued.jobs.len(), 4);
    assert!(queued.jobs.iter().all(|j| j.status == JobState::Queued));
    assert!(tg1
        .list_jobs(&status("COMPLETED"))
        .await
        .unwrap()
        .jobs
        .is_empty());

    // Bad queries.
    let e = api_error(
        tg1.list_jobs(&status("NOPE")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_query",
    );
    assert_eq!(e.field.as_deref(), Some("status"));
    for limit in [0, 101] {
        let bad = ListJobsQuery {
            limit: Some(limit),
            ..Default::default()
        };
        let e = api_error(
            tg1.list_jobs(&bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_query",
        );
        assert_eq!(e.field.as_deref(), Some("limit"));
    }
    let bad_cursor = ListJobsQuery {
        cursor: Some("not-a-cursor".into()),
        ..Default::default()
    };
    api_error(
        tg1.list_jobs(&bad_cursor).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_query",
    );
    let key = app.key(Platform::Telegram, TG_BOT).await;
    for query in ["limit=abc", "colour=blue"] {
        send(raw(&app, Method::GET, &format!("/api/v1/jobs?{query}")).bearer_auth(&key))
            .await
            .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query");
    }

    // Pages of two visit every job once, newest first.
    let mut query = ListJobsQuery {
        limit: Some(2),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = tg1.list_jobs(&query).await.unwrap();
        assert!(page.jobs.len() <= 2);
        pages += 1;
        seen.extend(ids(&page.jobs));
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => break,
        }
        assert!(pages < 10, "paging never ends");
    }
    assert_eq!(seen, newest_first(&telegram));
    assert_eq!(pages, 3);

    // A discord key never sees telegram jobs, whatever it asks for.
    let theirs = dc.list_jobs(&ListJobsQuery::default()).await.unwrap();
    assert_eq!(ids(&theirs.jobs), newest_first(&discord));
    assert!(theirs.jobs.iter().all(|j| j.frontend == Platform::Discord));
    let snooping = [
        ListJobsQuery {
            bot_id: Some(TG_BOT.parse().unwrap()),
            ..Default::default()
        },
        by_user("telegram:a"),
        status("CANCELLED"),
    ];
    for q in snooping {
        assert!(dc.list_jobs(&q).await.unwrap().jobs.is_empty(), "{q:?}");
    }

    // The admin sees everything.
    let everything = list_all(&app.admin, ListJobsQuery::default(), true).await;
    let mut expected: Vec<JobId> = telegram.iter().chain(&discord).cloned().collect();
    expected.sort();
    expected.reverse();
    assert_eq!(ids(&everything), expected);
    let paged = list_all(
        &app.admin,
        ListJobsQuery {
            limit: Some(3),
            ..Default::default()
        },
        true,
    )
    .await;
    assert_eq!(ids(&paged), expected);
    let admin_discord = list_all(
        &app.admin,
        ListJobsQuery {
            bot_id: Some(DC_BOT.parse().unwrap()),
            ..Default::default()
        },
        true,
    )
    .await;
    assert_eq!(ids(&admin_discord), newest_first(&discord));
    api_error(
        app.admin.admin_list_jobs(&status("NOPE")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_query",
    );
    app.shutdown().await;
}

// ---- delivery ----

/// A frontend acknowledges delivering an ended job; a restarted bot lists the
/// ended jobs it has not delivered yet, and nothing else.
async fn delivery_is_acknowledged_once_jobs_end(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let other = app.frontend(Platform::Telegram, "tg-video-bot-1").await;
    let live = tg
        .create_job(&tg_job("telegram:7", prompt("still waiting")), None)
        .await
        .unwrap()
        .job;
    let ended = tg
        .create_job(&tg_job("telegram:7", prompt("cancelled soon")), None)
        .await
        .unwrap()
        .job;
    let undelivered = ListJobsQuery {
        bot_id: Some(TG_BOT.parse().unwrap()),
        undelivered: Some(true),
        ..Default::default()
    };
    assert!(tg.list_jobs(&undelivered).await.unwrap().jobs.is_empty());

    let early = tg.mark_delivered(&live.job_id).await.unwrap_err();
    assert_eq!(early.code(), Some("job_not_finished"), "{early}");
    assert_eq!(early.status(), Some(StatusCode::CONFLICT));

    tg.cancel_job(&ended.job_id).await.unwrap();
    let listed = tg.list_jobs(&undelivered).await.unwrap().jobs;
    assert_eq!(ids(&listed), vec![ended.job_id.clone()]);
    assert_eq!(listed[0].delivered_at, None);

    let first = tg.mark_delivered(&ended.job_id).await.unwrap();
    let at = first.delivered_at.expect("delivery recorded");
    let again = tg.mark_delivered(&ended.job_id).await.unwrap();
    assert_eq!(
        again.delivered_at,
        Some(at),
        "the first acknowledgement counts"
    );
    assert!(tg.list_jobs(&undelivered).await.unwrap().jobs.is_empty());
    assert_eq!(
        tg.get_job(&ended.job_id).await.unwrap().delivered_at,
        Some(at)
    );

    // Another platform's key cannot see or acknowledge it.
    let dc = app.frontend(Platform::Discord, "dc-image-bot-1").await;
    let foreign = dc.mark_delivered(&ended.job_id).await.unwrap_err();
    assert_eq!(foreign.code(), Some("job_not_found"), "{foreign}");
    // A key of another bot on the same platform shares the platform's jobs.
    assert!(other.mark_delivered(&ended.job_id).await.is_ok());
}

backend_tests!(
    create_get_cancel_round_trip,
    idempotent_retries_replay_the_first_job,
    concurrent_retries_with_one_key_create_one_job,
    racing_retries_on_the_last_token_all_get_the_job,
    listing_filters_pages_and_scopes,
    delivery_is_acknowledged_once_jobs_end,
);
