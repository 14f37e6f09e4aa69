//! The memory-mapped staging file and the few OS calls xlog needs. The only module with
//! `unsafe` code.
//!
//! Why a shared file mapping: a store into the mapping lands in the kernel's page cache at
//! once, and the page cache belongs to the kernel, not to the process. When the process is
//! killed (SIGKILL, abort, OOM kill) everything it stored is still there and reaches the disk
//! with normal write-back; the next start reads it back. No `msync`/`fsync` is needed for
//! that. (A power loss or kernel crash before write-back can still lose recent data; that is
//! what `fsync` would buy, and Mars does not pay for it either.)
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::{Deref, DerefMut};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use memmap2::{MmapMut, MmapOptions};

/// Memory backing one region of the staging file: the mapping, or heap memory when mapping
/// failed (then everything works except crash recovery).
#[derive(Debug)]
pub(crate) enum Backing {
    Map(MmapMut),
    Heap(Vec<u8>),
}

impl Deref for Backing {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Backing::Map(m) => m,
            Backing::Heap(v) => v,
        }
    }
}

impl DerefMut for Backing {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Backing::Map(m) => m,
            Backing::Heap(v) => v,
        }
    }
}

impl Backing {
    pub(crate) fn is_mapped(&self) -> bool {
        matches!(self, Backing::Map(_))
    }
}

/// The open, exclusively locked staging file.
#[derive(Debug)]
pub(crate) struct BufferFile {
    file: File,
}

impl BufferFile {
    /// Opens (creating if needed) and locks the staging file. A second writer on the same
    /// file, in this or another process, gets [`io::ErrorKind::WouldBlock`].
    pub(crate) fn open_locked(path: &Path) -> io::Result<BufferFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        BufferFile::lock(file)
    }

    /// Takes `file` as the staging file once it holds the exclusive lock on it.
    fn lock(file: File) -> io::Result<BufferFile> {
        // SAFETY: `flock` on a valid, open descriptor owned by `file`; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(BufferFile { file })
    }

    /// Creates the staging file at `path`, which must not exist, with its folder if that is
    /// gone too, and locks it (as [`open_locked`](Self::open_locked)).
    ///
    /// Design: only ever a new file: a file found at the path is another writer's, or what
    /// one left for recovery, and is not to be taken over.
    pub(crate) fn create_locked(path: &Path) -> io::Result<BufferFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        BufferFile::lock(file)
    }

    /// The file's first `limit` bytes, or all of it if shorter (what a crashed writer left).
    ///
    /// Design: bounded, because a staging file is only ever read up to its layout's length:
    /// a damaged or foreign file of 2 GiB was read whole at every start (2 GiB of memory and
    /// 14 s before the first line could be logged, enough for a phone to kill the app).
    pub(crate) fn read_up_to(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        self.file.seek(SeekFrom::Start(0))?;
        (&mut self.file).take(limit as u64).read_to_end(&mut v)?;
        Ok(v)
    }

    /// The file's length in bytes.
    pub(crate) fn file_len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Sets the file to `len` zero bytes, written out (not sparse: a store into a hole of a
    /// full disk would raise SIGBUS), and syncs it.
    pub(crate) fn zero(&mut self, len: usize) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        let zeros = vec![0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len());
            self.file.write_all(&zeros[..n])?;
            left -= n;
        }
        self.file.flush()
    }

    /// Grows the file to at least `len` bytes by writing zeros after its end (not sparse),
    /// leaving what it holds untouched. On failure the file is cut back to its old length.
    pub(crate) fn extend_zeroed(&mut self, len: usize) -> io::Result<()> {
        let old = self.file.metadata()?.len();
        let Some(mut left) = (len as u64).checked_sub(old).filter(|&n| n > 0) else {
            return Ok(());
        };
        let res = (|| {
            self.file.seek(SeekFrom::Start(old))?;
            let zeros = vec![0u8; 64 * 1024];
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                self.file.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            self.file.flush()
        })();
        if res.is_err() {
            let _ = self.file.set_len(old);
        }
        res
    }

    /// Overwrites existing bytes at `offset` with `bytes` (needs no new disk space).
    pub(crate) fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(bytes, offset)
    }

    /// Overwrites the byte at `offset` with zero (an existing byte: needs no new disk space).
    pub(crate) fn clear_byte(&self, offset: u64) -> io::Result<()> {
        self.write_at(offset, &[0])
    }

    /// Maps `len` bytes at `offset` shared and writable; heap memory if that fails.
    pub(crate) fn map(&self, offset: u64, len: usize) -> Backing {
        // SAFETY: the file is ours, locked against other xlog writers, and never truncated
        // while mapped (it is resized only before mapping, in `zero`). Another program
        // truncating it could make accesses fault; that is the usual caveat of file mappings
        // and the reason Mars zero-fills the file first.
        let m = unsafe {
            MmapOptions::new()
                .offset(offset)
                .len(len)
                // Pre-fault the pages, so the first lines of each slot do not pay for a page
                // fault on the caller's thread.
                .populate()
                .map_mut(&self.file)
        };
        match m {
            Ok(m) => Backing::Map(m),
            Err(_) => Backing::Heap(vec![0u8; len]),
        }
    }
}

/// Whether nothing is at `path` any more: a staging file open and mapped here was removed
/// (with its folder, as an app's "clear cache" does). False when something is there, or
/// when the path cannot be looked at.
pub(crate) fn is_gone(path: &Path) -> bool {
    matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == io::ErrorKind::NotFound)
}

/// Capacity, free and available bytes of the file system holding `path` (`statvfs`).
// The statvfs field types differ between platforms (u32 or u64).
#[allow(clippy::unnecessary_cast)]
pub(crate) fn disk_space(path: &Path) -> Option<(u64, u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of the
    // right type; `statvfs` initialises it when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let st = unsafe { st.assume_init() };
    let f = st.f_frsize as u64;
    Some((
        st.f_blocks as u64 * f,
        st.f_bfree as u64 * f,
        st.f_bavail as u64 * f,
    ))
}

/// An exclusive advisory lock on a log file, held while a block is appended to it or its
/// end is judged after a crash, and released when dropped.
///
/// Design: two writers may share a day's file (one log folder, each its own buffer). Each
/// notes the file's length before appending, to record where its block begins and to cut a
/// failed append back to it; without the lock the other writer's block could land in
/// between, and be cut off (lost) or make the record point at the wrong bytes (a block
/// appended twice after a crash). A file on which locks are not supported is appended to
/// without one, as before.
#[derive(Debug)]
pub(crate) struct AppendLock<'a> {
    file: Option<&'a File>,
}

impl<'a> AppendLock<'a> {
    /// Waits for the lock on `file` (another writer holds it only while it appends a
    /// block).
    pub(crate) fn take(file: &'a File) -> AppendLock<'a> {
        loop {
            // SAFETY: `flock` on a valid, open descriptor owned by `file`; no memory is shared.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return AppendLock { file: Some(file) };
            }
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return AppendLock { file: None };
            }
        }
    }

    /// Whether `file` is locked by another open description (tests).
    #[cfg(test)]
    pub(crate) fn held_elsewhere(path: &Path) -> bool {
        let Ok(f) = File::open(path) else {
            return false;
        };
        // SAFETY: as in `take`, on `f`'s own descriptor.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        rc != 0
    }
}

impl Drop for AppendLock<'_> {
    fn drop(&mut self) {
        if let Some(file) = self.file {
            // SAFETY: as in `take`.
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_is_shared_with_the_file_and_locked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.mmap3");
        let mut f = BufferFile::open_locked(&p).unwrap();
        f.zero(10_000).unwrap();
        let mut m = f.map(5000, 100);
        assert!(m.is_mapped());
        m[3] = 0xAB;
        drop(m);
        let all = f.read_up_to(usize::MAX).unwrap();
        assert_eq!(all.len(), 10_000);
        assert_eq!(all[5003], 0xAB);
        assert_eq!(f.read_up_to(5004).unwrap(), all[..5004]);
        let e = BufferFile::open_locked(&p).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(disk_space(dir.path()).is_some());
    }

    #[test]
    fn a_removed_file_is_seen_gone_and_made_anew_only_where_nothing_is() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("cache");
        let p = sub.join("x.mmap3");
        std::fs::create_dir(&sub).unwrap();
        let _f = BufferFile::open_locked(&p).unwrap();
        assert!(!is_gone(&p));
        // A file already there is not taken over.
        let e = BufferFile::create_locked(&p).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        std::fs::remove_dir_all(&sub).unwrap();
        assert!(is_gone(&p));
        let mut g = BufferFile::create_locked(&p).unwrap();
        assert!(!is_gone(&p));
        g.zero(4096).unwrap();
        assert!(g.map(0, 4096).is_mapped());
        assert_eq!(
            BufferFile::open_locked(&p).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }
}
