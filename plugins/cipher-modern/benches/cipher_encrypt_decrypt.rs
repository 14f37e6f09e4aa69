//! ChaCha20-Poly1305 throughput through the `LogCipher` API: 64 KiB of compressed bytes fed in line-sized
//! pieces (as the writer stages them), and one block decrypted.
//!
//! `cargo bench -p phobos-cipher-modern --bench cipher_encrypt_decrypt`
#![allow(missing_docs)] // criterion_group! generates undocumented items.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use phobos_cipher_modern::ModernCipher;
use phobos_plugin_api::LogCipher;

fn cipher_encrypt_decrypt(c: &mut Criterion) {
    let pair = ModernCipher::generate_key_pair();
    let writer = ModernCipher::from_public_key_hex(&pair.public_key).unwrap();
    let reader = ModernCipher::from_private_key_hex(&pair.private_key).unwrap();
    let plain: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(31) >> 3) as u8)
        .collect();

    let mut group = c.benchmark_group("modern_aead");
    group.throughput(Throughput::Bytes(plain.len() as u64));
    let mut enc = writer.new_encryptor().unwrap();
    group.bench_function("encrypt_64k_in_45_byte_lines", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(plain.len());
            let mut pending = Vec::new();
            for piece in plain.chunks(45) {
                pending.extend_from_slice(piece);
                let used = enc.encrypt(&pending, &mut out).unwrap();
                pending.drain(..used);
            }
            enc.finish_block(&pending, &mut out).unwrap();
            black_box(out)
        })
    });
    let mut body = Vec::new();
    let used = enc.encrypt(&plain, &mut body).unwrap();
    enc.finish_block(&plain[used..], &mut body).unwrap();
    let mut dec = reader.new_decryptor(&enc.header_key()).unwrap();
    group.bench_function("decrypt_64k_block", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(body.len());
            dec.decrypt_block(black_box(&body), &mut out).unwrap();
            out
        })
    });
    group.finish();

    // The per-session (writer) and per-header-key (reader) X25519 + HKDF cost.
    let mut group = c.benchmark_group("modern_x25519_hkdf");
    group.bench_function("new_encryptor", |b| {
        b.iter(|| writer.new_encryptor().unwrap())
    });
    let key = enc.header_key();
    group.bench_function("new_decryptor", |b| {
        b.iter(|| reader.new_decryptor(&key).unwrap())
    });
    group.finish();
}

criterion_group!(benches, cipher_encrypt_decrypt);
criterion_main!(benches);
