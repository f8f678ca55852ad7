//! [`HostBuffer<T>`]: page-locked host memory (`aclrtMallocHost`), the only source or destination
//! asynchronous host/device copies accept.
//!
//! The buffer tracks the stream of its last queued copy; host access ([`HostBuffer::as_slice`],
//! [`HostBuffer::as_mut_slice`]) and drop first wait until that copy is done, so the host never
//! reads memory a copy is writing, never writes memory a copy is reading, and never frees memory a
//! copy still uses.

use std::sync::Arc;

use dsnpu_ffi::result;

use crate::device::{Device, DeviceCore};
use crate::error::{Result, RuntimeError};
use crate::memory::repr::{byte_len, DeviceRepr};
use crate::memory::tracker::Tracker;

/// `len` elements of `T` in pinned host memory, zero-initialized.
pub struct HostBuffer<T: DeviceRepr> {
    ptr: *mut T,
    len: usize,
    core: Arc<DeviceCore>,
    pub(crate) track: Tracker,
}

// SAFETY: the memory is owned by the buffer; every access goes through `&self`/`&mut self` methods
// that wait for queued copies, and cross-thread ordering of copies goes through `track`.
unsafe impl<T: DeviceRepr> Send for HostBuffer<T> {}
// SAFETY: as above; shared access only reads (after queued writers finished) or queues reads.
unsafe impl<T: DeviceRepr> Sync for HostBuffer<T> {}

impl<T: DeviceRepr> std::fmt::Debug for HostBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostBuffer")
            .field("len", &self.len)
            .finish()
    }
}

impl<T: DeviceRepr> HostBuffer<T> {
    /// `len` zeroed elements, pinned for `device`.
    pub fn new(device: &Device, len: usize) -> Result<Self> {
        let bytes = byte_len::<T>(len)?;
        let core = device.core().clone();
        let ptr = if bytes == 0 {
            std::ptr::NonNull::<T>::dangling().as_ptr()
        } else {
            core.bind()?;
            let p = result::memory::malloc_host(bytes)?.cast::<T>();
            if !p.is_aligned() {
                // SAFETY: just allocated by malloc_host and not shared.
                let _ = unsafe { result::memory::free_host(p.cast()) };
                return Err(RuntimeError::InvalidArgument(format!(
                    "aclrtMallocHost returned {p:p}, not aligned for {}",
                    std::any::type_name::<T>()
                )));
            }
            // SAFETY: `bytes` writable bytes just allocated; all-zero is a valid `T` (DeviceRepr).
            unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0, bytes) };
            p
        };
        Ok(HostBuffer {
            ptr,
            len,
            core,
            track: Tracker::new(None),
        })
    }

    /// A pinned copy of `values`.
    pub fn from_slice(device: &Device, values: &[T]) -> Result<Self> {
        let mut b = HostBuffer::new(device, values.len())?;
        b.as_mut_slice()?.copy_from_slice(values);
        Ok(b)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn ptr(&self) -> *mut T {
        self.ptr
    }

    /// The contents, after any queued copy touching them has completed.
    pub fn as_slice(&self) -> Result<&[T]> {
        self.track.lock().settle()?;
        // SAFETY: `len` initialized elements owned by self; no copy is in flight (settled) and new
        // writing copies need `&mut self`, which the returned borrow excludes.
        Ok(unsafe { std::slice::from_raw_parts(self.ptr, self.len) })
    }

    /// Mutable contents, after any queued copy touching them has completed.
    pub fn as_mut_slice(&mut self) -> Result<&mut [T]> {
        self.track.get_mut().settle()?;
        // SAFETY: as `as_slice`; the exclusive borrow excludes queuing any copy meanwhile.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) })
    }
}

impl<T: DeviceRepr> Drop for HostBuffer<T> {
    fn drop(&mut self) {
        if self.len == 0 || std::mem::size_of::<T>() == 0 {
            return;
        }
        // If waiting fails a copy may still use the memory: leak it rather than free it.
        if self.track.get_mut().settle().is_ok() && self.core.bind().is_ok() {
            // SAFETY: from malloc_host, owned by self, no copy in flight.
            let _ = unsafe { result::memory::free_host(self.ptr.cast()) };
        }
    }
}
