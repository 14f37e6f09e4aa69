//! Modern, authenticated xlog cipher: X25519 + HKDF-SHA256 + ChaCha20-Poly1305.
//!
//! [`ModernCipher`] implements [`LogCipher`] with [`CipherKind::Authenticated`]: its blocks are
//! written under magics Mars does not know, and only Phobos reads them. Compared with Mars's
//! TEA-ECB (`phobos-cipher-mars`) it adds confidentiality without ECB patterns or a clear tail,
//! and integrity: an altered byte or a wrong key is reported as [`CipherError::Integrity`].
//!
//! # Key agreement (once per writer session)
//!
//! - The server key pair is X25519: the writer is configured with the 32-byte public key
//!   (64 hex characters), the reader with the 32-byte private key (64 hex characters).
//! - Each session draws an ephemeral X25519 key pair and a random 32-byte salt.
//!   `shared = X25519(ephemeral_private, server_public)` (an all-zero result, from a
//!   low-order server key, is refused).
//! - `key = HKDF-SHA256(salt, ikm = shared, info = "phobos-xlog modern v1" || ephemeral_public
//!   || server_public)`, 32 bytes.
//!
//! # Header key field (64 bytes)
//!
//! ```text
//!  0                              32                              64
//! +-------------------------------+-------------------------------+
//! | ephemeral X25519 public key   | session salt (random)         |
//! +-------------------------------+-------------------------------+
//! ```
//!
//! # Block body: a sequence of records
//!
//! Every [`encrypt`](BlockEncryptor::encrypt) call seals all of its input as one record, so
//! the bytes staged in the writer's buffer are ciphertext at all times, and a block cut short
//! by a crash still decrypts up to its last complete record.
//!
//! ```text
//! +--------------+------------------+----------------------------------------+
//! | len: u32 LE  | counter: u64 LE  | ChaCha20-Poly1305(plain), len bytes     |
//! +--------------+------------------+   (ciphertext followed by 16-byte tag)  |
//!                                   +----------------------------------------+
//! ```
//!
//! - `counter` counts records over the whole session, from 0; the nonce is
//!   `counter (8 bytes LE) || 0x00000000`. Each (key, nonce) pair is used once.
//! - The 12-byte record header is the AEAD's associated data, so a changed length or counter
//!   fails authentication.
//! - Within a block, counters must be consecutive: a record removed from between two others,
//!   or records reordered, is an [`CipherError::Integrity`] error. A block whose last record
//!   is cut short (a crash) is an [`CipherError::Integrity`] error too, after the complete
//!   records have been appended to the output.
//! - What the records cannot show: records removed whole from the start or the end of a
//!   block, like whole blocks removed. Counters run over the session, and a block carries
//!   neither its first counter nor its record count, so such a block reads as a shorter
//!   one. Each record that is there is authentic and in its place.
//!
//! Feature `dynamic`: the crate's `cdylib` exports the cipher as a Phobos plugin named
//! `"x25519-chacha20poly1305"`, configured with a [`ModernCipherConfig`]
//! (see `phobos-plugin-abi`'s `export_plugin!`).
//!
//! ```
//! use phobos_cipher_modern::ModernCipher;
//! use phobos_plugin_api::LogCipher;
//!
//! let pair = ModernCipher::generate_key_pair();
//! let writer = ModernCipher::from_public_key_hex(&pair.public_key).unwrap();
//! let reader = ModernCipher::from_private_key_hex(&pair.private_key).unwrap();
//!
//! let mut enc = writer.new_encryptor().unwrap();
//! let mut body = Vec::new();
//! enc.encrypt(b"first line\n", &mut body).unwrap();
//! enc.encrypt(b"second line\n", &mut body).unwrap();
//! enc.finish_block(b"", &mut body).unwrap();
//!
//! let mut plain = Vec::new();
//! let mut dec = reader.new_decryptor(&enc.header_key()).unwrap();
//! dec.decrypt_block(&body, &mut plain).unwrap();
//! assert_eq!(plain, b"first line\nsecond line\n");
//! ```

use std::fmt;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use hkdf::Hkdf;
use phobos_plugin_api::cipher::HEADER_KEY_LEN;
use phobos_plugin_api::{BlockDecryptor, BlockEncryptor, CipherError, CipherKind, LogCipher};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// The authenticated xlog cipher. See the crate docs for the construction.
#[derive(Clone)]
pub struct ModernCipher {
    public: Option<PublicKey>,
    private: Option<StaticSecret>,
}

impl ModernCipher {
    /// A writer-side cipher from the server's X25519 public key (64 hex characters).
    ///
    /// # Errors
    ///
    /// [`CipherError::BadKey`] when the text is not 64 hex characters, or is a low-order point
    /// (which would make every session key predictable).
    pub fn from_public_key_hex(public_key: &str) -> Result<Self, CipherError> {
        Ok(Self {
            public: Some(parse_public_key(public_key)?),
            private: None,
        })
    }

    /// A reader-side cipher from the server's X25519 private key (64 hex characters).
    ///
    /// # Errors
    ///
    /// [`CipherError::BadKey`] when the text is not 64 hex characters.
    pub fn from_private_key_hex(private_key: &str) -> Result<Self, CipherError> {
        Ok(Self {
            public: None,
            private: Some(parse_private_key(private_key)?),
        })
    }

    /// A cipher from a config; either key may be absent (that side then fails with
    /// [`CipherError::MissingKey`]).
    ///
    /// # Errors
    ///
    /// [`CipherError::BadKey`] for a malformed key, or when both keys are given and do not
    /// belong together.
    pub fn from_config(config: &ModernCipherConfig) -> Result<Self, CipherError> {
        let public = config
            .public_key
            .as_deref()
            .map(parse_public_key)
            .transpose()?;
        let private = config
            .private_key
            .as_deref()
            .map(parse_private_key)
            .transpose()?;
        if let (Some(public), Some(private)) = (&public, &private) {
            if PublicKey::from(private) != *public {
                return Err(CipherError::BadKey(
                    "public_key does not belong to private_key".into(),
                ));
            }
        }
        Ok(Self { public, private })
    }

    /// Draws a fresh server key pair from the operating system's RNG, hex-encoded.
    pub fn generate_key_pair() -> ModernKeyPair {
        let secret = StaticSecret::random_from_rng(OsRng);
        let public = PublicKey::from(&secret);
        ModernKeyPair {
            private_key: hex::encode(secret.to_bytes()),
            public_key: hex::encode(public.as_bytes()),
        }
    }

    /// Whether this cipher can write (holds a public key).
    pub fn has_public_key(&self) -> bool {
        self.public.is_some()
    }

    /// Whether this cipher can read (holds a private key).
    pub fn has_private_key(&self) -> bool {
        self.private.is_some()
    }

    fn encryptor_with(
        &self,
        ephemeral: StaticSecret,
        salt: [u8; SALT_LEN],
    ) -> Result<Box<dyn BlockEncryptor>, CipherError> {
        let server = self.public.ok_or(CipherError::MissingKey("public"))?;
        let ephemeral_public = PublicKey::from(&ephemeral);
        let shared = ephemeral.diffie_hellman(&server);
        if !shared.was_contributory() {
            return Err(CipherError::Crypto(
                "X25519 produced a non-contributory shared secret".into(),
            ));
        }
        let aead = derive_aead(shared.as_bytes(), &salt, &ephemeral_public, &server)?;
        let mut header_key = [0u8; HEADER_KEY_LEN];
        header_key[..32].copy_from_slice(ephemeral_public.as_bytes());
        header_key[32..].copy_from_slice(&salt);
        Ok(Box::new(ModernEncryptor {
            aead,
            header_key,
            counter: 0,
        }))
    }
}

impl LogCipher for ModernCipher {
    fn name(&self) -> &str {
        "x25519-chacha20poly1305"
    }

    fn kind(&self) -> CipherKind {
        CipherKind::Authenticated
    }

    fn new_encryptor(&self) -> Result<Box<dyn BlockEncryptor>, CipherError> {
        if self.public.is_none() {
            return Err(CipherError::MissingKey("public"));
        }
        let mut salt = [0u8; SALT_LEN];
        OsRng
            .try_fill_bytes(&mut salt)
            .map_err(|e| CipherError::Crypto(format!("random salt: {e}")))?;
        self.encryptor_with(StaticSecret::random_from_rng(OsRng), salt)
    }

    fn new_decryptor(
        &self,
        header_key: &[u8; HEADER_KEY_LEN],
    ) -> Result<Box<dyn BlockDecryptor>, CipherError> {
        let private = self
            .private
            .as_ref()
            .ok_or(CipherError::MissingKey("private"))?;
        let mut eph = [0u8; 32];
        eph.copy_from_slice(&header_key[..32]);
        let ephemeral_public = PublicKey::from(eph);
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&header_key[32..]);
        let shared = private.diffie_hellman(&ephemeral_public);
        if !shared.was_contributory() {
            // A low-order "public key" in the header: nothing a real writer produces.
            return Err(CipherError::BadHeaderKey);
        }
        let server_public = PublicKey::from(private);
        let aead = derive_aead(shared.as_bytes(), &salt, &ephemeral_public, &server_public)?;
        Ok(Box::new(ModernDecryptor { aead }))
    }
}

impl fmt::Debug for ModernCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModernCipher")
            .field(
                "public_key",
                &self.public.map(|p| hex::encode(p.as_bytes())),
            )
            .field("private_key", &self.private.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Serde configuration for [`ModernCipher`]: hex keys, either may be absent.
///
/// ```
/// let config: phobos_cipher_modern::ModernCipherConfig = serde_json::from_str("{}").unwrap();
/// let cipher = phobos_cipher_modern::ModernCipher::from_config(&config).unwrap();
/// assert!(!cipher.has_public_key());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModernCipherConfig {
    /// The server's X25519 public key, 64 hex characters; needed to write.
    #[serde(default)]
    pub public_key: Option<String>,
    /// The server's X25519 private key, 64 hex characters; needed to read.
    #[serde(default)]
    pub private_key: Option<String>,
}

/// A server key pair in hex, as produced by [`ModernCipher::generate_key_pair`].
#[derive(Clone, PartialEq, Eq)]
pub struct ModernKeyPair {
    /// 64 hex characters: the X25519 private key.
    pub private_key: String,
    /// 64 hex characters: the X25519 public key.
    pub public_key: String,
}

impl fmt::Debug for ModernKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModernKeyPair")
            .field("private_key", &"<redacted>")
            .field("public_key", &self.public_key)
            .finish()
    }
}

/// The length of a record header: `len: u32 LE` then `counter: u64 LE`.
pub const RECORD_HEADER_LEN: usize = 12;

/// The length of the Poly1305 tag at the end of each record's sealed bytes.
pub const TAG_LEN: usize = 16;

/// The writer side of one session.
struct ModernEncryptor {
    aead: ChaCha20Poly1305,
    header_key: [u8; HEADER_KEY_LEN],
    counter: u64,
}

impl ModernEncryptor {
    fn seal_record(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        let sealed_len = u32::try_from(plain.len() + TAG_LEN)
            .map_err(|_| CipherError::Crypto("record larger than 4 GiB".into()))?;
        let counter = self.counter;
        self.counter = counter
            .checked_add(1)
            .ok_or_else(|| CipherError::Crypto("record counter exhausted".into()))?;
        let header = record_header(sealed_len, counter);
        let start = out.len();
        out.extend_from_slice(&header);
        out.extend_from_slice(plain);
        let tag = self
            .aead
            .encrypt_in_place_detached(
                &nonce(counter),
                &header,
                &mut out[start + RECORD_HEADER_LEN..],
            )
            .map_err(|_| CipherError::Crypto("ChaCha20-Poly1305 seal failed".into()))?;
        out.extend_from_slice(&tag);
        Ok(())
    }
}

impl BlockEncryptor for ModernEncryptor {
    fn header_key(&self) -> [u8; HEADER_KEY_LEN] {
        self.header_key
    }

    fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<usize, CipherError> {
        if plain.is_empty() {
            return Ok(0);
        }
        self.seal_record(plain, out)?;
        Ok(plain.len())
    }

    fn finish_block(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        if !rest.is_empty() {
            self.seal_record(rest, out)?;
        }
        Ok(())
    }

    fn is_prefix_decryptable(&self) -> bool {
        true
    }
}

impl fmt::Debug for ModernEncryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModernEncryptor")
            .field("header_key", &hex::encode(self.header_key))
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

/// The reader side of one session.
struct ModernDecryptor {
    aead: ChaCha20Poly1305,
}

impl BlockDecryptor for ModernDecryptor {
    fn decrypt_block(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        let mut rest = body;
        let mut expected_counter: Option<u64> = None;
        while !rest.is_empty() {
            let Some((header, after)) = rest.split_first_chunk::<RECORD_HEADER_LEN>() else {
                return Err(CipherError::Integrity);
            };
            let (len_bytes, counter_bytes) = header.split_at(4);
            let sealed_len = u32::from_le_bytes(len_bytes.try_into().map_err(|_| integrity())?);
            let counter = u64::from_le_bytes(counter_bytes.try_into().map_err(|_| integrity())?);
            let sealed_len = sealed_len as usize;
            if sealed_len < TAG_LEN || sealed_len > after.len() {
                return Err(CipherError::Integrity);
            }
            if expected_counter.is_some_and(|c| c != counter) {
                return Err(CipherError::Integrity);
            }
            let (sealed, next) = after.split_at(sealed_len);
            let (cipher, tag) = sealed.split_at(sealed_len - TAG_LEN);
            let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| integrity())?;
            let start = out.len();
            out.extend_from_slice(cipher);
            if self
                .aead
                .decrypt_in_place_detached(
                    &nonce(counter),
                    header,
                    &mut out[start..],
                    &Tag::from(tag),
                )
                .is_err()
            {
                out.truncate(start);
                return Err(CipherError::Integrity);
            }
            expected_counter = counter.checked_add(1);
            rest = next;
        }
        Ok(())
    }
}

impl fmt::Debug for ModernDecryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModernDecryptor").finish_non_exhaustive()
    }
}

fn integrity() -> CipherError {
    CipherError::Integrity
}

fn record_header(sealed_len: u32, counter: u64) -> [u8; RECORD_HEADER_LEN] {
    let mut header = [0u8; RECORD_HEADER_LEN];
    header[..4].copy_from_slice(&sealed_len.to_le_bytes());
    header[4..].copy_from_slice(&counter.to_le_bytes());
    header
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&counter.to_le_bytes());
    Nonce::from(n)
}

fn derive_aead(
    shared: &[u8; 32],
    salt: &[u8; SALT_LEN],
    ephemeral_public: &PublicKey,
    server_public: &PublicKey,
) -> Result<ChaCha20Poly1305, CipherError> {
    let mut info = Vec::with_capacity(HKDF_INFO.len() + 64);
    info.extend_from_slice(HKDF_INFO);
    info.extend_from_slice(ephemeral_public.as_bytes());
    info.extend_from_slice(server_public.as_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(salt), shared)
        .expand(&info, key.as_mut())
        .map_err(|_| CipherError::Crypto("HKDF expand failed".into()))?;
    ChaCha20Poly1305::new_from_slice(key.as_ref())
        .map_err(|_| CipherError::Crypto("bad ChaCha20-Poly1305 key length".into()))
}

fn parse_public_key(text: &str) -> Result<PublicKey, CipherError> {
    let bytes = decode_key_hex(text, "public")?;
    let public = PublicKey::from(*bytes);
    // A low-order point makes every shared secret all zeros: refuse it up front.
    let probe = StaticSecret::from([0x5a; 32]);
    if !probe.diffie_hellman(&public).was_contributory() {
        return Err(CipherError::BadKey(
            "public key is a low-order X25519 point".into(),
        ));
    }
    Ok(public)
}

fn parse_private_key(text: &str) -> Result<StaticSecret, CipherError> {
    let bytes = decode_key_hex(text, "private")?;
    Ok(StaticSecret::from(*bytes))
}

fn decode_key_hex(text: &str, which: &str) -> Result<Zeroizing<[u8; 32]>, CipherError> {
    let text = text.trim();
    if text.len() != 64 {
        return Err(CipherError::BadKey(format!(
            "{which} key must be 64 hex characters, got {}",
            text.len()
        )));
    }
    let mut bytes = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text, bytes.as_mut())
        .map_err(|e| CipherError::BadKey(format!("{which} key is not hex: {e}")))?;
    Ok(bytes)
}

const SALT_LEN: usize = 32;
const HKDF_INFO: &[u8] = b"phobos-xlog modern v1";

#[cfg(feature = "dynamic")]
mod dynamic;

#[cfg(test)]
mod tests;
