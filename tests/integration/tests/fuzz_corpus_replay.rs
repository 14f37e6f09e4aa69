//! Replays the checked-in fuzz corpus (`tests/fuzz/corpus/<target>/`) through the same entry
//! points the cargo-fuzz targets call, so every input that ever found a bug stays a test on
//! the stable toolchain. Then runs the entries on random and mutated inputs with proptest.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

// The same file the cargo-fuzz target `xlog_staged_block` includes.
#[path = "../../fuzz/entries/xlog_staged_block.rs"]
mod xlog_staged_block;

// The same file the cargo-fuzz target `plugins_config` includes.
#[path = "../../fuzz/entries/plugins_config.rs"]
mod plugins_config_entry;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read corpus file");
            (p, bytes)
        })
        .collect()
}

#[test]
fn codec_corpus_replays_cleanly() {
    for (path, bytes) in corpus("codec_mars_decode") {
        eprintln!("{}", path.display());
        let _ = phobos_codec_mars::fuzzing::decode_stream(&bytes);
    }
}

#[test]
fn xlog_file_corpus_replays_cleanly() {
    for (path, bytes) in corpus("xlog_decode_file") {
        eprintln!("{}", path.display());
        phobos_xlog_decode::fuzzing::decode_file(&bytes);
    }
}

#[test]
fn xlog_mmap3_corpus_replays_cleanly() {
    for (path, bytes) in corpus("xlog_decode_mmap3") {
        eprintln!("{}", path.display());
        phobos_xlog_decode::fuzzing::decode_mmap3(&bytes);
    }
}

#[test]
fn plugins_config_corpus_replays_cleanly() {
    for (path, bytes) in corpus("plugins_config") {
        eprintln!("{}", path.display());
        plugins_config_entry::run(&bytes);
    }
}

#[test]
fn xlog_staged_block_corpus_replays_cleanly() {
    for (path, bytes) in corpus("xlog_staged_block") {
        eprintln!("{}", path.display());
        xlog_staged_block::run(&bytes);
    }
}

#[test]
fn short_response_corpus_replays_cleanly() {
    for (path, bytes) in corpus("stn_short_response") {
        eprintln!("{}", path.display());
        phobos_stn::fuzzing::short_response(&bytes);
    }
}

/// A corpus file with a few bytes overwritten.
fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let files = corpus(target);
    (
        0..files.len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
    )
        .prop_map(move |(i, edits)| {
            let mut bytes = files[i].1.clone();
            if !bytes.is_empty() {
                for (at, b) in edits {
                    let at = at.index(bytes.len());
                    bytes[at] = b;
                }
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn codec_entry_survives_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = phobos_codec_mars::fuzzing::decode_stream(&bytes);
    }

    #[test]
    fn codec_entry_survives_mutated_corpus(bytes in mutated("codec_mars_decode")) {
        let _ = phobos_codec_mars::fuzzing::decode_stream(&bytes);
    }

    #[test]
    fn xlog_entry_survives_mutated_corpus(bytes in mutated("xlog_decode_file")) {
        phobos_xlog_decode::fuzzing::decode_file(&bytes);
    }

    #[test]
    fn mmap3_entry_survives_mutated_corpus(bytes in mutated("xlog_decode_mmap3")) {
        phobos_xlog_decode::fuzzing::decode_mmap3(&bytes);
    }

    #[test]
    fn config_entry_survives_mutated_corpus(bytes in mutated("plugins_config")) {
        plugins_config_entry::run(&bytes);
    }

    #[test]
    fn xlog_staged_block_entry_survives_mutated_corpus(bytes in mutated("xlog_staged_block")) {
        xlog_staged_block::run(&bytes);
    }

    #[test]
    fn short_response_entry_survives_mutated_corpus(bytes in mutated("stn_short_response")) {
        phobos_stn::fuzzing::short_response(&bytes);
    }
}
