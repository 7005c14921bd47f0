//! The Telegram stand-in sells in Stars as the Bot API documents: Stars
//! invoices and subscription links, the pre-checkout query a bot must answer
//! within ten seconds, `successful_payment` (parsed here by teloxide, the
//! client Tessera's bots use), renewals, refunds and cancellations, with
//! Telegram's refusals.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};
use teloxide_core::payloads::GetUpdatesSetters;
use teloxide_core::requests::Requester;
use teloxide_core::types::{MessageKind as TgKind, Update, UpdateKind};
use teloxide_core::Bot;

use tessera_testkit::standins::telegram::{
    Checkout, MessageKind, SentInvoice, TelegramStandIn, SUBSCRIPTION_PERIOD,
};

const TOKEN: &str = "123456:AAH-standin-token";
const USER: i64 = 4242;

async fn standin() -> TelegramStandIn {
    let tg = TelegramStandIn::start().await;
    tg.add_bot(TOKEN, "tessera_test_bot");
    tg.open_chat(TOKEN, USER);
    tg
}

fn bot(tg: &TelegramStandIn) -> Bot {
    Bot::new(TOKEN).set_api_url(tg.api_url().parse().unwrap())
}

async fn raw(tg: &TelegramStandIn, method: &str, body: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(tg.method_url(TOKEN, method))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

fn stars_invoice(payload: &str, amount: i64) -> Value {
    json!({
        "chat_id": USER,
        "title": "STARTER",
        "description": "STARTER for 30 days",
        "payload": payload,
        "provider_token": "",
        "currency": "XTR",
        "prices": [{ "label": "STARTER", "amount": amount }],
    })
}

/// The next update, parsed by teloxide, confirming it.
async fn next_update(bot: &Bot, offset: &mut i32) -> Update {
    let updates = bot
        .get_updates()
        .offset(*offset)
        .timeout(10)
        .await
        .expect("getUpdates");
    let update = updates.into_iter().next().expect("an update within 10 s");
    *offset = update.id.0 as i32 + 1;
    update
}

/// A bot that answers the next pre-checkout query with `ok` (and this
/// error message when not ok); the query it got.
async fn answer_next_query(tg: &TelegramStandIn, ok: bool, offset: &mut i32) -> Value {
    let update = next_update(&bot(tg), offset).await;
    let UpdateKind::PreCheckoutQuery(query) = update.kind else {
        panic!("expected a pre_checkout_query, got {:?}", update.kind);
    };
    let mut body = json!({ "pre_checkout_query_id": query.id.0, "ok": ok });
    if !ok {
        body["error_message"] = json!("This plan is not for sale today.");
    }
    let (status, answer) = raw(tg, "answerPreCheckoutQuery", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    json!({
        "id": query.id.0,
        "from": query.from.id.0,
        "currency": query.currency,
        "total_amount": query.total_amount,
        "invoice_payload": query.invoice_payload,
    })
}

/// The `successful_payment` of the next update, through teloxide.
async fn next_payment(
    tg: &TelegramStandIn,
    offset: &mut i32,
) -> teloxide_core::types::SuccessfulPayment {
    let update = next_update(&bot(tg), offset).await;
    let UpdateKind::Message(message) = update.kind else {
        panic!("expected a message, got {:?}", update.kind);
    };
    assert_eq!(message.chat.id.0, USER);
    assert_eq!(message.from.as_ref().map(|u| u.id.0), Some(USER as u64));
    match message.kind {
        TgKind::SuccessfulPayment(p) => p.successful_payment,
        other => panic!("expected successful_payment, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stars_purchase_is_answered_paid_and_refunded_once() {
    let tg = standin().await;
    let (status, sent) = raw(&tg, "sendInvoice", stars_invoice("plan:starter:u1", 250)).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let invoice = &sent["result"]["invoice"];
    assert_eq!(invoice["currency"], "XTR");
    assert_eq!(invoice["total_amount"], 250);
    assert_eq!(invoice["title"], "STARTER");
    let sent_invoice = tg.invoices(TOKEN).pop().expect("the invoice is recorded");
    assert_eq!(sent_invoice.chat_id, Some(USER));
    assert_eq!(sent_invoice.payload, "plan:starter:u1");
    assert_eq!(sent_invoice.subscription_period, None);
    assert!(tg
        .sent(TOKEN)
        .iter()
        .any(|m| m.kind == MessageKind::Invoice && m.chat_id == USER));

    let mut offset = 0;
    let (checkout, query) = tokio::join!(
        tg.user_pays(TOKEN, USER, &sent_invoice, Duration::from_secs(10)),
        answer_next_query(&tg, true, &mut offset),
    );
    assert_eq!(query["from"], USER);
    assert_eq!(query["currency"], "XTR");
    assert_eq!(query["total_amount"], 250);
    assert_eq!(query["invoice_payload"], "plan:starter:u1");
    let Checkout::Paid(payment) = checkout else {
        panic!("expected a payment, got {checkout:?}");
    };
    let announced = next_payment(&tg, &mut offset).await;
    assert_eq!(announced.currency, "XTR");
    assert_eq!(announced.total_amount, 250);
    assert_eq!(announced.invoice_payload, "plan:starter:u1");
    assert_eq!(
        announced.telegram_payment_charge_id.0,
        payment.telegram_payment_charge_id
    );
    assert!(!announced.is_recurring);
    assert_eq!(announced.subscription_expiration_date, None);
    assert_eq!(tg.star_payments(TOKEN), vec![payment.clone()]);

    // Refunds: once, for the user who paid; then Telegram's refusals.
    let charge = payment.telegram_payment_charge_id.clone();
    let refund = json!({ "user_id": USER, "telegram_payment_charge_id": charge });
    let (status, body) = raw(&tg, "refundStarPayment", refund.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], true);
    let (status, body) = raw(&tg, "refundStarPayment", refund).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["description"], "Bad Request: CHARGE_ALREADY_REFUNDED");
    let (status, body) = raw(
        &tg,
        "refundStarPayment",
        json!({ "user_id": USER, "telegram_payment_charge_id": "stxNoSuchCharge" }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["description"], "Bad Request: CHARGE_NOT_FOUND");
    let (status, body) = raw(
        &tg,
        "refundStarPayment",
        json!({ "user_id": USER + 1, "telegram_payment_charge_id": charge }),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "another user's charge: {body}"
    );
    let refunds = tg.star_refunds(TOKEN);
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].telegram_payment_charge_id, charge);
    assert_eq!(refunds[0].total_amount, 250);
    assert!(tg.star_payments(TOKEN)[0].refunded);

    // The bot hears of the refund as a refunded_payment message.
    let update = next_update(&bot(&tg), &mut offset).await;
    let UpdateKind::Message(message) = update.kind else {
        panic!("expected a message, got {:?}", update.kind);
    };
    let TgKind::RefundedPayment(refunded) = message.kind else {
        panic!("expected refunded_payment, got {:?}", message.kind);
    };
    assert_eq!(
        refunded.refunded_payment.telegram_payment_charge_id.0,
        charge
    );
    assert_eq!(refunded.refunded_payment.total_amount, 250);
}

#[tokio::test]
async fn a_subscription_link_renews_until_cancelled() {
    let tg = standin().await;
    let mut link = stars_invoice("plan:starter:u1", 250);
    link.as_object_mut().unwrap().remove("chat_id");
    link["subscription_period"] = json!(SUBSCRIPTION_PERIOD);
    let (status, body) = raw(&tg, "createInvoiceLink", link.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let url = body["result"].as_str().unwrap();
    assert!(url.starts_with("https://t.me/$"), "{url}");
    let invoice: SentInvoice = tg.invoices(TOKEN).pop().unwrap();
    assert_eq!(invoice.link.as_deref(), Some(url));
    assert_eq!(invoice.subscription_period, Some(SUBSCRIPTION_PERIOD));

    // The only period the Bot API takes is 30 days.
    link["subscription_period"] = json!(86_400);
    let (status, body) = raw(&tg, "createInvoiceLink", link).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let mut offset = 0;
    let (checkout, _) = tokio::join!(
        tg.user_pays(TOKEN, USER, &invoice, Duration::from_secs(10)),
        answer_next_query(&tg, true, &mut offset),
    );
    let Checkout::Paid(first) = checkout else {
        panic!("expected a payment, got {checkout:?}");
    };
    let announced = next_payment(&tg, &mut offset).await;
    assert!(announced.is_recurring && announced.is_first_recurring);
    let expires = first.subscription_expiration_date.expect("an expiration");
    let now = chrono::Utc::now().timestamp();
    assert!((expires - now - SUBSCRIPTION_PERIOD).abs() < 60);
    assert_eq!(
        announced
            .subscription_expiration_date
            .map(|d| d.timestamp()),
        Some(expires)
    );

    // Telegram renews without asking the bot first.
    let renewal = tg
        .renew(TOKEN, &first.telegram_payment_charge_id)
        .expect("a renewal");
    assert_ne!(
        renewal.telegram_payment_charge_id,
        first.telegram_payment_charge_id
    );
    assert_eq!(
        renewal.subscription_expiration_date,
        Some(expires + SUBSCRIPTION_PERIOD)
    );
    let announced = next_payment(&tg, &mut offset).await;
    assert!(announced.is_recurring);
    assert!(!announced.is_first_recurring);
    assert_eq!(
        announced.telegram_payment_charge_id.0,
        renewal.telegram_payment_charge_id
    );

    // The bot cancels it: no more renewals.
    let (status, body) = raw(
        &tg,
        "editUserStarSubscription",
        json!({
            "user_id": USER,
            "telegram_payment_charge_id": first.telegram_payment_charge_id,
            "is_canceled": true,
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(tg.renew(TOKEN, &renewal.telegram_payment_charge_id), None);
    assert_eq!(tg.star_payments(TOKEN).len(), 2);
}

#[tokio::test]
async fn a_declined_or_unanswered_checkout_charges_nothing() {
    let tg = standin().await;
    raw(&tg, "sendInvoice", stars_invoice("plan:pro:u1", 600)).await;
    let invoice = tg.invoices(TOKEN).pop().unwrap();
    let mut offset = 0;
    let (checkout, _) = tokio::join!(
        tg.user_pays(TOKEN, USER, &invoice, Duration::from_secs(10)),
        answer_next_query(&tg, false, &mut offset),
    );
    assert_eq!(
        checkout,
        Checkout::Declined("This plan is not for sale today.".into())
    );

    // No answer in time: the payment fails, and a late answer is refused.
    let checkout = tg
        .user_pays(TOKEN, USER, &invoice, Duration::from_millis(300))
        .await;
    assert_eq!(checkout, Checkout::TimedOut);
    let update = next_update(&bot(&tg), &mut offset).await;
    let UpdateKind::PreCheckoutQuery(query) = update.kind else {
        panic!("expected a pre_checkout_query");
    };
    let (status, body) = raw(
        &tg,
        "answerPreCheckoutQuery",
        json!({ "pre_checkout_query_id": query.id.0, "ok": true }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["description"],
        "Bad Request: query is too old and response timeout expired or query ID is invalid"
    );
    // Saying no needs a reason.
    let (status, _) = raw(
        &tg,
        "answerPreCheckoutQuery",
        json!({ "pre_checkout_query_id": "whatever", "ok": false }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(tg.star_payments(TOKEN).is_empty());
    let (_, rest) = raw(&tg, "getUpdates", json!({ "offset": offset, "timeout": 0 })).await;
    assert_eq!(rest["result"], json!([]), "no payment message followed");
}

#[tokio::test]
async fn stars_invoices_are_checked() {
    let tg = standin().await;
    let refused = |mut body: Value, change: &dyn Fn(&mut Value)| {
        change(&mut body);
        body
    };
    for body in [
        refused(stars_invoice("p", 250), &|b| b["currency"] = json!("USD")),
        refused(stars_invoice("p", 250), &|b| {
            b["provider_token"] = json!("284685063:TEST:abc")
        }),
        refused(
            stars_invoice("p", 250),
            &|b| {
                b["prices"] = json!([{ "label": "a", "amount": 1 }, { "label": "b", "amount": 2 }])
            },
        ),
        refused(stars_invoice("p", 0), &|_| {}),
        refused(stars_invoice("", 250), &|_| {}),
        refused(stars_invoice("p", 250), &|b| b["title"] = json!("")),
    ] {
        let (status, answer) = raw(&tg, "sendInvoice", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        assert_eq!(answer["ok"], false);
    }
    let (status, _) = raw(&tg, "sendInvoice", stars_invoice("p", 250)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tg.invoices(TOKEN).len(), 1);
    let (status, body) = raw(
        &tg,
        "sendInvoice",
        json!({ "chat_id": 999, "title": "t", "description": "d", "payload": "p",
                "currency": "XTR", "prices": [{ "label": "x", "amount": 1 }] }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["description"], "Bad Request: chat not found");
}
