//! localstripe, the Stripe emulator the payment tests run against, does what
//! the Stripe channel will rely on: a subscription is paid at once, its
//! events reach a registered webhook, and each delivery's `Stripe-Signature`
//! verifies under Stripe's scheme (HMAC-SHA256 over `t.payload`), checked
//! here by hand rather than by any code under test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use tessera_testkit::localstripe::LocalStripe;

const SECRET: &str = "whsec_tessera_test_secret";

/// One webhook POST as it arrived.
#[derive(Clone)]
struct Delivery {
    signature: Option<String>,
    content_type: Option<String>,
    body: Bytes,
}

type Received = Arc<Mutex<Vec<Delivery>>>;

async fn receive(
    State(received): State<Received>,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    received.lock().unwrap().push(Delivery {
        signature: header("stripe-signature"),
        content_type: header("content-type"),
        body,
    });
    "ok"
}

/// A loopback receiver; its URL and what it got.
async fn receiver() -> (String, Received, tokio::task::JoinHandle<()>) {
    let received = Received::default();
    let app = Router::new()
        .route("/stripe", post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stripe", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, received, server)
}

/// The event types received so far, in order.
fn types(received: &Received) -> Vec<String> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter_map(|d| serde_json::from_slice::<Value>(&d.body).ok())
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect()
}

async fn wait_for(received: &Received, kind: &str) -> Delivery {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = received
            .lock()
            .unwrap()
            .iter()
            .find(|d| serde_json::from_slice::<Value>(&d.body).is_ok_and(|e| e["type"] == kind))
            .cloned();
        if let Some(delivery) = found {
            return delivery;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {kind} webhook within 20 s; received {:?}",
            types(received)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stripe's check: `t=<ts>,v1=<hex>` where the hex is HMAC-SHA256 of
/// `<ts>.<payload>` under the secret; the timestamp when one `v1` matches.
fn verify(header: &str, payload: &[u8], secret: &str) -> Option<i64> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.push(hex::decode(v).ok()?),
            _ => {}
        }
    }
    let timestamp = timestamp?;
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(payload);
    let matches = signatures.iter().any(|signature| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&signed);
        mac.verify_slice(signature).is_ok()
    });
    matches.then_some(timestamp)
}

#[tokio::test]
async fn a_subscription_reaches_the_webhook_signed_as_stripe_signs() {
    let stripe = tokio::task::spawn_blocking(LocalStripe::start)
        .await
        .unwrap();
    let (url, received, _server) = receiver().await;
    stripe
        .register_webhook("tessera", &url, SECRET, None)
        .await
        .unwrap();

    stripe
        .post(
            "plans",
            &[
                ("id", "starter-monthly"),
                ("amount", "500"),
                ("currency", "usd"),
                ("interval", "month"),
                ("product[name]", "STARTER"),
            ],
        )
        .await
        .unwrap();
    let customer = stripe.paying_customer("ada@example.com").await.unwrap();
    let subscription = stripe
        .post(
            "subscriptions",
            &[
                ("customer", &customer),
                ("items[0][plan]", "starter-monthly"),
                ("metadata[tessera_user]", "u-42"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(subscription["status"], "active", "{subscription}");
    let period = subscription["current_period_end"].as_i64().unwrap()
        - subscription["current_period_start"].as_i64().unwrap();
    assert!(
        (28 * 86_400..=31 * 86_400).contains(&period),
        "a month: {period} s"
    );

    let delivery = wait_for(&received, "customer.subscription.created").await;
    assert_eq!(
        delivery.content_type.as_deref(),
        Some("application/json; charset=utf-8")
    );
    let header = delivery
        .signature
        .clone()
        .expect("a Stripe-Signature header");
    let event: Value = serde_json::from_slice(&delivery.body).unwrap();
    let timestamp = verify(&header, &delivery.body, SECRET)
        .unwrap_or_else(|| panic!("{header} does not verify over the body"));
    assert_eq!(Some(timestamp), event["created"].as_i64());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - timestamp).abs() < 300, "within Stripe's tolerance");
    // What a forger without the secret, or with a changed body, cannot do.
    assert_eq!(verify(&header, &delivery.body, "whsec_wrong"), None);
    let mut changed = delivery.body.to_vec();
    changed.extend_from_slice(b" ");
    assert_eq!(verify(&header, &changed, SECRET), None);
    let object = &event["data"]["object"];
    assert_eq!(object["id"], subscription["id"]);
    assert_eq!(object["customer"], customer.as_str());
    assert_eq!(object["metadata"]["tessera_user"], "u-42");
    assert_eq!(object["items"]["data"][0]["plan"]["id"], "starter-monthly");

    // The first invoice was paid from the card, and says so.
    let paid = wait_for(&received, "invoice.payment_succeeded").await;
    let invoice: Value = serde_json::from_slice(&paid.body).unwrap();
    assert!(verify(paid.signature.as_deref().unwrap(), &paid.body, SECRET).is_some());
    let invoice = &invoice["data"]["object"];
    assert_eq!(invoice["subscription"], subscription["id"]);
    assert_eq!(invoice["amount_paid"], 500, "{invoice}");
    assert_eq!(invoice["status"], "paid");

    // A refund shows on the charge (localstripe sends no charge.refunded).
    let intent = invoice["payment_intent"]
        .as_str()
        .expect("the invoice's payment intent");
    let refund = stripe
        .post("refunds", &[("payment_intent", intent)])
        .await
        .unwrap();
    assert_eq!(refund["amount"], 500, "{refund}");
    let charges = stripe
        .get(&format!("charges?customer={customer}"))
        .await
        .unwrap();
    assert_eq!(charges["data"][0]["refunded"], true, "{charges}");
    assert_eq!(charges["data"][0]["amount_refunded"], 500);

    // Cancelling ends it at once and is announced.
    let id = subscription["id"].as_str().unwrap();
    let ended = stripe.delete(&format!("subscriptions/{id}")).await.unwrap();
    assert_eq!(ended["status"], "canceled");
    let deleted = wait_for(&received, "customer.subscription.deleted").await;
    assert!(verify(deleted.signature.as_deref().unwrap(), &deleted.body, SECRET).is_some());

    // Every delivery was signed, and every one verifies.
    for delivery in received.lock().unwrap().iter() {
        let header = delivery.signature.as_deref().expect("signed");
        assert!(verify(header, &delivery.body, SECRET).is_some());
    }
}

#[tokio::test]
async fn refusals_come_in_stripes_envelope() {
    let stripe = tokio::task::spawn_blocking(LocalStripe::start)
        .await
        .unwrap();
    let missing = stripe.get("customers/cus_nobody").await.unwrap_err();
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["error"]["type"], "invalid_request_error");
    let bad = stripe
        .post("subscriptions", &[("customer", "cus_nobody")])
        .await
        .unwrap_err();
    assert_eq!(bad.status, 400, "{bad}");
    // A webhook needs a URL and a secret.
    let refused = stripe
        .register_webhook("nothing", "not a url", SECRET, None)
        .await
        .unwrap_err();
    assert_eq!(refused.status, 400);
    // Checkout is the wrapper's: a session without a customer and a price
    // is refused in Stripe's envelope, as Stripe refuses it.
    let checkout = stripe
        .post("checkout/sessions", &[("mode", "subscription")])
        .await
        .unwrap_err();
    assert_eq!(checkout.status, 400, "{checkout}");
    assert_eq!(checkout.body["error"]["type"], "invalid_request_error");
    // What neither has is 404: prices (localstripe's plans stand for them).
    let prices = stripe.get("prices").await.unwrap_err();
    assert_eq!(prices.status, 404, "{prices}");
}
