//! Tilings of the small data-movement and sampling kernels a device-resident model step needs:
//! `gather_rows_<t>` (`src/ascendc/gather_rows.cpp`) and `argmax_<t>` (`src/ascendc/argmax.cpp`), the
//! structs generated from `DsnpuGatherRowsTiling` and `DsnpuArgmaxTiling`
//! (`include/dsnpu_kernels/tiling.h`; `tests/mla_layout.rs` compares the layouts with the C compiler's).
//!
//! Contract, as for [`crate::tiling`]: the constructors validate the shape (no empty extent, every
//! source row inside the source for a strided copy, everything within the kernels' 32-bit fields) and
//! return a tiling whose Unified Buffer plan fits the budget, or a typed error. Not checked here: an
//! index list, which lives on the device (an entry outside the source faults on the checked read).

use crate::tiling::{invalid, round_up, split, to_u32, UB_BLOCK};
use crate::{CoreBudget, KernelDtype, Result};

pub use crate::tiling_structs::{ArgmaxTiling, GatherRowsTiling, SoftmaxTiling};

/// Most elements one tile of either kernel holds.
pub const STEP_MAX_TILE: u32 = 8192;
/// Most rows one copy of gather_rows_<t> moves (DataCopy's block count is 16-bit).
const GATHER_MAX_ROWS_PER_COPY: u32 = 4095;

/// The addressing of a row gather: `y[r] = x[offset + i·stride_a + j·stride_b (+ idx[r]·stride_idx)
/// .. + cols]` for `r = i·inner + j`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatherRowsDims {
    pub rows: u64,
    pub inner: u64,
    pub cols: u64,
    pub offset: u64,
    pub stride_a: u64,
    pub stride_b: u64,
    /// `Some(stride)` when rows are picked by an index list.
    pub stride_idx: Option<u64>,
    /// Elements of `x`.
    pub src_len: u64,
    /// With an index list: how many rows of `stride_idx` it may select (for the bound check).
    pub idx_rows: u64,
}

impl GatherRowsTiling {
    pub fn new(d: GatherRowsDims, dtype: KernelDtype, budget: CoreBudget) -> Result<Self> {
        const K: &str = "gather_rows";
        let budget = budget.validate()?;
        if d.rows == 0 || d.cols == 0 || d.inner == 0 || !d.rows.is_multiple_of(d.inner) {
            return Err(invalid(
                K,
                format!("{} rows of {} ({} inner)", d.rows, d.cols, d.inner),
            ));
        }
        // The farthest element any row reaches, index list at its largest allowed row.
        let outer = d.rows / d.inner;
        let idx_reach = d
            .stride_idx
            .map_or(0, |s| s.saturating_mul(d.idx_rows.saturating_sub(1)));
        let reach = d
            .offset
            .saturating_add((outer - 1).saturating_mul(d.stride_a))
            .saturating_add((d.inner - 1).saturating_mul(d.stride_b))
            .saturating_add(idx_reach)
            .saturating_add(d.cols);
        if reach > d.src_len {
            return Err(invalid(
                K,
                format!(
                    "rows reach element {reach} of a {}-element source",
                    d.src_len
                ),
            ));
        }
        to_u32(K, "rows * cols", d.rows.saturating_mul(d.cols))?;
        to_u32(K, "source reach", reach)?;
        let rows = to_u32(K, "rows", d.rows)?;
        // Two tiles in flight (gather_rows_<t>'s queue).
        let sz = u64::from(dtype.size());
        let half = u64::from(budget.ub_bytes) / 2;
        let cols_per_tile = (d.cols as u32).min(STEP_MAX_TILE).min((half / sz) as u32);
        let (rows_per_block, _) = split(rows, budget.cores);
        // Whole rows without an index list, each a row stride after the last (stride_b, or stride_a
        // when inner is 1): several per copy.
        let pitch = round_up(u64::from(cols_per_tile) * sz, UB_BLOCK);
        let stride = if d.inner == 1 { d.stride_a } else { d.stride_b };
        let rows_per_tile =
            if d.stride_idx.is_none() && d.cols == u64::from(cols_per_tile) && stride >= d.cols {
                (half / pitch)
                    .min(u64::from(GATHER_MAX_ROWS_PER_COPY))
                    .min(u64::from(rows_per_block))
                    .max(1) as u32
            } else {
                1
            };
        Ok(GatherRowsTiling {
            rows,
            inner: d.inner as u32,
            cols: d.cols as u32,
            has_idx: u32::from(d.stride_idx.is_some()),
            offset: d.offset as u32,
            stride_a: to_u32(K, "stride_a", d.stride_a)?,
            stride_b: to_u32(K, "stride_b", d.stride_b)?,
            stride_idx: to_u32(K, "stride_idx", d.stride_idx.unwrap_or(0))?,
            src_len: to_u32(K, "src_len", d.src_len)?,
            rows_per_block,
            cols_per_tile,
            rows_per_tile,
        })
    }

    /// Unified Buffer bytes of `gather_rows_<t>` (`dtype`: its element type): two tiles of
    /// `rows_per_tile` rows of `cols_per_tile` elements, each row padded to 32 bytes.
    pub fn ub_bytes(&self, dtype: KernelDtype) -> u64 {
        2 * u64::from(self.rows_per_tile)
            * round_up(
                u64::from(self.cols_per_tile) * u64::from(dtype.size()),
                UB_BLOCK,
            )
    }

    /// Blocks to launch.
    pub fn block_dim(&self) -> u32 {
        self.rows.div_ceil(self.rows_per_block)
    }
}

/// UB bytes of a kernel that scans rows for the largest value and its id (`argmax_<t>`, and
/// `sample_top_p_<t>` before its candidate list): a tile of `cols_per_tile` values (and its f32 copy
/// for 16-bit types), a block, the per-64-column (value, id) pairs, the block's row results.
pub(crate) fn arg_scan_ub(cols_per_tile: u32, rows_per_block: u32, dtype: KernelDtype) -> u64 {
    let c = u64::from(cols_per_tile);
    let s = u64::from(dtype.size());
    let tile = round_up(c * s, UB_BLOCK);
    let wide = if dtype == KernelDtype::F32 {
        0
    } else {
        tile / s * 4
    };
    tile + wide
        + UB_BLOCK
        + round_up(c.div_ceil(64) * 2 * 4, UB_BLOCK)
        + round_up(u64::from(rows_per_block) * 4, UB_BLOCK)
}

/// The row split the row-scanning kernels (`argmax_<t>`, `softmax_<t>`, `sample_top_p_<t>`) use:
/// (rows, cols, rows_per_block, cols_per_tile), rows over the cores and each row in tiles of at most
/// [`STEP_MAX_TILE`] elements; with `ids`, column indices must fit in i32 (argmax returns them).
pub(crate) fn row_scan(
    k: &'static str,
    rows: u64,
    cols: u64,
    ids: bool,
    budget: CoreBudget,
) -> Result<(u32, u32, u32, u32)> {
    if rows == 0 || cols == 0 {
        return Err(invalid(k, format!("empty input [{rows}, {cols}]")));
    }
    if ids && cols > i32::MAX as u64 {
        return Err(invalid(k, format!("{cols} columns exceed i32 ids")));
    }
    to_u32(k, "rows * cols", rows.saturating_mul(cols))?;
    let (rows, cols) = (rows as u32, cols as u32);
    let (rows_per_block, _) = split(rows, budget.cores);
    Ok((rows, cols, rows_per_block, cols.min(STEP_MAX_TILE)))
}

/// DoesNotFit unless `needed` UB bytes fit the budget.
pub(crate) fn check_ub(k: &'static str, needed: u64, budget: CoreBudget) -> Result<()> {
    if needed > u64::from(budget.ub_bytes) {
        return Err(crate::KernelError::DoesNotFit {
            kernel: k,
            needed,
            available: u64::from(budget.ub_bytes),
        });
    }
    Ok(())
}

impl ArgmaxTiling {
    pub fn new(rows: u64, cols: u64, dtype: KernelDtype, budget: CoreBudget) -> Result<Self> {
        const K: &str = "argmax";
        let budget = budget.validate()?;
        let (rows, cols, rows_per_block, cols_per_tile) = row_scan(K, rows, cols, true, budget)?;
        let t = ArgmaxTiling {
            rows,
            cols,
            rows_per_block,
            cols_per_tile,
        };
        check_ub(K, t.ub_bytes(dtype), budget)?;
        Ok(t)
    }

    /// The kernel's Unified Buffer use per block, bytes (the formula of its source).
    pub fn ub_bytes(&self, dtype: KernelDtype) -> u64 {
        arg_scan_ub(self.cols_per_tile, self.rows_per_block, dtype)
    }

    /// Blocks to launch.
    pub fn block_dim(&self) -> u32 {
        self.rows.div_ceil(self.rows_per_block)
    }
}

impl SoftmaxTiling {
    pub fn new(rows: u64, cols: u64, dtype: KernelDtype, budget: CoreBudget) -> Result<Self> {
        const K: &str = "softmax";
        let budget = budget.validate()?;
        let (rows, cols, rows_per_block, cols_per_tile) = row_scan(K, rows, cols, false, budget)?;
        let t = SoftmaxTiling {
            rows,
            cols,
            rows_per_block,
            cols_per_tile,
        };
        check_ub(K, t.ub_bytes(dtype), budget)?;
        Ok(t)
    }

    /// The kernel's Unified Buffer use per block, bytes (the formula of its source).
    pub fn ub_bytes(&self, dtype: KernelDtype) -> u64 {
        let c = u64::from(self.cols_per_tile);
        let wide = if dtype == KernelDtype::F32 { 0 } else { c * 4 };
        round_up(c * u64::from(dtype.size()), UB_BLOCK)
            + wide
            + c * 4
            + UB_BLOCK
            + round_up((c * 4).div_ceil(256) * 2 * 4, UB_BLOCK)
            + UB_BLOCK
    }

    /// Blocks to launch.
    pub fn block_dim(&self) -> u32 {
        self.rows.div_ceil(self.rows_per_block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: CoreBudget = CoreBudget::ASCEND_910B2_VECTOR;

    fn dims() -> GatherRowsDims {
        // [T=3, H=4, 24] -> [H, T, 16]: the first 16 of each head row, heads outermost.
        GatherRowsDims {
            rows: 12,
            inner: 3,
            cols: 16,
            offset: 0,
            stride_a: 24,
            stride_b: 96,
            stride_idx: None,
            src_len: 288,
            idx_rows: 0,
        }
    }

    #[test]
    fn a_permutation_reaches_exactly_the_source_end_or_is_refused() {
        let t = GatherRowsTiling::new(dims(), KernelDtype::F32, B).unwrap();
        assert_eq!(
            (
                t.rows_per_block,
                t.block_dim(),
                t.cols_per_tile,
                t.rows_per_tile
            ),
            (1, 12, 16, 1)
        );
        // On two cores a block runs 6 rows: whole rows without an index list go several per copy (the
        // kernel stops a copy at the end of an outer index); with an index list, or rows that overlap
        // in the source (stride_b < cols), one at a time.
        let two = CoreBudget { cores: 2, ..B };
        let t = GatherRowsTiling::new(dims(), KernelDtype::F32, two).unwrap();
        assert_eq!((t.rows_per_block, t.rows_per_tile), (6, 6));
        assert_eq!(t.ub_bytes(KernelDtype::F32), 2 * 6 * 64);
        let by_index = GatherRowsDims {
            stride_idx: Some(24),
            idx_rows: 1,
            ..dims()
        };
        assert_eq!(
            GatherRowsTiling::new(by_index, KernelDtype::F32, two)
                .unwrap()
                .rows_per_tile,
            1
        );
        let overlapping = GatherRowsDims {
            stride_b: 8,
            ..dims()
        };
        assert_eq!(
            GatherRowsTiling::new(overlapping, KernelDtype::F32, two)
                .unwrap()
                .rows_per_tile,
            1
        );
        // Shifting every row by 9 puts the last one past the end (3·24 + 2·96 + 9 + 16 > 288).
        assert!(GatherRowsTiling::new(
            GatherRowsDims {
                offset: 9,
                ..dims()
            },
            KernelDtype::F32,
            B
        )
        .is_err());
        assert!(
            GatherRowsTiling::new(GatherRowsDims { inner: 5, ..dims() }, KernelDtype::F32, B)
                .is_err()
        );
    }

    #[test]
    fn argmax_fits_a_deepseek_vocabulary() {
        let t = ArgmaxTiling::new(64, 129_280, KernelDtype::Bf16, B).unwrap();
        assert_eq!((t.rows_per_block, t.cols_per_tile), (2, 8192));
        assert!(t.ub_bytes(KernelDtype::Bf16) < 196_608);
        assert!(ArgmaxTiling::new(0, 5, KernelDtype::F32, B).is_err());
    }
}
