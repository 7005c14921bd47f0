//! Website accounts, link codes and linked bot users, and each web bot as
//! its own trust domain.

use std::time::Duration;

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::json;

use tessera_api::public::{Credentials, LinkCode, ListJobsQuery};
use tessera_core::{Capability, JobState, Platform};
use tessera_testkit::{backend_tests, Backend, TestApp};

use crate::common::*;

// ---- accounts and links ----

fn credentials(email: &str, password: &str) -> Credentials {
    Credentials {
        email: email.to_owned(),
        password: password.to_owned(),
    }
}

const CODE_ALPHABET: &str = "23456789ABCDEFGHJKMNPQRSTUVWXYZ";

/// A link code as issued: `XXXX-XXXX` from the unambiguous alphabet, valid
/// for ten minutes.
#[track_caller]
fn check_code(code: &LinkCode) {
    let (a, b) = code.code.split_once('-').expect("two groups");
    assert_eq!((a.len(), b.len()), (4, 4), "{}", code.code);
    assert!(
        a.chars()
            .chain(b.chars())
            .all(|c| CODE_ALPHABET.contains(c)),
        "{}",
        code.code
    );
    let ttl = code.expires_at - Utc::now();
    assert!(
        ttl > chrono::Duration::minutes(9) && ttl <= chrono::Duration::minutes(10),
        "expires in {ttl}"
    );
}

async fn accounts_sign_up_and_sign_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let web_key = app.key(Platform::Web, WEB).await;
    let web = app.client_with(&web_key);
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;

    let created = send(
        raw(&app, Method::POST, "/api/v1/accounts")
            .bearer_auth(&web_key)
            .json(&json!({"email": "  Ada@Example.ORG ", "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert!(
        !created.body.to_string().contains("argon2") && !created.body.to_string().contains("horse"),
        "neither the password nor its hash is shown: {}",
        created.body
    );
    let ada: tessera_api::public::AccountView =
        serde_json::from_value(created.body).expect("an account");
    assert_eq!(ada.user_ref.platform(), Platform::Web);
    let id = ada.user_ref.platform_user_id();
    assert_eq!(id.len(), 26, "a ULID: {id}");
    assert_eq!(id, id.to_lowercase());
    assert_eq!(ada.email, "ada@example.org");
    assert!(ada.linked.is_empty());
    // On the default plan, like any new user.
    let quota = web.get_user(&ada.user_ref).await.unwrap();
    assert_eq!(
        (quota.plan.id.as_str(), quota.tokens_used_today),
        ("free", 0)
    );

    // One account per email, whatever its case.
    for email in ["ada@example.org", "ADA@example.org"] {
        let e = api_error(
            web.create_account(&credentials(email, "another password"))
                .await,
            StatusCode::CONFLICT,
            "email_taken",
        );
        assert_eq!(e.field.as_deref(), Some("email"));
    }
    for email in [
        "",
        "ada",
        "@example.org",
        "ada@example",
        "ada@.example.org",
        "ada@example.org.",
        "ada@@example.org",
        "ada lovelace@example.org",
        "ada@exa\u{0}mple.org",
        &format!("{}@example.org", "a".repeat(243)),
    ] {
        let e = api_error(
            web.create_account(&credentials(email, "correct horse battery"))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_email",
        );
        assert_eq!(e.field.as_deref(), Some("email"), "{email:?}");
    }
    for password in ["", "7 chars", &"p".repeat(257)] {
        let e = api_error(
            web.create_account(&credentials("bob@example.org", password))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "weak_password",
        );
        assert_eq!(e.field.as_deref(), Some("password"));
    }
    // Characters are counted, not bytes: eight of them will do, 256 too.
    web.create_account(&credentials("bob@example.org", "пароль12"))
        .await
        .unwrap();
    web.create_account(&credentials("cy@example.org", &"p".repeat(256)))
        .await
        .unwrap();

    // Signing in: the email as typed, the password exactly.
    let signed = web
        .sign_in(&credentials(" ADA@example.org", "correct horse battery"))
        .await
        .unwrap();
    assert_eq!(signed, ada);
    let wrong = api_error(
        web.sign_in(&credentials("ada@example.org", "correct horse batterY"))
            .await,
        StatusCode::FORBIDDEN,
        "sign_in_failed",
    );
    // An unknown email gets the very same answer.
    for email in ["eve@example.org", "not an email"] {
        let unknown = api_error(
            web.sign_in(&credentials(email, "correct horse battery"))
                .await,
            StatusCode::FORBIDDEN,
            "sign_in_failed",
        );
        assert_eq!(unknown, wrong);
    }

    assert_eq!(web.get_account(&ada.user_ref).await.unwrap(), ada);
    api_error(
        web.get_account("web:nobody").await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );
    // A web user seen through jobs only has no account either.
    web.create_job(
        &image_job(Platform::Web, WEB, "web:anon", prompt("x")),
        None,
    )
    .await
    .unwrap();
    api_error(
        web.get_account("web:anon").await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );
    api_error(
        web.get_account("telegram:1").await,
        StatusCode::FORBIDDEN,
        "forbidden_user_ref",
    );

    // Accounts are the website's: bots' keys are refused before anything is read.
    let ada_creds = credentials("ada@example.org", "correct horse battery");
    api_error(
        tg.create_account(&credentials("tg@example.org", "correct horse battery"))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden_frontend",
    );
    api_error(
        tg.sign_in(&ada_creds).await,
        StatusCode::FORBIDDEN,
        "forbidden_frontend",
    );
    api_error(
        tg.get_account(&ada.user_ref).await,
        StatusCode::FORBIDDEN,
        "forbidden_frontend",
    );
    api_error(
        tg.redeem_link_code(&ada.user_ref, "K7QF-M2XD").await,
        StatusCode::FORBIDDEN,
        "forbidden_frontend",
    );
    // Link codes are for bot users on the key's own platform.
    let e = api_error(
        web.create_link_code(&ada.user_ref).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "not_linkable",
    );
    assert_eq!(e.field.as_deref(), Some("user_ref"));
    api_error(
        tg.create_link_code(&"discord:1".parse().unwrap()).await,
        StatusCode::FORBIDDEN,
        "forbidden_user_ref",
    );
    // A typed client cannot send a malformed reference; the wire can.
    let tg_key = app.key(Platform::Telegram, TG_BOT).await;
    send(
        raw(&app, Method::POST, "/api/v1/link-codes")
            .bearer_auth(&tg_key)
            .json(&json!({"user_ref": "telegram:"})),
    )
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_user_ref");
    // Unknown fields are refused, as everywhere.
    send(
        raw(&app, Method::POST, "/api/v1/accounts/sign-in")
            .bearer_auth(&web_key)
            .json(&json!({"email": "ada@example.org", "password": "correct horse battery", "admin": true})),
    )
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    app.shutdown().await;
}

async fn linked_bot_users_share_the_accounts_plan_and_quota(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let web = app.frontend(Platform::Web, WEB).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let dc = app.frontend(Platform::Discord, DC_BOT).await;
    let ada = web
        .create_account(&credentials("ada@example.org", "correct horse battery"))
        .await
        .unwrap();

    // The bot user asks for a code (and is created on first sight)...
    let code = tg
        .create_link_code(&"telegram:42".parse().unwrap())
        .await
        .unwrap();
    check_code(&code);
    assert_eq!(tg.get_user("telegram:42").await.unwrap().plan.id, "free");
    // ...asking again replaces it...
    let code_2 = tg
        .create_link_code(&"telegram:42".parse().unwrap())
        .await
        .unwrap();
    check_code(&code_2);
    assert_ne!(code_2.code, code.code);
    let e = api_error(
        web.redeem_link_code(&ada.user_ref, &code.code).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_link_code",
    );
    assert_eq!(e.field.as_deref(), Some("code"));
    // ...a web user without an account cannot use it (and it is not spent)...
    api_error(
        web.redeem_link_code("web:nobody", &code_2.code).await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );
    // ...and the website redeems it, typed loosely, for the signed-in account.
    let typed = code_2.code.to_lowercase().replace('-', " ");
    let linked = web.redeem_link_code(&ada.user_ref, &typed).await.unwrap();
    assert_eq!(linked.linked, ["telegram:42"]);
    assert_eq!(web.get_account(&ada.user_ref).await.unwrap(), linked);
    // A code links once.
    api_error(
        web.redeem_link_code(&ada.user_ref, &code_2.code).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_link_code",
    );
    for garbage in ["", "K7QF", "K7QF-M2XD-9", "0000-0000", "\u{0}"] {
        api_error(
            web.redeem_link_code(&ada.user_ref, garbage).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_link_code",
        );
    }

    // One quota: a job from Telegram and one from the website are charged
    // to the account, and both users see the same day.
    let web_job =
        |text: &str| image_job(Platform::Web, WEB, &ada.user_ref.to_string(), prompt(text));
    let tg_first = tg
        .create_job(&tg_job("telegram:42", prompt("from telegram")), None)
        .await
        .unwrap()
        .job;
    web.create_job(&web_job("from the website"), None)
        .await
        .unwrap();
    let seen_by_bot = tg.get_user("telegram:42").await.unwrap();
    let seen_by_web = web.get_user(&ada.user_ref).await.unwrap();
    assert_eq!(
        (seen_by_bot.tokens_used_today, seen_by_bot.tokens_left_today),
        (2, Some(18))
    );
    assert_eq!(
        (seen_by_web.tokens_used_today, seen_by_web.tokens_left_today),
        (2, Some(18))
    );
    assert_eq!(seen_by_bot.plan, seen_by_web.plan);
    // Spent from both sides, it is spent for both.
    for i in 0..18 {
        if i % 2 == 0 {
            tg.create_job(&tg_job("telegram:42", prompt("x")), None)
                .await
                .unwrap();
        } else {
            web.create_job(&web_job("x"), None).await.unwrap();
        }
    }
    api_error(
        tg.create_job(&tg_job("telegram:42", prompt("one more")), None)
            .await,
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exhausted",
    );
    api_error(
        web.create_job(&web_job("one more"), None).await,
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exhausted",
    );
    // A refund frees a token for both.
    tg.cancel_job(&tg_first.job_id).await.unwrap();
    assert_eq!(
        web.get_user(&ada.user_ref).await.unwrap().tokens_used_today,
        19
    );
    web.create_job(&web_job("the freed token"), None)
        .await
        .unwrap();
    api_error(
        tg.create_job(&tg_job("telegram:42", prompt("x")), None)
            .await,
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exhausted",
    );

    // One plan: putting the bot user on a plan puts the account on it.
    let upgraded = app
        .admin
        .set_plan("telegram:42", &"pro".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (
            upgraded.plan.id.as_str(),
            upgraded.tokens_used_today,
            upgraded.tokens_left_today
        ),
        ("pro", 20, Some(280))
    );
    let account_quota = web.get_user(&ada.user_ref).await.unwrap();
    assert_eq!(
        (
            account_quota.plan.id.as_str(),
            account_quota.tokens_left_today
        ),
        ("pro", Some(280))
    );
    let big = tg_job(
        "telegram:42",
        json!({"prompt": "x", "resolution": "2048x2048"}),
    );
    assert_eq!(tg.create_job(&big, None).await.unwrap().job.cost_tokens, 4);

    // A Discord user links to the same account.
    let dc_code = dc
        .create_link_code(&"discord:9".parse().unwrap())
        .await
        .unwrap();
    check_code(&dc_code);
    let linked = web
        .redeem_link_code(&ada.user_ref, &dc_code.code)
        .await
        .unwrap();
    assert_eq!(linked.linked, ["discord:9", "telegram:42"]);
    assert_eq!(
        dc.get_user("discord:9").await.unwrap().tokens_used_today,
        24
    );

    // Linking again elsewhere moves the bot user: its quota is the new account's.
    let bob = web
        .create_account(&credentials("bob@example.org", "another password"))
        .await
        .unwrap();
    let moved = tg
        .create_link_code(&"telegram:42".parse().unwrap())
        .await
        .unwrap();
    let bob = web
        .redeem_link_code(&bob.user_ref, &moved.code)
        .await
        .unwrap();
    assert_eq!(bob.linked, ["telegram:42"]);
    assert_eq!(
        web.get_account(&ada.user_ref).await.unwrap().linked,
        ["discord:9"]
    );
    let now_bobs = tg.get_user("telegram:42").await.unwrap();
    assert_eq!(
        (now_bobs.plan.id.as_str(), now_bobs.tokens_used_today),
        ("free", 0)
    );
    tg.create_job(&tg_job("telegram:42", prompt("on bob")), None)
        .await
        .unwrap();
    assert_eq!(
        web.get_user(&bob.user_ref).await.unwrap().tokens_used_today,
        1
    );
    assert_eq!(
        web.get_user(&ada.user_ref).await.unwrap().tokens_used_today,
        24
    );

    // A bot user's own paid plan is not lost by linking: the account takes
    // the better of the two, and a worse one never lowers it.
    app.admin
        .set_plan("discord:77", &"starter".parse().unwrap())
        .await
        .unwrap();
    let cat = web
        .create_account(&credentials("cat@example.org", "correct horse battery"))
        .await
        .unwrap();
    let code = dc
        .create_link_code(&"discord:77".parse().unwrap())
        .await
        .unwrap();
    web.redeem_link_code(&cat.user_ref, &code.code)
        .await
        .unwrap();
    assert_eq!(
        web.get_user(&cat.user_ref).await.unwrap().plan.id,
        "starter"
    );
    assert_eq!(dc.get_user("discord:77").await.unwrap().plan.id, "starter");
    let code = tg
        .create_link_code(&"telegram:88".parse().unwrap())
        .await
        .unwrap();
    web.redeem_link_code(&cat.user_ref, &code.code)
        .await
        .unwrap();
    assert_eq!(
        web.get_user(&cat.user_ref).await.unwrap().plan.id,
        "starter"
    );

    // What each user id was charged is what its jobs cost, refunds included.
    let checked = tessera_testkit::invariants::check(&**app.store(), &[], None, false).await;
    assert_eq!(checked.tokens_charged, 24 + 1);
    app.shutdown().await;
}

/// Each web bot id is its own trust domain: a second web key (the `demo` key
/// `tessera up` prints) cannot use the website's accounts, nor see its jobs.
/// Web users that are no account stay anyone's.
async fn each_web_bot_is_its_own_trust_domain(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let web = app.frontend(Platform::Web, WEB).await;
    let demo = app.frontend(Platform::Web, DEMO).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let password = "correct horse battery";
    let ada_creds = credentials("ada@example.org", password);
    let ada = web.create_account(&ada_creds).await.unwrap();

    // To the demo key, the website's account does not exist: signing in
    // fails as for an unknown email, reading and linking find no account.
    let unknown = api_error(
        demo.sign_in(&credentials("eve@example.org", password))
            .await,
        StatusCode::FORBIDDEN,
        "sign_in_failed",
    );
    let foreign = api_error(
        demo.sign_in(&ada_creds).await,
        StatusCode::FORBIDDEN,
        "sign_in_failed",
    );
    assert_eq!(foreign, unknown);
    let nobody = api_error(
        demo.get_account("web:nobody").await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );
    assert_eq!(
        api_error(
            demo.get_account(&ada.user_ref).await,
            StatusCode::NOT_FOUND,
            "account_not_found",
        ),
        nobody
    );
    let code = tg
        .create_link_code(&"telegram:42".parse().unwrap())
        .await
        .unwrap();
    api_error(
        demo.redeem_link_code(&ada.user_ref, &code.code).await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );
    // Emails are unique across websites.
    api_error(
        demo.create_account(&credentials("ada@example.org", "another password"))
            .await,
        StatusCode::CONFLICT,
        "email_taken",
    );
    // The demo key's own accounts are its own, and not the website's.
    let dee_creds = credentials("dee@example.org", password);
    let dee = demo.create_account(&dee_creds).await.unwrap();
    assert_eq!(demo.sign_in(&dee_creds).await.unwrap(), dee);
    assert_eq!(demo.get_account(&dee.user_ref).await.unwrap(), dee);
    api_error(
        web.sign_in(&dee_creds).await,
        StatusCode::FORBIDDEN,
        "sign_in_failed",
    );
    api_error(
        web.get_account(&dee.user_ref).await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );
    // The website's key still does all of it; the code was not spent.
    assert_eq!(web.sign_in(&ada_creds).await.unwrap(), ada);
    let linked = web
        .redeem_link_code(&ada.user_ref, &code.code)
        .await
        .unwrap();
    assert_eq!(linked.linked, ["telegram:42"]);

    // The demo key may neither create jobs for the account nor read its quota.
    let ada_job = |bot: &str, text: &str| {
        image_job(Platform::Web, bot, &ada.user_ref.to_string(), prompt(text))
    };
    let e = api_error(
        demo.create_job(&ada_job(DEMO, "on ada's tokens"), None)
            .await,
        StatusCode::FORBIDDEN,
        "forbidden_user_ref",
    );
    assert!(e.message.contains("another website"), "{}", e.message);
    api_error(
        demo.get_user(&ada.user_ref).await,
        StatusCode::FORBIDDEN,
        "forbidden_user_ref",
    );
    assert_eq!(
        web.get_user(&ada.user_ref).await.unwrap().tokens_used_today,
        0,
        "nothing was charged"
    );
    let ada_first = web
        .create_job(&ada_job(WEB, "mine"), None)
        .await
        .unwrap()
        .job;
    let ada_second = web
        .create_job(&ada_job(WEB, "mine too"), None)
        .await
        .unwrap()
        .job;
    // A web user that is no account is anyone's, as in the demo.
    let mut demos = Vec::new();
    for (client, bot) in [(&web, WEB), (&demo, DEMO)] {
        let job = client
            .create_job(
                &image_job(Platform::Web, bot, "web:me", prompt("shared")),
                None,
            )
            .await
            .unwrap()
            .job;
        if bot == DEMO {
            demos.push(job.job_id);
        }
        assert_eq!(client.get_user("web:me").await.unwrap().user_ref, "web:me");
    }
    assert_eq!(demo.get_user("web:me").await.unwrap().tokens_used_today, 2);

    // Each web key sees only its own bot's jobs, as if the others did not exist.
    cannot_reach(&demo, &[&ada_first.job_id, &ada_second.job_id]).await;
    api_error(
        web.get_job(&demos[0]).await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    );
    let theirs = demo.list_jobs(&ListJobsQuery::default()).await.unwrap();
    assert_eq!(ids(&theirs.jobs), demos);
    assert!(demo
        .list_jobs(&by_user(&ada.user_ref.to_string()))
        .await
        .unwrap()
        .jobs
        .is_empty());
    let own = ListJobsQuery {
        bot_id: Some(DEMO.parse().unwrap()),
        ..Default::default()
    };
    assert_eq!(ids(&demo.list_jobs(&own).await.unwrap().jobs), demos);
    let snooping = ListJobsQuery {
        bot_id: Some(WEB.parse().unwrap()),
        ..Default::default()
    };
    api_error(
        demo.list_jobs(&snooping).await,
        StatusCode::FORBIDDEN,
        "forbidden_bot",
    );
    let mine = web.list_jobs(&ListJobsQuery::default()).await.unwrap();
    assert_eq!(mine.jobs.len(), 3);
    assert!(mine.jobs.iter().all(|j| j.bot_id == WEB));
    // A Telegram key still sees every Telegram bot's jobs, and no web job.
    assert!(tg
        .list_jobs(&ListJobsQuery::default())
        .await
        .unwrap()
        .jobs
        .is_empty());
    web.cancel_job(&ada_second.job_id).await.unwrap();

    // Ended, with an artifact: still the website's alone (cancelling an
    // ended job of another bot is not `job_finished`, which would tell it exists).
    let worker = app
        .worker(
            "worker-gpu-0",
            vec![tessera_testkit::sim(Capability::Image, &["sdxl-1.0"], 0)],
        )
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        let job = web.get_job(&ada_first.job_id).await.unwrap();
        if job.status == JobState::Completed {
            break job;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never completed: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    cannot_reach(&demo, &[&ada_first.job_id, &ada_second.job_id]).await;
    let url = &done.artifacts[0].url;
    api_error(
        demo.download(url).await,
        StatusCode::NOT_FOUND,
        "artifact_not_found",
    );
    assert!(!web.download(url).await.unwrap().is_empty());
    assert!(web
        .mark_delivered(&ada_first.job_id)
        .await
        .unwrap()
        .delivered_at
        .is_some());
    api_error(
        web.cancel_job(&ada_first.job_id).await,
        StatusCode::CONFLICT,
        "job_finished",
    );
    worker.shutdown().await.unwrap();
    app.shutdown().await;
}

backend_tests!(
    accounts_sign_up_and_sign_in,
    linked_bot_users_share_the_accounts_plan_and_quota,
    each_web_bot_is_its_own_trust_domain,
);
