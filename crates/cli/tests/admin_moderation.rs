//! `tessera admin users suspend|ban|lift|sanctions` and `tessera admin
//! moderation queue|show|decide|audit` as an operator runs them: the real
//! binary against the real scheduler, with the API's refusals printed as
//! errors.

mod common;

use serde_json::Value;

use tessera_api::public::CreateJobRequest;
use tessera_api::review::ReportRequest;
use tessera_core::{Capability, Platform};
use tessera_testkit::{backend_tests, Backend, TestApp};

use common::admin::admin;

fn job(user: &str) -> CreateJobRequest {
    CreateJobRequest {
        callback_url: None,
        frontend: Platform::Telegram,
        bot_id: "tg-image-bot-1".parse().unwrap(),
        user_ref: user.parse().unwrap(),
        capability: Capability::Image,
        params: serde_json::json!({"prompt": "a fox"}),
        reply_context: None,
        context: None,
    }
}

async fn operators_suspend_review_and_read_the_audit_from_the_command_line(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg = app.frontend(Platform::Telegram, "tg-image-bot-1").await;

    let (ok, out, err) = admin(
        &app,
        &[
            "users",
            "suspend",
            "telegram:5",
            "--reason",
            "spam",
            "--until",
            "2099-01-31",
            "--actor",
            "ada",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("telegram:5 is suspended until 2099-02-01 00:00 UTC"),
        "{out}"
    );
    let e = tg.create_job(&job("telegram:5"), None).await.unwrap_err();
    assert_eq!(e.code(), Some("user_suspended"));
    let (ok, out, err) = admin(&app, &["--json", "users", "sanctions", "telegram:5"]).await;
    assert!(ok, "{out}{err}");
    let all: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(all["active"]["kind"], "suspension");
    assert_eq!(all["active"]["placed_by"], "admin:ada");
    let (ok, out, err) = admin(&app, &["users", "lift", "telegram:5"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("lifted 1 sanction of telegram:5"), "{out}");
    let (ok, _, err) = admin(&app, &["users", "lift", "telegram:5"]).await;
    assert!(!ok);
    assert!(err.contains("no_sanction"), "{err}");
    let (ok, _, err) = admin(
        &app,
        &[
            "users",
            "ban",
            "telegram:5",
            "--reason",
            "x",
            "--until",
            "soon",
        ],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("neither a date"), "{err}");

    // A report opens a case; the operator reads and decides it.
    let created = tg.create_job(&job("telegram:6"), None).await.unwrap();
    let report = tg
        .report_job(
            &created.job.job_id,
            &ReportRequest {
                user_ref: "telegram:7".parse().unwrap(),
                reason: "offensive".into(),
            },
        )
        .await
        .unwrap();
    let (ok, out, err) = admin(&app, &["moderation", "queue", "--status", "open"]).await;
    assert!(ok, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("CASE"), "{out}");
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[1].contains("report") && lines[1].contains("telegram:6"),
        "{out}"
    );
    let case = report.case_id.to_string();
    let (ok, out, err) = admin(&app, &["moderation", "show", &case]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("telegram:7 (telegram): offensive"), "{out}");
    assert!(out.contains(&created.job.job_id.to_string()), "{out}");
    let (ok, out, err) = admin(
        &app,
        &[
            "moderation",
            "decide",
            &case,
            "ban",
            "--note",
            "repeat offender",
            "--actor",
            "bo",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("case {case} decided: ban")), "{out}");
    let e = tg.create_job(&job("telegram:6"), None).await.unwrap_err();
    assert_eq!(e.code(), Some("user_banned"));
    let (ok, _, err) = admin(&app, &["moderation", "decide", &case, "dismiss"]).await;
    assert!(!ok);
    assert!(err.contains("case_decided"), "{err}");

    let (ok, out, err) = admin(&app, &["--json", "moderation", "audit"]).await;
    assert!(ok, "{out}{err}");
    let log: Value = serde_json::from_str(&out).expect("JSON");
    let actions: Vec<(&str, &str)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("decide", "admin:bo"),
            ("ban", "admin:bo"),
            ("lift", "admin"),
            ("suspend", "admin:ada")
        ]
    );
    app.shutdown().await;
}

backend_tests!(operators_suspend_review_and_read_the_audit_from_the_command_line);
