//! The bots as the real `tessera` processes: killed mid-job and started
//! again, stopped with SIGTERM, and all twelve of the seed's instances in one
//! process.

mod common;

use std::time::Duration;

use serde_json::json;
use tessera_core::JobState;
use tessera_testkit::standins::telegram::MessageKind;
use tessera_testkit::Backend;

use common::farm::{terminate, Farm};

const WAIT: Duration = Duration::from_secs(30);

fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x89PNG\r\n\x1a\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_telegram_process_delivers_after_it_is_started_again() {
    let farm = Farm::new(Backend::Postgres, 1, 2500).await;
    let bot = farm.bot("tg-image-bot-1").clone();
    let config = farm.config("telegram.toml", &[&bot]);
    let config = config.to_str().unwrap();
    let mut first = farm.spawn("first", &["telegram", "--config", config]);

    // Its token and key never reach its log.
    farm.tg.wait_calls(&bot.token, "getUpdates", 1, WAIT).await;
    farm.tg
        .user_text(&bot.token, 501, 501, "/imagine a lighthouse at dawn");
    let running = farm
        .tg
        .wait_for(WAIT, |tg| {
            tg.chat(&bot.token, 501).into_iter().find(|m| {
                m.text
                    .as_deref()
                    .is_some_and(|t| t.starts_with("Making your image"))
            })
        })
        .await;
    assert!(
        running.is_some(),
        "the job runs; log:\n{}",
        farm.log("first")
    );
    // SIGKILL: nothing is flushed, nothing is said goodbye.
    first.kill().await.unwrap();

    let admin = &farm.app.admin;
    tokio::time::timeout(WAIT, async {
        loop {
            let page = admin
                .admin_list_jobs(&tessera_api::public::ListJobsQuery {
                    bot_id: Some((bot.id.clone()).parse().unwrap()),
                    ..Default::default()
                })
                .await
                .unwrap();
            if page.jobs.iter().any(|j| j.status == JobState::Completed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the job completes while no bot runs");

    let mut second = farm.spawn("second", &["telegram", "--config", config]);
    let photo = farm
        .tg
        .wait_sent(&bot.token, WAIT, |m| m.kind == MessageKind::Photo)
        .await
        .unwrap_or_else(|| panic!("no photo after the restart; log:\n{}", farm.log("second")));
    assert_eq!(photo.chat_id, 501);
    assert!(is_png(&photo.upload.unwrap().bytes));
    assert!(
        farm.tg
            .wait_until(WAIT, |tg| tg
                .chat(&bot.token, 501)
                .iter()
                .any(|m| m.text.as_deref() == Some("Your image is ready.")))
            .await
    );
    assert!(farm
        .log("second")
        .contains("resumed jobs left by the previous process"));

    terminate(&second);
    let status = tokio::time::timeout(WAIT, second.wait())
        .await
        .expect("it stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "a clean exit: {status}");
    for log in ["first", "second"] {
        let text = farm.log(log);
        assert!(!text.contains(&bot.token), "the token is in the {log} log");
        assert!(
            !text.contains(&farm.keys[&bot.id]),
            "the API key is in the {log} log"
        );
    }
    farm.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_twelve_seed_bots_serve_from_one_process() {
    let farm = Farm::new(Backend::Sqlite, 2, 0).await;
    let telegram: Vec<_> = farm
        .bots
        .iter()
        .filter(|b| b.id.starts_with("tg-"))
        .collect();
    let discord: Vec<_> = farm
        .bots
        .iter()
        .filter(|b| b.id.starts_with("dc-"))
        .collect();
    let tg_config = farm.config("telegram.toml", &telegram);
    let dc_config = farm.config("discord.toml", &discord);
    // Debug logs, and a rate limit on the first follow-up so the HTTP
    // library's retry path logs too: no secret may appear in them.
    farm.dc.rate_limit("POST /api/v10/webhooks", 1, 0.2);
    let mut bots = farm.spawn_logging(
        "debug",
        "bots",
        &[
            "bots",
            "--telegram",
            tg_config.to_str().unwrap(),
            "--discord",
            dc_config.to_str().unwrap(),
        ],
    );
    for b in &discord {
        assert!(
            farm.dc.wait_connected(&b.token, WAIT).await,
            "{} on the gateway; log:\n{}",
            b.id,
            farm.log("bots")
        );
        assert!(!farm
            .dc
            .wait_commands(b.application_id, WAIT)
            .await
            .is_empty());
    }
    for b in &telegram {
        assert!(farm.tg.wait_calls(&b.token, "getUpdates", 1, WAIT).await);
    }
    // One user of each bot asks for its kind of output.
    let mut interactions = Vec::new();
    for (i, b) in telegram.iter().enumerate() {
        let chat = 600 + i as i64;
        farm.tg.user_text(
            &b.token,
            chat,
            chat,
            &format!("/{} a test pattern", b.command()),
        );
    }
    for (i, b) in discord.iter().enumerate() {
        interactions.push(farm.dc.slash(
            &b.token,
            7_000 + i as u64,
            700 + i as u64,
            b.command(),
            json!({"prompt": "a test pattern"}),
        ));
    }
    for (i, b) in telegram.iter().enumerate() {
        let kind = if b.command() == "video" {
            MessageKind::Document
        } else {
            MessageKind::Photo
        };
        let sent = farm.tg.wait_sent(&b.token, WAIT, |m| m.kind == kind).await;
        let sent = sent.unwrap_or_else(|| panic!("{} sent no {kind:?}", b.id));
        assert_eq!(sent.chat_id, 600 + i as i64);
    }
    for (sent, b) in interactions.iter().zip(&discord) {
        let done = farm
            .dc
            .wait_interaction(sent.id, WAIT, |r| {
                r.followups.iter().any(|m| !m.attachments.is_empty())
            })
            .await;
        assert!(done.is_some(), "{} delivered nothing", b.id);
    }
    terminate(&bots);
    let status = tokio::time::timeout(WAIT, bots.wait())
        .await
        .expect("it stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "a clean exit: {status}");
    let log = farm.log("bots");
    assert!(log.contains("DEBUG"), "the log is at debug level");
    for b in &farm.bots {
        assert!(!log.contains(&b.token), "{}'s token is in the log", b.id);
        assert!(
            !log.contains(&farm.keys[&b.id]),
            "{}'s API key is in the log",
            b.id
        );
    }
    for i in &interactions {
        assert!(
            !log.contains(&i.token),
            "an interaction token is in the log"
        );
    }
    farm.app.shutdown().await;
}
