//! Credentials and validation: who may do what, and what is refused before
//! anything is created or charged.

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde_json::json;

use tessera_api::admin::CreateKeyRequest;
use tessera_api::public::{CreateJobRequest, ListJobsQuery};
use tessera_core::{JobState, Platform};
use tessera_testkit::{backend_tests, Backend, TestApp};

use crate::common::*;

// ---- credentials ----

async fn credentials_are_checked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.key(Platform::Telegram, TG_BOT).await;
    let req = tg_job("telegram:1", prompt("x"));

    // No credential at all.
    let none = send(raw(&app, Method::POST, "/api/v1/jobs").json(&req)).await;
    none.error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(none.header(WWW_AUTHENTICATE.as_str()), Some("Bearer"));
    send(raw(&app, Method::GET, "/api/v1/jobs"))
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    send(raw(&app, Method::GET, "/api/admin/keys"))
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    // A credential that is not a bearer token.
    let basic =
        raw(&app, Method::GET, "/api/v1/jobs").header(AUTHORIZATION, format!("Basic {key}"));
    send(basic)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    let empty = raw(&app, Method::GET, "/api/v1/jobs").header(AUTHORIZATION, "Bearer ");
    send(empty)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");

    // Credentials that are nobody's.
    let garbage = app.client_with("garbage-garbage-garbage");
    api_error(
        garbage.create_job(&req, None).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    api_error(
        garbage.list_keys().await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );

    // Real credentials of the wrong kind.
    let admin_as_frontend = app.client_with(&app.admin_token);
    api_error(
        admin_as_frontend.create_job(&req, None).await,
        StatusCode::FORBIDDEN,
        "wrong_credential",
    );
    api_error(
        admin_as_frontend.list_jobs(&ListJobsQuery::default()).await,
        StatusCode::FORBIDDEN,
        "wrong_credential",
    );
    let frontend = app.client_with(&key);
    api_error(
        frontend.list_keys().await,
        StatusCode::FORBIDDEN,
        "wrong_credential",
    );
    api_error(
        frontend
            .create_key(&CreateKeyRequest {
                frontend: Platform::Telegram,
                bot_id: "sneaky".parse().unwrap(),
            })
            .await,
        StatusCode::FORBIDDEN,
        "wrong_credential",
    );
    api_error(
        frontend
            .set_plan("telegram:1", &"admin".parse().unwrap())
            .await,
        StatusCode::FORBIDDEN,
        "wrong_credential",
    );

    // A revoked key stops working at once, on every endpoint.
    let created = app
        .admin
        .create_key(&CreateKeyRequest {
            frontend: Platform::Telegram,
            bot_id: TG_BOT.parse().unwrap(),
        })
        .await
        .unwrap();
    assert!(created.key.key_id.as_str().starts_with("key_"));
    assert_eq!(created.key.revoked_at, None);
    let doomed = app.client_with(&created.api_key);
    doomed
        .create_job(&req, None)
        .await
        .expect("the key works before revocation");
    let revoked = app.admin.revoke_key(&created.key.key_id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    api_error(
        doomed.create_job(&req, None).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    api_error(
        doomed.list_jobs(&ListJobsQuery::default()).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    api_error(
        doomed.list_keys().await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    // The other key of the same bot still works; the listing shows the revocation
    // and never a secret.
    frontend
        .create_job(&req, None)
        .await
        .expect("an unrevoked key works");
    let keys = app.admin.list_keys().await.unwrap();
    let listed = keys
        .keys
        .iter()
        .find(|k| k.key_id == created.key.key_id)
        .expect("the revoked key is listed");
    assert_eq!(listed.revoked_at, revoked.revoked_at);
    let raw_keys =
        send(raw(&app, Method::GET, "/api/admin/keys").bearer_auth(&app.admin_token)).await;
    assert_eq!(raw_keys.status, StatusCode::OK);
    assert!(!raw_keys.body.to_string().contains(&created.api_key));
    assert!(!raw_keys.body.to_string().contains(&key));
    app.shutdown().await;
}

/// `POST /api/v1/webhook-secret`: a frontend key only, and each key's secret
/// is its own.
async fn webhook_secrets_need_a_frontend_key_and_are_each_keys_own(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let path = "/api/v1/webhook-secret";
    send(raw(&app, Method::POST, path))
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    send(raw(&app, Method::POST, path).bearer_auth("garbage-garbage-garbage"))
        .await
        .error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    for token in [&app.admin_token, &app.internal_token] {
        send(raw(&app, Method::POST, path).bearer_auth(token))
            .await
            .error(StatusCode::FORBIDDEN, "wrong_credential");
    }
    send(raw(&app, Method::GET, path).bearer_auth(&app.admin_token))
        .await
        .error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");

    // Two keys of one bot: each its own secret, and a secret serves only its key.
    let one = app.frontend(Platform::Telegram, TG_BOT).await;
    let other = app.frontend(Platform::Telegram, TG_BOT).await;
    let first = one.rotate_webhook_secret().await.unwrap();
    assert!(first.secret.starts_with("whsec_"));
    let hooked = CreateJobRequest {
        callback_url: Some("https://example.com/hook".into()),
        ..tg_job("telegram:1", prompt("x"))
    };
    api_error(
        other.create_job(&hooked, None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "webhook_secret_missing",
    );
    let second = other.rotate_webhook_secret().await.unwrap();
    assert_ne!(first.secret, second.secret);

    // A revoked key can no longer make one.
    let created = app
        .admin
        .create_key(&CreateKeyRequest {
            frontend: Platform::Telegram,
            bot_id: TG_BOT.parse().unwrap(),
        })
        .await
        .unwrap();
    app.admin.revoke_key(&created.key.key_id).await.unwrap();
    send(raw(&app, Method::POST, path).bearer_auth(&created.api_key))
        .await
        .error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    app.shutdown().await;
}

async fn keys_speak_only_for_their_bot_and_platform(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let dc = app.frontend(Platform::Discord, DC_BOT).await;

    let other_bot = image_job(Platform::Telegram, TG_BOT_2, "telegram:1", prompt("x"));
    api_error(
        tg.create_job(&other_bot, None).await,
        StatusCode::FORBIDDEN,
        "forbidden_bot",
    );
    let other_platform = image_job(Platform::Discord, TG_BOT, "discord:1", prompt("x"));
    api_error(
        tg.create_job(&other_platform, None).await,
        StatusCode::FORBIDDEN,
        "forbidden_bot",
    );
    api_error(
        tg.create_job(&tg_job("discord:1", prompt("x")), None).await,
        StatusCode::FORBIDDEN,
        "forbidden_user_ref",
    );
    api_error(
        tg.get_user("discord:1").await,
        StatusCode::FORBIDDEN,
        "forbidden_user_ref",
    );

    // A telegram job is invisible to a discord key: not readable, not cancellable.
    let job = tg
        .create_job(&tg_job("telegram:1", prompt("x")), None)
        .await
        .unwrap()
        .job;
    api_error(
        dc.get_job(&job.job_id).await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    );
    api_error(
        dc.cancel_job(&job.job_id).await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    );
    assert_eq!(
        tg.get_job(&job.job_id).await.unwrap().status,
        JobState::Queued
    );

    // Refused requests charged nothing; the one job did.
    let quota = tg.get_user("telegram:1").await.unwrap();
    assert_eq!(quota.tokens_used_today, 1);
    let discord = dc.get_user("discord:1").await.unwrap();
    assert_eq!(discord.tokens_used_today, 0);
    app.shutdown().await;
}

// ---- validation ----

async fn invalid_requests_are_refused_with_stable_codes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.key(Platform::Telegram, TG_BOT).await;
    let tg = app.client_with(&key);
    let user = "telegram:7";

    let e = api_error(
        tg.create_job(&tg_job(user, prompt("   ")), None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "prompt_empty",
    );
    assert_eq!(e.field.as_deref(), Some("params.prompt"));
    let e = api_error(
        tg.create_job(
            &tg_job(user, json!({"prompt": "x", "resolution": "2048x2048"})),
            None,
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "resolution_not_allowed",
    );
    assert_eq!(e.field.as_deref(), Some("params.resolution"));
    let e = api_error(
        tg.create_job(
            &tg_job(user, json!({"prompt": "x", "model": "flux-schnell"})),
            None,
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "model_not_allowed",
    );
    assert_eq!(e.field.as_deref(), Some("params.model"));
    api_error(
        tg.create_job(&tg_job(user, json!({"prompt": "x", "cfg": 7})), None)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_param",
    );
    let e = create_for_raw_user(&app, &key, "telegram")
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_user_ref");
    assert_eq!(e.field.as_deref(), Some("user_ref"));
    let mut big_context = tg_job(user, prompt("x"));
    big_context.reply_context = Some(json!({ "blob": "x".repeat(5000) }));
    let e = api_error(
        tg.create_job(&big_context, None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "reply_context_too_large",
    );
    assert_eq!(e.field.as_deref(), Some("reply_context"));
    api_error(
        tg.create_job(&tg_job(user, prompt("x")), Some("has spaces in it"))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_idempotency_key",
    );

    // Requests the typed client cannot make.
    let post = || raw(&app, Method::POST, "/api/v1/jobs").bearer_auth(&key);
    let mut unknown_capability = serde_json::to_value(tg_job(user, prompt("x"))).unwrap();
    unknown_capability["capability"] = json!("teleportation");
    send(post().json(&unknown_capability))
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let mut extra_field = serde_json::to_value(tg_job(user, prompt("x"))).unwrap();
    extra_field["priority"] = json!(3);
    send(post().json(&extra_field))
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let malformed = post()
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"frontend": "telegram", "bot_id": "#);
    send(malformed)
        .await
        .error(StatusCode::BAD_REQUEST, "malformed_request");
    let valid_text = serde_json::to_string(&tg_job(user, prompt("x"))).unwrap();
    send(post().body(valid_text.clone()))
        .await
        .error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    send(post().header(CONTENT_TYPE, "text/plain").body(valid_text))
        .await
        .error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");

    // Nothing was created and nothing charged.
    let all = list_all(&app.admin, ListJobsQuery::default(), true).await;
    assert!(all.is_empty(), "refused requests created jobs: {all:?}");
    assert_eq!(tg.get_user(user).await.unwrap().tokens_used_today, 0);
    app.shutdown().await;
}

async fn oversized_bodies_are_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.server.body_limit_bytes = 1024).await;
    let key = app.key(Platform::Telegram, TG_BOT).await;
    let tg = app.client_with(&key);

    // Small enough: accepted.
    tg.create_job(&tg_job("telegram:1", prompt("small")), None)
        .await
        .expect("a small request fits");
    let big = tg_job("telegram:1", prompt(&"x".repeat(1500)));
    let answer = send(raw_create(&reqwest::Client::new(), &app, &key, &big, None)).await;
    answer.error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    api_error(
        tg.create_job(&big, None).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );
    assert_eq!(
        tg.get_user("telegram:1").await.unwrap().tokens_used_today,
        1
    );
    app.shutdown().await;
}

/// What an attacker or a broken client sends: each refused with a clear 4xx
/// in the JSON envelope, nothing created, nothing charged, nothing read from
/// outside the store.
async fn hostile_input_is_refused_with_a_clear_4xx(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.key(Platform::Telegram, TG_BOT).await;
    let tg = app.client_with(&key);
    let user = "telegram:9";
    let post = || raw(&app, Method::POST, "/api/v1/jobs").bearer_auth(&key);

    // Invalid UTF-8 in a JSON body.
    let mut bytes = serde_json::to_vec(&tg_job(user, prompt("PLACEHOLDER"))).unwrap();
    let at = bytes.windows(11).position(|w| w == b"PLACEHOLDER").unwrap();
    bytes[at] = 0xff;
    bytes[at + 1] = 0xfe;
    send(post().header(CONTENT_TYPE, "application/json").body(bytes))
        .await
        .error(StatusCode::BAD_REQUEST, "malformed_request");
    // A prompt far over the limit, inside the body limit.
    api_error(
        tg.create_job(&tg_job(user, prompt(&"a fox ".repeat(10_000))), None)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "prompt_too_long",
    );
    // Control characters that could forge lines wherever a prompt is shown.
    let e = api_error(
        tg.create_job(&tg_job(user, prompt("a fox\u{0}\u{1b}[2J")), None)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_params",
    );
    assert_eq!(e.field.as_deref(), Some("params.prompt"));
    // A user reference with a path or a control character in it.
    for bad in ["telegram:../../admin", "telegram:1\n2", "telegram:"] {
        create_for_raw_user(&app, &key, bad)
            .await
            .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_user_ref");
    }
    // Paths that try to leave the store: artifact and input ids are checked
    // before any key is built from them.
    for path in [
        "/api/v1/artifacts/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/artifacts/art_..%2F..%2Ftessera.db",
        "/api/v1/artifacts/%2Fetc%2Fpasswd",
    ] {
        send(raw(&app, Method::GET, path).bearer_auth(&key))
            .await
            .error(StatusCode::NOT_FOUND, "artifact_not_found");
    }
    send(
        raw(
            &app,
            Method::GET,
            "/api/internal/inputs/..%2F..%2Fetc%2Fpasswd",
        )
        .bearer_auth(&app.internal_token),
    )
    .await
    .error(StatusCode::NOT_FOUND, "input_not_found");
    // A job id that is no job id.
    send(raw(&app, Method::GET, "/api/v1/jobs/..%2Fjobs").bearer_auth(&key))
        .await
        .error(StatusCode::NOT_FOUND, "job_not_found");
    // A request id with bytes that are no text is ignored, not fatal.
    let created = send(
        raw_create(
            &reqwest::Client::new(),
            &app,
            &key,
            &tg_job(user, prompt("ok")),
            None,
        )
        .header(
            tessera_api::REQUEST_ID,
            reqwest::header::HeaderValue::from_bytes(b"id-\xff\xfe").unwrap(),
        ),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);

    // Only the last request created a job, and charged for it.
    let all = list_all(&app.admin, ListJobsQuery::default(), true).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(tg.get_user(user).await.unwrap().tokens_used_today, 1);
    app.shutdown().await;
}

// U+0000 in text that reaches SQL. PostgreSQL cannot hold it in TEXT or
// JSONB and failed each of these with a 500 (SQLite took them); Schemathesis
// found them (tests/schemathesis.rs). Each is now refused before the
// database, the same way on both backends.

/// Listing filters are checked as strictly as the values they match.
async fn nul_in_list_filters_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.key(Platform::Telegram, TG_BOT).await;
    for (path, token, field) in [
        ("/api/v1/jobs?user_ref=telegram%3A1%00", &key, "user_ref"),
        ("/api/v1/jobs?bot_id=tg-image-bot-1%00", &key, "bot_id"),
        (
            "/api/admin/jobs?user_ref=telegram%3A1%00",
            &app.admin_token,
            "user_ref",
        ),
        (
            "/api/admin/jobs?bot_id=tg-image-bot-1%00",
            &app.admin_token,
            "bot_id",
        ),
        // Malformed without a NUL: refused alike, not an empty page.
        ("/api/v1/jobs?user_ref=nobody", &key, "user_ref"),
        ("/api/v1/jobs?bot_id=a%20b", &key, "bot_id"),
    ] {
        let e = send(raw(&app, Method::GET, path).bearer_auth(token))
            .await
            .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query");
        assert_eq!(e.field.as_deref(), Some(field), "{path}");
    }
    let ok = send(
        raw(
            &app,
            Method::GET,
            "/api/v1/jobs?user_ref=telegram%3A1&bot_id=tg-image-bot-1",
        )
        .bearer_auth(&key),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    app.shutdown().await;
}

/// A `reply_context` holding U+0000, in a value or a key, creates nothing.
async fn nul_in_reply_context_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.key(Platform::Telegram, TG_BOT).await;
    let tg = app.client_with(&key);
    let user = "telegram:10";
    for ctx in [
        json!({"chat": 1, "message\u{0}": 2}),
        json!({"chat": "a\u{0}b"}),
        json!({"deep": [{"x": ["\u{0}"]}]}),
    ] {
        let req = CreateJobRequest {
            callback_url: None,
            context: None,
            reply_context: Some(ctx.clone()),
            ..tg_job(user, prompt("a fox"))
        };
        let e = api_error(
            tg.create_job(&req, None).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        );
        assert_eq!(e.field.as_deref(), Some("reply_context"), "{ctx}");
    }
    assert_eq!(tg.get_user(user).await.unwrap().tokens_used_today, 0);
    assert!(list_all(&app.admin, by_user(user), true).await.is_empty());
    // Other control characters are the frontend's business, and stored.
    let req = CreateJobRequest {
        callback_url: None,
        context: None,
        reply_context: Some(json!({"chat": "a\u{1}b"})),
        ..tg_job(user, prompt("a fox"))
    };
    let job = tg.create_job(&req, None).await.unwrap().job;
    let stored = tg.get_job(&job.job_id).await.unwrap();
    assert_eq!(stored.reply_context, Some(json!({"chat": "a\u{1}b"})));
    app.shutdown().await;
}

/// A plan id no plan can have is an unknown plan, not a database error.
async fn nul_in_a_plan_id_is_an_unknown_plan(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for plan in ["pro\u{0}", "\u{0}", "", "PRO PLAN"] {
        let answer = send(
            raw(&app, Method::PUT, "/api/admin/users/telegram:11/plan")
                .bearer_auth(&app.admin_token)
                .json(&json!({ "plan_id": plan })),
        )
        .await;
        answer.error(StatusCode::NOT_FOUND, "plan_not_found");
    }
    let quota = send(
        raw(&app, Method::PUT, "/api/admin/users/telegram:11/plan")
            .bearer_auth(&app.admin_token)
            .json(&json!({ "plan_id": "pro" })),
    )
    .await;
    assert_eq!(quota.status, StatusCode::OK, "{:?}", quota.body);
    assert_eq!(quota.body["plan"]["id"], "pro");
    app.shutdown().await;
}

/// Progress and results name their worker as a heartbeat does.
async fn nul_in_a_worker_id_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let job = tg
        .create_job(&tg_job("telegram:12", prompt("a fox")), None)
        .await
        .unwrap()
        .job;
    let progress = format!("/api/internal/jobs/{}/progress", job.job_id);
    for worker in ["w\u{0}", "", "a b"] {
        let e = send(
            raw(&app, Method::POST, &progress)
                .bearer_auth(&app.internal_token)
                .json(&json!({"worker_id": worker, "attempt": 1, "progress": 5.0})),
        )
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_progress");
        assert_eq!(e.field.as_deref(), Some("worker_id"), "{worker:?}");
    }
    // A well-formed worker that is not running it: the fence, as before.
    send(
        raw(&app, Method::POST, &progress)
            .bearer_auth(&app.internal_token)
            .json(&json!({"worker_id": "worker-0", "attempt": 1, "progress": 5.0})),
    )
    .await
    .error(StatusCode::CONFLICT, "stale_attempt");
    // The result upload (multipart, written by hand: one `result` part).
    let boundary = "tessera-test-boundary";
    let part = json!({"worker_id": "w\u{0}", "attempt": 1, "outcome": "failed",
        "error": {"code": "engine_error", "message": "x", "retryable": false}});
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"result\"\r\n\
         Content-Type: application/json\r\n\r\n{part}\r\n--{boundary}--\r\n"
    );
    let e = send(
        raw(
            &app,
            Method::POST,
            &format!("/api/internal/jobs/{}/result", job.job_id),
        )
        .bearer_auth(&app.internal_token)
        .header(
            CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body),
    )
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_result");
    assert_eq!(e.field.as_deref(), Some("worker_id"));
    // The job is untouched.
    assert_eq!(
        tg.get_job(&job.job_id).await.unwrap().status,
        JobState::Queued
    );
    app.shutdown().await;
}

async fn unknown_routes_and_methods_answer_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.key(Platform::Telegram, TG_BOT).await;
    send(raw(&app, Method::GET, "/api/v1/nope"))
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    send(raw(&app, Method::GET, "/nope").bearer_auth(&key))
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    send(raw(&app, Method::PATCH, "/api/v1/jobs").bearer_auth(&key))
        .await
        .error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    send(raw(
        &app,
        Method::PUT,
        "/api/v1/jobs/job_01JD3Z8X9Q4W6E2R5T7Y9V1K3M",
    ))
    .await
    .error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    send(raw(&app, Method::POST, "/healthz"))
        .await
        .error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    app.shutdown().await;
}

backend_tests!(
    credentials_are_checked,
    webhook_secrets_need_a_frontend_key_and_are_each_keys_own,
    keys_speak_only_for_their_bot_and_platform,
    invalid_requests_are_refused_with_stable_codes,
    oversized_bodies_are_refused,
    hostile_input_is_refused_with_a_clear_4xx,
    nul_in_list_filters_is_refused,
    nul_in_reply_context_is_refused,
    nul_in_a_plan_id_is_an_unknown_plan,
    nul_in_a_worker_id_is_refused,
    unknown_routes_and_methods_answer_json,
);
