//! Every page's HTML, built with `maud` (which escapes whatever it is given).
//!
//! Accessibility is part of the markup: a skip link, one `main` landmark,
//! labelled fields with their help and errors tied by `aria-describedby`,
//! `aria-current` in the navigation, a polite live region for job progress,
//! and visible focus and AA contrast in the stylesheet.

use std::collections::HashMap;

use axum::http::StatusCode;
use maud::{html, Markup, DOCTYPE};

use tessera_api::internal::ArtifactKind;
use tessera_api::public::{
    AccountView, ArtifactView, CreatedDeveloperKey, DeveloperKeyView, JobView, UserQuota,
};
use tessera_api::stripe::StripeOffer;
use tessera_core::{Capability, JobState, Plan};

use crate::forms::{self, Field, Kind};

/// What the page shell needs to know about the visitor: only what it shows,
/// so pages are built without knowing how sessions are kept.
pub struct Shell<'a> {
    /// The signed-in account's email; `None` for a visitor not signed in.
    pub signed_in: Option<&'a str>,
    pub csrf: &'a str,
    /// The navigation entry to mark as current (`/gallery`).
    pub current: &'a str,
}

fn nav_link(shell: &Shell<'_>, href: &str, label: &str) -> Markup {
    let current =
        shell.current == href || (href == "/generate" && shell.current.starts_with("/generate"));
    html! {
        li { a href=(href) aria-current=[current.then_some("page")] { (label) } }
    }
}

/// The page shell: head, skip link, navigation, `main` and footer.
pub fn page(shell: &Shell<'_>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · Tessera" }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    nav aria-label="Main" {
                        a class="brand" href="/" { "Tessera" }
                        ul {
                            @if shell.signed_in.is_some() {
                                (nav_link(shell, "/generate", "Generate"))
                                (nav_link(shell, "/gallery", "Gallery"))
                            }
                            (nav_link(shell, "/pricing", "Pricing"))
                            @if let Some(email) = shell.signed_in {
                                (nav_link(shell, "/account", "Account"))
                                li {
                                    form method="post" action="/signout" class="inline" {
                                        input type="hidden" name="csrf" value=(shell.csrf);
                                        button type="submit" class="link" {
                                            "Sign out"
                                            span class="visually-hidden" { " " (email) }
                                        }
                                    }
                                }
                            } @else {
                                (nav_link(shell, "/signin", "Sign in"))
                                li { a class="button small" href="/signup" { "Sign up" } }
                            }
                        }
                    }
                }
                main id="main" tabindex="-1" { (body) }
                footer class="bottom" {
                    p { "Tessera shares a farm of GPUs fairly between everyone who uses it." }
                }
            }
        }
    }
}

/// A page for an error, outside any session.
pub fn error_page(status: StatusCode, title: &str, message: &str) -> Markup {
    let shell = Shell {
        signed_in: None,
        csrf: "",
        current: "",
    };
    page(
        &shell,
        title,
        html! {
            section class="card narrow error-page" {
                h1 { (title) }
                p { (message) }
                p class="muted" { "Error " (status.as_u16()) }
                p { a class="button" href="/" { "Go to the start page" } }
            }
        },
    )
}

/// A form-wide message (`role=alert`), if any.
fn alert(message: Option<&str>) -> Markup {
    html! {
        @if let Some(m) = message {
            div class="alert" role="alert" id="form-error" { (m) }
        }
    }
}

fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// The start page: what Tessera does, and the way in.
pub fn home(shell: &Shell<'_>, plans: &[Plan]) -> Markup {
    page(
        shell,
        "Generate images, video, text and speech",
        html! {
            section class="hero" {
                h1 { "Images, video, text and speech from one account" }
                p class="lead" {
                    "Describe what you want and Tessera's GPUs make it. Every plan includes free "
                    "tokens each day, and your Telegram and Discord bots share the same account."
                }
                p class="actions" {
                    a class="button" href="/signup" { "Create a free account" }
                    a class="button secondary" href="/signin" { "Sign in" }
                }
            }
            section aria-labelledby="what" {
                h2 id="what" { "What you can make" }
                ul class="grid tiles" {
                    @for c in Capability::ALL {
                        li class="card" {
                            h3 { (forms::title(c)) }
                            p { (forms::summary(c)) }
                        }
                    }
                }
            }
            (plan_table(plans, None))
        },
    )
}

/// Sign up (`signup = true`) or sign in.
pub fn auth_form(
    shell: &Shell<'_>,
    signup: bool,
    email: &str,
    error: Option<&str>,
    field: Option<&str>,
) -> Markup {
    let (title, action, button) = if signup {
        ("Create your account", "/signup", "Create account")
    } else {
        ("Sign in", "/signin", "Sign in")
    };
    let email_error = error.filter(|_| field == Some("email"));
    let password_error = error.filter(|_| field == Some("password"));
    let form_error = error.filter(|_| field.is_none());
    page(
        shell,
        title,
        html! {
            section class="card narrow" {
                h1 { (title) }
                (alert(form_error))
                form method="post" action=(action) novalidate {
                    (csrf_field(shell.csrf))
                    div class="field" {
                        label for="email" { "Email" }
                        input type="email" id="email" name="email" value=(email)
                            autocomplete="email" required
                            aria-invalid=[email_error.map(|_| "true")]
                            aria-describedby=[email_error.map(|_| "email-error")];
                        @if let Some(e) = email_error { p class="field-error" id="email-error" { (e) } }
                    }
                    div class="field" {
                        label for="password" { "Password" }
                        input type="password" id="password" name="password" required minlength="8"
                            autocomplete=(if signup { "new-password" } else { "current-password" })
                            aria-invalid=[password_error.map(|_| "true")]
                            aria-describedby=(if password_error.is_some() { "password-error password-help" } else { "password-help" });
                        p class="help" id="password-help" {
                            @if signup { "At least 8 characters." } @else { "The password you chose at sign-up." }
                        }
                        @if let Some(e) = password_error { p class="field-error" id="password-error" { (e) } }
                    }
                    button type="submit" { (button) }
                }
                p {
                    @if signup {
                        "Already have an account? " a href="/signin" { "Sign in" }
                    } @else {
                        "New here? " a href="/signup" { "Create an account" }
                    }
                }
            }
        },
    )
}

/// Tokens left today, as a sentence.
pub fn tokens_left(quota: &UserQuota) -> String {
    match quota.tokens_left_today {
        Some(left) => format!(
            "{left} of {} tokens left today",
            quota.plan.daily_tokens.unwrap_or_default()
        ),
        None => "Unlimited tokens".to_owned(),
    }
}

/// What the generate page shows back after a refused submit.
#[derive(Default)]
pub struct FormState {
    pub values: HashMap<String, String>,
    /// Errors by form field name; `None` key: about the whole form.
    pub field_errors: HashMap<String, String>,
    pub form_error: Option<String>,
}

/// The generation form for one capability.
pub fn generate(
    shell: &Shell<'_>,
    capability: Capability,
    quota: &UserQuota,
    nonce: &str,
    state: &FormState,
) -> Markup {
    let title = format!("Generate: {}", forms::title(capability));
    page(
        shell,
        &title,
        html! {
            h1 { "Generate" }
            nav aria-label="Kind of job" class="tabs" {
                ul {
                    @for c in Capability::ALL {
                        li {
                            a href={ "/generate/" (c.as_str()) }
                                aria-current=[(c == capability).then_some("page")] { (forms::title(c)) }
                        }
                    }
                }
            }
            section class="card" aria-labelledby="form-title" {
                h2 id="form-title" { (forms::title(capability)) }
                p { (forms::summary(capability)) }
                p class="muted" id="quota-line" {
                    (quota.plan.name) " plan · " (tokens_left(quota))
                    " · " a href="/pricing" { "plans" }
                }
                (alert(state.form_error.as_deref()))
                form method="post" action={ "/generate/" (capability.as_str()) }
                    enctype="multipart/form-data" novalidate {
                    (csrf_field(shell.csrf))
                    input type="hidden" name="nonce" value=(nonce);
                    @for f in forms::fields(capability) {
                        (form_field(f, capability, &quota.plan, state))
                    }
                    button type="submit" { "Generate" }
                }
            }
        },
    )
}

fn form_field(f: &Field, capability: Capability, plan: &Plan, state: &FormState) -> Markup {
    let id = f.name;
    let value = state.values.get(f.name).map(String::as_str).unwrap_or("");
    let error = state.field_errors.get(f.name);
    let help_id = format!("{id}-help");
    let error_id = format!("{id}-error");
    let described = if error.is_some() {
        format!("{error_id} {help_id}")
    } else {
        help_id.clone()
    };
    let invalid = error.map(|_| "true");
    html! {
        div class="field" {
            label for=(id) {
                (f.label)
                @if !f.required { span class="muted" { " (optional)" } }
            }
            @match f.kind {
                Kind::TextArea(max) => {
                    textarea id=(id) name=(f.name) rows="4" maxlength=(max) required[f.required]
                        placeholder=(f.placeholder) aria-invalid=[invalid] aria-describedby=(described) { (value) }
                }
                Kind::Line(max) => {
                    input type="text" id=(id) name=(f.name) value=(value) maxlength=(max)
                        placeholder=(f.placeholder) aria-invalid=[invalid] aria-describedby=(described);
                }
                Kind::Number { min, max, step } => {
                    input type="number" id=(id) name=(f.name) value=(value) min=(min) max=(max)
                        step=(step) inputmode=(if step >= 1.0 { "numeric" } else { "decimal" })
                        placeholder=(f.placeholder) aria-invalid=[invalid] aria-describedby=(described);
                }
                Kind::Resolution => {
                    select id=(id) name=(f.name) aria-invalid=[invalid] aria-describedby=(described) {
                        @for r in forms::resolutions(capability, plan.max_resolution) {
                            option value=(r) selected[value == r] { (r.replace('x', " × ")) }
                        }
                    }
                }
                Kind::Audio => {
                    input type="file" id=(id) name=(f.name) accept="audio/*" required
                        aria-invalid=[invalid] aria-describedby=(described);
                }
            }
            p class="help" id=(help_id) { (f.help) }
            @if let Some(e) = error { p class="field-error" id=(error_id) { (e) } }
        }
    }
}

/// A state as a person reads it.
pub fn state_label(s: JobState) -> &'static str {
    match s {
        JobState::Created | JobState::Queued => "Waiting in line",
        JobState::Running => "Running",
        JobState::Completed => "Done",
        JobState::Failed => "Failed",
        JobState::Cancelled => "Cancelled",
    }
}

/// "about 45 s", "about 3 min", "about 1 h 5 min".
pub(crate) fn duration_words(secs: u64) -> String {
    match secs {
        0..=59 => format!("about {secs} s"),
        60..=3599 => format!("about {} min", secs.div_ceil(60)),
        _ => format!("about {} h {} min", secs / 3600, (secs % 3600) / 60),
    }
}

/// The part of a job page that changes while it runs.
pub fn job_status(job: &JobView) -> Markup {
    let live = !job.status.is_terminal();
    html! {
        p class={ "status status-" (job.status.as_str().to_ascii_lowercase()) } {
            strong id="job-state" data-state=(job.status.as_str()) { (state_label(job.status)) }
            @if let Some(pos) = job.queue_position {
                " · " span id="job-position" {
                    @if pos == 0 { "next in line" } @else { (pos) " ahead of you" }
                }
            }
            @if let Some(eta) = job.estimated_time_seconds {
                @if live { " · ready in " span id="job-eta" { (duration_words(eta)) } }
            }
        }
        @if job.status == JobState::Running {
            @let pct = job.progress.unwrap_or(0.0).clamp(0.0, 100.0);
            label for="job-progress" class="visually-hidden" { "Progress" }
            progress id="job-progress" max="100" value=(format!("{pct:.0}")) { (format!("{pct:.0}")) "%" }
            span class="muted" { " " (format!("{pct:.0}")) "%" }
        } @else if live {
            progress id="job-progress" aria-label="Waiting" {}
        }
        @if let Some(notice) = &job.notice {
            p class="alert" { (notice.message) }
        }
        @if let Some(error) = &job.error {
            p class="alert" role="alert" {
                (error.message)
                // A withheld output's message already says what was charged.
                @if job.refunded && error.code != "content_withheld" { " Your " (job.cost_tokens) " tokens were given back." }
            }
        }
    }
}

/// The cancel button of a live job, and the report form of a finished one
/// (outside the live region, so an update never takes the keyboard focus
/// away from them).
pub fn job_actions(job: &JobView, csrf: &str) -> Markup {
    html! {
        @if !job.status.is_terminal() {
            form method="post" action={ "/jobs/" (job.job_id) "/cancel" } class="inline" {
                (csrf_field(csrf))
                button type="submit" class="secondary" { "Cancel job" }
            }
        }
        @if job.status == JobState::Completed {
            form method="post" action={ "/jobs/" (job.job_id) "/report" } class="report" {
                (csrf_field(csrf))
                label for="report-reason" { "Something wrong with this output? Tell the operators." }
                input type="text" id="report-reason" name="reason" maxlength="500"
                    placeholder="What is wrong with it";
                button type="submit" class="secondary" { "Report" }
            }
        }
    }
}

/// What a visitor reads once their report reached the operators.
pub fn reported(shell: &Shell<'_>, job: &JobView) -> Markup {
    page(
        shell,
        "Reported",
        html! {
            h1 { "Thank you" }
            p role="status" { "Your report reached the operators; they will review this output." }
            p { a href={ "/jobs/" (job.job_id) } { "Back to the job" } }
        },
    )
}

/// Where an output can be fetched through the website.
pub fn output_url(job: &JobView, a: &ArtifactView) -> String {
    format!("/jobs/{}/outputs/{}", job.job_id, a.artifact_id)
}

/// A short description of what was asked, for alt text and captions.
pub fn prompt_of(job: &JobView) -> String {
    let text = ["prompt", "text"]
        .iter()
        .find_map(|k| job.params.get(*k).and_then(|v| v.as_str()))
        .unwrap_or(match job.capability {
            Capability::SpeechToText => "Transcription of an upload",
            _ => "Job",
        });
    let mut s: String = text.chars().take(140).collect();
    if text.chars().count() > 140 {
        s.push('…');
    }
    s
}

/// One output, shown as what it is: picture, video or audio player, or text.
pub fn output(job: &JobView, a: &ArtifactView, text: Option<&str>) -> Markup {
    let url = output_url(job, a);
    let alt = prompt_of(job);
    html! {
        figure class="output" {
            @match a.kind {
                ArtifactKind::Image => {
                    img src=(url) alt=(alt) width=[a.width] height=[a.height] loading="lazy";
                }
                ArtifactKind::Video => {
                    video src=(url) controls preload="metadata" width=[a.width] height=[a.height]
                        aria-label=(alt) {}
                }
                ArtifactKind::Audio => {
                    audio src=(url) controls preload="metadata" aria-label=(alt) {}
                }
                ArtifactKind::Text => {
                    @if let Some(t) = text { pre class="text-output" tabindex="0" { (t) } }
                }
            }
            figcaption {
                a href={ (url) "?download=1" } download {
                    "Download " (a.kind.as_str()) " (" (a.format) ", " (size_words(a.file_size)) ")"
                }
            }
        }
    }
}

fn size_words(bytes: u64) -> String {
    match bytes {
        0..=1023 => format!("{bytes} B"),
        1024..=1_048_575 => format!("{:.0} KB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MB", bytes as f64 / 1_048_576.0),
    }
}

/// The outputs of a finished job (texts fetched by the caller).
pub fn job_result(job: &JobView, texts: &HashMap<String, String>) -> Markup {
    html! {
        @if job.status == JobState::Completed {
            h2 { "Result" }
            div class="outputs" {
                @for a in &job.artifacts {
                    (output(job, a, texts.get(a.artifact_id.as_str()).map(String::as_str)))
                }
            }
            p { a class="button" href={ "/generate/" (job.capability.as_str()) } { "Make another" } }
        }
    }
}

/// A job's page; `live` pages follow the job by themselves.
pub fn job_page(shell: &Shell<'_>, job: &JobView, texts: &HashMap<String, String>) -> Markup {
    let live = !job.status.is_terminal();
    page(
        shell,
        &format!("{} job", forms::title(job.capability)),
        html! {
            @if live {
                noscript { meta http-equiv="refresh" content="3"; }
            }
            h1 { (forms::title(job.capability)) " job" }
            p class="prompt" { (prompt_of(job)) }
            section id="job" class="card" data-job=(job.job_id) data-live=(live)
                aria-labelledby="status-title" {
                h2 id="status-title" class="visually-hidden" { "Status" }
                div id="job-status" { (job_status(job)) }
                // Screen readers hear the state when it changes, not every percent.
                p id="job-announce" class="visually-hidden" role="status" aria-live="polite" {
                    (state_label(job.status))
                }
                div id="job-actions" { (job_actions(job, shell.csrf)) }
                div id="job-result" { (job_result(job, texts)) }
            }
            p class="muted" {
                (job.cost_tokens) " tokens · model " (job.model) " · "
                a href="/gallery" { "all your jobs" }
            }
        },
    )
}

/// The visitor's past jobs, newest first.
pub fn gallery(shell: &Shell<'_>, jobs: &[JobView], next: Option<&str>, first: bool) -> Markup {
    page(
        shell,
        "Gallery",
        html! {
            h1 { "Your gallery" }
            @if jobs.is_empty() {
                p {
                    @if first { "Nothing here yet. " a href="/generate" { "Make something" } "." }
                    @else { "No more jobs." }
                }
            }
            ul class="grid gallery" {
                @for job in jobs {
                    li class="card" {
                        @for a in job.artifacts.iter().take(1) {
                            @if a.kind != ArtifactKind::Text { (output(job, a, None)) }
                        }
                        p class="prompt" { a href={ "/jobs/" (job.job_id) } { (prompt_of(job)) } }
                        p class="muted" {
                            (forms::title(job.capability)) " · " (state_label(job.status))
                            " · " time datetime=(job.created_at.to_rfc3339()) {
                                (job.created_at.format("%Y-%m-%d %H:%M UTC"))
                            }
                        }
                        @if job.artifacts.len() > 1 || job.artifacts.iter().any(|a| a.kind == ArtifactKind::Text) {
                            ul class="downloads" {
                                @for a in &job.artifacts {
                                    li { a href={ (output_url(job, a)) "?download=1" } download {
                                        "Download " (a.kind.as_str()) " (" (a.format) ")"
                                    } }
                                }
                            }
                        }
                    }
                }
            }
            nav aria-label="Pages" class="pager" {
                @if !first { a href="/gallery" { "Newest" } }
                @if let Some(cursor) = next {
                    a href={ "/gallery?cursor=" (cursor) } rel="next" { "Older jobs" }
                }
            }
        },
    )
}

/// The account page: plan, tokens, linked bot accounts.
pub fn account(
    shell: &Shell<'_>,
    account: &AccountView,
    quota: &UserQuota,
    offers: &[StripeOffer],
    keys: &DeveloperKeys<'_>,
    message: Option<&str>,
    field_error: Option<(&str, &str)>,
) -> Markup {
    let error_of = |field: &str| field_error.filter(|(f, _)| *f == field).map(|(_, e)| e);
    let link_error = error_of("code");
    let adult_error = error_of("adult");
    let key_errors = KeyErrors {
        form: error_of("keys"),
        name: error_of("key-name"),
        capabilities: error_of("key-capabilities"),
    };
    let paying = offers.iter().any(|o| o.plan_id.as_str() == quota.plan.id);
    page(
        shell,
        "Account",
        html! {
            h1 { "Your account" }
            @if let Some(m) = message { div class="notice" role="status" { (m) } }
            section class="card" aria-labelledby="plan-title" {
                h2 id="plan-title" { "Plan and tokens" }
                dl class="facts" {
                    dt { "Email" } dd { (account.email) }
                    dt { "Plan" } dd id="plan-name" { (quota.plan.name) }
                    dt { "Tokens today" } dd id="tokens-left" { (tokens_left(quota)) }
                    dt { "Resets" } dd {
                        time datetime=(quota.resets_at.to_rfc3339()) {
                            (quota.resets_at.format("%Y-%m-%d %H:%M UTC"))
                        }
                    }
                }
                (buy_buttons(shell, offers, Some(&quota.plan)))
                @if paying {
                    form method="post" action="/billing/portal" class="inline" {
                        (csrf_field(shell.csrf))
                        button type="submit" class="secondary" id="manage-subscription" {
                            "Manage subscription"
                        }
                    }
                    p class="help" { "Cancel, change card or see invoices on Stripe's page." }
                }
                p { a href="/pricing" { "Compare plans" } }
            }
            section class="card" aria-labelledby="link-title" {
                h2 id="link-title" { "Telegram and Discord" }
                p {
                    "Link your chat accounts to share this plan and its tokens. Send "
                    code { "/link" } " to any Tessera bot and enter the code it answers with."
                }
                @if account.linked.is_empty() {
                    p class="muted" id="linked" { "No chat account is linked yet." }
                } @else {
                    ul id="linked" {
                        @for user in &account.linked { li { (user) } }
                    }
                }
                form method="post" action="/account/link" novalidate {
                    (csrf_field(shell.csrf))
                    div class="field" {
                        label for="code" { "Link code" }
                        input type="text" id="code" name="code" autocomplete="one-time-code"
                            autocapitalize="characters" spellcheck="false" maxlength="16" required
                            placeholder="K7QF-M2XD"
                            aria-invalid=[link_error.map(|_| "true")]
                            aria-describedby=(if link_error.is_some() { "code-error code-help" } else { "code-help" });
                        p class="help" id="code-help" { "Codes work once, for 10 minutes." }
                        @if let Some(e) = link_error { p class="field-error" id="code-error" { (e) } }
                    }
                    button type="submit" { "Link account" }
                }
            }
            section class="card" aria-labelledby="adult-title" {
                h2 id="adult-title" { "Adult content" }
                @if let Some(at) = account.age_confirmed_at {
                    p id="age-confirmed" {
                        "You confirmed that you are 18 or older on "
                        time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d")) }
                        ". Requests for adult content are allowed here where your plan allows them."
                    }
                } @else {
                    p {
                        "Requests for adult content are refused until you confirm that you are "
                        "18 or older. Chat groups decide for themselves."
                    }
                    form method="post" action="/account/age" novalidate {
                        (csrf_field(shell.csrf))
                        div class="field" {
                            label for="adult" {
                                input type="checkbox" id="adult" name="adult" value="yes" required
                                    aria-invalid=[adult_error.map(|_| "true")]
                                    aria-describedby=[adult_error.map(|_| "adult-error")];
                                " I am 18 or older"
                            }
                            @if let Some(e) = adult_error { p class="field-error" id="adult-error" { (e) } }
                        }
                        button type="submit" id="confirm-age" { "Confirm my age" }
                    }
                }
            }
            (developer_keys(shell, keys, &key_errors))
        },
    )
}

/// The account page's developer keys: the list, the key just made, and
/// where programs send their requests.
pub struct DeveloperKeys<'a> {
    /// Every key of the account, revoked ones too, oldest first.
    pub keys: &'a [DeveloperKeyView],
    /// The key the form just made, with its secret: shown this once.
    pub created: Option<&'a CreatedDeveloperKey>,
    /// The gateway's base URL, `<scheduler>/v1`.
    pub base_url: &'a str,
    /// Whether `base_url` is the scheduler's public address as the operator
    /// configured it; if not, it is where this site reaches the scheduler,
    /// which may not be reachable from elsewhere.
    pub base_url_configured: bool,
    /// The refused form's name, to fill it in again.
    pub name: &'a str,
    /// The refused form's capabilities, to tick them again.
    pub ticked: &'a [Capability],
}

/// What the key form was refused for: the whole form, or a field.
struct KeyErrors<'a> {
    form: Option<&'a str>,
    name: Option<&'a str>,
    capabilities: Option<&'a str>,
}

fn when(at: &chrono::DateTime<chrono::Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M UTC")) } }
}

fn developer_keys(shell: &Shell<'_>, keys: &DeveloperKeys<'_>, errors: &KeyErrors<'_>) -> Markup {
    let capabilities = |list: &Option<Vec<Capability>>| match list {
        None => "All".to_owned(),
        Some(list) => list
            .iter()
            .map(|c| forms::title(*c))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let name_described = if errors.name.is_some() {
        "key-name-error key-name-help"
    } else {
        "key-name-help"
    };
    let capabilities_described = if errors.capabilities.is_some() {
        "key-capabilities-error key-capabilities-help"
    } else {
        "key-capabilities-help"
    };
    html! {
        section class="card" aria-labelledby="keys-title" id="developer-keys" {
            h2 id="keys-title" { "Developer keys" }
            p {
                "Personal API keys for your own programs and tools that speak OpenAI's API. "
                "A key acts as you: your plan, tokens, priority and the site's rules apply, and "
                "what it makes shows in your gallery. Keep keys secret, and revoke one you no "
                "longer use or may have shown to someone."
            }
            @if let Some(created) = keys.created {
                div class="secret" role="status" id="new-key" {
                    p {
                        strong {
                            "Copy your new key \u{201c}" (created.key.name)
                            "\u{201d} now: it will not be shown again."
                        }
                    }
                    label for="new-key-secret" { "Secret key" }
                    input type="text" id="new-key-secret" readonly value=(created.api_key)
                        spellcheck="false" autocomplete="off" aria-describedby="new-key-help";
                    p class="help" id="new-key-help" {
                        "Tessera keeps only a fingerprint of it and cannot show it again. If you "
                        "lose it, revoke it and create another."
                    }
                }
            }
            h3 { "Using a key" }
            dl class="facts" {
                dt { "Base URL" } dd { code id="api-base" { (keys.base_url) } }
                dt { "Header" } dd { code { "Authorization: Bearer tdk_\u{2026}" } }
            }
            @if !keys.base_url_configured {
                p class="help" id="api-base-note" {
                    "This is the address this website reaches Tessera's scheduler at: the "
                    "operator has not said which address it has on the internet, so it may not "
                    "work from your computer. Ask them if it does not."
                }
            }
            p class="help" { "Give an OpenAI client the base URL, and the key as its API key." }
            h3 { "Your keys" }
            @if keys.keys.is_empty() {
                p class="muted" id="no-keys" { "You have no developer keys yet." }
            } @else {
                div class="table-wrap" tabindex="0" role="region" aria-labelledby="keys-title" {
                    table class="plans keys" id="key-list" {
                        caption class="visually-hidden" { "Your developer keys" }
                        thead { tr {
                            th scope="col" { "Name" }
                            th scope="col" { "Capabilities" }
                            th scope="col" { "Created" }
                            th scope="col" { "Last used" }
                            th scope="col" { "State" }
                        } }
                        tbody {
                            @for k in keys.keys {
                                tr id={ "key-" (k.key_id) } {
                                    th scope="row" { (k.name) }
                                    td { (capabilities(&k.capabilities)) }
                                    td { (when(&k.created_at)) }
                                    td {
                                        @match &k.last_used_at {
                                            Some(at) => (when(at)),
                                            None => span class="muted" { "Never" },
                                        }
                                    }
                                    td {
                                        @if let Some(at) = &k.revoked_at {
                                            "Revoked " (when(at))
                                        } @else {
                                            form method="post" class="inline"
                                                action={ "/account/keys/" (k.key_id) "/revoke#developer-keys" } {
                                                (csrf_field(shell.csrf))
                                                button type="submit" class="secondary" {
                                                    "Revoke"
                                                    span class="visually-hidden" { " " (k.name) }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h3 { "New key" }
            (alert(errors.form))
            // The answer opens at this section: the new secret, or what was refused.
            form method="post" action="/account/keys#developer-keys" id="new-key-form" novalidate {
                (csrf_field(shell.csrf))
                div class="field" {
                    label for="key-name" { "Name" }
                    input type="text" id="key-name" name="name" maxlength="64" required
                        value=(keys.name) placeholder="Open WebUI on my laptop"
                        aria-invalid=[errors.name.map(|_| "true")]
                        aria-describedby=(name_described);
                    p class="help" id="key-name-help" { "To tell your keys apart: 1 to 64 characters." }
                    @if let Some(e) = errors.name { p class="field-error" id="key-name-error" { (e) } }
                }
                fieldset class="field capabilities" aria-describedby=(capabilities_described) {
                    legend { "Capabilities" }
                    @for c in Capability::ALL {
                        label {
                            input type="checkbox" name="capability" value=(c.as_str())
                                checked[keys.ticked.contains(&c)];
                            " " (forms::title(c))
                        }
                    }
                    p class="help" id="key-capabilities-help" {
                        "Tick none for a key that may do all your plan allows, or only what it needs."
                    }
                    @if let Some(e) = errors.capabilities {
                        p class="field-error" id="key-capabilities-error" { (e) }
                    }
                }
                button type="submit" id="create-key" { "Create key" }
            }
        }
    }
}

fn price(cents: i64) -> String {
    if cents == 0 {
        "Free".into()
    } else {
        format!("${}.{:02} / month", cents / 100, cents % 100)
    }
}

/// The plans, as a table a screen reader can walk.
pub fn plan_table(plans: &[Plan], current: Option<&str>) -> Markup {
    html! {
        section aria-labelledby="plans-title" {
            h2 id="plans-title" { "Plans" }
            div class="table-wrap" tabindex="0" role="region" aria-labelledby="plans-title" {
                table class="plans" {
                    caption class="visually-hidden" { "Plans, their prices and what they include" }
                    thead { tr {
                        th scope="col" { "Plan" }
                        th scope="col" { "Price" }
                        th scope="col" { "Tokens per day" }
                        th scope="col" { "Largest side" }
                        th scope="col" { "Queue priority" }
                        th scope="col" { "Models" }
                    } }
                    tbody {
                        @for p in plans {
                            tr class=[(current == Some(p.id.as_str())).then_some("current")] {
                                th scope="row" {
                                    (p.name)
                                    @if current == Some(p.id.as_str()) { " " span class="badge" { "your plan" } }
                                }
                                td {
                                    @if p.daily_tokens.is_none() && p.price_cents == 0 { "For operators" }
                                    @else { (price(p.price_cents)) }
                                }
                                td { @match p.daily_tokens { Some(t) => (t), None => "Unlimited" } }
                                td { (p.max_resolution) " px" }
                                td { (p.priority.0 + 1) " of 4" }
                                td {
                                    @if p.allowed_models.iter().any(|m| m == "*") { "All models" }
                                    @else { (p.allowed_models.join(", ")) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A button per plan for sale above the current one (dearer than the
/// current plan's price): each starts a Stripe Checkout for it (a monthly
/// subscription).
fn buy_buttons(shell: &Shell<'_>, offers: &[StripeOffer], current: Option<&Plan>) -> Markup {
    let floor = current.map_or(0, |p| p.price_cents);
    let unlimited = current.is_some_and(|p| p.daily_tokens.is_none());
    html! {
        @let others: Vec<&StripeOffer> = offers.iter().filter(|o| !unlimited && o.price_cents > floor).collect();
        @if !others.is_empty() {
            div class="buy" {
                @for o in others {
                    form method="post" action="/billing/checkout" class="inline" {
                        (csrf_field(shell.csrf))
                        input type="hidden" name="plan" value=(o.plan_id);
                        button type="submit" id={ "buy-" (o.plan_id) } {
                            "Upgrade to " (o.name) " · " (price(o.price_cents))
                        }
                    }
                }
            }
        }
    }
}

/// The page shown while the visitor is sent to a payment page elsewhere
/// (Stripe's): a refresh, which the site's `form-action 'self'` policy does
/// not stop as it would a redirect answering the form, and a link.
pub fn leaving(url: &str, to: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content={ "0;url=" (url) };
                title { "Continuing to " (to) " · Tessera" }
                link rel="stylesheet" href="/static/app.css";
            }
            body {
                main id="main" {
                    section class="card narrow" {
                        h1 { "Continuing to " (to) }
                        p { "If nothing happens, " a id="continue" href=(url) rel="noreferrer" { "continue to " (to) } "." }
                    }
                }
            }
        }
    }
}

/// The pricing page.
pub fn pricing(
    shell: &Shell<'_>,
    plans: &[Plan],
    current: Option<&str>,
    offers: &[StripeOffer],
) -> Markup {
    page(
        shell,
        "Pricing",
        html! {
            h1 { "Pricing" }
            p class="lead" {
                "Every job costs tokens: an image up to 1024 × 1024 costs one, larger pictures, "
                "videos and long answers cost more. Tokens refill every day, and a job that fails "
                "gives its tokens back."
            }
            (plan_table(plans, current))
            p class="muted" { "Higher plans also wait less: their jobs go first in the queue." }
            @if !offers.is_empty() {
                section class="card" aria-labelledby="buy-title" {
                    h2 id="buy-title" { "Upgrade" }
                    @if shell.signed_in.is_some() {
                        p { "Plans are monthly subscriptions paid through Stripe; cancel any time from your account page." }
                        (buy_buttons(shell, offers, plans.iter().find(|p| Some(p.id.as_str()) == current)))
                    } @else {
                        p { a href="/signup" { "Sign up" } " or " a href="/signin" { "sign in" } " to upgrade." }
                    }
                }
            }
        },
    )
}

/// JSON for one live update of a job page.
pub fn live_update(job: &JobView, texts: &HashMap<String, String>, partial: &str) -> String {
    let result = if job.status == JobState::Running && !partial.trim().is_empty() {
        partial_result(partial)
    } else {
        job_result(job, texts)
    };
    serde_json::json!({
        "state": job.status.as_str(),
        "label": state_label(job.status),
        "done": job.status.is_terminal(),
        "status": job_status(job).into_string(),
        "result": result.into_string(),
    })
    .to_string()
}

/// A text reply as far as the engine has written it, while the job runs.
pub fn partial_result(text: &str) -> Markup {
    html! {
        div class="outputs" {
            pre class="text-output" aria-busy="true" { (text.trim_start()) }
        }
    }
}
