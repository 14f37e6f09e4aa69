#![no_main]
// Any bytes as a staging buffer file left behind by a crash.
libfuzzer_sys::fuzz_target!(|data: &[u8]| phobos_xlog_decode::fuzzing::decode_mmap3(data));
