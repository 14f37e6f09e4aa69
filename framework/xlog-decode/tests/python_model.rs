//! Differential test: the decoder's framing, resync and sequence reporting against a literal
//! transliteration of the official Python decoder's control flow (`is_good_log_buffer`,
//! `get_log_start_pos` on the sliced buffer, `decode_buffer`, `parse_file`), on random files
//! built from plausible blocks, damaged ones and junk. Bodies are not decoded here; each block
//! shows up as `B<offset>`.

use phobos_xlog_decode::{Decoder, Event, MagicSet};
use proptest::prelude::*;

const MAGICS: [u8; 11] = [
    0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D,
];

fn key_len(magic: u8) -> Option<usize> {
    match magic {
        0x03..=0x05 => Some(4),
        0x06..=0x0D => Some(64),
        _ => None,
    }
}

/// `is_good_log_buffer(_buffer, _offset, count)` → (good, reason).
fn is_good(buf: &[u8], offset: usize, count: usize) -> (bool, String) {
    if offset == buf.len() {
        return (true, String::new());
    }
    let Some(key) = key_len(buf[offset]) else {
        return (
            false,
            format!("_buffer[{offset}]:{} != MAGIC_NUM_START", buf[offset]),
        );
    };
    let header = 1 + 2 + 1 + 1 + 4 + key;
    if offset + header + 1 + 1 > buf.len() {
        return (
            false,
            format!("offset:{offset} > len(buffer):{}", buf.len()),
        );
    }
    let at = offset + header - 4 - key;
    let length = u32::from_le_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
    if offset + header + length + 1 > buf.len() {
        return (
            false,
            format!(
                "log length:{length}, end pos {} > len(buffer):{}",
                offset + header + length + 1,
                buf.len()
            ),
        );
    }
    let end = buf[offset + header + length];
    if end != 0 {
        return (
            false,
            format!(
                "log length:{length}, buffer[{}]:{end} != MAGIC_END",
                offset + header + length
            ),
        );
    }
    if count <= 1 {
        (true, String::new())
    } else {
        is_good(buf, offset + header + length + 1, count - 1)
    }
}

/// `get_log_start_pos(_buffer, _count)`.
fn start_pos(buf: &[u8], count: usize) -> Option<usize> {
    (0..buf.len()).find(|&o| MAGICS.contains(&buf[o]) && is_good(buf, o, count).0)
}

/// `parse_file` with `decode_buffer` inlined, emitting markers instead of text.
fn python(buf: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(mut offset) = start_pos(buf, 2) else {
        return out;
    };
    let mut last_seq: i64 = 0;
    loop {
        if offset >= buf.len() {
            break;
        }
        let (good, reason) = is_good(buf, offset, 1);
        if !good {
            // The scan runs on the slice `_buffer[_offset:]`.
            let Some(fix) = start_pos(&buf[offset..], 1) else {
                break;
            };
            out.push(format!("R{fix},{reason}"));
            offset += fix;
        }
        let key = key_len(buf[offset]).expect("a good block has a magic");
        let header = 9 + key;
        let length = u32::from_le_bytes(buf[offset + 5..offset + 9].try_into().unwrap()) as usize;
        let seq = i64::from(u16::from_le_bytes([buf[offset + 1], buf[offset + 2]]));
        if seq != 0 && seq != 1 && last_seq != 0 && seq != last_seq + 1 {
            out.push(format!("G{}-{}", last_seq + 1, seq - 1));
        }
        if seq != 0 {
            last_seq = seq;
        }
        out.push(format!("B{offset}"));
        offset += header + length + 1;
    }
    out
}

fn ours(buf: &[u8]) -> Vec<String> {
    let decoder = Decoder::builder().magic_set(MagicSet::Mars).build();
    decoder
        .events(buf)
        .map(|e| match e {
            Event::Resync { skipped, reason } => format!("R{skipped},{reason}"),
            Event::SeqGap { first, last } => format!("G{first}-{last}"),
            Event::Text { block, .. } | Event::Failed { block, .. } => format!("B{}", block.offset),
            other => panic!("unexpected event {other:?}"),
        })
        .collect()
}

#[derive(Clone, Debug)]
enum Piece {
    Block {
        magic: u8,
        seq: u16,
        body: Vec<u8>,
        trailer: u8,
        len_delta: i8,
    },
    Junk(Vec<u8>),
}

fn piece() -> impl Strategy<Value = Piece> {
    let block = (
        proptest::sample::select(MAGICS.to_vec()),
        prop_oneof![Just(0u16), Just(1), 2u16..8, any::<u16>()],
        proptest::collection::vec(any::<u8>(), 0..24),
        prop_oneof![8 => Just(0u8), 1 => any::<u8>()],
        prop_oneof![8 => Just(0i8), 1 => -3i8..4],
    )
        .prop_map(|(magic, seq, body, trailer, len_delta)| Piece::Block {
            magic,
            seq,
            body,
            trailer,
            len_delta,
        });
    // Junk drawn from bytes that matter: magics, zeros, small numbers.
    let junk =
        proptest::collection::vec(prop_oneof![0u8..16, any::<u8>()], 1..12).prop_map(Piece::Junk);
    prop_oneof![4 => block, 1 => junk]
}

fn build(pieces: &[Piece]) -> Vec<u8> {
    let mut file = Vec::new();
    for p in pieces {
        match p {
            Piece::Block {
                magic,
                seq,
                body,
                trailer,
                len_delta,
            } => {
                let key = key_len(*magic).unwrap();
                file.push(*magic);
                file.extend(seq.to_le_bytes());
                file.extend([7, 7]);
                let len = (body.len() as i64 + i64::from(*len_delta)).max(0) as u32;
                file.extend(len.to_le_bytes());
                file.extend(std::iter::repeat_n(0u8, key));
                file.extend(body);
                file.push(*trailer);
            }
            Piece::Junk(bytes) => file.extend(bytes),
        }
    }
    file
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn framing_matches_the_python_decoder(
        pieces in proptest::collection::vec(piece(), 0..12),
        cut in any::<u16>(),
    ) {
        let mut file = build(&pieces);
        // Sometimes cut the file short.
        if cut % 4 == 0 && !file.is_empty() {
            file.truncate(usize::from(cut) % file.len());
        }
        prop_assert_eq!(ours(&file), python(&file));
    }

    #[test]
    fn framing_matches_on_random_bytes(file in proptest::collection::vec(prop_oneof![0u8..16, any::<u8>()], 0..400)) {
        prop_assert_eq!(ours(&file), python(&file));
    }
}

#[test]
fn framing_matches_on_the_corrupted_vector() {
    let file = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/07_corrupted/corrupted.xlog"),
    )
    .unwrap();
    let model = python(&file);
    assert!(model.iter().filter(|m| m.starts_with('R')).count() == 3);
    assert_eq!(ours(&file), model);
}
