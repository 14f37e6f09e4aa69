//! Decode throughput on the real Mars vectors (input bytes per second).
//!
//! `cargo bench -p phobos-xlog-decode --bench xlog_decode`
#![allow(missing_docs)] // criterion_group! generates undocumented items.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use phobos_cipher_mars::MarsCipher;
use phobos_xlog_decode::Decoder;

const PRIVATE: &str = "b404e0f7d50323e5327c23603878c594189d63e76e4550fdea108b9ea41d3885";

fn xlog_decode(c: &mut Criterion) {
    let decoder = Decoder::builder()
        .cipher(Arc::new(MarsCipher::from_private_key_hex(PRIVATE).unwrap()))
        .build();
    let vectors: [(&str, &[u8]); 5] = [
        (
            "zlib",
            include_bytes!("../tests/data/01_async_zlib_nocrypt/demo_20261126.xlog"),
        ),
        (
            "zlib_tea",
            include_bytes!("../tests/data/02_async_zlib_crypt/demo_20261126.xlog"),
        ),
        (
            "zstd",
            include_bytes!("../tests/data/03_async_zstd_nocrypt/demo_20261126.xlog"),
        ),
        (
            "zstd_tea",
            include_bytes!("../tests/data/04_async_zstd_crypt/demo_20261126.xlog"),
        ),
        (
            "corrupted",
            include_bytes!("../tests/data/07_corrupted/corrupted.xlog"),
        ),
    ];
    let mut group = c.benchmark_group("xlog_decode");
    for (name, file) in vectors {
        group.throughput(Throughput::Bytes(file.len() as u64));
        group.bench_function(name, |b| b.iter(|| decoder.decode(black_box(file))));
    }
    group.finish();
}

criterion_group!(benches, xlog_decode);
criterion_main!(benches);
