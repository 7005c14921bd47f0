//! The model catalogue: which models exist for each capability, and the default.
//!
//! It is configuration (operators add models as they install them on workers); a
//! plan's `allowed_models` then narrows it per user.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Capability;

/// Models offered for one capability.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilityModels {
    /// Used when a job names no model.
    pub default: String,
    /// Every model jobs may name, the default included.
    pub models: Vec<String>,
}

/// Models by capability.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModelCatalog(pub BTreeMap<Capability, CapabilityModels>);

impl ModelCatalog {
    pub fn get(&self, capability: Capability) -> Option<&CapabilityModels> {
        self.0.get(&capability)
    }

    /// Checks the catalogue is usable: every default is listed, no name is empty.
    pub fn check(&self) -> Result<(), String> {
        for (cap, entry) in &self.0 {
            if !entry.models.contains(&entry.default) {
                return Err(format!(
                    "catalog.{cap}: default model {:?} is not in its models list",
                    entry.default
                ));
            }
            if let Some(bad) = entry.models.iter().find(|m| !is_model_name(m)) {
                return Err(format!(
                    "catalog.{cap}: model name {bad:?} must be 1-64 characters of letters, digits, `.`, `_` or `-`"
                ));
            }
        }
        Ok(())
    }
}

/// Model names travel to workers and into file paths: keep them plain.
pub fn is_model_name(s: &str) -> bool {
    crate::ids::is_plain_name(s) && !s.starts_with('.')
}

impl Default for ModelCatalog {
    fn default() -> Self {
        let entry = |default: &str, models: &[&str]| CapabilityModels {
            default: default.to_owned(),
            models: models.iter().map(|m| (*m).to_owned()).collect(),
        };
        ModelCatalog(BTreeMap::from([
            (
                Capability::Image,
                entry("sdxl-1.0", &["sdxl-1.0", "flux-schnell"]),
            ),
            (Capability::Video, entry("wan-2.1", &["wan-2.1"])),
            (
                Capability::Text,
                entry("llama-3.2-3b", &["llama-3.2-3b", "qwen-2.5-7b"]),
            ),
            (
                Capability::SpeechToText,
                entry("whisper-base", &["whisper-base"]),
            ),
            (Capability::TextToSpeech, entry("espeak-ng", &["espeak-ng"])),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_catalogue_is_valid_and_complete() {
        let c = ModelCatalog::default();
        c.check().unwrap();
        for cap in Capability::ALL {
            assert!(c.get(cap).is_some(), "{cap} missing");
        }
    }

    #[test]
    fn a_default_outside_the_list_is_refused() {
        let mut c = ModelCatalog::default();
        c.0.get_mut(&Capability::Image).unwrap().default = "nope".into();
        assert!(c.check().is_err());
        assert!(!is_model_name("../x"));
        assert!(!is_model_name(""));
    }
}
