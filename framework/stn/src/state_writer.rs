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
use std::sync::{Arc, Mutex, PoisonError};

use phobos_stn_proto::RankingState;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::state_file;

/// A state the driver keeps in a file.
pub(crate) trait Snapshot: Send + 'static {
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
    slot: Arc<Mutex<Slot<S>>>,
    /// The writer task last started (running, or ended).
    writer: Option<JoinHandle<()>>,
}

/// The writer of the IP ranking's file.
pub(crate) type RankingWriter = StateWriter<RankingState>;

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
            slot: Arc::default(),
            writer: None,
        }
    }

    /// Queues `state` to be written, replacing any snapshot not yet being written, and
    /// starts a writer on the blocking pool unless one runs. Never waits for the disk.
    pub(crate) fn save(&mut self, state: S) {
        let mut slot = lock(&self.slot);
        slot.next = Some(state);
        if slot.writing {
            // The running writer takes it before it ends (it checks under this lock).
            return;
        }
        slot.writing = true;
        drop(slot);
        let (slot, path, tmp) = (Arc::clone(&self.slot), self.path.clone(), self.tmp.clone());
        self.writer = Some(tokio::task::spawn_blocking(move || {
            write_queued(&slot, &path, &tmp)
        }));
    }

    /// Queues the final `state`; the returned task ends once it is written (or its write
    /// failed, with a warning).
    pub(crate) fn finish(&mut self, state: S) -> Option<JoinHandle<()>> {
        self.save(state);
        // Whether this `save` started a writer or one was running, it is the last one
        // started, and it writes the slot's contents before it ends.
        self.writer.take()
    }
}

/// The writer: writes queued snapshots until the slot is empty.
fn write_queued<S: Snapshot>(slot: &Mutex<Slot<S>>, path: &Path, tmp: &Path) {
    loop {
        let state = {
            let mut slot = lock(slot);
            match slot.next.take() {
                Some(state) => state,
                None => {
                    slot.writing = false;
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
        if let Err(e) = state_file::write_atomically(path, tmp, contents.as_bytes()) {
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

    /// While a write is held up (its temporary file is a FIFO nobody reads yet), saves
    /// return at once and only the newest waits; once the write goes through, the file
    /// ends with the newest snapshot.
    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn saves_never_wait_for_the_disk_and_the_newest_snapshot_wins() {
        let dir = scratch("held_up");
        let path = dir.join("ranking.json");
        let mut w = RankingWriter::new(path.clone());
        let tmp = w.tmp.clone();
        let made = std::process::Command::new("mkfifo")
            .arg(&tmp)
            .status()
            .unwrap();
        assert!(made.success());
        w.save(state(1));
        // Once the writer has taken the first snapshot, it is held up opening the FIFO.
        while lock(&w.slot).next.is_some() {
            std::thread::yield_now();
        }
        for i in 2..=5 {
            w.save(state(i));
        }
        assert!(lock(&w.slot).writing, "the first write is still held up");
        assert_eq!(lock(&w.slot).next, Some(state(5)), "only the newest waits");
        // Let the held-up write through: it carried the first snapshot.
        let held_up = std::thread::spawn(move || std::fs::read_to_string(tmp).unwrap());
        let first = RankingState::from_json(&held_up.join().unwrap()).unwrap();
        assert_eq!(first, state(1));
        w.finish(state(6)).unwrap().await.unwrap();
        assert_eq!(read(&path), state(6));
        assert!(!lock(&w.slot).writing);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A state larger than a start reads back is not written; the file keeps the last one
    /// that fits.
    #[tokio::test]
    async fn a_state_too_large_to_read_back_is_not_written() {
        let dir = scratch("too_large");
        let path = dir.join("heartbeat.state");
        let mut w = StateWriter::<HeartbeatState>::new(path.clone());
        w.finish(HeartbeatState("small".into()))
            .unwrap()
            .await
            .unwrap();
        let huge = "x".repeat(state_file::MAX_STATE_FILE as usize + 1);
        w.finish(HeartbeatState(huge)).unwrap().await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "small");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn finish_writes_the_final_state_with_no_writer_running() {
        let dir = scratch("finish");
        let path = dir.join("ranking.json");
        let mut w = RankingWriter::new(path.clone());
        w.save(state(1));
        w.finish(state(2)).unwrap().await.unwrap();
        assert_eq!(read(&path), state(2));
        w.finish(state(3)).unwrap().await.unwrap();
        assert_eq!(read(&path), state(3));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
