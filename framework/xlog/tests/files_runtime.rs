//! The writer's runtime rules for files (format doc §5.3–§5.5): which file a block goes to
//! as the date and the clock change, what housekeeping may touch, and what happens when the
//! directories are not what they were. Time comes from a clock the test sets; nothing sleeps.

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use phobos_xlog::{Clock, Level, WallTime, Xlog, XlogConfig, XlogGuard};
use phobos_xlog_decode::{Decoder, StartRule};

/// A clock the test moves by hand.
#[derive(Debug)]
struct HandClock(Mutex<WallTime>);

impl HandClock {
    /// Starts at `unix_secs` with the local offset `offset_secs`.
    fn at(unix_secs: i64, offset_secs: i32) -> Arc<HandClock> {
        Arc::new(HandClock(Mutex::new(WallTime::new(
            unix_secs,
            0,
            offset_secs,
        ))))
    }

    fn set(&self, unix_secs: i64) {
        let mut t = self.0.lock().unwrap();
        *t = WallTime::new(unix_secs, 0, t.utc_offset_secs);
    }
}

impl Clock for HandClock {
    fn now(&self) -> WallTime {
        *self.0.lock().unwrap()
    }
}

/// 2024-03-14 00:00:00 UTC.
const MAR_14_UTC: i64 = 1_710_374_400;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

fn logger(dir: &Path, prefix: &str, clock: &Arc<HandClock>) -> XlogGuard {
    Xlog::builder()
        .log_dir(dir)
        .name_prefix(prefix)
        .banners(false)
        .clock(clock.clone())
        .build()
        .unwrap()
}

/// Logs `line` and flushes it: a block of its own, written at the clock's time.
fn block(g: &XlogGuard, line: &[u8]) {
    g.log_message(Level::Info, "t", line);
    g.flush().unwrap();
}

/// The text of one log file (a file of a single block decodes too).
fn text_of_file(path: &Path) -> String {
    let d = Decoder::builder()
        .start_rule(StartRule::OneGoodBlock)
        .build();
    String::from_utf8(d.decode(&fs::read(path).unwrap())).unwrap()
}

/// The names of the `.xlog` files in `dir`, sorted.
fn xlog_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".xlog"))
        .collect();
    v.sort();
    v
}

/// The text of every `.xlog` file in `dir`, in name order.
fn text_of_dir(dir: &Path) -> String {
    xlog_names(dir)
        .iter()
        .map(|n| text_of_file(&dir.join(n)))
        .collect()
}

fn set_mtime(path: &Path, unix_secs: i64) {
    let t = UNIX_EPOCH + Duration::from_secs(unix_secs as u64);
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[test]
fn files_change_at_local_midnight_not_utc_midnight() {
    // Local midnight of the 15th: 16:00 UTC on the 14th at +8:00, 05:00 UTC on the 15th at -5:00.
    for (offset, local_midnight) in [
        (8 * HOUR, MAR_14_UTC + 16 * HOUR),
        (-5 * HOUR, MAR_14_UTC + 29 * HOUR),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = HandClock::at(local_midnight - 1, offset as i32);
        let g = logger(dir.path(), "mid", &clock);
        block(&g, b"last second of the day");
        clock.set(local_midnight);
        block(&g, b"first second of the next");
        drop(g);
        let (before, after) = ("mid_20240314.xlog", "mid_20240315.xlog");
        assert_eq!(xlog_names(dir.path()), [before, after], "offset {offset}");
        assert!(text_of_file(&dir.path().join(before)).contains("last second of the day"));
        assert!(text_of_file(&dir.path().join(after)).contains("first second of the next"));
    }
}

#[test]
fn a_block_goes_to_the_file_of_the_day_it_is_written() {
    // Mars names the file by the time of the write, not of the lines (§5.3).
    let dir = tempfile::tempdir().unwrap();
    let midnight = MAR_14_UTC + 16 * HOUR;
    let clock = HandClock::at(midnight - 1, 8 * HOUR as i32);
    let g = logger(dir.path(), "fl", &clock);
    g.log_message(Level::Info, "t", b"logged before midnight");
    clock.set(midnight + 1);
    g.flush().unwrap();
    drop(g);
    assert_eq!(xlog_names(dir.path()), ["fl_20240315.xlog"]);
    assert!(text_of_dir(dir.path()).contains("logged before midnight"));
}

#[test]
fn split_files_continue_at_the_highest_index_of_the_day() {
    let dir = tempfile::tempdir().unwrap();
    let clock = HandClock::at(MAR_14_UTC + 2 * HOUR, 8 * HOUR as i32);
    // A previous run left _3 (small) and nothing in between.
    fs::write(dir.path().join("ix_20240314_3.xlog"), b"").unwrap();
    let g = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("ix")
        .banners(false)
        .max_file_size(100_000)
        .clock(clock.clone())
        .build()
        .unwrap();
    g.log_message(Level::Info, "t", b"continues at 3");
    drop(g);
    assert_eq!(xlog_names(dir.path()), ["ix_20240314_3.xlog"]);
    assert!(text_of_dir(dir.path()).contains("continues at 3"));
}

#[test]
fn many_threads_log_every_line_once_and_each_threads_lines_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let clock = HandClock::at(MAR_14_UTC + 2 * HOUR, 8 * HOUR as i32);
    let g = logger(dir.path(), "mt", &clock);
    const THREADS: usize = 8;
    const LINES: usize = 4000;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let x = g.xlog();
            s.spawn(move || {
                for i in 0..LINES {
                    x.log_message(
                        Level::Info,
                        "t",
                        format!("thread {t} line {i} {}", "p".repeat(i % 97)).as_bytes(),
                    );
                }
            });
        }
    });
    drop(g);
    let text = text_of_dir(dir.path());
    let mut next = [0usize; THREADS];
    for l in text.lines().filter(|l| l.starts_with("[I]")) {
        let msg = l.rsplit("][").next().unwrap();
        let mut w = msg.split(' ');
        let t: usize = w.nth(1).unwrap().parse().unwrap();
        let i: usize = w.nth(1).unwrap().parse().unwrap();
        assert_eq!(i, next[t], "thread {t} out of order");
        next[t] += 1;
    }
    assert_eq!(next, [LINES; THREADS]);
}

#[test]
fn a_very_long_message_is_cut_and_the_lines_around_it_survive() {
    let dir = tempfile::tempdir().unwrap();
    let clock = HandClock::at(MAR_14_UTC + 2 * HOUR, 8 * HOUR as i32);
    let g = logger(dir.path(), "long", &clock);
    g.log_message(Level::Info, "t", b"before");
    g.log_message(Level::Info, "t", &vec![b'L'; 5 << 20]);
    g.log_message(Level::Info, "t", b"after");
    drop(g);
    let text = text_of_dir(dir.path());
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("[I]")).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].ends_with("before") && lines[2].ends_with("after"));
    assert!(lines[1].len() < phobos_xlog::format::MAX_LINE_LEN);
}

#[test]
fn a_damaged_buffer_file_neither_stops_the_writer_nor_panics() {
    // A buffer whose header claims more bytes than the file holds, one of a few bytes, and
    // one of a foreign size full of noise.
    let mut huge_len = vec![0u8; 200];
    huge_len[0] = 0x09;
    huge_len[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
    let noise: Vec<u8> = (0..400_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for (what, bytes) in [
        ("huge length", huge_len),
        ("tiny", vec![0x09, 1, 0]),
        ("noise", noise),
    ] {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("dmg.mmap3"), &bytes).unwrap();
        let clock = HandClock::at(MAR_14_UTC + 2 * HOUR, 8 * HOUR as i32);
        let g = logger(dir.path(), "dmg", &clock);
        g.log_message(Level::Info, "t", b"fresh line");
        drop(g);
        assert!(text_of_dir(dir.path()).contains("fresh line"), "{what}");
        assert!(
            fs::read(dir.path().join("dmg.mmap3"))
                .unwrap()
                .iter()
                .all(|&b| b == 0),
            "{what}: a clean close leaves a zeroed buffer"
        );
    }
}

#[test]
fn a_buffer_file_whose_generations_are_near_the_top_neither_panics_nor_stalls_flushes() {
    // The staging file's slot metadata has no checksum: a crashed run's first slot claims a
    // generation at the top of the counter (counting on from it overflowed: a panic at
    // open or at the first line, and flushes returning before the write once it wrapped).
    const META_BASE: usize = 307_200;
    for gen in [u64::MAX, u64::MAX - 1, 1 << 60] {
        let clock = HandClock::at(MAR_14_UTC + 2 * HOUR, 8 * HOUR as i32);
        // What a crash leaves: the running logger's buffer file, as it is, in a folder of
        // its own (the running one keeps its lock).
        let running = tempfile::tempdir().unwrap();
        let g = logger(running.path(), "gen", &clock);
        g.log_message(Level::Info, "t", b"staged before the crash");
        let mut bytes = fs::read(running.path().join("gen.mmap3")).unwrap();
        bytes[META_BASE..META_BASE + 8].copy_from_slice(&gen.to_le_bytes());
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("gen.mmap3"), &bytes).unwrap();
        let g = logger(dir.path(), "gen", &clock);
        for i in 0..3 {
            g.log_message(Level::Info, "t", format!("after {i}").as_bytes());
            g.flush().unwrap();
            // Flushed means written: the line is in the log file now.
            assert!(
                text_of_dir(dir.path()).contains(&format!("after {i}\n")),
                "{gen}: line {i}"
            );
        }
        drop(g);
        let text = text_of_dir(dir.path());
        assert_eq!(
            text.matches("staged before the crash\n").count(),
            1,
            "{gen}: {text}"
        );
    }
}

#[test]
fn mtimes_in_the_future_are_not_expired() {
    let dir = tempfile::tempdir().unwrap();
    let now = MAR_14_UTC + 2 * HOUR;
    let clock = HandClock::at(now, 8 * HOUR as i32);
    let f = dir.path().join("fut_20240101.xlog");
    fs::write(&f, b"x").unwrap();
    set_mtime(&f, now + 365 * DAY);
    let g = logger(dir.path(), "fut", &clock);
    assert_eq!(g.run_housekeeping().0, 0);
    drop(g);
    assert!(f.exists());
}

#[test]
fn a_cache_dir_that_is_the_log_dir_loses_nothing() {
    for cache_days in [0, 3] {
        let dir = tempfile::tempdir().unwrap();
        let clock = HandClock::at(MAR_14_UTC + 2 * HOUR, 8 * HOUR as i32);
        let mut cfg = XlogConfig::default();
        cfg.log_dir = dir.path().into();
        // The same directory, spelt differently.
        cfg.cache_dir = Some(dir.path().join("."));
        cfg.name_prefix = "same".into();
        cfg.cache_days = cache_days;
        let g = Xlog::builder()
            .config(cfg)
            .banners(false)
            .clock(clock.clone())
            .build()
            .unwrap();
        for i in 0..3 {
            block(&g, format!("line {i}").as_bytes());
        }
        // Housekeeping as if days had passed.
        clock.set(MAR_14_UTC + 30 * DAY);
        g.run_housekeeping();
        clock.set(MAR_14_UTC + 2 * HOUR);
        g.log_message(Level::Info, "t", b"line 3");
        drop(g);
        let text = text_of_dir(dir.path());
        for i in 0..4 {
            let line = format!("][line {i}\n");
            assert_eq!(
                text.matches(&line).count(),
                1,
                "cache_days {cache_days}: {line:?} in:\n{text}"
            );
        }
    }
}

#[test]
fn a_foreign_file_with_the_largest_index_does_not_stop_logging() {
    let dir = tempfile::tempdir().unwrap();
    let clock = HandClock::at(MAR_14_UTC + 2 * HOUR, 8 * HOUR as i32);
    // A stray file (copied in by hand, another tool) with the largest index a name can hold,
    // already over the size limit.
    let stray = dir.path().join(format!("mx_20240314_{}.xlog", u32::MAX));
    fs::write(&stray, vec![b'x'; 200]).unwrap();
    let g = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("mx")
        .banners(false)
        .max_file_size(100)
        .clock(clock.clone())
        .build()
        .unwrap();
    block(&g, b"still logged");
    assert_eq!(g.write_failed_lines() + g.dropped_lines(), 0);
    drop(g);
    assert!(text_of_dir(dir.path()).contains("still logged"));
}

#[test]
fn logging_goes_on_after_the_log_dir_is_removed() {
    for mode in [phobos_xlog::Mode::Async, phobos_xlog::Mode::Sync] {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("logs");
        let clock = HandClock::at(MAR_14_UTC + 2 * HOUR, 8 * HOUR as i32);
        let g = Xlog::builder()
            .log_dir(&dir)
            .name_prefix("gone")
            .banners(false)
            .mode(mode)
            .clock(clock.clone())
            .build()
            .unwrap();
        block(&g, b"before");
        // An app's "clear cache" removes the folder while the writer runs.
        fs::remove_dir_all(&dir).unwrap();
        block(&g, b"after the folder was removed");
        assert_eq!(
            g.write_failed_lines(),
            0,
            "{mode:?}: {:?}",
            g.last_write_error()
        );
        drop(g);
        assert!(
            text_of_dir(&dir).contains("after the folder was removed"),
            "{mode:?}"
        );
    }
}

#[test]
fn a_clock_set_back_keeps_appending_to_the_file_in_use() {
    // Mars (§5.3, clock sanity): when the wall clock went backwards since the last file open,
    // it keeps appending to the file it used last instead of reopening an earlier day's.
    let dir = tempfile::tempdir().unwrap();
    let midnight = MAR_14_UTC + 16 * HOUR;
    let clock = HandClock::at(midnight + 5, 8 * HOUR as i32);
    let g = logger(dir.path(), "back", &clock);
    block(&g, b"after midnight");
    // Corrected by a few seconds, back into the previous day; then a device reset to 2001.
    for t in [midnight - 3, 1_000_000_000] {
        clock.set(t);
        block(&g, format!("clock at {t}").as_bytes());
    }
    drop(g);
    assert_eq!(xlog_names(dir.path()), ["back_20240315.xlog"]);
    let text = text_of_dir(dir.path());
    assert!(text.contains("after midnight") && text.contains("clock at 1000000000"));
}

#[test]
fn a_clock_jump_forward_is_noted_in_the_log() {
    // Mars (§5.3, clock sanity): a wall clock that went forward by more than the monotonic
    // time elapsed plus 300 s since the last file open gets a tip in the file opened next.
    // (Here the monotonic clock runs for real; the wall clock jumps a day in no time.)
    let dir = tempfile::tempdir().unwrap();
    let noon = MAR_14_UTC + 4 * HOUR;
    let clock = HandClock::at(noon, 8 * HOUR as i32);
    let g = logger(dir.path(), "jf", &clock);
    block(&g, b"one");
    clock.set(noon + 1);
    block(&g, b"two");
    clock.set(noon + 1 + DAY);
    block(&g, b"three");
    drop(g);
    assert_eq!(
        xlog_names(dir.path()),
        ["jf_20240314.xlog", "jf_20240315.xlog"]
    );
    assert!(!text_of_file(&dir.path().join("jf_20240314.xlog")).contains("last log file"));
    let text = text_of_file(&dir.path().join("jf_20240315.xlog"));
    let tip = format!(
        "[F][ last log file:{} from 2024-03-14 +0800 12:00:01 to 2024-03-15 +0800 12:00:01, \
         time_diff:86400, tick_diff:",
        dir.path().join("jf_20240314.xlog").display()
    );
    assert_eq!(text.matches(&tip).count(), 1, "{text}");
    assert!(text.find(&tip) < text.find("three"), "{text}");
}

#[test]
fn a_new_day_after_a_clock_set_back_starts_its_own_file() {
    // Once the clock has caught up with the day in use, the date rule applies again.
    let dir = tempfile::tempdir().unwrap();
    let midnight = MAR_14_UTC + 16 * HOUR;
    let clock = HandClock::at(midnight + 5, 8 * HOUR as i32);
    let g = logger(dir.path(), "nd", &clock);
    block(&g, b"one");
    clock.set(midnight - 3);
    block(&g, b"two");
    clock.set(midnight + DAY + 1);
    block(&g, b"three");
    drop(g);
    assert_eq!(
        xlog_names(dir.path()),
        ["nd_20240315.xlog", "nd_20240316.xlog"]
    );
    assert!(text_of_file(&dir.path().join("nd_20240316.xlog")).contains("three"));
}

#[test]
fn expiry_deletes_only_this_prefixs_old_logs() {
    let dir = tempfile::tempdir().unwrap();
    let now = MAR_14_UTC + 2 * HOUR;
    let clock = HandClock::at(now, 8 * HOUR as i32);
    let old = now - 20 * DAY;
    let names = [
        "ex_20240220.xlog",     // ours, old: deleted
        "ex_20240220_2.xlog",   // ours, old, split: deleted
        "ex_20240310.xlog",     // ours, new: kept
        "other_20240220.xlog",  // another logger's: kept
        "ex_sub_20240220.xlog", // the logger "ex_sub": kept
        "ex_20240220.xlog.bak", // not a log file: kept
        "notes.txt",            // kept
    ];
    for n in names {
        fs::write(dir.path().join(n), b"x").unwrap();
        set_mtime(&dir.path().join(n), old);
    }
    set_mtime(&dir.path().join("ex_20240310.xlog"), now - 4 * DAY);
    let g = logger(dir.path(), "ex", &clock);
    let (deleted, _) = g.run_housekeeping();
    drop(g);
    let left: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| dir.path().join(n).exists())
        .collect();
    assert_eq!(
        left,
        [
            "ex_20240310.xlog",
            "other_20240220.xlog",
            "ex_sub_20240220.xlog",
            "ex_20240220.xlog.bak",
            "notes.txt"
        ]
    );
    assert_eq!(deleted, 2);
}

#[test]
fn old_cache_files_of_another_prefix_stay_in_the_cache_dir() {
    let log = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let now = MAR_14_UTC + 2 * HOUR;
    let clock = HandClock::at(now, 8 * HOUR as i32);
    for n in ["mv_20240301.xlog", "mv2_20240301.xlog"] {
        fs::write(cache.path().join(n), b"x").unwrap();
        set_mtime(&cache.path().join(n), now - 10 * DAY);
    }
    let mut cfg = XlogConfig::default();
    cfg.log_dir = log.path().into();
    cfg.cache_dir = Some(cache.path().into());
    cfg.name_prefix = "mv".into();
    cfg.cache_days = 3;
    let g = Xlog::builder()
        .config(cfg)
        .banners(false)
        .clock(clock.clone())
        .build()
        .unwrap();
    let (_, moved) = g.run_housekeeping();
    drop(g);
    assert_eq!(moved, 1);
    assert!(log.path().join("mv_20240301.xlog").exists());
    assert!(cache.path().join("mv2_20240301.xlog").exists());
    assert!(!log.path().join("mv2_20240301.xlog").exists());
}

#[test]
fn a_prefix_too_long_for_the_file_names_is_refused_at_build() {
    let dir = tempfile::tempdir().unwrap();
    // `<prefix>.mmap3` would fit in 255 bytes, `<prefix>_20240314.xlog` would not.
    let e = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("p".repeat(245))
        .build();
    assert!(
        matches!(e, Err(phobos_xlog::BuildError::InvalidConfig(_))),
        "{:?}",
        e.map(|_| "built")
    );
    // The longest prefix accepted (255 bytes less `_YYYYMMDD_4294967295.xlog`) logs, into
    // split files too.
    let clock = HandClock::at(MAR_14_UTC + 2 * HOUR, 8 * HOUR as i32);
    let prefix = "q".repeat(230);
    let g = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix(prefix.clone())
        .banners(false)
        .max_file_size(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    for i in 0..3 {
        block(&g, format!("line {i}").as_bytes());
    }
    assert_eq!(g.write_failed_lines(), 0, "{:?}", g.last_write_error());
    drop(g);
    assert!(dir
        .path()
        .join(format!("{prefix}_20240314_2.xlog"))
        .exists());
}

#[test]
fn a_buffer_file_that_cannot_be_opened_leaves_logging_in_memory() {
    // Mars (§4.1): without a mapping, a heap buffer is used; only crash recovery is lost.
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("hb.mmap3")).unwrap();
    let clock = HandClock::at(MAR_14_UTC + 2 * HOUR, 8 * HOUR as i32);
    let g = logger(dir.path(), "hb", &clock);
    assert!(!g.is_mapped());
    g.log_message(Level::Info, "t", b"kept in memory");
    drop(g);
    let text = text_of_dir(dir.path());
    assert!(text.contains("kept in memory"), "{text}");
    assert!(
        text.contains("hb.mmap3") && text.contains("without crash recovery"),
        "the reason is logged: {text}"
    );
    // A prefix no file can be named with is an error, not a writer that loses every line.
    let e = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("nul\0byte")
        .build();
    assert!(
        matches!(e, Err(phobos_xlog::BuildError::InvalidConfig(_))),
        "{:?}",
        e.map(|_| "built")
    );
}

#[test]
fn closing_while_threads_log_leaves_every_line_written_or_counted() {
    use phobos_xlog::{Durability, Overflow};
    const THREADS: usize = 4;
    const LINES: usize = 3000;
    for (overflow, durability) in [
        (Overflow::Block, Durability::Durable),
        (Overflow::Drop, Durability::Durable),
        (Overflow::Block, Durability::Buffered),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = HandClock::at(MAR_14_UTC + 2 * HOUR, 8 * HOUR as i32);
        let g = Xlog::builder()
            .log_dir(dir.path())
            .name_prefix("cl")
            .banners(false)
            .overflow(overflow)
            .durability(durability)
            .clock(clock.clone())
            .build()
            .unwrap();
        let x = g.xlog();
        let (started, wait_started) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let x = g.xlog();
                let started = started.clone();
                s.spawn(move || {
                    for i in 0..LINES {
                        if i == LINES / 3 {
                            let _ = started.send(());
                        }
                        x.log_message(Level::Info, "t", format!("thread {t} line {i}").as_bytes());
                    }
                });
            }
            // Close once every thread is a third of the way through.
            for _ in 0..THREADS {
                wait_started.recv().unwrap();
            }
            x.close();
        });
        let dropped = x.dropped_lines();
        assert_eq!(x.write_failed_lines(), 0);
        drop(g);
        let text = text_of_dir(dir.path());
        let written = text
            .lines()
            .filter(|l| l.starts_with("[I]") && l.contains("][thread "))
            .count() as u64;
        assert_eq!(
            written + dropped,
            (THREADS * LINES) as u64,
            "{overflow:?} {durability:?}: {written} written, {dropped} dropped"
        );
        if overflow == Overflow::Block {
            // Every line logged before the close got through.
            assert!(
                written >= (THREADS * LINES / 3) as u64,
                "{durability:?}: {written} written"
            );
        }
    }
}

#[test]
fn sync_mode_files_split_within_a_day() {
    let dir = tempfile::tempdir().unwrap();
    let clock = HandClock::at(MAR_14_UTC + 2 * HOUR, 8 * HOUR as i32);
    let g = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("sy")
        .banners(false)
        .mode(phobos_xlog::Mode::Sync)
        .max_file_size(1000)
        .clock(clock.clone())
        .build()
        .unwrap();
    for i in 0..60 {
        g.log_message(Level::Info, "t", format!("sync line {i}").as_bytes());
    }
    drop(g);
    let names = xlog_names(dir.path());
    assert!(names.len() >= 3, "{names:?}");
    for n in &names {
        assert!(
            fs::metadata(dir.path().join(n)).unwrap().len() <= 1000,
            "{n}"
        );
    }
    let text = text_of_dir(dir.path());
    assert_eq!(text.matches("][sync line ").count(), 60);
}

#[test]
fn a_crash_is_recovered_by_a_writer_with_another_compression() {
    // The recovered block keeps its own magic (§4.4), whatever the new writer's settings.
    let dir = tempfile::tempdir().unwrap();
    let clock = HandClock::at(MAR_14_UTC + 2 * HOUR, 8 * HOUR as i32);
    let g = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("cc")
        .banners(false)
        .compression(phobos_xlog::Compression::Zstd)
        .clock(clock.clone())
        .build()
        .unwrap();
    for i in 0..50 {
        g.log_message(Level::Info, "t", format!("staged {i}").as_bytes());
    }
    let staged = fs::read(dir.path().join("cc.mmap3")).unwrap();
    std::mem::forget(g);
    let dir2 = tempfile::tempdir().unwrap();
    fs::write(dir2.path().join("cc.mmap3"), staged).unwrap();
    let g = logger(dir2.path(), "cc", &clock);
    g.log_message(Level::Info, "t", b"zlib now");
    drop(g);
    let text = text_of_dir(dir2.path());
    assert_eq!(text.matches("][staged ").count(), 50, "{text}");
    assert!(text.contains("zlib now"));
}

#[test]
fn two_writers_of_one_prefix_with_their_own_buffers_share_the_days_file_whole() {
    // One log dir, two cache dirs (so two buffer files): both append to the same day's file.
    let log = tempfile::tempdir().unwrap();
    let caches = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let clock = HandClock::at(MAR_14_UTC + 2 * HOUR, 8 * HOUR as i32);
    let writers: Vec<XlogGuard> = caches
        .iter()
        .map(|c| {
            let mut cfg = XlogConfig::default();
            cfg.log_dir = log.path().into();
            cfg.cache_dir = Some(c.path().into());
            cfg.name_prefix = "sh".into();
            Xlog::builder()
                .config(cfg)
                .banners(false)
                .clock(clock.clone())
                .build()
                .unwrap()
        })
        .collect();
    std::thread::scope(|s| {
        for (w, g) in writers.iter().enumerate() {
            let x = g.xlog();
            s.spawn(move || {
                for i in 0..2000 {
                    x.log_message(Level::Info, "t", format!("writer {w} line {i}").as_bytes());
                    if i % 100 == 99 {
                        x.flush().unwrap();
                    }
                }
            });
        }
    });
    drop(writers);
    assert_eq!(xlog_names(log.path()), ["sh_20240314.xlog"]);
    let text = text_of_dir(log.path());
    for w in 0..2 {
        assert_eq!(text.matches(&format!("][writer {w} line ")).count(), 2000);
    }
    assert!(!text.contains("decode error"), "{text}");
}

#[test]
fn blocks_the_log_dir_refuses_wait_in_the_cache_dir_and_move_over_in_order() {
    let log = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let clock = HandClock::at(MAR_14_UTC + 2 * HOUR, 8 * HOUR as i32);
    let mut cfg = XlogConfig::default();
    cfg.log_dir = log.path().into();
    cfg.cache_dir = Some(cache.path().into());
    cfg.name_prefix = "fb".into();
    let g = Xlog::builder()
        .config(cfg)
        .banners(false)
        .clock(clock.clone())
        .build()
        .unwrap();
    let day = "fb_20240314.xlog";
    block(&g, b"line 0");
    // The day's file cannot be written (a directory in its place stands in for a read-only
    // folder or a full disk; the tests may run as root, which ignores permissions).
    let moved = log.path().join("moved.bin");
    fs::rename(log.path().join(day), &moved).unwrap();
    fs::create_dir(log.path().join(day)).unwrap();
    for i in 1..3 {
        block(&g, format!("line {i}").as_bytes());
    }
    assert!(
        cache.path().join(day).exists(),
        "the cache dir took the blocks"
    );
    assert_eq!(g.write_failed_lines(), 0);
    fs::remove_dir(log.path().join(day)).unwrap();
    fs::rename(&moved, log.path().join(day)).unwrap();
    block(&g, b"line 3");
    drop(g);
    assert!(!cache.path().join(day).exists(), "moved to the log dir");
    let text = text_of_file(&log.path().join(day));
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("[I]")).collect();
    assert_eq!(lines.len(), 4, "{text}");
    for (i, l) in lines.iter().enumerate() {
        assert!(l.ends_with(&format!("line {i}")), "{text}");
    }
}
