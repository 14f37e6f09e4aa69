//! [`RegistryError`].

use phobos_plugin_abi::{LoadError, PluginKind};

/// Why a plugin set could not be built from configuration.
///
/// `field` values are paths into the configuration, such as `plugins.cipher.library` or
/// `plugins.ip_sources[1]`, so every message says where the problem is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The text is not valid TOML.
    #[error("plugin configuration is not valid TOML: {0}")]
    Toml(String),
    /// A key the plugin configuration does not have.
    #[error("unknown field `{field}` in {table}; expected one of: {expected}")]
    UnknownField {
        /// The table holding the key (`plugins`, `plugins.cipher`).
        table: String,
        /// The key.
        field: String,
        /// The keys allowed there.
        expected: String,
    },
    /// A value of the wrong type or shape.
    #[error("{field}: {reason}")]
    InvalidValue {
        /// Where.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// No built-in plugin, and no plugin in a loaded library, has that kind and name.
    #[error(
        "{field}: no {kind} plugin named \"{name}\"; available: {}",
        list_or_none(.available)
    )]
    UnknownPlugin {
        /// Where it was asked for.
        field: String,
        /// The kind.
        kind: PluginKind,
        /// The name asked for.
        name: String,
        /// The names there are, each with its origin.
        available: Vec<String>,
    },
    /// A name without a `library` that more than one origin offers (a built-in and a loaded
    /// library, or two libraries): which one is meant is not guessed.
    #[error(
        "{field}: {kind} plugin \"{name}\" is offered by {}; name the one meant with `library = \"PATH\"`",
        .origins.join(" and ")
    )]
    AmbiguousPlugin {
        /// Where it was asked for.
        field: String,
        /// The kind.
        kind: PluginKind,
        /// The name asked for.
        name: String,
        /// Each origin offering it (`built-in`, or a library's path).
        origins: Vec<String>,
    },
    /// A built-in plugin refused its config.
    #[error("{field}: {kind} plugin \"{name}\" rejected its config: {message}")]
    ConfigRejected {
        /// Where.
        field: String,
        /// The kind.
        kind: PluginKind,
        /// The plugin.
        name: String,
        /// The plugin's (or the deserializer's) message.
        message: String,
    },
    /// A built-in plugin's constructor panicked (the panic is contained; the plugin is not
    /// made), as [`LoadError::ConstructorPanicked`] says of one loaded from a library.
    #[error("{field}: {kind} plugin \"{name}\" panicked while being made: {message}")]
    ConstructorPanicked {
        /// Where.
        field: String,
        /// The kind.
        kind: PluginKind,
        /// The plugin.
        name: String,
        /// The panic message.
        message: String,
    },
    /// Loading a library, or a plugin from one, failed.
    #[error("{field}: {error}")]
    Load {
        /// Where the library was asked for (`plugins.cipher`, or `plugin library` for
        /// [`Registry::load_library`](crate::Registry::load_library)).
        field: String,
        /// What went wrong.
        #[source]
        error: LoadError,
    },
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}
