//! Crash-safe, compressed, encrypted logger whose files Mars's xlog tools read.
