//! [`FixedHeartbeat`]: one interval for every link.

use std::time::{Duration, Instant};

use phobos_plugin_api::{HeartbeatContext, HeartbeatPolicy, HeartbeatPolicyFactory};
use serde::{Deserialize, Serialize};

use crate::{interval_from_ms, ConfigError, MIN_HEART_INTERVAL};

/// Heartbeats at one fixed interval: Mars's behaviour wherever its smart heartbeat is not used.
///
/// The interval runs from the last write, as the framework restarts it on every write; it
/// does not depend on the network, the app state or past outcomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedHeartbeat {
    interval: Option<Duration>,
}

impl FixedHeartbeat {
    /// The registry name of this factory.
    pub const NAME: &'static str = "fixed";

    /// A factory for `config`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Interval`] when `interval_ms` is neither 0 nor between 1 s and 1 h.
    pub fn new(config: FixedHeartbeatConfig) -> Result<Self, ConfigError> {
        let interval = match config.interval_ms {
            None => None,
            Some(ms) => interval_from_ms(ms)?,
        };
        Ok(FixedHeartbeat { interval })
    }

    /// Heartbeats every `interval` (`None` or zero: periodic heartbeats off).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_interval(interval: Option<Duration>) -> Result<Self, ConfigError> {
        let ms = interval.map_or(0, crate::ms_of);
        Self::new(FixedHeartbeatConfig {
            interval_ms: Some(ms),
        })
    }

    /// The interval handed out; `None` when periodic heartbeats are off.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }
}

impl Default for FixedHeartbeat {
    /// 210 s, Mars's `MinHeartInterval`.
    fn default() -> Self {
        FixedHeartbeat {
            interval: Some(MIN_HEART_INTERVAL),
        }
    }
}

impl HeartbeatPolicyFactory for FixedHeartbeat {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn build(&self, _now: Instant, _ctx: &HeartbeatContext) -> Box<dyn HeartbeatPolicy> {
        Box::new(FixedPolicy {
            interval: self.interval,
        })
    }
}

/// How a [`FixedHeartbeat`] is set up.
///
/// ```
/// use phobos_heartbeat::FixedHeartbeatConfig;
///
/// let c: FixedHeartbeatConfig = serde_json::from_str("{}").unwrap();
/// assert_eq!(c.interval_ms, Some(210_000));
/// let off: FixedHeartbeatConfig = serde_json::from_str(r#"{"interval_ms": 0}"#).unwrap();
/// assert_eq!(off.interval_ms, Some(0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FixedHeartbeatConfig {
    /// The interval in milliseconds; `0` or `None` turns periodic heartbeats off (the app may
    /// still trigger one). Otherwise between 1 s and 1 h. Default 210 000.
    pub interval_ms: Option<u64>,
}

impl Default for FixedHeartbeatConfig {
    fn default() -> Self {
        FixedHeartbeatConfig {
            interval_ms: Some(MIN_HEART_INTERVAL.as_millis() as u64),
        }
    }
}

/// The per-link policy of a [`FixedHeartbeat`].
#[derive(Debug)]
struct FixedPolicy {
    interval: Option<Duration>,
}

impl HeartbeatPolicy for FixedPolicy {
    fn next_interval(&mut self, _now: Instant, _ctx: &HeartbeatContext) -> Option<Duration> {
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use phobos_plugin_api::NetKind;

    use super::*;

    #[test]
    fn default_is_210_s_whatever_happens() {
        let f = FixedHeartbeat::default();
        assert_eq!(
            f,
            FixedHeartbeat::new(FixedHeartbeatConfig::default()).unwrap()
        );
        let t = Instant::now();
        for ctx in [
            HeartbeatContext::default(),
            HeartbeatContext {
                net: NetKind::Mobile,
                net_label: "mobile_1".into(),
                app_active: false,
            },
        ] {
            let mut p = f.build(t, &ctx);
            for i in 0..20 {
                assert_eq!(p.next_interval(t, &ctx), Some(Duration::from_secs(210)));
                match i % 3 {
                    0 => p.on_ack(t, Duration::from_millis(10)),
                    1 => p.on_fired_late(t, Duration::from_secs(900)),
                    _ => p.on_timeout(t),
                }
            }
        }
    }

    #[test]
    fn interval_is_configurable_and_zero_or_none_disables() {
        let t = Instant::now();
        let ctx = HeartbeatContext::default();
        let f = FixedHeartbeat::with_interval(Some(Duration::from_secs(45))).unwrap();
        assert_eq!(
            f.build(t, &ctx).next_interval(t, &ctx),
            Some(Duration::from_secs(45))
        );
        for off in [
            FixedHeartbeat::with_interval(None).unwrap(),
            FixedHeartbeat::with_interval(Some(Duration::ZERO)).unwrap(),
            FixedHeartbeat::new(FixedHeartbeatConfig { interval_ms: None }).unwrap(),
            FixedHeartbeat::new(FixedHeartbeatConfig {
                interval_ms: Some(0),
            })
            .unwrap(),
        ] {
            assert_eq!(off.interval(), None);
            assert_eq!(off.build(t, &ctx).next_interval(t, &ctx), None);
        }
    }

    #[test]
    fn out_of_range_intervals_are_refused() {
        for ms in [1, 999, 3_600_001, u64::MAX] {
            assert_eq!(
                FixedHeartbeat::new(FixedHeartbeatConfig {
                    interval_ms: Some(ms)
                }),
                Err(ConfigError::Interval { ms })
            );
        }
        assert!(FixedHeartbeat::new(FixedHeartbeatConfig {
            interval_ms: Some(3_600_000)
        })
        .is_ok());
    }

    #[test]
    fn config_refuses_unknown_keys() {
        assert!(serde_json::from_str::<FixedHeartbeatConfig>(r#"{"interval": 5}"#).is_err());
        let c: FixedHeartbeatConfig = serde_json::from_str(r#"{"interval_ms": 30000}"#).unwrap();
        assert_eq!(
            FixedHeartbeat::new(c).unwrap().interval(),
            Some(Duration::from_secs(30))
        );
    }
}
