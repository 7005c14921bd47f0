//! `/api/internal`: what workers send the scheduler, behind the internal token.
//!
//! Workers are trusted to run jobs, not to write arbitrary data: what they report
//! is checked like any other input before it is stored.

use axum::extract::State;
use axum::Json;

use tessera_api::internal::{Heartbeat, HeartbeatAck};
use tessera_api::schema::is_worker_address;
use tessera_api::ApiErrorBody;
use tessera_api::ErrorCode;
use tessera_core::catalog::is_model_name;

use super::auth::Internal;
use super::error::ApiError;
use super::extract::{ApiJson, Refusal};
use super::AppState;
use crate::lifecycle::now_ms;

/// Most capabilities or models one heartbeat may list.
const MAX_LIST: usize = 64;
/// The largest footprint a heartbeat may report for one model: 1 TiB, in MiB.
const MAX_MODEL_MIB: u64 = 1 << 20;

/// Record a worker's heartbeat: the worker is online, and the scheduler's
/// picture of what it runs is reconciled with the database.
#[utoipa::path(
    post, path = "/api/internal/heartbeat", tag = "internal",
    request_body = Heartbeat,
    responses(
        (status = 200, body = HeartbeatAck),
        (status = 422, body = ApiErrorBody),
    ),
    security(("internal_token" = []))
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    _internal: Internal,
    ApiJson(hb): ApiJson<Heartbeat>,
) -> Result<Json<HeartbeatAck>, ApiError> {
    check(&hb)?;
    let now = now_ms();
    let record = state.store.record_heartbeat(&hb, now).await?;
    if record.first_seen_at == record.last_seen_at {
        tracing::info!(worker_id = %hb.worker_id, address = %hb.address, "new worker");
    }
    let cancel_jobs = state.lifecycle.heartbeat(&hb, now).await;
    Ok(Json(HeartbeatAck {
        heartbeat_interval_ms: state.config.workers.heartbeat_interval_ms,
        cancel_jobs,
    }))
}

/// Every refusal of a heartbeat, a field that does not parse included, is
/// `invalid_heartbeat` naming the field.
impl Refusal for Heartbeat {
    fn refuse(field: &str, message: String) -> ApiError {
        ApiError::invalid(ErrorCode::InvalidHeartbeat, message).with_field(field)
    }
}

fn check(hb: &Heartbeat) -> Result<(), ApiError> {
    let bad = |field: &str, message: &str| {
        Err(
            ApiError::invalid(ErrorCode::InvalidHeartbeat, message.to_owned())
                .with_field(field.to_owned()),
        )
    };
    // The document's pattern, and a URL a client can reach.
    match url::Url::parse(&hb.address) {
        Ok(u) if is_worker_address(&hb.address) && u.host().is_some() => {}
        _ => {
            return bad(
                "address",
                "address must be the worker's http(s) base URL: a host name or IPv4 address, an optional port and path",
            )
        }
    }
    if hb.capabilities.is_empty() || hb.capabilities.len() > MAX_LIST {
        return bad(
            "capabilities",
            "capabilities must list 1 to 64 capabilities",
        );
    }
    for (field, list) in [("models", &hb.models), ("loaded_models", &hb.loaded_models)] {
        if list.len() > MAX_LIST || !list.iter().all(|m| is_model_name(m)) {
            return bad(field, "models must be at most 64 plain model names");
        }
    }
    if hb.model_memory.len() > MAX_LIST
        || !hb
            .model_memory
            .iter()
            .all(|m| hb.loaded_models.contains(&m.model) && m.mib <= MAX_MODEL_MIB)
    {
        return bad(
            "model_memory",
            "model_memory lists at most 64 of the loaded models, each at most 1048576 MiB",
        );
    }
    if let Some(name) = &hb.gpu_name {
        if name.chars().count() > 128 || name.chars().any(char::is_control) {
            return bad(
                "gpu_name",
                "gpu_name must be at most 128 printable characters",
            );
        }
    }
    if hb.engines.len() > MAX_LIST {
        return bad("engines", "engines must list at most 64 engines");
    }
    for e in &hb.engines {
        let plain = |t: &str, most: usize| {
            !t.is_empty() && t.chars().count() <= most && !t.chars().any(char::is_control)
        };
        if !plain(&e.engine, 64) {
            return bad(
                "engines",
                "an engine's name is 1 to 64 printable characters",
            );
        }
        if !hb.capabilities.contains(&e.capability)
            || e.models.len() > MAX_LIST
            || !e.models.iter().all(|m| hb.models.contains(m))
        {
            return bad(
                "engines",
                "an engine's capability and models must be among the worker's",
            );
        }
        if e.error.as_deref().is_some_and(|t| !plain(t, 1000)) {
            return bad(
                "engines",
                "an engine's error is 1 to 1000 printable characters",
            );
        }
    }
    // Stored as 64-bit signed integers, as the document's `int64` says.
    for (field, mib) in [
        ("gpu_memory_used", hb.gpu_memory_used),
        ("gpu_memory_total", hb.gpu_memory_total),
    ] {
        if mib.is_some_and(|m| i64::try_from(m).is_err()) {
            return bad(field, "GPU memory is a number of MiB, at most 2^63 - 1");
        }
    }
    if hb
        .gpu_utilization
        .is_some_and(|u| !(0.0..=100.0).contains(&u))
    {
        return bad(
            "gpu_utilization",
            "gpu_utilization is a percentage, 0 to 100",
        );
    }
    Ok(())
}
