//! Plans and their priorities (README.md, "Plans").
//!
//! Plans live in the database (seeded by the migrations with the four below); this
//! module holds their shape, the rules read off them, and the seed values so tests
//! and docs can name them.

use serde::{Deserialize, Serialize};

/// Queue priority: 0 (FREE) to 3 (ADMIN). Higher runs first.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct Priority(pub u8);

impl Priority {
    pub const FREE: Priority = Priority(0);
    pub const STARTER: Priority = Priority(1);
    pub const PRO: Priority = Priority(2);
    pub const ADMIN: Priority = Priority(3);
}

/// A plan as stored in the `plans` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Plan {
    /// Stable id, lower case: `free`, `starter`, `pro`, `admin`.
    pub id: String,
    /// Display name, upper case as in the seed: `FREE`.
    pub name: String,
    /// Tokens a user may spend per billing day; `None` is unlimited.
    pub daily_tokens: Option<i64>,
    pub priority: Priority,
    /// Longest side, in pixels, of an image or video this plan may ask for.
    pub max_resolution: u32,
    /// Model ids this plan may use; `*` allows every model in the catalogue.
    pub allowed_models: Vec<String>,
    /// Monthly price in US cents.
    pub price_cents: i64,
}

impl Plan {
    /// The plan every new user starts on.
    pub const DEFAULT_ID: &'static str = "free";

    pub fn allows_model(&self, model: &str) -> bool {
        self.allowed_models.iter().any(|m| m == "*" || m == model)
    }

    /// The seed's four plans, exactly as the migrations insert them.
    pub fn seed_plans() -> Vec<Plan> {
        let models = |m: &[&str]| m.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let free_models = [
            "sdxl-1.0",
            "wan-2.1",
            "llama-3.2-3b",
            "whisper-base",
            "espeak-ng",
        ];
        let mut starter_models = free_models.to_vec();
        starter_models.push("flux-schnell");
        vec![
            Plan {
                id: "free".into(),
                name: "FREE".into(),
                daily_tokens: Some(20),
                priority: Priority::FREE,
                max_resolution: 1024,
                allowed_models: models(&free_models),
                price_cents: 0,
            },
            Plan {
                id: "starter".into(),
                name: "STARTER".into(),
                daily_tokens: Some(120),
                priority: Priority::STARTER,
                max_resolution: 1536,
                allowed_models: models(&starter_models),
                price_cents: 500,
            },
            Plan {
                id: "pro".into(),
                name: "PRO".into(),
                daily_tokens: Some(300),
                priority: Priority::PRO,
                max_resolution: 2048,
                allowed_models: models(&["*"]),
                price_cents: 1200,
            },
            Plan {
                id: "admin".into(),
                name: "ADMIN".into(),
                daily_tokens: None,
                priority: Priority::ADMIN,
                max_resolution: 4096,
                allowed_models: models(&["*"]),
                price_cents: 0,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_plans_match_the_seed() {
        let plans = Plan::seed_plans();
        let summary: Vec<_> = plans
            .iter()
            .map(|p| (p.name.as_str(), p.daily_tokens, p.priority.0, p.price_cents))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("FREE", Some(20), 0, 0),
                ("STARTER", Some(120), 1, 500),
                ("PRO", Some(300), 2, 1200),
                ("ADMIN", None, 3, 0),
            ]
        );
        assert!(plans[2].allows_model("anything"));
        assert!(!plans[0].allows_model("flux-schnell"));
        assert!(plans[1].allows_model("flux-schnell"));
    }
}
