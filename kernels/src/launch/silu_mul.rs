//! Launcher of `silu_mul_<t>` (`src/ascendc/silu_mul.cpp`).

use dsnpu_runtime::{DeviceBuffer, Stream};

use super::{device_error, expect_len, product, KernelElem, KernelLibrary, Launched};
use crate::{Kernel, Result, SiluMulTiling};

/// SwiGLU: `out[r, j] = silu(gate_up[r, j]) * gate_up[r, inter + j]` with `silu(g) = g / (1 + e^-g)`,
/// for `gate_up` `[rows, 2 * inter]` and `out` `[rows, inter]`, computed in f32.
pub fn silu_mul<T: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    gate_up: &DeviceBuffer<T>,
    out: &mut DeviceBuffer<T>,
    rows: usize,
    inter: usize,
) -> Result<Launched<SiluMulTiling>> {
    const K: &str = "silu_mul";
    let n = product(K, "rows * inter", rows, inter)?;
    expect_len(
        K,
        "gate_up",
        gate_up.len(),
        product(K, "2 * rows * inter", n, 2)?,
    )?;
    expect_len(K, "out", out.len(), n)?;
    let tiling = SiluMulTiling::new(rows as u64, inter as u64, T::DTYPE, lib.hardware().vector)?;
    let symbol = Kernel::SiluMul.symbol(T::DTYPE);
    let f = lib.function(Kernel::SiluMul, T::DTYPE)?;
    let blocks = tiling.block_dim();
    // SAFETY: silu_mul_<t>(gate_up, out, workspace, tiling); gate_up holds rows x 2 inter and out
    // rows x inter elements of T (checked above), the sizes the kernel gives its GlobalTensors; only
    // out is written (arg_mut); the workspace is unused.
    unsafe {
        f.builder(stream)
            .arg(gate_up)
            .arg_mut(out)
            .null()
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
