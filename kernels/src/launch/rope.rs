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
    /// Where x's first row starts in `x` (a rope slice after the rest of a head: `[T, H, dn + dr]`'s
    /// rope part starts at `dn`).
    pub x_offset: usize,
    /// Elements between y's rows (`>= dim`; `row_stride` when y has x's layout).
    pub y_row_stride: usize,
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
            x_offset: 0,
            y_row_stride: dim,
            table_rows,
            layout,
        }
    }

    /// The rope part of `[tokens, heads, head_dim]` rows (its last `dim` elements), rotated into rows
    /// of their own, `[tokens, heads, dim]`.
    pub fn tail_of(
        tokens: usize,
        heads: usize,
        head_dim: usize,
        dim: usize,
        table_rows: usize,
        layout: RopeLayout,
    ) -> RopeShape {
        RopeShape {
            row_stride: head_dim,
            x_offset: head_dim.saturating_sub(dim),
            ..RopeShape::dense(tokens, heads, dim, table_rows, layout)
        }
    }

    /// Elements of `x` (rows `row_stride` apart from `x_offset` on) and `y` (`y_row_stride` apart)
    /// the kernel reaches: up to the last row's `dim` elements.
    fn extents(&self) -> Result<(usize, usize)> {
        let x = self
            .extent(self.row_stride)?
            .checked_add(self.x_offset)
            .ok_or_else(|| KernelError::InvalidShape {
                kernel: "rope",
                reason: "x extent overflows".into(),
            })?;
        Ok((x, self.extent(self.y_row_stride)?))
    }

    /// Elements from the first row to the end of the last, rows `row_stride` apart.
    fn extent(&self, row_stride: usize) -> Result<usize> {
        const K: &str = "rope";
        let rows = product(K, "tokens * heads", self.tokens, self.heads)?;
        if rows == 0 {
            return Err(KernelError::InvalidShape {
                kernel: K,
                reason: format!("{} tokens of {} heads", self.tokens, self.heads),
            });
        }
        product(K, "rows * row_stride", rows - 1, row_stride)?
            .checked_add(self.dim)
            .ok_or_else(|| KernelError::InvalidShape {
                kernel: K,
                reason: "extent overflows".into(),
            })
    }
}

/// Rotates `x` into `y` (`[tokens, heads, dim]` rows, `row_stride` apart in x from element
/// `x_offset` on and `y_row_stride` apart in y; elements between rows are not touched) at
/// `positions[t]` (i32, `tokens` of them) with the f32 tables `cos` and `sin` (`[table_rows, dim /
/// 2]`, any scaling already applied): `a' = a cos - b sin`, `b' = b cos + a sin` for each pair `(a, b)`
/// of `shape.layout`.
///
/// `x` and `y` must hold exactly the rows' extents, `x_offset + (tokens * heads - 1) * row_stride +
/// dim` and `(tokens * heads - 1) * y_row_stride + dim` elements. Positions are device data the
/// launcher cannot check: each must be in `0..table_rows` (see the module docs for what happens
/// otherwise).
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
    )?
    .with_y_row_stride(shape.y_row_stride as u64)?;
    let (x_extent, y_extent) = shape.extents()?;
    expect_len(K, "x", x.len(), x_extent)?;
    expect_len(K, "y", y.len(), y_extent)?;
    expect_len(K, "positions", positions.len(), shape.tokens)?;
    let table = product(K, "table_rows * dim / 2", shape.table_rows, shape.dim / 2)?;
    expect_len(K, "cos", cos.len(), table)?;
    expect_len(K, "sin", sin.len(), table)?;
    let symbol = Kernel::Rope.symbol(T::DTYPE);
    let f = lib.function(Kernel::Rope, T::DTYPE)?;
    let blocks = tiling.block_dim();
    // SAFETY: rope_<t>(x, positions, cos, sin, y, workspace, tiling); x from element x_offset on (x is
    // passed as that element's address) and y hold their rows' extents of T, positions `tokens` i32,
    // cos and sin table_rows x dim/2 f32 (checked above), the sizes the kernel gives its GlobalTensors
    // for this tiling; every table read goes through a size-checked GlobalTensor, so a bad position
    // faults instead of leaving the table; only y is written (arg_mut); the workspace is unused.
    unsafe {
        f.builder(stream)
            .arg_at(x, shape.x_offset)
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
        assert_eq!(s.extents().unwrap(), (48, 48));
        // A 64-wide rope slice of 192-wide heads: 6 rows, the last one ending 64 into its head.
        s.dim = 64;
        s.row_stride = 192;
        s.y_row_stride = 192;
        assert_eq!(s.extents().unwrap(), (5 * 192 + 64, 5 * 192 + 64));
        // The same slice after 128 elements of each head, into rows of its own: x ends with its buffer.
        let t = RopeShape::tail_of(3, 2, 192, 64, 16, RopeLayout::Interleaved);
        assert_eq!((t.x_offset, t.row_stride, t.y_row_stride), (128, 192, 64));
        assert_eq!(t.extents().unwrap(), (6 * 192, 6 * 64));
        s.tokens = 0;
        assert!(matches!(s.extents(), Err(KernelError::InvalidShape { .. })));
    }
}
