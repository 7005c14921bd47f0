//! Files on the public API: inputs frontends upload (`POST /api/v1/inputs`)
//! and the artifacts jobs made (`GET /api/v1/artifacts/{id}`), each with the
//! frontend's key. A frontend reads only artifacts of its own jobs and passes
//! only its own inputs to jobs; a web key only its own bot's (see
//! [`super::jobs::own_bot_only`]).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use tessera_api::public::InputUploaded;
use tessera_api::ApiErrorBody;
use tessera_core::{ArtifactId, InputId};

use super::auth::Frontend;
use super::error::ApiError;
use super::extract::ApiPath;
use super::{now_ms, AppState};
use crate::artifacts::input_key;
use crate::store::InputRecord;

/// Upload an input (the audio of a speech-to-text job); the body is the file.
#[utoipa::path(
    post, path = "/api/v1/inputs", tag = "files",
    request_body(content = Vec<u8>, content_type = "audio/*", description = "The audio file"),
    responses(
        (status = 201, body = InputUploaded),
        (status = 401, body = ApiErrorBody),
        (status = 413, description = "Larger than artifacts.max_input_bytes", body = ApiErrorBody),
        (status = 415, description = "Not an audio content type", body = ApiErrorBody),
        (status = 422, description = "Empty", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn upload_input(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let plausible = content_type.strip_prefix("audio/").is_some_and(|sub| {
        (1..=40).contains(&sub.len())
            && sub
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'+'))
    });
    if !plausible {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "inputs are audio files: send Content-Type audio/wav, audio/ogg, audio/mpeg...",
        ));
    }
    if body.is_empty() {
        return Err(ApiError::invalid(
            "empty_input",
            "the uploaded file is empty",
        ));
    }
    if body.len() as u64 > state.config.artifacts.max_input_bytes {
        return Err(too_large(state.config.artifacts.max_input_bytes));
    }
    let id = InputId::generate();
    let record = InputRecord {
        storage_key: input_key(&id),
        id,
        frontend: key.frontend,
        bot_id: key.bot_id.clone(),
        content_type,
        size: body.len() as u64,
        created_at: now_ms(),
    };
    state.blobs.put(&record.storage_key, body).await?;
    state.store.insert_input(&record).await?;
    Ok((
        StatusCode::CREATED,
        Json(InputUploaded {
            input_id: record.id,
            content_type: record.content_type,
            size: record.size,
        }),
    )
        .into_response())
}

pub(crate) fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body is larger than the {limit} bytes allowed"),
    )
}

/// Download an artifact of one of this frontend's jobs (for a web key, of one
/// of its own bot's jobs).
#[utoipa::path(
    get, path = "/api/v1/artifacts/{artifact_id}", tag = "files",
    params(("artifact_id" = String, Path, description = "`art_...`, from a job's `artifacts`", pattern = "^art_[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    responses(
        (status = 200, description = "The file, with its content type"),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn artifact(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiPath(artifact_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found("artifact_not_found", "no such artifact");
    let id: ArtifactId = artifact_id.parse().map_err(|_| not_found())?;
    let record = state
        .store
        .get_artifact(&id)
        .await?
        .filter(|a| {
            a.frontend == key.frontend
                && super::jobs::own_bot_only(&key).is_none_or(|bot| bot == a.bot_id)
        })
        .ok_or_else(not_found)?;
    let bytes = state.blobs.get(&record.storage_key).await?;
    let disposition = format!("inline; filename=\"{}.{}\"", record.id, record.format);
    let mut resp = Body::from(bytes).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&record.format)),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    Ok(resp)
}

/// The media type of an artifact format.
pub fn content_type(format: &str) -> &'static str {
    match format {
        "png" => "image/png",
        "apng" => "image/apng",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "flac" => "audio/flac",
        "txt" => "text/plain; charset=utf-8",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}
