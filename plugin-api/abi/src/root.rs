//! The root module every plugin library exports, and the plugin-side plumbing behind
//! [`export_plugin!`](crate::export_plugin).
//!
//! The root module is an abi_stable prefix type. abi_stable checks its layout (and, through
//! it, the layout of every FFI type and trait vtable) and its own version when a library is
//! loaded. Beside that, the root module carries:
//!
//! - our API version ([`phobos_plugin_api::API_VERSION`]), checked by the loader with semver
//!   rules;
//! - the ABI feature list ([`ABI_FEATURES`]);
//! - the plugins the library offers, each a kind and a name;
//! - one constructor per kind, taking the plugin name and its config as JSON text.
//!
//! Beside the root module, every library exports the plain C version symbol
//! [`API_VERSION_SYMBOL`] ([`ApiVersionSymbol`]), which the loader reads first.
//!
//! Evolution is append-only: a new kind adds its constructor after the current
//! `last_prefix_field`, plugin kinds travel as `u8` codes, and a host ignores entries of kinds
//! it does not know.

use std::fmt;

use abi_stable::library::RootModule;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{ROption, RResult, RSlice, RStr, RString};
use abi_stable::StableAbi;
use serde::de::DeserializeOwned;

use crate::auth::{export_auth, FfiAuthBox};
use crate::cipher::{export_log_cipher, FfiCipherBox};
use crate::codec::{export_codec, FfiCodecBox};
use crate::guard::catch;
use crate::heartbeat::{export_heartbeat, FfiHeartbeatBox};
use crate::ipsource::{export_ip_source, FfiIpSourceBox};

/// What the ABI of this crate version offers, listed in every library's root module.
///
/// A host can ask [`PluginLibrary::has_feature`](crate::PluginLibrary::has_feature) before
/// relying on something added later; new entries are only ever appended.
pub const ABI_FEATURES: &[&str] = &[
    "codec",
    "auth",
    "ip-source",
    "log-cipher",
    "heartbeat",
    "config-json",
    "panic-guard",
];

/// The kinds of plugin a library can export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum PluginKind {
    /// A [`PacketCodec`](phobos_plugin_api::PacketCodec) (`codec` in `export_plugin!`).
    Codec,
    /// An [`AuthCheck`](phobos_plugin_api::AuthCheck) (`auth`).
    Auth,
    /// An [`IpSource`](phobos_plugin_api::IpSource) (`ip_source`).
    IpSource,
    /// A [`LogCipher`](phobos_plugin_api::LogCipher) (`cipher`).
    LogCipher,
    /// A [`HeartbeatPolicyFactory`](phobos_plugin_api::HeartbeatPolicyFactory) (`heartbeat`).
    Heartbeat,
}

impl PluginKind {
    /// Every kind, in code order.
    pub const ALL: [PluginKind; 5] = [
        PluginKind::Codec,
        PluginKind::Auth,
        PluginKind::IpSource,
        PluginKind::LogCipher,
        PluginKind::Heartbeat,
    ];

    /// The keyword used for this kind in `export_plugin!` and in configuration.
    pub fn keyword(self) -> &'static str {
        match self {
            PluginKind::Codec => "codec",
            PluginKind::Auth => "auth",
            PluginKind::IpSource => "ip_source",
            PluginKind::LogCipher => "cipher",
            PluginKind::Heartbeat => "heartbeat",
        }
    }

    /// The code this kind travels as.
    pub const fn code(self) -> u8 {
        match self {
            PluginKind::Codec => 1,
            PluginKind::Auth => 2,
            PluginKind::IpSource => 3,
            PluginKind::LogCipher => 4,
            PluginKind::Heartbeat => 5,
        }
    }

    /// The kind for a code; `None` for codes added by a newer ABI.
    pub fn from_code(code: u8) -> Option<Self> {
        PluginKind::ALL.into_iter().find(|k| k.code() == code)
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())
    }
}

/// Our API version as it travels in the root module.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct FfiApiVersion {
    /// Major.
    pub major: u16,
    /// Minor.
    pub minor: u16,
    /// Patch.
    pub patch: u16,
}

/// The name of the plain C symbol every plugin library exports beside its root module (a
/// `static` [`ApiVersionSymbol`]; [`export_plugin!`](crate::export_plugin) defines it).
///
/// The loader reads it with the system's dynamic loader before abi_stable looks at the library
/// (where libraries are ELF files, only once the file's dynamic symbol table says the library
/// defines it as a data object at least as big as an [`ApiVersionSymbol`]; see
/// `docs/PLUGIN_ABI.md` for other platforms), so a library built for another API version is
/// refused with
/// [`LoadError::IncompatibleApi`](crate::LoadError::IncompatibleApi), not with abi_stable's
/// layout report.
pub const API_VERSION_SYMBOL: &str = "phobos_plugin_api_version";

/// What the [`API_VERSION_SYMBOL`] symbol holds: the `phobos_plugin_api::API_VERSION` a library
/// was built against.
///
/// Its layout is frozen for every API version, past and future (a host must be able to read
/// it from a library of any version): 8 magic bytes ([`ApiVersionSymbol::MAGIC`]), then the
/// major, minor and patch versions as native-endian `u16`s; 14 bytes in all. A library must
/// not export [`API_VERSION_SYMBOL`] as anything smaller: the loader refuses it unread
/// ([`LoadError::MalformedApiVersion`](crate::LoadError::MalformedApiVersion)) where it can
/// learn the size.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiVersionSymbol {
    /// [`ApiVersionSymbol::MAGIC`]: tells this symbol apart from a same-named one of another
    /// shape.
    pub magic: [u8; 8],
    /// Major version.
    pub major: u16,
    /// Minor version.
    pub minor: u16,
    /// Patch version.
    pub patch: u16,
}

impl ApiVersionSymbol {
    /// The first 8 bytes of every version symbol.
    pub const MAGIC: [u8; 8] = *b"PHOBOSv1";

    /// The symbol for API version `(major, minor, patch)`.
    pub const fn new(version: (u16, u16, u16)) -> Self {
        ApiVersionSymbol {
            magic: Self::MAGIC,
            major: version.0,
            minor: version.1,
            patch: version.2,
        }
    }
}

/// One plugin a library offers.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct FfiPluginEntry {
    /// [`PluginKind::code`].
    pub kind: u8,
    /// The plugin's name, unique within its kind in the library.
    pub name: RStr<'static>,
}

impl FfiPluginEntry {
    /// An entry.
    pub const fn new(kind: u8, name: &'static str) -> Self {
        FfiPluginEntry {
            kind,
            name: RStr::from_str(name),
        }
    }
}

/// Why a plugin constructor failed, across the boundary.
#[repr(C, u8)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub enum FfiConstructError {
    /// No plugin of that kind and name.
    UnknownName,
    /// The config did not deserialize, or the constructor returned an error.
    ConfigRejected(RString),
    /// The constructor panicked.
    Panicked(RString),
}

/// A constructor in the root module: `(name, config as JSON text)`. (Spelled out in
/// [`PluginRoot`] because abi_stable's derive must see the function pointer's lifetimes.)
pub(crate) type ConstructFn<T> =
    extern "C" fn(name: RStr<'_>, config: ROption<RStr<'_>>) -> RResult<T, FfiConstructError>;

/// The root module of a plugin library.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginRootRef)))]
// A field added after `last_prefix_field` is missing from older libraries: its accessor
// returns `None` for them (which the loader turns into a `LoadError`), never panics.
#[sabi(missing_field(option))]
pub struct PluginRoot {
    /// The `phobos_plugin_api::API_VERSION` the library was built against.
    pub api_version: FfiApiVersion,
    /// [`ABI_FEATURES`] of the abi crate the library was built with.
    pub features: RSlice<'static, RStr<'static>>,
    /// The plugins offered.
    pub plugins: RSlice<'static, FfiPluginEntry>,
    /// Builds a codec.
    pub new_codec:
        extern "C" fn(RStr<'_>, ROption<RStr<'_>>) -> RResult<FfiCodecBox, FfiConstructError>,
    /// Builds an auth plugin.
    pub new_auth:
        extern "C" fn(RStr<'_>, ROption<RStr<'_>>) -> RResult<FfiAuthBox, FfiConstructError>,
    /// Builds an IP source.
    pub new_ip_source:
        extern "C" fn(RStr<'_>, ROption<RStr<'_>>) -> RResult<FfiIpSourceBox, FfiConstructError>,
    /// Builds a log cipher.
    pub new_log_cipher:
        extern "C" fn(RStr<'_>, ROption<RStr<'_>>) -> RResult<FfiCipherBox, FfiConstructError>,
    /// Builds a heartbeat policy factory.
    #[sabi(last_prefix_field)]
    pub new_heartbeat:
        extern "C" fn(RStr<'_>, ROption<RStr<'_>>) -> RResult<FfiHeartbeatBox, FfiConstructError>,
}

impl RootModule for PluginRootRef {
    abi_stable::declare_root_module_statics! {PluginRootRef}
    const BASE_NAME: &'static str = "phobos_plugin";
    const NAME: &'static str = "phobos_plugin";
    const VERSION_STRINGS: VersionStrings = abi_stable::package_version_strings!();
}

/// A plugin built on the plugin side, before it crosses the boundary.
#[doc(hidden)]
pub enum AnyPlugin {
    Codec(FfiCodecBox),
    Auth(FfiAuthBox),
    IpSource(FfiIpSourceBox),
    LogCipher(FfiCipherBox),
    Heartbeat(FfiHeartbeatBox),
}

/// Why building a plugin failed, on the plugin side.
#[doc(hidden)]
#[derive(Debug)]
pub enum Failure {
    Rejected(String),
    Panicked(String),
}

/// What `export_plugin!` implements: the library's plugin table.
#[doc(hidden)]
pub trait PluginTable: 'static {
    const ENTRIES: &'static [FfiPluginEntry];
    const API_VERSION: (u16, u16, u16);
    fn build(kind: u8, name: &str, config: Option<&str>) -> Option<Result<AnyPlugin, Failure>>;
}

/// Builds the root module for a plugin table.
#[doc(hidden)]
pub fn root_module<P: PluginTable>() -> PluginRootRef {
    static FEATURES: [RStr<'static>; ABI_FEATURES.len()] = {
        let mut out = [RStr::from_str(""); ABI_FEATURES.len()];
        let mut i = 0;
        while i < ABI_FEATURES.len() {
            out[i] = RStr::from_str(ABI_FEATURES[i]);
            i += 1;
        }
        out
    };
    let (major, minor, patch) = P::API_VERSION;
    PluginRoot {
        api_version: FfiApiVersion {
            major,
            minor,
            patch,
        },
        features: RSlice::from_slice(&FEATURES),
        plugins: RSlice::from_slice(P::ENTRIES),
        new_codec: construct::<P, FfiCodecBox, CodecSlot>,
        new_auth: construct::<P, FfiAuthBox, AuthSlot>,
        new_ip_source: construct::<P, FfiIpSourceBox, IpSourceSlot>,
        new_log_cipher: construct::<P, FfiCipherBox, CipherSlot>,
        new_heartbeat: construct::<P, FfiHeartbeatBox, HeartbeatSlot>,
    }
    .leak_into_prefix()
}

/// Deserializes a plugin's config from JSON text. No config at all is read as an empty table
/// (`{}`) and, failing that, as `null`, so both all-default structs and `()` work.
#[doc(hidden)]
pub fn parse_config<C: DeserializeOwned>(text: Option<&str>) -> Result<C, Failure> {
    match text {
        Some(text) => serde_json::from_str(text).map_err(|e| Failure::Rejected(e.to_string())),
        None => serde_json::from_str("{}").or_else(|first| {
            serde_json::from_str("null")
                .map_err(|_| Failure::Rejected(format!("a config is required: {first}")))
        }),
    }
}

/// Selects one kind's box out of [`AnyPlugin`].
trait Slot<T> {
    const KIND: PluginKind;
    fn take(p: AnyPlugin) -> Option<T>;
}

macro_rules! slot {
    ($slot:ident, $ty:ty, $kind:ident) => {
        struct $slot;
        impl Slot<$ty> for $slot {
            const KIND: PluginKind = PluginKind::$kind;
            fn take(p: AnyPlugin) -> Option<$ty> {
                match p {
                    AnyPlugin::$kind(x) => Some(x),
                    _ => None,
                }
            }
        }
    };
}

slot!(CodecSlot, FfiCodecBox, Codec);
slot!(AuthSlot, FfiAuthBox, Auth);
slot!(IpSourceSlot, FfiIpSourceBox, IpSource);
slot!(CipherSlot, FfiCipherBox, LogCipher);
slot!(HeartbeatSlot, FfiHeartbeatBox, Heartbeat);

extern "C" fn construct<P: PluginTable, T, S: Slot<T>>(
    name: RStr<'_>,
    config: ROption<RStr<'_>>,
) -> RResult<T, FfiConstructError> {
    let config = config.into_option().map(|c| c.as_str());
    let built = catch(|| P::build(S::KIND.code(), name.as_str(), config));
    match built {
        Ok(Some(Ok(plugin))) => match S::take(plugin) {
            Some(obj) => RResult::ROk(obj),
            // The macro pairs each kind with its own wrapper, so this cannot happen; answer
            // as for an unknown name rather than trusting it.
            None => RResult::RErr(FfiConstructError::UnknownName),
        },
        Ok(Some(Err(Failure::Rejected(msg)))) => {
            RResult::RErr(FfiConstructError::ConfigRejected(msg.into()))
        }
        Ok(Some(Err(Failure::Panicked(msg)))) | Err(msg) => {
            RResult::RErr(FfiConstructError::Panicked(msg.into()))
        }
        Ok(None) => RResult::RErr(FfiConstructError::UnknownName),
    }
}

/// Per-kind helpers used by `export_plugin!`, named after the macro's kind keywords.
#[doc(hidden)]
pub mod kinds {
    /// `codec`.
    pub mod codec {
        use super::super::{export_codec, AnyPlugin, Failure, PluginKind};

        pub const KIND: u8 = PluginKind::Codec.code();

        pub fn wrap<T: phobos_plugin_api::PacketCodec>(v: T) -> Result<AnyPlugin, Failure> {
            export_codec(v)
                .map(AnyPlugin::Codec)
                .map_err(Failure::Panicked)
        }
    }

    /// `auth`.
    pub mod auth {
        use super::super::{export_auth, AnyPlugin, Failure, PluginKind};

        pub const KIND: u8 = PluginKind::Auth.code();

        pub fn wrap<T: phobos_plugin_api::AuthCheck>(v: T) -> Result<AnyPlugin, Failure> {
            export_auth(v)
                .map(AnyPlugin::Auth)
                .map_err(Failure::Panicked)
        }
    }

    /// `ip_source`.
    pub mod ip_source {
        use super::super::{export_ip_source, AnyPlugin, Failure, PluginKind};

        pub const KIND: u8 = PluginKind::IpSource.code();

        pub fn wrap<T: phobos_plugin_api::IpSource>(v: T) -> Result<AnyPlugin, Failure> {
            export_ip_source(v)
                .map(AnyPlugin::IpSource)
                .map_err(Failure::Panicked)
        }
    }

    /// `cipher`.
    pub mod cipher {
        use super::super::{export_log_cipher, AnyPlugin, Failure, PluginKind};

        pub const KIND: u8 = PluginKind::LogCipher.code();

        pub fn wrap<T: phobos_plugin_api::LogCipher>(v: T) -> Result<AnyPlugin, Failure> {
            export_log_cipher(v)
                .map(AnyPlugin::LogCipher)
                .map_err(Failure::Panicked)
        }
    }

    /// `heartbeat`.
    pub mod heartbeat {
        use super::super::{export_heartbeat, AnyPlugin, Failure, PluginKind};

        pub const KIND: u8 = PluginKind::Heartbeat.code();

        pub fn wrap<T: phobos_plugin_api::HeartbeatPolicyFactory>(
            v: T,
        ) -> Result<AnyPlugin, Failure> {
            export_heartbeat(v)
                .map(AnyPlugin::Heartbeat)
                .map_err(Failure::Panicked)
        }
    }
}

/// Carries a constructor's return value to the autoref-dispatched conversion below, so the
/// macro accepts constructors returning either `T` or `Result<T, E: Display>`.
#[doc(hidden)]
pub struct Constructed<T>(std::cell::Cell<Option<T>>);

impl<T> Constructed<T> {
    #[doc(hidden)]
    pub fn new(value: T) -> Self {
        Constructed(std::cell::Cell::new(Some(value)))
    }
}

/// Picked (by autoref) when the constructor returned a `Result`.
#[doc(hidden)]
pub trait ViaResult {
    type Value;
    fn __phobos_into_result(&self) -> Result<Self::Value, String>;
}

impl<T, E: fmt::Display> ViaResult for &Constructed<Result<T, E>> {
    type Value = T;
    fn __phobos_into_result(&self) -> Result<T, String> {
        match self.0.take() {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(e.to_string()),
            None => Err(TAKEN.to_owned()),
        }
    }
}

/// Picked when the constructor returned the plugin itself.
#[doc(hidden)]
pub trait ViaValue {
    type Value;
    fn __phobos_into_result(&self) -> Result<Self::Value, String>;
}

impl<T> ViaValue for Constructed<T> {
    type Value = T;
    fn __phobos_into_result(&self) -> Result<T, String> {
        self.0.take().ok_or_else(|| TAKEN.to_owned())
    }
}

const TAKEN: &str = "constructor result taken twice";

#[cfg(test)]
mod tests {
    //! How the root module evolves: a host whose root module has a field after
    //! `last_prefix_field` reading the root module of a library built before that field,
    //! in-process (a `LibHeader` is what a library exports).

    use abi_stable::library::{CheckTypeLayout, LibHeader, RootModule, RootModuleResult};
    use abi_stable::prefix_type::PrefixTypeTrait;
    use abi_stable::sabi_types::VersionStrings;
    use abi_stable::StableAbi;

    /// The root module as an older library built it.
    #[allow(dead_code)] // Its accessors are the host's business; only the newer one is read.
    mod older {
        use super::*;

        #[repr(C)]
        #[derive(StableAbi)]
        #[sabi(kind(Prefix(prefix_ref = TestRootRef)))]
        #[sabi(missing_field(option))]
        pub(super) struct TestRoot {
            #[sabi(last_prefix_field)]
            pub(super) first: u32,
        }

        impl RootModule for TestRootRef {
            abi_stable::declare_root_module_statics! {TestRootRef}
            const BASE_NAME: &'static str = "test_root";
            const NAME: &'static str = "test_root";
            const VERSION_STRINGS: VersionStrings = abi_stable::package_version_strings!();
        }
    }

    /// The same root module in a newer host: one field appended, with the policy of
    /// `PluginRoot`.
    mod newer {
        use super::*;

        #[repr(C)]
        #[derive(StableAbi)]
        #[sabi(kind(Prefix(prefix_ref = TestRootRef)))]
        #[sabi(missing_field(option))]
        pub(super) struct TestRoot {
            #[sabi(last_prefix_field)]
            pub(super) first: u32,
            pub(super) second: u32,
        }

        impl RootModule for TestRootRef {
            abi_stable::declare_root_module_statics! {TestRootRef}
            const BASE_NAME: &'static str = "test_root";
            const NAME: &'static str = "test_root";
            const VERSION_STRINGS: VersionStrings = abi_stable::package_version_strings!();
        }
    }

    extern "C" fn older_library() -> RootModuleResult {
        abi_stable::library::__call_root_module_loader(|| {
            older::TestRoot { first: 7 }.leak_into_prefix()
        })
    }

    // SAFETY (both): `older_library` returns the erased `older::TestRootRef` named here.
    static CHECKED: LibHeader = unsafe {
        LibHeader::from_constructor::<older::TestRootRef>(older_library, CheckTypeLayout::Yes)
    };
    static UNCHECKED: LibHeader = unsafe {
        LibHeader::from_constructor::<older::TestRootRef>(older_library, CheckTypeLayout::No)
    };

    #[test]
    fn abi_stables_check_refuses_a_root_module_with_fewer_fields() {
        let err = match CHECKED.init_root_module::<newer::TestRootRef>() {
            Ok(_) => panic!("an older root module passed the layout check"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("too many fields"), "{err}");
    }

    #[test]
    fn a_field_an_older_library_lacks_reads_as_none() {
        // Only a library whose header skips the layout check gets this far (in-process: the
        // loader refuses such a library, `LoadError::LayoutUnchecked`).
        let root = UNCHECKED
            .init_root_module::<newer::TestRootRef>()
            .unwrap_or_else(|e| panic!("an unchecked module is not checked: {e}"));
        assert_eq!(root.first(), 7);
        assert_eq!(root.second(), None);
    }

    #[test]
    fn the_plugin_root_reads_missing_fields_as_none() {
        // The attribute on `PluginRoot` itself; the test above shows what it does.
        let source = include_str!("root.rs");
        let declared = source
            .split("pub struct PluginRoot {")
            .next()
            .and_then(|before| before.rsplit("#[derive(StableAbi)]").next())
            .unwrap_or_default();
        assert!(
            declared.contains("#[sabi(missing_field(option))]"),
            "PluginRoot's attributes: {declared}"
        );
    }
}
