//! People, through the API: suspensions and bans refuse creates with their
//! codes and cost nothing, end at their end and can be lifted; linked users
//! share them; a child-safety refusal suspends its user and opens a case;
//! reports open one case per job and a repeat is one; repeated refusals
//! open a case; decisions are final and every action is in the audit log.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use tessera_api::public::Credentials;
use tessera_api::review::{
    AuditQuery, CaseKind, CaseStatus, DecideRequest, Decision, LiftRequest, ListCasesQuery,
    ReportRequest, SanctionKind, SanctionRequest,
};
use tessera_api::Client;
use tessera_core::{Platform, UserRef};
use tessera_testkit::{backend_tests, Backend, TestApp};

use crate::common::*;

fn user(text: &str) -> UserRef {
    text.parse().unwrap()
}

fn because(reason: &str) -> SanctionRequest {
    SanctionRequest {
        reason: reason.into(),
        until: None,
        actor: None,
    }
}

fn admin(app: &TestApp) -> Client {
    app.client_with(&app.admin_token)
}

/// `tessera_moderation_<family>_total` lines with all `labels`, summed.
async fn counted(app: &TestApp, family: &str, labels: &[(&str, &str)]) -> u64 {
    counter(app, &format!("tessera_moderation_{family}_total"), labels).await
}

async fn suspensions_and_bans_refuse_creates_end_and_lift(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let admin = admin(&app);

    // A suspension with an end: refused with the code, saying until when,
    // costing nothing; then it ends by itself.
    let until = chrono::Utc::now() + chrono::Duration::milliseconds(1_500);
    let s = admin
        .sanction_user(
            &user("telegram:20"),
            SanctionKind::Suspension,
            &SanctionRequest {
                until: Some(until),
                actor: Some("ada".into()),
                ..because("spam")
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (s.kind, s.placed_by.as_str()),
        (SanctionKind::Suspension, "admin:ada")
    );
    let e = api_error(
        tg.create_job(&tg_job("telegram:20", prompt("a fox")), None)
            .await,
        StatusCode::FORBIDDEN,
        "user_suspended",
    );
    assert!(
        e.message
            .contains(&format!("until {}", until.format("%Y-%m-%d %H:%M UTC"))),
        "{}",
        e.message
    );
    assert!(
        !e.message.contains("spam"),
        "the reason stays with operators"
    );
    assert_eq!(
        tg.get_user("telegram:20").await.unwrap().tokens_used_today,
        0
    );
    assert!(list_all(&tg, by_user("telegram:20"), false)
        .await
        .is_empty());
    tokio::time::sleep_until(
        tokio::time::Instant::now()
            + (until - chrono::Utc::now()).to_std().unwrap_or_default()
            + Duration::from_millis(100),
    )
    .await;
    tg.create_job(&tg_job("telegram:20", prompt("a fox")), None)
        .await
        .expect("the suspension ended");

    // A ban, until lifted; a user never seen is created for it.
    admin
        .sanction_user(&user("telegram:21"), SanctionKind::Ban, &because("abuse"))
        .await
        .unwrap();
    let e = api_error(
        tg.create_job(&tg_job("telegram:21", prompt("a fox")), None)
            .await,
        StatusCode::FORBIDDEN,
        "user_banned",
    );
    assert!(
        e.message.contains("banned until the operators lift it"),
        "{}",
        e.message
    );
    let sanctions = admin.user_sanctions(&user("telegram:21")).await.unwrap();
    assert_eq!(sanctions.active.map(|s| s.kind), Some(SanctionKind::Ban));
    let lifted = admin
        .lift_sanctions(&user("telegram:21"), &LiftRequest::default())
        .await
        .unwrap();
    assert_eq!(lifted.lifted.len(), 1);
    tg.create_job(&tg_job("telegram:21", prompt("a fox")), None)
        .await
        .expect("lifted");
    api_error(
        admin
            .lift_sanctions(&user("telegram:21"), &LiftRequest::default())
            .await,
        StatusCode::NOT_FOUND,
        "no_sanction",
    );

    // Bad requests are refused plainly.
    let past = SanctionRequest {
        until: Some(chrono::Utc::now() - chrono::Duration::minutes(1)),
        ..because("x")
    };
    api_error(
        admin
            .sanction_user(&user("telegram:22"), SanctionKind::Ban, &past)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_period",
    );
    api_error(
        admin
            .sanction_user(&user("telegram:22"), SanctionKind::Ban, &because(""))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    let bad_actor = SanctionRequest {
        actor: Some("system with spaces".into()),
        ..because("x")
    };
    api_error(
        admin
            .sanction_user(&user("telegram:22"), SanctionKind::Ban, &bad_actor)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    assert_eq!(
        counted(
            &app,
            "sanctions",
            &[("kind", "ban"), ("channel", "telegram")]
        )
        .await,
        1
    );
    assert_eq!(
        counted(&app, "sanctions", &[("kind", "suspension")]).await,
        1
    );

    // Every action is in the audit log, with who took it.
    let log = admin.audit_log(&AuditQuery::default()).await.unwrap();
    assert_eq!(
        log.entries
            .iter()
            .map(|a| (a.action.as_str(), a.actor.as_str()))
            .collect::<Vec<_>>(),
        [
            ("lift", "admin"),
            ("ban", "admin"),
            ("suspend", "admin:ada")
        ]
    );
    app.shutdown().await;
}

async fn linked_users_share_a_ban(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let web = app.frontend(Platform::Web, WEB).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let ada = web
        .create_account(&Credentials {
            email: "ada@example.org".into(),
            password: "correct horse battery".into(),
        })
        .await
        .unwrap();
    let code = tg.create_link_code(&user("telegram:42")).await.unwrap();
    web.redeem_link_code(&ada.user_ref, &code.code)
        .await
        .unwrap();

    // Banning the chat user bans the website account too.
    admin(&app)
        .sanction_user(&user("telegram:42"), SanctionKind::Ban, &because("abuse"))
        .await
        .unwrap();
    api_error(
        web.create_job(
            &image_job(
                Platform::Web,
                WEB,
                &ada.user_ref.to_string(),
                prompt("a fox"),
            ),
            None,
        )
        .await,
        StatusCode::FORBIDDEN,
        "user_banned",
    );
    // Lifted through the account, both may create again.
    admin(&app)
        .lift_sanctions(&ada.user_ref, &LiftRequest::default())
        .await
        .unwrap();
    tg.create_job(&tg_job("telegram:42", prompt("a fox")), None)
        .await
        .expect("lifted for the chat user too");
    app.shutdown().await;
}

async fn a_child_safety_refusal_suspends_and_opens_a_case(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let admin = admin(&app);
    api_error(
        tg.create_job(&tg_job("telegram:30", prompt("a n4ked ch1ld")), None)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "prompt_refused",
    );
    let e = api_error(
        tg.create_job(&tg_job("telegram:30", prompt("a red fox")), None)
            .await,
        StatusCode::FORBIDDEN,
        "user_suspended",
    );
    assert!(e.message.contains("pending a review"), "{}", e.message);
    assert_eq!(
        counted(
            &app,
            "sanctions",
            &[("kind", "suspension"), ("channel", "telegram")]
        )
        .await,
        1
    );

    let queue = admin
        .list_cases(&ListCasesQuery {
            kind: Some(CaseKind::ChildSafety),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(queue.cases.len(), 1);
    let case = &queue.cases[0];
    assert_eq!(
        (case.user_ref.clone(), case.status),
        (user("telegram:30"), CaseStatus::Open)
    );
    let detail = admin.get_case(case.case_id).await.unwrap();
    assert_eq!(detail.refusals.len(), 1);
    assert_eq!(detail.refusals[0].rule, "child_safety");
    assert_eq!(detail.refusals[0].excerpt, "child … naked");
    let sanction = detail.sanction.expect("suspended");
    assert_eq!(
        (sanction.placed_by.as_str(), sanction.until),
        ("system", None)
    );

    // The review finds it unwarranted: lifted, and recorded.
    let decided = admin
        .decide_case(
            case.case_id,
            &DecideRequest {
                decision: Decision::Lift,
                until: None,
                note: Some("a typo, not what it looks like".into()),
                actor: Some("bo".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(decided.lifted.len(), 1);
    assert_eq!(decided.case.decided_by.as_deref(), Some("admin:bo"));
    tg.create_job(&tg_job("telegram:30", prompt("a red fox")), None)
        .await
        .expect("lifted");
    let log = admin
        .audit_log(&AuditQuery {
            user_ref: Some(user("telegram:30")),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        log.entries
            .iter()
            .map(|a| (a.action.as_str(), a.actor.as_str()))
            .collect::<Vec<_>>(),
        [
            ("decide", "admin:bo"),
            ("lift", "admin:bo"),
            ("auto_suspend", "system")
        ]
    );
    app.shutdown().await;
}

async fn reports_open_one_case_and_decisions_are_final(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let dc = app.frontend(Platform::Discord, DC_BOT).await;
    let admin = admin(&app);
    let job = tg
        .create_job(&tg_job("telegram:40", prompt("a fox")), None)
        .await
        .unwrap()
        .job
        .job_id;
    let report = |who: &str, reason: &str| ReportRequest {
        user_ref: user(who),
        reason: reason.into(),
    };
    let first = tg
        .report_job(&job, &report("telegram:41", "offensive"))
        .await
        .unwrap();
    let again = tg
        .report_job(&job, &report("telegram:41", "really"))
        .await
        .unwrap();
    assert_eq!(again, first, "a repeat answers the first report");
    let other = tg
        .report_job(&job, &report("telegram:43", "gross"))
        .await
        .unwrap();
    assert_eq!(other.case_id, first.case_id, "one case per job");
    assert_eq!(
        counted(&app, "reports", &[("channel", "telegram")]).await,
        2
    );
    // A reporter of another platform, another frontend's job, no job.
    api_error(
        tg.report_job(&job, &report("discord:1", "x")).await,
        StatusCode::FORBIDDEN,
        "forbidden_user_ref",
    );
    api_error(
        dc.report_job(&job, &report("discord:1", "x")).await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    );
    api_error(
        tg.report_job(&job, &report("telegram:41", "")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    let raw = send(
        raw(
            &app,
            reqwest::Method::POST,
            &format!("/api/v1/jobs/{job}/reports"),
        )
        .bearer_auth(app.key(Platform::Telegram, TG_BOT).await)
        .json(&json!({"user_ref": "nobody", "reason": "x"})),
    )
    .await;
    raw.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_user_ref");

    let queue = admin.list_cases(&ListCasesQuery::default()).await.unwrap();
    assert_eq!(queue.cases.len(), 1);
    let detail = admin.get_case(first.case_id).await.unwrap();
    assert_eq!(detail.case.kind, CaseKind::Report);
    assert_eq!(
        detail.case.user_ref,
        user("telegram:40"),
        "about the job's owner"
    );
    assert_eq!(
        detail
            .reports
            .iter()
            .map(|r| r.reason.as_str())
            .collect::<Vec<_>>(),
        ["offensive", "gross"]
    );
    let evidence = detail.job.expect("the job");
    assert_eq!(evidence.job_id, job);
    assert_eq!(evidence.params["prompt"], "a fox");

    let decided = admin
        .decide_case(
            first.case_id,
            &DecideRequest {
                decision: Decision::Ban,
                until: None,
                note: None,
                actor: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(decided.sanction.map(|s| s.kind), Some(SanctionKind::Ban));
    api_error(
        tg.create_job(&tg_job("telegram:40", prompt("a fox")), None)
            .await,
        StatusCode::FORBIDDEN,
        "user_banned",
    );
    let twice = DecideRequest {
        decision: Decision::Dismiss,
        until: None,
        note: None,
        actor: None,
    };
    api_error(
        admin.decide_case(first.case_id, &twice).await,
        StatusCode::CONFLICT,
        "case_decided",
    );
    api_error(
        admin.decide_case(9_999, &twice).await,
        StatusCode::NOT_FOUND,
        "case_not_found",
    );
    api_error(
        admin.get_case(9_999).await,
        StatusCode::NOT_FOUND,
        "case_not_found",
    );
    let open = admin
        .list_cases(&ListCasesQuery {
            status: Some(CaseStatus::Open),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(open.cases.is_empty());
    app.shutdown().await;
}

async fn repeated_refusals_open_a_case_once(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.moderation.review_after_refusals = 2;
        c.moderation.rules = vec![tessera_core::moderation::RuleConfig {
            name: "gore".into(),
            words: vec!["gore".into()],
            action: tessera_core::moderation::Action::Refuse,
            ..tessera_core::moderation::RuleConfig::empty()
        }];
    })
    .await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    for _ in 0..3 {
        api_error(
            tg.create_job(&tg_job("telegram:50", prompt("gore")), None)
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "prompt_refused",
        );
    }
    let queue = admin(&app)
        .list_cases(&ListCasesQuery {
            kind: Some(CaseKind::Refusals),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(queue.cases.len(), 1, "one case while it is open");
    assert_eq!(queue.cases[0].user_ref, user("telegram:50"));
    // Refusals do not suspend: only the child-safety rules do.
    tg.create_job(&tg_job("telegram:50", prompt("a fox")), None)
        .await
        .expect("not suspended");
    app.shutdown().await;
}

backend_tests!(
    suspensions_and_bans_refuse_creates_end_and_lift,
    linked_users_share_a_ban,
    a_child_safety_refusal_suspends_and_opens_a_case,
    reports_open_one_case_and_decisions_are_final,
    repeated_refusals_open_a_case_once,
);
