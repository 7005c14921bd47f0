//! Telegram Stars end to end: the real scheduler on both databases, the bot
//! instance as `tessera telegram` runs it, and the Bot API stand-in playing
//! Telegram's payments (invoices, pre-checkout queries with their 10 s
//! deadline, successful payments, renewals and refunds).

use std::time::Duration;

use tessera_api::public::Credentials;
use tessera_api::stars::{StarsInvoiceRequest, StarsPayment, StarsPreCheckout};
use tessera_api::Client;
use tessera_core::{ErrorCode, PaymentProvider, Platform, UserRef};
use tessera_scheduler::SchedulerConfig;
use tessera_telegram::config::{BotInstance, Secret};
use tessera_telegram::{Secrets, TelegramConfig};
use tessera_testkit::standins::telegram::{
    Checkout, SentInvoice, StarPayment, TelegramStandIn, PRE_CHECKOUT_DEADLINE,
};
use tessera_testkit::{Backend, TestApp};

const TOKEN: &str = "123456:AAE-stars-bot-token";
const BOT: &str = "tg-stars-bot-1";
const WAIT: Duration = Duration::from_secs(20);

fn sell(config: &mut SchedulerConfig) {
    let stars = &mut config.payments.telegram.stars;
    stars.insert("starter".into(), 250);
    stars.insert("pro".into(), 600);
}

struct Setup {
    app: TestApp,
    tg: TelegramStandIn,
    config: TelegramConfig,
    api_key: String,
    /// The bot's own key, for relays a test makes by hand.
    api: Client,
}

impl Setup {
    async fn new(backend: Backend, tweak: impl FnOnce(&mut SchedulerConfig)) -> Setup {
        let app = TestApp::spawn_with(backend, |c| {
            sell(c);
            tweak(c);
        })
        .await;
        let tg = TelegramStandIn::start().await;
        tg.add_bot(TOKEN, "tessera_stars_bot");
        let api_key = app.key(Platform::Telegram, BOT).await;
        let api = app.client_with(&api_key);
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
                limits: Default::default(),
            }],
            ..Default::default()
        };
        Setup {
            app,
            tg,
            config,
            api_key,
            api,
        }
    }

    async fn start(&self) -> tessera_telegram::Instance {
        let secrets = Secrets {
            token: Secret::new(TOKEN),
            api_key: Secret::new(self.api_key.clone()),
        };
        tessera_telegram::start(&self.config, &self.config.bots[0], secrets)
            .await
            .expect("the bot starts")
    }

    fn bot_texts(&self, chat: i64) -> Vec<String> {
        self.tg
            .chat(TOKEN, chat)
            .into_iter()
            .filter(|m| m.author == tessera_testkit::standins::telegram::Author::Bot)
            .filter_map(|m| m.text)
            .collect()
    }

    /// Waits for the `nth` (from 1) bot text in `chat` containing `needle`.
    async fn wait_nth(&self, chat: i64, needle: &str, nth: usize) -> String {
        let found = self
            .tg
            .wait_for(WAIT, |_| {
                self.bot_texts(chat)
                    .into_iter()
                    .filter(|t| t.contains(needle))
                    .nth(nth - 1)
            })
            .await;
        found.unwrap_or_else(|| {
            panic!(
                "no message {nth} containing {needle:?} in chat {chat}; the bot said {:?}",
                self.bot_texts(chat)
            )
        })
    }

    async fn wait_text(&self, chat: i64, needle: &str) -> String {
        self.wait_nth(chat, needle, 1).await
    }

    /// Waits for the `n`th invoice the bot made, and answers it.
    async fn invoice(&self, n: usize) -> SentInvoice {
        self.tg
            .wait_for(WAIT, |tg| tg.invoices(TOKEN).get(n - 1).cloned())
            .await
            .unwrap_or_else(|| panic!("no invoice {n}: {:?}", self.tg.invoices(TOKEN)))
    }

    async fn plan_of(&self, user: &str) -> String {
        self.api.get_user(user).await.unwrap().plan.id
    }

    async fn ledger_len(&self) -> usize {
        self.app
            .admin
            .list_payments(&Default::default())
            .await
            .unwrap()
            .events
            .len()
    }

    /// The end of the user's Telegram grant, ms.
    async fn paid_until(&self, user: &str) -> i64 {
        let user: UserRef = user.parse().unwrap();
        let grants = self.app.store().plan_grants(&user).await.unwrap();
        let grant = grants
            .iter()
            .find(|g| g.provider == PaymentProvider::Telegram)
            .expect("a Telegram grant");
        grant.paid_until
    }
}

fn paid(checkout: Checkout) -> StarPayment {
    match checkout {
        Checkout::Paid(p) => p,
        other => panic!("the payment did not go through: {other:?}"),
    }
}

/// What the bot relayed for `payment`, as a test relays it again.
fn relay_of(user: &str, p: &StarPayment) -> StarsPayment {
    StarsPayment {
        user_ref: user.parse().unwrap(),
        payload: p.invoice_payload.clone(),
        currency: p.currency.clone(),
        total_amount: p.total_amount as u32,
        telegram_payment_charge_id: p.telegram_payment_charge_id.clone(),
        subscription_expiration_date: p.subscription_expiration_date,
        is_recurring: p.is_recurring,
        is_first_recurring: p.is_first_recurring,
        date: chrono::Utc::now().timestamp(),
    }
}

async fn subscribe_renew_and_refund(backend: Backend) {
    let s = Setup::new(backend, |_| {}).await;
    let bot = s.start().await;
    let menu: Vec<String> =
        s.tg.commands(TOKEN)
            .into_iter()
            .map(|c| c.command)
            .collect();
    assert!(menu.contains(&"subscribe".to_owned()), "{menu:?}");
    assert!(menu.contains(&"refund".to_owned()), "{menu:?}");
    s.tg.user_text(TOKEN, 7001, 7001, "/help");
    s.wait_text(7001, "/subscribe").await;

    // The list: both plans, cheapest first, each a subscription link.
    s.tg.user_text(TOKEN, 7001, 7001, "/subscribe");
    let list = s
        .wait_text(7001, "Plans you can buy with Telegram Stars")
        .await;
    assert!(
        list.contains("STARTER: 250 ⭐") && list.contains("PRO: 600 ⭐"),
        "{list}"
    );
    let first = s.invoice(2).await;
    assert_eq!(first.currency, "XTR");
    assert_eq!(first.subscription_period, Some(2_592_000));
    assert!(first.link.is_some());

    s.tg.user_text(TOKEN, 7001, 7001, "/subscribe starter");
    let invoice = s.invoice(3).await;
    assert_eq!(invoice.amount, 250);
    assert!(invoice.title.contains("STARTER"), "{invoice:?}");
    assert_eq!(s.plan_of("telegram:7001").await, "free");

    // Another user cannot pay an invoice made for the first.
    let refused =
        s.tg.user_pays(TOKEN, 7002, &invoice, PRE_CHECKOUT_DEADLINE)
            .await;
    assert!(
        matches!(&refused, Checkout::Declined(m) if m.contains("not made by this service for you")),
        "{refused:?}"
    );

    let payment = paid(
        s.tg.user_pays(TOKEN, 7001, &invoice, PRE_CHECKOUT_DEADLINE)
            .await,
    );
    let told = s.wait_text(7001, "Payment received").await;
    assert!(told.contains("You're on STARTER"), "{told}");
    let quota = s.api.get_user("telegram:7001").await.unwrap();
    assert_eq!(quota.plan.id, "starter");
    assert_eq!(quota.tokens_left_today, quota.plan.daily_tokens);
    let first_end = s.paid_until("telegram:7001").await;
    assert_eq!(
        first_end,
        payment.subscription_expiration_date.unwrap() * 1000
    );

    // A relay repeated (Telegram redelivering the update) changes nothing.
    let ledger = s.ledger_len().await;
    let again = s
        .api
        .stars_payment(&relay_of("telegram:7001", &payment))
        .await
        .unwrap();
    assert!(again.already_recorded);
    assert_eq!(s.ledger_len().await, ledger);

    // Telegram charges the next month: the period moves on.
    let renewal =
        s.tg.renew(TOKEN, &payment.telegram_payment_charge_id)
            .unwrap();
    s.wait_text(7001, "Your subscription renewed").await;
    let renewed_end = s.paid_until("telegram:7001").await;
    assert_eq!(
        renewed_end,
        renewal.subscription_expiration_date.unwrap() * 1000
    );
    assert!(renewed_end > first_end);
    assert_eq!(s.plan_of("telegram:7001").await, "starter");

    // /refund: the latest charge goes back, and the plan ends.
    s.tg.user_text(TOKEN, 7001, 7001, "/refund");
    let refunded = s.wait_text(7001, "Refunded 250 ⭐").await;
    assert!(refunded.contains("You're on FREE"), "{refunded}");
    let refunds = s.tg.star_refunds(TOKEN);
    assert_eq!(refunds.len(), 1);
    assert_eq!(
        refunds[0].telegram_payment_charge_id,
        renewal.telegram_payment_charge_id
    );
    assert_eq!(s.plan_of("telegram:7001").await, "free");
    // Nothing is left to refund, and the subscription does not renew.
    s.tg.user_text(TOKEN, 7001, 7001, "/refund");
    s.wait_text(7001, "no payment to refund").await;
    assert_eq!(s.tg.star_refunds(TOKEN).len(), 1);
    assert!(s
        .tg
        .renew(TOKEN, &payment.telegram_payment_charge_id)
        .is_none());
    bot.shutdown().await;
    s.app.shutdown().await;
}

async fn a_forged_payload_changes_nothing(backend: Backend) {
    let s = Setup::new(backend, |_| {}).await;
    let bot = s.start().await;
    s.tg.user_text(TOKEN, 7101, 7101, "/subscribe starter");
    let invoice = s.invoice(1).await;
    bot.shutdown().await;

    // The payload made cheaper, or moved to PRO: refused at the
    // pre-checkout and at the payment alike.
    let user: UserRef = "telegram:7101".parse().unwrap();
    let cheaper = invoice.payload.replacen(".250.", ".1.", 1);
    let pro = invoice.payload.replacen("starter.", "pro.", 1);
    for payload in [cheaper, pro] {
        let e = s
            .api
            .stars_pre_checkout(&StarsPreCheckout {
                user_ref: user.clone(),
                payload: payload.clone(),
                currency: "XTR".into(),
                total_amount: 1,
            })
            .await
            .unwrap_err();
        assert_eq!(
            e.error_code(),
            Some(ErrorCode::PaymentPayloadInvalid),
            "{e}"
        );
        let e = s
            .api
            .stars_payment(&StarsPayment {
                user_ref: user.clone(),
                payload,
                currency: "XTR".into(),
                total_amount: 1,
                telegram_payment_charge_id: "stxforged".into(),
                subscription_expiration_date: None,
                is_recurring: false,
                is_first_recurring: false,
                date: chrono::Utc::now().timestamp(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            e.error_code(),
            Some(ErrorCode::PaymentPayloadInvalid),
            "{e}"
        );
    }
    // The real payload for the wrong amount or currency.
    let e = s
        .api
        .stars_pre_checkout(&StarsPreCheckout {
            user_ref: user.clone(),
            payload: invoice.payload.clone(),
            currency: "USD".into(),
            total_amount: 250,
        })
        .await
        .unwrap_err();
    assert_eq!(e.error_code(), Some(ErrorCode::PaymentMismatch), "{e}");
    assert_eq!(s.ledger_len().await, 0);
    assert_eq!(s.plan_of("telegram:7101").await, "free");

    // A key of another platform may not use any of it.
    let web = s.app.frontend(Platform::Web, "web-1").await;
    let e = web.stars_offers().await.unwrap_err();
    assert_eq!(e.error_code(), Some(ErrorCode::ForbiddenFrontend), "{e}");
    s.app.shutdown().await;
}

async fn a_one_off_payment_lapses_back_to_free(backend: Backend) {
    let s = Setup::new(backend, |c| {
        c.payments.telegram.subscription = false;
        c.payments.telegram.period_secs = 3;
    })
    .await;
    let bot = s.start().await;
    s.tg.user_text(TOKEN, 7201, 7201, "/subscribe pro");
    let invoice = s.invoice(1).await;
    assert_eq!(invoice.subscription_period, None);
    assert_eq!(invoice.amount, 600);
    paid(
        s.tg.user_pays(TOKEN, 7201, &invoice, PRE_CHECKOUT_DEADLINE)
            .await,
    );
    s.wait_text(7201, "You're on PRO").await;
    assert_eq!(s.plan_of("telegram:7201").await, "pro");
    // Nobody acts: the paid period ends and the plan with it.
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.plan_of("telegram:7201").await != "free" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still not back on FREE"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bot.shutdown().await;
    s.app.shutdown().await;
}

/// What a linked chat user buys is the account's, and a refund made
/// outside the bot ends it for both.
async fn a_linked_web_account_shares_the_plan(backend: Backend) {
    let s = Setup::new(backend, |_| {}).await;
    let bot = s.start().await;
    let web = s.app.frontend(Platform::Web, "web-1").await;
    let account = web
        .create_account(&Credentials {
            email: "grace@example.org".into(),
            password: "correct horse battery".into(),
        })
        .await
        .unwrap();
    let user: UserRef = "telegram:7301".parse().unwrap();
    let code = s.api.create_link_code(&user).await.unwrap();
    web.redeem_link_code(&account.user_ref, &code.code)
        .await
        .unwrap();

    s.tg.user_text(TOKEN, 7301, 7301, "/subscribe starter");
    let invoice = s.invoice(1).await;
    paid(
        s.tg.user_pays(TOKEN, 7301, &invoice, PRE_CHECKOUT_DEADLINE)
            .await,
    );
    s.wait_text(7301, "You're on STARTER").await;
    let quota = web.get_user(&account.user_ref).await.unwrap();
    assert_eq!(quota.plan.id, "starter");

    // An operator refunds the charge with the bot's token, outside the bot:
    // Telegram tells the bot (`refunded_payment`), and the plan ends for
    // both.
    let charge = s.tg.star_payments(TOKEN)[0]
        .telegram_payment_charge_id
        .clone();
    let answer: serde_json::Value = reqwest::Client::new()
        .post(s.tg.method_url(TOKEN, "refundStarPayment"))
        .json(&serde_json::json!({"user_id": 7301, "telegram_payment_charge_id": charge}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while web.get_user(&account.user_ref).await.unwrap().plan.id != "free" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refund was not recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.plan_of("telegram:7301").await, "free");
    bot.shutdown().await;
    s.app.shutdown().await;
}

async fn the_scheduler_down_at_pre_checkout_is_a_no(backend: Backend) {
    let s = Setup::new(backend, |_| {}).await;
    let bot = s.start().await;
    s.tg.user_text(TOKEN, 7401, 7401, "/subscribe starter");
    let invoice = s.invoice(1).await;
    let Setup { app, tg, .. } = s;
    app.shutdown().await;
    let checkout = tg
        .user_pays(TOKEN, 7401, &invoice, PRE_CHECKOUT_DEADLINE)
        .await;
    match checkout {
        Checkout::Declined(message) => {
            assert!(message.contains("not been charged"), "{message}")
        }
        other => panic!("expected a no in time, got {other:?}"),
    }
    assert!(tg.star_payments(TOKEN).is_empty());
    bot.shutdown().await;
}

/// With the day's tokens gone, `/quota` offers the plans for sale as
/// buttons, each an invoice link made for this user; with tokens left, it
/// does not.
async fn an_exhausted_quota_offers_the_plans(backend: Backend) {
    // One image costs FREE's whole day (twenty tokens).
    let s = Setup::new(backend, |c| c.billing.costs.image_per_megapixel = 20).await;
    let bot = s.start().await;
    s.tg.user_text(TOKEN, 7501, 7501, "/quota");
    s.wait_text(7501, "Plan: FREE").await;
    let job = tessera_api::public::CreateJobRequest {
        callback_url: None,
        context: None,
        frontend: Platform::Telegram,
        bot_id: BOT.parse().unwrap(),
        capability: tessera_core::Capability::Image,
        user_ref: "telegram:7501".parse().unwrap(),
        reply_context: None,
        params: serde_json::json!({"prompt": "a lamp"}),
    };
    s.api.create_job(&job, None).await.unwrap();
    let quota = s.api.get_user("telegram:7501").await.unwrap();
    assert_eq!(quota.tokens_left_today, Some(0), "{quota:?}");
    s.tg.user_text(TOKEN, 7501, 7501, "/quota");
    s.wait_text(7501, "Subscribe for more").await;
    let invoices = s.invoice(2).await;
    assert_eq!(invoices.amount, 600);
    let offered: Vec<i64> = s.tg.invoices(TOKEN).iter().map(|i| i.amount).collect();
    assert_eq!(offered, [250, 600]);
    // The first /quota, with tokens left, offered nothing.
    assert_eq!(
        s.bot_texts(7501)
            .iter()
            .filter(|t| t.contains("Subscribe for more"))
            .count(),
        1
    );
    bot.shutdown().await;
    s.app.shutdown().await;
}

/// Telegram failing to make the payment link: the user is told, nothing is
/// recorded, and asking again works.
async fn telegram_down_at_subscribe_is_told_and_leaves_nothing(backend: Backend) {
    let s = Setup::new(backend, |_| {}).await;
    let bot = s.start().await;
    s.tg.break_connections(TOKEN, "createInvoiceLink", 1);
    s.tg.user_text(TOKEN, 7601, 7601, "/subscribe starter");
    s.wait_text(
        7601,
        "couldn't make the payment link just now; nothing was charged",
    )
    .await;
    assert!(s.tg.invoices(TOKEN).is_empty());
    assert_eq!(s.ledger_len().await, 0);
    s.tg.user_text(TOKEN, 7601, 7601, "/subscribe starter");
    let invoice = s.invoice(1).await;
    paid(
        s.tg.user_pays(TOKEN, 7601, &invoice, PRE_CHECKOUT_DEADLINE)
            .await,
    );
    s.wait_text(7601, "You're on STARTER").await;
    bot.shutdown().await;
    s.app.shutdown().await;
}

/// The pre-checkout refuses what the scheduler no longer sells: an invoice
/// past its lifetime, or a price changed since it was made; a payload
/// signed before a restart still verifies with the same `link_secret`.
async fn stale_invoices_are_refused_at_pre_checkout(backend: Backend) {
    const SECRET: &str = "a link secret of at least thirty-two characters";
    let mut s = Setup::new(backend, |c| {
        c.payments.telegram.invoice_lifetime_secs = 1;
        c.artifacts.link_secret = Some(SECRET.into());
    })
    .await;
    let user: UserRef = "telegram:7701".parse().unwrap();
    let ask = |plan: &str| StarsInvoiceRequest {
        user_ref: user.clone(),
        plan_id: plan.parse().unwrap(),
    };
    let e = s.api.stars_invoice(&ask("admin")).await.unwrap_err();
    assert_eq!(e.error_code(), Some(ErrorCode::PlanNotForSale), "{e}");
    let check = |invoice: &tessera_api::stars::StarsInvoice| StarsPreCheckout {
        user_ref: user.clone(),
        payload: invoice.payload.clone(),
        currency: invoice.currency.clone(),
        total_amount: invoice.amount,
    };
    let short = s.api.stars_invoice(&ask("starter")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let e = s.api.stars_pre_checkout(&check(&short)).await.unwrap_err();
    assert_eq!(
        e.error_code(),
        Some(ErrorCode::PaymentPayloadExpired),
        "{e}"
    );

    s.app
        .crash_and_restart(|c| {
            c.artifacts.link_secret = Some(SECRET.into());
            c.payments.telegram.stars.insert("starter".into(), 250);
        })
        .await;
    // A new client: the old one's connections died with the scheduler.
    let api = s.app.client_with(&s.api_key);
    let invoice = api.stars_invoice(&ask("starter")).await.unwrap();
    api.stars_pre_checkout(&check(&invoice)).await.unwrap();
    // STARTER now costs more: the old price is no longer on sale.
    s.app
        .crash_and_restart(|c| {
            c.artifacts.link_secret = Some(SECRET.into());
            c.payments.telegram.stars.insert("starter".into(), 300);
        })
        .await;
    let e = s
        .api
        .stars_pre_checkout(&check(&invoice))
        .await
        .unwrap_err();
    assert_eq!(e.error_code(), Some(ErrorCode::PlanNotForSale), "{e}");
    assert_eq!(s.ledger_len().await, 0);
    s.app.shutdown().await;
}

tessera_testkit::backend_tests!(
    stale_invoices_are_refused_at_pre_checkout,
    an_exhausted_quota_offers_the_plans,
    telegram_down_at_subscribe_is_told_and_leaves_nothing,
    subscribe_renew_and_refund,
    a_forged_payload_changes_nothing,
    a_one_off_payment_lapses_back_to_free,
    a_linked_web_account_shares_the_plan,
    the_scheduler_down_at_pre_checkout_is_a_no,
);
