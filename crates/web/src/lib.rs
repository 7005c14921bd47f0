//! The website (`tessera web`): accounts, generation forms, live job pages,
//! a gallery and the plans, rendered on the server.
//!
//! Like the bots it is a stateless frontend: everything it knows comes from
//! the scheduler's public API, called with one `web` frontend key, and the
//! only thing it keeps about a visitor is a signed cookie ([`session`]). Pages
//! are HTML built with `maud` ([`views`]); the little JavaScript there is
//! (live progress over server-sent events) and the stylesheet are compiled
//! into the binary and served from `/static`, so the site works offline and
//! every page also works without JavaScript. Download links that bots send
//! for outputs too large for their platform are served at `/d/...`
//! ([`download`]) to anyone holding one. Plans are bought on Stripe's pages
//! ([`billing`]); the scheduler hears what was paid from Stripe itself. The
//! account page also makes, lists and revokes the account's developer keys
//! (personal keys for the scheduler's OpenAI-compatible gateway, `/v1`),
//! showing each new key's secret once, in the answer to the form that made it.

pub mod billing;
pub mod download;
pub mod error;
pub mod forms;
pub mod handlers;
pub mod session;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::http::{header, HeaderName, HeaderValue};
use axum::routing::{get, post};
use axum::Router;
use axum_extra::extract::cookie::Key;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use tessera_api::Client;
use tessera_chat::limits::{LimitConfig, Limits};
use tessera_chat::secret::Secret;

/// How the website runs.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// Where to listen (`127.0.0.1:3000`).
    pub listen: SocketAddr,
    /// The scheduler's base URL.
    pub scheduler_url: String,
    /// A `web` frontend API key.
    pub api_key: Secret,
    /// The bot id the key was made for.
    pub bot_id: tessera_core::BotId,
    /// Signs the session cookies. `None`: a random key per start, so every
    /// session ends when the website restarts.
    pub cookie_secret: Option<Secret>,
    /// Mark cookies `Secure` (set when the site is served over HTTPS).
    pub secure_cookies: bool,
    /// Largest audio upload for speech-to-text, in bytes.
    pub max_upload_bytes: usize,
    /// Jobs a visitor may start per minute, and how many at once.
    pub limits: LimitConfig,
    /// The address visitors reach the site at (`https://tessera.example`),
    /// for the pages Stripe sends buyers back to. `None`: the address each
    /// visitor used (its `Host`).
    pub public_url: Option<String>,
    /// The address developers reach the scheduler at from outside
    /// (`https://api.tessera.example`): the account page shows its `/v1` as
    /// the base URL for developer keys. `None`: `scheduler_url`, which is
    /// where the site itself reaches the scheduler and may be a private
    /// address; the page then says so.
    pub scheduler_public_url: Option<String>,
}

impl WebConfig {
    pub fn new(scheduler_url: impl Into<String>, api_key: Secret) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            scheduler_url: scheduler_url.into(),
            api_key,
            bot_id: "web".parse().expect("a plain name"),
            cookie_secret: None,
            secure_cookies: false,
            max_upload_bytes: 25 * 1024 * 1024,
            limits: LimitConfig::default(),
            public_url: None,
            scheduler_public_url: None,
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub api: Client,
    /// The same scheduler for streaming outputs: no limit on the whole
    /// answer (a long video over a slow link), only on silence.
    pub downloads: Client,
    /// The connection pool `api` uses, for the scheduler's readiness probe.
    pub http: reqwest::Client,
    /// Cancelled when the site stops: ends the live-progress streams, which
    /// would otherwise hold a graceful shutdown open.
    pub stop: CancellationToken,
    pub config: WebConfig,
    pub key: Key,
    pub limits: Limits,
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl FromRef<AppState> for Key {
    fn from_ref(state: &AppState) -> Key {
        state.key.clone()
    }
}

impl AppState {
    pub fn new(config: WebConfig, stop: CancellationToken) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(3))
            .build()?;
        let api = Client::with_http(http.clone(), &config.scheduler_url, config.api_key.expose())
            .map_err(|e| anyhow::anyhow!("scheduler_url {:?}: {e}", config.scheduler_url))?;
        let streaming = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .read_timeout(Duration::from_secs(30))
            .build()?;
        let downloads =
            Client::with_http(streaming, &config.scheduler_url, config.api_key.expose())
                .map_err(|e| anyhow::anyhow!("scheduler_url {:?}: {e}", config.scheduler_url))?;
        let key = match &config.cookie_secret {
            Some(secret) => session::key_from_secret(secret.expose())?,
            None => {
                tracing::warn!(
                    "no cookie secret configured: sessions are signed with a key made at start, \
                     so everyone is signed out when the website restarts"
                );
                Key::generate()
            }
        };
        let limits = Limits::new(&config.limits);
        Ok(Self(Arc::new(Inner {
            api,
            downloads,
            http,
            stop,
            config,
            key,
            limits,
        })))
    }
}

/// What pages may load and who may frame them: only the site itself, no
/// inline script or style (there is none), never inside another site's frame.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self'; media-src 'self'; connect-src 'self'; frame-ancestors 'none'; \
    object-src 'none'; base-uri 'none'; form-action 'self'";

fn header(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}

/// Every route of the site.
pub fn router(state: AppState) -> Router {
    let upload_limit = state.config.max_upload_bytes + 64 * 1024;
    Router::new()
        .route("/", get(handlers::home))
        .route("/signup", get(handlers::signup_form).post(handlers::signup))
        .route("/signin", get(handlers::signin_form).post(handlers::signin))
        .route("/signout", post(handlers::signout))
        .route("/generate", get(handlers::generate_default))
        .route(
            "/generate/{capability}",
            get(handlers::generate_form)
                .post(handlers::generate)
                .layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/jobs/{job_id}", get(handlers::job_page))
        .route("/jobs/{job_id}/events", get(handlers::job_events))
        .route("/jobs/{job_id}/cancel", post(handlers::cancel))
        .route("/jobs/{job_id}/report", post(handlers::report))
        .route(
            "/jobs/{job_id}/outputs/{artifact_id}",
            get(handlers::output),
        )
        .route("/d/{token}", get(download::download))
        .route("/gallery", get(handlers::gallery))
        .route("/account", get(handlers::account))
        .route("/account/link", post(handlers::link))
        .route("/account/age", post(handlers::confirm_age))
        .route("/account/keys", post(handlers::create_developer_key))
        .route(
            "/account/keys/{key_id}/revoke",
            post(handlers::revoke_developer_key),
        )
        .route("/pricing", get(handlers::pricing))
        .route("/billing/checkout", post(billing::checkout))
        .route("/billing/portal", post(billing::portal))
        .route("/static/app.css", get(handlers::stylesheet))
        .route("/static/app.js", get(handlers::script))
        .route("/healthz", get(handlers::alive))
        .route("/readyz", get(handlers::ready))
        .fallback(handlers::not_found)
        .layer(header(header::CONTENT_SECURITY_POLICY, CSP))
        .layer(header(header::X_FRAME_OPTIONS, "DENY"))
        .layer(header(header::REFERRER_POLICY, "same-origin"))
        .layer(header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// A running website.
pub struct WebHandle {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl WebHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops taking connections and lets requests in flight finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await??;
        Ok(())
    }
}

/// Binds `config.listen` and serves the site until [`WebHandle::shutdown`].
pub async fn start(config: WebConfig) -> anyhow::Result<WebHandle> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let state = AppState::new(config, stop.clone())?;
    let sweeper = state.clone();
    let app = router(state);
    let stopped = stop.clone();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => sweeper.limits.forget_idle(),
                }
            }
        }
    });
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await
    });
    tracing::info!(%addr, "website listening");
    Ok(WebHandle { addr, stop, task })
}
