//! Files written by `phobos-xlog` in every mode decode exactly with the independent decoder
//! `phobos-xlog-decode` (and Mars's cipher from `phobos-cipher-mars`).

use std::fs;
use std::path::Path;
use std::sync::Arc;

use phobos_cipher_mars::MarsCipher;
use phobos_xlog::format::{format_line, ThreadIds};
use phobos_xlog::{Compression, FixedClock, Level, Mode, Record, WallTime, Xlog};
use phobos_xlog_decode::Decoder;

fn decode_dir(dir: &Path, decoder: &Decoder) -> Vec<u8> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "xlog"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        out.extend_from_slice(&decoder.decode(&fs::read(n).unwrap()));
    }
    out
}

#[test]
fn every_mode_decodes_exactly_with_the_independent_decoder() {
    let keys = MarsCipher::generate_key_pair();
    let time = WallTime::new(1_710_383_213, 137_000_000, 8 * 3600);
    for (mode, level) in [
        (Mode::Async, None),
        (Mode::Async, Some(6)),
        (Mode::Sync, None),
    ] {
        for compression in [Compression::Zlib, Compression::Zstd] {
            for keyed in [false, true] {
                let dir = tempfile::tempdir().unwrap();
                let mut b = Xlog::builder()
                    .log_dir(dir.path())
                    .name_prefix("rt")
                    .mode(mode)
                    .compression(compression)
                    .banners(false)
                    .clock(Arc::new(FixedClock(time)));
                if let Some(l) = level {
                    b = b.compression_level(l);
                }
                if keyed {
                    b = b.cipher(Arc::new(
                        MarsCipher::from_public_key_hex(&keys.public_key).unwrap(),
                    ));
                }
                let guard = b.build().unwrap();
                let mut expect = Vec::new();
                let n = if mode == Mode::Sync { 300 } else { 3000 };
                for i in 0..n {
                    let msg = format!(
                        "request #{i} done status=200 bytes={} trace={:016x}",
                        i * 37,
                        i * 7919
                    );
                    let rec = Record {
                        tag: "net",
                        file: "src/net/http_client.rs",
                        line: 100,
                        func: "HttpClient::send",
                        ..Record::new(
                            Level::from_letter(b"VDIWEF"[i % 6]).unwrap(),
                            msg.as_bytes(),
                        )
                    };
                    guard.log(&rec);
                    format_line(&mut expect, &rec, time, ThreadIds::current());
                    if i % 700 == 699 {
                        guard.flush().unwrap();
                    }
                }
                drop(guard);
                let mut builder = Decoder::builder();
                if keyed {
                    builder = builder.cipher(Arc::new(
                        MarsCipher::from_private_key_hex(&keys.private_key).unwrap(),
                    ));
                }
                let text = decode_dir(dir.path(), &builder.build());
                if text != expect {
                    let at = text
                        .iter()
                        .zip(&expect)
                        .position(|(a, b)| a != b)
                        .unwrap_or(text.len().min(expect.len()));
                    let show = |v: &[u8]| {
                        String::from_utf8_lossy(&v[at.saturating_sub(200)..(at + 200).min(v.len())])
                            .into_owned()
                    };
                    panic!(
                        "{mode:?} {compression:?} level={level:?} keyed={keyed}: decoded {} bytes, expected {}, first difference at {at}:\n--- decoded ---\n{}\n--- expected ---\n{}",
                        text.len(), expect.len(), show(&text), show(&expect)
                    );
                }
            }
        }
    }
}

#[test]
fn banners_and_recovery_tips_have_mars_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let time = WallTime::new(1_710_383_213, 0, 8 * 3600);
    let g = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("b")
        .clock(Arc::new(FixedClock(time)))
        .build()
        .unwrap();
    g.log_message(Level::Info, "t", b"hello");
    drop(g);
    let text = String::from_utf8(decode_dir(dir.path(), &Decoder::new())).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("^^^^^^^^^^Mar 14 2024^^^10:26:53^^^^^^^^^^["),
        "{}",
        lines[0]
    );
    assert!(lines[0].ends_with("][2024-03-14 +0800 10:26:53]"));
    assert!(lines[1].starts_with("get mmap time: "));
    assert_eq!(lines[2], "MARS_URL: ");
    assert_eq!(lines[3], "MARS_PATH: phobos-xlog");
    assert_eq!(lines[7], "log appender mode:0, use mmap:1");
    assert!(lines[8].starts_with("log dir space info, capacity:"));
    assert!(lines[9].starts_with("[I][2024-03-14 +8.0 10:26:53.000]["));
    assert!(
        lines[10].starts_with("$$$$$$$$$$Mar 14 2024$$$10:26:53$$$$$$$$$$["),
        "{text}"
    );
}
