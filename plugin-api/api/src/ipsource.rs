//! Address resolution: [`IpSource`].
//!
//! An IP source turns a host name into addresses for a purpose (long or short link). Each
//! address is tagged with where it came from, because ranking and the backup-IP check treat
//! sources differently (Mars: debug IPs are used alone; backup IPs are never ban-filtered).
//! Sources are chained by the framework with a time limit each.
//!
//! `resolve` is async and called by the driver, never by the sans-IO core. A source whose
//! `resolve` blocks its thread says so with [`IpSource::is_blocking`], and the driver then runs
//! it on a thread of its own instead of its event loop.

use std::fmt;
use std::net::IpAddr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::types::LinkPurpose;

/// Resolves host names into tagged addresses.
#[async_trait]
pub trait IpSource: Send + Sync + fmt::Debug + 'static {
    /// A short name for logs and error messages (`"system-dns"`).
    fn name(&self) -> &str;

    /// Resolves `host` for `purpose`.
    ///
    /// An empty list means "this source knows nothing about the host"; the chain moves on to
    /// the next source.
    ///
    /// # Errors
    ///
    /// A [`ResolveError`] when the source failed; the chain moves on as for an empty list,
    /// and the error is logged.
    async fn resolve(
        &self,
        host: &str,
        purpose: LinkPurpose,
    ) -> Result<Vec<ResolvedAddr>, ResolveError>;

    /// The device's network changed (the driver calls this on every change it learns of,
    /// before the links re-resolve): forget cached answers that belong to the old network.
    /// Called on the driver's loop, so it must be quick; the default does nothing (for
    /// sources without a cache).
    fn network_changed(&self) {}

    /// Whether [`resolve`](Self::resolve) blocks the thread that polls it instead of
    /// yielding while it waits: a synchronous lookup, or a source loaded from a dynamic
    /// library (its adapter runs the plugin's future to completion in one call and answers
    /// `true`). The driver runs a blocking source's calls on a thread of its own (tokio's
    /// blocking pool), never on its event loop or a runtime worker; a call it stops waiting
    /// for runs on there until it returns and its answer is dropped.
    ///
    /// The default is `false`: `resolve` is a well-behaved future, run on the driver's
    /// runtime and dropped when the driver stops waiting for it.
    fn is_blocking(&self) -> bool {
        false
    }
}

/// One address from an [`IpSource`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResolvedAddr {
    /// The address.
    pub ip: IpAddr,
    /// A port, when the source knows it (debug lists do); otherwise the link's configured ports
    /// are used.
    pub port: Option<u16>,
    /// Where it came from.
    pub source: AddrSource,
}

/// Where an address came from (Mars's `IPSourceType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AddrSource {
    /// A debug or static list; used alone, without DNS.
    Debug,
    /// The app's own resolver ("newdns", typically HTTP-DNS).
    NewDns,
    /// A list the app updates at runtime (for example one the server pushes).
    Dynamic,
    /// DNS over HTTPS.
    Doh,
    /// The operating system's resolver.
    SystemDns,
    /// Backup addresses shipped with the app.
    Backup,
}

/// Why a source could not resolve a host.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The source did not answer in time.
    #[error("resolution timed out")]
    Timeout,
    /// The host does not exist.
    #[error("no such host")]
    NoSuchHost,
    /// Any other failure, described.
    #[error("resolution failed: {0}")]
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(dead_code)]
    fn object_safe(_: Box<dyn IpSource>) {}
}
