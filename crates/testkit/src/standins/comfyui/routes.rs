//! ComfyUI's HTTP API: queueing a prompt, history, the queue, interrupts,
//! `/free`, and `/view` with ComfyUI's path rules; every request is
//! recorded on its way in.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::validation::{validate, Validation};
use super::websocket::websocket;
use super::{Item, Recorded, Shared};

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/ws", get(websocket))
        .route("/prompt", post(post_prompt).get(get_prompt))
        .route("/history", get(get_history).post(post_history))
        .route("/history/{prompt_id}", get(get_history_entry))
        .route("/queue", get(get_queue).post(post_queue))
        .route("/interrupt", post(post_interrupt))
        .route("/free", post(post_free))
        .route("/system_stats", get(system_stats))
        .route("/object_info", get(get_object_info))
        .route("/object_info/{node_class}", get(get_object_info_class))
        .route("/view", get(view))
        .layer(middleware::from_fn_with_state(shared.clone(), record))
        .with_state(shared)
}

async fn record(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    shared.lock().requests.push(Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        body: serde_json::from_slice(&bytes).ok(),
    });
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(super) fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

pub(super) fn error_body(kind: &str, message: &str, details: &str, extra: Value) -> Value {
    json!({ "type": kind, "message": message, "details": details, "extra_info": extra })
}

async fn post_prompt(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    if let Some(status) = shared.lock().faults.prompt_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, "injected failure").into_response();
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 Internal Server Error",
        )
            .into_response();
    };
    let number = {
        let mut state = shared.lock();
        match request.get("number").and_then(Value::as_f64) {
            Some(n) => n,
            None => {
                let n = state.number as f64;
                state.number += 1;
                if request.get("front").and_then(Value::as_bool) == Some(true) {
                    -n
                } else {
                    n
                }
            }
        }
    };
    let Some(prompt) = request.get("prompt") else {
        let error = error_body(
            "no_prompt",
            "No prompt provided",
            "No prompt provided",
            json!({}),
        );
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": error, "node_errors": {} })),
        )
            .into_response();
    };
    let Some(prompt) = prompt.as_object().cloned() else {
        let error = error_body(
            "invalid_prompt",
            "Cannot execute because the prompt is not an object of nodes.",
            "",
            json!({}),
        );
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": error, "node_errors": {} })),
        )
            .into_response();
    };
    let prompt_id = match request.get("prompt_id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        _ => uuid(),
    };
    let removed = shared.lock().removed_classes.clone();
    match validate(&prompt, &removed) {
        Validation::Refused { error, node_errors } => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": error, "node_errors": node_errors })),
        )
            .into_response(),
        Validation::Accepted {
            outputs,
            node_errors,
        } => {
            let mut extra_data = request
                .get("extra_data")
                .filter(|v| v.is_object())
                .cloned()
                .unwrap_or_else(|| json!({}));
            let client_id = request
                .get("client_id")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if let (Some(id), Some(extra)) = (&client_id, extra_data.as_object_mut()) {
                extra.insert("client_id".into(), json!(id));
            }
            shared.lock().queue.push(Item {
                number,
                prompt_id: prompt_id.clone(),
                prompt,
                extra_data,
                client_id,
                outputs,
            });
            shared.broadcast_status();
            shared.work.notify_one();
            Json(json!({ "prompt_id": prompt_id, "number": number, "node_errors": node_errors }))
                .into_response()
        }
    }
}

async fn get_prompt(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({ "exec_info": { "queue_remaining": shared.queue_remaining() } }))
}

async fn get_history(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Json<Value> {
    let state = shared.lock();
    let max = query.get("max_items").and_then(|m| m.parse::<usize>().ok());
    let skip = max.map_or(0, |m| state.history.len().saturating_sub(m));
    let out: Map<String, Value> = state
        .history
        .iter()
        .skip(skip)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Json(Value::Object(out))
}

async fn get_history_entry(
    State(shared): State<Arc<Shared>>,
    Path(prompt_id): Path<String>,
) -> Json<Value> {
    let state = shared.lock();
    Json(match state.history.get(&prompt_id) {
        Some(entry) => json!({ prompt_id: entry }),
        None => json!({}),
    })
}

async fn post_history(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut state = shared.lock();
    if request.get("clear").and_then(Value::as_bool) == Some(true) {
        state.history.clear();
    }
    for id in request
        .get("delete")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        state.history.remove(id);
    }
    StatusCode::OK.into_response()
}

async fn get_queue(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let state = shared.lock();
    let running: Vec<Value> = state.running.iter().map(Item::to_value).collect();
    let pending: Vec<Value> = state.queue.iter().map(Item::to_value).collect();
    Json(json!({ "queue_running": running, "queue_pending": pending }))
}

async fn post_queue(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    {
        let mut state = shared.lock();
        if request.get("clear").and_then(Value::as_bool) == Some(true) {
            state.queue.clear();
        }
        let delete: HashSet<&str> = request
            .get("delete")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        state
            .queue
            .retain(|i| !delete.contains(i.prompt_id.as_str()));
    }
    shared.broadcast_status();
    StatusCode::OK.into_response()
}

async fn post_interrupt(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    // The body is optional; without a prompt_id the interrupt is global.
    let target = serde_json::from_slice::<Value>(&body).ok().and_then(|b| {
        b.get("prompt_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let state = shared.lock();
    if let Some(running) = &state.running {
        if target.as_deref().is_none_or(|t| t == running.prompt_id) {
            shared.interrupt.store(true, Ordering::SeqCst);
        }
    }
    StatusCode::OK.into_response()
}

async fn post_free(State(_shared): State<Arc<Shared>>, body: Bytes) -> Response {
    // ComfyUI reads a JSON body and sets flags its queue worker acts on.
    match serde_json::from_slice::<Value>(&body) {
        Ok(_) => StatusCode::OK.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `GET /system_stats`: the server and its devices, in ComfyUI's shape.
async fn system_stats() -> Json<Value> {
    Json(json!({
        "system": {
            "os": "posix",
            "comfyui_version": "0.3.40",
            "python_version": "3.12.3",
            "embedded_python": false
        },
        "devices": [{
            "name": "cpu",
            "type": "cpu",
            "index": null,
            "vram_total": 0,
            "vram_free": 0
        }]
    }))
}

/// `GET /object_info`: every node class the server has.
async fn get_object_info(State(shared): State<Arc<Shared>>) -> Response {
    let removed = shared.lock().removed_classes.clone();
    Json(super::nodes::object_info(&removed, None)).into_response()
}

async fn get_object_info_class(
    State(shared): State<Arc<Shared>>,
    Path(node_class): Path<String>,
) -> Response {
    let removed = shared.lock().removed_classes.clone();
    Json(super::nodes::object_info(&removed, Some(&node_class))).into_response()
}

/// `subfolder` resolved inside its base folder, or `None` if it leaves it.
pub(super) fn inside(subfolder: &str) -> Option<String> {
    if subfolder.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in subfolder.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

async fn view(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(filename) = query.get("filename") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if filename.is_empty() || filename.starts_with('/') || filename.contains("..") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let kind = query.get("type").map_or("output", String::as_str);
    if !matches!(kind, "output" | "input" | "temp") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let subfolder = match query.get("subfolder") {
        None => String::new(),
        Some(sub) => match inside(sub) {
            Some(sub) => sub,
            None => return StatusCode::FORBIDDEN.into_response(),
        },
    };
    let name = filename.rsplit('/').next().unwrap_or(filename).to_owned();
    let file = shared
        .lock()
        .files
        .get(&(kind.to_owned(), subfolder, name.clone()))
        .cloned();
    match file {
        Some(bytes) => {
            let content_type = match name.rsplit('.').next() {
                Some("png") => "image/png",
                Some("webp") => "image/webp",
                Some("gif") => "image/gif",
                Some("jpg" | "jpeg") => "image/jpeg",
                Some("mp4") => "video/mp4",
                _ => "application/octet-stream",
            };
            (
                [
                    (header::CONTENT_TYPE, content_type.to_owned()),
                    (header::CONTENT_DISPOSITION, format!("filename=\"{name}\"")),
                ],
                bytes,
            )
                .into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subfolders_resolve_inside_or_not_at_all() {
        assert_eq!(inside("").as_deref(), Some(""));
        assert_eq!(inside("a/./b").as_deref(), Some("a/b"));
        assert_eq!(inside("a/../b").as_deref(), Some("b"));
        assert_eq!(inside("../a"), None);
        assert_eq!(inside("a/../../b"), None);
        assert_eq!(inside("/etc"), None);
    }
}
