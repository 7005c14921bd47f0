//! Refunds operators order of Telegram Stars payments, end to end: the real
//! scheduler on both databases, the bot instance as `tessera telegram` runs
//! it, and the Bot API stand-in. The operator refunds through the admin API;
//! the bot that took the payment picks the order up at its next poll, calls
//! `refundStarPayment`, and the user is back on FREE; a refund Telegram
//! refuses is shown as failed with Telegram's error.

use std::time::Duration;

use tessera_api::refunds::{ListRefundOrdersQuery, RefundOrderView, RefundState};
use tessera_api::stars::{StarsInvoiceRequest, StarsPayment};
use tessera_api::Client;
use tessera_core::{PaymentKind, PaymentProvider, Platform, UserRef};
use tessera_scheduler::store::PaymentFilter;
use tessera_telegram::config::{BotInstance, Secret};
use tessera_telegram::{Secrets, TelegramConfig};
use tessera_testkit::standins::telegram::{
    Author, Checkout, TelegramStandIn, PRE_CHECKOUT_DEADLINE,
};
use tessera_testkit::{Backend, TestApp};

const TOKEN: &str = "123456:AAE-refund-bot-token";
const BOT: &str = "tg-stars-bot-1";
const WAIT: Duration = Duration::from_secs(20);

struct Setup {
    app: TestApp,
    tg: TelegramStandIn,
    config: TelegramConfig,
    api_key: String,
    api: Client,
}

impl Setup {
    async fn new(backend: Backend) -> Setup {
        let app = TestApp::spawn_with(backend, |c| {
            c.payments.telegram.stars.insert("starter".into(), 250);
        })
        .await;
        let tg = TelegramStandIn::start().await;
        tg.add_bot(TOKEN, "tessera_refund_bot");
        let api_key = app.key(Platform::Telegram, BOT).await;
        let api = app.client_with(&api_key);
        let config = TelegramConfig {
            scheduler_url: app.base_url(),
            api_url: tg.api_url(),
            poll_timeout_secs: 2,
            job_poll_ms: 100,
            min_edit_ms: 200,
            refund_poll_secs: 1,
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
            .filter(|m| m.author == Author::Bot)
            .filter_map(|m| m.text)
            .collect()
    }

    async fn wait_text(&self, chat: i64, needle: &str) -> String {
        let found = self
            .tg
            .wait_for(WAIT, |_| {
                self.bot_texts(chat)
                    .into_iter()
                    .find(|t| t.contains(needle))
            })
            .await;
        found.unwrap_or_else(|| {
            panic!(
                "no message containing {needle:?} in chat {chat}; the bot said {:?}",
                self.bot_texts(chat)
            )
        })
    }

    async fn plan_of(&self, user: &str) -> String {
        self.api.get_user(user).await.unwrap().plan.id
    }

    /// The ledger id of the user's Telegram purchase.
    async fn payment_id(&self, user: &str) -> i64 {
        let user: UserRef = user.parse().unwrap();
        let events = self
            .app
            .store()
            .payment_events(&PaymentFilter {
                user_ref: Some(user),
                provider: Some(PaymentProvider::Telegram),
                limit: 100,
                ..PaymentFilter::default()
            })
            .await
            .unwrap();
        events
            .iter()
            .find(|e| e.kind == PaymentKind::Purchase)
            .unwrap_or_else(|| panic!("no purchase: {events:?}"))
            .id
    }

    /// Waits until the operator's listing shows the order in `state`.
    async fn order_in(&self, state: RefundState) -> RefundOrderView {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let orders = self
                .app
                .admin
                .list_refund_orders(&ListRefundOrdersQuery::default())
                .await
                .unwrap()
                .orders;
            if let Some(o) = orders.iter().find(|o| o.state == state) {
                return o.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no order {state:?}: {orders:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn an_operator_refunds_a_stars_payment_through_the_bot(backend: Backend) {
    let s = Setup::new(backend).await;
    let bot = s.start().await;
    s.tg.user_text(TOKEN, 7301, 7301, "/subscribe starter");
    let invoice =
        s.tg.wait_for(WAIT, |tg| tg.invoices(TOKEN).first().cloned())
            .await
            .expect("an invoice");
    let payment = match s
        .tg
        .user_pays(TOKEN, 7301, &invoice, PRE_CHECKOUT_DEADLINE)
        .await
    {
        Checkout::Paid(p) => p,
        other => panic!("the payment did not go through: {other:?}"),
    };
    s.wait_text(7301, "You're on STARTER").await;
    let paid = s.payment_id("telegram:7301").await;

    let accepted = s.app.admin.refund_payment(paid).await.unwrap();
    assert_eq!(accepted.state, RefundState::Pending);
    assert!(accepted.message.contains(BOT), "{}", accepted.message);

    // The bot picks it up at its next poll and Telegram refunds.
    let done = s.order_in(RefundState::Done).await;
    assert_eq!(done.payment_id, paid);
    let refunds = s.tg.star_refunds(TOKEN);
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(
        (refunds[0].user_id, &refunds[0].telegram_payment_charge_id),
        (7301, &payment.telegram_payment_charge_id)
    );
    assert_eq!(s.plan_of("telegram:7301").await, "free");
    let told = s.wait_text(7301, "was refunded").await;
    assert!(told.contains("250 ⭐") && told.contains("FREE"), "{told}");

    // Again: refused, and Telegram is not asked twice.
    let again = s.app.admin.refund_payment(paid).await.unwrap_err();
    assert_eq!(again.code(), Some("already_refunded"), "{again}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(s.tg.star_refunds(TOKEN).len(), 1);
    bot.shutdown().await;
    s.app.shutdown().await;
}

async fn a_refund_telegram_refuses_is_shown_as_failed(backend: Backend) {
    let s = Setup::new(backend).await;
    // A charge the bot relayed that Telegram does not have (a relay made by
    // hand, as support might): Telegram answers CHARGE_NOT_FOUND.
    let user: UserRef = "telegram:7401".parse().unwrap();
    let invoice = s
        .api
        .stars_invoice(&StarsInvoiceRequest {
            user_ref: user.clone(),
            plan_id: "starter".parse().unwrap(),
        })
        .await
        .unwrap();
    s.api
        .stars_payment(&StarsPayment {
            user_ref: user.clone(),
            payload: invoice.payload,
            currency: invoice.currency,
            total_amount: invoice.amount,
            telegram_payment_charge_id: "charge-telegram-never-made".into(),
            subscription_expiration_date: None,
            is_recurring: false,
            is_first_recurring: false,
            date: chrono::Utc::now().timestamp(),
        })
        .await
        .unwrap();
    let paid = s.payment_id("telegram:7401").await;
    s.app.admin.refund_payment(paid).await.unwrap();
    // The order waits for the bot, which picks it up as it starts.
    let bot = s.start().await;
    let failed = s.order_in(RefundState::Failed).await;
    let error = failed.error.unwrap_or_default();
    assert!(error.contains("CHARGE_NOT_FOUND"), "{error}");
    assert!(s.tg.star_refunds(TOKEN).is_empty());
    assert_eq!(s.plan_of("telegram:7401").await, "starter");
    // Failed orders are not tried again until an operator orders them again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = s.order_in(RefundState::Failed).await;
    assert_eq!(still.updated_at, failed.updated_at);
    bot.shutdown().await;
    s.app.shutdown().await;
}

tessera_testkit::backend_tests!(
    an_operator_refunds_a_stars_payment_through_the_bot,
    a_refund_telegram_refuses_is_shown_as_failed,
);
