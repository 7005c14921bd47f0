//! The NSFW context: whether a `require_nsfw` prompt passes is decided per
//! request from what the frontend reports, believed only as far as its key
//! allows (a Discord channel's flag from a Discord key, a Telegram group
//! whose admins turned it on, a website account that confirmed its age),
//! and the plan can forbid it; the decision is kept on the job.

use reqwest::{Method, StatusCode};
use serde_json::json;

use tessera_api::nsfw::JobContext;
use tessera_api::public::{CreateJobRequest, Credentials};
use tessera_api::Client;
use tessera_core::moderation::{Action, RuleConfig};
use tessera_core::{JobId, Platform};
use tessera_testkit::{backend_tests, Backend, TestApp};

use crate::common::*;

fn adult_rule(c: &mut tessera_scheduler::config::SchedulerConfig) {
    c.moderation.rules = vec![RuleConfig {
        name: "adult".into(),
        words: vec!["nude".into()],
        action: Action::RequireNsfw,
        ..RuleConfig::empty()
    }];
}

fn with(mut req: CreateJobRequest, context: JobContext) -> CreateJobRequest {
    req.context = Some(context);
    req
}

fn dc_job(user: &str, text: &str) -> CreateJobRequest {
    image_job(Platform::Discord, DC_BOT, user, prompt(text))
}

fn web_job(user: &str, text: &str) -> CreateJobRequest {
    image_job(Platform::Web, WEB, user, prompt(text))
}

/// The decision as stored on the job.
async fn adult_allowed(app: &TestApp, id: &JobId) -> bool {
    app.store()
        .get_job(id, None)
        .await
        .unwrap()
        .expect("the job exists")
        .adult_allowed
}

/// Creates `req` and answers the stored decision; panics on a refusal.
async fn created(app: &TestApp, client: &Client, req: &CreateJobRequest) -> bool {
    let job = client.create_job(req, None).await.unwrap().job;
    adult_allowed(app, &job.job_id).await
}

async fn refused(client: &Client, req: &CreateJobRequest) {
    api_error(
        client.create_job(req, None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "content_not_allowed",
    );
}

async fn discord_nsfw_channels_allow_adult_prompts(backend: Backend) {
    let app = TestApp::spawn_with(backend, adult_rule).await;
    let dc = app.frontend(Platform::Discord, DC_BOT).await;
    // No context (a DM), or a channel that is not age-restricted: refused.
    refused(&dc, &dc_job("discord:5", "a nude statue")).await;
    let plain = JobContext::discord(Some(false));
    refused(
        &dc,
        &with(dc_job("discord:5", "a nude statue"), plain.clone()),
    )
    .await;
    // A benign job there is made, and not allowed adult outputs.
    assert!(!created(&app, &dc, &with(dc_job("discord:5", "a cat"), plain)).await);
    // An NSFW channel: allowed, and the job says so.
    let nsfw = JobContext::discord(Some(true));
    assert!(created(&app, &dc, &with(dc_job("discord:5", "a nude statue"), nsfw)).await);
}

async fn telegram_groups_allow_adult_prompts_once_admins_turn_it_on(backend: Backend) {
    let app = TestApp::spawn_with(backend, adult_rule).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let group = -1_001_234_567_890_i64;
    let in_group = |text: &str| {
        with(
            tg_job("telegram:7", prompt(text)),
            JobContext::telegram(group),
        )
    };

    // Off until an admin turns it on.
    let setting = tg.chat_nsfw(group).await.unwrap();
    assert!(!setting.enabled && setting.set_by.is_none());
    refused(&tg, &in_group("nude")).await;

    let admin = "telegram:7".parse().unwrap();
    let setting = tg.set_chat_nsfw(group, true, &admin).await.unwrap();
    assert!(setting.enabled);
    assert_eq!(setting.set_by, Some(admin.clone()));
    assert!(setting.set_at.is_some());
    assert_eq!(tg.chat_nsfw(group).await.unwrap(), setting);
    assert!(created(&app, &tg, &in_group("nude")).await);
    // Another user in that group is allowed too: it is the chat's setting.
    let other = with(
        tg_job("telegram:8", prompt("nude")),
        JobContext::telegram(group),
    );
    assert!(created(&app, &tg, &other).await);

    // Another group, a private chat and no chat at all stay plain.
    let elsewhere = with(
        tg_job("telegram:7", prompt("nude")),
        JobContext::telegram(-42),
    );
    refused(&tg, &elsewhere).await;
    let private = with(
        tg_job("telegram:7", prompt("nude")),
        JobContext::telegram(7),
    );
    refused(&tg, &private).await;
    refused(&tg, &tg_job("telegram:7", prompt("nude"))).await;
    // Private chats cannot be turned on at all.
    api_error(
        tg.set_chat_nsfw(7, true, &admin).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "context_not_allowed",
    );

    // Turned off again: refused again.
    let setting = tg.set_chat_nsfw(group, false, &admin).await.unwrap();
    assert!(!setting.enabled);
    refused(&tg, &in_group("nude")).await;

    // Only Telegram keys change or read it, for Telegram users.
    let dc = app.frontend(Platform::Discord, DC_BOT).await;
    let web = app.frontend(Platform::Web, WEB).await;
    for other in [&dc, &web] {
        api_error(
            other.set_chat_nsfw(group, true, &admin).await,
            StatusCode::FORBIDDEN,
            "forbidden_frontend",
        );
        api_error(
            other.chat_nsfw(group).await,
            StatusCode::FORBIDDEN,
            "forbidden_frontend",
        );
    }
    api_error(
        tg.set_chat_nsfw(group, true, &"discord:7".parse().unwrap())
            .await,
        StatusCode::FORBIDDEN,
        "forbidden_user_ref",
    );
    assert!(!tg.chat_nsfw(group).await.unwrap().enabled);
    // A chat id that is no number.
    let key = app.key(Platform::Telegram, TG_BOT).await;
    send(raw(&app, Method::GET, "/api/v1/telegram/chats/general/nsfw").bearer_auth(&key))
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
}

async fn website_accounts_allow_adult_prompts_once_they_confirm_their_age(backend: Backend) {
    let app = TestApp::spawn_with(backend, adult_rule).await;
    let web = app.frontend(Platform::Web, WEB).await;
    let account = web
        .create_account(&Credentials {
            email: "ada@example.org".into(),
            password: "correct horse battery".into(),
        })
        .await
        .unwrap();
    let user = account.user_ref.to_string();
    assert_eq!(account.age_confirmed_at, None);
    refused(&web, &web_job(&user, "nude")).await;

    // Another website's key cannot confirm it, nor can a bot's.
    let demo = app.frontend(Platform::Web, DEMO).await;
    api_error(
        demo.confirm_age(&user).await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    api_error(
        tg.confirm_age(&user).await,
        StatusCode::FORBIDDEN,
        "forbidden_frontend",
    );
    refused(&web, &web_job(&user, "nude")).await;

    let confirmed = web.confirm_age(&user).await.unwrap();
    let at = confirmed.age_confirmed_at.expect("confirmed");
    assert_eq!(
        web.get_account(&user).await.unwrap().age_confirmed_at,
        Some(at)
    );
    assert!(created(&app, &web, &web_job(&user, "nude")).await);
    // Confirming again keeps the first time.
    let again = web.confirm_age(&user).await.unwrap();
    assert_eq!(again.age_confirmed_at, Some(at));

    // A web user that is no account never has an age.
    refused(&web, &web_job("web:me", "nude")).await;
    api_error(
        web.confirm_age("web:me").await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );
}

async fn a_context_of_another_kind_of_frontend_is_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, adult_rule).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let dc = app.frontend(Platform::Discord, DC_BOT).await;
    let web = app.frontend(Platform::Web, WEB).await;
    let account = web
        .create_account(&Credentials {
            email: "bo@example.org".into(),
            password: "correct horse battery".into(),
        })
        .await
        .unwrap();
    let web_user = account.user_ref.to_string();
    let discord_nsfw = JobContext::discord(Some(true));
    let telegram_chat = JobContext::telegram(-100);
    let claims = [
        (
            &tg,
            tg_job("telegram:9", prompt("nude")),
            discord_nsfw.clone(),
        ),
        (&dc, dc_job("discord:9", "nude"), telegram_chat.clone()),
        (&web, web_job(&web_user, "nude"), discord_nsfw),
        (&web, web_job(&web_user, "nude"), telegram_chat),
    ];
    for (client, req, context) in claims {
        let e = api_error(
            client.create_job(&with(req, context), None).await,
            StatusCode::FORBIDDEN,
            "context_not_allowed",
        );
        assert!(e.message.contains("cannot report"), "{}", e.message);
    }
    // Nothing was charged and no job exists.
    for (client, user) in [(&tg, "telegram:9"), (&dc, "discord:9"), (&web, &web_user)] {
        assert_eq!(client.get_user(user).await.unwrap().tokens_used_today, 0);
        assert!(list_all(client, by_user(user), false).await.is_empty());
    }
    // A web key cannot claim its account's age in the request: the context
    // has no such field.
    let key = app.key(Platform::Web, WEB).await;
    let mut body = serde_json::to_value(web_job(&web_user, "nude")).unwrap();
    body["context"] = json!({ "age_confirmed": true });
    let answer = send(
        raw(&app, Method::POST, "/api/v1/jobs")
            .bearer_auth(&key)
            .json(&body),
    )
    .await;
    answer.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(web.get_user(&web_user).await.unwrap().tokens_used_today, 0);
}

async fn a_plan_can_forbid_adult_content(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        adult_rule(c);
        c.moderation.adult_forbidden_plans = vec!["free".into()];
    })
    .await;
    let dc = app.frontend(Platform::Discord, DC_BOT).await;
    let nsfw = JobContext::discord(Some(true));
    refused(&dc, &with(dc_job("discord:3", "nude"), nsfw.clone())).await;
    // A benign job in the NSFW channel: made, but its outputs may not be adult.
    assert!(!created(&app, &dc, &with(dc_job("discord:3", "a cat"), nsfw.clone())).await);
    app.admin
        .set_plan("discord:3", &"pro".parse().unwrap())
        .await
        .unwrap();
    assert!(created(&app, &dc, &with(dc_job("discord:3", "nude"), nsfw)).await);
}

backend_tests!(
    discord_nsfw_channels_allow_adult_prompts,
    telegram_groups_allow_adult_prompts_once_admins_turn_it_on,
    website_accounts_allow_adult_prompts_once_they_confirm_their_age,
    a_context_of_another_kind_of_frontend_is_refused,
    a_plan_can_forbid_adult_content,
);
