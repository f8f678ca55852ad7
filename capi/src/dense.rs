//! Entry points of the dense kernels: RMSNorm (plain and with the residual add), RoPE, SiLU·mul and
//! linear. Shapes are row-major; `T` is the tensors' dtype (`DSNPU_DTYPE_*`).

use std::ffi::c_void;

use dsnpu_kernels::launch::{self, RopeShape};
use dsnpu_kernels::RopeLayout;

use crate::args::{code, device_tensors, kernel, product, size, with_dtype};
use crate::context::{context, DsnpuContext};
use crate::error::guard;
use crate::{DSNPU_ROPE_HALF_SPLIT, DSNPU_ROPE_INTERLEAVED};

/// RMSNorm: `y[r, :] = x[r, :] / sqrt(mean(x[r, :]²) + eps) * weight`, computed in f32 and rounded
/// once. `x`, `y`: `T [rows, cols]`; `weight`: `T [cols]`. `rows` and `cols` must be at least 1.
///
/// # Safety
/// `ctx` is a live context; `stream` a live stream of its device (see the crate docs); each non-null
/// pointer addresses device memory of the size given above, valid until the stream has run the kernel.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dsnpu_rms_norm(
    ctx: *const DsnpuContext,
    stream: *mut c_void,
    dtype: i32,
    x: *const c_void,
    weight: *const c_void,
    y: *mut c_void,
    rows: i64,
    cols: i64,
    eps: f32,
) -> i32 {
    const F: &str = "dsnpu_rms_norm";
    guard(F, || {
        // SAFETY: the caller's contract.
        let ctx = unsafe { context(F, ctx) }?;
        let (rows, cols) = (size(F, "rows", rows)?, size(F, "cols", cols)?);
        let n = product(F, "rows * cols", &[rows, cols])?;
        with_dtype!(F, dtype, T => {
            device_tensors!(F, ctx, stream => s;
                input x: T [n],
                input weight: T [cols],
                output y: T [n],
            );
            launch::rms_norm(ctx.lib(), &s, &x, &weight, &mut y, rows, eps).map_err(kernel(F))?;
            Ok(())
        })
    })
}

/// Residual add + RMSNorm: `sum = x + residual` (rounded to `T`), `y = rms_norm(sum) * weight`.
/// `x`, `residual`, `y`, `sum`: `T [rows, cols]`; `weight`: `T [cols]`.
///
/// # Safety
/// As [`dsnpu_rms_norm`].
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dsnpu_add_rms_norm(
    ctx: *const DsnpuContext,
    stream: *mut c_void,
    dtype: i32,
    x: *const c_void,
    residual: *const c_void,
    weight: *const c_void,
    y: *mut c_void,
    sum: *mut c_void,
    rows: i64,
    cols: i64,
    eps: f32,
) -> i32 {
    const F: &str = "dsnpu_add_rms_norm";
    guard(F, || {
        // SAFETY: the caller's contract.
        let ctx = unsafe { context(F, ctx) }?;
        let (rows, cols) = (size(F, "rows", rows)?, size(F, "cols", cols)?);
        let n = product(F, "rows * cols", &[rows, cols])?;
        with_dtype!(F, dtype, T => {
            device_tensors!(F, ctx, stream => s;
                input x: T [n],
                input residual: T [n],
                input weight: T [cols],
                output y: T [n],
                output sum: T [n],
            );
            launch::add_rms_norm(ctx.lib(), &s, &x, &residual, &weight, &mut y, &mut sum, rows, eps)
                .map_err(kernel(F))?;
            Ok(())
        })
    })
}

/// Rotary embedding: rotates `x` into `y` (`T [tokens, heads, dim]`) at `positions` (`int32
/// [tokens]`, each in `0..table_rows`: not validated) with the f32 tables `cos` and `sin`
/// (`[table_rows, dim / 2]`, any scaling applied): `a' = a cos - b sin`, `b' = b cos + a sin` for each
/// pair `(a, b)`: `(x[2i], x[2i+1])` with `DSNPU_ROPE_INTERLEAVED`, `(x[i], x[i + dim/2])` with
/// `DSNPU_ROPE_HALF_SPLIT`. `dim` must be even.
///
/// # Safety
/// As [`dsnpu_rms_norm`].
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dsnpu_rope(
    ctx: *const DsnpuContext,
    stream: *mut c_void,
    dtype: i32,
    x: *const c_void,
    positions: *const c_void,
    cos: *const c_void,
    sin: *const c_void,
    y: *mut c_void,
    tokens: i64,
    heads: i64,
    dim: i64,
    table_rows: i64,
    layout: i32,
) -> i32 {
    const F: &str = "dsnpu_rope";
    guard(F, || {
        // SAFETY: the caller's contract.
        let ctx = unsafe { context(F, ctx) }?;
        let tokens = size(F, "tokens", tokens)?;
        let heads = size(F, "heads", heads)?;
        let dim = size(F, "dim", dim)?;
        let table_rows = size(F, "table_rows", table_rows)?;
        let layout = match code(
            F,
            "rope layout",
            layout,
            &[DSNPU_ROPE_INTERLEAVED, DSNPU_ROPE_HALF_SPLIT],
        )? {
            DSNPU_ROPE_INTERLEAVED => RopeLayout::Interleaved,
            _ => RopeLayout::HalfSplit,
        };
        let n = product(F, "tokens * heads * dim", &[tokens, heads, dim])?;
        let table = product(F, "table_rows * dim / 2", &[table_rows, dim / 2])?;
        with_dtype!(F, dtype, T => {
            device_tensors!(F, ctx, stream => s;
                input x: T [n],
                input positions: i32 [tokens],
                input cos: f32 [table],
                input sin: f32 [table],
                output y: T [n],
            );
            let shape = RopeShape::dense(tokens, heads, dim, table_rows, layout);
            launch::rope(ctx.lib(), &s, &x, &positions, &cos, &sin, &mut y, shape).map_err(kernel(F))?;
            Ok(())
        })
    })
}

/// SwiGLU: `out[r, i] = silu(gate_up[r, i]) * gate_up[r, inter + i]` with `silu(g) = g / (1 + e^-g)`,
/// in f32, rounded once. `gate_up`: `T [rows, 2 * inter]`; `out`: `T [rows, inter]`.
///
/// # Safety
/// As [`dsnpu_rms_norm`].
#[no_mangle]
pub unsafe extern "C" fn dsnpu_silu_mul(
    ctx: *const DsnpuContext,
    stream: *mut c_void,
    dtype: i32,
    gate_up: *const c_void,
    out: *mut c_void,
    rows: i64,
    inter: i64,
) -> i32 {
    const F: &str = "dsnpu_silu_mul";
    guard(F, || {
        // SAFETY: the caller's contract.
        let ctx = unsafe { context(F, ctx) }?;
        let (rows, inter) = (size(F, "rows", rows)?, size(F, "inter", inter)?);
        let n_out = product(F, "rows * inter", &[rows, inter])?;
        let n_in = product(F, "rows * 2 * inter", &[n_out, 2])?;
        with_dtype!(F, dtype, T => {
            device_tensors!(F, ctx, stream => s;
                input gate_up: T [n_in],
                output out: T [n_out],
            );
            launch::silu_mul(ctx.lib(), &s, &gate_up, &mut out, rows, inter).map_err(kernel(F))?;
            Ok(())
        })
    })
}

/// Linear layer: `y = x · wᵀ (+ bias)`, f32 accumulation, rounded once. `x`: `T [m, k]`; `w`:
/// `T [n, k]` (PyTorch's layout); `bias`: `float [n]` or NULL; `y`: `T [m, n]`.
///
/// # Safety
/// As [`dsnpu_rms_norm`].
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dsnpu_linear(
    ctx: *const DsnpuContext,
    stream: *mut c_void,
    dtype: i32,
    x: *const c_void,
    w: *const c_void,
    bias: *const c_void,
    y: *mut c_void,
    m: i64,
    k: i64,
    n: i64,
) -> i32 {
    const F: &str = "dsnpu_linear";
    guard(F, || {
        // SAFETY: the caller's contract.
        let ctx = unsafe { context(F, ctx) }?;
        let (m, k, n) = (size(F, "m", m)?, size(F, "k", k)?, size(F, "n", n)?);
        let (mk, nk, mn) = (
            product(F, "m * k", &[m, k])?,
            product(F, "n * k", &[n, k])?,
            product(F, "m * n", &[m, n])?,
        );
        with_dtype!(F, dtype, T => {
            device_tensors!(F, ctx, stream => s;
                input x: T [mk],
                input w: T [nk],
                optional bias: f32 [n],
                output y: T [mn],
            );
            launch::linear(ctx.lib(), &s, &x, &w, bias.as_ref(), &mut y, m, n, k)
                .map_err(kernel(F))?;
            Ok(())
        })
    })
}
