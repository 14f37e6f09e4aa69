//! Writing the driver's state files (the IP ranking, the heartbeat policy's state) off the
//! driver loop.
//!
//! The driver hands each snapshot ([`RankingState`], [`HeartbeatState`]) to its
//! [`StateWriter`] and goes on at once. Serialising and writing happen on tokio's blocking
//! pool, one write at a time; a snapshot handed over while a write runs waits in a one-place
//! slot, and a newer one replaces it there, so a burst of link drops costs at most two
//! writes and the file ends with the newest state. Each write is atomic: a temporary file
//! renamed over the old one.
//!
//! Design: a save used to run inside the driver loop, so every link drop and network
//! change stalled every task and socket for the time of the write (2.75 s for a 20.9 MB
//! state in a debug build). The bounds on the ranking now keep the file small, but a slow
//! disk (or flash under load) would still stall the loop. The heartbeat state, saved after
//! every answered heartbeat that changed it, goes the same way.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use phobos_stn_proto::RankingState;
use tracing::warn;

use crate::state_file;

/// A state the driver keeps in a file.
pub(crate) trait Snapshot: Send + std::fmt::Debug + 'static {
    /// What the file holds, for the warning when a write fails.
    const WHAT: &'static str;
    /// The file's contents (serialised on the blocking pool, not in the loop).
    fn contents(&self) -> String;
}

impl Snapshot for RankingState {
    const WHAT: &'static str = "ip ranking state";
    fn contents(&self) -> String {
        self.to_json()
    }
}

/// The heartbeat policy's state, as its factory exported it
/// ([`HeartbeatPolicyFactory::export_state`](phobos_plugin_api::HeartbeatPolicyFactory::export_state)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeartbeatState(pub(crate) String);

impl Snapshot for HeartbeatState {
    const WHAT: &'static str = "heartbeat state";
    fn contents(&self) -> String {
        self.0.clone()
    }
}

/// Writes snapshots of one state to one file, off the caller's task.
#[derive(Debug)]
pub(crate) struct StateWriter<S> {
    path: PathBuf,
    /// The temporary file each write goes through.
    tmp: PathBuf,
    shared: Arc<Shared<S>>,
    /// How a snapshot reaches the disk: [`state_file::write_atomically`] (tests hold it up).
    write: WriteFn,
    /// The temporary files killed processes left for this path were swept
    /// ([`state_file::sweep_stale_temps`], at the first save).
    swept: bool,
}

/// Writes contents to a path through a temporary file.
type WriteFn = fn(&Path, &Path, &[u8]) -> std::io::Result<()>;

/// The writer of the IP ranking's file.
pub(crate) type RankingWriter = StateWriter<RankingState>;

/// What the driver and the writer on the blocking pool share.
#[derive(Debug)]
struct Shared<S> {
    slot: Mutex<Slot<S>>,
    /// Signalled when the writer ends (the slot is then empty and no writer runs).
    idle: Condvar,
}

/// The snapshot waiting for the writer, and whether a writer runs.
#[derive(Debug)]
struct Slot<S> {
    next: Option<S>,
    writing: bool,
}

impl<S> Default for Slot<S> {
    fn default() -> Self {
        Slot {
            next: None,
            writing: false,
        }
    }
}

impl<S: Snapshot> StateWriter<S> {
    /// A writer of `path`.
    pub(crate) fn new(path: PathBuf) -> Self {
        StateWriter {
            tmp: state_file::temp_path(&path),
            path,
            shared: Arc::new(Shared {
                slot: Mutex::default(),
                idle: Condvar::new(),
            }),
            write: state_file::write_atomically,
            swept: false,
        }
    }

    /// Queues `state` to be written, replacing any snapshot not yet being written, and
    /// starts a writer on the blocking pool unless one runs. Never waits for the disk.
    pub(crate) fn save(&mut self, state: S) {
        let mut slot = lock(&self.shared.slot);
        slot.next = Some(state);
        if slot.writing {
            // The running writer takes it before it ends (it checks under this lock).
            return;
        }
        slot.writing = true;
        drop(slot);
        let (shared, path, tmp) = (
            Arc::clone(&self.shared),
            self.path.clone(),
            self.tmp.clone(),
        );
        let write = self.write;
        let sweep = !std::mem::replace(&mut self.swept, true);
        // Not awaited: `finish` waits for the writer through the shared state.
        drop(tokio::task::spawn_blocking(move || {
            if sweep {
                // Once per writer, off the caller's task: the leftovers of killed processes.
                state_file::sweep_stale_temps(&path);
            }
            write_queued(&shared, &path, &tmp, write)
        }));
    }

    /// Queues the final `state`; [`FinalSave::wait`] returns once it is written (or its
    /// write failed, with a warning).
    pub(crate) fn finish(&mut self, state: S) -> FinalSave {
        self.save(state);
        // Whether this `save` started a writer or one was running, that writer writes the
        // slot's contents before it ends.
        FinalSave(Arc::clone(&self.shared) as Arc<dyn Idle>)
    }
}

/// How long a shutdown waits for the final states to reach the disk, in all.
///
/// Design: the states are a cache (a start without them only ranks and paces from
/// scratch), so a disk that takes longer (flash under heavy load, a network file system)
/// must not hold the app's shutdown. The write goes on in the background; a process that
/// exits meanwhile keeps the previous state whole (each write replaces the file
/// atomically).
pub(crate) const FINAL_SAVE_WAIT: Duration = Duration::from_secs(5);

/// A final state on its way to the disk (see [`StateWriter::finish`]).
#[derive(Debug)]
pub(crate) struct FinalSave(Arc<dyn Idle>);

impl FinalSave {
    /// Blocks the thread until the state is written or `deadline` passes; `true` if it was
    /// written (or its write failed, with a warning) in time.
    pub(crate) fn wait(&self, deadline: Instant) -> bool {
        self.0.wait_idle(deadline)
    }
}

/// Waits on the blocking pool for the final saves, [`FINAL_SAVE_WAIT`] at most in all (a
/// real-time bound, paused tokio clocks aside). `true` if every save ended in time.
pub(crate) async fn wait_final_saves(saves: Vec<FinalSave>, wait: Duration) -> bool {
    if saves.is_empty() {
        return true;
    }
    let deadline = Instant::now() + wait;
    tokio::task::spawn_blocking(move || saves.iter().all(|s| s.wait(deadline)))
        .await
        .unwrap_or(false)
}

/// A writer whose end can be waited for, whatever its state type.
trait Idle: Send + Sync + std::fmt::Debug {
    fn wait_idle(&self, deadline: Instant) -> bool;
}

impl<S: Send + std::fmt::Debug> Idle for Shared<S> {
    fn wait_idle(&self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        let (slot, _) = self
            .idle
            .wait_timeout_while(lock(&self.slot), left, |slot| slot.writing)
            .unwrap_or_else(PoisonError::into_inner);
        !slot.writing
    }
}

/// The writer: writes queued snapshots until the slot is empty.
fn write_queued<S: Snapshot>(shared: &Shared<S>, path: &Path, tmp: &Path, write: WriteFn) {
    loop {
        let state = {
            let mut slot = lock(&shared.slot);
            match slot.next.take() {
                Some(state) => state,
                None => {
                    slot.writing = false;
                    shared.idle.notify_all();
                    return;
                }
            }
        };
        let contents = state.contents();
        // A state no start would read back (see `state_file::read`) is not written: it
        // would replace a readable one, and be written again at every change. The file
        // keeps the last state that fits.
        if contents.len() as u64 > state_file::MAX_STATE_FILE {
            warn!(
                path = %path.display(),
                len = contents.len(),
                max = state_file::MAX_STATE_FILE,
                "the {} is larger than a start reads; not saved",
                S::WHAT
            );
            continue;
        }
        if let Err(e) = write(path, tmp, contents.as_bytes()) {
            warn!(path = %path.display(), error = %e, "could not save the {}", S::WHAT);
        }
    }
}

/// Locks the slot. A panic while it was held (none is possible: it only moves values) would
/// leave it consistent, so a poisoned lock is used as it is.
fn lock<S>(slot: &Mutex<Slot<S>>) -> std::sync::MutexGuard<'_, Slot<S>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(saved_at: u64) -> RankingState {
        RankingState {
            saved_at_unix: Some(saved_at),
            ..RankingState::default()
        }
    }

    /// A fresh directory for one test.
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "phobos-ranking-writer-{}-{test}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read(path: &Path) -> RankingState {
        RankingState::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// The writes of [`held_write`]: held while the test holds `GATE`, each recorded.
    static GATE: Mutex<()> = Mutex::new(());
    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn held_write(path: &Path, tmp: &Path, contents: &[u8]) -> std::io::Result<()> {
        let _held = GATE.lock().unwrap_or_else(PoisonError::into_inner);
        SEEN.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(String::from_utf8_lossy(contents).into_owned());
        state_file::write_atomically(path, tmp, contents)
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    /// While a write is held up, saves return at once and only the newest waits; once the
    /// write goes through, the file ends with the newest snapshot. A shutdown's wait for
    /// the final save ends at its deadline while the write is held, and as soon as the
    /// write is done once it is let go.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // The guard held across the await is the hold-up under test (a blocking-pool writer
    // waits on it, never a runtime task).
    #[allow(clippy::await_holding_lock)]
    async fn saves_never_wait_for_the_disk_and_the_newest_snapshot_wins() {
        let dir = scratch("held_up");
        let path = dir.join("ranking.json");
        let mut w = RankingWriter::new(path.clone());
        w.write = held_write;
        let gate = GATE.lock().unwrap();
        w.save(state(1));
        // Once the writer has taken the first snapshot, it is held up in its write.
        while lock(&w.shared.slot).next.is_some() {
            std::thread::yield_now();
        }
        for i in 2..=5 {
            w.save(state(i));
        }
        assert!(
            lock(&w.shared.slot).writing,
            "the first write is still held up"
        );
        assert_eq!(
            lock(&w.shared.slot).next,
            Some(state(5)),
            "only the newest waits"
        );
        let last = w.finish(state(6));
        assert!(
            !last.wait(Instant::now()),
            "held: the wait ends at its deadline"
        );
        assert!(!wait_final_saves(vec![w.finish(state(6))], Duration::ZERO).await);
        drop(gate);
        assert!(wait_final_saves(vec![last], Duration::from_secs(60)).await);
        assert_eq!(read(&path), state(6));
        assert!(!lock(&w.shared.slot).writing);
        let seen = std::mem::take(&mut *SEEN.lock().unwrap());
        assert_eq!(
            seen,
            [state(1).to_json(), state(6).to_json()],
            "2 to 5 replaced"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A state larger than a start reads back is not written; the file keeps the last one
    /// that fits.
    #[tokio::test]
    async fn a_state_too_large_to_read_back_is_not_written() {
        let dir = scratch("too_large");
        let path = dir.join("heartbeat.state");
        let mut w = StateWriter::<HeartbeatState>::new(path.clone());
        assert!(w.finish(HeartbeatState("small".into())).wait(far()));
        let huge = "x".repeat(state_file::MAX_STATE_FILE as usize + 1);
        assert!(w.finish(HeartbeatState(huge)).wait(far()));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "small");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn finish_writes_the_final_state_with_no_writer_running() {
        let dir = scratch("finish");
        let path = dir.join("ranking.json");
        let mut w = RankingWriter::new(path.clone());
        w.save(state(1));
        assert!(w.finish(state(2)).wait(far()));
        assert_eq!(read(&path), state(2));
        assert!(w.finish(state(3)).wait(far()));
        assert_eq!(read(&path), state(3));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
