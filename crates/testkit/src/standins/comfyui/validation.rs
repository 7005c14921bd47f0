//! A posted graph checked as ComfyUI's `execution.validate_prompt` checks
//! it: known classes, required inputs, links to outputs of the right type,
//! literal values within their ranges; refusals in ComfyUI's shapes.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Map, Value};

use super::nodes::{class, class_of, In};
use super::routes::error_body;

pub(super) enum Validation {
    Accepted {
        outputs: Vec<String>,
        node_errors: Value,
    },
    Refused {
        error: Value,
        node_errors: Value,
    },
}

/// `removed` are classes this server does not have (a custom node not
/// installed), whatever the catalogue holds.
pub(super) fn validate(prompt: &Map<String, Value>, removed: &HashSet<String>) -> Validation {
    let refused = |error: Value| Validation::Refused {
        error,
        node_errors: json!({}),
    };
    let mut outputs = Vec::new();
    for (id, node) in prompt {
        let title = node.pointer("/_meta/title").and_then(Value::as_str);
        let Some(class_type) = node.get("class_type").and_then(Value::as_str) else {
            return refused(error_body(
                "missing_node_type",
                &format!(
                    "Node '{}' has no class_type. The workflow may be corrupted or a custom node is missing.",
                    title.map_or_else(|| format!("ID #{id}"), str::to_owned)
                ),
                &format!("Node ID '#{id}'"),
                json!({ "node_id": id, "class_type": null, "node_title": title }),
            ));
        };
        let Some(class) = class(class_type).filter(|_| !removed.contains(class_type)) else {
            return refused(error_body(
                "missing_node_type",
                &format!(
                    "Node '{}' not found. The custom node may not be installed.",
                    title.map_or_else(|| format!("ID #{id}"), str::to_owned)
                ),
                &format!("Node ID '#{id}'"),
                json!({ "node_id": id, "class_type": class_type, "node_title": title }),
            ));
        };
        if class.is_output() {
            outputs.push(id.clone());
        }
    }
    if outputs.is_empty() {
        return refused(error_body(
            "prompt_no_outputs",
            "Prompt has no outputs",
            "",
            json!({}),
        ));
    }
    let mut checker = Checker {
        prompt,
        done: HashMap::new(),
        errors: BTreeMap::new(),
        visiting: HashSet::new(),
    };
    let mut good = Vec::new();
    let mut dependents: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut lines = Vec::new();
    for output in &outputs {
        if checker.check(output) {
            good.push(output.clone());
        } else {
            for (id, errors) in &checker.errors {
                dependents
                    .entry(id.clone())
                    .or_default()
                    .push(output.clone());
                for e in errors {
                    lines.push(format!(
                        "{}: {}",
                        e["message"].as_str().unwrap_or(""),
                        e["details"].as_str().unwrap_or("")
                    ));
                }
            }
        }
    }
    let mut node_errors = Map::new();
    for (id, errors) in &checker.errors {
        let class_type = prompt
            .get(id)
            .and_then(|n| n.get("class_type"))
            .cloned()
            .unwrap_or(Value::Null);
        node_errors.insert(
            id.clone(),
            json!({
                "errors": errors,
                "dependent_outputs": dependents.get(id).cloned().unwrap_or_default(),
                "class_type": class_type,
            }),
        );
    }
    if good.is_empty() {
        lines.dedup();
        return Validation::Refused {
            error: error_body(
                "prompt_outputs_failed_validation",
                "Prompt outputs failed validation",
                &lines.join("\n"),
                json!({}),
            ),
            node_errors: Value::Object(node_errors),
        };
    }
    Validation::Accepted {
        outputs: good,
        node_errors: Value::Object(node_errors),
    }
}

struct Checker<'a> {
    pub(super) prompt: &'a Map<String, Value>,
    done: HashMap<String, bool>,
    errors: BTreeMap<String, Vec<Value>>,
    visiting: HashSet<String>,
}

impl Checker<'_> {
    /// Whether the node and everything upstream of it is valid.
    fn check(&mut self, id: &str) -> bool {
        if let Some(ok) = self.done.get(id) {
            return *ok;
        }
        if !self.visiting.insert(id.to_owned()) {
            self.errors
                .entry(id.to_owned())
                .or_default()
                .push(error_body(
                    "dependency_cycle",
                    "Dependency cycle detected",
                    id,
                    json!({}),
                ));
            return false;
        }
        let node = &self.prompt[id];
        let class = class_of(node).expect("classes were checked first");
        let empty = Map::new();
        let inputs = node
            .get("inputs")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let mut errors = Vec::new();
        let mut valid = true;
        let declared = class
            .required
            .iter()
            .map(|r| (r, true))
            .chain(class.optional.iter().map(|o| (o, false)));
        for (&(name, spec), required) in declared {
            let Some(value) = inputs.get(name) else {
                if required {
                    errors.push(error_body(
                        "required_input_missing",
                        "Required input is missing",
                        name,
                        json!({ "input_name": name }),
                    ));
                }
                continue;
            };
            if let Value::Array(link) = value {
                let target = link.first().and_then(Value::as_str);
                let slot = link.get(1).and_then(Value::as_u64);
                let (Some(target), Some(slot), 2) = (target, slot, link.len()) else {
                    errors.push(error_body(
                        "bad_linked_input",
                        "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        name,
                        json!({ "input_name": name, "received_value": value }),
                    ));
                    continue;
                };
                let Some(linked) = self.prompt.get(target).and_then(class_of) else {
                    errors.push(error_body(
                        "exception_during_inner_validation",
                        "Exception when validating inner node",
                        &format!("'{target}'"),
                        json!({ "input_name": name, "linked_node": value }),
                    ));
                    continue;
                };
                let received = linked.outputs.get(slot as usize).copied();
                if received != Some(spec.type_name()) {
                    let received = received.unwrap_or("*");
                    errors.push(error_body(
                        "return_type_mismatch",
                        "Return type mismatch between linked nodes",
                        &format!("{name}, received_type({received}) mismatch input_type({})", spec.type_name()),
                        json!({ "input_name": name, "received_type": received, "linked_node": value }),
                    ));
                    continue;
                }
                if !self.check(target) {
                    valid = false;
                }
                continue;
            }
            if let Some(e) = check_literal(name, spec, value) {
                errors.push(e);
            }
        }
        self.visiting.remove(id);
        let ok = valid && errors.is_empty();
        if !errors.is_empty() {
            self.errors.insert(id.to_owned(), errors);
        }
        self.done.insert(id.to_owned(), ok);
        ok
    }
}

/// ComfyUI's refusal of a number outside its input's range, if it is.
fn out_of_range<T: PartialOrd + std::fmt::Display>(
    v: T,
    min: T,
    max: T,
    name: &str,
    info: Value,
) -> Option<Value> {
    if v < min {
        Some(error_body(
            "value_smaller_than_min",
            &format!("Value {v} smaller than min of {min}"),
            name,
            info,
        ))
    } else if v > max {
        Some(error_body(
            "value_bigger_than_max",
            &format!("Value {v} bigger than max of {max}"),
            name,
            info,
        ))
    } else {
        None
    }
}

fn check_literal(name: &str, spec: In, value: &Value) -> Option<Value> {
    let info = |v: &Value| json!({ "input_name": name, "received_value": v });
    let convert = |kind: &str| {
        error_body(
            "invalid_input_type",
            &format!("Failed to convert an input value to a {kind} value"),
            &format!("{name}, {value}"),
            info(value),
        )
    };
    match spec {
        In::Link(_) => Some(error_body(
            "bad_linked_input",
            "Bad linked input, must be a length-2 list of [node_id, slot_index]",
            name,
            info(value),
        )),
        In::Int(min, max) => {
            let v: Option<i128> = match value {
                Value::Number(n) => n
                    .as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from))
                    .or_else(|| n.as_f64().map(|f| f.trunc() as i128)),
                Value::String(s) => s.trim().parse().ok(),
                Value::Bool(b) => Some(i128::from(*b)),
                _ => None,
            };
            let v = match v {
                Some(v) => v,
                None => return Some(convert("INT")),
            };
            out_of_range(v, min, max, name, info(value))
        }
        In::Float(min, max) => {
            let v = match value {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            match v {
                Some(v) if v.is_finite() => out_of_range(v, min, max, name, info(value)),
                _ => Some(convert("FLOAT")),
            }
        }
        In::Str | In::Bool => None,
        In::Choice(list) => {
            let ok = value.as_str().is_some_and(|v| list.contains(&v));
            (!ok).then(|| {
                error_body(
                    "value_not_in_list",
                    "Value not in list",
                    &format!("{name}: '{}' not in {list:?}", value_text(value)),
                    info(value),
                )
            })
        }
        In::File => {
            let ok = value.as_str().is_some_and(|v| !v.is_empty());
            (!ok).then(|| {
                error_body(
                    "value_not_in_list",
                    "Value not in list",
                    &format!("{name}: '{}' not in (list of files)", value_text(value)),
                    info(value),
                )
            })
        }
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_what_is_wrong() {
        let graph: Map<String, Value> = serde_json::from_value(json!({
            "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 8, "height": 64}},
            "2": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0], "vae": ["4", 2]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
        }))
        .unwrap();
        let Validation::Refused { error, node_errors } = validate(&graph, &HashSet::new()) else {
            panic!("accepted");
        };
        assert_eq!(error["type"], "prompt_outputs_failed_validation");
        let types: Vec<&str> = node_errors["1"]["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["value_smaller_than_min", "required_input_missing"]);
        assert_eq!(node_errors["1"]["dependent_outputs"], json!(["3"]));
        // Nodes downstream of an error carry none of their own.
        assert!(node_errors.get("2").is_none());

        let graph: Map<String, Value> = serde_json::from_value(json!({
            "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
        }))
        .unwrap();
        let Validation::Refused { node_errors, .. } = validate(&graph, &HashSet::new()) else {
            panic!("accepted");
        };
        assert_eq!(
            node_errors["2"]["errors"][0]["type"],
            "return_type_mismatch"
        );
    }
}
