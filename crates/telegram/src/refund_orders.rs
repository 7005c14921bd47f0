//! Refunds operators order (`tessera admin payments refund`) of Telegram
//! Stars payments. The scheduler decides them but holds no bot token, and
//! Telegram lets only the bot that took a payment refund it, so each bot
//! asks for its pending orders at start and every `refund_poll_secs`, calls
//! `refundStarPayment` for each, and reports: a refund made (or one
//! Telegram says was made already) through the refund relay, which records
//! it in the ledger once and ends the plan; a refusal with Telegram's error,
//! which the operator sees in `tessera admin payments refunds`. Telegram or
//! the scheduler out of reach leaves the order pending for the next poll.

use std::time::Duration;

use teloxide_core::errors::{ApiError, RequestError};
use teloxide_core::requests::Requester;
use teloxide_core::types::{ChatId, TelegramTransactionId, UserId};
use tokio_util::sync::CancellationToken;

use tessera_api::refunds::{StarsRefundFailure, StarsRefundOrder};
use tessera_api::stars::StarsRefunded;
use tessera_core::ErrorCode;

use crate::stars::Seller;

/// Asks for orders now and then every `every`, until `stop`.
pub async fn run(seller: Seller, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = poll_once(&seller) => {}
        }
    }
}

/// Carries out the bot's pending orders once.
pub async fn poll_once(seller: &Seller) {
    let orders = match seller.api.stars_refund_orders().await {
        Ok(o) => o.orders,
        Err(e) => {
            tracing::warn!(bot_id = %seller.bot_id, error = %e, "could not read the refund orders");
            return;
        }
    };
    for order in orders {
        carry_out(seller, &order).await;
    }
}

/// Telegram's own word for a refund that cannot be made, if it refused.
fn refusal(e: &RequestError) -> Option<String> {
    match e {
        RequestError::Api(ApiError::Unknown(text)) => Some(text.clone()),
        RequestError::Api(other) => Some(other.to_string()),
        _ => None,
    }
}

async fn carry_out(seller: &Seller, order: &StarsRefundOrder) {
    let Ok(user_id) = order.user_ref.platform_user_id().parse::<u64>() else {
        return report_failure(seller, order, "the order names no Telegram user id").await;
    };
    let charge = order.telegram_payment_charge_id.clone();
    match seller
        .tg
        .refund_star_payment(UserId(user_id), TelegramTransactionId(charge.clone()))
        .await
    {
        Ok(_) => {}
        // Refunded before (by /refund, say) and not yet reported: report it.
        Err(RequestError::Api(ApiError::Unknown(text)))
            if text.contains("CHARGE_ALREADY_REFUNDED") => {}
        Err(e) => match refusal(&e) {
            Some(why) => return report_failure(seller, order, &why).await,
            None => {
                tracing::warn!(bot_id = %seller.bot_id, order = order.order_id, error = %e, "could not reach Telegram for a refund; trying at the next poll");
                return;
            }
        },
    }
    let body = StarsRefunded {
        user_ref: order.user_ref.clone(),
        telegram_payment_charge_id: charge.clone(),
    };
    match seller.api.stars_refunded(&body).await {
        Ok(o) => {
            tracing::info!(bot_id = %seller.bot_id, order = order.order_id, %charge, "refund ordered by an operator made");
            let text = format!(
                "Your payment of {} ⭐ was refunded. You're on {} now.",
                order.amount, o.plan.name
            );
            // The user's private chat has the user's id.
            let chat = ChatId(i64::try_from(user_id).unwrap_or(i64::MAX));
            if let Err(e) = seller.tg.send_message(chat, text).await {
                tracing::warn!(bot_id = %seller.bot_id, error = %e, "could not tell the user of a refund");
            }
        }
        // Telegram refunded; the next poll finds the order still pending,
        // hears CHARGE_ALREADY_REFUNDED, and reports it again.
        Err(e) => {
            tracing::error!(bot_id = %seller.bot_id, order = order.order_id, %charge, error = %e, "a refund was made but could not be recorded yet")
        }
    }
}

async fn report_failure(seller: &Seller, order: &StarsRefundOrder, why: &str) {
    tracing::warn!(bot_id = %seller.bot_id, order = order.order_id, error = %why, "Telegram refused an ordered refund");
    let body = StarsRefundFailure {
        order_id: order.order_id,
        error: why.chars().take(500).collect(),
    };
    match seller.api.stars_refund_failed(&body).await {
        Ok(()) => {}
        // Done or failed meanwhile (another process of this bot).
        Err(e) if e.error_code() == Some(ErrorCode::RefundOrderNotFound) => {}
        Err(e) => {
            tracing::error!(bot_id = %seller.bot_id, order = order.order_id, error = %e, "could not report a refused refund")
        }
    }
}
