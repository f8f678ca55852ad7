//! Tiling structs (`#[repr(C)]` mirrors of `include/dsnpu_kernels/tiling.h`) and their computation from
//! shapes and the hardware budget.
//!
//! Contract: each `new` validates the shape (non-empty, within the kernels' 32-bit index types, 4095 rows
//! per DataCopyPad) and the budget, and returns a tiling whose Unified Buffer plan — the same formula the
//! kernel's source states and allocates — fits `CoreBudget::ub_bytes`. The kernels trust these values.
//! `block_dim()` is the number of blocks to launch.

use crate::tiling_cube::{CubeProblem, CubeTiling, SYS_WORKSPACE_BYTES};
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

/// Tiling of `linear_<t>` (`DsnpuLinearTiling`), a 1:2 mix kernel: block (i, j) of the
/// `m_blocks x n_blocks` grid is one AI Core, whose cube core runs the Matmul of `cube` (no bias) tile
/// by tile into a double-buffered f32 workspace and whose two vector cores add the bias and round each
/// tile into y (`src/ascendc/linear.cpp`).
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
    pub has_bias: u32,
    pub cube: CubeTiling,
}

/// Cube fractal edge: shapes are padded to multiples of 16 in the cube.
pub(crate) const FRACTAL: u64 = 16;
/// Modelled per-core GM bytes per cycle (1.6 TB/s over 24 cube cores at 1.8 GHz): one core's fair
/// share of HBM, and the pessimistic bound on what one core can draw when others are idle.
pub(crate) const GM_BYTES_PER_CORE_CYCLE: f64 = 1.6e12 / 24.0 / 1.8e9;
/// Modelled GM bytes per cycle of the whole die (1.6 TB/s at 1.8 GHz), shared by every block.
pub(crate) const GM_BYTES_PER_DIE_CYCLE: f64 = 1.6e12 / 1.8e9;
/// The optimistic bound on one core's GM bytes per cycle when the die's HBM has room: one 1024-bit
/// port (the width of Ascend 910's mesh NoC links as presented at Hot Chips 2019). An assumption, not
/// a measured 910B2 figure, which is why the linear tiling hedges it against the fair share.
pub(crate) const GM_BYTES_PER_PORT_CYCLE: f64 = 128.0;

impl LinearTiling {
    /// `y[m, n] = x[m, k] * w[n, k]^T (+ bias)` on at most `budget.cores` cube cores.
    ///
    /// The grid is a split of y into `m_blocks x n_blocks` blocks of whole 16-row/column fractals. Each
    /// grid is modelled (`LinearPlan`) as the max of the die's GM traffic at the die's HBM rate (every
    /// block re-reads its rows of x and columns of w, so more blocks move more bytes), the slowest
    /// block's traffic at one core's rate, and its cube cycles at 16x16x16 per cycle. One core's rate
    /// is uncertain, so each grid is timed twice — at the fair share (`GM_BYTES_PER_CORE_CYCLE`,
    /// which favours many blocks) and at one port (`GM_BYTES_PER_PORT_CYCLE`, which lets few blocks
    /// save the re-reads) — and the grid whose worse ratio to each rate's best grid is smallest wins;
    /// ties go to fewer blocks.
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
        let shape = LinearShape {
            m,
            n,
            k,
            elem: u64::from(dtype.size()),
            has_bias,
        };
        let plan = shape.best_plan(u64::from(budget.cores));
        let (m_blocks, n_blocks) = (m.div_ceil(plan.single_m), n.div_ceil(plan.single_n));
        let cube = CubeTiling::new(
            K,
            CubeProblem {
                org_m: m,
                org_n: n,
                org_k: k,
                single_m: plan.single_m,
                single_n: plan.single_n,
                single_k: k,
                used_cores: m_blocks * n_blocks,
                base: linear_bases(plan.single_m, plan.single_n, k),
                a_bytes: u64::from(dtype.size()),
                b_bytes: u64::from(dtype.size()),
                bias: false,
            },
        )?;
        Ok(LinearTiling {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            m_blocks: m_blocks as u32,
            n_blocks: n_blocks as u32,
            single_m: plan.single_m as u32,
            single_n: plan.single_n as u32,
            has_bias: u32::from(has_bias),
            cube,
        })
    }

    /// Blocks (AI Cores: one cube and two vector cores each) to launch.
    pub fn block_dim(&self) -> u32 {
        self.m_blocks * self.n_blocks
    }

    /// The cube's output tiles in flight per AI Core (the workspace's double buffer).
    pub const WORKSPACE_TILES: u64 = 2;

    /// Device workspace of one launch: the system part, then per block two f32 tiles of
    /// `baseM x baseN` (the cube writes one while the vector cores read the other).
    pub fn workspace_bytes(&self) -> u64 {
        let tile = self.cube.baseM.max(0) as u64 * self.cube.baseN.max(0) as u64 * 4;
        SYS_WORKSPACE_BYTES + u64::from(self.block_dim()) * Self::WORKSPACE_TILES * tile
    }
}

/// Base (cube step) sizes within L0A/L0B 64 KiB and L0C 128 KiB (as f32) for every element type:
/// 128 x 64 x 4 B = 32 KiB, 64 x 256 x 4 B = 64 KiB, 128 x 256 x 4 B = 128 KiB.
fn linear_bases(single_m: u64, single_n: u64, k: u64) -> (u64, u64, u64) {
    (
        round_up(single_m, FRACTAL).min(128),
        round_up(single_n, FRACTAL).min(256),
        round_up(k, FRACTAL).min(64),
    )
}

/// The product a linear tiling is chosen for.
#[derive(Debug, Clone, Copy)]
struct LinearShape {
    m: u64,
    n: u64,
    k: u64,
    elem: u64,
    has_bias: bool,
}

/// One candidate grid and what it costs: the Matmul API streams a block's x rows once per base_n
/// columns and its w rows (and f32 bias) once per base_m rows, and writes y once.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LinearPlan {
    single_m: u64,
    single_n: u64,
    blocks: u64,
    /// GM bytes of the whole launch.
    total_bytes: u64,
    /// GM bytes and padded cube cycles of the largest (first) block, the slowest.
    block_bytes: u64,
    block_cube: f64,
}

impl LinearPlan {
    /// Modelled cycles when one core moves at most `core_bytes_per_cycle`.
    fn cycles(&self, core_bytes_per_cycle: f64) -> f64 {
        (self.total_bytes as f64 / GM_BYTES_PER_DIE_CYCLE)
            .max(self.block_bytes as f64 / core_bytes_per_cycle)
            .max(self.block_cube)
    }
}

impl LinearShape {
    /// The grid of blocks `single_m x single_n` (the last row/column of blocks holds the rest).
    fn plan(&self, single_m: u64, single_n: u64) -> LinearPlan {
        let (base_m, base_n, _) = linear_bases(single_m, single_n, self.k);
        let (m_tiles, n_tiles) = (self.m.div_ceil(single_m), self.n.div_ceil(single_n));
        let x_passes = |cols: u64| cols.div_ceil(base_n);
        let w_passes = |rows: u64| rows.div_ceil(base_m);
        // Passes summed over the grid's column (row) tiles: each block of a column tile reads x's rows
        // that many times, so x moves m * k elements per pass (w likewise).
        let x_total =
            (n_tiles - 1) * x_passes(single_n) + x_passes(self.n - (n_tiles - 1) * single_n);
        let w_total =
            (m_tiles - 1) * w_passes(single_m) + w_passes(self.m - (m_tiles - 1) * single_m);
        let bias = u64::from(self.has_bias) * 4;
        let total_bytes = self.k * self.elem * (self.m * x_total + self.n * w_total)
            + self.m * self.n * self.elem
            + self.n * bias * w_total;
        let block_bytes =
            self.k * self.elem * (single_m * x_passes(single_n) + single_n * w_passes(single_m))
                + single_m * single_n * self.elem
                + single_n * bias * w_passes(single_m);
        let pad = |v: u64| round_up(v, FRACTAL) as f64;
        LinearPlan {
            single_m,
            single_n,
            blocks: m_tiles * n_tiles,
            total_bytes,
            block_bytes,
            block_cube: pad(single_m) * pad(single_n) * pad(self.k) / FRACTAL.pow(3) as f64,
        }
    }

    /// Every grid of at most `cores` blocks, each side split into tiles of whole fractals (each
    /// distinct width once; the n tiles bounded by what the m tiles leave, so O(cores log cores) grids).
    fn plans(&self, cores: u64) -> Vec<LinearPlan> {
        let side = |len: u64, tiles: u64| round_up(len.div_ceil(tiles), FRACTAL).min(len);
        let mut plans = Vec::new();
        for mt in 1..=cores.min(self.m.div_ceil(FRACTAL)) {
            let sm = side(self.m, mt);
            if mt > 1 && sm == side(self.m, mt - 1) {
                continue;
            }
            // sm >= m / mt, so m needs at most mt <= cores tiles of it.
            let max_nt = cores / self.m.div_ceil(sm);
            for nt in 1..=max_nt.min(self.n.div_ceil(FRACTAL)) {
                let sn = side(self.n, nt);
                if nt > 1 && sn == side(self.n, nt - 1) {
                    continue;
                }
                plans.push(self.plan(sm, sn));
            }
        }
        plans
    }

    /// The grid with the smallest worse ratio to the best grid at each per-core rate (ties: fewer
    /// blocks, then the first found: fewer m tiles, then fewer n tiles).
    fn best_plan(&self, cores: u64) -> LinearPlan {
        let rates = [GM_BYTES_PER_CORE_CYCLE, GM_BYTES_PER_PORT_CYCLE];
        let plans = self.plans(cores);
        let best = rates.map(|r| {
            plans
                .iter()
                .map(|p| p.cycles(r))
                .fold(f64::INFINITY, f64::min)
        });
        let score = |p: &LinearPlan| {
            rates
                .iter()
                .zip(best)
                .map(|(&r, b)| p.cycles(r) / b)
                .fold(0.0, f64::max)
        };
        *plans
            .iter()
            .min_by(|a, b| score(a).total_cmp(&score(b)).then(a.blocks.cmp(&b.blocks)))
            .expect("m, n >= 1 and cores >= 1 give the one-block grid")
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
        // A decode-shaped product splits n (the weight) rather than m: x is one 14 KiB row, so its 24
        // copies cost 0.6% more than one, less than leaving cores idle at the fair share.
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
        // L0 limits: A 64 KiB, B 64 KiB, C (f32) 128 KiB; and L1 (checked by validate).
        let c = t.cube;
        assert!(c.baseM * c.baseK * 2 <= 65_536 && c.baseK * c.baseN * 2 <= 65_536);
        assert!(c.baseM * c.baseN * 4 <= 131_072);
        assert_eq!(c.validate("linear", 2, 2), Ok(()));
    }

    #[test]
    fn linear_plan_counts_the_matmul_traffic() {
        // The hand-worked launch of tests/kernels_counters.rs: [2, 4] x [3, 4]^T f32 with bias, one
        // block: x 32 B + w 48 B + bias 12 B in, y 24 B out.
        let s = LinearShape {
            m: 2,
            n: 3,
            k: 4,
            elem: 4,
            has_bias: true,
        };
        let p = s.plan(2, 3);
        assert_eq!((p.blocks, p.total_bytes, p.block_bytes), (1, 116, 116));
        // [40, 100] x [300, 100]^T bf16 in 32 x 160 blocks: 2 x 2 blocks (rows 32 + 8, columns
        // 160 + 140), each reading its x rows and w rows once (bases 32 x 160). x moves 2 times
        // 40 x 100 x 2 B, w 2 times 300 x 100 x 2 B, y 40 x 300 x 2 B once: 16000 + 120000 + 24000.
        // The first block: (32 + 160) x 100 x 2 B in, 32 x 160 x 2 B out; cube 32 x 160 x 112 / 4096.
        let s = LinearShape {
            m: 40,
            n: 300,
            k: 100,
            elem: 2,
            has_bias: false,
        };
        let p = s.plan(32, 160);
        assert_eq!(
            (p.blocks, p.total_bytes, p.block_bytes),
            (4, 160_000, 48_640)
        );
        assert_eq!(p.block_cube, 140.0);
        // A block wider than base_n = 256 streams x once per 256 columns: 576 columns -> 3 passes of
        // 16 x 64 x 2 B, plus w 576 x 64 x 2 B and y 16 x 576 x 2 B.
        let s = LinearShape {
            m: 16,
            n: 576,
            k: 64,
            elem: 2,
            has_bias: false,
        };
        assert_eq!(s.plan(16, 576).total_bytes, 3 * 2048 + 73_728 + 18_432);
    }

    #[test]
    fn linear_weighs_the_rereads_of_x() {
        // The MoE router, [64, 7168] x [256, 7168]^T f32. The 24-block grid of 16 x 48 blocks reads
        // x (1_835_008 B) 6 times and w (7_340_032 B) 4 times: 40.4 MB, 45_490 cycles at the die's
        // 888.9 B/cycle; its slowest block moves (16 + 48) x 7168 x 4 B + 16 x 48 x 4 B = 1_838_080 B,
        // 49_628 cycles at the fair share of 37.04 B/cycle. The 12 blocks of 32 x 48 read x 6 times
        // and w twice: 6 x 1_835_008 + 2 x 7_340_032 + 65_536 = 25_755_648 B (28_975 cycles), and the
        // slowest block's 2_299_904 B take 62_097 cycles at the fair share, 17_968 at 128 B/cycle. Its
        // worse ratio (62_097 / 49_628 = 1.25) beats the 24-block grid's (45_490 / 28_975 = 1.57),
        // and no grid does better on both (checked with an independent model of the same rules).
        let t = LinearTiling::new(
            64,
            256,
            7168,
            false,
            KernelDtype::F32,
            CoreBudget::ASCEND_910B2_CUBE,
        )
        .unwrap();
        assert_eq!(
            (t.m_blocks, t.n_blocks, t.single_m, t.single_n),
            (2, 6, 32, 48)
        );
        let s = LinearShape {
            m: 64,
            n: 256,
            k: 7168,
            elem: 4,
            has_bias: false,
        };
        assert_eq!(s.plan(32, 48).total_bytes, 25_755_648);
        assert_eq!(
            s.plan(16, 48).total_bytes,
            6 * 1_835_008 + 4 * 7_340_032 + 65_536
        );
        // A block moving few bytes next to its cube work keeps every core busy: a [2048, 2048] x
        // [2048, 2048]^T bf16 product is cube-bound, so the grid uses all 24 blocks.
        let t = LinearTiling::new(
            2048,
            2048,
            2048,
            false,
            KernelDtype::Bf16,
            CoreBudget::ASCEND_910B2_CUBE,
        )
        .unwrap();
        assert!(t.block_dim() >= 20, "{t:?}");
    }

    #[test]
    fn linear_grids_fit_the_budget_and_l0() {
        for (m, n, k) in [
            (1, 1, 1),
            (17, 33, 5),
            (300, 7, 4096),
            (4096, 4096, 64),
            (5, 70_000, 16),
        ] {
            for cores in [1, 3, 4, 24] {
                let budget = CoreBudget {
                    cores,
                    ub_bytes: 196_608,
                };
                let t = LinearTiling::new(m, n, k, true, KernelDtype::F32, budget).unwrap();
                assert!(t.block_dim() >= 1 && t.block_dim() <= cores, "{t:?}");
                // Every block starts inside y, and the grid covers it.
                assert!(u64::from((t.m_blocks - 1) * t.single_m) < m);
                assert!(u64::from((t.n_blocks - 1) * t.single_n) < n);
                assert!(u64::from(t.m_blocks * t.single_m) >= m);
                assert!(u64::from(t.n_blocks * t.single_n) >= n);
                let c = t.cube;
                assert!(c.baseM * c.baseK * 4 <= 65_536 && c.baseK * c.baseN * 4 <= 65_536);
                assert!(c.baseM * c.baseN * 4 <= 131_072);
                assert_eq!(c.validate("linear", 4, 4), Ok(()));
            }
        }
    }
}
