//! Mars-compatible long-link packet codec (20-byte big-endian header).
