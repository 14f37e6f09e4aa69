//! xlog benchmarks, reported as figures and ratios in one run.
//!
//! (a) Caller-thread cost per tracing event, p50 and p99, 1 and 4 threads:
//!     `tracing-appender` non-blocking writing plain text (fmt layer) versus Phobos writing
//!     zlib + Mars-encrypted blocks through [`XlogLayer`].
//! (b) 1,000,000 lines of ~190 bytes through `append_lines` (the CLI's `append`): wall time,
//!     CPU time (all threads) and bytes on disk, for zlib, zlib+key, zstd, zstd+key, plus the
//!     size the same workload takes with Mars's levels (zlib 9, zstd 6) for reference.
//!
//! (c) Sync mode (each line appended to the log file as the caller logs it), 1 and 4
//!     threads: ns per line through [`Xlog::log_message`] versus a plain append of the same
//!     formatted lines (`write` per line on a file opened for appending), and the ratio.
//!
//! Run: `cargo bench -p phobos-xlog --bench xlog_append` (environment: `XLOG_BENCH_LINES`,
//! `XLOG_BENCH_EVENTS`, `XLOG_BENCH_SYNC_LINES` to change the sizes; `XLOG_BENCH_PART=a`,
//! `b` or `c` for one part; `-- --quick` for a smoke run).

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use phobos_cipher_mars::MarsCipher;
use phobos_xlog::{append_lines, Compression, Durability, Xlog, XlogLayer};
use tracing_subscriber::prelude::*;

/// The append cases. (This bench once printed ratios to per-million-line Mars times and
/// sizes kept as constants without a source; they are gone: what it compares is measured in
/// the run.)
const CASES: [&str; 4] = ["zlib", "zlib+key", "zstd", "zstd+key"];

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let lines: usize = env_num("XLOG_BENCH_LINES", if quick { 20_000 } else { 1_000_000 });
    let events: usize = env_num("XLOG_BENCH_EVENTS", if quick { 20_000 } else { 200_000 });
    let keys = MarsCipher::generate_key_pair();
    let cipher = Arc::new(MarsCipher::from_public_key_hex(&keys.public_key).expect("key"));

    if let Ok(case) = std::env::var("XLOG_BENCH_CASE") {
        // One append case only (for profiling): zlib, zlib+key, zstd or zstd+key.
        let input = make_input(lines);
        let i = CASES.iter().position(|n| *n == case).expect("known case");
        let c = if i < 2 {
            Compression::Zlib
        } else {
            Compression::Zstd
        };
        let level = std::env::var("XLOG_BENCH_LEVEL")
            .ok()
            .and_then(|s| s.parse().ok());
        let r = bench_append(
            &input,
            c,
            level,
            (i % 2 == 1).then(|| cipher.clone()),
            Durability::Durable,
        );
        println!(
            "{case}: wall={:.3}s cpu={:.3}s bytes={}",
            r.wall.as_secs_f64(),
            r.cpu.as_secs_f64(),
            r.bytes
        );
        return;
    }
    let part = std::env::var("XLOG_BENCH_PART").unwrap_or_default();
    if part.is_empty() || part == "a" {
        bench_part_a(events, &cipher);
    }
    if part.is_empty() || part == "b" {
        bench_part_b(lines, &cipher);
    }
    if part.is_empty() || part == "c" {
        let sync_lines = env_num("XLOG_BENCH_SYNC_LINES", if quick { 5_000 } else { 100_000 });
        bench_part_c(sync_lines);
    }
}

/// Sync mode against a plain append of the same lines, per line, in alternating rounds.
fn bench_part_c(lines: usize) {
    println!("== (c) sync mode: ns per line ({lines} lines per thread, 3 alternating rounds) ==");
    let input = make_input(lines);
    let formatted = format_like_append(&input);
    let msgs: Vec<&[u8]> = input
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    for threads in [1usize, 4] {
        let mut ours = Vec::new();
        let mut base = Vec::new();
        for _ in 0..3 {
            base.push(sync_plain_append(&formatted, threads));
            ours.push(sync_xlog(&msgs, threads));
        }
        let (b, o) = (median(base), median(ours));
        let per = |d: Duration| d.as_nanos() as f64 / (lines * threads) as f64;
        println!(
            "threads={threads}: plain append {:.0} ns/line | phobos sync {:.0} ns/line | \
             ratio phobos/plain {:.2}",
            per(b),
            per(o),
            o.as_secs_f64() / b.as_secs_f64()
        );
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Wall time for `threads` threads to log every one of `msgs` through a sync-mode writer.
fn sync_xlog(msgs: &[&[u8]], threads: usize) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("bench")
        .mode(phobos_xlog::Mode::Sync)
        .banners(false)
        .build()
        .expect("open");
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for m in msgs {
                    g.log_message(phobos_xlog::Level::Info, "append", m);
                }
            });
        }
    });
    let wall = t0.elapsed();
    drop(g);
    wall
}

/// Wall time for `threads` threads to append every one of `lines` to one file opened for
/// appending, a `write` per line.
fn sync_plain_append(lines: &[Vec<u8>], threads: usize) -> Duration {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("plain.log");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open");
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut w = &f;
                for l in lines {
                    w.write_all(l).expect("write");
                }
            });
        }
    });
    t0.elapsed()
}

fn bench_part_a(events: usize, cipher: &Arc<MarsCipher>) {
    println!("== (a) caller-thread ns per tracing event ({events} events per thread) ==");
    for threads in [1usize, 4] {
        let base = bench_tracing_appender(threads, events);
        for durability in [Durability::Durable, Durability::Buffered] {
            let ours = bench_xlog_layer(threads, events, cipher.clone(), durability);
            println!(
                "threads={threads}: tracing-appender plain p50={} p99={} | phobos zlib+key \
                 {durability:?} p50={} p99={} | ratio phobos/appender p50={:.2} p99={:.2}",
                base.0,
                base.1,
                ours.0,
                ours.1,
                ours.0 as f64 / base.0 as f64,
                ours.1 as f64 / base.1 as f64
            );
        }
    }
}

fn bench_part_b(lines: usize, cipher: &Arc<MarsCipher>) {
    println!("== (b) {lines} lines through append_lines ==");
    let input = make_input(lines);
    let avg = input.len() as f64 / lines as f64;
    println!("input: {} bytes, {avg:.1} bytes per line", input.len());
    // Mars's settings on the same lines: zlib level 9 (real zlib, via zlib-rs) and zstd level
    // 6, one flush per line, a new stream per ~50 KiB block, 74 bytes of framing per block.
    let formatted = format_like_append(&input);
    let zlib9 = mars_zlib9(&formatted);
    let zstd6 = mars_zstd6(&formatted);
    let mars_level_bytes = [zlib9.0, zstd6.0];
    println!(
        "reference: zlib level 9 (zlib-rs, sync flush per line), same lines: compression cpu={:.3}s bytes={}",
        zlib9.1.as_secs_f64(),
        zlib9.0
    );
    println!(
        "reference: zstd level 6, window log 16 (libzstd, flush per line), same lines: compression cpu={:.3}s bytes={}",
        zstd6.1.as_secs_f64(),
        zstd6.0
    );
    // The default (durable) mode at the default levels; other modes and levels through
    // XLOG_BENCH_CASE / XLOG_BENCH_LEVEL and XLOG_BENCH_SWEEP.
    let durability = Durability::Durable;
    let level: Option<i32> = None;
    for i in 0..4 {
        let name = CASES[i];
        let compression = if i < 2 {
            Compression::Zlib
        } else {
            Compression::Zstd
        };
        let keyed = i % 2 == 1;
        let r = bench_append(
            &input,
            compression,
            level,
            keyed.then(|| cipher.clone()),
            durability,
        );
        let lvl = level.map_or("default".to_owned(), |l| format!("level {l}"));
        println!(
            "{durability:?} {name:9} {lvl:8} wall={:.3}s cpu={:.3}s bytes={} | size vs \
             Mars-level same workload: {:.3}",
            r.wall.as_secs_f64(),
            r.cpu.as_secs_f64(),
            r.bytes,
            r.bytes as f64 / mars_level_bytes[i / 2] as f64,
        );
    }
    if std::env::var("XLOG_BENCH_SWEEP").is_ok() {
        println!(
            "== level sweep (durable, no key; size relative to the zlib-9 / zstd-6 reference) =="
        );
        for (c, levels) in [
            (Compression::Zlib, vec![1, 2, 3, 4, 6]),
            (Compression::Zstd, vec![-1, 1, 2, 3]),
        ] {
            for level in levels {
                let r = bench_append(&input, c, Some(level), None, Durability::Durable);
                let reference = if c == Compression::Zlib {
                    mars_level_bytes[0]
                } else {
                    mars_level_bytes[1]
                };
                println!(
                    "{c:?} level {level:3}: wall={:.3}s cpu={:.3}s bytes={} ({:.2} B/line, {:.3} of reference)",
                    r.wall.as_secs_f64(),
                    r.cpu.as_secs_f64(),
                    r.bytes,
                    r.bytes as f64 / lines as f64,
                    r.bytes as f64 / reference as f64
                );
            }
        }
    }
}

/// The lines as `append_lines` formats them (same lengths and shapes).
fn format_like_append(input: &[u8]) -> Vec<Vec<u8>> {
    let time = phobos_xlog::WallTime::new(1_795_650_730, 123_000_000, 0);
    let ids = phobos_xlog::format::ThreadIds::current();
    input
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (level, msg) = phobos_xlog::append::split_level(l);
            let mut out = Vec::with_capacity(256);
            let rec = phobos_xlog::Record {
                tag: "append",
                ..phobos_xlog::Record::new(level, msg)
            };
            phobos_xlog::format::format_line(&mut out, &rec, time, ids);
            out
        })
        .collect()
}

/// Bytes Mars's zlib level 9 would write for these lines, and the CPU time it took here.
fn mars_zlib9(lines: &[Vec<u8>]) -> (u64, Duration) {
    let cpu0 = process_cpu();
    let mut c = flate2::Compress::new(flate2::Compression::new(9), false);
    let mut out = Vec::with_capacity(160 * 1024);
    let mut total = 0u64;
    for l in lines {
        out.reserve(l.len() * 2 + 64);
        c.compress_vec(l, &mut out, flate2::FlushCompress::Sync)
            .expect("deflate");
        if out.len() >= 150 * 1024 / 3 {
            total += out.len() as u64 + 74;
            out.clear();
            c.reset();
        }
    }
    total += out.len() as u64 + 74;
    (total, process_cpu().saturating_sub(cpu0))
}

/// Bytes Mars's zstd (level 6, window log 16, `ZSTD_e_flush` per line, one unclosed frame per
/// ~50 KiB block) would write for these lines, and the CPU time it took here.
fn mars_zstd6(lines: &[Vec<u8>]) -> (u64, Duration) {
    use zstd::stream::raw::{Encoder, InBuffer, Operation, OutBuffer};
    let cpu0 = process_cpu();
    let mut e = Encoder::new(6).expect("zstd");
    e.set_parameter(zstd::zstd_safe::CParameter::WindowLog(16))
        .expect("window");
    let mut out = vec![0u8; 160 * 1024];
    let mut pos = 0;
    let mut total = 0u64;
    for l in lines {
        let mut inb = InBuffer::around(l);
        let mut ob = OutBuffer::around_pos(&mut out[..], pos);
        e.run(&mut inb, &mut ob).expect("zstd");
        e.flush(&mut ob).expect("zstd");
        pos = ob.pos();
        if pos >= 150 * 1024 / 3 {
            total += pos as u64 + 74;
            pos = 0;
            e.reinit().expect("zstd");
        }
    }
    total += pos as u64 + 74;
    (total, process_cpu().saturating_sub(cpu0))
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Deterministic, log-like lines of ~190 bytes (hosts, numbers, a random trace id).
fn make_input(n: usize) -> Vec<u8> {
    const TAGS: [&str; 6] = ["net", "auth", "db", "ui", "sync", "cache"];
    const WORDS: [&str; 12] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliet", "kilo", "lima",
    ];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(n * 200);
    for i in 0..n {
        let r = next();
        let level = b"VDIWEI"[(r % 6) as usize] as char;
        let tag = TAGS[(r >> 8) as usize % TAGS.len()];
        let w1 = WORDS[(r >> 16) as usize % WORDS.len()];
        let w2 = WORDS[(r >> 24) as usize % WORDS.len()];
        let line = format!(
            "[{level}]{tag}: request #{i} to host={w1}-{w2}.example.com:{} done status={} bytes={} \
             latency_ms={} retry={} session={:08x} region=ap-east-{} ua=phobos/1.{} trace={:016x}\n",
            443 + (r >> 32) % 3,
            200 + (r >> 36) % 5,
            (r >> 40) % 65_536,
            (r >> 48) % 1000,
            (r >> 58) % 4,
            (r >> 8) as u32,
            (r >> 44) % 3,
            (r >> 50) % 20,
            next()
        );
        out.extend_from_slice(line.as_bytes());
    }
    out
}

struct AppendResult {
    wall: Duration,
    cpu: Duration,
    bytes: u64,
}

fn bench_append(
    input: &[u8],
    compression: Compression,
    level: Option<i32>,
    cipher: Option<Arc<MarsCipher>>,
    durability: Durability,
) -> AppendResult {
    let dir = tempfile::tempdir().expect("tempdir");
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    let mut b = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("bench")
        .compression(compression)
        .durability(durability);
    if let Some(l) = level {
        b = b.compression_level(l);
    }
    if let Some(c) = cipher {
        b = b.cipher(c);
    }
    let guard = b.build().expect("open");
    append_lines(&guard, Cursor::new(input), "append").expect("append");
    drop(guard);
    let wall = t0.elapsed();
    let cpu = process_cpu().saturating_sub(cpu0);
    AppendResult {
        wall,
        cpu,
        bytes: dir_bytes(dir.path()),
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "xlog"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// CPU time of the whole process (user + system, all threads), from /proc/self/stat.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn percentiles(mut v: Vec<u64>) -> (u64, u64) {
    v.sort_unstable();
    let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    (p(0.50), p(0.99))
}

fn run_threads(threads: usize, events: usize) -> (u64, u64) {
    let all: Vec<u64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let dispatch = tracing::dispatcher::get_default(|d| d.clone());
                s.spawn(move || {
                    tracing::dispatcher::with_default(&dispatch, || {
                        let mut lat = Vec::with_capacity(events);
                        for i in 0..events {
                            let t0 = Instant::now();
                            tracing::info!(
                                target: "bench",
                                thread = t,
                                "request #{i} to host=alpha-bravo.example.com:443 done status=200 bytes={} latency_ms={} trace={:016x}",
                                i * 37,
                                i % 1000,
                                (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                            );
                            lat.push(t0.elapsed().as_nanos() as u64);
                        }
                        lat
                    })
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    percentiles(all)
}

fn bench_tracing_appender(threads: usize, events: usize) -> (u64, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let appender = tracing_appender::rolling::never(dir.path(), "plain.log");
    // Not lossy: xlog blocks a caller when its buffer is full (`Overflow::Block`), and the
    // default appender drops lines past its 128,000-line channel instead, which would make
    // the comparison "queued or dropped" against "staged".
    let (nb, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(appender);
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(nb)
            .with_ansi(false),
    );
    let r = tracing::subscriber::with_default(subscriber, || run_threads(threads, events));
    drop(guard);
    r
}

fn bench_xlog_layer(
    threads: usize,
    events: usize,
    cipher: Arc<MarsCipher>,
    durability: Durability,
) -> (u64, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let guard = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("layer")
        .compression(Compression::Zlib)
        .durability(durability)
        .cipher(cipher)
        .build()
        .expect("open");
    let subscriber = tracing_subscriber::registry().with(XlogLayer::new(guard.xlog()));
    let r = tracing::subscriber::with_default(subscriber, || run_threads(threads, events));
    drop(guard);
    r
}
