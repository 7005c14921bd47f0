//! The stand-ins keep their word: what they answer agrees with what they
//! say they sent, and their errors have the shapes the real servers use.

use std::time::Duration;

use serde_json::{json, Value};

use tessera_testkit::standins::kobold::{self, KoboldOptions, KoboldStandIn};
use tessera_testkit::standins::openai::{self, OpenAiOptions, OpenAiStandIn};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test]
async fn chat_usage_matches_the_chunks_streamed() {
    let standin = OpenAiStandIn::start(OpenAiOptions {
        reply_tokens: 9,
        ..OpenAiOptions::default()
    })
    .await;
    let url = format!("{}/v1/chat/completions", standin.url());
    let messages = json!([{ "role": "user", "content": "one two three" }]);
    let body = client()
        .post(&url)
        .json(&json!({
            "model": "m", "messages": messages, "max_tokens": 4, "stream": true,
            "stream_options": { "include_usage": true },
        }))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<&str> = body
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, openai::reply(4));
    let finish: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["length"]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(chunks.last().unwrap()["choices"], json!([]));
    assert_eq!(
        usage,
        &json!({ "prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7 })
    );
    assert_eq!(standin.chunks_sent(), 4);

    // Not streamed: the same reply in one object, "stop" when it fits.
    let whole: Value = client()
        .post(&url)
        .json(&json!({ "model": "m", "messages": messages, "max_tokens": 50 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(whole["choices"][0]["message"]["content"], openai::reply(9));
    assert_eq!(whole["choices"][0]["finish_reason"], "stop");
    assert_eq!(whole["usage"]["completion_tokens"], 9);

    // stream_options without stream is refused, in OpenAI's envelope.
    let refused = client()
        .post(&url)
        .json(&json!({ "model": "m", "messages": messages, "stream_options": {} }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["param"], "stream_options");
    assert_eq!(error["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn kobold_checks_show_only_the_keyed_generation_and_abort_ends_it() {
    let standin = KoboldStandIn::start(KoboldOptions {
        reply_tokens: 10_000,
        token_delay: Duration::from_millis(2),
        single_slot: false,
        ..KoboldOptions::default()
    })
    .await;
    let base = standin.url();
    let generate = tokio::spawn(
        client()
            .post(format!("{base}/api/v1/generate"))
            .json(&json!({ "prompt": "x", "max_length": 10000, "genkey": "KCPP1" }))
            .send(),
    );
    while !standin.generating() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let check = |key: &'static str| {
        let url = format!("{base}/api/extra/generate/check");
        async move {
            let v: Value = client()
                .post(url)
                .json(&json!({ "genkey": key }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["results"][0]["text"].as_str().unwrap().to_owned()
        }
    };
    assert!(kobold::reply(10_000).starts_with(&check("KCPP1").await));
    assert!(!check("KCPP1").await.is_empty());
    assert_eq!(check("SOMEONE-ELSE").await, "");
    let abort: Value = client()
        .post(format!("{base}/api/extra/abort"))
        .json(&json!({ "genkey": "KCPP1" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(abort["success"], "true");
    let result: Value = generate.await.unwrap().unwrap().json().await.unwrap();
    assert_eq!(result["results"][0]["finish_reason"], "length");
    assert!(kobold::reply(10_000).starts_with(result["results"][0]["text"].as_str().unwrap()));

    // A body that is not JSON gets KoboldCPP's own answer.
    let bad = client()
        .post(format!("{base}/api/v1/generate"))
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 500);
    let bad: Value = bad.json().await.unwrap();
    assert_eq!(
        bad,
        json!({ "detail": { "msg": "Error parsing input.", "type": "bad_input" } })
    );
}
