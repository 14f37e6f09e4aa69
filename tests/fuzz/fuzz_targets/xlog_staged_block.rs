#![no_main]
// Any bytes as a crashed staging slot and as a run of blocks (phobos-xlog's checked views).
#[path = "../entries/xlog_staged_block.rs"]
mod entry;
libfuzzer_sys::fuzz_target!(|data: &[u8]| entry::run(data));
