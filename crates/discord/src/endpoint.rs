//! The HTTP interactions endpoint: Discord POSTs each interaction to
//! `/discord/{bot id}`, signed with the application's Ed25519 key.
//!
//! A request is believed only when `X-Signature-Ed25519` verifies over
//! `X-Signature-Timestamp` followed by the raw body, with the key from the
//! bot's config, and the timestamp is within five minutes of now (so a
//! captured request cannot be replayed later). Anything else is answered 401
//! before the body is parsed, as Discord requires. A PING is answered with a
//! PONG; an application command with a deferred response (type 5) in the
//! HTTP answer itself, well within Discord's three seconds, and the command
//! is then handled in the background like one from the gateway.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::json;
use twilight_model::application::interaction::{Interaction, InteractionType};

use tessera_api::error::response as error;
use tessera_api::ErrorCode;

use crate::Handler;

/// Oldest (or furthest in the future) signed timestamp accepted, seconds.
const MAX_SKEW_SECS: u64 = 300;

type Bots = Arc<HashMap<String, (VerifyingKey, Handler)>>;

/// The endpoint for the given instances: `(bot id, public key, handler)`,
/// with `/healthz` and `/readyz` (ready when the scheduler at `scheduler_url` is).
pub fn router(bots: Vec<(String, VerifyingKey, Handler)>, scheduler_url: &str) -> Router {
    let bots: Bots = Arc::new(
        bots.into_iter()
            .map(|(id, key, handler)| (id, (key, handler)))
            .collect(),
    );
    Router::new()
        .route("/discord/{bot_id}", post(interaction))
        .with_state(bots)
        .merge(tessera_chat::probes::routes(scheduler_url))
}

/// Whether the signature headers verify over timestamp + body with `key`,
/// and the timestamp is fresh.
pub fn verify(key: &VerifyingKey, headers: &HeaderMap, body: &[u8], now_unix: i64) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(signature), Some(timestamp)) = (
        header("x-signature-ed25519"),
        header("x-signature-timestamp"),
    ) else {
        return false;
    };
    let Some(signature) = hex::decode(signature)
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
    else {
        return false;
    };
    let Ok(seconds) = timestamp.parse::<i64>() else {
        return false;
    };
    if now_unix.abs_diff(seconds) > MAX_SKEW_SECS {
        return false;
    }
    let mut message = Vec::with_capacity(timestamp.len() + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.extend_from_slice(body);
    key.verify_strict(&message, &signature).is_ok()
}

async fn interaction(
    State(bots): State<Bots>,
    Path(bot_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((key, handler)) = bots.get(&bot_id) else {
        return error(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownBot,
            "no such bot on this endpoint",
        );
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    if !verify(key, &headers, &body, now) {
        return error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidSignature,
            "invalid request signature",
        );
    }
    let interaction: Interaction = match serde_json::from_slice(&body) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(%bot_id, error = %e, "an interaction that does not parse");
            return error(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidInteraction,
                "the body is not an interaction",
            );
        }
    };
    match interaction.kind {
        InteractionType::Ping => Json(json!({"type": 1})).into_response(),
        InteractionType::ApplicationCommand => {
            // Deferred: the answer follows. Ephemeral (flag 64) when it is
            // for the asker's eyes only.
            let answer = if crate::answers_privately(&interaction) {
                json!({"type": 5, "data": {"flags": 64}})
            } else {
                json!({"type": 5})
            };
            handler.spawn_deferred(interaction);
            Json(answer).into_response()
        }
        _ => error(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnsupportedInteraction,
            "this bot only answers slash commands",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn signed(key: &SigningKey, timestamp: &str, body: &[u8]) -> HeaderMap {
        let mut message = timestamp.as_bytes().to_vec();
        message.extend_from_slice(body);
        let signature = key.sign(&message);
        let hex: String = signature
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut headers = HeaderMap::new();
        headers.insert("x-signature-ed25519", hex.parse().unwrap());
        headers.insert("x-signature-timestamp", timestamp.parse().unwrap());
        headers
    }

    #[test]
    fn signatures_verify_only_over_the_exact_body_and_a_fresh_timestamp() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = key.verifying_key();
        let body = br#"{"type":1}"#;
        let headers = signed(&key, "1700000000", body);
        assert!(verify(&public, &headers, body, 1_700_000_010));
        // Another body, a stale or future timestamp, another key, no headers.
        assert!(!verify(&public, &headers, br#"{"type":2}"#, 1_700_000_010));
        assert!(!verify(&public, &headers, body, 1_700_000_000 + 301));
        assert!(!verify(&public, &headers, body, 1_700_000_000 - 301));
        // A timestamp at the edge of i64 is refused, not an overflow.
        let extreme = signed(&key, &i64::MIN.to_string(), body);
        assert!(!verify(&public, &extreme, body, 1_700_000_010));
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert!(!verify(&other, &headers, body, 1_700_000_010));
        assert!(!verify(&public, &HeaderMap::new(), body, 1_700_000_010));
        let mut bad = headers.clone();
        bad.insert("x-signature-ed25519", "zz".parse().unwrap());
        assert!(!verify(&public, &bad, body, 1_700_000_010));
    }
}
