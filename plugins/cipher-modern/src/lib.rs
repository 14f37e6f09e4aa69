//! Modern xlog cipher: X25519 + ChaCha20-Poly1305 with integrity.
