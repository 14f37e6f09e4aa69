//! The host side of dynamic loading: [`PluginLibrary`] and [`LoadError`].

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use abi_stable::library::{
    lib_header_from_raw_library, LibraryError, RawLibrary, ROOT_MODULE_LOADER_NAME_WITH_NUL,
};
use abi_stable::std_types::{ROption, RResult, RStr};
use phobos_plugin_api::{
    AuthCheck, HeartbeatPolicyFactory, IpSource, LogCipher, PacketCodec, API_VERSION,
};

use crate::auth::import_auth;
use crate::cipher::import_log_cipher;
use crate::codec::import_codec;
use crate::heartbeat::import_heartbeat;
use crate::ipsource::import_ip_source;
use crate::root::{
    ApiVersionSymbol, FfiConstructError, PluginKind, PluginRootRef, API_VERSION_SYMBOL,
};

/// A loaded plugin library. Libraries are loaded once per canonical path and never unloaded,
/// so every plugin object built from one stays valid for the life of the process.
pub struct PluginLibrary {
    path: PathBuf,
    root: PluginRootRef,
    api_version: ApiVersion,
    features: Vec<String>,
    plugins: Vec<PluginInfo>,
}

/// A semantic version triple of the Phobos plugin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiVersion {
    /// Major.
    pub major: u16,
    /// Minor.
    pub minor: u16,
    /// Patch.
    pub patch: u16,
}

/// One plugin a library offers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PluginInfo {
    /// Its kind.
    pub kind: PluginKind,
    /// Its name within that kind.
    pub name: String,
}

/// Why a plugin library or a plugin from it could not be loaded.
///
/// Every message names the file (and the plugin, where there is one) and the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// No file at that path.
    #[error("plugin library {} does not exist", .path.display())]
    FileMissing {
        /// The path asked for.
        path: PathBuf,
    },
    /// The file exists but the dynamic loader refused it.
    #[error("{} is not a loadable library: {reason}", .path.display())]
    NotALibrary {
        /// The file.
        path: PathBuf,
        /// The loader's message.
        reason: String,
    },
    /// A library, but not a Phobos plugin library: it exports no root module.
    #[error(
        "{} is not a Phobos plugin library: it exports no plugin root module ({reason})",
        .path.display()
    )]
    NoRootModule {
        /// The file.
        path: PathBuf,
        /// The loader's message.
        reason: String,
    },
    /// The library has a plugin root module but does not say which Phobos plugin API it was
    /// built for: it lacks the version symbol ([`API_VERSION_SYMBOL`]) that every library
    /// built with this crate's `export_plugin!` has, so it was built before libraries carried
    /// one, or by other means.
    #[error(
        "{} does not say which Phobos plugin API it was built for (no {API_VERSION_SYMBOL} \
         symbol): rebuild it against plugin API {host}",
        .path.display()
    )]
    NoApiVersion {
        /// The file.
        path: PathBuf,
        /// The host's API version.
        host: ApiVersion,
    },
    /// The library exports an [`API_VERSION_SYMBOL`] symbol that cannot be a whole
    /// [`ApiVersionSymbol`]: its file's dynamic symbol table gives it fewer bytes than one has,
    /// makes it something other than a data object, or places it outside the segments the
    /// library maps. It is not read (reading a version symbol's 14 bytes there could run past
    /// the end of mapped memory). Checked where libraries are ELF files (Linux, Android, the
    /// BSDs); Mach-O and PE symbol tables record no sizes (`docs/PLUGIN_ABI.md`).
    #[error(
        "{} has a malformed {API_VERSION_SYMBOL} symbol, so its plugin API version cannot be \
         read: {reason}",
        .path.display()
    )]
    MalformedApiVersion {
        /// The file.
        path: PathBuf,
        /// What is wrong with the symbol.
        reason: String,
    },
    /// The library's abi_stable header leaves out its root module's layout (exported with
    /// abi_stable's `#[unsafe_no_layout_constant]`, or `CheckTypeLayout::No`), so abi_stable
    /// cannot check that the library's types are the host's; nothing else would. Libraries
    /// built with `export_plugin!` always carry the layout.
    #[error(
        "{} leaves its plugin root module's layout out of its abi_stable header \
         (unsafe_no_layout_constant), so nothing can check that its types match this host's: \
         rebuild it with export_plugin!",
        .path.display()
    )]
    LayoutUnchecked {
        /// The file.
        path: PathBuf,
    },
    /// abi_stable's layout or version check failed: the library was built against
    /// incompatible ABI types.
    #[error("{} was built with an incompatible plugin ABI: {reason}", .path.display())]
    AbiMismatch {
        /// The file.
        path: PathBuf,
        /// abi_stable's description of the mismatch.
        reason: String,
    },
    /// The library's root module could not be initialised.
    #[error("{} failed to initialise its plugin root module: {reason}", .path.display())]
    RootModuleFailed {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The library was built for a Phobos API version this host is not compatible with (read
    /// from its version symbol before anything else, and checked again in its root module).
    #[error(
        "{} was built for Phobos plugin API {found}, which is incompatible with this host's \
         API {host}",
        .path.display()
    )]
    IncompatibleApi {
        /// The file.
        path: PathBuf,
        /// The library's API version.
        found: ApiVersion,
        /// The host's API version.
        host: ApiVersion,
    },
    /// The library has no plugin of that kind and name.
    #[error(
        "{} has no {kind} plugin named \"{name}\"; it has: {}",
        .path.display(),
        list_or_none(.available)
    )]
    UnknownPlugin {
        /// The file.
        path: PathBuf,
        /// The kind asked for.
        kind: PluginKind,
        /// The name asked for.
        name: String,
        /// What the library offers, as `kind "name"`.
        available: Vec<String>,
    },
    /// The library lists the plugin, but its root module has no constructor for the plugin's
    /// kind: it was built with an older plugin ABI, from before that kind's constructor was
    /// added to the root module (or its plugin table was not written by `export_plugin!`).
    #[error(
        "{} lists {kind} plugin \"{name}\" but its root module has no {kind} constructor \
         (built with an older plugin ABI)",
        .path.display()
    )]
    MissingConstructor {
        /// The file.
        path: PathBuf,
        /// The plugin's kind.
        kind: PluginKind,
        /// The plugin's name.
        name: String,
    },
    /// The plugin refused its config (it did not deserialize, or the constructor returned an
    /// error).
    #[error(
        "{kind} plugin \"{name}\" from {} rejected its config: {message}",
        .path.display()
    )]
    ConfigRejected {
        /// The file.
        path: PathBuf,
        /// The plugin's kind.
        kind: PluginKind,
        /// The plugin's name.
        name: String,
        /// The plugin's message.
        message: String,
    },
    /// The plugin's constructor panicked (the panic was caught inside the library).
    #[error(
        "constructor of {kind} plugin \"{name}\" from {} panicked: {message}",
        .path.display()
    )]
    ConstructorPanicked {
        /// The file.
        path: PathBuf,
        /// The plugin's kind.
        kind: PluginKind,
        /// The plugin's name.
        name: String,
        /// The panic message.
        message: String,
    },
}

impl PluginLibrary {
    /// Loads the plugin library at `path`, or returns the one already loaded from the same
    /// file.
    ///
    /// # Errors
    ///
    /// [`LoadError::FileMissing`], [`NotALibrary`](LoadError::NotALibrary),
    /// [`NoRootModule`](LoadError::NoRootModule), [`NoApiVersion`](LoadError::NoApiVersion),
    /// [`MalformedApiVersion`](LoadError::MalformedApiVersion),
    /// [`IncompatibleApi`](LoadError::IncompatibleApi),
    /// [`LayoutUnchecked`](LoadError::LayoutUnchecked),
    /// [`AbiMismatch`](LoadError::AbiMismatch) or
    /// [`RootModuleFailed`](LoadError::RootModuleFailed).
    ///
    /// A library refused for its version symbol (`NotALibrary` when its dynamic symbol table
    /// cannot be read, `NoRootModule`, `NoApiVersion`, `MalformedApiVersion`,
    /// `IncompatibleApi`) is unloaded again before this returns; one refused from its
    /// abi_stable header on (`LayoutUnchecked` and abi_stable's own checks) stays loaded, as
    /// abi_stable leaves it.
    pub fn load(path: impl AsRef<Path>) -> Result<Arc<PluginLibrary>, LoadError> {
        let path = path.as_ref();
        let canonical = match path.canonicalize() {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LoadError::FileMissing {
                    path: path.to_owned(),
                })
            }
            Err(e) => {
                return Err(LoadError::NotALibrary {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })
            }
        };
        // Design: only a regular file is handed to the system's dynamic loader. Given a named
        // pipe (or a terminal) it blocks in `open` while holding its own lock, which every
        // later `dlopen` and every new thread's TLS set-up then waits for: the process hangs.
        match std::fs::metadata(&canonical) {
            Ok(meta) if meta.is_file() => {}
            Ok(meta) => {
                return Err(LoadError::NotALibrary {
                    path: path.to_owned(),
                    reason: format!("not a regular file ({:?})", meta.file_type()),
                })
            }
            Err(e) => {
                return Err(LoadError::NotALibrary {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })
            }
        }
        // Holding the lock while loading makes "load once" hold under concurrent calls.
        let mut loaded = loaded_libraries()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(lib) = loaded.get(&canonical) {
            return Ok(Arc::clone(lib));
        }
        let lib = Arc::new(Self::open(&canonical)?);
        loaded.insert(canonical, Arc::clone(&lib));
        Ok(lib)
    }

    fn open(path: &Path) -> Result<PluginLibrary, LoadError> {
        let raw = RawLibrary::load_at(path).map_err(|e| classify(path, e))?;
        // Design: the version symbol is read before abi_stable sees the library, so a library
        // built for another API is refused as such (abi_stable's layout check would fail first
        // on any changed type, with a report of several kilobytes), and so a refused library
        // is unloaded: `raw` is dropped on the way out, and nothing from it was used.
        Self::check_version_symbol(path, &raw)?;
        // SAFETY: the header points into the library; `raw` is forgotten below, right after
        // the header is found, so the library stays loaded for as long as the header is used
        // (for ever). On an error nothing from the library is kept and `raw` unloads it.
        let header = unsafe { lib_header_from_raw_library(&raw) }.map_err(|e| classify(path, e))?;
        // From here on the library is never unloaded: abi_stable's checks and the root module,
        // and every plugin object built from it, point into it.
        std::mem::forget(raw);
        // Design: abi_stable's layout check is what guarantees that the library's types are
        // ours, and a header exported without the root module's layout makes abi_stable skip
        // it silently; our version check cannot stand in for it (it trusts what the library
        // says). So such a library is refused, whatever else it carries.
        if header.layout().is_none() {
            return Err(LoadError::LayoutUnchecked {
                path: path.to_owned(),
            });
        }
        let root = header
            .init_root_module::<PluginRootRef>()
            .map_err(|e| classify(path, e))?;
        let v = root.api_version();
        let found = require_compatible(path, v.major, v.minor, v.patch)?;
        let features = root
            .features()
            .iter()
            .map(|f| f.as_str().to_owned())
            .collect();
        // Entries of kinds added by a newer ABI are skipped: this host cannot build them.
        let plugins = root
            .plugins()
            .iter()
            .filter_map(|e| {
                Some(PluginInfo {
                    kind: PluginKind::from_code(e.kind)?,
                    name: e.name.as_str().to_owned(),
                })
            })
            .collect();
        Ok(PluginLibrary {
            path: path.to_owned(),
            root,
            api_version: found,
            features,
            plugins,
        })
    }

    /// Reads the library's [`API_VERSION_SYMBOL`] and refuses a library without one, with a
    /// malformed one or with an incompatible version.
    fn check_version_symbol(path: &Path, raw: &RawLibrary) -> Result<(), LoadError> {
        let found = read_version_symbol(path, raw)?
            .filter(|symbol| symbol.magic == ApiVersionSymbol::MAGIC);
        let Some(symbol) = found else {
            // Tell a library that is no plugin at all from one built before the symbol.
            // SAFETY: only whether the symbol exists is asked; its address is not used.
            let has_root =
                unsafe { raw.get::<*const ()>(ROOT_MODULE_LOADER_NAME_WITH_NUL.as_bytes()) }
                    .is_ok();
            return Err(if has_root {
                LoadError::NoApiVersion {
                    path: path.to_owned(),
                    host: ApiVersion::HOST,
                }
            } else {
                LoadError::NoRootModule {
                    path: path.to_owned(),
                    reason: format!("nor a {API_VERSION_SYMBOL} symbol"),
                }
            });
        };
        require_compatible(path, symbol.major, symbol.minor, symbol.patch).map(drop)
    }

    /// The library's canonical path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The Phobos API version the library was built against.
    pub fn api_version(&self) -> ApiVersion {
        self.api_version
    }

    /// The ABI features the library was built with (see [`ABI_FEATURES`](crate::ABI_FEATURES)).
    pub fn features(&self) -> &[String] {
        &self.features
    }

    /// Whether the library lists `feature`.
    pub fn has_feature(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }

    /// The plugins the library offers.
    pub fn plugins(&self) -> &[PluginInfo] {
        &self.plugins
    }

    /// Whether the library offers a plugin of `kind` named `name`.
    pub fn has_plugin(&self, kind: PluginKind, name: &str) -> bool {
        self.plugins
            .iter()
            .any(|p| p.kind == kind && p.name == name)
    }

    /// Builds the codec `name` with `config` (JSON text; `None` for no config).
    ///
    /// # Errors
    ///
    /// [`LoadError::UnknownPlugin`], [`MissingConstructor`](LoadError::MissingConstructor),
    /// [`ConfigRejected`](LoadError::ConfigRejected) or
    /// [`ConstructorPanicked`](LoadError::ConstructorPanicked).
    pub fn codec(
        &self,
        name: &str,
        config: Option<&str>,
    ) -> Result<Arc<dyn PacketCodec>, LoadError> {
        let obj = self.construct(PluginKind::Codec, name, config, Some(self.root.new_codec()))?;
        Ok(import_codec(obj, &self.origin()))
    }

    /// Builds the auth plugin `name`. Errors as for [`codec`](Self::codec).
    ///
    /// # Errors
    ///
    /// As [`codec`](Self::codec).
    pub fn auth(&self, name: &str, config: Option<&str>) -> Result<Arc<dyn AuthCheck>, LoadError> {
        let obj = self.construct(PluginKind::Auth, name, config, Some(self.root.new_auth()))?;
        Ok(import_auth(obj, &self.origin()))
    }

    /// Builds the IP source `name`.
    ///
    /// # Errors
    ///
    /// As [`codec`](Self::codec).
    pub fn ip_source(
        &self,
        name: &str,
        config: Option<&str>,
    ) -> Result<Arc<dyn IpSource>, LoadError> {
        let obj = self.construct(
            PluginKind::IpSource,
            name,
            config,
            Some(self.root.new_ip_source()),
        )?;
        Ok(import_ip_source(obj, &self.origin()))
    }

    /// Builds the log cipher `name`.
    ///
    /// # Errors
    ///
    /// As [`codec`](Self::codec).
    pub fn log_cipher(
        &self,
        name: &str,
        config: Option<&str>,
    ) -> Result<Arc<dyn LogCipher>, LoadError> {
        let obj = self.construct(
            PluginKind::LogCipher,
            name,
            config,
            Some(self.root.new_log_cipher()),
        )?;
        Ok(import_log_cipher(obj, &self.origin()))
    }

    /// Builds the heartbeat policy factory `name`.
    ///
    /// # Errors
    ///
    /// As [`codec`](Self::codec).
    pub fn heartbeat(
        &self,
        name: &str,
        config: Option<&str>,
    ) -> Result<Arc<dyn HeartbeatPolicyFactory>, LoadError> {
        let obj = self.construct(
            PluginKind::Heartbeat,
            name,
            config,
            Some(self.root.new_heartbeat()),
        )?;
        Ok(import_heartbeat(obj, &self.origin()))
    }

    fn origin(&self) -> String {
        self.path.display().to_string()
    }

    /// Builds plugin `name` of `kind` with `ctor`, the kind's constructor field of the root
    /// module: `None` when the library's root module lacks that field.
    ///
    /// Design: every constructor field today is in the root module's prefix, which abi_stable
    /// guarantees present (its accessor returns the value itself, and the callers wrap it in
    /// `Some`). A kind added later gets its constructor after `last_prefix_field`, and
    /// `missing_field(option)` makes that accessor return `None` for an older library, which
    /// ends here as an error instead of a panic.
    fn construct<T>(
        &self,
        kind: PluginKind,
        name: &str,
        config: Option<&str>,
        ctor: Option<crate::root::ConstructFn<T>>,
    ) -> Result<T, LoadError> {
        let unknown = || LoadError::UnknownPlugin {
            path: self.path.clone(),
            kind,
            name: name.to_owned(),
            available: self
                .plugins
                .iter()
                .map(|p| format!("{} \"{}\"", p.kind, p.name))
                .collect(),
        };
        if !self.has_plugin(kind, name) {
            return Err(unknown());
        }
        let Some(ctor) = ctor else {
            return Err(LoadError::MissingConstructor {
                path: self.path.clone(),
                kind,
                name: name.to_owned(),
            });
        };
        let config: ROption<RStr<'_>> = config.map(RStr::from).into();
        match ctor(name.into(), config) {
            RResult::ROk(obj) => Ok(obj),
            RResult::RErr(FfiConstructError::UnknownName) => Err(unknown()),
            RResult::RErr(FfiConstructError::ConfigRejected(message)) => {
                Err(LoadError::ConfigRejected {
                    path: self.path.clone(),
                    kind,
                    name: name.to_owned(),
                    message: message.into(),
                })
            }
            RResult::RErr(FfiConstructError::Panicked(message)) => {
                Err(LoadError::ConstructorPanicked {
                    path: self.path.clone(),
                    kind,
                    name: name.to_owned(),
                    message: message.into(),
                })
            }
        }
    }
}

impl fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginLibrary")
            .field("path", &self.path)
            .field("api_version", &self.api_version)
            .field("plugins", &self.plugins)
            .finish_non_exhaustive()
    }
}

impl ApiVersion {
    /// This host's version: [`phobos_plugin_api::API_VERSION`].
    pub const HOST: ApiVersion = ApiVersion {
        major: API_VERSION.0,
        minor: API_VERSION.1,
        patch: API_VERSION.2,
    };

    /// Semver compatibility as the loader applies it: same major version, and while the
    /// major version is 0, the same minor version too.
    pub fn is_compatible_with(self, other: ApiVersion) -> bool {
        self.major == other.major && (self.major != 0 || self.minor == other.minor)
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

fn loaded_libraries() -> &'static Mutex<HashMap<PathBuf, Arc<PluginLibrary>>> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Arc<PluginLibrary>>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

/// The library's [`API_VERSION_SYMBOL`], read only once its file's dynamic symbol table says
/// the library defines it as a data object of at least an [`ApiVersionSymbol`]'s size, inside
/// memory the library maps; `None` when the file exports no such symbol.
#[cfg(all(unix, not(target_vendor = "apple"), not(target_os = "aix")))]
fn read_version_symbol(
    path: &Path,
    raw: &RawLibrary,
) -> Result<Option<ApiVersionSymbol>, LoadError> {
    use crate::symbol_table::{exported_definition, Definition};

    const EXPECTED: usize = std::mem::size_of::<ApiVersionSymbol>();
    let malformed = |reason: String| LoadError::MalformedApiVersion {
        path: path.to_owned(),
        reason,
    };
    let definition =
        exported_definition(path, API_VERSION_SYMBOL).map_err(|e| LoadError::NotALibrary {
            path: path.to_owned(),
            reason: format!("cannot read its dynamic symbol table: {e}"),
        })?;
    match definition {
        Definition::Missing => Ok(None),
        Definition::NotData => Err(malformed("it is not a data object".to_owned())),
        Definition::OutsideSegments { size } => Err(malformed(format!(
            "its {size} bytes do not lie inside the memory the library maps"
        ))),
        Definition::Data { size } if size < EXPECTED as u64 => Err(malformed(format!(
            "it is {size} bytes long, a version symbol is {EXPECTED}"
        ))),
        // SAFETY: the file defines the symbol as a data object of at least `EXPECTED` bytes,
        // all mapped; and the dynamic loader looks a name up in the library itself before its
        // dependencies, so the address it gives is that definition's.
        Definition::Data { .. } => Ok(unsafe { read_at_symbol(raw) }),
    }
}

/// The library's [`API_VERSION_SYMBOL`] where the file format records no symbol sizes (Mach-O,
/// PE): the bytes at the symbol's address are read as they are (`docs/PLUGIN_ABI.md`, "The
/// version symbol").
#[cfg(not(all(unix, not(target_vendor = "apple"), not(target_os = "aix"))))]
fn read_version_symbol(
    _path: &Path,
    raw: &RawLibrary,
) -> Result<Option<ApiVersionSymbol>, LoadError> {
    // SAFETY: none of the size checks of the ELF version can be made here; a symbol of this
    // name is `export_plugin!`'s `static ApiVersionSymbol`, unless a library defines the name
    // for a smaller object of its own (documented as unsupported on these platforms).
    Ok(unsafe { read_at_symbol(raw) })
}

/// Reads an [`ApiVersionSymbol`] at the address the dynamic loader gives for
/// [`API_VERSION_SYMBOL`]; `None` when it gives none.
///
/// # Safety
///
/// When the library has a symbol of that name, at least `size_of::<ApiVersionSymbol>()` bytes
/// must be readable at its address.
unsafe fn read_at_symbol(raw: &RawLibrary) -> Option<ApiVersionSymbol> {
    let name = format!("{API_VERSION_SYMBOL}\0");
    // SAFETY: only the symbol's address is taken here.
    let address = unsafe { raw.get::<*const ApiVersionSymbol>(name.as_bytes()) }
        .ok()
        .map(|symbol| *symbol)
        .filter(|address| !address.is_null())?;
    // SAFETY: the caller guarantees that the bytes are readable; they are read unaligned, as
    // plain bytes whose every value is valid (a same-named symbol of another shape is told
    // apart by the magic bytes).
    Some(unsafe { address.read_unaligned() })
}

/// The API version `major.minor.patch` found in the library at `path` (its version symbol,
/// then its root module), or `IncompatibleApi` unless it is compatible with this host's.
fn require_compatible(
    path: &Path,
    major: u16,
    minor: u16,
    patch: u16,
) -> Result<ApiVersion, LoadError> {
    let found = ApiVersion {
        major,
        minor,
        patch,
    };
    if ApiVersion::HOST.is_compatible_with(found) {
        return Ok(found);
    }
    Err(LoadError::IncompatibleApi {
        path: path.to_owned(),
        found,
        host: ApiVersion::HOST,
    })
}

/// Sorts abi_stable's errors into our variants.
fn classify(path: &Path, e: LibraryError) -> LoadError {
    let path = path.to_owned();
    let reason = e.to_string();
    match e {
        LibraryError::OpenError { .. } => LoadError::NotALibrary { path, reason },
        LibraryError::GetSymbolError { .. } => LoadError::NoRootModule { path, reason },
        LibraryError::RootModule { .. } => LoadError::RootModuleFailed { path, reason },
        _ => LoadError::AbiMismatch { path, reason },
    }
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "no plugins".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_rules_for_the_api_version() {
        let v = |major, minor, patch| ApiVersion {
            major,
            minor,
            patch,
        };
        assert!(v(0, 1, 0).is_compatible_with(v(0, 1, 7)));
        assert!(!v(0, 1, 0).is_compatible_with(v(0, 2, 0)));
        assert!(!v(0, 1, 0).is_compatible_with(v(1, 1, 0)));
        assert!(v(1, 2, 0).is_compatible_with(v(1, 0, 3)));
        assert!(!v(1, 2, 0).is_compatible_with(v(2, 2, 0)));
    }

    /// A plugin table listing codec "listed", whose constructor is never reached.
    struct ListsACodec;

    impl crate::root::PluginTable for ListsACodec {
        const ENTRIES: &'static [crate::root::FfiPluginEntry] =
            &[crate::root::FfiPluginEntry::new(
                PluginKind::Codec.code(),
                "listed",
            )];
        const API_VERSION: (u16, u16, u16) = API_VERSION;
        fn build(
            _: u8,
            _: &str,
            _: Option<&str>,
        ) -> Option<Result<crate::root::AnyPlugin, crate::root::Failure>> {
            None
        }
    }

    fn in_process_library() -> PluginLibrary {
        PluginLibrary {
            path: "/x/libold.so".into(),
            root: crate::root::root_module::<ListsACodec>(),
            api_version: ApiVersion::HOST,
            features: Vec::new(),
            plugins: vec![PluginInfo {
                kind: PluginKind::Codec,
                name: "listed".into(),
            }],
        }
    }

    #[test]
    fn a_root_module_without_the_kinds_constructor_is_a_load_error() {
        let lib = in_process_library();
        // What the accessor of a constructor field added after `last_prefix_field` returns
        // for a library built before the field existed.
        let missing: Option<crate::root::ConstructFn<crate::FfiCodecBox>> = None;
        let Err(err) = lib.construct(PluginKind::Codec, "listed", None, missing) else {
            panic!("built a codec without a constructor");
        };
        assert_eq!(
            err,
            LoadError::MissingConstructor {
                path: "/x/libold.so".into(),
                kind: PluginKind::Codec,
                name: "listed".into(),
            }
        );
        assert_eq!(
            err.to_string(),
            "/x/libold.so lists codec plugin \"listed\" but its root module has no codec \
             constructor (built with an older plugin ABI)"
        );
        // A plugin the library does not list is unknown, constructor or not.
        let Err(err) = lib.construct(PluginKind::Codec, "other", None, missing) else {
            panic!("built an unlisted codec");
        };
        assert!(matches!(err, LoadError::UnknownPlugin { .. }), "{err:?}");
        // With the field present, the constructor is called (and says it has no such name).
        let err = lib.codec("listed", None).unwrap_err();
        assert!(matches!(err, LoadError::UnknownPlugin { .. }), "{err:?}");
    }

    #[test]
    fn unknown_plugin_messages_list_what_there_is() {
        let e = LoadError::UnknownPlugin {
            path: "/x/libp.so".into(),
            kind: PluginKind::Codec,
            name: "nope".into(),
            available: vec!["codec \"mars\"".into()],
        };
        assert_eq!(
            e.to_string(),
            "/x/libp.so has no codec plugin named \"nope\"; it has: codec \"mars\""
        );
    }
}
