//! Heartbeat intervals: [`HeartbeatPolicyFactory`] and [`HeartbeatPolicy`].
//!
//! The factory is shared (`Arc<dyn HeartbeatPolicyFactory>`) and may keep state that outlives
//! a connection, such as Mars's smart heartbeat's learnt interval per network label. The core
//! asks it for a fresh [`HeartbeatPolicy`] on every new long link and then calls the policy
//! inline: it is pure and must not block.
//!
//! The core owns the timers: after each heartbeat is sent it asks
//! [`HeartbeatPolicy::next_interval`] for the delay to the next one, restarts that delay on
//! every write, and reports the outcome of each heartbeat through the hooks.

use std::fmt;
use std::time::{Duration, Instant};

use crate::types::NetKind;

/// Builds per-link heartbeat policies and keeps their shared, persistable state.
pub trait HeartbeatPolicyFactory: Send + Sync + fmt::Debug + 'static {
    /// A short name for logs (`"fixed"`, `"smart"`).
    fn name(&self) -> &str;

    /// A policy for a link that connected at `now`.
    fn build(&self, now: Instant, ctx: &HeartbeatContext) -> Box<dyn HeartbeatPolicy>;

    /// The state worth keeping across restarts, as text the factory can read back. The driver
    /// asks for it after every answered heartbeat, when a link goes down and at shutdown, and
    /// writes it to a file (off its loop) when it changed; the call itself runs on the
    /// driver's loop, so it should be cheap. The default keeps nothing.
    fn export_state(&self) -> Option<String> {
        None
    }

    /// Restores state saved by [`export_state`](Self::export_state). Unreadable state is
    /// ignored (returns `false`) so a corrupt file never stops a client.
    fn import_state(&self, _state: &str) -> bool {
        false
    }
}

/// Decides the interval between heartbeats on one link.
pub trait HeartbeatPolicy: Send + fmt::Debug {
    /// The delay from the last write to the next heartbeat. `None` disables periodic
    /// heartbeats for now (the app may still trigger one): the core asks again every 210 s
    /// without sending anything, and resumes them when an interval comes back.
    fn next_interval(&mut self, now: Instant, ctx: &HeartbeatContext) -> Option<Duration>;

    /// A heartbeat was answered after `rtt`.
    fn on_ack(&mut self, _now: Instant, _rtt: Duration) {}

    /// A heartbeat went unanswered; the link is being dropped.
    fn on_timeout(&mut self, _now: Instant) {}

    /// The interval timer fired `late` after its nominal deadline (zero when on time).
    /// Called at every firing, so a policy can compare on-time and late firings (device
    /// sleep; Mars's doze detection); not for the heartbeat sent right after connect or
    /// one the app triggered, which no timer fired.
    fn on_fired_late(&mut self, _now: Instant, _late: Duration) {}

    /// The network changed while the link was up.
    fn on_network_change(&mut self, _now: Instant, _ctx: &HeartbeatContext) {}

    /// The link closed for another reason.
    fn on_disconnect(&mut self, _now: Instant) {}
}

/// What a policy may base its decision on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatContext {
    /// The network kind.
    pub net: NetKind,
    /// The network label (`wifi_<ssid>`, `mobile_<isp>`, `default`), keying learnt state.
    pub net_label: String,
    /// Whether the app is active (foreground, or background for less than 10 minutes).
    pub app_active: bool,
}

impl Default for HeartbeatContext {
    fn default() -> Self {
        HeartbeatContext {
            net: NetKind::Wifi,
            net_label: "default".to_owned(),
            app_active: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(dead_code)]
    fn object_safe(_: Box<dyn HeartbeatPolicyFactory>, _: Box<dyn HeartbeatPolicy>) {}
}
