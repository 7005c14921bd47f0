//! Stand-ins for engine servers: each listens on `127.0.0.1:0`, follows the
//! request and response shapes its project documents (errors included), and
//! records what it was sent, so an adapter's tests can check both sides.
//! They generate nothing real: replies are deterministic filler.

pub mod kobold;
pub mod openai;
pub mod whisper;
