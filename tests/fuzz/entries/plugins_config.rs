//! Fuzz entry shared by the cargo-fuzz target `plugins_config` and the stable corpus replay
//! (`tests/integration/tests/fuzz_corpus_replay.rs` includes this file): any text as an app's
//! TOML `[plugins]` config. Parsing and plugin selection must fail cleanly. Configs naming a
//! library are parsed but not built: a fuzzer must not dlopen files it made up.

/// Parses `data` as a plugins config and builds it when it names no library.
pub(crate) fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = phobos_plugin_registry::PluginsConfig::from_toml_str(text) else {
        return;
    };
    let specs = [
        &config.codec,
        &config.auth,
        &config.heartbeat,
        &config.cipher,
    ];
    let names_library = specs
        .iter()
        .any(|s| s.as_ref().is_some_and(|s| s.library.is_some()))
        || config
            .ip_sources
            .iter()
            .flatten()
            .any(|s| s.library.is_some());
    if !names_library {
        let _ = phobos_plugin_registry::Registry::with_builtins().build(&config);
    }
}
