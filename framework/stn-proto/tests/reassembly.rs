//! A large response arriving in many small reads is put together in linear work.
//!
//! The bound is on memory allocated, counted by this test binary's own allocator (every test
//! file is its own process), not on time: the count is the same on any machine.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::{FrameHead, PacketCodec, Seq};
use phobos_stn_proto::{Action, CmdId, Config, Engine, Event, LinkConfig, TaskSpec};

/// The system allocator, counting the bytes it hands out (growths count their new size).
struct Counting;

static ALLOCATED: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees carry over; the counter has no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Held by each test while it counts: the counter is the process's, and tests run on
/// parallel threads.
static COUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`COUNTING`] (a test that failed holding it does not stop the others).
fn counting() -> std::sync::MutexGuard<'static, ()> {
    COUNTING.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connected engine with `n` tasks running on its link: the engine, its codec, the
/// link's connection, the tasks' sequence numbers, and the start instant.
fn running_tasks(
    n: usize,
) -> (
    Engine,
    Arc<dyn PacketCodec>,
    phobos_stn_proto::ConnId,
    Vec<Seq>,
    Instant,
) {
    let codec: Arc<dyn PacketCodec> = Arc::new(MarsCodec::default());
    let t0 = Instant::now();
    let addr = "10.0.0.1:8080"
        .parse::<std::net::SocketAddr>()
        .unwrap()
        .into();
    let config = Config::builder(codec.clone())
        .link(LinkConfig::new("default-longlink").addrs([addr]))
        .build()
        .unwrap();
    let mut engine = Engine::new(config, t0).unwrap();
    let spec = || TaskSpec::new(CmdId(42), &b"q"[..]).with_limits(false, false);
    let seqs = (0..n)
        .map(|_| Seq(engine.start_task(t0, spec()).0))
        .collect();
    let Some(Action::Connect { attempt, .. }) = engine.poll_action() else {
        panic!("expected a connect")
    };
    engine.handle_connected(t0 + Duration::from_millis(40), attempt);
    while engine.poll_action().is_some() {}
    (engine, codec, attempt, seqs, t0)
}

#[test]
fn a_large_response_in_small_reads_is_put_together_in_linear_memory() {
    let _counting = counting();
    const BODY: usize = 1000 * 1024;
    const READ: usize = 1024;
    let (mut engine, codec, conn, seqs, t0) = running_tasks(1);
    let seq = seqs[0];
    let body: Vec<u8> = (0..BODY).map(|i| (i % 251) as u8).collect();
    let mut frame = Vec::new();
    codec
        .encode(FrameHead::new(CmdId(42), seq), &body, &[], &mut frame)
        .unwrap();
    let reads: Vec<Bytes> = frame.chunks(READ).map(Bytes::copy_from_slice).collect();
    let t = t0 + Duration::from_millis(100);

    let before = ALLOCATED.load(Ordering::Relaxed);
    for read in reads {
        engine.handle_data(t, conn, read);
    }
    let allocated = ALLOCATED.load(Ordering::Relaxed) - before;

    let end = std::iter::from_fn(|| engine.poll_event())
        .find_map(|e| match e {
            Event::TaskEnded(end) => Some(end),
            _ => None,
        })
        .expect("the task ended");
    assert!(end.outcome.expect("a response").body == body);
    // Putting the frame together copies each byte a bounded number of times: a few times
    // the frame in all (a buffer that doubles allocates at most twice its final size). A
    // copy of everything kept so far on every read would come to about frame² / (2 × read),
    // 500 MiB here.
    assert!(
        allocated < 8 * frame.len() as u64,
        "{allocated} bytes allocated to put together a {} byte frame from {READ}-byte reads",
        frame.len()
    );
}

#[test]
fn many_responses_cut_at_odd_places_all_arrive_whole() {
    let _counting = counting();
    // Bodies from 0 bytes to 24 KB, so frames end anywhere within a read and span up to
    // 25 reads.
    let lens: Vec<usize> = (0..200).map(|i| (i * 7919) % 24_000).collect();
    let (mut engine, codec, attempt, seqs, t0) = running_tasks(lens.len());
    let mut stream = Vec::new();
    for (seq, &len) in seqs.iter().zip(&lens) {
        let body: Vec<u8> = (0..len).map(|i| (i as u32 ^ seq.0) as u8).collect();
        codec
            .encode(FrameHead::new(CmdId(42), *seq), &body, &[], &mut stream)
            .unwrap();
    }
    let t = t0 + Duration::from_millis(100);
    let before = ALLOCATED.load(Ordering::Relaxed);
    for read in stream.chunks(1000) {
        engine.handle_data(t, attempt, Bytes::copy_from_slice(read));
    }
    let allocated = ALLOCATED.load(Ordering::Relaxed) - before;
    let mut ended = 0;
    while let Some(event) = engine.poll_event() {
        if let Event::TaskEnded(end) = event {
            let i = seqs.iter().position(|s| s.0 == end.id.0).expect("own task");
            let body = end.outcome.expect("a response").body;
            assert_eq!(body.len(), lens[i]);
            assert!(body
                .iter()
                .enumerate()
                .all(|(k, b)| *b == (k as u32 ^ end.id.0) as u8));
            ended += 1;
        }
    }
    assert_eq!(ended, seqs.len());
    // The reads themselves (copied here) and the kept partial frames: each byte is kept at
    // most once after the read it came in, plus buffer growth and the tasks' ends.
    assert!(
        allocated < 6 * stream.len() as u64,
        "{allocated} bytes allocated for a {} byte stream",
        stream.len()
    );
}
