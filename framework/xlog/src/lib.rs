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
//! The calling thread formats the line into a thread-local buffer, then, under one short lock,
//! frames it *uncompressed* (deflate stored blocks for zlib, zstd raw blocks for zstd), with a
//! key encrypts the framed bytes with ChaCha20, and commits them plus the new length into a
//! block staged in the memory-mapped buffer file `<cache or log dir>/<prefix>.mmap3`; the
//! line's text is also kept in process memory. No compressor runs on the calling thread. When
//! ≥ 100 KiB are staged (≥ 66 666 bytes with zstd, whose blocks stay below the 100 000 body
//! bytes Mars's Python decoder reads; see `docs/DEFAULTS.md`), or on a Fatal line,
//! [`Xlog::flush`], every [`XlogConfig::flush_interval`], close, the block is sealed and the
//! background thread
//! compresses its text in one piece (no per-line flush, so zlib builds real Huffman trees and
//! zstd sees the whole block), encrypts it with the configured [`LogCipher`](
//! phobos_plugin_api::cipher::LogCipher), and appends that Mars block to
//! `<prefix>_YYYYMMDD[_N].xlog`; only then is the staged block dropped. The buffer file has
//! two block slots, so callers fill one while the other is compressed and written, without
//! copying.
//!
//! # Durability
//!
//! In the default [`Durability::Durable`] mode, when [`Xlog::log`] returns the line is in the
//! buffer file's pages in the kernel's page cache (async) or in the log file (sync). The page
//! cache is the kernel's, so the line survives the process being killed — SIGKILL, abort, OOM
//! kill — without any `fsync`: the next writer opened on the same directory and prefix finds
//! the staged blocks and appends them as they are (uncompressed, so a crash costs some file
//! size, never lines), between Mars's tip blocks `~~~~~ begin of mmap ~~~~~` and
//! `~~~~~ end of mmap ~~~~~[pid,tid][time]`. A staged block is a valid block at every
//! moment: without a key it is an ordinary Mars block (magic `0x09`/`0x0D`) with stored /
//! raw contents, which Mars's tools read. A write intent (target file, offset, length and
//! CRC-32 of the compressed block, bound to the staged block by its generation and length,
//! with a CRC of its own) recorded before a block is appended makes the append exactly-once
//! across a crash (no duplicated lines); an intent that fails these checks is ignored, so it
//! can neither hide staged lines nor cut a log file. A power failure before the kernel writes
//! the pages back can still lose recent lines; xlog, like Mars, does not `fsync`. If the buffer
//! file cannot be opened or mapped, heap memory is used and crash recovery is off
//! ([`Xlog::is_mapped`]; a warning line names a buffer file that could not be opened). When
//! it could not be opened at all (its folder not writable, a directory in its place), the
//! writer tries to make it after each written block and, once it can, moves its slots into it
//! with what they hold: crash recovery is on from then on.
//! `.mmap3` files left by Mars or by earlier versions of this crate (compressed staging) are
//! recovered too, exactly-once as well: a Mars file (one block, no metadata) is first grown
//! to this crate's layout, Mars's bytes left as they are, so that the intent has a place. A
//! zstd block among them without a key whose body is 100 000 bytes or more (Mars's 4/5 guard
//! lets a block grow to about 123 000 bytes; earlier versions of this crate staged up to
//! 150 KiB), which Mars's Python decoder would cut short, is decompressed and appended as
//! blocks below that size instead (at the configured zstd level, at most 15), holding the
//! same lines; a keyed one cannot be read without the private key and is appended as it is
//! (see `docs/DEFAULTS.md`, "Recovered zstd blocks over the cap").
//!
//! If the recovered blocks cannot be appended (disk full), the writer opens anyway, logs a
//! warning and keeps them in their slots of the buffer file; the writer thread appends them
//! before the next block once writing works again ([`Xlog::pending_recovered_blocks`]), and a
//! close before that puts them back into the buffer file for the next start. When logging
//! needs their slot, the writer thread first tries once more to append them from it (with
//! [`Overflow::Block`]); only if that fails too is the slot taken back, and they wait in
//! memory alone. A buffer file removed while the writer runs (an app clearing its cache
//! folder) is made anew at the same place after the next block is written, and every slot
//! moves to it with what it holds, so crash recovery is back from then on (lines staged
//! before the removal included) rather than off for the rest of the run.
//!
//! [`Durability::Buffered`] is the named non-durable alternative: the caller only formats the
//! line and queues it (≤ 4 MiB); another thread stages it. Lines still queued when the process
//! dies are lost. Since staging became a copy, it saves little; [`Xlog::flush`] and close drain
//! the queue.
//!
//! # Encryption at rest
//!
//! With a cipher configured, no log line is written in clear anywhere, the buffer file
//! included. The log file gets Mars blocks: the compressed block encrypted by the cipher
//! (Mars's TEA leaves the last 0–7 compressed bytes of a block in clear, as in Mars). The
//! buffer file gets the framed lines encrypted with ChaCha20 under a random per-session key;
//! that key is itself encrypted by the cipher and stored at the start of every staged block
//! (see [`block`], "Staged-stream body"), so the private key holder, and only they, can read a
//! staged block. Such a block reaches a log file only after a crash, under the Phobos magics
//! `0x47`/`0x4C`: `phobos-xlog-decode` reads them; Mars's tools skip them (they lose the
//! recovered lines of a crashed keyed writer, nothing else). Staging with the cipher itself
//! would keep those blocks Mars-readable, but TEA over every line's text on the logging thread
//! costs about 0.45 µs per 200-byte line, under the staging lock.
//!
//! In sync mode Mars writes lines as plain text even with a key; here a keyed sync-mode line is
//! instead written as a one-line encrypted block (stored deflate / raw zstd contents) with the
//! async magic and sequence 0, which Mars's decoder reads like any other block. Only the tip
//! blocks around recovered data (markers, pid, time) are plain text, as in Mars. A cipher of
//! kind [`Authenticated`](phobos_plugin_api::cipher::CipherKind::Authenticated) writes under
//! the magics `0x27` (zlib) / `0x2C` (zstd), see [`block`]; its tips use the no-key sync magics.
//!
//! # Falling behind
//!
//! If both slots are busy (the disk is slower than the logging), [`Overflow::Block`] (default)
//! makes the caller wait; [`Overflow::Drop`] drops the line, counts it
//! ([`Xlog::dropped_lines`]) and logs `[W]… xlog dropped N lines: the writer fell behind`
//! before the next line that gets through. In buffered mode the same applies to the queue.
//!
//! Lines are dropped for other causes too, each counted and reported apart, with its own
//! reason after `xlog dropped N lines: `: `they could not be compressed or encrypted` (a
//! cipher error; in sync mode with a key), `logged from inside the writer (by its cipher or
//! clock)` (see below), `logged while the writer was closing`, and `the writer thread died`
//! (a bug). The dead thread being the one that writes, that last warning is not staged: the
//! thread that drops a line writes it straight to the log file, as sync mode does (at the
//! 1st, 2nd, 4th, 8th… drop, so logging on costs a few appends), and [`Xlog::flush`] (which
//! then returns [`FlushError::WriterDied`]) and close write what is left. The blocks the dead
//! thread left staged are appended at the next start, after it.
//!
//! Lines whose block could not be appended to the log file (disk full, I/O error) are counted
//! apart ([`Xlog::write_failed_lines`], [`Xlog::last_write_error`]) and reported as
//! `[W]… xlog lost N lines: writing the log file failed: <OS error>`. A loss counts as
//! reported only once the block holding its warning reached the file; if that block fails
//! too, the next one reports the losses again.
//!
//! Losses no line logged after them reports yet are reported by [`Xlog::flush`], and so at
//! close: with banners off too, a log whose last lines were dropped ends with the warning
//! (with banners on it goes before the close banner, or after it if the banner itself was
//! dropped).
//!
//! # Logging from inside the writer
//!
//! A [`LogCipher`](phobos_plugin_api::cipher::LogCipher) may log while it encrypts (through
//! [`Xlog::log`] or a `tracing` event reaching `XlogLayer`), and so may a [`Clock`]. Such a
//! line comes back into the writer while it holds its locks, or on the writer thread that
//! makes room for new lines; it is therefore kept aside and written, on the same thread, once
//! the write that called the plugin has returned, so it follows the line being written. At
//! most 64 KiB of such lines wait per thread, and a line logged while they are written (a
//! cipher logging at every call) is dropped and counted ([`Xlog::dropped_lines`]). From
//! there, [`Xlog::flush`] fails with [`FlushError::Reentrant`] and [`Xlog::close`] does
//! nothing. A line a clock logs from inside [`Clock::now`] does not ask the clock again for
//! its own time (a clock logging at every call would recurse without end): it carries the
//! last time a clock gave its thread.
//!
//! # Compression levels
//!
//! Levels apply to the whole-block compression on the background thread. Defaults: zlib 2
//! (zlib-rs `deflate_fast` with dynamic Huffman trees), zstd 1 (window log 17, covering the
//! block). On the benchmark's 1 M lines of ~183 bytes (`benches/`), zlib 2 writes 46.2 MB and
//! zstd 1 writes 38.2 MB; Mars's settings on the same lines (zlib 9 and zstd 6 with window log
//! 16, one flush per line) give 55.4 MB and 61.6 MB. zlib 1 (`deflate_quick`, fixed codes) is
//! cheaper but 62 MB; zlib 4 gives 41.3 MB and zlib 6 38.8 MB at 2–2.7× the CPU of level 2.
//!
//! # Differences from Mars worth knowing
//!
//! - Size splitting applies while running, before each block (Mars: when a file is opened, so
//!   its files overshoot and sync mode never splits within a day).
//! - Close flushes after the writer thread stops (Mars can lose the last lines).
//! - Expiry and the cache-dir move touch only this prefix's files,
//!   `<prefix>_<YYYYMMDD>[_<N>].xlog` (Mars: every `.xlog` in the folder, and every cache file
//!   whose name starts with the prefix).
//! - Moving a cache file into the log dir leaves a note beside it
//!   (`<prefix>_<YYYYMMDD>.xlog.moving`) for the time of the move, so a crash between the
//!   append and the removal does not make the next move append the file a second time (Mars
//!   appends it again).
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
mod files;
pub mod format;
mod guarded;
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
