//! Liveness and readiness probes, which need no credential and reveal nothing,
//! and the metrics, which need the metrics (or admin) token.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::auth::MetricsReader;
use super::error::ApiError;
use super::AppState;
use tessera_api::ErrorCode;

/// `GET /healthz`: the process is up.
pub async fn alive() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the database answers (migrations ran before the server started).
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::DatabaseUnavailable,
            "the database does not answer",
        )
    })?;
    Ok(Json(json!({"status": "ready"})))
}

/// `GET /metrics`: every metric in Prometheus's (OpenMetrics) text format.
pub async fn metrics(_: MetricsReader, State(state): State<AppState>) -> impl IntoResponse {
    let workers = &state.config.workers;
    let now = crate::lifecycle::now_ms();
    let text = state
        .lifecycle
        .metrics()
        .render(&*state.store, |seen| workers.is_online(seen, now), now)
        .await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text)
}
