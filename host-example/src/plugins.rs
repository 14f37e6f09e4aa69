//! Loading the plugins a [`HostConfig`] names: built-ins by name, dynamic libraries given with
//! `--plugin PATH` or named by a `library = "PATH"` key in the config.

use std::path::PathBuf;
use std::sync::Arc;

use phobos_plugin_api::{AuthCheck, CmdId, HeartbeatPolicyFactory, LogCipher, PacketCodec};
use phobos_plugin_registry::{PluginSpec, Plugins, PluginsConfig, Registry, RegistryError};

use crate::config::HostConfig;

/// The plugins a configuration selects, with the registry that built them.
#[derive(Debug)]
pub struct LoadedPlugins {
    /// The full set, with names and origins.
    pub set: Plugins,
    /// The codec.
    pub codec: Arc<dyn PacketCodec>,
    /// The heartbeat policy factory.
    pub heartbeat: Arc<dyn HeartbeatPolicyFactory>,
    /// The log cipher, if one is configured.
    pub cipher: Option<Arc<dyn LogCipher>>,
    registry: Registry,
    auth_spec: Option<PluginSpec>,
}

/// Why the plugins could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginsError {
    /// A `--plugin` library could not be loaded.
    #[error("loading plugin library {path}: {source}")]
    Library {
        /// The file.
        path: PathBuf,
        /// The registry's error.
        #[source]
        source: Box<RegistryError>,
    },
    /// The `[plugins]` table is invalid or a plugin failed to build; the message names the
    /// field.
    #[error("[plugins] in {origin}: {source}")]
    Config {
        /// The config file, or "built-in config".
        origin: String,
        /// The registry's error.
        #[source]
        source: Box<RegistryError>,
    },
}

impl LoadedPlugins {
    /// Loads each of `libraries` (their plugins become available by name), then builds what
    /// `config`'s `[plugins]` table names.
    ///
    /// # Errors
    ///
    /// [`PluginsError`], naming the file or field.
    pub fn load(config: &HostConfig, libraries: &[PathBuf]) -> Result<Self, PluginsError> {
        let origin = config
            .origin
            .as_ref()
            .map_or("built-in config".to_owned(), |p| p.display().to_string());
        let mut registry = Registry::with_builtins();
        for lib in libraries {
            registry
                .load_library(lib)
                .map_err(|source| PluginsError::Library {
                    path: lib.clone(),
                    source: Box::new(source),
                })?;
        }
        let cfg_err = |source| PluginsError::Config {
            origin: origin.clone(),
            source: Box::new(source),
        };
        let mut plugins_config = match &config.plugins {
            Some(table) => PluginsConfig::from_table(table).map_err(cfg_err)?,
            None => PluginsConfig::default(),
        };
        // This app's server identifies users by the token plugin's identify frame, so that is
        // the default here (the registry's own default is "none").
        if plugins_config.auth.is_none() {
            plugins_config.auth = Some(PluginSpec::named("token"));
        }
        // Library paths in the file are relative to the file, not the working directory.
        let specs = [
            plugins_config.codec.as_mut(),
            plugins_config.auth.as_mut(),
            plugins_config.heartbeat.as_mut(),
            plugins_config.cipher.as_mut(),
        ];
        for spec in specs.into_iter().flatten().chain(
            plugins_config
                .ip_sources
                .iter_mut()
                .flat_map(|v| v.iter_mut()),
        ) {
            if let Some(lib) = &spec.library {
                spec.library = Some(config.resolve(lib));
            }
        }
        let set = registry.build(&plugins_config).map_err(cfg_err)?;
        Ok(LoadedPlugins {
            codec: set.codec.get().clone(),
            heartbeat: set.heartbeat.get().clone(),
            cipher: set.log_cipher.as_ref().map(|c| c.get().clone()),
            set,
            registry,
            auth_spec: plugins_config.auth,
        })
    }

    /// The configured auth plugin built afresh for one user: for the `token` plugin its
    /// `config.token` is set to `token`. Each client gets its own, since the plugin holds the
    /// session's token.
    ///
    /// # Errors
    ///
    /// The registry's error when the plugin refuses the config.
    pub fn auth_for(&self, token: &str) -> Result<Arc<dyn AuthCheck>, RegistryError> {
        let Some(spec) = &self.auth_spec else {
            return Ok(self.set.auth.get().clone());
        };
        let mut spec = spec.clone();
        if spec.name == "token" {
            let mut table = match spec.config.take() {
                Some(toml::Value::Table(t)) => t,
                _ => toml::Table::new(),
            };
            table.insert("token".to_owned(), toml::Value::String(token.to_owned()));
            spec.config = Some(toml::Value::Table(table));
        }
        Ok(self.registry.auth(&spec, "plugins.auth")?.get().clone())
    }

    /// The identify command id the server must expect: the token plugin's `identify_cmd_id`
    /// when configured, else its default.
    pub fn identify_cmd_id(&self) -> CmdId {
        self.auth_spec
            .as_ref()
            .and_then(|s| s.config.as_ref())
            .and_then(|c| c.get("identify_cmd_id"))
            .and_then(toml::Value::as_integer)
            .and_then(|v| u32::try_from(v).ok())
            .map_or(phobos_auth_basic::DEFAULT_IDENTIFY_CMD, CmdId)
    }

    /// A table of what was loaded and from where.
    pub fn describe(&self) -> String {
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

    /// `NAME (ORIGIN)` of the codec.
    pub fn codec_label(&self) -> String {
        format!("{} ({})", self.set.codec.name(), self.set.codec.origin())
    }

    /// `NAME (ORIGIN)` of the cipher, or "none".
    pub fn cipher_label(&self) -> String {
        self.set.log_cipher.as_ref().map_or_else(
            || "none (plain logs)".to_owned(),
            |c| format!("{} ({})", c.name(), c.origin()),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn load_text(text: &str) -> Result<LoadedPlugins, PluginsError> {
        let config = HostConfig::from_toml_str(text, Some(Path::new("/cfg/host.toml"))).unwrap();
        LoadedPlugins::load(&config, &[])
    }

    #[test]
    fn builtin_config_loads_every_plugin_it_names() {
        let config = HostConfig::load(None).unwrap();
        let plugins = LoadedPlugins::load(&config, &[]).unwrap();
        assert_eq!(plugins.codec.name(), "mars");
        assert_eq!(plugins.set.auth.name(), "token");
        assert_eq!(plugins.set.heartbeat.name(), "smart");
        assert_eq!(
            plugins.set.log_cipher.as_ref().map(|c| c.name()),
            Some("mars-tea")
        );
        assert_eq!(
            plugins.identify_cmd_id(),
            phobos_auth_basic::DEFAULT_IDENTIFY_CMD
        );
    }

    #[test]
    fn the_auth_plugin_defaults_to_token() {
        let plugins = load_text("[plugins]\ncodec = \"mars\"\n").unwrap();
        assert_eq!(plugins.set.auth.name(), "token");
        let plugins = load_text("").unwrap();
        assert_eq!(plugins.set.auth.name(), "token");
    }

    #[test]
    fn each_user_gets_an_auth_plugin_with_its_token() {
        let plugins = load_text(
            "[plugins]\nauth = { name = \"token\", config = { identify_cmd_id = 4097 } }\n",
        )
        .unwrap();
        assert_eq!(plugins.identify_cmd_id(), CmdId(4097));
        let auth = plugins.auth_for("alice.00").unwrap();
        let phobos_plugin_api::IdentifyRequest::Now { cmd_id, body, .. } =
            auth.identify_request("default-longlink")
        else {
            panic!("a token is set");
        };
        assert_eq!(cmd_id, CmdId(4097));
        assert_eq!(body, b"\x01\x00\x08alice.00");
    }

    #[test]
    fn unknown_plugin_name_is_an_error_naming_it() {
        let err = load_text("[plugins]\ncodec = \"nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nope") && err.contains("/cfg/host.toml"),
            "{err}"
        );
    }

    #[test]
    fn a_library_path_is_resolved_against_the_config_file() {
        let err =
            load_text("[plugins]\ncodec = { name = \"acme\", library = \"lib/libacme.so\" }\n")
                .unwrap_err();
        let text = format!("{err}: {:?}", std::error::Error::source(&err));
        assert!(text.contains("/cfg/lib/libacme.so"), "{text}");
    }

    #[test]
    fn missing_plugin_library_is_an_error_naming_the_file() {
        let config = HostConfig::load(None).unwrap();
        let missing = PathBuf::from("/nonexistent/libnothing.so");
        let err = LoadedPlugins::load(&config, &[missing])
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/libnothing.so"), "{err}");
    }
}
