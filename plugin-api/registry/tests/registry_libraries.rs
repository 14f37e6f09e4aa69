//! Plugins from dynamic libraries: named in the config with `library`, or made available by
//! `Registry::load_library` and then chosen by name.

#[path = "../../abi/tests/common/mod.rs"]
mod common;

use common::fixtures;
use phobos_plugin_api::codec::FrameHead;
use phobos_plugin_api::{CmdId, Seq};
use phobos_plugin_registry::{LoadError, Origin, PluginKind, Registry, RegistryError};

fn toml_path(p: &std::path::Path) -> String {
    // TOML basic strings need backslashes escaped (Windows paths).
    p.display().to_string().replace('\\', "\\\\")
}

#[test]
fn a_table_with_library_loads_that_plugin_and_remembers_the_path() {
    let text = format!(
        "[plugins.codec]\nlibrary = \"{}\"\nname = \"mars\"\nconfig = {{ client_version = 9 }}\n",
        toml_path(&fixtures().mars)
    );
    let p = Registry::with_builtins().build_from_toml(&text).unwrap();
    assert_eq!(p.codec.name(), "mars");
    let Origin::Library(path) = p.codec.origin() else {
        panic!("unexpected origin {:?}", p.codec.origin());
    };
    assert!(path.ends_with(fixtures().mars.file_name().unwrap()));
    let mut wire = Vec::new();
    p.codec
        .encode(FrameHead::new(CmdId(1), Seq(2)), b"", &[], &mut wire)
        .unwrap();
    assert_eq!(&wire[4..8], &9u32.to_be_bytes());
}

#[test]
fn load_library_makes_its_plugins_available_by_name() {
    let mut registry = Registry::with_builtins();
    let lib = registry.load_library(&fixtures().multi).unwrap();
    assert!(registry
        .available(PluginKind::LogCipher)
        .iter()
        .any(|n| n.starts_with("xor (") && n.contains("libfixture_multi")));
    let p = registry
        .build_from_toml(
            r#"
            [plugins]
            codec = { name = "len", config = { level = 1 } }
            auth = "once"
            heartbeat = { name = "step", config = 30 }
            ip_sources = [{ name = "list", config = { addrs = ["10.9.8.7"] } }, "backup"]
            cipher = "xor"
            "#,
        )
        .unwrap();
    for origin in [
        p.codec.origin(),
        p.auth.origin(),
        p.heartbeat.origin(),
        p.ip_sources[0].origin(),
        p.log_cipher.as_ref().unwrap().origin(),
    ] {
        assert_eq!(origin, &Origin::Library(lib.path().to_owned()));
    }
    assert_eq!(p.ip_sources[1].origin(), &Origin::BuiltIn);
    assert_eq!(p.heartbeat.export_state().as_deref(), Some("30"));
}

#[test]
fn a_library_plugin_config_error_carries_the_plugins_message_and_the_field() {
    let text = format!(
        "[plugins.codec]\nlibrary = \"{}\"\nname = \"len\"\nconfig = {{ level = 1, extra = true }}\n",
        toml_path(&fixtures().multi)
    );
    let err = Registry::with_builtins()
        .build_from_toml(&text)
        .unwrap_err();
    let RegistryError::Load { field, error } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(field, "plugins.codec");
    assert!(
        matches!(error, LoadError::ConfigRejected { message, .. } if message.contains("unknown field `extra`")),
        "{error:?}"
    );
    assert!(
        err.to_string()
            .starts_with("plugins.codec: codec plugin \"len\" from "),
        "{err}"
    );
}

#[test]
fn a_missing_library_is_a_load_error_naming_field_and_file() {
    let err = Registry::with_builtins()
        .build_from_toml("[plugins.cipher]\nlibrary = \"/no/such/libcipher.so\"\nname = \"x\"")
        .unwrap_err();
    assert_eq!(
        err,
        RegistryError::Load {
            field: "plugins.cipher".into(),
            error: LoadError::FileMissing {
                path: "/no/such/libcipher.so".into()
            },
        }
    );
    assert_eq!(
        err.to_string(),
        "plugins.cipher: plugin library /no/such/libcipher.so does not exist"
    );
    let mut registry = Registry::with_builtins();
    let err = registry.load_library(&fixtures().no_root).unwrap_err();
    assert!(
        matches!(
            &err,
            RegistryError::Load {
                error: LoadError::NoRootModule { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_library_name_unknown_in_that_library_lists_its_plugins() {
    let text = format!(
        "[plugins]\nauth = {{ library = \"{}\", name = \"mars\" }}\n",
        toml_path(&fixtures().mars)
    );
    let err = Registry::with_builtins()
        .build_from_toml(&text)
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::Load { error: LoadError::UnknownPlugin { available, .. }, .. }
            if available == &["codec \"mars\""]),
        "{err:?}"
    );
}

#[test]
fn a_name_offered_by_more_than_one_origin_must_be_named_with_its_library() {
    // Before, `codec = "mars"` silently built the built-in though a library offering "mars"
    // had been loaded for it (and of two libraries, the first loaded won).
    let mut registry = Registry::with_builtins();
    registry.load_library(&fixtures().mars).unwrap();
    let err = registry
        .build_from_toml("[plugins]\ncodec = \"mars\"\n")
        .unwrap_err();
    let RegistryError::AmbiguousPlugin { origins, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(origins.len(), 2, "{origins:?}");
    assert_eq!(origins[0], "built-in");
    let text = err.to_string();
    assert!(
        text.contains("built-in")
            && text.contains("libphobos_codec_mars")
            && text.contains("library"),
        "{text}"
    );
    // Naming the library picks it.
    let text = format!(
        "[plugins.codec]\nlibrary = \"{}\"\nname = \"mars\"\n",
        toml_path(&fixtures().mars)
    );
    let p = registry.build_from_toml(&text).unwrap();
    assert!(matches!(p.codec.origin(), Origin::Library(_)));
    // A name only one origin offers still resolves by name.
    registry.load_library(&fixtures().multi).unwrap();
    let p = registry
        .build_from_toml("[plugins]\ncodec = { name = \"len\", config = { level = 1 } }\n")
        .unwrap();
    assert!(matches!(p.codec.origin(), Origin::Library(_)));
}
