//! The public API (`/api/v1`), spoken by frontends with their API key.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use tessera_core::{
    ArtifactId, BotId, Capability, InputId, JobId, JobState, Plan, Platform, UserRef,
};

/// `POST /api/v1/jobs` (README.md, "Try the API").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
// A whole request, so a reader (or a tool generating requests from the
// document) sees one that the seed's first Telegram bot may send as it is.
#[schema(example = json!({
    "frontend": "telegram",
    "bot_id": "tg-image-bot-1",
    "capability": "image",
    "user_ref": "telegram:123456",
    "reply_context": {"chat": 123456, "message": 42},
    "params": {"prompt": "a beautiful sunset", "resolution": "1024x1024"}
}))]
pub struct CreateJobRequest {
    /// The frontend kind; must match the API key.
    pub frontend: Platform,
    /// The bot instance speaking; must match the API key.
    pub bot_id: BotId,
    pub capability: Capability,
    /// `platform:id` of the user the job is for; created on first sight.
    pub user_ref: UserRef,
    /// Opaque to Tessera: where the frontend will reply (chat, message). At most 4 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub reply_context: Option<Value>,
    /// Per-capability parameters, for example `{"prompt": "...", "resolution": "1024x1024"}`.
    #[schema(value_type = Object, example = json!({"prompt": "a beautiful sunset", "resolution": "1024x1024"}))]
    pub params: Value,
    /// Where the request comes from, for whether adult content is allowed
    /// (a Discord channel's `nsfw` flag, a Telegram chat); only the fields
    /// of the key's kind of frontend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<crate::nsfw::JobContext>,
    /// Where to POST the job, signed, when it ends (docs/webhooks.md): an
    /// absolute `http` or `https` URL of at most 2048 characters, without
    /// credentials, whose host resolves to public addresses only (unless the
    /// operator allows more). The key needs a webhook secret first
    /// (`POST /api/v1/webhook-secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "https://example.com/hooks/tessera")]
    pub callback_url: Option<String>,
}

/// The body of a job webhook (docs/webhooks.md): the event, and the job as
/// `GET /api/v1/jobs/{job_id}` answers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookEvent {
    /// The delivery's id, the same on every attempt (and in the
    /// `Tessera-Webhook-Id` header): a receiver handles each id once.
    pub webhook_id: crate::core::WebhookId,
    /// `job.completed`, `job.failed` or `job.cancelled`.
    #[serde(rename = "type")]
    #[schema(example = "job.completed")]
    pub event: String,
    /// When the job ended and the delivery was made due.
    pub created_at: DateTime<Utc>,
    pub job: JobView,
}

/// Longest `callback_url`.
pub const MAX_CALLBACK_URL_LEN: usize = 2048;

/// A key's new webhook signing secret, shown once (docs/webhooks.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WebhookSecret {
    /// `whsec_` and 64 hex digits: the HMAC-SHA256 key of every webhook
    /// this key's jobs send from now on. It replaces any earlier one.
    #[schema(example = "whsec_9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")]
    pub secret: String,
    pub created_at: DateTime<Utc>,
}

/// Answer to a create (README.md, "Try the API").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreateJobResponse {
    pub job_id: JobId,
    pub status: JobState,
    /// Expected seconds until the job is done, from queue position and measured run times.
    pub estimated_time_seconds: u64,
    pub cost_tokens: i64,
}

/// A job as a frontend sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub job_id: JobId,
    pub status: JobState,
    pub frontend: Platform,
    pub bot_id: BotId,
    pub capability: Capability,
    pub model: String,
    pub user_ref: UserRef,
    /// The validated parameters, defaults filled in.
    #[schema(value_type = Object)]
    pub params: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub reply_context: Option<Value>,
    pub cost_tokens: i64,
    /// True once the cost went back to the user (FAILED or CANCELLED).
    pub refunded: bool,
    /// How many times the job was dispatched to a worker.
    pub attempts: i32,
    /// Jobs ahead of this one that the same workers would serve first; QUEUED only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u64>,
    /// Expected seconds until done; live jobs only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_time_seconds: Option<u64>,
    /// Percent done as reported by the engine, RUNNING only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f32>,
    /// Why the job failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    /// Why a queued job is not moving, when the scheduler knows (`no_worker`:
    /// no online worker serves its model; it fails after `workers.unservable_after_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<JobError>,
    /// The outputs of a COMPLETED job, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactView>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// When the frontend acknowledged delivering the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
    /// Where the job's webhook goes when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

/// An output of a job (the seed's artifacts table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactView {
    pub artifact_id: ArtifactId,
    /// `image`, `video`, `audio` or `text`.
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "image")]
    pub kind: crate::internal::ArtifactKind,
    /// File extension: `png`, `webp`, `apng`, `mp4`, `wav`, `txt`...
    pub format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Bytes.
    pub file_size: u64,
    /// Where to download it with the frontend's key, relative to the API's base URL.
    #[schema(example = "/api/v1/artifacts/art_01JD3Z8X9Q4W6E2R5T7Y9V1K3M")]
    pub url: String,
    pub created_at: DateTime<Utc>,
}

/// Answer to `POST /api/v1/inputs`: the id to pass as a job's `input_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InputUploaded {
    pub input_id: InputId,
    pub content_type: String,
    pub size: u64,
}

/// The reason a job ended badly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobError {
    #[schema(example = "cancelled_by_user")]
    pub code: String,
    pub message: String,
}

/// Filters of `GET /api/v1/jobs`. Newest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListJobsQuery {
    /// Only this user's jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>, pattern = "^(telegram|discord|web):[A-Za-z0-9_.@-]{1,64}$")]
    pub user_ref: Option<UserRef>,
    /// Only this bot's jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub bot_id: Option<BotId>,
    /// Only jobs in these states, comma-separated (`QUEUED,RUNNING`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<crate::schema::StatusFilter>)]
    pub status: Option<String>,
    /// `true`: only ended jobs whose delivery the frontend has not
    /// acknowledged (`POST /api/v1/jobs/{id}/delivered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undelivered: Option<bool>,
    /// Page size, 1 to 100 (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = r"^job_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub cursor: Option<String>,
}

/// A page of jobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/users/{user_ref}`: what a bot's `/quota` shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserQuota {
    pub user_ref: UserRef,
    pub plan: Plan,
    pub tokens_used_today: i64,
    /// Absent on unlimited plans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_left_today: Option<i64>,
    /// When the billing day ends and the quota resets.
    pub resets_at: DateTime<Utc>,
}

/// `GET /api/v1/plans`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PlanList {
    pub plans: Vec<Plan>,
}

/// `POST /api/v1/accounts` and `POST /api/v1/accounts/sign-in`: a website
/// account's email and password. Web keys only.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Compared without regard to case; 3 to 254 characters with one `@`.
    #[schema(format = Email, example = "ada@example.org")]
    pub email: String,
    /// 8 to 256 characters. Only an Argon2id hash of it is kept.
    #[schema(format = Password, min_length = 8, max_length = 256, example = "correct horse battery staple")]
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("email", &self.email)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// A website account: a `web:` user with an email and password, and the
/// Telegram and Discord users linked to it, who share its plan and quota.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AccountView {
    #[schema(example = "web:01jd3z8x9q4w6e2r5t7y9v1k3m")]
    pub user_ref: UserRef,
    /// As given at sign-up, lower-cased.
    pub email: String,
    /// `platform:id` of every bot user linked to this account.
    pub linked: Vec<UserRef>,
    pub created_at: DateTime<Utc>,
    /// When the account's owner confirmed being 18 or older (on the
    /// website's account page); absent until then. Adult content is
    /// allowed for the account's jobs on the website only once it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_confirmed_at: Option<DateTime<Utc>>,
}

/// `POST /api/v1/accounts/{user_ref}/developer-keys`: a signed-in account
/// makes a personal key for the OpenAI-compatible gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDeveloperKeyRequest {
    /// What the owner calls the key, to tell keys apart: 1 to 64 characters,
    /// not all spaces, no control characters; kept without the spaces
    /// around it.
    #[schema(
        example = "Open WebUI on my laptop",
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// The capabilities the key may use, each once; absent for every one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = capability_list)]
    pub capabilities: Option<Vec<tessera_core::Capability>>,
}

/// A key's capability list as the document states it: at least one, none twice.
fn capability_list() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(utoipa::openapi::Ref::from_schema_name("Capability"))
        .min_items(Some(1))
        .unique_items(true)
        .build()
}

/// A developer key as listed; the secret is never shown again after creation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeveloperKeyView {
    pub key_id: tessera_core::DeveloperKeyId,
    pub name: String,
    /// The capabilities the key may use; absent for every one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<tessera_core::Capability>>,
    pub created_at: DateTime<Utc>,
    /// When the key was last used, to the minute; absent if never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Answer to a developer key's creation: the only time the secret is shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedDeveloperKey {
    #[serde(flatten)]
    pub key: DeveloperKeyView,
    /// Send as `Authorization: Bearer <api_key>` to `/v1`. Store it now:
    /// only its hash is kept.
    pub api_key: String,
}

/// An account's developer keys, revoked ones too, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeveloperKeyList {
    pub keys: Vec<DeveloperKeyView>,
}

/// `POST /api/v1/link-codes`: a Telegram or Discord user asks for a code to
/// link their bot account to a website account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkCodeRequest {
    /// The bot user, on the key's platform: a Telegram or Discord user (a
    /// `web:` user is an account, and links nothing: 422 `not_linkable`).
    #[schema(value_type = String, pattern = r"^(telegram|discord):[A-Za-z0-9_.@-]{1,64}$", example = "telegram:123456")]
    pub user_ref: UserRef,
}

/// A one-time link code: entered on the website's account page before it expires.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LinkCode {
    /// Eight letters and digits in two groups, for example `K7QF-M2XD`.
    #[schema(example = "K7QF-M2XD")]
    pub code: String,
    pub expires_at: DateTime<Utc>,
}

/// `POST /api/v1/accounts/{user_ref}/links`: the website redeems a link code
/// for the signed-in account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemLinkRequest {
    /// As the bot showed it; case, spaces and the dash do not matter.
    #[schema(
        example = "K7QF-M2XD",
        pattern = r"^[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000-]*([2-9A-HJKMNP-Za-hjkmnp-z][\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000-]*){8}$"
    )]
    pub code: String,
}

/// `POST /api/v1/artifacts/{artifact_id}/download-link`: a signed address
/// of one output that works without a key or an account until it expires,
/// for outputs a chat platform will not take. The website serves it at
/// `path`; a bot puts its public address in front.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DownloadLink {
    /// What the website passes back to `GET /api/v1/download-links/{token}`.
    pub token: String,
    /// Where the website serves it, relative to its address: `/d/{token}`.
    #[schema(example = "/d/art_01JD3Z8X9Q4W6E2R5T7Y9V1K3M.1767312000000.9f2c...")]
    pub path: String,
    pub expires_at: DateTime<Utc>,
}

/// One event of `GET /api/v1/jobs/{job_id}/events`, as
/// [`crate::Client::follow_job`] reads it.
#[derive(Clone, Debug, PartialEq)]
pub enum JobStreamEvent {
    /// An attempt began on a worker: the text seen so far belongs to an
    /// earlier attempt and is void.
    Started,
    /// Percent done.
    Progress(f32),
    /// New output text, following the text since the last `Started`.
    Output(String),
    /// The job ended, as `GET /api/v1/jobs/{job_id}` answers it; the last event.
    End(Box<JobView>),
}
