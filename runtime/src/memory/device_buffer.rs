//! [`DeviceBuffer<T>`]: typed device memory that knows its device, length and stream order.
//!
//! Validated: lengths of every copy (the range of a copy at an offset), the device of every stream
//! a buffer is used on, byte-size overflow. Ordering: see `tracker` — every operation is ordered
//! after the buffer's earlier ones, whatever stream they were on; dropping returns the memory in
//! stream order (pooled) or waits for the last operation before `aclrtFree` (uncached). Contents
//! start uninitialized (any bit pattern is a valid `T`, see [`DeviceRepr`]).

use std::ffi::c_void;
use std::marker::PhantomData;
use std::sync::Arc;

use dsnpu_ffi::{result, sys};

use crate::device::DeviceCore;
use crate::error::{Result, RuntimeError};
use crate::memory::pool::{Block, MemPool};
use crate::memory::repr::{byte_len, DeviceRepr};
use crate::memory::tracker::Tracker;
use crate::stream::{Stream, StreamInner};

enum Origin {
    /// Zero elements: no device memory.
    Empty,
    Pool {
        pool: MemPool,
        size: usize,
    },
    /// Straight from `aclrtMalloc`, freed with `aclrtFree`.
    Raw,
    /// Someone else's memory ([`DeviceBuffer::borrow_raw`]): never freed here.
    Borrowed,
}

/// `len` elements of `T` in device memory.
pub struct DeviceBuffer<T: DeviceRepr> {
    ptr: *mut c_void,
    len: usize,
    core: Arc<DeviceCore>,
    origin: Origin,
    pub(crate) track: Tracker,
    _marker: PhantomData<T>,
}

// SAFETY: the pointer is device memory owned by this buffer; the host never dereferences it, every
// AscendCL call on it binds the device's context, and cross-thread ordering goes through `track`.
unsafe impl<T: DeviceRepr> Send for DeviceBuffer<T> {}
// SAFETY: as above; `&self` methods only read device memory through stream-ordered or synchronized
// copies, serialized by the tracker's lock.
unsafe impl<T: DeviceRepr> Sync for DeviceBuffer<T> {}

impl<T: DeviceRepr> std::fmt::Debug for DeviceBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBuffer")
            .field("device", &self.core.ordinal())
            .field("len", &self.len)
            .field("ptr", &self.ptr)
            .finish()
    }
}

impl<T: DeviceRepr> DeviceBuffer<T> {
    /// A buffer without device memory (`len` elements of zero bytes in total).
    pub(crate) fn empty(core: Arc<DeviceCore>, len: usize, stream: Arc<StreamInner>) -> Self {
        DeviceBuffer {
            ptr: std::ptr::null_mut(),
            len,
            core,
            origin: Origin::Empty,
            track: Tracker::new(Some(stream)),
            _marker: PhantomData,
        }
    }

    pub(crate) fn from_pool(
        pool: MemPool,
        block: Block,
        len: usize,
        stream: Arc<StreamInner>,
    ) -> Self {
        let track = Tracker::new(Some(stream));
        // The block's event travels with it, so joins reuse it instead of creating events.
        track.lock().event = block.event;
        DeviceBuffer {
            ptr: block.ptr,
            len,
            core: pool.core().clone(),
            origin: Origin::Pool {
                pool,
                size: block.size,
            },
            track,
            _marker: PhantomData,
        }
    }

    /// `aclrtMalloc` without the cache (for comparison and for memory that outlives pools).
    pub(crate) fn raw(stream: &Stream, len: usize) -> Result<Self> {
        let bytes = byte_len::<T>(len)?;
        let core = stream.inner().core().clone();
        if bytes == 0 {
            return Ok(DeviceBuffer::empty(core, len, stream.inner().clone()));
        }
        core.bind()?;
        let ptr =
            result::memory::malloc(bytes, sys::aclrtMemMallocPolicy::ACL_MEM_MALLOC_HUGE_FIRST)?;
        Ok(DeviceBuffer {
            ptr,
            len,
            core,
            origin: Origin::Raw,
            // Fresh memory has no pending work.
            track: Tracker::new(None),
            _marker: PhantomData,
        })
    }

    /// A view of `len` elements of device memory owned by someone else (a serving stack's tensor),
    /// for passing to a kernel launch on `stream`. Dropping it frees nothing. It carries no record
    /// of earlier work on that memory: ordering is the caller's, by queuing everything that touches
    /// the memory on `stream` (or synchronizing).
    ///
    /// # Safety
    /// - `ptr` is device memory of `stream`'s device, valid for `len × size_of::<T>()` bytes (null
    ///   only when that is 0), suitably aligned for `T`, and stays valid until the work queued with
    ///   the returned buffer has completed;
    /// - while the returned buffer lives, no other `DeviceBuffer` (borrowed or owned) covering any of
    ///   those bytes is passed as a kernel output, and the bytes are not written through a buffer
    ///   passed as an input (Rust's `&`/`&mut` rules are only as good as this);
    /// - other work on that memory is ordered with `stream` by the caller.
    pub unsafe fn borrow_raw(stream: &Stream, ptr: *mut c_void, len: usize) -> Result<Self> {
        let bytes = byte_len::<T>(len)?;
        if ptr.is_null() && bytes != 0 {
            return Err(RuntimeError::InvalidArgument(
                "borrowed device pointer is null".into(),
            ));
        }
        Ok(DeviceBuffer {
            ptr,
            len,
            core: stream.inner().core().clone(),
            origin: Origin::Borrowed,
            track: Tracker::new(None),
            _marker: PhantomData,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `len × size_of::<T>()`.
    pub fn num_bytes(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }

    pub fn device_ordinal(&self) -> i32 {
        self.core.ordinal()
    }

    pub(crate) fn core(&self) -> &Arc<DeviceCore> {
        &self.core
    }

    /// The device address (null when empty). Using it outside this crate is the caller's business:
    /// the buffer does not know about such uses.
    pub fn device_ptr(&self) -> *mut c_void {
        self.ptr
    }

    /// The stream of the last queued operation on this buffer, if any is pending.
    pub fn last_stream(&self) -> Option<Stream> {
        self.track.lock().stream.clone().map(Stream::from_inner)
    }

    fn check_len(&self, op: &'static str, actual: usize) -> Result<()> {
        if actual == self.len {
            Ok(())
        } else {
            Err(RuntimeError::SizeMismatch {
                op,
                expected: self.len,
                actual,
            })
        }
    }

    /// Synchronous copy from host memory, after the buffer's queued work completes.
    pub fn copy_from_host(&mut self, src: &[T]) -> Result<()> {
        self.check_len("copy_from_host", src.len())?;
        self.copy_from_host_at(0, src)
    }

    /// Synchronous copy from host memory into elements `offset .. offset + src.len()` of this buffer,
    /// after the buffer's queued work completes; the other elements are left as they are. A range
    /// past the buffer's end is [`RuntimeError::OutOfRange`] (nothing is copied). Lets a large buffer
    /// be filled through a bounded host staging area, one piece at a time.
    pub fn copy_from_host_at(&mut self, offset: usize, src: &[T]) -> Result<()> {
        let out_of_range = || RuntimeError::OutOfRange {
            op: "copy_from_host_at",
            offset,
            len: src.len(),
            buffer_len: self.len,
        };
        let end = offset.checked_add(src.len()).ok_or_else(out_of_range)?;
        if end > self.len {
            return Err(out_of_range());
        }
        // In bounds, so neither product overflows (the buffer's byte size was checked at allocation).
        let (at, bytes) = (
            offset * std::mem::size_of::<T>(),
            std::mem::size_of_val(src),
        );
        if bytes == 0 {
            return Ok(());
        }
        self.track.get_mut().settle()?;
        self.core.bind()?;
        // SAFETY: destination is bytes `at .. at + bytes` of this buffer's device memory (in bounds:
        // checked above; nothing queued on it after settle), source is a host slice of exactly `bytes`
        // bytes.
        unsafe {
            result::memory::memcpy(
                // A device address: offset arithmetic only, never dereferenced on the host.
                self.ptr.cast::<u8>().wrapping_add(at).cast(),
                bytes,
                src.as_ptr().cast(),
                bytes,
                sys::aclrtMemcpyKind::ACL_MEMCPY_HOST_TO_DEVICE,
            )?
        };
        crate::transfer_stats::note_h2d(bytes);
        Ok(())
    }

    /// Synchronous copy to host memory, after the buffer's queued work completes.
    pub fn copy_to_host(&self, dst: &mut [T]) -> Result<()> {
        self.check_len("copy_to_host", dst.len())?;
        if self.num_bytes() == 0 {
            return Ok(());
        }
        let mut track = self.track.lock();
        track.settle()?;
        self.core.bind()?;
        let bytes = self.num_bytes();
        // SAFETY: source is this buffer's device memory with nothing queued on it (settled, and the
        // lock keeps other threads from queuing until the copy returns); destination is a host
        // slice of `bytes` bytes, and any bytes are a valid `T`.
        unsafe {
            result::memory::memcpy(
                dst.as_mut_ptr().cast(),
                bytes,
                self.ptr,
                bytes,
                sys::aclrtMemcpyKind::ACL_MEMCPY_DEVICE_TO_HOST,
            )?
        };
        crate::transfer_stats::note_d2h(bytes);
        Ok(())
    }

    /// The contents, copied synchronously.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let mut out = Vec::with_capacity(self.len);
        let spare = &mut out.spare_capacity_mut()[..self.len];
        // SAFETY: a slice of `len` `MaybeUninit<T>` viewed as `T` is only written (by the copy)
        // before being read, and `T: DeviceRepr` accepts any bytes; `set_len` follows success only.
        let dst =
            unsafe { std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast::<T>(), self.len) };
        self.copy_to_host(dst)?;
        // SAFETY: the copy initialized all `len` elements.
        unsafe { out.set_len(self.len) };
        Ok(out)
    }
}

impl<T: DeviceRepr> Drop for DeviceBuffer<T> {
    fn drop(&mut self) {
        let track = self.track.get_mut();
        match std::mem::replace(&mut self.origin, Origin::Empty) {
            Origin::Empty | Origin::Borrowed => {}
            Origin::Pool { pool, size } => {
                let block = Block {
                    ptr: self.ptr,
                    size,
                    event: track.event.take(),
                };
                pool.free_block(block, track.stream.take());
            }
            Origin::Raw => {
                // If waiting fails the memory may still be in use: leak it rather than free it.
                if track.settle().is_ok() && self.core.bind().is_ok() {
                    // SAFETY: from aclrtMalloc, owned by this buffer, no queued work left on it.
                    let _ = unsafe { result::memory::free(self.ptr) };
                }
            }
        }
    }
}
