//! Fuzz entry shared by the cargo-fuzz target `xlog_staged_block` and the stable corpus
//! replay (`tests/integration/tests/fuzz_corpus_replay.rs` includes this file): any bytes as
//! a staging slot left behind by a crash, and as a run of blocks, through `phobos-xlog`'s
//! public checked views. Panics only when an invariant breaks.

use phobos_xlog::block::{
    parse_staged_body, staged_block, BlockHeader, BlockView, BUFFER_BLOCK_LEN, HEADER_LEN,
    MAGIC_END,
};

/// Runs every check on `data`.
pub(crate) fn run(data: &[u8]) {
    // Recovery of the unfinished block at the start of a slot: its header is the slot's with
    // the length clamped to the body, which is a non-empty prefix of what follows the header,
    // within the slot's room.
    if let Some((header, body)) = staged_block(data) {
        let parsed = BlockHeader::parse(data).expect("a recovered slot has a valid header");
        assert_eq!(header.len as usize, body.len());
        assert!(body.len() <= parsed.len as usize);
        assert_eq!(
            BlockHeader {
                len: parsed.len,
                ..header
            },
            parsed
        );
        assert!(!body.is_empty());
        assert!(HEADER_LEN + body.len() < data.len().min(BUFFER_BLOCK_LEN));
        assert_eq!(body, &data[HEADER_LEN..HEADER_LEN + body.len()]);
    }
    // Complete blocks one after another: each header re-emits to its own bytes, each block
    // ends with the end byte, and a staged-stream prefix lies inside its body.
    let mut at = 0;
    while let Ok(view) = BlockView::parse(&data[at..]) {
        let n = view.total_len();
        assert!(at + n <= data.len());
        let mut emitted = [0u8; HEADER_LEN];
        view.header.emit(&mut emitted);
        assert_eq!(&data[at..at + HEADER_LEN], &emitted[..]);
        assert_eq!(data[at + n - 1], MAGIC_END);
        if let Some((_, wrapped, _, rest)) = parse_staged_body(view.body) {
            assert_eq!(2 + wrapped.len() + 8 + rest.len(), view.body.len());
        }
        at += n;
    }
}
