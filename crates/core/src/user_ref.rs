//! Who a job is for: `platform:id`, as frontends name their users.
//!
//! Users are created on first sight from their reference. The platform part also
//! binds a reference to the frontends allowed to speak for it: a Telegram bot's key
//! can act for `telegram:…` users and nobody else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The platforms users come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Telegram,
    Discord,
    Web,
}

impl Platform {
    pub const ALL: [Platform; 3] = [Platform::Telegram, Platform::Discord, Platform::Web];

    pub const fn as_str(self) -> &'static str {
        match self {
            Platform::Telegram => "telegram",
            Platform::Discord => "discord",
            Platform::Web => "web",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = InvalidUserRef;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or(InvalidUserRef::UnknownPlatform)
    }
}

/// A validated `platform:id` user reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserRef {
    platform: Platform,
    id: String,
}

impl UserRef {
    /// Longest accepted platform-side id.
    pub const MAX_ID_LEN: usize = 64;

    pub fn new(platform: Platform, id: &str) -> Result<Self, InvalidUserRef> {
        if id.is_empty() || id.len() > Self::MAX_ID_LEN {
            return Err(InvalidUserRef::BadId);
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'))
        {
            return Err(InvalidUserRef::BadId);
        }
        Ok(Self {
            platform,
            id: id.to_owned(),
        })
    }

    pub fn platform(&self) -> Platform {
        self.platform
    }

    /// The id on the platform, without the prefix.
    pub fn platform_user_id(&self) -> &str {
        &self.id
    }
}

impl UserRef {
    /// What a reference looks like, as a regular expression (the API document's).
    pub const PATTERN: &'static str = r"^(telegram|discord|web):[A-Za-z0-9_.@-]{1,64}$";
}

/// A string with [`UserRef::PATTERN`] in the API document.
impl utoipa::PartialSchema for UserRef {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(Self::PATTERN))
            .examples(["telegram:123456"])
            .into()
    }
}

impl utoipa::ToSchema for UserRef {}

impl PartialEq<str> for UserRef {
    fn eq(&self, other: &str) -> bool {
        other.split_once(':') == Some((self.platform.as_str(), self.id.as_str()))
    }
}

impl PartialEq<&str> for UserRef {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl PartialEq<String> for UserRef {
    fn eq(&self, other: &String) -> bool {
        *self == **other
    }
}

impl PartialEq<UserRef> for str {
    fn eq(&self, other: &UserRef) -> bool {
        *other == *self
    }
}

impl PartialEq<UserRef> for &str {
    fn eq(&self, other: &UserRef) -> bool {
        *other == **self
    }
}

impl PartialEq<UserRef> for String {
    fn eq(&self, other: &UserRef) -> bool {
        *other == **self
    }
}

impl fmt::Display for UserRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.platform, self.id)
    }
}

/// Why a user reference was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUserRef {
    #[error("user_ref must look like `platform:id`, for example `telegram:123456`")]
    Shape,
    #[error("user_ref platform must be one of telegram, discord, web")]
    UnknownPlatform,
    #[error("user_ref id must be 1 to 64 characters of letters, digits, `_`, `-`, `.` or `@`")]
    BadId,
}

impl FromStr for UserRef {
    type Err = InvalidUserRef;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (platform, id) = s.split_once(':').ok_or(InvalidUserRef::Shape)?;
        UserRef::new(platform.parse()?, id)
    }
}

impl TryFrom<String> for UserRef {
    type Error = InvalidUserRef;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<UserRef> for String {
    fn from(u: UserRef) -> String {
        u.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_examples() {
        let u: UserRef = "telegram:123456".parse().unwrap();
        assert_eq!(u.platform(), Platform::Telegram);
        assert_eq!(u.platform_user_id(), "123456");
        assert_eq!(u.to_string(), "telegram:123456");
        assert!("discord:80351110224678912".parse::<UserRef>().is_ok());
        assert!("web:ada@example.org".parse::<UserRef>().is_ok());
    }

    #[test]
    fn compares_with_its_text() {
        let u: UserRef = "telegram:42".parse().unwrap();
        assert_eq!(u, "telegram:42");
        assert_eq!("telegram:42", u);
        assert!(u != "telegram:4" && u != "discord:42" && u != "telegram42");
        let text: String = u.to_string();
        assert_eq!(u, text);
    }

    #[test]
    fn rejects_what_is_not_a_reference() {
        assert_eq!("123456".parse::<UserRef>(), Err(InvalidUserRef::Shape));
        assert_eq!(
            "irc:x".parse::<UserRef>(),
            Err(InvalidUserRef::UnknownPlatform)
        );
        assert_eq!("telegram:".parse::<UserRef>(), Err(InvalidUserRef::BadId));
        assert_eq!(
            "telegram:a b".parse::<UserRef>(),
            Err(InvalidUserRef::BadId)
        );
        assert_eq!(
            "telegram:a:b".parse::<UserRef>(),
            Err(InvalidUserRef::BadId)
        );
        let long = format!("web:{}", "x".repeat(65));
        assert_eq!(long.parse::<UserRef>(), Err(InvalidUserRef::BadId));
    }
}
