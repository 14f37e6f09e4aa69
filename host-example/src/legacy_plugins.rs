//! Loading the host's configuration and plugins.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use phobos_plugin_api::{AuthCheck, HeartbeatPolicyFactory, LogCipher, PacketCodec};
use phobos_plugin_registry::{Plugins, PluginsConfig, Registry};
use serde::Deserialize;

/// The configuration the demo uses when no `--config` is given.
pub(crate) const BUILTIN_CONFIG: &str = include_str!("../config/legacy-demo.toml");

/// The whole host configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HostConfig {
    /// The `[plugins]` table; read by `phobos-plugin-registry`.
    #[serde(default)]
    pub plugins: Option<toml::Table>,
    /// The `[demo]` table.
    #[serde(default)]
    pub demo: DemoSection,
}

/// The `[demo]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DemoSection {
    /// How many clients.
    pub clients: usize,
    /// Messages per client.
    pub messages: usize,
    /// Every n-th message is a broadcast.
    pub broadcast_every: usize,
    /// Where the xlog files go (default: a fresh folder in the temp dir).
    pub log_dir: Option<PathBuf>,
    /// Whether the long link runs over TLS (default: yes).
    pub tls: bool,
}

impl Default for DemoSection {
    fn default() -> Self {
        DemoSection {
            clients: 8,
            messages: 50,
            broadcast_every: 10,
            log_dir: None,
            tls: true,
        }
    }
}

/// A parsed configuration with the plugins it selects.
#[derive(Debug)]
pub(crate) struct LoadedPlugins {
    /// The full set, with names and origins.
    pub set: Plugins,
    /// The codec.
    pub codec: Arc<dyn PacketCodec>,
    /// The auth check.
    pub auth: Arc<dyn AuthCheck>,
    /// The heartbeat policy factory.
    pub heartbeat: Arc<dyn HeartbeatPolicyFactory>,
    /// The log cipher, if one is configured.
    pub cipher: Option<Arc<dyn LogCipher>>,
}

impl LoadedPlugins {
    /// A table of what was loaded and from where.
    pub(crate) fn describe(&self) -> String {
        let mut out = String::new();
        let mut row = |slot: &str, name: &str, origin: String| {
            out.push_str(&format!("  {slot:<10} {name:<26} {origin}\n"));
        };
        row(
            "codec",
            self.set.codec.name(),
            self.set.codec.origin().to_string(),
        );
        row(
            "auth",
            self.set.auth.name(),
            self.set.auth.origin().to_string(),
        );
        row(
            "heartbeat",
            self.set.heartbeat.name(),
            self.set.heartbeat.origin().to_string(),
        );
        for source in &self.set.ip_sources {
            row("ip source", source.name(), source.origin().to_string());
        }
        match &self.set.log_cipher {
            Some(c) => row("cipher", c.name(), c.origin().to_string()),
            None => row("cipher", "(none)", "logs are not encrypted".to_owned()),
        }
        out
    }
}

/// Reads the config (`path`, or the built-in one) and loads its plugins, after making the
/// plugins of each `--plugin` library available by name.
///
/// # Errors
///
/// Unreadable or invalid config (naming the field), and plugin load failures (naming the
/// plugin and file).
pub(crate) fn load(
    path: Option<&Path>,
    libraries: &[PathBuf],
) -> anyhow::Result<(HostConfig, LoadedPlugins)> {
    let (text, origin) = match path {
        Some(p) => (
            std::fs::read_to_string(p)
                .with_context(|| format!("reading config file {}", p.display()))?,
            p.display().to_string(),
        ),
        None => (BUILTIN_CONFIG.to_owned(), "built-in config".to_owned()),
    };
    let config: HostConfig =
        toml::from_str(&text).with_context(|| format!("invalid config ({origin})"))?;
    let mut registry = Registry::with_builtins();
    for lib in libraries {
        registry
            .load_library(lib)
            .with_context(|| format!("loading plugin library {}", lib.display()))?;
    }
    let plugins_config = match &config.plugins {
        Some(table) => PluginsConfig::from_table(table)
            .with_context(|| format!("invalid [plugins] ({origin})"))?,
        None => PluginsConfig::default(),
    };
    let set = registry
        .build(&plugins_config)
        .with_context(|| format!("loading plugins ({origin})"))?;
    let loaded = LoadedPlugins {
        codec: set.codec.get().clone(),
        auth: set.auth.get().clone(),
        heartbeat: set.heartbeat.get().clone(),
        cipher: set.log_cipher.as_ref().map(|c| c.get().clone()),
        set,
    };
    Ok((config, loaded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_config_loads_every_plugin_it_names() {
        let (config, plugins) = load(None, &[]).expect("the built-in config is valid");
        assert_eq!(plugins.codec.name(), "mars");
        assert_eq!(plugins.set.auth.name(), "token");
        assert_eq!(plugins.set.heartbeat.name(), "smart");
        assert_eq!(
            plugins.set.log_cipher.as_ref().map(|c| c.name()),
            Some("mars-tea")
        );
        assert_eq!(config.demo.clients, 8);
    }

    #[test]
    fn unknown_field_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[demo]\nclientz = 3\n").expect("write");
        let err = format!("{:#}", load(Some(&path), &[]).expect_err("unknown field"));
        assert!(err.contains("clientz"), "{err}");
    }

    #[test]
    fn unknown_plugin_name_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[plugins]\ncodec = \"nope\"\n").expect("write");
        let err = format!("{:#}", load(Some(&path), &[]).expect_err("unknown plugin"));
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn missing_plugin_library_is_an_error_naming_the_file() {
        let missing = PathBuf::from("/nonexistent/libnothing.so");
        let err = format!("{:#}", load(None, &[missing]).expect_err("missing library"));
        assert!(err.contains("/nonexistent/libnothing.so"), "{err}");
    }

    #[test]
    fn malformed_toml_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[plugins\ncodec = ").expect("write");
        assert!(load(Some(&path), &[]).is_err());
    }
}
