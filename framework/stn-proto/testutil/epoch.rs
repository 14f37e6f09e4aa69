//! Virtual time zero for the unit and scenario tests.
//!
//! The tests need one arbitrary `Instant` to count virtual time from, and std offers no way
//! to make an `Instant` without reading the clock. This file lives outside `src/` (and is
//! pulled into the test build with `#[path]`) so the CI guard that keeps clock reads out of
//! `src/` covers exactly the code that ships: the core never reads a clock.

use std::time::Instant;

/// An arbitrary instant to start virtual time at.
pub(crate) fn epoch() -> Instant {
    Instant::now()
}
