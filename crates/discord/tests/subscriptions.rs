//! Discord premium app subscriptions end to end: the real scheduler and its
//! ledger, a bot instance as `tessera discord` runs it, and the Discord
//! stand-in playing Discord's store (SKUs, entitlements, their gateway
//! dispatches and the `entitlements` every interaction carries).

use std::time::Duration;

use serde_json::{json, Value};
use tessera_api::admin::ListPaymentsQuery;
use tessera_api::entitlements::{
    DiscordEntitlement, EntitlementOutcome, EntitlementSource, EntitlementsRequest,
};
use tessera_api::Client;
use tessera_core::{Capability, PaymentProvider, Platform, UserRef};
use tessera_discord::config::{BotInstance, Mode, Secret};
use tessera_discord::{DiscordConfig, Secrets};
use tessera_testkit::standins::discord::SKU_SUBSCRIPTION;
use tessera_testkit::standins::discord::{DiscordStandIn, InteractionRecord};
use tessera_testkit::{Backend, TestApp};

const TOKEN: &str = "MTAwMjAwMzAwNDAwNTAwNjAw.Gx1y2z.image-bot-token";
const APP: u64 = 1_002_003_004_005_006_007;
const BOT: &str = "dc-image-bot-1";
const CHANNEL: u64 = 1_100_000_000_000_000_001;
const WAIT: Duration = Duration::from_secs(20);

struct Setup {
    app: TestApp,
    dc: DiscordStandIn,
    config: DiscordConfig,
    api_key: String,
    /// The SKU `[payments.discord.skus]` sells STARTER with.
    starter: u64,
    /// A SKU of the application that buys no plan.
    unmapped: u64,
    /// The bot's own key, to read quotas and relay as the bot does.
    api: Client,
}

impl Setup {
    async fn new(backend: Backend) -> Setup {
        let dc = DiscordStandIn::start().await;
        dc.add_bot(TOKEN, APP, "Tessera Image");
        let starter = dc.add_sku(APP, SKU_SUBSCRIPTION, "Starter");
        let unmapped = dc.add_sku(APP, SKU_SUBSCRIPTION, "Something else");
        let app = TestApp::spawn_with(backend, |c| {
            c.payments
                .discord
                .skus
                .insert("starter".into(), starter.to_string());
        })
        .await;
        let api_key = app.key(Platform::Discord, BOT).await;
        let api = app.client_with(&api_key);
        let config = DiscordConfig {
            scheduler_url: app.base_url(),
            api_url: dc.base_url(),
            gateway_url: dc.gateway_url(),
            job_poll_ms: 100,
            min_edit_ms: 200,
            bots: vec![BotInstance {
                id: BOT.parse().unwrap(),
                capabilities: vec![Capability::Image],
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
            dc,
            config,
            api_key,
            starter,
            unmapped,
            api,
        }
    }

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

    /// Runs a slash command and waits for its original response to say `needle`.
    async fn slash(&self, user: u64, command: &str, needle: &str) -> InteractionRecord {
        let sent = self.dc.slash(TOKEN, CHANNEL, user, command, json!({}));
        match self
            .dc
            .wait_interaction(sent.id, WAIT, |r| {
                r.original_content().is_some_and(|c| c.contains(needle))
            })
            .await
        {
            Some(r) => r,
            None => panic!(
                "/{command} never said {needle:?}: {:#?}",
                self.dc.interaction(sent.id)
            ),
        }
    }

    async fn plan_of(&self, user: &str) -> String {
        self.api.get_user(user).await.unwrap().plan.id
    }

    /// Waits until the user's plan is `plan`.
    async fn wait_plan(&self, user: &str, plan: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = self.plan_of(user).await;
            if now == plan {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{user} stayed on {now}, not {plan}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn discord_events(&self) -> Vec<tessera_api::admin::PaymentEventView> {
        self.app
            .admin
            .list_payments(&ListPaymentsQuery {
                provider: Some(PaymentProvider::Discord),
                limit: Some(100),
                ..Default::default()
            })
            .await
            .unwrap()
            .events
    }
}

fn id_of(entitlement: &Value) -> u64 {
    entitlement["id"].as_str().unwrap().parse().unwrap()
}

fn unix_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap()
}

async fn a_subscription_raises_the_plan_at_once_and_ends_with_discord(backend: Backend) {
    let s = Setup::new(backend).await;
    let bot = s.start().await;
    s.slash(42, "quota", "Plan: FREE").await;

    // Discord's store: the user buys STARTER; ENTITLEMENT_CREATE follows.
    let bought = s.dc.grant_entitlement(APP, 42, s.starter);
    s.wait_plan("discord:42", "starter").await;
    let quota = s.slash(42, "quota", "Plan: STARTER").await;
    assert!(
        quota
            .original_content()
            .unwrap()
            .contains("120 tokens left"),
        "{quota:#?}"
    );
    // Another interaction carrying the entitlement keeps it, and records
    // nothing new the same day.
    let before = s.discord_events().await.len();
    s.slash(42, "quota", "Plan: STARTER").await;
    assert_eq!(s.discord_events().await.len(), before);

    // A SKU no plan maps, and another user's purchase, change nothing here.
    s.dc.grant_entitlement(APP, 42, s.unmapped);
    s.dc.grant_entitlement(APP, 43, s.unmapped);
    s.slash(43, "quota", "Plan: FREE").await;
    assert_eq!(s.plan_of("discord:42").await, "starter");

    // The subscription ends (ENTITLEMENT_UPDATE with ends_at): back on FREE.
    s.dc.end_entitlement(id_of(&bought), unix_ms() - 1000)
        .expect("a known entitlement");
    s.wait_plan("discord:42", "free").await;
    s.slash(42, "quota", "Plan: FREE").await;
    let kinds: Vec<String> = s
        .discord_events()
        .await
        .iter()
        .map(|e| e.kind.to_string())
        .collect();
    assert_eq!(kinds, ["cancel", "purchase"], "newest first");
    bot.shutdown().await;
    s.app.shutdown().await;
}

async fn an_interaction_brings_a_purchase_the_gateway_missed(backend: Backend) {
    let s = Setup::new(backend).await;
    // Bought while no bot was on the gateway: only interactions show it.
    s.dc.grant_entitlement(APP, 44, s.starter);
    let bot = s.start().await;
    assert_eq!(s.plan_of("discord:44").await, "free");
    s.slash(44, "quota", "Plan: STARTER").await;
    bot.shutdown().await;
    s.app.shutdown().await;
}

async fn a_refund_ends_the_plan_a_linked_account_shares(backend: Backend) {
    let s = Setup::new(backend).await;
    let bot = s.start().await;
    let linked = s.slash(45, "link", "Your link code is").await;
    let code: String = linked
        .original_content()
        .unwrap()
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
    web.redeem_link_code(&account.user_ref, &code)
        .await
        .unwrap();

    let bought = s.dc.grant_entitlement(APP, 45, s.starter);
    s.wait_plan("discord:45", "starter").await;
    let on_web = web.get_user(&account.user_ref).await.unwrap();
    assert_eq!(on_web.plan.id, "starter", "the account shares the plan");

    // Discord refunds it: ENTITLEMENT_DELETE.
    s.dc.delete_entitlement(id_of(&bought)).unwrap();
    s.wait_plan("discord:45", "free").await;
    let on_web = web.get_user(&account.user_ref).await.unwrap();
    assert_eq!(on_web.plan.id, "free");
    let events = s.discord_events().await;
    assert_eq!(events[0].kind.to_string(), "refund");
    assert_eq!(events[0].billing_user.as_ref(), Some(&account.user_ref));
    bot.shutdown().await;
    s.app.shutdown().await;
}

async fn redelivered_and_shuffled_entitlements_change_nothing_beyond_the_first(backend: Backend) {
    let s = Setup::new(backend).await;
    let user: UserRef = "discord:46".parse().unwrap();
    let e = s.dc.grant_entitlement(APP, 46, s.starter);
    let created: DiscordEntitlement = serde_json::from_value(e.clone()).unwrap();
    let ended: DiscordEntitlement =
        serde_json::from_value(s.dc.end_entitlement(id_of(&e), unix_ms() - 1000).unwrap()).unwrap();
    let deleted: DiscordEntitlement =
        serde_json::from_value(s.dc.delete_entitlement(id_of(&e)).unwrap()).unwrap();
    let all = [
        (EntitlementSource::Created, created.clone()),
        (EntitlementSource::Interaction, created),
        (EntitlementSource::Updated, ended),
        (EntitlementSource::Deleted, deleted),
    ];
    // Each five times, in an order that puts ends before the purchase.
    let order = [3, 2, 0, 1, 3, 0, 2, 1, 1, 0, 2, 3, 2, 3, 1, 0, 0, 1, 2, 3];
    let mut recorded = 0;
    for i in order {
        let (source, entitlement) = &all[i];
        let outcome = s
            .api
            .relay_entitlements(&EntitlementsRequest {
                user_ref: user.clone(),
                source: *source,
                entitlements: vec![entitlement.clone()],
            })
            .await
            .unwrap();
        assert_eq!(outcome.plan.id, "free", "ended before anything applied");
        recorded += outcome
            .entitlements
            .iter()
            .filter(|r| r.outcome == EntitlementOutcome::Recorded)
            .count();
    }
    // Deleted, ended, live today: three events, each once.
    assert_eq!(recorded, 3);
    assert_eq!(s.discord_events().await.len(), 3);
    assert_eq!(s.plan_of("discord:46").await, "free");

    // Another user's entitlement relayed for this user is ignored.
    let theirs = s.dc.grant_entitlement(APP, 47, s.starter);
    let outcome = s
        .api
        .relay_entitlements(&EntitlementsRequest {
            user_ref: user.clone(),
            source: EntitlementSource::Interaction,
            entitlements: vec![serde_json::from_value(theirs).unwrap()],
        })
        .await
        .unwrap();
    assert_eq!(outcome.entitlements[0].outcome, EntitlementOutcome::Ignored);
    assert_eq!(s.discord_events().await.len(), 3);
    s.app.shutdown().await;
}

async fn subscribe_offers_the_premium_button_of_the_configured_sku(backend: Backend) {
    let s = Setup::new(backend).await;
    let bot = s.start().await;
    let names = s.dc.command_names(APP);
    assert!(names.contains(&"subscribe".to_owned()), "{names:?}");
    let answer = s.slash(48, "subscribe", "STARTER: 120 tokens a day").await;
    let original = answer.original.unwrap();
    let buttons: Vec<&Value> = original
        .components
        .iter()
        .flat_map(|row| row["components"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(buttons.len(), 1, "{original:#?}");
    assert_eq!(buttons[0]["style"], 6, "a premium button");
    assert_eq!(buttons[0]["sku_id"], s.starter.to_string());
    assert!(answer.rejected.is_empty(), "{:?}", answer.rejected);
    bot.shutdown().await;
    s.app.shutdown().await;
}

tessera_testkit::backend_tests!(
    a_subscription_raises_the_plan_at_once_and_ends_with_discord,
    an_interaction_brings_a_purchase_the_gateway_missed,
    a_refund_ends_the_plan_a_linked_account_shares,
    redelivered_and_shuffled_entitlements_change_nothing_beyond_the_first,
    subscribe_offers_the_premium_button_of_the_configured_sku,
);
