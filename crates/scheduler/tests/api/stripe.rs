//! The Stripe channel end to end, against localstripe (a third-party Stripe
//! emulator) and its wrapper's hosted Checkout and portal pages: a website
//! account buys STARTER by pressing Pay, has its tokens at once, renews, and
//! is back on FREE after a refund or a cancel in the portal; a linked
//! Telegram user shares the plan; Stripe's webhooks, signed as Stripe signs
//! them, are recorded once whatever their order, and forged or stale ones
//! change nothing; a Stripe that is down when the visitor clicks makes
//! nothing.

use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::seq::SliceRandom;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;

use tessera_api::public::{AccountView, Credentials};
use tessera_api::stripe::{StripeCheckoutRequest, StripePortalRequest};
use tessera_api::Client;
use tessera_core::{PaymentProvider, Platform, UserRef};
use tessera_scheduler::config::SchedulerConfig;
use tessera_scheduler::store::{GrantRecord, PaymentEventRecord, PaymentFilter, PaymentOutcome};
use tessera_testkit::localstripe::LocalStripe;
use tessera_testkit::{backend_tests, Backend, TestApp};

use crate::common::*;

/// The scheduler's key for localstripe (any `sk_` key will do).
const KEY: &str = "sk_test_tessera_scheduler";
const SECRET: &str = "whsec_tessera_stripe_webhooks";
const SUCCESS: &str = "https://tessera.example/account?paid=1";
const CANCEL: &str = "https://tessera.example/pricing";
const RETURN: &str = "https://tessera.example/account";
/// STARTER's daily tokens (migration 0001).
const STARTER_TOKENS: i64 = 120;

pub(crate) fn configure(config: &mut SchedulerConfig, api_base: &str) {
    let stripe = &mut config.payments.stripe;
    stripe.api_base = api_base.to_owned();
    stripe.secret_key = Some(KEY.into());
    stripe.webhook_secret = Some(SECRET.into());
    stripe.prices = [
        ("starter", "price_starter"),
        ("pro", "price_pro"),
        ("free", "price_free"),
    ]
    .into_iter()
    .map(|(plan, price)| (plan.to_owned(), price.to_owned()))
    .collect();
}

/// localstripe with STARTER and PRO on sale, and the scheduler taking its
/// webhooks.
pub(crate) struct Shop {
    pub(crate) stripe: LocalStripe,
    pub(crate) app: TestApp,
    pub(crate) web: Client,
}

pub(crate) async fn shop(backend: Backend) -> Shop {
    let stripe = tokio::task::spawn_blocking(LocalStripe::start)
        .await
        .unwrap();
    stripe.monthly_price("price_starter", 500).await.unwrap();
    stripe.monthly_price("price_pro", 1200).await.unwrap();
    let base = stripe.url().to_owned();
    let app = TestApp::spawn_with(backend, |c| configure(c, &base)).await;
    let hook = format!("{}/api/v1/payments/stripe/webhook", app.base_url());
    stripe
        .register_webhook("tessera", &hook, SECRET, None)
        .await
        .unwrap();
    let web = app.frontend(Platform::Web, WEB).await;
    Shop { stripe, app, web }
}

pub(crate) async fn account(web: &Client, email: &str) -> AccountView {
    web.create_account(&Credentials {
        email: email.into(),
        password: "correct horse battery".into(),
    })
    .await
    .unwrap()
}

fn checkout_for(user: &UserRef, plan: &str) -> StripeCheckoutRequest {
    StripeCheckoutRequest {
        user_ref: user.clone(),
        plan_id: plan.parse().unwrap(),
        success_url: SUCCESS.into(),
        cancel_url: CANCEL.into(),
    }
}

/// Waits (up to 15 s: localstripe sends each webhook a second after its
/// event) until the user's grants satisfy `done`; the grants.
pub(crate) async fn grants_until(
    app: &TestApp,
    user: &UserRef,
    what: &str,
    done: impl Fn(&[GrantRecord]) -> bool,
) -> Vec<GrantRecord> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let grants = app.store().plan_grants(user).await.unwrap();
        if done(&grants) {
            return grants;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 15 s; grants {grants:?}, ledger {:?}",
            stripe_events(app).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn stripe_events(app: &TestApp) -> Vec<PaymentEventRecord> {
    app.store()
        .payment_events(&PaymentFilter {
            provider: Some(PaymentProvider::Stripe),
            limit: 100,
            ..PaymentFilter::default()
        })
        .await
        .unwrap()
}

/// Buys `plan` for the account through the hosted checkout page; the
/// subscription's grant once the webhooks made it.
pub(crate) async fn buy(shop: &Shop, user: &UserRef, plan: &str) -> GrantRecord {
    let redirect = shop
        .web
        .stripe_checkout(&checkout_for(user, plan))
        .await
        .unwrap();
    assert!(
        redirect.url.starts_with(shop.stripe.url()),
        "the visitor goes to Stripe's page: {}",
        redirect.url
    );
    // The customer is recorded before the visitor leaves for Stripe.
    assert!(shop
        .app
        .store()
        .stripe_customer(user)
        .await
        .unwrap()
        .is_some());
    let back = shop.stripe.pay(&redirect.url).await.unwrap();
    assert_eq!(back, SUCCESS);
    let grants = grants_until(&shop.app, user, "the purchase", |g| {
        g.iter()
            .any(|g| g.active && g.plan_id.as_deref() == Some(plan))
    })
    .await;
    grants.into_iter().next().unwrap()
}

async fn a_web_account_buys_starter_renews_and_a_refund_ends_it(backend: Backend) {
    let shop = shop(backend).await;
    let ada = account(&shop.web, "ada@example.org").await;
    let before = shop.web.get_user(&ada.user_ref).await.unwrap();
    assert_eq!(before.plan.id, "free");

    let grant = buy(&shop, &ada.user_ref, "starter").await;
    assert!(grant.reference.starts_with("sub_"), "{grant:?}");
    let quota = shop.web.get_user(&ada.user_ref).await.unwrap();
    assert_eq!(quota.plan.id, "starter");
    assert_eq!(quota.tokens_left_today, Some(STARTER_TOKENS));
    let subscription = grant.reference.clone();
    let sub = shop
        .stripe
        .get(&format!("subscriptions/{subscription}"))
        .await
        .unwrap();
    assert_eq!(
        grant.paid_until,
        sub["current_period_end"].as_i64().unwrap() * 1000,
        "paid until the end of Stripe's period"
    );

    // A renewal pays the next period: paid_until moves on to its end.
    let invoice = shop.stripe.renew(&subscription).await.unwrap();
    let next_end = invoice["lines"]["data"][0]["period"]["end"]
        .as_i64()
        .unwrap()
        * 1000;
    assert!(next_end > grant.paid_until);
    grants_until(&shop.app, &ada.user_ref, "the renewal", |g| {
        g.iter().any(|g| g.paid_until == next_end && g.active)
    })
    .await;
    assert_eq!(
        shop.web.get_user(&ada.user_ref).await.unwrap().plan.id,
        "starter"
    );

    // The refund ends it at once: back on FREE.
    shop.stripe.refund(&subscription).await.unwrap();
    grants_until(&shop.app, &ada.user_ref, "the refund", |g| {
        g.iter().all(|g| !g.active)
    })
    .await;
    assert_eq!(
        shop.web.get_user(&ada.user_ref).await.unwrap().plan.id,
        "free"
    );

    // A dispute of that charge is recorded as a chargeback, found through
    // the charge and its invoice, which the scheduler asks Stripe for.
    shop.stripe.dispute(&subscription).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !stripe_events(&shop.app)
        .await
        .iter()
        .any(|e| e.kind.to_string() == "chargeback")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no chargeback recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // What the ledger holds: each event once, money in and out.
    let events = stripe_events(&shop.app).await;
    let kinds: Vec<String> = events.iter().map(|e| e.kind.to_string()).collect();
    assert!(kinds.contains(&"purchase".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"renewal".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"refund".to_owned()), "{kinds:?}");
    assert!(events
        .iter()
        .all(|e| e.billing_user.as_ref() == Some(&ada.user_ref)));
    let refund = events
        .iter()
        .find(|e| e.kind.to_string() == "refund")
        .unwrap();
    assert_eq!(
        (refund.amount_minor, refund.currency.as_deref()),
        (500, Some("usd"))
    );
    let chargeback = events
        .iter()
        .find(|e| e.kind.to_string() == "chargeback")
        .unwrap();
    assert_eq!(chargeback.reference.as_deref(), Some(subscription.as_str()));
    assert_eq!(chargeback.amount_minor, 500);
    shop.app.shutdown().await;
}

async fn a_linked_telegram_user_shares_the_plan_until_a_cancel_in_the_portal(backend: Backend) {
    let shop = shop(backend).await;
    let tg = shop.app.frontend(Platform::Telegram, TG_BOT).await;
    let ada = account(&shop.web, "ada@example.org").await;
    let chat: UserRef = "telegram:42".parse().unwrap();
    let code = tg.create_link_code(&chat).await.unwrap();
    shop.web
        .redeem_link_code(&ada.user_ref, &code.code)
        .await
        .unwrap();

    // An account that never bought has nothing to manage.
    let portal = StripePortalRequest {
        user_ref: ada.user_ref.clone(),
        return_url: RETURN.into(),
    };
    api_error(
        shop.web.stripe_portal(&portal).await,
        StatusCode::NOT_FOUND,
        "no_payment_customer",
    );

    let grant = buy(&shop, &ada.user_ref, "starter").await;
    let quota = tg.get_user(&chat).await.unwrap();
    assert_eq!(
        quota.plan.id, "starter",
        "the chat user shares the account's plan"
    );
    assert_eq!(quota.tokens_left_today, Some(STARTER_TOKENS));

    // The portal's "Cancel subscription" ends it for both.
    let redirect = shop.web.stripe_portal(&portal).await.unwrap();
    let back = shop
        .stripe
        .cancel_in_portal(&redirect.url, &grant.reference)
        .await
        .unwrap();
    assert_eq!(back, RETURN);
    grants_until(&shop.app, &ada.user_ref, "the cancel", |g| {
        g.iter().all(|g| !g.active)
    })
    .await;
    assert_eq!(tg.get_user(&chat).await.unwrap().plan.id, "free");
    assert_eq!(
        shop.web.get_user(&ada.user_ref).await.unwrap().plan.id,
        "free"
    );
    let cancel = stripe_events(&shop.app)
        .await
        .into_iter()
        .find(|e| e.kind.to_string() == "cancel")
        .expect("the cancel is in the ledger");
    assert_eq!(cancel.reference.as_deref(), Some(grant.reference.as_str()));
    shop.app.shutdown().await;
}

/// `Stripe-Signature` for `body`, signed at `t` with `secret`.
fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn deliver(app: &TestApp, body: &[u8], signature: Option<String>) -> Answer {
    let mut rb = raw(app, Method::POST, "/api/v1/payments/stripe/webhook")
        .header("content-type", "application/json; charset=utf-8")
        .body(body.to_vec());
    if let Some(s) = signature {
        rb = rb.header("stripe-signature", s);
    }
    send(rb).await
}

fn invoice_paid(id: &str, customer: &str, reason: &str, start: i64, end: i64, at: i64) -> Value {
    json!({
        "id": id, "object": "event", "type": "invoice.paid", "created": at,
        "data": {"object": {
            "id": format!("in_{id}"), "object": "invoice", "customer": customer,
            "subscription": "sub_shuffled", "billing_reason": reason,
            "amount_paid": 500, "currency": "usd",
            "lines": {"object": "list", "data": [{
                "type": "subscription", "price": {"id": "price_starter"},
                "period": {"start": start, "end": end}
            }]}
        }}
    })
}

async fn redelivered_and_reordered_webhooks_change_nothing_beyond_the_first(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| configure(c, "http://127.0.0.1:9")).await;
    let web = app.frontend(Platform::Web, WEB).await;
    let ada = account(&web, "ada@example.org").await;
    app.store()
        .put_stripe_customer(&ada.user_ref, "cus_ada", 0)
        .await
        .unwrap();
    let now = now_secs();
    let month = 30 * 86_400;
    let (p1, p2) = (
        (now - 60, now - 60 + month),
        (now - 60 + month, now - 60 + 2 * month),
    );
    let events = [
        invoice_paid(
            "evt_buy",
            "cus_ada",
            "subscription_create",
            p1.0,
            p1.1,
            now - 50,
        ),
        invoice_paid(
            "evt_renew",
            "cus_ada",
            "subscription_cycle",
            p2.0,
            p2.1,
            now - 40,
        ),
        json!({
            "id": "evt_upgrade", "object": "event", "type": "customer.subscription.updated",
            "created": now - 30,
            "data": {"object": {
                "id": "sub_shuffled", "object": "subscription", "customer": "cus_ada",
                "status": "active", "cancel_at_period_end": false,
                "current_period_start": p2.0, "current_period_end": p2.1,
                "items": {"object": "list", "data": [{"price": {"id": "price_pro"}}]}
            }}
        }),
    ];
    let mut deliveries: Vec<Vec<u8>> = events
        .iter()
        .flat_map(|e| std::iter::repeat_n(serde_json::to_vec(e).unwrap(), 5))
        .collect();
    deliveries.shuffle(&mut rand::rng());
    for body in &deliveries {
        let answer = deliver(&app, body, Some(signature(SECRET, now_secs(), body))).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    let ledger = stripe_events(&app).await;
    assert_eq!(ledger.len(), 3, "one row per event: {ledger:?}");
    let grants = app.store().plan_grants(&ada.user_ref).await.unwrap();
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(
        grants[0].plan_id.as_deref(),
        Some("pro"),
        "the newest event sets the plan"
    );
    assert_eq!(
        grants[0].paid_until,
        p2.1 * 1000,
        "paid to the end of the renewal"
    );
    assert!(grants[0].active);
    assert_eq!(web.get_user(&ada.user_ref).await.unwrap().plan.id, "pro");
    app.shutdown().await;
}

async fn forged_stale_and_unsigned_webhooks_are_refused_and_change_nothing(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| configure(c, "http://127.0.0.1:9")).await;
    let web = app.frontend(Platform::Web, WEB).await;
    let ada = account(&web, "ada@example.org").await;
    app.store()
        .put_stripe_customer(&ada.user_ref, "cus_ada", 0)
        .await
        .unwrap();
    let now = now_secs();
    let body = serde_json::to_vec(&invoice_paid(
        "evt_forged",
        "cus_ada",
        "subscription_create",
        now,
        now + 86_400,
        now,
    ))
    .unwrap();
    deliver(
        &app,
        &body,
        Some(signature("whsec_someone_else_entirely", now, &body)),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "webhook_signature_invalid");
    // Signed for another body.
    deliver(&app, &body, Some(signature(SECRET, now, b"{}")))
        .await
        .error(StatusCode::BAD_REQUEST, "webhook_signature_invalid");
    deliver(&app, &body, None)
        .await
        .error(StatusCode::BAD_REQUEST, "webhook_signature_invalid");
    deliver(&app, &body, Some(signature(SECRET, now - 301, &body)))
        .await
        .error(StatusCode::BAD_REQUEST, "webhook_signature_expired");
    assert!(stripe_events(&app).await.is_empty(), "nothing recorded");
    assert_eq!(web.get_user(&ada.user_ref).await.unwrap().plan.id, "free");
    // Signed, but not an event.
    deliver(&app, b"[1, 2]", Some(signature(SECRET, now, b"[1, 2]")))
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_webhook_event");
    // The same event, signed: it applies (the refusals were the signature's).
    let ok = deliver(&app, &body, Some(signature(SECRET, now, &body))).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.body["outcome"], "applied");
    assert_eq!(
        web.get_user(&ada.user_ref).await.unwrap().plan.id,
        "starter"
    );
    app.shutdown().await;
}

async fn a_webhook_for_an_unknown_customer_is_kept_not_applied(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| configure(c, "http://127.0.0.1:9")).await;
    let now = now_secs();
    let body = serde_json::to_vec(&invoice_paid(
        "evt_stranger",
        "cus_nobody_knows",
        "subscription_create",
        now,
        now + 86_400,
        now,
    ))
    .unwrap();
    let answer = deliver(&app, &body, Some(signature(SECRET, now, &body))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["outcome"], "unknown_user");
    let unknown = app
        .store()
        .payment_events(&PaymentFilter {
            unknown_user: true,
            limit: 10,
            ..PaymentFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0].outcome, PaymentOutcome::UnknownUser);
    assert_eq!(unknown[0].event_id, "evt_stranger");
    // Other event types are answered and ignored.
    let other = serde_json::to_vec(&json!({
        "id": "evt_other", "type": "customer.created", "created": now,
        "data": {"object": {"id": "cus_x"}}
    }))
    .unwrap();
    let answer = deliver(&app, &other, Some(signature(SECRET, now, &other))).await;
    assert_eq!(answer.body["outcome"], "ignored");
    assert_eq!(stripe_events(&app).await.len(), 1);
    app.shutdown().await;
}

async fn stripe_down_when_clicking_makes_nothing(backend: Backend) {
    // Nothing listens on the discard port.
    let app = TestApp::spawn_with(backend, |c| configure(c, "http://127.0.0.1:9")).await;
    let web = app.frontend(Platform::Web, WEB).await;
    let ada = account(&web, "ada@example.org").await;
    api_error(
        web.stripe_checkout(&checkout_for(&ada.user_ref, "starter"))
            .await,
        StatusCode::BAD_GATEWAY,
        "payment_provider_unavailable",
    );
    assert_eq!(
        app.store().stripe_customer(&ada.user_ref).await.unwrap(),
        None
    );
    assert!(app
        .store()
        .plan_grants(&ada.user_ref)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(web.get_user(&ada.user_ref).await.unwrap().plan.id, "free");

    // Plans not for sale, and other refusals, before Stripe is asked.
    for plan in ["free", "admin", "nosuchplan"] {
        api_error(
            web.stripe_checkout(&checkout_for(&ada.user_ref, plan))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "plan_not_for_sale",
        );
    }
    let mut bad_url = checkout_for(&ada.user_ref, "starter");
    bad_url.success_url = "javascript:alert(1)".into();
    let e = api_error(
        web.stripe_checkout(&bad_url).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    assert_eq!(e.field.as_deref(), Some("success_url"));
    api_error(
        web.stripe_checkout(&checkout_for(&"web:nobody".parse().unwrap(), "starter"))
            .await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    api_error(
        tg.stripe_checkout(&checkout_for(&ada.user_ref, "starter"))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden_frontend",
    );
    app.shutdown().await;

    // A scheduler with no Stripe key says so.
    let app = TestApp::spawn(backend).await;
    let web = app.frontend(Platform::Web, WEB).await;
    let ada = account(&web, "ada@example.org").await;
    api_error(
        web.stripe_checkout(&checkout_for(&ada.user_ref, "starter"))
            .await,
        StatusCode::NOT_FOUND,
        "payments_not_configured",
    );
    deliver(&app, b"{}", Some(signature(SECRET, now_secs(), b"{}")))
        .await
        .error(StatusCode::NOT_FOUND, "payments_not_configured");
    // With no signature at all, the missing credential is what is refused.
    deliver(&app, b"{}", None)
        .await
        .error(StatusCode::BAD_REQUEST, "webhook_signature_invalid");
    app.shutdown().await;
}

backend_tests!(
    a_web_account_buys_starter_renews_and_a_refund_ends_it,
    a_linked_telegram_user_shares_the_plan_until_a_cancel_in_the_portal,
    redelivered_and_reordered_webhooks_change_nothing_beyond_the_first,
    forged_stale_and_unsigned_webhooks_are_refused_and_change_nothing,
    a_webhook_for_an_unknown_customer_is_kept_not_applied,
    stripe_down_when_clicking_makes_nothing,
);
