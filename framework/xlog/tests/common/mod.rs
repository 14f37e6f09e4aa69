//! Set-up shared by the xlog layer tests.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use phobos_xlog::{Xlog, XlogGuard, XlogLayer};
use tracing_subscriber::prelude::*;

/// A logger writing into `dir` (no banners). Dropping the guard flushes the files.
pub fn open(dir: &Path) -> XlogGuard {
    Xlog::builder()
        .log_dir(dir)
        .name_prefix("t")
        .banners(false)
        .build()
        .unwrap()
}

/// [`open`], installed as the global subscriber's only layer. The global subscriber can be
/// set once per process: a test file using this holds one test.
pub fn global_logger(dir: &Path) -> XlogGuard {
    let guard = open(dir);
    let sub = tracing_subscriber::registry().with(XlogLayer::new(guard.xlog()));
    tracing::subscriber::set_global_default(sub).unwrap();
    guard
}

/// Every line the folder's `.xlog` files hold, decoded.
pub fn decoded(dir: &Path) -> String {
    let mut text = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "xlog") {
            text.extend(phobos_xlog_decode::Decoder::new().decode(&std::fs::read(path).unwrap()));
        }
    }
    String::from_utf8(text).unwrap()
}
