//! What both platforms' bot configs share: reading a TOML file under
//! environment overrides, and the checks every `[[bots]]` list must pass.

use std::collections::HashSet;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_core::Capability;

/// Reads `T` from its defaults, then the TOML file at `path` (which must
/// exist when given), then `<env_prefix>KEY` variables with `__` between
/// levels (`TESSERA_TELEGRAM__SCHEDULER_URL`).
pub fn load<T>(path: Option<&Path>, env_prefix: &str) -> anyhow::Result<T>
where
    T: Serialize + DeserializeOwned + Default,
{
    use figment::providers::{Env, Format, Serialized, Toml};
    let mut fig = figment::Figment::from(Serialized::defaults(T::default()));
    if let Some(p) = path {
        anyhow::ensure!(p.exists(), "config file {} not found", p.display());
        fig = fig.merge(Toml::file(p));
    }
    Ok(fig.merge(Env::prefixed(env_prefix).split("__")).extract()?)
}

/// At least one bot, each with an id used once and a capability.
pub fn check_bots<'a>(
    bots: impl IntoIterator<Item = (&'a str, &'a [Capability])>,
) -> anyhow::Result<()> {
    let mut seen = HashSet::new();
    for (id, capabilities) in bots {
        anyhow::ensure!(!id.is_empty(), "a bot has an empty id");
        anyhow::ensure!(seen.insert(id), "bot {id} is configured twice");
        anyhow::ensure!(!capabilities.is_empty(), "bot {id} serves no capability");
    }
    anyhow::ensure!(!seen.is_empty(), "no bots configured: add [[bots]] tables");
    Ok(())
}
