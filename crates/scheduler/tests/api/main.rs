//! The HTTP API end to end: the real scheduler on a loopback port, driven through
//! the typed client (`tessera_api::Client`) and, for requests the client cannot
//! make (no credential, broken JSON, wrong content type), through raw `reqwest`.
//! Every test runs on PostgreSQL and on SQLite and must pass unchanged on both.

mod accounts;
mod admin;
mod admission;
mod common;
mod developer_keys;
mod events;
mod files;
mod jobs;
mod moderation;
mod nsfw;
mod payments;
mod refunds;
mod review;
mod security;
mod stripe;
mod users;
mod webhooks;
