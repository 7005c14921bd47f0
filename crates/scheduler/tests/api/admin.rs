//! The admin API, the API document and the probes.

use reqwest::{Method, StatusCode};
use serde_json::json;

use tessera_core::{ApiKeyId, JobId, JobState, Platform};
use tessera_testkit::{backend_tests, Backend, TestApp};

use crate::common::*;

// ---- admin ----

async fn admin_endpoints(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;

    api_error(
        app.admin
            .set_plan("telegram:1", &"platinum".parse().unwrap())
            .await,
        StatusCode::NOT_FOUND,
        "plan_not_found",
    );
    api_error(
        app.admin.set_plan("nobody", &"pro".parse().unwrap()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_user_ref",
    );
    assert_eq!(tg.get_user("telegram:1").await.unwrap().plan.id, "free");

    // An operator cancels a frontend's job; the frontend sees why.
    let job = tg
        .create_job(&tg_job("telegram:1", prompt("x")), None)
        .await
        .unwrap()
        .job;
    assert_eq!(
        tg.get_user("telegram:1").await.unwrap().tokens_used_today,
        1
    );
    let cancelled = app.admin.admin_cancel_job(&job.job_id).await.unwrap();
    assert_eq!(cancelled.status, JobState::Cancelled);
    assert!(cancelled.refunded);
    assert_eq!(
        cancelled.error.as_ref().map(|e| e.code.as_str()),
        Some("cancelled_by_admin")
    );
    let seen = tg.get_job(&job.job_id).await.unwrap();
    assert_eq!(seen.status, JobState::Cancelled);
    assert_eq!(
        seen.error.map(|e| e.code),
        Some("cancelled_by_admin".to_owned())
    );
    assert_eq!(
        tg.get_user("telegram:1").await.unwrap().tokens_used_today,
        0
    );
    api_error(
        app.admin.admin_cancel_job(&job.job_id).await,
        StatusCode::CONFLICT,
        "job_finished",
    );
    api_error(
        tg.cancel_job(&job.job_id).await,
        StatusCode::CONFLICT,
        "job_finished",
    );
    api_error(
        app.admin.admin_cancel_job(&JobId::generate()).await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    );

    // Keys.
    let unknown: ApiKeyId = "key_01JD3Z8X9Q4W6E2R5T7Y9V1K3M".parse().unwrap();
    api_error(
        app.admin.revoke_key(&unknown).await,
        StatusCode::NOT_FOUND,
        "key_not_found",
    );
    send(raw(&app, Method::DELETE, "/api/admin/keys/not-a-key").bearer_auth(&app.admin_token))
        .await
        .error(StatusCode::NOT_FOUND, "key_not_found");
    // A typed client cannot send a malformed bot id; the wire can.
    for bad in ["bad id", "", "a/b", &"x".repeat(65)] {
        let e = send(
            raw(&app, Method::POST, "/api/admin/keys")
                .bearer_auth(&app.admin_token)
                .json(&json!({"frontend": "telegram", "bot_id": bad})),
        )
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_bot_id");
        assert_eq!(e.field.as_deref(), Some("bot_id"), "{bad:?}");
    }
    let created = send(
        raw(&app, Method::POST, "/api/admin/keys")
            .bearer_auth(&app.admin_token)
            .json(&json!({"frontend": "web", "bot_id": "web-app.1"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["frontend"], "web");
    assert_eq!(created.body["bot_id"], "web-app.1");
    let key_id: ApiKeyId = serde_json::from_value(created.body["key_id"].clone()).unwrap();
    let secret = created.body["api_key"]
        .as_str()
        .expect("the secret")
        .to_owned();
    let web = app.client_with(&secret);
    let web_job = image_job(Platform::Web, "web-app.1", "web:ada", prompt("x"));
    web.create_job(&web_job, None)
        .await
        .expect("the new key works");
    let listed = app.admin.list_keys().await.unwrap();
    assert!(listed
        .keys
        .iter()
        .any(|k| k.key_id == key_id && k.revoked_at.is_none()));
    let first = app.admin.revoke_key(&key_id).await.unwrap();
    let second = app.admin.revoke_key(&key_id).await.unwrap();
    assert!(first.revoked_at.is_some());
    assert_eq!(
        second.revoked_at, first.revoked_at,
        "revoking again keeps the first time"
    );
    api_error(
        web.create_job(&web_job, None).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    app.shutdown().await;
}

// ---- documents and probes ----

async fn openapi_and_probes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = send(raw(&app, Method::GET, "/api/openapi.json")).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with('3')));
    let paths = doc.body["paths"].as_object().expect("paths");
    for path in [
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/users/{user_ref}",
        "/api/v1/plans",
        "/api/admin/keys",
        "/api/admin/keys/{key_id}",
        "/api/admin/users/{user_ref}/plan",
        "/api/admin/jobs",
        "/api/admin/jobs/{job_id}",
        "/api/v1/accounts",
        "/api/v1/accounts/sign-in",
        "/api/v1/accounts/{user_ref}",
        "/api/v1/accounts/{user_ref}/links",
        "/api/v1/link-codes",
        "/api/v1/webhook-secret",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(paths["/api/v1/jobs"].get("post").is_some());
    assert!(paths["/api/v1/jobs"].get("get").is_some());
    assert!(doc.body["components"]["schemas"]
        .get("ApiErrorBody")
        .is_some());

    let alive = send(raw(&app, Method::GET, "/healthz")).await;
    assert_eq!(
        (alive.status, alive.body.clone()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let ready = send(raw(&app, Method::GET, "/readyz")).await;
    assert_eq!(
        (ready.status, ready.body.clone()),
        (StatusCode::OK, json!({"status": "ready"}))
    );

    // A caller's request id is echoed back.
    let traced =
        send(raw(&app, Method::GET, "/healthz").header(tessera_api::REQUEST_ID, "trace-me-42"))
            .await;
    assert_eq!(traced.header(tessera_api::REQUEST_ID), Some("trace-me-42"));
    app.shutdown().await;
}

backend_tests!(admin_endpoints, openapi_and_probes,);
