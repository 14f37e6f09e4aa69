//! Encode and decode of one 1 KiB-body frame with `MarsCodec`.
//!
//! Run with `cargo bench -p phobos-codec-mars --bench codec_encode_decode`.

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::{CmdId, Decoded, FrameHead, PacketCodec, Seq};

fn encode_decode(c: &mut Criterion) {
    let codec = MarsCodec::default();
    let body = vec![0x5Au8; 1024];
    let head = FrameHead::new(CmdId(1001), Seq(42));
    let mut out = Vec::with_capacity(2048);

    let mut group = c.benchmark_group("codec_mars_1KiB");
    group.throughput(Throughput::Bytes(1024 + 20));
    group.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            codec
                .encode(black_box(head), black_box(&body), &[], &mut out)
                .unwrap();
            black_box(out.len())
        })
    });

    let mut wire = Vec::new();
    codec.encode(head, &body, &[], &mut wire).unwrap();
    group.bench_function("decode", |b| {
        b.iter(|| match codec.decode(black_box(&wire)).unwrap() {
            Decoded::Frame(f) => black_box(f.len),
            Decoded::Incomplete { .. } => unreachable!("whole frame"),
        })
    });

    group.bench_function("encode_decode", |b| {
        b.iter(|| {
            out.clear();
            codec
                .encode(black_box(head), black_box(&body), &[], &mut out)
                .unwrap();
            match codec.decode(black_box(&out)).unwrap() {
                Decoded::Frame(f) => black_box(f.body.len()),
                Decoded::Incomplete { .. } => unreachable!("whole frame"),
            }
        })
    });
    group.finish();
}

criterion_group!(benches, encode_decode);
criterion_main!(benches);
