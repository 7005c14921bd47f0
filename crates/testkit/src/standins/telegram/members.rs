//! Who is what in a chat: a test makes a user a group's `creator` or an
//! `administrator` (or restricts them), and `getChatMember` answers the
//! Bot API's `ChatMember` for it, as bots ask before letting a user change
//! a group's settings.
//!
//! A user the test said nothing about is a plain `member`; in a private
//! chat the user is its only member. A chat the bot has never seen is 400
//! `Bad Request: chat not found`, as for every other method.

use serde_json::{json, Value};

use super::api::{Answer, Ctx, Failure, Params};
use super::messages::user_json;
use super::TelegramStandIn;

/// Statuses `ChatMember` can have.
const STATUSES: [&str; 6] = [
    "creator",
    "administrator",
    "member",
    "restricted",
    "left",
    "kicked",
];

impl TelegramStandIn {
    /// Gives `user_id` the status `status` (`creator`, `administrator`,
    /// `member`, `restricted`, `left` or `kicked`) in the group `chat_id`,
    /// for every bot.
    pub fn set_chat_member_status(&self, chat_id: i64, user_id: i64, status: &str) {
        assert!(
            STATUSES.contains(&status),
            "no ChatMember status {status:?}"
        );
        assert!(chat_id < 0, "a private chat's only member is its user");
        self.shared
            .lock()
            .members
            .insert((chat_id, user_id), status.to_owned());
        self.shared.bump();
    }
}

/// `getChatMember`: `chat_id` (known to the bot) and `user_id`.
pub(super) fn get_chat_member(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    let chat_id: i64 = params
        .text("chat_id")
        .and_then(|raw| raw.trim().parse().ok())
        .filter(|id| ctx.bot.chats.contains_key(id))
        .ok_or_else(|| Failure::bad("chat not found"))?;
    let user_id = params
        .int("user_id")?
        .ok_or_else(|| Failure::bad("invalid user_id specified"))?;
    let status = if chat_id > 0 {
        if user_id != chat_id {
            return Err(Failure::bad("user not found"));
        }
        "member".to_owned()
    } else {
        ctx.members
            .get(&(chat_id, user_id))
            .cloned()
            .unwrap_or_else(|| "member".to_owned())
    };
    Ok(member(&status, user_json(user_id, ctx.users)).into())
}

/// A `ChatMember` object of `status`, with the fields the Bot API documents
/// for it.
fn member(status: &str, user: Value) -> Value {
    match status {
        "creator" => json!({ "status": "creator", "user": user, "is_anonymous": false }),
        "administrator" => json!({
            "status": "administrator",
            "user": user,
            "can_be_edited": false,
            "is_anonymous": false,
            "can_manage_chat": true,
            "can_delete_messages": true,
            "can_manage_video_chats": true,
            "can_restrict_members": true,
            "can_promote_members": false,
            "can_change_info": true,
            "can_invite_users": true,
            "can_post_stories": false,
            "can_edit_stories": false,
            "can_delete_stories": false,
            "can_pin_messages": true,
            "can_manage_topics": false,
        }),
        "restricted" => json!({
            "status": "restricted",
            "user": user,
            "is_member": true,
            "can_send_messages": true,
            "can_send_audios": false,
            "can_send_documents": false,
            "can_send_photos": false,
            "can_send_videos": false,
            "can_send_video_notes": false,
            "can_send_voice_notes": false,
            "can_send_polls": false,
            "can_send_other_messages": false,
            "can_add_web_page_previews": false,
            "can_change_info": false,
            "can_invite_users": false,
            "can_pin_messages": false,
            "can_manage_topics": false,
            "until_date": 0,
        }),
        "kicked" => json!({ "status": "kicked", "user": user, "until_date": 0 }),
        other => json!({ "status": other, "user": user }),
    }
}
