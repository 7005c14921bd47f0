//! `POST /v1/chat/completions`: the request checked as OpenAI checks it, and
//! the filler reply as one `chat.completion` or as server-sent events, one
//! token a chunk, with the faults a test injects.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{
    check_model, count_words, gate, invalid, lock, now, record, refuse, reply, token, Fault, Shared,
};

struct Chat {
    model: String,
    prompt_tokens: usize,
    max_tokens: Option<usize>,
    stream: bool,
    include_usage: bool,
}

fn parse_chat(shared: &Shared, body: &Value) -> Result<Chat, Box<Response>> {
    if !body.is_object() {
        return refuse(invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
            None,
            None,
        ));
    }
    let model = check_model(shared, body.get("model"))?;
    let messages = match body.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => {
            return refuse(invalid(
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
                Some("messages"),
                Some("empty_array"),
            ))
        }
        Some(_) => {
            return refuse(invalid(
                "Invalid type for 'messages': expected an array.",
                Some("messages"),
                Some("invalid_type"),
            ))
        }
        None => {
            return refuse(invalid(
                "Missing required parameter: 'messages'.",
                Some("messages"),
                Some("missing_required_parameter"),
            ))
        }
    };
    let mut prompt_tokens = 0;
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str);
        if !matches!(
            role,
            Some("system" | "developer" | "user" | "assistant" | "tool")
        ) {
            return refuse(invalid(
                &format!("Invalid value for 'messages[{i}].role'."),
                Some(&format!("messages[{i}].role")),
                Some("invalid_value"),
            ));
        }
        match message.get("content") {
            Some(Value::String(text)) => prompt_tokens += count_words(text),
            _ => {
                return refuse(invalid(
                    &format!("Invalid type for 'messages[{i}].content': expected a string."),
                    Some(&format!("messages[{i}].content")),
                    Some("invalid_type"),
                ))
            }
        }
    }
    if shared.options.reasoning {
        refuse_reasoning_parameters(body)?;
    }
    let max_tokens = match body.get("max_tokens").or_else(|| body.get("max_completion_tokens")) {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(n) if n >= 1 => Some(n as usize),
            Some(n) => {
                return refuse(invalid(
                    &format!("Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got {n} instead."),
                    Some("max_tokens"),
                    Some("integer_below_min_value"),
                ))
            }
            None => {
                return refuse(invalid(
                    "Invalid type for 'max_tokens': expected an integer.",
                    Some("max_tokens"),
                    Some("invalid_type"),
                ))
            }
        },
    };
    if let Some(t) = body.get("temperature").filter(|t| !t.is_null()) {
        match t.as_f64() {
            Some(t) if (0.0..=2.0).contains(&t) => {}
            Some(t) if t < 0.0 => {
                return refuse(invalid(
                    &format!("Invalid 'temperature': decimal below minimum value. Expected a value >= 0, but got {t} instead."),
                    Some("temperature"),
                    Some("decimal_below_min_value"),
                ))
            }
            Some(t) => {
                return refuse(invalid(
                    &format!("Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got {t} instead."),
                    Some("temperature"),
                    Some("decimal_above_max_value"),
                ))
            }
            None => {
                return refuse(invalid(
                    "Invalid type for 'temperature': expected a decimal.",
                    Some("temperature"),
                    Some("invalid_type"),
                ))
            }
        }
    }
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let options = body.get("stream_options").filter(|o| !o.is_null());
    if options.is_some() && !stream {
        return refuse(invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            Some("stream_options"),
            None,
        ));
    }
    let include_usage = options
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Chat {
        model,
        prompt_tokens,
        max_tokens,
        stream,
        include_usage,
    })
}

/// What OpenAI's reasoning models refuse: `max_tokens`, and a temperature
/// other than the default.
fn refuse_reasoning_parameters(body: &Value) -> Result<(), Box<Response>> {
    if body.get("max_tokens").is_some_and(|v| !v.is_null()) {
        return refuse(invalid(
            "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
            Some("max_tokens"),
            Some("unsupported_parameter"),
        ));
    }
    if let Some(t) = body.get("temperature").filter(|t| !t.is_null()) {
        if t.as_f64() != Some(1.0) {
            return refuse(invalid(
                &format!("Unsupported value: 'temperature' does not support {t} with this model. Only the default (1) value is supported."),
                Some("temperature"),
                Some("unsupported_value"),
            ));
        }
    }
    Ok(())
}

pub(super) async fn chat(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    record(
        &shared,
        "/v1/chat/completions",
        &headers,
        json.clone(),
        Vec::new(),
    );
    if let Err(r) = gate(&shared, &headers) {
        return *r;
    }
    let chat = match parse_chat(&shared, json.as_ref().unwrap_or(&Value::Null)) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let wanted = shared.options.reply_tokens;
    let sent = chat.max_tokens.map_or(wanted, |m| wanted.min(m));
    let finish_reason = if sent < wanted { "length" } else { "stop" };
    let usage = json!({
        "prompt_tokens": chat.prompt_tokens,
        "completion_tokens": sent,
        "total_tokens": chat.prompt_tokens + sent,
    });
    let id = format!("chatcmpl-standin{}", lock(&shared.requests).len());
    if !chat.stream {
        if shared.options.fault == Some(Fault::Malformed) {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                "{\"id\": \"chatcmpl-cut\", \"choices\": [",
            )
                .into_response();
        }
        tokio::time::sleep(shared.options.token_delay * sent as u32).await;
        return Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": now(),
            "model": chat.model,
            "system_fingerprint": null,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": reply(sent), "refusal": null },
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
            "usage": usage,
        }))
        .into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let producer = shared.clone();
    shared.streams_started.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        let shared = producer;
        let chunk = |delta: Value, finish: Option<&str>| {
            let mut c = json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": now(),
                "model": chat.model,
                "system_fingerprint": null,
                "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
            });
            if chat.include_usage {
                c["usage"] = Value::Null;
            }
            event(&c)
        };
        let fault = shared.options.fault;
        let mut events = vec![chunk(
            json!({ "role": "assistant", "content": "", "refusal": null }),
            None,
        )];
        let cut_at = match fault {
            Some(Fault::CutStream | Fault::ErrorInStream) => sent / 2,
            _ => sent,
        };
        let send_all = |events: Vec<Bytes>| {
            let tx = tx.clone();
            async move {
                for e in events {
                    if tx.send(e).await.is_err() {
                        return false;
                    }
                }
                true
            }
        };
        if fault == Some(Fault::Malformed) {
            let _ = send_all(vec![Bytes::from_static(
                b"data: {\"choices\": [{\"delta\": \n\n",
            )])
            .await;
            shared.streams_finished.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if !send_all(std::mem::take(&mut events)).await {
            shared.streams_dropped.fetch_add(1, Ordering::SeqCst);
            return;
        }
        for i in 0..cut_at {
            tokio::time::sleep(shared.options.token_delay).await;
            if !send_all(vec![chunk(json!({ "content": token(i) }), None)]).await {
                shared.streams_dropped.fetch_add(1, Ordering::SeqCst);
                return;
            }
            shared.chunks_sent.fetch_add(1, Ordering::SeqCst);
        }
        match fault {
            Some(Fault::CutStream) => {
                shared.streams_finished.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Some(Fault::ErrorInStream) => {
                let _ = send_all(vec![event(&json!({
                    "error": {
                        "code": 400,
                        "message": "the request exceeds the available context size, try increasing it",
                        "type": "exceed_context_size_error",
                    }
                }))])
                .await;
                shared.streams_finished.fetch_add(1, Ordering::SeqCst);
                return;
            }
            _ => {}
        }
        events.push(chunk(json!({}), Some(finish_reason)));
        if chat.include_usage {
            events.push(event(&json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": now(),
                "model": chat.model,
                "system_fingerprint": null,
                "choices": [],
                "usage": usage,
            })));
        }
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        if send_all(events).await {
            shared.streams_finished.fetch_add(1, Ordering::SeqCst);
        } else {
            shared.streams_dropped.fetch_add(1, Ordering::SeqCst);
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .expect("a valid response")
}

fn event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}
