//! The demo with a third-party codec loaded from its plugin library, built by this test.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace root")
}

/// Builds `acme-phobos-plugins` as a plugin library, in the scratch directory cargo gives this
/// test inside its own target directory (`CARGO_TARGET_TMPDIR`), so builds with different
/// target directories do not share it. A nested cargo must not use the main target directory
/// itself: the outer `cargo test` holds its build lock.
fn build_acme_library() -> PathBuf {
    let root = workspace_root();
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-fixtures");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "-p",
            "acme-phobos-plugins",
            "--features",
            "dynamic",
            "--lib",
            "--manifest-path",
        ])
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("CARGO_PRIMARY_PACKAGE")
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building the plugin failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("debug").join(format!(
        "{}acme_phobos_plugins{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ))
}

/// `host-example/config/acme.toml` with its `library` paths pointing at `lib`.
fn acme_config(dir: &Path, lib: &Path) -> PathBuf {
    let text = std::fs::read_to_string(workspace_root().join("host-example/config/acme.toml"))
        .expect("acme.toml");
    let text = text.replace(
        "../../target/debug/libacme_phobos_plugins.so",
        &lib.display().to_string(),
    );
    assert!(
        text.contains(&lib.display().to_string()),
        "acme.toml names the library"
    );
    let path = dir.join("acme.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn demo_runs_with_acmes_codec_and_cipher_loaded_from_the_config() {
    let lib = build_acme_library();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = acme_config(dir.path(), &lib);
    let out = Command::new(env!("CARGO_BIN_EXE_phobos-host-example"))
        .args(["demo", "--clients", "4", "--messages", "25", "--config"])
        .arg(&config)
        .arg("--log-dir")
        .arg(dir.path().join("logs"))
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib_name = lib.display().to_string();
    for row in [
        "| codec | acme (library ",
        "| log cipher | acme-aes256gcm (library ",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row}: {stdout}"));
        assert!(line.contains(&lib_name), "{line}");
    }
    // ACME's header starts with its magic AC3E and version 01.
    assert!(stdout.contains("header ac3e0100"), "{stdout}");
    assert!(stdout.contains("| messages sent | 100 |"), "{stdout}");
    assert!(stdout.contains("| lost | 0 |"), "{stdout}");
    assert!(stdout.contains("| duplicates | 0 |"), "{stdout}");
    // The log was written with ACME's cipher and decoded back with it.
    assert!(stdout.contains("encrypted: true"), "{stdout}");
    assert!(stdout.contains("done: 100 sent"), "{stdout}");
    assert!(
        stdout.contains("Every message was delivered exactly once."),
        "{stdout}"
    );

    // The same log decodes with the decode-log subcommand, and not without the cipher.
    let decoded = Command::new(env!("CARGO_BIN_EXE_phobos-host-example"))
        .args(["decode-log", "--config"])
        .arg(&config)
        .arg(dir.path().join("logs"))
        .output()
        .expect("run decode-log");
    let text = String::from_utf8_lossy(&decoded.stdout);
    assert!(decoded.status.success(), "{text}");
    assert!(text.contains("done: 100 sent"), "{text}");
}

#[test]
fn plugins_named_in_the_config_can_come_from_a_plugin_flag() {
    let lib = build_acme_library();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("by-name.toml");
    std::fs::write(&config, "[plugins]\ncodec = \"acme\"\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_phobos-host-example"))
        .args(["plugins", "--config"])
        .arg(&config)
        .arg("--plugin")
        .arg(&lib)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let codec_row = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("codec "))
        .expect("codec row");
    assert!(
        codec_row.contains("acme") && codec_row.contains(&lib.display().to_string()),
        "{codec_row}"
    );
}
