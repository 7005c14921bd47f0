//! Refunding a Stripe payment an operator names. The ledger keeps Stripe's
//! event id for each invoice paid; the event (Stripe keeps events for 30
//! days) names the invoice, the invoice its charge or payment intent, and
//! `POST /v1/refunds` gives the money back. The scheduler records nothing
//! itself: Stripe's `charge.refunded` webhook, like any refund made in
//! Stripe's dashboard, is what puts the refund in the ledger, so the money
//! is never counted back twice.

use serde_json::Value;

use super::stripe::{Stripe, StripeError};
use crate::store::PaymentEventRecord;

/// What asking Stripe for a refund came to.
#[derive(Debug, PartialEq)]
pub enum StripeRefund {
    /// Stripe made the refund (`re_...`) of this charge or payment intent;
    /// its webhook follows.
    Requested { refund: String, paid_by: String },
    /// Stripe says the charge was refunded already.
    AlreadyRefunded { paid_by: String },
    /// Nothing Stripe can refund this way, and why.
    NotRefundable(String),
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v[key].as_str().filter(|s| !s.is_empty())
}

/// An id field that may be expanded into its object.
fn id<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    s(v, key).or_else(|| s(&v[key], "id"))
}

/// What paid an invoice, as `POST /v1/refunds` names it: `("charge", ch_)`
/// or `("payment_intent", pi_)`, in the older and the 2025 API shapes.
fn paid_by(invoice: &Value) -> Option<(&'static str, String)> {
    let payment = &invoice["payments"]["data"][0]["payment"];
    id(invoice, "charge")
        .or_else(|| id(payment, "charge"))
        .map(|c| ("charge", c.to_owned()))
        .or_else(|| {
            id(invoice, "payment_intent")
                .or_else(|| id(payment, "payment_intent"))
                .map(|p| ("payment_intent", p.to_owned()))
        })
}

/// Has Stripe refund the invoice a ledger payment recorded.
pub async fn refund_stripe(
    stripe: &Stripe,
    payment: &PaymentEventRecord,
) -> Result<StripeRefund, StripeError> {
    let event = match stripe
        .client
        .get(&format!("events/{}", payment.event_id))
        .await
    {
        Ok(event) => event,
        Err(StripeError::Refused { status: 404, .. }) => {
            return Ok(StripeRefund::NotRefundable(format!(
                "Stripe no longer has event {} (it keeps events 30 days): refund the charge in \
                 Stripe's dashboard, and its charge.refunded webhook records the refund here",
                payment.event_id
            )))
        }
        Err(e) => return Err(e),
    };
    let object = &event["data"]["object"];
    let Some(invoice_id) = (s(object, "object") == Some("invoice"))
        .then(|| s(object, "id"))
        .flatten()
    else {
        return Ok(StripeRefund::NotRefundable(format!(
            "Stripe event {} is no invoice paid; refund the invoice's event",
            payment.event_id
        )));
    };
    let invoice = stripe.client.get(&format!("invoices/{invoice_id}")).await?;
    let Some((field, paid)) = paid_by(&invoice) else {
        return Ok(StripeRefund::NotRefundable(format!(
            "Stripe's invoice {invoice_id} names no charge to refund"
        )));
    };
    if field == "charge" {
        let charge = match &invoice["charge"] {
            c @ Value::Object(_) => c.clone(),
            _ => stripe.client.get(&format!("charges/{paid}")).await?,
        };
        if charge["refunded"].as_bool() == Some(true) {
            return Ok(StripeRefund::AlreadyRefunded { paid_by: paid });
        }
    }
    let payment_id = payment.id.to_string();
    let form = [
        (field, paid.as_str()),
        ("metadata[tessera_payment_id]", payment_id.as_str()),
    ];
    let key = format!("tessera-refund-{}", payment.id);
    match stripe.client.create_refund(&form, &key).await {
        Ok(refund) => Ok(StripeRefund::Requested {
            refund: s(&refund, "id").unwrap_or("?").to_owned(),
            paid_by: paid,
        }),
        // Stripe's `charge_already_refunded`.
        Err(StripeError::Refused {
            status: 400,
            message,
        }) if message.contains("already been refunded") => {
            Ok(StripeRefund::AlreadyRefunded { paid_by: paid })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn what_paid_an_invoice_is_read_in_both_api_shapes() {
        assert_eq!(
            paid_by(&json!({"charge": "ch_1", "payment_intent": "pi_1"})),
            Some(("charge", "ch_1".into()))
        );
        assert_eq!(
            paid_by(&json!({"charge": {"id": "ch_2"}})),
            Some(("charge", "ch_2".into()))
        );
        assert_eq!(
            paid_by(&json!({"charge": null, "payment_intent": "pi_3"})),
            Some(("payment_intent", "pi_3".into()))
        );
        assert_eq!(
            paid_by(
                &json!({"payments": {"data": [{"payment": {"type": "payment_intent", "payment_intent": "pi_4"}}]}})
            ),
            Some(("payment_intent", "pi_4".into()))
        );
        assert_eq!(paid_by(&json!({"charge": ""})), None);
    }
}
