//! `sim`: simulated GPU work, for demos, benchmarks and tests of the scheduler.
//!
//! It holds one model "in GPU memory" at a time, or several side by side
//! when `memory_mib` and every model's `model_memory_mib` are set and they
//! fit ([`Resident`]): a job for a model not held first waits `load_ms`, then
//! every job waits `run_ms`, reporting progress in ten steps (a text reply is
//! written a tenth at each step). Its artifacts are real files of the job's
//! kind (PNG, animated PNG, WAV, text), small, and every one says that it is simulated: in a PNG text
//! chunk, a WAV INFO chunk, or the text itself. No model ever runs.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use tessera_api::internal::{ArtifactKind, ArtifactMeta, ModelMemory};
use tessera_core::params::JobParams;
use tessera_core::{Capability, ErrorCode};

use super::{cancellable, Artifact, Engine, EngineError, ModelRoom, Progress, Resident, Task};

/// What every simulated artifact says about itself.
pub const SIGNATURE: &str = "tessera sim: simulated output, no model ran";

/// Largest side of a simulated image, in pixels (the requested size is scaled down).
const MAX_SIDE: u32 = 256;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    pub capability: Capability,
    pub models: Vec<String>,
    /// Simulated run time of a job (ms).
    #[serde(default)]
    pub run_ms: u64,
    /// Simulated time to load a model that is not loaded (ms).
    #[serde(default)]
    pub load_ms: u64,
    /// GPU memory the simulated models may fill, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Each model's simulated footprint, MiB.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_memory_mib: BTreeMap<String, u64>,
    /// Jobs whose prompt or text contains this fail with a retryable error,
    /// as if the engine crashed on them: for testing the attempt limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_when_prompt_contains: Option<String>,
}

pub struct Sim {
    config: SimConfig,
    loaded: Resident,
}

impl Sim {
    pub fn new(config: SimConfig) -> Self {
        let loaded = Resident::new(ModelRoom {
            memory_mib: config.memory_mib,
            model_memory_mib: config.model_memory_mib.clone(),
        });
        Self { config, loaded }
    }
}

#[async_trait]
impl Engine for Sim {
    fn kind(&self) -> &'static str {
        "sim"
    }

    fn capability(&self) -> Capability {
        self.config.capability
    }

    fn models(&self) -> Vec<String> {
        self.config.models.clone()
    }

    fn loaded_models(&self) -> Vec<String> {
        self.loaded.list()
    }

    fn model_memory(&self) -> Vec<ModelMemory> {
        self.loaded.memory()
    }

    async fn run(
        &self,
        task: &Task,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<Vec<Artifact>, EngineError> {
        if !self.loaded.holds(&task.model) {
            sleep(self.config.load_ms, cancel).await?;
        }
        self.loaded.used(&task.model);
        if let Some(marker) = &self.config.fail_when_prompt_contains {
            if text_of(&task.params).contains(marker.as_str()) {
                return Err(EngineError {
                    code: ErrorCode::EngineCrashed,
                    message: "the simulated engine crashed on this job".into(),
                    retryable: true,
                });
            }
        }
        let out = artifact(task);
        // A text reply is written as it goes, a tenth at each step.
        let text = match &task.params {
            JobParams::Text(_) => std::str::from_utf8(&out.bytes).unwrap_or_default(),
            _ => "",
        };
        let tenth = |step: u64| {
            let mut at = text.len() * step as usize / 10;
            while !text.is_char_boundary(at) {
                at += 1;
            }
            at
        };
        if self.config.run_ms > 0 {
            for step in 1..=10u64 {
                sleep(self.config.run_ms / 10, cancel).await?;
                progress.text(&text[tenth(step - 1)..tenth(step)]);
                progress.steps(step, 10);
            }
        } else if cancel.is_cancelled() {
            return Err(EngineError::cancelled());
        } else {
            progress.text(text);
        }
        Ok(vec![out])
    }

    async fn unload(&self) -> Result<(), EngineError> {
        self.loaded.clear();
        Ok(())
    }
}

async fn sleep(ms: u64, cancel: &CancellationToken) -> Result<(), EngineError> {
    if ms == 0 {
        return Ok(());
    }
    cancellable(cancel, async {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(())
    })
    .await
}

fn text_of(params: &JobParams) -> &str {
    match params {
        JobParams::Image(p) => &p.prompt,
        JobParams::Video(p) => &p.prompt,
        JobParams::Text(p) => &p.prompt,
        JobParams::TextToSpeech(p) => &p.text,
        JobParams::SpeechToText(_) => "",
    }
}

/// The simulated output of a job.
pub fn artifact(task: &Task) -> Artifact {
    match &task.params {
        JobParams::Image(p) => {
            let (w, h) = scaled(p.width, p.height);
            picture(ArtifactKind::Image, "png", w, h, 1, &p.prompt)
        }
        JobParams::Video(p) => {
            let (w, h) = scaled(p.width, p.height);
            picture(
                ArtifactKind::Video,
                "apng",
                w,
                h,
                p.frames().clamp(1, 8),
                &p.prompt,
            )
        }
        JobParams::Text(p) => Artifact::text(format!(
            "[{SIGNATURE}] A reply of at most {} tokens to a {}-character prompt would be here.",
            p.max_tokens,
            p.prompt.chars().count()
        )),
        JobParams::SpeechToText(_) => {
            let input = task.inputs.first();
            Artifact::text(format!(
                "[{SIGNATURE}] A transcript of {} bytes of {} would be here.",
                input.map_or(0, |i| i.bytes.len()),
                input.map_or("audio", |i| i.content_type.as_str())
            ))
        }
        JobParams::TextToSpeech(p) => {
            let seconds = (p.text.chars().count() as f32 * 0.06 / p.speed).clamp(0.2, 10.0);
            Artifact {
                meta: ArtifactMeta {
                    kind: ArtifactKind::Audio,
                    format: "wav".into(),
                    width: None,
                    height: None,
                    classification: None,
                    usage: None,
                },
                bytes: Bytes::from(wav_tone(seconds, 16_000)),
            }
        }
    }
}

fn scaled(width: u32, height: u32) -> (u32, u32) {
    let longest = width.max(height).max(1);
    if longest <= MAX_SIDE {
        return (width.max(1), height.max(1));
    }
    let scale =
        |side: u32| ((u64::from(side) * u64::from(MAX_SIDE)) / u64::from(longest)).max(1) as u32;
    (scale(width), scale(height))
}

/// A gradient PNG (animated when `frames > 1`) with the signature and the
/// prompt in text chunks.
fn picture(
    kind: ArtifactKind,
    format: &str,
    w: u32,
    h: u32,
    frames: u32,
    prompt: &str,
) -> Artifact {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder
            .add_text_chunk("Software".into(), SIGNATURE.into())
            .expect("static text is valid Latin-1");
        let comment: String = prompt
            .chars()
            .map(|c| {
                if c.is_ascii() && !c.is_ascii_control() {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        encoder
            .add_text_chunk("Comment".into(), comment)
            .expect("ASCII text is valid Latin-1");
        if frames > 1 {
            encoder
                .set_animated(frames, 0)
                .expect("frame count is positive");
        }
        // Simulated work should cost next to nothing: every row is one colour
        // (a vertical gradient), so with the `Up` filter all rows but the
        // first are zeros, which compress almost for free.
        encoder.set_compression(png::Compression::Fast);
        encoder.set_filter(png::FilterType::Up);
        encoder.set_adaptive_filter(png::AdaptiveFilterType::NonAdaptive);
        let mut writer = encoder.write_header().expect("writing to a Vec");
        let (w, h) = (w as usize, h as usize);
        let mut data = vec![0u8; w * h * 3];
        for frame in 0..frames {
            let blue = (frame * 255 / frames.max(1)) as u8;
            for (y, line) in data.chunks_exact_mut(w * 3).enumerate() {
                let shade = (y * 255 / h.max(1)) as u8;
                for pixel in line.chunks_exact_mut(3) {
                    pixel.copy_from_slice(&[shade / 2, shade, blue]);
                }
            }
            writer.write_image_data(&data).expect("writing to a Vec");
        }
        writer.finish().expect("writing to a Vec");
    }
    Artifact {
        meta: ArtifactMeta {
            kind,
            format: format.into(),
            width: Some(w),
            height: Some(h),
            classification: None,
            usage: None,
        },
        bytes: Bytes::from(out),
    }
}

/// A quiet 440 Hz tone as 16-bit mono WAV, with the signature in a LIST/INFO chunk.
fn wav_tone(seconds: f32, rate: u32) -> Vec<u8> {
    let samples = (seconds * rate as f32) as u32;
    let mut info = Vec::new();
    for (id, text) in [(b"ISFT", SIGNATURE), (b"ICMT", "simulated speech: a tone")] {
        let mut bytes = text.as_bytes().to_vec();
        bytes.push(0);
        if bytes.len() % 2 == 1 {
            bytes.push(0);
        }
        info.extend_from_slice(id);
        info.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        info.extend_from_slice(&bytes);
    }
    let list_len = 4 + info.len() as u32;
    let data_len = samples * 2;
    let mut out = Vec::with_capacity(64 + info.len() + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(4 + (8 + 16) + (8 + list_len) + (8 + data_len)).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"LIST");
    out.extend_from_slice(&list_len.to_le_bytes());
    out.extend_from_slice(b"INFO");
    out.extend_from_slice(&info);
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        let t = i as f32 / rate as f32;
        let v = (t * 440.0 * std::f32::consts::TAU).sin() * 3000.0;
        out.extend_from_slice(&(v as i16).to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::params::{ImageParams, TextToSpeechParams};

    fn task(params: JobParams) -> Task {
        Task {
            job_id: tessera_core::JobId::generate(),
            model: "sdxl-1.0".into(),
            params,
            inputs: vec![],
        }
    }

    #[test]
    fn images_are_real_pngs_that_say_they_are_simulated() {
        let a = artifact(&task(JobParams::Image(ImageParams {
            prompt: "a red fox".into(),
            negative_prompt: None,
            width: 1024,
            height: 576,
            seed: None,
            steps: 20,
        })));
        let decoder = png::Decoder::new(std::io::Cursor::new(a.bytes.to_vec()));
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        assert_eq!((info.width, info.height), (256, 144));
        assert_eq!((a.meta.width, a.meta.height), (Some(256), Some(144)));
        assert!(info
            .uncompressed_latin1_text
            .iter()
            .any(|t| t.text == SIGNATURE));
    }

    #[test]
    fn speech_is_a_wav_file_that_says_it_is_simulated() {
        let a = artifact(&task(JobParams::TextToSpeech(TextToSpeechParams {
            text: "hello there".into(),
            voice: None,
            speed: 1.0,
        })));
        let b = &a.bytes;
        assert_eq!(&b[0..4], b"RIFF");
        assert_eq!(
            u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize,
            b.len() - 8
        );
        let text = String::from_utf8_lossy(b);
        assert!(text.contains(SIGNATURE));
    }

    #[tokio::test]
    async fn a_model_switch_costs_the_load_time_and_cancel_stops_the_run() {
        let sim = Sim::new(SimConfig {
            memory_mib: None,
            model_memory_mib: Default::default(),
            capability: Capability::Image,
            models: vec!["sdxl-1.0".into()],
            run_ms: 10_000,
            load_ms: 0,
            fail_when_prompt_contains: None,
        });
        let cancel = CancellationToken::new();
        let (progress, _rx) = Progress::new();
        let t = task(JobParams::Image(ImageParams {
            prompt: "x".into(),
            negative_prompt: None,
            width: 64,
            height: 64,
            seed: None,
            steps: 1,
        }));
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.cancel();
        });
        let e = sim.run(&t, &progress, &cancel).await.unwrap_err();
        assert_eq!(e.code, "cancelled");
        assert_eq!(sim.loaded_models(), vec!["sdxl-1.0".to_string()]);
    }

    #[tokio::test]
    async fn with_room_a_second_model_loads_beside_the_first() {
        let sim = Sim::new(SimConfig {
            memory_mib: Some(16_000),
            model_memory_mib: [("sdxl-1.0".to_owned(), 7_000), ("flux".to_owned(), 9_000)]
                .into_iter()
                .collect(),
            capability: Capability::Image,
            models: vec!["sdxl-1.0".into(), "flux".into()],
            run_ms: 0,
            load_ms: 300,
            fail_when_prompt_contains: None,
        });
        let cancel = CancellationToken::new();
        let (progress, _rx) = Progress::new();
        let image = |model: &str| {
            let mut t = task(JobParams::Image(ImageParams {
                prompt: "x".into(),
                negative_prompt: None,
                width: 64,
                height: 64,
                seed: None,
                steps: 1,
            }));
            t.model = model.into();
            t
        };
        for model in ["sdxl-1.0", "flux"] {
            let started = std::time::Instant::now();
            sim.run(&image(model), &progress, &cancel).await.unwrap();
            assert!(
                started.elapsed() >= Duration::from_millis(300),
                "{model} loads"
            );
        }
        assert_eq!(sim.loaded_models(), ["flux", "sdxl-1.0"]);
        assert_eq!(sim.model_memory().len(), 2);
    }
}
