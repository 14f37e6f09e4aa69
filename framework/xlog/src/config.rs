//! [`XlogConfig`]: every setting of a writer, serializable with serde.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::format::Level;

/// Writer settings. Plugins (the cipher) and the clock are set on the builder, not here.
///
/// All fields have defaults (`#[serde(default)]`), so a config file names only what it changes.
///
/// ```
/// let cfg: phobos_xlog::XlogConfig =
///     serde_json::from_str(r#"{"log_dir": "/tmp/logs", "name_prefix": "app",
///                              "compression": "zstd", "max_file_size": 1048576}"#).unwrap();
/// assert_eq!(cfg.compression, phobos_xlog::Compression::Zstd);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct XlogConfig {
    /// Directory of the `.xlog` files.
    pub log_dir: PathBuf,
    /// File name prefix: files are `<prefix>_YYYYMMDD[_N].xlog`, the buffer `<prefix>.mmap3`.
    /// A plain file name of at most 230 bytes (room for the longest log file name).
    pub name_prefix: String,
    /// Optional cache directory (Mars's `cachedir`): holds the buffer file and, while
    /// `cache_days > 0`, the day's log file until it is moved to `log_dir`.
    pub cache_dir: Option<PathBuf>,
    /// Mars's `cache_days`: keep files in the cache dir for this many days (0 = never cache).
    pub cache_days: u32,
    /// Async (staged, compressed blocks; the default) or sync (one block per line).
    pub mode: Mode,
    /// zlib (raw deflate, Mars's default) or zstd.
    pub compression: Compression,
    /// Compression level; `None` picks the default of the compression (see
    /// [`Compression::default_level`]).
    pub compression_level: Option<i32>,
    /// Split a day's file into `_1`, `_2`, … before it would exceed this many bytes
    /// (0 = no splitting). Applies while running, before every block.
    pub max_file_size: u64,
    /// Delete this writer's log files (`<prefix>_<YYYYMMDD>[_<N>].xlog`, in the log and cache
    /// dirs) and `YYYYMMDD` folders older than this; Mars's default is 10 days (Mars deletes
    /// every `.xlog` in the folder). Values under one day are raised to one day.
    #[serde(with = "duration_secs")]
    pub max_alive: Duration,
    /// Lowest level that is written.
    pub level: Level,
    /// What a logging call does when the writer has fallen behind.
    pub overflow: Overflow,
    /// Whether a returned logging call has already committed its line to the buffer file
    /// (async mode only; sync mode always writes before returning).
    pub durability: Durability,
    /// Flush the staged block at least this often even if it is small (Mars: 15 minutes).
    /// Values under one second are raised to one second; a value too large for the monotonic
    /// clock (such as `u64::MAX` seconds) means "only when full, flushed or closed".
    #[serde(with = "duration_secs")]
    pub flush_interval: Duration,
}

impl Default for XlogConfig {
    fn default() -> Self {
        XlogConfig {
            log_dir: PathBuf::from("."),
            name_prefix: "phobos".to_owned(),
            cache_dir: None,
            cache_days: 0,
            mode: Mode::Async,
            compression: Compression::Zlib,
            compression_level: None,
            max_file_size: 0,
            max_alive: Duration::from_secs(10 * 24 * 3600),
            level: Level::Verbose,
            overflow: Overflow::Block,
            durability: Durability::Durable,
            flush_interval: Duration::from_secs(15 * 60),
        }
    }
}

/// Appender mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Lines are compressed (and encrypted) into a block staged in the memory-mapped buffer
    /// file; full blocks are appended to the log file by a background thread.
    #[default]
    Async,
    /// Every line is written to the log file as its own block before the call returns.
    /// Without a key a line is a plain-text sync block (as Mars); with a key it is a one-line
    /// compressed, encrypted block (see the crate docs).
    Sync,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "async" => Ok(Mode::Async),
            "sync" => Ok(Mode::Sync),
            _ => Err(format!("unknown mode {s:?} (expected async or sync)")),
        }
    }
}

/// Block compression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Raw deflate (no zlib header).
    #[default]
    Zlib,
    /// One zstd frame per block.
    Zstd,
}

impl Compression {
    /// The level used when none is configured, for the whole-block compression the writer
    /// thread does (lines are staged uncompressed).
    ///
    /// zlib: 2 (zlib's `deflate_fast`, dynamic Huffman trees per block): files smaller than
    /// Mars's level 9 with its per-line flush, at a small fraction of its CPU time. Level 1 is
    /// zlib's `deflate_quick` (fixed codes only), about a third larger.
    /// zstd: 1 (Mars: 6 with a per-line flush); whole-block level 1 is both smaller and far
    /// cheaper than that. See the crate docs for measured figures.
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Zlib => 2,
            Compression::Zstd => 1,
        }
    }
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "zlib" => Ok(Compression::Zlib),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(format!("unknown compression {s:?} (expected zlib or zstd)")),
        }
    }
}

/// What a logging call does when the staging buffer is full because the file writer has
/// fallen behind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overflow {
    /// Wait until the writer has made room (no line is lost).
    #[default]
    Block,
    /// Drop the line and count it; the count is reported in the log by a `[W]` line before the
    /// next line that gets through (or at the next flush or the close, whichever comes
    /// first), and by [`crate::Xlog::dropped_lines`].
    Drop,
}

/// When a line becomes crash-safe (async mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// The calling thread frames (and with a key encrypts) the line into the memory-mapped
    /// buffer before the call returns: a returned line survives the process being killed.
    #[default]
    Durable,
    /// NOT crash-safe for the most recent lines: the calling thread only formats the line and
    /// queues it (in process memory, at most 4 MiB); another thread stages it shortly after.
    /// Lines still queued when the process is killed are lost. Slightly cheaper per call.
    /// [`crate::Xlog::flush`] and close drain the queue.
    Buffered,
}

impl FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "durable" => Ok(Durability::Durable),
            "buffered" => Ok(Durability::Buffered),
            _ => Err(format!(
                "unknown durability {s:?} (expected durable or buffered)"
            )),
        }
    }
}

mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_through_json() {
        let c = XlogConfig {
            cache_dir: Some("/c".into()),
            mode: Mode::Sync,
            overflow: Overflow::Drop,
            ..XlogConfig::default()
        };
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<XlogConfig>(&s).unwrap(), c);
    }

    #[test]
    fn names_parse() {
        assert_eq!("zstd".parse::<Compression>().unwrap(), Compression::Zstd);
        assert_eq!("SYNC".parse::<Mode>().unwrap(), Mode::Sync);
        assert!("lz4".parse::<Compression>().is_err());
    }
}
