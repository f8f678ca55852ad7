//! A stream-ordered caching allocator over `aclrtMalloc`/`aclrtFree`.
//!
//! - Sizes are rounded up to [`BLOCK_ALIGN`] bytes. A freed block goes to the pool's cache tagged
//!   with the stream of its last use and is reused for a request of up to its size (but at most
//!   twice, or for large blocks 1/8 more than, the request), preferring the smallest fit.
//! - Reuse on the same stream needs no synchronization: the block's old work precedes the new work
//!   in stream order. Reuse on another stream queues a device-side wait for an event recorded on the
//!   old stream (no host block). A block whose stream is gone is idle once that stream's drop has
//!   synchronized it; reuse during the drop waits for that (`WeakStream`), since the last handle
//!   is released before the drop's synchronization finishes.
//! - When `aclrtMalloc` reports out-of-memory, every cached block is released (after its stream
//!   finishes) and the allocation is retried once; a second failure is
//!   [`RuntimeError::OutOfMemory`] with the requested, free and released byte counts.
//! - [`PoolStats`] counts bytes handed out (`allocated`), bytes held from the device (`reserved`),
//!   their peaks, and cache hits and misses.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, MutexGuard};

use dsnpu_ffi::{result, sys};

use crate::device::{Device, DeviceCore};
use crate::error::{Result, RuntimeError};
use crate::event::{Event, EventFlags};
use crate::memory::device_buffer::DeviceBuffer;
use crate::memory::repr::{byte_len, DeviceRepr};
use crate::stream::{Stream, StreamInner, WeakStream};

/// Block sizes are multiples of this (AscendCL itself aligns device allocations to 32 bytes).
pub const BLOCK_ALIGN: usize = 512;
const LARGE_BLOCK: usize = 1 << 20;

/// Allocator statistics, in bytes and counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes in blocks currently handed out.
    pub allocated: usize,
    /// Bytes currently obtained from the device (handed out + cached).
    pub reserved: usize,
    pub peak_allocated: usize,
    pub peak_reserved: usize,
    /// Requests served from the cache.
    pub hits: u64,
    /// Requests that called `aclrtMalloc`.
    pub misses: u64,
    /// Times the cache was emptied to retry an allocation that ran out of memory.
    pub oom_flushes: u64,
}

impl PoolStats {
    /// Bytes held in the cache, ready for reuse.
    pub fn cached(&self) -> usize {
        self.reserved - self.allocated
    }
}

/// The block size serving a request of `bytes`.
pub fn block_size(bytes: usize) -> Option<usize> {
    bytes.max(1).checked_next_multiple_of(BLOCK_ALIGN)
}

/// The largest cached block a request of `size` (already rounded) may take.
fn reuse_limit(size: usize) -> usize {
    if size < LARGE_BLOCK {
        size.saturating_mul(2)
    } else {
        size.saturating_add(size / 8)
    }
}

fn is_oom(e: &dsnpu_ffi::FfiError) -> bool {
    e.acl_code().is_some_and(is_oom_code)
}

/// The codes `aclrtMalloc` fails with when device memory is exhausted.
pub(crate) fn is_oom_code(code: sys::aclError) -> bool {
    matches!(
        code,
        sys::ACL_ERROR_RT_MEMORY_ALLOCATION
            | sys::ACL_ERROR_BAD_ALLOC
            | sys::ACL_ERROR_RT_DEVICE_OOM
    )
}

struct FreeBlock {
    ptr: *mut c_void,
    /// Stream of the block's last use; `None` when nothing can be pending.
    stream: Option<WeakStream>,
    stream_id: u64,
    event: Option<Event>,
}

/// A block handed out by the pool.
pub(crate) struct Block {
    pub(crate) ptr: *mut c_void,
    pub(crate) size: usize,
    pub(crate) event: Option<Event>,
}

#[derive(Default)]
struct PoolState {
    /// Keyed by (size, insertion number): ascending size, oldest first among equals.
    free: BTreeMap<(usize, u64), FreeBlock>,
    seq: u64,
    stats: PoolStats,
}

// SAFETY: the raw device pointers in the free list are owned by the pool and only used under its mutex.
unsafe impl Send for PoolState {}

impl PoolState {
    fn note_alloc(&mut self, size: usize) {
        self.stats.allocated += size;
        self.stats.peak_allocated = self.stats.peak_allocated.max(self.stats.allocated);
        self.stats.peak_reserved = self.stats.peak_reserved.max(self.stats.reserved);
    }

    /// The smallest fitting cached block, preferring one last used on `stream_id`.
    fn take_fit(&mut self, size: usize, stream_id: u64) -> Option<((usize, u64), FreeBlock)> {
        let limit = reuse_limit(size);
        let mut any = None;
        for (&key, b) in self.free.range((size, 0)..) {
            if key.0 > limit {
                break;
            }
            if b.stream_id == stream_id {
                any = Some(key);
                break;
            }
            any.get_or_insert(key);
        }
        let key = any?;
        self.free.remove(&key).map(|b| (key, b))
    }
}

pub(crate) struct PoolInner {
    core: Arc<DeviceCore>,
    state: Mutex<PoolState>,
}

impl PoolInner {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Frees every cached block whose stream has finished (waiting for it); returns bytes freed.
    fn release_cached(&self, state: &mut PoolState) -> usize {
        let blocks = std::mem::take(&mut state.free);
        let mut synced: Vec<u64> = Vec::new();
        let mut failed: Vec<u64> = Vec::new();
        let mut released = 0;
        for (key, block) in blocks {
            let idle = block
                .stream
                .as_ref()
                .and_then(|w| {
                    w.with_live(|s| {
                        if synced.contains(&s.id()) {
                            true
                        } else if failed.contains(&s.id()) {
                            false
                        } else {
                            let ok = s.synchronize().is_ok();
                            if ok {
                                synced.push(s.id())
                            } else {
                                failed.push(s.id())
                            }
                            ok
                        }
                    })
                })
                .unwrap_or(true);
            // A block whose stream reported an error may still be in use: keep it cached.
            if idle && self.core.bind().is_ok() {
                // SAFETY: the block came from aclrtMalloc on this device, is owned by the cache, and
                // its stream has finished every operation on it.
                if unsafe { result::memory::free(block.ptr) }.is_ok() {
                    state.stats.reserved -= key.0;
                    released += key.0;
                    continue;
                }
            }
            state.free.insert(key, block);
        }
        released
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        let mut state = std::mem::take(self.state.get_mut().unwrap_or_else(|e| e.into_inner()));
        self.release_cached(&mut state);
    }
}

/// A caching allocator for one device; clones share the cache.
#[derive(Clone)]
pub struct MemPool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for MemPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemPool")
            .field("device", &self.inner.core.ordinal())
            .field("stats", &self.stats())
            .finish()
    }
}

impl MemPool {
    /// A new, empty pool on `device` (separate from the device's default pool).
    pub fn new(device: &Device) -> MemPool {
        MemPool::from_core(device.core().clone())
    }

    pub(crate) fn from_core(core: Arc<DeviceCore>) -> MemPool {
        MemPool {
            inner: Arc::new(PoolInner {
                core,
                state: Mutex::default(),
            }),
        }
    }

    pub(crate) fn core(&self) -> &Arc<DeviceCore> {
        &self.inner.core
    }

    pub fn device_ordinal(&self) -> i32 {
        self.inner.core.ordinal()
    }

    pub fn stats(&self) -> PoolStats {
        self.inner.lock().stats
    }

    /// Releases every cached block to the device (waiting for their streams); returns the bytes freed.
    pub fn empty_cache(&self) -> usize {
        let mut state = self.inner.lock();
        self.inner.release_cached(&mut state)
    }

    /// A buffer of `len` uninitialized elements, ordered on `stream`.
    pub fn alloc<T: DeviceRepr>(&self, stream: &Stream, len: usize) -> Result<DeviceBuffer<T>> {
        let bytes = byte_len::<T>(len)?;
        if bytes == 0 {
            return Ok(DeviceBuffer::empty(
                self.inner.core.clone(),
                len,
                stream.inner().clone(),
            ));
        }
        let block = self.alloc_block(stream.inner(), bytes)?;
        Ok(DeviceBuffer::from_pool(
            self.clone(),
            block,
            len,
            stream.inner().clone(),
        ))
    }

    /// A block of at least `bytes` bytes, ordered on `stream` (queues a wait if it comes from another).
    pub(crate) fn alloc_block(&self, stream: &Arc<StreamInner>, bytes: usize) -> Result<Block> {
        self.inner.core.expect_same("allocate", stream.core())?;
        let size = block_size(bytes).ok_or(RuntimeError::SizeOverflow {
            len: bytes,
            elem_size: 1,
        })?;
        let mut state = self.inner.lock();
        if let Some((key, mut free)) = state.take_fit(size, stream.id()) {
            let size = key.0;
            if free.stream_id != stream.id() {
                let ordered = free
                    .stream
                    .clone()
                    .and_then(|w| w.with_live(|prev| Self::order_after(&mut free, prev, stream)));
                if let Some(Err(e)) = ordered {
                    state.free.insert(key, free);
                    return Err(e);
                }
            }
            state.stats.hits += 1;
            state.note_alloc(size);
            return Ok(Block {
                ptr: free.ptr,
                size,
                event: free.event,
            });
        }
        state.stats.misses += 1;
        self.inner.core.bind()?;
        let policy = sys::aclrtMemMallocPolicy::ACL_MEM_MALLOC_HUGE_FIRST;
        let ptr = match result::memory::malloc(size, policy) {
            Ok(p) => p,
            Err(e) if is_oom(&e) => {
                let cached = state.stats.cached();
                self.inner.release_cached(&mut state);
                state.stats.oom_flushes += 1;
                self.inner.core.bind()?;
                match result::memory::malloc(size, policy) {
                    Ok(p) => p,
                    Err(e) if is_oom(&e) => {
                        let free = result::device::mem_info(sys::aclrtMemAttr::ACL_HBM_MEM)
                            .map(|(free, _)| free)
                            .unwrap_or(0);
                        return Err(RuntimeError::OutOfMemory {
                            device: self.inner.core.ordinal(),
                            requested: bytes,
                            free,
                            cached,
                            allocated: state.stats.allocated,
                        });
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        state.stats.reserved += size;
        state.note_alloc(size);
        Ok(Block {
            ptr,
            size,
            event: None,
        })
    }

    /// Makes `next` wait (on the device) for everything queued so far on `prev`.
    fn order_after(free: &mut FreeBlock, prev: &StreamInner, next: &StreamInner) -> Result<()> {
        if !free
            .event
            .as_ref()
            .is_some_and(|e| e.core().is(prev.core()))
        {
            free.event = Some(Event::on_core(prev.core().clone(), EventFlags::SYNC)?);
        }
        let event = free.event.as_ref().expect("set above");
        event.record_on(prev)?;
        next.wait_event(event)
    }

    /// Returns a block to the cache. `last` is the stream of its last use (`None`: idle).
    pub(crate) fn free_block(&self, block: Block, last: Option<Arc<StreamInner>>) {
        let mut state = self.inner.lock();
        state.seq += 1;
        let seq = state.seq;
        state.stats.allocated -= block.size;
        state.free.insert(
            (block.size, seq),
            FreeBlock {
                ptr: block.ptr,
                stream_id: last.as_ref().map_or(0, |s| s.id()),
                stream: last.as_ref().map(WeakStream::new),
                event: block.event,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_to_block_alignment() {
        assert_eq!(block_size(0), Some(512));
        assert_eq!(block_size(1), Some(512));
        assert_eq!(block_size(512), Some(512));
        assert_eq!(block_size(513), Some(1024));
        assert_eq!(block_size(usize::MAX), None);
    }

    #[test]
    fn reuse_limit_is_double_for_small_and_an_eighth_more_for_large() {
        assert_eq!(reuse_limit(512), 1024);
        assert_eq!(reuse_limit(8 << 20), 9 << 20);
    }

    fn free(stream_id: u64) -> FreeBlock {
        FreeBlock {
            ptr: std::ptr::null_mut(),
            stream: None,
            stream_id,
            event: None,
        }
    }

    #[test]
    fn fit_prefers_same_stream_then_smallest() {
        let mut s = PoolState::default();
        s.free.insert((1024, 1), free(7));
        s.free.insert((1536, 2), free(9));
        s.free.insert((4096, 3), free(9));
        // Stream 9 asks for 1024: the 1536 block is its own and within 2x.
        let (key, b) = s.take_fit(1024, 9).unwrap();
        assert_eq!((key.0, b.stream_id), (1536, 9));
        // Stream 9 again: its 4096 block exceeds 2x 1024, so the other stream's 1024 block it is.
        let (key, b) = s.take_fit(1024, 9).unwrap();
        assert_eq!((key.0, b.stream_id), (1024, 7));
        // Nothing within 2x of 512 is left.
        assert!(s.take_fit(512, 9).is_none());
        assert_eq!(s.free.len(), 1);
    }
}
