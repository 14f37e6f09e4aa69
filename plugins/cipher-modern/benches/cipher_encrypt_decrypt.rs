//! Both log ciphers side by side through the `LogCipher` API: Mars's TEA (the baseline) and
//! X25519 + ChaCha20-Poly1305. 64 KiB of compressed bytes fed in line-sized pieces (as the
//! writer stages them), one block decrypted, and the per-session key agreement.
//!
//! `cargo bench -p phobos-cipher-modern --bench cipher_encrypt_decrypt`
#![allow(missing_docs)] // criterion_group! generates undocumented items.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use phobos_cipher_mars::MarsCipher;
use phobos_cipher_modern::ModernCipher;
use phobos_plugin_api::LogCipher;

/// A cipher's name, its writer (public key) and its reader (private key).
type Contender = (&'static str, Box<dyn LogCipher>, Box<dyn LogCipher>);

fn cipher_encrypt_decrypt(c: &mut Criterion) {
    let mars = MarsCipher::generate_key_pair();
    let modern = ModernCipher::generate_key_pair();
    let ciphers: [Contender; 2] = [
        (
            "mars_tea",
            Box::new(MarsCipher::from_public_key_hex(&mars.public_key).unwrap()),
            Box::new(MarsCipher::from_private_key_hex(&mars.private_key).unwrap()),
        ),
        (
            "modern_aead",
            Box::new(ModernCipher::from_public_key_hex(&modern.public_key).unwrap()),
            Box::new(ModernCipher::from_private_key_hex(&modern.private_key).unwrap()),
        ),
    ];
    let plain: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(31) >> 3) as u8)
        .collect();

    let mut group = c.benchmark_group("cipher_encrypt_64k_in_45_byte_lines");
    group.throughput(Throughput::Bytes(plain.len() as u64));
    for (name, writer, _) in &ciphers {
        let mut enc = writer.new_encryptor().unwrap();
        group.bench_function(*name, |b| {
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
    }
    group.finish();

    let mut group = c.benchmark_group("cipher_decrypt_64k_block");
    group.throughput(Throughput::Bytes(plain.len() as u64));
    for (name, writer, reader) in &ciphers {
        let mut enc = writer.new_encryptor().unwrap();
        let mut body = Vec::new();
        let used = enc.encrypt(&plain, &mut body).unwrap();
        enc.finish_block(&plain[used..], &mut body).unwrap();
        let mut dec = reader.new_decryptor(&enc.header_key()).unwrap();
        group.bench_function(*name, |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(body.len());
                dec.decrypt_block(black_box(&body), &mut out).unwrap();
                out
            })
        });
    }
    group.finish();

    // The per-session (writer) and per-header-key (reader) key agreement.
    let mut group = c.benchmark_group("cipher_key_agreement");
    for (name, writer, reader) in &ciphers {
        group.bench_function(format!("{name}/new_encryptor"), |b| {
            b.iter(|| writer.new_encryptor().unwrap())
        });
        let key = writer.new_encryptor().unwrap().header_key();
        group.bench_function(format!("{name}/new_decryptor"), |b| {
            b.iter(|| reader.new_decryptor(&key).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, cipher_encrypt_decrypt);
criterion_main!(benches);
