//! `/api/admin/payments`: the ledger listed with its filters and pages, and
//! operators' grants and revokes, which go through the ledger and raise a
//! user's tokens at once.

use chrono::{Duration, Utc};
use reqwest::{Method, StatusCode};
use serde_json::json;

use tessera_api::admin::{GrantPlanRequest, ListPaymentsQuery, PaymentOutcome, RevokePlanRequest};
use tessera_core::{PaymentKind, PaymentProvider, Platform};
use tessera_scheduler::store::{ApplyOutcome, NewPaymentEvent};
use tessera_testkit::{backend_tests, Backend, TestApp};

use crate::common::*;

/// A provider's event at the real time (the scheduler reads plans at now).
fn provider_event(
    provider: PaymentProvider,
    event_id: &str,
    kind: PaymentKind,
    user: &str,
    reference: &str,
    plan: Option<&str>,
) -> NewPaymentEvent {
    let now = Utc::now().timestamp_millis();
    NewPaymentEvent {
        provider,
        event_id: event_id.into(),
        kind,
        user_ref: Some(user.parse().unwrap()),
        plan_id: plan.map(str::to_owned),
        amount_minor: if kind.grants() { 500 } else { 0 },
        currency: Some("usd".into()),
        period: kind.grants().then_some((now - 1000, now + 30 * 86_400_000)),
        reference: Some(reference.into()),
        occurred_at: now,
    }
}

async fn deliver(app: &TestApp, e: &NewPaymentEvent) {
    let now = Utc::now().timestamp_millis();
    match app.store().apply_payment_event(e, now).await.unwrap() {
        ApplyOutcome::Recorded(_) => {}
        other => panic!("expected {} recorded, got {other:?}", e.event_id),
    }
}

async fn operators_grant_and_revoke_through_the_ledger(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    for _ in 0..3 {
        tg.create_job(&tg_job("telegram:1", prompt("a lighthouse")), None)
            .await
            .unwrap();
    }
    assert_eq!(
        tg.get_user("telegram:1").await.unwrap().tokens_left_today,
        Some(17)
    );

    // A grant raises today's allowance at once, and is in the ledger.
    let until = Utc::now() + Duration::days(10);
    let granted = app
        .admin
        .grant_plan(&GrantPlanRequest {
            user_ref: "telegram:1".parse().unwrap(),
            plan_id: "starter".parse().unwrap(),
            until,
        })
        .await
        .unwrap();
    assert_eq!(
        (granted.provider, granted.kind, granted.outcome),
        (
            PaymentProvider::Admin,
            PaymentKind::AdminGrant,
            PaymentOutcome::Applied
        )
    );
    assert_eq!(granted.plan_id.as_deref(), Some("starter"));
    assert_eq!(
        granted.period_end.map(|t| t.timestamp_millis()),
        Some(until.timestamp_millis())
    );
    assert!(
        granted.effect.contains("telegram:1 is now on starter"),
        "{}",
        granted.effect
    );
    let quota = tg.get_user("telegram:1").await.unwrap();
    assert_eq!(
        (quota.plan.id.as_str(), quota.tokens_left_today),
        ("starter", Some(117))
    );

    // A provider's subscription and its cancel leave the operator's grant.
    deliver(
        &app,
        &provider_event(
            PaymentProvider::Stripe,
            "evt_1",
            PaymentKind::Purchase,
            "telegram:1",
            "sub_1",
            Some("pro"),
        ),
    )
    .await;
    assert_eq!(tg.get_user("telegram:1").await.unwrap().plan.id, "pro");
    deliver(
        &app,
        &provider_event(
            PaymentProvider::Stripe,
            "evt_2",
            PaymentKind::Cancel,
            "telegram:1",
            "sub_1",
            None,
        ),
    )
    .await;
    assert_eq!(tg.get_user("telegram:1").await.unwrap().plan.id, "starter");

    // The revoke ends it, and is in the ledger; a second finds nothing.
    let revoked = app
        .admin
        .revoke_plan(&RevokePlanRequest {
            user_ref: "telegram:1".parse().unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(
        (revoked.kind, revoked.outcome),
        (PaymentKind::AdminRevoke, PaymentOutcome::Applied)
    );
    assert_eq!(tg.get_user("telegram:1").await.unwrap().plan.id, "free");
    api_error(
        app.admin
            .revoke_plan(&RevokePlanRequest {
                user_ref: "telegram:1".parse().unwrap(),
            })
            .await,
        StatusCode::NOT_FOUND,
        "grant_not_found",
    );
    let admin_events = app
        .admin
        .list_payments(&ListPaymentsQuery {
            provider: Some(PaymentProvider::Admin),
            ..Default::default()
        })
        .await
        .unwrap();
    let kinds: Vec<PaymentKind> = admin_events.events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [PaymentKind::AdminRevoke, PaymentKind::AdminGrant]);

    // The operator's own plan (PUT plan) survives a provider's cancel too.
    app.admin
        .set_plan("discord:2", &"pro".parse().unwrap())
        .await
        .unwrap();
    for (id, kind, plan) in [
        ("ent_a", PaymentKind::Purchase, Some("starter")),
        ("ent_b", PaymentKind::Cancel, None),
    ] {
        deliver(
            &app,
            &provider_event(
                PaymentProvider::Discord,
                id,
                kind,
                "discord:2",
                "ent_1",
                plan,
            ),
        )
        .await;
    }
    let dc = app.frontend(Platform::Discord, DC_BOT).await;
    assert_eq!(dc.get_user("discord:2").await.unwrap().plan.id, "pro");
}

async fn grants_refuse_bad_input_clearly(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let grant = |body: serde_json::Value| {
        raw(&app, Method::POST, "/api/admin/payments/grant")
            .bearer_auth(&app.admin_token)
            .json(&body)
    };
    let soon = (Utc::now() + Duration::days(1)).to_rfc3339();
    let past = (Utc::now() - Duration::days(1)).to_rfc3339();
    send(grant(
        json!({"user_ref": "telegram:1", "plan_id": "starter", "until": past}),
    ))
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_period");
    send(grant(
        json!({"user_ref": "telegram:1", "plan_id": "gold", "until": soon}),
    ))
    .await
    .error(StatusCode::NOT_FOUND, "plan_not_found");
    send(grant(
        json!({"user_ref": "fax:1", "plan_id": "pro", "until": soon}),
    ))
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_user_ref");
    send(grant(
        json!({"user_ref": "telegram:1", "plan_id": "pro", "until": "tomorrow"}),
    ))
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    // Nothing of that reached the ledger.
    let all = app
        .admin
        .list_payments(&ListPaymentsQuery::default())
        .await
        .unwrap();
    assert!(all.events.is_empty(), "{all:?}");
    // Without the admin token: refused.
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    api_error(
        tg.list_payments(&ListPaymentsQuery::default()).await,
        StatusCode::FORBIDDEN,
        "wrong_credential",
    );
}

async fn the_ledger_lists_by_user_provider_and_unknown_users(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    tg.get_user("telegram:1").await.unwrap();
    app.admin
        .set_plan("telegram:1", &"free".parse().unwrap())
        .await
        .unwrap();
    for i in 0..5 {
        deliver(
            &app,
            &provider_event(
                PaymentProvider::Telegram,
                &format!("tg_{i}"),
                PaymentKind::Renewal,
                "telegram:1",
                "ch_1",
                Some("starter"),
            ),
        )
        .await;
    }
    // An event for a user nobody knows: kept, listed, not applied.
    deliver(
        &app,
        &provider_event(
            PaymentProvider::Stripe,
            "evt_stray",
            PaymentKind::Purchase,
            "web:nobody",
            "sub_x",
            Some("pro"),
        ),
    )
    .await;
    let unknown = app
        .admin
        .list_payments(&ListPaymentsQuery {
            unknown_user: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(unknown.events.len(), 1);
    let stray = &unknown.events[0];
    assert_eq!(
        (
            stray.event_id.as_str(),
            stray.outcome,
            stray.billing_user.clone()
        ),
        ("evt_stray", PaymentOutcome::UnknownUser, None)
    );

    // Pages of two, newest first, by user.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = app
            .admin
            .list_payments(&ListPaymentsQuery {
                user_ref: Some("telegram:1".parse().unwrap()),
                limit: Some(2),
                cursor: cursor.take(),
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(page.events.iter().map(|e| e.event_id.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["tg_4", "tg_3", "tg_2", "tg_1", "tg_0"]);
    let by_provider = app
        .admin
        .list_payments(&ListPaymentsQuery {
            provider: Some(PaymentProvider::Stripe),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_provider.events.len(), 1);

    let list = |query: &str| {
        raw(&app, Method::GET, &format!("/api/admin/payments?{query}"))
            .bearer_auth(&app.admin_token)
    };
    send(list("limit=0"))
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query");
    send(list("cursor=abc"))
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query");
    send(list("provider=paypal"))
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query");
}

backend_tests!(
    operators_grant_and_revoke_through_the_ledger,
    grants_refuse_bad_input_clearly,
    the_ledger_lists_by_user_provider_and_unknown_users,
);
