//! Conformance checks for [`IpSource`], run by
//! [`ipsource_conformance!`](crate::ipsource_conformance).
//!
//! The checks run the async `resolve` on a fresh single-threaded tokio runtime, so they can be
//! called from plain `#[test]` functions. They only resolve names that need no external
//! network. What they take as the contract:
//!
//! - `resolve` never panics, for any host and purpose.
//! - Every address is tagged with the source the caller expects.
//! - A port, when given, is not 0.

use std::future::Future;

use phobos_plugin_api::{AddrSource, IpSource, LinkPurpose, ResolvedAddr};

/// Resolves each of `hosts` for both purposes; every address returned must be tagged
/// `expected` and have no port 0. Errors and empty answers are allowed, but at least one
/// host must get an address: a source that answers nothing has nothing to check.
///
/// # Panics
///
/// On a wrong tag, port 0, a panic inside the source, or no address for any host.
pub fn check_resolve(source: &dyn IpSource, expected: AddrSource, hosts: &[&str]) {
    let mut answered = 0;
    for host in hosts {
        for purpose in [LinkPurpose::LongLink, LinkPurpose::ShortLink] {
            if let Ok(addrs) = block_on(source.resolve(host, purpose)) {
                check_addrs(source, host, expected, &addrs);
                answered += addrs.len();
            }
        }
    }
    assert!(
        answered > 0,
        "IP source {:?} gave no address for any of {hosts:?}: give the conformance suite at \
         least one host it resolves",
        source.name()
    );
}

/// Resolving odd names (empty, with a NUL byte, 300 characters, empty labels) never panics.
/// These fail locally, without asking a DNS server.
///
/// # Panics
///
/// On a panic inside the source.
pub fn check_odd_hosts(source: &dyn IpSource) {
    let long = "x".repeat(300);
    for host in ["", "a\0b", long.as_str(), "a..b", " "] {
        for purpose in [LinkPurpose::LongLink, LinkPurpose::ShortLink] {
            let _ = block_on(source.resolve(host, purpose));
        }
    }
}

/// Runs `fut` to completion on a new current-thread tokio runtime with IO and time enabled.
///
/// # Panics
///
/// When the runtime cannot be built.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds")
        .block_on(fut)
}

fn check_addrs(source: &dyn IpSource, host: &str, expected: AddrSource, addrs: &[ResolvedAddr]) {
    for a in addrs {
        assert_eq!(
            a.source,
            expected,
            "{}: {host} resolved to {a:?} with the wrong tag",
            source.name()
        );
        assert_ne!(
            a.port,
            Some(0),
            "{}: {host} resolved with port 0",
            source.name()
        );
    }
}

/// Asserts that two sources give the same answers (or the same errors) for each of `hosts`
/// and both purposes, and report the same name.
///
/// Meant for comparing a plugin used in-process with the same plugin loaded from its library.
///
/// # Panics
///
/// At the first difference, naming it.
pub fn assert_sources_identical(a: &dyn IpSource, b: &dyn IpSource, hosts: &[&str]) {
    assert_eq!(a.name(), b.name(), "name");
    for host in hosts {
        for purpose in [LinkPurpose::LongLink, LinkPurpose::ShortLink] {
            let ra = block_on(a.resolve(host, purpose));
            let rb = block_on(b.resolve(host, purpose));
            assert_eq!(ra, rb, "{host} for {purpose:?}");
        }
    }
}
