//! A typed client for the public, admin and internal APIs.
//!
//! One `Client` holds a base URL and one bearer credential (a frontend key, the
//! admin token or the internal token). Every non-2xx answer becomes
//! [`ClientError::Api`] with the server's error envelope, so callers match on the
//! stable `code`. A worker's calls (heartbeats, inputs, progress, results) carry
//! the job's request id in `X-Request-Id` when they have one.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;

use crate::admin::{CreateKeyRequest, CreatedKey, KeyList, KeyView, SetPlanRequest};
use crate::error::ApiErrorBody;
use crate::internal::result_form::ResultForm;
use crate::internal::{
    Heartbeat, HeartbeatAck, OutputAck, OutputPiece, ProgressReport, ResultAck, WorkerList,
};
use crate::public::{
    AccountView, CreateJobRequest, CreateJobResponse, Credentials, DownloadLink, JobList,
    JobStreamEvent, JobView, LinkCode, LinkCodeRequest, ListJobsQuery, PlanList, RedeemLinkRequest,
    UserQuota,
};
use tessera_core::{ApiKeyId, ArtifactId, ErrorCode, InputId, JobId, PlanId, UserRef};

/// Longest a heartbeat or a progress report may take.
const SHORT_CALL: Duration = Duration::from_secs(10);
/// Longest the download of a job's input may take.
const INPUT_DOWNLOAD: Duration = Duration::from_secs(300);
/// Longest the upload of a result with its artifacts may take.
const RESULT_UPLOAD: Duration = Duration::from_secs(600);

/// What can go wrong calling the API.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error envelope.
    #[error("{status}: {} ({})", body.error.message, body.error.code)]
    Api {
        status: StatusCode,
        body: ApiErrorBody,
    },
    /// The server answered something that is not Tessera's JSON.
    #[error("unexpected answer {status}: {text}")]
    Unexpected { status: StatusCode, text: String },
    /// The request did not complete (connection refused, timeout, ...).
    #[error("request failed: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("invalid base URL: {0}")]
    Url(#[from] url::ParseError),
}

impl ClientError {
    /// The error code, when the server sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { body, .. } => Some(&body.error.code),
            _ => None,
        }
    }

    /// The error code, when the server sent one this version knows.
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.code().and_then(|c| c.parse().ok())
    }

    /// Whether the server refused with this code.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.code() == Some(code.as_str())
    }

    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } | ClientError::Unexpected { status, .. } => {
                Some(*status)
            }
            ClientError::Transport(e) => e.status(),
            ClientError::Url(_) => None,
        }
    }
}

mod nsfw;
mod outputs;
mod refunds;
mod review;

/// A created job and whether the server replayed an earlier create.
#[derive(Clone, Debug, PartialEq)]
pub struct Created {
    pub job: CreateJobResponse,
    pub replayed: bool,
    /// The `X-Request-Id` this create was sent with: logged here, it finds
    /// the job in the scheduler's and the worker's logs.
    pub request_id: String,
}

#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: String,
}

impl Client {
    /// A client for the scheduler at `base` (for example `http://127.0.0.1:8000`).
    pub fn new(base: &str, token: impl Into<String>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Self::with_http(http, base, token)?)
    }

    /// A client sharing an existing connection pool.
    pub fn with_http(
        http: reqwest::Client,
        base: &str,
        token: impl Into<String>,
    ) -> Result<Self, url::ParseError> {
        let mut base = Url::parse(base)?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(Self {
            http,
            base,
            token: token.into(),
        })
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> Result<RequestBuilder, ClientError> {
        let url = self.base.join(path.trim_start_matches('/'))?;
        Ok(self.http.request(method, url).bearer_auth(&self.token))
    }

    /// A non-2xx answer: the server's error envelope, or its text when it
    /// sent something else.
    fn failure(status: StatusCode, bytes: &[u8]) -> ClientError {
        match serde_json::from_slice::<ApiErrorBody>(bytes) {
            Ok(body) => ClientError::Api { status, body },
            Err(_) => ClientError::Unexpected {
                status,
                text: String::from_utf8_lossy(bytes).into_owned(),
            },
        }
    }

    /// Sends a request whose success has no body worth reading.
    async fn send_empty(rb: RequestBuilder) -> Result<(), ClientError> {
        let resp = rb.send().await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let bytes = resp.bytes().await?;
        Err(Self::failure(status, &bytes))
    }

    async fn send<T: DeserializeOwned>(rb: RequestBuilder) -> Result<T, ClientError> {
        let (value, _) = Self::send_with_headers(rb).await?;
        Ok(value)
    }

    async fn send_with_headers<T: DeserializeOwned>(
        rb: RequestBuilder,
    ) -> Result<(T, reqwest::header::HeaderMap), ClientError> {
        let resp = rb.send().await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map(|v| (v, headers))
                .map_err(|_| ClientError::Unexpected {
                    status,
                    text: String::from_utf8_lossy(&bytes).into_owned(),
                });
        }
        Err(Self::failure(status, &bytes))
    }

    fn json<B: Serialize>(rb: RequestBuilder, body: &B) -> RequestBuilder {
        rb.json(body)
    }

    // ---- public API ----

    /// Creates a job. With an idempotency key, a retry returns the first job.
    pub async fn create_job(
        &self,
        req: &CreateJobRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Created, ClientError> {
        let request_id = format!("req_{}", ulid::Ulid::new());
        let mut rb = Self::json(self.request(Method::POST, "api/v1/jobs")?, req)
            .header(crate::REQUEST_ID, &request_id);
        if let Some(k) = idempotency_key {
            rb = rb.header(crate::IDEMPOTENCY_KEY, k);
        }
        let (job, headers) = Self::send_with_headers(rb).await?;
        let replayed = headers
            .get(crate::IDEMPOTENT_REPLAYED)
            .is_some_and(|v| v == "true");
        Ok(Created {
            job,
            replayed,
            request_id,
        })
    }

    pub async fn get_job(&self, id: &JobId) -> Result<JobView, ClientError> {
        Self::send(self.request(Method::GET, &format!("api/v1/jobs/{id}"))?).await
    }

    /// Follows a job's events (`GET /api/v1/jobs/{id}/events`) until it ends
    /// or `limit` passes; read them with [`JobEvents::next`].
    pub async fn follow_job(&self, id: &JobId, limit: Duration) -> Result<JobEvents, ClientError> {
        let rb = self.request(Method::GET, &format!("api/v1/jobs/{id}/events"))?;
        let resp = rb.timeout(limit).send().await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await?;
            return Err(Self::failure(status, &bytes));
        }
        Ok(JobEvents {
            resp,
            buf: Vec::new(),
        })
    }

    /// Keeps `text` the job's output text so far (emptied when an attempt
    /// starts over), from its events, until the job ends or its events cannot
    /// be had (a scheduler without them, a key that may not read the job):
    /// what shows a reply growing (the bots, the website's job page) runs
    /// this beside its own reads of the job. A stream cut short is opened
    /// again, a few times.
    pub async fn follow_text(&self, id: &JobId, text: &tokio::sync::watch::Sender<String>) {
        /// The longest one request for the events stays open.
        const LIMIT: Duration = Duration::from_secs(600);
        for _ in 0..5 {
            let mut events = match self.follow_job(id, LIMIT).await {
                Ok(events) => events,
                Err(_) => return,
            };
            loop {
                match events.next().await {
                    Ok(Some(JobStreamEvent::Started)) => {
                        text.send_replace(String::new());
                    }
                    Ok(Some(JobStreamEvent::Output(more))) => {
                        text.send_modify(|t| t.push_str(&more));
                    }
                    Ok(Some(JobStreamEvent::Progress(_))) => {}
                    Ok(Some(JobStreamEvent::End(_))) => return,
                    Ok(None) | Err(_) => break,
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Cancels a queued or running job; answers with the job as it now is.
    pub async fn cancel_job(&self, id: &JobId) -> Result<JobView, ClientError> {
        Self::send(self.request(Method::DELETE, &format!("api/v1/jobs/{id}"))?).await
    }

    /// Acknowledges that an ended job's outcome reached its user.
    pub async fn mark_delivered(&self, id: &JobId) -> Result<JobView, ClientError> {
        Self::send(self.request(Method::POST, &format!("api/v1/jobs/{id}/delivered"))?).await
    }

    pub async fn list_jobs(&self, query: &ListJobsQuery) -> Result<JobList, ClientError> {
        Self::send(self.request(Method::GET, "api/v1/jobs")?.query(query)).await
    }

    pub async fn get_user(
        &self,
        user_ref: impl std::fmt::Display,
    ) -> Result<UserQuota, ClientError> {
        Self::send(self.request(Method::GET, &format!("api/v1/users/{user_ref}"))?).await
    }

    pub async fn plans(&self) -> Result<PlanList, ClientError> {
        Self::send(self.request(Method::GET, "api/v1/plans")?).await
    }

    /// Creates or rotates this key's webhook signing secret; the answer is
    /// the only time it is shown.
    pub async fn rotate_webhook_secret(&self) -> Result<crate::public::WebhookSecret, ClientError> {
        Self::send(self.request(Method::POST, "api/v1/webhook-secret")?).await
    }

    // ---- accounts and links ----

    /// Creates a website account (web keys only).
    pub async fn create_account(
        &self,
        credentials: &Credentials,
    ) -> Result<AccountView, ClientError> {
        Self::send(Self::json(
            self.request(Method::POST, "api/v1/accounts")?,
            credentials,
        ))
        .await
    }

    /// Checks an email and password; `sign_in_failed` when they do not match an account.
    pub async fn sign_in(&self, credentials: &Credentials) -> Result<AccountView, ClientError> {
        let rb = self.request(Method::POST, "api/v1/accounts/sign-in")?;
        Self::send(Self::json(rb, credentials)).await
    }

    pub async fn get_account(
        &self,
        user_ref: impl std::fmt::Display,
    ) -> Result<AccountView, ClientError> {
        Self::send(self.request(Method::GET, &format!("api/v1/accounts/{user_ref}"))?).await
    }

    /// `GET /api/v1/accounts/{user_ref}/developer-keys`: the account's
    /// developer keys, revoked ones too (web keys of its website).
    pub async fn developer_keys(
        &self,
        user_ref: impl std::fmt::Display,
    ) -> Result<crate::public::DeveloperKeyList, ClientError> {
        let path = format!("api/v1/accounts/{user_ref}/developer-keys");
        Self::send(self.request(Method::GET, &path)?).await
    }

    /// `POST /api/v1/accounts/{user_ref}/developer-keys`: a new developer
    /// key; the answer holds its secret, shown this once.
    pub async fn create_developer_key(
        &self,
        user_ref: impl std::fmt::Display,
        request: &crate::public::NewDeveloperKeyRequest,
    ) -> Result<crate::public::CreatedDeveloperKey, ClientError> {
        let path = format!("api/v1/accounts/{user_ref}/developer-keys");
        Self::send(Self::json(self.request(Method::POST, &path)?, request)).await
    }

    /// `DELETE /api/v1/accounts/{user_ref}/developer-keys/{key_id}`.
    pub async fn revoke_developer_key(
        &self,
        user_ref: impl std::fmt::Display,
        key_id: &tessera_core::DeveloperKeyId,
    ) -> Result<crate::public::DeveloperKeyView, ClientError> {
        let path = format!("api/v1/accounts/{user_ref}/developer-keys/{key_id}");
        Self::send(self.request(Method::DELETE, &path)?).await
    }

    /// A one-time code a bot user enters on the website to link the two (bot keys only).
    pub async fn create_link_code(&self, user_ref: &UserRef) -> Result<LinkCode, ClientError> {
        let body = LinkCodeRequest {
            user_ref: user_ref.clone(),
        };
        Self::send(Self::json(
            self.request(Method::POST, "api/v1/link-codes")?,
            &body,
        ))
        .await
    }

    /// Links the bot user who asked for `code` to the account `user_ref`.
    pub async fn redeem_link_code(
        &self,
        user_ref: impl std::fmt::Display,
        code: &str,
    ) -> Result<AccountView, ClientError> {
        let body = RedeemLinkRequest {
            code: code.to_owned(),
        };
        let rb = self.request(Method::POST, &format!("api/v1/accounts/{user_ref}/links"))?;
        Self::send(Self::json(rb, &body)).await
    }

    // ---- Discord premium app subscriptions (Discord keys only) ----

    /// Relays the entitlements Discord showed the bot; the plan now applies.
    pub async fn relay_entitlements(
        &self,
        req: &crate::entitlements::EntitlementsRequest,
    ) -> Result<crate::entitlements::EntitlementsOutcome, ClientError> {
        let rb = self.request(Method::POST, "api/v1/payments/discord/entitlements")?;
        Self::send(Self::json(rb, req)).await
    }

    /// The SKU of each plan sold in Discord.
    pub async fn discord_skus(&self) -> Result<crate::entitlements::DiscordSkus, ClientError> {
        Self::send(self.request(Method::GET, "api/v1/payments/discord/skus")?).await
    }

    /// The plans the website sells through Stripe (web keys only); empty
    /// when the scheduler takes no Stripe payments.
    pub async fn stripe_offers(&self) -> Result<crate::stripe::StripeOffers, ClientError> {
        Self::send(self.request(Method::GET, "api/v1/payments/stripe/plans")?).await
    }

    /// Starts a Stripe Checkout for the account to buy `req.plan_id` (web
    /// keys only): the URL of Stripe's page to send the visitor to.
    pub async fn stripe_checkout(
        &self,
        req: &crate::stripe::StripeCheckoutRequest,
    ) -> Result<crate::stripe::PaymentRedirect, ClientError> {
        let rb = self.request(Method::POST, "api/v1/payments/stripe/checkout")?;
        Self::send(Self::json(rb, req)).await
    }

    /// Opens Stripe's customer portal for the account (web keys only): the
    /// URL to send the visitor to.
    pub async fn stripe_portal(
        &self,
        req: &crate::stripe::StripePortalRequest,
    ) -> Result<crate::stripe::PaymentRedirect, ClientError> {
        let rb = self.request(Method::POST, "api/v1/payments/stripe/portal")?;
        Self::send(Self::json(rb, req)).await
    }

    /// A signed link to an artifact this key may read, served by the website
    /// without a key or an account until it expires.
    pub async fn create_download_link(
        &self,
        artifact_id: &ArtifactId,
    ) -> Result<DownloadLink, ClientError> {
        let path = format!("api/v1/artifacts/{artifact_id}/download-link");
        Self::send(self.request(Method::POST, &path)?).await
    }

    /// Starts the download a link's token names (web keys only), streamed
    /// like [`Self::fetch`]. Only tokens of the characters links are made of
    /// are sent; anything else is refused here as the scheduler would.
    pub async fn fetch_download_link(
        &self,
        token: &str,
        range: Option<&str>,
    ) -> Result<reqwest::Response, ClientError> {
        if token.is_empty()
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        {
            return Err(ClientError::Api {
                status: StatusCode::FORBIDDEN,
                body: ApiErrorBody::new(
                    ErrorCode::DownloadLinkInvalid,
                    "this download link is not valid: it was altered or cut short",
                ),
            });
        }
        self.fetch(&format!("api/v1/download-links/{token}"), range)
            .await
    }

    // ---- admin API ----

    pub async fn create_key(&self, req: &CreateKeyRequest) -> Result<CreatedKey, ClientError> {
        Self::send(Self::json(
            self.request(Method::POST, "api/admin/keys")?,
            req,
        ))
        .await
    }

    pub async fn list_keys(&self) -> Result<KeyList, ClientError> {
        Self::send(self.request(Method::GET, "api/admin/keys")?).await
    }

    pub async fn revoke_key(&self, id: &ApiKeyId) -> Result<KeyView, ClientError> {
        Self::send(self.request(Method::DELETE, &format!("api/admin/keys/{id}"))?).await
    }

    pub async fn set_plan(
        &self,
        user_ref: impl std::fmt::Display,
        plan_id: &PlanId,
    ) -> Result<UserQuota, ClientError> {
        let body = SetPlanRequest {
            plan_id: plan_id.clone(),
        };
        let rb = self.request(Method::PUT, &format!("api/admin/users/{user_ref}/plan"))?;
        Self::send(Self::json(rb, &body)).await
    }

    pub async fn admin_list_jobs(&self, query: &ListJobsQuery) -> Result<JobList, ClientError> {
        Self::send(self.request(Method::GET, "api/admin/jobs")?.query(query)).await
    }

    pub async fn admin_cancel_job(&self, id: &JobId) -> Result<JobView, ClientError> {
        Self::send(self.request(Method::DELETE, &format!("api/admin/jobs/{id}"))?).await
    }

    pub async fn list_payments(
        &self,
        query: &crate::admin::ListPaymentsQuery,
    ) -> Result<crate::admin::PaymentList, ClientError> {
        Self::send(
            self.request(Method::GET, "api/admin/payments")?
                .query(query),
        )
        .await
    }

    pub async fn grant_plan(
        &self,
        req: &crate::admin::GrantPlanRequest,
    ) -> Result<crate::admin::PaymentEventView, ClientError> {
        Self::send(Self::json(
            self.request(Method::POST, "api/admin/payments/grant")?,
            req,
        ))
        .await
    }

    pub async fn revoke_plan(
        &self,
        req: &crate::admin::RevokePlanRequest,
    ) -> Result<crate::admin::PaymentEventView, ClientError> {
        Self::send(Self::json(
            self.request(Method::POST, "api/admin/payments/revoke")?,
            req,
        ))
        .await
    }

    pub async fn list_workers(&self) -> Result<WorkerList, ClientError> {
        Self::send(self.request(Method::GET, "api/admin/workers")?).await
    }

    /// Uploads an input (the audio of a speech-to-text job) for jobs to read.
    pub async fn upload_input(
        &self,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<crate::public::InputUploaded, ClientError> {
        Self::send(
            self.request(Method::POST, "api/v1/inputs")?
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes),
        )
        .await
    }

    /// Downloads an artifact by the `url` of its view (or `/api/v1/artifacts/{id}`).
    pub async fn download(&self, url: &str) -> Result<Vec<u8>, ClientError> {
        Ok(self.fetch(url, None).await?.bytes().await?.to_vec())
    }

    /// Starts a download and hands back the answer as it arrives, to stream
    /// it on; `range` goes as the `Range` header (`bytes=0-1023`), and a
    /// partial answer is 206 with `Content-Range`.
    pub async fn fetch(
        &self,
        url: &str,
        range: Option<&str>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut rb = self.request(Method::GET, url)?;
        if let Some(range) = range {
            rb = rb.header(reqwest::header::RANGE, range);
        }
        let resp = rb.send().await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = resp.bytes().await?;
        Err(Self::failure(status, &bytes))
    }

    // ---- internal API (with the internal token) ----

    /// Adds a job's request id, so the scheduler logs a worker's calls for the
    /// job under the id of the request that created it.
    fn traced(rb: RequestBuilder, request_id: Option<&str>) -> RequestBuilder {
        match request_id {
            Some(id) => rb.header(crate::REQUEST_ID, id),
            None => rb,
        }
    }

    /// `POST /api/internal/heartbeat`: a worker says it is alive and what it
    /// runs; the answer names jobs to stop.
    pub async fn heartbeat(&self, hb: &Heartbeat) -> Result<HeartbeatAck, ClientError> {
        let rb = self.request(Method::POST, "api/internal/heartbeat")?;
        Self::send(Self::json(rb.timeout(SHORT_CALL), hb)).await
    }

    /// `GET /api/internal/inputs/{input_id}`: the bytes of an input a job reads.
    pub async fn fetch_input(
        &self,
        id: &InputId,
        request_id: Option<&str>,
    ) -> Result<bytes::Bytes, ClientError> {
        let rb = self.request(Method::GET, &format!("api/internal/inputs/{id}"))?;
        let resp = Self::traced(rb.timeout(INPUT_DOWNLOAD), request_id)
            .send()
            .await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status.is_success() {
            return Ok(bytes);
        }
        Err(Self::failure(status, &bytes))
    }

    /// `POST /api/internal/jobs/{job_id}/progress`; 409 `stale_attempt` when the
    /// attempt is no longer the job's current one.
    pub async fn report_progress(
        &self,
        job_id: &JobId,
        report: &ProgressReport,
        request_id: Option<&str>,
    ) -> Result<(), ClientError> {
        let rb = self.request(
            Method::POST,
            &format!("api/internal/jobs/{job_id}/progress"),
        )?;
        let rb = Self::json(Self::traced(rb.timeout(SHORT_CALL), request_id), report);
        Self::send_empty(rb).await
    }

    /// `POST /api/internal/jobs/{job_id}/output`: a piece of the attempt's
    /// output text; 409 `stale_attempt` when the attempt is no longer the
    /// job's current one, 409 `output_gap` when the piece does not follow
    /// what the scheduler holds (send the whole text again from offset 0).
    pub async fn send_output(
        &self,
        job_id: &JobId,
        piece: &OutputPiece,
        request_id: Option<&str>,
    ) -> Result<OutputAck, ClientError> {
        let rb = self.request(Method::POST, &format!("api/internal/jobs/{job_id}/output"))?;
        let rb = Self::json(Self::traced(rb.timeout(SHORT_CALL), request_id), piece);
        Self::send(rb).await
    }

    /// `POST /api/internal/jobs/{job_id}/result`: one try of a result upload
    /// (the caller retries); 409 `stale_attempt` or 404 say the scheduler will
    /// never take it.
    pub async fn deliver_result(
        &self,
        job_id: &JobId,
        form: &ResultForm,
        request_id: Option<&str>,
    ) -> Result<ResultAck, ClientError> {
        let rb = self.request(Method::POST, &format!("api/internal/jobs/{job_id}/result"))?;
        let rb = Self::traced(rb.timeout(RESULT_UPLOAD), request_id).multipart(form.to_multipart());
        Self::send(rb).await
    }
}

/// A job's server-sent events, as [`Client::follow_job`] opened them.
pub struct JobEvents {
    resp: reqwest::Response,
    /// Bytes read and not yet parsed (a read may end inside a character).
    buf: Vec<u8>,
}

impl JobEvents {
    /// The next event, or `None` once the stream closed (after `End`, or
    /// cut short). Keep-alive comments and events of names this client does
    /// not know are skipped.
    pub async fn next(&mut self) -> Result<Option<JobStreamEvent>, ClientError> {
        loop {
            while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                if let Some(event) = Self::parse(&String::from_utf8_lossy(&block))? {
                    return Ok(Some(event));
                }
            }
            match self.resp.chunk().await? {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None => return Ok(None),
            }
        }
    }

    fn parse(block: &str) -> Result<Option<JobStreamEvent>, ClientError> {
        let mut name = "";
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim_start();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        let unexpected = |e: serde_json::Error| ClientError::Unexpected {
            status: StatusCode::OK,
            text: format!("a `{name}` event that is not one ({e}): {data}"),
        };
        #[derive(serde::Deserialize)]
        struct Progress {
            progress: f32,
        }
        #[derive(serde::Deserialize)]
        struct Output {
            text: String,
        }
        Ok(Some(match name {
            "started" => JobStreamEvent::Started,
            "progress" => JobStreamEvent::Progress(
                serde_json::from_str::<Progress>(&data)
                    .map_err(unexpected)?
                    .progress,
            ),
            "output" => JobStreamEvent::Output(
                serde_json::from_str::<Output>(&data)
                    .map_err(unexpected)?
                    .text,
            ),
            "end" => {
                JobStreamEvent::End(Box::new(serde_json::from_str(&data).map_err(unexpected)?))
            }
            _ => return Ok(None),
        }))
    }
}

/// Telegram Stars payments (Telegram keys only).
impl Client {
    /// `GET /api/v1/payments/telegram/plans`: the plans Telegram sells.
    pub async fn stars_offers(&self) -> Result<crate::stars::StarsOffers, ClientError> {
        Self::send(self.request(Method::GET, "api/v1/payments/telegram/plans")?).await
    }

    /// `POST /api/v1/payments/telegram/invoices`: a signed invoice for the user.
    pub async fn stars_invoice(
        &self,
        body: &crate::stars::StarsInvoiceRequest,
    ) -> Result<crate::stars::StarsInvoice, ClientError> {
        let rb = self.request(Method::POST, "api/v1/payments/telegram/invoices")?;
        Self::send(Self::json(rb, body)).await
    }

    /// `POST /api/v1/payments/telegram/pre-checkout`, within a few seconds
    /// (Telegram waits 10 s for the bot's answer).
    pub async fn stars_pre_checkout(
        &self,
        body: &crate::stars::StarsPreCheckout,
    ) -> Result<crate::stars::StarsPreCheckoutOk, ClientError> {
        let rb = self.request(Method::POST, "api/v1/payments/telegram/pre-checkout")?;
        Self::send(Self::json(rb.timeout(Duration::from_secs(6)), body)).await
    }

    /// `POST /api/v1/payments/telegram/payments`: a `successful_payment`.
    pub async fn stars_payment(
        &self,
        body: &crate::stars::StarsPayment,
    ) -> Result<crate::stars::StarsPaymentOutcome, ClientError> {
        let rb = self.request(Method::POST, "api/v1/payments/telegram/payments")?;
        Self::send(Self::json(rb, body)).await
    }

    /// `POST /api/v1/payments/telegram/refund-requests`: the charge the bot may refund.
    pub async fn stars_refundable(
        &self,
        user_ref: &UserRef,
    ) -> Result<crate::stars::StarsRefundable, ClientError> {
        let body = crate::stars::StarsRefundRequest {
            user_ref: user_ref.clone(),
        };
        let rb = self.request(Method::POST, "api/v1/payments/telegram/refund-requests")?;
        Self::send(Self::json(rb, &body)).await
    }

    /// `POST /api/v1/payments/telegram/refunds`: Telegram refunded the charge.
    pub async fn stars_refunded(
        &self,
        body: &crate::stars::StarsRefunded,
    ) -> Result<crate::stars::StarsPaymentOutcome, ClientError> {
        let rb = self.request(Method::POST, "api/v1/payments/telegram/refunds")?;
        Self::send(Self::json(rb, body)).await
    }
}
