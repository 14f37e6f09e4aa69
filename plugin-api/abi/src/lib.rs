//! Stable-ABI mirror of the Phobos plugin traits and the dynamic-library loader.
