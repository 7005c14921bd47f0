//! The Discord stand-in's gateway and interactions answer real clients as
//! Discord does: twilight-gateway, pointed at it, receives slash commands
//! (deferred, edited and followed up over REST), resumes sessions with the
//! missed dispatches replayed, and is closed with Discord's codes;
//! interaction objects deserialize with twilight's model; HTTP interactions
//! are signed with a key that verifies against the public key the stand-in
//! publishes. The REST API is checked in `discord_standin.rs`.

mod common;

use std::time::Duration;

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
use twilight_model::application::interaction::{Interaction, InteractionData};
use twilight_model::http::attachment::Attachment;
use twilight_model::http::interaction::{InteractionResponse, InteractionResponseType};
use twilight_model::id::Id;

use tessera_testkit::standins::discord::{
    DiscordOptions, GatewayDrop, Invocation, Signing, FLAG_LOADING,
};

use common::discord::{
    api_error, next, register, shard, standin_with_bot, APP, CHANNEL, TOKEN, USER, WAIT,
};

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
