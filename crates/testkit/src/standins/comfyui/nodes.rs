//! The node classes the stand-in knows, as ComfyUI describes them: their
//! required and optional inputs with types and ranges, their outputs, and
//! their role when the prompt runs (loader, sampler, save node...), and
//! their description as `/object_info` gives it.

use serde_json::{json, Map, Value};

#[derive(Clone, Copy, Debug)]
pub(super) enum In {
    /// A link carrying this type.
    Link(&'static str),
    Int(i128, i128),
    Float(f64, f64),
    Str,
    Bool,
    Choice(&'static [&'static str]),
    /// A model file name: any non-empty string here.
    File,
}

impl In {
    pub(super) fn type_name(self) -> &'static str {
        match self {
            In::Link(t) => t,
            In::Int(..) => "INT",
            In::Float(..) => "FLOAT",
            In::Str => "STRING",
            In::Bool => "BOOLEAN",
            In::Choice(_) | In::File => "COMBO",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    Plain,
    /// An empty latent: where the size comes from.
    Latent,
    Sampler,
    SaveImage,
    PreviewImage,
    SaveWebp,
    SaveApng,
}

pub(super) struct NodeClass {
    pub(super) name: &'static str,
    pub(super) required: &'static [(&'static str, In)],
    pub(super) optional: &'static [(&'static str, In)],
    pub(super) outputs: &'static [&'static str],
    pub(super) role: Role,
}

impl NodeClass {
    pub(super) fn is_output(&self) -> bool {
        matches!(
            self.role,
            Role::SaveImage | Role::PreviewImage | Role::SaveWebp | Role::SaveApng
        )
    }
}

pub(super) const MAX_RESOLUTION: i128 = 8192;

const SAMPLERS: &[&str] = &[
    "euler",
    "euler_cfg_pp",
    "euler_ancestral",
    "heun",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_sde",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_3m_sde",
    "ddpm",
    "lcm",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
];

const SCHEDULERS: &[&str] = &[
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
];

const SIZE: In = In::Int(16, MAX_RESOLUTION);

const BATCH: In = In::Int(1, 4096);

const CLASSES: &[NodeClass] = &[
    NodeClass {
        name: "CheckpointLoaderSimple",
        required: &[("ckpt_name", In::File)],
        optional: &[],
        outputs: &["MODEL", "CLIP", "VAE"],
        role: Role::Plain,
    },
    NodeClass {
        name: "UNETLoader",
        required: &[
            ("unet_name", In::File),
            (
                "weight_dtype",
                In::Choice(&["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]),
            ),
        ],
        optional: &[],
        outputs: &["MODEL"],
        role: Role::Plain,
    },
    NodeClass {
        name: "CLIPLoader",
        required: &[
            ("clip_name", In::File),
            (
                "type",
                In::Choice(&[
                    "stable_diffusion",
                    "stable_cascade",
                    "sd3",
                    "stable_audio",
                    "mochi",
                    "ltxv",
                    "pixart",
                    "cosmos",
                    "lumina2",
                    "wan",
                    "hidream",
                    "chroma",
                    "ace",
                    "omnigen2",
                    "qwen_image",
                    "hunyuan_image",
                ]),
            ),
        ],
        optional: &[("device", In::Choice(&["default", "cpu"]))],
        outputs: &["CLIP"],
        role: Role::Plain,
    },
    NodeClass {
        name: "VAELoader",
        required: &[("vae_name", In::File)],
        optional: &[],
        outputs: &["VAE"],
        role: Role::Plain,
    },
    NodeClass {
        name: "CLIPTextEncode",
        required: &[("text", In::Str), ("clip", In::Link("CLIP"))],
        optional: &[],
        outputs: &["CONDITIONING"],
        role: Role::Plain,
    },
    NodeClass {
        name: "EmptyLatentImage",
        required: &[("width", SIZE), ("height", SIZE), ("batch_size", BATCH)],
        optional: &[],
        outputs: &["LATENT"],
        role: Role::Latent,
    },
    NodeClass {
        name: "EmptySD3LatentImage",
        required: &[("width", SIZE), ("height", SIZE), ("batch_size", BATCH)],
        optional: &[],
        outputs: &["LATENT"],
        role: Role::Latent,
    },
    NodeClass {
        name: "EmptyHunyuanLatentVideo",
        required: &[
            ("width", SIZE),
            ("height", SIZE),
            ("length", In::Int(1, MAX_RESOLUTION)),
            ("batch_size", BATCH),
        ],
        optional: &[],
        outputs: &["LATENT"],
        role: Role::Latent,
    },
    NodeClass {
        name: "ModelSamplingSD3",
        required: &[
            ("model", In::Link("MODEL")),
            ("shift", In::Float(0.0, 100.0)),
        ],
        optional: &[],
        outputs: &["MODEL"],
        role: Role::Plain,
    },
    NodeClass {
        name: "KSampler",
        required: &[
            ("model", In::Link("MODEL")),
            ("seed", In::Int(0, u64::MAX as i128)),
            ("steps", In::Int(1, 10_000)),
            ("cfg", In::Float(0.0, 100.0)),
            ("sampler_name", In::Choice(SAMPLERS)),
            ("scheduler", In::Choice(SCHEDULERS)),
            ("positive", In::Link("CONDITIONING")),
            ("negative", In::Link("CONDITIONING")),
            ("latent_image", In::Link("LATENT")),
            ("denoise", In::Float(0.0, 1.0)),
        ],
        optional: &[],
        outputs: &["LATENT"],
        role: Role::Sampler,
    },
    NodeClass {
        name: "KSamplerAdvanced",
        required: &[
            ("model", In::Link("MODEL")),
            ("add_noise", In::Choice(&["enable", "disable"])),
            ("noise_seed", In::Int(0, u64::MAX as i128)),
            ("steps", In::Int(1, 10_000)),
            ("cfg", In::Float(0.0, 100.0)),
            ("sampler_name", In::Choice(SAMPLERS)),
            ("scheduler", In::Choice(SCHEDULERS)),
            ("positive", In::Link("CONDITIONING")),
            ("negative", In::Link("CONDITIONING")),
            ("latent_image", In::Link("LATENT")),
            ("start_at_step", In::Int(0, 10_000)),
            ("end_at_step", In::Int(0, 10_000)),
            (
                "return_with_leftover_noise",
                In::Choice(&["disable", "enable"]),
            ),
        ],
        optional: &[],
        outputs: &["LATENT"],
        role: Role::Sampler,
    },
    NodeClass {
        name: "VAEDecode",
        required: &[("samples", In::Link("LATENT")), ("vae", In::Link("VAE"))],
        optional: &[],
        outputs: &["IMAGE"],
        role: Role::Plain,
    },
    NodeClass {
        name: "SaveImage",
        required: &[("images", In::Link("IMAGE")), ("filename_prefix", In::Str)],
        optional: &[],
        outputs: &[],
        role: Role::SaveImage,
    },
    NodeClass {
        name: "PreviewImage",
        required: &[("images", In::Link("IMAGE"))],
        optional: &[],
        outputs: &[],
        role: Role::PreviewImage,
    },
    NodeClass {
        name: "SaveAnimatedWEBP",
        required: &[
            ("images", In::Link("IMAGE")),
            ("filename_prefix", In::Str),
            ("fps", In::Float(0.01, 1000.0)),
            ("lossless", In::Bool),
            ("quality", In::Int(0, 100)),
            ("method", In::Choice(&["default", "fastest", "slowest"])),
        ],
        optional: &[],
        outputs: &[],
        role: Role::SaveWebp,
    },
    NodeClass {
        name: "SaveAnimatedPNG",
        required: &[
            ("images", In::Link("IMAGE")),
            ("filename_prefix", In::Str),
            ("fps", In::Float(0.01, 1000.0)),
            ("compress_level", In::Int(0, 9)),
        ],
        optional: &[],
        outputs: &[],
        role: Role::SaveApng,
    },
];

pub(super) fn class(name: &str) -> Option<&'static NodeClass> {
    CLASSES.iter().find(|c| c.name == name)
}

pub(super) fn class_of(node: &Value) -> Option<&'static NodeClass> {
    node.get("class_type")
        .and_then(Value::as_str)
        .and_then(class)
}

/// An input's spec as `/object_info` shows it: `[TYPE]` for a link, `[TYPE,
/// {options}]` for a widget, `[[choices...]]` for a combo.
fn input_spec(input: In) -> Value {
    let number = |n: i128| {
        u64::try_from(n)
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(n as i64))
    };
    match input {
        In::Link(t) => json!([t]),
        In::Int(min, max) => {
            json!(["INT", {"default": number(min), "min": number(min), "max": number(max), "step": 1}])
        }
        In::Float(min, max) => {
            json!(["FLOAT", {"default": min, "min": min, "max": max, "step": 0.01}])
        }
        In::Str => json!(["STRING", {"multiline": false}]),
        In::Bool => json!(["BOOLEAN", {"default": false}]),
        In::Choice(choices) => json!([choices, {}]),
        In::File => json!([[], {}]),
    }
}

/// One class as ComfyUI's `node_info` describes it.
fn info(class: &NodeClass) -> Value {
    let section = |inputs: &[(&str, In)]| -> Map<String, Value> {
        inputs
            .iter()
            .map(|(name, input)| ((*name).to_owned(), input_spec(*input)))
            .collect()
    };
    let names = |inputs: &'static [(&'static str, In)]| -> Vec<&'static str> {
        inputs.iter().map(|(n, _)| *n).collect()
    };
    json!({
        "input": {"required": section(class.required), "optional": section(class.optional)},
        "input_order": {"required": names(class.required), "optional": names(class.optional)},
        "output": class.outputs,
        "output_is_list": vec![false; class.outputs.len()],
        "output_name": class.outputs,
        "name": class.name,
        "display_name": class.name,
        "description": "",
        "python_module": "nodes",
        "category": if class.is_output() { "image" } else { "sampling" },
        "output_node": class.is_output(),
    })
}

/// `/object_info`: every class but the `removed` ones, by name; or only
/// `only` (an unknown name gives `{}`, as ComfyUI answers).
pub(super) fn object_info(
    removed: &std::collections::HashSet<String>,
    only: Option<&str>,
) -> Value {
    Value::Object(
        CLASSES
            .iter()
            .filter(|c| !removed.contains(c.name) && only.is_none_or(|o| o == c.name))
            .map(|c| (c.name.to_owned(), info(c)))
            .collect(),
    )
}
