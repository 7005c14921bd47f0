//! Tessera's Discord frontend.
//!
//! Each configured instance is one Discord application. By default it keeps a
//! gateway connection (which works from behind NAT) and receives slash
//! command interactions there; optionally it serves an HTTP interactions
//! endpoint that checks Discord's Ed25519 signatures. Either way it defers
//! the interaction within Discord's three-second deadline, then hands the
//! command to the shared chat core, which creates the job on the public API
//! and keeps the deferred response up to date until the output is sent as a
//! follow-up. Nothing here touches the database or a worker.
