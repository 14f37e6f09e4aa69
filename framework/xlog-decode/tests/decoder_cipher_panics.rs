//! A cipher that panics (an in-process plugin's bug) fails the block it was decrypting with a
//! clear error, and every other block still decodes: the decoder's calls into the cipher are
//! guarded. Real Mars file: `02_async_zlib_crypt` (six blocks of one session).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use phobos_cipher_mars::MarsCipher;
use phobos_plugin_api::cipher::HEADER_KEY_LEN;
use phobos_plugin_api::{BlockDecryptor, BlockEncryptor, CipherError, CipherKind, LogCipher};
use phobos_xlog_decode::{Decoder, Event};

/// Where a [`Panicky`] cipher panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PanicAt {
    /// The n-th `decrypt_block` call (0-based), `usize::MAX`: every call.
    Decrypt(usize),
    /// The first `new_decryptor` call.
    FirstNewDecryptor,
    /// `kind`.
    Kind,
    /// Dropping a decryptor.
    DropDecryptor,
}

/// Mars's cipher with the vectors' private key, panicking at `at`.
#[derive(Debug)]
struct Panicky {
    inner: MarsCipher,
    at: PanicAt,
    decrypts: Arc<AtomicUsize>,
    made: AtomicUsize,
}

impl LogCipher for Panicky {
    fn name(&self) -> &str {
        "panicky"
    }

    fn kind(&self) -> CipherKind {
        assert!(self.at != PanicAt::Kind, "test: kind");
        self.inner.kind()
    }

    fn new_encryptor(&self) -> Result<Box<dyn BlockEncryptor>, CipherError> {
        self.inner.new_encryptor()
    }

    fn new_decryptor(
        &self,
        header_key: &[u8; HEADER_KEY_LEN],
    ) -> Result<Box<dyn BlockDecryptor>, CipherError> {
        let first = self.made.fetch_add(1, Ordering::Relaxed) == 0;
        assert!(
            !(first && self.at == PanicAt::FirstNewDecryptor),
            "test: new_decryptor"
        );
        Ok(Box::new(PanickyDecryptor {
            inner: self.inner.new_decryptor(header_key)?,
            at: self.at,
            decrypts: self.decrypts.clone(),
        }))
    }
}

#[derive(Debug)]
struct PanickyDecryptor {
    inner: Box<dyn BlockDecryptor>,
    at: PanicAt,
    decrypts: Arc<AtomicUsize>,
}

impl BlockDecryptor for PanickyDecryptor {
    fn decrypt_block(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        let n = self.decrypts.fetch_add(1, Ordering::Relaxed);
        // Half a block's worth of output first: none of it may reach the text.
        out.extend_from_slice(b"garbage");
        if let PanicAt::Decrypt(at) = self.at {
            assert!(at != n && at != usize::MAX, "test: decrypt_block");
        }
        out.clear();
        self.inner.decrypt_block(body, out)
    }
}

impl Drop for PanickyDecryptor {
    fn drop(&mut self) {
        if self.at == PanicAt::DropDecryptor && !std::thread::panicking() {
            panic!("test: drop");
        }
    }
}

fn data(rel: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mars_cipher() -> MarsCipher {
    let keys = String::from_utf8(data("keys.txt")).unwrap();
    let private = keys
        .lines()
        .find_map(|l| l.strip_prefix("private_key = "))
        .unwrap()
        .trim();
    MarsCipher::from_private_key_hex(private).unwrap()
}

fn panicky(at: PanicAt) -> Decoder {
    let cipher = Panicky {
        inner: mars_cipher(),
        at,
        decrypts: Arc::default(),
        made: AtomicUsize::new(0),
    };
    Decoder::builder().cipher(Arc::new(cipher)).build()
}

/// The file decoded by the plain Mars cipher, with the text of the blocks at `failed` replaced
/// by the `decompress err` line of a panic at `what`.
fn expected_with_failed(file: &[u8], failed: &[usize], what: &str) -> Vec<u8> {
    let good = Decoder::builder().cipher(Arc::new(mars_cipher())).build();
    let mut out = Vec::new();
    let mut i = 0;
    for event in good.events(file) {
        if let Event::Text { .. } = event {
            if failed.contains(&i) {
                out.extend_from_slice(
                    format!(
                        "[F]decode_log_file.py decompress err, decryption failed: cipher \
                         failure: log cipher \"panicky\" panicked: test: {what}\n"
                    )
                    .as_bytes(),
                );
                i += 1;
                continue;
            }
            i += 1;
        }
        event.render(&mut out);
    }
    assert_eq!(i, 6, "six blocks");
    out
}

/// Decodes the keyed test file with a cipher panicking at `at`: the text must be the
/// expected one with blocks `failed` replaced by the failure line naming `call`. Returns the
/// text.
fn decoded_with_failed(at: PanicAt, failed: &[usize], call: &str) -> Vec<u8> {
    let file = data("02_async_zlib_crypt/demo_20261126.xlog");
    let got = panicky(at).decode(&file);
    let want = expected_with_failed(&file, failed, call);
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
    got
}

#[test]
fn a_decryptor_panicking_on_one_block_fails_that_block_and_the_others_decode() {
    let got = decoded_with_failed(PanicAt::Decrypt(1), &[1], "decrypt_block");
    // The real text, whole, apart from the failed block.
    let expected = data("02_async_zlib_crypt/expected.log");
    assert!(got.len() < expected.len());
}

#[test]
fn a_decryptor_panicking_on_every_block_fails_each_with_its_line() {
    decoded_with_failed(
        PanicAt::Decrypt(usize::MAX),
        &[0, 1, 2, 3, 4, 5],
        "decrypt_block",
    );
}

#[test]
fn a_cipher_panicking_while_it_makes_a_decryptor_fails_that_block_and_is_asked_again() {
    decoded_with_failed(PanicAt::FirstNewDecryptor, &[0], "new_decryptor");
}

#[test]
fn a_cipher_whose_kind_panics_is_not_used_and_its_blocks_say_why() {
    assert!(panicky(PanicAt::Kind).has_ciphers());
    decoded_with_failed(PanicAt::Kind, &[0, 1, 2, 3, 4, 5], "kind");
}

#[test]
fn a_decryptor_panicking_when_dropped_loses_nothing() {
    let file = data("02_async_zlib_crypt/demo_20261126.xlog");
    assert_eq!(
        panicky(PanicAt::DropDecryptor).decode(&file),
        data("02_async_zlib_crypt/expected.log")
    );
}

#[test]
fn a_staging_file_decoded_with_a_panicking_decryptor_gives_an_error_line() {
    // Mars's real `.mmap3` left by a crash: one keyed block.
    let mmap3 = data("06_crash_recovery/after_crash/crash.mmap3");
    let got = panicky(PanicAt::Decrypt(usize::MAX))
        .decode_mmap3(&mmap3)
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        "[F]decode_log_file.py decompress err, decryption failed: cipher failure: \
         log cipher \"panicky\" panicked: test: decrypt_block\n"
    );
    // The same file decodes whole once the cipher behaves.
    assert_eq!(
        panicky(PanicAt::Decrypt(99)).decode_mmap3(&mmap3).unwrap(),
        data("06_crash_recovery/expected_mmap3_block.log")
    );
}
