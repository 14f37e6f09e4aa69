//! The Plugins set: built-in defaults, selection by TOML config, loading from libraries.
