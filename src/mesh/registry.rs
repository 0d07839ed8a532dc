//! The providers this meshctl has. Adding a provider is one line here and a directory of its
//! own under `src/mesh/`; no core file changes.

use std::sync::Arc;

use super::MeshProvider;
use crate::config::{Config, ConfigError};

/// Builds a provider from the configuration (reading and validating its `[mesh.<name>]`
/// section), or says what is wrong with it.
type Factory = fn(&Config) -> Result<Arc<dyn MeshProvider>, ConfigError>;

/// Every provider name meshctl knows, built into this binary or not, with its factory when
/// it is built in and what to do when it is not.
const PROVIDERS: &[(&str, Result<Factory, &str>)] = &[
    ("envoy", Ok(super::envoy::from_config)),
    #[cfg(feature = "appmesh")]
    ("appmesh", Ok(super::appmesh::from_config)),
    #[cfg(not(feature = "appmesh"))]
    (
        "appmesh",
        Err("this meshctl was built without the App Mesh provider (AWS App Mesh reached end of support on 2026-09-30); \
             to reproduce the walkthrough as it was written, install with `cargo install --path . --features appmesh`, \
             or use mesh.provider = \"envoy\""),
    ),
];

/// The names allowed in `mesh.provider`.
pub fn names() -> Vec<&'static str> {
    PROVIDERS.iter().map(|(n, _)| *n).collect()
}

/// The provider the configuration selects. Sections of other known providers are ignored;
/// a section of an unknown provider is an error.
pub fn provider(config: &Config) -> Result<Arc<dyn MeshProvider>, ConfigError> {
    let allowed = names().join(", ");
    for section in config.mesh.sections.keys() {
        if !names().contains(&section.as_str()) {
            return Err(config.locate(ConfigError::new(
                format!("mesh.{section}"),
                format!("no provider is named {section:?}; provider sections are [mesh.<provider>] with <provider> one of {allowed}"),
            )));
        }
    }
    let name = config.mesh.provider.as_str();
    match PROVIDERS.iter().find(|(n, _)| *n == name) {
        Some((_, Ok(factory))) => factory(config).map_err(|e| config.locate(e)),
        Some((_, Err(why))) => Err(config.locate(ConfigError::new("mesh.provider", *why))),
        None => Err(config.locate(ConfigError::new("mesh.provider", format!("{name:?} is not a provider; allowed: {allowed}")))),
    }
}

/// The providers built into this meshctl that the configuration does not select, each built
/// from its `[mesh.<name>]` section or its defaults: what an earlier configuration may have
/// set up and the `mesh` phase now removes. A provider whose section (or defaults) does not
/// validate against this configuration is left out: it cannot have run with it.
pub fn retired(config: &Config) -> Vec<Arc<dyn MeshProvider>> {
    PROVIDERS
        .iter()
        .filter(|(name, _)| *name != config.mesh.provider)
        .filter_map(|(_, factory)| factory.as_ref().ok())
        .filter_map(|factory| factory(config).ok())
        .collect()
}

/// A provider section's table, parsed into the provider's own settings type (every key
/// optional, unknown keys rejected); errors name `mesh.<provider>.<key>`.
pub fn section<T: serde::de::DeserializeOwned + Default>(config: &Config, provider: &str) -> Result<T, ConfigError> {
    let Some(table) = config.mesh.sections.get(provider) else { return Ok(T::default()) };
    T::deserialize(toml::Value::Table(table.clone()))
        .map_err(|e| ConfigError::new(format!("mesh.{provider}"), e.message().trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("meshctl.toml");
        std::fs::write(&p, toml).unwrap();
        Config::load(Some(&p), &[], &[]).unwrap()
    }

    #[test]
    fn envoy_is_the_default_and_unknown_names_are_refused() {
        assert_eq!(provider(&Config::default()).unwrap().name(), "envoy");
        let e = provider(&load("[mesh]\nprovider = \"linkerd\"\n")).err().unwrap();
        assert_eq!(e.key, "mesh.provider");
        assert!(e.message.contains("envoy") && e.message.contains("appmesh"), "{e}");
        assert_eq!(e.line, Some(2));
        let e = provider(&load("[mesh.istio]\nx = 1\n")).err().unwrap();
        assert_eq!(e.key, "mesh.istio");
    }

    #[test]
    fn retired_are_the_other_built_in_providers() {
        let names = |c: &Config| retired(c).iter().map(|p| p.name()).collect::<Vec<_>>();
        if cfg!(feature = "appmesh") {
            assert_eq!(names(&Config::default()), ["appmesh"]);
            assert_eq!(names(&load("[mesh]\nprovider = \"appmesh\"\n")), ["envoy"]);
            // A section that does not validate leaves its provider out, and fails nothing.
            assert!(names(&load("[mesh.appmesh]\ncloudmap_account = \"nowhere\"\n")).is_empty());
            assert!(names(&load("[mesh.appmesh]\nno_such_key = 1\n")).is_empty());
        } else {
            assert!(names(&Config::default()).is_empty(), "appmesh is not built in");
        }
        let c = load("[mesh]\nprovider = \"appmesh\"\n[mesh.envoy]\nimage = \"untagged\"\n");
        assert!(!names(&c).contains(&"envoy"));
    }

    #[test]
    fn sections_of_other_providers_are_ignored() {
        let c = load("[mesh.appmesh]\nanything = \"not validated when envoy is selected\"\n");
        assert_eq!(provider(&c).unwrap().name(), "envoy");
    }
}
