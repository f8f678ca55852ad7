//! Argument checks shared by the entry points: sizes, dtype and enum codes, device pointers wrapped
//! as borrowed buffers, and output overlap.

use std::ffi::c_void;

use dsnpu_runtime::{DeviceBuffer, DeviceRepr, Stream};

use crate::error::{CapiError, Result};

/// A size argument: non-negative, as `usize`.
pub fn size(func: &'static str, name: &'static str, v: i64) -> Result<usize> {
    usize::try_from(v).map_err(|_| CapiError::Invalid {
        func,
        reason: format!("`{name}` is {v}, must be >= 0"),
    })
}

/// `dims` multiplied, or an overflow error naming `what`.
pub fn product(func: &'static str, what: &str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| CapiError::Invalid {
            func,
            reason: format!("{what} overflows"),
        })
}

/// One tensor argument: its name, address, and elements and element size (for the overlap check).
pub struct Tensor {
    pub name: &'static str,
    pub ptr: *const c_void,
    pub bytes: usize,
    pub output: bool,
}

/// Fails when any output's bytes overlap any other argument's.
pub fn check_disjoint(func: &'static str, tensors: &[Tensor]) -> Result<()> {
    for (i, out) in tensors.iter().enumerate().filter(|(_, t)| t.output) {
        for (j, other) in tensors.iter().enumerate() {
            if i == j || out.bytes == 0 || other.bytes == 0 || other.ptr.is_null() {
                continue;
            }
            let (a, b) = (out.ptr as usize, other.ptr as usize);
            if a < b.saturating_add(other.bytes) && b < a.saturating_add(out.bytes) {
                return Err(CapiError::Overlap {
                    func,
                    output: out.name,
                    other: other.name,
                });
            }
        }
    }
    Ok(())
}

/// Fails when a required pointer is null.
pub fn non_null<P>(func: &'static str, arg: &'static str, p: *const P) -> Result<()> {
    if p.is_null() {
        Err(CapiError::Null { func, arg })
    } else {
        Ok(())
    }
}

/// Fails when a pointer the library reads or writes as a `T` on the host (a handle, an out pointer, a
/// host array) is null or not aligned for `T`: a reference or slice made from a misaligned pointer is
/// undefined behaviour (debug builds abort on it), while the check is a clean error.
pub fn host_ptr<T>(func: &'static str, arg: &'static str, p: *const T) -> Result<()> {
    non_null(func, arg, p)?;
    if !p.is_aligned() {
        return Err(CapiError::Misaligned {
            func,
            arg,
            addr: p as usize,
            align: std::mem::align_of::<T>(),
        });
    }
    Ok(())
}

/// Checks a create's out pointer as [`host_ptr`] does and stores NULL there, before anything can
/// fail: a failed create then leaves NULL (which the destroy functions take as a no-op and the other
/// entry points refuse), never the caller's previous value.
///
/// # Safety
/// `out` is null (an error) or valid for writing one pointer.
pub unsafe fn clear_out<T>(func: &'static str, out: *mut *mut T) -> Result<()> {
    host_ptr(func, "out", out)?;
    // SAFETY: non-null and aligned (checked above), writable (this function's contract).
    unsafe { out.write(std::ptr::null_mut()) };
    Ok(())
}

/// The caller's host array `p[0 .. len)` as a slice, after [`host_ptr`]'s checks and a check that
/// `len` elements fit one allocation (at most `isize::MAX` bytes): a longer slice is undefined
/// behaviour whatever the memory holds, so such a `len` is refused rather than trusted.
///
/// # Safety
/// `p` is null (an error) or valid for reading `len` elements of `T` for `'a`.
pub unsafe fn host_slice<'a, T>(
    func: &'static str,
    arg: &'static str,
    p: *const T,
    len: usize,
) -> Result<&'a [T]> {
    host_ptr(func, arg, p)?;
    let max = isize::MAX as usize / std::mem::size_of::<T>().max(1);
    if len > max {
        return Err(CapiError::Invalid {
            func,
            reason: format!(
                "`{arg}` has {len} elements, more than the {max} one allocation can hold"
            ),
        });
    }
    // SAFETY: non-null, aligned, at most isize::MAX bytes (checked above) and readable for `len`
    // elements (this function's contract).
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// `len` elements of `T` at the caller's device address `ptr`, as a buffer that frees nothing.
///
/// # Safety
/// `ptr` addresses at least `len` elements of `T` of device memory on `stream`'s device that stay
/// valid until the work queued with the buffer has run, and the entry point's outputs do not overlap
/// its other arguments (checked by [`check_disjoint`] before this is called).
pub unsafe fn borrow<T: DeviceRepr>(
    func: &'static str,
    stream: &Stream,
    ptr: *const c_void,
    len: usize,
) -> Result<DeviceBuffer<T>> {
    // SAFETY: the caller's contract above is `borrow_raw`'s; the kernels write only the buffers
    // passed as outputs, which the entry points wrap from their `*mut` arguments.
    unsafe { DeviceBuffer::borrow_raw(stream, ptr.cast_mut(), len) }
        .map_err(|source| CapiError::Runtime { func, source })
}

/// Calls `$body` with `$t` the Rust element type of dtype code `$dtype`, or fails with
/// [`CapiError::UnknownCode`].
macro_rules! with_dtype {
    ($func:expr, $dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            $crate::DSNPU_DTYPE_F32 => {
                type $t = f32;
                $body
            }
            $crate::DSNPU_DTYPE_F16 => {
                type $t = half::f16;
                $body
            }
            $crate::DSNPU_DTYPE_BF16 => {
                type $t = half::bf16;
                $body
            }
            code => Err($crate::error::CapiError::UnknownCode {
                func: $func,
                what: "dtype",
                code,
            }),
        }
    };
}
pub(crate) use with_dtype;

/// Collects an entry point's tensor arguments, checking each pointer, then their overlap.
pub struct Check {
    func: &'static str,
    tensors: Vec<Tensor>,
}

impl Check {
    pub fn new(func: &'static str) -> Check {
        Check {
            func,
            tensors: Vec::new(),
        }
    }

    fn push<T>(
        &mut self,
        name: &'static str,
        ptr: *const c_void,
        len: usize,
        output: bool,
    ) -> Result<()> {
        let bytes = product(self.func, name, &[len, std::mem::size_of::<T>()])?;
        self.tensors.push(Tensor {
            name,
            ptr,
            bytes,
            output,
        });
        Ok(())
    }

    /// A required input of `len` elements of `T`.
    pub fn input<T>(&mut self, name: &'static str, ptr: *const c_void, len: usize) -> Result<()> {
        non_null(self.func, name, ptr)?;
        self.push::<T>(name, ptr, len, false)
    }

    /// An input that may be null (absent).
    pub fn optional<T>(
        &mut self,
        name: &'static str,
        ptr: *const c_void,
        len: usize,
    ) -> Result<()> {
        if ptr.is_null() {
            return Ok(());
        }
        self.push::<T>(name, ptr, len, false)
    }

    /// A required output of `len` elements of `T`.
    pub fn output<T>(&mut self, name: &'static str, ptr: *mut c_void, len: usize) -> Result<()> {
        non_null(self.func, name, ptr)?;
        self.push::<T>(name, ptr, len, true)
    }

    /// Every output is disjoint from every other argument.
    pub fn finish(self) -> Result<()> {
        check_disjoint(self.func, &self.tensors)
    }
}

/// A code argument that must be one of `known`.
pub fn code(func: &'static str, what: &'static str, code: i32, known: &[i32]) -> Result<i32> {
    if known.contains(&code) {
        Ok(code)
    } else {
        Err(CapiError::UnknownCode { func, what, code })
    }
}

/// A kernel launcher's error in entry point `func`.
pub fn kernel(func: &'static str) -> impl Fn(dsnpu_kernels::KernelError) -> CapiError {
    move |source| CapiError::Kernel { func, source }
}

/// The model engine's error in entry point `func`.
pub fn model(func: &'static str) -> impl Fn(dsnpu_model::ModelError) -> CapiError {
    move |source| CapiError::Model { func, source }
}

/// The tensor plumbing every entry point shares, from one list of its tensor arguments: checks each
/// (`input` and `output` non-null, `optional` may be null; byte sizes overflow-free), checks that the
/// outputs are disjoint from every other argument, gets the caller's stream as `$s`, and rebinds each
/// argument's name to a borrowed device buffer of its elements (`mut` for outputs, an `Option` for
/// optional inputs). Use inside a closure returning [`Result`] (errors return with `?`).
///
/// ```ignore
/// device_tensors!(F, ctx, stream => s;
///     input x: T [n], optional bias: f32 [cols], output y: T [n]);
/// launch::thing(ctx.lib(), &s, &x, bias.as_ref(), &mut y)
/// ```
macro_rules! device_tensors {
    ($func:expr, $ctx:expr, $stream:expr => $s:ident;
     $($kind:ident $name:ident : $t:ty [$len:expr]),+ $(,)?) => {
        let mut check = $crate::args::Check::new($func);
        $( $crate::args::device_tensors!(@check check, $kind, $name, $t, $len); )+
        check.finish()?;
        let $s = $ctx.stream($func, $stream)?;
        $( $crate::args::device_tensors!(@borrow $func, $s, $kind, $name, $t, $len); )+
    };
    (@check $c:ident, input, $name:ident, $t:ty, $len:expr) => {
        $c.input::<$t>(stringify!($name), $name, $len)?;
    };
    (@check $c:ident, optional, $name:ident, $t:ty, $len:expr) => {
        $c.optional::<$t>(stringify!($name), $name, $len)?;
    };
    (@check $c:ident, output, $name:ident, $t:ty, $len:expr) => {
        $c.output::<$t>(stringify!($name), $name, $len)?;
    };
    (@borrow $f:expr, $s:ident, input, $name:ident, $t:ty, $len:expr) => {
        // SAFETY: non-null and sized by the shape (checked above), the outputs disjoint from it
        // (checked above); that it addresses that much live device memory is the caller's contract.
        let $name = unsafe { $crate::args::borrow::<$t>($f, &$s, $name, $len) }?;
    };
    (@borrow $f:expr, $s:ident, output, $name:ident, $t:ty, $len:expr) => {
        // SAFETY: as for an input; only this buffer is written through it.
        #[allow(unused_mut)]
        let mut $name = unsafe { $crate::args::borrow::<$t>($f, &$s, $name.cast_const(), $len) }?;
    };
    (@borrow $f:expr, $s:ident, optional, $name:ident, $t:ty, $len:expr) => {
        let $name = if $name.is_null() {
            None
        } else {
            // SAFETY: as for an input (non-null here).
            Some(unsafe { $crate::args::borrow::<$t>($f, &$s, $name, $len) }?)
        };
    };
}
pub(crate) use device_tensors;
