//! Developer keys: minted for an account of the asking web bot only, at most
//! so many live at once, found by their hash while live, listed oldest first
//! with the revoked ones, revoked once by their owner, and their last use
//! written at most once a minute.

use tessera_core::{BotId, Capability, DeveloperKeyId, UserRef};
use tessera_scheduler::store::{DeveloperKeyRecord, MintOutcome, NewDeveloperKey, Store};
use tessera_testkit::{backend_tests, Backend, TestDb};

use crate::common::*;

/// The web bot the accounts here are created through.
const WEB_BOT: &str = "web-1";

/// A stand-in for a secret's hash: the store keeps whatever it is given.
fn hash(n: u8) -> [u8; 32] {
    [n; 32]
}

fn user(text: &str) -> UserRef {
    text.parse().unwrap()
}

fn bot(text: &str) -> BotId {
    text.parse().unwrap()
}

async fn account(store: &dyn Store, user_ref: &str, home_bot: &str, email: &str) {
    store
        .create_account(&user(user_ref), home_bot, email, "$argon2id$stand-in", 1)
        .await
        .unwrap()
        .expect("a new account");
}

/// Mints a key for `(account, asking web bot)` named `name`, with the secret
/// hash `hash(n)`, at `now` under a limit of `max_live` live keys.
async fn mint(
    store: &dyn Store,
    (account, home_bot): (&str, &str),
    name: &str,
    n: u8,
    capabilities: Option<&[Capability]>,
    max_live: i64,
    now: i64,
) -> MintOutcome {
    store
        .insert_developer_key(&NewDeveloperKey {
            account: &user(account),
            home_bot: &bot(home_bot),
            name,
            capabilities,
            secret_hash: &hash(n),
            max_live,
            now,
        })
        .await
        .unwrap()
}

#[track_caller]
fn minted(outcome: MintOutcome) -> DeveloperKeyRecord {
    match outcome {
        MintOutcome::Minted(key) => key,
        other => panic!("expected a minted key, got {other:?}"),
    }
}

async fn keys_are_minted_for_an_account_of_the_asking_bot_only(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    account(&*store, "web:ada", WEB_BOT, "ada@example.org").await;
    account(&*store, "web:bob", "demo", "bob@example.org").await;

    let key = minted(mint(&*store, ("web:ada", WEB_BOT), "laptop", 1, None, 20, 5).await);
    assert!(key.id.as_str().starts_with(DeveloperKeyId::PREFIX));
    assert_eq!(
        key,
        DeveloperKeyRecord {
            id: key.id.clone(),
            account: user("web:ada"),
            home_bot: bot(WEB_BOT),
            name: "laptop".into(),
            capabilities: None,
            created_at: 5,
            last_used_at: None,
            revoked_at: None,
        }
    );
    // What was minted is what is stored.
    assert_eq!(
        store.find_developer_key(&hash(1)).await.unwrap(),
        Some(key.clone())
    );

    // A web user seen only through jobs has no account, nor has a user never
    // seen or a bot user; an account of another web bot is not this bot's.
    created(&*store, "web:anon", 2).await;
    for (n, (who, asking)) in [
        ("web:anon", WEB_BOT),
        ("web:nobody", WEB_BOT),
        ("telegram:1", WEB_BOT),
        ("web:bob", WEB_BOT),
        ("web:ada", "demo"),
    ]
    .into_iter()
    .enumerate()
    {
        let n = 10 + n as u8;
        assert_eq!(
            mint(&*store, (who, asking), "sneaky", n, None, 20, 6).await,
            MintOutcome::NoAccount,
            "{who} asked by {asking}"
        );
        assert_eq!(store.find_developer_key(&hash(n)).await.unwrap(), None);
    }
    // Nothing was added to anyone's list.
    assert_eq!(
        store
            .list_developer_keys(&user("web:ada"), &bot(WEB_BOT))
            .await
            .unwrap(),
        vec![key]
    );
    assert!(store
        .list_developer_keys(&user("web:bob"), &bot("demo"))
        .await
        .unwrap()
        .is_empty());
    // Its own bot mints for the other account.
    minted(mint(&*store, ("web:bob", "demo"), "desktop", 20, None, 20, 7).await);
}

async fn an_account_holds_at_most_its_limit_of_live_keys(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    account(&*store, "web:ada", WEB_BOT, "ada@example.org").await;
    account(&*store, "web:bob", WEB_BOT, "bob@example.org").await;
    let mut keys = Vec::new();
    for n in 1..=3 {
        keys.push(minted(
            mint(&*store, ("web:ada", WEB_BOT), "k", n, None, 3, n.into()).await,
        ));
    }
    assert_eq!(
        mint(&*store, ("web:ada", WEB_BOT), "k", 4, None, 3, 4).await,
        MintOutcome::TooMany
    );
    assert_eq!(store.find_developer_key(&hash(4)).await.unwrap(), None);
    // Another account's keys are counted apart.
    minted(mint(&*store, ("web:bob", WEB_BOT), "k", 5, None, 3, 5).await);

    // A revoked key frees its place, once.
    store
        .revoke_developer_key(&user("web:ada"), &bot(WEB_BOT), &keys[1].id, 6)
        .await
        .unwrap()
        .expect("its own key");
    minted(mint(&*store, ("web:ada", WEB_BOT), "k", 6, None, 3, 7).await);
    assert_eq!(
        mint(&*store, ("web:ada", WEB_BOT), "k", 7, None, 3, 8).await,
        MintOutcome::TooMany
    );
    let listed = store
        .list_developer_keys(&user("web:ada"), &bot(WEB_BOT))
        .await
        .unwrap();
    assert_eq!(listed.len(), 4);
    assert_eq!(listed.iter().filter(|k| k.revoked_at.is_none()).count(), 3);
}

async fn keys_are_found_listed_and_revoked_by_their_owner(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    account(&*store, "web:ada", WEB_BOT, "ada@example.org").await;
    account(&*store, "web:bob", WEB_BOT, "bob@example.org").await;
    let ada = user("web:ada");
    let web = bot(WEB_BOT);
    let first = minted(mint(&*store, ("web:ada", WEB_BOT), "first", 1, None, 20, 10).await);
    let bobs = minted(mint(&*store, ("web:bob", WEB_BOT), "bob's", 2, None, 20, 11).await);
    let second = minted(mint(&*store, ("web:ada", WEB_BOT), "second", 3, None, 20, 12).await);
    let third = minted(mint(&*store, ("web:ada", WEB_BOT), "third", 4, None, 20, 13).await);

    // Found by the hash of its secret; no other hash finds anything.
    assert_eq!(
        store.find_developer_key(&hash(3)).await.unwrap(),
        Some(second.clone())
    );
    assert_eq!(store.find_developer_key(&hash(99)).await.unwrap(), None);

    // Another account's key, or the right key asked for by another web bot,
    // is not revoked and stays live.
    assert_eq!(
        store
            .revoke_developer_key(&ada, &web, &bobs.id, 20)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .revoke_developer_key(&ada, &bot("demo"), &second.id, 20)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .revoke_developer_key(&ada, &web, &DeveloperKeyId::generate(), 20)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.find_developer_key(&hash(2)).await.unwrap(),
        Some(bobs.clone())
    );
    assert_eq!(
        store.find_developer_key(&hash(3)).await.unwrap(),
        Some(second.clone())
    );

    // Revoked: not found any more; revoking again keeps the first time.
    let revoked = store
        .revoke_developer_key(&ada, &web, &second.id, 21)
        .await
        .unwrap()
        .expect("its own key");
    assert_eq!(
        revoked,
        DeveloperKeyRecord {
            revoked_at: Some(21),
            ..second.clone()
        }
    );
    assert_eq!(store.find_developer_key(&hash(3)).await.unwrap(), None);
    let again = store
        .revoke_developer_key(&ada, &web, &second.id, 30)
        .await
        .unwrap()
        .expect("still its own key");
    assert_eq!(again.revoked_at, Some(21));

    // Listed oldest first, the revoked one too, and only the account's own.
    assert_eq!(
        store.list_developer_keys(&ada, &web).await.unwrap(),
        vec![first, revoked, third]
    );
    assert_eq!(
        store
            .list_developer_keys(&user("web:bob"), &web)
            .await
            .unwrap(),
        vec![bobs]
    );
    // Asked by another web bot, or for no account, the list is empty.
    assert!(store
        .list_developer_keys(&ada, &bot("demo"))
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .list_developer_keys(&user("web:nobody"), &web)
        .await
        .unwrap()
        .is_empty());
}

async fn a_keys_last_use_is_written_at_most_once_a_minute(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    account(&*store, "web:ada", WEB_BOT, "ada@example.org").await;
    let key = minted(mint(&*store, ("web:ada", WEB_BOT), "k", 1, None, 20, 1_000).await);
    let last_used = || async {
        store
            .find_developer_key(&hash(1))
            .await
            .unwrap()
            .unwrap()
            .last_used_at
    };

    // The first use is written.
    assert!(store.touch_developer_key(&key.id, 100_000).await.unwrap());
    assert_eq!(last_used().await, Some(100_000));
    // Uses within the minute are not.
    assert!(!store.touch_developer_key(&key.id, 100_001).await.unwrap());
    assert!(!store.touch_developer_key(&key.id, 159_999).await.unwrap());
    assert_eq!(last_used().await, Some(100_000));
    // A minute on, the next one is.
    assert!(store.touch_developer_key(&key.id, 160_000).await.unwrap());
    assert_eq!(last_used().await, Some(160_000));
    assert!(!store.touch_developer_key(&key.id, 160_500).await.unwrap());
    assert!(store.touch_developer_key(&key.id, 500_000).await.unwrap());
    assert_eq!(last_used().await, Some(500_000));
    // A key that does not exist has nothing to write.
    assert!(!store
        .touch_developer_key(&DeveloperKeyId::generate(), 900_000)
        .await
        .unwrap());
    // The list shows the last use.
    let listed = store
        .list_developer_keys(&user("web:ada"), &bot(WEB_BOT))
        .await
        .unwrap();
    assert_eq!(listed[0].last_used_at, Some(500_000));
}

async fn a_keys_capabilities_round_trip(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    account(&*store, "web:ada", WEB_BOT, "ada@example.org").await;
    let all = minted(mint(&*store, ("web:ada", WEB_BOT), "all", 1, None, 20, 1).await);
    let one = [Capability::Text];
    let text = minted(mint(&*store, ("web:ada", WEB_BOT), "text", 2, Some(&one), 20, 2).await);
    let some = [
        Capability::SpeechToText,
        Capability::Image,
        Capability::TextToSpeech,
    ];
    let three = minted(
        mint(
            &*store,
            ("web:ada", WEB_BOT),
            "three",
            3,
            Some(&some),
            20,
            3,
        )
        .await,
    );
    assert_eq!(all.capabilities, None);
    assert_eq!(text.capabilities, Some(one.to_vec()));
    assert_eq!(three.capabilities, Some(some.to_vec()));
    for (n, expected) in [(1, &all), (2, &text), (3, &three)] {
        let found = store.find_developer_key(&hash(n)).await.unwrap().unwrap();
        assert_eq!(&found, expected);
    }
    assert_eq!(
        store
            .list_developer_keys(&user("web:ada"), &bot(WEB_BOT))
            .await
            .unwrap(),
        vec![all.clone(), text.clone(), three.clone()]
    );
    // What a key allows follows its list; no list allows everything.
    assert!(all.allows(Capability::Video));
    assert!(text.allows(Capability::Text));
    assert!(!text.allows(Capability::Image));
    assert!(three.allows(Capability::Image) && !three.allows(Capability::Text));
}

backend_tests!(
    keys_are_minted_for_an_account_of_the_asking_bot_only,
    an_account_holds_at_most_its_limit_of_live_keys,
    keys_are_found_listed_and_revoked_by_their_owner,
    a_keys_last_use_is_written_at_most_once_a_minute,
    a_keys_capabilities_round_trip,
);
