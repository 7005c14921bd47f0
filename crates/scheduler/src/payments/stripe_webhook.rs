//! Stripe's webhooks: the signature that proves Stripe sent them, and what
//! each event means for the ledger. Stripe signs `{t}.{raw body}` with
//! HMAC-SHA256 under the endpoint's secret and sends `Stripe-Signature:
//! t=...,v1=...[,v1=...]` (several `v1` while a secret is rolled); any one
//! matching, compared in constant time, within the tolerance, is Stripe.
//!
//! Events name a customer, which [`crate::store::StripeCustomers`] turns
//! into the user; a customer it does not know gives an event with no user,
//! which the ledger keeps as `unknown_user`. The ledger's event id is
//! Stripe's, so a redelivery changes nothing.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use tessera_core::{Millis, PaymentKind, PaymentProvider};

use super::stripe::{Stripe, StripeError};
use crate::store::NewPaymentEvent;

/// Why a webhook's signature was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// No `Stripe-Signature`, no `t=` or no `v1=` in it.
    Missing,
    /// No `v1` signature matches the body.
    Invalid,
    /// Signed longer ago (or further ahead) than the tolerance.
    Stale { age_secs: i64 },
}

/// Checks `header` (`Stripe-Signature`) against `body` at `now_secs`.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secret: &str,
    tolerance_secs: u64,
    now_secs: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Missing)?;
    if signatures.is_empty() {
        return Err(SignatureError::Missing);
    }
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    // Every candidate is compared, in constant time (`verify_slice`).
    let matched = signatures
        .iter()
        .fold(false, |ok, sig| mac.clone().verify_slice(sig).is_ok() | ok);
    if !matched {
        return Err(SignatureError::Invalid);
    }
    let age = now_secs - t;
    if age.unsigned_abs() > tolerance_secs {
        return Err(SignatureError::Stale { age_secs: age });
    }
    Ok(())
}

/// What an event asks of the ledger once resolved.
#[derive(Debug)]
pub enum Mapped {
    /// An event to record, and the customer it names (for the user).
    Event {
        event: NewPaymentEvent,
        customer: Option<String>,
    },
    /// A type or state the channel does not act on (answered 200).
    Ignored(String),
}

/// Why an event could not be turned into a ledger event.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("the event is not a Stripe event: {0}")]
    Malformed(String),
    #[error(transparent)]
    Stripe(#[from] StripeError),
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v[key].as_str().filter(|s| !s.is_empty())
}

/// An id field that may be expanded into its object.
fn id<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    s(v, key).or_else(|| v[key]["id"].as_str())
}

fn ms(secs: Option<i64>) -> Option<Millis> {
    secs.map(|s| s.saturating_mul(1000))
}

/// The subscription an invoice pays for, in old and new API versions.
fn invoice_subscription(invoice: &Value) -> Option<String> {
    id(invoice, "subscription")
        .or_else(|| s(&invoice["parent"]["subscription_details"], "subscription"))
        .map(str::to_owned)
}

/// The price of a subscription item or invoice line (a price, or the plan
/// older API versions and localstripe name).
fn price_of(item: &Value) -> Option<&str> {
    id(item, "price")
        .or_else(|| s(&item["pricing"]["price_details"], "price"))
        .or_else(|| id(item, "plan"))
}

/// The plan a price sells: the configured one, or the price id itself, which
/// names no plan, so the ledger keeps the event as `unknown_plan`.
fn plan(stripe: &Stripe, price: Option<&str>) -> Option<String> {
    price.map(|p| stripe.plan_of_price(p).unwrap_or(p).to_owned())
}

/// A subscription's plan and current period.
fn subscription_terms(stripe: &Stripe, sub: &Value) -> (Option<String>, Option<(Millis, Millis)>) {
    let item = &sub["items"]["data"][0];
    let start = sub["current_period_start"]
        .as_i64()
        .or_else(|| item["current_period_start"].as_i64());
    let end = sub["current_period_end"]
        .as_i64()
        .or_else(|| item["current_period_end"].as_i64());
    let period = ms(start).zip(ms(end));
    (plan(stripe, price_of(item)), period)
}

/// Turns a verified event into what the ledger records, asking Stripe for
/// what the event does not carry.
pub async fn map_event(stripe: &Stripe, event: &Value) -> Result<Mapped, MapError> {
    let event_id = s(event, "id").ok_or_else(|| MapError::Malformed("no id".into()))?;
    let kind = s(event, "type").ok_or_else(|| MapError::Malformed("no type".into()))?;
    let created = event["created"]
        .as_i64()
        .ok_or_else(|| MapError::Malformed("no created time".into()))?;
    let object = &event["data"]["object"];
    if !object.is_object() {
        return Err(MapError::Malformed("no data.object".into()));
    }
    let base = |kind: PaymentKind, reference: Option<String>| NewPaymentEvent {
        provider: PaymentProvider::Stripe,
        event_id: event_id.to_owned(),
        kind,
        user_ref: None,
        plan_id: None,
        amount_minor: 0,
        currency: None,
        period: None,
        reference,
        occurred_at: created.saturating_mul(1000),
    };
    let mapped = |event: NewPaymentEvent, customer: Option<&str>| Mapped::Event {
        event,
        customer: customer.map(str::to_owned),
    };
    Ok(match kind {
        "checkout.session.completed" => {
            let Some(sub) = id(object, "subscription") else {
                return Ok(Mapped::Ignored(
                    "a Checkout session with no subscription".into(),
                ));
            };
            let subscription = stripe.client.get(&format!("subscriptions/{sub}")).await?;
            let (plan_id, period) = subscription_terms(stripe, &subscription);
            // The money is the first invoice's (invoice.paid); counting it
            // here too would count it twice.
            let event = NewPaymentEvent {
                plan_id,
                period,
                ..base(PaymentKind::Purchase, Some(sub.to_owned()))
            };
            mapped(event, id(object, "customer"))
        }
        "invoice.paid" | "invoice.payment_succeeded" => {
            let Some(sub) = invoice_subscription(object) else {
                return Ok(Mapped::Ignored("an invoice of no subscription".into()));
            };
            let lines = object["lines"]["data"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let line = lines
                .iter()
                .find(|l| s(l, "type") == Some("subscription"))
                .or(lines.first());
            let period = line.and_then(|l| {
                ms(l["period"]["start"].as_i64()).zip(ms(l["period"]["end"].as_i64()))
            });
            let kind = if s(object, "billing_reason") == Some("subscription_create") {
                PaymentKind::Purchase
            } else {
                PaymentKind::Renewal
            };
            let event = NewPaymentEvent {
                plan_id: plan(stripe, line.and_then(price_of)),
                period,
                amount_minor: object["amount_paid"].as_i64().unwrap_or(0).max(0),
                currency: s(object, "currency").map(str::to_owned),
                ..base(kind, Some(sub))
            };
            mapped(event, id(object, "customer"))
        }
        "customer.subscription.updated" => {
            let sub = id(object, "id").map(str::to_owned);
            match s(object, "status") {
                Some("active" | "trialing" | "past_due") => {
                    let (plan_id, period) = subscription_terms(stripe, object);
                    let event = NewPaymentEvent {
                        plan_id,
                        period,
                        ..base(PaymentKind::Update, sub)
                    };
                    mapped(event, id(object, "customer"))
                }
                Some("canceled" | "unpaid" | "incomplete_expired") => {
                    mapped(base(PaymentKind::Cancel, sub), id(object, "customer"))
                }
                other => Mapped::Ignored(format!(
                    "a subscription update with status {}",
                    other.unwrap_or("none")
                )),
            }
        }
        "customer.subscription.deleted" => {
            let sub = id(object, "id").map(str::to_owned);
            mapped(base(PaymentKind::Cancel, sub), id(object, "customer"))
        }
        "charge.refunded" => {
            let sub = charge_subscription(stripe, object).await?;
            let event = NewPaymentEvent {
                amount_minor: object["amount_refunded"].as_i64().unwrap_or(0).max(0),
                currency: s(object, "currency").map(str::to_owned),
                ..base(PaymentKind::Refund, sub)
            };
            mapped(event, id(object, "customer"))
        }
        "charge.dispute.created" => {
            let Some(charge_id) = id(object, "charge") else {
                return Err(MapError::Malformed("a dispute names no charge".into()));
            };
            let charge = if object["charge"].is_object() {
                object["charge"].clone()
            } else {
                stripe.client.get(&format!("charges/{charge_id}")).await?
            };
            let sub = charge_subscription(stripe, &charge).await?;
            let event = NewPaymentEvent {
                amount_minor: object["amount"].as_i64().unwrap_or(0).max(0),
                currency: s(object, "currency").map(str::to_owned),
                ..base(PaymentKind::Chargeback, sub)
            };
            mapped(event, id(&charge, "customer"))
        }
        other => Mapped::Ignored(format!("events of type {other}")),
    })
}

/// The subscription a charge paid for, through its invoice (fetched from
/// Stripe when the charge names only its id); the charge itself when it paid
/// no invoice, which then names no grant.
async fn charge_subscription(stripe: &Stripe, charge: &Value) -> Result<Option<String>, MapError> {
    let sub = match &charge["invoice"] {
        Value::String(invoice) if !invoice.is_empty() => {
            let invoice = stripe.client.get(&format!("invoices/{invoice}")).await?;
            invoice_subscription(&invoice)
        }
        invoice @ Value::Object(_) => invoice_subscription(invoice),
        _ => None,
    };
    Ok(sub.or_else(|| id(charge, "id").map(str::to_owned)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    const SECRET: &str = "whsec_0123456789abcdef";
    const BODY: &[u8] = br#"{"id":"evt_1"}"#;

    #[test]
    fn a_signature_verifies_once_among_several() {
        let now = 1_800_000_000;
        let good = sign(SECRET, now, BODY);
        let other = sign("whsec_old_secret_rolled", now, BODY);
        let header = format!("t={now},v1={other},v1={good},v0=ignored");
        assert_eq!(verify(Some(&header), BODY, SECRET, 300, now + 10), Ok(()));
    }

    #[test]
    fn forged_stale_and_missing_signatures_are_refused() {
        let now = 1_800_000_000;
        let good = sign(SECRET, now, BODY);
        let forged = sign("whsec_someone_else_s_key", now, BODY);
        assert_eq!(
            verify(
                Some(&format!("t={now},v1={forged}")),
                BODY,
                SECRET,
                300,
                now
            ),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            verify(Some(&format!("t={now},v1={good}")), b"{}", SECRET, 300, now),
            Err(SignatureError::Invalid),
            "another body"
        );
        assert_eq!(
            verify(
                Some(&format!("t={now},v1={good}")),
                BODY,
                SECRET,
                300,
                now + 301
            ),
            Err(SignatureError::Stale { age_secs: 301 })
        );
        assert_eq!(
            verify(None, BODY, SECRET, 300, now),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(Some(&format!("v1={good}")), BODY, SECRET, 300, now),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(Some(&format!("t={now},v1=zz")), BODY, SECRET, 300, now),
            Err(SignatureError::Missing)
        );
    }
}
