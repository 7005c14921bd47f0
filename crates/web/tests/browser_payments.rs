//! Buying a plan in a real browser: a visitor signs up, presses "Upgrade to
//! STARTER" on the pricing page, lands on the hosted Checkout page (our
//! wrapper of localstripe, a third-party Stripe emulator), pays, comes back
//! to the account page, and sees STARTER and its tokens once Stripe's signed
//! webhook reached the scheduler; "Manage subscription" opens the portal,
//! where cancelling puts the account back on FREE; and with Stripe gone, the
//! upgrade button answers a page saying nothing was charged.

mod common;

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};

use tessera_chat::secret::Secret;
use tessera_core::Platform;
use tessera_testkit::localstripe::LocalStripe;
use tessera_testkit::{Backend, TestApp};
use tessera_web::WebConfig;

use common::*;

const SECRET: &str = "whsec_browser_payments";

/// Waits until the browser is on a page whose URL starts with `prefix`.
async fn arrive(c: &Client, prefix: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let url = c.current_url().await.map(|u| u.to_string());
        if url.as_ref().is_ok_and(|u| u.starts_with(prefix)) {
            let ready = js(c, "return document.readyState === 'complete';").await;
            if ready == serde_json::json!(true) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "never reached {prefix}: at {url:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reloads the account page until it shows `plan` (the webhook takes a
/// second or so after the payment).
async fn plan_becomes(c: &Client, site: &str, plan: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        c.goto(&format!("{site}/account"))
            .await
            .expect("account page");
        let shown = text_of(c, "#plan-name").await;
        if shown == plan {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the account page still says {shown}, not {plan}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .expect("clicking");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_buys_starter_on_stripes_page_and_cancels_it_in_the_portal() {
    let stripe = tokio::task::spawn_blocking(LocalStripe::start)
        .await
        .unwrap();
    stripe.monthly_price("price_starter", 500).await.unwrap();
    stripe.monthly_price("price_pro", 1200).await.unwrap();
    let base = stripe.url().to_owned();
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        let s = &mut c.payments.stripe;
        s.api_base = base.clone();
        s.secret_key = Some("sk_test_browser_payments".into());
        s.webhook_secret = Some(SECRET.into());
        s.prices = [("starter", "price_starter"), ("pro", "price_pro")]
            .into_iter()
            .map(|(plan, price)| (plan.to_owned(), price.to_owned()))
            .collect();
    })
    .await;
    stripe
        .register_webhook(
            "tessera",
            &format!("{}/api/v1/payments/stripe/webhook", app.base_url()),
            SECRET,
            None,
        )
        .await
        .unwrap();
    let web_key = app.key(Platform::Web, "web").await;
    let mut config = WebConfig::new(app.base_url(), Secret::new(web_key));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.cookie_secret = Some(Secret::new("a test secret that is long enough to sign"));
    let web = tessera_web::start(config)
        .await
        .expect("the website starts");
    let site = web.base_url();

    let b = browser().await;
    let c = &b.client;

    // A visitor not signed in is asked to sign up; no button to press yet.
    c.goto(&format!("{site}/pricing")).await.unwrap();
    assert!(text_of(c, "main").await.contains("to upgrade"));
    assert!(c.find(Locator::Css("#buy-starter")).await.is_err());

    c.goto(&format!("{site}/signup")).await.unwrap();
    fill(c, "#email", "buyer@example.com").await;
    fill(c, "#password", "correct horse battery").await;
    submit(c, "form[action='/signup']").await;
    assert!(
        path(c).await.starts_with("/generate"),
        "{:?}",
        text_of(c, "main").await
    );

    // The pricing page offers both plans for sale; the account is FREE.
    c.goto(&format!("{site}/pricing")).await.unwrap();
    assert!(text_of(c, "#buy-pro").await.contains("$12"));
    assert!(text_of(c, "#buy-starter")
        .await
        .contains("Upgrade to STARTER"));
    click(c, "#buy-starter").await;

    // Off to Stripe's page, which names the price; pay.
    arrive(c, &format!("{base}/hosted/checkout/")).await;
    assert!(text_of(c, "h1").await.contains("price_starter"));
    click(c, "button[type=submit]").await;

    // Back on the account page, thanked; the plan follows the webhook.
    arrive(c, &format!("{site}/account?paid=1")).await;
    assert!(text_of(c, "[role=status]").await.contains("Thank you"));
    plan_becomes(c, &site, "STARTER").await;
    assert_eq!(
        text_of(c, "#tokens-left").await,
        "120 of 120 tokens left today"
    );
    // STARTER is not offered to whom has it; PRO still is.
    assert!(c.find(Locator::Css("#buy-starter")).await.is_err());
    assert!(c.find(Locator::Css("#buy-pro")).await.is_ok());

    // Manage subscription: the portal, where the buyer cancels.
    click(c, "#manage-subscription").await;
    arrive(c, &format!("{base}/hosted/portal/")).await;
    click(c, "button[type=submit]").await;
    arrive(c, &format!("{site}/account")).await;
    plan_becomes(c, &site, "FREE").await;

    // Stripe gone: the button answers a page that says nothing was charged.
    drop(stripe);
    c.goto(&format!("{site}/pricing")).await.unwrap();
    click(c, "#buy-starter").await;
    let deadline = Instant::now() + WAIT;
    loop {
        // The click navigates: the heading read may be the pricing page's,
        // or gone between finding it and reading it.
        let h1 = text_now(c, "h1").await;
        if h1.as_deref() == Some("Payments are unavailable right now") {
            break;
        }
        assert!(Instant::now() < deadline, "the page says {h1:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(text_of(c, "main").await.contains("Nothing was charged"));
    c.goto(&format!("{site}/account")).await.unwrap();
    assert_eq!(text_of(c, "#plan-name").await, "FREE");

    drop(b);
    web.shutdown().await.unwrap();
    app.shutdown().await;
}
