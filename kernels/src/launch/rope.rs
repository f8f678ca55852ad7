//! Launcher of `rope_<t>` (`src/ascendc/rope.cpp`).

use dsnpu_runtime::{DeviceBuffer, Stream};

use super::{device_error, expect_len, product, KernelElem, KernelLibrary, Launched};
use crate::{Kernel, KernelError, Result, RopeLayout, RopeTiling};

/// The shape of a rotary embedding launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RopeShape {
    pub tokens: usize,
    pub heads: usize,
    /// Rotated elements per row (even).
    pub dim: usize,
    /// Elements from one (token, head) row to the next (`>= dim`: a rope slice of a wider head).
    pub row_stride: usize,
    /// Rows of the cos and sin tables (positions they cover).
    pub table_rows: usize,
    pub layout: RopeLayout,
}

impl RopeShape {
    /// Rows of `dim` contiguous elements, `[tokens, heads, dim]`.
    pub fn dense(
        tokens: usize,
        heads: usize,
        dim: usize,
        table_rows: usize,
        layout: RopeLayout,
    ) -> RopeShape {
        RopeShape {
            tokens,
            heads,
            dim,
            row_stride: dim,
            table_rows,
            layout,
        }
    }

    /// Elements of `x` (and `y`) the kernel reaches: up to the last row's `dim` elements.
    fn extent(&self) -> Result<usize> {
        const K: &str = "rope";
        let rows = product(K, "tokens * heads", self.tokens, self.heads)?;
        if rows == 0 {
            return Err(KernelError::InvalidShape {
                kernel: K,
                reason: format!("{} tokens of {} heads", self.tokens, self.heads),
            });
        }
        product(K, "rows * row_stride", rows - 1, self.row_stride)?
            .checked_add(self.dim)
            .ok_or_else(|| KernelError::InvalidShape {
                kernel: K,
                reason: "x extent overflows".into(),
            })
    }
}

/// Rotates `x` into `y` (`[tokens, heads, dim]` rows `row_stride` apart; elements between rows are
/// not touched) at `positions[t]` (i32, `tokens` of them) with the f32 tables `cos` and `sin`
/// (`[table_rows, dim / 2]`, any scaling already applied):
/// `a' = a cos - b sin`, `b' = b cos + a sin` for each pair `(a, b)` of `shape.layout`.
///
/// `x` and `y` must hold exactly the rows' extent, `(tokens * heads - 1) * row_stride + dim`
/// elements. Positions are device data the launcher cannot check: each must be in
/// `0..table_rows` (see the module docs for what happens otherwise).
#[allow(clippy::too_many_arguments)]
pub fn rope<T: KernelElem>(
    lib: &KernelLibrary,
    stream: &Stream,
    x: &DeviceBuffer<T>,
    positions: &DeviceBuffer<i32>,
    cos: &DeviceBuffer<f32>,
    sin: &DeviceBuffer<f32>,
    y: &mut DeviceBuffer<T>,
    shape: RopeShape,
) -> Result<Launched<RopeTiling>> {
    const K: &str = "rope";
    let tiling = RopeTiling::new(
        shape.tokens as u64,
        shape.heads as u64,
        shape.dim as u64,
        shape.row_stride as u64,
        shape.table_rows as u64,
        shape.layout,
        T::DTYPE,
        lib.hardware().vector,
    )?;
    let extent = shape.extent()?;
    expect_len(K, "x", x.len(), extent)?;
    expect_len(K, "y", y.len(), extent)?;
    expect_len(K, "positions", positions.len(), shape.tokens)?;
    let table = product(K, "table_rows * dim / 2", shape.table_rows, shape.dim / 2)?;
    expect_len(K, "cos", cos.len(), table)?;
    expect_len(K, "sin", sin.len(), table)?;
    let symbol = Kernel::Rope.symbol(T::DTYPE);
    let f = lib.function(Kernel::Rope, T::DTYPE)?;
    let blocks = tiling.block_dim();
    // SAFETY: rope_<t>(x, positions, cos, sin, y, workspace, tiling); x and y hold the rows' extent
    // of T, positions `tokens` i32, cos and sin table_rows x dim/2 f32 (checked above), the sizes the
    // kernel gives its GlobalTensors for this tiling; every table read goes through a size-checked
    // GlobalTensor, so a bad position faults instead of leaving the table; only y is written (arg_mut);
    // the workspace is unused.
    unsafe {
        f.builder(stream)
            .arg(x)
            .arg(positions)
            .arg(cos)
            .arg(sin)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_reaches_the_last_rows_dim() {
        let mut s = RopeShape::dense(3, 2, 8, 16, RopeLayout::Interleaved);
        assert_eq!(s.extent().unwrap(), 48);
        // A 64-wide rope slice of 192-wide heads: 6 rows, the last one ending 64 into its head.
        s.dim = 64;
        s.row_stride = 192;
        assert_eq!(s.extent().unwrap(), 5 * 192 + 64);
        s.tokens = 0;
        assert!(matches!(s.extent(), Err(KernelError::InvalidShape { .. })));
    }
}
