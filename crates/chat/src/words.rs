//! The words users read: progress, results, quotas and errors, in plain
//! language. Nothing here shows a stack trace, an HTTP status or an internal id
//! other than a job id the user can quote.

use chrono::{DateTime, Utc};
use tessera_api::client::ClientError;
use tessera_api::internal::ArtifactKind;
use tessera_api::public::{JobView, LinkCode, UserQuota};
use tessera_core::{Capability, ErrorCode, JobState, Platform};

use crate::command::{commands_for, CommandInfo};

/// `/start` and `/help`.
pub fn help(capabilities: &[Capability]) -> String {
    let mut lines = vec!["Here is what I can do:".to_owned()];
    for CommandInfo {
        name, description, ..
    } in commands_for(capabilities)
    {
        if name != "start" && name != "help" {
            lines.push(format!("/{name}: {description}"));
        }
    }
    if capabilities.contains(&Capability::SpeechToText) {
        lines
            .push("Send a voice message or an audio file and I'll write down what it says.".into());
    }
    lines.join("\n")
}

/// `/link`: the code to enter on the website, and what it does.
pub fn link_code(code: &LinkCode, now: DateTime<Utc>) -> String {
    let minutes = ((code.expires_at - now).num_seconds().max(0) + 59) / 60;
    format!(
        "Your link code is {}. Enter it on the website's Account page within {} minute{} to share one plan and quota.",
        code.code,
        minutes,
        if minutes == 1 { "" } else { "s" }
    )
}

/// An output larger than the platform takes, as a download link, and for
/// how long it works ("24 hours", "30 minutes").
pub fn download_link(
    kind: ArtifactKind,
    platform: Platform,
    url: &str,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> String {
    let (what, platform) = (kind_word(kind), platform_name(platform));
    format!(
        "Your {what} is larger than {platform} accepts; download it here (the link works for {}): {url}",
        lifetime_words(((expires_at - now).num_milliseconds() + 500).div_euclid(1000))
    )
}

/// A link's lifetime in whole hours, minutes or seconds, to the nearest:
/// "24 hours" (a few seconds lost on the way do not make it "23 hours").
fn lifetime_words(seconds: i64) -> String {
    let s = seconds.max(0);
    let (n, unit) = if s >= 2 * 3600 {
        ((s + 60) / 3600, "hour")
    } else if s >= 120 {
        ((s + 30) / 60, "minute")
    } else {
        (s, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// An output's kind, as a user calls it.
fn kind_word(kind: ArtifactKind) -> &'static str {
    match kind {
        ArtifactKind::Image => "image",
        ArtifactKind::Video => "video",
        ArtifactKind::Audio => "audio",
        ArtifactKind::Text => "text",
    }
}

/// The platform a user talks to the bot on, by name.
fn platform_name(platform: Platform) -> &'static str {
    match platform {
        Platform::Telegram => "Telegram",
        Platform::Discord => "Discord",
        Platform::Web => "this chat",
    }
}

/// An output larger than the platform takes when no link can be made.
pub fn too_large_without_link(kind: ArtifactKind, platform: Platform, job: &JobView) -> String {
    let (what, platform) = (kind_word(kind), platform_name(platform));
    format!(
        "Your {what} is larger than {platform} accepts, and I cannot make a download link for it. Your job {} is done; the operators can fetch it.",
        job.job_id
    )
}

/// "in 3 h 12 min", "in 45 s".
pub fn duration_words(seconds: i64) -> String {
    let s = seconds.max(0);
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", (s + 59) / 60)
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}

fn reset_words(resets_at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!(
        "{} UTC (in {})",
        resets_at.format("%H:%M"),
        duration_words((resets_at - now).num_seconds())
    )
}

/// `/quota`.
pub fn quota(q: &UserQuota, now: DateTime<Utc>) -> String {
    let left = match q.tokens_left_today {
        Some(left) => format!("{left} tokens left today"),
        None => "no daily token limit".to_owned(),
    };
    format!(
        "Plan: {}. {} ({} used). Tokens reset at {}.",
        q.plan.name,
        left,
        q.tokens_used_today,
        reset_words(q.resets_at, now)
    )
}

fn noun(c: Capability) -> &'static str {
    match c {
        Capability::Image => "image",
        Capability::Video => "video",
        Capability::Text => "reply",
        Capability::SpeechToText => "transcript",
        Capability::TextToSpeech => "speech",
    }
}

/// The one progress message of a job, as it should read now.
pub fn progress(job: &JobView) -> String {
    let what = noun(job.capability);
    match job.status {
        JobState::Created | JobState::Queued => {
            if let Some(notice) = &job.notice {
                return format!("Waiting: {}", notice.message);
            }
            let mut s = format!("Your {what} is in the queue");
            match job.queue_position {
                Some(0) => s.push_str(", next in line"),
                Some(n) => s.push_str(&format!(", {n} ahead of it")),
                None => {}
            }
            if let Some(eta) = job.estimated_time_seconds {
                s.push_str(&format!(", ready in about {}", duration_words(eta as i64)));
            }
            s.push('.');
            s
        }
        JobState::Running => match job.progress {
            Some(p) => format!("Making your {what}: {:.0} %", p.clamp(0.0, 100.0)),
            None => format!("Making your {what}..."),
        },
        JobState::Completed => format!("Your {what} is ready."),
        // A withheld output's message is written for the user whole: what
        // happened and whether anything was charged.
        JobState::Failed
            if job
                .error
                .as_ref()
                .is_some_and(|e| e.code == tessera_api::ErrorCode::ContentWithheld.as_str()) =>
        {
            job.error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default()
        }
        JobState::Failed => {
            let why = job
                .error
                .as_ref()
                .map(|e| e.message.trim_end_matches('.').to_owned())
                .unwrap_or_else(|| "it could not be made".into());
            let mut s = format!("Sorry, your {what} failed: {why}.");
            if job.refunded && job.cost_tokens > 0 && !why.contains("refunded") {
                s.push_str(" Your tokens were refunded.");
            }
            s
        }
        JobState::Cancelled => {
            if job.refunded && job.cost_tokens > 0 {
                format!("Your {what} was cancelled and your tokens were refunded.")
            } else {
                format!("Your {what} was cancelled.")
            }
        }
    }
}

/// One line per live job, for `/status`.
pub fn status(jobs: &[JobView]) -> String {
    if jobs.is_empty() {
        return "You have nothing waiting or running.".into();
    }
    let mut lines = vec![format!(
        "You have {} job{} waiting or running:",
        jobs.len(),
        if jobs.len() == 1 { "" } else { "s" }
    )];
    for job in jobs {
        lines.push(format!("- {} ({})", progress(job), job.job_id));
    }
    lines.join("\n")
}

/// What a user reads when the public API refused or failed a request.
pub fn api_error(e: &ClientError, now: DateTime<Utc>) -> String {
    match e {
        ClientError::Api { body, .. } => {
            let d = &body.error;
            match body.code() {
                Some(ErrorCode::QuotaExhausted) => match d.resets_at {
                    Some(at) => format!(
                        "You have used up today's tokens for that. They reset at {}. Send /quota to see your plan.",
                        reset_words(at, now)
                    ),
                    None => "You have used up today's tokens for that. Send /quota to see your plan.".into(),
                },
                // Nothing was charged; the scheduler says when a retry is admitted.
                Some(ErrorCode::QueueFull) => {
                    let retry = d.retry_after_seconds.unwrap_or(60) as i64;
                    match d.expected_wait_seconds {
                        Some(wait) => format!(
                            "The queue is full right now (about {} of waiting ahead). Try again in {}. Nothing was charged.",
                            duration_words(wait as i64),
                            duration_words(retry)
                        ),
                        None => format!(
                            "The queue is full right now. Try again in {}. Nothing was charged.",
                            duration_words(retry)
                        ),
                    }
                }
                Some(ErrorCode::TooManyQueued) => format!(
                    "You already have as many jobs waiting as your plan allows. Try again in {}, once one of them has started. Nothing was charged.",
                    duration_words(d.retry_after_seconds.unwrap_or(60) as i64)
                ),
                Some(code) if code.is_credential() => {
                    "This bot is not set up correctly (its API key was refused). It has been logged for the operators.".into()
                }
                // The operator's rule wrote the message for the user.
                Some(ErrorCode::PromptRefused | ErrorCode::ContentNotAllowed) => format!(
                    "{} Nothing was charged.",
                    d.message.trim()
                ),
                // The scheduler says until when; the reason stays with the operators.
                Some(ErrorCode::UserBanned | ErrorCode::UserSuspended) => d.message.trim().to_owned(),
                Some(ErrorCode::JobNotFound) => "I can't find that job.".into(),
                Some(ErrorCode::JobFinished) => "That job has already finished.".into(),
                Some(code) if code.is_server_side() => {
                    "Something went wrong on our side; please try again in a minute.".into()
                }
                // Validation and policy refusals carry a human message written for this.
                _ => format!("I can't do that: {}.", d.message.trim_end_matches('.')),
            }
        }
        ClientError::Transport(_) | ClientError::Unexpected { .. } | ClientError::Url(_) => {
            "The service is not answering right now; please try again in a minute.".into()
        }
    }
}

/// What a user reads once their report reached the operators (a repeat
/// reads the same: it changes nothing).
pub fn report_received() -> &'static str {
    "Thank you: the operators will review it."
}

/// What `/report` needs when it cannot tell which output is meant.
pub fn report_usage() -> &'static str {
    "Which output? Reply to my message about it with /report <why>, or send /report <job id> <why>."
}

/// What a rate-limited user reads.
pub fn slow_down(wait_seconds: u64) -> String {
    format!(
        "Slow down a little: you can send another request in {}.",
        duration_words(wait_seconds.max(1) as i64)
    )
}

/// Caption of a delivered output.
pub fn caption(job: &JobView) -> Option<String> {
    let prompt = job.params.get("prompt").and_then(|p| p.as_str())?;
    let short: String = prompt.chars().take(200).collect();
    Some(if short.len() < prompt.len() {
        format!("{short}...")
    } else {
        short
    })
}

// The NSFW context: Telegram's `/nsfw on|off`, which a group's admins send.

/// `/nsfw` alone: whether adult content is allowed in this group.
pub fn nsfw_state(setting: &tessera_api::nsfw::ChatNsfw) -> String {
    if setting.enabled {
        "Adult content is allowed in this group (where the plan allows it). An admin can turn it off with /nsfw off.".into()
    } else {
        "Adult content is not allowed in this group. An admin can allow it with /nsfw on.".into()
    }
}

/// An admin turned adult content on or off.
pub fn nsfw_changed(enabled: bool) -> String {
    if enabled {
        "Done: adult content is now allowed in this group (where the plan allows it). Send /nsfw off to stop it.".into()
    } else {
        "Done: adult content is no longer allowed in this group.".into()
    }
}

/// `/nsfw on|off` from someone who is not an admin of the group.
pub const NSFW_ADMINS_ONLY: &str = "Only this group's admins can change that.";

/// `/nsfw` in a private chat.
pub const NSFW_PRIVATE_CHAT: &str =
    "Adult content is never allowed in private chats. A group's admins can allow it there with /nsfw on.";

/// `/nsfw` with something other than `on` or `off`.
pub const NSFW_USAGE: &str =
    "Send /nsfw on or /nsfw off to change it (admins only), or /nsfw to see it.";

/// Telegram did not say whether the sender is an admin.
pub const NSFW_UNCHECKED: &str =
    "I couldn't check with Telegram who the admins are; please try again in a minute.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_words(45), "45 s");
        assert_eq!(duration_words(61), "2 min");
        assert_eq!(duration_words(3 * 3600 + 12 * 60), "3 h 12 min");
        assert_eq!(duration_words(-5), "0 s");
    }

    #[test]
    fn a_download_link_says_why_and_for_how_long() {
        let now = Utc::now();
        let url = "https://tessera.example.org/d/x";
        let day = now + chrono::Duration::hours(24) - chrono::Duration::seconds(2);
        assert_eq!(
            download_link(ArtifactKind::Image, Platform::Telegram, url, day, now),
            "Your image is larger than Telegram accepts; download it here (the link works for 24 hours): https://tessera.example.org/d/x"
        );
        let soon = now + chrono::Duration::milliseconds(3_990);
        assert!(download_link(ArtifactKind::Video, Platform::Discord, url, soon, now)
            .starts_with("Your video is larger than Discord accepts; download it here (the link works for 4 seconds)"));
        let minutes = now + chrono::Duration::minutes(30);
        assert!(
            download_link(ArtifactKind::Audio, Platform::Discord, url, minutes, now)
                .contains("(the link works for 30 minutes)")
        );
        let hour = now + chrono::Duration::seconds(3600);
        assert!(
            download_link(ArtifactKind::Audio, Platform::Discord, url, hour, now)
                .contains("(the link works for 60 minutes)")
        );
    }

    #[test]
    fn admission_refusals_say_the_wait_and_when_to_try_again() {
        let refused = |code, wait, retry| ClientError::Api {
            status: reqwest::StatusCode::TOO_MANY_REQUESTS,
            body: tessera_api::ApiErrorBody::new(code, "from the scheduler")
                .with_retry(retry, wait),
        };
        let now = Utc::now();
        assert_eq!(
            api_error(&refused(ErrorCode::QueueFull, Some(1500), 300), now),
            "The queue is full right now (about 25 min of waiting ahead). Try again in 5 min. Nothing was charged."
        );
        assert_eq!(
            api_error(&refused(ErrorCode::TooManyQueued, None, 40), now),
            "You already have as many jobs waiting as your plan allows. Try again in 40 s, once one of them has started. Nothing was charged."
        );
    }

    #[test]
    fn help_lists_the_bots_commands() {
        let h = help(&[Capability::Image]);
        assert!(h.contains("/imagine"));
        assert!(!h.contains("/video"));
        assert!(!h.contains("voice message"));
        assert!(help(&[Capability::SpeechToText]).contains("voice message"));
        assert!(h.contains("/link"));
    }

    #[test]
    fn a_link_code_says_where_to_enter_it_and_for_how_long() {
        let now = Utc::now();
        let code = LinkCode {
            code: "K7QF-M2XD".into(),
            expires_at: now + chrono::Duration::minutes(10),
        };
        assert_eq!(
            link_code(&code, now),
            "Your link code is K7QF-M2XD. Enter it on the website's Account page within 10 minutes to share one plan and quota."
        );
        let late = now + chrono::Duration::seconds(9 * 60 + 30);
        assert!(link_code(&code, late).contains("within 1 minute to"));
    }
}
