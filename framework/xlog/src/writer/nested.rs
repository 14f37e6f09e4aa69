//! Lines logged from inside the writer's own write path: by a [`LogCipher`] while it encrypts,
//! by a [`Clock`] asked for the time while a block is sealed, by any code those call (through
//! [`Xlog::log`] or, with the global subscriber, a `tracing` event reaching `XlogLayer`).
//!
//! Such a line comes back on the thread that is writing, often with the staging lock held (a
//! sync-mode line is encrypted under it), or on the writer thread, the only thread that makes
//! room for new lines. Written at once it would wait for that lock or that room forever.
//!
//! Design: a line logged from inside the write path is *deferred*, not dropped and not written
//! in place. The line is formatted as usual (its time is when it was logged), copied into a
//! per-thread list and written once the thread is out of the write path, holding no lock: by
//! the outermost logging call or flush when it returns, by the writer and compressor threads
//! between two jobs. It then lands after the line whose writing produced it.
//!
//! - A line logged while deferred lines are being written is dropped and counted
//!   ([`Xlog::dropped_lines`], reported in the log like other drops): a cipher that logs at
//!   every call would otherwise feed itself for ever, each deferred line's encryption
//!   deferring the next.
//! - At most [`DEFERRED_MAX`] bytes wait per thread; lines beyond are dropped and counted.
//!   That is less than a block, so the writer thread's deferred lines fit into the slot it
//!   has just freed.
//! - Writing deferred lines, the writer and compressor threads never wait for room (they are
//!   the ones making it): a line that finds none is dropped and counted.
//! - If the write path unwinds (a cipher panicked), the deferred lines wait for the thread's
//!   next logging call: writing them while unwinding would call the panicking cipher again,
//!   and a second panic aborts. A thread that ends first counts them as dropped.
//! - The guard is per thread, not per writer: a cipher of one writer logging into another
//!   writer is deferred too, which also covers two writers whose plugins log into each other.
//!
//! From inside the write path, [`Xlog::flush`] returns [`FlushError::Reentrant`] and
//! [`Xlog::close`] does nothing (both would wait for the writing that called them); other
//! calls that take the writer's state ([`Xlog::pending_recovered_blocks`]) must not be made
//! there.
//!
//! A scoped `tracing` dispatcher (`with_default`, `set_default`) does not reach this far:
//! `tracing` itself discards an event emitted while its dispatcher handles another one on the
//! same thread, before any layer sees it.
//!
//! [`LogCipher`]: phobos_plugin_api::cipher::LogCipher
//! [`Clock`]: crate::Clock
//! [`Xlog::log`]: super::Xlog::log
//! [`Xlog::dropped_lines`]: super::Xlog::dropped_lines
//! [`Xlog::flush`]: super::Xlog::flush
//! [`Xlog::close`]: super::Xlog::close
//! [`Xlog::pending_recovered_blocks`]: super::Xlog::pending_recovered_blocks
//! [`FlushError::Reentrant`]: super::FlushError::Reentrant

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::sync::Arc;

use super::{DropCause, Inner};
use crate::clock::WallTime;
use crate::format::MAX_LINE_LEN;
use crate::staging::{SOFT_LIMIT, ZSTD_SOFT_LIMIT};

/// Writes `line` through `inner` now, or defers or drops it if this thread is inside an xlog
/// write path (see the module docs).
pub(super) fn write(inner: &Arc<Inner>, line: &[u8], fatal: bool, now: WallTime) {
    match phase() {
        Phase::Outside => {
            let _path = WritePath::enter();
            inner.write_line(line, fatal, now);
        }
        Phase::Writing => defer(inner, line, fatal, now),
        Phase::Draining => {
            inner.count_dropped(DropCause::Reentrant, 1);
        }
    }
}

/// This thread inside an xlog write path that is not a line (a flush): lines logged meanwhile
/// are deferred, and written when it is dropped. Not `Send`: it marks its own thread.
#[derive(Debug)]
pub(super) struct WritePath {
    _thread: PhantomData<*const ()>,
}

impl WritePath {
    /// Enters the write path; `None` if this thread is in one already.
    pub(super) fn try_enter() -> Option<Self> {
        (phase() == Phase::Outside).then(Self::enter)
    }

    fn enter() -> Self {
        set_phase(Phase::Writing);
        WritePath {
            _thread: PhantomData,
        }
    }
}

impl Drop for WritePath {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            drain(Phase::Outside);
        }
        set_phase(Phase::Outside);
    }
}

/// Whether this thread is inside an xlog write path.
pub(super) fn is_inside() -> bool {
    phase() != Phase::Outside
}

/// Marks one of the writer's own threads (writer, compressor): inside the write path for its
/// whole life. It writes what it deferred with [`drain_background`] between jobs, and once
/// more when dropped.
#[derive(Debug)]
pub(super) struct BackgroundThread {
    _thread: PhantomData<*const ()>,
}

impl BackgroundThread {
    /// Marks the calling thread.
    pub(super) fn enter() -> Self {
        set_phase(Phase::Writing);
        let _ = BACKGROUND.try_with(|b| b.set(true));
        BackgroundThread {
            _thread: PhantomData,
        }
    }
}

impl Drop for BackgroundThread {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            drain(Phase::Writing);
        }
        set_phase(Phase::Outside);
        let _ = BACKGROUND.try_with(|b| b.set(false));
    }
}

/// Writes the lines a background thread deferred. Call it holding no lock.
pub(super) fn drain_background() {
    drain(Phase::Writing);
}

/// Whether a line may wait for room: not while one of the writer's own threads writes its
/// deferred lines (it would wait for itself).
pub(super) fn may_wait() -> bool {
    let background = BACKGROUND.try_with(Cell::get).unwrap_or(false);
    !(background && phase() == Phase::Draining)
}

/// Where a thread stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not in a write path: lines are written at once.
    Outside,
    /// In a write path: lines are deferred.
    Writing,
    /// Writing deferred lines: lines are dropped and counted.
    Draining,
}

/// A line waiting for its thread to leave the write path. Dropped unwritten (the list was
/// full, the thread ended, a write unwound), it counts as dropped.
#[derive(Debug)]
struct Deferred {
    inner: Arc<Inner>,
    line: Vec<u8>,
    fatal: bool,
    now: WallTime,
    written: bool,
}

impl Deferred {
    fn write(mut self) {
        // From here `write_line` does the counting, whatever becomes of the line.
        self.written = true;
        self.inner.write_line(&self.line, self.fatal, self.now);
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        if !self.written {
            self.inner.count_dropped(DropCause::Reentrant, 1);
        }
    }
}

/// The deferred lines of a thread and their total length.
#[derive(Debug)]
struct DeferredLines {
    lines: Vec<Deferred>,
    bytes: usize,
}

thread_local! {
    // Copy types with const initialisers have no destructor: readable while the thread's
    // other thread-locals are destroyed, when a destructor may still log.
    static PHASE: Cell<Phase> = const { Cell::new(Phase::Outside) };
    static BACKGROUND: Cell<bool> = const { Cell::new(false) };
    static DEFERRED: RefCell<DeferredLines> = const {
        RefCell::new(DeferredLines { lines: Vec::new(), bytes: 0 })
    };
}

fn phase() -> Phase {
    PHASE.try_with(Cell::get).unwrap_or(Phase::Outside)
}

fn set_phase(p: Phase) {
    let _ = PHASE.try_with(|c| c.set(p));
}

/// Keeps a copy of `line` for after the write path, or counts it as dropped.
fn defer(inner: &Arc<Inner>, line: &[u8], fatal: bool, now: WallTime) {
    let d = Deferred {
        inner: Arc::clone(inner),
        line: Vec::new(),
        fatal,
        now,
        written: false,
    };
    // A list that is gone (the thread is ending) or full drops `d`, which counts it.
    let _ = DEFERRED.try_with(|list| {
        let Ok(mut list) = list.try_borrow_mut() else {
            return;
        };
        if list.bytes + line.len() > DEFERRED_MAX {
            return;
        }
        list.bytes += line.len();
        let mut d = d;
        d.line.extend_from_slice(line);
        list.lines.push(d);
    });
}

/// Writes this thread's deferred lines (in the order they were logged), then returns to
/// phase `after`. Lines logged meanwhile are dropped and counted.
fn drain(after: Phase) {
    let lines = DEFERRED
        .try_with(|list| {
            list.try_borrow_mut()
                .map(|mut l| {
                    l.bytes = 0;
                    std::mem::take(&mut l.lines)
                })
                .unwrap_or_default()
        })
        .unwrap_or_default();
    if lines.is_empty() {
        return;
    }
    set_phase(Phase::Draining);
    let _restore = RestorePhase(after);
    // If a write unwinds, the lines not yet written are dropped with the iterator: counted.
    for d in lines {
        d.write();
    }
}

/// Sets the phase when dropped, unwinding included.
struct RestorePhase(Phase);

impl Drop for RestorePhase {
    fn drop(&mut self) {
        set_phase(self.0);
    }
}

/// Most bytes of deferred lines kept per thread: four lines of the longest length (64 KiB).
const DEFERRED_MAX: usize = 4 * MAX_LINE_LEN;

// The writer thread's deferred lines fit into a fresh block (see the module docs).
const _: () = assert!(DEFERRED_MAX < SOFT_LIMIT && DEFERRED_MAX < ZSTD_SOFT_LIMIT);
