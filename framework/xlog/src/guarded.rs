//! The log cipher's calls, guarded against panics.
//!
//! A [`LogCipher`] handed to [`XlogBuilder::cipher`](crate::XlogBuilder::cipher) runs
//! in-process, on the threads that log (staging) and on the writer thread (finishing a
//! block). A panic in it would otherwise reach the app's logging call, or end the writer
//! thread and with it every later line. Here each call is made under [`catch`] and a panic
//! becomes [`cipher_panicked`], the same error a cipher loaded from a library gives: making
//! the writer fails with it, and a line or block the cipher could not encrypt is counted lost
//! with the cause "could not be compressed or encrypted", as for any other cipher error.

use phobos_plugin_api::cipher::{BlockEncryptor, CipherError, LogCipher, HEADER_KEY_LEN};
use phobos_plugin_api::panics::{catch, cipher_name, cipher_panicked, drop_caught};

/// [`LogCipher::new_encryptor`], guarded, and the encryptor it makes guarded in turn. The
/// encryptor's header key is read here, once: a panic there fails the making.
pub(crate) fn new_encryptor(
    cipher: &dyn LogCipher,
) -> Result<Box<dyn BlockEncryptor>, CipherError> {
    let name = cipher_name(cipher);
    let inner = catch(|| cipher.new_encryptor()).map_err(|m| cipher_panicked(&name, &m))??;
    let key = match catch(|| inner.header_key()) {
        Ok(key) => key,
        Err(m) => {
            let _ = drop_caught(inner);
            return Err(cipher_panicked(&name, &m));
        }
    };
    Ok(Box::new(GuardedEncryptor {
        name,
        key,
        inner: Some(inner),
    }))
}

/// A plugin's encryptor whose every call is made under guard.
#[derive(Debug)]
struct GuardedEncryptor {
    name: String,
    /// Read once when it was made.
    key: [u8; HEADER_KEY_LEN],
    /// `None` only while it is dropped.
    inner: Option<Box<dyn BlockEncryptor>>,
}

impl GuardedEncryptor {
    /// Runs `f` on the plugin's encryptor under guard.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&mut dyn BlockEncryptor) -> Result<R, CipherError>,
    ) -> Result<R, CipherError> {
        let Some(inner) = self.inner.as_mut() else {
            return Err(CipherError::Crypto("the encryptor is gone".to_owned()));
        };
        catch(|| f(inner.as_mut())).unwrap_or_else(|m| Err(cipher_panicked(&self.name, &m)))
    }
}

impl BlockEncryptor for GuardedEncryptor {
    fn header_key(&self) -> [u8; HEADER_KEY_LEN] {
        self.key
    }

    fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<usize, CipherError> {
        self.call(|e| e.encrypt(plain, out))
    }

    fn finish_block(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        self.call(|e| e.finish_block(rest, out))
    }

    fn is_prefix_decryptable(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|e| catch(|| e.is_prefix_decryptable()).unwrap_or(false))
    }
}

impl Drop for GuardedEncryptor {
    fn drop(&mut self) {
        // Whatever a panicking drop failed to release is leaked.
        let _ = drop_caught(self.inner.take());
    }
}
