//! Launcher of `sample_top_p_<t>` (`src/ascendc/sample_top_p.cpp`): temperature/top-p sampling on the
//! device, one id per row, so a sampled decode step downloads only `[rows]` i32.

use dsnpu_runtime::{DeviceBuffer, Stream};

use super::{device_error, expect_len, product, KernelElem, KernelLibrary, Launched};
use crate::{Kernel, Result, SampleTopPTiling};

/// `out[r]` = an id drawn from the top-p nucleus of `softmax(x[r] / temperature)` with the uniform
/// `u[r]` in `[0, 1)` (`x [rows, cols]`, `u` f32 `[rows]`, `out` i32 `[rows]`; -1 for a row with NaN,
/// `+inf` or only `-inf`). The semantics are `dsnpu_ops::sampling::Sampler`'s; see the kernel source.
#[allow(clippy::too_many_arguments)]
pub fn sample_top_p<T: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    x: &DeviceBuffer<T>,
    u: &DeviceBuffer<f32>,
    out: &mut DeviceBuffer<i32>,
    rows: usize,
    cols: usize,
    temperature: f32,
    top_p: f32,
) -> Result<Launched<SampleTopPTiling>> {
    const K: &str = "sample_top_p";
    let tiling = SampleTopPTiling::new(
        rows as u64,
        cols as u64,
        temperature,
        top_p,
        T::DTYPE,
        lib.hardware().vector,
    )?;
    expect_len(K, "x", x.len(), product(K, "rows * cols", rows, cols)?)?;
    expect_len(K, "u", u.len(), rows)?;
    expect_len(K, "out", out.len(), rows)?;
    let symbol = Kernel::SampleTopP.symbol(T::DTYPE);
    let f = lib.function(Kernel::SampleTopP, T::DTYPE)?;
    let blocks = tiling.block_dim();
    // SAFETY: sample_top_p_<t>(x, u, out, workspace, tiling); x holds rows x cols elements of T, u rows
    // f32 and out rows i32 (checked above), the extents the kernel gives its GlobalTensors; only out is
    // written (arg_mut); the workspace is unused.
    unsafe {
        f.builder(stream)
            .arg(x)
            .arg(u)
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
