//! Tiling structs (`#[repr(C)]` mirrors of `include/dsnpu_kernels/tiling.h`) and their computation from
//! shapes and the hardware budget.
//!
//! Contract: each `new` validates the shape (non-empty, within the kernels' 32-bit index types, 4095 rows
//! per DataCopyPad) and the budget, and returns a tiling whose Unified Buffer plan — the same formula the
//! kernel's source states and allocates — fits `CoreBudget::ub_bytes`. The kernels trust these values.
//! `block_dim()` is the number of blocks to launch.

use crate::{KernelDtype, KernelError, Result};

/// What one launch may use: cores (blocks) and Unified Buffer bytes per core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreBudget {
    pub cores: u32,
    pub ub_bytes: u32,
}

impl CoreBudget {
    /// Vector cores of a 910B2 die (48) with 192 KiB of UB each.
    pub const ASCEND_910B2_VECTOR: CoreBudget = CoreBudget {
        cores: 48,
        ub_bytes: 196_608,
    };
    /// Cube cores of a 910B2 die (24); the cube kernels use no UB of their own.
    pub const ASCEND_910B2_CUBE: CoreBudget = CoreBudget {
        cores: 24,
        ub_bytes: 196_608,
    };

    pub(crate) fn validate(self) -> Result<Self> {
        if self.cores == 0 || self.ub_bytes == 0 {
            return Err(KernelError::InvalidHardware(format!(
                "{} cores with {} bytes of UB",
                self.cores, self.ub_bytes
            )));
        }
        Ok(self)
    }
}

/// A tiling struct that is passed to a kernel as raw bytes.
pub trait Tiling: Copy {
    /// The struct's bytes, laid out as the C header declares it.
    fn as_bytes(&self) -> &[u8];
}

macro_rules! impl_tiling {
    ($($t:ty),*) => {$(
        impl Tiling for $t {
            fn as_bytes(&self) -> &[u8] {
                // SAFETY: the struct is #[repr(C)] with only u32/f32 fields, so it has no padding (the
                // layout test checks every offset against the C compiler's) and all
                // size_of::<Self>() bytes behind `self` are initialised for the borrow's lifetime.
                unsafe {
                    std::slice::from_raw_parts((self as *const Self).cast::<u8>(), std::mem::size_of::<Self>())
                }
            }
        }
    )*};
}
pub(crate) use impl_tiling;

/// Most blocks one DataCopyPad moves (its blockCount), which bounds rows per tile.
pub const MAX_ROWS_PER_COPY: u32 = 4095;
pub(crate) const UB_BLOCK: u64 = 32;

pub(crate) fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

pub(crate) fn invalid(kernel: &'static str, reason: impl Into<String>) -> KernelError {
    KernelError::InvalidShape {
        kernel,
        reason: reason.into(),
    }
}

/// `value` as u32, or an InvalidShape error naming `what`.
pub(crate) fn to_u32(kernel: &'static str, what: &str, value: u64) -> Result<u32> {
    u32::try_from(value).map_err(|_| invalid(kernel, format!("{what} = {value} exceeds u32")))
}

/// The largest `n` in `1..=cap` with `fixed + n * per <= budget`, or DoesNotFit.
pub(crate) fn largest_fit(
    kernel: &'static str,
    fixed: u64,
    per: u64,
    cap: u32,
    budget: u32,
) -> Result<u32> {
    let budget = u64::from(budget);
    if fixed + per > budget {
        return Err(KernelError::DoesNotFit {
            kernel,
            needed: fixed + per,
            available: budget,
        });
    }
    let n = (budget - fixed) / per.max(1);
    Ok(n.min(u64::from(cap)) as u32)
}

/// Split `items` over at most `cores` blocks: (items per block, blocks).
pub(crate) fn split(items: u32, cores: u32) -> (u32, u32) {
    let per = items.div_ceil(cores);
    (per, items.div_ceil(per))
}

/// Tiling of `rms_norm_<t>` and `add_rms_norm_<t>` (`DsnpuRmsNormTiling`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsNormTiling {
    pub rows: u32,
    pub cols: u32,
    pub rows_per_block: u32,
    pub rows_per_tile: u32,
    pub eps: f32,
    pub reserved: u32,
}

impl RmsNormTiling {
    /// Rows of `cols` elements; `residual` selects the fused `add_rms_norm` plan.
    pub fn new(
        rows: u64,
        cols: u64,
        eps: f32,
        dtype: KernelDtype,
        residual: bool,
        budget: CoreBudget,
    ) -> Result<Self> {
        const K: &str = "rms_norm";
        let budget = budget.validate()?;
        if rows == 0 || cols == 0 {
            return Err(invalid(K, format!("empty input [{rows}, {cols}]")));
        }
        if !eps.is_finite() || eps < 0.0 {
            return Err(invalid(
                K,
                format!("eps {eps} is not a finite non-negative number"),
            ));
        }
        let rows = to_u32(K, "rows", rows)?;
        let cols = to_u32(K, "cols", cols)?;
        to_u32(K, "rows * cols", u64::from(rows) * u64::from(cols))?;
        let (fixed, per_row) = Self::ub_plan(cols, dtype, residual);
        let (rows_per_block, _) = split(rows, budget.cores);
        let cap = rows_per_block.min(MAX_ROWS_PER_COPY);
        let rows_per_tile = largest_fit(K, fixed, per_row, cap, budget.ub_bytes)?;
        Ok(RmsNormTiling {
            rows,
            cols,
            rows_per_block,
            rows_per_tile,
            eps,
            reserved: 0,
        })
    }

    /// UB bytes as (independent of the tile, per tile row), as the kernel allocates them.
    fn ub_plan(cols: u32, dtype: KernelDtype, residual: bool) -> (u64, u64) {
        let p = round_up(u64::from(cols) * u64::from(dtype.size()), UB_BLOCK);
        let f = p / u64::from(dtype.size()) * 4;
        let queues = if residual { 2 } else { 1 };
        let widened = if dtype == KernelDtype::F32 { 0 } else { f };
        let reduce = UB_BLOCK + round_up(u64::from(cols).div_ceil(64) * 4, UB_BLOCK);
        (2 * f + reduce, queues * 2 * p + widened)
    }

    /// The kernel's Unified Buffer use per block, bytes.
    pub fn ub_bytes(&self, dtype: KernelDtype, residual: bool) -> u64 {
        let (fixed, per_row) = Self::ub_plan(self.cols, dtype, residual);
        fixed + per_row * u64::from(self.rows_per_tile)
    }

    /// Blocks to launch.
    pub fn block_dim(&self) -> u32 {
        self.rows.div_ceil(self.rows_per_block)
    }
}

/// Which elements of a head form the rotated pairs (`DSNPU_ROPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum RopeLayout {
    /// Pairs `(x[2i], x[2i+1])`.
    Interleaved = 0,
    /// Pairs `(x[i], x[i + dim/2])`.
    HalfSplit = 1,
}

/// Tiling of `rope_<t>` (`DsnpuRopeTiling`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RopeTiling {
    pub tokens: u32,
    pub heads: u32,
    pub dim: u32,
    pub row_stride: u32,
    pub table_rows: u32,
    pub layout: u32,
    pub tokens_per_block: u32,
    pub tokens_per_tile: u32,
}

impl RopeTiling {
    /// `x`/`y` `[tokens, heads, dim]` with rows `row_stride` elements apart; tables `[table_rows, dim/2]`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tokens: u64,
        heads: u64,
        dim: u64,
        row_stride: u64,
        table_rows: u64,
        layout: RopeLayout,
        dtype: KernelDtype,
        budget: CoreBudget,
    ) -> Result<Self> {
        const K: &str = "rope";
        let budget = budget.validate()?;
        if tokens == 0 || heads == 0 || dim == 0 || table_rows == 0 {
            return Err(invalid(K, format!("empty shape: {tokens} tokens, {heads} heads, dim {dim}, {table_rows} table rows")));
        }
        if dim % 2 == 1 {
            return Err(invalid(K, format!("rotary dim {dim} is odd")));
        }
        if row_stride < dim {
            return Err(invalid(
                K,
                format!("row stride {row_stride} is shorter than dim {dim}"),
            ));
        }
        if heads > u64::from(MAX_ROWS_PER_COPY) {
            return Err(invalid(
                K,
                format!("{heads} heads exceed {MAX_ROWS_PER_COPY} rows per copy"),
            ));
        }
        let tokens = to_u32(K, "tokens", tokens)?;
        let heads = to_u32(K, "heads", heads)?;
        let dim = to_u32(K, "dim", dim)?;
        let row_stride = to_u32(K, "row_stride", row_stride)?;
        let table_rows = to_u32(K, "table_rows", table_rows)?;
        to_u32(
            K,
            "rows * row_stride",
            u64::from(tokens) * u64::from(heads) * u64::from(row_stride),
        )?;
        to_u32(
            K,
            "table elements",
            u64::from(table_rows) * u64::from(dim / 2),
        )?;
        let (fixed, per_token) = Self::ub_plan(heads, dim, dtype);
        let (tokens_per_block, _) = split(tokens, budget.cores);
        let cap = tokens_per_block.min(MAX_ROWS_PER_COPY / heads);
        let tokens_per_tile = largest_fit(K, fixed, per_token, cap, budget.ub_bytes)?;
        Ok(RopeTiling {
            tokens,
            heads,
            dim,
            row_stride,
            table_rows,
            layout: layout as u32,
            tokens_per_block,
            tokens_per_tile,
        })
    }

    fn ub_plan(heads: u32, dim: u32, dtype: KernelDtype) -> (u64, u64) {
        let p = round_up(u64::from(dim) * u64::from(dtype.size()), UB_BLOCK);
        let f = p / u64::from(dtype.size()) * 4;
        let tables = 2 * round_up(u64::from(dim / 2) * 4, UB_BLOCK);
        let widened = if dtype == KernelDtype::F32 { 0 } else { f };
        (tables + 7 * f, u64::from(heads) * (2 * p + widened))
    }

    /// The kernel's Unified Buffer use per block, bytes.
    pub fn ub_bytes(&self, dtype: KernelDtype) -> u64 {
        let (fixed, per_token) = Self::ub_plan(self.heads, self.dim, dtype);
        fixed + per_token * u64::from(self.tokens_per_tile)
    }

    /// Blocks to launch.
    pub fn block_dim(&self) -> u32 {
        self.tokens.div_ceil(self.tokens_per_block)
    }
}

/// Tiling of `silu_mul_<t>` (`DsnpuSiluMulTiling`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiluMulTiling {
    pub rows: u32,
    pub inter: u32,
    pub rows_per_block: u32,
    pub rows_per_tile: u32,
    pub cols_per_tile: u32,
    pub reserved: u32,
}

impl SiluMulTiling {
    /// `gate_up` `[rows, 2 * inter]` -> `[rows, inter]`.
    pub fn new(rows: u64, inter: u64, dtype: KernelDtype, budget: CoreBudget) -> Result<Self> {
        const K: &str = "silu_mul";
        let budget = budget.validate()?;
        if rows == 0 || inter == 0 {
            return Err(invalid(K, format!("empty input [{rows}, 2 x {inter}]")));
        }
        let rows = to_u32(K, "rows", rows)?;
        let inter = to_u32(K, "inter", inter)?;
        to_u32(
            K,
            "rows * 2 * inter",
            u64::from(rows) * 2 * u64::from(inter),
        )?;
        let (rows_per_block, _) = split(rows, budget.cores);
        let cap = rows_per_block.min(MAX_ROWS_PER_COPY);
        let (cols_per_tile, rows_per_tile) =
            if Self::ub_per_row(inter, dtype) <= u64::from(budget.ub_bytes) {
                (
                    inter,
                    largest_fit(K, 0, Self::ub_per_row(inter, dtype), cap, budget.ub_bytes)?,
                )
            } else {
                // One row does not fit: chunk the columns in 32-byte multiples, one row per tile.
                let per_col = u64::from(dtype.size()) * 6 + 3 * 4;
                let cols = u64::from(budget.ub_bytes) / per_col / 64 * 64;
                if cols == 0 {
                    return Err(KernelError::DoesNotFit {
                        kernel: K,
                        needed: Self::ub_per_row(64, dtype),
                        available: u64::from(budget.ub_bytes),
                    });
                }
                (cols as u32, 1)
            };
        Ok(SiluMulTiling {
            rows,
            inter,
            rows_per_block,
            rows_per_tile,
            cols_per_tile,
            reserved: 0,
        })
    }

    fn ub_per_row(cols: u32, dtype: KernelDtype) -> u64 {
        let p = round_up(u64::from(cols) * u64::from(dtype.size()), UB_BLOCK);
        let f = p / u64::from(dtype.size()) * 4;
        let f32_rows = if dtype == KernelDtype::F32 { 1 } else { 2 };
        4 * p + f32_rows * f
    }

    /// The kernel's Unified Buffer use per block, bytes.
    pub fn ub_bytes(&self, dtype: KernelDtype) -> u64 {
        Self::ub_per_row(self.cols_per_tile, dtype) * u64::from(self.rows_per_tile)
    }

    /// Blocks to launch.
    pub fn block_dim(&self) -> u32 {
        self.rows.div_ceil(self.rows_per_block)
    }
}

/// Tiling of `linear_<t>` (`DsnpuLinearTiling`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearTiling {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub m_blocks: u32,
    pub n_blocks: u32,
    pub single_m: u32,
    pub single_n: u32,
    pub base_m: u32,
    pub base_n: u32,
    pub base_k: u32,
    pub has_bias: u32,
    pub reserved: u32,
}

/// Cube fractal edge: shapes are padded to multiples of 16 in the cube.
pub(crate) const FRACTAL: u64 = 16;
/// Modelled per-core GM bytes per cycle (1.6 TB/s over 24 cube cores at 1.8 GHz).
pub(crate) const GM_BYTES_PER_CORE_CYCLE: f64 = 1.6e12 / 24.0 / 1.8e9;

impl LinearTiling {
    /// `y[m, n] = x[m, k] * w[n, k]^T (+ bias)` on `budget.cores` cube cores.
    ///
    /// The grid is the split of y into `m_blocks x n_blocks` blocks that minimises the slowest block's
    /// modelled time, max(cube cycles at 16x16x16 per cycle, GM bytes at the per-core share of HBM
    /// bandwidth); ties go to fewer blocks.
    pub fn new(
        m: u64,
        n: u64,
        k: u64,
        has_bias: bool,
        dtype: KernelDtype,
        budget: CoreBudget,
    ) -> Result<Self> {
        const K: &str = "linear";
        let budget = budget.validate()?;
        if m == 0 || n == 0 || k == 0 {
            return Err(invalid(
                K,
                format!("empty product [{m}, {k}] x [{n}, {k}]^T"),
            ));
        }
        for (what, v) in [("m", m), ("n", n), ("k", k)] {
            if v > i32::MAX as u64 {
                return Err(invalid(
                    K,
                    format!("{what} = {v} exceeds the cube tiling's int32"),
                ));
            }
        }
        to_u32(K, "m * k", m * k)?;
        to_u32(K, "n * k", n * k)?;
        to_u32(K, "m * n", m * n)?;
        let elem = f64::from(dtype.size());
        let mut best: Option<(f64, u32, u64, u64)> = None;
        for mb in 1..=u64::from(budget.cores) {
            let nb = u64::from(budget.cores) / mb;
            let single_m = round_up(m.div_ceil(mb), FRACTAL).min(m);
            let single_n = round_up(n.div_ceil(nb), FRACTAL).min(n);
            let blocks = (m.div_ceil(single_m) * n.div_ceil(single_n)) as u32;
            let pad = |v: u64| round_up(v, FRACTAL) as f64;
            let cube =
                pad(single_m) * pad(single_n) * pad(k) / (FRACTAL * FRACTAL * FRACTAL) as f64;
            let bytes = (single_m + single_n) as f64 * k as f64 * elem
                + (single_m * single_n) as f64 * elem;
            let time = cube.max(bytes / GM_BYTES_PER_CORE_CYCLE);
            let better = match best {
                None => true,
                Some((t, b, _, _)) => time < t || (time == t && blocks < b),
            };
            if better {
                best = Some((time, blocks, single_m, single_n));
            }
        }
        let (_, _, single_m, single_n) = best.expect("cores >= 1, so the loop ran");
        let base_m = round_up(single_m, FRACTAL).min(128);
        let base_n = round_up(single_n, FRACTAL).min(256);
        let base_k = round_up(k, FRACTAL).min(64);
        Ok(LinearTiling {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            m_blocks: m.div_ceil(single_m) as u32,
            n_blocks: n.div_ceil(single_n) as u32,
            single_m: single_m as u32,
            single_n: single_n as u32,
            base_m: base_m as u32,
            base_n: base_n as u32,
            base_k: base_k as u32,
            has_bias: u32::from(has_bias),
            reserved: 0,
        })
    }

    /// Blocks to launch.
    pub fn block_dim(&self) -> u32 {
        self.m_blocks * self.n_blocks
    }
}

/// Tiling of the self-test kernels (`DsnpuSelftestTiling`); see `src/ascendc/selftest.cpp`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelftestTiling {
    pub mode: u32,
    pub count: u32,
    pub arg: u32,
    pub reserved: u32,
}

impl_tiling!(
    RmsNormTiling,
    RopeTiling,
    SiluMulTiling,
    LinearTiling,
    SelftestTiling
);

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: CoreBudget = CoreBudget {
        cores: 4,
        ub_bytes: 196_608,
    };

    #[test]
    fn rms_norm_splits_rows_and_fits_ub() {
        // 10 rows over 4 cores: 3 per block, 4 blocks (3 + 3 + 3 + 1).
        let t = RmsNormTiling::new(10, 7168, 1e-6, KernelDtype::Bf16, true, SMALL).unwrap();
        assert_eq!((t.rows_per_block, t.block_dim()), (3, 4));
        assert!(t.ub_bytes(KernelDtype::Bf16, true) <= 196_608);
        // Hand-worked plan for [2, 16] f32 without residual (see tests/counters.rs): 448 bytes.
        let t = RmsNormTiling::new(
            2,
            16,
            1e-6,
            KernelDtype::F32,
            false,
            CoreBudget {
                cores: 1,
                ub_bytes: 196_608,
            },
        )
        .unwrap();
        assert_eq!(t.rows_per_tile, 2);
        assert_eq!(t.ub_bytes(KernelDtype::F32, false), 448);
    }

    #[test]
    fn deepseek_hidden_size_fits_every_variant() {
        for dt in KernelDtype::ALL {
            for residual in [false, true] {
                let t = RmsNormTiling::new(
                    16,
                    7168,
                    1e-6,
                    dt,
                    residual,
                    CoreBudget::ASCEND_910B2_VECTOR,
                )
                .unwrap();
                assert!(t.rows_per_tile >= 1 && t.ub_bytes(dt, residual) <= 196_608);
            }
        }
    }

    #[test]
    fn rms_norm_rejects_what_cannot_run() {
        let tiny = CoreBudget {
            cores: 1,
            ub_bytes: 1024,
        };
        assert!(matches!(
            RmsNormTiling::new(1, 7168, 1e-6, KernelDtype::F32, false, tiny),
            Err(KernelError::DoesNotFit { .. })
        ));
        assert!(matches!(
            RmsNormTiling::new(0, 16, 1e-6, KernelDtype::F32, false, SMALL),
            Err(KernelError::InvalidShape { .. })
        ));
        assert!(matches!(
            RmsNormTiling::new(1, 16, f32::NAN, KernelDtype::F32, false, SMALL),
            Err(KernelError::InvalidShape { .. })
        ));
        assert!(matches!(
            RmsNormTiling::new(
                1,
                16,
                1e-6,
                KernelDtype::F32,
                false,
                CoreBudget {
                    cores: 0,
                    ub_bytes: 1
                }
            ),
            Err(KernelError::InvalidHardware(_))
        ));
    }

    #[test]
    fn rope_validates_and_caps_rows_per_copy() {
        assert!(RopeTiling::new(
            4,
            2,
            7,
            7,
            8,
            RopeLayout::Interleaved,
            KernelDtype::F32,
            SMALL
        )
        .is_err());
        assert!(RopeTiling::new(
            4,
            2,
            8,
            6,
            8,
            RopeLayout::Interleaved,
            KernelDtype::F32,
            SMALL
        )
        .is_err());
        let t = RopeTiling::new(
            10_000,
            128,
            64,
            64,
            10_000,
            RopeLayout::HalfSplit,
            KernelDtype::Bf16,
            SMALL,
        )
        .unwrap();
        assert!(t.tokens_per_tile * t.heads <= MAX_ROWS_PER_COPY);
        assert!(t.ub_bytes(KernelDtype::Bf16) <= 196_608);
        assert_eq!(t.layout, 1);
    }

    #[test]
    fn silu_mul_chunks_columns_only_when_a_row_does_not_fit() {
        let t = SiluMulTiling::new(5, 100, KernelDtype::F16, SMALL).unwrap();
        assert_eq!((t.cols_per_tile, t.rows_per_tile), (100, 2));
        let t = SiluMulTiling::new(5, 100_000, KernelDtype::F32, SMALL).unwrap();
        assert!(t.cols_per_tile < 100_000 && t.cols_per_tile / 64 * 64 == t.cols_per_tile);
        assert_eq!(t.rows_per_tile, 1);
        assert!(t.ub_bytes(KernelDtype::F32) <= 196_608);
    }

    #[test]
    fn linear_grid_covers_the_output() {
        let t = LinearTiling::new(37, 45, 70, false, KernelDtype::Bf16, SMALL).unwrap();
        assert!(t.block_dim() <= 4);
        assert!(t.m_blocks * t.single_m >= 37 && t.n_blocks * t.single_n >= 45);
        // A decode-shaped product splits n (the weight) rather than m.
        let t = LinearTiling::new(
            1,
            4096,
            7168,
            false,
            KernelDtype::Bf16,
            CoreBudget::ASCEND_910B2_CUBE,
        )
        .unwrap();
        assert_eq!((t.m_blocks, t.n_blocks), (1, 24));
        // L0 limits: A 64 KiB, B 64 KiB, C (f32) 128 KiB.
        assert!(t.base_m * t.base_k * 2 <= 65_536 && t.base_k * t.base_n * 2 <= 65_536);
        assert!(t.base_m * t.base_n * 4 <= 131_072);
    }
}
