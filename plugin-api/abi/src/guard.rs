//! Keeping panics on the plugin's side of the boundary, and moving byte buffers across it
//! without allocating.

use std::any::Any;
use std::cell::RefCell;
use std::mem;
use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::std_types::RVec;

/// Runs `f`, turning a panic into `Err(message)`.
///
/// Every plugin-side adapter method goes through this, because abi_stable aborts the process
/// when a panic reaches an `extern "C"` vtable shim.
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_message(payload.as_ref()))
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Host side: lends the caller's `Vec<u8>` to the other side as an `RVec<u8>`.
///
/// Both conversions are zero-copy: the `RVec` is built from the `Vec`'s buffer and, since it
/// keeps this library's vtable, converts back without copying even if the plugin grew it
/// (growth goes through the vtable, i.e. through this side's allocator).
pub(crate) fn lend_vec<R>(out: &mut Vec<u8>, f: impl FnOnce(&mut RVec<u8>) -> R) -> R {
    let mut lent = RVec::from(mem::take(out));
    let result = f(&mut lent);
    *out = lent.into_vec();
    result
}

/// Plugin side: gives the plugin a `Vec<u8>` to append to and copies what it appended into
/// the host's `out`, only when `f` succeeds (so `out` is untouched on error).
///
/// The `Vec` is a per-thread scratch buffer reused across calls, so steady-state calls do not
/// allocate. (Converting the host's `RVec` into a `Vec` would copy into a fresh allocation,
/// since it was allocated by the other library.)
pub(crate) fn with_scratch<T, E>(
    out: &mut RVec<u8>,
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
                out.extend_from_copy_slice(&scratch);
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
                out.extend_from_copy_slice(&fresh);
            }
            result
        }
    })
}

/// Scratch buffers larger than this are freed after use rather than kept per thread.
const MAX_KEPT_SCRATCH: usize = 4 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_returns_the_panic_message() {
        let r: Result<(), String> = catch(|| panic!("boom {}", 7));
        assert_eq!(r, Err("boom 7".to_owned()));
        let r: Result<(), String> = catch(|| std::panic::panic_any(5u8));
        assert_eq!(r, Err("panic with a non-string payload".to_owned()));
    }

    #[test]
    fn lent_vec_keeps_its_buffer_and_contents() {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(b"ab");
        let ptr = v.as_ptr();
        lend_vec(&mut v, |r| r.extend_from_slice(b"cd"));
        assert_eq!(v, b"abcd");
        assert_eq!(v.as_ptr(), ptr, "no reallocation within capacity");
    }

    #[test]
    fn scratch_appends_only_on_success() {
        let mut out = RVec::from(b"x".to_vec());
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
        assert_eq!(out.as_slice(), b"xyz");
    }
}
