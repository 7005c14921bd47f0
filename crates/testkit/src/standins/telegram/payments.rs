//! Payments in Telegram Stars, as the Bot API documents them for digital
//! goods: `sendInvoice` and `createInvoiceLink` (currency `XTR`, an empty
//! `provider_token`, one price; `subscription_period` 2592000 for a
//! subscription link), `answerPreCheckoutQuery`, `refundStarPayment` and
//! `editUserStarSubscription`; and the user's side, which a test drives:
//! [`TelegramStandIn::user_pays`] sends the bot a `pre_checkout_query`,
//! waits for its answer (the payment fails without one within
//! [`PRE_CHECKOUT_DEADLINE`], as on Telegram), and then a `message` with
//! `successful_payment`; [`TelegramStandIn::renew`] charges a subscription's
//! next period. Charges and refunds are kept so a test can assert them.

use std::collections::HashMap;
use std::time::Duration;

use rand::distr::{Alphanumeric, SampleString};
use serde_json::{json, Value};

use super::api::{Answer, Ctx, Failure, Params};
use super::messages::{post_message, target_chat, user_json};
use super::state::{now, BotState, ChatState, Msg, UserInfo};
use super::types::{Author, MessageKind, SentMessage};
use super::TelegramStandIn;

/// How long Telegram waits for `answerPreCheckoutQuery`.
pub const PRE_CHECKOUT_DEADLINE: Duration = Duration::from_secs(10);

/// The only subscription period the Bot API takes (30 days), in seconds.
pub const SUBSCRIPTION_PERIOD: i64 = 2_592_000;

/// The most a subscription may cost, in Stars.
pub const MAX_SUBSCRIPTION_STARS: i64 = 10_000;

/// What `answerPreCheckoutQuery` answers once the time is up or the id is
/// unknown.
const QUERY_TOO_OLD: &str = "query is too old and response timeout expired or query ID is invalid";

/// An invoice a bot sent (`sendInvoice`) or made a link for
/// (`createInvoiceLink`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentInvoice {
    /// The chat it was sent to; `None` for a link.
    pub chat_id: Option<i64>,
    pub message_id: Option<i64>,
    /// The link `createInvoiceLink` answered.
    pub link: Option<String>,
    pub title: String,
    pub description: String,
    /// The bot's `payload`, handed back in the pre-checkout query and the
    /// payment.
    pub payload: String,
    pub currency: String,
    /// The price, in Stars.
    pub amount: i64,
    /// `Some(2592000)` for a subscription.
    pub subscription_period: Option<i64>,
}

/// A payment made to a bot, as its `successful_payment` said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StarPayment {
    pub user_id: i64,
    pub telegram_payment_charge_id: String,
    pub currency: String,
    pub total_amount: i64,
    pub invoice_payload: String,
    /// For a subscription: when the paid period ends.
    pub subscription_expiration_date: Option<i64>,
    pub is_recurring: bool,
    pub is_first_recurring: bool,
    /// The subscription's period, for renewals.
    pub subscription_period: Option<i64>,
    pub refunded: bool,
    /// Its subscription will not renew (`editUserStarSubscription` or the
    /// user cancelled it); a refunded payment's subscription does not
    /// renew either.
    pub canceled: bool,
}

/// A refund `refundStarPayment` made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StarRefund {
    pub user_id: i64,
    pub telegram_payment_charge_id: String,
    pub total_amount: i64,
}

/// How a simulated purchase ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checkout {
    /// The bot said yes; the payment was made and announced.
    Paid(StarPayment),
    /// The bot said no, with this `error_message`.
    Declined(String),
    /// The bot did not answer in time; nothing was charged.
    TimedOut,
}

#[derive(Clone, Debug)]
pub(super) struct Query {
    answer: Option<Result<(), String>>,
    expired: bool,
}

/// A bot's payments: what it offered, the queries awaiting its answer, the
/// charges and the refunds.
#[derive(Default)]
pub(super) struct Payments {
    invoices: Vec<SentInvoice>,
    queries: HashMap<String, Query>,
    charges: Vec<StarPayment>,
    refunds: Vec<StarRefund>,
}

impl TelegramStandIn {
    /// Every invoice the bot sent or made a link for, in order.
    pub fn invoices(&self, token: &str) -> Vec<SentInvoice> {
        self.read(token, |bot| bot.payments.invoices.clone())
    }

    /// Every payment made to the bot, renewals included, as it stands now.
    pub fn star_payments(&self, token: &str) -> Vec<StarPayment> {
        self.read(token, |bot| bot.payments.charges.clone())
    }

    /// Every refund the bot made.
    pub fn star_refunds(&self, token: &str) -> Vec<StarRefund> {
        self.read(token, |bot| bot.payments.refunds.clone())
    }

    /// The user pays `invoice`, in the private chat (`user_id`): a
    /// `pre_checkout_query` goes to the bot; if it answers `ok` within
    /// `deadline` (Telegram's is [`PRE_CHECKOUT_DEADLINE`]), the payment is
    /// charged and a `message` with `successful_payment` follows, from the
    /// user in that chat. A late answer gets `400 query is too old ...`.
    pub async fn user_pays(
        &self,
        token: &str,
        user_id: i64,
        invoice: &SentInvoice,
        deadline: Duration,
    ) -> Checkout {
        let query_id = Alphanumeric.sample_string(&mut rand::rng(), 19);
        self.mutate_with_users(token, |bot, users| {
            bot.payments.queries.insert(
                query_id.clone(),
                Query {
                    answer: None,
                    expired: false,
                },
            );
            let query = json!({
                "id": query_id,
                "from": user_json(user_id, users),
                "currency": invoice.currency,
                "total_amount": invoice.amount,
                "invoice_payload": invoice.payload,
            });
            queue(bot, "pre_checkout_query", query);
        });
        let answer = self
            .wait_for(deadline, |s| {
                s.read(token, |bot| bot.payments.queries[&query_id].answer.clone())
            })
            .await;
        let answer = self.mutate(token, |bot, _| {
            let query = bot.payments.queries.get_mut(&query_id).expect("kept");
            query.expired = true;
            query.answer.clone().or(answer)
        });
        match answer {
            None => Checkout::TimedOut,
            Some(Err(message)) => Checkout::Declined(message),
            Some(Ok(())) => {
                let expiration = invoice.subscription_period.map(|p| now() + p);
                let payment = StarPayment {
                    user_id,
                    telegram_payment_charge_id: charge_id(),
                    currency: invoice.currency.clone(),
                    total_amount: invoice.amount,
                    invoice_payload: invoice.payload.clone(),
                    subscription_expiration_date: expiration,
                    is_recurring: expiration.is_some(),
                    is_first_recurring: expiration.is_some(),
                    subscription_period: invoice.subscription_period,
                    refunded: false,
                    canceled: false,
                };
                self.announce(token, &payment, "successful_payment");
                Checkout::Paid(payment)
            }
        }
    }

    /// Telegram charges the next period of the subscription that
    /// `charge_id` paid for (its first payment or any renewal): a new
    /// payment with `is_recurring` and an expiration one period after the
    /// last, announced by `successful_payment` without a pre-checkout query.
    /// `None` when the charge is not a subscription's, or it was cancelled
    /// or refunded.
    pub fn renew(&self, token: &str, charge_id: &str) -> Option<StarPayment> {
        let payment = self.read(token, |bot| {
            let last = bot
                .payments
                .charges
                .iter()
                .find(|c| c.telegram_payment_charge_id == charge_id)?;
            let period = last.subscription_period?;
            let subscription: Vec<&StarPayment> = bot
                .payments
                .charges
                .iter()
                .filter(|c| same_subscription(c, last))
                .collect();
            if subscription.iter().any(|c| c.canceled || c.refunded) {
                return None;
            }
            // The newest payment of the subscription sets the date.
            let expiration = subscription
                .iter()
                .filter_map(|c| c.subscription_expiration_date)
                .max()?;
            Some(StarPayment {
                telegram_payment_charge_id: self::charge_id(),
                subscription_expiration_date: Some(expiration + period),
                is_recurring: true,
                is_first_recurring: false,
                ..last.clone()
            })
        })?;
        self.announce(token, &payment, "successful_payment");
        Some(payment)
    }

    /// The user cancels the subscription in Telegram's interface: it will
    /// not renew; the bot is not told. False for an unknown charge.
    pub fn user_cancels_subscription(&self, token: &str, charge_id: &str) -> bool {
        self.mutate(token, |bot, _| {
            let Some(charge) = bot
                .payments
                .charges
                .iter()
                .find(|c| c.telegram_payment_charge_id == charge_id)
                .cloned()
            else {
                return false;
            };
            cancel(&mut bot.payments.charges, &charge, true);
            true
        })
    }

    /// Records the payment and queues the user's service message
    /// (`successful_payment` or `refunded_payment`) for the bot.
    fn announce(&self, token: &str, payment: &StarPayment, field: &str) {
        let content = if field == "successful_payment" {
            let mut content = json!({
                "currency": payment.currency,
                "total_amount": payment.total_amount,
                "invoice_payload": payment.invoice_payload,
                "telegram_payment_charge_id": payment.telegram_payment_charge_id,
                "provider_payment_charge_id": "",
            });
            if let Some(date) = payment.subscription_expiration_date {
                content["subscription_expiration_date"] = json!(date);
                content["is_recurring"] = json!(true);
                if payment.is_first_recurring {
                    content["is_first_recurring"] = json!(true);
                }
            }
            content
        } else {
            refunded_json(payment)
        };
        self.mutate_with_users(token, |bot, users| {
            if field == "successful_payment" {
                bot.payments.charges.push(payment.clone());
            }
            service_message(bot, users, payment.user_id, field, content);
        });
    }
}

/// Whether two payments belong to one subscription (same user, same
/// invoice payload).
fn same_subscription(a: &StarPayment, b: &StarPayment) -> bool {
    a.user_id == b.user_id
        && a.invoice_payload == b.invoice_payload
        && a.subscription_period.is_some()
        && b.subscription_period.is_some()
}

/// Marks every payment of `charge`'s subscription as cancelled (or not).
fn cancel(charges: &mut [StarPayment], charge: &StarPayment, canceled: bool) {
    for c in charges.iter_mut().filter(|c| same_subscription(c, charge)) {
        c.canceled = canceled;
    }
}

/// A `refunded_payment` object.
fn refunded_json(payment: &StarPayment) -> Value {
    json!({
        "currency": payment.currency,
        "total_amount": payment.total_amount,
        "invoice_payload": payment.invoice_payload,
        "telegram_payment_charge_id": payment.telegram_payment_charge_id,
    })
}

/// A Stars charge id: Telegram's begin `stx`.
fn charge_id() -> String {
    format!("stx{}", Alphanumeric.sample_string(&mut rand::rng(), 60))
}

/// Queues an update of `kind` when the bot wants that kind.
fn queue(bot: &mut BotState, kind: &str, content: Value) {
    if !bot.wants(kind) {
        return;
    }
    let update_id = bot.next_update_id;
    bot.next_update_id += 1;
    bot.updates
        .push_back((update_id, json!({ "update_id": update_id, kind: content })));
}

/// A message from the user in their private chat carrying `field`, queued
/// as a `message` update.
fn service_message(
    bot: &mut BotState,
    users: &HashMap<i64, UserInfo>,
    user_id: i64,
    field: &str,
    content: Value,
) {
    let kind = if field == "successful_payment" {
        MessageKind::SuccessfulPayment
    } else {
        MessageKind::RefundedPayment
    };
    let chat = bot.chats.entry(user_id).or_insert_with(ChatState::new);
    let id = chat.next_id;
    chat.next_id += 1;
    chat.messages.insert(
        id,
        Msg {
            id,
            author: Author::User(user_id),
            date: now(),
            kind,
            text: None,
            entities: None,
            media: Some(content),
            file_id: None,
            reply_to: None,
            reply_markup: None,
            edit_date: None,
            history: Vec::new(),
        },
    );
    let rendered = super::messages::render(bot, users, user_id, id, true);
    queue(bot, "message", rendered);
}

/// The invoice's parameters, checked as Telegram checks a Stars invoice.
fn read_invoice(params: &Params, link: bool) -> Result<SentInvoice, Failure> {
    let title = params.text("title").unwrap_or_default();
    if title.trim().is_empty() {
        return Err(Failure::bad("parameter \"title\" is required"));
    }
    if title.chars().count() > 32 {
        return Err(Failure::bad("INVOICE_TITLE_INVALID"));
    }
    let description = params.text("description").unwrap_or_default();
    if description.trim().is_empty() {
        return Err(Failure::bad("parameter \"description\" is required"));
    }
    if description.chars().count() > 255 {
        return Err(Failure::bad("INVOICE_DESCRIPTION_INVALID"));
    }
    let payload = params.text("payload").unwrap_or_default();
    if payload.is_empty() || payload.len() > 128 {
        return Err(Failure::bad("INVOICE_PAYLOAD_INVALID"));
    }
    let currency = params.text("currency").unwrap_or_default();
    if currency != "XTR" {
        // The stand-in has no payment provider: Stars only.
        return Err(Failure::bad("CURRENCY_INVALID"));
    }
    if params.text("provider_token").is_some_and(|t| !t.is_empty()) {
        return Err(Failure::bad("PAYMENT_PROVIDER_INVALID"));
    }
    let prices = params
        .json("prices")?
        .ok_or_else(|| Failure::bad("parameter \"prices\" is required"))?;
    let Some(prices) = prices.as_array() else {
        return Err(Failure::bad("can't parse prices JSON object"));
    };
    // Stars invoices have exactly one price.
    let [price] = prices.as_slice() else {
        return Err(Failure::bad("STARS_INVOICE_INVALID"));
    };
    let amount = price.get("amount").and_then(Value::as_i64).unwrap_or(0);
    if price.get("label").and_then(Value::as_str).is_none() {
        return Err(Failure::bad("can't parse prices JSON object"));
    }
    if amount <= 0 {
        return Err(Failure::bad("CURRENCY_TOTAL_AMOUNT_INVALID"));
    }
    let subscription_period = if link {
        params.int("subscription_period")?
    } else {
        None
    };
    if let Some(period) = subscription_period {
        if period != SUBSCRIPTION_PERIOD {
            return Err(Failure::bad("SUBSCRIPTION_PERIOD_INVALID"));
        }
        if amount > MAX_SUBSCRIPTION_STARS {
            return Err(Failure::bad("CURRENCY_TOTAL_AMOUNT_INVALID"));
        }
    }
    Ok(SentInvoice {
        chat_id: None,
        message_id: None,
        link: None,
        title,
        description,
        payload,
        currency,
        amount,
        subscription_period,
    })
}

pub(super) fn send_invoice(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    let chat_id = target_chat(ctx, params)?;
    let mut invoice = read_invoice(params, false)?;
    let media = json!({
        "title": invoice.title,
        "description": invoice.description,
        "start_parameter": params.text("start_parameter").unwrap_or_default(),
        "currency": invoice.currency,
        "total_amount": invoice.amount,
    });
    let (message_id, rendered) = post_message(
        ctx,
        chat_id,
        MessageKind::Invoice,
        None,
        Some(media),
        None,
        None,
        params.json("reply_markup")?,
    );
    ctx.bot.sent.push(SentMessage {
        chat_id,
        message_id,
        kind: MessageKind::Invoice,
        text: None,
        parse_mode: None,
        upload: None,
        file_ref: None,
        file_id: None,
        reply_to: None,
    });
    invoice.chat_id = Some(chat_id);
    invoice.message_id = Some(message_id);
    ctx.bot.payments.invoices.push(invoice);
    Ok(rendered.into())
}

pub(super) fn create_invoice_link(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    let mut invoice = read_invoice(params, true)?;
    let link = format!(
        "https://t.me/${}",
        Alphanumeric.sample_string(&mut rand::rng(), 22)
    );
    invoice.link = Some(link.clone());
    ctx.bot.payments.invoices.push(invoice);
    Ok(json!(link).into())
}

pub(super) fn answer_pre_checkout_query(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    let id = params
        .text("pre_checkout_query_id")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Failure::bad("parameter \"pre_checkout_query_id\" is required"))?;
    let ok = params.flag("ok");
    let error_message = params.text("error_message").filter(|m| !m.is_empty());
    if !ok && error_message.is_none() {
        return Err(Failure::bad("ERROR_MESSAGE_EMPTY"));
    }
    let query = ctx
        .bot
        .payments
        .queries
        .get_mut(&id)
        .filter(|q| !q.expired && q.answer.is_none())
        .ok_or_else(|| Failure::bad(QUERY_TOO_OLD))?;
    query.answer = Some(if ok {
        Ok(())
    } else {
        Err(error_message.unwrap_or_default())
    });
    Ok(json!(true).into())
}

/// The charge a method names, paid by `user_id`.
fn find_charge<'a>(ctx: &'a mut Ctx<'_>, params: &Params) -> Result<&'a mut StarPayment, Failure> {
    let user_id = params
        .int("user_id")?
        .ok_or_else(|| Failure::bad("parameter \"user_id\" is required"))?;
    let charge = params
        .text("telegram_payment_charge_id")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Failure::bad("parameter \"telegram_payment_charge_id\" is required"))?;
    ctx.bot
        .payments
        .charges
        .iter_mut()
        .find(|c| c.telegram_payment_charge_id == charge && c.user_id == user_id)
        .ok_or_else(|| Failure::bad("CHARGE_NOT_FOUND"))
}

pub(super) fn refund_star_payment(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    let charge = find_charge(ctx, params)?;
    if charge.refunded {
        return Err(Failure::bad("CHARGE_ALREADY_REFUNDED"));
    }
    charge.refunded = true;
    let payment = charge.clone();
    ctx.bot.payments.refunds.push(StarRefund {
        user_id: payment.user_id,
        telegram_payment_charge_id: payment.telegram_payment_charge_id.clone(),
        total_amount: payment.total_amount,
    });
    service_message(
        ctx.bot,
        ctx.users,
        payment.user_id,
        "refunded_payment",
        refunded_json(&payment),
    );
    Ok(json!(true).into())
}

pub(super) fn edit_user_star_subscription(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    let is_canceled = params.flag("is_canceled");
    let charge = find_charge(ctx, params)?.clone();
    if charge.subscription_period.is_none() {
        return Err(Failure::bad("SUBSCRIPTION_ID_INVALID"));
    }
    cancel(&mut ctx.bot.payments.charges, &charge, is_canceled);
    Ok(json!(true).into())
}
