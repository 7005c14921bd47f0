//! The speech adapters (`whisper_cpp`, `openai_transcription`,
//! `openai_speech`) against loopback stand-ins of whisper.cpp's server and an
//! OpenAI-compatible server: the multipart fields they send, what they make
//! of every answer, and the WAV check.

mod common;

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use tessera_api::internal::ArtifactKind;
use tessera_core::params::{JobParams, SpeechToTextParams, TextToSpeechParams};
use tessera_core::InputId;
use tessera_testkit::standins::openai::{wav_tone, Fault, OpenAiOptions, OpenAiStandIn};
use tessera_testkit::standins::whisper::{WhisperOptions, WhisperStandIn};
use tessera_worker::engine::speech::{OpenAiSpeech, OpenAiSpeechConfig};
use tessera_worker::engine::whisper::{
    OpenAiTranscription, OpenAiTranscriptionConfig, WhisperCpp, WhisperCppConfig,
};
use tessera_worker::engine::{Artifact, Engine, EngineError, Input, Task};

use common::{http, key_file, refused_url, task, ProgressLog};

fn audio_task(model: &str, audio: Bytes, content_type: &str, language: Option<&str>) -> Task {
    let id = InputId::generate();
    task(
        model,
        JobParams::SpeechToText(SpeechToTextParams {
            input_id: id.clone(),
            language: language.map(str::to_owned),
        }),
        vec![Input {
            id,
            content_type: content_type.into(),
            bytes: audio,
        }],
    )
}

fn wav() -> Bytes {
    Bytes::from(wav_tone(0.5, 16_000))
}

async fn run(engine: &dyn Engine, t: &Task) -> Result<Vec<Artifact>, EngineError> {
    let log = ProgressLog::new();
    let out = engine
        .run(t, &log.progress, &CancellationToken::new())
        .await;
    if out.is_ok() {
        assert_eq!(log.values().await.last(), Some(&100.0));
    }
    out
}

fn text_of(artifacts: &[Artifact]) -> String {
    assert_eq!(artifacts.len(), 1);
    assert_eq!(artifacts[0].meta.kind, ArtifactKind::Text);
    String::from_utf8(artifacts[0].bytes.to_vec()).unwrap()
}

fn whisper(url: String) -> WhisperCpp {
    WhisperCpp::new(
        WhisperCppConfig {
            url,
            models: vec!["whisper-large-v3".into()],
        },
        http(),
    )
}

#[tokio::test]
async fn whisper_cpp_uploads_the_documented_form() {
    let standin = WhisperStandIn::start(WhisperOptions::default()).await;
    let engine = whisper(standin.url());
    let audio = wav();
    let out = run(
        &engine,
        &audio_task("whisper-large-v3", audio.clone(), "audio/wav", Some("de")),
    )
    .await
    .unwrap();
    // whisper.cpp's text starts with a space; the artifact does not.
    assert_eq!(
        text_of(&out),
        "And so my fellow Americans, ask not what your country can do for you."
    );
    let forms = standin.forms();
    assert_eq!(forms.len(), 1);
    let field = |name: &str| forms[0].iter().find(|f| f.name == name).cloned().unwrap();
    let file = field("file");
    assert_eq!(file.bytes, audio);
    assert_eq!(file.file_name.as_deref(), Some("audio.wav"));
    assert_eq!(file.content_type.as_deref(), Some("audio/wav"));
    assert_eq!(field("response_format").text(), "json");
    assert_eq!(field("temperature").text(), "0.0");
    assert_eq!(field("language").text(), "de");

    // No language: whisper.cpp would assume English unless told to detect.
    run(
        &engine,
        &audio_task("whisper-large-v3", wav(), "audio/wav", None),
    )
    .await
    .unwrap();
    let forms = standin.forms();
    let language = forms[1].iter().find(|f| f.name == "language").unwrap();
    assert_eq!(language.text(), "auto");
}

#[tokio::test]
async fn whisper_cpp_unreadable_audio_is_rejected_and_missing_audio_never_sent() {
    let standin = WhisperStandIn::start(WhisperOptions::default()).await;
    let engine = whisper(standin.url());
    let e = run(
        &engine,
        &audio_task(
            "whisper-large-v3",
            Bytes::from_static(b"OggS not really"),
            "audio/ogg",
            None,
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, "engine_rejected");
    assert!(
        e.message.contains("failed to read audio data"),
        "{}",
        e.message
    );

    let mut no_audio = audio_task("whisper-large-v3", wav(), "audio/wav", None);
    no_audio.inputs.clear();
    let e = run(&engine, &no_audio).await.unwrap_err();
    assert_eq!(e.code, "engine_rejected");
    assert_eq!(standin.forms().len(), 1);
}

#[tokio::test]
async fn whisper_cpp_unreachable_is_retryable_and_garbage_is_invalid_output() {
    let e = run(
        &whisper(refused_url().await),
        &audio_task("whisper-large-v3", wav(), "audio/wav", None),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, "engine_unavailable");
    assert!(e.retryable);

    let standin = WhisperStandIn::start(WhisperOptions {
        malformed: true,
        ..WhisperOptions::default()
    })
    .await;
    let e = run(
        &whisper(standin.url()),
        &audio_task("whisper-large-v3", wav(), "audio/wav", None),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, "invalid_output");
}

#[tokio::test]
async fn whisper_cpp_cancel_hangs_up_so_the_server_stops() {
    let standin = WhisperStandIn::start(WhisperOptions {
        delay: Duration::from_secs(30),
        ..WhisperOptions::default()
    })
    .await;
    let engine = whisper(standin.url());
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        trigger.cancel();
    });
    let log = ProgressLog::new();
    let t = audio_task("whisper-large-v3", wav(), "audio/wav", None);
    let e = engine.run(&t, &log.progress, &cancel).await.unwrap_err();
    assert_eq!(e, EngineError::cancelled());
    assert!(standin.wait_abandoned(Duration::from_secs(3)).await);
}

fn transcription(url: String, key: Option<std::path::PathBuf>) -> OpenAiTranscription {
    OpenAiTranscription::new(
        OpenAiTranscriptionConfig {
            url,
            models: vec!["whisper-1".into()],
            upstream_model: Some("Systran/faster-whisper-large-v3".into()),
            api_key_file: key,
        },
        http(),
    )
}

#[tokio::test]
async fn openai_transcription_uploads_the_documented_form() {
    let key = "sk-stt-0123456789";
    let file = key_file(key);
    let standin = OpenAiStandIn::start(OpenAiOptions {
        api_key: Some(key.into()),
        ..OpenAiOptions::default()
    })
    .await;
    let engine = transcription(standin.url(), Some(file.path().to_owned()));
    let mp3 = Bytes::from_static(b"ID3\x04\0\0\0\0\0\0 pretend mp3");
    let out = run(
        &engine,
        &audio_task("whisper-1", mp3.clone(), "audio/mpeg", Some("fr")),
    )
    .await
    .unwrap();
    assert_eq!(
        text_of(&out),
        "The quick brown fox jumps over the lazy dog."
    );
    let request = standin.last_request().unwrap();
    assert_eq!(request.path, "/v1/audio/transcriptions");
    assert_eq!(request.authorization, Some(format!("Bearer {key}")));
    let file = request.field("file").unwrap();
    assert_eq!(file.bytes, mp3);
    // OpenAI tells formats apart by the file name.
    assert_eq!(file.file_name.as_deref(), Some("audio.mp3"));
    assert_eq!(file.content_type.as_deref(), Some("audio/mpeg"));
    assert_eq!(
        request.field("model").unwrap().text(),
        "Systran/faster-whisper-large-v3"
    );
    assert_eq!(request.field("response_format").unwrap().text(), "json");
    assert_eq!(request.field("language").unwrap().text(), "fr");

    // Without a language the server detects it: the field is left out.
    run(&engine, &audio_task("whisper-1", wav(), "audio/wav", None))
        .await
        .unwrap();
    let request = standin.last_request().unwrap();
    assert!(request.field("language").is_none());
    assert_eq!(
        request.field("file").unwrap().file_name.as_deref(),
        Some("audio.wav")
    );
    assert_eq!(engine.loaded_models(), vec!["whisper-1".to_string()]);
}

#[tokio::test]
async fn openai_transcription_errors() {
    let standin = OpenAiStandIn::start(OpenAiOptions::default()).await;
    let engine = transcription(standin.url(), None);
    let e = run(
        &engine,
        &audio_task("whisper-1", wav(), "audio/wav", Some("english")),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, "engine_rejected");
    assert!(e.message.contains("ISO-639-1"), "{}", e.message);

    let loading = OpenAiStandIn::start(OpenAiOptions {
        fault: Some(Fault::Loading),
        ..OpenAiOptions::default()
    })
    .await;
    let e = run(
        &transcription(loading.url(), None),
        &audio_task("whisper-1", wav(), "audio/wav", None),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, "engine_unavailable");
    assert!(e.message.contains("Loading model"), "{}", e.message);

    let e = run(
        &transcription(refused_url().await, None),
        &audio_task("whisper-1", wav(), "audio/wav", None),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, "engine_unavailable");
}

fn tts_task(text: &str, voice: Option<&str>, speed: f32) -> Task {
    task(
        "kokoro-82m",
        JobParams::TextToSpeech(TextToSpeechParams {
            text: text.into(),
            voice: voice.map(str::to_owned),
            speed,
        }),
        vec![],
    )
}

fn speech(url: String, default_voice: Option<&str>) -> OpenAiSpeech {
    OpenAiSpeech::new(
        OpenAiSpeechConfig {
            url,
            models: vec!["kokoro-82m".into()],
            upstream_model: Some("kokoro".into()),
            default_voice: default_voice.map(str::to_owned),
            api_key_file: None,
        },
        http(),
    )
}

#[tokio::test]
async fn openai_speech_returns_the_wav_it_asked_for() {
    let standin = OpenAiStandIn::start(OpenAiOptions::default()).await;
    let engine = speech(standin.url(), Some("af_bella"));
    let out = run(
        &engine,
        &tts_task("Hello there, world.", Some("am_adam"), 1.25),
    )
    .await
    .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].meta.kind, ArtifactKind::Audio);
    assert_eq!(out[0].meta.format, "wav");
    let b = &out[0].bytes;
    assert_eq!((&b[0..4], &b[8..12]), (&b"RIFF"[..], &b"WAVE"[..]));
    assert_eq!(
        u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize,
        b.len() - 8
    );
    let request = standin.last_request().unwrap();
    assert_eq!(request.path, "/v1/audio/speech");
    assert_eq!(
        request.json.unwrap(),
        json!({
            "model": "kokoro",
            "input": "Hello there, world.",
            "voice": "am_adam",
            "response_format": "wav",
            "speed": 1.25,
        })
    );

    // The configured voice when the job names none, then OpenAI's first.
    run(&engine, &tts_task("Hi.", None, 1.0)).await.unwrap();
    assert_eq!(
        standin.last_request().unwrap().json.unwrap()["voice"],
        "af_bella"
    );
    run(&speech(standin.url(), None), &tts_task("Hi.", None, 1.0))
        .await
        .unwrap();
    assert_eq!(
        standin.last_request().unwrap().json.unwrap()["voice"],
        "alloy"
    );
}

#[tokio::test]
async fn openai_speech_that_is_not_wav_is_invalid_output() {
    let standin = OpenAiStandIn::start(OpenAiOptions {
        fault: Some(Fault::Malformed),
        ..OpenAiOptions::default()
    })
    .await;
    let e = run(&speech(standin.url(), None), &tts_task("Hi.", None, 1.0))
        .await
        .unwrap_err();
    assert_eq!(e.code, "invalid_output");
    assert!(e.message.contains("WAV"), "{}", e.message);
}

#[tokio::test]
async fn openai_speech_errors() {
    let standin = OpenAiStandIn::start(OpenAiOptions::default()).await;
    let e = run(&speech(standin.url(), None), &tts_task("Hi.", None, 9.0))
        .await
        .unwrap_err();
    assert_eq!(e.code, "engine_rejected");
    assert!(e.message.contains("speed"), "{}", e.message);

    let failing = OpenAiStandIn::start(OpenAiOptions {
        fault: Some(Fault::ServerError),
        ..OpenAiOptions::default()
    })
    .await;
    let e = run(&speech(failing.url(), None), &tts_task("Hi.", None, 1.0))
        .await
        .unwrap_err();
    assert_eq!(e.code, "engine_unavailable");

    let e = run(
        &speech(refused_url().await, None),
        &tts_task("Hi.", None, 1.0),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, "engine_unavailable");
    assert!(e.retryable);
}
