//! Selling plans for Telegram Stars: `/subscribe`, `/refund`, the Subscribe
//! buttons under `/quota` when the day's tokens ran out, the
//! `pre_checkout_query` and the `successful_payment`.
//!
//! The bot decides nothing here: the scheduler prices and signs each
//! invoice, says yes or no to each pre-checkout query (the bot answers
//! Telegram only after it has, and never yes when it cannot reach it), and
//! records each payment in its ledger. A payment Telegram announced is
//! relayed with retries, since the money is already taken; a repeat of the
//! same charge changes nothing in the ledger.

use std::future::IntoFuture;
use std::time::Duration;

use chrono::{DateTime, Utc};
use teloxide_core::errors::{ApiError, RequestError};
use teloxide_core::payloads::{
    AnswerPreCheckoutQuerySetters, CreateInvoiceLinkSetters, SendMessageSetters,
};
use teloxide_core::requests::Requester;
use teloxide_core::types::{
    ChatId, InlineKeyboardButton, InlineKeyboardMarkup, LabeledPrice, Message, PreCheckoutQuery,
    RefundedPayment, Seconds, SuccessfulPayment, TelegramTransactionId, UserId,
};

use tessera_api::client::{Client, ClientError};
use tessera_api::stars::{
    StarsInvoice, StarsInvoiceRequest, StarsOffers, StarsPayment, StarsPaymentOutcome,
    StarsPreCheckout, StarsRefunded,
};
use tessera_chat::words;
use tessera_core::{ErrorCode, Platform, UserRef};

/// How long the bot waits for the scheduler's answer to a pre-checkout
/// query: Telegram gives up after 10 s, and a late yes is no yes.
const PRE_CHECKOUT_WAIT: Duration = Duration::from_secs(7);
/// Tries at relaying a payment, the pauses doubling from 1 s.
const RELAY_ATTEMPTS: u32 = 6;

/// The Stars commands, with their one-line descriptions, for the menu and
/// `/help`.
pub const COMMANDS: [(&str, &str); 2] = [
    (
        "subscribe",
        "Buy a plan with Telegram Stars: /subscribe or /subscribe <plan>",
    ),
    (
        "refund",
        "Refund your latest Stars payment and end its plan",
    ),
];

/// What the user asked of the bot's payments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StarsCommand {
    /// `/subscribe`, with a plan id or not.
    Subscribe(Option<String>),
    Refund,
}

/// `/name args` addressed to this bot (`/name@bot` too): its name, lower
/// case, and the rest. `None` for text that is no command or is another
/// bot's.
pub fn command<'a>(text: &'a str, username: Option<&str>) -> Option<(String, &'a str)> {
    let text = text.trim();
    let rest = text.strip_prefix('/')?;
    let (head, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let (name, to) = head.split_once('@').unwrap_or((head, ""));
    if !to.is_empty() && username.is_none_or(|u| !u.eq_ignore_ascii_case(to)) {
        return None;
    }
    Some((name.to_ascii_lowercase(), args.trim()))
}

/// The Stars command in `text`, if it is one.
pub fn parse(text: &str, username: Option<&str>) -> Option<StarsCommand> {
    let (name, args) = command(text, username)?;
    match name.as_str() {
        "subscribe" => Some(StarsCommand::Subscribe(
            args.split_whitespace()
                .next()
                .map(|p| p.to_ascii_lowercase()),
        )),
        "refund" => Some(StarsCommand::Refund),
        _ => None,
    }
}

/// `/help` with the Stars commands.
pub fn help(base: &str) -> String {
    let mut text = base.to_owned();
    for (name, description) in COMMANDS {
        text.push_str(&format!("\n/{name}: {description}"));
    }
    text
}

/// What the bot needs to sell.
#[derive(Clone)]
pub struct Seller {
    pub tg: teloxide_core::Bot,
    pub api: Client,
    pub bot_id: String,
}

fn user_ref(user: UserId) -> Option<UserRef> {
    UserRef::new(Platform::Telegram, &user.0.to_string()).ok()
}

fn until(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

fn tokens(plan: &tessera_core::Plan) -> String {
    match plan.daily_tokens {
        Some(t) => format!("{t} tokens a day"),
        None => "unlimited tokens".into(),
    }
}

fn log_failure(bot_id: &str, what: &str, e: &ClientError) {
    match e.error_code() {
        Some(code) if !code.is_credential() && !code.is_server_side() => {}
        _ => tracing::error!(%bot_id, error = %e, "{what}"),
    }
}

impl Seller {
    async fn say(&self, chat: ChatId, text: &str) {
        if let Err(e) = self.tg.send_message(chat, text).await {
            tracing::warn!(bot_id = %self.bot_id, error = %e, "could not answer");
        }
    }

    /// An invoice link for the user and plan (a subscription link when the
    /// scheduler sells subscriptions).
    async fn link(&self, invoice: &StarsInvoice) -> Result<reqwest::Url, RequestError> {
        let mut request = self.tg.create_invoice_link(
            invoice.title.clone(),
            invoice.description.clone(),
            invoice.payload.clone(),
            invoice.currency.clone(),
            [LabeledPrice::new(invoice.label.clone(), invoice.amount)],
        );
        if let Some(period) = invoice.subscription_period {
            request = request.subscription_period(Seconds::from_seconds(period));
        }
        let link = request.into_future().await?;
        reqwest::Url::parse(&link).map_err(|e| {
            RequestError::Api(ApiError::Unknown(format!(
                "createInvoiceLink answered {link:?}: {e}"
            )))
        })
    }

    /// One button per plan sold, each an invoice link made for this user.
    async fn buttons(
        &self,
        user: &UserRef,
        offers: &StarsOffers,
    ) -> Result<InlineKeyboardMarkup, String> {
        let mut rows = Vec::new();
        for offer in &offers.plans {
            let request = StarsInvoiceRequest {
                user_ref: user.clone(),
                plan_id: offer.plan_id.clone(),
            };
            let invoice = self
                .api
                .stars_invoice(&request)
                .await
                .map_err(|e| words::api_error(&e, Utc::now()))?;
            let url = self.link(&invoice).await.map_err(|e| {
                tracing::warn!(bot_id = %self.bot_id, error = %e, "Telegram refused an invoice link");
                "Telegram couldn't make the payment link just now; nothing was charged. Please try again in a minute.".to_owned()
            })?;
            rows.push(vec![InlineKeyboardButton::url(
                format!("{}: {} ⭐", offer.name, offer.stars),
                url,
            )]);
        }
        Ok(InlineKeyboardMarkup::new(rows))
    }

    fn list(offers: &StarsOffers) -> String {
        let every = if offers.subscription {
            format!("renewed every {} days until you cancel", offers.days)
        } else {
            format!("for {} days", offers.days)
        };
        let mut lines = vec![format!("Plans you can buy with Telegram Stars ({every}):")];
        for o in &offers.plans {
            let tokens = o.daily_tokens.map_or_else(
                || "unlimited tokens".into(),
                |t| format!("{t} tokens a day"),
            );
            lines.push(format!("{}: {} ⭐, {tokens}", o.name, o.stars));
        }
        if let Some(first) = offers.plans.first() {
            lines.push(format!(
                "Tap a button, or send /subscribe {}.",
                first.plan_id
            ));
        }
        lines.join("\n")
    }

    /// `/subscribe [plan]` in a private chat.
    pub async fn subscribe(&self, chat: ChatId, user: &UserRef, plan: Option<&str>) {
        let offers = match self.api.stars_offers().await {
            Ok(o) => o,
            Err(e) => {
                log_failure(&self.bot_id, "could not read the plans sold", &e);
                return self.say(chat, &words::api_error(&e, Utc::now())).await;
            }
        };
        if offers.plans.is_empty() {
            return self
                .say(chat, "Plans can't be bought in Telegram here.")
                .await;
        }
        let Some(plan) = plan else {
            let text = Self::list(&offers);
            return match self.buttons(user, &offers).await {
                Ok(markup) => {
                    if let Err(e) = self.tg.send_message(chat, text).reply_markup(markup).await {
                        tracing::warn!(bot_id = %self.bot_id, error = %e, "could not answer");
                    }
                }
                Err(message) => self.say(chat, &message).await,
            };
        };
        let Some(offer) = offers.plans.iter().find(|o| o.plan_id.as_str() == plan) else {
            let names: Vec<&str> = offers.plans.iter().map(|o| o.plan_id.as_str()).collect();
            return self
                .say(
                    chat,
                    &format!(
                        "There's no plan {plan:?} to buy here. Plans: {}.",
                        names.join(", ")
                    ),
                )
                .await;
        };
        let single = StarsOffers {
            plans: vec![offer.clone()],
            ..offers.clone()
        };
        let text = format!(
            "{}: {} ⭐, {}.",
            offer.name,
            offer.stars,
            if offers.subscription {
                format!("renewed every {} days until you cancel", offers.days)
            } else {
                format!("for {} days", offers.days)
            }
        );
        match self.buttons(user, &single).await {
            Ok(markup) => {
                if let Err(e) = self.tg.send_message(chat, text).reply_markup(markup).await {
                    tracing::warn!(bot_id = %self.bot_id, error = %e, "could not answer");
                }
            }
            Err(message) => self.say(chat, &message).await,
        }
    }

    /// After `/quota`: when the day's tokens ran out, the plans on sale as
    /// buttons. Says nothing when nothing is sold or tokens are left.
    pub async fn offer_when_out(&self, chat: ChatId, user: &UserRef) {
        let Ok(quota) = self.api.get_user(user.to_string()).await else {
            return;
        };
        if quota.tokens_left_today != Some(0) {
            return;
        }
        let Ok(offers) = self.api.stars_offers().await else {
            return;
        };
        let better: Vec<_> = offers
            .plans
            .iter()
            .filter(|o| o.plan_id.as_str() != quota.plan.id)
            .cloned()
            .collect();
        if better.is_empty() {
            return;
        }
        let offers = StarsOffers {
            plans: better,
            ..offers
        };
        if let Ok(markup) = self.buttons(user, &offers).await {
            let text = "Out of tokens for today? Subscribe for more:";
            if let Err(e) = self.tg.send_message(chat, text).reply_markup(markup).await {
                tracing::warn!(bot_id = %self.bot_id, error = %e, "could not answer");
            }
        }
    }

    /// Answers a `pre_checkout_query` once the scheduler has: yes only when
    /// it agreed, no with its reason otherwise, and no when it cannot be
    /// reached in time.
    pub async fn pre_checkout(&self, query: PreCheckoutQuery) {
        let verdict = match user_ref(query.from.id) {
            None => Err("This payment can't be taken for your account.".to_owned()),
            Some(user) => {
                let body = StarsPreCheckout {
                    user_ref: user,
                    payload: query.invoice_payload.clone(),
                    currency: query.currency.clone(),
                    total_amount: query.total_amount,
                };
                match tokio::time::timeout(PRE_CHECKOUT_WAIT, self.api.stars_pre_checkout(&body))
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(ClientError::Api { body, .. }))
                        if body
                            .code()
                            .is_some_and(|c| !c.is_credential() && !c.is_server_side()) =>
                    {
                        Err(format!("{}.", body.error.message.trim_end_matches('.')))
                    }
                    Ok(Err(e)) => {
                        tracing::error!(bot_id = %self.bot_id, error = %e, "the scheduler could not check a payment");
                        Err(unavailable())
                    }
                    Err(_) => {
                        tracing::error!(bot_id = %self.bot_id, "the scheduler did not check a payment in time");
                        Err(unavailable())
                    }
                }
            }
        };
        let answer = match &verdict {
            Ok(()) => self.tg.answer_pre_checkout_query(query.id.clone(), true),
            Err(message) => self
                .tg
                .answer_pre_checkout_query(query.id.clone(), false)
                .error_message(message.clone()),
        };
        if let Err(e) = answer.await {
            tracing::warn!(bot_id = %self.bot_id, error = %e, ok = verdict.is_ok(), "could not answer a pre-checkout query");
        }
    }

    /// Relays a `successful_payment` and tells the user their plan.
    pub async fn paid(&self, message: &Message, payment: &SuccessfulPayment) {
        let Some(from) = message.from.as_ref() else {
            return;
        };
        let Some(user) = user_ref(from.id) else {
            return;
        };
        let chat = message.chat.id;
        let charge = payment.telegram_payment_charge_id.0.clone();
        let body = StarsPayment {
            user_ref: user.clone(),
            payload: payment.invoice_payload.clone(),
            currency: payment.currency.clone(),
            total_amount: payment.total_amount,
            telegram_payment_charge_id: charge.clone(),
            subscription_expiration_date: payment
                .subscription_expiration_date
                .map(|d| d.timestamp()),
            is_recurring: payment.is_recurring,
            is_first_recurring: payment.is_first_recurring,
            date: message.date.timestamp(),
        };
        let mut pause = Duration::from_secs(1);
        let mut attempt = 1;
        let outcome: Result<StarsPaymentOutcome, ClientError> = loop {
            match self.api.stars_payment(&body).await {
                Err(e) if retry(&e) && attempt < RELAY_ATTEMPTS => {
                    tracing::warn!(bot_id = %self.bot_id, error = %e, retry_in_s = pause.as_secs(), "could not relay a payment; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                other => break other,
            }
        };
        let text = match outcome {
            Ok(o) if o.already_recorded => return,
            Ok(o) => {
                let renewed = payment.is_recurring && !payment.is_first_recurring;
                let head = if renewed {
                    "Your subscription renewed. Thank you!"
                } else {
                    "Payment received. Thank you!"
                };
                match o.paid_until {
                    Some(at) => format!(
                        "{head} You're on {} ({}), paid until {}.",
                        o.plan.name,
                        tokens(&o.plan),
                        until(at)
                    ),
                    None => format!("{head} You're on {} ({}).", o.plan.name, tokens(&o.plan)),
                }
            }
            Err(e) => {
                tracing::error!(bot_id = %self.bot_id, %user, %charge, error = %e, "a Stars payment could not be recorded");
                format!(
                    "Your payment arrived, but it couldn't be recorded yet. Please send this to support: {charge}"
                )
            }
        };
        self.say(chat, &text).await;
    }

    /// Telegram says a payment was refunded (by `/refund`, or by anyone
    /// holding the bot's token, such as an operator's tool): recorded once,
    /// which ends the plan it paid for. The user is not told here.
    pub async fn refunded(&self, message: &Message, refund: &RefundedPayment) {
        let Some(user) = message.from.as_ref().and_then(|f| user_ref(f.id)) else {
            return;
        };
        let body = StarsRefunded {
            user_ref: user,
            telegram_payment_charge_id: refund.telegram_payment_charge_id.0.clone(),
        };
        match self.api.stars_refunded(&body).await {
            Ok(_) => {}
            // Not a payment for a plan: nothing to end.
            Err(e) if e.error_code() == Some(ErrorCode::NothingToRefund) => {}
            Err(e) => {
                tracing::error!(bot_id = %self.bot_id, error = %e, "a Stars refund could not be recorded")
            }
        }
    }

    /// `/refund`: the charge the scheduler allows, refunded by Telegram,
    /// then recorded.
    pub async fn refund(&self, chat: ChatId, user_id: UserId, user: &UserRef) {
        let refundable = match self.api.stars_refundable(user).await {
            Ok(r) => r,
            Err(e) if e.error_code() == Some(ErrorCode::NothingToRefund) => {
                return self
                    .say(
                        chat,
                        "You have no payment to refund: only the latest payment of a plan still running can be.",
                    )
                    .await
            }
            Err(e) => {
                log_failure(&self.bot_id, "could not ask what may be refunded", &e);
                return self.say(chat, &words::api_error(&e, Utc::now())).await;
            }
        };
        let charge = refundable.telegram_payment_charge_id.clone();
        match self
            .tg
            .refund_star_payment(user_id, TelegramTransactionId(charge.clone()))
            .await
        {
            Ok(_) => {}
            // Refunded before, and the scheduler not told: tell it now.
            Err(RequestError::Api(ApiError::Unknown(text)))
                if text.contains("CHARGE_ALREADY_REFUNDED") => {}
            Err(e) => {
                tracing::warn!(bot_id = %self.bot_id, error = %e, "Telegram refused a refund");
                return self
                    .say(
                        chat,
                        "Telegram couldn't refund the payment just now; nothing changed. Please try again later.",
                    )
                    .await;
            }
        }
        let body = StarsRefunded {
            user_ref: user.clone(),
            telegram_payment_charge_id: charge.clone(),
        };
        let mut pause = Duration::from_secs(1);
        let mut attempt = 1;
        let recorded = loop {
            match self.api.stars_refunded(&body).await {
                Err(e) if retry(&e) && attempt < RELAY_ATTEMPTS => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                other => break other,
            }
        };
        let text = match recorded {
            Ok(o) => format!(
                "Refunded {} ⭐. You're on {} now ({}).",
                refundable.amount,
                o.plan.name,
                tokens(&o.plan)
            ),
            Err(e) => {
                tracing::error!(bot_id = %self.bot_id, %user, %charge, error = %e, "a Stars refund could not be recorded");
                format!(
                    "Refunded {} ⭐, but your plan couldn't be updated yet. Please send this to support: {charge}",
                    refundable.amount
                )
            }
        };
        self.say(chat, &text).await;
    }
}

/// Whether a relay is worth another try: the scheduler unreachable or
/// failing on its side, not a refusal.
fn retry(e: &ClientError) -> bool {
    match e {
        ClientError::Api { .. } => e.error_code().is_none_or(|c| c.is_server_side()),
        _ => true,
    }
}

fn unavailable() -> String {
    "Payments can't be checked right now, so you have not been charged. Please try again in a few minutes.".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_for_this_bot_only() {
        let me = Some("tessera_bot");
        assert_eq!(parse("/subscribe", me), Some(StarsCommand::Subscribe(None)));
        assert_eq!(
            parse("/subscribe@Tessera_Bot STARTER", me),
            Some(StarsCommand::Subscribe(Some("starter".into())))
        );
        assert_eq!(parse("/refund", me), Some(StarsCommand::Refund));
        assert_eq!(parse("/subscribe@other_bot", me), None);
        assert_eq!(parse("/imagine a fox", me), None);
        assert_eq!(parse("subscribe", me), None);
        assert_eq!(parse("/", me), None);
    }
}
