#![no_main]
// Any text as an app's TOML config (see the shared entry for the rules).
#[path = "../entries/plugins_config.rs"]
mod entry;
libfuzzer_sys::fuzz_target!(|data: &[u8]| entry::run(data));
