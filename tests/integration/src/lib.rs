//! End-to-end tests across Phobos crates.
