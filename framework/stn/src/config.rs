//! [`ClientConfig`]: the core's [`Config`] plus what only the driver needs (IP sources, the
//! connector, the watchdog).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use phobos_plugin_api::panics::catch;
use phobos_plugin_api::{AuthCheck, HeartbeatPolicyFactory, IpPort, IpSource, PacketCodec};
use phobos_stn_proto::{
    Config, ConfigBuilder, ConfigError, LinkConfig, LinkName, ShortLinkConfig, SourceSpec,
    MAX_DURATION_SETTING,
};

use crate::connector::{Connector, TcpConnector};
use crate::short::ShortSettings;
use crate::{Proxy, TlsConfig};

/// Everything a [`Client`](crate::Client) is started from. Built with
/// [`ClientConfig::builder`], or from a finished core config with
/// [`ClientConfig::from_core`].
///
/// ```
/// # use std::sync::Arc;
/// use phobos_stn::ClientConfig;
///
/// let config = ClientConfig::builder(Arc::new(phobos_codec_mars::MarsCodec::default()))
///     .link_addrs("default-longlink", ["127.0.0.1:8080".parse::<std::net::SocketAddr>().unwrap().into()])
///     .build()
///     .unwrap();
/// assert_eq!(config.core().links.len(), 1);
/// ```
#[derive(Clone)]
pub struct ClientConfig {
    core: Config,
    ip_sources: Vec<Arc<dyn IpSource>>,
    connector: Arc<dyn Connector>,
    watchdog_threshold: Duration,
    heartbeat_state: Option<PathBuf>,
    watch_network: bool,
    ranking_state: Option<PathBuf>,
    short: ShortSettings,
}

/// Builds a [`ClientConfig`].
pub struct ClientConfigBuilder {
    core: ConfigBuilder,
    ip_sources: Vec<Arc<dyn IpSource>>,
    connector: Arc<dyn Connector>,
    watchdog_threshold: Duration,
    heartbeat_state: Option<PathBuf>,
    watch_network: bool,
    ranking_state: Option<PathBuf>,
    /// Which sources were added with [`ClientConfigBuilder::backup_ip_source`].
    backup_sources: Vec<bool>,
    short: ShortSettings,
}

impl ClientConfig {
    /// Starts a config framing long links with `codec`; Mars's defaults elsewhere, plain
    /// TCP, no IP source (links need fixed addresses or a source), watchdog at 1 s.
    pub fn builder(codec: Arc<dyn PacketCodec>) -> ClientConfigBuilder {
        ClientConfigBuilder {
            core: Config::builder(codec),
            ip_sources: Vec::new(),
            connector: Arc::new(TcpConnector::new()),
            watchdog_threshold: DEFAULT_WATCHDOG_THRESHOLD,
            heartbeat_state: None,
            watch_network: false,
            ranking_state: None,
            backup_sources: Vec::new(),
            short: ShortSettings::default(),
        }
    }

    /// Starts a config from a plugin set of `phobos-plugin-registry`: its codec, auth check,
    /// heartbeat factory and IP sources (in order). Links and everything else as with
    /// [`builder`](Self::builder).
    ///
    /// ```
    /// let plugins = phobos_plugin_registry::Plugins::builder().build();
    /// let config = phobos_stn::ClientConfig::from_plugins(&plugins)
    ///     .link_hosts("default-longlink", ["long.example.com"], [8080])
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.ip_sources().len(), plugins.ip_sources.len());
    /// ```
    #[cfg(feature = "registry")]
    pub fn from_plugins(plugins: &phobos_plugin_registry::Plugins) -> ClientConfigBuilder {
        Self::builder(plugins.codec.get().clone())
            .auth(plugins.auth.get().clone())
            .heartbeat(plugins.heartbeat.get().clone())
            .ip_sources(plugins.ip_sources.iter().map(|p| p.get().clone()).collect())
    }

    /// A config around a finished core config, with the driver's defaults.
    pub fn from_core(core: Config) -> Self {
        ClientConfig {
            core,
            ip_sources: Vec::new(),
            connector: Arc::new(TcpConnector::new()),
            watchdog_threshold: DEFAULT_WATCHDOG_THRESHOLD,
            heartbeat_state: None,
            watch_network: false,
            ranking_state: None,
            short: ShortSettings::default(),
        }
    }

    /// The short link's connector: plain TCP (or the one set with
    /// [`ClientConfigBuilder::short_link_connector`]), through the
    /// [`proxy`](ClientConfigBuilder::proxy) if one is set, under TLS if
    /// [`short_link_tls`](ClientConfigBuilder::short_link_tls) is set.
    pub fn short_link_connector(&self) -> Arc<dyn Connector> {
        self.short.connector()
    }

    /// The short link's driver settings.
    pub(crate) fn short_settings(&self) -> &ShortSettings {
        &self.short
    }

    /// The proxy the short link goes through, if any.
    pub fn proxy(&self) -> Option<&Proxy> {
        self.short.proxy.as_ref()
    }

    /// Whether the short link runs over TLS.
    pub fn short_link_uses_tls(&self) -> bool {
        self.short.tls.is_some()
    }

    /// The core's config.
    pub fn core(&self) -> &Config {
        &self.core
    }

    /// The IP sources, in the order they are asked.
    pub fn ip_sources(&self) -> &[Arc<dyn IpSource>] {
        &self.ip_sources
    }

    /// The connector.
    pub fn connector(&self) -> &Arc<dyn Connector> {
        &self.connector
    }

    /// Where the heartbeat policy's state is kept, if anywhere.
    pub fn heartbeat_state_file(&self) -> Option<&Path> {
        self.heartbeat_state.as_deref()
    }

    /// Whether the client watches the OS for network changes (see
    /// [`ClientConfigBuilder::watch_network_changes`]).
    pub fn watches_network_changes(&self) -> bool {
        self.watch_network
    }

    /// Where the IP ranking (per-address history) is kept, if anywhere.
    pub fn ranking_state_file(&self) -> Option<&Path> {
        self.ranking_state.as_deref()
    }

    /// How long the driver loop, or a plugin call that holds a thread (a blocking IP source or
    /// login), may be blocked before the watchdog reports.
    pub fn watchdog_threshold(&self) -> Duration {
        self.watchdog_threshold
    }

    /// Replaces the IP sources; the core's source chain is derived from them as
    /// [`ClientConfigBuilder::build`] does (every source primary but one named `"backup"`).
    pub fn with_ip_sources(mut self, sources: Vec<Arc<dyn IpSource>>) -> Self {
        self.core.ip_sources = chain_specs(&self.core, &sources, &[]);
        self.ip_sources = sources;
        self
    }

    /// Replaces the connector.
    pub fn with_connector(mut self, connector: Arc<dyn Connector>) -> Self {
        self.connector = connector;
        self
    }

    /// Replaces the watchdog threshold, kept within 1 ms and
    /// [`MAX_DURATION_SETTING`] (the bounds [`ClientConfigBuilder::build`] checks).
    pub fn with_watchdog_threshold(mut self, threshold: Duration) -> Self {
        self.watchdog_threshold = threshold.clamp(Duration::from_millis(1), MAX_DURATION_SETTING);
        self
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("core", &self.core)
            .field("ip_sources", &self.ip_sources)
            .field("connector", &self.connector)
            .field("watchdog_threshold", &self.watchdog_threshold)
            .finish()
    }
}

impl ClientConfigBuilder {
    /// Adds a long link resolved from `hosts` through the IP sources, connected on `ports`.
    pub fn link_hosts<S: Into<String>>(
        self,
        name: impl Into<LinkName>,
        hosts: impl IntoIterator<Item = S>,
        ports: impl IntoIterator<Item = u16>,
    ) -> Self {
        self.link(LinkConfig::new(name).hosts(hosts).ports(ports))
    }

    /// Adds a long link with fixed addresses (used alone, without resolving).
    pub fn link_addrs(
        self,
        name: impl Into<LinkName>,
        addrs: impl IntoIterator<Item = IpPort>,
    ) -> Self {
        self.link(LinkConfig::new(name).addrs(addrs))
    }

    /// Adds a long link described in full.
    pub fn link(mut self, link: LinkConfig) -> Self {
        self.core = self.core.link(link);
        self
    }

    /// Sets the auth plugin.
    pub fn auth(mut self, auth: Arc<dyn AuthCheck>) -> Self {
        self.core = self.core.auth(auth);
        self
    }

    /// Sets the heartbeat policy factory.
    pub fn heartbeat(mut self, factory: Arc<dyn HeartbeatPolicyFactory>) -> Self {
        self.core = self.core.heartbeat(factory);
        self
    }

    /// Adds an IP source; sources are asked in the order added. A source named `"backup"`
    /// (the default backup list) is a backup source, any other a primary one (see
    /// [`SourceSpec`](phobos_stn_proto::SourceSpec) for how the core walks the chain).
    pub fn ip_source(mut self, source: Arc<dyn IpSource>) -> Self {
        self.ip_sources.push(source);
        self.backup_sources.push(false);
        self
    }

    /// Adds an IP source whose addresses are backups: always asked, appended last, never
    /// ban-filtered (Mars's backup IPs).
    pub fn backup_ip_source(mut self, source: Arc<dyn IpSource>) -> Self {
        self.ip_sources.push(source);
        self.backup_sources.push(true);
        self
    }

    /// Replaces the IP sources.
    pub fn ip_sources(mut self, sources: Vec<Arc<dyn IpSource>>) -> Self {
        self.backup_sources = vec![false; sources.len()];
        self.ip_sources = sources;
        self
    }

    /// Replaces the connector (default: [`TcpConnector`]).
    pub fn connector(mut self, connector: Arc<dyn Connector>) -> Self {
        self.connector = connector;
        self
    }

    /// Sets the watchdog threshold (default 1 s).
    pub fn watchdog_threshold(mut self, threshold: Duration) -> Self {
        self.watchdog_threshold = threshold;
        self
    }

    /// Keeps the heartbeat policy's learnt state (the smart heartbeat's interval per network)
    /// in this file: read when the client starts; written (off the driver loop, atomically)
    /// after every answered heartbeat that changed the state, whenever a link goes down and
    /// at shutdown, so an app the OS kills loses nothing learnt. A missing file is a fresh
    /// start; an unreadable one is ignored with a warning.
    pub fn heartbeat_state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.heartbeat_state = Some(path.into());
        self
    }

    /// Watches the OS for network changes (Linux: netlink address and route notifications,
    /// debounced; see [`netwatch`](crate::netwatch)) and reacts as to
    /// [`Client::set_network`](crate::Client::set_network) with the watcher's kind
    /// ([`NetKind::Other`](phobos_plugin_api::NetKind::Other), or `None` without a default
    /// route) and an address-set label. Only changes are reported: the client starts on the
    /// network it is told of (Wi-Fi and the label `default` until [`Client::set_network`]
    /// says otherwise), and the watcher's first report comes with the first change it sees.
    /// (A start without a default route is not taken for "no network": a server on loopback
    /// or on the local network is still reached.) Default off: apps that know the network
    /// kind (Wi-Fi or mobile) call `set_network` themselves. Elsewhere than Linux it logs a
    /// warning and does nothing.
    ///
    /// [`Client::set_network`]: crate::Client::set_network
    pub fn watch_network_changes(mut self, watch: bool) -> Self {
        self.watch_network = watch;
        self
    }

    /// Chooses how connect cycles order and race addresses: [`ConnectProfile::Phobos`] (the
    /// default, RFC 8305-style) or [`ConnectProfile::MarsClassic`] (Mars's 2.5 s stagger,
    /// 3 concurrent attempts, 10 s connect timeout and Mars's address order).
    ///
    /// [`ConnectProfile::Phobos`]: phobos_stn_proto::ConnectProfile::Phobos
    /// [`ConnectProfile::MarsClassic`]: phobos_stn_proto::ConnectProfile::MarsClassic
    pub fn connect_profile(mut self, profile: phobos_stn_proto::ConnectProfile) -> Self {
        self.core = self.core.connect_profile(profile);
        self
    }

    /// Keeps the IP ranking (every network's per-address history, §11.4) in this file: read
    /// when the client starts, written atomically (temporary file + rename) whenever a link
    /// goes down, on a network change and at shutdown. Writes run off the driver loop, one
    /// at a time, the newest snapshot winning; shutdown completes after the final write. A missing file is a fresh start; a
    /// corrupt, expired or other-version file is ignored with a warning naming the file.
    /// Bounded: records unused for a day are dropped, and at most 16 networks of 64
    /// addresses each are kept, the least recently used dropped first
    /// ([`RankingState`](phobos_stn_proto::RankingState)).
    pub fn ranking_state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ranking_state = Some(path.into());
        self
    }

    /// Anything else of the core's config (timing, limits, seed, response check…).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # let codec = Arc::new(phobos_codec_mars::MarsCodec::default());
    /// let builder = phobos_stn::ClientConfig::builder(codec).core(|c| c.seed(42));
    /// # drop(builder);
    /// ```
    pub fn core(mut self, f: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Self {
        self.core = f(self.core);
        self
    }

    /// Sends short-link requests through `proxy` (HTTP CONNECT or SOCKS5, spec §8.6). The
    /// tunnel goes to the address the engine chose, so IP ranking stays the client's.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # let codec = Arc::new(phobos_codec_mars::MarsCodec::default());
    /// use phobos_stn::{ClientConfig, Proxy};
    ///
    /// let config = ClientConfig::builder(codec)
    ///     .link_addrs("default-longlink", ["127.0.0.1:8080".parse::<std::net::SocketAddr>().unwrap().into()])
    ///     .proxy(Proxy::http_connect("127.0.0.1:3128".parse().unwrap()))
    ///     .build()
    ///     .unwrap();
    /// assert!(config.proxy().is_some());
    /// ```
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.short.proxy = Some(proxy);
        self
    }

    /// Runs the short link over TLS with `tls` (through the proxy, if any, end to end).
    pub fn short_link_tls(mut self, tls: TlsConfig) -> Self {
        self.short.tls = Some(tls);
        self
    }

    /// Replaces the connector that reaches the short link's server or proxy (default: plain
    /// TCP with default socket options).
    pub fn short_link_connector(mut self, connector: Arc<dyn Connector>) -> Self {
        self.short.base = connector;
        self
    }

    /// Sets the short link's core settings (default port, response limits).
    pub fn short_link(mut self, short_link: ShortLinkConfig) -> Self {
        self.core = self.core.short_link(short_link);
        self
    }

    /// Finishes the config.
    ///
    /// # Errors
    ///
    /// The core's [`ConfigError`] for contradictory settings, or
    /// [`ConfigError::Zero`] for a zero watchdog threshold, [`ConfigError::TooLong`] for one
    /// beyond [`MAX_DURATION_SETTING`], [`ConfigError::NoIpSource`] for a link of hosts
    /// (without fixed addresses) in a client with no IP source, and
    /// [`ConfigError::IpSourceCount`] when core specs set through
    /// [`core`](Self::core) name another number of sources than the client has.
    pub fn build(self) -> Result<ClientConfig, ConfigError> {
        if self.watchdog_threshold.is_zero() {
            return Err(ConfigError::Zero("watchdog_threshold"));
        }
        if self.watchdog_threshold > MAX_DURATION_SETTING {
            return Err(ConfigError::TooLong("watchdog_threshold"));
        }
        let mut core = self.core.build()?;
        core.short_link.proxy = self.short.proxy.is_some();
        if core.ip_sources.is_empty() {
            core.ip_sources = chain_specs(&core, &self.ip_sources, &self.backup_sources);
        }
        check_sources(&core, &self.ip_sources)?;
        Ok(ClientConfig {
            core,
            ip_sources: self.ip_sources,
            connector: self.connector,
            watchdog_threshold: self.watchdog_threshold,
            heartbeat_state: self.heartbeat_state,
            watch_network: self.watch_network,
            ranking_state: self.ranking_state,
            short: self.short,
        })
    }
}

/// The checks of the IP sources against the core's config that [`ClientConfigBuilder::build`]
/// and [`Client::start`](crate::Client::start) make (a config made by
/// [`ClientConfig::from_core`] or [`ClientConfig::with_ip_sources`] comes through the
/// latter only).
///
/// Design: checked before anything runs, not left to the first connect: a link of hosts
/// with nothing to resolve them, or specs naming sources the client does not have, built
/// and then ended every task with `NoAddress` after its whole total timeout.
pub(crate) fn check_sources(
    core: &Config,
    sources: &[Arc<dyn IpSource>],
) -> Result<(), ConfigError> {
    if sources.is_empty() {
        if let Some(l) = core
            .links
            .iter()
            .find(|l| !l.hosts.is_empty() && l.addrs.is_empty())
        {
            return Err(ConfigError::NoIpSource(l.name.to_string()));
        }
    }
    if core.ip_sources.len() != sources.len() {
        return Err(ConfigError::IpSourceCount {
            specs: core.ip_sources.len(),
            sources: sources.len(),
        });
    }
    Ok(())
}

impl fmt::Debug for ClientConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfigBuilder")
            .field("core", &self.core)
            .field("ip_sources", &self.ip_sources)
            .finish_non_exhaustive()
    }
}

/// The core's view of the source chain: one [`SourceSpec`] per source, limited by the core's
/// [`Timing::resolve_timeout`](phobos_stn_proto::Timing::resolve_timeout); backup sources are
/// those flagged in `backups` or named `"backup"`.
fn chain_specs(core: &Config, sources: &[Arc<dyn IpSource>], backups: &[bool]) -> Vec<SourceSpec> {
    let limit = core.timing.resolve_timeout;
    sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let named_backup = catch(|| s.name() == BACKUP_SOURCE_NAME).unwrap_or(false);
            if backups.get(i).copied().unwrap_or(false) || named_backup {
                SourceSpec::backup(limit)
            } else {
                SourceSpec::primary(limit)
            }
        })
        .collect()
}

/// The registry name of the default backup source (`phobos_ipsource::BackupList::NAME`).
const BACKUP_SOURCE_NAME: &str = "backup";

/// The default watchdog threshold.
pub const DEFAULT_WATCHDOG_THRESHOLD: Duration = Duration::from_secs(1);
