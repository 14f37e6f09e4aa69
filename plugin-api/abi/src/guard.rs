//! Keeping panics on the plugin's side of the boundary, and moving byte buffers across it
//! without allocating.

use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::TryLockError;

use crate::types::FfiAppend;

/// Owns a plugin object on the plugin side and drops it under [`catch`], so a panicking
/// `Drop` does not reach the abi_stable drop shim (which would abort). Whatever such a drop
/// failed to release is leaked.
pub(crate) struct Guarded<T>(ManuallyDrop<T>);

impl<T> Guarded<T> {
    pub(crate) fn new(value: T) -> Self {
        Guarded(ManuallyDrop::new(value))
    }
}

impl<T> Deref for Guarded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Guarded<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T> Drop for Guarded<T> {
    fn drop(&mut self) {
        // SAFETY: this is the only place taking the value out, `drop` runs once, and the
        // `ManuallyDrop` is never used again afterwards.
        let value = unsafe { ManuallyDrop::take(&mut self.0) };
        let _ = drop_caught(value);
    }
}

/// Runs `f`, turning a panic into `Err(message)`; a payload that panics again when dropped is
/// contained too (`phobos_plugin_api::panics::catch`, shared with the in-process guards).
///
/// Every plugin-side adapter method goes through this, because abi_stable aborts the process
/// when a panic reaches an `extern "C"` vtable shim.
pub(crate) use phobos_plugin_api::panics::catch;
use phobos_plugin_api::panics::drop_caught;

/// Plugin side: gives the plugin a `Vec<u8>` to append to and appends what it wrote to the
/// host's buffer through `out`, only when `f` succeeds (so the host's buffer is untouched on
/// error).
///
/// The `Vec` is a per-thread scratch buffer reused across calls, so steady-state calls do not
/// allocate. (The plugin cannot append to the host's `Vec` itself: it may have been allocated
/// by another allocator.) Must run inside [`catch`]: if the host fails to take the bytes,
/// this panics, and the caller reports the call as failed.
#[inline]
pub(crate) fn with_scratch<T, E>(
    out: &mut FfiAppend<'_>,
    f: impl FnOnce(&mut Vec<u8>) -> Result<T, E>,
) -> Result<T, E> {
    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            scratch.clear();
            let result = f(&mut scratch);
            if result.is_ok() {
                hand_over(out, &scratch);
            }
            if scratch.capacity() > MAX_KEPT_SCRATCH {
                *scratch = Vec::new();
            }
            result
        }
        // Re-entered from inside a plugin call on this thread: use a fresh buffer.
        Err(_) => {
            let mut fresh = Vec::new();
            let result = f(&mut fresh);
            if result.is_ok() {
                hand_over(out, &fresh);
            }
            result
        }
    })
}

fn hand_over(out: &mut FfiAppend<'_>, bytes: &[u8]) {
    assert!(
        out.extend(bytes),
        "the host could not take the plugin's output"
    );
}

/// A plugin object's own scratch buffer, for objects shared across threads: calls that find
/// it busy (another thread, or re-entry) use a fresh buffer.
#[derive(Default)]
pub(crate) struct Scratch(std::sync::Mutex<Vec<u8>>);

impl Scratch {
    /// As [`with_scratch`], with this buffer.
    #[inline]
    pub(crate) fn with<T, E>(
        &self,
        out: &mut FfiAppend<'_>,
        f: impl FnOnce(&mut Vec<u8>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut fresh;
        let mut guard = match self.0.try_lock() {
            Ok(guard) => Some(guard),
            // A plugin panic (caught) unwound while the buffer was in use. The buffer is
            // cleared before every use, so it is as good as ever; left poisoned, every later
            // call took a fresh buffer and allocated.
            Err(TryLockError::Poisoned(poisoned)) => {
                self.0.clear_poison();
                Some(poisoned.into_inner())
            }
            Err(TryLockError::WouldBlock) => None,
        };
        let buf: &mut Vec<u8> = match guard.as_deref_mut() {
            Some(buf) => buf,
            None => {
                fresh = Vec::new();
                &mut fresh
            }
        };
        buf.clear();
        let result = f(buf);
        if result.is_ok() {
            hand_over(out, buf);
        }
        if buf.capacity() > MAX_KEPT_SCRATCH {
            *buf = Vec::new();
        }
        result
    }
}

/// Scratch buffers larger than this are freed after use rather than kept per thread.
const MAX_KEPT_SCRATCH: usize = 4 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic (caught) in a call that had the object's scratch buffer leaves the buffer to
    /// the calls after it: they reuse it rather than allocate a fresh one each.
    #[test]
    fn an_objects_scratch_buffer_serves_on_after_a_panic_in_a_call() {
        let scratch = Scratch::default();
        let mut out = Vec::new();
        let call = |f: &mut dyn FnMut(&mut Vec<u8>)| {
            let mut out = Vec::new();
            scratch.with(&mut FfiAppend::new(&mut out), |buf| {
                f(buf);
                Ok::<_, ()>(())
            })
        };
        call(&mut |buf| buf.extend_from_slice(&[7; 1000])).unwrap();
        let caught = catch(|| {
            let _ = scratch.with(&mut FfiAppend::new(&mut out), |buf| {
                buf.push(1);
                panic!("a plugin's encoder panics");
                #[allow(unreachable_code)]
                Ok::<_, ()>(())
            });
        });
        assert!(caught.is_err());
        let mut seen = 0;
        call(&mut |buf| seen = buf.capacity()).unwrap();
        assert!(seen >= 1000, "a fresh buffer (capacity {seen})");
    }

    /// A plugin object whose drop panics with a payload that panics again when dropped:
    /// nothing leaves [`Guarded`]'s drop (behind an `extern "C"` shim, that would abort).
    /// (`catch` itself is `phobos_plugin_api::panics`', tested there.)
    #[test]
    fn a_drop_panicking_with_a_payload_that_panics_when_dropped_is_contained() {
        struct PanicsOnDrop;
        impl Drop for PanicsOnDrop {
            fn drop(&mut self) {
                panic!("the payload's drop exploded");
            }
        }
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                std::panic::panic_any(PanicsOnDrop);
            }
        }
        drop(Guarded::new(Bomb));
    }

    #[test]
    fn a_panicking_drop_is_contained() {
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("drop exploded");
            }
        }
        drop(Guarded::new(Bomb));
    }

    #[test]
    fn a_busy_object_scratch_falls_back_to_a_fresh_buffer() {
        let scratch = Scratch::default();
        let (mut outer_host, mut inner_host) = (Vec::new(), Vec::new());
        let mut outer = FfiAppend::new(&mut outer_host);
        let r: Result<(), ()> = scratch.with(&mut outer, |v| {
            v.extend_from_slice(b"outer");
            // Re-entered while the buffer is held: must still work.
            let mut inner = FfiAppend::new(&mut inner_host);
            scratch.with(&mut inner, |w| {
                w.extend_from_slice(b"inner");
                Ok(())
            })
        });
        assert_eq!(r, Ok(()));
        assert_eq!(outer_host, b"outer");
        assert_eq!(inner_host, b"inner");
    }

    #[test]
    fn scratch_appends_only_on_success() {
        let mut host = b"x".to_vec();
        let mut out = FfiAppend::new(&mut host);
        let ok: Result<(), ()> = with_scratch(&mut out, |v| {
            v.extend_from_slice(b"yz");
            Ok(())
        });
        assert_eq!(ok, Ok(()));
        let err: Result<(), ()> = with_scratch(&mut out, |v| {
            v.extend_from_slice(b"junk");
            Err(())
        });
        assert_eq!(err, Err(()));
        assert_eq!(host, b"xyz");
    }
}
