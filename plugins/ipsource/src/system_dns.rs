//! [`SystemDns`]: the operating system's resolver, sanitised as Mars does.

use std::net::IpAddr;

use async_trait::async_trait;
use phobos_plugin_api::{AddrSource, IpSource, LinkPurpose, ResolveError, ResolvedAddr};
use serde::{Deserialize, Serialize};

/// Addresses from the operating system's resolver (`getaddrinfo` through tokio's
/// [`lookup_host`](tokio::net::lookup_host)), tagged [`AddrSource::SystemDns`], without ports.
///
/// Answers `0.0.0.0`, `::`, `255.255.255.255` and, unless
/// [`allow_loopback`](SystemDnsConfig::allow_loopback), loopback addresses are discarded
/// (spec §10.4); with [`ipv4_only`](SystemDnsConfig::ipv4_only), IPv6 answers too. A host
/// that is an IP literal (`10.0.0.1`, `::1`, `[::1]`) answers itself, under the same filter.
///
/// A lookup taking longer than [`timeout_ms`](SystemDnsConfig::timeout_ms) (Mars: 1 s inside
/// the chain's 2 s) ends with [`ResolveError::Timeout`] (the resolver thread finishes in the
/// background); a name the resolver says does not exist gives [`ResolveError::NoSuchHost`];
/// other resolver errors give [`ResolveError::Failed`]. It needs a tokio runtime; without one
/// it fails with [`ResolveError::Failed`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SystemDns {
    config: SystemDnsConfig,
}

impl SystemDns {
    /// The registry name of this source.
    pub const NAME: &'static str = "system-dns";

    /// A source with `config` (every combination of settings is valid).
    pub fn new(config: SystemDnsConfig) -> Self {
        SystemDns { config }
    }

    /// Whether `ip` survives the sanitising filter.
    pub fn keeps(&self, ip: IpAddr) -> bool {
        sanitise(ip, self.config.allow_loopback, self.config.ipv4_only)
    }
}

#[async_trait]
impl IpSource for SystemDns {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn resolve(
        &self,
        host: &str,
        _purpose: LinkPurpose,
    ) -> Result<Vec<ResolvedAddr>, ResolveError> {
        let ips: Vec<IpAddr> = match literal_host(host)? {
            Some(ip) => vec![ip],
            None => {
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(ResolveError::Failed(
                        "system DNS needs a tokio runtime".to_owned(),
                    ));
                }
                let host = host.trim().to_owned();
                self.bounded(async move {
                    tokio::net::lookup_host((host.as_str(), 0))
                        .await
                        .map(|addrs| addrs.map(|sa| sa.ip()).collect())
                })
                .await?
            }
        };
        Ok(self.sanitised(ips))
    }
}

impl SystemDns {
    /// Runs `lookup` under the configured time limit and maps its error.
    async fn bounded(
        &self,
        lookup: impl std::future::Future<Output = std::io::Result<Vec<IpAddr>>>,
    ) -> Result<Vec<IpAddr>, ResolveError> {
        let result = if self.config.timeout_ms == 0 {
            lookup.await
        } else {
            let limit = std::time::Duration::from_millis(self.config.timeout_ms);
            tokio::time::timeout(limit, lookup)
                .await
                .map_err(|_| ResolveError::Timeout)?
        };
        result.map_err(|e| lookup_error(&e))
    }

    /// The answers that pass [`keeps`](Self::keeps), deduplicated, tagged.
    fn sanitised(&self, ips: Vec<IpAddr>) -> Vec<ResolvedAddr> {
        crate::table::unique_answer(ips, AddrSource::SystemDns, |ip| self.keeps(ip))
    }
}

/// How a [`SystemDns`] is set up.
///
/// ```
/// use phobos_ipsource::SystemDnsConfig;
///
/// let c: SystemDnsConfig = serde_json::from_str(r#"{"allow_loopback": true}"#).unwrap();
/// assert!(c.allow_loopback && !c.ipv4_only);
/// assert_eq!(c.timeout_ms, 1000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SystemDnsConfig {
    /// Keep loopback answers (Mars discards them). For tests and local development.
    pub allow_loopback: bool,
    /// Discard IPv6 answers (Mars asks for IPv4 only when the local stack has no IPv6).
    pub ipv4_only: bool,
    /// The time limit of one lookup in milliseconds; 0 for none (the framework's per-source
    /// limit still applies). Default 1000, Mars's `getaddrinfo` limit.
    pub timeout_ms: u64,
}

impl Default for SystemDnsConfig {
    fn default() -> Self {
        SystemDnsConfig {
            allow_loopback: false,
            ipv4_only: false,
            timeout_ms: 1000,
        }
    }
}

/// A resolver error as the chain sees it: glibc's "name not known" and "no address" answers
/// (`EAI_NONAME`, `EAI_NODATA`; std only passes their text on) are
/// [`ResolveError::NoSuchHost`], anything else [`ResolveError::Failed`].
fn lookup_error(e: &std::io::Error) -> ResolveError {
    let text = e.to_string();
    const NO_SUCH_HOST: [&str; 3] = [
        "Name or service not known",
        "No address associated with hostname",
        "nodename nor servname provided",
    ];
    if NO_SUCH_HOST.iter().any(|m| text.contains(m)) {
        return ResolveError::NoSuchHost;
    }
    ResolveError::Failed(text)
}

/// Whether a resolver's answer `ip` is usable (spec §10.4): never the unspecified or broadcast
/// address, loopback only when allowed, IPv6 only when not `ipv4_only`.
///
/// An IPv4-mapped IPv6 answer (`::ffff:127.0.0.1`) is judged as the IPv4 address it is: a
/// dual-stack socket connects to it. Before, a resolver could pass loopback, `0.0.0.0` and
/// broadcast that way.
pub(crate) fn sanitise(ip: IpAddr, allow_loopback: bool, ipv4_only: bool) -> bool {
    let canonical = ip.to_canonical();
    if canonical.is_unspecified() || canonical == IpAddr::from([255, 255, 255, 255]) {
        return false;
    }
    if canonical.is_loopback() && !allow_loopback {
        return false;
    }
    !(ipv4_only && ip.is_ipv6())
}

/// `host` as an IP literal (`10.0.0.1`, `::1`, `[::1]`), or `None` for a name to look up.
///
/// # Errors
///
/// [`ResolveError::NoSuchHost`] for an empty (or blank) host.
pub(crate) fn literal_host(host: &str) -> Result<Option<IpAddr>, ResolveError> {
    let host = host.trim();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.is_empty() {
        return Err(ResolveError::NoSuchHost);
    }
    Ok(bare.parse::<IpAddr>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn dns(allow_loopback: bool, ipv4_only: bool) -> SystemDns {
        SystemDns::new(SystemDnsConfig {
            allow_loopback,
            ipv4_only,
            ..SystemDnsConfig::default()
        })
    }

    #[tokio::test]
    async fn junk_answers_never_leave_the_source() {
        let d = dns(false, false);
        let answer = [
            "0.0.0.0",
            "255.255.255.255",
            "::",
            "127.0.0.1",
            "192.0.2.9",
            "192.0.2.9",
        ];
        let got = d.sanitised(answer.iter().map(|s| ip(s)).collect());
        assert_eq!(
            got.iter().map(|a| a.ip).collect::<Vec<_>>(),
            [ip("192.0.2.9")]
        );
        let lenient = dns(true, false).sanitised(answer.iter().map(|s| ip(s)).collect());
        assert_eq!(lenient.len(), 2, "{lenient:?}");
    }

    #[test]
    fn ipv4_mapped_junk_is_judged_as_the_ipv4_address_it_is() {
        // Before, `::ffff:127.0.0.1` passed as a global IPv6 address, and a dual-stack socket
        // connected to a local service.
        let d = dns(false, false);
        for bad in [
            "::ffff:127.0.0.1",
            "::ffff:0.0.0.0",
            "::ffff:255.255.255.255",
        ] {
            assert!(!d.keeps(ip(bad)), "{bad} kept");
        }
        assert!(d.keeps(ip("::ffff:192.0.2.9")));
        assert!(dns(true, false).keeps(ip("::ffff:127.0.0.1")));
        assert!(!dns(false, true).keeps(ip("::ffff:192.0.2.9")), "IPv4 only");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lookup_past_the_limit_is_a_timeout() {
        let d = dns(false, false);
        let started = tokio::time::Instant::now();
        let got = d.bounded(std::future::pending()).await;
        assert_eq!(got, Err(ResolveError::Timeout));
        assert_eq!(started.elapsed(), std::time::Duration::from_millis(1000));
        // With no limit of its own, a finished lookup is never cut short.
        let unbounded = SystemDns::new(SystemDnsConfig {
            timeout_ms: 0,
            ..SystemDnsConfig::default()
        });
        let slow = async {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            Ok(vec![ip("192.0.2.1")])
        };
        assert_eq!(unbounded.bounded(slow).await, Ok(vec![ip("192.0.2.1")]));
    }

    #[tokio::test]
    async fn resolver_errors_are_typed() {
        let d = dns(false, false);
        let gai = |msg: &str| {
            std::io::Error::other(format!("failed to lookup address information: {msg}"))
        };
        let nonexistent = gai("Name or service not known");
        assert_eq!(
            d.bounded(async { Err(nonexistent) }).await,
            Err(ResolveError::NoSuchHost)
        );
        let nodata = gai("No address associated with hostname");
        assert_eq!(
            d.bounded(async { Err(nodata) }).await,
            Err(ResolveError::NoSuchHost)
        );
        let other = gai("Temporary failure in name resolution");
        assert!(matches!(
            d.bounded(async { Err(other) }).await,
            Err(ResolveError::Failed(m)) if m.contains("Temporary failure")
        ));
    }

    #[test]
    fn filter_drops_bogus_answers() {
        let d = dns(false, false);
        for bad in [
            "0.0.0.0",
            "::",
            "255.255.255.255",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
        ] {
            assert!(!d.keeps(ip(bad)), "{bad}");
        }
        for good in ["10.0.0.1", "192.0.2.1", "2001:db8::1", "255.255.255.254"] {
            assert!(d.keeps(ip(good)), "{good}");
        }
        assert!(dns(true, false).keeps(ip("127.0.0.1")));
        assert!(dns(true, false).keeps(ip("::1")));
        assert!(!dns(true, true).keeps(ip("::1")));
        assert!(!dns(false, true).keeps(ip("2001:db8::1")));
    }

    #[tokio::test]
    async fn localhost_is_discarded_unless_loopback_is_allowed() {
        let strict = dns(false, false)
            .resolve("localhost", LinkPurpose::LongLink)
            .await
            .unwrap();
        assert!(strict.is_empty(), "{strict:?}");
        let lenient = dns(true, false)
            .resolve("localhost", LinkPurpose::LongLink)
            .await
            .unwrap();
        assert!(
            lenient.iter().any(|a| a.ip == ip("127.0.0.1")),
            "{lenient:?}"
        );
        assert!(lenient
            .iter()
            .all(|a| a.source == AddrSource::SystemDns && a.port.is_none()));
        let v4 = dns(true, true)
            .resolve("localhost", LinkPurpose::ShortLink)
            .await
            .unwrap();
        assert!(v4.iter().all(|a| a.ip.is_ipv4()) && !v4.is_empty());
    }

    #[tokio::test]
    async fn literals_answer_themselves_under_the_filter() {
        let d = dns(false, false);
        for (host, want) in [
            ("192.0.2.7", Some("192.0.2.7")),
            ("[2001:db8::9]", Some("2001:db8::9")),
            ("2001:db8::9", Some("2001:db8::9")),
            ("0.0.0.0", None),
            ("127.0.0.1", None),
        ] {
            let got = d.resolve(host, LinkPurpose::LongLink).await.unwrap();
            assert_eq!(got.first().map(|a| a.ip), want.map(ip), "{host}");
        }
    }

    #[tokio::test]
    async fn bad_names_are_errors_not_panics() {
        let d = dns(true, false);
        assert_eq!(
            d.resolve("", LinkPurpose::LongLink).await,
            Err(ResolveError::NoSuchHost)
        );
        assert!(matches!(
            d.resolve("a\0b", LinkPurpose::LongLink).await,
            Err(ResolveError::Failed(_))
        ));
    }

    #[test]
    fn without_a_runtime_it_fails_cleanly() {
        use std::future::Future as _;
        let d = dns(true, false);
        let fut = d.resolve("localhost", LinkPurpose::LongLink);
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => assert!(matches!(r, Err(ResolveError::Failed(_)))),
            std::task::Poll::Pending => panic!("must fail at once without a runtime"),
        }
    }
}
