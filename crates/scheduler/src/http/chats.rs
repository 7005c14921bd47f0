//! `/api/v1/telegram/chats/{chat_id}/nsfw`: whether adult content is allowed
//! in a Telegram group, as its admins set it.
//!
//! Only a Telegram bot can see who administers a chat (Bot API
//! `getChatMember`), so the bot checks that the user who sent `/nsfw on` or
//! `/nsfw off` is the chat's `creator` or an `administrator` and then reports
//! it here, with a Telegram key; the scheduler keeps the setting, with who
//! changed it and when, and reads it when a job comes from that chat
//! ([`super::adult`]). Private chats (positive ids) are never NSFW, so they
//! cannot be turned on: a user alone with a bot has nobody to answer to.

use axum::extract::State;
use axum::Json;

use tessera_api::nsfw::{ChatNsfw, ChatNsfwRequest};
use tessera_api::ApiErrorBody;
use tessera_api::ErrorCode;
use tessera_core::Platform;

use super::auth::Frontend;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, Refusal};
use super::scope::speaks_for;
use super::wire::rfc3339;
use super::AppState;
use crate::lifecycle::now_ms;
use crate::store::{ApiKeyRecord, ChatNsfwRecord};

/// A `by` that is no user reference is `invalid_user_ref`.
impl Refusal for ChatNsfwRequest {
    fn refuse(field: &str, message: String) -> ApiError {
        let code = if field == "by" {
            ErrorCode::InvalidUserRef
        } else {
            ErrorCode::InvalidRequest
        };
        ApiError::invalid(code, message).with_field(field)
    }
}

/// A Telegram group's NSFW setting (Telegram keys only). Off until an admin
/// turns it on.
#[utoipa::path(
    get, path = "/api/v1/telegram/chats/{chat_id}/nsfw", tag = "chats",
    params(("chat_id" = String, Path, description = "The group's Telegram chat id (negative: private chats are never NSFW)", pattern = "^-[1-9][0-9]{0,17}$")),
    responses(
        (status = 200, body = ChatNsfw),
        (status = 403, description = "Not a Telegram key (`forbidden_frontend`)", body = ApiErrorBody),
        (status = 422, description = "Not a group's chat id (`invalid_request`), or a private chat (`context_not_allowed`)", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiPath(chat_id): ApiPath<String>,
) -> Result<Json<ChatNsfw>, ApiError> {
    telegram_only(&key)?;
    let chat_id = group_chat(&chat_id)?;
    let setting = state.store.chat_nsfw(Platform::Telegram, chat_id).await?;
    Ok(Json(match setting {
        Some(record) => view(record),
        None => ChatNsfw {
            chat_id,
            enabled: false,
            set_by: None,
            set_at: None,
        },
    }))
}

/// Turn adult content on or off in a Telegram group (Telegram keys only):
/// the bot reports that `by`, an admin of the chat as `getChatMember` says
/// (`creator` or `administrator`), asked for it. Answers the setting as it
/// now is.
#[utoipa::path(
    put, path = "/api/v1/telegram/chats/{chat_id}/nsfw", tag = "chats",
    request_body = ChatNsfwRequest,
    params(("chat_id" = String, Path, description = "The group's Telegram chat id (negative: private chats are never NSFW)", pattern = "^-[1-9][0-9]{0,17}$")),
    responses(
        (status = 200, description = "The setting as it now is", body = ChatNsfw),
        (status = 403, description = "Not a Telegram key (`forbidden_frontend`), or `by` is not a Telegram user (`forbidden_user_ref`)", body = ApiErrorBody),
        (status = 422, description = "Not a group's chat id (`invalid_request`), or a private chat (`context_not_allowed`)", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn set(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiPath(chat_id): ApiPath<String>,
    ApiJson(req): ApiJson<ChatNsfwRequest>,
) -> Result<Json<ChatNsfw>, ApiError> {
    telegram_only(&key)?;
    let chat_id = group_chat(&chat_id)?;
    speaks_for(&key.frontend, &req.by)?;
    let record = state
        .store
        .set_chat_nsfw(Platform::Telegram, chat_id, req.enabled, &req.by, now_ms())
        .await?;
    tracing::info!(
        chat_id,
        enabled = req.enabled,
        by = %req.by,
        bot_id = %key.bot_id,
        "a chat's NSFW setting changed"
    );
    Ok(Json(view(record)))
}

fn telegram_only(key: &ApiKeyRecord) -> Result<(), ApiError> {
    if key.frontend == Platform::Telegram {
        return Ok(());
    }
    Err(ApiError::forbidden(
        ErrorCode::ForbiddenFrontend,
        format!(
            "Telegram chats' settings are the Telegram bots': a {} key cannot use them",
            key.frontend
        ),
    ))
}

/// A group's chat id from the path: a negative integer.
fn group_chat(text: &str) -> Result<i64, ApiError> {
    let id: i64 = text.parse().map_err(|_| {
        ApiError::invalid(
            ErrorCode::InvalidRequest,
            format!("{text:?} is not a Telegram chat id"),
        )
        .with_field("chat_id")
    })?;
    if id >= 0 {
        return Err(ApiError::invalid(
            ErrorCode::ContextNotAllowed,
            "private chats are never NSFW: an admin turns it on in a group",
        )
        .with_field("chat_id"));
    }
    Ok(id)
}

fn view(r: ChatNsfwRecord) -> ChatNsfw {
    ChatNsfw {
        chat_id: r.chat_id,
        enabled: r.enabled,
        set_by: Some(r.set_by),
        set_at: Some(rfc3339(r.set_at)),
    }
}
