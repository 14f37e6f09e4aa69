//! The demo with a third-party codec loaded from its plugin library, built by this test.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace root")
}

/// Builds `acme-phobos-plugins` as a plugin library. A nested cargo must not use the main
/// target directory: the outer `cargo test` holds its build lock.
fn build_acme_library() -> PathBuf {
    let root = workspace_root();
    let target = root.join("target/plugin-fixtures");
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

#[test]
fn demo_runs_with_the_acme_codec_loaded_from_its_library() {
    let lib = build_acme_library();
    let logs = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_phobos-host-example"))
        .args(["demo", "--config"])
        .arg(workspace_root().join("host-example/config/acme.toml"))
        .arg("--plugin")
        .arg(&lib)
        .arg("--log-dir")
        .arg(logs.path())
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let codec_row = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("codec "))
        .expect("codec row");
    assert!(
        codec_row.contains("acme") && codec_row.contains(&lib.display().to_string()),
        "{codec_row}"
    );
    // ACME's header starts with its magic AC3E and version 01.
    assert!(stdout.contains("header ac3e0100"), "{stdout}");
    assert!(stdout.contains("| messages sent | 100 |"), "{stdout}");
    assert!(stdout.contains("| lost | 0 |"), "{stdout}");
    assert!(
        stdout.contains("Every message was delivered exactly once."),
        "{stdout}"
    );
}
