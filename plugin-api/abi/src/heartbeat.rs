//! [`HeartbeatPolicyFactory`] and [`HeartbeatPolicy`] across the boundary:
//! [`FfiHeartbeatFactory`], [`FfiHeartbeatPolicy`], [`export_heartbeat`] and
//! [`import_heartbeat`].
//!
//! `Instant`s cross as offsets from a per-library anchor (see
//! [`FfiInstant`]): a plugin sees a consistent timeline in which
//! every difference between instants is exact.
//!
//! # Panics in the plugin
//!
//! As for an in-process plugin (`phobos_plugin_api::panics`, which defines these fallbacks):
//!
//! | Method | Result after a panic inside the plugin |
//! |---|---|
//! | `build` | a fallback policy with Mars's fixed `MinHeartInterval` (210 s), see [`FALLBACK_INTERVAL`] |
//! | `next_interval` | [`FALLBACK_INTERVAL`] |
//! | `on_*` hooks | ignored |
//! | `export_state` | `None` (nothing saved) |
//! | `import_state` | `false` (state ignored, as for unreadable state) |
//! | `name` | cannot panic: read once when the plugin is built |

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_stable::sabi_trait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RBox, ROption, RStr, RString};
use phobos_plugin_api::panics::{FallbackHeartbeat, FALLBACK_HEARTBEAT_INTERVAL};
use phobos_plugin_api::{HeartbeatContext, HeartbeatPolicy, HeartbeatPolicyFactory};

use crate::guard::{catch, Guarded};
use crate::types::{FfiDuration, FfiHeartbeatContext, FfiInstant};

/// The interval used when a heartbeat plugin panicked: Mars's `MinHeartInterval`
/// (`phobos_plugin_api::panics::FALLBACK_HEARTBEAT_INTERVAL`, shared with in-process plugins).
pub const FALLBACK_INTERVAL: Duration = FALLBACK_HEARTBEAT_INTERVAL;

/// The FFI-safe mirror of [`HeartbeatPolicyFactory`].
#[sabi_trait]
pub trait FfiHeartbeatFactory: Send + Sync + 'static {
    /// `HeartbeatPolicyFactory::name`.
    fn name(&self) -> RStr<'_>;
    /// `HeartbeatPolicyFactory::build`.
    fn build(&self, now: FfiInstant, ctx: FfiHeartbeatContext<'_>) -> FfiPolicyBox;
    /// `HeartbeatPolicyFactory::export_state`.
    fn export_state(&self) -> ROption<RString>;
    /// `HeartbeatPolicyFactory::import_state`.
    #[sabi(last_prefix_field)]
    fn import_state(&self, state: RStr<'_>) -> bool;
}

/// The FFI-safe mirror of [`HeartbeatPolicy`].
#[sabi_trait]
pub trait FfiHeartbeatPolicy: Send + 'static {
    /// `HeartbeatPolicy::next_interval`.
    fn next_interval(
        &mut self,
        now: FfiInstant,
        ctx: FfiHeartbeatContext<'_>,
    ) -> ROption<FfiDuration>;
    /// `HeartbeatPolicy::on_ack`.
    fn on_ack(&mut self, now: FfiInstant, rtt: FfiDuration);
    /// `HeartbeatPolicy::on_timeout`.
    fn on_timeout(&mut self, now: FfiInstant);
    /// `HeartbeatPolicy::on_fired_late`.
    fn on_fired_late(&mut self, now: FfiInstant, late: FfiDuration);
    /// `HeartbeatPolicy::on_network_change`.
    fn on_network_change(&mut self, now: FfiInstant, ctx: FfiHeartbeatContext<'_>);
    /// `HeartbeatPolicy::on_disconnect`.
    #[sabi(last_prefix_field)]
    fn on_disconnect(&mut self, now: FfiInstant);
}

/// An owned, type-erased FFI heartbeat factory.
pub type FfiHeartbeatBox = FfiHeartbeatFactory_TO<RBox<()>>;
/// An owned, type-erased FFI heartbeat policy.
pub type FfiPolicyBox = FfiHeartbeatPolicy_TO<RBox<()>>;

/// Plugin side: wraps a heartbeat factory into an FFI object.
///
/// # Errors
///
/// The panic message if the factory's `name()` panics.
pub fn export_heartbeat<T: HeartbeatPolicyFactory>(factory: T) -> Result<FfiHeartbeatBox, String> {
    let name = catch(|| RString::from(factory.name()))?;
    Ok(FfiHeartbeatFactory_TO::from_value(
        FactoryExport {
            inner: Guarded::new(factory),
            name,
        },
        TD_Opaque,
    ))
}

/// Host side: turns an FFI heartbeat factory into an `Arc<dyn HeartbeatPolicyFactory>`.
pub fn import_heartbeat(obj: FfiHeartbeatBox, origin: &str) -> Arc<dyn HeartbeatPolicyFactory> {
    let name = obj.name().as_str().to_owned();
    Arc::new(ImportedFactory {
        obj,
        name,
        origin: origin.to_owned(),
    })
}

struct FactoryExport<T> {
    inner: Guarded<T>,
    name: RString,
}

impl<T: HeartbeatPolicyFactory> FfiHeartbeatFactory for FactoryExport<T> {
    fn name(&self) -> RStr<'_> {
        self.name.as_rstr()
    }

    fn build(&self, now: FfiInstant, ctx: FfiHeartbeatContext<'_>) -> FfiPolicyBox {
        let ctx = HeartbeatContext::from(ctx);
        let inner = catch(|| self.inner.build(now.into(), &ctx))
            .unwrap_or_else(|_| Box::new(FallbackHeartbeat));
        FfiHeartbeatPolicy_TO::from_value(
            PolicyExport {
                inner: Guarded::new(inner),
            },
            TD_Opaque,
        )
    }

    fn export_state(&self) -> ROption<RString> {
        catch(|| self.inner.export_state())
            .ok()
            .flatten()
            .map(RString::from)
            .into()
    }

    fn import_state(&self, state: RStr<'_>) -> bool {
        catch(|| self.inner.import_state(state.as_str())).unwrap_or(false)
    }
}

struct PolicyExport {
    inner: Guarded<Box<dyn HeartbeatPolicy>>,
}

impl FfiHeartbeatPolicy for PolicyExport {
    fn next_interval(
        &mut self,
        now: FfiInstant,
        ctx: FfiHeartbeatContext<'_>,
    ) -> ROption<FfiDuration> {
        let ctx = HeartbeatContext::from(ctx);
        let inner = &mut self.inner;
        catch(|| inner.next_interval(now.into(), &ctx))
            .unwrap_or(Some(FALLBACK_INTERVAL))
            .map(FfiDuration::from)
            .into()
    }

    fn on_ack(&mut self, now: FfiInstant, rtt: FfiDuration) {
        let inner = &mut self.inner;
        let _ = catch(|| inner.on_ack(now.into(), rtt.into()));
    }

    fn on_timeout(&mut self, now: FfiInstant) {
        let inner = &mut self.inner;
        let _ = catch(|| inner.on_timeout(now.into()));
    }

    fn on_fired_late(&mut self, now: FfiInstant, late: FfiDuration) {
        let inner = &mut self.inner;
        let _ = catch(|| inner.on_fired_late(now.into(), late.into()));
    }

    fn on_network_change(&mut self, now: FfiInstant, ctx: FfiHeartbeatContext<'_>) {
        let ctx = HeartbeatContext::from(ctx);
        let inner = &mut self.inner;
        let _ = catch(|| inner.on_network_change(now.into(), &ctx));
    }

    fn on_disconnect(&mut self, now: FfiInstant) {
        let inner = &mut self.inner;
        let _ = catch(|| inner.on_disconnect(now.into()));
    }
}

struct ImportedFactory {
    obj: FfiHeartbeatBox,
    name: String,
    origin: String,
}

impl fmt::Debug for ImportedFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportedHeartbeatFactory")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .finish()
    }
}

impl HeartbeatPolicyFactory for ImportedFactory {
    fn name(&self) -> &str {
        &self.name
    }

    fn build(&self, now: Instant, ctx: &HeartbeatContext) -> Box<dyn HeartbeatPolicy> {
        Box::new(ImportedPolicy {
            obj: self.obj.build(now.into(), ctx.into()),
        })
    }

    fn export_state(&self) -> Option<String> {
        self.obj.export_state().into_option().map(String::from)
    }

    fn import_state(&self, state: &str) -> bool {
        self.obj.import_state(state.into())
    }
}

struct ImportedPolicy {
    obj: FfiPolicyBox,
}

impl fmt::Debug for ImportedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportedHeartbeatPolicy")
            .finish_non_exhaustive()
    }
}

impl HeartbeatPolicy for ImportedPolicy {
    fn next_interval(&mut self, now: Instant, ctx: &HeartbeatContext) -> Option<Duration> {
        self.obj
            .next_interval(now.into(), ctx.into())
            .into_option()
            .map(Duration::from)
    }

    fn on_ack(&mut self, now: Instant, rtt: Duration) {
        self.obj.on_ack(now.into(), rtt.into());
    }

    fn on_timeout(&mut self, now: Instant) {
        self.obj.on_timeout(now.into());
    }

    fn on_fired_late(&mut self, now: Instant, late: Duration) {
        self.obj.on_fired_late(now.into(), late.into());
    }

    fn on_network_change(&mut self, now: Instant, ctx: &HeartbeatContext) {
        self.obj.on_network_change(now.into(), ctx.into());
    }

    fn on_disconnect(&mut self, now: Instant) {
        self.obj.on_disconnect(now.into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use phobos_plugin_api::NetKind;

    use super::*;

    /// Records every call with its time relative to the link's connect time, and learns a
    /// per-label interval that survives export/import.
    #[derive(Debug, Default)]
    struct Recording {
        learnt: Mutex<Option<u64>>,
        panic_on_build: bool,
    }

    #[derive(Debug)]
    struct RecordingPolicy {
        start: Instant,
        secs: u64,
        log: Vec<String>,
    }

    impl HeartbeatPolicyFactory for Recording {
        fn name(&self) -> &str {
            "recording"
        }
        fn build(&self, now: Instant, ctx: &HeartbeatContext) -> Box<dyn HeartbeatPolicy> {
            assert!(!self.panic_on_build, "build exploded");
            let secs = self.learnt.lock().unwrap().unwrap_or(60);
            Box::new(RecordingPolicy {
                start: now,
                secs,
                log: vec![format!("build {:?} {}", ctx.net, ctx.net_label)],
            })
        }
        fn export_state(&self) -> Option<String> {
            self.learnt.lock().unwrap().map(|s| s.to_string())
        }
        fn import_state(&self, state: &str) -> bool {
            match state.parse() {
                Ok(s) => {
                    *self.learnt.lock().unwrap() = Some(s);
                    true
                }
                Err(_) => false,
            }
        }
    }

    impl HeartbeatPolicy for RecordingPolicy {
        fn next_interval(&mut self, now: Instant, ctx: &HeartbeatContext) -> Option<Duration> {
            let at = now - self.start;
            self.log.push(format!("next {at:?} {}", ctx.app_active));
            if at > Duration::from_secs(3600) {
                panic!("policy exploded");
            }
            ctx.app_active.then(|| Duration::from_secs(self.secs) + at)
        }
        fn on_ack(&mut self, now: Instant, rtt: Duration) {
            self.secs += 1;
            self.log.push(format!("ack {:?} {rtt:?}", now - self.start));
        }
        fn on_fired_late(&mut self, _now: Instant, late: Duration) {
            self.secs += late.as_secs();
        }
        fn on_network_change(&mut self, _now: Instant, ctx: &HeartbeatContext) {
            if ctx.net == NetKind::Mobile {
                self.secs = 30;
            }
        }
        fn on_disconnect(&mut self, _now: Instant) {
            panic!("disconnect exploded");
        }
    }

    fn drive(factory: &dyn HeartbeatPolicyFactory) -> Vec<Option<Duration>> {
        let t0 = Instant::now();
        let ctx = HeartbeatContext::default();
        let mut p = factory.build(t0, &ctx);
        let mut seen = vec![p.next_interval(t0 + Duration::from_secs(1), &ctx)];
        p.on_ack(t0 + Duration::from_secs(2), Duration::from_millis(80));
        p.on_fired_late(t0 + Duration::from_secs(3), Duration::from_secs(4));
        seen.push(p.next_interval(t0 + Duration::from_secs(5), &ctx));
        let mobile = HeartbeatContext {
            net: NetKind::Mobile,
            net_label: "mobile_x".into(),
            app_active: false,
        };
        p.on_network_change(t0 + Duration::from_secs(6), &mobile);
        seen.push(p.next_interval(t0 + Duration::from_secs(7), &mobile));
        seen.push(p.next_interval(
            t0 + Duration::from_secs(8),
            &HeartbeatContext {
                app_active: true,
                ..mobile
            },
        ));
        p.on_timeout(t0 + Duration::from_secs(9));
        seen
    }

    #[test]
    fn plugin_side_object_answers_like_the_plugin() {
        let obj = export_heartbeat(Recording::default()).unwrap();
        assert_eq!(obj.name().as_str(), "recording");
        let t0 = FfiInstant::from(Instant::now());
        let ctx = HeartbeatContext::default();
        let mut p = obj.build(t0, (&ctx).into());
        let later = FfiInstant {
            nanos: t0.nanos + 2_000_000_000,
        };
        assert_eq!(
            p.next_interval(later, (&ctx).into()),
            ROption::RSome(Duration::from_secs(62).into())
        );
        assert!(obj.import_state("90".into()));
        assert_eq!(obj.export_state(), ROption::RSome("90".into()));
    }

    #[test]
    fn host_adapter_round_trips_policies_and_state() {
        let direct = Recording::default();
        let loaded = import_heartbeat(export_heartbeat(Recording::default()).unwrap(), "test");
        assert_eq!(loaded.name(), "recording");
        assert_eq!(drive(loaded.as_ref()), drive(&direct));
        assert_eq!(loaded.export_state(), None);
        assert!(!loaded.import_state("garbage"));
        assert!(loaded.import_state("120"));
        assert!(direct.import_state("120"));
        assert_eq!(loaded.export_state().as_deref(), Some("120"));
        assert_eq!(drive(loaded.as_ref()), drive(&direct));
    }

    #[test]
    fn panics_become_the_documented_fallbacks() {
        let loaded = import_heartbeat(export_heartbeat(Recording::default()).unwrap(), "test");
        let t0 = Instant::now();
        let ctx = HeartbeatContext::default();
        let mut p = loaded.build(t0, &ctx);
        assert_eq!(
            p.next_interval(t0 + Duration::from_secs(7200), &ctx),
            Some(FALLBACK_INTERVAL)
        );
        p.on_disconnect(t0);

        let broken = import_heartbeat(
            export_heartbeat(Recording {
                panic_on_build: true,
                ..Recording::default()
            })
            .unwrap(),
            "test",
        );
        let mut p = broken.build(t0, &ctx);
        assert_eq!(p.next_interval(t0, &ctx), Some(FALLBACK_INTERVAL));
    }
}
