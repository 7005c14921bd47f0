//! `/healthz` and `/readyz` for a chat frontend's HTTP listener (the Telegram
//! webhook, the Discord interactions endpoint), as every Tessera role has.
//!
//! Alive is the process answering. Ready is the scheduler's public API
//! answering its own `/readyz`: a bot can do nothing for a user without it,
//! so a load balancer or an orchestrator should send traffic elsewhere until
//! it is back. Neither needs a credential or reveals anything.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tessera_api::ErrorCode;

#[derive(Clone)]
struct Probe {
    http: reqwest::Client,
    scheduler_readyz: String,
}

/// The two probe routes, asking the scheduler at `scheduler_url` for readiness.
pub fn routes(scheduler_url: &str) -> Router {
    let probe = Probe {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default(),
        scheduler_readyz: format!("{}/readyz", scheduler_url.trim_end_matches('/')),
    };
    Router::new()
        .route("/healthz", get(alive))
        .route("/readyz", get(ready))
        .with_state(probe)
}

async fn alive() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(probe): State<Probe>) -> Response {
    match probe.http.get(&probe.scheduler_readyz).send().await {
        Ok(r) if r.status().is_success() => Json(json!({"status": "ready"})).into_response(),
        Ok(r) => unavailable(format!("the scheduler is not ready ({})", r.status())),
        Err(_) => unavailable("the scheduler does not answer".to_owned()),
    }
}

fn unavailable(message: String) -> Response {
    tessera_api::error::response(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::SchedulerUnavailable,
        message,
    )
}
