//! The Telegram stand-in's misbehaviour, as a test switches it on: a
//! `getUpdates` that ignores its `timeout`, connections that break before
//! the answer is complete, and a `getMe` with only the required fields.
//! Each shows to teloxide (the client Tessera's bots use) as it would from a
//! real server that behaves so.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use teloxide_core::errors::RequestError;
use teloxide_core::payloads::GetUpdatesSetters;
use teloxide_core::requests::Requester;
use teloxide_core::types::ChatId;
use teloxide_core::Bot;

use tessera_testkit::standins::telegram::TelegramStandIn;

const TOKEN: &str = "123456:AAH-standin-token";
const USER: i64 = 4242;

async fn standin() -> TelegramStandIn {
    let tg = TelegramStandIn::start().await;
    tg.add_bot(TOKEN, "tessera_test_bot");
    tg
}

fn bot(tg: &TelegramStandIn) -> Bot {
    Bot::new(TOKEN).set_api_url(tg.api_url().parse().unwrap())
}

#[tokio::test]
async fn a_poll_that_ignores_its_timeout_answers_empty_at_once() {
    let tg = standin().await;
    let b = bot(&tg);
    tg.ignore_poll_timeout(TOKEN, true);
    let started = Instant::now();
    let empty = b.get_updates().timeout(10).await.unwrap();
    assert!(empty.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at once: {:?}",
        started.elapsed()
    );
    // Queued updates still come.
    tg.user_text(TOKEN, USER, USER, "hello");
    let updates = b.get_updates().timeout(10).await.unwrap();
    assert_eq!(updates.len(), 1);

    // Switched off, the poll is held again.
    tg.ignore_poll_timeout(TOKEN, false);
    let started = Instant::now();
    let empty = b
        .get_updates()
        .offset(updates[0].id.0 as i32 + 1)
        .timeout(1)
        .await
        .unwrap();
    assert!(empty.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn broken_connections_are_transport_errors_and_do_nothing() {
    let tg = standin().await;
    let b = bot(&tg);
    tg.user_text(TOKEN, USER, USER, "open the chat");
    tg.break_connections(TOKEN, "sendMessage", 2);
    for _ in 0..2 {
        let err = b
            .send_message(ChatId(USER), "lost")
            .await
            .expect_err("the connection breaks");
        assert!(matches!(err, RequestError::Network(_)), "{err:?}");
    }
    let sent = b.send_message(ChatId(USER), "arrives").await.unwrap();
    assert_eq!(sent.text(), Some("arrives"));
    // The broken calls are recorded, unanswered, and sent nothing.
    let calls = tg.requests(TOKEN);
    let sends: Vec<_> = calls.iter().filter(|c| c.method == "sendMessage").collect();
    assert_eq!(sends.len(), 3);
    assert_eq!(sends[0].status, None);
    assert_eq!(sends[1].status, None);
    assert_eq!(sends[2].status, Some(200));
    let texts: Vec<_> = tg.sent(TOKEN).into_iter().filter_map(|m| m.text).collect();
    assert_eq!(texts, vec!["arrives".to_owned()]);
    // Other methods are untouched.
    assert!(b.get_me().await.is_ok());
}

#[tokio::test]
async fn a_bare_get_me_has_only_the_required_fields() {
    let tg = standin().await;
    tg.bare_get_me(TOKEN, true);
    let body: Value = reqwest::get(tg.method_url(TOKEN, "getMe"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body,
        json!({ "ok": true, "result": {
            "id": 123456,
            "is_bot": true,
            "first_name": "tessera_test_bot",
            "username": "tessera_test_bot",
        }})
    );
    // teloxide's `Me` wants the `can_*` fields: it cannot read this answer.
    let err = bot(&tg).get_me().await.unwrap_err();
    assert!(matches!(err, RequestError::InvalidJson { .. }), "{err:?}");

    tg.bare_get_me(TOKEN, false);
    let me = bot(&tg).get_me().await.unwrap();
    assert_eq!(me.username(), "tessera_test_bot");
}
