//! Files on the public API: inputs frontends upload (`POST /api/v1/inputs`)
//! and the artifacts jobs made (`GET /api/v1/artifacts/{id}`), each with the
//! frontend's key. A frontend reads only artifacts of its own jobs and passes
//! only its own inputs to jobs; a web key only its own bot's (see
//! [`super::scope::own_bot_only`]). A frontend that may read an artifact may
//! also ask for a download link to it (`POST .../download-link`), which the
//! website redeems for anyone holding it (`GET /api/v1/download-links/{token}`,
//! web keys only; see [`crate::links`]). An artifact withheld by the output
//! policy (see [`super::withhold`]) is refused to every frontend key, 403
//! `content_withheld`; the admin reviews it (`GET /api/admin/artifacts/{id}`
//! and `.../content`).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use tessera_api::admin::{ArtifactReview, ArtifactReviewList};
use tessera_api::public::{DownloadLink, InputUploaded};
use tessera_api::ApiErrorBody;
use tessera_api::ErrorCode;
use tessera_core::{ArtifactId, InputId};

use super::auth::{Admin, Frontend};
use super::error::ApiError;
use super::extract::ApiPath;
use super::scope::own_bot_only;
use super::wire::parse_job_id;
use super::AppState;
use crate::artifacts::input_key;
use crate::lifecycle::now_ms;
use crate::links::LinkError;
use crate::store::{ArtifactRecord, InputRecord};

/// Upload an input (the audio of a speech-to-text job); the body is the file.
#[utoipa::path(
    post, path = "/api/v1/inputs", tag = "files",
    request_body(content = tessera_api::schema::Binary, content_type = "audio/*", description = "The audio file"),
    responses(
        (status = 201, body = InputUploaded),
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
            ErrorCode::UnsupportedMediaType,
            "inputs are audio files: send Content-Type audio/wav, audio/ogg, audio/mpeg...",
        ));
    }
    if body.is_empty() {
        return Err(ApiError::invalid(
            ErrorCode::EmptyInput,
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
        ErrorCode::PayloadTooLarge,
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
        (status = 206, description = "The part of the file a `Range: bytes=...` header asked for, with `Content-Range`"),
        (status = 403, description = "`content_withheld`: kept for review, not delivered", body = ApiErrorBody),
        (status = 404, body = ApiErrorBody),
        (status = 416, body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn artifact(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiPath(artifact_id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let record = visible_artifact(&state, &key, &artifact_id).await?;
    serve(&state, &record, &headers).await
}

/// The artifact `artifact_id` names, if `key` may read it (404 otherwise,
/// so ids do not leak).
async fn visible_artifact(
    state: &AppState,
    key: &crate::store::ApiKeyRecord,
    artifact_id: &str,
) -> Result<ArtifactRecord, ApiError> {
    let not_found = || ApiError::not_found(ErrorCode::ArtifactNotFound, "no such artifact");
    let id: ArtifactId = artifact_id.parse().map_err(|_| not_found())?;
    state
        .store
        .get_artifact(&id)
        .await?
        .filter(|a| {
            a.frontend == key.frontend && own_bot_only(key).is_none_or(|bot| *bot == a.bot_id)
        })
        .ok_or_else(not_found)
        .and_then(delivered)
}

/// The artifact, unless it is withheld for review.
fn delivered(record: ArtifactRecord) -> Result<ArtifactRecord, ApiError> {
    if record.withheld {
        return Err(ApiError::forbidden(
            ErrorCode::ContentWithheld,
            "this output was withheld: it showed content not allowed here, and is kept for review only",
        ));
    }
    Ok(record)
}

/// Make a download link to an artifact this key may read: a signed address
/// on the website that needs no key or account and works for
/// `artifacts.link_lifetime_secs`. Bots send it for outputs their platform
/// will not take.
#[utoipa::path(
    post, path = "/api/v1/artifacts/{artifact_id}/download-link", tag = "files",
    params(("artifact_id" = String, Path, description = "`art_...`, from a job's `artifacts`", pattern = "^art_[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    responses(
        (status = 201, body = DownloadLink),
        (status = 401, body = ApiErrorBody),
        (status = 403, description = "`content_withheld`: kept for review, not delivered", body = ApiErrorBody),
        (status = 404, description = "No such artifact, or not this key's to read", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn download_link(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiPath(artifact_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let record = visible_artifact(&state, &key, &artifact_id).await?;
    let (token, expires) = state.links.sign(&record.id, now_ms().max(0) as u64);
    let expires_at =
        chrono::DateTime::from_timestamp_millis(i64::try_from(expires).unwrap_or(i64::MAX))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    Ok((
        StatusCode::CREATED,
        Json(DownloadLink {
            path: format!("/d/{token}"),
            token,
            expires_at,
        }),
    )
        .into_response())
}

/// Download the artifact a download link names (the website serves `/d/...`
/// with this). The link's signature is the permission: any web key may
/// redeem any link, and no other kind of key may.
#[utoipa::path(
    get, path = "/api/v1/download-links/{token}", tag = "files",
    params(("token" = String, Path, description = "A download link's `token`")),
    responses(
        (status = 200, description = "The file, with its content type"),
        (status = 206, description = "The part of the file a `Range: bytes=...` header asked for, with `Content-Range`"),
        (status = 401, body = ApiErrorBody),
        (status = 403, description = "`download_link_invalid`: not a link this scheduler signed (forged, altered, cut short); `forbidden_frontend`: not a web key; `content_withheld`: the artifact is kept for review, not delivered", body = ApiErrorBody),
        (status = 404, description = "`artifact_not_found`: the link is genuine but its artifact is gone", body = ApiErrorBody),
        (status = 410, description = "`download_link_expired`: the link is past its lifetime", body = ApiErrorBody),
        (status = 416, body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn redeem_download_link(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiPath(token): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if key.frontend != tessera_core::Platform::Web {
        return Err(ApiError::forbidden(
            ErrorCode::ForbiddenFrontend,
            format!(
                "download links are served by the website: a {} key cannot redeem them",
                key.frontend
            ),
        ));
    }
    redeem(&state, &token, &headers).await
}

/// The artifact a download link names, served: the link's signature is the
/// permission (the website's `/d/...` and the gateway's image addresses).
pub(crate) async fn redeem(
    state: &AppState,
    token: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let id = match state.links.verify(token, now_ms().max(0) as u64) {
        Ok(id) => id,
        Err(LinkError::Invalid) => {
            return Err(ApiError::forbidden(
                ErrorCode::DownloadLinkInvalid,
                "this download link is not valid: it was altered or cut short",
            ))
        }
        Err(LinkError::Expired) => {
            return Err(ApiError::new(
                StatusCode::GONE,
                ErrorCode::DownloadLinkExpired,
                "this download link has expired",
            ))
        }
    };
    let record = state.store.get_artifact(&id).await?.ok_or_else(|| {
        ApiError::not_found(ErrorCode::ArtifactNotFound, "the linked file is gone")
    })?;
    let record = delivered(record)?;
    serve(state, &record, headers).await
}

/// Any artifact as kept, withheld or not, with what the output classifier
/// found in it: for the admin's review.
#[utoipa::path(
    get, path = "/api/admin/artifacts/{artifact_id}", tag = "admin",
    params(("artifact_id" = String, Path, description = "`art_...`", pattern = "^art_[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    responses(
        (status = 200, body = ArtifactReview),
        (status = 404, body = ApiErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn review_artifact(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(artifact_id): ApiPath<String>,
) -> Result<Json<ArtifactReview>, ApiError> {
    let a = any_artifact(&state, &artifact_id).await?;
    Ok(Json(review(a)))
}

/// A job's artifacts as kept, withheld ones too, by position: what the
/// admin reviews when a job ended `content_withheld`.
#[utoipa::path(
    get, path = "/api/admin/jobs/{job_id}/artifacts", tag = "admin",
    params(("job_id" = String, Path, description = "The job's id, `job_...`", pattern = "^job_[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    responses(
        (status = 200, body = ArtifactReviewList),
        (status = 404, body = ApiErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn review_job_artifacts(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(job_id): ApiPath<String>,
) -> Result<Json<ArtifactReviewList>, ApiError> {
    let id = parse_job_id(&job_id)?;
    if state.store.get_job(&id, None).await?.is_none() {
        return Err(ApiError::not_found(ErrorCode::JobNotFound, "no such job"));
    }
    let artifacts = state.store.artifacts_of(&[id]).await?;
    Ok(Json(ArtifactReviewList {
        artifacts: artifacts.into_iter().map(review).collect(),
    }))
}

fn review(a: ArtifactRecord) -> ArtifactReview {
    let classification = a
        .classification
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok());
    ArtifactReview {
        content_url: format!("/api/admin/artifacts/{}/content", a.id),
        artifact_id: a.id,
        job_id: a.job_id,
        frontend: a.frontend,
        bot_id: a.bot_id,
        kind: a.kind,
        format: a.format,
        width: a.width,
        height: a.height,
        file_size: a.file_size,
        withheld: a.withheld,
        classification,
        created_at: chrono::DateTime::from_timestamp_millis(a.created_at).unwrap_or_default(),
    }
}

/// Any artifact's bytes, withheld or not: for the admin's review.
#[utoipa::path(
    get, path = "/api/admin/artifacts/{artifact_id}/content", tag = "admin",
    params(("artifact_id" = String, Path, description = "`art_...`", pattern = "^art_[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    responses(
        (status = 200, description = "The file, with its content type"),
        (status = 206, description = "The part of the file a `Range: bytes=...` header asked for"),
        (status = 404, body = ApiErrorBody),
        (status = 416, body = ApiErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn artifact_content(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(artifact_id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let record = any_artifact(&state, &artifact_id).await?;
    let mut resp = serve(&state, &record, &headers).await?;
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

async fn any_artifact(state: &AppState, artifact_id: &str) -> Result<ArtifactRecord, ApiError> {
    let not_found = || ApiError::not_found(ErrorCode::ArtifactNotFound, "no such artifact");
    let id: ArtifactId = artifact_id.parse().map_err(|_| not_found())?;
    state.store.get_artifact(&id).await?.ok_or_else(not_found)
}

/// An artifact's bytes, or the part a `Range` header asks for.
async fn serve(
    state: &AppState,
    record: &ArtifactRecord,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let bytes = state.blobs.get(&record.storage_key).await?;
    let len = bytes.len() as u64;
    let disposition = format!("inline; filename=\"{}.{}\"", record.id, record.format);
    let mut resp = match byte_range(headers, len) {
        Ok(None) => Body::from(bytes).into_response(),
        Ok(Some((start, end))) => {
            let part = bytes.slice(start as usize..=end as usize);
            let mut resp = (StatusCode::PARTIAL_CONTENT, Body::from(part)).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            resp
        }
        Err(()) => {
            let mut resp = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::RangeNotSatisfiable,
                format!("the range asked for lies outside the {len} bytes of the artifact"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
    };
    let headers = resp.headers_mut();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
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

/// The one `bytes=` range a `Range` header asks of a body `len` bytes long,
/// as first and last byte. `Ok(None)`: the whole body (no header, another
/// unit, several ranges or a malformed one, which RFC 9110 lets a server
/// ignore); `Err`: a range wholly outside the body (416).
fn byte_range(headers: &HeaderMap, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let number = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), number(first), number(last)) {
        // `-N`: the last N bytes.
        (true, _, Some(n)) if n > 0 && len > 0 => Ok(Some((len.saturating_sub(n), len - 1))),
        (true, _, Some(_)) => Err(()),
        (false, Some(start), _) if start >= len => Err(()),
        // `A-`: from A to the end.
        (false, Some(start), None) if last.trim().is_empty() => Ok(Some((start, len - 1))),
        // `A-B`: clipped to the body.
        (false, Some(start), Some(end)) if end >= start => Ok(Some((start, end.min(len - 1)))),
        _ => Ok(None),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(value).unwrap());
        byte_range(&headers, len)
    }

    #[test]
    fn one_byte_range_is_served_and_anything_else_is_the_whole_body() {
        assert_eq!(byte_range(&HeaderMap::new(), 10), Ok(None));
        assert_eq!(range("bytes=0-3", 10), Ok(Some((0, 3))));
        assert_eq!(range("bytes=4-", 10), Ok(Some((4, 9))));
        assert_eq!(range("bytes=-3", 10), Ok(Some((7, 9))));
        assert_eq!(range("bytes=-30", 10), Ok(Some((0, 9))));
        assert_eq!(range("bytes=8-100", 10), Ok(Some((8, 9))));
        // Ignored, as RFC 9110 allows: other units, lists, nonsense.
        for ignored in [
            "items=0-3",
            "bytes=0-1,4-5",
            "bytes=5-2",
            "bytes=x-",
            "bytes=3",
        ] {
            assert_eq!(range(ignored, 10), Ok(None), "{ignored}");
        }
        // Outside the body.
        for outside in ["bytes=10-", "bytes=10-12", "bytes=-0"] {
            assert_eq!(range(outside, 10), Err(()), "{outside}");
        }
        assert_eq!(range("bytes=-5", 0), Err(()));
    }
}
