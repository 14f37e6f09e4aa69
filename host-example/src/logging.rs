//! Logging: xlog files (encrypted with the configured cipher) fed by `tracing`, and reading
//! them back with `phobos-xlog-decode`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use phobos_xlog::{Xlog, XlogGuard};

use crate::config::{HostConfig, LogLevel};
use crate::plugins::LoadedPlugins;

/// An open xlog writer and the folder it writes to.
#[derive(Debug)]
pub struct LogSetup {
    /// Flushes and closes the log when dropped.
    pub guard: XlogGuard,
    /// The folder.
    pub dir: PathBuf,
}

impl LogSetup {
    /// Opens the xlog writer of `[xlog]`: in `dir_override`, else `[xlog] dir`, else a new
    /// folder `phobos-<role>-<pid>` in the system temp dir; encrypted with the configured
    /// cipher if any.
    ///
    /// # Errors
    ///
    /// The folder cannot be made or the writer refuses to start.
    pub fn open(
        config: &HostConfig,
        plugins: &LoadedPlugins,
        role: &str,
        dir_override: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let dir = dir_override
            .or_else(|| config.xlog.dir.as_ref().map(|d| config.resolve(d)))
            .unwrap_or_else(|| {
                std::env::temp_dir().join(format!("phobos-{role}-{}", std::process::id()))
            });
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating log folder {}", dir.display()))?;
        let mut xlog = Xlog::builder()
            .log_dir(&dir)
            .name_prefix(config.xlog.name_prefix.clone())
            .level(xlog_level(config.xlog.level));
        if let Some(cipher) = &plugins.cipher {
            xlog = xlog.cipher(cipher.clone());
        }
        let guard = xlog
            .build()
            .with_context(|| format!("opening the xlog writer in {}", dir.display()))?;
        Ok(LogSetup { guard, dir })
    }

    /// A handle to write with.
    pub fn xlog(&self) -> Xlog {
        self.guard.xlog()
    }
}

/// Installs the global `tracing` subscriber: warnings to stderr (or `RUST_LOG`), and
/// Phobos's own events (link status changes with their reasons, task ends) at `level` and
/// above into `xlog`.
pub fn init_tracing(xlog: Option<Xlog>, level: LogLevel) {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{filter::LevelFilter, EnvFilter};

    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")));
    let filter = match level {
        LogLevel::Trace => LevelFilter::TRACE,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    };
    let xlog = xlog.map(|x| phobos_xlog::XlogLayer::new(x).with_filter(filter));
    // A second call (tests running several commands in one process) keeps the first.
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(xlog)
        .try_init();
}

/// The newest `.xlog` file in `dir`, decoded (with the configured cipher): its path, size
/// and last `lines` lines.
///
/// # Errors
///
/// No log file, or it cannot be read.
pub fn decode_tail(
    dir: &Path,
    plugins: &LoadedPlugins,
    lines: usize,
) -> anyhow::Result<(PathBuf, u64, Vec<String>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "xlog"))
        .collect();
    files.sort();
    let Some(file) = files.pop() else {
        bail!("no .xlog file in {}", dir.display());
    };
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let mut decoder = phobos_xlog_decode::Decoder::builder();
    if let Some(cipher) = &plugins.cipher {
        decoder = decoder.cipher(cipher.clone());
    }
    let text = decoder.build().decode(&bytes);
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect();
    Ok((file, bytes.len() as u64, tail))
}

/// Every `.xlog` file at `path` (a file, or a folder in name order), decoded with the
/// configured cipher.
///
/// # Errors
///
/// `path` cannot be read or holds no log file.
pub fn decode_all(path: &Path, plugins: &LoadedPlugins) -> anyhow::Result<String> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "xlog"))
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_owned()]
    };
    if files.is_empty() {
        bail!("no .xlog file in {}", path.display());
    }
    let mut decoder = phobos_xlog_decode::Decoder::builder();
    if let Some(cipher) = &plugins.cipher {
        decoder = decoder.cipher(cipher.clone());
    }
    let decoder = decoder.build();
    let mut out = String::new();
    let mut text = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        text.clear();
        let summary = decoder.decode_into(&bytes, &mut text);
        // Said on stderr, as `phobos-xlog` says it: a file that is not an xlog, or a wrong
        // key, would otherwise decode to nothing without a word.
        if !summary.found_blocks() {
            eprintln!("{}: no xlog blocks found", file.display());
        } else if summary.all_encrypted_blocks_failed() && plugins.cipher.is_some() {
            eprintln!(
                "{}: no encrypted block decoded to log text: is the key right?",
                file.display()
            );
        }
        out.push_str(&String::from_utf8_lossy(&text));
    }
    Ok(out)
}

fn xlog_level(level: LogLevel) -> phobos_xlog::Level {
    match level {
        LogLevel::Trace => phobos_xlog::Level::Verbose,
        LogLevel::Debug => phobos_xlog::Level::Debug,
        LogLevel::Info => phobos_xlog::Level::Info,
        LogLevel::Warn => phobos_xlog::Level::Warn,
        LogLevel::Error => phobos_xlog::Level::Error,
    }
}
