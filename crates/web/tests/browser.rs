//! The website end to end in real headless Chromium: the real scheduler
//! (SQLite and PostgreSQL), a real worker with `sim` engines, the website as
//! `tessera web` runs it, a Telegram bot against the loopback Bot API
//! stand-in for linking, and Chromium driven over WebDriver (Debian's
//! chromium and chromium-driver; scripts/test installs them).
//!
//! The SQLite run writes screenshots of the main pages at phone and desktop
//! widths to `target/screenshots/` (or `$TESSERA_SCREENSHOTS`).

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use serde_json::json;

use tessera_api::public::CreateJobRequest;
use tessera_chat::secret::Secret;
use tessera_core::{Capability, Platform};
use tessera_scheduler::SchedulerConfig;
use tessera_telegram::config::BotInstance;
use tessera_telegram::{Secrets, TelegramConfig};
use tessera_testkit::classifier::{patient, withholding, PaintingWorker};
use tessera_testkit::standins::telegram::{Author, TelegramStandIn};
use tessera_testkit::{sim, Backend, TestApp};
use tessera_web::{WebConfig, WebHandle};

use common::*;

const TG_TOKEN: &str = "123456:AAE-web-link-bot";
const TG_BOT: &str = "tg-image-bot-1";
const TG_USER: i64 = 777_001;
const PHONE: (u32, u32) = (390, 844);
const DESKTOP: (u32, u32) = (1280, 900);

/// Everything one run needs.
struct Site {
    app: TestApp,
    /// The worker, unless the test holds its own.
    _worker: Option<tessera_worker::WorkerHandle>,
    web: WebHandle,
    web_key: String,
    tg: TelegramStandIn,
    _bot: tessera_telegram::Instance,
    tg_key: String,
    shots: Option<PathBuf>,
}

fn fast(config: &mut SchedulerConfig) {
    config.workers.heartbeat_interval_ms = 200;
    config.workers.dispatch_tick_ms = 100;
}

impl Site {
    async fn start(backend: Backend, screenshots: bool) -> Site {
        Site::start_with(backend, screenshots, |_| {}).await
    }

    async fn start_with(
        backend: Backend,
        screenshots: bool,
        tweak: impl FnOnce(&mut SchedulerConfig),
    ) -> Site {
        let app = TestApp::spawn_with(backend, |c| {
            fast(c);
            tweak(c);
        })
        .await;
        let worker = app
            .worker(
                "worker-gpu-0",
                vec![
                    sim(Capability::Image, &["sdxl-1.0"], 1500),
                    sim(Capability::Video, &["wan-2.1"], 60_000),
                    sim(Capability::Text, &["llama-3.2-3b"], 300),
                    sim(Capability::SpeechToText, &["whisper-base"], 300),
                ],
            )
            .await;
        Site::around(app, Some(worker), screenshots).await
    }

    /// A site whose only worker makes images on a ComfyUI painting the face
    /// NudeNet scores (see `tessera_testkit::classifier`), classified by the
    /// real detector.
    async fn start_classifying(
        backend: Backend,
        tweak: impl FnOnce(&mut SchedulerConfig),
    ) -> (Site, PaintingWorker) {
        let app = TestApp::spawn_with(backend, |c| {
            fast(c);
            patient(c);
            tweak(c);
        })
        .await;
        let painting = PaintingWorker::start(&app, "worker-gpu-0", vec![]).await;
        (Site::around(app, None, false).await, painting)
    }

    /// The website and a Telegram bot around a scheduler and its worker.
    async fn around(
        app: TestApp,
        worker: Option<tessera_worker::WorkerHandle>,
        screenshots: bool,
    ) -> Site {
        let web_key = app.key(Platform::Web, "web").await;
        let mut config = WebConfig::new(app.base_url(), Secret::new(web_key.clone()));
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.cookie_secret = Some(Secret::new("a test secret that is long enough to sign"));
        // This visitor starts a job every few seconds; the limit is not under test.
        config.limits.jobs_per_minute = 60;
        config.limits.job_burst = 10;
        let web = tessera_web::start(config)
            .await
            .expect("the website starts");

        let tg = TelegramStandIn::start().await;
        tg.add_bot(TG_TOKEN, "tessera_image_bot");
        let tg_key = app.key(Platform::Telegram, TG_BOT).await;
        let tg_config = TelegramConfig {
            scheduler_url: app.base_url(),
            api_url: tg.api_url(),
            poll_timeout_secs: 1,
            job_poll_ms: 100,
            min_edit_ms: 200,
            bots: vec![BotInstance {
                id: TG_BOT.parse().unwrap(),
                capabilities: vec![Capability::Image],
                token_env: None,
                token_file: None,
                api_key_env: None,
                api_key_file: None,
                limits: Default::default(),
            }],
            ..Default::default()
        };
        let bot = tessera_telegram::start(
            &tg_config,
            &tg_config.bots[0],
            Secrets {
                token: Secret::new(TG_TOKEN),
                api_key: Secret::new(tg_key.clone()),
            },
        )
        .await
        .expect("the bot starts");
        let shots = screenshots.then(|| {
            let dir = std::env::var_os("TESSERA_SCREENSHOTS")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots")
                });
            std::fs::create_dir_all(&dir).expect("creating the screenshot folder");
            dir
        });
        Site {
            app,
            _worker: worker,
            web,
            web_key,
            tg,
            _bot: bot,
            tg_key,
            shots,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.web.base_url())
    }
}

/// What a refused form says, for failure messages.
async fn errors_shown(c: &Client) -> serde_json::Value {
    js(
        c,
        "return [...document.querySelectorAll('.alert, .field-error, main h1')].map(e => e.textContent);",
    )
    .await
}

/// Checks what a page must be at both widths, and keeps screenshots of it.
async fn check_page(site: &Site, c: &Client, name: &str) {
    // Every visible form control has a label, and nothing is wider than a phone.
    let unlabelled = js(
        c,
        "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
            .map(e => e.name || e.id);",
    )
    .await;
    assert_eq!(unlabelled, json!([]), "{name}: controls without a label");
    assert_eq!(
        js(
            c,
            "return document.querySelectorAll('main#main h1').length;"
        )
        .await,
        json!(1),
        "{name}: one main heading"
    );
    for (width, height) in [PHONE, DESKTOP] {
        c.set_window_size(width, height).await.expect("resizing");
        tokio::time::sleep(Duration::from_millis(150)).await;
        let overflow = js(
            c,
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
        )
        .await;
        assert!(
            overflow.as_i64().unwrap_or(1) <= 0,
            "{name} scrolls sideways at {width} px: {overflow}"
        );
        if let Some(dir) = &site.shots {
            let png = c.screenshot().await.expect("a screenshot");
            let label = if width == PHONE.0 { "phone" } else { "desktop" };
            std::fs::write(dir.join(format!("{name}-{label}.png")), png).expect("saving");
        }
    }
}

/// Follows the job page until the job is COMPLETED; every state it showed.
async fn watch_until_done(site: &Site, c: &Client, shoot_running: bool) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut shot = false;
    let deadline = Instant::now() + WAIT;
    loop {
        let state = js(
            c,
            "const e = document.getElementById('job-state'); return e && e.dataset.state;",
        )
        .await;
        let state = state.as_str().unwrap_or_default().to_owned();
        seen.insert(state.clone());
        if state == "COMPLETED" {
            return seen;
        }
        assert!(
            !["FAILED", "CANCELLED"].contains(&state.as_str()),
            "the job ended {state}"
        );
        assert!(Instant::now() < deadline, "the job page stayed at {seen:?}");
        if state == "RUNNING" && shoot_running && site.shots.is_some() && !shot {
            shot = true;
            check_page(site, c, "job-running").await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bot's texts in the user's chat now.
fn bot_texts(site: &Site) -> Vec<String> {
    site.tg
        .chat(TG_TOKEN, TG_USER)
        .into_iter()
        .filter(|m| m.author == Author::Bot)
        .filter_map(|m| m.text)
        .collect()
}

fn link_code(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .find(|w| {
            w.len() == 9
                && w.as_bytes()[4] == b'-'
                && w.chars()
                    .filter(|c| *c != '-')
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        })
        .map(str::to_owned)
}

async fn a_visitor_signs_up_generates_links_a_bot_and_runs_out(backend: Backend, shots: bool) {
    let site = Site::start(backend, shots).await;
    let b = browser().await;
    let c = &b.client;

    // The start page and the plans, signed out.
    c.goto(&site.url("/")).await.unwrap();
    check_page(&site, c, "home").await;
    c.goto(&site.url("/pricing")).await.unwrap();
    let plans = text_of(c, "table.plans tbody").await;
    for plan in ["FREE", "STARTER", "PRO", "ADMIN"] {
        assert!(plans.contains(plan), "{plan} on the pricing page: {plans}");
    }
    check_page(&site, c, "pricing").await;

    // A page that needs an account sends a visitor to sign in.
    c.goto(&site.url("/gallery")).await.unwrap();
    assert_eq!(path(c).await, "/signin");

    // Sign up: a bad email is refused with the API's reason, next to the field.
    c.goto(&site.url("/signup")).await.unwrap();
    check_page(&site, c, "signup").await;
    fill(c, "#email", "not-an-email").await;
    fill(c, "#password", "correct horse battery").await;
    submit(c, "form[action='/signup']").await;
    assert_eq!(path(c).await, "/signup");
    let err = text_of(c, "#email-error").await;
    assert!(!err.is_empty(), "an email error is shown");
    assert_eq!(
        c.find(Locator::Css("#email"))
            .await
            .unwrap()
            .attr("aria-invalid")
            .await
            .unwrap()
            .as_deref(),
        Some("true")
    );
    let email = format!("ada-{}@example.org", backend_name(backend));
    fill(c, "#email", &email).await;
    fill(c, "#password", "correct horse battery").await;
    submit(c, "form[action='/signup']").await;
    assert_eq!(
        path(c).await,
        "/generate/image",
        "signed up and sent to generate"
    );
    let quota_line = text_of(c, "#quota-line").await;
    assert!(quota_line.contains("20 of 20 tokens left"), "{quota_line}");
    check_page(&site, c, "generate").await;

    // A prompt left empty is named before anything is sent.
    submit(c, "form[action='/generate/image']").await;
    assert_eq!(text_of(c, "#prompt-error").await, "Prompt is required.");

    // Generate an image and watch the page reach done without reloading.
    fill(c, "#prompt", "a lighthouse on a cliff at dusk").await;
    submit(c, "form[action='/generate/image']").await;
    let job_path = path(c).await;
    assert!(
        job_path.starts_with("/jobs/"),
        "{job_path}: {}",
        errors_shown(c).await
    );
    let job_id = job_path.trim_start_matches("/jobs/").to_owned();
    js(c, "window.stillTheSamePage = 42; return null;").await;
    let seen = watch_until_done(&site, c, true).await;
    assert_eq!(
        js(c, "return window.stillTheSamePage;").await,
        json!(42),
        "the page was not reloaded"
    );
    // (The page was rendered QUEUED or RUNNING; that it reached COMPLETED
    // with the marker intact is the proof of the live update.)
    assert!(seen.contains("COMPLETED"), "{seen:?}");
    // The result is a real picture, loaded through the website.
    let loaded = js(
        c,
        "const img = document.querySelector('#job-result img');
         return img ? new Promise(r => img.complete ? r(img.naturalWidth)
           : img.addEventListener('load', () => r(img.naturalWidth))) : 0;",
    )
    .await;
    assert!(
        loaded.as_u64().unwrap_or(0) > 0,
        "the image loads: {loaded}"
    );
    check_page(&site, c, "job-done").await;

    // The gallery lists it, with its picture and a download.
    c.goto(&site.url("/gallery")).await.unwrap();
    let link = c
        .find(Locator::Css(&format!("a[href='/jobs/{job_id}']")))
        .await
        .expect("the job in the gallery");
    assert_eq!(
        link.text().await.unwrap(),
        "a lighthouse on a cliff at dusk"
    );
    let download = c
        .find(Locator::Css("figcaption a[download]"))
        .await
        .expect("a download link")
        .attr("href")
        .await
        .unwrap()
        .expect("href");
    let anonymous = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(site.url(&download))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            anonymous.status().as_u16(),
            anonymous.headers()["location"].to_str().unwrap()
        ),
        (303, "/signin"),
        "outputs are not served without the visitor's session"
    );
    let picture = js(
        c,
        &format!(
            "return fetch('{download}').then(r => r.arrayBuffer()).then(b => [...new Uint8Array(b.slice(0, 4))]);"
        ),
    )
    .await;
    assert_eq!(
        picture,
        json!([0x89, b'P', b'N', b'G']),
        "the download is the PNG"
    );
    check_page(&site, c, "gallery").await;

    // Speech to text: an uploaded recording becomes text on the job page.
    let recording = tempfile::Builder::new().suffix(".wav").tempfile().unwrap();
    let mut wav = b"RIFF\x24\x08\x00\x00WAVEfmt ".to_vec();
    wav.resize(2092, 0);
    std::fs::write(recording.path(), &wav).unwrap();
    c.goto(&site.url("/generate/speech_to_text")).await.unwrap();
    check_page(&site, c, "transcribe").await;
    submit(c, "form[action='/generate/speech_to_text']").await;
    assert_eq!(
        text_of(c, "#audio-error").await,
        "Choose an audio file to transcribe."
    );
    c.find(Locator::Css("#audio"))
        .await
        .unwrap()
        .send_keys(&recording.path().display().to_string())
        .await
        .expect("choosing the file");
    fill(c, "#language", "en").await;
    submit(c, "form[action='/generate/speech_to_text']").await;
    assert!(
        path(c).await.starts_with("/jobs/"),
        "{}",
        errors_shown(c).await
    );
    watch_until_done(&site, c, false).await;
    let transcript = text_of(c, "#job-result pre").await;
    assert!(
        transcript.contains("A transcript of 2092 bytes"),
        "the worker read the uploaded bytes: {transcript}"
    );

    // A value only the scheduler refuses comes back in the scheduler's words.
    c.goto(&site.url("/generate/text")).await.unwrap();
    fill(c, "#prompt", "hello").await;
    fill(c, "#max_tokens", "99999").await;
    submit(c, "form[action='/generate/text']").await;
    let shown = text_of(c, "#max_tokens-error").await;
    let web_api = site.app.client_with(&site.web_key);
    let refused = web_api
        .create_job(
            &web_job(
                Capability::Text,
                "web:probe",
                json!({"prompt": "hello", "max_tokens": 99999}),
            ),
            None,
        )
        .await
        .expect_err("the API refuses it too");
    let tessera_api::ClientError::Api { body, .. } = refused else {
        panic!("an API error")
    };
    assert_eq!(
        shown, body.error.message,
        "the site shows the API's message"
    );

    // Link the Telegram account with the code the bot gives.
    site.tg.user_text(TG_TOKEN, TG_USER, TG_USER, "/link");
    let deadline = Instant::now() + WAIT;
    let code = loop {
        if let Some(code) = bot_texts(&site).iter().find_map(|t| link_code(t)) {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "no link code from the bot: {:?}",
            bot_texts(&site)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    c.goto(&site.url("/account")).await.unwrap();
    // Well formed, so the scheduler looks it up, and finds nothing.
    fill(c, "#code", "ABCD-EFGH").await;
    submit(c, "form[action='/account/link']").await;
    assert!(text_of(c, "#code-error").await.contains("not valid"));
    fill(c, "#code", &code.to_lowercase()).await;
    submit(c, "form[action='/account/link']").await;
    let linked = text_of(c, "#linked").await;
    assert!(
        linked.contains(&format!("telegram:{TG_USER}")),
        "the account lists the Telegram user: {linked}"
    );
    assert!(text_of(c, "#tokens-left").await.contains("18 of 20"));
    check_page(&site, c, "account").await;

    // A developer key: its secret shown once, then a row in the list.
    fill(c, "#key-name", "Open WebUI on my laptop").await;
    c.find(Locator::Css("#new-key-form input[value=text]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    submit(c, "#new-key-form").await;
    let secret = js(c, "return document.getElementById('new-key-secret').value;").await;
    assert!(
        secret.as_str().is_some_and(|s| s.starts_with("tdk_")),
        "the new key's secret: {secret}"
    );
    check_page(&site, c, "account-new-key").await;
    c.goto(&site.url("/account")).await.unwrap();
    assert!(text_now(c, "#new-key-secret").await.is_none());
    let row = text_of(c, "#key-list tbody tr").await;
    assert!(
        row.contains("Open WebUI on my laptop") && row.contains("Text"),
        "{row}"
    );
    submit(c, "#key-list form").await;
    assert!(text_of(c, "#key-list tbody tr").await.contains("Revoked"));

    // One quota: an image from the bot is charged to the web account.
    site.tg
        .user_text(TG_TOKEN, TG_USER, TG_USER, "/imagine a red fox --seed 3");
    let tg_api = site.app.client_with(&site.tg_key);
    let deadline = Instant::now() + WAIT;
    while tg_api
        .get_user(&format!("telegram:{TG_USER}"))
        .await
        .unwrap()
        .tokens_used_today
        < 3
    {
        assert!(Instant::now() < deadline, "the bot's job was not charged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.refresh().await.unwrap();
    assert!(
        text_of(c, "#tokens-left").await.contains("17 of 20"),
        "the bot's image came out of the web account's tokens"
    );

    // Spend all but one (an 8 s video is 16 tokens); then a 2-token answer is
    // refused, and the form says why.
    let web_user = web_user_of(&site, &email).await;
    web_api
        .create_job(
            &web_job(
                Capability::Video,
                &web_user,
                json!({"prompt": "waves", "duration_seconds": 8}),
            ),
            None,
        )
        .await
        .expect("a video within the quota");
    c.goto(&site.url("/generate/text")).await.unwrap();
    let quota_line = text_of(c, "#quota-line").await;
    assert!(quota_line.contains("1 of 20 tokens left"), "{quota_line}");
    fill(c, "#prompt", "a long story").await;
    fill(c, "#max_tokens", "2048").await;
    submit(c, "form[action='/generate/text']").await;
    let alert = text_of(c, "#form-error").await;
    assert!(
        alert.contains("Not enough tokens left today"),
        "the quota message: {alert}"
    );
    check_page(&site, c, "out-of-tokens").await;

    // Sign out, then back in.
    submit(c, "form[action='/signout']").await;
    assert_eq!(path(c).await, "/");
    c.goto(&site.url("/signin")).await.unwrap();
    fill(c, "#email", &email).await;
    fill(c, "#password", "wrong password!").await;
    submit(c, "form[action='/signin']").await;
    assert!(text_of(c, "#form-error").await.contains("wrong"));
    fill(c, "#email", &email.to_uppercase()).await;
    fill(c, "#password", "correct horse battery").await;
    submit(c, "form[action='/signin']").await;
    assert_eq!(path(c).await, "/generate/image");

    // With the scheduler gone, pages explain instead of going blank.
    let Site {
        app, web, shots, ..
    } = site;
    app.shutdown().await;
    c.goto(&format!("{}/account", web.base_url()))
        .await
        .unwrap();
    let heading = text_of(c, "main h1").await;
    assert_eq!(heading, "Tessera is unavailable right now");
    if let Some(dir) = shots {
        for ((w, h), label) in [(PHONE, "phone"), (DESKTOP, "desktop")] {
            c.set_window_size(w, h).await.unwrap();
            let png = c.screenshot().await.unwrap();
            std::fs::write(dir.join(format!("scheduler-down-{label}.png")), png).unwrap();
        }
    }
    b.client.clone().close().await.ok();
    web.shutdown().await.expect("the website stops cleanly");
}

/// A job the site creates with its own key for `user_ref` (a `web:` user).
fn web_job(capability: Capability, user_ref: &str, params: serde_json::Value) -> CreateJobRequest {
    CreateJobRequest {
        callback_url: None,
        context: None,
        frontend: Platform::Web,
        bot_id: "web".parse().unwrap(),
        capability,
        user_ref: user_ref.parse().unwrap(),
        reply_context: None,
        params,
    }
}

/// The `web:` user of the account with `email` (what the session holds).
async fn web_user_of(site: &Site, email: &str) -> String {
    site.app
        .client_with(&site.web_key)
        .sign_in(&tessera_api::public::Credentials {
            email: email.into(),
            password: "correct horse battery".into(),
        })
        .await
        .expect("signing in through the API")
        .user_ref
        .to_string()
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn website_end_to_end_on_sqlite_with_screenshots() {
    a_visitor_signs_up_generates_links_a_bot_and_runs_out(Backend::Sqlite, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn website_end_to_end_on_postgres() {
    a_visitor_signs_up_generates_links_a_bot_and_runs_out(Backend::Postgres, false).await;
}

/// A text reply grows on its job page as the engine writes it: the page's
/// events carry the text so far while the job runs, then the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_reply_grows_on_the_job_page() {
    let app = TestApp::spawn_with(Backend::Sqlite, fast).await;
    // Ten steps of 300 ms, each writing a tenth of the reply.
    let worker = app
        .worker(
            "worker-gpu-0",
            vec![sim(Capability::Text, &["llama-3.2-3b"], 3000)],
        )
        .await;
    let site = Site::around(app, Some(worker), false).await;
    let mut ada = Visitor::new(&site.web.base_url()).await;
    ada.sign_up("ada@example.org").await;
    let ada_ref = web_user_of(&site, "ada@example.org").await;
    let web_api = site.app.client_with(&site.web_key);
    let id = web_api
        .create_job(
            &web_job(
                Capability::Text,
                &ada_ref,
                json!({"prompt": "tell me about the sea"}),
            ),
            None,
        )
        .await
        .unwrap()
        .job
        .job_id;
    let resp = ada.get(&format!("/jobs/{id}/events")).await;
    assert_eq!(resp.status(), 200);
    let mut events = tessera_testkit::sse::Events::from_response(resp);
    let mut partials: Vec<String> = Vec::new();
    let done = loop {
        let (name, update) = events
            .next_within(WAIT)
            .await
            .expect("the page's events end with the job");
        assert_eq!(name, "update");
        if update["done"] == true {
            break update;
        }
        let result = update["result"].as_str().unwrap();
        if let Some(text) = result
            .split_once("<pre class=\"text-output\" aria-busy=\"true\">")
            .and_then(|(_, rest)| rest.split_once("</pre>"))
            .map(|(text, _)| text.to_owned())
        {
            assert_eq!(update["state"], "RUNNING", "{update}");
            partials.push(text);
        }
    };
    assert_eq!(done["state"], "COMPLETED", "{done}");
    let result = done["result"].as_str().unwrap();
    assert!(
        partials.len() >= 2,
        "the reply grew on the page: {partials:?}"
    );
    for (earlier, later) in partials.iter().zip(partials.iter().skip(1)) {
        assert!(later.starts_with(earlier.as_str()), "{partials:?}");
    }
    assert!(
        partials.iter().all(|p| result.contains(p.as_str())),
        "parts of the reply the result shows: {partials:?} of {result}"
    );
    assert!(
        partials[0].len() < partials[partials.len() - 1].len(),
        "{partials:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_reaches_only_their_own_jobs_and_every_form_needs_its_token() {
    let site = Site::start(Backend::Sqlite, false).await;
    let base = site.web.base_url();

    // Every page says where it may be framed and loaded from.
    let mut ada = Visitor::new(&base).await;
    let home = ada.get("/").await;
    let csp = home.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(home.headers()["x-frame-options"], "DENY");

    ada.sign_up("ada@example.org").await;
    let mut bob = Visitor::new(&base).await;
    bob.sign_up("bob@example.org").await;

    // Ada's finished job, made through the site's key as the site makes them.
    let ada_ref = web_user_of(&site, "ada@example.org").await;
    let web_api = site.app.client_with(&site.web_key);
    let created = web_api
        .create_job(
            &web_job(Capability::Text, &ada_ref, json!({"prompt": "a secret"})),
            None,
        )
        .await
        .unwrap();
    let id = created.job.job_id;
    let deadline = Instant::now() + WAIT;
    let job = loop {
        let job = web_api.get_job(&id).await.unwrap();
        if job.status.is_terminal() {
            break job;
        }
        assert!(Instant::now() < deadline, "the job never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let output = format!("/jobs/{id}/outputs/{}", job.artifacts[0].artifact_id);
    assert_eq!(ada.get(&format!("/jobs/{id}")).await.status(), 200);
    assert_eq!(ada.get(&output).await.status(), 200);
    // A player seeking asks for a part, and gets just that part.
    let part = ada
        .http
        .get(format!("{base}{output}"))
        .header("cookie", &ada.cookie)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    let total = job.artifacts[0].file_size;
    assert_eq!(
        part.headers()["content-range"].to_str().unwrap(),
        format!("bytes 0-9/{total}")
    );
    assert_eq!(&part.bytes().await.unwrap()[..], b"[tessera s");

    // Bob reaches none of it: not the page, the output, the live events, or
    // the cancel button.
    for path in [
        format!("/jobs/{id}"),
        output.clone(),
        format!("/jobs/{id}/events"),
    ] {
        let resp = bob.get(&path).await;
        assert_eq!(resp.status(), 404, "{path}");
        let page = resp.text().await.unwrap();
        assert!(!page.contains("a secret"), "{path} leaks the prompt");
    }
    let csrf = bob.csrf.clone();
    let cancel = bob
        .post(&format!("/jobs/{id}/cancel"), &[("csrf", &csrf)])
        .await;
    assert_eq!(cancel.status(), 404);
    let report = [("csrf", csrf.as_str()), ("reason", "not mine")];
    assert_eq!(
        bob.post(&format!("/jobs/{id}/report"), &report)
            .await
            .status(),
        404
    );

    // Ada's finished job has a Report button; it needs her token, and her
    // report reaches the review queue (once, however often she presses it).
    let page = ada.page(&format!("/jobs/{id}")).await;
    assert!(
        page.contains(&format!("action=\"/jobs/{id}/report\"")),
        "{page}"
    );
    let no_token = [("reason", "offensive")];
    assert_eq!(
        ada.post(&format!("/jobs/{id}/report"), &no_token)
            .await
            .status(),
        403
    );
    let csrf = ada.csrf.clone();
    for _ in 0..2 {
        let resp = ada
            .post(
                &format!("/jobs/{id}/report"),
                &[("csrf", &csrf), ("reason", "offensive")],
            )
            .await;
        assert_eq!(resp.status(), 200);
        assert!(resp.text().await.unwrap().contains("reached the operators"));
    }
    let admin = site.app.client_with(&site.app.admin_token);
    let cases = admin.list_cases(&Default::default()).await.unwrap().cases;
    assert_eq!(cases.len(), 1);
    let case = admin.get_case(cases[0].case_id).await.unwrap();
    assert_eq!(case.reports.len(), 1);
    assert_eq!(
        (
            case.reports[0].reason.as_str(),
            case.reports[0].reporter.to_string()
        ),
        ("offensive", ada_ref.clone())
    );

    // A form without the session's token is refused, whoever sends it.
    let live = web_api
        .create_job(
            &web_job(
                Capability::Video,
                &web_user_of(&site, "ada@example.org").await,
                json!({"prompt": "slow", "duration_seconds": 1}),
            ),
            None,
        )
        .await
        .unwrap()
        .job
        .job_id;
    for form in [
        vec![],
        vec![("csrf", "0".repeat(48))],
        vec![("csrf", bob.csrf.clone())],
    ] {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let resp = ada.post(&format!("/jobs/{live}/cancel"), &form).await;
        assert_eq!(resp.status(), 403, "cancel with {form:?}");
        assert_eq!(ada.post("/signout", &form).await.status(), 403);
        assert_eq!(ada.post("/account/link", &form).await.status(), 403);
    }
    let upload = ada
        .http
        .post(format!("{base}/generate/image"))
        .header("cookie", &ada.cookie)
        .header("content-type", "multipart/form-data; boundary=X")
        .body("--X\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nhi\r\n--X--\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 403, "a generation form without its token");
    assert!(!web_api.get_job(&live).await.unwrap().status.is_terminal());
    let csrf = ada.csrf.clone();
    let cancel = ada
        .post(&format!("/jobs/{live}/cancel"), &[("csrf", &csrf)])
        .await;
    assert_eq!(cancel.status(), 303, "with its token it goes through");
    assert_eq!(
        web_api.get_job(&live).await.unwrap().status,
        tessera_core::JobState::Cancelled
    );

    // A cookie changed by hand is no session at all.
    let mut forged = ada.cookie.clone().into_bytes();
    let at = forged.len() - 3;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    ada.cookie = String::from_utf8(forged).unwrap();
    let resp = ada.get("/account").await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/signin");
    site.web.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_prompt_is_shown_on_the_form_and_costs_nothing() {
    let site = Site::start(Backend::Sqlite, false).await;
    let mut ada = Visitor::new(&site.web.base_url()).await;
    ada.sign_up("ada@example.org").await;
    let resp = ada.post_image("naked ch.ild").await;
    assert!(resp.status().is_client_error(), "{}", resp.status());
    let page = resp.text().await.unwrap();
    assert!(
        page.contains(tessera_core::moderation::builtin::MESSAGE),
        "the form shows the rule's message: {page}"
    );
    assert!(
        page.contains("naked ch.ild"),
        "the form keeps what was typed"
    );
    let ada_ref = web_user_of(&site, "ada@example.org").await;
    let quota = site
        .app
        .client_with(&site.web_key)
        .get_user(&ada_ref)
        .await
        .unwrap();
    assert_eq!(quota.tokens_used_today, 0, "a refusal costs nothing");
    site.web.shutdown().await.unwrap();
}

/// A FREE visitor meets a queue that would keep them past the plan's bound:
/// the form says how long the wait is and when to try again, and nothing
/// is charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_shown_on_the_form_with_when_to_try_again() {
    let site = Site::start_with(Backend::Sqlite, false, |c| {
        c.admission.max_wait_ms.insert("free".into(), 3000);
    })
    .await;
    let api = site.app.client_with(&site.web_key);
    let mut ada = Visitor::new(&site.web.base_url()).await;
    ada.sign_up("ada@example.org").await;
    // One image completes: its run time is measured (the estimator reads
    // run times afresh every 5 s).
    let resp = ada.post_image("a first lamp").await;
    assert_eq!(resp.status(), 303);
    let job_id: tessera_core::JobId = resp.headers()["location"]
        .to_str()
        .unwrap()
        .trim_start_matches("/jobs/")
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.get_job(&job_id).await.unwrap().status != tessera_core::JobState::Completed {
        assert!(Instant::now() < deadline, "the first image never completed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(5200)).await;
    // Eight pro jobs ahead of any free one: about 12 s on the one worker.
    site.app
        .admin
        .set_plan("telegram:9999", &"pro".parse().unwrap())
        .await
        .unwrap();
    let tg = site.app.client_with(&site.tg_key);
    for i in 0..8 {
        let req = CreateJobRequest {
            callback_url: None,
            context: None,
            frontend: Platform::Telegram,
            bot_id: TG_BOT.parse().unwrap(),
            capability: Capability::Image,
            user_ref: "telegram:9999".parse().unwrap(),
            reply_context: None,
            params: json!({ "prompt": format!("pro job {i}") }),
        };
        tg.create_job(&req, None).await.unwrap();
    }

    let resp = ada.post_image("a lamp in a hurry").await;
    assert_eq!(resp.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    let page = resp.text().await.unwrap();
    assert!(page.contains("The queue is full right now"), "{page}");
    assert!(page.contains("of waiting ahead"), "{page}");
    assert!(page.contains("Try again in"), "{page}");
    assert!(
        page.contains("a lamp in a hurry"),
        "the form keeps what was typed"
    );
    let ada_ref = web_user_of(&site, "ada@example.org").await;
    let quota = api.get_user(&ada_ref).await.unwrap();
    assert_eq!(
        quota.tokens_used_today, 1,
        "only the first image was charged"
    );
    site.web.shutdown().await.unwrap();
}

/// An output the scheduler withholds (here: it came unclassified, from a
/// worker without the classifier, where every output must be checked): the
/// job's page tells the visitor plainly, once, and offers nothing to fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withheld_output_is_told_on_the_job_page() {
    let site = Site::start_with(Backend::Sqlite, false, |c| {
        c.moderation.outputs.unclassified =
            tessera_core::moderation::outputs::Unclassified::Withhold;
    })
    .await;
    let page = withheld_job_page(&site, "a red fox").await;
    let told = "Your image was withheld: it could not be checked, and only checked outputs are delivered here. Nothing was charged.";
    assert!(page.contains(told), "{page}");
    site.web.shutdown().await.unwrap();
}

/// The real classifier on what the engine painted, under a configured
/// threshold: the job's page says what was found was not allowed here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_classifier_withholds_on_the_job_page() {
    let (site, painting) = Site::start_classifying(Backend::Postgres, withholding).await;
    let page = withheld_job_page(&site, "a portrait").await;
    let told = "Your image was withheld: it showed content not allowed here. Nothing was charged.";
    assert!(page.contains(told), "{page}");
    site.web.shutdown().await.unwrap();
    painting.shutdown().await;
}

/// Signs a visitor up, asks for an image of `prompt` and returns the job's
/// page once it says the output was withheld: said once, nothing to fetch.
async fn withheld_job_page(site: &Site, prompt: &str) -> String {
    let mut ada = Visitor::new(&site.web.base_url()).await;
    ada.sign_up("ada@example.org").await;
    let resp = ada.post_image(prompt).await;
    assert_eq!(resp.status(), 303, "the job is created");
    let job_path = resp.headers()["location"].to_str().unwrap().to_owned();
    // The first classification loads the model.
    let deadline = Instant::now() + Duration::from_secs(60);
    let page = loop {
        let page = ada.page(&job_path).await;
        if page.contains("withheld") {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "the job page never said the output was withheld: {page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        page.matches("Nothing was charged").count(),
        1,
        "said once: {page}"
    );
    assert!(!page.contains("tokens were given back"), "{page}");
    assert!(
        !page.contains("/api/v1/artifacts/"),
        "nothing to fetch: {page}"
    );
    page
}
