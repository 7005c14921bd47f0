//! `tessera up`: Tessera on one machine with nothing to configure.
//!
//! Starts the scheduler, a local worker and the website (and bots whose tokens
//! are configured). Keeps everything under one data folder: the SQLite
//! database, the admin and internal tokens, the key that signs download
//! links, the website's key and cookie secret, and a demo frontend key (files
//! readable by the owner only), so a second `tessera up` finds the same state,
//! the same signed-in visitors and working download links. Its bots send
//! download links to its website.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use tessera_chat::secret::Secret;
use tessera_core::{Capability, Platform};
use tessera_discord::DiscordConfig;
use tessera_scheduler::auth::{hash_secret, new_api_key, new_token};
use tessera_scheduler::{Scheduler, SchedulerConfig};
use tessera_telegram::TelegramConfig;
use tessera_worker::config::{AgentConfig, EngineConfig};
use tessera_worker::engine::espeak::EspeakConfig;
use tessera_worker::engine::sim::SimConfig;
use tessera_worker::{Worker, WorkerConfig};

#[derive(Args)]
pub struct UpArgs {
    /// Folder for the database and generated credentials (created if missing).
    #[arg(long, env = "TESSERA_DATA_DIR", default_value = ".tessera")]
    pub data_dir: PathBuf,
    /// Address of the scheduler's API.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Address of the website.
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub web_listen: SocketAddr,
    /// Address of the local worker's API.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub worker_listen: SocketAddr,
    /// Seconds a simulated image takes (the local worker simulates GPU work).
    #[arg(long, default_value_t = 2.0)]
    pub sim_seconds: f64,
    /// Telegram bots to run too: the file `tessera telegram` takes. Each bot
    /// whose Telegram token is set starts; its frontend key is made here
    /// (kept in the data folder) unless the environment gives one.
    #[arg(long, env = "TESSERA_TELEGRAM_CONFIG")]
    pub telegram: Option<PathBuf>,
    /// Discord bots to run too: the file `tessera discord` takes, as for
    /// `--telegram`.
    #[arg(long, env = "TESSERA_DISCORD_CONFIG")]
    pub discord: Option<PathBuf>,
}

/// The local worker: simulated GPU engines for every capability, and real
/// espeak-ng speech when it is installed.
fn local_worker(args: &UpArgs, scheduler_url: String, token: String) -> WorkerConfig {
    let ms = (args.sim_seconds.max(0.0) * 1000.0) as u64;
    let sim = |capability: Capability, models: &[&str], run_ms: u64| {
        EngineConfig::Sim(SimConfig {
            memory_mib: None,
            model_memory_mib: Default::default(),
            capability,
            models: models.iter().map(|m| m.to_string()).collect(),
            run_ms,
            load_ms: run_ms / 4,
            fail_when_prompt_contains: None,
        })
    };
    let catalog = tessera_core::catalog::ModelCatalog::default();
    let models = |c: Capability| {
        catalog
            .get(c)
            .map(|m| m.models.iter().map(String::as_str).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let mut engines = vec![
        sim(Capability::Image, &models(Capability::Image), ms),
        sim(Capability::Video, &models(Capability::Video), ms * 5),
        sim(Capability::Text, &models(Capability::Text), ms / 2),
        sim(
            Capability::SpeechToText,
            &models(Capability::SpeechToText),
            ms / 2,
        ),
    ];
    let espeak = std::process::Command::new("espeak-ng")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if espeak {
        engines.push(EngineConfig::Espeak(EspeakConfig {
            program: "espeak-ng".into(),
            models: models(Capability::TextToSpeech)
                .iter()
                .map(|m| m.to_string())
                .collect(),
            default_voice: "en".into(),
            words_per_minute: 175,
        }));
    } else {
        engines.push(sim(
            Capability::TextToSpeech,
            &models(Capability::TextToSpeech),
            ms / 4,
        ));
    }
    WorkerConfig {
        worker: AgentConfig {
            id: "worker-local-0".parse().expect("a plain name"),
            listen: args.worker_listen,
            scheduler_url,
            internal_token: Some(token),
            ..Default::default()
        },
        engines,
        moderation: Default::default(),
    }
}

/// Reads a secret kept in the data folder, or makes one with `make` and keeps it.
fn kept_secret(
    path: &Path,
    make: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<(String, bool)> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let secret = text.trim().to_owned();
        if !secret.is_empty() {
            return Ok((secret, false));
        }
    }
    let secret = make()?;
    write_private(path, &secret)?;
    Ok((secret, true))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{text}")?;
    Ok(())
}

/// A frontend key for bot `bot_id`, kept in `{dir}/keys/{bot_id}` and made
/// again when the one kept there was revoked (or the database is new).
async fn bot_key(
    store: &dyn tessera_scheduler::store::Store,
    dir: &Path,
    platform: Platform,
    bot_id: &str,
) -> anyhow::Result<PathBuf> {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).with_context(|| format!("creating {}", keys.display()))?;
    let path = keys.join(bot_id);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let key = text.trim();
        if !key.is_empty() && store.find_api_key(&hash_secret(key)).await?.is_some() {
            return Ok(path);
        }
    }
    let secret = new_api_key();
    let now = chrono::Utc::now().timestamp_millis();
    store
        .insert_api_key(platform, bot_id, &hash_secret(&secret), now)
        .await?;
    write_private(&path, &secret)?;
    Ok(path)
}

/// The bots of the given files that have their platform token, pointed at the
/// local scheduler, each with a frontend key, and sending download links to
/// the local website unless their file names another.
async fn local_bots(
    args: &UpArgs,
    store: &dyn tessera_scheduler::store::Store,
    dir: &Path,
    url: &str,
    site: &str,
) -> anyhow::Result<(Option<TelegramConfig>, Option<DiscordConfig>)> {
    let telegram = match &args.telegram {
        Some(path) => {
            let mut c = TelegramConfig::load(Some(path))?;
            c.scheduler_url = url.to_owned();
            c.site_url.get_or_insert_with(|| site.to_owned());
            let mut bots = Vec::new();
            for mut bot in std::mem::take(&mut c.bots) {
                if let Err(e) = bot.token() {
                    println!("  Telegram bot {} stays off: {e}", bot.id);
                    continue;
                }
                if bot.api_key().is_err() {
                    let key = bot_key(store, dir, Platform::Telegram, &bot.id).await?;
                    bot.api_key_file = Some(key);
                }
                bots.push(bot);
            }
            c.bots = bots;
            (!c.bots.is_empty()).then_some(c)
        }
        None => None,
    };
    let discord = match &args.discord {
        Some(path) => {
            let mut c = DiscordConfig::load(Some(path))?;
            c.scheduler_url = url.to_owned();
            c.site_url.get_or_insert_with(|| site.to_owned());
            let mut bots = Vec::new();
            for mut bot in std::mem::take(&mut c.bots) {
                if let Err(e) = bot.token() {
                    println!("  Discord bot {} stays off: {e}", bot.id);
                    continue;
                }
                if bot.api_key().is_err() {
                    let key = bot_key(store, dir, Platform::Discord, &bot.id).await?;
                    bot.api_key_file = Some(key);
                }
                bots.push(bot);
            }
            c.bots = bots;
            (!c.bots.is_empty()).then_some(c)
        }
        None => None,
    };
    Ok((telegram, discord))
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data folder {}", args.data_dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&args.data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", args.data_dir.display()))?;
    }
    let dir = args.data_dir.canonicalize()?;
    let (admin_token, _) = kept_secret(&dir.join("admin-token"), || Ok(new_token()))?;
    let (internal_token, _) = kept_secret(&dir.join("internal-token"), || Ok(new_token()))?;
    let (link_secret, _) = kept_secret(&dir.join("link-secret"), || Ok(new_token()))?;

    let mut config = SchedulerConfig::default();
    config.server.listen = args.listen;
    config.database.url = format!("sqlite://{}", dir.join("tessera.db").display());
    config.artifacts.location = dir.join("artifacts").display().to_string();
    config.auth.admin_token = Some(admin_token);
    config.auth.internal_token = Some(internal_token.clone());
    config.artifacts.link_secret = Some(link_secret);
    let mut handle = Scheduler::start(config).await?;
    let worker = Worker::start(local_worker(&args, handle.base_url(), internal_token)).await?;

    let store = handle.store().clone();
    let key_path = dir.join("demo-key");
    let (demo_key, _) = {
        let existing = std::fs::read_to_string(&key_path)
            .ok()
            .map(|s| s.trim().to_owned());
        let live = match &existing {
            Some(k) if !k.is_empty() => store.find_api_key(&hash_secret(k)).await?.is_some(),
            _ => false,
        };
        if live {
            (existing.unwrap_or_default(), false)
        } else {
            let secret = new_api_key();
            let now = chrono::Utc::now().timestamp_millis();
            store
                .insert_api_key(Platform::Web, "demo", &hash_secret(&secret), now)
                .await?;
            write_private(&key_path, &secret)?;
            (secret, true)
        }
    };

    let url = handle.base_url();
    let web_key = bot_key(&*store, &dir, Platform::Web, "web").await?;
    let (cookie_secret, _) = kept_secret(&dir.join("cookie-secret"), || Ok(new_token()))?;
    let mut web_config = tessera_web::WebConfig::new(
        url.clone(),
        Secret::new(std::fs::read_to_string(&web_key)?.trim()),
    );
    web_config.listen = args.web_listen;
    web_config.cookie_secret = Some(Secret::new(cookie_secret));
    // One machine: developer keys reach the scheduler where the site does.
    web_config.scheduler_public_url = Some(url.clone());
    let web = tessera_web::start(web_config)
        .await
        .context("starting the website (another address: --web-listen)")?;
    println!();
    println!("  Tessera is running.");
    println!();
    println!(
        "  Website:     {}   (open it in a browser: sign up and generate)",
        web.base_url()
    );
    println!("  API:         {url}");
    println!("  Data folder: {}", dir.display());
    println!();
    println!("  Create a job with the demo key (web/demo):");
    println!();
    println!("    curl -s {url}/api/v1/jobs \\");
    println!("      -H 'Authorization: Bearer {demo_key}' \\");
    println!("      -H 'Content-Type: application/json' \\");
    println!("      -d '{{\"frontend\":\"web\",\"bot_id\":\"demo\",\"capability\":\"image\",\"user_ref\":\"web:me\",\"params\":{{\"prompt\":\"a beautiful sunset\"}}}}'");
    println!();
    println!(
        "  Follow it:   curl -s {url}/api/v1/jobs/JOB_ID -H 'Authorization: Bearer {demo_key}'"
    );
    println!(
        "  Admin:       TESSERA_ADMIN_TOKEN=$(cat {}) tessera admin jobs list",
        dir.join("admin-token").display()
    );
    println!("  API schema:  {url}/api/openapi.json");
    println!();
    println!(
        "  A local worker ({}) runs every capability on simulated GPU work: its",
        worker.id()
    );
    println!("  images, videos and texts say they are simulated. Real engines join with");
    println!("  `tessera worker --config worker.toml` (see `tessera worker --print-example`).");
    let (telegram, discord) = local_bots(&args, &*store, &dir, &url, &web.base_url()).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let mut bots = tokio::task::JoinSet::new();
    if let Some(c) = telegram {
        let ids: Vec<_> = c.bots.iter().map(|b| b.id.clone()).collect();
        println!("  Telegram bots: {}", ids.join(", "));
        bots.spawn(tessera_telegram::run(c, stop.clone()));
    }
    if let Some(c) = discord {
        let ids: Vec<_> = c.bots.iter().map(|b| b.id.clone()).collect();
        println!("  Discord bots: {}", ids.join(", "));
        bots.spawn(tessera_discord::run(c, stop.clone()));
    }
    println!("  Press Ctrl-C to stop.");
    println!();

    let bots_failed = async {
        while let Some(ended) = bots.join_next().await {
            match ended {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return e,
                Err(e) => return anyhow::anyhow!("a bot task panicked: {e}"),
            }
        }
        std::future::pending().await
    };
    let outcome = tokio::select! {
        _ = super::shutdown_signal() => Ok(()),
        result = handle.wait() => result,
        e = bots_failed => Err(e),
    };
    tracing::info!("stopping");
    // Frontends stop first (jobs keep running; a bot's next start delivers
    // them, a job page picks them up again), then the worker finishes its job
    // and reports it, then the scheduler.
    stop.cancel();
    if let Err(e) = web.shutdown().await {
        tracing::warn!(error = %e, "the website did not stop cleanly");
    }
    while let Some(ended) = bots.join_next().await {
        ended??;
    }
    worker.shutdown().await?;
    handle.shutdown().await?;
    outcome
}
