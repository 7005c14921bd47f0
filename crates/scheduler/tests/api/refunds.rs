//! `POST /api/admin/payments/refund`: refunds an operator makes. A Stripe
//! payment is refunded in localstripe and its `charge.refunded` webhook puts
//! the refund in the ledger, once; a Telegram Stars payment becomes an order
//! that only the bot which took it sees, reports on and completes through
//! the refund relay; Discord's and operators' entries, entries that took no
//! money, and a Stripe that is down are refused with their codes and change
//! nothing.

use std::time::Duration;

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::json;

use tessera_api::refunds::{ListRefundOrdersQuery, RefundState, StarsRefundFailure};
use tessera_api::stars::{StarsInvoiceRequest, StarsPayment, StarsRefunded};
use tessera_api::Client;
use tessera_core::{PaymentKind, PaymentProvider, Platform, UserRef};
use tessera_scheduler::store::{ApplyOutcome, NewPaymentEvent, PaymentFilter};
use tessera_testkit::{backend_tests, Backend, TestApp};

use crate::common::*;
use crate::stripe::{account, buy, configure, grants_until, shop, stripe_events};

/// The ledger id of the user's newest payment of a provider that took money.
async fn payment_id(app: &TestApp, provider: PaymentProvider, user: &UserRef) -> i64 {
    let events = app
        .store()
        .payment_events(&PaymentFilter {
            user_ref: Some(user.clone()),
            provider: Some(provider),
            limit: 100,
            ..PaymentFilter::default()
        })
        .await
        .unwrap();
    events
        .iter()
        .find(|e| {
            matches!(e.kind, PaymentKind::Purchase | PaymentKind::Renewal) && e.amount_minor > 0
        })
        .unwrap_or_else(|| panic!("no {provider} payment of {user}: {events:?}"))
        .id
}

async fn ledger_len(app: &TestApp) -> usize {
    app.store()
        .payment_events(&PaymentFilter {
            limit: 100,
            ..PaymentFilter::default()
        })
        .await
        .unwrap()
        .len()
}

/// Records a provider's purchase straight in the ledger; its id.
async fn recorded(app: &TestApp, provider: PaymentProvider, event_id: &str, user: &str) -> i64 {
    let now = Utc::now().timestamp_millis();
    let event = NewPaymentEvent {
        provider,
        event_id: event_id.into(),
        kind: PaymentKind::Purchase,
        user_ref: Some(user.parse().unwrap()),
        plan_id: Some("starter".into()),
        amount_minor: 500,
        currency: Some("usd".into()),
        period: Some((now - 1000, now + 30 * 86_400_000)),
        reference: Some(format!("ref-{event_id}")),
        occurred_at: now,
    };
    let app_store = app.store();
    app_store
        .ensure_user(&user.parse().unwrap(), now)
        .await
        .unwrap();
    match app_store.apply_payment_event(&event, now).await.unwrap() {
        ApplyOutcome::Recorded(e) => e.id,
        other => panic!("expected {event_id} recorded, got {other:?}"),
    }
}

async fn an_operator_refunds_a_stripe_subscription(backend: Backend) {
    let shop = shop(backend).await;
    let ada = account(&shop.web, "ada@example.org").await;
    let grant = buy(&shop, &ada.user_ref, "starter").await;
    assert_eq!(
        shop.web.get_user(&ada.user_ref).await.unwrap().plan.id,
        "starter"
    );
    let admin = &shop.app.admin;

    // Checkout's own event carries no money: its invoice's does. (Its
    // webhook may come after the invoice's.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let checkout = loop {
        let events = stripe_events(&shop.app).await;
        if let Some(e) = events
            .into_iter()
            .find(|e| e.kind == PaymentKind::Purchase && e.amount_minor == 0)
        {
            break e;
        }
        assert!(tokio::time::Instant::now() < deadline, "no checkout event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    api_error(
        admin.refund_payment(checkout.id).await,
        StatusCode::CONFLICT,
        "not_a_payment",
    );

    let paid = payment_id(&shop.app, PaymentProvider::Stripe, &ada.user_ref).await;
    let accepted = admin.refund_payment(paid).await.unwrap();
    assert_eq!(accepted.state, RefundState::Requested, "{accepted:?}");
    assert_eq!(accepted.provider, PaymentProvider::Stripe);
    assert!(accepted.order.is_none());

    // Stripe's webhook records it and ends the plan: back on FREE.
    grants_until(&shop.app, &ada.user_ref, "the refund's webhook", |g| {
        g.iter().all(|g| !g.active)
    })
    .await;
    assert_eq!(
        shop.web.get_user(&ada.user_ref).await.unwrap().plan.id,
        "free"
    );
    // Stripe refunded the invoice's charge, once.
    let invoice = shop
        .stripe
        .get(&format!("subscriptions/{}", grant.reference))
        .await
        .unwrap()["latest_invoice"]
        .as_str()
        .unwrap()
        .to_owned();
    let charge = shop
        .stripe
        .get(&format!("invoices/{invoice}"))
        .await
        .unwrap()["charge"]
        .clone();
    let charge_id = charge["id"]
        .as_str()
        .or(charge.as_str())
        .unwrap()
        .to_owned();
    let refunds = shop
        .stripe
        .get(&format!("refunds?charge={charge_id}"))
        .await
        .unwrap();
    assert_eq!(refunds["data"].as_array().unwrap().len(), 1, "{refunds}");

    // The ledger holds the refund once, from the webhook alone: the money
    // goes back once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let refunds: Vec<_> = stripe_events(&shop.app)
        .await
        .into_iter()
        .filter(|e| e.kind == PaymentKind::Refund)
        .collect();
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0].amount_minor, 500);

    // Again: Stripe says it is refunded, and nothing more happens.
    api_error(
        admin.refund_payment(paid).await,
        StatusCode::CONFLICT,
        "already_refunded",
    );
    shop.app.shutdown().await;
}

async fn stripe_down_at_a_refund_records_nothing(backend: Backend) {
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let app = TestApp::spawn_with(backend, |c| {
        configure(c, &base);
        c.payments.stripe.timeout_secs = 2;
    })
    .await;
    let paid = recorded(&app, PaymentProvider::Stripe, "evt_paid_1", "web:ada").await;
    let before = ledger_len(&app).await;
    api_error(
        app.admin.refund_payment(paid).await,
        StatusCode::BAD_GATEWAY,
        "payment_provider_unavailable",
    );
    assert_eq!(ledger_len(&app).await, before, "nothing recorded");
    assert_eq!(
        app.frontend(Platform::Web, WEB)
            .await
            .get_user("web:ada")
            .await
            .unwrap()
            .plan
            .id,
        "starter"
    );
    app.shutdown().await;
}

async fn refunds_that_cannot_be_made_are_refused_with_their_codes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = &app.admin;
    api_error(
        admin.refund_payment(987_654).await,
        StatusCode::NOT_FOUND,
        "payment_not_found",
    );
    // Discord makes its own refunds.
    let discord = recorded(&app, PaymentProvider::Discord, "ent-1", "discord:77").await;
    let refused = api_error(
        admin.refund_payment(discord).await,
        StatusCode::CONFLICT,
        "refund_not_supported",
    );
    assert!(refused.message.contains("Discord"), "{}", refused.message);
    // Stripe is not configured on this scheduler.
    let stripe = recorded(&app, PaymentProvider::Stripe, "evt_1", "web:bob").await;
    api_error(
        admin.refund_payment(stripe).await,
        StatusCode::NOT_FOUND,
        "payments_not_configured",
    );
    // A Stars charge no bot relayed here (no bot to route it to).
    let stars = recorded(
        &app,
        PaymentProvider::Telegram,
        "tg-charge-old",
        "telegram:5",
    )
    .await;
    api_error(
        admin.refund_payment(stars).await,
        StatusCode::CONFLICT,
        "refund_not_supported",
    );
    // An operator's grant is no payment.
    let grant = admin
        .grant_plan(&tessera_api::admin::GrantPlanRequest {
            user_ref: "telegram:5".parse().unwrap(),
            plan_id: "pro".parse().unwrap(),
            until: Utc::now() + chrono::Duration::days(3),
        })
        .await
        .unwrap();
    api_error(
        admin.refund_payment(grant.id).await,
        StatusCode::CONFLICT,
        "not_a_payment",
    );
    // Malformed bodies and queries.
    let answer = send(
        raw(&app, Method::POST, "/api/admin/payments/refund")
            .bearer_auth(&app.admin_token)
            .json(&json!({"payment_id": "seven"})),
    )
    .await;
    answer.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let answer = send(
        raw(&app, Method::GET, "/api/admin/payments/refunds?state=lost")
            .bearer_auth(&app.admin_token),
    )
    .await;
    answer.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query");
    // Nothing was ordered.
    assert!(admin
        .list_refund_orders(&ListRefundOrdersQuery::default())
        .await
        .unwrap()
        .orders
        .is_empty());
    app.shutdown().await;
}

/// A Stars payment relayed by `bot`, as the bot relays `successful_payment`.
async fn stars_payment(bot: &Client, user: &UserRef, charge: &str) {
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
        telegram_payment_charge_id: charge.into(),
        subscription_expiration_date: None,
        is_recurring: false,
        is_first_recurring: false,
        date: Utc::now().timestamp(),
    })
    .await
    .unwrap();
}

async fn a_stars_refund_is_ordered_of_the_bot_that_took_the_payment(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.payments.telegram.stars.insert("starter".into(), 250);
    })
    .await;
    let took = app.frontend(Platform::Telegram, TG_BOT).await;
    let other = app.frontend(Platform::Telegram, TG_BOT_2).await;
    let discord = app.frontend(Platform::Discord, DC_BOT).await;
    let user: UserRef = "telegram:501".parse().unwrap();
    stars_payment(&took, &user, "stars-charge-1").await;
    assert_eq!(took.get_user(&user).await.unwrap().plan.id, "starter");
    let paid = payment_id(&app, PaymentProvider::Telegram, &user).await;

    let accepted = app.admin.refund_payment(paid).await.unwrap();
    assert_eq!(accepted.state, RefundState::Pending);
    let order = accepted.order.expect("an order");
    assert_eq!(order.bot_id.as_str(), TG_BOT);
    assert_eq!(order.telegram_payment_charge_id, "stars-charge-1");
    assert_eq!((order.amount, &order.user_ref), (250, &user));
    // Ordered, not made: the plan holds until the bot refunds.
    assert_eq!(took.get_user(&user).await.unwrap().plan.id, "starter");
    api_error(
        app.admin.refund_payment(paid).await,
        StatusCode::CONFLICT,
        "already_refunded",
    );

    // Only the bot that took it sees it, or may report on it.
    assert!(other.stars_refund_orders().await.unwrap().orders.is_empty());
    let failure = StarsRefundFailure {
        order_id: order.order_id,
        error: "Bad Request: CHARGE_NOT_FOUND".into(),
    };
    api_error(
        other.stars_refund_failed(&failure).await,
        StatusCode::NOT_FOUND,
        "refund_order_not_found",
    );
    api_error(
        discord.stars_refund_orders().await,
        StatusCode::FORBIDDEN,
        "forbidden_frontend",
    );
    let mine = took.stars_refund_orders().await.unwrap().orders;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].order_id, order.order_id);

    // Telegram refused: failed, with its words, and out of the bot's list.
    took.stars_refund_failed(&failure).await.unwrap();
    assert!(took.stars_refund_orders().await.unwrap().orders.is_empty());
    let failed = app
        .admin
        .list_refund_orders(&ListRefundOrdersQuery {
            state: Some(RefundState::Failed),
            limit: None,
        })
        .await
        .unwrap()
        .orders;
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0].error.as_deref(),
        Some("Bad Request: CHARGE_NOT_FOUND")
    );
    assert_eq!(took.get_user(&user).await.unwrap().plan.id, "starter");

    // Ordered again, it is pending again; the bot refunds and reports it.
    let again = app.admin.refund_payment(paid).await.unwrap();
    assert_eq!(again.state, RefundState::Pending);
    assert_eq!(again.order.unwrap().order_id, order.order_id);
    took.stars_refunded(&StarsRefunded {
        user_ref: user.clone(),
        telegram_payment_charge_id: "stars-charge-1".into(),
    })
    .await
    .unwrap();
    assert_eq!(took.get_user(&user).await.unwrap().plan.id, "free");
    let all = app
        .admin
        .list_refund_orders(&ListRefundOrdersQuery::default())
        .await
        .unwrap()
        .orders;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state, RefundState::Done);
    assert_eq!(all[0].error, None);
    assert!(took.stars_refund_orders().await.unwrap().orders.is_empty());
    api_error(
        app.admin.refund_payment(paid).await,
        StatusCode::CONFLICT,
        "already_refunded",
    );
    // A report on a finished order finds no pending one.
    api_error(
        took.stars_refund_failed(&failure).await,
        StatusCode::NOT_FOUND,
        "refund_order_not_found",
    );
    app.shutdown().await;
}

backend_tests!(
    an_operator_refunds_a_stripe_subscription,
    stripe_down_at_a_refund_records_nothing,
    refunds_that_cannot_be_made_are_refused_with_their_codes,
    a_stars_refund_is_ordered_of_the_bot_that_took_the_payment,
);
