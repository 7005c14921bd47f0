//! Download links (`/d/{token}`): outputs a chat platform would not take,
//! served to whoever holds the link, with no account and no session.
//!
//! The site decides nothing here: it passes the token to the scheduler
//! (`GET /api/v1/download-links/{token}` with its web key), which verifies
//! the signature and the expiry, and streams the answer on with the
//! visitor's `Range` (players seek with it). A link that was altered or has
//! expired becomes a page that says so.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use tessera_api::{ClientError, ErrorCode};

use crate::error::WebError;
use crate::AppState;

/// `GET /d/{token}`.
pub async fn download(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let upstream = match state.downloads.fetch_download_link(&token, range).await {
        Ok(upstream) => upstream,
        Err(e) if e.is(ErrorCode::DownloadLinkInvalid) => return Err(WebError::LinkInvalid),
        Err(e) if e.is(ErrorCode::DownloadLinkExpired) => return Err(WebError::LinkExpired),
        Err(e) if e.is(ErrorCode::ArtifactNotFound) => return Err(WebError::NotFound),
        Err(ClientError::Api { status, .. }) if status == StatusCode::RANGE_NOT_SATISFIABLE => {
            return Ok(StatusCode::RANGE_NOT_SATISFIABLE.into_response());
        }
        Err(e) => return Err(e.into()),
    };
    // The address is the permission: keep it out of caches and referrers.
    let mut extra = HeaderMap::new();
    extra.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    extra.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(relay(upstream, extra))
}

/// The scheduler's answer with an output's bytes, passed on to the visitor
/// as it arrives: its status, the headers that describe the body (type,
/// length, range, disposition), then `extra`, which win.
pub(crate) fn relay(upstream: reqwest::Response, extra: HeaderMap) -> Response {
    let status = upstream.status();
    let mut out = HeaderMap::new();
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::ACCEPT_RANGES,
        header::CONTENT_DISPOSITION,
    ] {
        if let Some(v) = upstream.headers().get(&name) {
            out.insert(name, v.clone());
        }
    }
    for (name, value) in &extra {
        out.insert(name.clone(), value.clone());
    }
    let mut resp = Body::from_stream(upstream.bytes_stream()).into_response();
    *resp.status_mut() = status;
    resp.headers_mut().extend(out);
    resp
}
