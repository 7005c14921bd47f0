//! Parameter validation: the border where untrusted text becomes a job.
//!
//! Frontends pass what users typed. Before anything is stored or sent to a worker it
//! is parsed into the strict per-capability shape below (unknown fields refused),
//! text is trimmed and checked for length and control characters, sizes are checked
//! against the plan, the model against the catalogue and the plan, and defaults are
//! filled in. What comes out, [`ValidJob`], is what the scheduler stores and what a
//! worker later receives, so workers never see a field nobody checked.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::billing::{CostRules, JobSize};
use crate::catalog::ModelCatalog;
use crate::ids::InputId;
use crate::{Capability, ErrorCode, Plan};

/// Longest prompt for image and video jobs, in characters.
pub const MAX_PROMPT_CHARS: usize = 2_000;
/// Longest prompt for text jobs, in characters.
pub const MAX_TEXT_PROMPT_CHARS: usize = 8_000;
/// Longest text to speak, in characters.
pub const MAX_SPEECH_CHARS: usize = 2_000;
/// Smallest side of an image or video, in pixels.
pub const MIN_SIDE: u32 = 64;

/// Normalised image parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageParams {
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    pub width: u32,
    pub height: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    pub steps: u32,
}

/// Normalised video parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VideoParams {
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    pub width: u32,
    pub height: u32,
    pub duration_seconds: u32,
    pub fps: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl VideoParams {
    /// Frames to make. Stored parameters are bounded by validation, but a
    /// worker reads them off the wire: a product past `u32` saturates
    /// rather than overflow.
    pub fn frames(&self) -> u32 {
        self.duration_seconds.saturating_mul(self.fps)
    }
}

/// Normalised text-generation parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextParams {
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub max_tokens: u32,
    pub temperature: f32,
}

/// Normalised speech-to-text parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpeechToTextParams {
    /// The uploaded audio to transcribe.
    pub input_id: InputId,
    /// ISO 639-1 language code, or absent to detect it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// Normalised text-to-speech parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextToSpeechParams {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    pub speed: f32,
}

/// Validated parameters of any capability. Serialised without a tag: the job's
/// capability says which variant it is.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum JobParams {
    Image(ImageParams),
    Video(VideoParams),
    Text(TextParams),
    SpeechToText(SpeechToTextParams),
    TextToSpeech(TextToSpeechParams),
}

impl JobParams {
    /// Reads stored parameters back for a known capability.
    pub fn from_stored(capability: Capability, value: Value) -> serde_json::Result<Self> {
        Ok(match capability {
            Capability::Image => JobParams::Image(serde_json::from_value(value)?),
            Capability::Video => JobParams::Video(serde_json::from_value(value)?),
            Capability::Text => JobParams::Text(serde_json::from_value(value)?),
            Capability::SpeechToText => JobParams::SpeechToText(serde_json::from_value(value)?),
            Capability::TextToSpeech => JobParams::TextToSpeech(serde_json::from_value(value)?),
        })
    }

    /// What the job's price depends on (`CostRules::cost`).
    pub fn size(&self) -> JobSize {
        match self {
            JobParams::Image(p) => JobSize::Image {
                width: p.width,
                height: p.height,
            },
            JobParams::Video(p) => JobSize::Video {
                duration_seconds: p.duration_seconds,
            },
            JobParams::Text(p) => JobSize::Text {
                max_tokens: p.max_tokens,
            },
            JobParams::SpeechToText(_) => JobSize::SpeechToText,
            JobParams::TextToSpeech(_) => JobSize::TextToSpeech,
        }
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("parameters always serialise")
    }
}

/// A request that passed validation: what to run, on which model, for how much.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidJob {
    pub capability: Capability,
    pub model: String,
    pub params: JobParams,
    pub cost_tokens: i64,
    /// Whether the job may produce adult content: `false` from [`validate`];
    /// the scheduler sets it from the request's context and the user's plan.
    pub adult_allowed: bool,
}

/// Why parameters were refused: a stable code, the field at fault, and a sentence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParamError {
    /// Machine-readable and stable: `invalid_params`, `prompt_too_long`,
    /// `resolution_not_allowed`, `model_not_allowed`, ...
    pub code: ErrorCode,
    /// The parameter at fault, as named in the request (`params.prompt`).
    pub field: String,
    pub message: String,
}

impl ParamError {
    fn new(code: ErrorCode, field: &str, message: impl Into<String>) -> Self {
        let field = if field.is_empty() {
            "params".to_owned()
        } else {
            format!("params.{field}")
        };
        Self {
            code,
            field,
            message: message.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageIn {
    prompt: String,
    negative_prompt: Option<String>,
    resolution: Option<String>,
    aspect_ratio: Option<String>,
    seed: Option<u64>,
    steps: Option<u32>,
    model: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VideoIn {
    prompt: String,
    negative_prompt: Option<String>,
    resolution: Option<String>,
    aspect_ratio: Option<String>,
    duration_seconds: Option<u32>,
    fps: Option<u32>,
    seed: Option<u64>,
    model: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextIn {
    prompt: String,
    system: Option<String>,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    model: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpeechToTextIn {
    input_id: String,
    language: Option<String>,
    model: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextToSpeechIn {
    text: String,
    voice: Option<String>,
    speed: Option<f32>,
    model: Option<String>,
}

/// Validates a job request's `params` for `capability` under `plan`.
pub fn validate(
    capability: Capability,
    raw: &Value,
    plan: &Plan,
    catalog: &ModelCatalog,
    costs: &CostRules,
) -> Result<ValidJob, ParamError> {
    if !raw.is_object() {
        return Err(ParamError {
            code: ErrorCode::InvalidParams,
            field: "params".into(),
            message: "params must be a JSON object".into(),
        });
    }
    let (model, params) = match capability {
        Capability::Image => {
            let p: ImageIn = parse(raw)?;
            let (width, height) = size(
                p.resolution.as_deref(),
                p.aspect_ratio.as_deref(),
                plan,
                (1024, 1024),
            )?;
            let steps = range("steps", p.steps.unwrap_or(30), 1, 100)?;
            let params = JobParams::Image(ImageParams {
                prompt: text("prompt", &p.prompt, MAX_PROMPT_CHARS)?,
                negative_prompt: optional_text(
                    "negative_prompt",
                    p.negative_prompt,
                    MAX_PROMPT_CHARS,
                )?,
                width,
                height,
                seed: p.seed,
                steps,
            });
            (p.model, params)
        }
        Capability::Video => {
            let p: VideoIn = parse(raw)?;
            let (width, height) = size(
                p.resolution.as_deref(),
                p.aspect_ratio.as_deref(),
                plan,
                (832, 480),
            )?;
            let params = JobParams::Video(VideoParams {
                prompt: text("prompt", &p.prompt, MAX_PROMPT_CHARS)?,
                negative_prompt: optional_text(
                    "negative_prompt",
                    p.negative_prompt,
                    MAX_PROMPT_CHARS,
                )?,
                width,
                height,
                duration_seconds: range(
                    "duration_seconds",
                    p.duration_seconds.unwrap_or(4),
                    1,
                    10,
                )?,
                fps: range("fps", p.fps.unwrap_or(16), 8, 30)?,
                seed: p.seed,
            });
            (p.model, params)
        }
        Capability::Text => {
            let p: TextIn = parse(raw)?;
            let temperature = p.temperature.unwrap_or(0.7);
            if !(0.0..=2.0).contains(&temperature) {
                return Err(ParamError::new(
                    ErrorCode::InvalidParams,
                    "temperature",
                    "temperature must be between 0 and 2",
                ));
            }
            let params = JobParams::Text(TextParams {
                prompt: text("prompt", &p.prompt, MAX_TEXT_PROMPT_CHARS)?,
                system: optional_text("system", p.system, MAX_TEXT_PROMPT_CHARS)?,
                max_tokens: range("max_tokens", p.max_tokens.unwrap_or(512), 1, 4096)?,
                temperature,
            });
            (p.model, params)
        }
        Capability::SpeechToText => {
            let p: SpeechToTextIn = parse(raw)?;
            let input_id = p.input_id.parse::<InputId>().map_err(|_| {
                ParamError::new(
                    ErrorCode::InvalidParams,
                    "input_id",
                    "input_id must be the id of an uploaded input (inp_...)",
                )
            })?;
            let language = match p.language {
                None => None,
                Some(l) if l.len() == 2 && l.bytes().all(|b| b.is_ascii_lowercase()) => Some(l),
                Some(_) => {
                    return Err(ParamError::new(
                        ErrorCode::InvalidParams,
                        "language",
                        "language must be a two-letter ISO 639-1 code such as `en`",
                    ))
                }
            };
            (
                p.model,
                JobParams::SpeechToText(SpeechToTextParams { input_id, language }),
            )
        }
        Capability::TextToSpeech => {
            let p: TextToSpeechIn = parse(raw)?;
            let voice = match p.voice {
                None => None,
                Some(v)
                    if !v.is_empty()
                        && v.len() <= 32
                        && v.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+')
                        }) =>
                {
                    Some(v)
                }
                Some(_) => {
                    return Err(ParamError::new(
                        ErrorCode::InvalidParams,
                        "voice",
                        "voice must be 1-32 letters, digits, `_`, `-` or `+`",
                    ))
                }
            };
            let speed = p.speed.unwrap_or(1.0);
            if !(0.5..=2.0).contains(&speed) {
                return Err(ParamError::new(
                    ErrorCode::InvalidParams,
                    "speed",
                    "speed must be between 0.5 and 2",
                ));
            }
            let params = JobParams::TextToSpeech(TextToSpeechParams {
                text: text("text", &p.text, MAX_SPEECH_CHARS)?,
                voice,
                speed,
            });
            (p.model, params)
        }
    };
    let model = choose_model(capability, model, plan, catalog)?;
    let cost_tokens = costs.cost(params.size());
    Ok(ValidJob {
        capability,
        model,
        params,
        cost_tokens,
        adult_allowed: false,
    })
}

fn parse<T: for<'de> Deserialize<'de>>(raw: &Value) -> Result<T, ParamError> {
    T::deserialize(raw).map_err(|e| {
        let msg = e.to_string();
        let code = if msg.starts_with("unknown field") {
            ErrorCode::UnknownParam
        } else if msg.starts_with("missing field") {
            ErrorCode::MissingParam
        } else {
            ErrorCode::InvalidParams
        };
        ParamError {
            code,
            field: "params".into(),
            message: format!("params: {msg}"),
        }
    })
}

fn choose_model(
    capability: Capability,
    requested: Option<String>,
    plan: &Plan,
    catalog: &ModelCatalog,
) -> Result<String, ParamError> {
    let entry = catalog.get(capability).ok_or_else(|| {
        ParamError::new(
            ErrorCode::CapabilityUnavailable,
            "",
            format!("no models are configured for {capability}"),
        )
    })?;
    let model = requested.unwrap_or_else(|| entry.default.clone());
    if !entry.models.contains(&model) {
        return Err(ParamError::new(
            ErrorCode::ModelUnknown,
            "model",
            format!(
                "model {model:?} is not offered for {capability}; choose one of {}",
                entry.models.join(", ")
            ),
        ));
    }
    if !plan.allows_model(&model) {
        return Err(ParamError::new(
            ErrorCode::ModelNotAllowed,
            "model",
            format!("the {} plan does not include model {model:?}", plan.name),
        ));
    }
    Ok(model)
}

/// Trims and checks user text: not empty, not too long, no control characters
/// other than newline and tab.
fn text(field: &str, value: &str, max_chars: usize) -> Result<String, ParamError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ParamError::new(
            if field == "prompt" {
                ErrorCode::PromptEmpty
            } else {
                ErrorCode::InvalidParams
            },
            field,
            format!("{field} must not be empty"),
        ));
    }
    let chars = trimmed.chars().count();
    if chars > max_chars {
        return Err(ParamError::new(
            if field == "prompt" {
                ErrorCode::PromptTooLong
            } else {
                ErrorCode::InvalidParams
            },
            field,
            format!("{field} is {chars} characters; the limit is {max_chars}"),
        ));
    }
    if trimmed
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ParamError::new(
            ErrorCode::InvalidParams,
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(trimmed.replace("\r\n", "\n"))
}

fn optional_text(
    field: &str,
    value: Option<String>,
    max_chars: usize,
) -> Result<Option<String>, ParamError> {
    match value {
        Some(v) if !v.trim().is_empty() => text(field, &v, max_chars).map(Some),
        _ => Ok(None),
    }
}

fn range(field: &str, value: u32, min: u32, max: u32) -> Result<u32, ParamError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ParamError::new(
            ErrorCode::InvalidParams,
            field,
            format!("{field} must be between {min} and {max}, not {value}"),
        ))
    }
}

/// Picks the output size from `resolution` (`WxH`) or `aspect_ratio` (`W:H`), and
/// checks it against the plan's longest side.
fn size(
    resolution: Option<&str>,
    aspect_ratio: Option<&str>,
    plan: &Plan,
    default: (u32, u32),
) -> Result<(u32, u32), ParamError> {
    let max = plan.max_resolution;
    let (w, h) = match (resolution, aspect_ratio) {
        (Some(_), Some(_)) => {
            return Err(ParamError::new(
                ErrorCode::InvalidParams,
                "resolution",
                "give resolution or aspect_ratio, not both",
            ))
        }
        (Some(r), None) => {
            let bad = || {
                ParamError::new(
                    ErrorCode::InvalidParams,
                    "resolution",
                    format!("resolution {r:?} must look like 1024x1024"),
                )
            };
            let (w, h) = r.split_once(['x', 'X']).ok_or_else(bad)?;
            let w: u32 = w.trim().parse().map_err(|_| bad())?;
            let h: u32 = h.trim().parse().map_err(|_| bad())?;
            if w % 8 != 0 || h % 8 != 0 || w < MIN_SIDE || h < MIN_SIDE {
                return Err(ParamError::new(
                    ErrorCode::InvalidParams,
                    "resolution",
                    format!("width and height must be multiples of 8, at least {MIN_SIDE}"),
                ));
            }
            (w, h)
        }
        (None, Some(ar)) => {
            let bad = || {
                ParamError::new(
                    ErrorCode::InvalidParams,
                    "aspect_ratio",
                    format!("aspect_ratio {ar:?} must look like 16:9, each side 1 to 32"),
                )
            };
            let (a, b) = ar.split_once(':').ok_or_else(bad)?;
            let a: u32 = a.trim().parse().map_err(|_| bad())?;
            let b: u32 = b.trim().parse().map_err(|_| bad())?;
            if !(1..=32).contains(&a) || !(1..=32).contains(&b) {
                return Err(bad());
            }
            // Keep the default's pixel area, clamp the long side to the plan.
            let area = f64::from(default.0) * f64::from(default.1);
            let mut w = (area * f64::from(a) / f64::from(b)).sqrt();
            let mut h = w * f64::from(b) / f64::from(a);
            let long = w.max(h);
            if long > f64::from(max) {
                w *= f64::from(max) / long;
                h *= f64::from(max) / long;
            }
            // A plan whose longest side is under MIN_SIDE (the table allows
            // any positive value) gets MIN_SIDE, which the check below
            // refuses; `clamp` with crossed bounds panicked here (found by
            // the `params` fuzz target).
            let snap = |x: f64| {
                ((x / 64.0).round() as u32 * 64).clamp(MIN_SIDE, (max - max % 8).max(MIN_SIDE))
            };
            (snap(w), snap(h))
        }
        (None, None) => {
            let long = default.0.max(default.1);
            if long <= max {
                default
            } else {
                let scale = |x: u32| (x * max / long) / 8 * 8;
                (
                    scale(default.0).max(MIN_SIDE),
                    scale(default.1).max(MIN_SIDE),
                )
            }
        }
    };
    if w > max || h > max {
        return Err(ParamError::new(
            ErrorCode::ResolutionNotAllowed,
            "resolution",
            format!(
                "{w}x{h} is larger than the {} plan allows ({max}x{max})",
                plan.name
            ),
        ));
    }
    Ok((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plans() -> Vec<Plan> {
        Plan::seed_plans()
    }

    fn check(cap: Capability, raw: Value, plan: &Plan) -> Result<ValidJob, ParamError> {
        validate(
            cap,
            &raw,
            plan,
            &ModelCatalog::default(),
            &CostRules::default(),
        )
    }

    #[test]
    fn the_seed_request_validates_with_defaults_filled_in() {
        let free = &plans()[0];
        let job = check(
            Capability::Image,
            json!({"prompt": "  a beautiful sunset ", "resolution": "1024x1024"}),
            free,
        )
        .unwrap();
        assert_eq!(job.model, "sdxl-1.0");
        assert_eq!(job.cost_tokens, 1);
        assert_eq!(
            job.params.to_value(),
            json!({"prompt": "a beautiful sunset", "width": 1024, "height": 1024, "steps": 30})
        );
        let back = JobParams::from_stored(Capability::Image, job.params.to_value()).unwrap();
        assert_eq!(back, job.params);
    }

    #[test]
    fn plan_limits_are_enforced() {
        let [free, starter, pro, _admin] = <[Plan; 4]>::try_from(plans()).unwrap();
        let big = json!({"prompt": "x", "resolution": "2048x2048"});
        assert_eq!(
            check(Capability::Image, big.clone(), &free)
                .unwrap_err()
                .code,
            "resolution_not_allowed"
        );
        assert_eq!(check(Capability::Image, big, &pro).unwrap().cost_tokens, 4);
        let flux = json!({"prompt": "x", "model": "flux-schnell"});
        assert_eq!(
            check(Capability::Image, flux.clone(), &free)
                .unwrap_err()
                .code,
            "model_not_allowed"
        );
        assert!(check(Capability::Image, flux, &starter).is_ok());
        let unknown = json!({"prompt": "x", "model": "dalle"});
        assert_eq!(
            check(Capability::Image, unknown, &pro).unwrap_err().code,
            "model_unknown"
        );
    }

    #[test]
    fn bad_text_is_refused_with_a_code_and_field() {
        let free = &plans()[0];
        let e = check(Capability::Image, json!({"prompt": "   "}), free).unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.field.as_str()),
            ("prompt_empty", "params.prompt")
        );
        let long = "é".repeat(MAX_PROMPT_CHARS + 1);
        let e = check(Capability::Image, json!({ "prompt": long }), free).unwrap_err();
        assert_eq!(e.code, "prompt_too_long");
        let e = check(Capability::Image, json!({"prompt": "a\u{0}b"}), free).unwrap_err();
        assert_eq!(e.code, "invalid_params");
        let e = check(Capability::Image, json!({"prompt": "x", "cfg": 7}), free).unwrap_err();
        assert_eq!(e.code, "unknown_param");
        let e = check(Capability::Image, json!({}), free).unwrap_err();
        assert_eq!(e.code, "missing_param");
        let e = check(Capability::Image, json!("prompt"), free).unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.field.as_str()),
            ("invalid_params", "params")
        );
        let e = check(Capability::Image, json!({"prompt": 5}), free).unwrap_err();
        assert_eq!(e.code, "invalid_params");
    }

    #[test]
    fn resolutions_and_aspect_ratios() {
        let [free, _, pro, _] = <[Plan; 4]>::try_from(plans()).unwrap();
        for bad in ["1024", "1024x", "axb", "1000x1001", "32x32", "-8x64"] {
            let e = check(
                Capability::Image,
                json!({"prompt": "x", "resolution": bad}),
                &pro,
            );
            assert_eq!(e.unwrap_err().code, "invalid_params", "{bad}");
        }
        let wide = check(
            Capability::Image,
            json!({"prompt": "x", "aspect_ratio": "16:9"}),
            &free,
        )
        .unwrap();
        let JobParams::Image(p) = wide.params else {
            panic!()
        };
        assert!(
            p.width > p.height && p.width <= 1024,
            "{}x{}",
            p.width,
            p.height
        );
        assert_eq!(p.width % 64, 0);
        let e = check(
            Capability::Image,
            json!({"prompt": "x", "aspect_ratio": "0:9"}),
            &free,
        );
        assert_eq!(e.unwrap_err().field, "params.aspect_ratio");
    }

    #[test]
    fn every_capability_has_a_valid_minimal_request() {
        let free = &plans()[0];
        let cases = [
            (Capability::Image, json!({"prompt": "cat"}), 1),
            (Capability::Video, json!({"prompt": "cat"}), 8),
            (Capability::Text, json!({"prompt": "hello"}), 1),
            (
                Capability::SpeechToText,
                json!({"input_id": "inp_01JD3Z8X9Q4W6E2R5T7Y9V1K3M"}),
                1,
            ),
            (Capability::TextToSpeech, json!({"text": "hello"}), 1),
        ];
        for (cap, raw, cost) in cases {
            let job = check(cap, raw, free).unwrap_or_else(|e| panic!("{cap}: {e}"));
            assert_eq!(job.cost_tokens, cost, "{cap}");
            let stored = JobParams::from_stored(cap, job.params.to_value()).unwrap();
            assert_eq!(stored, job.params);
        }
        let e = check(
            Capability::SpeechToText,
            json!({"input_id": "../../etc"}),
            free,
        );
        assert_eq!(e.unwrap_err().field, "params.input_id");
        let e = check(
            Capability::TextToSpeech,
            json!({"text": "hi", "voice": "a b"}),
            free,
        );
        assert_eq!(e.unwrap_err().field, "params.voice");
    }
}
