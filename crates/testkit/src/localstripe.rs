//! localstripe, a third-party stateful Stripe emulator, on loopback, so the
//! Stripe payment channel is tested against a Stripe that someone else wrote
//! rather than only against a stand-in of our own.
//!
//! `scripts/test` installs localstripe (pinned in `py/requirements.txt`) in
//! the engines' virtualenv; [`LocalStripe::start`] runs it through
//! `py/localstripe_server.py`, which serves localstripe's own application on
//! `127.0.0.1` and a free port, keeps its objects in memory (localstripe's
//! command keeps them in one `/tmp/localstripe.pickle` for every instance on
//! the machine), and prints its address once an authenticated request
//! succeeds. Dropping the value kills the process. Point a Stripe client's
//! API base at [`LocalStripe::url`] with any secret key that starts `sk_`
//! ([`API_KEY`]); requests are form-encoded (`items[0][plan]=...`) or JSON.
//!
//! What localstripe 1.15.10 does, read from its source, for whoever builds
//! on it:
//!
//! - **Objects.** Products, plans (`POST /v1/plans` with `id`, `amount`,
//!   `currency`, `interval`, `product[name]`), prices are absent (plans
//!   stand for them), customers (`payment_method` and
//!   `invoice_settings[default_payment_method]` on create), payment methods
//!   (`type=card`, `card[number|exp_month|exp_year|cvc]`; `4242424242424242`
//!   pays, `4000000000000341` attaches and is declined when charged,
//!   `4000000000000002` is declined on attach), sources and tokens, setup
//!   and payment intents, charges, refunds, invoices, invoice items,
//!   coupons, tax rates, tax ids, balance transactions, payouts, events
//!   (`GET /v1/events`, `GET /v1/events/{id}`, filter by `type`).
//! - **Subscriptions.** `POST /v1/subscriptions` with `customer` and one
//!   item (`items[0][plan]`; more than one item answers 500 "Not
//!   implemented") makes and pays the first invoice at once from the
//!   customer's default payment method: `status` becomes `active`, or stays
//!   `incomplete` when the card is declined. `current_period_start` and
//!   `current_period_end` follow the plan's interval. Updates change the
//!   plan, `cancel_at_period_end` and `cancel_at`; `DELETE
//!   /v1/subscriptions/{id}` ends it at once (`status` `canceled`). Time
//!   does not pass: nothing renews by itself and there are no test clocks.
//!   A renewal is simulated by `POST /v1/invoices` (`customer`,
//!   `subscription`) and `POST /v1/invoices/{id}/pay`.
//! - **Refunds.** `POST /v1/refunds` with `charge` (or `payment_intent`)
//!   and an optional `amount`; the charge then shows `amount_refunded` and
//!   `refunded`. An invoice names its `payment_intent` (not its `charge`);
//!   `GET /v1/charges?customer=...` finds the charges. A second refund past the amount is not refused. No
//!   webhook is sent for a refund.
//! - **Webhooks.** `POST /_config/webhooks/{name}` with `url`, `secret`
//!   and optionally `events[]` (the types to send; all when absent)
//!   registers (or replaces) a webhook; [`LocalStripe::register_webhook`]
//!   does it. About a second after an event, localstripe POSTs it as JSON
//!   (`Content-Type: application/json; charset=utf-8`) to every webhook
//!   that wants it, once, never retried, with `Stripe-Signature:
//!   t=<created>,v1=<hex HMAC-SHA256 of "<created>.<body>" under the
//!   secret>`, Stripe's scheme (only `v1`, no `v0`). The event's
//!   `api_version` is `2017-08-15`. Event types sent: `product.created`,
//!   `plan.created`, `customer.created`, `customer.updated`,
//!   `customer.deleted`, `customer.source.created`,
//!   `customer.subscription.created`, `customer.subscription.deleted`,
//!   `invoice.created`, `invoice.payment_succeeded`,
//!   `invoice.payment_failed`, `payment_intent.succeeded`,
//!   `payment_intent.payment_failed`, `payout.*`, `balance.available`.
//! - **Not there.** Checkout sessions (`/v1/checkout/sessions`), the
//!   customer portal (`/v1/billing_portal/sessions`), prices, disputes, and
//!   the events `checkout.session.completed`, `invoice.paid`,
//!   `customer.subscription.updated`, `charge.refunded` and
//!   `charge.dispute.created`. Unknown routes answer 404.
//! - **Added by the wrapper**, beside localstripe's unchanged application,
//!   from its own objects and sent through its own (signing) webhook sender
//!   (the script's docstring says exactly how): Checkout sessions in
//!   subscription mode (`line_items[0][price]` names a localstripe plan)
//!   with a hosted page whose Pay button ([`LocalStripe::pay`]) attaches a
//!   test card, creates the subscription in localstripe and sends
//!   `invoice.paid` and `checkout.session.completed`; portal sessions whose
//!   page cancels a subscription ([`LocalStripe::cancel_in_portal`], which
//!   is localstripe's own delete and `customer.subscription.deleted`); and
//!   loopback test routes for a renewal's `invoice.paid`
//!   ([`LocalStripe::renew`]), a refund's `charge.refunded`
//!   ([`LocalStripe::refund`]) and a dispute's `charge.dispute.created`
//!   ([`LocalStripe::dispute`]). `customer.subscription.updated` is still
//!   never sent.
//! - **Errors** are Stripe's envelope, `{"error": {"type":
//!   "invalid_request_error", "message": ...}}`, with 400 for bad
//!   parameters ("Bad request", "Unexpected <name>"), 401 without a secret
//!   key, 402 for a declined card (`code` `card_declined`) and 404 for an
//!   unknown id.
//! - `DELETE /_config/data` forgets every object (webhooks stay).

use std::process::Command;

use serde_json::Value;

use crate::engines::{python, script, ServerProcess};

/// A secret key localstripe accepts (any key starting `sk_` does).
pub const API_KEY: &str = "sk_test_tessera";

/// localstripe on a loopback port; killed when dropped.
pub struct LocalStripe {
    url: String,
    http: reqwest::Client,
    process: ServerProcess,
}

/// A request localstripe refused, with its status and Stripe error body.
#[derive(Debug)]
pub struct StripeError {
    pub status: u16,
    pub body: Value,
}

impl std::fmt::Display for StripeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "localstripe answered {}: {}", self.status, self.body)
    }
}

impl std::error::Error for StripeError {}

impl LocalStripe {
    /// Starts localstripe; blocks until it answers an authenticated
    /// request (at most [`crate::engines::START_TIMEOUT`]).
    pub fn start() -> LocalStripe {
        let mut command = Command::new(python());
        command
            .arg(script("localstripe_server.py"))
            .arg("--watch-stdin");
        let (process, url) = ServerProcess::spawn("localstripe", command);
        LocalStripe {
            url,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("an HTTP client for localstripe"),
            process,
        }
    }

    /// Its base URL, `http://127.0.0.1:PORT` (the API is under `/v1`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Registers (or replaces) the webhook `name`: events go to `url`,
    /// signed with `secret`; only the types in `events`, when given.
    pub async fn register_webhook(
        &self,
        name: &str,
        url: &str,
        secret: &str,
        events: Option<&[&str]>,
    ) -> Result<(), StripeError> {
        let mut form = vec![("url".to_owned(), url.to_owned())];
        form.push(("secret".to_owned(), secret.to_owned()));
        for event in events.unwrap_or_default() {
            form.push(("events[]".to_owned(), (*event).to_owned()));
        }
        let answer = self
            .http
            .post(format!("{}/_config/webhooks/{name}", self.url))
            .form(&form)
            .send()
            .await
            .map_err(transport)?;
        let status = answer.status().as_u16();
        if (200..300).contains(&status) {
            Ok(())
        } else {
            let body = answer.json().await.unwrap_or(Value::Null);
            Err(StripeError { status, body })
        }
    }

    /// `POST /v1/{path}` with a form (`("items[0][plan]", "pro")`...),
    /// authenticated with [`API_KEY`]; the object it answers.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Result<Value, StripeError> {
        let request = self
            .http
            .post(format!("{}/v1/{path}", self.url))
            .bearer_auth(API_KEY)
            .form(form);
        answer(request).await
    }

    /// `GET /v1/{path}`, authenticated with [`API_KEY`].
    pub async fn get(&self, path: &str) -> Result<Value, StripeError> {
        answer(
            self.http
                .get(format!("{}/v1/{path}", self.url))
                .bearer_auth(API_KEY),
        )
        .await
    }

    /// `DELETE /v1/{path}`, authenticated with [`API_KEY`].
    pub async fn delete(&self, path: &str) -> Result<Value, StripeError> {
        answer(
            self.http
                .delete(format!("{}/v1/{path}", self.url))
                .bearer_auth(API_KEY),
        )
        .await
    }

    /// A customer whose default payment method is a card that pays
    /// (`4242 4242 4242 4242`); its id.
    pub async fn paying_customer(&self, email: &str) -> Result<String, StripeError> {
        let card = self
            .post(
                "payment_methods",
                &[
                    ("type", "card"),
                    ("card[number]", "4242424242424242"),
                    ("card[exp_month]", "12"),
                    ("card[exp_year]", "2040"),
                    ("card[cvc]", "123"),
                ],
            )
            .await?;
        let card = id_of(&card)?;
        let customer = self
            .post(
                "customers",
                &[
                    ("email", email),
                    ("payment_method", &card),
                    ("invoice_settings[default_payment_method]", &card),
                ],
            )
            .await?;
        id_of(&customer)
    }

    /// A monthly plan (localstripe's stand-in for a price) with this id,
    /// costing `amount` cents.
    pub async fn monthly_price(&self, id: &str, amount: u32) -> Result<(), StripeError> {
        let amount = amount.to_string();
        self.post(
            "plans",
            &[
                ("id", id),
                ("amount", &amount),
                ("currency", "usd"),
                ("interval", "month"),
                ("product[name]", id),
            ],
        )
        .await
        .map(drop)
    }

    /// Plays the buyer on a hosted checkout page (a session's `url`): reads
    /// the page, presses Pay; the URL it was sent on to (the session's
    /// `success_url`).
    pub async fn pay(&self, checkout_url: &str) -> Result<String, StripeError> {
        let page = self.page(checkout_url).await?;
        let action = form_action(&page, "/pay").ok_or_else(|| StripeError {
            status: 200,
            body: Value::String(page.clone()),
        })?;
        self.press(&action, &[]).await
    }

    /// Plays the customer on a portal page (a portal session's `url`):
    /// presses "Cancel subscription" for `subscription`; the URL it was sent
    /// on to (the session's `return_url`).
    pub async fn cancel_in_portal(
        &self,
        portal_url: &str,
        subscription: &str,
    ) -> Result<String, StripeError> {
        let page = self.page(portal_url).await?;
        let action = form_action(&page, "/cancel")
            .filter(|_| page.contains(subscription) && page.contains("Cancel subscription"))
            .ok_or_else(|| StripeError {
                status: 200,
                body: Value::String(page.clone()),
            })?;
        self.press(&action, &[("subscription", subscription)]).await
    }

    /// The subscription's next period, invoiced, paid and reported as
    /// `invoice.paid`; the invoice.
    pub async fn renew(&self, subscription: &str) -> Result<Value, StripeError> {
        self.test_route("renew", subscription).await
    }

    /// The subscription's latest charge refunded, reported as
    /// `charge.refunded`; the charge.
    pub async fn refund(&self, subscription: &str) -> Result<Value, StripeError> {
        self.test_route("refund", subscription).await
    }

    /// A dispute of the subscription's latest charge, reported as
    /// `charge.dispute.created`; the dispute.
    pub async fn dispute(&self, subscription: &str) -> Result<Value, StripeError> {
        self.test_route("dispute", subscription).await
    }

    async fn test_route(&self, name: &str, subscription: &str) -> Result<Value, StripeError> {
        answer(
            self.http
                .post(format!("{}/_test/{name}", self.url))
                .form(&[("subscription", subscription)]),
        )
        .await
    }

    async fn page(&self, url: &str) -> Result<String, StripeError> {
        let answer = self.http.get(url).send().await.map_err(transport)?;
        let status = answer.status().as_u16();
        let text = answer.text().await.map_err(transport)?;
        if status == 200 {
            Ok(text)
        } else {
            Err(StripeError {
                status,
                body: Value::String(text),
            })
        }
    }

    /// Submits a hosted page's form; where its 303 leads.
    async fn press(&self, action: &str, form: &[(&str, &str)]) -> Result<String, StripeError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(transport)?;
        let answer = http
            .post(format!("{}{action}", self.url))
            .form(form)
            .send()
            .await
            .map_err(transport)?;
        let status = answer.status().as_u16();
        match answer
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
        {
            Some(location) if status == 303 => Ok(location.to_owned()),
            _ => Err(StripeError {
                status,
                body: answer.json().await.unwrap_or(Value::Null),
            }),
        }
    }

    /// What it wrote on standard error so far (its request log).
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }
}

fn transport(e: reqwest::Error) -> StripeError {
    StripeError {
        status: 0,
        body: Value::String(e.to_string()),
    }
}

async fn answer(request: reqwest::RequestBuilder) -> Result<Value, StripeError> {
    let answer = request.send().await.map_err(transport)?;
    let status = answer.status().as_u16();
    let body = answer.json().await.unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(StripeError { status, body })
    }
}

/// The `action` of the page's form that ends with `suffix`.
fn form_action(page: &str, suffix: &str) -> Option<String> {
    page.split("action=")
        .skip(1)
        .filter_map(|rest| rest.split(['>', ' ']).next())
        .find(|action| action.ends_with(suffix))
        .map(str::to_owned)
}

fn id_of(object: &Value) -> Result<String, StripeError> {
    object["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| StripeError {
            status: 200,
            body: object.clone(),
        })
}
