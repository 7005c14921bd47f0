//! Scheduler configuration: a TOML file, then `TESSERA_*` environment variables.
//!
//! Every option has a default, so `tessera scheduler` runs with no file at all on an
//! embedded SQLite database. Nested keys map to variables with `__` between levels:
//! `database.url` is `TESSERA_DATABASE__URL`; `TESSERA_*` variables without `__`
//! are not settings and are ignored. Secrets may instead be read from a file
//! (`auth.admin_token_file`) so they stay out of the environment and the command line.
//! [`EXAMPLE`] is the commented reference printed by `tessera config example`; a test
//! checks it parses to exactly these defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use tessera_core::billing::{BillingClock, CostRules};
use tessera_core::catalog::ModelCatalog;
use tessera_core::policy::Policy;
use tessera_core::Capability;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub billing: BillingConfig,
    pub queue: QueueConfig,
    pub admission: AdmissionConfig,
    pub estimates: EstimateConfig,
    pub workers: WorkersConfig,
    pub artifacts: ArtifactsConfig,
    pub webhooks: WebhooksConfig,
    pub payments: crate::payments::PaymentsConfig,
    pub moderation: tessera_core::moderation::ModerationConfig,
    pub catalog: ModelCatalog,
}

/// Where job outputs and uploaded inputs are kept, through `object_store`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArtifactsConfig {
    /// A local folder (created if missing), or an object-store URL such as
    /// `s3://bucket/prefix` for any S3-compatible store.
    pub location: String,
    /// Options of an object-store URL, for example `endpoint`, `region`,
    /// `access_key_id`, `secret_access_key`, `allow_http` for S3. The standard
    /// `AWS_*` environment variables are read too.
    pub options: std::collections::BTreeMap<String, String>,
    /// Largest result a worker may upload (all its artifacts together), in bytes.
    pub max_result_bytes: u64,
    /// Largest input a frontend may upload, in bytes.
    pub max_input_bytes: u64,
    /// Key that signs download links (outputs a chat platform will not take,
    /// served by the website without an account), at least 32 characters.
    /// Every replica needs the same one. Without it (or the file) a random
    /// key is made at start, and links die with the process.
    pub link_secret: Option<String>,
    /// File holding the link key, instead of `link_secret`.
    pub link_secret_file: Option<PathBuf>,
    /// Seconds a download link works after it is made.
    pub link_lifetime_secs: u64,
    /// How often objects that no artifact or input names are looked for and
    /// deleted (seconds), first right after start; 0 never.
    pub orphan_sweep_secs: u64,
    /// An object younger than this (seconds) is never swept: its row may be
    /// about to commit.
    pub orphan_grace_secs: u64,
}

impl Default for ArtifactsConfig {
    fn default() -> Self {
        Self {
            location: "tessera-artifacts".into(),
            options: Default::default(),
            max_result_bytes: 512 * 1024 * 1024,
            max_input_bytes: 25 * 1024 * 1024,
            orphan_sweep_secs: 3600,
            orphan_grace_secs: 3600,
            link_secret: None,
            link_secret_file: None,
            link_lifetime_secs: 24 * 60 * 60,
        }
    }
}

impl ArtifactsConfig {
    /// The download-link key, read from the file when one is named.
    pub fn link_secret(&self) -> anyhow::Result<Option<String>> {
        let key = secret(
            &self.link_secret,
            &self.link_secret_file,
            "artifacts.link_secret",
        )?;
        match key {
            Some(k) if k.len() < 32 => {
                anyhow::bail!("artifacts.link_secret must be at least 32 characters")
            }
            other => Ok(other),
        }
    }
}

/// Job webhooks (docs/webhooks.md): which addresses a callback URL may
/// reach, and the retry schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Networks (CIDR, such as `"127.0.0.0/8"` or `"fd00::/8"`) a callback
    /// URL may reach besides public addresses. Empty: public addresses only;
    /// private, loopback, link-local and other special ranges are refused.
    pub allow_networks: Vec<String>,
    /// Wait before the first retry (ms); each next wait is three times the
    /// last, up to `max_retry_ms`, with a fifth either way of jitter.
    pub first_retry_ms: u64,
    /// Longest wait between two attempts (ms).
    pub max_retry_ms: u64,
    /// A delivery not accepted this long (seconds) after its first attempt
    /// is abandoned.
    pub max_age_secs: u64,
    /// How long one attempt may take, connection and answer (ms).
    pub timeout_ms: u64,
    /// How often due deliveries are looked for (ms) besides when a job ends
    /// here: a safety net, and how other replicas' deliveries are retried.
    pub poll_ms: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allow_networks: Vec::new(),
            first_retry_ms: 10_000,
            max_retry_ms: 3_600_000,
            max_age_secs: 86_400,
            timeout_ms: 10_000,
            poll_ms: 1000,
        }
    }
}

impl WebhooksConfig {
    /// The allowed networks, parsed.
    pub fn networks(&self) -> anyhow::Result<Vec<ipnet::IpNet>> {
        self.allow_networks
            .iter()
            .map(|n| {
                n.trim().parse::<ipnet::IpNet>().map_err(|_| {
                    anyhow::anyhow!(
                        "webhooks.allow_networks: {n:?} is not a network such as \"127.0.0.0/8\""
                    )
                })
            })
            .collect()
    }
}

/// Worker liveness (ARCHITECTURE.md: a heartbeat every 30 seconds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConfig {
    /// How often workers are asked to send a heartbeat (ms).
    pub heartbeat_interval_ms: u64,
    /// A worker that missed this many heartbeats in a row is offline, and its
    /// running job goes back to the queue.
    pub missed_heartbeats: u32,
    /// A job dispatched this many times without finishing FAILS and is refunded.
    pub max_attempts: u32,
    /// A queued job that no online worker can serve FAILS and is refunded after
    /// waiting this long (seconds). A worker whose engine is down still serves
    /// for this long, and an `engine_unavailable` failure does not count as an
    /// attempt while the job has waited less than this.
    pub unservable_after_secs: u64,
    /// The dispatcher looks at the queue at least this often (ms), even when no
    /// event woke it: a safety net, not the way jobs normally start.
    pub dispatch_tick_ms: u64,
    /// How long a worker has to accept a job it is sent (ms).
    pub dispatch_timeout_ms: u64,
    /// Longest a job may run, per capability (seconds); then it FAILS and is refunded.
    pub run_timeout_secs: RunTimeouts,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 30_000,
            missed_heartbeats: 3,
            max_attempts: 3,
            unservable_after_secs: 600,
            dispatch_tick_ms: 1000,
            dispatch_timeout_ms: 5000,
            run_timeout_secs: RunTimeouts::default(),
        }
    }
}

/// Run timeouts per capability, in seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunTimeouts {
    pub image: u64,
    pub video: u64,
    pub text: u64,
    pub speech_to_text: u64,
    pub text_to_speech: u64,
}

impl Default for RunTimeouts {
    fn default() -> Self {
        Self {
            image: 300,
            video: 1800,
            text: 300,
            speech_to_text: 600,
            text_to_speech: 120,
        }
    }
}

impl RunTimeouts {
    /// The run timeout of a capability, in ms.
    pub fn of_ms(&self, c: Capability) -> u64 {
        let secs = match c {
            Capability::Image => self.image,
            Capability::Video => self.video,
            Capability::Text => self.text,
            Capability::SpeechToText => self.speech_to_text,
            Capability::TextToSpeech => self.text_to_speech,
        };
        secs.saturating_mul(1000)
    }
}

impl WorkersConfig {
    /// How long a worker may stay silent and still be online (ms).
    pub fn silence_limit_ms(&self) -> tessera_core::Millis {
        let limit = self
            .heartbeat_interval_ms
            .saturating_mul(u64::from(self.missed_heartbeats));
        i64::try_from(limit).unwrap_or(i64::MAX)
    }

    /// Whether a worker last seen at `last_seen` is online at `now`.
    pub fn is_online(&self, last_seen: tessera_core::Millis, now: tessera_core::Millis) -> bool {
        now - last_seen <= self.silence_limit_ms()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the public, admin and internal HTTP API.
    pub listen: SocketAddr,
    /// Longest a request may take before it is answered 503.
    pub request_timeout_secs: u64,
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            request_timeout_secs: 30,
            body_limit_bytes: 1024 * 1024,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (created if missing) or `postgres://USER@HOST/DB`.
    pub url: String,
    /// Connections in the pool (PostgreSQL), or readers (SQLite; it has one writer).
    pub max_connections: u32,
    /// Seconds to wait for a free connection before answering 503.
    pub acquire_timeout_secs: u64,
    /// SQLite only: `full` makes every commit durable; `normal` may lose the last
    /// commits on power loss (never on a process crash) and is faster.
    pub sqlite_synchronous: SqliteSynchronous,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://tessera.db".into(),
            max_connections: 16,
            acquire_timeout_secs: 5,
            sqlite_synchronous: SqliteSynchronous::Full,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    Full,
    Normal,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Bearer token of the admin API. Without one, the admin API refuses every call.
    pub admin_token: Option<String>,
    /// File holding the admin token (first line), instead of `admin_token`.
    pub admin_token_file: Option<PathBuf>,
    /// Bearer token between the scheduler and its workers.
    pub internal_token: Option<String>,
    /// File holding the internal token, instead of `internal_token`.
    pub internal_token_file: Option<PathBuf>,
    /// Bearer token that may read `/metrics` and nothing else (for Prometheus).
    /// The admin token may read them too.
    pub metrics_token: Option<String>,
    /// File holding the metrics token, instead of `metrics_token`.
    pub metrics_token_file: Option<PathBuf>,
    /// Seconds a frontend key, once found, is trusted without asking the database.
    /// A revoked key stops at once on the scheduler that revoked it, and on other
    /// replicas within this time. 0 checks the database on every request.
    pub key_cache_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            admin_token: None,
            admin_token_file: None,
            internal_token: None,
            internal_token_file: None,
            metrics_token: None,
            metrics_token_file: None,
            key_cache_secs: 5,
        }
    }
}

impl AuthConfig {
    /// The admin token, read from the file when one is named.
    pub fn admin_token(&self) -> anyhow::Result<Option<String>> {
        secret(
            &self.admin_token,
            &self.admin_token_file,
            "auth.admin_token",
        )
    }

    /// The internal token, read from the file when one is named.
    pub fn internal_token(&self) -> anyhow::Result<Option<String>> {
        secret(
            &self.internal_token,
            &self.internal_token_file,
            "auth.internal_token",
        )
    }

    /// The metrics token, read from the file when one is named.
    pub fn metrics_token(&self) -> anyhow::Result<Option<String>> {
        secret(
            &self.metrics_token,
            &self.metrics_token_file,
            "auth.metrics_token",
        )
    }
}

pub(crate) fn secret(
    value: &Option<String>,
    file: &Option<PathBuf>,
    name: &str,
) -> anyhow::Result<Option<String>> {
    let token = match (value, file) {
        (Some(_), Some(_)) => anyhow::bail!("set {name} or {name}_file, not both"),
        (Some(v), None) => Some(v.trim().to_owned()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {name}_file {}: {e}", path.display()))?;
            Some(text.lines().next().unwrap_or_default().trim().to_owned())
        }
        (None, None) => None,
    };
    match token {
        Some(t) if t.len() < 16 => anyhow::bail!("{name} must be at least 16 characters"),
        other => Ok(other),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// UTC offset at whose midnight daily quotas reset, like `+00:00` or `-05:00`.
    pub reset_utc_offset: String,
    pub costs: CostRules,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            reset_utc_offset: "+00:00".into(),
            costs: CostRules::default(),
        }
    }
}

impl BillingConfig {
    pub fn clock(&self) -> anyhow::Result<BillingClock> {
        BillingClock::from_offset(&self.reset_utc_offset)
            .map_err(|e| anyhow::anyhow!("billing.reset_utc_offset: {e}"))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// The selection policy and its bounds.
    pub policy: Policy,
    /// Queue positions are counted exactly up to this many jobs ahead.
    pub position_cap: u32,
    /// Positions come from a snapshot of the queue at most this old (ms).
    pub position_refresh_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            position_cap: 1000,
            position_refresh_ms: 500,
        }
    }
}

/// When a create is refused rather than queued ([`crate::admission`]), per plan id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// The longest expected wait (ms) a plan's new job is admitted into;
    /// a plan not named here uses `queue.policy.max_wait_ms`.
    pub max_wait_ms: std::collections::BTreeMap<String, i64>,
    /// The most queued jobs one user of a plan may have; a plan not named
    /// here, or 0, has no cap.
    pub max_queued_per_user: std::collections::BTreeMap<String, u32>,
}

impl AdmissionConfig {
    /// The plan's wait bound (ms), `policy_bound` where none is configured.
    pub fn bound_ms(&self, plan: &str, policy_bound: i64) -> i64 {
        self.max_wait_ms.get(plan).copied().unwrap_or(policy_bound)
    }

    /// The plan's cap on one user's queued jobs; `None` without one.
    /// Whether any plan has a cap on queued jobs.
    pub fn any_cap(&self) -> bool {
        self.max_queued_per_user.values().any(|&c| c > 0)
    }

    pub fn cap(&self, plan: &str) -> Option<u32> {
        self.max_queued_per_user
            .get(plan)
            .copied()
            .filter(|&c| c > 0)
    }
}

/// Run times assumed before real ones are measured, in seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EstimateConfig {
    pub image: f64,
    pub video: f64,
    pub text: f64,
    pub speech_to_text: f64,
    pub text_to_speech: f64,
    /// How many recent completed jobs the measured average is taken over.
    pub sample_size: u32,
}

impl Default for EstimateConfig {
    fn default() -> Self {
        Self {
            image: 30.0,
            video: 180.0,
            text: 10.0,
            speech_to_text: 20.0,
            text_to_speech: 5.0,
            sample_size: 50,
        }
    }
}

impl EstimateConfig {
    pub fn default_seconds(&self, c: Capability) -> f64 {
        match c {
            Capability::Image => self.image,
            Capability::Video => self.video,
            Capability::Text => self.text,
            Capability::SpeechToText => self.speech_to_text,
            Capability::TextToSpeech => self.text_to_speech,
        }
    }
}

impl SchedulerConfig {
    /// Defaults, then the TOML file if given, then `TESSERA_*` variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(SchedulerConfig::default()));
        if let Some(path) = file {
            if !path.exists() {
                anyhow::bail!("config file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file(path));
        }
        let config: SchedulerConfig = fig
            // Every key sits in a section, so only variables with `__` are settings;
            // others (TESSERA_URL, TESSERA_ADMIN_TOKEN for the CLI) are left alone,
            // and so are the worker's (TESSERA_WORKER__*).
            .merge(
                Env::prefixed("TESSERA_")
                    .split("__")
                    // Keys keep the variable's case here: compare without it.
                    .filter(|k| {
                        let k = k.as_str().to_ascii_lowercase();
                        k.contains('.') && !k.starts_with("worker.")
                    }),
            )
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        config.check()?;
        Ok(config)
    }

    /// Checks what the types cannot: offsets, catalogue, tokens.
    pub fn check(&self) -> anyhow::Result<()> {
        self.billing.clock()?;
        self.catalog.check().map_err(anyhow::Error::msg)?;
        self.auth.admin_token()?;
        self.auth.internal_token()?;
        self.artifacts.link_secret()?;
        self.payments.discord.check().map_err(anyhow::Error::msg)?;
        self.payments.telegram.check()?;
        tessera_core::moderation::PromptPolicy::compile(&self.moderation)?;
        self.moderation
            .outputs
            .check(|label| label.parse::<tessera_moderation::Label>().is_ok())
            .map_err(anyhow::Error::msg)?;
        self.webhooks.networks()?;
        let h = &self.webhooks;
        if h.first_retry_ms == 0 || h.max_retry_ms < h.first_retry_ms {
            anyhow::bail!(
                "webhooks: first_retry_ms must be positive and max_retry_ms at least first_retry_ms"
            );
        }
        if h.max_age_secs == 0 || h.timeout_ms == 0 || h.poll_ms == 0 {
            anyhow::bail!("webhooks: max_age_secs, timeout_ms and poll_ms must be positive");
        }
        if self.artifacts.link_lifetime_secs == 0 {
            anyhow::bail!("artifacts.link_lifetime_secs must be positive");
        }
        let p = &self.queue.policy;
        let w = &self.workers;
        if w.heartbeat_interval_ms == 0 || w.missed_heartbeats == 0 || w.max_attempts == 0 {
            anyhow::bail!(
                "workers: heartbeat_interval_ms, missed_heartbeats and max_attempts must be positive"
            );
        }
        if self.artifacts.orphan_grace_secs < 60 {
            anyhow::bail!(
                "artifacts.orphan_grace_secs must be at least 60: a result's objects are written before its row commits"
            );
        }
        if p.max_wait_ms <= 0 || p.affinity_patience_ms < 0 {
            anyhow::bail!(
                "queue.policy: max_wait_ms must be positive and affinity_patience_ms not negative"
            );
        }
        if let Some((plan, _)) = self.admission.max_wait_ms.iter().find(|(_, &ms)| ms <= 0) {
            anyhow::bail!("admission.max_wait_ms.{plan} must be positive");
        }
        Ok(())
    }
}

/// The commented reference configuration, `tessera config example`.
pub const EXAMPLE: &str = include_str!("../tessera.example.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_is_exactly_the_defaults() {
        let parsed: SchedulerConfig = Figment::new()
            .merge(Toml::string(EXAMPLE))
            .extract()
            .expect("example parses");
        assert_eq!(parsed, SchedulerConfig::default());
    }

    #[test]
    fn the_reference_document_shows_the_example() {
        let doc = include_str!("../../../docs/configuration.md");
        assert!(
            doc.contains(EXAMPLE),
            "docs/configuration.md must contain `tessera config example` verbatim"
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "t.toml",
                "[database]\nurl = \"sqlite://a.db\"\nmax_connections = 3\n",
            )?;
            jail.set_env("TESSERA_DATABASE__URL", "postgres://x@localhost/y");
            jail.set_env("TESSERA_ADMIN_TOKEN", "not a scheduler setting");
            jail.set_env(
                "TESSERA_WORKER__ID",
                "a worker's setting, not the scheduler's",
            );
            let c = SchedulerConfig::load(Some(Path::new("t.toml"))).unwrap();
            assert_eq!(c.database.url, "postgres://x@localhost/y");
            assert_eq!(c.database.max_connections, 3);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn admission_is_set_per_plan_from_the_file_or_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "t.toml",
                "[admission.max_wait_ms]
free = 600000
[admission.max_queued_per_user]
free = 3
",
            )?;
            jail.set_env("TESSERA_ADMISSION__MAX_WAIT_MS__PRO", "1800000");
            let c = SchedulerConfig::load(Some(Path::new("t.toml"))).unwrap();
            assert_eq!(c.admission.bound_ms("free", 900_000), 600_000);
            assert_eq!(c.admission.bound_ms("pro", 900_000), 1_800_000);
            assert_eq!(c.admission.bound_ms("starter", 900_000), 900_000);
            assert_eq!(c.admission.cap("free"), Some(3));
            assert_eq!(c.admission.cap("pro"), None);
            jail.create_file(
                "bad.toml",
                "[admission.max_wait_ms]
free = 0
",
            )?;
            let e = SchedulerConfig::load(Some(Path::new("bad.toml"))).unwrap_err();
            assert!(
                e.to_string()
                    .contains("admission.max_wait_ms.free must be positive"),
                "{e}"
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn moderation_rules_are_checked_at_start() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "ok.toml",
                "[[moderation.rules]]\nname = \"gore\"\nwords = [\"gore\"]\naction = \"refuse\"\n\
                 message = \"No gore.\"\nchannels = [\"telegram\"]\nplans = [\"free\"]\n",
            )?;
            let c = SchedulerConfig::load(Some(Path::new("ok.toml"))).unwrap();
            assert_eq!(
                c.moderation.rules[0].channels,
                [tessera_core::Platform::Telegram]
            );
            jail.create_file(
                "regex.toml",
                "[[moderation.rules]]\nname = \"brands\"\npattern = \"(acme\"\naction = \"refuse\"\n",
            )?;
            let e = SchedulerConfig::load(Some(Path::new("regex.toml"))).unwrap_err();
            assert!(e.to_string().contains("moderation rule `brands`"), "{e}");
            assert!(
                e.to_string().contains("not a valid regular expression"),
                "{e}"
            );
            // The built-in child-safety rules cannot be switched off, from
            // the file or from the environment.
            jail.create_file(
                "off.toml",
                "[[moderation.rules]]\nname = \"child_safety\"\naction = \"refuse\"\nenabled = false\n",
            )?;
            let e = SchedulerConfig::load(Some(Path::new("off.toml"))).unwrap_err();
            assert!(e.to_string().contains("`child_safety`"), "{e}");
            assert!(e.to_string().contains("cannot be switched off"), "{e}");
            jail.create_file(
                "weak.toml",
                "[[moderation.rules]]\nname = \"child_safety_terms\"\naction = \"require_nsfw\"\n",
            )?;
            let e = SchedulerConfig::load(Some(Path::new("weak.toml"))).unwrap_err();
            assert!(e.to_string().contains("cannot be switched off"), "{e}");
            jail.create_file(
                "unknown.toml",
                "[[moderation.rules]]\nname = \"x\"\nwords = [\"x\"]\naction = \"ban\"\n",
            )?;
            let e = SchedulerConfig::load(Some(Path::new("unknown.toml"))).unwrap_err();
            assert!(e.to_string().contains("ban"), "{e}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn output_thresholds_are_checked_at_start() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "ok.toml",
                "[moderation.outputs]\nunclassified = \"withhold\"\nrefund = false\n\
                 [moderation.outputs.thresholds]\nFACE_FEMALE = 0.3\n",
            )?;
            let c = SchedulerConfig::load(Some(Path::new("ok.toml"))).unwrap();
            let outputs = &c.moderation.outputs;
            assert_eq!(
                outputs.unclassified,
                tessera_core::moderation::outputs::Unclassified::Withhold
            );
            assert!(!outputs.refund);
            // Labels named add to the defaults (or change them); the
            // defaults stay.
            assert_eq!(outputs.thresholds.get("FACE_FEMALE"), Some(&0.3));
            assert_eq!(outputs.thresholds.get("ANUS_EXPOSED"), Some(&0.4));
            jail.create_file(
                "label.toml",
                "[moderation.outputs.thresholds]\nFACE_FEMALES = 0.3\n",
            )?;
            let e = SchedulerConfig::load(Some(Path::new("label.toml"))).unwrap_err();
            assert!(
                e.to_string().contains("`FACE_FEMALES` is not a label"),
                "{e}"
            );
            jail.create_file(
                "score.toml",
                "[moderation.outputs.thresholds]\nFACE_FEMALE = 2.0\n",
            )?;
            let e = SchedulerConfig::load(Some(Path::new("score.toml"))).unwrap_err();
            assert!(e.to_string().contains("between 0 and 1"), "{e}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn mistakes_are_reported_with_their_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("t.toml", "[billing]\nreset_utc_offset = \"UTC\"\n")?;
            let e = SchedulerConfig::load(Some(Path::new("t.toml"))).unwrap_err();
            assert!(e.to_string().contains("billing.reset_utc_offset"), "{e}");
            jail.create_file("u.toml", "[server]\nlisten_on = 1\n")?;
            let e = SchedulerConfig::load(Some(Path::new("u.toml"))).unwrap_err();
            assert!(e.to_string().contains("listen_on"), "{e}");
            jail.create_file("v.toml", "[auth]\nadmin_token = \"short\"\n")?;
            let e = SchedulerConfig::load(Some(Path::new("v.toml"))).unwrap_err();
            assert!(e.to_string().contains("at least 16"), "{e}");
            Ok(())
        });
    }
}
