//! The NSFW context through the Discord bot: the real scheduler, the bot as
//! `tessera discord` runs it, and the Discord stand-in, whose interactions
//! carry their channel's `nsfw` flag. A `require_nsfw` prompt is refused in
//! a plain channel and in direct messages, and made (with the decision on
//! the job) in a channel the server marked age-restricted.

use std::time::Duration;

use serde_json::json;
use tessera_core::moderation::{Action, RuleConfig};
use tessera_core::Platform;
use tessera_discord::config::{BotInstance, Mode, Secret};
use tessera_discord::{DiscordConfig, Secrets};
use tessera_testkit::standins::discord::{DiscordStandIn, InteractionRecord, Invocation};
use tessera_testkit::{Backend, TestApp};

const TOKEN: &str = "MTAwMjAwMzAwNDAwNTAwNjAw.Gx1y2z.image-bot-token";
const APP: u64 = 1_002_003_004_005_006_007;
const BOT: &str = "dc-image-bot-1";
const PLAIN: u64 = 1_100_000_000_000_000_001;
const NSFW: u64 = 1_100_000_000_000_000_002;
const WAIT: Duration = Duration::from_secs(20);
const REFUSED: &str = "asks for adult content, which is not allowed here";

async fn answer(dc: &DiscordStandIn, id: u64) -> InteractionRecord {
    let done = |r: &InteractionRecord| {
        r.original_content()
            // Refused, or made: in the queue, or waiting for a worker
            // (this test runs none).
            .is_some_and(|c| c.contains(REFUSED) || c.contains("queue") || c.contains("Waiting"))
    };
    match dc.wait_interaction(id, WAIT, done).await {
        Some(r) => r,
        None => panic!("no answer; the interaction is {:#?}", dc.interaction(id)),
    }
}

fn refused(r: &InteractionRecord) -> bool {
    r.original_content().is_some_and(|c| c.contains(REFUSED))
}

async fn nsfw_channels_allow_adult_prompts_and_others_do_not(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.moderation.rules = vec![RuleConfig {
            name: "adult".into(),
            words: vec!["nude".into()],
            action: Action::RequireNsfw,
            ..RuleConfig::empty()
        }];
    })
    .await;
    let dc = DiscordStandIn::start().await;
    dc.add_bot(TOKEN, APP, "Tessera Image");
    dc.set_channel_nsfw(NSFW, true);
    let config = DiscordConfig {
        scheduler_url: app.base_url(),
        api_url: dc.base_url(),
        gateway_url: dc.gateway_url(),
        job_poll_ms: 100,
        min_edit_ms: 200,
        bots: vec![BotInstance {
            id: BOT.parse().unwrap(),
            capabilities: vec![tessera_core::Capability::Image],
            mode: Mode::Gateway,
            public_key: None,
            token_env: None,
            token_file: None,
            api_key_env: None,
            api_key_file: None,
            // One user asks four times in a row; the rate limit is not
            // under test.
            limits: tessera_chat::limits::LimitConfig {
                job_burst: 10,
                ..Default::default()
            },
        }],
        ..Default::default()
    };
    let secrets = Secrets {
        token: Secret::new(TOKEN),
        api_key: Secret::new(app.key(Platform::Discord, BOT).await),
    };
    let bot = tessera_discord::start(&config, &config.bots[0], secrets)
        .await
        .expect("the bot starts");
    assert!(dc.wait_connected(TOKEN, WAIT).await, "on the gateway");
    assert!(!dc.wait_commands(APP, WAIT).await.is_empty());
    let api = app.frontend(Platform::Discord, BOT).await;
    let nude = json!({"prompt": "a nude statue"});

    // A plain channel: refused, nothing charged.
    let plain = dc.slash(TOKEN, PLAIN, 51, "imagine", nude.clone());
    assert!(refused(&answer(&dc, plain.id).await));
    // Direct messages are never NSFW.
    let dm = dc.invoke(
        TOKEN,
        Invocation::new(NSFW, 51, "imagine")
            .options(nude.clone())
            .dm(),
    );
    assert!(refused(&answer(&dc, dm.id).await));
    assert_eq!(
        api.get_user("discord:51").await.unwrap().tokens_used_today,
        0
    );

    // The age-restricted channel: made, and the job says so.
    let allowed = dc.slash(TOKEN, NSFW, 51, "imagine", nude.clone());
    assert_eq!(allowed.payload["channel"]["nsfw"], json!(true));
    let r = answer(&dc, allowed.id).await;
    assert!(!refused(&r), "{:?}", r.original_content());
    let jobs = api
        .list_jobs(&tessera_api::public::ListJobsQuery {
            user_ref: Some("discord:51".parse().unwrap()),
            ..Default::default()
        })
        .await
        .unwrap()
        .jobs;
    assert_eq!(jobs.len(), 1);
    let record = app
        .store()
        .get_job(&jobs[0].job_id, None)
        .await
        .unwrap()
        .unwrap();
    assert!(record.adult_allowed);

    // The moderators unmark it: refused again.
    dc.set_channel_nsfw(NSFW, false);
    let again = dc.slash(TOKEN, NSFW, 51, "imagine", nude);
    assert!(refused(&answer(&dc, again.id).await));
    bot.shutdown().await;
    app.shutdown().await;
}

tessera_testkit::backend_tests!(nsfw_channels_allow_adult_prompts_and_others_do_not);
