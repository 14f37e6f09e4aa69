//! [`Xlog`]: the writer, its builder and its guard.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use phobos_plugin_api::cipher::{BlockEncryptor, CipherError, LogCipher};

use crate::block::{
    async_magic, emit_block, sync_magic, BlockHeader, Encryption, HEADER_LEN, MAGIC_END,
};
use crate::clock::{ask, Clock, SystemClock, WallTime};
use crate::compress::{BlockCompressor, StoredFramer};
use crate::config::{Durability, Mode, Overflow, XlogConfig};
use crate::files::LogFiles;
use crate::format::{format_line, format_plain, mark_info, Level, Record, ThreadIds};
use crate::guarded;
use crate::mmap::{disk_space, BufferFile};
use crate::staging::{
    clear_intent_record, compute_keystream, mars_readable, recover, write_intent, Active, Intent,
    Region, StageError, Stager, StreamStaging, FILE_LEN, META_BASE, META_LEN, SLOTS, SLOT_LEN,
};

mod nested;

/// Why a writer could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration is unusable.
    #[error("invalid xlog config: {0}")]
    InvalidConfig(String),
    /// Another writer (in this or another process) holds the buffer file.
    #[error("buffer file {0} is in use by another xlog writer")]
    BufferInUse(PathBuf),
    /// The cipher could not start a session; xlog never falls back to plaintext.
    #[error("log cipher failed: {0}")]
    Cipher(#[from] CipherError),
    /// Setting up the compressor failed.
    #[error("compressor setup failed: {0}")]
    Compressor(String),
    /// A file or directory operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: io::Error,
    },
}

/// Why a flush failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// The writer was closed.
    #[error("xlog writer is closed")]
    Closed,
    /// The background writer thread died (it panicked): staged lines stay in the buffer file
    /// for the next start to recover, new lines are dropped once it is full. The flush still
    /// wrote the warning counting those drops straight to the log file.
    #[error("the xlog writer thread died")]
    WriterDied,
    /// Called from inside the writer's own write path (by a cipher while it encrypts, or a
    /// clock), where a flush would wait for the writing that called it.
    #[error("xlog flush called from inside the writer's own write path")]
    Reentrant,
}

/// Builds an [`Xlog`]. See the crate docs for an example.
#[derive(Debug)]
#[must_use]
pub struct XlogBuilder {
    config: XlogConfig,
    cipher: Option<Arc<dyn LogCipher>>,
    clock: Arc<dyn Clock>,
    banners: bool,
}

impl XlogBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: XlogConfig) -> Self {
        self.config = config;
        self
    }

    /// Directory of the log files (required).
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.log_dir = dir.into();
        self
    }

    /// File name prefix (required).
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.name_prefix = prefix.into();
        self
    }

    /// Cache directory (see [`XlogConfig::cache_dir`]).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.cache_dir = Some(dir.into());
        self
    }

    /// Async or sync mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.config.mode = mode;
        self
    }

    /// zlib or zstd.
    pub fn compression(mut self, c: crate::Compression) -> Self {
        self.config.compression = c;
        self
    }

    /// Compression level (zlib 0–9, zstd 1–22 and negative fast levels).
    pub fn compression_level(mut self, level: i32) -> Self {
        self.config.compression_level = Some(level);
        self
    }

    /// Size limit of one file (0 = no splitting).
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.config.max_file_size = bytes;
        self
    }

    /// Lowest level written.
    pub fn level(mut self, level: Level) -> Self {
        self.config.level = level;
        self
    }

    /// Block or drop when the writer falls behind.
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.config.overflow = overflow;
        self
    }

    /// Durable (default) or buffered logging calls, see [`Durability`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.config.durability = durability;
        self
    }

    /// Encrypts blocks with `cipher` (configured with the server's public key).
    pub fn cipher(mut self, cipher: Arc<dyn LogCipher>) -> Self {
        self.cipher = Some(cipher);
        self
    }

    /// Takes timestamps, hours and file dates from `clock` instead of the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Whether to log Mars's open and close banner lines (default true).
    pub fn banners(mut self, on: bool) -> Self {
        self.banners = on;
        self
    }

    /// Opens the writer: recovers what a crashed predecessor left in the buffer file, writes
    /// the banner and starts the background thread.
    ///
    /// # Errors
    ///
    /// See [`BuildError`].
    pub fn build(self) -> Result<XlogGuard, BuildError> {
        let xlog = Xlog::open(self)?;
        Ok(XlogGuard { xlog })
    }
}

/// Owns an open writer: flushes, logs the close banner and stops the background thread when
/// dropped. Dereferences to [`Xlog`]; [`XlogGuard::xlog`] gives clonable handles.
#[derive(Debug)]
#[must_use = "dropping the guard closes the writer"]
pub struct XlogGuard {
    xlog: Xlog,
}

impl XlogGuard {
    /// A handle for logging from elsewhere; it stops writing once the guard is dropped.
    pub fn xlog(&self) -> Xlog {
        self.xlog.clone()
    }
}

impl std::ops::Deref for XlogGuard {
    type Target = Xlog;

    fn deref(&self) -> &Xlog {
        &self.xlog
    }
}

impl Drop for XlogGuard {
    fn drop(&mut self) {
        self.xlog.close();
    }
}

/// A handle to an open writer. Cheap to clone; all clones write to the same files.
#[derive(Clone, Debug)]
pub struct Xlog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: XlogConfig,
    clock: Arc<dyn Clock>,
    encryption: Encryption,
    state: Mutex<State>,
    /// Wakes the background thread.
    work: Condvar,
    /// Signals that a slot came back or a block reached the file.
    done: Condvar,
    files: Mutex<LogFiles>,
    /// Lines dropped, by cause ([`DropCause`] as index).
    dropped: [AtomicU64; DropCause::COUNT],
    /// Lines lost because appending their block to the log file failed.
    write_failed: AtomicU64,
    /// The OS error of the last failed append.
    last_write_error: Mutex<Option<String>>,
    seq: AtomicU16,
    closed: AtomicBool,
    /// Set (under the state lock, waking every waiter) when the writer thread has ended, by
    /// returning or by panicking: from then on nobody waits for it.
    writer_gone: AtomicBool,
    /// Test hook: the writer thread panics at its next job.
    #[cfg(test)]
    panic_writer: AtomicBool,
    /// Test hook: the writer thread panics after it appended recovered blocks, before it
    /// frees their slots (a crash at that point).
    #[cfg(test)]
    crash_in_retry: AtomicBool,
    /// Test hook: the writer thread wakes as for its housekeeping, once.
    #[cfg(test)]
    house_now: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Buffered durability: lines waiting for the compressor thread.
    pending: Mutex<Pending>,
    /// Wakes the compressor thread.
    pending_work: Condvar,
    /// Signals compressor progress (room in the queue, lines processed).
    pending_done: Condvar,
    compressor: Mutex<Option<JoinHandle<()>>>,
    /// Whether the slots are mapped from the staging file ([`StagingFile::mapped`], which the
    /// writer thread updates; read here by [`Xlog::is_mapped`] and the open banner).
    mapped: AtomicBool,
    banners: bool,
}

#[derive(Debug)]
struct State {
    stager: Stager,
    /// The slot being filled and its block, if one was started.
    cur: Option<Region>,
    active: Option<Active>,
    spare: Option<Region>,
    queue: VecDeque<Sealed>,
    next_gen: u64,
    sealed_gen: u64,
    written_gen: u64,
    /// The loss counts up to which a warning line was claimed (staged, being written, or
    /// written): what is lost past them is owed a warning.
    claimed: Losses,
    /// Lines whose warning was claimed and then lost with its block (its append failed, or
    /// it could not be staged or written): owed a warning again, with those past `claimed`.
    report_again: Losses,
    /// The lines the warnings staged in the active block report (it carries them).
    active_report: Losses,
    shutdown: bool,
    /// The active block's stream is unusable (a failed line); seal it at the next chance.
    poisoned: bool,
    /// The active block holds a Fatal line that found no spare slot to seal it with: sealed
    /// as soon as a slot comes back (a Fatal line is written at once).
    fatal_pending: bool,
    last_seal: Instant,
    /// Text buffers of written blocks, for reuse by the next blocks.
    plain_pool: Vec<Vec<u8>>,
    /// Blocks recovered at open whose append failed (disk full…): retried by the writer
    /// thread before each block it writes, put back into the buffer file at close if still
    /// unwritten.
    unwritten_recovery: Vec<Unwritten>,
    /// Slots still holding those blocks in the buffer file. A slot is taken back for logging
    /// only when no other slot is free or in flight, and (for a caller that may wait) after
    /// one more try at appending them has failed; its block then lives in memory only.
    held: Vec<Region>,
    /// With the buffer file not mapped: the slots of the file that hold those blocks, cleared
    /// through the file once they are written.
    held_in_file: Vec<usize>,
    /// A logging thread about to take back a held slot asks the writer thread to try
    /// appending the held blocks first (see [`Inner::wait_for_room`]).
    retry_wanted: bool,
    /// Tries made at such a request, counted so the thread that asked sees when one was.
    retries_done: u64,
}

/// A block recovered at open and not yet appended to the log file.
#[derive(Clone, Debug)]
struct Unwritten {
    /// The slot of the staging file it was found in (and stays in while held).
    slot: usize,
    /// Its generation there.
    gen: u64,
    /// The complete block (as [`recover`] returns it).
    block: Vec<u8>,
    /// The slot's metadata as read at open (empty for a file without it), for recording a
    /// write intent through the file when the slot is not mapped.
    meta: Vec<u8>,
}

/// The highest staged-block generation believed (2^48: a block a microsecond for eight
/// years).
const MAX_GEN: u64 = 1 << 48;

/// Lines queued by callers in [`Durability::Buffered`] mode.
#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: Vec<(usize, bool, WallTime)>,
    submitted: u64,
    processed: u64,
    sleeping: bool,
    stop: bool,
}

/// Marks the writer thread gone when it ends, by returning or by unwinding from a panic, and
/// wakes everyone waiting for it (they check the flag under the state lock, so none misses it).
struct WriterGone<'a>(&'a Inner);

impl Drop for WriterGone<'_> {
    fn drop(&mut self) {
        let inner = self.0;
        inner.writer_gone.store(true, Ordering::SeqCst);
        let _st = inner.lock_state();
        inner.done.notify_all();
        inner.work.notify_all();
    }
}

/// Shortest flush interval; smaller configured values are raised to it.
const MIN_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Longest name prefix: the longest log file name, `<prefix>_YYYYMMDD_4294967295.xlog`, must
/// fit in the 255 bytes file systems allow for a name (otherwise every block is lost).
const MAX_PREFIX_LEN: usize = 255 - "_YYYYMMDD_4294967295.xlog".len();

/// Most bytes queued in [`Durability::Buffered`] mode before the overflow policy applies.
pub(crate) const PENDING_MAX: usize = 4 << 20;

/// Why a line was dropped. Each cause is counted apart and reported by a warning line of its
/// own, `xlog dropped N lines: <reason>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DropCause {
    /// No room for it: both slots (or the buffered queue) were full with [`Overflow::Drop`],
    /// or one of the writer's own threads found none while writing its deferred lines.
    FellBehind,
    /// It could not be compressed or encrypted (the compressor or the cipher failed).
    Unencodable,
    /// Logged from inside the writer's own write path (by its cipher or clock) while such
    /// lines were being written, or beyond what a thread keeps of them (see `nested`).
    Reentrant,
    /// Logged while the writer was closing or after it was closed.
    Closed,
    /// The writer thread had died (a bug), so nothing made room for it.
    WriterGone,
}

impl DropCause {
    /// How many causes there are.
    const COUNT: usize = 5;
    /// Every cause, in the order their warnings are written.
    const ALL: [DropCause; Self::COUNT] = [
        DropCause::FellBehind,
        DropCause::Unencodable,
        DropCause::Reentrant,
        DropCause::Closed,
        DropCause::WriterGone,
    ];

    /// The end of the warning line reporting drops of this cause.
    fn reason(self) -> &'static str {
        match self {
            DropCause::FellBehind => "the writer fell behind",
            DropCause::Unencodable => "they could not be compressed or encrypted",
            DropCause::Reentrant => "logged from inside the writer (by its cipher or clock)",
            DropCause::Closed => "logged while the writer was closing",
            DropCause::WriterGone => "the writer thread died",
        }
    }
}

/// Lines lost, by kind: a count (since the writer opened) or an amount (what some warning
/// lines report), per drop cause and for failed writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Losses {
    /// Dropped, by cause ([`DropCause`] as index).
    dropped: [u64; DropCause::COUNT],
    /// In blocks whose append to the log file failed.
    write_failed: u64,
}

impl Losses {
    /// The kinds: each drop cause (as its index), then failed writes.
    const KINDS: usize = DropCause::COUNT + 1;

    fn at(&mut self, kind: usize) -> &mut u64 {
        match self.dropped.get_mut(kind) {
            Some(n) => n,
            None => &mut self.write_failed,
        }
    }

    fn get(&self, kind: usize) -> u64 {
        self.dropped.get(kind).copied().unwrap_or(self.write_failed)
    }

    /// Adds `other`'s amounts.
    fn add(&mut self, other: &Losses) {
        for kind in 0..Self::KINDS {
            *self.at(kind) = self.at(kind).saturating_add(other.get(kind));
        }
    }

    /// Only `amount` lines of `kind`.
    fn only(kind: usize, amount: u64) -> Losses {
        let mut out = Losses::default();
        *out.at(kind) = amount;
        out
    }
}

/// A warning line owed ([`Inner::loss_warnings`]): its text, and what claiming it does.
struct LossWarning {
    msg: String,
    kind: usize,
    /// The count of `kind` it reports up to.
    upto: u64,
    /// Of what it reports, the lines owed again (their warning was lost).
    again: u64,
    /// The lines it reports.
    amount: u64,
}

impl LossWarning {
    /// Marks the warning as claimed: what it reports is no longer owed.
    fn claim(&self, st: &mut State) {
        let claimed = st.claimed.at(self.kind);
        *claimed = (*claimed).max(self.upto);
        let again = st.report_again.at(self.kind);
        *again = again.saturating_sub(self.again);
    }

    /// Gives the warning back (it was lost): what it reports is owed again.
    fn lost(&self, st: &mut State) {
        st.report_again.add(&Losses::only(self.kind, self.amount));
    }
}

#[derive(Debug)]
struct Sealed {
    region: Region,
    len: usize,
    gen: u64,
    lines: u64,
    /// The lines the block's warning lines report.
    report: Losses,
    /// The block's text, for the compressed copy.
    plain: Vec<u8>,
}

/// The writer thread's half of a block's life: turns a sealed staged block (uncompressed
/// framing, see `compress::StoredFramer`) into the compressed, encrypted block appended to
/// the log file.
struct Finisher {
    compressor: BlockCompressor,
    /// The magic of the blocks it writes (the staged ones may carry the staged-stream magic).
    magic: u8,
    /// A session of its own (its key goes into the blocks it writes): the staging session's
    /// encryptor stays with the logging threads.
    encryptor: Option<Box<dyn BlockEncryptor>>,
    key: [u8; 64],
    body: Vec<u8>,
    enc: Vec<u8>,
    out: Vec<u8>,
    /// The staging stream's key, to precompute keystreams (keyed writers).
    stream_key: Option<[u8; 32]>,
    /// A keystream buffer that was not used, for the next precomputation.
    keystream: Option<Vec<u8>>,
}

impl Finisher {
    /// The block to append for the complete staged block `staged` holding `plain`: the
    /// compressed copy, or `None` to append `staged` itself (compression or encryption
    /// failed, or did not make it smaller).
    fn finish(&mut self, staged: &[u8], plain: &[u8]) -> Option<&[u8]> {
        let header = BlockHeader::parse(staged).ok()?;
        self.body.clear();
        self.compressor.compress_block(plain, &mut self.body).ok()?;
        let body: &[u8] = match self.encryptor.as_mut() {
            Some(e) => {
                self.enc.clear();
                let used = e.encrypt(&self.body, &mut self.enc).ok()?;
                let rest = self.body.get(used..).unwrap_or(&[]);
                e.finish_block(rest, &mut self.enc).ok()?;
                &self.enc
            }
            None => &self.body,
        };
        if HEADER_LEN + body.len() + 1 >= staged.len() {
            return None;
        }
        let h = BlockHeader {
            magic: self.magic,
            len: body.len() as u32,
            key: self.key,
            ..header
        };
        let mut hb = [0u8; HEADER_LEN];
        h.emit(&mut hb);
        self.out.clear();
        self.out.extend_from_slice(&hb);
        self.out.extend_from_slice(body);
        self.out.push(MAGIC_END);
        Some(&self.out)
    }
}

/// The block sequence: 1, 2, …, 65535, 1, … (0 is skipped). Mars shares one counter between
/// all appenders of a process, which makes each file show false gaps; here each writer has its
/// own, starting at 1 as in a fresh Mars process. This is the number the next block gets; it
/// is taken (stored back into `seq`) only once the block's first line is committed, so a block
/// abandoned before that leaves no gap for the decoder to report as missing.
fn peek_seq(seq: &AtomicU16) -> u16 {
    match seq.load(Ordering::Relaxed).wrapping_add(1) {
        0 => 1,
        s => s,
    }
}

thread_local! {
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

/// Runs `f` with the thread's (cleared) line buffer, or with a buffer of its own when that
/// one is in use (a log call from inside a log call) or gone
/// (a log call from a thread-local destructor): either would otherwise panic.
fn with_line_buffer(f: impl FnOnce(&mut Vec<u8>)) {
    let mut f = Some(f);
    let _ = LINE.try_with(|buf| {
        if let Ok(mut buf) = buf.try_borrow_mut() {
            buf.clear();
            if let Some(f) = f.take() {
                f(&mut buf);
            }
        }
    });
    if let Some(f) = f {
        f(&mut Vec::with_capacity(1024));
    }
}

impl Xlog {
    /// Starts building a writer with the default [`XlogConfig`] and the system clock.
    pub fn builder() -> XlogBuilder {
        XlogBuilder {
            config: XlogConfig::default(),
            cipher: None,
            clock: Arc::new(SystemClock),
            banners: true,
        }
    }

    /// Logs one record (formatted as Mars does) if its level is enabled.
    ///
    /// In async mode the line is framed, encrypted (with a key) and committed to the
    /// memory-mapped buffer before this returns, so it survives the process being killed from
    /// then on; it is compressed later, on the writer thread.
    /// In sync mode it has been written to the log file.
    pub fn log(&self, record: &Record<'_>) {
        if record.level < self.inner.config.level {
            return;
        }
        let now = ask(&*self.inner.clock);
        with_line_buffer(|buf| {
            format_line(buf, record, now, ThreadIds::current());
            self.write_formatted(buf, record.level == Level::Fatal, now);
        });
    }

    /// Logs a line without metadata: just `message` (plus `\n`), like Mars's banner lines.
    pub fn log_plain(&self, message: &[u8]) {
        let now = ask(&*self.inner.clock);
        with_line_buffer(|buf| {
            format_plain(buf, message);
            self.write_formatted(buf, false, now);
        });
    }

    /// Logs `message` at `level` with a tag and no source location.
    pub fn log_message(&self, level: Level, tag: &str, message: &[u8]) {
        self.log(&Record {
            tag,
            ..Record::new(level, message)
        });
    }

    /// Waits until every sealed block is written, sealing nothing; returns the lines of the
    /// block still open (tests of when blocks are sealed).
    #[cfg(test)]
    pub(crate) fn wait_for_sealed_blocks(&self) -> u64 {
        let inner = &self.inner;
        let mut st = inner.lock_state();
        let target = st.sealed_gen;
        while st.written_gen < target && !inner.is_writer_gone() {
            st = inner.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.active.as_ref().map_or(0, |a| a.lines)
    }

    /// Writes the staged block to the log file and waits until it is there (in the page
    /// cache; see the crate docs on durability). Lines lost since the last warning line
    /// (dropped, or lost to failed writes) are reported first, by warning lines written with
    /// the block, as the next logged line would: so losses after the last line logged reach
    /// the log too, at the latest at close. In sync mode, where every line is in the file
    /// already, only those warnings are written.
    ///
    /// # Errors
    ///
    /// [`FlushError::Closed`] after the writer was closed; [`FlushError::WriterDied`] if the
    /// background thread died (a bug): then this returns at once instead of waiting forever;
    /// [`FlushError::Reentrant`] when called by a cipher or clock from inside the writer's
    /// own write path.
    pub fn flush(&self) -> Result<(), FlushError> {
        // Lines a clock logs while the block is sealed below are written when this returns.
        let Some(_path) = nested::WritePath::try_enter() else {
            return Err(FlushError::Reentrant);
        };
        let inner = &self.inner;
        inner.drain_pending();
        inner.report_losses();
        let mut st = inner.lock_state();
        if st.shutdown {
            return Err(FlushError::Closed);
        }
        if inner.is_writer_gone() {
            return Err(FlushError::WriterDied);
        }
        if st.active.as_ref().is_some_and(|a| a.lines > 0) {
            // A slot holding a recovered block counts as room: logging takes it back if the
            // writer has not made room otherwise.
            while st.spare.is_none()
                && st.held.is_empty()
                && !st.shutdown
                && !inner.is_writer_gone()
            {
                st = inner.done.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.spare.is_some() || !st.held.is_empty() {
                inner.seal(&mut st);
            }
        }
        let target = st.sealed_gen;
        while st.written_gen < target && !st.shutdown && !inner.is_writer_gone() {
            st = inner.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.written_gen < target && inner.is_writer_gone() {
            return Err(FlushError::WriterDied);
        }
        Ok(())
    }

    /// Lines dropped so far because the writer fell behind ([`Overflow::Drop`]), the writer
    /// was closed, compression/encryption failed, or a cipher or clock logged more than the
    /// writer keeps from inside its write path. The log reports each cause apart
    /// (`xlog dropped N lines: <reason>`). Lines lost to failed writes are counted by
    /// [`Xlog::write_failed_lines`] instead.
    pub fn dropped_lines(&self) -> u64 {
        self.inner
            .dropped
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Lines lost so far because appending them to the log file failed (disk full, I/O
    /// error, the file's directory gone…); see [`Xlog::last_write_error`] for why.
    pub fn write_failed_lines(&self) -> u64 {
        self.inner.write_failed.load(Ordering::Relaxed)
    }

    /// The OS error of the last failed append to a log file, as text, if any failed.
    pub fn last_write_error(&self) -> Option<String> {
        self.inner
            .last_write_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many blocks recovered at open are still waiting to be appended to the log file
    /// (their append failed, e.g. on a full disk; the writer retries before each block it
    /// writes, and before logging takes back a slot holding one). Normally 0.
    pub fn pending_recovered_blocks(&self) -> usize {
        self.inner.lock_state().unwritten_recovery.len()
    }

    /// The configuration in use.
    pub fn config(&self) -> &XlogConfig {
        &self.inner.config
    }

    /// Whether the buffer file is memory-mapped (false: heap fallback, no crash recovery).
    ///
    /// A writer that could not open the file at the start works in heap memory until the
    /// file can be made (its folder made or given back): after each written block it tries,
    /// and from then on this is true.
    pub fn is_mapped(&self) -> bool {
        self.inner.mapped.load(Ordering::Relaxed)
    }

    /// Runs the housekeeping Mars schedules after open right now: deletes expired files and
    /// moves old cache files. Returns (deleted, moved).
    pub fn run_housekeeping(&self) -> (usize, usize) {
        let now = ask(&*self.inner.clock);
        let mut files = self.inner.lock_files();
        let deleted = files.delete_expired(now, self.inner.config.max_alive);
        let moved = files.move_old_cache_files(now);
        (deleted, moved)
    }

    /// Closes the writer: logs the close banner, flushes (reporting losses no warning line
    /// covers yet, banners on or off), stops the background thread and zeroes the buffer
    /// file. Later logging calls are dropped. Idempotent.
    ///
    /// Called by a cipher or clock from inside the writer's own write path, it does nothing:
    /// it would wait for the writing that called it (the guard still closes the writer).
    pub fn close(&self) {
        let inner = &self.inner;
        if nested::is_inside() {
            return;
        }
        if inner.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        if inner.banners {
            let now = ask(&*inner.clock);
            let stamp = banner_stamp(now, "$$$");
            let line = format!(
                "$$$$$$$$$${stamp}$$$$$$$$$${}\n",
                mark_info(now, ThreadIds::current())
            );
            with_line_buffer(|b| {
                b.extend_from_slice(line.as_bytes());
                self.write_formatted(b, false, now);
            });
        }
        let _ = self.flush();
        {
            let mut q = inner.pending.lock().unwrap_or_else(|e| e.into_inner());
            q.stop = true;
            inner.pending_work.notify_all();
        }
        let compressor = inner
            .compressor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = compressor {
            let _ = h.join();
        }
        // A thread that passed the `closed` check just before it was set may still stage a
        // line: shut down only once no staged line is left.
        loop {
            let _ = self.flush();
            let mut st = inner.lock_state();
            // A dead writer cannot take the last lines; they stay in the buffer file.
            if st.active.as_ref().is_none_or(|a| a.lines == 0) || inner.is_writer_gone() {
                st.shutdown = true;
                inner.work.notify_all();
                inner.done.notify_all();
                break;
            }
        }
        let handle = inner
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        // Clean close: the buffer holds nothing to recover (Mars leaves it all zeros). After
        // the writer thread died, what it did not write stays there for the next start.
        if inner.is_writer_gone() && !inner.lock_state().queue.is_empty() {
            return;
        }
        let mut guard = inner.lock_state();
        if guard.active.as_ref().is_some_and(|a| a.lines > 0) {
            return;
        }
        let st = &mut *guard;
        let mut slots: Vec<&mut Region> = [st.cur.as_mut(), st.spare.as_mut()]
            .into_iter()
            .flatten()
            .chain(st.held.iter_mut())
            .collect();
        for r in &mut slots {
            r.block.fill(0);
            r.meta.fill(0);
        }
        // Recovered blocks that could not be written go back into the buffer file, for the
        // next start (unmapped: they never left it).
        for ((gen, u), r) in (1..).zip(&st.unwritten_recovery).zip(slots) {
            if r.block.is_mapped() {
                r.restore_recovered(gen, &u.block);
            }
        }
    }

    /// Test hook: counts `n` lines as dropped because the writer fell behind.
    #[cfg(test)]
    pub(crate) fn simulate_dropped_lines(&self, n: u64) {
        self.inner.count_dropped(DropCause::FellBehind, n);
    }

    /// Test hook: appends of more than `n` bytes fail part way from now on (and are cut
    /// back), as under a file size limit; `None` lifts it.
    #[cfg(test)]
    pub(crate) fn fail_appends_over(&self, n: Option<usize>) {
        self.inner.lock_files().fail_over = n;
    }

    /// Test hook: makes the writer thread panic once it has appended recovered blocks that an
    /// earlier attempt failed to append, before it frees their slots.
    #[cfg(test)]
    pub(crate) fn crash_after_retried_recovery(&self) {
        self.inner.crash_in_retry.store(true, Ordering::SeqCst);
    }

    /// Test hook: wakes the writer thread as its housekeeping timer does (no block to write),
    /// then waits until it has ended.
    #[cfg(test)]
    pub(crate) fn wake_writer_and_wait_until_gone(&self) {
        let inner = &self.inner;
        inner.house_now.store(true, Ordering::SeqCst);
        inner.work.notify_all();
        let mut st = inner.lock_state();
        while !inner.is_writer_gone() {
            st = inner.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Test hook: makes the writer thread panic at its next job.
    #[cfg(test)]
    pub(crate) fn panic_writer_thread(&self) {
        self.inner.panic_writer.store(true, Ordering::SeqCst);
        self.inner.work.notify_all();
    }

    /// Test hook: runs `f` while holding the staging lock (the writer cannot stage).
    #[cfg(test)]
    pub(crate) fn with_staging_locked<T>(&self, f: impl FnOnce() -> T) -> T {
        let _st = self.inner.lock_state();
        f()
    }

    /// Writes a formatted line, or defers it if this thread is inside a write path already
    /// (a cipher or clock logging; see `nested`).
    fn write_formatted(&self, line: &[u8], fatal: bool, now: WallTime) {
        nested::write(&self.inner, line, fatal, now);
    }

    fn open(b: XlogBuilder) -> Result<Xlog, BuildError> {
        let config = b.config;
        if config.name_prefix.is_empty()
            || config.name_prefix.contains(['/', '\\', '\0'])
            || config.name_prefix.starts_with('.')
        {
            return Err(BuildError::InvalidConfig(format!(
                "name prefix {:?} must be a plain, non-empty file name",
                config.name_prefix
            )));
        }
        if config.name_prefix.len() > MAX_PREFIX_LEN {
            return Err(BuildError::InvalidConfig(format!(
                "name prefix is {} bytes long; at most {MAX_PREFIX_LEN} leave room in a file \
                 name for `_YYYYMMDD_N.xlog`",
                config.name_prefix.len()
            )));
        }
        let io_err = |what: String| move |source| BuildError::Io { what, source };
        std::fs::create_dir_all(&config.log_dir).map_err(io_err(format!(
            "creating log dir {}",
            config.log_dir.display()
        )))?;
        if let Some(c) = &config.cache_dir {
            std::fs::create_dir_all(c)
                .map_err(io_err(format!("creating cache dir {}", c.display())))?;
        }
        // Every call into the cipher (an in-process plugin) is guarded against panics.
        let cipher_kind = b
            .cipher
            .as_deref()
            .map(phobos_plugin_api::panics::cipher_kind)
            .transpose()?;
        let encryption = cipher_kind.map_or(Encryption::None, Encryption::from_kind);
        let mut encryptor = match &b.cipher {
            Some(c) => Some(guarded::new_encryptor(c.as_ref())?),
            None => None,
        };
        // Keyed writers stage with ChaCha20 under a session key that `encryptor` wraps.
        let stream = match (&mut encryptor, cipher_kind) {
            (Some(e), Some(kind)) => Some(StreamStaging::new(e.as_mut(), kind)?),
            _ => None,
        };
        let level = config
            .compression_level
            .unwrap_or(config.compression.default_level());
        let compressor =
            BlockCompressor::new(config.compression, level).map_err(BuildError::Compressor)?;
        let finish_encryptor = match &b.cipher {
            Some(c) => Some(guarded::new_encryptor(c.as_ref())?),
            None => None,
        };
        let finisher = Finisher {
            compressor,
            magic: async_magic(config.compression, encryption),
            key: finish_encryptor
                .as_ref()
                .map_or([0; 64], |e| e.header_key()),
            encryptor: finish_encryptor,
            body: Vec::new(),
            enc: Vec::new(),
            out: Vec::new(),
            stream_key: stream.as_ref().map(StreamStaging::key),
            keystream: None,
        };
        // Lines are staged uncompressed (stored deflate / raw zstd blocks); a keyed writer
        // encrypts them with the staging stream cipher. The 8-byte padding keeps Mars's TEA
        // from leaving clear bytes in keyed sync-mode blocks (`one_shot_body`).
        let framer = StoredFramer::new(
            config.compression == crate::Compression::Zstd,
            encryption == Encryption::Mars,
        );
        let staged_magic = if stream.is_some() {
            async_magic(config.compression, Encryption::Staged)
        } else {
            async_magic(config.compression, encryption)
        };
        let stager = Stager::new(framer, encryptor, stream, staged_magic);
        let mut files = LogFiles::new(
            config.log_dir.clone(),
            config.cache_dir.clone(),
            config.name_prefix.clone(),
            config.max_file_size,
            config.cache_days,
        )
        .with_tips(
            sync_magic(config.compression, encryption),
            stager.header_key(),
        );

        // The buffer file: recover, then zero and map.
        let started = Instant::now();
        let buf_dir = config
            .cache_dir
            .clone()
            .unwrap_or_else(|| config.log_dir.clone());
        let buf_path = buf_dir.join(format!("{}.mmap3", config.name_prefix));
        // Design: as Mars (§4.1), a buffer file that cannot be opened (its folder not
        // writable, a directory in its place) leaves the writer working in heap memory,
        // without crash recovery, rather than leaving the app without logs. Only a file held
        // by another writer is an error: two writers would mix their blocks.
        let mut buffer_error = None;
        let mut bf = match BufferFile::open_locked(&buf_path) {
            Ok(bf) => Some(bf),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(BuildError::BufferInUse(buf_path));
            }
            Err(e) => {
                buffer_error = Some(e);
                None
            }
        };
        // Design: a buffer file of Mars's layout (one 150 KiB block, no slot metadata) is first
        // grown to this crate's layout, with zeros after Mars's buffer, so that recovery
        // records the write intent of its block in slot 0's metadata as for any staged block:
        // a crash after the block was appended, before the file is cleared below, then does
        // not append it a second time at the next start. Slot 0 keeps its bytes, so Mars's own
        // recovery still reads the block. Only a file of Mars's exact size is grown (Mars
        // makes it so): in a damaged one, cut short, the zeros after its end would join a
        // block's body where recovery now stops at the end of the file. Such a file, and one
        // that cannot grow (disk full), has its blocks appended without a record, and again
        // after such a crash.
        if let Some(bf) = bf.as_mut() {
            if bf.file_len().is_ok_and(|len| len == SLOT_LEN as u64) {
                let _ = bf.extend_zeroed(FILE_LEN);
            }
        }
        let old = match bf.as_mut() {
            Some(bf) => bf
                .read_up_to(FILE_LEN)
                .map_err(io_err(format!("reading {}", buf_path.display())))?,
            None => Vec::new(),
        };
        let now = ask(&*b.clock);
        let hour = now.local().hour as u8;
        let tip_magic = sync_magic(config.compression, encryption);
        let key = stager.header_key();
        let recovered = recover(&old, hour);
        let mut pending = Vec::new();
        for r in &recovered {
            if let Some(intent) = &r.intent {
                if files.settle_intent(intent, &r.block) {
                    continue;
                }
            }
            pending.push(r);
        }
        // Design: a failed append of the recovered blocks (disk full) does not stop the
        // writer from opening: they stay in their slots of the buffer file and the writer
        // thread retries them; logging starts in the other slots.
        let mut held_slots = Vec::new();
        let mut unwritten_recovery = Vec::new();
        let mut recovery_error = None;
        if !pending.is_empty() {
            // Design: each recovered block is appended on its own, its write intent recorded
            // in its slot first (as the writer thread does for every block), so that a crash
            // before the staging file is cleared below finds the blocks already appended
            // rather than appending them again. Only the tip lines around them may repeat.
            let (begin, end) = recovery_tips(tip_magic, &key, now);
            let mut written = 0;
            let mut res = files.append(now, &begin, false, |_| {}).map(drop);
            while res.is_ok() && written < pending.len() {
                let r = pending[written];
                res = files
                    .append(
                        now,
                        &mars_readable(&r.block, recut_level(&config)),
                        false,
                        |i| {
                            if let Some(bf) = bf.as_ref() {
                                note_intent_in_file(
                                    bf,
                                    r.slot,
                                    slot_meta(&old, r.slot),
                                    r.gen,
                                    &r.block,
                                    i,
                                );
                            }
                        },
                    )
                    .map(drop);
                if res.is_ok() {
                    written += 1;
                }
            }
            if res.is_ok() {
                res = files.append(now, &end, false, |_| {}).map(drop);
            }
            if let Err(e) = res {
                let unwritten = &pending[written..];
                held_slots = unwritten.iter().map(|r| r.slot).collect();
                unwritten_recovery = unwritten
                    .iter()
                    .map(|r| {
                        // Design: the slot's intent (the crashed process's, settled above, or
                        // the one recorded for the append that just failed and was cut back)
                        // names nothing in the log file any more. Left in the file, a crash
                        // before the retry made the next start believe it, and cut off
                        // whatever had been appended since at its offset.
                        let mut meta = slot_meta(&old, r.slot).unwrap_or_default().to_vec();
                        clear_intent_record(&mut meta);
                        if let Some(bf) = bf.as_ref().filter(|_| meta.len() == META_LEN) {
                            let _ = bf.write_at((META_BASE + r.slot * META_LEN) as u64, &meta);
                        }
                        Unwritten {
                            slot: r.slot,
                            gen: r.gen,
                            block: r.block.clone(),
                            meta,
                        }
                    })
                    .collect();
                recovery_error = Some(e);
            }
        }
        #[cfg(test)]
        if CRASH_AFTER_RECOVERY.with(std::cell::Cell::get) {
            // A crash now (tests): the staging file keeps the recovered blocks.
            return Err(BuildError::InvalidConfig(
                "crashed after the recovery".into(),
            ));
        }
        let ready = match bf.as_mut() {
            None => false,
            Some(bf) if held_slots.is_empty() => bf.zero(FILE_LEN).is_ok(),
            // Keep the file's contents; make sure every slot exists (a Mars file has one).
            Some(bf) => bf.extend_zeroed(FILE_LEN).is_ok(),
        };
        let mut free = Vec::new();
        let mut held = Vec::new();
        for i in 0..SLOTS {
            let (block, meta) = if let Some(bf) = bf.as_ref().filter(|_| ready) {
                (
                    bf.map((i * SLOT_LEN) as u64, SLOT_LEN),
                    bf.map((META_BASE + i * META_LEN) as u64, META_LEN),
                )
            } else {
                (
                    crate::mmap::Backing::Heap(vec![0; SLOT_LEN]),
                    crate::mmap::Backing::Heap(vec![0; META_LEN]),
                )
            };
            let mut r = Region {
                block,
                meta,
                slot: i,
                file: 0,
            };
            if !r.block.is_mapped() {
                free.push(r);
            } else if held_slots.contains(&i) {
                // Its intent has been settled; a retry appends the block afresh.
                r.clear_intent();
                held.push(r);
            } else {
                r.block.fill(0);
                r.meta.fill(0);
                free.push(r);
            }
        }
        let held_in_file = if held.is_empty() {
            held_slots
        } else {
            Vec::new()
        };
        let mapped = free.iter().chain(&held).any(|r| r.block.is_mapped());
        // With both slots held, the first line takes one back (`wait_for_room`).
        let mut free = free.into_iter();
        let cur = free.next();
        let spare = free.next();
        let mmap_ms = started.elapsed().as_millis();
        // Generations go up by one a block; one past `MAX_GEN` in the file (whose slot
        // metadata has no checksum) is damage, not use, and counting on from it would
        // overflow. Such a block is still recovered, in its place by generation.
        let next_gen = recovered
            .iter()
            .map(|r| r.gen)
            .filter(|g| *g <= MAX_GEN)
            .max()
            .unwrap_or(0)
            + 1;

        let inner = Arc::new(Inner {
            clock: b.clock,
            encryption,
            state: Mutex::new(State {
                stager,
                cur,
                active: None,
                spare,
                queue: VecDeque::new(),
                next_gen,
                sealed_gen: 0,
                written_gen: 0,
                claimed: Losses::default(),
                report_again: Losses::default(),
                active_report: Losses::default(),
                shutdown: false,
                poisoned: false,
                fatal_pending: false,
                last_seal: Instant::now(),
                plain_pool: Vec::new(),
                unwritten_recovery,
                held,
                held_in_file,
                retry_wanted: false,
                retries_done: 0,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            files: Mutex::new(files),
            dropped: Default::default(),
            write_failed: AtomicU64::new(0),
            last_write_error: Mutex::new(None),
            seq: AtomicU16::new(0),
            closed: AtomicBool::new(false),
            writer_gone: AtomicBool::new(false),
            #[cfg(test)]
            panic_writer: AtomicBool::new(false),
            #[cfg(test)]
            crash_in_retry: AtomicBool::new(false),
            #[cfg(test)]
            house_now: AtomicBool::new(false),
            thread: Mutex::new(None),
            pending: Mutex::new(Pending::default()),
            pending_work: Condvar::new(),
            pending_done: Condvar::new(),
            compressor: Mutex::new(None),
            mapped: AtomicBool::new(mapped),
            banners: b.banners,
            config,
        });
        let worker = Arc::clone(&inner);
        let staging = StagingFile {
            file: bf,
            mapped,
            path: buf_path.clone(),
            gen: 0,
        };
        let handle = std::thread::Builder::new()
            .name("xlog-writer".to_owned())
            .spawn(move || worker.run_writer(staging, finisher))
            .map_err(io_err("spawning the writer thread".to_owned()))?;
        *inner.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        if inner.config.mode == Mode::Async && inner.config.durability == Durability::Buffered {
            let worker = Arc::clone(&inner);
            let handle = std::thread::Builder::new()
                .name("xlog-compressor".to_owned())
                .spawn(move || worker.run_compressor())
                .map_err(io_err("spawning the compressor thread".to_owned()))?;
            *inner.compressor.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        }
        let xlog = Xlog { inner };
        if xlog.inner.banners {
            xlog.log_open_banner(now, mmap_ms);
        }
        if let Some(e) = buffer_error {
            let msg = format!(
                "xlog could not open the buffer file {}: {e}; logging without crash recovery",
                buf_path.display()
            );
            xlog.log_message(Level::Warn, "xlog", msg.as_bytes());
        }
        if let Some(e) = recovery_error {
            xlog.inner.note_write_failure(0, &e);
            let msg = format!(
                "xlog could not append the {} blocks recovered from {} to the log file: {e}; \
                 they are kept and appended once writing works again",
                pending.len(),
                buf_path.display()
            );
            xlog.log_message(Level::Warn, "xlog", msg.as_bytes());
        }
        Ok(xlog)
    }

    fn log_open_banner(&self, now: WallTime, mmap_ms: u128) {
        let c = &self.inner.config;
        let stamp = banner_stamp(now, "^^^");
        let mut lines = vec![
            format!(
                "^^^^^^^^^^{stamp}^^^^^^^^^^{}",
                mark_info(now, ThreadIds::current())
            ),
            format!("get mmap time: {mmap_ms}"),
            "MARS_URL: ".to_owned(),
            "MARS_PATH: phobos-xlog".to_owned(),
            format!("MARS_REVISION: {}", env!("CARGO_PKG_VERSION")),
            "MARS_BUILD_TIME: ".to_owned(),
            "MARS_BUILD_JOB: ".to_owned(),
            format!(
                "log appender mode:{}, use mmap:{}",
                u8::from(c.mode == Mode::Sync),
                u8::from(self.inner.mapped.load(Ordering::Relaxed))
            ),
        ];
        if let Some(cd) = &c.cache_dir {
            if let Some((cap, free, avail)) = disk_space(cd) {
                lines.push(format!(
                    "cache dir space info, capacity:{cap} free:{free} available:{avail}"
                ));
            }
        }
        if let Some((cap, free, avail)) = disk_space(&c.log_dir) {
            lines.push(format!(
                "log dir space info, capacity:{cap} free:{free} available:{avail}"
            ));
        }
        for l in lines {
            self.log_plain(l.as_bytes());
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Makes `build` on this thread stop right after appending the blocks it recovered,
    /// before it clears the staging file: a crash at that point (tests).
    pub(crate) static CRASH_AFTER_RECOVERY: std::cell::Cell<bool> =
        const { std::cell::Cell::new(false) };
}

/// The blocks of the tip lines that go before and after recovered blocks.
fn recovery_tips(tip_magic: u8, key: &[u8; 64], now: WallTime) -> (Vec<u8>, Vec<u8>) {
    let hour = now.local().hour as u8;
    let mut begin = Vec::new();
    emit_block(
        &mut begin,
        tip_magic,
        0,
        hour,
        key,
        b"~~~~~ begin of mmap ~~~~~\n",
    );
    let mut end = Vec::new();
    let text = format!(
        "~~~~~ end of mmap ~~~~~{}\n",
        mark_info(now, ThreadIds::current())
    );
    emit_block(&mut end, tip_magic, 0, hour, key, text.as_bytes());
    (begin, end)
}

/// The zstd level a recovered zstd block is cut anew at ([`mars_readable`]): the configured
/// level of a zstd writer, as for every block it writes (capped at open-time cost, see
/// `staging::RECUT_MAX_LEVEL`); zstd's default for a zlib writer, whose level is a zlib one.
fn recut_level(config: &XlogConfig) -> i32 {
    match config.compression {
        crate::Compression::Zstd => config
            .compression_level
            .unwrap_or(crate::Compression::Zstd.default_level()),
        crate::Compression::Zlib => crate::Compression::Zstd.default_level(),
    }
}

/// The metadata of `slot` in the staging file read at open (`old`), if the file has it.
fn slot_meta(old: &[u8], slot: usize) -> Option<&[u8]> {
    let at = META_BASE + slot * META_LEN;
    old.get(at..at + META_LEN)
}

/// Records through the staging file `bf`, in `slot` (whose metadata was `meta`), the intent
/// of appending the recovered `block` of generation `gen`. Nothing is recorded for a slot
/// without metadata (a Mars file that could not be grown, see `build`) or when the write
/// fails: the block is then appended again after a crash, as before.
fn note_intent_in_file(
    bf: &BufferFile,
    slot: usize,
    meta: Option<&[u8]>,
    gen: u64,
    block: &[u8],
    intent: &Intent,
) {
    let Some(meta) = meta.filter(|m| m.len() == META_LEN) else {
        return;
    };
    let mut meta = meta.to_vec();
    write_intent(&mut meta, intent, gen, staged_len(block));
    let _ = bf.write_at((META_BASE + slot * META_LEN) as u64, &meta);
}

/// The staged body length of a recovered `block` (as [`recover`] returns it: header, body,
/// end byte).
fn staged_len(block: &[u8]) -> u32 {
    (block.len() - HEADER_LEN - 1) as u32
}

/// A slot taken back from holding a recovered block, emptied for logging.
fn reclaimed(mut r: Region) -> Region {
    r.block.fill(0);
    r.meta.fill(0);
    r
}

/// The staging file as the writer thread keeps it: the open file, where it belongs, and
/// which file it is.
///
/// Design: an app that clears its cache folder while it logs (Android's "clear cache", a
/// cleanup of old files) removes the staging file under the writer. Its mapping stays valid
/// but belongs to no file any more, so a crash would lose every line staged from then on,
/// for the rest of the run. After writing a block, the writer thread looks whether the file
/// is gone; if so it makes a new one at the same place (never taking over a file found
/// there) and moves every slot to it with what the slot holds: under the state lock, every
/// slot but the one whose block it has just written, and that one right after. From then on
/// a crash loses nothing staged, the lines staged before the removal included. If the new
/// file cannot be made (no folder, no space), the writer tries again after the next block.
/// At close, a file removed meanwhile is made anew only when the close has something to put
/// into it (recovered blocks not written yet); a clean close leaves nothing to recover.
///
/// A writer that could not open the file at the start (its folder not writable, a directory
/// in its place) works in heap memory, as Mars does, but not for the rest of the run: after
/// each written block it tries to make the file, the same way, and once it can, moves its
/// slots into it with what they hold. (A file that was opened but could not be sized or
/// mapped keeps whatever it holds for the next start, and the writer stays in heap memory.)
struct StagingFile {
    /// `None` when the file could not be opened, until it is made.
    file: Option<BufferFile>,
    /// Whether the slots are mapped from `file` (false: heap memory, no crash recovery).
    mapped: bool,
    path: PathBuf,
    /// Which file `file` is: 0 the one opened with the writer, one more for every file made
    /// anew ([`Region::file`]).
    gen: u32,
}

impl StagingFile {
    /// Makes the file anew if it is gone, or, for a writer working in heap memory since it
    /// could not open the file at the start, makes it if it can now; true when it did.
    fn renew_if_gone(&mut self) -> bool {
        let wanted = match (&self.file, self.mapped) {
            // In heap memory since the start: the file could not be opened.
            (None, false) => true,
            (Some(_), true) => crate::mmap::is_gone(&self.path),
            // Opened but not usable (it keeps what it holds for the next start).
            _ => false,
        };
        wanted && self.make_anew()
    }

    /// Makes a new file at the path (never taking over one found there), zeroed to its full
    /// length; true when it did.
    fn make_anew(&mut self) -> bool {
        let made = BufferFile::create_locked(&self.path).and_then(|mut f| {
            if let Err(e) = f.zero(FILE_LEN) {
                // Leave nothing half made behind: the next try starts afresh.
                let _ = std::fs::remove_file(&self.path);
                return Err(e);
            }
            Ok(f)
        });
        match made {
            Ok(f) => {
                self.file = Some(f);
                self.gen += 1;
                self.mapped = true;
                true
            }
            Err(_) => false,
        }
    }

    /// Moves slot `r`, with what it holds, to the current file if it is mapped from an
    /// earlier one. The caller owns `r` or holds the state lock: no line is being staged into
    /// it meanwhile.
    fn move_here(&self, r: &mut Region) {
        let Some(f) = &self.file else {
            return;
        };
        // A slot in heap memory moves only into a file made here (zeroed to its full length):
        // file 0 of a writer that works in heap memory is one it could not use.
        let here = match r.block.is_mapped() {
            true => r.file == self.gen,
            false => self.gen == 0,
        };
        if here {
            return;
        }
        let mut block = f.map((r.slot * SLOT_LEN) as u64, SLOT_LEN);
        let mut meta = f.map((META_BASE + r.slot * META_LEN) as u64, META_LEN);
        // A slot that cannot be mapped keeps its old mapping and is tried again next time.
        if block.is_mapped() && meta.is_mapped() {
            // Block first, then meta: a crash in between finds the block without its intent,
            // which is how a slot being staged into looks.
            block.copy_from_slice(&r.block);
            meta.copy_from_slice(&r.meta);
            r.block = block;
            r.meta = meta;
            r.file = self.gen;
        }
    }

    /// Moves every slot the state holds (the one being staged into, the spare, sealed blocks
    /// waiting for the writer thread, those holding recovered blocks) to the current file.
    fn move_all(&self, st: &mut State) {
        let queued = st.queue.iter_mut().map(|s| &mut s.region);
        for r in st
            .cur
            .iter_mut()
            .chain(st.spare.as_mut())
            .chain(queued)
            .chain(&mut st.held)
        {
            self.move_here(r);
        }
    }
}

/// The formatted warning line (level Warn, tag `xlog`) that reports losses with `msg`.
fn warning_line(msg: &str, now: WallTime) -> Vec<u8> {
    let mut warn = Vec::with_capacity(200);
    let rec = Record {
        tag: "xlog",
        ..Record::new(Level::Warn, msg.as_bytes())
    };
    format_line(&mut warn, &rec, now, ThreadIds::current());
    warn
}

/// `Nov 26 2026^^^00:41:32`-shaped stamp of the open time (Mars prints its compile time).
fn banner_stamp(now: WallTime, sep: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let l = now.local();
    let m = MONTHS[(l.month as usize).clamp(1, 12) - 1];
    format!(
        "{m} {:2} {}{sep}{:02}:{:02}:{:02}",
        l.day, l.year, l.hour, l.minute, l.second
    )
}

impl Inner {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_files(&self) -> MutexGuard<'_, LogFiles> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_writer_gone(&self) -> bool {
        self.writer_gone.load(Ordering::SeqCst)
    }

    /// Writes a formatted line as the mode says (dropped once closed, but for the close
    /// banner and Fatal lines).
    fn write_line(&self, line: &[u8], fatal: bool, now: WallTime) {
        if self.closed.load(Ordering::Relaxed) && !fatal && !line.starts_with(b"$$$$$$$$$$") {
            self.count_dropped(DropCause::Closed, 1);
            return;
        }
        match (self.config.mode, self.config.durability) {
            (Mode::Async, Durability::Durable) => self.write_async(line, fatal, now),
            (Mode::Async, Durability::Buffered) => self.enqueue(line, fatal, now),
            (Mode::Sync, _) => self.write_sync(line, now),
        }
    }

    /// The flush interval in use: at least [`MIN_FLUSH_INTERVAL`].
    fn flush_interval(&self) -> Duration {
        self.config.flush_interval.max(MIN_FLUSH_INTERVAL)
    }

    fn write_async(&self, line: &[u8], fatal: bool, now: WallTime) {
        let overflow = self.config.overflow;
        let st = self.stage_loss_reports(self.lock_state(), now, overflow);
        let (mut st, res) = self.stage(st, line, now, overflow);
        if let Err(cause) = res {
            drop(st);
            let dropped = self.count_dropped(cause, 1);
            if cause == DropCause::WriterGone {
                self.report_for_dead_writer(now, dropped);
            }
            return;
        }
        st.fatal_pending |= fatal;
        self.seal_when_due(&mut st);
    }

    /// Seals the active block when it is full or holds a Fatal line, and a spare slot is
    /// there to go on in.
    fn seal_when_due(&self, st: &mut State) {
        let soft = st.stager.soft_limit();
        let full = st.active.as_ref().is_some_and(|a| a.body_len >= soft);
        if (full || st.fatal_pending) && st.spare.is_some() {
            self.seal(st);
        }
    }

    /// Stages a warning line for each kind of loss not yet covered by a staged warning
    /// (waiting for room as `overflow` says). A warning counts as reported only once its
    /// block reached the file: if that append fails, the losses are reported again (see
    /// `run_writer`).
    fn stage_loss_reports<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        now: WallTime,
        overflow: Overflow,
    ) -> MutexGuard<'a, State> {
        // With the writer thread gone a staged warning would reach the file only at the next
        // start: the warnings go straight to the file instead (`report_for_dead_writer`).
        if self.is_writer_gone() {
            return st;
        }
        if !self.has_unreported(&st) {
            return st;
        }
        for w in self.loss_warnings(&st) {
            // Claimed before it is staged (staging may wait for room, with the lock let go):
            // another thread must not stage the same warning meanwhile.
            w.claim(&mut st);
            let (g, res) = self.stage(st, &warning_line(&w.msg, now), now, overflow);
            st = g;
            match res {
                // The warning is in the active block: it carries what it reports.
                Ok(()) => st.active_report.add(&Losses::only(w.kind, w.amount)),
                Err(_) => w.lost(&mut st),
            }
        }
        st
    }

    /// Reports lines dropped because the writer thread died, from the thread that dropped one.
    ///
    /// Design: with the writer thread gone nothing makes room in the slots, so a warning
    /// staged like the others never reaches the file; it is written straight to the log file
    /// instead, as sync mode writes it (its own block; with a key, encrypted). Once per drop
    /// would make every later line an append; the thread whose drop brings the count of
    /// such drops to a power of two writes it (the 1st, 2nd, 4th, 8th…), so the first loss
    /// is in the file at once and logging on costs a few appends. [`Xlog::flush`] and close
    /// write the rest ([`Inner::report_losses`]). The blocks the dead thread left unwritten
    /// are appended at the next start, after the warning.
    ///
    /// `dropped` is the count this thread's drop made (what its `fetch_add` gave): each power
    /// of two is seen by exactly one thread, where a load after the add could show two
    /// threads the same count.
    fn report_for_dead_writer(&self, now: WallTime, dropped: u64) {
        if dropped.is_power_of_two() {
            self.write_sync_loss_reports(now);
        }
    }

    /// Counts `n` lines dropped because of `cause`; returns the count it made.
    fn count_dropped(&self, cause: DropCause, n: u64) -> u64 {
        self.dropped[cause as usize].fetch_add(n, Ordering::Relaxed) + n
    }

    /// Whether some loss is owed a warning line (see [`State::claimed`]).
    fn has_unreported(&self, st: &State) -> bool {
        let dropped = self
            .dropped
            .iter()
            .zip(st.claimed.dropped)
            .any(|(c, r)| c.load(Ordering::Relaxed) > r);
        dropped
            || self.write_failed.load(Ordering::Relaxed) > st.claimed.write_failed
            || st.report_again != Losses::default()
    }

    /// Writes a warning line for each kind of loss no warning covers yet, if there is one
    /// (see [`Xlog::flush`]): staged, or in sync mode written as its own block.
    fn report_losses(&self) {
        {
            let st = self.lock_state();
            if st.shutdown || !self.has_unreported(&st) {
                return;
            }
        }
        let now = ask(&*self.clock);
        match self.config.mode {
            // The caller is flushing: it waits for room, whatever the overflow policy.
            Mode::Async => {
                drop(self.stage_loss_reports(self.lock_state(), now, Overflow::Block));
                // Nobody writes the slots any more: what could not be staged goes straight to
                // the file (see `report_for_dead_writer`).
                if self.is_writer_gone() {
                    self.write_sync_loss_reports(now);
                }
            }
            Mode::Sync => self.write_sync_loss_reports(now),
        }
    }

    /// The warning lines owed, one per kind of loss: the lines lost past what was claimed
    /// ([`State::claimed`]), with those whose warning was lost ([`State::report_again`]).
    fn loss_warnings(&self, st: &State) -> Vec<LossWarning> {
        let mut out = Vec::new();
        for kind in 0..Losses::KINDS {
            let count = match self.dropped.get(kind) {
                Some(n) => n.load(Ordering::Relaxed),
                None => self.write_failed.load(Ordering::Relaxed),
            };
            let claimed = st.claimed.get(kind);
            let again = st.report_again.get(kind);
            let amount = count.saturating_sub(claimed).saturating_add(again);
            if amount == 0 {
                continue;
            }
            let msg = match DropCause::ALL.get(kind) {
                Some(cause) => format!("xlog dropped {amount} lines: {}", cause.reason()),
                None => {
                    let err = self
                        .last_write_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone()
                        .unwrap_or_default();
                    format!("xlog lost {amount} lines: writing the log file failed: {err}")
                }
            };
            out.push(LossWarning {
                msg,
                kind,
                upto: count.max(claimed),
                again,
                amount,
            });
        }
        out
    }

    /// Appends the blocks recovered at open if an earlier attempt failed, and frees their
    /// slots once they are in the log file.
    ///
    /// Design: as at open, each block is appended on its own with its write intent recorded
    /// in its slot first, and its slot is freed as soon as it is in; a crash between the
    /// append and the freeing finds the block already in the log at the next start rather
    /// than appending it a second time. A failure part way keeps the blocks not yet written
    /// for the next try.
    fn retry_recovery(&self, staging: &StagingFile) {
        let (begin, end, blocks, now) = {
            let st = self.lock_state();
            if st.unwritten_recovery.is_empty() {
                return;
            }
            let now = ask(&*self.clock);
            let tip_magic = sync_magic(self.config.compression, self.encryption);
            let (begin, end) = recovery_tips(tip_magic, &st.stager.header_key(), now);
            (begin, end, st.unwritten_recovery.clone(), now)
        };
        let mut written = 0;
        let res = {
            let mut files = self.lock_files();
            let mut res = files.append(now, &begin, true, |_| {}).map(drop);
            while res.is_ok() && written < blocks.len() {
                let u = &blocks[written];
                let mut noted = false;
                res = files
                    .append(
                        now,
                        &mars_readable(&u.block, recut_level(&self.config)),
                        true,
                        |i| {
                            noted = true;
                            self.note_retry_intent(staging, u, i);
                        },
                    )
                    .map(drop);
                if res.is_ok() {
                    written += 1;
                } else if noted {
                    // The failed append was cut back: its intent names nothing in the file,
                    // and later blocks will be appended where it points.
                    self.clear_retry_intent(staging, u);
                }
            }
            if res.is_ok() {
                res = files.append(now, &end, true, |_| {}).map(drop);
            }
            res
        };
        #[cfg(test)]
        if self.crash_in_retry.load(Ordering::SeqCst) && written > 0 {
            // A crash now (tests): the blocks are in the log, their slots not yet freed.
            panic!("test hook: the xlog writer thread crashes after appending recovered blocks");
        }
        if let Err(e) = &res {
            self.note_write_failure(0, e);
        }
        if written == 0 {
            return;
        }
        let mut st = self.lock_state();
        for u in &blocks[..written] {
            st.unwritten_recovery
                .retain(|w| (w.slot, w.gen) != (u.slot, u.gen));
            if let Some(at) = st.held.iter().position(|r| r.slot == u.slot) {
                let mut r = st.held.swap_remove(at);
                r.clear_after_write();
                staging.move_here(&mut r);
                if st.cur.is_none() {
                    st.cur = Some(r);
                } else if st.spare.is_none() {
                    st.spare = Some(r);
                }
            } else if let Some(at) = st.held_in_file.iter().position(|s| *s == u.slot) {
                st.held_in_file.swap_remove(at);
                if let Some(f) = &staging.file {
                    let _ = f.clear_byte((u.slot * SLOT_LEN) as u64);
                }
            }
        }
        self.seal_when_due(&mut st);
        drop(st);
        self.lock_files().finish_move();
        self.done.notify_all();
    }

    /// Records in the slot holding recovered block `u` where its retried append goes. A slot
    /// taken back for logging meanwhile gets nothing: the block is in memory only.
    fn note_retry_intent(&self, staging: &StagingFile, u: &Unwritten, intent: &Intent) {
        let mut st = self.lock_state();
        if let Some(r) = st.held.iter_mut().find(|r| r.slot == u.slot) {
            write_intent(&mut r.meta, intent, u.gen, staged_len(&u.block));
        } else if st.held_in_file.contains(&u.slot) {
            if let Some(f) = &staging.file {
                note_intent_in_file(f, u.slot, Some(&u.meta), u.gen, &u.block, intent);
            }
        }
    }

    /// Clears the intent [`note_retry_intent`](Self::note_retry_intent) recorded for
    /// recovered block `u`, whose append failed (and was cut back).
    ///
    /// Design: left in place, a crash before the next retry made the next start believe it:
    /// the blocks the writer appended meanwhile start at its offset, so the log file looked
    /// like a partial append of `u` and was cut back there, taking them with it.
    fn clear_retry_intent(&self, staging: &StagingFile, u: &Unwritten) {
        let mut st = self.lock_state();
        if let Some(r) = st.held.iter_mut().find(|r| r.slot == u.slot) {
            r.clear_intent();
        } else if st.held_in_file.contains(&u.slot) && u.meta.len() == META_LEN {
            if let Some(f) = &staging.file {
                let _ = f.write_at((META_BASE + u.slot * META_LEN) as u64, &u.meta);
            }
        }
    }

    /// Counts the `lines` of a block whose append failed with `e`.
    fn note_write_failure(&self, lines: u64, e: &io::Error) {
        *self
            .last_write_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        self.write_failed.fetch_add(lines, Ordering::Relaxed);
    }

    /// Stages one line, waiting for room as `overflow` says; the error says why it was
    /// dropped (the caller counts it).
    fn stage<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        line: &[u8],
        now: WallTime,
        overflow: Overflow,
    ) -> (MutexGuard<'a, State>, Result<(), DropCause>) {
        loop {
            if st.shutdown {
                return (st, Err(DropCause::Closed));
            }
            if st.cur.is_none() {
                if let Some(r) = st.spare.take() {
                    st.cur = Some(r);
                    continue;
                }
                let (g, res) = self.wait_for_room(st, overflow);
                st = g;
                if res.is_err() {
                    return (st, res);
                }
                continue;
            }
            let poisoned = st.poisoned && st.active.is_some();
            if poisoned || st.active.as_ref().is_some_and(|a| !a.fits(line.len())) {
                if st.spare.is_none() {
                    let (g, res) = self.wait_for_room(st, overflow);
                    st = g;
                    if res.is_err() {
                        return (st, res);
                    }
                    continue;
                }
                self.seal(&mut st);
                continue;
            }
            break;
        }
        let res = match self.stage_here(&mut st, line, now) {
            true => Ok(()),
            false => Err(DropCause::Unencodable),
        };
        (st, res)
    }

    fn stage_here(&self, st: &mut State, line: &[u8], now: WallTime) -> bool {
        let Some(region) = st.cur.as_mut() else {
            return false;
        };
        if st.active.is_none() {
            let gen = st.next_gen;
            match st
                .stager
                .begin(region, gen, peek_seq(&self.seq), now.local().hour as u8)
            {
                Ok(mut a) => {
                    st.next_gen += 1;
                    a.plain = st
                        .plain_pool
                        .pop()
                        .unwrap_or_else(|| Vec::with_capacity(SLOT_LEN));
                    st.active = Some(a);
                }
                Err(_) => return false,
            }
        }
        let Some(active) = st.active.as_mut() else {
            return false;
        };
        match st.stager.append(region, active, line) {
            Ok(()) => {
                if active.lines == 1 {
                    self.seq.store(active.seq, Ordering::Relaxed);
                }
                true
            }
            Err(StageError::NoRoom | StageError::Cipher(_)) => {
                // The compressor may now be ahead of the block: close the block where it is
                // (it ends after the last committed line) and start afresh.
                if active.lines > 0 && st.spare.is_some() {
                    self.seal(st);
                } else if active.lines == 0 {
                    st.active = None;
                } else {
                    // No spare slot to rotate to: keep the committed lines, restart the
                    // stream at the next block by sealing when a slot comes back.
                    st.poisoned = true;
                }
                false
            }
        }
    }

    /// Waits for a free slot ([`Overflow::Block`]) or reports why the line must be dropped.
    fn wait_for_room<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        overflow: Overflow,
    ) -> (MutexGuard<'a, State>, Result<(), DropCause>) {
        // No slot free and none in flight: take back a slot holding a recovered block (which
        // then waits in memory only).
        //
        // Design: a caller that may wait first has the writer thread try once more to append
        // the held blocks, and waits for that try. Written (the disk works again), their
        // slots come back with their blocks safe in the log; taken back unwritten, a block
        // lives in memory only, and a crash before the next try loses it. Without this the
        // try with the blocks still in their slots came only with the housekeeping wake,
        // minutes after the start, long after logging had taken the slots back. The try is
        // made once per call: when it fails the slot is taken back, so logging never waits
        // for a disk that stays full.
        if st.sealed_gen == st.written_gen
            && (st.cur.is_none() || st.spare.is_none())
            && !st.held.is_empty()
        {
            if overflow == Overflow::Block && nested::may_wait() && !self.is_writer_gone() {
                let ticket = st.retries_done;
                st.retry_wanted = true;
                self.work.notify_one();
                while st.retries_done == ticket && !st.shutdown && !self.is_writer_gone() {
                    st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                let room = st.cur.is_some() && st.spare.is_some();
                if st.shutdown || room || st.sealed_gen != st.written_gen {
                    return (st, Ok(()));
                }
            }
            if let Some(r) = st.held.pop() {
                let r = reclaimed(r);
                if st.cur.is_none() {
                    st.cur = Some(r);
                } else {
                    st.spare = Some(r);
                }
                return (st, Ok(()));
            }
        }
        // Nobody makes room once the writer thread is gone; the writer's own threads do not
        // wait for the room they make.
        if self.is_writer_gone() {
            return (st, Err(DropCause::WriterGone));
        }
        if overflow == Overflow::Drop || !nested::may_wait() {
            return (st, Err(DropCause::FellBehind));
        }
        self.work.notify_one();
        let st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
        (st, Ok(()))
    }

    /// Seals the active block (a spare slot must be available) and queues it for the writer.
    fn seal(&self, st: &mut State) {
        st.poisoned = false;
        st.fatal_pending = false;
        let Some(mut active) = st.active.take() else {
            return;
        };
        let Some(mut region) = st.cur.take() else {
            return;
        };
        if active.lines == 0 {
            st.cur = Some(region);
            return;
        }
        let hour = ask(&*self.clock).local().hour as u8;
        let report = std::mem::take(&mut st.active_report);
        match st.stager.seal(&mut region, &mut active, hour) {
            Ok(len) => {
                st.sealed_gen = active.gen;
                st.queue.push_back(Sealed {
                    region,
                    len,
                    gen: active.gen,
                    lines: active.lines,
                    report,
                    plain: std::mem::take(&mut active.plain),
                });
                st.cur = st.spare.take();
                st.last_seal = Instant::now();
                self.work.notify_one();
            }
            Err(_) => {
                // Unreachable with Mars's cipher; drop the block's lines rather than write a
                // block the decoder cannot read.
                self.count_dropped(DropCause::Unencodable, active.lines);
                region.clear_after_write();
                st.cur = Some(region);
                // Its warnings were lost with it: owed again.
                st.report_again.add(&report);
            }
        }
    }

    /// Buffered mode: queue the formatted line for the compressor thread.
    fn enqueue(&self, line: &[u8], fatal: bool, now: WallTime) {
        let mut q = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if q.stop {
                self.count_dropped(DropCause::Closed, 1);
                return;
            }
            if q.bytes.is_empty() || q.bytes.len() + line.len() <= PENDING_MAX {
                break;
            }
            // The compressor thread does not wait for the room it makes.
            if self.config.overflow == Overflow::Drop || !nested::may_wait() {
                self.count_dropped(DropCause::FellBehind, 1);
                return;
            }
            q = self.pending_done.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        q.bytes.extend_from_slice(line);
        q.lines.push((line.len(), fatal, now));
        q.submitted += 1;
        if q.sleeping {
            q.sleeping = false;
            self.pending_work.notify_one();
        }
    }

    /// Waits until the compressor thread has staged every line queued so far.
    fn drain_pending(&self) {
        if self.config.durability != Durability::Buffered || self.config.mode != Mode::Async {
            return;
        }
        let mut q = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let target = q.submitted;
        while q.processed < target && !(q.stop && q.lines.is_empty() && q.sleeping) {
            self.pending_work.notify_one();
            q = self.pending_done.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn run_compressor(self: Arc<Self>) {
        let _background = nested::BackgroundThread::enter();
        let mut bytes = Vec::new();
        let mut lines = Vec::new();
        loop {
            {
                let mut q = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                while q.lines.is_empty() {
                    if q.stop {
                        q.sleeping = true;
                        self.pending_done.notify_all();
                        return;
                    }
                    q.sleeping = true;
                    q = self.pending_work.wait(q).unwrap_or_else(|e| e.into_inner());
                }
                q.sleeping = false;
                std::mem::swap(&mut q.bytes, &mut bytes);
                std::mem::swap(&mut q.lines, &mut lines);
            }
            self.pending_done.notify_all();
            let mut off = 0;
            for &(len, fatal, now) in &lines {
                self.write_async(&bytes[off..off + len], fatal, now);
                off += len;
            }
            let n = lines.len() as u64;
            bytes.clear();
            lines.clear();
            // Lines a clock logged while this thread sealed a block join the queue, before the
            // batch counts as processed: a flush waiting for it returns after them.
            nested::drain_background();
            let mut q = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            q.processed += n;
            self.pending_done.notify_all();
        }
    }

    fn write_sync(&self, line: &[u8], now: WallTime) {
        self.write_sync_loss_reports(now);
        self.append_sync(line, now, 1);
    }

    /// Sync mode's [`Inner::stage_loss_reports`] (also async mode's once the writer thread
    /// died): writes a warning line, as its own block before the line being logged, for each
    /// kind of loss no warning covers yet. A warning is
    /// claimed before it is written (so that two threads do not both write it) and counts as
    /// reported once it is in the file; if it cannot be written the losses are reported again
    /// with the next line.
    ///
    /// Design: a warning that cannot be written is not itself counted as lost (an async block's
    /// warnings are, with the block's other lines). In sync mode every line is its own append,
    /// so while the disk fails each line would add a lost warning to the count it reports.
    fn write_sync_loss_reports(&self, now: WallTime) {
        let claimed = {
            let mut st = self.lock_state();
            let warnings = self.loss_warnings(&st);
            for w in &warnings {
                w.claim(&mut st);
            }
            warnings
        };
        for w in claimed {
            if !self.append_sync(&warning_line(&w.msg, now), now, 0) {
                // Only this warning's lines are owed again: another thread's warnings,
                // written or not, account for theirs.
                w.lost(&mut self.lock_state());
            }
        }
    }

    /// Appends `line` as one sync-mode block; false if that failed, which counts `lines` lost
    /// lines (dropped if it could not be encrypted, else failed to write).
    fn append_sync(&self, line: &[u8], now: WallTime, lines: u64) -> bool {
        let hour = now.local().hour as u8;
        let mut block = Vec::with_capacity(line.len() + 128);
        if self.encryption == Encryption::None {
            let magic = sync_magic(self.config.compression, Encryption::None);
            emit_block(&mut block, magic, 0, hour, &[0; 64], line);
        } else {
            // With a key, sync mode never writes the line in clear: it becomes a one-line
            // compressed, encrypted block (async magic, seq 0) that Mars's decoder reads.
            let mut st = self.lock_state();
            let key = st.stager.header_key();
            match st.stager.one_shot_body(line) {
                Ok(body) => {
                    let magic = async_magic(self.config.compression, self.encryption);
                    emit_block(&mut block, magic, 0, hour, &key, &body);
                }
                Err(_) => {
                    self.count_dropped(DropCause::Unencodable, lines);
                    return false;
                }
            }
        }
        let mut files = self.lock_files();
        if let Err(e) = files.append(now, &block, false, |_| {}) {
            self.note_write_failure(lines, &e);
            return false;
        }
        true
    }

    fn run_writer(self: Arc<Self>, mut staging: StagingFile, mut finisher: Finisher) {
        let _gone = WriterGone(&self);
        // Lines the cipher or clock log on this thread are staged between jobs: staged from
        // inside a job they could wait for room that only this thread makes.
        let _background = nested::BackgroundThread::enter();
        let opened = Instant::now();
        let mut deleted = false;
        let mut moved = false;
        loop {
            let mut st = self.lock_state();
            let job = loop {
                if let Some(s) = st.queue.pop_front() {
                    break Some(s);
                }
                if st.shutdown || st.retry_wanted {
                    break None;
                }
                // An interval too large for the monotonic clock means "never" (not a panic).
                let due = st.last_seal.checked_add(self.flush_interval());
                let now = Instant::now();
                if due.is_some_and(|d| now >= d) {
                    st.last_seal = now;
                    if st.active.as_ref().is_some_and(|a| a.lines > 0) && st.spare.is_some() {
                        self.seal(&mut st);
                        continue;
                    }
                }
                let house = [(deleted, 120), (moved, 180)]
                    .iter()
                    .filter(|(done, _)| !done)
                    .filter_map(|(_, s)| opened.checked_add(Duration::from_secs(*s)))
                    .min();
                #[cfg(test)]
                if self.house_now.swap(false, Ordering::SeqCst) {
                    break None;
                }
                if house.is_some_and(|h| now >= h) {
                    break None;
                }
                let wake = match (house, due) {
                    (Some(h), Some(d)) => Some(h.min(d)),
                    (h, d) => h.or(d),
                };
                st = match wake {
                    Some(w) => {
                        let wait = w
                            .saturating_duration_since(now)
                            .max(Duration::from_millis(1));
                        self.work
                            .wait_timeout(st, wait)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                    None => self.work.wait(st).unwrap_or_else(|e| e.into_inner()),
                };
            };
            let retry_asked = std::mem::take(&mut st.retry_wanted);
            drop(st);
            #[cfg(test)]
            if self.panic_writer.load(Ordering::SeqCst) {
                panic!("test hook: the xlog writer thread panics");
            }
            self.retry_recovery(&staging);
            if retry_asked {
                let mut st = self.lock_state();
                st.retries_done += 1;
                self.done.notify_all();
            }
            match job {
                Some(mut sealed) => {
                    let now = ask(&*self.clock);
                    let written_ok;
                    {
                        let region = &mut sealed.region;
                        let staged = &region.block[..sealed.len];
                        // Compressed outside every lock: callers keep staging meanwhile.
                        let bytes = finisher.finish(staged, &sealed.plain).unwrap_or(staged);
                        let meta = &mut region.meta;
                        let mut files = self.lock_files();
                        let staged_len = (sealed.len - HEADER_LEN - 1) as u32;
                        let res = files.append(now, bytes, true, |i| {
                            write_intent(meta, i, sealed.gen, staged_len)
                        });
                        if let Err(e) = &res {
                            // Mars notes write errors in the file; with the disk failing that
                            // rarely works, so the lost lines are counted, and reported in
                            // the log by the next block that gets through.
                            self.note_write_failure(sealed.lines, e);
                        }
                        written_ok = res.is_ok();
                    }
                    sealed.region.clear_after_write();
                    self.lock_files().finish_move();
                    if staging.renew_if_gone() {
                        staging.move_all(&mut self.lock_state());
                        self.mapped.store(staging.mapped, Ordering::Relaxed);
                    }
                    staging.move_here(&mut sealed.region);
                    // Precompute the staging keystream of the next block to begin, so that
                    // logging threads only XOR. Done before the slot is handed back: when the
                    // callers wait for it, the next block cannot begin before it is ready.
                    let keystream = finisher.stream_key.map(|key| {
                        let (gen, mut buf) = {
                            let mut st = self.lock_state();
                            let buf = st
                                .stager
                                .take_spent_keystream()
                                .or_else(|| finisher.keystream.take())
                                .unwrap_or_default();
                            (st.next_gen, buf)
                        };
                        compute_keystream(&key, gen, &mut buf);
                        (gen, buf)
                    });
                    let mut st = self.lock_state();
                    if let Some((gen, buf)) = keystream {
                        if st.next_gen == gen {
                            st.stager.install_keystream(gen, buf);
                        } else {
                            finisher.keystream = Some(buf);
                        }
                    }
                    st.written_gen = st.written_gen.max(sealed.gen);
                    if !written_ok {
                        // The warnings were lost with their block: the lines they report are
                        // owed a warning again (and only those: a later block's warnings
                        // account for theirs).
                        st.report_again.add(&sealed.report);
                    }
                    let mut plain = std::mem::take(&mut sealed.plain);
                    plain.clear();
                    st.plain_pool.push(plain);
                    if st.cur.is_none() {
                        st.cur = Some(sealed.region);
                    } else {
                        st.spare = Some(sealed.region);
                    }
                    self.seal_when_due(&mut st);
                    self.done.notify_all();
                }
                None => {
                    let mut st = self.lock_state();
                    if st.shutdown && st.queue.is_empty() {
                        // What the close puts back into the staging file (recovered blocks
                        // not written yet) must reach a file that is there.
                        if !st.unwritten_recovery.is_empty() {
                            staging.renew_if_gone();
                        }
                        staging.move_all(&mut st);
                        self.done.notify_all();
                        return;
                    }
                    drop(st);
                    let now = ask(&*self.clock);
                    let mut files = self.lock_files();
                    if !deleted && opened.elapsed() >= Duration::from_secs(120) {
                        files.delete_expired(now, self.config.max_alive);
                        deleted = true;
                    }
                    if !moved && opened.elapsed() >= Duration::from_secs(180) {
                        files.move_old_cache_files(now);
                        moved = true;
                    }
                }
            }
            nested::drain_background();
        }
    }
}
