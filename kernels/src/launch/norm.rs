//! Launchers of `rms_norm_<t>` and `add_rms_norm_<t>` (`src/ascendc/rms_norm.cpp`).

use dsnpu_runtime::{DeviceBuffer, Stream};

use super::{device_error, expect_len, product, KernelElem, KernelLibrary, Launched};
use crate::{Kernel, Result, RmsNormTiling};

/// `y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight` for `rows` rows of `weight.len()` elements
/// (row-major `x` and `y`, `rows * weight.len()` elements each), computed in f32.
pub fn rms_norm<T: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    x: &DeviceBuffer<T>,
    weight: &DeviceBuffer<T>,
    y: &mut DeviceBuffer<T>,
    rows: usize,
    eps: f32,
) -> Result<Launched<RmsNormTiling>> {
    const K: &str = "rms_norm";
    let cols = weight.len();
    let n = product(K, "rows * cols", rows, cols)?;
    expect_len(K, "x", x.len(), n)?;
    expect_len(K, "y", y.len(), n)?;
    let tiling = RmsNormTiling::new(
        rows as u64,
        cols as u64,
        eps,
        T::DTYPE,
        false,
        lib.hardware().vector,
    )?;
    let symbol = Kernel::RmsNorm.symbol(T::DTYPE);
    let f = lib.function(Kernel::RmsNorm, T::DTYPE)?;
    let blocks = tiling.block_dim();
    // SAFETY: rms_norm_<t>(x, weight, y, workspace, tiling) with T the kernel's element type; x and y
    // hold rows x cols elements and weight cols (checked above), which is all the kernel touches for
    // this tiling (its source: row runs of rows_per_block starting at b * rows_per_block, clipped to
    // rows); only y is written and it is passed with arg_mut; the workspace is unused.
    unsafe {
        f.builder(stream)
            .arg(x)
            .arg(weight)
            .arg_mut(y)
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

/// `sum = x + residual` (rounded to `T`) and `y = rms_norm(sum) * weight`, for `rows` rows of
/// `weight.len()` elements; both `y` and `sum` are written.
#[allow(clippy::too_many_arguments)]
pub fn add_rms_norm<T: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    x: &DeviceBuffer<T>,
    residual: &DeviceBuffer<T>,
    weight: &DeviceBuffer<T>,
    y: &mut DeviceBuffer<T>,
    sum: &mut DeviceBuffer<T>,
    rows: usize,
    eps: f32,
) -> Result<Launched<RmsNormTiling>> {
    const K: &str = "add_rms_norm";
    let cols = weight.len();
    let n = product(K, "rows * cols", rows, cols)?;
    expect_len(K, "x", x.len(), n)?;
    expect_len(K, "residual", residual.len(), n)?;
    expect_len(K, "y", y.len(), n)?;
    expect_len(K, "sum", sum.len(), n)?;
    let tiling = RmsNormTiling::new(
        rows as u64,
        cols as u64,
        eps,
        T::DTYPE,
        true,
        lib.hardware().vector,
    )?;
    let symbol = Kernel::AddRmsNorm.symbol(T::DTYPE);
    let f = lib.function(Kernel::AddRmsNorm, T::DTYPE)?;
    let blocks = tiling.block_dim();
    // SAFETY: add_rms_norm_<t>(x, residual, weight, y, sum, workspace, tiling); x, residual, y and sum
    // hold rows x cols elements of T and weight cols (checked above), the extents the kernel uses for
    // this tiling; y and sum, the only outputs, are passed with arg_mut (distinct buffers, as `&mut`
    // guarantees); the workspace is unused.
    unsafe {
        f.builder(stream)
            .arg(x)
            .arg(residual)
            .arg(weight)
            .arg_mut(y)
            .arg_mut(sum)
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
