//! The Plugins set: built-in defaults, selection by TOML config, loading from libraries.
//!
//! - [`Plugins`] holds one plugin per extension point (`codec`, `auth`, `heartbeat`, an
//!   ordered list of `ip_sources`, an optional `log_cipher`), each a [`Plugin`] remembering its
//!   name and [`Origin`] (built-in, a library path, or handed in by the app). It has working
//!   defaults ([`PluginsBuilder`] lists them).
//! - [`Registry`] knows plugins by kind and name: the ones compiled into Phobos
//!   ([`Registry::with_builtins`]), ones the app registers, and the plugins of libraries given
//!   to [`Registry::load_library`] (`--plugin PATH`).
//! - [`PluginsConfig`] is the `[plugins]` TOML table: a string picks a plugin by name, a table
//!   adds `library` and `config`.
//!
//! What this crate does not do: load anything by itself at startup, or decide whether a
//! failing plugin stops the program (the caller gets a [`RegistryError`] naming the field and
//! decides).
//!
//! # Example
//!
//! ```
//! use phobos_plugin_registry::{Origin, Registry};
//!
//! let plugins = Registry::with_builtins().build_from_toml(
//!     r#"
//!     [plugins]
//!     codec = { name = "mars", config = { client_version = 200 } }
//!     heartbeat = "smart"
//!     ip_sources = [{ name = "static", config = { hosts = { "s.example" = ["10.0.0.1:80"] } } }]
//!     "#,
//! )?;
//! assert_eq!(plugins.codec.name(), "mars");
//! assert_eq!(plugins.heartbeat.name(), "smart");
//! assert_eq!(*plugins.auth.origin(), Origin::BuiltIn); // the default, "none"
//! assert!(plugins.log_cipher.is_none());
//! # Ok::<(), phobos_plugin_registry::RegistryError>(())
//! ```

mod config;
mod error;
mod plugins;
mod registry;

pub use config::{PluginSpec, PluginsConfig};
pub use error::RegistryError;
pub use phobos_plugin_abi::{LoadError, PluginKind};
pub use plugins::{Origin, Plugin, Plugins, PluginsBuilder};
pub use registry::Registry;
