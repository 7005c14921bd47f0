//! What a finished prompt leaves behind: the output files its history names
//! (checked to be plain names inside ComfyUI's output folder), fetched and
//! described from their own headers, never from their names, and stripped of
//! the graph ComfyUI writes into them ([`super::metadata`]).

use std::collections::BTreeSet;

use serde_json::Value;

use tessera_api::internal::{ArtifactKind, ArtifactMeta};
use tessera_core::Capability;

use super::client::clip;
use super::follow::history_failure;
use super::metadata;
use super::{Artifact, ComfyUi, EngineError, Template, TITLE_OUTPUT};

impl ComfyUi {
    /// Turns a finished prompt's history entry into artifacts.
    pub(super) async fn collect(
        &self,
        entry: &Value,
        template: &Template,
    ) -> Result<Vec<Artifact>, EngineError> {
        if let Some(e) = history_failure(entry, template) {
            return Err(e);
        }
        let files = output_files(entry, &template.output)?;
        if files.is_empty() {
            return Err(EngineError::invalid_output(format!(
                "ComfyUI finished, but the {TITLE_OUTPUT} node saved no output file"
            )));
        }
        let mut artifacts = Vec::with_capacity(files.len());
        for file in &files {
            let bytes = self.fetch(file).await?;
            let invalid = |e: String| {
                EngineError::invalid_output(format!("ComfyUI output {:?}: {e}", file.filename))
            };
            let meta = describe_file(&bytes, template.capability).map_err(invalid)?;
            let bytes = if self.config.keep_metadata {
                bytes
            } else {
                metadata::strip(bytes).map_err(invalid)?
            };
            artifacts.push(Artifact { meta, bytes });
        }
        Ok(artifacts)
    }
}

/// One file ComfyUI saved, as its history names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct OutputFile {
    pub(super) filename: String,
    pub(super) subfolder: String,
}

/// The `output` files saved by the given nodes. Entries of another type
/// (`temp` previews) are skipped; a name that could leave ComfyUI's output
/// folder is an error.
fn output_files(entry: &Value, nodes: &[String]) -> Result<Vec<OutputFile>, EngineError> {
    let mut files = Vec::new();
    let mut seen = BTreeSet::new();
    let outputs = entry.get("outputs").and_then(Value::as_object);
    for id in nodes {
        let Some(node) = outputs.and_then(|o| o.get(id)).and_then(Value::as_object) else {
            continue;
        };
        for items in node.values().filter_map(Value::as_array) {
            for item in items.iter().filter_map(Value::as_object) {
                let Some(filename) = item.get("filename").and_then(Value::as_str) else {
                    continue;
                };
                let kind = item.get("type").and_then(Value::as_str).unwrap_or("output");
                if kind != "output" {
                    continue;
                }
                let subfolder = item.get("subfolder").and_then(Value::as_str).unwrap_or("");
                if !safe_file_name(filename) || !safe_subfolder(subfolder) {
                    return Err(EngineError::invalid_output(format!(
                        "ComfyUI named an output {:?} in {:?}, which is not a plain file name",
                        clip(filename.to_owned()),
                        clip(subfolder.to_owned())
                    )));
                }
                let file = OutputFile {
                    filename: filename.to_owned(),
                    subfolder: subfolder.to_owned(),
                };
                if seen.insert(file.clone()) {
                    files.push(file);
                }
            }
        }
    }
    Ok(files)
}

fn safe_file_name(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name != "."
        && !name.contains("..")
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

fn safe_subfolder(sub: &str) -> bool {
    sub.len() <= 1024
        && !sub.starts_with('/')
        && !sub.contains('\\')
        && !sub.chars().any(char::is_control)
        && sub.split('/').all(|part| part != ".." && part != ".")
        && !sub.contains(':')
}

/// The kind, format and size of a file ComfyUI saved, from its own header.
pub fn describe_file(bytes: &[u8], capability: Capability) -> Result<ArtifactMeta, String> {
    let format = sniff(bytes).ok_or("its content is not a known image or video format")?;
    let (kind, name) = match (capability, format) {
        (Capability::Image, Format::Png { .. }) => (ArtifactKind::Image, "png"),
        (Capability::Image, Format::Jpeg) => (ArtifactKind::Image, "jpeg"),
        (Capability::Image, Format::Webp { .. }) => (ArtifactKind::Image, "webp"),
        (Capability::Image, Format::Gif) => (ArtifactKind::Image, "gif"),
        (Capability::Video, Format::Png { animated: true }) => (ArtifactKind::Video, "apng"),
        (Capability::Video, Format::Webp { .. }) => (ArtifactKind::Video, "webp"),
        (Capability::Video, Format::Gif) => (ArtifactKind::Video, "gif"),
        (Capability::Video, Format::Mp4) => (ArtifactKind::Video, "mp4"),
        (Capability::Video, Format::Mov) => (ArtifactKind::Video, "mov"),
        (Capability::Video, Format::Webm) => (ArtifactKind::Video, "webm"),
        (Capability::Video, Format::Mkv) => (ArtifactKind::Video, "mkv"),
        (capability, format) => {
            return Err(format!(
                "a {capability} job cannot return a {} file",
                format.name()
            ))
        }
    };
    let size = match format {
        Format::Png { .. } | Format::Jpeg | Format::Webp { .. } | Format::Gif => {
            let size = imagesize::blob_size(bytes)
                .map_err(|e| format!("its {} header cannot be read: {e}", format.name()))?;
            let w = u32::try_from(size.width).ok().filter(|w| *w > 0);
            let h = u32::try_from(size.height).ok().filter(|h| *h > 0);
            match (w, h) {
                (Some(w), Some(h)) => Some((w, h)),
                _ => return Err(format!("its {} header gives no size", format.name())),
            }
        }
        Format::Mp4 | Format::Mov => mp4_size(bytes),
        Format::Webm | Format::Mkv => None,
    };
    Ok(ArtifactMeta {
        kind,
        format: name.into(),
        width: size.map(|s| s.0),
        height: size.map(|s| s.1),
        classification: None,
        usage: None,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Png { animated: bool },
    Jpeg,
    Webp { animated: bool },
    Gif,
    Mp4,
    Mov,
    Webm,
    Mkv,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Png { animated: false } => "png",
            Format::Png { animated: true } => "animated png",
            Format::Jpeg => "jpeg",
            Format::Webp { animated: false } => "webp",
            Format::Webp { animated: true } => "animated webp",
            Format::Gif => "gif",
            Format::Mp4 => "mp4",
            Format::Mov => "mov",
            Format::Webm => "webm",
            Format::Mkv => "mkv",
        }
    }
}

fn sniff(b: &[u8]) -> Option<Format> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some(Format::Png {
            animated: png_is_animated(b),
        });
    }
    if b.starts_with(&[0xff, 0xd8, 0xff]) {
        return Some(Format::Jpeg);
    }
    if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        return Some(Format::Gif);
    }
    if b.len() >= 12 && &b[0..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        // A VP8X chunk first, with its animation flag.
        let animated = b.len() >= 21 && &b[12..16] == b"VP8X" && b[20] & 0x02 != 0;
        return Some(Format::Webp { animated });
    }
    if b.len() >= 12 && &b[4..8] == b"ftyp" {
        return Some(if &b[8..12] == b"qt  " {
            Format::Mov
        } else {
            Format::Mp4
        });
    }
    if b.starts_with(&[0x1a, 0x45, 0xdf, 0xa3]) {
        let head = &b[..b.len().min(64)];
        let webm = head.windows(4).any(|w| w == b"webm");
        return Some(if webm { Format::Webm } else { Format::Mkv });
    }
    None
}

/// An `acTL` chunk before the first `IDAT` makes a PNG an animated PNG.
fn png_is_animated(b: &[u8]) -> bool {
    let mut at = 8usize;
    while let Some(header) = b.get(at..at + 8) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        match &header[4..8] {
            b"acTL" => return true,
            b"IDAT" | b"IEND" => return false,
            _ => {}
        }
        at = match at.checked_add(12).and_then(|a| a.checked_add(len)) {
            Some(next) => next,
            None => return false,
        };
    }
    false
}

/// Width and height of the first video track of an MP4/MOV (`moov/trak/tkhd`).
fn mp4_size(b: &[u8]) -> Option<(u32, u32)> {
    fn boxes(b: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut at = 0usize;
        std::iter::from_fn(move || {
            let header = b.get(at..at + 8)?;
            let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as u64;
            let kind = &header[4..8];
            let (start, end) = match size {
                0 => (at + 8, b.len()),
                1 => {
                    let large = b.get(at + 8..at + 16)?;
                    let large = u64::from_be_bytes(large.try_into().ok()?);
                    (at + 16, at.checked_add(usize::try_from(large).ok()?)?)
                }
                n => (at + 8, at.checked_add(usize::try_from(n).ok()?)?),
            };
            if end < start || end > b.len() {
                return None;
            }
            at = end;
            Some((kind, &b[start..end]))
        })
    }
    let (_, moov) = boxes(b).find(|(k, _)| *k == b"moov")?;
    for (_, trak) in boxes(moov).filter(|(k, _)| *k == b"trak") {
        let Some((_, tkhd)) = boxes(trak).find(|(k, _)| *k == b"tkhd") else {
            continue;
        };
        let version = *tkhd.first()?;
        let offset = if version == 1 {
            4 + 32 + 52
        } else {
            4 + 20 + 52
        };
        let w = u32::from_be_bytes(tkhd.get(offset..offset + 4)?.try_into().ok()?) >> 16;
        let h = u32::from_be_bytes(tkhd.get(offset + 4..offset + 8)?.try_into().ok()?) >> 16;
        if w > 0 && h > 0 {
            return Some((w, h));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn output_names_that_could_leave_the_folder_are_refused() {
        let nodes = vec!["9".to_string()];
        let entry = |name: &str, sub: &str| {
            json!({"outputs": {"9": {"images": [
                {"filename": name, "subfolder": sub, "type": "output"},
                {"filename": "preview.png", "subfolder": "", "type": "temp"}
            ]}}})
        };
        let files = output_files(&entry("a_00001_.png", "tessera"), &nodes).unwrap();
        assert_eq!(
            files,
            vec![OutputFile {
                filename: "a_00001_.png".into(),
                subfolder: "tessera".into()
            }]
        );
        for (name, sub) in [
            ("../x.png", ""),
            ("/etc/passwd", ""),
            ("a\\b.png", ""),
            ("x.png", "../up"),
            ("x.png", "/abs"),
            ("x.png", "a/../../b"),
            ("", ""),
        ] {
            assert!(
                output_files(&entry(name, sub), &nodes).is_err(),
                "{name} {sub}"
            );
        }
        // Other nodes' files are not the job's.
        assert!(output_files(&entry("a.png", ""), &["3".to_string()])
            .unwrap()
            .is_empty());
    }
    #[test]
    fn formats_and_sizes_come_from_the_headers() {
        let mut png = Vec::new();
        {
            let mut e = png::Encoder::new(&mut png, 20, 10);
            e.set_color(png::ColorType::Rgb);
            let mut w = e.write_header().unwrap();
            w.write_image_data(&[0; 20 * 10 * 3]).unwrap();
        }
        let meta = describe_file(&png, Capability::Image).unwrap();
        assert_eq!(
            (meta.format.as_str(), meta.width, meta.height),
            ("png", Some(20), Some(10))
        );
        assert!(describe_file(&png, Capability::Video).is_err());

        // A GIF header (logical screen 33 x 17).
        let gif = b"GIF89a\x21\x00\x11\x00\x00\x00\x00;";
        let meta = describe_file(gif, Capability::Video).unwrap();
        assert_eq!(
            (meta.format.as_str(), meta.width, meta.height),
            ("gif", Some(33), Some(17))
        );
        assert_eq!(meta.kind, ArtifactKind::Video);

        // An MP4 with one 640 x 360 track.
        let mut tkhd = vec![0u8; 4 + 20 + 52];
        tkhd.extend_from_slice(&(640u32 << 16).to_be_bytes());
        tkhd.extend_from_slice(&(360u32 << 16).to_be_bytes());
        let wrap = |kind: &[u8], body: &[u8]| {
            let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
            b.extend_from_slice(kind);
            b.extend_from_slice(body);
            b
        };
        let mut mp4 = wrap(b"ftyp", b"isom\0\0\0\0");
        mp4.extend(wrap(b"moov", &wrap(b"trak", &wrap(b"tkhd", &tkhd))));
        let meta = describe_file(&mp4, Capability::Video).unwrap();
        assert_eq!(
            (meta.format.as_str(), meta.width, meta.height),
            ("mp4", Some(640), Some(360))
        );

        // Truncated or unknown content is an error, never a panic.
        for bad in [
            &b""[..],
            b"\x89PNG\r\n\x1a\n",
            b"RIFF\0\0\0\0WEBP",
            b"hello",
        ] {
            assert!(describe_file(bad, Capability::Image).is_err());
        }
        assert!(mp4_size(b"\0\0\0\x01moov").is_none());
        let meta = describe_file(b"\0\0\0\x0cftypisom", Capability::Video).unwrap();
        assert_eq!((meta.width, meta.height), (None, None));
    }
}
