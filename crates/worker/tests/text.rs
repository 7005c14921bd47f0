//! The text adapters (`kobold`, `openai_chat`) against loopback stand-ins of
//! KoboldCPP and an OpenAI-compatible server: what they send, what they make
//! of every answer, and that a cancel reaches the engine.

mod common;

use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use tessera_core::params::{JobParams, TextParams};
use tessera_testkit::standins::kobold::{self, KoboldOptions, KoboldStandIn};
use tessera_testkit::standins::openai::{self, Fault, OpenAiOptions, OpenAiStandIn};
use tessera_worker::engine::kobold::{Kobold, KoboldConfig};
use tessera_worker::engine::openai_chat::{
    Completion, OpenAiChat, OpenAiChatConfig, TokenLimitField,
};
use tessera_worker::engine::{Engine, EngineError};

use common::{http, key_file, refused_url, task, ProgressLog};

fn text(prompt: &str, system: Option<&str>, max_tokens: u32, temperature: f32) -> TextParams {
    TextParams {
        prompt: prompt.into(),
        system: system.map(str::to_owned),
        max_tokens,
        temperature,
    }
}

fn kobold_engine(url: String) -> Kobold {
    Kobold::new(
        KoboldConfig {
            url,
            models: vec!["mythomax-13b".into()],
            api_key_file: None,
        },
        http(),
    )
    .poll_every(Duration::from_millis(20))
}

async fn kobold_run(engine: &Kobold, params: TextParams) -> Result<String, EngineError> {
    let log = ProgressLog::new();
    let t = task("mythomax-13b", JobParams::Text(params), vec![]);
    let artifacts = engine
        .run(&t, &log.progress, &CancellationToken::new())
        .await?;
    assert_eq!(artifacts.len(), 1);
    assert_eq!(artifacts[0].meta.format, "txt");
    Ok(String::from_utf8(artifacts[0].bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn kobold_sends_the_documented_generate_request_and_returns_the_text() {
    let standin = KoboldStandIn::start(KoboldOptions {
        reply_tokens: 5,
        ..KoboldOptions::default()
    })
    .await;
    // A trailing slash in the configuration does not matter.
    let engine = kobold_engine(format!("{}/", standin.url()));
    let out = kobold_run(
        &engine,
        text("Tell me a story.", Some("You are a bard."), 64, 0.5),
    )
    .await
    .unwrap();
    assert_eq!(out, kobold::reply(5).trim());

    let generate = standin.requests_to("/api/v1/generate");
    assert_eq!(generate.len(), 1);
    let body = generate[0].body.clone().unwrap();
    assert_eq!(body["prompt"], "You are a bard.\n\nTell me a story.");
    assert_eq!(body["max_length"], 64);
    assert_eq!(body["temperature"], 0.5);
    assert!(body["genkey"].as_str().unwrap().starts_with("tessera-"));
    assert!(standin.requests_to("/api/extra/abort").is_empty());
    assert_eq!(engine.kind(), "kobold");
    assert_eq!(engine.loaded_models(), vec!["mythomax-13b".to_string()]);
}

#[tokio::test]
async fn kobold_stops_at_max_length() {
    let standin = KoboldStandIn::start(KoboldOptions {
        reply_tokens: 30,
        ..KoboldOptions::default()
    })
    .await;
    let engine = kobold_engine(standin.url());
    let out = kobold_run(&engine, text("Go on.", None, 3, 0.7))
        .await
        .unwrap();
    assert_eq!(out, kobold::reply(3).trim());
    assert_eq!(
        standin.requests_to("/api/v1/generate")[0]
            .body
            .as_ref()
            .unwrap()["prompt"],
        "Go on."
    );
}

#[tokio::test]
async fn kobold_progress_is_polled_with_the_runs_genkey() {
    let standin = KoboldStandIn::start(KoboldOptions {
        reply_tokens: 40,
        token_delay: Duration::from_millis(10),
        ..KoboldOptions::default()
    })
    .await;
    let engine = kobold_engine(standin.url());
    let log = ProgressLog::new();
    let t = task(
        "mythomax-13b",
        JobParams::Text(text("Go.", None, 48, 0.7)),
        vec![],
    );
    engine
        .run(&t, &log.progress, &CancellationToken::new())
        .await
        .unwrap();
    let genkey = standin.requests_to("/api/v1/generate")[0]
        .body
        .as_ref()
        .unwrap()["genkey"]
        .clone();
    let checks = standin.requests_to("/api/extra/generate/check");
    assert!(checks.len() >= 3, "{} checks", checks.len());
    for check in &checks {
        assert_eq!(check.method, "POST");
        assert_eq!(check.body.as_ref().unwrap()["genkey"], genkey);
    }
    let values = log.values().await;
    assert_eq!(values.last(), Some(&100.0));
    assert!(
        values.iter().any(|v| *v > 0.0 && *v < 100.0),
        "no progress while generating: {values:?}"
    );
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");
}

#[tokio::test]
async fn kobold_busy_is_retryable() {
    let standin = KoboldStandIn::start(KoboldOptions {
        reply_tokens: 10_000,
        token_delay: Duration::from_millis(5),
        single_slot: true,
        ..KoboldOptions::default()
    })
    .await;
    // Another client is generating.
    let other = tokio::spawn(
        http()
            .post(format!("{}/api/v1/generate", standin.url()))
            .json(&json!({ "prompt": "x", "max_length": 10000, "genkey": "OTHER" }))
            .send(),
    );
    while !standin.generating() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let e = kobold_run(&kobold_engine(standin.url()), text("Hi", None, 16, 0.7))
        .await
        .unwrap_err();
    assert_eq!(e.code, "engine_unavailable");
    assert!(e.retryable);
    assert!(e.message.contains("Server is busy"), "{}", e.message);
    http()
        .post(format!("{}/api/extra/abort", standin.url()))
        .json(&json!({ "genkey": "OTHER" }))
        .send()
        .await
        .unwrap();
    other.await.unwrap().unwrap();
}

#[tokio::test]
async fn kobold_validation_errors_are_rejected_with_their_message() {
    let standin = KoboldStandIn::start(KoboldOptions::default()).await;
    let engine = kobold_engine(standin.url());
    let e = kobold_run(&engine, text("Hi", None, 0, -1.0))
        .await
        .unwrap_err();
    assert_eq!(e.code, "engine_rejected");
    assert!(!e.retryable);
    assert!(
        e.message
            .contains("max_length: Must be greater than or equal to 1."),
        "{}",
        e.message
    );
    assert!(e.message.contains("temperature"), "{}", e.message);
}

#[tokio::test]
async fn kobold_unreachable_is_retryable_and_garbage_is_invalid_output() {
    let e = kobold_run(
        &kobold_engine(refused_url().await),
        text("Hi", None, 8, 0.7),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, "engine_unavailable");
    assert!(e.retryable);
    assert!(e.message.contains("cannot connect"), "{}", e.message);

    let standin = KoboldStandIn::start(KoboldOptions {
        malformed: true,
        ..KoboldOptions::default()
    })
    .await;
    let e = kobold_run(&kobold_engine(standin.url()), text("Hi", None, 8, 0.7))
        .await
        .unwrap_err();
    assert_eq!(e.code, "invalid_output");
}

#[tokio::test]
async fn kobold_cancel_aborts_the_generation_on_the_server() {
    let standin = KoboldStandIn::start(KoboldOptions {
        reply_tokens: 100_000,
        token_delay: Duration::from_millis(5),
        ..KoboldOptions::default()
    })
    .await;
    let engine = kobold_engine(standin.url());
    let cancel = CancellationToken::new();
    let log = ProgressLog::new();
    let t = task(
        "mythomax-13b",
        JobParams::Text(text("Go.", None, 4096, 0.7)),
        vec![],
    );
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let e = engine.run(&t, &log.progress, &cancel).await.unwrap_err();
    assert_eq!(e, EngineError::cancelled());
    assert!(started.elapsed() < Duration::from_secs(2));
    let genkey = standin.requests_to("/api/v1/generate")[0]
        .body
        .as_ref()
        .unwrap()["genkey"]
        .clone();
    let aborts = standin.requests_to("/api/extra/abort");
    assert_eq!(aborts.len(), 1);
    assert_eq!(aborts[0].body.as_ref().unwrap()["genkey"], genkey);
    // The engine stopped: the server is free for the next job.
    assert!(standin.wait_idle(Duration::from_secs(2)).await);
    assert_eq!(standin.generations_finished(), 1);
}

#[tokio::test]
async fn kobold_run_dropped_at_its_time_limit_still_aborts() {
    let standin = KoboldStandIn::start(KoboldOptions {
        reply_tokens: 100_000,
        token_delay: Duration::from_millis(5),
        ..KoboldOptions::default()
    })
    .await;
    let engine = kobold_engine(standin.url());
    let log = ProgressLog::new();
    let t = task(
        "mythomax-13b",
        JobParams::Text(text("Go.", None, 4096, 0.7)),
        vec![],
    );
    let cancel = CancellationToken::new();
    let limited = tokio::time::timeout(
        Duration::from_millis(150),
        engine.run(&t, &log.progress, &cancel),
    )
    .await;
    assert!(limited.is_err());
    assert!(standin.wait_idle(Duration::from_secs(2)).await);
    assert_eq!(standin.requests_to("/api/extra/abort").len(), 1);
}

#[tokio::test]
async fn kobold_with_a_password_needs_its_key() {
    let password = "kobold-pass-0123456789";
    let standin = KoboldStandIn::start(KoboldOptions {
        reply_tokens: 200,
        token_delay: Duration::from_millis(5),
        password: Some(password.into()),
        ..KoboldOptions::default()
    })
    .await;
    let with_key = |file: Option<std::path::PathBuf>| {
        Kobold::new(
            KoboldConfig {
                url: standin.url(),
                models: vec!["mythomax-13b".into()],
                api_key_file: file,
            },
            http(),
        )
        .poll_every(Duration::from_millis(20))
    };

    // Without the key: a message that says what to set, not a bare 401.
    let e = kobold_run(&with_key(None), text("Go.", None, 4, 0.7))
        .await
        .unwrap_err();
    assert_eq!(e.code, "engine_unavailable");
    assert!(
        e.message.contains("401")
            && e.message
                .contains("Authentication key is missing or invalid")
            && e.message.contains("api_key_file"),
        "{}",
        e.message
    );
    // A wrong key names its file, never the key.
    let wrong = key_file("not-the-password-42");
    let e = kobold_run(
        &with_key(Some(wrong.path().to_owned())),
        text("Go.", None, 4, 0.7),
    )
    .await
    .unwrap_err();
    assert!(
        e.message.contains(&wrong.path().display().to_string()),
        "{}",
        e.message
    );
    assert!(!e.message.contains("not-the-password-42"), "{}", e.message);

    // With it: the job runs, and every request carries it (progress too).
    let right = key_file(password);
    let engine = with_key(Some(right.path().to_owned()));
    let out = kobold_run(&engine, text("Go.", None, 20, 0.7))
        .await
        .unwrap();
    assert_eq!(out, kobold::reply(20).trim());
    let bearer = format!("Bearer {password}");
    let generate = standin.requests_to("/api/v1/generate");
    assert_eq!(
        generate.last().unwrap().authorization.as_deref(),
        Some(bearer.as_str())
    );
    let checks = standin.requests_to("/api/extra/generate/check");
    assert!(!checks.is_empty());
    assert!(checks
        .iter()
        .all(|c| c.authorization.as_deref() == Some(bearer.as_str())));

    // A cancel's abort carries it too, and stops the generation.
    let log = ProgressLog::new();
    let cancel = CancellationToken::new();
    let t = task(
        "mythomax-13b",
        JobParams::Text(text("Go.", None, 200, 0.7)),
        vec![],
    );
    let stopper = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(40)).await;
        stopper.cancel();
    });
    let e = engine.run(&t, &log.progress, &cancel).await.unwrap_err();
    assert_eq!(e.code, "cancelled");
    assert!(standin.wait_idle(Duration::from_secs(2)).await);
    let aborts = standin.requests_to("/api/extra/abort");
    assert!(!aborts.is_empty());
    assert!(aborts
        .iter()
        .all(|a| a.authorization.as_deref() == Some(bearer.as_str())));
}

fn chat_engine(url: String) -> OpenAiChat {
    OpenAiChat::new(
        OpenAiChatConfig {
            url,
            models: vec!["llama-3.1-8b".into()],
            upstream_model: None,
            api_key_file: None,
            token_limit_field: TokenLimitField::MaxTokens,
            send_temperature: true,
        },
        http(),
    )
}

async fn complete(engine: &OpenAiChat, params: &TextParams) -> Result<Completion, EngineError> {
    let log = ProgressLog::new();
    engine
        .complete(
            "llama-3.1-8b",
            params,
            &log.progress,
            &CancellationToken::new(),
        )
        .await
}

#[tokio::test]
async fn chat_streams_a_reply_and_reports_usage() {
    let standin = OpenAiStandIn::start(OpenAiOptions {
        reply_tokens: 7,
        ..OpenAiOptions::default()
    })
    .await;
    let engine = chat_engine(standin.url());
    let params = text("What is the answer?", Some("Be brief."), 100, 0.2);
    let c = complete(&engine, &params).await.unwrap();
    assert_eq!(
        c,
        Completion {
            text: openai::reply(7),
            finish_reason: Some("stop".into()),
            prompt_tokens: Some(6),
            completion_tokens: Some(7),
            chunks: 7,
        }
    );
    let request = standin.last_request().unwrap();
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.authorization, None);
    let body = request.json.unwrap();
    assert_eq!(body["model"], "llama-3.1-8b");
    assert_eq!(
        body["messages"],
        json!([
            { "role": "system", "content": "Be brief." },
            { "role": "user", "content": "What is the answer?" },
        ])
    );
    assert_eq!(body["max_tokens"], 100);
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({ "include_usage": true }));
    assert_eq!(standin.streams(), (1, 1, 0));
}

#[tokio::test]
async fn chat_cut_at_max_tokens_says_length() {
    let standin = OpenAiStandIn::start(OpenAiOptions {
        reply_tokens: 20,
        ..OpenAiOptions::default()
    })
    .await;
    let engine = chat_engine(standin.url());
    let c = complete(&engine, &text("Count.", None, 5, 0.0))
        .await
        .unwrap();
    assert_eq!(c.finish_reason.as_deref(), Some("length"));
    assert_eq!((c.chunks, c.completion_tokens), (5, Some(5)));
    assert_eq!(c.prompt_tokens, Some(1));
    assert_eq!(c.text, openai::reply(5));
    // Without a system text, only the user's message goes.
    let body = standin.last_request().unwrap().json.unwrap();
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn chat_progress_follows_the_tokens() {
    let standin = OpenAiStandIn::start(OpenAiOptions {
        reply_tokens: 10,
        token_delay: Duration::from_millis(15),
        ..OpenAiOptions::default()
    })
    .await;
    let engine = chat_engine(standin.url());
    let log = ProgressLog::new();
    let t = task(
        "llama-3.1-8b",
        JobParams::Text(text("Go.", None, 20, 0.7)),
        vec![],
    );
    let artifacts = engine
        .run(&t, &log.progress, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(artifacts[0].bytes, openai::reply(10).as_bytes());
    let values = log.values().await;
    assert_eq!(values.last(), Some(&100.0));
    // Ten tokens of twenty: progress climbs in steps of 5% to 50%, then 100%.
    assert!(values.iter().any(|v| *v > 0.0 && *v <= 50.0), "{values:?}");
    assert!(
        values
            .iter()
            .all(|v| (*v <= 50.0 && v % 5.0 == 0.0) || *v == 100.0),
        "{values:?}"
    );
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");
    assert_eq!(engine.loaded_models(), vec!["llama-3.1-8b".to_string()]);
}

#[tokio::test]
async fn chat_sends_the_upstream_model_and_the_key_from_its_file() {
    let key = "sk-test-0123456789abcdef";
    let file = key_file(key);
    let standin = OpenAiStandIn::start(OpenAiOptions {
        models: vec!["qwen2.5:7b-instruct".into()],
        api_key: Some(key.into()),
        ..OpenAiOptions::default()
    })
    .await;
    let engine = OpenAiChat::new(
        OpenAiChatConfig {
            // Operators often copy the client-side URL, with /v1.
            url: format!("{}/v1", standin.url()),
            models: vec!["qwen2.5-7b".into()],
            upstream_model: Some("qwen2.5:7b-instruct".into()),
            api_key_file: Some(file.path().to_owned()),
            token_limit_field: TokenLimitField::MaxTokens,
            send_temperature: true,
        },
        http(),
    );
    let log = ProgressLog::new();
    let c = engine
        .complete(
            "qwen2.5-7b",
            &text("Hi", None, 50, 1.0),
            &log.progress,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(c.finish_reason.as_deref(), Some("stop"));
    let request = standin.last_request().unwrap();
    assert_eq!(request.json.unwrap()["model"], "qwen2.5:7b-instruct");
    assert_eq!(request.authorization, Some(format!("Bearer {key}")));
}

#[tokio::test]
async fn chat_wrong_key_is_retryable_and_never_shown() {
    let key = "sk-wrong-0123456789abcdef";
    let file = key_file(key);
    let standin = OpenAiStandIn::start(OpenAiOptions {
        api_key: Some("sk-right".into()),
        ..OpenAiOptions::default()
    })
    .await;
    let engine = OpenAiChat::new(
        OpenAiChatConfig {
            url: standin.url(),
            models: vec!["llama-3.1-8b".into()],
            upstream_model: None,
            api_key_file: Some(file.path().to_owned()),
            token_limit_field: TokenLimitField::MaxTokens,
            send_temperature: true,
        },
        http(),
    );
    let e = complete(&engine, &text("Hi", None, 5, 1.0))
        .await
        .unwrap_err();
    assert_eq!(e.code, "engine_unavailable");
    assert!(e.message.contains("Incorrect API key"), "{}", e.message);
    assert!(!e.message.contains(key), "{}", e.message);

    // A missing key file is an error that names the file, not a panic.
    let engine = OpenAiChat::new(
        OpenAiChatConfig {
            url: standin.url(),
            models: vec!["llama-3.1-8b".into()],
            upstream_model: None,
            api_key_file: Some("/nonexistent/tessera-key".into()),
            token_limit_field: TokenLimitField::MaxTokens,
            send_temperature: true,
        },
        http(),
    );
    let e = complete(&engine, &text("Hi", None, 5, 1.0))
        .await
        .unwrap_err();
    assert!(
        e.message.contains("/nonexistent/tessera-key"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn chat_validation_errors_are_rejected_with_their_message() {
    let standin = OpenAiStandIn::start(OpenAiOptions {
        models: vec!["llama-3.1-8b".into()],
        ..OpenAiOptions::default()
    })
    .await;
    let e = complete(&chat_engine(standin.url()), &text("Hi", None, 5, 3.5))
        .await
        .unwrap_err();
    assert_eq!(e.code, "engine_rejected");
    assert!(!e.retryable);
    assert!(
        e.message.contains("400") && e.message.contains("Invalid 'temperature'"),
        "{}",
        e.message
    );

    let engine = OpenAiChat::new(
        OpenAiChatConfig {
            url: standin.url(),
            models: vec!["llama-3.1-8b".into()],
            upstream_model: Some("no-such-model".into()),
            api_key_file: None,
            token_limit_field: TokenLimitField::MaxTokens,
            send_temperature: true,
        },
        http(),
    );
    let e = complete(&engine, &text("Hi", None, 5, 1.0))
        .await
        .unwrap_err();
    assert_eq!(e.code, "engine_rejected");
    assert!(e.message.contains("does not exist"), "{}", e.message);
}

#[tokio::test]
async fn chat_server_trouble_is_retryable() {
    for (fault, words) in [
        (Fault::Loading, "Loading model"),
        (Fault::ServerError, "internal_server_error"),
        (Fault::CutStream, "ended the stream"),
    ] {
        let standin = OpenAiStandIn::start(OpenAiOptions {
            reply_tokens: 8,
            fault: Some(fault),
            ..OpenAiOptions::default()
        })
        .await;
        let e = complete(&chat_engine(standin.url()), &text("Hi", None, 50, 1.0))
            .await
            .unwrap_err();
        assert_eq!(e.code, "engine_unavailable", "{fault:?}: {e}");
        assert!(e.retryable);
        assert!(e.message.contains(words), "{fault:?}: {}", e.message);
    }
    let e = complete(
        &chat_engine(refused_url().await),
        &text("Hi", None, 50, 1.0),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, "engine_unavailable");
    assert!(e.message.contains("cannot connect"), "{}", e.message);
}

#[tokio::test]
async fn chat_errors_inside_the_stream_and_garbage_are_reported() {
    let standin = OpenAiStandIn::start(OpenAiOptions {
        reply_tokens: 8,
        fault: Some(Fault::ErrorInStream),
        ..OpenAiOptions::default()
    })
    .await;
    let e = complete(&chat_engine(standin.url()), &text("Hi", None, 50, 1.0))
        .await
        .unwrap_err();
    assert_eq!(e.code, "engine_rejected");
    assert!(e.message.contains("context size"), "{}", e.message);

    let standin = OpenAiStandIn::start(OpenAiOptions {
        fault: Some(Fault::Malformed),
        ..OpenAiOptions::default()
    })
    .await;
    let e = complete(&chat_engine(standin.url()), &text("Hi", None, 50, 1.0))
        .await
        .unwrap_err();
    assert_eq!(e.code, "invalid_output");
}

#[tokio::test]
async fn chat_cancel_drops_the_stream() {
    let standin = OpenAiStandIn::start(OpenAiOptions {
        reply_tokens: 100_000,
        token_delay: Duration::from_millis(5),
        ..OpenAiOptions::default()
    })
    .await;
    let engine = chat_engine(standin.url());
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        trigger.cancel();
    });
    let log = ProgressLog::new();
    let t = task(
        "llama-3.1-8b",
        JobParams::Text(text("Go.", None, 4096, 0.7)),
        vec![],
    );
    let started = Instant::now();
    let e = engine.run(&t, &log.progress, &cancel).await.unwrap_err();
    assert_eq!(e, EngineError::cancelled());
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(standin.wait_stream_dropped(Duration::from_secs(3)).await);
    assert_eq!(standin.streams(), (1, 0, 1));
    let sent = standin.chunks_sent();
    assert!(sent > 0 && sent < 1000, "{sent} chunks sent");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(standin.chunks_sent(), sent, "the server went on generating");
}

#[tokio::test]
async fn chat_sends_max_completion_tokens_and_no_temperature_when_configured() {
    let standin = OpenAiStandIn::start(OpenAiOptions {
        reasoning: true,
        ..OpenAiOptions::default()
    })
    .await;
    // The defaults send what llama.cpp, vLLM and Ollama read, which a
    // reasoning model refuses, as the job's fault.
    let e = complete(&chat_engine(standin.url()), &text("Hi", None, 5, 0.7))
        .await
        .unwrap_err();
    assert_eq!(e.code, "engine_rejected");
    assert!(e.message.contains("max_completion_tokens"), "{}", e.message);
    let body = standin.last_request().unwrap().json.unwrap();
    assert_eq!(body["max_tokens"], 5);
    assert_eq!(body["temperature"], 0.7);

    let engine = OpenAiChat::new(
        OpenAiChatConfig {
            url: standin.url(),
            models: vec!["llama-3.1-8b".into()],
            upstream_model: None,
            api_key_file: None,
            token_limit_field: TokenLimitField::MaxCompletionTokens,
            send_temperature: false,
        },
        http(),
    );
    let c = complete(&engine, &text("Hi", None, 3, 0.7)).await.unwrap();
    assert_eq!(c.text, openai::reply(3));
    assert_eq!(c.finish_reason.as_deref(), Some("length"));
    let body = standin.last_request().unwrap().json.unwrap();
    assert_eq!(body["max_completion_tokens"], 3);
    assert!(body.get("max_tokens").is_none(), "{body}");
    assert!(body.get("temperature").is_none(), "{body}");
    assert_eq!(body["stream"], true);
}
