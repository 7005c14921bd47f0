//! A whisper.cpp server stand-in: `POST /inference` and `GET /health`.
//!
//! It follows whisper.cpp's `examples/server`: `/inference` takes a
//! multipart form whose `file` is the audio (the other fields, all optional,
//! include `response_format`, `temperature` and `language`) and answers
//! `{"text"}` for `json` (the default), the bare text for `text`, and a
//! `verbose_json` object with segments. Requests are served one at a time,
//! as the server holds one model behind a mutex. Its errors are the
//! server's: `400 {"error": "no 'file' field in the request"}`,
//! `400 {"error": "failed to read audio data"}` for audio that is not WAV
//! (the stand-in, like a server started without `--convert`, reads only
//! WAV), and a `500` plain-text exception report for a field that does not
//! parse as a number. It records every form, and counts the requests whose
//! client hung up before the answer, as whisper.cpp aborts those.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::task::JoinHandle;

use super::openai::{read_form, FormField};

/// How the stand-in behaves.
#[derive(Clone, Debug)]
pub struct WhisperOptions {
    /// The text of every transcription.
    pub transcript: String,
    /// How long a transcription takes.
    pub delay: Duration,
    /// Answer `/health` with 503 `{"status": "loading model"}`.
    pub loading: bool,
    /// Answer transcriptions with 200 and a body that is not JSON.
    pub malformed: bool,
}

impl Default for WhisperOptions {
    fn default() -> Self {
        Self {
            transcript: " And so my fellow Americans, ask not what your country can do for you."
                .into(),
            delay: Duration::from_millis(1),
            loading: false,
            malformed: false,
        }
    }
}

struct Shared {
    options: WhisperOptions,
    forms: Mutex<Vec<Vec<FormField>>>,
    model: tokio::sync::Mutex<()>,
    abandoned: AtomicUsize,
}

/// A running whisper.cpp stand-in; stops when dropped.
pub struct WhisperStandIn {
    url: String,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl WhisperStandIn {
    pub async fn start(options: WhisperOptions) -> Self {
        let shared = Arc::new(Shared {
            options,
            forms: Mutex::new(Vec::new()),
            model: tokio::sync::Mutex::new(()),
            abandoned: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/inference", post(inference))
            .route("/health", get(health))
            .fallback(|request: Request| async move {
                (
                    StatusCode::NOT_FOUND,
                    [(header::CONTENT_TYPE, "text/plain")],
                    format!("File Not Found ({})", request.uri().path()),
                )
            })
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            shared,
            server,
        }
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Every form received, in order.
    pub fn forms(&self) -> Vec<Vec<FormField>> {
        self.shared
            .forms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Requests whose client hung up before the answer.
    pub fn abandoned(&self) -> usize {
        self.shared.abandoned.load(Ordering::SeqCst)
    }

    /// Waits until a request was abandoned (at most `limit`).
    pub async fn wait_abandoned(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.abandoned() == 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

impl Drop for WhisperStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    if shared.options.loading {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "loading model" })),
        )
            .into_response()
    } else {
        Json(json!({ "status": "ok" })).into_response()
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Counts a request as abandoned unless it answered.
struct Watch<'a> {
    shared: &'a Shared,
    answered: bool,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.shared.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn inference(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let form = read_form(request).await.unwrap_or_default();
    shared
        .forms
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(form.clone());
    let _model = shared.model.lock().await;
    let field = |name: &str| form.iter().find(|f| f.name == name);
    let Some(file) = field("file") else {
        return error(StatusCode::BAD_REQUEST, "no 'file' field in the request");
    };
    for number in ["temperature", "temperature_inc"] {
        if let Some(f) = field(number) {
            if f.text().trim().parse::<f32>().is_err() {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, "text/plain")],
                    "500 Internal Server Error\nstof",
                )
                    .into_response();
            }
        }
    }
    let b = &file.bytes;
    let is_wav = b.len() >= 44 && &b[0..4] == b"RIFF" && &b[8..12] == b"WAVE";
    if !is_wav {
        return error(StatusCode::BAD_REQUEST, "failed to read audio data");
    }
    let mut watch = Watch {
        shared: &shared,
        answered: false,
    };
    tokio::time::sleep(shared.options.delay).await;
    watch.answered = true;
    drop(watch);
    if shared.options.malformed {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"text\": \"unterminated",
        )
            .into_response();
    }
    let text = shared.options.transcript.clone();
    let language = field("language").map_or("en".to_owned(), |f| f.text());
    match field("response_format")
        .map_or("json".to_owned(), |f| f.text())
        .as_str()
    {
        "text" => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            format!("{text}\n"),
        )
            .into_response(),
        "verbose_json" => Json(json!({
            "task": "transcribe",
            "language": if language == "auto" { "en".to_owned() } else { language },
            "duration": wav_seconds(b),
            "text": text,
            "segments": [{ "id": 0, "text": text, "start": 0.0, "end": wav_seconds(b) }],
        }))
        .into_response(),
        _ => Json(json!({ "text": text })).into_response(),
    }
}

/// Length of a 16-bit WAV, from its header (44-byte canonical layout).
fn wav_seconds(b: &[u8]) -> f64 {
    let rate = u32::from_le_bytes([b[24], b[25], b[26], b[27]]).max(1);
    let channels = u16::from_le_bytes([b[22], b[23]]).max(1);
    (b.len() - 44) as f64 / (f64::from(rate) * 2.0 * f64::from(channels))
}
