//! What a job asks for: the five kinds of generative work Tessera schedules.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A kind of work. Workers advertise the capabilities they serve; each job has one.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Text to image (ComfyUI).
    Image,
    /// Text to video (ComfyUI).
    Video,
    /// Text generation (KoboldCPP or any OpenAI-compatible server).
    Text,
    /// Transcription of an uploaded audio input (Whisper).
    SpeechToText,
    /// Speech synthesis (a TTS engine, espeak-ng by default).
    TextToSpeech,
}

impl Capability {
    pub const ALL: [Capability; 5] = [
        Capability::Image,
        Capability::Video,
        Capability::Text,
        Capability::SpeechToText,
        Capability::TextToSpeech,
    ];

    /// The stable name used on the wire and in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Capability::Image => "image",
            Capability::Video => "video",
            Capability::Text => "text",
            Capability::SpeechToText => "speech_to_text",
            Capability::TextToSpeech => "text_to_speech",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The text names no capability.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown capability {0:?}; expected one of image, video, text, speech_to_text, text_to_speech"
)]
pub struct UnknownCapability(pub String);

impl FromStr for Capability {
    type Err = UnknownCapability;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Capability::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCapability(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_json() {
        for c in Capability::ALL {
            assert_eq!(c.as_str().parse::<Capability>().unwrap(), c);
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
        assert!("IMAGE".parse::<Capability>().is_err());
    }
}
