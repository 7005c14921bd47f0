//! The gateway: a WebSocket speaking Discord's opcodes (HELLO, IDENTIFY and
//! READY, RESUME and RESUMED, heartbeats), with its close codes, sessions
//! whose dispatches are buffered for a resume, and connections a test drops
//! on purpose.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::rest::{application_flags, current_user_json};
use super::state::{strip_bot, Outgoing, Records, Session, Shared};
use super::types::{GatewayConnection, GatewayDrop};
use super::{DiscordStandIn, DEFINED_INTENTS, PRIVILEGED_INTENTS};

impl DiscordStandIn {
    /// Ends the bot's newest live gateway connection with close code 4000
    /// (resumable); false if it had none.
    pub fn disconnect(&self, token: &str) -> bool {
        self.drop_connection(token, GatewayDrop::Close(4000))
    }

    /// Ends the bot's newest live gateway connection as told.
    pub fn drop_connection(&self, token: &str, how: GatewayDrop) -> bool {
        let token = strip_bot(token);
        let mut state = self.shared.lock();
        let Some((session_id, _)) = newest_session(&state, token, true) else {
            return false;
        };
        let session = state.sessions.get_mut(&session_id).expect("session");
        let (_, tx) = session.conn.clone().expect("live");
        match how {
            GatewayDrop::Close(code) => {
                session.conn = None;
                let _ = tx.send(Outgoing::Close(code, "Disconnected by the stand-in"));
            }
            GatewayDrop::Reconnect => {
                let _ = tx.send(Outgoing::Text(op(7, Value::Null)));
            }
            GatewayDrop::InvalidSession { resumable } => {
                if !resumable {
                    state.sessions.remove(&session_id);
                }
                let _ = tx.send(Outgoing::Text(op(9, json!(resumable))));
            }
        }
        true
    }
}

fn op(code: u8, d: Value) -> String {
    json!({ "op": code, "d": d, "s": null, "t": null }).to_string()
}

/// The newest session of a bot (with a live connection, if `live`).
pub(super) fn newest_session(
    state: &Records,
    token: &str,
    live: bool,
) -> Option<(String, Instant)> {
    state
        .sessions
        .iter()
        .filter(|(_, s)| s.token == token && (!live || s.conn.is_some()))
        .max_by_key(|(_, s)| s.started)
        .map(|(id, s)| (id.clone(), s.started))
}

/// Appends a dispatch to a session and sends it if it is connected.
pub(super) fn dispatch(state: &mut Records, session_id: &str, t: &str, d: &Value) -> u64 {
    let session = state.sessions.get_mut(session_id).expect("session");
    session.seq += 1;
    let seq = session.seq;
    let text = json!({ "op": 0, "s": seq, "t": t, "d": d }).to_string();
    session.events.push((seq, text.clone()));
    if let Some((_, tx)) = &session.conn {
        let _ = tx.send(Outgoing::Text(text));
    }
    seq
}

pub(super) async fn gateway(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Response {
    let path = uri.path().to_owned();
    let raw_query = uri.query().unwrap_or("").to_owned();
    if query.get("encoding").is_some_and(|e| e != "json") || query.contains_key("compress") {
        return (
            StatusCode::BAD_REQUEST,
            "the stand-in speaks uncompressed JSON only (no compress, encoding=json)",
        )
            .into_response();
    }
    let version_ok = query.get("v").map(String::as_str) == Some("10");
    ws.on_upgrade(move |socket| connection(shared, socket, path, raw_query, version_ok))
}

struct Conn {
    pub(super) id: u64,
    pub(super) index: usize,
    pub(super) token: Option<String>,
    session: Option<String>,
}

enum Step {
    Continue,
    Close(u16, &'static str),
}

async fn connection(
    shared: Arc<Shared>,
    socket: WebSocket,
    path: String,
    query: String,
    version_ok: bool,
) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    let index = {
        let mut state = shared.lock();
        state.connections.push(GatewayConnection {
            path,
            query,
            token: None,
            intents: None,
            closed_with: None,
        });
        state.connections.len() - 1
    };
    shared.changed();
    let mut conn = Conn {
        id: shared.next_conn.fetch_add(1, Ordering::SeqCst),
        index,
        token: None,
        session: None,
    };
    let interval = shared.options.heartbeat_interval;
    let grace = interval * 2 + Duration::from_secs(2);
    let mut deadline = tokio::time::Instant::now() + grace;
    let close = |code: u16, reason: &'static str| {
        WsMessage::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    let mut closed_with = None;
    if !version_ok {
        let _ = sink.send(close(4012, "Invalid API version")).await;
        closed_with = Some(4012);
    } else {
        let hello = op(
            10,
            json!({ "heartbeat_interval": interval.as_millis() as u64 }),
        );
        if sink.send(WsMessage::Text(hello.into())).await.is_ok() {
            loop {
                tokio::select! {
                    incoming = stream.next() => {
                        let text = match incoming {
                            Some(Ok(WsMessage::Text(t))) => t.to_string(),
                            Some(Ok(WsMessage::Binary(_))) => {
                                let _ = sink.send(close(4002, "Decode error")).await;
                                closed_with = Some(4002);
                                break;
                            }
                            Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                            Some(Ok(_)) => continue,
                        };
                        deadline = tokio::time::Instant::now() + grace;
                        match handle_payload(&shared, &mut conn, &tx, &text) {
                            Step::Continue => {}
                            Step::Close(code, reason) => {
                                let _ = sink.send(close(code, reason)).await;
                                closed_with = Some(code);
                                break;
                            }
                        }
                    }
                    outgoing = rx.recv() => match outgoing {
                        Some(Outgoing::Text(text)) => {
                            if sink.send(WsMessage::Text(text.into())).await.is_err() {
                                break;
                            }
                        }
                        Some(Outgoing::Close(code, reason)) => {
                            let _ = sink.send(close(code, reason)).await;
                            closed_with = Some(code);
                            break;
                        }
                        None => break,
                    },
                    () = tokio::time::sleep_until(deadline) => {
                        let _ = sink.send(close(4009, "Session timed out")).await;
                        closed_with = Some(4009);
                        break;
                    }
                }
            }
        }
    }
    {
        let mut state = shared.lock();
        if let Some(session) = conn
            .session
            .as_ref()
            .and_then(|s| state.sessions.get_mut(s))
        {
            if session.conn.as_ref().is_some_and(|(id, _)| *id == conn.id) {
                session.conn = None;
            }
        }
        if closed_with.is_some() {
            state.connections[conn.index].closed_with = closed_with;
        }
    }
    shared.changed();
    // Let the client read the close frame before the socket goes.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}

fn handle_payload(
    shared: &Shared,
    conn: &mut Conn,
    tx: &mpsc::UnboundedSender<Outgoing>,
    text: &str,
) -> Step {
    if text.len() > 4096 {
        return Step::Close(4002, "Decode error");
    }
    let Ok(payload) = serde_json::from_str::<Value>(text) else {
        return Step::Close(4002, "Decode error");
    };
    let Some(code) = payload["op"].as_u64() else {
        return Step::Close(4002, "Decode error");
    };
    let d = &payload["d"];
    match code {
        1 => {
            if let Some(token) = &conn.token {
                if let Some(bot) = shared.lock().bots.get_mut(token) {
                    bot.heartbeats += 1;
                }
            }
            shared.changed();
            let _ = tx.send(Outgoing::Text(op(11, Value::Null)));
            Step::Continue
        }
        2 => identify(shared, conn, tx, d),
        6 => resume(shared, conn, tx, d),
        3 | 4 | 8 | 31 => {
            if conn.session.is_none() {
                Step::Close(4003, "Not authenticated")
            } else {
                Step::Continue
            }
        }
        _ => Step::Close(4001, "Unknown opcode"),
    }
}

fn identify(
    shared: &Shared,
    conn: &mut Conn,
    tx: &mpsc::UnboundedSender<Outgoing>,
    d: &Value,
) -> Step {
    if conn.session.is_some() {
        return Step::Close(4005, "Already authenticated");
    }
    let (Some(token), Some(intents), true) = (
        d["token"].as_str(),
        d["intents"].as_u64(),
        d["properties"].is_object(),
    ) else {
        return Step::Close(4002, "Decode error");
    };
    let token = strip_bot(token).to_owned();
    let mut state = shared.lock();
    let Some(bot) = state.bots.get(&token).map(|b| b.bot.clone()) else {
        return Step::Close(4004, "Authentication failed");
    };
    if intents & !DEFINED_INTENTS != 0 {
        return Step::Close(4013, "Invalid intent(s)");
    }
    if intents & PRIVILEGED_INTENTS & !bot.privileged_intents != 0 {
        return Step::Close(4014, "Disallowed intent(s)");
    }
    let shard = d["shard"].as_array().and_then(|s| {
        let id = s.first()?.as_u64()?;
        let count = s.get(1)?.as_u64()?;
        Some((id, count))
    });
    if shard.is_some_and(|(id, count)| count == 0 || id >= count) {
        return Step::Close(4010, "Invalid shard");
    }
    let session_id = hex::encode(rand::random::<[u8; 16]>());
    state.sessions.insert(
        session_id.clone(),
        Session {
            token: token.clone(),
            seq: 0,
            events: Vec::new(),
            conn: Some((conn.id, tx.clone())),
            started: Instant::now(),
        },
    );
    if let Some(b) = state.bots.get_mut(&token) {
        b.identifies += 1;
    }
    let record = &mut state.connections[conn.index];
    record.token = Some(token.clone());
    record.intents = Some(intents);
    let mut ready = json!({
        "v": 10,
        "user": current_user_json(&bot),
        "guilds": [],
        "session_id": session_id,
        "resume_gateway_url": format!("ws://127.0.0.1:{}/gateway-resume", shared.port),
        "application": { "id": bot.application_id.to_string(), "flags": application_flags(&bot) },
        "private_channels": [],
        "relationships": [],
    });
    if let Some((id, count)) = shard {
        ready["shard"] = json!([id, count]);
    }
    dispatch(&mut state, &session_id, "READY", &ready);
    drop(state);
    conn.token = Some(token);
    conn.session = Some(session_id);
    shared.changed();
    Step::Continue
}

fn resume(
    shared: &Shared,
    conn: &mut Conn,
    tx: &mpsc::UnboundedSender<Outgoing>,
    d: &Value,
) -> Step {
    if conn.session.is_some() {
        return Step::Close(4005, "Already authenticated");
    }
    let (Some(token), Some(session_id), Some(seq)) = (
        d["token"].as_str(),
        d["session_id"].as_str(),
        d["seq"].as_u64(),
    ) else {
        return Step::Close(4002, "Decode error");
    };
    let token = strip_bot(token).to_owned();
    let mut state = shared.lock();
    if !state.bots.contains_key(&token) {
        return Step::Close(4004, "Authentication failed");
    }
    let valid = state
        .sessions
        .get(session_id)
        .is_some_and(|s| s.token == token && seq <= s.seq);
    if !valid {
        let _ = tx.send(Outgoing::Text(op(9, json!(false))));
        return Step::Continue;
    }
    let session = state.sessions.get_mut(session_id).expect("session");
    // A connection still attached to the session is superseded.
    if let Some((_, old)) = session.conn.take() {
        let _ = old.send(Outgoing::Close(4000, "Session resumed elsewhere"));
    }
    for (_, text) in session.events.iter().filter(|(s, _)| *s > seq) {
        let _ = tx.send(Outgoing::Text(text.clone()));
    }
    session.conn = Some((conn.id, tx.clone()));
    dispatch(&mut state, session_id, "RESUMED", &Value::Null);
    if let Some(b) = state.bots.get_mut(&token) {
        b.resumes += 1;
    }
    state.connections[conn.index].token = Some(token.clone());
    drop(state);
    conn.token = Some(token);
    conn.session = Some(session_id.to_owned());
    shared.changed();
    Step::Continue
}
