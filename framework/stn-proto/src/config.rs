//! [`Config`]: plugins, links and every tunable number, with Mars's defaults.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use phobos_plugin_api::{
    AuthCheck, CmdId, HeartbeatContext, HeartbeatPolicy, HeartbeatPolicyFactory, IpPort,
    PacketCodec, TaskId,
};

use crate::io::LinkName;

/// Everything an [`Engine`](crate::Engine) is built from. Built with [`Config::builder`].
///
/// ```
/// # use std::sync::Arc;
/// # use phobos_stn_proto::{Config, LinkConfig};
/// # fn demo(codec: Arc<dyn phobos_plugin_api::PacketCodec>) -> Result<(), phobos_stn_proto::ConfigError> {
/// let config = Config::builder(codec)
///     .link(LinkConfig::new("default-longlink").hosts(["long.example.com"]).ports([8080, 443]))
///     .seed(7)
///     .build()?;
/// assert_eq!(config.timing.retry_pause.as_millis(), 1000);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    /// Frames the long links.
    pub codec: Arc<dyn PacketCodec>,
    /// Auth gate and identify frames; `None` means every task counts as authenticated and no
    /// identify frame is sent.
    pub auth: Option<Arc<dyn AuthCheck>>,
    /// Builds one heartbeat policy per connection (default: [`FixedHeartbeat`], 210 s).
    pub heartbeat: Arc<dyn HeartbeatPolicyFactory>,
    /// Judges response bodies before a task ends with them (Mars's `Buf2Resp` verdict);
    /// `None` accepts every response.
    pub response_check: Option<Arc<dyn ResponseCheck>>,
    /// The long links, in order; the first one marked `main` (or the first) is the main link.
    pub links: Vec<LinkConfig>,
    /// Seeds the engine's random generator (reconnect jitter), so runs replay exactly.
    pub seed: u64,
    /// Whether the user is logged in at start (Mars's account info). Changes the automatic
    /// reconnect intervals (§7.9); see [`Engine::set_account`](crate::Engine::set_account).
    pub has_account: bool,
    /// Every duration the core uses.
    pub timing: Timing,
    /// The anti-avalanche limits (§13).
    pub limits: Limits,
    /// How a connect cycle orders and races its addresses (default
    /// [`ConnectProfile::Phobos`]).
    pub connect_profile: ConnectProfile,
    /// The numbers of the [`ConnectProfile::Phobos`] race (stagger bounds, concurrency).
    pub racing: Racing,
    /// How the [`ConnectProfile::Phobos`] profile recovers from a link that breaks or stalls
    /// (resend window, reconnect after progress, stall probe).
    pub recovery: Recovery,
    /// The IP source chain, in order (see [`SourceSpec`]). Empty: one primary source limited
    /// by [`Timing::resolve_timeout`].
    pub ip_sources: Vec<SourceSpec>,
    /// Short-link settings (default port, response limits).
    pub short_link: crate::ShortLinkConfig,
}

impl Config {
    /// Starts a config with the given codec and Mars's defaults for everything else.
    pub fn builder(codec: Arc<dyn PacketCodec>) -> ConfigBuilder {
        ConfigBuilder {
            config: Config {
                codec,
                auth: None,
                heartbeat: Arc::new(FixedHeartbeat::default()),
                response_check: None,
                links: Vec::new(),
                seed: 0,
                has_account: true,
                timing: Timing::default(),
                limits: Limits::default(),
                connect_profile: ConnectProfile::default(),
                racing: Racing::default(),
                recovery: Recovery::default(),
                ip_sources: Vec::new(),
                short_link: crate::ShortLinkConfig::default(),
            },
        }
    }

    /// Checks the config for contradictions.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.links.is_empty() {
            return Err(ConfigError::NoLinks);
        }
        for (i, link) in self.links.iter().enumerate() {
            if self.links[..i].iter().any(|l| l.name == link.name) {
                return Err(ConfigError::DuplicateLink(link.name.to_string()));
            }
            if link.addrs.is_empty() && link.hosts.is_empty() {
                return Err(ConfigError::NoAddress(link.name.to_string()));
            }
            if let Some(bad) = link
                .addrs
                .iter()
                .find(|a| !crate::engine::ranking::dialable(a))
            {
                return Err(ConfigError::Undialable(link.name.to_string(), *bad));
            }
            if !link.hosts.is_empty() && link.ports.is_empty() {
                return Err(ConfigError::NoPorts(link.name.to_string()));
            }
            if link.max_addrs == 0 {
                return Err(ConfigError::Zero("max_addrs"));
            }
        }
        let short = &self.short_link;
        if short.max_addrs == 0 {
            return Err(ConfigError::Zero("short_link.max_addrs"));
        }
        if short.max_head_len == 0 {
            return Err(ConfigError::Zero("short_link.max_head_len"));
        }
        if short.max_response_len == 0 {
            return Err(ConfigError::Zero("short_link.max_response_len"));
        }
        if short.max_running == 0 {
            return Err(ConfigError::Zero("short_link.max_running"));
        }
        if let Some((v4, v6)) = short.family_connect_timeouts {
            if v4.is_zero() || v6.is_zero() {
                return Err(ConfigError::Zero("short_link.family_connect_timeouts"));
            }
        }
        let t = &self.timing;
        let nonzero = [
            (t.connect_timeout, "connect_timeout"),
            (t.race_interval, "race_interval"),
            (t.resolve_timeout, "resolve_timeout"),
            (t.heartbeat_reply_timeout, "heartbeat_reply_timeout"),
            (
                t.late_heartbeat_reply_timeout,
                "late_heartbeat_reply_timeout",
            ),
            (t.signal_keep_period, "signal_keep_period"),
            (t.auth_retry, "auth_retry"),
            (t.auth_limit, "auth_limit"),
            (t.timing_sync.0, "timing_sync"),
            (t.timing_sync.1, "timing_sync"),
            (t.timing_sync.2, "timing_sync"),
        ];
        for (d, name) in nonzero {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if t.race_max_concurrent == 0 {
            return Err(ConfigError::Zero("race_max_concurrent"));
        }
        let r = &self.racing;
        if r.max_concurrent == 0 {
            return Err(ConfigError::Zero("racing.max_concurrent"));
        }
        if r.stagger_min < MIN_STAGGER_FLOOR
            || r.stagger_min > r.stagger_max
            || r.stagger < r.stagger_min
            || r.stagger > r.stagger_max
        {
            return Err(ConfigError::StaggerBounds);
        }
        let rec = &self.recovery;
        if rec.resend_window == 0 {
            return Err(ConfigError::Zero("recovery.resend_window"));
        }
        if rec.probe_after.0.is_zero()
            || rec.probe_after.0 > rec.probe_after.1
            || rec.probe_timeout.0.is_zero()
            || rec.probe_timeout.0 > rec.probe_timeout.1
            || rec
                .handshake_timeout
                .is_some_and(|(low, high)| low.is_zero() || low > high)
        {
            return Err(ConfigError::ProbeBounds);
        }
        if self.ip_sources.iter().any(|s| s.limit.is_zero()) {
            return Err(ConfigError::Zero("ip_sources[].limit"));
        }
        for (d, name) in self.durations() {
            if d > MAX_DURATION_SETTING {
                return Err(ConfigError::TooLong(name));
            }
        }
        Ok(())
    }

    /// Every duration setting, by name (for [`validate`](Self::validate)'s upper bound).
    fn durations(&self) -> Vec<(Duration, &'static str)> {
        let t = &self.timing;
        let (r, rec) = (&self.racing, &self.recovery);
        let mut all = vec![
            (t.connect_timeout, "connect_timeout"),
            (t.race_interval, "race_interval"),
            (t.resolve_timeout, "resolve_timeout"),
            (t.retry_pause, "retry_pause"),
            (t.heartbeat_reply_timeout, "heartbeat_reply_timeout"),
            (
                t.late_heartbeat_reply_timeout,
                "late_heartbeat_reply_timeout",
            ),
            (t.late_heartbeat_threshold, "late_heartbeat_threshold"),
            (t.reconnect_wake, "reconnect_wake"),
            (t.inactive_after, "inactive_after"),
            (t.zombie_min_age, "zombie_min_age"),
            (t.signal_keep_period, "signal_keep_period"),
            (t.signal_keep_time, "signal_keep_time"),
            (t.auth_retry, "auth_retry"),
            (t.auth_limit, "auth_limit"),
            (t.timing_sync.0, "timing_sync"),
            (t.timing_sync.1, "timing_sync"),
            (t.timing_sync.2, "timing_sync"),
            (r.stagger, "racing.stagger"),
            (r.stagger_min, "racing.stagger_min"),
            (r.stagger_max, "racing.stagger_max"),
            (rec.min_attempt, "recovery.min_attempt"),
        ];
        let pairs = [
            (t.first_packet, "first_packet"),
            (t.first_packet_max, "first_packet_max"),
            (t.first_packet_excellent, "first_packet_excellent"),
            (t.queue_delay, "queue_delay"),
            (t.packet_to_packet, "packet_to_packet"),
            (rec.probe_after, "recovery.probe_after"),
            (rec.probe_timeout, "recovery.probe_timeout"),
        ];
        for ((a, b), name) in pairs {
            all.push((a, name));
            all.push((b, name));
        }
        if let Some((a, b)) = rec.handshake_timeout {
            all.push((a, "recovery.handshake_timeout"));
            all.push((b, "recovery.handshake_timeout"));
        }
        if let Some((a, b)) = self.short_link.family_connect_timeouts {
            all.push((a, "short_link.family_connect_timeouts"));
            all.push((b, "short_link.family_connect_timeouts"));
        }
        all.extend(
            self.ip_sources
                .iter()
                .map(|s| (s.limit, "ip_sources[].limit")),
        );
        all
    }

    /// The recovery settings in force: [`Config::recovery`] on the Phobos profile, every
    /// mechanism off on [`ConnectProfile::MarsClassic`].
    pub(crate) fn active_recovery(&self) -> Option<&Recovery> {
        match self.connect_profile {
            ConnectProfile::MarsClassic => None,
            _ => Some(&self.recovery),
        }
    }

    /// The index of the main link.
    pub(crate) fn main_link(&self) -> usize {
        self.links.iter().position(|l| l.main).unwrap_or(0)
    }
}

/// Builds a [`Config`].
#[derive(Debug)]
pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    /// Adds a long link.
    pub fn link(mut self, link: LinkConfig) -> Self {
        self.config.links.push(link);
        self
    }

    /// Sets the auth plugin.
    pub fn auth(mut self, auth: Arc<dyn AuthCheck>) -> Self {
        self.config.auth = Some(auth);
        self
    }

    /// Sets the heartbeat policy factory.
    pub fn heartbeat(mut self, factory: Arc<dyn HeartbeatPolicyFactory>) -> Self {
        self.config.heartbeat = factory;
        self
    }

    /// Sets the response check.
    pub fn response_check(mut self, check: Arc<dyn ResponseCheck>) -> Self {
        self.config.response_check = Some(check);
        self
    }

    /// Sets the random seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Sets whether the user is logged in at start.
    pub fn has_account(mut self, has_account: bool) -> Self {
        self.config.has_account = has_account;
        self
    }

    /// Replaces all durations.
    pub fn timing(mut self, timing: Timing) -> Self {
        self.config.timing = timing;
        self
    }

    /// Replaces the limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Sets the short-link settings.
    pub fn short_link(mut self, short_link: crate::ShortLinkConfig) -> Self {
        self.config.short_link = short_link;
        self
    }

    /// Chooses how connect cycles order and race addresses (default
    /// [`ConnectProfile::Phobos`]).
    pub fn connect_profile(mut self, profile: ConnectProfile) -> Self {
        self.config.connect_profile = profile;
        self
    }

    /// Replaces the numbers of the [`ConnectProfile::Phobos`] race.
    pub fn racing(mut self, racing: Racing) -> Self {
        self.config.racing = racing;
        self
    }

    /// Replaces the [`ConnectProfile::Phobos`] recovery settings.
    pub fn recovery(mut self, recovery: Recovery) -> Self {
        self.config.recovery = recovery;
        self
    }

    /// Appends one source to the IP source chain (see [`SourceSpec`]).
    pub fn ip_source(mut self, source: SourceSpec) -> Self {
        self.config.ip_sources.push(source);
        self
    }

    /// Finishes the config.
    ///
    /// # Errors
    ///
    /// As [`Config::validate`].
    pub fn build(self) -> Result<Config, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

/// One long link (Mars's `LonglinkConfig`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// The link's name; tasks pick it with [`TaskSpec::link`](crate::TaskSpec::link).
    pub name: LinkName,
    /// Hosts to resolve (through [`Action::Resolve`](crate::Action::Resolve)), in order.
    pub hosts: Vec<String>,
    /// Ports combined with every resolved address that has none.
    pub ports: Vec<u16>,
    /// Fixed addresses (a debug list): when non-empty they are used alone, without
    /// resolving.
    pub addrs: Vec<IpPort>,
    /// Reconnect on its own after a disconnect (Mars's `is_keep_alive`); otherwise only when
    /// tasks need it.
    pub keep_alive: bool,
    /// The main link: drives zombie restarts and carries the signalling keeper.
    pub main: bool,
    /// At most this many addresses per connect cycle (Mars's `kNumMakeCount`, 5).
    pub max_addrs: usize,
}

impl LinkConfig {
    /// A keep-alive link with no address yet.
    pub fn new(name: impl Into<LinkName>) -> Self {
        LinkConfig {
            name: name.into(),
            hosts: Vec::new(),
            ports: Vec::new(),
            addrs: Vec::new(),
            keep_alive: true,
            main: false,
            max_addrs: 5,
        }
    }

    /// Sets the hosts.
    pub fn hosts<S: Into<String>>(mut self, hosts: impl IntoIterator<Item = S>) -> Self {
        self.hosts = hosts.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the ports.
    pub fn ports(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        self.ports = ports.into_iter().collect();
        self
    }

    /// Sets fixed addresses.
    pub fn addrs(mut self, addrs: impl IntoIterator<Item = IpPort>) -> Self {
        self.addrs = addrs.into_iter().collect();
        self
    }

    /// Sets keep-alive.
    pub fn keep_alive(mut self, keep_alive: bool) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// Marks the link as main.
    pub fn main(mut self) -> Self {
        self.main = true;
        self
    }
}

/// Every duration the core uses, with Mars's values as defaults (spec §17).
///
/// Wi-Fi/mobile pairs are `(wifi, mobile)`; "Wi-Fi" means any network but mobile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// One connect attempt's own timeout, both profiles (`kLonglinkConnTimeout`, 10 s).
    pub connect_timeout: Duration,
    /// [`ConnectProfile::MarsClassic`]: delay between starting two addresses of the race
    /// (`kLonglinkConnInteral`, 2.5 s). The Phobos profile uses [`Racing`].
    pub race_interval: Duration,
    /// [`ConnectProfile::MarsClassic`]: at most this many connect attempts at once
    /// (`kLonglinkConnMax`, 3). The Phobos profile uses [`Racing::max_concurrent`].
    pub race_max_concurrent: usize,
    /// Time limit of one IP source call when [`Config::ip_sources`] is empty (one implicit
    /// primary source; Mars: 2 s for app DNS).
    pub resolve_timeout: Duration,
    /// Pause before retried tasks go out after a failure (`DEF_TASK_RETRY_INTERNAL`, 1 s).
    pub retry_pause: Duration,
    /// Base first-packet timeout (12 s / 15 s).
    pub first_packet: (Duration, Duration),
    /// Cap of the computed first-packet timeout without a server cost (22 s / 30 s).
    pub first_packet_max: (Duration, Duration),
    /// First-packet timeout when the estimator says the network is excellent (7 s / 10 s).
    pub first_packet_excellent: (Duration, Duration),
    /// Extra first-packet time per task ahead in the link's queue, up to 5 (1.5 s / 3 s).
    pub queue_delay: (Duration, Duration),
    /// Packet-to-packet timeout (8 s / 12 s).
    pub packet_to_packet: (Duration, Duration),
    /// Minimum transfer rate in bytes per second (12 KiB/s / 4 KiB/s).
    pub min_rate: (u64, u64),
    /// Heartbeat reply timeout (8 s).
    pub heartbeat_reply_timeout: Duration,
    /// Heartbeat reply timeout after a heartbeat slot that fired late (5 s).
    pub late_heartbeat_reply_timeout: Duration,
    /// A heartbeat slot this late counts as "fired late" (15 min).
    pub late_heartbeat_threshold: Duration,
    /// Delay before re-evaluating the automatic reconnect after a disconnect (500 ms).
    pub reconnect_wake: Duration,
    /// Background time after which the app becomes inactive (10 min).
    pub inactive_after: Duration,
    /// Minimum age before a zombie is restarted, and quiet time since the last start (60 s).
    pub zombie_min_age: Duration,
    /// Signalling keeper: frame period (5 s).
    pub signal_keep_period: Duration,
    /// Signalling keeper: how long one request keeps it going (20 s).
    pub signal_keep_time: Duration,
    /// Delay before asking again to authenticate after a transient failure (1 s, Mars's loop
    /// tick).
    pub auth_retry: Duration,
    /// How long one [`AuthCheck::ensure_authed`](phobos_plugin_api::AuthCheck::ensure_authed)
    /// call may go unanswered before the core counts it a transient failure and asks again
    /// after `auth_retry` (30 s; Mars has no limit: a login that never answers holds its
    /// tasks until they time out, and no new login is tried).
    pub auth_limit: Duration,
    /// Timing sync while the main link is down: (active with account, active without
    /// account, inactive) = (90 s, 240 s, 600 s); tripled without network.
    pub timing_sync: (Duration, Duration, Duration),
}

impl Default for Timing {
    fn default() -> Self {
        let ms = Duration::from_millis;
        Timing {
            connect_timeout: ms(10_000),
            race_interval: ms(2_500),
            race_max_concurrent: 3,
            resolve_timeout: ms(2_000),
            retry_pause: ms(1_000),
            first_packet: (ms(12_000), ms(15_000)),
            first_packet_max: (ms(22_000), ms(30_000)),
            first_packet_excellent: (ms(7_000), ms(10_000)),
            queue_delay: (ms(1_500), ms(3_000)),
            packet_to_packet: (ms(8_000), ms(12_000)),
            min_rate: (12_288, 4_096),
            heartbeat_reply_timeout: ms(8_000),
            late_heartbeat_reply_timeout: ms(5_000),
            late_heartbeat_threshold: ms(15 * 60_000),
            reconnect_wake: ms(500),
            inactive_after: ms(600_000),
            zombie_min_age: ms(60_000),
            signal_keep_period: ms(5_000),
            signal_keep_time: ms(20_000),
            auth_retry: ms(1_000),
            auth_limit: ms(30_000),
            timing_sync: (ms(90_000), ms(240_000), ms(600_000)),
        }
    }
}

/// Anti-avalanche settings (spec §13).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Whether the identical-body frequency limit runs at all.
    pub frequency: bool,
    /// Whether the mobile flow limit runs at all.
    pub flow: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frequency: true,
            flow: true,
        }
    }
}

/// A contradiction in a [`Config`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No long link configured.
    #[error("no long link configured")]
    NoLinks,
    /// Two links with one name.
    #[error("two links are named {0:?}")]
    DuplicateLink(String),
    /// A link with neither hosts nor fixed addresses.
    #[error("link {0:?} has neither hosts nor addresses")]
    NoAddress(String),
    /// A link's fixed address no connection can be made to: port 0, or an unspecified
    /// (`0.0.0.0`, `::`, which Linux takes as this host), multicast or broadcast address.
    #[error("link {0:?} has a fixed address no connection can be made to: {1}")]
    Undialable(String, IpPort),
    /// A link with hosts but no ports.
    #[error("link {0:?} has hosts but no ports")]
    NoPorts(String),
    /// A setting that must not be zero.
    #[error("{0} must not be zero")]
    Zero(&'static str),
    /// [`Racing`] needs 10 ms ≤ `stagger_min` ≤ `stagger` ≤ `stagger_max`.
    #[error("racing: need 10 ms <= stagger_min <= stagger <= stagger_max")]
    StaggerBounds,
    /// [`Recovery`] needs non-zero `min <= max` in `probe_after`, `probe_timeout` and
    /// `handshake_timeout`.
    #[error("recovery: need 0 < min <= max in probe_after, probe_timeout and handshake_timeout")]
    ProbeBounds,
    /// A duration setting longer than [`MAX_DURATION_SETTING`].
    #[error("{0} must not exceed 365 days")]
    TooLong(&'static str),
    /// A link with hosts and no fixed addresses, in a client with no IP source to resolve
    /// them: it would never connect.
    #[error("link {0:?} has hosts but the client has no IP source to resolve them (add one, or fixed addresses)")]
    NoIpSource(String),
    /// The core's IP source specs and the client's IP sources differ in number.
    #[error("the core config names {specs} IP sources but the client has {sources}")]
    IpSourceCount {
        /// [`Config::ip_sources`]' length.
        specs: usize,
        /// The client's sources.
        sources: usize,
    },
}

/// The longest any duration setting may be (365 days); longer ones are refused by
/// [`Config::validate`], and a heartbeat interval a plugin asks for is cut to it.
///
/// Design: deadlines are `now + setting`, which overflows (and panics) for values near
/// `Duration::MAX`, a natural way to write "never"; a year is longer than any link lives and
/// keeps every sum and product of settings the core forms far from overflow.
pub const MAX_DURATION_SETTING: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The shortest heartbeat interval the core keeps: a shorter one a heartbeat policy or codec
/// asks for is raised to it (zero still means "no periodic heartbeat").
///
/// Design: a policy answering a nanosecond sent 12,000–15,000 heartbeats in 2 s at 90 % CPU
/// (a probe, 2026-11-27); the fastest schedule anyone uses, the signalling keeper, is 5 s.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// How a connect cycle orders its addresses and races them.
///
/// ```
/// # use std::sync::Arc;
/// # use phobos_stn_proto::{Config, ConnectProfile, LinkConfig};
/// # fn demo(codec: Arc<dyn phobos_plugin_api::PacketCodec>) {
/// let config = Config::builder(codec)
///     .link(LinkConfig::new("default-longlink").hosts(["long.example.com"]).ports([443]))
///     .connect_profile(ConnectProfile::MarsClassic)
///     .build()
///     .unwrap();
/// assert_eq!(config.connect_profile, ConnectProfile::MarsClassic);
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectProfile {
    /// RFC 8305-style racing (the default): addresses in ranked order (§11 history, bans,
    /// seeded random spread among equals) with IPv6/IPv4 interleaved (first address family
    /// count 1); the next attempt starts a *stagger* after the previous one, where the
    /// stagger is `clamp(2 × RTT estimate, stagger_min, stagger_max)` (250 ms before any RTT
    /// is known, see [`Racing`]); a failed attempt starts the next one at once; at most
    /// [`Racing::max_concurrent`] attempts in flight; each attempt times out after
    /// [`Timing::connect_timeout`]; the first to connect wins and the others are aborted.
    /// Once every address has started, a silent attempt is hedged ([`Racing::hedges`]). The
    /// link recovers from drops and stalls as [`Recovery`] says.
    #[default]
    Phobos,
    /// Mars's race (§9) with exact deadlines: Mars's address order (§11.3: shuffle, history
    /// by failures, IPv6/IPv4 weighted merge), a fixed [`Timing::race_interval`] (2.5 s)
    /// between starts, [`Timing::race_max_concurrent`] (3) attempts at most, each timing out
    /// after [`Timing::connect_timeout`] (10 s). No hedging and no [`Recovery`]: Mars's
    /// pipelining, reconnect table, retry pause and timeouts as they are.
    MarsClassic,
}

/// The numbers of the [`ConnectProfile::Phobos`] race (RFC 8305 §5 "Connection Attempt
/// Delay").
///
/// After starting an attempt to address *a*, the next attempt is due after
/// `clamp(2 × rtt, stagger_min, stagger_max)`, where `rtt` is *a*'s last measured connect
/// time if known, else the smoothed connect time of this network (EWMA, gain 1/8, reset on a
/// network change), else the stagger is [`stagger`](Self::stagger). RFC 8305 §5 asks the delay
/// to approximate when the previous attempt would send its second SYN, i.e. TCP's
/// retransmission timeout (RFC 6298: from 3 × RTT after the first sample down to about 1 × RTT
/// on a steady path); twice the RTT sits in that range: a handshake that has not finished
/// after two round trips has most likely lost a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Racing {
    /// Stagger before any connect time is known (RFC 8305's recommended 250 ms).
    pub stagger: Duration,
    /// Lower bound of the adapted stagger (RFC 8305: 100 ms; never below 10 ms).
    pub stagger_min: Duration,
    /// Upper bound of the adapted stagger (RFC 8305: 2 s).
    pub stagger_max: Duration,
    /// At most this many attempts in flight at once (4).
    pub max_concurrent: usize,
    /// Dial hedging: when every planned address has been started, an attempt is still
    /// pending after the stagger and fewer than [`max_concurrent`](Self::max_concurrent)
    /// are in flight, a fresh attempt to the address of the oldest pending one starts, at
    /// most this many times per cycle (3). A fresh SYN beats the kernel's SYN back-off
    /// (Linux resends a lost SYN only after 1 s, 3 s, 7 s…), so one lost packet no longer
    /// costs a second of connect time on a lossy network. Hedges start only within half the
    /// connect timeout of the attempt they repeat, share its timeout, and stop once any
    /// attempt of the cycle has failed (an answer that came back shows the path works, so
    /// the silent address is more likely filtered). 0 turns hedging off.
    pub hedges: usize,
}

impl Default for Racing {
    fn default() -> Self {
        Racing {
            stagger: Duration::from_millis(250),
            stagger_min: Duration::from_millis(100),
            stagger_max: Duration::from_millis(2_000),
            max_concurrent: 4,
            hedges: 3,
        }
    }
}

/// How the [`ConnectProfile::Phobos`] profile recovers from a long link that breaks or
/// stalls under load. [`ConnectProfile::MarsClassic`] ignores all of it (Mars pipelines every
/// queued task on a new connection, paces every reconnect by its table, and only notices a
/// stalled link through the first-packet timeout or an unanswered periodic heartbeat).
///
/// - **Resend window**: after a link broke (any cause but a local one: network change,
///   reset), the next connection is not trusted yet. At most
///   [`resend_window`](Self::resend_window) tasks are in flight on it at first; every
///   response lets one more go (slow start: the window doubles per round trip), and once the
///   window reaches [`proven_window`](Self::proven_window) the link counts as proven and every
///   queued task goes at once, as on a first connection. A connection that dies after a few
///   requests then still completes tasks instead of losing the whole backlog at once.
/// - **Reconnect after progress**: a connection that delivered at least one task response
///   before it broke earned a reconnect at once when tasks wait (Mars waits for its task row,
///   5 s in the foreground, which is meant for failed connects). A drop with no response on
///   the connection falls back to the interval table, so a server that accepts and then
///   breaks every connection still cannot cause a connect storm: every fast reconnect is paid
///   for by a completed task.
/// - **Stall probe**: when a task is owed a response and the link has received nothing for
///   `clamp(4 × rtt, probe_after.0, probe_after.1)` (rtt: the link's smoothed heartbeat round
///   trip; its connect time until the first heartbeat reply, which replaces it), one
///   heartbeat goes out as a probe; if nothing at all
///   arrives within `clamp(6 × rtt, probe_timeout.0, probe_timeout.1)` the link is dropped as
///   stalled and its tasks are retried on a new connection. An answered probe proves the
///   link alive (the server is only slow): the task keeps its normal timeouts and the next
///   probe waits twice as long. Long-polling tasks and a task's declared server cost are not
///   counted as owed.
/// - **After damaged bytes**: a connection that broke on damaged bytes (a malformed frame,
///   a TLS record that failed its integrity check) without delivering a response also earns
///   a reconnect at once, at most [`damaged_reconnects`](Self::damaged_reconnects) times in
///   a row before a response comes: the path carries bytes, only not intact ones, and a
///   server that speaks another protocol still cannot cause a connect storm.
/// - **Transport patience**: when a heartbeat's reply (a stall probe's or the policy's) is
///   due and nothing came, the core first asks the driver what the transport knows
///   ([`Action::InspectTransport`](crate::Action::InspectTransport): the kernel's TCP
///   retransmission timeout, its backoff, the segments not yet acknowledged and when the peer
///   last acknowledged anything). Silence is what loss looks like for a while, so the link
///   is not judged before [`PATIENCE_RTOS`] base retransmission timeouts plus a round trip
///   have passed since the heartbeat went out (the original and three doubling
///   retransmissions, of ours or of the server's reply). After that, while our bytes are
///   still being retransmitted, a path whose peer acknowledged something since the heartbeat,
///   or whose connection has retransmitted at least [`LOSSY_RETRANSMIT_PERCENT`] of its data
///   segments so far, is lossy, not dead: the deadline moves by one current retransmission
///   timeout at a time (the owed tasks' own timeouts still run, so a dead lossy path is
///   found by them, as Mars finds every dead path). The wait never goes past the point where
///   the running tasks could still each be retried with [`min_attempt`](Self::min_attempt)
///   left before their total timeouts: a connection whose TCP has backed off to a
///   retransmission timeout of several seconds would otherwise hold them, one attempt each,
///   until their total timeouts (the lab saw it about once in fifty runs at 30 % loss), while a
///   new connection starts its timers afresh. Anything else drops the link as before:
///   a peer whose TCP acknowledges everything but whose server sends nothing (half-open), a
///   clean path that suddenly acknowledges nothing (a dead path), or a transport that cannot
///   tell (a connector without facts). On a clean path the patience (7 × 200 ms + the round trip) is
///   below the 2 s probe floor, so nothing changes there.
/// - **Short-link attempt share**: a short-link attempt's first-packet and read/write
///   timeouts are capped at an equal share of what is left of the task's budget for the
///   attempts it still has (`(left − retry pauses) ÷ attempts`, never below
///   [`min_attempt`](Self::min_attempt)), so a retry after a stall still fits in the task's
///   total timeout. HTTP has no heartbeat to probe a stalled exchange with; Mars's fixed 12 s
///   first packet would spend a 15 s task on one attempt. Long-polling tasks are exempt.
/// - **Long-link retry room**: a long-link attempt of a task that may still be retried
///   gets a first-packet timeout that leaves the retry [`min_attempt`](Self::min_attempt)
///   and the retry pause before the task's total timeout, where the budget has room for both
///   attempts to get `min_attempt` (a smaller budget keeps the formula's timeout: one attempt
///   in effect, as in Mars). Mars's first-packet timeout (12 s and more) would otherwise spend a 15 s task
///   on one attempt: on a connection stuck behind a retransmission, the task then ended at
///   its total timeout with its retry unused (the lab saw whole runs lose their last tasks so
///   at 30 % loss over TLS). A task whose budget is larger than the formula's timeout plus
///   that room is unchanged; long polls are exempt.
/// - **Handshake timeout**: when the driver reports that a connect attempt's transport is
///   up and a handshake (TLS) follows ([`Engine::handle_established`](crate::Engine::handle_established)),
///   the handshake gets `clamp(6 × the attempt's TCP connect time,
///   handshake_timeout.0, handshake_timeout.1)` rather than what is left of the 10 s connect
///   timeout; one that runs out is dialed again at once, at most [`HANDSHAKE_REDIALS`] times
///   per connect cycle. A path that accepts TCP and then swallows the handshake (a
///   middlebox, a connection made during an outage) would otherwise hold the link for the
///   whole connect timeout, while the tasks waiting for it run out of time (the lab saw a
///   TLS link lose tasks so after a 6 s half-open outage: its reconnect, made during the
///   outage, stayed in its handshake for 10 s). A TCP connect that took long (a lost SYN,
///   a slow path) gives its handshake as long as six of it, up to the upper bound.
/// - **Dial hedging** (see [`Racing::hedges`]) lives with the race numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Tasks in flight at first on a connection made after a link broke (2).
    pub resend_window: usize,
    /// The resend window at which the connection counts as proven and the window is lifted
    /// (16: fourteen responses on the connection).
    pub proven_window: usize,
    /// Reconnect at once, when tasks wait, after a connection that delivered a response
    /// broke (true).
    pub reconnect_after_progress: bool,
    /// Whether the stall probe runs (true).
    pub stall_probe: bool,
    /// Bounds of the quiet time before a probe (2 s, 4 s: above the common sub-2 s latency
    /// spikes of mobile radios, well below Mars's 12 s first-packet timeout).
    pub probe_after: (Duration, Duration),
    /// Bounds of the probe's reply timeout (2 s, 8 s).
    pub probe_timeout: (Duration, Duration),
    /// Reconnects at once after damaged bytes, in a row without a response (3).
    pub damaged_reconnects: u32,
    /// Whether an unanswered heartbeat first asks the transport whether the path is only
    /// lossy (true; see *transport patience* above).
    pub transport_patience: bool,
    /// Whether short-link attempts share the task's budget (true).
    pub short_attempt_share: bool,
    /// Whether a long-link attempt leaves room for a retry before the task's total timeout
    /// (true; see *long-link retry room* above).
    pub long_retry_room: bool,
    /// The least first-packet timeout the share may leave an attempt (4 s: a server's usual
    /// processing time plus a few round trips on a slow path); also the time transport
    /// patience and the long-link retry room keep for a retry of the running tasks.
    pub min_attempt: Duration,
    /// Bounds of a connect attempt's handshake timeout (3 s, 8 s; see *handshake timeout*
    /// above); `None`: the handshake has what is left of the connect timeout, as in Mars.
    pub handshake_timeout: Option<(Duration, Duration)>,
}

/// Handshakes that ran out of time are dialed again at once at most this many times per
/// connect cycle (see [`Recovery`]); later ones fail like a connect timeout.
pub const HANDSHAKE_REDIALS: usize = 2;

impl Default for Recovery {
    fn default() -> Self {
        Recovery {
            resend_window: 2,
            proven_window: 16,
            reconnect_after_progress: true,
            stall_probe: true,
            probe_after: (Duration::from_millis(2_000), Duration::from_millis(4_000)),
            probe_timeout: (Duration::from_millis(2_000), Duration::from_millis(8_000)),
            damaged_reconnects: 3,
            transport_patience: true,
            short_attempt_share: true,
            long_retry_room: true,
            min_attempt: Duration::from_secs(4),
            handshake_timeout: Some((Duration::from_secs(3), Duration::from_secs(8))),
        }
    }
}

impl Recovery {
    /// Every mechanism off: what [`ConnectProfile::MarsClassic`] does.
    pub fn off() -> Self {
        Recovery {
            resend_window: usize::MAX,
            proven_window: usize::MAX,
            reconnect_after_progress: false,
            stall_probe: false,
            damaged_reconnects: 0,
            transport_patience: false,
            short_attempt_share: false,
            long_retry_room: false,
            handshake_timeout: None,
            ..Recovery::default()
        }
    }

    /// Quiet time with a task owed before a probe, for a link round trip `rtt`.
    pub(crate) fn probe_after(&self, rtt: Duration) -> Duration {
        (rtt * 4).clamp(self.probe_after.0, self.probe_after.1)
    }

    /// The handshake timeout of an attempt whose TCP connect took `connect_time`, if on.
    pub(crate) fn handshake_timeout(&self, connect_time: Duration) -> Option<Duration> {
        let (low, high) = self.handshake_timeout?;
        Some((connect_time * 6).clamp(low, high))
    }

    /// A probe's reply timeout, for a link round trip `rtt`.
    pub(crate) fn probe_timeout(&self, rtt: Duration) -> Duration {
        (rtt * 6).clamp(self.probe_timeout.0, self.probe_timeout.1)
    }
}

/// Base retransmission timeouts an unanswered heartbeat is given, from when it went out,
/// before the transport's facts can spare the link (see [`Recovery`]): the original send and
/// three retransmissions, each waiting twice as long as the last (1 + 2 + 4).
pub const PATIENCE_RTOS: u32 = 7;

/// The share of a connection's data segments, in percent, that must have been retransmitted
/// for its history to count as lossy (see [`Recovery`]): a path that drops one segment in ten
/// is expected to go silent for a few retransmission timeouts now and then.
pub const LOSSY_RETRANSMIT_PERCENT: u32 = 10;

/// How long the core waits for the answer to an
/// [`Action::InspectTransport`](crate::Action::InspectTransport) before it judges the link
/// without the transport's facts. The driver answers in the same turn of its loop; this only
/// bounds a driver that does not answer at all.
pub const INSPECT_GRACE: Duration = Duration::from_millis(50);

/// One source of the IP source chain (spec §10.2), as the core sees it: the driver runs the
/// actual [`IpSource`](phobos_plugin_api::IpSource) at the same index.
///
/// For each host the core asks the sources in order, one call at a time, each within its
/// own [`limit`](Self::limit): the first *primary* source that answers with addresses ends
/// the primary part for that host (later primary sources are skipped); *backup* sources are
/// always asked and their addresses go last. An answer tagged
/// [`AddrSource::Debug`](phobos_plugin_api::AddrSource::Debug) is used alone (no other
/// host, no backups).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceSpec {
    /// How long one call may take before the core moves on (Mars: 2 s for app DNS and for
    /// system DNS).
    pub limit: Duration,
    /// Primary or backup.
    pub role: SourceRole,
}

impl SourceSpec {
    /// A primary source (app DNS, system DNS, a dynamic list…) with this time limit.
    pub fn primary(limit: Duration) -> Self {
        SourceSpec {
            limit,
            role: SourceRole::Primary,
        }
    }

    /// A backup source (addresses shipped with the app) with this time limit.
    pub fn backup(limit: Duration) -> Self {
        SourceSpec {
            limit,
            role: SourceRole::Backup,
        }
    }
}

/// The role of a source in the chain (see [`SourceSpec`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SourceRole {
    /// Asked until one answers (Mars: app DNS, then system DNS).
    Primary,
    /// Always asked; its addresses are appended last (Mars's backup IPs).
    Backup,
}

/// RFC 8305's hard floor for the connection attempt delay.
const MIN_STAGGER_FLOOR: Duration = Duration::from_millis(10);

/// Judges a response body before the task ends with it (Mars's `Buf2Resp` return value).
///
/// Called inline by the core, so it must be cheap and must not block.
pub trait ResponseCheck: Send + Sync + fmt::Debug + 'static {
    /// The verdict on the response to task `id`.
    fn check(&self, id: TaskId, cmd_id: CmdId, body: &[u8]) -> ResponseVerdict;
}

/// What [`ResponseCheck::check`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResponseVerdict {
    /// The task succeeds with this response.
    Accept,
    /// The response cannot be used (Mars's default fail handle): the attempt fails with
    /// [`CodecFailure::Response`](crate::CodecFailure::Response) and is retried if the task
    /// has retries left. On a long link the connection is dropped
    /// ([`LinkError::ResponseRefused`](crate::LinkError::ResponseRefused)) and every task
    /// running on it fails its attempt the same way, as in Mars; on the short link only this
    /// attempt fails.
    Retry {
        /// An app-defined code.
        code: i32,
    },
    /// The server refused the request: the task ends now with
    /// [`TaskError::Server`](crate::TaskError::Server), no retry.
    End {
        /// An app-defined code.
        code: i32,
    },
}

/// The default heartbeat policy: a fixed interval (Mars's `MinHeartInterval`, 210 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedHeartbeat {
    /// The interval; `None` disables periodic heartbeats.
    pub interval: Option<Duration>,
}

impl Default for FixedHeartbeat {
    fn default() -> Self {
        FixedHeartbeat {
            interval: Some(Duration::from_secs(210)),
        }
    }
}

impl HeartbeatPolicyFactory for FixedHeartbeat {
    fn name(&self) -> &str {
        "fixed"
    }

    fn build(&self, _now: Instant, _ctx: &HeartbeatContext) -> Box<dyn HeartbeatPolicy> {
        Box::new(*self)
    }
}

impl HeartbeatPolicy for FixedHeartbeat {
    fn next_interval(&mut self, _now: Instant, _ctx: &HeartbeatContext) -> Option<Duration> {
        self.interval
    }
}
