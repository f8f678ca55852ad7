//! Launcher of `linear_<t>` (`src/ascendc/linear.cpp`).

use dsnpu_runtime::{DeviceBuffer, Stream};

use super::{
    device_error, expect_len, product, weight_kernel, KernelElem, KernelLibrary, Launched,
};
use crate::tiling::invalid;
use crate::{Kernel, LinearTiling, Result};

/// `y[m, n] = x[m, k] * w[n, k]^T (+ bias[n])` (weights stored `[out, in]`, as in Hugging Face
/// checkpoints), with f32 accumulation in the cube; the f32 bias is added before the result is rounded
/// to `T`. Tiled over the cube cores of the library's hardware.
///
/// The weights' type `W` is `T`, or any type with f32 activations (`linear_f32_w<w>`: each weight tile
/// is widened to f32 in the kernel, exactly, so 16-bit weights stay 16-bit in device memory); other
/// pairings are [`crate::KernelError::InvalidShape`].
#[allow(clippy::too_many_arguments)]
pub fn linear<T: KernelElem, W: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    x: &DeviceBuffer<T>,
    w: &DeviceBuffer<W>,
    bias: Option<&DeviceBuffer<f32>>,
    y: &mut DeviceBuffer<T>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<Launched<LinearTiling>> {
    const K: &str = "linear";
    expect_len(K, "x", x.len(), product(K, "m * k", m, k)?)?;
    expect_len(K, "w", w.len(), product(K, "n * k", n, k)?)?;
    expect_len(K, "y", y.len(), product(K, "m * n", m, n)?)?;
    if let Some(b) = bias {
        expect_len(K, "bias", b.len(), n)?;
    }
    let tiling = LinearTiling::new(
        m as u64,
        n as u64,
        k as u64,
        bias.is_some(),
        T::DTYPE,
        lib.hardware().cube,
    )?;
    // A tiling that splits k needs the symbols whose blocks meet in SyncAll.
    let (same, widened) = if tiling.k_blocks > 1 {
        (Kernel::LinearSplitK, Kernel::LinearSplitKF32W)
    } else {
        (Kernel::Linear, Kernel::LinearF32W)
    };
    let (kernel, dtype) = weight_kernel(K, same, widened, T::DTYPE, W::DTYPE)?;
    let symbol = kernel.symbol(dtype);
    let f = lib.function(kernel, dtype)?;
    let blocks = tiling.block_dim();
    let ws_bytes = usize::try_from(tiling.workspace_bytes())
        .map_err(|_| invalid(K, "the workspace does not fit the address space"))?;
    let mut workspace = stream
        .alloc::<u8>(ws_bytes)
        .map_err(|e| device_error(symbol, e))?;
    // SAFETY: linear_<t> / linear_f32_w<w> (or their split-k symbols, for a tiling with k_blocks > 1)
    // (x, w, bias, y, workspace, tiling), a 1:2 mix kernel; x holds m x k and y m x n elements of T, w
    // n x k of W (the kernel's weight type, picked by weight_kernel), bias (when given, and only then is
    // has_bias set) n f32 (checked above): the sizes the kernel gives its GlobalTensors. Written: y and
    // the workspace (arg_mut), which is workspace_bytes(): the system part, then two f32 baseM x baseN
    // tiles per block, or with k split one f32 [m, n] plane per slice. The launch has block_dim()
    // blocks, at most the cores of the library's hardware, so a split launch's SyncAll has them all.
    unsafe {
        let mut args = f.builder(stream);
        args.arg(x).arg(w);
        match bias {
            Some(b) => args.arg(b),
            None => args.null(),
        };
        args.arg_mut(y)
            .arg_mut(&mut workspace)
            .tiling(&tiling)
            .launch(blocks)
    }
    .map_err(|e| device_error(symbol, e))?;
    Ok(Launched {
        symbol,
        blocks,
        tiling,
    })
}
