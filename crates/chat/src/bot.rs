//! One bot instance, platform-neutral: what happens to a message, and how a
//! job is followed from the queue to the user's chat.
//!
//! A platform crate turns its updates into [`Incoming`] messages and
//! implements [`Messenger`] (send, edit, send a file). Everything else is here:
//! rate limits, commands, creating jobs on the public API, one progress
//! message per job edited in place (at most every `min_edit_ms`; a text
//! reply grows in it as the engine writes, from the job's events), delivery of
//! the outputs, and the delivery acknowledgement that lets a restarted bot
//! ([`Bot::resume`]) deliver what the previous process could not.
//!
//! Where to reply lives in the job's `reply_context` (`{"chat", "message"}`:
//! the chat and the progress message, and the largest upload the platform
//! allowed there, when it said), so the bot keeps no state worth losing.
//!
//! An output larger than the platform takes is never uploaded: the bot asks
//! the scheduler for a download link and sends it, on the website whose
//! address is `site_url`. So is one the platform refuses for its size.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tessera_api::client::{Client, ClientError};
use tessera_api::internal::ArtifactKind;
use tessera_api::public::{ArtifactView, CreateJobRequest, JobView, ListJobsQuery};
use tessera_core::{BotId, Capability, ErrorCode, JobId, JobState, Platform, UserRef};

use crate::command::{self, Command};
use crate::limits::{LimitConfig, Limits};
use crate::words;

/// A message from a user, as the platform crate read it.
#[derive(Clone, Debug)]
pub struct Incoming {
    /// Where to answer (a chat or channel id).
    pub chat: String,
    /// What names this message uniquely for this bot (Telegram: chat and
    /// message id; Discord: the interaction id), at most 100 characters: it
    /// makes job creation idempotent when a platform delivers a message twice.
    pub message_id: String,
    /// The platform's id of the user.
    pub user_id: String,
    pub text: Option<String>,
    /// A voice message or audio file, already downloaded.
    pub audio: Option<Audio>,
    /// A command the platform already took apart (Discord's slash commands
    /// with their options); used instead of parsing `text`.
    pub command: Option<Command>,
    /// The largest file the platform takes in answer to this message, when
    /// it says (Discord's `attachment_size_limit`).
    pub upload_limit: Option<u64>,
    /// Where the message was written, as the platform says, for whether
    /// adult content is allowed there (a Discord channel's `nsfw` flag, a
    /// Telegram chat); the scheduler decides.
    pub context: Option<tessera_api::nsfw::JobContext>,
    /// The message this one replies to, when it replies (Telegram's
    /// `reply_to_message`): `/report` finds the job by it.
    pub replied_to: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Audio {
    pub content_type: String,
    pub bytes: Bytes,
}

/// A file to send to a chat.
#[derive(Clone, Debug)]
pub struct OutFile {
    pub kind: ArtifactKind,
    /// `png`, `mp4`, `wav`...
    pub format: String,
    pub bytes: Bytes,
    pub caption: Option<String>,
    /// Pixels, for images and videos, when the worker reported them.
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// Why the platform did not take a message.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The chat is gone or blocked the bot: stop trying.
    #[error("the chat cannot be reached: {0}")]
    Gone(String),
    /// The platform will never take this (text over its limits): the user
    /// is told, and the output counts as delivered.
    #[error("refused: {0}")]
    Refused(String),
    /// The platform refused the file for its size: it goes as a download
    /// link instead, never uploaded again.
    #[error("too large: {0}")]
    TooLarge(String),
    /// Anything else; worth another try later.
    #[error("{0}")]
    Failed(String),
}

/// What a platform must do for the bot. Implementations handle the platform's
/// own flood control (wait and retry) before giving up.
#[async_trait]
pub trait Messenger: Send + Sync + 'static {
    /// Sends a text message and answers its id.
    async fn send_text(&self, chat: &str, text: &str) -> Result<String, SendError>;
    /// Replaces the text of a message the bot sent.
    async fn edit_text(&self, chat: &str, message: &str, text: &str) -> Result<(), SendError>;
    /// Sends a file (photo, video, audio, document).
    async fn send_file(&self, chat: &str, file: OutFile) -> Result<(), SendError>;
    /// The largest file, in bytes, this platform takes in a reply whose
    /// message said `announced` (see [`Incoming::upload_limit`]); larger
    /// outputs go as download links.
    fn upload_limit(&self, announced: Option<u64>) -> u64 {
        announced.unwrap_or(u64::MAX)
    }
    /// Everything for this chat's job has been sent: forget what was kept
    /// about it.
    async fn finished(&self, _chat: &str) {}
}

/// How one bot instance behaves.
#[derive(Clone, Debug)]
pub struct BotSettings {
    pub platform: Platform,
    pub bot_id: BotId,
    /// The bot's name on the platform, for `/cmd@name`.
    pub username: Option<String>,
    pub capabilities: Vec<Capability>,
    pub limits: LimitConfig,
    /// How often a followed job is read.
    pub poll_ms: u64,
    /// Least time between two edits of one progress message.
    pub min_edit_ms: u64,
    /// The website's public address, for download links to outputs the
    /// platform will not take; without it those outputs are only described.
    pub site_url: Option<String>,
}

/// Where a job's answers go, kept in its `reply_context`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplyTo {
    pub chat: String,
    /// The progress message.
    pub message: String,
    /// The largest upload the platform allowed here, when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_limit: Option<u64>,
}

/// Outputs one instance downloads and sends at the same time. Each is held in
/// memory while it is sent, and the platforms throttle uploads anyway; the
/// others wait their turn (their progress messages already say done).
const DELIVERIES_AT_ONCE: usize = 4;

/// Tries at delivering one job before leaving it to the next start; the
/// pauses between them double from 2 s (about a minute in all).
const DELIVERY_ATTEMPTS: u32 = 6;

/// Cancels its token when dropped: a job's event reader stops with its follower.
struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Follows a job's events into `text` (see [`Client::follow_text`]) until
/// the job ends, its events cannot be had, or `stop`.
async fn stream_text(
    api: Client,
    job_id: JobId,
    text: tokio::sync::watch::Sender<String>,
    stop: CancellationToken,
) {
    tokio::select! {
        _ = api.follow_text(&job_id, &text) => {}
        _ = stop.cancelled() => {}
    }
}

/// Logs a refusal the operators must see: a key that is wrong or an error
/// on the scheduler's side. A user's own limits are not logged.
fn log_refusal(bot_id: &str, e: &ClientError) {
    match e.error_code() {
        Some(code) if code.is_credential() || code.is_server_side() => {
            tracing::error!(%bot_id, %code, error = %e, "the scheduler refused a request");
        }
        Some(_) => {}
        None if e.code().is_some() => {}
        None => tracing::warn!(%bot_id, error = %e, "the scheduler could not be reached"),
    }
}

/// One bot instance. Cheap to clone.
pub struct Bot<M: Messenger> {
    inner: Arc<Inner<M>>,
}

impl<M: Messenger> Clone for Bot<M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<M> {
    settings: BotSettings,
    api: Client,
    messenger: M,
    limits: Limits,
    following: Mutex<HashSet<JobId>>,
    deliveries: tokio::sync::Semaphore,
    /// Messages being handled.
    handlers: TaskTracker,
    /// Jobs being followed.
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl<M: Messenger> Bot<M> {
    pub fn new(settings: BotSettings, api: Client, messenger: M) -> Self {
        let limits = Limits::new(&settings.limits);
        Self {
            inner: Arc::new(Inner {
                settings,
                api,
                messenger,
                limits,
                following: Mutex::new(HashSet::new()),
                deliveries: tokio::sync::Semaphore::new(DELIVERIES_AT_ONCE),
                handlers: TaskTracker::new(),
                tasks: TaskTracker::new(),
                stop: CancellationToken::new(),
            }),
        }
    }

    pub fn settings(&self) -> &BotSettings {
        &self.inner.settings
    }

    pub fn messenger(&self) -> &M {
        &self.inner.messenger
    }

    /// Handles a message in the background; [`Self::shutdown`] waits for it.
    pub fn spawn_handler<F>(&self, handling: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.handlers.spawn(handling);
    }

    /// Lets the messages being handled finish, then stops following jobs
    /// and waits for the follow tasks to end. Jobs keep running in the
    /// scheduler; the next process resumes them.
    pub async fn shutdown(&self) {
        self.inner.handlers.close();
        self.inner.handlers.wait().await;
        self.inner.stop.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    fn user_ref(&self, user_id: &str) -> Option<UserRef> {
        UserRef::new(self.inner.settings.platform, user_id).ok()
    }

    async fn say(&self, chat: &str, text: &str) {
        if let Err(e) = self.inner.messenger.send_text(chat, text).await {
            tracing::warn!(bot_id = %self.inner.settings.bot_id, error = %e, "could not answer");
        }
    }

    /// Whether this bot serves a capability (so a platform can refuse audio
    /// before downloading it).
    pub fn serves(&self, capability: Capability) -> bool {
        self.inner.settings.capabilities.contains(&capability)
    }

    /// The first step for every message: the user's command rate limit. A
    /// limited user is told when to try again, once per wait; `None` means
    /// drop the message. Platforms call it before downloading anything.
    pub async fn admit(&self, chat: &str, user_id: &str) -> Option<UserRef> {
        let Some(user) = self.user_ref(user_id) else {
            tracing::warn!(bot_id = %self.inner.settings.bot_id, "message from a user id Tessera cannot name; ignored");
            return None;
        };
        if let Err(wait) = self.inner.limits.check_command(&user) {
            if self.inner.limits.should_tell(&user, wait) {
                self.say(chat, &words::slow_down(wait)).await;
            }
            return None;
        }
        Some(user)
    }

    /// Handles one message from a user. Never fails: every problem becomes
    /// words in the chat (or a log line when the chat cannot be reached).
    pub async fn on_message(&self, msg: Incoming) {
        if let Some(user) = self.admit(&msg.chat, &msg.user_id).await {
            self.on_admitted(msg, user).await;
        }
    }

    /// [`Self::on_message`] after [`Self::admit`].
    pub async fn on_admitted(&self, msg: Incoming, user: UserRef) {
        let s = &self.inner.settings;
        let (parsed, audio) = match (&msg.audio, msg.text.as_deref()) {
            (Some(audio), _) => {
                if !s.capabilities.contains(&Capability::SpeechToText) {
                    return self
                        .say(
                            &msg.chat,
                            "This bot doesn't transcribe audio. Send /help to see what it does.",
                        )
                        .await;
                }
                let transcribe = Command::Job {
                    capability: Capability::SpeechToText,
                    params: serde_json::Value::Null,
                };
                (Ok(Some(transcribe)), Some(audio.clone()))
            }
            (None, _) if msg.command.is_some() => (Ok(msg.command.clone()), None),
            (None, Some(text)) => (
                command::parse(text, s.username.as_deref(), &s.capabilities),
                None,
            ),
            (None, None) => return,
        };
        let command = match parsed {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => return self.say(&msg.chat, &e.to_string()).await,
        };
        let now = chrono::Utc::now();
        match command {
            Command::Start | Command::Help => {
                self.say(&msg.chat, &words::help(&s.capabilities)).await
            }
            Command::Quota => {
                let text = match self.inner.api.get_user(&user.to_string()).await {
                    Ok(q) => words::quota(&q, now),
                    Err(e) => words::api_error(&e, now),
                };
                self.say(&msg.chat, &text).await
            }
            Command::Link => {
                let text = match self.inner.api.create_link_code(&user).await {
                    Ok(code) => words::link_code(&code, now),
                    Err(e) => {
                        log_refusal(&self.inner.settings.bot_id, &e);
                        words::api_error(&e, now)
                    }
                };
                self.say(&msg.chat, &text).await
            }
            Command::Report { job_id, reason } => {
                let text = self.report(&msg, &user, job_id, reason).await;
                self.say(&msg.chat, &text).await
            }
            Command::Status => {
                let text = match self.live_jobs(&user).await {
                    Ok(jobs) => words::status(&jobs),
                    Err(e) => words::api_error(&e, now),
                };
                self.say(&msg.chat, &text).await
            }
            Command::Cancel => {
                let text = match self.live_jobs(&user).await {
                    Ok(jobs) => match jobs.first() {
                        None => "You have nothing waiting or running to cancel.".to_owned(),
                        Some(job) => match self.inner.api.cancel_job(&job.job_id).await {
                            // The job's follower edits its progress message.
                            Ok(job) => words::progress(&job),
                            Err(e) => words::api_error(&e, now),
                        },
                    },
                    Err(e) => words::api_error(&e, now),
                };
                self.say(&msg.chat, &text).await
            }
            Command::Job { capability, params } => {
                if let Err(wait) = self.inner.limits.check_job(&user) {
                    if self.inner.limits.should_tell(&user, wait) {
                        self.say(&msg.chat, &words::slow_down(wait)).await;
                    }
                    return;
                }
                self.create(&msg, &user, capability, params, audio).await
            }
        }
    }

    /// `/report`: the job named, or the one whose progress message the
    /// user replied to in this chat; answers what the user reads.
    async fn report(
        &self,
        msg: &Incoming,
        user: &UserRef,
        job_id: Option<tessera_api::core::JobId>,
        reason: String,
    ) -> String {
        let now = chrono::Utc::now();
        let job_id = match (job_id, &msg.replied_to) {
            (Some(id), _) => id,
            (None, Some(replied)) => match self.job_answered_in(&msg.chat, replied).await {
                Ok(Some(id)) => id,
                Ok(None) => return words::report_usage().to_owned(),
                Err(e) => return words::api_error(&e, now),
            },
            (None, None) => return words::report_usage().to_owned(),
        };
        let req = tessera_api::review::ReportRequest {
            user_ref: user.clone(),
            reason,
        };
        match self.inner.api.report_job(&job_id, &req).await {
            Ok(_) => words::report_received().to_owned(),
            Err(e) => {
                log_refusal(&self.inner.settings.bot_id, &e);
                words::api_error(&e, now)
            }
        }
    }

    /// This bot's job whose answers went to `message` in `chat`, among its
    /// latest 100.
    async fn job_answered_in(
        &self,
        chat: &str,
        message: &str,
    ) -> Result<Option<tessera_api::core::JobId>, ClientError> {
        let page = self
            .inner
            .api
            .list_jobs(&ListJobsQuery {
                bot_id: Some(self.inner.settings.bot_id.clone()),
                limit: Some(100),
                ..Default::default()
            })
            .await?;
        Ok(page.jobs.into_iter().find_map(|job| {
            let reply: ReplyTo = serde_json::from_value(job.reply_context?).ok()?;
            (reply.chat == chat && reply.message == message).then_some(job.job_id)
        }))
    }

    async fn live_jobs(&self, user: &UserRef) -> Result<Vec<JobView>, ClientError> {
        let page = self
            .inner
            .api
            .list_jobs(&ListJobsQuery {
                user_ref: Some(user.clone()),
                bot_id: Some(self.inner.settings.bot_id.clone()),
                status: Some("QUEUED,RUNNING".into()),
                limit: Some(20),
                ..Default::default()
            })
            .await?;
        Ok(page.jobs)
    }

    async fn create(
        &self,
        msg: &Incoming,
        user: &UserRef,
        capability: Capability,
        mut params: serde_json::Value,
        audio: Option<Audio>,
    ) {
        let now = chrono::Utc::now();
        // The progress message comes first: its id goes into the job's
        // reply_context, so a restarted bot can find and edit it.
        let note = match self
            .inner
            .messenger
            .send_text(&msg.chat, "Got it, sending your request...")
            .await
        {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(bot_id = %self.inner.settings.bot_id, error = %e, "could not answer");
                return;
            }
        };
        if let Some(audio) = audio {
            match self
                .inner
                .api
                .upload_input(&audio.content_type, audio.bytes.to_vec())
                .await
            {
                Ok(input) => params = serde_json::json!({"input_id": input.input_id}),
                Err(e) => {
                    log_refusal(&self.inner.settings.bot_id, &e);
                    let text = words::api_error(&e, now);
                    let _ = self
                        .inner
                        .messenger
                        .edit_text(&msg.chat, &note, &text)
                        .await;
                    return;
                }
            }
        }
        let reply = ReplyTo {
            chat: msg.chat.clone(),
            message: note.clone(),
            upload_limit: msg.upload_limit,
        };
        let req = CreateJobRequest {
            callback_url: None,
            frontend: self.inner.settings.platform,
            bot_id: self.inner.settings.bot_id.clone(),
            capability,
            user_ref: user.clone(),
            reply_context: serde_json::to_value(&reply).ok(),
            params,
            context: msg.context.clone(),
        };
        // A platform that delivers one message twice creates one job.
        let key = &msg.message_id;
        match self.inner.api.create_job(&req, Some(key)).await {
            Ok(created) => {
                tracing::info!(bot_id = %self.inner.settings.bot_id, job_id = %created.job.job_id, request_id = %created.request_id, %capability, "job created");
                self.follow(created.job.job_id, reply);
            }
            Err(e) => {
                let text = if e.is(ErrorCode::IdempotencyKeyReused) {
                    // The platform delivered this message again (after a
                    // crash, say): its job exists and is followed already.
                    tracing::info!(bot_id = %self.inner.settings.bot_id, "a message delivered twice; its job exists");
                    "That message reached me twice; I'm already working on it.".to_owned()
                } else {
                    log_refusal(&self.inner.settings.bot_id, &e);
                    words::api_error(&e, now)
                };
                if let Err(e) = self
                    .inner
                    .messenger
                    .edit_text(&msg.chat, &note, &text)
                    .await
                {
                    tracing::warn!(error = %e, "could not report a refused job");
                }
            }
        }
    }

    /// Picks up this bot's jobs after a restart: live ones are followed again,
    /// ended ones not yet delivered are delivered now.
    pub async fn resume(&self) -> Result<usize, ClientError> {
        let mut found = 0;
        for query in [
            ListJobsQuery {
                bot_id: Some(self.inner.settings.bot_id.clone()),
                status: Some("QUEUED,RUNNING".into()),
                limit: Some(100),
                ..Default::default()
            },
            ListJobsQuery {
                bot_id: Some(self.inner.settings.bot_id.clone()),
                undelivered: Some(true),
                limit: Some(100),
                ..Default::default()
            },
        ] {
            let mut query = query;
            loop {
                let page = self.inner.api.list_jobs(&query).await?;
                for job in page.jobs {
                    let Some(reply) = job
                        .reply_context
                        .clone()
                        .and_then(|v| serde_json::from_value::<ReplyTo>(v).ok())
                    else {
                        // Nowhere to answer: nothing will ever be delivered.
                        if job.status.is_terminal() {
                            self.acknowledge(&job.job_id).await;
                        }
                        continue;
                    };
                    found += 1;
                    self.follow(job.job_id, reply);
                }
                match page.next_cursor {
                    Some(c) => query.cursor = Some(c),
                    None => break,
                }
            }
        }
        if found > 0 {
            tracing::info!(bot_id = %self.inner.settings.bot_id, jobs = found, "resumed jobs left by the previous process");
        }
        Ok(found)
    }

    /// Follows a job in the background until its outcome is delivered.
    fn follow(&self, job_id: JobId, reply: ReplyTo) {
        if !self
            .inner
            .following
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job_id.clone())
        {
            return;
        }
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let stop = this.inner.stop.clone();
            // Following stops on shutdown; a delivery that has begun does
            // not, so a clean restart never sends an output twice (a crash
            // between sending and acknowledging can: delivery is at least once).
            let ended = tokio::select! {
                job = this.follow_to_end(&job_id, &reply) => job,
                _ = stop.cancelled() => None,
            };
            if let Some(job) = ended {
                this.deliver_with_retries(&job, &reply, &stop).await;
            }
            this.inner
                .following
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&job_id);
        });
    }

    /// Keeps the progress message up to date until the job ends; answers the
    /// ended job, or `None` when there is nothing to deliver.
    ///
    /// The job is read every `poll_ms`. A text reply also grows in the
    /// progress message as the engine writes it: its text comes from the
    /// job's events (`GET /api/v1/jobs/{id}/events`, [`Client::follow_text`]), and
    /// the message is edited at most every `min_edit_ms`, the platforms'
    /// pace. The reply itself is still delivered whole once the job ends.
    async fn follow_to_end(&self, job_id: &JobId, reply: &ReplyTo) -> Option<JobView> {
        let s = &self.inner.settings;
        let poll = Duration::from_millis(s.poll_ms.max(50));
        let min_edit = Duration::from_millis(s.min_edit_ms);
        let mut shown = String::new();
        let mut last_edit: Option<tokio::time::Instant> = None;
        let mut failures = 0u32;
        // The reply's text so far, while the job's events are followed.
        let mut streamed: Option<tokio::sync::watch::Receiver<String>> = None;
        let stop_stream = StopOnDrop(CancellationToken::new());
        let mut job: Option<JobView> = None;
        let mut read_due = true;
        let mut next_read = tokio::time::Instant::now();
        loop {
            if read_due {
                next_read = tokio::time::Instant::now() + poll;
                match self.inner.api.get_job(job_id).await {
                    Ok(j) => {
                        failures = 0;
                        job = Some(j);
                    }
                    Err(e) if e.is(ErrorCode::JobNotFound) => return None,
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(%job_id, error = %e, "could not read the job; retrying");
                        tokio::time::sleep(poll * failures.min(10)).await;
                        continue;
                    }
                }
            }
            let Some(job) = job.as_ref() else { continue };
            if streamed.is_none() && job.capability == Capability::Text && !job.status.is_terminal()
            {
                let (tx, rx) = tokio::sync::watch::channel(String::new());
                tokio::spawn(stream_text(
                    self.inner.api.clone(),
                    job_id.clone(),
                    tx,
                    stop_stream.0.child_token(),
                ));
                streamed = Some(rx);
            }
            let mut text = words::progress(job);
            if job.status == JobState::Running {
                if let Some(rx) = &mut streamed {
                    let so_far = rx.borrow_and_update();
                    if !so_far.trim().is_empty() {
                        text = format!("{text}\n\n{}", so_far.trim_start());
                    }
                }
            }
            let ended = job.status.is_terminal();
            let due = last_edit.is_none_or(|t| t.elapsed() >= min_edit);
            if text != shown && (due || ended) {
                match self
                    .inner
                    .messenger
                    .edit_text(&reply.chat, &reply.message, &text)
                    .await
                {
                    Ok(()) => {
                        shown = text;
                        last_edit = Some(tokio::time::Instant::now());
                    }
                    Err(SendError::Gone(why)) => {
                        tracing::info!(%job_id, %why, "the chat is gone; not following the job");
                        if ended {
                            self.acknowledge(job_id).await;
                        }
                        return None;
                    }
                    Err(e) => {
                        tracing::warn!(%job_id, error = %e, "could not edit the progress message")
                    }
                }
            }
            if ended {
                return Some(job.clone());
            }
            // The next read, or sooner new text once an edit is due again.
            let next_edit = last_edit.map(|t| t + min_edit);
            let stream = streamed.as_mut();
            read_due = tokio::select! {
                _ = tokio::time::sleep_until(next_read) => true,
                more = async {
                    match stream {
                        Some(rx) => {
                            let more = rx.changed().await.is_ok();
                            if let Some(at) = next_edit {
                                tokio::time::sleep_until(at).await;
                            }
                            more
                        }
                        None => std::future::pending().await,
                    }
                } => {
                    if !more {
                        // The events ended: the reads carry on alone.
                        streamed = None;
                    }
                    false
                }
            };
            if !read_due && streamed.is_none() {
                read_due = true;
            }
        }
    }

    /// Delivers an ended job, trying again with growing pauses when the
    /// platform or the scheduler fails for a while. Waiting for a turn ends
    /// on shutdown (the next process delivers); a delivery that has begun
    /// does not.
    async fn deliver_with_retries(&self, job: &JobView, reply: &ReplyTo, stop: &CancellationToken) {
        let mut pause = Duration::from_secs(2);
        for attempt in 1..=DELIVERY_ATTEMPTS {
            let delivered = {
                let turn = tokio::select! {
                    turn = self.inner.deliveries.acquire() => turn,
                    _ = stop.cancelled() => return,
                };
                let Ok(_turn) = turn else { return };
                self.deliver(job, reply).await
            };
            if delivered {
                self.inner.messenger.finished(&reply.chat).await;
                return;
            }
            if attempt < DELIVERY_ATTEMPTS {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.cancelled() => return,
                }
                pause *= 2;
            }
        }
        tracing::warn!(job_id = %job.job_id, "could not deliver; the next start of this bot tries again");
    }

    async fn acknowledge(&self, job_id: &JobId) {
        if let Err(e) = self.inner.api.mark_delivered(job_id).await {
            tracing::warn!(%job_id, error = %e, "could not acknowledge delivery");
        }
    }

    /// Sends a download link to an output the platform will not take, with
    /// words saying why and for how long it works; `false` when it is worth
    /// trying again (the scheduler could not be reached).
    async fn send_link(&self, job: &JobView, reply: &ReplyTo, a: &ArtifactView) -> bool {
        let s = &self.inner.settings;
        let now = chrono::Utc::now();
        let text = match &s.site_url {
            None => {
                tracing::warn!(bot_id = %s.bot_id, job_id = %job.job_id, "an output is larger than the platform takes and site_url is not set: no download link can be sent");
                words::too_large_without_link(a.kind, s.platform, job)
            }
            Some(site) => match self.inner.api.create_download_link(&a.artifact_id).await {
                Ok(link) => {
                    let url = format!("{}{}", site.trim_end_matches('/'), link.path);
                    words::download_link(a.kind, s.platform, &url, link.expires_at, now)
                }
                Err(e) if e.code().is_none() => {
                    tracing::warn!(job_id = %job.job_id, error = %e, "could not ask for a download link; will try again");
                    return false;
                }
                Err(e) => {
                    log_refusal(&s.bot_id, &e);
                    words::too_large_without_link(a.kind, s.platform, job)
                }
            },
        };
        match self.inner.messenger.send_text(&reply.chat, &text).await {
            Ok(_) | Err(SendError::Gone(_)) => true,
            Err(e) => {
                tracing::warn!(job_id = %job.job_id, error = %e, "could not send a download link; will try again");
                false
            }
        }
    }

    /// Sends the outputs of an ended job, then acknowledges delivery; `false`
    /// when it is worth trying again.
    async fn deliver(&self, job: &JobView, reply: &ReplyTo) -> bool {
        if job.status == JobState::Completed {
            let limit = self.inner.messenger.upload_limit(reply.upload_limit);
            for a in &job.artifacts {
                if a.kind != ArtifactKind::Text && a.file_size > limit {
                    // Never uploaded: the platform would refuse it.
                    if !self.send_link(job, reply, a).await {
                        return false;
                    }
                    continue;
                }
                let bytes = match self.inner.api.download(&a.url).await {
                    Ok(b) => Bytes::from(b),
                    Err(e) => {
                        tracing::warn!(job_id = %job.job_id, error = %e, "could not download an output; will try again");
                        return false;
                    }
                };
                let sent = if a.kind == ArtifactKind::Text {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    self.inner
                        .messenger
                        .send_text(&reply.chat, &text)
                        .await
                        .map(|_| ())
                } else {
                    self.inner
                        .messenger
                        .send_file(
                            &reply.chat,
                            OutFile {
                                kind: a.kind,
                                format: a.format.clone(),
                                bytes,
                                caption: words::caption(job),
                                width: a.width,
                                height: a.height,
                            },
                        )
                        .await
                };
                match sent {
                    Ok(()) => {}
                    Err(SendError::Gone(why)) => {
                        tracing::info!(job_id = %job.job_id, %why, "the chat is gone; output dropped");
                        break;
                    }
                    Err(SendError::TooLarge(why)) => {
                        tracing::info!(job_id = %job.job_id, %why, "the platform refused an output for its size; sending a link");
                        if !self.send_link(job, reply, a).await {
                            return false;
                        }
                    }
                    Err(SendError::Refused(why)) => {
                        tracing::warn!(job_id = %job.job_id, %why, "the platform refused an output");
                        self.say(
                            &reply.chat,
                            &format!("I couldn't send you that output: {why}. Your job {} is done; the operators can fetch it.", job.job_id),
                        )
                        .await;
                    }
                    Err(e) => {
                        tracing::warn!(job_id = %job.job_id, error = %e, "could not send an output; will try again");
                        return false;
                    }
                }
            }
        }
        // Sent: from here on, trying again would send it twice, so only the
        // acknowledgement is retried (a few times, then the next start of the
        // bot sends it again: delivery is at least once).
        for pause in [1, 2, 4] {
            match self.inner.api.mark_delivered(&job.job_id).await {
                Ok(_) => return true,
                Err(e) if e.code().is_some() => {
                    tracing::warn!(job_id = %job.job_id, error = %e, "the scheduler refused the delivery acknowledgement");
                    return true;
                }
                Err(e) => {
                    tracing::warn!(job_id = %job.job_id, error = %e, "could not acknowledge delivery; trying again");
                    tokio::time::sleep(Duration::from_secs(pause)).await;
                }
            }
        }
        true
    }
}
