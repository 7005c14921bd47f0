//! Opaque, prefixed identifiers.
//!
//! Ids are ULIDs behind a short type prefix (`job_01J...`): sortable by creation
//! time, so new rows land at the end of the primary-key index, and readable in logs.
//! Parsing is strict, because ids arrive in URL paths from untrusted callers.

use std::fmt;
use std::str::FromStr;

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One monotonic ULID source per process: ids made in the same millisecond still
/// sort in creation order (the random part is incremented).
fn next_ulid() -> ulid::Ulid {
    static GENERATOR: Mutex<ulid::Generator> = Mutex::new(ulid::Generator::new());
    let mut generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    // Overflow needs 2^80 ids in one millisecond; fall back to a fresh random ULID.
    generator.generate().unwrap_or_else(|_| ulid::Ulid::new())
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $pattern:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(try_from = "String", into = "String")]
        #[schema(value_type = String, pattern = $pattern, example = json!(concat!($prefix, "01JD3Z8X9Q4W6E2R5T7Y9V1K3M")))]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A new id, unique and ordered by creation time: within one process,
            /// strictly increasing even within a millisecond.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, next_ulid()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let rest = s.strip_prefix($prefix).ok_or(InvalidId)?;
                let parsed = ulid::Ulid::from_string(rest).map_err(|_| InvalidId)?;
                // Canonical form only, so one job never has two spellings.
                if parsed.to_string() != rest {
                    return Err(InvalidId);
                }
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A job's id, `job_` and a ULID.
    JobId,
    "job_",
    "^job_[0-7][0-9A-HJKMNP-TV-Z]{25}$"
);
prefixed_id!(
    /// A frontend API key's public id, `key_` and a ULID. The secret is separate.
    ApiKeyId,
    "key_",
    "^key_[0-7][0-9A-HJKMNP-TV-Z]{25}$"
);

prefixed_id!(
    /// A developer key's public id, `dkey_` and a ULID: a website account's
    /// personal key for the OpenAI-compatible gateway. The secret is separate.
    DeveloperKeyId,
    "dkey_",
    "^dkey_[0-7][0-9A-HJKMNP-TV-Z]{25}$"
);

prefixed_id!(
    /// An uploaded input (for example the audio of a speech-to-text job), `inp_` and a ULID.
    InputId,
    "inp_",
    "^inp_[0-7][0-9A-HJKMNP-TV-Z]{25}$"
);

prefixed_id!(
    /// A job's output (an image, a video, audio or text), `art_` and a ULID.
    ArtifactId,
    "art_",
    "^art_[0-7][0-9A-HJKMNP-TV-Z]{25}$"
);

prefixed_id!(
    /// A job's webhook delivery, `whk_` and a ULID: sent as `Tessera-Webhook-Id`
    /// with every attempt, so a receiver can tell a retry from a new event.
    WebhookId,
    "whk_",
    "^whk_[0-7][0-9A-HJKMNP-TV-Z]{25}$"
);

/// Longest name id (bot, worker or plan id).
pub const MAX_NAME_LEN: usize = 64;

/// Whether `s` is a plain name: 1-64 ASCII letters, digits, `-`, `_` or `.`.
/// Names appear in logs, configuration, metrics labels and SQL, so they are kept
/// plain, and text PostgreSQL cannot hold (U+0000) never reaches a query.
pub fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

macro_rules! name_id {
    ($(#[$doc:meta])* $name:ident, $field:literal, $example:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(try_from = "String", into = "String")]
        #[schema(value_type = String, pattern = r"^[A-Za-z0-9._-]{1,64}$", example = $example)]
        pub struct $name(String);

        impl $name {
            /// The field name callers know this id by, as used in error messages.
            pub const FIELD: &'static str = $field;

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                if is_plain_name(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(InvalidName { field: $field })
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidName;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                if is_plain_name(&s) {
                    Ok(Self(s))
                } else {
                    Err(InvalidName { field: $field })
                }
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }
    };
}

name_id!(
    /// A frontend instance's id (`tg-image-bot-1`): the bot a key is bound to.
    BotId,
    "bot_id",
    "tg-image-bot-1"
);

name_id!(
    /// A worker's id (`worker-gpu-0`), unique among the workers of one scheduler.
    WorkerId,
    "worker_id",
    "worker-gpu-0"
);

name_id!(
    /// A plan's id, lower case: `free`, `starter`, `pro`, `admin`.
    PlanId,
    "plan_id",
    "starter"
);

/// A name id (bot, worker or plan) that is not 1-64 plain characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be 1-64 letters, digits, `-`, `_` or `.`")]
pub struct InvalidName {
    /// The field the id was given in: `bot_id`, `worker_id` or `plan_id`.
    pub field: &'static str,
}

/// The text is not an id of the expected kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid id")]
pub struct InvalidId;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back_and_sort_by_time() {
        let a = JobId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = JobId::generate();
        assert_eq!(a.as_str().parse::<JobId>().unwrap(), a);
        assert!(a < b);
        assert!(a.as_str().starts_with("job_"));
    }

    #[test]
    fn ids_made_in_one_millisecond_still_sort_in_creation_order() {
        let ids: Vec<JobId> = (0..1000).map(|_| JobId::generate()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "job_",
            "job_123",
            "key_01JD3Z8X9Q4W6E2R5T7Y9V1K3M",
            "job_01jd3z8x9q4w6e2r5t7y9u1k3m",
            "job_01JD3Z8X9Q4W6E2R5T7Y9V1K3M/../x",
            "../etc/passwd",
        ] {
            assert!(bad.parse::<JobId>().is_err(), "{bad:?} parsed");
        }
        assert!("job_01JD3Z8X9Q4W6E2R5T7Y9V1K3M".parse::<JobId>().is_ok());
    }

    #[test]
    fn names_are_plain() {
        for good in ["tg-image-bot-1", "worker_gpu.0", "a", &"x".repeat(64)] {
            assert_eq!(good.parse::<BotId>().unwrap().as_str(), good);
            assert!(WorkerId::try_from(good.to_owned()).is_ok());
        }
        for bad in ["", "bad id", "a/b", "a\u{0}b", "é", &"x".repeat(65)] {
            let e = bad.parse::<BotId>().unwrap_err();
            assert_eq!(e.field, "bot_id");
            assert!(serde_json::from_value::<PlanId>(serde_json::json!(bad)).is_err());
        }
        assert_eq!(
            InvalidName { field: "worker_id" }.to_string(),
            "worker_id must be 1-64 letters, digits, `-`, `_` or `.`"
        );
    }
}
