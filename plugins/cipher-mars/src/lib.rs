//! Mars-compatible xlog cipher: ECDH on secp256k1 + TEA.
