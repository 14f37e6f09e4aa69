//! The decoder as the oracle of the `phobos-xlog` writer: files and staging buffers it writes
//! (through its public API only) decode to the lines that were logged, with no decoder error
//! line. The decoder itself never imports the writer.

use std::path::Path;
use std::sync::Arc;

use phobos_cipher_mars::MarsCipher;
use phobos_cipher_modern::ModernCipher;
use phobos_plugin_api::LogCipher;
use phobos_xlog::{Compression, Level, Mode, Xlog, XlogBuilder};
use phobos_xlog_decode::Decoder;

const PRIVATE: &str = "b404e0f7d50323e5327c23603878c594189d63e76e4550fdea108b9ea41d3885";
const PUBLIC: &str = "1bcf0e7fed231a624d49eb6d58fa55ba73ba3b88a9498d4bba80bd798e5c9040\
                      e189ef6daf920dc81eac3b6f25808ca0753ed9b2d0787610321221ec5e0e0329";

fn messages(n: usize, salt: &str) -> Vec<String> {
    (0..n)
        .map(|i| format!("{salt} message {i} {}", "payload ".repeat(i % 13)))
        .collect()
}

/// Every message appears, in order, each as the end of a line.
fn assert_all_in_order(text: &[u8], msgs: &[String]) {
    let text = String::from_utf8_lossy(text);
    assert!(
        !text.contains("[F]decode_log_file.py"),
        "decoder complained:\n{text}"
    );
    let mut from = 0;
    for m in msgs {
        let needle = format!("[{m}\n");
        let at = text[from..]
            .find(&needle)
            .unwrap_or_else(|| panic!("{m:?} missing or out of order"));
        from += at + needle.len();
    }
}

/// A writer on a fixed clock (2026-11-26 12:00 UTC+8): a run across local midnight would
/// otherwise split the lines over two days' files.
fn builder(dir: &Path, compression: Compression, mode: Mode) -> XlogBuilder {
    Xlog::builder()
        .clock(Arc::new(phobos_xlog::FixedClock(
            phobos_xlog::WallTime::new(1_764_129_600, 0, 8 * 3600),
        )))
        .log_dir(dir)
        .name_prefix("oracle")
        .compression(compression)
        .mode(mode)
}

fn xlog_files(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "xlog"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

fn mars_reader() -> Decoder {
    Decoder::builder()
        .cipher(Arc::new(MarsCipher::from_private_key_hex(PRIVATE).unwrap()))
        .build()
}

#[test]
fn closed_logs_decode_to_what_was_logged() {
    let modern = ModernCipher::generate_key_pair();
    let cases: Vec<(Option<Arc<dyn LogCipher>>, Decoder)> = vec![
        (None, Decoder::new()),
        (
            Some(Arc::new(MarsCipher::from_public_key_hex(PUBLIC).unwrap())),
            mars_reader(),
        ),
        (
            Some(Arc::new(
                ModernCipher::from_public_key_hex(&modern.public_key).unwrap(),
            )),
            Decoder::builder()
                .cipher(Arc::new(
                    ModernCipher::from_private_key_hex(&modern.private_key).unwrap(),
                ))
                .build(),
        ),
    ];
    for (cipher, decoder) in cases {
        for compression in [Compression::Zlib, Compression::Zstd] {
            for mode in [Mode::Async, Mode::Sync] {
                let dir = tempfile::tempdir().unwrap();
                let msgs = messages(400, "closed");
                let mut b = builder(dir.path(), compression, mode);
                if let Some(c) = &cipher {
                    b = b.cipher(c.clone());
                }
                let guard = b.build().unwrap();
                for (i, m) in msgs.iter().enumerate() {
                    guard.log_message(
                        if i % 50 == 49 {
                            Level::Fatal
                        } else {
                            Level::Info
                        },
                        "t",
                        m.as_bytes(),
                    );
                }
                drop(guard);
                let files = xlog_files(dir.path());
                assert_eq!(files.len(), 1);
                let text = decoder.decode(&files[0]);
                assert_all_in_order(&text, &msgs);
            }
        }
    }
}

#[test]
fn a_staging_file_left_behind_decodes_to_the_staged_lines() {
    for (keyed, compression) in [
        (false, Compression::Zlib),
        (true, Compression::Zstd),
        (true, Compression::Zlib),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut b = builder(dir.path(), compression, Mode::Async).banners(false);
        if keyed {
            b = b.cipher(Arc::new(MarsCipher::from_public_key_hex(PUBLIC).unwrap()));
        }
        let guard = b.build().unwrap();
        let msgs = messages(120, "staged");
        for m in &msgs {
            guard.log_message(Level::Info, "t", m.as_bytes());
        }
        let mmap = std::fs::read(dir.path().join("oracle.mmap3")).unwrap();
        // Simulate a crash: never close the writer (no flush, no close banner).
        std::mem::forget(guard);
        let decoder = if keyed { mars_reader() } else { Decoder::new() };
        let text = decoder.decode_mmap3(&mmap).unwrap();
        assert_all_in_order(&text, &msgs);
    }
}

#[test]
fn the_longest_lines_the_writer_makes_fit_the_decoders_length_bounds() {
    // The decoder bounds block lengths by what writers produce (it treats anything longer as
    // damage), without importing the writer: these are the writer's numbers it relies on.
    use phobos_xlog_decode::format::{self, Magic, MagicSet};
    assert!(phobos_xlog::format::MAX_LINE_LEN as u64 <= u64::from(format::MAX_SYNC_LEN));
    assert_eq!(phobos_xlog::block::BUFFER_BLOCK_LEN, format::BUFFER_LEN);

    // And the writer's longest sync line, a message cut to the line cap, decodes.
    let dir = tempfile::tempdir().unwrap();
    let guard = builder(dir.path(), Compression::Zlib, Mode::Sync)
        .banners(false)
        .build()
        .unwrap();
    guard.log_message(Level::Info, "t", "x".repeat(40 << 10).as_bytes());
    drop(guard);
    let files = xlog_files(dir.path());
    let block = format::check_block(&files[0], 0, MagicSet::default()).unwrap();
    assert_eq!(block.magic, Magic::SyncZlib);
    assert_eq!(block.length as usize, phobos_xlog::format::MAX_LINE_LEN);
    let text = Decoder::new().decode(&files[0]);
    assert_eq!(text.len(), phobos_xlog::format::MAX_LINE_LEN);
    assert!(text.ends_with(b"xxx\n"));
}
