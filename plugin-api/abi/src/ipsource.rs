//! [`IpSource`] across the boundary: [`FfiIpSource`], [`export_ip_source`] and
//! [`import_ip_source`].
//!
//! `resolve` is async in the trait and one **synchronous** call across the boundary: the
//! plugin side runs the plugin's future to completion on the calling thread (`pollster`), the
//! host-side adapter's `async fn` makes that blocking call. The adapter therefore answers
//! `true` to [`IpSource::is_blocking`] (whatever the plugin would say: the call blocks either
//! way, and the method does not cross the boundary), and the driver runs its calls on a thread
//! of its own, not on its event loop. The plugin's future must not need a specific async
//! runtime.
//!
//! # Panics in the plugin
//!
//! As for an in-process source (`phobos_plugin_api::panics`): `resolve` returns
//! `ResolveError::Failed("ip source \"<name>\" panicked: …")`; the chain moves on to the next
//! source. Addresses whose source kind this ABI cannot carry are dropped.

use std::fmt;
use std::sync::Arc;

use abi_stable::sabi_trait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RBox, RResult, RStr, RString, RVec};
use phobos_plugin_api::panics::resolve_panicked;
use phobos_plugin_api::{IpSource, LinkPurpose, ResolveError, ResolvedAddr};

use crate::guard::{catch, Guarded};
use crate::types::{FfiLinkPurpose, FfiResolveError, FfiResolvedAddr};

/// The FFI-safe mirror of [`IpSource`].
#[sabi_trait]
pub trait FfiIpSource: Send + Sync + 'static {
    /// `IpSource::name`.
    fn name(&self) -> RStr<'_>;
    /// `IpSource::resolve`, run to completion (blocking).
    #[sabi(last_prefix_field)]
    fn resolve(
        &self,
        host: RStr<'_>,
        purpose: FfiLinkPurpose,
    ) -> RResult<RVec<FfiResolvedAddr>, FfiResolveError>;
    /// `IpSource::network_changed` (API 0.1.1). A library built before it is refused by
    /// abi_stable's layout check (its vtable has one entry fewer, docs/PLUGIN_ABI.md); the
    /// default body (nothing to forget) only runs for a vtable that skipped that check.
    fn network_changed(&self) {}
}

/// An owned, type-erased FFI IP source object.
pub type FfiIpSourceBox = FfiIpSource_TO<RBox<()>>;

/// Plugin side: wraps an IP source into an FFI object.
///
/// # Errors
///
/// The panic message if the source's `name()` panics.
pub fn export_ip_source<T: IpSource>(source: T) -> Result<FfiIpSourceBox, String> {
    let name = catch(|| RString::from(source.name()))?;
    Ok(FfiIpSource_TO::from_value(
        IpSourceExport {
            inner: Guarded::new(source),
            name,
        },
        TD_Opaque,
    ))
}

/// Host side: turns an FFI IP source into an `Arc<dyn IpSource>`.
pub fn import_ip_source(obj: FfiIpSourceBox, origin: &str) -> Arc<dyn IpSource> {
    let name = obj.name().as_str().to_owned();
    Arc::new(ImportedIpSource {
        obj,
        name,
        origin: origin.to_owned(),
    })
}

struct IpSourceExport<T> {
    inner: Guarded<T>,
    name: RString,
}

impl<T: IpSource> FfiIpSource for IpSourceExport<T> {
    fn name(&self) -> RStr<'_> {
        self.name.as_rstr()
    }

    fn resolve(
        &self,
        host: RStr<'_>,
        purpose: FfiLinkPurpose,
    ) -> RResult<RVec<FfiResolvedAddr>, FfiResolveError> {
        let purpose = LinkPurpose::from(purpose);
        match catch(|| pollster::block_on(self.inner.resolve(host.as_str(), purpose))) {
            Ok(Ok(addrs)) => RResult::ROk(
                addrs
                    .iter()
                    .filter_map(FfiResolvedAddr::from_addr)
                    .collect(),
            ),
            Ok(Err(e)) => RResult::RErr(e.into()),
            Err(msg) => RResult::RErr(resolve_panicked(&self.name, &msg).into()),
        }
    }

    fn network_changed(&self) {
        // A panic stays on the plugin's side of the boundary; there is nothing to report.
        let _ = catch(|| self.inner.network_changed());
    }
}

struct ImportedIpSource {
    obj: FfiIpSourceBox,
    name: String,
    origin: String,
}

impl fmt::Debug for ImportedIpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportedIpSource")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .finish()
    }
}

#[async_trait::async_trait]
impl IpSource for ImportedIpSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn resolve(
        &self,
        host: &str,
        purpose: LinkPurpose,
    ) -> Result<Vec<ResolvedAddr>, ResolveError> {
        // Blocks this thread until the plugin is done; see the module docs.
        match self.obj.resolve(host.into(), purpose.into()) {
            RResult::ROk(addrs) => Ok(addrs.into_iter().map(ResolvedAddr::from).collect()),
            RResult::RErr(e) => Err(e.into()),
        }
    }

    fn network_changed(&self) {
        self.obj.network_changed();
    }

    fn is_blocking(&self) -> bool {
        // `resolve` above holds its thread for the whole plugin call.
        true
    }
}

#[cfg(test)]
mod tests {
    use phobos_plugin_api::AddrSource;

    use super::*;

    #[derive(Debug)]
    struct StaticList;

    #[async_trait::async_trait]
    impl IpSource for StaticList {
        fn name(&self) -> &str {
            "static"
        }
        async fn resolve(
            &self,
            host: &str,
            purpose: LinkPurpose,
        ) -> Result<Vec<ResolvedAddr>, ResolveError> {
            match (host, purpose) {
                ("long.example", LinkPurpose::LongLink) => Ok(vec![
                    ResolvedAddr {
                        ip: "10.0.0.1".parse().unwrap(),
                        port: Some(8080),
                        source: AddrSource::Debug,
                    },
                    ResolvedAddr {
                        ip: "::1".parse().unwrap(),
                        port: None,
                        source: AddrSource::Backup,
                    },
                ]),
                ("long.example", LinkPurpose::ShortLink) => Ok(vec![]),
                ("slow.example", _) => Err(ResolveError::Timeout),
                ("gone.example", _) => Err(ResolveError::NoSuchHost),
                ("boom.example", _) => panic!("resolver exploded"),
                _ => Err(ResolveError::Failed("unknown".into())),
            }
        }
    }

    /// Counts `network_changed` calls; panics on the second one.
    #[derive(Debug, Default)]
    struct Caching {
        changes: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl IpSource for Caching {
        fn name(&self) -> &str {
            "caching"
        }
        async fn resolve(
            &self,
            _: &str,
            _: LinkPurpose,
        ) -> Result<Vec<ResolvedAddr>, ResolveError> {
            Ok(Vec::new())
        }
        fn network_changed(&self) {
            let n = self
                .changes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            assert!(n == 0, "second network change");
        }
    }

    #[test]
    fn network_changes_cross_the_boundary_and_a_panic_stays_behind_it() {
        let source = Arc::new(Caching::default());
        struct Shared(Arc<Caching>);
        impl fmt::Debug for Shared {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("Shared")
            }
        }
        #[async_trait::async_trait]
        impl IpSource for Shared {
            fn name(&self) -> &str {
                self.0.name()
            }
            async fn resolve(
                &self,
                host: &str,
                purpose: LinkPurpose,
            ) -> Result<Vec<ResolvedAddr>, ResolveError> {
                self.0.resolve(host, purpose).await
            }
            fn network_changed(&self) {
                self.0.network_changed();
            }
        }
        let imported = import_ip_source(export_ip_source(Shared(source.clone())).unwrap(), "test");
        imported.network_changed();
        assert_eq!(source.changes.load(std::sync::atomic::Ordering::SeqCst), 1);
        // The plugin panics: caught on its side, the host goes on.
        imported.network_changed();
        assert_eq!(source.changes.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn plugin_side_object_answers_like_the_plugin() {
        let obj = export_ip_source(StaticList).unwrap();
        assert_eq!(obj.name().as_str(), "static");
        let addrs = obj
            .resolve("long.example".into(), FfiLinkPurpose::LongLink)
            .unwrap();
        assert_eq!(addrs.len(), 2);
        assert_eq!(&addrs[0].octets[..4], &[10, 0, 0, 1]);
        assert_eq!(
            obj.resolve("gone.example".into(), FfiLinkPurpose::ShortLink),
            RResult::RErr(FfiResolveError::NoSuchHost)
        );
    }

    #[test]
    fn host_adapter_round_trips_every_outcome() {
        let loaded = import_ip_source(export_ip_source(StaticList).unwrap(), "test");
        assert_eq!(loaded.name(), "static");
        for host in ["long.example", "slow.example", "gone.example", "x.example"] {
            for purpose in [LinkPurpose::LongLink, LinkPurpose::ShortLink] {
                assert_eq!(
                    pollster::block_on(loaded.resolve(host, purpose)),
                    pollster::block_on(StaticList.resolve(host, purpose)),
                    "{host} {purpose:?}"
                );
            }
        }
    }

    #[test]
    fn an_imported_source_says_it_blocks() {
        assert!(!StaticList.is_blocking());
        let loaded = import_ip_source(export_ip_source(StaticList).unwrap(), "test");
        assert!(loaded.is_blocking());
    }

    #[test]
    fn a_panicking_resolve_is_a_failed_lookup() {
        let loaded = import_ip_source(export_ip_source(StaticList).unwrap(), "test");
        match pollster::block_on(loaded.resolve("boom.example", LinkPurpose::LongLink)) {
            Err(ResolveError::Failed(m)) => assert!(m.contains("resolver exploded"), "{m}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
