//! The Telegram stand-in answers teloxide (the client Tessera's bots use) as
//! the Bot API does, and its envelopes and errors have the documented shapes.

use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use teloxide_core::errors::{ApiError, RequestError};
use teloxide_core::net::Download;
use teloxide_core::payloads::{
    GetUpdatesSetters, SendAudioSetters, SendDocumentSetters, SendMessageSetters, SendPhotoSetters,
    SetMyCommandsSetters, SetWebhookSetters,
};
use teloxide_core::requests::Requester;
use teloxide_core::types::{
    AllowedUpdate, BotCommand, BotCommandScope, ChatId, InputFile, MessageEntityKind, MessageId,
    ReplyParameters, UpdateKind,
};
use teloxide_core::Bot;

use tessera_testkit::standins::telegram::{Author, MessageKind, TelegramStandIn};

const TOKEN: &str = "123456:AAH-standin-token";
const USER: i64 = 4242;

async fn standin() -> TelegramStandIn {
    let tg = TelegramStandIn::start().await;
    tg.add_bot(TOKEN, "tessera_test_bot");
    tg
}

fn bot(tg: &TelegramStandIn, token: &str) -> Bot {
    Bot::new(token).set_api_url(tg.api_url().parse().unwrap())
}

async fn raw(tg: &TelegramStandIn, method: &str, body: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(tg.method_url(TOKEN, method))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        let pixels: Vec<u8> = (0..width * height * 3).map(|i| (i % 251) as u8).collect();
        writer.write_image_data(&pixels).unwrap();
    }
    out
}

#[tokio::test]
async fn get_me_answers_the_registered_bot() {
    let tg = standin().await;
    assert!(tg.api_url().starts_with("http://127.0.0.1:"));
    assert!(tg.api_url().ends_with('/'));
    let me = bot(&tg, TOKEN).get_me().await.unwrap();
    assert_eq!(me.user.id.0, 123456);
    assert!(me.user.is_bot);
    assert_eq!(me.username(), "tessera_test_bot");
    assert!(me.can_join_groups);
    assert_eq!(tg.calls(TOKEN, "getMe"), 1);

    // Method names are case-insensitive, and GET with no body works.
    let body: Value = reqwest::get(tg.method_url(TOKEN, "GETME"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["ok"], json!(true));
    assert_eq!(body["result"]["username"], json!("tessera_test_bot"));
    assert_eq!(tg.calls(TOKEN, "getme"), 2);
    assert_eq!(tg.requests(TOKEN)[1].method, "getMe");
    assert_eq!(tg.requests(TOKEN)[1].status, Some(200));
}

#[tokio::test]
async fn unknown_tokens_methods_and_paths_are_refused() {
    let tg = standin().await;
    let err = bot(&tg, "999:nope").get_me().await.unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::InvalidToken)),
        "{err:?}"
    );

    let client = reqwest::Client::new();
    let answer = client
        .post(tg.method_url("999:nope", "getMe"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.json::<Value>().await.unwrap(),
        json!({ "ok": false, "error_code": 401, "description": "Unauthorized" })
    );

    let (status, body) = raw(&tg, "sendTelepathy", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({ "ok": false, "error_code": 404, "description": "Not Found" })
    );
    assert_eq!(tg.calls(TOKEN, "sendTelepathy"), 1);

    let answer = client
        .get(format!("{}nobot/getMe", tg.api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn long_poll_delivers_a_user_message_and_honours_offset() {
    let tg = standin().await;
    let b = bot(&tg, TOKEN);
    tg.name_user(USER, "Ada", Some("ada"));
    let sent_id = tg.user_text(TOKEN, USER, USER, "/imagine a red fox");

    let updates = b.get_updates().timeout(1).await.unwrap();
    assert_eq!(updates.len(), 1);
    let update = &updates[0];
    let UpdateKind::Message(m) = &update.kind else {
        panic!("not a message: {:?}", update.kind);
    };
    assert_eq!(i64::from(m.id.0), sent_id);
    assert_eq!(m.text(), Some("/imagine a red fox"));
    assert_eq!(m.chat.id, ChatId(USER));
    assert!(m.chat.is_private());
    let from = m.from.as_ref().unwrap();
    assert_eq!(from.id.0, USER as u64);
    assert!(!from.is_bot);
    assert_eq!(from.first_name, "Ada");
    assert_eq!(from.username.as_deref(), Some("ada"));
    let entities = m.entities().unwrap();
    assert_eq!(entities.len(), 1);
    assert_eq!(entities[0].kind, MessageEntityKind::BotCommand);
    assert_eq!((entities[0].offset, entities[0].length), (0, 8));

    // Not confirmed yet: asked again, it comes again.
    let again = b.get_updates().await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, update.id);

    // A second message; an offset past the first confirms only the first.
    tg.user_text(TOKEN, USER, USER, "hello");
    let next = b
        .get_updates()
        .offset(update.id.0 as i32 + 1)
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].id.0, update.id.0 + 1);
    let UpdateKind::Message(m) = &next[0].kind else {
        panic!("not a message");
    };
    assert_eq!(m.text(), Some("hello"));
    assert!(m.entities().is_none_or(<[_]>::is_empty));
    assert_eq!(tg.pending_updates(TOKEN), 1);
    let done = b
        .get_updates()
        .offset(next[0].id.0 as i32 + 1)
        .await
        .unwrap();
    assert!(done.is_empty());
    assert_eq!(tg.pending_updates(TOKEN), 0);

    // limit, and entity offsets in UTF-16 units (é is one, 😀 two).
    tg.user_text(TOKEN, USER, USER, "héllo 😀 /help@tessera_test_bot now");
    tg.user_text(TOKEN, USER, USER, "third");
    let (_, body) = raw(&tg, "getUpdates", json!({ "limit": 1 })).await;
    let result = body["result"].as_array().unwrap();
    assert_eq!(result.len(), 1);
    assert_eq!(
        result[0]["message"]["entities"],
        json!([{ "type": "bot_command", "offset": 9, "length": 22 }])
    );
}

#[tokio::test]
async fn a_held_long_poll_wakes_when_a_message_arrives() {
    let tg = Arc::new(standin().await);
    let b = bot(&tg, TOKEN);
    let started = Instant::now();
    let poll = tokio::spawn(b.get_updates().timeout(10).into_future());
    assert!(
        tg.wait_calls(TOKEN, "getUpdates", 1, Duration::from_secs(5))
            .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poll.is_finished(),
        "the poll must be held while nothing is queued"
    );
    tg.user_text(TOKEN, USER, USER, "wake up");
    let updates = tokio::time::timeout(Duration::from_secs(3), poll)
        .await
        .expect("the held poll answers once a message arrives")
        .unwrap()
        .unwrap();
    assert_eq!(updates.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(5));

    // With nothing queued, a short poll runs out its timeout and answers [].
    let started = Instant::now();
    let empty = b
        .get_updates()
        .offset(updates[0].id.0 as i32 + 1)
        .timeout(1)
        .await
        .unwrap();
    assert!(empty.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn a_second_get_updates_ends_the_held_one_with_a_conflict() {
    let tg = standin().await;
    let b = bot(&tg, TOKEN);
    let first = tokio::spawn(b.get_updates().timeout(10).into_future());
    assert!(
        tg.wait_calls(TOKEN, "getUpdates", 1, Duration::from_secs(5))
            .await
    );
    let second = tokio::spawn(b.get_updates().timeout(10).into_future());
    let err = tokio::time::timeout(Duration::from_secs(3), first)
        .await
        .expect("the first poll ends")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            RequestError::Api(ApiError::TerminatedByOtherGetUpdates)
        ),
        "{err:?}"
    );
    tg.user_text(TOKEN, USER, USER, "for the second");
    let updates = tokio::time::timeout(Duration::from_secs(3), second)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(updates.len(), 1);
    assert_eq!(tg.requests(TOKEN)[0].status, Some(409));
}

#[tokio::test]
async fn send_edit_and_not_modified() {
    let tg = standin().await;
    let b = bot(&tg, TOKEN);

    // No user has written from the chat yet.
    let err = b.send_message(ChatId(USER), "hi").await.unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::ChatNotFound)),
        "{err:?}"
    );

    let asked = tg.user_text(TOKEN, USER, USER, "/start");
    let sent = b
        .send_message(ChatId(USER), "Working on it…")
        .reply_parameters(ReplyParameters::new(MessageId(asked as i32)))
        .await
        .unwrap();
    assert_eq!(sent.text(), Some("Working on it…"));
    assert_eq!(i64::from(sent.id.0), asked + 1);
    assert!(sent.from.as_ref().unwrap().is_bot);
    assert_eq!(sent.reply_to_message().map(|r| r.id.0), Some(asked as i32));

    let edited = b
        .edit_message_text(ChatId(USER), sent.id, "Done: 1 image")
        .await
        .unwrap();
    assert_eq!(edited.text(), Some("Done: 1 image"));
    assert!(edited.edit_date().is_some());
    let err = b
        .edit_message_text(ChatId(USER), sent.id, "Done: 1 image")
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::MessageNotModified)),
        "{err:?}"
    );
    let err = b
        .edit_message_text(ChatId(USER), MessageId(999), "x")
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::MessageToEditNotFound)),
        "{err:?}"
    );
    let err = b
        .edit_message_text(ChatId(USER), MessageId(asked as i32), "x")
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::Api(_)), "{err:?}");

    let chat = tg.chat(TOKEN, USER);
    assert_eq!(chat.len(), 2);
    assert_eq!(chat[0].author, Author::User(USER));
    assert_eq!(chat[1].author, Author::Bot);
    assert_eq!(chat[1].text.as_deref(), Some("Done: 1 image"));
    assert_eq!(chat[1].history, ["Working on it…"]);
    assert_eq!(chat[1].edits(), 1);
    assert_eq!(chat[1].reply_to, Some(asked));
    let sent_log = tg.sent(TOKEN);
    assert_eq!(sent_log.len(), 1);
    assert_eq!(sent_log[0].text.as_deref(), Some("Working on it…"));
    assert_eq!(sent_log[0].reply_to, Some(asked));

    // Lengths: 4096 characters pass (multi-byte ones count once), 4097 do not.
    let long: String = "é".repeat(4096);
    b.send_message(ChatId(USER), long.clone()).await.unwrap();
    let err = b
        .send_message(ChatId(USER), format!("{long}x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::MessageIsTooLong)),
        "{err:?}"
    );
    let err = b.send_message(ChatId(USER), "").await.unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::MessageTextIsEmpty)),
        "{err:?}"
    );

    // A reply to a message that does not exist.
    let (status, body) = raw(
        &tg,
        "sendMessage",
        json!({ "chat_id": USER, "text": "x", "reply_to_message_id": 777 }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["description"],
        json!("Bad Request: message to be replied not found")
    );

    tg.block(TOKEN, USER);
    let err = b
        .send_message(ChatId(USER), "still there?")
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::BotBlocked)),
        "{err:?}"
    );
    let (status, body) = raw(&tg, "sendMessage", json!({ "chat_id": USER, "text": "x" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        json!({ "ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user" })
    );
    assert_eq!(tg.sent(TOKEN).len(), 2);
}

#[tokio::test]
async fn parameters_come_from_query_form_json_or_multipart() {
    let tg = standin().await;
    tg.open_chat(TOKEN, USER);
    let client = reqwest::Client::new();
    let url = tg.method_url(TOKEN, "sendMessage");

    let by_query: Value = client
        .get(format!("{url}?chat_id={USER}&text=by%20query"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_query["result"]["text"], json!("by query"));

    let by_form: Value = client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "chat_id={USER}&text=by+form&reply_parameters=%7B%22message_id%22%3A1%7D"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_form["result"]["text"], json!("by form"));
    assert_eq!(
        by_form["result"]["reply_to_message"]["message_id"],
        json!(1)
    );

    let form = reqwest::multipart::Form::new()
        .text("chat_id", USER.to_string())
        .text("text", "by multipart")
        .text("parse_mode", "HTML");
    let by_multipart: Value = client
        .post(&url)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_multipart["result"]["text"], json!("by multipart"));

    let (_, by_json) = raw(
        &tg,
        "sendmessage",
        json!({ "chat_id": USER.to_string(), "text": "by json", "reply_to_message_id": 2 }),
    )
    .await;
    assert_eq!(by_json["ok"], json!(true));
    assert_eq!(
        by_json["result"]["reply_to_message"]["text"],
        json!("by form")
    );
    let result = &by_json["result"];
    assert_eq!(
        result["chat"],
        json!({ "id": USER, "type": "private", "first_name": format!("User {USER}"), "username": format!("user{USER}") })
    );
    assert_eq!(result["from"]["id"], json!(123456));

    let texts: Vec<_> = tg
        .sent(TOKEN)
        .into_iter()
        .map(|m| m.text.unwrap())
        .collect();
    assert_eq!(texts, ["by query", "by form", "by multipart", "by json"]);
    assert_eq!(tg.sent(TOKEN)[2].parse_mode.as_deref(), Some("HTML"));
    assert_eq!(tg.calls(TOKEN, "sendMessage"), 4);
}

#[tokio::test]
async fn a_multipart_photo_is_recorded_with_its_bytes() {
    let tg = standin().await;
    let b = bot(&tg, TOKEN);
    let asked = tg.user_text(TOKEN, USER, USER, "/imagine a lighthouse");
    let image = png(400, 300);
    let sent = b
        .send_photo(
            ChatId(USER),
            InputFile::memory(image.clone()).file_name("tessera.png"),
        )
        .caption("a lighthouse")
        .reply_parameters(ReplyParameters::new(MessageId(asked as i32)))
        .await
        .unwrap();
    let sizes = sent.photo().expect("a photo message");
    let largest = sizes.last().unwrap();
    assert_eq!((largest.width, largest.height), (400, 300));
    assert_eq!(largest.file.size as usize, image.len());
    assert_eq!((sizes[0].width, sizes[0].height), (90, 67));
    assert_eq!(sent.caption(), Some("a lighthouse"));

    let record = &tg.sent(TOKEN)[0];
    assert_eq!(record.kind, MessageKind::Photo);
    assert_eq!(record.text.as_deref(), Some("a lighthouse"));
    assert_eq!(record.reply_to, Some(asked));
    let upload = record.upload.as_ref().expect("uploaded in the request");
    assert_eq!(upload.bytes.as_ref(), image.as_slice());
    assert_eq!(upload.file_name.as_deref(), Some("tessera.png"));
    assert_eq!(record.file_id.as_deref(), Some(largest.file.id.0.as_str()));

    // The bot can fetch what it sent.
    let file = b.get_file(largest.file.id.clone()).await.unwrap();
    let mut fetched = Vec::new();
    b.download_file(&file.path, &mut fetched).await.unwrap();
    assert_eq!(fetched, image);

    // Bytes that are not an image are refused; nothing is recorded.
    let err = b
        .send_photo(
            ChatId(USER),
            InputFile::memory(b"not an image".to_vec()).file_name("x.png"),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("IMAGE_PROCESS_FAILED"), "{err:?}");

    // Documents and audio; a known file_id is sent again without upload.
    let doc = b
        .send_document(
            ChatId(USER),
            InputFile::memory(b"\x89PNG-ish".to_vec()).file_name("frames.apng"),
        )
        .caption("animated")
        .await
        .unwrap();
    let document = doc.document().unwrap();
    assert_eq!(document.file_name.as_deref(), Some("frames.apng"));
    let again = b
        .send_document(ChatId(USER), InputFile::file_id(document.file.id.clone()))
        .await
        .unwrap();
    assert_eq!(again.document().unwrap().file.id, document.file.id);
    let song = b
        .send_audio(
            ChatId(USER),
            InputFile::memory(vec![0xFF, 0xFB, 0x90, 0x00]).file_name("song.mp3"),
        )
        .title("Tessera")
        .await
        .unwrap();
    let audio = song.audio().unwrap();
    assert_eq!(
        audio.mime_type.as_ref().map(|m| m.to_string()).as_deref(),
        Some("audio/mpeg")
    );
    assert_eq!(audio.title.as_deref(), Some("Tessera"));
    let err = b
        .send_document(ChatId(USER), InputFile::file_id("no-such-file".into()))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("wrong file identifier/HTTP URL specified"),
        "{err:?}"
    );

    let clip = b
        .send_video(
            ChatId(USER),
            InputFile::memory(b"\0\0\0\x18ftypmp42".to_vec()).file_name("tessera.mp4"),
        )
        .await
        .unwrap();
    let video = clip.video().expect("a video message");
    assert_eq!(
        video.mime_type.as_ref().map(|m| m.to_string()).as_deref(),
        Some("video/mp4")
    );
    assert_eq!(video.file.size, 12);
    let note = b
        .send_voice(ChatId(USER), InputFile::memory(b"OggS-voice".to_vec()))
        .await
        .unwrap();
    assert!(note.voice().is_some());

    let kinds: Vec<_> = tg.sent(TOKEN).iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds,
        [
            MessageKind::Photo,
            MessageKind::Document,
            MessageKind::Document,
            MessageKind::Audio,
            MessageKind::Video,
            MessageKind::Voice,
        ]
    );
    assert!(tg.sent(TOKEN)[2].upload.is_none());
    assert_eq!(
        tg.sent(TOKEN)[2].file_ref.as_deref(),
        Some(document.file.id.0.as_str())
    );
}

#[tokio::test]
async fn photos_over_telegrams_limits_are_refused_and_go_as_documents() {
    let tg = standin().await;
    let b = bot(&tg, TOKEN);
    tg.user_text(TOKEN, USER, USER, "/imagine");
    // Over 10 MB (a small image padded past its end), and 9000 + 1500 pixels.
    let mut heavy = png(4, 4);
    heavy.resize(10 * 1024 * 1024 + 1, 0);
    let mut wide = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut wide, 9000, 1500);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::One);
        let mut writer = encoder.write_header().unwrap();
        writer
            .write_image_data(&vec![0u8; 9000 / 8 * 1500])
            .unwrap();
    }
    for (image, error) in [
        (heavy, "Bad Request: PHOTO_SAVE_FILE_INVALID"),
        (wide, "Bad Request: PHOTO_INVALID_DIMENSIONS"),
    ] {
        let photo = || InputFile::memory(image.clone()).file_name("tessera.png");
        let err = b.send_photo(ChatId(USER), photo()).await.unwrap_err();
        assert!(
            matches!(&err, RequestError::Api(ApiError::Unknown(text)) if text == error),
            "{err:?}"
        );
        let doc = b.send_document(ChatId(USER), photo()).await.unwrap();
        assert_eq!(doc.document().unwrap().file.size as usize, image.len());
    }
    let kinds: Vec<_> = tg.sent(TOKEN).iter().map(|m| m.kind).collect();
    assert_eq!(kinds, [MessageKind::Document, MessageKind::Document]);
}

#[tokio::test]
async fn a_voice_message_is_fetched_through_get_file() {
    let tg = standin().await;
    let b = bot(&tg, TOKEN);
    let voice: Vec<u8> = b"OggS\0\x02voice-bytes"
        .iter()
        .copied()
        .cycle()
        .take(5000)
        .collect();
    tg.user_voice(TOKEN, USER, USER, voice.clone(), "audio/ogg", 3);

    let updates = b
        .get_updates()
        .allowed_updates(vec![AllowedUpdate::Message])
        .await
        .unwrap();
    let UpdateKind::Message(m) = &updates[0].kind else {
        panic!("not a message");
    };
    let v = m.voice().expect("a voice message");
    assert_eq!(v.file.size as usize, voice.len());
    assert_eq!(v.duration.seconds(), 3);
    assert_eq!(
        v.mime_type.as_ref().map(|m| m.to_string()).as_deref(),
        Some("audio/ogg")
    );

    let file = b.get_file(v.file.id.clone()).await.unwrap();
    assert_eq!(file.meta.size as usize, voice.len());
    assert!(file.path.starts_with("voice/"), "{}", file.path);
    let mut fetched = Vec::new();
    b.download_file(&file.path, &mut fetched).await.unwrap();
    assert_eq!(fetched, voice);
    assert_eq!(tg.downloads(TOKEN), vec![file.path.clone()]);

    // Audio sent as a document keeps its type; unknown ids are refused.
    tg.user_document(
        TOKEN,
        USER,
        USER,
        b"RIFF....WAVE".to_vec(),
        "audio/x-wav",
        "memo.wav",
    );
    let updates = b
        .get_updates()
        .offset(updates[0].id.0 as i32 + 1)
        .await
        .unwrap();
    let UpdateKind::Message(m) = &updates[0].kind else {
        panic!("not a message");
    };
    let d = m.document().unwrap();
    assert_eq!(d.file_name.as_deref(), Some("memo.wav"));
    assert_eq!(
        d.mime_type
            .as_ref()
            .map(|t| t.type_().to_string())
            .as_deref(),
        Some("audio")
    );
    // file_ids belong to one bot.
    tg.add_bot("777:other", "other_bot");
    let err = bot(&tg, "777:other")
        .get_file(v.file.id.clone())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid file_id"), "{err:?}");
    let err = b
        .get_file("AwACnonsense".to_owned().into())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid file_id"), "{err:?}");
    let missing = reqwest::get(format!("{}file/bot{TOKEN}/voice/nothing.oga", tg.api_url()))
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn flood_control_surfaces_as_retry_after() {
    let tg = standin().await;
    let b = bot(&tg, TOKEN);
    tg.open_chat(TOKEN, USER);
    tg.flood(TOKEN, "sendMessage", 2, 3);
    let err = b.send_message(ChatId(USER), "one").await.unwrap_err();
    match err {
        RequestError::RetryAfter(wait) => assert_eq!(wait.seconds(), 3),
        other => panic!("expected RetryAfter, got {other:?}"),
    }
    let (status, body) = raw(
        &tg,
        "sendMessage",
        json!({ "chat_id": USER, "text": "two" }),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        body,
        json!({
            "ok": false,
            "error_code": 429,
            "description": "Too Many Requests: retry after 3",
            "parameters": { "retry_after": 3 },
        })
    );
    // Spent: the next call goes through, and only it was sent.
    b.send_message(ChatId(USER), "three").await.unwrap();
    assert_eq!(tg.calls(TOKEN, "sendMessage"), 3);
    let sent = tg.sent(TOKEN);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].text.as_deref(), Some("three"));
    let statuses: Vec<_> = tg.requests(TOKEN).iter().map(|c| c.status).collect();
    assert_eq!(statuses, [Some(429), Some(429), Some(200)]);
}

#[derive(Default)]
struct Receiver {
    answers: Vec<StatusCode>,
    received: Vec<(Option<String>, Value)>,
}

#[tokio::test]
async fn a_webhook_receives_updates_with_the_secret_and_get_updates_conflicts() {
    let tg = standin().await;
    let b = bot(&tg, TOKEN);
    // The receiver fails once, then takes updates.
    let receiver = Arc::new(Mutex::new(Receiver {
        answers: vec![StatusCode::OK, StatusCode::INTERNAL_SERVER_ERROR],
        ..Receiver::default()
    }));
    let state = receiver.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: axum::Json<Value>| {
            let state = state.clone();
            async move {
                let mut r = state.lock().unwrap();
                let secret = headers
                    .get("x-telegram-bot-api-secret-token")
                    .map(|v| v.to_str().unwrap().to_owned());
                r.received.push((secret, body.0));
                r.answers.pop().unwrap_or(StatusCode::OK)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    b.set_webhook(hook.parse().unwrap())
        .secret_token("s3cret_token-1")
        .allowed_updates(vec![AllowedUpdate::Message])
        .await
        .unwrap();
    let webhook = tg.webhook(TOKEN).expect("a webhook is set");
    assert_eq!(webhook.url, hook);
    assert_eq!(webhook.secret_token.as_deref(), Some("s3cret_token-1"));
    assert_eq!(webhook.allowed_updates, Some(vec!["message".to_owned()]));

    let err = b.get_updates().await.unwrap_err();
    assert!(
        err.to_string()
            .contains("can't use getUpdates method while webhook is active"),
        "{err:?}"
    );
    let (status, body) = raw(&tg, "getUpdates", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body["description"],
        json!("Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first")
    );

    let message_id = tg.user_text(TOKEN, USER, USER, "via webhook");
    assert!(tg.wait_consumed(TOKEN, Duration::from_secs(5)).await);
    let received = receiver.lock().unwrap().received.clone();
    assert_eq!(received.len(), 2, "one failed attempt, then the retry");
    for (secret, update) in &received {
        assert_eq!(secret.as_deref(), Some("s3cret_token-1"));
        assert_eq!(update["message"]["text"], json!("via webhook"));
        assert_eq!(update["message"]["message_id"], json!(message_id));
    }
    assert_eq!(received[0].1, received[1].1);
    let deliveries = tg.deliveries(TOKEN);
    assert_eq!(deliveries[0].status, Some(500));
    assert_eq!(
        deliveries[0].error.as_deref(),
        Some("Wrong response from the webhook: 500 Internal Server Error")
    );
    assert_eq!(deliveries[1].status, Some(200));
    assert!(deliveries[1].error.is_none());

    let info = b.get_webhook_info().await.unwrap();
    assert_eq!(info.url.as_ref().map(|u| u.as_str()), Some(hook.as_str()));
    assert_eq!(info.pending_update_count, 0);
    assert!(info
        .last_error_message
        .as_deref()
        .is_some_and(|m| m.contains("500")));

    b.delete_webhook().await.unwrap();
    assert!(tg.webhook(TOKEN).is_none());
    tg.user_text(TOKEN, USER, USER, "by polling again");
    let updates = b.get_updates().await.unwrap();
    assert_eq!(updates.len(), 1);
    assert_eq!(receiver.lock().unwrap().received.len(), 2);
    server.abort();
}

#[tokio::test]
async fn commands_are_kept_per_scope_and_language() {
    let tg = standin().await;
    let b = bot(&tg, TOKEN);
    b.set_my_commands(vec![
        BotCommand::new("imagine", "Draw a picture"),
        BotCommand::new("help", "What I can do"),
    ])
    .await
    .unwrap();
    b.set_my_commands(vec![BotCommand::new("hilfe", "Was ich kann")])
        .scope(BotCommandScope::AllPrivateChats)
        .language_code("de")
        .await
        .unwrap();
    let names: Vec<_> = tg.commands(TOKEN).into_iter().map(|c| c.command).collect();
    assert_eq!(names, ["imagine", "help"]);
    let german = tg
        .commands_for(TOKEN, &json!({ "type": "all_private_chats" }), Some("de"))
        .unwrap();
    assert_eq!(german[0].description, "Was ich kann");
    let listed = b.get_my_commands().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].command, "imagine");

    let err = b
        .set_my_commands(vec![BotCommand::new("Imagine", "capital letters")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("BOT_COMMAND_INVALID"), "{err:?}");
    assert_eq!(tg.commands(TOKEN).len(), 2);

    b.delete_my_commands().await.unwrap();
    assert!(tg.commands(TOKEN).is_empty());
    assert!(tg
        .commands_for(TOKEN, &json!({ "type": "all_private_chats" }), Some("de"))
        .is_some());
}

#[tokio::test]
async fn waiting_helpers_see_what_the_bot_sends() {
    let tg = Arc::new(standin().await);
    tg.open_chat(TOKEN, -100);
    let b = bot(&tg, TOKEN);
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.send_chat_action(ChatId(-100), teloxide_core::types::ChatAction::Typing)
            .await
            .unwrap();
        b.send_message(ChatId(-100), "late hello").await.unwrap();
    });
    let found = tg
        .wait_sent(TOKEN, Duration::from_secs(5), |m| {
            m.text.as_deref() == Some("late hello")
        })
        .await
        .expect("the message arrives");
    assert_eq!(found.chat_id, -100);
    assert_eq!(tg.calls(TOKEN, "sendChatAction"), 1);
    assert!(tg
        .wait_sent(TOKEN, Duration::from_millis(100), |m| {
            m.text.as_deref() == Some("never")
        })
        .await
        .is_none());
    sender.await.unwrap();
    let (_, body) = raw(
        &tg,
        "sendChatAction",
        json!({ "chat_id": -100, "action": "dancing" }),
    )
    .await;
    assert_eq!(
        body["description"],
        json!("Bad Request: wrong parameter action in request")
    );
}
