//! The client's calls for where adult content may be allowed: a Telegram
//! chat's NSFW setting (Telegram keys) and a website account's confirmed age
//! (web keys); see [`crate::nsfw`].

use reqwest::Method;

use super::{Client, ClientError};
use crate::nsfw::{ChatNsfw, ChatNsfwRequest};
use crate::public::AccountView;
use tessera_core::UserRef;

impl Client {
    /// `GET /api/v1/telegram/chats/{chat_id}/nsfw`: a chat's setting.
    pub async fn chat_nsfw(&self, chat_id: i64) -> Result<ChatNsfw, ClientError> {
        let path = format!("api/v1/telegram/chats/{chat_id}/nsfw");
        Self::send(self.request(Method::GET, &path)?).await
    }

    /// `PUT /api/v1/telegram/chats/{chat_id}/nsfw`: an admin of the chat,
    /// `by`, turned adult content on or off there.
    pub async fn set_chat_nsfw(
        &self,
        chat_id: i64,
        enabled: bool,
        by: &UserRef,
    ) -> Result<ChatNsfw, ClientError> {
        let path = format!("api/v1/telegram/chats/{chat_id}/nsfw");
        let body = ChatNsfwRequest {
            enabled,
            by: by.clone(),
        };
        Self::send(Self::json(self.request(Method::PUT, &path)?, &body)).await
    }

    /// `POST /api/v1/accounts/{user_ref}/age-confirmation`: the account's
    /// owner confirmed being 18 or older (web keys of the account's website).
    pub async fn confirm_age(
        &self,
        user_ref: impl std::fmt::Display,
    ) -> Result<AccountView, ClientError> {
        let path = format!("api/v1/accounts/{user_ref}/age-confirmation");
        Self::send(self.request(Method::POST, &path)?).await
    }
}
