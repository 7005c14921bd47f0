//! The generation forms: which fields each capability asks for, and how the
//! submitted values become a job's `params`.
//!
//! The website checks only what it must to build the JSON (a number is a
//! number); every rule about the values (lengths, ranges, what the plan
//! allows) is the scheduler's, and its error is shown next to the field it
//! names, in its own words, so the site and the API never disagree.

use std::collections::HashMap;

use serde_json::{Map, Value};

use tessera_core::Capability;

/// How a field is entered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// Multi-line text, at most this many characters.
    TextArea(usize),
    /// One line of text, at most this many characters.
    Line(usize),
    /// A number between `min` and `max` in steps of `step`.
    Number { min: f64, max: f64, step: f64 },
    /// One of the output sizes the visitor's plan allows.
    Resolution,
    /// An audio file.
    Audio,
}

/// One field of a generation form.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// The `params` key, and the form field's name.
    pub name: &'static str,
    pub label: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub required: bool,
    /// Shown in the empty field; also the value used when it is left empty.
    pub placeholder: &'static str,
}

const fn field(
    name: &'static str,
    label: &'static str,
    kind: Kind,
    required: bool,
    placeholder: &'static str,
    help: &'static str,
) -> Field {
    Field {
        name,
        label,
        help,
        kind,
        required,
        placeholder,
    }
}

const PROMPT: Field = field(
    "prompt",
    "Prompt",
    Kind::TextArea(tessera_core::params::MAX_PROMPT_CHARS),
    true,
    "a lighthouse on a cliff at dusk, oil painting",
    "Describe what you want to see.",
);
const NEGATIVE: Field = field(
    "negative_prompt",
    "Avoid",
    Kind::Line(tessera_core::params::MAX_PROMPT_CHARS),
    false,
    "blurry, text",
    "Optional: what should not appear.",
);
const SEED: Field = field(
    "seed",
    "Seed",
    Kind::Number {
        min: 0.0,
        max: 18_446_744_073_709_551_615.0,
        step: 1.0,
    },
    false,
    "random",
    "Optional: the same seed and prompt give the same picture.",
);
const RESOLUTION: Field = field(
    "resolution",
    "Size",
    Kind::Resolution,
    false,
    "",
    "Larger sizes cost more tokens; your plan sets the largest.",
);

/// The fields of `capability`'s form, in order.
pub fn fields(capability: Capability) -> &'static [Field] {
    match capability {
        Capability::Image => {
            const F: &[Field] = &[PROMPT, NEGATIVE, RESOLUTION, SEED];
            F
        }
        Capability::Video => {
            const F: &[Field] = &[
                PROMPT,
                NEGATIVE,
                RESOLUTION,
                field(
                    "duration_seconds",
                    "Length (seconds)",
                    Kind::Number {
                        min: 1.0,
                        max: 10.0,
                        step: 1.0,
                    },
                    false,
                    "4",
                    "1 to 10 seconds; longer videos cost more tokens.",
                ),
                SEED,
            ];
            F
        }
        Capability::Text => {
            const F: &[Field] = &[
                field(
                    "prompt",
                    "Prompt",
                    Kind::TextArea(tessera_core::params::MAX_TEXT_PROMPT_CHARS),
                    true,
                    "Write a haiku about GPUs sharing their time fairly.",
                    "What should the model answer?",
                ),
                field(
                    "system",
                    "Instructions",
                    Kind::Line(tessera_core::params::MAX_TEXT_PROMPT_CHARS),
                    false,
                    "You are a concise assistant.",
                    "Optional: how the model should behave.",
                ),
                field(
                    "max_tokens",
                    "Longest answer (tokens)",
                    Kind::Number {
                        min: 1.0,
                        max: 4096.0,
                        step: 1.0,
                    },
                    false,
                    "512",
                    "Longer answers cost more tokens.",
                ),
            ];
            F
        }
        Capability::SpeechToText => {
            const F: &[Field] = &[
                field(
                    "audio",
                    "Audio file",
                    Kind::Audio,
                    true,
                    "",
                    "A recording to transcribe: WAV, MP3, OGG, FLAC or M4A.",
                ),
                field(
                    "language",
                    "Language",
                    Kind::Line(2),
                    false,
                    "auto",
                    "Optional: a two-letter code such as en or de; empty to detect it.",
                ),
            ];
            F
        }
        Capability::TextToSpeech => {
            const F: &[Field] = &[
                field(
                    "text",
                    "Text",
                    Kind::TextArea(tessera_core::params::MAX_SPEECH_CHARS),
                    true,
                    "Hello from Tessera.",
                    "What should be read aloud?",
                ),
                field(
                    "speed",
                    "Speed",
                    Kind::Number {
                        min: 0.5,
                        max: 2.0,
                        step: 0.1,
                    },
                    false,
                    "1.0",
                    "0.5 (slow) to 2 (fast).",
                ),
            ];
            F
        }
    }
}

/// What the navigation and headings call a capability.
pub fn title(capability: Capability) -> &'static str {
    match capability {
        Capability::Image => "Image",
        Capability::Video => "Video",
        Capability::Text => "Text",
        Capability::SpeechToText => "Transcribe",
        Capability::TextToSpeech => "Speech",
    }
}

/// One sentence about what a capability makes.
pub fn summary(capability: Capability) -> &'static str {
    match capability {
        Capability::Image => "Turn a description into a picture.",
        Capability::Video => "Turn a description into a short video.",
        Capability::Text => "Ask a language model anything.",
        Capability::SpeechToText => "Turn a recording into text.",
        Capability::TextToSpeech => "Turn text into speech.",
    }
}

/// The sizes offered for `capability`, largest side at most `max_side`.
pub fn resolutions(capability: Capability, max_side: u32) -> Vec<&'static str> {
    let all: &[&str] = match capability {
        Capability::Video => &["832x480", "480x832", "1280x720", "720x1280"],
        _ => &[
            "1024x1024",
            "512x512",
            "768x768",
            "1344x768",
            "768x1344",
            "1536x1536",
            "2048x2048",
        ],
    };
    all.iter()
        .copied()
        .filter(|r| {
            r.split('x')
                .filter_map(|n| n.parse::<u32>().ok())
                .all(|n| n <= max_side)
        })
        .collect()
}

/// A value the website could not turn into JSON, with the field it belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// The job's `params` from the submitted `values` (empty fields left out, so
/// the scheduler fills in its defaults). An uploaded file joins them with
/// [`with_input`] once it is uploaded.
pub fn params(
    capability: Capability,
    values: &HashMap<String, String>,
) -> Result<Value, FieldError> {
    let mut out = Map::new();
    for f in fields(capability) {
        if f.kind == Kind::Audio {
            continue;
        }
        let raw = values.get(f.name).map(|v| v.trim()).unwrap_or_default();
        if raw.is_empty() {
            if f.required {
                return Err(FieldError {
                    field: f.name.into(),
                    message: format!("{} is required.", f.label),
                });
            }
            continue;
        }
        let value = match f.kind {
            Kind::Number { step, .. } if step >= 1.0 => raw
                .parse::<u64>()
                .map(Value::from)
                .map_err(|_| FieldError {
                    field: f.name.into(),
                    message: format!("{} must be a whole number.", f.label),
                })?,
            Kind::Number { .. } => raw
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .map(Value::from)
                .ok_or_else(|| FieldError {
                    field: f.name.into(),
                    message: format!("{} must be a number.", f.label),
                })?,
            _ => Value::String(values.get(f.name).cloned().unwrap_or_default()),
        };
        out.insert(f.name.into(), value);
    }
    Ok(Value::Object(out))
}

/// Names the uploaded input (`inp_...`) in a speech-to-text job's `params`.
pub fn with_input(params: &mut Value, input_id: &str) {
    if let Value::Object(map) = params {
        map.insert("input_id".into(), Value::String(input_id.to_owned()));
    }
}

/// The form field an API error's `field` (`params.prompt`) points at.
pub fn field_of(api_field: Option<&str>) -> Option<String> {
    let f = api_field?;
    let name = f.strip_prefix("params.").unwrap_or(f);
    Some(if name == "input_id" {
        "audio".into()
    } else {
        name.into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_fields_are_left_to_the_scheduler_defaults() {
        let p = params(
            Capability::Image,
            &values(&[("prompt", "a fox"), ("seed", ""), ("resolution", "512x512")]),
        )
        .unwrap();
        assert_eq!(
            p,
            serde_json::json!({"prompt": "a fox", "resolution": "512x512"})
        );
    }

    #[test]
    fn a_missing_prompt_or_a_word_for_a_number_names_its_field() {
        let e = params(Capability::Image, &values(&[("prompt", "  ")])).unwrap_err();
        assert_eq!(e.field, "prompt");
        let e = params(
            Capability::Text,
            &values(&[("prompt", "hi"), ("max_tokens", "many")]),
        )
        .unwrap_err();
        assert_eq!(e.field, "max_tokens");
        assert_eq!(e.message, "Longest answer (tokens) must be a whole number.");
    }

    #[test]
    fn speech_to_text_sends_the_uploaded_input() {
        let mut p = params(Capability::SpeechToText, &values(&[("language", "en")])).unwrap();
        with_input(&mut p, "inp_1");
        assert_eq!(
            p,
            serde_json::json!({"input_id": "inp_1", "language": "en"})
        );
        assert_eq!(field_of(Some("params.input_id")).as_deref(), Some("audio"));
    }

    #[test]
    fn sizes_stop_at_the_plan_limit() {
        assert!(resolutions(Capability::Image, 1024)
            .iter()
            .all(|r| !r.contains("1536") && !r.contains("2048")));
        assert!(resolutions(Capability::Image, 2048).contains(&"2048x2048"));
        assert_eq!(resolutions(Capability::Video, 1024), ["832x480", "480x832"]);
    }
}
