//! An authenticated cipher (`phobos-cipher-modern`) is written under Phobos's own magics
//! (0x27 zlib, 0x2C zstd), round-trips through the independent decoder, and is recovered
//! after an unclean stop (staged blocks under 0x47 / 0x4C).

use std::fs;
use std::sync::Arc;

use phobos_cipher_modern::ModernCipher;
use phobos_xlog::block::{BlockView, MAGIC_ASYNC_ZLIB_AUTH, MAGIC_ASYNC_ZSTD_AUTH};
use phobos_xlog::{Compression, Level, Mode, Xlog};
use phobos_xlog_decode::Decoder;

#[test]
fn authenticated_cipher_blocks_use_phobos_magics_and_decode() {
    let keys = ModernCipher::generate_key_pair();
    for (compression, magic) in [
        (Compression::Zlib, MAGIC_ASYNC_ZLIB_AUTH),
        (Compression::Zstd, MAGIC_ASYNC_ZSTD_AUTH),
    ] {
        for mode in [Mode::Async, Mode::Sync] {
            let dir = tempfile::tempdir().unwrap();
            let g = Xlog::builder()
                .log_dir(dir.path())
                .name_prefix("auth")
                .compression(compression)
                .mode(mode)
                .banners(false)
                .cipher(Arc::new(
                    ModernCipher::from_public_key_hex(&keys.public_key).unwrap(),
                ))
                .build()
                .unwrap();
            for i in 0..500 {
                g.log_message(Level::Info, "t", format!("secret-auth-line {i}").as_bytes());
            }
            drop(g);
            let path = fs::read_dir(dir.path())
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "xlog"))
                .unwrap();
            let bytes = fs::read(&path).unwrap();
            assert!(!bytes.windows(16).any(|w| w == b"secret-auth-line"));
            let first = BlockView::parse(&bytes).unwrap();
            assert_eq!(first.header.magic, magic, "{compression:?} {mode:?}");
            let decoder = Decoder::builder()
                .cipher(Arc::new(
                    ModernCipher::from_private_key_hex(&keys.private_key).unwrap(),
                ))
                .build();
            let text = String::from_utf8(decoder.decode(&bytes)).unwrap();
            let n = text
                .lines()
                .filter(|l| l.contains("][secret-auth-line "))
                .count();
            assert_eq!(
                n,
                500,
                "{compression:?} {mode:?}:\n{}",
                &text[..text.len().min(2000)]
            );
            assert!(!text.contains("[F]decode_log_file.py"));
        }
    }
}

/// After an unclean stop, the staged block of a writer with an authenticated cipher (ChaCha20
/// staging, magic 0x47/0x4C once recovered) holds no plaintext and decodes with the private
/// key.
#[test]
fn a_keyed_writers_staged_block_is_recovered_and_decodes() {
    let keys = ModernCipher::generate_key_pair();
    for compression in [Compression::Zlib, Compression::Zstd] {
        let dir = tempfile::tempdir().unwrap();
        let open = |dir: &std::path::Path| {
            Xlog::builder()
                .log_dir(dir)
                .name_prefix("auth")
                .compression(compression)
                .banners(false)
                .cipher(Arc::new(
                    ModernCipher::from_public_key_hex(&keys.public_key).unwrap(),
                ))
                .build()
                .unwrap()
        };
        let g = open(dir.path());
        for i in 0..300 {
            g.log_message(Level::Info, "t", format!("staged-auth-line {i}").as_bytes());
        }
        // An unclean stop: keep the buffer file as it is now.
        let staged = fs::read(dir.path().join("auth.mmap3")).unwrap();
        std::mem::forget(g);
        assert!(!staged.windows(16).any(|w| w == b"staged-auth-line"));
        let dir2 = tempfile::tempdir().unwrap();
        fs::write(dir2.path().join("auth.mmap3"), &staged).unwrap();
        drop(open(dir2.path()));
        let path = fs::read_dir(dir2.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "xlog"))
            .unwrap();
        let bytes = fs::read(&path).unwrap();
        assert!(!bytes.windows(16).any(|w| w == b"staged-auth-line"));
        let mut magics = Vec::new();
        let mut off = 0;
        while let Ok(v) = BlockView::parse(&bytes[off..]) {
            magics.push(v.header.magic);
            off += v.total_len();
        }
        assert_eq!(off, bytes.len());
        let staged = match compression {
            Compression::Zlib => phobos_xlog::block::MAGIC_ASYNC_ZLIB_STAGED,
            _ => phobos_xlog::block::MAGIC_ASYNC_ZSTD_STAGED,
        };
        assert!(magics.contains(&staged), "{magics:x?}");
        let decoder = Decoder::builder()
            .cipher(Arc::new(
                ModernCipher::from_private_key_hex(&keys.private_key).unwrap(),
            ))
            .build();
        let text = String::from_utf8(decoder.decode(&bytes)).unwrap();
        let n = text
            .lines()
            .filter(|l| l.contains("][staged-auth-line "))
            .count();
        assert_eq!(
            n,
            300,
            "{compression:?}:\n{}",
            &text[..text.len().min(2000)]
        );
        assert!(!text.contains("[F]decode_log_file.py"), "{text}");
        // Without the key the block is reported, not decoded.
        let blind = String::from_utf8_lossy(&Decoder::new().decode(&bytes)).into_owned();
        assert!(!blind.contains("staged-auth-line"));
    }
}
