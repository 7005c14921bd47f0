//! Tessera's Discord frontend (ARCHITECTURE.md).
//!
//! Each configured instance is one Discord application. By default it keeps a
//! gateway connection (which works from behind NAT) and receives slash
//! command interactions there; optionally ([`config::Mode::Http`]) Discord
//! POSTs them to an endpoint this process serves, checked with the
//! application's Ed25519 key ([`endpoint`]). Either way the interaction is
//! deferred at once (Discord's deadline is three seconds), then handed to the
//! shared chat core ([`tessera_chat::Bot`]), which creates the job on the
//! public API and keeps the deferred response up to date until the output
//! is sent as a follow-up.
//!
//! The chat core's "chat" is `"{channel id}:{user id}/{interaction token}"`
//! and its progress message is the interaction's original response
//! (`@original`), so a restarted process can still edit it and deliver (a
//! token lives 15 minutes; after that, replies go to the channel with the bot
//! token, or to the user's direct messages where the channel refuses the bot).
//!
//! Must not: touch the database or a worker; log a token or an API key.
//!
//! Where things live:
//!
//! - [`config`]: the settings file and each instance's entry;
//! - `instance`: starting an instance (token check, command registration,
//!   resuming its jobs) and running them all ([`start`], [`run`]);
//! - `gateway`: the gateway connection's receive loop;
//! - [`endpoint`]: the HTTP interactions endpoint and its signature check;
//! - `interactions`: what happens to an interaction once it arrives
//!   ([`Handler`]): deferral, admission, attachment download, the chat core;
//! - `commands`: the slash commands registered and how their options read
//!   ([`application_commands`], [`slash_command`]);
//! - `messenger`: replies through Discord's REST API ([`Discord`]), from the
//!   deferred response to follow-ups and, once the token expires, the channel;
//! - `subscriptions`: premium app subscriptions: entitlements relayed to
//!   the scheduler, `/subscribe`'s premium buttons;
//! - `fallback`: the channel with the bot token, or the user's direct
//!   messages where the channel refuses the bot.

pub mod config;
pub mod endpoint;

mod commands;
mod fallback;
mod gateway;
mod instance;
mod interactions;
mod messenger;
mod subscriptions;

pub use commands::{answers_privately, application_commands, slash_command};
pub use config::{BotInstance, DiscordConfig, Mode};
pub use instance::{run, start, Instance};
pub use interactions::Handler;
pub use messenger::Discord;

/// What an instance needs besides its config entry.
pub use tessera_chat::secret::BotSecrets as Secrets;
