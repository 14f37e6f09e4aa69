//! [`LogCipher`] and its per-session [`BlockEncryptor`] / [`BlockDecryptor`] across the
//! boundary: [`FfiLogCipher`], [`FfiBlockEncryptor`], [`FfiBlockDecryptor`],
//! [`export_log_cipher`] and [`import_log_cipher`].
//!
//! # Panics in the plugin
//!
//! Every fallible method returns `CipherError::Crypto("log cipher \"<name>\" panicked: …")`,
//! as a cipher's panic in-process does (a writer never falls back to plaintext). `name`, `kind` and an encryptor's `header_key` are read once when
//! the object is built, so they cannot panic later; a panic while reading them makes building
//! fail. `is_prefix_decryptable` answers `false` after a panic (crash recovery then leaves the
//! unfinished block alone, the cautious choice). `encrypt`'s output is appended to the
//! caller's buffer only when the call succeeds.

use std::fmt;
use std::sync::Arc;

use abi_stable::sabi_trait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RBox, RResult, RSlice, RStr, RString};
use abi_stable::StableAbi;
use phobos_plugin_api::cipher::HEADER_KEY_LEN;
use phobos_plugin_api::{BlockDecryptor, BlockEncryptor, CipherError, CipherKind, LogCipher};

use crate::guard::{catch, with_scratch, Guarded};
use crate::types::{FfiAppend, FfiCipherError, FfiCipherKind};

/// The FFI-safe mirror of [`LogCipher`].
#[sabi_trait]
pub trait FfiLogCipher: Send + Sync + 'static {
    /// `LogCipher::name`.
    fn name(&self) -> RStr<'_>;
    /// `LogCipher::kind`.
    fn kind(&self) -> FfiCipherKind;
    /// `LogCipher::new_encryptor`.
    fn new_encryptor(&self) -> RResult<FfiEncryptorBox, FfiCipherError>;
    /// `LogCipher::new_decryptor`.
    #[sabi(last_prefix_field)]
    fn new_decryptor(
        &self,
        header_key: &[u8; HEADER_KEY_LEN],
    ) -> RResult<FfiDecryptorBox, FfiCipherError>;
}

/// The FFI-safe mirror of [`BlockEncryptor`].
#[sabi_trait]
pub trait FfiBlockEncryptor: Send + 'static {
    /// `BlockEncryptor::header_key`.
    fn header_key(&self) -> FfiHeaderKey;
    /// `BlockEncryptor::encrypt`: appends to `out`, returns bytes of `plain` consumed.
    fn encrypt(
        &mut self,
        plain: RSlice<'_, u8>,
        out: FfiAppend<'_>,
    ) -> RResult<u64, FfiCipherError>;
    /// `BlockEncryptor::finish_block`.
    fn finish_block(
        &mut self,
        rest: RSlice<'_, u8>,
        out: FfiAppend<'_>,
    ) -> RResult<(), FfiCipherError>;
    /// `BlockEncryptor::is_prefix_decryptable`.
    #[sabi(last_prefix_field)]
    fn is_prefix_decryptable(&self) -> bool;
}

/// The FFI-safe mirror of [`BlockDecryptor`].
#[sabi_trait]
pub trait FfiBlockDecryptor: Send + 'static {
    /// `BlockDecryptor::decrypt_block`.
    #[sabi(last_prefix_field)]
    fn decrypt_block(
        &mut self,
        body: RSlice<'_, u8>,
        out: FfiAppend<'_>,
    ) -> RResult<(), FfiCipherError>;
}

/// The 64-byte header key field, by value (arrays alone are not FFI-safe return values).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct FfiHeaderKey {
    /// The bytes.
    pub bytes: [u8; HEADER_KEY_LEN],
}

/// An owned, type-erased FFI cipher object.
pub type FfiCipherBox = FfiLogCipher_TO<RBox<()>>;
/// An owned, type-erased FFI encryptor.
pub type FfiEncryptorBox = FfiBlockEncryptor_TO<RBox<()>>;
/// An owned, type-erased FFI decryptor.
pub type FfiDecryptorBox = FfiBlockDecryptor_TO<RBox<()>>;

/// Plugin side: wraps a cipher into an FFI object.
///
/// # Errors
///
/// The panic message if the cipher's `name()` or `kind()` panics.
pub fn export_log_cipher<T: LogCipher>(cipher: T) -> Result<FfiCipherBox, String> {
    let (name, kind) = catch(|| (RString::from(cipher.name()), cipher.kind().into()))?;
    Ok(FfiLogCipher_TO::from_value(
        CipherExport {
            inner: Guarded::new(cipher),
            name,
            kind,
        },
        TD_Opaque,
    ))
}

/// Host side: turns an FFI cipher into an `Arc<dyn LogCipher>`.
pub fn import_log_cipher(obj: FfiCipherBox, origin: &str) -> Arc<dyn LogCipher> {
    let name = obj.name().as_str().to_owned();
    let kind = obj.kind().into();
    Arc::new(ImportedCipher {
        obj,
        name,
        kind,
        origin: origin.to_owned(),
    })
}

struct CipherExport<T> {
    inner: Guarded<T>,
    name: RString,
    kind: FfiCipherKind,
}

impl<T: LogCipher> FfiLogCipher for CipherExport<T> {
    fn name(&self) -> RStr<'_> {
        self.name.as_rstr()
    }

    fn kind(&self) -> FfiCipherKind {
        self.kind
    }

    fn new_encryptor(&self) -> RResult<FfiEncryptorBox, FfiCipherError> {
        let built = catch(|| {
            self.inner.new_encryptor().map(|enc| {
                let header_key = enc.header_key();
                (enc, header_key)
            })
        });
        match built {
            Ok(Ok((inner, header_key))) => RResult::ROk(FfiBlockEncryptor_TO::from_value(
                EncryptorExport {
                    inner: Guarded::new(inner),
                    header_key,
                    name: self.name.clone(),
                },
                TD_Opaque,
            )),
            Ok(Err(e)) => RResult::RErr(e.into()),
            Err(msg) => RResult::RErr(panicked(&self.name, &msg)),
        }
    }

    fn new_decryptor(
        &self,
        header_key: &[u8; HEADER_KEY_LEN],
    ) -> RResult<FfiDecryptorBox, FfiCipherError> {
        match catch(|| self.inner.new_decryptor(header_key)) {
            Ok(Ok(inner)) => RResult::ROk(FfiBlockDecryptor_TO::from_value(
                DecryptorExport {
                    inner: Guarded::new(inner),
                    name: self.name.clone(),
                },
                TD_Opaque,
            )),
            Ok(Err(e)) => RResult::RErr(e.into()),
            Err(msg) => RResult::RErr(panicked(&self.name, &msg)),
        }
    }
}

struct EncryptorExport {
    inner: Guarded<Box<dyn BlockEncryptor>>,
    header_key: [u8; HEADER_KEY_LEN],
    /// The cipher's name, for its panic errors.
    name: RString,
}

impl FfiBlockEncryptor for EncryptorExport {
    fn header_key(&self) -> FfiHeaderKey {
        FfiHeaderKey {
            bytes: self.header_key,
        }
    }

    fn encrypt(
        &mut self,
        plain: RSlice<'_, u8>,
        mut out: FfiAppend<'_>,
    ) -> RResult<u64, FfiCipherError> {
        let inner = &mut self.inner;
        match catch(|| with_scratch(&mut out, |v| inner.encrypt(plain.as_slice(), v))) {
            Ok(Ok(n)) => RResult::ROk(n as u64),
            Ok(Err(e)) => RResult::RErr(e.into()),
            Err(msg) => RResult::RErr(panicked(&self.name, &msg)),
        }
    }

    fn finish_block(
        &mut self,
        rest: RSlice<'_, u8>,
        mut out: FfiAppend<'_>,
    ) -> RResult<(), FfiCipherError> {
        let inner = &mut self.inner;
        match catch(|| with_scratch(&mut out, |v| inner.finish_block(rest.as_slice(), v))) {
            Ok(Ok(())) => RResult::ROk(()),
            Ok(Err(e)) => RResult::RErr(e.into()),
            Err(msg) => RResult::RErr(panicked(&self.name, &msg)),
        }
    }

    fn is_prefix_decryptable(&self) -> bool {
        catch(|| self.inner.is_prefix_decryptable()).unwrap_or(false)
    }
}

struct DecryptorExport {
    inner: Guarded<Box<dyn BlockDecryptor>>,
    /// The cipher's name, for its panic errors.
    name: RString,
}

impl FfiBlockDecryptor for DecryptorExport {
    fn decrypt_block(
        &mut self,
        body: RSlice<'_, u8>,
        mut out: FfiAppend<'_>,
    ) -> RResult<(), FfiCipherError> {
        let inner = &mut self.inner;
        match catch(|| with_scratch(&mut out, |v| inner.decrypt_block(body.as_slice(), v))) {
            Ok(Ok(())) => RResult::ROk(()),
            Ok(Err(e)) => RResult::RErr(e.into()),
            Err(msg) => RResult::RErr(panicked(&self.name, &msg)),
        }
    }
}

/// A panic in cipher `name`'s call, worded as a cipher's panic in-process is
/// (`phobos_plugin_api::panics::cipher_panicked`).
fn panicked(name: &str, msg: &str) -> FfiCipherError {
    FfiCipherError::Crypto(format!("log cipher {name:?} panicked: {msg}").into())
}

struct ImportedCipher {
    obj: FfiCipherBox,
    name: String,
    kind: CipherKind,
    origin: String,
}

impl fmt::Debug for ImportedCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportedCipher")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("origin", &self.origin)
            .finish()
    }
}

impl LogCipher for ImportedCipher {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> CipherKind {
        self.kind
    }

    fn new_encryptor(&self) -> Result<Box<dyn BlockEncryptor>, CipherError> {
        let obj = self.obj.new_encryptor().into_result()?;
        let header_key = obj.header_key().bytes;
        Ok(Box::new(ImportedEncryptor { obj, header_key }))
    }

    fn new_decryptor(
        &self,
        header_key: &[u8; HEADER_KEY_LEN],
    ) -> Result<Box<dyn BlockDecryptor>, CipherError> {
        let obj = self.obj.new_decryptor(header_key).into_result()?;
        Ok(Box::new(ImportedDecryptor { obj }))
    }
}

struct ImportedEncryptor {
    obj: FfiEncryptorBox,
    header_key: [u8; HEADER_KEY_LEN],
}

impl fmt::Debug for ImportedEncryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportedEncryptor").finish_non_exhaustive()
    }
}

impl BlockEncryptor for ImportedEncryptor {
    fn header_key(&self) -> [u8; HEADER_KEY_LEN] {
        self.header_key
    }

    fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<usize, CipherError> {
        let consumed = self
            .obj
            .encrypt(plain.into(), FfiAppend::new(out))
            .into_result()?;
        match usize::try_from(consumed) {
            Ok(n) if n <= plain.len() => Ok(n),
            _ => Err(CipherError::Crypto(format!(
                "plugin reported consuming {consumed} of {} bytes",
                plain.len()
            ))),
        }
    }

    fn finish_block(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        self.obj
            .finish_block(rest.into(), FfiAppend::new(out))
            .into_result()
            .map_err(CipherError::from)
    }

    fn is_prefix_decryptable(&self) -> bool {
        self.obj.is_prefix_decryptable()
    }
}

struct ImportedDecryptor {
    obj: FfiDecryptorBox,
}

impl fmt::Debug for ImportedDecryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportedDecryptor").finish_non_exhaustive()
    }
}

impl BlockDecryptor for ImportedDecryptor {
    fn decrypt_block(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        self.obj
            .decrypt_block(body.into(), FfiAppend::new(out))
            .into_result()
            .map_err(CipherError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy XOR "cipher" working in 4-byte units, so the consumed count matters.
    #[derive(Debug)]
    struct Xor4 {
        public: bool,
        private: bool,
    }

    #[derive(Debug)]
    struct Xor4Enc {
        key: u8,
    }

    #[derive(Debug)]
    struct Xor4Dec {
        key: u8,
    }

    impl LogCipher for Xor4 {
        fn name(&self) -> &str {
            "xor4"
        }
        fn kind(&self) -> CipherKind {
            CipherKind::MarsCompatible
        }
        fn new_encryptor(&self) -> Result<Box<dyn BlockEncryptor>, CipherError> {
            if !self.public {
                return Err(CipherError::MissingKey("public"));
            }
            Ok(Box::new(Xor4Enc { key: 0x5A }))
        }
        fn new_decryptor(
            &self,
            header_key: &[u8; HEADER_KEY_LEN],
        ) -> Result<Box<dyn BlockDecryptor>, CipherError> {
            if !self.private {
                return Err(CipherError::MissingKey("private"));
            }
            if header_key[1..].iter().any(|&b| b != 0) {
                return Err(CipherError::BadHeaderKey);
            }
            Ok(Box::new(Xor4Dec { key: header_key[0] }))
        }
    }

    impl BlockEncryptor for Xor4Enc {
        fn header_key(&self) -> [u8; HEADER_KEY_LEN] {
            let mut k = [0; HEADER_KEY_LEN];
            k[0] = self.key;
            k
        }
        fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<usize, CipherError> {
            if plain.starts_with(b"PANIC") {
                panic!("encrypt exploded");
            }
            let n = plain.len() / 4 * 4;
            out.extend(plain[..n].iter().map(|b| b ^ self.key));
            Ok(n)
        }
        fn finish_block(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
            out.extend(rest.iter().map(|b| b ^ self.key));
            Ok(())
        }
        fn is_prefix_decryptable(&self) -> bool {
            true
        }
    }

    impl BlockDecryptor for Xor4Dec {
        fn decrypt_block(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
            if body.is_empty() {
                return Err(CipherError::Integrity);
            }
            out.extend(body.iter().map(|b| b ^ self.key));
            Ok(())
        }
    }

    fn seal(cipher: &dyn LogCipher, plain: &[u8]) -> ([u8; HEADER_KEY_LEN], Vec<u8>) {
        let mut enc = cipher.new_encryptor().unwrap();
        let mut out = b"hdr".to_vec();
        let n = enc.encrypt(plain, &mut out).unwrap();
        enc.finish_block(&plain[n..], &mut out).unwrap();
        (enc.header_key(), out)
    }

    #[test]
    fn plugin_side_objects_answer_like_the_plugin() {
        let obj = export_log_cipher(Xor4 {
            public: true,
            private: true,
        })
        .unwrap();
        assert_eq!(obj.name().as_str(), "xor4");
        assert_eq!(obj.kind(), FfiCipherKind::MarsCompatible);
        let mut enc = obj.new_encryptor().unwrap();
        assert_eq!(enc.header_key().bytes[0], 0x5A);
        let mut out = Vec::new();
        assert_eq!(
            enc.encrypt(b"abcdef"[..].into(), FfiAppend::new(&mut out)),
            RResult::ROk(4)
        );
        assert_eq!(out.len(), 4);
        let mut bad_key = [0u8; HEADER_KEY_LEN];
        bad_key[9] = 1;
        assert_eq!(
            obj.new_decryptor(&bad_key).into_result().err(),
            Some(FfiCipherError::BadHeaderKey)
        );
    }

    #[test]
    fn host_adapter_round_trips_sessions_and_errors() {
        let direct = Xor4 {
            public: true,
            private: true,
        };
        let loaded = import_log_cipher(
            export_log_cipher(Xor4 {
                public: true,
                private: true,
            })
            .unwrap(),
            "test",
        );
        assert_eq!(loaded.name(), "xor4");
        assert_eq!(loaded.kind(), CipherKind::MarsCompatible);
        let plain = b"0123456789";
        let via_ffi = seal(loaded.as_ref(), plain);
        assert_eq!(via_ffi, seal(&direct, plain));
        assert!(loaded.new_encryptor().unwrap().is_prefix_decryptable());
        let mut dec = loaded.new_decryptor(&via_ffi.0).unwrap();
        let mut back = Vec::new();
        dec.decrypt_block(&via_ffi.1[3..], &mut back).unwrap();
        assert_eq!(back, plain);
        assert_eq!(
            dec.decrypt_block(&[], &mut back),
            Err(CipherError::Integrity)
        );
        let write_only = import_log_cipher(
            export_log_cipher(Xor4 {
                public: true,
                private: false,
            })
            .unwrap(),
            "test",
        );
        assert_eq!(
            write_only.new_decryptor(&via_ffi.0).err(),
            Some(CipherError::MissingKey("private"))
        );
    }

    #[test]
    fn a_panicking_encrypt_is_an_error_and_leaves_out_untouched() {
        let loaded = import_log_cipher(
            export_log_cipher(Xor4 {
                public: true,
                private: true,
            })
            .unwrap(),
            "test",
        );
        let mut enc = loaded.new_encryptor().unwrap();
        let mut out = b"keep".to_vec();
        // Worded as a cipher's panic in-process, naming the cipher (before: "plugin
        // panicked: encrypt exploded", without the name).
        let name = loaded.name().to_owned();
        assert_eq!(
            enc.encrypt(b"PANIC!!!", &mut out),
            Err(phobos_plugin_api::panics::cipher_panicked(
                &name,
                "encrypt exploded"
            ))
        );
        assert_eq!(out, b"keep");
    }
}
