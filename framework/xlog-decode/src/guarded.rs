//! The cipher's calls, guarded against panics.
//!
//! A [`LogCipher`] handed to [`DecoderBuilder::cipher`](crate::DecoderBuilder::cipher) runs
//! in-process, on the thread that decodes. A panic in it would otherwise end the decoding
//! (the `phobos-xlog` CLI, or the app calling the library) and lose every block after it.
//! Here each call is made under [`catch`] and a panic becomes [`cipher_panicked`], the same
//! error a cipher loaded from a library gives: the block it was decrypting fails with that
//! error on its `decompress err` line, and the next block is decrypted again (by a new
//! decryptor, so whatever state the panic left half-changed is not used). This mirrors the
//! writer's guard (`phobos-xlog`'s `guarded.rs`).

use phobos_plugin_api::cipher::{BlockDecryptor, CipherError, LogCipher, HEADER_KEY_LEN};
use phobos_plugin_api::panics::{catch, cipher_name, cipher_panicked, drop_caught};

/// What [`new_decryptor`] gives: the guarded decryptor, the cipher's own error, or the error
/// standing for its panic.
pub(crate) enum Made {
    Decryptor(GuardedDecryptor),
    Failed(CipherError),
    Panicked(CipherError),
}

/// [`LogCipher::new_decryptor`] for `header_key`, guarded, and the decryptor it makes guarded
/// in turn.
pub(crate) fn new_decryptor(cipher: &dyn LogCipher, header_key: &[u8; HEADER_KEY_LEN]) -> Made {
    let name = cipher_name(cipher);
    match catch(|| cipher.new_decryptor(header_key)) {
        Ok(Ok(inner)) => Made::Decryptor(GuardedDecryptor {
            name,
            inner: Some(inner),
            panicked: false,
        }),
        Ok(Err(e)) => Made::Failed(e),
        Err(m) => Made::Panicked(cipher_panicked(&name, &m)),
    }
}

/// A cipher's decryptor whose every call is made under guard.
#[derive(Debug)]
pub(crate) struct GuardedDecryptor {
    name: String,
    /// `None` only while it is dropped.
    inner: Option<Box<dyn BlockDecryptor>>,
    /// Set once a call panicked: its state is not to be trusted with another block.
    panicked: bool,
}

impl GuardedDecryptor {
    /// Whether a call panicked.
    pub(crate) fn has_panicked(&self) -> bool {
        self.panicked
    }

    /// [`BlockDecryptor::decrypt_block`], guarded.
    pub(crate) fn decrypt_block(
        &mut self,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CipherError> {
        let Some(inner) = self.inner.as_mut() else {
            return Err(CipherError::Crypto("the decryptor is gone".to_owned()));
        };
        let start = out.len();
        match catch(|| inner.decrypt_block(body, out)) {
            Ok(res) => res,
            Err(m) => {
                self.panicked = true;
                // Whatever the panic left in `out` is not the block's.
                out.truncate(start);
                Err(cipher_panicked(&self.name, &m))
            }
        }
    }
}

impl Drop for GuardedDecryptor {
    fn drop(&mut self) {
        // Whatever a panicking drop failed to release is leaked.
        let _ = drop_caught(self.inner.take());
    }
}
