//! The Discord stand-in's REST API answers real clients as Discord does:
//! twilight-http, pointed at it, registers and reads back commands, meets the
//! form-error envelope, 401s and 429s (and retries them), and answers
//! interactions within Discord's limits and deadlines. The gateway and HTTP
//! interactions are checked in `discord_standin_gateway.rs`; both share
//! `common/discord.rs`.

mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use twilight_model::http::attachment::Attachment;
use twilight_model::http::interaction::{
    InteractionResponse, InteractionResponseData, InteractionResponseType,
};
use twilight_model::id::Id;

use tessera_testkit::standins::discord::DiscordOptions;

use common::discord::{
    api_error, client, commands, register, shard, standin_with_bot, APP, CHANNEL, TOKEN, USER, WAIT,
};

#[tokio::test]
async fn commands_register_and_read_back_through_twilight() {
    let standin = standin_with_bot(DiscordOptions::default()).await;
    let http = client(&standin, TOKEN);

    let me = http.current_user().await.unwrap().model().await.unwrap();
    assert_eq!(
        (me.id.get(), me.name.as_str(), me.bot),
        (APP, "tessera", true)
    );
    let app = http
        .current_user_application()
        .await
        .unwrap()
        .model()
        .await
        .unwrap();
    assert_eq!(app.id.get(), APP);
    assert_eq!(app.verify_key, standin.public_key_hex(TOKEN));

    let registered = http
        .interaction(Id::new(APP))
        .set_global_commands(&commands())
        .await
        .unwrap()
        .models()
        .await
        .unwrap();
    assert_eq!(registered.len(), 2);
    assert!(registered.iter().all(|c| c.id.is_some()));
    assert_eq!(standin.command_names(APP), ["imagine", "transcribe"]);

    // Overwriting keeps the IDs of commands that stay, as Discord does.
    let again = http
        .interaction(Id::new(APP))
        .set_global_commands(&commands()[..1])
        .await
        .unwrap()
        .models()
        .await
        .unwrap();
    assert_eq!(again[0].id, registered[0].id);
    let listed = http
        .interaction(Id::new(APP))
        .global_commands()
        .await
        .unwrap()
        .models()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "imagine");

    // Every answer carries the rate-limit headers.
    let call = &standin.calls("GET /api/v10/users/@me")[0];
    assert_eq!(call.status, 200);
    assert_eq!(call.bot.as_deref(), Some(TOKEN));
    let response = reqwest::Client::new()
        .get(format!("{}/api/v10/gateway/bot", standin.base_url()))
        .header("Authorization", format!("Bot {TOKEN}"))
        .send()
        .await
        .unwrap();
    for name in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-reset-after",
        "x-ratelimit-bucket",
    ] {
        assert!(response.headers().contains_key(name), "{name} missing");
    }
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["url"], standin.gateway_url());
    assert_eq!(body["shards"], 1);
    assert_eq!(body["session_start_limit"]["max_concurrency"], 1);
}

#[tokio::test]
async fn invalid_commands_get_the_form_error_envelope() {
    let standin = standin_with_bot(DiscordOptions::default()).await;
    let url = format!("{}/api/v10/applications/{APP}/commands", standin.base_url());
    let put = |body: Value| {
        reqwest::Client::new()
            .put(&url)
            .header("Authorization", format!("Bot {TOKEN}"))
            .json(&body)
            .send()
    };
    let response = put(json!([
        { "name": "fine", "description": "ok" },
        { "name": "Imagine", "description": "" },
        { "name": "x", "description": "d".repeat(101), "options": [
            { "type": 3, "name": "a", "description": "a" },
            { "type": 3, "name": "b", "description": "b", "required": true },
        ]},
    ]))
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 50035);
    assert_eq!(body["message"], "Invalid Form Body");
    let errors = &body["errors"];
    assert!(errors.get("0").is_none(), "{errors}");
    assert_eq!(
        errors["1"]["name"]["_errors"][0]["code"],
        "APPLICATION_COMMAND_INVALID_NAME"
    );
    assert_eq!(
        errors["1"]["description"]["_errors"][0]["code"],
        "BASE_TYPE_BAD_LENGTH"
    );
    assert_eq!(
        errors["2"]["description"]["_errors"][0]["code"],
        "BASE_TYPE_BAD_LENGTH"
    );
    assert!(errors["2"]["options"]["1"]["required"]["_errors"].is_array());
    assert!(standin.commands(APP).is_empty(), "nothing is stored");

    let long_name = put(json!([{ "name": "n".repeat(33), "description": "d" }]))
        .await
        .unwrap();
    assert_eq!(long_name.status(), 400);
    assert!(put(json!([{ "name": "ok", "description": "d" }]))
        .await
        .unwrap()
        .status()
        .is_success());
}

#[tokio::test]
async fn a_bad_token_is_unauthorized() {
    let standin = standin_with_bot(DiscordOptions::default()).await;
    let error = client(&standin, "not-a-bot")
        .current_user()
        .await
        .unwrap_err();
    let (status, body) = api_error(&error);
    assert_eq!(status, 401);
    assert_eq!(body, json!({ "message": "401: Unauthorized", "code": 0 }));

    let bare = reqwest::Client::new()
        .put(format!(
            "{}/api/v10/applications/{APP}/commands",
            standin.base_url()
        ))
        .json(&json!([]))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 401);
    // Another bot's application is not this bot's to change.
    standin.add_bot("other-token", APP + 1, "other");
    let foreign = client(&standin, "other-token")
        .interaction(Id::new(APP))
        .set_global_commands(&commands())
        .await
        .unwrap_err();
    assert_eq!(api_error(&foreign).0, 403);
}

#[tokio::test]
async fn twilight_waits_out_a_429_and_retries() {
    let standin = standin_with_bot(DiscordOptions::default()).await;
    standin.rate_limit("PUT /api/v10/applications", 1, 0.4);
    let started = Instant::now();
    let http = register(&standin).await;
    assert!(started.elapsed() >= Duration::from_millis(350));
    let statuses: Vec<u16> = standin
        .calls("PUT /api/v10/applications")
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [429, 200]);
    assert_eq!(standin.command_names(APP).len(), 2);

    // The 429 itself has Discord's body and headers.
    standin.rate_limit("/users/@me", 1, 2.5);
    let response = reqwest::Client::new()
        .get(format!("{}/api/v10/users/@me", standin.base_url()))
        .header("Authorization", format!("Bot {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");
    assert_eq!(response.headers()["x-ratelimit-scope"], "user");
    assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "message": "You are being rate limited.", "retry_after": 2.5, "global": false })
    );
    // The route's own limit: the sixth request in a window is refused.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = reqwest::Client::new()
            .get(format!("{}/api/v10/gateway/bot", standin.base_url()))
            .header("Authorization", format!("Bot {TOKEN}"))
            .send()
            .await
            .unwrap();
        statuses.push((
            r.status().as_u16(),
            r.headers()["x-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        ));
    }
    assert_eq!(statuses[0], (200, "4".to_owned()));
    assert_eq!(statuses[4], (200, "0".to_owned()));
    assert_eq!(statuses[5].0, 429);
    drop(http);
}

#[tokio::test]
async fn answers_are_checked_against_discords_limits() {
    let standin = standin_with_bot(DiscordOptions::default()).await;
    let http = register(&standin).await;
    let _shard = shard(&standin, TOKEN).await;
    let sent = standin.slash(TOKEN, CHANNEL, USER, "imagine", json!({ "prompt": "x" }));

    // Follow-ups before the acknowledgement have no webhook yet.
    let early = http
        .interaction(Id::new(APP))
        .create_followup(&sent.token)
        .content("too soon")
        .await
        .unwrap_err();
    assert_eq!(
        api_error(&early),
        (404, json!({ "message": "Unknown Webhook", "code": 10015 }))
    );

    let reply = InteractionResponse {
        kind: InteractionResponseType::ChannelMessageWithSource,
        data: Some(InteractionResponseData {
            content: Some("first".into()),
            ..Default::default()
        }),
    };
    let callback = http
        .interaction(Id::new(APP))
        .create_response(Id::new(sent.id), &sent.token, &reply)
        .with_response()
        .await
        .unwrap()
        .model()
        .await
        .unwrap();
    let original = standin.interaction(sent.id).unwrap().original.unwrap();
    assert_eq!(original.content, "first");
    assert_eq!(callback.interaction.id.get(), sent.id);
    assert_eq!(
        callback.interaction.response_message_id.map(Id::get),
        Some(original.id)
    );

    let webhook = format!(
        "{}/api/v10/webhooks/{APP}/{}",
        standin.base_url(),
        sent.token
    );
    let post = |body: Value| reqwest::Client::new().post(&webhook).json(&body).send();
    let long = post(json!({ "content": "a".repeat(2001) })).await.unwrap();
    assert_eq!(long.status(), 400);
    let body: Value = long.json().await.unwrap();
    assert_eq!(body["code"], 50035);
    assert_eq!(
        body["errors"]["content"]["_errors"][0]["code"],
        "BASE_TYPE_MAX_LENGTH"
    );
    let exactly = post(json!({ "content": "é".repeat(2000) })).await.unwrap();
    assert_eq!(exactly.status(), 200, "2000 characters are fine");
    let empty = post(json!({ "content": "  " })).await.unwrap();
    assert_eq!(empty.status(), 400);
    let body: Value = empty.json().await.unwrap();
    assert_eq!(body["code"], 50006);
    let embeds = post(json!({ "embeds": [{ "title": "t".repeat(257) }] }))
        .await
        .unwrap();
    let body: Value = embeds.json().await.unwrap();
    assert!(
        body["errors"]["embeds"]["0"]["title"]["_errors"].is_array(),
        "{body}"
    );

    // Multipart with payload_json and files[n], as raw clients send it.
    let form_boundary = "XyZ";
    let form = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"payload_json\"\r\nContent-Type: application/json\r\n\r\n\
         {{\"content\":\"audio\",\"attachments\":[{{\"id\":0,\"filename\":\"speech.ogg\",\"description\":\"TTS\"}}]}}\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"files[0]\"; filename=\"out.ogg\"\r\nContent-Type: audio/ogg\r\n\r\n\
         OggS-bytes\r\n--{b}--\r\n",
        b = form_boundary
    );
    let response = reqwest::Client::new()
        .patch(format!("{webhook}/messages/@original"))
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={form_boundary}"),
        )
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let message: Value = response.json().await.unwrap();
    assert_eq!(message["attachments"][0]["filename"], "speech.ogg");
    assert_eq!(message["attachments"][0]["content_type"], "audio/ogg");
    let record = standin.interaction(sent.id).unwrap();
    let original = record.original.unwrap();
    assert_eq!(original.content, "audio");
    assert_eq!(original.attachments[0].bytes.as_ref(), b"OggS-bytes");
    assert_eq!(original.attachments[0].description.as_deref(), Some("TTS"));
    assert_eq!(record.followups.len(), 1);

    // Channel messages, JSON and multipart through twilight.
    let channel = Id::new(CHANNEL);
    http.create_message(channel)
        .content("job done")
        .await
        .unwrap();
    http.create_message(channel)
        .attachments(&[Attachment::from_bytes("log.txt".into(), b"ok".to_vec(), 7)])
        .await
        .unwrap();
    let messages = standin.wait_channel_messages(CHANNEL, 2, WAIT).await;
    assert_eq!(messages[0].content, "job done");
    assert_eq!(messages[1].attachments[0].filename, "log.txt");
    assert_eq!(
        messages[1].attachments[0].content_type.as_deref(),
        Some("text/plain; charset=utf-8")
    );
}

#[tokio::test]
async fn a_late_or_unknown_callback_is_an_unknown_interaction() {
    let standin = standin_with_bot(DiscordOptions {
        ack_deadline: Duration::from_millis(200),
        token_lifetime: Duration::from_millis(500),
        ..DiscordOptions::default()
    })
    .await;
    let http = register(&standin).await;
    let _shard = shard(&standin, TOKEN).await;
    let sent = standin.slash(TOKEN, CHANNEL, USER, "imagine", json!({ "prompt": "x" }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let defer = InteractionResponse {
        kind: InteractionResponseType::DeferredChannelMessageWithSource,
        data: None,
    };
    let late = http
        .interaction(Id::new(APP))
        .create_response(Id::new(sent.id), &sent.token, &defer)
        .await
        .unwrap_err();
    assert_eq!(
        api_error(&late),
        (
            404,
            json!({ "message": "Unknown interaction", "code": 10062 })
        )
    );
    let record = standin.interaction(sent.id).unwrap();
    assert!(!record.acknowledged());
    assert_eq!(record.rejected[0].code, 10062);

    let unknown = http
        .interaction(Id::new(APP))
        .create_response(Id::new(42), "no-such-token", &defer)
        .await
        .unwrap_err();
    assert_eq!(api_error(&unknown).1["code"], 10062);

    // A token answered in time works on the webhook routes until it expires.
    let answered = standin.slash(TOKEN, CHANNEL, USER, "imagine", json!({ "prompt": "y" }));
    let client = http.interaction(Id::new(APP));
    client
        .create_response(Id::new(answered.id), &answered.token, &defer)
        .await
        .unwrap();
    client
        .update_response(&answered.token)
        .content(Some("in time"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let expired = client
        .update_response(&answered.token)
        .content(Some("too late"))
        .await
        .unwrap_err();
    assert_eq!(
        api_error(&expired),
        (
            401,
            json!({ "message": "Invalid Webhook Token", "code": 50027 })
        )
    );
    let record = standin.interaction(answered.id).unwrap();
    assert_eq!(record.original_content(), Some("in time"));
}

/// A channel refused to the bots answers 403 with Discord's code; a DM
/// channel opens, takes messages, and answers 50007 once the user closed
/// their DMs.
#[tokio::test]
async fn refused_channels_and_closed_dms_answer_as_discord_does() {
    let standin = standin_with_bot(DiscordOptions::default()).await;
    let http = client(&standin, TOKEN);
    http.create_message(Id::new(CHANNEL))
        .content("allowed")
        .await
        .unwrap();
    for (channel, code, message) in [
        (CHANNEL, 50013, "Missing Permissions"),
        (CHANNEL + 1, 50001, "Missing Access"),
    ] {
        standin.refuse_channel(channel, code);
        let refused = http
            .create_message(Id::new(channel))
            .content("refused")
            .await
            .unwrap_err();
        assert_eq!(
            api_error(&refused),
            (403, json!({ "message": message, "code": code }))
        );
    }
    let posted = standin.channel_messages(CHANNEL);
    assert_eq!(posted.len(), 1);
    let edit = http
        .update_message(Id::new(CHANNEL), Id::new(posted[0].id))
        .content(Some("edited"))
        .await
        .unwrap_err();
    assert_eq!(api_error(&edit).0, 403);

    let dm = http
        .create_private_channel(Id::new(USER))
        .await
        .unwrap()
        .model()
        .await
        .unwrap();
    assert_eq!(standin.dm_channel(USER), Some(dm.id.get()));
    // Opening it again finds the same channel.
    let again = http
        .create_private_channel(Id::new(USER))
        .await
        .unwrap()
        .model()
        .await
        .unwrap();
    assert_eq!(again.id, dm.id);
    http.create_message(dm.id).content("hello").await.unwrap();
    assert_eq!(standin.channel_messages(dm.id.get())[0].content, "hello");
    standin.close_dms(USER);
    let closed = http
        .create_message(dm.id)
        .content("hello again")
        .await
        .unwrap_err();
    assert_eq!(
        api_error(&closed),
        (
            403,
            json!({ "message": "Cannot send messages to this user", "code": 50007 })
        )
    );
    assert_eq!(standin.channel_messages(dm.id.get()).len(), 1);
}
