//! Mars-compatible xlog cipher: ECDH on secp256k1 + 16-round TEA.
//!
//! [`MarsCipher`] implements [`LogCipher`] exactly as Tencent Mars's xlog does (format doc
//! §3.4), so files it writes are read by Mars's own tools and files Mars wrote are read by us:
//!
//! - **Writer side** (server public key, 128 hex characters `X || Y`): every session draws an
//!   ephemeral secp256k1 key pair; the shared secret is the X coordinate of
//!   `client_private × server_public`; its first 16 bytes, read as four little-endian `u32`, are
//!   the TEA key. The client public key (`X || Y`, 64 bytes) goes into every block header.
//! - **Reader side** (server private key, 64 hex characters): the same secret is recomputed from
//!   the header's client key.
//! - **Cipher**: TEA with 16 rounds in ECB mode over 8-byte little-endian units
//!   ([`tea`]). Every full unit from the start of a block body is encrypted; the last
//!   `len % 8` bytes stay in clear, as in Mars.
//!
//! What it deliberately does not do: authenticate anything. TEA-ECB with a clear tail is what
//! Mars's readers understand, nothing more; use `phobos-cipher-modern` when Mars compatibility
//! is not needed. Unlike Mars, a malformed key is an error ([`CipherError::BadKey`]), never a
//! silently unencrypted log.
//!
//! Feature `dynamic`: the crate's `cdylib` exports the cipher as a Phobos plugin named
//! `"mars-tea"`, configured with a [`MarsCipherConfig`]
//! (see `phobos-plugin-abi`'s `export_plugin!`).
//!
//! ```
//! use phobos_cipher_mars::MarsCipher;
//! use phobos_plugin_api::LogCipher;
//!
//! let pair = MarsCipher::generate_key_pair();
//! let writer = MarsCipher::from_public_key_hex(&pair.public_key).unwrap();
//! let reader = MarsCipher::from_private_key_hex(&pair.private_key).unwrap();
//!
//! let mut enc = writer.new_encryptor().unwrap();
//! let plain = b"compressed bytes of one block";
//! let mut body = Vec::new();
//! let used = enc.encrypt(plain, &mut body).unwrap(); // whole 8-byte units only
//! enc.finish_block(&plain[used..], &mut body).unwrap(); // the clear tail
//!
//! let mut dec = reader.new_decryptor(&enc.header_key()).unwrap();
//! let mut back = Vec::new();
//! dec.decrypt_block(&body, &mut back).unwrap();
//! assert_eq!(back, plain);
//! ```

pub mod tea;

use std::fmt;

use k256::elliptic_curve::sec1::ToEncodedPoint;
use k256::{NonZeroScalar, PublicKey, SecretKey};
use phobos_plugin_api::cipher::HEADER_KEY_LEN;
use phobos_plugin_api::{BlockDecryptor, BlockEncryptor, CipherError, CipherKind, LogCipher};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::tea::{TeaKey, UNIT};

/// Mars's xlog cipher (secp256k1 ECDH + TEA). See the crate docs.
#[derive(Clone)]
pub struct MarsCipher {
    public: Option<PublicKey>,
    private: Option<SecretKey>,
}

impl MarsCipher {
    /// A writer-side cipher from the server public key: 128 hex characters, `X || Y`, each
    /// coordinate 32 bytes big-endian (upper or lower case).
    ///
    /// # Errors
    ///
    /// [`CipherError::BadKey`] when the text is not 128 hex characters or not a point on
    /// secp256k1.
    pub fn from_public_key_hex(public_key: &str) -> Result<Self, CipherError> {
        Ok(Self {
            public: Some(parse_public_key(public_key)?),
            private: None,
        })
    }

    /// A reader-side cipher from the server private key: 64 hex characters, a big-endian
    /// scalar.
    ///
    /// # Errors
    ///
    /// [`CipherError::BadKey`] when the text is not 64 hex characters or not a valid scalar.
    pub fn from_private_key_hex(private_key: &str) -> Result<Self, CipherError> {
        Ok(Self {
            public: None,
            private: Some(parse_private_key(private_key)?),
        })
    }

    /// A cipher from a config; either key may be absent (the matching side then fails with
    /// [`CipherError::MissingKey`]).
    ///
    /// # Errors
    ///
    /// [`CipherError::BadKey`] for a malformed key, or when both keys are given and do not
    /// belong together.
    pub fn from_config(config: &MarsCipherConfig) -> Result<Self, CipherError> {
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
            if private.public_key() != *public {
                return Err(CipherError::BadKey(
                    "public_key does not belong to private_key".into(),
                ));
            }
        }
        Ok(Self { public, private })
    }

    /// Draws a fresh server key pair from the operating system's RNG, hex-encoded in the forms
    /// the constructors take (what Mars's `gen_key.py` prints).
    pub fn generate_key_pair() -> MarsKeyPair {
        let secret = SecretKey::random(&mut OsRng);
        let point = secret.public_key().to_encoded_point(false);
        MarsKeyPair {
            private_key: hex::encode(secret.to_bytes()),
            // Skip the SEC1 `0x04` tag: Mars writes the raw `X || Y`.
            public_key: hex::encode(&point.as_bytes()[1..]),
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
        client: NonZeroScalar,
    ) -> Result<Box<dyn BlockEncryptor>, CipherError> {
        let server = self.public.ok_or(CipherError::MissingKey("public"))?;
        let client_public = PublicKey::from_secret_scalar(&client);
        let key = tea_key(&client, &server);
        Ok(Box::new(MarsEncryptor {
            key,
            header_key: raw_point(&client_public),
        }))
    }
}

impl LogCipher for MarsCipher {
    fn name(&self) -> &str {
        "mars-tea"
    }

    fn kind(&self) -> CipherKind {
        CipherKind::MarsCompatible
    }

    fn new_encryptor(&self) -> Result<Box<dyn BlockEncryptor>, CipherError> {
        if self.public.is_none() {
            return Err(CipherError::MissingKey("public"));
        }
        self.encryptor_with(NonZeroScalar::random(&mut OsRng))
    }

    fn new_decryptor(
        &self,
        header_key: &[u8; HEADER_KEY_LEN],
    ) -> Result<Box<dyn BlockDecryptor>, CipherError> {
        let private = self
            .private
            .as_ref()
            .ok_or(CipherError::MissingKey("private"))?;
        let client = point_from_raw(header_key).ok_or(CipherError::BadHeaderKey)?;
        Ok(Box::new(MarsDecryptor {
            key: tea_key(&private.to_nonzero_scalar(), &client),
        }))
    }
}

impl fmt::Debug for MarsCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MarsCipher")
            .field(
                "public_key",
                &self.public.as_ref().map(raw_point).map(hex::encode),
            )
            .field("private_key", &self.private.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Serde configuration for [`MarsCipher`]: hex keys, either may be absent.
///
/// ```
/// let config: phobos_cipher_mars::MarsCipherConfig =
///     serde_json::from_str(r#"{ "private_key": "b404e0f7d50323e5327c23603878c594189d63e76e4550fdea108b9ea41d3885" }"#)
///         .unwrap();
/// let cipher = phobos_cipher_mars::MarsCipher::from_config(&config).unwrap();
/// assert!(cipher.has_private_key() && !cipher.has_public_key());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarsCipherConfig {
    /// The server public key, 128 hex characters (`X || Y`); needed to write.
    #[serde(default)]
    pub public_key: Option<String>,
    /// The server private key, 64 hex characters; needed to read.
    #[serde(default)]
    pub private_key: Option<String>,
}

/// A server key pair in hex, as produced by [`MarsCipher::generate_key_pair`].
#[derive(Clone, PartialEq, Eq)]
pub struct MarsKeyPair {
    /// 64 hex characters: the private scalar, big-endian.
    pub private_key: String,
    /// 128 hex characters: `X || Y`, big-endian.
    pub public_key: String,
}

impl fmt::Debug for MarsKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MarsKeyPair")
            .field("private_key", &"<redacted>")
            .field("public_key", &self.public_key)
            .finish()
    }
}

/// The writer side of one Mars session.
struct MarsEncryptor {
    key: TeaKey,
    header_key: [u8; HEADER_KEY_LEN],
}

impl BlockEncryptor for MarsEncryptor {
    fn header_key(&self) -> [u8; HEADER_KEY_LEN] {
        self.header_key
    }

    fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<usize, CipherError> {
        let whole = plain.len() / UNIT * UNIT;
        let start = out.len();
        out.extend_from_slice(&plain[..whole]);
        self.key.encrypt_units(&mut out[start..]);
        Ok(whole)
    }

    fn finish_block(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        let used = self.encrypt(rest, out)?;
        // Mars leaves the last `len % 8` bytes of a block in clear.
        out.extend_from_slice(&rest[used..]);
        Ok(())
    }
}

impl fmt::Debug for MarsEncryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MarsEncryptor")
            .field("header_key", &hex::encode(self.header_key))
            .finish_non_exhaustive()
    }
}

/// The reader side of one Mars session.
#[derive(Debug)]
struct MarsDecryptor {
    key: TeaKey,
}

impl BlockDecryptor for MarsDecryptor {
    fn decrypt_block(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        let start = out.len();
        out.extend_from_slice(body);
        self.key.decrypt_units(&mut out[start..]);
        Ok(())
    }
}

fn parse_public_key(text: &str) -> Result<PublicKey, CipherError> {
    let bytes = decode_hex(text, HEADER_KEY_LEN, "public")?;
    let mut raw = [0u8; HEADER_KEY_LEN];
    raw.copy_from_slice(&bytes);
    point_from_raw(&raw)
        .ok_or_else(|| CipherError::BadKey("public key is not a point on secp256k1".into()))
}

fn parse_private_key(text: &str) -> Result<SecretKey, CipherError> {
    let bytes = Zeroizing::new(decode_hex(text, 32, "private")?);
    SecretKey::from_slice(&bytes).map_err(|_| {
        CipherError::BadKey("private key is not a valid secp256k1 scalar (zero or ≥ n)".into())
    })
}

fn decode_hex(text: &str, len: usize, which: &str) -> Result<Vec<u8>, CipherError> {
    let text = text.trim();
    if text.len() != len * 2 {
        return Err(CipherError::BadKey(format!(
            "{which} key must be {} hex characters, got {}",
            len * 2,
            text.len()
        )));
    }
    hex::decode(text).map_err(|e| CipherError::BadKey(format!("{which} key is not hex: {e}")))
}

/// Parses Mars's raw `X || Y` point encoding.
fn point_from_raw(raw: &[u8; HEADER_KEY_LEN]) -> Option<PublicKey> {
    let mut sec1 = [0u8; HEADER_KEY_LEN + 1];
    sec1[0] = 0x04;
    sec1[1..].copy_from_slice(raw);
    PublicKey::from_sec1_bytes(&sec1).ok()
}

/// Mars's raw `X || Y` point encoding.
fn raw_point(point: &PublicKey) -> [u8; HEADER_KEY_LEN] {
    let encoded = point.to_encoded_point(false);
    let mut raw = [0u8; HEADER_KEY_LEN];
    // An uncompressed, non-identity point is always 65 bytes: tag + X + Y.
    raw.copy_from_slice(&encoded.as_bytes()[1..]);
    raw
}

/// TEA key = first 16 bytes of the ECDH X coordinate.
fn tea_key(secret: &NonZeroScalar, peer: &PublicKey) -> TeaKey {
    let shared = k256::ecdh::diffie_hellman(secret, peer.as_affine());
    let x = shared.raw_secret_bytes();
    let mut first = Zeroizing::new([0u8; 16]);
    first.copy_from_slice(&x[..16]);
    TeaKey::from_bytes(&first)
}

#[cfg(feature = "dynamic")]
mod dynamic;

#[cfg(test)]
mod tests;
