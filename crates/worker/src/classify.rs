//! Output classification on the worker: NudeNet's detector run on every
//! image and on sampled frames of every video before the result is sent.
//!
//! It runs here because the worker already holds each output's bytes and
//! the scheduler's request path must not pay for a model run (tens of
//! milliseconds of every core per picture). The worker only reports what
//! it found ([`Classification`] on each artifact); the scheduler decides
//! what may be delivered. The work runs on Tokio's blocking pool, so the
//! heartbeat and the worker's API are never held up by it.
//!
//! Still images (PNG, JPEG, WebP) are classified from their own bytes.
//! Animations the engines make (animated PNG from the simulator and
//! ComfyUI's `SaveAnimatedPNG`, animated WebP from `SaveAnimatedWEBP`) are
//! decoded here and their first, middle and last frames classified, as are
//! GIFs (a still GIF is an animation of one frame). Formats whose frames
//! cannot be decoded here (MP4, WebM: they need a video codec the worker
//! does not carry) come back with `unclassified` saying so, and the
//! scheduler's policy decides.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use image::codecs::gif::GifDecoder;
use image::codecs::png::PngDecoder;
use image::codecs::webp::WebPDecoder;
use image::{AnimationDecoder, DynamicImage, ImageFormat, RgbaImage};

use tessera_api::internal::{ArtifactKind, ArtifactMeta, Classification, ClassifiedDetection};
use tessera_moderation::{Classifier, LoadError};

use crate::config::ModerationConfig;

/// The model's name on the wire and in the scheduler's records.
pub const MODEL: &str = "nudenet-320n";

/// NudeNet's detector, loaded once at start.
pub struct OutputClassifier {
    classifier: Arc<Classifier>,
}

impl OutputClassifier {
    /// Loads the classifier the configuration names; `None` when it names
    /// none. A file that cannot be used is an error naming its key.
    pub async fn load(config: &ModerationConfig) -> anyhow::Result<Option<OutputClassifier>> {
        let (Some(model), Some(lib)) = (&config.classifier_model, &config.onnxruntime_lib) else {
            return Ok(None);
        };
        let (model, lib) = (model.clone(), lib.clone());
        let loaded = tokio::task::spawn_blocking(move || load(&model, &lib))
            .await
            .context("loading the output classifier")??;
        Ok(Some(OutputClassifier {
            classifier: Arc::new(loaded),
        }))
    }

    /// Classifies one artifact on the blocking pool: `None` for what is not
    /// a picture (audio, text). The seconds it took go to `took`.
    pub async fn classify(
        &self,
        meta: &ArtifactMeta,
        bytes: &Bytes,
    ) -> Option<(Classification, f64)> {
        if !matches!(meta.kind, ArtifactKind::Image | ArtifactKind::Video) {
            return None;
        }
        let classifier = self.classifier.clone();
        let (format, bytes) = (meta.format.clone(), bytes.clone());
        let started = Instant::now();
        let classification =
            tokio::task::spawn_blocking(move || classify_blocking(&classifier, &format, &bytes))
                .await
                .unwrap_or_else(|e| unclassified(format!("the classification task stopped: {e}")));
        Some((classification, started.elapsed().as_secs_f64()))
    }
}

fn load(model: &Path, lib: &Path) -> anyhow::Result<Classifier> {
    Classifier::load(model, lib).map_err(|e| {
        let key = match e {
            LoadError::ModelMissing { .. } | LoadError::Model { .. } => {
                "moderation.classifier_model"
            }
            _ => "moderation.onnxruntime_lib",
        };
        anyhow::anyhow!("{key}: {e}")
    })
}

fn unclassified(why: String) -> Classification {
    Classification {
        model: MODEL.into(),
        frames: 0,
        unclassified: Some(why.chars().take(500).collect()),
        detections: Vec::new(),
    }
}

/// Which frames of an animation of `count` frames are classified: the
/// first, the middle and the last (fewer when there are fewer).
pub fn sample_frames(count: usize) -> Vec<usize> {
    let mut picked: Vec<usize> = match count {
        0 => Vec::new(),
        _ => vec![0, count / 2, count - 1],
    };
    picked.dedup();
    picked
}

/// Classifies an artifact's bytes on this thread.
pub fn classify_blocking(classifier: &Classifier, format: &str, bytes: &[u8]) -> Classification {
    let pictures = match pictures(format, bytes) {
        Ok(pictures) => pictures,
        Err(why) => return unclassified(why),
    };
    let animated = matches!(pictures, Pictures::Frames(_));
    let frames: Vec<std::borrow::Cow<'_, [u8]>> = match pictures {
        Pictures::Still => vec![std::borrow::Cow::Borrowed(bytes)],
        Pictures::Frames(frames) => frames.into_iter().map(std::borrow::Cow::Owned).collect(),
    };
    let mut detections = Vec::new();
    for (index, frame) in frames.iter().enumerate() {
        match classifier.classify_blocking(frame) {
            Ok(found) => detections.extend(found.into_iter().map(|d| ClassifiedDetection {
                label: d.label.as_str().to_owned(),
                score: d.score,
                frame: animated.then_some(index as u32),
                bbox: Some([d.bbox.x, d.bbox.y, d.bbox.width, d.bbox.height]),
            })),
            Err(e) => return unclassified(e.to_string()),
        }
    }
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    detections.truncate(tessera_api::internal::MAX_DETECTIONS);
    Classification {
        model: MODEL.into(),
        frames: frames.len() as u32,
        unclassified: None,
        detections,
    }
}

/// What of an artifact is classified.
enum Pictures {
    /// The bytes themselves: a still PNG, JPEG or WebP.
    Still,
    /// Sampled frames of an animation, each as a PNG.
    Frames(Vec<Vec<u8>>),
}

fn pictures(format: &str, bytes: &[u8]) -> Result<Pictures, String> {
    let frames = match format {
        "png" | "apng" => {
            let decoder = PngDecoder::new(Cursor::new(bytes)).map_err(|e| e.to_string())?;
            if !decoder.is_apng().map_err(|e| e.to_string())? {
                return Ok(Pictures::Still);
            }
            sampled(|| {
                PngDecoder::new(Cursor::new(bytes))
                    .and_then(|d| d.apng())
                    .map(|d| d.into_frames())
            })?
        }
        "webp" => {
            let decoder = WebPDecoder::new(Cursor::new(bytes)).map_err(|e| e.to_string())?;
            if !decoder.has_animation() {
                return Ok(Pictures::Still);
            }
            sampled(|| WebPDecoder::new(Cursor::new(bytes)).map(|d| d.into_frames()))?
        }
        "gif" => sampled(|| GifDecoder::new(Cursor::new(bytes)).map(|d| d.into_frames()))?,
        "jpg" | "jpeg" => return Ok(Pictures::Still),
        other => {
            return Err(format!(
                "the worker cannot decode the frames of {other} files to classify them"
            ))
        }
    };
    Ok(Pictures::Frames(frames))
}

/// The sampled frames of an animation, each encoded as a PNG: one pass to
/// count the frames, one to take the sampled ones, so at most three frames
/// are held at once.
fn sampled<'a>(
    frames: impl Fn() -> image::ImageResult<image::Frames<'a>>,
) -> Result<Vec<Vec<u8>>, String> {
    let error = |e: image::ImageError| format!("the animation cannot be decoded: {e}");
    let mut count = 0;
    for frame in frames().map_err(error)? {
        frame.map_err(error)?;
        count += 1;
    }
    let picked = sample_frames(count);
    let mut out = Vec::with_capacity(picked.len());
    for (index, frame) in frames().map_err(error)?.enumerate() {
        if picked.contains(&index) {
            out.push(png(frame.map_err(error)?.into_buffer()).map_err(error)?);
        }
    }
    if out.is_empty() {
        return Err("the animation has no frames".into());
    }
    Ok(out)
}

fn png(frame: RgbaImage) -> image::ImageResult<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(frame).to_rgb8())
        .write_to(&mut out, ImageFormat::Png)?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_middle_and_last_frames_are_sampled() {
        assert_eq!(sample_frames(0), Vec::<usize>::new());
        assert_eq!(sample_frames(1), [0]);
        assert_eq!(sample_frames(2), [0, 1]);
        assert_eq!(sample_frames(3), [0, 1, 2]);
        assert_eq!(sample_frames(8), [0, 4, 7]);
        assert_eq!(sample_frames(81), [0, 40, 80]);
    }

    fn animated_png(frames: u32) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut out, 8, 6);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            encoder.set_animated(frames, 0).unwrap();
            let mut writer = encoder.write_header().unwrap();
            for frame in 0..frames {
                writer
                    .write_image_data(&[(frame * 30) as u8; 8 * 6 * 3])
                    .unwrap();
            }
            writer.finish().unwrap();
        }
        out
    }

    /// The sampled frames of an 8×6 animation, as the shade of each (every
    /// frame a PNG of the animation's size).
    fn sampled_shades(format: &str, bytes: &[u8]) -> Vec<u8> {
        let Pictures::Frames(frames) = pictures(format, bytes).unwrap() else {
            panic!("an animation");
        };
        frames
            .iter()
            .map(|f| {
                let img = image::load_from_memory(f).unwrap().to_rgb8();
                assert_eq!(img.dimensions(), (8, 6));
                img.get_pixel(3, 3).0[0]
            })
            .collect()
    }

    #[test]
    fn animated_pngs_give_their_sampled_frames() {
        // Frames 0, 2 and 4, each a PNG of the animation's size and colour.
        assert_eq!(sampled_shades("apng", &animated_png(5)), [0, 60, 120]);
    }

    #[test]
    fn stills_are_classified_from_their_own_bytes() {
        let still = png(RgbaImage::new(4, 4)).unwrap();
        assert!(matches!(pictures("png", &still), Ok(Pictures::Still)));
        assert!(matches!(pictures("jpg", b"anything"), Ok(Pictures::Still)));
    }

    fn gif(frames: u8) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut encoder = image::codecs::gif::GifEncoder::new(&mut out);
            for frame in 0..frames {
                let shade = image::Rgba([frame * 30, frame * 30, frame * 30, 255]);
                let picture = RgbaImage::from_pixel(8, 6, shade);
                encoder.encode_frame(image::Frame::new(picture)).unwrap();
            }
        }
        out
    }

    #[test]
    fn gifs_give_their_sampled_frames() {
        assert_eq!(sampled_shades("gif", &gif(5)), [0, 60, 120]);
        // A still GIF is one frame.
        assert_eq!(sampled_shades("gif", &gif(1)), [0]);
        assert!(pictures("gif", b"GIF89a").is_err());
    }

    #[test]
    fn formats_not_decoded_here_say_so() {
        for format in ["mp4", "webm"] {
            let e = pictures(format, b"\0\0\0\x18ftypisom").err().unwrap();
            assert!(e.contains(format), "{e}");
        }
        assert!(pictures("png", b"not a png").is_err());
        assert!(pictures("webp", b"RIFF").is_err());
    }
}
