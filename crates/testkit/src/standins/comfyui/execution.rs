//! The queue runner: one prompt at a time, its nodes in dependency order,
//! samplers step by step with `progress` messages, the history entry
//! recorded at the end, and the failures a test injects (exceptions, dropped
//! sockets, a held queue, interrupts, restarts).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::media::save;
use super::nodes::{class_of, Role};
use super::routes::now_ms;
use super::{Item, Out, Shared};

pub(super) async fn run_queue(shared: Arc<Shared>) {
    loop {
        let next = {
            let mut state = shared.lock();
            if state.faults.hold || state.queue.is_empty() {
                None
            } else {
                let at = state
                    .queue
                    .iter()
                    .enumerate()
                    .min_by(|a, b| a.1.number.total_cmp(&b.1.number))
                    .map(|(i, _)| i)
                    .unwrap_or(0);
                let item = state.queue.remove(at);
                state.running = Some(item.clone());
                Some(item)
            }
        };
        match next {
            Some(item) => {
                shared.interrupt.store(false, Ordering::SeqCst);
                shared.broadcast_status();
                execute(&shared, &item).await;
                shared.lock().running = None;
                shared.broadcast_status();
            }
            None => shared.work.notified().await,
        }
    }
}

/// Why a prompt stopped early.
pub(super) enum Stop {
    Interrupted {
        node: String,
    },
    Failed {
        node: String,
        kind: String,
        message: String,
    },
}

async fn execute(shared: &Arc<Shared>, item: &Item) {
    let generation = shared.lock().generation;
    let sid = item.client_id.as_deref();
    let prompt_id = item.prompt_id.as_str();
    let mut messages: Vec<Value> = Vec::new();
    let say = |kind: &str, data: Value, messages: &mut Vec<Value>| {
        messages.push(json!([kind, data]));
        shared.send(sid, kind, data);
    };
    say(
        "execution_start",
        json!({ "prompt_id": prompt_id, "timestamp": now_ms() }),
        &mut messages,
    );
    say(
        "execution_cached",
        json!({ "nodes": [], "prompt_id": prompt_id, "timestamp": now_ms() }),
        &mut messages,
    );
    let order = execution_order(&item.prompt, &item.outputs);
    let mut injected = shared.lock().faults.execution_error.take();
    let has_sampler = order
        .iter()
        .any(|id| class_of(&item.prompt[id]).is_some_and(|c| c.role == Role::Sampler));
    let mut executed: Vec<String> = Vec::new();
    let mut outputs = Map::new();
    let mut stop = None;
    for id in &order {
        if shared.interrupt.swap(false, Ordering::SeqCst) {
            stop = Some(Stop::Interrupted { node: id.clone() });
            break;
        }
        let node = &item.prompt[id];
        let Some(class) = class_of(node) else {
            continue;
        };
        shared.send(
            sid,
            "executing",
            json!({ "node": id, "display_node": id, "prompt_id": prompt_id }),
        );
        let result = match class.role {
            Role::Sampler => run_sampler(shared, item, id, &mut injected).await,
            role if class.is_output() => save(shared, item, id, role).map(|ui| {
                shared.send(
                    sid,
                    "executed",
                    json!({ "node": id, "display_node": id, "output": ui, "prompt_id": prompt_id }),
                );
                outputs.insert(id.clone(), ui);
            }),
            _ => match (&injected, has_sampler) {
                (Some((kind, message)), false) => Err(Stop::Failed {
                    node: id.clone(),
                    kind: kind.clone(),
                    message: message.clone(),
                }),
                _ => Ok(()),
            },
        };
        if let Err(s) = result {
            stop = Some(s);
            break;
        }
        executed.push(id.clone());
    }
    let node_type = |id: &str| {
        item.prompt
            .get(id)
            .and_then(|n| n.get("class_type"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let status = match stop {
        None => {
            say(
                "execution_success",
                json!({ "prompt_id": prompt_id, "timestamp": now_ms() }),
                &mut messages,
            );
            "success"
        }
        Some(Stop::Interrupted { node }) => {
            say(
                "execution_interrupted",
                json!({
                    "prompt_id": prompt_id, "node_id": node, "node_type": node_type(&node),
                    "executed": executed, "timestamp": now_ms(),
                }),
                &mut messages,
            );
            "error"
        }
        Some(Stop::Failed {
            node,
            kind,
            message,
        }) => {
            say(
                "execution_error",
                json!({
                    "prompt_id": prompt_id, "node_id": node, "node_type": node_type(&node),
                    "executed": executed, "exception_message": message, "exception_type": kind,
                    "traceback": ["  File \"execution.py\", line 1, in execute\n"],
                    "current_inputs": {}, "current_outputs": {}, "timestamp": now_ms(),
                }),
                &mut messages,
            );
            "error"
        }
    };
    let meta: Map<String, Value> = outputs
        .keys()
        .map(|id| {
            (
                id.clone(),
                json!({ "node_id": id, "display_node": id, "parent_node": null, "real_node_id": id }),
            )
        })
        .collect();
    let mut state = shared.lock();
    if state.generation != generation {
        return;
    }
    state.history.insert(
        prompt_id.to_owned(),
        json!({
            "prompt": item.to_value(),
            "outputs": outputs,
            "status": { "status_str": status, "completed": status == "success", "messages": messages },
            "meta": meta,
        }),
    );
    drop(state);
    shared.send(
        sid,
        "executing",
        json!({ "node": null, "prompt_id": prompt_id }),
    );
}

/// The nodes the outputs need, each after the nodes it links to.
fn execution_order(prompt: &Map<String, Value>, outputs: &[String]) -> Vec<String> {
    fn visit(
        prompt: &Map<String, Value>,
        id: &str,
        seen: &mut HashSet<String>,
        order: &mut Vec<String>,
    ) {
        if !seen.insert(id.to_owned()) {
            return;
        }
        let inputs = prompt
            .get(id)
            .and_then(|n| n.get("inputs"))
            .and_then(Value::as_object);
        for value in inputs.into_iter().flat_map(|i| i.values()) {
            if let Some(target) = value
                .as_array()
                .and_then(|l| l.first())
                .and_then(Value::as_str)
            {
                if prompt.contains_key(target) {
                    visit(prompt, target, seen, order);
                }
            }
        }
        order.push(id.to_owned());
    }
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    let mut sorted = outputs.to_vec();
    sorted.sort();
    for output in &sorted {
        visit(prompt, output, &mut seen, &mut order);
    }
    order
}

pub(super) fn int_input(node: &Value, name: &str) -> Option<i128> {
    match node.pointer(&format!("/inputs/{name}"))? {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| n.as_f64().map(|f| f as i128)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

async fn run_sampler(
    shared: &Arc<Shared>,
    item: &Item,
    id: &str,
    injected: &mut Option<(String, String)>,
) -> Result<(), Stop> {
    let node = &item.prompt[id];
    let steps = int_input(node, "steps")
        .unwrap_or(1)
        .clamp(1, i128::from(shared.settings.max_steps.max(1))) as u32;
    for step in 1..=steps {
        tokio::time::sleep(shared.settings.step_delay).await;
        if shared.interrupt.swap(false, Ordering::SeqCst) {
            return Err(Stop::Interrupted {
                node: id.to_owned(),
            });
        }
        shared.send(
            item.client_id.as_deref(),
            "progress",
            json!({ "value": step, "max": steps, "prompt_id": item.prompt_id, "node": id }),
        );
        let drop_now = {
            let mut state = shared.lock();
            if state.faults.drop_ws_at_step == Some(step) {
                state.faults.drop_ws_at_step = None;
                true
            } else {
                false
            }
        };
        if drop_now {
            let sockets = std::mem::take(&mut shared.lock().sockets);
            for tx in sockets.into_values() {
                let _ = tx.send(Out::Close);
            }
        }
        if let Some((kind, message)) = injected.take() {
            return Err(Stop::Failed {
                node: id.to_owned(),
                kind,
                message,
            });
        }
    }
    Ok(())
}
