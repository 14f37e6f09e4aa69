//! Builds the plugin libraries the tests load (once per test binary) and finds them.
//!
//! The fixtures are built with a nested `cargo build` into [`fixture_target_dir`], inside the
//! target directory this test was built in (`CARGO_TARGET_DIR`, `--target-dir` or the default),
//! so builds with different target directories never share, or clobber, fixture libraries.
//! Never into that target directory itself: the outer `cargo test` holds its build lock, so a
//! nested build there would wait forever.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Paths of the fixture libraries.
#[derive(Debug)]
pub struct Fixtures {
    /// `plugins/codec-mars` built with `--features dynamic`.
    pub mars: PathBuf,
    /// A cdylib without a plugin root module.
    pub no_root: PathBuf,
    /// An abi_stable library whose root module has another layout.
    pub foreign_root: PathBuf,
    /// A plugin library claiming API 1.0.0.
    pub wrong_api: PathBuf,
    /// A library whose version symbol says API 1.0.0 and whose root module has another layout.
    pub breaking_api: PathBuf,
    /// A plugin library with a root module but no version symbol.
    pub unversioned: PathBuf,
    /// A library exporting a same-named symbol of another shape, and no root module.
    pub impostor: PathBuf,
    /// One plugin of every kind; codec "len" has a strict config.
    pub multi: PathBuf,
    /// Codec "boom" whose constructor panics.
    pub panicking: PathBuf,
    /// Codec "len" with today's root module, exported by abi_stable without the module's
    /// layout (`#[unsafe_no_layout_constant]`), beside a version symbol claiming this host's API.
    pub unchecked_layout: PathBuf,
    /// A plugin library whose version symbol is 8 bytes long: the magic bytes alone.
    pub short_version: PathBuf,
    /// A library exporting a function under the version symbol's name, and no root module.
    pub function_version: PathBuf,
    /// IP source "older", built against a copy of the ABI crate from before
    /// `FfiIpSource::network_changed` (its own workspace, `tests/fixtures/older-ipsource`).
    pub older_ip_source: PathBuf,
}

/// The fixtures in the debug profile, built on first use.
pub fn fixtures() -> &'static Fixtures {
    static DEBUG: OnceLock<Result<Fixtures, String>> = OnceLock::new();
    match DEBUG.get_or_init(|| build(false)) {
        Ok(f) => f,
        Err(e) => panic!("building the fixture libraries failed:\n{e}"),
    }
}

/// The workspace's log ciphers built as plugin libraries (`--features dynamic`).
#[derive(Debug)]
pub struct CipherLibraries {
    /// `plugins/cipher-mars`: cipher `mars-tea`.
    pub mars_tea: PathBuf,
    /// `plugins/cipher-modern`: cipher `x25519-chacha20poly1305`.
    pub modern: PathBuf,
}

/// The cipher plugin libraries in the debug profile, built on first use (in the fixtures'
/// target directory, as the codec's is).
pub fn cipher_libraries() -> &'static CipherLibraries {
    static DEBUG: OnceLock<Result<CipherLibraries, String>> = OnceLock::new();
    let built = DEBUG.get_or_init(|| {
        let target = fixture_target_dir();
        cargo(
            &[
                "build",
                "--manifest-path",
                &workspace_root().join("Cargo.toml").to_string_lossy(),
                "-p",
                "phobos-cipher-mars",
                "-p",
                "phobos-cipher-modern",
                "--features",
                "phobos-cipher-mars/dynamic,phobos-cipher-modern/dynamic",
                "--lib",
            ],
            &target,
            false,
        )?;
        let dir = target.join("debug");
        Ok(CipherLibraries {
            mars_tea: lib_path(&dir, "phobos_cipher_mars"),
            modern: lib_path(&dir, "phobos_cipher_modern"),
        })
    });
    match built {
        Ok(libs) => libs,
        Err(e) => panic!("building the cipher plugin libraries failed:\n{e}"),
    }
}

/// `plugins/codec-mars` as a plugin library in the release profile (for benchmarks).
pub fn release_mars() -> PathBuf {
    let target = fixture_target_dir();
    if let Err(e) = build_mars(&target, true) {
        panic!("building the Mars plugin library failed:\n{e}");
    }
    lib_path(&target.join("release"), "phobos_codec_mars")
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The target directory of the nested fixture builds: `plugin-fixtures` in the scratch
/// directory cargo gives integration tests and benches inside the target directory they were
/// built in (`CARGO_TARGET_TMPDIR`, `<target dir>/tmp`).
pub fn fixture_target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-fixtures")
}

fn build(release: bool) -> Result<Fixtures, String> {
    let root = workspace_root();
    let target = fixture_target_dir();
    cargo(
        &[
            "build",
            "--manifest-path",
            &root.join("tests/fixtures/Cargo.toml").to_string_lossy(),
            "--workspace",
        ],
        &target,
        release,
    )?;
    cargo(
        &[
            "build",
            "--manifest-path",
            &root
                .join("tests/fixtures/older-ipsource/Cargo.toml")
                .to_string_lossy(),
        ],
        &target,
        release,
    )?;
    build_mars(&target, release)?;
    let dir = target.join(if release { "release" } else { "debug" });
    let lib = |name: &str| lib_path(&dir, name);
    Ok(Fixtures {
        mars: lib("phobos_codec_mars"),
        no_root: lib("fixture_no_root"),
        foreign_root: lib("fixture_foreign_root"),
        wrong_api: lib("fixture_wrong_api"),
        breaking_api: lib("fixture_breaking_api"),
        unversioned: lib("fixture_unversioned"),
        impostor: lib("fixture_impostor"),
        multi: lib("fixture_multi"),
        panicking: lib("fixture_panicking"),
        unchecked_layout: lib("fixture_unchecked_layout"),
        short_version: lib("fixture_short_version"),
        function_version: lib("fixture_function_version"),
        older_ip_source: lib("fixture_older_ipsource"),
    })
}

fn build_mars(target: &Path, release: bool) -> Result<(), String> {
    cargo(
        &[
            "build",
            "--manifest-path",
            &workspace_root().join("Cargo.toml").to_string_lossy(),
            "-p",
            "phobos-codec-mars",
            "--features",
            "dynamic",
            "--lib",
        ],
        target,
        release,
    )
}

fn lib_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ))
}

fn cargo(args: &[&str], target: &Path, release: bool) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args).arg("--target-dir").arg(target);
    if release {
        cmd.arg("--release");
    }
    // The outer build's per-package settings must not leak into the nested one.
    cmd.env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("CARGO_PRIMARY_PACKAGE");
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "cargo {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs in every test binary that includes this module.
#[test]
fn fixture_libraries_are_built_in_the_target_directory_of_the_tests_loading_them() {
    // A test binary is `<target dir>/<profile>/deps/<name>` (`<target dir>/<triple>/...` with
    // `--target`, whose scratch directory is in `<target dir>/<triple>` too).
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap();
    for lib in [&fixtures().mars, &fixtures().multi] {
        assert!(
            lib.starts_with(target),
            "{} is outside {}",
            lib.display(),
            target.display()
        );
        assert!(lib.exists(), "{}", lib.display());
    }
}
