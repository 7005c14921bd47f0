//! The audio routes: `POST /v1/audio/transcriptions` (multipart, in each of
//! OpenAI's response formats) and `POST /v1/audio/speech`, which answers a
//! WAV tone (or raw PCM) as long as the text asks.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{
    check_model, count_words, gate, invalid, openai_error, read_form, record, Fault, Shared,
    AUDIO_EXTENSIONS,
};

pub(super) async fn transcriptions(
    State(shared): State<Arc<Shared>>,
    request: Request,
) -> Response {
    let headers = request.headers().clone();
    let form = read_form(request).await;
    record(
        &shared,
        "/v1/audio/transcriptions",
        &headers,
        None,
        form.clone().unwrap_or_default(),
    );
    if let Err(r) = gate(&shared, &headers) {
        return *r;
    }
    let Some(form) = form else {
        return invalid("Could not parse multipart form", None, None);
    };
    let field = |name: &str| form.iter().find(|f| f.name == name);
    let Some(file) = field("file") else {
        return invalid(
            "Missing required parameter: 'file'.",
            Some("file"),
            Some("missing_required_parameter"),
        );
    };
    if let Err(r) = check_model(
        &shared,
        field("model").map(|f| Value::String(f.text())).as_ref(),
    ) {
        return *r;
    }
    let extension = file
        .file_name
        .as_deref()
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    if !AUDIO_EXTENSIONS.contains(&extension.as_str()) {
        return invalid(
            &format!("Invalid file format. Supported formats: {AUDIO_EXTENSIONS:?}"),
            Some("file"),
            Some("invalid_value"),
        );
    }
    if file.bytes.is_empty() {
        return invalid(
            "Audio file is too short.",
            Some("file"),
            Some("audio_too_short"),
        );
    }
    let language = field("language").map(|f| f.text());
    if let Some(l) = &language {
        if l.len() != 2 || !l.bytes().all(|b| b.is_ascii_lowercase()) {
            return invalid(
                &format!("Invalid language '{l}'. Language parameter must be specified in ISO-639-1 format."),
                Some("language"),
                Some("invalid_language_format"),
            );
        }
    }
    let format = field("response_format").map_or("json".to_owned(), |f| f.text());
    tokio::time::sleep(shared.options.token_delay).await;
    let text = shared.options.transcript.clone();
    match format.as_str() {
        "json" => Json(json!({ "text": text })).into_response(),
        "text" => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            text,
        )
            .into_response(),
        "verbose_json" => Json(json!({
            "task": "transcribe",
            "language": language.unwrap_or_else(|| "en".into()),
            "duration": 1.0,
            "text": text,
            "segments": [],
        }))
        .into_response(),
        "srt" => format!("1\n00:00:00,000 --> 00:00:01,000\n{text}\n\n").into_response(),
        "vtt" => format!("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{text}\n\n").into_response(),
        other => invalid(
            &format!("Invalid value for 'response_format': '{other}'."),
            Some("response_format"),
            Some("invalid_value"),
        ),
    }
}

pub(super) async fn speech(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    record(
        &shared,
        "/v1/audio/speech",
        &headers,
        json.clone(),
        Vec::new(),
    );
    if let Err(r) = gate(&shared, &headers) {
        return *r;
    }
    let Some(body) = json.filter(Value::is_object) else {
        return invalid(
            "We could not parse the JSON body of your request.",
            None,
            None,
        );
    };
    if let Err(r) = check_model(&shared, body.get("model")) {
        return *r;
    }
    let input = match body.get("input") {
        Some(Value::String(s)) if s.chars().count() > 4096 => {
            return invalid(
                &format!("Invalid 'input': string too long. Expected a string with maximum length 4096, but got a string with length {} instead.", s.chars().count()),
                Some("input"),
                Some("string_above_max_length"),
            )
        }
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return invalid(
                "Missing required parameter: 'input'.",
                Some("input"),
                Some("missing_required_parameter"),
            )
        }
    };
    let voice = body.get("voice").and_then(Value::as_str).unwrap_or("");
    if voice.is_empty() {
        return invalid(
            "Missing required parameter: 'voice'.",
            Some("voice"),
            Some("missing_required_parameter"),
        );
    }
    let speed = match body.get("speed") {
        None | Some(Value::Null) => 1.0,
        Some(v) => match v.as_f64() {
            Some(s) if (0.25..=4.0).contains(&s) => s,
            _ => {
                return invalid(
                    "Invalid 'speed': expected a number between 0.25 and 4.0.",
                    Some("speed"),
                    Some("invalid_value"),
                )
            }
        },
    };
    let format = body
        .get("response_format")
        .and_then(Value::as_str)
        .unwrap_or("mp3");
    if !matches!(format, "mp3" | "opus" | "aac" | "flac" | "wav" | "pcm") {
        return invalid(
            &format!("Invalid value for 'response_format': '{format}'."),
            Some("response_format"),
            Some("invalid_value"),
        );
    }
    tokio::time::sleep(shared.options.token_delay).await;
    if shared.options.fault == Some(Fault::Malformed) {
        // An MP3 frame where a WAV was asked for.
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "audio/mpeg")],
            Bytes::from_static(b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x00"),
        )
            .into_response();
    }
    let seconds = (count_words(&input) as f64 * 0.3 / speed).clamp(0.1, 30.0) as f32;
    match format {
        "wav" => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "audio/wav")],
            wav_tone(seconds, 24_000),
        )
            .into_response(),
        "pcm" => {
            let wav = wav_tone(seconds, 24_000);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "audio/pcm")],
                wav[44..].to_vec(),
            )
                .into_response()
        }
        // Encoders for the compressed formats are beyond a stand-in.
        other => openai_error(
            StatusCode::NOT_IMPLEMENTED,
            &format!("this stand-in renders only wav and pcm, not {other}"),
            "invalid_request_error",
            Some("response_format"),
            None,
        ),
    }
}

/// A 16-bit mono WAV of a quiet 440 Hz tone.
pub fn wav_tone(seconds: f32, rate: u32) -> Vec<u8> {
    let samples = (seconds * rate as f32) as u32;
    let data_len = samples * 2;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        let t = i as f32 / rate as f32;
        let v = (t * 440.0 * std::f32::consts::TAU).sin() * 2000.0;
        out.extend_from_slice(&(v as i16).to_le_bytes());
    }
    out
}
