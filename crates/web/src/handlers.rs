//! The site's request handlers: read the session, call the public API, render.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use futures::Stream;
use maud::Markup;
use serde::Deserialize;

use tessera_api::internal::ArtifactKind;
use tessera_api::public::{
    AccountView, CreateJobRequest, CreatedDeveloperKey, Credentials, DeveloperKeyList, JobView,
    ListJobsQuery, NewDeveloperKeyRequest, UserQuota,
};
use tessera_api::ClientError;
use tessera_core::{Capability, DeveloperKeyId, ErrorCode, JobId, Platform, UserRef};

use crate::error::WebError;
use crate::forms;
use crate::session::{Account, Session};
use crate::views::{self, DeveloperKeys, FormState, Shell};
use crate::AppState;

type Page = Result<Response, WebError>;

fn shell<'a>(session: &'a Session, current: &'a str) -> Shell<'a> {
    Shell {
        signed_in: session.account.as_ref().map(|a| a.email.as_str()),
        csrf: &session.csrf,
        current,
    }
}

/// A rendered page with the session's cookie.
fn render(session: Session, status: StatusCode, markup: Markup) -> Response {
    (status, session.jar(), markup).into_response()
}

fn redirect(session: Session, to: &str) -> Response {
    (session.jar(), Redirect::to(to)).into_response()
}

// ---- start, sign-up, sign-in ----

pub async fn home(State(state): State<AppState>, session: Session) -> Page {
    if session.account.is_some() {
        return Ok(redirect(session, "/generate"));
    }
    let plans = state.api.plans().await?.plans;
    let markup = views::home(&shell(&session, "/"), &plans);
    Ok(render(session, StatusCode::OK, markup))
}

pub async fn signup_form(session: Session) -> Page {
    let markup = views::auth_form(&shell(&session, "/signup"), true, "", None, None);
    Ok(render(session, StatusCode::OK, markup))
}

pub async fn signin_form(session: Session) -> Page {
    if session.account.is_some() {
        return Ok(redirect(session, "/generate"));
    }
    let markup = views::auth_form(&shell(&session, "/signin"), false, "", None, None);
    Ok(render(session, StatusCode::OK, markup))
}

#[derive(Deserialize)]
pub struct AuthForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

pub async fn signup(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<AuthForm>,
) -> Page {
    authenticate(state, session, form, true).await
}

pub async fn signin(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<AuthForm>,
) -> Page {
    authenticate(state, session, form, false).await
}

async fn authenticate(state: AppState, session: Session, form: AuthForm, signup: bool) -> Page {
    session.check_csrf(&form.csrf)?;
    // Sign-in attempts share the job limiter's command bucket, keyed by the
    // email: guessing passwords is as slow as the limit.
    if let Ok(who) = UserRef::new(Platform::Web, &email_key(&form.email)) {
        if let Err(wait) = state.limits.check_command(&who) {
            return Err(WebError::Slow(wait));
        }
    }
    let credentials = Credentials {
        email: form.email.clone(),
        password: form.password,
    };
    let result = if signup {
        state.api.create_account(&credentials).await
    } else {
        state.api.sign_in(&credentials).await
    };
    match result {
        Ok(account) => {
            let session = session.sign_in(Account {
                user_ref: account.user_ref,
                email: account.email,
            });
            Ok(redirect(session, "/generate"))
        }
        Err(ClientError::Api { status, body }) if status.is_client_error() => {
            let field = body
                .error
                .field
                .as_deref()
                .filter(|f| matches!(*f, "email" | "password"));
            let message = match body.code() {
                Some(ErrorCode::SignInFailed) => "The email or password is wrong.".to_owned(),
                Some(ErrorCode::EmailTaken) => {
                    "An account with this email already exists. Sign in instead.".to_owned()
                }
                _ => body.error.message.clone(),
            };
            let markup = views::auth_form(
                &shell(&session, if signup { "/signup" } else { "/signin" }),
                signup,
                &form.email,
                Some(&message),
                field,
            );
            Ok(render(session, StatusCode::UNPROCESSABLE_ENTITY, markup))
        }
        Err(e) => Err(e.into()),
    }
}

/// A user-reference-shaped key for rate-limiting sign-ins by email.
fn email_key(email: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(email.trim().to_lowercase().as_bytes());
    format!("signin-{}", hex::encode(&digest[..16]))
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn signout(session: Session, Form(form): Form<CsrfForm>) -> Page {
    session.check_csrf(&form.csrf)?;
    Ok(redirect(session.sign_out(), "/"))
}

// ---- generate ----

pub async fn generate_default(session: Session) -> Page {
    session.require()?;
    Ok(redirect(session, "/generate/image"))
}

fn capability(text: &str) -> Result<Capability, WebError> {
    text.parse().map_err(|_| WebError::NotFound)
}

fn nonce() -> String {
    ulid::Ulid::new().to_string().to_lowercase()
}

pub async fn generate_form(
    State(state): State<AppState>,
    session: Session,
    Path(cap): Path<String>,
) -> Page {
    let capability = capability(&cap)?;
    let account = session.require()?;
    let quota = state.api.get_user(&account.user_ref).await?;
    let path = format!("/generate/{}", capability.as_str());
    let markup = views::generate(
        &shell(&session, &path),
        capability,
        &quota,
        &nonce(),
        &FormState::default(),
    );
    Ok(render(session, StatusCode::OK, markup))
}

/// What a generation form sent.
struct Submitted {
    values: HashMap<String, String>,
    file: Option<(String, Vec<u8>)>,
}

/// Why a generation form could not be read.
enum Unreadable {
    /// No CSRF token before the other fields, or the wrong one: nothing
    /// more of the body is read.
    Csrf,
    /// A malformed body; the reason is shown.
    Body(String),
}

/// Reads a generation form, which sends its CSRF token first: a body
/// without the right token is refused before a large upload is read.
async fn read_multipart(
    session: &Session,
    mut multipart: Multipart,
) -> Result<Submitted, Unreadable> {
    let mut values = HashMap::new();
    let mut file = None;
    let mut checked = false;
    let unreadable = |e: axum::extract::multipart::MultipartError| Unreadable::Body(e.body_text());
    while let Some(field) = multipart.next_field().await.map_err(unreadable)? {
        let name = field.name().unwrap_or_default().to_owned();
        if !checked {
            if name != "csrf" {
                return Err(Unreadable::Csrf);
            }
            let token = field.text().await.map_err(unreadable)?;
            session.check_csrf(&token).map_err(|_| Unreadable::Csrf)?;
            checked = true;
            continue;
        }
        if name == "audio" {
            let content_type = field
                .content_type()
                .unwrap_or("application/octet-stream")
                .to_owned();
            let has_name = field.file_name().is_some_and(|n| !n.is_empty());
            let bytes = field.bytes().await.map_err(unreadable)?;
            if has_name && !bytes.is_empty() {
                file = Some((content_type, bytes.to_vec()));
            }
        } else if !name.is_empty() {
            let text = field.text().await.map_err(unreadable)?;
            values.insert(name, text);
        }
    }
    if !checked {
        return Err(Unreadable::Csrf);
    }
    Ok(Submitted { values, file })
}

pub async fn generate(
    State(state): State<AppState>,
    session: Session,
    Path(cap): Path<String>,
    multipart: Multipart,
) -> Page {
    let capability = capability(&cap)?;
    let account = session.require()?.clone();
    let Submitted { values, file } = match read_multipart(&session, multipart).await {
        Ok(s) => s,
        Err(Unreadable::Csrf) => return Err(WebError::Csrf),
        Err(Unreadable::Body(why)) => {
            let quota = state.api.get_user(&account.user_ref).await?;
            let form = FormState {
                form_error: Some(format!("The form could not be read: {why}")),
                ..FormState::default()
            };
            return Ok(refused(session, capability, &quota, form));
        }
    };
    let quota = state.api.get_user(&account.user_ref).await?;
    let mut form = FormState {
        values: values.clone(),
        ..FormState::default()
    };
    // What the site can tell by itself comes first: a missing file or a word
    // where a number goes costs neither an upload nor a place in the limit.
    if capability == Capability::SpeechToText && file.is_none() {
        form.field_errors
            .insert("audio".into(), "Choose an audio file to transcribe.".into());
        return Ok(refused(session, capability, &quota, form));
    }
    let mut params = match forms::params(capability, &values) {
        Ok(params) => params,
        Err(e) => {
            form.field_errors.insert(e.field, e.message);
            return Ok(refused(session, capability, &quota, form));
        }
    };
    if let Err(wait) = state.limits.check_job(&account.user_ref) {
        return Err(WebError::Slow(wait));
    }
    // The upload first: a speech-to-text job names its input.
    if let Some((content_type, bytes)) = file.filter(|_| capability == Capability::SpeechToText) {
        match state.api.upload_input(&content_type, bytes).await {
            Ok(up) => forms::with_input(&mut params, up.input_id.as_str()),
            Err(ClientError::Api { status, body }) if status.is_client_error() => {
                form.field_errors.insert("audio".into(), body.error.message);
                return Ok(refused(session, capability, &quota, form));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let request = CreateJobRequest {
        callback_url: None,
        context: None,
        frontend: Platform::Web,
        bot_id: state.config.bot_id.clone(),
        capability,
        user_ref: account.user_ref.clone(),
        reply_context: None,
        params,
    };
    // The form's nonce makes a double submit one job.
    let nonce = values
        .get("nonce")
        .filter(|n| !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(|n| format!("{}-{n}", account.user_ref));
    match state.api.create_job(&request, nonce.as_deref()).await {
        Ok(created) => Ok(redirect(session, &format!("/jobs/{}", created.job.job_id))),
        // The same form sent again with other values (back, edit, resend; or a
        // second upload of the same recording): the first job is running, and
        // the gallery shows it.
        Err(ClientError::Api { body, .. }) if body.is(ErrorCode::IdempotencyKeyReused) => {
            Ok(redirect(session, "/gallery"))
        }
        Err(ClientError::Api { status, body })
            if status.is_client_error() && status != StatusCode::UNAUTHORIZED =>
        {
            let message = if body.is(ErrorCode::QuotaExhausted) {
                format!(
                    "Not enough tokens left today: {}. Larger plans include more tokens each day.",
                    body.error.message
                )
            } else if body.is(ErrorCode::QueueFull) {
                let retry = views::duration_words(body.error.retry_after_seconds.unwrap_or(60));
                match body.error.expected_wait_seconds {
                    Some(wait) => format!(
                        "The queue is full right now ({} of waiting ahead). Try again in {retry}. Nothing was charged.",
                        views::duration_words(wait)
                    ),
                    None => format!("The queue is full right now. Try again in {retry}. Nothing was charged."),
                }
            } else if body.is(ErrorCode::TooManyQueued) {
                format!(
                    "You already have as many jobs waiting as your plan allows. Try again in {}, once one of them has started. Nothing was charged.",
                    views::duration_words(body.error.retry_after_seconds.unwrap_or(60))
                )
            } else {
                body.error.message.clone()
            };
            match forms::field_of(body.error.field.as_deref())
                .filter(|f| forms::fields(capability).iter().any(|x| x.name == f))
            {
                Some(field) => {
                    form.field_errors.insert(field, message);
                }
                None => form.form_error = Some(message),
            }
            let mut page = refused(session, capability, &quota, form);
            // Admission's refusals are "not now": the page says when, and so
            // do its status and Retry-After, as the API's did.
            if body.is(ErrorCode::QueueFull) || body.is(ErrorCode::TooManyQueued) {
                *page.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                if let Some(secs) = body.error.retry_after_seconds {
                    page.headers_mut()
                        .insert(axum::http::header::RETRY_AFTER, secs.into());
                }
            }
            Ok(page)
        }
        Err(e) => Err(e.into()),
    }
}

/// The form again, with what was refused and why.
fn refused(
    session: Session,
    capability: Capability,
    quota: &UserQuota,
    form: FormState,
) -> Response {
    let path = format!("/generate/{}", capability.as_str());
    let markup = views::generate(&shell(&session, &path), capability, quota, &nonce(), &form);
    render(session, StatusCode::UNPROCESSABLE_ENTITY, markup)
}

// ---- jobs ----

/// The job, if it is the signed-in account's.
async fn own_job(state: &AppState, account: &Account, id: &str) -> Result<JobView, WebError> {
    let id: JobId = id.parse().map_err(|_| WebError::NotFound)?;
    let job = state.api.get_job(&id).await?;
    if job.user_ref != account.user_ref {
        return Err(WebError::NotFound);
    }
    Ok(job)
}

/// Longest text output shown inline; the rest is a download away.
const MAX_INLINE_TEXT: usize = 64 * 1024;

/// The text outputs of a completed job, by artifact id. One that cannot be
/// fetched now is left out: the page still offers its download.
async fn texts_of(state: &AppState, job: &JobView) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for a in &job.artifacts {
        if a.kind != ArtifactKind::Text {
            continue;
        }
        let bytes = match state.api.download(&a.url).await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(artifact = %a.artifact_id, error = %e, "text output unavailable");
                continue;
            }
        };
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if text.len() > MAX_INLINE_TEXT {
            let mut cut = MAX_INLINE_TEXT;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("\n…");
        }
        out.insert(a.artifact_id.to_string(), text);
    }
    out
}

pub async fn job_page(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Page {
    let account = session.require()?;
    let job = own_job(&state, account, &id).await?;
    let texts = texts_of(&state, &job).await;
    let markup = views::job_page(&shell(&session, ""), &job, &texts);
    Ok(render(session, StatusCode::OK, markup))
}

/// How often a live job page asks the scheduler for news.
const POLL: Duration = Duration::from_millis(500);

/// Server-sent events for a job page: an `update` event whenever what the
/// page shows changes, until the job ends (or the site stops). A text reply
/// grows on the page as the engine writes it: its text so far comes from the
/// job's events on the scheduler ([`tessera_api::Client::follow_text`]),
/// beside the reads every [`POLL`], which alone say when the job ends.
pub async fn job_events(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, WebError> {
    let account = session.require()?.clone();
    let job = own_job(&state, &account, &id).await?;
    let stop = state.stop.clone();
    /// Stops the text follower with the page's stream.
    struct Reader(tokio::task::JoinHandle<()>);
    impl Drop for Reader {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    struct Follow {
        state: AppState,
        id: JobId,
        last: String,
        /// The job as last read, and whether it is new since the last update.
        job: Option<(JobView, bool)>,
        done: bool,
        /// The reply's text so far, for a text job.
        text: Option<(tokio::sync::watch::Receiver<String>, Reader)>,
        /// When the job is read next, new text or not.
        next_read: tokio::time::Instant,
    }
    let text = (job.capability == Capability::Text && !job.status.is_terminal()).then(|| {
        let (tx, rx) = tokio::sync::watch::channel(String::new());
        let api = state.api.clone();
        let id = job.job_id.clone();
        let reader = tokio::spawn(async move { api.follow_text(&id, &tx).await });
        (rx, Reader(reader))
    });
    let follow = Follow {
        id: job.job_id.clone(),
        state,
        last: String::new(),
        job: Some((job, true)),
        done: false,
        text,
        next_read: tokio::time::Instant::now() + POLL,
    };
    let stream = futures::stream::unfold(follow, move |mut f| {
        let stop = stop.clone();
        async move {
            loop {
                if f.done {
                    return None;
                }
                let fresh = f.job.as_ref().is_some_and(|(_, fresh)| *fresh);
                if !fresh {
                    // The next read, or new text of the reply before it.
                    let read = tokio::select! {
                        _ = stop.cancelled() => return None,
                        _ = tokio::time::sleep_until(f.next_read) => true,
                        more = async {
                            match &mut f.text {
                                Some((rx, _)) => rx.changed().await.is_ok(),
                                None => std::future::pending().await,
                            }
                        } => {
                            if !more {
                                f.text = None;
                            }
                            false
                        }
                    };
                    if read {
                        f.next_read = tokio::time::Instant::now() + POLL;
                        let answer = tokio::select! {
                            _ = stop.cancelled() => return None,
                            answer = f.state.api.get_job(&f.id) => answer,
                        };
                        match answer {
                            Ok(job) => f.job = Some((job, true)),
                            // Gone, or this site's key no longer works: nothing
                            // more will come; the page keeps what it shows.
                            Err(ClientError::Api { status, .. }) if status.is_client_error() => {
                                return None;
                            }
                            // The scheduler is away: keep the page as it is and try again.
                            Err(e) => {
                                tracing::debug!(error = %e, "job events: scheduler unavailable");
                                continue;
                            }
                        }
                    }
                }
                let (job, fresh) = f.job.as_mut()?;
                *fresh = false;
                let job = job.clone();
                let texts = if job.status.is_terminal() {
                    texts_of(&f.state, &job).await
                } else {
                    HashMap::new()
                };
                let partial = match &mut f.text {
                    Some((rx, _)) => rx.borrow_and_update().clone(),
                    None => String::new(),
                };
                let update = views::live_update(&job, &texts, &partial);
                f.done = job.status.is_terminal();
                if update != f.last {
                    f.last = update.clone();
                    let event = Event::default().event("update").data(update);
                    return Some((Ok(event), f));
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

pub async fn cancel(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Page {
    session.check_csrf(&form.csrf)?;
    let account = session.require()?;
    let job = own_job(&state, account, &id).await?;
    match state.api.cancel_job(&job.job_id).await {
        Ok(_) => {}
        // Already ended: the job page says how.
        Err(ClientError::Api { status, .. }) if status == StatusCode::CONFLICT => {}
        Err(e) => return Err(e.into()),
    }
    Ok(redirect(session, &format!("/jobs/{}", job.job_id)))
}

#[derive(Deserialize)]
pub struct ReportForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// The Report button: the visitor reports their job's output to the
/// operators' review queue (a second report of a job changes nothing).
pub async fn report(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<ReportForm>,
) -> Page {
    session.check_csrf(&form.csrf)?;
    let account = session.require()?;
    let job = own_job(&state, account, &id).await?;
    let said: String = form.reason.trim().chars().take(500).collect();
    let req = tessera_api::review::ReportRequest {
        user_ref: account.user_ref.clone(),
        reason: if said.is_empty() {
            "reported on the website, no reason given".into()
        } else {
            said
        },
    };
    state.api.report_job(&job.job_id, &req).await?;
    let markup = views::reported(&shell(&session, ""), &job);
    Ok(render(session, StatusCode::OK, markup))
}

#[derive(Deserialize)]
pub struct OutputQuery {
    #[serde(default)]
    download: Option<String>,
}

/// An output, for the signed-in account's own jobs only: streamed from the
/// scheduler as it arrives, with the visitor's `Range` passed along (video
/// players seek with it).
pub async fn output(
    State(state): State<AppState>,
    session: Session,
    Path((job_id, artifact_id)): Path<(String, String)>,
    Query(q): Query<OutputQuery>,
    headers: HeaderMap,
) -> Page {
    let account = session.require()?;
    let job = own_job(&state, account, &job_id).await?;
    let artifact = job
        .artifacts
        .iter()
        .find(|a| a.artifact_id.as_str() == artifact_id)
        .ok_or(WebError::NotFound)?;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let upstream = match state.downloads.fetch(&artifact.url, range).await {
        Ok(upstream) => upstream,
        Err(ClientError::Api { status, .. }) if status == StatusCode::RANGE_NOT_SATISFIABLE => {
            return Ok(StatusCode::RANGE_NOT_SATISFIABLE.into_response());
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = HeaderMap::new();
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400, immutable"),
    );
    let disposition = if q.download.is_some() {
        format!(
            "attachment; filename=\"tessera-{}.{}\"",
            job.job_id, artifact.format
        )
    } else {
        "inline".to_owned()
    };
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        out.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(crate::download::relay(upstream, out))
}

// ---- gallery ----

#[derive(Deserialize)]
pub struct GalleryQuery {
    #[serde(default)]
    cursor: Option<String>,
}

/// Jobs per gallery page.
pub const GALLERY_PAGE: u32 = 12;

pub async fn gallery(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<GalleryQuery>,
) -> Page {
    let account = session.require()?;
    let cursor = q.cursor.filter(|c| {
        !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    });
    let first = cursor.is_none();
    let list = state
        .api
        .list_jobs(&ListJobsQuery {
            user_ref: Some(account.user_ref.clone()),
            limit: Some(GALLERY_PAGE),
            cursor,
            ..ListJobsQuery::default()
        })
        .await?;
    let markup = views::gallery(
        &shell(&session, "/gallery"),
        &list.jobs,
        list.next_cursor.as_deref(),
        first,
    );
    Ok(render(session, StatusCode::OK, markup))
}

// ---- account and plans ----

/// What the developer keys' part of the account page shows besides the
/// list: the key just made, or the refused form's values.
#[derive(Default)]
struct KeyForm {
    /// The key the form just made: its secret is shown this once.
    created: Option<CreatedDeveloperKey>,
    name: String,
    ticked: Vec<Capability>,
}

async fn account_page(
    state: &AppState,
    session: Session,
    status: StatusCode,
    message: Option<&str>,
    // The field a refused form names ("code", "adult", "key-name", ...) and the error.
    field_error: Option<(&str, &str)>,
    key_form: KeyForm,
) -> Page {
    let account = session.require()?;
    let (view, quota, keys): (AccountView, UserQuota, DeveloperKeyList) = tokio::try_join!(
        state.api.get_account(&account.user_ref),
        state.api.get_user(&account.user_ref),
        state.api.developer_keys(&account.user_ref)
    )?;
    let offers = crate::billing::offers(state).await;
    let configured = state.config.scheduler_public_url.as_deref();
    let base_url = format!(
        "{}/v1",
        configured
            .unwrap_or(&state.config.scheduler_url)
            .trim_end_matches('/')
    );
    let developer_keys = DeveloperKeys {
        keys: &keys.keys,
        created: key_form.created.as_ref(),
        base_url: &base_url,
        base_url_configured: configured.is_some(),
        name: &key_form.name,
        ticked: &key_form.ticked,
    };
    let markup = views::account(
        &shell(&session, "/account"),
        &view,
        &quota,
        &offers,
        &developer_keys,
        message,
        field_error,
    );
    let mut page = render(session, status, markup);
    // The page may hold a secret shown once: no copy of it is to be kept.
    page.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(page)
}

#[derive(Deserialize)]
pub struct AccountQuery {
    /// Set by Stripe's return from a paid Checkout.
    #[serde(default)]
    paid: Option<String>,
}

const PAID: &str = "Thank you! Stripe is confirming your payment: your new plan shows here \
                    as soon as it has (usually within seconds). Reload the page if it has not yet.";

pub async fn account(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<AccountQuery>,
) -> Page {
    let message = q.paid.is_some().then_some(PAID);
    account_page(
        &state,
        session,
        StatusCode::OK,
        message,
        None,
        KeyForm::default(),
    )
    .await
}

#[derive(Deserialize)]
pub struct LinkForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

pub async fn link(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<LinkForm>,
) -> Page {
    session.check_csrf(&form.csrf)?;
    let account = session.require()?;
    if let Err(wait) = state.limits.check_command(&account.user_ref) {
        return Err(WebError::Slow(wait));
    }
    match state
        .api
        .redeem_link_code(&account.user_ref, form.code.trim())
        .await
    {
        Ok(_) => {
            let message = "Linked. The chat accounts listed below share this account's plan \
                           and tokens.";
            account_page(
                &state,
                session,
                StatusCode::OK,
                Some(message),
                None,
                KeyForm::default(),
            )
            .await
        }
        Err(ClientError::Api { status, body }) if status.is_client_error() => {
            let message = if body.is(ErrorCode::InvalidLinkCode) {
                "That code is not valid: it may be mistyped, used already or older than 10 \
                 minutes. Send /link to the bot for a new one."
                    .to_owned()
            } else {
                body.error.message
            };
            account_page(
                &state,
                session,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                Some(("code", &message)),
                KeyForm::default(),
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct AgeForm {
    #[serde(default)]
    csrf: String,
    /// The checkbox "I am 18 or older": present only when ticked.
    #[serde(default)]
    adult: Option<String>,
}

/// The account's owner confirms being 18 or older: the scheduler records it,
/// and allows adult content for the account's jobs from then on.
pub async fn confirm_age(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<AgeForm>,
) -> Page {
    session.check_csrf(&form.csrf)?;
    let account = session.require()?;
    if form.adult.is_none() {
        let message = "Tick the box to confirm that you are 18 or older.";
        return account_page(
            &state,
            session,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            Some(("adult", message)),
            KeyForm::default(),
        )
        .await;
    }
    state.api.confirm_age(&account.user_ref).await?;
    let message = "Thank you: adult content is now allowed for your requests here, where your \
                   plan allows it.";
    account_page(
        &state,
        session,
        StatusCode::OK,
        Some(message),
        None,
        KeyForm::default(),
    )
    .await
}

/// The "Create key" form: a name, and the capabilities ticked (none for
/// all). The answer is the account page with the new key's secret, which is
/// shown this once: it is in no other page, and the scheduler keeps only its
/// hash.
pub async fn create_developer_key(
    State(state): State<AppState>,
    session: Session,
    // Pairs, as the form sends one `capability` per box ticked.
    Form(fields): Form<Vec<(String, String)>>,
) -> Page {
    let value = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    session.check_csrf(value("csrf"))?;
    let account = session.require()?.clone();
    if let Err(wait) = state.limits.check_command(&account.user_ref) {
        return Err(WebError::Slow(wait));
    }
    let mut form = KeyForm {
        name: value("name").to_owned(),
        ..KeyForm::default()
    };
    for (_, text) in fields.iter().filter(|(k, _)| k == "capability") {
        match text.parse::<Capability>() {
            Ok(c) if !form.ticked.contains(&c) => form.ticked.push(c),
            Ok(_) => {}
            Err(_) => {
                let message = "Choose capabilities from the list.";
                return refused_key(&state, session, form, "key-capabilities", message).await;
            }
        }
    }
    let request = NewDeveloperKeyRequest {
        name: form.name.clone(),
        capabilities: (!form.ticked.is_empty()).then(|| form.ticked.clone()),
    };
    match state
        .api
        .create_developer_key(&account.user_ref, &request)
        .await
    {
        Ok(created) => {
            let message = "Key created. Copy its secret now: it will not be shown again.";
            let form = KeyForm {
                created: Some(created),
                ..KeyForm::default()
            };
            account_page(&state, session, StatusCode::OK, Some(message), None, form).await
        }
        Err(ClientError::Api { body, .. }) if body.is(ErrorCode::TooManyKeys) => {
            let message = "You have as many live keys as an account may hold (20). Revoke one \
                           you no longer use, then create the new one.";
            let mut page = refused_key(&state, session, form, "keys", message).await?;
            *page.status_mut() = StatusCode::CONFLICT;
            Ok(page)
        }
        Err(ClientError::Api { status, body })
            if status == StatusCode::UNPROCESSABLE_ENTITY
                && body.error.field.as_deref() == Some("name") =>
        {
            let message = "Give the key a name of 1 to 64 characters, on one line.";
            refused_key(&state, session, form, "key-name", message).await
        }
        Err(ClientError::Api { status, body })
            if status == StatusCode::UNPROCESSABLE_ENTITY
                && body.error.field.as_deref() == Some("capabilities") =>
        {
            refused_key(
                &state,
                session,
                form,
                "key-capabilities",
                &body.error.message,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

/// The account page again, with the refused key form's values and why.
async fn refused_key(
    state: &AppState,
    session: Session,
    form: KeyForm,
    field: &str,
    message: &str,
) -> Page {
    account_page(
        state,
        session,
        StatusCode::UNPROCESSABLE_ENTITY,
        None,
        Some((field, message)),
        form,
    )
    .await
}

/// A key's "Revoke" button: programs using it are refused from then on. A
/// key that is not the account's is a page not found.
pub async fn revoke_developer_key(
    State(state): State<AppState>,
    session: Session,
    Path(key_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Page {
    session.check_csrf(&form.csrf)?;
    let account = session.require()?;
    let id: DeveloperKeyId = key_id.parse().map_err(|_| WebError::NotFound)?;
    let revoked = state
        .api
        .revoke_developer_key(&account.user_ref, &id)
        .await?;
    let message = format!(
        "Revoked \u{201c}{}\u{201d}: programs using it are refused from now on.",
        revoked.name
    );
    account_page(
        &state,
        session,
        StatusCode::OK,
        Some(&message),
        None,
        KeyForm::default(),
    )
    .await
}

pub async fn pricing(State(state): State<AppState>, session: Session) -> Page {
    let plans = state.api.plans().await?.plans;
    let current = match &session.account {
        Some(a) => Some(state.api.get_user(&a.user_ref).await?.plan.id),
        None => None,
    };
    let offers = crate::billing::offers(&state).await;
    let markup = views::pricing(
        &shell(&session, "/pricing"),
        &plans,
        current.as_deref(),
        &offers,
    );
    Ok(render(session, StatusCode::OK, markup))
}

// ---- assets, probes, fallbacks ----

const CSS: &str = include_str!("../static/app.css");
const JS: &str = include_str!("../static/app.js");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

pub async fn alive() -> &'static str {
    "ok"
}

/// Ready when the scheduler answers its own readiness probe.
pub async fn ready(State(state): State<AppState>) -> Response {
    let url = state.api.base_url().join("readyz").ok();
    let ok = match url {
        Some(url) => state
            .http
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success()),
        None => false,
    };
    if ok {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the scheduler is not ready",
        )
            .into_response()
    }
}

pub async fn not_found() -> WebError {
    WebError::NotFound
}
