//! `tessera admin payments` as an operator runs it: the real binary against
//! the real scheduler, granting a plan until a date, listing the ledger and
//! revoking, with the API's refusals printed as errors.

mod common;

use serde_json::Value;

use tessera_testkit::{backend_tests, Backend, TestApp};

use common::admin::admin;

async fn operators_grant_list_and_revoke_from_the_command_line(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (ok, out, err) = admin(
        &app,
        &[
            "--json",
            "payments",
            "grant",
            "telegram:5",
            "pro",
            "--until",
            "2099-01-31",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    let granted: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(granted["kind"], "admin_grant");
    assert_eq!(granted["outcome"], "applied");
    // A date is the end of that day, UTC.
    assert_eq!(granted["period_end"], "2099-02-01T00:00:00Z");

    let (ok, out, err) = admin(&app, &["payments", "list", "--user-ref", "telegram:5"]).await;
    assert!(ok, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ID"), "{out}");
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[1].contains("admin_grant") && lines[1].contains("telegram:5 is now on pro"),
        "{out}"
    );

    let (ok, out, err) = admin(&app, &["payments", "revoke", "telegram:5"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("telegram:5 is now on free"), "{out}");
    let (ok, _, err) = admin(&app, &["payments", "revoke", "telegram:5"]).await;
    assert!(!ok);
    assert!(err.contains("grant_not_found"), "{err}");
    let (ok, _, err) = admin(
        &app,
        &[
            "payments",
            "grant",
            "telegram:5",
            "pro",
            "--until",
            "next tuesday",
        ],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("neither a date"), "{err}");
}

backend_tests!(operators_grant_list_and_revoke_from_the_command_line);
