//! `aclrtMemcpy*` and `aclrtMemset*`: both sides validated against the allocation table when the
//! call is made, validated again when the (possibly queued) operation runs, then executed.
//!
//! Host memory the simulator did not allocate ("pageable") is trusted to be valid for the given
//! length: it cannot be checked. Queued operations that touch pageable memory are made synchronous
//! by the export layer, so that memory only has to live for the duration of the call.
use dsnpu_ffi::sys::aclrtMemcpyKind as kind;

use crate::error::SimError;
use crate::memory::{Memory, Pin, Region, Space};

/// One side of a copy after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Device(i32),
    Pinned,
    Pageable,
}

impl Side {
    pub(crate) fn is_device(self) -> bool {
        matches!(self, Side::Device(_))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Device,
    Host,
    Any,
}

fn side(mem: &Memory, what: &str, ptr: usize, len: usize, want: Want) -> Result<Side, SimError> {
    let region = mem
        .classify(ptr, len)
        .map_err(|m| SimError::RtParam(format!("{what}: {m}")))?;
    let found = match region {
        Region::Tracked(Space::Device(d)) => Side::Device(d),
        Region::Tracked(Space::PinnedHost) => Side::Pinned,
        Region::Untracked => Side::Pageable,
        Region::Tracked(Space::LaunchArgs(_)) => {
            return Err(SimError::RtParam(format!(
                "{what} {ptr:#x} is a launch's internal argument buffer, not memory of the caller"
            )))
        }
    };
    match (want, found) {
        (Want::Device, Side::Pinned) => Err(SimError::RtParam(format!(
            "{what} {ptr:#x} is pinned host memory (aclrtMallocHost) but the copy kind says device memory"
        ))),
        (Want::Device, Side::Pageable) => Err(SimError::RtParam(format!(
            "{what} {ptr:#x} ({len} bytes) is not device memory from aclrtMalloc: never allocated, or freed"
        ))),
        (Want::Host, Side::Device(d)) => Err(SimError::RtParam(format!(
            "{what} {ptr:#x} is memory of device {d} but the copy kind says host memory"
        ))),
        _ => Ok(found),
    }
}

/// Checks that a validated side is still allocated when the operation runs, and pins it for the
/// operation (`None` for pageable memory, which the caller owns).
fn revalidate(
    mem: &Memory,
    what: &str,
    ptr: usize,
    len: usize,
    side: Side,
) -> Result<Option<Pin>, SimError> {
    let want = match side {
        Side::Device(d) => Region::Tracked(Space::Device(d)),
        Side::Pinned => Region::Tracked(Space::PinnedHost),
        Side::Pageable => return Ok(None),
    };
    match mem.pin(ptr, len) {
        Ok((found, pin)) if found == want => Ok(pin),
        _ => Err(SimError::MemoryGone(format!(
            "{what} {ptr:#x} ({len} bytes) was freed before the queued operation ran"
        ))),
    }
}

/// A validated copy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CopyPlan {
    pub dst: usize,
    pub src: usize,
    pub len: usize,
    pub dst_side: Side,
    pub src_side: Side,
}

/// Validates a memcpy; `None` for a zero-byte copy (whatever the other arguments).
pub(crate) fn plan_copy(
    mem: &Memory,
    dst: usize,
    dest_max: usize,
    src: usize,
    count: usize,
    copy_kind: kind::Type,
) -> Result<Option<CopyPlan>, SimError> {
    // The order of CANN's aclrtMemcpyImpl (hicann/runtime src/acl/aclrt_impl/memory.cpp): a
    // zero-byte copy succeeds before any check (NULL pointers included), then NULL pointers and the
    // kind are checked by the ACL layer (ACL_ERROR_INVALID_PARAM), then the runtime layer rejects
    // count > destMax with ACL_ERROR_RT_PARAM_INVALID.
    if count == 0 {
        return Ok(None);
    }
    if dst == 0 {
        return Err(SimError::NullPointer("dst"));
    }
    if src == 0 {
        return Err(SimError::NullPointer("src"));
    }
    let (dw, sw) = match copy_kind {
        kind::ACL_MEMCPY_HOST_TO_HOST => (Want::Host, Want::Host),
        kind::ACL_MEMCPY_HOST_TO_DEVICE | kind::ACL_MEMCPY_HOST_TO_BUF_TO_DEVICE => {
            (Want::Device, Want::Host)
        }
        kind::ACL_MEMCPY_DEVICE_TO_HOST => (Want::Host, Want::Device),
        kind::ACL_MEMCPY_DEVICE_TO_DEVICE
        | kind::ACL_MEMCPY_INNER_DEVICE_TO_DEVICE
        | kind::ACL_MEMCPY_INTER_DEVICE_TO_DEVICE => (Want::Device, Want::Device),
        kind::ACL_MEMCPY_DEFAULT => (Want::Any, Want::Any),
        other => {
            return Err(SimError::InvalidParam(format!(
                "unknown aclrtMemcpyKind {other}"
            )))
        }
    };
    if count > dest_max {
        return Err(SimError::RtParam(format!(
            "count {count} exceeds destMax {dest_max}"
        )));
    }
    let dst_side = side(mem, "dst", dst, count, dw)?;
    let src_side = side(mem, "src", src, count, sw)?;
    Ok(Some(CopyPlan {
        dst,
        src,
        len: count,
        dst_side,
        src_side,
    }))
}

impl CopyPlan {
    pub(crate) fn touches_pageable(&self) -> bool {
        self.dst_side == Side::Pageable || self.src_side == Side::Pageable
    }

    pub(crate) fn is_host_to_host(&self) -> bool {
        !self.dst_side.is_device() && !self.src_side.is_device()
    }

    /// Performs the copy (memmove semantics for overlapping device ranges).
    pub(crate) fn execute(&self, mem: &Memory) -> Result<(), SimError> {
        let _dst = revalidate(mem, "dst", self.dst, self.len, self.dst_side)?;
        let _src = revalidate(mem, "src", self.src, self.len, self.src_side)?;
        // SAFETY: tracked sides were just found inside live allocations, whose pins keep their
        // host memory mapped until the copy ends; pageable sides are the caller's memory, valid for
        // `len` bytes by the AscendCL contract and alive because pageable copies are synchronous.
        unsafe { std::ptr::copy(self.src as *const u8, self.dst as *mut u8, self.len) };
        if self.dst_side.is_device() {
            mem.mark_written(self.dst, self.len);
        }
        Ok(())
    }
}

/// A validated memset.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemsetPlan {
    pub dst: usize,
    pub len: usize,
    pub value: u8,
    pub side: Side,
}

/// Validates a memset of device or pinned memory; `None` for zero bytes.
pub(crate) fn plan_memset(
    mem: &Memory,
    dst: usize,
    max_count: usize,
    value: i32,
    count: usize,
) -> Result<Option<MemsetPlan>, SimError> {
    // As CANN's aclrtMemsetImpl (hicann/runtime src/acl/aclrt_impl/memory.cpp): zero bytes
    // succeed before any check, a NULL pointer is ACL_ERROR_INVALID_PARAM, count > maxCount is the
    // runtime layer's ACL_ERROR_RT_PARAM_INVALID.
    if count == 0 {
        return Ok(None);
    }
    if dst == 0 {
        return Err(SimError::NullPointer("devPtr"));
    }
    if count > max_count {
        return Err(SimError::RtParam(format!(
            "count {count} exceeds maxCount {max_count}"
        )));
    }
    let side = match side(mem, "devPtr", dst, count, Want::Any)? {
        Side::Pageable => {
            return Err(SimError::RtParam(format!(
                "devPtr {dst:#x} ({count} bytes) is neither device memory (aclrtMalloc) nor pinned host memory"
            )))
        }
        s => s,
    };
    // Each byte is set to the low byte of `value`, as memset does.
    Ok(Some(MemsetPlan {
        dst,
        len: count,
        value: value as u8,
        side,
    }))
}

impl MemsetPlan {
    pub(crate) fn execute(&self, mem: &Memory) -> Result<(), SimError> {
        let _pin = revalidate(mem, "devPtr", self.dst, self.len, self.side)?;
        // SAFETY: the range was just found inside a live allocation whose pin keeps its host
        // memory mapped until the write ends.
        unsafe { std::ptr::write_bytes(self.dst as *mut u8, self.value, self.len) };
        if self.side.is_device() {
            mem.mark_written(self.dst, self.len);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_checked_against_the_table() {
        let m = Memory::new(1, 1 << 20, 1 << 30);
        let d = m.malloc_device(0, 64).unwrap();
        let h = m.malloc_host(64).unwrap();
        let mut local = [0u8; 64];
        let l = local.as_mut_ptr() as usize;
        let h2d = plan_copy(&m, d, 64, l, 64, kind::ACL_MEMCPY_HOST_TO_DEVICE)
            .unwrap()
            .unwrap();
        assert_eq!(
            (h2d.dst_side, h2d.src_side),
            (Side::Device(0), Side::Pageable)
        );
        assert!(h2d.touches_pageable());
        let pinned = plan_copy(&m, d, 64, h, 64, kind::ACL_MEMCPY_HOST_TO_DEVICE)
            .unwrap()
            .unwrap();
        assert!(!pinned.touches_pageable());
        // Kind says device, pointer is host (and vice versa).
        assert_eq!(
            plan_copy(&m, l, 64, d, 64, kind::ACL_MEMCPY_HOST_TO_DEVICE)
                .unwrap_err()
                .acl_code(),
            107000
        );
        assert_eq!(
            plan_copy(&m, d, 64, d, 64, kind::ACL_MEMCPY_DEVICE_TO_HOST)
                .unwrap_err()
                .acl_code(),
            107000
        );
        // Sizes and nulls: count > destMax is the runtime layer's 107000, as in CANN.
        assert_eq!(
            plan_copy(&m, d, 64, l, 65, kind::ACL_MEMCPY_HOST_TO_DEVICE)
                .unwrap_err()
                .to_string(),
            "count 65 exceeds destMax 64"
        );
        assert_eq!(
            plan_copy(&m, d, 64, l, 65, kind::ACL_MEMCPY_HOST_TO_DEVICE)
                .unwrap_err()
                .acl_code(),
            107000
        );
        assert_eq!(
            plan_copy(&m, d, 128, l, 65, kind::ACL_MEMCPY_HOST_TO_DEVICE)
                .unwrap_err()
                .acl_code(),
            107000
        );
        assert_eq!(
            plan_copy(&m, 0, 64, l, 1, kind::ACL_MEMCPY_HOST_TO_DEVICE).unwrap_err(),
            SimError::NullPointer("dst")
        );
        assert!(plan_copy(&m, d, 64, l, 0, kind::ACL_MEMCPY_HOST_TO_DEVICE)
            .unwrap()
            .is_none());
        // Zero bytes succeed before any check, NULL pointers and bad kinds included (CANN 8.x).
        assert!(plan_copy(&m, 0, 0, 0, 0, 99).unwrap().is_none());
        assert!(plan_memset(&m, 0, 0, 0, 0).unwrap().is_none());
        assert_eq!(plan_memset(&m, d, 4, 0, 5).unwrap_err().acl_code(), 107000);
        assert_eq!(
            plan_copy(&m, d, 64, l, 1, 99).unwrap_err().acl_code(),
            100000
        );
        // DEFAULT infers each side.
        let dflt = plan_copy(&m, l, 64, d, 64, kind::ACL_MEMCPY_DEFAULT)
            .unwrap()
            .unwrap();
        assert_eq!(
            (dflt.dst_side, dflt.src_side),
            (Side::Pageable, Side::Device(0))
        );
    }

    #[test]
    fn copies_and_memsets_move_bytes_and_notice_frees() {
        let m = Memory::new(1, 1 << 20, 1 << 30);
        let d = m.malloc_device(0, 16).unwrap();
        let src: Vec<u8> = (1..=16).collect();
        let mut back = [0u8; 16];
        let up = plan_copy(
            &m,
            d,
            16,
            src.as_ptr() as usize,
            16,
            kind::ACL_MEMCPY_HOST_TO_DEVICE,
        )
        .unwrap()
        .unwrap();
        up.execute(&m).unwrap();
        let set = plan_memset(&m, d + 4, 12, 0x1ab, 4).unwrap().unwrap();
        set.execute(&m).unwrap();
        let down = plan_copy(
            &m,
            back.as_mut_ptr() as usize,
            16,
            d,
            16,
            kind::ACL_MEMCPY_DEVICE_TO_HOST,
        )
        .unwrap()
        .unwrap();
        down.execute(&m).unwrap();
        assert_eq!(
            back,
            [1, 2, 3, 4, 0xab, 0xab, 0xab, 0xab, 9, 10, 11, 12, 13, 14, 15, 16]
        );
        m.free(d, false).unwrap();
        assert_eq!(down.execute(&m).unwrap_err().acl_code(), 507053);
        assert_eq!(set.execute(&m).unwrap_err().acl_code(), 507053);
    }
}
