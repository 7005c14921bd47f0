//! Developer keys: made, listed and revoked by a website for its signed-in
//! account, the secret shown once and kept only as its hash, names and
//! capability lists checked, at most 20 live keys an account, and only the
//! account's own website's key reaching them.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use tessera_api::public::{Credentials, NewDeveloperKeyRequest};
use tessera_api::Client;
use tessera_core::{Capability, DeveloperKeyId, Platform, UserRef};
use tessera_scheduler::auth::hash_secret;
use tessera_testkit::{backend_tests, Backend, TestApp};

use crate::common::*;

/// A new account of `client`'s website.
async fn account(client: &Client, email: &str) -> UserRef {
    client
        .create_account(&Credentials {
            email: email.to_owned(),
            password: "correct horse battery".to_owned(),
        })
        .await
        .expect("a new account")
        .user_ref
}

fn named(name: &str) -> NewDeveloperKeyRequest {
    NewDeveloperKeyRequest {
        name: name.to_owned(),
        capabilities: None,
    }
}

fn keys_path(user_ref: &UserRef) -> String {
    format!("/api/v1/accounts/{user_ref}/developer-keys")
}

async fn a_key_is_made_its_secret_shown_once_and_listed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let web_key = app.key(Platform::Web, WEB).await;
    let web = app.client_with(&web_key);
    let ada = account(&web, "ada@example.org").await;

    // Made: 201, the secret with it, the name trimmed, every capability.
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let made = send(
        raw(&app, Method::POST, &keys_path(&ada))
            .bearer_auth(&web_key)
            .json(&json!({"name": "  Open WebUI on my laptop  "})),
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let first: tessera_api::public::CreatedDeveloperKey =
        serde_json::from_value(made.body.clone()).expect("a created key");
    assert!(made.body.get("capabilities").is_none(), "{}", made.body);
    assert!(made.body.get("last_used_at").is_none(), "{}", made.body);
    assert!(made.body.get("revoked_at").is_none(), "{}", made.body);
    let secret = first.api_key.clone();
    let hex = secret
        .strip_prefix("tdk_")
        .expect("a developer key's prefix");
    assert_eq!(hex.len(), 40, "{secret}");
    assert!(
        hex.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{secret}"
    );
    assert!(first.key.key_id.as_str().starts_with("dkey_"));
    assert_eq!(first.key.name, "Open WebUI on my laptop");
    assert_eq!(first.key.capabilities, None);
    assert!(first.key.created_at > before && first.key.created_at <= chrono::Utc::now());
    assert_eq!((first.key.last_used_at, first.key.revoked_at), (None, None));
    // Only its hash is kept.
    let stored = app
        .store()
        .find_developer_key(&hash_secret(&secret))
        .await
        .unwrap()
        .expect("found by the hash of its secret");
    assert_eq!(stored.id, first.key.key_id);
    assert_eq!(stored.account, ada);
    assert_eq!(stored.home_bot.as_str(), WEB);

    // A second, limited to two capabilities, in the order given.
    let second = web
        .create_developer_key(
            &ada,
            &NewDeveloperKeyRequest {
                name: "transcripts ✓".into(),
                capabilities: Some(vec![Capability::SpeechToText, Capability::Text]),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        second.key.capabilities,
        Some(vec![Capability::SpeechToText, Capability::Text])
    );
    assert_ne!(second.api_key, secret);

    // Listed oldest first, as made, and never with a secret.
    let listed = web.developer_keys(&ada).await.unwrap();
    assert_eq!(listed.keys, vec![first.key.clone(), second.key.clone()]);
    let raw_list = send(raw(&app, Method::GET, &keys_path(&ada)).bearer_auth(&web_key)).await;
    assert_eq!(raw_list.status, StatusCode::OK, "{}", raw_list.body);
    let text = raw_list.body.to_string();
    for shown in [&secret, &second.api_key] {
        assert!(!text.contains(shown.as_str()), "a secret listed: {text}");
    }
    assert!(
        !text.contains("api_key") && !text.contains("tdk_"),
        "{text}"
    );

    // Another account of the same website sees none of them.
    let bob = account(&web, "bob@example.org").await;
    assert!(web.developer_keys(&bob).await.unwrap().keys.is_empty());
    app.shutdown().await;
}

async fn names_and_capability_lists_are_checked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let web_key = app.key(Platform::Web, WEB).await;
    let web = app.client_with(&web_key);
    let ada = account(&web, "ada@example.org").await;

    let long = "n".repeat(65);
    for name in [
        "",
        "   ",
        long.as_str(),
        "line\nbreak",
        "bell\u{7}",
        "tab\tbed",
        "nul\u{0}",
    ] {
        let e = api_error(
            web.create_developer_key(&ada, &named(name)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        );
        assert_eq!(e.field.as_deref(), Some("name"), "{name:?}");
    }
    for list in [
        vec![],
        vec![Capability::Text, Capability::Text],
        vec![Capability::Image, Capability::Text, Capability::Image],
    ] {
        let e = api_error(
            web.create_developer_key(
                &ada,
                &NewDeveloperKeyRequest {
                    name: "k".into(),
                    capabilities: Some(list.clone()),
                },
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        );
        assert_eq!(e.field.as_deref(), Some("capabilities"), "{list:?}");
    }
    // What the typed client cannot send: an unknown capability, an unknown
    // field, no name.
    for body in [
        json!({"name": "k", "capabilities": ["teleportation"]}),
        json!({"name": "k", "scopes": ["image"]}),
        json!({"capabilities": ["image"]}),
        json!({"name": 7}),
    ] {
        send(
            raw(&app, Method::POST, &keys_path(&ada))
                .bearer_auth(&web_key)
                .json(&body),
        )
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    }
    // Nothing was made.
    assert!(web.developer_keys(&ada).await.unwrap().keys.is_empty());

    // 64 characters, counted as characters, will do.
    let most = "é".repeat(64);
    let key = web.create_developer_key(&ada, &named(&most)).await.unwrap();
    assert_eq!(key.key.name, most);
    app.shutdown().await;
}

async fn only_the_accounts_own_website_reaches_its_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let web_key = app.key(Platform::Web, WEB).await;
    let web = app.client_with(&web_key);
    let demo = app.frontend(Platform::Web, DEMO).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let ada = account(&web, "ada@example.org").await;
    let key = web.create_developer_key(&ada, &named("k")).await.unwrap();

    // A bot's key: accounts are the website's.
    api_error(
        tg.developer_keys(&ada).await,
        StatusCode::FORBIDDEN,
        "forbidden_frontend",
    );
    api_error(
        tg.create_developer_key(&ada, &named("k")).await,
        StatusCode::FORBIDDEN,
        "forbidden_frontend",
    );
    api_error(
        tg.revoke_developer_key(&ada, &key.key.key_id).await,
        StatusCode::FORBIDDEN,
        "forbidden_frontend",
    );
    // Another web bot's key: the account does not exist for it.
    api_error(
        demo.developer_keys(&ada).await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );
    api_error(
        demo.create_developer_key(&ada, &named("k")).await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );
    api_error(
        demo.revoke_developer_key(&ada, &key.key.key_id).await,
        StatusCode::NOT_FOUND,
        "key_not_found",
    );
    // A web user with no account, and users the website cannot speak for.
    let nobody: UserRef = "web:nobody".parse().unwrap();
    api_error(
        web.developer_keys(&nobody).await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );
    api_error(
        web.create_developer_key(&nobody, &named("k")).await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );
    api_error(
        web.developer_keys("telegram:1").await,
        StatusCode::FORBIDDEN,
        "forbidden_user_ref",
    );
    for path in [
        "/api/v1/accounts/nobody/developer-keys",
        "/api/v1/accounts/web:a%00b/developer-keys",
    ] {
        let e = send(raw(&app, Method::GET, path).bearer_auth(&web_key))
            .await
            .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_user_ref");
        assert_eq!(e.field.as_deref(), Some("user_ref"), "{path}");
    }
    // No credential; and a developer key, a real credential of the wrong
    // kind here (it is no frontend key, not even its own account's).
    send(raw(&app, Method::GET, &keys_path(&ada)))
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    api_error(
        app.client_with(&key.api_key).developer_keys(&ada).await,
        StatusCode::FORBIDDEN,
        "wrong_credential",
    );

    // The key is untouched by all of it.
    let listed = web.developer_keys(&ada).await.unwrap();
    assert_eq!(listed.keys, vec![key.key]);
    app.shutdown().await;
}

async fn an_account_holds_at_most_twenty_live_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let web = app.frontend(Platform::Web, WEB).await;
    let ada = account(&web, "ada@example.org").await;
    let bob = account(&web, "bob@example.org").await;
    let mut made = Vec::new();
    for n in 0..20 {
        made.push(
            web.create_developer_key(&ada, &named(&format!("key {n}")))
                .await
                .unwrap(),
        );
    }
    api_error(
        web.create_developer_key(&ada, &named("one too many")).await,
        StatusCode::CONFLICT,
        "too_many_keys",
    );
    // Another account's count is its own.
    web.create_developer_key(&bob, &named("bob's"))
        .await
        .unwrap();
    // A revoked key frees its place, once.
    web.revoke_developer_key(&ada, &made[3].key.key_id)
        .await
        .unwrap();
    web.create_developer_key(&ada, &named("in its place"))
        .await
        .unwrap();
    api_error(
        web.create_developer_key(&ada, &named("one too many")).await,
        StatusCode::CONFLICT,
        "too_many_keys",
    );
    let listed = web.developer_keys(&ada).await.unwrap().keys;
    assert_eq!(listed.len(), 21);
    assert_eq!(listed.iter().filter(|k| k.revoked_at.is_none()).count(), 20);
    app.shutdown().await;
}

async fn revoking_is_the_owners_and_keeps_the_first_time(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let web_key = app.key(Platform::Web, WEB).await;
    let web = app.client_with(&web_key);
    let ada = account(&web, "ada@example.org").await;
    let bob = account(&web, "bob@example.org").await;
    let adas = web
        .create_developer_key(&ada, &named("ada's"))
        .await
        .unwrap();
    let bobs = web
        .create_developer_key(&bob, &named("bob's"))
        .await
        .unwrap();

    // An unknown key, an id that is no key's, and another account's key.
    api_error(
        web.revoke_developer_key(&ada, &DeveloperKeyId::generate())
            .await,
        StatusCode::NOT_FOUND,
        "key_not_found",
    );
    for id in [
        "dkey_nope",
        "key_01JD3Z8X9Q4W6E2R5T7Y9V1K3M",
        "..%2F..%2Fetc",
    ] {
        send(raw(&app, Method::DELETE, &format!("{}/{id}", keys_path(&ada))).bearer_auth(&web_key))
            .await
            .error(StatusCode::NOT_FOUND, "key_not_found");
    }
    api_error(
        web.revoke_developer_key(&ada, &bobs.key.key_id).await,
        StatusCode::NOT_FOUND,
        "key_not_found",
    );
    assert_eq!(
        web.developer_keys(&bob).await.unwrap().keys,
        vec![bobs.key.clone()],
        "another account's key stays live"
    );

    // Revoked by its owner; revoking again keeps the first time.
    let revoked = web
        .revoke_developer_key(&ada, &adas.key.key_id)
        .await
        .unwrap();
    let at = revoked.revoked_at.expect("revoked");
    assert_eq!(
        revoked,
        tessera_api::public::DeveloperKeyView {
            revoked_at: Some(at),
            ..adas.key.clone()
        }
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let again = web
        .revoke_developer_key(&ada, &adas.key.key_id)
        .await
        .unwrap();
    assert_eq!(again.revoked_at, Some(at));
    assert!(app
        .store()
        .find_developer_key(&hash_secret(&adas.api_key))
        .await
        .unwrap()
        .is_none());
    // Still listed, as revoked.
    assert_eq!(web.developer_keys(&ada).await.unwrap().keys, vec![revoked]);
    app.shutdown().await;
}

/// The API document describes the three routes, with the frontend key as
/// their credential and their answers' schemas.
async fn the_api_document_describes_the_routes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = send(raw(&app, Method::GET, "/api/openapi.json")).await;
    assert_eq!(doc.status, StatusCode::OK);
    let paths = &doc.body["paths"];
    let keys = &paths["/api/v1/accounts/{user_ref}/developer-keys"];
    let one = &paths["/api/v1/accounts/{user_ref}/developer-keys/{key_id}"];
    for (operation, method, answers) in [
        (&keys["get"], "get", &["200", "403", "404", "422"][..]),
        (
            &keys["post"],
            "post",
            &["201", "403", "404", "409", "422"][..],
        ),
        (&one["delete"], "delete", &["200", "403", "404", "422"][..]),
    ] {
        assert!(operation.is_object(), "{method} missing: {paths}");
        assert_eq!(
            operation["security"],
            json!([{"frontend_key": []}]),
            "{method}"
        );
        for status in answers {
            assert!(
                operation["responses"].get(*status).is_some(),
                "{method} without a {status} answer: {operation}"
            );
        }
    }
    let schema_ref = |operation: &serde_json::Value, status: &str| {
        operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(schema_ref(&keys["get"], "200").ends_with("/DeveloperKeyList"));
    assert!(schema_ref(&keys["post"], "201").ends_with("/CreatedDeveloperKey"));
    assert!(schema_ref(&one["delete"], "200").ends_with("/DeveloperKeyView"));
    let body = &keys["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"];
    assert!(body
        .as_str()
        .is_some_and(|r| r.ends_with("/NewDeveloperKeyRequest")));
    for schema in [
        "NewDeveloperKeyRequest",
        "DeveloperKeyView",
        "CreatedDeveloperKey",
        "DeveloperKeyList",
    ] {
        assert!(
            doc.body["components"]["schemas"].get(schema).is_some(),
            "{schema} missing"
        );
    }
    app.shutdown().await;
}

backend_tests!(
    a_key_is_made_its_secret_shown_once_and_listed,
    names_and_capability_lists_are_checked,
    only_the_accounts_own_website_reaches_its_keys,
    an_account_holds_at_most_twenty_live_keys,
    revoking_is_the_owners_and_keeps_the_first_time,
    the_api_document_describes_the_routes,
);
