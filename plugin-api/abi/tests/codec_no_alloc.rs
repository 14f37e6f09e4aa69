//! The codec's hot path allocates nothing per call once warmed up: decode returns offsets,
//! encode appends to the caller's buffer through a reused scratch buffer.
//!
//! Both adapters run in this process (export, then import), so this binary's counting
//! allocator sees the plugin side and the host side alike.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use phobos_codec_mars::{MarsCodec, MarsCodecConfig};
use phobos_plugin_abi::{export_codec, import_codec};
use phobos_plugin_api::codec::{Decoded, FrameHead};
use phobos_plugin_api::{CmdId, Seq};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees carry over; the counter has no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; `ptr` came from `System` through `alloc`/`realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is; `ptr` came from `System` through `alloc`/`realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn encode_and_decode_through_the_adapters_do_not_allocate() {
    let codec = import_codec(
        export_codec(MarsCodec::new(MarsCodecConfig::default()).unwrap()).unwrap(),
        "test",
    );
    let body = vec![0x5Au8; 1024];
    let mut out = Vec::with_capacity(4096);
    let round_trip = |out: &mut Vec<u8>| {
        out.clear();
        codec
            .encode(FrameHead::new(CmdId(1), Seq(2)), &body, &[], out)
            .unwrap();
        codec.encode_heartbeat(out).unwrap();
        match codec.decode(out).unwrap() {
            Decoded::Frame(f) => assert_eq!(f.body.len(), 1024),
            Decoded::Incomplete { .. } => panic!("whole frame given"),
        }
    };
    // Warm up: the plugin side's per-thread scratch buffer grows once.
    round_trip(&mut out);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..100 {
        round_trip(&mut out);
    }
    assert_eq!(ALLOCATIONS.load(Ordering::Relaxed) - before, 0);
}
