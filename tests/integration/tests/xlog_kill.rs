//! Crash safety: a child process logging numbered lines is SIGKILLed at a random moment;
//! after a restart every line whose log call had returned is in the log, in order, once, and
//! with a key nothing the child logged is on disk in clear.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use phobos_cipher_mars::MarsCipher;
use phobos_xlog::{Compression, Level, Xlog};
use phobos_xlog_decode::Decoder;
use rand::Rng;

const CHILD_DIR: &str = "PHOBOS_XLOG_KILL_CHILD_DIR";
const CHILD_CFG: &str = "PHOBOS_XLOG_KILL_CHILD_CFG";
const SECRET: &str = "kill-test-secret-payload";

/// Bit 0: zstd, bit 1: Mars key, bit 2: compression level 4 for the blocks the writer
/// compresses, else the default level.
fn config(cfg: u32) -> (Compression, bool, Option<i32>) {
    let c = if cfg & 1 == 0 {
        Compression::Zlib
    } else {
        Compression::Zstd
    };
    (c, cfg & 2 != 0, (cfg & 4 != 0).then_some(4))
}

fn public_key() -> String {
    keys().1
}

fn keys() -> (String, String) {
    // A fixed test key pair (generated once with MarsCipher::generate_key_pair).
    static K: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    K.get_or_init(|| {
        let p = MarsCipher::generate_key_pair();
        (p.private_key, p.public_key)
    })
    .clone()
}

fn open(dir: &Path, cfg: u32, pubkey: Option<&str>, banners: bool) -> phobos_xlog::XlogGuard {
    let (c, keyed, level) = config(cfg);
    let mut b = Xlog::builder()
        .log_dir(dir)
        .name_prefix("kill")
        .compression(c)
        .banners(banners);
    if let Some(l) = level {
        b = b.compression_level(l);
    }
    if keyed {
        let k = pubkey.map(str::to_owned).unwrap_or_else(public_key);
        b = b.cipher(Arc::new(MarsCipher::from_public_key_hex(&k).unwrap()));
    }
    b.build().unwrap()
}

/// Not a test of its own: the body of the child process that the kill test starts (it returns
/// at once when the environment does not ask for the child).
#[test]
fn kill_child_process_entry() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let cfg: u32 = std::env::var(CHILD_CFG).unwrap().parse().unwrap();
    let pubkey = std::env::var("PHOBOS_XLOG_KILL_CHILD_KEY").ok();
    let g = open(Path::new(&dir), cfg, pubkey.as_deref(), true);
    let mut out = std::io::stdout().lock();
    for n in 0u64.. {
        let msg = format!(
            "line={n} {SECRET} some more text to make it ~190 bytes long trace={:016x}",
            n * 0x9E37_79B9
        );
        g.log_message(Level::Info, "kill", msg.as_bytes());
        // The call returned: report it.
        writeln!(out, "{n}").unwrap();
        out.flush().unwrap();
    }
}

fn logged_numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.split("][line=").nth(1))
        .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
        .collect()
}

fn all_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_returned_line_survives_sigkill_exactly_once() {
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    let (private_key, public_key) = keys();
    let iterations = std::env::var("PHOBOS_XLOG_KILL_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    for it in 0..iterations {
        let cfg = it % 8;
        let (_, keyed, _) = config(cfg);
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "kill_child_process_entry",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_CFG, cfg.to_string())
            .env("PHOBOS_XLOG_KILL_CHILD_KEY", &public_key)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let target: u64 = rng.gen_range(1..6000);
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut last: Option<u64> = None;
        let mut line = String::new();
        // Read reports until the random target, then kill without warning.
        while last.is_none_or(|l| l < target) {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            if let Ok(n) = line.trim().parse() {
                last = Some(n);
            }
        }
        child.kill().unwrap();
        // Reports already in the pipe were returned calls too.
        for l in reader.lines() {
            let Ok(l) = l else { break };
            if let Ok(n) = l.trim().parse() {
                last = Some(n);
            }
        }
        child.wait().unwrap();
        let last = last.expect("child reported nothing");

        if keyed {
            for (name, bytes) in all_files(dir.path()) {
                assert!(
                    !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                    "plaintext found in {name} after SIGKILL (iteration {it})"
                );
            }
        }

        // Restart: recovery appends what the buffer held.
        drop(open(dir.path(), cfg, Some(&public_key), false));
        if keyed {
            for (name, bytes) in all_files(dir.path()) {
                assert!(
                    !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                    "{name}"
                );
            }
        }
        let mut decoder = Decoder::builder();
        if keyed {
            decoder = decoder.cipher(Arc::new(
                MarsCipher::from_private_key_hex(&private_key).unwrap(),
            ));
        }
        let decoder = decoder.build();
        let mut text = String::new();
        let mut names: Vec<_> = all_files(dir.path())
            .into_iter()
            .filter(|(n, _)| n.ends_with(".xlog"))
            .collect();
        names.sort();
        for (_, bytes) in names {
            text.push_str(&String::from_utf8(decoder.decode(&bytes)).expect("nothing garbled"));
        }
        assert!(
            !text.contains("[F]decode_log_file.py"),
            "decoder complained (iteration {it}):\n{text}"
        );
        let nums = logged_numbers(&text);
        let expect: Vec<u64> = (0..nums.len() as u64).collect();
        assert_eq!(
            nums, expect,
            "lines out of order, missing or duplicated (iteration {it})"
        );
        assert!(
            nums.len() as u64 > last,
            "line {last} returned but is missing (iteration {it}, cfg {cfg})"
        );
        if it % 4 == 0 {
            assert!(
                text.contains("~~~~~ begin of mmap ~~~~~")
                    || nums.len() as u64 == last + 1
                    || !text.is_empty()
            );
        }
    }
}
