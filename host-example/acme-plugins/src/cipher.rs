//! ACME's log cipher: X25519 key agreement, HKDF-SHA256, AES-256-GCM (ring), in ACME's own
//! header and record format.
//!
//! # Keys
//!
//! ACME's log server owns an X25519 key pair. Devices are configured with the public key
//! (`public_key`, 64 hex digits) and can only write; the log server's reader is configured
//! with the private key (`private_key`) and can read. [`AcmeCipher::generate_key_pair`] makes
//! a pair.
//!
//! # One writer session
//!
//! ```text
//! eph            = fresh X25519 key pair
//! shared         = X25519(eph.private, server.public)      (all-zero result refused)
//! session_id     = 16 random bytes
//! key (32 bytes) = HKDF-SHA256(salt = session_id, ikm = shared,
//!                              info = "acme-xlog/aes-256-gcm/v1" || eph.public || server.public)
//! ```
//!
//! # Header key field (the 64 bytes xlog stores in every block header)
//!
//! ```text
//!  0      4    5      8                               40            48                 64
//!  +------+----+------+-------------------------------+-------------+------------------+
//!  | ACLG | 01 | 0000 | ephemeral X25519 public key   | key id      | session id       |
//!  +------+----+------+-------------------------------+-------------+------------------+
//!  key id = first 8 bytes of SHA-256(server public key): a reader holding another key says
//!  so at once instead of failing every record's tag
//! ```
//!
//! # Block body: records
//!
//! Each `encrypt` call seals its input as one record, so what xlog stages in its buffer is
//! ciphertext, and a block cut short by a crash decrypts up to its last whole record.
//!
//! ```text
//!  0    1          4                  12
//!  +----+----------+------------------+-----------------------------------------+
//!  | A7 | len u24  | counter u64      | AES-256-GCM(plain) ‖ 16-byte tag        |
//!  |    | BE       | BE               | (len bytes, tag included)               |
//!  +----+----------+------------------+-----------------------------------------+
//!  nonce = "ACME" ‖ counter (BE); associated data = the 12-byte record header
//! ```
//!
//! Counters run over the whole session from 0 and must increase by one within a block: a
//! changed byte, a record removed from between two others, or records reordered is
//! [`CipherError::Integrity`]. What the records cannot show: records removed whole from the
//! start or the end of a block (the block carries neither its first counter nor its record
//! count), which reads as a shorter block, like a whole block removed. Each record that is
//! there is authentic and in its place.
//!
//! ```
//! use acme_phobos_plugins::{AcmeCipher, AcmeCipherConfig};
//! use phobos_plugin_api::LogCipher;
//!
//! let (public_key, private_key) = AcmeCipher::generate_key_pair();
//! let writer = AcmeCipher::new(AcmeCipherConfig { public_key: Some(public_key), private_key: None })?;
//! let reader = AcmeCipher::new(AcmeCipherConfig { public_key: None, private_key: Some(private_key) })?;
//!
//! let mut enc = writer.new_encryptor()?;
//! let mut body = Vec::new();
//! enc.encrypt(b"one line\n", &mut body)?;
//! enc.finish_block(b"and the rest\n", &mut body)?;
//! assert_eq!(&enc.header_key()[..5], b"ACLG\x01");
//!
//! let mut plain = Vec::new();
//! reader.new_decryptor(&enc.header_key())?.decrypt_block(&body, &mut plain)?;
//! assert_eq!(plain, b"one line\nand the rest\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use hkdf::Hkdf;
use phobos_plugin_api::cipher::HEADER_KEY_LEN;
use phobos_plugin_api::{BlockDecryptor, BlockEncryptor, CipherError, CipherKind, LogCipher};
use rand_core::{OsRng, RngCore};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// ACME's log cipher.
pub struct AcmeCipher {
    public: Option<PublicKey>,
    private: Option<StaticSecret>,
}

/// [`AcmeCipher`]'s configuration: `config = { public_key = "…" }` to write,
/// `{ private_key = "…" }` to read (and write).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeCipherConfig {
    /// The log server's X25519 public key, 64 hex digits.
    #[serde(default)]
    pub public_key: Option<String>,
    /// The log server's X25519 private key, 64 hex digits.
    #[serde(default)]
    pub private_key: Option<String>,
}

impl AcmeCipher {
    /// The name it is registered under.
    pub const NAME: &'static str = "acme-aes256gcm";

    /// A cipher with the configured keys (at least one; with both they must match).
    ///
    /// # Errors
    ///
    /// [`CipherError::BadKey`] for a key that is not 64 hex digits, a pair that does not
    /// match, or no key at all.
    pub fn new(config: AcmeCipherConfig) -> Result<Self, CipherError> {
        let public = config
            .public_key
            .as_deref()
            .map(|h| parse_key("public_key", h).map(PublicKey::from))
            .transpose()?;
        let private = config
            .private_key
            .as_deref()
            .map(|h| parse_key("private_key", h).map(StaticSecret::from))
            .transpose()?;
        let public = match (public, &private) {
            (Some(p), Some(s)) if PublicKey::from(s) != p => {
                return Err(CipherError::BadKey(
                    "public_key is not the private_key's public key".to_owned(),
                ))
            }
            (None, None) => {
                return Err(CipherError::BadKey(
                    "configure public_key (to write) or private_key (to read)".to_owned(),
                ))
            }
            (Some(p), _) => Some(p),
            (None, Some(s)) => Some(PublicKey::from(s)),
        };
        Ok(AcmeCipher { public, private })
    }

    /// A fresh key pair as (public, private), 64 hex digits each.
    pub fn generate_key_pair() -> (String, String) {
        let secret = StaticSecret::random_from_rng(OsRng);
        let public = PublicKey::from(&secret);
        (
            hex::encode(public.as_bytes()),
            hex::encode(secret.to_bytes()),
        )
    }
}

impl fmt::Debug for AcmeCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeCipher")
            .field("can_write", &self.public.is_some())
            .field("can_read", &self.private.is_some())
            .finish()
    }
}

impl LogCipher for AcmeCipher {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn kind(&self) -> CipherKind {
        CipherKind::Authenticated
    }

    fn new_encryptor(&self) -> Result<Box<dyn BlockEncryptor>, CipherError> {
        let server = self.public.ok_or(CipherError::MissingKey("public"))?;
        let eph = StaticSecret::random_from_rng(OsRng);
        let eph_public = PublicKey::from(&eph);
        let shared = eph.diffie_hellman(&server);
        if !shared.was_contributory() {
            return Err(CipherError::BadKey(
                "the public key is a low-order point".to_owned(),
            ));
        }
        let mut session_id = [0u8; SESSION_ID_LEN];
        OsRng.fill_bytes(&mut session_id);
        let key = derive_key(shared.as_bytes(), &session_id, &eph_public, &server)?;
        let mut header = [0u8; HEADER_KEY_LEN];
        header[..4].copy_from_slice(HEADER_MAGIC);
        header[4] = FORMAT_VERSION;
        header[8..40].copy_from_slice(eph_public.as_bytes());
        header[40..48].copy_from_slice(&key_id(&server));
        header[48..64].copy_from_slice(&session_id);
        Ok(Box::new(Encryptor {
            key,
            header,
            counter: 0,
        }))
    }

    fn new_decryptor(
        &self,
        header_key: &[u8; HEADER_KEY_LEN],
    ) -> Result<Box<dyn BlockDecryptor>, CipherError> {
        let private = self
            .private
            .as_ref()
            .ok_or(CipherError::MissingKey("private"))?;
        if &header_key[..4] != HEADER_MAGIC || header_key[4] != FORMAT_VERSION {
            return Err(CipherError::BadHeaderKey);
        }
        let server = PublicKey::from(private);
        if header_key[40..48] != key_id(&server) {
            return Err(CipherError::BadKey(
                "the block was written for another ACME log key".to_owned(),
            ));
        }
        let mut eph = [0u8; 32];
        eph.copy_from_slice(&header_key[8..40]);
        let eph = PublicKey::from(eph);
        let shared = private.diffie_hellman(&eph);
        if !shared.was_contributory() {
            return Err(CipherError::BadHeaderKey);
        }
        let key = derive_key(shared.as_bytes(), &header_key[48..64], &eph, &server)?;
        Ok(Box::new(Decryptor { key, next: None }))
    }
}

struct Encryptor {
    key: LessSafeKey,
    header: [u8; HEADER_KEY_LEN],
    counter: u64,
}

impl fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeEncryptor")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl Encryptor {
    fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        for chunk in plain.chunks(MAX_RECORD_PLAIN) {
            let len = chunk.len() + TAG_LEN;
            let mut head = [0u8; RECORD_HEADER_LEN];
            head[0] = RECORD_MAGIC;
            // Fits: len <= MAX_RECORD_PLAIN + 16 < 2^24.
            head[1..4].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
            head[4..12].copy_from_slice(&self.counter.to_be_bytes());
            let mut data = chunk.to_vec();
            let tag = self
                .key
                .seal_in_place_separate_tag(nonce(self.counter), Aad::from(head), &mut data)
                .map_err(|_| CipherError::Crypto("AES-GCM seal failed".to_owned()))?;
            self.counter = self
                .counter
                .checked_add(1)
                .ok_or_else(|| CipherError::Crypto("record counter exhausted".to_owned()))?;
            out.extend_from_slice(&head);
            out.extend_from_slice(&data);
            out.extend_from_slice(tag.as_ref());
        }
        Ok(())
    }
}

impl BlockEncryptor for Encryptor {
    fn header_key(&self) -> [u8; HEADER_KEY_LEN] {
        self.header
    }

    fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<usize, CipherError> {
        if plain.is_empty() {
            return Ok(0);
        }
        self.seal(plain, out)?;
        Ok(plain.len())
    }

    fn finish_block(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        if !rest.is_empty() {
            self.seal(rest, out)?;
        }
        Ok(())
    }

    fn is_prefix_decryptable(&self) -> bool {
        // Every encrypt call emits whole records.
        true
    }
}

struct Decryptor {
    key: LessSafeKey,
    /// The counter the next record of the current block must carry (`None` at a block's
    /// start: blocks may be missing, so a block may start at any counter).
    next: Option<u64>,
}

impl fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeDecryptor").finish_non_exhaustive()
    }
}

impl BlockDecryptor for Decryptor {
    fn decrypt_block(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        self.next = None;
        let mut rest = body;
        while !rest.is_empty() {
            let Some(head) = rest.get(..RECORD_HEADER_LEN) else {
                return Err(CipherError::Integrity);
            };
            if head[0] != RECORD_MAGIC {
                return Err(CipherError::Integrity);
            }
            let len = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
            let counter = u64::from_be_bytes([
                head[4], head[5], head[6], head[7], head[8], head[9], head[10], head[11],
            ]);
            if len < TAG_LEN || self.next.is_some_and(|n| n != counter) {
                return Err(CipherError::Integrity);
            }
            let Some(sealed) = rest.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len) else {
                return Err(CipherError::Integrity);
            };
            let mut head_copy = [0u8; RECORD_HEADER_LEN];
            head_copy.copy_from_slice(head);
            let mut data = sealed.to_vec();
            let plain = self
                .key
                .open_in_place(nonce(counter), Aad::from(head_copy), &mut data)
                .map_err(|_| CipherError::Integrity)?;
            out.extend_from_slice(plain);
            self.next = counter.checked_add(1);
            rest = &rest[RECORD_HEADER_LEN + len..];
        }
        Ok(())
    }
}

fn derive_key(
    shared: &[u8; 32],
    salt: &[u8],
    eph: &PublicKey,
    server: &PublicKey,
) -> Result<LessSafeKey, CipherError> {
    let mut info = Vec::with_capacity(KDF_INFO.len() + 64);
    info.extend_from_slice(KDF_INFO);
    info.extend_from_slice(eph.as_bytes());
    info.extend_from_slice(server.as_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(salt), shared)
        .expand(&info, key.as_mut())
        .map_err(|_| CipherError::Crypto("HKDF expand failed".to_owned()))?;
    let unbound = UnboundKey::new(&AES_256_GCM, key.as_ref())
        .map_err(|_| CipherError::Crypto("AES-256-GCM key setup failed".to_owned()))?;
    Ok(LessSafeKey::new(unbound))
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(NONCE_PREFIX);
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn key_id(server: &PublicKey) -> [u8; 8] {
    let digest = Sha256::digest(server.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

fn parse_key(field: &str, hex_key: &str) -> Result<[u8; 32], CipherError> {
    let bytes = hex::decode(hex_key.trim())
        .map_err(|e| CipherError::BadKey(format!("{field}: not hex ({e})")))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        CipherError::BadKey(format!("{field}: {} bytes, expected 32", b.len()))
    })
}

/// The header key field's magic: the first four bytes.
pub const HEADER_MAGIC: &[u8; 4] = b"ACLG";
/// The header key field's format version.
pub const FORMAT_VERSION: u8 = 0x01;
/// The first byte of every record.
pub const RECORD_MAGIC: u8 = 0xA7;
const RECORD_HEADER_LEN: usize = 12;
const TAG_LEN: usize = 16;
const SESSION_ID_LEN: usize = 16;
/// The largest plaintext per record, so a record's length fits 24 bits with room to spare.
const MAX_RECORD_PLAIN: usize = 1 << 20;
const NONCE_PREFIX: &[u8; 4] = b"ACME";
const KDF_INFO: &[u8] = b"acme-xlog/aes-256-gcm/v1";

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn both_keys() -> Arc<dyn LogCipher> {
        let (_, private_key) = AcmeCipher::generate_key_pair();
        Arc::new(
            AcmeCipher::new(AcmeCipherConfig {
                public_key: None,
                private_key: Some(private_key),
            })
            .unwrap(),
        )
    }

    phobos_plugin_testkit::cipher_conformance!(acme_conformance, both_keys, both_keys);

    fn pair() -> (AcmeCipher, AcmeCipher) {
        let (public_key, private_key) = AcmeCipher::generate_key_pair();
        (
            AcmeCipher::new(AcmeCipherConfig {
                public_key: Some(public_key),
                private_key: None,
            })
            .unwrap(),
            AcmeCipher::new(AcmeCipherConfig {
                public_key: None,
                private_key: Some(private_key),
            })
            .unwrap(),
        )
    }

    fn seal_block(enc: &mut dyn BlockEncryptor, parts: &[&[u8]]) -> Vec<u8> {
        let mut body = Vec::new();
        for p in parts {
            let used = enc.encrypt(p, &mut body).unwrap();
            assert_eq!(used, p.len());
        }
        enc.finish_block(b"", &mut body).unwrap();
        body
    }

    #[test]
    fn blocks_round_trip_and_each_block_decrypts_alone() {
        let (writer, reader) = pair();
        let mut enc = writer.new_encryptor().unwrap();
        let b1 = seal_block(enc.as_mut(), &[b"a", b"bc"]);
        let b2 = seal_block(enc.as_mut(), &[b"second block"]);
        let mut dec = reader.new_decryptor(&enc.header_key()).unwrap();
        let mut out = Vec::new();
        dec.decrypt_block(&b2, &mut out).unwrap();
        assert_eq!(out, b"second block");
        out.clear();
        dec.decrypt_block(&b1, &mut out).unwrap();
        assert_eq!(out, b"abc");
    }

    #[test]
    fn any_flipped_bit_is_an_integrity_error() {
        let (writer, reader) = pair();
        let mut enc = writer.new_encryptor().unwrap();
        let body = seal_block(enc.as_mut(), &[b"hello", b"world"]);
        for i in 0..body.len() {
            let mut bad = body.clone();
            bad[i] ^= 0x01;
            let mut dec = reader.new_decryptor(&enc.header_key()).unwrap();
            assert!(
                dec.decrypt_block(&bad, &mut Vec::new()).is_err(),
                "byte {i}"
            );
        }
    }

    #[test]
    fn removed_or_reordered_records_are_detected_and_a_cut_block_keeps_its_prefix() {
        let (writer, reader) = pair();
        let mut enc = writer.new_encryptor().unwrap();
        let mut r1 = Vec::new();
        enc.encrypt(b"one", &mut r1).unwrap();
        let mut r2 = Vec::new();
        enc.encrypt(b"two", &mut r2).unwrap();
        let mut r3 = Vec::new();
        enc.encrypt(b"three", &mut r3).unwrap();
        let key = enc.header_key();
        let mut dec = reader.new_decryptor(&key).unwrap();
        let skipped = [r1.clone(), r3.clone()].concat();
        assert_eq!(
            dec.decrypt_block(&skipped, &mut Vec::new()),
            Err(CipherError::Integrity)
        );
        let swapped = [r2.clone(), r1.clone()].concat();
        assert_eq!(
            dec.decrypt_block(&swapped, &mut Vec::new()),
            Err(CipherError::Integrity)
        );
        let mut cut = [r1, r2].concat();
        cut.extend_from_slice(&r3[..r3.len() - 1]);
        let mut out = Vec::new();
        assert_eq!(
            dec.decrypt_block(&cut, &mut out),
            Err(CipherError::Integrity)
        );
        assert_eq!(out, b"onetwo");
    }

    #[test]
    fn keys_are_checked() {
        let bad = |public: Option<&str>, private: Option<&str>| {
            AcmeCipher::new(AcmeCipherConfig {
                public_key: public.map(str::to_owned),
                private_key: private.map(str::to_owned),
            })
            .unwrap_err()
        };
        assert!(matches!(bad(None, None), CipherError::BadKey(_)));
        assert!(matches!(bad(Some("zz"), None), CipherError::BadKey(_)));
        assert!(matches!(bad(Some("00"), None), CipherError::BadKey(_)));
        let (p1, _) = AcmeCipher::generate_key_pair();
        let (_, s2) = AcmeCipher::generate_key_pair();
        assert!(matches!(bad(Some(&p1), Some(&s2)), CipherError::BadKey(_)));
    }

    #[test]
    fn a_reader_with_another_key_or_a_foreign_header_is_refused() {
        let (writer, _) = pair();
        let (_, other_reader) = pair();
        let enc = writer.new_encryptor().unwrap();
        assert!(matches!(
            other_reader.new_decryptor(&enc.header_key()),
            Err(CipherError::BadKey(_))
        ));
        assert!(matches!(
            other_reader.new_decryptor(&[0u8; HEADER_KEY_LEN]),
            Err(CipherError::BadHeaderKey)
        ));
        assert!(matches!(
            writer.new_decryptor(&enc.header_key()),
            Err(CipherError::MissingKey("private"))
        ));
    }
}
