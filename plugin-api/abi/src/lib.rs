//! Stable-ABI mirror of the Phobos plugin traits and the dynamic-library loader.
//!
//! The ergonomic traits in `phobos-plugin-api` are the source of truth. This crate is a
//! translation layer at the edge: each trait has one FFI mirror (an abi_stable `#[sabi_trait]`
//! using `RSlice`/`RVec`/`RResult`) and two adapters,
//!
//! | Trait | FFI mirror | Plugin side (Rust → FFI) | Host side (FFI → `Arc<dyn _>`) |
//! |---|---|---|---|
//! | `PacketCodec` | [`FfiPacketCodec`] | [`export_codec`] | [`import_codec`] |
//! | `AuthCheck` | [`FfiAuthCheck`] | [`export_auth`] | [`import_auth`] |
//! | `IpSource` | [`FfiIpSource`] | [`export_ip_source`] | [`import_ip_source`] |
//! | `LogCipher` (+ encryptor, decryptor) | [`FfiLogCipher`] | [`export_log_cipher`] | [`import_log_cipher`] |
//! | `HeartbeatPolicyFactory` (+ policy) | [`FfiHeartbeatFactory`] | [`export_heartbeat`] | [`import_heartbeat`] |
//!
//! so a plugin loaded from a library is, to the framework, just another `Arc<dyn Trait>`.
//!
//! # Writing a plugin library
//!
//! Plain Rust plus one macro invocation. Each entry is a kind keyword (`codec`, `auth`,
//! `ip_source`, `cipher`, `heartbeat`), a name, and a constructor taking the plugin's config
//! (any `serde::Deserialize` type) and returning the plugin or `Result<plugin, E: Display>`:
//!
//! ```ignore
//! // src/dynamic.rs of a crate with crate-type = ["rlib", "cdylib"]
//! phobos_plugin_abi::export_plugin! {
//!     codec "mars" => |cfg: MarsCodecConfig| MarsCodec::new(cfg),
//!     cipher "mars-tea" => TeaCipher::from_config,
//! }
//! ```
//!
//! The config arrives as JSON text and is deserialized on the plugin's side; when the host
//! gives none, `{}` (then `null`) is tried, so all-default config structs and `()` work. A
//! deserialization error or an `Err` from the constructor reaches the host as
//! [`LoadError::ConfigRejected`] with the plugin's message.
//!
//! # Loading plugins
//!
//! ```no_run
//! use phobos_plugin_abi::PluginLibrary;
//!
//! # fn main() -> Result<(), phobos_plugin_abi::LoadError> {
//! let lib = PluginLibrary::load("target/release/libphobos_codec_mars.so")?;
//! let codec = lib.codec("mars", Some(r#"{ "client_version": 200 }"#))?;
//! # let _ = codec; Ok(()) }
//! ```
//!
//! A library is loaded once per file and never unloaded. The loader refuses, each with its own
//! [`LoadError`] variant naming the file: a missing file, a file the dynamic loader refuses, a
//! library without our root module, a plugin library without the version symbol
//! ([`API_VERSION_SYMBOL`]) or with one too small to hold a version, a library built for a
//! semver-incompatible Phobos API ([`ApiVersion::is_compatible_with`]), a library whose
//! abi_stable header skips the layout check, and a failed abi_stable layout/version check. The
//! version symbol is read before abi_stable looks at the library (where libraries are ELF
//! files, only once the file's dynamic symbol table says it is big enough), and a library
//! refused for it is unloaded again.
//!
//! # Panics
//!
//! A panic inside a plugin never unwinds across the boundary: every plugin-side adapter
//! catches it. Methods with an error channel return an error saying the plugin panicked;
//! infallible methods use a documented safe fallback (see the tables in [`codec`], [`auth`],
//! [`ipsource`], [`cipher`], [`heartbeat`]). A plugin object whose `Drop` panics is dropped
//! under the same guard (whatever it failed to release leaks). Nothing in this crate aborts
//! the process.
//!
//! # Async plugins
//!
//! `IpSource::resolve` and `AuthCheck::ensure_authed` cross the boundary as synchronous
//! calls: the plugin side drives the plugin's future to completion with a minimal executor,
//! and the host-side adapter's `async fn` blocks its thread for the duration. Dynamically
//! loaded IO plugins therefore block the calling thread; their adapters say so
//! (`is_blocking()` is `true`), and the driver runs those calls on a thread of its own, never
//! on its event loop or a runtime worker.
//!
//! # What this crate does not do
//!
//! It does not pick plugins by configuration (that is `phobos-plugin-registry`), unload
//! libraries, or sandbox them: a loaded library runs with the host's privileges.

#![allow(unsafe_code)]
// `#[sabi_trait]` expands to impls inside a generated `const` block.
#![allow(non_local_definitions)]

pub mod auth;
pub mod cipher;
pub mod codec;
mod guard;
pub mod heartbeat;
pub mod ipsource;
mod loader;
mod root;
// Where `object::read::NativeFile` is ELF (the same condition is on the dependency).
#[cfg(all(unix, not(target_vendor = "apple"), not(target_os = "aix")))]
mod symbol_table;
pub mod types;

pub use auth::{export_auth, import_auth, FfiAuthBox, FfiAuthCheck};
pub use cipher::{
    export_log_cipher, import_log_cipher, FfiBlockDecryptor, FfiBlockEncryptor, FfiCipherBox,
    FfiLogCipher,
};
pub use codec::{export_codec, import_codec, FfiCodecBox, FfiPacketCodec};
pub use heartbeat::{
    export_heartbeat, import_heartbeat, FfiHeartbeatBox, FfiHeartbeatFactory, FfiHeartbeatPolicy,
};
pub use ipsource::{export_ip_source, import_ip_source, FfiIpSource, FfiIpSourceBox};
pub use loader::{ApiVersion, LoadError, PluginInfo, PluginLibrary};
pub use root::{
    ApiVersionSymbol, PluginKind, PluginRoot, PluginRootRef, ABI_FEATURES, API_VERSION_SYMBOL,
};

/// Exports plugins from a `cdylib`: the one line a plugin author writes.
///
/// ```ignore
/// phobos_plugin_abi::export_plugin! {
///     codec "mars" => |cfg: MarsCodecConfig| MarsCodec::new(cfg),
///     auth "token" => |_: ()| TokenAuth::default(),
///     ip_source "static" => StaticList::new,
///     cipher "mars-tea" => |cfg: TeaConfig| TeaCipher::new(cfg),
///     heartbeat "smart" => |cfg: SmartConfig| SmartHeartbeat::new(cfg),
/// }
/// ```
///
/// Each entry is `KIND "NAME" => CONSTRUCTOR`:
///
/// - `KIND` is `codec`, `auth`, `ip_source`, `cipher` or `heartbeat`;
/// - `NAME` is the string the host asks for; unique per kind;
/// - `CONSTRUCTOR` is anything callable with one argument whose type implements
///   `serde::de::DeserializeOwned` (a closure with a typed argument, or a function path), and
///   returning the plugin, or `Result<plugin, E>` with `E: Display` (an `Err` becomes
///   [`LoadError::ConfigRejected`] with `E`'s message).
///
/// Use it once per library. It generates the abi_stable root module (our API version, the
/// feature list and the plugin table) under abi_stable's exported symbol name, and the plain C
/// version symbol [`API_VERSION_SYMBOL`] the loader checks first. Because those symbols have
/// fixed names, two crates expanding this macro cannot be linked into the same
/// binary: put the invocation behind a `dynamic` feature that is enabled only when the crate
/// itself is built as the `cdylib` (`cargo build -p my-plugin --features dynamic`).
#[macro_export]
macro_rules! export_plugin {
    ($($kind:ident $name:literal => $ctor:expr),+ $(,)?) => {
        $crate::__export_plugin_with_version! {
            $crate::__private::API_VERSION;
            $($kind $name => $ctor),+
        }
    };
}

/// [`export_plugin!`] claiming another API version: only for testing the loader's version
/// check. Not part of the public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_plugin_with_version {
    ($version:expr; $($kind:ident $name:literal => $ctor:expr),+ $(,)?) => {
        $crate::__export_api_version!($version);
        $crate::__export_plugin_root! {
            $version;
            $($kind $name => $ctor),+
        }
    };
}

/// The version symbol ([`API_VERSION_SYMBOL`]) of [`export_plugin!`] alone, claiming
/// `$version`. Not part of the public API (the loader's tests use it).
#[doc(hidden)]
#[macro_export]
macro_rules! __export_api_version {
    ($version:expr) => {
        const _: () = {
            // The name is `API_VERSION_SYMBOL` (a unit test keeps the two equal).
            #[allow(unsafe_code)]
            #[unsafe(export_name = "phobos_plugin_api_version")]
            static __PHOBOS_API_VERSION: $crate::__private::ApiVersionSymbol =
                $crate::__private::ApiVersionSymbol::new($version);
        };
    };
}

/// The root module of [`export_plugin!`] alone, without the version symbol: what a library
/// built before the symbol existed exports. Not part of the public API (the loader's tests use
/// it).
#[doc(hidden)]
#[macro_export]
macro_rules! __export_plugin_root {
    ($version:expr; $($kind:ident $name:literal => $ctor:expr),+ $(,)?) => {
        const _: () = {
            struct __PhobosPluginTable;

            impl $crate::__private::PluginTable for __PhobosPluginTable {
                const ENTRIES: &'static [$crate::__private::FfiPluginEntry] = &[
                    $($crate::__private::FfiPluginEntry::new(
                        $crate::__private::kinds::$kind::KIND,
                        $name,
                    ),)+
                ];
                const API_VERSION: (u16, u16, u16) = $version;

                fn build(
                    kind: u8,
                    name: &str,
                    config: ::core::option::Option<&str>,
                ) -> ::core::option::Option<
                    ::core::result::Result<
                        $crate::__private::AnyPlugin,
                        $crate::__private::Failure,
                    >,
                > {
                    #[allow(unused_imports)]
                    use $crate::__private::{ViaResult as _, ViaValue as _};
                    $(
                        if kind == $crate::__private::kinds::$kind::KIND && name == $name {
                            let built = (|| -> ::core::result::Result<
                                $crate::__private::AnyPlugin,
                                $crate::__private::Failure,
                            > {
                                let config = $crate::__private::parse_config(config)?;
                                let made = ($ctor)(config);
                                let plugin = (&&$crate::__private::Constructed::new(made))
                                    .__phobos_into_result()
                                    .map_err($crate::__private::Failure::Rejected)?;
                                $crate::__private::kinds::$kind::wrap(plugin)
                            })();
                            return ::core::option::Option::Some(built);
                        }
                    )+
                    ::core::option::Option::None
                }
            }

            fn __phobos_root_module() -> $crate::__private::PluginRootRef {
                $crate::__private::root_module::<__PhobosPluginTable>()
            }

            // The name abi_stable's loader looks for (`ROOT_MODULE_LOADER_NAME`; a unit test
            // keeps the two equal).
            #[allow(unsafe_code)]
            #[unsafe(export_name = "_1as_0lib_1header_0root_bmodule_bloader")]
            static __PHOBOS_LIB_HEADER: $crate::__private::LibHeader = {
                extern "C" fn __phobos_init() -> $crate::__private::RootModuleResult {
                    $crate::__private::call_root_module_loader(__phobos_root_module)
                }
                // SAFETY: `__phobos_init` returns the erased form of the `PluginRootRef` that
                // `root_module` builds, the module type named here.
                unsafe {
                    $crate::__private::LibHeader::from_constructor::<
                        $crate::__private::PluginRootRef,
                    >(__phobos_init, $crate::__private::CheckTypeLayout::Yes)
                }
            };
        };
    };
}

/// Items the macros expand to. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use abi_stable::library::__call_root_module_loader as call_root_module_loader;
    pub use abi_stable::library::{CheckTypeLayout, LibHeader, RootModuleResult};

    pub use crate::root::{
        kinds, parse_config, root_module, AnyPlugin, ApiVersionSymbol, Constructed, Failure,
        FfiPluginEntry, PluginRootRef, PluginTable, ViaResult, ViaValue,
    };

    /// The API version this crate was built against.
    pub const API_VERSION: (u16, u16, u16) = phobos_plugin_api::API_VERSION;
}

#[cfg(test)]
mod tests {
    #[test]
    fn macro_exports_under_abi_stables_symbol_name() {
        assert_eq!(
            abi_stable::library::ROOT_MODULE_LOADER_NAME,
            "_1as_0lib_1header_0root_bmodule_bloader"
        );
    }

    #[test]
    fn macro_exports_the_version_under_its_documented_name() {
        let source = include_str!("lib.rs");
        let spelled = format!("#[unsafe(export_name = \"{}\")]", crate::API_VERSION_SYMBOL);
        assert!(source.contains(&spelled), "{spelled}");
    }
}
