//! The Telegram frontend end to end: the real scheduler, a real worker with
//! `sim` engines, the bot instance as `tessera telegram` runs it, and a
//! loopback stand-in of the Telegram Bot API where simulated users type.

use std::time::Duration;

use tessera_core::{Capability, JobState, Platform};
use tessera_scheduler::SchedulerConfig;
use tessera_telegram::config::{BotInstance, Secret, Webhook};
use tessera_telegram::{Secrets, TelegramConfig};
use tessera_testkit::classifier::{patient, withholding, PaintingWorker};
use tessera_testkit::standins::telegram::{MessageKind, TelegramStandIn, UserMessage};
use tessera_testkit::{sim, Backend, TestApp};
use tessera_worker::engine::sim::SIGNATURE;

const TOKEN: &str = "123456:AAE-image-bot-token";
const BOT: &str = "tg-image-bot-1";
const WAIT: Duration = Duration::from_secs(20);

fn fast(config: &mut SchedulerConfig) {
    config.workers.heartbeat_interval_ms = 200;
    config.workers.dispatch_tick_ms = 100;
}

/// Everything one test needs: scheduler, worker, the Bot API stand-in, and
/// the bot's config and secrets.
struct Setup {
    app: TestApp,
    /// The worker, unless the test holds its own.
    _worker: Option<tessera_worker::WorkerHandle>,
    tg: TelegramStandIn,
    config: TelegramConfig,
    api_key: String,
}

impl Setup {
    async fn new(
        backend: Backend,
        capabilities: Vec<Capability>,
        run_ms: u64,
        tweak: impl FnOnce(&mut SchedulerConfig),
    ) -> Setup {
        let app = TestApp::spawn_with(backend, |c| {
            fast(c);
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
        Self::with_worker(app, Some(worker), capabilities).await
    }

    /// A scheduler `tweak`ed, and a worker whose images come from a
    /// ComfyUI painting the face NudeNet scores (see
    /// `tessera_testkit::classifier`), classified by the real detector.
    async fn classifying(
        backend: Backend,
        tweak: impl FnOnce(&mut SchedulerConfig),
    ) -> (Setup, PaintingWorker) {
        let app = TestApp::spawn_with(backend, |c| {
            fast(c);
            patient(c);
            tweak(c);
        })
        .await;
        let painting = PaintingWorker::start(&app, "worker-gpu-0", vec![]).await;
        let setup = Self::with_worker(app, None, vec![Capability::Image]).await;
        (setup, painting)
    }

    async fn with_worker(
        app: TestApp,
        worker: Option<tessera_worker::WorkerHandle>,
        capabilities: Vec<Capability>,
    ) -> Setup {
        let tg = TelegramStandIn::start().await;
        tg.add_bot(TOKEN, "tessera_image_bot");
        let api_key = app.key(Platform::Telegram, BOT).await;
        let config = TelegramConfig {
            scheduler_url: app.base_url(),
            api_url: tg.api_url(),
            poll_timeout_secs: 2,
            job_poll_ms: 100,
            min_edit_ms: 200,
            bots: vec![BotInstance {
                id: BOT.parse().unwrap(),
                capabilities,
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
            tg,
            config,
            api_key,
        }
    }

    fn secrets(&self) -> Secrets {
        Secrets {
            token: Secret::new(TOKEN),
            api_key: Secret::new(self.api_key.clone()),
        }
    }

    async fn start(&self) -> tessera_telegram::Instance {
        tessera_telegram::start(&self.config, &self.config.bots[0], self.secrets())
            .await
            .expect("the bot starts")
    }

    /// The texts the bot has in a chat now (after edits).
    fn bot_texts(&self, chat: i64) -> Vec<String> {
        self.tg
            .chat(TOKEN, chat)
            .into_iter()
            .filter(|m| m.author == tessera_testkit::standins::telegram::Author::Bot)
            .filter_map(|m| m.text)
            .collect()
    }

    /// Waits for a bot text in `chat` that contains `needle`.
    async fn wait_text(&self, chat: i64, needle: &str) -> String {
        let found = self
            .tg
            .wait_for(WAIT, |_| {
                self.bot_texts(chat)
                    .into_iter()
                    .find(|t| t.contains(needle))
            })
            .await;
        found.unwrap_or_else(|| {
            panic!(
                "no message containing {needle:?} in chat {chat}; the bot said {:?}",
                self.bot_texts(chat)
            )
        })
    }
}

fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x89PNG\r\n\x1a\n")
}

async fn imagine_ends_with_a_photo_in_the_right_chat(backend: Backend) {
    let s = Setup::new(backend, vec![Capability::Image], 1500, |_| {}).await;
    let bot = s.start().await;
    // The command menu holds what this bot serves, and nothing else.
    let menu: Vec<String> =
        s.tg.commands(TOKEN)
            .into_iter()
            .map(|c| c.command)
            .collect();
    assert!(menu.contains(&"imagine".to_owned()), "{menu:?}");
    assert!(!menu.contains(&"video".to_owned()), "{menu:?}");

    s.tg.user_text(TOKEN, 1001, 1001, "/imagine a red fox in the snow --seed 7");
    s.tg.user_text(TOKEN, 2002, 2002, "/help");
    let photo =
        s.tg.wait_sent(TOKEN, WAIT, |m| m.kind == MessageKind::Photo)
            .await
            .expect("a photo is sent");
    assert_eq!(photo.chat_id, 1001, "the photo went to the asker's chat");
    let upload = photo.upload.expect("the photo is uploaded");
    assert!(is_png(&upload.bytes), "a real PNG");
    assert!(
        photo.text.as_deref().unwrap_or("").contains("a red fox"),
        "the caption recalls the prompt: {:?}",
        photo.text
    );

    // One progress message, edited in place from the queue to done.
    let progress =
        s.tg.chat(TOKEN, 1001)
            .into_iter()
            .find(|m| {
                m.author == tessera_testkit::standins::telegram::Author::Bot
                    && m.kind == MessageKind::Text
            })
            .expect("a progress message");
    assert_eq!(progress.text.as_deref(), Some("Your image is ready."));
    assert!(
        progress.edits() >= 2,
        "edited as the job moved: {:?}",
        progress.history
    );
    assert!(
        progress
            .history
            .iter()
            .any(|t| t.starts_with("Making your image")),
        "it showed the job running: {:?}",
        progress.history
    );
    // The other user got the help text and no photo.
    let help = s.wait_text(2002, "/imagine").await;
    assert!(!help.contains("/video"), "{help}");
    assert!(s
        .tg
        .sent(TOKEN)
        .iter()
        .all(|m| m.chat_id != 2002 || m.kind == MessageKind::Text));

    // Delivery is acknowledged (just after the photo went): nothing is left
    // for a restarted bot to send.
    let frontend = s.app.client_with(&s.api_key);
    let undelivered = || async {
        frontend
            .list_jobs(&tessera_api::public::ListJobsQuery {
                bot_id: Some(BOT.parse().unwrap()),
                undelivered: Some(true),
                ..Default::default()
            })
            .await
            .unwrap()
            .jobs
    };
    let acknowledged = tokio::time::timeout(WAIT, async {
        while !undelivered().await.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        acknowledged.is_ok(),
        "undelivered: {:?}",
        undelivered().await
    );
    bot.shutdown().await;
    s.app.shutdown().await;
}

async fn a_voice_message_is_transcribed(backend: Backend) {
    let s = Setup::new(backend, vec![Capability::SpeechToText], 0, |_| {}).await;
    let bot = s.start().await;
    let voice = vec![0x4f_u8; 3210];
    s.tg.user_says(
        TOKEN,
        3003,
        3003,
        UserMessage::voice(voice.clone(), "audio/ogg", 2),
    );
    // The sim engine's transcript names the bytes it was given: the voice
    // message went from Telegram through the bot and the scheduler to it.
    let text = s.wait_text(3003, "A transcript of").await;
    assert!(text.contains(SIGNATURE), "{text}");
    assert!(text.contains("3210 bytes"), "{text}");
    assert!(s.tg.calls(TOKEN, "getFile") >= 1);
    // Typed text is not something a transcription bot can do.
    s.tg.user_text(TOKEN, 3003, 3003, "hello there");
    s.wait_text(3003, "voice message").await;
    bot.shutdown().await;
    s.app.shutdown().await;
}

/// A text reply grows in the progress message as the engine writes it (the
/// bot follows the job's events), edits no closer than `min_edit_ms`; then
/// the whole reply is sent.
async fn a_text_reply_grows_in_the_progress_message(backend: Backend) {
    let app = TestApp::spawn_with(backend, fast).await;
    // Ten steps of 300 ms, each writing a tenth of the reply.
    let worker = app
        .worker(
            "worker-text-0",
            vec![sim(Capability::Text, &["llama-3.2-3b"], 3000)],
        )
        .await;
    let s = Setup::with_worker(app, Some(worker), vec![Capability::Text]).await;
    let bot = s.start().await;
    s.tg.user_text(TOKEN, 4004, 4004, "/ask tell me about the sea");
    // The reply, whole, in a message of its own.
    let reply =
        s.tg.wait_for(WAIT, |_| {
            s.bot_texts(4004)
                .into_iter()
                .find(|t| t.starts_with(&format!("[{SIGNATURE}]")) && t.ends_with("would be here."))
        })
        .await
        .unwrap_or_else(|| panic!("no reply; the bot said {:?}", s.bot_texts(4004)));
    let progress =
        s.tg.chat(TOKEN, 4004)
            .into_iter()
            .find(|m| {
                m.author == tessera_testkit::standins::telegram::Author::Bot
                    && m.kind == MessageKind::Text
            })
            .expect("a progress message");
    // The parts of the reply the progress message showed while it ran.
    let shown: Vec<&str> = progress
        .history
        .iter()
        .filter_map(|t| t.split_once("\n\n").map(|(_, text)| text))
        .collect();
    assert!(
        shown.len() >= 2,
        "the reply grew in the progress message: {:?}",
        progress.history
    );
    for (earlier, later) in shown.iter().zip(shown.iter().skip(1)) {
        assert!(later.starts_with(earlier), "{shown:?}");
    }
    assert!(
        shown.iter().all(|t| reply.starts_with(t)),
        "parts of the reply: {shown:?} of {reply:?}"
    );
    assert!(
        shown[0].len() < reply.len(),
        "shown before it was whole: {shown:?}"
    );
    assert_eq!(progress.text.as_deref(), Some("Your reply is ready."));
    bot.shutdown().await;
    s.app.shutdown().await;
}

async fn quota_and_rate_limits_are_told_in_plain_words(backend: Backend) {
    // Ten tokens an image: the FREE plan's twenty buy two.
    let mut s = Setup::new(backend, vec![Capability::Image], 0, |c| {
        c.billing.costs.image_per_megapixel = 10;
    })
    .await;
    s.config.bots[0].limits = tessera_chat::LimitConfig {
        jobs_per_minute: 60,
        job_burst: 10,
        commands_per_minute: 60,
    };
    let bot = s.start().await;
    for _ in 0..2 {
        s.tg.user_text(TOKEN, 4004, 4004, "/imagine a lamp");
    }
    s.tg.wait_until(WAIT, |tg| {
        tg.sent(TOKEN)
            .iter()
            .filter(|m| m.kind == MessageKind::Photo)
            .count()
            == 2
    })
    .await;
    s.tg.user_text(TOKEN, 4004, 4004, "/imagine a third lamp");
    let refused = s.wait_text(4004, "used up today's tokens").await;
    assert!(refused.contains("UTC"), "says when they reset: {refused}");
    s.tg.user_text(TOKEN, 4004, 4004, "/quota");
    let quota = s.wait_text(4004, "Plan: FREE").await;
    assert!(quota.contains("0 tokens left"), "{quota}");
    bot.shutdown().await;

    // A tight limit: one job a minute.
    s.config.bots[0].limits = tessera_chat::LimitConfig {
        jobs_per_minute: 1,
        job_burst: 1,
        commands_per_minute: 60,
    };
    let bot = s.start().await;
    s.tg.user_text(TOKEN, 5005, 5005, "/imagine one");
    s.wait_text(5005, "Your image is ready.").await;
    s.tg.user_text(TOKEN, 5005, 5005, "/imagine two");
    let slow = s.wait_text(5005, "Slow down").await;
    assert!(
        slow.contains(" s.") || slow.contains("min."),
        "says when: {slow}"
    );
    // Another user is not held back by the first.
    s.tg.user_text(TOKEN, 6006, 6006, "/imagine three");
    s.wait_text(6006, "Your image is ready.").await;
    bot.shutdown().await;
    s.app.shutdown().await;
}

/// Fills the image queue ahead of every free job: `n` jobs of a pro user
/// (pro jobs run first, and pro's bound is the policy's 15 minutes).
async fn fill_with_pro_jobs(app: &TestApp, bot: &str, n: usize) {
    app.admin
        .set_plan("telegram:9999", &"pro".parse().unwrap())
        .await
        .unwrap();
    let client = app.frontend(Platform::Telegram, bot).await;
    for i in 0..n {
        let req = tessera_api::public::CreateJobRequest {
            callback_url: None,
            context: None,
            frontend: Platform::Telegram,
            bot_id: bot.parse().unwrap(),
            capability: Capability::Image,
            user_ref: "telegram:9999".parse().unwrap(),
            reply_context: None,
            params: serde_json::json!({ "prompt": format!("pro job {i}") }),
        };
        client.create_job(&req, None).await.unwrap();
    }
}

async fn a_full_queue_is_told_with_its_wait_and_when_to_try_again(backend: Backend) {
    // A slow worker; the FREE plan waits at most 3 s.
    let s = Setup::new(backend, vec![Capability::Image], 2000, |c| {
        c.admission.max_wait_ms.insert("free".into(), 3000);
    })
    .await;
    let bot = s.start().await;
    // One image completes: its run time is measured (the estimator reads
    // run times afresh every 5 s).
    s.tg.user_text(TOKEN, 7007, 7007, "/imagine the first lamp");
    s.wait_text(7007, "Your image is ready.").await;
    tokio::time::sleep(Duration::from_millis(5200)).await;
    // Eight pro jobs ahead of any free one: about 14 s of waiting on the
    // one worker.
    fill_with_pro_jobs(&s.app, BOT, 8).await;

    s.tg.user_text(TOKEN, 7008, 7008, "/imagine a lamp in a hurry");
    let refused = s.wait_text(7008, "The queue is full right now").await;
    assert!(refused.contains("of waiting ahead"), "{refused}");
    assert!(refused.contains("Try again in"), "{refused}");
    assert!(refused.contains("Nothing was charged"), "{refused}");
    let quota = s
        .app
        .frontend(Platform::Telegram, BOT)
        .await
        .get_user("telegram:7008")
        .await
        .unwrap();
    assert_eq!(quota.tokens_used_today, 0, "a refusal costs nothing");
    bot.shutdown().await;
    s.app.shutdown().await;
}

async fn a_refused_prompt_is_told_plainly_and_costs_nothing(backend: Backend) {
    let s = Setup::new(backend, vec![Capability::Image], 0, |_| {}).await;
    let bot = s.start().await;
    s.tg.user_text(TOKEN, 3003, 3003, "/imagine a n4ked ch1ld");
    let refused = s.wait_text(3003, "never allowed").await;
    assert_eq!(
        refused,
        format!(
            "{} Nothing was charged.",
            tessera_core::moderation::builtin::MESSAGE
        )
    );
    let api = s.app.frontend(Platform::Telegram, BOT).await;
    let quota = api.get_user("telegram:3003").await.unwrap();
    assert_eq!(quota.tokens_used_today, 0, "a refusal costs nothing");
    // The child-safety rules suspended the user pending review: their next,
    // benign, request is refused in plain words, and costs nothing.
    s.tg.user_text(TOKEN, 3003, 3003, "/imagine a red fox");
    let suspended = s.wait_text(3003, "suspended").await;
    assert_eq!(
        suspended,
        "This account is suspended pending a review by the operators, so it cannot start jobs; nothing was charged."
    );
    let quota = api.get_user("telegram:3003").await.unwrap();
    assert_eq!(
        quota.tokens_used_today, 0,
        "a suspended user's create costs nothing"
    );
    // Another user's request runs.
    s.tg.user_text(TOKEN, 3004, 3004, "/imagine a red fox");
    s.tg.wait_sent(TOKEN, WAIT, |m| m.kind == MessageKind::Photo)
        .await
        .expect("the fox is sent");
    let photos =
        s.tg.sent(TOKEN)
            .iter()
            .filter(|m| m.kind == MessageKind::Photo)
            .count();
    assert_eq!(photos, 1, "only the fox was made");
    bot.shutdown().await;
    s.app.shutdown().await;
}

/// An output the scheduler withholds (here: it came unclassified, from a
/// worker without the classifier, where every output must be checked):
/// the user reads why, and that nothing was charged; no photo is sent.
async fn a_withheld_output_is_told_plainly_and_not_sent(backend: Backend) {
    let s = Setup::new(backend, vec![Capability::Image], 0, |c| {
        c.moderation.outputs.unclassified =
            tessera_core::moderation::outputs::Unclassified::Withhold;
    })
    .await;
    let bot = s.start().await;
    s.tg.user_text(TOKEN, 3004, 3004, "/imagine a red fox");
    let told = s.wait_text(3004, "withheld").await;
    assert_eq!(
        told,
        "Your image was withheld: it could not be checked, and only checked outputs are delivered here. Nothing was charged."
    );
    let photos =
        s.tg.sent(TOKEN)
            .iter()
            .filter(|m| m.kind == MessageKind::Photo)
            .count();
    assert_eq!(photos, 0, "nothing withheld is sent");
    let api = s.app.frontend(Platform::Telegram, BOT).await;
    let quota = api.get_user("telegram:3004").await.unwrap();
    assert_eq!(quota.tokens_used_today, 0);
    bot.shutdown().await;
    s.app.shutdown().await;
}

/// The real classifier on what the engine painted: benign under the
/// default thresholds, so the photo arrives; withheld under a configured
/// threshold, so the user reads why and no photo is sent.
async fn the_real_classifier_decides_what_the_chat_receives(backend: Backend) {
    let (s, painting) = Setup::classifying(backend, |_| {}).await;
    let bot = s.start().await;
    s.tg.user_text(TOKEN, 3005, 3005, "/imagine a portrait");
    let photo =
        s.tg.wait_for(WAIT, |_| {
            s.tg.chat(TOKEN, 3005)
                .into_iter()
                .find(|m| m.kind == MessageKind::Photo)
        })
        .await;
    assert!(
        photo.is_some(),
        "a benign output is delivered; the bot said {:?}",
        s.bot_texts(3005)
    );
    bot.shutdown().await;
    s.app.shutdown().await;
    painting.shutdown().await;

    let (s, painting) = Setup::classifying(backend, withholding).await;
    let bot = s.start().await;
    s.tg.user_text(TOKEN, 3006, 3006, "/imagine a portrait");
    let told = s.wait_text(3006, "withheld").await;
    assert_eq!(
        told,
        "Your image was withheld: it showed content not allowed here. Nothing was charged."
    );
    let sent =
        s.tg.chat(TOKEN, 3006)
            .iter()
            .filter(|m| m.kind == MessageKind::Photo)
            .count();
    assert_eq!(sent, 0, "nothing withheld is sent");
    bot.shutdown().await;
    s.app.shutdown().await;
    painting.shutdown().await;
}

async fn a_user_reports_an_output_by_replying_or_by_its_job_id(backend: Backend) {
    let s = Setup::new(backend, vec![Capability::Image], 0, |_| {}).await;
    let bot = s.start().await;
    s.tg.user_text(TOKEN, 8008, 8008, "/imagine a fox");
    s.wait_text(8008, "Your image is ready.").await;
    let progress =
        s.tg.chat(TOKEN, 8008)
            .into_iter()
            .find(|m| {
                m.text
                    .as_deref()
                    .is_some_and(|t| t.contains("Your image is ready."))
            })
            .expect("the progress message")
            .message_id;
    // Replying to the bot's message about the output.
    s.tg.user_says(
        TOKEN,
        8008,
        8008,
        UserMessage::text("/report this is offensive").replying_to(progress),
    );
    s.wait_text(8008, "the operators will review it").await;
    let admin = s.app.client_with(&s.app.admin_token);
    let queue = admin
        .list_cases(&tessera_api::review::ListCasesQuery::default())
        .await
        .unwrap();
    assert_eq!(queue.cases.len(), 1, "{queue:?}");
    let case = admin.get_case(queue.cases[0].case_id).await.unwrap();
    assert_eq!(case.case.user_ref.to_string(), "telegram:8008");
    assert_eq!(case.reports.len(), 1);
    assert_eq!(case.reports[0].reason, "this is offensive");
    assert_eq!(case.reports[0].reporter.to_string(), "telegram:8008");
    // By its job id, from another user: the same case; a repeat is one report.
    let job_id = case.job.expect("the job").job_id;
    for _ in 0..2 {
        s.tg.user_text(TOKEN, 9009, 9009, &format!("/report {job_id} gross"));
    }
    let thanked =
        s.tg.wait_for(WAIT, |_| {
            let n = s
                .bot_texts(9009)
                .iter()
                .filter(|t| t.contains("the operators will review it"))
                .count();
            (n == 2).then_some(n)
        })
        .await;
    assert_eq!(
        thanked,
        Some(2),
        "both are answered: {:?}",
        s.bot_texts(9009)
    );
    let case = admin.get_case(queue.cases[0].case_id).await.unwrap();
    assert_eq!(
        case.reports
            .iter()
            .map(|r| r.reason.as_str())
            .collect::<Vec<_>>(),
        ["this is offensive", "gross"]
    );
    // Without a reply or a job id, the bot says how.
    s.tg.user_text(TOKEN, 9009, 9009, "/report");
    s.wait_text(9009, "Which output?").await;
    bot.shutdown().await;
    s.app.shutdown().await;
}

async fn a_restarted_bot_delivers_what_it_was_following(backend: Backend) {
    let s = Setup::new(backend, vec![Capability::Image], 2000, |_| {}).await;
    let bot = s.start().await;
    s.tg.user_text(TOKEN, 7007, 7007, "/imagine a slow painting");
    s.wait_text(7007, "Making your image").await;
    // The process goes away while the job runs, and a new one starts at
    // once: it finds the job still running and follows it to the end.
    bot.shutdown().await;
    let edits_before =
        s.tg.chat(TOKEN, 7007)
            .iter()
            .map(|m| m.edits())
            .sum::<usize>();
    let bot = s.start().await;
    let admin = &s.app.admin;
    let job = admin
        .admin_list_jobs(&tessera_api::public::ListJobsQuery {
            bot_id: Some(BOT.parse().unwrap()),
            ..Default::default()
        })
        .await
        .unwrap()
        .jobs
        .remove(0);
    assert_eq!(
        job.status,
        JobState::Running,
        "restarted while the job runs"
    );
    let photo =
        s.tg.wait_sent(TOKEN, WAIT, |m| m.kind == MessageKind::Photo)
            .await
            .expect("the photo arrives after the restart");
    assert_eq!(photo.chat_id, 7007);
    s.wait_text(7007, "Your image is ready.").await;
    let edits_after =
        s.tg.chat(TOKEN, 7007)
            .iter()
            .map(|m| m.edits())
            .sum::<usize>();
    assert!(
        edits_after > edits_before,
        "the new process edits the same progress message"
    );
    let progress_messages =
        s.tg.sent(TOKEN)
            .iter()
            .filter(|m| m.chat_id == 7007 && m.kind == MessageKind::Text)
            .count();
    assert_eq!(
        progress_messages, 1,
        "one progress message across both processes"
    );
    // Acknowledged: a further restart has nothing to send.
    tokio::time::timeout(WAIT, async {
        loop {
            let page = s
                .app
                .client_with(&s.api_key)
                .list_jobs(&tessera_api::public::ListJobsQuery {
                    bot_id: Some(BOT.parse().unwrap()),
                    undelivered: Some(true),
                    ..Default::default()
                })
                .await
                .unwrap();
            if page.jobs.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("delivery acknowledged");
    bot.shutdown().await;
    let bot = s.start().await;
    let photos = || {
        s.tg.sent(TOKEN)
            .iter()
            .filter(|m| m.kind == MessageKind::Photo)
            .count()
    };
    let again =
        s.tg.wait_until(Duration::from_secs(2), |_| photos() > 1)
            .await;
    assert!(!again, "a second restart sends nothing again");
    bot.shutdown().await;
    s.app.shutdown().await;
}

async fn a_flooding_user_is_told_once_and_others_are_served(backend: Backend) {
    let mut s = Setup::new(backend, vec![Capability::Image], 0, |_| {}).await;
    s.config.bots[0].limits = tessera_chat::LimitConfig {
        jobs_per_minute: 60,
        job_burst: 10,
        commands_per_minute: 3,
    };
    let bot = s.start().await;
    for _ in 0..8 {
        s.tg.user_text(TOKEN, 1111, 1111, "/status");
    }
    s.wait_text(1111, "Slow down").await;
    s.tg.user_text(TOKEN, 2222, 2222, "/help");
    s.wait_text(2222, "/imagine").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let texts = s.bot_texts(1111);
    let slow = texts.iter().filter(|t| t.contains("Slow down")).count();
    assert_eq!(slow, 1, "told once per wait: {texts:?}");
    assert!(
        texts.len() <= 2,
        "a burst of one command, then one notice: {texts:?}"
    );
    bot.shutdown().await;
    s.app.shutdown().await;
}

/// `/link` gets a code in the private chat, which the website's key redeems
/// to link the Telegram user to an account; in a group the code is not shown.
async fn link_gives_a_code_the_website_redeems(backend: Backend) {
    let s = Setup::new(backend, vec![Capability::Image], 0, |_| {}).await;
    let bot = s.start().await;
    let menu: Vec<String> =
        s.tg.commands(TOKEN)
            .into_iter()
            .map(|c| c.command)
            .collect();
    assert!(menu.contains(&"link".to_owned()), "{menu:?}");

    // In a group, the bot asks for a private chat and shows no code.
    let group = -4242;
    s.tg.user_text(TOKEN, group, 4242, "/link@tessera_image_bot");
    let told = s.wait_text(group, "private chat").await;
    assert!(!told.contains("link code is"), "{told}");

    s.tg.user_text(TOKEN, 4242, 4242, "/link");
    let text = s.wait_text(4242, "Your link code is").await;
    assert!(
        text.contains("Account page within 10 minutes to share one plan and quota"),
        "{text}"
    );
    let code: String = text
        .trim_start_matches("Your link code is ")
        .chars()
        .take(9)
        .collect();
    assert_eq!(code.chars().nth(4), Some('-'), "{text}");

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
    assert_eq!(linked.linked, ["telegram:4242"]);

    // The Telegram user now spends the account's quota.
    s.tg.user_text(TOKEN, 4242, 4242, "/imagine a lighthouse");
    s.wait_text(4242, "Your image is ready").await;
    let quota = web.get_user(&account.user_ref).await.unwrap();
    assert_eq!(quota.tokens_used_today, 1);
    s.tg.user_text(TOKEN, 4242, 4242, "/quota");
    s.wait_text(4242, "(1 used)").await;
    bot.shutdown().await;
    s.app.shutdown().await;
}

/// An output over the bot's `max_upload_bytes` (Telegram's 50 MB, lowered
/// here so a simulated image passes it) is not uploaded: the user gets a
/// link to the website, which serves it without an account.
async fn an_output_over_the_upload_limit_comes_as_a_link(backend: Backend) {
    let mut s = Setup::new(backend, vec![Capability::Image], 100, |_| {}).await;
    let key = s.app.key(Platform::Web, "web").await;
    let mut web_config =
        tessera_web::WebConfig::new(s.app.base_url(), tessera_chat::Secret::new(key.as_str()));
    web_config.listen = "127.0.0.1:0".parse().unwrap();
    let web = tessera_web::start(web_config).await.unwrap();
    s.config.max_upload_bytes = 100;
    s.config.site_url = Some(format!("{}/", web.base_url()));
    let bot = s.start().await;
    s.tg.user_text(TOKEN, 1001, 1001, "/imagine a lighthouse");
    let words = s.wait_text(1001, "/d/").await;
    assert!(
        words.starts_with(
            "Your image is larger than Telegram accepts; download it here (the link works for 24 hours): http://"
        ),
        "{words}"
    );
    let url = words.split_whitespace().last().unwrap();
    assert!(
        url.starts_with(&format!("{}/d/art_", web.base_url())),
        "{url}"
    );
    assert!(
        s.tg.sent(TOKEN).iter().all(|m| m.upload.is_none()),
        "nothing was uploaded"
    );
    let got = reqwest::get(url).await.unwrap();
    assert_eq!(got.status(), 200);
    assert!(is_png(&got.bytes().await.unwrap()));
    bot.shutdown().await;
    web.shutdown().await.unwrap();
    s.app.shutdown().await;
}

tessera_testkit::backend_tests!(
    imagine_ends_with_a_photo_in_the_right_chat,
    an_output_over_the_upload_limit_comes_as_a_link,
    a_voice_message_is_transcribed,
    a_text_reply_grows_in_the_progress_message,
    quota_and_rate_limits_are_told_in_plain_words,
    a_full_queue_is_told_with_its_wait_and_when_to_try_again,
    a_refused_prompt_is_told_plainly_and_costs_nothing,
    a_withheld_output_is_told_plainly_and_not_sent,
    a_user_reports_an_output_by_replying_or_by_its_job_id,
    the_real_classifier_decides_what_the_chat_receives,
    a_restarted_bot_delivers_what_it_was_following,
    a_flooding_user_is_told_once_and_others_are_served,
    link_gives_a_code_the_website_redeems,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_mode_takes_updates_only_with_the_secret() {
    let mut s = Setup::new(Backend::Sqlite, vec![Capability::Image], 0, |_| {}).await;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    s.config.webhook = Some(Webhook {
        listen,
        public_url: format!("http://{listen}"),
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::write(dir.path().join("key"), &s.api_key).unwrap();
    s.config.bots[0].token_file = Some(dir.path().join("token"));
    s.config.bots[0].api_key_file = Some(dir.path().join("key"));
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(tessera_telegram::run(s.config.clone(), stop.clone()));

    let hook =
        s.tg.wait_for(WAIT, |tg| tg.webhook(TOKEN))
            .await
            .expect("the bot registers its webhook");
    assert_eq!(hook.url, format!("http://{listen}/telegram/{BOT}"));
    let secret = hook.secret_token.expect("with a secret");
    assert!(secret.len() >= 32);

    s.tg.user_text(TOKEN, 8008, 8008, "/imagine a harbour");
    let photo =
        s.tg.wait_sent(TOKEN, WAIT, |m| m.kind == MessageKind::Photo)
            .await
            .expect("the update came by webhook and the photo went back");
    assert_eq!(photo.chat_id, 8008);
    assert_eq!(
        s.tg.calls(TOKEN, "getUpdates"),
        0,
        "no polling in webhook mode"
    );

    // Anyone else posting to the endpoint is turned away.
    let http = reqwest::Client::new();
    let update = serde_json::json!({"update_id": 1, "message": {
        "message_id": 1, "date": 0, "chat": {"id": 9, "type": "private"},
        "from": {"id": 9, "is_bot": false, "first_name": "x"}, "text": "/imagine a forgery"}});
    for header in [None, Some("wrong")] {
        let mut request = http
            .post(format!("http://{listen}/telegram/{BOT}"))
            .json(&update);
        if let Some(h) = header {
            request = request.header("X-Telegram-Bot-Api-Secret-Token", h);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_secret");
    }
    // The listener's probes: alive, and ready while the scheduler is.
    for probe in ["healthz", "readyz"] {
        let response = http
            .get(format!("http://{listen}/{probe}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{probe}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        s.tg.chat(TOKEN, 9).is_empty(),
        "the forged update did nothing"
    );

    stop.cancel();
    run.await.unwrap().unwrap();
    s.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_control_is_waited_out() {
    let s = Setup::new(Backend::Sqlite, vec![Capability::Image], 0, |_| {}).await;
    let bot = s.start().await;
    s.tg.flood(TOKEN, "sendMessage", 1, 1);
    s.tg.user_text(TOKEN, 9009, 9009, "/help");
    s.wait_text(9009, "/imagine").await;
    assert!(
        s.tg.calls(TOKEN, "sendMessage") >= 2,
        "it tried again after retry_after"
    );
    bot.shutdown().await;
    s.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_the_poll_timeout_is_not_hammered() {
    let s = Setup::new(Backend::Sqlite, vec![Capability::Image], 0, |_| {}).await;
    // Every getUpdates comes back `[]` at once, whatever its timeout.
    s.tg.ignore_poll_timeout(TOKEN, true);
    let bot = s.start().await;
    let before = s.tg.calls(TOKEN, "getUpdates");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let polls = s.tg.calls(TOKEN, "getUpdates") - before;
    // One a second (EMPTY_POLL_FLOOR), give or take the edges.
    assert!(polls <= 5, "{polls} polls in 3 s");
    assert!(polls >= 2, "it keeps polling: {polls} polls in 3 s");
    // Messages are still taken and answered.
    s.tg.user_text(TOKEN, 9109, 9109, "/help");
    s.wait_text(9109, "/imagine").await;
    bot.shutdown().await;
    s.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_lost_to_a_broken_connection_is_sent_again() {
    let s = Setup::new(Backend::Sqlite, vec![Capability::Image], 0, |_| {}).await;
    let bot = s.start().await;
    s.tg.break_connections(TOKEN, "sendMessage", 2);
    s.tg.user_text(TOKEN, 9209, 9209, "/help");
    s.wait_text(9209, "/imagine").await;
    assert_eq!(
        s.tg.calls(TOKEN, "sendMessage"),
        3,
        "two broken tries, then the one that arrived"
    );
    assert_eq!(s.bot_texts(9209).len(), 1, "{:?}", s.bot_texts(9209));
    bot.shutdown().await;
    s.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_me_with_only_the_required_fields_is_enough() {
    let s = Setup::new(Backend::Sqlite, vec![Capability::Image], 0, |_| {}).await;
    // An older local Bot API server: no `can_join_groups` and the like.
    s.tg.bare_get_me(TOKEN, true);
    let bot = s.start().await;
    // The username was read: a command addressed to the bot by name works.
    s.tg.user_text(TOKEN, 9309, 9309, "/help@tessera_image_bot");
    s.wait_text(9309, "/imagine").await;
    bot.shutdown().await;
    s.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_up_failure_says_what_the_server_answered() {
    let mut s = Setup::new(Backend::Sqlite, vec![Capability::Image], 0, |_| {}).await;
    // Something that is not a Bot API server (a proxy's error page).
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::NOT_FOUND,
            "<html><body>nginx: no such location</body></html>",
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    s.config.api_url = format!("http://{address}/");
    let err = tessera_telegram::start(&s.config, &s.config.bots[0], s.secrets())
        .await
        .err()
        .expect("the bot does not start");
    let said = format!("{err:#}");
    assert!(said.contains("nginx: no such location"), "{said}");
    assert!(said.contains("getMe"), "{said}");
    assert!(!said.contains("cannot reach"), "{said}");
    assert!(!said.contains(TOKEN), "no token in errors: {said}");

    // A Bot API error is quoted too, with the server it came from: a wrong
    // path answers `Not Found`, as a wrong token does.
    s.config.api_url = format!("{}nowhere/", s.tg.api_url());
    let err = tessera_telegram::start(&s.config, &s.config.bots[0], s.secrets())
        .await
        .err()
        .expect("the bot does not start");
    let said = format!("{err:#}");
    assert!(said.contains("Not Found"), "{said}");
    assert!(said.contains(&s.config.api_url), "{said}");
    assert!(!said.contains("cannot reach"), "{said}");
    assert!(!said.contains(TOKEN), "no token in errors: {said}");
    server.abort();
    s.app.shutdown().await;
}
