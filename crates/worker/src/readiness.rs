//! Engine readiness: whether each engine can take a job now.
//!
//! A worker whose process is up may still front an engine that is not (a
//! ComfyUI restarting, a llama.cpp server loading its model). Sending it jobs
//! would burn their attempts on a dead engine, so the agent probes every
//! engine ([`Engine::probe`]) each heartbeat period, every
//! [`DOWN_PROBE_EVERY`] while one is down, and right after a run fails with
//! `engine_unavailable`; it reports what it found in each heartbeat and in
//! `/capabilities`, and refuses `/run_job` for an engine it knows is down. A
//! change is reported at once (an early heartbeat), so the scheduler hears of
//! an engine coming back within seconds, not a heartbeat period later.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use tessera_api::internal::EngineReadiness;

use crate::engine::{Engine, EngineError};

/// How often an engine that is down is probed again.
pub const DOWN_PROBE_EVERY: Duration = Duration::from_secs(2);

/// Longest error text reported for an engine.
const MAX_ERROR_CHARS: usize = 500;

/// What the last probe of one engine found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub ready: bool,
    /// Since when `ready` has held.
    pub since: DateTime<Utc>,
    /// Why the engine is not ready.
    pub error: Option<String>,
}

/// The readiness of a worker's engines, in the order of its engine list.
#[derive(Debug)]
pub struct Readiness(Mutex<Vec<State>>);

impl Readiness {
    /// Every engine ready until probed.
    pub fn new(engines: usize) -> Self {
        let now = Utc::now();
        Self(Mutex::new(vec![
            State {
                ready: true,
                since: now,
                error: None,
            };
            engines
        ]))
    }

    fn states(&self) -> std::sync::MutexGuard<'_, Vec<State>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, engine: usize) -> Option<State> {
        self.states().get(engine).cloned()
    }

    pub fn any_down(&self) -> bool {
        self.states().iter().any(|s| !s.ready)
    }

    /// Records a probe of engine `index`; true when its readiness changed.
    pub fn record(
        &self,
        index: usize,
        engine: &dyn Engine,
        probe: Result<(), EngineError>,
    ) -> bool {
        let mut states = self.states();
        let Some(state) = states.get_mut(index) else {
            return false;
        };
        let error = probe.err().map(|e| printable(&e.message));
        let ready = error.is_none();
        let changed = state.ready != ready;
        if changed {
            state.since = Utc::now();
            match &error {
                Some(e) => {
                    tracing::warn!(engine = engine.kind(), capability = %engine.capability(), error = %e, "engine down: no jobs for it until it answers again")
                }
                None => {
                    tracing::info!(engine = engine.kind(), capability = %engine.capability(), "engine ready again")
                }
            }
        }
        state.ready = ready;
        state.error = error;
        changed
    }

    /// The readiness of every engine, as a heartbeat carries it.
    pub fn report(&self, engines: &[Arc<dyn Engine>]) -> Vec<EngineReadiness> {
        let states = self.states();
        engines
            .iter()
            .zip(states.iter())
            .map(|(e, s)| EngineReadiness {
                engine: e.kind().to_owned(),
                capability: e.capability(),
                models: e.models(),
                ready: s.ready,
                since: s.since,
                error: s.error.clone(),
            })
            .collect()
    }
}

/// Probes one engine and records what it found; true when its readiness changed.
pub async fn probe_one(readiness: &Readiness, engines: &[Arc<dyn Engine>], index: usize) -> bool {
    let Some(engine) = engines.get(index) else {
        return false;
    };
    // The adapters bound their own requests; this bounds an adapter that does not.
    let probe = match tokio::time::timeout(
        crate::engine::PROBE_TIMEOUT + Duration::from_secs(1),
        engine.probe(),
    )
    .await
    {
        Ok(probe) => probe,
        Err(_) => Err(EngineError::unavailable(
            "the readiness probe did not finish in time",
        )),
    };
    // An engine coming back may have come back changed (ComfyUI restarted
    // with other custom nodes): its settings are checked again before the
    // heartbeat that says it is ready.
    let came_back = probe.is_ok() && readiness.get(index).is_some_and(|s| !s.ready);
    if came_back {
        if let Err(e) = engine.check().await {
            tracing::warn!(engine = engine.kind(), error = %e, "the engine is back but its settings could not be checked again");
        }
    }
    readiness.record(index, &**engine, probe)
}

/// Probes every engine at once; true when some engine's readiness changed.
pub async fn probe_all(readiness: &Readiness, engines: &[Arc<dyn Engine>]) -> bool {
    let probes = (0..engines.len()).map(|i| probe_one(readiness, engines, i));
    futures::future::join_all(probes)
        .await
        .into_iter()
        .any(|changed| changed)
}

/// `text` on one line of printable characters, at most [`MAX_ERROR_CHARS`].
fn printable(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_ERROR_CHARS)
        .collect();
    if line.trim().is_empty() {
        "the engine is not ready".into()
    } else {
        line
    }
}
