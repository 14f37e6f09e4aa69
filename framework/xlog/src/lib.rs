//! Crash-safe, compressed, encrypted logger whose files Mars's xlog tools read.
//!
//! `phobos-xlog` writes Tencent Mars's `.xlog` format: blocks of `header | body | 0x00`, each
//! body a raw-deflate or zstd stream of Mars-formatted text lines, optionally encrypted by a
//! [`LogCipher`](phobos_plugin_api::cipher::LogCipher) (Mars's ECDH + TEA from
//! `phobos-cipher-mars`, or an authenticated cipher under magics of our own, see [`block`]).
//! It does not decode files; that is `phobos-xlog-decode`.
//!
//! # Example
//!
//! ```
//! use phobos_xlog::{Compression, Level, Record, Xlog};
//! let dir = tempfile::tempdir().unwrap();
//! let guard = Xlog::builder()
//!     .log_dir(dir.path())
//!     .name_prefix("app")
//!     .compression(Compression::Zstd)
//!     .build()
//!     .unwrap();
//! guard.log(&Record { tag: "net", file: file!(), line: line!(), func: "main",
//!                     ..Record::new(Level::Info, b"connected") });
//! guard.flush().unwrap();
//! drop(guard); // logs the close banner, flushes, stops the writer thread
//! ```
//!
//! # How a line travels (async mode, the default)
//!
//! The calling thread formats the line into a thread-local buffer, then, under one mutex,
//! compresses it into the current block's stream (flushed to a byte boundary), encrypts the
//! complete cipher units, and commits the bytes plus the new length into a block staged in
//! the memory-mapped buffer file `<cache or log dir>/<prefix>.mmap3`. A background thread
//! appends full blocks (≥ 50 KiB staged, a Fatal line, [`Xlog::flush`], every
//! [`XlogConfig::flush_interval`], close) to `<prefix>_YYYYMMDD[_N].xlog`. The buffer file has
//! two block slots, so callers fill one while the other is written out, without copying.
//!
//! # Durability
//!
//! In the default [`Durability::Durable`] mode, when [`Xlog::log`] returns the line is in the
//! buffer file's pages in the kernel's page cache (async) or in the log file (sync). The page
//! cache is the kernel's, so the line survives the process being killed — SIGKILL, abort, OOM
//! kill — without any `fsync`: the next writer opened on the same directory and prefix finds
//! the staged blocks and appends them, between Mars's tip blocks `~~~~~ begin of mmap ~~~~~`
//! and `~~~~~ end of mmap ~~~~~[pid,tid][time]`. Two refinements over Mars make this exact:
//! the clear tail of a TEA block is saved before it is overwritten, so a kill in the middle of
//! a line cannot garble the previous one, and a write intent recorded before a block is
//! appended to the log file makes the append exactly-once across a crash (no duplicated
//! lines). A power failure before the kernel writes the pages back can still lose recent
//! lines; xlog, like Mars, does not `fsync`. If the buffer file cannot be mapped, heap memory
//! is used and crash recovery is off ([`Xlog::is_mapped`]).
//!
//! [`Durability::Buffered`] is the named non-durable alternative: the caller only formats the
//! line and queues it (≤ 4 MiB); a compressor thread stages it. Calls are cheaper and
//! formatting overlaps compression, but lines still queued when the process dies are lost.
//! [`Xlog::flush`] and close drain the queue.
//!
//! # Encryption at rest
//!
//! With a cipher configured, no log line is written in clear anywhere, the buffer file
//! included: lines are compressed and encrypted in memory before they are stored. Mars's TEA
//! leaves the last 0–7 compressed bytes of a block in clear (as in Mars). In sync mode Mars
//! writes lines as plain text even with a key; here a keyed sync-mode line is instead written
//! as a one-line compressed, encrypted block with the async magic and sequence 0, which
//! Mars's decoder reads like any other block. Only the tip blocks around recovered data
//! (markers, pid, time) are plain text, as in Mars. A cipher of kind
//! [`Authenticated`](phobos_plugin_api::cipher::CipherKind::Authenticated) writes under the
//! magics `0x27` (zlib) / `0x2C` (zstd), see [`block`]; its tips use the no-key sync magics.
//!
//! # Falling behind
//!
//! If both slots are busy (the disk is slower than the logging), [`Overflow::Block`] (default)
//! makes the caller wait; [`Overflow::Drop`] drops the line, counts it
//! ([`Xlog::dropped_lines`]) and logs `[W]… xlog dropped N lines: the writer fell behind`
//! before the next line that gets through. In buffered mode the same applies to the queue.
//!
//! # Compression levels
//!
//! Every line is flushed to a byte boundary, so each line is its own deflate block or zstd
//! block. zlib level 1 (the default) uses zlib's `deflate_quick` (zlib-rs): about 1 µs per
//! line. Levels 2–9 use this crate's fixed-code encoder: zlib-like hash chains and lazy
//! matching, always the fixed Huffman codes (zlib's per-line dynamic-tree decision is what
//! makes Mars's level 9 cost over 10 µs per line), and lines aligned with empty fixed blocks
//! instead of zlib's 4-byte sync marker. On the benchmark's log lines (`benches/`) level 5
//! writes files 0.7 % smaller than zlib's level 9 (Mars's setting) for about half its CPU
//! time, level 4 is 2.5 % larger, and level 1 is about 6× cheaper than zlib 9 but 25 % larger.
//! zstd uses libzstd with window log 16; default level 1 (Mars: 6), 15 % larger than level 6.
//!
//! # Differences from Mars worth knowing
//!
//! - Size splitting applies while running, before each block (Mars: when a file is opened, so
//!   its files overshoot and sync mode never splits within a day).
//! - Close flushes after the writer thread stops (Mars can lose the last lines).
//! - Each writer has its own block sequence counter (Mars shares one per process, so files of
//!   concurrent appenders show false "missing" ranges).
//! - The open banner's `^^^^^^^^^^date^^^time^^^^^^^^^^` carries the open time (Mars: its
//!   compile time) and `MARS_PATH: phobos-xlog`.
//! - The buffer file holds two block slots plus 1 KiB of metadata (308 224 bytes); slot 0 has
//!   Mars's layout, so a `.mmap3` left by Mars is recovered too.
#![deny(unsafe_code)]

pub mod append;
pub mod block;
pub mod clock;
mod compress;
mod config;
mod deflate;
mod files;
pub mod format;
#[cfg(feature = "tracing")]
mod layer;
mod mmap;
mod staging;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;
mod writer;

pub use append::append_lines;
pub use clock::{Clock, FixedClock, SystemClock, WallTime};
pub use config::{Compression, Durability, Mode, Overflow, XlogConfig};
pub use format::{Level, Record};
#[cfg(feature = "tracing")]
pub use layer::{XlogLayer, XlogWriter};
pub use writer::{BuildError, FlushError, Xlog, XlogBuilder, XlogGuard};
