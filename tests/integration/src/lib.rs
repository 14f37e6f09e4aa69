//! End-to-end tests across Phobos crates live in `tests/`; this library is empty on purpose.
