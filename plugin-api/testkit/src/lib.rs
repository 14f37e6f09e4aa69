//! Conformance suites every Phobos plugin implementation should pass.
