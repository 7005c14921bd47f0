//! Webhook mode: Telegram POSTs each update to `/telegram/{bot id}`.
//!
//! A request is believed only when its `X-Telegram-Bot-Api-Secret-Token`
//! header equals the secret the instance registered with `setWebhook` at
//! start (compared in constant time); anything else is answered 401 before
//! the body is read as an update. The answer is 200 as soon as the update is
//! handed to the bot, so Telegram never waits on a job.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use tessera_api::error::response as error;
use tessera_api::ErrorCode;

use crate::{Handler, Instance};

type Bots = Arc<HashMap<String, (String, Handler)>>;

/// The endpoint for the running instances that registered a webhook, with
/// `/healthz` and `/readyz` (ready when the scheduler at `scheduler_url` is).
pub fn router(instances: &[Instance], scheduler_url: &str) -> Router {
    let bots: Bots = Arc::new(
        instances
            .iter()
            .filter_map(|i| {
                let secret = i.webhook_secret.as_ref()?.expose().to_owned();
                Some((i.bot_id().to_owned(), (secret, i.handler.clone())))
            })
            .collect(),
    );
    Router::new()
        .route("/telegram/{bot_id}", post(update))
        .with_state(bots)
        .merge(tessera_chat::probes::routes(scheduler_url))
}

/// Equal bytes, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn update(
    State(bots): State<Bots>,
    Path(bot_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((secret, handler)) = bots.get(&bot_id) else {
        return error(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownBot,
            "no such bot on this endpoint",
        );
    };
    let given = headers
        .get("x-telegram-bot-api-secret-token")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !same(given, secret.as_bytes()) {
        return error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidSecret,
            "missing or wrong X-Telegram-Bot-Api-Secret-Token",
        );
    }
    match serde_json::from_slice::<teloxide_core::types::Update>(&body) {
        Ok(update) => {
            handler.dispatch(update);
            StatusCode::OK.into_response()
        }
        Err(e) => {
            // Telegram retries what is not answered 2xx; an update that will
            // never parse must not be retried forever.
            tracing::warn!(%bot_id, error = %e, "an update that does not parse; dropped");
            StatusCode::OK.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_compare_whole() {
        assert!(super::same(b"abc", b"abc"));
        assert!(!super::same(b"abc", b"abd"));
        assert!(!super::same(b"abc", b"ab"));
        assert!(!super::same(b"", b"a"));
    }
}
