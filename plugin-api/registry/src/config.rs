//! The `[plugins]` TOML table: [`PluginsConfig`] and [`PluginSpec`].

use std::path::PathBuf;

use crate::error::RegistryError;

/// What the `[plugins]` table asks for. A slot left out keeps its default.
///
/// ```toml
/// [plugins]
/// codec = "mars"                          # a string: a plugin by name
/// heartbeat = { name = "fixed", config = { interval_ms = 180000 } }
/// ip_sources = ["static", "system-dns"]   # asked in this order
///
/// [plugins.cipher]                        # a table: name, optional library and config
/// library = "plugins/libphobos_cipher_mars.so"
/// name = "mars-tea"
/// config = { public_key = "..." }
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PluginsConfig {
    /// `codec`.
    pub codec: Option<PluginSpec>,
    /// `auth`.
    pub auth: Option<PluginSpec>,
    /// `heartbeat`.
    pub heartbeat: Option<PluginSpec>,
    /// `ip_sources`: replaces the default list when present (an empty list is allowed).
    pub ip_sources: Option<Vec<PluginSpec>>,
    /// `cipher`: the log cipher; none when absent.
    pub cipher: Option<PluginSpec>,
}

/// One plugin choice: `"name"`, or `{ name = "...", library = "...", config = ... }`.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginSpec {
    /// The plugin's name.
    pub name: String,
    /// The library to load it from; `None` for a built-in plugin or one from a library
    /// already given to [`Registry::load_library`](crate::Registry::load_library). A relative
    /// path is relative to the process's working directory.
    pub library: Option<PathBuf>,
    /// The plugin's config (any TOML value, usually a table); `None` means an empty table.
    pub config: Option<toml::Value>,
}

impl PluginSpec {
    /// A built-in plugin by name, without config.
    pub fn named(name: impl Into<String>) -> Self {
        PluginSpec {
            name: name.into(),
            library: None,
            config: None,
        }
    }
}

const SLOTS: &[&str] = &["codec", "auth", "heartbeat", "ip_sources", "cipher"];
const SPEC_KEYS: &[&str] = &["name", "library", "config"];

impl PluginsConfig {
    /// Reads the `[plugins]` table of a TOML document (other top-level tables are ignored,
    /// so this can read an application's whole config file). No `[plugins]` table means all
    /// defaults.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Toml`] for invalid TOML; [`UnknownField`](RegistryError::UnknownField)
    /// and [`InvalidValue`](RegistryError::InvalidValue) naming the offending field.
    pub fn from_toml_str(text: &str) -> Result<Self, RegistryError> {
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| RegistryError::Toml(e.to_string()))?;
        match doc.get("plugins") {
            None => Ok(PluginsConfig::default()),
            Some(toml::Value::Table(t)) => Self::from_table(t),
            Some(other) => Err(invalid(
                "plugins",
                format!("expected a table, found {}", other.type_str()),
            )),
        }
    }

    /// Reads an already parsed `[plugins]` table.
    ///
    /// # Errors
    ///
    /// As [`from_toml_str`](Self::from_toml_str), without the TOML syntax error.
    pub fn from_table(table: &toml::Table) -> Result<Self, RegistryError> {
        let mut config = PluginsConfig::default();
        for (key, value) in table {
            let field = format!("plugins.{key}");
            match key.as_str() {
                "codec" => config.codec = Some(spec(&field, value)?),
                "auth" => config.auth = Some(spec(&field, value)?),
                "heartbeat" => config.heartbeat = Some(spec(&field, value)?),
                "cipher" => config.cipher = Some(spec(&field, value)?),
                "ip_sources" => {
                    let toml::Value::Array(items) = value else {
                        return Err(invalid(
                            &field,
                            format!("expected an array of plugins, found {}", value.type_str()),
                        ));
                    };
                    let specs = items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| spec(&format!("{field}[{i}]"), v))
                        .collect::<Result<_, _>>()?;
                    config.ip_sources = Some(specs);
                }
                _ => {
                    return Err(RegistryError::UnknownField {
                        table: "plugins".to_owned(),
                        field: key.clone(),
                        expected: SLOTS.join(", "),
                    })
                }
            }
        }
        Ok(config)
    }
}

fn spec(field: &str, value: &toml::Value) -> Result<PluginSpec, RegistryError> {
    let table = match value {
        toml::Value::String(name) => return Ok(PluginSpec::named(non_empty(field, name)?)),
        toml::Value::Table(t) => t,
        other => {
            return Err(invalid(
                field,
                format!(
                    "expected a plugin name or a table with `name`, found {}",
                    other.type_str()
                ),
            ))
        }
    };
    if let Some(unknown) = table.keys().find(|k| !SPEC_KEYS.contains(&k.as_str())) {
        return Err(RegistryError::UnknownField {
            table: field.to_owned(),
            field: unknown.clone(),
            expected: SPEC_KEYS.join(", "),
        });
    }
    let name = match table.get("name") {
        Some(toml::Value::String(s)) => non_empty(&format!("{field}.name"), s)?,
        Some(other) => {
            return Err(invalid(
                &format!("{field}.name"),
                format!("expected a string, found {}", other.type_str()),
            ))
        }
        None => return Err(invalid(field, "missing `name`".to_owned())),
    };
    let library = match table.get("library") {
        None => None,
        Some(toml::Value::String(s)) => {
            Some(PathBuf::from(non_empty(&format!("{field}.library"), s)?))
        }
        Some(other) => {
            return Err(invalid(
                &format!("{field}.library"),
                format!("expected a path string, found {}", other.type_str()),
            ))
        }
    };
    Ok(PluginSpec {
        name,
        library,
        config: table.get("config").cloned(),
    })
}

fn non_empty(field: &str, s: &str) -> Result<String, RegistryError> {
    if s.trim().is_empty() {
        Err(invalid(field, "must not be empty".to_owned()))
    } else {
        Ok(s.to_owned())
    }
}

fn invalid(field: &str, reason: String) -> RegistryError {
    RegistryError::InvalidValue {
        field: field.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_tables_both_name_plugins() {
        let c = PluginsConfig::from_toml_str(
            r#"
            [app]
            anything = 1

            [plugins]
            codec = "mars"
            ip_sources = ["static", { name = "backup", config = { hosts = {} } }]

            [plugins.cipher]
            library = "libx.so"
            name = "mars-tea"
            config = { public_key = "ab" }
            "#,
        )
        .unwrap();
        assert_eq!(c.codec, Some(PluginSpec::named("mars")));
        assert_eq!(c.auth, None);
        let sources = c.ip_sources.unwrap();
        assert_eq!(sources[0], PluginSpec::named("static"));
        assert_eq!(sources[1].name, "backup");
        assert!(sources[1].config.is_some());
        let cipher = c.cipher.unwrap();
        assert_eq!(cipher.library, Some(PathBuf::from("libx.so")));
        assert_eq!(cipher.config.unwrap()["public_key"].as_str(), Some("ab"));
    }

    #[test]
    fn no_plugins_table_means_defaults() {
        assert_eq!(
            PluginsConfig::from_toml_str("[other]\nx = 1").unwrap(),
            PluginsConfig::default()
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = PluginsConfig::from_toml_str("[plugins]\ncodecs = \"mars\"").unwrap_err();
        assert_eq!(
            e,
            RegistryError::UnknownField {
                table: "plugins".into(),
                field: "codecs".into(),
                expected: "codec, auth, heartbeat, ip_sources, cipher".into(),
            }
        );
        let e = PluginsConfig::from_toml_str("[plugins.cipher]\nnmae = \"x\"").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown field `nmae` in plugins.cipher; expected one of: name, library, config"
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        for (text, field) in [
            ("[plugins]\ncodec = 5", "plugins.codec"),
            ("[plugins]\ncodec = \"\"", "plugins.codec"),
            ("[plugins]\nip_sources = \"dns\"", "plugins.ip_sources"),
            (
                "[plugins]\nip_sources = [\"a\", 3]",
                "plugins.ip_sources[1]",
            ),
            ("[plugins.auth]\nconfig = {}", "plugins.auth"),
            ("[plugins.auth]\nname = 1", "plugins.auth.name"),
            (
                "[plugins.auth]\nname = \"x\"\nlibrary = 2",
                "plugins.auth.library",
            ),
            ("plugins = 3", "plugins"),
        ] {
            match PluginsConfig::from_toml_str(text) {
                Err(RegistryError::InvalidValue { field: f, .. }) => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_toml_is_reported_with_where_it_is() {
        assert!(matches!(
            PluginsConfig::from_toml_str("[plugins\ncodec = "),
            Err(RegistryError::Toml(_))
        ));
        // Before, the message lost the line and column.
        let err =
            PluginsConfig::from_toml_str("[app]\nx = 1\n\n[plugins]\ncodec = \"mars\"\nauth = \n")
                .unwrap_err();
        assert!(err.to_string().contains("line 6"), "{err}");
    }
}
