//! Stripe, for the website: Checkout sessions in subscription mode, the
//! customer portal, and the webhooks that report what was paid.
//!
//! The client here speaks the few Stripe calls the channel makes as typed,
//! form-encoded requests over `reqwest` (ARCHITECTURE.md says why not a
//! Stripe crate): create a customer, a Checkout session and a portal
//! session, and read the subscription, invoice and charge an event names.
//! Every call has a timeout, and every failure is one [`StripeError`] the
//! routes turn into `payment_provider_unavailable`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::secret;

/// `[payments.stripe]`. The channel is off until `secret_key` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StripeConfig {
    /// Stripe's API, without `/v1`.
    pub api_base: String,
    /// The secret API key (`sk_live_...`); from a file or the environment.
    pub secret_key: Option<String>,
    pub secret_key_file: Option<PathBuf>,
    /// The webhook endpoint's signing secret (`whsec_...`).
    pub webhook_secret: Option<String>,
    pub webhook_secret_file: Option<PathBuf>,
    /// The Stripe price of each plan sold: plan id -> price id.
    pub prices: BTreeMap<String, String>,
    /// How long one call to Stripe may take (seconds).
    pub timeout_secs: u64,
    /// How old a webhook's signature may be (seconds).
    pub webhook_tolerance_secs: u64,
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self {
            api_base: "https://api.stripe.com".into(),
            secret_key: None,
            secret_key_file: None,
            webhook_secret: None,
            webhook_secret_file: None,
            prices: BTreeMap::new(),
            timeout_secs: 10,
            webhook_tolerance_secs: 300,
        }
    }
}

impl StripeConfig {
    /// The secret key, read from the file when one is named.
    pub fn secret_key(&self) -> anyhow::Result<Option<String>> {
        secret(
            &self.secret_key,
            &self.secret_key_file,
            "payments.stripe.secret_key",
        )
    }

    /// The webhook signing secret, read from the file when one is named.
    pub fn webhook_secret(&self) -> anyhow::Result<Option<String>> {
        secret(
            &self.webhook_secret,
            &self.webhook_secret_file,
            "payments.stripe.webhook_secret",
        )
    }
}

/// A call to Stripe that did not give what was asked: unreachable, too slow,
/// or refused (with Stripe's status and message).
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    #[error("Stripe could not be reached: {0}")]
    Unreachable(String),
    #[error("Stripe answered HTTP {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("Stripe answered something that is not a {0}")]
    Unexpected(&'static str),
}

/// The channel, when configured: the client and what checks webhooks.
#[derive(Clone)]
pub struct Stripe {
    pub client: StripeClient,
    /// `None` when no webhook secret is set: every webhook is refused.
    pub webhook_secret: Option<String>,
    pub tolerance_secs: u64,
    pub prices: BTreeMap<String, String>,
}

impl Stripe {
    /// The channel from its configuration; `None` when it is off (no secret
    /// key).
    pub fn from_config(config: &StripeConfig) -> anyhow::Result<Option<Stripe>> {
        let Some(key) = config.secret_key()? else {
            return Ok(None);
        };
        for plan in config.prices.keys() {
            plan.parse::<tessera_core::PlanId>().map_err(|e| {
                anyhow::anyhow!("payments.stripe.prices: {plan:?} is no plan id: {e}")
            })?;
        }
        let webhook_secret = config.webhook_secret()?;
        if webhook_secret.is_none() {
            tracing::warn!("payments.stripe.webhook_secret is not set: Stripe's webhooks are refused, and nothing bought through Stripe is applied");
        }
        Ok(Some(Stripe {
            client: StripeClient::new(
                &config.api_base,
                &key,
                Duration::from_secs(config.timeout_secs.max(1)),
            )?,
            webhook_secret,
            tolerance_secs: config.webhook_tolerance_secs,
            prices: config.prices.clone(),
        }))
    }

    /// The plan a Stripe price sells, if configured.
    pub fn plan_of_price(&self, price: &str) -> Option<&str> {
        self.prices
            .iter()
            .find(|(_, p)| p.as_str() == price)
            .map(|(plan, _)| plan.as_str())
    }
}

/// A Checkout session to create.
pub struct CheckoutRequest<'a> {
    pub customer: &'a str,
    pub price: &'a str,
    pub user_ref: &'a str,
    pub plan_id: &'a str,
    pub success_url: &'a str,
    pub cancel_url: &'a str,
}

/// The few Stripe calls the channel makes.
#[derive(Clone)]
pub struct StripeClient {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl StripeClient {
    pub fn new(base: &str, key: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            http,
        })
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, StripeError> {
        let answer = request
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| StripeError::Unreachable(e.without_url().to_string()))?;
        let status = answer.status();
        let body: Value = answer
            .json()
            .await
            .map_err(|e| StripeError::Unreachable(e.without_url().to_string()))?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(StripeError::Refused {
                status: status.as_u16(),
                message: body["error"]["message"]
                    .as_str()
                    .unwrap_or("no message")
                    .to_owned(),
            })
        }
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Result<Value, StripeError> {
        self.call(
            self.http
                .post(format!("{}/v1/{path}", self.base))
                .form(form),
        )
        .await
    }

    /// `GET /v1/{path}`: an object an event names.
    pub async fn get(&self, path: &str) -> Result<Value, StripeError> {
        self.call(self.http.get(format!("{}/v1/{path}", self.base)))
            .await
    }

    /// A new customer for the user; its id.
    pub async fn create_customer(&self, user_ref: &str) -> Result<String, StripeError> {
        let customer = self
            .post("customers", &[("metadata[user_ref]", user_ref)])
            .await?;
        id_of(&customer, "customer")
    }

    /// A Checkout session in subscription mode; its URL.
    pub async fn create_checkout(&self, r: &CheckoutRequest<'_>) -> Result<String, StripeError> {
        let session = self
            .post(
                "checkout/sessions",
                &[
                    ("mode", "subscription"),
                    ("customer", r.customer),
                    ("line_items[0][price]", r.price),
                    ("line_items[0][quantity]", "1"),
                    ("client_reference_id", r.user_ref),
                    ("success_url", r.success_url),
                    ("cancel_url", r.cancel_url),
                    ("metadata[user_ref]", r.user_ref),
                    ("metadata[plan_id]", r.plan_id),
                    ("subscription_data[metadata][user_ref]", r.user_ref),
                    ("subscription_data[metadata][plan_id]", r.plan_id),
                ],
            )
            .await?;
        url_of(&session, "Checkout session")
    }

    /// A customer portal session; its URL.
    pub async fn create_portal(
        &self,
        customer: &str,
        return_url: &str,
    ) -> Result<String, StripeError> {
        let session = self
            .post(
                "billing_portal/sessions",
                &[("customer", customer), ("return_url", return_url)],
            )
            .await?;
        url_of(&session, "portal session")
    }

    /// `POST /v1/refunds` of a charge (`ch_...`) or payment intent
    /// (`pi_...`), with an `Idempotency-Key`, so a repeat within Stripe's
    /// window answers the same refund instead of a second one.
    pub async fn create_refund(
        &self,
        form: &[(&str, &str)],
        idempotency_key: &str,
    ) -> Result<Value, StripeError> {
        self.call(
            self.http
                .post(format!("{}/v1/refunds", self.base))
                .header("Idempotency-Key", idempotency_key)
                .form(form),
        )
        .await
    }
}

fn id_of(object: &Value, what: &'static str) -> Result<String, StripeError> {
    object["id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or(StripeError::Unexpected(what))
}

fn url_of(object: &Value, what: &'static str) -> Result<String, StripeError> {
    object["url"]
        .as_str()
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .map(str::to_owned)
        .ok_or(StripeError::Unexpected(what))
}
