//! The HTTP API: routes, shared state and the middleware stack.
//!
//! One module per resource ([`jobs`], [`users`], [`accounts`], [`developer_keys`], [`admin`] (keys
//! and workers), [`payments`] (the ledger), [`entitlements`] (Discord subscriptions), [`stars`] (Telegram Stars), [`stripe`] (Stripe Checkout, portal and webhooks), [`refunds`] (refunds operators make), [`webhooks`] (keys' webhook secrets, callback URLs checked), [`review`] (suspensions, bans, reports, the review queue and the audit log), [`files`], [`internal`], [`results`], [`health`]); handlers take
//! an [`AppState`] and return `Result<_, ApiError>`. Resource modules never
//! import each other, only the shared ones: [`error`] maps every failure to
//! JSON in one place, [`auth`] says who is calling, [`scope`] what a frontend
//! key may see and speak for, [`extract`] and [`wire`] read and write values at
//! the API's edge, [`people`] what moderation does to a user (shared by `jobs` and `review`). State changes go through the [`Lifecycle`] in the state. The
//! OpenAPI document is generated from the handlers' annotations ([`openapi`])
//! and served at `/api/openapi.json`.

pub mod accounts;
pub mod admin;
pub mod adult;
pub mod auth;
pub mod chats;
pub mod developer_keys;
pub mod entitlements;
pub mod error;
pub mod extract;
pub mod files;
pub mod gateway;
pub mod health;
pub mod internal;
pub mod jobs;
pub mod openapi;
pub mod payments;
pub mod people;
pub mod refunds;
pub mod results;
pub mod review;
pub mod scope;
pub mod stars;
pub mod stripe;
pub mod users;
pub mod webhooks;
pub mod wire;
pub mod withhold;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use tessera_api::ErrorCode;
use tessera_core::billing::BillingClock;

use crate::artifacts::Blobs;
use crate::auth::{KeyCache, TokenCheck};
use crate::config::SchedulerConfig;
use crate::estimate::Estimator;
use crate::lifecycle::Lifecycle;
use crate::links::LinkSigner;
use crate::passwords::Passwords;
use crate::queue::QueuePositions;
use crate::store::Store;
use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Arc<dyn Store>,
    pub config: SchedulerConfig,
    pub clock: BillingClock,
    pub admin: TokenCheck,
    pub internal: TokenCheck,
    pub metrics_reader: TokenCheck,
    pub estimator: Estimator,
    pub positions: QueuePositions,
    pub keys: KeyCache,
    /// Developer keys found recently, as `keys` holds frontend keys.
    pub developer_keys: KeyCache<crate::store::DeveloperKeyRecord>,
    /// Every state change after a job's creation, and what follows it.
    pub lifecycle: Lifecycle,
    pub blobs: Blobs,
    pub passwords: Passwords,
    /// Signs and verifies download links.
    pub links: LinkSigner,
    /// The prompt rules, compiled from `[moderation]` and the built-in ones.
    pub prompts: tessera_core::moderation::PromptPolicy,
    /// The Stripe channel; `None` when `[payments.stripe]` has no secret key.
    pub stripe: Option<crate::payments::stripe::Stripe>,
    /// Which addresses a job's callback URL may reach (`[webhooks]`).
    pub webhook_policy: crate::webhooks::AddressPolicy,
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        config: SchedulerConfig,
        lifecycle: Lifecycle,
        blobs: Blobs,
    ) -> anyhow::Result<Self> {
        let clock = config.billing.clock()?;
        let config_key_cache = config.auth.key_cache_secs;
        let admin = TokenCheck::new(config.auth.admin_token()?.as_deref());
        let internal = TokenCheck::new(config.auth.internal_token()?.as_deref());
        let metrics_reader = TokenCheck::new(config.auth.metrics_token()?.as_deref());
        let link_secret = config.artifacts.link_secret()?;
        if link_secret.is_none() {
            tracing::warn!("artifacts.link_secret is not set: download links made now stop working when this scheduler stops, and work on this replica only");
        }
        if link_secret.is_none() && !config.payments.telegram.stars.is_empty() {
            tracing::warn!("artifacts.link_secret is not set while Telegram sells plans: Stars invoices signed now are refused after a restart or on another replica, subscription renewals included");
        }
        let links = LinkSigner::new(link_secret.as_deref(), config.artifacts.link_lifetime_secs);
        let stripe = crate::payments::stripe::Stripe::from_config(&config.payments.stripe)?;
        let prompts = tessera_core::moderation::PromptPolicy::compile(&config.moderation)?;
        let estimator = Estimator::new(config.estimates.clone());
        let webhook_policy = crate::webhooks::AddressPolicy::new(&config.webhooks)?;
        let positions = QueuePositions::new(
            config.queue.position_cap,
            Duration::from_millis(config.queue.position_refresh_ms),
        );
        Ok(Self(Arc::new(Inner {
            store,
            config,
            clock,
            admin,
            internal,
            metrics_reader,
            estimator,
            positions,
            keys: KeyCache::new(Duration::from_secs(config_key_cache)),
            developer_keys: KeyCache::new(Duration::from_secs(config_key_cache)),
            lifecycle,
            blobs,
            passwords: Passwords::new(),
            links,
            prompts,
            stripe,
            webhook_policy,
        })))
    }
}

/// The full router with its middleware.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static(tessera_api::REQUEST_ID);
    let timeout = Duration::from_secs(state.config.server.request_timeout_secs.max(1));
    let api = Router::new()
        .route("/api/v1/jobs", get(jobs::list).post(jobs::create))
        .route("/api/v1/jobs/{job_id}", get(jobs::get).delete(jobs::cancel))
        .route("/api/v1/jobs/{job_id}/delivered", post(jobs::delivered))
        .route("/api/v1/jobs/{job_id}/events", get(jobs::events))
        .route("/api/v1/users/{user_ref}", get(users::get))
        .route("/api/v1/plans", get(users::plans))
        .route("/api/v1/webhook-secret", post(webhooks::rotate))
        .route("/api/v1/accounts", post(accounts::create))
        .route("/api/v1/accounts/sign-in", post(accounts::sign_in))
        .route("/api/v1/accounts/{user_ref}", get(accounts::get))
        .route("/api/v1/accounts/{user_ref}/links", post(accounts::redeem))
        .route(
            "/api/v1/accounts/{user_ref}/developer-keys",
            get(developer_keys::list).post(developer_keys::create),
        )
        .route(
            "/api/v1/accounts/{user_ref}/developer-keys/{key_id}",
            axum::routing::delete(developer_keys::revoke),
        )
        .route("/api/v1/link-codes", post(accounts::link_code))
        // The NSFW context: a Telegram group's setting, an account's age.
        .route(
            "/api/v1/telegram/chats/{chat_id}/nsfw",
            get(chats::get).put(chats::set),
        )
        .route(
            "/api/v1/accounts/{user_ref}/age-confirmation",
            post(accounts::confirm_age),
        )
        .route(
            "/api/admin/keys",
            get(admin::list_keys).post(admin::create_key),
        )
        .route(
            "/api/admin/keys/{key_id}",
            axum::routing::delete(admin::revoke_key),
        )
        .route("/api/admin/users/{user_ref}/plan", put(users::set_plan))
        .route("/api/admin/jobs", get(jobs::list_jobs))
        .route(
            "/api/admin/jobs/{job_id}",
            axum::routing::delete(jobs::cancel_job),
        )
        .route("/api/admin/workers", get(admin::list_workers))
        .route("/api/admin/payments", get(payments::list))
        .route("/api/admin/payments/grant", post(payments::grant))
        .route("/api/admin/payments/revoke", post(payments::revoke))
        .route(
            "/api/v1/payments/discord/entitlements",
            post(entitlements::relay),
        )
        .route("/api/v1/payments/discord/skus", get(entitlements::skus))
        .route("/api/v1/payments/telegram/plans", get(stars::offers))
        .route("/api/v1/payments/telegram/invoices", post(stars::invoice))
        .route(
            "/api/v1/payments/telegram/pre-checkout",
            post(stars::pre_checkout),
        )
        .route("/api/v1/payments/telegram/payments", post(stars::payment))
        .route(
            "/api/v1/payments/telegram/refund-requests",
            post(stars::refundable),
        )
        .route("/api/v1/payments/telegram/refunds", post(stars::refunded))
        .route("/api/v1/payments/stripe/plans", get(stripe::offers))
        .route("/api/v1/payments/stripe/checkout", post(stripe::checkout))
        .route("/api/v1/payments/stripe/portal", post(stripe::portal))
        .route("/api/v1/payments/stripe/webhook", post(stripe::webhook))
        .route("/api/admin/payments/refund", post(refunds::refund))
        .route("/api/admin/payments/refunds", get(refunds::list))
        .route(
            "/api/v1/payments/telegram/refund-orders",
            get(refunds::orders),
        )
        .route(
            "/api/v1/payments/telegram/refund-failures",
            post(refunds::failed),
        )
        .route("/api/v1/jobs/{job_id}/reports", post(review::report))
        .route("/api/admin/users/{user_ref}/suspend", post(review::suspend))
        .route("/api/admin/users/{user_ref}/ban", post(review::ban))
        .route("/api/admin/users/{user_ref}/lift", post(review::lift))
        .route(
            "/api/admin/users/{user_ref}/sanctions",
            get(review::sanctions),
        )
        .route("/api/admin/moderation/cases", get(review::cases))
        .route(
            "/api/admin/moderation/cases/{case_id}",
            get(review::show_case),
        )
        .route(
            "/api/admin/moderation/cases/{case_id}/decision",
            post(review::decide),
        )
        .route("/api/admin/moderation/audit", get(review::audit))
        .route("/api/internal/heartbeat", post(internal::heartbeat))
        .route(
            "/api/internal/jobs/{job_id}/progress",
            post(results::progress),
        )
        .route(
            "/api/internal/jobs/{job_id}/result",
            post(results::result).layer(DefaultBodyLimit::max(
                usize::try_from(state.config.artifacts.max_result_bytes)
                    .unwrap_or(usize::MAX)
                    .saturating_add(64 * 1024),
            )),
        )
        .route(
            "/api/internal/jobs/{job_id}/output",
            // A piece of 1 MiB, every character escaped in JSON.
            post(results::output).layer(DefaultBodyLimit::max(
                tessera_api::internal::MAX_OUTPUT_PIECE_BYTES * 6 + 4096,
            )),
        )
        .route("/api/internal/inputs/{input_id}", get(results::input))
        .route(
            "/api/v1/inputs",
            post(files::upload_input).layer(DefaultBodyLimit::max(
                usize::try_from(state.config.artifacts.max_input_bytes).unwrap_or(usize::MAX),
            )),
        )
        .route("/api/v1/artifacts/{artifact_id}", get(files::artifact))
        .route(
            "/api/admin/artifacts/{artifact_id}",
            get(files::review_artifact),
        )
        .route(
            "/api/admin/artifacts/{artifact_id}/content",
            get(files::artifact_content),
        )
        .route(
            "/api/admin/jobs/{job_id}/artifacts",
            get(files::review_job_artifacts),
        )
        .route(
            "/api/v1/artifacts/{artifact_id}/download-link",
            post(files::download_link),
        )
        .route(
            "/api/v1/download-links/{token}",
            get(files::redeem_download_link),
        )
        // The OpenAI-compatible gateway (developer keys).
        .route("/v1/models", get(gateway::models))
        .route("/v1/chat/completions", post(gateway::chat_completions))
        .route("/v1/images/generations", post(gateway::images))
        .route("/v1/audio/speech", post(gateway::speech))
        .route(
            "/v1/audio/transcriptions",
            post(gateway::transcriptions).layer(DefaultBodyLimit::max(
                usize::try_from(state.config.artifacts.max_input_bytes)
                    .unwrap_or(usize::MAX)
                    .saturating_add(64 * 1024),
            )),
        )
        .route("/v1/downloads/{token}", get(gateway::download))
        .route("/api/openapi.json", get(openapi::document))
        .route("/metrics", get(health::metrics))
        .route("/healthz", get(health::alive))
        .route("/readyz", get(health::ready))
        .route_layer(middleware::from_fn_with_state(
            state.lifecycle.metrics().clone(),
            crate::metrics::Metrics::track,
        ))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state.clone());
    api.layer(DefaultBodyLimit::max(state.config.server.body_limit_bytes))
        .layer(middleware::from_fn_with_state(timeout, deadline))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::InternalError,
                "an internal error occurred; it has been logged",
            )
            .into_response()
        }))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get(tessera_api::REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// Answers 503 with the JSON envelope when a request outlives the deadline.
/// The gateway's calls (`/v1/...`) are exempt: each waits for its job, queue
/// and run, as OpenAI's clients expect (their own timeouts apply), and a
/// deadline would cancel the job with the call.
async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/v1/") {
        return next.run(req).await;
    }
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Timeout,
            format!("the request took longer than {} s", limit.as_secs()),
        )
        .into_response(),
    }
}
