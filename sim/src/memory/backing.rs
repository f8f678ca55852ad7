//! The host memory behind one allocation.
//!
//! Large blocks are anonymous private mappings made with `MAP_NORESERVE`: the kernel hands out
//! zero pages lazily, so an allocation commits host memory only for the pages that are written
//! (reading an untouched page maps the shared zero page), and `munmap` on drop gives the pages back
//! to the host at once. Small blocks come from the heap, zero-filled (the fill is cheap and the heap
//! avoids one mapping per tiny allocation; `vm.max_map_count` bounds the number of mappings).
use std::alloc::Layout;
use std::ptr::NonNull;

/// Blocks of at least this many bytes are mapped lazily rather than taken from the heap.
pub(crate) const LAZY_MIN_BYTES: usize = 64 << 10;

enum Source {
    Heap(Layout),
    Mapped,
}

/// A zero-initialized, aligned block of host memory, owned exclusively.
pub(crate) struct Backing {
    ptr: NonNull<u8>,
    /// Bytes reserved (the mapping length for mapped blocks).
    len: usize,
    source: Source,
}

// SAFETY: a Backing exclusively owns its memory, which has no thread affinity.
unsafe impl Send for Backing {}
// SAFETY: a shared Backing only exposes its address and length; the bytes are accessed through
// validated raw pointers while a `Pin` (an `Arc<Backing>`) keeps them alive (see the module docs).
unsafe impl Sync for Backing {}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

impl Backing {
    /// `len` zero bytes (at least one), aligned to `align` (at most a page). `None` when the host
    /// refuses (address space or commit limit): the caller turns that into an out-of-memory code.
    pub(crate) fn zeroed(len: usize, align: usize) -> Option<Backing> {
        let len = len.max(1);
        if len >= LAZY_MIN_BYTES && align <= page_size() {
            Self::map(len)
        } else {
            let layout = Layout::from_size_align(len, align).ok()?;
            // SAFETY: the layout has a non-zero size.
            let p = unsafe { std::alloc::alloc_zeroed(layout) };
            NonNull::new(p).map(|ptr| Backing {
                ptr,
                len,
                source: Source::Heap(layout),
            })
        }
    }

    fn map(len: usize) -> Option<Backing> {
        let len = len.checked_next_multiple_of(page_size())?;
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing; no existing
        // memory is affected. MAP_NORESERVE: no swap reservation, pages are committed on first
        // write (the host budget in `super::host` bounds the total instead).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        NonNull::new(p.cast::<u8>()).map(|ptr| Backing {
            ptr,
            len,
            source: Source::Mapped,
        })
    }

    pub(crate) fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// Bytes reserved, at least the requested length.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        match self.source {
            // SAFETY: allocated by alloc_zeroed with exactly this layout, and dropped once.
            Source::Heap(layout) => unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) },
            Source::Mapped => {
                // SAFETY: the whole mapping made in `map`, unmapped once; nothing references it
                // any more (the last Arc is being dropped).
                unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_blocks_are_zeroed_and_aligned() {
        for len in [1, 100, LAZY_MIN_BYTES - 1, LAZY_MIN_BYTES, 3 << 20] {
            let b = Backing::zeroed(len, 64).unwrap();
            assert_eq!(b.addr() % 64, 0);
            assert!(b.len() >= len);
            // SAFETY: the block holds `len` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(b.as_mut_ptr(), len) };
            assert!(bytes.iter().all(|&x| x == 0), "{len} bytes zeroed");
        }
    }

    #[test]
    fn an_impossible_mapping_is_refused_not_fatal() {
        assert!(Backing::zeroed(usize::MAX - (1 << 20), 64).is_none());
    }
}
