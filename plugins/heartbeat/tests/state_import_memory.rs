//! Importing a damaged or hostile heartbeat state file costs memory in proportion to what
//! is kept, not to the file: the driver reads up to 8 MiB of it at start-up.

// A counting global allocator needs `unsafe` (it only forwards to the system's).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use phobos_heartbeat::SmartHeartbeat;
use phobos_plugin_api::HeartbeatPolicyFactory;

/// The system allocator, keeping the bytes in use and their peak.
struct Peak;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is the system allocator's; only counters are added.
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static ALLOC: Peak = Peak;

/// The peak of bytes allocated beyond those in use before, while `f` runs.
fn peak_extra(f: impl FnOnce()) -> usize {
    let base = IN_USE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    f();
    PEAK.load(Ordering::SeqCst) - base
}

/// 8 MiB of empty sections, of sections with an unknown key each, and of one section with a
/// million keys: each import stays within the file's own size. (The whole file was parsed
/// into sections before any was dropped: 24 times the file for the empty sections.)
#[test]
fn a_hostile_state_file_is_imported_in_memory_bounded_by_its_size() {
    const SIZE: usize = 8 << 20;
    let empty = "[]\n".repeat(SIZE / 3);
    let unknown = "[a]\nk=v\n".repeat(SIZE / 8);
    let keys: String = std::iter::once("[a]\n".to_owned())
        .chain((0..SIZE / 10).map(|i| format!("k{i:07}=\n")))
        .collect();
    for (what, text) in [("empty", &empty), ("unknown", &unknown), ("keys", &keys)] {
        let factory = SmartHeartbeat::default();
        let extra = peak_extra(|| {
            factory.import_state(text);
        });
        assert!(
            extra < text.len(),
            "{what}: {extra} bytes at the peak to import {} bytes",
            text.len()
        );
    }
}
