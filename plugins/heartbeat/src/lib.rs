//! Heartbeat policies: Mars's fixed interval ([`FixedHeartbeat`]) and its smart heartbeat
//! ([`SmartHeartbeat`]).
//!
//! Both are [`HeartbeatPolicyFactory`](phobos_plugin_api::HeartbeatPolicyFactory)
//! implementations: the framework holds one factory and asks it for a fresh
//! [`HeartbeatPolicy`](phobos_plugin_api::HeartbeatPolicy) for every new long link.
//!
//! | Factory | Registry name | Behaviour |
//! |---|---|---|
//! | [`FixedHeartbeat`] | `"fixed"` | One interval, 210 s by default (Mars's `MinHeartInterval`, used everywhere but Android); 0 disables periodic heartbeats. |
//! | [`SmartHeartbeat`] | `"smart"` | Learns, per network label, the longest interval that keeps the link alive while the app is inactive (spec §12): 210 s → 580 s in 60 s steps after 5 good heartbeats each, back off 80 s after 2 failures, probe 20 s higher after 7 quiet days. Exports its learnt state as text. |
//!
//! Neither reads a clock for its decisions: monotonic time comes as `Instant` arguments, and
//! the smart heartbeat's wall time (the "modified" stamp of its learnt state, the 7-day probe
//! and import checks) comes from an injected [`WallClock`]; the default is [`SystemClock`],
//! tests use [`ManualClock`].
//!
//! What this crate does not do: send heartbeats, arm the reply timeout (8 s, or 5 s after a
//! late timer) or write the state file. The framework does that; the factories only answer
//! "how long until the next heartbeat" and learn from the outcomes they are told about.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use phobos_heartbeat::{FixedHeartbeat, FixedHeartbeatConfig};
//! use phobos_plugin_api::{HeartbeatContext, HeartbeatPolicyFactory};
//!
//! let factory = FixedHeartbeat::new(FixedHeartbeatConfig::default())?;
//! let ctx = HeartbeatContext::default();
//! let now = Instant::now();
//! let mut policy = factory.build(now, &ctx);
//! assert_eq!(policy.next_interval(now, &ctx), Some(Duration::from_secs(210)));
//! # Ok::<(), phobos_heartbeat::ConfigError>(())
//! ```

mod clock;
mod fixed;
mod smart;
mod state;

pub use clock::{ManualClock, SystemClock, WallClock};
pub use fixed::{FixedHeartbeat, FixedHeartbeatConfig};
pub use smart::{SmartHeartbeat, SmartHeartbeatConfig};
pub use state::{HeartType, LabelState, MAX_LABELS};

use std::time::Duration;

/// Mars's `MinHeartInterval`: the default fixed interval and the smart heartbeat's floor.
pub const MIN_HEART_INTERVAL: Duration = Duration::from_millis(210_000);
/// Mars's `MaxHeartInterval`; the smart heartbeat's effective ceiling is 20 s below it.
pub const MAX_HEART_INTERVAL: Duration = Duration::from_millis(600_000);
/// The longest interval [`FixedHeartbeat`] accepts: one hour.
pub const MAX_FIXED_INTERVAL: Duration = Duration::from_secs(3600);

/// Why a heartbeat configuration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An interval is above [`MAX_FIXED_INTERVAL`] or below one second (0 means "off" and is
    /// accepted).
    #[error("heartbeat interval of {ms} ms is outside 1 s ..= 1 h (0 disables)")]
    Interval {
        /// The configured value in milliseconds.
        ms: u64,
    },
}

/// An interval given as a [`Duration`], in whole milliseconds for [`interval_from_ms`]: zero
/// stays zero (off); anything else is at least 1 ms, so a sub-millisecond interval is
/// refused as too short rather than taken for "off".
fn ms_of(d: Duration) -> u64 {
    match d.is_zero() {
        true => 0,
        false => u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1),
    }
}

/// Checks a configured interval in milliseconds: `0` → `None` (off), else 1 s ..= 1 h.
fn interval_from_ms(ms: u64) -> Result<Option<Duration>, ConfigError> {
    let d = Duration::from_millis(ms);
    if ms == 0 {
        return Ok(None);
    }
    if d < Duration::from_secs(1) || d > MAX_FIXED_INTERVAL {
        return Err(ConfigError::Interval { ms });
    }
    Ok(Some(d))
}
