//! Website accounts, link codes and the bot users linked to them.

use serde_json::json;

use tessera_core::{JobId, Platform, Transition, UserRef};
use tessera_scheduler::store::{
    AccountRecord, CreateOutcome, NewJob, RedeemOutcome, Store, TransitionOutcome,
};
use tessera_testkit::{backend_tests, Backend, TestDb};

use crate::common::*;

/// A stand-in for a link code's hash: the store keeps whatever it is given.
fn code(n: u8) -> [u8; 32] {
    [n; 32]
}

/// The web bot the accounts here are created through.
const WEB_BOT: &str = "web-1";

/// A job of the website's bot for a `web:` user.
fn web_job(user: &str, now: i64) -> NewJob {
    NewJob {
        frontend: Platform::Web,
        bot_id: WEB_BOT.parse().unwrap(),
        reply_context: None,
        ..new_job(user, now)
    }
}

async fn account(store: &dyn Store, user: &str, email: &str) -> AccountRecord {
    store
        .create_account(
            &user.parse().unwrap(),
            WEB_BOT,
            email,
            "$argon2id$stand-in",
            5,
        )
        .await
        .unwrap()
        .expect("a new account")
}

#[track_caller]
fn linked(outcome: RedeemOutcome) -> AccountRecord {
    match outcome {
        RedeemOutcome::Linked(account) => account,
        other => panic!("expected a link, got {other:?}"),
    }
}

async fn accounts_are_found_by_email_and_user(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let ada = account(&*store, "web:ada", "ada@example.org").await;
    assert_eq!(
        (
            ada.user_ref.to_string().as_str(),
            ada.home_bot.as_str(),
            ada.email.as_str(),
            ada.created_at
        ),
        ("web:ada", WEB_BOT, "ada@example.org", 5)
    );
    assert!(ada.linked.is_empty());
    // An email is one account's.
    assert!(store
        .create_account(
            &"web:eve".parse().unwrap(),
            "demo",
            "ada@example.org",
            "h",
            6
        )
        .await
        .unwrap()
        .is_none());
    let (found, hash) = store
        .account_by_email("ada@example.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found, hash.as_str()), (ada.clone(), "$argon2id$stand-in"));
    assert!(store
        .account_by_email("eve@example.org")
        .await
        .unwrap()
        .is_none());
    let web_ada: UserRef = "web:ada".parse().unwrap();
    assert_eq!(store.get_account(&web_ada).await.unwrap(), Some(ada));
    // A web user seen only through jobs, and a user never seen, have no account.
    created(&*store, "web:anon", 1).await;
    for user in ["web:anon", "web:nobody", "telegram:1"] {
        let user: UserRef = user.parse().unwrap();
        assert_eq!(store.get_account(&user).await.unwrap(), None, "{user}");
    }
    // An account starts on the default plan; its quota names its home bot,
    // other users' none.
    let quota = store.quota(&web_ada, day(), 0).await.unwrap().unwrap();
    assert_eq!((quota.plan.id.as_str(), quota.tokens_used), ("free", 0));
    assert_eq!(quota.home_bot.as_deref(), Some(WEB_BOT));
    let anon = store
        .quota(&"web:anon".parse().unwrap(), day(), 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(anon.home_bot, None);

    // Another web bot may not create jobs for the account: nothing is
    // charged. Its own bot may; a user that is no account is anyone's.
    let demo = |user: &str| NewJob {
        bot_id: "demo".parse().unwrap(),
        ..web_job(user, 7)
    };
    assert_eq!(
        create(&*store, &demo("web:ada"), json!({"prompt": "x"})).await,
        CreateOutcome::ForeignAccount
    );
    assert_eq!(store.tokens_used(&web_ada, day()).await.unwrap(), 0);
    assert!(matches!(
        create(&*store, &web_job("web:ada", 8), json!({"prompt": "x"})).await,
        CreateOutcome::Created(_)
    ));
    assert!(matches!(
        create(&*store, &demo("web:anon"), json!({"prompt": "x"})).await,
        CreateOutcome::Created(_)
    ));
}

async fn link_codes_link_once_replace_and_expire(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let ada = account(&*store, "web:ada", "ada@example.org").await;
    let web_ada: UserRef = "web:ada".parse().unwrap();
    let tg: UserRef = "telegram:7".parse().unwrap();
    let dc: UserRef = "discord:8".parse().unwrap();

    // Asking creates the bot user on first sight, on the default plan.
    assert!(store.quota(&tg, day(), 0).await.unwrap().is_none());
    assert!(store.put_link_code(&tg, &code(1), 1_000, 0).await.unwrap());
    assert_eq!(
        store.quota(&tg, day(), 0).await.unwrap().unwrap().plan.id,
        "free"
    );
    // Another user cannot get a code equal to a live one.
    assert!(!store.put_link_code(&dc, &code(1), 1_000, 0).await.unwrap());

    // Unknown codes, and users without an account, link nothing; the code
    // survives a redeem by a user with no account.
    assert_eq!(
        store
            .redeem_link_code(&web_ada, WEB_BOT, &code(9), 10)
            .await
            .unwrap(),
        RedeemOutcome::InvalidCode
    );
    let anon: UserRef = "web:anon".parse().unwrap();
    assert_eq!(
        store
            .redeem_link_code(&anon, WEB_BOT, &code(1), 10)
            .await
            .unwrap(),
        RedeemOutcome::NoAccount
    );
    // Nor does another web bot's key, for an account that is not its own.
    assert_eq!(
        store
            .redeem_link_code(&web_ada, "demo", &code(1), 10)
            .await
            .unwrap(),
        RedeemOutcome::NoAccount
    );
    let now = linked(
        store
            .redeem_link_code(&web_ada, WEB_BOT, &code(1), 10)
            .await
            .unwrap(),
    );
    assert_eq!(now.linked, ["telegram:7"]);
    assert_eq!(now.user_id, ada.user_id);
    assert_eq!(store.get_account(&web_ada).await.unwrap(), Some(now));
    // Single use.
    assert_eq!(
        store
            .redeem_link_code(&web_ada, WEB_BOT, &code(1), 11)
            .await
            .unwrap(),
        RedeemOutcome::InvalidCode
    );

    // Asking again replaces the earlier code.
    assert!(store.put_link_code(&dc, &code(2), 1_000, 20).await.unwrap());
    assert!(store.put_link_code(&dc, &code(3), 1_000, 21).await.unwrap());
    assert_eq!(
        store
            .redeem_link_code(&web_ada, WEB_BOT, &code(2), 22)
            .await
            .unwrap(),
        RedeemOutcome::InvalidCode
    );
    // A code is live until its expiry, not at it.
    assert_eq!(
        store
            .redeem_link_code(&web_ada, WEB_BOT, &code(3), 1_000)
            .await
            .unwrap(),
        RedeemOutcome::InvalidCode
    );
    assert!(store
        .put_link_code(&dc, &code(4), 2_000, 1_500)
        .await
        .unwrap());
    let both = linked(
        store
            .redeem_link_code(&web_ada, WEB_BOT, &code(4), 1_999)
            .await
            .unwrap(),
    );
    // Sorted, whatever the order of linking.
    assert_eq!(both.linked, ["discord:8", "telegram:7"]);

    // An expired code is forgotten when anyone next asks, so its hash is free again.
    assert!(store
        .put_link_code(&tg, &code(5), 3_000, 2_000)
        .await
        .unwrap());
    assert!(store
        .put_link_code(&dc, &code(5), 9_000, 3_000)
        .await
        .unwrap());

    // Re-linking moves a bot user to the account that redeems its new code.
    account(&*store, "web:bob", "bob@example.org").await;
    let web_bob: UserRef = "web:bob".parse().unwrap();
    assert!(store
        .put_link_code(&tg, &code(6), 9_000, 3_000)
        .await
        .unwrap());
    let bob = linked(
        store
            .redeem_link_code(&web_bob, WEB_BOT, &code(6), 3_001)
            .await
            .unwrap(),
    );
    assert_eq!(
        (bob.user_ref.to_string().as_str(), bob.linked.clone()),
        ("web:bob", vec!["telegram:7".parse().unwrap()])
    );
    let ada = store.get_account(&web_ada).await.unwrap().unwrap();
    assert_eq!(ada.linked, ["discord:8"]);
    let (by_email, _) = store
        .account_by_email("ada@example.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_email, ada);
}

/// Two redeems racing for one code: one links, the other finds no code.
async fn racing_redeems_link_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    for i in 0..8 {
        account(&*store, &format!("web:a{i}"), &format!("a{i}@example.org")).await;
    }
    for round in 0..5u8 {
        let tg: UserRef = format!("telegram:{round}").parse().unwrap();
        assert!(store
            .put_link_code(&tg, &code(round), 1_000, 0)
            .await
            .unwrap());
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let account: UserRef = format!("web:a{i}").parse().unwrap();
                store
                    .redeem_link_code(&account, WEB_BOT, &code(round), 1)
                    .await
                    .unwrap()
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                RedeemOutcome::Linked(a) => winners.push(a),
                RedeemOutcome::InvalidCode => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert!(winners[0].linked.contains(&tg));
    }
}

/// A linked bot user is billed as its account: one plan, one quota, jobs
/// charged and refunded to the account's usage row, from either side.
async fn linked_users_share_the_accounts_plan_and_quota(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let ada = account(&*store, "web:ada", "ada@example.org").await;
    let web_ada: UserRef = "web:ada".parse().unwrap();
    let tg: UserRef = "telegram:7".parse().unwrap();
    // A job before linking is the bot user's own.
    let before = created(&*store, "telegram:7", 1).await;
    assert_ne!(before.user_id, ada.user_id);
    assert!(store.put_link_code(&tg, &code(1), 1_000, 2).await.unwrap());
    linked(
        store
            .redeem_link_code(&web_ada, WEB_BOT, &code(1), 3)
            .await
            .unwrap(),
    );
    // Its own day's usage stays its own; the account's is now what it sees.
    assert_eq!(
        store.tokens_charged(before.user_id, day()).await.unwrap(),
        1
    );
    assert_eq!(store.tokens_used(&tg, day()).await.unwrap(), 0);

    // Racing creates from both sides: the account's 20 free tokens, no more.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let store = store.clone();
        let user = if i % 2 == 0 { "telegram:7" } else { "web:ada" };
        tasks.push(tokio::spawn(async move {
            let new = if user.starts_with("web:") {
                web_job(user, 10 + i)
            } else {
                new_job(user, 10 + i)
            };
            create(&*store, &new, json!({"prompt": "x"})).await
        }));
    }
    let mut jobs = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            CreateOutcome::Created(job) => jobs.push(job),
            CreateOutcome::QuotaExhausted { plan, used, .. } => {
                assert_eq!((plan.id.as_str(), used), ("free", 20));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(jobs.len(), 20);
    assert!(jobs.iter().all(|j| j.user_id == ada.user_id));
    assert!(jobs.iter().any(|j| j.user_ref == "telegram:7"));
    assert!(jobs.iter().any(|j| j.user_ref == "web:ada"));
    for user in [&tg, &web_ada] {
        let q = store.quota(user, day(), 0).await.unwrap().unwrap();
        assert_eq!((q.plan.id.as_str(), q.tokens_used), ("free", 20), "{user}");
        assert_eq!(q.user_ref, user.to_string());
        assert_eq!(store.tokens_used(user, day()).await.unwrap(), 20);
    }
    assert_eq!(store.tokens_charged(ada.user_id, day()).await.unwrap(), 20);

    // A refund goes back to the account, whichever side cancels.
    let bot_job = jobs.iter().find(|j| j.user_ref == "telegram:7").unwrap();
    let out = store
        .transition(&bot_job.id, Transition::Cancel, &at(100))
        .await
        .unwrap();
    assert!(matches!(out, TransitionOutcome::Applied(ref j) if j.refunded));
    assert_eq!(store.tokens_used(&web_ada, day()).await.unwrap(), 19);
    assert_eq!(store.tokens_used(&tg, day()).await.unwrap(), 19);

    // The plan of a linked user is its account's: setting it sets the account's.
    let q = store
        .set_plan(&tg, "pro", day(), 200)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((q.plan.id.as_str(), q.tokens_used), ("pro", 19));
    let q = store.quota(&web_ada, day(), 0).await.unwrap().unwrap();
    assert_eq!(q.plan.id, "pro");
    let job = created(&*store, "telegram:7", 300).await;
    assert_eq!((job.priority.0, job.user_id), (2, ada.user_id));
    let gauges = store.gauges(0).await.unwrap();
    // One person: counted once, on the plan that applies.
    assert_eq!(gauges.users_per_plan, [("pro".to_owned(), 1)]);

    // Tokens charged to each user id equal the costs of its jobs not refunded.
    let mut ids: Vec<JobId> = jobs.iter().map(|j| j.id.clone()).collect();
    ids.extend([before.id, job.id]);
    let checked = tessera_testkit::invariants::check(&*store, &ids, None, false).await;
    assert_eq!(checked.tokens_charged, 1 + 19 + 1);
}

backend_tests!(
    accounts_are_found_by_email_and_user,
    link_codes_link_once_replace_and_expire,
    racing_redeems_link_once,
    linked_users_share_the_accounts_plan_and_quota,
);
