//! Default [`IpSource`](phobos_plugin_api::IpSource) plugins: where addresses come from.
//!
//! | Source | Registry name | Tag ([`AddrSource`](phobos_plugin_api::AddrSource)) | What it answers |
//! |---|---|---|---|
//! | [`StaticList`] | `"static"` | `Debug` | Fixed addresses (with ports) per host, per purpose; Mars's debug IPs, used alone. |
//! | [`DynamicList`] | `"dynamic"` | `Dynamic` | A list the app (or a server push) replaces at runtime through a cloneable handle. |
//! | [`AppDns`] | `"app-dns"` | `NewDns` | The app's own resolver (typically HTTP-DNS), a callback run off the async runtime. |
//! | [`DohSource`] | `"doh"` | `Doh` | A DNS-over-HTTPS server (`hickory-resolver`, rustls with *ring*), same sanitising. |
//! | [`SystemDns`] | `"system-dns"` | `SystemDns` | The operating system's resolver, with Mars's sanitising. |
//! | [`BackupList`] | `"backup"` | `Backup` | Backup addresses shipped with the app. |
//!
//! The framework chains sources in Mars's precedence (debug alone; else app DNS, then system
//! DNS; backups appended) with a time limit each; an empty answer means "ask the next
//! source". The lists share one host-matching rule: host names compare case-insensitively
//! without a trailing dot, and the key `"*"` answers for every host that has no entry of its
//! own.
//!
//! # System DNS sanitising (spec §10.4)
//!
//! [`SystemDns`] discards `0.0.0.0`, `::`, `255.255.255.255` and, unless
//! [`SystemDnsConfig::allow_loopback`] is set, loopback addresses: a resolver answering those
//! is broken or hijacked. Tests on loopback therefore use a list source, or allow loopback.
//! [`DohSource`] applies the same filter (filtering DoH providers answer `0.0.0.0` for blocked
//! names). Both have a time limit of their own ([`SystemDnsConfig::timeout_ms`], 1 s as Mars's
//! `getaddrinfo`; [`DohConfig::timeout_ms`], 2 s) ending in
//! [`ResolveError::Timeout`](phobos_plugin_api::ResolveError::Timeout), and report a name that
//! does not exist as [`ResolveError::NoSuchHost`](phobos_plugin_api::ResolveError::NoSuchHost).
//!
//! # Why these crates
//!
//! DoH uses `hickory-resolver` 0.25 (features `tokio`, `https-ring`, no defaults): a maintained
//! resolver with RFC 8484 over HTTP/2, connection reuse, TTL caching and A/AAAA strategies,
//! built on the workspace's rustls 0.23 with the *ring* provider, so it adds no second crypto
//! stack (no aws-lc). 0.26 needs Rust 1.88, above the workspace's 1.85.
//!
//! # Example
//!
//! ```
//! use phobos_ipsource::{DynamicList, StaticList, StaticListConfig};
//! use phobos_plugin_api::{AddrSource, IpSource, LinkPurpose};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let config: StaticListConfig = serde_json::from_str(
//!     r#"{ "hosts": { "long.example": ["10.0.0.1:8080", "[fd00::1]:443"] } }"#,
//! )?;
//! let debug = StaticList::new(config);
//! let addrs = debug.resolve("LONG.example.", LinkPurpose::LongLink).await?;
//! assert_eq!(addrs.len(), 2);
//! assert_eq!(addrs[0].port, Some(8080));
//! assert_eq!(addrs[0].source, AddrSource::Debug);
//!
//! let pushed = DynamicList::new();
//! let handle = pushed.clone(); // given to the code that receives server pushes
//! handle.set("long.example", vec!["10.0.0.9".parse()?]);
//! assert_eq!(pushed.resolve("long.example", LinkPurpose::LongLink).await?[0].port, None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod app_dns;
mod doh;
mod lists;
mod system_dns;
mod table;

pub use app_dns::{AppDns, AppResolver};
pub use doh::{DohConfig, DohConfigError, DohSource};
pub use lists::{
    BackupList, BackupListConfig, DynamicList, DynamicListConfig, StaticList, StaticListConfig,
};
pub use system_dns::{SystemDns, SystemDnsConfig};
pub use table::{AddrEntry, AddrEntryError, HostTable, WILDCARD_HOST};
