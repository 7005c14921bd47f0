//! `/nsfw on|off` end to end: the real scheduler, the bot as `tessera
//! telegram` runs it, and the Bot API stand-in, whose `getChatMember` says
//! who administers a group. Only a group's admins change its setting; a
//! `require_nsfw` prompt is refused in a plain group and in private chats,
//! and made (with the decision on the job) where the admins allowed it.

use std::time::Duration;

use tessera_core::moderation::{Action, RuleConfig};
use tessera_core::Platform;
use tessera_telegram::config::{BotInstance, Secret};
use tessera_telegram::{Secrets, TelegramConfig};
use tessera_testkit::standins::telegram::{Author, TelegramStandIn};
use tessera_testkit::{Backend, TestApp};

const TOKEN: &str = "123456:AAE-image-bot-token";
const BOT: &str = "tg-image-bot-1";
const WAIT: Duration = Duration::from_secs(20);
const GROUP: i64 = -1_001_777_000_111;
const ADMIN: i64 = 11;
const MEMBER: i64 = 12;
const OWNER: i64 = 13;

/// The texts the bot has in a chat now (after edits).
fn bot_texts(tg: &TelegramStandIn, chat: i64) -> Vec<String> {
    tg.chat(TOKEN, chat)
        .into_iter()
        .filter(|m| m.author == Author::Bot)
        .filter_map(|m| m.text)
        .collect()
}

/// Waits for the `n`th bot text in `chat` (counting from 1) that contains `needle`.
async fn wait_text(tg: &TelegramStandIn, chat: i64, needle: &str, n: usize) -> String {
    let found = tg
        .wait_for(WAIT, |tg| {
            bot_texts(tg, chat)
                .into_iter()
                .filter(|t| t.contains(needle))
                .nth(n - 1)
        })
        .await;
    found.unwrap_or_else(|| {
        panic!(
            "no message #{n} containing {needle:?} in chat {chat}; the bot said {:?}",
            bot_texts(tg, chat)
        )
    })
}

async fn group_admins_allow_adult_prompts_with_nsfw_on(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.moderation.rules = vec![RuleConfig {
            name: "adult".into(),
            words: vec!["nude".into()],
            action: Action::RequireNsfw,
            ..RuleConfig::empty()
        }];
    })
    .await;
    let tg = TelegramStandIn::start().await;
    tg.add_bot(TOKEN, "tessera_image_bot");
    tg.set_chat_member_status(GROUP, ADMIN, "administrator");
    tg.set_chat_member_status(GROUP, OWNER, "creator");
    let config = TelegramConfig {
        scheduler_url: app.base_url(),
        api_url: tg.api_url(),
        poll_timeout_secs: 2,
        job_poll_ms: 100,
        min_edit_ms: 200,
        bots: vec![BotInstance {
            id: BOT.parse().unwrap(),
            capabilities: vec![tessera_core::Capability::Image],
            token_env: None,
            token_file: None,
            api_key_env: None,
            api_key_file: None,
            // A member asks for three images in a row; the rate limit is
            // not under test.
            limits: tessera_chat::limits::LimitConfig {
                job_burst: 10,
                ..Default::default()
            },
        }],
        ..Default::default()
    };
    let secrets = Secrets {
        token: Secret::new(TOKEN),
        api_key: Secret::new(app.key(Platform::Telegram, BOT).await),
    };
    let bot = tessera_telegram::start(&config, &config.bots[0], secrets)
        .await
        .expect("the bot starts");
    let api = app.frontend(Platform::Telegram, BOT).await;
    let refused = "asks for adult content, which is not allowed here";

    // The menu and /help name the command.
    let menu: Vec<String> = tg.commands(TOKEN).into_iter().map(|c| c.command).collect();
    assert!(menu.contains(&"nsfw".to_owned()), "{menu:?}");
    tg.user_text(TOKEN, MEMBER, MEMBER, "/help");
    wait_text(&tg, MEMBER, "/nsfw", 1).await;

    // A plain group: refused, nothing charged.
    tg.user_text(TOKEN, GROUP, MEMBER, "/imagine a nude statue");
    wait_text(&tg, GROUP, refused, 1).await;
    tg.user_text(TOKEN, GROUP, ADMIN, "/nsfw");
    wait_text(&tg, GROUP, "not allowed in this group", 1).await;

    // A member who is no admin cannot turn it on.
    tg.user_text(TOKEN, GROUP, MEMBER, "/nsfw on");
    wait_text(&tg, GROUP, "Only this group's admins", 1).await;
    assert!(!api.chat_nsfw(GROUP).await.unwrap().enabled);

    // An admin can; the scheduler keeps who did.
    tg.user_text(TOKEN, GROUP, ADMIN, "/nsfw on");
    wait_text(&tg, GROUP, "adult content is now allowed", 1).await;
    let setting = api.chat_nsfw(GROUP).await.unwrap();
    assert!(setting.enabled);
    assert_eq!(setting.set_by, Some("telegram:11".parse().unwrap()));
    assert!(
        tg.calls(TOKEN, "getChatMember") >= 2,
        "the bot asked Telegram who the admins are"
    );

    // Now the member's adult prompt in the group is made, and the job says so.
    tg.user_text(TOKEN, GROUP, MEMBER, "/imagine a nude statue");
    let jobs = wait_jobs(&api, "telegram:12", 1).await;
    let record = app.store().get_job(&jobs[0], None).await.unwrap().unwrap();
    assert!(record.adult_allowed);

    // A private chat stays plain, and cannot be turned on.
    tg.user_text(TOKEN, MEMBER, MEMBER, "/imagine a nude statue");
    wait_text(&tg, MEMBER, refused, 1).await;
    tg.user_text(TOKEN, MEMBER, MEMBER, "/nsfw on");
    wait_text(&tg, MEMBER, "never allowed in private chats", 1).await;

    // The group's creator turns it off: refused again.
    tg.user_text(TOKEN, GROUP, OWNER, "/nsfw off");
    wait_text(&tg, GROUP, "no longer allowed", 1).await;
    tg.user_text(TOKEN, GROUP, MEMBER, "/imagine another nude statue");
    wait_text(&tg, GROUP, refused, 2).await;
    assert_eq!(wait_jobs(&api, "telegram:12", 1).await.len(), 1);
    assert_eq!(
        api.get_user("telegram:12").await.unwrap().tokens_used_today,
        api.get_job(&jobs[0]).await.unwrap().cost_tokens,
        "only the allowed job was charged"
    );
    bot.shutdown().await;
    app.shutdown().await;
}

/// The user's jobs once there are at least `n`.
async fn wait_jobs(api: &tessera_api::Client, user: &str, n: usize) -> Vec<tessera_core::JobId> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page = api
            .list_jobs(&tessera_api::public::ListJobsQuery {
                user_ref: Some(user.parse().unwrap()),
                ..Default::default()
            })
            .await
            .unwrap();
        if page.jobs.len() >= n {
            return page.jobs.into_iter().map(|j| j.job_id).collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{user} has {} jobs, not {n}",
            page.jobs.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

tessera_testkit::backend_tests!(group_admins_allow_adult_prompts_with_nsfw_on);
