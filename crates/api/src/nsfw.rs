//! Where adult content may be allowed: the context a frontend reports with a
//! job, a Telegram chat's NSFW setting that its admins change, and a website
//! account's confirmed age.
//!
//! The scheduler decides per request and believes a context only from the
//! kind of key that can know it: a Discord channel's `nsfw` flag from a
//! Discord key, a Telegram chat id from a Telegram key (the chat's setting is
//! the scheduler's, read at create), and nothing from a web key (the
//! account's confirmed age is the scheduler's too).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use tessera_core::UserRef;

/// Where a job's request comes from, as the frontend saw it. Each field
/// belongs to one kind of frontend; a key of another kind that sends it is
/// refused (403 `context_not_allowed`). Absent: a plain context, where adult
/// content is not allowed (a website account's confirmed age needs no field).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
#[schema(example = json!({"telegram_chat_id": -1001234567890_i64}))]
pub struct JobContext {
    /// Discord keys only: the interaction's `channel.nsfw` (age-restricted
    /// channel). Direct messages are never NSFW: leave it out there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discord_channel_nsfw: Option<bool>,
    /// Telegram keys only: the chat the request was written in. Adult
    /// content is allowed where the chat's admins turned it on
    /// (`PUT /api/v1/telegram/chats/{chat_id}/nsfw`); private chats
    /// (positive ids) never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram_chat_id: Option<i64>,
}

/// An object only, with no other fields: serde's derived struct would take
/// an array of the fields' values too, which the document does not allow.
impl<'de> Deserialize<'de> for JobContext {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            #[serde(default)]
            discord_channel_nsfw: Option<bool>,
            #[serde(default)]
            telegram_chat_id: Option<i64>,
        }
        struct Object;
        impl<'de> serde::de::Visitor<'de> for Object {
            type Value = JobContext;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<JobContext, A::Error> {
                let f = Fields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(JobContext {
                    discord_channel_nsfw: f.discord_channel_nsfw,
                    telegram_chat_id: f.telegram_chat_id,
                })
            }
        }
        deserializer.deserialize_map(Object)
    }
}

impl JobContext {
    /// A Discord interaction's context: `nsfw` is the channel's flag
    /// (`None` in direct messages, which are never NSFW).
    pub fn discord(nsfw: Option<bool>) -> Self {
        JobContext {
            discord_channel_nsfw: nsfw,
            ..Default::default()
        }
    }

    /// A Telegram chat's context.
    pub fn telegram(chat_id: i64) -> Self {
        JobContext {
            telegram_chat_id: Some(chat_id),
            ..Default::default()
        }
    }
}

/// `PUT /api/v1/telegram/chats/{chat_id}/nsfw`: a Telegram bot reports that
/// an admin of a group turned adult content on or off there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatNsfwRequest {
    pub enabled: bool,
    /// The admin who asked, as the bot checked with `getChatMember`
    /// (`creator` or `administrator`).
    #[schema(value_type = String, pattern = r"^telegram:[A-Za-z0-9_.@-]{1,64}$", example = "telegram:123456")]
    pub by: UserRef,
}

/// A Telegram chat's NSFW setting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChatNsfw {
    pub chat_id: i64,
    /// Off until an admin turns it on.
    pub enabled: bool,
    /// Who last changed it; absent if nobody has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_by: Option<UserRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_object_of_known_fields_is_a_context() {
        let read = |text: &str| serde_json::from_str::<JobContext>(text);
        assert_eq!(
            read(r#"{"telegram_chat_id": -100}"#).unwrap(),
            JobContext::telegram(-100)
        );
        assert_eq!(read("{}").unwrap(), JobContext::default());
        assert!(read("[null, null]").is_err());
        assert!(read("[true, -100]").is_err());
        assert!(read(r#"{"age_confirmed": true}"#).is_err());
        assert!(read(r#"{"telegram_chat_id": "-100"}"#).is_err());
    }
}
