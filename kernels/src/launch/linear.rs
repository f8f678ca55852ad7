//! Launcher of `linear_<t>` (`src/ascendc/linear.cpp`).

use dsnpu_runtime::{DeviceBuffer, Stream};

use super::{device_error, expect_len, product, KernelElem, KernelLibrary, Launched};
use crate::{Kernel, LinearTiling, Result};

/// `y[m, n] = x[m, k] * w[n, k]^T (+ bias[n])` (weights stored `[out, in]`, as in Hugging Face
/// checkpoints), with f32 accumulation in the cube; the f32 bias is added before the result is rounded
/// to `T`. Tiled over the cube cores of the library's hardware.
#[allow(clippy::too_many_arguments)]
pub fn linear<T: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    x: &DeviceBuffer<T>,
    w: &DeviceBuffer<T>,
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
    let symbol = Kernel::Linear.symbol(T::DTYPE);
    let f = lib.function(Kernel::Linear, T::DTYPE)?;
    let blocks = tiling.block_dim();
    // SAFETY: linear_<t>(x, w, bias, y, workspace, tiling); x holds m x k, w n x k and y m x n
    // elements of T, bias (when given, and only then is has_bias set) n f32 (checked above): the sizes
    // the kernel gives its GlobalTensors; only y is written (arg_mut); the workspace is unused.
    unsafe {
        let mut args = f.builder(stream);
        args.arg(x).arg(w);
        match bias {
            Some(b) => args.arg(b),
            None => args.null(),
        };
        args.arg_mut(y).null().tiling(&tiling).launch(blocks)
    }
    .map_err(|e| device_error(symbol, e))?;
    Ok(Launched {
        symbol,
        blocks,
        tiling,
    })
}
