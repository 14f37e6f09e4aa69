//! Test support: mock long/short-link servers, frame builders, fault proxy.
