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

/// A path that names no regular file is refused before the system's dynamic loader sees
/// it: given a named pipe, `dlopen` blocks in `open` holding its own lock, and every later
/// `dlopen` and new thread of the process would wait for it. (The run is guarded, so a hang
/// fails the test; no time passes when it passes.)
#[cfg(unix)]
#[test]
fn a_named_pipe_or_a_folder_is_not_a_library_and_does_not_hang_the_loader() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("libpipe.so");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let folder = dir.path().join("libfolder.so");
    std::fs::create_dir(&folder).unwrap();
    for path in [folder, fifo] {
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(PluginLibrary::load(&p).map(|_| ()));
        });
        let res = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("loading {} hung", path.display()));
        let Err(LoadError::NotALibrary { reason, .. }) = &res else {
            panic!("expected NotALibrary, got {res:?}");
        };
        assert!(reason.contains("not a regular file"), "{reason}");
    }
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
fn a_same_named_symbol_of_another_shape_is_not_taken_for_a_version() {
    // All zeros: read as a version it would be 0.0.0, refused as incompatible.
    let err = load_err(&fixtures().impostor);
    assert!(matches!(err, LoadError::NoRootModule { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("libfixture_impostor"), "{msg}");
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
fn a_library_for_an_api_whose_types_changed_is_refused_for_its_version_not_its_layout() {
    let path = &fixtures().breaking_api;
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
    // One short line, not abi_stable's layout report.
    let msg = err.to_string();
    assert!(msg.contains("libfixture_breaking_api"), "{msg}");
    assert!(msg.contains("1.0.0"), "{msg}");
    assert!(msg.len() < 300 && !msg.contains('\n'), "{msg}");
}

#[cfg(all(unix, not(target_vendor = "apple"), not(target_os = "aix")))]
#[test]
fn a_version_symbol_shorter_than_a_version_is_refused_unread() {
    // ELF only: elsewhere the loader cannot learn the symbol's size (docs/PLUGIN_ABI.md).
    // Its 8 bytes are the magic ones; read as a whole version symbol, the 6 bytes after them
    // would be taken for a version (or, at the end of a mapped page, fault).
    let path = &fixtures().short_version;
    let err = load_err(path);
    let LoadError::MalformedApiVersion { path: p, reason } = &err else {
        panic!("expected MalformedApiVersion, got {err:?}");
    };
    assert!(p.ends_with("libfixture_short_version.so"), "{p:?}");
    assert_eq!(reason, "it is 8 bytes long, a version symbol is 14");
    let msg = err.to_string();
    assert!(msg.contains("libfixture_short_version"), "{msg}");
    assert!(
        msg.contains(&format!(
            "malformed {} symbol",
            phobos_plugin_abi::API_VERSION_SYMBOL
        )),
        "{msg}"
    );
    assert!(msg.len() < 300 && !msg.contains('\n'), "{msg}");
}

#[cfg(all(unix, not(target_vendor = "apple"), not(target_os = "aix")))]
#[test]
fn a_version_symbol_that_is_not_data_is_refused_unread() {
    // ELF only: elsewhere the loader cannot learn the symbol's kind (docs/PLUGIN_ABI.md).
    let err = load_err(&fixtures().function_version);
    let LoadError::MalformedApiVersion { reason, .. } = &err else {
        panic!("expected MalformedApiVersion, got {err:?}");
    };
    assert_eq!(reason, "it is not a data object");
    let msg = err.to_string();
    assert!(msg.contains("libfixture_function_version"), "{msg}");
}

#[test]
fn a_library_whose_header_skips_the_layout_check_is_refused() {
    // Its root module is today's and its version symbol this host's: abi_stable would hand it
    // over unchecked, and it would work, but nothing would have checked its types.
    let path = &fixtures().unchecked_layout;
    let err = load_err(path);
    let LoadError::LayoutUnchecked { path: p } = &err else {
        panic!("expected LayoutUnchecked, got {err:?}");
    };
    assert!(p.ends_with("libfixture_unchecked_layout.so"), "{p:?}");
    let msg = err.to_string();
    assert!(msg.contains("libfixture_unchecked_layout"), "{msg}");
    assert!(msg.contains("unsafe_no_layout_constant"), "{msg}");
    assert!(msg.contains("nothing can check"), "{msg}");
    assert!(msg.len() < 300 && !msg.contains('\n'), "{msg}");
    // The refusal is stable: asking again gives the same error.
    assert_eq!(load_err(path), err);
}

#[test]
fn a_plugin_library_without_the_version_symbol_is_refused_as_too_old_to_say() {
    let path = &fixtures().unversioned;
    let err = load_err(path);
    let LoadError::NoApiVersion { path: p, host } = &err else {
        panic!("expected NoApiVersion, got {err:?}");
    };
    assert!(p.ends_with("libfixture_unversioned.so"), "{p:?}");
    assert_eq!(*host, ApiVersion::HOST);
    let msg = err.to_string();
    assert!(msg.contains("libfixture_unversioned"), "{msg}");
    assert!(msg.contains(phobos_plugin_abi::API_VERSION_SYMBOL), "{msg}");
    assert!(msg.contains(&ApiVersion::HOST.to_string()), "{msg}");
    assert!(msg.len() < 300 && !msg.contains('\n'), "{msg}");
}

/// Whether the process has a file mapped from `path` (Linux: `/proc/self/maps`).
#[cfg(target_os = "linux")]
fn is_mapped(path: &std::path::Path) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let path = path.to_str().unwrap();
    maps.lines().any(|line| line.ends_with(path))
}

#[cfg(target_os = "linux")]
#[test]
fn a_library_refused_for_its_version_symbol_is_unloaded_again() {
    // Copies under names of their own, so no other test has the same file loaded.
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let copy = |from: &std::path::Path, name: &str| {
        let to = dir.join(format!("lib{name}.so"));
        std::fs::copy(from, &to).unwrap();
        to
    };
    for (fixture, name) in [
        (&fixtures().wrong_api, "refused_wrong_api"),
        (&fixtures().breaking_api, "refused_breaking_api"),
        (&fixtures().unversioned, "refused_unversioned"),
        (&fixtures().no_root, "refused_no_root"),
        (&fixtures().short_version, "refused_short_version"),
    ] {
        let path = copy(fixture, name);
        let err = load_err(&path);
        assert!(
            matches!(
                err,
                LoadError::IncompatibleApi { .. }
                    | LoadError::NoApiVersion { .. }
                    | LoadError::NoRootModule { .. }
                    | LoadError::MalformedApiVersion { .. }
            ),
            "{err:?}"
        );
        assert!(
            !is_mapped(&path),
            "{} is still mapped after {err}",
            path.display()
        );
    }
    // The check sees a library that is loaded: one that loads stays mapped.
    let kept = copy(&fixtures().multi, "kept_multi");
    PluginLibrary::load(&kept).unwrap();
    assert!(is_mapped(&kept));
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

#[test]
fn a_library_built_before_an_ffi_trait_method_was_added_fails_abi_stables_check() {
    // The fixture is built against a copy of this crate whose `FfiIpSource` lacks
    // `network_changed`, the method after `#[sabi(last_prefix_field)]` with a default body.
    // abi_stable does not fill the missing vtable entry with that default: its layout check
    // refuses a vtable with fewer entries than the host's (docs/PLUGIN_ABI.md, "Evolving it").
    let path = &fixtures().older_ip_source;
    let err = load_err(path);
    let LoadError::AbiMismatch { reason, .. } = &err else {
        panic!("expected AbiMismatch, got {err:?}");
    };
    // One error, and it is the IP source's vtable: the host's lists `network_changed`, the
    // library's does not, and abi_stable calls that "too many fields".
    assert_eq!(reason.matches("\nError:").count(), 1, "{reason}");
    assert!(reason.contains("Error:too many fields"), "{reason}");
    assert!(
        reason.contains("type:VTable")
            && reason.contains("mod:phobos_plugin_abi::ipsource::FfiIpSource_trait"),
        "{reason}"
    );
    assert_eq!(
        reason.matches("field_name:network_changed").count(),
        1,
        "only the host's vtable has the method: {reason}"
    );
    let msg = err.to_string();
    assert!(msg.contains("libfixture_older_ipsource"), "{msg}");
    assert!(msg.contains("incompatible plugin ABI"), "{msg}");
}

/// A copy of a good plugin library whose dynamic symbol table says the version symbol is
/// 1 GiB long: read whole, it would run far past the memory the library maps.
#[cfg(all(unix, not(target_vendor = "apple"), not(target_os = "aix")))]
#[test]
fn a_version_symbol_reaching_outside_the_mapped_memory_is_refused_unread() {
    use object::{Object, ObjectSection, ObjectSymbol};

    let good = &fixtures().mars;
    let mut bytes = std::fs::read(good).unwrap();
    let (size_at, was) = {
        let elf = object::File::parse(&*bytes).unwrap();
        let dynsym = elf
            .section_by_name(".dynsym")
            .expect("a dynamic symbol table");
        let (table, _) = dynsym.file_range().expect("in the file");
        let symbol = elf
            .dynamic_symbols()
            .find(|s| s.name() == Ok(phobos_plugin_abi::API_VERSION_SYMBOL))
            .expect("the version symbol");
        // An `Elf64_Sym` is 24 bytes; `st_size` is its last 8.
        (table as usize + symbol.index().0 * 24 + 16, symbol.size())
    };
    assert_eq!(
        u64::from_le_bytes(bytes[size_at..size_at + 8].try_into().unwrap()),
        was,
        "found the symbol's size in the file"
    );
    bytes[size_at..size_at + 8].copy_from_slice(&(1u64 << 30).to_le_bytes());
    let dir = std::env::temp_dir().join(format!("phobos-outside-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("libfixture_outside_segments.so");
    std::fs::write(&path, &bytes).unwrap();
    let err = load_err(&path);
    std::fs::remove_dir_all(&dir).unwrap();
    let LoadError::MalformedApiVersion { path: p, reason } = &err else {
        panic!("expected MalformedApiVersion, got {err:?}");
    };
    assert!(p.ends_with("libfixture_outside_segments.so"), "{p:?}");
    assert_eq!(
        reason,
        "its 1073741824 bytes do not lie inside the memory the library maps"
    );
}
