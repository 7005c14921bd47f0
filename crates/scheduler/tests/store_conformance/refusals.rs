//! Refused prompts: recorded as given, read back per user, newest first,
//! never another user's.

use tessera_core::{Platform, UserRef};
use tessera_scheduler::store::NewRefusal;
use tessera_testkit::{backend_tests, Backend, TestDb};

fn refusal(user: &str, rule: &str, now: i64) -> NewRefusal {
    NewRefusal {
        user_ref: user.parse().unwrap(),
        bot_id: "tg-image-bot-1".parse().unwrap(),
        channel: Platform::Telegram,
        rule: rule.into(),
        code: "prompt_refused".into(),
        excerpt: "child … naked".into(),
        now,
    }
}

async fn refusals_are_recorded_and_read_back_per_user(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let ada: UserRef = "telegram:1".parse().unwrap();
    assert!(store.refusals_of(&ada, 10).await.unwrap().is_empty());
    let first = store
        .record_refusal(&refusal("telegram:1", "child_safety", 10))
        .await
        .unwrap();
    let second = store
        .record_refusal(&refusal("telegram:1", "gore", 20))
        .await
        .unwrap();
    assert_ne!(first, second);
    store
        .record_refusal(&NewRefusal {
            channel: Platform::Discord,
            bot_id: "dc-image-bot-1".parse().unwrap(),
            code: "content_not_allowed".into(),
            ..refusal("discord:2", "adult", 15)
        })
        .await
        .unwrap();

    let got = store.refusals_of(&ada, 10).await.unwrap();
    assert_eq!(
        got.iter()
            .map(|r| (r.rule.as_str(), r.created_at))
            .collect::<Vec<_>>(),
        [("gore", 20), ("child_safety", 10)],
        "newest first, only this user's"
    );
    let r = &got[1];
    assert_eq!(r.id, first);
    assert_eq!(r.user_ref, ada);
    assert_eq!(r.bot_id.as_str(), "tg-image-bot-1");
    assert_eq!(r.channel, Platform::Telegram);
    assert_eq!(r.code, "prompt_refused");
    assert_eq!(r.excerpt, "child … naked");
    assert_eq!(store.refusals_of(&ada, 1).await.unwrap().len(), 1);

    let bob: UserRef = "discord:2".parse().unwrap();
    let got = store.refusals_of(&bob, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].channel, got[0].code.as_str()),
        (Platform::Discord, "content_not_allowed")
    );
}

backend_tests!(refusals_are_recorded_and_read_back_per_user);
