//! The workflow templates: one API-format graph per model, read and checked
//! when the worker starts, and filled in with a job's parameters through the
//! nodes whose `_meta.title` names them.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Context;
use serde_json::{json, Map, Value};

use tessera_core::params::JobParams;
use tessera_core::Capability;

use super::EngineError;

/// Title of the text encoder(s) that receive the prompt (input `text`).
pub const TITLE_PROMPT: &str = "tessera:prompt";
/// Title of the text encoder(s) that receive the negative prompt (input `text`);
/// optional, and a job without one keeps the template's text.
pub const TITLE_NEGATIVE: &str = "tessera:negative";
/// Title of the empty latent(s) that receive `width`, `height` and, for video, `length`.
pub const TITLE_SIZE: &str = "tessera:size";
/// Title of the node(s) that receive the seed (`seed` or `noise_seed`) and, for
/// images, `steps`: a `KSampler`, or a `RandomNoise` and a `BasicScheduler`.
pub const TITLE_SAMPLER: &str = "tessera:sampler";
/// Title of a node that receives the frame rate (`fps` or `frame_rate`), for
/// video graphs whose output node does not take it.
pub const TITLE_FPS: &str = "tessera:fps";
/// Title of the node(s) whose saved files are the job's artifacts.
pub const TITLE_OUTPUT: &str = "tessera:output";

/// A checked workflow template: the graph, and which nodes receive what.
#[derive(Clone, Debug)]
pub struct Template {
    pub(super) capability: Capability,
    graph: Map<String, Value>,
    prompt: Vec<String>,
    negative: Vec<String>,
    size: Vec<String>,
    /// The nodes titled `tessera:sampler`.
    sampler: Vec<SamplerNode>,
    /// Node ids and the name of their frame-rate input.
    fps: Vec<(String, &'static str)>,
    pub(super) output: Vec<String>,
}

impl Template {
    /// Reads and checks `{dir}/{model}.json`.
    pub fn load(capability: Capability, dir: &Path, model: &str) -> anyhow::Result<Template> {
        if !valid_model_file_name(model) {
            anyhow::bail!(
                "comfyui model {model:?} cannot name a workflow file: use letters, digits, `.`, `_`, `-` or `+`, not starting with `.`"
            );
        }
        let path = dir.join(format!("{model}.json"));
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "comfyui model {model:?}: cannot read its workflow template {}",
                path.display()
            )
        })?;
        Template::parse(capability, &text).map_err(|e| {
            anyhow::anyhow!(
                "comfyui model {model:?}: workflow template {} is not usable: {e}",
                path.display()
            )
        })
    }

    /// Parses and checks an API-format graph for `capability`.
    pub fn parse(capability: Capability, text: &str) -> Result<Template, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("it is not valid JSON ({e})"))?;
        let Value::Object(graph) = value else {
            return Err("it must be a JSON object of nodes keyed by id".into());
        };
        if graph.contains_key("nodes") && graph.contains_key("links") {
            return Err(
                "it is a UI-format workflow; export it from ComfyUI with \"Export (API)\"".into(),
            );
        }
        if graph.is_empty() {
            return Err("it has no nodes".into());
        }
        for (id, node) in &graph {
            let Some(node) = node.as_object() else {
                return Err(format!("node {id:?} is not an object"));
            };
            match node.get("class_type") {
                Some(Value::String(c)) if !c.is_empty() => {}
                _ => return Err(format!("node {id:?} has no class_type")),
            }
            let Some(inputs) = node.get("inputs").and_then(Value::as_object) else {
                return Err(format!("node {id:?} has no inputs object"));
            };
            for (name, input) in inputs {
                if let Value::Array(link) = input {
                    let target = link.first().and_then(Value::as_str);
                    let slot = link.get(1).and_then(Value::as_u64);
                    match (target, slot, link.len()) {
                        (Some(t), Some(_), 2) if graph.contains_key(t) => {}
                        (Some(t), Some(_), 2) => {
                            return Err(format!(
                            "node {id:?} input {name:?} links to node {t:?}, which does not exist"
                        ))
                        }
                        _ => {
                            return Err(format!(
                            "node {id:?} input {name:?} is a list but not a link [node_id, slot]"
                        ))
                        }
                    }
                }
            }
        }
        let titled = |title: &str| -> Vec<String> {
            graph
                .iter()
                .filter(|(_, n)| n.pointer("/_meta/title").and_then(Value::as_str) == Some(title))
                .map(|(id, _)| id.clone())
                .collect()
        };
        let video = match capability {
            Capability::Image => false,
            Capability::Video => true,
            other => return Err(format!("comfyui serves image or video jobs, not {other}")),
        };
        let prompt = titled(TITLE_PROMPT);
        let negative = titled(TITLE_NEGATIVE);
        let size = titled(TITLE_SIZE);
        let samplers = titled(TITLE_SAMPLER);
        let fps_nodes = titled(TITLE_FPS);
        let output = titled(TITLE_OUTPUT);
        for (title, ids) in [
            (TITLE_PROMPT, &prompt),
            (TITLE_SIZE, &size),
            (TITLE_SAMPLER, &samplers),
            (TITLE_OUTPUT, &output),
        ] {
            if ids.is_empty() {
                return Err(format!("no node is titled {title:?}"));
            }
        }
        let check = |ids: &[String], title: &str, input: &str| -> Result<(), String> {
            for id in ids {
                literal_input(&graph, id, input)
                    .map_err(|e| format!("{title} node {id:?}: {e}"))?;
            }
            Ok(())
        };
        check(&prompt, TITLE_PROMPT, "text")?;
        check(&negative, TITLE_NEGATIVE, "text")?;
        check(&size, TITLE_SIZE, "width")?;
        check(&size, TITLE_SIZE, "height")?;
        if video {
            check(&size, TITLE_SIZE, "length")?;
        }
        let mut sampler = Vec::new();
        for id in &samplers {
            let seed = ["seed", "noise_seed"]
                .into_iter()
                .find(|k| literal_input(&graph, id, k).is_ok());
            let steps = literal_input(&graph, id, "steps").is_ok();
            if seed.is_none() && !steps {
                return Err(format!(
                    "{TITLE_SAMPLER} node {id:?} has no literal `seed`, `noise_seed` or `steps` input"
                ));
            }
            sampler.push(SamplerNode {
                id: id.clone(),
                seed,
                steps,
            });
        }
        if !sampler.iter().any(|n| n.seed.is_some()) {
            return Err(format!(
                "no {TITLE_SAMPLER} node has a literal `seed` or `noise_seed` input"
            ));
        }
        if !video && !sampler.iter().any(|n| n.steps) {
            return Err(format!(
                "no {TITLE_SAMPLER} node has a literal `steps` input, which image jobs set"
            ));
        }
        let mut fps = Vec::new();
        for id in &fps_nodes {
            let key = fps_input(&graph, id).ok_or_else(|| {
                format!("{TITLE_FPS} node {id:?} has no literal `fps` or `frame_rate` input")
            })?;
            fps.push((id.clone(), key));
        }
        if video {
            for id in &output {
                if let Some(key) = fps_input(&graph, id) {
                    fps.push((id.clone(), key));
                }
            }
            if fps.is_empty() {
                return Err(format!(
                    "nothing receives the frame rate: give the {TITLE_OUTPUT} node an `fps` or `frame_rate` input, or title a node {TITLE_FPS:?}"
                ));
            }
        }
        Ok(Template {
            capability,
            graph,
            prompt,
            negative,
            size,
            sampler,
            fps,
            output,
        })
    }

    /// The graph with a job's parameters written into its named nodes.
    /// `seed` is used when the job gives none.
    pub fn render(&self, params: &JobParams, seed: u64) -> Result<Value, EngineError> {
        let (prompt, negative, width, height, seed, steps, video) = match (params, self.capability)
        {
            (JobParams::Image(p), Capability::Image) => (
                &p.prompt,
                p.negative_prompt.as_deref(),
                p.width,
                p.height,
                p.seed.unwrap_or(seed),
                Some(p.steps),
                None,
            ),
            (JobParams::Video(p), Capability::Video) => (
                &p.prompt,
                p.negative_prompt.as_deref(),
                p.width,
                p.height,
                p.seed.unwrap_or(seed),
                None,
                Some((p.frames(), p.fps)),
            ),
            _ => {
                return Err(EngineError::rejected(format!(
                    "this comfyui engine serves {} jobs",
                    self.capability
                )))
            }
        };
        let mut graph = self.graph.clone();
        let mut set = |id: &str, input: &str, value: Value| {
            if let Some(inputs) = graph
                .get_mut(id)
                .and_then(|n| n.get_mut("inputs"))
                .and_then(Value::as_object_mut)
            {
                inputs.insert(input.to_owned(), value);
            }
        };
        for id in &self.prompt {
            set(id, "text", json!(prompt));
        }
        // Without a negative prompt the template's own text stays: it is the
        // model's recommended one.
        if let Some(negative) = negative {
            for id in &self.negative {
                set(id, "text", json!(negative));
            }
        }
        for id in &self.size {
            set(id, "width", json!(width));
            set(id, "height", json!(height));
            if let Some((frames, _)) = video {
                set(id, "length", json!(frames));
            }
        }
        for node in &self.sampler {
            if let Some(key) = node.seed {
                set(&node.id, key, json!(seed));
            }
            if let (true, Some(steps)) = (node.steps, steps) {
                set(&node.id, "steps", json!(steps));
            }
        }
        if let Some((_, fps)) = video {
            for (id, key) in &self.fps {
                let float = self
                    .graph
                    .get(id)
                    .and_then(|n| n.pointer(&format!("/inputs/{key}")))
                    .is_some_and(Value::is_f64);
                set(id, key, if float { json!(fps as f64) } else { json!(fps) });
            }
        }
        Ok(Value::Object(graph))
    }

    /// The graph as the template file has it, node id to node.
    pub(super) fn graph(&self) -> &Map<String, Value> {
        &self.graph
    }

    /// The `_meta.title` or class of a node, for messages.
    pub(super) fn describe(&self, id: &str) -> String {
        let node = self.graph.get(id);
        let title = node
            .and_then(|n| n.pointer("/_meta/title"))
            .and_then(Value::as_str);
        let class = node
            .and_then(|n| n.get("class_type"))
            .and_then(Value::as_str);
        match (title, class) {
            (Some(t), Some(c)) if t != c => format!("node {id} ({c} \"{t}\")"),
            (_, Some(c)) => format!("node {id} ({c})"),
            _ => format!("node {id}"),
        }
    }

    /// The sampling nodes among the `tessera:sampler` ones: those with both a
    /// seed and steps (`KSampler`), whose progress is the job's.
    pub(super) fn stepping_samplers(&self) -> HashSet<String> {
        self.sampler
            .iter()
            .filter(|n| n.seed.is_some() && n.steps)
            .map(|n| n.id.clone())
            .collect()
    }
}

#[derive(Clone, Debug)]
struct SamplerNode {
    id: String,
    /// The name of its seed input, if it has one.
    seed: Option<&'static str>,
    /// Whether it has a `steps` input.
    steps: bool,
}

/// The input is present and a literal value (not a link), so Tessera may set it.
fn literal_input(graph: &Map<String, Value>, id: &str, input: &str) -> Result<(), String> {
    match graph
        .get(id)
        .and_then(|n| n.pointer(&format!("/inputs/{input}")))
    {
        None => Err(format!("it has no `{input}` input")),
        Some(Value::Array(_)) => Err(format!(
            "its `{input}` input is a link; Tessera sets it, so it must be a plain value"
        )),
        Some(_) => Ok(()),
    }
}

fn fps_input(graph: &Map<String, Value>, id: &str) -> Option<&'static str> {
    ["fps", "frame_rate"]
        .into_iter()
        .find(|k| literal_input(graph, id, k).is_ok())
}

fn valid_model_file_name(model: &str) -> bool {
    (1..=128).contains(&model.len())
        && !model.starts_with('.')
        && model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::comfyui::follow::Watch;
    use crate::engine::Progress;
    use tessera_core::params::{ImageParams, VideoParams};

    const IMAGE: &str = include_str!("../../../workflows/image-example.json");
    const VIDEO: &str = include_str!("../../../workflows/video-example.json");

    fn image(seed: Option<u64>) -> JobParams {
        JobParams::Image(ImageParams {
            prompt: "a red fox".into(),
            negative_prompt: Some("blurry".into()),
            width: 768,
            height: 512,
            seed,
            steps: 12,
        })
    }

    fn titled<'a>(graph: &'a Value, title: &str) -> &'a Value {
        graph
            .as_object()
            .unwrap()
            .values()
            .find(|n| n.pointer("/_meta/title").and_then(Value::as_str) == Some(title))
            .unwrap()
    }

    #[test]
    fn the_shipped_templates_are_usable() {
        Template::parse(Capability::Image, IMAGE).unwrap();
        Template::parse(Capability::Video, VIDEO).unwrap();
        // An image graph has no frame count to set.
        let e = Template::parse(Capability::Video, IMAGE).unwrap_err();
        assert!(e.contains("length"), "{e}");
        // Only image and video.
        assert!(Template::parse(Capability::Text, IMAGE).is_err());
    }

    #[test]
    fn parameters_land_in_the_named_nodes() {
        let t = Template::parse(Capability::Image, IMAGE).unwrap();
        let g = t.render(&image(Some(42)), 7).unwrap();
        assert_eq!(titled(&g, TITLE_PROMPT)["inputs"]["text"], "a red fox");
        assert_eq!(titled(&g, TITLE_NEGATIVE)["inputs"]["text"], "blurry");
        assert_eq!(titled(&g, TITLE_SIZE)["inputs"]["width"], 768);
        assert_eq!(titled(&g, TITLE_SIZE)["inputs"]["height"], 512);
        assert_eq!(titled(&g, TITLE_SAMPLER)["inputs"]["seed"], 42);
        assert_eq!(titled(&g, TITLE_SAMPLER)["inputs"]["steps"], 12);
        // Without a seed, the one given is used.
        let g = t.render(&image(None), 7).unwrap();
        assert_eq!(titled(&g, TITLE_SAMPLER)["inputs"]["seed"], 7);
        // Links are left alone.
        assert!(titled(&g, TITLE_SAMPLER)["inputs"]["model"].is_array());
    }

    #[test]
    fn video_parameters_include_length_and_fps() {
        let t = Template::parse(Capability::Video, VIDEO).unwrap();
        let g = t
            .render(
                &JobParams::Video(VideoParams {
                    prompt: "waves".into(),
                    negative_prompt: None,
                    width: 832,
                    height: 480,
                    duration_seconds: 2,
                    fps: 16,
                    seed: Some(5),
                }),
                0,
            )
            .unwrap();
        assert_eq!(titled(&g, TITLE_SIZE)["inputs"]["length"], 32);
        let template: Value = serde_json::from_str(VIDEO).unwrap();
        assert_eq!(
            titled(&g, TITLE_NEGATIVE)["inputs"]["text"],
            titled(&template, TITLE_NEGATIVE)["inputs"]["text"]
        );
        assert_eq!(titled(&g, TITLE_OUTPUT)["inputs"]["fps"], 16.0);
        assert!(t.render(&image(None), 0).is_err());
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        let cases = [
            ("not json", "JSON"),
            ("[]", "object"),
            (r#"{"nodes": [], "links": []}"#, "UI-format"),
            (r#"{"1": {"inputs": {}}}"#, "class_type"),
            (
                r#"{"1": {"class_type": "X", "inputs": {"a": ["9", 0]}}}"#,
                "does not exist",
            ),
            (
                r#"{"1": {"class_type": "X", "inputs": {"a": ["1", 0, 3]}}}"#,
                "not a link",
            ),
            (
                r#"{"1": {"class_type": "X", "inputs": {}}}"#,
                "tessera:prompt",
            ),
        ];
        for (text, expected) in cases {
            let e = Template::parse(Capability::Image, text).unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
        }
        // A named node whose input is a link cannot be set.
        let linked = IMAGE.replacen("\"width\": 1024", "\"width\": [\"4\", 0]", 1);
        let e = Template::parse(Capability::Image, &linked).unwrap_err();
        assert!(e.contains("link"), "{e}");
        // Missing the sampler's seed.
        let seedless = IMAGE.replacen("\"seed\": 0", "\"noise\": 0", 1);
        let e = Template::parse(Capability::Image, &seedless).unwrap_err();
        assert!(e.contains("seed"), "{e}");
        // Image jobs set steps.
        let stepless = IMAGE.replacen("\"steps\": 30", "\"stops\": 30", 1);
        let e = Template::parse(Capability::Image, &stepless).unwrap_err();
        assert!(e.contains("steps"), "{e}");
    }

    #[test]
    fn model_names_must_be_plain_file_names() {
        assert!(valid_model_file_name("sdxl-1.0"));
        assert!(!valid_model_file_name("../etc/passwd"));
        assert!(!valid_model_file_name(".hidden"));
        assert!(!valid_model_file_name("a/b"));
        assert!(!valid_model_file_name(""));
    }

    /// Flux-style sampling: the seed on RandomNoise, the steps on
    /// BasicScheduler, and an untitled SamplerCustomAdvanced that reports.
    const CUSTOM: &str = r#"{
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}, "_meta": {"title": "tessera:prompt"}},
        "3": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}, "_meta": {"title": "tessera:size"}},
        "4": {"class_type": "RandomNoise", "inputs": {"noise_seed": 0}, "_meta": {"title": "tessera:sampler"}},
        "5": {"class_type": "BasicScheduler", "inputs": {"scheduler": "simple", "steps": 4, "denoise": 1.0, "model": ["1", 0]}, "_meta": {"title": "tessera:sampler"}},
        "6": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "7": {"class_type": "BasicGuider", "inputs": {"model": ["1", 0], "conditioning": ["2", 0]}},
        "8": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["4", 0], "guider": ["7", 0], "sampler": ["6", 0], "sigmas": ["5", 0], "latent_image": ["3", 0]}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}},
        "10": {"class_type": "SaveImage", "inputs": {"filename_prefix": "flux", "images": ["9", 0]}, "_meta": {"title": "tessera:output"}}
    }"#;

    #[test]
    fn seed_and_steps_may_sit_on_different_nodes() {
        let t = Template::parse(Capability::Image, CUSTOM).unwrap();
        let g = t.render(&image(Some(77)), 0).unwrap();
        assert_eq!(g["4"]["inputs"]["noise_seed"], 77);
        assert!(g["4"]["inputs"].get("steps").is_none());
        assert_eq!(g["5"]["inputs"]["steps"], 12);
        // The untitled sampling node's progress is the job's.
        let (progress, rx) = Progress::new();
        let mut w = Watch::new("p", &t, &progress);
        let msg = json!({"type": "progress", "data": {"value": 1, "max": 4, "prompt_id": "p", "node": "8"}});
        w.on_message(&msg.to_string());
        assert_eq!(*rx.borrow(), Some(25.0));
    }
}
