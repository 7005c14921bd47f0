//! Loopback stand-ins for the engine servers that workers drive, and for the
//! chat platforms that frontends talk to.
//!
//! Tests of an engine adapter need the server on the other side to answer as
//! the real one does, including when it fails, without a GPU or model files;
//! tests of a chat frontend need the platform's API, its users included.
//! Each stand-in serves the real server's routes and message shapes on
//! `127.0.0.1:0`, produces real files (so the adapter's header reading is
//! exercised), records every request, and lets a test inject the failures that
//! matter. They stand in for third-party servers only, never for Tessera's own
//! parts.

pub mod comfyui;
pub mod discord;
pub mod kobold;
pub mod openai;
pub mod telegram;
pub mod whisper;
