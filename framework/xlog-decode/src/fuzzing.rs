//! Entry points for fuzz targets (`tests/fuzz`) and for the same checks under proptest.
//!
//! Each function takes arbitrary bytes, runs a parser over them and checks invariants that
//! must hold for every input; it panics only when an invariant is broken (which is what a
//! fuzzer should report). None of them needs a key.
//!
//! ```
//! phobos_xlog_decode::fuzzing::decode_file(b"\x09\x01\x00anything");
//! phobos_xlog_decode::fuzzing::decode_mmap3(&[0x07; 80]);
//! ```

use crate::body;
use crate::decoder::{DecodeOptions, Decoder, Event, ResyncRule, StartRule};
use crate::format::{check_block, find_block_start, MagicSet};
use crate::mmap3;

/// Decodes `data` as a whole file with every option combination and checks that:
/// rendering the events gives [`Decoder::decode`]'s output; every block lies inside the input
/// and blocks come in increasing order.
///
/// No block-count relation between the start rules is asserted: the lenient rule may start at
/// an earlier block whose successor is damaged, and the resync from there can meet a
/// block-shaped run of junk that swallows blocks the strict rule would have decoded (a mutated
/// corpus file showed exactly that).
pub fn decode_file(data: &[u8]) {
    for start in [StartRule::TwoGoodBlocks, StartRule::OneGoodBlock] {
        for (magics, resync) in [
            (MagicSet::Mars, ResyncRule::Mars),
            (MagicSet::MarsAndAuthenticated, ResyncRule::Mars),
            (MagicSet::MarsAndAuthenticated, ResyncRule::Confirmed),
        ] {
            let options = DecodeOptions::new(start, magics).with_resync_rule(resync);
            let decoder = Decoder::builder().options(options).build();
            let mut rendered = Vec::new();
            let mut last_end = 0;
            for event in decoder.events(data) {
                if let Event::Text { block, .. } | Event::Failed { block, .. } = &event {
                    assert!(block.offset >= last_end, "blocks overlap or go backwards");
                    assert!(block.end <= data.len() && block.end > block.offset);
                    last_end = block.end;
                }
                event.render(&mut rendered);
            }
            assert_eq!(rendered, decoder.decode(data));
        }
    }
}

/// Treats `data` as a `.mmap3` file: recovery either fails cleanly or yields a block that
/// passes the structural check and decodes without panicking.
pub fn decode_mmap3(data: &[u8]) {
    let set = MagicSet::default();
    let _ = mmap3::recovered_blocks(data, set);
    if let Ok(block) = mmap3::recovered_block(data, set) {
        let checked = check_block(&block, 0, set).expect("a recovered block is well-formed");
        assert_eq!(checked.end, block.len());
        let _ = Decoder::new().decode(&block);
    }
}

/// Runs the structural check and start scan at every offset of `data`.
pub fn scan_blocks(data: &[u8]) {
    for at in 0..data.len().min(4096) {
        if let Ok(block) = check_block(data, at, MagicSet::default()) {
            assert!(block.end <= data.len());
            assert!(block.body(data).len() == block.length as usize);
            assert!(block.length <= block.magic.max_length());
        }
    }
    if let Some(at) = find_block_start(data, 0, 1, MagicSet::default()) {
        assert!(check_block(data, at, MagicSet::default()).is_ok());
    }
}

/// Feeds `data` to each body decoder (inflate, zstd, legacy chunks).
pub fn decode_bodies(data: &[u8]) {
    let _ = body::inflate_raw(data);
    if let Ok(text) = body::zstd_unterminated(data) {
        assert!(text.len() <= body::MAX_TEXT_PER_BLOCK + (64 << 10));
    }
    let _ = body::legacy_chunks(data);
}
