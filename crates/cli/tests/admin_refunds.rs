//! `tessera admin payments refund` and `payments refunds` as an operator runs
//! them: the real binary against the real scheduler, ordering the refund of
//! a Telegram Stars payment a bot relayed, listing the order, and the API's
//! refusals printed as errors with their codes.

mod common;

use serde_json::Value;

use tessera_api::stars::{StarsInvoiceRequest, StarsPayment};
use tessera_core::{PaymentKind, PaymentProvider, Platform, UserRef};
use tessera_scheduler::store::{ApplyOutcome, NewPaymentEvent};
use tessera_testkit::{backend_tests, Backend, TestApp};

use common::admin::admin;

async fn operators_refund_from_the_command_line(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.payments.telegram.stars.insert("starter".into(), 250);
    })
    .await;
    // A Stars payment, relayed by the bot that took it.
    let bot = app.frontend(Platform::Telegram, "tg-image-bot-1").await;
    let user: UserRef = "telegram:9".parse().unwrap();
    let invoice = bot
        .stars_invoice(&StarsInvoiceRequest {
            user_ref: user.clone(),
            plan_id: "starter".parse().unwrap(),
        })
        .await
        .unwrap();
    bot.stars_payment(&StarsPayment {
        user_ref: user.clone(),
        payload: invoice.payload,
        currency: invoice.currency,
        total_amount: invoice.amount,
        telegram_payment_charge_id: "stars-cli-1".into(),
        subscription_expiration_date: None,
        is_recurring: false,
        is_first_recurring: false,
        date: chrono::Utc::now().timestamp(),
    })
    .await
    .unwrap();
    let (ok, out, err) = admin(&app, &["--json", "payments", "list"]).await;
    assert!(ok, "{out}{err}");
    let list: Value = serde_json::from_str(&out).expect("JSON");
    let id = list["events"][0]["id"].as_i64().expect("a payment");

    let (ok, out, err) = admin(&app, &["payments", "refund", &id.to_string()]).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("payment {id} (telegram): refund pending"))
            && out.contains("bot tg-image-bot-1 refunds 250"),
        "{out}"
    );

    let (ok, out, err) = admin(&app, &["payments", "refunds"]).await;
    assert!(ok, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ORDER"), "{out}");
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[1].contains("telegram:9")
            && lines[1].contains("tg-image-bot-1")
            && lines[1].contains("pending"),
        "{out}"
    );
    let (ok, out, _) = admin(&app, &["payments", "refunds", "--state", "failed"]).await;
    assert!(ok);
    assert!(out.contains("(no refund orders)"), "{out}");

    // Refusals: again, no such payment, and Discord's own refunds.
    let (ok, _, err) = admin(&app, &["payments", "refund", &id.to_string()]).await;
    assert!(!ok);
    assert!(err.contains("already_refunded"), "{err}");
    let (ok, _, err) = admin(&app, &["payments", "refund", "424242"]).await;
    assert!(!ok);
    assert!(err.contains("payment_not_found"), "{err}");
    let now = chrono::Utc::now().timestamp_millis();
    let discord = NewPaymentEvent {
        provider: PaymentProvider::Discord,
        event_id: "entitlement-1".into(),
        kind: PaymentKind::Purchase,
        user_ref: Some("discord:3".parse().unwrap()),
        plan_id: Some("starter".into()),
        amount_minor: 499,
        currency: Some("usd".into()),
        period: Some((now - 1000, now + 86_400_000)),
        reference: Some("entitlement-1".into()),
        occurred_at: now,
    };
    let id = match app
        .store()
        .apply_payment_event(&discord, now)
        .await
        .unwrap()
    {
        ApplyOutcome::Recorded(e) => e.id,
        other => panic!("{other:?}"),
    };
    let (ok, _, err) = admin(&app, &["payments", "refund", &id.to_string()]).await;
    assert!(!ok);
    assert!(
        err.contains("refund_not_supported") && err.contains("Discord"),
        "{err}"
    );
}

backend_tests!(operators_refund_from_the_command_line);
