//! [`Registry`]: plugins by name, built-in or from libraries.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use phobos_plugin_abi::{LoadError, PluginKind, PluginLibrary};
use phobos_plugin_api::{AuthCheck, HeartbeatPolicyFactory, IpSource, LogCipher, PacketCodec};
use serde::de::DeserializeOwned;

use crate::config::{PluginSpec, PluginsConfig};
use crate::error::RegistryError;
use crate::plugins::{Origin, Plugin, Plugins, PluginsBuilder};

/// Knows plugins by kind and name: built-in constructors and the plugins of loaded libraries.
///
/// A name without a `library` resolves to the one built-in plugin or loaded library (see
/// [`load_library`](Self::load_library)) offering it; when several do (a library reusing a
/// built-in's name, or two libraries), it is [`RegistryError::AmbiguousPlugin`] rather than a
/// silent choice. A `library` names exactly where the plugin comes from.
///
/// Built-in constructors receive their config in-process through `erased-serde`: the TOML
/// value is deserialized straight into the constructor's own config type. Plugins from
/// libraries receive it as JSON text (see `phobos-plugin-abi`).
pub struct Registry {
    builtins: Vec<Builtin>,
    libraries: Vec<Arc<PluginLibrary>>,
}

type Ctor<T> =
    Box<dyn Fn(&mut dyn erased_serde::Deserializer<'_>) -> Result<Arc<T>, String> + Send + Sync>;

enum AnyCtor {
    Codec(Ctor<dyn PacketCodec>),
    Auth(Ctor<dyn AuthCheck>),
    IpSource(Ctor<dyn IpSource>),
    LogCipher(Ctor<dyn LogCipher>),
    Heartbeat(Ctor<dyn HeartbeatPolicyFactory>),
}

struct Builtin {
    kind: PluginKind,
    name: String,
    ctor: AnyCtor,
}

impl Registry {
    /// A registry with no plugins at all.
    pub fn empty() -> Self {
        Registry {
            builtins: Vec::new(),
            libraries: Vec::new(),
        }
    }

    /// A registry with every plugin compiled into Phobos:
    ///
    /// | Kind | Names |
    /// |---|---|
    /// | codec | `mars` |
    /// | auth | `none`, `token` |
    /// | heartbeat | `fixed`, `smart` |
    /// | ip_source | `static`, `dynamic`, `backup`, `system-dns`, `doh` |
    /// | cipher | `mars-tea`, `x25519-chacha20poly1305` |
    ///
    /// (`app-dns` is not here: it wraps an application callback, so the app builds it and
    /// hands it to [`PluginsBuilder::ip_source`].)
    pub fn with_builtins() -> Self {
        use phobos_auth_basic::{NoAuth, NoAuthConfig, TokenAuth, TokenAuthConfig};
        use phobos_cipher_mars::{MarsCipher, MarsCipherConfig};
        use phobos_cipher_modern::{ModernCipher, ModernCipherConfig};
        use phobos_codec_mars::{MarsCodec, MarsCodecConfig};
        use phobos_heartbeat::{
            FixedHeartbeat, FixedHeartbeatConfig, SmartHeartbeat, SmartHeartbeatConfig,
        };
        use phobos_ipsource::{
            BackupList, BackupListConfig, DohConfig, DohSource, DynamicList, DynamicListConfig,
            StaticList, StaticListConfig, SystemDns, SystemDnsConfig,
        };

        let mut r = Registry::empty();
        r.register_codec("mars", |c: MarsCodecConfig| MarsCodec::new(c));
        r.register_auth(NoAuth::NAME, |c: NoAuthConfig| infallible(NoAuth::new(c)));
        r.register_auth(TokenAuth::NAME, |c: TokenAuthConfig| TokenAuth::new(c));
        r.register_heartbeat(FixedHeartbeat::NAME, |c: FixedHeartbeatConfig| {
            FixedHeartbeat::new(c)
        });
        r.register_heartbeat(SmartHeartbeat::NAME, |c: SmartHeartbeatConfig| {
            SmartHeartbeat::new(c)
        });
        r.register_ip_source(StaticList::NAME, |c: StaticListConfig| {
            infallible(StaticList::new(c))
        });
        r.register_ip_source(DynamicList::NAME, |c: DynamicListConfig| {
            infallible(DynamicList::with_config(c))
        });
        r.register_ip_source(BackupList::NAME, |c: BackupListConfig| {
            infallible(BackupList::new(c))
        });
        r.register_ip_source(SystemDns::NAME, |c: SystemDnsConfig| {
            infallible(SystemDns::new(c))
        });
        r.register_ip_source(DohSource::NAME, |c: DohConfig| DohSource::new(c));
        r.register_log_cipher("mars-tea", |c: MarsCipherConfig| {
            MarsCipher::from_config(&c)
        });
        r.register_log_cipher("x25519-chacha20poly1305", |c: ModernCipherConfig| {
            ModernCipher::from_config(&c)
        });
        r
    }

    /// Registers a built-in codec. `ctor` gets the plugin's config deserialized into `C`.
    /// A later registration of the same kind and name replaces an earlier one.
    pub fn register_codec<C, T, E, F>(&mut self, name: &str, ctor: F)
    where
        C: DeserializeOwned,
        T: PacketCodec,
        E: fmt::Display,
        F: Fn(C) -> Result<T, E> + Send + Sync + 'static,
    {
        let ctor = erase(ctor, |t| Arc::new(t) as Arc<dyn PacketCodec>);
        self.insert(PluginKind::Codec, name, AnyCtor::Codec(ctor));
    }

    /// Registers a built-in auth plugin; see [`register_codec`](Self::register_codec).
    pub fn register_auth<C, T, E, F>(&mut self, name: &str, ctor: F)
    where
        C: DeserializeOwned,
        T: AuthCheck,
        E: fmt::Display,
        F: Fn(C) -> Result<T, E> + Send + Sync + 'static,
    {
        let ctor = erase(ctor, |t| Arc::new(t) as Arc<dyn AuthCheck>);
        self.insert(PluginKind::Auth, name, AnyCtor::Auth(ctor));
    }

    /// Registers a built-in IP source; see [`register_codec`](Self::register_codec).
    pub fn register_ip_source<C, T, E, F>(&mut self, name: &str, ctor: F)
    where
        C: DeserializeOwned,
        T: IpSource,
        E: fmt::Display,
        F: Fn(C) -> Result<T, E> + Send + Sync + 'static,
    {
        let ctor = erase(ctor, |t| Arc::new(t) as Arc<dyn IpSource>);
        self.insert(PluginKind::IpSource, name, AnyCtor::IpSource(ctor));
    }

    /// Registers a built-in log cipher; see [`register_codec`](Self::register_codec).
    pub fn register_log_cipher<C, T, E, F>(&mut self, name: &str, ctor: F)
    where
        C: DeserializeOwned,
        T: LogCipher,
        E: fmt::Display,
        F: Fn(C) -> Result<T, E> + Send + Sync + 'static,
    {
        let ctor = erase(ctor, |t| Arc::new(t) as Arc<dyn LogCipher>);
        self.insert(PluginKind::LogCipher, name, AnyCtor::LogCipher(ctor));
    }

    /// Registers a built-in heartbeat factory; see [`register_codec`](Self::register_codec).
    pub fn register_heartbeat<C, T, E, F>(&mut self, name: &str, ctor: F)
    where
        C: DeserializeOwned,
        T: HeartbeatPolicyFactory,
        E: fmt::Display,
        F: Fn(C) -> Result<T, E> + Send + Sync + 'static,
    {
        let ctor = erase(ctor, |t| Arc::new(t) as Arc<dyn HeartbeatPolicyFactory>);
        self.insert(PluginKind::Heartbeat, name, AnyCtor::Heartbeat(ctor));
    }

    /// Loads a plugin library (once per file, never unloaded) and makes its plugins available
    /// by name, as `--plugin PATH` does.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Load`] with the [`LoadError`].
    pub fn load_library(
        &mut self,
        path: impl AsRef<Path>,
    ) -> Result<Arc<PluginLibrary>, RegistryError> {
        let lib = PluginLibrary::load(path).map_err(|error| RegistryError::Load {
            field: "plugin library".to_owned(),
            error,
        })?;
        if !self.libraries.iter().any(|l| Arc::ptr_eq(l, &lib)) {
            self.libraries.push(Arc::clone(&lib));
        }
        Ok(lib)
    }

    /// The names available for `kind`, each with its origin (`"mars (built-in)"`).
    pub fn available(&self, kind: PluginKind) -> Vec<String> {
        let builtins = self
            .builtins
            .iter()
            .filter(|b| b.kind == kind)
            .map(|b| format!("{} (built-in)", b.name));
        let loaded = self.libraries.iter().flat_map(|lib| {
            lib.plugins()
                .iter()
                .filter(|p| p.kind == kind)
                .map(|p| format!("{} ({})", p.name, lib.path().display()))
        });
        builtins.chain(loaded).collect()
    }

    /// Builds a [`Plugins`] set from a `[plugins]` configuration; slots left out keep the
    /// defaults of [`PluginsBuilder`].
    ///
    /// # Errors
    ///
    /// The first failing slot's [`RegistryError`], naming its field.
    pub fn build(&self, config: &PluginsConfig) -> Result<Plugins, RegistryError> {
        let mut b = PluginsBuilder::default();
        if let Some(spec) = &config.codec {
            b = b.codec_entry(self.codec(spec, "plugins.codec")?);
        }
        if let Some(spec) = &config.auth {
            b = b.auth_entry(self.auth(spec, "plugins.auth")?);
        }
        if let Some(spec) = &config.heartbeat {
            b = b.heartbeat_entry(self.heartbeat(spec, "plugins.heartbeat")?);
        }
        if let Some(specs) = &config.ip_sources {
            let sources = specs
                .iter()
                .enumerate()
                .map(|(i, s)| self.ip_source(s, &format!("plugins.ip_sources[{i}]")))
                .collect::<Result<_, _>>()?;
            b = b.ip_source_entries(sources);
        }
        if let Some(spec) = &config.cipher {
            b = b.log_cipher_entry(self.log_cipher(spec, "plugins.cipher")?);
        }
        Ok(b.build())
    }

    /// [`PluginsConfig::from_toml_str`] then [`build`](Self::build).
    ///
    /// # Errors
    ///
    /// As both.
    pub fn build_from_toml(&self, text: &str) -> Result<Plugins, RegistryError> {
        self.build(&PluginsConfig::from_toml_str(text)?)
    }

    /// Builds one codec; `field` names the config location for errors.
    ///
    /// # Errors
    ///
    /// [`RegistryError::UnknownPlugin`], [`ConfigRejected`](RegistryError::ConfigRejected) or
    /// [`Load`](RegistryError::Load).
    pub fn codec(
        &self,
        spec: &PluginSpec,
        field: &str,
    ) -> Result<Plugin<dyn PacketCodec>, RegistryError> {
        self.resolve(
            spec,
            field,
            PluginKind::Codec,
            |c| match c {
                AnyCtor::Codec(f) => Some(f),
                _ => None,
            },
            |lib, name, cfg| lib.codec(name, cfg),
        )
    }

    /// Builds one auth plugin; see [`codec`](Self::codec).
    ///
    /// # Errors
    ///
    /// As [`codec`](Self::codec).
    pub fn auth(
        &self,
        spec: &PluginSpec,
        field: &str,
    ) -> Result<Plugin<dyn AuthCheck>, RegistryError> {
        self.resolve(
            spec,
            field,
            PluginKind::Auth,
            |c| match c {
                AnyCtor::Auth(f) => Some(f),
                _ => None,
            },
            |lib, name, cfg| lib.auth(name, cfg),
        )
    }

    /// Builds one IP source; see [`codec`](Self::codec).
    ///
    /// # Errors
    ///
    /// As [`codec`](Self::codec).
    pub fn ip_source(
        &self,
        spec: &PluginSpec,
        field: &str,
    ) -> Result<Plugin<dyn IpSource>, RegistryError> {
        self.resolve(
            spec,
            field,
            PluginKind::IpSource,
            |c| match c {
                AnyCtor::IpSource(f) => Some(f),
                _ => None,
            },
            |lib, name, cfg| lib.ip_source(name, cfg),
        )
    }

    /// Builds one log cipher; see [`codec`](Self::codec).
    ///
    /// # Errors
    ///
    /// As [`codec`](Self::codec).
    pub fn log_cipher(
        &self,
        spec: &PluginSpec,
        field: &str,
    ) -> Result<Plugin<dyn LogCipher>, RegistryError> {
        self.resolve(
            spec,
            field,
            PluginKind::LogCipher,
            |c| match c {
                AnyCtor::LogCipher(f) => Some(f),
                _ => None,
            },
            |lib, name, cfg| lib.log_cipher(name, cfg),
        )
    }

    /// Builds one heartbeat factory; see [`codec`](Self::codec).
    ///
    /// # Errors
    ///
    /// As [`codec`](Self::codec).
    pub fn heartbeat(
        &self,
        spec: &PluginSpec,
        field: &str,
    ) -> Result<Plugin<dyn HeartbeatPolicyFactory>, RegistryError> {
        self.resolve(
            spec,
            field,
            PluginKind::Heartbeat,
            |c| match c {
                AnyCtor::Heartbeat(f) => Some(f),
                _ => None,
            },
            |lib, name, cfg| lib.heartbeat(name, cfg),
        )
    }

    fn insert(&mut self, kind: PluginKind, name: &str, ctor: AnyCtor) {
        self.builtins
            .retain(|b| !(b.kind == kind && b.name == name));
        self.builtins.push(Builtin {
            kind,
            name: name.to_owned(),
            ctor,
        });
    }

    fn resolve<T: ?Sized>(
        &self,
        spec: &PluginSpec,
        field: &str,
        kind: PluginKind,
        pick: impl Fn(&AnyCtor) -> Option<&Ctor<T>>,
        from_lib: impl Fn(&PluginLibrary, &str, Option<&str>) -> Result<Arc<T>, LoadError>,
    ) -> Result<Plugin<T>, RegistryError> {
        let load_err = |error| RegistryError::Load {
            field: field.to_owned(),
            error,
        };
        let json = match &spec.config {
            Some(v) => Some(
                serde_json::to_string(v).map_err(|e| RegistryError::InvalidValue {
                    field: format!("{field}.config"),
                    reason: e.to_string(),
                })?,
            ),
            None => None,
        };
        let from = |lib: &PluginLibrary| -> Result<Plugin<T>, RegistryError> {
            let plugin = from_lib(lib, &spec.name, json.as_deref()).map_err(load_err)?;
            Ok(Plugin::new(
                plugin,
                spec.name.clone(),
                Origin::Library(lib.path().to_owned()),
            ))
        };
        if let Some(path) = &spec.library {
            let lib = PluginLibrary::load(path).map_err(load_err)?;
            return from(&lib);
        }
        let builtin = self
            .builtins
            .iter()
            .filter(|b| b.kind == kind && b.name == spec.name)
            .find_map(|b| pick(&b.ctor));
        let offering: Vec<&Arc<PluginLibrary>> = self
            .libraries
            .iter()
            .filter(|l| l.has_plugin(kind, &spec.name))
            .collect();
        if offering.len() + usize::from(builtin.is_some()) > 1 {
            let origins = builtin
                .map(|_| "built-in".to_owned())
                .into_iter()
                .chain(offering.iter().map(|l| l.path().display().to_string()))
                .collect();
            return Err(RegistryError::AmbiguousPlugin {
                field: field.to_owned(),
                kind,
                name: spec.name.clone(),
                origins,
            });
        }
        if let Some(ctor) = builtin {
            let config = spec
                .config
                .clone()
                .unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
            // Design: a built-in's constructor runs under the same guard as a library's, so
            // a panic in it is an error of the configuration's build, not of the host.
            let panicked = |message| RegistryError::ConstructorPanicked {
                field: field.to_owned(),
                kind,
                name: spec.name.clone(),
                message,
            };
            let mut de = <dyn erased_serde::Deserializer<'_>>::erase(config);
            let mut made = phobos_plugin_api::panics::catch(|| ctor(&mut de)).map_err(panicked)?;
            if made.is_err() && spec.config.is_none() {
                // No config given: an empty table, else no value at all, as a library's
                // plugin is given (`parse_config`), so a constructor taking `()` (which TOML
                // cannot write) builds. The first refusal is the one reported.
                let mut unit = <dyn erased_serde::Deserializer<'_>>::erase(
                    serde::de::value::UnitDeserializer::<serde::de::value::Error>::new(),
                );
                if let Ok(Ok(plugin)) = phobos_plugin_api::panics::catch(|| ctor(&mut unit)) {
                    made = Ok(plugin);
                }
            }
            let plugin = made.map_err(|message| RegistryError::ConfigRejected {
                field: field.to_owned(),
                kind,
                name: spec.name.clone(),
                message,
            })?;
            return Ok(Plugin::new(plugin, spec.name.clone(), Origin::BuiltIn));
        }
        if let Some(lib) = offering.first() {
            return from(lib);
        }
        Err(RegistryError::UnknownPlugin {
            field: field.to_owned(),
            kind,
            name: spec.name.clone(),
            available: self.available(kind),
        })
    }
}

impl Default for Registry {
    /// [`Registry::with_builtins`].
    fn default() -> Self {
        Registry::with_builtins()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let builtins: Vec<String> = self
            .builtins
            .iter()
            .map(|b| format!("{} {}", b.kind, b.name))
            .collect();
        f.debug_struct("Registry")
            .field("builtins", &builtins)
            .field("libraries", &self.libraries)
            .finish()
    }
}

/// Wraps a typed constructor into one taking an erased deserializer.
fn erase<C, T: 'static, E, F, D: ?Sized + 'static>(ctor: F, to_dyn: fn(T) -> Arc<D>) -> Ctor<D>
where
    C: DeserializeOwned,
    E: fmt::Display,
    F: Fn(C) -> Result<T, E> + Send + Sync + 'static,
{
    Box::new(move |de: &mut dyn erased_serde::Deserializer<'_>| {
        let config: C = erased_serde::deserialize(de).map_err(|e| e.to_string())?;
        ctor(config).map(to_dyn).map_err(|e| e.to_string())
    })
}

fn infallible<T>(value: T) -> Result<T, std::convert::Infallible> {
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doh_is_a_builtin_ip_source_with_a_checked_config() {
        let registry = Registry::with_builtins();
        let p = registry
            .build_from_toml(
                r#"
                [plugins]
                ip_sources = [
                    { name = "doh", config = { server_ips = ["192.0.2.53"], tls_name = "dns.example", timeout_ms = 1500 } },
                    "system-dns",
                ]
                "#,
            )
            .unwrap();
        let names: Vec<&str> = p.ip_sources.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["doh", "system-dns"]);
        let err = registry
            .build_from_toml("[plugins]\nip_sources = [{ name = \"doh\", config = {} }]")
            .unwrap_err();
        assert!(
            matches!(&err, RegistryError::ConfigRejected { name, .. } if name == "doh"),
            "{err:?}"
        );
    }
}
