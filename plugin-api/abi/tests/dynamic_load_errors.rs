//! Every way loading a plugin library or a plugin can fail, against real files and libraries.
//! Each test checks the `LoadError` variant and that the message names the file or plugin and
//! the reason.

mod common;

use std::path::PathBuf;

use common::fixtures;
use phobos_plugin_abi::{ApiVersion, LoadError, PluginKind, PluginLibrary};

fn load_err(path: &std::path::Path) -> LoadError {
    match PluginLibrary::load(path) {
        Ok(lib) => panic!("{} loaded unexpectedly: {lib:?}", path.display()),
        Err(e) => e,
    }
}

#[test]
fn a_missing_file_is_file_missing() {
    let path = PathBuf::from("/nonexistent/dir/libnothing.so");
    let err = load_err(&path);
    assert_eq!(err, LoadError::FileMissing { path: path.clone() });
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/dir/libnothing.so"), "{msg}");
    assert!(msg.contains("does not exist"), "{msg}");
}

#[test]
fn a_text_file_is_not_a_library() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libfake.so");
    std::fs::write(&path, "this is a text file, not a shared object\n").unwrap();
    let err = load_err(&path);
    let LoadError::NotALibrary { path: p, reason } = &err else {
        panic!("expected NotALibrary, got {err:?}");
    };
    assert!(p.ends_with("libfake.so"));
    assert!(!reason.is_empty());
    let msg = err.to_string();
    assert!(
        msg.contains("libfake.so") && msg.contains("not a loadable library"),
        "{msg}"
    );
}

#[test]
fn a_library_without_our_root_module_is_refused() {
    let path = &fixtures().no_root;
    let err = load_err(path);
    assert!(matches!(err, LoadError::NoRootModule { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("libfixture_no_root"), "{msg}");
    assert!(msg.contains("not a Phobos plugin library"), "{msg}");
}

#[test]
fn a_library_whose_root_module_has_another_layout_fails_abi_stables_check() {
    let path = &fixtures().foreign_root;
    let err = load_err(path);
    let LoadError::AbiMismatch { reason, .. } = &err else {
        panic!("expected AbiMismatch, got {err:?}");
    };
    assert!(!reason.is_empty());
    let msg = err.to_string();
    assert!(msg.contains("libfixture_foreign_root"), "{msg}");
    assert!(msg.contains("incompatible plugin ABI"), "{msg}");
}

#[test]
fn a_library_for_another_api_major_version_is_refused_naming_both_versions() {
    let path = &fixtures().wrong_api;
    let err = load_err(path);
    let LoadError::IncompatibleApi { found, host, .. } = &err else {
        panic!("expected IncompatibleApi, got {err:?}");
    };
    assert_eq!(
        *found,
        ApiVersion {
            major: 1,
            minor: 0,
            patch: 0
        }
    );
    assert_eq!(*host, ApiVersion::HOST);
    let msg = err.to_string();
    assert!(msg.contains("libfixture_wrong_api"), "{msg}");
    assert!(msg.contains("1.0.0"), "{msg}");
    assert!(msg.contains(&ApiVersion::HOST.to_string()), "{msg}");
    // The refusal is stable: asking again gives the same error.
    assert_eq!(load_err(path), err);
}

#[test]
fn an_unknown_plugin_name_lists_what_the_library_has() {
    let lib = PluginLibrary::load(&fixtures().multi).unwrap();
    let err = lib.codec("nope", None).unwrap_err();
    let LoadError::UnknownPlugin {
        kind,
        name,
        available,
        ..
    } = &err
    else {
        panic!("expected UnknownPlugin, got {err:?}");
    };
    assert_eq!(*kind, PluginKind::Codec);
    assert_eq!(name, "nope");
    assert_eq!(available.len(), 5);
    let msg = err.to_string();
    assert!(msg.contains("libfixture_multi"), "{msg}");
    assert!(msg.contains("no codec plugin named \"nope\""), "{msg}");
    for listed in [
        "codec \"len\"",
        "auth \"once\"",
        "ip_source \"list\"",
        "cipher \"xor\"",
        "heartbeat \"step\"",
    ] {
        assert!(msg.contains(listed), "{msg} lacks {listed}");
    }
    // A name that exists, but for another kind, is unknown for this kind.
    let err = lib.auth("len", None).unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::UnknownPlugin {
                kind: PluginKind::Auth,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_config_that_does_not_deserialize_is_rejected_with_the_plugins_message() {
    let lib = PluginLibrary::load(&fixtures().multi).unwrap();
    let err = lib
        .codec("len", Some(r#"{ "level": 1, "colour": "red" }"#))
        .unwrap_err();
    let LoadError::ConfigRejected {
        kind,
        name,
        message,
        ..
    } = &err
    else {
        panic!("expected ConfigRejected, got {err:?}");
    };
    assert_eq!((*kind, name.as_str()), (PluginKind::Codec, "len"));
    assert!(message.contains("unknown field `colour`"), "{message}");
    let msg = err.to_string();
    assert!(
        msg.contains("codec plugin \"len\"") && msg.contains("libfixture_multi"),
        "{msg}"
    );
    assert!(msg.contains("rejected its config"), "{msg}");

    let missing = lib.codec("len", None).unwrap_err();
    assert!(
        matches!(&missing, LoadError::ConfigRejected { message, .. } if message.contains("level")),
        "{missing:?}"
    );
    let not_json = lib.codec("len", Some("level = 1")).unwrap_err();
    assert!(
        matches!(not_json, LoadError::ConfigRejected { .. }),
        "{not_json:?}"
    );
}

#[test]
fn a_constructor_error_is_a_rejected_config() {
    let lib = PluginLibrary::load(&fixtures().multi).unwrap();
    let err = lib.codec("len", Some(r#"{ "level": 9 }"#)).unwrap_err();
    assert!(
        matches!(&err, LoadError::ConfigRejected { message, .. }
            if message == "level 9 is above the maximum of 3"),
        "{err:?}"
    );
    assert!(lib.codec("len", Some(r#"{ "level": 2 }"#)).is_ok());
}

#[test]
fn a_panicking_constructor_is_reported_and_the_process_lives_on() {
    let lib = PluginLibrary::load(&fixtures().panicking).unwrap();
    let err = lib.codec("boom", None).unwrap_err();
    let LoadError::ConstructorPanicked { name, message, .. } = &err else {
        panic!("expected ConstructorPanicked, got {err:?}");
    };
    assert_eq!(name, "boom");
    assert!(
        message.contains("constructor exploded on purpose"),
        "{message}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("libfixture_panicking") && msg.contains("panicked"),
        "{msg}"
    );
    // The library still works after the panic.
    assert!(lib.codec("len", Some(r#"{ "level": 0 }"#)).is_ok());
}

#[test]
fn a_library_is_loaded_once() {
    let a = PluginLibrary::load(&fixtures().multi).unwrap();
    let b = PluginLibrary::load(&fixtures().multi).unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    assert_eq!(a.api_version(), ApiVersion::HOST);
    for f in phobos_plugin_abi::ABI_FEATURES {
        assert!(a.has_feature(f), "{f}");
    }
}
