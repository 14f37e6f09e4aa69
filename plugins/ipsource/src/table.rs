//! [`AddrEntry`] and [`HostTable`]: the address lists behind the list sources.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use phobos_plugin_api::{AddrSource, ResolvedAddr};
use serde::{Deserialize, Serialize};

/// The host key that answers for every host without an entry of its own.
pub const WILDCARD_HOST: &str = "*";

/// One configured address: an IP and, optionally, a port.
///
/// Written as `"10.0.0.1"`, `"10.0.0.1:8080"`, `"fd00::1"` or `"[fd00::1]:8080"` (that is also
/// its serde form). Port 0 is refused.
///
/// ```
/// use phobos_ipsource::AddrEntry;
///
/// let a: AddrEntry = "[fd00::1]:443".parse().unwrap();
/// assert_eq!(a.port, Some(443));
/// assert_eq!(a.to_string(), "[fd00::1]:443");
/// assert!("10.0.0.1:0".parse::<AddrEntry>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AddrEntry {
    /// The address.
    pub ip: IpAddr,
    /// The port, when fixed; otherwise the link's configured ports apply.
    pub port: Option<u16>,
}

impl AddrEntry {
    /// An entry without a port.
    pub fn new(ip: IpAddr) -> Self {
        AddrEntry { ip, port: None }
    }

    /// An entry with a port.
    ///
    /// # Errors
    ///
    /// [`AddrEntryError::PortZero`] for port 0.
    pub fn with_port(ip: IpAddr, port: u16) -> Result<Self, AddrEntryError> {
        if port == 0 {
            return Err(AddrEntryError::PortZero);
        }
        Ok(AddrEntry {
            ip,
            port: Some(port),
        })
    }

    /// The entry tagged with `source`.
    pub fn tagged(self, source: AddrSource) -> ResolvedAddr {
        ResolvedAddr {
            ip: self.ip,
            port: self.port,
            source,
        }
    }
}

impl From<IpAddr> for AddrEntry {
    fn from(ip: IpAddr) -> Self {
        AddrEntry::new(ip)
    }
}

impl FromStr for AddrEntry {
    type Err = AddrEntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(AddrEntry::new(ip));
        }
        if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            if let Ok(ip) = inner.parse::<IpAddr>() {
                return Ok(AddrEntry::new(ip));
            }
        }
        match s.parse::<SocketAddr>() {
            Ok(sa) => AddrEntry::with_port(sa.ip(), sa.port()),
            Err(_) => Err(AddrEntryError::Syntax(s.to_owned())),
        }
    }
}

impl TryFrom<String> for AddrEntry {
    type Error = AddrEntryError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<AddrEntry> for String {
    fn from(a: AddrEntry) -> Self {
        a.to_string()
    }
}

impl fmt::Display for AddrEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => fmt::Display::fmt(&SocketAddr::new(self.ip, port), f),
            None => fmt::Display::fmt(&self.ip, f),
        }
    }
}

/// Why an address entry could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrEntryError {
    /// Not an IP address or `ip:port`.
    #[error("{0:?} is not an IP address or ip:port")]
    Syntax(String),
    /// Port 0 cannot be connected to.
    #[error("port 0 is not a usable port")]
    PortZero,
}

/// Addresses per host name, with the [`WILDCARD_HOST`] fallback.
///
/// Host names are stored and looked up lower-cased without a trailing dot. Each host's list
/// keeps its order and has duplicates removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    from = "BTreeMap<String, Vec<AddrEntry>>",
    into = "BTreeMap<String, Vec<AddrEntry>>"
)]
pub struct HostTable(BTreeMap<String, Vec<AddrEntry>>);

impl HostTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces `host`'s list (an empty list removes the host).
    pub fn set(&mut self, host: &str, addrs: impl IntoIterator<Item = AddrEntry>) {
        let key = normalize(host);
        let list = dedup(addrs);
        if list.is_empty() {
            self.0.remove(&key);
        } else {
            self.0.insert(key, list);
        }
    }

    /// `host`'s own list, if it has one (no wildcard fallback).
    pub fn exact(&self, host: &str) -> Option<&[AddrEntry]> {
        self.0.get(&normalize(host)).map(Vec::as_slice)
    }

    /// `host`'s list, or the wildcard list, or nothing.
    pub fn lookup(&self, host: &str) -> &[AddrEntry] {
        self.exact(host)
            .or_else(|| self.exact(WILDCARD_HOST))
            .unwrap_or(&[])
    }

    /// Whether the table has no hosts.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<BTreeMap<String, Vec<AddrEntry>>> for HostTable {
    fn from(map: BTreeMap<String, Vec<AddrEntry>>) -> Self {
        let mut t = HostTable::new();
        for (host, addrs) in map {
            t.set(&host, addrs);
        }
        t
    }
}

impl From<HostTable> for BTreeMap<String, Vec<AddrEntry>> {
    fn from(t: HostTable) -> Self {
        t.0
    }
}

/// The resolver answer `ips` that `keep` accepts, each once in its first place, tagged with
/// `source` (no port: the link's ports apply).
///
/// Design: by a set, not a scan of those kept: an answer of 80,000 addresses took 2.9 s to
/// deduplicate by scanning, on the driver's runtime and beyond a cancel's reach.
pub(crate) fn unique_answer(
    ips: Vec<IpAddr>,
    source: AddrSource,
    keep: impl Fn(IpAddr) -> bool,
) -> Vec<ResolvedAddr> {
    let mut seen = std::collections::HashSet::with_capacity(ips.len());
    ips.into_iter()
        .filter(|&ip| keep(ip) && seen.insert(ip))
        .map(|ip| ResolvedAddr {
            ip,
            port: None,
            source,
        })
        .collect()
}

/// Tags `entries` with `source`.
pub(crate) fn tag(entries: &[AddrEntry], source: AddrSource) -> Vec<ResolvedAddr> {
    entries.iter().map(|e| e.tagged(source)).collect()
}

fn normalize(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The addresses in their first order, each once.
///
/// Design: by a set, not a scan of those kept: a pushed list of 80,000 addresses took 2.5 s
/// to deduplicate by scanning (the same holds for the resolvers' answers).
fn dedup(addrs: impl IntoIterator<Item = AddrEntry>) -> Vec<AddrEntry> {
    let mut seen = std::collections::HashSet::new();
    addrs.into_iter().filter(|a| seen.insert(*a)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(s: &str) -> AddrEntry {
        s.parse().unwrap()
    }

    #[test]
    fn entries_parse_and_print_in_all_forms() {
        for (s, port) in [
            ("10.0.0.1", None),
            ("10.0.0.1:80", Some(80)),
            ("fd00::1", None),
            ("[fd00::1]", None),
            ("[fd00::1]:443", Some(443)),
            (" 1.2.3.4 ", None),
        ] {
            assert_eq!(e(s).port, port, "{s}");
        }
        assert_eq!(e("[fd00::1]").to_string(), "fd00::1");
        assert_eq!(e("10.0.0.1:80").to_string(), "10.0.0.1:80");
        for bad in [
            "",
            "host.example",
            "10.0.0.1:",
            "10.0.0.1:99999",
            "[fd00::1]:x",
        ] {
            assert!(matches!(
                bad.parse::<AddrEntry>(),
                Err(AddrEntryError::Syntax(_))
            ));
        }
        assert_eq!(
            "10.0.0.1:0".parse::<AddrEntry>(),
            Err(AddrEntryError::PortZero)
        );
    }

    #[test]
    fn lookup_is_case_insensitive_with_wildcard_fallback() {
        let mut t = HostTable::new();
        t.set(
            "Long.Example.",
            [e("10.0.0.1"), e("10.0.0.1"), e("10.0.0.2:1")],
        );
        t.set("*", [e("10.9.9.9")]);
        assert_eq!(t.lookup("long.example"), [e("10.0.0.1"), e("10.0.0.2:1")]);
        assert_eq!(t.lookup("other"), [e("10.9.9.9")]);
        assert_eq!(t.exact("other"), None);
        t.set("*", []);
        assert!(t.lookup("other").is_empty());
        assert!(!t.is_empty());
    }

    #[test]
    fn serde_form_is_a_map_of_strings() {
        let t: HostTable =
            serde_json::from_str(r#"{"A.example": ["10.0.0.1:80", "fd00::2"]}"#).unwrap();
        assert_eq!(t.lookup("a.example"), [e("10.0.0.1:80"), e("fd00::2")]);
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"a.example":["10.0.0.1:80","fd00::2"]}"#
        );
        assert!(serde_json::from_str::<HostTable>(r#"{"a": ["nope"]}"#).is_err());
    }
}
