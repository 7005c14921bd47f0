//! Prompt rules at create: a refused prompt is answered 422 with its stable
//! code and the rule's message, charges nothing, creates no job, and is
//! recorded and counted; a rewrite changes what the worker receives.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use tessera_api::public::JobView;
use tessera_api::Client;
use tessera_core::moderation::{Action, RuleConfig};
use tessera_core::{Capability, JobState, Platform, UserRef};
use tessera_testkit::{backend_tests, Backend, TestApp};

use crate::common::*;

fn rules(c: &mut tessera_scheduler::config::SchedulerConfig) {
    c.moderation.rules = vec![
        RuleConfig {
            name: "gore".into(),
            words: vec!["gore".into()],
            action: Action::Refuse,
            message: Some("Gore is not allowed on this service.".into()),
            channels: vec![Platform::Telegram],
            ..RuleConfig::empty()
        },
        RuleConfig {
            name: "adult".into(),
            words: vec!["nude".into(), "naked".into()],
            action: Action::RequireNsfw,
            ..RuleConfig::empty()
        },
        RuleConfig {
            name: "brands".into(),
            pattern: Some(r"\bacme\b".into()),
            action: Action::Rewrite,
            replacement: Some("a company".into()),
            ..RuleConfig::empty()
        },
    ];
}

/// `tessera_moderation_refusals_total{rule, channel}` as scraped.
async fn refusals_counted(app: &TestApp, rule: &str, channel: &str) -> u64 {
    let labels = [("rule", rule), ("channel", channel)];
    counter(app, "tessera_moderation_refusals_total", &labels).await
}

async fn refused_prompts_cost_nothing_and_are_recorded(backend: Backend) {
    let app = TestApp::spawn_with(backend, rules).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let dc = app.frontend(Platform::Discord, DC_BOT).await;
    let user: UserRef = "telegram:13".parse().unwrap();

    // A configured rule: its own message.
    let e = api_error(
        tg.create_job(&tg_job("telegram:13", prompt("a battle, GORE")), None)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "prompt_refused",
    );
    assert_eq!(e.message, "Gore is not allowed on this service.");
    // Adult content, not allowed in a plain context.
    let e = api_error(
        tg.create_job(&tg_job("telegram:13", prompt("nude portrait")), None)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "content_not_allowed",
    );
    assert!(e.message.contains("adult content"), "{}", e.message);
    // The built-in child-safety rule, through look-alikes and a phrase split
    // between prompt and negative prompt (last: it suspends the user).
    let e = api_error(
        tg.create_job(
            &tg_job(
                "telegram:13",
                json!({ "prompt": "a photo of a сh1ld", "negative_prompt": "clothes, N A K E D" }),
            ),
            None,
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "prompt_refused",
    );
    assert_eq!(e.message, tessera_core::moderation::builtin::MESSAGE);

    // Nothing was charged and no job exists.
    let after = tg.get_user("telegram:13").await.unwrap();
    assert_eq!(after.tokens_used_today, 0);
    assert!(list_all(&tg, by_user("telegram:13"), false)
        .await
        .is_empty());

    // Each refusal is recorded with its rule, channel and what matched.
    let recorded = app.store().refusals_of(&user, 10).await.unwrap();
    let got: Vec<_> = recorded
        .iter()
        .map(|r| (r.rule.as_str(), r.code.as_str(), r.channel))
        .collect();
    assert_eq!(
        got,
        [
            ("child_safety", "prompt_refused", Platform::Telegram),
            ("adult", "content_not_allowed", Platform::Telegram),
            ("gore", "prompt_refused", Platform::Telegram),
        ]
    );
    assert_eq!(recorded[0].excerpt, "child … naked");
    assert_eq!(recorded[0].bot_id.as_str(), TG_BOT);

    // And counted, by rule and channel.
    assert_eq!(refusals_counted(&app, "child_safety", "telegram").await, 1);
    assert_eq!(refusals_counted(&app, "gore", "telegram").await, 1);
    assert_eq!(refusals_counted(&app, "adult", "telegram").await, 1);

    // A rule limited to Telegram does not apply to Discord.
    let ok = dc
        .create_job(
            &image_job(Platform::Discord, DC_BOT, "discord:5", prompt("gore")),
            None,
        )
        .await
        .expect("the gore rule is Telegram's only");
    assert!(ok.job.cost_tokens > 0);
    assert_eq!(refusals_counted(&app, "gore", "discord").await, 0);

    // Benign prompts pass (for a user the child-safety rules did not
    // suspend).
    tg.create_job(
        &tg_job("telegram:15", prompt("a child's birthday party")),
        None,
    )
    .await
    .expect("a benign prompt is created");
    app.shutdown().await;
}

async fn completed(client: &Client, job: &tessera_core::JobId) -> JobView {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = client.get_job(job).await.unwrap();
        if job.status == JobState::Completed {
            return job;
        }
        assert!(Instant::now() < deadline, "never completed: {job:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_rewrite_reaches_the_worker(backend: Backend) {
    let app = TestApp::spawn_with(backend, rules).await;
    let _worker = app
        .worker(
            "worker-gpu-0",
            vec![tessera_testkit::sim(Capability::Image, &["sdxl-1.0"], 0)],
        )
        .await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let created = tg
        .create_job(&tg_job("telegram:14", prompt("logo of ACME, flat")), None)
        .await
        .unwrap();
    let job = completed(&tg, &created.job.job_id).await;
    assert_eq!(job.params["prompt"], "logo of a company, flat");
    // The sim engine writes the prompt it ran into its PNG's Comment chunk.
    let png = tg.download(&job.artifacts[0].url).await.unwrap();
    let has = |needle: &str| png.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(has("Comment\0logo of a company, flat"));
    assert!(!has("ACME"));
    assert_eq!(refusals_counted(&app, "brands", "telegram").await, 0);
    app.shutdown().await;
}

backend_tests!(
    refused_prompts_cost_nothing_and_are_recorded,
    a_rewrite_reaches_the_worker
);
