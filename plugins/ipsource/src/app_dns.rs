//! [`AppDns`]: the app's own resolver.

use std::fmt;
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use async_trait::async_trait;
use phobos_plugin_api::{AddrSource, IpSource, LinkPurpose, ResolveError, ResolvedAddr};

/// An app-provided resolver (Mars's `OnNewDns`), typically HTTP-DNS.
///
/// Implemented for every `Fn(&str, LinkPurpose) -> Vec<IpAddr> + Send + Sync`.
pub trait AppResolver: Send + Sync + 'static {
    /// The addresses of `host` for `purpose`; empty when the resolver knows nothing.
    fn resolve(&self, host: &str, purpose: LinkPurpose) -> Vec<IpAddr>;
}

impl<F> AppResolver for F
where
    F: Fn(&str, LinkPurpose) -> Vec<IpAddr> + Send + Sync + 'static,
{
    fn resolve(&self, host: &str, purpose: LinkPurpose) -> Vec<IpAddr> {
        self(host, purpose)
    }
}

/// Addresses from the app's resolver, tagged [`AddrSource::NewDns`], without ports.
///
/// [`new`](Self::new) runs the resolver on tokio's blocking pool, so it may block (do its own
/// HTTP request); [`new_inline`](Self::new_inline) calls it directly on the async task, for
/// resolvers that only read memory. A resolver that panics gives
/// [`ResolveError::Failed`], never a panic in the caller. Answers keep their order with
/// duplicates removed; they are not sanitised (the app is trusted, as in Mars).
#[derive(Clone)]
pub struct AppDns {
    resolver: Arc<dyn AppResolver>,
    blocking: bool,
}

impl AppDns {
    /// The registry name of this source.
    pub const NAME: &'static str = "app-dns";

    /// A source calling `resolver` on tokio's blocking pool (or inline when there is no tokio
    /// runtime).
    pub fn new(resolver: impl AppResolver) -> Self {
        AppDns {
            resolver: Arc::new(resolver),
            blocking: true,
        }
    }

    /// A source calling `resolver` directly; it must not block.
    pub fn new_inline(resolver: impl AppResolver) -> Self {
        AppDns {
            resolver: Arc::new(resolver),
            blocking: false,
        }
    }
}

impl fmt::Debug for AppDns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppDns")
            .field("blocking", &self.blocking)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl IpSource for AppDns {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn resolve(
        &self,
        host: &str,
        purpose: LinkPurpose,
    ) -> Result<Vec<ResolvedAddr>, ResolveError> {
        let resolver = self.resolver.clone();
        let ips = if self.blocking && tokio::runtime::Handle::try_current().is_ok() {
            let host = host.to_owned();
            tokio::task::spawn_blocking(move || resolver.resolve(&host, purpose))
                .await
                .map_err(|_| panicked())?
        } else {
            catch_unwind(AssertUnwindSafe(|| resolver.resolve(host, purpose)))
                .map_err(|_| panicked())?
        };
        Ok(crate::table::unique_answer(ips, AddrSource::NewDns, |_| {
            true
        }))
    }
}

fn panicked() -> ResolveError {
    ResolveError::Failed("the app resolver panicked".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn resolver(host: &str, purpose: LinkPurpose) -> Vec<IpAddr> {
        match (host, purpose) {
            ("a.example", LinkPurpose::LongLink) => {
                vec![ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.1")]
            }
            ("a.example", LinkPurpose::ShortLink) => vec![ip("fd00::1")],
            ("boom", _) => panic!("resolver bug"),
            _ => Vec::new(),
        }
    }

    /// A huge answer is deduplicated keeping the first order, by a set: by a scan of the
    /// kept addresses, 80,000 took 2.9 s on the driver's runtime (uninterruptible).
    #[test]
    fn a_huge_answer_is_deduplicated_in_order() {
        fn many(_: &str, _: LinkPurpose) -> Vec<IpAddr> {
            let distinct = (0..60_000u32).map(|i| IpAddr::from((0x0a00_0000 + i).to_be_bytes()));
            distinct.clone().chain(distinct.rev()).collect()
        }
        let dns = AppDns::new_inline(many);
        let got = futures_lite_block_on(dns.resolve("x", LinkPurpose::LongLink)).unwrap();
        assert_eq!(got.len(), 60_000);
        assert!(got
            .iter()
            .zip(0x0a00_0000u32..)
            .all(|(a, i)| a.ip == IpAddr::from(i.to_be_bytes())));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn answers_are_tagged_deduplicated_and_per_purpose() {
        for dns in [AppDns::new(resolver), AppDns::new_inline(resolver)] {
            let long = dns
                .resolve("a.example", LinkPurpose::LongLink)
                .await
                .unwrap();
            let ips: Vec<IpAddr> = long.iter().map(|a| a.ip).collect();
            assert_eq!(ips, [ip("10.0.0.1"), ip("10.0.0.2")]);
            assert!(long
                .iter()
                .all(|a| a.source == AddrSource::NewDns && a.port.is_none()));
            let short = dns
                .resolve("a.example", LinkPurpose::ShortLink)
                .await
                .unwrap();
            assert_eq!(short[0].ip, ip("fd00::1"));
            assert!(dns
                .resolve("b.example", LinkPurpose::LongLink)
                .await
                .unwrap()
                .is_empty());
        }
    }

    #[tokio::test]
    async fn a_panicking_resolver_is_an_error() {
        for dns in [AppDns::new(resolver), AppDns::new_inline(resolver)] {
            assert!(matches!(
                dns.resolve("boom", LinkPurpose::LongLink).await,
                Err(ResolveError::Failed(_))
            ));
        }
    }

    #[test]
    fn works_without_a_runtime_handle_in_scope() {
        // A minimal executor: the future never waits on IO or timers when inline.
        let dns = AppDns::new(resolver);
        let fut = dns.resolve("a.example", LinkPurpose::LongLink);
        let got = futures_lite_block_on(fut).unwrap();
        assert_eq!(got.len(), 2);
    }

    /// Polls a future that completes without waking (no runtime in scope).
    fn futures_lite_block_on<F: std::future::Future>(fut: F) -> F::Output {
        use std::task::{Context, Poll, Waker};
        let mut fut = std::pin::pin!(fut);
        let mut cx = Context::from_waker(Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("the inline path must complete at once"),
        }
    }
}
