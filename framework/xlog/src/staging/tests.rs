use proptest::prelude::*;

use super::*;
use crate::block::{async_magic, BlockView, Encryption};
use crate::compress::StoredFramer;
use crate::config::Compression;
use crate::testutil::{decode_body, ToyCipher};
use phobos_plugin_api::cipher::{CipherKind, LogCipher};

/// Records every store, to replay a crash at any point.
struct Recorder {
    block: Vec<u8>,
    meta: Vec<u8>,
    ops: Vec<(Area, usize, Vec<u8>)>,
}

impl Store for Recorder {
    fn put(&mut self, area: Area, off: usize, bytes: &[u8]) {
        let dst = match area {
            Area::Block => &mut self.block,
            Area::Meta => &mut self.meta,
        };
        dst[off..off + bytes.len()].copy_from_slice(bytes);
        self.ops.push((area, off, bytes.to_vec()));
    }
}

fn stager(c: Compression, keyed: bool) -> Stager {
    stager_at(c, keyed, keyed)
}

/// `align` pads lines to the cipher's 8-byte unit (what the writer does with Mars's TEA);
/// without it a keyed stager exercises the clear-tail undo path.
fn stager_at(c: Compression, keyed: bool, align: bool) -> Stager {
    let enc = keyed.then(|| ToyCipher.new_encryptor().unwrap());
    let e = if keyed {
        Encryption::Mars
    } else {
        Encryption::None
    };
    Stager::new(
        StoredFramer::new(c == Compression::Zstd, align),
        enc,
        None,
        async_magic(c, e),
    )
}

/// Lays the recorded block and meta out as a staging file (slot 0 only).
fn as_file(block: &[u8], meta: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; FILE_LEN];
    f[..block.len()].copy_from_slice(block);
    f[META_BASE..META_BASE + meta.len()].copy_from_slice(meta);
    f
}

fn recovered_text(file: &[u8]) -> Vec<u8> {
    let r = recover(file, 3);
    let mut text = Vec::new();
    for b in r {
        let v = BlockView::parse(&b.block).unwrap();
        text.extend_from_slice(&decode_body(v.header.magic, v.body));
    }
    text
}

/// A keyed stager that stages with the ChaCha20 stream (what the writer does with a key).
fn stream_stager(c: Compression) -> Stager {
    let mut enc = ToyCipher.new_encryptor().unwrap();
    let stream = StreamStaging::new(enc.as_mut(), CipherKind::MarsCompatible).unwrap();
    Stager::new(
        StoredFramer::new(c == Compression::Zstd, false),
        Some(enc),
        Some(stream),
        async_magic(c, Encryption::Staged),
    )
}

fn run_crash_case(c: Compression, keyed: bool, lines: &[Vec<u8>], cut_op: usize, cut_byte: usize) {
    run_crash_case_with(stager(c, keyed), lines, cut_op, cut_byte);
}

fn run_crash_case_with(mut st: Stager, lines: &[Vec<u8>], cut_op: usize, cut_byte: usize) {
    let mut rec = Recorder {
        block: vec![0; SLOT_LEN],
        meta: vec![0; META_LEN],
        ops: Vec::new(),
    };
    let mut active = st.begin(&mut rec, 1, 1, 0).unwrap();
    // Which op index commits each line (the length store).
    let mut commits = Vec::new();
    for l in lines {
        st.append(&mut rec, &mut active, l).unwrap();
        commits.push(rec.ops.len() - 1);
    }
    let cut_op = cut_op % rec.ops.len();
    // Replay ops before the cut fully, the cut op partially (a crash between byte stores).
    let mut block = vec![0u8; SLOT_LEN];
    let mut meta = vec![0u8; META_LEN];
    for (i, (area, off, bytes)) in rec.ops.iter().enumerate() {
        if i > cut_op {
            break;
        }
        let n = if i == cut_op {
            cut_byte % (bytes.len() + 1)
        } else {
            bytes.len()
        };
        let dst = match area {
            Area::Block => &mut block,
            Area::Meta => &mut meta,
        };
        dst[*off..*off + n].copy_from_slice(&bytes[..n]);
    }
    // Partial length stores are excluded: a 4-byte aligned-in-one-instruction store is atomic
    // with respect to a kill, so the cut inside a length store only happens at 0 or 4 bytes.
    let committed = commits
        .iter()
        .filter(|&&i| i < cut_op || (i == cut_op && cut_byte % 5 == 4))
        .count();
    let (area, _, bytes) = &rec.ops[cut_op];
    if *area == Area::Block
        && bytes.len() == 4
        && commits.contains(&cut_op)
        && cut_byte % 5 != 4
        && cut_byte % 5 != 0
    {
        return;
    }
    let expect: Vec<u8> = lines[..committed].concat();
    assert_eq!(
        recovered_text(&as_file(&block, &meta)),
        expect,
        "cut at op {cut_op} byte {cut_byte}"
    );
}

fn line_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(
        (0u32..1000, "[a-z ]{0,60}").prop_map(|(n, s)| format!("[I][line {n}] {s}\n").into_bytes()),
        1..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A crash at any store, or in the middle of one, recovers exactly the lines committed
    /// before it: never a garbled or partial line.
    #[test]
    fn recovery_keeps_exactly_the_committed_prefix(
        lines in line_strategy(),
        cut_op in 0usize..10_000,
        cut_byte in 0usize..10_000,
        zstd in any::<bool>(),
        keying in 0u8..4,
    ) {
        let c = if zstd { Compression::Zstd } else { Compression::Zlib };
        let st = match keying {
            0 => stager_at(c, false, false),
            1 => stager_at(c, true, true),
            2 => stager_at(c, true, false),
            _ => stream_stager(c),
        };
        run_crash_case_with(st, &lines, cut_op, cut_byte);
    }

    /// Damaged staging files never make recovery panic, and what it returns is well-formed.
    #[test]
    fn recovery_never_panics_on_damaged_files(
        lines in line_strategy(),
        flips in prop::collection::vec((0usize..FILE_LEN, any::<u8>()), 0..8),
        truncate in 0usize..FILE_LEN + 10,
        junk in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut st = stager(Compression::Zlib, true);
        let mut rec = Recorder { block: vec![0; SLOT_LEN], meta: vec![0; META_LEN], ops: Vec::new() };
        let mut active = st.begin(&mut rec, 1, 1, 0).unwrap();
        for l in &lines {
            st.append(&mut rec, &mut active, l).unwrap();
        }
        let mut file = as_file(&rec.block, &rec.meta);
        for (i, b) in flips {
            file[i] ^= b;
        }
        file.truncate(truncate);
        file.extend_from_slice(&junk);
        for r in recover(&file, 5) {
            let v = BlockView::parse(&r.block).unwrap();
            prop_assert!(v.body.len() < SLOT_LEN);
            prop_assert_eq!(v.header.end_hour, 5);
        }
        // Arbitrary bytes, too.
        let _ = recover(&junk, 1);
    }
}

#[test]
fn truncated_staging_file_recovers_the_lines_it_still_holds_whole() {
    // Without damage: everything is recovered.
    let lines: Vec<Vec<u8>> = (0..50)
        .map(|i| format!("line {i}\n").into_bytes())
        .collect();
    run_crash_case(Compression::Zlib, true, &lines, usize::MAX / 2, 0);
    let mut st = stager(Compression::Zlib, false);
    let mut rec = Recorder {
        block: vec![0; SLOT_LEN],
        meta: vec![0; META_LEN],
        ops: Vec::new(),
    };
    let mut active = st.begin(&mut rec, 1, 1, 0).unwrap();
    for l in &lines {
        st.append(&mut rec, &mut active, l).unwrap();
    }
    assert_eq!(
        recovered_text(&as_file(&rec.block, &rec.meta)),
        lines.concat()
    );
}

#[test]
fn slots_are_recovered_in_generation_order_with_intents() {
    let mut file = vec![0u8; FILE_LEN];
    for (slot, gen, text) in [(1usize, 7u64, b"second\n"), (0, 6, b"first!\n")] {
        let mut st = stager(Compression::Zlib, false);
        let mut rec = Recorder {
            block: vec![0; SLOT_LEN],
            meta: vec![0; META_LEN],
            ops: Vec::new(),
        };
        let mut active = st.begin(&mut rec, gen, 1, 0).unwrap();
        st.append(&mut rec, &mut active, text).unwrap();
        if slot == 0 {
            st.seal(&mut rec, &mut active, 2).unwrap();
            write_intent(
                &mut rec.meta,
                &Intent {
                    in_cache: false,
                    name: "a_1.xlog".into(),
                    offset: 99,
                    written: Some((1234, 0xDEAD_BEEF)),
                    file_id: 42,
                },
                gen,
                active.body_len as u32,
            );
        }
        file[slot * SLOT_LEN..(slot + 1) * SLOT_LEN].copy_from_slice(&rec.block);
        file[META_BASE + slot * META_LEN..META_BASE + (slot + 1) * META_LEN]
            .copy_from_slice(&rec.meta);
    }
    let r = recover(&file, 4);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].gen, 6);
    assert_eq!(
        r[0].intent,
        Some(Intent {
            in_cache: false,
            name: "a_1.xlog".into(),
            offset: 99,
            written: Some((1234, 0xDEAD_BEEF)),
            file_id: 42,
        })
    );
    assert_eq!(r[1].intent, None);
    assert_eq!(recovered_text(&file), b"first!\nsecond\n");
}

#[test]
fn a_mars_buffer_file_is_recovered() {
    // The real Mars vector, kept in the decoder crate's test data.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../xlog-decode/tests/data/06_crash_recovery/after_crash/crash.mmap3"
    );
    let file = std::fs::read(path).expect("the Mars .mmap3 test vector");
    let r = recover(&file, 9);
    assert_eq!(r.len(), 1);
    let v = BlockView::parse(&r[0].block).unwrap();
    assert_eq!(v.header.magic, 0x07);
    assert_eq!(v.header.seq, 4);
    assert_eq!(v.header.end_hour, 9);
}

#[test]
fn precomputed_and_computed_keystreams_stage_the_same_recoverable_text() {
    for c in [Compression::Zlib, Compression::Zstd] {
        let mut st = stream_stager(c);
        let key = st.stream_key().unwrap();
        let lines: Vec<Vec<u8>> = (0..200)
            .map(|i| format!("[I][line {i}] {}\n", "y".repeat(i % 50)).into_bytes())
            .collect();
        let mut blocks = Vec::new();
        for gen in [1u64, 2] {
            if gen == 2 {
                let mut buf = st.take_spent_keystream().unwrap_or_default();
                compute_keystream(&key, gen, &mut buf);
                st.install_keystream(gen, buf);
            }
            let mut rec = Recorder {
                block: vec![0; SLOT_LEN],
                meta: vec![0; META_LEN],
                ops: Vec::new(),
            };
            let mut active = st.begin(&mut rec, gen, 1, 0).unwrap();
            for l in &lines {
                st.append(&mut rec, &mut active, l).unwrap();
            }
            assert_eq!(
                recovered_text(&as_file(&rec.block, &rec.meta)),
                lines.concat(),
                "{c:?} gen {gen}"
            );
            // No line is in clear in the staged bytes.
            assert!(!rec.block.windows(9).any(|w| w == b"[line 17]"));
            st.seal(&mut rec, &mut active, 1).unwrap();
            blocks.push(rec.block);
        }
        assert_ne!(blocks[0], blocks[1]);
    }
}

#[test]
fn an_intent_counts_only_when_intact_and_bound_to_the_slots_block() {
    let mut st = stager(Compression::Zlib, false);
    let mut rec = Recorder {
        block: vec![0; SLOT_LEN],
        meta: vec![0; META_LEN],
        ops: Vec::new(),
    };
    let mut active = st.begin(&mut rec, 5, 1, 0).unwrap();
    st.append(&mut rec, &mut active, b"line\n").unwrap();
    st.seal(&mut rec, &mut active, 2).unwrap();
    let intent = Intent {
        in_cache: false,
        name: "a.xlog".into(),
        offset: 7,
        written: Some((30, 0x1234)),
        file_id: 0,
    };
    let body = active.body_len as u32;
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut meta = rec.meta.clone();
        f(&mut meta);
        recover(&as_file(&rec.block, &meta), 1)[0].intent.clone()
    };
    assert_eq!(
        with(&|m| write_intent(m, &intent, 5, body)),
        Some(intent.clone())
    );
    // Another block's intent (generation or length), a damaged record, or a cleared one.
    assert_eq!(with(&|m| write_intent(m, &intent, 4, body)), None);
    assert_eq!(with(&|m| write_intent(m, &intent, 5, body + 1)), None);
    assert_eq!(
        with(&|m| {
            write_intent(m, &intent, 5, body);
            m[M_WRITTEN_LEN + 3] ^= 0x80;
        }),
        None
    );
    let mut region = Region {
        block: Backing::Heap(rec.block.clone()),
        meta: Backing::Heap(rec.meta.clone()),
        slot: 0,
        file: 0,
    };
    write_intent(&mut region.meta, &intent, 5, body);
    region.clear_after_write();
    assert!(region.meta[M_INTENT..].iter().all(|&b| b == 0));
    // Even with the flag set again, nothing is left to match.
    let mut meta = region.meta.to_vec();
    meta[M_INTENT] = 1;
    assert_eq!(
        parse_intent(&meta).map(|(i, _, _)| i),
        None,
        "a cleared record is no intent"
    );
}

/// A zstd block as a version of this crate before the 99 999-byte cap staged it (raw blocks,
/// no key, up to the whole slot): `min_body` bytes or more of numbered lines. Returns the
/// block as [`recover`] returns it and its text.
fn uncapped_zstd_block(min_body: usize) -> (Vec<u8>, Vec<u8>) {
    let mut framer = StoredFramer::new(true, false);
    let (mut body, mut text) = (Vec::new(), Vec::new());
    let mut i = 0;
    while body.len() < min_body {
        let line = format!(
            "[I][line {i:06}] {}\n",
            "staged before the cap ".repeat(i % 7)
        );
        framer.frame_line(line.as_bytes(), &mut body);
        text.extend_from_slice(line.as_bytes());
        i += 1;
    }
    let magic = async_magic(Compression::Zstd, Encryption::None);
    let mut block = Vec::new();
    crate::block::emit_block(&mut block, magic, 9, 3, &[0; 64], &body);
    (block, text)
}

/// The blocks `bytes` is made of (panics if it is not a sequence of well-formed blocks).
fn split_blocks(bytes: &[u8]) -> Vec<BlockView<'_>> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < bytes.len() {
        let v = BlockView::parse(&bytes[off..]).expect("well-formed block");
        off += v.total_len();
        out.push(v);
    }
    out
}

/// A block an older version staged past the cap is cut anew into blocks below it, holding the
/// same text in order, and no longer than it was; a block below the cap is left alone.
#[test]
fn an_uncapped_zstd_block_is_cut_anew_below_the_cap() {
    let (block, text) = uncapped_zstd_block(SLOT_LEN - HEADER_LEN - 200);
    let out = mars_readable(&block, 1);
    assert!(out.len() <= block.len());
    let blocks = split_blocks(&out);
    let mut decoded = Vec::new();
    for (i, v) in blocks.iter().enumerate() {
        assert!(v.body.len() <= ZSTD_MAX_BODY, "{}", v.body.len());
        assert_eq!(v.header.seq, if i == 0 { 9 } else { 0 });
        assert_eq!((v.header.begin_hour, v.header.end_hour), (3, 3));
        decoded.extend_from_slice(&decode_body(v.header.magic, v.body));
    }
    assert_eq!(decoded, text);
    let (small, _) = uncapped_zstd_block(ZSTD_MAX_BODY - 20_000);
    assert!(matches!(
        mars_readable(&small, 1),
        std::borrow::Cow::Borrowed(_)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// A damaged large zstd block never makes the cut panic or hang: the result is the block
    /// itself, or well-formed blocks below the cap and no longer than it.
    #[test]
    fn cutting_a_damaged_zstd_block_anew_never_panics(
        flips in prop::collection::vec((0usize..120_000, any::<u8>()), 0..6),
        truncate in 100_100usize..120_000,
    ) {
        let (block, _) = uncapped_zstd_block(110_000);
        let mut block = block;
        for (i, b) in flips {
            if let Some(x) = block.get_mut(HEADER_LEN + i) {
                *x ^= b;
            }
        }
        // A shorter body, with the length field and end byte to match.
        let body_len = (truncate).min(block.len() - HEADER_LEN - 1);
        block.truncate(HEADER_LEN + body_len);
        block[LEN_OFFSET..LEN_OFFSET + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
        block.push(MAGIC_END);
        let out = mars_readable(&block, 1);
        let readable = zstd_decompress_capped(&block[HEADER_LEN..block.len() - 1], 1 << 24);
        // These lines compress far below the cap: a body that decodes is always cut anew.
        prop_assert_eq!(readable.is_some(), out[..] != block[..]);
        if out[..] != block[..] {
            prop_assert!(out.len() <= block.len());
            for v in split_blocks(&out) {
                prop_assert!(v.body.len() <= ZSTD_MAX_BODY);
            }
        }
    }
}
