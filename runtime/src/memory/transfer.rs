//! Allocation, copies and fills queued on a [`Stream`].
//!
//! Validated: equal lengths of source and destination; device buffers on the stream's device.
//! Host memory of asynchronous copies is always a pinned [`HostBuffer`] (a pageable slice is not
//! accepted), and both buffers are tracked until the copy is done (see `tracker`).

use dsnpu_ffi::{result, sys};

use crate::error::{Result, RuntimeError};
use crate::memory::device_buffer::DeviceBuffer;
use crate::memory::host_buffer::HostBuffer;
use crate::memory::repr::DeviceRepr;
use crate::memory::tracker::{run_ordered, Tracker};
use crate::stream::Stream;
use std::ffi::c_void;

fn same_len(op: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(RuntimeError::SizeMismatch {
            op,
            expected,
            actual,
        })
    }
}

impl Stream {
    /// `len` uninitialized elements from this stream's pool, ordered on this stream.
    pub fn alloc<T: DeviceRepr>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        self.pool().alloc(self, len)
    }

    /// `len` zeroed elements from this stream's pool (the fill is queued on this stream).
    pub fn alloc_zeroed<T: DeviceRepr>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        let mut b = self.alloc(len)?;
        self.memset_zeros(&mut b)?;
        Ok(b)
    }

    /// `len` uninitialized elements straight from `aclrtMalloc`, bypassing the cache; freeing waits
    /// for the buffer's last operation.
    pub fn alloc_uncached<T: DeviceRepr>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        DeviceBuffer::raw(self, len)
    }

    /// A device copy of `values` (pool allocation, then a synchronous copy).
    pub fn upload<T: DeviceRepr>(&self, values: &[T]) -> Result<DeviceBuffer<T>> {
        let mut b = self.alloc(values.len())?;
        b.copy_from_host(values)?;
        Ok(b)
    }

    fn check_device<T: DeviceRepr>(&self, op: &'static str, b: &DeviceBuffer<T>) -> Result<()> {
        self.inner().core().expect_same(op, b.core())
    }

    /// Queues a copy from pinned host memory to the device.
    pub fn memcpy_htod<T: DeviceRepr>(
        &self,
        src: &HostBuffer<T>,
        dst: &mut DeviceBuffer<T>,
    ) -> Result<()> {
        same_len("memcpy_htod", dst.len(), src.len())?;
        self.check_device("memcpy_htod", dst)?;
        // SAFETY: a pinned source and a device destination of the same `num_bytes`, both tracked.
        unsafe {
            self.queue_copy(
                &[&src.track, &dst.track],
                dst.device_ptr(),
                src.ptr().cast(),
                dst.num_bytes(),
                sys::aclrtMemcpyKind::ACL_MEMCPY_HOST_TO_DEVICE,
            )
        }
    }

    /// Queues a copy from the device to pinned host memory.
    pub fn memcpy_dtoh<T: DeviceRepr>(
        &self,
        src: &DeviceBuffer<T>,
        dst: &mut HostBuffer<T>,
    ) -> Result<()> {
        same_len("memcpy_dtoh", dst.len(), src.len())?;
        self.check_device("memcpy_dtoh", src)?;
        // SAFETY: a device source and a pinned destination of the same `num_bytes`, both tracked.
        unsafe {
            self.queue_copy(
                &[&src.track, &dst.track],
                dst.ptr().cast(),
                src.device_ptr(),
                src.num_bytes(),
                sys::aclrtMemcpyKind::ACL_MEMCPY_DEVICE_TO_HOST,
            )
        }
    }

    /// Queues a device-to-device copy (both on this stream's device).
    pub fn memcpy_dtod<T: DeviceRepr>(
        &self,
        src: &DeviceBuffer<T>,
        dst: &mut DeviceBuffer<T>,
    ) -> Result<()> {
        same_len("memcpy_dtod", dst.len(), src.len())?;
        self.check_device("memcpy_dtod", src)?;
        self.check_device("memcpy_dtod", dst)?;
        // SAFETY: two distinct (`&` vs `&mut`) device buffers of the same `num_bytes`, both tracked.
        unsafe {
            self.queue_copy(
                &[&src.track, &dst.track],
                dst.device_ptr(),
                src.device_ptr(),
                src.num_bytes(),
                sys::aclrtMemcpyKind::ACL_MEMCPY_DEVICE_TO_DEVICE,
            )
        }
    }

    /// Queues one `aclrtMemcpyAsync` of `bytes` bytes, ordered after the last use of every tracked
    /// buffer; the trackers then keep the host and later work off both ends until it is done.
    ///
    /// # Safety
    /// `dst` and `src` must be valid for `bytes` bytes of the memory `kind` names, and belong to the
    /// buffers whose trackers are in `tracks`.
    unsafe fn queue_copy(
        &self,
        tracks: &[&Tracker],
        dst: *mut c_void,
        src: *const c_void,
        bytes: usize,
        kind: sys::aclrtMemcpyKind::Type,
    ) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        let s = self.inner();
        s.core().bind()?;
        run_ordered(s, tracks, || {
            // SAFETY: the caller's contract; `run_ordered` holds the trackers for the copy's lifetime.
            unsafe { result::memory::memcpy_async(dst, bytes, src, bytes, kind, s.handle())? };
            Ok(())
        })?;
        if kind == sys::aclrtMemcpyKind::ACL_MEMCPY_HOST_TO_DEVICE {
            crate::transfer_stats::note_h2d(bytes);
        } else if kind == sys::aclrtMemcpyKind::ACL_MEMCPY_DEVICE_TO_HOST {
            crate::transfer_stats::note_d2h(bytes);
        }
        Ok(())
    }

    /// Queues a fill of `dst` with zero bytes.
    pub fn memset_zeros<T: DeviceRepr>(&self, dst: &mut DeviceBuffer<T>) -> Result<()> {
        self.memset_bytes(dst, 0)
    }

    /// Queues a fill of every byte of `dst` with `value` (`aclrtMemsetAsync`): no host memory is involved,
    /// whatever the buffer's size.
    pub fn memset_bytes<T: DeviceRepr>(&self, dst: &mut DeviceBuffer<T>, value: u8) -> Result<()> {
        self.check_device("memset_bytes", dst)?;
        let bytes = dst.num_bytes();
        if bytes == 0 {
            return Ok(());
        }
        let s = self.inner();
        s.core().bind()?;
        run_ordered(s, &[&dst.track], || {
            // SAFETY: device memory of `bytes` bytes, ordered on `s`.
            unsafe {
                result::memory::memset_async(
                    dst.device_ptr(),
                    bytes,
                    i32::from(value),
                    bytes,
                    s.handle(),
                )?
            };
            Ok(())
        })
    }
}
