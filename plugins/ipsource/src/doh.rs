//! [`DohSource`]: DNS over HTTPS (RFC 8484) through `hickory-resolver`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::{ProtoError, ProtoErrorKind};
use hickory_resolver::{ResolveErrorKind, TokioResolver};
use phobos_plugin_api::{AddrSource, IpSource, LinkPurpose, ResolveError, ResolvedAddr};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};

use crate::system_dns::{literal_host, sanitise};

/// Addresses from a DNS-over-HTTPS server, tagged [`AddrSource::Doh`], without ports.
///
/// It asks for A and AAAA records (A only with [`ipv4_only`](DohConfig::ipv4_only)) in one
/// HTTP/2 connection per server, kept open between lookups, and caches answers for their TTL.
/// Answers go through the same filter as [`SystemDns`](crate::SystemDns) (`0.0.0.0`, `::`,
/// `255.255.255.255`, loopback unless allowed): a filtering DoH provider answers `0.0.0.0` for
/// names it blocks.
///
/// TLS is rustls with the *ring* provider; the server's certificate is checked against the
/// Mozilla roots (`webpki-roots`) or, when [`ca_pem`](DohConfig::ca_pem) is set, against those
/// certificates only.
///
/// Outcomes: addresses; an empty list when the name exists without addresses (or all were
/// filtered); [`ResolveError::NoSuchHost`] for NXDOMAIN; [`ResolveError::Timeout`] after
/// [`timeout_ms`](DohConfig::timeout_ms); [`ResolveError::Failed`] for a server error
/// (SERVFAIL, REFUSED…), a refused certificate or a broken connection.
///
/// ```
/// use phobos_ipsource::{DohConfig, DohSource};
///
/// let config: DohConfig = serde_json::from_str(r#"{
///     "server_ips": ["1.1.1.1", "2606:4700:4700::1111"],
///     "tls_name": "cloudflare-dns.com"
/// }"#).unwrap();
/// assert_eq!((config.port, config.path.as_str()), (443, "/dns-query"));
/// let doh = DohSource::new(config).unwrap();
/// # drop(doh);
/// ```
#[derive(Clone)]
pub struct DohSource {
    resolver: Arc<TokioResolver>,
    timeout: Duration,
    allow_loopback: bool,
    ipv4_only: bool,
    servers: Arc<str>,
}

impl DohSource {
    /// The registry name of this source.
    pub const NAME: &'static str = "doh";

    /// A source asking the servers in `config`. No connection is opened until the first
    /// lookup, so this needs no runtime.
    ///
    /// # Errors
    ///
    /// [`DohConfigError`] when the config names no server, has a TLS name that is not a DNS
    /// name or IP, a path not starting with `/`, a zero port or timeout, or a `ca_pem` without
    /// a readable certificate.
    pub fn new(mut config: DohConfig) -> Result<Self, DohConfigError> {
        if let Some(url) = config.url.take() {
            let (tls_name, port, path) = parse_url(&url)?;
            config.tls_name = tls_name;
            config.port = port;
            config.path = path;
        }
        if config.server_ips.is_empty() {
            return Err(DohConfigError::NoServer);
        }
        if config.port == 0 {
            return Err(DohConfigError::PortZero);
        }
        if config.timeout_ms == 0 {
            return Err(DohConfigError::ZeroTimeout);
        }
        if ServerName::try_from(config.tls_name.as_str()).is_err() {
            return Err(DohConfigError::TlsName(config.tls_name));
        }
        if !config.path.starts_with('/') {
            return Err(DohConfigError::Path(config.path));
        }
        let tls = client_config(config.ca_pem.as_deref())?;

        let servers: Vec<NameServerConfig> = config
            .server_ips
            .iter()
            .map(|&ip| {
                let mut ns =
                    NameServerConfig::new(SocketAddr::new(ip, config.port), Protocol::Https);
                ns.tls_dns_name = Some(config.tls_name.clone());
                ns.http_endpoint = Some(config.path.clone());
                ns
            })
            .collect();
        let timeout = Duration::from_millis(config.timeout_ms);
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        // Design: one try per server; the caller's chain moves on to the next source instead.
        opts.attempts = 0;
        opts.ip_strategy = if config.ipv4_only {
            LookupIpStrategy::Ipv4Only
        } else {
            LookupIpStrategy::Ipv4AndIpv6
        };
        opts.use_hosts_file = ResolveHosts::Never;
        opts.tls_config = tls;
        let resolver = TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), servers),
            TokioConnectionProvider::default(),
        )
        .with_options(opts)
        .build();
        let servers = config
            .server_ips
            .iter()
            .map(|ip| format!("{}@{}", config.tls_name, SocketAddr::new(*ip, config.port)))
            .collect::<Vec<_>>()
            .join(",");
        Ok(DohSource {
            resolver: Arc::new(resolver),
            timeout,
            allow_loopback: config.allow_loopback,
            ipv4_only: config.ipv4_only,
            servers: servers.into(),
        })
    }

    /// Forgets every cached answer (for a network change: answers may differ per network).
    pub fn clear_cache(&self) {
        self.resolver.clear_cache();
    }
}

impl fmt::Debug for DohSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DohSource")
            .field("servers", &self.servers)
            .field("timeout", &self.timeout)
            .field("allow_loopback", &self.allow_loopback)
            .field("ipv4_only", &self.ipv4_only)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl IpSource for DohSource {
    fn name(&self) -> &str {
        Self::NAME
    }

    /// Forgets the resolver's cached answers: they may not hold on the new network.
    fn network_changed(&self) {
        self.clear_cache();
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
                    return Err(ResolveError::Failed("DoH needs a tokio runtime".to_owned()));
                }
                // A trailing dot makes the name absolute: no search domains are tried.
                let name = format!("{}.", host.trim().trim_end_matches('.'));
                match tokio::time::timeout(self.timeout, self.resolver.lookup_ip(name)).await {
                    Err(_) => return Err(ResolveError::Timeout),
                    Ok(Ok(lookup)) => lookup.iter().collect(),
                    Ok(Err(e)) => match e.kind() {
                        ResolveErrorKind::Proto(p) => proto_outcome(p)?,
                        _ => return Err(ResolveError::Failed(format!("DoH: {e}"))),
                    },
                }
            }
        };
        Ok(crate::table::unique_answer(ips, AddrSource::Doh, |ip| {
            sanitise(ip, self.allow_loopback, self.ipv4_only)
        }))
    }
}

/// How a [`DohSource`] is set up.
///
/// The servers are given by IP: DoH cannot resolve its own server's name, and a system lookup
/// for it would reopen the hijack DoH is meant to avoid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DohConfig {
    /// The server's addresses, asked in order (a second one is a fallback).
    pub server_ips: Vec<IpAddr>,
    /// The endpoint as a URL, `https://<tls name>[:port][/path]`; when set it gives
    /// `tls_name`, `port` and `path` (443 and `/dns-query` when left out), replacing those
    /// fields.
    pub url: Option<String>,
    /// The HTTPS port. Default 443.
    pub port: u16,
    /// The name the server's certificate must carry (also sent as SNI).
    pub tls_name: String,
    /// The HTTP path of the DoH endpoint. Default `/dns-query`.
    pub path: String,
    /// PEM certificates to trust *instead of* the Mozilla roots: a private DoH server, or
    /// tests. `None` (default) trusts the Mozilla roots.
    pub ca_pem: Option<String>,
    /// The time limit of one lookup, in milliseconds. Default 2000 (Mars's per-source limit).
    pub timeout_ms: u64,
    /// Keep loopback answers (discarded by default, as for system DNS).
    pub allow_loopback: bool,
    /// Ask for A records only and discard IPv6 answers.
    pub ipv4_only: bool,
}

impl Default for DohConfig {
    fn default() -> Self {
        DohConfig {
            server_ips: Vec::new(),
            url: None,
            port: 443,
            tls_name: String::new(),
            path: "/dns-query".to_owned(),
            ca_pem: None,
            timeout_ms: 2000,
            allow_loopback: false,
            ipv4_only: false,
        }
    }
}

/// Why a [`DohConfig`] cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DohConfigError {
    /// `server_ips` is empty.
    #[error("no DoH server address configured")]
    NoServer,
    /// The port is 0.
    #[error("port 0 is not a usable DoH port")]
    PortZero,
    /// `timeout_ms` is 0.
    #[error("the DoH timeout must be above zero")]
    ZeroTimeout,
    /// `tls_name` is not a DNS name or IP address.
    #[error("{0:?} is not a valid TLS server name")]
    TlsName(String),
    /// `path` does not start with `/`.
    #[error("DoH path {0:?} must start with '/'")]
    Path(String),
    /// `url` is not `https://host[:port][/path]`.
    #[error("{0:?} is not an https:// URL with a host")]
    Url(String),
    /// `ca_pem` holds no readable certificate, or one rustls refuses as a trust anchor.
    #[error("unusable ca_pem: {0}")]
    Ca(String),
}

/// Splits `https://host[:port][/path]` into TLS name, port and path.
fn parse_url(url: &str) -> Result<(String, u16, String), DohConfigError> {
    let bad = || DohConfigError::Url(url.to_owned());
    let rest = url.trim().strip_prefix("https://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_owned()),
        None => (rest, "/dns-query".to_owned()),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(bad)?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    let port = match port {
        None => 443,
        Some(p) => p.parse::<u16>().map_err(|_| bad())?,
    };
    Ok((host.to_owned(), port, path))
}

/// The rustls client config: ring provider, Mozilla roots or the given CA certificates.
fn client_config(ca_pem: Option<&str>) -> Result<rustls::ClientConfig, DohConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(pem) => {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| DohConfigError::Ca(e.to_string()))?;
            if certs.is_empty() {
                return Err(DohConfigError::Ca("no certificate in PEM".to_owned()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| DohConfigError::Ca(e.to_string()))?;
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DohConfigError::Ca(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// What a hickory protocol error means for the caller: "exists without addresses" is an empty
/// answer, NXDOMAIN is [`ResolveError::NoSuchHost`], the rest are failures.
fn proto_outcome(e: &ProtoError) -> Result<Vec<IpAddr>, ResolveError> {
    match e.kind() {
        ProtoErrorKind::NoRecordsFound { response_code, .. } => match *response_code {
            ResponseCode::NoError => Ok(Vec::new()),
            ResponseCode::NXDomain => Err(ResolveError::NoSuchHost),
            code => Err(ResolveError::Failed(format!("DoH server answered {code}"))),
        },
        ProtoErrorKind::Timeout => Err(ResolveError::Timeout),
        _ => Err(ResolveError::Failed(format!("DoH: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DohConfig {
        DohConfig {
            server_ips: vec!["192.0.2.53".parse().unwrap()],
            tls_name: "doh.example".to_owned(),
            ..DohConfig::default()
        }
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        assert!(DohSource::new(config()).is_ok());
        type Edit = fn(&mut DohConfig);
        let cases: [(Edit, DohConfigError); 6] = [
            (|c| c.server_ips.clear(), DohConfigError::NoServer),
            (|c| c.port = 0, DohConfigError::PortZero),
            (|c| c.timeout_ms = 0, DohConfigError::ZeroTimeout),
            (
                |c| c.tls_name = "bad name".to_owned(),
                DohConfigError::TlsName("bad name".to_owned()),
            ),
            (
                |c| c.path = "dns-query".to_owned(),
                DohConfigError::Path("dns-query".to_owned()),
            ),
            (
                |c| c.ca_pem = Some("not a certificate".to_owned()),
                DohConfigError::Ca("no certificate in PEM".to_owned()),
            ),
        ];
        for (edit, want) in cases {
            let mut c = config();
            edit(&mut c);
            assert_eq!(DohSource::new(c).unwrap_err(), want);
        }
    }

    #[test]
    fn a_url_gives_name_port_and_path() {
        let cases = [
            (
                "https://dns.example/dns-query",
                ("dns.example", 443, "/dns-query"),
            ),
            ("https://dns.example:8443/q", ("dns.example", 8443, "/q")),
            ("https://dns.example", ("dns.example", 443, "/dns-query")),
            ("https://[2001:db8::53]:444/x", ("2001:db8::53", 444, "/x")),
        ];
        for (url, (name, port, path)) in cases {
            assert_eq!(
                parse_url(url),
                Ok((name.to_owned(), port, path.to_owned())),
                "{url}"
            );
        }
        for bad in [
            "http://dns.example/",
            "https://",
            "https://:443/",
            "https://a:x/",
            "https://u@h/",
        ] {
            assert_eq!(
                parse_url(bad),
                Err(DohConfigError::Url(bad.to_owned())),
                "{bad}"
            );
        }
        let mut c = config();
        c.tls_name = String::new();
        c.url = Some("https://dns.example:8443/q".to_owned());
        assert!(DohSource::new(c).is_ok());
    }

    #[test]
    fn config_reads_from_json_with_defaults_and_refuses_unknown_keys() {
        let c: DohConfig = serde_json::from_str(
            r#"{"server_ips": ["192.0.2.53"], "tls_name": "doh.example", "timeout_ms": 500}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            DohConfig {
                timeout_ms: 500,
                ..config()
            }
        );
        assert!(serde_json::from_str::<DohConfig>(r#"{"server": "https://x"}"#).is_err());
    }

    #[tokio::test]
    async fn literals_answer_without_asking_the_server() {
        // The configured server does not exist; a literal must not need it.
        let doh = DohSource::new(config()).unwrap();
        let got = doh
            .resolve("[2001:db8::1]", LinkPurpose::LongLink)
            .await
            .unwrap();
        assert_eq!(got[0].ip, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(got[0].source, AddrSource::Doh);
        assert!(doh
            .resolve("0.0.0.0", LinkPurpose::LongLink)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            doh.resolve(" ", LinkPurpose::LongLink).await,
            Err(ResolveError::NoSuchHost)
        );
    }
}
