//! The Discord frontend end to end: the real scheduler, a real worker with
//! `sim` engines, bot instances as `tessera discord` runs them, and a
//! loopback stand-in of Discord's REST API and gateway where simulated users
//! run slash commands.

use std::time::Duration;

use serde_json::json;
use tessera_core::{Capability, JobState, Platform};
use tessera_discord::config::{BotInstance, Mode, Secret};
use tessera_discord::{DiscordConfig, Secrets};
use tessera_scheduler::SchedulerConfig;
use tessera_testkit::standins::discord::{
    DiscordOptions, DiscordStandIn, InteractionRecord, Invocation, Signing,
};
use tessera_testkit::{sim, Backend, TestApp};
use tessera_worker::engine::sim::SIGNATURE;

const TOKEN: &str = "MTAwMjAwMzAwNDAwNTAwNjAw.Gx1y2z.image-bot-token";
const APP: u64 = 1_002_003_004_005_006_007;
const BOT: &str = "dc-image-bot-1";
const CHANNEL: u64 = 1_100_000_000_000_000_001;
const WAIT: Duration = Duration::from_secs(20);

struct Setup {
    app: TestApp,
    _worker: tessera_worker::WorkerHandle,
    dc: DiscordStandIn,
    config: DiscordConfig,
    api_key: String,
}

impl Setup {
    async fn new(
        backend: Backend,
        capabilities: Vec<Capability>,
        run_ms: u64,
        options: DiscordOptions,
        tweak: impl FnOnce(&mut SchedulerConfig),
    ) -> Setup {
        let app = TestApp::spawn_with(backend, |c| {
            c.workers.heartbeat_interval_ms = 200;
            c.workers.dispatch_tick_ms = 100;
            tweak(c);
        })
        .await;
        let worker = app
            .worker(
                "worker-gpu-0",
                vec![
                    sim(Capability::Image, &["sdxl-1.0"], run_ms),
                    sim(Capability::SpeechToText, &["whisper-base"], run_ms),
                ],
            )
            .await;
        let dc = DiscordStandIn::start_with(options).await;
        dc.add_bot(TOKEN, APP, "Tessera Image");
        let api_key = app.key(Platform::Discord, BOT).await;
        let config = DiscordConfig {
            scheduler_url: app.base_url(),
            api_url: dc.base_url(),
            gateway_url: dc.gateway_url(),
            job_poll_ms: 100,
            min_edit_ms: 200,
            bots: vec![BotInstance {
                id: BOT.parse().unwrap(),
                capabilities,
                mode: Mode::Gateway,
                public_key: None,
                token_env: None,
                token_file: None,
                api_key_env: None,
                api_key_file: None,
                limits: Default::default(),
            }],
            ..Default::default()
        };
        Setup {
            app,
            _worker: worker,
            dc,
            config,
            api_key,
        }
    }

    /// Starts the instance and waits until it is on the gateway with its
    /// commands registered.
    async fn start(&self) -> tessera_discord::Instance {
        let secrets = Secrets {
            token: Secret::new(TOKEN),
            api_key: Secret::new(self.api_key.clone()),
        };
        let instance = tessera_discord::start(&self.config, &self.config.bots[0], secrets)
            .await
            .expect("the bot starts");
        assert!(self.dc.wait_connected(TOKEN, WAIT).await, "on the gateway");
        assert!(!self.dc.wait_commands(APP, WAIT).await.is_empty());
        instance
    }

    async fn wait(
        &self,
        id: u64,
        what: &str,
        done: impl Fn(&InteractionRecord) -> bool,
    ) -> InteractionRecord {
        match self.dc.wait_interaction(id, WAIT, done).await {
            Some(r) => r,
            None => panic!("{what}; the interaction is {:#?}", self.dc.interaction(id)),
        }
    }
}

fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x89PNG\r\n\x1a\n")
}

fn original_is(r: &InteractionRecord, needle: &str) -> bool {
    r.original_content().is_some_and(|c| c.contains(needle))
}

async fn imagine_is_deferred_then_followed_up_with_the_image(backend: Backend) {
    let s = Setup::new(
        backend,
        vec![Capability::Image],
        1500,
        DiscordOptions::default(),
        |_| {},
    )
    .await;
    let bot = s.start().await;
    let names = s.dc.command_names(APP);
    assert!(names.contains(&"imagine".to_owned()), "{names:?}");
    assert!(!names.contains(&"video".to_owned()), "{names:?}");

    let sent = s.dc.slash(
        TOKEN,
        CHANNEL,
        42,
        "imagine",
        json!({"prompt": "a red fox in the snow", "ar": "16:9", "seed": 7}),
    );
    let acked = s
        .wait(sent.id, "never acknowledged", |r| r.acknowledged())
        .await;
    let callback = acked.callback.unwrap();
    assert_eq!(callback.kind, 5, "a deferred response");
    assert!(
        callback.after < Duration::from_secs(3),
        "within Discord's deadline"
    );

    let done = s
        .wait(sent.id, "no image follow-up", |r| {
            r.followups.iter().any(|m| !m.attachments.is_empty())
        })
        .await;
    let file = &done
        .followups
        .iter()
        .find(|m| !m.attachments.is_empty())
        .unwrap()
        .attachments[0];
    assert!(is_png(&file.bytes), "a real PNG");
    assert!(file.filename.ends_with(".png"), "{}", file.filename);
    // The original response is the progress message, edited to the end.
    let done = s
        .wait(sent.id, "the progress never reached done", |r| {
            original_is(r, "Your image is ready.")
        })
        .await;
    let original = done.original.unwrap();
    assert!(
        original
            .history
            .iter()
            .any(|t| t.starts_with("Making your image")),
        "it showed the job running: {:?}",
        original.history
    );
    // The job's parameters are the slash command's options, and its
    // delivery is acknowledged (just after the follow-up).
    let frontend = s.app.client_with(&s.api_key);
    let jobs = || async {
        frontend
            .list_jobs(&tessera_api::public::ListJobsQuery {
                bot_id: Some(BOT.parse().unwrap()),
                ..Default::default()
            })
            .await
            .unwrap()
            .jobs
    };
    let acknowledged = tokio::time::timeout(WAIT, async {
        while jobs().await.iter().any(|j| j.delivered_at.is_none()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let jobs = jobs().await;
    assert!(acknowledged.is_ok(), "not acknowledged: {jobs:?}");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].params["prompt"], "a red fox in the snow");
    assert_eq!(jobs[0].params["seed"], 7);
    bot.shutdown().await;
    s.app.shutdown().await;
}

async fn an_audio_attachment_is_transcribed(backend: Backend) {
    let s = Setup::new(
        backend,
        vec![Capability::SpeechToText],
        0,
        DiscordOptions::default(),
        |_| {},
    )
    .await;
    let bot = s.start().await;
    let sent = s.dc.slash_with_attachment(
        TOKEN,
        CHANNEL,
        43,
        "transcribe",
        "file",
        vec![0x4f_u8; 3210],
        "note.ogg",
        "audio/ogg",
    );
    let done = s
        .wait(sent.id, "no transcript", |r| {
            r.followups
                .iter()
                .any(|m| m.content.contains("A transcript of"))
        })
        .await;
    let text = &done
        .followups
        .iter()
        .find(|m| m.content.contains("A transcript of"))
        .unwrap()
        .content;
    assert!(text.contains(SIGNATURE), "{text}");
    assert!(
        text.contains("3210 bytes"),
        "the attachment reached the engine: {text}"
    );
    // Something that is not audio is refused in words.
    let sent = s.dc.slash_with_attachment(
        TOKEN,
        CHANNEL,
        43,
        "transcribe",
        "file",
        b"just text".to_vec(),
        "note.txt",
        "text/plain",
    );
    s.wait(sent.id, "no refusal", |r| original_is(r, "not audio"))
        .await;
    bot.shutdown().await;
    s.app.shutdown().await;
}

async fn quota_exhaustion_is_told_with_the_reset_time(backend: Backend) {
    let s = Setup::new(
        backend,
        vec![Capability::Image],
        0,
        DiscordOptions::default(),
        |c| c.billing.costs.image_per_megapixel = 15,
    )
    .await;
    let bot = s.start().await;
    let first =
        s.dc.slash(TOKEN, CHANNEL, 44, "imagine", json!({"prompt": "a lamp"}));
    s.wait(first.id, "the first image", |r| {
        original_is(r, "Your image is ready.")
    })
    .await;
    let second = s.dc.slash(
        TOKEN,
        CHANNEL,
        44,
        "imagine",
        json!({"prompt": "another lamp"}),
    );
    let refused = s
        .wait(second.id, "no quota message", |r| {
            original_is(r, "used up today's tokens")
        })
        .await;
    assert!(refused.original_content().unwrap().contains("UTC"));
    let quota = s.dc.slash(TOKEN, CHANNEL, 44, "quota", json!({}));
    s.wait(quota.id, "no quota", |r| original_is(r, "5 tokens left"))
        .await;
    bot.shutdown().await;
    s.app.shutdown().await;
}

async fn a_restarted_bot_delivers_what_it_was_following(backend: Backend) {
    let s = Setup::new(
        backend,
        vec![Capability::Image],
        1500,
        DiscordOptions::default(),
        |_| {},
    )
    .await;
    let bot = s.start().await;
    let sent = s.dc.slash(
        TOKEN,
        CHANNEL,
        45,
        "imagine",
        json!({"prompt": "a slow painting"}),
    );
    s.wait(sent.id, "never running", |r| {
        original_is(r, "Making your image")
    })
    .await;
    bot.shutdown().await;
    let admin = &s.app.admin;
    tokio::time::timeout(WAIT, async {
        loop {
            let jobs = admin
                .admin_list_jobs(&tessera_api::public::ListJobsQuery {
                    bot_id: Some(BOT.parse().unwrap()),
                    ..Default::default()
                })
                .await
                .unwrap();
            if jobs.jobs.iter().any(|j| j.status == JobState::Completed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the job completes without the bot");
    assert!(s.dc.interaction(sent.id).unwrap().followups.is_empty());
    let bot = s.start().await;
    let done = s
        .wait(sent.id, "not delivered after the restart", |r| {
            original_is(r, "Your image is ready.") && r.followups.len() == 1
        })
        .await;
    assert!(is_png(&done.followups[0].attachments[0].bytes));
    bot.shutdown().await;
    s.app.shutdown().await;
}

async fn replies_move_to_the_channel_when_the_interaction_token_expires(backend: Backend) {
    let options = DiscordOptions {
        token_lifetime: Duration::from_millis(1200),
        ..Default::default()
    };
    let s = Setup::new(backend, vec![Capability::Image], 2500, options, |_| {}).await;
    let bot = s.start().await;
    let sent = s.dc.slash(
        TOKEN,
        CHANNEL,
        46,
        "imagine",
        json!({"prompt": "a long wait"}),
    );
    let messages = s.dc.wait_channel_messages(CHANNEL, 2, WAIT).await;
    assert!(
        messages
            .iter()
            .any(|m| m.attachments.iter().any(|f| is_png(&f.bytes))),
        "the image went to the channel: {messages:#?}"
    );
    assert!(
        messages.iter().any(|m| m.content == "Your image is ready."),
        "the progress moved to the channel: {messages:#?}"
    );
    let record = s.dc.interaction(sent.id).unwrap();
    assert!(record.followups.is_empty());
    bot.shutdown().await;
    s.app.shutdown().await;
}

/// Once the token has expired and the bot may not post in the channel
/// (Missing Permissions), the progress and the image reach the user in a
/// direct message.
async fn replies_go_to_direct_messages_when_the_channel_refuses_the_bot(backend: Backend) {
    let options = DiscordOptions {
        token_lifetime: Duration::from_millis(1200),
        ..Default::default()
    };
    let s = Setup::new(backend, vec![Capability::Image], 2500, options, |_| {}).await;
    let bot = s.start().await;
    s.dc.refuse_channel(CHANNEL, 50013);
    let sent = s.dc.slash(
        TOKEN,
        CHANNEL,
        47,
        "imagine",
        json!({"prompt": "a closed door"}),
    );
    let dm = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(dm) = s.dc.dm_channel(47) {
                return dm;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("no direct message channel was opened");
    let messages = s.dc.wait_channel_messages(dm, 2, WAIT).await;
    assert!(
        messages
            .iter()
            .any(|m| m.attachments.iter().any(|f| is_png(&f.bytes))),
        "the image went to the direct messages: {messages:#?}"
    );
    assert!(
        messages.iter().any(|m| m.content == "Your image is ready."),
        "the progress moved to the direct messages: {messages:#?}"
    );
    assert!(s.dc.channel_messages(CHANNEL).is_empty());
    assert!(s.dc.interaction(sent.id).unwrap().followups.is_empty());
    bot.shutdown().await;
    s.app.shutdown().await;
}

/// When neither the channel (Missing Access) nor the user's direct
/// messages (closed) take a reply, nothing is posted anywhere and the bot
/// does not keep trying.
async fn a_reply_neither_the_channel_nor_the_dms_take_is_dropped(backend: Backend) {
    let options = DiscordOptions {
        token_lifetime: Duration::from_millis(1200),
        ..Default::default()
    };
    let s = Setup::new(backend, vec![Capability::Image], 2500, options, |_| {}).await;
    let bot = s.start().await;
    s.dc.refuse_channel(CHANNEL, 50001);
    s.dc.close_dms(48);
    let sent =
        s.dc.slash(TOKEN, CHANNEL, 48, "imagine", json!({"prompt": "a wall"}));
    let admin = &s.app.admin;
    tokio::time::timeout(WAIT, async {
        loop {
            let jobs = admin
                .admin_list_jobs(&tessera_api::public::ListJobsQuery {
                    bot_id: Some(BOT.parse().unwrap()),
                    ..Default::default()
                })
                .await
                .unwrap();
            if jobs.jobs.iter().any(|j| j.status == JobState::Completed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the job completes");
    // The bot tried the channel, then opened the DM channel and was refused.
    let refused = |route: String| {
        s.dc.calls(&route)
            .iter()
            .any(|c| c.method == "POST" && c.status == 403)
    };
    let dm = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(dm) = s.dc.dm_channel(48) {
                if refused(format!("/channels/{dm}/messages")) {
                    return dm;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the bot tried the direct messages");
    assert!(refused(format!("/channels/{CHANNEL}/messages")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(s.dc.channel_messages(dm).is_empty());
    assert!(s.dc.channel_messages(CHANNEL).is_empty());
    assert!(s.dc.interaction(sent.id).unwrap().followups.is_empty());
    bot.shutdown().await;
    s.app.shutdown().await;
}

/// `/link` is answered only to the asker (ephemeral) with a code the
/// website's key redeems to link the Discord user to an account.
async fn link_answers_privately_with_a_code_the_website_redeems(backend: Backend) {
    let s = Setup::new(
        backend,
        vec![Capability::Image],
        0,
        DiscordOptions::default(),
        |_| {},
    )
    .await;
    let bot = s.start().await;
    let asked = s.dc.slash(TOKEN, CHANNEL, 46, "link", json!({}));
    let answered = s
        .wait(asked.id, "no link code", |r| {
            original_is(r, "Your link code is")
        })
        .await;
    let original = answered.original.as_ref().unwrap();
    assert!(original.ephemeral(), "only the asker sees the code");
    let code: String = original
        .content
        .trim_start_matches("Your link code is ")
        .chars()
        .take(9)
        .collect();

    let web = s.app.frontend(Platform::Web, "web-1").await;
    let account = web
        .create_account(&tessera_api::public::Credentials {
            email: "ada@example.org".into(),
            password: "correct horse battery".into(),
        })
        .await
        .unwrap();
    let linked = web
        .redeem_link_code(&account.user_ref, &code)
        .await
        .unwrap();
    assert_eq!(linked.linked, ["discord:46"]);
    bot.shutdown().await;
    s.app.shutdown().await;
}

/// The website on loopback with its own web key, for download links.
async fn website(s: &Setup) -> tessera_web::WebHandle {
    let key = s.app.key(Platform::Web, "web").await;
    let mut config =
        tessera_web::WebConfig::new(s.app.base_url(), tessera_chat::Secret::new(key.as_str()));
    config.listen = "127.0.0.1:0".parse().unwrap();
    tessera_web::start(config)
        .await
        .expect("the website starts")
}

/// The link in the bot's words, and the words.
async fn link_followup(s: &Setup, id: u64) -> (String, String) {
    let done = s
        .wait(id, "no download link", |r| {
            r.followups.iter().any(|m| m.content.contains("/d/"))
        })
        .await;
    let words = done
        .followups
        .iter()
        .find(|m| m.content.contains("/d/"))
        .unwrap()
        .content
        .clone();
    let url = words
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("a URL in the words")
        .to_owned();
    (url, words)
}

/// An output over the interaction's `attachment_size_limit` is never
/// uploaded: it comes as a link to the website, which serves it without an
/// account until it expires, and refuses the link altered.
async fn an_output_over_the_attachment_limit_comes_as_a_link_that_expires(backend: Backend) {
    let options = DiscordOptions {
        attachment_size_limit: 100,
        ..Default::default()
    };
    let mut s = Setup::new(backend, vec![Capability::Image], 100, options, |c| {
        c.artifacts.link_lifetime_secs = 4;
    })
    .await;
    let web = website(&s).await;
    s.config.site_url = Some(web.base_url());
    let bot = s.start().await;
    let sent =
        s.dc.slash(TOKEN, CHANNEL, 42, "imagine", json!({"prompt": "a fox"}));
    let (url, words) = link_followup(&s, sent.id).await;
    assert!(
        words.starts_with(
            "Your image is larger than Discord accepts; download it here (the link works for 4 seconds): http://"
        ),
        "{words}"
    );
    assert!(
        url.starts_with(&format!("{}/d/art_", web.base_url())),
        "{url}"
    );
    // Nothing was uploaded: the limit was read from the interaction.
    let uploads: Vec<_> =
        s.dc.calls("/webhooks/")
            .into_iter()
            .filter(|c| !c.form.is_empty())
            .collect();
    assert!(uploads.is_empty(), "uploaded: {uploads:?}");

    // The link serves the output's bytes to anyone, with no session.
    let job = s.app.client_with(&s.api_key);
    let jobs = job
        .list_jobs(&tessera_api::public::ListJobsQuery::default())
        .await
        .unwrap()
        .jobs;
    let original = job.download(&jobs[0].artifacts[0].url).await.unwrap();
    let http = reqwest::Client::new();
    let got = http.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "image/png");
    let bytes = got.bytes().await.unwrap();
    assert!(is_png(&bytes));
    assert_eq!(bytes.to_vec(), original);
    // Altered, it is refused with a page that says so.
    let mut forged = url.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    let refused = http.get(&forged).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("This download link is not valid"));
    // Delivered: the link counts.
    let delivered = tokio::time::timeout(WAIT, async {
        loop {
            let j = job.get_job(&jobs[0].job_id).await.unwrap();
            if j.delivered_at.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(delivered.is_ok(), "never acknowledged");
    // Past its lifetime, it is gone.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let expired = http.get(&url).send().await.unwrap();
    assert_eq!(expired.status(), 410);
    assert!(expired
        .text()
        .await
        .unwrap()
        .contains("This download link has expired"));
    bot.shutdown().await;
    web.shutdown().await.unwrap();
    s.app.shutdown().await;
}

/// An upload Discord answers 40005 "Request entity too large" (the guild
/// lost a boost after the interaction) is not tried again: a link follows.
async fn an_upload_refused_as_too_large_is_sent_once_then_linked(backend: Backend) {
    let mut s = Setup::new(
        backend,
        vec![Capability::Image],
        1500,
        DiscordOptions::default(),
        |_| {},
    )
    .await;
    let web = website(&s).await;
    s.config.site_url = Some(web.base_url());
    let bot = s.start().await;
    let sent =
        s.dc.slash(TOKEN, CHANNEL, 42, "imagine", json!({"prompt": "a fox"}));
    s.wait(sent.id, "never acknowledged", |r| r.acknowledged())
        .await;
    s.dc.set_attachment_size_limit(100);
    let (url, words) = link_followup(&s, sent.id).await;
    assert!(words.contains("larger than Discord accepts"), "{words}");
    let uploads: Vec<_> =
        s.dc.calls("/webhooks/")
            .into_iter()
            .filter(|c| !c.form.is_empty())
            .collect();
    assert_eq!(uploads.len(), 1, "tried once: {uploads:?}");
    assert_eq!(uploads[0].status, 413);
    let got = reqwest::get(&url).await.unwrap();
    assert_eq!(got.status(), 200);
    assert!(is_png(&got.bytes().await.unwrap()));
    bot.shutdown().await;
    web.shutdown().await.unwrap();
    s.app.shutdown().await;
}

tessera_testkit::backend_tests!(
    imagine_is_deferred_then_followed_up_with_the_image,
    an_output_over_the_attachment_limit_comes_as_a_link_that_expires,
    an_upload_refused_as_too_large_is_sent_once_then_linked,
    an_audio_attachment_is_transcribed,
    quota_exhaustion_is_told_with_the_reset_time,
    a_restarted_bot_delivers_what_it_was_following,
    replies_move_to_the_channel_when_the_interaction_token_expires,
    replies_go_to_direct_messages_when_the_channel_refuses_the_bot,
    a_reply_neither_the_channel_nor_the_dms_take_is_dropped,
    link_answers_privately_with_a_code_the_website_redeems,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_user_is_told_once_and_every_interaction_is_answered() {
    let mut s = Setup::new(
        Backend::Sqlite,
        vec![Capability::Image],
        0,
        DiscordOptions::default(),
        |_| {},
    )
    .await;
    s.config.bots[0].limits = tessera_chat::LimitConfig {
        jobs_per_minute: 60,
        job_burst: 10,
        commands_per_minute: 3,
    };
    let bot = s.start().await;
    let sent: Vec<_> = (0..5)
        .map(|_| s.dc.slash(TOKEN, CHANNEL, 49, "status", json!({})))
        .collect();
    let mut originals = Vec::new();
    for i in &sent {
        // Discord shows "thinking..." until the original is filled: every
        // interaction gets words, limited or not.
        let r = s
            .wait(i.id, "an interaction left thinking", |r| {
                r.original_content().is_some_and(|c| !c.is_empty())
            })
            .await;
        originals.push(r.original_content().unwrap().to_owned());
    }
    // They are handled concurrently, so count rather than order: a burst of
    // one command, one notice with the wait, and short answers for the rest.
    let count = |needle: &str| originals.iter().filter(|t| t.contains(needle)).count();
    assert_eq!(count("nothing waiting or running"), 1, "{originals:?}");
    assert_eq!(count("Slow down"), 1, "told once per wait: {originals:?}");
    assert_eq!(count("wait a little"), 3, "{originals:?}");
    bot.shutdown().await;
    s.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_gateway_connection_is_resumed() {
    let s = Setup::new(
        Backend::Sqlite,
        vec![Capability::Image],
        0,
        DiscordOptions {
            heartbeat_interval: Duration::from_millis(300),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let bot = s.start().await;
    assert!(s.dc.wait_heartbeats(TOKEN, 2, WAIT).await, "it heartbeats");
    assert!(s.dc.disconnect(TOKEN));
    assert!(s.dc.wait_resumes(TOKEN, 1, WAIT).await, "it resumes");
    assert_eq!(s.dc.identifies(TOKEN), 1, "a resume, not a new session");
    let connections = s.dc.gateway_connections();
    assert!(
        connections[0].path.starts_with("/gateway") && !connections[0].path.contains("resume"),
        "{connections:?}"
    );
    assert!(
        connections
            .last()
            .is_some_and(|c| c.path.starts_with("/gateway-resume")),
        "resumed at READY's loopback resume URL: {connections:?}"
    );
    assert_eq!(
        connections[0].intents,
        Some(0),
        "no privileged intents asked"
    );
    let sent = s.dc.slash(TOKEN, CHANNEL, 47, "help", json!({}));
    s.wait(sent.id, "no help after the resume", |r| {
        original_is(r, "/imagine")
    })
    .await;
    bot.shutdown().await;
    s.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_interactions_endpoint_checks_signatures_and_defers() {
    let mut s = Setup::new(
        Backend::Sqlite,
        vec![Capability::Image],
        0,
        DiscordOptions::default(),
        |_| {},
    )
    .await;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    s.config.interactions_listen = listen;
    s.config.bots[0].mode = Mode::Http;
    s.config.bots[0].public_key = Some(s.dc.public_key_hex(TOKEN));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::write(dir.path().join("key"), &s.api_key).unwrap();
    s.config.bots[0].token_file = Some(dir.path().join("token"));
    s.config.bots[0].api_key_file = Some(dir.path().join("key"));
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(tessera_discord::run(s.config.clone(), stop.clone()));
    let endpoint = format!("http://{listen}/discord/{BOT}");
    tokio::time::timeout(WAIT, async {
        while reqwest::get(format!("http://{listen}/")).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the endpoint listens");

    // The developer portal's check: a signed PING gets a PONG, a bad
    // signature gets 401.
    s.dc.verify_endpoint(&endpoint, TOKEN).await.unwrap();
    for signing in [Signing::WrongKey, Signing::OtherBody, Signing::Missing] {
        let answer =
            s.dc.post_signed(&endpoint, TOKEN, &json!({"type": 1, "token": "x"}), signing)
                .await;
        assert_eq!(answer.status, Some(401));
    }
    assert!(!s.dc.connected(TOKEN), "no gateway in HTTP mode");
    // The listener's probes: alive, and ready while the scheduler is.
    for probe in ["healthz", "readyz"] {
        let response = reqwest::get(format!("http://{listen}/{probe}"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{probe}");
    }

    let answer =
        s.dc.post_interaction(
            &endpoint,
            TOKEN,
            Invocation::new(CHANNEL, 48, "imagine").options(json!({"prompt": "a harbour"})),
        )
        .await;
    assert_eq!(answer.status, Some(200));
    assert_eq!(answer.json().unwrap()["type"], 5, "deferred in the answer");
    let id = answer.interaction.unwrap().id;
    let done = s
        .wait(id, "no image", |r| {
            r.followups.iter().any(|m| !m.attachments.is_empty())
        })
        .await;
    assert!(done.callback.unwrap().via_http_answer);
    stop.cancel();
    run.await.unwrap().unwrap();
    s.app.shutdown().await;
}
