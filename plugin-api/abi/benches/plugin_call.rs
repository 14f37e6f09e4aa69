//! `plugin_call`: the cost of calling a plugin through the stable ABI.
//!
//! Encodes a frame with a 1 KiB body and decodes it again through the Mars codec, in-process
//! and loaded from `plugins/codec-mars` built as a cdylib (release profile, built by this
//! bench into `target/tmp/plugin-fixtures`, in whatever target directory the bench is built).
//! Both run in one process, side by side, and the bench prints the ratio dynamic / in-process
//! at the end.
//!
//! Run: `cargo bench -p phobos-plugin-abi --bench plugin_call -- --measurement-time 2`
//!
//! Groups: `roundtrip` (encode + decode), `encode`, `encode_empty` (the fixed cost of a call)
//! and `decode`, each as `in_process`, `adapters_no_library` (both adapters in this binary, to
//! separate adapter cost from library cost) and `dynamic`.
//!
//! Where the gap comes from (callgrind, per 1 KiB round trip): the loaded path executes about
//! three times the instructions of the in-process one, a third of the difference being the
//! extra copy of the frame (the plugin encodes into its own buffer, then appends it to the
//! host's `Vec`, whose allocator it cannot use) and the rest the two boundary crossings: the
//! vtable shims, the panic guards, the scratch-buffer lock and the append callback.

#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use phobos_codec_mars::{MarsCodec, MarsCodecConfig};
use phobos_plugin_abi::PluginLibrary;
use phobos_plugin_api::codec::{Decoded, FrameHead, PacketCodec};
use phobos_plugin_api::{CmdId, Seq};

const BODY_LEN: usize = 1024;

/// One encode + decode of a 1 KiB frame; `out` is reused, as a link's buffer would be.
fn round_trip(codec: &dyn PacketCodec, body: &[u8], out: &mut Vec<u8>) -> usize {
    out.clear();
    codec
        .encode(FrameHead::new(CmdId(42), Seq(7)), body, &[], out)
        .expect("encode");
    match codec.decode(out).expect("decode") {
        Decoded::Frame(f) => f.body.len(),
        Decoded::Incomplete { .. } => unreachable!("a whole frame was given"),
    }
}

fn codecs() -> (Arc<dyn PacketCodec>, Arc<dyn PacketCodec>) {
    let in_process: Arc<dyn PacketCodec> =
        Arc::new(MarsCodec::new(MarsCodecConfig::default()).expect("default config is valid"));
    let lib = PluginLibrary::load(common::release_mars()).expect("load the Mars plugin library");
    let dynamic = lib.codec("mars", None).expect("build the loaded codec");
    (in_process, dynamic)
}

fn bench(c: &mut Criterion, in_process: &dyn PacketCodec, dynamic: &dyn PacketCodec) {
    let body = vec![0xA5u8; BODY_LEN];
    let adapters = phobos_plugin_abi::import_codec(
        phobos_plugin_abi::export_codec(MarsCodec::new(MarsCodecConfig::default()).unwrap())
            .unwrap(),
        "bench",
    );
    let mut group = c.benchmark_group("plugin_call_codec_roundtrip_1KiB");
    group.throughput(Throughput::Bytes(BODY_LEN as u64));
    for (id, codec) in [
        ("in_process", in_process),
        ("adapters_no_library", &*adapters),
        ("dynamic", dynamic),
    ] {
        let mut out = Vec::with_capacity(2 * BODY_LEN);
        group.bench_function(id, |b| {
            b.iter(|| round_trip(black_box(codec), black_box(&body), &mut out))
        });
    }
    group.finish();

    let mut wire = Vec::new();
    in_process
        .encode(FrameHead::new(CmdId(42), Seq(7)), &body, &[], &mut wire)
        .expect("encode");
    let mut group = c.benchmark_group("plugin_call_codec_encode_1KiB");
    for (id, codec) in [
        ("in_process", in_process),
        ("adapters_no_library", &*adapters),
        ("dynamic", dynamic),
    ] {
        let mut out = Vec::with_capacity(2 * BODY_LEN);
        group.bench_function(id, |b| {
            b.iter(|| {
                out.clear();
                black_box(codec).encode(
                    FrameHead::new(CmdId(42), Seq(7)),
                    black_box(&body),
                    &[],
                    &mut out,
                )
            })
        });
    }
    group.finish();
    let mut group = c.benchmark_group("plugin_call_codec_encode_empty");
    for (id, codec) in [
        ("in_process", in_process),
        ("adapters_no_library", &*adapters),
    ] {
        let mut out = Vec::with_capacity(2 * BODY_LEN);
        group.bench_function(id, |b| {
            b.iter(|| {
                out.clear();
                black_box(codec).encode(
                    FrameHead::new(CmdId(42), Seq(7)),
                    black_box(&[]),
                    &[],
                    &mut out,
                )
            })
        });
    }
    group.finish();
    let mut group = c.benchmark_group("plugin_call_codec_decode_1KiB");
    for (id, codec) in [
        ("in_process", in_process),
        ("adapters_no_library", &*adapters),
        ("dynamic", dynamic),
    ] {
        group.bench_function(id, |b| b.iter(|| black_box(codec).decode(black_box(&wire))));
    }
    group.finish();
}

/// Interleaved batches of both, so machine noise hits them alike; returns the median
/// nanoseconds per round trip of each.
fn side_by_side(in_process: &dyn PacketCodec, dynamic: &dyn PacketCodec) -> (f64, f64) {
    const BATCH: u32 = 20_000;
    const BATCHES: usize = 15;
    let body = vec![0xA5u8; BODY_LEN];
    let mut out = Vec::with_capacity(2 * BODY_LEN);
    let mut time = |codec: &dyn PacketCodec| {
        let start = Instant::now();
        for _ in 0..BATCH {
            black_box(round_trip(black_box(codec), black_box(&body), &mut out));
        }
        start.elapsed().as_nanos() as f64 / f64::from(BATCH)
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..BATCHES {
        a.push(time(in_process));
        b.push(time(dynamic));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(&mut a), median(&mut b))
}

fn main() {
    let (in_process, dynamic) = codecs();
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .configure_from_args();
    bench(&mut c, &*in_process, &*dynamic);
    c.final_summary();

    let (a, b) = side_by_side(&*in_process, &*dynamic);
    println!(
        "plugin_call_codec_roundtrip_1KiB: in-process {a:.1} ns, dynamic {b:.1} ns, \
         ratio dynamic/in-process = {:.2}x (target <= 1.5x)",
        b / a
    );
}
