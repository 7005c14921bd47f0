//! Starting and running bot instances: each checks its token, registers its
//! commands, resumes its jobs and then listens (on the gateway, or behind the
//! shared HTTP interactions endpoint); [`run`] runs every configured one until
//! told to stop or until one loses its gateway for good.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use twilight_gateway::{Intents, Shard, ShardId};
use twilight_http::error::ErrorType;

use tessera_api::client::Client;
use tessera_chat::{Bot, BotSettings};
use tessera_core::Platform;

use crate::gateway::{listen, DISCORD_GATEWAY};
use crate::{
    application_commands, endpoint, BotInstance, Discord, DiscordConfig, Handler, Mode, Secrets,
};

/// One running bot instance.
pub struct Instance {
    pub handler: Handler,
    /// Cancelled when the gateway connection ends for good by itself (a
    /// close code that forbids reconnecting, such as a revoked token).
    pub lost: CancellationToken,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Instance {
    pub fn bot_id(&self) -> &str {
        &self.handler.bot.settings().bot_id
    }

    /// Stops receiving interactions and following jobs. Jobs keep running in
    /// the scheduler; the next process resumes and delivers them.
    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Some(task) = self.task {
            let _ = task.await;
        }
        self.handler.bot.shutdown().await;
    }
}

/// Starts one bot instance: checks the token, registers its commands, resumes
/// its jobs, then (gateway mode) connects to the gateway. In HTTP mode the
/// caller routes the endpoint's interactions to [`Instance::handler`].
pub async fn start(
    config: &DiscordConfig,
    instance: &BotInstance,
    secrets: Secrets,
) -> anyhow::Result<Instance> {
    let mut builder = twilight_http::Client::builder()
        .token(secrets.token.expose().to_owned())
        .timeout(Duration::from_secs(30))
        // An expired interaction token answers 401; that must not disable the
        // bot token for every later call.
        .remember_invalid_token(false);
    if let Some((authority, plain_http)) = config.api_proxy() {
        builder = builder.proxy(authority, plain_http);
    }
    let http = Arc::new(builder.build());
    // Discord out of reach is waited for a while; a refused token is not.
    let mut pause = Duration::from_secs(1);
    let app = loop {
        match http.current_user_application().await {
            Ok(response) => break response.model().await?,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorType::RequestError | ErrorType::RequestTimedOut
                ) && pause.as_secs() <= 16 =>
            {
                tracing::warn!(bot_id = %instance.id, error = %e, retry_in_s = pause.as_secs(), "cannot reach Discord");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorType::Unauthorized | ErrorType::Response { .. }
                ) =>
            {
                anyhow::bail!("bot {}: Discord refused its token: {e}", instance.id)
            }
            Err(e) => anyhow::bail!("bot {}: cannot reach Discord: {e}", instance.id),
        }
    };
    let commands = application_commands(&instance.capabilities);
    if let Err(e) = http
        .interaction(app.id)
        .set_global_commands(&commands)
        .await
    {
        tracing::warn!(bot_id = %instance.id, error = %e, "could not register the commands");
    }
    let api = Client::new(&config.scheduler_url, secrets.api_key.expose().to_owned())?;
    let settings = BotSettings {
        platform: Platform::Discord,
        bot_id: instance.id.clone(),
        username: None,
        capabilities: instance.capabilities.clone(),
        limits: instance.limits.clone(),
        poll_ms: config.job_poll_ms,
        min_edit_ms: config.min_edit_ms,
        site_url: config.site_url.clone(),
    };
    let bot = Bot::new(settings, api.clone(), Discord::new(http, app.id));
    if let Err(e) = bot.resume().await {
        tracing::warn!(bot_id = %instance.id, error = %e, "could not resume jobs now");
    }
    let handler = Handler {
        bot,
        download: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()?,
        max_audio_bytes: config.max_audio_bytes,
        api,
    };
    let stop = CancellationToken::new();
    let lost = CancellationToken::new();
    let task = match instance.mode {
        Mode::Gateway => {
            let mut gateway = twilight_gateway::ConfigBuilder::new(
                secrets.token.expose().to_owned(),
                // Interactions arrive whatever the intents.
                Intents::empty(),
            );
            if config.gateway_url.trim_end_matches('/') != DISCORD_GATEWAY {
                gateway = gateway.proxy_url(config.gateway_url.trim_end_matches('/').to_owned());
            }
            let shard = Shard::with_config(ShardId::ONE, gateway.build());
            tracing::info!(bot_id = %instance.id, "discord bot connecting to the gateway");
            Some(tokio::spawn(listen(
                shard,
                handler.clone(),
                stop.clone(),
                lost.clone(),
            )))
        }
        Mode::Http => {
            tracing::info!(bot_id = %instance.id, "discord bot waiting for interactions over HTTP");
            None
        }
    };
    Ok(Instance {
        handler,
        lost,
        stop,
        task,
    })
}

/// Runs every configured instance until `stop` is cancelled, with one HTTP
/// listener for the instances in HTTP mode.
pub async fn run(config: DiscordConfig, stop: CancellationToken) -> anyhow::Result<()> {
    let mut running = Vec::new();
    let mut endpoints = Vec::new();
    for instance in &config.bots {
        let secrets = Secrets {
            token: instance.token()?,
            api_key: instance.api_key()?,
        };
        let started = start(&config, instance, secrets).await?;
        if instance.mode == Mode::Http {
            endpoints.push((
                instance.id.to_string(),
                instance.verifying_key()?,
                started.handler.clone(),
            ));
        }
        running.push(started);
    }
    let server = if endpoints.is_empty() {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(config.interactions_listen)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen for interactions on {}: {e}",
                    config.interactions_listen
                )
            })?;
        tracing::info!(address = %config.interactions_listen, "interactions endpoint listening");
        let app = endpoint::router(endpoints, &config.scheduler_url);
        let stop = stop.clone();
        Some(tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }))
    };
    let lost = futures::future::select_all(
        running
            .iter()
            .map(|i| Box::pin(i.lost.clone().cancelled_owned())),
    );
    let outcome = tokio::select! {
        _ = stop.cancelled() => Ok(()),
        (_, which, _) = lost => Err(anyhow::anyhow!(
            "bot {} lost its gateway connection for good",
            running[which].bot_id()
        )),
    };
    stop.cancel();
    if let Some(server) = server {
        server.await??;
    }
    for instance in running {
        instance.shutdown().await;
    }
    outcome
}
