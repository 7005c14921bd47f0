//! Answering interactions: the initial callback (once, within the deadline,
//! of an allowed type) and the webhook routes an interaction token opens for
//! its lifetime: follow-ups, and reading, editing and deleting the original
//! response and follow-ups.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::messages::{build_message, interaction_message_json};
use super::rest::{error, error_at, form_error, read_payload, Payload};
use super::state::Shared;
use super::types::{CallbackRecord, MessageRecord, Rejection};
use super::{FLAG_EPHEMERAL, FLAG_LOADING};

/// Records a refusal on an interaction and returns it.
fn reject(
    shared: &Shared,
    id: u64,
    route: &str,
    status: StatusCode,
    code: u64,
    message: &str,
) -> Response {
    if let Some(i) = shared.lock().interactions.get_mut(&id) {
        i.record.rejected.push(Rejection {
            route: route.to_owned(),
            status: status.as_u16(),
            code,
        });
    }
    shared.changed();
    error(status, code, message)
}

/// Applies an initial response; the created original message, if any.
pub(super) fn apply_callback(
    shared: &Shared,
    id: u64,
    token: &str,
    kind: u64,
    payload: Payload,
    via_http_answer: bool,
    route: &str,
) -> Result<Option<MessageRecord>, Box<Response>> {
    let (interaction_kind, channel_id, dispatched, acknowledged) = {
        let state = shared.lock();
        match state.interactions.get(&id) {
            Some(i) if i.record.token == token => (
                i.record.kind,
                i.record.channel_id.unwrap_or(0),
                i.dispatched,
                i.record.callback.is_some(),
            ),
            _ => {
                return Err(Box::new(error(
                    StatusCode::NOT_FOUND,
                    10062,
                    "Unknown interaction",
                )))
            }
        }
    };
    let after = dispatched.elapsed();
    if after > shared.options.ack_deadline {
        return Err(Box::new(reject(
            shared,
            id,
            route,
            StatusCode::NOT_FOUND,
            10062,
            "Unknown interaction",
        )));
    }
    if acknowledged {
        return Err(Box::new(reject(
            shared,
            id,
            route,
            StatusCode::BAD_REQUEST,
            40060,
            "Interaction has already been acknowledged.",
        )));
    }
    let allowed: &[u64] = if interaction_kind == 1 {
        &[1]
    } else {
        &[4, 5, 9]
    };
    if !allowed.contains(&kind) {
        let errors = error_at(
            &["type".to_owned()],
            "INTERACTION_RESPONSE_TYPE_INVALID",
            "Invalid interaction response type",
        );
        if let Some(i) = shared.lock().interactions.get_mut(&id) {
            i.record.rejected.push(Rejection {
                route: route.to_owned(),
                status: 400,
                code: 50035,
            });
        }
        return Err(Box::new(form_error(errors)));
    }
    let data = payload.json.clone();
    let original = match kind {
        4 => {
            let mut payload = payload;
            if payload.json.is_null() {
                payload.json = json!({});
            }
            Some(build_message(shared, payload, None, channel_id, false)?)
        }
        5 => {
            let flags = data["flags"].as_u64().unwrap_or(0) & FLAG_EPHEMERAL;
            Some(MessageRecord {
                id: shared.snowflake(),
                channel_id,
                content: String::new(),
                embeds: Vec::new(),
                components: Vec::new(),
                attachments: Vec::new(),
                flags: flags | FLAG_LOADING,
                edits: 0,
                history: vec![String::new()],
                deleted: false,
            })
        }
        _ => None,
    };
    {
        let mut state = shared.lock();
        let i = state.interactions.get_mut(&id).expect("interaction");
        i.record.callback = Some(CallbackRecord {
            kind,
            data,
            after,
            via_http_answer,
        });
        i.record.original.clone_from(&original);
    }
    shared.changed();
    Ok(original)
}

pub(super) async fn callback(
    State(shared): State<Arc<Shared>>,
    Path((id, token)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Response {
    let route = format!("POST /interactions/{id}/.../callback");
    let Ok(id) = id.parse::<u64>() else {
        return error(StatusCode::NOT_FOUND, 10062, "Unknown interaction");
    };
    let payload = match read_payload(request).await {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let Some(kind) = payload.json["type"].as_u64() else {
        return form_error(error_at(
            &["type".to_owned()],
            "BASE_TYPE_REQUIRED",
            "This field is required",
        ));
    };
    let data = payload.json.get("data").cloned().unwrap_or(Value::Null);
    let inner = Payload {
        json: data,
        files: payload.files,
    };
    let original = match apply_callback(&shared, id, &token, kind, inner, false, &route) {
        Ok(original) => original,
        Err(response) => return *response,
    };
    if query.get("with_response").map(String::as_str) != Some("true") {
        return StatusCode::NO_CONTENT.into_response();
    }
    let mut answer = json!({
        "interaction": {
            "id": id.to_string(),
            "type": 2,
            "response_message_id": original.as_ref().map(|m| m.id.to_string()),
            "response_message_loading": original.as_ref().is_some_and(MessageRecord::loading),
            "response_message_ephemeral": original.as_ref().is_some_and(MessageRecord::ephemeral),
        },
    });
    if let Some(message) = &original {
        answer["resource"] = json!({
            "type": kind,
            "message": interaction_message_json(&shared, id, message),
        });
    }
    Json(answer).into_response()
}

/// The interaction a webhook route's application and token name.
fn webhook_interaction(shared: &Shared, app: &str, token: &str) -> Result<u64, Box<Response>> {
    let state = shared.lock();
    let Some(&id) = state.by_token.get(token) else {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            50027,
            "Invalid Webhook Token",
        )));
    };
    let interaction = &state.interactions[&id];
    if app.parse::<u64>().ok() != Some(interaction.record.application_id) {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            10015,
            "Unknown Webhook",
        )));
    }
    if interaction.dispatched.elapsed() > shared.options.token_lifetime {
        drop(state);
        return Err(Box::new(reject(
            shared,
            id,
            "webhook",
            StatusCode::UNAUTHORIZED,
            50027,
            "Invalid Webhook Token",
        )));
    }
    Ok(id)
}

pub(super) async fn followup(
    State(shared): State<Arc<Shared>>,
    Path((app, token)): Path<(String, String)>,
    request: Request,
) -> Response {
    let route = "POST /webhooks/{app}/{token}";
    let id = match webhook_interaction(&shared, &app, &token) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let (acknowledged, channel_id) = {
        let state = shared.lock();
        let i = &state.interactions[&id].record;
        (i.callback.is_some(), i.channel_id.unwrap_or(0))
    };
    if !acknowledged {
        return reject(
            &shared,
            id,
            route,
            StatusCode::NOT_FOUND,
            10015,
            "Unknown Webhook",
        );
    }
    let payload = match read_payload(request).await {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let message = match build_message(&shared, payload, None, channel_id, false) {
        Ok(m) => m,
        Err(response) => {
            note_rejection(&shared, id, route, &response);
            return *response;
        }
    };
    shared
        .lock()
        .interactions
        .get_mut(&id)
        .expect("interaction")
        .record
        .followups
        .push(message.clone());
    shared.changed();
    Json(interaction_message_json(&shared, id, &message)).into_response()
}

fn note_rejection(shared: &Shared, id: u64, route: &str, response: &Response) {
    if let Some(i) = shared.lock().interactions.get_mut(&id) {
        i.record.rejected.push(Rejection {
            route: route.to_owned(),
            status: response.status().as_u16(),
            code: 0,
        });
    }
    shared.changed();
}

/// The webhook message a route names: the original or a follow-up.
fn find_webhook_message(shared: &Shared, id: u64, message: &str) -> Option<MessageRecord> {
    let state = shared.lock();
    let record = &state.interactions[&id].record;
    if message == "@original" {
        return record.original.clone().filter(|m| !m.deleted);
    }
    let message_id: u64 = message.parse().ok()?;
    record
        .original
        .iter()
        .chain(&record.followups)
        .find(|m| m.id == message_id && !m.deleted)
        .cloned()
}

fn store_webhook_message(shared: &Shared, id: u64, message: MessageRecord) {
    let mut state = shared.lock();
    let record = &mut state.interactions.get_mut(&id).expect("interaction").record;
    if record.original.as_ref().is_some_and(|m| m.id == message.id) {
        record.original = Some(message);
    } else if let Some(m) = record.followups.iter_mut().find(|m| m.id == message.id) {
        *m = message;
    }
    drop(state);
    shared.changed();
}

pub(super) async fn get_webhook_message(
    State(shared): State<Arc<Shared>>,
    Path((app, token, message)): Path<(String, String, String)>,
) -> Response {
    let id = match webhook_interaction(&shared, &app, &token) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    match find_webhook_message(&shared, id, &message) {
        Some(m) => Json(interaction_message_json(&shared, id, &m)).into_response(),
        None => error(StatusCode::NOT_FOUND, 10008, "Unknown Message"),
    }
}

pub(super) async fn edit_webhook_message(
    State(shared): State<Arc<Shared>>,
    Path((app, token, message)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    let route = format!("PATCH /webhooks/{{app}}/{{token}}/messages/{message}");
    let id = match webhook_interaction(&shared, &app, &token) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let Some(existing) = find_webhook_message(&shared, id, &message) else {
        return reject(
            &shared,
            id,
            &route,
            StatusCode::NOT_FOUND,
            10008,
            "Unknown Message",
        );
    };
    let payload = match read_payload(request).await {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let channel_id = existing.channel_id;
    let edited = match build_message(&shared, payload, Some(&existing), channel_id, false) {
        Ok(m) => m,
        Err(response) => {
            note_rejection(&shared, id, &route, &response);
            return *response;
        }
    };
    store_webhook_message(&shared, id, edited.clone());
    Json(interaction_message_json(&shared, id, &edited)).into_response()
}

pub(super) async fn delete_webhook_message(
    State(shared): State<Arc<Shared>>,
    Path((app, token, message)): Path<(String, String, String)>,
) -> Response {
    let id = match webhook_interaction(&shared, &app, &token) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let Some(mut existing) = find_webhook_message(&shared, id, &message) else {
        return error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
    };
    existing.deleted = true;
    store_webhook_message(&shared, id, existing);
    StatusCode::NO_CONTENT.into_response()
}
