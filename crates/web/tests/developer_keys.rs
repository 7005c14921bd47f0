//! Developer keys on the account page, over HTTP as a browser would send
//! them (the session cookie and each page's CSRF token): the real scheduler
//! on both databases and the website as `tessera web` runs it. A key is made
//! with a name and the capabilities ticked, its secret shown in that answer
//! only, listed, and revoked; every form needs its token and an account.

mod common;

use tessera_api::public::NewDeveloperKeyRequest;
use tessera_chat::secret::Secret;
use tessera_core::{Capability, Platform, UserRef};
use tessera_scheduler::auth::hash_secret;
use tessera_testkit::{backend_tests, Backend, TestApp};
use tessera_web::{WebConfig, WebHandle};

use common::Visitor;

async fn site(app: &TestApp, web_key: &str, scheduler_public_url: Option<&str>) -> WebHandle {
    let mut config = WebConfig::new(app.base_url(), Secret::new(web_key));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.cookie_secret = Some(Secret::new("a test secret that is long enough to sign"));
    config.scheduler_public_url = scheduler_public_url.map(str::to_owned);
    tessera_web::start(config)
        .await
        .expect("the website starts")
}

/// The secret a page shows, if any: `tdk_` and 40 hex digits.
fn secret_in(page: &str) -> Option<String> {
    page.match_indices("tdk_").find_map(|(at, _)| {
        let hex: String = page[at + 4..].chars().take(40).collect();
        (hex.len() == 40 && hex.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| format!("tdk_{hex}"))
    })
}

/// The revoke buttons' form actions, in the list's order.
fn revoke_paths(page: &str) -> Vec<String> {
    page.split("action=\"/account/keys/")
        .skip(1)
        .filter_map(|rest| rest.split(['"', '#']).next())
        .map(|tail| format!("/account/keys/{tail}"))
        .collect()
}

async fn user_of(app: &TestApp, email: &str) -> UserRef {
    app.store()
        .account_by_email(email)
        .await
        .unwrap()
        .expect("an account")
        .0
        .user_ref
}

async fn keys_are_made_shown_once_listed_and_revoked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let web_key = app.key(Platform::Web, "web").await;
    let api = app.client_with(&web_key);
    let web = site(&app, &web_key, Some("https://api.tessera.example/")).await;

    // Signed out: every part of it leads to the sign-in page.
    let mut visitor = Visitor::new(&web.base_url()).await;
    let resp = visitor.get("/account").await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/signin");
    let csrf = visitor.csrf.clone();
    for (path, form) in [
        (
            "/account/keys",
            vec![("csrf", csrf.as_str()), ("name", "k")],
        ),
        (
            "/account/keys/dkey_01JD3Z8X9Q4W6E2R5T7Y9V1K3M/revoke",
            vec![("csrf", csrf.as_str())],
        ),
    ] {
        let resp = visitor.post(path, &form).await;
        assert_eq!(resp.status(), 303, "{path}");
        assert_eq!(resp.headers()["location"], "/signin", "{path}");
    }

    let mut ada = Visitor::new(&web.base_url()).await;
    ada.sign_up("ada@example.org").await;
    let user = user_of(&app, "ada@example.org").await;
    let page = ada.page("/account").await;
    assert!(page.contains("Developer keys"), "{page}");
    assert!(page.contains("id=\"no-keys\""), "{page}");
    assert!(
        page.contains("<code id=\"api-base\">https://api.tessera.example/v1</code>"),
        "{page}"
    );
    assert!(!page.contains("id=\"api-base-note\""), "{page}");
    assert!(page.contains("Authorization: Bearer tdk_"), "{page}");

    // The form needs its token: nothing is made without it.
    let resp = ada
        .post("/account/keys", &[("csrf", "0"), ("name", "laptop")])
        .await;
    assert_eq!(resp.status(), 403);
    assert!(api.developer_keys(&user).await.unwrap().keys.is_empty());

    // Refused names and capabilities: the form again, with what was sent.
    let csrf = ada.csrf.clone();
    let resp = ada
        .post(
            "/account/keys",
            &[("csrf", &csrf), ("name", "   "), ("capability", "video")],
        )
        .await;
    assert_eq!(resp.status(), 422);
    let page = resp.text().await.unwrap();
    assert!(page.contains("id=\"key-name-error\""), "{page}");
    assert!(page.contains("value=\"video\" checked"), "{page}");
    let resp = ada
        .post(
            "/account/keys",
            &[
                ("csrf", &csrf),
                ("name", "laptop"),
                ("capability", "teleportation"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 422);
    let page = resp.text().await.unwrap();
    assert!(page.contains("id=\"key-capabilities-error\""), "{page}");
    assert!(page.contains("value=\"laptop\""), "{page}");
    assert!(api.developer_keys(&user).await.unwrap().keys.is_empty());

    // Made: its secret is in this answer, which no cache may keep.
    let resp = ada
        .post(
            "/account/keys",
            &[
                ("csrf", &csrf),
                ("name", "Open WebUI <laptop>"),
                ("capability", "text"),
                ("capability", "image"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let page = resp.text().await.unwrap();
    assert!(page.contains("id=\"new-key\""), "{page}");
    assert!(page.contains("it will not be shown again"), "{page}");
    assert!(
        page.contains("Open WebUI &lt;laptop&gt;"),
        "the name is escaped: {page}"
    );
    let secret = secret_in(&page).expect("the new secret on the page");
    // It is the key's: the scheduler finds it by the hash of that secret.
    let stored = app
        .store()
        .find_developer_key(&hash_secret(&secret))
        .await
        .unwrap()
        .expect("a live key with this secret");
    assert_eq!(stored.account, user);
    assert_eq!(
        stored.capabilities,
        Some(vec![Capability::Text, Capability::Image])
    );

    // Listed from then on, and the secret never shown again.
    let page = ada.page("/account").await;
    assert_eq!(secret_in(&page), None, "{page}");
    assert!(!page.contains("id=\"new-key\""), "{page}");
    let row = format!("id=\"key-{}\"", stored.id);
    assert!(page.contains(&row), "{page}");
    assert!(page.contains("Text, Image"), "{page}");
    assert!(page.contains("Never"), "{page}");
    let revoke = revoke_paths(&page);
    assert_eq!(revoke, vec![format!("/account/keys/{}/revoke", stored.id)]);

    // Another account's key, or no key at all, cannot be revoked here.
    let bobs = api
        .create_developer_key(
            &api.create_account(&tessera_api::public::Credentials {
                email: "bob@example.org".into(),
                password: "correct horse battery".into(),
            })
            .await
            .unwrap()
            .user_ref,
            &NewDeveloperKeyRequest {
                name: "bob's".into(),
                capabilities: None,
            },
        )
        .await
        .unwrap();
    for path in [
        format!("/account/keys/{}/revoke", bobs.key.key_id),
        "/account/keys/dkey_nope/revoke".to_owned(),
    ] {
        let csrf = ada.csrf.clone();
        let status = ada.post(&path, &[("csrf", &csrf)]).await.status();
        assert_eq!(status, 404, "{path}");
    }
    assert!(app
        .store()
        .find_developer_key(&hash_secret(&bobs.api_key))
        .await
        .unwrap()
        .is_some());

    // Revoking needs the token too; then the key stops.
    let status = ada.post(&revoke[0], &[("csrf", "0")]).await.status();
    assert_eq!(status, 403);
    let csrf = ada.csrf.clone();
    let resp = ada.post(&revoke[0], &[("csrf", &csrf)]).await;
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("Revoked \u{201c}Open WebUI &lt;laptop&gt;\u{201d}"),
        "{page}"
    );
    assert!(
        revoke_paths(&page).is_empty(),
        "no button for a revoked key"
    );
    assert!(page.contains(&row), "still listed: {page}");
    assert!(app
        .store()
        .find_developer_key(&hash_secret(&secret))
        .await
        .unwrap()
        .is_none());
    web.shutdown().await.expect("the website stops cleanly");
}

async fn twenty_live_keys_are_the_most(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let web_key = app.key(Platform::Web, "web").await;
    let api = app.client_with(&web_key);
    let web = site(&app, &web_key, None).await;
    let mut ada = Visitor::new(&web.base_url()).await;
    ada.sign_up("ada@example.org").await;
    let user = user_of(&app, "ada@example.org").await;

    // Without a public address configured, the page says whose address it shows.
    let page = ada.page("/account").await;
    let base = format!("<code id=\"api-base\">{}/v1</code>", app.base_url());
    assert!(page.contains(&base), "{page}");
    assert!(page.contains("id=\"api-base-note\""), "{page}");

    for n in 0..20 {
        let request = NewDeveloperKeyRequest {
            name: format!("key {n}"),
            capabilities: None,
        };
        api.create_developer_key(&user, &request).await.unwrap();
    }
    let csrf = ada.csrf.clone();
    let resp = ada
        .post("/account/keys", &[("csrf", &csrf), ("name", "one more")])
        .await;
    assert_eq!(resp.status(), 409);
    let page = resp.text().await.unwrap();
    assert!(page.contains("Revoke one"), "{page}");
    assert!(page.contains("value=\"one more\""), "{page}");
    assert_eq!(secret_in(&page), None);
    assert_eq!(revoke_paths(&page).len(), 20);
    assert_eq!(api.developer_keys(&user).await.unwrap().keys.len(), 20);
    web.shutdown().await.expect("the website stops cleanly");
}

backend_tests!(
    keys_are_made_shown_once_listed_and_revoked,
    twenty_live_keys_are_the_most,
);
