//! Plans and quotas, and the quota under concurrent creates.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use tessera_api::public::{CreateJobResponse, ListJobsQuery};
use tessera_core::Platform;
use tessera_testkit::{backend_tests, Backend, TestApp};

use crate::common::*;

// ---- plans ----

async fn plans_set_limits_and_costs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;

    // A user never seen is shown on the free plan.
    let ghost = tg.get_user("telegram:ghost").await.unwrap();
    assert_eq!(ghost.plan.id, "free");
    assert_eq!(
        (ghost.tokens_used_today, ghost.tokens_left_today),
        (0, Some(20))
    );
    assert!(ghost.resets_at > Utc::now());

    let set = app
        .admin
        .set_plan("telegram:pro", &"pro".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(set.plan.id, "pro");
    assert_eq!(
        (set.tokens_used_today, set.tokens_left_today),
        (0, Some(300))
    );

    let big = tg_job(
        "telegram:pro",
        json!({"prompt": "x", "resolution": "2048x2048"}),
    );
    let created = tg.create_job(&big, None).await.unwrap().job;
    assert_eq!(created.cost_tokens, 4);
    let job = tg.get_job(&created.job_id).await.unwrap();
    assert_eq!(
        (job.params["width"].clone(), job.params["height"].clone()),
        (json!(2048), json!(2048))
    );
    let quota = tg.get_user("telegram:pro").await.unwrap();
    assert_eq!(quota.plan.id, "pro");
    assert_eq!(quota.plan.name, "PRO");
    assert_eq!(quota.tokens_used_today, 4);
    assert_eq!(quota.tokens_left_today, Some(296));

    // Changing plans keeps the day's usage.
    let downgraded = app
        .admin
        .set_plan("telegram:pro", &"starter".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(downgraded.plan.id, "starter");
    assert_eq!(
        (downgraded.tokens_used_today, downgraded.tokens_left_today),
        (4, Some(116))
    );
    api_error(
        tg.create_job(&big, None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "resolution_not_allowed",
    );
    app.admin
        .set_plan("telegram:pro", &"pro".parse().unwrap())
        .await
        .unwrap();

    // The same request on the free plan is refused.
    let free = tg_job(
        "telegram:free",
        json!({"prompt": "x", "resolution": "2048x2048"}),
    );
    api_error(
        tg.create_job(&free, None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "resolution_not_allowed",
    );

    // The admin plan is unlimited: no tokens_left_today at all.
    let boss = app
        .admin
        .set_plan("telegram:boss", &"admin".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(boss.plan.id, "admin");
    assert_eq!(boss.plan.daily_tokens, None);
    assert_eq!(boss.tokens_left_today, None);
    tg.create_job(&tg_job("telegram:boss", prompt("x")), None)
        .await
        .unwrap();
    let quota = tg.get_user("telegram:boss").await.unwrap();
    assert_eq!(
        (quota.tokens_used_today, quota.tokens_left_today),
        (1, None)
    );
    let key = app.key(Platform::Telegram, TG_BOT).await;
    let raw_quota =
        send(raw(&app, Method::GET, "/api/v1/users/telegram:boss").bearer_auth(&key)).await;
    assert_eq!(raw_quota.status, StatusCode::OK);
    assert!(
        raw_quota
            .body
            .get("tokens_left_today")
            .is_none_or(Value::is_null),
        "an unlimited plan shows no tokens left: {}",
        raw_quota.body
    );

    let plans = tg.plans().await.unwrap();
    let plan_ids: Vec<_> = plans.plans.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(plan_ids, ["free", "starter", "pro", "admin"]);
    app.shutdown().await;
}

// ---- the quota under concurrency ----

async fn quota_holds_under_100_concurrent_creates(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.key(Platform::Telegram, TG_BOT).await;
    let tg = app.client_with(&key);
    let user = "telegram:crowd";
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let base = app.base_url();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let http = http.clone();
            let base = base.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let req = tg_job(user, prompt(&format!("picture {i}")));
                let rb = http
                    .post(format!("{base}/api/v1/jobs"))
                    .bearer_auth(&key)
                    .json(&req);
                send(rb).await
            })
        })
        .collect();
    let answers: Vec<Answer> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|t| t.expect("task"))
        .collect();

    let mut created = HashSet::new();
    let mut resets = HashSet::new();
    let mut refused = 0;
    for a in &answers {
        match a.status {
            StatusCode::CREATED => {
                let job: CreateJobResponse = serde_json::from_value(a.body.clone()).unwrap();
                assert_eq!(job.cost_tokens, 1);
                created.insert(job.job_id);
            }
            StatusCode::TOO_MANY_REQUESTS => {
                let e = a.error(StatusCode::TOO_MANY_REQUESTS, "quota_exhausted");
                let at = e.resets_at.expect("quota_exhausted says when quotas reset");
                assert!(at > Utc::now());
                resets.insert(at);
                refused += 1;
            }
            other => panic!("unexpected answer {other}: {}", a.body),
        }
    }
    assert_eq!((created.len(), refused), (20, 80));
    assert_eq!(resets.len(), 1, "one reset time for everyone: {resets:?}");

    let quota = tg.get_user(user).await.unwrap();
    assert_eq!(
        (quota.tokens_used_today, quota.tokens_left_today),
        (20, Some(0))
    );
    assert!(resets.contains(&quota.resets_at));

    let query = ListJobsQuery {
        limit: Some(7),
        ..by_user(user)
    };
    let jobs = list_all(&tg, query.clone(), false).await;
    assert_eq!(jobs.len(), 20);
    assert_eq!(ids(&jobs).into_iter().collect::<HashSet<_>>(), created);
    assert_eq!(charged(&jobs), quota.tokens_used_today);

    // Cancelling five gives back five tokens, and the books still balance.
    for job in jobs.iter().take(5) {
        let cancelled = tg.cancel_job(&job.job_id).await.unwrap();
        assert!(cancelled.refunded);
    }
    let quota = tg.get_user(user).await.unwrap();
    assert_eq!(
        (quota.tokens_used_today, quota.tokens_left_today),
        (15, Some(5))
    );
    let jobs = list_all(&tg, query, false).await;
    assert_eq!(jobs.len(), 20);
    assert_eq!(jobs.iter().filter(|j| j.refunded).count(), 5);
    assert_eq!(charged(&jobs), 15);

    // The refunded tokens can be spent again, and no more.
    for i in 0..5 {
        tg.create_job(&tg_job(user, prompt(&format!("again {i}"))), None)
            .await
            .expect("refunded tokens are spendable");
    }
    api_error(
        tg.create_job(&tg_job(user, prompt("one too many")), None)
            .await,
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exhausted",
    );
    let jobs = list_all(&tg, by_user(user), false).await;
    let quota = tg.get_user(user).await.unwrap();
    assert_eq!(quota.tokens_used_today, 20);
    assert_eq!(charged(&jobs), 20);
    app.shutdown().await;
}

backend_tests!(
    plans_set_limits_and_costs,
    quota_holds_under_100_concurrent_creates,
);
