//! The `/ws?clientId=` socket: a client receives `status` first, then the
//! messages of the prompts it queued; a test may refuse or drop sockets.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::mpsc;

use super::routes::uuid;
use super::{Out, Shared};

pub(super) async fn websocket(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if shared.lock().faults.refuse_ws {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let sid = query
        .get("clientId")
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| uuid().replace('-', ""));
    upgrade.on_upgrade(move |socket| serve_socket(shared, sid, socket))
}

async fn serve_socket(shared: Arc<Shared>, sid: String, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    // A reconnecting client replaces its old socket.
    shared.lock().sockets.insert(sid.clone(), tx.clone());
    let hello = json!({
        "type": "status",
        "data": { "status": { "exec_info": { "queue_remaining": shared.queue_remaining() } }, "sid": sid },
    });
    if socket
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_ok()
    {
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(Out::Json(v)) => {
                        if socket.send(Message::Text(v.to_string().into())).await.is_err() {
                            break;
                        }
                    }
                    Some(Out::Close) | None => {
                        let _ = socket.send(Message::Close(None)).await;
                        break;
                    }
                },
                incoming = socket.recv() => match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    let mut state = shared.lock();
    if state
        .sockets
        .get(&sid)
        .is_some_and(|current| current.same_channel(&tx))
    {
        state.sockets.remove(&sid);
    }
}
