//! Sanctions, cases, reports, decisions and the audit log, on both backends:
//! sanctions apply to the person and end at their end, cases open once
//! while open, a reporter's repeat report is one, decisions are final and
//! logged, and the audit log refuses to be changed.

use tessera_api::review::{CaseKind, CaseStatus, Decision, SanctionKind};
use tessera_core::{Platform, UserRef};
use tessera_scheduler::store::{
    CaseFilter, ChildSafetyHit, DecideOutcome, NewCase, NewDecision, NewRefusal, NewReport,
    NewSanction, RedeemOutcome, ReportOutcome,
};
use tessera_testkit::{backend_tests, Backend, TestDb};

use crate::common::*;

fn user(text: &str) -> UserRef {
    text.parse().unwrap()
}

fn suspension(who: &str, ends_at: Option<i64>, now: i64) -> NewSanction {
    NewSanction {
        user_ref: user(who),
        kind: SanctionKind::Suspension,
        reason: "spam".into(),
        ends_at,
        actor: "admin:ada".into(),
        case_id: None,
        now,
    }
}

async fn sanctions_end_at_their_end_and_a_ban_comes_first(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let tg = user("telegram:1");
    assert_eq!(store.sanction_in_force(&tg, 100).await.unwrap(), None);

    let s = store
        .place_sanction(&suspension("telegram:1", Some(1_000), 100))
        .await
        .unwrap();
    assert_eq!(
        (s.kind, s.ends_at, s.starts_at),
        (SanctionKind::Suspension, Some(1_000), 100)
    );
    assert_eq!(
        store.sanction_in_force(&tg, 999).await.unwrap(),
        Some(s.clone())
    );
    assert_eq!(
        store.sanction_in_force(&tg, 1_000).await.unwrap(),
        None,
        "ends at its end"
    );
    assert_eq!(
        store
            .sanction_in_force(&user("telegram:2"), 500)
            .await
            .unwrap(),
        None
    );

    let ban = store
        .place_sanction(&NewSanction {
            kind: SanctionKind::Ban,
            ends_at: None,
            ..suspension("telegram:1", None, 200)
        })
        .await
        .unwrap();
    assert_eq!(
        store
            .sanction_in_force(&tg, 300)
            .await
            .unwrap()
            .map(|s| s.id),
        Some(ban.id),
        "a ban refuses before a suspension"
    );
    assert_eq!(store.sanctions_of(&tg).await.unwrap().len(), 2);

    let lifted = store
        .lift_sanctions(&tg, "admin", "appeal", 400)
        .await
        .unwrap();
    assert_eq!(
        lifted.iter().map(|s| s.id).collect::<Vec<_>>(),
        [s.id, ban.id],
        "both were in force"
    );
    assert!(lifted.iter().all(|s| s.lifted_at == Some(400)));
    assert_eq!(store.sanction_in_force(&tg, 401).await.unwrap(), None);
    assert!(store
        .lift_sanctions(&tg, "admin", "again", 500)
        .await
        .unwrap()
        .is_empty());

    let log = store.audit_log(Some(&tg), None, 10).await.unwrap();
    assert_eq!(
        log.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(),
        ["lift", "lift", "ban", "suspend"],
        "newest first"
    );
    assert_eq!(log[3].actor, "admin:ada");
    assert_eq!(log[3].sanction_id, Some(s.id));
    assert_eq!(
        store
            .audit_log(None, Some(log[1].id), 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn a_sanction_on_either_linked_user_applies_to_both(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let web = user("web:ada");
    let tg = user("telegram:7");
    store
        .create_account(&web, "web-1", "ada@example.org", "$argon2id$stand-in", 1)
        .await
        .unwrap()
        .unwrap();
    assert!(store.put_link_code(&tg, &[1; 32], 1_000, 2).await.unwrap());
    assert!(matches!(
        store
            .redeem_link_code(&web, "web-1", &[1; 32], 3)
            .await
            .unwrap(),
        RedeemOutcome::Linked(_)
    ));
    let other = user("telegram:8");
    created(&*store, "telegram:8", 4).await;

    // Banning the chat user bans the account, and the other way round.
    store
        .place_sanction(&NewSanction {
            kind: SanctionKind::Ban,
            ..suspension("telegram:7", None, 10)
        })
        .await
        .unwrap();
    assert_eq!(
        store
            .sanction_in_force(&web, 11)
            .await
            .unwrap()
            .map(|s| s.kind),
        Some(SanctionKind::Ban)
    );
    assert_eq!(store.sanction_in_force(&other, 11).await.unwrap(), None);
    // Lifting through the account lifts the chat user's ban.
    assert_eq!(
        store
            .lift_sanctions(&web, "admin", "ok", 12)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.sanction_in_force(&tg, 13).await.unwrap(), None);

    store
        .place_sanction(&suspension("web:ada", None, 20))
        .await
        .unwrap();
    assert_eq!(
        store
            .sanction_in_force(&tg, 21)
            .await
            .unwrap()
            .map(|s| s.user_ref),
        Some(web.clone())
    );
    assert_eq!(store.sanctions_of(&tg).await.unwrap().len(), 2);
}

async fn a_child_safety_hit_suspends_pending_review_and_opens_a_case(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let tg = user("telegram:3");
    let hit = ChildSafetyHit {
        user_ref: tg.clone(),
        rule: "child_safety".into(),
        refusal_id: Some(9),
        now: 50,
    };
    let (s, case) = store.suspend_for_child_safety(&hit).await.unwrap();
    assert_eq!(
        (s.kind, s.ends_at, s.placed_by.as_str()),
        (SanctionKind::Suspension, None, "system")
    );
    assert_eq!(s.case_id, Some(case.id));
    assert_eq!(
        (case.kind, case.status),
        (CaseKind::ChildSafety, CaseStatus::Open)
    );
    assert!(case.cause.contains("child_safety"), "{}", case.cause);
    assert_eq!(
        store.sanction_in_force(&tg, 1_000_000).await.unwrap(),
        Some(s)
    );
    // A second hit joins the open case.
    let (_, again) = store
        .suspend_for_child_safety(&ChildSafetyHit { now: 60, ..hit })
        .await
        .unwrap();
    assert_eq!(again.id, case.id);
    let log = store.audit_log(Some(&tg), None, 10).await.unwrap();
    assert_eq!(log.len(), 2);
    assert!(log
        .iter()
        .all(|a| a.action == "auto_suspend" && a.actor == "system"));
}

async fn cases_open_once_while_open(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let job = created(&*store, "telegram:4", 1).await;
    let new = NewCase {
        kind: CaseKind::Withheld,
        user_ref: user("telegram:4"),
        job_id: Some(job.id.clone()),
        artifact_id: None,
        cause: "withheld: exposed".into(),
        now: 10,
    };
    let (first, opened) = store.open_case(&new).await.unwrap();
    assert!(opened);
    let (same, opened) = store
        .open_case(&NewCase {
            now: 11,
            ..new.clone()
        })
        .await
        .unwrap();
    assert!(!opened);
    assert_eq!(same, first);
    // Another kind, or no job, is another case.
    let (other, opened) = store
        .open_case(&NewCase {
            kind: CaseKind::Report,
            ..new.clone()
        })
        .await
        .unwrap();
    assert!(opened && other.id != first.id);

    let decided = store
        .decide_case(&NewDecision {
            case_id: first.id,
            decision: Decision::Dismiss,
            until: None,
            note: Some("a false positive".into()),
            actor: "admin".into(),
            now: 20,
        })
        .await
        .unwrap();
    let DecideOutcome::Decided {
        case,
        placed,
        lifted,
    } = decided
    else {
        panic!("expected a decision, got {decided:?}")
    };
    assert_eq!(
        (case.status, case.decision, case.decided_at),
        (CaseStatus::Decided, Some(Decision::Dismiss), Some(20))
    );
    assert!(placed.is_none() && lifted.is_empty());
    // Decided: the next one opens a new case.
    let (next, opened) = store.open_case(&NewCase { now: 30, ..new }).await.unwrap();
    assert!(opened && next.id != first.id);
    // The queue: open ones first, oldest first; then decided ones.
    let all = store
        .list_cases(&CaseFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|c| c.id).collect::<Vec<_>>(),
        [other.id, next.id, first.id]
    );
}

async fn a_reporters_repeat_is_one_report_and_reports_share_a_case(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let job = created(&*store, "telegram:5", 1).await;
    let report = |reporter: &str, now| NewReport {
        job_id: job.id.clone(),
        owner: user("telegram:5"),
        reporter: user(reporter),
        bot_id: "tg-image-bot-1".parse().unwrap(),
        channel: Platform::Telegram,
        reason: format!("reported at {now}"),
        now,
    };
    let ReportOutcome::Recorded(first) = store.report_job(&report("telegram:6", 10)).await.unwrap()
    else {
        panic!("a first report is recorded")
    };
    assert_eq!(
        store.report_job(&report("telegram:6", 11)).await.unwrap(),
        ReportOutcome::Repeated(first.clone()),
        "the repeat answers the first and changes nothing"
    );
    let ReportOutcome::Recorded(second) =
        store.report_job(&report("telegram:9", 12)).await.unwrap()
    else {
        panic!("another reporter's report is recorded")
    };
    assert_eq!(second.case_id, first.case_id, "one case per job");
    let case = store.get_case(first.case_id).await.unwrap().unwrap();
    assert_eq!(
        (case.kind, case.user_ref.clone(), case.job_id.clone()),
        (CaseKind::Report, user("telegram:5"), Some(job.id.clone()))
    );
    let reports = store.case_reports(case.id).await.unwrap();
    assert_eq!(
        reports
            .iter()
            .map(|r| r.reason.as_str())
            .collect::<Vec<_>>(),
        ["reported at 10", "reported at 12"]
    );
}

async fn repeated_refusals_open_one_case_and_decisions_sanction_and_are_final(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let tg = user("telegram:10");
    let refuse = |now| NewRefusal {
        user_ref: tg.clone(),
        bot_id: "tg-image-bot-1".parse().unwrap(),
        channel: Platform::Telegram,
        rule: "gore".into(),
        code: "prompt_refused".into(),
        excerpt: "gore".into(),
        now,
    };
    store.record_refusal(&refuse(1_000)).await.unwrap();
    store.record_refusal(&refuse(2_000)).await.unwrap();
    assert_eq!(store.review_refusals(&tg, 3, 0, 2_000).await.unwrap(), None);
    store.record_refusal(&refuse(3_000)).await.unwrap();
    assert_eq!(
        store.review_refusals(&tg, 3, 1_500, 3_000).await.unwrap(),
        None,
        "two since"
    );
    let case = store
        .review_refusals(&tg, 3, 0, 3_000)
        .await
        .unwrap()
        .expect("a case");
    assert_eq!(case.kind, CaseKind::Refusals);
    store.record_refusal(&refuse(4_000)).await.unwrap();
    assert_eq!(
        store.review_refusals(&tg, 3, 0, 4_000).await.unwrap(),
        None,
        "one while open"
    );

    let decide = |decision, until, now| NewDecision {
        case_id: case.id,
        decision,
        until,
        note: None,
        actor: "admin:bo".into(),
        now,
    };
    let DecideOutcome::Decided { placed, .. } = store
        .decide_case(&decide(Decision::Suspend, Some(9_000), 5_000))
        .await
        .unwrap()
    else {
        panic!("decided")
    };
    let placed = placed.expect("a suspension");
    assert_eq!(
        (placed.kind, placed.ends_at, placed.case_id),
        (SanctionKind::Suspension, Some(9_000), Some(case.id))
    );
    assert_eq!(
        store.sanction_in_force(&tg, 8_999).await.unwrap(),
        Some(placed)
    );
    assert!(matches!(
        store
            .decide_case(&decide(Decision::Ban, None, 6_000))
            .await
            .unwrap(),
        DecideOutcome::AlreadyDecided(_)
    ));
    assert_eq!(
        store
            .decide_case(&NewDecision {
                case_id: 999,
                ..decide(Decision::Ban, None, 6_000)
            })
            .await
            .unwrap(),
        DecideOutcome::NotFound
    );
    let log = store.audit_log(Some(&tg), None, 10).await.unwrap();
    assert_eq!(
        log.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(),
        ["decide", "suspend"]
    );
    assert_eq!(log[0].case_id, Some(case.id));
    assert_eq!(log[0].actor, "admin:bo");
}

/// The audit log refuses UPDATE and DELETE, on both databases.
async fn the_audit_log_is_append_only(backend: Backend) {
    use sqlx::Connection;
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    store
        .place_sanction(&suspension("telegram:11", None, 1))
        .await
        .unwrap();
    let update = "UPDATE moderation_audit SET actor = 'someone else'";
    let delete = "DELETE FROM moderation_audit";
    match backend {
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            assert!(sqlx::query(update).execute(&mut conn).await.is_err());
            assert!(sqlx::query(delete).execute(&mut conn).await.is_err());
        }
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            assert!(sqlx::query(update).execute(&mut conn).await.is_err());
            assert!(sqlx::query(delete).execute(&mut conn).await.is_err());
        }
    }
    let log = store.audit_log(None, None, 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].actor, "admin:ada");
}

backend_tests!(
    sanctions_end_at_their_end_and_a_ban_comes_first,
    a_sanction_on_either_linked_user_applies_to_both,
    a_child_safety_hit_suspends_pending_review_and_opens_a_case,
    cases_open_once_while_open,
    a_reporters_repeat_is_one_report_and_reports_share_a_case,
    repeated_refusals_open_one_case_and_decisions_sanction_and_are_final,
    the_audit_log_is_append_only,
);
