//! Log encryption for xlog: [`LogCipher`].
//!
//! A cipher works per xlog *session* (one writer run, one key agreement) and per *block*
//! (the unit xlog compresses, encrypts and writes with a header):
//!
//! - The writer calls [`LogCipher::new_encryptor`] once per session. The encryptor's
//!   [`header_key`](BlockEncryptor::header_key) goes into the 64-byte key field of every block
//!   header. Compressed bytes are fed with [`encrypt`](BlockEncryptor::encrypt) as lines are
//!   logged, so no plaintext waits in the staging buffer; the block is closed with
//!   [`finish_block`](BlockEncryptor::finish_block).
//! - The decoder calls [`LogCipher::new_decryptor`] with the key field of a block and
//!   decrypts the block's body with [`decrypt_block`](BlockDecryptor::decrypt_block).
//!
//! A cipher configured for writing holds a public key; one configured for reading holds the
//! private key. Calling the side a cipher has no key for is a [`CipherError::MissingKey`].

use std::fmt;

/// The length of the key field in an xlog block header.
pub const HEADER_KEY_LEN: usize = 64;

/// Encrypts and decrypts xlog blocks.
pub trait LogCipher: Send + Sync + fmt::Debug + 'static {
    /// A short name for logs and error messages (`"mars-tea"`).
    fn name(&self) -> &str;

    /// Which family of block magics the writer must use for this cipher's blocks.
    fn kind(&self) -> CipherKind;

    /// Starts a writer session: a fresh key agreement.
    ///
    /// # Errors
    ///
    /// [`CipherError::MissingKey`] when the cipher has no public key; [`CipherError::Crypto`]
    /// when key generation fails. A writer never falls back to plaintext on error.
    fn new_encryptor(&self) -> Result<Box<dyn BlockEncryptor>, CipherError>;

    /// Opens a reader session for blocks whose header carries `header_key`.
    ///
    /// # Errors
    ///
    /// [`CipherError::MissingKey`] without a private key; [`CipherError::BadHeaderKey`] when
    /// the field is not a key this cipher understands.
    fn new_decryptor(
        &self,
        header_key: &[u8; HEADER_KEY_LEN],
    ) -> Result<Box<dyn BlockDecryptor>, CipherError>;
}

/// The writer side of one session.
pub trait BlockEncryptor: Send + fmt::Debug {
    /// The value for the 64-byte key field of every block header of this session.
    fn header_key(&self) -> [u8; HEADER_KEY_LEN];

    /// Encrypts a prefix of `plain` (the next compressed bytes of the current block), appending
    /// the ciphertext to `out`, and returns how many bytes of `plain` it consumed.
    ///
    /// Bytes not consumed (a block cipher's partial unit) are the caller's to keep and to pass
    /// again, in front of the next bytes, on the next call or to
    /// [`finish_block`](Self::finish_block).
    ///
    /// # Errors
    ///
    /// [`CipherError::Crypto`] on an internal failure; `out` may then hold a partial result
    /// that the caller must discard.
    fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<usize, CipherError>;

    /// Ends the current block: handles the last unconsumed bytes `rest` (Mars leaves them in
    /// clear; an AEAD seals them) and appends the result to `out`. The next `encrypt` call
    /// starts a new block.
    ///
    /// # Errors
    ///
    /// As [`encrypt`](Self::encrypt).
    fn finish_block(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError>;

    /// Whether the staged, not yet finished bytes of a block are already decryptable (true for
    /// Mars's TEA, whose output is plain ECB units). Crash recovery uses it to decide whether
    /// an unfinished block can be closed by another session.
    fn is_prefix_decryptable(&self) -> bool {
        true
    }
}

/// The reader side of one session.
pub trait BlockDecryptor: Send + fmt::Debug {
    /// Decrypts a whole block body, appending the compressed bytes to `out`.
    ///
    /// # Errors
    ///
    /// [`CipherError::Integrity`] when an authenticated cipher finds the body altered (a wrong
    /// key looks the same); [`CipherError::Crypto`] on other failures.
    fn decrypt_block(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError>;
}

/// Which block magics a cipher's output is written under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CipherKind {
    /// Mars's own scheme (magics `0x06`, `0x07`, `0x0A`, `0x0C`): Mars's tools read it.
    MarsCompatible,
    /// An authenticated scheme under magics Mars does not use; only Phobos reads it.
    Authenticated,
}

/// Why a cipher operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CipherError {
    /// The key needed for this side is not configured.
    #[error("no {0} key configured")]
    MissingKey(&'static str),
    /// A configured key is malformed.
    #[error("bad key: {0}")]
    BadKey(String),
    /// A block header's key field is not a key this cipher understands.
    #[error("block header key field is not a valid public key")]
    BadHeaderKey,
    /// Authentication failed: the data was altered or the key is wrong.
    #[error("integrity check failed (wrong key or damaged block)")]
    Integrity,
    /// Any other failure.
    #[error("cipher failure: {0}")]
    Crypto(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(dead_code)]
    fn object_safe(_: Box<dyn LogCipher>, _: Box<dyn BlockEncryptor>, _: Box<dyn BlockDecryptor>) {}
}
