//! Whether a request's context allows adult content, believed only as far
//! as the frontend's key allows.
//!
//! A frontend reports where a request comes from ([`JobContext`]); the
//! scheduler trusts each part only from the kind of key that can know it,
//! and keeps the rest itself: a Discord key's word on its channel's `nsfw`
//! flag (Discord puts it in every interaction, and only a Discord bot sees
//! the interaction), a Telegram key's word on which chat a request came from
//! (whether that chat allows it is what the chat's admins set, stored here),
//! and nothing of a web key's (whether an account confirmed its age is
//! stored here). A key that claims another kind's context is refused, 403
//! `context_not_allowed`, before anything is charged. The user's plan can
//! forbid adult content whatever the context (`moderation.adult_forbidden_plans`),
//! which the create applies once it has read the plan.
//!
//! A shared module, not a resource's: job creation asks it, and the
//! settings it reads are changed by the `chats` and `accounts` resources.

use tessera_api::nsfw::JobContext;
use tessera_api::ErrorCode;
use tessera_core::{Platform, UserRef};

use super::error::ApiError;
use super::scope::Speaks;
use super::AppState;

/// Whether the context `key` reports for a job of `user_ref` allows adult
/// content (before the plan has its say). Refuses a context the key may not
/// report.
pub(crate) async fn context_allows(
    state: &AppState,
    key: &impl Speaks,
    user_ref: &UserRef,
    context: Option<&JobContext>,
) -> Result<bool, ApiError> {
    let frontend = key.frontend();
    let empty = JobContext::default();
    let context = context.unwrap_or(&empty);
    let claimed: &[(&str, bool, Platform)] = &[
        (
            "discord_channel_nsfw",
            context.discord_channel_nsfw.is_some(),
            Platform::Discord,
        ),
        (
            "telegram_chat_id",
            context.telegram_chat_id.is_some(),
            Platform::Telegram,
        ),
    ];
    if let Some((field, _, owner)) = claimed
        .iter()
        .find(|(_, given, owner)| *given && *owner != frontend)
    {
        return Err(not_yours(frontend, field, *owner));
    }
    Ok(match frontend {
        Platform::Discord => context.discord_channel_nsfw == Some(true),
        Platform::Telegram => match context.telegram_chat_id {
            // Private chats (positive ids) are never NSFW; a group is when
            // its admins turned it on.
            Some(chat) if chat < 0 => state
                .store
                .chat_nsfw(Platform::Telegram, chat)
                .await?
                .is_some_and(|setting| setting.enabled),
            _ => false,
        },
        Platform::Web => {
            user_ref.platform() == Platform::Web
                && state.store.age_confirmed(user_ref, key.bot_id()).await?
        }
    })
}

/// A context field only another kind of frontend may report.
fn not_yours(frontend: Platform, field: &str, owner: Platform) -> ApiError {
    ApiError::forbidden(
        ErrorCode::ContextNotAllowed,
        format!("a {frontend} key cannot report {field}: only {owner} bots see it"),
    )
    .with_field(format!("context.{field}"))
}
