//! Launcher of `moe_finalize_routing_<t>` (combine, `src/ascendc/moe_finalize_routing.cpp`).

use dsnpu_runtime::{DeviceBuffer, Stream};

use super::{device_error, expect_len, product, KernelElem, KernelLibrary, Launched};
use crate::{Kernel, MoeFinalizeTiling, Result};

/// The shape of a combine: `out [tokens, hidden]` from `top_k` rows per token of `y [rows, hidden]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CombineShape {
    pub tokens: usize,
    pub hidden: usize,
    pub top_k: usize,
    /// Rows of `y` (may be 0, or more than the indices name).
    pub rows: usize,
}

/// Combine (dsnpu-ops' `moe_finalize_routing`): `out[t] = Σ_k weights[t,k] · y[expanded_row_idx[t*K+k]]
/// (+ shared[t]) (+ residual[t])`, accumulated in f32 in that order and rounded once; an index of -1
/// contributes nothing. `weights` is f32 `[tokens, top_k]`; `shared` and `residual` are `[tokens,
/// hidden]`.
///
/// The row indices live on the device and are not checked here: any negative index contributes
/// nothing, and on the simulator an index `>= rows` makes the kernel fault on its checked row read (on
/// an NPU it reads unspecified memory); no index makes the kernel write outside `out`. Indices from [`super::moe_init_routing`] of the same
/// pairs are always in range.
#[allow(clippy::too_many_arguments)]
pub fn moe_finalize_routing<T: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    y: &DeviceBuffer<T>,
    expanded_row_idx: &DeviceBuffer<i32>,
    weights: &DeviceBuffer<f32>,
    shared: Option<&DeviceBuffer<T>>,
    residual: Option<&DeviceBuffer<T>>,
    out: &mut DeviceBuffer<T>,
    shape: CombineShape,
) -> Result<Launched<MoeFinalizeTiling>> {
    const K: &str = "moe_finalize_routing";
    let CombineShape {
        tokens,
        hidden,
        top_k,
        rows,
    } = shape;
    let tiling = MoeFinalizeTiling::new(
        tokens as u64,
        hidden as u64,
        top_k as u64,
        rows as u64,
        shared.is_some(),
        residual.is_some(),
        T::DTYPE,
        lib.hardware().vector,
    )?;
    let pairs = product(K, "tokens * top_k", tokens, top_k)?;
    let th = product(K, "tokens * hidden", tokens, hidden)?;
    expect_len(K, "y", y.len(), product(K, "rows * hidden", rows, hidden)?)?;
    expect_len(K, "expanded_row_idx", expanded_row_idx.len(), pairs)?;
    expect_len(K, "weights", weights.len(), pairs)?;
    if let Some(s) = shared {
        expect_len(K, "shared", s.len(), th)?;
    }
    if let Some(r) = residual {
        expect_len(K, "residual", r.len(), th)?;
    }
    expect_len(K, "out", out.len(), th)?;
    let symbol = Kernel::MoeFinalizeRouting.symbol(T::DTYPE);
    let f = lib.function(Kernel::MoeFinalizeRouting, T::DTYPE)?;
    let blocks = tiling.block_dim();
    // SAFETY: moe_finalize_routing_<t>(y, expanded_row_idx, weights, shared, residual, out, workspace,
    // tiling); y holds rows x hidden elements of T, the indices and weights tokens x top_k i32 / f32,
    // shared and residual (passed exactly when has_shared / has_residual are set) and out tokens x
    // hidden elements of T (checked above): the sizes the kernel gives its GlobalTensors. Row reads
    // through the indices are bounds-checked against y's size on the simulator (see the docs). Only
    // out is written (arg_mut); the workspace is unused.
    unsafe {
        let mut args = f.builder(stream);
        args.arg(y).arg(expanded_row_idx).arg(weights);
        for extra in [shared, residual] {
            match extra {
                Some(b) => args.arg(b),
                None => args.null(),
            };
        }
        args.arg_mut(out).null().tiling(&tiling).launch(blocks)
    }
    .map_err(|e| device_error(symbol, e))?;
    Ok(Launched {
        symbol,
        blocks,
        tiling,
    })
}
