//! The Discord stand-in answers real clients as Discord does: twilight-http
//! and twilight-gateway, pointed at it, register commands, answer
//! interactions, retry rate limits and resume sessions; interaction objects
//! deserialize with twilight's model; HTTP interactions are signed with a
//! key that verifies against the public key the stand-in publishes.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use twilight_gateway::{
    ConfigBuilder, Event, EventTypeFlags, Intents, Shard, ShardId, StreamExt as _,
};
use twilight_http::error::ErrorType;
use twilight_http::Client;
use twilight_model::application::command::Command;
use twilight_model::application::interaction::{Interaction, InteractionData};
use twilight_model::http::attachment::Attachment;
use twilight_model::http::interaction::{
    InteractionResponse, InteractionResponseData, InteractionResponseType,
};
use twilight_model::id::Id;

use tessera_testkit::standins::discord::{
    DiscordOptions, DiscordStandIn, GatewayDrop, Invocation, Signing, FLAG_LOADING,
};

const TOKEN: &str = "MTEx.standin.bot-token";
const APP: u64 = 1_200_000_000_000_000_001;
const CHANNEL: u64 = 1_300_000_000_000_000_001;
const USER: u64 = 1_400_000_000_000_000_001;
const WAIT: Duration = Duration::from_secs(10);

fn client(standin: &DiscordStandIn, token: &str) -> Client {
    Client::builder()
        .token(token.to_owned())
        .proxy(standin.rest_proxy(), true)
        .timeout(Duration::from_secs(10))
        .build()
}

fn commands() -> Vec<Command> {
    serde_json::from_value(json!([
        {
            "type": 1,
            "version": "1",
            "name": "imagine",
            "description": "Draw a picture",
            "options": [
                { "type": 3, "name": "prompt", "description": "What to draw", "required": true },
                { "type": 4, "name": "steps", "description": "Sampling steps" },
            ],
        },
        {
            "type": 1,
            "version": "1",
            "name": "transcribe",
            "description": "Turn speech into text",
            "options": [
                { "type": 11, "name": "audio", "description": "The recording", "required": true },
            ],
        },
    ]))
    .unwrap()
}

async fn standin_with_bot(options: DiscordOptions) -> DiscordStandIn {
    let standin = DiscordStandIn::start_with(options).await;
    standin.add_bot(TOKEN, APP, "tessera");
    standin
}

async fn register(standin: &DiscordStandIn) -> Client {
    let http = client(standin, TOKEN);
    http.interaction(Id::new(APP))
        .set_global_commands(&commands())
        .await
        .unwrap();
    http
}

/// A shard connected through the stand-in, past READY.
async fn shard(standin: &DiscordStandIn, token: &str) -> Shard {
    let config = ConfigBuilder::new(token.to_owned(), Intents::GUILDS)
        .proxy_url(standin.gateway_url())
        .build();
    let mut shard = Shard::with_config(ShardId::ONE, config);
    let ready = next(&mut shard, |e| matches!(e, Event::Ready(_))).await;
    let Event::Ready(ready) = ready else {
        unreachable!()
    };
    assert_eq!(ready.version, 10);
    assert_eq!(ready.application.id.get(), APP);
    assert_eq!(ready.resume_gateway_url, standin.resume_gateway_url());
    shard
}

/// The next event `wanted` accepts, within [`WAIT`].
async fn next(shard: &mut Shard, wanted: impl Fn(&Event) -> bool) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            match shard.next_event(EventTypeFlags::all()).await {
                Some(Ok(event)) if wanted(&event) => return event,
                Some(_) => {}
                None => panic!("the shard ended"),
            }
        }
    })
    .await
    .expect("the event within the wait")
}

/// The status and JSON body of a twilight error response.
fn api_error(error: &twilight_http::Error) -> (u16, Value) {
    match error.kind() {
        ErrorType::Response { body, status, .. } => {
            (status.get(), serde_json::from_slice(body).unwrap())
        }
        other => panic!("not an API error: {other:?}"),
    }
}

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
async fn a_gateway_slash_command_is_deferred_edited_and_followed_up() {
    let standin = standin_with_bot(DiscordOptions::default()).await;
    let http = register(&standin).await;
    let mut shard = shard(&standin, TOKEN).await;

    let sent = standin.slash(
        TOKEN,
        CHANNEL,
        USER,
        "imagine",
        json!({ "prompt": "a lighthouse", "steps": 20 }),
    );
    let event = next(&mut shard, |e| matches!(e, Event::InteractionCreate(_))).await;
    let Event::InteractionCreate(created) = event else {
        unreachable!()
    };
    let interaction = &created.0;
    assert_eq!(interaction.id.get(), sent.id);
    assert_eq!(interaction.token, sent.token);
    assert_eq!(
        interaction.guild_id.map(Id::get),
        Some(tessera_testkit::standins::discord::DEFAULT_GUILD_ID)
    );
    assert_eq!(interaction.author_id().map(Id::get), Some(USER));
    let Some(InteractionData::ApplicationCommand(data)) = &interaction.data else {
        panic!("not a command: {:?}", interaction.data);
    };
    assert_eq!(data.name, "imagine");
    assert_eq!(data.options.len(), 2);
    assert_eq!(
        data.id.to_string(),
        standin.commands(APP)[0]["id"].as_str().unwrap()
    );

    let client = http.interaction(Id::new(APP));
    let defer = InteractionResponse {
        kind: InteractionResponseType::DeferredChannelMessageWithSource,
        data: None,
    };
    client
        .create_response(interaction.id, &interaction.token, &defer)
        .await
        .unwrap();
    let record = standin.interaction(sent.id).unwrap();
    assert_eq!(record.callback_type(), Some(5));
    let original = record.original.as_ref().unwrap();
    assert!(original.flags & FLAG_LOADING != 0);

    let fetched = client
        .response(&interaction.token)
        .await
        .unwrap()
        .model()
        .await
        .unwrap();
    assert_eq!(fetched.content, "");

    client
        .update_response(&interaction.token)
        .content(Some("Rendering… 50%"))
        .await
        .unwrap();
    let edited = client
        .update_response(&interaction.token)
        .content(Some("Done: a lighthouse"))
        .await
        .unwrap()
        .model()
        .await
        .unwrap();
    assert_eq!(edited.content, "Done: a lighthouse");

    let png = b"\x89PNG\r\n\x1a\n not really a picture".to_vec();
    let followup = client
        .create_followup(&interaction.token)
        .content("Here it is")
        .attachments(&[Attachment::from_bytes(
            "lighthouse.png".into(),
            png.clone(),
            0,
        )])
        .await
        .unwrap()
        .model()
        .await
        .unwrap();
    assert_eq!(followup.attachments.len(), 1);
    assert_eq!(followup.attachments[0].filename, "lighthouse.png");
    let served = reqwest::get(&followup.attachments[0].url)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(served.as_ref(), png.as_slice());

    let record = standin.wait_followups(sent.id, 1, WAIT).await.unwrap();
    let original = record.original.as_ref().unwrap();
    assert_eq!(original.content, "Done: a lighthouse");
    assert_eq!(original.edits, 2);
    assert_eq!(
        original.history,
        ["", "Rendering… 50%", "Done: a lighthouse"]
    );
    assert!(!original.loading());
    let file = &record.followups[0].attachments[0];
    assert_eq!(file.bytes.as_ref(), png.as_slice());
    assert_eq!(file.filename, "lighthouse.png");
    assert_eq!(file.content_type.as_deref(), Some("image/png"));
    assert_eq!(file.part_content_type, None, "twilight sends no part type");

    // A second acknowledgement is refused.
    let again = client
        .create_response(interaction.id, &interaction.token, &defer)
        .await
        .unwrap_err();
    let (status, body) = api_error(&again);
    assert_eq!(status, 400);
    assert_eq!(body["code"], 40060);
    assert_eq!(
        standin.interaction(sent.id).unwrap().rejected[0].code,
        40060
    );
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

#[tokio::test]
async fn dropping_the_standin_closes_the_gateway() {
    let standin = standin_with_bot(DiscordOptions::default()).await;
    let mut shard = shard(&standin, TOKEN).await;
    drop(standin);
    let close = next(&mut shard, |e| matches!(e, Event::GatewayClose(_))).await;
    let Event::GatewayClose(Some(frame)) = close else {
        panic!("{close:?}")
    };
    assert_eq!(frame.code, 1001);
}

#[tokio::test]
async fn interactions_deserialize_with_twilights_model() {
    let standin = standin_with_bot(DiscordOptions::default()).await;
    register(&standin).await;
    let mut shard = shard(&standin, TOKEN).await;

    let in_guild = standin.slash(TOKEN, CHANNEL, USER, "imagine", json!({ "prompt": "x" }));
    let dm = standin.invoke(
        TOKEN,
        Invocation::new(CHANNEL + 1, USER, "imagine")
            .options(json!([{ "name": "prompt", "type": 3, "value": "y" }]))
            .dm(),
    );
    let audio = b"RIFF\x24\x00\x00\x00WAVEfmt fake".to_vec();
    let with_file = standin.slash_with_attachment(
        TOKEN,
        CHANNEL,
        USER,
        "transcribe",
        "audio",
        audio.clone(),
        "memo.wav",
        "audio/wav",
    );

    let guild: Interaction = serde_json::from_value(in_guild.payload.clone()).unwrap();
    assert!(guild.member.is_some() && guild.user.is_none());
    assert_eq!(guild.channel.as_ref().unwrap().id.get(), CHANNEL);
    assert_eq!(guild.attachment_size_limit, 10 * 1024 * 1024);
    let direct: Interaction = serde_json::from_value(dm.payload.clone()).unwrap();
    assert!(direct.guild_id.is_none() && direct.member.is_none());
    assert_eq!(direct.author_id().map(Id::get), Some(USER));

    // The file option arrives through the gateway and downloads from the
    // URL in `resolved.attachments`.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        if let Event::InteractionCreate(i) =
            next(&mut shard, |e| matches!(e, Event::InteractionCreate(_))).await
        {
            seen.push(i.0.clone());
        }
    }
    assert_eq!(
        seen.iter().map(|i| i.id.get()).collect::<Vec<_>>(),
        [in_guild.id, dm.id, with_file.id]
    );
    let Some(InteractionData::ApplicationCommand(data)) = &seen[2].data else {
        panic!("not a command");
    };
    let resolved = data.resolved.as_ref().unwrap();
    let (attachment_id, attachment) = resolved.attachments.iter().next().unwrap();
    assert_eq!(attachment.filename, "memo.wav");
    assert_eq!(attachment.content_type.as_deref(), Some("audio/wav"));
    assert_eq!(attachment.size, audio.len() as u64);
    assert_eq!(data.options[0].name, "audio");
    let bytes = reqwest::get(&attachment.url)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.as_ref(), audio.as_slice());
    assert_eq!(standin.downloads(attachment_id.get()), 1);
}

#[tokio::test]
async fn the_gateway_resumes_and_replays_what_was_missed() {
    let standin = standin_with_bot(DiscordOptions {
        heartbeat_interval: Duration::from_millis(150),
        ..DiscordOptions::default()
    })
    .await;
    register(&standin).await;
    // A bot polls its shard all the time; heartbeats go out only then.
    let mut events = drive(shard(&standin, TOKEN).await);
    assert!(standin.wait_heartbeats(TOKEN, 2, WAIT).await);
    assert_eq!(standin.identifies(TOKEN), 1);
    assert_eq!(
        standin.gateway_connections()[0].intents,
        Some(Intents::GUILDS.bits())
    );

    assert!(standin.disconnect(TOKEN));
    assert!(!standin.connected(TOKEN));
    // Dispatched while the bot is away: replayed on resume, before RESUMED.
    let missed = standin.slash(TOKEN, CHANNEL, USER, "imagine", json!({ "prompt": "x" }));
    let mut order = Vec::new();
    while !order.contains(&"resumed") {
        match recv(&mut events).await {
            Event::GatewayClose(frame) => {
                assert_eq!(frame.unwrap().code, 4000);
                order.push("close");
            }
            Event::InteractionCreate(i) => {
                assert_eq!(i.0.id.get(), missed.id);
                order.push("interaction");
            }
            Event::Resumed => order.push("resumed"),
            Event::Ready(_) => panic!("identified again instead of resuming"),
            _ => {}
        }
    }
    assert_eq!(order, ["close", "interaction", "resumed"]);
    assert_eq!(standin.resumes(TOKEN), 1);
    assert_eq!(standin.identifies(TOKEN), 1);
    let connections = standin.gateway_connections();
    assert_eq!(connections.len(), 2);
    assert_eq!(connections[0].path, "/gateway/");
    assert_eq!(connections[0].query, "v=10&encoding=json");
    assert_eq!(connections[0].closed_with, Some(4000));
    assert_eq!(connections[1].path, "/gateway-resume/");

    // Op 7 RECONNECT: the client closes and resumes by itself.
    assert!(standin.drop_connection(TOKEN, GatewayDrop::Reconnect));
    assert!(standin.wait_resumes(TOKEN, 2, WAIT).await);
    let live = standin.slash(TOKEN, CHANNEL, USER, "imagine", json!({ "prompt": "z" }));
    loop {
        if let Event::InteractionCreate(i) = recv(&mut events).await {
            assert_eq!(i.0.id.get(), live.id);
            break;
        }
    }
    assert!(standin.heartbeats(TOKEN) >= 2);
}

/// Polls a shard in a task, passing its events on.
fn drive(mut shard: Shard) -> mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(item) = shard.next_event(EventTypeFlags::all()).await {
            if let Ok(event) = item {
                if tx.send(event).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

async fn recv(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event within the wait")
        .expect("the shard ended")
}

#[tokio::test]
async fn the_gateway_closes_on_bad_tokens_and_unknown_opcodes() {
    let standin = standin_with_bot(DiscordOptions::default()).await;
    let config = ConfigBuilder::new("wrong".to_owned(), Intents::empty())
        .proxy_url(standin.gateway_url())
        .build();
    let mut bad = Shard::with_config(ShardId::ONE, config);
    let close = next(&mut bad, |e| matches!(e, Event::GatewayClose(_))).await;
    let Event::GatewayClose(Some(frame)) = close else {
        panic!("{close:?}")
    };
    assert_eq!(frame.code, 4004);
    assert!(
        tokio::time::timeout(WAIT, bad.next_event(EventTypeFlags::all()))
            .await
            .unwrap()
            .is_none(),
        "4004 is fatal"
    );

    let privileged = ConfigBuilder::new(TOKEN.to_owned(), Intents::MESSAGE_CONTENT)
        .proxy_url(standin.gateway_url())
        .build();
    let mut denied = Shard::with_config(ShardId::ONE, privileged);
    let close = next(&mut denied, |e| matches!(e, Event::GatewayClose(_))).await;
    let Event::GatewayClose(Some(frame)) = close else {
        panic!("{close:?}")
    };
    assert_eq!(frame.code, 4014);

    let mut shard = shard(&standin, TOKEN).await;
    shard
        .sender()
        .send(json!({ "op": 99, "d": null }).to_string())
        .unwrap();
    let close = next(&mut shard, |e| matches!(e, Event::GatewayClose(_))).await;
    let Event::GatewayClose(Some(frame)) = close else {
        panic!("{close:?}")
    };
    assert_eq!(frame.code, 4001);
    // 4001 may be resumed.
    next(&mut shard, |e| matches!(e, Event::Resumed)).await;
    assert_eq!(standin.resumes(TOKEN), 1);

    // Compression is refused before the upgrade.
    let refused = reqwest::get(format!(
        "{}/gateway/?v=10&encoding=json&compress=zlib-stream",
        standin.base_url()
    ))
    .await
    .unwrap();
    assert_eq!(refused.status(), 400);
}

/// A bot's HTTP interactions endpoint: verifies signatures with the public
/// key, answers PINGs with PONG and commands with a message.
fn endpoint(public_key_hex: &str, verify: bool) -> Router {
    let key_bytes: [u8; 32] = hex::decode(public_key_hex).unwrap().try_into().unwrap();
    let key = VerifyingKey::from_bytes(&key_bytes).unwrap();
    Router::new().route(
        "/interactions",
        post(move |headers: HeaderMap, body: Bytes| async move {
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            let valid = (|| {
                let signature: [u8; 64] = hex::decode(header("x-signature-ed25519")?)
                    .ok()?
                    .try_into()
                    .ok()?;
                let mut message = header("x-signature-timestamp")?.as_bytes().to_vec();
                message.extend_from_slice(&body);
                key.verify(&message, &Signature::from_bytes(&signature)).ok()
            })()
            .is_some();
            if verify && !valid {
                return (StatusCode::UNAUTHORIZED, "invalid request signature".to_owned());
            }
            let interaction: Value = serde_json::from_slice(&body).unwrap();
            let answer = match interaction["type"].as_u64() {
                Some(1) => json!({ "type": 1 }),
                _ => json!({
                    "type": 4,
                    "data": { "content": format!("hello {}", interaction["member"]["user"]["username"].as_str().unwrap_or("?")) },
                }),
            };
            (StatusCode::OK, answer.to_string())
        }),
    )
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/interactions", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

#[tokio::test]
async fn http_interactions_are_signed_with_the_bots_key() {
    let standin = standin_with_bot(DiscordOptions::default()).await;
    let http = register(&standin).await;
    let key = standin.public_key_hex(TOKEN);
    assert_eq!(key.len(), 64);
    let url = serve(endpoint(&key, true)).await;

    standin.verify_endpoint(&url, TOKEN).await.unwrap();
    let pong = standin.ping(&url, TOKEN).await;
    assert_eq!(pong.status, Some(200));
    assert_eq!(pong.json(), Some(json!({ "type": 1 })));

    let answer = standin
        .post_interaction(
            &url,
            TOKEN,
            Invocation::new(CHANNEL, USER, "imagine")
                .options(json!({ "prompt": "a fox" }))
                .username("ada"),
        )
        .await;
    assert_eq!(answer.status, Some(200));
    let sent = answer.interaction.unwrap();
    let record = standin.interaction(sent.id).unwrap();
    let callback = record.callback.as_ref().unwrap();
    assert_eq!((callback.kind, callback.via_http_answer), (4, true));
    assert_eq!(record.original_content(), Some("hello ada"));
    // The interaction token then works on the webhook routes as usual.
    http.interaction(Id::new(APP))
        .create_followup(&sent.token)
        .content("and more")
        .await
        .unwrap();
    assert_eq!(standin.interaction(sent.id).unwrap().followups.len(), 1);

    for signing in [Signing::WrongKey, Signing::OtherBody, Signing::Missing] {
        let forged = standin
            .post_signed(&url, TOKEN, &json!({ "type": 1, "id": "1" }), signing)
            .await;
        assert_eq!(forged.status, Some(401), "{signing:?}");
    }

    // An endpoint that skips verification fails the portal's check.
    let careless = serve(endpoint(&key, false)).await;
    let verdict = standin.verify_endpoint(&careless, TOKEN).await;
    assert!(verdict.unwrap_err().contains("not 401"));
}
