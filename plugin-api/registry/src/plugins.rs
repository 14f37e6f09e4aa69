//! [`Plugins`]: the set of plugins a client runs with.

use std::fmt;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;

use phobos_auth_basic::NoAuth;
use phobos_codec_mars::MarsCodec;
use phobos_heartbeat::FixedHeartbeat;
use phobos_ipsource::SystemDns;
use phobos_plugin_api::panics::name_of;
use phobos_plugin_api::{AuthCheck, HeartbeatPolicyFactory, IpSource, LogCipher, PacketCodec};

/// Where a plugin came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Origin {
    /// A plugin compiled into this program, chosen by name from the [`Registry`](crate::Registry).
    BuiltIn,
    /// A plugin loaded from the dynamic library at this path.
    Library(PathBuf),
    /// A plugin object the application handed to [`PluginsBuilder`] directly.
    App,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::BuiltIn => f.write_str("built-in"),
            Origin::Library(p) => write!(f, "library {}", p.display()),
            Origin::App => f.write_str("application"),
        }
    }
}

/// One plugin in a [`Plugins`] set: the shared object, the name it was chosen by and where it
/// came from. Derefs to the plugin trait object.
pub struct Plugin<T: ?Sized> {
    plugin: Arc<T>,
    name: String,
    origin: Origin,
}

impl<T: ?Sized> Plugin<T> {
    /// Wraps a plugin object.
    pub fn new(plugin: Arc<T>, name: impl Into<String>, origin: Origin) -> Self {
        Plugin {
            plugin,
            name: name.into(),
            origin,
        }
    }

    /// The shared plugin object, to hand to the framework.
    pub fn get(&self) -> &Arc<T> {
        &self.plugin
    }

    /// The name it was chosen by (the built-in or library plugin name, or the plugin's own
    /// `name()` for an application-provided object).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
}

impl<T: ?Sized> Clone for Plugin<T> {
    fn clone(&self) -> Self {
        Plugin {
            plugin: Arc::clone(&self.plugin),
            name: self.name.clone(),
            origin: self.origin.clone(),
        }
    }
}

impl<T: ?Sized> Deref for Plugin<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.plugin
    }
}

impl<T: ?Sized> fmt::Debug for Plugin<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .finish()
    }
}

/// Every plugin a client uses, one field per extension point.
///
/// [`Plugins::default`] works out of the box (see [`PluginsBuilder`] for each default); the
/// [`Registry`](crate::Registry) builds a set from configuration.
#[derive(Clone, Debug)]
pub struct Plugins {
    /// Frames the long link and shapes short-link requests.
    pub codec: Plugin<dyn PacketCodec>,
    /// Decides whether the session is authenticated, builds the identify exchange.
    pub auth: Plugin<dyn AuthCheck>,
    /// Builds per-link heartbeat policies.
    pub heartbeat: Plugin<dyn HeartbeatPolicyFactory>,
    /// Address sources, asked in this order.
    pub ip_sources: Vec<Plugin<dyn IpSource>>,
    /// Encrypts xlog blocks; `None` writes logs unencrypted.
    pub log_cipher: Option<Plugin<dyn LogCipher>>,
}

impl Plugins {
    /// A builder starting from the defaults.
    pub fn builder() -> PluginsBuilder {
        PluginsBuilder::default()
    }
}

impl Default for Plugins {
    fn default() -> Self {
        PluginsBuilder::default().build()
    }
}

/// Builds a [`Plugins`] set. Anything not set keeps its default:
///
/// | Slot | Default | Why |
/// |---|---|---|
/// | codec | `"mars"`: [`MarsCodec`] with client version 0 and a 1 MiB frame limit | speaks to an unchanged Mars server |
/// | auth | `"none"`: [`NoAuth`] (always authenticated, no identify frame) | needs no app credentials |
/// | heartbeat | `"fixed"`: [`FixedHeartbeat`], 210 s (Mars's `MinHeartInterval`) | Mars's behaviour outside Android |
/// | ip sources | `["system-dns"]`: [`SystemDns`] | works without app setup |
/// | log cipher | none | a cipher needs the app's server key |
#[derive(Debug, Default)]
pub struct PluginsBuilder {
    codec: Option<Plugin<dyn PacketCodec>>,
    auth: Option<Plugin<dyn AuthCheck>>,
    heartbeat: Option<Plugin<dyn HeartbeatPolicyFactory>>,
    ip_sources: Option<Vec<Plugin<dyn IpSource>>>,
    log_cipher: Option<Plugin<dyn LogCipher>>,
}

impl PluginsBuilder {
    /// Uses this codec (origin [`Origin::App`], named by its `name()`).
    pub fn codec(self, codec: Arc<dyn PacketCodec>) -> Self {
        let name = name_of(|| codec.name().to_owned());
        self.codec_entry(Plugin::new(codec, name, Origin::App))
    }

    /// Uses this codec entry.
    pub fn codec_entry(mut self, entry: Plugin<dyn PacketCodec>) -> Self {
        self.codec = Some(entry);
        self
    }

    /// Uses this auth plugin.
    pub fn auth(self, auth: Arc<dyn AuthCheck>) -> Self {
        let name = name_of(|| auth.name().to_owned());
        self.auth_entry(Plugin::new(auth, name, Origin::App))
    }

    /// Uses this auth entry.
    pub fn auth_entry(mut self, entry: Plugin<dyn AuthCheck>) -> Self {
        self.auth = Some(entry);
        self
    }

    /// Uses this heartbeat policy factory.
    pub fn heartbeat(self, factory: Arc<dyn HeartbeatPolicyFactory>) -> Self {
        let name = name_of(|| factory.name().to_owned());
        self.heartbeat_entry(Plugin::new(factory, name, Origin::App))
    }

    /// Uses this heartbeat entry.
    pub fn heartbeat_entry(mut self, entry: Plugin<dyn HeartbeatPolicyFactory>) -> Self {
        self.heartbeat = Some(entry);
        self
    }

    /// Appends an IP source. The first call replaces the default list.
    pub fn ip_source(self, source: Arc<dyn IpSource>) -> Self {
        let name = name_of(|| source.name().to_owned());
        self.ip_source_entry(Plugin::new(source, name, Origin::App))
    }

    /// Appends an IP source entry. The first call replaces the default list.
    pub fn ip_source_entry(mut self, entry: Plugin<dyn IpSource>) -> Self {
        self.ip_sources.get_or_insert_with(Vec::new).push(entry);
        self
    }

    /// Uses exactly these IP sources, in this order (an empty list is allowed: the app then
    /// resolves nothing, which only suits tests with literal addresses).
    pub fn ip_source_entries(mut self, entries: Vec<Plugin<dyn IpSource>>) -> Self {
        self.ip_sources = Some(entries);
        self
    }

    /// Encrypts logs with this cipher.
    pub fn log_cipher(self, cipher: Arc<dyn LogCipher>) -> Self {
        let name = name_of(|| cipher.name().to_owned());
        self.log_cipher_entry(Plugin::new(cipher, name, Origin::App))
    }

    /// Encrypts logs with this cipher entry.
    pub fn log_cipher_entry(mut self, entry: Plugin<dyn LogCipher>) -> Self {
        self.log_cipher = Some(entry);
        self
    }

    /// The set, with defaults in the slots left empty.
    pub fn build(self) -> Plugins {
        Plugins {
            codec: self.codec.unwrap_or_else(|| {
                Plugin::new(Arc::new(MarsCodec::default()), "mars", Origin::BuiltIn)
            }),
            auth: self
                .auth
                .unwrap_or_else(|| Plugin::new(Arc::new(NoAuth), NoAuth::NAME, Origin::BuiltIn)),
            heartbeat: self.heartbeat.unwrap_or_else(|| {
                Plugin::new(
                    Arc::new(FixedHeartbeat::default()),
                    FixedHeartbeat::NAME,
                    Origin::BuiltIn,
                )
            }),
            ip_sources: self.ip_sources.unwrap_or_else(|| {
                vec![Plugin::new(
                    Arc::new(SystemDns::default()),
                    SystemDns::NAME,
                    Origin::BuiltIn,
                )]
            }),
            log_cipher: self.log_cipher,
        }
    }
}
