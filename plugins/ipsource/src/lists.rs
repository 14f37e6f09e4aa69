//! The list sources: [`StaticList`], [`DynamicList`], [`BackupList`].

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use phobos_plugin_api::{AddrSource, IpSource, LinkPurpose, ResolveError, ResolvedAddr};
use serde::{Deserialize, Serialize};

use crate::table::{tag, AddrEntry, HostTable, WILDCARD_HOST};

/// Fixed addresses per host and purpose, tagged [`AddrSource::Debug`]: Mars's debug IPs.
///
/// Lookup order for a host and purpose (the first non-empty list wins): the purpose's table
/// for the host, the shared table for the host, the purpose's wildcard, the shared wildcard.
/// So a per-host debug IP beats a link-wide one, as in Mars.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaticList {
    config: StaticListConfig,
}

impl StaticList {
    /// The registry name of this source.
    pub const NAME: &'static str = "static";

    /// A source answering from `config`.
    pub fn new(config: StaticListConfig) -> Self {
        StaticList { config }
    }

    /// The addresses for `host` and `purpose`, untagged.
    pub fn lookup(&self, host: &str, purpose: LinkPurpose) -> &[AddrEntry] {
        let special = match purpose {
            LinkPurpose::LongLink => &self.config.long_link,
            LinkPurpose::ShortLink => &self.config.short_link,
        };
        let shared = &self.config.hosts;
        [
            special.exact(host),
            shared.exact(host),
            special.exact(WILDCARD_HOST),
            shared.exact(WILDCARD_HOST),
        ]
        .into_iter()
        .flatten()
        .next()
        .unwrap_or(&[])
    }
}

#[async_trait]
impl IpSource for StaticList {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn resolve(
        &self,
        host: &str,
        purpose: LinkPurpose,
    ) -> Result<Vec<ResolvedAddr>, ResolveError> {
        Ok(tag(self.lookup(host, purpose), AddrSource::Debug))
    }
}

/// How a [`StaticList`] is set up: three host tables, each a map from host name (or `"*"`) to
/// addresses (`"ip"` or `"ip:port"`).
///
/// ```
/// use phobos_ipsource::{StaticList, StaticListConfig};
/// use phobos_plugin_api::LinkPurpose;
///
/// let c: StaticListConfig = serde_json::from_str(r#"{
///     "hosts": { "a.example": ["10.0.0.1"] },
///     "long_link": { "*": ["10.0.0.2:8080"] }
/// }"#).unwrap();
/// let s = StaticList::new(c);
/// assert_eq!(s.lookup("a.example", LinkPurpose::LongLink)[0].to_string(), "10.0.0.1");
/// assert_eq!(s.lookup("b.example", LinkPurpose::LongLink)[0].to_string(), "10.0.0.2:8080");
/// assert!(s.lookup("b.example", LinkPurpose::ShortLink).is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StaticListConfig {
    /// Addresses for both purposes.
    pub hosts: HostTable,
    /// Addresses for long links only (checked before `hosts` for the same host).
    pub long_link: HostTable,
    /// Addresses for short links only (checked before `hosts` for the same host).
    pub short_link: HostTable,
}

/// Addresses the app replaces at runtime, tagged [`AddrSource::Dynamic`].
///
/// Clones share the same list: keep one clone as the plugin and hand another to the code that
/// learns new addresses (a server push, a config download).
#[derive(Clone, Debug, Default)]
pub struct DynamicList {
    table: Arc<RwLock<HostTable>>,
}

impl DynamicList {
    /// The registry name of this source.
    pub const NAME: &'static str = "dynamic";

    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// A list starting with `config`'s addresses.
    pub fn with_config(config: DynamicListConfig) -> Self {
        DynamicList {
            table: Arc::new(RwLock::new(config.hosts)),
        }
    }

    /// Replaces `host`'s addresses (`"*"` for every host without its own); an empty list
    /// removes the host.
    pub fn set(&self, host: &str, addrs: impl IntoIterator<Item = AddrEntry>) {
        self.write().set(host, addrs);
    }

    /// Replaces the whole list.
    pub fn replace(&self, table: HostTable) {
        *self.write() = table;
    }

    /// Removes every address.
    pub fn clear(&self) {
        self.replace(HostTable::new());
    }

    /// A copy of the current list.
    pub fn snapshot(&self) -> HostTable {
        self.read().clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HostTable> {
        // Writers only replace whole values; a poisoned lock still holds a valid table.
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HostTable> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl IpSource for DynamicList {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn resolve(
        &self,
        host: &str,
        _purpose: LinkPurpose,
    ) -> Result<Vec<ResolvedAddr>, ResolveError> {
        Ok(tag(self.read().lookup(host), AddrSource::Dynamic))
    }
}

/// The initial addresses of a [`DynamicList`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DynamicListConfig {
    /// Addresses per host (or `"*"`).
    pub hosts: HostTable,
}

/// Backup addresses shipped with the app, tagged [`AddrSource::Backup`].
///
/// The framework appends them after the DNS answers and never bans them. Unlike Mars, a host
/// without backups has none: system DNS answers are not stored as backups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupList {
    config: BackupListConfig,
}

impl BackupList {
    /// The registry name of this source.
    pub const NAME: &'static str = "backup";

    /// A source answering from `config`.
    pub fn new(config: BackupListConfig) -> Self {
        BackupList { config }
    }
}

#[async_trait]
impl IpSource for BackupList {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn resolve(
        &self,
        host: &str,
        _purpose: LinkPurpose,
    ) -> Result<Vec<ResolvedAddr>, ResolveError> {
        Ok(tag(self.config.hosts.lookup(host), AddrSource::Backup))
    }
}

/// How a [`BackupList`] is set up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupListConfig {
    /// Backup addresses per host (or `"*"`).
    pub hosts: HostTable,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(s: &str) -> AddrEntry {
        s.parse().unwrap()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn static_list_prefers_host_over_purpose_wildcard() {
        let mut config = StaticListConfig::default();
        config.hosts.set("a.example", [e("10.0.0.1:1")]);
        config.long_link.set("*", [e("10.0.0.2:2")]);
        config.long_link.set("b.example", [e("10.0.0.3:3")]);
        config.hosts.set("b.example", [e("10.0.0.4:4")]);
        config.hosts.set("*", [e("10.0.0.5:5")]);
        let s = StaticList::new(config);
        let long = LinkPurpose::LongLink;
        let short = LinkPurpose::ShortLink;
        assert_eq!(s.lookup("a.example", long), [e("10.0.0.1:1")]);
        assert_eq!(s.lookup("b.example", long), [e("10.0.0.3:3")]);
        assert_eq!(s.lookup("b.example", short), [e("10.0.0.4:4")]);
        assert_eq!(s.lookup("c.example", long), [e("10.0.0.2:2")]);
        assert_eq!(s.lookup("c.example", short), [e("10.0.0.5:5")]);
        let got = rt().block_on(s.resolve("a.example", long)).unwrap();
        assert_eq!(
            got,
            [ResolvedAddr {
                ip: "10.0.0.1".parse().unwrap(),
                port: Some(1),
                source: AddrSource::Debug
            }]
        );
    }

    #[test]
    fn dynamic_list_clones_share_updates() {
        let list = DynamicList::new();
        let handle = list.clone();
        let rt = rt();
        let long = LinkPurpose::LongLink;
        assert!(rt.block_on(list.resolve("a", long)).unwrap().is_empty());
        handle.set("a", [e("10.0.0.1"), e("10.0.0.2")]);
        let got = rt.block_on(list.resolve("A.", long)).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|a| a.source == AddrSource::Dynamic));
        handle.set("a", []);
        assert!(rt.block_on(list.resolve("a", long)).unwrap().is_empty());
        handle.set("*", [e("10.0.0.3")]);
        assert_eq!(list.snapshot().lookup("zzz"), [e("10.0.0.3")]);
        handle.clear();
        assert!(list.snapshot().is_empty());
        let configured = DynamicList::with_config(
            serde_json::from_str(r#"{"hosts": {"b": ["10.1.1.1:9"]}}"#).unwrap(),
        );
        assert_eq!(configured.snapshot().lookup("b"), [e("10.1.1.1:9")]);
    }

    #[test]
    fn backup_list_tags_backup() {
        let b = BackupList::new(serde_json::from_str(r#"{"hosts": {"a": ["10.0.0.7"]}}"#).unwrap());
        let got = rt()
            .block_on(b.resolve("a", LinkPurpose::ShortLink))
            .unwrap();
        assert_eq!(got[0].source, AddrSource::Backup);
        assert!(rt()
            .block_on(b.resolve("other", LinkPurpose::ShortLink))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn configs_refuse_unknown_keys() {
        assert!(serde_json::from_str::<StaticListConfig>(r#"{"host": {}}"#).is_err());
        assert!(serde_json::from_str::<DynamicListConfig>(r#"{"x": 1}"#).is_err());
        assert!(serde_json::from_str::<BackupListConfig>(r#"{"ips": []}"#).is_err());
    }
}
