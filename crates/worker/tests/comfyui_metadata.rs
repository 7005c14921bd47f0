//! What users get back from ComfyUI carries only what they asked for: the
//! graph ComfyUI writes into its outputs (the operator's template with the
//! job's prompt) is removed by default and kept with `keep_metadata`, and the
//! image itself is the same either way.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use tessera_core::params::{ImageParams, JobParams, VideoParams};
use tessera_core::{Capability, JobId};
use tessera_testkit::standins::comfyui::{ComfyUi as StandIn, Settings};
use tessera_worker::engine::comfyui::{ComfyUi, ComfyUiConfig};
use tessera_worker::engine::{Artifact, Engine, Progress, Task};

const IMAGE_TEMPLATE: &str = include_str!("../workflows/image-example.json");
const VIDEO_TEMPLATE: &str = include_str!("../workflows/video-example.json");

fn engine(url: &str, capability: Capability, dir: &Path, keep_metadata: bool) -> ComfyUi {
    let config = ComfyUiConfig {
        memory_mib: None,
        model_memory_mib: Default::default(),
        url: url.to_owned(),
        capability,
        models: vec!["model-a".into()],
        workflows_dir: dir.to_owned(),
        websocket: true,
        poll_interval_ms: 20,
        max_output_bytes: 64 * 1024 * 1024,
        keep_metadata,
    };
    ComfyUi::new(config, reqwest::Client::new()).unwrap()
}

async fn run(engine: &ComfyUi, params: JobParams) -> Artifact {
    let task = Task {
        job_id: JobId::generate(),
        model: "model-a".into(),
        params,
        inputs: vec![],
    };
    let (progress, _rx) = Progress::new();
    let mut artifacts = engine
        .run(&task, &progress, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(artifacts.len(), 1);
    artifacts.remove(0)
}

/// A PNG's chunks: kind and the whole chunk's bytes (length, kind, data, CRC).
fn png_chunks(png: &[u8]) -> Vec<(String, Vec<u8>)> {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let mut chunks = Vec::new();
    let mut at = 8;
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind = String::from_utf8_lossy(&png[at + 4..at + 8]).into_owned();
        chunks.push((kind, png[at..at + 12 + len].to_vec()));
        at += 12 + len;
    }
    chunks
}

fn is_text(kind: &str) -> bool {
    matches!(kind, "tEXt" | "zTXt" | "iTXt")
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn png_outputs_lose_comfyuis_text_chunks_unless_kept() {
    let comfy = StandIn::start_with(Settings::default()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model-a.json"), IMAGE_TEMPLATE).unwrap();
    let params = JobParams::Image(ImageParams {
        prompt: "a red fox in the snow".into(),
        negative_prompt: Some("blurry".into()),
        width: 96,
        height: 64,
        seed: Some(42),
        steps: 4,
    });

    let kept = run(
        &engine(&comfy.url(), Capability::Image, dir.path(), true),
        params.clone(),
    )
    .await;
    let kept_chunks = png_chunks(&kept.bytes);
    // ComfyUI wrote the rendered graph, the job's prompt in it.
    assert!(
        kept_chunks
            .iter()
            .any(|(kind, bytes)| kind == "tEXt" && contains(bytes, "prompt\0")),
        "{:?}",
        kept_chunks.iter().map(|c| &c.0).collect::<Vec<_>>()
    );
    assert!(contains(&kept.bytes, "a red fox in the snow"));

    let stripped = run(
        &engine(&comfy.url(), Capability::Image, dir.path(), false),
        params,
    )
    .await;
    let chunks = png_chunks(&stripped.bytes);
    assert!(chunks.iter().all(|(kind, _)| !is_text(kind)), "{chunks:?}");
    assert!(!contains(&stripped.bytes, "a red fox in the snow"));
    assert!(!contains(&stripped.bytes, "CLIPTextEncode"));
    // Every other chunk (IHDR, IDAT, IEND...) is the same, byte for byte.
    let kept_image: Vec<_> = kept_chunks
        .into_iter()
        .filter(|(kind, _)| !is_text(kind))
        .collect();
    assert_eq!(chunks, kept_image);
    assert!(chunks.iter().any(|(kind, _)| kind == "IDAT"));
    assert_eq!(stripped.meta, kept.meta);
}

#[tokio::test]
async fn webp_outputs_lose_comfyuis_exif_unless_kept() {
    let comfy = StandIn::start_with(Settings::default()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model-a.json"), VIDEO_TEMPLATE).unwrap();
    let params = JobParams::Video(VideoParams {
        prompt: "waves on a beach".into(),
        negative_prompt: None,
        width: 64,
        height: 48,
        duration_seconds: 1,
        fps: 8,
        seed: Some(3),
    });
    let kept = run(
        &engine(&comfy.url(), Capability::Video, dir.path(), true),
        params.clone(),
    )
    .await;
    assert_eq!(kept.meta.format, "webp");
    assert!(contains(&kept.bytes, "EXIF"));
    assert!(contains(&kept.bytes, "waves on a beach"));

    let stripped = run(
        &engine(&comfy.url(), Capability::Video, dir.path(), false),
        params,
    )
    .await;
    assert_eq!(stripped.meta, kept.meta);
    assert!(!contains(&stripped.bytes, "waves on a beach"));
    assert!(!contains(&stripped.bytes, "EXIF"));
    // The VP8X header no longer announces EXIF; the frames are the same.
    assert_eq!(&stripped.bytes[12..16], b"VP8X");
    assert_eq!(stripped.bytes[20] & 0x08, 0);
    assert_eq!(stripped.bytes[20] | 0x08, kept.bytes[20]);
    let frames_at = |b: &[u8]| {
        b.windows(4)
            .position(|w| w == b"ANIM")
            .expect("an ANIM chunk")
    };
    let kept_frames = &kept.bytes[frames_at(&kept.bytes)..];
    let stripped_frames = &stripped.bytes[frames_at(&stripped.bytes)..];
    assert!(kept_frames.starts_with(stripped_frames));
    assert_eq!(
        u32::from_le_bytes(stripped.bytes[4..8].try_into().unwrap()) as usize,
        stripped.bytes.len() - 8
    );
}
