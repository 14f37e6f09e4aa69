//! Set-up shared by the xlog layer tests.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use phobos_xlog::{Xlog, XlogBuilder, XlogGuard, XlogLayer};
use phobos_xlog_decode::Decoder;
use tracing_subscriber::prelude::*;

/// A logger writing into `dir` (no banners). Dropping the guard flushes the files.
pub fn open(dir: &Path) -> XlogGuard {
    open_with(dir, |b| b)
}

/// [`open`], with `configure` applied to the builder last (mode, cipher…).
pub fn open_with(dir: &Path, configure: impl FnOnce(XlogBuilder) -> XlogBuilder) -> XlogGuard {
    configure(Xlog::builder().log_dir(dir).name_prefix("t").banners(false))
        .build()
        .unwrap()
}

/// [`open`], installed as the global subscriber's only layer. The global subscriber can be
/// set once per process: a test file using this holds one test.
pub fn global_logger(dir: &Path) -> XlogGuard {
    let guard = open(dir);
    set_global(&guard);
    guard
}

/// Installs a layer writing to `guard`'s logger as the global subscriber's only layer (once
/// per process, see [`global_logger`]).
pub fn set_global(guard: &XlogGuard) {
    let sub = tracing_subscriber::registry().with(XlogLayer::new(guard.xlog()));
    tracing::subscriber::set_global_default(sub).unwrap();
}

/// Every line the folder's `.xlog` files hold, decoded.
pub fn decoded(dir: &Path) -> String {
    decoded_by(dir, &Decoder::new())
}

/// [`decoded`], by `decoder` (one holding the private key of encrypted files).
pub fn decoded_by(dir: &Path, decoder: &Decoder) -> String {
    let mut text = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "xlog") {
            text.extend(decoder.decode(&std::fs::read(path).unwrap()));
        }
    }
    String::from_utf8(text).unwrap()
}
