//! What every Tessera chat frontend shares, whatever the platform: commands
//! ([`command`]), per-user rate limits ([`limits`]), the words users read
//! ([`words`]) and one bot instance's behaviour ([`bot`]): creating jobs on the
//! public API, following them with one progress message, delivering outputs,
//! and resuming after a restart; and the health probes of their HTTP
//! listeners ([`probes`]).
//!
//! Must not: talk to a database or a worker (it only has the public API's
//! client), or know a platform's wire format (platform crates implement
//! [`bot::Messenger`]).

pub mod bot;
pub mod command;
pub mod config;
pub mod limits;
pub mod probes;
pub mod secret;
pub mod words;

pub use bot::{Audio, Bot, BotSettings, Incoming, Messenger, OutFile, ReplyTo, SendError};
pub use limits::LimitConfig;
pub use secret::Secret;
