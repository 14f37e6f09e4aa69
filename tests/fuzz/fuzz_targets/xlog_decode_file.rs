#![no_main]
// Any bytes as an .xlog file: framing, resync, sequence reporting and bodies.
libfuzzer_sys::fuzz_target!(|data: &[u8]| phobos_xlog_decode::fuzzing::decode_file(data));
