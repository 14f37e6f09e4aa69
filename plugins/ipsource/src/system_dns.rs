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
/// It has no time limit of its own: the framework bounds every source in its chain (Mars:
/// 2 s). It needs a tokio runtime; without one it fails with [`ResolveError::Failed`].
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
                tokio::net::lookup_host((host.trim(), 0))
                    .await
                    .map_err(|e| ResolveError::Failed(e.to_string()))?
                    .map(|sa| sa.ip())
                    .collect()
            }
        };
        let mut out: Vec<ResolvedAddr> = Vec::with_capacity(ips.len());
        for ip in ips {
            if self.keeps(ip) && out.iter().all(|a| a.ip != ip) {
                out.push(ResolvedAddr {
                    ip,
                    port: None,
                    source: AddrSource::SystemDns,
                });
            }
        }
        Ok(out)
    }
}

/// How a [`SystemDns`] is set up.
///
/// ```
/// use phobos_ipsource::SystemDnsConfig;
///
/// let c: SystemDnsConfig = serde_json::from_str(r#"{"allow_loopback": true}"#).unwrap();
/// assert!(c.allow_loopback && !c.ipv4_only);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SystemDnsConfig {
    /// Keep loopback answers (Mars discards them). For tests and local development.
    pub allow_loopback: bool,
    /// Discard IPv6 answers (Mars asks for IPv4 only when the local stack has no IPv6).
    pub ipv4_only: bool,
}

/// Whether a resolver's answer `ip` is usable (spec §10.4): never the unspecified or broadcast
/// address, loopback only when allowed, IPv6 only when not `ipv4_only`.
pub(crate) fn sanitise(ip: IpAddr, allow_loopback: bool, ipv4_only: bool) -> bool {
    if ip.is_unspecified() || ip == IpAddr::from([255, 255, 255, 255]) {
        return false;
    }
    if ip.is_loopback() && !allow_loopback {
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
        })
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
