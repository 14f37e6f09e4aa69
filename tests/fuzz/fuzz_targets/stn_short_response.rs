#![no_main]
// Any bytes as everything a short-link (HTTP/1.1) server sends back: a response or a typed
// error, never a panic or a hang.
libfuzzer_sys::fuzz_target!(|data: &[u8]| phobos_stn::fuzzing::short_response(data));
