//! Decoder library and CLI for xlog files.
