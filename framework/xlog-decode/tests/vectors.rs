//! THE BAR: every vector written by the real Mars (tests/data, copied from the shared test
//! data; see its README.md) decodes to exactly the official Python decoder's output.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use phobos_cipher_mars::MarsCipher;
use phobos_xlog_decode::{Decoder, Event, MagicSet, StartRule};

const DECOMPRESS_ERR: &[u8] = b"[F]decode_log_file.py decompress err, ";

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(data(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn private_key() -> String {
    let keys = String::from_utf8(read("keys.txt")).unwrap();
    keys.lines()
        .find_map(|l| l.strip_prefix("private_key = "))
        .unwrap()
        .trim()
        .to_owned()
}

fn keyed() -> Decoder {
    let cipher = MarsCipher::from_private_key_hex(&private_key()).unwrap();
    Decoder::builder().cipher(Arc::new(cipher)).build()
}

/// Byte equality, except that with `allowance` a `decompress err` line is compared only up to
/// that prefix (its rest is a Python exception message; README "How the expected text was
/// made").
fn assert_same(name: &str, actual: &[u8], expected: &[u8], allowance: bool) {
    if !allowance {
        if actual != expected {
            let at = actual
                .iter()
                .zip(expected)
                .position(|(a, b)| a != b)
                .unwrap_or(actual.len().min(expected.len()));
            panic!(
                "{name}: output differs at byte {at} (len {} vs expected {}):\n got: {:?}\nwant: {:?}",
                actual.len(),
                expected.len(),
                String::from_utf8_lossy(&actual[at.saturating_sub(80)..(at + 80).min(actual.len())]),
                String::from_utf8_lossy(&expected[at.saturating_sub(80)..(at + 80).min(expected.len())]),
            );
        }
        return;
    }
    let a: Vec<&[u8]> = actual.split(|&b| b == b'\n').collect();
    let e: Vec<&[u8]> = expected.split(|&b| b == b'\n').collect();
    assert_eq!(a.len(), e.len(), "{name}: line count");
    for (i, (x, y)) in a.iter().zip(&e).enumerate() {
        if y.starts_with(DECOMPRESS_ERR) {
            assert!(
                x.starts_with(DECOMPRESS_ERR),
                "{name}: line {i}: {:?}",
                String::from_utf8_lossy(x)
            );
        } else {
            assert_eq!(x, y, "{name}: line {i}");
        }
    }
}

fn check(file: &str, expected: &str) {
    let out = keyed().decode(&read(file));
    assert_same(file, &out, &read(expected), false);
}

#[test]
fn v01_async_zlib_nocrypt() {
    check(
        "01_async_zlib_nocrypt/demo_20261126.xlog",
        "01_async_zlib_nocrypt/expected.log",
    );
    // No key is needed for it.
    let out = Decoder::new().decode(&read("01_async_zlib_nocrypt/demo_20261126.xlog"));
    assert_eq!(out, read("01_async_zlib_nocrypt/expected.log"));
    assert_eq!(out.split(|&b| b == b'\n').count() - 1, 510);
}

#[test]
fn v02_async_zlib_crypt() {
    check(
        "02_async_zlib_crypt/demo_20261126.xlog",
        "02_async_zlib_crypt/expected.log",
    );
}

#[test]
fn v03_async_zstd_nocrypt() {
    check(
        "03_async_zstd_nocrypt/demo_20261126.xlog",
        "03_async_zstd_nocrypt/expected.log",
    );
}

#[test]
fn v04_async_zstd_crypt() {
    check(
        "04_async_zstd_crypt/demo_20261126.xlog",
        "04_async_zstd_crypt/expected.log",
    );
}

#[test]
fn v05_sync_modes() {
    for mode in [
        "sync_zlib",
        "sync_zlib_crypt",
        "sync_zstd",
        "sync_zstd_crypt",
    ] {
        let file = format!("05_sync_modes/{mode}_20261126.xlog");
        check(&file, &format!("05_sync_modes/expected_{mode}.log"));
        // Sync bodies are plain text even under the "crypt" magics: no key needed.
        assert_eq!(
            Decoder::new().decode(&read(&file)),
            read(&format!("05_sync_modes/expected_{mode}.log"))
        );
    }
}

#[test]
fn v06_crash_recovery_files() {
    check(
        "06_crash_recovery/after_crash/crash_20261126.xlog",
        "06_crash_recovery/expected_after_crash.log",
    );
    check(
        "06_crash_recovery/after_restart/crash_20261126.xlog",
        "06_crash_recovery/expected_after_restart.log",
    );
}

#[test]
fn v06_mmap3_block() {
    let out = keyed()
        .decode_mmap3(&read("06_crash_recovery/after_crash/crash.mmap3"))
        .unwrap();
    assert_same(
        "crash.mmap3",
        &out,
        &read("06_crash_recovery/expected_mmap3_block.log"),
        false,
    );
    assert_eq!(out.split(|&b| b == b'\n').count() - 1, 60);
}

#[test]
fn v07_source_and_truncated() {
    check(
        "07_corrupted/source.xlog",
        "07_corrupted/expected_source.log",
    );
    check(
        "07_corrupted/truncated.xlog",
        "07_corrupted/expected_truncated.log",
    );
}

#[test]
fn v07_corrupted_with_the_readme_allowance() {
    let out = keyed().decode(&read("07_corrupted/corrupted.xlog"));
    assert_same(
        "corrupted.xlog",
        &out,
        &read("07_corrupted/expected_corrupted.log"),
        true,
    );
}

#[test]
fn v07_corrupted_error_texts_match_python_2_exactly() {
    // Beyond the allowance: we print zlib's own reason and Python 2's struct message.
    let out = keyed().decode(&read("07_corrupted/corrupted.xlog"));
    assert_same(
        "corrupted.xlog",
        &out,
        &read("07_corrupted/expected_corrupted.log"),
        false,
    );
}

#[test]
fn v07_corrupted_events() {
    let file = read("07_corrupted/corrupted.xlog");
    let decoder = keyed();
    let events: Vec<Event<'_>> = decoder.events(&file).collect();
    let resyncs: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::Resync { skipped, .. } => Some(*skipped),
            _ => None,
        })
        .collect();
    assert_eq!(resyncs, [40, 1, 2952]);
    let gaps: Vec<(u32, u32)> = events
        .iter()
        .filter_map(|e| match e {
            Event::SeqGap { first, last } => Some((*first, *last)),
            _ => None,
        })
        .collect();
    assert_eq!(gaps, [(5, 1791), (1793, 5), (7, 7)]);
    // The first block found starts after the 9 junk bytes, without a resync line.
    let first = events.iter().find_map(|e| match e {
        Event::Text { block, .. } => Some(block.offset),
        _ => None,
    });
    assert_eq!(first, Some(9));
}

#[test]
fn v07_one_block_then_partial_python_rule_gives_nothing() {
    let file = read("07_corrupted/one_block_then_partial.xlog");
    assert!(read("07_corrupted/expected_one_block_then_partial.log").is_empty());
    assert!(keyed().decode(&file).is_empty());
    assert_eq!(keyed().events(&file).count(), 0);
}

#[test]
fn v07_one_block_then_partial_lenient_rule_gives_the_first_block() {
    let file = read("07_corrupted/one_block_then_partial.xlog");
    let lenient = Decoder::builder()
        .start_rule(StartRule::OneGoodBlock)
        .build();
    let out = lenient.decode(&file);
    assert_eq!(out.split(|&b| b == b'\n').count() - 1, 49);
    // It is exactly the first block's text of the source file.
    let source = read("07_corrupted/source.xlog");
    let first = Decoder::new().events(&source).find_map(|e| match e {
        Event::Text { text, .. } => Some(text.into_owned()),
        _ => None,
    });
    assert_eq!(Some(out), first);
}

#[test]
fn v08_split_by_size() {
    for suffix in ["", "_1", "_2", "_3"] {
        check(
            &format!("08_split_by_size/split_20261126{suffix}.xlog"),
            &format!("08_split_by_size/expected_split_20261126{suffix}.log"),
        );
    }
}

#[test]
fn mars_magic_set_gives_the_same_output_on_every_vector() {
    let strict = Decoder::builder()
        .cipher(Arc::new(
            MarsCipher::from_private_key_hex(&private_key()).unwrap(),
        ))
        .magic_set(MagicSet::Mars)
        .build();
    for file in all_xlogs() {
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(
            strict.decode(&bytes),
            keyed().decode(&bytes),
            "{}",
            file.display()
        );
    }
}

#[test]
fn encrypted_vectors_without_a_key_say_so_per_block() {
    let file = read("02_async_zlib_crypt/demo_20261126.xlog");
    let text = String::from_utf8(Decoder::new().decode(&file)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "one line per block");
    for line in lines {
        assert_eq!(
            line,
            "[F]decode_log_file.py decompress err, block (magic 0x07) is encrypted and no private key was given"
        );
    }
}

#[test]
fn encrypted_vectors_with_a_wrong_key_fail_per_block_and_go_on() {
    // A fixed key, so every run decodes the same bytes (see the CLI's wrong-key test).
    let wrong = MarsCipher::from_private_key_hex(
        "faff2465b77a84483353c60a2a669eada32077674a057b3834a5971e3ab2b42f",
    )
    .unwrap();
    let decoder = Decoder::builder().cipher(Arc::new(wrong)).build();
    for file in [
        "02_async_zlib_crypt/demo_20261126.xlog",
        "04_async_zstd_crypt/demo_20261126.xlog",
    ] {
        let bytes = read(file);
        let summary = decoder.decode_into(&bytes, &mut Vec::new());
        assert!(summary.failed_blocks > 0, "{file}: {summary}");
        assert_eq!(summary.resyncs, 0);
    }
}

fn all_xlogs() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![data("")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "xlog") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert_eq!(files.len(), 18);
    files
}
