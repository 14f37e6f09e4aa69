#![no_main]
// The Mars codec as a reader drives it; the entry panics only if the codec breaks its contract.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = phobos_codec_mars::fuzzing::decode_stream(data);
});
