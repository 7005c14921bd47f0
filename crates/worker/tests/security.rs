//! The security matrix: every endpoint of the scheduler and of a worker, asked
//! with every kind of credential, answers the status its boundary promises
//! (ARCHITECTURE.md, "Invariants"). Credentials: none, a frontend key (the Telegram bot
//! that owns the job), another frontend's key (a Discord bot), the
//! website's key (which alone may use accounts), another web bot's key (the
//! demo key `tessera up` prints: each web bot id is its own trust domain, so
//! the website's accounts do not exist for it), a developer key of the
//! website's account (a person's key for the gateway, no frontend key: on
//! every route here it is refused as a key that is nobody's), the internal
//! token workers use, the admin token, the metrics token, and a token that is
//! nobody's.
//! Every refusal is the JSON error envelope.
//!
//! Expected statuses are written out per cell, so a route added without a
//! row here, or a boundary that moves, fails this test.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{json, Value};

use tessera_api::public::CreateJobRequest;
use tessera_core::{Capability, JobState, Platform};
use tessera_testkit::{backend_tests, sim, Backend, TestApp};

const OWNER: &str = "tg-image-bot-1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    Nobody,
    Owner,
    OtherFrontend,
    Internal,
    Admin,
    Metrics,
    Forged,
    Web,
    OtherWeb,
    Developer,
}

const EVERYONE: [Who; 10] = [
    Who::Nobody,
    Who::Owner,
    Who::OtherFrontend,
    Who::Internal,
    Who::Admin,
    Who::Metrics,
    Who::Forged,
    Who::Web,
    Who::OtherWeb,
    Who::Developer,
];

struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    /// Expected status per credential; the rest of `EVERYONE` expect `otherwise`.
    expect: Vec<(Who, u16)>,
    otherwise: u16,
}

fn call(method: Method, path: impl Into<String>, body: Option<Value>) -> Call {
    Call {
        method,
        path: path.into(),
        body,
        expect: Vec::new(),
        otherwise: 0,
    }
}

impl Call {
    fn when(mut self, who: &[Who], status: u16) -> Self {
        for w in who {
            self.expect.push((*w, status));
        }
        self
    }

    fn otherwise(mut self, status: u16) -> Self {
        self.otherwise = status;
        self
    }

    fn expected(&self, who: Who) -> u16 {
        self.expect
            .iter()
            .find(|(w, _)| *w == who)
            .map_or(self.otherwise, |(_, s)| *s)
    }
}

/// Asks every call with every credential; answers the cells that differ from
/// what was expected, as `METHOD path as WHO: got N, expected M`.
async fn ask(base: &str, tokens: &BTreeMap<Who, String>, calls: &[Call]) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut wrong = Vec::new();
    for c in calls {
        for who in EVERYONE {
            let mut req = http.request(c.method.clone(), format!("{base}{}", c.path));
            if let Some(token) = tokens.get(&who) {
                req = req.bearer_auth(token);
            }
            if let Some(body) = &c.body {
                req = req.json(body);
            }
            let resp = req.send().await.expect("a response");
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let expected = c.expected(who);
            if status.as_u16() != expected {
                wrong.push(format!(
                    "{} {} as {who:?}: got {status}, expected {expected} ({text})",
                    c.method, c.path
                ));
            }
            if !status.is_success() {
                let body: Result<Value, _> = serde_json::from_str(&text);
                let coded = body.as_ref().is_ok_and(|b| {
                    b["error"]["code"].is_string() && b["error"]["message"].is_string()
                });
                if !coded {
                    wrong.push(format!(
                        "{} {} as {who:?}: {status} without the error envelope: {text}",
                        c.method, c.path
                    ));
                }
            }
        }
    }
    wrong
}

async fn every_endpoint_answers_only_its_credential(backend: Backend) {
    let metrics_token = tessera_scheduler::auth::new_token();
    let m = metrics_token.clone();
    let app = TestApp::spawn_with(backend, move |c| {
        c.auth.metrics_token = Some(m);
        c.workers.heartbeat_interval_ms = 200;
        // Telegram sells STARTER for Stars.
        c.payments.telegram.stars.insert("starter".into(), 250);
        // Stripe on, at a port where nothing listens: a call that passes its
        // boundary reaches Stripe and is told it is down.
        c.payments.stripe.api_base = "http://127.0.0.1:9".into();
        c.payments.stripe.secret_key = Some("sk_test_security_matrix".into());
        c.payments.stripe.webhook_secret = Some("whsec_security_matrix".into());
        c.payments.stripe.prices = [("starter".to_owned(), "price_starter".to_owned())].into();
    })
    .await;
    let owner_key = app.key(Platform::Telegram, OWNER).await;
    let other_key = app.key(Platform::Discord, "dc-image-bot-1").await;
    let web_key = app.key(Platform::Web, "web-1").await;
    let other_web_key = app.key(Platform::Web, "demo").await;
    let web = app.client_with(&web_key);
    let owner = app.client_with(&owner_key);
    let worker = app
        .worker(
            "worker-gpu-0",
            vec![sim(Capability::Image, &["sdxl-1.0"], 0)],
        )
        .await;

    // A finished job with an artifact, a queued one to cancel, an input.
    let new_job = |prompt: &str| CreateJobRequest {
        callback_url: None,
        context: None,
        frontend: Platform::Telegram,
        bot_id: OWNER.parse().unwrap(),
        capability: Capability::Image,
        user_ref: "telegram:1".parse().unwrap(),
        reply_context: None,
        params: json!({"prompt": prompt, "resolution": "512x512"}),
    };
    let done = owner
        .create_job(&new_job("a fox"), None)
        .await
        .unwrap()
        .job
        .job_id;
    let job = loop {
        let job = owner.get_job(&done).await.unwrap();
        if job.status == JobState::Completed {
            break job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let artifact = job.artifacts[0].artifact_id.clone();
    // A download link to it, which a website redeems without an account.
    let link = owner.create_download_link(&artifact).await.unwrap().token;
    worker.shutdown().await.unwrap();
    let queued = owner
        .create_job(&new_job("a cat"), None)
        .await
        .unwrap()
        .job
        .job_id;
    let input = owner
        .upload_input("audio/wav", b"RIFF....WAVE".to_vec())
        .await
        .unwrap()
        .input_id;
    let doomed = owner
        .create_job(&new_job("a dog"), None)
        .await
        .unwrap()
        .job
        .job_id;
    let spare_key = app
        .admin
        .create_key(&tessera_api::admin::CreateKeyRequest {
            frontend: Platform::Web,
            bot_id: "web-spare".parse().unwrap(),
        })
        .await
        .unwrap()
        .key
        .key_id;

    // An account, and a code its bot user asked for, for the website to redeem.
    let password = "correct horse battery";
    let account = web
        .create_account(&tessera_api::public::Credentials {
            email: "ada@example.org".into(),
            password: password.into(),
        })
        .await
        .unwrap()
        .user_ref;
    let code = owner
        .create_link_code(&"telegram:5".parse().unwrap())
        .await
        .unwrap()
        .code;
    // A job of the website's, which another web bot's key does not see.
    let web_job = web
        .create_job(
            &CreateJobRequest {
                callback_url: None,
                context: None,
                frontend: Platform::Web,
                bot_id: "web-1".parse().unwrap(),
                user_ref: account.clone(),
                ..new_job("a heron")
            },
            None,
        )
        .await
        .unwrap()
        .job
        .job_id;

    // Developer keys of the account: one to call with, one to revoke.
    let key_request = |name: &str| tessera_api::public::NewDeveloperKeyRequest {
        name: name.into(),
        capabilities: None,
    };
    let developer_key = web
        .create_developer_key(&account, &key_request("matrix"))
        .await
        .unwrap()
        .api_key;
    let spare_developer_key = web
        .create_developer_key(&account, &key_request("spare"))
        .await
        .unwrap()
        .key
        .key_id;

    let mut tokens = BTreeMap::new();
    tokens.insert(Who::Owner, owner_key.clone());
    tokens.insert(Who::OtherFrontend, other_key.clone());
    tokens.insert(Who::Web, web_key.clone());
    tokens.insert(Who::OtherWeb, other_web_key.clone());
    tokens.insert(Who::Developer, developer_key.clone());
    tokens.insert(Who::Internal, app.internal_token.clone());
    tokens.insert(Who::Admin, app.admin_token.clone());
    tokens.insert(Who::Metrics, metrics_token.clone());
    tokens.insert(
        Who::Forged,
        "tsk_this-key-was-never-issued-by-anyone".into(),
    );

    use Who::*;
    // A developer key is a real credential of the wrong kind off the gateway.
    let not_frontends = [Internal, Admin, Metrics, Developer];
    let gateway_refused = [
        Owner,
        OtherFrontend,
        Web,
        OtherWeb,
        Internal,
        Admin,
        Metrics,
    ];
    let create = json!({"frontend": "telegram", "bot_id": OWNER, "capability": "image",
                        "user_ref": "telegram:2", "params": {"prompt": "an owl"}});
    // A worker that serves nothing queued here, so no job moves meanwhile.
    let heartbeat = json!({"worker_id": "worker-gpu-9", "status": "idle",
                           "address": "http://127.0.0.1:9", "capabilities": ["text"],
                           "models": ["llama-3.2-3b"]});
    let progress = json!({"worker_id": "worker-gpu-9", "attempt": 1, "progress": 50.0});
    let output = json!({"worker_id": "worker-gpu-9", "attempt": 1, "offset": 0, "text": "Once"});
    let scheduler = vec![
        // Probes and the API document: anyone.
        call(Method::GET, "/healthz", None).otherwise(200),
        call(Method::GET, "/readyz", None).otherwise(200),
        call(Method::GET, "/api/openapi.json", None).otherwise(200),
        // The public API: frontend keys; a key sees only its own bot's jobs.
        call(Method::GET, "/api/v1/jobs", None)
            .when(&[Owner, OtherFrontend, Web, OtherWeb], 200)
            .when(&not_frontends, 403)
            .otherwise(401),
        call(Method::POST, "/api/v1/jobs", Some(create))
            .when(&[Owner], 201)
            .when(&[OtherFrontend, Web, OtherWeb], 403)
            .when(&not_frontends, 403)
            .otherwise(401),
        call(Method::GET, format!("/api/v1/jobs/{done}"), None)
            .when(&[Owner], 200)
            .when(&[OtherFrontend, Web, OtherWeb], 404)
            .when(&not_frontends, 403)
            .otherwise(401),
        call(Method::GET, format!("/api/v1/jobs/{web_job}"), None)
            .when(&[Web], 200)
            .when(&[Owner, OtherFrontend, OtherWeb], 404)
            .when(&not_frontends, 403)
            .otherwise(401),
        // Following a job: as reading it. The job ended, so the stream
        // answers its end and closes.
        call(Method::GET, format!("/api/v1/jobs/{done}/events"), None)
            .when(&[Owner], 200)
            .when(&[OtherFrontend, Web, OtherWeb], 404)
            .when(&not_frontends, 403)
            .otherwise(401),
        call(Method::POST, format!("/api/v1/jobs/{done}/delivered"), None)
            .when(&[Owner], 200)
            .when(&[OtherFrontend, Web, OtherWeb], 404)
            .when(&not_frontends, 403)
            .otherwise(401),
        call(Method::GET, "/api/v1/users/telegram:1", None)
            .when(&[Owner], 200)
            .when(&[OtherFrontend, Web, OtherWeb], 403)
            .when(&not_frontends, 403)
            .otherwise(401),
        // An account's quota: its own website's key only.
        call(Method::GET, format!("/api/v1/users/{account}"), None)
            .when(&[Web], 200)
            .when(&[Owner, OtherFrontend, OtherWeb], 403)
            .when(&not_frontends, 403)
            .otherwise(401),
        call(Method::GET, "/api/v1/plans", None)
            .when(&[Owner, OtherFrontend, Web, OtherWeb], 200)
            .when(&not_frontends, 403)
            .otherwise(401),
        call(Method::GET, format!("/api/v1/artifacts/{artifact}"), None)
            .when(&[Owner], 200)
            .when(&[OtherFrontend, Web, OtherWeb], 404)
            .when(&not_frontends, 403)
            .otherwise(401),
        // Download links: asked for by a key that may read the artifact,
        // redeemed by any website's key (the signature is the permission).
        call(
            Method::POST,
            format!("/api/v1/artifacts/{artifact}/download-link"),
            None,
        )
        .when(&[Owner], 201)
        .when(&[OtherFrontend, Web, OtherWeb], 404)
        .when(&not_frontends, 403)
        .otherwise(401),
        call(Method::GET, format!("/api/v1/download-links/{link}"), None)
            .when(&[Web, OtherWeb], 200)
            .when(&[Owner, OtherFrontend], 403)
            .when(&not_frontends, 403)
            .otherwise(401),
        // Accounts: the website's key only; a bot's key asks for link codes
        // for its own platform's users.
        call(
            Method::POST,
            "/api/v1/accounts",
            Some(json!({"email": "bob@example.org", "password": password})),
        )
        .when(&[Web], 201)
        // Asked after the website's key: the email is taken (emails are
        // unique across web bots).
        .when(&[OtherWeb], 409)
        .when(&[Owner, OtherFrontend], 403)
        .when(&not_frontends, 403)
        .otherwise(401),
        call(
            Method::POST,
            "/api/v1/accounts/sign-in",
            Some(json!({"email": "ada@example.org", "password": password})),
        )
        .when(&[Web], 200)
        // Another web bot's sign-in fails as for an unknown email.
        .when(&[Owner, OtherFrontend, OtherWeb], 403)
        .when(&not_frontends, 403)
        .otherwise(401),
        call(Method::GET, format!("/api/v1/accounts/{account}"), None)
            .when(&[Web], 200)
            .when(&[OtherWeb], 404)
            .when(&[Owner, OtherFrontend], 403)
            .when(&not_frontends, 403)
            .otherwise(401),
        // Developer keys: the account's own website's key only (another web
        // bot's finds no such account, or no such key).
        call(
            Method::GET,
            format!("/api/v1/accounts/{account}/developer-keys"),
            None,
        )
        .when(&[Web], 200)
        .when(&[OtherWeb], 404)
        .when(&[Owner, OtherFrontend], 403)
        .when(&not_frontends, 403)
        .otherwise(401),
        call(
            Method::POST,
            format!("/api/v1/accounts/{account}/developer-keys"),
            Some(json!({"name": "matrix", "capabilities": ["text"]})),
        )
        .when(&[Web], 201)
        .when(&[OtherWeb], 404)
        .when(&[Owner, OtherFrontend], 403)
        .when(&not_frontends, 403)
        .otherwise(401),
        call(
            Method::DELETE,
            format!("/api/v1/accounts/{account}/developer-keys/{spare_developer_key}"),
            None,
        )
        .when(&[Web], 200)
        .when(&[OtherWeb], 404)
        .when(&[Owner, OtherFrontend], 403)
        .when(&not_frontends, 403)
        .otherwise(401),
        call(
            Method::POST,
            "/api/v1/link-codes",
            Some(json!({"user_ref": "telegram:1"})),
        )
        .when(&[Owner], 201)
        .when(&[OtherFrontend, Web, OtherWeb], 403)
        .when(&not_frontends, 403)
        .otherwise(401),
        call(
            Method::POST,
            format!("/api/v1/accounts/{account}/links"),
            Some(json!({ "code": code })),
        )
        .when(&[Web], 200)
        .when(&[OtherWeb], 404)
        .when(&[Owner, OtherFrontend], 403)
        .when(&not_frontends, 403)
        .otherwise(401),
        // Discord subscriptions: Discord keys only (the other frontend is
        // a Discord bot).
        call(
            Method::POST,
            "/api/v1/payments/discord/entitlements",
            Some(json!({"user_ref": "discord:1", "source": "interaction", "entitlements": []})),
        )
        .when(&[OtherFrontend], 200)
        .when(&[Owner, Web, OtherWeb], 403)
        .when(&not_frontends, 403)
        .otherwise(401),
        call(Method::GET, "/api/v1/payments/discord/skus", None)
            .when(&[OtherFrontend], 200)
            .when(&[Owner, Web, OtherWeb], 403)
            .when(&not_frontends, 403)
            .otherwise(401),
        // Stripe: the website's key only, for its own bot's accounts
        // (Stripe itself is down here: 502 once past the boundary; no
        // customer yet: 404 for the portal). The webhook takes no key: its
        // credential is Stripe-Signature, so every caller without one is 400.
        call(Method::GET, "/api/v1/payments/stripe/plans", None)
            .when(&[Web, OtherWeb], 200)
            .when(&[Owner, OtherFrontend], 403)
            .when(&not_frontends, 403)
            .otherwise(401),
        call(
            Method::POST,
            "/api/v1/payments/stripe/checkout",
            Some(json!({"user_ref": account, "plan_id": "starter",
                "success_url": "https://site.example/ok", "cancel_url": "https://site.example/"})),
        )
        .when(&[Web], 502)
        .when(&[OtherWeb], 404)
        .when(&[Owner, OtherFrontend], 403)
        .when(&not_frontends, 403)
        .otherwise(401),
        call(
            Method::POST,
            "/api/v1/payments/stripe/portal",
            Some(json!({"user_ref": account, "return_url": "https://site.example/"})),
        )
        .when(&[Web, OtherWeb], 404)
        .when(&[Owner, OtherFrontend], 403)
        .when(&not_frontends, 403)
        .otherwise(401),
        call(
            Method::POST,
            "/api/v1/payments/stripe/webhook",
            Some(json!({"id": "evt_1", "type": "invoice.paid"})),
        )
        .otherwise(400),
        // Admin: the admin token only.
        call(Method::GET, "/api/admin/keys", None)
            .when(&[Admin], 200)
            .when(
                &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
                403,
            )
            .otherwise(401),
        // Output review: any artifact as kept, withheld or not, for the admin only.
        call(Method::GET, format!("/api/admin/artifacts/{artifact}"), None)
            .when(&[Admin], 200)
            .when(
                &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
                403,
            )
            .otherwise(401),
        call(
            Method::GET,
            format!("/api/admin/artifacts/{artifact}/content"),
            None,
        )
        .when(&[Admin], 200)
        .when(
            &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
            403,
        )
        .otherwise(401),
        call(Method::GET, format!("/api/admin/jobs/{done}/artifacts"), None)
            .when(&[Admin], 200)
            .when(
                &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
                403,
            )
            .otherwise(401),
        call(Method::GET, "/api/admin/jobs", None)
            .when(&[Admin], 200)
            .when(
                &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
                403,
            )
            .otherwise(401),
        call(Method::GET, "/api/admin/workers", None)
            .when(&[Admin], 200)
            .when(
                &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
                403,
            )
            .otherwise(401),
        call(
            Method::PUT,
            "/api/admin/users/telegram:3/plan",
            Some(json!({"plan_id": "pro"})),
        )
        .when(&[Admin], 200)
        .when(
            &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
            403,
        )
        .otherwise(401),
        call(Method::GET, "/api/admin/payments", None)
            .when(&[Admin], 200)
            .when(
                &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
                403,
            )
            .otherwise(401),
        // A grant, then its revoke (which finds it: rows run in order).
        call(
            Method::POST,
            "/api/admin/payments/grant",
            Some(json!({"user_ref": "telegram:3", "plan_id": "pro", "until": "2099-01-01T00:00:00Z"})),
        )
        .when(&[Admin], 201)
        .when(
            &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
            403,
        )
        .otherwise(401),
        call(
            Method::POST,
            "/api/admin/payments/revoke",
            Some(json!({"user_ref": "telegram:3"})),
        )
        .when(&[Admin], 200)
        .when(
            &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
            403,
        )
        .otherwise(401),
        // Telegram Stars: Telegram keys only. A payload nobody signed is
        // refused (400), and there is no charge to refund (404).
        call(Method::GET, "/api/v1/payments/telegram/plans", None)
            .when(&[Owner], 200)
            .when(&[OtherFrontend, Web, OtherWeb], 403)
            .when(&not_frontends, 403)
            .otherwise(401),
        call(
            Method::POST,
            "/api/v1/payments/telegram/invoices",
            Some(json!({"user_ref": "telegram:6", "plan_id": "starter"})),
        )
        .when(&[Owner], 201)
        .when(&[OtherFrontend, Web, OtherWeb], 403)
        .when(&not_frontends, 403)
        .otherwise(401),
        call(
            Method::POST,
            "/api/v1/payments/telegram/pre-checkout",
            Some(json!({"user_ref": "telegram:6", "payload": "starter.1.9999999999.nonce.00",
                        "currency": "XTR", "total_amount": 1})),
        )
        .when(&[Owner], 400)
        .when(&[OtherFrontend, Web, OtherWeb], 403)
        .when(&not_frontends, 403)
        .otherwise(401),
        call(
            Method::POST,
            "/api/v1/payments/telegram/payments",
            Some(json!({"user_ref": "telegram:6", "payload": "starter.1.9999999999.nonce.00",
                        "currency": "XTR", "total_amount": 1,
                        "telegram_payment_charge_id": "stxforged", "date": 1_900_000_000})),
        )
        .when(&[Owner], 400)
        .when(&[OtherFrontend, Web, OtherWeb], 403)
        .when(&not_frontends, 403)
        .otherwise(401),
        call(
            Method::POST,
            "/api/v1/payments/telegram/refund-requests",
            Some(json!({"user_ref": "telegram:6"})),
        )
        .when(&[Owner], 404)
        .when(&[OtherFrontend, Web, OtherWeb], 403)
        .when(&not_frontends, 403)
        .otherwise(401),
        call(
            Method::POST,
            "/api/v1/payments/telegram/refunds",
            Some(json!({"user_ref": "telegram:6", "telegram_payment_charge_id": "stxforged"})),
        )
        .when(&[Owner], 404)
        .when(&[OtherFrontend, Web, OtherWeb], 403)
        .when(&not_frontends, 403)
        .otherwise(401),
        // Refunds operators order: the admin orders (no such payment: 404);
        // a Telegram key reads and reports on its own bot's orders (none
        // here: 404 for a report).
        call(
            Method::POST,
            "/api/admin/payments/refund",
            Some(json!({"payment_id": 999_999})),
        )
        .when(&[Admin], 404)
        .when(
            &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
            403,
        )
        .otherwise(401),
        call(Method::GET, "/api/admin/payments/refunds", None)
            .when(&[Admin], 200)
            .when(
                &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
                403,
            )
            .otherwise(401),
        call(Method::GET, "/api/v1/payments/telegram/refund-orders", None)
            .when(&[Owner], 200)
            .when(&[OtherFrontend, Web, OtherWeb], 403)
            .when(&not_frontends, 403)
            .otherwise(401),
        call(
            Method::POST,
            "/api/v1/payments/telegram/refund-failures",
            Some(json!({"order_id": 999, "error": "Bad Request: CHARGE_NOT_FOUND"})),
        )
        .when(&[Owner], 404)
        .when(&[OtherFrontend, Web, OtherWeb], 403)
        .when(&not_frontends, 403)
        .otherwise(401),
        // The NSFW context: a Telegram group's setting is the Telegram
        // keys' (the owner is a Telegram bot); an account's confirmed age is
        // its own website's key's.
        call(Method::GET, "/api/v1/telegram/chats/-100200/nsfw", None)
            .when(&[Owner], 200)
            .when(&[OtherFrontend, Web, OtherWeb], 403)
            .when(&not_frontends, 403)
            .otherwise(401),
        call(
            Method::PUT,
            "/api/v1/telegram/chats/-100200/nsfw",
            Some(json!({"enabled": true, "by": "telegram:1"})),
        )
        .when(&[Owner], 200)
        .when(&[OtherFrontend, Web, OtherWeb], 403)
        .when(&not_frontends, 403)
        .otherwise(401),
        call(
            Method::POST,
            format!("/api/v1/accounts/{account}/age-confirmation"),
            None,
        )
        .when(&[Web], 200)
        .when(&[OtherWeb], 404)
        .when(&[Owner, OtherFrontend], 403)
        .when(&not_frontends, 403)
        .otherwise(401),
        // People: a frontend key reports its own platform's users' view of
        // a job it sees; the admin suspends, bans, lifts, reviews and reads
        // the audit log (case 999999 does not exist: 404).
        call(
            Method::POST,
            format!("/api/v1/jobs/{done}/reports"),
            Some(json!({"user_ref": "telegram:2", "reason": "matrix"})),
        )
        .when(&[Owner], 201)
        .when(&[OtherFrontend, Web, OtherWeb], 403)
        .when(&not_frontends, 403)
        .otherwise(401),
        call(
            Method::POST,
            "/api/admin/users/telegram:3/suspend",
            Some(json!({"reason": "matrix", "until": "2099-01-01T00:00:00Z"})),
        )
        .when(&[Admin], 201)
        .when(
            &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
            403,
        )
        .otherwise(401),
        call(
            Method::POST,
            "/api/admin/users/telegram:3/ban",
            Some(json!({"reason": "matrix"})),
        )
        .when(&[Admin], 201)
        .when(
            &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
            403,
        )
        .otherwise(401),
        call(
            Method::POST,
            "/api/admin/users/telegram:3/lift",
            Some(json!({})),
        )
        .when(&[Admin], 200)
        .when(
            &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
            403,
        )
        .otherwise(401),
        call(Method::GET, "/api/admin/users/telegram:3/sanctions", None)
            .when(&[Admin], 200)
            .when(
                &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
                403,
            )
            .otherwise(401),
        call(Method::GET, "/api/admin/moderation/cases", None)
            .when(&[Admin], 200)
            .when(
                &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
                403,
            )
            .otherwise(401),
        call(Method::GET, "/api/admin/moderation/cases/999999", None)
            .when(&[Admin], 404)
            .when(
                &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
                403,
            )
            .otherwise(401),
        call(
            Method::POST,
            "/api/admin/moderation/cases/999999/decision",
            Some(json!({"decision": "dismiss"})),
        )
        .when(&[Admin], 404)
        .when(
            &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
            403,
        )
        .otherwise(401),
        call(Method::GET, "/api/admin/moderation/audit", None)
            .when(&[Admin], 200)
            .when(
                &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
                403,
            )
            .otherwise(401),
        call(
            Method::POST,
            "/api/admin/keys",
            Some(json!({"frontend": "web", "bot_id": "web-9"})),
        )
        .when(&[Admin], 201)
        .when(
            &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
            403,
        )
        .otherwise(401),
        call(Method::DELETE, format!("/api/admin/keys/{spare_key}"), None)
            .when(&[Admin], 200)
            .when(
                &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
                403,
            )
            .otherwise(401),
        call(Method::DELETE, format!("/api/admin/jobs/{doomed}"), None)
            .when(&[Admin], 200)
            .when(
                &[Owner, OtherFrontend, Web, OtherWeb, Internal, Metrics, Developer],
                403,
            )
            .otherwise(401),
        // Uploads: a frontend's raw audio body (JSON here: refused as such).
        call(
            Method::POST,
            "/api/v1/inputs",
            Some(json!({"not": "audio"})),
        )
        .when(&[Owner, OtherFrontend, Web, OtherWeb], 415)
        .when(&not_frontends, 403)
        .otherwise(401),
        // Internal: the workers' token only.
        call(Method::POST, "/api/internal/heartbeat", Some(heartbeat))
            .when(&[Internal], 200)
            .when(&[Owner, OtherFrontend, Web, OtherWeb, Admin, Metrics, Developer], 403)
            .otherwise(401),
        call(
            Method::POST,
            format!("/api/internal/jobs/{queued}/progress"),
            Some(progress),
        )
        .when(&[Internal], 409)
        .when(&[Owner, OtherFrontend, Web, OtherWeb, Admin, Metrics, Developer], 403)
        .otherwise(401),
        call(
            Method::POST,
            format!("/api/internal/jobs/{queued}/output"),
            Some(output),
        )
        .when(&[Internal], 409)
        .when(&[Owner, OtherFrontend, Web, OtherWeb, Admin, Metrics, Developer], 403)
        .otherwise(401),
        call(
            Method::POST,
            format!("/api/internal/jobs/{queued}/result"),
            Some(json!({"not": "multipart"})),
        )
        .when(&[Internal], 400)
        .when(&[Owner, OtherFrontend, Web, OtherWeb, Admin, Metrics, Developer], 403)
        .otherwise(401),
        call(Method::GET, format!("/api/internal/inputs/{input}"), None)
            .when(&[Internal], 200)
            .when(&[Owner, OtherFrontend, Web, OtherWeb, Admin, Metrics, Developer], 403)
            .otherwise(401),
        // Metrics: the metrics and admin tokens.
        call(Method::GET, "/metrics", None)
            .when(&[Metrics, Admin], 200)
            .when(&[Owner, OtherFrontend, Web, OtherWeb, Internal, Developer], 403)
            .otherwise(401),
        // A key's webhook secret: any frontend key, for itself.
        call(Method::POST, "/api/v1/webhook-secret", None)
            .when(&[Owner, OtherFrontend, Web, OtherWeb], 200)
            .when(&not_frontends, 403)
            .otherwise(401),
        // The gateway: developer keys only; every other real credential is
        // of the wrong kind. Bodies it refuses after the key is checked, so
        // no job waits here for a worker.
        call(Method::GET, "/v1/models", None)
            .when(&[Developer], 200)
            .when(&gateway_refused, 403)
            .otherwise(401),
        call(
            Method::POST,
            "/v1/chat/completions",
            Some(json!({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]})),
        )
        .when(&[Developer], 404)
        .when(&gateway_refused, 403)
        .otherwise(401),
        call(
            Method::POST,
            "/v1/images/generations",
            Some(json!({"prompt": "an owl", "n": 2})),
        )
        .when(&[Developer], 400)
        .when(&gateway_refused, 403)
        .otherwise(401),
        call(
            Method::POST,
            "/v1/audio/speech",
            Some(json!({"model": "no-such-model", "input": "hi"})),
        )
        .when(&[Developer], 404)
        .when(&gateway_refused, 403)
        .otherwise(401),
        // Not multipart: refused once the key passed.
        call(Method::POST, "/v1/audio/transcriptions", Some(json!({})))
            .when(&[Developer], 400)
            .when(&gateway_refused, 403)
            .otherwise(401),
        // An image address the gateway answered with: the signature is the
        // permission, as for the website's download links.
        call(Method::GET, format!("/v1/downloads/{link}"), None).otherwise(200),
        // Last, as it changes state: cancelling the queued job.
        call(Method::DELETE, format!("/api/v1/jobs/{queued}"), None)
            .when(&[OtherFrontend, Web, OtherWeb], 404)
            .when(&[Owner], 200)
            .when(&not_frontends, 403)
            .otherwise(401),
    ];
    let mut wrong = ask(&app.base_url(), &tokens, &scheduler).await;

    // Every operation of the API document has its row (ids put back as the
    // document's path parameters).
    let template = |path: &str| {
        // The link first: it holds the artifact's id.
        path.replace(&link, "{token}")
            .replace(&done.to_string(), "{job_id}")
            .replace(&queued.to_string(), "{job_id}")
            .replace(&doomed.to_string(), "{job_id}")
            .replace(&web_job.to_string(), "{job_id}")
            .replace(&spare_key.to_string(), "{key_id}")
            .replace(&spare_developer_key.to_string(), "{key_id}")
            .replace(&artifact.to_string(), "{artifact_id}")
            .replace(&input.to_string(), "{input_id}")
            .replace("telegram:1", "{user_ref}")
            .replace("telegram:3", "{user_ref}")
            .replace("/cases/999999", "/cases/{case_id}")
            .replace(&account.to_string(), "{user_ref}")
            .replace("-100200", "{chat_id}")
    };
    let rows: std::collections::BTreeSet<(String, String)> = scheduler
        .iter()
        .map(|c| (c.method.as_str().to_lowercase(), template(&c.path)))
        .collect();
    let document: Value = reqwest::get(format!("{}/api/openapi.json", app.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut missing = Vec::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            if !rows.contains(&(method.clone(), path.clone())) {
                missing.push(format!("{method} {path}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "operations without a row in the matrix: {missing:?}"
    );

    // A worker: the internal token for everything but its probes; its
    // metrics also to its own metrics token (none configured here).
    let w = app
        .worker(
            "worker-gpu-1",
            vec![sim(Capability::Image, &["sdxl-1.0"], 0)],
        )
        .await;
    // Ready once the scheduler accepted its first heartbeat.
    let ready = format!("http://{}/readyz", w.addr());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while reqwest::get(&ready).await.unwrap().status() != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never got ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let worker_calls = vec![
        call(Method::GET, "/healthz", None).otherwise(200),
        call(Method::GET, "/readyz", None).otherwise(200),
        call(Method::GET, "/health", None)
            .when(&[Internal], 200)
            .otherwise(401),
        call(Method::GET, "/capabilities", None)
            .when(&[Internal], 200)
            .otherwise(401),
        call(Method::GET, "/metrics", None)
            .when(&[Internal], 200)
            .otherwise(401),
        call(Method::POST, "/run_job", Some(json!({"not": "a job"})))
            .when(&[Internal], 422)
            .otherwise(401),
        call(
            Method::POST,
            "/cancel_job",
            Some(json!({"job_id": queued.to_string()})),
        )
        .when(&[Internal], 404)
        .otherwise(401),
        call(Method::POST, "/unload", Some(json!({})))
            .when(&[Internal], 200)
            .otherwise(401),
    ];
    wrong.extend(ask(&format!("http://{}", w.addr()), &tokens, &worker_calls).await);
    w.shutdown().await.unwrap();
    assert!(
        wrong.is_empty(),
        "{} cells differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    app.shutdown().await;
}

backend_tests!(every_endpoint_answers_only_its_credential);
