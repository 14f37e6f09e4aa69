//! Log file names, splitting by size, the cache directory and deletion of old files.
//!
//! - Names: `<prefix>_<YYYYMMDD>.xlog`, then `<prefix>_<YYYYMMDD>_1.xlog`, `_2`, … The date is
//!   the local date when the block is written (as Mars). When the wall clock went back since
//!   the last block, the file in use is kept until the clock catches up (as Mars). When it
//!   went forward by more than the monotonic time elapsed plus 300 s, a tip block
//!   `[F][ last log file:<path> from <time> to <time>, time_diff:<s>, tick_diff:<ms>` goes
//!   before the block (as Mars, §5.3).
//! - Splitting (`max_file_size > 0`): before every block the current file's size (log dir plus
//!   cache dir, as Mars counts it) is checked, and a block that would take a non-empty file
//!   past the limit goes to the next index. Mars checks only when it opens a file, so its files
//!   overshoot and a sync-mode file is not split within a day; here the limit holds while
//!   running (a single block larger than the limit still gets a file of its own).
//! - Cache dir (Mars §5.4): a day's file is written to the cache dir when `cache_days > 0`,
//!   the log dir has no file of that name yet and the cache file system has ≥ 1 GiB
//!   available; an existing cache file of that name is always used, and when caching is no
//!   longer chosen it is appended to the log dir's file and removed after a background write.
//!   If writing to the log dir fails, the cache dir is used. A directory removed while the
//!   writer runs is made again before the next block. [`LogFiles::move_old_cache_files`]
//!   moves this prefix's cache files older than `cache_days` (Mars runs it 3 minutes after
//!   open). Both moves are crash-safe: a note beside the cache file says where its bytes went
//!   until it is removed, and a move after a crash appends only what the log file lacks
//!   (`move_file`).
//! - Sharing: writers of one prefix may share a log folder (each with its own buffer file).
//!   A block is appended, and where it begins noted, under an exclusive lock on the log file
//!   (`AppendLock`); so is a move into it, and the check after a crash of what a block's
//!   append left.
//! - [`LogFiles::delete_expired`] removes this prefix's log files and `YYYYMMDD` folders older
//!   than the max alive time from both directories (Mars runs it 2 minutes after open).
//!
//! Design: housekeeping touches only this writer's files, `<prefix>_<YYYYMMDD>[_<N>].xlog`.
//! Mars deletes every `.xlog` in the folder and moves every cache file whose name starts with
//! the prefix, so of two loggers sharing a folder the one with the shorter max alive time
//! deleted the other's files early, and prefix `app` moved `app2`'s files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::block::{emit_block, HEADER_LEN};
use crate::clock::WallTime;
use crate::format::mark_time;
use crate::mmap::{disk_space, AppendLock};
use crate::staging::Intent;

const CACHE_MIN_FREE: u64 = 1 << 30;

/// The file a block goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) in_cache: bool,
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    /// Append the cache file to the log dir afterwards (caching no longer chosen).
    move_after: bool,
}

#[derive(Debug)]
pub(crate) struct LogFiles {
    log_dir: PathBuf,
    cache_dir: Option<PathBuf>,
    prefix: String,
    max_file_size: u64,
    cache_days: u32,
    /// Date and index of the current file.
    index: Option<(String, u32)>,
    /// The latest time a file was picked by its date (Unix seconds).
    picked_at: i64,
    /// That pick's wall and monotonic time, and the file it picked (for the clock-jump tip).
    last_pick: Option<(WallTime, Instant, PathBuf)>,
    /// The magic and header key of tip blocks (none: no tips are written).
    tips: Option<(u8, [u8; 64])>,
    open: Option<(PathBuf, File)>,
    /// A cache file to move into the log dir (from, to), once the block just appended to
    /// it is no longer staged ([`finish_move`](Self::finish_move)).
    pending_move: Option<(PathBuf, PathBuf)>,
    /// Test hook: appends longer than this fail after writing part of their bytes (and are
    /// cut back), as under a file size limit or a nearly full disk.
    #[cfg(test)]
    pub(crate) fail_over: Option<usize>,
}

impl LogFiles {
    pub(crate) fn new(
        log_dir: PathBuf,
        cache_dir: Option<PathBuf>,
        prefix: String,
        max_file_size: u64,
        cache_days: u32,
    ) -> Self {
        // Design: a cache dir that is the log dir (another spelling, a symlink) is no cache
        // dir. Otherwise the day's file "exists in the cache dir", is appended to itself as
        // the move to the log dir and then removed: every line written so far is lost.
        let cache_dir = cache_dir.filter(|c| !same_dir(c, &log_dir));
        LogFiles {
            log_dir,
            cache_dir,
            prefix,
            max_file_size,
            cache_days,
            index: None,
            picked_at: i64::MIN,
            last_pick: None,
            tips: None,
            open: None,
            pending_move: None,
            #[cfg(test)]
            fail_over: None,
        }
    }

    /// Writes tip blocks (the clock-jump tip) with `magic` (a sync magic) and header `key`.
    pub(crate) fn with_tips(mut self, magic: u8, key: [u8; 64]) -> Self {
        self.tips = Some((magic, key));
        self
    }

    pub(crate) fn dir(&self, in_cache: bool) -> &Path {
        match (&self.cache_dir, in_cache) {
            (Some(c), true) => c,
            _ => &self.log_dir,
        }
    }

    /// `<prefix>_<ymd>.xlog` or `<prefix>_<ymd>_<n>.xlog`.
    pub(crate) fn file_name(&self, ymd: &str, index: u32) -> String {
        if index == 0 {
            format!("{}_{ymd}.xlog", self.prefix)
        } else {
            format!("{}_{ymd}_{index}.xlog", self.prefix)
        }
    }

    /// Picks the file for a block of `len` bytes written at `now` (wall) and `tick`
    /// (monotonic), with the text of the clock-jump tip to write before it if the wall clock
    /// jumped forward since the last pick (and tips are written, [`with_tips`](Self::with_tips)).
    pub(crate) fn target(
        &mut self,
        now: WallTime,
        tick: Instant,
        len: u64,
    ) -> (Target, Option<String>) {
        // Design: as Mars (§5.3), a wall clock set back since the last pick keeps the file in
        // use, rather than going back to an earlier day's file (or, after a device reset,
        // starting one dated years ago), until the clock has caught up.
        if let Some((day, _)) = self
            .index
            .clone()
            .filter(|_| now.unix_secs < self.picked_at)
        {
            return (self.pick(&day, len), None);
        }
        let jump = self
            .last_pick
            .as_ref()
            .filter(|_| self.tips.is_some())
            .and_then(|(then, then_tick, path)| clock_jump_tip(path, *then, *then_tick, now, tick));
        // The tip goes into the same file: the size limit counts it.
        let tip_len = jump
            .as_ref()
            .map_or(0, |t| (HEADER_LEN + t.len() + 1) as u64);
        self.picked_at = now.unix_secs;
        let target = self.pick(&now.local().ymd_compact(), len + tip_len);
        self.last_pick = Some((now, tick, target.path.clone()));
        (target, jump)
    }

    /// The file of date `ymd` for a block of `len` bytes.
    fn pick(&mut self, ymd: &str, len: u64) -> Target {
        let ymd = ymd.to_owned();
        let mut index = match &self.index {
            Some((d, i)) if *d == ymd => *i,
            _ => self.highest_index(&ymd),
        };
        if self.max_file_size > 0 {
            loop {
                let size = self.size_of(&self.file_name(&ymd, index));
                if size == 0 || size + len <= self.max_file_size {
                    break;
                }
                // A file of the largest index (only a stray file can have one) takes the
                // block over the limit rather than overflowing the index.
                let Some(next) = index.checked_add(1) else {
                    break;
                };
                index = next;
            }
        }
        self.index = Some((ymd.clone(), index));
        let name = self.file_name(&ymd, index);
        let log_path = self.log_dir.join(&name);
        let Some(cache) = &self.cache_dir else {
            return Target {
                in_cache: false,
                name,
                path: log_path,
                move_after: false,
            };
        };
        let cache_path = cache.join(&name);
        let caching = self.cache_days > 0
            && !log_path.exists()
            && disk_space(cache).is_some_and(|(_, _, avail)| avail >= CACHE_MIN_FREE);
        if cache_path.exists() {
            return Target {
                in_cache: true,
                name,
                path: cache_path,
                move_after: !caching,
            };
        }
        if caching {
            return Target {
                in_cache: true,
                name,
                path: cache_path,
                move_after: false,
            };
        }
        Target {
            in_cache: false,
            name,
            path: log_path,
            move_after: false,
        }
    }

    /// Appends `bytes` to the file for `now`. `before` is called with the write intent (file
    /// and its length before the append) right before the bytes are written. A background
    /// append to a cache file that is to move into the log dir leaves the move to
    /// [`finish_move`](Self::finish_move).
    pub(crate) fn append(
        &mut self,
        now: WallTime,
        bytes: &[u8],
        from_background: bool,
        before: impl FnMut(&Intent),
    ) -> io::Result<Target> {
        self.append_at(now, Instant::now(), bytes, from_background, before)
    }

    /// [`append`](Self::append) at monotonic time `tick`.
    fn append_at(
        &mut self,
        now: WallTime,
        tick: Instant,
        bytes: &[u8],
        from_background: bool,
        mut before: impl FnMut(&Intent),
    ) -> io::Result<Target> {
        let (mut target, jump) = self.target(now, tick, bytes.len() as u64);
        if let (Some(text), Some((magic, key))) = (jump, self.tips) {
            // Mars writes the tip into the file it opens, before the data. Best effort: an
            // append that fails here fails for the block as well, and is reported for it.
            let mut tip = Vec::with_capacity(text.len() + 80);
            emit_block(
                &mut tip,
                magic,
                0,
                now.local().hour as u8,
                &key,
                text.as_bytes(),
            );
            let _ = self.append_to(&target, &tip, &mut |_: &Intent| {});
        }
        let res = self.append_to(&target, bytes, &mut before);
        let res = match res {
            Err(e) if !target.in_cache && self.cache_dir.is_some() => {
                // Mars: when the log dir cannot be written, use the cache dir.
                let cache = self.cache_dir.clone().unwrap_or_default();
                target = Target {
                    in_cache: true,
                    path: cache.join(&target.name),
                    ..target
                };
                // The intent is recorded again, for this file: after a crash the block is
                // found where it went rather than appended a second time.
                self.append_to(&target, bytes, &mut before).map_err(|_| e)
            }
            r => r,
        };
        res?;
        if from_background && target.move_after {
            let dst = self.log_dir.join(&target.name);
            self.pending_move = Some((target.path.clone(), dst));
        }
        Ok(target)
    }

    /// Moves the cache file the last background append went to into the log dir, if it was
    /// to move. The writer calls it once the block is cleared from its slot.
    ///
    /// Design: the slot's write intent names the cache file. Moved (and removed) before the
    /// slot was cleared, a crash in between left an intent whose file was gone, and the
    /// block, found in no file, was appended a second time at the next start.
    pub(crate) fn finish_move(&mut self) {
        if let Some((src, dst)) = self.pending_move.take() {
            self.open = None;
            let _ = move_file(&src, &dst);
        }
    }

    fn append_to(
        &mut self,
        target: &Target,
        bytes: &[u8],
        before: &mut impl FnMut(&Intent),
    ) -> io::Result<()> {
        // The cached handle is used only while it still is the file at the path: an uploader
        // may have renamed the day's file away, or someone deleted it (Mars reopens the file
        // for every flush, so it never writes into a moved file).
        //
        // Design: that check is made under the append lock, on the file's metadata that the
        // append reads anyway for its offset, so a block (in sync mode, every line) costs one
        // `fstat` of the open file and one `stat` of the path, not two `fstat`s and a `stat`.
        let mut fresh = false;
        if self.open.as_ref().is_none_or(|(p, _)| *p != target.path) {
            self.open_target(target)?;
            fresh = true;
        }
        loop {
            let Some((_, f)) = self.open.as_ref() else {
                return Err(io::Error::other("log file not open"));
            };
            #[cfg(test)]
            let limit = self.fail_over;
            #[cfg(not(test))]
            let limit = None;
            let res = append_locked(
                f,
                bytes,
                limit,
                |meta| fresh || is_file_at(meta, &target.path),
                |offset, meta| {
                    before(&Intent {
                        in_cache: target.in_cache,
                        name: target.name.clone(),
                        offset,
                        written: Some((bytes.len() as u32, crc32(bytes))),
                        file_id: file_id(meta),
                    });
                },
            );
            match res {
                Ok(true) => return Ok(()),
                // Not the file at the path any more: open the one there (once).
                Ok(false) => {
                    self.open_target(target)?;
                    fresh = true;
                }
                Err(e) => {
                    self.open = None;
                    return Err(e);
                }
            }
        }
    }

    /// Opens (creating it) the file `target` names, as the cached handle.
    fn open_target(&mut self, target: &Target) -> io::Result<()> {
        self.open = None;
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&target.path)
        };
        let f = match open() {
            // Design: a directory removed while the writer runs (an app's "clear cache") is
            // made again, as at open; otherwise every later line would be lost until the next
            // start.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let dir = self.dir(target.in_cache).to_owned();
                fs::create_dir_all(dir)?;
                open()?
            }
            r => r?,
        };
        self.open = Some((target.path.clone(), f));
        Ok(())
    }

    /// Whether the block recorded in `intent` (its length and CRC-32, or without them the
    /// staged block `bytes` itself) is already in the file named by `intent` at its offset.
    /// If the file holds only part of it, the part is cut off, but only when the intent is
    /// plausible: the block no longer than the staged one, the offset within the file, and the
    /// file the one the intent was recorded for.
    pub(crate) fn settle_intent(&mut self, intent: &Intent, bytes: &[u8]) -> bool {
        let path = self.dir(intent.in_cache).join(&intent.name);
        let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else {
            return false;
        };
        // Under the lock: a partial append is cut off only while no other writer appends.
        let _lock = AppendLock::take(&file);
        let mut f = &file;
        let Ok(meta) = f.metadata() else {
            return false;
        };
        let len = meta.len();
        // The block being appended was either the staged block itself or a compressed copy
        // of it (never longer: the writer appends the staged block when compression did not
        // make it smaller), known by its length and CRC-32.
        let written_len = intent
            .written
            .map_or(bytes.len() as u64, |(l, _)| u64::from(l));
        if written_len > bytes.len() as u64 || intent.offset > len {
            return false;
        }
        if intent.file_id != 0 && file_id(&meta) != intent.file_id {
            return false;
        }
        let end = intent.offset.saturating_add(written_len);
        if len >= end {
            let mut have = vec![0u8; written_len as usize];
            let read =
                f.seek(SeekFrom::Start(intent.offset)).is_ok() && f.read_exact(&mut have).is_ok();
            return read
                && match intent.written {
                    Some((_, crc)) => crc32(&have) == crc,
                    None => have == bytes,
                };
        }
        if len > intent.offset {
            // A partial append: remove it, the block is appended again whole.
            let _ = f.set_len(intent.offset);
            self.open = None;
        }
        false
    }

    /// Whether `name` is one of this writer's log files: `<prefix>_<YYYYMMDD>.xlog` or
    /// `<prefix>_<YYYYMMDD>_<N>.xlog`.
    fn is_own_log(&self, name: &str) -> bool {
        let Some(rest) = name
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('_'))
            .and_then(|r| r.strip_suffix(".xlog"))
        else {
            return false;
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let (Some(date), Some(index)) = (rest.get(..8), rest.get(8..)) else {
            return false;
        };
        digits(date) && (index.is_empty() || index.strip_prefix('_').is_some_and(digits))
    }

    fn size_of(&self, name: &str) -> u64 {
        let log = fs::metadata(self.log_dir.join(name))
            .map(|m| m.len())
            .unwrap_or(0);
        let cache = self
            .cache_dir
            .as_ref()
            .and_then(|c| fs::metadata(c.join(name)).ok())
            .map(|m| m.len())
            .unwrap_or(0);
        log + cache
    }

    fn highest_index(&self, ymd: &str) -> u32 {
        let stem = format!("{}_{ymd}", self.prefix);
        let mut best = 0;
        for dir in std::iter::once(&self.log_dir).chain(self.cache_dir.iter()) {
            let Ok(rd) = fs::read_dir(dir) else { continue };
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                let Some(rest) = name
                    .strip_prefix(&stem)
                    .and_then(|r| r.strip_suffix(".xlog"))
                else {
                    continue;
                };
                let idx = if rest.is_empty() {
                    Some(0)
                } else {
                    rest.strip_prefix('_').and_then(|n| n.parse::<u32>().ok())
                };
                if let Some(i) = idx {
                    best = best.max(i);
                }
            }
        }
        best
    }

    /// Deletes this prefix's log files (and notes of moves left by a crash, [`MoveNote`]) and
    /// `YYYYMMDD` folders older than `max_alive` (by modification time against `now`) in the
    /// log and cache dirs. Returns how many entries were removed.
    pub(crate) fn delete_expired(&mut self, now: WallTime, max_alive: Duration) -> usize {
        let max_alive = max_alive.max(Duration::from_secs(86_400));
        let now = UNIX_EPOCH + Duration::from_secs(now.unix_secs.max(0) as u64);
        let mut removed = 0;
        self.open = None;
        for dir in std::iter::once(self.log_dir.clone()).chain(self.cache_dir.clone()) {
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let Ok(meta) = e.metadata() else { continue };
                let name = e.file_name();
                let name = name.to_string_lossy();
                let old = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|age| age > max_alive);
                if !old {
                    continue;
                }
                let is_log = meta.is_file()
                    && (self.is_own_log(&name)
                        || MoveNote::log_of(&name).is_some_and(|log| self.is_own_log(log)));
                let is_day_dir =
                    meta.is_dir() && name.len() == 8 && name.bytes().all(|b| b.is_ascii_digit());
                let ok = if is_log {
                    fs::remove_file(e.path()).is_ok()
                } else if is_day_dir {
                    fs::remove_dir_all(e.path()).is_ok()
                } else {
                    false
                };
                removed += usize::from(ok);
            }
        }
        removed
    }

    /// Moves cache-dir files of this prefix into the log dir (appending to a same-named
    /// file), except files modified less than `cache_days` ago. Stops at the first failure.
    pub(crate) fn move_old_cache_files(&mut self, now: WallTime) -> usize {
        let Some(cache) = self.cache_dir.clone() else {
            return 0;
        };
        let Ok(rd) = fs::read_dir(&cache) else {
            return 0;
        };
        let now = UNIX_EPOCH + Duration::from_secs(now.unix_secs.max(0) as u64);
        let keep = Duration::from_secs(u64::from(self.cache_days) * 86_400);
        self.open = None;
        let mut moved = 0;
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy().into_owned();
            if !self.is_own_log(&name) {
                continue;
            }
            if self.cache_days > 0 {
                let modified = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                if now.duration_since(modified).unwrap_or_default() < keep {
                    continue;
                }
            }
            if move_file(&e.path(), &self.log_dir.join(&name)).is_err() {
                break;
            }
            moved += 1;
        }
        moved
    }
}

/// The inode of a file (0 where there is none).
fn file_id(meta: &fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        meta.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        0
    }
}

/// Whether the open file whose metadata is `open` still is the file at `path`: same device
/// and inode, and not deleted. On other platforms only the path's existence is checked.
fn is_file_at(open: &fs::Metadata, path: &Path) -> bool {
    let Ok(at_path) = stat_path(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        open.dev() == at_path.dev() && open.ino() == at_path.ino() && open.nlink() > 0
    }
    #[cfg(not(unix))]
    {
        let _ = (open, at_path);
        true
    }
}

/// Appends `bytes` to the log file `f` under its [`AppendLock`], if `check` accepts the
/// file's metadata (read under the lock; false: nothing is written), after telling `before`
/// the offset they will start at and that metadata; a failed append is cut back (Mars cuts
/// the file back to where it was, then notes the error in the file). True when appended.
/// `limit` (tests only, else `None`): an append longer than that fails after writing that
/// many bytes.
fn append_locked(
    f: &File,
    bytes: &[u8],
    limit: Option<usize>,
    check: impl FnOnce(&fs::Metadata) -> bool,
    before: impl FnOnce(u64, &fs::Metadata),
) -> io::Result<bool> {
    let _lock = AppendLock::take(f);
    let meta = stat_file(f)?;
    if !check(&meta) {
        return Ok(false);
    }
    let offset = meta.len();
    before(offset, &meta);
    let mut w = f;
    let res = match limit.filter(|&n| bytes.len() > n) {
        Some(n) => w.write_all(&bytes[..n]).and_then(|()| {
            Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "test hook: no room left",
            ))
        }),
        None => w.write_all(bytes),
    };
    if let Err(e) = res {
        let _ = f.set_len(offset);
        return Err(e);
    }
    Ok(true)
}

/// `fstat` of an open log file (counted in tests, see `STATS`).
fn stat_file(f: &File) -> io::Result<fs::Metadata> {
    #[cfg(test)]
    STATS.with(|c| c.set(c.get() + 1));
    f.metadata()
}

/// `stat` of a log file's path (counted in tests, see `STATS`).
fn stat_path(path: &Path) -> io::Result<fs::Metadata> {
    #[cfg(test)]
    STATS.with(|c| c.set(c.get() + 1));
    fs::metadata(path)
}

#[cfg(test)]
thread_local! {
    /// The stats an append made on this thread (tests of its system calls).
    pub(crate) static STATS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Whether `a` and `b` name the same directory (compared after resolving `.`, `..` and
/// symlinks; as written when either cannot be resolved).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Moves `src` (a cache-dir file) to the end of `dst` (the log dir's file of that name):
/// appends what of it `dst` does not hold yet, then removes it. On a short append `dst` is
/// cut back and `src` stays.
///
/// Design: a crash between the append and the removal used to leave `src` to be appended a
/// second time by the next move, duplicating a day of logs. Before appending, a *move note*
/// (`<src>.moving`, see [`MoveNote`]) records where in `dst` the bytes of `src` begin, and it
/// is removed after `src`. The next move of a file with a note finds what it says `dst`
/// holds already (all of `src` at the time, or the part a short write left; `src` may have
/// grown since, when a restarted writer appended to it) and appends only the rest. Where `dst`
/// does not hold those bytes (it was replaced or cut meanwhile), all of `src` is appended:
/// a possible duplicate, never a loss.
fn move_file(src: &Path, dst: &Path) -> io::Result<()> {
    let note = append_noted(src, dst)?;
    fs::remove_file(src)?;
    let _ = fs::remove_file(note);
    Ok(())
}

/// The first part of [`move_file`]: what of `src` `dst` does not hold yet is appended to it,
/// under a move note; returns the note's path. (A crash after it leaves `src` and the note.)
///
/// Design: the bytes go across in pieces ([`COPY_PIECE`]), and `dst` is opened before `src`
/// is read: a cache file holds up to a day of logs, and reading it whole put all of it in
/// memory, again at every block while the log dir refused the move.
fn append_noted(src: &Path, dst: &Path) -> io::Result<PathBuf> {
    // Appending a file to itself and removing it would lose it.
    if fs::canonicalize(dst).is_ok_and(|d| fs::canonicalize(src).is_ok_and(|s| s == d)) {
        return Err(io::Error::other("appending a file to itself"));
    }
    let note_path = MoveNote::path_for(src);
    // Read too: a note's bytes are looked for in it.
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(dst)?;
    let _lock = AppendLock::take(&f);
    let meta = f.metadata()?;
    let before = meta.len();
    let data = File::open(src)?;
    let len = data.metadata()?.len();
    let done = MoveNote::read(&note_path).map_or(0, |note| note.moved(&f, &meta, &data, len));
    if done < len {
        let note = MoveNote {
            offset: before,
            from: done,
            len,
            file_id: file_id(&meta),
        };
        note.write(&note_path)?;
        if let Err(e) = append_part(&data, done..len, &f) {
            let _ = f.set_len(before);
            return Err(e);
        }
    }
    Ok(note_path)
}

/// The most of a file a move compares in memory at once.
const COPY_PIECE: usize = 64 * 1024;

/// Appends the bytes `range` of `src` to `dst` (`io::copy`: a small buffer at a time); an
/// error when `src` ends before the range does.
fn append_part(mut src: &File, range: std::ops::Range<u64>, mut dst: &File) -> io::Result<()> {
    src.seek(SeekFrom::Start(range.start))?;
    let want = range.end - range.start;
    if io::copy(&mut src.take(want), &mut dst)? < want {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Whether the bytes of `a` from `at_a` and of `b` from `at_b`, `len` of them, are the same
/// (read a piece at a time); false when either cannot be read that far.
fn same_bytes(mut a: &File, at_a: u64, mut b: &File, at_b: u64, len: u64) -> bool {
    let mut pa = vec![0; COPY_PIECE.min(usize::try_from(len).unwrap_or(COPY_PIECE))];
    let mut pb = pa.clone();
    let mut done = 0;
    while done < len {
        let n = pa
            .len()
            .min(usize::try_from(len - done).unwrap_or(pa.len()));
        let read = a.seek(SeekFrom::Start(at_a + done)).is_ok()
            && a.read_exact(&mut pa[..n]).is_ok()
            && b.seek(SeekFrom::Start(at_b + done)).is_ok()
            && b.read_exact(&mut pb[..n]).is_ok();
        if !read || pa[..n] != pb[..n] {
            return false;
        }
        done += n as u64;
    }
    true
}

/// What a move of a cache file into the log dir is about to do ([`move_file`]): the bytes
/// `from..len` of the cache file go to the log file of inode `file_id` from `offset` on (its
/// first `from` bytes are there already, moved by a move that a crash cut short).
///
/// Stored beside the cache file as one line of text ending in a CRC-32 of the rest, so a note
/// torn by a crash while it was written is not believed (the append had not begun then).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MoveNote {
    offset: u64,
    from: u64,
    len: u64,
    file_id: u64,
}

impl MoveNote {
    /// Added to the cache file's name for its move's note.
    const SUFFIX: &'static str = ".moving";
    /// Added to the note's name while a new note is written aside.
    const ASIDE: &'static str = ".new";

    /// The name of the log file whose note (or note written aside) is named `name`.
    fn log_of(name: &str) -> Option<&str> {
        let note = name.strip_suffix(Self::ASIDE).unwrap_or(name);
        note.strip_suffix(Self::SUFFIX)
    }

    /// Where the note of a move of `src` is kept.
    fn path_for(src: &Path) -> PathBuf {
        let mut name = src.file_name().unwrap_or_default().to_owned();
        name.push(MoveNote::SUFFIX);
        src.with_file_name(name)
    }

    fn encode(&self) -> String {
        let body = format!(
            "phobos-xlog-move 1 offset={} from={} len={} file={}",
            self.offset, self.from, self.len, self.file_id
        );
        let check = crc32(body.as_bytes());
        format!("{body} check={check:08x}\n")
    }

    fn decode(text: &str) -> Option<MoveNote> {
        let (body, check) = text.trim_end().rsplit_once(" check=")?;
        if u32::from_str_radix(check, 16).ok()? != crc32(body.as_bytes()) {
            return None;
        }
        let mut fields = body.strip_prefix("phobos-xlog-move 1 ")?.split(' ');
        let mut field = |key: &str| -> Option<u64> {
            fields
                .next()?
                .strip_prefix(key)?
                .strip_prefix('=')?
                .parse()
                .ok()
        };
        Some(MoveNote {
            offset: field("offset")?,
            from: field("from")?,
            len: field("len")?,
            file_id: field("file")?,
        })
    }

    /// Writes the note at `path`, replacing any note there in one step (written aside, then
    /// renamed over it): a crash while a note is rewritten (a move carrying on after an
    /// earlier crash) leaves the old note or the new one, never neither.
    fn write(&self, path: &Path) -> io::Result<()> {
        let mut aside = path.as_os_str().to_owned();
        aside.push(MoveNote::ASIDE);
        let aside = PathBuf::from(aside);
        fs::write(&aside, self.encode())?;
        fs::rename(&aside, path)
    }

    /// The note at `path`, if there is one that reads whole.
    fn read(path: &Path) -> Option<MoveNote> {
        MoveNote::decode(&fs::read_to_string(path).ok()?)
    }

    /// How many leading bytes of `data` (the cache file now, `len` bytes) the log file `f`
    /// (metadata `meta`) already holds from this note's move: the bytes moved before it,
    /// and the part of its own found at its offset as they are in `data`; 0 when they are
    /// not found there (another file, cut, changed).
    fn moved(&self, f: &File, meta: &fs::Metadata, data: &File, len: u64) -> u64 {
        if self.from > self.len || self.len > len || self.offset > meta.len() {
            return 0;
        }
        if self.file_id != 0 && file_id(meta) != self.file_id {
            return 0;
        }
        // A short write may have left only the first part, with nothing after it. (A short
        // write followed by other bytes is not told apart from other bytes alone: nothing
        // of this note's part counts as moved then, and it goes again.)
        let have = (meta.len() - self.offset).min(self.len - self.from);
        if same_bytes(f, self.offset, data, self.from, have) {
            self.from + have
        } else {
            0
        }
    }
}

/// CRC-32 (IEEE) of `bytes`, as recorded in a write intent.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(bytes);
    c.sum()
}

/// Mars's clock-jump tip (§5.3, `__OpenLogFile`) for a pick at `now`/`tick` after the one at
/// `then`/`then_tick` of file `last`, or `None` when the wall clock went forward by no more
/// than the monotonic time elapsed (whole seconds, as Mars divides its milliseconds) plus
/// 300 s.
fn clock_jump_tip(
    last: &Path,
    then: WallTime,
    then_tick: Instant,
    now: WallTime,
    tick: Instant,
) -> Option<String> {
    let time_diff = now.unix_secs.saturating_sub(then.unix_secs);
    let tick_diff = tick.saturating_duration_since(then_tick);
    let allowed = i64::try_from(tick_diff.as_secs())
        .unwrap_or(i64::MAX)
        .saturating_add(CLOCK_JUMP_SLACK_SECS);
    if time_diff <= allowed {
        return None;
    }
    Some(format!(
        "[F][ last log file:{} from {} to {}, time_diff:{time_diff}, tick_diff:{}\n",
        last.display(),
        mark_time(then),
        mark_time(now),
        tick_diff.as_millis()
    ))
}

/// How far the wall clock may run ahead of the monotonic clock between two blocks before the
/// clock-jump tip is written (Mars's 300 s).
const CLOCK_JUMP_SLACK_SECS: i64 = 300;

#[cfg(test)]
mod tests {
    use super::*;

    fn t(day: i64) -> WallTime {
        WallTime::new(1_710_000_000 + day * 86_400, 0, 0)
    }

    #[test]
    fn splits_before_the_limit_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = LogFiles::new(dir.path().into(), None, "p".into(), 100, 0);
        for _ in 0..5 {
            f.append(t(0), &[1u8; 40], true, |_| {}).unwrap();
        }
        let ymd = t(0).local().ymd_compact();
        let size = |n: &str| fs::metadata(dir.path().join(n)).unwrap().len();
        assert_eq!(size(&format!("p_{ymd}.xlog")), 80);
        assert_eq!(size(&format!("p_{ymd}_1.xlog")), 80);
        assert_eq!(size(&format!("p_{ymd}_2.xlog")), 40);
        // A new writer continues at the highest index.
        let mut g = LogFiles::new(dir.path().into(), None, "p".into(), 100, 0);
        let (tg, _) = g.target(t(0), Instant::now(), 40);
        assert_eq!(tg.name, format!("p_{ymd}_2.xlog"));
        // The next day starts again at index 0.
        assert_eq!(
            g.target(t(1), Instant::now(), 40).0.name,
            format!("p_{}.xlog", t(1).local().ymd_compact())
        );
    }

    /// Mars's clock sanity (§5.3): a wall clock that went forward, since the last block, by more
    /// than the monotonic time elapsed plus 300 s gets a tip block before the next block, in
    /// the file that block goes to. (Only a clock set back was handled.)
    #[test]
    fn a_clock_jump_forward_is_noted_in_a_tip_before_the_block() {
        let dir = tempfile::tempdir().unwrap();
        let mut f =
            LogFiles::new(dir.path().into(), None, "p".into(), 0, 0).with_tips(0x08, [0; 64]);
        // 2024-03-10 00:00:00 in +8.
        let wall = |secs: i64| WallTime::new(1_710_000_000 + secs, 0, 8 * 3600);
        let start = Instant::now();
        let tick = |secs: u64| start + Duration::from_secs(secs);
        let steps: [(i64, u64); 6] = [
            (0, 0),
            // Wall ahead of monotonic by 300 s: no tip.
            (1000, 700),
            // 301 s: a tip.
            (1301, 700),
            // Set back: the file in use is kept, no tip.
            (1200, 710),
            // The next day, 86 400 s on the wall clock in 20 s: a tip, in the new day's file.
            (1301 + 86_400, 720),
            (1302 + 86_400, 721),
        ];
        for (i, (w, t)) in steps.into_iter().enumerate() {
            let mut block = Vec::new();
            let text = format!("block {i}\n");
            emit_block(&mut block, 0x08, 0, 0, &[0; 64], text.as_bytes());
            f.append_at(wall(w), tick(t), &block, false, |_| {})
                .unwrap();
        }
        let text = |name: &str| {
            let bytes = fs::read(dir.path().join(name)).unwrap();
            let mut out = String::new();
            let mut off = 0;
            while off < bytes.len() {
                let v = crate::block::BlockView::parse(&bytes[off..]).unwrap();
                out.push_str(std::str::from_utf8(v.body).unwrap());
                off += v.total_len();
            }
            out
        };
        let first = dir.path().join("p_20240310.xlog");
        assert_eq!(
            text("p_20240310.xlog"),
            format!(
                "block 0\nblock 1\n[F][ last log file:{} from 2024-03-10 +0800 00:16:40 to \
                 2024-03-10 +0800 00:21:41, time_diff:301, tick_diff:0\nblock 2\nblock 3\n",
                first.display()
            )
        );
        assert_eq!(
            text("p_20240311.xlog"),
            format!(
                "[F][ last log file:{} from 2024-03-10 +0800 00:21:41 to 2024-03-11 +0800 \
                 00:21:41, time_diff:86400, tick_diff:20000\nblock 4\nblock 5\n",
                first.display()
            )
        );
    }

    /// The clock-jump tip goes into the file of the block after it, and the size limit counts
    /// it: a block that fits but not with the tip starts the next file.
    #[test]
    fn a_clock_jump_tip_counts_towards_the_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut f =
            LogFiles::new(dir.path().into(), None, "p".into(), 400, 0).with_tips(0x08, [0; 64]);
        let tick = Instant::now();
        let mut block = Vec::new();
        emit_block(&mut block, 0x08, 0, 0, &[0; 64], &[b'x'; 26]);
        assert_eq!(block.len(), 100);
        f.append_at(t(0), tick, &block, false, |_| {}).unwrap();
        let later = WallTime::new(t(0).unix_secs + 1000, 0, 0);
        f.append_at(later, tick, &block, false, |_| {}).unwrap();
        let ymd = t(0).local().ymd_compact();
        let size = |n: &str| fs::metadata(dir.path().join(n)).unwrap().len();
        assert_eq!(size(&format!("p_{ymd}.xlog")), 100);
        let second = size(&format!("p_{ymd}_1.xlog"));
        // The tip (about 210 bytes with a short temporary path) and the block.
        assert!(second > 200 && second <= 400, "{second}");
    }

    /// Two writers sharing a day's file: each one's block is appended, and its intent
    /// recorded, under the file's lock, so the other's block cannot land between the offset
    /// noted and the bytes written. Both blocks are found where their intents say.
    #[test]
    fn two_writers_append_to_a_shared_file_under_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = LogFiles::new(dir.path().into(), None, "p".into(), 0, 0);
        let mut b = LogFiles::new(dir.path().into(), None, "p".into(), 0, 0);
        let path = dir
            .path()
            .join(format!("p_{}.xlog", t(0).local().ymd_compact()));
        a.append(t(0), b"head|", true, |_| {}).unwrap();
        let (mut ia, mut ib, mut locked) = (None, None, false);
        let (go, go_rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            let (b, ib) = (&mut b, &mut ib);
            let writer_b = scope.spawn(move || {
                go_rx.recv().unwrap();
                b.append(t(0), b"block-b|", true, |i| *ib = Some(i.clone()))
                    .unwrap();
            });
            a.append(t(0), b"block-a|", true, |i| {
                locked = AppendLock::held_elsewhere(&path);
                ia = Some(i.clone());
                // The other writer starts its append now: it waits for the lock.
                go.send(()).unwrap();
            })
            .unwrap();
            writer_b.join().unwrap();
        });
        assert!(locked, "the lock was held while the intent was recorded");
        assert_eq!(fs::read(&path).unwrap(), b"head|block-a|block-b|");
        let (ia, ib) = (ia.unwrap(), ib.unwrap());
        assert_eq!((ia.offset, ib.offset), (5, 13));
        let mut c = LogFiles::new(dir.path().into(), None, "p".into(), 0, 0);
        assert!(c.settle_intent(&ia, b"block-a|"));
        assert!(c.settle_intent(&ib, b"block-b|"));
    }

    /// Log files in a new directory with `head` appended, then `BLOCK` with its intent: the
    /// directory (kept alive), the files, `BLOCK`'s target and its intent.
    fn block_after_head() -> (tempfile::TempDir, LogFiles, Target, Intent) {
        let dir = tempfile::tempdir().unwrap();
        let mut f = LogFiles::new(dir.path().into(), None, "p".into(), 0, 0);
        f.append(t(0), b"head", true, |_| {}).unwrap();
        let mut intent = None;
        let tg = f
            .append(t(0), b"BLOCK", true, |i| intent = Some(i.clone()))
            .unwrap();
        (dir, f, tg, intent.unwrap())
    }

    #[test]
    fn a_block_that_goes_to_the_cache_dir_has_its_intent_recorded_for_the_cache_file() {
        let dir = tempfile::tempdir().unwrap();
        let (logs, cache) = (dir.path().join("logs"), dir.path().join("cache"));
        let mut f = LogFiles::new(logs.clone(), Some(cache.clone()), "p".into(), 0, 0);
        // The log dir cannot take the day's file (a directory stands in for a full disk).
        let name = f.target(t(0), Instant::now(), 5).0.name;
        fs::create_dir_all(logs.join(&name)).unwrap();
        assert!(
            !f.target(t(0), Instant::now(), 5).0.in_cache,
            "the log dir is chosen first"
        );
        let mut intents = Vec::new();
        let tg = f
            .append(t(0), b"BLOCK", true, |i| intents.push(i.clone()))
            .unwrap();
        assert!(tg.in_cache);
        assert_eq!(fs::read(&tg.path).unwrap(), b"BLOCK");
        // The last intent names where the block went: after a crash it is found there, not
        // appended again.
        let last = intents.last().expect("an intent for the cache file");
        assert!(last.in_cache);
        assert_eq!(last.offset, 0);
        assert!(f.settle_intent(last, b"BLOCK"));
    }

    #[test]
    fn settle_intent_detects_written_and_partial_blocks() {
        let (_dir, mut f, tg, intent) = block_after_head();
        assert_eq!(intent.offset, 4);
        assert!(f.settle_intent(&intent, b"BLOCK"));
        // Simulate a partial append.
        fs::write(&tg.path, b"headBLO").unwrap();
        assert!(!f.settle_intent(&intent, b"BLOCK"));
        assert_eq!(fs::read(&tg.path).unwrap(), b"head");
    }

    #[test]
    fn settle_intent_never_truncates_on_an_implausible_intent() {
        let (_dir, mut f, tg, intent) = block_after_head();
        fs::write(&tg.path, b"headBLO").unwrap();
        let bogus = [
            // Longer than the staged block.
            Intent {
                written: Some((u32::MAX, 0)),
                ..intent.clone()
            },
            // Past the end of the file.
            Intent {
                offset: 100,
                ..intent.clone()
            },
            // Recorded for another file.
            Intent {
                file_id: intent.file_id ^ 1,
                ..intent.clone()
            },
        ];
        for i in &bogus {
            assert!(!f.settle_intent(i, b"BLOCK"), "{i:?}");
            assert_eq!(fs::read(&tg.path).unwrap(), b"headBLO", "{i:?}");
        }
    }

    #[test]
    fn deletes_only_old_logs_and_day_folders() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(20 * 86_400);
        fs::create_dir(dir.path().join("20240101")).unwrap();
        fs::create_dir(dir.path().join("20240102")).unwrap();
        // Old: this prefix's log (deleted), another prefix's log and a text file (kept).
        for n in ["p_20240101.xlog", "a.xlog", "b.txt"] {
            fs::write(dir.path().join(n), b"x").unwrap();
        }
        for n in ["p_20240101.xlog", "a.xlog", "b.txt", "20240101"] {
            File::open(dir.path().join(n))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        fs::write(dir.path().join("p_20240301.xlog"), b"x").unwrap();
        let now_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut f = LogFiles::new(dir.path().into(), None, "p".into(), 0, 0);
        let removed = f.delete_expired(
            WallTime::new(now_secs, 0, 0),
            Duration::from_secs(10 * 86_400),
        );
        assert_eq!(removed, 2);
        assert!(!dir.path().join("p_20240101.xlog").exists());
        assert!(!dir.path().join("20240101").exists());
        assert!(dir.path().join("20240102").exists());
        assert!(dir.path().join("a.xlog").exists());
        assert!(dir.path().join("b.txt").exists());
        assert!(dir.path().join("p_20240301.xlog").exists());
    }

    #[test]
    fn own_log_names_are_the_prefix_a_date_and_an_optional_index() {
        let f = LogFiles::new(".".into(), None, "app".into(), 0, 0);
        for n in [
            "app_20240101.xlog",
            "app_20240101_1.xlog",
            "app_20240101_12.xlog",
        ] {
            assert!(f.is_own_log(n), "{n}");
        }
        for n in [
            "app_2024010.xlog",
            "app_20240101_.xlog",
            "app_20240101_x.xlog",
            "app_20240101.xlog.bak",
            "app2_20240101.xlog",
            "app_x_20240101.xlog",
            "app_20240101",
            "other_20240101.xlog",
        ] {
            assert!(!f.is_own_log(n), "{n}");
        }
    }

    #[test]
    fn existing_cache_file_is_used_and_then_moved() {
        let log = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let mut f = LogFiles::new(
            log.path().into(),
            Some(cache.path().into()),
            "p".into(),
            0,
            0,
        );
        let name = f.file_name(&t(0).local().ymd_compact(), 0);
        fs::write(cache.path().join(&name), b"cached-").unwrap();
        let mut intent = None;
        let tg = f
            .append(t(0), b"new", true, |i| intent = Some(i.clone()))
            .unwrap();
        assert!(tg.in_cache);
        // Until the writer has cleared the block's slot, the block stays where its intent
        // says: a crash now finds it there and does not append it again.
        let intent = intent.unwrap();
        let mut after_crash = LogFiles::new(
            log.path().into(),
            Some(cache.path().into()),
            "p".into(),
            0,
            0,
        );
        assert!(
            after_crash.settle_intent(&intent, b"new"),
            "found where it went"
        );
        f.finish_move();
        assert!(!cache.path().join(&name).exists());
        assert_eq!(fs::read(log.path().join(&name)).unwrap(), b"cached-new");
    }

    /// Log files of prefix `p` in `log`, caching for 3 days in `cache`.
    fn caching_files(log: &Path, cache: &Path) -> LogFiles {
        LogFiles::new(log.into(), Some(cache.into()), "p".into(), 0, 3)
    }

    /// The system clock, in seconds since the epoch.
    fn unix_now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn old_cache_files_move_to_the_log_dir() {
        let log = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        fs::write(cache.path().join("p_20240101.xlog"), b"x").unwrap();
        fs::write(cache.path().join("other.xlog"), b"x").unwrap();
        let mut f = caching_files(log.path(), cache.path());
        let now_secs = unix_now();
        assert_eq!(
            f.move_old_cache_files(WallTime::new(now_secs, 0, 0)),
            0,
            "too new"
        );
        assert_eq!(
            f.move_old_cache_files(WallTime::new(now_secs + 4 * 86_400, 0, 0)),
            1
        );
        assert!(log.path().join("p_20240101.xlog").exists());
        assert!(cache.path().join("other.xlog").exists());
    }
    /// A cache file `A` (`cached`) and the log dir's file of that name holding `head`, both
    /// in new directories (kept alive): the paths of the two files.
    fn a_move(head: &[u8], cached: &[u8]) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("c.xlog"), dir.path().join("l.xlog"));
        fs::write(&src, cached).unwrap();
        fs::write(&dst, head).unwrap();
        (dir, src, dst)
    }

    /// A crash right after a move's append (before the cache file was removed): the next
    /// move appends nothing a second time, and cleans up.
    #[test]
    fn a_move_cut_short_by_a_crash_after_the_append_is_not_appended_again() {
        let (_dir, src, dst) = a_move(b"head|", b"block-a|block-b|");
        let note = append_noted(&src, &dst).unwrap();
        assert!(note.exists() && src.exists());
        move_file(&src, &dst).unwrap();
        assert_eq!(fs::read(&dst).unwrap(), b"head|block-a|block-b|");
        assert!(!src.exists() && !note.exists());
    }

    /// After the crash a restarted writer appends to the cache file (it still exists): the
    /// next move appends only what is new.
    #[test]
    fn after_a_crashed_move_only_what_the_cache_file_got_since_is_appended() {
        let (_dir, src, dst) = a_move(b"head|", b"block-a|");
        append_noted(&src, &dst).unwrap();
        OpenOptions::new()
            .append(true)
            .open(&src)
            .unwrap()
            .write_all(b"block-b|")
            .unwrap();
        move_file(&src, &dst).unwrap();
        assert_eq!(fs::read(&dst).unwrap(), b"head|block-a|block-b|");
    }

    /// A crash in the middle of the append (part of the bytes written): the move carries on
    /// where it stopped.
    #[test]
    fn a_move_cut_short_in_the_middle_of_the_append_carries_on_where_it_stopped() {
        let (_dir, src, dst) = a_move(b"head|", b"block-a|block-b|");
        append_noted(&src, &dst).unwrap();
        let f = OpenOptions::new().write(true).open(&dst).unwrap();
        f.set_len(b"head|block-a".len() as u64).unwrap();
        move_file(&src, &dst).unwrap();
        assert_eq!(fs::read(&dst).unwrap(), b"head|block-a|block-b|");
    }

    /// A cache file of several pieces (the move holds one piece in memory at a time), cut
    /// short in the middle of a piece and then moved again: every byte lands once, in order.
    #[test]
    fn a_cache_file_of_many_pieces_moves_whole_after_a_cut() {
        let body: Vec<u8> = (0..(3 * COPY_PIECE + 1234) as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let (_dir, src, dst) = a_move(b"head|", &body);
        append_noted(&src, &dst).unwrap();
        let mut want = b"head|".to_vec();
        want.extend_from_slice(&body);
        assert_eq!(fs::read(&dst).unwrap(), want);
        let f = OpenOptions::new().write(true).open(&dst).unwrap();
        f.set_len((5 + COPY_PIECE + COPY_PIECE / 3) as u64).unwrap();
        move_file(&src, &dst).unwrap();
        assert_eq!(fs::read(&dst).unwrap(), want);
        assert!(!src.exists());
    }

    /// Two crashed moves in a row, the cache file and the log file both getting more bytes
    /// between them: the third move still appends each byte of the cache file once.
    #[test]
    fn two_crashed_moves_in_a_row_still_move_each_byte_once() {
        let (_dir, src, dst) = a_move(b"head|", b"block-a|");
        // The first move crashed after its append.
        append_noted(&src, &dst).unwrap();
        // Then the cache file got a block, and the log file other bytes.
        let append = |path: &Path, bytes: &[u8]| {
            let mut f = OpenOptions::new().append(true).open(path).unwrap();
            f.write_all(bytes).unwrap();
        };
        append(&src, b"block-b|");
        append(&dst, b"other|");
        // The second move crashed after its append too.
        append_noted(&src, &dst).unwrap();
        assert_eq!(fs::read(&dst).unwrap(), b"head|block-a|other|block-b|");
        move_file(&src, &dst).unwrap();
        assert_eq!(fs::read(&dst).unwrap(), b"head|block-a|other|block-b|");
        assert!(!src.exists() && !MoveNote::path_for(&src).exists());
    }

    /// When the log file no longer holds what the note says (replaced by another file, or
    /// its bytes there differ), the whole cache file is appended: nothing is lost.
    #[test]
    fn a_note_the_log_file_does_not_bear_out_appends_the_whole_cache_file() {
        let (_dir, src, dst) = a_move(b"head|", b"block-a|");
        append_noted(&src, &dst).unwrap();
        // Replaced by another file (another inode), even one with the same bytes: they may
        // not be the ones the move wrote.
        let other = dst.with_file_name("other");
        fs::write(&other, b"head|block-a|").unwrap();
        fs::rename(&other, &dst).unwrap();
        move_file(&src, &dst).unwrap();
        assert_eq!(fs::read(&dst).unwrap(), b"head|block-a|block-a|");

        // Same file, but the bytes at the note's offset are not the cache file's.
        let (_dir, src, dst) = a_move(b"head|", b"block-a|");
        append_noted(&src, &dst).unwrap();
        let mut f = OpenOptions::new().write(true).open(&dst).unwrap();
        f.seek(SeekFrom::Start(5)).unwrap();
        f.write_all(b"BLOCK").unwrap();
        move_file(&src, &dst).unwrap();
        assert_eq!(fs::read(&dst).unwrap(), b"head|BLOCK-a|block-a|");
    }

    /// A note torn by a crash while it was written (the append had not begun) is not
    /// believed, and neither is a note whose numbers were changed.
    #[test]
    fn a_torn_or_altered_move_note_is_not_believed() {
        let note = MoveNote {
            offset: 5,
            from: 2,
            len: 8,
            file_id: 77,
        };
        let text = note.encode();
        assert_eq!(MoveNote::decode(&text), Some(note));
        for cut in 0..text.len() - 1 {
            assert_eq!(MoveNote::decode(&text[..cut]), None, "{:?}", &text[..cut]);
        }
        assert_eq!(MoveNote::decode(&text.replace("len=8", "len=9")), None);

        let (_dir, src, dst) = a_move(b"head|", b"block-a|");
        // As if the crash came while the note was being written, before the append.
        fs::write(MoveNote::path_for(&src), &text[..text.len() / 2]).unwrap();
        move_file(&src, &dst).unwrap();
        assert_eq!(fs::read(&dst).unwrap(), b"head|block-a|");
    }

    /// The cache file moved by a background write and by the housekeeping move both go
    /// through the note: a note left by a crash is honoured by `move_old_cache_files`, and
    /// an old note with no cache file left is deleted with the old logs.
    #[test]
    fn old_cache_files_move_once_after_a_crash_and_old_notes_are_deleted() {
        let log = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let name = "p_20240101.xlog";
        let (src, dst) = (cache.path().join(name), log.path().join(name));
        fs::write(&src, b"block-a|").unwrap();
        fs::write(&dst, b"head|").unwrap();
        append_noted(&src, &dst).unwrap();
        let mut f = caching_files(log.path(), cache.path());
        let now_secs = unix_now();
        let later = WallTime::new(now_secs + 4 * 86_400, 0, 0);
        assert_eq!(f.move_old_cache_files(later), 1);
        assert_eq!(fs::read(&dst).unwrap(), b"head|block-a|");
        assert!(!MoveNote::path_for(&src).exists());

        // A note whose cache file is gone (a crash between the two removals).
        let orphan = cache.path().join("p_20240102.xlog.moving");
        fs::write(&orphan, b"x").unwrap();
        let aside = cache.path().join("p_20240102.xlog.moving.new");
        fs::write(&aside, b"x").unwrap();
        let other = cache.path().join("q_20240102.xlog.moving");
        fs::write(&other, b"x").unwrap();
        let much_later = WallTime::new(now_secs + 40 * 86_400, 0, 0);
        f.delete_expired(much_later, Duration::from_secs(86_400));
        assert!(!orphan.exists(), "this prefix's old note is deleted");
        assert!(!aside.exists(), "and one written aside");
        assert!(other.exists(), "another prefix's is left alone");
    }
}
