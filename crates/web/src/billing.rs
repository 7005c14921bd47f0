//! Buying and managing a plan: the pricing and account pages' buttons send
//! the visitor to Stripe's Checkout page (a subscription) or to Stripe's
//! customer portal. The website only asks the scheduler for the address to
//! send them to; what was paid reaches the scheduler from Stripe itself
//! (signed webhooks), so nothing here decides a plan. Stripe down when the
//! visitor clicks: a page that says nothing was charged.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use serde::Deserialize;

use tessera_api::stripe::{StripeCheckoutRequest, StripeOffer, StripePortalRequest};
use tessera_api::ClientError;
use tessera_core::{ErrorCode, PlanId};

use crate::error::WebError;
use crate::session::Session;
use crate::AppState;

type Page = Result<Response, WebError>;

/// The plans the website sells, cheapest first; none when the scheduler
/// takes no Stripe payments or cannot say (the pages then show no button).
pub async fn offers(state: &AppState) -> Vec<StripeOffer> {
    match state.api.stripe_offers().await {
        Ok(offers) => offers.plans,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the plans for sale; showing no buttons");
            Vec::new()
        }
    }
}

/// The site's own address, for the pages Stripe sends the visitor back to:
/// `--public-url` when set, else the address the visitor used.
fn site(state: &AppState, headers: &HeaderMap) -> Result<String, WebError> {
    if let Some(url) = &state.config.public_url {
        return Ok(url.trim_end_matches('/').to_owned());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| WebError::Refused("the request named no host".into()))?;
    let scheme = if state.config.secure_cookies {
        "https"
    } else {
        "http"
    };
    Ok(format!("{scheme}://{host}"))
}

/// A refusal of a payment call, in the visitor's words.
fn refused(e: ClientError) -> WebError {
    match e.error_code() {
        Some(ErrorCode::PaymentProviderUnavailable) => WebError::PaymentsDown,
        Some(ErrorCode::PaymentsNotConfigured) | Some(ErrorCode::PlanNotForSale) => {
            WebError::Refused("that plan cannot be bought on this site".into())
        }
        Some(ErrorCode::NoPaymentCustomer) => WebError::Refused(
            "this account has no subscription to manage yet; pick a plan on the pricing page"
                .into(),
        ),
        _ => e.into(),
    }
}

#[derive(Deserialize)]
pub struct CheckoutForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    plan: String,
}

/// `POST /billing/checkout`: off to Stripe's Checkout page for the plan.
pub async fn checkout(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<CheckoutForm>,
) -> Page {
    session.check_csrf(&form.csrf)?;
    let account = session.require()?;
    let plan: PlanId = form.plan.trim().parse().map_err(|_| WebError::NotFound)?;
    let site = site(&state, &headers)?;
    let req = StripeCheckoutRequest {
        user_ref: account.user_ref.clone(),
        plan_id: plan,
        success_url: format!("{site}/account?paid=1"),
        cancel_url: format!("{site}/pricing"),
    };
    let to = state.api.stripe_checkout(&req).await.map_err(refused)?;
    Ok(away(session, &to.url))
}

#[derive(Deserialize)]
pub struct PortalForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /billing/portal`: off to Stripe's customer portal.
pub async fn portal(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<PortalForm>,
) -> Page {
    session.check_csrf(&form.csrf)?;
    let account = session.require()?;
    let site = site(&state, &headers)?;
    let req = StripePortalRequest {
        user_ref: account.user_ref.clone(),
        return_url: format!("{site}/account"),
    };
    let to = state.api.stripe_portal(&req).await.map_err(refused)?;
    Ok(away(session, &to.url))
}

/// Off to Stripe's page (the scheduler made the address). Not a redirect:
/// the site's `form-action 'self'` policy would stop a form's redirect to
/// another site, so a page that moves on by itself, with a link.
fn away(session: Session, url: &str) -> Response {
    (
        StatusCode::OK,
        session.jar(),
        [(header::CACHE_CONTROL, "no-store")],
        crate::views::leaving(url, "Stripe"),
    )
        .into_response()
}
