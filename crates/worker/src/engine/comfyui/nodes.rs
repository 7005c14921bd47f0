//! The templates checked against the node classes the ComfyUI server really
//! has: `GET /object_info` describes each class (`{class: {"input":
//! {"required": {...}, "optional": {...}, "hidden": {...}}, "output": [...],
//! ...}}`), and a template naming a class the server lacks, an input its
//! class does not take, or leaving out one it requires would be refused by
//! ComfyUI on every job. Such a model is refused once, here, with a sentence
//! naming the model, the node and the class, and is no longer offered; the
//! others go on. The check runs when the worker starts and can run again
//! ([`ComfyUi::check_templates`]) when ComfyUI comes back, perhaps with other
//! custom nodes.

use std::collections::BTreeMap;
use std::sync::Mutex;

use reqwest::StatusCode;
use serde_json::{Map, Value};

use super::client::CONTROL_TIMEOUT;
use super::{ComfyUi, EngineError, Template};

/// What the last check found, per model.
#[derive(Debug, Default)]
pub(super) struct Checked(Mutex<Option<BTreeMap<String, Option<String>>>>);

impl Checked {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<BTreeMap<String, Option<String>>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why `model` is refused, if the last check refused it. Before any
    /// check nothing is refused.
    pub(super) fn refusal(&self, model: &str) -> Option<String> {
        self.lock()
            .as_ref()
            .and_then(|m| m.get(model).cloned().flatten())
    }
}

/// The outcome of one check: the models offered and those refused, with why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateCheck {
    pub usable: Vec<String>,
    /// Model → the sentence saying why it is refused.
    pub refused: BTreeMap<String, String>,
}

/// Why `template` cannot run on a server with these node classes, naming
/// the first node at fault; `None` when it can.
pub(super) fn mismatch(
    model: &str,
    template: &Template,
    classes: &Map<String, Value>,
) -> Option<String> {
    for (id, node) in template.graph() {
        let class = node
            .get("class_type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(info) = classes.get(class) else {
            return Some(format!(
                "model {model:?}: node {id} uses class {class}, which this ComfyUI does not have (is its custom node installed?)"
            ));
        };
        let section = |name: &str| {
            info.pointer(&format!("/input/{name}"))
                .and_then(Value::as_object)
        };
        let (required, optional, hidden) =
            (section("required"), section("optional"), section("hidden"));
        let takes = |input: &str| {
            [required, optional, hidden]
                .iter()
                .any(|s| s.is_some_and(|s| s.contains_key(input)))
        };
        let inputs = node.get("inputs").and_then(Value::as_object);
        for input in inputs.into_iter().flat_map(|i| i.keys()) {
            if !takes(input) {
                return Some(format!(
                    "model {model:?}: node {id} ({class}) sets input {input:?}, which this ComfyUI's {class} does not take"
                ));
            }
        }
        for input in required.into_iter().flat_map(|r| r.keys()) {
            if !inputs.is_some_and(|i| i.contains_key(input)) {
                return Some(format!(
                    "model {model:?}: node {id} ({class}) leaves out input {input:?}, which this ComfyUI's {class} requires"
                ));
            }
        }
    }
    None
}

impl ComfyUi {
    /// Reads `/object_info` and checks every model's template against it;
    /// from then on only the models that pass are offered
    /// ([`Engine::models`](super::Engine::models)) and run. Each refusal is
    /// logged in words, and so is an engine left with no model. An error
    /// (ComfyUI unreachable or answering nonsense) changes nothing: call
    /// again once it answers.
    pub async fn check_templates(&self) -> Result<TemplateCheck, EngineError> {
        let response = self
            .http
            .get(self.endpoint("object_info"))
            .timeout(CONTROL_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(EngineError::unavailable(format!(
                "ComfyUI answered /object_info with {status}"
            )));
        }
        let classes: Map<String, Value> = response.json().await.map_err(|e| {
            EngineError::invalid_output(format!(
                "ComfyUI's /object_info is not a map of node classes: {e}"
            ))
        })?;
        let mut found = BTreeMap::new();
        let mut check = TemplateCheck::default();
        for model in &self.config.models {
            let why = self
                .templates
                .get(model)
                .and_then(|t| mismatch(model, t, &classes));
            match &why {
                Some(why) => {
                    if self.checked.refusal(model).as_deref() != Some(why.as_str()) {
                        tracing::error!(url = %self.config.url, "comfyui refuses {why}; the model is not offered");
                    }
                    check.refused.insert(model.clone(), why.clone());
                }
                None => {
                    if self.checked.refusal(model).is_some() {
                        tracing::info!(url = %self.config.url, %model, "comfyui model's template now matches the server; offered again");
                    }
                    check.usable.push(model.clone());
                }
            }
            found.insert(model.clone(), why);
        }
        if check.usable.is_empty() {
            tracing::error!(
                url = %self.config.url,
                refused = check.refused.len(),
                "every model of this comfyui engine is refused: it serves nothing until its templates match the server's node classes"
            );
        }
        *self.checked.lock() = Some(found);
        Ok(check)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tessera_core::Capability;

    use super::*;

    fn classes() -> Map<String, Value> {
        let info = |required: Value, optional: Value| json!({"input": {"required": required, "optional": optional}, "output": []});
        json!({
            "EmptyLatentImage": info(json!({"width": ["INT", {}], "height": ["INT", {}], "batch_size": ["INT", {}]}), json!({})),
            "SaveImage": info(json!({"images": ["IMAGE"], "filename_prefix": ["STRING", {}]}), json!({})),
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn template(extra: Value) -> Template {
        let mut graph = json!({
            "1": {"class_type": "EmptyLatentImage", "_meta": {"title": "tessera:size"},
                  "inputs": {"width": 512, "height": 512, "batch_size": 1}},
            "2": {"class_type": "KSampler", "_meta": {"title": "tessera:sampler"},
                  "inputs": {"seed": 1, "steps": 20, "latent_image": ["1", 0]}},
            "3": {"class_type": "CLIPTextEncode", "_meta": {"title": "tessera:prompt"},
                  "inputs": {"text": ""}},
            "4": {"class_type": "SaveImage", "_meta": {"title": "tessera:output"},
                  "inputs": {"images": ["2", 0], "filename_prefix": "t"}},
        });
        for (k, v) in extra.as_object().unwrap() {
            graph[k] = v.clone();
        }
        Template::parse(Capability::Image, &graph.to_string()).unwrap()
    }

    #[test]
    fn a_missing_class_an_unknown_input_and_a_left_out_input_are_named() {
        let mut classes = classes();
        let t = template(json!({}));
        let why = mismatch("sdxl", &t, &classes).unwrap();
        assert!(why.contains("node 2 uses class KSampler"), "{why}");
        classes.insert(
            "KSampler".into(),
            json!({"input": {"required": {"seed": ["INT"], "steps": ["INT"], "latent_image": ["LATENT"]}}}),
        );
        classes.insert(
            "CLIPTextEncode".into(),
            json!({"input": {"required": {"text": ["STRING"], "clip": ["CLIP"]}}}),
        );
        let why = mismatch("sdxl", &t, &classes).unwrap();
        assert!(
            why.contains("node 3 (CLIPTextEncode) leaves out input \"clip\""),
            "{why}"
        );
        classes["CLIPTextEncode"] = json!({"input": {"required": {"text": ["STRING"]}}});
        assert_eq!(mismatch("sdxl", &t, &classes), None);
        let t = template(json!({"5": {"class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": "t", "format": "png"}}}));
        let why = mismatch("sdxl", &t, &classes).unwrap();
        assert!(
            why.starts_with("model \"sdxl\": node 5 (SaveImage) sets input \"format\""),
            "{why}"
        );
    }

    #[test]
    fn optional_and_hidden_inputs_are_taken() {
        let mut classes = classes();
        classes.insert(
            "KSampler".into(),
            json!({"input": {"required": {"seed": ["INT"], "latent_image": ["LATENT"]},
                             "optional": {"steps": ["INT"]}}}),
        );
        classes.insert(
            "CLIPTextEncode".into(),
            json!({"input": {"required": {}, "hidden": {"text": "STRING"}}}),
        );
        assert_eq!(mismatch("sdxl", &template(json!({})), &classes), None);
    }
}
