//! `espeak`: text-to-speech with espeak-ng run locally. No GPU, no model download.
//!
//! The text goes to espeak-ng on standard input (`--stdin`), never as an
//! argument, so a text starting with `-` cannot become an option; the voice was
//! checked against a strict pattern by the scheduler and is checked again here.
//! espeak-ng streams its WAV with placeholder sizes in the header; they are
//! fixed before the file is returned so every player reads it.

use std::process::Stdio;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use tessera_api::internal::{ArtifactKind, ArtifactMeta};
use tessera_core::params::JobParams;
use tessera_core::Capability;

use super::{cancellable, Artifact, Engine, EngineError, Progress, Task};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EspeakConfig {
    /// The espeak-ng executable.
    #[serde(default = "default_program")]
    pub program: String,
    /// The model name jobs ask for.
    #[serde(default = "default_models")]
    pub models: Vec<String>,
    /// Voice when the job names none.
    #[serde(default = "default_voice")]
    pub default_voice: String,
    /// Words per minute at speed 1.0.
    #[serde(default = "default_wpm")]
    pub words_per_minute: u32,
}

fn default_program() -> String {
    "espeak-ng".into()
}
fn default_models() -> Vec<String> {
    vec!["espeak-ng".into()]
}
fn default_voice() -> String {
    "en".into()
}
fn default_wpm() -> u32 {
    175
}

pub struct Espeak {
    config: EspeakConfig,
}

impl Espeak {
    pub fn new(config: EspeakConfig) -> anyhow::Result<Self> {
        if !valid_voice(&config.default_voice) {
            anyhow::bail!(
                "espeak default_voice {:?} is not a voice name",
                config.default_voice
            );
        }
        Ok(Self { config })
    }
}

fn valid_voice(v: &str) -> bool {
    (1..=32).contains(&v.len())
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
}

#[async_trait]
impl Engine for Espeak {
    fn kind(&self) -> &'static str {
        "espeak"
    }

    fn capability(&self) -> Capability {
        Capability::TextToSpeech
    }

    fn models(&self) -> Vec<String> {
        self.config.models.clone()
    }

    fn loaded_models(&self) -> Vec<String> {
        // Nothing stays loaded: each job starts a process.
        Vec::new()
    }

    /// Runs `espeak-ng --version`: the binary is there and starts.
    async fn probe(&self) -> Result<(), EngineError> {
        let run = tokio::process::Command::new(&self.config.program)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status();
        match tokio::time::timeout(super::PROBE_TIMEOUT, run).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(EngineError::unavailable(format!(
                "{} --version exited with {status}",
                self.config.program
            ))),
            Ok(Err(e)) => Err(EngineError::unavailable(format!(
                "cannot run {}: {e}",
                self.config.program
            ))),
            Err(_) => Err(EngineError::unavailable(format!(
                "{} --version did not finish in time",
                self.config.program
            ))),
        }
    }

    async fn run(
        &self,
        task: &Task,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<Vec<Artifact>, EngineError> {
        let JobParams::TextToSpeech(p) = &task.params else {
            return Err(EngineError::rejected(
                "espeak only speaks text-to-speech jobs",
            ));
        };
        let voice = p.voice.as_deref().unwrap_or(&self.config.default_voice);
        if !valid_voice(voice) {
            return Err(EngineError::rejected(format!(
                "{voice:?} is not a voice name"
            )));
        }
        let wpm = ((self.config.words_per_minute as f32 * p.speed).round() as u32).clamp(80, 450);
        let mut child = tokio::process::Command::new(&self.config.program)
            .args(["--stdout", "--stdin", "-v", voice, "-s", &wpm.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                EngineError::unavailable(format!("cannot start {}: {e}", self.config.program))
            })?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let text = p.text.clone();
        let feed = async move {
            let _ = stdin.write_all(text.as_bytes()).await;
            let _ = stdin.write_all(b"\n").await;
            drop(stdin);
        };
        let (_, output) = cancellable(cancel, async {
            Ok(tokio::join!(feed, child.wait_with_output()))
        })
        .await?;
        let output = output.map_err(|e| EngineError::unavailable(format!("espeak-ng: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(EngineError::rejected(format!(
                "espeak-ng exited with {}: {}",
                output.status,
                stderr.trim()
            )));
        }
        let wav = fix_wav_sizes(output.stdout)
            .ok_or_else(|| EngineError::invalid_output("espeak-ng did not write a WAV file"))?;
        progress.percent(100.0);
        Ok(vec![Artifact {
            meta: ArtifactMeta {
                kind: ArtifactKind::Audio,
                format: "wav".into(),
                width: None,
                height: None,
                classification: None,
                usage: None,
            },
            bytes: Bytes::from(wav),
        }])
    }
}

/// Sets the RIFF and `data` chunk sizes of a streamed WAV to the real ones.
/// `None` if this is not a RIFF/WAVE file with a `data` chunk.
pub fn fix_wav_sizes(mut wav: Vec<u8>) -> Option<Vec<u8>> {
    if wav.len() < 12 || &wav[0..4] != b"RIFF" || &wav[8..12] != b"WAVE" {
        return None;
    }
    let riff = u32::try_from(wav.len() - 8).ok()?;
    wav[4..8].copy_from_slice(&riff.to_le_bytes());
    let mut at = 12;
    while at + 8 <= wav.len() {
        let id = &wav[at..at + 4];
        let size = u32::from_le_bytes(wav[at + 4..at + 8].try_into().ok()?) as usize;
        if id == b"data" {
            let real = u32::try_from(wav.len() - at - 8).ok()?;
            wav[at + 4..at + 8].copy_from_slice(&real.to_le_bytes());
            return Some(wav);
        }
        at += 8 + size + (size % 2);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_wav_sizes_are_fixed() {
        let mut wav = b"RIFF\xff\xff\xff\x7fWAVEfmt \x10\0\0\0".to_vec();
        wav.extend_from_slice(&[0; 16]);
        wav.extend_from_slice(b"data\xff\xff\xff\x7f");
        wav.extend_from_slice(&[1, 2, 3, 4]);
        let fixed = fix_wav_sizes(wav).unwrap();
        assert_eq!(u32::from_le_bytes(fixed[4..8].try_into().unwrap()), 48 - 8);
        assert_eq!(u32::from_le_bytes(fixed[40..44].try_into().unwrap()), 4);
        assert!(fix_wav_sizes(b"not a wav".to_vec()).is_none());
    }

    #[test]
    fn voices_are_plain_names() {
        assert!(valid_voice("en-us+f3"));
        assert!(!valid_voice("--stdout"));
        assert!(!valid_voice("en us"));
        assert!(!valid_voice(""));
    }
}
