//! A Discord stand-in: the v10 REST routes a slash-command bot uses, the
//! gateway, simulated users, and HTTP interactions with signed requests.
//!
//! It follows Discord's developer documentation (Gateway; Opcodes and
//! Status Codes; Application Commands; Receiving and Responding to
//! Interactions; Message and Webhook resources; Rate Limits):
//!
//! - REST lives under `/api/v10`, for clients that address it as a plain
//!   HTTP proxy (twilight-http's `ClientBuilder::proxy(addr, true)`). Routes
//!   that need a bot answer `401 {"message": "401: Unauthorized", "code": 0}`
//!   without `Authorization: Bot <token>` of a known bot. Snowflakes are
//!   strings and carry the time they were made. Every answer carries
//!   `X-RateLimit-Limit`, `-Remaining`, `-Reset`, `-Reset-After` and
//!   `-Bucket`; a route over its limit (per method and path, see
//!   [`DiscordOptions::route_limit`]) and every injected limit
//!   ([`DiscordStandIn::rate_limit`]) get `429 {"message": "You are being
//!   rate limited.", "retry_after", "global": false}` with `Retry-After` and
//!   `X-RateLimit-Scope: user`.
//! - Invalid bodies get the form-error envelope `400 {"code": 50035,
//!   "message": "Invalid Form Body", "errors": {path: {"_errors": [...]}}}`:
//!   command names that are not 1-32 lowercase letters, digits, `-`, `_` or
//!   `'`, descriptions outside 1-100 characters, more than 25 options or
//!   choices, required options after optional ones, message content over
//!   2000 characters, more than 10 embeds or files, embeds over their field
//!   limits or 6000 characters in all. A message with nothing in it gets
//!   `400 {"code": 50006, "message": "Cannot send an empty message"}`; a file
//!   over the interaction's `attachment_size_limit` gets `413` code 40005.
//! - An interaction must be answered once (`POST /interactions/{id}/{token}/
//!   callback`, types 4, 5 or 9 for a command; 1 only for a PING) within
//!   [`DiscordOptions::ack_deadline`] (3 s) of its dispatch; a late or
//!   unknown one gets `404` code 10062 "Unknown interaction", a second one
//!   `400` code 40060 "Interaction has already been acknowledged.". Its token
//!   then works on `/webhooks/{application}/{token}` for
//!   [`DiscordOptions::token_lifetime`] (15 minutes, then `401` code 50027
//!   "Invalid Webhook Token"): `@original` exists once the interaction is
//!   acknowledged (a deferred one is an empty message flagged LOADING until
//!   its first edit; before that `404` code 10008 "Unknown Message"), and
//!   follow-ups before it get `404` code 10015 "Unknown Webhook".
//!   Follow-ups answer with the message, as if `wait=true`.
//! - Bodies are JSON or `multipart/form-data` with a `payload_json` part and
//!   `files[n]` parts, which `attachments[].id` refer to by `n`. Files keep
//!   their bytes; a part without a `Content-Type` gets one from its file
//!   name's extension, as Discord infers it. Every attachment, the bot's and
//!   the simulated users', is served at a CDN-shaped URL on the stand-in.
//! - Channel messages with the bot token (`POST /channels/{id}/messages`,
//!   and their edits) work in any channel unless a test refuses the bots
//!   one ([`DiscordStandIn::refuse_channel`]: `403` code 50001 "Missing
//!   Access" or 50013 "Missing Permissions"). `POST /users/@me/channels`
//!   with `recipient_id` opens (or finds) the DM channel with a user; a
//!   message there gets `403` code 50007 "Cannot send messages to this user"
//!   once the user closed their DMs ([`DiscordStandIn::close_dms`]).
//! - A guild channel's object in an interaction says `"nsfw": false` unless a
//!   test marked it age-restricted ([`DiscordStandIn::set_channel_nsfw`]).
//! - The gateway is a WebSocket at `/gateway` (and `/gateway/`, where
//!   clients append `/?v=10&encoding=json`); it speaks uncompressed JSON only
//!   and refuses `compress` or another `encoding` with a plain `400` before
//!   the upgrade. It sends HELLO (op 10) and expects IDENTIFY (op 2), which
//!   gets READY (op 0, `s` = 1) whose `resume_gateway_url` is
//!   `ws://127.0.0.1:PORT/gateway-resume` (also on the stand-in, so a test
//!   sees which URL a client resumed on), or RESUME (op 6), which replays the
//!   dispatches after the client's sequence and then sends RESUMED (an
//!   unknown session gets INVALID_SESSION, op 9, `false`). HEARTBEAT (op 1)
//!   gets HEARTBEAT_ACK (op 11). Close codes: 4001 unknown opcode, 4002
//!   payload that does not decode (or is over 4096 bytes), 4003 a command
//!   before identifying, 4004 bad token, 4005 a second IDENTIFY, 4009 no
//!   heartbeat for two intervals (plus two seconds), 4012 `v` other than 10,
//!   4010 a `shard` whose ID is not below its count, 4013 undefined intent
//!   bits, 4014 privileged intents the bot was not granted
//!   ([`DiscordBot::privileged_intents`]).
//! - Users are simulated: [`DiscordStandIn::slash`] and
//!   [`DiscordStandIn::invoke`] dispatch `INTERACTION_CREATE` (type 2) with a
//!   full interaction object to the bot's newest gateway session (buffered
//!   for a resume while it is away); [`DiscordStandIn::post_interaction`]
//!   POSTs one to a bot's HTTP interactions endpoint signed with the bot's
//!   Ed25519 key (`X-Signature-Ed25519` over timestamp + body,
//!   `X-Signature-Timestamp`), and takes a callback from the answer's body.
//!
//! - Premium app subscriptions (Monetization: SKUs, Entitlements): a test
//!   publishes SKUs ([`DiscordStandIn::add_sku`]); `GET
//!   /applications/{id}/skus`; `GET /applications/{id}/entitlements` with
//!   `user_id`, `sku_ids`, `guild_id`, `before`, `after`, `limit`,
//!   `exclude_ended` and `exclude_deleted` (true by default); `GET` one;
//!   test entitlements (`POST` with `sku_id`, `owner_id`, `owner_type`; no
//!   `starts_at`/`ends_at`; `DELETE`, 204; unknown SKU `404` code 10027,
//!   unknown entitlement 10029); `POST .../{id}/consume` for consumables.
//!   A test plays Discord's store: [`DiscordStandIn::grant_entitlement`]
//!   (`ENTITLEMENT_CREATE`, `ends_at` null while the subscription runs),
//!   [`DiscordStandIn::end_entitlement`] (`ENTITLEMENT_UPDATE` with
//!   `ends_at`, sent when a subscription ends: since November 2024 Discord
//!   sends no entitlement event on renewal or cancellation) and
//!   [`DiscordStandIn::delete_entitlement`] (`ENTITLEMENT_DELETE`, as after
//!   a refund). Each interaction's `entitlements` are the user's (and the
//!   guild's) active ones. Premium buttons (type 2, style 6) in messages
//!   are kept as sent; one without `sku_id`, or with `custom_id`, `label`,
//!   `url` or `emoji`, gets the form-error envelope (the SKU is not looked
//!   up).
//!
//! The stand-in records every REST call, interaction, message and gateway
//! connection, lets a test wait for them without polling, and stops when
//! dropped. It models one shard, no guild state beyond what interactions
//! carry, and no gateway events other than READY, RESUMED,
//! INTERACTION_CREATE and the three entitlement events (no
//! SUBSCRIPTION_* events).
//!
//! The stand-in lives in one folder, a file per concern:
//!
//! - `mod.rs`: starting it (the router), its addresses, its bots, and
//!   stopping it;
//! - `types`: the values tests build and read back (options, bots,
//!   invocations, and the records of messages, interactions, calls and
//!   gateway connections);
//! - `state`: what the running stand-in holds, and how tests read it and
//!   wait for it to change;
//! - `rest`: the REST layer (call records, rate limits and their headers,
//!   authentication, error envelopes, JSON and multipart bodies) and the
//!   user, application and gateway-discovery routes;
//! - `commands`: application commands, validated as Discord does;
//! - `interactions`: interaction callbacks and the webhook routes their
//!   tokens open (the original response and follow-ups);
//! - `messages`: message bodies (limits, embeds, files), their JSON, channel
//!   messages and attachment downloads;
//! - `gateway`: the WebSocket gateway (HELLO, IDENTIFY, RESUME, heartbeats,
//!   dispatches, close codes) and dropping connections on purpose;
//! - `users`: simulated users running slash commands over the gateway;
//! - `signing`: HTTP interactions, posted to a bot's endpoint signed with its
//!   Ed25519 key.
//! - `monetization`: SKUs, entitlements (REST, gateway events, the store's
//!   side a test plays) and premium buttons.

mod commands;
mod gateway;
mod interactions;
mod messages;
mod monetization;
mod rest;
mod signing;
mod state;
mod types;
mod users;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, patch, post, put};
use axum::Router;
use ed25519_dalek::SigningKey;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use commands::{
    delete_command, get_command, get_commands, get_guild_commands, post_command, put_commands,
    put_guild_commands,
};
use gateway::gateway;
use interactions::{
    callback, delete_webhook_message, edit_webhook_message, followup, get_webhook_message,
};
use messages::{attachment, channel_message, edit_channel_message};
use monetization::{
    consume_entitlement, create_test_entitlement, delete_test_entitlement, get_entitlement,
    list_entitlements, list_skus,
};
use rest::{
    create_dm, current_application, current_user, error, gateway_bot, gateway_info, rest_layer,
    typing,
};
use state::{strip_bot, BotState, Outgoing, Records, Shared};

pub use monetization::{
    ENTITLEMENT_APPLICATION_SUBSCRIPTION, ENTITLEMENT_PURCHASE, ENTITLEMENT_TEST_MODE_PURCHASE,
    SKU_CONSUMABLE, SKU_DURABLE, SKU_SUBSCRIPTION,
};
pub use types::{
    Call, CallbackRecord, DiscordBot, DiscordOptions, FileRecord, GatewayConnection, GatewayDrop,
    HttpAnswer, InteractionRecord, Invocation, MessageRecord, Rejection, SentInteraction, Signing,
    UserAttachment,
};

/// Discord's epoch (2015-01-01), in Unix milliseconds.
pub const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// The guild simulated users invoke commands in unless told otherwise.
pub const DEFAULT_GUILD_ID: u64 = 1_100_000_000_000_000_001;

/// Message flag: only the invoking user sees it.
pub const FLAG_EPHEMERAL: u64 = 1 << 6;

/// Message flag: a deferred response not edited yet.
pub const FLAG_LOADING: u64 = 1 << 7;

const INTENT_GUILD_MEMBERS: u64 = 1 << 1;
const INTENT_GUILD_PRESENCES: u64 = 1 << 8;
const INTENT_MESSAGE_CONTENT: u64 = 1 << 15;

/// Every privileged intent.
pub const PRIVILEGED_INTENTS: u64 =
    INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT;

/// Every intent bit Discord defines (0-16, 20-21, 24-25).
const DEFINED_INTENTS: u64 = 0x1_FFFF | (1 << 20) | (1 << 21) | (1 << 24) | (1 << 25);

/// A running Discord stand-in; stops when dropped.
pub struct DiscordStandIn {
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl DiscordStandIn {
    pub async fn start() -> Self {
        Self::start_with(DiscordOptions::default()).await
    }

    pub async fn start_with(options: DiscordOptions) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            options: options.clone(),
            base: format!("http://{addr}"),
            port: addr.port(),
            state: Mutex::new(Records::default()),
            changes: watch::channel(0).0,
            last_id: AtomicU64::new(0),
            next_conn: AtomicU64::new(1),
            http: reqwest::Client::new(),
            attachment_size_limit: AtomicU64::new(options.attachment_size_limit),
        });
        let api = Router::new()
            .route("/users/@me", get(current_user))
            .route("/users/@me/channels", post(create_dm))
            .route("/applications/@me", get(current_application))
            .route("/gateway", get(gateway_info))
            .route("/gateway/bot", get(gateway_bot))
            .route(
                "/applications/{app}/commands",
                put(put_commands).get(get_commands).post(post_command),
            )
            .route(
                "/applications/{app}/commands/{id}",
                get(get_command).delete(delete_command),
            )
            .route(
                "/applications/{app}/guilds/{guild}/commands",
                put(put_guild_commands).get(get_guild_commands),
            )
            .route("/applications/{app}/skus", get(list_skus))
            .route(
                "/applications/{app}/entitlements",
                get(list_entitlements).post(create_test_entitlement),
            )
            .route(
                "/applications/{app}/entitlements/{id}",
                get(get_entitlement).delete(delete_test_entitlement),
            )
            .route(
                "/applications/{app}/entitlements/{id}/consume",
                post(consume_entitlement),
            )
            .route("/interactions/{id}/{token}/callback", post(callback))
            .route("/webhooks/{app}/{token}", post(followup))
            .route(
                "/webhooks/{app}/{token}/messages/{message}",
                get(get_webhook_message)
                    .patch(edit_webhook_message)
                    .delete(delete_webhook_message),
            )
            .route("/channels/{id}/messages", post(channel_message))
            .route(
                "/channels/{id}/messages/{message}",
                patch(edit_channel_message),
            )
            .route("/channels/{id}/typing", post(typing))
            .fallback(|| async { error(StatusCode::NOT_FOUND, 0, "404: Not Found") })
            .method_not_allowed_fallback(|| async {
                error(StatusCode::METHOD_NOT_ALLOWED, 0, "405: Method Not Allowed")
            })
            .layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                rest_layer,
            ));
        let app = Router::new()
            .nest("/api/v10", api)
            .route("/gateway", get(gateway))
            .route("/gateway/", get(gateway))
            .route("/gateway-resume", get(gateway))
            .route("/gateway-resume/", get(gateway))
            .route("/attachments/{channel}/{id}/{filename}", get(attachment))
            .fallback(|| async { error(StatusCode::NOT_FOUND, 0, "404: Not Found") })
            .layer(DefaultBodyLimit::disable())
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { shared, server }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.shared.base.clone()
    }

    /// `127.0.0.1:PORT`, for `twilight_http::client::ClientBuilder::proxy(_, true)`.
    pub fn rest_proxy(&self) -> String {
        format!("127.0.0.1:{}", self.shared.port)
    }

    /// `ws://127.0.0.1:PORT/gateway`, for twilight-gateway's `proxy_url`.
    pub fn gateway_url(&self) -> String {
        format!("ws://127.0.0.1:{}/gateway", self.shared.port)
    }

    /// The `resume_gateway_url` READY hands out.
    pub fn resume_gateway_url(&self) -> String {
        format!("ws://127.0.0.1:{}/gateway-resume", self.shared.port)
    }

    pub fn options(&self) -> &DiscordOptions {
        &self.shared.options
    }

    /// Changes the largest attachment from now on, as a guild losing its
    /// boost does: interactions already made still announce the old
    /// `attachment_size_limit`, and uploads over the new one get 40005.
    pub fn set_attachment_size_limit(&self, bytes: u64) {
        self.shared
            .attachment_size_limit
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Adds a bot with no privileged intents and no HTTP endpoint.
    pub fn add_bot(&self, token: &str, application_id: u64, username: &str) {
        self.add(DiscordBot::new(token, application_id, username));
    }

    pub fn add(&self, bot: DiscordBot) {
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        self.shared.lock().bots.insert(
            bot.token.clone(),
            BotState {
                bot,
                key,
                identifies: 0,
                resumes: 0,
                heartbeats: 0,
            },
        );
    }

    /// The bot's Ed25519 public key, hex, as the developer portal shows it.
    pub fn public_key_hex(&self, token: &str) -> String {
        let state = self.shared.lock();
        let bot = state.bots.get(strip_bot(token)).expect("a known bot");
        hex::encode(bot.key.verifying_key().to_bytes())
    }
}

impl Drop for DiscordStandIn {
    fn drop(&mut self) {
        self.server.abort();
        // Close the live gateway connections so their tasks end too.
        let state = self.shared.lock();
        for session in state.sessions.values() {
            if let Some((_, tx)) = &session.conn {
                let _ = tx.send(Outgoing::Close(1001, "going away"));
            }
        }
    }
}
