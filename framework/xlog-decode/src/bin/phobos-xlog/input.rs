//! An input file as one byte slice without reading it into memory: a read-only mapping. The
//! only module of the binary with `unsafe` code.
//!
//! The decoder wants the whole file as a slice (a resync may scan far ahead), and log files
//! reach hundreds of megabytes; reading them in took that much heap. A mapping costs page
//! cache only, and [`Input::release_before`] drops the pages already decoded from the
//! process, so its resident size stays around one window whatever the file size.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::fs::{self, File};
use std::io;
use std::ops::Deref;
use std::path::Path;

use memmap2::{Advice, Mmap, UncheckedAdvice};

/// The bytes of an input file.
#[derive(Debug)]
pub(crate) enum Input {
    /// A regular file, mapped read-only.
    Map {
        map: Mmap,
        /// Pages before this offset were released.
        released: Cell<usize>,
    },
    /// What could not be mapped (empty files, pipes, file systems without mmap), read.
    Heap(Vec<u8>),
}

impl Input {
    /// Maps `path`, or reads it when it cannot be mapped.
    pub(crate) fn open(path: &Path) -> io::Result<Input> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() == 0 {
            return fs::read(path).map(Input::Heap);
        }
        // SAFETY: the mapping is read-only; the file is a log that writers only append to,
        // which does not change the mapped bytes. If another
        // process truncated it while we decode, reading the lost pages would raise SIGBUS
        // and end the process; Mars's decoder, which reads the file first, would instead
        // decode what it read. That is the price of not holding the file in memory.
        match unsafe { Mmap::map(&file) } {
            Ok(map) => {
                // Only a hint: the kernel reads ahead and drops pages behind sooner.
                let _ = map.advise(Advice::Sequential);
                Ok(Input::Map {
                    map,
                    released: Cell::new(0),
                })
            }
            Err(_) => fs::read(path).map(Input::Heap),
        }
    }

    /// Tells the kernel the bytes before `offset` will not be read again, so their pages
    /// leave the process's resident memory (they stay in the page cache). Works in steps of
    /// [`RELEASE_STEP`]; reading a released byte again is still correct (it is paged back in).
    pub(crate) fn release_before(&self, offset: usize) {
        let Input::Map { map, released } = self else {
            return;
        };
        let from = released.get();
        let upto = offset.min(map.len()) / RELEASE_ALIGN * RELEASE_ALIGN;
        if upto < from + RELEASE_STEP {
            return;
        }
        // SAFETY: MADV_DONTNEED on a read-only file mapping only drops this process's page
        // table entries; a later read faults the page back in from the file, with the same
        // bytes, so no slice into the mapping sees a change. `from` and `upto` are aligned to
        // every page size and within the mapping.
        let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, from, upto - from) };
        released.set(upto);
    }
}

impl Deref for Input {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Input::Map { map, .. } => map,
            Input::Heap(bytes) => bytes,
        }
    }
}

/// Released ranges start and end on multiples of 64 KiB: a multiple of every page size Linux
/// uses on the platforms we ship (4, 16 and 64 KiB), as `madvise` needs.
const RELEASE_ALIGN: usize = 64 << 10;

/// Release pages in steps of this many bytes (a few syscalls per hundred megabytes).
const RELEASE_STEP: usize = 8 << 20;
