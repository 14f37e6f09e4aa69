#![no_main]
// Any text as an app's TOML config: parsing and plugin selection must fail cleanly. Configs
// naming a library are parsed but not built: a fuzzer must not dlopen files it made up.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
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
});
