//! Atomic writes of the driver's state files (the heartbeat state and the IP ranking).
//!
//! A state is written to a temporary file next to its target and renamed over it, so a
//! reader (or a crash) never sees half a file. Each writer has a temporary file of its own
//! ([`temp_path`]), named after the whole target name, the process and, from the second
//! writer of a name in the process on, a counter.
//!
//! Design: the temporary file used to be the target with its extension replaced by `tmp`.
//! Two writers then shared one temporary file whenever they wrote the same target (two
//! clients, in one process or two, configured with one heartbeat file) or two targets that
//! differ only in their extension (`state.heartbeat` and `state.ranking`): one writer's
//! rename could move the other's half-written file into place, or a mix of both, and the
//! other's rename then failed. A failed rename also left the temporary file behind.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// A temporary file for one writer of `path`: in the same folder (so the rename stays on
/// one file system), named `.<file name>.<process id>.tmp` for the first writer of that file
/// name in this process and `.<file name>.<process id>-<n>.tmp` for the `n`th after it. One
/// writer must not write two states at once through the same temporary file.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    // How many writers of each file name this process has made. Keyed by the file name
    // alone, so one target spelled two ways still gets two temporary files.
    static WRITERS: Mutex<BTreeMap<OsString, u64>> = Mutex::new(BTreeMap::new());
    let name = path.file_name().unwrap_or_default();
    let n = {
        let mut writers = WRITERS.lock().unwrap_or_else(PoisonError::into_inner);
        let count = writers.entry(name.to_owned()).or_insert(0);
        *count += 1;
        *count - 1
    };
    let (name, pid) = (name.to_string_lossy(), std::process::id());
    path.with_file_name(match n {
        0 => format!(".{name}.{pid}.tmp"),
        n => format!(".{name}.{pid}-{n}.tmp"),
    })
}

/// Removes the temporary files of `path` that writers in processes no longer running left
/// behind (`.<file name>.<process id>[-<n>].tmp`, see [`temp_path`]): a process killed
/// between creating its temporary file and the rename (how mobile systems end apps) left
/// one, which no later process, with another id, would ever reuse. Files of live processes
/// (another client writing the same target) and of this one are left alone; so is anything
/// not named that way. Returns how many were removed.
///
/// Design: a process is known to be gone only where `/proc` lists the running ones (Linux,
/// Android), without `unsafe`; elsewhere nothing is swept. A process id reused since counts
/// as running, and its file waits for a later sweep.
pub(crate) fn sweep_stale_temps(path: &Path) -> usize {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return 0;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let own = std::process::id();
    let mut removed = 0;
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .map(|rest| rest.split_once('-').map_or(rest, |(pid, _)| pid))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != own && !process_runs(pid) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether process `pid` runs, or may: only where `/proc` lists processes (Linux, Android)
/// can one be known to be gone.
fn process_runs(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// The largest state file read (the heartbeat state is a few hundred bytes, the bounded IP
/// ranking some hundred kilobytes).
pub(crate) const MAX_STATE_FILE: u64 = 8 * 1024 * 1024;

/// Reads the state file at `path`: `Ok(None)` when there is none.
///
/// Design: only a regular file of at most [`MAX_STATE_FILE`] bytes is read. A FIFO named by
/// mistake held the driver's start (and the runtime thread it ran on) forever, waiting for a
/// writer, and a device such as `/dev/zero` was read until memory ran out.
///
/// # Errors
///
/// An error naming the problem: not a regular file, too large, unreadable, not UTF-8.
pub(crate) fn read(path: &Path) -> io::Result<Option<String>> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !meta.is_file() {
        return Err(not_a_file());
    }
    let too_large = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_STATE_FILE} bytes"),
        )
    };
    if meta.len() > MAX_STATE_FILE {
        return Err(too_large());
    }
    let file = match open_regular(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    // Bounded again while reading: the file may grow meanwhile.
    file.take(MAX_STATE_FILE + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_STATE_FILE {
        return Err(too_large());
    }
    Ok(Some(text))
}

/// Opens `path` for reading without waiting (`O_NONBLOCK`, which a regular file's reads
/// ignore) and checks that what was opened is a regular file.
///
/// Design: [`read`] looks at the path before it opens it, so a device is never opened (an
/// open may do something, as a watchdog device's does). Something put at the path between
/// that look and the open is caught here: a FIFO opened this way does not wait for a
/// writer, and is refused.
fn open_regular(path: &Path) -> io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(not_a_file());
    }
    Ok(file)
}

/// Creates `tmp` afresh for writing. Whatever is already at that name (a file left by a
/// crash, a symbolic link, a FIFO) is removed first, never opened.
///
/// Design: the name is predictable (see [`temp_path`]). Opened the ordinary way, a FIFO
/// there held the write (and the shutdown waiting for it) until a reader came, and a
/// symbolic link had the state written into the file it points to. Created exclusively
/// (`O_CREAT | O_EXCL`), the open follows no link and opens nothing that exists.
fn create_temp(tmp: &Path) -> io::Result<std::fs::File> {
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
    };
    match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(tmp)?;
            create()
        }
        other => other,
    }
}

#[cfg(unix)]
fn is_device(kind: &std::fs::FileType) -> bool {
    use std::os::unix::fs::FileTypeExt;
    kind.is_char_device() || kind.is_block_device()
}

#[cfg(not(unix))]
fn is_device(_: &std::fs::FileType) -> bool {
    false
}

fn not_a_file() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")
}

/// Writes `contents` to `tmp`, flushes it to the disk, then renames it over `path` (and
/// flushes the folder, where the system allows). On failure the temporary file is removed
/// and `path` is left as it was; so is a `path` that is a device (running as root, the
/// rename would replace the device node). A FIFO or socket at `path` (never read, see
/// [`read`]) is replaced by the state; a folder makes the rename fail. Whatever is at
/// `tmp` is removed, never opened or followed (a folder there fails the write).
///
/// Design: the flush before the rename keeps a power loss from leaving an empty file in
/// place of the previous state on file systems that may commit the rename before the data
/// (f2fs, common on Android's `/data`, or ext4 without `auto_da_alloc`); the write runs off
/// the driver's loop, so its wait costs no task anything.
///
/// # Errors
///
/// The error of the write, the flush or the rename, or "a device".
pub(crate) fn write_atomically(path: &Path, tmp: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    if std::fs::metadata(path).is_ok_and(|m| is_device(&m.file_type())) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "a device"));
    }
    let written = create_temp(tmp)
        .and_then(|mut f| {
            f.write_all(contents)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(tmp, path));
    if written.is_ok() {
        // The rename itself reaches the disk with the folder; where a folder cannot be
        // opened or flushed (some systems), the state is still in place.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
    }
    if written.is_err() {
        // Nothing to do if it cannot be removed either (it may not exist).
        let _ = std::fs::remove_file(tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn temporary_files_of_processes_gone_are_swept_and_no_others() {
        // Before, one left by a process killed before its rename stayed for good.
        let dir = scratch("sweep");
        let path = dir.join("heartbeat.state");
        // A child that has exited: its id names no running process (until reused).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let own = std::process::id();
        let parent = std::os::unix::process::parent_id();
        let stale = [
            format!(".heartbeat.state.{gone}.tmp"),
            format!(".heartbeat.state.{gone}-2.tmp"),
        ];
        let kept = [
            format!(".heartbeat.state.{own}.tmp"),
            format!(".heartbeat.state.{parent}.tmp"),
            format!(".ranking.json.{gone}.tmp"),
            format!(".heartbeat.state.x{gone}.tmp"),
            "heartbeat.state".to_owned(),
        ];
        for f in stale.iter().chain(&kept) {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        assert_eq!(sweep_stale_temps(&path), 2);
        for f in &stale {
            assert!(!dir.join(f).exists(), "{f} left");
        }
        for f in &kept {
            assert!(dir.join(f).exists(), "{f} removed");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A fresh directory for one test.
    fn scratch(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("phobos-state-file-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A device node named as a state file is never replaced (as root the rename would).
    /// The node is made in a scratch folder; without the right to make one, there is
    /// nothing to check.
    #[cfg(unix)]
    #[test]
    fn a_device_is_neither_read_nor_replaced() {
        let dir = scratch("device");
        let node = dir.join("zero");
        let made = std::process::Command::new("mknod")
            .arg(&node)
            .args(["c", "1", "5"])
            .status()
            .is_ok_and(|s| s.success());
        if !made {
            // CI runs as root and sets `PHOBOS_LAB_REQUIRED`: there this check must run.
            assert!(
                std::env::var_os("PHOBOS_LAB_REQUIRED").is_none(),
                "PHOBOS_LAB_REQUIRED is set, but mknod is not permitted"
            );
            eprintln!("mknod not permitted: nothing to check");
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        assert!(read(&node).is_err(), "a device is not read");
        let tmp = temp_path(&node);
        assert!(write_atomically(&node, &tmp, b"state").is_err());
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(&node)
            .unwrap()
            .file_type()
            .is_char_device());
        assert!(!tmp.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Runs `f` on a thread of its own and waits for it: `None` if it was still held after
    /// a minute (a guard against a test that hangs, not a time limit: a working call takes
    /// milliseconds).
    fn with_hang_guard<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(f());
        });
        done_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .ok()
    }

    /// `write_atomically` of `"state"` under [`with_hang_guard`].
    fn write_with_guard(path: &Path, tmp: &Path) -> Option<io::Result<()>> {
        let (path, tmp) = (path.to_owned(), tmp.to_owned());
        with_hang_guard(move || write_atomically(&path, &tmp, b"state"))
    }

    /// A FIFO left at the temporary file's name (its name is predictable) is removed, not
    /// opened: opening it for writing waited for a reader, holding the write and the
    /// shutdown that waits for it.
    #[cfg(unix)]
    #[test]
    fn a_fifo_at_the_temporary_name_is_replaced_not_waited_on() {
        let dir = scratch("fifo_tmp");
        let path = dir.join("ranking.json");
        let tmp = temp_path(&path);
        let made = std::process::Command::new("mkfifo").arg(&tmp).status();
        assert!(made.unwrap().success());
        let written = write_with_guard(&path, &tmp);
        if written.is_none() {
            // Let the held write go before failing, so the thread ends.
            let _ = std::fs::read(&tmp);
        }
        written.expect("the write waited on the FIFO").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "state");
        assert!(!tmp.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// What is opened is checked too: a FIFO put at the path after [`read`] looked at it
    /// is opened without waiting for a writer, and refused.
    #[cfg(unix)]
    #[test]
    fn a_fifo_reaching_the_open_is_refused_without_waiting() {
        let dir = scratch("fifo_open");
        let path = dir.join("ranking.json");
        let made = std::process::Command::new("mkfifo").arg(&path).status();
        assert!(made.unwrap().success());
        let fifo = path.clone();
        let opened = with_hang_guard(move || open_regular(&fifo).map(drop));
        if opened.is_none() {
            // Let the held open go before failing, so the thread ends.
            let _ = std::fs::write(&path, b"");
        }
        let err = opened.expect("the open waited for a writer").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A symbolic link at the temporary file's name is removed, not followed: the file it
    /// points to keeps its contents.
    #[cfg(unix)]
    #[test]
    fn a_link_at_the_temporary_name_is_not_followed() {
        let dir = scratch("link_tmp");
        let path = dir.join("ranking.json");
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let tmp = temp_path(&path);
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_with_guard(&path, &tmp).unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "state");
        assert!(
            std::fs::symlink_metadata(&tmp).is_err(),
            "no temporary file left"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A folder at the temporary file's name is not removed: the write fails and leaves
    /// the target as it was.
    #[test]
    fn a_folder_at_the_temporary_name_fails_the_write_and_keeps_the_state() {
        let dir = scratch("folder_tmp");
        let path = dir.join("ranking.json");
        std::fs::write(&path, "old").unwrap();
        let tmp = temp_path(&path);
        std::fs::create_dir(&tmp).unwrap();
        std::fs::write(tmp.join("inside"), "kept").unwrap();
        assert!(write_with_guard(&path, &tmp).unwrap().is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(std::fs::read_to_string(tmp.join("inside")).unwrap(), "kept");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn targets_that_differ_in_their_extension_get_their_own_temporary_files() {
        let dir = scratch("extensions");
        let heartbeat = dir.join("state.heartbeat");
        let ranking = dir.join("state.ranking");
        let (a, b) = (temp_path(&heartbeat), temp_path(&ranking));
        assert_ne!(a, b);
        assert_ne!(a, heartbeat);
        assert_ne!(temp_path(&heartbeat), a, "two writers of one target");
        assert_eq!(a.parent(), Some(dir.as_path()));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Writers sharing one target (clients configured with one state file) each leave a
    /// complete file: whatever a reader sees at any moment is one writer's whole state.
    #[test]
    fn concurrent_writers_of_one_file_never_leave_a_mixed_or_failed_write() {
        let dir = scratch("concurrent");
        let path = dir.join("heartbeat.state");
        std::fs::write(&path, "initial").unwrap();
        let states: Vec<String> = (0..4)
            .map(|w| format!("[writer{w}]\n{}", "x".repeat(2_000 + 3_000 * w)))
            .collect();
        let writers: Vec<_> = states
            .iter()
            .cloned()
            .map(|state| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let tmp = temp_path(&path);
                    for _ in 0..200 {
                        write_atomically(&path, &tmp, state.as_bytes())?;
                    }
                    Ok::<_, io::Error>(())
                })
            })
            .collect();
        for _ in 0..200 {
            let seen = std::fs::read_to_string(&path).unwrap();
            assert!(
                seen == "initial" || states.contains(&seen),
                "a mixed file of {} bytes",
                seen.len()
            );
        }
        for w in writers {
            w.join().unwrap().expect("every write succeeds");
        }
        let last = std::fs::read_to_string(&path).unwrap();
        assert!(states.contains(&last));
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_rename_leaves_the_target_alone_and_no_temporary_file() {
        let dir = scratch("failed");
        // A folder where the file should be: the rename over it fails.
        let path = dir.join("heartbeat.state");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("keep"), "inside").unwrap();
        let tmp = temp_path(&path);
        assert!(write_atomically(&path, &tmp, b"state").is_err());
        assert!(path.join("keep").exists());
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["heartbeat.state"], "the temporary file is removed");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
