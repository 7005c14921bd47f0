//! Adult content on the website, over HTTP as a browser would send it (the
//! session cookie and each page's CSRF token): the real scheduler on both
//! databases and the website as `tessera web` runs it. A `require_nsfw`
//! prompt is refused until the account's owner ticks "I am 18 or older" on
//! the account page; the form needs its token and the tick.

mod common;

use tessera_chat::secret::Secret;
use tessera_core::moderation::{Action, RuleConfig};
use tessera_core::Platform;
use tessera_testkit::{backend_tests, Backend, TestApp};
use tessera_web::WebConfig;

use common::Visitor;

const REFUSED: &str = "asks for adult content, which is not allowed here";

async fn an_account_confirms_its_age_before_adult_prompts_pass(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.moderation.rules = vec![RuleConfig {
            name: "adult".into(),
            words: vec!["nude".into()],
            action: Action::RequireNsfw,
            ..RuleConfig::empty()
        }];
    })
    .await;
    let web_key = app.key(Platform::Web, "web").await;
    let mut config = WebConfig::new(app.base_url(), Secret::new(web_key.clone()));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.cookie_secret = Some(Secret::new("a test secret that is long enough to sign"));
    // Four requests in a row; the rate limit is not under test.
    config.limits.job_burst = 10;
    let web = tessera_web::start(config)
        .await
        .expect("the website starts");
    let mut ada = Visitor::new(&web.base_url()).await;
    ada.sign_up("ada@example.org").await;

    // Before: refused on the form, nothing charged; the account page offers
    // the confirmation.
    let resp = ada.post_image("a nude statue").await;
    let status = resp.status().as_u16();
    let page = resp.text().await.unwrap();
    assert_eq!(status, 422);
    assert!(page.contains(REFUSED), "{page}");
    let account = ada.page("/account").await;
    assert!(account.contains("I am 18 or older"), "{account}");
    assert!(!account.contains("id=\"age-confirmed\""));

    // The form needs its token, and the tick.
    let status = ada
        .post("/account/age", &[("csrf", "0"), ("adult", "yes")])
        .await
        .status()
        .as_u16();
    assert_eq!(status, 403);
    let csrf = ada.csrf.clone();
    let resp = ada.post("/account/age", &[("csrf", &csrf)]).await;
    let status = resp.status().as_u16();
    let page = resp.text().await.unwrap();
    assert_eq!(status, 422);
    assert!(page.contains("Tick the box"), "{page}");
    let status = ada.post_image("a nude statue").await.status().as_u16();
    assert_eq!(status, 422, "still refused");

    // Confirmed: the account page says so, and the prompt is made.
    ada.page("/account").await;
    let csrf = ada.csrf.clone();
    let resp = ada
        .post("/account/age", &[("csrf", &csrf), ("adult", "yes")])
        .await;
    let status = resp.status().as_u16();
    let page = resp.text().await.unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("id=\"age-confirmed\""), "{page}");
    let status = ada.post_image("a nude statue").await.status().as_u16();
    assert_eq!(status, 303, "made, and off to its job page");

    let api = app.client_with(&web_key);
    let jobs = api
        .list_jobs(&tessera_api::public::ListJobsQuery::default())
        .await
        .unwrap()
        .jobs;
    assert_eq!(jobs.len(), 1, "only the confirmed account's job was made");
    let record = app
        .store()
        .get_job(&jobs[0].job_id, None)
        .await
        .unwrap()
        .unwrap();
    assert!(record.adult_allowed);
    web.shutdown().await.expect("the website stops cleanly");
}

backend_tests!(an_account_confirms_its_age_before_adult_prompts_pass);
