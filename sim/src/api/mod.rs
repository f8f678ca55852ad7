//! The exported C functions: the AscendCL/HCCL subset of `dsnpu_ffi::sys` plus the `dsnpu_sim_*`
//! extensions declared in `sim/include/dsnpu_sim_kernel.h`.
//!
//! Safety contract shared by every export (the C contract of AscendCL): a non-NULL pointer
//! argument points to memory valid for what the parameter describes (an out-parameter is writable
//! storage for one value, `const char *` is NUL-terminated, arrays hold the stated number of
//! elements, and host buffers of copies hold `count` bytes). NULL pointers, unknown handles and
//! device addresses are checked and rejected with error codes; what cannot be checked (the
//! extent of caller-owned host memory) is trusted.
#![allow(clippy::missing_safety_doc)] // The shared contract above is the safety documentation.

mod device;
mod event;
mod ext;
mod hccl;
mod init;
mod kernel;
mod memory;
mod stream;

use std::ffi::{c_char, CStr};
use std::ptr::NonNull;

use crate::error::SimError;

pub use device::*;
pub use event::*;
pub use ext::*;
pub use hccl::*;
pub use init::*;
pub use kernel::*;
pub use memory::*;
pub use stream::*;

/// Makes the compiler check every export against the generated function-pointer type; a missing
/// export or a signature drift is a compile error.
macro_rules! check_signatures {
    ($($name:ident : $pfn:ident),* $(,)?) => {
        $( const _: dsnpu_ffi::sys::$pfn = $name; )*
    };
}
dsnpu_ffi::for_each_acl_function!(check_signatures);

/// A required out-parameter.
pub(crate) fn out<T>(p: *mut T, name: &'static str) -> Result<NonNull<T>, SimError> {
    NonNull::new(p).ok_or(SimError::NullPointer(name))
}

/// Stores `value` through an out-parameter checked by [`out`].
///
/// # Safety
/// `p` points to writable storage for one `T` (the export contract).
pub(crate) unsafe fn put<T>(p: NonNull<T>, value: T) {
    // SAFETY: per the function contract; unaligned writes are tolerated.
    unsafe { p.as_ptr().write_unaligned(value) }
}

/// A caller's host array of `len` elements (`len` may be 0 with a NULL pointer).
///
/// # Safety
/// A non-null `p` points to `len` initialized elements that stay unchanged during the call (the
/// export contract); the length is checked against the address space before the slice is made.
pub(crate) unsafe fn host_slice<'a, T>(
    p: *const T,
    len: usize,
    name: &'static str,
) -> Result<&'a [T], SimError> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(SimError::NullPointer(name));
    }
    if !matches!(len.checked_mul(std::mem::size_of::<T>()), Some(b) if b <= isize::MAX as usize) {
        return Err(SimError::InvalidParam(format!(
            "{name}: {len} elements exceed the address space"
        )));
    }
    // SAFETY: per the function contract; non-null and the byte size fits isize.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A required C string argument, as UTF-8.
///
/// # Safety
/// `p` is NULL or NUL-terminated (the export contract).
pub(crate) unsafe fn c_str<'a>(p: *const c_char, name: &'static str) -> Result<&'a str, SimError> {
    if p.is_null() {
        return Err(SimError::NullPointer(name));
    }
    // SAFETY: per the function contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| SimError::InvalidParam(format!("{name} is not valid UTF-8")))
}
