//! Files: uploads (or references to known files) stored under `file_id`s
//! that belong to one bot, their MIME types and photo sizes read from their
//! bytes, the `File`, `PhotoSize` and media objects, `getFile`, and the
//! downloads at `/file/bot<token>/<file_path>`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::api::{Answer, Ctx, Failure, Params};
use super::state::{Files, Shared, StoredFile};
use super::types::{MessageKind, Upload};
use super::{MAX_DOWNLOAD_BYTES, MAX_PHOTO_BYTES, MAX_PHOTO_DIMENSIONS, MAX_UPLOAD_BYTES};

/// What a new file is.
pub(super) struct FileSpec {
    pub(super) kind: MessageKind,
    pub(super) upload: Upload,
    pub(super) duration: u32,
    pub(super) width: u32,
    pub(super) height: u32,
}

pub(super) fn guess_mime(file_name: &str) -> Option<&'static str> {
    let extension = file_name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match extension.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "wav" => "audio/x-wav",
        "flac" => "audio/flac",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "json" => "application/json",
        "zip" => "application/zip",
        _ => return None,
    })
}

fn extension_for(mime: Option<&str>, file_name: Option<&str>) -> String {
    if let Some((_, e)) = file_name.and_then(|n| n.rsplit_once('.')) {
        if !e.is_empty() && e.chars().all(|c| c.is_ascii_alphanumeric()) {
            return e.to_ascii_lowercase();
        }
    }
    match mime.unwrap_or("") {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "video/mp4" => "mp4",
        "audio/mpeg" => "mp3",
        "audio/mp4" => "m4a",
        "audio/ogg" => "oga",
        "audio/x-wav" | "audio/wav" => "wav",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        _ => "bin",
    }
    .to_owned()
}

/// The image type by its magic bytes.
fn image_mime(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF8") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

pub(super) fn new_file_record(
    files: &mut Files,
    owner: &str,
    kind: MessageKind,
    bytes: Bytes,
    mime: Option<String>,
    file_name: Option<String>,
) -> StoredFile {
    files.next += 1;
    let n = files.next;
    let extension = extension_for(mime.as_deref(), file_name.as_deref());
    StoredFile {
        owner: owner.to_owned(),
        id: format!("{}{n:06}ZxSt4nd1n{n:x}", kind.id_prefix()),
        unique_id: format!("AgAD{n:06}"),
        path: format!("{}/file_{n}.{extension}", kind.folder()),
        bytes,
        mime,
        file_name,
        duration: 0,
        width: 0,
        height: 0,
        photo: None,
    }
}

pub(super) fn keep(files: &mut Files, file: StoredFile) {
    files.by_path.insert(file.path.clone(), file.id.clone());
    files.by_id.insert(file.id.clone(), file);
}

/// Stores a new file; answers its `Message` field and `file_id`.
pub(super) fn store_file(
    files: &mut Files,
    owner: &str,
    spec: FileSpec,
) -> Result<(Value, String), Failure> {
    let FileSpec {
        kind,
        upload,
        duration,
        width,
        height,
    } = spec;
    if upload.bytes.is_empty() {
        return Err(Failure::bad("file must be non-empty"));
    }
    if upload.bytes.len() > MAX_UPLOAD_BYTES {
        return Err(Failure::new(413, "Request Entity Too Large"));
    }
    let file_name = upload.file_name.filter(|n| !n.is_empty());
    let mime = match upload.mime.as_deref() {
        Some(m) if !m.is_empty() && m != "application/octet-stream" => Some(m.to_owned()),
        _ => file_name.as_deref().and_then(guess_mime).map(str::to_owned),
    };
    if kind == MessageKind::Photo {
        let (Some(image_type), Ok(size)) = (
            image_mime(&upload.bytes),
            imagesize::blob_size(&upload.bytes),
        ) else {
            return Err(Failure::bad("IMAGE_PROCESS_FAILED"));
        };
        // Telegram's photo rules: at most 10 MB, width and height at most
        // 10,000 together, a ratio of at most 20.
        if upload.bytes.len() > MAX_PHOTO_BYTES {
            return Err(Failure::bad("PHOTO_SAVE_FILE_INVALID"));
        }
        let (w, h) = (size.width as u64, size.height as u64);
        if w + h > MAX_PHOTO_DIMENSIONS || w.max(h) > 20 * w.min(h).max(1) {
            return Err(Failure::bad("PHOTO_INVALID_DIMENSIONS"));
        }
        let photo = photo_sizes(
            files,
            owner,
            upload.bytes.clone(),
            image_type,
            size.width as u32,
            size.height as u32,
        );
        let id = photo
            .as_array()
            .and_then(|a| a.last())
            .and_then(|p| p["file_id"].as_str())
            .unwrap_or_default()
            .to_owned();
        return Ok((photo, id));
    }
    let mime = mime.or_else(|| match kind {
        MessageKind::Voice => Some("audio/ogg".into()),
        MessageKind::Audio => Some("audio/mpeg".into()),
        MessageKind::Video => Some("video/mp4".into()),
        _ => None,
    });
    let mut file = new_file_record(files, owner, kind, upload.bytes, mime, file_name);
    file.duration = duration;
    file.width = width;
    file.height = height;
    let media = file_json(&file, kind);
    let id = file.id.clone();
    keep(files, file);
    Ok((media, id))
}

/// The sizes Telegram keeps of a photo: each of 90, 320, 800 and 1280
/// pixels on the long side smaller than the original, then the original
/// (at most 2560). They all serve the original's bytes.
fn photo_sizes(
    files: &mut Files,
    owner: &str,
    bytes: Bytes,
    mime: &str,
    width: u32,
    height: u32,
) -> Value {
    let long_side = width.max(height).max(1);
    let mut sides: Vec<u32> = [90, 320, 800, 1280]
        .into_iter()
        .filter(|s| *s < long_side)
        .collect();
    sides.push(long_side.min(2560));
    let area = (u64::from(width) * u64::from(height)).max(1);
    let sizes: Vec<Value> = sides
        .into_iter()
        .map(|side| {
            let w = (u64::from(width) * u64::from(side) / u64::from(long_side)).max(1);
            let h = (u64::from(height) * u64::from(side) / u64::from(long_side)).max(1);
            let size = (bytes.len() as u64 * w * h / area).max(1);
            let mut file = new_file_record(
                files,
                owner,
                MessageKind::Photo,
                bytes.clone(),
                Some(mime.to_owned()),
                None,
            );
            file.width = w as u32;
            file.height = h as u32;
            let value = json!({
                "file_id": file.id,
                "file_unique_id": file.unique_id,
                "width": w,
                "height": h,
                "file_size": if side == long_side.min(2560) { bytes.len() as u64 } else { size },
            });
            keep(files, file);
            value
        })
        .collect();
    let photo = Value::Array(sizes);
    for p in photo.as_array().into_iter().flatten() {
        if let Some(f) = p["file_id"].as_str().and_then(|id| files.by_id.get_mut(id)) {
            f.photo = Some(photo.clone());
        }
    }
    photo
}

/// A file as the `Message` field of `kind`.
pub(super) fn file_json(file: &StoredFile, kind: MessageKind) -> Value {
    if kind == MessageKind::Photo {
        if let Some(photo) = &file.photo {
            return photo.clone();
        }
        return json!([{
            "file_id": file.id, "file_unique_id": file.unique_id,
            "width": file.width, "height": file.height, "file_size": file.bytes.len(),
        }]);
    }
    let mut value = json!({
        "file_id": file.id,
        "file_unique_id": file.unique_id,
        "file_size": file.bytes.len(),
    });
    if matches!(
        kind,
        MessageKind::Audio | MessageKind::Voice | MessageKind::Video
    ) {
        value["duration"] = json!(file.duration);
    }
    if kind == MessageKind::Video {
        value["width"] = json!(file.width);
        value["height"] = json!(file.height);
    }
    if kind != MessageKind::Voice {
        if let Some(name) = &file.file_name {
            value["file_name"] = json!(name);
        }
    }
    if let Some(mime) = &file.mime {
        value["mime_type"] = json!(mime);
    }
    value
}

pub(super) async fn download(
    State(shared): State<Arc<Shared>>,
    Path((bot, path)): Path<(String, String)>,
) -> Response {
    let Some(token) = bot.strip_prefix("bot") else {
        return Failure::new(404, "Not Found").into_response();
    };
    let mut state = shared.lock();
    if !state.bots.contains_key(token) {
        return Failure::new(401, "Unauthorized").into_response();
    }
    let file = state
        .files
        .by_path
        .get(&path)
        .and_then(|id| state.files.by_id.get(id))
        .filter(|f| f.owner == token)
        .map(|f| (f.bytes.clone(), f.mime.clone()));
    let Some((bytes, mime)) = file else {
        return Failure::new(404, "Not Found").into_response();
    };
    if let Some(bot) = state.bots.get_mut(token) {
        bot.downloads.push(path);
    }
    drop(state);
    shared.bump();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            mime.unwrap_or_else(|| "application/octet-stream".into()),
        )],
        bytes,
    )
        .into_response()
}

pub(super) fn get_file(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    let id = params
        .text("file_id")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Failure::bad("file_id is empty"))?;
    let file = ctx
        .files
        .by_id
        .get(&id)
        .filter(|f| f.owner == ctx.token)
        .ok_or_else(|| Failure::bad("invalid file_id"))?;
    if file.bytes.len() > MAX_DOWNLOAD_BYTES {
        return Err(Failure::bad("file is too big"));
    }
    Ok(json!({
        "file_id": file.id,
        "file_unique_id": file.unique_id,
        "file_size": file.bytes.len(),
        "file_path": file.path,
    })
    .into())
}
