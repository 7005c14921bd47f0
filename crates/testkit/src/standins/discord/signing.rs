//! HTTP interactions: the stand-in POSTs interactions and PINGs to a bot's
//! endpoint signed with the bot's Ed25519 key (or signed badly, on purpose),
//! takes a callback from the answer, and checks an endpoint as the developer
//! portal does before saving it.

use std::time::Instant;

use axum::body::Bytes;
use axum::http::header;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};

use super::interactions::apply_callback;
use super::rest::Payload;
use super::state::{strip_bot, unix_ms};
use super::types::{HttpAnswer, Invocation, SentInteraction, Signing};
use super::users::interaction_token;
use super::DiscordStandIn;

impl DiscordStandIn {
    /// POSTs the interaction for `invocation`, signed, to a bot's HTTP
    /// interactions endpoint, and takes a callback from its answer.
    pub async fn post_interaction(
        &self,
        endpoint_url: &str,
        token: &str,
        invocation: Invocation,
    ) -> HttpAnswer {
        let token = strip_bot(token);
        let sent = self.make_interaction(token, &invocation);
        let mut answer = self
            .post_signed(endpoint_url, token, &sent.payload, Signing::Valid)
            .await;
        if answer.status == Some(200) {
            if let Some(body) = answer.json() {
                if let Some(kind) = body.get("type").and_then(Value::as_u64) {
                    let data = body.get("data").cloned().unwrap_or(Value::Null);
                    let payload = Payload {
                        json: data,
                        files: Vec::new(),
                    };
                    let _ = apply_callback(
                        &self.shared,
                        sent.id,
                        &sent.token,
                        kind,
                        payload,
                        true,
                        "HTTP answer",
                    );
                }
            }
        }
        answer.interaction = Some(sent);
        answer
    }

    /// POSTs a PING (type 1), signed, to a bot's HTTP interactions endpoint.
    pub async fn ping(&self, endpoint_url: &str, token: &str) -> HttpAnswer {
        let token = strip_bot(token);
        let application_id = self.bot(token).application_id;
        let id = self.shared.snowflake();
        let itoken = interaction_token(id);
        let payload = json!({
            "id": id.to_string(),
            "application_id": application_id.to_string(),
            "type": 1,
            "token": itoken,
            "version": 1,
            "entitlements": [],
            "authorizing_integration_owners": {},
            "attachment_size_limit": self.shared.attachment_size_limit(),
            "user": null,
        });
        self.register_interaction(
            id,
            &itoken,
            application_id,
            1,
            None,
            None,
            None,
            json!(null),
        );
        let mut answer = self
            .post_signed(endpoint_url, token, &payload, Signing::Valid)
            .await;
        answer.interaction = Some(SentInteraction {
            id,
            token: itoken,
            application_id,
            payload,
        });
        answer
    }

    /// POSTs `body` to a bot's HTTP interactions endpoint, signed as told.
    pub async fn post_signed(
        &self,
        endpoint_url: &str,
        token: &str,
        body: &Value,
        signing: Signing,
    ) -> HttpAnswer {
        let token = strip_bot(token);
        let body = serde_json::to_vec(body).expect("JSON");
        let timestamp = (unix_ms() / 1000).to_string();
        let key = self.shared.lock().bots[token].key.clone();
        let signed = |key: &SigningKey, body: &[u8]| {
            let mut message = timestamp.as_bytes().to_vec();
            message.extend_from_slice(body);
            hex::encode(key.sign(&message).to_bytes())
        };
        let signature = match signing {
            Signing::Valid => Some(signed(&key, &body)),
            Signing::WrongKey => Some(signed(
                &SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
                &body,
            )),
            Signing::OtherBody => Some(signed(&key, b"{\"type\":1}")),
            Signing::Missing => None,
        };
        let mut request = self
            .shared
            .http
            .post(endpoint_url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                "Discord-Interactions/1.0 (+https://discord.com)",
            )
            .timeout(self.shared.options.ack_deadline)
            .body(body);
        if let Some(signature) = signature {
            request = request
                .header("X-Signature-Ed25519", signature)
                .header("X-Signature-Timestamp", &timestamp);
        }
        let started = Instant::now();
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let content_type = response
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = response.bytes().await.unwrap_or_default();
                HttpAnswer {
                    status: Some(status),
                    content_type,
                    body,
                    elapsed: started.elapsed(),
                    interaction: None,
                }
            }
            Err(_) => HttpAnswer {
                status: None,
                content_type: None,
                body: Bytes::new(),
                elapsed: started.elapsed(),
                interaction: None,
            },
        }
    }

    /// Checks an endpoint as the developer portal does before saving it: a
    /// signed PING must get 200 `{"type": 1}` and a badly signed one 401.
    pub async fn verify_endpoint(&self, endpoint_url: &str, token: &str) -> Result<(), String> {
        let answer = self.ping(endpoint_url, token).await;
        let pong = answer
            .json()
            .and_then(|b| b.get("type").and_then(Value::as_u64));
        if answer.status != Some(200) || pong != Some(1) {
            return Err(format!(
                "a signed PING got {:?} {:?}, not 200 {{\"type\": 1}}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
        }
        let bad = json!({"id": self.shared.snowflake().to_string(), "type": 1, "version": 1});
        for signing in [Signing::WrongKey, Signing::OtherBody] {
            let answer = self.post_signed(endpoint_url, token, &bad, signing).await;
            if answer.status != Some(401) {
                return Err(format!(
                    "a PING signed with {signing:?} got {:?}, not 401",
                    answer.status
                ));
            }
        }
        Ok(())
    }
}
